//! Certificates from an ACME CA (Let's Encrypt or any RFC 8555 server),
//! obtained and renewed in-process and served without a restart.
//!
//! [`start`] installs the certificates stored in `tls.acme.state_dir`,
//! then runs the [`manager`] on its own thread. The listeners answer the
//! CA's validation requests from the shared [`Challenges`]: http-01 on
//! the plain-HTTP listener ([`http01`]), tls-alpn-01 before the TLS
//! handshake ([`AlpnResponder`]).

pub mod alpn;
pub mod challenge;
pub mod client;
pub mod http01;
pub mod keys;
pub mod manager;
pub mod metrics;
pub mod probe;
pub mod schedule;
pub mod state;

use std::sync::Arc;
use std::time::Duration;

pub use alpn::AlpnResponder;
pub use challenge::{Challenges, HTTP01_PREFIX};
pub use manager::Listeners;
pub use metrics::{AcmeMetrics, CertMetrics};

use crate::config::acme::{AcmeConfig, ChallengeType};
use crate::tls::store::CertStore;

#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error(transparent)]
    Client(#[from] client::ClientError),
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error("the issued certificate does not load: {0}")]
    Certificate(#[from] crate::tls::pem::PemError),
    #[error("the order did not finish within {0:?}")]
    Timeout(Duration),
    #[error("cannot start the ACME thread: {0}")]
    Runtime(std::io::Error),
}

/// What the listeners and the metrics exporter need from a running manager.
pub struct AcmeHandle {
    pub challenges: Arc<Challenges>,
    pub metrics: Arc<AcmeMetrics>,
    /// For the plain-HTTP listener when the challenge is http-01.
    pub http01: Option<Arc<Challenges>>,
    /// For `set_pre_tls_callback` when the challenge is tls-alpn-01.
    pub alpn: Option<Arc<AlpnResponder>>,
}

/// Installs stored certificates into `store` and starts renewing (or,
/// for a follower, watching the state directory).
pub fn start(
    cfg: &AcmeConfig,
    store: Arc<CertStore>,
    listeners: &Listeners,
    watch_interval: Duration,
    fallback_self_signed: bool,
) -> Result<AcmeHandle, AcmeError> {
    let m = manager::Manager::new(cfg, store, listeners, watch_interval, fallback_self_signed)?;
    let challenges = m.challenges();
    let metrics = m.metrics();
    m.spawn()?;
    Ok(AcmeHandle {
        alpn: (cfg.challenge == ChallengeType::TlsAlpn01)
            .then(|| Arc::new(AlpnResponder::new(Arc::clone(&challenges)))),
        http01: (cfg.challenge == ChallengeType::Http01).then(|| Arc::clone(&challenges)),
        challenges,
        metrics,
    })
}
