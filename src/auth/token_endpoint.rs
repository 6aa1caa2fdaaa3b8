//! The token endpoint (`GET`/`POST /token`) of Docker token auth.
//!
//! A client asks for scopes; it gets a token for the intersection of what
//! it asked and what the access rules allow (a partial grant is not an
//! error, as in distribution's spec). `docker login` asks for no scope and
//! gets a token that only proves the login.
//!
//! This is the protocol's logic (who gets which token, when a refresh token
//! still stands); reading the request off the session is
//! `crate::http::token`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::authentication::basic::BasicCredentials;
use super::authentication::Credential;
use super::gate::{Gate, LoginOutcome};
use super::principal::Principal;
use super::refusal::Refusal;
use super::token::endpoint::{EndpointError, Grant, TokenRequest, TokenResponse};
use super::token::jwt::{self, TokenIssuer};
use super::token::scope::Access;
use crate::config::TokenConfig;
use crate::tls::client_auth::PeerCertificate;

pub struct Endpoint {
    pub path: String,
    pub service: String,
    realm: Option<String>,
    issuer: Arc<TokenIssuer>,
    lifetime: Duration,
    refresh_lifetime: Duration,
    lifetimes: BTreeMap<String, Duration>,
}

/// A token issued: the response JSON, and to whom.
pub struct Granted {
    pub json: String,
    pub principal: Principal,
}

/// Why no token was issued.
pub enum TokenFailure {
    /// `400` with an OAuth2 error body.
    BadRequest(EndpointError),
    Refused(Refusal),
}

impl From<Refusal> for TokenFailure {
    fn from(r: Refusal) -> Self {
        TokenFailure::Refused(r)
    }
}

impl Endpoint {
    pub fn new(cfg: &TokenConfig, issuer: Arc<TokenIssuer>) -> Self {
        Endpoint {
            path: cfg.path.clone(),
            service: cfg.service.clone(),
            realm: cfg.realm.as_ref().map(|u| u.to_string()),
            issuer,
            lifetime: cfg.lifetime,
            refresh_lifetime: cfg.refresh_lifetime,
            lifetimes: cfg
                .lifetimes
                .iter()
                .map(|(u, d)| (u.clone(), d.into_inner()))
                .collect(),
        }
    }

    /// The challenge's `realm`: configured, or this endpoint on the host
    /// the client used.
    pub fn realm(&self, public_origin: Option<&str>) -> String {
        match (&self.realm, public_origin) {
            (Some(r), _) => r.clone(),
            (None, Some(origin)) => format!("{origin}{}", self.path),
            (None, None) => self.path.clone(),
        }
    }

    /// Answers a token request; `header` holds the request's Basic
    /// credentials, if any, `peer` the connection's verified client
    /// certificate. The login outcome is for logs and metrics.
    pub async fn exchange(
        &self,
        gate: &Gate,
        request: TokenRequest,
        header: Option<BasicCredentials>,
        peer: Option<&PeerCertificate>,
        ip: IpAddr,
    ) -> (Result<Granted, TokenFailure>, Option<LoginOutcome>) {
        if request
            .service
            .as_deref()
            .is_some_and(|s| s != self.service)
        {
            return (
                Err(TokenFailure::BadRequest(EndpointError::Invalid("service"))),
                None,
            );
        }
        let (principal, outcome) = match &request.grant {
            // without credentials, a verified client certificate is the
            // login (the Docker engine in token mode sends none to /token)
            Grant::Header => match header {
                Some(c) => {
                    let (p, o) = gate.login(&c.user, &c.password, ip).await;
                    (p, Some(o))
                }
                None => match gate.certificate_user(peer) {
                    Some((p, o)) => (p, Some(o)),
                    None => (Ok(Principal::Anonymous), None),
                },
            },
            Grant::Password { username, password } => {
                let (p, o) = gate.login(username, password, ip).await;
                (p, Some(o))
            }
            Grant::RefreshToken(token) => (self.refresh(gate, token, ip).await, None),
        };
        let issued = match principal {
            Ok(p) => self
                .issue(gate, &p, &request, ip)
                .map_err(TokenFailure::from),
            Err(refusal) => Err(refusal.into()),
        };
        (issued, outcome)
    }

    /// A token for what `principal` asked and may have, with a refresh
    /// token when it asked for one and logged in with a password.
    fn issue(
        &self,
        gate: &Gate,
        principal: &Principal,
        request: &TokenRequest,
        ip: IpAddr,
    ) -> Result<Granted, Refusal> {
        let authorization = gate.authorization(principal, ip);
        let granted = authorization.grant(&request.scopes);
        let user = principal.user().map(str::to_owned);
        let lifetime = user
            .as_ref()
            .and_then(|u| self.lifetimes.get(u))
            .copied()
            .unwrap_or(self.lifetime);
        let subject = user.clone().unwrap_or_default();
        // the groups the rules may ask about when the token is used
        let groups = authorization.token_groups();
        // what revoking the access token it logged in with revokes
        let tid = match principal {
            Principal::User { identity, .. } => identity.access_token_id().map(str::to_owned),
            _ => None,
        };
        // never past the expiry of the access token or ID token it was
        // minted from
        let left = match principal {
            Principal::User { identity, .. } => match &identity.credential {
                Credential::IdToken { expires, .. } => {
                    Some(crate::auth::authentication::oidc::remaining(*expires))
                }
                _ => None,
            },
            _ => None,
        }
        .or_else(|| {
            tid.as_deref()
                .and_then(|id| gate.access_token_remaining(id))
        });
        let lifetime = match left {
            Some(left) => lifetime.min(left),
            None => lifetime,
        };
        let issued = self
            .issuer
            .issue_for(&subject, groups, tid, granted.clone(), lifetime)
            .map_err(|e| {
                tracing::error!(target: "auth", error = %e, "cannot issue a token");
                Refusal::Unavailable
            })?;
        // No refresh token for an access-token login: the client keeps
        // the access token and shows it again, so its revocation and
        // expiry apply at once.
        let refresh = match (principal, request.offline) {
            (Principal::User { identity, .. }, true)
                if identity.credential == Credential::Password =>
            {
                let cfp = jwt::fingerprint(&identity.user, identity.credential_stamp.as_deref());
                self.issuer
                    .issue_refresh_for(&identity.user, Some(cfp), self.refresh_lifetime)
                    .ok()
            }
            _ => None,
        };
        crate::observe::metrics::metrics().tokens_issued.inc();
        tracing::info!(
            target: "auth",
            user = user.as_deref().unwrap_or("-"),
            client = %ip,
            scope = %wire_scope(&granted),
            jti = %issued.jti,
            "token issued"
        );
        let json = TokenResponse::new(issued, refresh)
            .with_scope(&granted)
            .to_json();
        Ok(Granted {
            json,
            principal: principal.clone(),
        })
    }

    /// A refresh token stands for its user as long as the user still
    /// exists with the credential it was minted with (a password change
    /// ends it); what it may do is decided again by the current rules.
    async fn refresh(&self, gate: &Gate, token: &str, ip: IpAddr) -> Result<Principal, Refusal> {
        let claims = self.issuer.verify_refresh_claims(token).map_err(|e| {
            tracing::info!(target: "auth", client = %ip, reason = e.as_str(), "refresh token refused");
            Refusal::InvalidToken
        })?;
        if let Some(reason) = gate.revoked(&claims) {
            tracing::info!(target: "auth", user = %claims.sub, client = %ip, reason, "refresh token refused: revoked");
            return Err(Refusal::InvalidToken);
        }
        let sub = claims.sub;
        // the user must still exist; directory groups are looked up again
        let Some(identity) = gate.identity_of(&sub).await else {
            tracing::info!(target: "auth", user = %sub, "refresh token of a removed user");
            return Err(Refusal::InvalidToken);
        };
        // the directory's own spelling must still be the token's
        if identity.user != sub {
            tracing::info!(target: "auth", user = %sub, "refresh token of a renamed user");
            return Err(Refusal::InvalidToken);
        }
        let now = jwt::fingerprint(&identity.user, identity.credential_stamp.as_deref());
        if claims.cfp.as_deref() != Some(now.as_str()) {
            tracing::info!(target: "auth", user = %sub, client = %ip, "refresh token minted before a password change");
            return Err(Refusal::InvalidToken);
        }
        Ok(gate.user_principal(Arc::new(identity)))
    }
}

fn wire_scope(granted: &[Access]) -> String {
    super::token::scope::scope_string(granted)
}
