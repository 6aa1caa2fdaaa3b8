//! The certificate the TLS listener serves, swappable at any time.
//!
//! rustls asks the resolver for a certificate on every handshake, so storing
//! a new one here is all a renewal takes: new connections get it, open ones
//! keep the session they negotiated.

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::sync::Arc;

use super::pem::{CertInfo, LoadedCert};

pub struct CertStore {
    current: ArcSwap<LoadedCert>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("current", &self.current.load().info)
            .finish()
    }
}

impl CertStore {
    pub fn new(initial: LoadedCert) -> Self {
        CertStore {
            current: ArcSwap::from_pointee(initial),
        }
    }

    pub fn set(&self, cert: LoadedCert) {
        self.current.store(Arc::new(cert));
    }

    pub fn info(&self) -> CertInfo {
        self.current.load().info.clone()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current.load().key))
    }
}
