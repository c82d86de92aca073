//! The HTTP server: the router, its layers, and serving with graceful
//! shutdown.

use crate::app::App;
use crate::http::dispatch::dispatch;
use crate::http::edge;
use axum::Router;
use axum::ServiceExt as _;
use axum::extract::Request;
use axum::response::Response;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use tokio::net::TcpListener;
use tower::{Layer, Service};
use tower_http::CompressionLevel;
use tower_http::compression::predicate::{And, NotForContentType, Predicate, SizeAbove};
use tower_http::compression::{Compression, CompressionLayer};

/// Which responses are compressed: large enough, and not already
/// compressed or streamed event by event.
type CompressWhen =
    And<And<And<SizeAbove, NotForContentType>, NotForContentType>, NotForContentType>;

/// The service every connection gets: the edge (request id, security
/// headers, log line, metrics), compression, then [`Split`].
pub fn service(app: Arc<App>, host: Router) -> edge::Edge<Compression<Split, CompressWhen>> {
    let min = u16::try_from(app.server.compression_min_size.0).unwrap_or(u16::MAX);
    let compress_when = SizeAbove::new(min)
        .and(NotForContentType::GRPC)
        .and(NotForContentType::IMAGES)
        .and(NotForContentType::SSE);
    // Level 4 for both gzip and brotli: brotli's default (11) is far too
    // slow for responses generated per request.
    let compression = CompressionLayer::new()
        .quality(CompressionLevel::Precise(4))
        .compress_when(compress_when);
    let edge = edge::EdgeLayer::with_metrics(app.metrics.clone());
    edge.layer(compression.layer(Split { app, host }))
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
        "/health/live" | "/health/ready" | "/health" | "/metrics"
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
        if is_host_endpoint(req.uri().path()) {
            Box::pin(self.host.call(req))
        } else {
            let app = self.app.clone();
            Box::pin(async move { Ok(dispatch(app, req).await) })
        }
    }
}

/// Response future of [`Split`]: one allocation per request, as with
/// axum's own handler futures.
pub type SplitFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

/// Serves `app` on `listener` until `shutdown` resolves, then stops
/// accepting and gives requests in flight `shutdown_grace` to finish.
/// `host` answers the host's own endpoints.
pub async fn serve(
    app: Arc<App>,
    host: Router,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = app.server.shutdown_grace.0;
    let draining = Arc::new(tokio::sync::Notify::new());
    let notify = draining.clone();
    let state = app.clone();
    let serve = axum::serve(
        listener,
        service(app, host).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        state.draining.store(true, Ordering::Relaxed);
        tracing::info!(
            grace_ms = grace.as_millis() as u64,
            "shutting down: no longer accepting connections"
        );
        notify.notify_one();
    });
    tokio::select! {
        result = serve => result,
        () = async { draining.notified().await; tokio::time::sleep(grace).await } => {
            tracing::warn!("shutdown grace elapsed; abandoning requests still in flight");
            Ok(())
        }
    }
}
