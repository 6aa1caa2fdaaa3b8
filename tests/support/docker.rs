//! The Docker engine: a `dockerd` of a test's own (socket, data and exec
//! roots in a temp dir, vfs storage, no networking set up), the `docker`
//! CLI with a per-client `DOCKER_CONFIG`, trust for a proxy's CA in
//! `/etc/docker/certs.d`, and images built `FROM scratch` (nothing can be
//! pulled from public hubs).
//!
//! The engine treats 127.0.0.0/8 registries as insecure: when HTTPS fails
//! it retries over plain HTTP, so the message a command prints is often the
//! retry's. Tests assert on the proxy's access log too ([`access_lines`]).

use std::cell::RefCell;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::*;

/// Upper bound of one `docker` command (a push or pull of a small image
/// takes a second or two).
pub const DOCKER_COMMAND: Duration = Duration::from_secs(120);
/// Upper bound of one `docker build` (apt-get from the Debian mirror).
pub const BUILD_WAIT: Duration = Duration::from_secs(600);
/// Upper bound of the engine's start and of its stop.
pub const ENGINE_WAIT: Duration = Duration::from_secs(60);

/// Where the engine looks for a registry's CA (`certs.d/HOST:PORT/ca.crt`).
const CERTS_D: &str = "/etc/docker/certs.d";

/// The program named `name` on `PATH` or in the sbin directories (dockerd
/// lives in /usr/sbin), if any.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A running `dockerd` of one test, stopped (SIGTERM, by its pid) and its
/// directory removed on drop, with the `certs.d` entries it was given.
pub struct Engine {
    /// root/ (data), exec/, sock, pid, dockerd.log; build contexts live in
    /// a temp dir of their own, never under root/.
    dir: TempDir,
    child: Option<Child>,
    dockerd: PathBuf,
    docker: PathBuf,
    /// `certs.d/HOST:PORT` directories written by [`Engine::trust`].
    trusted: RefCell<Vec<PathBuf>>,
    /// How long the engine took to answer `docker version`.
    pub started_in: Duration,
}

impl Engine {
    /// Starts a `dockerd` and waits until `docker version` answers over its
    /// socket. Fails the test (never skips it) if dockerd is not installed.
    pub fn start() -> Engine {
        Self::start_with_hosts(&[])
    }

    /// [`Engine::start`], with these `(address, name)` lines added to the
    /// `/etc/hosts` dockerd sees (a bind mount in a mount namespace of its
    /// own; the machine's file is untouched). The engine treats registries
    /// on 127.0.0.0/8 as insecure and then reads no `certs.d` (no client
    /// certificate): a name for `::1` is a loopback registry it treats as
    /// secure.
    pub fn start_with_hosts(hosts: &[(&str, &str)]) -> Engine {
        let dockerd = find_program("dockerd").unwrap_or_else(|| {
            panic!(
                "dockerd not found (PATH, /usr/sbin): the engine tests need the Docker \
                 engine; install it with `apt-get install docker.io` (tests/run.sh does)"
            )
        });
        let docker = find_program("docker").unwrap_or_else(|| {
            panic!(
                "docker (the CLI) not found on PATH: install it with \
                 `apt-get install docker.io` (tests/run.sh does)"
            )
        });
        // in /tmp whatever TMPDIR says: unix socket paths (containerd's is
        // exec/containerd/containerd.sock) must stay under 108 bytes
        let dir = tempfile::Builder::new()
            .prefix("pc-dockerd-")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path();
        let log = d.join("dockerd.log");
        let start = Instant::now();
        let mut cmd = if hosts.is_empty() {
            Command::new(&dockerd)
        } else {
            let mut text = fs::read_to_string("/etc/hosts").unwrap_or_default();
            for (addr, name) in hosts {
                text.push_str(&format!("\n{addr} {name}\n"));
            }
            let file = d.join("hosts");
            fs::write(&file, text).unwrap();
            let mut c = Command::new("unshare");
            c.args(["--mount", "--propagation", "private", "sh", "-c"])
                .arg("mount --bind \"$0\" /etc/hosts && exec \"$@\"")
                .arg(&file)
                .arg(&dockerd);
            c
        };
        let child = spawn_logged(
            cmd.arg("--data-root")
                .arg(d.join("root"))
                .arg("--exec-root")
                .arg(d.join("exec"))
                .args([
                    "--storage-driver",
                    "vfs",
                    "--iptables=false",
                    "--ip6tables=false",
                    "--bridge=none",
                ])
                .arg("--host")
                .arg(format!("unix://{}", d.join("sock").display()))
                .arg("--pidfile")
                .arg(d.join("pid")),
            &log,
        );
        let mut engine = Engine {
            dir,
            child: Some(child),
            dockerd,
            docker,
            trusted: RefCell::new(Vec::new()),
            started_in: Duration::ZERO,
        };
        let mut last = String::new();
        loop {
            if let Ok(Some(st)) = engine.child.as_mut().unwrap().try_wait() {
                panic!(
                    "{} exited while starting: {st}\n{}",
                    engine.dockerd.display(),
                    engine.logs()
                );
            }
            if engine.sock().exists() {
                let o = engine.command_output(&["version"], None, Duration::from_secs(10));
                if o.status.success() {
                    break;
                }
                last = out_text(&o);
            }
            if start.elapsed() > ENGINE_WAIT {
                panic!(
                    "dockerd did not answer `docker version` within {ENGINE_WAIT:?} \
                     (last: {last})\n{}",
                    engine.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        engine.started_in = start.elapsed();
        eprintln!("dockerd ready in {:?}", engine.started_in);
        engine
    }

    pub fn sock(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.sock().display())
    }

    /// Everything dockerd logged so far.
    pub fn log_text(&self) -> String {
        fs::read(self.dir.path().join("dockerd.log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// dockerd's errors and warnings (the last 30; with the errors of the
    /// HTTPS attempts, logged at info as "Attempting next endpoint … after
    /// error") and the tail of its log.
    pub fn logs(&self) -> String {
        let text = self.log_text();
        let errors: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.contains("level=error")
                    || l.contains("level=warning")
                    || l.contains("Attempting next endpoint")
            })
            .collect();
        let from = errors.len().saturating_sub(30);
        format!(
            "--- dockerd errors (last 30)\n{}\n--- dockerd log (tail)\n{}",
            errors[from..].join("\n"),
            tail(&self.dir.path().join("dockerd.log"), 15)
        )
    }

    /// `docker ARGS` against this engine with the config dir `config`
    /// (none: the engine's own, empty).
    pub fn command(&self, config: Option<&Path>, args: &[&str]) -> Command {
        let config = config
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.dir.path().join("config"));
        let mut cmd = Command::new(&self.docker);
        cmd.args(args)
            .env("DOCKER_HOST", self.docker_host())
            .env("DOCKER_CONFIG", config)
            // the classic builder: `FROM scratch` + COPY, no buildx needed
            .env("DOCKER_BUILDKIT", "0")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH");
        cmd
    }

    fn command_output(&self, args: &[&str], stdin: Option<&str>, limit: Duration) -> Output {
        run_bounded(
            &mut self.command(None, args),
            stdin,
            limit,
            &format!("docker {args:?}"),
        )
    }

    /// A `docker` CLI with a fresh `DOCKER_CONFIG` of its own (its logins
    /// stay in it).
    pub fn client(&self) -> Docker<'_> {
        Docker {
            engine: self,
            config: tempfile::Builder::new()
                .prefix("pc-docker-config-")
                .tempdir()
                .unwrap(),
        }
    }

    /// Makes the engine trust `proxy`'s CA for `127.0.0.1:PORT` (its
    /// `certs.d` entry is removed when the engine stops).
    pub fn trust(&self, proxy: &Proxy) {
        self.trust_ca(proxy.port(), &proxy.ca.pem);
    }

    /// Makes the engine trust the CA `ca_pem` for `127.0.0.1:PORT` (a proxy
    /// not started by the harness: in a container).
    pub fn trust_ca(&self, port: u16, ca_pem: &str) {
        let dir = Path::new(CERTS_D).join(format!("127.0.0.1:{port}"));
        fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("{}: {e} (the engine tests run as root)", dir.display()));
        fs::write(dir.join("ca.crt"), ca_pem).unwrap();
        self.trusted.borrow_mut().push(dir);
    }

    /// Makes the engine trust `ca_pem` for `host` (`name:PORT`) and present
    /// the client certificate `client` (PEM of the certificate, of the key)
    /// there; removed when the engine stops.
    pub fn trust_with_client_cert(&self, host: &str, ca_pem: &str, client: (&str, &str)) {
        let dir = Path::new(CERTS_D).join(host);
        fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("{}: {e} (the engine tests run as root)", dir.display()));
        fs::write(dir.join("ca.crt"), ca_pem).unwrap();
        fs::write(dir.join("client.cert"), client.0).unwrap();
        fs::write(dir.join("client.key"), client.1).unwrap();
        self.trusted.borrow_mut().push(dir);
    }

    /// A `docker` CLI that builds with BuildKit (`RUN --mount`): one with
    /// the buildx plugin, or Debian's 20.10 CLI (`/usr/bin/docker`), whose
    /// builder is built in (`DOCKER_BUILDKIT=1`). A newer CLI without
    /// buildx cannot: it only has the classic builder.
    pub fn buildkit_cli(&self) -> PathBuf {
        let mut candidates = vec![self.docker.clone()];
        if Path::new("/usr/bin/docker").is_file() {
            candidates.push(PathBuf::from("/usr/bin/docker"));
        }
        for cli in &candidates {
            let plugin = Command::new(cli)
                .args(["buildx", "version"])
                .env("DOCKER_CONFIG", self.dir.path().join("config"))
                .output();
            if plugin.is_ok_and(|o| o.status.success()) {
                return cli.clone();
            }
            let version = Command::new(cli)
                .args(["version", "--format", "{{.Client.Version}}"])
                .env("DOCKER_HOST", self.docker_host())
                .output();
            if let Ok(o) = version {
                let v = String::from_utf8_lossy(&o.stdout);
                let major: u32 = v
                    .split('.')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .parse()
                    .unwrap_or(0);
                // 18.09 to 22.x: BuildKit in the CLI itself
                if (18..23).contains(&major) {
                    return cli.clone();
                }
            }
        }
        panic!(
            "no docker CLI that builds with BuildKit among {candidates:?}: install the \
             buildx plugin, or Debian's docker.io (its /usr/bin/docker 20.10 has BuildKit built in)"
        )
    }

    /// Sends SIGTERM to dockerd (it stops its containerd), waits for it,
    /// SIGKILL after [`ENGINE_WAIT`].
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id() as libc::pid_t;
        // SAFETY: kill(2) on the pid of our own child, not yet reaped
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let start = Instant::now();
        while matches!(child.try_wait(), Ok(None)) {
            if start.elapsed() > ENGINE_WAIT {
                eprintln!("dockerd did not stop on SIGTERM: killing it");
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.unmount_leftovers();
    }

    /// Unmounts what dockerd left mounted under its directory (it keeps
    /// `exec/netns/default`, the host network's namespace, bound after
    /// host-network containers and builds), so the directory can be
    /// removed.
    fn unmount_leftovers(&self) {
        let root = self.dir.path().to_string_lossy().into_owned();
        let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|p| p.starts_with(&format!("{root}/")))
            .collect();
        // the deepest first
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let o = Command::new("umount").args(["--lazy", p]).output();
            if !o.is_ok_and(|o| o.status.success()) {
                eprintln!("umount {p} failed: {} stays behind", root);
            }
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
        for dir in self.trusted.borrow_mut().drain(..) {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// The `docker` CLI on an [`Engine`], with its own `DOCKER_CONFIG`.
pub struct Docker<'a> {
    pub engine: &'a Engine,
    pub config: TempDir,
}

impl Docker<'_> {
    /// `$DOCKER_CONFIG/config.json` (`{}` when the CLI has not written it).
    pub fn config_json(&self) -> serde_json::Value {
        match fs::read(self.config_path()) {
            Ok(b) => serde_json::from_slice(&b).expect("config.json is JSON"),
            Err(_) => serde_json::json!({}),
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.config.path().join("config.json")
    }

    /// The `auths` entry of `host` in config.json, if any.
    pub fn auth_entry(&self, host: &str) -> Option<serde_json::Value> {
        self.config_json()
            .get("auths")
            .and_then(|a| a.get(host))
            .cloned()
    }

    /// `Cli::run` without stdin, asserting it worked (with the
    /// engine's log if not).
    fn run_ok(&self, what: &str, args: &[&str]) -> Output {
        let o = self.run(args, None);
        assert!(
            o.status.success(),
            "{what}: {}\n{}",
            out_text(&o),
            self.engine.logs()
        );
        o
    }

    /// `docker inspect --format FORMAT image`, asserting it worked; trimmed.
    pub fn inspect(&self, format: &str, image: &str) -> String {
        let o = self.run_ok(
            &format!("docker inspect {image}"),
            &["inspect", "--format", format, image],
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// The image ID (`sha256:…` of its config) of a local image.
    pub fn image_id(&self, image: &str) -> String {
        self.inspect("{{.Id}}", image)
    }

    /// Whether the engine holds `image` (a name, name:tag or ID).
    pub fn has_image(&self, image: &str) -> bool {
        self.run(&["image", "inspect", image], None)
            .status
            .success()
    }

    /// Builds `tag` `FROM scratch` with `layers` COPY layers of generated
    /// files (different for each `seed`), with the classic builder, in a
    /// context dir that holds only those files; returns the image ID.
    pub fn build_scratch(&self, tag: &str, layers: usize, seed: u64) -> String {
        let ctx = tempfile::Builder::new()
            .prefix("pc-docker-context-")
            .tempdir()
            .unwrap();
        let mut dockerfile = String::from("FROM scratch\n");
        for i in 0..layers {
            let name = format!("layer{i}.bin");
            let data = pseudo_random(32 * 1024 * (i + 1), seed * 1000 + i as u64);
            fs::write(ctx.path().join(&name), data).unwrap();
            dockerfile.push_str(&format!("COPY {name} /data/{name}\n"));
        }
        dockerfile.push_str(&format!("LABEL portcullis.test.tag=\"{tag}\"\n"));
        fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
        let context = ctx.path().to_str().unwrap();
        self.run_ok(
            &format!("docker build {tag}"),
            &["build", "--tag", tag, context],
        );
        self.image_id(tag)
    }
}

impl Docker<'_> {
    /// `docker build ARGS` with BuildKit ([`Engine::buildkit_cli`]),
    /// `--progress plain`, asserting it worked; its output.
    pub fn build_kit(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(self.engine.buildkit_cli());
        cmd.args(["build", "--progress", "plain"])
            .args(args)
            .env("DOCKER_HOST", self.engine.docker_host())
            .env("DOCKER_CONFIG", self.config.path())
            .env("DOCKER_BUILDKIT", "1")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH");
        let o = run_bounded(
            &mut cmd,
            None,
            BUILD_WAIT,
            &format!("docker build {args:?}"),
        );
        assert!(
            o.status.success(),
            "docker build {args:?}: {}\n{}",
            out_text(&o),
            self.engine.logs()
        );
        both(&o)
    }

    /// `docker ARGS`, asserting it worked; trimmed stdout.
    pub fn stdout_ok(&self, args: &[&str]) -> String {
        let o = self.run_ok(&format!("docker {args:?}"), args);
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }
}

impl Cli for Docker<'_> {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        run_bounded(
            &mut self.engine.command(Some(self.config.path()), args),
            stdin,
            DOCKER_COMMAND,
            &format!("docker {args:?}"),
        )
    }
}

/// The proxy's access-log lines (the tracing target `access`), in order.
pub fn access_lines(proxy: &Proxy) -> Vec<String> {
    proxy
        .log_text()
        .lines()
        .filter(|l| l.contains(" access: "))
        .map(str::to_string)
        .collect()
}

/// `client:status` of each access line of `path`, in order: who the proxy
/// saw behind a balancer.
pub fn clients_of(proxy: &Proxy, path: &str) -> Vec<String> {
    access_lines(proxy)
        .into_iter()
        .filter(|l| log_field(l, "path") == Some(path))
        .map(|l| {
            format!(
                "{}:{}",
                log_field(&l, "client").unwrap_or("?"),
                log_field(&l, "status").unwrap_or("?")
            )
        })
        .collect()
}

/// The value of `key=` in a `key=value` log line (quotes stripped).
pub fn log_field<'l>(line: &'l str, key: &str) -> Option<&'l str> {
    let pat = format!(" {key}=");
    let i = line.find(&pat)? + pat.len();
    let rest = &line[i..];
    Some(match rest.strip_prefix('"') {
        Some(q) => q.split('"').next().unwrap_or(""),
        None => rest.split(' ').next().unwrap_or(""),
    })
}
