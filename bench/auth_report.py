#!/usr/bin/env python3
"""Summarise bench/auth.sh results (medians over rounds, ratios) as markdown.

    python3 bench/auth_report.py [--csv bench/results/auth.csv] [--meta bench/results/auth-meta.json]
"""
import argparse
import csv
import json
import os
import statistics
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LABEL = {
    "basic": "basic (metrics off, access log off)",
    "token": "token (Bearer, metrics off, access log off)",
    "obs": "basic + metrics + access log + audit_file",
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", default=os.path.join(ROOT, "bench/results/auth.csv"))
    ap.add_argument("--meta", default=os.path.join(ROOT, "bench/results/auth-meta.json"))
    a = ap.parse_args()
    vals = defaultdict(list)
    with open(a.csv) as f:
        for row in csv.DictReader(f):
            vals[(row["target"], row["metric"])].append(float(row["value"]))
    meta = json.load(open(a.meta)) if os.path.exists(a.meta) else {}
    med = lambda t, m: statistics.median(vals[(t, m)]) if vals.get((t, m)) else None
    fmt = lambda v, d=0: "–" if v is None else f"{v:,.{d}f}"

    def all_(t, m, d=0):
        return " ".join(fmt(v, d) for v in vals.get((t, m), []))

    out = []
    out.append(f"Run {meta.get('date','?')}, {meta.get('duration_s','?')} s, {meta.get('rounds','?')} interleaved rounds of "
               f"`{meta.get('wrk_args','?')}`, {meta.get('nproc','?')} vCPU {meta.get('cpu','?')}, "
               f"load {meta.get('loadavg_start','?')} → {meta.get('loadavg_end','?')}, "
               f"binary {meta.get('portcullis_binary','?')}, HEAD {meta.get('git_head_at_run','?')}.")
    out.append("")
    out.append("| config | manifest GET req/s (median) | per round | portcullis CPU µs/req | p50 ms | p99 ms | errors |")
    out.append("|---|---:|---|---:|---:|---:|---:|")
    for t in ("basic", "token", "obs"):
        errs = sum(vals.get((t, "manifest_errors"), []))
        out.append(f"| {LABEL[t]} | {fmt(med(t,'manifest_rps'))} | {all_(t,'manifest_rps')} | "
                   f"{fmt(med(t,'manifest_proxy_cpu_us_per_req'))} | {fmt(med(t,'manifest_p50_ms'),2)} | "
                   f"{fmt(med(t,'manifest_p99_ms'),2)} | {errs:.0f} |")
    out.append("")

    def ratio(n, d, m):
        x, y = med(n, m), med(d, m)
        return None if x is None or not y else x / y

    rows = [
        ("req/s, token / basic", ratio("token", "basic", "manifest_rps"), ">=", 1.0),
        ("CPU per request, token / basic", ratio("token", "basic", "manifest_proxy_cpu_us_per_req"), None, None),
        ("req/s, observability on / off", ratio("obs", "basic", "manifest_rps"), ">=", 0.95),
        ("CPU per request, observability on / off", ratio("obs", "basic", "manifest_proxy_cpu_us_per_req"), None, None),
    ]
    if vals.get(("ldap-alone", "download_mib_s")):
        rows.append(("64 MiB download MiB/s, during login storm / alone",
                     ratio("ldap-storm", "ldap-alone", "download_mib_s"), ">=", 0.8))
    out.append("| ratio (of medians) | value | target | verdict |")
    out.append("|---|---:|---|---|")
    for name, v, op, goal in rows:
        if v is None:
            out.append(f"| {name} | – | | no data |")
            continue
        if op is None:
            out.append(f"| {name} | {v:.2f} | (informative) | |")
        else:
            ok = v >= goal
            out.append(f"| {name} | {v:.2f} | ≥ {goal} | {'met' if ok else 'NOT met'} |")
    out.append("")
    extra = []
    for k in ("audit_lines", "access_log_lines", "access_log_mib"):
        v = med("obs", k)
        if v is not None:
            extra.append(f"{k} {fmt(v, 1 if k.endswith('mib') else 0)}")
    if extra:
        out.append("obs instance over the whole run: " + ", ".join(extra) + ".")
    errl = [f"{t} {fmt(med(t,'log_error_lines'))}" for t in ("basic", "token", "obs", "ldap", "soak-jemalloc", "soak-system")
            if med(t, "log_error_lines") is not None]
    out.append("ERROR/WARN/panic lines in portcullis logs: " + ", ".join(errl) + ".")
    if vals.get(("ldap-alone", "download_mib_s")):
        out.append("")
        out.append(f"LDAP: {meta.get('ldap_rounds')} rounds × {meta.get('ldap_downloads')} sequential 64 MiB downloads by a logged-in "
                   f"LDAP user (alice), alone vs during ~{meta.get('storm_rate')} failed logins/s (bob/carol, fresh wrong passwords).")
        out.append("")
        out.append("| phase | download MiB/s (median) | per round | slapd BINDs/s | portcullis LDAP ops/s | cache hits / lookups | download errors |")
        out.append("|---|---:|---|---:|---:|---|---:|")
        for t in ("ldap-alone", "ldap-storm"):
            h = sum(vals.get((t, "cache_hits"), []))
            l = sum(vals.get((t, "cache_lookups"), []))
            hr = f"{h:.0f} / {l:.0f} ({100*h/l:.0f} %)" if l else "–"
            out.append(f"| {t[5:]} | {fmt(med(t,'download_mib_s'))} | {all_(t,'download_mib_s')} | "
                       f"{fmt(med(t,'slapd_binds_per_s'),1)} | {fmt(med(t,'ldap_ops_per_s'),1)} | {hr} | "
                       f"{sum(vals.get((t,'download_errors'), [])):.0f} |")
    if vals.get(("soak-jemalloc", "rss_mib")):
        out.extend(soak_section(vals, meta, fmt))
    print("\n".join(out))


def soak_section(vals, meta, fmt):
    """The allocator soak: RSS of each instance as the runs go by."""
    names = ("soak-jemalloc", "soak-system")
    label = {"soak-jemalloc": meta.get("soak_label", "jemalloc (default build)"),
             "soak-system": meta.get("soak_other_label", "system malloc (`--no-default-features`)")}
    rss = {t: vals.get((t, "rss_mib"), []) for t in names}
    runs = min(len(rss[t]) for t in names)
    marks = sorted({1, 2, 4} | set(range(6, runs + 1, 6)) | {runs})
    marks = [m for m in marks if m <= runs]
    one = lambda t, m: (vals.get((t, m)) or [None])[0]
    med = lambda t, m: statistics.median(vals[(t, m)]) if vals.get((t, m)) else None
    wrk = " ".join(a for a in meta.get("wrk_args", "wrk").split() if not a.startswith("-d"))
    out = ["", f"Soak: {runs} alternating runs of `{wrk} -d{meta.get('soak_duration', '?')}` per instance, both against "
           "the same registry, then 8 parallel 64 MiB downloads each.", ""]
    head = " | ".join(f"after run {m}" for m in marks)
    out.append(f"| allocator | RSS at start | {head} | 2 s after the last run | peak, 8 downloads | VmHWM | CPU µs/req (median) | req/s (median) |")
    out.append("|---|" + "---:|" * (len(marks) + 6))
    for t in names:
        cells = " | ".join(fmt(rss[t][m - 1], 1) for m in marks)
        out.append(f"| {label[t]} | {fmt(one(t, 'rss_start_mib'), 1)} | {cells} | {fmt(one(t, 'rss_end_mib'), 1)} | "
                   f"{fmt(one(t, 'peak_rss_8_downloads_mib'), 1)} | {fmt(one(t, 'vmhwm_mib'), 1)} | "
                   f"{fmt(med(t, 'manifest_proxy_cpu_us_per_req'))} | {fmt(med(t, 'manifest_rps'))} |")
    out.append("")
    half = runs // 2
    for t in names:
        r = rss[t]
        if runs >= 4:
            out.append(f"- {label[t]}: RSS grew {r[half - 1] - r[0]:+.1f} MiB over runs 1–{half} and "
                       f"{r[runs - 1] - r[half - 1]:+.1f} MiB over runs {half}–{runs}; "
                       f"errors {sum(vals.get((t, 'manifest_errors'), [])) + sum(vals.get((t, 'download_errors'), [])):.0f}.")
    cj, cs = med("soak-jemalloc", "manifest_proxy_cpu_us_per_req"), med("soak-system", "manifest_proxy_cpu_us_per_req")
    if cj and cs:
        out.append(f"- CPU per request, {label['soak-jemalloc']} / {label['soak-system']}: {cj / cs:.2f}.")
    return out


if __name__ == "__main__":
    main()
