//! An issuer's signing keys: its discovery document and JWKS, fetched in
//! the background and cached, so verifying a token costs no network call.
//!
//! A token signed by a key the cache does not hold makes the keys be
//! fetched again at once (keys rotate), at most once per
//! `min_refetch_interval`, one fetch at a time. When fetches fail, the
//! cached keys serve up to `max_key_age` after the last good one; then
//! the issuer's tokens are refused as unavailable (fail closed, 503).

use arc_swap::ArcSwapOption;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The most of a discovery document or JWKS worth reading.
const MAX_DOCUMENT: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("GET {url}: {reason}")]
    Http { url: String, reason: String },
    #[error("GET {url}: answered {status}")]
    Status { url: String, status: u16 },
    #[error("GET {url}: larger than {MAX_DOCUMENT} bytes")]
    TooLarge { url: String },
    #[error("{url}: not a valid document: {reason}")]
    Parse { url: String, reason: String },
    #[error("discovery document names issuer {found:?}, not {expected:?}")]
    IssuerMismatch { expected: String, found: String },
    #[error("{url}: no usable signing key")]
    NoKeys { url: String },
}

/// What the discovery document says (the parts used here).
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub jwks_uri: url::Url,
    #[serde(default)]
    pub authorization_endpoint: Option<url::Url>,
    #[serde(default)]
    pub token_endpoint: Option<url::Url>,
}

/// One public key to verify with, and the one algorithm it verifies.
pub struct VerifyKey {
    pub kid: Option<String>,
    pub alg: Algorithm,
    pub key: DecodingKey,
}

/// The keys as last fetched.
pub struct KeySet {
    pub discovery: Discovery,
    by_kid: HashMap<String, Arc<VerifyKey>>,
    /// Keys without a `kid` (used only when the JWKS has just one key).
    unnamed: Vec<Arc<VerifyKey>>,
    fetched: Instant,
}

impl KeySet {
    pub fn len(&self) -> usize {
        self.by_kid.len() + self.unnamed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn find(&self, kid: Option<&str>) -> Option<Arc<VerifyKey>> {
        match kid {
            Some(kid) => self.by_kid.get(kid).cloned(),
            // a token without a kid: only unambiguous with a single key
            None if self.len() == 1 => self
                .unnamed
                .first()
                .or_else(|| self.by_kid.values().next())
                .cloned(),
            None => None,
        }
    }
}

/// Why no key verifies a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// The issuer's keys hold no key of that id, even fetched again.
    Unknown,
    /// No keys, or only keys older than `max_key_age`: fail closed.
    Unavailable,
}

/// How often keys are fetched and how long they are good for.
#[derive(Debug, Clone, Copy)]
pub struct KeyTimes {
    pub refresh: Duration,
    pub max_age: Duration,
    pub min_refetch: Duration,
}

pub struct IssuerKeys {
    /// The issuer as its tokens' `iss` names it.
    issuer: String,
    discovery_url: String,
    http: reqwest::Client,
    times: KeyTimes,
    current: ArcSwapOption<KeySet>,
    /// When a fetch last started (rate limit of refetches).
    last_attempt: Mutex<Option<Instant>>,
    /// One fetch at a time: concurrent requests with a new kid wait for it.
    fetching: tokio::sync::Mutex<()>,
}

/// The issuer as tokens name it: the URL as configured, without the
/// slash `url` adds to a bare host (`https://a` is `iss` "https://a").
pub fn issuer_id(url: &url::Url) -> String {
    let s = url.as_str();
    if url.path() == "/" {
        s.trim_end_matches('/').to_owned()
    } else {
        s.to_owned()
    }
}

impl IssuerKeys {
    pub fn new(issuer: &url::Url, http: reqwest::Client, times: KeyTimes) -> Self {
        let id = issuer_id(issuer);
        IssuerKeys {
            discovery_url: format!(
                "{}/.well-known/openid-configuration",
                id.trim_end_matches('/')
            ),
            issuer: id,
            http,
            times,
            current: ArcSwapOption::empty(),
            last_attempt: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The keys and discovery document, if fetched and not too old.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        self.current
            .load_full()
            .filter(|s| s.fetched.elapsed() <= self.times.max_age)
    }

    /// Whether the cached keys still hold `kid` (a cached verification is
    /// used only while its key is).
    pub fn holds(&self, kid: Option<&str>) -> bool {
        self.current().is_some_and(|s| s.find(kid).is_some())
    }

    /// The key a token with header `kid` is verified with. Only a key the
    /// cache does not hold (or no usable cache) costs a fetch.
    pub async fn key_for(&self, kid: Option<&str>) -> Result<Arc<VerifyKey>, KeyError> {
        if let Some(k) = self.current().and_then(|set| set.find(kid)) {
            return Ok(k);
        }
        match self.fetch_again().await {
            Some(set) => set.find(kid).ok_or(KeyError::Unknown),
            None => Err(KeyError::Unavailable),
        }
    }

    /// The discovery document (the login's endpoints), fetched if none is
    /// cached.
    pub async fn discovery(&self) -> Result<Discovery, KeyError> {
        match self.current() {
            Some(set) => Ok(set.discovery.clone()),
            None => self
                .fetch_again()
                .await
                .map(|s| s.discovery.clone())
                .ok_or(KeyError::Unavailable),
        }
    }

    /// Fetches again unless a fetch started within `min_refetch`; one
    /// at a time (requests that need it wait for the one running).
    async fn fetch_again(&self) -> Option<Arc<KeySet>> {
        let _one = self.fetching.lock().await;
        let recent = self
            .last_attempt
            .lock()
            .map(|t| t.is_some_and(|t| t.elapsed() < self.times.min_refetch))
            .unwrap_or(true);
        if !recent {
            if let Err(e) = self.fetch().await {
                tracing::warn!(target: "auth", issuer = %self.issuer, error = %e, "cannot fetch the OIDC issuer's keys");
            }
        }
        self.current()
    }

    /// Whether the background refresh is due.
    pub fn refresh_due(&self) -> bool {
        match self.current.load().as_ref() {
            None => true,
            Some(s) => s.fetched.elapsed() >= self.times.refresh,
        }
    }

    /// The background refresh: a fetch, one at a time with those of
    /// requests (which wait for it rather than find no keys). Whether it
    /// is due is asked again under the lock: a request that fetched
    /// while the refresh waited (the first login at startup) has done
    /// its work, and `None` says so.
    pub async fn refresh(&self) -> Option<Result<usize, FetchError>> {
        let _one = self.fetching.lock().await;
        if !self.refresh_due() {
            return None;
        }
        Some(self.fetch().await)
    }

    /// Fetches the discovery document and the keys; on error the cached
    /// keys stay (until `max_key_age`).
    async fn fetch(&self) -> Result<usize, FetchError> {
        if let Ok(mut t) = self.last_attempt.lock() {
            *t = Some(Instant::now());
        }
        let discovery: Discovery = self.get_json(&self.discovery_url).await?;
        if discovery.issuer != self.issuer {
            return Err(FetchError::IssuerMismatch {
                expected: self.issuer.clone(),
                found: discovery.issuer,
            });
        }
        let jwks_url = discovery.jwks_uri.to_string();
        let jwks: RawJwks = self.get_json(&jwks_url).await?;
        let (by_kid, unnamed) = usable_keys(jwks);
        if by_kid.is_empty() && unnamed.is_empty() {
            return Err(FetchError::NoKeys { url: jwks_url });
        }
        let set = KeySet {
            discovery,
            by_kid,
            unnamed,
            fetched: Instant::now(),
        };
        let n = set.len();
        self.current.store(Some(Arc::new(set)));
        crate::observe::metrics::metrics()
            .oidc_key_fetches
            .with_label_values(&["ok"])
            .inc();
        tracing::debug!(target: "auth", issuer = %self.issuer, keys = n, "OIDC issuer keys fetched");
        Ok(n)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, FetchError> {
        let failed = |reason: String| {
            crate::observe::metrics::metrics()
                .oidc_key_fetches
                .with_label_values(&["error"])
                .inc();
            reason
        };
        let http = |e: reqwest::Error| FetchError::Http {
            url: url.to_owned(),
            reason: failed(e.to_string()),
        };
        let mut resp = self.http.get(url).send().await.map_err(http)?;
        if !resp.status().is_success() {
            failed(String::new());
            return Err(FetchError::Status {
                url: url.to_owned(),
                status: resp.status().as_u16(),
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(http)? {
            if body.len() + chunk.len() > MAX_DOCUMENT {
                failed(String::new());
                return Err(FetchError::TooLarge {
                    url: url.to_owned(),
                });
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| FetchError::Parse {
            url: url.to_owned(),
            reason: failed(e.to_string()),
        })
    }
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

/// The signing keys of a JWKS that can verify something. A key the
/// crate cannot read (an unknown curve), an encryption key and, above
/// all, a symmetric (`oct`) key are skipped: a public JWKS holding a
/// shared secret would let anyone sign.
fn usable_keys(jwks: RawJwks) -> (HashMap<String, Arc<VerifyKey>>, Vec<Arc<VerifyKey>>) {
    let mut by_kid = HashMap::new();
    let mut unnamed = Vec::new();
    for raw in jwks.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(raw) else {
            continue;
        };
        if matches!(
            jwk.common.public_key_use,
            Some(PublicKeyUse::Encryption) | Some(PublicKeyUse::Other(_))
        ) {
            continue;
        }
        let Some(alg) = algorithm_of(&jwk) else {
            continue;
        };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        let kid = jwk.common.key_id.clone();
        let k = Arc::new(VerifyKey {
            kid: kid.clone(),
            alg,
            key,
        });
        match kid {
            Some(kid) => {
                by_kid.insert(kid, k);
            }
            None => unnamed.push(k),
        }
    }
    (by_kid, unnamed)
}

/// The one algorithm a key verifies: its `alg` if given (a signature
/// algorithm of its key type), else the usual one of its type. Never
/// the token's say-so: a token's header only has to agree.
fn algorithm_of(jwk: &Jwk) -> Option<Algorithm> {
    use KeyAlgorithm as K;
    match (&jwk.algorithm, &jwk.common.key_algorithm) {
        (AlgorithmParameters::RSA(_), None | Some(K::RS256)) => Some(Algorithm::RS256),
        (AlgorithmParameters::RSA(_), Some(K::RS384)) => Some(Algorithm::RS384),
        (AlgorithmParameters::RSA(_), Some(K::RS512)) => Some(Algorithm::RS512),
        (AlgorithmParameters::RSA(_), Some(K::PS256)) => Some(Algorithm::PS256),
        (AlgorithmParameters::RSA(_), Some(K::PS384)) => Some(Algorithm::PS384),
        (AlgorithmParameters::RSA(_), Some(K::PS512)) => Some(Algorithm::PS512),
        (AlgorithmParameters::EllipticCurve(p), alg) => match (&p.curve, alg) {
            (EllipticCurve::P256, None | Some(K::ES256)) => Some(Algorithm::ES256),
            (EllipticCurve::P384, None | Some(K::ES384)) => Some(Algorithm::ES384),
            _ => None,
        },
        (AlgorithmParameters::OctetKeyPair(p), None | Some(K::EdDSA)) => {
            (p.curve == EllipticCurve::Ed25519).then_some(Algorithm::EdDSA)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwks(keys: serde_json::Value) -> RawJwks {
        serde_json::from_value(serde_json::json!({ "keys": keys })).unwrap()
    }

    #[test]
    fn symmetric_encryption_and_unknown_keys_are_skipped() {
        let (by_kid, unnamed) = usable_keys(jwks(serde_json::json!([
            {"kty": "oct", "kid": "shared", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "sXch", "e": "AQAB"},
            {"kty": "EC", "kid": "k1", "crv": "secp256k1", "x": "AA", "y": "AA"},
            {"kty": "RSA", "kid": "rs", "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw", "e": "AQAB"},
            {"kty": "RSA", "kid": "rs-enc-alg", "alg": "RSA-OAEP", "n": "sXch", "e": "AQAB"}
        ])));
        assert!(unnamed.is_empty());
        let kids: Vec<&String> = by_kid.keys().collect();
        assert_eq!(kids, ["rs"]);
        assert_eq!(by_kid["rs"].alg, Algorithm::RS256);
    }

    #[test]
    fn algorithm_comes_from_the_key() {
        let ec: Jwk = serde_json::from_value(serde_json::json!(
            {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}
        ))
        .unwrap();
        assert_eq!(algorithm_of(&ec), Some(Algorithm::ES256));
        let ec_wrong: Jwk = serde_json::from_value(serde_json::json!(
            {"kty": "EC", "crv": "P-256", "alg": "ES384", "x": "AA", "y": "AA"}
        ))
        .unwrap();
        assert_eq!(algorithm_of(&ec_wrong), None);
        let ps: Jwk = serde_json::from_value(serde_json::json!(
            {"kty": "RSA", "alg": "PS256", "n": "AQAB", "e": "AQAB"}
        ))
        .unwrap();
        assert_eq!(algorithm_of(&ps), Some(Algorithm::PS256));
    }

    #[test]
    fn issuer_ids_as_tokens_name_them() {
        let u = |s: &str| url::Url::parse(s).unwrap();
        assert_eq!(issuer_id(&u("https://a.example")), "https://a.example");
        assert_eq!(
            issuer_id(&u("https://a.example/realms/x")),
            "https://a.example/realms/x"
        );
        assert_eq!(
            issuer_id(&u("https://a.example:8443/")),
            "https://a.example:8443"
        );
    }
}
