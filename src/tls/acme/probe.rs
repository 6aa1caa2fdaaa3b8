//! Waiting for our own listener before the first order: the CA validates
//! against it, and a refused validation would cost a backoff period.
//!
//! On the TLS listener the probe completes a handshake and closes
//! cleanly (a bare TCP connect would make Pingora log a failed
//! handshake). It sends nothing and does not check the certificate: the
//! peer is our own listener, likely still on the self-signed fallback.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// True once `addr` accepts connections (and TLS handshakes, if `tls`);
/// false if it did not within ten seconds.
pub async fn until_up(addr: SocketAddr, tls: bool) -> bool {
    for _ in 0..100 {
        if answers(addr, tls).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn answers(addr: SocketAddr, tls: bool) -> bool {
    let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    if !tls {
        return true;
    }
    let Ok(config) = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions() else {
        return true; // cannot probe the handshake; the port is open
    };
    let mut config = config
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::from(addr.ip());
    let handshake = connector.connect(name, tcp);
    match tokio::time::timeout(Duration::from_secs(5), handshake).await {
        Ok(Ok(mut s)) => {
            let _ = s.shutdown().await;
            true
        }
        _ => false,
    }
}

/// Accepts any certificate; see the module comment for why that is fine.
#[derive(Debug)]
pub(super) struct AnyCert;

type Verified<T> = Result<T, rustls::Error>;
type Cert<'a> = CertificateDer<'a>;
type Dss = DigitallySignedStruct;
type Valid = Verified<HandshakeSignatureValid>;
type Any = Verified<ServerCertVerified>;
type Name<'a> = ServerName<'a>;

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(&self, _: &Cert, _: &[Cert], _: &Name, _: &[u8], _: UnixTime) -> Any {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(&self, _: &[u8], _: &Cert<'_>, _: &Dss) -> Valid {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(&self, _: &[u8], _: &Cert<'_>, _: &Dss) -> Valid {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
