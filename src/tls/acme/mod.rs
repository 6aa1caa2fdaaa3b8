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
}

/// What the listeners and the metrics exporter need from a running manager.
pub struct AcmeHandle {
    pub challenges: Arc<Challenges>,
    pub metrics: Arc<AcmeMetrics>,
    /// For the plain-HTTP listener when the challenge is http-01.
    pub http01: Option<Arc<Challenges>>,
    /// For `set_pre_tls_callback` when the challenge is tls-alpn-01.
    pub alpn: Option<Arc<AlpnResponder>>,
    /// The renewal loop, for the server to run as a background service.
    pub service: AcmeService,
}

/// The renewal (or follower) loop as a Pingora background service: it
/// stops when the server shuts down.
pub struct AcmeService(std::sync::Mutex<Option<manager::Manager>>);

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for AcmeService {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let manager = self.0.lock().ok().and_then(|mut m| m.take());
        let Some(manager) = manager else { return };
        tokio::select! {
            _ = manager.run() => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// What `serve` would refuse in `[tls.acme]` before the first order: the
/// CA file, the EAB key, the state directory (writable for `renew`).
pub fn check(cfg: &AcmeConfig) -> Vec<crate::config::Problem> {
    use crate::config::Problem;
    let mut p: Vec<Problem> = client::check(cfg)
        .into_iter()
        .map(|e| match e {
            client::ClientError::CaFile { path, reason } => {
                Problem::new("tls.acme.ca_file", format!("{path}: {reason}"))
            }
            client::ClientError::Eab(reason) => Problem::new("tls.acme.eab.hmac_key", reason),
            e => Problem::new("tls.acme", e.to_string()),
        })
        .collect();
    let writable = cfg.role == crate::config::acme::Role::Renew;
    // a follower waits for the renewing replica to create the directory
    let waits = !writable && !cfg.state_dir.exists();
    if let Err(e) = state::StateDir::new(&cfg.state_dir).check(writable) {
        if !waits {
            p.push(Problem::new("tls.acme.state_dir", e.to_string()));
        }
    }
    p
}

/// What `check` holds against a config that `serve` starts with: a
/// follower whose state directory does not exist (yet) starts and waits,
/// but on a machine being checked it usually means a missing mount.
pub fn check_ready(cfg: &AcmeConfig) -> Vec<crate::config::Problem> {
    match cfg.role == crate::config::acme::Role::Follow && !cfg.state_dir.exists() {
        true => vec![crate::config::Problem::new(
            "tls.acme.state_dir",
            format!(
                "{} does not exist: a follower waits for the renewing replica to create it \
                 (serve starts; is the shared directory mounted?)",
                cfg.state_dir.display()
            ),
        )],
        false => Vec::new(),
    }
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
    Ok(AcmeHandle {
        service: AcmeService(std::sync::Mutex::new(Some(m))),
        alpn: (cfg.challenge == ChallengeType::TlsAlpn01)
            .then(|| Arc::new(AlpnResponder::new(Arc::clone(&challenges)))),
        http01: (cfg.challenge == ChallengeType::Http01).then(|| Arc::clone(&challenges)),
        challenges,
        metrics,
    })
}
