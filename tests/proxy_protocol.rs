//! `[server.proxy_protocol]` behind a real HAProxy in TCP mode (TLS passed
//! through), with `send-proxy-v2` and with `send-proxy` (v1): a `networks`
//! rule admits one client address and refuses another, both arriving from
//! HAProxy's address; the access log names the clients. A PROXY header
//! from a peer the list does not name is refused, and so is a listed peer
//! that sends none.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;
use support::*;

const PATH: &str = "/v2/internal/base/tags/list";
/// The address HAProxy connects to portcullis from.
const BALANCER: &str = "127.0.0.10";

#[test]
fn clients_behind_haproxy_are_seen_through_the_proxy_protocol() {
    let reg = Registry::start();
    push_image_direct(&reg, "internal/base", "v1");
    let rules = [Rule::users(&["alice"])
        .on(&["internal/**"])
        .from(&["127.0.0.2/32"])
        .pull()];
    let proxy = Proxy::start(
        &reg,
        ProxyOptions::basic(&[(USER, PASS)])
            .rules(&rules)
            .toml(&format!(
                "[server.proxy_protocol]\nfrom = [\"{BALANCER}/32\"]\n"
            )),
    );
    let (v2, v1) = (free_port(), free_port());
    let backend = proxy.port();
    let lb = Haproxy::start(
        "tcp",
        &format!(
            "frontend v2\n  bind 127.0.0.1:{v2}\n  default_backend v2\n\
             backend v2\n  server portcullis 127.0.0.1:{backend} send-proxy-v2 source {BALANCER}\n\
             frontend v1\n  bind 127.0.0.1:{v1}\n  default_backend v1\n\
             backend v1\n  server portcullis 127.0.0.1:{backend} send-proxy source {BALANCER}\n"
        ),
        &[v2, v1],
    );
    let via = |port: u16, from: &str| -> u16 {
        proxy
            .client_from(from.parse().unwrap())
            .get(format!("https://127.0.0.1:{port}{PATH}"))
            .basic_auth(USER, Some(PASS))
            .send()
            .unwrap_or_else(|e| {
                panic!(
                    "through HAProxy from {from}: {e}\n{}\n{}",
                    proxy.logs(),
                    lb.logs()
                )
            })
            .status()
            .as_u16()
    };
    for (what, port) in [("send-proxy-v2", v2), ("send-proxy", v1)] {
        assert_eq!(
            via(port, "127.0.0.2"),
            200,
            "{what}: the admitted client\n{}",
            proxy.logs()
        );
        assert_eq!(via(port, "127.0.0.3"), 403, "{what}: the other client");
    }
    let clients = clients_of(&proxy, PATH);
    assert_eq!(
        clients,
        [
            "127.0.0.2:200",
            "127.0.0.3:403",
            "127.0.0.2:200",
            "127.0.0.3:403"
        ],
        "the access log names the clients, not HAProxy\n{}",
        proxy.logs()
    );

    // a PROXY header from a peer that is not listed: refused, whatever
    // address it claims
    let addr: SocketAddr = format!("127.0.0.1:{backend}").parse().unwrap();
    let mut forged = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    forged
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    forged
        .write_all(b"PROXY TCP4 127.0.0.2 127.0.0.1 40000 443\r\n")
        .unwrap();
    let mut buf = [0u8; 64];
    let n = forged.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the connection is closed without an answer");
    wait_until(
        "the refusal is logged",
        WAIT,
        || {
            proxy
                .logs()
                .contains("a PROXY header from a peer server.proxy_protocol.from does not list")
        },
        || proxy.logs(),
    );
    // the listed peer without a header: refused too
    let bare = proxy
        .client_from(BALANCER.parse().unwrap())
        .get(proxy.url(PATH))
        .basic_auth(USER, Some(PASS))
        .send();
    assert!(
        bare.is_err(),
        "a listed peer without a PROXY header: {bare:?}"
    );
    wait_until(
        "that refusal is logged",
        WAIT,
        || proxy.logs().contains("sent no valid PROXY header"),
        || proxy.logs(),
    );
    // other clients connect directly as before
    assert_eq!(
        proxy.status_as(reqwest::Method::GET, "/v2/", (USER, PASS)),
        200
    );
}

/// The plain-HTTP listener (`server.http_listen`) behind the same kind of
/// balancer: PROXY headers from the listed peer are read (the redirect is
/// answered and the access log names the client), a listed peer without
/// one is refused, and other peers are served as before.
#[test]
fn the_plain_listener_reads_proxy_headers_too() {
    let reg = Registry::start();
    let http_port = free_port();
    let proxy = Proxy::start(
        &reg,
        ProxyOptions::basic(&[(USER, PASS)])
            .line_in(
                "server",
                &format!("http_listen = \"127.0.0.1:{http_port}\""),
            )
            .toml(&format!(
                "[server.proxy_protocol]\nfrom = [\"{BALANCER}/32\"]\n"
            )),
    );
    let front = free_port();
    let lb = Haproxy::start(
        "tcp",
        &format!(
            "frontend plain\n  bind 127.0.0.1:{front}\n  default_backend plain\n\
             backend plain\n  server portcullis 127.0.0.1:{http_port} send-proxy-v2 source {BALANCER}\n"
        ),
        &[front],
    );
    let path = "/v2/behind/lb/tags/list";
    let plain_from = |from: &str, port: u16| {
        reqwest::blocking::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .local_address(Some(from.parse().unwrap()))
            .build()
            .unwrap()
            .get(format!("http://127.0.0.1:{port}{path}"))
            .send()
    };
    let r = plain_from("127.0.0.2", front)
        .unwrap_or_else(|e| panic!("through HAProxy: {e}\n{}\n{}", proxy.logs(), lb.logs()));
    assert_eq!(r.status(), 301, "{}", proxy.logs());
    assert_eq!(
        header_of(&r, "location").as_deref(),
        Some(format!("{}{path}", proxy.base()).as_str())
    );
    // a client of its own, straight to the plain port
    assert_eq!(plain_from("127.0.0.3", http_port).unwrap().status(), 301);
    wait_until(
        "both redirects are logged",
        WAIT,
        || clients_of(&proxy, path).len() == 2,
        || proxy.logs(),
    );
    let clients: Vec<String> = clients_of(&proxy, path)
        .iter()
        .map(|c| c.split(':').next().unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        clients,
        ["127.0.0.2", "127.0.0.3"],
        "the client behind HAProxy, then the direct one\n{}",
        proxy.logs()
    );
    // the balancer's address without a header: refused
    let bare = plain_from(BALANCER, http_port);
    assert!(
        bare.is_err(),
        "a listed peer without a PROXY header: {bare:?}"
    );
    wait_until(
        "the refusal is logged",
        WAIT,
        || proxy.logs().contains("sent no valid PROXY header"),
        || proxy.logs(),
    );
}
