//! SIGTERM: stop accepting, let in-flight transfers finish, then exit.

mod support;

use std::io::Read;
use std::time::Duration;
use support::*;

fn sigterm(pid: u32) {
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -TERM {pid}");
}

fn exits_within(proxy: &mut Proxy, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if !proxy.is_running() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
#[ignore = "flaky: the in-flight download is sometimes reset about 1 s after SIGTERM \
            (seen under load and once locally); kept to reproduce the defect: \
            cargo nextest run --test shutdown --run-ignored all"]
fn in_flight_download_finishes_after_sigterm_and_new_connections_are_refused() {
    let reg = Registry::start();
    let mut proxy = Proxy::start(
        &reg,
        ProxyOptions {
            extra_server: "grace_period = \"60s\"".into(),
            ..ProxyOptions::default()
        },
    );
    let data = pseudo_random(48 << 20, 7);
    let digest = push_blob(&proxy, "shutdown/app", &data);

    let mut resp = proxy
        .req(
            reqwest::Method::GET,
            &format!("/v2/shutdown/app/blobs/{digest}"),
        )
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    // read a little, then ask the proxy to stop while the rest is pending
    let mut got = vec![0u8; 1 << 20];
    resp.read_exact(&mut got).unwrap();
    sigterm(proxy.pid());

    // a new connection is not accepted any more (bounded wait for the
    // listener to close)
    let port = proxy.port();
    wait_until(
        "listener closed after SIGTERM",
        Duration::from_secs(10),
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        || proxy.logs(),
    );

    // the transfer that was in flight completes, byte for byte
    let mut rest = Vec::new();
    resp.read_to_end(&mut rest).unwrap();
    got.extend_from_slice(&rest);
    assert_eq!(got.len(), data.len(), "download cut short by the shutdown");
    assert_eq!(sha256_digest(&got), digest);

    // and then the process exits on its own, long before the 60 s grace
    assert!(
        exits_within(&mut proxy, Duration::from_secs(15)),
        "{}",
        proxy.logs()
    );
}

#[test]
fn idle_proxy_exits_promptly_on_sigterm() {
    let reg = Registry::start();
    let mut proxy = Proxy::start(
        &reg,
        ProxyOptions {
            extra_server: "grace_period = \"120s\"".into(),
            ..ProxyOptions::default()
        },
    );
    let r = proxy.req(reqwest::Method::GET, "/v2/").send().unwrap();
    assert_eq!(r.status(), 200);
    sigterm(proxy.pid());
    // without waiting out the grace period
    assert!(
        exits_within(&mut proxy, Duration::from_secs(15)),
        "{}",
        proxy.logs()
    );
    assert!(proxy.logs().contains("SIGTERM"), "{}", proxy.logs());
}
