//! Counts requests in flight so SIGTERM can exit as soon as the last
//! transfer finishes, instead of always waiting out the grace period.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Held by every request for its whole life.
pub struct InFlight(());

impl InFlight {
    pub fn enter() -> Self {
        IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        InFlight(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

pub fn in_flight() -> usize {
    IN_FLIGHT.load(Ordering::SeqCst)
}

/// Waits until no request is in flight or `grace` has passed; returns how
/// many were still running.
pub fn wait_idle(grace: Duration) -> usize {
    let deadline = Instant::now() + grace;
    loop {
        let n = in_flight();
        if n == 0 || Instant::now() >= deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Bytes this process has sent on connections to `ports` that the
/// clients have not acknowledged yet (`/proc/net/tcp{,6}` `tx_queue` of
/// the sockets among our own file descriptors). Exiting closes those
/// sockets; with data unsent or frames from the client unread, the kernel
/// answers with a reset and the client loses the tail of its download.
/// `None` where /proc cannot tell (then the caller waits a fixed time).
pub fn unacked_bytes(ports: &[u16]) -> Option<u64> {
    let ours = own_socket_inodes()?;
    let mut total = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            total += pending_in_table(&text, ports, &ours);
        }
    }
    Some(total)
}

fn own_socket_inodes() -> Option<std::collections::HashSet<u64>> {
    let dir = std::fs::read_dir("/proc/self/fd").ok()?;
    Some(
        dir.flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .filter_map(|l| {
                l.to_str()?
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .parse()
                    .ok()
            })
            .collect(),
    )
}

/// Sums `tx_queue` over the rows of a /proc/net/tcp table whose local port
/// is in `ports` and whose inode is in `ours` (listening sockets have none).
fn pending_in_table(text: &str, ports: &[u16], ours: &std::collections::HashSet<u64>) -> u64 {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let port = u16::from_str_radix(f.get(1)?.rsplit_once(':')?.1, 16).ok()?;
            let tx = u64::from_str_radix(f.get(4)?.split_once(':')?.0, 16).ok()?;
            let inode: u64 = f.get(9)?.parse().ok()?;
            (ports.contains(&port) && ours.contains(&inode)).then_some(tx)
        })
        .sum()
}

/// Waits, until `deadline`, for every byte sent to clients on `ports` to be
/// acknowledged; without /proc, waits `fallback` (bounded by the deadline).
pub fn wait_acknowledged(ports: &[u16], deadline: Instant, fallback: Duration) {
    if unacked_bytes(ports).is_none() {
        std::thread::sleep(fallback.min(deadline.saturating_duration_since(Instant::now())));
        return;
    }
    while Instant::now() < deadline {
        match unacked_bytes(ports) {
            Some(0) | None => return,
            Some(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_the_unacknowledged_bytes_of_our_sockets_on_our_ports() {
        // port 0x1F90 = 8080; inodes 100 (ours, 0x200 bytes pending),
        // 101 (ours, other port), 102 (someone else's), 0 (listening/orphan)
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 0 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:C350 01 00000200:00000000 01:00000014 00000000     0        0 100 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:0050 0100007F:C351 01 00000300:00000000 01:00000014 00000000     0        0 101 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:1F90 0100007F:C352 01 00000400:00000000 01:00000014 00000000     0        0 102 1 0000000000000000 20 4 30 10 -1
   4: broken line
";
        let ours: std::collections::HashSet<u64> = [100, 101].into();
        assert_eq!(pending_in_table(table, &[8080], &ours), 0x200);
        assert_eq!(pending_in_table(table, &[8080, 80], &ours), 0x500);
        assert_eq!(pending_in_table(table, &[443], &ours), 0);
    }

    #[test]
    fn reads_this_process_sockets() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _server = listener.accept().unwrap();
        // nothing sent: nothing pending (and /proc is readable here)
        assert_eq!(unacked_bytes(&[port]), Some(0));
    }

    // The counter is process-wide; this is the only test that touches it.
    #[test]
    fn counts_and_drains() {
        let a = InFlight::enter();
        let b = InFlight::enter();
        assert_eq!(in_flight(), 2);
        drop(b);
        // still one in flight when the grace period ends
        assert_eq!(wait_idle(Duration::from_millis(100)), 1);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(a);
        });
        assert_eq!(wait_idle(Duration::from_secs(10)), 0);
        t.join().unwrap();
    }
}
