//! What every answered request leaves behind, on either listener: the
//! request metrics by route and, if enabled, one access-log line.

use pingora::protocols::http::ServerSession;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use forwarded_header_value::ForwardedHeaderValue;

use crate::config::ClientAddressHeader;
use crate::observe::access_log::{self, AccessRecord};
use crate::observe::metrics::{metrics, RequestRecord};

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
/// `server.client_address_header` is believed. From any other peer the
/// header is ignored (and, as always, never forwarded as sent).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    networks: std::sync::Arc<[ipnet::IpNet]>,
    header: ClientAddressHeader,
}

impl TrustedProxies {
    pub fn new(networks: &[ipnet::IpNet], header: ClientAddressHeader) -> Self {
        TrustedProxies {
            networks: networks.into(),
            header,
        }
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.networks.iter().any(|n| n.contains(&ip))
    }

    /// The client of a request from `peer` carrying these values of the
    /// configured header: walking the chain from the right (the hop
    /// nearest to us), the first address that is not a trusted proxy.
    /// Addresses further left were written by whoever sent them and prove
    /// nothing. An entry without an address (unparsable, or `Forwarded`'s
    /// `unknown` and obfuscated `_names`) ends the walk at the last
    /// trusted hop.
    pub fn client<'a>(
        &self,
        peer: IpAddr,
        values: impl DoubleEndedIterator<Item = &'a [u8]>,
    ) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        for value in values.rev() {
            let Some(hops) = std::str::from_utf8(value)
                .ok()
                .and_then(|text| self.header.hops(text))
            else {
                return client;
            };
            for hop in hops.into_iter().rev() {
                let Some(ip) = hop else {
                    return client;
                };
                client = ip.to_canonical();
                if !self.trusts(client) {
                    return client;
                }
            }
        }
        client
    }

    /// The client of `session` (see [`client`](Self::client)).
    pub fn client_of(&self, session: &ServerSession) -> IpAddr {
        let peer = client_addr(session);
        if self.networks.is_empty() {
            return peer;
        }
        let values = session.req_header().headers.get_all(self.header.name());
        self.client(peer, values.iter().map(|v| v.as_bytes()))
    }
}

impl ClientAddressHeader {
    fn name(self) -> &'static str {
        match self {
            ClientAddressHeader::XForwardedFor => "x-forwarded-for",
            ClientAddressHeader::Forwarded => "forwarded",
        }
    }

    /// One header value's hops, left to right: `None` for a hop that names
    /// no address. `None` in all when the value does not parse.
    fn hops(self, text: &str) -> Option<Vec<Option<IpAddr>>> {
        match self {
            ClientAddressHeader::XForwardedFor => Some(
                text.split(',')
                    .map(|hop| hop.trim().parse::<IpAddr>().ok())
                    .collect(),
            ),
            // RFC 7239: `for=192.0.2.7;proto=https, for="[2001:db8::1]:4711"`
            ClientAddressHeader::Forwarded => ForwardedHeaderValue::from_forwarded(text)
                .ok()
                .map(|v| v.iter().map(|s| s.forwarded_for_ip()).collect()),
        }
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
        let elapsed = self.started.elapsed();
        metrics().record_request(&RequestRecord {
            route: self.label,
            method: &req.method,
            status,
            seconds: elapsed.as_secs_f64(),
            received: session.body_bytes_read() as u64,
            sent: session.body_bytes_sent() as u64,
        });
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
                duration_ms: elapsed.as_millis(),
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
    use crate::config::ClientAddressHeader;
    use std::net::IpAddr;

    fn walk(header: ClientAddressHeader, trusted: &[&str], peer: &str, values: &[&str]) -> IpAddr {
        let nets: Vec<ipnet::IpNet> = trusted.iter().map(|n| n.parse().unwrap()).collect();
        TrustedProxies::new(&nets, header)
            .client(peer.parse().unwrap(), values.iter().map(|v| v.as_bytes()))
    }

    fn client(trusted: &[&str], peer: &str, xff: &[&str]) -> IpAddr {
        walk(ClientAddressHeader::XForwardedFor, trusted, peer, xff)
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

    #[test]
    fn forwarded_is_walked_like_x_forwarded_for() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let fwd = |trusted: &[&str], peer: &str, values: &[&str]| {
            walk(ClientAddressHeader::Forwarded, trusted, peer, values)
        };
        let t = &["10.0.0.0/8"];
        assert_eq!(
            fwd(t, "10.0.0.5", &["for=192.0.2.7;proto=https;by=10.0.0.5"]),
            ip("192.0.2.7")
        );
        // quoted IPv6 with a port, as RFC 7239 writes it
        assert_eq!(
            fwd(t, "10.0.0.5", &["for=\"[2001:db8::1]:4711\""]),
            ip("2001:db8::1")
        );
        // right-most untrusted, over several elements and lines
        assert_eq!(
            fwd(
                t,
                "10.0.0.5",
                &["for=6.6.6.6", "for=192.0.2.8, for=10.2.2.2"]
            ),
            ip("192.0.2.8"),
            "a client cannot choose its address by writing a header"
        );
        // `unknown`, an obfuscated name, an element without `for` and
        // garbage all stop the walk at the last trusted hop
        for stop in [
            "for=unknown",
            "for=_hidden",
            "proto=https",
            "for=junk",
            "for=192.0.2.9;garbage",
        ] {
            assert_eq!(
                fwd(t, "10.0.0.5", &[&format!("for=192.0.2.7, {stop}")]),
                ip("10.0.0.5"),
                "{stop}"
            );
        }
        // an untrusted peer's header is ignored
        assert_eq!(
            fwd(t, "198.51.100.1", &["for=192.0.2.7"]),
            ip("198.51.100.1")
        );
        // the other header is not read: a proxy that writes one passes a
        // client's forged other one through
        assert_eq!(client(t, "10.0.0.5", &["for=192.0.2.7"]), ip("10.0.0.5"));
        assert_eq!(fwd(t, "10.0.0.5", &["192.0.2.7"]), ip("10.0.0.5"));
    }
}
