//! Lingering close for client connections, as nginx's `lingering_close`.
//!
//! When the server closes a TCP socket that still receives data (an HTTP/2
//! client's WINDOW_UPDATEs while it reads the tail of a download, the rest
//! of an upload after an early answer), the kernel answers that data with
//! a RST and throws away what is still in the send queue: the client loses
//! the end of the response. This happens after a GOAWAY at shutdown, which
//! is when it was seen. So a connection the server is done with first
//! shuts down its write side (TLS close_notify and a FIN, after the queued
//! bytes), then reads and discards what the client still sends until the
//! client closes, it stays quiet for [`QUIET`], or [`LIMIT`] has passed;
//! only then is the socket closed.

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora::server::ShutdownWatch;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// How long a closing connection may stay quiet before it is closed
/// (nginx's `lingering_timeout`).
pub const QUIET: Duration = Duration::from_secs(5);
/// How long a closing connection is read at most (nginx's `lingering_time`):
/// a client that keeps sending cannot hold it open longer.
pub const LIMIT: Duration = Duration::from_secs(30);

/// `A`, with every connection it is done with closed lingeringly.
pub struct LingeringClose<A> {
    app: Arc<A>,
}

impl<A> LingeringClose<A> {
    pub fn new(app: A) -> Self {
        LingeringClose { app: Arc::new(app) }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for LingeringClose<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // a kept-alive HTTP/1.1 connection comes back already wrapped
        let stream: Stream = if stream.as_any().is::<Lingering>() {
            stream
        } else {
            Box::new(Lingering { io: Some(stream) })
        };
        self.app.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.app.cleanup().await;
    }
}

/// A client connection that lingers when dropped. The stream is `None`
/// only inside `drop`.
#[derive(Debug)]
struct Lingering {
    io: Option<Stream>,
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(io) = self.io.take() else { return };
        // outside a runtime (a runtime shutting down drops the task, and
        // with it the socket): a plain close
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(linger(io, QUIET, LIMIT));
        }
    }
}

/// Shuts down the write side of `io`, then reads until the client is done
/// (end of stream, an error, `quiet` without data or `limit` in all).
async fn linger(mut io: Stream, quiet: Duration, limit: Duration) {
    let _ = tokio::time::timeout(quiet, io.shutdown()).await;
    let drain = async {
        let mut buf = vec![0u8; 16 << 10];
        while let Ok(Ok(n)) = tokio::time::timeout(quiet, io.read(&mut buf)).await {
            if n == 0 {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(limit, drain).await;
}

impl Lingering {
    fn io(&self) -> &Stream {
        self.io.as_ref().expect("taken only by drop")
    }

    fn io_mut(&mut self) -> &mut Stream {
        self.io.as_mut().expect("taken only by drop")
    }

    fn pinned(self: Pin<&mut Self>) -> Pin<&mut Stream> {
        Pin::new(self.get_mut().io_mut())
    }
}

impl AsyncRead for Lingering {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.pinned().poll_read(cx, buf)
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.pinned().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.pinned().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io().is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.pinned().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.pinned().poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for Lingering {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(self.io_mut().as_mut()).await
    }
}

impl UniqueID for Lingering {
    fn id(&self) -> UniqueIDType {
        self.io().id()
    }
}

impl Ssl for Lingering {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.io().get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.io().get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.io().selected_alpn_proto()
    }
}

impl GetTimingDigest for Lingering {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.io().get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.io().get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.io().get_write_pending_time()
    }
}

impl GetProxyDigest for Lingering {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.io().get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.io_mut().set_proxy_digest(digest)
    }
}

impl GetSocketDigest for Lingering {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.io().get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.io_mut().set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for Lingering {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.io_mut().try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::protocols::l4::stream::Stream as L4Stream;
    use std::io::{Read, Write};

    /// A loopback pair: the client's std socket and the server's Pingora
    /// stream, wrapped.
    async fn pair() -> (std::net::TcpStream, Lingering) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let io: Stream = Box::new(L4Stream::from(server));
        (client, Lingering { io: Some(io) })
    }

    // The failure this module exists for, at the socket level: data the
    // client sends after the server is done must not turn into a RST that
    // destroys the response still queued for it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_still_sending_gets_the_whole_answer_then_a_clean_end() {
        let (mut client, mut server) = pair().await;
        // more than loopback's buffers hold while the client does not read
        let answer: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
        let sent = answer.clone();
        let writer = tokio::spawn(async move {
            server.write_all(&sent).await.unwrap();
            server.flush().await.unwrap();
            drop(server); // done: the close lingers
        });
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = vec![0u8; 64 << 10];
            loop {
                match client.read(&mut buf) {
                    Ok(0) => return Ok(got),
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) => return Err((got.len(), e)),
                }
                // the client keeps talking while it reads (as h2's
                // WINDOW_UPDATEs do)
                // (an error here shows as the read's reset below)
                let _ = client.write_all(b"more");
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        writer.await.unwrap();
        let got = tokio::task::spawn_blocking(move || reader.join().unwrap())
            .await
            .unwrap()
            .unwrap_or_else(|(n, e)| panic!("after {n} bytes: {e}"));
        assert_eq!(got.len(), answer.len());
        assert!(got == answer, "the answer arrived changed");
    }

    /// Whether `linger(quiet, limit)` ends within a bound far above
    /// both (a hang guard, not a timing claim), the client sending or not.
    async fn lingering_ends(quiet: Duration, limit: Duration, keep_sending: bool) -> bool {
        let (mut client, mut server) = pair().await;
        let io = server.io.take().unwrap();
        let talker = std::thread::spawn(move || {
            // the client neither closes nor (unless told) sends
            let start = std::time::Instant::now();
            while start.elapsed() < Duration::from_secs(20) {
                if keep_sending && client.write_all(&[0u8; 512]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        let ended = tokio::time::timeout(Duration::from_secs(15), linger(io, quiet, limit))
            .await
            .is_ok();
        drop(talker);
        ended
    }

    #[tokio::test]
    async fn a_quiet_client_is_let_go_after_the_quiet_time() {
        let (quiet, limit) = (Duration::from_millis(100), Duration::from_secs(600));
        assert!(lingering_ends(quiet, limit, false).await);
    }

    #[tokio::test]
    async fn a_client_that_keeps_sending_is_let_go_at_the_limit() {
        let (quiet, limit) = (Duration::from_secs(600), Duration::from_millis(300));
        assert!(lingering_ends(quiet, limit, true).await);
    }
}
