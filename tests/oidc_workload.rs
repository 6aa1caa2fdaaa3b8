//! Workload identity: ID tokens of a configured issuer as the password.
//! The issuer is a real HTTPS server of discovery and JWKS files (the
//! shape of a Kubernetes service-account issuer) behind its own CA
//! (`auth.oidc.ca_file`); the tokens are signed with the test's keys, so
//! every bad shape can be made: expired, not yet valid, wrong audience,
//! unknown issuer, `alg=none`, HS256 keyed with the public key, unknown
//! `kid`, tampered, a required claim missing, oversized, issued in the
//! future. Each is a 401 with a log line naming the reason; the keys are
//! fetched once for many logins, again on rotation, and an issuer down
//! past `max_key_age` fails closed (503), then recovers.

mod support;

use base64::Engine;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;
use support::oidc::*;
use support::*;

const AUD: &str = "https://registry.test";
const CI_USER: &str = "ci:repo:acme/app";

struct Setup {
    _reg: Registry,
    proxy: Proxy,
    issuer: StaticIssuer,
    key: SigningKey,
    _dir: tempfile::TempDir,
}

/// A proxy in token mode accepting the issuer's tokens for `AUD`, from
/// repositories owned by acme; `keys` sets the key timings.
fn start(keys: &str) -> Setup {
    let key = SigningKey::es256("k1");
    let issuer = StaticIssuer::start(&[&key]);
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let rules = vec![
        Rule::users(&[CI_USER]).on(&["acme/**"]).pull_push(),
        Rule::groups(&["deployers"]).on(&["deploy/**"]).pull(),
    ];
    let opts = ProxyOptions::token(&[(USER, PASS)], dir.path())
        .rules(&rules)
        .toml(&format!(
            r#"
[auth.oidc]
ca_file = "{ca}"
min_refetch_interval = "1s"
{keys}
[[auth.oidc.issuers]]
issuer = "{url}"
audience = ["https://other.test", "{AUD}"]
user_prefix = "ci:"
groups_claim = "groups"
required_claims = {{ repository_owner = "acme" }}
"#,
            ca = issuer.ca_path.display(),
            url = issuer.url,
        ));
    let proxy = Proxy::start(&reg, opts);
    Setup {
        _reg: reg,
        proxy,
        issuer,
        key,
        _dir: dir,
    }
}

impl Setup {
    fn claims(&self) -> Value {
        let mut c = self.issuer.claims("repo:acme/app", AUD);
        c["repository_owner"] = json!("acme");
        c["groups"] = json!(["deployers"]);
        c
    }

    fn good_token(&self) -> String {
        self.key.sign(&self.claims())
    }

    fn logs(&self) -> String {
        format!(
            "{}\n--- issuer ---\n{}",
            self.proxy.logs(),
            self.issuer.logs()
        )
    }

    /// `GET /v2/acme/app/tags/list` with the token as a Basic password.
    fn status(&self, token: &str) -> u16 {
        self.proxy
            .status_as(Method::GET, "/v2/acme/app/tags/list", ("anyone", token))
    }
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[test]
fn an_id_token_logs_in_everywhere_a_password_does() {
    let s = start("");
    let token = s.good_token();
    // Basic on the API, with any user name: the token says who it is
    assert_eq!(
        s.status(&token),
        404,
        "a pull of a missing repository reaches the registry\n{}",
        s.proxy.logs()
    );
    let (blob, digest) = {
        let data = b"pushed with an ID token".to_vec();
        let d = sha256_digest(&data);
        (data, d)
    };
    let start = s
        .proxy
        .req_as(Method::POST, "/v2/acme/app/blobs/uploads/", "ci", &token)
        .send()
        .unwrap();
    assert_eq!(start.status(), 202, "upload start as the CI job");
    let location = absolute(&s.proxy, start.headers()["location"].to_str().unwrap());
    let put = s
        .proxy
        .client()
        .put(format!("{location}&digest={digest}"))
        .basic_auth("ci", Some(&token))
        .body(blob)
        .send()
        .unwrap();
    assert_eq!(put.status(), 201, "blob pushed with an ID token");
    // the groups claim: deployers may pull deploy/**, but not push
    let deploy = s
        .proxy
        .status_as(Method::GET, "/v2/deploy/app/tags/list", ("x", &token));
    assert_eq!(deploy, 404, "the deployers group pulls deploy/**");
    let other = s
        .proxy
        .status_as(Method::GET, "/v2/other/app/tags/list", ("x", &token));
    assert_eq!(other, 403, "nothing grants other/** to the CI user: denied");

    // the token endpoint: GET with Basic, and the OAuth2 password grant
    let (status, v) = s.proxy.get_token(
        Some(("ignored", &token)),
        &["repository:acme/app:pull,push"],
        true,
    );
    assert_eq!(status, 200, "GET /token with an ID token: {v}");
    let bearer = v["token"].as_str().unwrap();
    let claims = jwt_claims(bearer);
    assert_eq!(claims["sub"], CI_USER);
    assert!(
        claims["exp"].as_i64().unwrap() <= s.claims()["exp"].as_i64().unwrap(),
        "the registry token must not outlive the ID token: {claims}"
    );
    assert!(
        v.get("refresh_token").is_none(),
        "no refresh token for an ID token: the job logs in again: {v}"
    );
    let (status, v) = s.proxy.post_token(&[
        ("grant_type", "password"),
        ("client_id", "ci"),
        ("username", "whatever"),
        ("password", &token),
        ("scope", "repository:acme/app:pull"),
    ]);
    assert_eq!(status, 200, "POST /token with an ID token: {v}");
    let bearer = v["token"].as_str().unwrap().to_owned();
    let r = s
        .proxy
        .send_bearer(Method::GET, "/v2/acme/app/tags/list", &bearer);
    assert_eq!(r.status(), 404, "the bearer token pulls acme/app");
    let logs = s.proxy.logs();
    assert!(
        logs.contains(&format!("user={CI_USER}")) || logs.contains(&format!("user=\"{CI_USER}\"")),
        "the access log names the mapped user\n{logs}"
    );
}

#[test]
fn bad_id_tokens_are_refused_each_with_its_reason() {
    // every refusal counts as a failed login: no throttle in the way
    let s = start("[auth.throttle]\nenabled = false\n");
    let now = now_secs();
    let good = s.claims();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = good.clone();
        f(&mut c);
        s.key.sign(&c)
    };
    let header = json!({"alg": "ES256", "kid": "k1", "typ": "JWT"});
    let good_token = s.good_token();
    let parts: Vec<&str> = good_token.split('.').collect();
    // HS256 keyed with the public key's bytes (the classic confusion)
    let public = serde_json::to_vec(&s.key.jwk).unwrap();
    let hs = {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = Some("k1".into());
        jsonwebtoken::encode(&h, &good, &jsonwebtoken::EncodingKey::from_secret(&public)).unwrap()
    };
    let stranger = SigningKey::es256("k1");
    let unknown_kid = SigningKey::es256("k-unknown");
    let cases: Vec<(&str, String, &str)> = vec![
        ("expired", with(&|c| c["exp"] = json!(now - 600)), "expired"),
        (
            "not yet valid",
            with(&|c| c["nbf"] = json!(now + 600)),
            "not_yet_valid",
        ),
        (
            "issued in the future",
            with(&|c| c["iat"] = json!(now + 600)),
            "issued_in_future",
        ),
        (
            "wrong audience",
            with(&|c| c["aud"] = json!("https://elsewhere.test")),
            "audience",
        ),
        (
            "unknown issuer",
            with(&|c| c["iss"] = json!("https://evil.test")),
            "unknown_issuer",
        ),
        (
            "required claim missing",
            with(&|c| {
                c.as_object_mut().unwrap().remove("repository_owner");
            }),
            "missing_claim",
        ),
        (
            "required claim of another value",
            with(&|c| c["repository_owner"] = json!("mallory")),
            "claim_mismatch",
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "kid": "k1"})),
                parts[1]
            ),
            "algorithm",
        ),
        ("HS256 with the public key", hs, "algorithm_mismatch"),
        (
            "tampered payload",
            format!(
                "{}.{}.{}",
                parts[0],
                b64(&{
                    let mut c = good.clone();
                    c["sub"] = json!("repo:acme/admin");
                    c
                }),
                parts[2]
            ),
            "signature",
        ),
        (
            "signed by a stranger's key with a known kid",
            stranger.sign(&good),
            "signature",
        ),
        ("unknown kid", unknown_kid.sign(&good), "unknown_key"),
        (
            "oversized",
            format!(
                "{}.{}.{}",
                b64(&header),
                b64(&json!({"iss": s.issuer.url, "pad": "x".repeat(20_000)})),
                parts[2]
            ),
            "too_large",
        ),
    ];
    for (what, token, reason) in &cases {
        assert_eq!(s.status(token), 401, "{what}: refused\n{}", s.proxy.logs());
        let (status, v) = s.proxy.get_token(Some(("x", token)), &[], false);
        assert_eq!(status, 401, "{what}: no token from the token endpoint: {v}");
        let logs = s.proxy.logs();
        assert!(
            logs.contains(&format!("reason={reason}"))
                || logs.contains(&format!("reason=\"{reason}\"")),
            "{what}: a log line says {reason}\n{logs}"
        );
    }
    // nothing panicked, the good token still works, and no token made it
    // into a log
    assert_eq!(s.status(&s.good_token()), 404);
    let logs = s.proxy.logs();
    assert!(!logs.contains("panicked"), "{logs}");
    assert!(
        !logs.contains(parts[2]),
        "a token's signature appears in the log"
    );
}

#[test]
fn keys_are_fetched_once_for_many_logins_and_again_on_rotation() {
    let s = start("[auth.throttle]\nenabled = false\n");
    for i in 0..20 {
        // a new token each time: no cached verification helps
        let mut c = s.claims();
        c["jti"] = json!(format!("job-{i}"));
        assert_eq!(s.status(&s.key.sign(&c)), 404, "login {i}\n{}", s.logs());
    }
    assert_eq!(
        s.issuer.jwks_fetches(),
        1,
        "20 logins, one fetch of the keys\n{}",
        s.issuer.logs()
    );
    // the issuer rotates: a token of the new key makes the proxy fetch again
    let next = SigningKey::es256("k2");
    s.issuer.publish(&[&s.key, &next]);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        s.status(&next.sign(&s.claims())),
        404,
        "the rotated key\n{}",
        s.proxy.logs()
    );
    assert_eq!(s.issuer.jwks_fetches(), 2, "one more fetch for the new kid");
    // the old key leaves the JWKS: its tokens are refused once the
    // proxy has fetched the keys again (here on an unknown kid)
    s.issuer.publish(&[&next]);
    std::thread::sleep(Duration::from_millis(1100));
    let third = SigningKey::es256("k3");
    assert_eq!(
        s.status(&third.sign(&s.claims())),
        401,
        "k3 is no key of the issuer"
    );
    assert_eq!(
        s.status(&s.good_token()),
        401,
        "a token of the removed key\n{}",
        s.proxy.logs()
    );
    // unknown kids do not make the proxy hammer the issuer
    let before = s.issuer.jwks_fetches();
    for _ in 0..10 {
        assert_eq!(s.status(&third.sign(&s.claims())), 401);
    }
    assert!(
        s.issuer.jwks_fetches() <= before + 1,
        "refetches are rate limited: {} then {}",
        before,
        s.issuer.jwks_fetches()
    );
}

#[test]
fn an_issuer_down_past_max_key_age_fails_closed_and_recovers() {
    let s = start("key_refresh = \"1s\"\nmax_key_age = \"3s\"\n");
    assert_eq!(s.status(&s.good_token()), 404, "keys fetched");
    s.issuer.set_down(true);
    // cached keys keep working while they are young enough
    assert_eq!(
        s.status(&s.good_token()),
        404,
        "cached keys during an outage"
    );
    wait_until(
        "ID tokens refused with 503 once the keys are too old",
        Duration::from_secs(20),
        || s.status(&s.good_token()) == 503,
        || s.proxy.logs(),
    );
    assert!(s
        .proxy
        .logs()
        .contains("cannot fetch the OIDC issuer's keys"));
    // passwords are not affected by the issuer's outage
    assert_eq!(s.proxy.status_as(Method::GET, "/v2/", (USER, PASS)), 200);
    s.issuer.set_down(false);
    wait_until(
        "ID tokens accepted again once the issuer is back",
        Duration::from_secs(20),
        || s.status(&s.good_token()) == 404,
        || s.proxy.logs(),
    );
}

#[test]
fn a_wrong_oidc_config_names_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        r#"
[server]
listen = "127.0.0.1:5000"
[upstream]
url = "http://127.0.0.1:5001"
[tls]
self_signed = true
[[auth.oidc.issuers]]
issuer = "http://idp.example.com"
audience = "x"
required_claims = { ref = [] }
"#,
    )
    .unwrap();
    let out = portcullis(&["check", "--config", config.to_str().unwrap()], None);
    let text = out_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("auth.oidc.issuers[0].issuer: must be an https:// URL"),
        "{text}"
    );
    assert!(
        text.contains("auth.oidc.issuers[0].required_claims.ref: lists no value"),
        "{text}"
    );
}
