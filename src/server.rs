//! Assembles the proxy from a config and runs it until a signal ends it.

use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::auth::{AuthSetupError, Authenticator};
use crate::config::{Config, ConfigError};
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
}

pub fn serve(config_path: &std::path::Path) -> Result<(), ServeError> {
    let cfg = Config::load(config_path)?;
    logging::init(&cfg.log);
    let tls = TlsState::new(&cfg.tls)?;
    let auth = Arc::new(Authenticator::new(&cfg.auth)?);
    let upstream = Arc::new(Upstream::new(&cfg.upstream)?);
    tracing::info!(
        users = auth.user_count(),
        htpasswd = %auth.htpasswd_path().display(),
        upstream = upstream.origin(),
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
        ..ServerConf::default()
    };
    conf.ca_file = cfg
        .upstream
        .ca_file
        .as_ref()
        .map(|p| p.display().to_string());
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let proxy = RegistryProxy {
        upstream: Arc::clone(&upstream),
        auth: Arc::clone(&auth),
        realm: cfg.auth.realm.clone(),
        hsts: (!cfg.server.hsts_max_age.is_zero())
            .then(|| format!("max-age={}", cfg.server.hsts_max_age.as_secs())),
        https_port: cfg.server.listen.port(),
        access_log: cfg.log.access_log,
    };
    let mut service = pingora::proxy::http_proxy_service(&server.configuration, proxy);
    // The paths are unused: the resolver below supplies every certificate.
    let mut tls_settings = TlsSettings::intermediate("", "").map_err(|e| {
        ServeError::Tls(TlsError::Files(crate::tls::pem::PemError::Read {
            path: PathBuf::new(),
            reason: e.to_string(),
        }))
    })?;
    tls_settings.set_cert_resolver(tls.store.clone());
    tls_settings.enable_h2();
    service.add_tls_with_settings(&cfg.server.listen.to_string(), None, tls_settings);
    if let Some(http) = cfg.server.http_listen {
        service.add_tcp(&http.to_string());
    }
    server.add_service(service);

    spawn_watcher(&cfg, tls, auth, upstream).map_err(ServeError::Watcher)?;
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals {
            grace: cfg.server.grace_period,
        }),
    });
    Ok(())
}

/// Polls the certificate and htpasswd files, and re-resolves the upstream.
/// Runs on its own thread: file reads and parsing never touch a worker.
fn spawn_watcher(
    cfg: &Config,
    mut tls: TlsState,
    auth: Arc<Authenticator>,
    upstream: Arc<Upstream>,
) -> std::io::Result<()> {
    let interval = cfg.server.watch_interval;
    let mut htpasswd = FileWatch::new(vec![auth.htpasswd_path().to_owned()]);
    htpasswd.changed();
    std::thread::Builder::new()
        .name("portcullis-watch".into())
        .spawn(move || {
            let mut last_resolve = Instant::now();
            loop {
                std::thread::sleep(interval);
                if let Some(files) = tls.files.as_mut() {
                    files.poll(&tls.store);
                }
                if htpasswd.changed() {
                    match auth.reload() {
                        Ok(n) => tracing::info!(target: "auth", users = n, "htpasswd file reloaded"),
                        Err(e) => tracing::error!(
                            target: "auth",
                            error = %e,
                            "htpasswd file changed but does not load; keeping the previous users"
                        ),
                    }
                }
                if last_resolve.elapsed() >= Duration::from_secs(30) {
                    last_resolve = Instant::now();
                    if let Err(e) = upstream.refresh_address() {
                        tracing::warn!(target: "upstream", error = %e, "keeping the last upstream address");
                    }
                }
            }
        })?;
    Ok(())
}

/// Pingora's signals, with an early exit once a graceful shutdown has no
/// transfer left to wait for.
struct Signals {
    grace: Duration,
}

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
                let grace = self.grace;
                tracing::info!(in_flight = drain::in_flight(), grace_s = grace.as_secs(), "SIGTERM: no new connections; waiting for transfers to finish");
                let spawned = std::thread::Builder::new().name("portcullis-drain".into()).spawn(move || {
                    let left = drain::wait_idle(grace);
                    tracing::info!(left, "shutdown complete");
                    std::process::exit(0);
                });
                if let Err(e) = spawned {
                    tracing::warn!("cannot watch the drain, waiting out the grace period: {e}");
                }
                ShutdownSignal::GracefulTerminate
            }
            _ = int.recv() => ShutdownSignal::FastShutdown,
            _ = quit.recv() => ShutdownSignal::GracefulUpgrade,
        }
    }
}
