//! The JSON errors the host answers with (DESIGN.md, HTTP contract).
//!
//! 4xx bodies say what the client did wrong; 5xx bodies say only
//! "internal error" and the cause goes to the log.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use std::time::Duration;

/// An error answered by the host itself rather than a guest, with the id
/// of the request it answers.
#[derive(Debug)]
pub struct ApiError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Echoed in the body so clients can quote it to operators.
    pub request_id: std::sync::Arc<str>,
}

impl ApiError {
    /// The error `kind` for the request `request_id`.
    pub fn new(kind: ErrorKind, request_id: &std::sync::Arc<str>) -> ApiError {
        ApiError {
            kind,
            request_id: request_id.clone(),
        }
    }
}

/// The host's error codes.
#[derive(Debug)]
pub enum ErrorKind {
    /// No route matches the path.
    NotFound,
    /// The route exists but not for this method.
    MethodNotAllowed {
        /// Value of the `Allow` header.
        allow: String,
    },
    /// The body is larger than the route's `max_body`.
    PayloadTooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// The request itself is broken, e.g. a malformed or truncated body;
    /// the message says how.
    BadRequest(String),
    /// The handler ran past its deadline.
    HandlerTimeout(Duration),
    /// The handler trapped, ran out of memory or gave no response.
    HandlerFailed,
    /// The route (or the host) is at its concurrency limit.
    Overloaded,
    /// The route's rate limit refused the request.
    RateLimited(crate::services::rate_limit::Decision),
    /// Admin API: the bearer token is missing or wrong.
    Unauthorized,
    /// A route's `auth` found no credential or refused it; the message
    /// says why without quoting it, `challenge` is the `WWW-Authenticate`.
    AuthFailed {
        /// For the client.
        message: String,
        /// The `WWW-Authenticate` value.
        challenge: HeaderValue,
    },
    /// The caller is known but may not do this (a missing scope, an origin
    /// CORS does not allow).
    Forbidden {
        /// For the client.
        message: String,
        /// The `WWW-Authenticate` value, for a missing scope.
        challenge: Option<HeaderValue>,
    },
    /// Something the host needs from elsewhere is unavailable (e.g. the
    /// keys to verify tokens); the message says what, not why.
    UpstreamUnavailable(String),
    /// Admin API: no route has this name.
    NoSuchRoute(String),
    /// Admin API: no queue (or topic group) has this name.
    NoSuchQueue(String),
    /// Admin API: no `[[worker]]` has this name.
    NoSuchWorker(String),
    /// Admin API: the settings or the component were refused; the message
    /// says why (the operator's input, so it is shown in full).
    ValidationFailed(String),
    /// Admin API: the request cannot apply to the route's current state.
    Conflict(String),
    /// The request does not match its route's `schema`: 422
    /// `VALIDATION_FAILED`, as the guest SDK answers for a body of the
    /// wrong shape, with one detail per problem found.
    SchemaMismatch {
        /// What was checked and how much failed.
        message: String,
        /// `(path, message)`: a JSON pointer into the body or the query
        /// object, and what is wrong there.
        details: Vec<(String, String)>,
    },
    /// A host failure; the cause is logged, not shown.
    Internal,
}

impl ErrorKind {
    fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            ErrorKind::NotFound => (
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "no route matches this path".into(),
            ),
            ErrorKind::MethodNotAllowed { allow } => (
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                format!("this route accepts {allow}"),
            ),
            ErrorKind::PayloadTooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                format!("request body exceeds the limit of {limit} bytes"),
            ),
            ErrorKind::BadRequest(message) => {
                (StatusCode::BAD_REQUEST, "BAD_REQUEST", message.clone())
            }
            ErrorKind::HandlerTimeout(d) => (
                StatusCode::GATEWAY_TIMEOUT,
                "HANDLER_TIMEOUT",
                format!("the handler did not answer within {}ms", d.as_millis()),
            ),
            ErrorKind::HandlerFailed => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "HANDLER_FAILED",
                "internal error".into(),
            ),
            ErrorKind::Overloaded => (
                StatusCode::SERVICE_UNAVAILABLE,
                "OVERLOADED",
                "too many requests in flight; retry shortly".into(),
            ),
            ErrorKind::RateLimited(decision) => (
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITED",
                format!(
                    "rate limit of {} requests exceeded; retry in {}ms",
                    decision.limit,
                    decision.retry_after.as_millis().max(1)
                ),
            ),
            ErrorKind::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "a valid bearer token is required".into(),
            ),
            ErrorKind::AuthFailed { message, .. } => {
                (StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message.clone())
            }
            ErrorKind::Forbidden { message, .. } => {
                (StatusCode::FORBIDDEN, "FORBIDDEN", message.clone())
            }
            ErrorKind::UpstreamUnavailable(message) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "UPSTREAM_UNAVAILABLE",
                message.clone(),
            ),
            ErrorKind::NoSuchRoute(name) => (
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                format!("no route named {name:?}"),
            ),
            ErrorKind::NoSuchQueue(name) => (
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                format!("no queue named {name:?}"),
            ),
            ErrorKind::NoSuchWorker(name) => (
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                format!("no worker named {name:?}"),
            ),
            ErrorKind::ValidationFailed(message) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "VALIDATION_FAILED",
                message.clone(),
            ),
            ErrorKind::Conflict(message) => (StatusCode::CONFLICT, "CONFLICT", message.clone()),
            ErrorKind::SchemaMismatch { message, .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "VALIDATION_FAILED",
                message.clone(),
            ),
            ErrorKind::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "internal error".into(),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.kind.parts();
        let request_id = &*self.request_id;
        let mut body = serde_json::json!({
            "error": { "code": code, "message": message, "request_id": request_id }
        });
        if let ErrorKind::SchemaMismatch { details, .. } = &self.kind {
            body["error"]["details"] = details
                .iter()
                .map(|(path, message)| serde_json::json!({ "path": path, "message": message }))
                .collect();
        }
        let mut response = Response::new(Body::from(body.to_string()));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        match self.kind {
            ErrorKind::MethodNotAllowed { allow } => {
                if let Ok(v) = HeaderValue::from_str(&allow) {
                    headers.insert(header::ALLOW, v);
                }
            }
            ErrorKind::PayloadTooLarge { .. } | ErrorKind::BadRequest(_) => {
                // The rest of the body was never read, so this connection
                // cannot carry another request; tell the client not to try.
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            ErrorKind::Overloaded => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ErrorKind::RateLimited(decision) => decision.write_headers(headers),
            ErrorKind::Unauthorized => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"trellis-admin\""),
                );
            }
            ErrorKind::AuthFailed { challenge, .. }
            | ErrorKind::Forbidden {
                challenge: Some(challenge),
                ..
            } => {
                headers.insert(header::WWW_AUTHENTICATE, challenge);
            }
            ErrorKind::UpstreamUnavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        response
    }
}
