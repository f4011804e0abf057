//! A TCP proxy that breaks connections on purpose, put between workers and Redis by the failover
//! tests and the chaos run.
//!
//! * [`FaultProxy::cut_all`] closes every open connection at once (both sides see the socket
//!   end, as when a load balancer or a failing-over Redis drops them); new connections are
//!   accepted as usual.
//! * [`FaultProxy::freeze_all`] stops forwarding on every open connection and keeps it open
//!   (a peer or middlebox that went silent without a reset: replies never come); new
//!   connections work as usual.
//! * [`FaultProxy::set_delay`] delays every chunk forwarded by a random time up to a maximum
//!   (order within a connection is kept).
//! * [`FaultProxy::set_upstream`] points new connections at another server (a promoted
//!   replica), as a DNS name or a sentinel-aware service would.
//! * [`FaultProxy::set_refusing`] closes new connections at once (the server "is down").
//!
//! It owns a small tokio runtime, so synchronous tests can drive it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running fault proxy on a free loopback port; stops (and closes everything) when dropped.
pub struct FaultProxy {
    port: u16,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

struct Shared {
    upstream: Mutex<SocketAddr>,
    /// Bumped by `cut_all`; every connection watches it.
    cuts: watch::Sender<u64>,
    /// Bumped by `freeze_all`; every connection watches it.
    freezes: watch::Sender<u64>,
    delay_max_us: AtomicU64,
    refusing: AtomicBool,
    accepted: AtomicU64,
    seed: AtomicU64,
}

impl FaultProxy {
    /// Listen on a free port of 127.0.0.1 and forward to `upstream`.
    pub fn start(upstream: SocketAddr) -> std::io::Result<FaultProxy> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fault-proxy")
            .enable_all()
            .build()?;
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0"))?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared {
            upstream: Mutex::new(upstream),
            cuts: watch::channel(0).0,
            freezes: watch::channel(0).0,
            delay_max_us: AtomicU64::new(0),
            refusing: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
            seed: AtomicU64::new(0x9e37_79b9_7f4a_7c15 ^ u64::from(port)),
        });
        runtime.spawn(accept_loop(listener, shared.clone()));
        Ok(FaultProxy {
            port,
            shared,
            runtime: Some(runtime),
        })
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/<db>` through the proxy.
    pub fn url(&self, db: u8) -> String {
        format!("redis://127.0.0.1:{}/{}", self.port, db)
    }

    /// Close every open connection now.
    pub fn cut_all(&self) {
        self.shared.cuts.send_modify(|n| *n += 1);
    }

    /// Stop forwarding on every open connection, leaving it open (until a cut or the end).
    pub fn freeze_all(&self) {
        self.shared.freezes.send_modify(|n| *n += 1);
    }

    /// How many times [`FaultProxy::cut_all`] ran.
    pub fn cuts(&self) -> u64 {
        *self.shared.cuts.borrow()
    }

    /// How many client connections were accepted and forwarded so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// Delay each forwarded chunk by a random time in `[0, max]` (zero: no delay).
    pub fn set_delay(&self, max: Duration) {
        self.shared
            .delay_max_us
            .store(max.as_micros() as u64, Ordering::Relaxed);
    }

    /// Forward new connections to `upstream` from now on.
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *self.shared.upstream.lock().expect("upstream lock") = upstream;
    }

    /// While on, new connections are closed as soon as they are accepted.
    pub fn set_refusing(&self, on: bool) {
        self.shared.refusing.store(on, Ordering::Relaxed);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Shared {
    /// A random delay up to the configured maximum (splitmix64; quality is not a concern).
    fn next_delay(&self) -> Option<Duration> {
        let max = self.delay_max_us.load(Ordering::Relaxed);
        if max == 0 {
            return None;
        }
        let mut z = self
            .seed
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Some(Duration::from_micros(z % (max + 1)))
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if shared.refusing.load(Ordering::Relaxed) {
            drop(client);
            continue;
        }
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(serve(client, shared.clone()));
    }
}

async fn serve(client: TcpStream, shared: Arc<Shared>) {
    let mut cuts = shared.cuts.subscribe();
    cuts.mark_unchanged();
    let mut freezes = shared.freezes.subscribe();
    freezes.mark_unchanged();
    let upstream = *shared.upstream.lock().expect("upstream lock");
    let server = tokio::select! {
        s = TcpStream::connect(upstream) => s,
        _ = cuts.changed() => return,
    };
    let Ok(server) = server else { return };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let frozen = tokio::select! {
        _ = pump(&mut client_read, &mut server_write, &shared) => false,
        _ = pump(&mut server_read, &mut client_write, &shared) => false,
        _ = cuts.changed() => false,
        _ = freezes.changed() => true,
    };
    if frozen {
        // Both sockets stay open and silent until a cut (or the proxy stops).
        let _ = cuts.changed().await;
    }
}

/// Copy one direction until either side ends, delaying chunks when asked.
async fn pump(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    shared: &Shared,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if let Some(d) = shared.next_delay() {
            tokio::time::sleep(d).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
