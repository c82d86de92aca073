//! One client connection's timeouts: `server.header_timeout` for a
//! request head, `server.idle_timeout` between keep-alive requests.
//!
//! hyper's own `header_read_timeout` cannot express both: in hyper 1.12
//! (`proto/h1/conn.rs`, `poll_read_head` and `State::idle`) its timer
//! starts as soon as the connection waits for a head, which on a
//! keep-alive connection is the moment the previous response went out.
//! It is therefore an idle timeout as much as a header timeout, and with
//! it an idle connection would be closed after `header_timeout`. So the
//! connection keeps a [`Clock`] of its own instead, moved along by three
//! observers that all run on the connection's task:
//!
//! - [`Watched`], the socket: the first bytes read while idle start a
//!   head (`header_timeout` from then);
//! - [`ConnService`], the service: a parsed head makes the connection busy
//!   (no deadline: the route's own timeout bounds the request);
//! - [`Tracked`], the response body: when it ends, or hyper drops it, the
//!   connection is idle (`idle_timeout` from then).
//!
//! [`Guarded`] wraps the connection's future and closes the connection
//! (drops it) when the current deadline passes. A new connection starts
//! as if a head had begun: a client that connects and sends nothing gets
//! `header_timeout`, not `idle_timeout`.

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// A connection's timeouts, from `[server]`.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Longest wait for a whole request head.
    pub header: Duration,
    /// Longest idle wait between requests.
    pub idle: Duration,
}

/// Where a connection is between requests, hence which deadline applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Waiting for (the rest of) a request head.
    Head = 0,
    /// Between requests on a keep-alive connection.
    Idle = 1,
    /// A request is being served.
    Busy = 2,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Head,
            1 => Phase::Idle,
            _ => Phase::Busy,
        }
    }
}

/// The phase of one connection and when it began. Shared by the
/// connection's socket, service and response bodies, all of which run on
/// the connection's task, so relaxed atomics suffice (they are atomics
/// only because the service must be `Send + Sync`).
#[derive(Debug)]
pub struct Clock {
    /// When the connection was accepted; `since` counts from it.
    base: Instant,
    timeouts: Timeouts,
    phase: AtomicU8,
    /// Nanoseconds from `base` to the start of the current phase.
    since: AtomicU64,
}

impl Clock {
    /// A clock for a connection accepted now: it starts in [`Phase::Head`].
    pub fn new(timeouts: Timeouts) -> Arc<Clock> {
        Arc::new(Clock {
            base: Instant::now(),
            timeouts,
            phase: AtomicU8::new(Phase::Head as u8),
            since: AtomicU64::new(0),
        })
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Relaxed))
    }

    fn enter(&self, phase: Phase) {
        let since = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.since.store(since, Ordering::Relaxed);
        self.phase.store(phase as u8, Ordering::Relaxed);
    }

    /// When the connection is to be closed unless it moves on; `None`
    /// while a request is served.
    pub fn deadline(&self) -> Option<Instant> {
        let timeout = match self.phase() {
            Phase::Head => self.timeouts.header,
            Phase::Idle => self.timeouts.idle,
            Phase::Busy => return None,
        };
        let since = Duration::from_nanos(self.since.load(Ordering::Relaxed));
        Some(self.base + since + timeout)
    }

    /// Bytes arrived: an idle connection has begun a request head.
    fn read_bytes(&self) {
        if self.phase() == Phase::Idle {
            self.enter(Phase::Head);
        }
    }

    /// A request head was parsed.
    fn busy(&self) {
        self.phase.store(Phase::Busy as u8, Ordering::Relaxed);
    }

    /// The response has been handed to the socket.
    fn idle(&self) {
        self.enter(Phase::Idle);
    }
}

pin_project_lite::pin_project! {
    /// The client's socket, telling the [`Clock`] when bytes arrive.
    pub struct Watched<T> {
        #[pin]
        io: T,
        clock: Arc<Clock>,
    }
}

impl<T> Watched<T> {
    /// Watches `io` for `clock`.
    pub fn new(io: T, clock: Arc<Clock>) -> Watched<T> {
        Watched { io, clock }
    }
}

impl<T: AsyncRead> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.io.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.clock.read_bytes();
        }
        polled
    }
}

impl<T: AsyncWrite> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

/// The hyper service of one connection: puts the peer's address in each
/// request ([`ConnectInfo`], which per-IP rate limits read), runs the
/// tower service `S`, and tracks the response body for the [`Clock`].
#[derive(Clone)]
pub struct ConnService<S> {
    inner: S,
    peer: SocketAddr,
    clock: Arc<Clock>,
}

impl<S> ConnService<S> {
    /// Serves requests from `peer` with `inner`.
    pub fn new(inner: S, peer: SocketAddr, clock: Arc<Clock>) -> ConnService<S> {
        ConnService { inner, peer, clock }
    }
}

impl<S> hyper::service::Service<http::Request<Incoming>> for ConnService<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone,
{
    type Response = http::Response<Tracked>;
    type Error = Infallible;
    type Future = ConnFuture<S::Future>;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        self.clock.busy();
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(ConnectInfo(self.peer));
        // No `poll_ready`: the server's service (the edge, compression,
        // `Split`) is always ready, as its `poll_ready`s say.
        let mut inner = self.inner.clone();
        ConnFuture {
            inner: inner.call(req),
            clock: Some(self.clock.clone()),
        }
    }
}

pin_project_lite::pin_project! {
    /// Response future of [`ConnService`].
    pub struct ConnFuture<F> {
        #[pin]
        inner: F,
        clock: Option<Arc<Clock>>,
    }
}

impl<F> Future for ConnFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<http::Response<Tracked>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = ready!(this.inner.poll(cx));
        let clock = this.clock.take();
        Poll::Ready(Ok(response.map(|inner| Tracked { inner, clock })))
    }
}

/// A response body that makes its connection idle when it ends or is
/// dropped (hyper drops a body it does not need, e.g. for `HEAD`).
pub struct Tracked {
    inner: Body,
    /// Taken once the connection has been made idle.
    clock: Option<Arc<Clock>>,
}

impl Tracked {
    fn done(&mut self) {
        if let Some(clock) = self.clock.take() {
            clock.idle();
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.done();
    }
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if frame.is_none() {
            self.done();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// A connection's future that ends, dropping the connection, when its
    /// [`Clock`]'s deadline passes.
    pub struct Guarded<F> {
        #[pin]
        conn: F,
        #[pin]
        sleep: tokio::time::Sleep,
        armed: Option<Instant>,
        clock: Arc<Clock>,
    }
}

impl<F> Guarded<F> {
    /// Guards `conn` with `clock`.
    pub fn new(conn: F, clock: Arc<Clock>) -> Guarded<F> {
        let armed = clock.deadline();
        let first = armed.unwrap_or_else(|| Instant::now() + clock.timeouts.header);
        Guarded {
            conn,
            sleep: tokio::time::sleep_until(first),
            armed,
            clock,
        }
    }
}

/// How a [`Guarded`] connection ended.
#[derive(Debug)]
pub enum Ended<T> {
    /// The connection finished (or failed) by itself.
    Closed(T),
    /// It overran its deadline in this phase ([`Phase::Head`] or
    /// [`Phase::Idle`]) and was dropped.
    TimedOut(Phase),
}

impl<F: Future> Future for Guarded<F> {
    type Output = Ended<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        // The connection first: bytes it reads or a response it finishes
        // move the clock on before the deadline is checked.
        if let Poll::Ready(out) = this.conn.poll(cx) {
            return Poll::Ready(Ended::Closed(out));
        }
        let Some(deadline) = this.clock.deadline() else {
            // Busy: the sleep may fire once for a stale deadline; the
            // wake-up finds no deadline and waits on.
            return Poll::Pending;
        };
        if *this.armed != Some(deadline) {
            this.sleep.as_mut().reset(deadline);
            *this.armed = Some(deadline);
        }
        ready!(this.sleep.poll(cx));
        Poll::Ready(Ended::TimedOut(this.clock.phase()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeouts() -> Timeouts {
        Timeouts {
            header: Duration::from_secs(10),
            idle: Duration::from_secs(60),
        }
    }

    #[test]
    fn phases_move_the_deadline() {
        let clock = Clock::new(timeouts());
        let accepted = clock.deadline().unwrap();
        assert_eq!(accepted, clock.base + Duration::from_secs(10));

        // Bytes within a head do not extend it.
        clock.read_bytes();
        assert_eq!(clock.deadline(), Some(accepted));

        clock.busy();
        assert_eq!(clock.deadline(), None);
        // Bytes of a request body change nothing either.
        clock.read_bytes();
        assert_eq!(clock.phase(), Phase::Busy);

        clock.idle();
        let idle = clock.deadline().unwrap();
        assert!(idle >= accepted + Duration::from_secs(50), "{idle:?}");

        // The next request's first bytes start its head.
        clock.read_bytes();
        assert_eq!(clock.phase(), Phase::Head);
        let head = clock.deadline().unwrap();
        assert!(head < idle && head >= accepted, "{head:?}");
    }

    #[test]
    fn a_dropped_body_makes_the_connection_idle_once() {
        let clock = Clock::new(timeouts());
        clock.busy();
        let body = Tracked {
            inner: Body::empty(),
            clock: Some(clock.clone()),
        };
        drop(body);
        assert_eq!(clock.phase(), Phase::Idle);
    }

    #[tokio::test(start_paused = true)]
    async fn guarded_closes_after_the_deadline() {
        let clock = Clock::new(Timeouts {
            header: Duration::from_secs(1),
            idle: Duration::from_secs(5),
        });
        let started = tokio::time::Instant::now();
        let ended = Guarded::new(std::future::pending::<()>(), clock).await;
        assert!(matches!(ended, Ended::TimedOut(Phase::Head)), "{ended:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(1));
    }
}
