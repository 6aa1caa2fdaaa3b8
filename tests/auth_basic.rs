//! Basic authentication against the htpasswd file: challenge, error body,
//! and that unauthenticated requests never reach the registry.

mod support;

use base64::Engine;
use reqwest::Method;
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
