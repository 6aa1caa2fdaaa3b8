//! `server.trusted_proxies` behind a real HAProxy (`option forwardfor`,
//! TLS re-encrypted to portcullis): a `networks` rule admits one client
//! address and refuses another, both arriving through HAProxy from the
//! same peer; a forged `X-Forwarded-For` helps neither through HAProxy nor
//! directly; the access log names the real client.

mod support;

use std::process::{Child, Command};
use std::time::Duration;
use support::*;

/// HAProxy on a free loopback port: plain HTTP in, TLS to portcullis.
struct Haproxy {
    child: Option<Child>,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    fn start(backend_port: u16) -> Haproxy {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let cfg = format!(
            "global\n  log stderr format raw local0 warning\n\
             defaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
             frontend fe\n  bind 127.0.0.1:{port}\n  option forwardfor\n  default_backend be\n\
             backend be\n  server portcullis 127.0.0.1:{backend_port} ssl verify none\n"
        );
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, cfg).unwrap();
        let log = dir.path().join("haproxy.log");
        let child = spawn_logged(
            Command::new("/usr/sbin/haproxy")
                .arg("-db")
                .arg("-f")
                .arg(&path),
            &log,
        );
        wait_until(
            "haproxy listening",
            WAIT,
            || port_open(port),
            || std::fs::read_to_string(&log).unwrap_or_default(),
        );
        Haproxy {
            child: Some(child),
            port,
            _dir: dir,
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
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
    let lb = Haproxy::start(proxy.port());
    let via_lb = |from: &str, forged: Option<&str>| -> u16 {
        let client = reqwest::blocking::Client::builder()
            .local_address(from.parse::<std::net::IpAddr>().unwrap())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let mut req = client
            .get(format!("http://127.0.0.1:{}{PATH}", lb.port))
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
    let clients: Vec<String> = access_lines(&proxy)
        .into_iter()
        .filter(|l| log_field(l, "path") == Some(PATH))
        .map(|l| {
            format!(
                "{}:{}",
                log_field(&l, "client").unwrap_or("?"),
                log_field(&l, "status").unwrap_or("?")
            )
        })
        .collect();
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
