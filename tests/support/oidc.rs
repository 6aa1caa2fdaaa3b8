//! OpenID Connect peers for the tests, on loopback over TLS (their own
//! test CA, given to the proxy as `auth.oidc.ca_file`):
//!
//! - [`StaticIssuer`]: a discovery document and a JWKS served from files,
//!   the way a Kubernetes service-account issuer looks, with the test's own
//!   ES256/RS256 keys to mint ID tokens of any shape (good and bad);
//! - [`Provider`]: a real OpenID Provider (`oidc-provider` from npm, in
//!   `tests/oidc/provider.mjs`) with a login page, accounts and groups;
//! - [`browser_login`]: headless Chromium through that login page
//!   (`tests/oidc/browser.mjs`, playwright-core).

use base64::Engine;
use serde_json::{json, Value};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use super::*;

/// Where the Node scripts and their `node_modules` are.
pub fn oidc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// Starts `node SCRIPT ARGS`, waits for its `ready URL` line.
///
/// A second start if the first prints no ready line within a minute: CI
/// twice saw node stop after oidc-provider's "Unsupported runtime" notice
/// and print nothing more for 30 and 90 s, while the other tests starting
/// the same script were ready in 2–6 s. A hung start is the Node
/// process's, not the proxy's; one that fails twice still fails the test.
fn start_node(script: &str, args: &[String], log: &Path) -> (Child, String) {
    let ready_line = || {
        fs::read_to_string(log).ok().and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("ready ").map(str::to_owned))
        })
    };
    let spawn = || {
        let mut cmd = Command::new("node");
        cmd.arg(oidc_dir().join(script)).args(args);
        spawn_logged(&mut cmd, log)
    };
    let mut child = spawn();
    let first = std::time::Instant::now();
    while first.elapsed() < Duration::from_secs(60) {
        if let Some(url) = ready_line() {
            return (child, url);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "{script}: no ready line within 60 s, starting it again; its log so far:\n{}",
        tail(log, 30)
    );
    let _ = child.kill();
    let _ = child.wait();
    let child = spawn();
    // (an upper bound, not a timing: a loaded CI machine once took over
    // 30 s to load oidc-provider while other tests ran)
    let url = wait_for(
        &format!("{script} ready (second start)"),
        Duration::from_secs(90),
        Duration::from_millis(50),
        || ready_line().ok_or_else(|| "no ready line yet".to_owned()),
        || tail(log, 30),
    );
    (child, url)
}

/// A key the test signs ID tokens with.
pub struct SigningKey {
    pub kid: String,
    pub alg: jsonwebtoken::Algorithm,
    encoding: jsonwebtoken::EncodingKey,
    pub jwk: Value,
}

impl SigningKey {
    /// A new ES256 key (P-256).
    pub fn es256(kid: &str) -> SigningKey {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = key.public_key_raw();
        // an uncompressed point: 0x04 || x || y
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        SigningKey {
            kid: kid.to_owned(),
            alg: jsonwebtoken::Algorithm::ES256,
            encoding: jsonwebtoken::EncodingKey::from_ec_pem(key.serialize_pem().as_bytes())
                .unwrap(),
            jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
                        "x": b64(&raw[1..33]), "y": b64(&raw[33..65])}),
        }
    }

    /// A JWT of `claims` signed with this key (header `kid` and `alg`).
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

/// A static issuer: discovery and JWKS files served over HTTPS.
pub struct StaticIssuer {
    child: Option<Child>,
    pub url: String,
    dir: tempfile::TempDir,
    pub ca_path: PathBuf,
    log: PathBuf,
}

impl StaticIssuer {
    /// Serves `keys`' JWKS (more can be published later).
    pub fn start(keys: &[&SigningKey]) -> StaticIssuer {
        let dir = temp_dir("portcullis-issuer-");
        let ca = Ca::new("test issuer CA");
        let leaf = ca.leaf("issuer");
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        fs::write(&cert, &leaf.cert_pem).unwrap();
        fs::write(&key, &leaf.key_pem).unwrap();
        let ca_path = dir.path().join("ca.pem");
        fs::write(&ca_path, &ca.pem).unwrap();
        let docs = dir.path().join("docs");
        fs::create_dir_all(&docs).unwrap();
        let port = free_port();
        let url = format!("https://127.0.0.1:{port}");
        fs::write(
            docs.join("openid-configuration.json"),
            json!({"issuer": url, "jwks_uri": format!("{url}/jwks.json"),
                   "response_types_supported": ["id_token"],
                   "subject_types_supported": ["public"],
                   "id_token_signing_alg_values_supported": ["ES256", "RS256"]})
            .to_string(),
        )
        .unwrap();
        let log = dir.path().join("issuer.log");
        let mut issuer = StaticIssuer {
            child: None,
            url: url.clone(),
            dir,
            ca_path,
            log,
        };
        issuer.publish(keys);
        let args = [
            "--port".to_owned(),
            port.to_string(),
            "--cert".into(),
            cert.display().to_string(),
            "--key".into(),
            key.display().to_string(),
            "--dir".into(),
            docs.display().to_string(),
        ];
        let (child, ready) = start_node("static-issuer.mjs", &args, &issuer.log);
        assert_eq!(ready, url, "the static issuer's address");
        issuer.child = Some(child);
        issuer
    }

    /// Replaces the JWKS with `keys`' (a rotation).
    pub fn publish(&self, keys: &[&SigningKey]) {
        let jwks = json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()});
        write_atomic(
            &self.dir.path().join("docs/jwks.json"),
            jwks.to_string().as_bytes(),
        );
    }

    /// Makes every answer a 503 (an outage), or ends that.
    pub fn set_down(&self, down: bool) {
        let flag = self.dir.path().join("docs/down");
        if down {
            fs::write(flag, "").unwrap();
        } else {
            let _ = fs::remove_file(flag);
        }
    }

    /// How many times the JWKS was fetched.
    pub fn jwks_fetches(&self) -> usize {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("req GET /jwks.json"))
            .count()
    }

    pub fn logs(&self) -> String {
        tail(&self.log, 40)
    }

    /// Claims of a good token for `aud`, valid for ten minutes.
    pub fn claims(&self, sub: &str, aud: &str) -> Value {
        let now = now_secs();
        json!({"iss": self.url, "sub": sub, "aud": aud, "iat": now, "nbf": now - 5, "exp": now + 600})
    }
}

impl Drop for StaticIssuer {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A real OpenID Provider (oidc-provider) with one client.
pub struct Provider {
    child: Option<Child>,
    pub url: String,
    pub ca_path: PathBuf,
    dir: tempfile::TempDir,
    log: PathBuf,
    http: reqwest::blocking::Client,
}

/// An account of the provider.
pub struct Account<'a> {
    pub id: &'a str,
    pub password: &'a str,
    pub groups: &'a [&'a str],
}

pub const CLIENT_ID: &str = "portcullis";
pub const CLIENT_SECRET: &str = "client-s3cret-for-tests";

impl Provider {
    /// The provider at `port` with a certificate of `ca`, whose client
    /// may redirect to `redirect_uri`.
    pub fn start(port: u16, ca: &Ca, redirect_uri: &str, accounts: &[Account<'_>]) -> Provider {
        let dir = temp_dir("portcullis-provider-");
        let leaf = ca.leaf("provider");
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        fs::write(&cert, &leaf.cert_pem).unwrap();
        fs::write(&key, &leaf.key_pem).unwrap();
        let ca_path = dir.path().join("ca.pem");
        fs::write(&ca_path, &ca.pem).unwrap();
        let url = format!("https://127.0.0.1:{port}");
        let accounts: serde_json::Map<String, Value> = accounts
            .iter()
            .map(|a| {
                (
                    a.id.to_owned(),
                    json!({"password": a.password, "email": format!("{}@example.test", a.id), "groups": a.groups}),
                )
            })
            .collect();
        let config = json!({
            "port": port, "host": "127.0.0.1",
            "cert": cert, "key": key, "issuer": url,
            "clients": [{"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                         "redirect_uris": [redirect_uri]}],
            "accounts": accounts,
            "ttl": {"IdToken": 300, "AccessToken": 300, "RefreshToken": 86400},
        });
        let config_path = dir.path().join("provider.json");
        fs::write(&config_path, config.to_string()).unwrap();
        let log = dir.path().join("provider.log");
        let (child, ready) = start_node("provider.mjs", &[config_path.display().to_string()], &log);
        assert_eq!(ready, url, "the provider's address");
        let http = reqwest::blocking::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap())
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        Provider {
            child: Some(child),
            url,
            ca_path,
            dir,
            log,
            http,
        }
    }

    fn control(&self, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.post(format!("{}/__test/{path}", self.url));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().unwrap();
        assert!(
            resp.status().is_success(),
            "provider {path}: {}",
            resp.status()
        );
        resp.json().unwrap_or(Value::Null)
    }

    /// Disables an account: its logins and refreshes fail from now on.
    pub fn disable(&self, account: &str) {
        self.control(&format!("accounts/{account}/disable"), None);
    }

    pub fn set_groups(&self, account: &str, groups: &[&str]) {
        self.control(&format!("accounts/{account}/groups"), Some(json!(groups)));
    }

    /// Signs with a new key from now on (the old one stays published);
    /// returns the new key's id.
    pub fn rotate(&self) -> String {
        self.control("rotate", None)["kid"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// How many times the JWKS was fetched.
    pub fn jwks_fetches(&self) -> usize {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("req GET /jwks"))
            .count()
    }

    pub fn logs(&self) -> String {
        tail(&self.log, 60)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

/// What the browser saw at the end of a login.
#[derive(Debug, serde::Deserialize)]
pub struct BrowserResult {
    pub url: String,
    pub status: u16,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub cookies: Vec<Value>,
    #[serde(default)]
    pub text: String,
}

/// Headless Chromium: opens `url` (the proxy's `/login`), logs in at the
/// provider's page as `user`, and returns the page it ends on.
pub fn browser_login(url: &str, user: &str, password: &str, expect_error: bool) -> BrowserResult {
    let mut cmd = Command::new("node");
    cmd.arg(oidc_dir().join("browser.mjs")).args([
        "--url",
        url,
        "--user",
        user,
        "--password",
        password,
    ]);
    if expect_error {
        cmd.arg("--expect-error");
    }
    let out = run_bounded(&mut cmd, None, Duration::from_secs(120), "browser login");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "browser.mjs failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("browser.mjs output {line:?}: {e}"))
}
