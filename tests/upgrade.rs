//! Zero-downtime binary upgrade: a new process takes over the listening
//! sockets (SIGQUIT to the old one) while a 1 GiB push is in flight on the
//! old one; the push completes with the right digest, and new requests are
//! served by the new process.

mod support;

use reqwest::Method;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::*;

const SIZE: u64 = 1 << 30;

fn signal(sig: &str, pid: u32) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

#[test]
fn push_in_flight_survives_a_binary_upgrade() {
    let reg = Registry::start();
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("upgrade.sock");
    let mut old = Proxy::start(
        &reg,
        ProxyOptions {
            extra_server: format!(
                "grace_period = \"120s\"\nupgrade_sock = \"{}\"",
                sock.display()
            ),
            ..ProxyOptions::default()
        },
    );
    let digest = digest_of_stream(&stream_generator(SIZE));

    let r = old.send_req(Method::POST, "/v2/upgrade/layer/blobs/uploads/");
    assert_eq!(r.status(), 202, "{}", old.logs());
    let loc = absolute(&old, &header_of(&r, "location").unwrap());

    // the push runs in the background, rate-limited so it spans the upgrade
    let hdr = sock_dir.path().join("patch.headers");
    let push = {
        let script = format!(
            "{gen} | curl -sS --http1.1 --fail-with-body --max-time 300 --limit-rate 60M --cacert '{ca}' -u '{USER}:{PASS}' -X PATCH \
             -H 'Content-Type: application/octet-stream' -T - -D '{hdr}' -o /dev/null '{loc}'",
            gen = stream_generator(SIZE),
            ca = old.ca_pem_path().display(),
            hdr = hdr.display(),
        );
        std::thread::spawn(move || bash(&script))
    };
    std::thread::sleep(Duration::from_secs(2));

    // the new binary waits for the sockets; SIGQUIT makes the old hand them over
    let new_log = sock_dir.path().join("new.stderr");
    let mut new = Command::new(bin())
        .args(["serve", "--upgrade", "--config"])
        .arg(old.config_path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&new_log).unwrap())
        .spawn()
        .unwrap();
    wait_until(
        "new process waits on the upgrade socket",
        Duration::from_secs(20),
        || {
            std::fs::read_to_string(&new_log)
                .is_ok_and(|l| l.contains("waiting for the running process"))
        },
        || std::fs::read_to_string(&new_log).unwrap_or_default(),
    );
    std::thread::sleep(Duration::from_millis(500));
    signal("-QUIT", old.pid());

    // new connections are answered by the new process
    wait_until(
        "the new process serves requests",
        Duration::from_secs(30),
        || {
            let ok = old
                .req(Method::GET, "/v2/")
                .send()
                .is_ok_and(|r| r.status() == 200);
            ok && std::fs::read_to_string(&new_log).is_ok_and(|l| l.contains("path=\"/v2/\""))
        },
        || std::fs::read_to_string(&new_log).unwrap_or_default(),
    );

    // the push that started on the old process completes
    let o = push.join().unwrap();
    assert!(
        o.status.success(),
        "PATCH across the upgrade failed: {}\n{}",
        out_text(&o),
        old.logs()
    );
    let headers = std::fs::read_to_string(&hdr).unwrap();
    assert!(
        headers
            .to_ascii_lowercase()
            .contains(&format!("range: 0-{}", SIZE - 1)),
        "registry did not get all bytes: {headers}"
    );
    let patch_loc = last_location(&headers).unwrap();
    let r = old.put_digest(&patch_loc, &digest).send().unwrap();
    assert_eq!(
        r.status(),
        201,
        "PUT ?digest= after the upgrade: {:?}",
        r.text()
    );

    // the old process exits once its transfer is done
    let mut exited = false;
    for _ in 0..300 {
        if !old.is_running() {
            exited = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(exited, "old process still running: {}", old.logs());
    // and the blob is there, through the new process
    let r = old.send_req(Method::HEAD, &format!("/v2/upgrade/layer/blobs/{digest}"));
    assert_eq!(r.status(), 200);
    let _ = new.kill();
    let _ = new.wait();
}
