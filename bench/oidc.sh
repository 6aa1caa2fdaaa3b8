#!/usr/bin/env bash
# OpenID Connect workload identity (issue 15), on loopback, in one run:
#
#   logins: logins per second, wrk GET /v2/ with Basic credentials of
#       bcrypt5    an htpasswd user at cost 5, every login verified (cache off)
#       bcrypt10   an htpasswd user at cost 10, every login verified
#       idtoken    ES256 ID tokens of a static issuer, a new token every
#                  request (each one verified: signature, claims, mapping)
#       idcached   one ID token again and again (the verified-token cache)
#       cached     reference: the bcrypt10 user with the credential cache on
#     rounds interleaved; logins/s and portcullis CPU per login; the
#     issuer's JWKS fetches over the whole run (no network per login).
#   pulls: `skopeo copy` of a LAYERS-layer image as
#       basic      --src-creds user:password (one bcrypt, then the cache)
#       idtoken    --src-creds ci:ID_TOKEN
#     rounds interleaved; wall time and portcullis CPU per GiB.
#
#   bash bench/oidc.sh          # about 4 min on 2 vCPUs
#   QUICK=1 bash bench/oidc.sh  # smoke test
# Needs: wrk skopeo docker-registry htpasswd openssl curl node, and
# tests/oidc/node_modules is not needed (the static issuer uses Node's own
# modules). Knobs: ROUNDS [5] WRK_DURATION [10s] WRK_CONNS [16]
#   PULL_ROUNDS [5] LAYERS [4] LAYER_MIB [32] TOKENS [60000]
#   PORTCULLIS [$CARGO_TARGET_DIR|target/release/portcullis] OUT [bench/results] KEEP_WORK=1
# Output: $OUT/oidc.csv, $OUT/oidc-meta.json, $OUT/oidc-summary.md.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ ${QUICK:-0} == 1 ]]; then
  ROUNDS=${ROUNDS:-1}; WRK_DURATION=${WRK_DURATION:-3s}; PULL_ROUNDS=${PULL_ROUNDS:-1}; LAYER_MIB=${LAYER_MIB:-4}; TOKENS=${TOKENS:-20000}
fi
ROUNDS=${ROUNDS:-5}
WRK_DURATION=${WRK_DURATION:-10s}
WRK_CONNS=${WRK_CONNS:-16}
WRK_THREADS=2
PULL_ROUNDS=${PULL_ROUNDS:-5}
LAYERS=${LAYERS:-4}
LAYER_MIB=${LAYER_MIB:-32}
TOKENS=${TOKENS:-60000}
PORTCULLIS=${PORTCULLIS:-${CARGO_TARGET_DIR:-$ROOT/target}/release/portcullis}
OUT=${OUT:-$ROOT/bench/results}
PY=${PYTHON:-python3}
REPO=bench/app
AUD=https://registry.bench
CLK_TCK=$(getconf CLK_TCK)
T_START=$(date +%s)
WORK=$(mktemp -d /tmp/portcullis-oidc.XXXXXX)
CSV_TMP=$WORK/results.csv
mkdir -p "$OUT"
echo "target,round,metric,value" >"$CSV_TMP"
declare -A PID BASE
REG_PID="" ISSUER_PID=""
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

cleanup() {
  local rc=$? p
  set +e
  for p in "${PID[@]}" $REG_PID $ISSUER_PID; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  if [[ ${KEEP_WORK:-0} == 1 ]]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A CA and a certificate for 127.0.0.1 (the proxy's and the issuer's).
make_certs() {
  local d=$WORK/pki
  mkdir -p "$d" "$WORK/certdir"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -keyout "$d/ca.key" -out "$d/ca.pem" -subj "/CN=bench CA" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$d/server.key" \
    -out "$d/server.csr" -subj "/CN=127.0.0.1" 2>/dev/null
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial -days 2 \
    -extfile <(printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n') -out "$d/server.pem" 2>/dev/null
  chmod 600 "$d"/*.key
  cp "$d/ca.pem" "$WORK/certdir/ca.crt"
}

make_users() {
  PASS5=b5-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
  PASS10=b10-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
  { htpasswd -nbB -C 5 bcrypt5 "$PASS5"; htpasswd -nbB -C 10 bcrypt10 "$PASS10"; } | sed '/^$/d' >"$WORK/htpasswd"
}

# The static issuer of tests/oidc (discovery + JWKS files over HTTPS) and
# TOKENS ID tokens of it.
start_issuer() {
  local port; port=$(free_port)
  ISSUER=https://127.0.0.1:$port
  mkdir -p "$WORK/issuer"
  node "$ROOT/bench/oidc-tokens.mjs" "$WORK/issuer" "$ISSUER" "$AUD" "$TOKENS"
  node "$ROOT/tests/oidc/static-issuer.mjs" --port "$port" --cert "$WORK/pki/server.pem" \
    --key "$WORK/pki/server.key" --dir "$WORK/issuer" >"$WORK/issuer.log" 2>&1 &
  ISSUER_PID=$!
  wait_http "$ISSUER/.well-known/openid-configuration" "" 200 20 || { cat "$WORK/issuer.log" >&2; die "issuer did not start"; }
  ONE_TOKEN=$(head -1 "$WORK/issuer/tokens.txt")
}

# start_portcullis NAME EXTRA_AUTH_LINES
start_portcullis() {
  local n=$1 auth_extra=$2 d=$WORK/$1 port
  mkdir -p "$d"
  port=$(free_port); BASE[$n]=https://127.0.0.1:$port
  cat >"$d/proxy.toml" <<TOML
[server]
listen = "127.0.0.1:$port"

[upstream]
url = "$REG"

[tls]
cert = "$WORK/pki/server.pem"
key = "$WORK/pki/server.key"

[auth]
realm = "bench"
$auth_extra

[auth.htpasswd]
path = "$WORK/htpasswd"

[auth.throttle]
enabled = false

[auth.oidc]
ca_file = "$WORK/pki/ca.pem"

[[auth.oidc.issuers]]
issuer = "$ISSUER"
audience = "$AUD"
user_prefix = "ci:"
required_claims = { repository_owner = "acme" }

[[access]]
users = ["bcrypt5", "bcrypt10", "ci:repo:acme/app:ref:refs/heads/main"]
repositories = ["bench/**"]
actions = ["pull"]

[metrics]
enabled = false

[log]
level = "warn"
access_log = false
TOML
  "$PORTCULLIS" check --config "$d/proxy.toml" >"$d/check.log" 2>&1 \
    || { cat "$d/proxy.toml" "$d/check.log" >&2; die "config $n does not pass portcullis check"; }
  "$PORTCULLIS" serve --config "$d/proxy.toml" >"$d/out.log" 2>&1 &
  PID[$n]=$!
  wait_http "${BASE[$n]}/v2/" "" 401 30 || { tail -n 30 "$d/out.log" >&2; die "portcullis $n not ready"; }
  wait_http "${BASE[$n]}/v2/" "ci:$ONE_TOKEN" 200 10 || { tail -n 30 "$d/out.log" >&2; die "$n: the ID token does not log in"; }
  log "portcullis $n pid ${PID[$n]} on ${BASE[$n]}"
}

jwks_fetches() { grep -c '^req GET /jwks.json' "$WORK/issuer.log" || true; }

login_round() { # TARGET ROUND
  local t=$1 r=$2 out=$WORK/wrk-$1-$2.txt c0 c1 on=cold script=() header=()
  case $t in
    bcrypt5) header=(-H "Authorization: Basic $(printf '%s' "bcrypt5:$PASS5" | base64 -w0)") ;;
    bcrypt10) header=(-H "Authorization: Basic $(printf '%s' "bcrypt10:$PASS10" | base64 -w0)") ;;
    idtoken) script=(-s "$ROOT/bench/oidc-tokens.lua"); on=warm ;;
    idcached) header=(-H "Authorization: Basic $(printf '%s' "ci:$ONE_TOKEN" | base64 -w0)"); on=warm ;;
    cached) header=(-H "Authorization: Basic $(printf '%s' "bcrypt10:$PASS10" | base64 -w0)"); on=warm ;;
  esac
  c0=$(cpu_ticks "${PID[$on]}")
  env TOKENS_FILE="$WORK/issuer/headers.txt" WRK_THREADS="$WRK_THREADS" timeout 120 \
    wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"$WRK_DURATION" --timeout 10s "${script[@]}" "${header[@]}" \
    "${BASE[$on]}/v2/" >"$out" 2>&1 || log "$t: wrk exited non-zero"
  c1=$(cpu_ticks "${PID[$on]}")
  local reqs rps non2xx
  wrk_stats "$out"; reqs=$REQS rps=$RPS non2xx=$NON2XX
  ((non2xx == 0)) || die "$t: $non2xx of $reqs logins were refused (a wrong credential measures nothing)"
  if [[ $t == idtoken ]] && ((reqs > TOKENS)); then
    log "$t: $reqs requests for $TOKENS tokens: some logins were cached (raise TOKENS)"
  fi
  rec "$t" "$r" logins_per_s "$rps"
  rec "$t" "$r" requests "$reqs"
  rec "$t" "$r" proxy_cpu_us_per_login "$(calc "($c1 - $c0) / $CLK_TCK * 1e6 / $reqs")"
  log "$t r$r: $rps logins/s, $(calc "($c1 - $c0) / $CLK_TCK * 1e6 / $reqs") µs CPU each"
}

pull_round() { # TARGET ROUND
  local t=$1 r=$2 c0 c1 t0 t1 creds
  rm -rf "$WORK/pulled"
  case $t in
    basic) creds="bcrypt10:$PASS10" ;;
    idtoken) creds="ci:$ONE_TOKEN" ;;
  esac
  c0=$(cpu_ticks "${PID[warm]}"); t0=$(now)
  skopeo copy --quiet --src-cert-dir "$WORK/certdir" --src-creds "$creds" \
    "docker://${BASE[warm]#https://}/$REPO:latest" "dir:$WORK/pulled" \
    >"$WORK/skopeo-$t-$r.log" 2>&1 || { cat "$WORK/skopeo-$t-$r.log" >&2; die "$t: skopeo copy failed"; }
  t1=$(now); c1=$(cpu_ticks "${PID[warm]}")
  local got; got=$(du -cb "$WORK"/pulled/* | tail -1 | cut -f1)
  ((got >= IMAGE_BYTES)) || die "$t: pulled $got bytes of $IMAGE_BYTES"
  local gib; gib=$(calc "$IMAGE_BYTES / 1073741824")
  rec "$t" "$r" pull_s "$(calc "$t1 - $t0")"
  rec "$t" "$r" proxy_cpu_s_per_gib "$(calc "($c1 - $c0) / $CLK_TCK / $gib")"
  log "$t r$r: pull $(calc "$t1 - $t0") s, portcullis $(calc "($c1 - $c0) / $CLK_TCK / $gib") s CPU per GiB"
}

for c in wrk skopeo docker-registry htpasswd openssl curl node; do command -v $c >/dev/null || die "$c missing"; done
[[ -x $PORTCULLIS ]] || die "$PORTCULLIS missing (cargo build --release)"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
make_certs
make_users
start_issuer
start_registry
seed_image
start_portcullis cold "cache_size = 0"
start_portcullis warm ""
FETCHES_AT_START=$(jwks_fetches)

for ((r = 1; r <= ROUNDS; r++)); do
  for t in $(rotate "$r" bcrypt5 bcrypt10 idtoken idcached cached); do login_round "$t" "$r"; sleep 1; done
done
for ((r = 1; r <= PULL_ROUNDS; r++)); do
  for t in $(rotate "$r" basic idtoken); do pull_round "$t" "$r"; done
done
rec issuer 0 jwks_fetches_at_start "$FETCHES_AT_START"
rec issuer 0 jwks_fetches_at_end "$(jwks_fetches)"
for n in cold warm; do
  rec "$n" 0 log_error_lines "$(grep -cE ' (ERROR|WARN) |panicked' "$WORK/$n/out.log" || true)"
done

{
  echo "{\"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\", \"duration_s\": $(( $(date +%s) - T_START )),"
  echo " \"rounds\": $ROUNDS, \"wrk_args\": \"wrk -t$WRK_THREADS -c$WRK_CONNS -d$WRK_DURATION\", \"pull_rounds\": $PULL_ROUNDS, \"tokens\": $TOKENS,"
  echo " \"image\": \"$LAYERS layers x $LAYER_MIB MiB\", \"skopeo\": \"$(skopeo --version | awk '{print $3}')\","
  echo " \"cpu\": \"$(lscpu | awk -F': *' '/^Model name/{print $2; exit}')\", \"nproc\": $(nproc),"
  echo " \"loadavg_start\": \"$LOAD_START\", \"loadavg_end\": \"$(cut -d' ' -f1-3 /proc/loadavg)\","
  echo " \"git_head_at_run\": \"$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo none)\"}"
} >"$WORK/meta.json"
cp "$CSV_TMP" "$OUT/oidc.csv"; cp "$WORK/meta.json" "$OUT/oidc-meta.json"
"$PY" - "$OUT/oidc.csv" "$OUT/oidc-meta.json" <<'PY' | tee "$OUT/oidc-summary.md"
import csv, json, statistics, sys
from collections import defaultdict
vals = defaultdict(list)
for row in csv.DictReader(open(sys.argv[1])):
    vals[(row["target"], row["metric"])].append(float(row["value"]))
meta = json.load(open(sys.argv[2]))
med = lambda t, m: statistics.median(vals[(t, m)])
runs = lambda t, m: " ".join(f"{v:,.0f}" if v >= 100 else f"{v:.3g}" for v in vals[(t, m)])
print(f"Run {meta['date']}, {meta['duration_s']} s, {meta['nproc']} vCPU {meta['cpu']}, load {meta['loadavg_start']} → {meta['loadavg_end']}, at {meta['git_head_at_run']}.\n")
print(f"Logins, `{meta['wrk_args']}` GET /v2/, {meta['rounds']} interleaved rounds, medians:\n")
print("| credential | logins/s | × bcrypt cost 5 | × bcrypt cost 10 | portcullis CPU per request, µs | of which the login, µs | rounds (logins/s) |")
print("|---|---:|---:|---:|---:|---:|---|")
base = med("cached", "proxy_cpu_us_per_login")
for t, label in [("bcrypt5", "htpasswd bcrypt, cost 5, every login verified"), ("bcrypt10", "htpasswd bcrypt, cost 10, every login verified"),
                 ("idtoken", "ID token (ES256), a new one every request"), ("idcached", "ID token, the same one (verified once)"),
                 ("cached", "*reference: the same request, login cached*")]:
    r = med(t, "logins_per_s"); cpu = med(t, "proxy_cpu_us_per_login")
    login = "–" if t == "cached" else f"{max(cpu - base, 0):,.0f}"
    print(f"| {label} | {r:,.0f} | {r / med('bcrypt5', 'logins_per_s'):.1f} | {r / med('bcrypt10', 'logins_per_s'):.1f} | {cpu:,.0f} | {login} | {runs(t, 'logins_per_s')} |")
most = max(vals[("idtoken", "requests")])
print(f"\nThe new-token rows used {meta['tokens']:,} distinct tokens for at most {most:,.0f} requests a round "
      f"({'every login a cold verification' if most <= meta['tokens'] else 'the list wrapped: some were cached'}). "
      f"The issuer's JWKS was fetched {med('issuer', 'jwks_fetches_at_start'):.0f} times while the two proxies started and "
      f"{med('issuer', 'jwks_fetches_at_end') - med('issuer', 'jwks_fetches_at_start'):.0f} times during every login and pull of the run.")
print(f"\n`skopeo copy` ({meta['skopeo']}) of a {meta['image']} image to `dir:`, {meta['pull_rounds']} interleaved rounds, medians:\n")
print("| credential | pull, s | × Basic | portcullis CPU per GiB, s | × Basic | rounds (s) |")
print("|---|---:|---:|---:|---:|---|")
for t, label in [("basic", "Basic password (`--src-creds`, cached after one bcrypt)"), ("idtoken", "ID token (`--src-creds ci:TOKEN`)")]:
    print(f"| {label} | {med(t, 'pull_s'):.2f} | {med(t, 'pull_s') / med('basic', 'pull_s'):.2f} | "
          f"{med(t, 'proxy_cpu_s_per_gib'):.2f} | {med(t, 'proxy_cpu_s_per_gib') / med('basic', 'proxy_cpu_s_per_gib'):.2f} | {runs(t, 'pull_s')} |")
errs = sum(vals[(n, "log_error_lines")][0] for n in ("cold", "warm"))
print(f"\nERROR/WARN lines in the portcullis logs: {errs:.0f}.")
PY
log "done in $(( $(date +%s) - T_START )) s"
