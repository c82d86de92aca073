//! Instance reuse (`reuse = { ... }` on a route): a kept instance serves
//! the route's next requests, up to `requests`, and is replaced after a
//! trap, a timeout, a memory-limit breach, a leaked resource, `idle`
//! unused, or a hot swap; state never crosses routes, and every request
//! still gets its own request id and capability context.
//!
//! The `counter` plugin answers `count=N request_id=ID`, N being the
//! requests its instance has served: 1 means a fresh instance.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{
    Launch, Manifest, Trellis, assert_error, component, header, instances, wait_idle, wait_until,
};

const TOKEN: &str = "test-admin-token-0123456789";

/// A route `name` at `/name` serving the counter with `reuse`.
fn counter(manifest: Manifest, name: &str, reuse: &str, extra: &[&str]) -> Manifest {
    let mut lines = vec![r#"grants = ["log"]"#.to_owned(), format!("reuse = {reuse}")];
    lines.extend(extra.iter().map(|l| (*l).to_owned()));
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    manifest.route(name, &format!("/{name}"), component::COUNTER, &lines)
}

/// `GET path` answered 200; the count it reports, checked against its
/// own request id. First waits for the route's previous request to have
/// settled: its instance is handed back just after the response leaves
/// (when the guest returns), so a client can be quicker than that.
async fn count(trellis: &Trellis, path: &str) -> u32 {
    let route = path[1..].split('?').next().unwrap();
    settle(trellis, route).await;
    let response = trellis.get(path).await;
    let status = response.status();
    let request_id = header(response.headers(), "x-request-id");
    let body = response.text().await.unwrap();
    assert_eq!(status, 200, "{path}: {body}");
    let (count, seen) = body
        .trim_end()
        .strip_prefix("count=")
        .and_then(|rest| rest.split_once(" request_id="))
        .unwrap_or_else(|| panic!("{path}: unexpected body {body:?}"));
    assert_eq!(seen, request_id, "the guest saw another request's id");
    count.parse().unwrap()
}

/// The counts of `n` requests in a row.
async fn counts(trellis: &Trellis, path: &str, n: usize) -> Vec<u32> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(count(trellis, path).await);
    }
    out
}

/// Waits until no instance of `route` is busy.
async fn settle(trellis: &Trellis, route: &str) {
    wait_until(
        &format!("{route} still has busy instances"),
        Duration::from_millis(5),
        async || (instances(trellis, route, "busy").await == 0.0).then_some(()),
    )
    .await;
}

#[tokio::test]
async fn an_instance_serves_up_to_its_requests_each_with_its_own_request() {
    let trellis = Trellis::start(counter(Manifest::new(), "c", "{ requests = 3 }", &[])).await;
    let mut seen = Vec::new();
    for _ in 0..7 {
        let response = trellis.get("/c").await;
        let request_id = header(response.headers(), "x-request-id");
        let body = response.text().await.unwrap();
        seen.push((request_id, body));
        settle(&trellis, "c").await;
        wait_idle(&trellis, "c", if seen.len() % 3 == 0 { 0.0 } else { 1.0 }).await;
    }
    let counts: Vec<&str> = seen
        .iter()
        .map(|(_, body)| body.split(' ').next().unwrap())
        .collect();
    assert_eq!(
        counts,
        [
            "count=1", "count=2", "count=3", "count=1", "count=2", "count=3", "count=1"
        ]
    );
    // Each request's capability calls carry that request's id, not the
    // id of the request the instance first served.
    for (request_id, body) in &seen {
        assert!(
            body.ends_with(&format!("request_id={request_id}\n")),
            "{body}"
        );
        let record = trellis
            .wait_log(&format!("counted record of {request_id}"), |l| {
                l["message"] == "counted" && l["request_id"] == request_id.as_str()
            })
            .await;
        let fields: Value = serde_json::from_str(record["fields"].as_str().unwrap()).unwrap();
        assert_eq!(fields["seen_request_id"], request_id.as_str());
    }
    assert_eq!(instances(&trellis, "c", "busy").await, 0.0);
    let text = trellis.get("/metrics").await.text().await.unwrap();
    // Two instances retired after 3 requests each.
    assert!(
        text.contains(r#"trellis_instance_requests_bucket{route="c",le="2"} 0"#)
            && text.contains(r#"trellis_instance_requests_bucket{route="c",le="4"} 2"#),
        "{text}"
    );
}

#[tokio::test]
async fn a_trap_drops_the_instance_and_the_next_request_gets_a_fresh_one() {
    let trellis = Trellis::start(counter(Manifest::new(), "c", "{ requests = 100 }", &[])).await;
    assert_eq!(counts(&trellis, "/c", 2).await, [1, 2]);
    settle(&trellis, "c").await;
    assert_error(trellis.get("/c?trap").await, 500, "HANDLER_FAILED").await;
    assert_eq!(counts(&trellis, "/c", 2).await, [1, 2]);
}

#[tokio::test]
async fn a_looping_guest_is_cut_by_its_timeout_and_replaced() {
    let trellis = Trellis::start(counter(
        Manifest::new(),
        "c",
        "{ requests = 100 }",
        &[r#"timeout = "500ms""#],
    ))
    .await;
    assert_eq!(counts(&trellis, "/c", 2).await, [1, 2]);
    settle(&trellis, "c").await;
    let started = std::time::Instant::now();
    assert_error(trellis.get("/c?loop").await, 504, "HANDLER_TIMEOUT").await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(counts(&trellis, "/c", 2).await, [1, 2]);
}

#[tokio::test]
async fn a_memory_limit_breach_drops_the_instance() {
    let trellis = Trellis::start(counter(
        Manifest::new(),
        "c",
        "{ requests = 100 }",
        &[r#"memory = "16MiB""#],
    ))
    .await;
    // Memory kept by the guest stays with its instance, so the limit
    // holds across its requests: 4 + 4 MiB fit, 16 more do not.
    assert_eq!(count(&trellis, "/c?grow=4").await, 1);
    assert_eq!(count(&trellis, "/c?grow=4").await, 2);
    settle(&trellis, "c").await;
    assert_error(trellis.get("/c?grow=16").await, 500, "HANDLER_FAILED").await;
    assert_eq!(counts(&trellis, "/c", 2).await, [1, 2]);
}

#[tokio::test]
async fn an_instance_that_keeps_a_resource_is_not_reused() {
    let trellis = Trellis::start(counter(Manifest::new(), "c", "{ requests = 100 }", &[])).await;
    assert_eq!(counts(&trellis, "/c", 2).await, [1, 2]);
    // The guest keeps a wasi:http `fields` past its request: the next
    // request must not find it in the host's table, so the instance goes.
    assert_eq!(count(&trellis, "/c?leak").await, 3);
    assert_eq!(counts(&trellis, "/c", 2).await, [1, 2]);
}

#[tokio::test]
async fn idle_instances_are_dropped_after_idle() {
    let trellis = Trellis::start(counter(
        Manifest::new(),
        "c",
        r#"{ requests = 100, idle = "300ms" }"#,
        &[],
    ))
    .await;
    assert_eq!(counts(&trellis, "/c", 2).await, [1, 2]);
    wait_idle(&trellis, "c", 1.0).await;
    // Released by the sweeper without another request.
    wait_idle(&trellis, "c", 0.0).await;
    assert_eq!(counts(&trellis, "/c", 2).await, [1, 2]);
}

#[tokio::test]
async fn state_never_crosses_routes() {
    let manifest = counter(Manifest::new(), "a", "{ requests = 100 }", &[]);
    let trellis = Trellis::start(counter(manifest, "b", "{ requests = 100 }", &[])).await;
    assert_eq!(counts(&trellis, "/a", 3).await, [1, 2, 3]);
    assert_eq!(counts(&trellis, "/b", 2).await, [1, 2]);
    assert_eq!(counts(&trellis, "/a", 1).await, [4]);
}

#[tokio::test]
async fn a_hot_swap_starts_over_with_new_instances() {
    let trellis = Trellis::launch(Launch {
        admin_token: Some(TOKEN.to_owned()),
        ..Launch::manifest(counter(Manifest::new(), "c", "{ requests = 100 }", &[]))
    })
    .await;
    assert_eq!(counts(&trellis, "/c", 3).await, [1, 2, 3]);
    wait_idle(&trellis, "c", 1.0).await;
    let put = trellis
        .put_route("c", "", std::fs::read(component::COUNTER).unwrap())
        .await;
    let status = put.status();
    let body: Value = serde_json::from_str(&put.text().await.unwrap()).unwrap();
    assert!(status.is_success(), "{body}");
    assert_eq!(
        body["reuse"]["requests"], 100,
        "the new version keeps reuse: {body}"
    );
    // The old version's idle instance went with the swap; the new
    // version starts its own.
    wait_idle(&trellis, "c", 0.0).await;
    assert_eq!(counts(&trellis, "/c", 2).await, [1, 2]);

    // Reuse off through the admin API: fresh instances again.
    let put = trellis
        .put_route(
            "c",
            "?reuse_requests=0",
            std::fs::read(component::COUNTER).unwrap(),
        )
        .await;
    assert!(put.status().is_success());
    assert_eq!(counts(&trellis, "/c", 2).await, [1, 1]);
}

/// With the instance budget full of its own route's one kept instance,
/// requests that queue for a slot take that instance as it comes back
/// instead of evicting it to instantiate anew: one instance serves all.
#[tokio::test]
async fn requests_queued_on_a_full_budget_take_their_routes_kept_instance() {
    let manifest = counter(
        Manifest::new().server("max_instances = 1"),
        "q",
        "{ requests = 1000 }",
        &[r#"queue_timeout = "10s""#],
    );
    let trellis = Trellis::start(manifest).await;
    let client = async || {
        let mut counts = Vec::new();
        for _ in 0..25 {
            let response = trellis.get("/q").await;
            let body = response.text().await.unwrap();
            let count = body
                .strip_prefix("count=")
                .and_then(|rest| rest.split(' ').next())
                .unwrap_or_else(|| panic!("unexpected body {body:?}"));
            counts.push(count.parse::<u32>().unwrap());
        }
        counts
    };
    let mut counts: Vec<u32> = futures::future::join_all((0..8).map(|_| client()))
        .await
        .concat();
    counts.sort_unstable();
    // A second instance would have started counting at 1 again.
    assert_eq!(counts, (1..=200).collect::<Vec<u32>>());
}

#[tokio::test]
async fn idle_instances_give_their_slots_to_new_ones() {
    // One instance in all: the kept one must make way for another
    // route's request, not turn it away.
    let manifest = counter(
        Manifest::new().server("max_instances = 1"),
        "a",
        "{ requests = 100 }",
        &[],
    );
    let trellis = Trellis::start(manifest.route("hello", "/hello", component::HELLO, &[])).await;
    assert_eq!(counts(&trellis, "/a", 2).await, [1, 2]);
    settle(&trellis, "a").await;
    wait_idle(&trellis, "a", 1.0).await;
    let response = trellis.get("/hello").await;
    assert_eq!(response.status(), 200);
    assert_eq!(instances(&trellis, "a", "idle").await, 0.0);
    assert_eq!(counts(&trellis, "/a", 2).await, [1, 2]);
}

#[tokio::test]
async fn swaps_under_load_with_reuse_drop_nothing_and_never_mix_versions() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let manifest = Manifest::new().route(
        "v",
        "/v",
        component::VERSION_A,
        &["reuse = { requests = 1000 }"],
    );
    let trellis = Arc::new(
        Trellis::launch(Launch {
            admin_token: Some(TOKEN.to_owned()),
            ..Launch::manifest(manifest)
        })
        .await,
    );
    let digest = |file: &str| crate::harness::sha256_hex(file)[..12].to_owned();
    let (a, b) = (digest(component::VERSION_A), digest(component::VERSION_B));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (trellis, stop, a, b) = (trellis.clone(), stop.clone(), a.clone(), b.clone());
        clients.push(tokio::spawn(async move {
            let client = crate::harness::client_builder().build().unwrap();
            let (mut served, mut failures) = (0u32, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let response = match client.get(trellis.url("/v")).send().await {
                    Ok(response) => response,
                    Err(e) => {
                        failures.push(format!("request failed: {e}"));
                        continue;
                    }
                };
                let status = response.status();
                let label = header(response.headers(), "x-trellis-component");
                let body = response.text().await.unwrap_or_default();
                let expected = match body.as_str() {
                    "version a\n" => format!("v@{a}"),
                    "version b\n" => format!("v@{b}"),
                    _ => String::new(),
                };
                if status != 200 || label != expected {
                    failures.push(format!("{status} {label} {body:?}"));
                }
                served += 1;
            }
            (served, failures)
        }));
    }
    for i in 0..10 {
        let file = if i % 2 == 0 {
            component::VERSION_B
        } else {
            component::VERSION_A
        };
        let put = trellis
            .put_route("v", "", std::fs::read(file).unwrap())
            .await;
        assert!(put.status().is_success(), "swap {i}: {}", put.status());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for client in clients {
        let (served, failures) = client.await.unwrap();
        assert!(failures.is_empty(), "{failures:?}");
        total += served;
    }
    assert!(total > 100, "only {total} requests ran during the swaps");
    // Kept instances of the ten swapped-out versions are gone: what is
    // left idle belongs to the last version, at most one per client.
    settle(&trellis, "v").await;
    let idle = instances(&trellis, "v", "idle").await;
    assert!((1.0..=8.0).contains(&idle), "{idle} idle instances");
}
