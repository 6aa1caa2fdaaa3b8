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

/// The connections to `ports` this process still holds (not listening
/// sockets) and the bytes sent on them that the clients have not
/// acknowledged yet (`/proc/net/tcp{,6}` `tx_queue`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OpenConnections {
    pub count: usize,
    pub unacked: u64,
}

/// The downstream connections among our own file descriptors. `None`
/// where /proc cannot tell (then the caller waits a fixed time).
pub fn open_connections(ports: &[u16]) -> Option<OpenConnections> {
    let ours = own_socket_inodes()?;
    let mut total = OpenConnections::default();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            let c = connections_in_table(&text, ports, &ours);
            total.count += c.count;
            total.unacked += c.unacked;
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

/// The rows of a /proc/net/tcp table whose local port is in `ports`,
/// whose inode is in `ours` and which are not listening (state `0A`).
fn connections_in_table(
    text: &str,
    ports: &[u16],
    ours: &std::collections::HashSet<u64>,
) -> OpenConnections {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let port = u16::from_str_radix(f.get(1)?.rsplit_once(':')?.1, 16).ok()?;
            let listening = *f.get(3)? == "0A";
            let tx = u64::from_str_radix(f.get(4)?.split_once(':')?.0, 16).ok()?;
            let inode: u64 = f.get(9)?.parse().ok()?;
            (ports.contains(&port) && !listening && ours.contains(&inode)).then_some(tx)
        })
        .fold(OpenConnections::default(), |c, tx| OpenConnections {
            count: c.count + 1,
            unacked: c.unacked + tx,
        })
}

/// Waits, until `deadline`, for every connection to clients on `ports` to
/// be closed by the server: an HTTP/2 connection closes only once its
/// streams are flushed, which the end of a request does not mean (h2
/// holds a response's tail until the client's window lets it go, and a
/// socket with an empty send queue can still have it pending). Exiting
/// earlier would cut that tail off. Without /proc, waits `fallback`
/// (bounded by the deadline).
pub fn wait_closed(ports: &[u16], deadline: Instant, fallback: Duration) {
    if open_connections(ports).is_none() {
        std::thread::sleep(fallback.min(deadline.saturating_duration_since(Instant::now())));
        return;
    }
    let mut last = None;
    while Instant::now() < deadline {
        match open_connections(ports) {
            Some(OpenConnections { count: 0, .. }) | None => return,
            Some(open) => last = Some(open),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Some(open) = last {
        tracing::warn!(
            connections = open.count,
            unacked_bytes = open.unacked,
            "grace period over with client connections still open"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_our_open_connections_on_our_ports_and_their_unacked_bytes() {
        // port 0x1F90 = 8080; inode 90 is our listening socket (not
        // counted), inodes 100 (ours, 0x200 bytes pending), 101 (ours,
        // other port, nothing pending), 102 (someone else's), 0 (orphan)
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 90 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:C350 01 00000200:00000000 01:00000014 00000000     0        0 100 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:0050 0100007F:C351 01 00000000:00000000 01:00000014 00000000     0        0 101 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:1F90 0100007F:C352 01 00000400:00000000 01:00000014 00000000     0        0 102 1 0000000000000000 20 4 30 10 -1
   4: 0100007F:1F90 0100007F:C353 06 00000000:00000000 03:00000014 00000000     0        0 0 1 0000000000000000 20 4 30 10 -1
   5: broken line
";
        let ours: std::collections::HashSet<u64> = [90, 100, 101].into();
        let open = |count, unacked| OpenConnections { count, unacked };
        assert_eq!(connections_in_table(table, &[8080], &ours), open(1, 0x200));
        // an open connection with an empty send queue still counts
        assert_eq!(
            connections_in_table(table, &[8080, 80], &ours),
            open(2, 0x200)
        );
        assert_eq!(connections_in_table(table, &[443], &ours), open(0, 0));
    }

    #[test]
    fn reads_this_process_sockets() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // only the listener: no connection
        assert_eq!(open_connections(&[port]).map(|c| c.count), Some(0));
        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (server, _) = listener.accept().unwrap();
        // one accepted connection (the client's end is ours too, but its
        // local port is another), nothing sent (and /proc is readable here)
        let open = OpenConnections {
            count: 1,
            unacked: 0,
        };
        assert_eq!(open_connections(&[port]), Some(open));
        drop(server);
        assert_eq!(open_connections(&[port]).map(|c| c.count), Some(0));
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
