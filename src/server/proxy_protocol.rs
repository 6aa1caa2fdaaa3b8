//! `[server.proxy_protocol]`: the PROXY protocol (v1 and v2, as HAProxy's
//! `send-proxy` and `send-proxy-v2` write it) on the TLS listener and the
//! plain-HTTP one (`server.http_listen`). A
//! connection from a listed network must start with a PROXY header, whose
//! source address becomes the client's for everything after (rules,
//! throttle, logs, audit, the registry's `X-Forwarded-For`); a connection
//! from anywhere else that starts with one is refused, so no client can
//! claim another's address.
//!
//! On the TLS listener it runs before the handshake (Pingora's pre-TLS
//! hook), then hands the stream to the next hook (the tls-alpn-01
//! responder) if any. Pingora runs that hook on TLS listeners only, so the
//! plain listener's service wraps its app in [`PlainBehindBalancer`], which
//! runs the same step once per connection before serving it.

use async_trait::async_trait;
use ipnet::IpNet;
use pingora::apps::ServerApp;
use pingora::listeners::{PreTlsCallback, PreTlsProcess};
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{GetSocketDigest, SocketDigest, Stream};
use pingora::server::ShutdownWatch;
use pingora::services::listening::Service;
use pingora::{Error, ErrorType};
use ppp::{HeaderResult, PartialResult};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::io::AsRawFd;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// A PROXY header is at most this long (v1: 107 bytes; v2: 16 + 216 for
/// addresses, plus TLVs, which HAProxy keeps small).
const MAX_HEADER: usize = 1024;
/// How long a listed peer has to send its header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The first bytes of either version.
const V1_SIGNATURE: &[u8] = b"PROXY ";
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

pub struct ProxyProtocol {
    from: Vec<IpNet>,
    next: Option<PreTlsCallback>,
}

impl ProxyProtocol {
    pub fn new(from: &[IpNet], next: Option<PreTlsCallback>) -> ProxyProtocol {
        ProxyProtocol {
            from: from.to_vec(),
            next,
        }
    }

    fn listed(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.from.iter().any(|n| n.contains(&ip))
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// What a connection's first bytes were.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A header for this client (`None`: v2 LOCAL or v1 UNKNOWN, a health
    /// check of the balancer itself: the peer stays the client), and how
    /// many bytes it took.
    Header {
        client: Option<SocketAddr>,
        len: usize,
    },
    /// More bytes are needed.
    Incomplete,
    Invalid(String),
}

/// Parses the PROXY header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    let result = HeaderResult::parse(buf);
    if result.is_incomplete() {
        return Parsed::Incomplete;
    }
    match result {
        HeaderResult::V2(Ok(h)) => {
            let client = match (h.command, h.addresses) {
                (ppp::v2::Command::Local, _) => None,
                (_, ppp::v2::Addresses::IPv4(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                (_, ppp::v2::Addresses::IPv6(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                (_, other) => return Parsed::Invalid(format!("no IP source address ({other:?})")),
            };
            Parsed::Header {
                client,
                len: h.len(),
            }
        }
        HeaderResult::V1(Ok(h)) => {
            let client = match h.addresses {
                ppp::v1::Addresses::Tcp4(a) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                ppp::v1::Addresses::Tcp6(a) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                ppp::v1::Addresses::Unknown => None,
            };
            // (the header ends with the first CRLF)
            match buf.windows(2).position(|w| w == b"\r\n") {
                Some(end) => Parsed::Header {
                    client,
                    len: end + 2,
                },
                None => Parsed::Incomplete,
            }
        }
        HeaderResult::V2(Err(e)) => Parsed::Invalid(e.to_string()),
        HeaderResult::V1(Err(e)) => Parsed::Invalid(e.to_string()),
    }
}

/// Whether `first` bytes could be the start of a PROXY header.
fn starts_like_proxy(first: &[u8]) -> bool {
    let n = first.len().min(V2_SIGNATURE.len());
    let v1 = first.len().min(V1_SIGNATURE.len());
    !first.is_empty() && (first[..v1] == V1_SIGNATURE[..v1] || first[..n] == V2_SIGNATURE[..n])
}

fn refused(why: String) -> Box<Error> {
    Error::explain(ErrorType::HandshakeError, why)
}

#[async_trait]
impl PreTlsProcess for ProxyProtocol {
    async fn process(&self, stream: &mut L4Stream) -> pingora::Result<()> {
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).copied());
        let listed = peer.is_some_and(|p| self.listed(p.ip()));
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 512];
        if listed {
            let read = async {
                loop {
                    match parse(&buf) {
                        Parsed::Incomplete if buf.len() < MAX_HEADER => {}
                        other => return Ok(other),
                    }
                    let n = stream.read(&mut chunk).await?;
                    if n == 0 {
                        return Ok(Parsed::Invalid(
                            "connection closed before the header".into(),
                        ));
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
            };
            let parsed: std::io::Result<Parsed> = tokio::time::timeout(HEADER_TIMEOUT, read)
                .await
                .unwrap_or_else(|_| Ok(Parsed::Invalid("no header within 5 s".into())));
            let parsed = parsed.map_err(|e| refused(format!("PROXY header: {e}")))?;
            match parsed {
                Parsed::Header { client, len } => {
                    stream.rewind(&buf[len..]);
                    if let Some(client) = client {
                        let digest = SocketDigest::from_raw_fd(stream.as_raw_fd());
                        let _ = digest.peer_addr.set(Some(client.into()));
                        if let Some(local) = stream
                            .get_socket_digest()
                            .and_then(|d| d.local_addr().cloned())
                        {
                            let _ = digest.local_addr.set(Some(local));
                        }
                        stream.set_socket_digest(digest);
                    }
                }
                Parsed::Invalid(why) => {
                    tracing::warn!(target: "tls", peer = ?peer, reason = %why, "connection refused: server.proxy_protocol.from lists its peer, which sent no valid PROXY header");
                    return Err(refused(format!("no valid PROXY header: {why}")));
                }
                Parsed::Incomplete => {
                    return Err(refused("PROXY header too long".into()));
                }
            }
        } else {
            // a TLS ClientHello never starts like a PROXY header: look at
            // the first bytes, and put them back
            let n = tokio::time::timeout(HEADER_TIMEOUT, stream.read(&mut chunk))
                .await
                .unwrap_or(Ok(0))
                .unwrap_or(0);
            buf.extend_from_slice(&chunk[..n]);
            if starts_like_proxy(&buf) {
                tracing::warn!(target: "tls", peer = ?peer, "connection refused: a PROXY header from a peer server.proxy_protocol.from does not list");
                return Err(refused("PROXY header from an unlisted peer".into()));
            }
            stream.rewind(&buf);
        }
        match &self.next {
            Some(next) => next.process(stream).await,
            None => Ok(()),
        }
    }
}

/// The plain listener's app behind `[server.proxy_protocol]`: the PROXY
/// step, then the connection served by `A` for as long as it is kept
/// alive (this app loops over the reuses itself, so the step runs once).
pub struct PlainBehindBalancer<A> {
    app: Arc<A>,
    proxy: ProxyProtocol,
}

impl<A: ServerApp + Send + Sync + 'static> PlainBehindBalancer<A> {
    /// The service listening on `listen`.
    pub fn service(app: A, from: &[IpNet], listen: SocketAddr) -> Service<Self> {
        let wrapped = PlainBehindBalancer {
            app: Arc::new(app),
            proxy: ProxyProtocol::new(from, None),
        };
        let mut service = Service::new("portcullis plain http".to_owned(), wrapped);
        service.add_tcp(&listen.to_string());
        service
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for PlainBehindBalancer<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // a plain listener's streams are plain TCP (or Unix) sockets
        let mut l4 = match stream.into_any().downcast::<L4Stream>() {
            Ok(l4) => *l4,
            Err(_) => {
                tracing::error!("plain HTTP: a stream that is not a socket; closed");
                return None;
            }
        };
        if let Err(e) = self.proxy.process(&mut l4).await {
            tracing::debug!(error = %e, "plain HTTP: connection refused");
            return None;
        }
        let mut next = self.app.process_new(Box::new(l4), shutdown).await;
        while let Some(reused) = next {
            next = self.app.process_new(reused, shutdown).await;
        }
        None
    }

    async fn cleanup(&self) {
        self.app.cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_headers_give_the_client() {
        let v1 = b"PROXY TCP4 192.0.2.7 127.0.0.1 51000 443\r\n\x16\x03\x01";
        assert_eq!(
            parse(v1),
            Parsed::Header {
                client: Some("192.0.2.7:51000".parse().unwrap()),
                len: v1.len() - 3
            }
        );
        assert_eq!(parse(b"PROXY TCP4 192.0.2.7 127.0"), Parsed::Incomplete);
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Parsed::Header {
                client: None,
                len: 15
            }
        );
        let v2 = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (
                "[2001:db8::1]:40000".parse::<SocketAddr>().unwrap(),
                "[::1]:443".parse::<SocketAddr>().unwrap(),
            ),
        )
        .build()
        .unwrap();
        assert_eq!(
            parse(&v2),
            Parsed::Header {
                client: Some("[2001:db8::1]:40000".parse().unwrap()),
                len: v2.len()
            }
        );
        assert_eq!(parse(&v2[..10]), Parsed::Incomplete);
        assert!(matches!(parse(b"PROXY TCP9 x\r\n"), Parsed::Invalid(_)));
        assert!(matches!(
            parse(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x00\x00\x00\x00\x00"),
            Parsed::Invalid(_)
        ));
    }

    #[test]
    fn only_proxy_headers_look_like_one() {
        assert!(starts_like_proxy(b"PROXY TCP4"));
        assert!(starts_like_proxy(b"PRO"));
        assert!(starts_like_proxy(V2_SIGNATURE));
        assert!(!starts_like_proxy(b"\x16\x03\x01\x02\x00"));
        assert!(!starts_like_proxy(b"GET / HTTP/1.1"));
        assert!(!starts_like_proxy(b""));
    }
}
