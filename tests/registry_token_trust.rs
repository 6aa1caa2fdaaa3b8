//! registry:2 (distribution 2.8, the Debian `docker-registry`) trusts the
//! tokens portcullis issues: its `auth.token.rootcertbundle` is our
//! `token-cert.pem`, and tokens from any other key are refused. Talks to
//! the registry directly over plain HTTP on 127.0.0.1.

use std::fs::{self, File};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use portcullis::auth::token::jwt::TokenIssuer;
use portcullis::auth::token::keys::{KeySet, KeySettings};
use portcullis::auth::token::scope::{parse_scope, Access};
use reqwest::blocking::Client;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

mod support;

const ISSUER: &str = "portcullis-test-issuer";
const SERVICE: &str = "registry.test";
const REALM: &str = "https://127.0.0.1:1/token";
const LIFETIME: Duration = Duration::from_secs(300);
/// Upper bound of every wait.
const WAIT: Duration = Duration::from_secs(20);

/// A docker-registry with token auth, killed on drop.
struct TokenRegistry {
    _dir: TempDir,
    port: u16,
    child: Child,
    log: std::path::PathBuf,
}

impl TokenRegistry {
    fn start(rootcertbundle: &Path) -> TokenRegistry {
        let dir = tempfile::Builder::new()
            .prefix("portcullis-tokreg-")
            .tempdir()
            .unwrap();
        let port = support::free_port();
        let config = format!(
            "version: 0.1\n\
             log:\n  level: info\n\
             storage:\n  filesystem:\n    rootdirectory: {root}\n  maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: portcullis-test-secret\n\
             auth:\n  token:\n    realm: {REALM}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {bundle}\n",
            root = dir.path().join("data").display(),
            bundle = rootcertbundle.display(),
        );
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, config).unwrap();
        let log = dir.path().join("registry.log");
        let out = File::create(&log).unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("spawn /usr/bin/docker-registry");
        let mut reg = TokenRegistry {
            _dir: dir,
            port,
            child,
            log,
        };
        reg.wait_ready();
        reg
    }

    /// Ready when `GET /v2/` answers (401: token auth is on).
    fn wait_ready(&mut self) {
        let client = client();
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("docker-registry exited: {status}\n{}", self.logs());
            }
            if let Ok(r) = client.get(self.url("/v2/")).send() {
                assert_eq!(r.status(), 401, "registry without auth?\n{}", self.logs());
                return;
            }
            if start.elapsed() > WAIT {
                panic!("docker-registry not ready within {WAIT:?}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn logs(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn get_v2(&self, token: Option<&str>) -> reqwest::blocking::Response {
        let mut req = client().get(self.url("/v2/"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().unwrap()
    }

    /// Pushes a blob in one monolithic upload; returns the final status
    /// (201 when accepted) or the status of the refused upload start.
    fn push_blob(&self, token: &str, repo: &str, data: &[u8]) -> u16 {
        let c = client();
        let r = c
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/")))
            .bearer_auth(token)
            .send()
            .unwrap();
        if r.status() != 202 {
            return r.status().as_u16();
        }
        let location = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .expect("upload Location")
            .to_owned();
        let location = if location.starts_with('/') {
            self.url(&location)
        } else {
            location
        };
        let digest = format!("sha256:{:x}", Sha256::digest(data));
        let sep = if location.contains('?') { '&' } else { '?' };
        let r = c
            .put(format!("{location}{sep}digest={digest}"))
            .bearer_auth(token)
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .unwrap();
        r.status().as_u16()
    }
}

impl Drop for TokenRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn issuer(dir: &Path) -> TokenIssuer {
    let keys = KeySet::load(&KeySettings::new(dir)).unwrap();
    TokenIssuer::new(keys, ISSUER, SERVICE, LIFETIME)
}

fn access(scopes: &[&str]) -> Vec<Access> {
    scopes
        .iter()
        .map(|s| parse_scope(s).unwrap().into())
        .collect()
}

fn token(t: &TokenIssuer, scopes: &[&str]) -> String {
    t.issue("alice", access(scopes), LIFETIME).unwrap().token
}

#[test]
fn registry_accepts_our_tokens_and_refuses_others() {
    let dir = tempfile::tempdir().unwrap();
    let ours = issuer(&dir.path().join("keys"));
    let reg = TokenRegistry::start(ours.keys().cert_path());
    let good = token(&ours, &["repository:test/app:pull,push"]);

    let r = reg.get_v2(Some(&good));
    assert_eq!(r.status(), 200, "our token\n{}", reg.logs());

    let r = reg.get_v2(None);
    assert_eq!(r.status(), 401, "no token");
    let challenge = r
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        challenge.starts_with(&format!("Bearer realm=\"{REALM}\",service=\"{SERVICE}\"")),
        "{challenge}"
    );

    // another key, with and without its certificate in the header
    let other_keys = KeySet::load(&KeySettings::new(dir.path().join("other"))).unwrap();
    for x5c in [true, false] {
        let other = TokenIssuer::new(other_keys.clone(), ISSUER, SERVICE, LIFETIME).with_x5c(x5c);
        let bad = token(&other, &["repository:test/app:pull,push"]);
        assert_eq!(reg.get_v2(Some(&bad)).status(), 401, "other key, x5c={x5c}");
        assert_eq!(
            reg.push_blob(&bad, "test/app", b"nope"),
            401,
            "other key push, x5c={x5c}"
        );
    }

    // a push with our token
    let blob = b"portcullis token trust test blob";
    assert_eq!(
        reg.push_blob(&good, "test/app", blob),
        201,
        "push with our token\n{}",
        reg.logs()
    );
    let digest = format!("sha256:{:x}", Sha256::digest(blob));
    let r = client()
        .head(reg.url(&format!("/v2/test/app/blobs/{digest}")))
        .bearer_auth(&good)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "pushed blob is there");

    // the token's access is what the registry enforces
    assert_eq!(
        reg.push_blob(&good, "test/other", blob),
        401,
        "another repository"
    );
    let pull_only = token(&ours, &["repository:test/app:pull"]);
    assert_eq!(
        reg.push_blob(&pull_only, "test/app", blob),
        401,
        "pull-only push"
    );

    // a refresh token is no bearer token for the registry
    let refresh = ours.issue_refresh("alice", LIFETIME).unwrap();
    assert_eq!(reg.get_v2(Some(&refresh)).status(), 401, "refresh token");

    // a token for another service or from another issuer
    let wrong_service = TokenIssuer::new(ours.keys().clone(), ISSUER, "other.service", LIFETIME);
    let t = token(&wrong_service, &["repository:test/app:pull,push"]);
    assert_eq!(reg.get_v2(Some(&t)).status(), 401, "another service");
    let wrong_issuer = TokenIssuer::new(ours.keys().clone(), "someone-else", SERVICE, LIFETIME);
    let t = token(&wrong_issuer, &["repository:test/app:pull,push"]);
    assert_eq!(reg.get_v2(Some(&t)).status(), 401, "another issuer");
}

/// Without `x5c`, distribution 2.8 finds the key by `kid` among its bundle's
/// certificates: this checks our libtrust key id against theirs.
#[test]
fn registry_finds_our_key_by_kid() {
    let dir = tempfile::tempdir().unwrap();
    let ours = issuer(&dir.path().join("keys")).with_x5c(false);
    let reg = TokenRegistry::start(ours.keys().cert_path());
    let t = token(&ours, &["repository:test/app:pull,push"]);
    assert_eq!(
        reg.get_v2(Some(&t)).status(),
        200,
        "kid only\n{}",
        reg.logs()
    );
    assert_eq!(
        reg.push_blob(&t, "test/app", b"kid only blob"),
        201,
        "kid-only push\n{}",
        reg.logs()
    );
}

/// During a rotation the registry trusts `token-bundle.pem`: the new
/// signing certificate plus the old one given as a verification key.
#[test]
fn rotation_bundle_trusts_old_and_new_keys() {
    let dir = tempfile::tempdir().unwrap();
    let old = issuer(&dir.path().join("old"));
    let new_keys = KeySet::load(&KeySettings {
        extra_verification_keys: vec![old.keys().cert_path().to_owned()],
        ..KeySettings::new(dir.path().join("new"))
    })
    .unwrap();
    let new = TokenIssuer::new(new_keys, ISSUER, SERVICE, LIFETIME);
    let reg = TokenRegistry::start(new.keys().bundle_path());
    for (what, t) in [("new", &new), ("old", &old)] {
        for x5c in [true, false] {
            let t = TokenIssuer::new(t.keys().clone(), ISSUER, SERVICE, LIFETIME).with_x5c(x5c);
            let tok = token(&t, &["repository:test/app:pull"]);
            assert_eq!(
                reg.get_v2(Some(&tok)).status(),
                200,
                "{what} key, x5c={x5c}\n{}",
                reg.logs()
            );
        }
        // the issuer as configured verifies both too
        assert!(
            new.verify(&token(t, &[])).is_ok(),
            "{what} verifies in portcullis"
        );
    }
    let stranger = issuer(&dir.path().join("stranger"));
    let tok = token(&stranger, &["repository:test/app:pull"]);
    assert_eq!(reg.get_v2(Some(&tok)).status(), 401, "unrelated key");
}

/// A rotation without a window of refused tokens: the operator makes a
/// certificate of the next key and adds it to the registry's bundle first;
/// portcullis, given that certificate among its verification keys, sends
/// it as `x5c` once it switches to the key.
#[test]
fn rotation_with_a_certificate_made_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let old = issuer(&dir.path().join("keys"));
    let next = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let next_key = dir.path().join("next-key.pem");
    fs::write(&next_key, next.serialize_pem()).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "next token key");
    let next_cert = dir.path().join("next-cert.pem");
    fs::write(&next_cert, params.self_signed(&next).unwrap().pem()).unwrap();
    let old_cert = dir.path().join("old-cert.pem");
    fs::copy(old.keys().cert_path(), &old_cert).unwrap();

    // the registry trusts both before portcullis switches
    let bundle = dir.path().join("registry-bundle.pem");
    let text = fs::read_to_string(&old_cert).unwrap() + &fs::read_to_string(&next_cert).unwrap();
    fs::write(&bundle, text).unwrap();
    let reg = TokenRegistry::start(&bundle);
    let before = token(&old, &["repository:test/app:pull"]);
    assert_eq!(reg.get_v2(Some(&before)).status(), 200, "old key");

    let switched = KeySet::load(&KeySettings {
        signing_key: Some(next_key),
        extra_verification_keys: vec![old_cert, next_cert],
        ..KeySettings::new(dir.path().join("keys"))
    })
    .unwrap();
    for x5c in [true, false] {
        let t = TokenIssuer::new(switched.clone(), ISSUER, SERVICE, LIFETIME).with_x5c(x5c);
        let tok = token(&t, &["repository:test/app:pull,push"]);
        assert_eq!(
            reg.get_v2(Some(&tok)).status(),
            200,
            "next key, x5c={x5c}\n{}",
            reg.logs()
        );
        assert!(t.verify(&before).is_ok(), "old tokens still verify");
    }
}
