//! The gate every request passes: credentials → principal, with throttling
//! of failed logins, and the current access rules (swapped on reload) that
//! decide what the principal may do.

use arc_swap::ArcSwap;
use std::net::IpAddr;
use std::sync::Arc;

use super::authentication::certificate::CertificateMapping;
use super::authentication::throttle::Throttle;
use super::authentication::{basic, AuthFailure, Authenticator, Identity};
use super::authorization::acl::Acl;
use super::authorization::Authorization;
use super::principal::Principal;
use super::refusal::{Mode, Refusal};
use super::token::jwt::{self, Claims, TokenIssuer};
use super::token::revocation::RevocationList;
use crate::config::ThrottleConfig;
use crate::tls::client_auth::PeerCertificate;

/// Bearer tokens whose signature was checked: a client sends the same
/// token with every request of a pull, and an ES256 verification costs
/// about 100 µs. Keyed by the token's SHA-256; expiry is still checked on
/// every hit.
///
/// An entry remembers the key (`kid`) that verified it and is used only
/// while the issuer still holds that key, so it cannot outlive the key's removal;
/// it lives at most 60 s and never past the token's `exp`.
struct VerifiedTokens {
    cache: moka::sync::Cache<[u8; 32], (Arc<Claims>, String)>,
}

impl Default for VerifiedTokens {
    fn default() -> Self {
        VerifiedTokens {
            cache: moka::sync::Cache::builder()
                .time_to_live(std::time::Duration::from_secs(60))
                .max_capacity(10_000)
                .build(),
        }
    }
}

pub struct Gate {
    authenticator: Arc<Authenticator>,
    acl: Arc<ArcSwap<Acl>>,
    throttle: Throttle,
    /// Present in token mode.
    tokens: Option<Arc<TokenIssuer>>,
    verified: VerifiedTokens,
    /// `[tls.client_auth]`: how a verified client certificate names its user.
    certificates: Option<CertificateMapping>,
    /// Issued tokens refused before their `exp` (token mode).
    revocations: Option<Arc<RevocationList>>,
}

/// What a login attempt found, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginOutcome {
    Ok,
    /// The credentials did not verify; `user` is the name they gave (none
    /// for an unknown scheme), so the logs say whose login failed, as
    /// nginx's `$remote_user` and sshd do.
    Failed {
        failure: AuthFailure,
        user: Option<String>,
    },
    /// Refused unchecked: too many failed logins for `user` or the address.
    Throttled {
        user: String,
    },
    BadToken(&'static str),
}

impl LoginOutcome {
    /// The user name a refused login gave.
    pub fn claimed_user(&self) -> Option<&str> {
        match self {
            LoginOutcome::Failed { user, .. } => user.as_deref(),
            LoginOutcome::Throttled { user } => Some(user),
            LoginOutcome::Ok | LoginOutcome::BadToken(_) => None,
        }
    }
}

impl Gate {
    /// With `tokens` (the issuer of token mode) bearer tokens are accepted
    /// and challenges send clients to the token endpoint; without, Basic.
    pub fn new(
        authenticator: Arc<Authenticator>,
        acl: Arc<ArcSwap<Acl>>,
        throttle: &ThrottleConfig,
        tokens: Option<Arc<TokenIssuer>>,
    ) -> Self {
        Gate {
            authenticator,
            acl,
            throttle: Throttle::new(throttle),
            tokens,
            verified: VerifiedTokens::default(),
            certificates: None,
            revocations: None,
        }
    }

    /// Shares the login throttle with the fleet's other replicas.
    pub fn with_cluster(mut self, cluster: Option<Arc<crate::cluster::Cluster>>) -> Self {
        self.throttle = self.throttle.with_cluster(cluster);
        self
    }

    /// Refuses the issued tokens `list` names, at every request.
    pub fn with_revocations(mut self, list: Option<Arc<RevocationList>>) -> Self {
        self.revocations = list;
        self
    }

    /// How long the access token `id` still lives, if it expires: what
    /// is minted from it must not outlive it.
    pub fn access_token_remaining(&self, id: &str) -> Option<std::time::Duration> {
        let expires = self.authenticator.tokens()?.expiry_of(id)?;
        Some(
            expires
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default(),
        )
    }

    /// Why issued `claims` are no longer good, if they were revoked.
    pub fn revoked(&self, claims: &Claims) -> Option<&'static str> {
        self.revocations.as_ref()?.refuses(claims)
    }

    /// Accepts verified client certificates as a credential, mapped to a
    /// user by `mapping`.
    pub fn with_certificates(mut self, mapping: Option<CertificateMapping>) -> Self {
        self.certificates = mapping;
        self
    }

    /// The principal of a `/v2/` request on a connection that may carry a
    /// client certificate (verified in the handshake): credentials sent
    /// with the request decide, as without a certificate; a request
    /// without any is the certificate's user.
    pub async fn authenticate_with_certificate(
        &self,
        authorization: Option<&[u8]>,
        peer: Option<&PeerCertificate>,
        ip: IpAddr,
    ) -> (Result<Principal, Refusal>, Option<LoginOutcome>) {
        // (credentials are looked at only when a certificate could stand in)
        let (Some(mapping), Some(cert)) = (&self.certificates, peer) else {
            return self.authenticate(authorization, ip).await;
        };
        if authorization.is_some_and(|h| !basic::is_empty(h)) {
            return self.authenticate(authorization, ip).await;
        }
        let (r, outcome) = self.certificate_login(mapping, cert);
        (r, Some(outcome))
    }

    /// The certificate's user, for a request that sends no credentials
    /// (`/v2/`, or the token endpoint, which then issues it a token);
    /// `None` without `[tls.client_auth]` or a verified certificate.
    pub fn certificate_user(
        &self,
        peer: Option<&PeerCertificate>,
    ) -> Option<(Result<Principal, Refusal>, LoginOutcome)> {
        let (mapping, cert) = (self.certificates.as_ref()?, peer?);
        Some(self.certificate_login(mapping, cert))
    }

    fn certificate_login(
        &self,
        mapping: &CertificateMapping,
        cert: &PeerCertificate,
    ) -> (Result<Principal, Refusal>, LoginOutcome) {
        let attempts = &crate::observe::metrics::metrics().auth_attempts;
        match mapping.identity(cert) {
            Ok(identity) => {
                attempts.with_label_values(&["certificate", "ok"]).inc();
                let principal = self.user_principal(Arc::new(identity));
                (Ok(principal), LoginOutcome::Ok)
            }
            Err(e) => {
                attempts
                    .with_label_values(&["certificate", AuthFailure::UnknownUser.as_str()])
                    .inc();
                tracing::warn!(target: "auth", error = %e, "client certificate refused as a credential");
                let failure = AuthFailure::UnknownUser;
                let refusal = Refusal::Unauthenticated { scope: None };
                (
                    Err(refusal),
                    LoginOutcome::Failed {
                        failure,
                        user: None,
                    },
                )
            }
        }
    }

    /// The scheme clients are asked to authenticate with.
    pub fn mode(&self) -> Mode {
        match self.tokens {
            Some(_) => Mode::Token,
            None => Mode::Basic,
        }
    }

    /// What `principal` may do from `ip`, by the rules as they are now.
    pub fn authorization<'p>(&self, principal: &'p Principal, ip: IpAddr) -> Authorization<'p> {
        Authorization::new(self.acl.load_full(), principal, ip)
    }

    /// The user as the backends know it now (see
    /// [`Authenticator::identity_of`]).
    pub async fn identity_of(&self, user: &str) -> Option<Identity> {
        self.authenticator.identity_of(user).await
    }

    /// Checks a user name and password (Basic header or token endpoint),
    /// throttling repeated failures per address and per user.
    pub async fn login(
        &self,
        user: &str,
        password: &str,
        ip: IpAddr,
    ) -> (Result<Principal, Refusal>, LoginOutcome) {
        let m = crate::observe::metrics::metrics();
        let throttled = |wait: std::time::Duration| {
            m.throttled.inc();
            m.auth_attempts.with_label_values(&["-", "throttled"]).inc();
            let refusal = Refusal::Throttled {
                retry_after: wait.as_secs().max(1),
            };
            let user = user.to_owned();
            (Err(refusal), LoginOutcome::Throttled { user })
        };
        let standing = match self.throttle.check(Some(user), ip) {
            Ok(standing) => standing,
            Err(wait) => return throttled(wait),
        };
        let cached = self.authenticator.cached(user, password);
        // the fleet's count, before a login that costs a verification (a
        // cached one never waits on Redis)
        let cold = cached.is_none() && self.throttle.is_shared();
        if cold {
            if let Some(wait) = self.throttle.check_shared(Some(user), ip).await {
                return throttled(wait);
            }
        }
        let verified = match cached {
            Some(identity) => Ok(identity),
            None => {
                let creds = basic::BasicCredentials {
                    user: user.to_owned(),
                    password: password.to_owned(),
                };
                self.authenticator.verify_uncached(&creds).await
            }
        };
        match verified {
            Ok(identity) => {
                m.login_ok(identity.backend);
                self.throttle.succeeded(user, ip, standing);
                if cold {
                    self.throttle.succeeded_shared(user, ip).await;
                }
                (Ok(self.user_principal(identity)), LoginOutcome::Ok)
            }
            Err(failure) => {
                m.auth_attempts
                    .with_label_values(&[self.authenticator.backend_name(), failure.as_str()])
                    .inc();
                if failure != AuthFailure::Unavailable {
                    self.throttle.failed(Some(user), ip);
                    self.throttle.failed_shared(Some(user), ip).await;
                }
                let refusal = match failure {
                    AuthFailure::Unavailable => Refusal::Unavailable,
                    _ => Refusal::Unauthenticated { scope: None },
                };
                let user = Some(user.to_owned());
                (Err(refusal), LoginOutcome::Failed { failure, user })
            }
        }
    }

    /// A verified user with the groups the config gives it.
    pub fn user_principal(&self, identity: Arc<Identity>) -> Principal {
        let acl = self.acl.load();
        let static_groups = acl.static_groups(&identity.user);
        Principal::user_of(identity, static_groups)
    }

    /// The principal of a `/v2/` request from its `Authorization` header.
    pub async fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        ip: IpAddr,
    ) -> (Result<Principal, Refusal>, Option<LoginOutcome>) {
        let Some(header) = authorization else {
            return (Ok(Principal::Anonymous), None);
        };
        // (parsed first: credentials are the usual case, and an empty pair
        // — what docker sends before a login — does not parse)
        if let Some(creds) = basic::parse(header) {
            let (r, outcome) = self.login(&creds.user, &creds.password, ip).await;
            return (r, Some(outcome));
        }
        if basic::is_empty(header) {
            return (Ok(Principal::Anonymous), None);
        }
        if let (Some(tokens), Some(token)) = (&self.tokens, bearer(header)) {
            use sha2::Digest;
            let key: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let key_held = |kid: &String| tokens.keys().by_kid(kid).is_some();
            let cached = self
                .verified
                .cache
                .get(&key)
                .filter(|(c, kid)| c.exp + jwt::LEEWAY.as_secs() > now && key_held(kid))
                .map(|(claims, _)| claims);
            let claims = match cached {
                Some(claims) => claims,
                None => match tokens.verify(token) {
                    Ok(claims) => {
                        let claims = Arc::new(claims);
                        // (a token without `kid` is verified every time)
                        if let Some(kid) = jwt::header_kid(token) {
                            self.verified.cache.insert(key, (Arc::clone(&claims), kid));
                        }
                        claims
                    }
                    Err(e) => return bad_token(e.as_str()),
                },
            };
            // checked on every request, cached or not: a revocation
            // takes effect with the list's next reload
            if let Some(reason) = self.revoked(&claims) {
                tracing::info!(target: "auth", user = %claims.sub, client = %ip, jti = %claims.jti, reason, "bearer token refused: revoked");
                return bad_token(reason);
            }
            return (Ok(Principal::Token { claims }), None);
        }
        // An unknown scheme, or Bearer in Basic mode: ask for credentials.
        (
            Err(Refusal::Unauthenticated { scope: None }),
            Some(LoginOutcome::Failed {
                failure: AuthFailure::BadCredentials,
                user: None,
            }),
        )
    }
}

/// A bearer token refused: a bad signature, expired, or revoked.
fn bad_token(reason: &'static str) -> (Result<Principal, Refusal>, Option<LoginOutcome>) {
    crate::observe::metrics::metrics()
        .auth_attempts
        .with_label_values(&["token", "bad_token"])
        .inc();
    (
        Err(Refusal::InvalidToken),
        Some(LoginOutcome::BadToken(reason)),
    )
}

fn bearer(header: &[u8]) -> Option<&str> {
    let v = std::str::from_utf8(header).ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    #[test]
    fn bearer_header() {
        assert_eq!(super::bearer(b"Bearer abc.def"), Some("abc.def"));
        assert_eq!(super::bearer(b"bearer  x "), Some("x"));
        assert_eq!(super::bearer(b"Bearer "), None);
        assert_eq!(super::bearer(b"Basic abc"), None);
    }
}
