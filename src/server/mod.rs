//! `serve`: build the app from the config, hand its parts to Pingora as
//! services, run until a signal ends it.

mod cluster_sync;
mod drain;
mod limits_sync;
mod lingering_close;
mod oidc;
mod periodic;
mod proxy_protocol;
mod services;
mod signals;
mod watcher;

use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use std::path::Path;

use crate::app::App;
use crate::config::{Config, ConfigError};
use crate::observe::logging;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The config, or what it names, cannot be used; every problem.
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Listen(#[from] crate::listeners::ListenError),
    #[error("cannot set up the TLS listener: {0}")]
    TlsListener(#[source] Box<pingora::Error>),
    #[error("catalog cursors: {0}")]
    Catalog(#[from] crate::registry::catalog::CatalogError),
    #[error("cannot start the {what}: {source}")]
    Thread {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

pub fn serve(config_path: &Path, upgrade: bool) -> Result<(), ServeError> {
    let cfg = Config::load(config_path)?;
    let mut compiled = crate::app::compile(&cfg).map_err(|problems| ConfigError { problems })?;
    logging::init(&cfg.log, compiled.log_filter.take());
    if !upgrade {
        // with --upgrade the running process still holds them, by design
        ensure_listeners_free(&cfg)?;
    }
    let app = crate::app::assemble(cfg, compiled).map_err(|problems| ConfigError { problems })?;
    warn_about(&app);
    let mut server = pingora_server(&app.config, upgrade);
    services::install(app, config_path, &mut server)?;
    server.run(RunArgs {
        shutdown_signal: Box::new(signals::Signals),
    });
    Ok(())
}

fn ensure_listeners_free(cfg: &Config) -> Result<(), ServeError> {
    use crate::listeners::ensure_free;
    ensure_free("server.listen", cfg.server.listen)?;
    if let Some(http) = cfg.server.http_listen {
        ensure_free("server.http_listen", http)?;
    }
    if cfg.metrics.enabled {
        ensure_free("metrics.listen", cfg.metrics.listen)?;
    }
    Ok(())
}

/// Settings that work but are likely mistakes.
fn warn_about(app: &App) {
    let cfg = &app.config;
    if app.policy.acl.rule_count() == 0 {
        tracing::warn!(
            "no [[access]] rules: every authenticated user may pull, push and delete everything"
        );
    }
    if cfg.auth.mode == crate::config::AuthMode::Token
        && cfg.auth.token.lifetime < std::time::Duration::from_secs(60)
    {
        tracing::warn!(
            lifetime_s = cfg.auth.token.lifetime.as_secs(),
            "auth.token.lifetime is under 60s: Docker clients assume 60s and may send expired tokens"
        );
    }
}

/// Timeouts longer than this use Tokio's timer rather than Pingora's.
const FAST_TIMER_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Pingora's server, with the settings of `[server]` and `[upstream]`.
fn pingora_server(cfg: &Config, upgrade: bool) -> Server {
    let conf = ServerConf {
        threads: cfg
            .server
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
        work_stealing: cfg.server.work_stealing,
        grace_period_seconds: Some(cfg.server.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(5),
        upstream_keepalive_pool_size: 256,
        // Upstream read, write and idle timeouts are long (minutes) and
        // nearly always cancelled: Pingora's fast timer keeps every
        // cancelled one in its per-thread map until its deadline, Tokio's
        // removes it on drop. Only the connect timeout stays fast.
        fast_timeout_to_tokio_threshold_seconds: Some(FAST_TIMER_LIMIT.as_secs()),
        upgrade_sock: cfg.server.upgrade_sock.display().to_string(),
        ca_file: cfg
            .upstream
            .ca_file
            .as_ref()
            .map(|p| p.display().to_string()),
        ..ServerConf::default()
    };
    if upgrade {
        tracing::info!(sock = %cfg.server.upgrade_sock.display(), "upgrade: waiting for the running process to hand over its sockets (send it SIGQUIT)");
    }
    let mut server = Server::new_with_opt_and_conf(
        Opt {
            upgrade,
            ..Default::default()
        },
        conf,
    );
    server.bootstrap();
    server
}
