//! Brute-force throttling of failed logins.
//!
//! Failures are counted per client address and per user name. Past the
//! limit, an address is refused outright, and a user name is refused only
//! from addresses that have themselves failed for it — so an attacker
//! guessing alice's password cannot lock the real alice out from her own
//! machine. Throttled attempts are answered before any bcrypt or directory
//! call, so they cost nothing. State is in bounded in-memory caches.
//!
//! An IPv6 client is counted by its network (`ipv6_prefix`, a /64 by
//! default), not its address: a host is usually given a whole /64 and
//! could otherwise use a fresh address for every guess. User names are
//! counted in a folded form (case, width and surrounding spaces), since a
//! directory that matches names loosely accepts `ALICE` and `alice ` for
//! `alice`.
//!
//! With `[cluster]`, the counts, pairs and blocks are also kept in Redis
//! ([`Throttle::check_shared`], [`Throttle::failed_shared`]): a fleet of
//! replicas counts as one. Redis is asked only before a login that would
//! cost a verification, and after a failure; blocks found there are
//! mirrored here, so the next attempts are refused without asking.

use moka::sync::Cache;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cluster::Cluster;
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
    cluster: Option<Arc<Cluster>>,
    /// Milliseconds after `epoch` from which no failure counted here and
    /// no block mirrored can refuse an attempt or mark it as having failed
    /// before: every block has ended and every pair has expired. Until a
    /// new failure, [`check`](Self::check) answers without its two cache
    /// lookups — the usual state of a registry nobody is guessing at.
    quiet_after: AtomicU64,
    epoch: Instant,
}

impl Throttle {
    pub fn new(cfg: &ThrottleConfig) -> Self {
        Throttle {
            cfg: cfg.clone(),
            by_ip: bounded(cfg),
            by_user: bounded(cfg),
            pairs: bounded(cfg),
            cluster: None,
            quiet_after: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Shares the counts with the other replicas of `cluster`.
    pub fn with_cluster(mut self, cluster: Option<Arc<Cluster>>) -> Self {
        self.cluster = cluster;
        self
    }

    pub fn is_shared(&self) -> bool {
        self.cfg.enabled && self.cluster.is_some()
    }

    /// The fleet's verdict for an attempt that is about to be verified:
    /// `Some(retry_after)` if another replica's failures block it. `None`
    /// also when Redis cannot be asked (the local count decides then).
    pub async fn check_shared(&self, user: Option<&str>, ip: IpAddr) -> Option<Duration> {
        let cluster = self.cluster.as_ref().filter(|_| self.cfg.enabled)?;
        let ip = self.client_key(ip);
        let ip_s = ip.to_string();
        let user = user.map(fold_user);
        let mut pipe = redis::pipe();
        pipe.cmd("PTTL")
            .arg(cluster.key(&["throttle", "block", "ip", &ip_s]));
        if let Some(u) = &user {
            pipe.cmd("PTTL")
                .arg(cluster.key(&["throttle", "block", "user", u]));
            pipe.cmd("EXISTS")
                .arg(cluster.key(&["throttle", "pair", u, &ip_s]));
        }
        let answer: Vec<i64> = cluster.query("throttle_check", &pipe).await?;
        let wait = |ms: i64| (ms > 0).then(|| Duration::from_millis(ms as u64));
        if let Some(w) = answer.first().copied().and_then(wait) {
            self.mirror(&self.by_ip.get_with(ip, Default::default), w);
            return Some(w);
        }
        if let (Some(u), [_, block, 1]) = (&user, answer.as_slice()) {
            if let Some(w) = wait(*block) {
                self.pairs.insert((u.clone(), ip), ());
                self.mirror(&self.by_user.get_with(u.clone(), Default::default), w);
                return Some(w);
            }
        }
        None
    }

    /// A failure, counted for the fleet (after [`Throttle::failed`] has
    /// counted it here): a count at the limit blocks the address or user
    /// on every replica.
    pub async fn failed_shared(&self, user: Option<&str>, ip: IpAddr) {
        let Some(cluster) = self.cluster.as_ref().filter(|_| self.cfg.enabled) else {
            return;
        };
        let ip = self.client_key(ip);
        let ip_s = ip.to_string();
        let user = user.map(fold_user);
        let window = self.cfg.window.as_millis() as u64;
        let ip_key = cluster.key(&["throttle", "fail", "ip", &ip_s]);
        let mut pipe = redis::pipe();
        pipe.cmd("INCR").arg(&ip_key);
        pipe.cmd("PEXPIRE").arg(&ip_key).arg(window).ignore();
        let mut counted = vec![("ip", ip_s.clone())];
        if let Some(u) = &user {
            let user_key = cluster.key(&["throttle", "fail", "user", u]);
            pipe.cmd("INCR").arg(&user_key);
            pipe.cmd("PEXPIRE").arg(&user_key).arg(window).ignore();
            pipe.cmd("SET")
                .arg(cluster.key(&["throttle", "pair", u, &ip_s]))
                .arg(1)
                .arg("PX")
                .arg(window)
                .ignore();
            counted.push(("user", u.clone()));
        }
        let Some(counts) = cluster.query::<Vec<u32>>("throttle_fail", &pipe).await else {
            return;
        };
        let mut blocks = redis::pipe();
        let mut any = false;
        for ((kind, key), count) in counted.iter().zip(counts) {
            if let Some(backoff) = self.backoff(count) {
                any = true;
                blocks
                    .cmd("SET")
                    .arg(cluster.key(&["throttle", "block", kind, key]))
                    .arg(count)
                    .arg("PX")
                    .arg(backoff.as_millis().max(1) as u64)
                    .ignore();
                let local = match *kind {
                    "ip" => self.by_ip.get_with(ip, Default::default),
                    _ => self.by_user.get_with(key.clone(), Default::default),
                };
                self.mirror(&local, backoff);
            }
        }
        if any {
            let _: Option<()> = cluster.query("throttle_block", &blocks).await;
        }
    }

    /// A success forgets the pair on the fleet too.
    pub async fn succeeded_shared(&self, user: &str, ip: IpAddr) {
        let Some(cluster) = self.cluster.as_ref().filter(|_| self.cfg.enabled) else {
            return;
        };
        let ip_s = self.client_key(ip).to_string();
        let mut pipe = redis::pipe();
        pipe.cmd("DEL")
            .arg(cluster.key(&["throttle", "pair", &fold_user(user), &ip_s]))
            .ignore();
        let _: Option<()> = cluster.query("throttle_success", &pipe).await;
    }

    /// Blocks a local entry for at least `wait` (a block the fleet found).
    fn mirror(&self, entry: &Arc<std::sync::Mutex<Failures>>, wait: Duration) {
        let now = Instant::now();
        let until = now + wait;
        self.not_quiet_until(until.max(now + self.cfg.window));
        if let Ok(mut f) = entry.lock() {
            f.count = f.count.max(self.cfg.max_failures);
            if f.blocked_until.is_none_or(|t| t < until) {
                f.blocked_until = Some(until);
            }
        }
    }

    /// The block a count of failures earns, if it reached the limit.
    fn backoff(&self, count: u32) -> Option<Duration> {
        if count < self.cfg.max_failures {
            return None;
        }
        let over = (count - self.cfg.max_failures).min(20);
        Some(
            self.cfg
                .backoff
                .saturating_mul(1u32 << over)
                .min(self.cfg.max_backoff),
        )
    }

    /// The key an address is counted under: itself for IPv4, its
    /// `ipv6_prefix` network for IPv6.
    fn client_key(&self, ip: IpAddr) -> IpAddr {
        match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let prefix = u32::from(self.cfg.ipv6_prefix.clamp(1, 128));
                let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
                IpAddr::V6((u128::from(v6) & mask).into())
            }
            v4 => v4,
        }
    }

    /// `Err(retry_after)` if this attempt must be refused unexamined;
    /// otherwise what a success must then forget.
    pub fn check(&self, user: Option<&str>, ip: IpAddr) -> Result<Standing, Duration> {
        let clean = Standing {
            failed_before: false,
        };
        if !self.cfg.enabled {
            return Ok(clean);
        }
        let now = Instant::now();
        if self.is_quiet(now) {
            return Ok(clean);
        }
        let ip = self.client_key(ip);
        let user = user.map(fold_user);
        let user = user.as_deref();
        let blocked = |f: &Arc<std::sync::Mutex<Failures>>| {
            f.lock()
                .ok()
                .and_then(|f| f.blocked_until)
                .and_then(|t| t.checked_duration_since(now))
        };
        if let Some(wait) = self.by_ip.get(&ip).as_ref().and_then(blocked) {
            return Err(wait);
        }
        let Some(user) = user else { return Ok(clean) };
        if !self.pairs.contains_key(&(user.to_owned(), ip)) {
            return Ok(clean);
        }
        match self.by_user.get(user).as_ref().and_then(blocked) {
            Some(wait) => Err(wait),
            None => Ok(Standing {
                failed_before: true,
            }),
        }
    }

    /// Records a failed login.
    pub fn failed(&self, user: Option<&str>, ip: IpAddr) {
        if !self.cfg.enabled {
            return;
        }
        // pairs expire a window after their failure, blocks within the
        // longest backoff
        self.not_quiet_until(Instant::now() + self.cfg.window.max(self.cfg.max_backoff));
        let ip = self.client_key(ip);
        let user = user.map(fold_user);
        let user = user.as_deref();
        self.bump(self.by_ip.get_with(ip, Default::default));
        if let Some(user) = user {
            self.pairs.insert((user.to_owned(), ip), ());
            self.bump(self.by_user.get_with(user.to_owned(), Default::default));
        }
    }

    /// A success from this address forgets its failures for this user.
    /// Only when [`check`](Self::check) found some: a removal costs a
    /// cache write on every request with a password, and nearly all of
    /// them never failed. (A failure racing this success stays counted.)
    pub fn succeeded(&self, user: &str, ip: IpAddr, standing: Standing) {
        if standing.failed_before {
            self.pairs
                .invalidate(&(fold_user(user), self.client_key(ip)));
        }
    }

    fn millis(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether nothing counted here can matter at `now` (see `quiet_after`).
    fn is_quiet(&self, now: Instant) -> bool {
        self.millis(now) >= self.quiet_after.load(Ordering::Acquire)
    }

    /// [`check`](Self::check) must look until `t` (rounded up a millisecond).
    fn not_quiet_until(&self, t: Instant) {
        self.quiet_after
            .fetch_max(self.millis(t).saturating_add(1), Ordering::AcqRel);
    }

    fn bump(&self, entry: Arc<std::sync::Mutex<Failures>>) {
        let Ok(mut f) = entry.lock() else { return };
        f.count = f.count.saturating_add(1);
        if let Some(backoff) = self.backoff(f.count) {
            f.blocked_until = Some(Instant::now() + backoff);
        }
    }
}

/// What [`Throttle::check`] found for an attempt it let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Standing {
    /// This address has failed for this user before.
    failed_before: bool,
}

/// The form a user name is counted under: compatibility-normalised
/// (fullwidth letters become ASCII), lower-cased, without surrounding
/// white space — every spelling a loosely matching directory accepts.
fn fold_user(user: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    // every request with a password comes here twice; ASCII, the usual
    // case, is its own NFKC form and lower-cases byte by byte
    if user.is_ascii() {
        return user.trim().to_ascii_lowercase();
    }
    let folded: String = user.nfkc().flat_map(char::to_lowercase).collect();
    folded.trim().to_owned()
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

    /// The ASCII shortcut of `fold_user` gives what the general path gives.
    #[test]
    fn ascii_fold_matches_the_unicode_fold() {
        use unicode_normalization::UnicodeNormalization;
        let general = |u: &str| -> String {
            let folded: String = u.nfkc().flat_map(char::to_lowercase).collect();
            folded.trim().to_owned()
        };
        for u in [
            "alice",
            " Alice ",
            "CI-Bot_01",
            "a.b@EXAMPLE.org",
            "\tBob\n",
            "",
            "  ",
        ] {
            assert!(u.is_ascii());
            assert_eq!(fold_user(u), general(u), "{u:?}");
        }
        // and the general path still runs for the rest
        assert_eq!(fold_user("\u{FF21}lice"), "alice");
        assert_eq!(fold_user("ÅSA "), "åsa");
    }

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
            assert!(t.check(Some("alice"), a).is_ok());
            t.failed(Some("alice"), a);
        }
        assert!(t.check(Some("alice"), a).is_ok());
        t.failed(Some("alice"), a);
        let wait = t
            .check(Some("bob"), a)
            .expect_err("address blocked for every user");
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
        assert!(t.check(Some("alice"), ip("198.51.100.1")).is_err());
        // ... and never from an address that has not failed
        assert!(t.check(Some("alice"), ip("192.0.2.77")).is_ok());
        // other users from an attacking address are fine (address below limit)
        assert!(t.check(Some("bob"), ip("198.51.100.1")).is_ok());
    }

    #[test]
    fn a_success_forgets_the_failures_check_found() {
        let t = throttle(3);
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        for addr in [a, b] {
            t.failed(Some("alice"), addr);
        }
        let standing = t.check(Some("Alice"), a).expect("below the limit");
        assert_eq!(
            standing,
            Standing {
                failed_before: true
            }
        );
        t.succeeded("alice", a, standing);
        let clean = t.check(Some("alice"), ip("192.0.2.3")).unwrap();
        assert_eq!(
            clean,
            Standing {
                failed_before: false
            }
        );
        // alice is now blocked by name from the addresses that failed for
        // her, which `a` no longer is and `b` still is
        for i in 10..20 {
            t.failed(Some("alice"), ip(&format!("198.51.100.{i}")));
        }
        assert!(t.check(Some("alice"), a).is_ok());
        assert!(t.check(Some("alice"), b).is_err());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let t = throttle(1);
        let a = ip("192.0.2.9");
        t.failed(None, a);
        let first = t.check(None, a).unwrap_err();
        for _ in 0..10 {
            t.failed(None, a);
        }
        let later = t.check(None, a).unwrap_err();
        assert!(later > first, "{later:?} > {first:?}");
        assert!(later <= Duration::from_secs(8));
    }

    #[test]
    fn ipv6_clients_are_counted_per_network() {
        let t = throttle(3);
        // a fresh address of one /64 for every attempt
        for i in 1..=3 {
            t.failed(None, ip(&format!("2001:db8:1:2::{i:x}")));
        }
        assert!(t.check(None, ip("2001:db8:1:2:ffff::1")).is_err());
        // the neighbouring /64 is someone else
        assert!(t.check(None, ip("2001:db8:1:3::1")).is_ok());
        // a configurable prefix: /128 counts addresses
        let t = Throttle::new(&ThrottleConfig {
            max_failures: 3,
            ipv6_prefix: 128,
            ..ThrottleConfig::default()
        });
        for i in 1..=3 {
            t.failed(None, ip(&format!("2001:db8::{i:x}")));
        }
        assert!(t.check(None, ip("2001:db8::1")).is_ok());
    }

    #[test]
    fn mapped_ipv4_is_the_ipv4_client() {
        let t = throttle(2);
        t.failed(None, ip("::ffff:192.0.2.5"));
        t.failed(None, ip("192.0.2.5"));
        assert!(t.check(None, ip("192.0.2.5")).is_err());
        assert!(t.check(None, ip("::ffff:192.0.2.5")).is_err());
    }

    #[test]
    fn user_spellings_share_one_count() {
        let t = throttle(4);
        // each spelling from its own address: only the per-user count can
        // add them up
        for (i, u) in ["mallory", "MALLORY", " mallory", "ｍａｌｌｏｒｙ"]
            .iter()
            .enumerate()
        {
            t.failed(Some(u), ip(&format!("198.51.100.{i}")));
        }
        assert!(t.check(Some("Mallory "), ip("198.51.100.0")).is_err());
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
        assert!(t.check(Some("x"), a).is_ok());
    }

    /// Once every failure is older than the window and the longest block,
    /// `check` answers without looking, and says what looking would have:
    /// nothing blocks, nothing failed before. A new failure makes it look
    /// again at once.
    #[test]
    fn quiet_after_the_window_and_the_longest_block() {
        let t = Throttle::new(&ThrottleConfig {
            max_failures: 2,
            window: Duration::from_millis(300),
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(200),
            ..ThrottleConfig::default()
        });
        let a = ip("192.0.2.1");
        let quiet = |t: &Throttle| t.is_quiet(Instant::now());
        let failed_before = |failed_before| Ok(Standing { failed_before });
        assert!(quiet(&t), "no failure yet");
        t.failed(Some("alice"), a);
        assert!(!quiet(&t));
        assert_eq!(t.check(Some("alice"), a), failed_before(true));
        t.failed(Some("alice"), a);
        assert!(t.check(Some("bob"), a).is_err(), "blocked at the limit");
        std::thread::sleep(Duration::from_millis(350));
        assert!(quiet(&t));
        // what the caches would say too: the pair has expired
        assert!(!t.pairs.contains_key(&("alice".to_owned(), a)));
        assert_eq!(t.check(Some("alice"), a), failed_before(false));
        t.failed(Some("alice"), a);
        assert!(!quiet(&t));
        assert_eq!(t.check(Some("alice"), a), failed_before(true));
    }
}
