#!/usr/bin/env bash
# Where a proxy's CPU goes while it moves one large blob (issue 17): perf
# samples (cpu-clock, no hardware counters needed) of pingora-bare and
# portcullis during a curl download (GET) and a monolithic upload (PUT),
# over HTTP/1.1 and HTTP/2, grouped into TLS crypto, copies, the kernel's
# network path, HTTP/2 framing, Pingora, tokio, the allocator and
# portcullis's own code; and a chunked HTTP/1.1 upload (the Docker engine's).
#
#   bash bench/profile.sh              # about 1 min
# Knobs: BLOB_MIB [512] TARGETS ["pingora-bare portcullis"] PORTCULLIS BARE
#        OUT [bench/results] FREQ [999]
# Output: $OUT/profile-summary.md (shares per group) and
# $OUT/profile-TARGET-OP.txt (the top symbols of each). Needs perf
# (Debian linux-perf), curl, docker-registry, htpasswd, openssl.
# Binaries with symbols: the release build (line tables or not), not the
# image's stripped one without its portcullis.debug.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BLOB_MIB=${BLOB_MIB:-512}
TARGETS=${TARGETS:-"pingora-bare portcullis"}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
PORTCULLIS=${PORTCULLIS:-$TARGET_DIR/release/portcullis}
BARE=${BARE:-$TARGET_DIR/release/examples/bare_proxy}
OUT=${OUT:-$ROOT/bench/results}
FREQ=${FREQ:-999}
PY=${PYTHON:-python3}
BENCH_USER=bench
BENCH_PASS=bench-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
T_START=$(date +%s)
WORK=$(mktemp -d /tmp/portcullis-profile.XXXXXX)

mkdir -p "$OUT"
declare -A PID PORT BASE
REG_PID=""
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
# shellcheck source=bench/targets.sh
source "$ROOT/bench/targets.sh"

cleanup() {
  local rc=$? p
  set +e
  for p in "${PID[@]}" $REG_PID; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  if [[ ${KEEP_WORK:-0} == 1 ]]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for c in perf curl docker-registry htpasswd openssl; do command -v $c >/dev/null || die "$c missing"; done
make_certs
make_htpasswd
REG_RELATIVE=1 start_registry
# shellcheck disable=SC2034 # (PORT is read by bench/targets.sh)
PORT[registry]=${REG##*:}; BASE[registry]=$REG
head -c $((BLOB_MIB * 1024 * 1024)) /dev/urandom >"$WORK/blob.bin"
DIGEST=sha256:$(sha256sum "$WORK/blob.bin" | cut -d' ' -f1)
push_blob bench "$WORK/blob.bin" "$DIGEST"
for t in $TARGETS; do
  case $t in
    pingora-bare) start_bare ;;
    portcullis) start_portcullis portcullis ;;
    *) die "unknown target $t" ;;
  esac
done

# profile TARGET MODE(get|put|putc) PROTO(1.1|2); putc: a chunked upload
# from a pipe (no Content-Length, 64 KiB chunks), as the Docker engine
# streams a layer it compresses while it pushes
profile() {
  local t=$1 mode=$2 proto=$3 url h=$WORK/h.txt code auth=()
  local args=(--http"$proto")
  [[ $t == pingora-bare ]] || auth=(-u "$BENCH_USER:$BENCH_PASS")
  if [[ $mode == put* ]]; then
    code=$(curl -sk --http1.1 "${auth[@]}" -X POST -D "$h" -o /dev/null -w '%{http_code}' \
      -H 'Content-Length: 0' "${BASE[$t]}/v2/bench/p-$proto/blobs/uploads/")
    [[ $code == 202 ]] || die "$t POST -> $code"
    url=${BASE[$t]}$(grep -i '^location:' "$h" | tail -1 | cut -d' ' -f2- | tr -d '\r')
    [[ $url == *\?* ]] && url="$url&digest=$DIGEST" || url="$url?digest=$DIGEST"
    args+=(-X PUT -H 'Content-Type: application/octet-stream' -H 'Expect:' -o /dev/null)
    if [[ $mode == putc ]]; then args+=(-T - -H 'Transfer-Encoding: chunked'); else args+=(-T "$WORK/blob.bin"); fi
  else
    url=${BASE[$t]}/v2/bench/blobs/$DIGEST
    args+=(-o /dev/null)
  fi
  local data=$WORK/perf-$t-$mode-$proto.data
  perf record -F "$FREQ" -o "$data" -p "${PID[$t]}" >/dev/null 2>&1 &
  local perf_pid=$!
  sleep 0.5
  local c0 c1; c0=$(cpu_ticks "${PID[$t]}")
  code=$(curl -sk "${auth[@]}" "${args[@]}" -w '%{http_code}' --max-time 300 "$url" <"$WORK/blob.bin")
  c1=$(cpu_ticks "${PID[$t]}")
  calc "($c1 - $c0) / $(getconf CLK_TCK) * 1024 / $BLOB_MIB" >"$WORK/cpu-$t-$mode-h$proto.txt"
  kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true
  [[ $code == 200 || $code == 201 ]] || die "$t $mode $proto -> $code"
  perf report -i "$data" --no-children --sort dso,symbol --stdio --percent-limit 0.01 2>/dev/null \
    | grep -E '^ +[0-9.]+%' >"$WORK/report-$t-$mode-h$proto.txt" || true
  head -40 "$WORK/report-$t-$mode-h$proto.txt" >"$OUT/profile-$t-$mode-h$proto.txt"
  log "$t $mode h$proto profiled"
}

for t in $TARGETS; do
  for m in "get 1.1" "get 2" "put 1.1" "put 2" "putc 1.1"; do
    # shellcheck disable=SC2086
    profile "$t" $m
  done
done

"$PY" - "$WORK" "$TARGETS" "$BLOB_MIB" "$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo none)" <<'PY' | tee "$OUT/profile-summary.md"
import glob, os, re, sys
work, targets, mib, rev = sys.argv[1], sys.argv[2].split(), sys.argv[3], sys.argv[4]
# (group, test on "dso symbol"), first match wins
groups = [
    ("TLS crypto (AES-GCM, GHASH)", r"aes|gcm|ghash|gfmul|chacha|poly1305|aws_lc|ring_core|CRYPTO_"),
    ("memcpy / memmove", r"memcpy|memmove|memset"),
    ("kernel (TCP, copies to and from sockets)", r"\[kernel|\[k\]"),
    ("HTTP/2 framing (h2 crate)", r"\bh2::"),
    ("rustls record layer", r"rustls::"),
    ("Pingora", r"pingora"),
    ("tokio", r"tokio::|mio::"),
    ("allocator", r"jemalloc|_rjem_|\bje_|malloc|free|sdallocx|realloc"),
    ("portcullis", r"portcullis::"),
]
ops = [("get", "1.1"), ("get", "2"), ("put", "1.1"), ("put", "2"), ("putc", "1.1")]
share = {}
for t in targets:
    for mode, proto in ops:
        f = os.path.join(work, f"report-{t}-{mode}-h{proto}.txt")
        acc = {g: 0.0 for g, _ in groups}; acc["other"] = 0.0
        for line in open(f):
            m = re.match(r"\s*([0-9.]+)%\s+(.*)$", line)
            if not m: continue
            pct, rest = float(m.group(1)), m.group(2)
            for g, pat in groups:
                if re.search(pat, rest):
                    acc[g] += pct; break
            else:
                acc["other"] += pct
        share[(t, mode, proto)] = acc
print(f"perf record -F (cpu-clock) of each proxy while curl moves one {mib} MiB blob, at {rev}. "
      "Share of the proxy's samples, by group (self time):\n")
cols = [(t, m, p) for t in targets for m, p in ops]
print("| group | " + " | ".join(f"{t} {m.upper()} h{p}" for t, m, p in cols) + " |")
print("|---|" + "---:|" * len(cols))
print("| proxy CPU s/GiB (all of it) | " + " | ".join(open(os.path.join(work, f"cpu-{t}-{m}-h{p}.txt")).read().strip() for t, m, p in cols) + " |")
for g in [g for g, _ in groups] + ["other"]:
    print(f"| {g} | " + " | ".join(f"{share[c][g]:.0f} %" for c in cols) + " |")
print("\nTop symbols of each: bench/results/profile-TARGET-OP.txt.")
PY
log "done in $(( $(date +%s) - T_START )) s"
