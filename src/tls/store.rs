//! The certificates the TLS listener serves, swappable at any time.
//!
//! rustls asks the resolver for a certificate on every handshake, so storing
//! a new one here is all a renewal takes: new connections get it, open ones
//! keep the session they negotiated. Certificates for specific names (ACME
//! orders, several file pairs) are chosen by SNI; the default serves every
//! other name.

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::Arc;

use super::pem::{CertInfo, LoadedCert};

pub struct CertStore {
    default: ArcSwap<LoadedCert>,
    /// Lower-case DNS name (or `*.suffix`) → certificate.
    by_name: ArcSwap<HashMap<String, Arc<LoadedCert>>>,
    /// Counts ClientHellos (the metrics exporter's counter, handed in).
    hellos: Option<prometheus::IntCounter>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("default", &self.default.load().info)
            .field("names", &self.by_name.load().keys().collect::<Vec<_>>())
            .finish()
    }
}

impl CertStore {
    pub fn new(initial: LoadedCert) -> Self {
        CertStore {
            default: ArcSwap::from_pointee(initial),
            by_name: ArcSwap::from_pointee(HashMap::new()),
            hellos: None,
        }
    }

    /// A store that counts each ClientHello it answers on `hellos`.
    pub fn counting(initial: LoadedCert, hellos: prometheus::IntCounter) -> Self {
        CertStore {
            hellos: Some(hellos),
            ..CertStore::new(initial)
        }
    }

    /// Replaces the certificate served when no name-specific one matches.
    pub fn set(&self, cert: LoadedCert) {
        self.default.store(Arc::new(cert));
    }

    /// Serves `cert` for each of `names` (as given in its SAN list), in
    /// one atomic swap.
    pub fn set_for_names(&self, names: &[String], cert: LoadedCert) {
        let cert = Arc::new(cert);
        self.by_name.rcu(|current| {
            let mut next = HashMap::clone(current);
            for n in names {
                next.insert(n.to_ascii_lowercase(), Arc::clone(&cert));
            }
            next
        });
    }

    pub fn info(&self) -> CertInfo {
        self.default.load().info.clone()
    }

    /// Every certificate served, for expiry metrics: (names, info).
    pub fn all(&self) -> Vec<CertInfo> {
        let mut v = vec![self.info()];
        let mut seen: Vec<*const LoadedCert> = Vec::new();
        for c in self.by_name.load().values() {
            if !seen.contains(&Arc::as_ptr(c)) {
                seen.push(Arc::as_ptr(c));
                v.push(c.info.clone());
            }
        }
        v
    }

    /// The certificate for an SNI name: exact, then one wildcard level.
    pub fn for_name(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        if let Some(name) = sni {
            let name = name.to_ascii_lowercase();
            let map = self.by_name.load();
            let hit = map.get(&name).or_else(|| {
                name.split_once('.')
                    .and_then(|(_, parent)| map.get(&format!("*.{parent}")))
            });
            if let Some(c) = hit {
                return Arc::clone(&c.key);
            }
        }
        Arc::clone(&self.default.load().key)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(c) = &self.hellos {
            c.inc();
        }
        Some(self.for_name(hello.server_name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::pem::parse_pair;
    use std::path::Path;

    fn cert(names: &[&str]) -> LoadedCert {
        let c = rcgen::generate_simple_self_signed(
            names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        parse_pair(
            c.cert.pem().as_bytes(),
            c.key_pair.serialize_pem().as_bytes(),
            Path::new("c"),
            Path::new("k"),
        )
        .unwrap()
    }

    #[test]
    fn chooses_by_sni_then_default() {
        let store = CertStore::new(cert(&["default.test"]));
        let a = cert(&["a.example", "*.apps.example"]);
        let a_key = Arc::clone(&a.key);
        store.set_for_names(&["a.example".into(), "*.apps.example".into()], a);
        assert!(Arc::ptr_eq(&store.for_name(Some("A.Example")), &a_key));
        assert!(Arc::ptr_eq(&store.for_name(Some("x.apps.example")), &a_key));
        // one wildcard level only, and other names get the default
        assert!(!Arc::ptr_eq(
            &store.for_name(Some("y.x.apps.example")),
            &a_key
        ));
        assert!(!Arc::ptr_eq(&store.for_name(Some("b.example")), &a_key));
        assert!(!Arc::ptr_eq(&store.for_name(None), &a_key));
        assert_eq!(store.all().len(), 2);
    }

    #[test]
    fn default_can_be_replaced() {
        let store = CertStore::new(cert(&["one.test"]));
        store.set(cert(&["two.test"]));
        assert_eq!(store.info().names, ["two.test"]);
    }
}
