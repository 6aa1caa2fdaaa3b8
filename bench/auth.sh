#!/usr/bin/env bash
# Auth modes and observability overhead of portcullis, on loopback:
#   basic  - Basic auth (warm credential cache), metrics off, access log off
#   token  - auth.mode = "token", wrk sends a Bearer token from /token
#   obs    - Basic auth with metrics on, access log on (stderr -> file), audit_file
# interleaved (basic token obs, rotated each round), wrk GET of the manifest,
# portcullis CPU from /proc/PID/stat. Optional LDAP part (LDAP=1, default when
# /usr/sbin/slapd exists): 64 MiB blob downloads of a logged-in LDAP user alone
# vs during a storm of ~20 failed LDAP logins/s. Soak part (PARTS=soak): the
# same binary with jemalloc and with the system malloc side by side, SOAK_RUNS
# alternating short wrk runs each, RSS after every run, then 8 parallel downloads.
#
#   bash bench/auth.sh                # about 5-6 min on 2 vCPUs
#   QUICK=1 bash bench/auth.sh        # smoke test
# Knobs: ROUNDS [5] WRK_DURATION [10s] WRK_CONNS [32] WRK_THREADS [2]
#        LDAP [1 if slapd found] LDAP_ROUNDS [5] LDAP_DOWNLOADS [16] STORM_RATE [20]
#        PARTS ["manifest ldap"]: which parts to run ("soak" too, on request)
#        SOAK_RUNS [24] SOAK_DURATION [3s]
#        PORTCULLIS_SYSTEM_MALLOC: for the soak, the binary built with
#          `cargo build --release --no-default-features --bin portcullis`
#        SOAK_LABEL, SOAK_OTHER_LABEL: the soak's names for PORTCULLIS and
#          PORTCULLIS_SYSTEM_MALLOC, when the soak compares other builds
#        PORTCULLIS [target/release/portcullis] OUT [bench/results] KEEP_WORK=1
#        NAME [auth]: results file names
# Output: $OUT/$NAME.csv (target,round,metric,value), $OUT/$NAME-summary.md
# (bench/auth_report.py). Everything listens on 127.0.0.1 only.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ ${QUICK:-0} == 1 ]]; then
  ROUNDS=${ROUNDS:-1}; WRK_DURATION=${WRK_DURATION:-3s}; LDAP_ROUNDS=${LDAP_ROUNDS:-1}; LDAP_DOWNLOADS=${LDAP_DOWNLOADS:-2}
fi
ROUNDS=${ROUNDS:-5}
WRK_DURATION=${WRK_DURATION:-10s}
WRK_CONNS=${WRK_CONNS:-32}
WRK_THREADS=${WRK_THREADS:-2}
LDAP_ROUNDS=${LDAP_ROUNDS:-5}
LDAP_DOWNLOADS=${LDAP_DOWNLOADS:-16}
STORM_RATE=${STORM_RATE:-20}
SOAK_RUNS=${SOAK_RUNS:-24}
SOAK_DURATION=${SOAK_DURATION:-3s}
NAME=${NAME:-auth}
[[ -x /usr/sbin/slapd ]] && LDAP=${LDAP:-1} || LDAP=${LDAP:-0}
BLOB_MIB=64
PORTCULLIS=${PORTCULLIS:-$ROOT/target/release/portcullis}
OUT=${OUT:-$ROOT/bench/results}
PY=${PYTHON:-python3}

BENCH_USER=bench
BENCH_PASS=bench-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
REPO=bench
MANIFEST_TYPE=application/vnd.oci.image.manifest.v1+json
BLOB_BYTES=$((BLOB_MIB * 1024 * 1024))
CLK_TCK=$(getconf CLK_TCK)
T_START=$(date +%s)

WORK=$(mktemp -d /tmp/portcullis-auth.XXXXXX)
mkdir -p "$OUT"
CSV_TMP=$WORK/results.csv
echo "target,round,metric,value" >"$CSV_TMP"

declare -A PID PORT BASE MPORT BIN
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
REG_PID="" SLAPD_PID="" STORM_PID=""

cleanup() {
  local rc=$? p
  set +e
  [[ -n $STORM_PID ]] && kill "$STORM_PID" 2>/dev/null
  for p in "${PID[@]}" $REG_PID $SLAPD_PID; do kill "$p" 2>/dev/null; done
  sleep 0.5
  for p in "${PID[@]}" $REG_PID $SLAPD_PID; do kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  if [[ ${KEEP_WORK:-0} == 1 ]]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- fixtures + registry (as bench/run.sh)
make_fixtures() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" -days 2 -subj "/CN=127.0.0.1" \
    -addext "subjectAltName=IP:127.0.0.1" 2>/dev/null
  chmod 600 "$WORK/key.pem"
  htpasswd -Bbn "$BENCH_USER" "$BENCH_PASS" | sed '/^$/d' >"$WORK/htpasswd"
  AUTH_B64=$(printf '%s:%s' "$BENCH_USER" "$BENCH_PASS" | base64 -w0)
  head -c "$BLOB_BYTES" /dev/urandom >"$WORK/blob.bin"
  BLOB_DIGEST=sha256:$(sha256sum "$WORK/blob.bin" | cut -d' ' -f1)
  printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["%s"]},"config":{}}' \
    "$BLOB_DIGEST" >"$WORK/config.json"
  CONFIG_DIGEST=sha256:$(sha256sum "$WORK/config.json" | cut -d' ' -f1)
  CONFIG_SIZE=$(stat -c %s "$WORK/config.json")
  printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%d}]}' \
    "$MANIFEST_TYPE" "$CONFIG_DIGEST" "$CONFIG_SIZE" "$BLOB_DIGEST" "$BLOB_BYTES" >"$WORK/manifest.json"
}

seed() {
  push_blob "$REPO" "$WORK/blob.bin" "$BLOB_DIGEST"
  push_blob "$REPO" "$WORK/config.json" "$CONFIG_DIGEST"
  local code
  code=$(curl -s -X PUT -H "Content-Type: $MANIFEST_TYPE" --data-binary @"$WORK/manifest.json" \
    -o /dev/null -w '%{http_code}' "$REG/v2/$REPO/manifests/latest")
  [[ $code == 201 ]] || die "seed manifest -> $code"
}

# ---------------------------------------------------------------- portcullis variants
# write_conf NAME -> $WORK/NAME/proxy.toml
write_conf() {
  local n=$1 d=$WORK/$1 auth_extra="" metrics log_extra=""
  mkdir -p "$d"
  PORT[$n]=$(free_port); BASE[$n]=https://127.0.0.1:${PORT[$n]}
  metrics='[metrics]
enabled = false'
  case $n in
    basic) ;;
    token) auth_extra="mode = \"token\"

[auth.token]
key_dir = \"$d/keys\"
lifetime = \"1h\"" ; mkdir -p "$d/keys" ;;
    obs)   MPORT[$n]=$(free_port)
           metrics="[metrics]
enabled = true
listen = \"127.0.0.1:${MPORT[$n]}\""
           log_extra="audit_file = \"$d/audit.log\"" ;;
    ldap)  MPORT[$n]=$(free_port)
           metrics="[metrics]
enabled = true
listen = \"127.0.0.1:${MPORT[$n]}\""
           auth_extra="backends = [\"ldap\"]

[auth.throttle]
# off, so that every storm login really reaches the directory
enabled = false

[auth.ldap]
urls = [\"ldap://127.0.0.1:$SLAPD_PORT\"]
bind_dn = \"cn=portcullis,ou=services,dc=example,dc=org\"
bind_password = \"service-pw\"
base_dn = \"ou=people,dc=example,dc=org\"
preset = \"openldap\"" ;;
  esac
  local access=false; [[ $n == obs ]] && access=true
  cat >"$d/proxy.toml" <<EOF
[server]
listen = "127.0.0.1:${PORT[$n]}"

[upstream]
url = "$REG"

[tls]
cert = "$WORK/cert.pem"
key = "$WORK/key.pem"

[auth]
realm = "bench"
$auth_extra

[auth.htpasswd]
path = "$WORK/htpasswd"

$metrics

[log]
level = "info"
access_log = $access
$log_extra
EOF
  "$PORTCULLIS" check --config "$d/proxy.toml" >"$d/check.log" 2>&1 \
    || { cat "$d/proxy.toml" "$d/check.log" >&2; die "config $n does not pass portcullis check"; }
}

start_portcullis() {
  local n=$1 d=$WORK/$1
  write_conf "$n"
  # stdout+stderr to a file: with access_log = true that is the cost of writing it
  "${BIN[$n]:-$PORTCULLIS}" serve --config "$d/proxy.toml" >"$d/out.log" 2>&1 &
  PID[$n]=$!
  local code i
  for ((i = 0; i < 300; i++)); do
    code=$(curl -sk --max-time 2 -o /dev/null -w '%{http_code}' "${BASE[$n]}/v2/" || true)
    [[ $code == 401 ]] && break
    sleep 0.1
  done
  [[ $code == 401 ]] || { tail -n 30 "$d/out.log" >&2; die "portcullis $n not ready (/v2/ -> $code)"; }
  log "portcullis $n pid ${PID[$n]} on ${BASE[$n]}"
}

# AUTHZ[name]: the Authorization header value wrk sends
declare -A AUTHZ
prepare_client() {
  local n=$1 code
  if [[ $n == token ]]; then
    local tok
    tok=$(curl -sk -u "$BENCH_USER:$BENCH_PASS" \
      "${BASE[$n]}/token?service=container-registry&scope=repository:$REPO:pull" \
      | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["token"])') || die "no token from /token"
    AUTHZ[$n]="Bearer $tok"
  else
    AUTHZ[$n]="Basic $AUTH_B64"
  fi
  # one request first (warms the credential cache for Basic), and a correctness check
  local got
  got=$(curl -sk -H "Authorization: ${AUTHZ[$n]}" -H "Accept: $MANIFEST_TYPE" \
    "${BASE[$n]}/v2/$REPO/manifests/latest" | sha256sum | cut -d' ' -f1)
  [[ $got == $(sha256sum <"$WORK/manifest.json" | cut -d' ' -f1) ]] || die "$n does not serve the manifest"
  code=$(curl -sk -o /dev/null -w '%{http_code}' -H "Authorization: Bearer not-a-token" "${BASE[$n]}/v2/$REPO/manifests/latest")
  [[ $code == 401 ]] || log "WARNING: $n answers $code to a bogus token"
}

parse_dur_ms() {
  awk -v v="$1" 'BEGIN{ n=v+0; if (v ~ /us$/) n/=1000; else if (v ~ /ms$/) n=n; else if (v ~ /m$/) n*=60000; else if (v ~ /s$/) n*=1000; printf "%.4g", n }'
}

load_manifest() {
  local t=$1 r=$2 out=$WORK/wrk-$1-$2.txt c0 c1 g0 g1
  c0=$(cpu_ticks "${PID[$t]}"); g0=$(cpu_ticks "$REG_PID")
  timeout 120 wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"$WRK_DURATION" --timeout 10s --latency \
    -H "Authorization: ${AUTHZ[$t]}" -H "Accept: $MANIFEST_TYPE" \
    "${BASE[$t]}/v2/$REPO/manifests/latest" >"$out" 2>&1 || log "$t: wrk exited non-zero"
  c1=$(cpu_ticks "${PID[$t]}"); g1=$(cpu_ticks "$REG_PID")
  local reqs rps non2xx sockerr p50 p99
  reqs=$(awk '/requests in/ {print $1; exit}' "$out")
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
  non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$out"); non2xx=${non2xx:-0}
  sockerr=$(awk -F'[ ,]+' '/Socket errors:/ {print $4+$6+$8+$10}' "$out"); sockerr=${sockerr:-0}
  p50=$(awk '$1=="50%" {print $2}' "$out"); p99=$(awk '$1=="99%" {print $2}' "$out")
  if [[ -z $reqs || $reqs == 0 ]]; then log "$t: wrk produced no requests"; cat "$out" >&2; return 0; fi
  rec "$t" "$r" manifest_rps "$rps"
  rec "$t" "$r" manifest_errors $((non2xx + sockerr))
  [[ -n $p50 ]] && rec "$t" "$r" manifest_p50_ms "$(parse_dur_ms "$p50")"
  [[ -n $p99 ]] && rec "$t" "$r" manifest_p99_ms "$(parse_dur_ms "$p99")"
  rec "$t" "$r" manifest_proxy_cpu_us_per_req "$(calc "($c1 - $c0) / $CLK_TCK * 1e6 / $reqs")"
  rec "$t" "$r" manifest_registry_cpu_us_per_req "$(calc "($g1 - $g0) / $CLK_TCK * 1e6 / $reqs")"
  log "$t r$r: $rps req/s, portcullis $(calc "($c1 - $c0) / $CLK_TCK * 1e6 / $reqs") µs/req, errors $((non2xx + sockerr)), p99 $p99"
}


# ---------------------------------------------------------------- LDAP part
start_slapd() {
  local d=$WORK/slapd
  mkdir -p "$d/db"
  SLAPD_PORT=$(free_port)
  cat >"$d/slapd.conf" <<EOF
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
pidfile $d/slapd.pid
argsfile $d/slapd.args
database mdb
maxsize 16777216
suffix "dc=example,dc=org"
rootdn "cn=admin,dc=example,dc=org"
rootpw admin-secret
directory $d/db
overlay memberof
EOF
  /usr/sbin/slapd -f "$d/slapd.conf" -h "ldap://127.0.0.1:$SLAPD_PORT/" -d 256 </dev/null >"$d/slapd.log" 2>&1 &
  SLAPD_PID=$!
  local i
  for ((i = 0; i < 100; i++)); do
    ldapsearch -x -H "ldap://127.0.0.1:$SLAPD_PORT" -b "" -s base >/dev/null 2>&1 && break
    sleep 0.1
  done
  ldapadd -x -H "ldap://127.0.0.1:$SLAPD_PORT" -D "cn=admin,dc=example,dc=org" -w admin-secret \
    -f "$ROOT/tests/fixtures/ldap/base.ldif" >"$d/ldapadd.log" 2>&1 || { tail "$d/ldapadd.log" "$d/slapd.log" >&2; die "ldapadd failed"; }
  log "slapd pid $SLAPD_PID on ldap://127.0.0.1:$SLAPD_PORT"
}
slapd_binds() { grep -c ' BIND dn=.* method=' "$WORK/slapd/slapd.log" || true; }
metric_sum() { # NAME-REGEX: sum of matching samples on the ldap instance's /metrics
  curl -s "http://127.0.0.1:${MPORT[ldap]}/metrics" | awk -v re="$1" '$0 !~ /^#/ && $1 ~ re {s += $NF} END {printf "%.0f", s}'
}

storm() { # STORM_RATE failed logins/s: bob/carol with fresh wrong passwords (bench/storm.py)
  exec "$PY" "$ROOT/bench/storm.py" "${BASE[ldap]}" "$STORM_RATE" 4 bob carol
}

ldap_downloads() { # ROUND MODE(alone|storm)
  local r=$1 mode=$2 i t0 t1 bad=0 res b0 b1 m0 m1 h0 h1 s0 s1
  b0=$(slapd_binds); s0=$(now)
  m0=$(metric_sum '^portcullis_ldap_operation_duration_seconds_count')
  h0=$(metric_sum '^portcullis_credential_cache_requests_total.*result="hit"')
  local tot0; tot0=$(metric_sum '^portcullis_credential_cache_requests_total')
  if [[ $mode == storm ]]; then storm >"$WORK/storm-$r.txt" 2>&1 & STORM_PID=$!; sleep 1; fi
  t0=$(now)
  for ((i = 0; i < LDAP_DOWNLOADS; i++)); do
    res=$(curl -sk --http1.1 -u alice:alice-pw --max-time 120 -o /dev/null -w '%{http_code} %{size_download}' \
      "${BASE[ldap]}/v2/$REPO/blobs/$BLOB_DIGEST" || echo "000 0")
    [[ $res == "200 $BLOB_BYTES" ]] || bad=$((bad + 1))
  done
  t1=$(now)
  if [[ $mode == storm ]]; then kill "$STORM_PID" 2>/dev/null; wait "$STORM_PID" 2>/dev/null || true; STORM_PID=""; sleep 0.5; fi
  s1=$(now); b1=$(slapd_binds)
  m1=$(metric_sum '^portcullis_ldap_operation_duration_seconds_count')
  h1=$(metric_sum '^portcullis_credential_cache_requests_total.*result="hit"')
  local tot1; tot1=$(metric_sum '^portcullis_credential_cache_requests_total')
  local mibs; mibs=$(calc "$LDAP_DOWNLOADS * $BLOB_MIB / ($t1 - $t0)")
  rec "ldap-$mode" "$r" download_mib_s "$mibs"
  rec "ldap-$mode" "$r" download_errors "$bad"
  rec "ldap-$mode" "$r" slapd_binds_per_s "$(calc "($b1 - $b0) / ($s1 - $s0)")"
  rec "ldap-$mode" "$r" ldap_ops_per_s "$(calc "($m1 - $m0) / ($s1 - $s0)")"
  rec "ldap-$mode" "$r" cache_lookups "$((tot1 - tot0))"
  rec "ldap-$mode" "$r" cache_hits "$((h1 - h0))"
  log "ldap $mode r$r: $mibs MiB/s (errors $bad), slapd binds $(calc "($b1 - $b0) / ($s1 - $s0)")/s, portcullis ldap ops $(calc "($m1 - $m0) / ($s1 - $s0)")/s, cache hits $((h1 - h0))/$((tot1 - tot0))"
}

# ---------------------------------------------------------------- soak part
rss_kib() { awk -v k="${2:-VmRSS:}" '$1 == k {print $2}' "/proc/$1/status"; }
rec_rss() { rec "$1" "$2" "$3" "$(calc "$(rss_kib "${PID[$1]}" "${4:-VmRSS:}") / 1024")"; }

soak_downloads() { # NAME: 8 parallel 64 MiB downloads, peak VmRSS sampled every 100 ms
  local t=$1 i peak=0 cur pids=() bad=0
  for ((i = 0; i < 8; i++)); do
    curl -sk --http1.1 -u "$BENCH_USER:$BENCH_PASS" --max-time 120 -o /dev/null -w '%{http_code} %{size_download}\n' \
      "${BASE[$t]}/v2/$REPO/blobs/$BLOB_DIGEST" >"$WORK/dl-$t-$i.txt" 2>&1 &
    pids+=($!)
  done
  while kill -0 "${pids[@]}" 2>/dev/null; do
    cur=$(rss_kib "${PID[$t]}"); ((cur > peak)) && peak=$cur
    sleep 0.1
  done
  wait "${pids[@]}" 2>/dev/null || true
  for ((i = 0; i < 8; i++)); do [[ $(cat "$WORK/dl-$t-$i.txt") == "200 $BLOB_BYTES" ]] || bad=$((bad + 1)); done
  rec "$t" 0 peak_rss_8_downloads_mib "$(calc "$peak / 1024")"
  rec "$t" 0 download_errors "$bad"
}

soak() {
  [[ -x ${PORTCULLIS_SYSTEM_MALLOC:-} ]] \
    || die "the soak needs PORTCULLIS_SYSTEM_MALLOC (cargo build --release --no-default-features --bin portcullis, then copy it)"
  BIN[soak-system]=$PORTCULLIS_SYSTEM_MALLOC
  BIN[soak-jemalloc]=$PORTCULLIS
  local names=(soak-jemalloc soak-system) t r
  for t in "${names[@]}"; do start_portcullis "$t"; prepare_client "$t"; rec_rss "$t" 0 rss_start_mib; done
  local saved=$WRK_DURATION; WRK_DURATION=$SOAK_DURATION
  for ((r = 1; r <= SOAK_RUNS; r++)); do
    for t in $(rotate "$r" "${names[@]}"); do load_manifest "$t" "$r"; rec_rss "$t" "$r" rss_mib; done
  done
  WRK_DURATION=$saved
  sleep 2
  for t in "${names[@]}"; do rec_rss "$t" 0 rss_end_mib; done
  for t in "${names[@]}"; do soak_downloads "$t"; rec_rss "$t" 0 vmhwm_mib VmHWM:; done
  for t in "${names[@]}"; do
    rec "$t" 0 log_error_lines "$(grep -cE ' (ERROR|WARN) |panicked' "$WORK/$t/out.log" || true)"
    log "$t: RSS $(calc "$(rss_kib "${PID[$t]}") / 1024") MiB after the soak, VmHWM $(calc "$(rss_kib "${PID[$t]}" VmHWM:) / 1024") MiB"
  done
}

# ---------------------------------------------------------------- main
for c in wrk docker-registry htpasswd openssl curl; do command -v $c >/dev/null || die "$c missing"; done
[[ -x $PORTCULLIS ]] || die "$PORTCULLIS missing (cargo build --release)"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average at start: $LOAD_START"
make_fixtures
start_registry
seed
PARTS=${PARTS:-manifest ldap}
VARIANTS=(basic token obs)
[[ " $PARTS " == *" manifest "* ]] || { ROUNDS=0; VARIANTS=(); }
[[ " $PARTS " == *" ldap "* ]] || LDAP=0
for n in "${VARIANTS[@]}"; do start_portcullis "$n"; prepare_client "$n"; done

for ((r = 1; r <= ROUNDS; r++)); do
  log "===== round $r / $ROUNDS"
  for t in $(rotate "$r" "${VARIANTS[@]}"); do load_manifest "$t" "$r"; sleep 1; done
done
if ((ROUNDS > 0)); then
  rec obs 0 audit_lines "$(wc -l <"$WORK/obs/audit.log" 2>/dev/null || echo 0)"
  rec obs 0 access_log_lines "$(grep -c 'access' "$WORK/obs/out.log" 2>/dev/null || echo 0)"
  rec obs 0 access_log_mib "$(calc "$(stat -c %s "$WORK/obs/out.log") / 1048576")"
fi
for n in "${VARIANTS[@]}"; do
  rec "$n" 0 log_error_lines "$(grep -cE ' (ERROR|WARN) |panicked' "$WORK/$n/out.log" || true)"
  kill "${PID[$n]}" 2>/dev/null || true; wait "${PID[$n]}" 2>/dev/null || true; unset "PID[$n]"
done

[[ " $PARTS " == *" soak "* ]] && soak

if [[ $LDAP == 1 ]]; then
  start_slapd
  start_portcullis ldap
  curl -sk -u alice:alice-pw -o /dev/null "${BASE[ldap]}/v2/"   # alice logs in once (cache warm)
  [[ $(curl -sk -u alice:alice-pw -o /dev/null -w '%{http_code}' "${BASE[ldap]}/v2/") == 200 ]] || die "alice cannot log in"
  [[ $(curl -sk -u bob:nope -o /dev/null -w '%{http_code}' "${BASE[ldap]}/v2/") == 401 ]] || log "WARNING: wrong password not 401"
  for ((r = 1; r <= LDAP_ROUNDS; r++)); do
    if ((r % 2)); then ldap_downloads "$r" alone; ldap_downloads "$r" storm
    else ldap_downloads "$r" storm; ldap_downloads "$r" alone; fi
  done
  rec ldap 0 log_error_lines "$(grep -cE ' (ERROR|WARN) |panicked' "$WORK/ldap/out.log" || true)"
fi

{
  echo "{\"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\", \"duration_s\": $(( $(date +%s) - T_START )),"
  echo " \"rounds\": $ROUNDS, \"wrk_args\": \"wrk -t$WRK_THREADS -c$WRK_CONNS -d$WRK_DURATION\","
  echo " \"soak_label\": \"${SOAK_LABEL:-jemalloc (default build)}\", \"soak_other_label\": \"${SOAK_OTHER_LABEL:-system malloc (\`--no-default-features\`)}\","
  echo " \"soak_runs\": $SOAK_RUNS, \"soak_duration\": \"$SOAK_DURATION\", \"parts\": \"$PARTS\", \"rjem_malloc_conf_env\": \"${_RJEM_MALLOC_CONF:-}\","
  [[ -n ${PORTCULLIS_SYSTEM_MALLOC:-} ]] && echo " \"portcullis_system_malloc_binary\": \"$(sha256sum "$PORTCULLIS_SYSTEM_MALLOC" | cut -c1-16)\","
  echo " \"ldap_rounds\": $LDAP_ROUNDS, \"ldap_downloads\": $LDAP_DOWNLOADS, \"storm_rate\": $STORM_RATE, \"ldap\": $LDAP,"
  echo " \"cpu\": \"$(lscpu | awk -F': *' '/^Model name/{print $2; exit}')\", \"nproc\": $(nproc),"
  echo " \"loadavg_start\": \"$LOAD_START\", \"loadavg_end\": \"$(cut -d' ' -f1-3 /proc/loadavg)\","
  echo " \"portcullis_binary\": \"$(sha256sum "$PORTCULLIS" | cut -c1-16) $(date -u -r "$PORTCULLIS" +%Y-%m-%dT%H:%M:%SZ)\","
  echo " \"git_head_at_run\": \"$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo none)\"}"
} >"$WORK/meta.json"
cp "$CSV_TMP" "$OUT/$NAME.csv"; cp "$WORK/meta.json" "$OUT/$NAME-meta.json"
"$PY" "$ROOT/bench/auth_report.py" --csv "$OUT/$NAME.csv" --meta "$OUT/$NAME-meta.json" | tee "$OUT/$NAME-summary.md"
log "done in $(( $(date +%s) - T_START )) s"
