# shellcheck shell=bash
# Helpers shared by the bench scripts (sourced; they set WORK, T_START,
# CSV_TMP and PY first). Everything listens on 127.0.0.1 only.

log()  { printf '[%4ds] %s\n' $(( $(date +%s) - T_START )) "$*" >&2; }
die()  { log "FATAL: $*"; exit 1; }
calc() { awk "BEGIN { printf \"%.6g\", $* }"; }
now()  { date +%s.%N; }
rec()  { echo "$1,$2,$3,$4" >>"$CSV_TMP"; }

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# user+system CPU ticks of the PIDs
cpu_ticks() {
  local sum=0 p f
  for p in "$@"; do
    [[ -r /proc/$p/stat ]] || continue
    f=$(sed 's/^.*) //' "/proc/$p/stat"); set -- $f
    sum=$(( sum + ${12} + ${13} ))
  done
  echo "$sum"
}
# ---- a nanosecond CPU clock
# utime+stime in /proc move in ticks of 1/CLK_TCK s (10 ms here): on a skopeo
# pull of the clients.sh image one tick is some 3 % of a proxy's CPU, so two
# targets read 1:1 can differ by a tick either way. A cgroup's CPU counter is
# kept in ns by the scheduler and also counts the threads and child processes
# that come and go (tokio's blocking pool, nginx workers). cpu_clock_join puts a
# target's processes in a cgroup of their own where the machine lets us (root;
# cgroup v1 cpuacct or v2), cpu_ns reads it and falls back to the ticks.
# CPU_CLOCK=ticks forces the ticks. Call cpu_clock_cleanup on exit.
declare -gA CPU_CG=()
CPU_CG_ROOT=""  # the cgroup this run made (children: one per name); "" = ticks
CPU_CG_KIND=""  # v1 (cpuacct.usage, ns) or v2 (cpu.stat usage_usec)
CPU_CG_HOME=""  # where processes go back to before a cgroup is removed
cpu_clock_init() {
  [[ ${CPU_CLOCK:-cgroup} == cgroup ]] || { log "CPU clock: ticks of 1/$(getconf CLK_TCK) s (CPU_CLOCK=${CPU_CLOCK})"; return 0; }
  local d kind=v1
  d=$(awk '$3 == "cgroup" && $4 ~ /(^|,)cpuacct(,|$)/ {print $2; exit}' /proc/self/mounts)
  [[ -n $d ]] || { d=$(awk '$3 == "cgroup2" {print $2; exit}' /proc/self/mounts); kind=v2; }
  if [[ -n $d ]] && mkdir "$d/portcullis-bench.$$" 2>/dev/null; then
    CPU_CG_ROOT=$d/portcullis-bench.$$; CPU_CG_KIND=$kind; CPU_CG_HOME=$d
    log "CPU clock: cgroup $kind ($CPU_CG_ROOT), ns"
  else
    log "CPU clock: ticks of 1/$(getconf CLK_TCK) s (no writable cgroup)"
  fi
}
# cpu_clock_join NAME PID...: NAME's CPU is then the cgroup's (the PIDs' threads
# and every process they start later); without a cgroup nothing changes
cpu_clock_join() {
  local name=$1 p; shift
  [[ -n $CPU_CG_ROOT ]] || return 0
  local g=$CPU_CG_ROOT/$name
  mkdir -p "$g" || return 0
  for p in "$@"; do
    if ! echo "$p" >"$g/cgroup.procs" 2>/dev/null; then
      log "CPU clock: could not move $p into $g: ticks for $name"; cpu_clock_leave "$g"; return 0
    fi
  done
  CPU_CG[$name]=$g
}
# cpu_ns NAME PID...: CPU ns of NAME's cgroup, else of the PIDs by their ticks
cpu_ns() {
  local name=$1 g=${CPU_CG[$1]:-} v; shift
  if [[ -n $g ]]; then
    if [[ $CPU_CG_KIND == v1 ]]; then read -r v <"$g/cpuacct.usage"; echo "$v"
    else awk '$1 == "usage_usec" {printf "%.0f\n", $2 * 1000}' "$g/cpu.stat"; fi  # %.0f: mawk's %d stops at 2^31-1
    return
  fi
  echo $(( $(cpu_ticks "$@") * 1000000000 / $(getconf CLK_TCK) ))
}
cpu_clock_leave() { # CGROUP: its processes back home, then remove it
  local g=$1 p
  [[ -d $g ]] || return 0
  while read -r p; do echo "$p" >"$CPU_CG_HOME/cgroup.procs" 2>/dev/null || true; done <"$g/cgroup.procs"
  rmdir "$g" 2>/dev/null || log "CPU clock: could not remove $g"
}
cpu_clock_cleanup() {
  [[ -n $CPU_CG_ROOT && -d $CPU_CG_ROOT ]] || return 0
  local g
  for g in "$CPU_CG_ROOT"/*/; do [[ -d $g ]] && cpu_clock_leave "${g%/}"; done
  rmdir "$CPU_CG_ROOT" 2>/dev/null || log "CPU clock: could not remove $CPU_CG_ROOT"
  CPU_CG_ROOT=""
}
wait_http() { # URL CURL_AUTH WANT SECONDS
  local url=$1 auth=$2 want=$3 secs=$4 code i
  for ((i = 0; i < secs * 10; i++)); do
    code=$(curl -sk --max-time 2 ${auth:+-u "$auth"} -o /dev/null -w '%{http_code}' "$url" 2>/dev/null || true)
    [[ $code == "$want" ]] && return 0
    sleep 0.1
  done
  return 1
}
# wrk_stats OUT: REQS, RPS and NON2XX of a wrk report (dies if it made none)
wrk_stats() {
  REQS=$(awk '/requests in/ {print $1; exit}' "$1")
  RPS=$(awk '/^Requests\/sec:/ {print $2}' "$1")
  NON2XX=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$1"); NON2XX=${NON2XX:-0}
  [[ -n $REQS && $REQS != 0 ]] || { cat "$1" >&2; die "wrk made no requests ($1)"; }
}
# the names, rotated by round R: interleaved runs
# The command prefix that runs a proxy under valgrind's callgrind (for
# PROXY_WRAP), writing one file per process to DIR/callgrind.<pid>. No cache
# or branch simulation (instructions are what is counted); names and
# positions uncompressed so that every dump can be annotated on its own.
callgrind_wrap() { # DIR
  echo "valgrind --tool=callgrind --cache-sim=no --branch-sim=no --compress-strings=no --compress-pos=no --callgrind-out-file=$1/callgrind.%p"
}
rotate() { local r=$1; shift; local a=("$@") n=$# i; for ((i = 0; i < n; i++)); do echo "${a[$(((i + r - 1) % n))]}"; done; }

# A registry:2 (Debian docker-registry) on a free port, data in $WORK: sets REG, REG_PID.
# REG_RELATIVE=1: relative upload Locations (relativeurls), so the same
# upload URL works through every proxy (bare Pingora rewrites nothing).
start_registry() {
  local port; port=$(free_port)
  REG=http://127.0.0.1:$port
  mkdir -p "$WORK/registry-data"
  cat >"$WORK/registry.yml" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $WORK/registry-data
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:$port
  secret: portcullis-bench-secret
  relativeurls: $([[ ${REG_RELATIVE:-0} == 1 ]] && echo true || echo false)
  headers: # as Debian's /etc/docker/registry/config.yml and the registry:2 image's
    X-Content-Type-Options: [nosniff]
YML
  docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
  REG_PID=$!
  wait_http "$REG/v2/" "" 200 20 || { cat "$WORK/registry.log" >&2; die "registry did not start"; }
}

push_blob() { # REPO FILE DIGEST: a monolithic upload straight to the registry
  local h=$WORK/h.txt loc code
  code=$(curl -s -X POST -D "$h" -o /dev/null -w '%{http_code}' -H 'Content-Length: 0' "$REG/v2/$1/blobs/uploads/")
  [[ $code == 202 ]] || die "POST upload -> $code"
  loc=$(grep -i '^location:' "$h" | tail -1 | cut -d' ' -f2- | tr -d '\r')
  [[ $loc == /* ]] && loc=$REG$loc
  [[ $loc == *\?* ]] && loc="$loc&digest=$3" || loc="$loc?digest=$3"
  code=$(curl -s -X PUT -T "$2" -H 'Content-Type: application/octet-stream' -H 'Expect:' -o /dev/null -w '%{http_code}' "$loc")
  [[ $code == 201 ]] || die "PUT blob -> $code"
}

# LAYERS random layers of LAYER_MIB MiB, a config and a manifest, pushed
# straight to the registry as REPO:latest; sets IMAGE_BYTES.
seed_image() {
  local i digest size layers="" bytes=$((LAYER_MIB * 1024 * 1024))
  for ((i = 0; i < LAYERS; i++)); do
    head -c "$bytes" /dev/urandom >"$WORK/layer$i"
    digest=sha256:$(sha256sum "$WORK/layer$i" | cut -d' ' -f1)
    push_blob "$REPO" "$WORK/layer$i" "$digest"
    layers+="${layers:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"$digest\",\"size\":$bytes}"
    rm -f "$WORK/layer$i"
  done
  printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{}}' >"$WORK/config.json"
  digest=sha256:$(sha256sum "$WORK/config.json" | cut -d' ' -f1); size=$(stat -c %s "$WORK/config.json")
  push_blob "$REPO" "$WORK/config.json" "$digest"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[%s]}' \
    "$digest" "$size" "$layers" >"$WORK/manifest.json"
  local code
  code=$(curl -s -X PUT -H "Content-Type: application/vnd.oci.image.manifest.v1+json" \
    --data-binary @"$WORK/manifest.json" -o /dev/null -w '%{http_code}' "$REG/v2/$REPO/manifests/latest")
  [[ $code == 201 ]] || die "seed manifest -> $code"
  IMAGE_BYTES=$((LAYERS * bytes))
}
