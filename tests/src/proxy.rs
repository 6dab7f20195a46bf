//! A loopback TCP proxy that can lose an answer: when armed, it forwards the
//! next request to the server but drops the server's response and closes the
//! connection, as a network that fails after the request went through. It can
//! also hold the next request or the next answer back for a while, as a slow
//! network: other connections go on meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running proxy in front of `upstream`.
pub struct LossyProxy {
    addr: String,
    armed: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
    delays: Arc<Delays>,
    task: tokio::task::JoinHandle<()>,
}

impl LossyProxy {
    /// Starts a proxy on a free loopback port, forwarding to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> LossyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let armed = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicU64::new(0));
        let delays = Arc::new(Delays::default());
        let upstream = upstream.to_string();
        let (a, d, w) = (armed.clone(), dropped.clone(), delays.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let (upstream, armed, dropped, delays) =
                    (upstream.clone(), a.clone(), d.clone(), w.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    pump(client, server, armed, dropped, delays).await;
                });
            }
        });
        LossyProxy {
            addr,
            armed,
            dropped,
            delays,
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

    /// The next bytes a client sends reach the server `delay` late (once).
    pub fn delay_next_request(&self, delay: Duration) {
        self.delays
            .request
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// The next bytes the server answers reach the client `delay` late (once).
    pub fn delay_next_answer(&self, delay: Duration) {
        self.delays
            .answer
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// How many requests and answers were held back.
    pub fn delayed(&self) -> u64 {
        self.delays.used.load(Ordering::SeqCst)
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

/// Delays armed for the next request and the next answer, in ms (0: none).
#[derive(Default)]
struct Delays {
    request: AtomicU64,
    answer: AtomicU64,
    used: AtomicU64,
}

impl Delays {
    async fn hold(&self, which: &AtomicU64) {
        let ms = which.swap(0, Ordering::SeqCst);
        if ms > 0 {
            self.used.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }
}

async fn pump(
    mut client: TcpStream,
    mut server: TcpStream,
    armed: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
    delays: Arc<Delays>,
) {
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    let mut up = [0u8; 64 * 1024];
    let mut down = [0u8; 64 * 1024];
    loop {
        tokio::select! {
            n = cr.read(&mut up) => {
                let Ok(n) = n else { return };
                if n == 0 {
                    return;
                }
                delays.hold(&delays.request).await;
                if sw.write_all(&up[..n]).await.is_err() {
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
                delays.hold(&delays.answer).await;
                if cw.write_all(&down[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
