//! Challenge responses while an order runs, shared between the ACME
//! manager (which fills them) and the listeners (which answer the CA).
//!
//! They are also written to the state directory, so a follower replica
//! behind the same load balancer answers a validation request that lands
//! on it; followers read that copy on demand.

use rcgen::{CertificateParams, CustomExtension, KeyPair};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::state::StateDir;

/// `GET` path prefix of http-01 validation requests.
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

#[derive(Debug, thiserror::Error)]
pub enum ChallengeError {
    #[error("cannot make the tls-alpn-01 certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("cannot load the tls-alpn-01 certificate: {0}")]
    Load(String),
}

pub struct Challenges {
    /// token → key authorization
    http: RwLock<HashMap<String, String>>,
    /// lower-case domain → challenge certificate
    alpn: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    /// Set for followers: where the renewing replica writes its copies.
    shared: Option<StateDir>,
}

impl Challenges {
    pub fn new(shared: Option<StateDir>) -> Self {
        Challenges {
            http: RwLock::new(HashMap::new()),
            alpn: RwLock::new(HashMap::new()),
            shared,
        }
    }

    pub fn put_http(&self, token: &str, key_authorization: &str) {
        write(&self.http).insert(token.to_owned(), key_authorization.to_owned());
    }

    pub fn remove_http(&self, token: &str) {
        write(&self.http).remove(token);
    }

    pub fn put_alpn(&self, domain: &str, cert: Arc<CertifiedKey>) {
        write(&self.alpn).insert(domain.to_ascii_lowercase(), cert);
    }

    pub fn remove_alpn(&self, domain: &str) {
        write(&self.alpn).remove(&domain.to_ascii_lowercase());
    }

    /// The key authorization for an http-01 token, if an order waits for it.
    pub async fn http(&self, token: &str) -> Option<String> {
        if let Some(v) = read(&self.http).get(token) {
            return Some(v.clone());
        }
        let path = self.shared.as_ref()?.http01_path(token)?;
        let bytes = tokio::fs::read(path).await.ok()?;
        String::from_utf8(bytes).ok()
    }

    /// The tls-alpn-01 certificate for a name, if an order waits for it.
    pub async fn alpn(&self, domain: &str) -> Option<Arc<CertifiedKey>> {
        let domain = domain.to_ascii_lowercase();
        if let Some(c) = read(&self.alpn).get(&domain) {
            return Some(Arc::clone(c));
        }
        let shared = self.shared.as_ref()?;
        let pem_bytes = tokio::fs::read(shared.alpn01_path(&domain)).await.ok()?;
        certified(&pem_bytes).ok()
    }
}

/// The self-signed certificate RFC 8737 asks for: the name, and the
/// SHA-256 of the key authorization in the critical acmeIdentifier
/// extension. Returned loaded, and as PEM (certificate, then key) for
/// the state directory copy.
pub fn alpn_certificate(
    domain: &str,
    key_authorization_sha256: &[u8],
) -> Result<(Arc<CertifiedKey>, String), ChallengeError> {
    let mut params = CertificateParams::new(vec![domain.to_owned()])?;
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(
        key_authorization_sha256,
    )];
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let pem_text = format!("{}{}", cert.pem(), key.serialize_pem());
    Ok((certified(pem_text.as_bytes())?, pem_text))
}

/// Certificate and key from PEM, without the consistency check of
/// `pem::parse_pair`: webpki refuses the critical acmeIdentifier
/// extension it does not know, and a validation server expects exactly it.
fn certified(pem_bytes: &[u8]) -> Result<Arc<CertifiedKey>, ChallengeError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let load = |e: &dyn std::fmt::Display| ChallengeError::Load(e.to_string());
    let cert = CertificateDer::from_pem_slice(pem_bytes).map_err(|e| load(&e))?;
    let key = PrivateKeyDer::from_pem_slice(pem_bytes).map_err(|e| load(&e))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| load(&e))?;
    Ok(Arc::new(CertifiedKey::new(vec![cert], signer)))
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_from_memory_then_from_the_shared_directory() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let mine = Challenges::new(None);
        mine.put_http("tok1", "tok1.thumb");
        assert_eq!(mine.http("tok1").await.as_deref(), Some("tok1.thumb"));
        mine.remove_http("tok1");
        assert_eq!(mine.http("tok1").await, None);

        // a follower finds what the renewing replica wrote
        let follower = Challenges::new(Some(state.clone()));
        let p = state.http01_path("tok2").unwrap();
        state.write(&p, b"tok2.thumb").unwrap();
        assert_eq!(follower.http("tok2").await.as_deref(), Some("tok2.thumb"));
        assert_eq!(follower.http("../tok2").await, None);

        let (_, pem_text) = alpn_certificate("a.example", &[7u8; 32]).unwrap();
        state
            .write(&state.alpn01_path("a.example"), pem_text.as_bytes())
            .unwrap();
        assert!(follower.alpn("A.example").await.is_some());
        assert!(follower.alpn("b.example").await.is_none());
    }

    #[test]
    fn alpn_certificate_carries_the_digest() {
        use x509_parser::prelude::*;
        let digest = [9u8; 32];
        let (key, _) = alpn_certificate("a.example", &digest).unwrap();
        let (_, cert) = X509Certificate::from_der(key.cert[0].as_ref()).unwrap();
        let oid = x509_parser::der_parser::oid!(1.3.6 .1 .5 .5 .7 .1 .31);
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid == oid)
            .expect("acmeIdentifier extension");
        assert!(ext.critical);
        // an OCTET STRING of the 32-byte digest
        assert_eq!(&ext.value[..2], &[0x04, 32]);
        assert_eq!(&ext.value[2..], &digest);
    }
}
