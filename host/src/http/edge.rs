//! The HTTP edge every response passes: request ids, security headers and
//! the one structured log line per request.
//!
//! The edge builds one [`RequestContext`] per request and passes it down in
//! the request's extensions; the dispatcher records in it the route that
//! serves, and the edge names that route when the response comes back.
//! Nothing travels back up inside the response.

use crate::observability::access_log;
use crate::observability::metrics::{Metrics, RouteMetrics};
use crate::observability::trace::{TRACEPARENT, TraceContext};
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Uri};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Instant;
use tower::{Layer, Service};

/// `x-request-id`, in requests and responses.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What the edge knows of one request, built once there and read by
/// everything below it.
pub struct RequestContext {
    /// The id the client sees in `x-request-id`: the client's own when
    /// acceptable, else a new one.
    pub id: Arc<str>,
    /// The W3C trace the request belongs to.
    pub trace: Arc<TraceContext>,
    /// The route that serves the request, once the dispatcher knows it.
    served: OnceLock<Served>,
}

impl RequestContext {
    /// A context for a request with these headers.
    fn new(headers: &http::HeaderMap) -> RequestContext {
        let id = match headers.get(&X_REQUEST_ID).and_then(acceptable_id) {
            Some(id) => id.into(),
            None => new_request_id(),
        };
        RequestContext {
            id,
            trace: Arc::new(TraceContext::from_request(headers.get(&TRACEPARENT))),
            served: OnceLock::new(),
        }
    }

    /// The context [`Edge`] gave the request with `extensions`; a fresh one
    /// outside the edge (a router driven in-process).
    pub fn of(extensions: &http::Extensions) -> Arc<RequestContext> {
        extensions
            .get::<Arc<RequestContext>>()
            .cloned()
            .unwrap_or_else(|| Arc::new(RequestContext::new(&http::HeaderMap::new())))
    }

    /// The id of the request with `extensions`; empty outside the edge.
    pub fn id_of(extensions: &http::Extensions) -> Arc<str> {
        extensions
            .get::<Arc<RequestContext>>()
            .map_or_else(|| Arc::from(""), |cx| cx.id.clone())
    }

    /// Records the route that serves the request, for the edge's log line,
    /// metrics and trace; the first call wins.
    pub fn served_by(&self, served: Served) {
        let _ = self.served.set(served);
    }
}

/// Which route and component answered, as the request log names them.
#[derive(Clone, Debug)]
pub struct Served {
    /// Route name.
    pub route: Arc<str>,
    /// Hex digest of the component that served.
    pub component: Arc<str>,
    /// The route's version number (1 at startup, +1 per hot load).
    pub version: u32,
    /// The route's metric series, when the host has metrics.
    pub metrics: Option<Arc<RouteMetrics>>,
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

/// Assigns the request id, adds security headers and logs each request.
/// A plain tower layer rather than `from_fn`: this runs on every request,
/// and boxing its future showed up in profiles.
/// With metrics, every request is also counted in `http_requests_total`
/// and `http_request_duration_seconds`.
#[derive(Clone, Default)]
pub struct EdgeLayer {
    metrics: Option<Arc<Metrics>>,
}

impl EdgeLayer {
    /// An edge that also records request metrics.
    pub fn with_metrics(metrics: Arc<Metrics>) -> EdgeLayer {
        EdgeLayer {
            metrics: Some(metrics),
        }
    }
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`EdgeLayer`] wraps around the router.
#[derive(Clone)]
pub struct Edge<S> {
    inner: S,
    metrics: Option<Arc<Metrics>>,
}

impl<S, B> Service<Request> for Edge<S>
where
    S: Service<Request, Response = http::Response<B>, Error = Infallible>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = EdgeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let started = Instant::now();
        let context = Arc::new(RequestContext::new(req.headers()));
        req.extensions_mut().insert(context.clone());
        let method = req.method().clone();
        let uri = req.uri().clone();
        EdgeFuture {
            inner: self.inner.call(req),
            metrics: self.metrics.clone(),
            started,
            context,
            method,
            uri,
        }
    }
}

pin_project_lite::pin_project! {
    /// Response future of [`Edge`].
    pub struct EdgeFuture<F> {
        #[pin]
        inner: F,
        metrics: Option<Arc<Metrics>>,
        started: Instant,
        context: Arc<RequestContext>,
        method: Method,
        uri: Uri,
    }
}

impl<F, B> Future for EdgeFuture<F>
where
    F: Future<Output = Result<http::Response<B>, Infallible>>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = ready!(this.inner.poll(cx));
        let mut response = response.map(Body::new);
        let RequestContext { id, trace, served } = &**this.context;
        let headers = response.headers_mut();
        // Room for what the edge adds, so the map grows at most once.
        headers.reserve(2 + SECURITY_HEADERS.len());
        if let Ok(value) = HeaderValue::from_str(id) {
            headers.insert(X_REQUEST_ID.clone(), value);
        }
        headers.insert(TRACEPARENT.clone(), trace.traceparent());
        for (name, value) in &SECURITY_HEADERS {
            headers.entry(name).or_insert_with(|| value.clone());
        }
        let served = served.get();
        let duration = this.started.elapsed();
        if let Some(metrics) = this.metrics {
            let route = served.map_or("", |s| &*s.route);
            metrics.request(
                route,
                this.method.as_str(),
                response.status().as_u16(),
                duration,
                served.and_then(|s| s.metrics.as_deref()),
            );
        }
        let status = response.status().as_u16();
        if crate::observability::trace::exporting() {
            trace.record_request(
                format!("{} {}", this.method, served.map_or("", |s| &*s.route)),
                duration,
                vec![
                    ("http.request.method", this.method.to_string()),
                    (
                        "http.route",
                        served.map_or(String::new(), |s| s.route.to_string()),
                    ),
                    ("url.path", this.uri.path().to_owned()),
                    ("http.response.status_code", status.to_string()),
                    ("trellis.request_id", id.to_string()),
                ],
                status >= 500,
            );
        }
        access_log::record(&access_log::Entry {
            request_id: id,
            trace_id: &trace.trace_id,
            method: this.method,
            path: this.uri.path(),
            route: served.map(|s| &*s.route),
            component: served.map(|s| &*s.component),
            version: served.map(|s| s.version),
            status: response.status().as_u16(),
            duration,
            upstream: trace.upstream_time(),
        });
        Poll::Ready(Ok(response))
    }
}

/// A client-supplied id is kept if it is short, visible ASCII: it ends up
/// in logs and headers, so nothing that could forge either gets through.
fn acceptable_id(value: &HeaderValue) -> Option<&str> {
    let s = value.to_str().ok()?;
    let ok = !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic());
    ok.then_some(s)
}

/// A new id: 128 random bits in hex. Not guessable from earlier ids, so
/// an id seen in one response tells nothing about anyone else's.
fn new_request_id() -> Arc<str> {
    crate::ids::random_hex_arc(2)
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
