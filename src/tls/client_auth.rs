//! Client certificates (`[tls.client_auth]`): the verifier the TLS
//! listener asks about every client certificate, the CA and CRL files it
//! is built from (reloaded when they change), and what a verified
//! certificate says about its holder.
//!
//! Pingora builds its rustls `ServerConfig` once, so the listener gets one
//! [`ReloadingVerifier`] for its lifetime and a reload swaps the
//! `WebPkiClientVerifier` inside it: new handshakes are checked against the
//! new CAs and CRLs, open connections keep what they were admitted with.

use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::client_auth::{ClientAuthConfig, ClientAuthMode};
use crate::watch::FileWatch;

#[derive(Debug, thiserror::Error)]
pub enum ClientAuthError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path}: no CA certificate found (expected PEM)")]
    NoCa { path: PathBuf },
    #[error("{path}: invalid PEM: {reason}")]
    BadPem { path: PathBuf, reason: String },
    #[error("{path}: not a usable CA certificate: {reason}")]
    BadCa { path: PathBuf, reason: String },
    #[error("{path}: not a usable certificate revocation list: {reason}")]
    BadCrl { path: PathBuf, reason: String },
    #[error("cannot build the client certificate verifier: {reason}")]
    Verifier { reason: String },
}

impl ClientAuthError {
    /// The config key the problem is about.
    pub fn key(&self) -> &'static str {
        match self {
            ClientAuthError::BadCrl { .. } => "tls.client_auth.crl_files",
            _ => "tls.client_auth.ca_file",
        }
    }
}

/// Builds a verifier from the files `cfg` names.
pub fn load_verifier(
    cfg: &ClientAuthConfig,
) -> Result<Arc<dyn ClientCertVerifier>, ClientAuthError> {
    let mut roots = RootCertStore::empty();
    for path in &cfg.ca_file {
        let pem = read(path)?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ClientAuthError::BadPem {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(ClientAuthError::NoCa { path: path.clone() });
        }
        for c in certs {
            roots.add(c).map_err(|e| ClientAuthError::BadCa {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        }
    }
    let mut crls = Vec::new();
    for path in &cfg.crl_files {
        let bad = |reason: String| ClientAuthError::BadCrl {
            path: path.clone(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
        let pem = CertificateRevocationListDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("invalid PEM: {e}")))?;
        let found = if pem.is_empty() {
            vec![CertificateRevocationListDer::from(bytes)]
        } else {
            pem
        };
        // each list on its own, so that the error names its file
        for crl in &found {
            let one = WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots.clone()),
                Arc::new(rustls::crypto::ring::default_provider()),
            )
            .with_crls([crl.clone()])
            .build();
            if let Err(e) = one {
                return Err(bad(e.to_string()));
            }
        }
        crls.extend(found);
    }
    let mut builder = WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .with_crls(crls)
    // a CA of the bundle without a list in crl_files: not checked
    .allow_unknown_revocation_status();
    if cfg.mode == ClientAuthMode::Optional {
        builder = builder.allow_unauthenticated();
    }
    builder.build().map_err(|e| ClientAuthError::Verifier {
        reason: e.to_string(),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, ClientAuthError> {
    std::fs::read(path).map_err(|e| ClientAuthError::Read {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// The listener's client certificate verifier: whatever was loaded last.
#[derive(Debug)]
pub struct ReloadingVerifier {
    current: ArcSwap<Arc<dyn ClientCertVerifier>>,
    mandatory: bool,
    /// Certificates refused (counted by the exporter that handed it in).
    refusals: prometheus::IntCounter,
}

impl ReloadingVerifier {
    pub fn new(
        initial: Arc<dyn ClientCertVerifier>,
        mode: ClientAuthMode,
        refusals: prometheus::IntCounter,
    ) -> Self {
        ReloadingVerifier {
            current: ArcSwap::from_pointee(initial),
            mandatory: mode == ClientAuthMode::Required,
            refusals,
        }
    }

    pub fn set(&self, verifier: Arc<dyn ClientCertVerifier>) {
        self.current.store(Arc::new(verifier));
    }
}

impl ClientCertVerifier for ReloadingVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    /// No hints: a list fixed when the listener was built would go stale
    /// when the CAs are replaced, and clients (Go's, Docker's) would then
    /// hold back certificates of the new CA. With none, a client sends the
    /// certificate it has.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let result = self
            .current
            .load()
            .verify_client_cert(end_entity, intermediates, now);
        if let Err(e) = &result {
            self.refusals.inc();
            tracing::info!(target: "tls", error = %e, "client certificate refused");
        }
        result
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current
            .load()
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current
            .load()
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current.load().supported_verify_schemes()
    }
}

/// The verifier and the files it is built from, watched for changes.
pub struct ClientAuth {
    pub verifier: Arc<ReloadingVerifier>,
    cfg: ClientAuthConfig,
    watch: FileWatch,
    reload_failures: prometheus::IntCounter,
}

impl ClientAuth {
    pub fn new(
        cfg: &ClientAuthConfig,
        reload_failures: prometheus::IntCounter,
        refusals: prometheus::IntCounter,
    ) -> Result<Self, ClientAuthError> {
        let mut watch = FileWatch::new(cfg.ca_file.iter().chain(&cfg.crl_files).cloned().collect());
        watch.changed();
        let verifier = load_verifier(cfg)?;
        tracing::info!(
            target: "tls",
            ca_files = ?cfg.ca_file,
            crl_files = ?cfg.crl_files,
            mode = ?cfg.mode,
            "client certificates: verifier loaded"
        );
        Ok(ClientAuth {
            verifier: Arc::new(ReloadingVerifier::new(verifier, cfg.mode, refusals)),
            cfg: cfg.clone(),
            watch,
            reload_failures,
        })
    }

    /// Rebuilds the verifier if a CA or CRL file changed. Files that do not
    /// load keep the previous verifier serving.
    pub fn poll(&mut self) {
        if !self.watch.changed() {
            return;
        }
        match load_verifier(&self.cfg) {
            Ok(v) => {
                self.verifier.set(v);
                tracing::info!(
                    target: "tls",
                    ca_files = ?self.cfg.ca_file,
                    crl_files = ?self.cfg.crl_files,
                    "client certificate CA or CRL files changed: new verifier installed"
                );
            }
            Err(e) => {
                self.reload_failures.inc();
                tracing::error!(
                    target: "tls",
                    key = e.key(),
                    error = %e,
                    "client certificate CA or CRL files changed but do not load; still verifying with the previous ones"
                );
            }
        }
    }
}

/// What a verified client certificate says about its holder: put on the
/// connection by the handshake callback, read by authentication.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerCertificate {
    /// The subject, RFC 4514 style (`CN=alice, OU=dev`).
    pub subject: String,
    pub common_names: Vec<String>,
    pub organizational_units: Vec<String>,
    pub organizations: Vec<String>,
    pub dns_names: Vec<String>,
    pub uris: Vec<String>,
    pub emails: Vec<String>,
}

impl PeerCertificate {
    /// Parses the leaf certificate (already verified by rustls).
    pub fn parse(der: &[u8]) -> Result<PeerCertificate, String> {
        use x509_parser::prelude::*;
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
        let strings = |it: &mut dyn Iterator<Item = &AttributeTypeAndValue>| -> Vec<String> {
            it.filter_map(|a| a.as_str().ok().map(str::to_owned))
                .collect()
        };
        let subject = cert.subject();
        let mut p = PeerCertificate {
            subject: subject.to_string(),
            common_names: strings(&mut subject.iter_common_name()),
            organizational_units: strings(&mut subject.iter_organizational_unit()),
            organizations: strings(&mut subject.iter_organization()),
            ..PeerCertificate::default()
        };
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    GeneralName::DNSName(d) => p.dns_names.push((*d).to_owned()),
                    GeneralName::URI(u) => p.uris.push((*u).to_owned()),
                    GeneralName::RFC822Name(e) => p.emails.push((*e).to_owned()),
                    _ => {}
                }
            }
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, IsCa,
        KeyIdMethod, KeyPair, RevokedCertParams, SanType, SerialNumber,
    };

    struct TestCa {
        cert: rcgen::Certificate,
        key: KeyPair,
    }

    fn ca(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa { cert, key }
    }

    fn client(ca: &TestCa, serial: u64) -> Vec<u8> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "alice");
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, "dev");
        params.subject_alt_names = vec![
            SanType::URI("spiffe://example.org/ci".try_into().unwrap()),
            SanType::Rfc822Name("alice@example.org".try_into().unwrap()),
        ];
        params.serial_number = Some(SerialNumber::from(serial));
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        params
            .signed_by(&key, &ca.cert, &ca.key)
            .unwrap()
            .der()
            .to_vec()
    }

    fn crl(ca: &TestCa, revoked: u64) -> String {
        CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2020, 1, 1),
            next_update: rcgen::date_time_ymd(2099, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: vec![RevokedCertParams {
                serial_number: SerialNumber::from(revoked),
                revocation_time: rcgen::date_time_ymd(2020, 1, 1),
                reason_code: None,
                invalidity_date: None,
            }],
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&ca.cert, &ca.key)
        .unwrap()
        .pem()
        .unwrap()
    }

    fn config(dir: &Path, cas: &[&TestCa], crls: &[String], mode: &str) -> ClientAuthConfig {
        let mut bundle = String::new();
        for c in cas {
            bundle.push_str(&c.cert.pem());
        }
        std::fs::write(dir.join("ca.pem"), bundle).unwrap();
        let mut crl_files = Vec::new();
        for (i, c) in crls.iter().enumerate() {
            let path = dir.join(format!("crl{i}.pem"));
            std::fs::write(&path, c).unwrap();
            crl_files.push(path);
        }
        let mut cfg: ClientAuthConfig = toml::from_str(&format!(
            "ca_file = {:?}\nmode = \"{mode}\"",
            dir.join("ca.pem")
        ))
        .unwrap();
        cfg.crl_files = crl_files;
        cfg
    }

    fn verifies(v: &dyn ClientCertVerifier, der: &[u8]) -> bool {
        v.verify_client_cert(&CertificateDer::from(der.to_vec()), &[], UnixTime::now())
            .is_ok()
    }

    #[test]
    fn bundle_crl_and_other_ca() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, other) = (ca("A"), ca("B"), ca("other"));
        // a bundle of two CAs, a CRL for A only
        let cfg = config(dir.path(), &[&a, &b], &[crl(&a, 7)], "required");
        let v = load_verifier(&cfg).unwrap();
        assert!(verifies(&*v, &client(&a, 1)));
        assert!(verifies(&*v, &client(&b, 7)), "B has no CRL: not checked");
        assert!(!verifies(&*v, &client(&a, 7)), "revoked by A's CRL");
        assert!(!verifies(&*v, &client(&other, 1)), "another CA");
        assert!(v.client_auth_mandatory());
        let opt = load_verifier(&config(dir.path(), &[&a], &[], "optional")).unwrap();
        assert!(!opt.client_auth_mandatory());
    }

    #[test]
    fn broken_files_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let a = ca("A");
        let mut cfg = config(dir.path(), &[&a], &[crl(&a, 7)], "required");
        std::fs::write(
            dir.path().join("crl0.pem"),
            "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
        )
        .unwrap();
        let e = load_verifier(&cfg).err().unwrap();
        assert_eq!(e.key(), "tls.client_auth.crl_files", "{e}");
        cfg.crl_files.clear();
        std::fs::write(dir.path().join("ca.pem"), "not a certificate").unwrap();
        let e = load_verifier(&cfg).err().unwrap();
        assert_eq!(e.key(), "tls.client_auth.ca_file", "{e}");
        assert!(e.to_string().contains("ca.pem"), "{e}");
        cfg.ca_file = vec![dir.path().join("missing.pem")];
        let e = load_verifier(&cfg).err().unwrap();
        assert!(matches!(e, ClientAuthError::Read { .. }), "{e}");
    }

    #[test]
    fn reload_swaps_and_keeps_the_old_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (ca("A"), ca("B"));
        let cfg = config(dir.path(), &[&a], &[], "required");
        let counter = prometheus::IntCounter::new("x", "x").unwrap();
        let mut auth = ClientAuth::new(&cfg, counter.clone(), counter.clone()).unwrap();
        assert!(verifies(&*auth.verifier, &client(&a, 1)));
        // a broken file: A still verifies
        std::fs::write(dir.path().join("ca.pem"), "garbage").unwrap();
        auth.poll();
        assert_eq!(counter.get(), 1);
        assert!(verifies(&*auth.verifier, &client(&a, 1)));
        // B replaces A
        std::fs::write(dir.path().join("ca.pem"), b.cert.pem()).unwrap();
        auth.poll();
        assert!(verifies(&*auth.verifier, &client(&b, 1)));
        assert!(!verifies(&*auth.verifier, &client(&a, 1)));
    }

    #[test]
    fn parses_names() {
        let a = ca("A");
        let p = PeerCertificate::parse(&client(&a, 1)).unwrap();
        assert_eq!(p.common_names, ["alice"]);
        assert_eq!(p.organizational_units, ["dev"]);
        assert_eq!(p.uris, ["spiffe://example.org/ci"]);
        assert_eq!(p.emails, ["alice@example.org"]);
        assert!(p.subject.contains("CN=alice"), "{}", p.subject);
    }
}
