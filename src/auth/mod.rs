//! Authentication: who is this request from?
//!
//! Basic credentials are checked against the htpasswd backend; verified
//! pairs are cached so the bcrypt cost is paid once per TTL, not once per
//! request, and bcrypt itself runs on a bounded pool off the proxy workers.

pub mod acl;
pub mod basic;
pub mod cache;
pub mod gate;
pub mod groups;
pub mod hash_pool;
pub mod htpasswd;
pub mod ldap;
pub mod principal;
pub mod throttle;
pub mod token;
pub mod token_endpoint;
pub mod upstream_token;

use arc_swap::ArcSwap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::config::AuthConfig;
use basic::BasicCredentials;
use cache::CredentialCache;
use hash_pool::HashPool;
use htpasswd::{Htpasswd, HtpasswdError};

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    /// Which backend vouched for the user (for logs and metrics).
    pub backend: &'static str,
    /// Groups the backend knows the user by (a directory's); the config's
    /// static groups are added when the principal is made.
    pub groups: Vec<String>,
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
}

impl AuthFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::BadCredentials => "bad_credentials",
            AuthFailure::UnknownUser => "unknown_user",
            AuthFailure::Unavailable => "backend_error",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("auth.htpasswd.path: {0}")]
    Htpasswd(#[from] HtpasswdError),
    #[error("cannot start the hashing threads: {0}")]
    Threads(#[from] std::io::Error),
    #[error("cannot make the dummy hash: {0}")]
    Dummy(#[from] bcrypt::BcryptError),
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
    htpasswd_path: PathBuf,
    users: ArcSwap<Users>,
    /// Bumped on every reload so a verification that raced with a reload
    /// does not cache a result of the old file.
    generation: AtomicU64,
    cache: CredentialCache,
    pool: HashPool,
}

impl Authenticator {
    pub fn new(cfg: &AuthConfig) -> Result<Self, AuthSetupError> {
        let path = cfg
            .htpasswd
            .as_ref()
            .map(|h| h.path.clone())
            .unwrap_or_default();
        let users = Users::new(Htpasswd::load(&path)?, None)?;
        Ok(Authenticator {
            htpasswd_path: path,
            users: ArcSwap::from_pointee(users),
            generation: AtomicU64::new(0),
            cache: CredentialCache::new(cfg.cache_ttl, cfg.cache_size),
            pool: HashPool::new(cfg.hash_threads)?,
        })
    }

    pub fn htpasswd_path(&self) -> &Path {
        &self.htpasswd_path
    }

    /// Whether the user still exists (refresh tokens outlive logins).
    pub fn has_user(&self, user: &str) -> bool {
        self.users.load().file.hash_of(user).is_some()
    }

    /// The backend named in metrics for failures (no user is known then).
    pub fn backend_name(&self) -> &'static str {
        "htpasswd"
    }

    pub fn user_count(&self) -> usize {
        self.users.load().file.len()
    }

    /// Re-reads the htpasswd file. On error the previous users stay.
    pub fn reload(&self) -> Result<usize, AuthSetupError> {
        let file = Htpasswd::load(&self.htpasswd_path)?;
        let users = Users::new(file, Some(&self.users.load()))?;
        let n = users.file.len();
        self.users.store(Arc::new(users));
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.cache.clear();
        Ok(n)
    }

    /// Checks Basic credentials. Never runs bcrypt on the calling thread.
    pub async fn verify(&self, creds: &BasicCredentials) -> Result<Arc<Identity>, AuthFailure> {
        let cache = &crate::observe::metrics::metrics().credential_cache;
        if let Some(id) = self.cache.get(&creds.user, &creds.password) {
            cache.with_label_values(&["hit"]).inc();
            return Ok(id);
        }
        cache.with_label_values(&["miss"]).inc();
        let generation = self.generation.load(Ordering::SeqCst);
        let users = self.users.load_full();
        let (hash, known) = match users.file.hash_of(&creds.user) {
            Some(h) => (h.to_owned(), true),
            None => (users.dummy.clone(), false),
        };
        // An empty password is never valid, but still costs a verification.
        let password = creds.password.clone();
        let ok = self
            .pool
            .run(move || bcrypt::verify(&password, &hash).unwrap_or(false))
            .await
            .map_err(|_| AuthFailure::Unavailable)?;
        match (known, ok && !creds.password.is_empty()) {
            (true, true) => {
                let id = Arc::new(Identity {
                    user: creds.user.clone(),
                    backend: "htpasswd",
                    groups: Vec::new(),
                });
                if self.generation.load(Ordering::SeqCst) == generation {
                    self.cache
                        .insert(&creds.user, &creds.password, Arc::clone(&id));
                }
                Ok(id)
            }
            (true, false) => Err(AuthFailure::BadCredentials),
            (false, _) => Err(AuthFailure::UnknownUser),
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
