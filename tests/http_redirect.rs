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

/// Plain HTTP sent to the TLS port — what the Docker engine does after
/// each failed HTTPS attempt against a 127.0.0.0/8 registry, or curl given
/// `http://` — is the client's mistake: the connection is closed without a
/// TLS answer and no ERROR is logged (Pingora's `Downstream handshake
/// error … InvalidContentType` is logged at DEBUG), and the proxy goes on
/// serving TLS.
#[test]
fn plain_http_to_the_tls_port_is_no_error() {
    use std::io::{Read, Write};
    let reg = Registry::start();
    let proxy = Proxy::start(&reg, ProxyOptions::default());
    for _ in 0..3 {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        // Pingora logs the failed handshake, then closes: EOF (or a reset)
        // means the line, if any, is written.
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        assert!(
            !String::from_utf8_lossy(&answer).contains("HTTP/1.1 200"),
            "plain HTTP was served on the TLS port"
        );
    }
    let r = get_as_user(&proxy.client(), &proxy.url("/v2/"));
    assert_eq!(r.status(), 200, "TLS after the plain-HTTP attempts");
    let logs = proxy.log_text();
    assert!(
        !logs.contains("InvalidContentType"),
        "plain HTTP on the TLS port logged at INFO or above:\n{logs}"
    );
    assert!(
        !logs.lines().any(|l| l.contains(" ERROR ")),
        "an ERROR line:\n{logs}"
    );
}
