#!/usr/bin/env bash
# Side-by-side benchmark: registry direct vs nginx (docs recipe, no-auth, tuned)
# vs portcullis, all on loopback, interleaved over several rounds.
#
#   bash bench/run.sh                 # full run (about 8 min on 2 cores)
#   QUICK=1 bash bench/run.sh         # smoke test (1 round, short loads)
#   TARGETS="registry nginx" bash bench/run.sh
#
# Environment knobs (defaults in brackets):
#   ROUNDS [5]  WRK_DURATION [10s]  WRK_CONNS [32]  WRK_THREADS [2]
#   SEQ_DOWNLOADS [8]  PAR_DOWNLOADS [4]  RSS_DOWNLOADS [8]  BLOB_MIB [64]
#   TARGETS ["registry nginx nginx-noauth nginx-tuned pingora-bare portcullis"]
#   PORTCULLIS [target/release/portcullis]   OUT [bench/results]
#   BARE [target/release/examples/bare_proxy]: pingora-bare, Pingora + rustls
#        with no filters at all (examples/bare_proxy.rs), the framework's floor
#   KEEP_WORK=1 keeps the temp dir for inspection; HOLD=1 starts everything,
#   writes $WORK/endpoints.env and waits (for poking by hand) instead of measuring.
#
# Output: $OUT/latest.csv (target,round,metric,value), $OUT/latest-meta.json,
# then bench/report.py writes $OUT/summary.md and $OUT/chart.png.
# Everything listens on 127.0.0.1 only; nothing leaves the machine.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
  ROUNDS=${ROUNDS:-1}; WRK_DURATION=${WRK_DURATION:-3s}
  SEQ_DOWNLOADS=${SEQ_DOWNLOADS:-2}; PAR_DOWNLOADS=${PAR_DOWNLOADS:-2}
  RSS_DOWNLOADS=${RSS_DOWNLOADS:-4}
fi
ROUNDS=${ROUNDS:-5}
WRK_DURATION=${WRK_DURATION:-10s}
WRK_CONNS=${WRK_CONNS:-32}
WRK_THREADS=${WRK_THREADS:-2}
SEQ_DOWNLOADS=${SEQ_DOWNLOADS:-8}
PAR_DOWNLOADS=${PAR_DOWNLOADS:-4}
RSS_DOWNLOADS=${RSS_DOWNLOADS:-8}
BLOB_MIB=${BLOB_MIB:-64}
CHUNKS=4
TARGETS=${TARGETS:-"registry nginx nginx-noauth nginx-tuned pingora-bare portcullis"}
PORTCULLIS=${PORTCULLIS:-$ROOT/target/release/portcullis}
BARE=${BARE:-$ROOT/target/release/examples/bare_proxy}
OUT=${OUT:-$ROOT/bench/results}
PY=${PYTHON:-python3}

BENCH_USER=bench
BENCH_PASS=bench-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
REPO=bench
MANIFEST_TYPE=application/vnd.oci.image.manifest.v1+json
BLOB_BYTES=$((BLOB_MIB * 1024 * 1024))
CLK_TCK=$(getconf CLK_TCK)
T_START=$(date +%s)

WORK=$(mktemp -d /tmp/portcullis-bench.XXXXXX)
chmod 755 "$WORK"          # nginx workers (user nobody) read the htpasswd file
mkdir -p "$OUT"
[[ ${HOLD:-0} == 1 ]] || rm -f "$OUT"/last-*.log   # HOLD=1 measures nothing: keep the last results
CSV_TMP=$WORK/results.csv
echo "target,round,metric,value" >"$CSV_TMP"

declare -A PID PORT BASE
REG_PID=""


# log die calc now rec free_port cpu_ticks wait_http rotate (start_registry
# is this script's own, below)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
# make_certs make_htpasswd nginx_conf start_nginx start_portcullis start_bare
# shellcheck source=bench/targets.sh disable=SC1091
source "$ROOT/bench/targets.sh"

cleanup() {
  local rc=$?
  set +e
  for t in "${!PID[@]}"; do
    [[ -n ${PID[$t]:-} ]] && kill "${PID[$t]}" 2>/dev/null
  done
  [[ -n $REG_PID ]] && kill "$REG_PID" 2>/dev/null
  sleep 0.5
  for t in "${!PID[@]}"; do
    [[ -n ${PID[$t]:-} ]] && kill -9 "${PID[$t]}" 2>/dev/null
  done
  [[ -n $REG_PID ]] && kill -9 "$REG_PID" 2>/dev/null
  wait 2>/dev/null
  if [[ ${KEEP_WORK:-0} == 1 ]]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM


# ---------------------------------------------------------------- process stats
# pids of a target's proxy: nginx master + all its children; others: the pid.
proxy_pids() {
  local t=$1 p=${PID[$1]:-}
  [[ -z $p ]] && return 0
  echo "$p"
  if [[ $t == nginx* ]]; then pgrep -P "$p" || true; fi
}
proxy_ticks() { local t=$1; [[ $t == registry ]] && { echo 0; return; }; cpu_ticks $(proxy_pids "$t"); }
reg_ticks()   { cpu_ticks "$REG_PID"; }
ticks_s()     { calc "$1 / $CLK_TCK"; }
# sum of VmRSS and of Pss (kB) over pids
rss_kb() { local p; for p in "$@"; do cat "/proc/$p/status" 2>/dev/null || true; done | awk '/^VmRSS:/{s+=$2} END{print s+0}'; }
pss_kb() { local p; for p in "$@"; do cat "/proc/$p/smaps_rollup" 2>/dev/null || true; done | awk '/^Pss:/{s+=$2} END{print s+0}'; }

# ---------------------------------------------------------------- fixtures
make_fixtures() {
  log "fixtures: cert, htpasswd, ${BLOB_MIB} MiB random blob"
  make_certs      # bench/targets.sh: CA + cert.pem/key.pem
  make_htpasswd   # bench/targets.sh: htpasswd, AUTH_B64
  head -c "$BLOB_BYTES" /dev/urandom >"$WORK/blob.bin"
  BLOB_DIGEST=sha256:$(sha256sum "$WORK/blob.bin" | cut -d' ' -f1)
  printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["%s"]},"config":{}}' \
    "$BLOB_DIGEST" >"$WORK/config.json"
  CONFIG_DIGEST=sha256:$(sha256sum "$WORK/config.json" | cut -d' ' -f1)
  CONFIG_SIZE=$(stat -c %s "$WORK/config.json")
  printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%d}]}' \
    "$MANIFEST_TYPE" "$CONFIG_DIGEST" "$CONFIG_SIZE" "$BLOB_DIGEST" "$BLOB_BYTES" >"$WORK/manifest.json"
}

# ---------------------------------------------------------------- registry
start_registry() {
  PORT[registry]=$(free_port)
  BASE[registry]=http://127.0.0.1:${PORT[registry]}
  mkdir -p "$WORK/registry-data"
  cat >"$WORK/registry.yml" <<EOF
version: 0.1
log:
  level: error
  formatter: text
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $WORK/registry-data
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:${PORT[registry]}
  secret: portcullis-bench-secret
  headers:
    X-Content-Type-Options: [nosniff]
EOF
  docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
  REG_PID=$!
  wait_http "${BASE[registry]}/v2/" "" 200 20 || { cat "$WORK/registry.log" >&2; die "registry did not start"; }
  log "registry pid $REG_PID on ${BASE[registry]}"
}


# ---------------------------------------------------------------- blob push helpers
# abs_location BASE LOCATION -> absolute URL, refusing Locations that leave BASE
abs_location() {
  local base=$1 loc=$2
  loc=${loc%$'\r'}
  if [[ $loc == /* ]]; then echo "$base$loc"
  elif [[ $loc == "$base"/* ]]; then echo "$loc"
  else log "BAD Location '$loc' (expected under $base)"; return 1
  fi
}
hdr() { grep -i "^$1:" "$2" | tail -1 | cut -d' ' -f2- | tr -d '\r'; }

# start_upload TARGET REPO -> prints absolute upload URL
start_upload() {
  local t=$1 repo=$2 h=$WORK/h.$$.$RANDOM code
  code=$(curl -sk --http1.1 -u "$BENCH_USER:$BENCH_PASS" -X POST -D "$h" -o /dev/null -w '%{http_code}' \
    -H 'Content-Length: 0' --max-time 30 "${BASE[$t]}/v2/$repo/blobs/uploads/")
  [[ $code == 202 ]] || { log "$t POST upload -> $code"; rm -f "$h"; return 1; }
  abs_location "${BASE[$t]}" "$(hdr location "$h")"; local rc=$?; rm -f "$h"; return $rc
}
# put_blob TARGET REPO FILE DIGEST -> monolithic upload
put_blob() {
  local t=$1 repo=$2 file=$3 digest=$4 url code h=$WORK/h.$$.$RANDOM
  url=$(start_upload "$t" "$repo") || return 1
  [[ $url == *\?* ]] && url="$url&digest=$digest" || url="$url?digest=$digest"
  code=$(curl -sk --http1.1 -u "$BENCH_USER:$BENCH_PASS" -X PUT -T "$file" -D "$h" -o /dev/null -w '%{http_code}' \
    -H 'Content-Type: application/octet-stream' -H 'Expect:' --max-time 300 "$url")
  [[ $code == 201 ]] || { log "$t PUT blob -> $code"; rm -f "$h"; return 1; }
  [[ $(hdr docker-content-digest "$h") == "$digest" ]] || { log "$t PUT blob: digest mismatch"; rm -f "$h"; return 1; }
  rm -f "$h"
}
# patch_blob TARGET REPO DIGEST CHUNK_FILES... -> chunked upload then PUT ?digest=
patch_blob() {
  local t=$1 repo=$2 digest=$3; shift 3
  local url code start=0 size end h=$WORK/h.$$.$RANDOM
  url=$(start_upload "$t" "$repo") || return 1
  for c in "$@"; do
    size=$(stat -c %s "$c"); end=$((start + size - 1))
    code=$(curl -sk --http1.1 -u "$BENCH_USER:$BENCH_PASS" -X PATCH -T "$c" -D "$h" -o /dev/null -w '%{http_code}' \
      -H 'Content-Type: application/octet-stream' -H "Content-Range: $start-$end" -H 'Expect:' \
      --max-time 300 "$url")
    [[ $code == 202 ]] || { log "$t PATCH $start-$end -> $code"; rm -f "$h"; return 1; }
    url=$(abs_location "${BASE[$t]}" "$(hdr location "$h")") || { rm -f "$h"; return 1; }
    start=$((end + 1))
  done
  [[ $url == *\?* ]] && url="$url&digest=$digest" || url="$url?digest=$digest"
  code=$(curl -sk --http1.1 -u "$BENCH_USER:$BENCH_PASS" -X PUT -D "$h" -o /dev/null -w '%{http_code}' \
    -H 'Content-Length: 0' --max-time 60 "$url")
  [[ $code == 201 ]] || { log "$t PUT (finish chunked) -> $code"; rm -f "$h"; return 1; }
  [[ $(hdr docker-content-digest "$h") == "$digest" ]] || { log "$t chunked: digest mismatch"; rm -f "$h"; return 1; }
  rm -f "$h"
}

seed() {
  log "seeding $REPO:latest (config + ${BLOB_MIB} MiB layer + OCI manifest)"
  put_blob registry "$REPO" "$WORK/blob.bin" "$BLOB_DIGEST" || die "seed blob"
  put_blob registry "$REPO" "$WORK/config.json" "$CONFIG_DIGEST" || die "seed config"
  local code
  code=$(curl -s -X PUT -H "Content-Type: $MANIFEST_TYPE" --data-binary @"$WORK/manifest.json" \
    -o /dev/null -w '%{http_code}' "${BASE[registry]}/v2/$REPO/manifests/latest")
  [[ $code == 201 ]] || die "seed manifest -> $code"
  MANIFEST_SIZE=$(stat -c %s "$WORK/manifest.json")
}

# ---------------------------------------------------------------- loads
parse_dur_ms() { # 1.23ms / 456.00us / 1.20s -> ms
  awk -v v="$1" 'BEGIN{ n=v+0; if (v ~ /us$/) n/=1000; else if (v ~ /ms$/) n=n; else if (v ~ /m$/) n*=60000; else if (v ~ /s$/) n*=1000; printf "%.4g", n }'
}

load_manifest() {
  local t=$1 r=$2 out=$WORK/wrk-$1-$2.txt c0 c1 g0 g1
  c0=$(proxy_ticks "$t"); g0=$(reg_ticks)
  # GET, never HEAD: Debian's wrk 4.1 hangs on HEAD responses with Content-Length (wg/wrk#198)
  timeout 120 wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"$WRK_DURATION" --timeout 10s --latency \
    -H "Authorization: Basic $AUTH_B64" -H "Accept: $MANIFEST_TYPE" \
    "${BASE[$t]}/v2/$REPO/manifests/latest" >"$out" 2>&1 || log "$t: wrk exited non-zero"
  c1=$(proxy_ticks "$t"); g1=$(reg_ticks)
  local reqs rps non2xx sockerr p50 p99
  reqs=$(awk '/requests in/ {print $1; exit}' "$out")
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
  non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$out"); non2xx=${non2xx:-0}
  sockerr=$(awk -F'[ ,]+' '/Socket errors:/ {print $4+$6+$8+$10}' "$out"); sockerr=${sockerr:-0}
  p50=$(awk '$1=="50%" {print $2}' "$out"); p99=$(awk '$1=="99%" {print $2}' "$out")
  if [[ -z $reqs || $reqs == 0 ]]; then log "$t: wrk produced no requests"; cat "$out" >&2; return 0; fi
  rec "$t" "$r" manifest_rps "$rps"
  rec "$t" "$r" manifest_requests "$reqs"
  rec "$t" "$r" manifest_errors $((non2xx + sockerr))
  if [[ -n $p50 ]]; then rec "$t" "$r" manifest_p50_ms "$(parse_dur_ms "$p50")"; fi
  if [[ -n $p99 ]]; then rec "$t" "$r" manifest_p99_ms "$(parse_dur_ms "$p99")"; fi
  if [[ $t != registry ]]; then rec "$t" "$r" manifest_proxy_cpu_us_per_req "$(calc "($c1 - $c0) / $CLK_TCK * 1e6 / $reqs")"; fi
  rec "$t" "$r" manifest_registry_cpu_us_per_req "$(calc "($g1 - $g0) / $CLK_TCK * 1e6 / $reqs")"
  log "$t r$r manifest: $rps req/s, proxy $(ticks_s $((c1 - c0)))s cpu, registry $(ticks_s $((g1 - g0)))s cpu, errors $((non2xx + sockerr)), p99 $p99"
}

# one_download TARGET OUTFILE -> prints "code size"
one_download() {
  curl -sk --http1.1 -u "$BENCH_USER:$BENCH_PASS" --max-time 300 -o "$2" \
    -w '%{http_code} %{size_download}\n' "${BASE[$1]}/v2/$REPO/blobs/$BLOB_DIGEST" || echo "000 0"
}

# download_batch TARGET N PARALLEL(0/1): sets DL_SECS (wall) and DL_BAD (failed responses)
download_batch() {
  local t=$1 n=$2 par=$3 i res=$WORK/dl-res.$1 t0 t1 pids=()
  : >"$res"
  t0=$(now)
  if [[ $par == 1 ]]; then
    for ((i = 0; i < n; i++)); do one_download "$t" /dev/null >>"$res" & pids+=($!); done
    for i in "${pids[@]}"; do wait "$i" || true; done
  else
    for ((i = 0; i < n; i++)); do one_download "$t" /dev/null >>"$res"; done
  fi
  t1=$(now)
  DL_BAD=$(awk -v want="$BLOB_BYTES" '$1!=200 || $2!=want' "$res" | wc -l)
  if [[ $DL_BAD != 0 ]]; then log "$t: $DL_BAD of $n downloads failed: $(sort "$res" | uniq -c | tr '\n' ';')"; fi
  DL_SECS=$(calc "$t1 - $t0")
}

load_download() {
  local t=$1 r=$2 c0 c1 g0 g1 secs bytes
  for mode in seq par; do
    local n=$SEQ_DOWNLOADS par=0
    [[ $mode == par ]] && { n=$PAR_DOWNLOADS; par=1; }
    c0=$(proxy_ticks "$t"); g0=$(reg_ticks)
    download_batch "$t" "$n" "$par"; secs=$DL_SECS
    c1=$(proxy_ticks "$t"); g1=$(reg_ticks)
    bytes=$((n * BLOB_BYTES))
    rec "$t" "$r" "download_${mode}_mib_s" "$(calc "$bytes / 1048576 / $secs")"
    rec "$t" "$r" "download_${mode}_errors" "$DL_BAD"
    if [[ $t != registry ]]; then rec "$t" "$r" "download_${mode}_proxy_cpu_s_per_gib" "$(calc "($c1 - $c0) / $CLK_TCK / ($bytes / 1073741824)")"; fi
    rec "$t" "$r" "download_${mode}_registry_cpu_s_per_gib" "$(calc "($g1 - $g0) / $CLK_TCK / ($bytes / 1073741824)")"
    log "$t r$r download $mode x$n: $(calc "$bytes / 1048576 / $secs") MiB/s, proxy cpu $(ticks_s $((c1 - c0)))s"
  done
}

verify_download() {
  local t=$1 f=$WORK/verify-$1.bin res
  res=$(one_download "$t" "$f")
  local sum; sum=sha256:$(sha256sum "$f" | cut -d' ' -f1)
  rm -f "$f"
  if [[ $sum == "$BLOB_DIGEST" && $res == "200 $BLOB_BYTES" ]]; then
    rec "$t" 0 download_sha256_ok 1
  else
    rec "$t" 0 download_sha256_ok 0; log "$t: DOWNLOAD CORRUPT ($res, $sum)"
  fi
}

# fresh content per upload: the shared random blob with a unique 64-byte prefix
fresh_blob() {
  local f=$WORK/up.bin
  cp "$WORK/blob.bin" "$f"
  printf '%-64s' "portcullis-bench $1 $(date +%s%N) $RANDOM" | dd of="$f" bs=64 count=1 conv=notrunc status=none
  UP_DIGEST=sha256:$(sha256sum "$f" | cut -d' ' -f1)
  UP_FILE=$f
}

load_upload() {
  local t=$1 r=$2 c0 c1 g0 g1 t0 t1 ok
  # monolithic: POST, then PUT ?digest= with the whole body
  fresh_blob "$t-$r-mono"
  c0=$(proxy_ticks "$t"); g0=$(reg_ticks); t0=$(now)
  if put_blob "$t" "up-$t-$r" "$UP_FILE" "$UP_DIGEST"; then ok=1; else ok=0; fi
  t1=$(now); c1=$(proxy_ticks "$t"); g1=$(reg_ticks)
  rec "$t" "$r" upload_mono_errors $((1 - ok))
  if [[ $ok == 1 ]]; then
    rec "$t" "$r" upload_mono_mib_s "$(calc "$BLOB_BYTES / 1048576 / ($t1 - $t0)")"
    if [[ $t != registry ]]; then rec "$t" "$r" upload_mono_proxy_cpu_s_per_gib "$(calc "($c1 - $c0) / $CLK_TCK / ($BLOB_BYTES / 1073741824)")"; fi
    log "$t r$r upload mono: $(calc "$BLOB_BYTES / 1048576 / ($t1 - $t0)") MiB/s"
  fi
  # chunked: POST, CHUNKS x PATCH with Content-Range, PUT ?digest=
  fresh_blob "$t-$r-chunk"
  rm -f "$WORK"/chunk.*
  split -b $((BLOB_BYTES / CHUNKS)) -d "$UP_FILE" "$WORK/chunk."
  c0=$(proxy_ticks "$t"); g0=$(reg_ticks); t0=$(now)
  if patch_blob "$t" "up-$t-$r" "$UP_DIGEST" "$WORK"/chunk.*; then ok=1; else ok=0; fi
  t1=$(now); c1=$(proxy_ticks "$t"); g1=$(reg_ticks)
  rec "$t" "$r" upload_chunked_errors $((1 - ok))
  if [[ $ok == 1 ]]; then
    rec "$t" "$r" upload_chunked_mib_s "$(calc "$BLOB_BYTES / 1048576 / ($t1 - $t0)")"
    if [[ $t != registry ]]; then rec "$t" "$r" upload_chunked_proxy_cpu_s_per_gib "$(calc "($c1 - $c0) / $CLK_TCK / ($BLOB_BYTES / 1073741824)")"; fi
    log "$t r$r upload ${CHUNKS}x PATCH: $(calc "$BLOB_BYTES / 1048576 / ($t1 - $t0)") MiB/s"
  fi
  rm -f "$WORK"/chunk.* "$UP_FILE"
}

# peak memory while RSS_DOWNLOADS downloads run in parallel (sampled every 100 ms)
load_rss() {
  local t=$1 r=$2 stop=$WORK/rss-stop pids
  [[ $t == registry ]] && pids=$REG_PID || pids=$(proxy_pids "$t" | tr '\n' ' ')
  rm -f "$stop"
  local idle_rss; idle_rss=$(rss_kb $pids)
  (
    max_rss=0 max_pss=0
    while [[ ! -e $stop ]]; do
      cur_pids=$pids
      [[ $t == nginx* ]] && cur_pids="${PID[$t]} $(pgrep -P "${PID[$t]}" | tr '\n' ' ')"
      a=$(rss_kb $cur_pids); b=$(pss_kb $cur_pids)
      ((a > max_rss)) && max_rss=$a
      ((b > max_pss)) && max_pss=$b
      sleep 0.1
    done
    echo "$max_rss $max_pss" >"$WORK/rss-result"
  ) &
  local sampler=$!
  sleep 0.2
  download_batch "$t" "$RSS_DOWNLOADS" 1; local secs=$DL_SECS
  touch "$stop"; wait "$sampler" || true
  local max_rss max_pss; read -r max_rss max_pss <"$WORK/rss-result"
  rec "$t" "$r" rss_idle_mib "$(calc "$idle_rss / 1024")"
  rec "$t" "$r" rss_peak_mib "$(calc "$max_rss / 1024")"
  rec "$t" "$r" pss_peak_mib "$(calc "$max_pss / 1024")"
  rec "$t" "$r" download_par8_mib_s "$(calc "$RSS_DOWNLOADS * $BLOB_BYTES / 1048576 / $secs")"
  rec "$t" "$r" download_par8_errors "$DL_BAD"
  log "$t r$r ${RSS_DOWNLOADS} parallel downloads: RSS peak $(calc "$max_rss / 1024") MiB (idle $(calc "$idle_rss / 1024")), PSS peak $(calc "$max_pss / 1024") MiB"
}

# Behaviour probe (not a ratio): an upload with "Expect: 100-continue", as curl
# sends by default; a proxy that never answers 100 makes curl wait 1 s.
probe_expect() {
  local t=$1 url t0 t1 code f=$WORK/probe.bin
  head -c $((4 * 1024 * 1024)) /dev/urandom >"$f"
  local d; d=sha256:$(sha256sum "$f" | cut -d' ' -f1)
  url=$(start_upload "$t" "probe-$t") || return 0
  [[ $url == *\?* ]] && url="$url&digest=$d" || url="$url?digest=$d"
  t0=$(now)
  code=$(curl -sk --http1.1 -u "$BENCH_USER:$BENCH_PASS" -X PUT -T "$f" -o /dev/null -w '%{http_code}' \
    -H 'Expect: 100-continue' --expect100-timeout 3 --max-time 60 "$url" || true)
  t1=$(now)
  rec "$t" 0 probe_expect100_put_s "$(calc "$t1 - $t0")"
  rec "$t" 0 probe_expect100_put_ok "$([[ $code == 201 ]] && echo 1 || echo 0)"
  rm -f "$f"
}

# Behaviour probe: one download letting curl negotiate ALPN (h2 if offered)
probe_alpn_download() {
  local t=$1 t0 t1 res
  t0=$(now)
  res=$(curl -sk -u "$BENCH_USER:$BENCH_PASS" --max-time 300 -o /dev/null \
    -w '%{http_code} %{size_download} %{http_version}\n' "${BASE[$t]}/v2/$REPO/blobs/$BLOB_DIGEST" || echo "000 0 0")
  t1=$(now)
  set -- $res
  rec "$t" 0 probe_alpn_http_version "$3"
  if [[ $1 == 200 && $2 == "$BLOB_BYTES" ]]; then
    rec "$t" 0 probe_alpn_download_mib_s "$(calc "$BLOB_BYTES / 1048576 / ($t1 - $t0)")"
  else
    log "$t: ALPN download failed ($res)"; rec "$t" 0 probe_alpn_download_ok 0
  fi
}

tls_info() { # "protocol cipher" negotiated by OpenSSL's client
  openssl s_client -connect "127.0.0.1:${PORT[$1]}" -servername 127.0.0.1 </dev/null 2>/dev/null \
    | awk '/^New, /{p=$2; c=$NF} END{print p" "c}'
}

# ---------------------------------------------------------------- main
command -v wrk >/dev/null || die "wrk missing (apt-get install wrk)"
command -v nginx >/dev/null || die "nginx missing"
command -v docker-registry >/dev/null || die "docker-registry missing"
command -v htpasswd >/dev/null || die "htpasswd missing (apache2-utils)"

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
if awk -v l="${LOAD_START%% *}" -v n="$(nproc)" 'BEGIN{exit !(l > n / 2)}'; then
  log "WARNING: load average is $LOAD_START before starting: results will be noisy"
fi
make_fixtures
start_registry
seed

ACTIVE=()
for t in $TARGETS; do
  case $t in
    registry)     ACTIVE+=(registry) ;;
    nginx)        start_nginx nginx recipe && ACTIVE+=(nginx) ;;
    nginx-noauth) start_nginx nginx-noauth noauth && ACTIVE+=(nginx-noauth) ;;
    nginx-tuned)  start_nginx nginx-tuned tuned && ACTIVE+=(nginx-tuned) ;;
    portcullis)   start_portcullis portcullis && ACTIVE+=(portcullis) || true ;;
    pingora-bare) start_bare && ACTIVE+=(pingora-bare) || true ;;
    *) die "unknown target $t" ;;
  esac
done
log "targets: ${ACTIVE[*]}"

# sanity: every target serves the manifest with the right bytes
for t in "${ACTIVE[@]}"; do
  got=$(curl -sk --http1.1 -u "$BENCH_USER:$BENCH_PASS" -H "Accept: $MANIFEST_TYPE" "${BASE[$t]}/v2/$REPO/manifests/latest" | sha256sum | cut -d' ' -f1)
  [[ $got == $(sha256sum <"$WORK/manifest.json" | cut -d' ' -f1) ]] || die "$t serves a different manifest"
  verify_download "$t"
  if [[ $t != registry && $t != pingora-bare ]]; then probe_expect "$t"; probe_alpn_download "$t"; fi
done

# HOLD=1: leave the targets running for manual poking (Ctrl-C / SIGTERM ends it)
if [[ ${HOLD:-0} == 1 ]]; then
  {
    echo "USERPASS=$BENCH_USER:$BENCH_PASS"; echo "AUTH_B64=$AUTH_B64"; echo "BLOB_DIGEST=$BLOB_DIGEST"
    echo "REG_PID=$REG_PID"
    for t in "${ACTIVE[@]}"; do echo "BASE_${t//-/_}=${BASE[$t]}"; echo "PID_${t//-/_}=${PID[$t]:-$REG_PID}"; done
  } >"$WORK/endpoints.env"
  log "HOLD=1: targets up, see $WORK/endpoints.env"
  while sleep 1; do :; done
fi

# the loads without auth/TLS variants that don't matter for them
is_in() { local x=$1; shift; for y in "$@"; do [[ $x == "$y" ]] && return 0; done; return 1; }
BULK=()   # nginx-noauth is only needed for the CPU-per-request comparison
for t in "${ACTIVE[@]}"; do [[ $t != nginx-noauth ]] && BULK+=("$t"); done
UPLOADS=() # pingora-bare does not rewrite the registry's absolute upload Locations
for t in "${BULK[@]}"; do [[ $t != pingora-bare ]] && UPLOADS+=("$t"); done

for ((r = 1; r <= ROUNDS; r++)); do
  log "===== round $r / $ROUNDS"
  for t in $(rotate "$r" "${ACTIVE[@]}"); do load_manifest "$t" "$r"; sleep 1; done
  for t in $(rotate "$r" "${BULK[@]}");   do load_download "$t" "$r"; done
  for t in $(rotate "$r" "${UPLOADS[@]}"); do load_upload "$t" "$r"; done
  for t in $(rotate "$r" "${BULK[@]}");   do load_rss "$t" "$r"; done
done

# lifetime peak of the single-process targets
for t in "${ACTIVE[@]}"; do
  case $t in
    portcullis|pingora-bare) rec "$t" 0 vmhwm_lifetime_mib "$(calc "$(awk '/^VmHWM:/{print $2}' /proc/${PID[$t]}/status) / 1024")" ;;
    registry)   rec "$t" 0 vmhwm_lifetime_mib "$(calc "$(awk '/^VmHWM:/{print $2}' /proc/$REG_PID/status) / 1024")" ;;
  esac
done

# errors in the proxies' own logs (nginx's "buffered to a temporary file"
# warnings are counted separately: they show the recipe spooling bodies to disk)
for t in "${ACTIVE[@]}"; do
  case $t in
    portcullis) f=$WORK/portcullis/out.log; pat='error|panic|warn' ;;
    pingora-bare) f=$WORK/pingora-bare/out.log; pat='panic' ;;
    nginx*)     f=$WORK/$t/logs/error.log;  pat='\[(error|crit|alert|emerg)\]' ;;
    registry)   f=$WORK/registry.log;       pat='level=(error|fatal|panic)|panic' ;;
  esac
  n=$(grep -ciE "$pat" "$f" 2>/dev/null || true)
  rec "$t" 0 log_error_lines "${n:-0}"
  if [[ $t == nginx* ]]; then
    rec "$t" 0 nginx_temp_file_spills "$(grep -c 'buffered to a temporary file' "$f" 2>/dev/null || true)"
  fi
  if [[ $t == portcullis ]]; then
    # the two kinds of noise seen so far: clients (wrk) closing idle keep-alive
    # connections without close_notify, and rustls refusing an IP address as SNI
    rec "$t" 0 log_client_eof_lines "$(grep -c 'close_notify' "$f" 2>/dev/null || true)"
    rec "$t" 0 log_ip_sni_lines "$(grep -c 'Illegal SNI' "$f" 2>/dev/null || true)"
  fi
  if [[ ${n:-0} -gt 0 ]]; then
    log "$t: $n error lines in its log, last ones:"; grep -iE "$pat" "$f" | tail -n 5 >&2
    cp "$f" "$OUT/last-$t.log" 2>/dev/null || true
  fi
done

# ---------------------------------------------------------------- metadata + report
{
  echo "{"
  echo "  \"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\","
  echo "  \"duration_s\": $(( $(date +%s) - T_START )),"
  echo "  \"rounds\": $ROUNDS, \"wrk_args\": \"wrk -t$WRK_THREADS -c$WRK_CONNS -d$WRK_DURATION\","
  echo "  \"blob_mib\": $BLOB_MIB, \"seq_downloads\": $SEQ_DOWNLOADS, \"par_downloads\": $PAR_DOWNLOADS, \"rss_downloads\": $RSS_DOWNLOADS, \"chunks\": $CHUNKS,"
  echo "  \"manifest_bytes\": ${MANIFEST_SIZE:-0},"
  echo "  \"cpu\": \"$(lscpu | awk -F': *' '/^Model name/{print $2; exit}')\", \"nproc\": $(nproc),"
  echo "  \"kernel\": \"$(uname -r)\","
  echo "  \"loadavg_start\": \"$LOAD_START\", \"loadavg_end\": \"$(cut -d' ' -f1-3 /proc/loadavg)\","
  echo "  \"os\": \"$(. /etc/os-release; echo "$PRETTY_NAME")\","
  echo "  \"nginx\": \"$(nginx -v 2>&1 | sed 's/.*: //')\","
  echo "  \"registry\": \"$(docker-registry --version | awk '{print $NF}')\","
  echo "  \"wrk\": \"$(wrk --version 2>&1 | awk 'NR==1{print $2}')\","
  echo "  \"curl\": \"$(curl --version | awk 'NR==1{print $2}')\","
  echo "  \"openssl\": \"$(openssl version | awk '{print $2}')\","
  if [[ -n ${PID[portcullis]:-} ]]; then
    echo "  \"portcullis_binary\": \"$(sha256sum "$PORTCULLIS" | cut -c1-16) $(date -u -r "$PORTCULLIS" +%Y-%m-%dT%H:%M:%SZ)\","
    # the binary may be older or newer than HEAD: record both
    echo "  \"git_head_at_run\": \"$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo none)\","
  fi
  echo "  \"tls\": {"
  first=1
  for t in "${ACTIVE[@]}"; do
    [[ $t == registry ]] && continue
    [[ $first == 1 ]] || echo ","
    first=0; printf '    "%s": "%s"' "$t" "$(tls_info "$t")"
  done
  echo ""
  echo "  },"
  echo "  \"targets\": [$(printf '"%s",' "${ACTIVE[@]}" | sed 's/,$//')]"
  echo "}"
} >"$WORK/meta.json"

cp "$CSV_TMP" "$OUT/latest.csv"
cp "$WORK/meta.json" "$OUT/latest-meta.json"
log "results: $OUT/latest.csv"

if ! "$PY" -c 'import matplotlib' 2>/dev/null; then
  log "installing matplotlib for the chart (pip --user)"
  "$PY" -m pip install --quiet --user matplotlib >/dev/null 2>&1 \
    || "$PY" -m pip install --quiet --user --break-system-packages matplotlib >/dev/null 2>&1 \
    || log "WARNING: matplotlib unavailable; the chart will be skipped"
fi
"$PY" "$ROOT/bench/report.py" --csv "$OUT/latest.csv" --meta "$OUT/latest-meta.json" --out "$OUT" ${REPORT_ARGS:-}
log "done in $(( $(date +%s) - T_START )) s"
