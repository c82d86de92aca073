//! The HTTP server: the router, its layers, and serving with graceful
//! shutdown.

use crate::app::App;
use crate::dispatch::dispatch;
use crate::edge;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::StatusCode;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::net::TcpListener;
use tower_http::CompressionLevel;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};

/// The router: host endpoints, then every other path to its component.
pub fn router(app: Arc<App>) -> Router {
    let min = u16::try_from(app.server.compression_min_size.0).unwrap_or(u16::MAX);
    let metrics = app.metrics.clone();
    let compress_when = SizeAbove::new(min)
        .and(NotForContentType::GRPC)
        .and(NotForContentType::IMAGES)
        .and(NotForContentType::SSE);
    // Level 4 for both gzip and brotli: brotli's default (11) is far too
    // slow for responses generated per request.
    let compression = CompressionLayer::new()
        .quality(CompressionLevel::Precise(4))
        .compress_when(compress_when);
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/health", get(ready))
        .route("/metrics", get(metrics_text))
        .fallback(dispatch)
        .with_state(app)
        .layer(compression)
        .layer(edge::EdgeLayer::with_metrics(metrics))
}

async fn metrics_text(State(app): State<Arc<App>>) -> Response {
    app.services.database.update_gauges();
    let body = app.metrics.render();
    (
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn live() -> Response {
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}

async fn ready(State(app): State<Arc<App>>) -> Response {
    if app.draining.load(Ordering::Relaxed) {
        let body = serde_json::json!({"status": "draining", "checks": {}});
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    }
    let report = app.readiness.report(&app).await;
    let status = if report.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(&*report)).into_response()
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops
/// accepting and gives requests in flight `shutdown_grace` to finish.
pub async fn run(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = app.server.shutdown_grace.0;
    let draining = Arc::new(tokio::sync::Notify::new());
    let notify = draining.clone();
    let state = app.clone();
    let serve = axum::serve(
        listener,
        router(app).into_make_service_with_connect_info::<SocketAddr>(),
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

/// Resolves on SIGINT (ctrl-c) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
