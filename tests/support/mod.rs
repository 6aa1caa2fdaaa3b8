//! Test harness: starts a real `docker-registry` and a real `portcullis serve`
//! on loopback ports, with certificates, htpasswd and proxy.toml in temp dirs.
//!
//! Every wait loop is bounded and panics with the tail of the process logs.
#![allow(dead_code)]

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use reqwest::blocking::{Client, RequestBuilder};
use reqwest::Method;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

pub mod pebble;
pub mod prometheus;
pub mod slapd;

pub const USER: &str = "alice";
pub const PASS: &str = "alice-S3cret:with-colon";
pub const REALM: &str = "Docker Registry Realm";
/// Upper bound of every wait loop.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_portcullis")
}

/// Runs the portcullis binary with `args`, optional stdin, and returns its output.
pub fn portcullis(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn portcullis");
    if let Some(input) = stdin {
        let mut s = child.stdin.take().unwrap();
        s.write_all(input.as_bytes()).unwrap();
        drop(s);
    }
    wait_output(
        child,
        Duration::from_secs(60),
        &format!("portcullis {args:?}"),
    )
}

/// `child.wait_with_output()` with an upper bound (kills the child on timeout).
pub fn wait_output(mut child: Child, limit: Duration, what: &str) -> Output {
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_end(&mut v);
        }
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_end(&mut v);
        }
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

pub fn out_text(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// An ephemeral loopback port (bind :0, read the port, drop the listener).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// Polls `f` every 50 ms until it returns true, at most `limit`; panics with
/// `what` and the diagnostics from `diag` otherwise.
pub fn wait_until(what: &str, limit: Duration, f: impl FnMut() -> bool, diag: impl Fn() -> String) {
    wait_until_every(what, limit, Duration::from_millis(50), f, diag)
}

/// [`wait_until`] polling every `every`.
pub fn wait_until_every(
    what: &str,
    limit: Duration,
    every: Duration,
    mut f: impl FnMut() -> bool,
    diag: impl Fn() -> String,
) {
    let start = Instant::now();
    loop {
        if f() {
            return;
        }
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for: {what}\n{}", diag());
        }
        std::thread::sleep(every);
    }
}

/// Last `n` lines of a file (empty if it does not exist).
pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    lines[from..].join("\n")
}

pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// Deterministic pseudo-random bytes (xorshift64*), for blob contents.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    v.truncate(len);
    v
}

fn kill_child(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_millis(200),
    )
    .is_ok()
}

// ---------------------------------------------------------------------------
// docker-registry
// ---------------------------------------------------------------------------

pub struct Registry {
    pub dir: TempDir,
    port: u16,
    child: Option<Child>,
    log: PathBuf,
}

impl Registry {
    pub fn start() -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("portcullis-reg-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: portcullis-test-secret\n",
            root = dir.path().join("data").display()
        );
        fs::write(dir.path().join("config.yml"), config).unwrap();
        let log = dir.path().join("registry.log");
        let mut r = Registry {
            dir,
            port,
            child: None,
            log,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn /usr/bin/docker-registry");
        self.child = Some(child);
        let url = format!("{}/v2/", self.url());
        let client = Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.as_mut().unwrap().try_wait() {
                panic!("docker-registry exited: {st}\n{}", tail(&self.log, 40));
            }
            if matches!(client.get(&url).send(), Ok(r) if r.status() == 200) {
                return;
            }
            if start.elapsed() > WAIT {
                panic!(
                    "docker-registry did not answer GET {url} within {WAIT:?}\n{}",
                    tail(&self.log, 40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the registry and waits until its port is closed.
    pub fn stop(&mut self) {
        kill_child(&mut self.child);
        let port = self.port;
        wait_until(
            "registry port closed",
            WAIT,
            || !port_open(port),
            || tail(&self.log, 20),
        );
    }

    /// Starts the registry again on the same port with the same storage.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "registry still running");
        self.spawn();
    }

    /// Everything the registry logged so far (it logs each request it served).
    pub fn registry_log(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The request URIs the registry logged, from both of its log forms: the
    /// app log (`http.request.uri=...`, only for routed requests) and the
    /// access log (`"GET /uri HTTP/1.1"`, for every request, routed or not).
    pub fn logged_uris(&self) -> Vec<String> {
        let mut uris = Vec::new();
        for l in self.registry_log().lines() {
            if let Some(i) = l.find("http.request.uri=") {
                let rest = &l[i + "http.request.uri=".len()..];
                let v = if let Some(r) = rest.strip_prefix('"') {
                    r.split('"').next().unwrap_or("")
                } else {
                    rest.split(' ').next().unwrap_or("")
                };
                uris.push(v.to_string());
            } else if let Some(i) = l.find("] \"") {
                // 127.0.0.1 - - [date] "GET /v2/ HTTP/1.1" 200 2 "" "agent"
                let req = l[i + 3..].split('"').next().unwrap_or("");
                let mut parts = req.split(' ');
                if let (Some(_method), Some(uri)) = (parts.next(), parts.next()) {
                    uris.push(uri.to_string());
                }
            }
        }
        uris
    }

    /// A plain HTTP client talking to the registry directly (bypassing the proxy).
    pub fn direct(&self) -> Client {
        Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap()
    }

    /// The manifest the registry itself holds as `repo:tag` (OCI or Docker
    /// schema 2, as it was pushed); fails the test if there is none.
    pub fn stored_manifest(&self, repo: &str, tag: &str) -> serde_json::Value {
        let r = self
            .direct()
            .get(format!("{}/v2/{repo}/manifests/{tag}", self.url()))
            .header(
                "accept",
                "application/vnd.oci.image.manifest.v1+json, \
                 application/vnd.docker.distribution.manifest.v2+json",
            )
            .send()
            .unwrap();
        assert_eq!(
            r.status(),
            200,
            "{repo}:{tag}: manifest not in the registry"
        );
        r.json().unwrap()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

// ---------------------------------------------------------------------------
// certificates
// ---------------------------------------------------------------------------

pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    pub pem: String,
}

#[derive(Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let pem = cert.pem();
        Ca { cert, key, pem }
    }

    /// A server certificate for 127.0.0.1 and localhost signed by this CA.
    pub fn leaf(&self, common_name: &str) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

// ---------------------------------------------------------------------------
// htpasswd
// ---------------------------------------------------------------------------

/// Adds (or replaces) a bcrypt entry with Apache's `htpasswd -B -C 5`.
pub fn htpasswd_add(file: &Path, user: &str, pass: &str) {
    let mut cmd = Command::new("htpasswd");
    if !file.exists() {
        cmd.arg("-c");
    }
    let o = cmd
        .args(["-B", "-C", "5", "-b"])
        .arg(file)
        .arg(user)
        .arg(pass)
        .output()
        .expect("run htpasswd");
    assert!(o.status.success(), "htpasswd -B failed: {}", out_text(&o));
}

/// An htpasswd line (`user:hash`) produced by `htpasswd -n` with the given flags.
pub fn htpasswd_line(flags: &[&str], user: &str, pass: &str) -> String {
    let o = Command::new("htpasswd")
        .arg("-n")
        .args(flags)
        .arg("-b")
        .arg(user)
        .arg(pass)
        .output()
        .unwrap();
    assert!(o.status.success(), "htpasswd -n failed: {}", out_text(&o));
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

/// Writes `content` to `path` atomically (temp file in the same dir + rename).
pub fn write_atomic(path: &Path, content: &[u8]) {
    let tmp = path.with_extension(format!("tmp{}", rand::random::<u32>()));
    fs::write(&tmp, content).unwrap();
    fs::rename(&tmp, path).unwrap();
}

// ---------------------------------------------------------------------------
// portcullis
// ---------------------------------------------------------------------------

#[derive(Clone)]
pub struct ProxyOptions {
    pub users: Vec<(String, String)>,
    /// Upstream URL; defaults to the registry's.
    pub upstream_url: Option<String>,
    /// Put cert/key in a certbot layout (live/ symlinks into archive/).
    pub certbot_layout: bool,
    pub watch_interval: String,
    /// Raw TOML lines added to the `[server]` table.
    pub extra_server: String,
    /// Raw TOML appended to the generated config.
    pub extra_toml: String,
    /// Raw TOML lines added to the `[auth]` table (e.g. `mode = "token"`).
    pub extra_auth: String,
    /// Raw TOML lines added to the `[upstream]` table.
    pub extra_upstream: String,
    /// The TLS listener's address without the port (`[::]` for a
    /// dual-stack listener); default `127.0.0.1`.
    pub listen_host: String,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            users: vec![(USER.to_string(), PASS.to_string())],
            upstream_url: None,
            certbot_layout: false,
            watch_interval: "200ms".to_string(),
            extra_server: String::new(),
            extra_toml: String::new(),
            extra_auth: String::new(),
            extra_upstream: String::new(),
            listen_host: "127.0.0.1".to_string(),
        }
    }
}

pub const CERTBOT_NAME: &str = "registry.test";

pub struct Proxy {
    pub dir: TempDir,
    port: u16,
    child: Option<Child>,
    pub ca: Ca,
    /// The certificate the proxy was started with.
    pub leaf: Leaf,
    pub opts: ProxyOptions,
    client: Client,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Proxy {
    pub fn start(reg: &Registry, opts: ProxyOptions) -> Proxy {
        let up = opts.upstream_url.clone().unwrap_or_else(|| reg.url());
        Self::start_upstream(&up, opts)
    }

    pub fn start_upstream(upstream: &str, mut opts: ProxyOptions) -> Proxy {
        opts.upstream_url = Some(upstream.to_string());
        let dir = tempfile::Builder::new()
            .prefix("portcullis-proxy-")
            .tempdir()
            .unwrap();
        let ca = Ca::new("portcullis test CA");
        let leaf = ca.leaf("portcullis-test-initial");
        fs::create_dir_all(dir.path().join("certs.d")).unwrap();
        fs::write(dir.path().join("certs.d/ca.crt"), &ca.pem).unwrap();
        fs::write(dir.path().join("ca.pem"), &ca.pem).unwrap();
        let port = free_port();

        let (cert_path, key_path) = if opts.certbot_layout {
            let archive = dir.path().join("archive").join(CERTBOT_NAME);
            let live = dir.path().join("live").join(CERTBOT_NAME);
            fs::create_dir_all(&archive).unwrap();
            fs::create_dir_all(&live).unwrap();
            fs::write(archive.join("fullchain1.pem"), &leaf.cert_pem).unwrap();
            fs::write(archive.join("privkey1.pem"), &leaf.key_pem).unwrap();
            symlink(
                format!("../../archive/{CERTBOT_NAME}/privkey1.pem"),
                live.join("privkey.pem"),
            )
            .unwrap();
            symlink(
                format!("../../archive/{CERTBOT_NAME}/fullchain1.pem"),
                live.join("fullchain.pem"),
            )
            .unwrap();
            (live.join("fullchain.pem"), live.join("privkey.pem"))
        } else {
            let c = dir.path().join("cert.pem");
            let k = dir.path().join("key.pem");
            fs::write(&c, &leaf.cert_pem).unwrap();
            fs::write(&k, &leaf.key_pem).unwrap();
            (c, k)
        };

        let htpasswd = dir.path().join("htpasswd");
        for (u, p) in &opts.users {
            htpasswd_add(&htpasswd, u, p);
        }
        if opts.users.is_empty() {
            fs::write(&htpasswd, "").unwrap();
        }

        // a short default grace keeps test teardown quick; tests of the
        // shutdown itself set their own
        let grace = if opts.extra_server.contains("grace_period") {
            ""
        } else {
            "grace_period = \"1s\""
        };
        let config = format!(
            r#"[server]
listen = "{listen_host}:{port}"
watch_interval = "{watch}"
{grace}
{extra_server}

[upstream]
url = "{upstream}"
{extra_upstream}

[tls]
cert = "{cert}"
key = "{key}"

[auth]
realm = "{REALM}"
{extra_auth}

[auth.htpasswd]
path = "{htpasswd}"

{metrics}
[log]
level = "info"
{extra}
"#,
            watch = opts.watch_interval,
            cert = cert_path.display(),
            key = key_path.display(),
            htpasswd = htpasswd.display(),
            extra = opts.extra_toml,
            // the admin listener's default port would collide between
            // parallel tests: off unless a test configures it
            metrics = if opts.extra_toml.contains("[metrics]") {
                ""
            } else {
                "[metrics]\nenabled = false\n"
            },
            extra_server = opts.extra_server,
            extra_auth = opts.extra_auth,
            extra_upstream = opts.extra_upstream,
            listen_host = opts.listen_host,
        );
        fs::write(dir.path().join("proxy.toml"), config).unwrap();

        let stdout = dir.path().join("portcullis.stdout");
        let stderr = dir.path().join("portcullis.stderr");
        let child = Command::new(bin())
            .arg("serve")
            .arg("--config")
            .arg(dir.path().join("proxy.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(File::create(&stdout).unwrap()))
            .stderr(Stdio::from(File::create(&stderr).unwrap()))
            .spawn()
            .expect("spawn portcullis serve");

        let client = Self::build_client(&ca.pem, false);
        let mut p = Proxy {
            dir,
            port,
            child: Some(child),
            ca,
            leaf,
            opts,
            client,
            stdout,
            stderr,
        };
        let url = p.url("/v2/");
        let probe = Self::build_client(&p.ca.pem, false);
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = p.child.as_mut().unwrap().try_wait() {
                panic!("portcullis serve exited early: {st}\n{}", p.logs());
            }
            if probe
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .is_ok()
            {
                break;
            }
            if start.elapsed() > Duration::from_secs(30) {
                panic!(
                    "portcullis did not answer GET {url} within 30s\n{}",
                    p.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    }

    fn build_client(ca_pem: &str, http1: bool) -> Client {
        let mut b = Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
            .tls_built_in_root_certs(false)
            .tls_info(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(120));
        if http1 {
            b = b.http1_only();
        }
        b.build().unwrap()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("proxy running").id()
    }

    pub fn base(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base(), path)
    }

    /// Shared client (HTTP/2 via ALPN when offered), trusting the test CA only.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// A fresh client (fresh connections), optionally HTTP/1.1 only.
    pub fn new_client(&self, http1: bool) -> Client {
        Self::build_client(&self.ca.pem, http1)
    }

    /// A request with the default user's credentials.
    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, self.url(path))
            .basic_auth(USER, Some(PASS))
    }

    pub fn ca_pem_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A directory holding `ca.crt` (for skopeo/podman `--cert-dir`).
    pub fn cert_dir(&self) -> PathBuf {
        self.dir.path().join("certs.d")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("proxy.toml")
    }

    pub fn htpasswd_path(&self) -> PathBuf {
        self.dir.path().join("htpasswd")
    }

    pub fn cert_path(&self) -> PathBuf {
        if self.opts.certbot_layout {
            self.dir
                .path()
                .join("live")
                .join(CERTBOT_NAME)
                .join("fullchain.pem")
        } else {
            self.dir.path().join("cert.pem")
        }
    }

    pub fn key_path(&self) -> PathBuf {
        if self.opts.certbot_layout {
            self.dir
                .path()
                .join("live")
                .join(CERTBOT_NAME)
                .join("privkey.pem")
        } else {
            self.dir.path().join("key.pem")
        }
    }

    /// Replaces key and cert by writing new files and renaming them over the old ones.
    pub fn replace_cert_atomic(&self, cert_pem: &str, key_pem: &str) {
        write_atomic(&self.key_path(), key_pem.as_bytes());
        write_atomic(&self.cert_path(), cert_pem.as_bytes());
    }

    /// certbot-style renewal: new archive files `fullchainN.pem`/`privkeyN.pem`,
    /// then the live/ symlinks are re-pointed (unlink + symlink, key first, as certbot does).
    pub fn certbot_renew(&self, n: u32, cert_pem: &str, key_pem: &str) {
        assert!(self.opts.certbot_layout);
        let archive = self.dir.path().join("archive").join(CERTBOT_NAME);
        let live = self.dir.path().join("live").join(CERTBOT_NAME);
        fs::write(archive.join(format!("fullchain{n}.pem")), cert_pem).unwrap();
        fs::write(archive.join(format!("privkey{n}.pem")), key_pem).unwrap();
        for (link, target) in [
            ("privkey.pem", format!("privkey{n}.pem")),
            ("fullchain.pem", format!("fullchain{n}.pem")),
        ] {
            let l = live.join(link);
            fs::remove_file(&l).unwrap();
            symlink(format!("../../archive/{CERTBOT_NAME}/{target}"), &l).unwrap();
        }
    }

    /// The leaf certificate (DER) a brand-new TLS connection is served.
    pub fn served_cert(&self) -> Result<Vec<u8>, String> {
        let c = Self::build_client(&self.ca.pem, true);
        let resp = c
            .get(self.url("/v2/"))
            .timeout(Duration::from_secs(5))
            .send()
            .map_err(|e| format!("{e:?}"))?;
        let info = resp
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .ok_or("no TlsInfo")?;
        info.peer_certificate()
            .map(|d| d.to_vec())
            .ok_or_else(|| "no peer certificate".to_string())
    }

    /// Polls new connections until the served certificate is `der`.
    pub fn wait_for_cert(&self, der: &[u8], what: &str) {
        let mut last;
        let start = Instant::now();
        loop {
            match self.served_cert() {
                Ok(d) if d == der => return,
                Ok(_) => last = "old/other certificate served".into(),
                Err(e) => last = e,
            }
            if start.elapsed() > WAIT {
                panic!(
                    "{what}: new certificate not served within {WAIT:?} (last: {last})\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Tail of the proxy's stdout and stderr.
    pub fn logs(&self) -> String {
        format!(
            "--- portcullis stdout (tail)\n{}\n--- portcullis stderr (tail)\n{}",
            tail(&self.stdout, 40),
            tail(&self.stderr, 60)
        )
    }

    fn status_kib(&self, field: &str) -> u64 {
        let s = fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        s.lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{field} not in /proc/PID/status"))
    }

    /// Current resident set size in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// Peak resident set size (VmHWM) in KiB.
    pub fn hwm_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Sends a request with curl exactly as given (`--path-as-is`), so raw
    /// paths such as `/v2/../x` or `%2e%2e` reach the proxy unchanged.
    /// `extra` are additional curl arguments (e.g. `-u user:pass`, `--http2`, `-X POST`).
    pub fn curl(&self, path: &str, extra: &[&str]) -> RawResponse {
        let tmp = tempfile::tempdir().unwrap();
        let hdr = tmp.path().join("h");
        let body = tmp.path().join("b");
        let o = Command::new("curl")
            .args(["-sS", "--path-as-is", "--max-time", "30", "--cacert"])
            .arg(self.ca_pem_path())
            .arg("-D")
            .arg(&hdr)
            .arg("-o")
            .arg(&body)
            .args(extra)
            .arg(self.url(path))
            .output()
            .expect("run curl");
        assert!(
            o.status.success(),
            "curl {path} failed: {}\n{}",
            out_text(&o),
            self.logs()
        );
        RawResponse::parse(
            &fs::read_to_string(&hdr).unwrap(),
            fs::read(&body).unwrap_or_default(),
        )
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

/// A response read by curl: the last header block and the body.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    fn parse(headers: &str, body: Vec<u8>) -> RawResponse {
        // curl -D writes one block per response (100 Continue etc.): keep the last.
        let blocks: Vec<&str> = headers
            .split("\r\n\r\n")
            .filter(|b| !b.trim().is_empty())
            .collect();
        let last = blocks.last().copied().unwrap_or("");
        let mut lines = last.lines();
        let status_line = lines.next().unwrap_or("");
        let mut parts = status_line.split_whitespace();
        let version = parts.next().unwrap_or("").to_string();
        let status = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        RawResponse {
            status,
            version,
            headers,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        let n = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == n)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

// ---------------------------------------------------------------------------
// assertions on registry-style responses
// ---------------------------------------------------------------------------

/// Parses `body` as a registry error body and returns the error codes.
pub fn error_codes(body: &[u8]) -> Result<Vec<String>, String> {
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| format!("not JSON ({e}): {:?}", String::from_utf8_lossy(body)))?;
    let errs = v
        .get("errors")
        .and_then(|e| e.as_array())
        .ok_or_else(|| format!("no \"errors\" array: {v}"))?;
    if errs.is_empty() {
        return Err(format!("empty errors array: {v}"));
    }
    errs.iter()
        .map(|e| {
            e.get("code")
                .and_then(|c| c.as_str())
                .map(str::to_string)
                .ok_or_else(|| format!("error without code: {v}"))
        })
        .collect()
}

/// Asserts the headers every portcullis response must carry.
pub fn assert_common_headers(what: &str, get: impl Fn(&str) -> Option<String>) {
    assert_eq!(
        get("docker-distribution-api-version").as_deref(),
        Some("registry/2.0"),
        "{what}: Docker-Distribution-Api-Version"
    );
    assert_eq!(
        get("x-content-type-options")
            .map(|v| v.to_ascii_lowercase())
            .as_deref(),
        Some("nosniff"),
        "{what}: X-Content-Type-Options"
    );
    let hsts = get("strict-transport-security")
        .unwrap_or_else(|| panic!("{what}: no Strict-Transport-Security header"));
    assert!(
        hsts.contains("max-age="),
        "{what}: Strict-Transport-Security without max-age: {hsts:?}"
    );
}

pub fn header_of(resp: &reqwest::blocking::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap_or("<non-ascii>").to_string())
}

/// A `Location`/`Link` target must point at the proxy: relative, or absolute on the proxy's origin.
pub fn assert_points_at_proxy(what: &str, target: &str, proxy: &Proxy, upstream_port: u16) {
    assert!(
        !target.contains(&format!(":{upstream_port}")),
        "{what}: {target:?} points at the upstream port {upstream_port}"
    );
    assert!(
        target.starts_with('/') || target.starts_with(&format!("{}/", proxy.base())),
        "{what}: {target:?} is neither relative nor on {}",
        proxy.base()
    );
}

/// Resolves a `Location` value against the proxy.
pub fn absolute(proxy: &Proxy, location: &str) -> String {
    if location.starts_with("https://") || location.starts_with("http://") {
        location.to_string()
    } else {
        proxy.url(location)
    }
}

// ---------------------------------------------------------------------------
// v2 API helpers through the proxy
// ---------------------------------------------------------------------------

/// Monolithic upload (POST, then PUT with the body and ?digest=). Returns the digest.
pub fn push_blob(proxy: &Proxy, repo: &str, data: &[u8]) -> String {
    let digest = sha256_digest(data);
    let r = proxy
        .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
        .send()
        .unwrap();
    assert_eq!(
        r.status(),
        202,
        "POST upload for {repo}: {:?}\n{}",
        r.text(),
        proxy.logs()
    );
    let loc = header_of(&r, "location").expect("upload Location");
    let sep = if loc.contains('?') { '&' } else { '?' };
    let put = format!("{}{sep}digest={digest}", absolute(proxy, &loc));
    let r = proxy
        .client()
        .put(put)
        .basic_auth(USER, Some(PASS))
        .header("content-type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "PUT blob for {repo}: {:?}", r.text());
    digest
}

/// Pushes a small image manifest (config + one layer) under `tag`; returns (manifest bytes, digest).
pub fn push_image(proxy: &Proxy, repo: &str, tag: &str) -> (Vec<u8>, String) {
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":[]}},"tag":"{tag}"}}"#
    );
    let cfg_digest = push_blob(proxy, repo, config.as_bytes());
    let layer = pseudo_random(4096, tag.len() as u64 + 7);
    let layer_digest = push_blob(proxy, repo, &layer);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer.len()}],
    }))
    .unwrap();
    let r = proxy
        .req(Method::PUT, &format!("/v2/{repo}/manifests/{tag}"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "PUT manifest {repo}:{tag}: {:?}", r.text());
    let digest = sha256_digest(&manifest);
    (manifest, digest)
}

// ---------------------------------------------------------------------------
// fake upstream that records requests
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
}

impl RecordedRequest {
    pub fn header_values(&self, name: &str) -> Vec<String> {
        let n = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(k, _)| *k == n)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// A tiny HTTP/1.1 upstream on loopback that records every request head and
/// answers 200 `{}` — or, for `POST .../blobs/uploads/`, 202 with an absolute
/// `Location` on its own address; for `/tags/list`, a `Link` on its own address.
pub struct EchoUpstream {
    port: u16,
    pub requests: Arc<Mutex<Vec<RecordedRequest>>>,
}

impl EchoUpstream {
    pub fn start() -> EchoUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let reqs = requests.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                let reqs = reqs.clone();
                std::thread::spawn(move || {
                    let _ = serve_echo(conn, port, reqs);
                });
            }
        });
        EchoUpstream { port, requests }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn recorded(&self) -> Vec<RecordedRequest> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve_echo(
    conn: TcpStream,
    port: u16,
    reqs: Arc<Mutex<Vec<RecordedRequest>>>,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut writer = conn.try_clone()?;
    let mut reader = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim_end().to_string();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body)?;
        let close = headers
            .iter()
            .any(|(k, v)| k == "connection" && v.eq_ignore_ascii_case("close"));
        reqs.lock().unwrap().push(RecordedRequest {
            method: method.clone(),
            target: target.clone(),
            headers,
        });

        let path = target.split('?').next().unwrap_or("").to_string();
        let mut extra = String::new();
        let status = if method == "POST" && path.ends_with("/blobs/uploads/") {
            extra.push_str(&format!(
                "Location: http://127.0.0.1:{port}{path}0a1b2c3d-uuid?_state=abc\r\nDocker-Upload-Uuid: 0a1b2c3d-uuid\r\nRange: 0-0\r\n"
            ));
            "202 Accepted"
        } else {
            if path.ends_with("/tags/list") {
                extra.push_str(&format!(
                    "Link: <http://127.0.0.1:{port}{path}?last=a&n=1>; rel=\"next\"\r\n"
                ));
            }
            "200 OK"
        };
        let body = if status.starts_with("202") { "" } else { "{}" };
        let resp = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nDocker-Distribution-Api-Version: registry/2.0\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        writer.write_all(resp.as_bytes())?;
        writer.flush()?;
        if close {
            let _ = writer.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
}

// ---------------------------------------------------------------------------
// OCI image layout built by hand (for skopeo / podman)
// ---------------------------------------------------------------------------

pub struct OciImage {
    pub dir: PathBuf,
    pub tag: String,
    pub layer_digests: Vec<String>,
    pub config_digest: String,
    pub manifest_digest: String,
}

impl OciImage {
    /// Asserts that the registry itself (not the proxy) holds this image as
    /// `repo:tag`: its manifest names exactly these layers and this config.
    pub fn assert_stored(&self, reg: &Registry, repo: &str, tag: &str) {
        let m = reg.stored_manifest(repo, tag);
        let layers: Vec<String> = m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(layers, self.layer_digests, "layers stored in the registry");
        assert_eq!(m["config"]["digest"].as_str().unwrap(), self.config_digest);
    }
}

/// Builds an OCI image layout in `dir` with `layers` gzip'd tar layers
/// (each with a text file and some pseudo-random bytes).
pub fn make_oci_layout(dir: &Path, tag: &str, layers: usize, seed: u64) -> OciImage {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| -> String {
        let d = sha256_digest(data);
        fs::write(blobs.join(d.trim_start_matches("sha256:")), data).unwrap();
        d
    };
    let work = tempfile::tempdir().unwrap();
    let mut layer_descs = Vec::new();
    let mut diff_ids = Vec::new();
    let mut layer_digests = Vec::new();
    for i in 0..layers {
        let root = work.path().join(format!("layer{i}"));
        fs::create_dir_all(root.join(format!("data{i}"))).unwrap();
        fs::write(
            root.join(format!("data{i}/hello{i}.txt")),
            format!("layer {i} of {tag} seed {seed}\n"),
        )
        .unwrap();
        fs::write(
            root.join(format!("data{i}/random.bin")),
            pseudo_random(64 * 1024 * (i + 1), seed * 31 + i as u64),
        )
        .unwrap();
        let tar = Command::new("tar")
            .args([
                "--sort=name",
                "--mtime=@0",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "-C",
            ])
            .arg(&root)
            .args(["-cf", "-", "."])
            .output()
            .unwrap();
        assert!(tar.status.success(), "tar: {}", out_text(&tar));
        diff_ids.push(sha256_digest(&tar.stdout));
        let mut gz = Command::new("gzip")
            .args(["-n", "-c"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = gz.stdin.take().unwrap();
        let input = tar.stdout.clone();
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let out = gz.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        let d = put(&out.stdout);
        layer_digests.push(d.clone());
        layer_descs.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": out.stdout.len()
        }));
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/bin"], "Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": (0..layers).map(|i| serde_json::json!({"created_by": format!("layer {i}")})).collect::<Vec<_>>(),
    }))
    .unwrap();
    let config_digest = put(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": layer_descs,
    }))
    .unwrap();
    let manifest_digest = put(&manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    OciImage {
        dir: dir.to_path_buf(),
        tag: tag.to_string(),
        layer_digests,
        config_digest,
        manifest_digest,
    }
}

/// Layer digests of the (single) image in an OCI layout dir.
pub fn oci_layer_digests(dir: &Path) -> Vec<String> {
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let md = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("blobs/sha256").join(md)).unwrap()).unwrap();
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

// ---------------------------------------------------------------------------
// access rules, token auth, throttling: helpers
// ---------------------------------------------------------------------------

impl Registry {
    /// A registry on `port` (or a free one) with `extra_yaml` appended to its
    /// config (top-level keys such as `auth:`). Ready once `GET /v2/`
    /// answers one of `ready` (a registry with its own auth answers 401).
    pub fn start_with(port: Option<u16>, extra_yaml: &str, ready: &[u16]) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("portcullis-reg-")
            .tempdir()
            .unwrap();
        let port = port.unwrap_or_else(free_port);
        let config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: portcullis-test-secret\n{extra_yaml}\n",
            root = dir.path().join("data").display()
        );
        fs::write(dir.path().join("config.yml"), config).unwrap();
        let log = dir.path().join("registry.log");
        let logf = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(logf.try_clone().unwrap()))
            .stderr(Stdio::from(logf))
            .spawn()
            .expect("spawn /usr/bin/docker-registry");
        let mut r = Registry {
            dir,
            port,
            child: Some(child),
            log,
        };
        let url = format!("{}/v2/", r.url());
        let client = Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = r.child.as_mut().unwrap().try_wait() {
                panic!("docker-registry exited: {st}\n{}", tail(&r.log, 40));
            }
            if matches!(client.get(&url).send(), Ok(resp) if ready.contains(&resp.status().as_u16()))
            {
                return r;
            }
            if start.elapsed() > WAIT {
                panic!(
                    "docker-registry did not answer GET {url} with {ready:?} within {WAIT:?}\n{}",
                    tail(&r.log, 40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Pushes a blob straight to the registry (POST, then PUT ?digest=).
pub fn direct_blob(reg: &Registry, repo: &str, data: &[u8]) -> String {
    let c = reg.direct();
    let digest = sha256_digest(data);
    let r = c
        .post(format!("{}/v2/{repo}/blobs/uploads/", reg.url()))
        .send()
        .unwrap();
    assert_eq!(
        r.status(),
        202,
        "direct POST upload to {repo}: {:?}",
        r.text()
    );
    let loc = header_of(&r, "location").expect("upload Location");
    let loc = if loc.starts_with('/') {
        format!("{}{loc}", reg.url())
    } else {
        loc
    };
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = c
        .put(format!("{loc}{sep}digest={digest}"))
        .header("content-type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "direct blob PUT to {repo}: {:?}", r.text());
    digest
}

/// Pushes a small image (config + one layer) straight to the registry,
/// bypassing the proxy. Returns the manifest digest.
pub fn push_image_direct(reg: &Registry, repo: &str, tag: &str) -> String {
    let c = reg.direct();
    let base = reg.url();
    let put_blob = |data: &[u8]| -> String { direct_blob(reg, repo, data) };
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":[]}},"repo":"{repo}","tag":"{tag}"}}"#
    );
    let cfg_digest = put_blob(config.as_bytes());
    let layer = pseudo_random(2048, repo.len() as u64 * 131 + tag.len() as u64);
    let layer_digest = put_blob(&layer);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer.len()}],
    }))
    .unwrap();
    let r = c
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.clone())
        .send()
        .unwrap();
    assert_eq!(
        r.status(),
        201,
        "direct manifest push {repo}:{tag}: {:?}",
        r.text()
    );
    sha256_digest(&manifest)
}

/// `[auth.token]` with the generated key kept in `key_dir`, plus `extra` lines.
pub fn token_toml(key_dir: &Path, extra: &str) -> String {
    format!(
        "\n[auth.token]\nkey_dir = \"{}\"\n{extra}\n",
        key_dir.display()
    )
}

/// Options for a token-mode proxy: `users`, `[[access]]` rules and more TOML.
pub fn token_options(
    users: &[(&str, &str)],
    key_dir: &Path,
    token_extra: &str,
    rules: &str,
) -> ProxyOptions {
    ProxyOptions {
        users: users
            .iter()
            .map(|(u, p)| (u.to_string(), p.to_string()))
            .collect(),
        extra_auth: "mode = \"token\"".into(),
        extra_toml: format!("{}\n{rules}", token_toml(key_dir, token_extra)),
        ..Default::default()
    }
}

/// Options for a Basic-mode proxy: `users` and `[[access]]` rules.
pub fn basic_options(users: &[(&str, &str)], rules: &str) -> ProxyOptions {
    ProxyOptions {
        users: users
            .iter()
            .map(|(u, p)| (u.to_string(), p.to_string()))
            .collect(),
        extra_toml: rules.to_string(),
        ..Default::default()
    }
}

impl Proxy {
    /// A fresh client whose connections come from `local` (e.g. 127.0.0.2).
    pub fn client_from(&self, local: std::net::IpAddr) -> Client {
        Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca.pem.as_bytes()).unwrap())
            .tls_built_in_root_certs(false)
            .redirect(reqwest::redirect::Policy::none())
            .local_address(local)
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap()
    }

    /// `/token?service=container-registry&scope=…` (one `scope` per entry).
    pub fn token_path(&self, scopes: &[&str], offline: bool) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("service", "container-registry");
        for s in scopes {
            q.append_pair("scope", s);
        }
        if offline {
            q.append_pair("offline_token", "true");
        }
        format!("/token?{}", q.finish())
    }

    /// `GET /token` with Basic credentials (or none); returns (status, JSON body).
    pub fn get_token(
        &self,
        creds: Option<(&str, &str)>,
        scopes: &[&str],
        offline: bool,
    ) -> (u16, serde_json::Value) {
        let mut req = self.client.get(self.url(&self.token_path(scopes, offline)));
        if let Some((u, p)) = creds {
            req = req.basic_auth(u, Some(p));
        }
        let r = req.send().unwrap();
        let status = r.status().as_u16();
        let body = r.bytes().unwrap();
        let v = serde_json::from_slice(&body).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&body).into_owned())
        });
        (status, v)
    }

    /// `POST /token` with an OAuth2 form; returns (status, JSON body).
    pub fn post_token(&self, form: &[(&str, &str)]) -> (u16, serde_json::Value) {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let r = self
            .client
            .post(self.url("/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .unwrap();
        let status = r.status().as_u16();
        let bytes = r.bytes().unwrap();
        let v = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
        });
        (status, v)
    }

    /// The refresh grant of `refresh_token` for `scope` (none if empty).
    pub fn refresh(&self, refresh_token: &str, scope: &str) -> (u16, serde_json::Value) {
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("service", "container-registry"),
            ("client_id", "portcullis-tests"),
        ];
        if !scope.is_empty() {
            form.push(("scope", scope));
        }
        self.post_token(&form)
    }

    /// A token (the `token` field) for `scopes`, asserting the endpoint said 200.
    pub fn token(&self, creds: Option<(&str, &str)>, scopes: &[&str]) -> String {
        let (status, v) = self.get_token(creds, scopes, false);
        assert_eq!(status, 200, "GET /token {scopes:?}: {v}\n{}", self.logs());
        v["token"].as_str().expect("token field").to_string()
    }

    /// A request with a Bearer token.
    pub fn bearer(&self, method: Method, path: &str, token: &str) -> RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(token)
    }

    /// A request with the given Basic credentials.
    pub fn req_as(&self, method: Method, path: &str, user: &str, pass: &str) -> RequestBuilder {
        self.client
            .request(method, self.url(path))
            .basic_auth(user, Some(pass))
    }

    /// A request without credentials.
    pub fn anon(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// Full text of the proxy's stderr and stdout (for log assertions).
    pub fn log_text(&self) -> String {
        let read = |p: &Path| {
            fs::read(p)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        };
        format!("{}\n{}", read(&self.stdout), read(&self.stderr))
    }
}

/// The claims (middle part) of a JWT, decoded without verification.
pub fn jwt_claims(token: &str) -> serde_json::Value {
    use base64::Engine;
    let part = token.split('.').nth(1).expect("JWT with three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .expect("base64url claims");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// The JWT with one character of its payload changed (still base64url).
pub fn tamper_jwt(token: &str) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "JWT with three parts");
    let mut payload: Vec<char> = parts[1].chars().collect();
    let i = payload.len() / 2;
    payload[i] = if payload[i] == 'A' { 'B' } else { 'A' };
    let payload: String = payload.into_iter().collect();
    format!("{}.{}.{}", parts[0], payload, parts[2])
}

/// The parameters of a `Bearer k="v",…` or `Basic realm="…"` challenge.
pub fn challenge_params(value: &str) -> (String, std::collections::BTreeMap<String, String>) {
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let mut out = std::collections::BTreeMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let Some((k, after)) = rest.split_once('=') else {
            break;
        };
        let k = k.trim().trim_start_matches(',').trim().to_string();
        let (v, tail) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            (q[..end].to_string(), q.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].to_string(), &after[end..])
        };
        out.insert(k, v);
        rest = tail.trim().trim_start_matches(',').trim();
    }
    (scheme.to_string(), out)
}

/// (status, error codes, WWW-Authenticate) of a response, consuming it.
pub fn status_codes_challenge(
    r: reqwest::blocking::Response,
) -> (u16, Vec<String>, Option<String>) {
    let status = r.status().as_u16();
    let challenge = header_of(&r, "www-authenticate");
    let body = r.bytes().unwrap();
    let codes = error_codes(&body).unwrap_or_else(|e| vec![format!("<{e}>")]);
    (status, codes, challenge)
}

// ---------------------------------------------------------------------------
// skopeo / podman with their state confined to a temp dir
// ---------------------------------------------------------------------------

/// Runs a client program with its auth file, tmp and config dirs in `state`.
pub fn tool_run(state: &Path, program: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let auth = state.join("auth.json");
    if !auth.exists() {
        fs::write(&auth, "{}").unwrap();
    }
    let tmp = state.join("tmp");
    fs::create_dir_all(&tmp).unwrap();
    let mut child = Command::new(program)
        .args(args)
        .env("REGISTRY_AUTH_FILE", &auth)
        .env("TMPDIR", &tmp)
        .env("HOME", state)
        .env("XDG_RUNTIME_DIR", state.join("xdg"))
        .env("XDG_CONFIG_HOME", state.join("config"))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    if let Some(input) = stdin {
        let mut s = child.stdin.take().unwrap();
        s.write_all(input.as_bytes()).unwrap();
    }
    wait_output(
        child,
        Duration::from_secs(240),
        &format!("{program} {args:?}"),
    )
}

/// A podman with its own storage (vfs), run root and auth file.
pub struct PodmanCli {
    pub state: TempDir,
    pub root: PathBuf,
    pub runroot: PathBuf,
}

impl Default for PodmanCli {
    fn default() -> Self {
        Self::new()
    }
}

impl PodmanCli {
    pub fn new() -> PodmanCli {
        let state = tempfile::Builder::new()
            .prefix("portcullis-podman-")
            .tempdir()
            .unwrap();
        let root = state.path().join("root");
        let runroot = state.path().join("runroot");
        PodmanCli {
            state,
            root,
            runroot,
        }
    }

    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let ptmp = self.state.path().join("libpod-tmp");
        let mut all: Vec<String> = vec![
            "--root".into(),
            self.root.display().to_string(),
            "--runroot".into(),
            self.runroot.display().to_string(),
            "--tmpdir".into(),
            ptmp.display().to_string(),
            "--storage-driver".into(),
            "vfs".into(),
            "--events-backend".into(),
            "none".into(),
            "--cgroup-manager".into(),
            "cgroupfs".into(),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        tool_run(self.state.path(), "podman", &refs, stdin)
    }

    /// `containers-storage:` reference of an image in this podman's store.
    pub fn storage_ref(&self, name: &str) -> String {
        format!(
            "containers-storage:[vfs@{}+{}]{name}",
            self.root.display(),
            self.runroot.display()
        )
    }
}

/// stdout + stderr of a client run.
pub fn both(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

impl Proxy {
    /// Whether the proxy process still runs (not exited, not a zombie),
    /// without needing `&mut self`.
    pub fn is_running_ref(&self) -> bool {
        let Some(c) = self.child.as_ref() else {
            return false;
        };
        match fs::read_to_string(format!("/proc/{}/stat", c.id())) {
            Ok(s) => s
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next())
                .is_some_and(|state| state != 'Z' && state != 'X'),
            Err(_) => false,
        }
    }
}

/// A shell command printing `size` deterministic pseudo-random bytes
/// (AES-CTR of zeros), for streaming large bodies without holding them.
pub fn stream_generator(size: u64) -> String {
    format!(
        // openssl dies of SIGPIPE when head has enough: not an error under pipefail
        "{{ openssl enc -aes-128-ctr -nosalt -K 000102030405060708090a0b0c0d0e0f -iv 0f0e0d0c0b0a09080706050403020100 -in /dev/zero 2>/dev/null || true; }} | head -c {size}"
    )
}

/// Runs a bash pipeline under `set -euo pipefail` (10 minutes at most).
pub fn bash(script: &str) -> Output {
    let child = Command::new("bash")
        .args(["-c", &format!("set -euo pipefail\n{script}")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(child, Duration::from_secs(600), "bash pipeline")
}

/// `sha256:…` of what a shell command prints.
pub fn digest_of_stream(cmd: &str) -> String {
    let o = bash(&format!("{cmd} | openssl dgst -sha256 -r"));
    assert!(o.status.success(), "digest pipeline: {}", out_text(&o));
    let hex = String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    format!("sha256:{hex}")
}
