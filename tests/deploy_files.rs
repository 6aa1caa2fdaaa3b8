//! The deployment files in deploy/ (image, compose, systemd, Kubernetes),
//! checked as far as a machine without a container engine or a cluster
//! allows (tests/image.rs builds and runs the image and the compose file).
//!
//! `deploy/check.sh` runs the external validators (hadolint, docker compose
//! config, kubectl kustomize + kubernetes-validate, systemd-analyze,
//! shellcheck, and `portcullis check` on every proxy.toml); each section is
//! one test here, and each validator is shown to fail on a broken copy of
//! the files. The tests below them check what no validator knows: that the
//! files agree with each other and with the config schema (ports, grace
//! periods, paths, capabilities).
//!
//! The validators are installed by tests/run.sh (see deploy/check.sh);
//! nothing is installed here.

use portcullis::config::Config;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

mod support;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn deploy() -> PathBuf {
    root().join("deploy")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Runs `deploy/check.sh SECTION` (on `deploy_dir`), returning success and
/// the output.
fn check_sh(section: &str, deploy_dir: &Path) -> (bool, String) {
    let out = Command::new("bash")
        .arg(deploy().join("check.sh"))
        .arg(section)
        .env("DEPLOY_DIR", deploy_dir)
        .env("PORTCULLIS_BIN", env!("CARGO_BIN_EXE_portcullis"))
        .env_remove("ALLOW_MISSING")
        .env_remove("COMPOSE_PROFILES")
        .output()
        .expect("run deploy/check.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn passes(section: &str) {
    let (ok, out) = check_sh(section, &deploy());
    println!("{out}");
    assert!(ok, "deploy/check.sh {section} failed:\n{out}");
    assert!(!out.contains("skipped"), "{out}");
}

/// A copy of deploy/ with `edit` applied to one file; the section must fail
/// and say `expect`.
fn fails_on_broken_copy(section: &str, file: &str, edit: impl Fn(&str) -> String, expect: &str) {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&deploy(), dir.path());
    let path = dir.path().join(file);
    let original = std::fs::read_to_string(&path).unwrap();
    let broken = edit(&original);
    assert_ne!(original, broken, "the edit of {file} changed nothing");
    std::fs::write(&path, broken).unwrap();
    let (ok, out) = check_sh(section, dir.path());
    assert!(
        !ok,
        "deploy/check.sh {section} accepted a broken {file}:\n{out}"
    );
    assert!(
        out.contains(expect),
        "deploy/check.sh {section} failed, but not with {expect:?}:\n{out}"
    );
}

/// [`fails_on_broken_copy`] for each `(file, from, to, expect)`: `from`
/// replaced by `to` in a copy of `file`.
fn fails_on_replacements(section: &str, cases: &[(&str, &str, &str, &str)]) {
    for (file, from, to, expect) in cases {
        fails_on_broken_copy(section, file, |s| s.replace(from, to), expect);
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

// ------------------------------------------------ the validators, and that they bite

#[test]
fn dockerfile_passes_hadolint_and_its_build_inputs_exist() {
    passes("dockerfile");
}

#[test]
fn dockerfile_check_fails_on_a_lint_error() {
    fails_on_broken_copy(
        "dockerfile",
        "Dockerfile",
        |s| s.replace("WORKDIR /src\n", "WORKDIR /src\nRUN cd /src && ls\n"),
        "DL3003",
    );
    fails_on_broken_copy(
        "dockerfile",
        "Dockerfile",
        |s| s.replace("COPY src ./src", "COPY srcs ./src"),
        "COPY srcs: not in the repository",
    );
    // the source build's COPY .cargo once failed this way
    fails_on_broken_copy(
        "dockerfile",
        "Dockerfile.dockerignore",
        |s| s.replace("!.cargo/\n", ""),
        "COPY .cargo: excluded by Dockerfile.dockerignore",
    );
}

#[test]
fn compose_file_is_valid_for_every_profile() {
    passes("compose");
}

#[test]
fn compose_check_fails_on_an_unknown_key() {
    fails_on_broken_copy(
        "compose",
        "docker-compose.yml",
        |s| {
            s.replace(
                "  registry:\n    image: registry:2\n",
                "  registry:\n    image: registry:2\n    restart_policy: always\n",
            )
        },
        "restart_policy",
    );
    fails_on_broken_copy(
        "compose",
        "docker-compose.yml",
        |s| {
            s.replace(
                "/etc/portcullis/proxy-acme.toml",
                "/etc/portcullis/proxy-acmee.toml",
            )
        },
        "proxy-acmee.toml",
    );
}

#[test]
fn every_proxy_toml_passes_portcullis_check() {
    passes("configs");
}

#[test]
fn configs_check_fails_on_a_bad_key() {
    fails_on_replacements(
        "configs",
        &[
            (
                "compose/proxy-files.toml",
                "grace_period = ",
                "grace_perod = ",
                "server.grace_perod",
            ),
            (
                "kubernetes/portcullis-config.yaml",
                "/etc/portcullis/tls/tls.key",
                "/etc/portcullis/tls/missing.key",
                "missing.key",
            ),
        ],
    );
}

#[test]
fn kubernetes_manifests_validate() {
    passes("kubernetes");
}

#[test]
fn kubernetes_check_fails_on_invalid_objects() {
    let deployment = "kubernetes/portcullis-deployment.yaml";
    fails_on_replacements(
        "kubernetes",
        &[
            (deployment, "replicas: 3", "replicas: three", "replicas"),
            (
                deployment,
                "readinessProbe:",
                "readynessProbe:",
                "readynessProbe",
            ),
            // the CRDs, against kubernetes/schemas/
            (
                "kubernetes/portcullis-servicemonitor.yaml",
                "interval: 15s",
                "intervall: 15s",
                "intervall",
            ),
            (
                "kubernetes/portcullis-certificate.yaml",
                "algorithm: ECDSA",
                "algorithm: DSA",
                "DSA",
            ),
            // a manifest left out of kustomization.yaml
            (
                "kubernetes/kustomization.yaml",
                "  - registry-pdb.yaml\n",
                "",
                "registry-pdb.yaml is not in kustomization.yaml",
            ),
        ],
    );
}

#[test]
fn systemd_unit_verifies_and_is_hardened() {
    passes("systemd");
}

#[test]
fn systemd_check_fails_on_a_typo_or_weaker_sandbox() {
    fails_on_broken_copy(
        "systemd",
        "systemd/portcullis.service",
        |s| s.replace("ProtectSystem=strict", "ProtectSystm=strict"),
        "Unknown key",
    );
    fails_on_broken_copy(
        "systemd",
        "systemd/portcullis.service",
        |s| {
            let weak = [
                "ProtectSystem=",
                "ProtectHome=",
                "PrivateDevices=",
                "ProtectKernel",
                "RestrictNamespaces=",
                "SystemCallFilter=",
                "CapabilityBoundingSet=",
                "RestrictAddressFamilies=",
                "PrivateTmp=",
                "ProtectProc=",
            ];
            s.lines()
                .filter(|l| !weak.iter().any(|w| l.starts_with(w)))
                .map(|l| format!("{l}\n"))
                .collect()
        },
        "exposure above 2.0",
    );
}

// ------------------------------------------------ what the files must agree on

/// The `proxy.toml` embedded in a ConfigMap manifest (`proxy.toml: |`).
fn configmap_toml(manifest: &str) -> String {
    let mut lines = manifest.lines().skip_while(|l| l.trim() != "proxy.toml: |");
    assert!(
        lines.next().is_some(),
        "no `proxy.toml: |` in the ConfigMap"
    );
    let mut out = String::new();
    for line in lines {
        if line.trim().is_empty() {
            out.push('\n');
        } else if let Some(rest) = line.strip_prefix("    ") {
            out.push_str(rest);
            out.push('\n');
        } else {
            break;
        }
    }
    out
}

/// Parses a deployment config with the config loader (every key known,
/// every cross-key check).
fn parse_config(name: &str, text: &str) -> Config {
    Config::parse(text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn compose_configs() -> Vec<(String, Config)> {
    let mut v: Vec<_> = std::fs::read_dir(deploy().join("compose"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&p).unwrap();
            let cfg = parse_config(&name, &text);
            (name, cfg)
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    let names: Vec<_> = v.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["proxy-acme.toml", "proxy-files.toml", "proxy-ldap.toml"]
    );
    v
}

/// A duration like compose's `45s` or `1m30s`, as humantime reads it.
fn duration(s: &str) -> Duration {
    humantime::parse_duration(s.trim().trim_matches('"')).unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// The value after `key` on the first line that has it.
fn value_of<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in the file"))
        .trim()
}

#[test]
fn compose_variants_fit_the_compose_file() {
    let compose = read("deploy/docker-compose.yml");
    let stop = duration(value_of(&compose, "stop_grace_period:"));
    for (name, cfg) in compose_configs() {
        assert!(
            compose.contains(&format!("/etc/portcullis/{name}")),
            "{name} is not used by docker-compose.yml"
        );
        assert_eq!(cfg.server.listen.port(), 443, "{name}: \"443:443\"");
        assert_eq!(cfg.server.http_listen.map(|a| a.port()), Some(80), "{name}");
        assert_eq!(cfg.upstream.url.as_str(), "http://registry:5000/", "{name}");
        // the healthcheck and the host's 127.0.0.1:9095 reach the admin listener
        assert!(cfg.metrics.enabled, "{name}");
        assert_eq!(cfg.metrics.listen.to_string(), "0.0.0.0:9095", "{name}");
        // Pingora adds up to 5 s after the grace period
        assert!(
            cfg.server.grace_period + Duration::from_secs(5) < stop,
            "{name}: grace_period {:?} does not fit in stop_grace_period {stop:?}",
            cfg.server.grace_period
        );
        assert_eq!(
            cfg.auth.htpasswd.as_ref().map(|h| h.path.clone()),
            Some("/etc/portcullis/htpasswd".into()),
            "{name}: the compose/ directory is /etc/portcullis"
        );
        match name.as_str() {
            "proxy-acme.toml" => {
                let acme = cfg.tls.acme.as_ref().expect("[tls.acme]");
                assert!(cfg.tls.cert.is_none(), "{name}");
                // the named volume portcullis-state
                assert!(acme.state_dir.starts_with("/var/lib/portcullis"), "{name}");
            }
            _ => {
                let cert = cfg.tls.cert.as_ref().expect("tls.cert");
                assert!(
                    cert.starts_with("/etc/letsencrypt/live/"),
                    "{name}: {cert:?}"
                );
                assert!(cfg.tls.acme.is_none(), "{name}");
            }
        }
    }
    // the healthcheck of the image and of compose: /healthz on 9095
    assert!(compose.contains("http://127.0.0.1:9095/healthz"));
    // the registry is never published
    let registry = compose
        .split("\n  registry:\n")
        .nth(1)
        .and_then(|s| s.split("\n\n").next())
        .expect("a registry service");
    assert!(
        !registry.contains("ports:"),
        "registry must not be published"
    );
    assert!(registry.contains("REGISTRY_HTTP_SECRET: ${REGISTRY_HTTP_SECRET:?"));
    assert!(registry.contains("registry-data:/var/lib/registry"));
}

#[test]
fn ldap_variant_and_kubernetes_read_the_bind_password_from_a_file() {
    for (name, text) in [
        ("proxy-ldap.toml", read("deploy/compose/proxy-ldap.toml")),
        (
            "portcullis-config.yaml",
            configmap_toml(&read("deploy/kubernetes/portcullis-config.yaml")),
        ),
    ] {
        let table: toml::Table = text.parse().unwrap();
        let ldap = table["auth"]["ldap"].as_table().expect("[auth.ldap]");
        let pw = ldap["bind_password"].as_table().expect("a secret table");
        assert!(
            pw.contains_key("file"),
            "{name}: bind_password is not inline"
        );
        parse_config(name, &text);
    }
}

#[test]
fn kubernetes_config_fits_the_deployment() {
    let text = configmap_toml(&read("deploy/kubernetes/portcullis-config.yaml"));
    let cfg = parse_config("portcullis-config.yaml", &text);
    let deployment = read("deploy/kubernetes/portcullis-deployment.yaml");
    // probes reach the admin listener from outside the pod
    assert_eq!(cfg.metrics.listen.to_string(), "0.0.0.0:9095");
    assert!(deployment.contains("containerPort: 9095"));
    assert!(deployment.contains("path: /readyz"));
    assert!(deployment.contains("path: /healthz"));
    // the TLS port of the pod, unprivileged
    assert_eq!(cfg.server.listen.port(), 8443);
    assert!(deployment.contains("containerPort: 8443"));
    // no redirect listener: it would send clients to the pod's port
    assert!(cfg.server.http_listen.is_none());
    // draining fits in the termination grace period (preStop + Pingora's 5 s)
    let term = Duration::from_secs(
        value_of(&deployment, "terminationGracePeriodSeconds:")
            .parse()
            .unwrap(),
    );
    let pre_stop = Duration::from_secs(value_of(&deployment, "seconds:").parse().unwrap());
    assert!(
        pre_stop + cfg.server.grace_period + Duration::from_secs(5) < term,
        "grace_period {:?} + preStop {pre_stop:?} does not fit in {term:?}",
        cfg.server.grace_period
    );
    // replicas share the signing key: tokens are good on every replica
    assert_eq!(
        cfg.auth.token.signing_key.as_deref(),
        Some(Path::new("/etc/portcullis/token-key.pem"))
    );
    // files come from the projected volume /etc/portcullis, no subPath
    assert!(!deployment
        .lines()
        .any(|l| l.trim_start().starts_with("subPath:")));
    for path in [
        cfg.tls.cert.clone().unwrap(),
        cfg.tls.key.clone().unwrap(),
        cfg.auth.htpasswd.clone().unwrap().path,
        cfg.auth.token.signing_key.clone().unwrap(),
    ] {
        let rel = path.strip_prefix("/etc/portcullis").unwrap();
        assert!(
            deployment.contains(&format!("path: {}", rel.display())),
            "{} is not projected into /etc/portcullis",
            path.display()
        );
    }
    assert_eq!(value_of(&deployment, "replicas:"), "3");
    assert!(deployment.contains("podAntiAffinity"));
    assert!(read("deploy/kubernetes/portcullis-pdb.yaml").contains("minAvailable: 2"));
    // cert-manager's Secret is the one the pods mount
    let cert = read("deploy/kubernetes/portcullis-certificate.yaml");
    assert!(deployment.contains(&format!("name: {}", value_of(&cert, "secretName:"))));
    // the upstream is the registry Service
    let service = read("deploy/kubernetes/registry-service.yaml");
    assert_eq!(cfg.upstream.url.as_str(), "http://registry:5000/");
    assert!(service.contains("name: registry") && service.contains("port: 5000"));
}

#[test]
fn registry_config_of_kubernetes_starts_registry_2() {
    // Debian's docker-registry is distribution 2.8, the registry:2 image's.
    let manifest = read("deploy/kubernetes/registry-config.yaml");
    let mut config = String::new();
    for line in manifest
        .lines()
        .skip_while(|l| l.trim() != "config.yml: |")
        .skip(1)
    {
        match line.strip_prefix("    ") {
            Some(rest) => config.push_str(&format!("{rest}\n")),
            None if line.trim().is_empty() => config.push('\n'),
            None => break,
        }
    }
    assert!(config.contains("s3:") && config.contains("regionendpoint:"));
    let port = support::free_port();
    // the S3 endpoint is replaced by a closed loopback port: the registry
    // must start (the config parses) without reaching any storage
    let endpoint = value_of(&config, "regionendpoint:").to_owned();
    let config = config
        .replace(&endpoint, "http://127.0.0.1:9")
        .replace("addr: :5000", &format!("addr: 127.0.0.1:{port}"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yml");
    std::fs::write(&path, config).unwrap();
    let log = dir.path().join("registry.log");
    let mut child = Command::new("/usr/bin/docker-registry")
        .arg("serve")
        .arg(&path)
        .env("REGISTRY_HTTP_SECRET", "check-only")
        .env("REGISTRY_STORAGE_S3_ACCESSKEY", "check-only")
        .env("REGISTRY_STORAGE_S3_SECRETKEY", "check-only")
        // the AWS SDK would load a CA bundle named here and refuse to start
        .env_remove("AWS_CA_BUNDLE")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
        .spawn()
        .expect("/usr/bin/docker-registry (Debian docker-registry)");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default()
            + &std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();
        if text.contains("listening on") || std::time::Instant::now() > deadline {
            break text;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("docker-registry exited ({status}) with the ConfigMap's config:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        text.contains("listening on"),
        "registry did not start:\n{text}"
    );
    // blobs come through the registry, never as redirects to the bucket
    assert!(text.contains("backend redirection disabled"), "{text}");
}

#[test]
fn systemd_unit_settings() {
    let unit = read("deploy/systemd/portcullis.service");
    let has = |line: &str| unit.lines().any(|l| l.trim() == line);
    for line in [
        "User=portcullis",
        "ExecStart=/usr/local/bin/portcullis serve --config ${PORTCULLIS_CONFIG}",
        "Environment=PORTCULLIS_CONFIG=/etc/portcullis/proxy.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillSignal=SIGTERM",
        "Restart=on-failure",
        "StateDirectory=portcullis",
        "ConfigurationDirectory=portcullis",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "LimitNOFILE=65536",
    ] {
        assert!(has(line), "portcullis.service lacks {line}");
    }
    // transfers get grace_period after SIGTERM, then Pingora's 5 s: systemd
    // must not SIGKILL before that (proxy.toml's grace_period, the default)
    let stop = duration(value_of(&unit, "TimeoutStopSec="));
    let cfg = Config::parse(&read("proxy.toml")).unwrap();
    assert!(cfg.server.grace_period + Duration::from_secs(5) < stop);
    // the state directory is the default token key_dir and ACME state_dir
    assert_eq!(cfg.auth.token.key_dir, Path::new("/var/lib/portcullis"));
    let sysusers = read("deploy/systemd/portcullis.sysusers");
    assert!(sysusers.contains("u portcullis "));
}

#[test]
fn dockerfile_settings() {
    let df = read("deploy/Dockerfile");
    let lines: Vec<&str> = df.lines().map(str::trim).collect();
    let has = |prefix: &str| lines.iter().any(|l| l.starts_with(prefix));
    assert!(has("FROM rust:${RUST_VERSION}-${DEBIAN_SUITE} AS build"));
    assert!(df.contains("ARG DEBIAN_SUITE=bookworm"));
    assert!(df.contains("cmake"), "Pingora's libz-ng-sys needs cmake");
    assert!(df.contains("cargo build --release --locked --bin portcullis"));
    // tests/image.rs builds the image with BINARY_SOURCE=prebuilt (the
    // binary of the test build); the default stays the build from source
    assert!(df.contains("ARG BINARY_SOURCE=build"));
    assert!(has("FROM scratch AS prebuilt"));
    assert!(has("COPY ${PORTCULLIS_BINARY} /out/portcullis"));
    assert!(has("FROM ${BINARY_SOURCE} AS binary"));
    assert!(df.contains("--mount=type=bind,from=binary,source=/out,target=/out"));
    // BuildKit would pull docker/dockerfile for a syntax line: none
    assert!(!lines
        .iter()
        .any(|l| l.to_lowercase().replace(' ', "").starts_with("#syntax=")));
    assert!(has("FROM debian:${DEBIAN_SUITE}-slim AS runtime"));
    assert!(has("USER 10001:10001"), "non-root");
    assert!(df.contains("setcap cap_net_bind_service=+ep /usr/local/bin/portcullis"));
    assert!(has("EXPOSE 443 80 9095"));
    assert!(has(r#"VOLUME ["/var/lib/portcullis", "/etc/portcullis"]"#));
    assert!(
        df.contains(r#"CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:9095/healthz"]"#)
    );
    assert!(has(
        r#"CMD ["serve", "--config", "/etc/portcullis/proxy.toml"]"#
    ));
    // the final stage is the last one: `docker build` without --target
    let last_from = lines.iter().rposition(|l| l.starts_with("FROM ")).unwrap();
    assert!(lines[last_from].ends_with("AS runtime"));
    // the build context keeps what COPY needs
    let ignore = read("deploy/Dockerfile.dockerignore");
    for keep in [
        "!Cargo.toml",
        "!Cargo.lock",
        "!.cargo/",
        "!src/",
        "!proxy.toml",
        "!target/release/portcullis",
    ] {
        assert!(
            ignore.lines().any(|l| l == keep),
            "{keep} in Dockerfile.dockerignore"
        );
    }
}

#[test]
fn docs_name_files_that_exist() {
    for doc in [
        "docs/deployment.md",
        "docs/migrating-from-nginx.md",
        "docs/security.md",
    ] {
        let text = read(doc);
        let mut named = 0;
        for word in text.split(|c: char| c.is_whitespace() || "`()[]<>,;:\"'".contains(c)) {
            let word = word.trim_end_matches(['.', '*']);
            let is_path = ["deploy/", "docs/", "src/", "tests/"]
                .iter()
                .any(|p| word.starts_with(p));
            if !is_path || word.contains('$') || word.contains('*') {
                continue;
            }
            named += 1;
            assert!(
                root().join(word).exists(),
                "{doc} names {word}, which does not exist"
            );
        }
        assert!(named > 0, "{doc} names no repository file");
    }
}
