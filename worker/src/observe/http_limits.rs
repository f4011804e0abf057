//! Limits of the metrics server's connections: at most [`MAX_CONNECTIONS`] at once (the next
//! ones wait to be accepted), each closed after [`IDLE_TIMEOUT`] without progress or
//! [`MAX_LIFETIME`] in all, so slow or idle clients cannot hold the server.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{sleep, Instant, Sleep};

/// Connections served at once.
pub(crate) const MAX_CONNECTIONS: usize = 64;
/// A connection that neither reads nor writes for this long is closed.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection is closed after this long, whatever it does.
pub(crate) const MAX_LIFETIME: Duration = Duration::from_secs(60);

/// A TCP listener whose connections are limited as this module says.
pub(crate) struct Limited {
    inner: TcpListener,
    slots: Arc<Semaphore>,
    idle: Duration,
    lifetime: Duration,
}

impl Limited {
    /// The module's limits on `inner`.
    pub(crate) fn new(inner: TcpListener) -> Self {
        Self::with(inner, MAX_CONNECTIONS, IDLE_TIMEOUT, MAX_LIFETIME)
    }

    /// Other limits (for tests).
    pub(crate) fn with(inner: TcpListener, max: usize, idle: Duration, lifetime: Duration) -> Self {
        Limited {
            inner,
            slots: Arc::new(Semaphore::new(max)),
            idle,
            lifetime,
        }
    }
}

impl axum::serve::Listener for Limited {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the connection semaphore is never closed");
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let now = Instant::now();
                    return (
                        Conn {
                            stream,
                            _permit: permit,
                            idle: self.idle,
                            idle_timer: Box::pin(sleep(self.idle)),
                            end: Box::pin(tokio::time::sleep_until(now + self.lifetime)),
                        },
                        addr,
                    );
                }
                // As axum's own listener: errors such as too many open files pass; wait a little.
                Err(e) => {
                    tracing::warn!(error = %e, "metrics server: accept failed");
                    sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// One accepted connection, holding its slot until dropped.
pub(crate) struct Conn {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    idle: Duration,
    idle_timer: Pin<Box<Sleep>>,
    end: Pin<Box<Sleep>>,
}

impl Conn {
    /// `Err(TimedOut)` once a limit has passed (and the task is woken when one will).
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.end.as_mut().poll(cx).is_ready() || self.idle_timer.as_mut().poll(cx).is_ready() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "metrics connection idle or open too long",
            ));
        }
        Ok(())
    }

    /// The stream is not ready: pending, unless a limit has passed.
    fn pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match self.check(cx) {
            Ok(()) => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn progressed(&mut self) {
        let next = Instant::now() + self.idle;
        self.idle_timer.as_mut().reset(next);
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.progressed();
                }
                Poll::Ready(r)
            }
            Poll::Pending => self.pending(cx),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.stream).poll_write(cx, buf) {
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    self.progressed();
                }
                Poll::Ready(r)
            }
            Poll::Pending => self.pending(cx),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.stream).poll_flush(cx) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => self.pending(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use axum::Router;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get_ok(addr: SocketAddr) -> String {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test(start_paused = true)]
    async fn idle_clients_are_dropped_and_do_not_block_others() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limited = Limited::with(
            listener,
            2,
            Duration::from_secs(10),
            Duration::from_secs(60),
        );
        let app = Router::new().route("/", get(|| async { "ok" }));
        tokio::spawn(async move { axum::serve(limited, app).await.unwrap() });
        // Two clients take both slots and send half a request.
        let mut idle = Vec::new();
        for _ in 0..2 {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(b"GET / HT").await.unwrap();
            idle.push(c);
        }
        // A third waits for a slot; once the idle ones time out, it is served.
        let served = tokio::spawn(get_ok(addr));
        tokio::time::sleep(Duration::from_secs(11)).await;
        let out = served.await.unwrap();
        assert!(
            out.starts_with("HTTP/1.1 200") && out.ends_with("ok"),
            "{out}"
        );
        for mut c in idle {
            let mut buf = Vec::new();
            let n = c.read_to_end(&mut buf).await.unwrap_or(0);
            assert_eq!(n, 0, "closed without a reply");
        }
    }
}
