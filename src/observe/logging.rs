//! tracing setup: text or JSON lines on stderr, level from the config.

use crate::config::{LogConfig, LogFormat};
use std::io::IsTerminal;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::{log, AsLog, LogTracer, NormalizeEvent};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::EnvFilter;

/// Installs the logger: `filter` is `log.level` as the compile stage
/// parsed it; RUST_LOG wins over it, for debugging a running setup.
pub fn init(cfg: &LogConfig, filter: Option<EnvFilter>) {
    let filter = EnvFilter::try_from_default_env()
        .ok()
        .or(filter)
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let result = match cfg.format {
        LogFormat::Json => tracing::subscriber::set_global_default(
            builder
                .json()
                .flatten_event(true)
                .finish()
                .with(QuietHangups),
        ),
        LogFormat::Text => {
            tracing::subscriber::set_global_default(builder.finish().with(QuietHangups))
        }
    };
    match result {
        Ok(()) => bridge_log(),
        Err(e) => eprintln!("logging already initialised: {e}"),
    }
}

/// Sends the `log` records of Pingora and other crates to tracing, as
/// `try_init` would, through [`Demote`], with `log`'s maximum level set to
/// the most verbose one the filter lets through: a record above it is
/// skipped at its call site, before its arguments are evaluated. Pingora's
/// chunked-body parser passes every buffer it reads through
/// `String::from_utf8_lossy` for a `trace!` record; with the maximum at
/// Trace that was three quarters of the CPU of a chunked upload (the
/// Docker engine's pushes), every record then dropped by the filter
/// (bench/profile.sh, docs/benchmarks.md).
fn bridge_log() {
    bridge_log_at(tracing::level_filters::LevelFilter::current().as_log());
}

fn bridge_log_at(max: log::LevelFilter) {
    if log::set_boxed_logger(Box::new(Demote(LogTracer::new()))).is_ok() {
        log::set_max_level(max);
    }
}

/// Records Pingora logs at ERROR that are no proxy error, logged at DEBUG
/// instead (every other record keeps its level):
/// - `failed to acquire reusable stream`: its upstream pool could not take
///   back an idle connection (a race with the task watching it), so it
///   opens a new one and the request goes on unharmed. At ERROR it sends
///   operators looking for a fault (it showed up under load in the
///   benchmarks).
/// - `Downstream handshake error … InvalidContentType`: a client spoke
///   plain HTTP to the TLS port. The Docker engine does it after every
///   failed HTTPS attempt against a 127.0.0.0/8 or `insecure-registries`
///   registry, so one refused `docker login` logged an ERROR of its own;
///   it is the client's mistake, and the attempt still shows as a
///   ClientHello-less failure in the handshake counters.
struct Demote(LogTracer);

/// Where Pingora's upstream connector logs from.
const CONNECTORS: &str = "pingora_core::connectors";

fn is_noise(record: &log::Record<'_>) -> bool {
    if record.level() != log::Level::Error {
        return false;
    }
    match record.target() {
        CONNECTORS => record.args().to_string() == "failed to acquire reusable stream",
        LISTENER => is_plain_http_on_tls(&record.args().to_string()),
        _ => false,
    }
}

/// rustls' `InvalidMessage(InvalidContentType)`: the first bytes were no
/// TLS record (`GET / HTTP/1.1` starts with a byte no record type has).
fn is_plain_http_on_tls(message: &str) -> bool {
    message.starts_with("Downstream handshake error") && message.contains("InvalidContentType")
}

impl log::Log for Demote {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !is_noise(record) {
            return self.0.log(record);
        }
        self.0.log(
            &log::Record::builder()
                .level(log::Level::Debug)
                .target(record.target())
                .args(*record.args())
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build(),
        );
    }

    fn flush(&self) {
        self.0.flush()
    }
}

/// Drops Pingora's `Downstream handshake error … tls handshake eof`: the
/// client closed the connection before the TLS handshake was done — a TCP
/// health check of a load balancer, a port scan, a benchmark stopping. It
/// is not a proxy error, and at one ERROR line per probe it buries the real
/// ones. Other handshake errors (no shared protocol or cipher, a bad
/// record, a timeout) are still logged.
struct QuietHangups;

impl<S: Subscriber> Layer<S> for QuietHangups {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        let target = match event.normalized_metadata() {
            Some(meta) => meta.target() == LISTENER,
            None => event.metadata().target() == LISTENER,
        };
        if !target {
            return true;
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        !is_handshake_hangup(&message.0)
    }
}

/// Where Pingora's listener logs from.
const LISTENER: &str = "pingora_core::services::listening";

fn is_handshake_hangup(message: &str) -> bool {
    message.starts_with("Downstream handshake error") && message.ends_with("tls handshake eof")
}

/// The `message` field of an event (a `log` record bridged to `tracing`
/// carries its text there too).
struct Message(String);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_owned();
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn client_hangups_during_the_handshake_are_dropped_other_errors_kept() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish()
            .with(QuietHangups);
        // as Pingora logs: through the `log` crate, bridged to tracing
        bridge_log_at(log::LevelFilter::Trace);
        tracing::subscriber::with_default(subscriber, || {
            let addr = "127.0.0.1:50096";
            log::error!(
                target: "pingora_core::services::listening",
                "Downstream handshake error from 127.0.0.1:40001:  TLSHandshakeFailure context: tls connect error: tls handshake eof"
            );
            log::error!(
                target: "pingora_core::services::listening",
                "Downstream handshake error from 127.0.0.1:40002:  TLSHandshakeFailure context: tls connect error: received corrupt message"
            );
            tracing::error!(
                target: "pingora_core::services::listening",
                "Downstream handshake error from {addr}:  TLSHandshakeFailure context: tls connect error: tls handshake eof"
            );
            tracing::error!(
                target: "pingora_core::services::listening",
                "Downstream handshake error from {addr}:  TLSHandshakeFailure context: tls connect error: peer is incompatible: no shared protocol version"
            );
            tracing::error!(target: "pingora_core::services::listening", "Accept() failed Too many open files");
            // the same words from anywhere else are not Pingora's listener
            tracing::error!(target: "portcullis::proxy", "upstream said: tls handshake eof");
        });
        let text = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf-8");
        assert!(!text.contains("40001"), "{text}");
        assert!(
            !text.contains(
                "50096:  TLSHandshakeFailure context: tls connect error: tls handshake eof"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "40002:  TLSHandshakeFailure context: tls connect error: received corrupt message"
            ),
            "{text}"
        );
        assert!(text.contains("no shared protocol version"), "{text}");
        assert!(text.contains("Accept() failed"), "{text}");
        assert!(text.contains("upstream said: tls handshake eof"), "{text}");
        assert_eq!(text.lines().count(), 4, "{text}");
    }

    /// What `emit` logs (through the `log` bridge, as Pingora does) at `level`.
    fn logged_at(level: &str, emit: impl FnOnce()) -> String {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_env_filter(EnvFilter::new(level))
            .finish()
            .with(QuietHangups);
        bridge_log_at(log::LevelFilter::Trace);
        tracing::subscriber::with_default(subscriber, emit);
        let text = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf-8");
        text
    }

    #[test]
    fn log_records_the_filter_drops_are_not_even_formatted() {
        // (nextest runs each test in a process of its own: this one
        // installs the global subscriber and the bridge)
        std::env::remove_var("RUST_LOG");
        init(&LogConfig::default(), Some(EnvFilter::new("warn")));
        assert_eq!(log::max_level(), log::LevelFilter::Warn);
        let evaluated = std::cell::Cell::new(0);
        let costly = || {
            evaluated.set(evaluated.get() + 1);
            "the arguments"
        };
        // as Pingora's chunked-body parser logs every buffer
        log::trace!("{}", costly());
        log::debug!("{}", costly());
        log::warn!("{}", costly());
        assert_eq!(evaluated.get(), 1, "only the WARN record's arguments");
    }

    #[test]
    fn plain_http_on_the_tls_port_is_logged_at_debug_not_error() {
        let logged = |level: &str| {
            logged_at(level, || {
                // as Pingora's listener logs it (rustls 0.23's wording)
                log::error!(
                    target: "pingora_core::services::listening",
                    "Downstream handshake error from 127.0.0.1:40003:  TLSHandshakeFailure context: tls connect error: received corrupt message of type InvalidContentType"
                );
                log::error!(
                    target: "pingora_core::services::listening",
                    "Downstream handshake error from 127.0.0.1:40004:  TLSHandshakeFailure context: tls connect error: received corrupt message of type InvalidHandshakeData"
                );
            })
        };
        let info = logged("info");
        assert!(!info.contains("40003"), "{info}");
        assert!(info.contains("ERROR") && info.contains("40004"), "{info}");
        assert_eq!(info.lines().count(), 1, "{info}");
        let debug = logged("debug");
        assert!(
            debug.contains("DEBUG pingora_core::services::listening: Downstream handshake error from 127.0.0.1:40003"),
            "{debug}"
        );
    }

    #[test]
    fn a_pooled_connection_not_taken_back_is_logged_at_debug_not_error() {
        let logged = |level: &str| {
            logged_at(level, || {
                // as Pingora's connector logs it
                log::error!(target: "pingora_core::connectors", "failed to acquire reusable stream");
                log::error!(target: "pingora_core::connectors", "other connector trouble");
                log::error!(target: "portcullis::proxy", "failed to acquire reusable stream");
            })
        };
        let info = logged("info");
        assert!(
            !info.contains("pingora_core::connectors: failed to acquire reusable stream"),
            "{info}"
        );
        assert!(
            info.contains("ERROR pingora_core::connectors: other connector trouble"),
            "{info}"
        );
        assert!(
            info.contains("ERROR portcullis::proxy: failed to acquire reusable stream"),
            "{info}"
        );
        assert_eq!(info.lines().count(), 2, "{info}");
        let debug = logged("debug");
        assert!(
            debug.contains("DEBUG pingora_core::connectors: failed to acquire reusable stream"),
            "{debug}"
        );
        assert!(
            !debug.contains("ERROR pingora_core::connectors: failed"),
            "{debug}"
        );
    }
}
