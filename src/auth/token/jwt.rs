//! Issuing and checking tokens: short-lived access tokens registry:2
//! accepts, and refresh tokens only the token endpoint accepts.
//!
//! The header carries `kid` (the libtrust key id distribution 2.8 looks
//! keys up by) and `x5c` (the signing certificate). registry:2 prefers
//! `x5c` when present and verifies it against its `rootcertbundle`; that
//! path works for distribution 2.x and 3.x alike, while 3.x no longer
//! computes `kid` the libtrust way. [`TokenIssuer::with_x5c`] turns it off.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Header, Validation};
use serde::{Deserialize, Serialize};

use super::keys::KeySet;
use super::public::{Algorithm, VerificationKey};
use super::scope::Access;

/// Clock skew tolerated on `exp` and `nbf` (registry:2 allows 60 s).
pub const LEEWAY: Duration = Duration::from_secs(30);
/// The floor on lifetimes, against a configured zero. The token spec asks
/// for at least 60 s ("for compatibility with older clients"); shorter
/// lifetimes are the configuration's choice (tests use them).
pub const MIN_LIFETIME: Duration = Duration::from_secs(5);
/// Longer than any token we issue (an `x5c` header makes one ~1.5 KiB).
const MAX_TOKEN_LEN: usize = 16 * 1024;
/// The `token_use` claim of refresh tokens.
const REFRESH_USE: &str = "refresh";

/// The claims of our tokens. Access tokens have exactly distribution's
/// `token.ClaimSet`; refresh tokens add `token_use` and have an audience of
/// `<service>#refresh`, which registry:2 refuses as a bearer token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    #[serde(default)]
    pub access: Vec<Access>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_use: Option<String>,
    /// Access tokens: the subject's groups (those the rules name) when
    /// the token was issued, so every request can be checked against the
    /// current rules from its own address (registry:2 ignores the claim).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Refresh tokens: a fingerprint of the credential they were minted
    /// with; a password change makes it differ (see [`fingerprint`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cfp: Option<String>,
    /// Access tokens minted from an `[auth.tokens]` access token: its id,
    /// so revoking it revokes them (see [`super::revocation`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<String>,
    /// The issue time in Unix milliseconds: `iat` has whole seconds, and a
    /// revocation must not also catch the tokens issued later in its second
    /// (a login right after a password change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat_ms: Option<u64>,
}

/// The fingerprint of a user's credential stamp (the htpasswd hash, the
/// directory's password-change time) that a refresh token carries: a
/// domain-separated SHA-256, so a token reveals nothing usable of the
/// hash (bcrypt's salt stays unknown) and a changed password changes it.
pub fn fingerprint(user: &str, stamp: Option<&str>) -> String {
    use base64::Engine;
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"portcullis refresh credential v1\0");
    h.update((user.len() as u64).to_be_bytes());
    h.update(user.as_bytes());
    match stamp {
        Some(s) => {
            h.update([1]);
            h.update(s.as_bytes());
        }
        None => h.update([0]),
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&h.finalize()[..16])
}

/// A freshly issued access token and what the token response says of it.
#[derive(Clone, PartialEq, Eq)]
pub struct Issued {
    pub token: String,
    /// Seconds.
    pub expires_in: u64,
    /// RFC 3339, UTC.
    pub issued_at: String,
    /// Unix seconds.
    pub expires_at: u64,
    pub jti: String,
}

/// Without the token: it is a bearer credential, not for logs.
impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("expires_in", &self.expires_in)
            .field("issued_at", &self.issued_at)
            .field("jti", &self.jti)
            .finish_non_exhaustive()
    }
}

/// Why a token is refused. The messages are fit for `error_description`:
/// they never contain the token, keys or claims.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("token algorithm not accepted")]
    Algorithm,
    #[error("token signed by an unknown key")]
    UnknownKey,
    #[error("invalid token signature")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token lacks a required claim")]
    MissingClaim,
    #[error("token was issued by another issuer")]
    WrongIssuer,
    #[error("token was issued for another service")]
    WrongAudience,
    #[error("a refresh token cannot be used as an access token")]
    RefreshAsAccess,
    #[error("an access token cannot be used as a refresh token")]
    AccessAsRefresh,
    #[error("cannot sign the token")]
    Signing,
}

impl TokenError {
    /// A short, bounded label for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed",
            TokenError::Algorithm => "algorithm",
            TokenError::UnknownKey => "unknown_key",
            TokenError::BadSignature => "bad_signature",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::MissingClaim => "missing_claim",
            TokenError::WrongIssuer => "wrong_issuer",
            TokenError::WrongAudience => "wrong_audience",
            TokenError::RefreshAsAccess => "refresh_as_access",
            TokenError::AccessAsRefresh => "access_as_refresh",
            TokenError::Signing => "signing",
        }
    }
}

/// Signs and verifies tokens for one issuer and one service.
#[derive(Debug)]
pub struct TokenIssuer {
    keys: KeySet,
    issuer: String,
    service: String,
    lifetime: Duration,
    refresh_lifetime: Duration,
    x5c: bool,
}

impl TokenIssuer {
    /// `issuer` and `service` must be the registry's `auth.token.issuer`
    /// and `auth.token.service`. Refresh tokens live 7 days unless
    /// [`with_refresh_lifetime`](Self::with_refresh_lifetime) says otherwise.
    pub fn new(
        keys: KeySet,
        issuer: impl Into<String>,
        service: impl Into<String>,
        lifetime: Duration,
    ) -> Self {
        TokenIssuer {
            keys,
            issuer: issuer.into(),
            service: service.into(),
            lifetime: lifetime.max(MIN_LIFETIME),
            refresh_lifetime: Duration::from_secs(7 * 24 * 3600),
            x5c: true,
        }
    }

    pub fn with_refresh_lifetime(mut self, lifetime: Duration) -> Self {
        self.refresh_lifetime = lifetime.max(MIN_LIFETIME);
        self
    }

    /// Whether tokens carry the signing certificate (`x5c`, default on).
    /// Without it registry:2 2.x finds the key by `kid` in its bundle.
    pub fn with_x5c(mut self, x5c: bool) -> Self {
        self.x5c = x5c;
        self
    }

    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    /// The default access token lifetime.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    pub fn refresh_lifetime(&self) -> Duration {
        self.refresh_lifetime
    }

    fn refresh_audience(&self) -> String {
        format!("{}#refresh", self.service)
    }

    /// Issues an access token for `sub` granting `access` (already the
    /// intersection of what was asked and what the ACL allows). The
    /// lifetime is raised to [`MIN_LIFETIME`] if shorter.
    pub fn issue(
        &self,
        sub: &str,
        access: Vec<Access>,
        lifetime: Duration,
    ) -> Result<Issued, TokenError> {
        self.issue_for(sub, Vec::new(), None, access, lifetime)
    }

    /// [`issue`](Self::issue) for a subject in `groups`, recorded in the
    /// token for the per-request check of the rules; `tid` is the access
    /// token the subject logged in with, if any.
    pub fn issue_for(
        &self,
        sub: &str,
        groups: Vec<String>,
        tid: Option<String>,
        access: Vec<Access>,
        lifetime: Duration,
    ) -> Result<Issued, TokenError> {
        let now_ms = unix_now_ms();
        let now = now_ms / 1000;
        let lifetime = lifetime.max(MIN_LIFETIME).as_secs();
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: sub.to_owned(),
            aud: self.service.clone(),
            exp: now + lifetime,
            nbf: now,
            iat: now,
            jti: new_jti(),
            access,
            token_use: None,
            groups,
            cfp: None,
            tid,
            iat_ms: Some(now_ms),
        };
        let token = self.sign(&claims)?;
        Ok(Issued {
            token,
            expires_in: lifetime,
            issued_at: rfc3339(now),
            expires_at: claims.exp,
            jti: claims.jti,
        })
    }

    /// Issues a refresh token for `sub`: it grants nothing by itself, only
    /// new access tokens from the token endpoint.
    pub fn issue_refresh(&self, sub: &str, lifetime: Duration) -> Result<String, TokenError> {
        self.issue_refresh_for(sub, None, lifetime)
    }

    /// A refresh token bound to the credential it was minted with: `cfp`
    /// is [`fingerprint`] of the user's credential stamp.
    pub fn issue_refresh_for(
        &self,
        sub: &str,
        cfp: Option<String>,
        lifetime: Duration,
    ) -> Result<String, TokenError> {
        let now_ms = unix_now_ms();
        let now = now_ms / 1000;
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: sub.to_owned(),
            aud: self.refresh_audience(),
            exp: now + lifetime.max(MIN_LIFETIME).as_secs(),
            nbf: now,
            iat: now,
            jti: new_jti(),
            access: Vec::new(),
            token_use: Some(REFRESH_USE.to_owned()),
            groups: Vec::new(),
            cfp,
            tid: None,
            iat_ms: Some(now_ms),
        };
        self.sign(&claims)
    }

    fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        let key = self.keys.signing();
        let mut header = Header::new(key.algorithm().jwt());
        header.kid = Some(key.kid().to_owned());
        if self.x5c {
            let b64 = base64::engine::general_purpose::STANDARD;
            header.x5c = Some(vec![b64.encode(key.cert_der())]);
        }
        jsonwebtoken::encode(&header, claims, key.encoding()).map_err(|_| TokenError::Signing)
    }

    /// Checks an access token: signature, algorithm, time, issuer, audience.
    /// What it grants is for [`covers`] to decide.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let claims = self.decode(token)?;
        if claims.token_use.is_some() || claims.aud == self.refresh_audience() {
            return Err(TokenError::RefreshAsAccess);
        }
        if claims.aud != self.service {
            return Err(TokenError::WrongAudience);
        }
        Ok(claims)
    }

    /// Checks a refresh token and returns its subject. The caller should
    /// still check that the user exists: refresh tokens are not stored, so
    /// removing a user is what revokes them.
    pub fn verify_refresh(&self, token: &str) -> Result<String, TokenError> {
        self.verify_refresh_claims(token).map(|c| c.sub)
    }

    /// [`verify_refresh`](Self::verify_refresh) with all the claims (the
    /// credential fingerprint among them).
    pub fn verify_refresh_claims(&self, token: &str) -> Result<Claims, TokenError> {
        let claims = self.decode(token)?;
        let is_refresh = claims.token_use.as_deref() == Some(REFRESH_USE);
        if claims.aud == self.service && !is_refresh {
            return Err(TokenError::AccessAsRefresh);
        }
        if claims.aud != self.refresh_audience() {
            return Err(TokenError::WrongAudience);
        }
        if !is_refresh {
            return Err(TokenError::AccessAsRefresh);
        }
        Ok(claims)
    }

    /// Signature, algorithm, `exp`/`nbf` and `iss`; not the audience.
    fn decode(&self, token: &str) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let (alg, kid) = header_alg_kid(token)?;
        let keys = self.keys.verification_keys();
        let candidates: Vec<&VerificationKey> =
            match kid.as_deref().and_then(|k| self.keys.by_kid(k)) {
                // the key named by kid, and only if alg is that key's
                Some(k) if k.algorithm() == alg => vec![k],
                Some(_) => return Err(TokenError::Algorithm),
                // no or unknown kid: every key of that algorithm
                None => keys.iter().filter(|k| k.algorithm() == alg).collect(),
            };
        if candidates.is_empty() {
            return Err(if keys.iter().any(|k| k.algorithm() == alg) {
                TokenError::UnknownKey
            } else {
                TokenError::Algorithm
            });
        }
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, key.decoding(), &validation(alg)) {
                Ok(data) => {
                    if data.claims.iss != self.issuer {
                        return Err(TokenError::WrongIssuer);
                    }
                    return Ok(data.claims);
                }
                Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => continue,
                Err(e) => return Err(map_error(e.kind())),
            }
        }
        Err(if kid.is_some_and(|k| self.keys.by_kid(&k).is_none()) {
            TokenError::UnknownKey
        } else {
            TokenError::BadSignature
        })
    }
}

/// The header's `alg` (one of ours, else refused: `none`, `HS256`, …) and
/// `kid`, read before any key is chosen.
/// The `kid` of a token's header (to bind a cache entry to its key).
pub fn header_kid(token: &str) -> Option<String> {
    header_alg_kid(token).ok().and_then(|(_, kid)| kid)
}

fn header_alg_kid(token: &str) -> Result<(Algorithm, Option<String>), TokenError> {
    #[derive(Deserialize)]
    struct RawHeader {
        alg: String,
        kid: Option<String>,
    }
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenError::Malformed)?;
    let raw: RawHeader = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
    let alg = raw.alg.parse().map_err(|_| TokenError::Algorithm)?;
    Ok((alg, raw.kid))
}

fn validation(alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg.jwt());
    v.leeway = LEEWAY.as_secs();
    v.validate_exp = true;
    v.validate_nbf = true;
    // checked by verify/verify_refresh, to tell the two kinds apart
    v.validate_aud = false;
    v.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
    v
}

fn map_error(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => TokenError::Algorithm,
        ErrorKind::MissingRequiredClaim(_) => TokenError::MissingClaim,
        ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        _ => TokenError::Malformed,
    }
}

/// Whether the token grants `action` on repository `repo`.
///
/// Like registry:2, the resource class is ignored (a `repository(plugin)`
/// grant covers the repository of that name) and `*` grants every action.
pub fn covers(claims: &Claims, repo: &str, action: &str) -> bool {
    covers_resource(claims, "repository", repo, action)
}

/// Whether the token grants `registry:catalog:*`, what `GET /v2/_catalog`
/// needs.
pub fn covers_catalog(claims: &Claims) -> bool {
    covers_resource(claims, "registry", "catalog", "*")
}

/// Whether the token grants `action` on the resource `kind:name`.
pub fn covers_resource(claims: &Claims, kind: &str, name: &str, action: &str) -> bool {
    claims.token_use.is_none()
        && claims.access.iter().any(|a| {
            a.kind == kind && a.name == name && a.actions.iter().any(|x| x == "*" || x == action)
        })
}

fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// 128 random bits: unique per token, for audit logs and replay tracking.
fn new_jti() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>())
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time (civil-from-days, H. Hinnant).
pub fn rfc3339(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests;
