//! Throttling of failed logins through the proxy: Basic credentials on
//! `/v2/` and the token endpoint. Past `max_failures`, the attacking
//! address gets 429 with Retry-After and TOOMANYREQUESTS; the real user
//! from another address still logs in.

mod support;

use reqwest::Method;
use std::net::IpAddr;
use support::*;

/// A long first refusal, so the attacker stays refused for the whole test.
const THROTTLE: &str = "\n[auth.throttle]\nmax_failures = 10\nbackoff = \"60s\"\n";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Status, Retry-After and error codes of a response.
fn answer(r: reqwest::blocking::Response) -> (u16, Option<String>, Vec<String>) {
    let status = r.status().as_u16();
    let retry = header_of(&r, "retry-after");
    let body = r.bytes().unwrap();
    let codes = error_codes(&body).unwrap_or_default();
    (status, retry, codes)
}

/// 50 wrong passwords from one address (`attempt(i)` sends the i-th):
/// the first 10 are 401, every one from the 11th on is 429. Returns the
/// first 429's Retry-After and error codes.
fn fifty_wrong_passwords(
    what: &str,
    proxy: &Proxy,
    mut attempt: impl FnMut(usize) -> reqwest::blocking::Response,
) -> (Option<String>, Vec<String>) {
    let mut statuses = Vec::new();
    let mut first_429 = None;
    for i in 0..50 {
        let (status, retry, codes) = answer(attempt(i));
        if status == 429 && first_429.is_none() {
            first_429 = Some((i, retry, codes));
        }
        statuses.push(status);
    }
    assert!(
        statuses[..10].iter().all(|&s| s == 401),
        "{what}: the first 10 wrong passwords: {statuses:?}"
    );
    let (i, retry, codes) = first_429.unwrap_or_else(|| {
        panic!(
            "{what}: 50 wrong passwords, never 429: {statuses:?}\n{}",
            proxy.logs()
        )
    });
    assert_eq!(i, 10, "{what}: refused from the 11th attempt: {statuses:?}");
    assert!(
        statuses[10..].iter().all(|&s| s == 429),
        "{what}: all attempts after the limit are refused: {statuses:?}"
    );
    (retry, codes)
}

#[test]
fn basic_wrong_passwords_are_throttled_per_address() {
    let reg = Registry::start();
    let opts = ProxyOptions::basic(&[(USER, PASS), BOB]).toml(THROTTLE);
    let proxy = Proxy::start(&reg, opts);
    let attacker = proxy.client_from(ip("127.0.0.1"));
    let url = proxy.url("/v2/");

    let (retry, codes) = fifty_wrong_passwords("Basic on /v2/", &proxy, |i| {
        attacker
            .get(&url)
            .basic_auth(USER, Some(format!("wrong-{i}")))
            .send()
            .unwrap()
    });
    let retry = retry.expect("429 without Retry-After");
    let secs: u64 = retry.parse().expect("Retry-After in seconds");
    assert!((1..=60).contains(&secs), "Retry-After {secs}");
    assert_eq!(codes, ["TOOMANYREQUESTS"]);

    // the right password from the throttled address is refused too
    let r = get_as_user(&attacker, &url);
    assert_eq!(r.status(), 429, "alice from the attacking address");
    // and bob from there (the address is blocked for every user)
    let r = get_as(&attacker, &url, BOB);
    assert_eq!(r.status(), 429, "bob from the attacking address");

    // alice from another address still logs in, and works
    let home = proxy.client_from(ip("127.0.0.2"));
    let r = home.get(&url).basic_auth(USER, Some(PASS)).send().unwrap();
    assert_eq!(r.status(), 200, "alice from 127.0.0.2\n{}", proxy.logs());
    let r = home
        .post(proxy.url("/v2/throttle/app/blobs/uploads/"))
        .basic_auth(USER, Some(PASS))
        .send()
        .unwrap();
    assert_eq!(r.status(), 202, "alice pushes from 127.0.0.2");
    // a wrong password from the new address is a plain 401 (not throttled)
    let r = home
        .get(&url)
        .basic_auth(USER, Some("wrong"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401, "one wrong password from 127.0.0.2");
    let r = get_as(&home, &url, BOB);
    assert_eq!(r.status(), 200, "bob from 127.0.0.2");
}

#[test]
fn token_endpoint_wrong_passwords_are_throttled_per_address() {
    let reg = Registry::start();
    let keys = tempfile::tempdir().unwrap();
    let opts = ProxyOptions::token(&[(USER, PASS), BOB], keys.path()).toml(THROTTLE);
    let proxy = Proxy::start(&reg, opts);
    let token_url = proxy.url(&proxy.token_path(&["repository:team/app:pull"], false));
    let attacker = proxy.client_from(ip("127.0.0.3"));

    let (retry, codes) = fifty_wrong_passwords("/token", &proxy, |i| {
        if i % 2 == 0 {
            attacker
                .get(&token_url)
                .basic_auth(USER, Some(format!("wrong-{i}")))
                .send()
                .unwrap()
        } else {
            let form = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("grant_type", "password")
                .append_pair("username", USER)
                .append_pair("password", &format!("wrong-{i}"))
                .append_pair("service", "container-registry")
                .finish();
            attacker
                .post(proxy.url("/token"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form)
                .send()
                .unwrap()
        }
    });
    assert!(retry.is_some(), "429 from /token without Retry-After");
    assert_eq!(codes, ["TOOMANYREQUESTS"]);
    let r = get_as_user(&attacker, &token_url);
    assert_eq!(
        r.status(),
        429,
        "alice's right password from the attacking address"
    );

    // from 127.0.0.2 alice gets a token, and Basic on /v2/ works too
    let home = proxy.client_from(ip("127.0.0.2"));
    let r = get_as_user(&home, &token_url);
    assert_eq!(
        r.status(),
        200,
        "alice's token from 127.0.0.2\n{}",
        proxy.logs()
    );
    let v: serde_json::Value = r.json().unwrap();
    let t = v["token"].as_str().expect("token");
    let r = home
        .request(Method::GET, proxy.url("/v2/"))
        .bearer_auth(t)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "alice's token on /v2/");
    // Basic attempts on /v2/ from the attacking address are throttled as well
    let r = get_as(&attacker, &proxy.url("/v2/"), BOB);
    assert_eq!(
        r.status(),
        429,
        "bob with Basic on /v2/ from the attacking address"
    );
}
