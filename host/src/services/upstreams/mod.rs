//! Outbound HTTP: the `[upstreams]` guests may call, each with one pooled
//! client built at start and shared by every request, a connection cap,
//! timeouts, retries with backoff, and a circuit breaker.
//!
//! Knows nothing of guests or `wasi:http`: the capability
//! ([`crate::capabilities::outbound`]) matches a guest's request to an
//! upstream and maps [`CallError`] to `wasi:http` error codes.

pub mod breaker;
pub mod client;

use crate::config::manifest::{Manifest, UpstreamSpec};
use crate::observability::metrics::Metrics;
use breaker::{Admission, Breaker, State};
use bytes::Bytes;
pub use client::{BoxError, OutgoingBody};
use http::{Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts};
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Every declared upstream, by name. Built once at start.
#[derive(Default)]
pub struct Upstreams {
    by_name: BTreeMap<String, Arc<Upstream>>,
}

impl Upstreams {
    /// The upstreams `manifest` declares, with their clients.
    pub fn new(manifest: &Manifest, metrics: &Metrics) -> anyhow::Result<Upstreams> {
        let series = UpstreamMetrics::register(metrics);
        let mut by_name = BTreeMap::new();
        for (name, entry) in &manifest.upstreams {
            let spec = entry
                .spec()
                .ok_or_else(|| anyhow::anyhow!("upstream {name:?} was not validated"))?;
            let upstream = Upstream::new(spec.clone(), &series)
                .map_err(|e| e.context(format!("upstream {name:?}")))?;
            by_name.insert(name.clone(), Arc::new(upstream));
        }
        Ok(Upstreams { by_name })
    }

    /// The upstream `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.by_name.get(name)
    }

    /// Every upstream, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        self.by_name.values()
    }
}

/// One upstream: its settings, pooled client, connection cap and breaker.
pub struct Upstream {
    /// Its validated settings.
    pub spec: Arc<UpstreamSpec>,
    client: client::PooledClient,
    /// One permit per connection `max_connections` allows; held from
    /// sending until the response body ends or is dropped.
    slots: Arc<Semaphore>,
    breaker: Mutex<Breaker>,
    metrics: Series,
}

/// A guest's limits on one call (`wasi:http` request options) and the
/// route's deadline.
#[derive(Clone, Copy, Debug, Default)]
pub struct CallOptions {
    /// The route's deadline: no attempt or backoff runs past it.
    pub deadline: Option<Instant>,
    /// Lowers the upstream's `timeout` for the response head.
    pub first_byte_timeout: Option<Duration>,
    /// Lowers the upstream's `timeout` between body chunks.
    pub between_bytes_timeout: Option<Duration>,
}

/// Why a call produced no response.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The breaker is open: the network was not touched.
    #[error("the upstream's circuit breaker is open")]
    BreakerOpen,
    /// No connection came free within the timeout.
    #[error("all {0} connections to the upstream are busy")]
    ConnectionLimit(u32),
    /// TCP (or TLS) connect took longer than `connect_timeout`.
    #[error("connecting timed out")]
    ConnectTimeout,
    /// The upstream refused the connection.
    #[error("connection refused")]
    ConnectionRefused,
    /// The host name did not resolve.
    #[error("DNS lookup failed: {0}")]
    Dns(String),
    /// The TLS handshake failed; `certificate` when the server's
    /// certificate was not trusted.
    #[error("TLS: {message}")]
    Tls {
        /// Whether the certificate was refused.
        certificate: bool,
        /// rustls's message.
        message: String,
    },
    /// No response head within `timeout` (or before the deadline).
    #[error("no response within {0:?}")]
    Timeout(Duration),
    /// The response body stalled longer than allowed between chunks.
    #[error("the response body stalled for {0:?}")]
    ReadTimeout(Duration),
    /// The connection closed before a complete response.
    #[error("the connection closed early: {0}")]
    Terminated(String),
    /// The guest's request body failed; the error is the guest side's own.
    #[error("the request body failed: {0}")]
    RequestBody(BoxError),
    /// Anything else on the wire.
    #[error("HTTP error: {0}")]
    Protocol(String),
}

impl CallError {
    /// Whether the breaker counts it: connection errors and timeouts, not
    /// local saturation or the guest's own body.
    fn is_upstream_failure(&self) -> bool {
        !matches!(
            self,
            CallError::BreakerOpen | CallError::ConnectionLimit(_) | CallError::RequestBody(_)
        )
    }

    /// The `outcome` label of `trellis_upstream_requests_total`.
    fn outcome(&self) -> &'static str {
        match self {
            CallError::BreakerOpen => "rejected",
            CallError::ConnectionLimit(_) => "busy",
            CallError::ConnectTimeout | CallError::Timeout(_) | CallError::ReadTimeout(_) => {
                "timeout"
            }
            CallError::ConnectionRefused | CallError::Dns(_) | CallError::Tls { .. } => {
                "connect_error"
            }
            CallError::Terminated(_) | CallError::Protocol(_) | CallError::RequestBody(_) => {
                "error"
            }
        }
    }
}

/// First backoff before a retry; doubled each time, with jitter.
const BACKOFF_BASE: Duration = Duration::from_millis(50);
/// Longest backoff.
const BACKOFF_MAX: Duration = Duration::from_secs(2);

impl Upstream {
    fn new(spec: Arc<UpstreamSpec>, series: &UpstreamMetrics) -> anyhow::Result<Upstream> {
        let metrics = series.for_upstream(&spec.name);
        let client = client::build(&spec, metrics.open.clone())?;
        metrics.breaker.set(State::Closed.gauge());
        Ok(Upstream {
            client,
            slots: Arc::new(Semaphore::new(spec.max_connections as usize)),
            breaker: Mutex::new(Breaker::new(spec.breaker)),
            metrics,
            spec,
        })
    }

    /// Whether `uri` is this upstream's: same scheme, host and port, and a
    /// path under the base path without dot segments.
    pub fn matches(&self, uri: &http::Uri) -> bool {
        let spec = &*self.spec;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return false,
        };
        let Some(authority) = uri.authority() else {
            return false;
        };
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if https != spec.https
            || port != spec.port
            || authority.as_str().contains('@')
            || !host.eq_ignore_ascii_case(&spec.host)
        {
            return false;
        }
        let path = uri.path();
        // `%2e` decodes to `.`: an upstream may resolve it as a dot segment.
        let dotted = path
            .split('/')
            .any(|s| s == "." || s == ".." || s.to_ascii_lowercase().contains("%2e"));
        if dotted {
            return false;
        }
        let base = spec.base_path.as_str();
        base.is_empty()
            || path == base
            || path
                .strip_prefix(base)
                .is_some_and(|rest| rest.starts_with('/'))
    }

    /// The breaker's state now.
    pub fn breaker_state(&self) -> State {
        self.lock_breaker().state(Instant::now())
    }

    fn lock_breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `req` with the upstream's headers added, retrying idempotent
    /// requests without a body on connection errors, timeouts and 5xx.
    /// The response body streams; it holds its connection slot until it
    /// ends or is dropped.
    pub async fn call(
        &self,
        req: Request<OutgoingBody>,
        options: CallOptions,
    ) -> Result<Response<ResponseBody>, CallError> {
        let (mut parts, body) = req.into_parts();
        for (name, value) in &self.spec.headers {
            parts.headers.insert(name.clone(), value.clone());
        }
        let replayable = is_idempotent(&parts.method) && body.is_end_stream();
        let attempts = if replayable { self.spec.retries + 1 } else { 1 };
        let mut body = Some(body);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let this_body = match body.take() {
                Some(body) if !replayable => body,
                _ => empty_body(),
            };
            let req = Request::from_parts(parts.clone(), this_body);
            let result = self.attempt(req, options).await;
            let retry_worthy = match &result {
                Ok(res) => res.status().is_server_error(),
                Err(err) => err.is_upstream_failure(),
            };
            if !retry_worthy || attempt >= attempts {
                return result;
            }
            let backoff = backoff(attempt);
            let past_deadline = options
                .deadline
                .is_some_and(|d| Instant::now() + backoff + Duration::from_millis(1) >= d);
            if past_deadline {
                return result;
            }
            tracing::debug!(upstream = %self.spec.name, attempt, backoff_ms = backoff.as_millis() as u64, "retrying an upstream call");
            drop(result);
            tokio::time::sleep(backoff).await;
        }
    }

    /// One attempt through the breaker, the connection cap and the pool.
    async fn attempt(
        &self,
        req: Request<OutgoingBody>,
        options: CallOptions,
    ) -> Result<Response<ResponseBody>, CallError> {
        let admission = self.lock_breaker().admit(Instant::now());
        if admission == Admission::Rejected {
            self.metrics.outcome("rejected");
            return Err(CallError::BreakerOpen);
        }
        if admission == Admission::Probe {
            tracing::info!(upstream = %self.spec.name, state = State::HalfOpen.as_str(), "upstream circuit breaker half-open: one probe goes through");
            self.metrics.breaker.set(State::HalfOpen.gauge());
        }
        // Reports the probe abandoned if this future is dropped midway.
        let mut ticket = Ticket {
            upstream: self,
            admission,
            done: false,
        };
        let started = Instant::now();
        let mut timeout = self.spec.timeout;
        if let Some(t) = options.first_byte_timeout {
            timeout = timeout.min(t);
        }
        if let Some(deadline) = options.deadline {
            timeout = timeout.min(deadline.saturating_duration_since(started));
        }
        let until = tokio::time::Instant::from_std(started + timeout);
        let result: Result<Response<ResponseBody>, CallError> = async {
            let permit = tokio::time::timeout_at(until, self.slots.clone().acquire_owned())
                .await
                .map_err(|_| CallError::ConnectionLimit(self.spec.max_connections))?
                .map_err(|_| CallError::ConnectionLimit(self.spec.max_connections))?;
            let slot = Slot::new(permit, self.metrics.in_use.clone());
            let res = tokio::time::timeout_at(until, self.client.request(req))
                .await
                .map_err(|_| CallError::Timeout(timeout))?
                .map_err(classify)?;
            let mut between = self.spec.timeout;
            if let Some(t) = options.between_bytes_timeout {
                between = between.min(t);
            }
            Ok(res.map(|incoming| ResponseBody {
                incoming,
                stall: between,
                timer: Box::pin(tokio::time::sleep(between)),
                _slot: slot,
            }))
        }
        .await;
        self.metrics
            .duration
            .observe(started.elapsed().as_secs_f64());
        let failed = match &result {
            Ok(res) => {
                let status = res.status();
                self.metrics.outcome(if status.is_server_error() {
                    "server_error"
                } else {
                    "ok"
                });
                status.is_server_error()
            }
            Err(err) => {
                self.metrics.outcome(err.outcome());
                err.is_upstream_failure()
            }
        };
        ticket.done = true;
        self.record(admission, failed);
        result
    }

    fn record(&self, admission: Admission, failed: bool) {
        let changed = self
            .lock_breaker()
            .record(Instant::now(), admission, failed);
        if let Some(state) = changed {
            self.metrics.breaker.set(state.gauge());
            let name = &self.spec.name;
            match state {
                State::Open => {
                    tracing::warn!(upstream = %name, state = state.as_str(), open_for_ms = self.spec.breaker.open_for.0.as_millis() as u64, "upstream circuit breaker opened: calls fail at once")
                }
                _ => {
                    tracing::info!(upstream = %name, state = state.as_str(), "upstream circuit breaker changed state")
                }
            }
        }
    }
}

/// Reports a half-open probe abandoned when its attempt is dropped before
/// it finished.
struct Ticket<'a> {
    upstream: &'a Upstream,
    admission: Admission,
    done: bool,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.done && self.admission == Admission::Probe {
            self.upstream.lock_breaker().abandon_probe();
        }
    }
}

/// GET, HEAD, PUT, DELETE and OPTIONS: sending them twice does no harm.
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
    )
}

fn empty_body() -> OutgoingBody {
    http_body_util::Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// The wait before retry `attempt` (1-based): exponential, with jitter
/// between half and all of it.
fn backoff(attempt: u32) -> Duration {
    let full = BACKOFF_BASE
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(BACKOFF_MAX);
    let half = full / 2;
    half + half.mul_f64(rand::random::<f64>())
}

/// What went wrong in the client, by walking the error's causes.
fn classify(err: hyper_util::client::legacy::Error) -> CallError {
    let connect = err.is_connect();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = source {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            let certificate = matches!(tls, rustls::Error::InvalidCertificate(_));
            return CallError::Tls {
                certificate,
                message: tls.to_string(),
            };
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::TimedOut if connect => return CallError::ConnectTimeout,
                std::io::ErrorKind::ConnectionRefused => return CallError::ConnectionRefused,
                _ => {}
            }
        }
        if connect && e.to_string().starts_with("dns error") {
            return CallError::Dns(format!("{err:#}"));
        }
        if let Some(hyper) = e.downcast_ref::<hyper::Error>() {
            if hyper.is_incomplete_message() || hyper.is_canceled() || hyper.is_closed() {
                return CallError::Terminated(hyper.to_string());
            }
            if hyper.is_user() {
                // The body we were sending failed: the guest's error.
                let inner = std::error::Error::source(hyper)
                    .map_or_else(|| hyper.to_string(), ToString::to_string);
                return CallError::RequestBody(inner.into());
            }
        }
        // An `io::Error` wrapping another error reports the wrapped one's
        // source, skipping it (hyper-rustls wraps rustls's error twice).
        source = match e.downcast_ref::<std::io::Error>() {
            Some(io) => match io.get_ref() {
                Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
                None => None,
            },
            None => e.source(),
        };
    }
    if connect {
        return CallError::Terminated(chain(&err));
    }
    CallError::Protocol(chain(&err))
}

fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

/// An upstream's response body, streamed as it arrives: fails with
/// [`CallError::ReadTimeout`] when it stalls, and frees its connection
/// slot when it ends or is dropped.
pub struct ResponseBody {
    incoming: hyper::body::Incoming,
    stall: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    _slot: Slot,
}

/// A connection slot, counted in `in_use` while held.
struct Slot {
    _permit: OwnedSemaphorePermit,
    in_use: prometheus::IntGauge,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit, in_use: prometheus::IntGauge) -> Slot {
        in_use.inc();
        Slot {
            _permit: permit,
            in_use,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.in_use.dec();
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = CallError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, CallError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let next = tokio::time::Instant::now() + this.stall;
                this.timer.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(
                if err.is_incomplete_message() || err.is_closed() {
                    CallError::Terminated(err.to_string())
                } else {
                    CallError::Protocol(err.to_string())
                },
            ))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                ready!(this.timer.as_mut().poll(cx));
                Poll::Ready(Some(Err(CallError::ReadTimeout(this.stall))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

/// The upstream metric families.
struct UpstreamMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    breaker: IntGaugeVec,
    pool: IntGaugeVec,
}

/// One upstream's series.
struct Series {
    name: String,
    requests: IntCounterVec,
    duration: prometheus::Histogram,
    breaker: prometheus::IntGauge,
    /// Connections open (idle in the pool or carrying a request).
    open: prometheus::IntGauge,
    /// Connection slots taken: requests in flight.
    in_use: prometheus::IntGauge,
}

impl Series {
    fn outcome(&self, outcome: &str) {
        self.requests
            .with_label_values(&[self.name.as_str(), outcome])
            .inc();
    }
}

impl UpstreamMetrics {
    fn register(metrics: &Metrics) -> UpstreamMetrics {
        let requests = metrics.register(
            &IntCounterVec::new(
                Opts::new(
                    "trellis_upstream_requests_total",
                    "Attempts to call an upstream, by outcome: ok (a response below 500), server_error (5xx), timeout, connect_error, error, busy (no free connection), rejected (breaker open, not sent).",
                ),
                &["upstream", "outcome"],
            )
            .expect("valid metric"),
        );
        let duration = metrics.register(
            &HistogramVec::new(
                HistogramOpts::new(
                    "trellis_upstream_duration_seconds",
                    "Time from sending one attempt to the upstream's response head (or failure).",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0,
                ]),
                &["upstream"],
            )
            .expect("valid metric"),
        );
        let breaker = metrics.register(
            &IntGaugeVec::new(
                Opts::new(
                    "trellis_upstream_breaker_state",
                    "The upstream's circuit breaker: 0 closed, 1 open, 2 half-open.",
                ),
                &["upstream"],
            )
            .expect("valid metric"),
        );
        let pool = metrics.register(
            &IntGaugeVec::new(
                Opts::new(
                    "trellis_upstream_pool_connections",
                    "Connections to an upstream: open (pooled idle or busy) and in_use (carrying a request, out of max_connections).",
                ),
                &["upstream", "state"],
            )
            .expect("valid metric"),
        );
        UpstreamMetrics {
            requests,
            duration,
            breaker,
            pool,
        }
    }

    fn for_upstream(&self, name: &str) -> Series {
        Series {
            name: name.to_owned(),
            requests: self.requests.clone(),
            duration: self.duration.with_label_values(&[name]),
            breaker: self.breaker.with_label_values(&[name]),
            open: self.pool.with_label_values(&[name, "open"]),
            in_use: self.pool.with_label_values(&[name, "in_use"]),
        }
    }
}
