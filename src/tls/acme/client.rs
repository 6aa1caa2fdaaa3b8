//! Talking to the CA: the account, and one order from start to chain.

use base64::Engine;
use bytes::Bytes;
use instant_acme::{
    Account, AccountBuilder, AccountCredentials, AuthorizationStatus, BodyWrapper,
    CertificateIdentifier, ChallengeType as AcmeChallenge, ExternalAccountKey, Identifier,
    NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::sync::Arc;
use std::time::Duration;

use super::challenge::{self, Challenges};
use super::keys;
use super::state::StateDir;
use crate::config::acme::{AcmeConfig, ChallengeType};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The CA refused or failed; carries its problem document.
    #[error("{what}: {}", describe(.source))]
    Acme {
        what: &'static str,
        source: instant_acme::Error,
    },
    #[error("tls.acme.ca_file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("tls.acme.eab.hmac_key: {0}")]
    Eab(String),
    #[error(transparent)]
    State(#[from] super::state::StateError),
    #[error(transparent)]
    Key(#[from] keys::KeyError),
    #[error(transparent)]
    Challenge(#[from] challenge::ChallengeError),
    #[error("{name}: the CA offers no {wanted} challenge (tls.acme.challenge)")]
    NoChallenge { name: String, wanted: &'static str },
    #[error("{name}: authorization is {status:?}")]
    Authorization {
        name: String,
        status: AuthorizationStatus,
    },
    #[error("order failed: {0}")]
    Invalid(String),
}

fn acme(what: &'static str) -> impl FnOnce(instant_acme::Error) -> ClientError {
    move |source| ClientError::Acme { what, source }
}

/// The error text with the CA's problem document spelled out.
pub fn describe(e: &instant_acme::Error) -> String {
    match e {
        instant_acme::Error::Api(p) => {
            let mut s = p.to_string();
            if let Some(status) = p.status {
                s.push_str(&format!(" [HTTP {status}]"));
            }
            s
        }
        other => {
            // hyper's errors say "client error (Connect)"; the cause is below
            let mut s = other.to_string();
            let mut cause = std::error::Error::source(other);
            while let Some(c) = cause {
                s.push_str(&format!(": {c}"));
                cause = c.source();
            }
            s
        }
    }
}

/// Whether the CA no longer knows the account (its database was reset,
/// or the account was deactivated): a new one is needed.
pub fn account_gone(e: &ClientError) -> bool {
    let ClientError::Acme {
        source: instant_acme::Error::Api(p),
        ..
    } = e
    else {
        return false;
    };
    let kind = p.r#type.as_deref().unwrap_or("");
    let detail = p.detail.as_deref().unwrap_or("").to_ascii_lowercase();
    kind.ends_with(":accountDoesNotExist")
        || (kind.ends_with(":unauthorized") && detail.contains("account"))
}

/// What `portcullis check` can tell about the CA settings without
/// talking to the CA: whether the `ca_file` roots load and the EAB key
/// decodes. Every problem, not only the first.
pub fn check(cfg: &AcmeConfig) -> Vec<ClientError> {
    let roots = cfg.ca_file.as_deref().map(load_roots);
    [roots.and_then(Result::err), eab_key(cfg).err()]
        .into_iter()
        .flatten()
        .collect()
}

/// The PEM roots of `tls.acme.ca_file`; an empty file is an error, not
/// "trust nothing".
fn load_roots(path: &std::path::Path) -> Result<rustls::RootCertStore, ClientError> {
    let bad = |reason: String| ClientError::CaFile {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem) {
        roots
            .add(c.map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in the file".into()));
    }
    Ok(roots)
}

/// A builder whose HTTP client trusts `ca_file` only, or the system roots.
fn builder(cfg: &AcmeConfig) -> Result<AccountBuilder, ClientError> {
    let Some(path) = &cfg.ca_file else {
        return Account::builder().map_err(acme("HTTP client"));
    };
    let bad = |reason: String| ClientError::CaFile {
        path: path.display().to_string(),
        reason,
    };
    let roots = load_roots(path)?;
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .enable_http2()
        .build();
    let client: hyper_util::client::legacy::Client<_, BodyWrapper<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector);
    Ok(Account::builder_with_http(Box::new(client)))
}

/// The stored account for the configured CA, or a new one (stored).
pub async fn account(cfg: &AcmeConfig, state: &StateDir) -> Result<Account, ClientError> {
    let url = cfg.directory_url();
    let path = state.account_path(url);
    if let Some(bytes) = state.read(&path)? {
        let creds: AccountCredentials =
            serde_json::from_slice(&bytes).map_err(|e| super::state::StateError::Invalid {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        let account = builder(cfg)?
            .from_credentials(creds)
            .await
            .map_err(acme("loading the stored account"))?;
        tracing::debug!(target: "acme", account = account.id(), "using the stored ACME account");
        return Ok(account);
    }
    new_account(cfg, state).await
}

/// Registers a new account, agreeing to the terms (checked in the config).
pub async fn new_account(cfg: &AcmeConfig, state: &StateDir) -> Result<Account, ClientError> {
    let url = cfg.directory_url();
    let contact = cfg.contact_urls();
    let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
    let eab = eab_key(cfg)?;
    let (account, creds) = builder(cfg)?
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: cfg.accept_terms,
                only_return_existing: false,
            },
            url.to_owned(),
            eab.as_ref(),
        )
        .await
        .map_err(acme("creating the ACME account"))?;
    let json =
        serde_json::to_vec_pretty(&creds).map_err(|e| ClientError::Invalid(e.to_string()))?;
    state.write(&state.account_path(url), &json)?;
    tracing::info!(target: "acme", account = account.id(), directory = url, "ACME account created and stored");
    Ok(account)
}

/// The External Account Binding key, if configured: its secret resolved
/// and decoded, so a wrong key is found before the CA is asked.
fn eab_key(cfg: &AcmeConfig) -> Result<Option<ExternalAccountKey>, ClientError> {
    let Some(e) = &cfg.eab else {
        return Ok(None);
    };
    let key = e
        .hmac_key
        .resolve()
        .map_err(|e| ClientError::Eab(e.to_string()))?;
    let raw = decode_b64(key.trim())
        .filter(|raw| !raw.is_empty())
        .ok_or_else(|| ClientError::Eab("not base64url, as the CA hands it out".into()))?;
    Ok(Some(ExternalAccountKey::new(e.key_id.clone(), &raw)))
}

fn decode_b64(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(s))
        .ok()
}

/// A certificate the CA issued, with its key.
pub struct Issued {
    pub chain_pem: String,
    pub key_pem: String,
}

/// Responses this order installed, removed again however it ends.
struct Installed<'a> {
    challenges: &'a Challenges,
    state: &'a StateDir,
    http: Vec<String>,
    alpn: Vec<String>,
}

impl Drop for Installed<'_> {
    fn drop(&mut self) {
        for t in &self.http {
            self.challenges.remove_http(t);
            if let Some(p) = self.state.http01_path(t) {
                self.state.remove(&p);
            }
        }
        for d in &self.alpn {
            self.challenges.remove_alpn(d);
            self.state.remove(&self.state.alpn01_path(d));
        }
    }
}

pub struct OrderRequest<'a> {
    pub domains: &'a [String],
    pub challenge: ChallengeType,
    pub key_type: crate::config::acme::KeyType,
    /// The certificate this one replaces (ARI), when the CA supports it.
    pub replaces: Option<CertificateIdentifier<'static>>,
}

/// One order: authorize every name, finalize with a fresh key, download.
pub async fn order(
    account: &Account,
    req: &OrderRequest<'_>,
    challenges: &Challenges,
    state: &StateDir,
) -> Result<Issued, ClientError> {
    let ids: Vec<Identifier> = req
        .domains
        .iter()
        .map(|d| Identifier::Dns(d.clone()))
        .collect();
    let mut new = NewOrder::new(&ids);
    if let Some(r) = &req.replaces {
        new = new.replaces(r.clone());
    }
    let mut order = account
        .new_order(&new)
        .await
        .map_err(acme("creating the order"))?;
    let mut installed = Installed {
        challenges,
        state,
        http: Vec::new(),
        alpn: Vec::new(),
    };
    let wanted = match req.challenge {
        ChallengeType::Http01 => AcmeChallenge::Http01,
        ChallengeType::TlsAlpn01 => AcmeChallenge::TlsAlpn01,
    };
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.map_err(acme("fetching an authorization"))?;
        let name = authz.identifier().to_string();
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue, // reused from an earlier order
            status => return Err(ClientError::Authorization { name, status }),
        }
        let mut ch = authz
            .challenge(wanted.clone())
            .ok_or_else(|| ClientError::NoChallenge {
                name: name.clone(),
                wanted: req.challenge.as_str(),
            })?;
        let key_auth = ch.key_authorization();
        match req.challenge {
            ChallengeType::Http01 => {
                let token = ch.token.clone();
                challenges.put_http(&token, key_auth.as_str());
                installed.http.push(token.clone());
                if let Some(p) = state.http01_path(&token) {
                    state.write(&p, key_auth.as_str().as_bytes())?;
                }
            }
            ChallengeType::TlsAlpn01 => {
                let (cert, pem_text) =
                    challenge::alpn_certificate(&name, key_auth.digest().as_ref())?;
                challenges.put_alpn(&name, cert);
                installed.alpn.push(name.clone());
                state.write(&state.alpn01_path(&name), pem_text.as_bytes())?;
            }
        }
        tracing::debug!(target: "acme", name, challenge = req.challenge.as_str(), "challenge ready");
        ch.set_ready()
            .await
            .map_err(acme("answering the challenge"))?;
    }

    let poll = RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .timeout(Duration::from_secs(120));
    let status = order.poll_ready(&poll).await;
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            let why = authorization_errors(&mut order).await;
            return Err(ClientError::Invalid(format!("{}{why}", describe(&e))));
        }
    };
    if status != OrderStatus::Ready {
        let why = authorization_errors(&mut order).await;
        return Err(ClientError::Invalid(format!("order is {status:?}{why}")));
    }
    drop(installed); // validated: the responses are no longer needed

    let key = keys::generate(req.key_type)?;
    let csr = keys::csr(req.domains, &key)?;
    order
        .finalize_csr(&csr)
        .await
        .map_err(acme("finalizing the order"))?;
    let chain_pem = order
        .poll_certificate(&poll)
        .await
        .map_err(acme("downloading the certificate"))?;
    Ok(Issued {
        chain_pem,
        key_pem: key.serialize_pem(),
    })
}

/// The CA's reasons, per name, for an order that did not become ready.
async fn authorization_errors(order: &mut instant_acme::Order) -> String {
    let mut out = String::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authz)) = authorizations.next().await {
        if authz.refresh().await.is_err() {
            continue;
        }
        let name = authz.identifier().to_string();
        for c in &authz.challenges {
            if let Some(p) = &c.error {
                out.push_str(&format!("; {name}: {p}"));
            }
        }
    }
    out
}

/// The ARI identifier of a certificate: its AKI key id and serial.
pub fn certificate_id(leaf_der: &[u8]) -> Option<CertificateIdentifier<'static>> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(leaf_der).ok()?;
    let aki = cert
        .iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => a.key_identifier.as_ref().map(|k| k.0),
            _ => None,
        })?;
    let serial = cert.tbs_certificate.raw_serial();
    Some(
        CertificateIdentifier::new(
            rustls_pki_types::Der::from_slice(aki),
            rustls_pki_types::Der::from_slice(serial),
        )
        .into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eab_keys_in_either_base64() {
        assert_eq!(decode_b64("aGVsbG8").unwrap(), b"hello");
        assert_eq!(decode_b64("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(decode_b64("-_8").unwrap(), [0xfb, 0xff]);
        assert!(decode_b64("not base64!").is_none());
    }

    #[test]
    fn problem_documents_are_spelled_out() {
        let p: instant_acme::Problem = serde_json::from_str(
            r#"{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many","status":429}"#,
        )
        .unwrap();
        let s = describe(&instant_acme::Error::Api(p));
        assert!(s.contains("too many"), "{s}");
        assert!(s.contains("rateLimited"), "{s}");
        assert!(s.contains("429"), "{s}");
    }
}
