//! Verifying one ID token against an issuer's cached keys, and mapping
//! its claims to a user and groups.
//!
//! The signature algorithm is the key's (from the JWKS), never the
//! token's: a header that names another (`none`, or `HS256` to turn the
//! public key into an HMAC secret) is refused before any verification.

use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{decode, decode_header, Validation};
use serde_json::{Map, Value};
use std::time::Duration;

use super::keys::{IssuerKeys, KeyError};
use crate::config::oidc::ClaimMapping;

/// A larger token is refused unread: real ID tokens are 1-4 KiB.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Why an ID token was refused: for the log line; clients see a 401 (or
/// a 503 for [`IdTokenError::Unavailable`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenError {
    #[error("token larger than {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
    #[error("not a JWS compact token")]
    Malformed,
    #[error("algorithm not accepted (alg {0})")]
    Algorithm(String),
    #[error("no configured issuer has iss {0:?}")]
    UnknownIssuer(String),
    #[error("signed by an unknown key (kid {0:?})")]
    UnknownKey(Option<String>),
    #[error("the issuer's keys cannot be fetched (fail closed)")]
    Unavailable,
    #[error("header alg {token} is not the key's {key}")]
    AlgorithmMismatch { token: String, key: String },
    #[error("bad signature")]
    Signature,
    #[error("expired")]
    Expired,
    #[error("not yet valid (nbf)")]
    NotYetValid,
    #[error("issued in the future (iat)")]
    IssuedInFuture,
    #[error("audience is not this proxy's")]
    Audience,
    #[error("issuer does not match")]
    Issuer,
    #[error("claim {0} missing")]
    MissingClaim(String),
    #[error("claim {0} does not have a required value")]
    ClaimMismatch(String),
    #[error("claim {0} is not a non-empty string")]
    NoUser(String),
    #[error("nonce does not match this login")]
    Nonce,
}

impl IdTokenError {
    /// A short label for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            IdTokenError::TooLarge => "too_large",
            IdTokenError::Malformed => "malformed",
            IdTokenError::Algorithm(_) => "algorithm",
            IdTokenError::UnknownIssuer(_) => "unknown_issuer",
            IdTokenError::UnknownKey(_) => "unknown_key",
            IdTokenError::Unavailable => "issuer_unavailable",
            IdTokenError::AlgorithmMismatch { .. } => "algorithm_mismatch",
            IdTokenError::Signature => "signature",
            IdTokenError::Expired => "expired",
            IdTokenError::NotYetValid => "not_yet_valid",
            IdTokenError::IssuedInFuture => "issued_in_future",
            IdTokenError::Audience => "audience",
            IdTokenError::Issuer => "issuer",
            IdTokenError::MissingClaim(_) => "missing_claim",
            IdTokenError::ClaimMismatch(_) => "claim_mismatch",
            IdTokenError::NoUser(_) => "no_user",
            IdTokenError::Nonce => "nonce",
        }
    }
}

/// A token whose signature and times checked out.
#[derive(Debug, Clone)]
pub struct Verified {
    pub claims: Map<String, Value>,
    pub exp: u64,
    pub kid: Option<String>,
}

/// Whether `s` has the shape of a JWS (three base64url parts): only then
/// is a password tried as an ID token.
pub fn looks_like_jwt(s: &str) -> bool {
    s.starts_with("eyJ") && s.bytes().filter(|&b| b == b'.').count() == 2
}

/// The `iss` a token claims, unverified: which issuer's keys to try.
pub fn claimed_issuer(token: &str) -> Result<String, IdTokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(IdTokenError::TooLarge);
    }
    let payload = token.split('.').nth(1).ok_or(IdTokenError::Malformed)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| IdTokenError::Malformed)?;
    #[derive(serde::Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    let iss: Iss = serde_json::from_slice(&bytes).map_err(|_| IdTokenError::Malformed)?;
    iss.iss.ok_or(IdTokenError::MissingClaim("iss".into()))
}

/// Verifies `token` as issued by `keys`'s issuer for one of `audience`.
pub async fn verify(
    token: &str,
    keys: &IssuerKeys,
    audience: &[String],
    leeway: Duration,
) -> Result<Verified, IdTokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(IdTokenError::TooLarge);
    }
    let header = decode_header(token).map_err(|e| match e.kind() {
        // `none` and other names the crate does not know
        ErrorKind::Json(_) => algorithm_of_header(token)
            .map(IdTokenError::Algorithm)
            .unwrap_or(IdTokenError::Malformed),
        _ => IdTokenError::Malformed,
    })?;
    let key = keys
        .key_for(header.kid.as_deref())
        .await
        .map_err(|e| match e {
            KeyError::Unknown => IdTokenError::UnknownKey(header.kid.clone()),
            KeyError::Unavailable => IdTokenError::Unavailable,
        })?;
    if header.alg != key.alg {
        return Err(IdTokenError::AlgorithmMismatch {
            token: format!("{:?}", header.alg),
            key: format!("{:?}", key.alg),
        });
    }
    let mut v = Validation::new(key.alg);
    v.leeway = leeway.as_secs();
    v.set_issuer(&[keys.issuer()]);
    v.set_audience(audience);
    v.set_required_spec_claims(&["exp", "iss", "aud"]);
    v.validate_nbf = true;
    let data = decode::<Map<String, Value>>(token, &key.key, &v).map_err(|e| match e.kind() {
        ErrorKind::InvalidSignature => IdTokenError::Signature,
        ErrorKind::ExpiredSignature => IdTokenError::Expired,
        ErrorKind::ImmatureSignature => IdTokenError::NotYetValid,
        ErrorKind::InvalidAudience => IdTokenError::Audience,
        ErrorKind::InvalidIssuer => IdTokenError::Issuer,
        ErrorKind::MissingRequiredClaim(c) => IdTokenError::MissingClaim(c.clone()),
        _ => IdTokenError::Malformed,
    })?;
    let claims = data.claims;
    let now = jsonwebtoken::get_current_timestamp();
    if claims
        .get("iat")
        .and_then(Value::as_u64)
        .is_some_and(|iat| iat > now + leeway.as_secs())
    {
        return Err(IdTokenError::IssuedInFuture);
    }
    let exp = claims
        .get("exp")
        .and_then(Value::as_u64)
        .ok_or(IdTokenError::MissingClaim("exp".into()))?;
    Ok(Verified {
        claims,
        exp,
        kid: header.kid,
    })
}

/// The raw `alg` of a header the crate would not parse, for the log.
fn algorithm_of_header(token: &str) -> Option<String> {
    let head = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head)
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    let alg = v.get("alg")?.as_str()?;
    Some(alg.chars().take(16).collect())
}

/// The user and groups `claims` map to, if the required claims match.
pub fn map_claims(
    claims: &Map<String, Value>,
    mapping: &ClaimMapping,
) -> Result<(String, Vec<String>), IdTokenError> {
    for (name, accepted) in &mapping.required_claims {
        let value = claims
            .get(name)
            .ok_or_else(|| IdTokenError::MissingClaim(name.clone()))?;
        if !accepted.0.iter().any(|a| a.matches(value)) {
            return Err(IdTokenError::ClaimMismatch(name.clone()));
        }
    }
    let user = claims
        .get(&mapping.user_claim)
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty() && !u.chars().any(char::is_control))
        .ok_or_else(|| IdTokenError::NoUser(mapping.user_claim.clone()))?;
    let mut groups: Vec<String> = match mapping.groups_claim.as_ref().and_then(|c| claims.get(c)) {
        Some(Value::String(g)) => vec![g.clone()],
        Some(Value::Array(gs)) => gs
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    groups.extend(mapping.groups.iter().cloned());
    groups.sort();
    groups.dedup();
    Ok((format!("{}{user}", mapping.user_prefix), groups))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::oidc::{ClaimValue, ClaimValues};

    fn mapping() -> ClaimMapping {
        ClaimMapping {
            user_claim: "sub".into(),
            user_prefix: "ci:".into(),
            groups_claim: Some("groups".into()),
            required_claims: [(
                "ref".to_owned(),
                ClaimValues(vec![ClaimValue::String("refs/heads/main".into())]),
            )]
            .into(),
            groups: vec!["ci".into()],
        }
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn claims_map_to_a_prefixed_user_and_groups() {
        let (user, groups) = map_claims(
            &claims(serde_json::json!({"sub": "repo:acme/app", "ref": "refs/heads/main", "groups": ["b", "a"]})),
            &mapping(),
        )
        .unwrap();
        assert_eq!(user, "ci:repo:acme/app");
        assert_eq!(groups, ["a", "b", "ci"]);
        let one = map_claims(
            &claims(serde_json::json!({"sub": "x", "ref": "refs/heads/main", "groups": "solo"})),
            &mapping(),
        )
        .unwrap();
        assert_eq!(one.1, ["ci", "solo"]);
    }

    #[test]
    fn required_claims_and_the_user_claim_are_enforced() {
        let m = mapping();
        assert_eq!(
            map_claims(&claims(serde_json::json!({"sub": "x"})), &m),
            Err(IdTokenError::MissingClaim("ref".into()))
        );
        assert_eq!(
            map_claims(
                &claims(serde_json::json!({"sub": "x", "ref": "refs/heads/dev"})),
                &m
            ),
            Err(IdTokenError::ClaimMismatch("ref".into()))
        );
        assert_eq!(
            map_claims(
                &claims(serde_json::json!({"sub": 5, "ref": "refs/heads/main"})),
                &m
            ),
            Err(IdTokenError::NoUser("sub".into()))
        );
        assert_eq!(
            map_claims(
                &claims(serde_json::json!({"sub": "a\nb", "ref": "refs/heads/main"})),
                &m
            ),
            Err(IdTokenError::NoUser("sub".into()))
        );
    }

    #[test]
    fn only_jws_shaped_passwords_are_tried() {
        assert!(looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0.c2ln"));
        assert!(!looks_like_jwt("pcat_0123456789ab_secret"));
        assert!(!looks_like_jwt("eyJ.only-one-dot"));
        assert_eq!(
            claimed_issuer("eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0.c2ln").unwrap(),
            "x"
        );
        assert_eq!(
            claimed_issuer("eyJhbGciOiJSUzI1NiJ9.!!!.c2ln"),
            Err(IdTokenError::Malformed)
        );
        let big = format!("eyJ.{}.x", "a".repeat(MAX_TOKEN_BYTES));
        assert_eq!(claimed_issuer(&big), Err(IdTokenError::TooLarge));
    }
}
