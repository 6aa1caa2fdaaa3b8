//! tracing setup: text or JSON lines on stderr, level from the config.

use crate::config::{LogConfig, LogFormat};
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

pub fn init(cfg: &LogConfig) {
    // RUST_LOG wins over the config, for debugging a running setup.
    // rustls warns once per connection from clients that send an IP
    // address as SNI (RFC 6066 forbids it; curl and Go do it): noise.
    let level = if cfg.level.contains("rustls") {
        cfg.level.clone()
    } else {
        format!("{},rustls=error", cfg.level)
    };
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let result = match cfg.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    if let Err(e) = result {
        eprintln!("logging already initialised: {e}");
    }
}
