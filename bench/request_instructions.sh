#!/usr/bin/env bash
# Instructions per small request: bare Pingora, bare Pingora configured
# like the nginx recipe (`--recipe`: the forwarding headers, the API
# version header and the upstream timeouts; no password check) and
# portcullis, each under valgrind's callgrind, N HTTP/2 GETs of a manifest
# over one connection (h2load, Basic credentials; portcullis verifies them
# from its credential cache after the first). Instruction counts do not
# move with a shared VM's speed, so one run compares builds to a few per
# cent. Prints instructions per request and portcullis's ratio to each
# floor and, with TOP=K, the K functions whose own instructions differ
# most between bare Pingora (or FLOOR=pingora-recipe) and portcullis.
#
#   bash bench/request_instructions.sh
#   PORTCULLIS=/path/portcullis N=5000 TOP=30 bash bench/request_instructions.sh
#
# Knobs: N [2000] requests, PORTCULLIS / BARE [the release builds of
# ${CARGO_TARGET_DIR:-target}], TOP [0], FLOOR [pingora-bare] (TOP's
# baseline), KEEP_WORK=1 (keep the callgrind files). Needs valgrind, h2load (nghttp2-client), docker-registry,
# htpasswd, openssl. Everything listens on 127.0.0.1; about 2 min.
set -Eeuo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
PORTCULLIS=${PORTCULLIS:-$TARGET_DIR/release/portcullis}
BARE=${BARE:-$TARGET_DIR/release/examples/bare_proxy}
N=${N:-2000}
TOP=${TOP:-0}
PY=${PYTHON:-python3}
T_START=$(date +%s)
BENCH_USER=bench
BENCH_PASS=bench-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
WORK=$(mktemp -d /tmp/portcullis-reqinstr.XXXXXX)
chmod 755 "$WORK"
CSV_TMP=$WORK/unused.csv
declare -A PID PORT BASE
REG_PID=""
# shellcheck source=bench/lib.sh disable=SC1091
source "$ROOT/bench/lib.sh"
# shellcheck source=bench/targets.sh disable=SC1091
source "$ROOT/bench/targets.sh"
cleanup() {
  local p
  for p in "${PID[@]}" $REG_PID; do kill -INT "$p" 2>/dev/null || true; done
  sleep 2
  for p in "${PID[@]}" $REG_PID; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [[ ${KEEP_WORK:-0} == 1 ]]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
for c in valgrind callgrind_control h2load docker-registry htpasswd openssl; do
  command -v "$c" >/dev/null || die "$c missing (apt-get install valgrind nghttp2-client docker-registry apache2-utils openssl)"
done

REG_RELATIVE=1 start_registry
PORT[registry]=${REG##*:}
BASE[registry]=$REG
make_certs
make_htpasswd
LAYERS=1 LAYER_MIB=1 REPO=bench/tiny seed_image
# shellcheck disable=SC2034 # read by bench/targets.sh
PROXY_WRAP=$(callgrind_wrap "$WORK")
START_WAIT=180
start_bare pingora-bare || die "bare Pingora did not start"
start_bare pingora-recipe "$BARE" --recipe || die "bare Pingora --recipe did not start"
start_portcullis portcullis || die "portcullis did not start"

M=application/vnd.oci.image.manifest.v1+json
TARGETS=(pingora-bare pingora-recipe portcullis)
for t in "${TARGETS[@]}"; do
  p=${PID[$t]}
  url=${BASE[$t]}/v2/bench/tiny/manifests/latest
  # warm: the first login (bcrypt), the upstream connection, lazy statics
  h2load -n 200 -c 1 -m 1 -H "Authorization: Basic $AUTH_B64" -H "Accept: $M" "$url" >/dev/null
  callgrind_control --dump=before "$p" >/dev/null
  out=$(h2load -n "$N" -c 1 -m 1 -H "Authorization: Basic $AUTH_B64" -H "Accept: $M" "$url")
  grep -q "status codes: $N 2xx" <<<"$out" || { echo "$out" >&2; die "$t: not every request answered 2xx"; }
  callgrind_control --dump=after "$p" >/dev/null
  f=$(grep -l '^desc: Trigger: dump after' "$WORK/callgrind.$p".* | head -1)
  cp "$f" "$WORK/$t.callgrind"
done
FLOOR=${FLOOR:-pingora-bare}
"$PY" - "$N" "$TOP" "$FLOOR" "${TARGETS[@]/%/=$WORK}" <<'PY'
import collections, re, sys
# Time-driven work, not request-driven: portcullis's file watcher (it
# reads and hashes the certificate, key and htpasswd every watch_interval)
# and the upstream health check. Under callgrind the requests run some
# 50 times slower, so this work lands on far fewer requests in real use.
BACKGROUND = re.compile(r"watcher::State::poll|HealthCheck as .*BackgroundService>::start")
def own(path):
    """instructions per function, its own (not its callees'), from a
    callgrind file, and the inclusive cost of calls into BACKGROUND"""
    cost = collections.Counter(); names = {}; fn = cfn = None; call = False; bg = 0
    def name(s):
        m = re.match(r"\((\d+)\)(?: (.*))?", s)
        if not m:
            return s
        if m.group(2):
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), s)
    for line in open(path, errors="replace"):
        if line.startswith("fn="):
            fn, call = name(line[3:].strip()), False
        elif line.startswith("cfn="):
            cfn = name(line[4:].strip())
        elif line.startswith("calls="):
            call = True
        elif fn and line[:1].isdigit() or fn and line[:1] in "+-*":
            parts = line.split()
            if len(parts) >= 2:
                if call:
                    call = False
                    if BACKGROUND.search(cfn) and not BACKGROUND.search(fn):
                        bg += int(parts[1])
                else:
                    cost[fn] += int(parts[1])
    return cost, bg
n, top, floor = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
names = [t.split("=", 1)[0] for t in sys.argv[4:]]
cost, bg = {}, {}
for t, w in (a.split("=", 1) for a in sys.argv[4:]):
    cost[t], bg[t] = own(f"{w}/{t}.callgrind")
per = {t: sum(c.values()) / n for t, c in cost.items()}
req = {t: per[t] - bg[t] / n for t in names}
print("instructions per request: " + ", ".join(f"{t} {per[t]:,.0f}" for t in names))
print("  of which time-driven background work: " + ", ".join(f"{t} {bg[t] / n:,.0f}" for t in names))
print("  request-driven: " + ", ".join(f"{t} {req[t]:,.0f}" for t in names))
for f in names[:-1]:
    print(f"portcullis / {f}: {per['portcullis'] / per[f]:.3f} (request-driven: {req['portcullis'] / req[f]:.3f})")
if top:
    a, b = cost[floor], cost["portcullis"]
    print(f"{'difference':>10} {floor[:10]:>10} {'portcullis':>10}  function (own instructions per request)")
    d = {k: b[k] - a[k] for k in set(a) | set(b)}
    for k in sorted(d, key=d.get, reverse=True)[:top]:
        print(f"{d[k] / n:>10,.0f} {a[k] / n:>10,.0f} {b[k] / n:>10,.0f}  {re.sub(r'::h[0-9a-f]{16}', '', k)[:110]}")
PY
