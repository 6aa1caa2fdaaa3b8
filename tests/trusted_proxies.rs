//! `server.trusted_proxies` behind a real HAProxy (`option forwardfor`, or
//! an RFC 7239 `Forwarded` header with `server.client_address_header`; TLS
//! re-encrypted to portcullis): a `networks` rule admits one client address
//! and refuses another, both arriving through HAProxy from the same peer; a
//! forged header of either kind helps neither through HAProxy nor
//! directly; the access log names the real client.

mod support;

use std::time::Duration;
use support::*;

/// HAProxy on a free loopback port: plain HTTP in, TLS to portcullis,
/// `option` naming the client to it.
fn haproxy(backend_port: u16, option: &str) -> (Haproxy, u16) {
    let port = free_port();
    let sections = format!(
        "frontend fe\n  bind 127.0.0.1:{port}\n  {option}\n  default_backend be\n\
         backend be\n  server portcullis 127.0.0.1:{backend_port} ssl verify none\n"
    );
    (Haproxy::start("http", &sections, &[port]), port)
}

const PATH: &str = "/v2/internal/base/tags/list";

#[test]
fn a_networks_rule_sees_the_client_behind_haproxy() {
    the_client_behind_haproxy("option forwardfor", None, "X-Forwarded-For", "127.0.0.2");
}

/// HAProxy 2.6 (Debian 12) has no `option forwarded` (2.7): it appends an
/// RFC 7239 element the way that option does, quoted, with a port.
#[test]
fn a_forwarded_header_names_the_client_behind_haproxy() {
    the_client_behind_haproxy(
        "http-request add-header Forwarded \"for=\\\"%[src]:%[src_port]\\\";proto=http\"",
        Some("client_address_header = \"forwarded\""),
        "Forwarded",
        "for=127.0.0.2",
    );
}

/// `forged` is what a client that wants 127.0.0.2's rights writes in
/// `header`, the header HAProxy writes.
fn the_client_behind_haproxy(option: &str, setting: Option<&str>, header: &str, forged: &str) {
    let reg = Registry::start();
    push_image_direct(&reg, "internal/base", "v1");
    let rules = [Rule::users(&["alice"])
        .on(&["internal/**"])
        .from(&["127.0.0.2/32"])
        .pull()];
    // HAProxy connects from 127.0.0.1
    let mut options = ProxyOptions::basic(&[(USER, PASS)])
        .rules(&rules)
        .line_in("server", "trusted_proxies = [\"127.0.0.1/32\"]");
    if let Some(line) = setting {
        options = options.line_in("server", line);
    }
    let proxy = Proxy::start(&reg, options);
    let (_lb, lb_port) = haproxy(proxy.port(), option);
    let via_lb = |from: &str, forged: Option<&str>| -> u16 {
        let client = reqwest::blocking::Client::builder()
            .local_address(from.parse::<std::net::IpAddr>().unwrap())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let mut req = client
            .get(format!("http://127.0.0.1:{lb_port}{PATH}"))
            .basic_auth(USER, Some(PASS));
        if let Some(f) = forged {
            req = req.header(header, f);
        }
        req.send().unwrap().status().as_u16()
    };
    assert_eq!(via_lb("127.0.0.2", None), 200, "{}", proxy.logs());
    assert_eq!(via_lb("127.0.0.3", None), 403, "{}", proxy.logs());
    // a client that writes the admitted address itself is still itself
    assert_eq!(via_lb("127.0.0.3", Some(forged)), 403);
    // directly, from a peer that is not a trusted proxy, the header counts for nothing
    let direct = proxy
        .client_from("127.0.0.3".parse().unwrap())
        .get(proxy.url(PATH))
        .basic_auth(USER, Some(PASS))
        .header(header, forged)
        .send()
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(direct, 403);

    // the access log names the clients, not HAProxy
    let clients = clients_of(&proxy, PATH);
    assert_eq!(
        clients,
        [
            "127.0.0.2:200",
            "127.0.0.3:403",
            "127.0.0.3:403",
            "127.0.0.3:403"
        ],
        "{}",
        proxy.logs()
    );
}
