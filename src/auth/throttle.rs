//! Brute-force throttling of failed logins.
//!
//! Failures are counted per client address and per user name. Past the
//! limit, an address is refused outright, and a user name is refused only
//! from addresses that have themselves failed for it — so an attacker
//! guessing alice's password cannot lock the real alice out from her own
//! machine. Throttled attempts are answered before any bcrypt or directory
//! call, so they cost nothing. State is in bounded in-memory caches.

use moka::sync::Cache;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::ThrottleConfig;

#[derive(Debug, Clone, Copy, Default)]
struct Failures {
    count: u32,
    blocked_until: Option<Instant>,
}

pub struct Throttle {
    cfg: ThrottleConfig,
    by_ip: Cache<IpAddr, Arc<std::sync::Mutex<Failures>>>,
    by_user: Cache<String, Arc<std::sync::Mutex<Failures>>>,
    /// (user, address) pairs that have failed at least once.
    pairs: Cache<(String, IpAddr), ()>,
}

impl Throttle {
    pub fn new(cfg: &ThrottleConfig) -> Self {
        Throttle {
            cfg: cfg.clone(),
            by_ip: bounded(cfg),
            by_user: bounded(cfg),
            pairs: bounded(cfg),
        }
    }

    /// `Some(retry_after)` if this attempt must be refused unexamined.
    pub fn check(&self, user: Option<&str>, ip: IpAddr) -> Option<Duration> {
        if !self.cfg.enabled {
            return None;
        }
        let now = Instant::now();
        let blocked = |f: &Arc<std::sync::Mutex<Failures>>| {
            f.lock()
                .ok()
                .and_then(|f| f.blocked_until)
                .and_then(|t| t.checked_duration_since(now))
        };
        if let Some(wait) = self.by_ip.get(&ip).as_ref().and_then(blocked) {
            return Some(wait);
        }
        let user = user?;
        if self.pairs.contains_key(&(user.to_owned(), ip)) {
            if let Some(wait) = self.by_user.get(user).as_ref().and_then(blocked) {
                return Some(wait);
            }
        }
        None
    }

    /// Records a failed login.
    pub fn failed(&self, user: Option<&str>, ip: IpAddr) {
        if !self.cfg.enabled {
            return;
        }
        self.bump(self.by_ip.get_with(ip, Default::default));
        if let Some(user) = user {
            self.pairs.insert((user.to_owned(), ip), ());
            self.bump(self.by_user.get_with(user.to_owned(), Default::default));
        }
    }

    /// A success from this address forgets its failures for this user.
    pub fn succeeded(&self, user: &str, ip: IpAddr) {
        self.pairs.invalidate(&(user.to_owned(), ip));
    }

    fn bump(&self, entry: Arc<std::sync::Mutex<Failures>>) {
        let Ok(mut f) = entry.lock() else { return };
        f.count = f.count.saturating_add(1);
        if f.count >= self.cfg.max_failures {
            let over = (f.count - self.cfg.max_failures).min(20);
            let backoff = self
                .cfg
                .backoff
                .saturating_mul(1u32 << over)
                .min(self.cfg.max_backoff);
            f.blocked_until = Some(Instant::now() + backoff);
        }
    }
}

fn bounded<K, V>(cfg: &ThrottleConfig) -> Cache<K, V>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    Cache::builder()
        .time_to_idle(cfg.window)
        .max_capacity(cfg.max_entries)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(max: u32) -> Throttle {
        Throttle::new(&ThrottleConfig {
            max_failures: max,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(8),
            ..ThrottleConfig::default()
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_the_failing_address_after_the_limit() {
        let t = throttle(3);
        let a = ip("192.0.2.1");
        for _ in 0..2 {
            assert!(t.check(Some("alice"), a).is_none());
            t.failed(Some("alice"), a);
        }
        assert!(t.check(Some("alice"), a).is_none());
        t.failed(Some("alice"), a);
        let wait = t
            .check(Some("bob"), a)
            .expect("address blocked for every user");
        assert!(wait <= Duration::from_secs(1));
    }

    #[test]
    fn user_is_not_locked_out_from_a_clean_address() {
        let t = throttle(3);
        // failures for alice spread over many attacking addresses
        for i in 0..10 {
            t.failed(Some("alice"), ip(&format!("198.51.100.{i}")));
        }
        // each attacking address has failed only once, but alice is now
        // throttled from all of them
        assert!(t.check(Some("alice"), ip("198.51.100.1")).is_some());
        // ... and never from an address that has not failed
        assert!(t.check(Some("alice"), ip("192.0.2.77")).is_none());
        // other users from an attacking address are fine (address below limit)
        assert!(t.check(Some("bob"), ip("198.51.100.1")).is_none());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let t = throttle(1);
        let a = ip("192.0.2.9");
        t.failed(None, a);
        let first = t.check(None, a).unwrap();
        for _ in 0..10 {
            t.failed(None, a);
        }
        let later = t.check(None, a).unwrap();
        assert!(later > first, "{later:?} > {first:?}");
        assert!(later <= Duration::from_secs(8));
    }

    #[test]
    fn disabled_never_blocks() {
        let t = Throttle::new(&ThrottleConfig {
            enabled: false,
            max_failures: 1,
            ..ThrottleConfig::default()
        });
        let a = ip("192.0.2.1");
        for _ in 0..5 {
            t.failed(Some("x"), a);
        }
        assert!(t.check(Some("x"), a).is_none());
    }
}
