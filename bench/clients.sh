#!/usr/bin/env bash
# Real clients through every target (issue 17): skopeo and the Docker engine
# pull and push a multi-layer image through
#
#   registry      registry:2 direct, plain HTTP (the floor)
#   nginx         distribution's "Authenticate proxy with nginx" recipe:
#                 HTTP/1.1, auth_basic, request bodies spooled to disk
#   nginx-tuned   the recipe + streaming (proxy_request_buffering off ...)
#   caddy         Debian's caddy 2.6: reverse_proxy + basicauth (bcrypt from
#                 `caddy hash-password`), TLS with our certificate, HTTP/2
#                 offered (the default), flush_interval -1, admin off
#   pingora-bare  examples/bare_proxy: Pingora + rustls, no auth, no filters
#   portcullis    htpasswd auth, access log off, level warn, metrics off
#
# (the proxies are defined in bench/targets.sh, shared with bench/run.sh).
# Per round, per target (the order rotates each round), per client:
#   skopeo pull   skopeo copy docker://HOST/bench/app:latest dir:FRESH_DIR
#   skopeo push   skopeo copy dir:SRC docker://HOST/push-T-R/app:latest
#   docker pull   docker rmi (all images), docker pull HOST/bench/app:latest
#   docker push   docker tag + docker push HOST/push-T-R-d/app:latest
#   curl          one BLOB_MIB blob: GET and monolithic PUT, each over
#                 --http1.1 and, where the target offers it, --http2
#                 (curl 7.88 negotiates h2 by ALPN, as Go's default
#                 transport does): the HTTP/2 rows, in the same rounds
# each in a fresh repository, measuring wall seconds, proxy CPU (of nginx
# master+workers, caddy, the binaries) per GiB moved, the registry's CPU per
# GiB, and the client's CPU (skopeo; dockerd + CLI). Proxy and registry CPU
# come from a cgroup per process (ns, bench/lib.sh's cpu_clock_*) where the
# machine allows one, else from /proc's 10 ms ticks, like the client's;
# meta's cpu_clock says which.
#
#   bash bench/clients.sh                # full run, see the estimate below
#   QUICK=1 bash bench/clients.sh        # smoke test (1 round, 2 x 8 MiB)
#   PORTCULLIS=/path/portcullis BARE=/path/bare_proxy bash bench/clients.sh
#
# Full run (ROUNDS=5, 6 x 48 MiB layers, 6 targets x 4 operations, plus
# curl's 2-4 transfers of one 256 MiB blob): about 12 min on 2 vCPUs, some
# 21 s per target and round, most of it the Docker engine's own work
# (gunzip + vfs copies on pull, gzip on push).
#
# Knobs (defaults in brackets):
#   ROUNDS [5]  LAYERS [6]  LAYER_MIB [48] (uncompressed tar content per
#   layer; layers are stored gzip'd, see "image" below)
#   TARGETS ["registry nginx nginx-tuned caddy pingora-bare portcullis"]
#   CLIENTS ["skopeo docker curl"]  BLOB_MIB [256] (the curl blob)
#   PORTCULLIS [${CARGO_TARGET_DIR:-target}/release/portcullis]
#   BARE [${CARGO_TARGET_DIR:-target}/release/examples/bare_proxy]
#   OUT [bench/results]  OP_TIMEOUT [900] (seconds per client command)
#   DOCKER [/usr/bin/docker, Debian's, else docker] (the CLI)
#   DOCKER_STORAGE [vfs] (the engine's storage driver; vfs copies every
#   lower layer on pull, some 1 GiB for the default image: overlay2 works on
#   an ext4 /tmp and takes that client cost out)
#   QUICK=1 (ROUNDS=1 LAYERS=2 LAYER_MIB=8)  KEEP_WORK=1 (keep the work dir)
#   NAME [clients] (the output files' prefix)
#   COUNT [cpu]: cpu, or instructions: the proxies run under valgrind's
#     callgrind and their cost is counted in instructions (G per GiB), which
#     do not move with the speed of a shared VM the way CPU seconds do (no
#     hardware counters here for perf stat). Only the targets pingora-bare
#     and portcullis (the default then), NAME [clients-instructions]; wall
#     times are then the slowed proxies' and mean nothing. A proxy runs some
#     50x slower under callgrind: ROUNDS=3 took 21 min with BLOB_MIB=64
#     here, 31 min with the default blob.
#
# Output: $OUT/$NAME.csv (target,round,metric,value; round 0: per-target
# facts), $OUT/$NAME-meta.json, and $OUT/$NAME-summary.md written by
# bench/clients_report.py (medians over rounds, ratios, the issue's targets).
#
# The image: LAYERS layers, each a tar of one file of LAYER_MIB MiB cut from
# the concatenated regular files of /usr/bin and /usr/lib (sorted by path):
# real executables and libraries, which gzip about as much as real image
# layers do (random data would make the engine's gzip on push a pure CPU
# burn with no gain, and text would compress far more than images do).
# Layers are gzip'd once (gzip -1 -n) and pushed straight to the registry as
# application/vnd.oci.image.layer.v1.tar+gzip with a config whose
# rootfs.diff_ids are the sha256 of the tars; so skopeo moves the exact
# bytes, docker pull gunzips, and docker push gzips again (Go's gzip, a real
# client cost the engine pays on every push; its own blobs, hence the bytes
# of docker push are taken from the manifest it pushed). The content depends
# on the machine's /usr: the meta file records the compressed size.
#
# Pitfalls handled here:
# - containers/image keeps a blob-info cache (/var/lib/containers/cache as
#   root) and would mount or skip blobs it has seen: every skopeo command
#   runs in a mount namespace of its own with an empty directory bound over
#   /var/lib/containers/cache (the machine's cache is never read or
#   written). skopeo push runs with --debug (without a terminal that is the
#   only record of what it did with each blob): a push that mounted or
#   skipped a blob ("mount OK", "Skipping blob"), or did not upload every
#   blob, is not counted.
# - the engine remembers where each layer came from (v2metadata under
#   DATA_ROOT/image/DRIVER/distribution) and would mount it cross-repository
#   instead of uploading: that directory is removed before every docker push
#   (the engine reads it from disk each time; without that, every layer is
#   "Mounted from bench/app") and the push output is checked: a push with a
#   layer not "Pushed" ("Mounted from", "Layer already exists") is not counted.
# - docker rmi of one tag keeps the layers while another tag holds them:
#   every image is removed (by ID, -f) before each docker pull.
# - the engine treats 127.0.0.0/8 registries as insecure: it tries HTTPS
#   without verifying (certs.d is written anyway) and falls back to HTTP
#   (the registry direct: one failed TLS attempt per command).
# - the registry answers relative upload Locations (relativeurls): bare
#   Pingora rewrites nothing, so absolute http:// Locations would break its
#   pushes; the same registry serves every target.
# - neither skopeo 1.9 nor the engine (20.10) sends ALPN at all (Go's
#   transport offers h2 only by default, and both bring their own TLS
#   config): both speak HTTP/1.1 to every target, h2 or not. The script
#   checks it with an openssl s_server probe (what each client offers) and
#   curl --http2 (what each target selects) and records the version used
#   (http_version_*).
# - dockerd runs with a daemon.json of its own (the machine's is not read;
#   its key goes to the work dir, not /etc/docker/key.json); the certs.d
#   entries it is given are removed on exit.
# - with the image's size, the wall time of the docker operations is mostly
#   the client's (gzip on push, gunzip + storage on pull): the proxies'
#   differences show in their CPU per GiB far more than in wall time.
#
# Everything listens on 127.0.0.1 only; nothing leaves the machine.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ ${QUICK:-0} == 1 ]]; then ROUNDS=${ROUNDS:-1}; LAYERS=${LAYERS:-2}; LAYER_MIB=${LAYER_MIB:-8}; BLOB_MIB=${BLOB_MIB:-16}; fi
ROUNDS=${ROUNDS:-5}
LAYERS=${LAYERS:-6}
LAYER_MIB=${LAYER_MIB:-48}
COUNT=${COUNT:-cpu}
case $COUNT in
  cpu) TARGETS=${TARGETS:-"registry nginx nginx-tuned caddy pingora-bare portcullis"}; NAME=${NAME:-clients} ;;
  instructions)
    TARGETS=${TARGETS:-"pingora-bare portcullis"}; NAME=${NAME:-clients-instructions}
    for t in $TARGETS; do
      [[ $t == pingora-bare || $t == portcullis ]] || { echo "COUNT=instructions: target $t cannot run under callgrind here" >&2; exit 2; }
    done
    if ! command -v valgrind >/dev/null || ! command -v callgrind_control >/dev/null; then
      echo "COUNT=instructions needs valgrind (apt-get install valgrind)" >&2; exit 2
    fi
    # the callgrind files go to the work dir, one per process (%p), with a
    # dump (.1, .2, ...) per measured command: proxy_count reads them
    START_WAIT=${START_WAIT:-180} ;;
  *) echo "COUNT is cpu or instructions, not $COUNT" >&2; exit 2 ;;
esac
CLIENTS=${CLIENTS:-"skopeo docker curl"}
BLOB_MIB=${BLOB_MIB:-256}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
PORTCULLIS=${PORTCULLIS:-$TARGET_DIR/release/portcullis}
BARE=${BARE:-$TARGET_DIR/release/examples/bare_proxy}
OUT=${OUT:-$ROOT/bench/results}
OP_TIMEOUT=${OP_TIMEOUT:-900}
# Debian's docker.io CLI if there (another one may come first on PATH)
if [[ -z ${DOCKER:-} ]]; then
  if [[ -x /usr/bin/docker ]]; then DOCKER=/usr/bin/docker; else DOCKER=docker; fi
fi
DOCKER_STORAGE=${DOCKER_STORAGE:-vfs}
PY=${PYTHON:-python3}

BENCH_USER=bench
BENCH_PASS=bench-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
REPO=bench/app
OCI_MANIFEST=application/vnd.oci.image.manifest.v1+json
DOCKER_MANIFEST=application/vnd.docker.distribution.manifest.v2+json
CLK_TCK=$(getconf CLK_TCK)
T_START=$(date +%s)
CERTS_D=/etc/docker/certs.d
CACHE_MNT=/var/lib/containers/cache   # containers/image's blob-info cache as root

# in /tmp whatever TMPDIR says: containerd's socket path must stay short
WORK=$(mktemp -d /tmp/portcullis-clients.XXXXXX)
chmod 755 "$WORK"          # nginx workers (user nobody) read the htpasswd file
mkdir -p "$OUT" "$WORK/tmp"
rm -f "$OUT/$NAME"-last-*.log   # the logs of a previous run's failures
CSV_TMP=$WORK/results.csv
echo "target,round,metric,value" >"$CSV_TMP"

declare -A PID PORT BASE LOG_FROM
REG_PID=""
DOCKERD_PID=""
D=$WORK/dockerd
TRUSTED=()          # certs.d entries written by this run
CREATED_DIRS=()     # directories outside $WORK this run created (removed if empty)

# log die calc now rec free_port cpu_ticks wait_http rotate push_blob
# shellcheck source=bench/lib.sh disable=SC1091
source "$ROOT/bench/lib.sh"
if [[ $COUNT == instructions ]]; then
  # shellcheck disable=SC2034 # read by bench/targets.sh
  PROXY_WRAP=$(callgrind_wrap "$WORK")
fi
# make_certs make_htpasswd start_nginx start_caddy start_portcullis start_bare
# shellcheck source=bench/targets.sh disable=SC1091
source "$ROOT/bench/targets.sh"

stop_dockerd() {
  [[ -n $DOCKERD_PID ]] || return 0
  local i
  kill "$DOCKERD_PID" 2>/dev/null || true
  for ((i = 0; i < 200; i++)); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$DOCKERD_PID" 2>/dev/null; then
    log "dockerd did not stop within 20 s: SIGKILL"; kill -9 "$DOCKERD_PID" 2>/dev/null || true
  fi
  wait "$DOCKERD_PID" 2>/dev/null || true
  DOCKERD_PID=""
  # what it left mounted under its directory (the deepest first)
  local m
  awk -v r="$D/" 'index($2, r) == 1 {print $2}' /proc/self/mounts | awk '{print length, $0}' | sort -rn | cut -d' ' -f2- |
    while read -r m; do umount --lazy "$m" 2>/dev/null || log "umount $m failed"; done
}

cleanup() {
  local rc=$? t p
  set +e
  stop_dockerd
  for t in "${!PID[@]}"; do [[ -n ${PID[$t]:-} ]] && kill "${PID[$t]}" 2>/dev/null; done
  [[ -n $REG_PID ]] && kill "$REG_PID" 2>/dev/null
  sleep 0.5
  for t in "${!PID[@]}"; do [[ -n ${PID[$t]:-} ]] && kill -9 "${PID[$t]}" 2>/dev/null; done
  [[ -n $REG_PID ]] && kill -9 "$REG_PID" 2>/dev/null
  wait 2>/dev/null
  cpu_clock_cleanup
  for p in "${TRUSTED[@]}"; do rm -rf "$p"; done
  for ((t = ${#CREATED_DIRS[@]} - 1; t >= 0; t--)); do rmdir "${CREATED_DIRS[$t]}" 2>/dev/null; done
  if [[ ${KEEP_WORK:-0} == 1 ]]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- helpers
# pids of a target's proxy: nginx master + its workers; others: the pid
proxy_pids() {
  local t=$1 p=${PID[$1]:-}
  [[ -z $p ]] && return 0
  echo "$p"
  if [[ $t == nginx* ]]; then pgrep -P "$p" || true; fi
}
# CPU ns of a target's proxy (bench/lib.sh's cpu_ns: its cgroup, else ticks)
proxy_ns() { [[ $1 == registry ]] && { echo 0; return; }; local p; mapfile -t p < <(proxy_pids "$1"); cpu_ns "$1" "${p[@]}"; }
# COUNT=instructions: the instructions the proxy has run so far. callgrind
# writes the counts since its last dump to a new file on every dump, so
# their sum is the whole process's.
proxy_instructions() {
  [[ $1 == registry ]] && { echo 0; return; }
  local pid=${PID[$1]}
  callgrind_control --dump "$pid" >/dev/null 2>&1 || { log "callgrind_control --dump $pid ($1) failed"; echo 0; return; }
  # (%.0f: mawk's %d stops at 2^31-1, some 2 s of a proxy's instructions)
  cat "$WORK/callgrind.$pid".* 2>/dev/null | awk '$1 == "totals:" {s += $2} END {printf "%.0f\n", s}'
}
# the proxy's cost so far: CPU ns, or instructions (COUNT)
proxy_count() { if [[ $COUNT == instructions ]]; then proxy_instructions "$1"; else proxy_ns "$1"; fi; }
dockerd_ticks() {
  [[ -n $DOCKERD_PID ]] || { echo 0; return; }
  local p; mapfile -t p < <(pgrep -P "$DOCKERD_PID" || true); cpu_ticks "$DOCKERD_PID" "${p[@]}"
}
# CPU ticks of this shell's waited-for children (cutime + cstime), no fork
child_ticks() { local f; read -r -a f </proc/$$/stat; echo $((f[15] + f[16])); }
host_of() { echo "127.0.0.1:${PORT[$1]}"; }
# mkdir -p that remembers which directories it created
mkdir_tracked() {
  local d=$1 missing=()
  while [[ ! -d $d ]]; do missing=("$d" "${missing[@]}"); d=$(dirname "$d"); done
  for d in "${missing[@]}"; do mkdir "$d" && CREATED_DIRS+=("$d"); done
}
# head_manifest REPO ACCEPT: HTTP status of a HEAD straight to the registry
head_manifest() {
  curl -s -I -o /dev/null -w '%{http_code}' -H "Accept: $2" --max-time 30 "${BASE[registry]}/v2/$1/manifests/latest" || echo 000
}

# ---------------------------------------------------------------- registry
# registry:2 with relative Locations (bench/lib.sh's start_registry, plus
# relativeurls: see the pitfalls above); sets REG, REG_PID, PORT/BASE[registry]
start_client_registry() {
  REG_RELATIVE=1 start_registry
  PORT[registry]=${REG##*:}; BASE[registry]=$REG
  log "registry pid $REG_PID on $REG"
}

# ---------------------------------------------------------------- image
# LAYERS tar layers of LAYER_MIB MiB from /usr (see the header), gzip'd,
# pushed to the registry as bench/app:latest with an OCI manifest. Sets
# DIGESTS (of the gzip'd layers), DIFF_IDS, IMAGE_BYTES (layers + config +
# manifest, what a pull moves), IMAGE_RAW_BYTES (the tars).
seed_client_image() {
  local bytes=$((LAYER_MIB * 1024 * 1024)) total i f tarf gz digest diff size layers="" diffs=""
  total=$((LAYERS * bytes))
  log "image: $LAYERS layers x $LAYER_MIB MiB of /usr/bin + /usr/lib files, gzip -1"
  mkdir -p "$WORK/image"
  # the first TOTAL bytes of the files in path order (head closes the pipe)
  { find /usr/bin /usr/lib -type f -size +0 -print0 2>/dev/null | sort -z | xargs -0 cat 2>/dev/null || true; } \
    | head -c "$total" >"$WORK/image/content" || true
  size=$(stat -c %s "$WORK/image/content")
  if ((size < total)); then
    log "only $size bytes in /usr: topping up with random data"
    head -c $((total - size)) /dev/urandom >>"$WORK/image/content"
  fi
  DIGESTS=(); DIFF_IDS=(); IMAGE_BYTES=0; IMAGE_RAW_BYTES=0
  for ((i = 0; i < LAYERS; i++)); do
    mkdir -p "$WORK/image/l$i"
    f=$WORK/image/l$i/layer$i.bin
    dd if="$WORK/image/content" of="$f" bs=1M skip=$((i * LAYER_MIB)) count="$LAYER_MIB" status=none
    tarf=$WORK/image/layer$i.tar; gz=$tarf.gz
    tar -C "$WORK/image/l$i" --owner=0 --group=0 --numeric-owner --mtime=@0 --mode=0644 -cf "$tarf" "layer$i.bin"
    rm -rf "$WORK/image/l$i"
    diff=sha256:$(sha256sum "$tarf" | cut -d' ' -f1)
    IMAGE_RAW_BYTES=$((IMAGE_RAW_BYTES + $(stat -c %s "$tarf")))
    gzip -1 -n -c "$tarf" >"$gz"; rm -f "$tarf"
    digest=sha256:$(sha256sum "$gz" | cut -d' ' -f1); size=$(stat -c %s "$gz")
    push_blob "$REPO" "$gz" "$digest"
    rm -f "$gz"
    DIGESTS+=("$digest"); DIFF_IDS+=("$diff")
    IMAGE_BYTES=$((IMAGE_BYTES + size))
    layers+="${layers:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"$digest\",\"size\":$size}"
    diffs+="${diffs:+,}\"$diff\""
  done
  rm -f "$WORK/image/content"
  printf '{"architecture":"%s","os":"linux","created":"1970-01-01T00:00:00Z","config":{},"rootfs":{"type":"layers","diff_ids":[%s]}}' \
    "$(dpkg --print-architecture 2>/dev/null || echo amd64)" "$diffs" >"$WORK/image/config.json"
  digest=sha256:$(sha256sum "$WORK/image/config.json" | cut -d' ' -f1); size=$(stat -c %s "$WORK/image/config.json")
  push_blob "$REPO" "$WORK/image/config.json" "$digest"
  CONFIG_DIGEST=$digest
  printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[%s]}' \
    "$OCI_MANIFEST" "$digest" "$size" "$layers" >"$WORK/image/manifest.json"
  local code
  code=$(curl -s -X PUT -H "Content-Type: $OCI_MANIFEST" --data-binary @"$WORK/image/manifest.json" \
    -o /dev/null -w '%{http_code}' "$REG/v2/$REPO/manifests/latest")
  [[ $code == 201 ]] || die "seed manifest -> $code"
  IMAGE_BYTES=$((IMAGE_BYTES + size + $(stat -c %s "$WORK/image/manifest.json")))
  log "image: $(calc "$IMAGE_BYTES / 1048576") MiB gzip'd ($(calc "$IMAGE_RAW_BYTES / 1048576") MiB of tars)"
}

# ---------------------------------------------------------------- skopeo
# skopeo ARGS... in a mount namespace with a fresh, empty blob-info cache
SKOPEO_NS=1
skopeo_fresh() {
  local cache=$WORK/skopeo-cache
  rm -rf "$cache" "$WORK/skopeo-home/.local/share/containers/cache"; mkdir -p "$cache" "$WORK/skopeo-home"
  if [[ $SKOPEO_NS == 1 ]]; then
    # shellcheck disable=SC2016
    HOME=$WORK/skopeo-home TMPDIR=$WORK/tmp timeout "$OP_TIMEOUT" \
      unshare --mount --propagation private sh -c 'mount --bind "$0" "$1" && shift && exec skopeo "$@"' \
      "$cache" "$CACHE_MNT" --insecure-policy "$@"
  else
    rm -f "$CACHE_MNT/blob-info-cache-v1.boltdb" "$CACHE_MNT/blob-info-cache-v1.sqlite"
    HOME=$WORK/skopeo-home TMPDIR=$WORK/tmp timeout "$OP_TIMEOUT" skopeo --insecure-policy "$@"
  fi
}
# TLS options of a target for skopeo: src|dest
skopeo_tls() {
  if [[ $1 == registry ]]; then echo "--$2-tls-verify=false"; else echo "--$2-cert-dir=$WORK/certs"; fi
}

# verify_dir DIR: the dir: copy holds the seeded blobs with the right digests
verify_dir() {
  local d=$1 x
  for x in "${DIGESTS[@]}" "$CONFIG_DIGEST"; do
    [[ -f $d/${x#sha256:} ]] || { log "verify: $x missing in $d"; return 1; }
    [[ sha256:$(sha256sum "$d/${x#sha256:}" | cut -d' ' -f1) == "$x" ]] || { log "verify: $x corrupt in $d"; return 1; }
  done
}

# ---------------------------------------------------------------- docker
# the CLI against our engine: dk (housekeeping, 120 s) and dk_op (measured)
docker_env() {
  env -u DOCKER_CONTEXT -u DOCKER_TLS_VERIFY -u DOCKER_CERT_PATH \
    DOCKER_HOST="unix://$D/sock" DOCKER_CONFIG="$WORK/docker-config" DOCKER_BUILDKIT=0 "$@"
}
dk()    { docker_env timeout 120 "$DOCKER" "$@"; }
dk_op() { docker_env timeout "$OP_TIMEOUT" "$DOCKER" "$@"; }
start_dockerd() {
  mkdir -p "$D" "$WORK/docker-config"
  # a config file of its own: the machine's /etc/docker/daemon.json is not
  # read, and the engine's key goes here, not to /etc/docker/key.json
  printf '{"deprecated-key-path": "%s"}\n' "$D/key.json" >"$D/daemon.json"
  dockerd --config-file "$D/daemon.json" --data-root "$D/root" --exec-root "$D/exec" --storage-driver "$DOCKER_STORAGE" \
    --iptables=false --ip6tables=false --bridge=none --host "unix://$D/sock" --pidfile "$D/pid" \
    >"$D/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  local i
  for ((i = 0; i < 600; i++)); do
    kill -0 "$DOCKERD_PID" 2>/dev/null || { tail -n 20 "$D/dockerd.log" >&2; die "dockerd exited while starting"; }
    if [[ -S $D/sock ]] && docker_env timeout 10 "$DOCKER" version >/dev/null 2>&1; then break; fi
    sleep 0.1
  done
  ((i < 600)) || { tail -n 20 "$D/dockerd.log" >&2; die "dockerd did not answer within 60 s"; }
  log "dockerd pid $DOCKERD_PID ($DOCKER_STORAGE) ready in $((i / 10)) s"
}
# where the engine keeps the layers' origins (v2metadata, diffid-by-digest)
distribution_dir() { echo "$D/root/image/$DOCKER_STORAGE/distribution"; }
docker_rmi_all() {
  local ids
  ids=$(dk images -aq | sort -u | tr '\n' ' ')
  if [[ -n ${ids// /} ]]; then
    # shellcheck disable=SC2086
    dk rmi -f $ids >/dev/null 2>&1 || true
  fi
}

# ---------------------------------------------------------------- one measured command
# measure LOGFILE CMD...: runs CMD (bounded by its own timeout) and sets
# M_WALL (s), the CPU ns (COUNT=instructions: instructions) M_PROXY of
# target M_T, the CPU ns M_REG of the registry, and
# the ticks M_CLIENT (this shell's children, i.e. skopeo or the docker CLI,
# + dockerd and its children); returns CMD's status
measure() {
  local lf=$1; shift
  local c0 c1 g0 g1 k0 k1 d0 d1 t0 t1 rc=0
  c0=$(proxy_count "$M_T"); g0=$(cpu_ns registry "$REG_PID"); d0=$(dockerd_ticks)
  k0=$(child_ticks); t0=$(now)
  "$@" >"$lf" 2>&1 || rc=$?
  t1=$(now); k1=$(child_ticks)
  c1=$(proxy_count "$M_T"); g1=$(cpu_ns registry "$REG_PID"); d1=$(dockerd_ticks)
  M_WALL=$(calc "$t1 - $t0"); M_PROXY=$((c1 - c0)); M_REG=$((g1 - g0)); M_CLIENT=$((k1 - k0 + d1 - d0))
  if [[ $rc != 0 ]]; then
    log "$M_T $M_OP FAILED (rc $rc), last lines:"; tail -n 5 "$lf" | cut -c1-300 >&2
    cp "$lf" "$OUT/$NAME-last-$M_T-$M_OP.log" 2>/dev/null || true
  fi
  return "$rc"
}
# record_op TARGET ROUND OP BYTES: the rows of the last measure
record_op() {
  local t=$1 r=$2 op=$3 bytes=$4 gib
  gib=$(calc "$bytes / 1073741824")
  rec "$t" "$r" "${op}_wall_s" "$M_WALL"
  if [[ $t != registry ]]; then
    local unit=cpu_s; [[ $COUNT == instructions ]] && unit=ginstr   # ns or instructions, /1e9 either way
    rec "$t" "$r" "${op}_proxy_$unit" "$(calc "$M_PROXY / 1e9")"
    rec "$t" "$r" "${op}_proxy_${unit}_per_gib" "$(calc "$M_PROXY / 1e9 / $gib")"
  fi
  rec "$t" "$r" "${op}_registry_cpu_s_per_gib" "$(calc "$M_REG / 1e9 / $gib")"
  rec "$t" "$r" "${op}_client_cpu_s" "$(calc "$M_CLIENT / $CLK_TCK")"
  rec "$t" "$r" "${op}_bytes" "$bytes"
  log "$t r$r $op: $M_WALL s, $(calc "$bytes / 1048576 / $M_WALL") MiB/s, proxy $(calc "$M_PROXY / 1e9") $([[ $COUNT == instructions ]] && echo G instructions || echo CPU s), CPU s: registry $(calc "$M_REG / 1e9"), client $(calc "$M_CLIENT / $CLK_TCK")"
}

declare -A VERIFIED
op_skopeo_pull() {
  local t=$1 r=$2 dir=$WORK/pull-$1-$2
  M_T=$t; M_OP=skopeo_pull
  rm -rf "$dir"
  # shellcheck disable=SC2046
  if measure "$WORK/op.log" skopeo_fresh copy $(skopeo_tls "$t" src) --src-creds "$BENCH_USER:$BENCH_PASS" \
    "docker://$(host_of "$t")/$REPO:latest" "dir:$dir"; then
    record_op "$t" "$r" skopeo_pull "$IMAGE_BYTES"
    rec "$t" "$r" skopeo_pull_ok 1
    if [[ -z ${VERIFIED[$t-skopeo]:-} ]]; then
      VERIFIED[$t-skopeo]=1
      if verify_dir "$dir"; then rec "$t" 0 verify_skopeo_pull_ok 1; else rec "$t" 0 verify_skopeo_pull_ok 0; fi
    fi
  else
    rec "$t" "$r" skopeo_pull_ok 0
  fi
  rm -rf "$dir"
}
op_skopeo_push() {
  local t=$1 r=$2 repo=push-$1-$2/app n up
  M_T=$t; M_OP=skopeo_push
  # --debug: without a terminal, the log of what it did with each blob
  # shellcheck disable=SC2046
  if ! measure "$WORK/op.log" skopeo_fresh --debug copy $(skopeo_tls "$t" dest) --dest-creds "$BENCH_USER:$BENCH_PASS" \
    "dir:$WORK/src" "docker://$(host_of "$t")/$repo:latest"; then
    rec "$t" "$r" skopeo_push_ok 0; return 0
  fi
  n=$(grep -cE 'Skipping blob|mount OK' "$WORK/op.log" || true)
  up=$(grep -c 'Upload of layer .* complete' "$WORK/op.log" || true)
  rec "$t" "$r" skopeo_push_reused_blobs "$n"
  if [[ $n != 0 || $up != $((LAYERS + 1)) ]]; then
    log "$t r$r skopeo push: $up blobs uploaded, $n reused (want $((LAYERS + 1)) and 0): not counted"
    rec "$t" "$r" skopeo_push_ok 0; return 0
  fi
  if [[ $(head_manifest "$repo" "$OCI_MANIFEST") != 200 ]]; then
    rec "$t" "$r" skopeo_push_ok 0; log "$t r$r skopeo push: manifest not in the registry"; return 0
  fi
  record_op "$t" "$r" skopeo_push "$IMAGE_BYTES"
  rec "$t" "$r" skopeo_push_ok 1
}
op_docker_pull() {
  local t=$1 r=$2 img
  M_T=$t; M_OP=docker_pull
  img=$(host_of "$t")/$REPO:latest
  docker_rmi_all
  rm -rf "$(distribution_dir)"
  if ! measure "$WORK/op.log" dk_op pull "$img"; then rec "$t" "$r" docker_pull_ok 0; return 0; fi
  record_op "$t" "$r" docker_pull "$IMAGE_BYTES"
  rec "$t" "$r" docker_pull_ok 1
  if [[ -z ${VERIFIED[$t-docker]:-} ]]; then
    VERIFIED[$t-docker]=1
    local got want
    got=$(dk image inspect --format '{{range .RootFS.Layers}}{{.}} {{end}}' "$img" 2>/dev/null || true)
    want="${DIFF_IDS[*]} "
    if [[ $got == "$want" ]]; then rec "$t" 0 verify_docker_pull_ok 1
    else rec "$t" 0 verify_docker_pull_ok 0; log "$t docker pull: layers '$got', want '$want'"; fi
  fi
}
op_docker_push() {
  local t=$1 r=$2 src dst repo=push-$1-$2-d/app pushed mounted exists bytes code
  M_T=$t; M_OP=docker_push
  src=$(host_of "$t")/$REPO:latest; dst=$(host_of "$t")/$repo:latest
  if ! dk image inspect "$src" >/dev/null 2>&1; then
    log "$t r$r docker push: no image (the pull failed)"; rec "$t" "$r" docker_push_ok 0; return 0
  fi
  dk tag "$src" "$dst"
  rm -rf "$(distribution_dir)"
  if ! measure "$WORK/op.log" dk_op push "$dst"; then rec "$t" "$r" docker_push_ok 0; return 0; fi
  pushed=$(grep -c ': Pushed' "$WORK/op.log" || true)
  mounted=$(grep -c 'Mounted from' "$WORK/op.log" || true)
  exists=$(grep -c 'Layer already exists' "$WORK/op.log" || true)
  rec "$t" "$r" docker_push_pushed_layers "$pushed"
  rec "$t" "$r" docker_push_mounted_layers "$mounted"
  rec "$t" "$r" docker_push_existing_layers "$exists"
  if [[ $pushed != "$LAYERS" || $mounted != 0 || $exists != 0 ]]; then
    log "$t r$r docker push: $pushed pushed, $mounted mounted, $exists already there (want $LAYERS pushed): not counted"
    rec "$t" "$r" docker_push_ok 0; dk rmi "$dst" >/dev/null 2>&1 || true; return 0
  fi
  # the bytes moved: the engine's own gzip'd layers, its config and manifest
  code=$(head_manifest "$repo" "$DOCKER_MANIFEST, $OCI_MANIFEST")
  bytes=$(curl -s -H "Accept: $DOCKER_MANIFEST, $OCI_MANIFEST" --max-time 30 "${BASE[registry]}/v2/$repo/manifests/latest" |
    "$PY" -c 'import json,sys; m=sys.stdin.buffer.read(); j=json.loads(m); print(len(m) + j["config"]["size"] + sum(l["size"] for l in j["layers"]))' 2>/dev/null || echo 0)
  if [[ $code == 200 && $bytes != 0 ]]; then
    record_op "$t" "$r" docker_push "$bytes"
    rec "$t" "$r" docker_push_ok 1
  else
    rec "$t" "$r" docker_push_ok 0; log "$t r$r docker push: manifest not in the registry ($code)"
  fi
  dk rmi "$dst" >/dev/null 2>&1 || true
}

# ---------------------------------------------------------------- curl: one blob
# The HTTP/2 rows: curl moves one BLOB_MIB blob of random bytes (seeded
# as a blob of bench/app) over HTTP/1.1 and HTTP/2. A PUT is monolithic
# (POST, then PUT ?digest= with the whole body) into a fresh repository.
seed_curl_blob() {
  head -c $((BLOB_MIB * 1024 * 1024)) /dev/urandom >"$WORK/blob.bin"
  BLOB_DIGEST=sha256:$(sha256sum "$WORK/blob.bin" | cut -d' ' -f1)
  push_blob "$REPO" "$WORK/blob.bin" "$BLOB_DIGEST"
  BLOB_BYTES=$((BLOB_MIB * 1024 * 1024))
}
# curl_to TARGET ARGS...: curl with the target's trust and credentials
curl_to() {
  local t=$1; shift
  if [[ $t == registry ]]; then timeout "$OP_TIMEOUT" curl -s "$@"
  else timeout "$OP_TIMEOUT" curl -s --cacert "$WORK/ca.pem" -u "$BENCH_USER:$BENCH_PASS" "$@"; fi
}
# curl_done OP PROTO WANT: checks the last measured curl's status line and
# protocol (written by -w to $WORK/op.log)
curl_done() {
  local got; got=$(tail -n 1 "$WORK/op.log")
  [[ $got == "$3 $2" ]] && return 0
  log "$M_T $1: got '$got', want '$3 $2': not counted"
  return 1
}
op_curl_get() {
  local t=$1 r=$2 proto=$3 op=curl_get_h${3%.*}
  M_T=$t; M_OP=$op
  rm -f "$WORK/got.bin"
  if measure "$WORK/op.log" curl_to "$t" "--http$proto" -o "$WORK/got.bin" -w '%{http_code} %{http_version}\n' \
    "${BASE[$t]}/v2/$REPO/blobs/$BLOB_DIGEST" && curl_done "$op" "$proto" 200; then
    if [[ -z ${VERIFIED[$t-$op]:-} ]]; then
      VERIFIED[$t-$op]=1
      if [[ sha256:$(sha256sum "$WORK/got.bin" | cut -d' ' -f1) == "$BLOB_DIGEST" ]]; then rec "$t" 0 "verify_${op}_ok" 1
      else rec "$t" 0 "verify_${op}_ok" 0; log "$t $op: wrong bytes"; fi
    fi
    record_op "$t" "$r" "$op" "$BLOB_BYTES"
    rec "$t" "$r" "${op}_mibs" "$(calc "$BLOB_MIB / $M_WALL")"
    rec "$t" "$r" "${op}_ok" 1
  else
    rec "$t" "$r" "${op}_ok" 0
  fi
  rm -f "$WORK/got.bin"
}
op_curl_put() {
  local t=$1 r=$2 proto=$3 op=curl_put_h${3%.*} h=$WORK/curl-h.txt loc code
  M_T=$t; M_OP=$op
  code=$(curl_to "$t" --http1.1 -X POST -D "$h" -o /dev/null -w '%{http_code}' -H 'Content-Length: 0' \
    "${BASE[$t]}/v2/push-$t-$r-c$proto/blob/blobs/uploads/" || true)
  loc=$(grep -i '^location:' "$h" | tail -1 | cut -d' ' -f2- | tr -d '\r')
  if [[ $code != 202 || -z $loc ]]; then log "$t $op: POST -> $code"; rec "$t" "$r" "${op}_ok" 0; return 0; fi
  [[ $loc == /* ]] && loc=${BASE[$t]}$loc
  [[ $loc == *\?* ]] && loc="$loc&digest=$BLOB_DIGEST" || loc="$loc?digest=$BLOB_DIGEST"
  if measure "$WORK/op.log" curl_to "$t" "--http$proto" -X PUT -T "$WORK/blob.bin" -H 'Content-Type: application/octet-stream' \
    -H 'Expect:' -o /dev/null -w '%{http_code} %{http_version}\n' "$loc" && curl_done "$op" "$proto" 201; then
    record_op "$t" "$r" "$op" "$BLOB_BYTES"
    rec "$t" "$r" "${op}_mibs" "$(calc "$BLOB_MIB / $M_WALL")"
    rec "$t" "$r" "${op}_ok" 1
  else
    rec "$t" "$r" "${op}_ok" 0
  fi
}

# ---------------------------------------------------------------- probes
# probe_client_alpn CLIENT: what the client offers in ALPN, seen by an
# openssl s_server it is sent to; sets CLIENT_ALPN (h2, or http/1.1 when it
# offers no h2), CLIENT_REQUEST (its first request line) and CLIENT_CIPHER
declare -A CLIENT_ALPN CLIENT_REQUEST CLIENT_CIPHER
probe_client_alpn() {
  local c=$1 port f=$WORK/alpn-$1.log fifo=$WORK/alpn-$1.fifo sp cp i hold
  port=$(free_port)
  # s_server quits at EOF on stdin: give it a FIFO this shell holds open
  mkfifo "$fifo"
  openssl s_server -naccept 1 -accept "127.0.0.1:$port" -cert "$WORK/cert.pem" -key "$WORK/key.pem" \
    -alpn h2,http/1.1 <"$fifo" >"$f" 2>&1 &
  sp=$!
  exec {hold}>"$fifo"
  for ((i = 0; i < 50; i++)); do grep -q ACCEPT "$f" 2>/dev/null && break; sleep 0.1; done
  case $c in
    skopeo) HOME=$WORK/skopeo-home timeout 20 skopeo --insecure-policy inspect --raw --tls-verify=false \
              "docker://127.0.0.1:$port/probe/app:latest" >/dev/null 2>&1 & ;;
    docker) dk pull "127.0.0.1:$port/probe/app:latest" >/dev/null 2>&1 & ;;
  esac
  cp=$!
  # the first request line is all it takes: then let the client fail
  for ((i = 0; i < 200; i++)); do grep -aqE '^(GET|HEAD|POST) ' "$f" && break; sleep 0.1; done
  kill "$sp" 2>/dev/null || true; wait "$sp" 2>/dev/null || true
  exec {hold}>&-
  wait "$cp" 2>/dev/null || true
  rm -f "$fifo"
  if grep -q 'ALPN protocols advertised by the client:.*h2' "$f"; then CLIENT_ALPN[$c]=h2; else CLIENT_ALPN[$c]=http/1.1; fi
  CLIENT_REQUEST[$c]=$(grep -a -m1 -E '^(GET|HEAD|POST) ' "$f" | tr -d '\r' || true)
  CLIENT_CIPHER[$c]=$(awk '/^CIPHER is/ {print $3}' "$f")
  log "client $c offers ${CLIENT_ALPN[$c]} in ALPN (first request '${CLIENT_REQUEST[$c]}', cipher ${CLIENT_CIPHER[$c]:-?})"
}

# ---------------------------------------------------------------- main
for c in docker-registry nginx caddy skopeo dockerd "$DOCKER" htpasswd openssl curl unshare gzip tar; do
  command -v "$c" >/dev/null || die "$c missing (apt-get install -y --no-install-recommends nginx caddy skopeo docker.io docker-registry apache2-utils)"
done
[[ $(id -u) == 0 ]] || die "run as root (dockerd, /etc/docker/certs.d, mount namespaces)"
for c in $CLIENTS; do [[ $c == skopeo || $c == docker || $c == curl ]] || die "unknown client $c"; done

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
if awk -v l="${LOAD_START%% *}" -v n="$(nproc)" 'BEGIN{exit !(l > n / 2)}'; then
  log "WARNING: load average is $LOAD_START before starting: results will be noisy"
fi

log "fixtures: CA + certificate, htpasswd"
make_certs
make_htpasswd
mkdir -p "$WORK/certs"; cp "$WORK/ca.pem" "$WORK/certs/ca.crt"
start_client_registry
seed_client_image
if [[ " $CLIENTS " == *" curl "* ]]; then seed_curl_blob; fi

# the blob-info cache mount point (an empty directory; skopeo only ever sees
# the bound one), or else deleting the cache files before every command
if [[ ! -d $CACHE_MNT ]]; then mkdir_tracked "$CACHE_MNT"; fi
# shellcheck disable=SC2016
if ! unshare --mount --propagation private sh -c 'mount --bind "$0" "$1"' "$WORK/tmp" "$CACHE_MNT" 2>/dev/null; then
  log "WARNING: no mount namespace: deleting $CACHE_MNT/blob-info-cache-v1.* before every skopeo command instead"
  SKOPEO_NS=0
fi

# shellcheck disable=SC2034 # read by start_portcullis
PORTCULLIS_TOML_EXTRA=$'[metrics]\nenabled = false'
ACTIVE=()
for t in $TARGETS; do
  case $t in
    registry)     ACTIVE+=(registry) ;;
    nginx)        start_nginx nginx recipe; ACTIVE+=(nginx) ;;
    nginx-tuned)  start_nginx nginx-tuned tuned; ACTIVE+=(nginx-tuned) ;;
    caddy)        if start_caddy caddy; then ACTIVE+=(caddy); fi ;;
    portcullis)   if start_portcullis portcullis; then ACTIVE+=(portcullis); fi ;;
    pingora-bare) if start_bare; then ACTIVE+=(pingora-bare); fi ;;
    *) die "unknown target $t" ;;
  esac
done
log "targets: ${ACTIVE[*]}"
# each proxy (nginx: master + workers) and the registry in a cgroup of its
# own: CPU in ns rather than 10 ms ticks (bench/lib.sh)
cpu_clock_init
cpu_clock_join registry "$REG_PID"
for t in "${ACTIVE[@]}"; do
  [[ $t == registry ]] && continue
  mapfile -t pids < <(proxy_pids "$t"); cpu_clock_join "$t" "${pids[@]}"
done
# where each proxy's log is and how long it was when the proxy was ready
proxy_log() {
  case $1 in
    nginx*) echo "$WORK/$1/logs/error.log" ;;
    caddy) echo "$WORK/caddy/out.log" ;;
    portcullis|pingora-bare) echo "$WORK/$1/out.log" ;;
    registry) echo "$WORK/registry.log" ;;
  esac
}
for t in "${ACTIVE[@]}"; do
  f=$(proxy_log "$t"); LOG_FROM[$t]=$(wc -l <"$f" 2>/dev/null || echo 0)
done

# sanity: every target serves the seeded manifest's bytes
for t in "${ACTIVE[@]}"; do
  got=$(curl -s --cacert "$WORK/ca.pem" -u "$BENCH_USER:$BENCH_PASS" -H "Accept: $OCI_MANIFEST" \
    "${BASE[$t]}/v2/$REPO/manifests/latest" | sha256sum | cut -d' ' -f1)
  [[ $got == $(sha256sum <"$WORK/image/manifest.json" | cut -d' ' -f1) ]] || die "$t serves a different manifest"
done

if [[ " $CLIENTS " == *" docker "* ]]; then
  start_dockerd
  for t in "${ACTIVE[@]}"; do
    [[ $t == registry ]] && continue
    mkdir_tracked "$CERTS_D"
    mkdir -p "$CERTS_D/$(host_of "$t")"; TRUSTED+=("$CERTS_D/$(host_of "$t")")
    cp "$WORK/ca.pem" "$CERTS_D/$(host_of "$t")/ca.crt"
    if [[ $t != pingora-bare ]]; then
      printf '%s' "$BENCH_PASS" | dk login -u "$BENCH_USER" --password-stdin "$(host_of "$t")" >"$WORK/login.log" 2>&1 \
        || { cat "$WORK/login.log" >&2; die "docker login to $t failed"; }
    fi
  done
fi

# the HTTP version each client uses through each target: what the client
# offers in ALPN (s_server probe) and what the target picks (curl --http2)
for c in $CLIENTS; do
  if [[ $c == curl ]]; then CLIENT_ALPN[curl]=h2; else probe_client_alpn "$c"; fi
done
DOCKERD_LOG_FROM=$(wc -l <"$D/dockerd.log" 2>/dev/null || echo 0)   # the probe's errors are expected
declare -A SERVER_H2
for t in "${ACTIVE[@]}"; do
  if [[ $t == registry ]]; then SERVER_H2[$t]=1.1; else
    SERVER_H2[$t]=$(curl -s --http2 --cacert "$WORK/ca.pem" -u "$BENCH_USER:$BENCH_PASS" -o /dev/null \
      -w '%{http_version}' "${BASE[$t]}/v2/" || echo 0)
  fi
  rec "$t" 0 server_http_version_curl "${SERVER_H2[$t]}"
  for c in $CLIENTS; do
    v=1.1; [[ ${CLIENT_ALPN[$c]} == h2 && ${SERVER_H2[$t]} == 2 ]] && v=2
    rec "$t" 0 "http_version_$c" "$v"
  done
done

# the push source: a dir: copy of the image, straight from the registry
skopeo_fresh copy --src-tls-verify=false "docker://$(host_of registry)/$REPO:latest" "dir:$WORK/src" >"$WORK/src.log" 2>&1 \
  || { cat "$WORK/src.log" >&2; die "skopeo: preparing the push source failed"; }
verify_dir "$WORK/src" || die "the push source has the wrong blobs"

for ((r = 1; r <= ROUNDS; r++)); do
  log "===== round $r / $ROUNDS"
  for t in $(rotate "$r" "${ACTIVE[@]}"); do
    for c in $CLIENTS; do
      case $c in
        skopeo) op_skopeo_pull "$t" "$r"; op_skopeo_push "$t" "$r" ;;
        docker) op_docker_pull "$t" "$r"; op_docker_push "$t" "$r" ;;
        curl)
          for proto in 1.1 2; do
            [[ $proto == 2 && ${SERVER_H2[$t]} != 2 ]] && continue
            op_curl_get "$t" "$r" "$proto"; op_curl_put "$t" "$r" "$proto"
          done ;;
      esac
    done
  done
done

# errors and warnings the proxies logged while measured
for t in "${ACTIVE[@]}"; do
  f=$(proxy_log "$t")
  case $t in
    nginx*)       pe='\[(error|crit|alert|emerg)\]'; pw='\[warn\]' ;;
    caddy)        pe='"level":"(error|panic|fatal)"'; pw='"level":"warn"' ;;
    portcullis)   pe='ERROR|panic'; pw='WARN' ;;
    pingora-bare) pe='ERROR|panic'; pw='WARN' ;;
    # (the registry logs every 4xx, e.g. HEAD of a blob not yet pushed, at error)
    registry)     pe='level=(error|fatal|panic).*http.response.status=[^4]|level=(fatal|panic)|panic'; pw='level=warn' ;;
  esac
  ne=$(tail -n +"$((LOG_FROM[$t] + 1))" "$f" 2>/dev/null | grep -cE "$pe" || true)
  nw=$(tail -n +"$((LOG_FROM[$t] + 1))" "$f" 2>/dev/null | grep -cE "$pw" || true)
  rec "$t" 0 log_error_lines "${ne:-0}"
  rec "$t" 0 log_warn_lines "${nw:-0}"
  if [[ $t == nginx* ]]; then
    rec "$t" 0 nginx_temp_file_spills "$(grep -c 'buffered to a temporary file' "$f" 2>/dev/null || true)"
  fi
  if [[ $((${ne:-0} + ${nw:-0})) -gt 0 ]]; then
    log "$t: $ne error and $nw warning lines in its log, the last ones:"
    tail -n +"$((LOG_FROM[$t] + 1))" "$f" | grep -E "$pe|$pw" | tail -n 3 | cut -c1-300 >&2
  fi
  if [[ ${ne:-0} -gt 0 ]]; then cp "$f" "$OUT/$NAME-last-$t.log" 2>/dev/null || true; fi
done
if [[ -n $DOCKERD_PID ]]; then
  rec docker-engine 0 dockerd_log_error_lines "$(tail -n +"$((DOCKERD_LOG_FROM + 1))" "$D/dockerd.log" | grep -c 'level=error' || true)"
fi

# ---------------------------------------------------------------- metadata + report
json_str() { "$PY" -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1"; }
{
  echo "{"
  echo "  \"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\","
  echo "  \"duration_s\": $(( $(date +%s) - T_START )),"
  echo "  \"git\": $(json_str "$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo none)"),"
  echo "  \"rounds\": $ROUNDS, \"layers\": $LAYERS, \"layer_mib\": $LAYER_MIB, \"blob_mib\": $BLOB_MIB,"
  echo "  \"curl\": \"$(curl --version | awk 'NR==1{print $2}')\","
  echo "  \"image_bytes\": $IMAGE_BYTES, \"image_tar_bytes\": $IMAGE_RAW_BYTES,"
  echo "  \"layer_content\": \"the concatenated regular files of /usr/bin and /usr/lib in path order, gzip -1\","
  echo "  \"clients\": $(json_str "$CLIENTS"), \"targets\": [$(printf '"%s",' "${ACTIVE[@]}" | sed 's/,$//')],"
  echo "  \"cpu\": $(json_str "$(lscpu | awk -F': *' '/^Model name/{print $2; exit}')"), \"nproc\": $(nproc),"
  echo "  \"kernel\": \"$(uname -r)\", \"os\": $(json_str "$(sed -n 's/^PRETTY_NAME=//p' /etc/os-release | tr -d '"')"),"
  echo "  \"loadavg_start\": \"$LOAD_START\", \"loadavg_end\": \"$(cut -d' ' -f1-3 /proc/loadavg)\","
  echo "  \"skopeo\": \"$(skopeo --version | awk '{print $NF}')\","
  if [[ -n $DOCKERD_PID ]]; then
    echo "  \"docker_cli\": \"$(dk version --format '{{.Client.Version}}' 2>/dev/null)\","
    echo "  \"docker_engine\": \"$(dk version --format '{{.Server.Version}}' 2>/dev/null)\", \"docker_storage\": \"$DOCKER_STORAGE\","
  fi
  echo "  \"nginx\": \"$(nginx -v 2>&1 | sed 's/.*: //')\","
  echo "  \"caddy\": $(json_str "$(caddy version 2>/dev/null | awk '{print $1}')"),"
  echo "  \"registry\": \"$(docker-registry --version | awk '{print $NF}')\","
  if [[ -n $CPU_CG_KIND ]]; then clock="cgroup $CPU_CG_KIND, ns"; else clock="ticks of 1/$CLK_TCK s"; fi
  echo "  \"cpu_clock\": \"$clock\","
  echo "  \"count\": \"$COUNT\","
  if [[ $COUNT == instructions ]]; then echo "  \"valgrind\": \"$(valgrind --version)\","; fi
  echo "  \"openssl\": \"$(openssl version | awk '{print $2}')\","
  if [[ -n ${PID[portcullis]:-} ]]; then
    echo "  \"portcullis_binary\": \"$(sha256sum "$PORTCULLIS" | cut -c1-16) $(date -u -r "$PORTCULLIS" +%Y-%m-%dT%H:%M:%SZ)\","
  fi
  if [[ -n ${PID[pingora-bare]:-} ]]; then
    echo "  \"bare_binary\": \"$(sha256sum "$BARE" | cut -c1-16) $(date -u -r "$BARE" +%Y-%m-%dT%H:%M:%SZ)\","
  fi
  echo "  \"client_alpn\": {$(for c in $CLIENTS; do printf '"%s": "%s", ' "$c" "${CLIENT_ALPN[$c]}"; done | sed 's/, $//')},"
  echo "  \"client_tls_cipher\": {$(for c in $CLIENTS; do printf '"%s": "%s", ' "$c" "${CLIENT_CIPHER[$c]:-}"; done | sed 's/, $//')},"
  echo "  \"client_first_request\": {$(for c in $CLIENTS; do printf '"%s": %s, ' "$c" "$(json_str "${CLIENT_REQUEST[$c]:-}")"; done | sed 's/, $//')},"
  cost_h=$(cut -d'$' -f3 "$WORK/htpasswd"); cost_c=$(grep -oE '[$]2[aby][$][0-9]+' "$WORK/caddy/Caddyfile" 2>/dev/null | cut -d'$' -f3 || true)
  echo "  \"bcrypt_cost\": {\"htpasswd\": $((10#$cost_h)), \"caddy\": ${cost_c:+$((10#$cost_c))}${cost_c:-null}}"
  echo "}"
} >"$WORK/meta.json"
"$PY" -c 'import json,sys; json.load(open(sys.argv[1]))' "$WORK/meta.json" || { cat "$WORK/meta.json" >&2; die "meta.json is not JSON"; }

cp "$CSV_TMP" "$OUT/$NAME.csv"
cp "$WORK/meta.json" "$OUT/$NAME-meta.json"
log "results: $OUT/$NAME.csv"
"$PY" "$ROOT/bench/clients_report.py" --csv "$OUT/$NAME.csv" --meta "$OUT/$NAME-meta.json" --out "$OUT/$NAME-summary.md"
log "done in $(( $(date +%s) - T_START )) s"
