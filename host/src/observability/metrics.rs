//! Prometheus metrics: what `GET /metrics` serves.
//!
//! Request counts and latency per route, method and status (so p50/p95/p99
//! can be read off the histogram), plus what only the host can see: time to
//! instantiate, guest execution time, guest memory peak, and how guests
//! failed. One registry per process, owned by [`crate::app::App`].

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Latency buckets in seconds: fine below a millisecond, where hello lives,
/// up to the 30 s default timeout.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Instantiation is measured in microseconds' worth of seconds.
const INSTANTIATE_BUCKETS: &[f64] = &[
    0.000005, 0.00001, 0.00002, 0.00003, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.005,
];

/// Linear-memory peaks, 64 KiB (one wasm page) to 4 GiB.
const MEMORY_BUCKETS: &[f64] = &[
    65536.0,
    262144.0,
    1048576.0,
    2097152.0,
    4194304.0,
    8388608.0,
    16777216.0,
    33554432.0,
    67108864.0,
    134217728.0,
    268435456.0,
    1073741824.0,
    4294967296.0,
];

/// Requests one reused instance served, 1 to the largest `reuse.requests`
/// worth telling apart.
const SERVED_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0, 4096.0, 65536.0,
];

/// How a guest failed, as the `kind` label of `trellis_guest_failures_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// Ran past the route's timeout.
    Timeout,
    /// Trapped (panic, `unreachable`, memory limit).
    Trap,
    /// Answered with an error code or not at all.
    NoResponse,
}

impl FailureKind {
    fn as_str(self) -> &'static str {
        match self {
            FailureKind::Timeout => "timeout",
            FailureKind::Trap => "trap",
            FailureKind::NoResponse => "no_response",
        }
    }
}

/// The process's metrics. Lives as long as the process; cheap to update
/// from any thread.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    instantiate: HistogramVec,
    guest_time: HistogramVec,
    guest_memory: HistogramVec,
    failures: IntCounterVec,
    client_body: IntCounterVec,
    in_flight: IntGaugeVec,
    instances: IntGaugeVec,
    instance_requests: HistogramVec,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests answered, by route, method and status.",
            ),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time from request to response head, by route.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid metric");
        let instantiate = HistogramVec::new(
            HistogramOpts::new(
                "trellis_instantiate_seconds",
                "Time to create a store and instantiate the route's component from the pool.",
            )
            .buckets(INSTANTIATE_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid metric");
        let guest_time = HistogramVec::new(
            HistogramOpts::new(
                "trellis_guest_execution_seconds",
                "Time a guest ran for one request, including streaming its body.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid metric");
        let guest_memory = HistogramVec::new(
            HistogramOpts::new(
                "trellis_guest_memory_peak_bytes",
                "Largest linear memory a guest instance reached during one request.",
            )
            .buckets(MEMORY_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid metric");
        let failures = IntCounterVec::new(
            Opts::new(
                "trellis_guest_failures_total",
                "Guest requests that failed, by route and kind (timeout, trap, no_response).",
            ),
            &["route", "kind"],
        )
        .expect("valid metric");
        let client_body = IntCounterVec::new(
            Opts::new(
                "trellis_client_body_failures_total",
                "Guest requests cut short by the client's body (malformed, shorter than \
                 announced, or over max_body), by route; not guest failures.",
            ),
            &["route"],
        )
        .expect("valid metric");
        let in_flight = IntGaugeVec::new(
            Opts::new(
                "trellis_requests_in_flight",
                "Guest requests running now, by route.",
            ),
            &["route"],
        )
        .expect("valid metric");
        let instances = IntGaugeVec::new(
            Opts::new(
                "trellis_instances",
                "Instances of routes with `reuse`, by route and state: busy serving a \
                 request, or idle and kept for the next one.",
            ),
            &["route", "state"],
        )
        .expect("valid metric");
        let instance_requests = HistogramVec::new(
            HistogramOpts::new(
                "trellis_instance_requests",
                "Requests one instance of a route with `reuse` served before it was dropped.",
            )
            .buckets(SERVED_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid metric");
        for metric in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(instances.clone()),
            Box::new(instance_requests.clone()),
            Box::new(duration.clone()),
            Box::new(instantiate.clone()),
            Box::new(guest_time.clone()),
            Box::new(guest_memory.clone()),
            Box::new(failures.clone()),
            Box::new(client_body.clone()),
            Box::new(in_flight.clone()),
        ] {
            registry.register(metric).expect("metric names are unique");
        }
        Metrics {
            registry,
            requests,
            duration,
            instantiate,
            guest_time,
            guest_memory,
            failures,
            client_body,
            in_flight,
            instances,
            instance_requests,
        }
    }

    /// One answered request; `route` is empty when no route matched.
    pub fn request(
        &self,
        route: &str,
        method: &str,
        status: u16,
        duration: Duration,
        series: Option<&RouteMetrics>,
    ) {
        match series {
            Some(series) => series.count_request(method, status, || {
                self.requests_counter(route, method, status)
            }),
            None => self.requests_counter(route, method, status).inc(),
        }
        let seconds = duration.as_secs_f64();
        match series {
            Some(series) => series.duration.observe(seconds),
            None => self.duration.with_label_values(&[route]).observe(seconds),
        }
    }

    /// The `http_requests_total` series of `route`, `method`, `status`.
    fn requests_counter(&self, route: &str, method: &str, status: u16) -> prometheus::IntCounter {
        let buf = itoa_status(status);
        let status = std::str::from_utf8(&buf).unwrap_or("0");
        self.requests.with_label_values(&[route, method, status])
    }

    /// A guest failed.
    pub fn guest_failed(&self, route: &str, kind: FailureKind) {
        self.failures
            .with_label_values(&[route, kind.as_str()])
            .inc();
    }

    /// A guest stopped because the client's request body failed: the
    /// client's error, kept apart from [`Metrics::guest_failed`] so that
    /// clients cannot raise guest-failure alerts at will.
    pub fn client_body_failed(&self, route: &str) {
        self.client_body.with_label_values(&[route]).inc();
    }

    /// `route`'s own series, resolved once so that serving a request
    /// looks nothing up by label.
    pub fn route(&self, route: &str) -> RouteMetrics {
        RouteMetrics {
            duration: self.duration.with_label_values(&[route]),
            instantiate: self.instantiate.with_label_values(&[route]),
            guest_time: self.guest_time.with_label_values(&[route]),
            guest_memory: self.guest_memory.with_label_values(&[route]),
            in_flight: self.in_flight.with_label_values(&[route]),
            busy: self.instances.with_label_values(&[route, "busy"]),
            idle: self.instances.with_label_values(&[route, "idle"]),
            served: self.instance_requests.with_label_values(&[route]),
            requests: Arc::default(),
        }
    }

    /// Registers a metric owned by another module (the cache, the rate
    /// limiter), so each keeps its figures next to the code that moves them.
    pub fn register<C: prometheus::core::Collector + Clone + 'static>(&self, metric: &C) -> C {
        self.registry
            .register(Box::new(metric.clone()))
            .expect("metric names are unique");
        metric.clone()
    }

    /// Registers a metric whose name comes from outside (a guest): a clash
    /// with an existing one is an error, not a panic.
    pub fn try_register<C: prometheus::core::Collector + Clone + 'static>(
        &self,
        metric: &C,
    ) -> prometheus::Result<()> {
        self.registry.register(Box::new(metric.clone()))
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::with_capacity(8 << 10);
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Decrements the in-flight gauge when dropped.
pub struct InFlight(prometheus::IntGauge);

/// One route's series of the per-route metrics (see [`Metrics::route`]).
#[derive(Clone, Debug)]
pub struct RouteMetrics {
    duration: prometheus::Histogram,
    instantiate: prometheus::Histogram,
    guest_time: prometheus::Histogram,
    guest_memory: prometheus::Histogram,
    in_flight: prometheus::IntGauge,
    busy: prometheus::IntGauge,
    idle: prometheus::IntGauge,
    served: prometheus::Histogram,
    /// This route's `http_requests_total` series by method and status,
    /// as requests meet them: found by a short scan instead of hashing
    /// three labels under the metric's lock on every request.
    requests: Arc<Mutex<Vec<RequestSeries>>>,
}

/// One `http_requests_total` series of a route: method, status, counter.
type RequestSeries = (Box<str>, u16, prometheus::IntCounter);

/// The most (method, status) series a route keeps at hand; others are
/// looked up by label.
const KEPT_REQUEST_SERIES: usize = 32;

impl RouteMetrics {
    /// Counts a request with `method` and `status` in the series
    /// `lookup` finds the first time.
    fn count_request(
        &self,
        method: &str,
        status: u16,
        lookup: impl FnOnce() -> prometheus::IntCounter,
    ) {
        let mut kept = self.requests.lock().expect("request series lock");
        if let Some((.., counter)) = kept.iter().find(|(m, s, _)| *s == status && &**m == method) {
            counter.inc();
            return;
        }
        let counter = lookup();
        counter.inc();
        if kept.len() < KEPT_REQUEST_SERIES {
            kept.push((method.into(), status, counter));
        }
    }

    /// A reused-route instance became busy (`true`) or stopped being so.
    pub fn instance_busy(&self, up: bool) {
        if up { self.busy.inc() } else { self.busy.dec() }
    }

    /// A reused-route instance became idle (`true`) or stopped being so.
    pub fn instance_idle(&self, up: bool) {
        if up { self.idle.inc() } else { self.idle.dec() }
    }

    /// A reused-route instance was dropped after serving `served` requests.
    pub fn instance_dropped(&self, served: u32) {
        self.served.observe(f64::from(served));
    }

    /// The time one instantiation took.
    pub fn instantiated(&self, took: Duration) {
        self.instantiate.observe(took.as_secs_f64());
    }

    /// A guest finished (successfully or not) after `took`, having grown
    /// its memory to `peak_bytes`.
    pub fn guest_finished(&self, took: Duration, peak_bytes: usize) {
        self.guest_time.observe(took.as_secs_f64());
        self.guest_memory.observe(peak_bytes as f64);
    }

    /// Tracks a guest request in flight until the guard drops.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A status code as three ASCII digits, without allocating.
fn itoa_status(status: u16) -> [u8; 3] {
    let s = status.min(999);
    [
        b'0' + (s / 100) as u8,
        b'0' + (s / 10 % 10) as u8,
        b'0' + (s % 10) as u8,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_was_recorded() {
        let m = Metrics::new();
        // One through the route's resolved series, one by label: both
        // land in the same series.
        let hello = m.route("hello");
        m.request(
            "hello",
            "GET",
            200,
            Duration::from_micros(300),
            Some(&hello),
        );
        m.request("hello", "GET", 200, Duration::from_micros(300), None);
        m.request("", "GET", 404, Duration::from_micros(10), None);
        m.guest_failed("trap", FailureKind::Trap);
        let text = m.render();
        assert!(
            text.contains(r#"http_requests_total{method="GET",route="hello",status="200"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"http_requests_total{method="GET",route="",status="404"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"trellis_guest_failures_total{kind="trap",route="trap"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"http_request_duration_seconds_count{route="hello"} 2"#),
            "{text}"
        );
    }
}
