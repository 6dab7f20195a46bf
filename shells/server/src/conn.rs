//! Connection limits of the HTTP server (issue 9): a client cannot hold a socket by sending a
//! request head slowly or never, by keeping a connection idle, or by opening more connections than
//! [`Limits::max_connections`].
//!
//! axum's own `serve` accepts without bound and never times a connection out, so the server serves
//! through [`LimitedListener`], which hands axum its connections as [`LimitedStream`]s:
//!
//! - past `max_connections` open connections (WebSocket connections included), a new connection is
//!   closed as soon as it is accepted, so an attacker's extra connections are neither served nor
//!   left waiting in the kernel's queue, and the server serves again as soon as some close;
//! - a request head must be complete within `header_timeout` of its first byte (of the accept, for
//!   a connection's first request), whatever the pace of its bytes;
//! - a connection with no request in progress and no byte read or written for `idle_timeout` is
//!   closed.
//!
//! A request in progress is never timed out here: its body, its handler and its answer may take as
//! long as they need (a server-sent event stream lasts as long as the client reads it), and a
//! connection upgraded to a WebSocket (the hub) has its own heartbeat. The streams learn what
//! is in progress from [`track_requests`], a middleware that sees each request start and its
//! answer (or, for a stream of unknown length, the answer's body) end; they share one [`Conn`] per
//! connection, reached through axum's connect info.

use axum::body::{Body, HttpBody};
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use axum::serve::{IncomingStream, Listener};
use http_body_util::BodyExt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// How often, at most, the server logs that it is closing connections over the limit (an attack
/// would otherwise write a line per connection).
const LIMIT_LOG_EVERY: Duration = Duration::from_secs(10);

/// The limits one server applies to its connections.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// How long a request head may take, from its first byte (from the accept for a connection's
    /// first request).
    pub(crate) header_timeout: Duration,
    /// How long a connection may stay open with no request in progress and no byte moving.
    pub(crate) idle_timeout: Duration,
    /// How many connections may be open at once; more are closed when accepted.
    pub(crate) max_connections: usize,
}

/// Accepts TCP connections within [`Limits`], for `axum::serve`.
pub(crate) struct LimitedListener {
    inner: TcpListener,
    limits: Limits,
    /// One permit per open connection; a connection's [`LimitedStream`] holds it until it closes.
    slots: Arc<Semaphore>,
    /// Connections closed for the limit since the server last said so.
    refused: u64,
    /// When the server last said so.
    last_logged: Option<Instant>,
}

impl LimitedListener {
    pub(crate) fn new(inner: TcpListener, limits: Limits) -> LimitedListener {
        let permits = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
        LimitedListener {
            inner,
            limits,
            slots: Arc::new(Semaphore::new(permits)),
            refused: 0,
            last_logged: None,
        }
    }

    fn note_refused(&mut self) {
        self.refused += 1;
        let now = Instant::now();
        if self
            .last_logged
            .is_none_or(|then| now.duration_since(then) >= LIMIT_LOG_EVERY)
        {
            eprintln!(
                "till-server: {} connections are open, the most --max-connections allows; \
                 closed {} new connection(s) until some close",
                self.limits.max_connections, self.refused
            );
            self.refused = 0;
            self.last_logged = Some(now);
        }
    }
}

impl Listener for LimitedListener {
    type Io = LimitedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (LimitedStream, SocketAddr) {
        loop {
            // axum's accept retries what can be retried (and waits a second on errors such as
            // running out of file descriptors).
            let (stream, addr) = Listener::accept(&mut self.inner).await;
            match self.slots.clone().try_acquire_owned() {
                Ok(slot) => return (LimitedStream::new(stream, self.limits, slot), addr),
                // Closed now: over the limit, a connection waits for nothing.
                Err(_) => {
                    drop(stream);
                    self.note_refused();
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// What one connection is doing, shared by its stream and the middleware that sees its requests.
pub(crate) struct Conn {
    state: Mutex<ConnState>,
}

struct ConnState {
    /// Requests started and not answered (for a stream, whose body has not ended).
    requests: usize,
    /// Upgraded (to a WebSocket): no longer HTTP, so no longer timed out here.
    upgraded: bool,
    /// When the request head being read began: its first byte, or the accept for the first one.
    head_since: Option<Instant>,
    /// The last byte read or written, request started or answer ended.
    last_activity: Instant,
    /// The connection task, woken when an answer ends so it arms the idle timer.
    waker: Option<Waker>,
}

impl Conn {
    fn state(&self) -> MutexGuard<'_, ConnState> {
        // The state stays consistent whatever panicked while holding it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn read_bytes(&self) {
        let now = Instant::now();
        let mut state = self.state();
        state.last_activity = now;
        if !state.upgraded && state.requests == 0 && state.head_since.is_none() {
            state.head_since = Some(now);
        }
    }

    fn wrote_bytes(&self) {
        self.state().last_activity = Instant::now();
    }

    fn request_started(&self) {
        let mut state = self.state();
        state.requests += 1;
        state.head_since = None;
        state.last_activity = Instant::now();
    }

    fn request_finished(&self) {
        let waker = {
            let mut state = self.state();
            state.requests = state.requests.saturating_sub(1);
            state.last_activity = Instant::now();
            state.waker.take()
        };
        // hyper may not poll the stream again until the client sends something; woken, it does,
        // and the idle timer starts.
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn upgraded(&self) {
        self.state().upgraded = true;
    }
}

impl ConnState {
    /// When the connection is closed unless something happens first; `None` while a request is in
    /// progress or after an upgrade.
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        if self.upgraded || self.requests > 0 {
            return None;
        }
        match self.head_since {
            Some(since) => since.checked_add(limits.header_timeout),
            None => self.last_activity.checked_add(limits.idle_timeout),
        }
    }
}

/// An accepted connection: the socket, timed out as [`Limits`] says, holding its slot.
pub(crate) struct LimitedStream {
    inner: TcpStream,
    conn: Arc<Conn>,
    limits: Limits,
    /// Set to the current deadline whenever the socket has nothing to offer.
    timer: Pin<Box<Sleep>>,
    /// Released when the connection closes (for a WebSocket, when the socket does).
    _slot: OwnedSemaphorePermit,
}

impl LimitedStream {
    fn new(inner: TcpStream, limits: Limits, slot: OwnedSemaphorePermit) -> LimitedStream {
        let now = Instant::now();
        let state = ConnState {
            requests: 0,
            upgraded: false,
            head_since: Some(now),
            last_activity: now,
            waker: None,
        };
        // Far enough never to fire before the first poll sets the real deadline.
        let far = now + Duration::from_secs(86_400 * 365);
        let timer = Box::pin(tokio::time::sleep_until(
            state.deadline(&limits).unwrap_or(far),
        ));
        LimitedStream {
            inner,
            conn: Arc::new(Conn {
                state: Mutex::new(state),
            }),
            limits,
            timer,
            _slot: slot,
        }
    }

    /// Called when the socket has nothing to offer: arms the timer for the connection's deadline
    /// and says whether that deadline has passed.
    fn check_deadline(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let (deadline, reading_head) = {
            let mut state = self.conn.state();
            if !state
                .waker
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                state.waker = Some(cx.waker().clone());
            }
            (state.deadline(&self.limits), state.head_since.is_some())
        };
        let Some(deadline) = deadline else {
            return Ok(());
        };
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        match self.timer.as_mut().poll(cx) {
            Poll::Pending => Ok(()),
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                if reading_head {
                    "the request head took longer than --header-timeout-secs"
                } else {
                    "the connection was idle for --idle-timeout-secs"
                },
            )),
        }
    }

    /// Counts a write's bytes as activity and passes its result on.
    fn wrote(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match written {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.conn.wrote_bytes();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self.pending(cx),
        }
    }

    /// What to answer when the socket itself is not ready.
    fn pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match self.check_deadline(cx) {
            Ok(()) => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.conn.read_bytes();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.pending(cx),
        }
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.wrote(cx, written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.pending(cx),
            ready => ready,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A connection's [`Conn`], as axum's connect info, for [`track_requests`].
#[derive(Clone)]
pub(crate) struct ConnHandle(Arc<Conn>);

impl Connected<IncomingStream<'_, LimitedListener>> for ConnHandle {
    fn connect_info(stream: IncomingStream<'_, LimitedListener>) -> Self {
        ConnHandle(stream.io().conn.clone())
    }
}

/// Counts a request as in progress from its start until it is answered, or for an answer of
/// unknown length (an event stream) until its body ends or is dropped,
/// and marks the connection upgraded when it answers 101.
pub(crate) async fn track_requests(request: Request, next: Next) -> Response {
    let Some(ConnectInfo(ConnHandle(conn))) = request
        .extensions()
        .get::<ConnectInfo<ConnHandle>>()
        .cloned()
    else {
        // Served without a LimitedListener (the fuzz harness): nothing to track.
        return next.run(request).await;
    };
    let in_progress = InProgress::new(conn);
    let response = next.run(request).await;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        in_progress.0.upgraded();
    }
    // A body of known length is written as bytes the stream sees move, so the request is done;
    // a stream of unknown length (server-sent events) is in progress while the client reads it,
    // so it carries the guard. (Wrapping every body would lose its length, making every answer
    // chunked.)
    if response.body().size_hint().exact().is_some() {
        return response;
    }
    response.map(|body| {
        Body::new(body.map_frame(move |frame| {
            let _in_progress = &in_progress;
            frame
        }))
    })
}

/// A request in progress on its connection, until dropped.
struct InProgress(Arc<Conn>);

impl InProgress {
    fn new(conn: Arc<Conn>) -> InProgress {
        conn.request_started();
        InProgress(conn)
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 8,
        }
    }

    fn state(now: Instant) -> ConnState {
        ConnState {
            requests: 0,
            upgraded: false,
            head_since: Some(now),
            last_activity: now,
            waker: None,
        }
    }

    #[test]
    fn deadlines_follow_what_the_connection_is_doing() {
        let now = Instant::now();
        let limits = limits();
        let mut s = state(now);
        // A new connection: its first head is due within the header timeout of the accept.
        assert_eq!(s.deadline(&limits), Some(now + limits.header_timeout));
        // A request in progress is never timed out.
        s.requests = 1;
        s.head_since = None;
        assert_eq!(s.deadline(&limits), None);
        // Between requests: the idle timeout from the last activity.
        s.requests = 0;
        let later = now + Duration::from_secs(3);
        s.last_activity = later;
        assert_eq!(s.deadline(&limits), Some(later + limits.idle_timeout));
        // The next head started: the header timeout from its first byte.
        s.head_since = Some(later);
        assert_eq!(s.deadline(&limits), Some(later + limits.header_timeout));
        // Upgraded: never.
        s.upgraded = true;
        assert_eq!(s.deadline(&limits), None);
        // A timeout too long to represent: never.
        let mut s = state(now);
        let huge = Limits {
            header_timeout: Duration::MAX,
            ..limits
        };
        assert_eq!(s.deadline(&huge), None);
        s.head_since = None;
        assert_eq!(s.deadline(&huge), Some(now + limits.idle_timeout));
    }
}
