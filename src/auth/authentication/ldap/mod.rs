//! LDAP and Active Directory logins (`[auth.ldap]`).
//!
//! Two ways to check a password: search-then-bind (a service account, or
//! an anonymous search, finds the user's entry with `user_filter`; exactly
//! one entry must match; then the backend binds as that DN) and direct
//! bind (`user_dn_template`: bind as a DN or an AD userPrincipalName made
//! from the user name, then read the entry).
//!
//! Rules that are easy to get wrong:
//! - an empty password is refused before anything is sent: a simple bind
//!   with an empty password is an *unauthenticated* bind, which many
//!   directories (Active Directory among them) answer with success;
//! - user input is escaped: RFC 4515 in filters, RFC 4514 in DNs;
//! - zero entries and several entries are both "unknown user": an
//!   ambiguous name must not pick one of the accounts;
//! - a user outside `required_group` is "unknown user" too (the password
//!   is not tried in search mode), so the next backend of a chain may
//!   still know the name;
//! - anything else going wrong (no server reachable, a timeout, an answer
//!   that makes no sense) is an [`LdapError`]: fail closed.
//!
//! Pingora runs its services on several tokio runtimes, and a socket
//! belongs to the runtime that opened it. The backend therefore owns a
//! small runtime of its own: connections are opened, pooled and driven
//! there, and callers on any runtime only await a handle to the work.

mod directory;
pub mod groups;
mod pool;
pub mod query;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::config::ldap::LdapConfig;
use crate::config::SecretError;
use directory::Directory;
pub use query::{Queries, QueryError};

/// What the directory says about a user name and password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LdapVerdict {
    /// The password is right. `user` is the directory's own value of
    /// `user_attribute` (not the name as typed: the directory matches
    /// `MALLORY` and ` mallory` to `mallory`); `groups` are named as
    /// `group_name` says; `password_changed` is the value of
    /// `password_changed_attribute`, if the entry shows one.
    Authenticated {
        dn: String,
        user: String,
        groups: Vec<String>,
        password_changed: Option<String>,
    },
    /// No entry, several entries, not in `required_group`, or a name no
    /// directory entry can have.
    UnknownUser,
    /// The bind was refused (or the password was empty). In direct-bind
    /// mode an unknown name also ends here: the directory does not say.
    BadPassword,
}

/// A user as found, without a password check (`portcullis check --ldap`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdapEntry {
    pub dn: String,
    /// The identity: the entry's value of `user_attribute`.
    pub user: String,
    pub groups: Vec<String>,
    pub password_changed: Option<String>,
    /// False if `required_group` is set and the user is not in it.
    pub in_required_group: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LdapError {
    /// The config cannot work, each problem under its key.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Config(Vec<crate::config::Problem>),
    #[error("auth.ldap.bind_password: {0}")]
    Secret(#[from] SecretError),
    #[error("auth.ldap.ca_file {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error("cannot start the LDAP runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("no LDAP server reachable: {0}")]
    Unreachable(String),
    #[error("LDAP {op} timed out after {after:?}")]
    Timeout { op: &'static str, after: Duration },
    #[error("LDAP {op} failed: {reason}")]
    Directory { op: &'static str, reason: String },
    #[error("the LDAP service account {dn} was refused: {reason}")]
    ServiceBind { dn: String, reason: String },
    #[error("too many LDAP logins waiting (auth.ldap.max_concurrency)")]
    Busy,
    #[error("the LDAP worker has stopped")]
    Stopped,
}

impl LdapError {
    /// Setup errors under the config key they concern.
    pub fn problems(&self) -> Vec<crate::config::Problem> {
        use crate::config::Problem;
        match self {
            LdapError::Config(p) => p.clone(),
            LdapError::Secret(e) => vec![Problem::new("auth.ldap.bind_password", e.to_string())],
            LdapError::CaFile { path, reason } => vec![Problem::new(
                "auth.ldap.ca_file",
                format!("{}: {reason}", path.display()),
            )],
            e => vec![Problem::new("auth.ldap", e.to_string())],
        }
    }

    /// Whether this is the directory being away or slow (as opposed to a
    /// config that can never work): what `allow_stale_on_outage` is about.
    pub fn is_outage(&self) -> bool {
        matches!(
            self,
            LdapError::Unreachable(_)
                | LdapError::Timeout { .. }
                | LdapError::Directory { .. }
                | LdapError::Busy
        )
    }
}

pub struct LdapBackend {
    directory: Arc<Directory>,
    permits: Arc<Semaphore>,
    timeout: Duration,
    allow_stale_on_outage: bool,
    cache_ttl: Option<Duration>,
    runtime: OwnedRuntime,
}

/// The backend's runtime; shut down without blocking when the backend is
/// dropped (which may happen inside another runtime's task).
struct OwnedRuntime(Option<tokio::runtime::Runtime>);

impl OwnedRuntime {
    fn handle(&self) -> Option<&tokio::runtime::Handle> {
        self.0.as_ref().map(|rt| rt.handle())
    }
}

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl LdapBackend {
    /// Checks the config, reads the secret and CA file, and starts the
    /// backend's runtime. Connects lazily: a directory that is down at
    /// start-up is not an error here.
    pub fn new(cfg: &LdapConfig) -> Result<LdapBackend, LdapError> {
        let problems = cfg.validate("auth.ldap");
        if !problems.is_empty() {
            return Err(LdapError::Config(problems));
        }
        let queries = Queries::new(cfg).map_err(|e| {
            LdapError::Config(vec![crate::config::Problem::new(
                format!("auth.ldap.{}", e.key),
                e.reason,
            )])
        })?;
        let password = cfg
            .bind_password
            .as_ref()
            .map(|s| s.resolve())
            .transpose()?;
        let directory = Directory {
            pool: pool::Pool::new(cfg, password)?,
            queries,
            group_name: cfg.group_name,
            required_group: cfg.required_group.clone(),
            nested_depth: cfg.nested_group_depth,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("portcullis-ldap")
            .enable_all()
            .build()
            .map_err(LdapError::Runtime)?;
        Ok(LdapBackend {
            directory: Arc::new(directory),
            permits: Arc::new(Semaphore::new(cfg.max_concurrency)),
            timeout: cfg.timeout,
            allow_stale_on_outage: cfg.allow_stale_on_outage,
            cache_ttl: cfg.cache_ttl,
            runtime: OwnedRuntime(Some(runtime)),
        })
    }

    /// Checks a user name and password against the directory. Callable
    /// from any runtime; the work runs on the backend's own.
    pub async fn authenticate(&self, user: &str, password: &str) -> Result<LdapVerdict, LdapError> {
        // Before anything reaches the directory: an empty password would
        // be an unauthenticated bind, which succeeds.
        if password.is_empty() {
            return Ok(LdapVerdict::BadPassword);
        }
        if !query::plausible_username(user) {
            return Ok(LdapVerdict::UnknownUser);
        }
        let (user, password) = (user.to_owned(), password.to_owned());
        self.run(move |d| async move { d.authenticate(&user, &password).await })
            .await
    }

    /// The user's DN and groups, without a password; `None` where
    /// [`LdapBackend::authenticate`] would answer `UnknownUser` before
    /// trying a password (not found, several entries, not in
    /// `required_group`).
    pub async fn lookup(&self, user: &str) -> Result<Option<LdapEntry>, LdapError> {
        Ok(self.find(user).await?.filter(|e| e.in_required_group))
    }

    /// Like [`LdapBackend::lookup`], but also reports a user found outside
    /// `required_group` (for diagnostics).
    pub async fn find(&self, user: &str) -> Result<Option<LdapEntry>, LdapError> {
        if !query::plausible_username(user) {
            return Ok(None);
        }
        let user = user.to_owned();
        self.run(move |d| async move { d.find(&user).await }).await
    }

    /// `auth.ldap.allow_stale_on_outage`, for the credential cache.
    pub fn allow_stale_on_outage(&self) -> bool {
        self.allow_stale_on_outage
    }

    /// `auth.ldap.cache_ttl`, if it overrides `auth.cache_ttl`.
    pub fn cache_ttl(&self) -> Option<Duration> {
        self.cache_ttl
    }

    /// Runs `work` on the backend's runtime, at most `max_concurrency` at a
    /// time; a login that cannot start within `timeout` is refused.
    ///
    /// If the caller stops waiting, the work still finishes (bounded by the
    /// timeouts), so a connection is never abandoned mid-operation.
    async fn run<T, F, Fut>(&self, work: F) -> Result<T, LdapError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Directory>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, LdapError>> + Send + 'static,
    {
        let handle = self.runtime.handle().ok_or(LdapError::Stopped)?;
        let directory = Arc::clone(&self.directory);
        let permits = Arc::clone(&self.permits);
        let wait = self.timeout;
        let task = handle.spawn(async move {
            let _permit = match tokio::time::timeout(wait, permits.acquire_owned()).await {
                Ok(Ok(p)) => p,
                Ok(Err(_)) => return Err(LdapError::Stopped),
                Err(_) => return Err(LdapError::Busy),
            };
            work(directory).await
        });
        task.await.map_err(|e| {
            tracing::error!(error = %e, "LDAP task failed");
            LdapError::Stopped
        })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(url: &str) -> LdapBackend {
        let mut cfg = LdapConfig::new(vec![url.parse().unwrap()], "dc=example,dc=org");
        cfg.connect_timeout = Duration::from_millis(500);
        LdapBackend::new(&cfg).unwrap()
    }

    /// A port nothing listens on: any attempt to use it fails.
    fn dead_url() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("ldap://127.0.0.1:{}", l.local_addr().unwrap().port())
    }

    #[tokio::test]
    async fn empty_password_is_refused_without_the_directory() {
        // No server at all: an attempt to connect would be an error.
        let b = backend(&dead_url());
        assert_eq!(
            b.authenticate("alice", "").await.unwrap(),
            LdapVerdict::BadPassword
        );
        assert!(b.authenticate("alice", "pw").await.is_err());
    }

    #[tokio::test]
    async fn implausible_names_are_unknown_without_the_directory() {
        let b = backend(&dead_url());
        for u in ["", "a\0b", "line\nbreak"] {
            assert_eq!(
                b.authenticate(u, "pw").await.unwrap(),
                LdapVerdict::UnknownUser,
                "{u:?}"
            );
            assert_eq!(b.lookup(u).await.unwrap(), None);
        }
    }

    #[tokio::test]
    async fn unreachable_directory_fails_closed() {
        let b = backend(&dead_url());
        let e = b.authenticate("alice", "pw").await.unwrap_err();
        assert!(matches!(e, LdapError::Unreachable(_)), "{e}");
        assert!(e.is_outage());
        assert!(b.lookup("alice").await.is_err());
    }

    #[test]
    fn bad_config_is_refused() {
        let cfg = LdapConfig::new(vec!["http://x".parse().unwrap()], "");
        let e = LdapBackend::new(&cfg).err().unwrap().to_string();
        assert!(
            e.contains("auth.ldap.urls") && e.contains("auth.ldap.base_dn"),
            "{e}"
        );
    }

    #[test]
    fn dropping_inside_a_runtime_does_not_panic() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async { drop(backend(&dead_url())) });
    }
}
