#!/usr/bin/env bash
# Proxy CPU per GiB of skopeo pushes (or pulls) through bare Pingora and
# several portcullis binaries or run-time settings, interleaved: the tool
# behind "portcullis over bare Pingora on a push" in docs/benchmarks.md.
# Each VARIANT is NAME=BINARY[:ENV=VALUE,...]; every one runs with the
# bench's Basic-auth config (bench/targets.sh), metrics and access log off.
#
#   cargo build --release --bin portcullis --example bare_proxy
#   cp target/release/portcullis /tmp/portcullis-jemalloc
#   cargo build --release --bin portcullis --no-default-features
#   VARIANTS="jemalloc=/tmp/portcullis-jemalloc glibc=target/release/portcullis" bash bench/push_cpu.sh
#   MODE=pull VARIANTS=... bash bench/push_cpu.sh
#
# Knobs: ROUNDS [6] LAYERS [4] LAYER_MIB [64] (random bytes: skopeo moves
# blobs as they are) MODE [push|pull] BARE [target/release/examples/bare_proxy]
# BARE_VARIANTS [unset]: more bare Pingora builds, NAME=BINARY ...
# PERF [unset]: a directory; each operation is also sampled with
# `perf record ${PERF_OPTS:--F 999}` into PERF/NAME-rROUND.data, and
# PERF/NAME.txt gets the top symbols over all rounds (Debian linux-perf).
# Prints each operation's proxy CPU (ms, from the proxy's own cgroup in ns where the
# machine allows, else utime+stime ticks) and minor page faults and, last, one TOTAL line
# per target: CPU seconds per GiB over all rounds and the RSS at the end.
# Needs root (a mount namespace hides containers/image's blob-info cache,
# as in bench/clients.sh). Everything listens on 127.0.0.1.
set -Eeuo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
ROUNDS=${ROUNDS:-6}; LAYERS=${LAYERS:-4}; LAYER_MIB=${LAYER_MIB:-64}
BARE=${BARE:-$TARGET_DIR/release/examples/bare_proxy}
[[ -n ${VARIANTS:-} ]] || { echo "set VARIANTS (see the header)" >&2; exit 2; }
CACHE_MNT=/var/lib/containers/cache
# PY, T_START and CSV_TMP are for bench/lib.sh
# shellcheck disable=SC2034
PY=python3 T_START=$(date +%s)
WORK=$(mktemp -d /tmp/portcullis-push-cpu.XXXXXX)
# shellcheck disable=SC2034
CSV_TMP=$WORK/r.csv
declare -A PID PORT BASE
BENCH_USER=bench; BENCH_PASS=bench-$RANDOM$RANDOM; REPO=bench/app
# shellcheck source=bench/lib.sh disable=SC1091
source "$ROOT/bench/lib.sh"
# shellcheck source=bench/targets.sh disable=SC1091
source "$ROOT/bench/targets.sh"
# SIGINT: Pingora's fast shutdown (SIGTERM waits up to 5 min for sessions)
cleanup() { set +e; for p in "${PID[@]}"; do kill -INT "$p" 2>/dev/null; done; kill "$REG_PID" 2>/dev/null; wait 2>/dev/null; cpu_clock_cleanup; rm -rf "$WORK"; }
trap cleanup EXIT
make_certs; make_htpasswd; mkdir -p "$WORK/certs"; cp "$WORK/ca.pem" "$WORK/certs/ca.crt"
REG_RELATIVE=1 start_registry; PORT[registry]=${REG##*:}
# shellcheck disable=SC2034 # read by bench/targets.sh
BASE[registry]=$REG
seed_image
start_bare
# VARIANTS: name=binary[:ENV=VAL]; each one is started as bench/targets.sh
# starts portcullis, with metrics off
# shellcheck disable=SC2034 # read by start_portcullis
PORTCULLIS_TOML_EXTRA=$'[metrics]\nenabled = false'
for v in $VARIANTS; do
  name=${v%%=*}; rest=${v#*=}; bin=${rest%%:*}; envs=""; [[ $rest == *:* ]] && envs=${rest#*:}
  # shellcheck disable=SC2086 # envs: words on purpose
  start_portcullis "$name" "$bin" $envs || die "$name did not start"
done
NAMES="pingora-bare"
for v in ${BARE_VARIANTS:-}; do start_bare "${v%%=*}" "${v#*=}" || die "${v%%=*} did not start"; NAMES+=" ${v%%=*}"; done
for v in $VARIANTS; do NAMES+=" ${v%%=*}"; done
cpu_clock_init
for t in $NAMES; do cpu_clock_join "$t" "${PID[$t]}"; done
mkdir -p "$WORK/cache" "$WORK/home"
mkdir -p "$CACHE_MNT"
# shellcheck disable=SC2016
sk() { HOME="$WORK/home" unshare --mount --propagation private sh -c 'mount --bind "$0" "$1" && shift && exec skopeo "$@"' "$WORK/cache" "$CACHE_MNT" --insecure-policy "$@"; }
sk copy --src-tls-verify=false "docker://${REG#http://}/$REPO:latest" "dir:$WORK/src" >/dev/null
declare -A SUM
# page faults show memory the allocator gave back to the kernel and takes again
minor_faults() { awk '{print $10}' "/proc/$1/stat"; }
for ((r=1;r<=ROUNDS;r++)); do
  # shellcheck disable=SC2086
  for t in $(rotate "$r" $NAMES); do
    rm -rf "${WORK:?}"/cache/*
    [[ -n ${PERF:-} ]] && { mkdir -p "$PERF"; perf record -q ${PERF_OPTS:--F 999} -p "${PID[$t]}" -o "$PERF/$t-r$r.data" 2>/dev/null & PERF_PID=$!; sleep 0.5; }
    c0=$(cpu_ns "$t" "${PID[$t]}"); f0=$(minor_faults "${PID[$t]}"); t0=$(now)
    if [[ ${MODE:-push} == push ]]; then
    sk copy --dest-cert-dir="$WORK/certs" --dest-creds "$BENCH_USER:$BENCH_PASS" "dir:$WORK/src" "docker://127.0.0.1:${PORT[$t]}/push-$t-$r/app:latest" >"$WORK/op.log" 2>&1 || { cat "$WORK/op.log"; exit 1; }
    else rm -rf "$WORK/pull"
    sk copy --src-cert-dir="$WORK/certs" --src-creds "$BENCH_USER:$BENCH_PASS" "docker://127.0.0.1:${PORT[$t]}/$REPO:latest" "dir:$WORK/pull" >"$WORK/op.log" 2>&1 || { cat "$WORK/op.log"; exit 1; }
    fi
    t1=$(now); c1=$(cpu_ns "$t" "${PID[$t]}"); f1=$(minor_faults "${PID[$t]}")
    [[ -n ${PERF:-} ]] && { kill -INT "$PERF_PID"; wait "$PERF_PID" || true; }
    SUM[$t]=$(( ${SUM[$t]:-0} + c1 - c0 ))
    echo "$t r$r wall $(calc "$t1-$t0") cpu_ms $(calc "($c1-$c0)/1e6") minor_faults $((f1-f0))"
  done
done
for t in $NAMES; do echo "TOTAL $t cpu_s_per_gib $(calc "${SUM[$t]}/1e9/($ROUNDS*$IMAGE_BYTES/1073741824)") rss_kb $(awk '/VmRSS/{print $2}' "/proc/${PID[$t]}/status")"; done
if [[ -n ${PERF:-} ]]; then
  for t in $NAMES; do
    for f in "$PERF/$t"-r*.data; do perf report -q -i "$f" --no-children --sort dso,sym --percent-limit 0 2>/dev/null; done \
      | awk '{pct=$1; sub(/%/,"",pct); $1=""; sum[$0]+=pct} END {for (k in sum) printf "%7.2f %s\n", sum[k]/'"$ROUNDS"', k}' \
      | sort -rn | head -60 >"$PERF/$t.txt"
  done
  echo "top symbols: $PERF/NAME.txt (average share per operation, %)"
fi
