//! Keeps what the config names up to date while serving: certificate
//! files, the htpasswd file, the access rules and groups, the upstream's
//! address. Polls every `server.watch_interval`, and reloads at once on
//! SIGHUP (systemctl reload, logrotate) whatever the interval.

use arc_swap::ArcSwap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::app::Policy;
use crate::auth::authentication::Authenticator;
use crate::auth::authorization::acl::Acl;
use crate::auth::token::revocation::RevocationList;
use crate::observe::audit::AuditLog;
use crate::observe::metrics::metrics;
use crate::tls::TlsState;
use crate::upstream::Upstream;
use crate::watch::FileWatch;

/// How often the upstream's name is resolved again.
const RESOLVE_EVERY: Duration = Duration::from_secs(30);

/// What the watcher keeps up to date.
pub struct Watched {
    pub config_path: PathBuf,
    pub groups_file: Option<PathBuf>,
    pub tls: TlsState,
    pub auth: Arc<Authenticator>,
    pub acl: Arc<ArcSwap<Acl>>,
    pub upstream: Arc<ArcSwap<Upstream>>,
    pub audit: Option<Arc<AuditLog>>,
    pub revocations: Option<Arc<RevocationList>>,
}

/// The watcher as a Pingora background service; file reads and parsing
/// run on its blocking pool, never on a proxy worker.
pub struct Watcher {
    state: Arc<Mutex<State>>,
    interval: Duration,
    /// Set by a SIGHUP that arrives before the service runs.
    early_hup: Arc<AtomicBool>,
    auth: Arc<Authenticator>,
}

struct State {
    w: Watched,
    htpasswd: FileWatch,
    tokens: FileWatch,
    revocations: FileWatch,
    policy: FileWatch,
    last_resolve: Instant,
}

impl Watcher {
    /// Registers for SIGHUP at once, so a reload asked for during start-up
    /// is not lost (nor, by the signal's default, fatal).
    pub fn new(w: Watched, interval: Duration) -> std::io::Result<Watcher> {
        let early_hup = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&early_hup))?;
        let mut htpasswd = FileWatch::new(
            w.auth
                .htpasswd_path()
                .map(Path::to_owned)
                .into_iter()
                .collect(),
        );
        htpasswd.changed();
        let auth = Arc::clone(&w.auth);
        let mut tokens = FileWatch::new(w.auth.tokens().map(|t| t.paths()).unwrap_or_default());
        tokens.changed();
        let mut revocations = FileWatch::new(
            w.revocations
                .as_ref()
                .map(|r| r.path().to_owned())
                .into_iter()
                .collect(),
        );
        revocations.changed();
        let mut policy = FileWatch::new(
            std::iter::once(w.config_path.clone())
                .chain(w.groups_file.clone())
                .collect(),
        );
        policy.changed();
        Ok(Watcher {
            state: Arc::new(Mutex::new(State {
                w,
                htpasswd,
                tokens,
                revocations,
                policy,
                last_resolve: Instant::now(),
            })),
            interval,
            early_hup,
            auth,
        })
    }

    async fn round(&self, hangup: bool) {
        let state = Arc::clone(&self.state);
        let work = tokio::task::spawn_blocking(move || match state.lock() {
            Ok(mut s) => s.poll(hangup),
            Err(_) => tracing::error!("the watcher's state is poisoned; no more reloads"),
        });
        if let Err(e) = work.await {
            tracing::error!(error = %e, "a reload round failed");
        }
    }
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for Watcher {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP; reloading on file changes only");
                None
            }
        };
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + self.interval, self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let signalled = tokio::select! {
                _ = shutdown.changed() => {
                    // the uses not yet written
                    if let Some(tokens) = self.auth.tokens() {
                        tokens.flush();
                    }
                    return;
                }
                _ = tick.tick() => false,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
            };
            let hangup = self.early_hup.swap(false, Ordering::SeqCst) || signalled;
            self.round(hangup).await;
        }
    }
}

impl State {
    fn poll(&mut self, hangup: bool) {
        let w = &mut self.w;
        if hangup {
            tracing::info!("SIGHUP: reloading");
            if let Some(audit) = &w.audit {
                if let Err(e) = audit.reopen() {
                    tracing::error!(target: "audit", error = %e, "cannot reopen the audit log");
                }
            }
        }
        if let Some(files) = w.tls.files.as_mut() {
            files.poll(&w.tls.store);
        }
        if let Some(client_auth) = w.tls.client_auth.as_mut() {
            client_auth.poll();
        }
        if self.htpasswd.changed() || hangup {
            reload_users(&w.auth, w.revocations.as_deref());
        }
        if self.tokens.changed() || hangup {
            reload_tokens(&w.auth);
        }
        if let Some(list) = &w.revocations {
            if self.revocations.changed() || hangup {
                reload_revocations(list);
            }
        }
        if let Some(tokens) = w.auth.tokens().filter(|t| t.flush_due()) {
            tokens.flush();
        }
        if self.policy.changed() || hangup {
            reload_policy(&w.config_path, &w.acl, &w.upstream);
        }
        if self.last_resolve.elapsed() >= RESOLVE_EVERY {
            self.last_resolve = Instant::now();
            if let Err(e) = w.upstream.load().refresh_address() {
                tracing::warn!(target: "upstream", error = %e, "keeping the last upstream address");
            }
        }
    }
}

/// The htpasswd file again; tokens issued to users it removed or gave
/// another password are revoked (in memory, for as long as a token lives).
fn reload_users(auth: &Authenticator, revocations: Option<&RevocationList>) {
    let result = auth.reload_users();
    reloaded("htpasswd", result.is_ok());
    match result {
        Ok(r) => {
            tracing::info!(target: "auth", users = r.users, "htpasswd file reloaded");
            if let (Some(list), false) = (revocations, r.changed.is_empty()) {
                tracing::info!(target: "auth", users = %r.changed.join(","), "removed or changed users: their issued tokens are revoked");
                list.revoke_subjects(&r.changed);
            }
        }
        Err(e) => tracing::error!(
            target: "auth",
            error = %e,
            "htpasswd file changed but does not load; keeping the previous users"
        ),
    }
}

fn reload_tokens(auth: &Authenticator) {
    let Some(result) = auth.reload_tokens() else {
        return;
    };
    reloaded("tokens", result.is_ok());
    match result {
        Ok(n) => tracing::info!(target: "auth", tokens = n, "token file reloaded"),
        Err(e) => tracing::error!(
            target: "auth",
            error = %e,
            "token file changed but does not load; keeping the previous tokens"
        ),
    }
}

fn reload_revocations(list: &RevocationList) {
    let result = list.reload();
    reloaded("revocations", result.is_ok());
    match result {
        Ok(n) => tracing::info!(target: "auth", revoked = n, "revocation list reloaded"),
        Err(e) => tracing::error!(
            target: "auth",
            error = %e,
            "revocation list changed but does not load; keeping the previous list"
        ),
    }
}

/// The access rules, groups and upstream (with its replicas) of the config
/// file again, all or nothing, through the build's own code. Listeners,
/// the TLS source and auth backends need a restart. Requests in flight
/// finish on the upstream they started with.
fn reload_policy(path: &Path, acl: &ArcSwap<Acl>, upstream: &ArcSwap<Upstream>) {
    match Policy::reload(path, &upstream.load_full()) {
        Ok(new) => {
            reloaded("config", true);
            tracing::info!(
                rules = new.acl.rule_count(),
                "config reloaded: access rules and groups replaced"
            );
            acl.store(new.acl);
            if new.upstream.origins() != upstream.load().origins() {
                tracing::info!(
                    upstream = new.upstream.origins().join(", "),
                    "config reloaded: new upstream"
                );
            }
            upstream.store(Arc::new(new.upstream));
        }
        Err(problems) => {
            reloaded("config", false);
            let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
            tracing::error!(
                error = %text.join("; "),
                "config changed but is invalid; keeping the previous configuration"
            );
        }
    }
}

fn reloaded(what: &str, ok: bool) {
    metrics()
        .config_reloads
        .with_label_values(&[what, if ok { "ok" } else { "error" }])
        .inc();
}
