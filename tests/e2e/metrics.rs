//! `GET /metrics`: Prometheus text that a real parser reads, with figures
//! that move exactly with the traffic sent.

use prometheus_parse::{Sample, Scrape, Value};

use crate::harness::{Manifest, Trellis, component, header};

/// Scrapes `/metrics` and parses it as Prometheus does.
async fn scrape(trellis: &Trellis) -> Vec<Sample> {
    let response = trellis.get("/metrics").await;
    assert_eq!(response.status(), 200);
    let content_type = header(response.headers(), "content-type");
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("valid Prometheus text")
        .samples
}

/// The sample of `metric` whose labels include all of `labels`.
fn find<'a>(samples: &'a [Sample], metric: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
}

/// A counter's or gauge's value; 0 when the series does not exist yet.
fn value(samples: &[Sample], metric: &str, labels: &[(&str, &str)]) -> f64 {
    match find(samples, metric, labels).map(|s| &s.value) {
        None => 0.0,
        Some(Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v)) => *v,
        Some(other) => panic!("{metric} is not a counter or gauge: {other:?}"),
    }
}

/// A histogram's observation count and its buckets (upper bound, count).
fn histogram(samples: &[Sample], metric: &str, labels: &[(&str, &str)]) -> (f64, Vec<(f64, f64)>) {
    match find(samples, metric, labels).map(|s| &s.value) {
        Some(Value::Histogram(buckets)) => {
            let all: Vec<(f64, f64)> = buckets.iter().map(|b| (b.less_than, b.count)).collect();
            let count = all
                .iter()
                .find(|(le, _)| le.is_infinite())
                .map_or(0.0, |b| b.1);
            (count, all)
        }
        None => (0.0, Vec::new()),
        Some(other) => panic!("{metric} is not a histogram: {other:?}"),
    }
}

#[tokio::test]
async fn metrics_move_with_traffic() {
    let trellis = Trellis::start(
        Manifest::new()
            .route(
                "hello",
                "/hello",
                component::HELLO,
                &[r#"methods = ["GET"]"#],
            )
            .route("trap", "/trap", component::TRAP, &[])
            .route("loop", "/loop", component::LOOP, &[r#"timeout = "1s""#]),
    )
    .await;
    let before = scrape(&trellis).await;
    let hello_200 = [("route", "hello"), ("method", "GET"), ("status", "200")];
    assert_eq!(value(&before, "http_requests_total", &hello_200), 0.0);

    for _ in 0..7 {
        assert_eq!(trellis.get("/hello").await.status(), 200);
    }
    assert_eq!(trellis.get("/trap").await.status(), 500);
    assert_eq!(trellis.get("/loop").await.status(), 504);
    assert_eq!(trellis.get("/nowhere").await.status(), 404);
    let post = trellis
        .client()
        .post(trellis.url("/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);

    let after = scrape(&trellis).await;
    assert_eq!(value(&after, "http_requests_total", &hello_200), 7.0);
    let hello_405 = [("route", ""), ("method", "POST"), ("status", "405")];
    assert_eq!(
        value(&after, "http_requests_total", &hello_405),
        1.0,
        "405s match no route"
    );
    let unrouted = [("route", ""), ("method", "GET"), ("status", "404")];
    assert_eq!(value(&after, "http_requests_total", &unrouted), 1.0);
    let trap_500 = [("route", "trap"), ("method", "GET"), ("status", "500")];
    assert_eq!(value(&after, "http_requests_total", &trap_500), 1.0);
    let loop_504 = [("route", "loop"), ("method", "GET"), ("status", "504")];
    assert_eq!(value(&after, "http_requests_total", &loop_504), 1.0);

    // Failures by kind.
    let failures = "trellis_guest_failures_total";
    assert_eq!(
        value(&after, failures, &[("route", "trap"), ("kind", "trap")]),
        1.0
    );
    assert_eq!(
        value(&after, failures, &[("route", "loop"), ("kind", "timeout")]),
        1.0
    );
    assert_eq!(
        value(&after, failures, &[("route", "hello"), ("kind", "trap")]),
        0.0
    );

    // Latency histogram: one observation per request, cumulative buckets.
    let (count, buckets) = histogram(
        &after,
        "http_request_duration_seconds",
        &[("route", "hello")],
    );
    assert_eq!(count, 7.0);
    assert!(
        buckets.windows(2).all(|w| w[0].1 <= w[1].1),
        "buckets are cumulative: {buckets:?}"
    );
    let (loop_count, loop_buckets) = histogram(
        &after,
        "http_request_duration_seconds",
        &[("route", "loop")],
    );
    assert_eq!(loop_count, 1.0);
    let under_half_second = loop_buckets.iter().find(|(le, _)| *le == 0.5).map(|b| b.1);
    assert_eq!(
        under_half_second,
        Some(0.0),
        "the 1 s timeout took longer than 0.5 s"
    );

    // Host-side views of each guest run.
    let (instantiations, _) =
        histogram(&after, "trellis_instantiate_seconds", &[("route", "hello")]);
    assert_eq!(instantiations, 7.0);
    let (runs, _) = histogram(
        &after,
        "trellis_guest_execution_seconds",
        &[("route", "hello")],
    );
    assert_eq!(runs, 7.0);
    let (peaks, memory) = histogram(
        &after,
        "trellis_guest_memory_peak_bytes",
        &[("route", "hello")],
    );
    assert_eq!(peaks, 7.0);
    let within_64k = memory
        .iter()
        .find(|(le, _)| *le == 65536.0)
        .map_or(0.0, |b| b.1);
    assert_eq!(
        within_64k, 0.0,
        "a Rust guest's memory is more than one page: {memory:?}"
    );
    assert_eq!(
        value(&after, "trellis_requests_in_flight", &[("route", "hello")]),
        0.0,
        "nothing is in flight once every answer is in"
    );
}

#[tokio::test]
async fn pool_and_cache_figures_move_with_capability_calls() {
    let dir = crate::harness::TempDir::new();
    let db = dir.path().join("m.db");
    let trellis = Trellis::start(
        Manifest::new()
            .database(&format!("url = \"sqlite://{}\"", db.display()))
            .database("max_connections = 3")
            .route(
                "users",
                "/users/{*rest}",
                component::USERS,
                &["grants = [\"sql\", \"cache\", \"config\", \"log\"]"],
            )
            .route(
                "probe",
                "/cache/{op}",
                component::CACHE_PROBE,
                &["grants = [\"cache\", \"log\"]"],
            ),
    )
    .await;
    // The users table does not exist here: each GET is one failed query,
    // which still waits for a connection once.
    let before = scrape(&trellis).await;
    for _ in 0..4 {
        trellis.get("/users/1").await;
    }
    let after = scrape(&trellis).await;
    let (waits_before, _) = histogram(&before, "trellis_db_acquire_seconds", &[]);
    let (waits_after, _) = histogram(&after, "trellis_db_acquire_seconds", &[]);
    assert_eq!(waits_after - waits_before, 4.0, "one acquisition per query");
    assert_eq!(
        value(&after, "trellis_db_pool_connections", &[("state", "max")]),
        3.0
    );
    // sqlx takes a connection back on a task of its own (after a ping),
    // so the gauge reaches 0 a moment after the response, not with it.
    let deadline = tokio::time::Instant::now() + crate::harness::WAIT;
    let settled = loop {
        let now = scrape(&trellis).await;
        if value(&now, "trellis_db_pool_connections", &[("state", "in_use")]) == 0.0 {
            break now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a connection stayed in use"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(
        value(
            &settled,
            "trellis_db_pool_connections",
            &[("state", "idle")]
        ) >= 1.0
    );

    // Cache: one miss, then in-process hits.
    let l1 = |s: &[Sample], outcome| {
        value(
            s,
            "trellis_cache_requests_total",
            &[("tier", "l1"), ("outcome", outcome)],
        )
    };
    let before = scrape(&trellis).await;
    trellis.get("/cache/get?key=m").await;
    let set = trellis
        .client()
        .post(trellis.url("/cache/set?key=m"))
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    for _ in 0..3 {
        trellis.get("/cache/get?key=m").await;
    }
    let after = scrape(&trellis).await;
    assert_eq!(l1(&after, "miss") - l1(&before, "miss"), 1.0);
    assert_eq!(l1(&after, "hit") - l1(&before, "hit"), 3.0);
}
