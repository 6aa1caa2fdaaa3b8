//! The loop of the background services that do one round every interval
//! until shutdown (revocation and rate-limit sync, OIDC refresh).

use std::future::Future;
use std::time::Duration;

/// Runs `round` now and then every `interval` (a late round delays the
/// next rather than bunching them) until `shutdown` changes. A round in
/// progress finishes first: each is bounded by its own timeouts.
pub async fn every<F, Fut>(
    interval: Duration,
    shutdown: &mut pingora::server::ShutdownWatch,
    mut round: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        round().await;
    }
}
