//! `server.trusted_proxies` behind a real HAProxy (`option forwardfor`,
//! TLS re-encrypted to portcullis): a `networks` rule admits one client
//! address and refuses another, both arriving through HAProxy from the
//! same peer; a forged `X-Forwarded-For` helps neither through HAProxy nor
//! directly; the access log names the real client.

mod support;

use std::time::Duration;
use support::*;

/// HAProxy on a free loopback port: plain HTTP in, TLS to portcullis.
fn haproxy(backend_port: u16) -> (Haproxy, u16) {
    let port = free_port();
    let sections = format!(
        "frontend fe\n  bind 127.0.0.1:{port}\n  option forwardfor\n  default_backend be\n\
         backend be\n  server portcullis 127.0.0.1:{backend_port} ssl verify none\n"
    );
    (Haproxy::start("http", &sections, &[port]), port)
}

const PATH: &str = "/v2/internal/base/tags/list";

#[test]
fn a_networks_rule_sees_the_client_behind_haproxy() {
    let reg = Registry::start();
    push_image_direct(&reg, "internal/base", "v1");
    let rules = [Rule::users(&["alice"])
        .on(&["internal/**"])
        .from(&["127.0.0.2/32"])
        .pull()];
    // HAProxy connects from 127.0.0.1
    let proxy = Proxy::start(
        &reg,
        ProxyOptions::basic(&[(USER, PASS)])
            .rules(&rules)
            .line_in("server", "trusted_proxies = [\"127.0.0.1/32\"]"),
    );
    let (_lb, lb_port) = haproxy(proxy.port());
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
            req = req.header("X-Forwarded-For", f);
        }
        req.send().unwrap().status().as_u16()
    };
    assert_eq!(via_lb("127.0.0.2", None), 200, "{}", proxy.logs());
    assert_eq!(via_lb("127.0.0.3", None), 403, "{}", proxy.logs());
    // a client that writes the admitted address itself is still itself
    assert_eq!(via_lb("127.0.0.3", Some("127.0.0.2")), 403);
    // directly, from a peer that is not a trusted proxy, the header counts for nothing
    let direct = proxy
        .client_from("127.0.0.3".parse().unwrap())
        .get(proxy.url(PATH))
        .basic_auth(USER, Some(PASS))
        .header("X-Forwarded-For", "127.0.0.2")
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
