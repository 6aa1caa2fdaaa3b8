#!/usr/bin/env bash
# Machine identities (issue 14), on loopback, side by side in one run:
#
#   logins: cold logins per second, every one verified (the credential
#     cache off: auth.cache_size = 0, throttle off), wrk GET /v2/ with
#     Basic credentials of
#       bcrypt5   an htpasswd user at cost 5 (what `htpasswd -B` writes)
#       bcrypt10  an htpasswd user at cost 10 (`portcullis user add`)
#       token     a robot's access token (pcat_…: HMAC-SHA256, no bcrypt)
#       cached    reference: the bcrypt10 user on an instance with the cache
#                 on, i.e. the same request without a login to verify
#     rounds interleaved; logins/s and portcullis CPU per login.
#   pulls: `skopeo copy` of a LAYERS-layer image out of one portcullis
#     (default cache, [tls.client_auth] optional) as
#       basic     --src-creds (one bcrypt, then the cache)
#       cert      --src-cert-dir, a client certificate and no password
#     rounds interleaved; wall time and portcullis CPU per GiB.
#
#   bash bench/identities.sh          # about 4 min on 2 vCPUs
#   QUICK=1 bash bench/identities.sh  # smoke test
# Knobs: ROUNDS [5] WRK_DURATION [10s] WRK_CONNS [16] PULL_ROUNDS [5]
#        LAYERS [4] LAYER_MIB [32] PORTCULLIS [$CARGO_TARGET_DIR|target/release/portcullis]
#        OUT [bench/results] KEEP_WORK=1
# Output: $OUT/identities.csv (target,round,metric,value), $OUT/identities-meta.json,
#         $OUT/identities-summary.md (medians and ratios).
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ ${QUICK:-0} == 1 ]]; then
  ROUNDS=${ROUNDS:-1}; WRK_DURATION=${WRK_DURATION:-3s}; PULL_ROUNDS=${PULL_ROUNDS:-1}; LAYER_MIB=${LAYER_MIB:-4}
fi
ROUNDS=${ROUNDS:-5}
WRK_DURATION=${WRK_DURATION:-10s}
WRK_CONNS=${WRK_CONNS:-16}
PULL_ROUNDS=${PULL_ROUNDS:-5}
LAYERS=${LAYERS:-4}
LAYER_MIB=${LAYER_MIB:-32}
PORTCULLIS=${PORTCULLIS:-${CARGO_TARGET_DIR:-$ROOT/target}/release/portcullis}
OUT=${OUT:-$ROOT/bench/results}
PY=${PYTHON:-python3}
REPO=bench/app
CLK_TCK=$(getconf CLK_TCK)
T_START=$(date +%s)
WORK=$(mktemp -d /tmp/portcullis-identities.XXXXXX)
CSV_TMP=$WORK/results.csv
mkdir -p "$OUT"
echo "target,round,metric,value" >"$CSV_TMP"
declare -A PID BASE TOKEN
REG_PID=""
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

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

# ---------------------------------------------------------------- fixtures
# A CA; the server's certificate for 127.0.0.1; a client certificate CN=bench-cert.
make_certs() {
  local d=$WORK/pki
  mkdir -p "$d"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -keyout "$d/ca.key" -out "$d/ca.pem" -subj "/CN=bench CA" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$d/server.key" \
    -out "$d/server.csr" -subj "/CN=127.0.0.1" 2>/dev/null
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial -days 2 \
    -extfile <(printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n') -out "$d/server.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$d/client.key" \
    -out "$d/client.csr" -subj "/CN=bench-cert" 2>/dev/null
  openssl x509 -req -in "$d/client.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial -days 2 \
    -extfile <(printf 'extendedKeyUsage=clientAuth\n') -out "$d/client.pem" 2>/dev/null
  chmod 600 "$d"/*.key
  # skopeo's --cert-dir layout: CA *.crt, client *.cert + *.key
  mkdir -p "$WORK/certdir-cert" "$WORK/certdir-basic"
  cp "$d/ca.pem" "$WORK/certdir-cert/ca.crt"; cp "$d/ca.pem" "$WORK/certdir-basic/ca.crt"
  cp "$d/client.pem" "$WORK/certdir-cert/client.cert"; cp "$d/client.key" "$WORK/certdir-cert/client.key"
}

make_users() {
  PASS5=b5-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
  PASS10=b10-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
  { htpasswd -nbB -C 5 bcrypt5 "$PASS5"; htpasswd -nbB -C 10 bcrypt10 "$PASS10"; } | sed '/^$/d' >"$WORK/htpasswd"
}

# ---------------------------------------------------------------- portcullis
# start_portcullis NAME EXTRA_AUTH_LINES: token file, client certificates optional
start_portcullis() {
  local n=$1 auth_extra=$2 d=$WORK/$1 port
  mkdir -p "$d"
  port=$(free_port); BASE[$n]=https://127.0.0.1:$port
  cat >"$d/proxy.toml" <<EOF
[server]
listen = "127.0.0.1:$port"

[upstream]
url = "$REG"

[tls]
cert = "$WORK/pki/server.pem"
key = "$WORK/pki/server.key"

[tls.client_auth]
ca_file = "$WORK/pki/ca.pem"
mode = "optional"

[auth]
realm = "bench"
$auth_extra

[auth.htpasswd]
path = "$WORK/htpasswd"

[auth.tokens]
path = "$d/tokens.toml"

[auth.throttle]
enabled = false

[[access]]
users = ["bcrypt5", "bcrypt10", "bench-cert", "robot\$bench"]
repositories = ["bench/**"]
actions = ["pull"]

[metrics]
enabled = false

[log]
level = "warn"
access_log = false
EOF
  "$PORTCULLIS" check --config "$d/proxy.toml" >"$d/check.log" 2>&1 \
    || { cat "$d/proxy.toml" "$d/check.log" >&2; die "config $n does not pass portcullis check"; }
  local out
  out=$("$PORTCULLIS" token create --config "$d/proxy.toml" --robot --name bench --scope 'bench/**:pull')
  TOKEN[$n]=${out##* }
  "$PORTCULLIS" serve --config "$d/proxy.toml" >"$d/out.log" 2>&1 &
  PID[$n]=$!
  wait_http "${BASE[$n]}/v2/" "" 401 30 || { tail -n 30 "$d/out.log" >&2; die "portcullis $n not ready"; }
  wait_http "${BASE[$n]}/v2/" "robot\$bench:${TOKEN[$n]}" 200 10 || die "$n: the robot token does not log in"
  log "portcullis $n pid ${PID[$n]} on ${BASE[$n]}"
}

# ---------------------------------------------------------------- logins
login_round() { # TARGET ROUND
  local t=$1 r=$2 creds out=$WORK/wrk-$1-$2.txt c0 c1 on=cold
  case $t in
    bcrypt5) creds="bcrypt5:$PASS5" ;;
    bcrypt10) creds="bcrypt10:$PASS10" ;;
    token) creds="robot\$bench:${TOKEN[cold]}" ;;
    # the same request with the login cached: the proxying alone
    cached) creds="bcrypt10:$PASS10"; on=warm ;;
  esac
  c0=$(cpu_ticks "${PID[$on]}")
  timeout 120 wrk -t2 -c"$WRK_CONNS" -d"$WRK_DURATION" --timeout 10s \
    -H "Authorization: Basic $(printf '%s' "$creds" | base64 -w0)" "${BASE[$on]}/v2/" >"$out" 2>&1 \
    || log "$t: wrk exited non-zero"
  c1=$(cpu_ticks "${PID[$on]}")
  local reqs rps non2xx
  wrk_stats "$out"; reqs=$REQS rps=$RPS non2xx=$NON2XX
  ((non2xx == 0)) || die "$t: $non2xx of $reqs logins were refused (a wrong credential measures nothing)"
  rec "$t" "$r" logins_per_s "$rps"
  rec "$t" "$r" login_errors "$non2xx"
  rec "$t" "$r" proxy_cpu_us_per_login "$(calc "($c1 - $c0) / $CLK_TCK * 1e6 / $reqs")"
  log "$t r$r: $rps logins/s, $(calc "($c1 - $c0) / $CLK_TCK * 1e6 / $reqs") µs CPU each, non-2xx $non2xx"
}

# ---------------------------------------------------------------- pulls
pull_round() { # TARGET ROUND
  local t=$1 r=$2 c0 c1 t0 t1 args=()
  rm -rf "$WORK/pulled"
  case $t in
    basic) args=(--src-cert-dir "$WORK/certdir-basic" --src-creds "bcrypt10:$PASS10") ;;
    cert) args=(--src-cert-dir "$WORK/certdir-cert") ;;
  esac
  c0=$(cpu_ticks "${PID[warm]}"); t0=$(now)
  skopeo copy --quiet "${args[@]}" "docker://${BASE[warm]#https://}/$REPO:latest" "dir:$WORK/pulled" \
    >"$WORK/skopeo-$t-$r.log" 2>&1 || { cat "$WORK/skopeo-$t-$r.log" >&2; die "$t: skopeo copy failed"; }
  t1=$(now); c1=$(cpu_ticks "${PID[warm]}")
  local got; got=$(du -cb "$WORK"/pulled/* | tail -1 | cut -f1)
  ((got >= IMAGE_BYTES)) || die "$t: pulled $got bytes of $IMAGE_BYTES"
  local gib; gib=$(calc "$IMAGE_BYTES / 1073741824")
  rec "$t" "$r" pull_s "$(calc "$t1 - $t0")"
  rec "$t" "$r" proxy_cpu_s_per_gib "$(calc "($c1 - $c0) / $CLK_TCK / $gib")"
  log "$t r$r: pull $(calc "$t1 - $t0") s, portcullis $(calc "($c1 - $c0) / $CLK_TCK / $gib") s CPU per GiB"
}

# ---------------------------------------------------------------- main
for c in wrk skopeo docker-registry htpasswd openssl curl; do command -v $c >/dev/null || die "$c missing"; done
[[ -x $PORTCULLIS ]] || die "$PORTCULLIS missing (cargo build --release)"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
make_certs
make_users
start_registry
seed_image
# every login verified: nothing cached
start_portcullis cold "cache_size = 0"
start_portcullis warm ""
# the cert client really is the certificate's user: no password, 200
code=$(curl -s --cacert "$WORK/pki/ca.pem" --cert "$WORK/pki/client.pem" --key "$WORK/pki/client.key" \
  -o /dev/null -w '%{http_code}' "${BASE[warm]}/v2/$REPO/manifests/latest" \
  -H 'Accept: application/vnd.oci.image.manifest.v1+json')
[[ $code == 200 ]] || die "the client certificate does not pull (got $code)"

for ((r = 1; r <= ROUNDS; r++)); do
  for t in $(rotate "$r" bcrypt5 bcrypt10 token cached); do login_round "$t" "$r"; sleep 1; done
done
for ((r = 1; r <= PULL_ROUNDS; r++)); do
  for t in $(rotate "$r" basic cert); do pull_round "$t" "$r"; done
done
for n in cold warm; do
  rec "$n" 0 log_error_lines "$(grep -cE ' (ERROR|WARN) |panicked' "$WORK/$n/out.log" || true)"
done

{
  echo "{\"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\", \"duration_s\": $(( $(date +%s) - T_START )),"
  echo " \"rounds\": $ROUNDS, \"wrk_args\": \"wrk -t2 -c$WRK_CONNS -d$WRK_DURATION\", \"pull_rounds\": $PULL_ROUNDS,"
  echo " \"image\": \"$LAYERS layers x $LAYER_MIB MiB\", \"skopeo\": \"$(skopeo --version | awk '{print $3}')\","
  echo " \"cpu\": \"$(lscpu | awk -F': *' '/^Model name/{print $2; exit}')\", \"nproc\": $(nproc),"
  echo " \"loadavg_start\": \"$LOAD_START\", \"loadavg_end\": \"$(cut -d' ' -f1-3 /proc/loadavg)\","
  echo " \"git_head_at_run\": \"$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo none)\"}"
} >"$WORK/meta.json"
cp "$CSV_TMP" "$OUT/identities.csv"; cp "$WORK/meta.json" "$OUT/identities-meta.json"
"$PY" - "$OUT/identities.csv" "$OUT/identities-meta.json" <<'PY' | tee "$OUT/identities-summary.md"
import csv, json, statistics, sys
from collections import defaultdict
vals = defaultdict(list)
for row in csv.DictReader(open(sys.argv[1])):
    vals[(row["target"], row["metric"])].append(float(row["value"]))
meta = json.load(open(sys.argv[2]))
med = lambda t, m: statistics.median(vals[(t, m)])
runs = lambda t, m: " ".join(f"{v:,.0f}" if v >= 100 else f"{v:.3g}" for v in vals[(t, m)])
print(f"Run {meta['date']}, {meta['duration_s']} s, {meta['nproc']} vCPU {meta['cpu']}, load {meta['loadavg_start']} → {meta['loadavg_end']}, at {meta['git_head_at_run']}.\n")
print(f"Cold logins (credential cache off), `{meta['wrk_args']}` GET /v2/, {meta['rounds']} interleaved rounds, medians:\n")
print("| credential | logins/s | × bcrypt cost 5 | × bcrypt cost 10 | portcullis CPU per request, µs | of which the login, µs | non-2xx | rounds (logins/s) |")
print("|---|---:|---:|---:|---:|---:|---:|---|")
base = med("cached", "proxy_cpu_us_per_login")
for t, label in [("bcrypt5", "htpasswd bcrypt, cost 5 (`htpasswd -B`)"), ("bcrypt10", "htpasswd bcrypt, cost 10 (`portcullis user add`)"), ("token", "access token (`pcat_…`, HMAC-SHA256)"), ("cached", "*reference: the same request, login cached*")]:
    r = med(t, "logins_per_s")
    cpu = med(t, "proxy_cpu_us_per_login")
    login = "–" if t == "cached" else f"{max(cpu - base, 0):,.0f}"
    print(f"| {label} | {r:,.0f} | {r / med('bcrypt5', 'logins_per_s'):.1f} | {r / med('bcrypt10', 'logins_per_s'):.1f} | "
          f"{cpu:,.0f} | {login} | {sum(vals[(t, 'login_errors')]):.0f} | {runs(t, 'logins_per_s')} |")
print("\n`GET /v2/` is forwarded to the registry (on the same 2 vCPUs), which bounds the fast rows; "
      "\"of which the login\" is the CPU per request minus the cached reference's.")
print(f"\n`skopeo copy` ({meta['skopeo']}) of a {meta['image']} image to `dir:`, {meta['pull_rounds']} interleaved rounds, medians:\n")
print("| identity | pull, s | × Basic | portcullis CPU per GiB, s | × Basic | rounds (s) |")
print("|---|---:|---:|---:|---:|---|")
for t, label in [("basic", "Basic (`--src-creds`, cached after one bcrypt)"), ("cert", "client certificate (`--src-cert-dir`, no password)")]:
    print(f"| {label} | {med(t, 'pull_s'):.2f} | {med(t, 'pull_s') / med('basic', 'pull_s'):.2f} | "
          f"{med(t, 'proxy_cpu_s_per_gib'):.2f} | {med(t, 'proxy_cpu_s_per_gib') / med('basic', 'proxy_cpu_s_per_gib'):.2f} | {runs(t, 'pull_s')} |")
errs = sum(vals[(n, "log_error_lines")][0] for n in ("cold", "warm"))
print(f"\nERROR/WARN lines in the portcullis logs: {errs:.0f}.")
PY
log "done in $(( $(date +%s) - T_START )) s"
