//! `[limits]`: request rate limits per client address and per user, as
//! token buckets in GCRA form (one number per key: the *theoretical
//! arrival time*, when the bucket would be full again).
//!
//! The check is local and never waits: with `[cluster]`, a background
//! service (`server::limits_sync`) adds up what every replica admitted in
//! Redis each `cluster.sync_interval` and moves each bucket's arrival time
//! to the fleet's, so N replicas give a client one bucket, not N, within
//! one interval's slack. A hand-rolled bucket rather than `governor`:
//! that crate's state cannot be merged with a shared copy.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::limits::{LimitsConfig, RateConfig};

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Address,
    User,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Address => "address",
            Kind::User => "user",
        }
    }
}

/// A request over a limit: when the next one would be admitted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limited {
    pub kind: Kind,
    pub retry_after: Duration,
}

/// The configured limits of one process.
pub struct Limits {
    per_address: Option<Buckets<IpAddr>>,
    per_user: Option<Buckets<String>>,
    exempt: Vec<ipnet::IpNet>,
}

impl Limits {
    /// `shared`: a fleet sync will [`drain`](Self::drain) what is admitted.
    pub fn new(cfg: &LimitsConfig, shared: bool) -> Self {
        Limits {
            per_address: cfg.per_address.map(|r| Buckets::new(r, shared)),
            per_user: cfg.per_user.map(|r| Buckets::new(r, shared)),
            exempt: cfg.exempt.clone(),
        }
    }

    fn exempt(&self, ip: IpAddr) -> bool {
        self.exempt.iter().any(|n| n.contains(&ip))
    }

    /// Counts a request from `ip`; `Err` if it is over the address limit.
    pub fn check_address(&self, ip: IpAddr) -> Result<(), Limited> {
        match &self.per_address {
            Some(b) if !self.exempt(ip) => b.take(address_key(ip)).map_err(|retry_after| Limited {
                kind: Kind::Address,
                retry_after,
            }),
            _ => Ok(()),
        }
    }

    /// Counts an authenticated request of `user` from `ip`.
    pub fn check_user(&self, user: &str, ip: IpAddr) -> Result<(), Limited> {
        match &self.per_user {
            // the map is keyed by owned names: look up first, allocate once
            Some(b) if !self.exempt(ip) => {
                b.take_with(user, || user.to_owned())
                    .map_err(|retry_after| Limited {
                        kind: Kind::User,
                        retry_after,
                    })
            }
            _ => Ok(()),
        }
    }

    /// For the fleet: each bucket that admitted requests or still holds
    /// some debt, with the cost (seconds of refill) admitted since the
    /// last call, as `(kind, key)`.
    pub fn drain(&self) -> Vec<(Kind, String, f64)> {
        let mut out = Vec::new();
        if let Some(b) = &self.per_address {
            out.extend(b.drain().map(|(k, c)| (Kind::Address, k.to_string(), c)));
        }
        if let Some(b) = &self.per_user {
            out.extend(b.drain().map(|(k, c)| (Kind::User, k, c)));
        }
        out
    }

    /// The fleet's bucket for `key` is `debt` seconds from full: this
    /// replica's bucket is at least as empty.
    pub fn absorb(&self, kind: Kind, key: &str, debt: f64) {
        match kind {
            Kind::Address => {
                if let (Some(b), Ok(ip)) = (&self.per_address, key.parse::<IpAddr>()) {
                    b.absorb(&ip, debt);
                }
            }
            Kind::User => {
                if let Some(b) = &self.per_user {
                    b.absorb(key, debt);
                }
            }
        }
    }

    /// The burst tolerance of `kind`, in seconds (what the shared copy
    /// keeps beyond the debt).
    pub fn tolerance(&self, kind: Kind) -> f64 {
        match kind {
            Kind::Address => self.per_address.as_ref().map_or(0.0, |b| b.tau),
            Kind::User => self.per_user.as_ref().map_or(0.0, |b| b.tau),
        }
    }
}

/// IPv6 clients are limited per /64: one host holds a whole one.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

const SHARDS: usize = 16;

/// Buckets by key, in shards so that workers rarely wait on each other.
struct Buckets<K> {
    /// Seconds of refill one request costs (1 / rate).
    cost: f64,
    /// How far ahead of now the arrival time may run: `burst` requests.
    tau: f64,
    /// Whether admitted cost is kept for the fleet sync.
    shared: bool,
    epoch: Instant,
    hasher: std::collections::hash_map::RandomState,
    shards: Vec<Mutex<Shard<K>>>,
}

struct Shard<K> {
    map: HashMap<K, Bucket>,
    /// Size after the last sweep of full buckets: the next is due at twice.
    swept: usize,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Seconds since `epoch` when the bucket is full again.
    tat: f64,
    /// Cost admitted since the last [`Buckets::drain`].
    unsynced: f64,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    fn new(r: RateConfig, shared: bool) -> Self {
        let cost = 1.0 / r.rate;
        Buckets {
            cost,
            tau: cost * f64::from(r.burst),
            shared,
            epoch: Instant::now(),
            hasher: Default::default(),
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        map: HashMap::new(),
                        swept: 0,
                    })
                })
                .collect(),
        }
    }

    fn now(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64()
    }

    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> std::sync::MutexGuard<'_, Shard<K>> {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        // a panic while holding a shard leaves plain numbers behind
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take(&self, key: K) -> Result<(), Duration> {
        let now = self.now();
        let mut shard = self.shard(&key);
        shard.sweep(now);
        let b = shard.map.entry(key).or_default();
        admit(b, now, self.cost, self.tau, self.shared)
    }

    fn take_with<Q>(&self, key: &Q, owned: impl FnOnce() -> K) -> Result<(), Duration>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let now = self.now();
        let mut shard = self.shard(key);
        shard.sweep(now);
        if let Some(b) = shard.map.get_mut(key) {
            return admit(b, now, self.cost, self.tau, self.shared);
        }
        let b = shard.map.entry(owned()).or_default();
        admit(b, now, self.cost, self.tau, self.shared)
    }

    fn drain(&self) -> impl Iterator<Item = (K, f64)> + '_ {
        let now = self.now();
        self.shards.iter().flat_map(move |s| {
            let mut shard = s.lock().unwrap_or_else(|p| p.into_inner());
            shard
                .map
                .iter_mut()
                .filter(|(_, b)| b.unsynced > 0.0 || b.tat > now)
                .map(|(k, b)| (k.clone(), std::mem::take(&mut b.unsynced)))
                .collect::<Vec<_>>()
        })
    }

    fn absorb<Q>(&self, key: &Q, debt: f64)
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let now = self.now();
        let mut shard = self.shard(key);
        if let Some(b) = shard.map.get_mut(key) {
            b.tat = b.tat.max(now + debt);
        }
    }
}

impl<K: Hash + Eq> Shard<K> {
    /// Drops full buckets (they hold nothing a new one would not), so
    /// that a scan over many addresses costs memory only while it lasts.
    fn sweep(&mut self, now: f64) {
        if self.map.len() >= 2 * self.swept + 1024 {
            self.map.retain(|_, b| b.tat > now || b.unsynced > 0.0);
            self.swept = self.map.len();
        }
    }
}

/// GCRA: admit if the arrival time, moved on by one request, stays within
/// `tau` of now; a refused request costs nothing.
fn admit(b: &mut Bucket, now: f64, cost: f64, tau: f64, shared: bool) -> Result<(), Duration> {
    let next = b.tat.max(now) + cost;
    let over = next - now - tau;
    if over > 1e-9 {
        return Err(Duration::from_secs_f64(over));
    }
    b.tat = next;
    if shared {
        b.unsynced += cost;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rate: f64, burst: u32, exempt: &[&str]) -> Limits {
        let r = RateConfig { rate, burst };
        let cfg = LimitsConfig {
            per_address: Some(r),
            per_user: Some(r),
            exempt: exempt.iter().map(|n| n.parse().unwrap()).collect(),
        };
        Limits::new(&cfg, true)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_burst_then_refusals_with_the_wait() {
        let l = limits(0.1, 3, &[]);
        for _ in 0..3 {
            assert_eq!(l.check_address(ip("192.0.2.1")), Ok(()));
        }
        let refused = l.check_address(ip("192.0.2.1")).unwrap_err();
        assert_eq!(refused.kind, Kind::Address);
        // one request's refill at 0.1/s: 10 s, less the instants passed
        let wait = refused.retry_after.as_secs_f64();
        assert!((9.0..=10.0).contains(&wait), "{wait}");
        // a refused request costs nothing: the wait does not grow
        let again = l.check_address(ip("192.0.2.1")).unwrap_err();
        assert!(again.retry_after <= refused.retry_after);
        // others have their own buckets
        assert_eq!(l.check_address(ip("192.0.2.2")), Ok(()));
        assert_eq!(l.check_user("alice", ip("192.0.2.1")), Ok(()));
    }

    #[test]
    fn refill_admits_again() {
        let l = limits(1000.0, 1, &[]);
        assert_eq!(l.check_user("alice", ip("192.0.2.1")), Ok(()));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(l.check_user("alice", ip("192.0.2.1")), Ok(()));
    }

    #[test]
    fn users_are_limited_wherever_they_come_from() {
        let l = limits(0.01, 2, &[]);
        assert_eq!(l.check_user("ci", ip("192.0.2.1")), Ok(()));
        assert_eq!(l.check_user("ci", ip("192.0.2.2")), Ok(()));
        assert_eq!(
            l.check_user("ci", ip("192.0.2.3")).map_err(|e| e.kind),
            Err(Kind::User)
        );
    }

    #[test]
    fn exempt_networks_and_ipv6_prefixes() {
        let l = limits(0.01, 1, &["10.0.0.0/8"]);
        for _ in 0..5 {
            assert_eq!(l.check_address(ip("10.1.2.3")), Ok(()));
            assert_eq!(l.check_user("ci", ip("10.1.2.3")), Ok(()));
        }
        // one /64 is one bucket
        assert_eq!(l.check_address(ip("2001:db8:1:2::1")), Ok(()));
        assert!(l.check_address(ip("2001:db8:1:2::ffff")).is_err());
        assert_eq!(l.check_address(ip("2001:db8:1:3::1")), Ok(()));
    }

    #[test]
    fn the_fleets_debt_empties_a_local_bucket() {
        let l = limits(0.01, 5, &[]);
        assert_eq!(l.check_address(ip("192.0.2.1")), Ok(()));
        let drained = l.drain();
        assert_eq!(drained.len(), 1);
        let (kind, key, cost) = &drained[0];
        assert_eq!((*kind, key.as_str()), (Kind::Address, "192.0.2.1"));
        assert!((cost - 100.0).abs() < 1e-6, "{cost}");
        // drained once: nothing new admitted, but the debt is still there
        assert_eq!(l.drain()[0].2, 0.0);
        // other replicas admitted 4 more: the fleet's bucket is 5 deep
        l.absorb(Kind::Address, "192.0.2.1", 500.0);
        assert!(l.check_address(ip("192.0.2.1")).is_err());
        // a key this replica never saw is not created by the fleet
        l.absorb(Kind::User, "nobody", 500.0);
        assert_eq!(l.check_user("nobody", ip("192.0.2.9")), Ok(()));
        assert_eq!(l.tolerance(Kind::User), 500.0);
    }

    #[test]
    fn full_buckets_are_swept() {
        let r = RateConfig {
            rate: 1e9,
            burst: 1,
        };
        let cfg = LimitsConfig {
            per_address: Some(r),
            ..Default::default()
        };
        let held = |l: &Limits| -> usize {
            let b = l.per_address.as_ref().unwrap();
            b.shards.iter().map(|s| s.lock().unwrap().map.len()).sum()
        };
        // a scan of 40,000 addresses, each full again a nanosecond later
        let alone = Limits::new(&cfg, false);
        for i in 0..40_000u32 {
            let _ = alone.check_address(IpAddr::V4(i.into()));
        }
        assert!(held(&alone) < 20_000, "{} buckets held", held(&alone));
        // in a fleet, what the sync has not taken yet is kept
        let fleet = Limits::new(&cfg, true);
        for i in 0..40_000u32 {
            let _ = fleet.check_address(IpAddr::V4(i.into()));
        }
        assert_eq!(held(&fleet), 40_000);
        assert_eq!(fleet.drain().len(), 40_000);
        // then synced as it goes: what is synced and full goes
        for i in 40_000..80_000u32 {
            let _ = fleet.check_address(IpAddr::V4(i.into()));
            if i % 1000 == 0 {
                let _ = fleet.drain();
            }
        }
        assert!(held(&fleet) < 40_000, "{} buckets held", held(&fleet));
    }
}
