//! Exit as soon as a graceful shutdown has no transfer left.

use std::time::{Duration, Instant};

use crate::observe::drain;

/// Once Pingora has stopped the listeners (SIGTERM, or SIGQUIT after the
/// sockets were handed to the new process), exit as soon as no transfer is
/// left instead of always waiting out the grace period. A thread, not a
/// service: it must outlive the services, whose runtimes stop first.
pub fn spawn(
    mut phases: tokio::sync::broadcast::Receiver<pingora::server::ExecutionPhase>,
    grace: Duration,
    ports: Vec<u16>,
) -> std::io::Result<()> {
    use pingora::server::ExecutionPhase as P;
    std::thread::Builder::new()
        .name("portcullis-drain".into())
        .spawn(move || loop {
            match phases.blocking_recv() {
                Ok(P::ShutdownStarted) => {
                    tracing::info!(
                        in_flight = drain::in_flight(),
                        grace_s = grace.as_secs(),
                        "listeners closed; waiting for transfers to finish"
                    );
                    let deadline = Instant::now() + grace;
                    let left = drain::wait_idle(grace);
                    // the last response may still sit in h2's buffers or
                    // the sockets': exiting before the server has closed
                    // each connection loses the tail of the transfer
                    drain::wait_closed(&ports, deadline, Duration::from_secs(2));
                    tracing::info!(left, "shutdown complete");
                    std::process::exit(0);
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        })?;
    Ok(())
}
