#!/usr/bin/env python3
"""Summarise bench/run.sh results: medians per target, the ratios the
performance issue asks for, a markdown summary and a chart of the ratios.

    python3 bench/report.py [--csv bench/results/latest.csv]
                            [--meta bench/results/latest-meta.json]
                            [--out bench/results] [--docs]

--docs also copies the chart to docs/benchmarks.png and rewrites the part of
docs/benchmarks.md between the `<!-- results:begin -->` / `<!-- results:end -->`
markers with the generated tables.
"""
import argparse
import csv
import json
import os
import shutil
import statistics
import sys
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TARGETS = ["registry", "nginx", "nginx-noauth", "nginx-tuned", "pingora-bare", "portcullis"]
LABEL = {
    "registry": "A registry (direct, HTTP)",
    "nginx": "B nginx recipe (auth_basic)",
    "nginx-noauth": "B0 nginx recipe, no auth",
    "nginx-tuned": "B2 nginx tuned (auth_basic)",
    "pingora-bare": "P Pingora floor (no auth, no filters)",
    "portcullis": "C portcullis",
}
SHORT = {"registry": "A", "nginx": "B", "nginx-noauth": "B0", "nginx-tuned": "B2", "pingora-bare": "P", "portcullis": "C"}

# metric, label, unit, decimals, better ("hi"/"lo")
METRICS = [
    ("manifest_rps", "manifest GET throughput", "req/s", 0, "hi"),
    ("manifest_p50_ms", "manifest GET latency p50", "ms", 2, "lo"),
    ("manifest_p99_ms", "manifest GET latency p99", "ms", 2, "lo"),
    ("manifest_proxy_cpu_us_per_req", "proxy CPU per manifest GET", "µs", 0, "lo"),
    ("manifest_registry_cpu_us_per_req", "registry CPU per manifest GET", "µs", 0, "lo"),
    ("download_seq_mib_s", f"download, sequential", "MiB/s", 0, "hi"),
    ("download_par_mib_s", f"download, parallel", "MiB/s", 0, "hi"),
    ("download_par8_mib_s", f"download, 8 parallel (RSS run)", "MiB/s", 0, "hi"),
    ("download_seq_proxy_cpu_s_per_gib", "proxy CPU per GiB, sequential download", "s", 2, "lo"),
    ("download_par_proxy_cpu_s_per_gib", "proxy CPU per GiB, parallel download", "s", 2, "lo"),
    ("download_seq_registry_cpu_s_per_gib", "registry CPU per GiB, sequential download", "s", 2, "lo"),
    ("upload_mono_mib_s", "upload, monolithic PUT", "MiB/s", 0, "hi"),
    ("upload_chunked_mib_s", "upload, 4×16 MiB PATCH + PUT", "MiB/s", 0, "hi"),
    ("upload_mono_proxy_cpu_s_per_gib", "proxy CPU per GiB, monolithic upload", "s", 2, "lo"),
    ("upload_chunked_proxy_cpu_s_per_gib", "proxy CPU per GiB, chunked upload", "s", 2, "lo"),
    ("rss_idle_mib", "RSS idle (before the 8 downloads)", "MiB", 1, "lo"),
    ("rss_peak_mib", "peak RSS, 8 parallel downloads (sum of processes)", "MiB", 1, "lo"),
    ("pss_peak_mib", "peak PSS, 8 parallel downloads", "MiB", 1, "lo"),
    ("vmhwm_lifetime_mib", "VmHWM over the whole run", "MiB", 1, "lo"),
    ("nginx_temp_file_spills", "bodies nginx spooled to temp files (whole run)", "count", 0, "lo"),
    ("log_error_lines", "error/warning lines in the proxy's log (whole run)", "count", 0, "lo"),
    ("log_client_eof_lines", "… of which: client closed idle conn. without close_notify", "count", 0, "lo"),
    ("log_ip_sni_lines", "… of which: rustls \"Illegal SNI\" (IP as SNI)", "count", 0, "lo"),
]

# (name, numerator metric, numerator target, denominator target, op, goal)
# op ">=": ratio must be at least goal; "<=": at most goal; None: informative
RATIOS = [
    ("manifest GET req/s, C / B", "manifest_rps", "nginx", ">=", 1.5),
    ("manifest GET req/s, C / B2", "manifest_rps", "nginx-tuned", ">=", 1.5),
    ("manifest GET req/s, C / B0 (no auth)", "manifest_rps", "nginx-noauth", None, None),
    ("CPU per manifest GET, C / B0 (no auth)", "manifest_proxy_cpu_us_per_req", "nginx-noauth", "<=", 1.0),
    ("CPU per manifest GET, C / B", "manifest_proxy_cpu_us_per_req", "nginx", None, None),
    ("download seq MiB/s, C / B", "download_seq_mib_s", "nginx", ">=", 1.3),
    ("download seq MiB/s, C / B2", "download_seq_mib_s", "nginx-tuned", ">=", 1.3),
    ("download 4-par MiB/s, C / B", "download_par_mib_s", "nginx", ">=", 1.3),
    ("download 4-par MiB/s, C / B2", "download_par_mib_s", "nginx-tuned", ">=", 1.3),
    ("download CPU/GiB seq, C / B", "download_seq_proxy_cpu_s_per_gib", "nginx", "<=", 0.5),
    ("download CPU/GiB seq, C / B2", "download_seq_proxy_cpu_s_per_gib", "nginx-tuned", "<=", 0.5),
    ("download CPU/GiB 4-par, C / B", "download_par_proxy_cpu_s_per_gib", "nginx", "<=", 0.5),
    ("download CPU/GiB 4-par, C / B2", "download_par_proxy_cpu_s_per_gib", "nginx-tuned", "<=", 0.5),
    ("upload mono MiB/s, C / B", "upload_mono_mib_s", "nginx", ">=", 1.0),
    ("upload mono MiB/s, C / B2", "upload_mono_mib_s", "nginx-tuned", ">=", 1.0),
    ("upload 4×PATCH MiB/s, C / B", "upload_chunked_mib_s", "nginx", ">=", 1.0),
    ("upload 4×PATCH MiB/s, C / B2", "upload_chunked_mib_s", "nginx-tuned", ">=", 1.0),
]

# The framework floor: how far Pingora itself (P, examples/bare_proxy.rs)
# is from nginx, and what portcullis adds on top of it (C / P).
FLOOR = [
    ("CPU per manifest GET, P / B0", "manifest_proxy_cpu_us_per_req", "pingora-bare", "nginx-noauth"),
    ("CPU per manifest GET, C / P", "manifest_proxy_cpu_us_per_req", "portcullis", "pingora-bare"),
    ("download seq MiB/s, P / B", "download_seq_mib_s", "pingora-bare", "nginx"),
    ("download 4-par MiB/s, P / B", "download_par_mib_s", "pingora-bare", "nginx"),
    ("download CPU/GiB seq, P / B", "download_seq_proxy_cpu_s_per_gib", "pingora-bare", "nginx"),
    ("download CPU/GiB 4-par, P / B", "download_par_proxy_cpu_s_per_gib", "pingora-bare", "nginx"),
    ("download seq MiB/s, C / P", "download_seq_mib_s", "portcullis", "pingora-bare"),
    ("download CPU/GiB seq, C / P", "download_seq_proxy_cpu_s_per_gib", "portcullis", "pingora-bare"),
    ("download CPU/GiB 4-par, C / P", "download_par_proxy_cpu_s_per_gib", "portcullis", "pingora-bare"),
]


def load(path):
    data = defaultdict(lambda: defaultdict(dict))  # target -> metric -> round -> value
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                v = float(row["value"])
            except ValueError:
                continue
            data[row["target"]][row["metric"]][int(row["round"])] = v
    return data


def median(data, target, metric):
    vals = list(data.get(target, {}).get(metric, {}).values())
    return statistics.median(vals) if vals else None


def spread(data, target, metric):
    vals = list(data.get(target, {}).get(metric, {}).values())
    return (min(vals), max(vals)) if len(vals) > 1 else None


def fmt(v, dec):
    if v is None:
        return "–"
    return f"{v:,.{dec}f}" if dec else f"{v:,.0f}"


def verdict(ratio, op, goal):
    if ratio is None or op is None:
        return ""
    ok = ratio >= goal if op == ">=" else ratio <= goal
    return "met" if ok else "**missed**"


def build(data, meta):
    present = [t for t in TARGETS if t in data]
    out = []
    out.append(f"Run of {meta.get('date', '?')}: {meta.get('rounds', '?')} interleaved rounds in "
               f"{meta.get('duration_s', '?')} s; {meta.get('nproc', '?')} × {meta.get('cpu', '?')}, "
               f"{meta.get('os', '?')}; {meta.get('nginx', 'nginx ?')}, registry {meta.get('registry', '?')}, "
               f"wrk {meta.get('wrk', '?')} (`{meta.get('wrk_args', '')}`), curl {meta.get('curl', '?')}; "
               f"{meta.get('blob_mib', 64)} MiB blob, {meta.get('manifest_bytes', '?')} B manifest.")
    out.append("")
    out.append("Medians over the rounds (min–max in brackets when the spread exceeds 10 %).")
    out.append("")
    out.append("| metric | unit | " + " | ".join(LABEL[t] for t in present) + " |")
    out.append("| --- | --- |" + " ---: |" * len(present))
    for m, label, unit, dec, _ in METRICS:
        cells = []
        any_val = False
        for t in present:
            v = median(data, t, m)
            s = spread(data, t, m)
            c = fmt(v, dec)
            if v is not None:
                any_val = True
                if s and v and (s[1] - s[0]) / abs(v) > 0.10:
                    c += f" ({fmt(s[0], dec)}–{fmt(s[1], dec)})"
            cells.append(c)
        if any_val:
            label2 = label
            if m == "download_seq_mib_s":
                label2 += f" ×{meta.get('seq_downloads', 8)}"
            if m == "download_par_mib_s":
                label2 = f"download, {meta.get('par_downloads', 4)} parallel"
            out.append(f"| {label2} | {unit} | " + " | ".join(cells) + " |")
    # errors
    errs = []
    for t in present:
        for m, rounds in data[t].items():
            if (m.endswith("_errors") and any(v > 0 for v in rounds.values())):
                errs.append(f"{t} {m}: " + ", ".join(f"r{r}={int(v)}" for r, v in sorted(rounds.items())))
            if m in ("download_sha256_ok", "probe_expect100_put_ok") and any(v == 0 for v in rounds.values()):
                errs.append(f"{t} {m} = 0")
    out.append("")
    out.append("Errors: " + ("; ".join(errs) if errs else "none (every response checked: status, size, digest)."))
    probes = [(t, median(data, t, "probe_expect100_put_s")) for t in present if median(data, t, "probe_expect100_put_s") is not None]
    if probes:
        out.append("")
        out.append("`Expect: 100-continue` probe (4 MiB PUT, curl waits up to 3 s for `100 Continue`): "
                   + ", ".join(f"{SHORT[t]} {v:.2f} s" for t, v in probes) + ".")
    alpn = [(t, median(data, t, "probe_alpn_download_mib_s"), median(data, t, "probe_alpn_http_version"))
            for t in present if t != "registry" and median(data, t, "probe_alpn_http_version") is not None]
    if alpn:
        out.append("")
        out.append("One download with curl's default ALPN (h2 where offered): "
                   + ", ".join(f"{SHORT[t]} HTTP/{v:g} {fmt(m, 0)} MiB/s" for t, m, v in alpn) + ".")
    tls = meta.get("tls") or {}
    if tls:
        out.append("")
        out.append("Negotiated TLS (OpenSSL client): " + ", ".join(f"{SHORT.get(t, t)} {v}" for t, v in tls.items()) + ".")

    ratios = []
    out.append("")
    out.append("| ratio (medians) | value | goal | |")
    out.append("| --- | ---: | ---: | --- |")
    for name, m, den, op, goal in RATIOS:
        num_v = median(data, "portcullis", m)
        den_v = median(data, den, m)
        r = num_v / den_v if (num_v is not None and den_v) else None
        ratios.append((name, r, op, goal))
        g = f"{op} {goal}" if op else "(info)"
        out.append(f"| {name} | {fmt(r, 2)} | {g} | {verdict(r, op, goal)} |")
    rss = median(data, "portcullis", "rss_peak_mib")
    out.append(f"| peak RSS of portcullis, 8 parallel downloads (MiB) | {fmt(rss, 1)} | <= 32 | "
               f"{verdict(rss, '<=', 32) if rss is not None else ''} |")
    for t in ("nginx", "nginx-tuned"):
        v = median(data, t, "rss_peak_mib")
        if v is not None:
            out.append(f"| peak RSS of {LABEL[t]} (MiB, master+workers) | {fmt(v, 1)} | | |")
    if "pingora-bare" in data:
        out.append("")
        out.append("| framework floor (medians) | value |")
        out.append("| --- | ---: |")
        for name, m, num, den in FLOOR:
            num_v, den_v = median(data, num, m), median(data, den, m)
            r = num_v / den_v if (num_v is not None and den_v) else None
            out.append(f"| {name} | {fmt(r, 2)} |")
    return "\n".join(out) + "\n", ratios, rss


def chart(ratios, rss, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not available: no chart", file=sys.stderr)
        return False
    rows = [(n, r, op, g) for n, r, op, g in ratios if r is not None and op is not None]
    if rss is not None:
        rows.append(("peak RSS, 8 par downloads / 32 MiB", rss / 32.0, "<=", 1.0))
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(rows) + 1.4))
    ys = list(range(len(rows)))[::-1]
    for y, (name, r, op, g) in zip(ys, rows):
        ok = r >= g if op == ">=" else r <= g
        ax.barh(y, r, color="#3a923a" if ok else "#c8442f", height=0.6)
        ax.plot([g, g], [y - 0.38, y + 0.38], color="black", lw=2)
        ax.text(r, y, f" {r:.2f}", va="center", fontsize=8)
    ax.set_yticks(ys)
    ax.set_yticklabels([f"{n}  ({op} {g:g})" for n, r, op, g in rows], fontsize=8)
    ax.axvline(1.0, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("ratio portcullis / nginx (black tick = goal; green = met, red = missed)")
    ax.set_title("portcullis vs nginx: ratios of medians", fontsize=10)
    ax.set_xlim(0, max(max(r for _, r, _, _ in rows), max(g for *_, g in rows)) * 1.18)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"chart: {path}")
    return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", default=os.path.join(ROOT, "bench/results/latest.csv"))
    ap.add_argument("--meta", default=os.path.join(ROOT, "bench/results/latest-meta.json"))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench/results"))
    ap.add_argument("--docs", action="store_true", help="update docs/benchmarks.md and docs/benchmarks.png")
    a = ap.parse_args()
    data = load(a.csv)
    meta = json.load(open(a.meta)) if os.path.exists(a.meta) else {}
    md, ratios, rss = build(data, meta)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "summary.md"), "w") as f:
        f.write(md)
    print(md)
    png = os.path.join(a.out, "chart.png")
    have_chart = chart(ratios, rss, png)
    if a.docs:
        if have_chart:
            shutil.copy(png, os.path.join(ROOT, "docs/benchmarks.png"))
        doc = os.path.join(ROOT, "docs/benchmarks.md")
        text = open(doc).read()
        b, e = "<!-- results:begin -->", "<!-- results:end -->"
        if b in text and e in text:
            head, rest = text.split(b, 1)
            _, tail = rest.split(e, 1)
            open(doc, "w").write(head + b + "\n" + md + e + tail)
            print(f"updated {doc}")
        else:
            print(f"{doc} has no results markers; not updated", file=sys.stderr)


if __name__ == "__main__":
    main()
