//! A loopback TCP proxy that can lose an answer: when armed, it forwards the
//! next request to the server but drops the server's response and closes the
//! connection, as a network that fails after the request went through.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running proxy in front of `upstream`.
pub struct LossyProxy {
    addr: String,
    armed: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl LossyProxy {
    /// Starts a proxy on a free loopback port, forwarding to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> LossyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let armed = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicU64::new(0));
        let upstream = upstream.to_string();
        let (a, d) = (armed.clone(), dropped.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let (upstream, armed, dropped) = (upstream.clone(), a.clone(), d.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    pump(client, server, armed, dropped).await;
                });
            }
        });
        LossyProxy {
            addr,
            armed,
            dropped,
            task,
        }
    }

    /// `host:port` of the proxy.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The next response the server sends is lost (once).
    pub fn lose_next_answer(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// How many answers were lost.
    pub fn lost(&self) -> u64 {
        self.dropped.load(Ordering::SeqCst)
    }
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pump(
    mut client: TcpStream,
    mut server: TcpStream,
    armed: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
) {
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    let mut up = [0u8; 64 * 1024];
    let mut down = [0u8; 64 * 1024];
    loop {
        tokio::select! {
            n = cr.read(&mut up) => {
                let Ok(n) = n else { return };
                if n == 0 || sw.write_all(&up[..n]).await.is_err() {
                    return;
                }
            }
            n = sr.read(&mut down) => {
                let Ok(n) = n else { return };
                if n == 0 {
                    return;
                }
                if armed.swap(false, Ordering::SeqCst) {
                    // The server answered; the client never hears it.
                    dropped.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                if cw.write_all(&down[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
