//! Traces: a W3C `traceparent` sent in comes back out (same trace, the
//! request's own span), lands in the request log, and reaches an OTLP/HTTP
//! collector running in the test, with capability calls as child spans.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use serde_json::Value;

use crate::harness::{Launch, Manifest, Trellis, Upstream, WAIT, component, header};

/// An OTLP/HTTP (JSON) collector: keeps every span it receives.
struct Collector {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Value>>>,
}

impl Collector {
    async fn start() -> Collector {
        let spans = Arc::new(Mutex::new(Vec::new()));
        async fn receive(State(spans): State<Arc<Mutex<Vec<Value>>>>, body: Bytes) -> &'static str {
            let request: Value = serde_json::from_slice(&body).expect("OTLP JSON");
            let mut spans = spans.lock().unwrap();
            for resource in request["resourceSpans"].as_array().into_iter().flatten() {
                for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                    spans.extend(scope["spans"].as_array().into_iter().flatten().cloned());
                }
            }
            "{}"
        }
        let app = Router::new()
            .route("/v1/traces", post(receive))
            .with_state(spans.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Collector { addr, spans }
    }

    /// A host serving `manifest` that exports its spans here.
    async fn serve(&self, manifest: Manifest) -> Trellis {
        let mut launch = Launch::manifest(manifest);
        launch.env.push((
            "TRELLIS_OTLP_ENDPOINT".to_owned(),
            format!("http://{}", self.addr),
        ));
        Trellis::launch(launch).await
    }

    /// Waits for a span matching `pred`.
    async fn span(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(span) = self.spans.lock().unwrap().iter().find(|s| pred(s)) {
                return span.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no span for {what}; got {:#?}",
                self.spans.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The four fields of a response's `traceparent`: version, trace id,
/// span id, flags.
fn traceparent(response: &reqwest::Response) -> Vec<String> {
    let out = header(response.headers(), "traceparent");
    let fields: Vec<String> = out.split('-').map(str::to_owned).collect();
    assert_eq!(fields.len(), 4, "{out}");
    fields
}

#[tokio::test]
async fn traceparent_propagates_to_the_log_and_the_collector() {
    let collector = Collector::start().await;
    let manifest = Manifest::new().route(
        "probe",
        "/cache/{op}",
        component::CACHE_PROBE,
        &["grants = [\"cache\", \"log\"]"],
    );
    let trellis = collector.serve(manifest).await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let response = trellis
        .client()
        .post(trellis.url("/cache/set?key=t"))
        .header("traceparent", format!("00-{trace_id}-{parent}-01"))
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let fields = traceparent(&response);
    assert_eq!(
        (fields[0].as_str(), fields[1].as_str(), fields[3].as_str()),
        ("00", trace_id, "01"),
        "{fields:?}"
    );
    let span_id = fields[2].clone();
    assert_ne!(span_id, parent, "the request has a span of its own");

    let request_id = header(response.headers(), "x-request-id");
    let log = trellis.request_log(&request_id).await;
    assert_eq!(log["trace_id"], trace_id, "{log}");

    let request_span = collector
        .span("the request", |s| s["spanId"] == span_id.as_str())
        .await;
    assert_eq!(request_span["traceId"], trace_id);
    assert_eq!(request_span["parentSpanId"], parent);
    assert_eq!(request_span["kind"], 2, "a server span");
    assert_eq!(request_span["name"], "POST probe");
    let child = collector
        .span("the cache.set call", |s| s["name"] == "cache.set")
        .await;
    assert_eq!(child["traceId"], trace_id);
    assert_eq!(
        child["parentSpanId"],
        span_id.as_str(),
        "capability calls are children of the request span"
    );
    let start: u128 = child["startTimeUnixNano"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let end: u128 = child["endTimeUnixNano"].as_str().unwrap().parse().unwrap();
    assert!(end >= start, "{child}");

    // Without a traceparent a new trace starts, and is logged too.
    let response = trellis.get("/cache/get?key=t").await;
    let new_trace = traceparent(&response)[1].clone();
    assert_ne!(new_trace, trace_id);
    let log = trellis
        .request_log(&header(response.headers(), "x-request-id"))
        .await;
    assert_eq!(log["trace_id"], new_trace.as_str());
}

/// A job gets a trace of its own, its consumer span linked to the span of
/// the request that enqueued it.
#[tokio::test]
async fn a_job_has_its_own_trace_linked_to_the_enqueuing_request() {
    let collector = Collector::start().await;
    let manifest = Manifest::new()
        .section(&format!(
            "[queues.work]\n\n[[worker]]\nname = \"runner\"\nqueue = \"work\"\ncomponent = {:?}\ngrants = [\"sql\", \"queue\", \"log\"]\noutbound = []",
            component::JOB_WORKER
        ))
        .route(
            "enqueue",
            "/enqueue",
            component::JOB_PROBE,
            &["grants = [\"queue\", \"log\"]", "queues = [\"work\"]"],
        );
    let trellis = collector.serve(manifest).await;
    let response = trellis
        .client()
        .post(trellis.url("/enqueue?queue=work"))
        .body("noop")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let fields = traceparent(&response);
    let (request_trace, request_span) = (fields[1].clone(), fields[2].clone());
    let answer: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    let id = answer["job"].as_str().expect("a job id").to_owned();

    let job = collector
        .span("the job", |s| s["name"] == "process work")
        .await;
    assert_eq!(job["kind"], 5, "a consumer span: {job}");
    assert_ne!(job["traceId"], request_trace.as_str(), "a trace of its own");
    assert!(job.get("parentSpanId").is_none(), "{job}");
    assert_eq!(job["links"][0]["traceId"], request_trace.as_str(), "{job}");
    assert_eq!(job["links"][0]["spanId"], request_span.as_str(), "{job}");
    let attribute = |key: &str| {
        job["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["key"] == key)
            .map(|a| a["value"]["stringValue"].clone())
    };
    assert_eq!(attribute("messaging.message.id"), Some(Value::from(id)));
    assert_eq!(attribute("trellis.job.outcome"), Some(Value::from("done")));
}

/// An `https://` collector whose certificate a test CA signed, trusted
/// through `TRELLIS_OTLP_CA`, receives the spans.
#[tokio::test]
async fn spans_reach_an_https_collector() {
    let collector = Upstream::start_tls().await;
    let mut launch =
        Launch::manifest(Manifest::new().route("hello", "/hello", component::HELLO, &[]));
    launch
        .env
        .push(("TRELLIS_OTLP_ENDPOINT".to_owned(), collector.origin()));
    let ca = collector.ca.as_ref().unwrap().display().to_string();
    launch.env.push(("TRELLIS_OTLP_CA".to_owned(), ca));
    let trellis = Trellis::launch(launch).await;
    let response = trellis.get("/hello").await;
    assert_eq!(response.status(), 200);
    let trace_id = header(response.headers(), "traceparent")
        .split('-')
        .nth(1)
        .unwrap()
        .to_owned();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let found = collector.bodies().iter().any(|b| {
            let request: Value = serde_json::from_slice(b).expect("OTLP JSON");
            request.to_string().contains(&trace_id)
        });
        if found {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no span of trace {trace_id} reached the collector"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let heads = collector.heads();
    assert!(
        heads
            .iter()
            .all(|h| h.method == "POST" && h.uri.path() == "/v1/traces")
    );
}
