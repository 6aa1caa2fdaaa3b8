//! A check of the listening addresses before Pingora starts.
//!
//! Pingora binds its listeners inside the service threads: a busy address
//! makes the TLS listener retry forever and the admin listener panic, while
//! the process keeps running and looks healthy to systemd. Trying each
//! address first turns that into a start-up error that names the key.

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
#[error("{key}: cannot listen on {addr}: {source}")]
pub struct ListenError {
    pub key: &'static str,
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// Binds and listens on `addr` and closes the socket again. SO_REUSEADDR
/// as Pingora sets it, so connections left in TIME_WAIT by a restart do not
/// count as "in use".
pub fn ensure_free(key: &'static str, addr: SocketAddr) -> Result<(), ListenError> {
    use socket2::{Domain, Socket, Type};
    let attempt = || -> std::io::Result<()> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        if addr.is_ipv6() {
            // Pingora's default for a [::] listener: dual-stack
            socket.set_only_v6(false)?;
        }
        socket.bind(&addr.into())?;
        socket.listen(1)
    };
    attempt().map_err(|source| ListenError { key, addr, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_address_is_an_error_naming_the_key() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let e = ensure_free("server.listen", addr).unwrap_err();
        assert_eq!(e.source.kind(), std::io::ErrorKind::AddrInUse);
        assert!(e
            .to_string()
            .starts_with(&format!("server.listen: cannot listen on {addr}: ")));
        drop(taken);
        assert!(ensure_free("server.listen", addr).is_ok());
        // and checking leaves it free for the real listener
        assert!(std::net::TcpListener::bind(addr).is_ok());
    }
}
