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

/// Starts the check loop on a thread with its own small runtime. The
/// settings come from the current upstream, so a reload changes them.
pub fn spawn(
    upstream: Arc<arc_swap::ArcSwap<Upstream>>,
    health: Arc<Health>,
) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("portcullis-health".into())
        .spawn(move || {
            rt.block_on(async move {
                let mut failures = 0u32;
                loop {
                    let current = upstream.load_full();
                    let (interval, threshold) =
                        (current.health().interval, current.health().threshold);
                    current.check_replicas().await;
                    let ok = check(&current, interval).await;
                    if ok {
                        failures = 0;
                        health.set(true);
                    } else {
                        failures += 1;
                        if failures >= threshold {
                            health.set(false);
                        }
                    }
                    tokio::time::sleep(interval).await;
                }
            })
        })?;
    Ok(())
}

/// Any answer below 500 (401 included: the registry may have its own
/// auth) means the registry is serving.
async fn check(upstream: &Upstream, timeout: Duration) -> bool {
    let source = upstream.catalog_source();
    let url = format!("{}/v2/", source.base);
    match source.client.get(url).timeout(timeout).send().await {
        Ok(r) => r.status().as_u16() < 500,
        Err(e) => {
            tracing::debug!(target: "health", error = %e.without_url(), "upstream health check failed");
            false
        }
    }
}
