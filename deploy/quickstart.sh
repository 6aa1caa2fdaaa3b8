#!/usr/bin/env bash
# portcullis quick start: a real registry on 127.0.0.1:5000 and portcullis
# in front of it on https://127.0.0.1:5443 with a self-signed certificate and
# a demo user. Installs what is missing (Debian), builds, starts, and prints
# how to log in.
#
#   bash deploy/quickstart.sh          # start (or restart)
#   bash deploy/quickstart.sh stop     # stop both
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
state=$root/.quickstart
mkdir -p "$state"

stop() {
  for name in portcullis registry; do
    if [ -f "$state/$name.pid" ]; then
      kill "$(cat "$state/$name.pid")" 2>/dev/null || true
      rm -f "$state/$name.pid"
    fi
  done
}

if [ "${1:-}" = stop ]; then
  stop
  echo "stopped"
  exit 0
fi
stop

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
missing=()
for pkg in docker-registry cmake gcc make curl openssl; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }

echo "building portcullis (release)..."
cargo build --release --quiet
# (CARGO_TARGET_DIR, if set, is where cargo put it)
bin=${CARGO_TARGET_DIR:-$root/target}/release/portcullis

mkdir -p "$state/registry-data"
cat > "$state/registry.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $state/registry-data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:5000
YAML
nohup /usr/bin/docker-registry serve "$state/registry.yml" >"$state/registry.log" 2>&1 &
echo $! > "$state/registry.pid"

password=${DEMO_PASSWORD:-demo-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')}
rm -f "$state/htpasswd"
printf '%s\n' "$password" | "$bin" user add --file "$state/htpasswd" --cost 10 --password-stdin demo 2>/dev/null

cat > "$state/proxy.toml" <<TOML
[server]
listen = "127.0.0.1:5443"
[upstream]
url = "http://127.0.0.1:5000"
[tls]
self_signed = true
[auth]
realm = "portcullis quick start"
[auth.htpasswd]
path = "$state/htpasswd"
# the anonymous rule below brings the token endpoint (Docker clients
# cannot pull anonymously after a Basic challenge): its signing key
[auth.token]
key_dir = "$state/keys"

# demo may do everything; anyone may pull public/*
[[access]]
users = ["demo"]
actions = ["*"]

[[access]]
anonymous = true
repositories = ["public/**"]
actions = ["pull"]
TOML
"$bin" check --config "$state/proxy.toml" >/dev/null
nohup "$bin" serve --config "$state/proxy.toml" >"$state/portcullis.log" 2>&1 &
echo $! > "$state/portcullis.pid"

for _ in $(seq 1 100); do
  code=$(curl -sk -o /dev/null -w '%{http_code}' https://127.0.0.1:5443/v2/ || true)
  [ "$code" = 401 ] && break
  sleep 0.2
done
if [ "$code" != 401 ]; then
  echo "portcullis did not come up; see $state/portcullis.log" >&2
  tail -n 20 "$state/portcullis.log" >&2
  exit 1
fi

cat <<MSG

portcullis is running:  https://127.0.0.1:5443  ->  registry on 127.0.0.1:5000
demo user:              demo / $password
logs:                   $state/portcullis.log, $state/registry.log

Try it (the certificate is self-signed, hence --tls-verify=false / -k):
  curl -k -u demo:$password https://127.0.0.1:5443/v2/_catalog
  podman login --tls-verify=false -u demo -p $password 127.0.0.1:5443
  skopeo login --tls-verify=false -u demo -p $password 127.0.0.1:5443
  skopeo copy --dest-tls-verify=false --dest-creds demo:$password \\
      docker-archive:/path/to/image.tar docker://127.0.0.1:5443/demo/app:latest

Stop both with:  bash deploy/quickstart.sh stop
MSG
