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
fn in_flight_http1_download_finishes_after_sigterm() {
    in_flight_download_finishes_after_sigterm(true);
}

#[test]
fn in_flight_http2_download_finishes_after_sigterm() {
    in_flight_download_finishes_after_sigterm(false);
}

/// A download in flight when SIGTERM comes, read slowly by its client,
/// completes; new connections are refused meanwhile; the process exits by
/// itself once it is done.
fn in_flight_download_finishes_after_sigterm(http1: bool) {
    let reg = Registry::start();
    let mut proxy = Proxy::start(
        &reg,
        ProxyOptions::default().line_in("server", "grace_period = \"60s\""),
    );
    let data = pseudo_random(48 << 20, 7);
    let digest = push_blob(&proxy, "shutdown/app", &data);

    let mut resp = proxy
        .new_client(http1)
        .get(proxy.url(&format!("/v2/shutdown/app/blobs/{digest}")))
        .basic_auth(USER, Some(PASS))
        .send()
        .unwrap();
    assert_eq!(resp.version() == reqwest::Version::HTTP_11, http1);
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

    // the transfer that was in flight completes, byte for byte, even
    // read slowly (about 8 MiB/s: several seconds after SIGTERM)
    let mut buf = vec![0u8; 256 << 10];
    let mut unpaced = 0;
    loop {
        let n = resp
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("after {} bytes: {e}\n{}", got.len(), proxy.logs()));
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        // h2 reads return a frame (16 KiB) at a time: pace by bytes
        unpaced += n;
        if unpaced >= 256 << 10 {
            unpaced = 0;
            std::thread::sleep(Duration::from_millis(30));
        }
    }
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
        ProxyOptions::default().line_in("server", "grace_period = \"120s\""),
    );
    let r = proxy.send_req(reqwest::Method::GET, "/v2/");
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
