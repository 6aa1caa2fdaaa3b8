//! `[limits]`: request rate limits per address and per user, through the
//! proxy. Past the burst a client gets 429 with `Retry-After` and the
//! registry's TOOMANYREQUESTS; other addresses and users are not affected;
//! exempt networks are never limited; the refusals are counted. (The
//! fleet's shared buckets are in tests/cluster.rs.)

mod support;

use std::net::IpAddr;
use support::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Status, Retry-After and error codes of `GET /v2/` as alice from `from`.
fn get(proxy: &Proxy, from: &str, user: &str) -> (u16, Option<String>, Vec<String>) {
    let r = proxy
        .client_from(ip(from))
        .get(proxy.url("/v2/"))
        .basic_auth(user, Some(PASS))
        .send()
        .unwrap_or_else(|e| panic!("GET /v2/: {e}\n{}", proxy.logs()));
    let status = r.status().as_u16();
    let retry = header_of(&r, "retry-after");
    let codes = error_codes(&r.bytes().unwrap()).unwrap_or_default();
    (status, retry, codes)
}

fn statuses(proxy: &Proxy, from: &str, user: &str, n: usize) -> Vec<u16> {
    (0..n).map(|_| get(proxy, from, user).0).collect()
}

fn scrape(admin: u16) -> String {
    reqwest::blocking::get(format!("http://127.0.0.1:{admin}/metrics"))
        .unwrap()
        .text()
        .unwrap()
}

#[test]
fn an_address_over_its_rate_gets_429_with_retry_after() {
    let reg = Registry::start();
    let admin = free_port();
    // 3 at once, then one every 100 s: nothing refills during the test
    let proxy = Proxy::start(
        &reg,
        ProxyOptions::basic(&[(USER, PASS)]).toml(&format!(
            "[limits]\nexempt = [\"127.0.0.4/32\"]\n\n[limits.per_address]\nrate = 0.01\nburst = 3\n\n\
             [metrics]\nlisten = \"127.0.0.1:{admin}\"\n"
        )),
    );
    assert_eq!(statuses(&proxy, "127.0.0.2", USER, 3), [200, 200, 200]);
    let (status, retry, codes) = get(&proxy, "127.0.0.2", USER);
    assert_eq!(status, 429, "{}", proxy.logs());
    assert_eq!(codes, ["TOOMANYREQUESTS"]);
    let retry: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((90..=100).contains(&retry), "Retry-After: {retry}");
    // refused requests cost nothing, and any credential is refused alike
    // (the limit comes before authentication: no bcrypt is spent on it)
    assert_eq!(statuses(&proxy, "127.0.0.2", "nobody", 2), [429, 429]);
    // another address has its own bucket; an exempt one has none
    assert_eq!(get(&proxy, "127.0.0.3", USER).0, 200);
    assert_eq!(statuses(&proxy, "127.0.0.4", USER, 6), [200; 6]);
    let text = scrape(admin);
    assert!(
        text.contains("portcullis_rate_limited_requests_total{limit=\"address\"} 3"),
        "{text}"
    );
}

#[test]
fn a_user_is_limited_from_every_address() {
    let reg = Registry::start();
    let proxy = Proxy::start(
        &reg,
        ProxyOptions::basic(&[(USER, PASS), ("bob", PASS)])
            .toml("[limits.per_user]\nrate = 0.01\nburst = 4\n"),
    );
    let from = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"];
    for a in from {
        assert_eq!(get(&proxy, a, USER).0, 200, "{}", proxy.logs());
    }
    let (status, retry, codes) = get(&proxy, "127.0.0.6", USER);
    assert_eq!(
        (status, codes.as_slice()),
        (429, &["TOOMANYREQUESTS".to_owned()][..])
    );
    assert!(retry.is_some());
    // bob, from the same addresses, is another bucket
    assert_eq!(statuses(&proxy, "127.0.0.6", "bob", 4), [200; 4]);
    // a wrong password is a 401, not a count against the user
    let wrong = proxy
        .client_from(ip("127.0.0.7"))
        .get(proxy.url("/v2/"))
        .basic_auth("bob", Some("wrong"))
        .send()
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(wrong, 401);
    assert_eq!(get(&proxy, "127.0.0.8", "bob").0, 429);
}
