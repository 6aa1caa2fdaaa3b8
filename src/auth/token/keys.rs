//! The token signing key, its certificate, and the keys that verify tokens.
//!
//! Without a configured key, one is generated on first start and kept in
//! the key directory (`token-key.pem`, mode 0600). Next to it portcullis
//! keeps `token-cert.pem`, a self-signed certificate for the signing key:
//! registry:2 trusts token signers only through certificates (its
//! `auth.token.rootcertbundle`), so that file is what it is pointed at.
//! `token-bundle.pem` adds the certificates of the extra verification keys,
//! for a rotation during which the registry must trust old and new key.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use jsonwebtoken::EncodingKey;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls_pki_types::pem::{PemObject, SectionKind};
use rustls_pki_types::PrivateKeyDer;
use sha2::{Digest, Sha256};

use super::files::{pem_encode, write_atomic, Replace};
use super::public::{Algorithm, PublicKeyError, VerificationKey};

pub const KEY_FILE: &str = "token-key.pem";
pub const CERT_FILE: &str = "token-cert.pem";
pub const BUNDLE_FILE: &str = "token-bundle.pem";

/// Where the keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySettings {
    /// A PKCS#8 PEM private key; `None` generates one in `generate_dir`.
    pub signing_key: Option<PathBuf>,
    /// Keeps the generated key and, always, the certificate files.
    pub generate_dir: PathBuf,
    /// The algorithm of the signing key (checked against a given key).
    pub algorithm: Algorithm,
    /// More public keys or certificates (PEM) that verify tokens: the
    /// previous signing key during a rotation, for instance.
    pub extra_verification_keys: Vec<PathBuf>,
}

impl KeySettings {
    /// Generated ES256 key in `generate_dir`, no extra keys.
    pub fn new(generate_dir: impl Into<PathBuf>) -> Self {
        KeySettings {
            signing_key: None,
            generate_dir: generate_dir.into(),
            algorithm: Algorithm::default(),
            extra_verification_keys: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: no PEM private key: {reason}")]
    NoPrivateKey { path: PathBuf, reason: String },
    #[error("{path}: the key is not PKCS#8 (\"BEGIN PRIVATE KEY\"); convert it with `openssl pkcs8 -topk8 -nocrypt`")]
    NotPkcs8 { path: PathBuf },
    #[error("{path}: unsupported private key (need ECDSA P-256, RSA or Ed25519)")]
    UnsupportedPrivateKey { path: PathBuf },
    #[error("{path}: the key is not an {want} key")]
    AlgorithmMismatch { path: PathBuf, want: Algorithm },
    #[error("{path}: {source}")]
    PublicKey {
        path: PathBuf,
        source: PublicKeyError,
    },
    #[error("{path}: invalid PEM: {reason}")]
    BadPem { path: PathBuf, reason: String },
    #[error("{path}: no certificate or public key found")]
    NoPublicKey { path: PathBuf },
    #[error("cannot generate an {0} key: give a signing key (PKCS#8 PEM) instead")]
    CannotGenerate(Algorithm),
    #[error("cannot make the token certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("{path}: the key is unusable for signing: {reason}")]
    Signing { path: PathBuf, reason: String },
}

impl KeyError {
    /// The key or certificate file the error is about, if one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            KeyError::Io { path, .. }
            | KeyError::NoPrivateKey { path, .. }
            | KeyError::NotPkcs8 { path }
            | KeyError::UnsupportedPrivateKey { path }
            | KeyError::AlgorithmMismatch { path, .. }
            | KeyError::PublicKey { path, .. }
            | KeyError::BadPem { path, .. }
            | KeyError::NoPublicKey { path }
            | KeyError::Signing { path, .. } => Some(path),
            KeyError::CannotGenerate(_) | KeyError::Certificate(_) => None,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The private key tokens are signed with.
#[derive(Clone)]
pub struct SigningKey {
    encoding: EncodingKey,
    public: VerificationKey,
    cert_der: Vec<u8>,
}

impl SigningKey {
    pub fn algorithm(&self) -> Algorithm {
        self.public.algorithm()
    }

    pub fn kid(&self) -> &str {
        self.public.kid()
    }

    /// The self-signed certificate of this key (DER), for the `x5c` header.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    pub fn public(&self) -> &VerificationKey {
        &self.public
    }

    pub(crate) fn encoding(&self) -> &EncodingKey {
        &self.encoding
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// The signing key and every key that verifies tokens (the signing key's
/// own public key first).
#[derive(Debug, Clone)]
pub struct KeySet {
    signing: SigningKey,
    verification: Vec<VerificationKey>,
    cert_path: PathBuf,
    bundle_path: PathBuf,
}

impl KeySet {
    /// Loads (or on first start generates) the keys and writes the
    /// certificate files registry:2 needs. Safe to run concurrently: the
    /// first process to create the key wins and the others load it.
    pub fn load(settings: &KeySettings) -> Result<KeySet, KeyError> {
        let dir = &settings.generate_dir;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(io_err(dir))?;
        let (key_path, key) = match &settings.signing_key {
            Some(path) => (path.clone(), load_private_key(path)?),
            None => {
                let path = dir.join(KEY_FILE);
                (path.clone(), load_or_generate(&path, settings.algorithm)?)
            }
        };
        if *key.algorithm() != *settings.algorithm.rcgen() {
            return Err(KeyError::AlgorithmMismatch {
                path: key_path,
                want: settings.algorithm,
            });
        }
        let public =
            VerificationKey::from_spki_der(&key.public_key_der(), key_path.display().to_string())
                .map_err(|source| KeyError::PublicKey {
                path: key_path.clone(),
                source,
            })?;
        let encoding =
            encoding_key(&key, settings.algorithm).map_err(|reason| KeyError::Signing {
                path: key_path.clone(),
                reason,
            })?;
        let mut verification = vec![public.clone()];
        let mut extra_certs: Vec<Vec<u8>> = Vec::new();
        for path in &settings.extra_verification_keys {
            let (keys, certs) = load_public_keys(path)?;
            for k in keys {
                if !verification.iter().any(|v| v.kid() == k.kid()) {
                    verification.push(k);
                }
            }
            extra_certs.extend(certs);
        }
        // a certificate of the signing key among the extra keys (one the
        // registry already trusts, or one a CA signed) is the one to send
        let given = extra_certs
            .iter()
            .find(|c| cert_spki(c).as_deref() == Some(public.spki_der()));
        let cert_path = dir.join(CERT_FILE);
        let cert_der = keep_certificate(&cert_path, &key, given.map(Vec::as_slice))?;

        let mut bundle = pem_encode("CERTIFICATE", &cert_der);
        for c in extra_certs.iter().filter(|c| **c != cert_der) {
            if !bundle.contains(&pem_encode("CERTIFICATE", c)) {
                bundle.push_str(&pem_encode("CERTIFICATE", c));
            }
        }
        let bundle_path = dir.join(BUNDLE_FILE);
        if fs::read(&bundle_path).ok().as_deref() != Some(bundle.as_bytes()) {
            write_atomic(&bundle_path, bundle.as_bytes(), 0o644, Replace::Yes)
                .map_err(io_err(&bundle_path))?;
        }
        Ok(KeySet {
            signing: SigningKey {
                encoding,
                public,
                cert_der,
            },
            verification,
            cert_path,
            bundle_path,
        })
    }

    pub fn signing(&self) -> &SigningKey {
        &self.signing
    }

    pub fn verification_keys(&self) -> &[VerificationKey] {
        &self.verification
    }

    pub fn by_kid(&self, kid: &str) -> Option<&VerificationKey> {
        self.verification.iter().find(|k| k.kid() == kid)
    }

    /// `token-cert.pem`: the certificate of the signing key alone.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// `token-bundle.pem`: the signing certificate plus the certificates
    /// among the extra verification keys.
    pub fn bundle_path(&self) -> &Path {
        &self.bundle_path
    }
}

fn load_private_key(path: &Path) -> Result<KeyPair, KeyError> {
    let pem = fs::read(path).map_err(io_err(path))?;
    let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| KeyError::NoPrivateKey {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    if !matches!(der, PrivateKeyDer::Pkcs8(_)) {
        return Err(KeyError::NotPkcs8 {
            path: path.to_owned(),
        });
    }
    KeyPair::try_from(&der).map_err(|_| KeyError::UnsupportedPrivateKey {
        path: path.to_owned(),
    })
}

/// The generated key: loaded if it exists, else created (atomically, 0600).
fn load_or_generate(path: &Path, alg: Algorithm) -> Result<KeyPair, KeyError> {
    match fs::metadata(path) {
        Ok(meta) => {
            if meta.mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), mode = format!("{:o}", meta.mode() & 0o777),
                    "token signing key is readable by other users; chmod 600 it");
            }
            return load_private_key(path);
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(path)(e)),
    }
    if alg == Algorithm::RS256 {
        return Err(KeyError::CannotGenerate(alg));
    }
    let key = KeyPair::generate_for(alg.rcgen())?;
    let created = write_atomic(path, key.serialize_pem().as_bytes(), 0o600, Replace::No)
        .map_err(io_err(path))?;
    if created {
        tracing::info!(path = %path.display(), alg = %alg, "generated a token signing key");
        Ok(key)
    } else {
        // another process created it first: use theirs
        load_private_key(path)
    }
}

fn encoding_key(key: &KeyPair, alg: Algorithm) -> Result<EncodingKey, String> {
    let pem = key.serialize_pem();
    let r = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()),
        Algorithm::RS256 => EncodingKey::from_rsa_pem(pem.as_bytes()),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()),
    };
    r.map_err(|e| e.to_string())
}

/// Keeps `token-cert.pem` if it is a certificate of `key`, else writes
/// `given` (a certificate of `key` from the verification keys) or a new
/// self-signed one. Returns the certificate (DER).
///
/// Rewriting only when the key changed keeps the file byte-identical
/// across restarts, so a registry reading it never sees it change.
fn keep_certificate(path: &Path, key: &KeyPair, given: Option<&[u8]>) -> Result<Vec<u8>, KeyError> {
    let spki = key.public_key_der();
    if let Ok(pem) = fs::read(path) {
        let first = rustls_pki_types::CertificateDer::pem_slice_iter(&pem).next();
        if let Some(Ok(der)) = first {
            let current = x509_parser::parse_x509_certificate(&der).is_ok_and(|(_, c)| {
                c.public_key().raw == spki.as_slice() && c.validity().is_valid()
            });
            if current && given.is_none_or(|g| g == der.as_ref()) {
                return Ok(der.to_vec());
            }
        }
    }
    let der = match given {
        Some(g) => g.to_vec(),
        None => self_signed(key)?,
    };
    write_atomic(
        path,
        pem_encode("CERTIFICATE", &der).as_bytes(),
        0o644,
        Replace::Yes,
    )
    .map_err(io_err(path))?;
    Ok(der)
}

/// The DER SubjectPublicKeyInfo of a certificate.
fn cert_spki(der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.public_key().raw.to_vec())
}

/// A certificate that only carries the key to registry:2. Its validity runs
/// from 2000 to 9999-12-31 (RFC 5280's "no well-defined expiration"), so
/// neither clock skew nor a forgotten renewal can break token checks that
/// go through the certificate (the `x5c` path). Its serial is derived from
/// the key: positive, and stable for the same key.
fn self_signed(key: &KeyPair) -> Result<Vec<u8>, KeyError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "portcullis token signer");
    params.distinguished_name = dn;
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = rcgen::date_time_ymd(9999, 12, 31);
    let mut serial: [u8; 16] = Sha256::digest(key.public_key_der())[..16]
        .try_into()
        .unwrap_or([1; 16]);
    serial[0] = (serial[0] & 0x7f) | 0x40;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.is_ca = IsCa::NoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    Ok(params.self_signed(key)?.der().to_vec())
}

/// Every certificate and public key of a PEM file, as verification keys;
/// the certificates also as DER, for the registry's bundle.
fn load_public_keys(path: &Path) -> Result<(Vec<VerificationKey>, Vec<Vec<u8>>), KeyError> {
    let pem = fs::read(path).map_err(io_err(path))?;
    let (mut keys, mut certs) = (Vec::new(), Vec::new());
    let source = path.display().to_string();
    let key_err = |source| KeyError::PublicKey {
        path: path.to_owned(),
        source,
    };
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(&pem) {
        let (kind, der) = section.map_err(|e| KeyError::BadPem {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        match kind {
            SectionKind::Certificate => {
                let (_, cert) =
                    x509_parser::parse_x509_certificate(&der).map_err(|e| KeyError::BadPem {
                        path: path.to_owned(),
                        reason: format!("certificate: {e}"),
                    })?;
                let spki = cert.public_key().raw;
                keys.push(VerificationKey::from_spki_der(spki, source.clone()).map_err(key_err)?);
                certs.push(der);
            }
            SectionKind::PublicKey => {
                keys.push(VerificationKey::from_spki_der(&der, source.clone()).map_err(key_err)?);
            }
            // private keys and the like are not verification keys
            _ => {}
        }
    }
    if keys.is_empty() {
        return Err(KeyError::NoPublicKey {
            path: path.to_owned(),
        });
    }
    Ok((keys, certs))
}

#[cfg(test)]
mod tests {
    use super::*;

    const P256_SPKI_PREFIX: [u8; 26] = [
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];

    fn settings(dir: &Path) -> KeySettings {
        KeySettings::new(dir.join("keys"))
    }

    /// A new key of `alg`, written to `dir/name` as PEM.
    fn key_file(
        dir: &Path,
        name: &str,
        alg: &'static rcgen::SignatureAlgorithm,
    ) -> (KeyPair, PathBuf) {
        let key = KeyPair::generate_for(alg).unwrap();
        let path = dir.join(name);
        fs::write(&path, key.serialize_pem()).unwrap();
        (key, path)
    }

    #[test]
    fn generates_once_and_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        let a = KeySet::load(&s).unwrap();
        let key_path = s.generate_dir.join(KEY_FILE);
        assert_eq!(fs::metadata(&key_path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(a.signing().algorithm(), Algorithm::ES256);
        let cert = fs::read(a.cert_path()).unwrap();
        let b = KeySet::load(&s).unwrap();
        assert_eq!(a.signing().kid(), b.signing().kid());
        assert_eq!(fs::read(b.cert_path()).unwrap(), cert, "cert kept as is");
        assert_eq!(fs::read(b.bundle_path()).unwrap(), cert, "bundle = cert");
        // the encoding Go's MarshalPKIXPublicKey produces, so the kid matches
        assert!(a
            .signing()
            .public()
            .spki_der()
            .starts_with(&P256_SPKI_PREFIX));
    }

    #[test]
    fn certificate_carries_the_key_and_is_long_lived() {
        let dir = tempfile::tempdir().unwrap();
        let ks = KeySet::load(&settings(dir.path())).unwrap();
        let pem = fs::read(ks.cert_path()).unwrap();
        let der = rustls_pki_types::CertificateDer::from_pem_slice(&pem).unwrap();
        assert_eq!(der.as_ref(), ks.signing().cert_der());
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(cert.public_key().raw, ks.signing().public().spki_der());
        assert!(cert.validity().not_after.timestamp() > 253_000_000_000);
        assert!(cert.tbs_certificate.raw_serial()[0] & 0x80 == 0);
        assert_eq!(cert.issuer(), cert.subject(), "self-signed");
    }

    #[test]
    fn replaces_a_certificate_of_another_key() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        let a = KeySet::load(&s).unwrap();
        fs::remove_file(s.generate_dir.join(KEY_FILE)).unwrap();
        let b = KeySet::load(&s).unwrap();
        assert_ne!(a.signing().kid(), b.signing().kid());
        let pem = fs::read(b.cert_path()).unwrap();
        let der = rustls_pki_types::CertificateDer::from_pem_slice(&pem).unwrap();
        assert_eq!(der.as_ref(), b.signing().cert_der());
    }

    #[test]
    fn given_key_and_extra_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (_, key_path) = key_file(dir.path(), "signing.pem", &rcgen::PKCS_ECDSA_P256_SHA256);
        // an old key: its certificate, and a bare public key
        let old = KeySet::load(&settings(&dir.path().join("old"))).unwrap();
        let other = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let pub_path = dir.path().join("other.pub.pem");
        fs::write(&pub_path, other.public_key_pem()).unwrap();
        let s = KeySettings {
            signing_key: Some(key_path),
            extra_verification_keys: vec![old.cert_path().to_owned(), pub_path],
            ..settings(dir.path())
        };
        let ks = KeySet::load(&s).unwrap();
        assert!(!s.generate_dir.join(KEY_FILE).exists(), "nothing generated");
        assert_eq!(ks.verification_keys().len(), 3);
        assert_eq!(ks.verification_keys()[0].kid(), ks.signing().kid());
        assert!(ks.by_kid(old.signing().kid()).is_some());
        let bundle = fs::read(ks.bundle_path()).unwrap();
        let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_slice_iter(&bundle)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            certs.len(),
            2,
            "own cert + the old cert; bare keys cannot go in"
        );
        assert_eq!(certs[1].as_ref(), old.signing().cert_der());
    }

    #[test]
    fn uses_a_given_certificate_of_the_signing_key() {
        let dir = tempfile::tempdir().unwrap();
        let (key, key_path) = key_file(dir.path(), "next.pem", &rcgen::PKCS_ECDSA_P256_SHA256);
        // a certificate made ahead of the switch (and already in the
        // registry's bundle)
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "made ahead");
        let ahead = params.self_signed(&key).unwrap();
        let ahead_path = dir.path().join("next-cert.pem");
        fs::write(&ahead_path, ahead.pem()).unwrap();
        let s = KeySettings {
            signing_key: Some(key_path),
            extra_verification_keys: vec![ahead_path],
            ..settings(dir.path())
        };
        // a stale token-cert.pem of an earlier key is replaced
        KeySet::load(&settings(dir.path())).unwrap();
        let ks = KeySet::load(&s).unwrap();
        assert_eq!(ks.signing().cert_der(), ahead.der().as_ref());
        let pem = fs::read(ks.cert_path()).unwrap();
        let der = rustls_pki_types::CertificateDer::from_pem_slice(&pem).unwrap();
        assert_eq!(der.as_ref(), ahead.der().as_ref());
        let bundle = fs::read(ks.bundle_path()).unwrap();
        assert_eq!(bundle, pem, "the given cert only once");
        assert_eq!(ks.verification_keys().len(), 1, "same key, no duplicate");
        // and kept on the next start
        assert_eq!(
            KeySet::load(&s).unwrap().signing().cert_der(),
            ahead.der().as_ref()
        );
    }

    #[test]
    fn rsa_key_given_as_pkcs8() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rsa.pem");
        fs::write(&p, include_str!("testdata/rsa-test-key.pem")).unwrap();
        let s = KeySettings {
            signing_key: Some(p),
            algorithm: Algorithm::RS256,
            ..settings(dir.path())
        };
        let ks = KeySet::load(&s).unwrap();
        assert_eq!(ks.signing().algorithm(), Algorithm::RS256);
        // the SPKI (and so the kid) is the one openssl and Go write
        let pub_pem = include_str!("testdata/rsa-test-key.pub.pem");
        let spki =
            rustls_pki_types::SubjectPublicKeyInfoDer::from_pem_slice(pub_pem.as_bytes()).unwrap();
        assert_eq!(ks.signing().public().spki_der(), spki.as_ref());
    }

    #[test]
    fn refuses_wrong_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (ed, p) = key_file(dir.path(), "ed.pem", &rcgen::PKCS_ED25519);
        let s = KeySettings {
            signing_key: Some(p.clone()),
            ..settings(dir.path())
        };
        assert!(matches!(
            KeySet::load(&s),
            Err(KeyError::AlgorithmMismatch { .. })
        ));
        let ok = KeySettings {
            algorithm: Algorithm::EdDSA,
            ..s.clone()
        };
        assert_eq!(
            KeySet::load(&ok).unwrap().signing().algorithm(),
            Algorithm::EdDSA
        );
        fs::write(
            &p,
            "-----BEGIN EC PRIVATE KEY-----\nMAA=\n-----END EC PRIVATE KEY-----\n",
        )
        .unwrap();
        assert!(matches!(KeySet::load(&s), Err(KeyError::NotPkcs8 { .. })));
        fs::write(&p, "not pem").unwrap();
        assert!(matches!(
            KeySet::load(&s),
            Err(KeyError::NoPrivateKey { .. })
        ));
        let missing = KeySettings {
            signing_key: Some(dir.path().join("missing.pem")),
            ..settings(dir.path())
        };
        assert!(matches!(KeySet::load(&missing), Err(KeyError::Io { .. })));
        let rsa = KeySettings {
            algorithm: Algorithm::RS256,
            ..settings(&dir.path().join("rsa"))
        };
        assert!(matches!(
            KeySet::load(&rsa),
            Err(KeyError::CannotGenerate(Algorithm::RS256))
        ));
        let no_keys = dir.path().join("empty.pem");
        fs::write(&no_keys, ed.serialize_pem()).unwrap();
        let extra = KeySettings {
            extra_verification_keys: vec![no_keys],
            ..settings(dir.path())
        };
        assert!(matches!(
            KeySet::load(&extra),
            Err(KeyError::NoPublicKey { .. })
        ));
    }
}
