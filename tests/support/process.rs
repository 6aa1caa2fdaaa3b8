//! Processes and waiting: the portcullis binary, bounded waits for child
//! processes and conditions, loopback ports, log tails, bash pipelines.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Upper bound of every wait loop.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_portcullis")
}

/// Runs the portcullis binary with `args`, optional stdin, and returns its output.
pub fn portcullis(args: &[&str], stdin: Option<&str>) -> Output {
    run_bounded(
        Command::new(bin()).args(args),
        stdin,
        Duration::from_secs(60),
        &format!("portcullis {args:?}"),
    )
}

/// Runs `cmd` with `stdin` written to it (or none), its output captured,
/// `limit` at most (see [`wait_output`]).
pub fn run_bounded(cmd: &mut Command, stdin: Option<&str>, limit: Duration, what: &str) -> Output {
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    if let Some(input) = stdin {
        let mut s = child.stdin.take().unwrap();
        s.write_all(input.as_bytes()).unwrap();
        drop(s);
    }
    wait_output(child, limit, what)
}

/// `child.wait_with_output()` with an upper bound (kills the child on timeout).
pub fn wait_output(mut child: Child, limit: Duration, what: &str) -> Output {
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_end(&mut v);
        }
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_end(&mut v);
        }
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

pub fn out_text(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// An ephemeral loopback port (bind :0, read the port, drop the listener).
/// A loopback port nothing listens on, for a child process to bind.
///
/// Ports come from below the kernel's ephemeral range: a port from
/// `bind(:0)` is free only until the kernel hands it out again as the source
/// port of some outgoing connection, which happened in CI (pebble's
/// management port, "address already in use"). Below that range only
/// another test can take it, and a reservation file under the temp dir,
/// created exclusively, keeps the test processes nextest runs side by side
/// from handing out the same port while its child starts.
pub fn free_port() -> u16 {
    use rand::Rng;
    let (lo, hi) = reservable_range();
    let dir = std::env::temp_dir().join("portcullis-test-ports");
    fs::create_dir_all(&dir).expect("create the port reservation dir");
    let mut rng = rand::thread_rng();
    for _ in 0..10_000 {
        let port = rng.gen_range(lo..hi);
        if !reserve(&dir.join(port.to_string())) {
            continue;
        }
        // Free now, on both the address children bind and the wildcard.
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("0.0.0.0", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no free loopback port in {lo}..{hi}");
}

/// Ports under the ephemeral range (`ip_local_port_range`), above the
/// well-known and commonly configured ones.
fn reservable_range() -> (u16, u16) {
    let ephemeral_lo = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    (
        ephemeral_lo.saturating_sub(12_000).max(10_000),
        ephemeral_lo,
    )
}

/// Claims a port for this test run: the file is created exclusively; one
/// older than ten minutes belongs to a finished run and is taken over.
fn reserve(file: &Path) -> bool {
    const STALE: Duration = Duration::from_secs(600);
    if OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(file)
        .is_ok()
    {
        return true;
    }
    let stale = fs::metadata(file)
        .and_then(|m| m.modified())
        .map(|t| t.elapsed().unwrap_or_default() > STALE)
        .unwrap_or(false);
    stale && fs::write(file, b"").is_ok()
}

/// Polls `f` every 50 ms until it returns true, at most `limit`; panics with
/// `what` and the diagnostics from `diag` otherwise.
pub fn wait_until(what: &str, limit: Duration, f: impl FnMut() -> bool, diag: impl Fn() -> String) {
    wait_until_every(what, limit, Duration::from_millis(50), f, diag)
}

/// [`wait_until`] polling every `every`.
pub fn wait_until_every(
    what: &str,
    limit: Duration,
    every: Duration,
    mut f: impl FnMut() -> bool,
    diag: impl Fn() -> String,
) {
    let start = Instant::now();
    loop {
        if f() {
            return;
        }
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for: {what}\n{}", diag());
        }
        std::thread::sleep(every);
    }
}

/// Polls `f` every `every` until it gives a value, at most `limit`; panics
/// with `what`, its last error and `diag` otherwise.
pub fn wait_for<T>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut f: impl FnMut() -> Result<T, String>,
    diag: impl Fn() -> String,
) -> T {
    let start = Instant::now();
    loop {
        let last = match f() {
            Ok(v) => return v,
            Err(e) => e,
        };
        if start.elapsed() > limit {
            panic!("{what}: not within {limit:?} (last: {last})\n{}", diag());
        }
        std::thread::sleep(every);
    }
}

/// Spawns `cmd` with stdin closed and stdout and stderr appended to `log`.
pub fn spawn_logged(cmd: &mut Command, log: &Path) -> Child {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()))
}

/// A fresh temp dir named `prefix…`.
pub fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().unwrap()
}

/// Last `n` lines of a file (empty if it does not exist).
pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    lines[from..].join("\n")
}

pub fn kill_child(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

pub fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// Writes `content` to `path` atomically (temp file in the same dir + rename).
pub fn write_atomic(path: &Path, content: &[u8]) {
    let tmp = path.with_extension(format!("tmp{}", rand::random::<u32>()));
    fs::write(&tmp, content).unwrap();
    fs::rename(&tmp, path).unwrap();
}

/// Runs a bash pipeline under `set -euo pipefail` (10 minutes at most).
pub fn bash(script: &str) -> Output {
    let child = Command::new("bash")
        .args(["-c", &format!("set -euo pipefail\n{script}")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(child, Duration::from_secs(600), "bash pipeline")
}
