//! The upstream health check, like registry:2's `health.storagedriver`:
//! `GET /v2/` every `interval`; `threshold` failures in a row mark the
//! upstream down, one success marks it up again. Drives `/readyz` and
//! `portcullis_upstream_up`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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
            if current.probe().await {
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
