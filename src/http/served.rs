//! What every answered request leaves behind, on either listener: the
//! request metrics by route and, if enabled, one access-log line.

use pingora::protocols::http::ServerSession;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use crate::observe::access_log::{self, AccessRecord};
use crate::observe::metrics::{code_class, method_label, metrics};

/// The client's address, canonical: on a dual-stack listener (`[::]:443`)
/// IPv4 clients arrive as `::ffff:a.b.c.d`, which no IPv4 network rule,
/// throttle entry or log search would match. Every consumer (rules,
/// throttle, logs, metrics, `X-Forwarded-For`) takes it from here.
pub fn client_addr(session: &ServerSession) -> IpAddr {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip().to_canonical())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// A finished request, as the metrics and the access log see it.
pub struct Served<'a> {
    /// The metrics' route label (`other` when no route applies).
    pub label: &'static str,
    /// The access log's route, if the request had one.
    pub route: Option<&'static str>,
    pub user: Option<&'a str>,
    pub started: Instant,
    pub upstream_ms: Option<u128>,
    pub error: Option<&'static str>,
}

impl Served<'_> {
    /// Counts the request and logs it; returns the status sent (0: none).
    pub fn record(&self, session: &ServerSession, access_log: bool) -> u16 {
        let req = session.req_header();
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        let m = metrics();
        m.requests
            .with_label_values(&[self.label, method_label(&req.method), code_class(status)])
            .inc();
        m.request_duration
            .with_label_values(&[self.label])
            .observe(self.started.elapsed().as_secs_f64());
        m.received_bytes
            .with_label_values(&[self.label])
            .inc_by(session.body_bytes_read() as u64);
        m.sent_bytes
            .with_label_values(&[self.label])
            .inc_by(session.body_bytes_sent() as u64);
        if access_log {
            access_log::write(&AccessRecord {
                client: client_addr(session).to_string(),
                user: self.user,
                method: req.method.as_str(),
                path: req.uri.path(),
                route: self.route,
                status,
                bytes_in: session.body_bytes_read(),
                bytes_out: session.body_bytes_sent(),
                duration_ms: self.started.elapsed().as_millis(),
                upstream_ms: self.upstream_ms,
                error: self.error,
            });
        }
        status
    }
}
