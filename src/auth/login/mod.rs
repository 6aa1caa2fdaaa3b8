//! The browser login (`[auth.oidc.login]`): the OpenID Connect
//! authorization code flow with PKCE, a `state` and a `nonce`, ending in
//! a new access token of `[auth.tokens]` and the `docker login` line to
//! use it with.
//!
//! The flow keeps no session of its own: `/login` remembers the login
//! under its `state` for ten minutes, bound to the browser by a cookie
//! (`__Host-`, HttpOnly, Secure, SameSite=Lax) whose hash only the proxy
//! holds; the callback consumes it once. The token is then tied to the
//! person's provider session ([`sessions`]), which the background refresh
//! renews every `refresh_interval`: a refusal by the provider, or claims
//! that no longer map to an allowed user, revoke it.

pub mod sessions;

use base64::Engine;
use oauth2::basic::{
    BasicErrorResponse, BasicErrorResponseType, BasicRevocationErrorResponse,
    BasicTokenIntrospectionResponse, BasicTokenType,
};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError,
    StandardRevocableToken, StandardTokenResponse, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use subtle::ConstantTimeEq;

use crate::auth::authentication::oidc::keys::{Discovery, IssuerKeys};
use crate::auth::authentication::oidc::verify::{self, IdTokenError};
use crate::auth::authentication::Authenticator;
use crate::auth::token::revocation::{RevocationFile, RevocationList, Target};
use crate::config::oidc::{ClaimMapping, LoginConfig};
use crate::observe::audit::{AuditEvent, AuditLog};
use sessions::{Session, Sessions};

/// The cookie that binds a login to the browser that started it.
pub const COOKIE: &str = "__Host-portcullis-login";
/// How long a started login may take at the provider.
const PENDING_FOR: Duration = Duration::from_secs(600);

/// The token endpoint's answer, with the ID token OpenID Connect adds.
#[derive(Clone, Serialize, Deserialize)]
pub struct IdTokenFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id_token: Option<String>,
}

impl std::fmt::Debug for IdTokenFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdTokenFields(..)")
    }
}

impl oauth2::ExtraTokenFields for IdTokenFields {}

type OidcTokenResponse = StandardTokenResponse<IdTokenFields, BasicTokenType>;
type Client = oauth2::Client<
    BasicErrorResponse,
    OidcTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// Why a login did not give a token. The page says which, in words a
/// person can act on; the log has the detail.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("the identity provider cannot be reached")]
    Unavailable,
    #[error("the identity provider's discovery document has no {0}")]
    Discovery(&'static str),
    #[error("this login link is unknown or was used already: start again")]
    UnknownState,
    #[error("this login was started in another browser: start again")]
    Binding,
    #[error("the request is missing {0}")]
    BadRequest(&'static str),
    #[error("the identity provider refused the login ({0})")]
    Provider(String),
    #[error("the code could not be exchanged: {0}")]
    Exchange(String),
    #[error("the identity provider gave no ID token")]
    NoIdToken,
    #[error("the ID token was refused: {0}")]
    IdToken(IdTokenError),
    #[error("your account may not use this registry ({0})")]
    NotAllowed(IdTokenError),
    #[error("the token could not be saved")]
    Save(String),
}

impl LoginError {
    /// The HTTP status of the page.
    pub fn status(&self) -> u16 {
        match self {
            LoginError::Unavailable | LoginError::Discovery(_) => 503,
            LoginError::Exchange(_) | LoginError::Save(_) => 502,
            LoginError::NotAllowed(_) => 403,
            LoginError::IdToken(_) | LoginError::NoIdToken => 401,
            _ => 400,
        }
    }
}

/// A login in progress, under its `state`.
struct Pending {
    binding: [u8; 32],
    nonce: String,
    verifier: String,
    lifetime: Duration,
}

/// Where `/login` sends the browser, and the cookie value it sets.
pub struct Started {
    pub location: String,
    pub binding: String,
}

/// A finished login: the new token, shown once.
pub struct LoggedIn {
    pub user: String,
    pub groups: Vec<String>,
    pub token_name: String,
    pub secret: String,
    pub expires: String,
}

/// What a refresh of one session found.
enum Refreshed {
    /// The person is still who they were, in these groups now.
    Ok {
        refresh_token: Option<String>,
        groups: Option<Vec<String>>,
    },
    /// The token must go.
    Revoke(String),
    /// The provider could not be asked; try again next round.
    Failed(String),
}

pub struct Login {
    cfg: LoginConfig,
    secret: String,
    issuer: String,
    mapping: ClaimMapping,
    keys: Arc<IssuerKeys>,
    http: reqwest::Client,
    leeway: Duration,
    auth: Arc<Authenticator>,
    sessions: Sessions,
    /// The issued-token revocation list (token mode): bearer tokens minted
    /// from a revoked login token are refused too.
    revocations: Option<(Arc<RevocationList>, Duration)>,
    pending: moka::sync::Cache<String, Arc<Pending>>,
    audit: Option<Arc<AuditLog>>,
}

impl Login {
    /// `None` unless `[auth.oidc.login]` and `[auth.tokens]` are set (the
    /// config check makes sure both are).
    pub fn new(
        cfg: &LoginConfig,
        secret: String,
        auth: Arc<Authenticator>,
        revocations: Option<(Arc<RevocationList>, Duration)>,
        audit: Option<Arc<AuditLog>>,
    ) -> Option<Login> {
        let oidc = auth.oidc()?;
        let keys = oidc.keys_of(&cfg.issuer)?;
        let sessions = Sessions::new(&auth.tokens()?.config().path);
        Some(Login {
            issuer: keys.issuer().to_owned(),
            mapping: cfg.mapping(),
            http: oidc.http().clone(),
            leeway: oidc.leeway(),
            cfg: cfg.clone(),
            secret,
            keys,
            auth: Arc::clone(&auth),
            sessions,
            revocations,
            pending: moka::sync::Cache::builder()
                .time_to_live(PENDING_FOR)
                .max_capacity(10_000)
                .build(),
            audit,
        })
    }

    /// A `token_create` / `token_revoke` line of the audit log, as
    /// `portcullis token` writes them.
    fn audit(&self, action: &str, user: &str, token: &str, client: String, reason: Option<&str>) {
        if let Some(log) = &self.audit {
            log.write(&AuditEvent::token(action, user, token, client, reason));
        }
    }

    pub fn config(&self) -> &LoginConfig {
        &self.cfg
    }

    async fn client(&self) -> Result<(Client, Discovery), LoginError> {
        let d = self
            .keys
            .discovery()
            .await
            .map_err(|_| LoginError::Unavailable)?;
        let auth = d
            .authorization_endpoint
            .clone()
            .ok_or(LoginError::Discovery("authorization_endpoint"))?;
        let token = d
            .token_endpoint
            .clone()
            .ok_or(LoginError::Discovery("token_endpoint"))?;
        let client = oauth2::Client::new(ClientId::new(self.cfg.client_id.clone()))
            .set_client_secret(ClientSecret::new(self.secret.clone()))
            .set_auth_uri(AuthUrl::from_url(auth))
            .set_token_uri(TokenUrl::from_url(token))
            .set_redirect_uri(RedirectUrl::from_url(self.cfg.redirect_url.clone()));
        Ok((client, d))
    }

    /// Starts a login for a token of `lifetime` (at most, and by default,
    /// `token_lifetime`).
    pub async fn start(&self, lifetime: Option<Duration>) -> Result<Started, LoginError> {
        let (client, _) = self.client().await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let nonce = random();
        let binding = random();
        let mut request = client
            .authorize_url(CsrfToken::new_random)
            .add_extra_param("nonce", &nonce)
            .set_pkce_challenge(challenge);
        for s in &self.cfg.scopes {
            request = request.add_scope(oauth2::Scope::new(s.clone()));
        }
        if self.cfg.scopes.iter().any(|s| s == "offline_access") {
            // providers issue refresh tokens for offline_access only with
            // consent (OpenID Connect Core 11)
            request = request.add_extra_param("prompt", "consent");
        }
        let (url, state) = request.url();
        let lifetime = lifetime
            .unwrap_or(self.cfg.token_lifetime)
            .min(self.cfg.token_lifetime);
        self.pending.insert(
            state.secret().clone(),
            Arc::new(Pending {
                binding: sha256(&binding),
                nonce,
                verifier: verifier.secret().clone(),
                lifetime,
            }),
        );
        Ok(Started {
            location: url.to_string(),
            binding,
        })
    }

    /// The callback: `query` as the provider sent the browser back,
    /// `binding` the login cookie.
    pub async fn finish(
        &self,
        query: Option<&str>,
        binding: Option<&str>,
        from: std::net::IpAddr,
    ) -> Result<LoggedIn, LoginError> {
        let mut code = None;
        let mut state = None;
        let mut error = None;
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match &*k {
                "code" => code = Some(v.into_owned()),
                "state" => state = Some(v.into_owned()),
                "error" => error = Some(v.into_owned()),
                _ => {}
            }
        }
        let state = state.ok_or(LoginError::BadRequest("state"))?;
        // one use only, whatever happens next
        let pending = self
            .pending
            .remove(&state)
            .ok_or(LoginError::UnknownState)?;
        let bound = binding.is_some_and(|b| bool::from(sha256(b).ct_eq(&pending.binding)));
        if !bound {
            return Err(LoginError::Binding);
        }
        if let Some(e) = error {
            return Err(LoginError::Provider(e.chars().take(64).collect()));
        }
        let code = code.ok_or(LoginError::BadRequest("code"))?;
        let (client, _) = self.client().await?;
        let resp = client
            .exchange_code(AuthorizationCode::new(code))
            .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier.clone()))
            .request_async(&self.http)
            .await
            .map_err(|e| LoginError::Exchange(describe(&e)))?;
        let id_token = resp
            .extra_fields()
            .id_token
            .clone()
            .ok_or(LoginError::NoIdToken)?;
        let verified = verify::verify(
            &id_token,
            &self.keys,
            std::slice::from_ref(&self.cfg.client_id),
            self.leeway,
        )
        .await
        .map_err(LoginError::IdToken)?;
        let nonce = verified.claims.get("nonce").and_then(|n| n.as_str());
        if nonce != Some(pending.nonce.as_str()) {
            return Err(LoginError::IdToken(IdTokenError::Nonce));
        }
        let (user, groups) =
            verify::map_claims(&verified.claims, &self.mapping).map_err(LoginError::NotAllowed)?;
        let subject = verified
            .claims
            .get("sub")
            .and_then(|s| s.as_str())
            .ok_or(LoginError::IdToken(IdTokenError::MissingClaim(
                "sub".into(),
            )))?
            .to_owned();
        let refresh_token = resp.refresh_token().map(|r| r.secret().clone());
        let auth = Arc::clone(&self.auth);
        let issuer = self.issuer.clone();
        let lifetime = pending.lifetime;
        let (u, g) = (user.clone(), groups.clone());
        let minted = tokio::task::spawn_blocking(move || {
            let store = auth.tokens().ok_or_else(|| "no [auth.tokens]".to_owned())?;
            store
                .mint(&u, &issuer, g, lifetime)
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| LoginError::Save(e.to_string()))?
        .map_err(LoginError::Save)?;
        let session = Session {
            token: minted.entry.name.clone(),
            user: user.clone(),
            subject,
            refresh_token,
            refreshed: now_rfc3339(),
        };
        let id = minted.entry.id.clone();
        self.sessions
            .update(|all| {
                all.insert(id, session);
            })
            .map_err(|e| LoginError::Save(e.to_string()))?;
        tracing::info!(target: "auth", user = %user, client = %from, token = %minted.entry.name, groups = ?groups, "browser login: access token issued");
        self.audit(
            "token_create",
            &user,
            &minted.entry.name,
            from.to_string(),
            None,
        );
        Ok(LoggedIn {
            user,
            groups,
            token_name: minted.entry.name.clone(),
            expires: minted.entry.expires.clone().unwrap_or_default(),
            secret: minted.secret,
        })
    }

    /// One round of the background refresh: every session due is asked
    /// about at the provider; tokens gone from the file lose their
    /// session; tokens not refreshed for `max_offline` are suspended.
    pub async fn refresh_round(&self) {
        let Some(store) = self.auth.tokens() else {
            return;
        };
        let _turn = match self.sessions.refresh_turn() {
            Ok(Some(turn)) => turn,
            // another replica is refreshing the sessions of this file
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(target: "auth", error = %e, "cannot lock the login sessions");
                return;
            }
        };
        let all = match self.sessions.all() {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(target: "auth", error = %e, "cannot read the login sessions");
                return;
            }
        };
        let mut suspended = HashSet::new();
        for (id, session) in all {
            let Some(entry) = store.entry(&id) else {
                // revoked with `portcullis token revoke`, or expired
                self.forget(&id);
                continue;
            };
            let age = session.refreshed_at().elapsed().unwrap_or_default();
            if age < self.cfg.refresh_interval {
                continue;
            }
            let outcome = self.refresh(&session).await;
            let m = &crate::observe::metrics::metrics().oidc_refreshes;
            match outcome {
                Refreshed::Ok {
                    refresh_token,
                    groups,
                } => {
                    m.with_label_values(&["ok"]).inc();
                    if let Some(g) = groups.filter(|g| *g != entry.groups) {
                        tracing::info!(target: "auth", user = %session.user, token = %session.token, groups = ?g, "login token: the provider reports new groups");
                        if let Err(e) = store.set_groups(&id, &g) {
                            tracing::warn!(target: "auth", error = %e, "cannot save the login token's groups");
                        }
                    }
                    let result = self.sessions.update(|all| {
                        if let Some(s) = all.get_mut(&id) {
                            s.refreshed = now_rfc3339();
                            if refresh_token.is_some() {
                                s.refresh_token = refresh_token;
                            }
                        }
                    });
                    if let Err(e) = result {
                        tracing::warn!(target: "auth", error = %e, "cannot save the login session");
                    }
                }
                Refreshed::Revoke(reason) => {
                    m.with_label_values(&["revoked"]).inc();
                    self.revoke(&id, &session, &reason);
                }
                Refreshed::Failed(reason) => {
                    m.with_label_values(&["error"]).inc();
                    tracing::warn!(target: "auth", user = %session.user, token = %session.token, error = %reason, "cannot refresh the login session; the token keeps working until auth.oidc.login.max_offline after its last refresh");
                    if age >= self.cfg.max_offline {
                        suspended.insert(id);
                    }
                }
            }
        }
        store.set_suspended(suspended);
    }

    /// Asks the provider whether the session of `session` still stands.
    async fn refresh(&self, session: &Session) -> Refreshed {
        let Some(rt) = &session.refresh_token else {
            return Refreshed::Failed("the provider gave no refresh token".into());
        };
        let client = match self.client().await {
            Ok((c, _)) => c,
            Err(e) => return Refreshed::Failed(e.to_string()),
        };
        let resp = client
            .exchange_refresh_token(&RefreshToken::new(rt.clone()))
            .request_async(&self.http)
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(RequestTokenError::ServerResponse(r))
                if *r.error() == BasicErrorResponseType::InvalidGrant =>
            {
                return Refreshed::Revoke("the provider refused the session (invalid_grant)".into())
            }
            Err(e) => return Refreshed::Failed(describe(&e)),
        };
        let refresh_token = resp.refresh_token().map(|r| r.secret().clone());
        let Some(id_token) = resp.extra_fields().id_token.clone() else {
            return Refreshed::Ok {
                refresh_token,
                groups: None,
            };
        };
        let audience = std::slice::from_ref(&self.cfg.client_id);
        let verified = match verify::verify(&id_token, &self.keys, audience, self.leeway).await {
            Ok(v) => v,
            Err(IdTokenError::Unavailable) => {
                return Refreshed::Failed("the provider's keys cannot be fetched".into())
            }
            Err(e) => return Refreshed::Revoke(format!("refreshed ID token refused: {e}")),
        };
        if verified.claims.get("sub").and_then(|s| s.as_str()) != Some(session.subject.as_str()) {
            return Refreshed::Revoke("the refreshed ID token is for another subject".into());
        }
        match verify::map_claims(&verified.claims, &self.mapping) {
            Ok((user, _)) if user != session.user => {
                Refreshed::Revoke(format!("the account now maps to user {user}"))
            }
            Ok((_, groups)) => Refreshed::Ok {
                refresh_token,
                groups: Some(groups),
            },
            Err(e) => Refreshed::Revoke(format!("no longer allowed: {e}")),
        }
    }

    /// Revokes the bearer tokens minted from the token, then removes the
    /// token and its session.
    fn revoke(&self, id: &str, session: &Session, reason: &str) {
        tracing::info!(target: "auth", user = %session.user, token = %session.token, reason, "login token revoked");
        self.audit(
            "token_revoke",
            &session.user,
            &session.token,
            "oidc-refresh".into(),
            Some(reason),
        );
        // the bearer tokens first: once the login token is refused, none
        // minted from it may still pass
        if let Some((list, keep)) = &self.revocations {
            let target = Target::AccessToken(id.to_owned());
            let result = RevocationFile::revoke(list.path(), target, *keep, Some(reason.into()))
                .map_err(|e| e.to_string())
                .and_then(|()| list.reload().map_err(|e| e.to_string()));
            if let Err(e) = result {
                tracing::error!(target: "auth", error = %e, "cannot revoke the bearer tokens of a revoked login token");
            }
        }
        if let Some(store) = self.auth.tokens() {
            if let Err(e) = store.remove(id) {
                tracing::error!(target: "auth", error = %e, token = %session.token, "cannot remove the revoked login token");
                return;
            }
        }
        self.forget(id);
    }

    fn forget(&self, id: &str) {
        if let Err(e) = self.sessions.update(|all| {
            all.remove(id);
        }) {
            tracing::warn!(target: "auth", error = %e, "cannot save the login sessions");
        }
    }
}

/// A token request's failure, without any secret (oauth2's errors carry
/// no request data).
fn describe<E: std::error::Error>(e: &RequestTokenError<E, BasicErrorResponse>) -> String {
    match e {
        RequestTokenError::ServerResponse(r) => r.error().to_string(),
        RequestTokenError::Request(e) => format!("request failed: {e}"),
        RequestTokenError::Parse(e, _) => format!("unreadable answer: {e}"),
        RequestTokenError::Other(o) => o.clone(),
    }
}

fn random() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

fn sha256(s: &str) -> [u8; 32] {
    sha2::Sha256::digest(s.as_bytes()).into()
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}
