//! The upstream health check, like registry:2's `health.storagedriver`:
//! `GET /v2/` every `interval`; `threshold` failures in a row mark the
//! upstream down, one success marks it up again. Drives `/readyz` and
//! `portcullis_upstream_up`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::metrics::metrics;
use crate::upstream::Upstream;

#[derive(Default)]
pub struct Health {
    upstream_up: AtomicBool,
}

impl Health {
    pub fn upstream_up(&self) -> bool {
        self.upstream_up.load(Ordering::SeqCst)
    }

    fn set(&self, up: bool) {
        let was = self.upstream_up.swap(up, Ordering::SeqCst);
        metrics().upstream_up.set(i64::from(up));
        if was != up {
            if up {
                tracing::info!(target: "health", "upstream registry is healthy");
            } else {
                tracing::error!(target: "health", "upstream registry is unhealthy");
            }
        }
    }
}

/// The check loop, as a Pingora background service (its own runtime;
/// stops on shutdown). The settings come from the current upstream, so a
/// reload changes them.
pub struct HealthCheck {
    pub upstream: Arc<arc_swap::ArcSwap<Upstream>>,
    pub health: Arc<Health>,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for HealthCheck {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let mut failures = 0u32;
        loop {
            let current = self.upstream.load_full();
            let (interval, threshold) = (current.health().interval, current.health().threshold);
            current.check_replicas().await;
            if check(&current, interval).await {
                failures = 0;
                self.health.set(true);
            } else {
                failures += 1;
                if failures >= threshold {
                    self.health.set(false);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Any answer below 500 (401 included: the registry may have its own
/// auth) means the registry is serving.
async fn check(upstream: &Upstream, timeout: Duration) -> bool {
    let client = match upstream.client() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(target: "health", error = %e, "cannot make an HTTP client for the health check");
            return false;
        }
    };
    let url = format!("{}/v2/", upstream.api_base());
    match client.get(url).timeout(timeout).send().await {
        Ok(r) => r.status().as_u16() < 500,
        Err(e) => {
            tracing::debug!(target: "health", error = %e.without_url(), "upstream health check failed");
            false
        }
    }
}
