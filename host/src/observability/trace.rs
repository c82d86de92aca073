//! Traces: W3C `traceparent` in and out, a span per request and a child
//! span around each capability call, exported over OTLP/HTTP (JSON) when
//! `TRELLIS_OTLP_ENDPOINT` is set (`http://` or `https://`, over rustls with
//! the Mozilla roots plus `TRELLIS_OTLP_CA`), and not recorded at all when
//! it is not.
//!
//! The exporter is a background task fed through a bounded channel: a
//! slow or absent collector drops spans (counted in the log), never
//! requests. Spans leave in batches of up to [`BATCH`] or every second.

use bytes::Bytes;
use http::{HeaderValue, Request, header};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// The `traceparent` header.
pub static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// Most spans sent in one export.
const BATCH: usize = 512;

/// Spans waiting for the exporter before new ones are dropped.
const QUEUE: usize = 8192;

static EXPORTER: OnceLock<mpsc::Sender<SpanRecord>> = OnceLock::new();

/// One request's place in a trace.
#[derive(Debug)]
pub struct TraceContext {
    /// 32 hex digits, from the caller's `traceparent` or new.
    pub trace_id: Arc<str>,
    /// This request's span, 16 hex digits.
    pub span_id: Arc<str>,
    /// The caller's span, when it sent a `traceparent`.
    pub parent_id: Option<Arc<str>>,
    /// The caller's trace flags (`01`: sampled).
    flags: u8,
    /// A span this one follows from without being its child (trace id,
    /// span id): for a job, the request that enqueued it.
    link: Option<(Arc<str>, Arc<str>)>,
    /// Time the request's guest spent in upstream calls (to their
    /// response heads), for the request log line.
    upstream_nanos: AtomicU64,
}

impl Clone for TraceContext {
    fn clone(&self) -> Self {
        TraceContext {
            trace_id: self.trace_id.clone(),
            span_id: self.span_id.clone(),
            parent_id: self.parent_id.clone(),
            flags: self.flags,
            link: self.link.clone(),
            upstream_nanos: AtomicU64::new(self.upstream_nanos.load(Ordering::Relaxed)),
        }
    }
}

impl TraceContext {
    /// The context for a request carrying `traceparent` (or none).
    pub fn from_request(traceparent: Option<&HeaderValue>) -> TraceContext {
        let parsed = traceparent.and_then(|v| parse(v.to_str().ok()?));
        let span_id = crate::ids::random_hex_arc(1);
        match parsed {
            Some((trace_id, parent_id, flags)) => TraceContext {
                trace_id: trace_id.into(),
                span_id,
                parent_id: Some(parent_id.into()),
                flags,
                link: None,
                upstream_nanos: AtomicU64::new(0),
            },
            None => TraceContext {
                trace_id: crate::ids::random_hex_arc(2),
                span_id,
                parent_id: None,
                flags: 1,
                link: None,
                upstream_nanos: AtomicU64::new(0),
            },
        }
    }

    /// A new trace for work that `traceparent` (the enqueuing request's
    /// span, if it had one) caused but does not wait for: a job. Its span
    /// links to that one instead of being its child, as OpenTelemetry's
    /// messaging conventions have consumers do.
    pub fn linked_to(traceparent: Option<&str>) -> TraceContext {
        let mut cx = TraceContext::from_request(None);
        cx.link = traceparent
            .and_then(parse)
            .map(|(trace_id, span_id, _)| (trace_id.into(), span_id.into()));
        cx
    }

    /// The `traceparent` naming this request's span, for the response and
    /// anything this request calls.
    pub fn traceparent(&self) -> HeaderValue {
        // Built on the stack: this runs for every response.
        let mut value = [0u8; 64];
        let mut len = 0;
        let flags = crate::ids::hex_byte(self.flags);
        let parts: [&[u8]; 6] = [
            b"00-",
            self.trace_id.as_bytes(),
            b"-",
            self.span_id.as_bytes(),
            b"-",
            &flags,
        ];
        for part in parts {
            let end = (len + part.len()).min(value.len());
            value[len..end].copy_from_slice(&part[..end - len]);
            len = end;
        }
        HeaderValue::from_bytes(&value[..len]).expect("hex digits are a valid header")
    }

    /// Adds `took` to the request's time in upstream calls.
    pub fn add_upstream_time(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.upstream_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The request's time in upstream calls so far; `None` if it made none.
    pub fn upstream_time(&self) -> Option<Duration> {
        match self.upstream_nanos.load(Ordering::Relaxed) {
            0 => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }

    /// Starts a child span of this request's span; it is recorded when the
    /// guard drops. Free when no exporter runs.
    pub fn child(&self, name: &'static str) -> SpanGuard {
        SpanGuard {
            span: exporting().then(|| Open {
                trace_id: self.trace_id.clone(),
                parent_id: Some(self.span_id.clone()),
                span_id: crate::ids::random_hex_arc(1),
                name: name.into(),
                kind: Kind::Internal,
                started: SystemTime::now(),
                clock: Instant::now(),
                attributes: Vec::new(),
                error: false,
            }),
        }
    }

    /// Records the request's own span, which started `duration` ago.
    pub fn record_request(
        &self,
        name: String,
        duration: Duration,
        attributes: Vec<(&'static str, String)>,
        error: bool,
    ) {
        self.record(Kind::Server, name, duration, attributes, error);
    }

    /// Records a job attempt's own span (a consumer span), which started
    /// `duration` ago.
    pub fn record_job(
        &self,
        name: String,
        duration: Duration,
        attributes: Vec<(&'static str, String)>,
        error: bool,
    ) {
        self.record(Kind::Consumer, name, duration, attributes, error);
    }

    fn record(
        &self,
        kind: Kind,
        name: String,
        duration: Duration,
        attributes: Vec<(&'static str, String)>,
        error: bool,
    ) {
        if !exporting() {
            return;
        }
        let ended = SystemTime::now();
        submit(SpanRecord {
            trace_id: self.trace_id.clone(),
            span_id: self.span_id.clone(),
            parent_id: self.parent_id.clone(),
            link: self.link.clone(),
            name,
            kind,
            start: ended.checked_sub(duration).unwrap_or(ended),
            end: ended,
            attributes,
            error,
        });
    }
}

/// A child span in progress.
pub struct SpanGuard {
    span: Option<Open>,
}

struct Open {
    trace_id: Arc<str>,
    parent_id: Option<Arc<str>>,
    span_id: Arc<str>,
    name: String,
    kind: Kind,
    started: SystemTime,
    clock: Instant,
    attributes: Vec<(&'static str, String)>,
    error: bool,
}

impl SpanGuard {
    /// Adds an attribute (e.g. `db.statement`), if the span is recorded.
    pub fn attribute(&mut self, key: &'static str, value: impl FnOnce() -> String) {
        if let Some(span) = &mut self.span {
            span.attributes.push((key, value()));
        }
    }

    /// Passes `result` through, marking the span failed on an error.
    pub fn finish<T, E>(mut self, result: Result<T, E>) -> Result<T, E> {
        if result.is_err() {
            self.failed();
        }
        result
    }

    /// Marks the span failed.
    pub fn failed(&mut self) {
        if let Some(span) = &mut self.span {
            span.error = true;
        }
    }
}

impl Drop for SpanGuard {
    fn drop(&mut self) {
        if let Some(s) = self.span.take() {
            submit(SpanRecord {
                trace_id: s.trace_id,
                span_id: s.span_id,
                parent_id: s.parent_id,
                link: None,
                name: s.name,
                kind: s.kind,
                start: s.started,
                end: s.started + s.clock.elapsed(),
                attributes: s.attributes,
                error: s.error,
            });
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Internal,
    Server,
    Consumer,
}

/// A finished span, waiting for export.
#[derive(Debug)]
struct SpanRecord {
    trace_id: Arc<str>,
    span_id: Arc<str>,
    parent_id: Option<Arc<str>>,
    link: Option<(Arc<str>, Arc<str>)>,
    name: String,
    kind: Kind,
    start: SystemTime,
    end: SystemTime,
    attributes: Vec<(&'static str, String)>,
    error: bool,
}

/// Whether spans are exported at all; callers skip building them if not.
pub fn exporting() -> bool {
    EXPORTER.get().is_some()
}

fn submit(span: SpanRecord) {
    if let Some(tx) = EXPORTER.get()
        && tx.try_send(span).is_err()
    {
        tracing::debug!("trace export queue full; span dropped");
    }
}

/// The exporter's HTTP client: pooled, TLS through rustls.
type ExportClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Starts the exporter when `TRELLIS_OTLP_ENDPOINT` is set (call within
/// the runtime, once); `ca` (`TRELLIS_OTLP_CA`) adds trusted roots for an
/// `https://` endpoint.
pub fn start_exporter(endpoint: Option<&str>, ca: Option<&Path>) -> anyhow::Result<()> {
    let Some(endpoint) = endpoint else {
        return Ok(());
    };
    let base = endpoint.trim_end_matches('/');
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        anyhow::bail!("TRELLIS_OTLP_ENDPOINT: must start with http:// or https://, got {base:?}");
    }
    let uri: http::Uri = format!("{base}/v1/traces")
        .parse()
        .map_err(|e| anyhow::anyhow!("TRELLIS_OTLP_ENDPOINT {base:?}: {e}"))?;
    let client = export_client(ca)?;
    let (tx, rx) = mpsc::channel(QUEUE);
    EXPORTER
        .set(tx)
        .map_err(|_| anyhow::anyhow!("the trace exporter is already running"))?;
    tracing::info!(endpoint = %base, "exporting traces over OTLP/HTTP");
    tokio::spawn(export(rx, client, uri));
    Ok(())
}

/// A client trusting the Mozilla roots and the PEM certificates in `ca`.
fn export_client(ca: Option<&Path>) -> anyhow::Result<ExportClient> {
    use anyhow::Context as _;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca {
        let what = || format!("TRELLIS_OTLP_CA {}", path.display());
        let certs: Vec<_> = CertificateDer::pem_file_iter(path)
            .with_context(what)?
            .collect::<Result<_, _>>()
            .with_context(what)?;
        anyhow::ensure!(!certs.is_empty(), "{}: no PEM certificate", what());
        for cert in certs {
            roots.add(cert).with_context(what)?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

async fn export(mut rx: mpsc::Receiver<SpanRecord>, client: ExportClient, uri: http::Uri) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let Some(first) = rx.recv().await else { return };
        batch.push(first);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(span)) => batch.push(span),
                Ok(None) | Err(_) => break,
            }
        }
        let body = encode(&batch);
        let count = batch.len();
        batch.clear();
        if let Err(err) = post(&client, &uri, body).await {
            tracing::warn!(cause = %err, spans = count, "trace export failed; spans dropped");
        }
    }
}

async fn post(client: &ExportClient, uri: &http::Uri, body: Vec<u8>) -> anyhow::Result<()> {
    let request = Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request)).await??;
    anyhow::ensure!(
        response.status().is_success(),
        "collector answered {}",
        response.status()
    );
    Ok(())
}

/// The OTLP/JSON export request for `spans`.
fn encode(spans: &[SpanRecord]) -> Vec<u8> {
    let nanos = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
            .to_string()
    };
    let spans: Vec<Value> = spans
        .iter()
        .map(|s| {
            let attributes: Vec<Value> = s
                .attributes
                .iter()
                .map(|(k, v)| json!({"key": k, "value": {"stringValue": v}}))
                .collect();
            let mut span = json!({
                "traceId": &*s.trace_id,
                "spanId": &*s.span_id,
                "name": s.name,
                "kind": match s.kind { Kind::Internal => 1, Kind::Server => 2, Kind::Consumer => 5 },
                "startTimeUnixNano": nanos(s.start),
                "endTimeUnixNano": nanos(s.end),
                "attributes": attributes,
                "status": {"code": if s.error { 2 } else { 1 }},
            });
            if let Some(parent) = &s.parent_id {
                span["parentSpanId"] = json!(&**parent);
            }
            if let Some((trace_id, span_id)) = &s.link {
                span["links"] = json!([{"traceId": &**trace_id, "spanId": &**span_id}]);
            }
            span
        })
        .collect();
    let request = json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "trellis"}}]},
        "scopeSpans": [{"scope": {"name": "trellis"}, "spans": spans}],
    }]});
    serde_json::to_vec(&request).expect("JSON values serialize")
}

/// Parses `00-<trace>-<parent>-<flags>`; rejects all-zero ids and other
/// versions' extra fields only where the spec says to.
fn parse(value: &str) -> Option<(String, String, u8)> {
    let mut parts = value.trim().split('-');
    let version = parts.next()?;
    let trace_id = parts.next()?;
    let parent_id = parts.next()?;
    let flags = parts.next()?;
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let valid = hex(version, 2)
        && version != "ff"
        && (version != "00" || parts.next().is_none())
        && hex(trace_id, 32)
        && trace_id.bytes().any(|b| b != b'0')
        && hex(parent_id, 16)
        && parent_id.bytes().any(|b| b != b'0')
        && hex(flags, 2);
    valid.then(|| {
        (
            trace_id.to_owned(),
            parent_id.to_owned(),
            u8::from_str_radix(flags, 16).unwrap_or(0),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_parsed_and_propagated() {
        let incoming =
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let cx = TraceContext::from_request(Some(&incoming));
        assert_eq!(&*cx.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(cx.parent_id.as_deref(), Some("00f067aa0ba902b7"));
        let out = cx.traceparent();
        let out = out.to_str().unwrap();
        assert!(
            out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{out}"
        );
        assert!(out.ends_with("-01"));
        assert_ne!(
            &*cx.span_id, "00f067aa0ba902b7",
            "the request gets a span of its own"
        );
    }

    #[test]
    fn malformed_traceparents_start_a_new_trace() {
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "garbage",
        ] {
            let cx = TraceContext::from_request(Some(&HeaderValue::from_static(bad)));
            assert!(cx.parent_id.is_none(), "{bad}");
            assert_eq!(cx.trace_id.len(), 32);
        }
    }
}
