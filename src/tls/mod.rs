//! TLS termination: where the served certificate comes from and how it is
//! replaced without a restart.

pub mod acme;
pub mod client_auth;
pub mod pem;
pub mod self_signed;
pub mod store;

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::TlsConfig;
use crate::watch::FileWatch;
use pem::{CertInfo, LoadedCert, PemError};
use store::CertStore;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls.cert/tls.key: {0}")]
    Files(#[from] PemError),
    #[error("tls.self_signed: {0}")]
    SelfSigned(#[from] self_signed::SelfSignedError),
    #[error("tls.acme: {0}")]
    Acme(#[from] acme::AcmeError),
    #[error("{key}: {0}", key = .0.key())]
    ClientAuth(#[from] client_auth::ClientAuthError),
}

/// The counters TLS reports to, handed in by whoever exports them (tls
/// depends on no exporter).
#[derive(Clone)]
pub struct TlsCounters {
    /// ClientHellos answered.
    pub hellos: prometheus::IntCounter,
    /// Certificate files that changed but did not load.
    pub reload_failures: prometheus::IntCounter,
    /// Client certificates refused by `[tls.client_auth]`.
    pub client_cert_refusals: prometheus::IntCounter,
}

/// Certificate files being watched for renewal.
pub struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
    watch: FileWatch,
    reload_failures: prometheus::IntCounter,
}

/// The served certificate, and the files it comes from if any.
pub struct TlsState {
    pub store: Arc<CertStore>,
    pub files: Option<CertFiles>,
    /// PEM of the generated certificate, for the quick start to hand out.
    pub self_signed_pem: Option<String>,
    /// The client certificate verifier of `[tls.client_auth]`.
    pub client_auth: Option<client_auth::ClientAuth>,
}

impl TlsState {
    pub fn new(cfg: &TlsConfig, counters: TlsCounters) -> Result<Self, TlsError> {
        let client_auth = match &cfg.client_auth {
            Some(c) => Some(client_auth::ClientAuth::new(
                c,
                counters.reload_failures.clone(),
                counters.client_cert_refusals.clone(),
            )?),
            None => None,
        };
        let mut state = Self::server_certificate(cfg, counters)?;
        state.client_auth = client_auth;
        Ok(state)
    }

    fn server_certificate(cfg: &TlsConfig, counters: TlsCounters) -> Result<Self, TlsError> {
        match (&cfg.cert, &cfg.key) {
            (Some(cert), Some(key)) => {
                let mut watch = FileWatch::new(vec![cert.clone(), key.clone()]);
                watch.changed(); // record the state we load now
                let loaded = pem::load_pair(cert, key)?;
                log_loaded("loaded certificate", &loaded.info);
                Ok(TlsState {
                    store: Arc::new(CertStore::counting(loaded, counters.hellos)),
                    files: Some(CertFiles {
                        cert: cert.clone(),
                        key: key.clone(),
                        watch,
                        reload_failures: counters.reload_failures,
                    }),
                    self_signed_pem: None,
                    client_auth: None,
                })
            }
            _ => {
                let (loaded, pem) = self_signed::generate()?;
                if cfg.acme.is_some() && !cfg.self_signed {
                    tracing::info!(
                        target: "tls",
                        "default certificate: self-signed, for names tls.acme does not cover (and for its names until their first certificate)"
                    );
                } else {
                    tracing::warn!(
                        target: "tls",
                        names = ?loaded.info.names,
                        "serving a generated self-signed certificate (tls.self_signed); clients must trust it explicitly"
                    );
                }
                Ok(TlsState {
                    store: Arc::new(CertStore::counting(loaded, counters.hellos)),
                    files: None,
                    self_signed_pem: Some(pem),
                    client_auth: None,
                })
            }
        }
    }
}

impl CertFiles {
    /// Reloads the pair if either file changed. A pair that does not load
    /// (half-written by a renewal, or a key of another certificate) is
    /// refused and the current certificate keeps serving.
    pub fn poll(&mut self, store: &CertStore) {
        if !self.watch.changed() {
            return;
        }
        match pem::load_pair(&self.cert, &self.key) {
            Ok(loaded) => {
                log_loaded(
                    "certificate files changed: new certificate installed",
                    &loaded.info,
                );
                store.set(loaded);
            }
            Err(e) => {
                self.reload_failures.inc();
                tracing::error!(
                    target: "tls",
                    error = %e,
                    "certificate files changed but do not load; still serving the previous certificate"
                )
            }
        }
    }
}

fn log_loaded(what: &str, info: &CertInfo) {
    tracing::info!(
        target: "tls",
        subject = %info.subject,
        names = ?info.names,
        not_after = info.not_after,
        "{what}"
    );
}

/// Used by `check`: loads what the config names, without serving it.
pub fn check(cfg: &TlsConfig) -> Result<Option<LoadedCert>, TlsError> {
    if let Some(c) = &cfg.client_auth {
        client_auth::load_verifier(c)?;
    }
    match (&cfg.cert, &cfg.key) {
        (Some(c), Some(k)) => Ok(Some(pem::load_pair(c, k)?)),
        _ => Ok(None),
    }
}
