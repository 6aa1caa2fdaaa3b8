//! The registry going away and coming back.

mod support;

use reqwest::Method;
use support::*;

fn assert_gateway_error(what: &str, r: reqwest::blocking::Response) {
    let s = r.status().as_u16();
    assert!(
        (502..=504).contains(&s),
        "{what}: expected 502/503/504, got {s}"
    );
    json_error_codes(what, r);
}

#[test]
fn stopped_upstream_is_a_gateway_error_and_recovers_after_restart() {
    let mut reg = Registry::start();
    let mut proxy = Proxy::start(&reg, ProxyOptions::default());
    let pid = proxy.pid();
    let digest = push_blob(&proxy, "fail/repo", b"survives a registry restart");

    // warm keep-alive connections to the upstream, then kill it
    for _ in 0..3 {
        assert_eq!(proxy.send_req(Method::GET, "/v2/").status(), 200);
    }
    reg.stop();

    for (h2_client, name) in [(None, "h1"), (Some(proxy.new_client(false)), "h2")] {
        // after a gateway error the proxy closes an HTTP/1.1 connection
        // (and says so); a fresh connection per request keeps the client's
        // pool from racing that close
        let client = || h2_client.clone().unwrap_or_else(|| proxy.new_client(true));
        let r = get_as_user(&client(), &proxy.url("/v2/"));
        assert_gateway_error(&format!("{name} GET /v2/ upstream down"), r);
        let r = get_as_user(
            &client(),
            &proxy.url(&format!("/v2/fail/repo/blobs/{digest}")),
        );
        assert_gateway_error(&format!("{name} GET blob upstream down"), r);
        let r = client()
            .post(proxy.url("/v2/fail/repo/blobs/uploads/"))
            .basic_auth(USER, Some(PASS))
            .send()
            .unwrap();
        assert_gateway_error(&format!("{name} POST upload upstream down"), r);
    }
    // still 401 for unauthenticated requests (auth is decided by the proxy)
    let r = proxy.client().get(proxy.url("/v2/")).send().unwrap();
    assert_eq!(r.status(), 401, "no credentials, upstream down");
    assert!(
        proxy.is_running(),
        "proxy exited while upstream was down\n{}",
        proxy.logs()
    );

    reg.start_again();
    let last = std::cell::Cell::new(0u16);
    wait_until(
        "requests succeed again after the registry restarted",
        WAIT,
        || {
            last.set(
                proxy
                    .req(Method::GET, "/v2/")
                    .send()
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0),
            );
            last.get() == 200
        },
        || format!("last status {}\n{}", last.get(), proxy.logs()),
    );
    let r = proxy.send_req(Method::GET, &format!("/v2/fail/repo/blobs/{digest}"));
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().unwrap().as_ref(), b"survives a registry restart");
    // uploads work again too
    push_blob(&proxy, "fail/repo", b"after restart");
    assert_eq!(proxy.pid(), pid, "proxy was restarted");
}

#[test]
fn upstream_that_never_existed_is_a_gateway_error() {
    let port = free_port(); // nothing listens here
    let proxy = Proxy::start_upstream(&format!("http://127.0.0.1:{port}"), ProxyOptions::default());
    let r = proxy.send_req(Method::GET, "/v2/");
    assert_gateway_error("GET /v2/ with no upstream", r);
    let r = proxy.send_req(Method::GET, "/v2/x/manifests/latest");
    assert_gateway_error("GET manifest with no upstream", r);
}
