//! Authentication: who is this request from?
//!
//! Basic credentials ([`basic`]) are checked against the backends of the
//! chain, the htpasswd file ([`htpasswd`]) and the directory ([`ldap`]);
//! either answers with one [`Identity`], the input of the request's
//! `Principal`. Verified pairs are cached ([`cache`]) so the bcrypt cost is
//! paid once per TTL, not once per request, and bcrypt itself runs on a
//! bounded pool ([`hash_pool`]) off the proxy workers; [`throttle`] slows
//! down repeated failures.

pub mod basic;
pub mod cache;
pub mod certificate;
pub mod hash_pool;
pub mod htpasswd;
pub mod ldap;
pub mod oidc;
pub mod throttle;
pub mod tokens;

use arc_swap::ArcSwap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::config::{AuthConfig, Backend};
use basic::BasicCredentials;
use cache::CredentialCache;
use hash_pool::HashPool;
use htpasswd::{Htpasswd, HtpasswdError};
use ldap::{LdapBackend, LdapVerdict};

/// What a backend vouches for: the input of `Principal::user_of`, which
/// adds the config's groups and is what every later layer sees.
///
/// `user` is the name as the backend stores it, never as typed: the
/// htpasswd file's name (matched exactly, case-sensitive), or the
/// directory entry's `user_attribute`. Rules, tokens, the audit log and
/// the throttle's success path all see this one spelling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    /// Changes when the user's password does (the htpasswd hash, the
    /// directory's `password_changed_attribute`): refresh tokens carry a
    /// fingerprint of it and die with the password. `None`: not known.
    pub credential_stamp: Option<String>,
    /// Which backend vouched for the user (for logs and metrics).
    pub backend: &'static str,
    /// Groups the backend knows the user by (a directory's); the config's
    /// static groups are added when the principal is made.
    pub groups: Vec<String>,
    /// How the caller proved it.
    pub credential: Credential,
    /// An access token's scopes: the most it may do, whatever the rules
    /// grant its user.
    pub restriction: Option<Arc<tokens::scopes::Restriction>>,
}

impl Identity {
    /// The id of the access token this identity logged in with.
    pub fn access_token_id(&self) -> Option<&str> {
        match self.credential {
            Credential::AccessToken { .. } => {
                self.credential_stamp.as_deref()?.strip_prefix("token:")
            }
            _ => None,
        }
    }
}

/// What a reload of the htpasswd file found.
#[derive(Debug, Default)]
pub struct UsersReloaded {
    pub users: usize,
    /// Users the file no longer has, or has with another password.
    pub changed: Vec<String>,
}

/// How a caller proved who it is: for the audit log, and for rules that
/// ask for one kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A password, checked by the backend that knows the user.
    Password,
    /// An access token of `[auth.tokens]`, by its name.
    AccessToken { name: String },
    /// A client certificate verified in the TLS handshake, by subject.
    Certificate { subject: String },
    /// An OpenID Connect ID token of `[[auth.oidc.issuers]]`: what is
    /// minted from it never outlives `expires`.
    IdToken {
        issuer: String,
        expires: std::time::SystemTime,
    },
}

impl Credential {
    /// `password`, `token:NAME` or `certificate:SUBJECT`, for the audit
    /// log (never the secret itself).
    pub fn describe(&self) -> String {
        match self {
            Credential::Password => "password".to_owned(),
            Credential::AccessToken { name } => format!("token:{name}"),
            Credential::Certificate { subject } => format!("certificate:{subject}"),
            Credential::IdToken { issuer, .. } => format!("oidc:{issuer}"),
        }
    }
}

/// Why a login failed. Clients see the same 401 for all of these; the
/// distinction is for logs and metrics only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("wrong password")]
    BadCredentials,
    #[error("unknown user")]
    UnknownUser,
    #[error("authentication backend unavailable")]
    Unavailable,
    #[error("access token expired or beyond auth.tokens.max_lifetime")]
    TokenExpired,
    #[error("ID token refused")]
    BadIdToken,
}

impl AuthFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::BadCredentials => "bad_credentials",
            AuthFailure::UnknownUser => "unknown_user",
            AuthFailure::Unavailable => "backend_error",
            AuthFailure::TokenExpired => "token_expired",
            AuthFailure::BadIdToken => "bad_id_token",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("{path}: {source}")]
    Htpasswd {
        path: PathBuf,
        #[source]
        source: HtpasswdError,
    },
    #[error("cannot start the hashing threads: {0}")]
    Threads(#[from] std::io::Error),
    #[error("cannot make the dummy hash: {0}")]
    Dummy(#[from] bcrypt::BcryptError),
    #[error(transparent)]
    Ldap(#[from] ldap::LdapError),
    #[error(transparent)]
    Tokens(#[from] tokens::file::TokenFileError),
    #[error(transparent)]
    Oidc(#[from] oidc::OidcSetupError),
}

impl AuthSetupError {
    /// The problems, each under the config key it concerns.
    pub fn problems(&self) -> Vec<crate::config::Problem> {
        use crate::config::Problem;
        match self {
            AuthSetupError::Htpasswd { .. } => {
                vec![Problem::new("auth.htpasswd.path", self.to_string())]
            }
            AuthSetupError::Threads(e) => vec![Problem::new(
                "auth.hash_threads",
                format!("cannot start the hashing threads: {e}"),
            )],
            AuthSetupError::Dummy(e) => vec![Problem::new(
                "auth.htpasswd.path",
                format!("cannot make the dummy hash: {e}"),
            )],
            AuthSetupError::Ldap(e) => e.problems(),
            AuthSetupError::Tokens(e) => vec![Problem::new("auth.tokens.path", e.to_string())],
            AuthSetupError::Oidc(e) => vec![Problem::new(e.key(), e.to_string())],
        }
    }
}

/// The users of the htpasswd file, with a dummy hash of the same cost so an
/// unknown user takes as long to refuse as a wrong password.
struct Users {
    file: Htpasswd,
    dummy: String,
}

impl Users {
    fn new(file: Htpasswd, previous: Option<&Users>) -> Result<Self, bcrypt::BcryptError> {
        let cost = file.typical_cost().unwrap_or(bcrypt::DEFAULT_COST);
        let dummy = match previous {
            Some(p) if p.dummy.get(4..6) == Some(format!("{cost:02}").as_str()) => p.dummy.clone(),
            _ => bcrypt::hash(rand::random::<[u8; 16]>(), cost)?,
        };
        Ok(Users { file, dummy })
    }
}

pub struct Authenticator {
    htpasswd_path: Option<PathBuf>,
    users: ArcSwap<Users>,
    /// Bumped on every reload so a verification that raced with a reload
    /// does not cache a result of the old file.
    generation: AtomicU64,
    cache: CredentialCache,
    pool: HashPool,
    chain: Vec<Backend>,
    ldap: Option<LdapBackend>,
    /// Verified directory logins, kept for the directory's own TTL.
    ldap_cache: Option<CredentialCache>,
    /// The directory failed its last operation: cached directory logins
    /// are refused until it answers again, unless allow_stale_on_outage.
    ldap_down: AtomicBool,
    tokens: Option<tokens::TokenStore>,
    /// `[auth.oidc]`: issuers whose ID tokens are passwords, and the keys
    /// of the login's provider.
    oidc: Option<Arc<oidc::Oidc>>,
}

impl Authenticator {
    pub fn new(cfg: &AuthConfig) -> Result<Self, AuthSetupError> {
        let path = cfg.htpasswd.as_ref().map(|h| h.path.clone());
        let file = match &path {
            Some(p) => Htpasswd::load(p).map_err(|source| AuthSetupError::Htpasswd {
                path: p.clone(),
                source,
            })?,
            None => Htpasswd::default(),
        };
        let users = Users::new(file, None)?;
        let ldap = match &cfg.ldap {
            Some(l) => Some(LdapBackend::new(l)?),
            None => None,
        };
        let ldap_cache = ldap
            .as_ref()
            .map(|l| CredentialCache::new(l.cache_ttl().unwrap_or(cfg.cache_ttl), cfg.cache_size));
        Ok(Authenticator {
            htpasswd_path: path,
            users: ArcSwap::from_pointee(users),
            generation: AtomicU64::new(0),
            cache: CredentialCache::new(cfg.cache_ttl, cfg.cache_size),
            pool: HashPool::new(cfg.hash_threads)?,
            chain: cfg.chain(),
            ldap,
            ldap_cache,
            ldap_down: AtomicBool::new(false),
            tokens: cfg
                .tokens
                .as_ref()
                .map(tokens::TokenStore::new)
                .transpose()?,
            oidc: cfg
                .oidc
                .as_ref()
                .map(oidc::Oidc::new)
                .transpose()?
                .map(Arc::new),
        })
    }

    /// `[auth.oidc]`, if configured.
    pub fn oidc(&self) -> Option<&Arc<oidc::Oidc>> {
        self.oidc.as_ref()
    }

    /// The access tokens of `[auth.tokens]`, if configured.
    pub fn tokens(&self) -> Option<&tokens::TokenStore> {
        self.tokens.as_ref()
    }

    /// Re-reads the token file; on error the previous tokens stay.
    /// Cached token logins are checked against the new file on their next
    /// use, so a revoked token stops at once.
    pub fn reload_tokens(&self) -> Option<Result<usize, tokens::file::TokenFileError>> {
        self.tokens.as_ref().map(tokens::TokenStore::reload)
    }

    pub fn htpasswd_path(&self) -> Option<&Path> {
        self.htpasswd_path.as_deref()
    }

    pub fn ldap(&self) -> Option<&LdapBackend> {
        self.ldap.as_ref()
    }

    /// Whether the directory (if any) answered its last operation.
    pub fn ldap_reachable(&self) -> bool {
        !self.ldap_down.load(Ordering::SeqCst)
    }

    /// The user as the backends know it now, with its directory groups:
    /// refresh tokens outlive logins, so they are checked again.
    pub async fn identity_of(&self, user: &str) -> Option<Identity> {
        for backend in &self.chain {
            match backend {
                Backend::Htpasswd => {
                    if let Some(hash) = self.users.load().file.hash_of(user) {
                        return Some(Identity {
                            user: user.to_owned(),
                            credential_stamp: Some(hash.to_owned()),
                            backend: "htpasswd",
                            groups: Vec::new(),
                            credential: Credential::Password,
                            restriction: None,
                        });
                    }
                }
                Backend::Ldap => {
                    let ldap = self.ldap.as_ref()?;
                    match ldap.lookup(user).await {
                        Ok(Some(entry)) => {
                            return Some(Identity {
                                user: entry.user,
                                credential_stamp: entry.password_changed,
                                backend: "ldap",
                                groups: entry.groups,
                                credential: Credential::Password,
                                restriction: None,
                            })
                        }
                        Ok(None) => {}
                        Err(_) => return None,
                    }
                }
            }
        }
        None
    }

    /// The backend named in metrics for failures (no user is known then).
    pub fn backend_name(&self) -> &'static str {
        match self.chain.first() {
            Some(Backend::Ldap) => "ldap",
            _ => "htpasswd",
        }
    }

    pub fn user_count(&self) -> usize {
        self.users.load().file.len()
    }

    /// Re-reads the htpasswd file. On error the previous users stay.
    pub fn reload(&self) -> Result<usize, AuthSetupError> {
        self.reload_users().map(|r| r.users)
    }

    /// [`reload`](Self::reload), saying which users the new file removed
    /// or gave another password: the tokens issued to them are revoked
    /// (whoever edited the file: `htpasswd -D` as well as `portcullis`).
    pub fn reload_users(&self) -> Result<UsersReloaded, AuthSetupError> {
        let Some(path) = &self.htpasswd_path else {
            return Ok(UsersReloaded::default());
        };
        let file = Htpasswd::load(path).map_err(|source| AuthSetupError::Htpasswd {
            path: path.clone(),
            source,
        })?;
        let old = self.users.load_full();
        let users = Users::new(file, Some(&old))?;
        let changed = old
            .file
            .users()
            .into_iter()
            .filter(|u| old.file.hash_of(u) != users.file.hash_of(u))
            .map(str::to_owned)
            .collect();
        let n = users.file.len();
        self.users.store(Arc::new(users));
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.cache.clear();
        Ok(UsersReloaded { users: n, changed })
    }

    /// Checks Basic credentials against the chain: the first backend that
    /// knows the user decides. Never runs bcrypt or LDAP on the calling
    /// thread.
    pub async fn verify(&self, creds: &BasicCredentials) -> Result<Arc<Identity>, AuthFailure> {
        match self.cached(&creds.user, &creds.password) {
            Some(id) => Ok(id),
            None => self.verify_uncached(creds).await,
        }
    }

    /// The identity `user` and `password` verified to recently, if still
    /// good: a login that costs no verification (and, in a fleet, no call
    /// to Redis).
    pub fn cached(&self, user: &str, password: &str) -> Option<Arc<Identity>> {
        let hit = &crate::observe::metrics::metrics().credential_cache_hit;
        if let Some(id) = self.cache.get(user, password) {
            match self.token_of(&id) {
                None => {
                    hit.inc();
                    return Some(id);
                }
                Some((tokens, token_id)) if tokens.still_valid(token_id, &id.groups) => {
                    hit.inc();
                    tokens.touch(token_id);
                    return Some(id);
                }
                // revoked or expired since: verified again, and refused
                Some(_) => {}
            }
        }
        let id = self.ldap_cache.as_ref()?.get(user, password)?;
        let stale_ok = self
            .ldap
            .as_ref()
            .is_some_and(LdapBackend::allow_stale_on_outage);
        // otherwise the directory is asked, and fails closed
        (self.ldap_reachable() || stale_ok).then(|| {
            hit.inc();
            id
        })
    }

    /// [`verify`](Self::verify) past the caches: a backend decides.
    pub async fn verify_uncached(
        &self,
        creds: &BasicCredentials,
    ) -> Result<Arc<Identity>, AuthFailure> {
        crate::observe::metrics::metrics()
            .credential_cache_miss
            .inc();
        // an ID token: the user name given is not looked at, the token
        // alone says who this is (CI cannot always know the mapped name)
        if let Some(o) = self.oidc.as_ref().filter(|o| o.accepts_passwords()) {
            if oidc::verify::looks_like_jwt(&creds.password) {
                return o.identity(&creds.password).await.map_err(|e| {
                    tracing::info!(target: "auth", given_user = %creds.user, reason = e.as_str(), error = %e, "ID token refused");
                    match e {
                        oidc::verify::IdTokenError::Unavailable => AuthFailure::Unavailable,
                        _ => AuthFailure::BadIdToken,
                    }
                });
            }
        }
        if let Some(store) = &self.tokens {
            if tokens::file::secret_id(&creds.password).is_some() {
                return self.verify_token(store, creds).await;
            }
        }
        // No backend stores a name with surrounding white space, but a
        // directory's matching ignores it: refused before any backend.
        let decidable = creds.user.trim() == creds.user;
        for backend in self.chain.iter().filter(|_| decidable) {
            let decided = match backend {
                Backend::Htpasswd => self.verify_htpasswd(creds).await?,
                Backend::Ldap => self.verify_ldap(creds).await?,
            };
            if let Some(id) = decided {
                return Ok(id);
            }
        }
        // nobody knows the user: cost what a wrong password costs
        if self.chain.contains(&Backend::Htpasswd) {
            let dummy = self.users.load().dummy.clone();
            let password = creds.password.clone();
            let _ = self
                .pool
                .run(move || bcrypt::verify(&password, &dummy).unwrap_or(false))
                .await;
        }
        Err(AuthFailure::UnknownUser)
    }

    /// The token store and token id of a cached token login.
    fn token_of<'a>(&'a self, id: &'a Identity) -> Option<(&'a tokens::TokenStore, &'a str)> {
        Some((self.tokens.as_ref()?, id.access_token_id()?))
    }

    /// An access token as the password: its owner must still be known to
    /// a backend (a removed or disabled person's tokens stop working), and
    /// it logs in with the owner's groups (a robot with its own).
    async fn verify_token(
        &self,
        store: &tokens::TokenStore,
        creds: &BasicCredentials,
    ) -> Result<Arc<Identity>, AuthFailure> {
        use tokens::TokenRefusal;
        let generation = self.generation.load(Ordering::SeqCst);
        let token = store.check(&creds.user, &creds.password).map_err(|r| {
            tracing::info!(target: "auth", user = %creds.user, reason = ?r, "access token refused");
            match r {
                TokenRefusal::Expired | TokenRefusal::OverLifetime => AuthFailure::TokenExpired,
                TokenRefusal::Suspended => AuthFailure::Unavailable,
                TokenRefusal::Unknown | TokenRefusal::WrongUser => AuthFailure::BadCredentials,
            }
        })?;
        let groups = match &token.entry.owner {
            None => token.entry.groups.clone(),
            // the browser login's: its provider session vouches (refreshed
            // in the background, see auth::login::sessions)
            Some(_) if token.entry.issuer.is_some() => token.entry.groups.clone(),
            Some(owner) => match self.identity_of(owner).await {
                Some(owner) => owner.groups,
                None => {
                    tracing::info!(target: "auth", user = %owner, token = %token.entry.name, "access token refused: its owner is no longer known");
                    return Err(AuthFailure::UnknownUser);
                }
            },
        };
        let id = Arc::new(Identity {
            user: token.user.clone(),
            credential_stamp: Some(format!("token:{}", token.entry.id)),
            backend: "token",
            groups,
            credential: Credential::AccessToken {
                name: token.entry.name.clone(),
            },
            restriction: Some(Arc::clone(&token.restriction)),
        });
        store.touch(&token.entry.id);
        if self.generation.load(Ordering::SeqCst) == generation {
            self.cache
                .insert(&creds.user, &creds.password, Arc::clone(&id));
        }
        Ok(id)
    }

    /// `Ok(None)`: the file does not know the user.
    async fn verify_htpasswd(
        &self,
        creds: &BasicCredentials,
    ) -> Result<Option<Arc<Identity>>, AuthFailure> {
        let generation = self.generation.load(Ordering::SeqCst);
        let users = self.users.load_full();
        let Some(hash) = users.file.hash_of(&creds.user).map(str::to_owned) else {
            return Ok(None);
        };
        let password = creds.password.clone();
        let stamp = hash.clone();
        let ok = self
            .pool
            .run(move || bcrypt::verify(&password, &hash).unwrap_or(false))
            .await
            .map_err(|_| AuthFailure::Unavailable)?;
        // an empty password is never valid, but still costs a verification
        if !ok || creds.password.is_empty() {
            return Err(AuthFailure::BadCredentials);
        }
        let id = Arc::new(Identity {
            user: creds.user.clone(),
            credential_stamp: Some(stamp),
            backend: "htpasswd",
            groups: Vec::new(),
            credential: Credential::Password,
            restriction: None,
        });
        if self.generation.load(Ordering::SeqCst) == generation {
            self.cache
                .insert(&creds.user, &creds.password, Arc::clone(&id));
        }
        Ok(Some(id))
    }

    /// `Ok(None)`: the directory does not know the user.
    async fn verify_ldap(
        &self,
        creds: &BasicCredentials,
    ) -> Result<Option<Arc<Identity>>, AuthFailure> {
        let Some(ldap) = &self.ldap else {
            return Ok(None);
        };
        let started = std::time::Instant::now();
        let verdict = ldap.authenticate(&creds.user, &creds.password).await;
        crate::observe::metrics::metrics()
            .ldap_duration
            .with_label_values(&["login"])
            .observe(started.elapsed().as_secs_f64());
        match verdict {
            Ok(v) => {
                self.ldap_down.store(false, Ordering::SeqCst);
                match v {
                    LdapVerdict::Authenticated {
                        user,
                        groups,
                        password_changed,
                        ..
                    } => {
                        let id = Arc::new(Identity {
                            user,
                            credential_stamp: password_changed,
                            backend: "ldap",
                            groups,
                            credential: Credential::Password,
                            restriction: None,
                        });
                        if let Some(c) = &self.ldap_cache {
                            c.insert(&creds.user, &creds.password, Arc::clone(&id));
                        }
                        Ok(Some(id))
                    }
                    LdapVerdict::BadPassword => Err(AuthFailure::BadCredentials),
                    LdapVerdict::UnknownUser => Ok(None),
                }
            }
            Err(e) => {
                if e.is_outage() {
                    self.ldap_down.store(true, Ordering::SeqCst);
                }
                tracing::error!(target: "auth", error = %e, "directory unavailable: login refused (fail closed)");
                Err(AuthFailure::Unavailable)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HtpasswdConfig;

    fn setup(entries: &[(&str, &str)]) -> (tempfile::TempDir, Authenticator) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        write(&path, entries);
        let cfg = AuthConfig {
            htpasswd: Some(HtpasswdConfig { path }),
            ..AuthConfig::default()
        };
        (dir, Authenticator::new(&cfg).unwrap())
    }

    fn write(path: &Path, entries: &[(&str, &str)]) {
        let text: String = entries
            .iter()
            .map(|(u, p)| format!("{u}:{}\n", bcrypt::hash(p, 4).unwrap()))
            .collect();
        std::fs::write(path, text).unwrap();
    }

    fn creds(u: &str, p: &str) -> BasicCredentials {
        BasicCredentials {
            user: u.into(),
            password: p.into(),
        }
    }

    #[tokio::test]
    async fn verifies_and_refuses() {
        let (_d, a) = setup(&[("alice", "secret")]);
        assert_eq!(
            a.verify(&creds("alice", "secret")).await.unwrap().user,
            "alice"
        );
        assert_eq!(
            a.verify(&creds("alice", "nope")).await,
            Err(AuthFailure::BadCredentials)
        );
        assert_eq!(
            a.verify(&creds("alice", "")).await,
            Err(AuthFailure::BadCredentials)
        );
        assert_eq!(
            a.verify(&creds("bob", "secret")).await,
            Err(AuthFailure::UnknownUser)
        );
    }

    #[tokio::test]
    async fn dummy_hash_matches_file_cost() {
        let (_d, a) = setup(&[("alice", "secret")]);
        assert_eq!(&a.users.load().dummy[..7], "$2b$04$");
    }

    #[tokio::test]
    async fn reload_swaps_users_and_clears_cache() {
        let (d, a) = setup(&[("alice", "secret")]);
        assert!(a.verify(&creds("alice", "secret")).await.is_ok());
        let path = d.path().join("htpasswd");
        write(&path, &[("bob", "pw")]);
        assert_eq!(a.reload().unwrap(), 1);
        // the cached alice entry must not survive the reload
        assert_eq!(
            a.verify(&creds("alice", "secret")).await,
            Err(AuthFailure::UnknownUser)
        );
        assert!(a.verify(&creds("bob", "pw")).await.is_ok());
        // a broken file keeps the previous users
        std::fs::write(&path, "bob:$apr1$x$y\n").unwrap();
        assert!(a.reload().is_err());
        assert!(a.verify(&creds("bob", "pw")).await.is_ok());
    }
}
