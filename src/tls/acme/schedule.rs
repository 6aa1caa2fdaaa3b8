//! When to renew and when to retry: pure arithmetic on unix seconds.

use std::time::Duration;

/// Validity of a certificate, unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: i64,
    pub not_after: i64,
}

/// The renewal time: when `share` of the lifetime is left, moved earlier
/// by `jitter * r` (`r` uniform in 0..1). The jitter never exceeds half
/// the renewal window, so short-lived certificates still renew in time.
pub fn renew_at(v: Validity, share: f64, jitter: Duration, r: f64) -> i64 {
    let lifetime = (v.not_after - v.not_before).max(0) as f64;
    let window = lifetime * share;
    let jitter = jitter.as_secs_f64().min(window / 2.0) * r.clamp(0.0, 1.0);
    (v.not_after as f64 - window - jitter).floor() as i64
}

/// A point in the CA's suggested window (RFC 9773 §4.2): uniform at `r`.
pub fn in_window(start: i64, end: i64, r: f64) -> i64 {
    if end <= start {
        return start;
    }
    start + ((end - start) as f64 * r.clamp(0.0, 1.0)) as i64
}

/// Wait before the next attempt after `failures` failures in a row:
/// `base`, doubling, at most `max`.
pub fn backoff(failures: u64, base: Duration, max: Duration) -> Duration {
    let exp = failures.saturating_sub(1).min(32) as u32;
    base.saturating_mul(2u32.saturating_pow(exp)).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    #[test]
    fn renews_with_a_third_left_by_default() {
        let v = Validity {
            not_before: 0,
            not_after: 90 * DAY,
        };
        assert_eq!(renew_at(v, 1.0 / 3.0, Duration::ZERO, 0.5), 60 * DAY);
        // jitter moves it earlier, never later
        let j = renew_at(v, 1.0 / 3.0, Duration::from_secs(3600), 1.0);
        assert_eq!(j, 60 * DAY - 3600);
    }

    #[test]
    fn jitter_is_capped_for_short_lifetimes() {
        let v = Validity {
            not_before: 1000,
            not_after: 1030,
        };
        // 30 s lifetime: renew at 1020, jitter at most 5 s
        assert_eq!(renew_at(v, 1.0 / 3.0, Duration::from_secs(3600), 1.0), 1015);
    }

    #[test]
    fn backoff_doubles_to_a_cap() {
        let b = Duration::from_secs(5);
        let m = Duration::from_secs(60);
        let waits: Vec<u64> = (1..=6).map(|n| backoff(n, b, m).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 60, 60]);
        assert_eq!(backoff(1000, b, m), m);
    }

    #[test]
    fn window_point() {
        assert_eq!(in_window(100, 200, 0.25), 125);
        assert_eq!(in_window(100, 50, 0.5), 100);
    }
}
