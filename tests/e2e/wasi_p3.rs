//! WASI 0.3 handlers (`wasi:http/handler@0.3.0`): reuse, several requests
//! at once in one instance with each capability call attributed to its
//! own request, and the failures that drop an instance.
//!
//! The `p3-counter` plugin answers `count=N request_id=ID most=M`: N is
//! the requests its instance has taken (1 means a fresh instance), M the
//! most it has had in flight at once.

use std::time::Duration;

use futures::future::join_all;
use serde_json::Value;

use crate::harness::{
    Manifest, Trellis, assert_error, component, header, instances, metric, wait_idle,
};

/// A route `/NAME` serving the p3 counter with these extra lines.
fn route(manifest: Manifest, name: &str, extra: &[&str]) -> Manifest {
    let mut lines = vec![r#"grants = ["log"]"#];
    lines.extend_from_slice(extra);
    manifest.route(name, &format!("/{name}"), component::P3_COUNTER, &lines)
}

/// One answer of the counter: (count, most), checked against the request
/// id it was sent under.
async fn ask(trellis: &Trellis, path: &str, request_id: &str) -> (u32, u32) {
    let response = trellis
        .client()
        .get(trellis.url(path))
        .header("x-request-id", request_id)
        .send()
        .await
        .unwrap();
    let status = response.status();
    assert_eq!(header(response.headers(), "x-request-id"), request_id);
    let body = response.text().await.unwrap();
    assert_eq!(status, 200, "{path}: {body}");
    let fields: Vec<&str> = body.trim_end().split(' ').collect();
    let field = |name: &str| -> &str {
        fields
            .iter()
            .find_map(|f| f.strip_prefix(name))
            .unwrap_or_else(|| panic!("{path}: no {name} in {body:?}"))
    };
    assert_eq!(field("request_id="), request_id, "the guest saw another id");
    (
        field("count=").parse().unwrap(),
        field("most=").parse().unwrap(),
    )
}

/// Asks `n` requests in a row; their counts.
async fn counts(trellis: &Trellis, path: &str, n: usize) -> Vec<u32> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(
            ask(trellis, path, &format!("seq-{i}-{}", rand_id()))
                .await
                .0,
        );
    }
    out
}

/// Each of `ids` has its `counted` log record, made through
/// `trellis:api/log` under its own request id, and the guest saw that id.
async fn logged_as_themselves(trellis: &Trellis, ids: &[String]) {
    for id in ids {
        let record = trellis
            .wait_log(&format!("counted record of {id}"), |l| {
                l["message"] == "counted" && l["request_id"] == id.as_str()
            })
            .await;
        let fields: Value = serde_json::from_str(record["fields"].as_str().unwrap()).unwrap();
        assert_eq!(fields["seen_request_id"], id.as_str(), "{record}");
    }
}

fn rand_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[tokio::test]
async fn reuse_keeps_a_wasi_p3_instance_up_to_its_request_count() {
    let trellis = Trellis::start(route(Manifest::new(), "r", &["reuse = { requests = 3 }"])).await;
    assert_eq!(counts(&trellis, "/r", 7).await, [1, 2, 3, 1, 2, 3, 1]);
    // Without reuse, the same component gets a fresh instance each time.
    let trellis = Trellis::start(route(Manifest::new(), "f", &[])).await;
    assert_eq!(counts(&trellis, "/f", 3).await, [1, 1, 1]);
}

#[tokio::test]
async fn concurrent_requests_share_one_instance_and_keep_their_own_context() {
    let trellis = Trellis::start(route(
        Manifest::new(),
        "c",
        &["reuse = { requests = 100, concurrent = 8 }"],
    ))
    .await;
    // Warm one instance, so the burst finds it idle.
    assert_eq!(counts(&trellis, "/c", 1).await, [1]);
    let ids: Vec<String> = (0..6).map(|i| format!("burst-{i}-{}", rand_id())).collect();
    let answers = join_all(ids.iter().map(|id| ask(&trellis, "/c?sleep=400", id))).await;
    let most = answers.iter().map(|(_, most)| *most).max().unwrap();
    assert!(
        most >= 2,
        "one instance never had two requests at once: {answers:?}"
    );
    // Each request's log call was made while others were in flight in the
    // same instance; it still carries its own request's id.
    logged_as_themselves(&trellis, &ids).await;
    // `concurrent` is a cap: at 1 (the default) the same burst never
    // overlaps inside an instance.
    let trellis = Trellis::start(route(
        Manifest::new(),
        "one",
        &["reuse = { requests = 100 }"],
    ))
    .await;
    let answers = join_all((0..4).map(|i| {
        let id = format!("one-{i}-{}", rand_id());
        let trellis = &trellis;
        async move { ask(trellis, "/one?sleep=200", &id).await }
    }))
    .await;
    assert!(answers.iter().all(|(_, most)| *most == 1), "{answers:?}");
}

#[tokio::test]
async fn requests_one_after_another_on_a_kept_instance_log_as_themselves() {
    // A finished request's guest task id is free again, and the next
    // request's task may get it: its calls must not run as the last one.
    let trellis =
        Trellis::start(route(Manifest::new(), "s", &["reuse = { requests = 100 }"])).await;
    let ids: Vec<String> = (0..4)
        .map(|i| format!("seq-log-{i}-{}", rand_id()))
        .collect();
    let mut counts = Vec::new();
    for id in &ids {
        counts.push(ask(&trellis, "/s", id).await.0);
    }
    assert_eq!(counts, [1, 2, 3, 4], "one instance served them all");
    logged_as_themselves(&trellis, &ids).await;
}

#[tokio::test]
async fn a_trap_a_spin_or_the_memory_limit_drops_the_instance() {
    let trellis = Trellis::start(route(
        Manifest::new(),
        "t",
        &[
            "reuse = { requests = 100 }",
            r#"timeout = "500ms""#,
            r#"memory = "8MiB""#,
        ],
    ))
    .await;
    assert_eq!(counts(&trellis, "/t", 2).await, [1, 2]);
    assert_error(trellis.get("/t?trap").await, 500, "HANDLER_FAILED").await;
    assert_eq!(
        counts(&trellis, "/t", 1).await,
        [1],
        "a new instance after the trap"
    );

    let started = std::time::Instant::now();
    assert_error(trellis.get("/t?loop").await, 504, "HANDLER_TIMEOUT").await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the spin was stopped after {:?}",
        started.elapsed()
    );
    assert_eq!(
        counts(&trellis, "/t", 1).await,
        [1],
        "a new instance after the timeout"
    );
    // Memory kept across requests counts against `memory` (8 MiB): the
    // request that grows past it fails, and its instance goes with it.
    assert_eq!(counts(&trellis, "/t", 1).await, [2]);
    assert_error(trellis.get("/t?grow=16").await, 500, "HANDLER_FAILED").await;
    assert_eq!(
        counts(&trellis, "/t", 1).await,
        [1],
        "a new instance after the memory limit"
    );
    let failed = metric(
        &trellis,
        "trellis_guest_failures_total",
        &[("route", "t"), ("kind", "trap")],
    )
    .await;
    assert_eq!(failed, 2.0);
}

const TOKEN: &str = "test-admin-token-0123456789";

/// Deploys the p3 counter as `name` with `query`; the status and the
/// JSON answer.
async fn deploy(trellis: &Trellis, name: &str, query: &str) -> (u16, Value) {
    let bytes = std::fs::read(component::P3_COUNTER).unwrap();
    let put = trellis.put_route(name, &format!("?{query}"), bytes).await;
    let status = put.status().as_u16();
    (
        status,
        serde_json::from_str(&put.text().await.unwrap()).unwrap(),
    )
}

#[tokio::test]
async fn hot_swaps_under_load_drop_nothing_and_retire_the_old_instances() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    let trellis = Arc::new(
        Trellis::launch(crate::harness::Launch {
            admin_token: Some(TOKEN.to_owned()),
            ..crate::harness::Launch::manifest(route(
                Manifest::new(),
                "s",
                &["reuse = { requests = 1000, concurrent = 4 }"],
            ))
        })
        .await,
    );
    // Grants are checked for a WASI 0.3 component as for any: the counter
    // imports `log`.
    let (status, body) = deploy(&trellis, "s", "grants=").await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("log"), "{body}");

    assert_eq!(counts(&trellis, "/s", 3).await, [1, 2, 3]);
    crate::harness::wait_until(
        "the instance is idle",
        Duration::from_millis(5),
        async || (instances(&trellis, "s", "idle").await == 1.0).then_some(()),
    )
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU32::new(0));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (trellis, stop, served) = (trellis.clone(), stop.clone(), served.clone());
            tokio::spawn(async move {
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let response = trellis.get("/s?sleep=2").await;
                    let status = response.status();
                    let body = response.text().await.unwrap_or_default();
                    if status == 200 && body.starts_with("count=") {
                        served.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failures.push(format!("{status}: {body}"));
                    }
                }
                failures
            })
        })
        .collect();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let (status, body) = deploy(&trellis, "s", r#"grants=log"#).await;
        assert_eq!(status, 200, "{body}");
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        let failures = task.await.unwrap();
        assert!(failures.is_empty(), "failed during swaps: {failures:?}");
    }
    assert!(
        served.load(Ordering::Relaxed) > 20,
        "too little load to tell"
    );

    // Every retired version's instances are gone; only the current
    // version's remain, and its next request counts on from there.
    crate::harness::wait_until(
        "old instances dropped",
        Duration::from_millis(10),
        async || {
            let total =
                instances(&trellis, "s", "idle").await + instances(&trellis, "s", "busy").await;
            (total <= 1.0).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn the_response_cache_serves_a_wasi_p3_route() {
    // The host's response cache sits in front of the handler, whatever its
    // WASI version: the second GET is the first one's answer, from the
    // cache, with no instance run.
    let trellis = Trellis::start(route(
        Manifest::new(),
        "cached",
        &[r#"cache = { ttl = "30s" }"#],
    ))
    .await;
    let first = trellis.get("/cached").await;
    assert_eq!(first.status(), 200);
    assert_eq!(header(first.headers(), "x-trellis-cache"), "miss");
    let first_body = first.text().await.unwrap();
    assert!(first_body.starts_with("count=1 "), "{first_body}");
    let second = trellis.get("/cached").await;
    assert_eq!(header(second.headers(), "x-trellis-cache"), "hit");
    assert_eq!(second.text().await.unwrap(), first_body);
}

/// The count a WASI 0.2 counter (`count=N request_id=ID`) answers.
async fn p2_count(trellis: &Trellis, path: &str) -> u32 {
    let response = trellis.get(path).await;
    let status = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(status, 200, "{path}: {body}");
    body.strip_prefix("count=")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{path}: unexpected body {body:?}"))
}

#[tokio::test]
async fn idle_instances_give_their_slot_to_other_routes_at_max_instances() {
    // One slot for three reusing routes whose instances would idle for a
    // minute, far past the requests' queue_timeout: each request can only
    // be served if the idle instance of another route gives its slot up.
    let reuse = r#"reuse = { requests = 100, idle = "60s" }"#;
    let queue = r#"queue_timeout = "5s""#;
    let manifest = route(
        route(
            Manifest::new().server("max_instances = 1"),
            "a",
            &[reuse, queue],
        ),
        "b",
        &[reuse, queue],
    )
    .route(
        "c",
        "/c",
        component::COUNTER,
        &[r#"grants = ["log"]"#, reuse, queue],
    );
    let trellis = Trellis::start(manifest).await;

    assert_eq!(
        counts(&trellis, "/a", 2).await,
        [1, 2],
        "a keeps its instance"
    );
    wait_idle(&trellis, "a", 1.0).await;
    // WASI 0.3 to WASI 0.3: a's idle worker leaves for b.
    assert_eq!(counts(&trellis, "/b", 2).await, [1, 2]);
    wait_idle(&trellis, "b", 1.0).await;
    assert_eq!(
        instances(&trellis, "a", "idle").await,
        0.0,
        "a's instance left"
    );
    // WASI 0.3 to WASI 0.2: b's idle worker leaves for c.
    assert_eq!(p2_count(&trellis, "/c").await, 1);
    wait_idle(&trellis, "c", 1.0).await;
    assert_eq!(p2_count(&trellis, "/c").await, 2, "c keeps its instance");
    wait_idle(&trellis, "c", 1.0).await;
    assert_eq!(
        instances(&trellis, "b", "idle").await,
        0.0,
        "b's instance left"
    );
    // WASI 0.2 to WASI 0.3: c's idle instance is dropped for a.
    assert_eq!(counts(&trellis, "/a", 1).await, [1]);
    wait_idle(&trellis, "a", 1.0).await;
    assert_eq!(
        instances(&trellis, "c", "idle").await,
        0.0,
        "c's instance was dropped"
    );
}

#[tokio::test]
async fn a_wasi_p3_body_is_held_to_max_body() {
    let trellis = Trellis::start(route(Manifest::new(), "e", &[r#"max_body = "1KiB""#])).await;
    let post = |query: &'static str, body: reqwest::Body| {
        trellis
            .client()
            .post(trellis.url(&format!("/e?{query}")))
            .body(body)
            .send()
    };
    let chunked = |chunks: usize, size: usize| {
        let parts = (0..chunks).map(move |i| Ok::<_, std::io::Error>(vec![i as u8; size]));
        reqwest::Body::wrap_stream(futures::stream::iter(parts))
    };

    // Within the limit, chunked or not, the body comes back whole.
    for query in ["echo", "echo=buffer"] {
        let response = post(query, chunked(2, 512)).await.unwrap();
        assert_eq!(response.status(), 200, "{query}");
        let body = response.bytes().await.unwrap();
        assert_eq!(body.len(), 1024, "{query}");
        assert!(body[..512].iter().all(|b| *b == 0) && body[512..].iter().all(|b| *b == 1));
    }
    // A declared length over the limit never reaches the guest.
    let refused = post("echo", vec![b'x'; 4096].into()).await.unwrap();
    assert_error(refused, 413, "PAYLOAD_TOO_LARGE").await;
    // A chunked body is cut at the limit while the guest reads it.
    let refused = post("echo=buffer", chunked(16, 512)).await.unwrap();
    assert_error(refused, 413, "PAYLOAD_TOO_LARGE").await;

    assert_eq!(
        counts(&trellis, "/e", 1).await,
        [1],
        "the route still serves"
    );
}
