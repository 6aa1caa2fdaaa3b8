//! The container image and the compose file on the real Docker engine.
//!
//! The image is deploy/Dockerfile with `BINARY_SOURCE=prebuilt`, packing the
//! binary this test build made, on a Debian base made by debootstrap (see
//! support/images.rs): it runs as 10001:10001 on a read-only root, its
//! HEALTHCHECK goes healthy (and unhealthy without the admin listener), and
//! the engine pushes and pulls through the proxy in it. Then
//! deploy/docker-compose.yml as shipped (profile `files`), with a stand-in
//! for `registry:2`, published on free loopback ports: login, push, pull,
//! `down -v`.

mod support;

use std::fs;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::*;

/// The image's user and group.
const UID: u32 = 10001;

/// How long a HEALTHCHECK with `--health-interval 1s` may take to settle.
const HEALTH_WAIT: Duration = Duration::from_secs(60);

/// A container, removed (`docker rm -f`) on drop if `remove`.
struct Container<'a> {
    docker: &'a Docker<'a>,
    name: String,
    remove: bool,
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        if self.remove {
            let _ = self.docker.run(&["rm", "-f", &self.name], None);
        }
    }
}

impl Container<'_> {
    /// `docker exec NAME ARGS`.
    fn exec(&self, args: &[&str]) -> Output {
        let mut all = vec!["exec", self.name.as_str()];
        all.extend_from_slice(args);
        self.docker.run(&all, None)
    }

    /// `docker exec`, asserting it worked; trimmed stdout.
    fn exec_ok(&self, args: &[&str]) -> String {
        let o = self.exec(args);
        assert!(
            o.status.success(),
            "docker exec {args:?}: {}\n{}",
            out_text(&o),
            self.logs()
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    fn inspect(&self, format: &str) -> String {
        self.docker.inspect(format, &self.name)
    }

    /// `docker logs` (the proxy's stdout and stderr).
    fn logs(&self) -> String {
        out_text(&self.docker.run(&["logs", &self.name], None))
    }

    fn health(&self) -> String {
        self.inspect("{{if .State.Health}}{{.State.Health.Status}}{{end}}")
    }

    /// Waits until the health status is `want` (`healthy` or
    /// `unhealthy`; the other one fails at once); how long it took.
    fn wait_health(&self, want: &str) -> Duration {
        let start = Instant::now();
        loop {
            let now = self.health();
            if now == want {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < HEALTH_WAIT && !(now == "healthy" || now == "unhealthy"),
                "{}: health {now:?}, not {want:?} (after {:?})\nprobes: {}\nlogs:\n{}",
                self.name,
                start.elapsed(),
                self.inspect("{{json .State.Health}}"),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// `docker run -d --name NAME ARGS`; the container removed on drop.
fn run_container<'a>(docker: &'a Docker<'a>, name: &str, args: &[&str]) -> Container<'a> {
    let mut all = vec!["run", "-d", "--name", name];
    all.extend_from_slice(args);
    let o = docker.run(&all, None);
    let c = Container {
        docker,
        name: name.to_string(),
        remove: true,
    };
    assert!(
        o.status.success(),
        "docker run {args:?}: {}\n{}",
        out_text(&o),
        docker.engine.logs()
    );
    c
}

/// Gives a file to the image's user (as an operator would chown the
/// files the proxy reads) with `mode`.
fn give(path: &Path, mode: u32) {
    chown(path, Some(UID), Some(UID)).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A config dir for `/etc/portcullis`: the certificate of `ca` for
/// 127.0.0.1, the htpasswd of USER, and a proxy.toml per `(name, options)`
/// listening on `port`.
fn config_dir(
    ca: &Ca,
    port: u16,
    configs: &[(&str, ProxyOptions)],
    upstream: &str,
) -> tempfile::TempDir {
    let dir = temp_dir("pc-image-config-");
    // the mount's root: the image's user must be able to enter it
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let leaf = ca.leaf("portcullis-image-test");
    fs::write(dir.path().join("cert.pem"), &leaf.cert_pem).unwrap();
    fs::write(dir.path().join("key.pem"), &leaf.key_pem).unwrap();
    give(&dir.path().join("key.pem"), 0o600);
    let htpasswd = dir.path().join("htpasswd");
    htpasswd_add(&htpasswd, USER, PASS);
    give(&htpasswd, 0o600);
    let etc = Path::new("/etc/portcullis");
    for (name, opts) in configs {
        let mut opts = opts.clone();
        opts.upstream_url = Some(upstream.to_string());
        let text = opts.render(&ProxyFiles {
            port,
            cert: &etc.join("cert.pem"),
            key: &etc.join("key.pem"),
            htpasswd: &etc.join("htpasswd"),
        });
        fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

/// `HOST/team-a/app:1` pushed, removed and pulled again by `docker`,
/// logged in as USER; the image ID before and after.
fn round_trip(docker: &Docker, host: &str, seed: u64) -> (String, String) {
    let o = docker.login(&[], USER, Password::Stdin(&format!("{PASS}\n")), host);
    assert!(
        o.status.success() && both(&o).contains("Login Succeeded"),
        "docker login {host}: {}\n{}",
        out_text(&o),
        docker.engine.logs()
    );
    let image = format!("{host}/team-a/app:1");
    let built = docker.build_scratch(&image, 2, seed);
    let push = docker.stdout_ok(&["push", &image]);
    assert!(push.contains("digest: sha256:"), "docker push: {push}");
    docker.stdout_ok(&["rmi", &image]);
    assert!(!docker.has_image(&image), "{image} still there after rmi");
    docker.stdout_ok(&["pull", &image]);
    (built, docker.image_id(&image))
}

#[test]
fn apt_sources_name_the_debian_mirror() {
    let deb822 =
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n\
                  Components: main\n\nTypes: deb\nURIs: http://sec.example/debian-security\n\
                  Suites: bookworm-security\nComponents: main\n";
    assert_eq!(
        mirror_in(deb822).as_deref(),
        Some("http://mirror.example/debian")
    );
    let list = "# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://m.example/debian bookworm main contrib\n";
    assert_eq!(mirror_in(list).as_deref(), Some("http://m.example/debian"));
    let other = "deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n";
    assert_eq!(mirror_in(other), None);
}

#[test]
fn image_runs_unprivileged_read_only_healthy_and_proxies_push_and_pull() {
    let reg = Registry::start();
    let engine = Engine::start();
    let docker = engine.client();
    let (took, built) = portcullis_image(&docker);
    eprintln!("image {PORTCULLIS_IMAGE}: {took:?} (built: {built})");

    // --network host: the proxy reaches the registry on loopback, and the
    // image's HEALTHCHECK (127.0.0.1:9095) reaches the admin listener
    assert!(
        !port_open(9095),
        "127.0.0.1:9095 is taken on this host: the HEALTHCHECK probes it"
    );
    let port = free_port();
    let ca = Ca::new("portcullis image test CA");
    let state = "[auth.token]\nkey_dir = \"/var/lib/portcullis\"\n";
    let serving = ProxyOptions::basic(&[(USER, PASS)])
        .toml(&format!("{state}[metrics]\nlisten = \"127.0.0.1:9095\"\n"));
    // no admin listener: nothing answers /healthz
    let no_admin = ProxyOptions::basic(&[(USER, PASS)]).toml(state);
    let conf = config_dir(
        &ca,
        port,
        &[("proxy.toml", serving), ("no-admin.toml", no_admin)],
        &reg.url(),
    );
    let mount = format!("{}:/etc/portcullis:ro", conf.path().display());
    let common = |config: &'static str, retries: &'static str| {
        vec![
            "--network".to_string(),
            "host".to_string(),
            "--read-only".to_string(),
            "--volume".to_string(),
            mount.clone(),
            // the image's HEALTHCHECK command, probed every second
            "--health-interval".to_string(),
            "1s".to_string(),
            "--health-retries".to_string(),
            retries.to_string(),
            "--health-start-period".to_string(),
            "1ms".to_string(),
            PORTCULLIS_IMAGE.to_string(),
            "serve".to_string(),
            "--config".to_string(),
            format!("/etc/portcullis/{config}"),
        ]
    };

    // a proxy whose /healthz does not answer goes unhealthy while it runs
    let args = common("no-admin.toml", "1");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let sick = run_container(&docker, "pc-no-admin", &args);
    let took = sick.wait_health("unhealthy");
    assert_eq!(
        sick.inspect("{{.State.Running}}"),
        "true",
        "{}",
        sick.logs()
    );
    eprintln!("unhealthy after {took:?}");
    drop(sick);

    let args = common("proxy.toml", "3");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let c = run_container(&docker, "pc-image", &args);
    let took = c.wait_health("healthy");
    eprintln!("healthy after {took:?}");
    // the probe is the image's own
    let probe = c.inspect("{{json .Config.Healthcheck.Test}}");
    assert!(
        probe.contains("http://127.0.0.1:9095/healthz") && probe.contains("curl"),
        "{probe}"
    );

    // the process runs as 10001:10001, nothing else in the image is needed
    assert_eq!(c.inspect("{{.Config.User}}"), "10001:10001");
    assert_eq!(c.exec_ok(&["id", "-u"]), UID.to_string());
    assert_eq!(c.exec_ok(&["id", "-g"]), UID.to_string());
    let status = c.exec_ok(&["cat", "/proc/1/status"]);
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uid_line.split_whitespace().collect::<Vec<_>>(),
        ["Uid:", "10001", "10001", "10001", "10001"],
        "PID 1 (portcullis): {uid_line}"
    );
    let comm = c.exec_ok(&["cat", "/proc/1/comm"]);
    assert_eq!(comm, "portcullis");
    // the binary's one file capability (binding 443 and 80)
    let caps = c.exec_ok(&["getcap", "/usr/local/bin/portcullis"]);
    assert!(caps.contains("cap_net_bind_service=ep"), "getcap: {caps}");

    // read-only root: / cannot be written, the state volume can
    assert_eq!(c.inspect("{{.HostConfig.ReadonlyRootfs}}"), "true");
    let w = c.exec(&["sh", "-c", "echo x > /probe"]);
    assert!(!w.status.success(), "wrote to /: {}", out_text(&w));
    assert!(
        out_text(&w).contains("Read-only file system"),
        "{}",
        out_text(&w)
    );
    c.exec_ok(&["sh", "-c", "echo x > /var/lib/portcullis/probe"]);

    // the engine pushes and pulls through the proxy in the container
    engine.trust_ca(port, &ca.pem);
    let client = engine.client();
    let host = format!("127.0.0.1:{port}");
    let (before, after) = round_trip(&client, &host, 7);
    assert_eq!(before, after, "image ID after push, rmi, pull");
    let tags: serde_json::Value = reg
        .direct()
        .get(format!("{}/v2/team-a/app/tags/list", reg.url()))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["1"]), "in the registry");
    let logs = c.logs();
    let manifest_put = logs.lines().any(|l| {
        l.contains(" access: ")
            && log_field(l, "method") == Some("PUT")
            && log_field(l, "path") == Some("/v2/team-a/app/manifests/1")
            && log_field(l, "status") == Some("201")
    });
    assert!(
        manifest_put,
        "no PUT of the manifest in the proxy's log:\n{logs}"
    );
}

/// `docker-compose` (v1) on `engine` with the shipped compose file plus
/// `override_file`, the project directory `dir`, profile `files`.
struct Compose<'a> {
    engine: &'a Engine,
    project: String,
    dir: PathBuf,
    override_file: PathBuf,
    env: Vec<(String, String)>,
    up: bool,
}

impl Compose<'_> {
    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("docker-compose");
        cmd.arg("--project-name")
            .arg(&self.project)
            .arg("--project-directory")
            .arg(&self.dir)
            .arg("--file")
            .arg(repo_root().join("deploy/docker-compose.yml"))
            .arg("--file")
            .arg(&self.override_file)
            .args(["--profile", "files"])
            .args(args)
            .env("DOCKER_HOST", self.engine.docker_host())
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("COMPOSE_FILE")
            .env_remove("COMPOSE_PROFILES")
            .env_remove("COMPOSE_PROJECT_NAME");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        run_bounded(
            &mut cmd,
            None,
            Duration::from_secs(300),
            &format!("docker-compose {args:?}"),
        )
    }

    /// Runs, asserting it worked; stdout (compose warns on stderr).
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "docker-compose {args:?}: {}\n--- logs\n{}\n{}",
            out_text(&o),
            out_text(&self.run(&["logs", "--no-color", "--tail", "40"])),
            self.engine.logs()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for Compose<'_> {
    fn drop(&mut self) {
        if self.up {
            let _ = self.run(&["down", "--volumes", "--timeout", "5"]);
        }
    }
}

#[test]
fn compose_files_variant_serves_login_push_and_pull_on_published_ports() {
    let engine = Engine::start();
    let docker = engine.client();
    let (took, built) = portcullis_image(&docker);
    eprintln!("image {PORTCULLIS_IMAGE}: {took:?} (built: {built})");
    let compose_file = fs::read_to_string(repo_root().join("deploy/docker-compose.yml")).unwrap();
    let registry_tag = compose_file
        .lines()
        .find_map(|l| l.trim().strip_prefix("image: registry:"))
        .map(|t| format!("registry:{t}"))
        .expect("the registry service's image");
    let took = registry_image(&docker, &registry_tag);
    eprintln!("image {registry_tag} (Debian's docker-registry): {took:?}");

    // the project directory: compose/ as shipped plus the users file, and
    // a certbot-like /etc/letsencrypt of a test CA
    let dir = temp_dir("pc-compose-");
    let compose = dir.path().join("compose");
    fs::create_dir(&compose).unwrap();
    for e in fs::read_dir(repo_root().join("deploy/compose")).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_string_lossy().ends_with(".toml") {
            fs::copy(e.path(), compose.join(e.file_name())).unwrap();
        }
    }
    htpasswd_add(&compose.join("htpasswd"), USER, PASS);
    give(&compose.join("htpasswd"), 0o600);
    let ca = Ca::new("portcullis compose test CA");
    let leaf = ca.leaf("registry.example.com");
    let live = dir.path().join("letsencrypt/live/registry.example.com");
    fs::create_dir_all(&live).unwrap();
    fs::write(live.join("fullchain.pem"), &leaf.cert_pem).unwrap();
    fs::write(live.join("privkey.pem"), &leaf.key_pem).unwrap();
    // as deploy/systemd/certbot-deploy-hook leaves it: group 10001 reads
    chown(live.join("privkey.pem"), Some(0), Some(UID)).unwrap();
    fs::set_permissions(live.join("privkey.pem"), fs::Permissions::from_mode(0o640)).unwrap();

    // compose merges volumes by container path: /etc/letsencrypt from the
    // project dir instead of the host's; probes every second, not 15/30 s
    let override_file = dir.path().join("test-override.yml");
    fs::write(
        &override_file,
        "services:\n  registry:\n    healthcheck:\n      interval: 1s\n  \
         portcullis:\n    volumes:\n      - ./letsencrypt:/etc/letsencrypt:ro\n    \
         healthcheck:\n      interval: 1s\n",
    )
    .unwrap();
    let (https, http, admin) = (free_port(), free_port(), free_port());
    let secret = format!("{:032x}", rand::random::<u128>());
    let env = [
        ("REGISTRY_HTTP_SECRET", secret),
        ("PORTCULLIS_IMAGE", PORTCULLIS_IMAGE.to_string()),
        ("PORTCULLIS_HTTPS_PUBLISH", format!("127.0.0.1:{https}")),
        ("PORTCULLIS_HTTP_PUBLISH", format!("127.0.0.1:{http}")),
        ("PORTCULLIS_ADMIN_PUBLISH", format!("127.0.0.1:{admin}")),
    ];
    let mut c = Compose {
        engine: &engine,
        project: format!("pcimage{}", std::process::id()),
        dir: dir.path().to_path_buf(),
        override_file,
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        up: false,
    };
    let start = Instant::now();
    c.up = true;
    // waits for the registry's healthcheck (depends_on: service_healthy)
    c.ok(&["up", "--detach", "--no-build"]);
    eprintln!("docker-compose up: {:?}", start.elapsed());
    let id = c.ok(&["ps", "--quiet", "portcullis"]).trim().to_string();
    assert!(!id.is_empty(), "no portcullis container");
    // compose's own: `down` removes it
    let proxy = Container {
        docker: &docker,
        name: id,
        remove: false,
    };
    let took = proxy.wait_health("healthy");
    eprintln!("portcullis healthy after {took:?}");
    assert_eq!(proxy.inspect("{{.HostConfig.ReadonlyRootfs}}"), "true");
    assert_eq!(proxy.exec_ok(&["id", "-u"]), UID.to_string());

    // the published ports: 443 (TLS), 80 (redirects), the admin listener
    let plain = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = plain
        .get(format!("http://127.0.0.1:{http}/v2/"))
        .header("host", "registry.example.com")
        .send()
        .unwrap();
    assert!(r.status().is_redirection(), "port 80: {}", r.status());
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert!(
        location.starts_with("https://registry.example.com"),
        "{location}"
    );
    let r = plain
        .get(format!("http://127.0.0.1:{admin}/healthz"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "admin /healthz");

    engine.trust_ca(https, &ca.pem);
    let client = engine.client();
    let host = format!("127.0.0.1:{https}");
    let (before, after) = round_trip(&client, &host, 11);
    assert_eq!(before, after, "image ID after push, rmi, pull");
    // the registry behind it holds the image (it is published nowhere:
    // asked from inside its own container)
    let reg_id = c.ok(&["ps", "--quiet", "registry"]).trim().to_string();
    let tags = docker.stdout_ok(&[
        "exec",
        &reg_id,
        "wget",
        "-q",
        "-O",
        "-",
        "http://127.0.0.1:5000/v2/team-a/app/tags/list",
    ]);
    assert!(tags.contains("\"1\""), "tags in the registry: {tags}");

    let start = Instant::now();
    c.ok(&["down", "--volumes", "--timeout", "5"]);
    c.up = false;
    eprintln!("docker-compose down: {:?}", start.elapsed());
    let left = docker.stdout_ok(&["ps", "--all", "--quiet"]);
    assert!(left.is_empty(), "containers left: {left}");
    let volumes = docker.stdout_ok(&["volume", "ls", "--quiet"]);
    assert!(
        !volumes.contains(&c.project),
        "volumes left after down -v: {volumes}"
    );
}
