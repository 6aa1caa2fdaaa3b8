//! OpenID Connect (`[auth.oidc]`).
//!
//! Workload identity: an ID token of a configured issuer (a CI job's, a
//! Kubernetes service account's) is accepted as the password, verified
//! against the issuer's cached keys ([`keys`], [`verify`]) with no network
//! call per request, and logs in as the user its claims map to.
//!
//! People log in in a browser (`crate::auth::login`), whose ID tokens
//! are verified here too.

pub mod keys;
pub mod verify;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Credential, Identity};
use crate::config::oidc::{ClaimMapping, OidcConfig};
use keys::{issuer_id, IssuerKeys, KeyTimes};
use verify::IdTokenError;

#[derive(Debug, thiserror::Error)]
pub enum OidcSetupError {
    #[error("auth.oidc.ca_file: {path}: {reason}")]
    CaFile {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("auth.oidc: cannot build the HTTP client: {0}")]
    Client(String),
    #[error("auth.oidc.login.client_secret: {0}")]
    Secret(String),
}

impl OidcSetupError {
    pub fn key(&self) -> &'static str {
        match self {
            OidcSetupError::CaFile { .. } => "auth.oidc.ca_file",
            OidcSetupError::Client(_) => "auth.oidc",
            OidcSetupError::Secret(_) => "auth.oidc.login.client_secret",
        }
    }
}

/// An issuer whose ID tokens are passwords.
struct Issuer {
    audience: Vec<String>,
    mapping: ClaimMapping,
    keys: Arc<IssuerKeys>,
}

/// A verified ID token's identity, kept until the token expires (or its
/// key leaves the issuer's JWKS): a CI job sends the same token with
/// every request of a push.
#[derive(Clone)]
struct Cached {
    identity: Arc<Identity>,
    exp: u64,
    kid: Option<String>,
    keys: Arc<IssuerKeys>,
}

pub struct Oidc {
    issuers: HashMap<String, Issuer>,
    /// Every issuer's keys once (an issuer may also be the login's).
    key_sets: Vec<Arc<IssuerKeys>>,
    leeway: Duration,
    verified: moka::sync::Cache<[u8; 32], Cached>,
    http: reqwest::Client,
}

impl Oidc {
    pub fn new(cfg: &OidcConfig) -> Result<Oidc, OidcSetupError> {
        let http = http_client(cfg)?;
        let times = KeyTimes {
            refresh: cfg.key_refresh,
            max_age: cfg.max_key_age,
            min_refetch: cfg.min_refetch_interval,
        };
        let mut key_sets: Vec<Arc<IssuerKeys>> = Vec::new();
        let mut keys_of = |url: &url::Url| {
            let id = issuer_id(url);
            match key_sets.iter().find(|k| k.issuer() == id) {
                Some(k) => Arc::clone(k),
                None => {
                    let k = Arc::new(IssuerKeys::new(url, http.clone(), times));
                    key_sets.push(Arc::clone(&k));
                    k
                }
            }
        };
        let mut issuers = HashMap::new();
        for i in &cfg.issuers {
            issuers.insert(
                issuer_id(&i.issuer),
                Issuer {
                    audience: i.audience.clone(),
                    mapping: i.mapping(),
                    keys: keys_of(&i.issuer),
                },
            );
        }
        if let Some(l) = &cfg.login {
            keys_of(&l.issuer);
        }
        Ok(Oidc {
            issuers,
            key_sets,
            leeway: cfg.leeway,
            verified: moka::sync::Cache::builder()
                .time_to_live(Duration::from_secs(3600))
                .max_capacity(10_000)
                .build(),
            http,
        })
    }

    /// Whether ID tokens are accepted as passwords.
    pub fn accepts_passwords(&self) -> bool {
        !self.issuers.is_empty()
    }

    /// Every issuer's keys, for the background refresh.
    pub fn key_sets(&self) -> &[Arc<IssuerKeys>] {
        &self.key_sets
    }

    /// The keys of the issuer `url` (the login's provider).
    pub fn keys_of(&self, url: &url::Url) -> Option<Arc<IssuerKeys>> {
        let id = issuer_id(url);
        self.key_sets.iter().find(|k| k.issuer() == id).cloned()
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn leeway(&self) -> Duration {
        self.leeway
    }

    /// The user an ID token presented as a password logs in as.
    pub async fn identity(&self, token: &str) -> Result<Arc<Identity>, IdTokenError> {
        use sha2::Digest;
        let hash: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let now = jsonwebtoken::get_current_timestamp();
        if let Some(c) = self.verified.get(&hash) {
            if c.exp + self.leeway.as_secs() > now && c.keys.holds(c.kid.as_deref()) {
                return Ok(c.identity);
            }
            self.verified.invalidate(&hash);
        }
        let iss = verify::claimed_issuer(token)?;
        let issuer = self
            .issuers
            .get(&iss)
            .ok_or_else(|| IdTokenError::UnknownIssuer(iss.chars().take(200).collect()))?;
        let verified = verify::verify(token, &issuer.keys, &issuer.audience, self.leeway).await?;
        let (user, groups) = verify::map_claims(&verified.claims, &issuer.mapping)?;
        let identity = Arc::new(Identity {
            user,
            credential_stamp: None,
            backend: "oidc",
            groups,
            credential: Credential::IdToken {
                issuer: iss,
                expires: UNIX_EPOCH + Duration::from_secs(verified.exp),
            },
            restriction: None,
        });
        self.verified.insert(
            hash,
            Cached {
                identity: Arc::clone(&identity),
                exp: verified.exp,
                kid: verified.kid,
                keys: Arc::clone(&issuer.keys),
            },
        );
        Ok(identity)
    }

    /// Fetches the keys of every issuer whose refresh is due (the
    /// background service's round).
    pub async fn refresh_keys(&self) {
        for k in &self.key_sets {
            if k.refresh_due() {
                if let Some(Err(e)) = k.refresh().await {
                    let stale = k.current().is_none();
                    tracing::warn!(target: "auth", issuer = k.issuer(), error = %e, keys_usable = !stale, "cannot fetch the OIDC issuer's keys");
                }
            }
        }
    }
}

/// Seconds left until `t` (zero if past).
pub fn remaining(t: SystemTime) -> Duration {
    t.duration_since(SystemTime::now()).unwrap_or_default()
}

/// The client for discovery, keys and the token endpoint: the public
/// roots and `ca_file`'s, no redirects (a discovery document is served
/// where the issuer says), short timeouts.
fn http_client(cfg: &OidcConfig) -> Result<reqwest::Client, OidcSetupError> {
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &cfg.ca_file {
        let err = |reason: String| OidcSetupError::CaFile {
            path: path.clone(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| err(e.to_string()))?;
        if certs.is_empty() {
            return Err(err("no PEM certificate in it".into()));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build().map_err(|e| OidcSetupError::Client(e.to_string()))
}
