//! The HTTP server: the router, its layers, and the accept loop that
//! serves them with connection limits and graceful shutdown.

use crate::app::App;
use crate::http::dispatch::dispatch;
use crate::http::edge::RequestContext;
use crate::http::error::{ApiError, ErrorKind};
use crate::http::{conn, edge};
use axum::Router;
use axum::extract::Request;
use axum::response::IntoResponse as _;
use axum::response::Response;
use http_body::Body as _;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::{Layer, Service};
use tower_http::CompressionLevel;
use tower_http::compression::predicate::{And, NotForContentType, Predicate, SizeAbove};
use tower_http::compression::{Compression, CompressionLayer};

/// Which responses are compressed: large enough, and not already
/// compressed or streamed event by event.
type CompressWhen =
    And<And<And<SizeAbove, NotForContentType>, NotForContentType>, NotForContentType>;

/// The service every connection gets: the edge (request id, security
/// headers, log line, metrics), compression when the client accepts it,
/// then [`Split`].
pub fn service(app: Arc<App>, host: Router) -> edge::Edge<MaybeCompress> {
    let min = u16::try_from(app.server.compression_min_size.0).unwrap_or(u16::MAX);
    let compress_when = SizeAbove::new(min)
        .and(NotForContentType::GRPC)
        .and(NotForContentType::IMAGES)
        .and(NotForContentType::SSE);
    // Level 4 for both gzip and brotli: brotli's default (11) is far too
    // slow for responses generated per request.
    let compression = CompressionLayer::new()
        .quality(CompressionLevel::Precise(4))
        .compress_when(compress_when.clone());
    let edge = edge::EdgeLayer::with_metrics(app.metrics.clone());
    let split = Split { app, host };
    edge.layer(MaybeCompress {
        compressed: compression.layer(split.clone()),
        plain: split,
        when: compress_when,
    })
}

/// [`Split`] behind tower-http's compression for requests that name an
/// encoding, and directly for the others, which it would answer
/// unencoded anyway. Its response body holds any encoder's state inline
/// (brotli's is kilobytes), and every response paid for moving it.
#[derive(Clone)]
pub struct MaybeCompress {
    compressed: Compression<Split, CompressWhen>,
    plain: Split,
    when: CompressWhen,
}

impl Service<Request> for MaybeCompress {
    type Response = Response;
    type Error = Infallible;
    type Future = Varied;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Varied {
        if !req.headers().contains_key(http::header::ACCEPT_ENCODING) {
            return Varied {
                inner: self.plain.call(req),
                when: Some(self.when.clone()),
            };
        }
        let compressing = self.compressed.call(req);
        Varied {
            inner: Box::pin(async move { Ok(compressing.await?.map(axum::body::Body::new)) }),
            when: None,
        }
    }
}

/// Response future of [`MaybeCompress`]: an uncompressed answer still
/// says `Vary: accept-encoding` where tower-http would have, as another
/// client could have got it compressed.
pub struct Varied {
    inner: SplitFuture,
    /// Set on the uncompressed path: which responses are compressible.
    when: Option<CompressWhen>,
}

impl Future for Varied {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Ok(mut response) = std::task::ready!(this.inner.as_mut().poll(cx));
        if let Some(when) = &this.when {
            let headers = response.headers();
            let compressible = !headers.contains_key(http::header::CONTENT_ENCODING)
                && !headers.contains_key(http::header::CONTENT_RANGE)
                && when.should_compress(&response);
            let varies = headers.get_all(http::header::VARY).iter().any(|v| {
                v.as_bytes()
                    .to_ascii_lowercase()
                    .windows(15)
                    .any(|w| w == b"accept-encoding")
            });
            if compressible && !varies {
                response.headers_mut().append(
                    http::header::VARY,
                    http::HeaderValue::from_static("accept-encoding"),
                );
            }
        }
        Poll::Ready(Ok(response))
    }
}

/// The host's own endpoints (health, metrics: a router [`crate::ops`]
/// builds) through an axum router; every other path straight to
/// [`dispatch`]. Component requests skip the
/// router: its path lookup, boxed-service clone and boxed handler future
/// were a few percent of a request's CPU, for paths it could only send to
/// its fallback.
#[derive(Clone)]
pub struct Split {
    app: Arc<App>,
    host: Router,
}

/// The paths [`Split`] hands to the host router; the manifest reserves
/// them, so no route can claim them.
fn is_host_endpoint(path: &str) -> bool {
    matches!(
        path,
        "/health/live" | "/health/ready" | "/health" | "/metrics" | "/openapi.json"
    )
}

impl Service<Request> for Split {
    type Response = Response;
    type Error = Infallible;
    type Future = SplitFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> SplitFuture {
        if let Some(why) = bad_host(&req) {
            let kind = ErrorKind::BadRequest(why.to_owned());
            let response =
                ApiError::new(kind, &RequestContext::id_of(req.extensions())).into_response();
            return Box::pin(std::future::ready(Ok(response)));
        }
        if is_host_endpoint(req.uri().path()) {
            Box::pin(self.host.call(req))
        } else {
            let app = self.app.clone();
            // Let the other connections that became readable with this one
            // compute their answers before this one is written: the
            // answers then leave back to back, and a client waiting on
            // several connections is woken once for them all instead of
            // once per answer. On loopback each such wake-up is an
            // interrupt to the client's core; on a 2-core VM this doubled
            // hello's req/s at 16 connections (benches/README, "Writing
            // answers in batches"). Not for requests with a body: hyper
            // reads on while the answer waits, and a body the client broke
            // (cut short, malformed chunking) would make it close the
            // connection before the answer went out.
            let batch = req.body().is_end_stream();
            Box::pin(async move {
                let response = dispatch(app, req).await;
                if batch {
                    tokio::task::yield_now().await;
                }
                Ok(response)
            })
        }
    }
}

/// Why `req` breaks RFC 9112's rule on `Host` (section 3.2: an HTTP/1.1
/// request has exactly one), if it does. The answer is 400 before any
/// route is looked up: which host a request is for must not be ambiguous
/// to anything behind us. HTTP/1.0 may omit it.
fn bad_host(req: &Request) -> Option<&'static str> {
    let mut hosts = req.headers().get_all(http::header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => Some("a request must carry one Host header, not several"),
        // wasi:http takes the authority from Host; one that is not an
        // authority (found by the edge fuzzer: a non-ASCII byte) failed
        // there, as a 500.
        (Some(host), None) if http::uri::Authority::try_from(host.as_bytes()).is_err() => {
            Some("the Host header is not a valid authority")
        }
        (None, _) if req.version() == http::Version::HTTP_11 => {
            Some("an HTTP/1.1 request must carry a Host header")
        }
        _ => None,
    }
}

/// Response future of [`Split`]: one allocation per request, as with
/// axum's own handler futures.
pub type SplitFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

/// Serves `app` on `listener` until `shutdown` resolves, then stops
/// accepting and gives requests in flight `shutdown_grace` to finish.
/// `host` answers the host's own endpoints.
///
/// Each connection is HTTP/1.1 with keep-alive, closed when it overruns
/// `header_timeout` or `idle_timeout` ([`conn`]). At most
/// `max_connections` are open at once: past that the loop stops calling
/// `accept` (new clients wait in the kernel's backlog) until one closes.
/// An accept that fails (`EMFILE` and the like) is logged, at most once a
/// second, and retried after a pause that doubles from 10 ms to 1 s.
pub async fn serve(
    app: Arc<App>,
    host: Router,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let settings = &app.server;
    let grace = settings.shutdown_grace.0;
    let timeouts = conn::Timeouts {
        header: settings.header_timeout.0,
        idle: settings.idle_timeout.0,
    };
    let slots = Arc::new(Semaphore::new(settings.max_connections as usize));
    let mut http = http1::Builder::new();
    // hyper's header timer would also close idle keep-alive connections
    // after `header_timeout` (see `conn`); `conn::Guarded` keeps both.
    http.keep_alive(true).header_read_timeout(None);
    let service = service(app.clone(), host);
    let graceful = GracefulShutdown::new();
    let mut errors = AcceptErrors::default();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            biased;
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    if let Some(pause) = errors.failed(&err) {
                        tokio::select! {
                            () = &mut shutdown => break,
                            () = tokio::time::sleep(pause) => {}
                        }
                    }
                    continue;
                }
            },
        };
        errors.succeeded();
        let clock = conn::Clock::new(timeouts);
        let io = TokioIo::new(conn::Watched::new(stream, clock.clone()));
        let svc = conn::ConnService::new(service.clone(), peer, clock.clone());
        let connection = graceful.watch(http.serve_connection(io, svc));
        tokio::spawn(async move {
            match conn::Guarded::new(connection, clock).await {
                conn::Ended::Closed(Ok(())) => {}
                conn::Ended::Closed(Err(err)) => {
                    tracing::debug!(%peer, cause = %err, "connection failed");
                }
                conn::Ended::TimedOut(phase) => {
                    tracing::debug!(%peer, ?phase, "connection timed out; closed");
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    app.draining.store(true, Ordering::Relaxed);
    tracing::info!(
        grace_ms = grace.as_millis() as u64,
        "shutting down: no longer accepting connections"
    );
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!("shutdown grace elapsed; abandoning requests still in flight");
        }
    }
    Ok(())
}

/// Failed accepts since the last success: the pause before the next
/// try, and the rate limit on their log lines.
#[derive(Debug)]
struct AcceptErrors {
    /// Pause before the next try; doubles per failure up to
    /// [`AcceptErrors::MAX_PAUSE`], back to the minimum on success.
    pause: Duration,
    /// When the last line was logged; at most one a second.
    logged_at: Option<Instant>,
    /// Failures not yet counted in a logged line.
    unlogged: u64,
    /// Failures since the last success.
    run: u64,
}

impl Default for AcceptErrors {
    fn default() -> Self {
        AcceptErrors {
            pause: AcceptErrors::MIN_PAUSE,
            logged_at: None,
            unlogged: 0,
            run: 0,
        }
    }
}

impl AcceptErrors {
    const MIN_PAUSE: Duration = Duration::from_millis(10);
    const MAX_PAUSE: Duration = Duration::from_secs(1);
    const LOG_EVERY: Duration = Duration::from_secs(1);

    /// Records a failed accept and returns how long to wait before the
    /// next; `None` for errors about one client's connection (reset or
    /// aborted before it was accepted), where the next accept can go
    /// ahead at once.
    fn failed(&mut self, err: &std::io::Error) -> Option<Duration> {
        use std::io::ErrorKind;
        if matches!(
            err.kind(),
            ErrorKind::ConnectionAborted
                | ErrorKind::ConnectionReset
                | ErrorKind::ConnectionRefused
        ) {
            return None;
        }
        self.unlogged += 1;
        self.run += 1;
        let pause = self.pause;
        let now = Instant::now();
        if self
            .logged_at
            .is_none_or(|at| now.duration_since(at) >= AcceptErrors::LOG_EVERY)
        {
            tracing::error!(
                cause = %err,
                errors = self.unlogged,
                retry_ms = pause.as_millis() as u64,
                "accepting connections failed; retrying"
            );
            self.logged_at = Some(now);
            self.unlogged = 0;
        }
        self.pause = (pause * 2).min(AcceptErrors::MAX_PAUSE);
        Some(pause)
    }

    /// Records a successful accept; logs the recovery after failures.
    fn succeeded(&mut self) {
        if self.run > 0 {
            tracing::info!(errors = self.run, "accepting connections again");
            *self = AcceptErrors::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_back_off_and_reset() {
        let mut errors = AcceptErrors::default();
        let emfile = std::io::Error::from_raw_os_error(24);
        let pauses: Vec<_> = (0..9).map(|_| errors.failed(&emfile).unwrap()).collect();
        let ms: Vec<_> = pauses.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        // Only the first of these (within a second) was logged.
        assert_eq!(errors.unlogged, 8);
        assert_eq!(errors.run, 9);

        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionAborted);
        assert_eq!(errors.failed(&reset), None);

        errors.succeeded();
        assert_eq!(errors.run, 0);
        assert_eq!(errors.failed(&emfile), Some(Duration::from_millis(10)));
    }
}
