//! Refused uploads, with real curl over HTTP/2 and HTTP/1.1: the client
//! sees the refusal's status and JSON error every time, whatever the size
//! of the body it was sending, and the proxy reads no more of a refused
//! body than its cap (`DRAIN_LIMIT` in `src/http/reply.rs`).
//!
//! Before the proxy drained refused bodies, curl 7.88 over HTTP/2 failed
//! with error 92 and no status in most tries (the stream was reset with
//! `NO_ERROR` while it was still sending), and over HTTP/1.1 with error 55
//! in some (the socket was closed with the body unread).

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use support::*;

/// alice may do anything; bob may only pull team-a.
fn rules() -> Vec<Rule> {
    vec![
        Rule::users(&["alice"]).all(),
        Rule::users(&["bob"]).on(&["team-a/**"]).pull(),
    ]
}

/// `DRAIN_LIMIT` of `src/http/reply.rs`, and the one read (at most 64 KiB)
/// that may cross it.
const DRAIN_LIMIT: u64 = (4 << 20) + (64 << 10);

const TRIES: usize = 20;

const UPLOAD: &str = "/v2/team-a/app/blobs/uploads/0a1b2c3d-uuid";

fn start() -> (Registry, Proxy) {
    let reg = Registry::start();
    let proxy = Proxy::start(
        &reg,
        ProxyOptions::basic(&[(USER, PASS), BOB]).rules(&rules()),
    );
    (reg, proxy)
}

/// One curl run: its exit code, the status it reports and the body.
fn curl(proxy: &Proxy, args: &[&str]) -> (i32, String, Vec<u8>) {
    let tmp = tempfile::tempdir().unwrap();
    let body = tmp.path().join("body");
    let o = Command::new("curl")
        .args(["-sS", "--max-time", "60", "-w", "%{http_code}", "--cacert"])
        .arg(proxy.ca_pem_path())
        .arg("-o")
        .arg(&body)
        .args(args)
        .output()
        .expect("run curl");
    (
        o.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        std::fs::read(&body).unwrap_or_default(),
    )
}

/// `TRIES` refused uploads of `file`: every one must end with `status`
/// and the registry error `code`.
fn assert_refused_every_time(
    proxy: &Proxy,
    what: &str,
    args: &[&str],
    file: &Path,
    status: u16,
    code: &str,
) {
    let mut failures = Vec::new();
    for i in 0..TRIES {
        let url = proxy.url(&format!("{UPLOAD}-{i}"));
        let data = format!("@{}", file.display());
        let mut all: Vec<&str> = args.iter().filter(|a| **a != "-T").copied().collect();
        // `-T` is a PUT of the file, the rest a PATCH of it
        if !args.contains(&"-T") {
            all.extend([
                "-X",
                "PATCH",
                "-H",
                "Content-Type: application/octet-stream",
                "--data-binary",
                &data,
            ]);
        } else {
            all.extend(["-T", file.to_str().unwrap()]);
        }
        all.push(&url);
        let (rc, out, body) = curl(proxy, &all);
        let codes = error_codes(&body);
        if rc != 0 || !out.ends_with(&status.to_string()) || codes != Ok(vec![code.to_string()]) {
            failures.push(format!(
                "try {i}: exit {rc}, {out:?}, body {:?}",
                String::from_utf8_lossy(&body)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{what}: {} of {TRIES} tries did not see {status} {code}:\n{}\n{}",
        failures.len(),
        failures.join("\n"),
        proxy.logs()
    );
}

/// The `bytes_in` of the access-log lines of refused uploads.
fn refused_bytes_in(proxy: &Proxy) -> Vec<u64> {
    proxy
        .log_text()
        .lines()
        .filter(|l| l.contains(" access: ") && l.contains("app/blobs/uploads/"))
        .filter(|l| l.contains("status=403") || l.contains("status=401"))
        .filter_map(|l| {
            let v = l.split("bytes_in=").nth(1)?.split_whitespace().next()?;
            v.parse().ok()
        })
        .collect()
}

fn files(dir: &Path) -> Vec<(&'static str, std::path::PathBuf)> {
    [
        ("1 KiB", 1024usize),
        ("1 MiB", 1 << 20),
        ("64 MiB", 64 << 20),
    ]
    .into_iter()
    .map(|(name, len)| {
        let path = dir.join(name.replace(' ', ""));
        std::fs::write(&path, vec![b'x'; len]).unwrap();
        (name, path)
    })
    .collect()
}

#[test]
fn refused_uploads_show_their_status_and_error_over_http2_and_http1() {
    let (_reg, proxy) = start();
    let dir = tempfile::tempdir().unwrap();
    let bob = format!("{}:{}", BOB.0, BOB.1);
    for (name, file) in files(dir.path()) {
        for (proto, upload) in [
            ("--http2", "PATCH"),
            ("--http2", "-T"),
            ("--http1.1", "PATCH"),
            ("--http1.1", "-T"),
        ] {
            let mut args = vec![proto];
            if upload == "-T" {
                args.push("-T");
            }
            // a pull-only user's push: 403
            let mut with_user = args.clone();
            with_user.extend(["-u", &bob]);
            let what = format!("{name} {proto} {upload} as bob");
            assert_refused_every_time(&proxy, &what, &with_user, &file, 403, "DENIED");
            // no credentials: 401
            let what = format!("{name} {proto} {upload} without credentials");
            assert_refused_every_time(&proxy, &what, &args, &file, 401, "UNAUTHORIZED");
        }
    }
    // every refusal has its access-log line, and none read past the cap
    let expected = 3 * 4 * 2 * TRIES;
    wait_until(
        "the access-log lines of the refused uploads",
        WAIT,
        || refused_bytes_in(&proxy).len() >= expected,
        || proxy.logs(),
    );
    let read = refused_bytes_in(&proxy);
    assert!(
        read.iter().all(|&b| b <= DRAIN_LIMIT),
        "a refused body was read past {DRAIN_LIMIT} bytes: {read:?}"
    );
    let r = proxy.req(reqwest::Method::GET, "/v2/").send().unwrap();
    assert_eq!(r.status(), 200, "{}", proxy.logs());
}

/// A client that never stops sending (it does not read the answer): the
/// proxy reads at most `DRAIN_LIMIT` of the refused body, then closes the
/// connection, so the 64 MiB cannot all be written.
#[test]
fn a_refused_body_is_not_read_without_limit() {
    let (_reg, proxy) = start();
    let len: usize = 64 << 20;
    let mut child = Command::new("openssl")
        .args(["s_client", "-quiet", "-no_ign_eof", "-alpn", "http/1.1"])
        .args(["-connect", &format!("127.0.0.1:{}", proxy.port())])
        .arg("-CAfile")
        .arg(proxy.ca_pem_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run openssl s_client");
    let mut stdin = child.stdin.take().unwrap();
    let head = format!(
        "PATCH {UPLOAD}-raw HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {len}\r\n\r\n",
        proxy.port()
    );
    stdin.write_all(head.as_bytes()).unwrap();
    let chunk = vec![b'x'; 64 << 10];
    let mut written = 0;
    while written < len {
        if stdin.write_all(&chunk).is_err() {
            break;
        }
        written += chunk.len();
    }
    drop(stdin);
    let _ = child.wait();
    assert!(
        written < len,
        "the proxy took all of a refused 64 MiB body:\n{}",
        proxy.logs()
    );
    wait_until(
        "the access-log line of the raw upload",
        WAIT,
        || {
            proxy
                .log_text()
                .lines()
                .any(|l| l.contains(" access: ") && l.contains("uploads/0a1b2c3d-uuid-raw"))
        },
        || proxy.logs(),
    );
    let line = proxy
        .log_text()
        .lines()
        .find(|l| l.contains(" access: ") && l.contains("uploads/0a1b2c3d-uuid-raw"))
        .unwrap()
        .to_string();
    assert!(line.contains("status=401"), "{line}");
    let read: u64 = line
        .split("bytes_in=")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no bytes_in: {line}"));
    assert!(
        read <= DRAIN_LIMIT,
        "read {read} bytes of a refused body (cap {DRAIN_LIMIT}): {line}"
    );
}
