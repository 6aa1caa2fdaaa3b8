//! Basic authentication against the htpasswd file: challenge, error body,
//! and that unauthenticated requests never reach the registry.

mod support;

use base64::Engine;
use reqwest::Method;
use std::time::Duration;
use support::*;

fn assert_unauthorized(what: &str, resp: reqwest::blocking::Response) {
    assert_eq!(resp.status(), 401, "{what}: status");
    assert_eq!(
        header_of(&resp, "www-authenticate").as_deref(),
        Some(format!("Basic realm=\"{REALM}\"").as_str()),
        "{what}: WWW-Authenticate"
    );
    assert_eq!(
        json_error_codes(what, resp),
        vec!["UNAUTHORIZED"],
        "{what}: error codes"
    );
}

#[test]
fn no_credentials_is_401_with_basic_challenge_and_json_body() {
    let (reg, proxy) = registry_and_proxy(ProxyOptions::default());
    let c = proxy.client();
    assert_unauthorized(
        "GET /v2/ without credentials",
        c.get(proxy.url("/v2/")).send().unwrap(),
    );
    assert_unauthorized(
        "GET tags without credentials",
        c.get(proxy.url("/v2/noauth/repo/tags/list"))
            .send()
            .unwrap(),
    );
    assert_unauthorized(
        "POST upload without credentials",
        c.post(proxy.url("/v2/noauth/repo/blobs/uploads/"))
            .send()
            .unwrap(),
    );
    assert_unauthorized(
        "GET manifest over HTTP/1.1 without credentials",
        proxy
            .new_client(true)
            .get(proxy.url("/v2/noauth/repo/manifests/latest"))
            .send()
            .unwrap(),
    );
    // HEAD has no body, but the status and challenge still apply
    let r = c
        .head(proxy.url("/v2/noauth/repo/manifests/latest"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        header_of(&r, "www-authenticate").as_deref(),
        Some(format!("Basic realm=\"{REALM}\"").as_str())
    );

    // none of those reached the registry
    reg.assert_never_asked_for("noauth", "an unauthenticated request");
}

#[test]
fn wrong_or_malformed_credentials_are_401() {
    let (reg, proxy) = registry_and_proxy(ProxyOptions::default());
    let c = proxy.client();
    let url = proxy.url("/v2/badauth/repo/tags/list");
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);

    assert_unauthorized(
        "wrong password",
        c.get(&url).basic_auth(USER, Some("wrong")).send().unwrap(),
    );
    assert_unauthorized(
        "password prefix",
        c.get(&url)
            .basic_auth(USER, Some(&PASS[..PASS.len() - 1]))
            .send()
            .unwrap(),
    );
    assert_unauthorized(
        "unknown user",
        c.get(&url)
            .basic_auth("mallory", Some(PASS))
            .send()
            .unwrap(),
    );
    assert_unauthorized(
        "empty password",
        c.get(&url).basic_auth(USER, Some("")).send().unwrap(),
    );
    assert_unauthorized(
        "user case differs",
        c.get(&url).basic_auth("Alice", Some(PASS)).send().unwrap(),
    );
    for (name, value) in [
        ("not base64", "Basic !!!notbase64!!!".to_string()),
        ("no colon", format!("Basic {}", b64("alicealice"))),
        ("bearer garbage", "Bearer abc.def.ghi".to_string()),
        (
            "unknown scheme",
            format!("Digest {}", b64(&format!("{USER}:{PASS}"))),
        ),
        ("empty", String::new()),
    ] {
        assert_unauthorized(
            name,
            c.get(&url).header("authorization", value).send().unwrap(),
        );
    }
    reg.assert_never_asked_for("badauth", "a request with bad credentials");
}

#[test]
fn right_credentials_are_200_and_reach_the_registry() {
    let (reg, proxy) = registry_and_proxy(ProxyOptions::default());
    // the password contains a ':' — only the first colon separates user and password
    assert!(PASS.contains(':'));
    let r = proxy.send_req(Method::GET, "/v2/");
    assert_eq!(r.status(), 200, "{}", proxy.logs());

    // repeated requests (credential cache) keep working, over both protocols
    for http1 in [true, false] {
        let c = proxy.new_client(http1);
        for _ in 0..3 {
            let r = get_as_user(&c, &proxy.url("/v2/goodauth/repo/tags/list"));
            // the registry's own answer for an unknown repository
            assert_eq!(r.status(), 404);
            assert_eq!(
                error_codes(&r.bytes().unwrap()).unwrap(),
                vec!["NAME_UNKNOWN"]
            );
        }
    }
    assert!(
        reg.logged_uris()
            .iter()
            .any(|u| u == "/v2/goodauth/repo/tags/list"),
        "not forwarded"
    );

    // a wrong password after a right one (cache must not accept it)
    let r = proxy
        .client()
        .get(proxy.url("/v2/"))
        .basic_auth(USER, Some("nope"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[test]
fn several_users_each_with_their_own_password() {
    let reg = Registry::start();
    let opts = ProxyOptions::basic(&[
        ("alice", "pw-alice"),
        ("bob", "pw-bob"),
        ("ci-bot", "p@ss w0rd ünicode"),
    ]);
    let proxy = Proxy::start(&reg, opts);
    let c = proxy.client();
    let ok = |u: &str, p: &str| {
        c.get(proxy.url("/v2/"))
            .basic_auth(u, Some(p))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(ok("alice", "pw-alice"), 200);
    assert_eq!(ok("bob", "pw-bob"), 200);
    assert_eq!(ok("ci-bot", "p@ss w0rd ünicode"), 200);
    assert_eq!(ok("alice", "pw-bob"), 401);
    assert_eq!(ok("bob", "pw-alice"), 401);
}

/// A refused login names the user it was for, in the access log and in the
/// `login refused` line (as nginx's `$remote_user` and sshd do), never the
/// password; a name with a quote and a line break stays on its one line.
#[test]
fn a_failed_login_is_logged_with_the_name_it_gave() {
    let (_reg, proxy) = registry_and_proxy(ProxyOptions::default());
    let c = proxy.client();
    let url = proxy.url("/v2/");
    // (the harness's own start-up probe is logged before)
    let lines = |l: &str| l.lines().filter(|l| l.contains(" access: ")).count();
    let before = lines(&proxy.log_text());
    let r = c.get(&url).basic_auth(USER, Some("wrong")).send().unwrap();
    assert_eq!(r.status(), 401);
    let forged = "mallory\"\nINFO access: user=\"root";
    let r = c.get(&url).basic_auth(forged, Some("x")).send().unwrap();
    assert_eq!(r.status(), 401);
    // the access line is written after the answer: wait for both
    wait_until(
        "two access lines",
        Duration::from_secs(5),
        || lines(&proxy.log_text()) >= before + 2,
        || proxy.logs(),
    );
    let logs = proxy.log_text();
    let access: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains(" access: "))
        .skip(before)
        .collect();
    assert_eq!(access.len(), 2, "{logs}");
    assert_eq!(log_field(access[0], "user"), Some(USER), "{logs}");
    assert_eq!(log_field(access[0], "status"), Some("401"), "{logs}");
    let refused: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("login refused"))
        .collect();
    assert_eq!(log_field(refused[0], "user"), Some(USER), "{logs}");
    assert_eq!(
        log_field(refused[0], "reason"),
        Some("bad_credentials"),
        "{logs}"
    );
    // the forged name is escaped inside its field: no extra line
    assert_eq!(log_field(access[1], "status"), Some("401"), "{logs}");
    // (Basic splits at the first colon: the rest is the password)
    assert!(
        access[1].contains(r#"user="mallory\"\nINFO access""#),
        "{logs}"
    );
    assert!(!logs.contains("user=\"root"), "{logs}");
    assert!(!logs.contains("wrong"), "a password in the log:\n{logs}");
    assert!(!logs.contains("root:x"), "a password in the log:\n{logs}");
}
