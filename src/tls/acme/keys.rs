//! Certificate keys and the CSR an order is finalized with.
//!
//! A fresh key for every certificate, so a renewal also rotates the key.
//! ring (our only crypto library) cannot generate RSA keys; the pure-Rust
//! `rsa` crate does, and ring signs with them.

use rcgen::{CertificateParams, DistinguishedName, KeyPair};
use rsa::pkcs8::EncodePrivateKey;

use crate::config::acme::KeyType;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot generate a {kind:?} key: {reason}")]
    Generate { kind: KeyType, reason: String },
    #[error("cannot build the certificate request: {0}")]
    Csr(#[from] rcgen::Error),
}

pub fn generate(kind: KeyType) -> Result<KeyPair, KeyError> {
    let fail = |reason: String| KeyError::Generate { kind, reason };
    match kind {
        KeyType::EcdsaP256 => {
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| fail(e.to_string()))
        }
        KeyType::EcdsaP384 => {
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).map_err(|e| fail(e.to_string()))
        }
        KeyType::Rsa2048 | KeyType::Rsa4096 => {
            let bits = if kind == KeyType::Rsa2048 { 2048 } else { 4096 };
            let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), bits)
                .map_err(|e| fail(e.to_string()))?;
            let der = key.to_pkcs8_der().map_err(|e| fail(e.to_string()))?;
            let pkcs8 = rustls_pki_types::PrivatePkcs8KeyDer::from(der.as_bytes());
            KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_RSA_SHA256)
                .map_err(|e| fail(e.to_string()))
        }
    }
}

/// A DER CSR for `domains`, with an empty subject (the names are SANs).
pub fn csr(domains: &[String], key: &KeyPair) -> Result<Vec<u8>, KeyError> {
    let mut params = CertificateParams::new(domains.to_vec())?;
    params.distinguished_name = DistinguishedName::new();
    Ok(params.serialize_request(key)?.der().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_type_signs_a_csr() {
        use x509_parser::prelude::FromDer;
        for kind in [KeyType::EcdsaP256, KeyType::EcdsaP384, KeyType::Rsa2048] {
            let key = generate(kind).unwrap();
            let der = csr(&["a.example".into(), "b.example".into()], &key).unwrap();
            let (_, req) =
                x509_parser::certification_request::X509CertificationRequest::from_der(&der)
                    .unwrap();
            req.verify_signature().unwrap();
            assert!(key.serialize_pem().contains("PRIVATE KEY"), "{kind:?}");
        }
    }
}
