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

/// `server.trusted_proxies`: the networks of L7 proxies in front whose
/// `X-Forwarded-For` is believed. From any other peer the header is
/// ignored (and, as always, never forwarded as sent).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(std::sync::Arc<[ipnet::IpNet]>);

impl TrustedProxies {
    pub fn new(networks: &[ipnet::IpNet]) -> Self {
        TrustedProxies(networks.into())
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client of a request from `peer` carrying these
    /// `X-Forwarded-For` values: walking the chain from the right (the
    /// hop nearest to us), the first address that is not a trusted proxy.
    /// Addresses further left were written by whoever sent them and prove
    /// nothing. An unparsable entry ends the walk at the last trusted hop.
    pub fn client<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl DoubleEndedIterator<Item = &'a [u8]>,
    ) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        for value in forwarded_for.rev() {
            let Ok(text) = std::str::from_utf8(value) else {
                return client;
            };
            for hop in text.rsplit(',') {
                match hop.trim().parse::<IpAddr>() {
                    Ok(ip) => {
                        client = ip.to_canonical();
                        if !self.trusts(client) {
                            return client;
                        }
                    }
                    Err(_) => return client,
                }
            }
        }
        client
    }

    /// The client of `session` (see [`client`](Self::client)).
    pub fn client_of(&self, session: &ServerSession) -> IpAddr {
        let peer = client_addr(session);
        if self.0.is_empty() {
            return peer;
        }
        let values = session.req_header().headers.get_all("x-forwarded-for");
        self.client(peer, values.iter().map(|v| v.as_bytes()))
    }
}

/// A finished request, as the metrics and the access log see it.
pub struct Served<'a> {
    /// The client, as [`TrustedProxies::client_of`] found it.
    pub client: IpAddr,
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
                client: self.client.to_string(),
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

#[cfg(test)]
mod tests {
    use super::TrustedProxies;
    use std::net::IpAddr;

    fn client(trusted: &[&str], peer: &str, xff: &[&str]) -> IpAddr {
        let nets: Vec<ipnet::IpNet> = trusted.iter().map(|n| n.parse().unwrap()).collect();
        TrustedProxies::new(&nets).client(peer.parse().unwrap(), xff.iter().map(|v| v.as_bytes()))
    }

    #[test]
    fn only_trusted_peers_are_believed() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // no trusted proxies, or a peer outside them: the header is ignored
        assert_eq!(client(&[], "10.0.0.5", &["192.0.2.7"]), ip("10.0.0.5"));
        assert_eq!(
            client(&["10.0.0.0/8"], "198.51.100.1", &["192.0.2.7"]),
            ip("198.51.100.1")
        );
        // from a trusted peer: the right-most untrusted address
        assert_eq!(
            client(&["10.0.0.0/8"], "10.0.0.5", &["192.0.2.7"]),
            ip("192.0.2.7")
        );
        assert_eq!(
            client(
                &["10.0.0.0/8"],
                "10.0.0.5",
                &["6.6.6.6, 192.0.2.7, 10.1.1.1"]
            ),
            ip("192.0.2.7"),
            "a client cannot choose its address by writing a header"
        );
        // several header lines are one list, in order
        assert_eq!(
            client(
                &["10.0.0.0/8"],
                "10.0.0.5",
                &["6.6.6.6", "192.0.2.8, 10.2.2.2"]
            ),
            ip("192.0.2.8")
        );
        // only proxies in the chain: the left-most of them
        assert_eq!(
            client(&["10.0.0.0/8"], "10.0.0.5", &["10.9.9.9"]),
            ip("10.9.9.9")
        );
        // garbage stops the walk at the last trusted hop
        assert_eq!(
            client(&["10.0.0.0/8"], "10.0.0.5", &["192.0.2.7, junk"]),
            ip("10.0.0.5")
        );
        // IPv4-mapped addresses are canonical
        assert_eq!(
            client(&["10.0.0.0/8"], "10.0.0.5", &["::ffff:192.0.2.9"]),
            ip("192.0.2.9")
        );
        // a trusted peer without the header is the client itself
        assert_eq!(client(&["10.0.0.0/8"], "10.0.0.5", &[]), ip("10.0.0.5"));
    }
}
