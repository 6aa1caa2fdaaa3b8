//! The renewal loop, run as a background service with a runtime of its
//! own, so no socket of the ACME client ever belongs to the proxy's.
//!
//! A renewing instance orders what is missing or due, retries failures
//! with capped exponential backoff, and asks the CA (ARI) whether to
//! renew earlier. A follower only watches the state directory. Either
//! way a new certificate goes into the [`CertStore`] in one swap; until
//! then the previous one (or the fallback) keeps serving.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use instant_acme::{Account, CertificateIdentifier};

use super::challenge::Challenges;
use super::client::{self, ClientError, OrderRequest};
use super::metrics::AcmeMetrics;
use super::schedule::{self, Validity};
use super::state::StateDir;
use super::AcmeError;
use crate::config::acme::{AcmeConfig, CertSpec, ChallengeType, Role};
use crate::tls::pem::{self, LoadedCert};
use crate::tls::store::CertStore;

/// An order that takes longer than this is abandoned and retried.
const ORDER_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// The loop wakes at least this often (clock changes, suspend).
const MAX_SLEEP: i64 = 60;

/// Where the listeners are, so the first order waits until they answer.
pub struct Listeners {
    pub tls: SocketAddr,
    pub http: Option<SocketAddr>,
}

struct Slot {
    spec: CertSpec,
    current: Option<Current>,
    /// Unix seconds of the next order (renewal or retry).
    due: i64,
    /// Unix seconds of the next ARI query.
    ari_next: i64,
    /// Follower: the state file content last seen.
    last_file: Option<Vec<u8>>,
}

struct Current {
    validity: Validity,
    id: Option<CertificateIdentifier<'static>>,
}

pub struct Manager {
    cfg: AcmeConfig,
    slots: Vec<Slot>,
    store: Arc<CertStore>,
    state: StateDir,
    challenges: Arc<Challenges>,
    metrics: Arc<AcmeMetrics>,
    account: Option<Account>,
    /// Whether the CA offers ARI; unknown until asked.
    ari: Option<bool>,
    /// The listener the CA validates on, and whether it speaks TLS.
    wait_for: Option<(SocketAddr, bool)>,
    watch_interval: Duration,
}

impl Manager {
    /// Installs the stored certificates that are still good, so the first
    /// handshake after a restart already gets them.
    pub fn new(
        cfg: &AcmeConfig,
        store: Arc<CertStore>,
        listeners: &Listeners,
        watch_interval: Duration,
        fallback_self_signed: bool,
    ) -> Result<Manager, AcmeError> {
        let specs = cfg.specs();
        let state = StateDir::new(&cfg.state_dir);
        state.ensure()?;
        let shared = (cfg.role == Role::Follow).then(|| state.clone());
        let metrics = Arc::new(AcmeMetrics::new(
            cfg.challenge.as_str(),
            match cfg.role {
                Role::Renew => "renew",
                Role::Follow => "follow",
            },
            &specs,
        ));
        let wait_for = match cfg.challenge {
            ChallengeType::Http01 => listeners.http.map(|a| (loopback(a), false)),
            ChallengeType::TlsAlpn01 => Some((loopback(listeners.tls), true)),
        };
        let mut m = Manager {
            cfg: cfg.clone(),
            slots: specs
                .into_iter()
                .map(|spec| Slot {
                    spec,
                    current: None,
                    due: 0,
                    ari_next: 0,
                    last_file: None,
                })
                .collect(),
            store,
            state,
            challenges: Arc::new(Challenges::new(shared)),
            metrics,
            account: None,
            ari: None,
            wait_for,
            watch_interval,
        };
        let fallback = if fallback_self_signed {
            "a self-signed fallback"
        } else {
            "the default certificate (tls.cert)"
        };
        for i in 0..m.slots.len() {
            match m.load_stored(i) {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(target: "acme", error = %e, "ignoring the stored certificate")
                }
            }
            tracing::warn!(
                target: "acme",
                name = m.slots[i].spec.name,
                domains = ?m.slots[i].spec.domains,
                "no ACME certificate yet: serving {fallback} for these names until the first is issued"
            );
        }
        m.metrics.publish();
        Ok(m)
    }

    pub fn challenges(&self) -> Arc<Challenges> {
        Arc::clone(&self.challenges)
    }

    pub fn metrics(&self) -> Arc<AcmeMetrics> {
        Arc::clone(&self.metrics)
    }

    /// Renews (or follows the renewing replica) until the process ends;
    /// run by [`super::AcmeService`] on the runtime of its own, so no
    /// socket of the ACME client belongs to one of the proxy's runtimes.
    pub async fn run(self) {
        match self.cfg.role {
            Role::Renew => self.renew_loop().await,
            Role::Follow => self.follow_loop().await,
        }
    }

    /// Reads and installs slot `i`'s state file. Ok(false): nothing usable.
    fn load_stored(&mut self, i: usize) -> Result<bool, AcmeError> {
        let path = self.state.cert_path(&self.slots[i].spec.name);
        let Some(bytes) = self.state.read(&path)? else {
            return Ok(false);
        };
        self.slots[i].last_file = Some(bytes.clone());
        let loaded = pem::parse_pair(&bytes, &bytes, &path, &path)?;
        let spec = &self.slots[i].spec;
        if let Some(missing) = spec
            .domains
            .iter()
            .find(|d| !loaded.info.names.iter().any(|n| n.eq_ignore_ascii_case(d)))
        {
            tracing::info!(target: "acme", name = spec.name, missing, "the stored certificate does not cover every configured name: ordering a new one");
            return Ok(false);
        }
        if loaded.info.not_after <= unix_now() {
            tracing::info!(target: "acme", name = spec.name, not_after = %at(loaded.info.not_after), "the stored certificate has expired: ordering a new one");
            return Ok(false);
        }
        self.install(i, loaded);
        let s = &self.slots[i];
        tracing::info!(
            target: "acme",
            name = s.spec.name,
            not_after = %at(s.current.as_ref().map_or(0, |c| c.validity.not_after)),
            renew_at = %at(s.due),
            "using the stored ACME certificate"
        );
        Ok(true)
    }

    /// Serves `loaded` for the slot's names and schedules its renewal.
    fn install(&mut self, i: usize, loaded: LoadedCert) {
        let leaf = loaded.key.cert.first().map(|c| c.as_ref().to_vec());
        let validity = leaf.as_deref().and_then(validity).unwrap_or(Validity {
            not_before: unix_now(),
            not_after: loaded.info.not_after,
        });
        let slot = &mut self.slots[i];
        self.store.set_for_names(&slot.spec.domains, loaded);
        slot.due = schedule::renew_at(
            validity,
            self.cfg.renew_remaining_share,
            self.cfg.renew_jitter,
            rand::random(),
        );
        slot.ari_next = 0;
        slot.current = Some(Current {
            validity,
            id: leaf.as_deref().and_then(client::certificate_id),
        });
        let m = self.metrics.cert(i);
        m.installed(validity.not_after);
        m.scheduled(slot.due);
    }

    async fn renew_loop(mut self) {
        self.wait_for_listener().await;
        loop {
            for i in 0..self.slots.len() {
                if self.slots[i].due <= unix_now() {
                    self.attempt(i).await;
                }
            }
            self.check_ari().await;
            let now = unix_now();
            let next = self
                .slots
                .iter()
                .flat_map(|s| {
                    let ari =
                        (self.ari != Some(false) && s.current.is_some()).then_some(s.ari_next);
                    std::iter::once(s.due).chain(ari)
                })
                .min()
                .unwrap_or(now + MAX_SLEEP);
            tokio::time::sleep(Duration::from_secs((next - now).clamp(1, MAX_SLEEP) as u64)).await;
        }
    }

    /// The CA validates against our listener: do not ask before it is up.
    async fn wait_for_listener(&self) {
        let Some((addr, tls)) = self.wait_for else {
            return;
        };
        if !super::probe::until_up(addr, tls).await {
            tracing::warn!(target: "acme", %addr, "the listener does not answer; ordering anyway");
        }
    }

    /// One order for slot `i`; on failure the next try is backed off.
    async fn attempt(&mut self, i: usize) {
        let m = Arc::clone(&self.metrics);
        let m = m.cert(i);
        m.attempt();
        let name = self.slots[i].spec.name.clone();
        let renewal = self.slots[i].current.is_some();
        tracing::info!(
            target: "acme",
            name,
            domains = ?self.slots[i].spec.domains,
            challenge = self.cfg.challenge.as_str(),
            "{}",
            if renewal { "renewing the certificate" } else { "ordering the first certificate" }
        );
        let result = match tokio::time::timeout(ORDER_TIMEOUT, self.issue(i)).await {
            Ok(r) => r.and_then(|issued| self.store_issued(i, issued)),
            Err(_) => Err(AcmeError::Timeout(ORDER_TIMEOUT)),
        };
        match result {
            Ok(()) => {
                m.succeeded();
                let s = &self.slots[i];
                tracing::info!(
                    target: "acme",
                    name,
                    not_after = %at(s.current.as_ref().map_or(0, |c| c.validity.not_after)),
                    renew_at = %at(s.due),
                    "certificate issued and installed"
                );
            }
            Err(e) => {
                let failures = m.failed();
                let wait =
                    schedule::backoff(failures, self.cfg.retry_backoff, self.cfg.retry_max_backoff);
                let due = unix_now() + wait.as_secs().max(1) as i64;
                self.slots[i].due = due;
                m.scheduled(due);
                tracing::error!(
                    target: "acme",
                    name,
                    error = %e,
                    failures,
                    retry_in_s = wait.as_secs(),
                    "certificate order failed; still serving the {} certificate",
                    if renewal { "current" } else { "fallback" }
                );
            }
        }
    }

    /// Writes the new pair to the state directory and installs it.
    fn store_issued(&mut self, i: usize, issued: client::Issued) -> Result<(), AcmeError> {
        let mut text = issued.chain_pem;
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&issued.key_pem);
        let path = self.state.cert_path(&self.slots[i].spec.name);
        let loaded = pem::parse_pair(text.as_bytes(), text.as_bytes(), &path, &path)?;
        if let Err(e) = self.state.write(&path, text.as_bytes()) {
            // serving it matters more; the next start orders again
            tracing::error!(target: "acme", error = %e, "cannot store the new certificate");
        }
        self.slots[i].last_file = Some(text.into_bytes());
        self.install(i, loaded);
        Ok(())
    }

    async fn issue(&mut self, i: usize) -> Result<client::Issued, AcmeError> {
        let account = self.account().await?;
        let slot = &self.slots[i];
        let replaces = match self.ari {
            Some(true) => slot.current.as_ref().and_then(|c| c.id.clone()),
            _ => None,
        };
        let mut req = OrderRequest {
            domains: &slot.spec.domains,
            challenge: self.cfg.challenge,
            key_type: self.cfg.key_type,
            replaces,
        };
        let first = client::order(&account, &req, &self.challenges, &self.state).await;
        let retry_plain = matches!(&first, Err(ClientError::Acme { what, .. }) if *what == "creating the order")
            && req.replaces.is_some();
        match first {
            Err(e) if client::account_gone(&e) => {
                tracing::warn!(target: "acme", error = %e, "the CA no longer knows the stored account; registering a new one");
                self.account = None;
                let account = client::new_account(&self.cfg, &self.state).await?;
                self.account = Some(account.clone());
                req.replaces = None;
                Ok(client::order(&account, &req, &self.challenges, &self.state).await?)
            }
            Err(e) if retry_plain => {
                tracing::info!(target: "acme", error = %e, "order with ARI replaces refused; ordering without");
                req.replaces = None;
                Ok(client::order(&account, &req, &self.challenges, &self.state).await?)
            }
            r => Ok(r?),
        }
    }

    async fn account(&mut self) -> Result<Account, ClientError> {
        if let Some(a) = &self.account {
            return Ok(a.clone());
        }
        let a = client::account(&self.cfg, &self.state).await?;
        self.account = Some(a.clone());
        Ok(a)
    }

    /// Asks the CA for its renewal window (ARI) when one is due; moves a
    /// renewal earlier when the CA suggests it.
    async fn check_ari(&mut self) {
        if self.ari == Some(false) {
            return;
        }
        for i in 0..self.slots.len() {
            let now = unix_now();
            let slot = &self.slots[i];
            let Some(id) = slot.current.as_ref().and_then(|c| c.id.clone()) else {
                continue;
            };
            if slot.ari_next > now {
                continue;
            }
            let account = match self.account().await {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(target: "acme", error = %e, "no account for ARI yet");
                    self.slots[i].ari_next = now + 3600;
                    continue;
                }
            };
            match account.renewal_info(&id).await {
                Ok((info, again)) => {
                    self.ari = Some(true);
                    let w = info.suggested_window;
                    let at = schedule::in_window(
                        w.start.unix_timestamp(),
                        w.end.unix_timestamp(),
                        rand::random(),
                    );
                    let slot = &mut self.slots[i];
                    slot.ari_next = now + again.as_secs().clamp(3600, 86_400) as i64;
                    if at < slot.due {
                        slot.due = at;
                        self.metrics.cert(i).scheduled(at);
                        tracing::info!(target: "acme", name = slot.spec.name, renew_at = %self::at(at), "the CA's renewal window (ARI) moves the renewal earlier");
                    }
                }
                Err(instant_acme::Error::Unsupported(_)) => {
                    tracing::debug!(target: "acme", "the CA does not offer ARI; renewing by lifetime");
                    self.ari = Some(false);
                    return;
                }
                Err(e) => {
                    tracing::debug!(target: "acme", error = %client::describe(&e), "ARI query failed");
                    self.slots[i].ari_next = now + 3600;
                }
            }
        }
    }

    /// Follower: install whatever the renewing replica writes.
    async fn follow_loop(mut self) {
        loop {
            for i in 0..self.slots.len() {
                self.poll_file(i);
            }
            tokio::time::sleep(self.watch_interval).await;
        }
    }

    fn poll_file(&mut self, i: usize) {
        let path = self.state.cert_path(&self.slots[i].spec.name);
        let bytes = match self.state.read(&path) {
            Ok(Some(b)) => b,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(target: "acme", error = %e, "cannot read the shared state");
                return;
            }
        };
        if self.slots[i].last_file.as_deref() == Some(&bytes[..]) {
            return;
        }
        self.slots[i].last_file = None;
        match self.load_stored(i) {
            Ok(true) => {
                self.metrics.cert(i).succeeded();
                tracing::info!(target: "acme", name = self.slots[i].spec.name, "installed the certificate the renewing replica stored");
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(target: "acme", error = %e, "the shared certificate does not load; keeping the current one")
            }
        }
        self.slots[i].last_file = Some(bytes);
    }
}

/// The validity of a leaf certificate (DER).
fn validity(der: &[u8]) -> Option<Validity> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(Validity {
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// Unix seconds as an RFC 3339 time, for the logs.
fn at(unix: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A wildcard listen address is reached on loopback.
fn loopback(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V4(v4) if v4.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, v4.port()))
        }
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, v6.port()))
        }
        other => other,
    }
}
