//! tls-alpn-01 on the TLS listener (RFC 8737).
//!
//! Pingora's TLS listener offers only h2 and http/1.1, and rustls refuses
//! a handshake with no protocol in common, so a validation connection
//! (ALPN `acme-tls/1` only) never reaches a certificate resolver. This
//! runs before Pingora's handshake instead: it peeks at the ClientHello,
//! puts every byte back, and only when the hello asks for `acme-tls/1`
//! for a name an order waits on does it answer the handshake itself with
//! the challenge certificate and drop the connection.

use async_trait::async_trait;
use pingora::listeners::PreTlsProcess;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::{Error, ErrorType};
use rustls::server::{Acceptor, ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::challenge::Challenges;

pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
/// A ClientHello is a few hundred bytes; post-quantum key shares make it
/// a few KiB. Anything larger is not worth buffering.
const MAX_HELLO: usize = 32 * 1024;
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

pub struct AlpnResponder {
    challenges: Arc<Challenges>,
}

impl AlpnResponder {
    pub fn new(challenges: Arc<Challenges>) -> Self {
        AlpnResponder { challenges }
    }
}

/// What the peeked ClientHello asked for.
#[derive(Debug, Default, PartialEq, Eq)]
struct Hello {
    sni: Option<String>,
    acme: bool,
}

#[async_trait]
impl PreTlsProcess for AlpnResponder {
    async fn process(&self, stream: &mut L4Stream) -> pingora::Result<()> {
        let mut seen = Vec::new();
        let hello = tokio::time::timeout(HELLO_TIMEOUT, peek_hello(stream, &mut seen)).await;
        stream.rewind(&seen);
        let Ok(Some(hello)) = hello else {
            return Ok(()); // not a hello we understand: Pingora's handshake decides
        };
        if !hello.acme {
            return Ok(());
        }
        let Some(name) = hello.sni else {
            return Ok(());
        };
        let Some(cert) = self.challenges.alpn(&name).await else {
            tracing::info!(target: "acme", name, "acme-tls/1 handshake for a name no order waits on");
            return Ok(());
        };
        answer(stream, cert).await.map_err(|e| {
            tracing::info!(target: "acme", name, error = %e, "tls-alpn-01 validation handshake failed");
            Error::explain(ErrorType::HandshakeError, "tls-alpn-01 handshake failed")
        })?;
        tracing::info!(target: "acme", name, "answered a tls-alpn-01 validation");
        // the connection served its purpose; Pingora must not use it
        Err(Error::explain(
            ErrorType::ConnectionClosed,
            "tls-alpn-01 validation answered; connection closed on purpose",
        ))
    }
}

/// Reads until the ClientHello is complete, keeping every byte in `seen`.
async fn peek_hello(stream: &mut L4Stream, seen: &mut Vec<u8>) -> Option<Hello> {
    let mut acceptor = Acceptor::default();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        seen.extend_from_slice(&buf[..n]);
        let mut chunk = &buf[..n];
        while !chunk.is_empty() {
            acceptor.read_tls(&mut chunk).ok()?;
        }
        match acceptor.accept() {
            Ok(None) if seen.len() < MAX_HELLO => continue,
            Ok(None) => return None,
            Ok(Some(accepted)) => return Some(summarize(&accepted.client_hello())),
            Err(_) => return None,
        }
    }
}

fn summarize(hello: &ClientHello<'_>) -> Hello {
    Hello {
        sni: hello.server_name().map(str::to_owned),
        acme: hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN)),
    }
}

/// The validation handshake: only `acme-tls/1`, only the challenge cert.
async fn answer(stream: &mut L4Stream, cert: Arc<CertifiedKey>) -> Result<(), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(OneCert(cert)));
    config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let mut tls = tokio::time::timeout(HELLO_TIMEOUT, acceptor.accept(&mut *stream))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let _ = tokio::time::timeout(Duration::from_secs(2), tls.shutdown()).await;
    Ok(())
}

#[derive(Debug)]
struct OneCert(Arc<CertifiedKey>);

impl ResolvesServerCert for OneCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::acme::probe::AnyCert;
    use rustls::pki_types::ServerName;
    use tokio::net::{TcpListener, TcpStream};

    fn client(alpn: &[u8]) -> tokio_rustls::TlsConnector {
        let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert))
        .with_no_client_auth();
        c.alpn_protocols = vec![alpn.to_vec()];
        tokio_rustls::TlsConnector::from(Arc::new(c))
    }

    /// Accepts one connection and runs the responder on it; returns its
    /// verdict and the first bytes Pingora's handshake would then read.
    async fn one(listener: &TcpListener, r: &AlpnResponder) -> (bool, Vec<u8>) {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut stream = L4Stream::from(tcp);
        let ok = r.process(&mut stream).await.is_ok();
        let mut first = vec![0u8; 5];
        if ok {
            stream.read_exact(&mut first).await.unwrap();
        }
        (ok, first)
    }

    #[tokio::test]
    async fn answers_acme_tls_and_leaves_other_hellos_alone() {
        let challenges = Arc::new(Challenges::new(None));
        let (cert, _) = super::super::challenge::alpn_certificate("a.example", &[1u8; 32]).unwrap();
        challenges.put_alpn("a.example", Arc::clone(&cert));
        let r = AlpnResponder::new(challenges);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();

        // the validation handshake is answered with the challenge cert
        let validator = tokio::spawn(async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = ServerName::try_from("a.example").unwrap();
            let tls = client(ACME_TLS_ALPN).connect(name, tcp).await.unwrap();
            let (_, conn) = tls.get_ref();
            (
                conn.alpn_protocol().map(<[u8]>::to_vec),
                conn.peer_certificates().unwrap()[0].clone(),
            )
        });
        let (ok, _) = one(&listener, &r).await;
        assert!(!ok, "the connection must be dropped after the validation");
        let (alpn, peer) = validator.await.unwrap();
        assert_eq!(alpn.as_deref(), Some(ACME_TLS_ALPN));
        assert_eq!(peer, cert.cert[0]);

        // an ordinary hello, and acme-tls/1 for an unknown name: untouched
        for (alpn, sni) in [(&b"h2"[..], "a.example"), (ACME_TLS_ALPN, "b.example")] {
            let c = client(alpn);
            let hello = tokio::spawn(async move {
                let tcp = TcpStream::connect(addr).await.unwrap();
                let name = ServerName::try_from(sni).unwrap();
                let _ = c.connect(name, tcp).await;
            });
            let (ok, first) = one(&listener, &r).await;
            assert!(ok, "{sni}");
            assert_eq!(first[0], 0x16, "the ClientHello record is read again");
            hello.abort();
        }
    }
}
