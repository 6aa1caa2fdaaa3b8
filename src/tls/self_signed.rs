//! A generated certificate for the quick start (`tls.self_signed = true`).

use super::pem::{parse_pair, LoadedCert, PemError};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum SelfSignedError {
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error(transparent)]
    Load(#[from] PemError),
}

/// Names the quick-start certificate covers.
pub const NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Generates a fresh ECDSA P-256 certificate for localhost; returns it with
/// its PEM so a quick start can hand the certificate to clients.
pub fn generate() -> Result<(LoadedCert, String), SelfSignedError> {
    let names: Vec<String> = NAMES.iter().map(|s| (*s).to_owned()).collect();
    let mut params = rcgen::CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "portcullis self-signed");
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let cert_pem = cert.pem();
    let loaded = parse_pair(
        cert_pem.as_bytes(),
        key.serialize_pem().as_bytes(),
        Path::new("<self-signed>"),
        Path::new("<self-signed>"),
    )?;
    Ok((loaded, cert_pem))
}

#[cfg(test)]
mod tests {
    #[test]
    fn covers_localhost() {
        let (c, pem) = super::generate().unwrap();
        assert_eq!(c.info.names, ["localhost", "127.0.0.1", "::1"]);
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    }
}
