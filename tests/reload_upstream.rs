//! A changed `[upstream] url` in proxy.toml is picked up without a
//! restart; a broken one keeps the old upstream serving.

mod support;

use reqwest::Method;
use std::time::Duration;
use support::*;

#[test]
fn upstream_url_change_is_reloaded_and_a_bad_one_is_refused() {
    let a = Registry::start();
    let b = Registry::start();
    let proxy = Proxy::start(&a, ProxyOptions::default());
    let digest = push_blob(&proxy, "reload/app", b"lives on registry a");
    let blob = format!("/v2/reload/app/blobs/{digest}");
    let status = || {
        proxy
            .req(Method::HEAD, &blob)
            .send()
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    assert_eq!(status(), 200);

    let text = std::fs::read_to_string(proxy.config_path()).unwrap();
    // a broken upstream (bad scheme) is refused: a keeps serving
    write_atomic(
        &proxy.config_path(),
        text.replace(&a.url(), "ftp://127.0.0.1:1").as_bytes(),
    );
    wait_until(
        "the invalid config is noticed",
        Duration::from_secs(15),
        || proxy.logs().contains("keeping the previous configuration"),
        || proxy.logs(),
    );
    assert_eq!(status(), 200, "the old upstream must keep serving");

    // b: the blob is not there, and new pushes land on b
    write_atomic(
        &proxy.config_path(),
        text.replace(&a.url(), &b.url()).as_bytes(),
    );
    wait_until(
        "requests go to the new upstream",
        Duration::from_secs(15),
        || status() == 404,
        || proxy.logs(),
    );
    let d2 = push_blob(&proxy, "reload/app", b"lives on registry b");
    let direct = b.send_direct(Method::HEAD, &format!("/v2/reload/app/blobs/{d2}"), None);
    assert_eq!(direct.status(), 200, "the push went to registry b");
}
