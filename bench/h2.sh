#!/usr/bin/env bash
# HTTP/2 against HTTP/1.1 for one large blob, and the HTTP/2 levers, in one
# interleaved run (issue 17). curl downloads (GET) and uploads (monolithic
# PUT) a BLOB_MIB blob through:
#
#   bare        Pingora + rustls with no filters (examples/bare_proxy.rs),
#               the framework's floor, with h2's own defaults (64 KiB windows)
#   p-64k       portcullis with [server.http2] at the protocol's defaults
#               (stream and connection window 65535): what it shipped before
#   p-default   portcullis with the shipped [server.http2] (1 MiB / 2 MiB)
#   p-4m        stream 4 MiB / connection 8 MiB
#   p-16m       stream 16 MiB / connection 32 MiB, frames up to 1 MiB
#   p-t1        the shipped windows, one worker thread (server.threads = 1)
#   p-nosteal   the shipped windows, two worker threads that do not steal
#               each other's tasks (server.work_stealing = false)
#   p-awslc     the shipped windows, built with --features aws-lc-rs (the
#               binary PORTCULLIS_AWSLC): aws-lc-rs instead of ring
#
# each over --http1.1 and --http2 (h2 via ALPN, TLS 1.3, the cipher curl
# picks: TLS_AES_256_GCM_SHA384), and the same h2 GET with AES-128-GCM
# forced (--tls13-ciphers), the cipher Go clients choose on AES hardware.
# Metrics: MiB/s (wall) and proxy CPU seconds per GiB (the proxy's cgroup,
# in ns, where the machine allows; else utime+stime ticks).
#
#   bash bench/h2.sh             # about 6 min on 2 vCPUs
#   QUICK=1 bash bench/h2.sh     # smoke test
# Knobs: ROUNDS [5] BLOB_MIB [256] TARGETS PORTCULLIS PORTCULLIS_AWSLC BARE OUT
# Output: $OUT/h2.csv, h2-meta.json, h2-summary.md.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ ${QUICK:-0} == 1 ]]; then ROUNDS=${ROUNDS:-1}; BLOB_MIB=${BLOB_MIB:-32}; fi
ROUNDS=${ROUNDS:-5}
BLOB_MIB=${BLOB_MIB:-256}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
PORTCULLIS=${PORTCULLIS:-$TARGET_DIR/release/portcullis}
BARE=${BARE:-$TARGET_DIR/release/examples/bare_proxy}
PORTCULLIS_AWSLC=${PORTCULLIS_AWSLC:-}
TARGETS=${TARGETS:-"bare p-64k p-default p-4m p-16m p-t1 p-nosteal${PORTCULLIS_AWSLC:+ p-awslc}"}
OUT=${OUT:-$ROOT/bench/results}
PY=${PYTHON:-python3}
T_START=$(date +%s)
WORK=$(mktemp -d /tmp/portcullis-h2.XXXXXX)
CSV_TMP=$WORK/results.csv
mkdir -p "$OUT"
echo "target,round,metric,value" >"$CSV_TMP"
declare -A PID BASE
REG_PID=""
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

cleanup() {
  local rc=$? p
  set +e
  for p in "${PID[@]}" $REG_PID; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  cpu_clock_cleanup
  if [[ ${KEEP_WORK:-0} == 1 ]]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

hdr() { grep -i "^$1:" "$2" | tail -1 | cut -d' ' -f2- | tr -d '\r'; }

http2_toml() {
  case $1 in
    p-64k) printf '[server.http2]\nstream_window = 65535\nconnection_window = 65535\n' ;;
    p-default|p-t1|p-nosteal|p-awslc) ;;
    p-4m) printf '[server.http2]\nstream_window = 4194304\nconnection_window = 8388608\n' ;;
    p-16m) printf '[server.http2]\nstream_window = 16777216\nconnection_window = 33554432\nmax_frame_size = 1048576\n' ;;
    *) die "unknown target $1" ;;
  esac
}

start_target() {
  local t=$1 port d=$WORK/$1
  mkdir -p "$d"; port=$(free_port); BASE[$t]=https://127.0.0.1:$port
  if [[ $t == bare ]]; then
    [[ -x $BARE ]] || die "$BARE missing (cargo build --release --example bare_proxy)"
    "$BARE" "127.0.0.1:$port" "${REG#http://}" "$WORK/cert.pem" "$WORK/key.pem" >"$d/out.log" 2>&1 &
    PID[$t]=$!
    wait_http "${BASE[$t]}/v2/" "" 200 30 || die "bare not ready"
    return
  fi
  local bin=$PORTCULLIS threads=""
  if [[ $t == p-awslc ]]; then bin=$PORTCULLIS_AWSLC; fi
  if [[ $t == p-t1 ]]; then threads="threads = 1"; fi
  if [[ $t == p-nosteal ]]; then threads="work_stealing = false"; fi
  [[ -x $bin ]] || die "$bin missing (cargo build --release)"
  {
    cat <<TOML
[server]
listen = "127.0.0.1:$port"
$threads

[upstream]
url = "$REG"

[tls]
cert = "$WORK/cert.pem"
key = "$WORK/key.pem"

[auth.htpasswd]
path = "$WORK/htpasswd"

[metrics]
enabled = false

[log]
level = "error"
access_log = false

TOML
    http2_toml "$t"
  } >"$d/proxy.toml"
  "$bin" serve --config "$d/proxy.toml" >"$d/out.log" 2>&1 &
  PID[$t]=$!
  wait_http "${BASE[$t]}/v2/" "bench:$PASS" 200 30 || { tail "$d/out.log" >&2; die "$t not ready"; }
}

# one transfer: TARGET ROUND MODE(get|put) PROTO(1.1|2|2-aes128)
transfer() {
  local t=$1 r=$2 mode=$3 proto=$4 url h=$WORK/h.txt c0 c1 t0 t1 code args=()
  case $proto in
    1.1) args=(--http1.1) ;;
    2) args=(--http2) ;;
    2-aes128) args=(--http2 --tls13-ciphers TLS_AES_128_GCM_SHA256) ;;
  esac
  if [[ $mode == put ]]; then
    code=$(curl -sk --http1.1 -u "bench:$PASS" -X POST -D "$h" -o /dev/null -w '%{http_code}' \
      -H 'Content-Length: 0' "${BASE[$t]}/v2/bench/up-$t-$r-$proto/blobs/uploads/")
    [[ $code == 202 ]] || die "$t POST -> $code"
    url=${BASE[$t]}$(hdr location "$h")
    [[ $url == *\?* ]] && url="$url&digest=$DIGEST" || url="$url?digest=$DIGEST"
    args+=(-X PUT -T "$WORK/blob.bin" -H 'Content-Type: application/octet-stream' -H 'Expect:')
  else
    url=${BASE[$t]}/v2/bench/blobs/$DIGEST
    args+=(-o "$WORK/got.bin")
  fi
  c0=$(cpu_ns "$t" "${PID[$t]}"); t0=$(now)
  code=$(curl -sk -u "bench:$PASS" "${args[@]}" -D "$h" -w '%{http_code} %{http_version}' --max-time 300 "$url" | tail -1)
  t1=$(now); c1=$(cpu_ns "$t" "${PID[$t]}")
  local want=200; [[ $mode == put ]] && want=201
  [[ ${code%% *} == "$want" ]] || die "$t $mode $proto -> $code"
  [[ ${code##* } == "${proto%%-*}" ]] || die "$t $mode $proto: spoke HTTP/${code##* }"
  if [[ $mode == get ]]; then
    [[ sha256:$(sha256sum "$WORK/got.bin" | cut -d' ' -f1) == "$DIGEST" ]] || die "$t GET $proto: wrong bytes"
    rm -f "$WORK/got.bin"
  else
    [[ $(hdr docker-content-digest "$h") == "$DIGEST" ]] || die "$t PUT $proto: digest mismatch"
  fi
  local s; s=$(calc "$t1 - $t0")
  rec "$t" "$r" "${mode}_h${proto}_mibs" "$(calc "$BLOB_MIB / $s")"
  rec "$t" "$r" "${mode}_h${proto}_cpu_s_per_gib" "$(calc "($c1 - $c0) / 1e9 * 1024 / $BLOB_MIB")"
}

for c in curl docker-registry htpasswd openssl sha256sum; do command -v $c >/dev/null || die "$c missing"; done
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
PASS=h2-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
htpasswd -nbB -C 4 bench "$PASS" | sed '/^$/d' >"$WORK/htpasswd"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" -subj "/CN=127.0.0.1" \
  -addext "subjectAltName=IP:127.0.0.1" 2>/dev/null
head -c $((BLOB_MIB * 1024 * 1024)) /dev/urandom >"$WORK/blob.bin"
DIGEST=sha256:$(sha256sum "$WORK/blob.bin" | cut -d' ' -f1)
REG_RELATIVE=1 start_registry
push_blob bench "$WORK/blob.bin" "$DIGEST"
for t in $TARGETS; do start_target "$t"; done
# each proxy's CPU from a cgroup of its own, in ns (bench/lib.sh), else ticks
cpu_clock_init
for t in $TARGETS; do cpu_clock_join "$t" "${PID[$t]}"; done
log "targets: $TARGETS; ${BLOB_MIB} MiB blob; $ROUNDS rounds"

for ((r = 1; r <= ROUNDS; r++)); do
  for t in $(rotate "$r" $TARGETS); do
    for m in "get 1.1" "get 2" "get 2-aes128" "put 1.1" "put 2"; do
      # shellcheck disable=SC2086
      transfer "$t" "$r" $m
    done
  done
  log "round $r done"
done
for t in $TARGETS; do rec "$t" 0 log_error_lines "$(grep -cE ' (ERROR|WARN) |panicked' "$WORK/$t/out.log" || true)"; done

{
  echo "{\"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\", \"duration_s\": $(( $(date +%s) - T_START )),"
  echo " \"rounds\": $ROUNDS, \"blob_mib\": $BLOB_MIB, \"curl\": \"$(curl --version | awk 'NR==1{print $2" "$5" "$6}')\","
  echo " \"cpu\": \"$(lscpu | awk -F': *' '/^Model name/{print $2; exit}')\", \"nproc\": $(nproc),"
  echo " \"cpu_clock\": \"${CPU_CG_KIND:-ticks}\","
  echo " \"loadavg_start\": \"$LOAD_START\", \"loadavg_end\": \"$(cut -d' ' -f1-3 /proc/loadavg)\","
  echo " \"git_head_at_run\": \"$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo none)\"}"
} >"$WORK/meta.json"
cp "$CSV_TMP" "$OUT/h2.csv"; cp "$WORK/meta.json" "$OUT/h2-meta.json"
"$PY" - "$OUT/h2.csv" "$OUT/h2-meta.json" "$TARGETS" <<'PY' | tee "$OUT/h2-summary.md"
import csv, json, statistics, sys
from collections import defaultdict
vals = defaultdict(list)
for row in csv.DictReader(open(sys.argv[1])):
    vals[(row["target"], row["metric"])].append(float(row["value"]))
meta = json.load(open(sys.argv[2])); targets = sys.argv[3].split()
med = lambda t, m: statistics.median(vals[(t, m)]) if vals[(t, m)] else float("nan")
print(f"Run {meta['date']}, {meta['duration_s']} s, {meta['nproc']} vCPU {meta['cpu']}, load {meta['loadavg_start']} → {meta['loadavg_end']}, "
      f"curl {meta['curl']}, at {meta['git_head_at_run']}. {meta['blob_mib']} MiB blob, {meta['rounds']} interleaved rounds, medians.\n")
print("| target | GET h1.1 MiB/s | GET h2 | h2/h1 | GET h2 AES-128 | PUT h1.1 MiB/s | PUT h2 | h2/h1 | CPU s/GiB GET h1 | GET h2 | GET h2 AES-128 | PUT h1 | PUT h2 |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for t in targets:
    g1, g2, ga = med(t, "get_h1.1_mibs"), med(t, "get_h2_mibs"), med(t, "get_h2-aes128_mibs")
    p1, p2 = med(t, "put_h1.1_mibs"), med(t, "put_h2_mibs")
    c = [med(t, f"{m}_cpu_s_per_gib") for m in ("get_h1.1", "get_h2", "get_h2-aes128", "put_h1.1", "put_h2")]
    print(f"| {t} | {g1:,.0f} | {g2:,.0f} | {g2/g1:.2f} | {ga:,.0f} | {p1:,.0f} | {p2:,.0f} | {p2/p1:.2f} | " + " | ".join(f"{x:.2f}" for x in c) + " |")
if "bare" in targets:
    print("\nportcullis over bare Pingora (MiB/s ratio; CPU/GiB ratio):\n")
    print("| target | GET h1 | GET h2 | PUT h1 | PUT h2 | CPU GET h2 | CPU PUT h2 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for t in targets:
        if t == "bare": continue
        r = [med(t, f"{m}_mibs") / med("bare", f"{m}_mibs") for m in ("get_h1.1", "get_h2", "put_h1.1", "put_h2")]
        c = [med(t, f"{m}_cpu_s_per_gib") / med("bare", f"{m}_cpu_s_per_gib") for m in ("get_h2", "put_h2")]
        print(f"| {t} | " + " | ".join(f"{x:.2f}" for x in r + c) + " |")
errs = sum(vals[(t, "log_error_lines")][0] for t in targets)
print(f"\nERROR/WARN lines in the proxies' logs: {errs:.0f}.")
PY
log "done in $(( $(date +%s) - T_START )) s"
