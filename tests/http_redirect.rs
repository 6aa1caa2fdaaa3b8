//! The optional plain-HTTP listener only redirects to https: nothing is
//! forwarded and no credentials are checked over plain HTTP.

mod support;

use support::*;

#[test]
fn plain_http_listener_redirects_to_https_and_forwards_nothing() {
    let reg = Registry::start();
    let http_port = free_port();
    let opts = ProxyOptions::default().line_in(
        "server",
        &format!("http_listen = \"127.0.0.1:{http_port}\""),
    );
    let proxy = Proxy::start(&reg, opts);
    let plain = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{http_port}");
    wait_until(
        "plain HTTP listener answers",
        WAIT,
        || plain.get(format!("{base}/v2/")).send().is_ok(),
        || proxy.logs(),
    );

    let r = get_as_user(&plain, &format!("{base}/v2/redir/repo/tags/list?n=1"));
    assert_eq!(r.status(), 301, "GET over plain HTTP");
    assert_eq!(
        header_of(&r, "location").as_deref(),
        Some(format!("{}/v2/redir/repo/tags/list?n=1", proxy.base()).as_str()),
        "redirect target keeps path and query, on the TLS port"
    );

    let r = plain
        .post(format!("{base}/v2/redir/repo/blobs/uploads/"))
        .basic_auth(USER, Some(PASS))
        .send()
        .unwrap();
    assert!(
        r.status() == 308 || r.status() == 307,
        "POST over plain HTTP must keep its method: {}",
        r.status()
    );
    assert_eq!(
        header_of(&r, "location").as_deref(),
        Some(format!("{}/v2/redir/repo/blobs/uploads/", proxy.base()).as_str())
    );

    // following the redirect with the right client works
    let r = get_as_user(&proxy.client(), &proxy.url("/v2/redir/repo/tags/list?n=1"));
    assert_eq!(r.status(), 404, "registry's NAME_UNKNOWN over https");

    let plain_seen: Vec<String> = reg
        .logged_uris()
        .into_iter()
        .filter(|u| u.contains("/blobs/uploads/"))
        .collect();
    assert!(
        plain_seen.is_empty(),
        "plain-HTTP requests reached the registry: {plain_seen:?}"
    );
}
