//! The portcullis process under test: start, stop, logs, certificates on
//! disk, and the HTTP helpers tests drive it with.

use std::fs::{self, File};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::Method;
use tempfile::TempDir;

use super::*;

/// A registry, and a proxy in front of it started with `opts`.
pub fn registry_and_proxy(opts: ProxyOptions) -> (Registry, Proxy) {
    let reg = Registry::start();
    let proxy = Proxy::start(&reg, opts);
    (reg, proxy)
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
        let dir = temp_dir("portcullis-proxy-");
        let ca = Ca::new("portcullis test CA");
        let mut names = vec!["127.0.0.1", "localhost"];
        names.extend(opts.server_names.iter().map(String::as_str));
        let leaf = ca.leaf_for("portcullis-test-initial", &names);
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

        let config = opts.render(&ProxyFiles {
            port,
            cert: &cert_path,
            key: &key_path,
            htpasswd: &htpasswd,
        });
        // (a setting that names the proxy's own address: a login's redirect_url)
        let config = config.replace("{PROXY_PORT}", &port.to_string());
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

        let identity = opts.client_identity.clone();
        let client = Self::build_client(&ca.pem, false, identity.as_deref());
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
        let probe = Self::build_client(&p.ca.pem, false, identity.as_deref());
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

    fn build_client(ca_pem: &str, http1: bool, identity: Option<&str>) -> Client {
        let mut b = Client::builder();
        if let Some(pem) = identity {
            b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        let mut b = b
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

    /// `https://127.0.0.1:PORT` (`[::1]` for a proxy listening there only).
    pub fn base(&self) -> String {
        let host = match self.opts.listen_host.as_str() {
            "[::1]" => "[::1]",
            _ => "127.0.0.1",
        };
        format!("https://{host}:{}", self.port)
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
        Self::build_client(&self.ca.pem, http1, self.opts.client_identity.as_deref())
    }

    /// A fresh client presenting `identity` (PEM of a certificate and its
    /// key), or no client certificate at all.
    pub fn client_with_identity(&self, identity: Option<&Leaf>) -> Client {
        let pem = identity.map(|l| format!("{}{}", l.cert_pem, l.key_pem));
        Self::build_client(&self.ca.pem, false, pem.as_deref())
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

    /// `certbot` in live/ of the certbot layout, else `plain` in the dir.
    fn tls_file(&self, certbot: &str, plain: &str) -> PathBuf {
        match self.opts.certbot_layout {
            true => self
                .dir
                .path()
                .join("live")
                .join(CERTBOT_NAME)
                .join(certbot),
            false => self.dir.path().join(plain),
        }
    }

    pub fn cert_path(&self) -> PathBuf {
        self.tls_file("fullchain.pem", "cert.pem")
    }

    pub fn key_path(&self) -> PathBuf {
        self.tls_file("privkey.pem", "key.pem")
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
        let c = Self::build_client(&self.ca.pem, true, self.opts.client_identity.as_deref());
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
        wait_for(
            &format!("{what}: new certificate served"),
            WAIT,
            Duration::from_millis(100),
            || match self.served_cert() {
                Ok(d) if d == der => Ok(()),
                Ok(_) => Err("old/other certificate served".into()),
                Err(e) => Err(e),
            },
            || self.logs(),
        )
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

    /// Sends the proxy SIGHUP (reload), asserting `kill` worked.
    pub fn sighup(&self) {
        let st = Command::new("kill")
            .args(["-HUP", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(st.success(), "kill -HUP");
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

    /// `PUT <location>?digest=…`, the end of an upload, as the default user
    /// (`location` as the proxy answered it: relative or absolute).
    pub fn put_digest(&self, location: &str, digest: &str) -> RequestBuilder {
        let sep = if location.contains('?') { '&' } else { '?' };
        self.client
            .put(format!("{}{sep}digest={digest}", absolute(self, location)))
            .basic_auth(USER, Some(PASS))
    }

    /// The v2 API through the proxy with `auth`.
    pub fn v2(&self, auth: Auth) -> V2<'_> {
        V2 {
            client: self.client(),
            base: self.base(),
            auth,
            logs_of: Some(self),
        }
    }

    /// Sends a request (no body) with the default user's credentials.
    pub fn send_req(&self, method: Method, path: &str) -> Response {
        self.req(method, path).send().unwrap()
    }

    /// The status of a request (no body) with these Basic credentials; 0
    /// when no answer came.
    pub fn status_as(&self, method: Method, path: &str, (user, pass): (&str, &str)) -> u16 {
        let req = self.req_as(method, path, user, pass);
        req.send().map(|r| r.status().as_u16()).unwrap_or(0)
    }

    /// Sends a request (no body) with the given Basic credentials.
    pub fn send_as(&self, method: Method, path: &str, user: &str, pass: &str) -> Response {
        self.req_as(method, path, user, pass).send().unwrap()
    }

    /// Sends a request (no body) without credentials.
    pub fn send_anon(&self, method: Method, path: &str) -> Response {
        self.anon(method, path).send().unwrap()
    }

    /// Sends a request with a Bearer token (no body).
    pub fn send_bearer(&self, method: Method, path: &str, token: &str) -> Response {
        self.bearer(method, path, token).send().unwrap()
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

impl Drop for Proxy {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

/// The last `Location` in headers curl wrote with `-D`.
pub fn last_location(headers: &str) -> Option<String> {
    headers.lines().rev().find_map(|l| {
        l.split_once(':')
            .filter(|(k, _)| k.eq_ignore_ascii_case("location"))
            .map(|(_, v)| v.trim().to_string())
    })
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

/// Monolithic upload (POST, then PUT with the body and ?digest=) as the
/// default user. Returns the digest.
pub fn push_blob(proxy: &Proxy, repo: &str, data: &[u8]) -> String {
    proxy
        .v2(Auth::Basic(USER.into(), PASS.into()))
        .blob(repo, data)
}

/// Pushes a small image manifest (config + one layer) under `tag`; returns (manifest bytes, digest).
pub fn push_image(proxy: &Proxy, repo: &str, tag: &str) -> (Vec<u8>, String) {
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":[]}},"tag":"{tag}"}}"#
    );
    let layer = pseudo_random(4096, tag.len() as u64 + 7);
    proxy
        .v2(Auth::Basic(USER.into(), PASS.into()))
        .image(repo, tag, config.as_bytes(), &layer)
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

/// Sends `req` accepting an OCI image manifest.
pub fn accept_oci(req: RequestBuilder) -> Response {
    accepting(req, "application/vnd.oci.image.manifest.v1+json")
}

/// Sends `req` with `Accept: media_types`.
pub fn accepting(req: RequestBuilder, media_types: &str) -> Response {
    req.header("accept", media_types).send().unwrap()
}

/// The strings of a JSON array (panics on anything else).
pub fn strings(v: &serde_json::Value) -> Vec<String> {
    let items = v.as_array().unwrap_or_else(|| panic!("not an array: {v}"));
    items
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

/// Asserts a proxy error answer: the common headers, a JSON body;
/// returns its registry error codes.
pub fn json_error_codes(what: &str, r: Response) -> Vec<String> {
    assert_common_headers(what, |h| header_of(&r, h));
    let ct = header_of(&r, "content-type").unwrap_or_default();
    assert!(
        ct.starts_with("application/json"),
        "{what}: Content-Type {ct:?}"
    );
    let body = r.bytes().unwrap();
    error_codes(&body).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Sends a GET of `url` with the default user's credentials on `client`.
pub fn get_as_user(client: &Client, url: &str) -> Response {
    get_as(client, url, (USER, PASS))
}

/// Sends a GET of `url` with these Basic credentials on `client`.
pub fn get_as(client: &Client, url: &str, (user, pass): (&str, &str)) -> Response {
    client.get(url).basic_auth(user, Some(pass)).send().unwrap()
}

/// Asserts a challenge's scheme and that it carries each `(name, value)`.
pub fn assert_challenge(challenge: &str, scheme: &str, params: &[(&str, &str)]) {
    let (got, p) = challenge_params(challenge);
    assert_eq!(got, scheme, "scheme of {challenge}");
    for (name, value) in params {
        assert_eq!(
            p.get(*name).map(String::as_str),
            Some(*value),
            "{name} in {challenge}"
        );
    }
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
