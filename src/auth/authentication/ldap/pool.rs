//! Connections to the directory: failover over the configured URLs, TLS,
//! the service bind, and a small pool of idle connections.
//!
//! Everything here runs on the backend's own runtime: an ldap3 connection
//! is driven by a task of the runtime that opened it.
//!
//! A connection is leased to one login at a time. Binds change a
//! connection's identity, so service connections (bound once as the
//! service account, used for searches) and bind connections (used to check
//! users' passwords) are kept apart and never mixed.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::LdapError;
use crate::config::ldap::LdapConfig;

/// How long a server that failed is tried only after the others.
const COOL_DOWN: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Bound as the service account (or anonymous): searches.
    Service,
    /// Checks user passwords; bound as whoever bound last.
    Bind,
}

/// What a failed operation means for the connection.
#[derive(Debug)]
pub enum OpError {
    /// The connection failed (closed, reset): worth one retry on a fresh
    /// one if it was a pooled connection.
    Transport(String),
    /// The operation took longer than the timeout.
    Timeout,
}

pub struct Pool {
    urls: Vec<url::Url>,
    settings: LdapConnSettings,
    pub op_timeout: Duration,
    service: Option<(String, String)>,
    pool_size: usize,
    idle: [Mutex<Vec<Ldap>>; 2],
    /// Per URL: until when it is tried last.
    cooling: Mutex<Vec<Option<Instant>>>,
}

impl Pool {
    pub fn new(cfg: &LdapConfig, service_password: Option<String>) -> Result<Pool, LdapError> {
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(cfg.connect_timeout)
            .set_starttls(cfg.starttls);
        match &cfg.ca_file {
            Some(path) => settings = settings.set_config(client_config(path)?),
            // ldap3 then builds its config from the system roots with the
            // process's default provider; make sure there is one (ring,
            // like the rest of portcullis).
            None => {
                let _ = rustls::crypto::ring::default_provider().install_default();
            }
        }
        let service = match (&cfg.bind_dn, service_password) {
            (Some(dn), Some(pw)) => Some((dn.clone(), pw)),
            _ => None,
        };
        Ok(Pool {
            urls: cfg.urls.clone(),
            settings,
            op_timeout: cfg.timeout,
            service,
            pool_size: cfg.pool_size,
            idle: [Mutex::new(Vec::new()), Mutex::new(Vec::new())],
            cooling: Mutex::new(vec![None; cfg.urls.len()]),
        })
    }

    pub fn has_service_account(&self) -> bool {
        self.service.is_some()
    }

    fn idle(&self, kind: Kind) -> &Mutex<Vec<Ldap>> {
        &self.idle[kind as usize]
    }

    /// A pooled connection if one is open, else a new one.
    pub async fn get(&self, kind: Kind) -> Result<Lease<'_>, LdapError> {
        loop {
            let pooled = self.idle(kind).lock().ok().and_then(|mut v| v.pop());
            match pooled {
                Some(mut ldap) => {
                    if !ldap.is_closed() {
                        return Ok(Lease::new(self, kind, ldap, true));
                    }
                }
                None => return self.connect(kind).await,
            }
        }
    }

    /// Runs `op` on a leased connection. A pooled connection that turns out
    /// dead (the server restarted) is replaced by a fresh one, once.
    pub async fn first<T, F, Fut>(
        &self,
        kind: Kind,
        what: &'static str,
        op: F,
    ) -> Result<(Lease<'_>, T), LdapError>
    where
        F: Fn(Ldap) -> Fut,
        Fut: Future<Output = ldap3::result::Result<T>>,
    {
        let mut lease = self.get(kind).await?;
        match lease.run(&op).await {
            Ok(v) => Ok((lease, v)),
            Err(OpError::Transport(reason)) if lease.reused => {
                tracing::debug!(%reason, "pooled LDAP connection is dead; reconnecting");
                drop(lease);
                self.discard_idle(kind);
                let mut lease = self.connect(kind).await?;
                let v = lease.run(&op).await.map_err(|e| e.into_error(what, self))?;
                Ok((lease, v))
            }
            Err(e) => Err(e.into_error(what, self)),
        }
    }

    /// Closes the idle connections of a kind: after one was found dead,
    /// the others (made to the same server) likely are too.
    fn discard_idle(&self, kind: Kind) {
        if let Ok(mut v) = self.idle(kind).lock() {
            v.clear();
        }
    }

    /// Connects to the first URL that answers, those that failed lately last.
    async fn connect(&self, kind: Kind) -> Result<Lease<'_>, LdapError> {
        let now = Instant::now();
        let mut order: Vec<usize> = (0..self.urls.len()).collect();
        if let Ok(cooling) = self.cooling.lock() {
            order.sort_by_key(|&i| cooling.get(i).copied().flatten().is_some_and(|t| t > now));
        }
        let mut failures = Vec::new();
        for i in order {
            let url = &self.urls[i];
            match self.open(url, kind).await {
                Ok(ldap) => {
                    self.set_cooling(i, None);
                    return Ok(Lease::new(self, kind, ldap, false));
                }
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Next(reason)) => {
                    tracing::warn!(url = %url, %reason, "LDAP server unavailable");
                    self.set_cooling(i, Some(now + COOL_DOWN));
                    failures.push(format!("{url}: {reason}"));
                }
            }
        }
        Err(LdapError::Unreachable(failures.join("; ")))
    }

    fn set_cooling(&self, i: usize, until: Option<Instant>) {
        if let Ok(mut c) = self.cooling.lock() {
            if let Some(slot) = c.get_mut(i) {
                *slot = until;
            }
        }
    }

    async fn open(&self, url: &url::Url, kind: Kind) -> Result<Ldap, Failure> {
        // ldap3's own timeout covers TCP, StartTLS and the TLS handshake.
        let (conn, mut ldap) = LdapConnAsync::from_url_with_settings(self.settings.clone(), url)
            .await
            .map_err(|e| Failure::Next(e.to_string()))?;
        ldap3::drive!(conn);
        if let (Kind::Service, Some((dn, pw))) = (kind, &self.service) {
            let bound = tokio::time::timeout(self.op_timeout, ldap.simple_bind(dn, pw)).await;
            match bound {
                Err(_) => return Err(Failure::Next("service bind timed out".to_owned())),
                Ok(Err(e)) => return Err(Failure::Next(e.to_string())),
                Ok(Ok(r)) if r.rc == 0 => {}
                // Wrong service credentials are a config error, not an
                // outage: another replica would refuse them too.
                Ok(Ok(r)) if r.rc == 49 => {
                    return Err(Failure::Fatal(LdapError::ServiceBind {
                        dn: dn.clone(),
                        reason: r.to_string(),
                    }))
                }
                Ok(Ok(r)) => return Err(Failure::Next(format!("service bind: {r}"))),
            }
        }
        Ok(ldap)
    }
}

enum Failure {
    /// Try the next server.
    Next(String),
    /// Stop: the config is wrong.
    Fatal(LdapError),
}

impl OpError {
    fn into_error(self, what: &'static str, pool: &Pool) -> LdapError {
        match self {
            OpError::Transport(reason) => LdapError::Directory { op: what, reason },
            OpError::Timeout => LdapError::Timeout {
                op: what,
                after: pool.op_timeout,
            },
        }
    }
}

/// One connection, used by one login; back to the pool when dropped,
/// unless an operation on it failed.
pub struct Lease<'a> {
    pool: &'a Pool,
    kind: Kind,
    ldap: Ldap,
    reused: bool,
    broken: bool,
}

impl<'a> Lease<'a> {
    fn new(pool: &'a Pool, kind: Kind, ldap: Ldap, reused: bool) -> Self {
        Lease {
            pool,
            kind,
            ldap,
            reused,
            broken: false,
        }
    }

    /// Runs one operation within the operation timeout.
    pub async fn run<T, F, Fut>(&mut self, op: &F) -> Result<T, OpError>
    where
        F: Fn(Ldap) -> Fut,
        Fut: Future<Output = ldap3::result::Result<T>>,
    {
        match tokio::time::timeout(self.pool.op_timeout, op(self.ldap.clone())).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.broken = true;
                Err(OpError::Transport(e.to_string()))
            }
            Err(_) => {
                // the answer may still come: the connection's state is unknown
                self.broken = true;
                Err(OpError::Timeout)
            }
        }
    }

    /// [`Lease::run`] with the error made final (no retry).
    pub async fn op<T, F, Fut>(&mut self, what: &'static str, op: F) -> Result<T, LdapError>
    where
        F: Fn(Ldap) -> Fut,
        Fut: Future<Output = ldap3::result::Result<T>>,
    {
        let pool = self.pool;
        self.run(&op).await.map_err(|e| e.into_error(what, pool))
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if self.broken || self.ldap.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.pool.idle(self.kind).lock() {
            if idle.len() < self.pool.pool_size {
                idle.push(self.ldap.clone());
            }
        }
    }
}

/// A rustls config trusting only the roots in `path`.
fn client_config(path: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, LdapError> {
    let err = |reason: String| LdapError::CaFile {
        path: path.to_owned(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| err(e.to_string()))?;
        roots.add(cert).map_err(|e| err(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(err("no certificate found".to_owned()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
