#!/usr/bin/env bash
# Instructions per small request: bare Pingora against portcullis, each
# under valgrind's callgrind, N HTTP/2 GETs of a manifest over one
# connection (h2load, Basic credentials; portcullis verifies them from its
# credential cache after the first). Instruction counts do not move with a
# shared VM's speed, so one run compares builds to a few per cent. Prints
# instructions per request and, with TOP=K, the K functions whose own
# instructions differ most between the two.
#
#   bash bench/request_instructions.sh
#   PORTCULLIS=/path/portcullis N=5000 TOP=30 bash bench/request_instructions.sh
#
# Knobs: N [2000] requests, PORTCULLIS / BARE [the release builds of
# ${CARGO_TARGET_DIR:-target}], TOP [0], KEEP_WORK=1 (keep the callgrind
# files). Needs valgrind, h2load (nghttp2-client), docker-registry,
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
start_portcullis portcullis || die "portcullis did not start"

M=application/vnd.oci.image.manifest.v1+json
for t in pingora-bare portcullis; do
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
"$PY" - "$WORK/pingora-bare.callgrind" "$WORK/portcullis.callgrind" "$N" "$TOP" <<'PY'
import collections, re, sys
def own(path):
    """instructions per function, its own (not its callees'), from an
    uncompressed callgrind file: cost lines after fn=, minus call lines"""
    cost = collections.Counter(); fn = None; call = False
    for line in open(path, errors="replace"):
        if line.startswith("fn="):
            fn, call = line[3:].strip(), False
        elif line.startswith("calls="):
            call = True
        elif fn and line[:1].isdigit() or fn and line[:1] in "+-*":
            parts = line.split()
            if len(parts) >= 2:
                if call:
                    call = False
                else:
                    cost[fn] += int(parts[1])
    return cost
a, b = own(sys.argv[1]), own(sys.argv[2]); n, top = int(sys.argv[3]), int(sys.argv[4])
ia, ib = sum(a.values()) / n, sum(b.values()) / n
print(f"instructions per request: bare Pingora {ia:,.0f}, portcullis {ib:,.0f}, ratio {ib / ia:.3f}")
if top:
    print(f"{'difference':>10} {'bare':>8} {'portcullis':>10}  function (own instructions per request)")
    d = {k: b[k] - a[k] for k in set(a) | set(b)}
    for k in sorted(d, key=d.get, reverse=True)[:top]:
        print(f"{d[k] / n:>10,.0f} {a[k] / n:>8,.0f} {b[k] / n:>10,.0f}  {re.sub(r'::h[0-9a-f]{16}', '', k)[:110]}")
PY
