//! The host's own public endpoints: `/health/live`, `/health/ready`
//! (and `/health`), `/metrics` and `/openapi.json`. The HTTP server routes these paths
//! here ([`crate::http::server::service`] takes the router).

use crate::app::App;
use crate::ops::health::Readiness;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::StatusCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// State of the endpoints: the app, and the last readiness report, which
/// lives as long as the router.
struct Endpoints {
    app: Arc<App>,
    readiness: Readiness,
}

/// The router for the host's endpoints.
pub fn router(app: Arc<App>) -> Router {
    let state = Arc::new(Endpoints {
        app,
        readiness: Readiness::default(),
    });
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/health", get(ready))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(openapi))
        .with_state(state)
}

async fn metrics_text(State(state): State<Arc<Endpoints>>) -> Response {
    let app = &state.app;
    app.services.database.update_gauges();
    if !app.workers.is_empty() || !app.services.jobs.queue_names().is_empty() {
        // Refreshes `trellis_queue_depth`; a store that does not answer
        // quickly leaves the last figures.
        let counts = app.services.jobs.counts();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), counts).await;
    }
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

async fn openapi(State(state): State<Arc<Endpoints>>) -> Response {
    axum::Json(crate::ops::openapi::document(&state.app)).into_response()
}

async fn live() -> Response {
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}

async fn ready(State(state): State<Arc<Endpoints>>) -> Response {
    let app = &state.app;
    if app.draining.load(Ordering::Relaxed) {
        let body = serde_json::json!({"status": "draining", "checks": {}});
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    }
    let report = state.readiness.report(app).await;
    // A soft failure (Redis) is reported as `degraded` with 200; see
    // `ops::health`.
    let status = if report.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(&*report)).into_response()
}
