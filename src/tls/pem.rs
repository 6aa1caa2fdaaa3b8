//! Certificate chain and key from PEM files (certbot's `fullchain.pem` and
//! `privkey.pem`, symlinks included).

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path}: no certificate found")]
    NoCertificate { path: PathBuf },
    #[error("{path}: invalid PEM: {reason}")]
    BadPem { path: PathBuf, reason: String },
    #[error("{path}: no usable private key: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("{key} does not belong to the certificate in {cert}: {reason}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("{path}: certificate cannot be parsed: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
}

impl PemError {
    /// The file the error is about (the key's, for a mismatch).
    pub fn path(&self) -> &std::path::Path {
        match self {
            PemError::Read { path, .. }
            | PemError::NoCertificate { path }
            | PemError::BadPem { path, .. }
            | PemError::BadKey { path, .. }
            | PemError::BadCertificate { path, .. } => path,
            PemError::Mismatch { key, .. } => key,
        }
    }
}

/// A loaded pair, with what the logs and metrics want to know about it.
#[derive(Clone)]
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    pub info: CertInfo,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub subject: String,
    pub names: Vec<String>,
    /// Unix seconds.
    pub not_after: i64,
}

pub fn read(path: &Path) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(|e| PemError::Read {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// Parses a chain and key, checking that the key belongs to the leaf.
pub fn parse_pair(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<LoadedCert, PemError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError::BadPem {
            path: cert_path.to_owned(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(PemError::NoCertificate {
            path: cert_path.to_owned(),
        });
    }
    let info = cert_info(&chain[0]).map_err(|reason| PemError::BadCertificate {
        path: cert_path.to_owned(),
        reason,
    })?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| PemError::BadKey {
        path: key_path.to_owned(),
        reason: e.to_string(),
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => PemError::Mismatch {
            cert: cert_path.to_owned(),
            key: key_path.to_owned(),
            reason: e.to_string(),
        },
        other => PemError::BadKey {
            path: key_path.to_owned(),
            reason: other.to_string(),
        },
    })?;
    Ok(LoadedCert {
        key: Arc::new(certified),
        info,
    })
}

pub fn load_pair(cert_path: &Path, key_path: &Path) -> Result<LoadedCert, PemError> {
    parse_pair(&read(cert_path)?, &read(key_path)?, cert_path, key_path)
}

fn cert_info(der: &CertificateDer<'_>) -> Result<CertInfo, String> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der.as_ref()).map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => names.push((*d).to_owned()),
                GeneralName::IPAddress(ip) => names.push(format_ip(ip)),
                _ => {}
            }
        }
    }
    Ok(CertInfo {
        subject: cert.subject().to_string(),
        names,
        not_after: cert.validity().not_after.timestamp(),
    })
}

fn format_ip(b: &[u8]) -> String {
    match b.len() {
        4 => std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string(),
        16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            std::net::Ipv6Addr::from(a).to_string()
        }
        _ => format!("{b:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        (c.cert.pem(), c.key_pair.serialize_pem())
    }

    #[test]
    fn loads_matching_pair() {
        let (c, k) = pair("registry.example.com");
        let l = parse_pair(c.as_bytes(), k.as_bytes(), Path::new("c"), Path::new("k")).unwrap();
        assert_eq!(l.info.names, ["registry.example.com"]);
        assert!(l.info.not_after > 0);
    }

    #[test]
    fn refuses_mismatch_garbage_and_half_files() {
        let (c1, _) = pair("a.example");
        let (_, k2) = pair("b.example");
        let e = parse_pair(c1.as_bytes(), k2.as_bytes(), Path::new("c"), Path::new("k"));
        assert!(matches!(e, Err(PemError::Mismatch { .. })), "{:?}", e.err());
        let e = parse_pair(b"garbage", k2.as_bytes(), Path::new("c"), Path::new("k"));
        assert!(matches!(e, Err(PemError::NoCertificate { .. })));
        let half = &c1[..c1.len() / 2];
        let e = parse_pair(
            half.as_bytes(),
            k2.as_bytes(),
            Path::new("c"),
            Path::new("k"),
        );
        assert!(e.is_err());
        let e = parse_pair(c1.as_bytes(), b"", Path::new("c"), Path::new("k"));
        assert!(matches!(e, Err(PemError::BadKey { .. })));
    }
}
