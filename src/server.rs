//! Assembles the proxy from a config and runs it until a signal ends it.

use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::auth::acl::Acl;
use crate::auth::gate::Gate;
use crate::auth::token::jwt::TokenIssuer;
use crate::auth::token::keys::{KeySet, KeySettings};
use crate::auth::token::upstream::UpstreamTokens;
use crate::auth::token_endpoint::Endpoint;
use crate::auth::{groups, AuthSetupError, Authenticator};
use crate::config::{AuthMode, Config, ConfigError, Problem, TokenConfig};
use crate::http::plain::PlainHttp;
use crate::observe::admin::{AdminApp, ScrapeAuth};
use crate::observe::audit::AuditLog;
use crate::observe::health::{self, Health};
use crate::observe::metrics::metrics;
use crate::observe::{drain, logging};
use crate::proxy::RegistryProxy;
use crate::tls::{TlsError, TlsState};
use crate::upstream::{Upstream, UpstreamError};
use crate::watch::FileWatch;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Auth(#[from] AuthSetupError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("cannot start the file watcher: {0}")]
    Watcher(std::io::Error),
    #[error("auth.token: {0}")]
    Token(String),
    #[error("log.audit_file: {0}")]
    Audit(std::io::Error),
    #[error("metrics: {0}")]
    Metrics(String),
    #[error("cannot start the health check: {0}")]
    Health(std::io::Error),
    #[error(transparent)]
    Listen(#[from] crate::listeners::ListenError),
    #[error("catalog cursors: {0}")]
    Catalog(#[from] crate::registry::catalog::CatalogError),
}

/// The access rules and groups from a config (also used on reload).
pub fn build_acl(cfg: &Config) -> Result<Arc<Acl>, ConfigError> {
    let groups = groups::load(&cfg.auth).map_err(|e| ConfigError {
        problems: vec![Problem::new("auth.groups_file", e.to_string())],
    })?;
    Acl::compile(&cfg.access, groups).map_err(|problems| ConfigError { problems })
}

/// What scrapers of `/metrics` must present.
fn scrape_auth(cfg: &Config) -> Result<Option<ScrapeAuth>, ServeError> {
    let m = &cfg.metrics;
    let secret = |s: &crate::config::Secret, key: &str| {
        s.resolve()
            .map_err(|e| ServeError::Metrics(format!("{key}: {e}")))
    };
    let mut auth = ScrapeAuth::new();
    let mut any = false;
    if let (Some(u), Some(p)) = (&m.username, &m.password) {
        auth = auth.basic(u, &secret(p, "password")?);
        any = true;
    }
    if let Some(t) = &m.bearer_token {
        auth = auth.bearer(&secret(t, "bearer_token")?);
        any = true;
    }
    Ok(any.then_some(auth))
}

/// Signing and verification keys for token mode (generated on first start).
pub fn build_issuer(t: &TokenConfig) -> Result<TokenIssuer, ServeError> {
    let settings = KeySettings {
        signing_key: t.signing_key.clone(),
        generate_dir: t.key_dir.clone(),
        algorithm: t
            .algorithm
            .parse()
            .map_err(|e| ServeError::Token(format!("algorithm: {e}")))?,
        extra_verification_keys: t.verification_keys.clone(),
    };
    let keys = KeySet::load(&settings).map_err(|e| ServeError::Token(e.to_string()))?;
    Ok(TokenIssuer::new(keys, &t.issuer, &t.service, t.lifetime)
        .with_refresh_lifetime(t.refresh_lifetime))
}

pub fn serve(config_path: &std::path::Path, upgrade: bool) -> Result<(), ServeError> {
    let cfg = Config::load(config_path)?;
    logging::init(&cfg.log);
    if !upgrade {
        // with --upgrade the running process still holds them, by design
        use crate::listeners::ensure_free;
        ensure_free("server.listen", cfg.server.listen)?;
        if let Some(http) = cfg.server.http_listen {
            ensure_free("server.http_listen", http)?;
        }
        if cfg.metrics.enabled {
            ensure_free("metrics.listen", cfg.metrics.listen)?;
        }
    }
    let tls = TlsState::new(&cfg.tls)?;
    let auth = Arc::new(Authenticator::new(&cfg.auth)?);
    let upstream = Upstream::from_config(&cfg.upstream, &cfg.health, None)?;
    let upstream = Arc::new(ArcSwap::from_pointee(upstream));
    let acl = Arc::new(ArcSwap::new(build_acl(&cfg)?));
    if acl.load().rule_count() == 0 {
        tracing::warn!(
            "no [[access]] rules: every authenticated user may pull, push and delete everything"
        );
    }
    let health = Arc::new(Health::default());
    health::spawn(Arc::clone(&upstream), Arc::clone(&health)).map_err(ServeError::Health)?;
    let audit = match &cfg.log.audit_file {
        Some(path) => Some(Arc::new(
            AuditLog::open(path, cfg.log.audit_max_bytes).map_err(ServeError::Audit)?,
        )),
        None => None,
    };
    let need_keys = cfg.auth.mode == AuthMode::Token || cfg.upstream.token_auth;
    if cfg.auth.mode == AuthMode::Token && cfg.auth.token.lifetime < Duration::from_secs(60) {
        tracing::warn!(
            lifetime_s = cfg.auth.token.lifetime.as_secs(),
            "auth.token.lifetime is under 60s: Docker clients assume 60s and may send expired tokens"
        );
    }
    let issuer = match need_keys {
        true => Some(Arc::new(build_issuer(&cfg.auth.token)?)),
        false => None,
    };
    let upstream_tokens = match (&issuer, cfg.upstream.token_auth) {
        (Some(i), true) => Some(UpstreamTokens::new(Arc::clone(i))),
        _ => None,
    };
    let tokens = match (cfg.auth.mode, issuer) {
        (AuthMode::Token, Some(issuer)) => {
            tracing::info!(
                kid = issuer.keys().signing().kid(),
                cert = %issuer.keys().cert_path().display(),
                "token auth: signing key loaded (the certificate is registry:2's auth.token.rootcertbundle)"
            );
            Some(issuer)
        }
        _ => None,
    };
    let token_endpoint = tokens
        .as_ref()
        .map(|t| Endpoint::new(&cfg.auth.token, Arc::clone(t)));
    let gate = Arc::new(Gate::new(
        Arc::clone(&auth),
        Arc::clone(&acl),
        &cfg.auth.throttle,
        tokens,
    ));
    tracing::info!(
        users = auth.user_count(),
        htpasswd = %auth.htpasswd_path().map(|p| p.display().to_string()).unwrap_or_default(),
        ldap = auth.ldap().is_some(),
        upstream = upstream.load().origin(),
        "portcullis {} starting on {}",
        env!("CARGO_PKG_VERSION"),
        cfg.server.listen
    );

    let mut conf = ServerConf {
        threads: cfg
            .server
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
        grace_period_seconds: Some(cfg.server.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(5),
        upstream_keepalive_pool_size: 256,
        upgrade_sock: cfg.server.upgrade_sock.display().to_string(),
        ..ServerConf::default()
    };
    conf.ca_file = cfg
        .upstream
        .ca_file
        .as_ref()
        .map(|p| p.display().to_string());
    let opt = pingora::server::configuration::Opt {
        upgrade,
        ..Default::default()
    };
    if upgrade {
        tracing::info!(sock = %cfg.server.upgrade_sock.display(), "upgrade: waiting for the running process to hand over its sockets (send it SIGQUIT)");
    }
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    // stored ACME certificates are installed before the listeners start
    let acme = match &cfg.tls.acme {
        Some(a) => Some(
            crate::tls::acme::start(
                a,
                Arc::clone(&tls.store),
                &crate::tls::acme::Listeners {
                    tls: cfg.server.listen,
                    http: cfg.server.http_listen,
                },
                cfg.server.watch_interval,
                tls.self_signed_pem.is_some(),
            )
            .map_err(TlsError::from)?,
        ),
        None => None,
    };
    let proxy = RegistryProxy::new(
        &cfg,
        Arc::clone(&upstream),
        gate,
        token_endpoint,
        upstream_tokens,
        audit.clone(),
    )?;
    let mut service = pingora::proxy::http_proxy_service(&server.configuration, proxy);
    if cfg.metrics.enabled {
        let admin = AdminApp {
            health: Arc::clone(&health),
            certs: Arc::clone(&tls.store),
            auth: scrape_auth(&cfg)?,
            ready_checks: match auth.ldap() {
                Some(_) => {
                    let a = Arc::clone(&auth);
                    vec![("directory", Box::new(move || a.ldap_reachable()) as _)]
                }
                None => Vec::new(),
            },
        };
        let mut admin_service =
            pingora::services::listening::Service::new("portcullis admin".to_owned(), admin);
        admin_service.add_tcp(&cfg.metrics.listen.to_string());
        server.add_service(admin_service);
        tracing::info!(listen = %cfg.metrics.listen, "metrics and health on /metrics, /healthz, /readyz");
    }
    // The paths are unused: the resolver below supplies every certificate.
    let mut tls_settings =
        TlsSettings::with_callbacks(Box::new(HandshakeCounter)).map_err(|e| {
            ServeError::Tls(TlsError::Files(crate::tls::pem::PemError::Read {
                path: PathBuf::new(),
                reason: e.to_string(),
            }))
        })?;
    tls_settings.set_cert_resolver(tls.store.clone());
    tls_settings.enable_h2();
    service.add_tls_with_settings(&cfg.server.listen.to_string(), None, tls_settings);
    if let Some(responder) = acme.as_ref().and_then(|a| a.alpn.clone()) {
        service.endpoints().set_pre_tls_callback(responder);
    }
    server.add_service(service);
    if let Some(http) = cfg.server.http_listen {
        let http01 = acme.as_ref().and_then(|a| a.http01.clone());
        let plain = PlainHttp::new(cfg.server.listen.port(), http01, cfg.log.access_log);
        server.add_service(plain.service(http));
    }

    let watched = Watched {
        config_path: config_path.to_owned(),
        tls,
        auth,
        acl,
        upstream,
        audit,
    };
    spawn_watcher(&cfg, watched).map_err(ServeError::Watcher)?;
    let ports = std::iter::once(cfg.server.listen.port())
        .chain(cfg.server.http_listen.map(|a| a.port()))
        .collect();
    spawn_drain(
        server.watch_execution_phase(),
        cfg.server.grace_period,
        ports,
    )
    .map_err(ServeError::Watcher)?;
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals),
    });
    Ok(())
}

/// What the watcher thread keeps up to date.
struct Watched {
    config_path: PathBuf,
    tls: TlsState,
    auth: Arc<Authenticator>,
    acl: Arc<ArcSwap<Acl>>,
    upstream: Arc<ArcSwap<Upstream>>,
    audit: Option<Arc<AuditLog>>,
}

/// Polls the certificate, htpasswd, group and config files (and reloads
/// on SIGHUP), and re-resolves the upstream. Runs on its own thread: file
/// reads and parsing never touch a worker.
fn spawn_watcher(cfg: &Config, mut w: Watched) -> std::io::Result<()> {
    let interval = cfg.server.watch_interval;
    let hup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup))?;
    let mut htpasswd = FileWatch::new(
        w.auth
            .htpasswd_path()
            .map(Path::to_owned)
            .into_iter()
            .collect(),
    );
    htpasswd.changed();
    let mut policy_files = vec![w.config_path.clone()];
    policy_files.extend(cfg.auth.groups_file.clone());
    let mut policy = FileWatch::new(policy_files);
    policy.changed();
    std::thread::Builder::new()
        .name("portcullis-watch".into())
        .spawn(move || {
            let mut last_resolve = Instant::now();
            loop {
                std::thread::sleep(interval);
                let hangup = hup.swap(false, Ordering::SeqCst);
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
                if htpasswd.changed() || hangup {
                    let result = w.auth.reload();
                    metrics()
                        .config_reloads
                        .with_label_values(&["htpasswd", if result.is_ok() { "ok" } else { "error" }])
                        .inc();
                    match result {
                        Ok(n) => tracing::info!(target: "auth", users = n, "htpasswd file reloaded"),
                        Err(e) => tracing::error!(
                            target: "auth",
                            error = %e,
                            "htpasswd file changed but does not load; keeping the previous users"
                        ),
                    }
                }
                if policy.changed() || hangup {
                    reload_policy(&w.config_path, &w.acl, &w.upstream);
                }
                if last_resolve.elapsed() >= Duration::from_secs(30) {
                    last_resolve = Instant::now();
                    if let Err(e) = w.upstream.load().refresh_address() {
                        tracing::warn!(target: "upstream", error = %e, "keeping the last upstream address");
                    }
                }
            }
        })?;
    Ok(())
}

/// Loads the access rules, groups and upstream (with its replicas) of the
/// config file again, all or nothing. Listeners, the TLS source and auth
/// backends need a restart. Requests in flight finish on the upstream they
/// started with.
fn reload_policy(path: &std::path::Path, acl: &ArcSwap<Acl>, upstream: &ArcSwap<Upstream>) {
    let loaded = Config::load(path).and_then(|cfg| {
        let new_acl = build_acl(&cfg)?;
        let current = upstream.load_full();
        let new_upstream = Upstream::from_config(&cfg.upstream, &cfg.health, Some(&current))
            .map_err(|e| ConfigError {
                problems: vec![Problem::new("upstream", e.to_string())],
            })?;
        Ok((new_acl, new_upstream))
    });
    match loaded {
        Ok((new_acl, new_upstream)) => {
            metrics()
                .config_reloads
                .with_label_values(&["config", "ok"])
                .inc();
            tracing::info!(
                rules = new_acl.rule_count(),
                "config reloaded: access rules and groups replaced"
            );
            acl.store(new_acl);
            if new_upstream.origins() != upstream.load().origins() {
                tracing::info!(
                    upstream = new_upstream.origins().join(", "),
                    "config reloaded: new upstream"
                );
            }
            upstream.store(Arc::new(new_upstream));
        }
        Err(e) => {
            metrics()
                .config_reloads
                .with_label_values(&["config", "error"])
                .inc();
            tracing::error!(
                error = %e.to_string().replace('\n', "; "),
                "config changed but is invalid; keeping the previous configuration"
            );
        }
    }
}

/// Once Pingora has stopped the listeners (SIGTERM, or SIGQUIT after the
/// sockets were handed to the new process), exit as soon as no transfer is
/// left instead of always waiting out the grace period.
fn spawn_drain(
    mut phases: tokio::sync::broadcast::Receiver<pingora::server::ExecutionPhase>,
    grace: Duration,
    ports: Vec<u16>,
) -> std::io::Result<()> {
    use pingora::server::ExecutionPhase as P;
    std::thread::Builder::new()
        .name("portcullis-drain".into())
        .spawn(move || loop {
            match phases.blocking_recv() {
                Ok(P::ShutdownStarted) => {
                    tracing::info!(
                        in_flight = drain::in_flight(),
                        grace_s = grace.as_secs(),
                        "listeners closed; waiting for transfers to finish"
                    );
                    let deadline = std::time::Instant::now() + grace;
                    let left = drain::wait_idle(grace);
                    // the last response may still sit in socket buffers:
                    // exiting now would close them with unread client
                    // frames pending, which resets the connection and
                    // loses the tail of the transfer
                    drain::wait_acknowledged(&ports, deadline, Duration::from_secs(2));
                    tracing::info!(left, "shutdown complete");
                    std::process::exit(0);
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        })?;
    Ok(())
}

/// Counts completed TLS handshakes (ClientHellos are counted by the
/// certificate resolver, so the difference is the failed ones).
struct HandshakeCounter;

#[async_trait]
impl pingora::listeners::TlsAccept for HandshakeCounter {
    async fn handshake_complete_callback(
        &self,
        _tls: &pingora::protocols::tls::TlsRef,
    ) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        metrics().tls_handshakes.inc();
        None
    }
}

/// Pingora's signals, with an early exit once a graceful shutdown has no
/// transfer left to wait for.
struct Signals;

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {
                tracing::info!(in_flight = drain::in_flight(), "SIGTERM: stopping; no new connections");
                ShutdownSignal::GracefulTerminate
            }
            _ = int.recv() => ShutdownSignal::FastShutdown,
            _ = quit.recv() => {
                tracing::info!("SIGQUIT: handing the listening sockets to the new process");
                ShutdownSignal::GracefulUpgrade
            }
        }
    }
}
