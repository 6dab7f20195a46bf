//! A loopback TCP proxy that counts the bytes each way, to measure what a client uploads to a
//! server on the wire (HTTP framing included). It can also delay every byte by a fixed time each
//! way, as a network with that round trip would. It runs on its own runtime, so synchronous
//! callers (ldk-node's blocking API, benchmarks) can use it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// A running proxy in front of `upstream`; stops when dropped.
pub struct CountingProxy {
    addr: String,
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl CountingProxy {
    /// Starts a proxy on a free loopback port, forwarding to `upstream` (`host:port`).
    pub fn start(upstream: &str) -> CountingProxy {
        CountingProxy::with_round_trip(upstream, Duration::ZERO)
    }

    /// Like [`CountingProxy::start`], holding every byte back half of `round_trip` each way, so
    /// a request and its answer take `round_trip` longer, as over a network that far away
    /// (the bytes keep their order; the line itself is never the bottleneck). Tokio's timer
    /// rounds each delay up to the next millisecond.
    pub fn with_round_trip(upstream: &str, round_trip: Duration) -> CountingProxy {
        let one_way = round_trip / 2;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the proxy");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("a loopback port");
        let addr = listener.local_addr().unwrap().to_string();
        let up = Arc::new(AtomicU64::new(0));
        let down = Arc::new(AtomicU64::new(0));
        let upstream = upstream.to_owned();
        let (u, d) = (Arc::clone(&up), Arc::clone(&down));
        runtime.spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let (upstream, up, down) = (upstream.clone(), Arc::clone(&u), Arc::clone(&d));
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let _ = server.set_nodelay(true);
                    if one_way.is_zero() {
                        pump(client, server, up, down).await;
                    } else {
                        let (cr, cw) = client.into_split();
                        let (sr, sw) = server.into_split();
                        tokio::join!(line(cr, sw, up, one_way), line(sr, cw, down, one_way));
                    }
                });
            }
        });
        CountingProxy {
            addr,
            up,
            down,
            runtime: Some(runtime),
        }
    }

    /// `host:port` of the proxy.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Bytes sent from clients to the server so far.
    pub fn uploaded(&self) -> u64 {
        self.up.load(Ordering::SeqCst)
    }

    /// Bytes sent from the server to clients so far.
    pub fn downloaded(&self) -> u64 {
        self.down.load(Ordering::SeqCst)
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn pump(
    mut client: TcpStream,
    mut server: TcpStream,
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
) {
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    let mut to_server = vec![0u8; 64 * 1024];
    let mut to_client = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            n = cr.read(&mut to_server) => {
                let Ok(n) = n else { return };
                if n == 0 || sw.write_all(&to_server[..n]).await.is_err() {
                    return;
                }
                up.fetch_add(n as u64, Ordering::SeqCst);
            }
            n = sr.read(&mut to_client) => {
                let Ok(n) = n else { return };
                if n == 0 || cw.write_all(&to_client[..n]).await.is_err() {
                    return;
                }
                down.fetch_add(n as u64, Ordering::SeqCst);
            }
        }
    }
}

/// Forwards `from` to `to`, each chunk `delay` after it was read, counting the bytes.
async fn line(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin + Send + 'static,
    count: Arc<AtomicU64>,
    delay: Duration,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((at, bytes)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        count.fetch_add(n as u64, Ordering::SeqCst);
        if tx
            .send((Instant::now() + delay, buf[..n].to_vec()))
            .is_err()
        {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}
