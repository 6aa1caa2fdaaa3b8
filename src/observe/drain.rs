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

#[cfg(test)]
mod tests {
    use super::*;

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
