//! The token endpoint's requests and responses: `GET` as in distribution's
//! docs/spec/auth/token.md, `POST` (OAuth2 form) as in oauth.md.
//!
//! Errors are answered `400` with an OAuth2 body (RFC 6749 §5.2) that also
//! carries `details`, the field Docker's client prints for token endpoint
//! errors: `{"error":"invalid_request","error_description":D,"details":D}`.

use std::fmt;

use percent_encoding::percent_decode;
use serde::Serialize;

use super::jwt::Issued;
use super::scope::{parse_scope_list, scope_string, Access, Scope, ScopeError};

/// The largest POST body worth reading (a form with a password, a refresh
/// token and a few scopes is a few KiB).
pub const MAX_FORM_BODY: usize = 64 * 1024;

/// How the client proves who it is.
#[derive(Clone, PartialEq, Eq)]
pub enum Grant {
    /// `GET`: Basic credentials in the `Authorization` header, or none
    /// (anonymous).
    Header,
    /// `POST grant_type=password`.
    Password { username: String, password: String },
    /// `POST grant_type=refresh_token`.
    RefreshToken(String),
}

impl fmt::Debug for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Grant::Header => f.write_str("Header"),
            Grant::Password { username, .. } => f
                .debug_struct("Password")
                .field("username", username)
                .finish_non_exhaustive(),
            Grant::RefreshToken(_) => f.write_str("RefreshToken(..)"),
        }
    }
}

/// A parsed token request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    pub grant: Grant,
    /// Should be our service; the spec makes it required for POST, but
    /// whether its absence is refused is the caller's policy.
    pub service: Option<String>,
    /// Empty for `docker login` (and for a refresh token without access).
    pub scopes: Vec<Scope>,
    pub client_id: Option<String>,
    /// `GET ?account=`: the user name the client claims (informational;
    /// the credentials decide).
    pub account: Option<String>,
    /// `offline_token=true` (GET) or `access_type=offline` (POST): answer
    /// with a refresh token too.
    pub offline: bool,
}

/// Why a token request is malformed. Maps to `400`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("request is not valid UTF-8 form encoding")]
    Encoding,
    #[error("request body too large")]
    TooLarge,
    #[error("parameter {0} given more than once")]
    Duplicate(&'static str),
    #[error("missing parameter {0}")]
    Missing(&'static str),
    #[error("invalid value for {0}")]
    Invalid(&'static str),
    #[error("unsupported grant_type (use password or refresh_token)")]
    UnsupportedGrant,
    #[error("invalid scope {scope:?}: {reason}")]
    Scope { scope: String, reason: ScopeError },
}

impl EndpointError {
    pub fn status(&self) -> u16 {
        400
    }

    /// The RFC 6749 §5.2 error code.
    pub fn oauth_code(&self) -> &'static str {
        match self {
            EndpointError::UnsupportedGrant => "unsupported_grant_type",
            EndpointError::Scope { .. } => "invalid_scope",
            _ => "invalid_request",
        }
    }

    /// The JSON body of the `400` answer.
    pub fn body(&self) -> String {
        oauth_error_body(self.oauth_code(), &self.to_string())
    }
}

/// An OAuth2 error body, with `details` for Docker's client. Also for
/// refused grants: `oauth_error_body("invalid_grant", &err.to_string())`
/// for a bad password or refresh token (sent with `401`, which Docker's
/// client reports as "unauthorized", rather than RFC 6749's `400`).
pub fn oauth_error_body(code: &str, description: &str) -> String {
    serde_json::json!({
        "error": code,
        "error_description": description,
        "details": description,
    })
    .to_string()
}

/// The parameters of a query string or form body, strictly decoded:
/// `+` is a space, `%XX` must decode to valid UTF-8 (no lossy
/// replacement, so two different byte strings never become one password).
fn form_pairs(input: &[u8]) -> Result<Vec<(String, String)>, EndpointError> {
    let decode = |s: &[u8]| -> Result<String, EndpointError> {
        let plus: Vec<u8> = s
            .iter()
            .map(|&b| if b == b'+' { b' ' } else { b })
            .collect();
        let bytes: Vec<u8> = percent_decode(&plus).collect();
        String::from_utf8(bytes).map_err(|_| EndpointError::Encoding)
    };
    input
        .split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = match pair.iter().position(|&b| b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &b""[..]),
            };
            Ok((decode(k)?, decode(v)?))
        })
        .collect()
}

/// Collects single-valued parameters (refusing repeats) and the scopes.
#[derive(Default)]
struct Params {
    single: Vec<(&'static str, String)>,
    scopes: Vec<Scope>,
}

impl Params {
    fn parse(input: &[u8], singles: &[&'static str]) -> Result<Params, EndpointError> {
        let mut p = Params::default();
        for (k, v) in form_pairs(input)? {
            if k == "scope" {
                // one scope per GET parameter, a list in POST; accept both
                let scopes = parse_scope_list(&v).map_err(|reason| EndpointError::Scope {
                    scope: v.chars().take(100).collect(),
                    reason,
                })?;
                p.scopes.extend(scopes);
            } else if let Some(name) = singles.iter().find(|s| **s == k) {
                if p.get(name).is_some() {
                    return Err(EndpointError::Duplicate(name));
                }
                p.single.push((name, v));
            }
            // unknown parameters are ignored, as OAuth2 servers do
        }
        Ok(p)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.single
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    fn take(&mut self, name: &str) -> Option<String> {
        let i = self.single.iter().position(|(k, _)| *k == name)?;
        Some(self.single.swap_remove(i).1)
    }
}

/// Parses the query of `GET /token?service=…&scope=…&offline_token=true`.
pub fn parse_get(query: &str) -> Result<TokenRequest, EndpointError> {
    let mut p = Params::parse(
        query.as_bytes(),
        &["service", "offline_token", "client_id", "account"],
    )?;
    let offline = match p.get("offline_token") {
        None => false,
        Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => true,
        Some(v) if v.eq_ignore_ascii_case("false") || v == "0" || v.is_empty() => false,
        Some(_) => return Err(EndpointError::Invalid("offline_token")),
    };
    Ok(TokenRequest {
        grant: Grant::Header,
        service: p.take("service"),
        client_id: p.take("client_id"),
        account: p.take("account"),
        scopes: p.scopes,
        offline,
    })
}

/// Parses the `application/x-www-form-urlencoded` body of `POST /token`.
pub fn parse_post(form_body: &[u8]) -> Result<TokenRequest, EndpointError> {
    if form_body.len() > MAX_FORM_BODY {
        return Err(EndpointError::TooLarge);
    }
    let mut p = Params::parse(
        form_body,
        &[
            "grant_type",
            "service",
            "client_id",
            "access_type",
            "username",
            "password",
            "refresh_token",
        ],
    )?;
    let grant = match p.get("grant_type") {
        None => return Err(EndpointError::Missing("grant_type")),
        Some("password") => Grant::Password {
            username: p
                .take("username")
                .ok_or(EndpointError::Missing("username"))?,
            password: p
                .take("password")
                .ok_or(EndpointError::Missing("password"))?,
        },
        Some("refresh_token") => {
            let token = p
                .take("refresh_token")
                .filter(|t| !t.is_empty())
                .ok_or(EndpointError::Missing("refresh_token"))?;
            Grant::RefreshToken(token)
        }
        Some(_) => return Err(EndpointError::UnsupportedGrant),
    };
    let offline = match p.get("access_type") {
        None | Some("online") | Some("") => false,
        Some("offline") => true,
        Some(_) => return Err(EndpointError::Invalid("access_type")),
    };
    Ok(TokenRequest {
        grant,
        service: p.take("service"),
        client_id: p.take("client_id"),
        account: None,
        scopes: p.scopes,
        offline,
    })
}

/// The `200` body. `token` and `access_token` are the same (older Docker
/// clients read the first, OAuth2 clients the second).
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct TokenResponse {
    pub token: String,
    pub access_token: String,
    pub expires_in: u64,
    pub issued_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The granted scope; oauth.md requires it in POST answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl TokenResponse {
    pub fn new(issued: Issued, refresh_token: Option<String>) -> Self {
        TokenResponse {
            access_token: issued.token.clone(),
            token: issued.token,
            expires_in: issued.expires_in,
            issued_at: issued.issued_at,
            refresh_token,
            scope: None,
        }
    }

    /// Adds the OAuth2 `scope` field for what was granted.
    pub fn with_scope(mut self, granted: &[Access]) -> Self {
        self.scope = Some(scope_string(granted));
        self
    }

    pub fn to_json(&self) -> String {
        // a struct of strings and integers always serializes
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("expires_in", &self.expires_in)
            .field("issued_at", &self.issued_at)
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| ".."))
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// `Bearer realm="…",service="…"[,scope="…"][,error="…"]`, the challenge
/// that sends a client to the token endpoint (and, with
/// `error="insufficient_scope"` or `"invalid_token"`, tells it why).
pub fn bearer_challenge(
    realm: &str,
    service: &str,
    scope: Option<&str>,
    error: Option<&str>,
) -> String {
    let q = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut out = format!("Bearer realm=\"{}\",service=\"{}\"", q(realm), q(service));
    if let Some(scope) = scope {
        out.push_str(&format!(",scope=\"{}\"", q(scope)));
    }
    if let Some(error) = error {
        out.push_str(&format!(",error=\"{}\"", q(error)));
    }
    out
}

#[cfg(test)]
mod tests;
