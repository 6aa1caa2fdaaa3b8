#!/usr/bin/env bash
# A fleet (issue 16), on loopback, in one run:
#
#   fail:    failed logins per second (wrong password, bcrypt cost 4, the
#            throttle on with max_failures too high to block), straight to
#            one replica, without and with [cluster] redis: the cost of
#            counting a failure in Redis
#   ok:      cached logins per second (GET /v2/, right password), without
#            and with [cluster]: the success path, which never asks Redis
#   lb1/lb3: GET of a manifest through HAProxy (round robin) to one and to
#            three replicas sharing one Redis
#   limits:  cached logins (as ok) with [limits] per address and per user
#            set high enough never to refuse, without and with [cluster]
#            (the buckets synced every 2 s): the cost of the rate limits
#   rounds interleaved; requests/s and portcullis CPU per request.
#
#   bash bench/fleet.sh          # about 5 min on 2 vCPUs
#   QUICK=1 bash bench/fleet.sh  # smoke test
# Needs: wrk haproxy redis-server docker-registry htpasswd openssl curl.
# Knobs: ROUNDS [5] WRK_DURATION [10s] WRK_CONNS [16]
#   PORTCULLIS [$CARGO_TARGET_DIR|target/release/portcullis] OUT [bench/results] KEEP_WORK=1
# Output: $OUT/fleet.csv, $OUT/fleet-meta.json, $OUT/fleet-summary.md.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ ${QUICK:-0} == 1 ]]; then ROUNDS=${ROUNDS:-1}; WRK_DURATION=${WRK_DURATION:-3s}; fi
ROUNDS=${ROUNDS:-5}
WRK_DURATION=${WRK_DURATION:-10s}
WRK_CONNS=${WRK_CONNS:-16}
PORTCULLIS=${PORTCULLIS:-${CARGO_TARGET_DIR:-$ROOT/target}/release/portcullis}
OUT=${OUT:-$ROOT/bench/results}
PY=${PYTHON:-python3}
REPO=bench/app
LAYERS=1
LAYER_MIB=1
CLK_TCK=$(getconf CLK_TCK)
T_START=$(date +%s)
WORK=$(mktemp -d /tmp/portcullis-fleet.XXXXXX)
CSV_TMP=$WORK/results.csv
mkdir -p "$OUT"
echo "target,round,metric,value" >"$CSV_TMP"
declare -A PID BASE
REG_PID="" REDIS_PID="" LB_PID=""
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

cleanup() {
  local rc=$? p
  set +e
  for p in "${PID[@]}" $REG_PID $REDIS_PID $LB_PID; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  if [[ ${KEEP_WORK:-0} == 1 ]]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

make_certs() {
  local d=$WORK/pki
  mkdir -p "$d"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -keyout "$d/server.key" -out "$d/server.pem" -subj "/CN=127.0.0.1" \
    -addext "subjectAltName=IP:127.0.0.1" 2>/dev/null
}

start_redis() {
  local port; port=$(free_port)
  REDIS=redis://127.0.0.1:$port
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no >"$WORK/redis.log" 2>&1 &
  REDIS_PID=$!
  for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && return 0; sleep 0.1; done
  die "redis-server did not start"
}

# start_portcullis NAME CLUSTER(0|1)
start_portcullis() {
  local n=$1 cluster=$2 limits=${3:-0} d=$WORK/$1 port
  mkdir -p "$d"
  port=$(free_port); BASE[$n]=https://127.0.0.1:$port
  {
    cat <<TOML
[server]
listen = "127.0.0.1:$port"
trusted_proxies = ["127.0.0.1/32"]

[upstream]
url = "$REG"

[tls]
cert = "$WORK/pki/server.pem"
key = "$WORK/pki/server.key"

[auth]
realm = "bench"

[auth.htpasswd]
path = "$WORK/htpasswd"

[auth.throttle]
max_failures = 1000000000
window = "1m"

[[access]]
users = ["bench"]
repositories = ["bench/**"]
actions = ["pull"]

[metrics]
enabled = false

[log]
level = "error"
access_log = false
TOML
    if [[ $cluster == 1 ]]; then printf '\n[cluster]\nredis = "%s"\n' "$REDIS"; fi
    if [[ $limits == 1 ]]; then
      printf '\n[limits.per_address]\nrate = 1e9\nburst = 1000000000\n\n[limits.per_user]\nrate = 1e9\nburst = 1000000000\n'
    fi
  } >"$d/proxy.toml"
  "$PORTCULLIS" check --config "$d/proxy.toml" >"$d/check.log" 2>&1 || { cat "$d/check.log" >&2; die "config $n"; }
  "$PORTCULLIS" serve --config "$d/proxy.toml" >"$d/out.log" 2>&1 &
  PID[$n]=$!
  wait_http "${BASE[$n]}/v2/" "bench:$PASS" 200 30 || { tail -n 20 "$d/out.log" >&2; die "portcullis $n not ready"; }
}

start_lb() {
  local p1 p3
  p1=$(free_port); p3=$(free_port)
  cat >"$WORK/haproxy.cfg" <<CFG
global
  log stderr format raw local0 err
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend lb1
  bind 127.0.0.1:$p1
  option forwardfor
  default_backend one
frontend lb3
  bind 127.0.0.1:$p3
  option forwardfor
  default_backend three
backend one
  server r0 ${BASE[r0]#https://} ssl verify none
backend three
  balance roundrobin
  server r0 ${BASE[r0]#https://} ssl verify none
  server r1 ${BASE[r1]#https://} ssl verify none
  server r2 ${BASE[r2]#https://} ssl verify none
CFG
  /usr/sbin/haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
  LB_PID=$!
  BASE[lb1]=http://127.0.0.1:$p1; BASE[lb3]=http://127.0.0.1:$p3
  wait_http "${BASE[lb3]}/v2/" "bench:$PASS" 200 20 || { cat "$WORK/haproxy.log" >&2; die "haproxy not ready"; }
}

# round TARGET ROUND: wrk against the target; CPU of the replicas it uses
round() {
  local t=$1 r=$2 url creds pids=() out=$WORK/wrk-$1-$2.txt c0 c1
  case $t in
    fail-local) url=${BASE[solo]}/v2/; creds="bench:wrong"; pids=("${PID[solo]}") ;;
    fail-cluster) url=${BASE[r0]}/v2/; creds="bench:wrong"; pids=("${PID[r0]}") ;;
    ok-local) url=${BASE[solo]}/v2/; creds="bench:$PASS"; pids=("${PID[solo]}") ;;
    ok-cluster) url=${BASE[r0]}/v2/; creds="bench:$PASS"; pids=("${PID[r0]}") ;;
    limits-local) url=${BASE[lim]}/v2/; creds="bench:$PASS"; pids=("${PID[lim]}") ;;
    limits-cluster) url=${BASE[limc]}/v2/; creds="bench:$PASS"; pids=("${PID[limc]}") ;;
    lb1) url=${BASE[lb1]}/v2/$REPO/manifests/latest; creds="bench:$PASS"; pids=("${PID[r0]}") ;;
    lb3) url=${BASE[lb3]}/v2/$REPO/manifests/latest; creds="bench:$PASS"; pids=("${PID[r0]}" "${PID[r1]}" "${PID[r2]}") ;;
  esac
  c0=$(cpu_ticks "${pids[@]}")
  timeout 120 wrk -t2 -c"$WRK_CONNS" -d"$WRK_DURATION" --timeout 10s \
    -H "Authorization: Basic $(printf '%s' "$creds" | base64 -w0)" \
    -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$url" >"$out" 2>&1 || log "$t: wrk exited non-zero"
  c1=$(cpu_ticks "${pids[@]}")
  local reqs rps non2xx
  wrk_stats "$out"; reqs=$REQS rps=$RPS non2xx=$NON2XX
  if [[ $t == fail-* ]]; then
    ((non2xx == reqs)) || die "$t: $((reqs - non2xx)) wrong passwords were accepted"
  else
    ((non2xx == 0)) || die "$t: $non2xx of $reqs refused"
  fi
  rec "$t" "$r" rps "$rps"
  rec "$t" "$r" cpu_us_per_request "$(calc "($c1 - $c0) / $CLK_TCK * 1e6 / $reqs")"
  log "$t r$r: $rps req/s, $(calc "($c1 - $c0) / $CLK_TCK * 1e6 / $reqs") µs portcullis CPU each"
}

for c in wrk haproxy redis-server redis-cli docker-registry htpasswd openssl curl; do
  command -v $c >/dev/null || [[ -x /usr/sbin/$c ]] || die "$c missing"
done
[[ -x $PORTCULLIS ]] || die "$PORTCULLIS missing (cargo build --release)"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
PASS=fleet-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
htpasswd -nbB -C 4 bench "$PASS" | sed '/^$/d' >"$WORK/htpasswd"
make_certs
start_registry
seed_image
start_redis
start_portcullis solo 0
for n in r0 r1 r2; do start_portcullis "$n" 1; done
start_portcullis lim 0 1
start_portcullis limc 1 1
start_lb

for ((r = 1; r <= ROUNDS; r++)); do
  for t in $(rotate "$r" fail-local fail-cluster ok-local ok-cluster limits-local limits-cluster lb1 lb3); do round "$t" "$r"; sleep 1; done
done
rec redis 0 keys "$(redis-cli -u "$REDIS" dbsize)"
for n in solo r0 r1 r2 lim limc; do rec "$n" 0 log_error_lines "$(grep -cE ' (ERROR|WARN) |panicked' "$WORK/$n/out.log" || true)"; done

{
  echo "{\"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\", \"duration_s\": $(( $(date +%s) - T_START )),"
  echo " \"rounds\": $ROUNDS, \"wrk_args\": \"wrk -t2 -c$WRK_CONNS -d$WRK_DURATION\","
  echo " \"redis\": \"$(redis-server --version | awk '{print $3}')\", \"haproxy\": \"$(/usr/sbin/haproxy -v | awk 'NR==1{print $3}')\","
  echo " \"cpu\": \"$(lscpu | awk -F': *' '/^Model name/{print $2; exit}')\", \"nproc\": $(nproc),"
  echo " \"loadavg_start\": \"$LOAD_START\", \"loadavg_end\": \"$(cut -d' ' -f1-3 /proc/loadavg)\","
  echo " \"git_head_at_run\": \"$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo none)\"}"
} >"$WORK/meta.json"
cp "$CSV_TMP" "$OUT/fleet.csv"; cp "$WORK/meta.json" "$OUT/fleet-meta.json"
"$PY" - "$OUT/fleet.csv" "$OUT/fleet-meta.json" <<'PY' | tee "$OUT/fleet-summary.md"
import csv, json, statistics, sys
from collections import defaultdict
vals = defaultdict(list)
for row in csv.DictReader(open(sys.argv[1])):
    vals[(row["target"], row["metric"])].append(float(row["value"]))
meta = json.load(open(sys.argv[2]))
med = lambda t, m: statistics.median(vals[(t, m)])
runs = lambda t: " ".join(f"{v:,.0f}" for v in vals[(t, "rps")])
print(f"Run {meta['date']}, {meta['duration_s']} s, {meta['nproc']} vCPU {meta['cpu']}, load {meta['loadavg_start']} → {meta['loadavg_end']}, "
      f"redis {meta['redis']}, haproxy {meta['haproxy']}, at {meta['git_head_at_run']}.\n")
print(f"`{meta['wrk_args']}`, {meta['rounds']} interleaved rounds, medians:\n")
print("| what | without `[cluster]` req/s | with `[cluster]` req/s | × | CPU µs/request without | with | × | rounds (with) |")
print("|---|---:|---:|---:|---:|---:|---:|---|")
for label, a, b in [("failed login (bcrypt cost 4, counted)", "fail-local", "fail-cluster"),
                    ("cached login, `GET /v2/`", "ok-local", "ok-cluster"),
                    ("cached login with `[limits]` (never refusing)", "limits-local", "limits-cluster")]:
    print(f"| {label} | {med(a,'rps'):,.0f} | {med(b,'rps'):,.0f} | {med(b,'rps')/med(a,'rps'):.2f} | "
          f"{med(a,'cpu_us_per_request'):,.0f} | {med(b,'cpu_us_per_request'):,.0f} | {med(b,'cpu_us_per_request')/med(a,'cpu_us_per_request'):.2f} | {runs(b)} |")
print("\nThe rate limits' own cost, cached login `GET /v2/`, against the same without `[limits]`:\n")
print("| | req/s × | CPU µs/request × |")
print("|---|---:|---:|")
for label, a, b in [("`[limits]`, one process", "ok-local", "limits-local"), ("`[limits]` + `[cluster]`", "ok-cluster", "limits-cluster")]:
    print(f"| {label} | {med(b,'rps')/med(a,'rps'):.2f} | {med(b,'cpu_us_per_request')/med(a,'cpu_us_per_request'):.2f} |")
print("\nManifest GETs through HAProxy (round robin, `option forwardfor`, TLS to the replicas), Basic login cached:\n")
print("| replicas | req/s | × one | portcullis CPU µs/request (all replicas) | rounds |")
print("|---|---:|---:|---:|---|")
for t, n in [("lb1", 1), ("lb3", 3)]:
    print(f"| {n} | {med(t,'rps'):,.0f} | {med(t,'rps')/med('lb1','rps'):.2f} | {med(t,'cpu_us_per_request'):,.0f} | {runs(t)} |")
errs = sum(vals[(n, "log_error_lines")][0] for n in ("solo", "r0", "r1", "r2", "lim", "limc"))
print(f"\nKeys in Redis at the end: {med('redis','keys'):.0f}. ERROR/WARN lines in the portcullis logs: {errs:.0f}.")
PY
log "done in $(( $(date +%s) - T_START )) s"
