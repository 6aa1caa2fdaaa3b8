#!/usr/bin/env python3
"""Summary of bench/clients.sh: medians over the rounds per (target, op),
ratios of portcullis to the others, and the issue's targets (issue 17).

    python3 bench/clients_report.py --csv bench/results/clients.csv \
        --meta bench/results/clients-meta.json --out bench/results/clients-summary.md
"""
import argparse
import csv
import json
import statistics
from collections import defaultdict

TARGET_ORDER = ["registry", "nginx", "nginx-tuned", "caddy", "pingora-bare", "portcullis"]
OPS = [
    ("skopeo_pull", "skopeo pull"),
    ("skopeo_push", "skopeo push"),
    ("docker_pull", "docker pull"),
    ("docker_push", "docker push"),
]
METRICS = [
    ("wall_s", "wall s", 2),
    ("proxy_cpu_s_per_gib", "proxy CPU s/GiB", 2),
    ("registry_cpu_s_per_gib", "registry CPU s/GiB", 2),
    ("client_cpu_s", "client CPU s", 2),
]
# the HTTP/2 rows: curl, one blob, each way over HTTP/1.1 and HTTP/2
CURL_OPS = [("get", "GET (download)"), ("put", "PUT (upload)")]
# (label, metric, other target, bound): portcullis / other <= bound
GOALS = [
    ("wall ≤ 0.9 × nginx recipe", "wall_s", "nginx", 0.9),
    ("wall ≤ 1.0 × Caddy", "wall_s", "caddy", 1.0),
    ("CPU/GiB ≤ 0.5 × nginx recipe", "proxy_cpu_s_per_gib", "nginx", 0.5),
    ("CPU/GiB ≤ 1.0 × Caddy", "proxy_cpu_s_per_gib", "caddy", 1.0),
    ("wall ≤ 1.10 × pingora-bare", "wall_s", "pingora-bare", 1.10),
    ("CPU/GiB ≤ 1.10 × pingora-bare", "proxy_cpu_s_per_gib", "pingora-bare", 1.10),
]


def fmt(x, digits=2):
    if x is None:
        return "–"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", required=True)
    ap.add_argument("--meta", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    per_round = defaultdict(list)   # (target, metric) -> values over rounds >= 1
    facts = {}                      # (target, metric) -> value of round 0
    with open(a.csv) as f:
        for row in csv.DictReader(f):
            try:
                v = float(row["value"])
            except ValueError:
                continue
            key = (row["target"], row["metric"])
            if row["round"] == "0":
                facts[key] = v
            else:
                per_round[key].append(v)
    meta = json.load(open(a.meta))
    # COUNT=instructions: the proxies ran under callgrind; their cost is in
    # instructions, and wall times (of slowed proxies) are not compared
    inst = meta.get("count") == "instructions"
    cpu_m = "proxy_ginstr_per_gib" if inst else "proxy_cpu_s_per_gib"
    metrics = ([(cpu_m, "proxy G instructions/GiB", 2)] + METRICS[2:]) if inst else METRICS
    compared = metrics[:1] if inst else METRICS[:2]
    goals = [(label.replace("CPU", "instructions"), cpu_m, other, bound)
             for label, m, other, bound in GOALS if m == "proxy_cpu_s_per_gib" and other == "pingora-bare"] if inst else GOALS
    targets = [t for t in TARGET_ORDER if t in meta.get("targets", [])]
    targets += [t for t in meta.get("targets", []) if t not in targets]

    def med(t, m):
        v = per_round.get((t, m))
        return statistics.median(v) if v else None

    def cell(t, m, digits):
        v = per_round.get((t, m))
        if not v:
            return "–"
        s = fmt(statistics.median(v), digits)
        if len(v) > 1:
            s += f" ({fmt(min(v), digits)}–{fmt(max(v), digits)})"
        return s

    ops = [(op, name) for op, name in OPS if any((t, op + "_wall_s") in per_round for t in targets)]
    out = []
    w = out.append
    w("# Real clients through the targets (bench/clients.sh)")
    w("")
    mib = meta.get("image_bytes", 0) / 2**20
    tar_mib = meta.get("image_tar_bytes", 0) / 2**20
    w(f"{meta.get('date', '?')}, git {meta.get('git', '?')}, {meta.get('rounds', '?')} round(s), "
      f"{meta.get('duration_s', '?')} s; {meta.get('nproc', '?')} × {meta.get('cpu', '?')}; "
      f"load average {meta.get('loadavg_start', '?')} before, {meta.get('loadavg_end', '?')} after.")
    w("")
    w(f"Image: {meta.get('layers', '?')} layers of {meta.get('layer_mib', '?')} MiB "
      f"({meta.get('layer_content', '?')}): {mib:.1f} MiB gzip'd as pulled and pushed by skopeo "
      f"({tar_mib:.1f} MiB of tars); docker push moves the engine's own gzip (its bytes are in the CSV).")
    w("")
    vers = [f"{k} {meta[k]}" for k in ("skopeo", "docker_cli", "docker_engine", "nginx", "caddy", "registry", "openssl") if meta.get(k)]
    if meta.get("docker_storage"):
        vers.append(f"engine storage {meta['docker_storage']}")
    if meta.get("portcullis_binary"):
        vers.append(f"portcullis binary {meta['portcullis_binary']}")
    w("Versions: " + ", ".join(vers) + ".")
    w("")
    clock = meta.get("cpu_clock", "ticks of 1/100 s")
    if inst:
        w(f"COUNT=instructions: the proxies ran under callgrind ({meta.get('valgrind', 'valgrind')}); "
          "proxy G instructions/GiB is the instructions the proxy's process ran (every thread) during "
          "the command, per GiB moved. Instructions do not move with the speed of a shared VM; "
          "wall times of proxies slowed some 50x by callgrind are not shown. Median over the rounds "
          f"(min–max); registry CPU (clock: {clock}) and client CPU (ticks) as in a CPU run.")
    else:
        w("Median over the rounds (min–max). Proxy CPU is the CPU time of the proxy's processes "
          f"(nginx: master + workers) per GiB moved, clock: {clock}; client CPU (ticks) is skopeo's, "
          "or dockerd's + the CLI's "
          "(docker pull gunzips and extracts into the storage driver, docker push gzips every layer).")
    w("")
    w("| operation | metric | " + " | ".join(targets) + " |")
    w("|---|---|" + "---:|" * len(targets))
    for op, name in ops:
        for m, label, digits in metrics:
            if not any((t, f"{op}_{m}") in per_round for t in targets):
                continue
            w(f"| {name} | {label} | " + " | ".join(cell(t, f"{op}_{m}", digits) for t in targets) + " |")
    w("")

    others = [t for t in ("nginx", "nginx-tuned", "caddy", "pingora-bare") if t in targets]
    if "portcullis" in targets and others:
        w("## portcullis / the others (ratio of medians)")
        w("")
        w("| operation | metric | " + " | ".join(f"/ {o}" for o in others) + " |")
        w("|---|---|" + "---:|" * len(others))
        for op, name in ops:
            for m, label, _ in compared:
                p = med("portcullis", f"{op}_{m}")
                cells = []
                for o in others:
                    q = med(o, f"{op}_{m}")
                    cells.append(fmt(p / q) if p is not None and q else "–")
                w(f"| {name} | {label} | " + " | ".join(cells) + " |")
        w("")
    curl_rows = [t for t in targets if (t, "curl_get_h1_mibs") in per_round]
    if curl_rows:
        w("## One blob over HTTP/1.1 and HTTP/2 (curl)")
        w("")
        w(f"curl {meta.get('curl', '?')}, one {meta.get('blob_mib', '?')} MiB blob of random bytes: GET, and a "
          "monolithic PUT (POST, then PUT ?digest= with the body) to a fresh repository; HTTP/2 where the "
          "target offers it (ALPN). MiB/s is wall-clock; CPU is the proxy's per GiB moved.")
        w("")
        unit = "G instructions/GiB" if inst else "CPU s/GiB"
        w("| target | GET h1.1 MiB/s | GET h2 | h2/h1.1 | PUT h1.1 MiB/s | PUT h2 | h2/h1.1 "
          f"| {unit} GET h1.1 | GET h2 | PUT h1.1 | PUT h2 |")
        w("|---|" + "---:|" * 10)
        for t in curl_rows:
            cells = []
            for op, _ in CURL_OPS:
                h1, h2 = med(t, f"curl_{op}_h1_mibs"), med(t, f"curl_{op}_h2_mibs")
                cells += [fmt(h1), fmt(h2), fmt(h2 / h1) if h1 and h2 else "–"]
            for op, _ in CURL_OPS:
                for v in ("h1", "h2"):
                    cells.append(fmt(med(t, f"curl_{op}_{v}_{cpu_m}")))
            w(f"| {t} | " + " | ".join(cells) + " |")
        w("")

    if "portcullis" in targets and others:
        floor = "pingora-bare" if "pingora-bare" in targets else None
        w("## The issue's targets")
        w("")
        w("Each row: portcullis's ratio, and beside it bare Pingora's ratio for the same bound (the "
          "framework's floor: where bare Pingora misses a bound too, so would anything built on it).")
        w("")
        w("| operation | target | portcullis | bare Pingora (floor) | verdict |")
        w("|---|---|---:|---:|---|")
        met = total = 0

        def goal_row(name, label, r, fl, bound, higher_is_better=False):
            ok = (r >= bound) if higher_is_better else (r <= bound)
            floor_ok = None if fl is None else ((fl >= bound) if higher_is_better else (fl <= bound))
            v = "met" if ok else ("**not met**, the floor misses it too" if floor_ok is False else "**not met**")
            w(f"| {name} | {label} | {fmt(r)} | {fmt(fl) if fl is not None else '–'} | {v} |")
            return ok

        for op, name in ops:
            for label, m, other, bound in goals:
                p = med("portcullis", f"{op}_{m}")
                q = med(other, f"{op}_{m}")
                if p is None or not q:
                    w(f"| {name} | {label} | – | – | n/a |")
                    continue
                f = med(floor, f"{op}_{m}") if floor else None
                fl = (f / q) if f is not None and other != floor else (1.0 if other == floor else None)
                total += 1
                met += goal_row(name, label, p / q, fl, bound)
        for op, name in CURL_OPS:
            for t in ("portcullis",):
                h1, h2 = med(t, f"curl_{op}_h1_mibs"), med(t, f"curl_{op}_h2_mibs")
                if not h1 or not h2 or inst:
                    continue
                fa = med(floor, f"curl_{op}_h1_mibs") if floor else None
                fb = med(floor, f"curl_{op}_h2_mibs") if floor else None
                fl = fb / fa if fa and fb else None
                total += 1
                met += goal_row(f"curl {name}", "HTTP/2 MiB/s ≥ HTTP/1.1", h2 / h1, fl, 1.0, higher_is_better=True)
            for v, vn in (("h1", "HTTP/1.1"), ("h2", "HTTP/2")):
                p = med("portcullis", f"curl_{op}_{v}_{cpu_m}")
                q = med(floor, f"curl_{op}_{v}_{cpu_m}") if floor else None
                if p is None or not q:
                    continue
                total += 1
                met += goal_row(f"curl {name} {vn}", f"{'instructions' if inst else 'CPU'}/GiB ≤ 1.10 × pingora-bare",
                                p / q, 1.0, 1.10)
        w("")
        w(f"{met} of {total} met.")
        w("")

    w("## Protocol, checks and logs")
    w("")
    w("HTTP version each client used (what it offers in ALPN, probed with openssl s_server: "
      + ", ".join(f"{c} offers {v}" for c, v in meta.get("client_alpn", {}).items())
      + "; and what the target selects for curl --http2). Failures count operations that failed "
      "over all rounds; reused counts blobs skopeo skipped and layers the engine mounted or found "
      "(all should be 0: every push uploads the whole image).")
    w("")
    clients = meta.get("clients", "skopeo docker").split()
    hdr = ["target"] + [f"{c} HTTP" for c in clients] + ["target picks (curl)", "pulled blobs verified", "failures", "reused", "log errors", "log warnings", "nginx spills"]
    w("| " + " | ".join(hdr) + " |")
    w("|---|" + "---:|" * (len(hdr) - 1))

    def fact(t, m, digits=0):
        v = facts.get((t, m))
        if v is None:
            return "–"
        return f"{v:g}" if digits == 0 else fmt(v, digits)

    for t in targets:
        fails = sum(1 for (tt, m), vs in per_round.items() if tt == t and m.endswith("_ok") for v in vs if v == 0)
        reused = sum(sum(vs) for (tt, m), vs in per_round.items()
                     if tt == t and m in ("skopeo_push_reused_blobs", "docker_push_mounted_layers", "docker_push_existing_layers"))
        ver = []
        for c in clients:
            v = facts.get((t, f"verify_{c}_pull_ok"))
            if v is not None:
                ver.append(f"{c} {'ok' if v == 1 else 'BAD'}")
        row = [t] + [fact(t, f"http_version_{c}") for c in clients] + [
            fact(t, "server_http_version_curl"), ", ".join(ver) or "–", str(fails), f"{reused:g}",
            fact(t, "log_error_lines"), fact(t, "log_warn_lines"), fact(t, "nginx_temp_file_spills")]
        w("| " + " | ".join(row) + " |")
    if ("docker-engine", "dockerd_log_error_lines") in facts:
        w("")
        w(f"dockerd logged {facts[('docker-engine', 'dockerd_log_error_lines')]:g} error lines.")
    w("")
    with open(a.out, "w") as f:
        f.write("\n".join(out))
    print("\n".join(out))


if __name__ == "__main__":
    main()
