//! Native floor for the `sql` suite of `benches/run.sh`: the `users`
//! component's `GET /users/{id}` without wasm, as a plain axum app on a
//! sqlx PostgreSQL pool. It runs the same statement as the component and
//! Express (`SELECT id, name, email, created_at FROM users WHERE id = $1`,
//! prepared once per pooled connection by sqlx's statement cache) and
//! answers byte for byte what the component answers:
//!
//! - `200`, `application/json`,
//!   `{"id":1,"name":"..","email":"..","created_at":"2026-01-01T00:01:00Z"}`
//!   (`created_at` formatted as the host's SQL capability formats a
//!   `TIMESTAMPTZ`);
//! - `404`, `application/json`,
//!   `{"error":{"code":"NOT_FOUND","message":"no user with id 7"}}`;
//! - `422` `VALIDATION_FAILED` naming the field `id` for an id that is not
//!   an `i64`;
//! - `503` `UNAVAILABLE` (with `Retry-After: 1`) when the pool or the
//!   database is out of reach, `500` `INTERNAL_ERROR` for any other failure.
//!
//! The error bodies lack only the `request_id` the Trellis host adds to a
//! component's errors (a per-request id; there is none here).
//!
//! It runs on tokio's default multi-threaded runtime (one worker per core),
//! as the Trellis host does, with axum's stock HTTP/1 server and no tuning.
//!
//! Settings (environment), as `benches/express/users.js` takes them:
//! - `PORT`: listen port on `HOST` (default `127.0.0.1:8092`)
//! - `DATABASE_URL`: the PostgreSQL URL; its `options=-csearch_path%3D...`
//!   parameter selects the benchmark schema
//! - `POOL_MAX`: pool size (default 20, the benchmark's `SQL_POOL`)

mod shutdown;

use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header::RETRY_AFTER;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, serve};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

const DEFAULT_HOST: &str = "127.0.0.1";
const DEFAULT_PORT: u16 = 8092;
const DEFAULT_DATABASE_URL: &str =
    "postgres://postgres@127.0.0.1:5432/test?options=-csearch_path%3Dtrellis_bench";
const DEFAULT_POOL_MAX: u32 = 20;
/// The Trellis manifest's default `acquire_timeout`.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The statement the component (`plugins/users`) and Express run.
const SELECT_ONE: &str = "SELECT id, name, email, created_at FROM users WHERE id = $1";

/// A user as the component serializes it: same fields, same order.
#[derive(Serialize)]
struct User {
    id: i64,
    name: String,
    email: String,
    created_at: String,
}

/// The SDK's error body, `{"error":{"code","field"?,"message"}}`; the
/// fields are in the order the SDK's `serde_json::Map` (sorted) writes them.
#[derive(Serialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize)]
struct ErrorDetail {
    code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'static str>,
    message: String,
}

fn error(status: StatusCode, code: &'static str, message: String) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code,
            field: None,
            message,
        },
    };
    (status, Json(body)).into_response()
}

/// The component's `Request::param_as` failure: 422 naming the field.
fn invalid_id(err: std::num::ParseIntError) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: "VALIDATION_FAILED",
            field: Some("id"),
            message: format!("id is not valid: {err}"),
        },
    };
    (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
}

/// A failed query as the host's SQL capability and the SDK classify it: a
/// database out of reach is a 503 the client may retry, anything else a
/// 500; the cause goes to the log, never to the client.
fn query_failed(err: sqlx::Error) -> Response {
    eprintln!("GET /users/{{id}} failed: {err}");
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => {
            let mut response = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "service unavailable".to_owned(),
            );
            response
                .headers_mut()
                .insert(RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
            response
        }
        _ => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            "internal error".to_owned(),
        ),
    }
}

async fn user(State(pool): State<PgPool>, Path(id): Path<String>) -> Response {
    // Parsed as the component parses it (`i64::from_str`), so `+7` and
    // `-7` are ids here too.
    let id: i64 = match id.parse() {
        Ok(id) => id,
        Err(err) => return invalid_id(err),
    };
    let row: Option<(i64, String, String, DateTime<Utc>)> = match sqlx::query_as(SELECT_ONE)
        .bind(id)
        .fetch_optional(&pool)
        .await
    {
        Ok(row) => row,
        Err(err) => return query_failed(err),
    };
    let Some((user_id, name, email, created_at)) = row else {
        return error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("no user with id {id}"),
        );
    };
    Json(User {
        id: user_id,
        name,
        email,
        // The host's text for a TIMESTAMPTZ column: RFC 3339 in UTC with
        // `Z`, fractional seconds only when there are any.
        created_at: created_at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
    })
    .into_response()
}

/// Environment variable `name` parsed as `T`, or `default` when unset.
fn env_or<T>(name: &str, default: T) -> Result<T, Box<dyn std::error::Error>>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .map_err(|err| format!("{name}={value:?}: {err}").into()),
        Err(std::env::VarError::NotPresent) => Ok(default),
        Err(err) => Err(format!("{name}: {err}").into()),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let host = env_or("HOST", DEFAULT_HOST.to_owned())?;
    let port: u16 = env_or("PORT", DEFAULT_PORT)?;
    let url = env_or("DATABASE_URL", DEFAULT_DATABASE_URL.to_owned())?;
    let pool_max: u32 = env_or("POOL_MAX", DEFAULT_POOL_MAX)?;
    let options: PgConnectOptions = url.parse()?;
    let pool = PgPoolOptions::new()
        .max_connections(pool_max)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        // No ping before each use, as neither the Trellis host nor pg does:
        // it would double the round trips of a one-query request.
        .test_before_acquire(false)
        .connect_with(options.application_name("axum-users"))
        .await
        .map_err(|err| format!("connecting to PostgreSQL: {err}"))?;
    let app = Router::new()
        .route("/users/{id}", get(user))
        .with_state(pool.clone());
    let listener = tokio::net::TcpListener::bind((host.as_str(), port)).await?;
    eprintln!(
        "axum-users listening on http://{} (pool max {pool_max})",
        listener.local_addr()?
    );
    serve(listener, app)
        .with_graceful_shutdown(shutdown::shutdown_signal())
        .await?;
    pool.close().await;
    Ok(())
}
