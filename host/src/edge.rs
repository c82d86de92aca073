//! The HTTP edge every response passes: request ids, security headers and
//! the one structured log line per request.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderName, HeaderValue};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Instant;

/// `x-request-id`, in requests and responses.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id, put in the request extensions by [`middleware`].
#[derive(Clone, Debug)]
pub struct RequestId(pub Arc<str>);

/// Which route and component answered; put in the response extensions by
/// the dispatcher so the request log can name them.
#[derive(Clone, Debug)]
pub struct Served {
    /// Route name.
    pub route: Arc<str>,
    /// Hex digest of the component that served.
    pub component: Arc<str>,
}

const SECURITY_HEADERS: [(HeaderName, HeaderValue); 3] = [
    (
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    ),
    (
        HeaderName::from_static("x-frame-options"),
        HeaderValue::from_static("DENY"),
    ),
    (
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("no-referrer"),
    ),
];

/// Assigns the request id, adds security headers and logs the request.
pub async fn middleware(mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id: Arc<str> = match req.headers().get(&X_REQUEST_ID).and_then(acceptable_id) {
        Some(id) => id.into(),
        None => new_request_id().into(),
    };
    req.extensions_mut().insert(RequestId(id.clone()));
    let method = req.method().clone();
    let path = req.uri().path().to_owned();

    let mut response = next.run(req).await;

    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert(X_REQUEST_ID.clone(), value);
    }
    for (name, value) in &SECURITY_HEADERS {
        if !headers.contains_key(name) {
            headers.insert(name.clone(), value.clone());
        }
    }
    let served = response.extensions().get::<Served>();
    tracing::info!(
        target: "trellis::request",
        request_id = %id,
        method = %method,
        path = %path,
        route = served.map(|s| &*s.route),
        component = served.map(|s| &*s.component),
        status = response.status().as_u16(),
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    response
}

/// A client-supplied id is kept if it is short, visible ASCII: it ends up
/// in logs and headers, so nothing that could forge either gets through.
fn acceptable_id(value: &HeaderValue) -> Option<&str> {
    let s = value.to_str().ok()?;
    let ok = !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic());
    ok.then_some(s)
}

/// A new id: a per-process random prefix and a counter, unique across
/// hosts without a random-number call per request.
fn new_request_id() -> String {
    static PREFIX: LazyLock<u64> =
        LazyLock::new(|| RandomState::new().hash_one(std::process::id()));
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:016x}{n:016x}", *PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_hostile_ones_replaced() {
        assert_ne!(new_request_id(), new_request_id());
        assert_eq!(
            acceptable_id(&HeaderValue::from_static("abc-123")),
            Some("abc-123")
        );
        assert_eq!(acceptable_id(&HeaderValue::from_static("has space")), None);
        assert_eq!(
            acceptable_id(&HeaderValue::from_str(&"a".repeat(129)).unwrap()),
            None
        );
    }
}
