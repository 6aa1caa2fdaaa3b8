//! What the ACME manager reports, for the metrics exporter to read.
//!
//! Plain atomics: the manager thread writes, any thread reads, nobody
//! waits. One entry per configured certificate, fixed at start.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::config::acme::CertSpec;

#[derive(Debug)]
pub struct AcmeMetrics {
    challenge: &'static str,
    role: &'static str,
    certificates: Vec<CertMetrics>,
}

#[derive(Debug)]
pub struct CertMetrics {
    name: String,
    domains: Vec<String>,
    /// Unix seconds; 0 while no certificate is installed.
    not_after: AtomicI64,
    next_renewal: AtomicI64,
    attempts: AtomicU64,
    failures: AtomicU64,
    consecutive_failures: AtomicU64,
    issued: AtomicU64,
}

static GLOBAL: OnceLock<Arc<AcmeMetrics>> = OnceLock::new();

/// The running manager's metrics, if `[tls.acme]` is configured.
pub fn global() -> Option<Arc<AcmeMetrics>> {
    GLOBAL.get().cloned()
}

impl AcmeMetrics {
    pub fn new(challenge: &'static str, role: &'static str, specs: &[CertSpec]) -> Self {
        AcmeMetrics {
            challenge,
            role,
            certificates: specs
                .iter()
                .map(|s| CertMetrics {
                    name: s.name.clone(),
                    domains: s.domains.clone(),
                    not_after: AtomicI64::new(0),
                    next_renewal: AtomicI64::new(0),
                    attempts: AtomicU64::new(0),
                    failures: AtomicU64::new(0),
                    consecutive_failures: AtomicU64::new(0),
                    issued: AtomicU64::new(0),
                })
                .collect(),
        }
    }

    /// Makes these the metrics [`global`] returns (the first call wins).
    pub(crate) fn publish(self: &Arc<Self>) {
        let _ = GLOBAL.set(Arc::clone(self));
    }

    /// `http-01` or `tls-alpn-01`.
    pub fn challenge_type(&self) -> &'static str {
        self.challenge
    }

    /// `renew` or `follow`.
    pub fn role(&self) -> &'static str {
        self.role
    }

    pub fn certificates(&self) -> &[CertMetrics] {
        &self.certificates
    }

    pub(crate) fn cert(&self, i: usize) -> &CertMetrics {
        &self.certificates[i]
    }
}

impl CertMetrics {
    /// The certificate's first name (its label in metrics and logs).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn domains(&self) -> &[String] {
        &self.domains
    }

    /// Expiry of the installed certificate (unix seconds), if any.
    pub fn not_after(&self) -> Option<i64> {
        Some(self.not_after.load(Ordering::Relaxed)).filter(|t| *t != 0)
    }

    /// When the next order (renewal or retry) is due (unix seconds).
    pub fn next_renewal(&self) -> Option<i64> {
        Some(self.next_renewal.load(Ordering::Relaxed)).filter(|t| *t != 0)
    }

    /// Orders started (first issue, renewals and retries).
    pub fn renewal_attempts(&self) -> u64 {
        self.attempts.load(Ordering::Relaxed)
    }

    pub fn renewal_failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Failures since the last success; 0 when healthy.
    pub fn consecutive_failures(&self) -> u64 {
        self.consecutive_failures.load(Ordering::Relaxed)
    }

    /// Certificates obtained from the CA (or, for a follower, installed).
    pub fn certificates_issued(&self) -> u64 {
        self.issued.load(Ordering::Relaxed)
    }

    pub(crate) fn installed(&self, not_after: i64) {
        self.not_after.store(not_after, Ordering::Relaxed);
    }

    pub(crate) fn scheduled(&self, at: i64) {
        self.next_renewal.store(at, Ordering::Relaxed);
    }

    pub(crate) fn attempt(&self) {
        self.attempts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn succeeded(&self) {
        self.issued.fetch_add(1, Ordering::Relaxed);
        self.consecutive_failures.store(0, Ordering::Relaxed);
    }

    /// Counts a failure; returns how many in a row.
    pub(crate) fn failed(&self) -> u64 {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_resets() {
        let m = AcmeMetrics::new(
            "http-01",
            "renew",
            &[CertSpec {
                name: "a.example".into(),
                domains: vec!["a.example".into()],
            }],
        );
        let c = m.cert(0);
        assert_eq!(c.not_after(), None);
        c.attempt();
        assert_eq!(c.failed(), 1);
        c.attempt();
        assert_eq!(c.failed(), 2);
        c.attempt();
        c.succeeded();
        c.installed(42);
        assert_eq!(
            (c.renewal_attempts(), c.renewal_failures()),
            (3, 2),
            "attempts, failures"
        );
        assert_eq!(c.consecutive_failures(), 0);
        assert_eq!(c.not_after(), Some(42));
        assert_eq!(m.challenge_type(), "http-01");
    }
}
