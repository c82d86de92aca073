//! Per-route rate limits (`rate_limit = "NAME"`) and the `rate-limit`
//! capability, on the real binary: the `RateLimit-*` headers, 429s decided
//! before any instantiation, keys by IP, header and route, exact shared
//! limits across two hosts on one Redis, and a Redis outage that falls
//! back to per-host limits and recovers.
//!
//! Every test names its policies with [`unique`], so tests running at
//! once, and earlier runs, never share a bucket in the shared Redis.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{
    Manifest, RedisServer, Trellis, WAIT, assert_error, component, header, metric, redis_url,
    unique,
};

/// A `[rate_limits.NAME]` table.
fn policy(name: &str, requests: u32, window: &str, key: &str) -> String {
    format!("[rate_limits.{name}]\nrequests = {requests}\nwindow = {window:?}\nkey = {key:?}")
}

/// A `[redis]` table for `url`, with a short timeout so an outage is
/// noticed quickly.
fn redis(url: &str) -> String {
    format!("[redis]\nurl = {url:?}\ntimeout = \"200ms\"")
}

/// The `RateLimit-*` headers of a response: (limit, remaining, reset).
fn ratelimit(response: &reqwest::Response) -> (u32, u32, u64) {
    let h = response.headers();
    (
        header(h, "ratelimit-limit").parse().unwrap(),
        header(h, "ratelimit-remaining").parse().unwrap(),
        header(h, "ratelimit-reset").parse().unwrap(),
    )
}

/// Waits until `trellis` has connected to Redis, so its checks go there
/// from the first.
async fn connected(trellis: &Trellis) {
    trellis
        .wait_log("redis connected", |l| l["message"] == "redis connected")
        .await;
}

async fn get_as(trellis: &Trellis, path: &str, client: &str) -> reqwest::Response {
    trellis
        .client()
        .get(trellis.url(path))
        .header("x-client", client)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

#[tokio::test]
async fn headers_count_down_and_refusals_are_429_before_instantiation() {
    let p = unique("ip");
    let trellis = Trellis::start(
        Manifest::new()
            .section(&policy(&p, 3, "1h", "ip"))
            .route(
                "limited",
                "/limited",
                component::HELLO,
                &[&format!("rate_limit = {p:?}")],
            )
            .route("free", "/free", component::HELLO, &[]),
    )
    .await;

    // 3 per hour: one every 20 minutes, and a full bucket 20 minutes
    // further per request taken (seconds rounded up).
    for (remaining, reset) in [(2, 1200), (1, 2400), (0, 3600)] {
        let response = trellis.get("/limited").await;
        assert_eq!(response.status(), 200);
        assert_eq!(ratelimit(&response), (3, remaining, reset));
        assert!(response.headers().get("retry-after").is_none());
        assert_eq!(response.text().await.unwrap(), "Hello, world!\n");
    }
    let route = [("route", "limited")];
    let instantiated = metric(&trellis, "trellis_instantiate_seconds_count", &route).await;
    assert!(instantiated >= 3.0, "{instantiated} instantiations");
    let refused = trellis.get("/limited").await;
    assert_eq!(ratelimit(&refused), (3, 0, 3600));
    assert_eq!(header(refused.headers(), "retry-after"), "1200");
    let body = assert_error(refused, 429, "RATE_LIMITED").await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("rate limit of 3 requests"), "{message}");

    // A refused upload is read and dropped, so the client gets its 429
    // rather than a reset connection.
    let upload = trellis
        .client()
        .post(trellis.url("/limited"))
        .body(vec![b'x'; 1 << 20])
        .send()
        .await
        .expect("the 429 reaches a client still sending");
    assert_error(upload, 429, "RATE_LIMITED").await;

    // The refused requests instantiated nothing.
    let after = metric(&trellis, "trellis_instantiate_seconds_count", &route).await;
    assert_eq!(after, instantiated);
    let outcome = |o| [("policy", p.as_str()), ("outcome", o)];
    assert_eq!(
        metric(
            &trellis,
            "trellis_rate_limit_decisions_total",
            &outcome("allowed")
        )
        .await,
        3.0
    );
    assert_eq!(
        metric(
            &trellis,
            "trellis_rate_limit_decisions_total",
            &outcome("refused")
        )
        .await,
        2.0
    );
    // 429s are counted under their route.
    let refusals = [("route", "limited"), ("status", "429")];
    assert_eq!(
        metric(&trellis, "http_requests_total", &refusals).await,
        2.0
    );

    // A route without a policy sends none of the headers.
    let free = trellis.get("/free").await;
    assert_eq!(free.status(), 200);
    assert!(free.headers().get("ratelimit-limit").is_none());
}

#[tokio::test]
async fn a_refused_request_never_reaches_a_trapping_component() {
    let p = unique("route");
    let trellis = Trellis::start(
        Manifest::new()
            .section(&policy(&p, 1, "1h", "route"))
            .route(
                "trap",
                "/trap",
                component::TRAP,
                &[&format!("rate_limit = {p:?}")],
            ),
    )
    .await;
    // The allowed request runs the guest, which traps: a 500 that still
    // carries the limit's headers.
    let first = trellis.get("/trap").await;
    assert_eq!(ratelimit(&first), (1, 0, 3600));
    assert_error(first, 500, "HANDLER_FAILED").await;
    // The refused ones never run it: 429, not 500.
    for _ in 0..3 {
        assert_error(trellis.get("/trap").await, 429, "RATE_LIMITED").await;
    }
    let traps = [("route", "trap"), ("kind", "trap")];
    assert_eq!(
        metric(&trellis, "trellis_guest_failures_total", &traps).await,
        1.0
    );
}

#[tokio::test]
async fn keys_separate_clients_by_header_and_routes_by_name() {
    let p = unique("hdr");
    let attach = format!("rate_limit = {p:?}");
    let trellis = Trellis::start(
        Manifest::new()
            .section(&policy(&p, 2, "1h", "header:x-client"))
            .route("one", "/one", component::HELLO, &[&attach])
            .route("two", "/two", component::HELLO, &[&attach]),
    )
    .await;
    let statuses = async |path: &str, client: Option<&str>, n: usize| {
        let mut out = Vec::new();
        for _ in 0..n {
            let mut request = trellis.client().get(trellis.url(path));
            if let Some(client) = client {
                request = request.header("x-client", client);
            }
            out.push(request.send().await.unwrap().status().as_u16());
        }
        out
    };
    assert_eq!(statuses("/one", Some("alice"), 3).await, [200, 200, 429]);
    assert_eq!(
        statuses("/one", Some("bob"), 3).await,
        [200, 200, 429],
        "bob has his own bucket"
    );
    // Requests without the header share one bucket.
    assert_eq!(statuses("/one", None, 3).await, [200, 200, 429]);
    // Routes sharing a policy count apart.
    assert_eq!(statuses("/two", Some("alice"), 3).await, [200, 200, 429]);
}

#[tokio::test]
async fn guest_checks_count_apart_from_the_route_limit() {
    let p = unique("both");
    let trellis = Trellis::start(
        Manifest::new()
            .section(&policy(&p, 5, "1h", "route"))
            .route(
                "probe",
                "/probe",
                component::LIMIT_PROBE,
                &[r#"grants = ["rate-limit"]"#, &format!("rate_limit = {p:?}")],
            ),
    )
    .await;
    for n in 1..=3 {
        let response = trellis
            .get(&format!("/probe?policy={p}&key=user-{n}"))
            .await;
        assert_eq!(response.status(), 200);
        // The host's bucket for the route...
        assert_eq!(ratelimit(&response).1, 5 - n);
        // ...and the guest's, one per key, each fresh.
        let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        assert_eq!(body["decision"]["remaining"], 4, "{body}");
    }
}

#[tokio::test]
async fn two_hosts_on_one_redis_allow_exactly_the_limit() {
    // 100 per minute, shared: one host may not grant what the other has
    // already granted.
    let p = unique("shared");
    let manifest = Manifest::new()
        .section(&redis(&redis_url()))
        .section(&policy(&p, 100, "1m", "route"))
        .route(
            "hello",
            "/hello",
            component::HELLO,
            &[&format!("rate_limit = {p:?}")],
        );
    let (a, b) = tokio::join!(Trellis::start(manifest.clone()), Trellis::start(manifest));
    tokio::join!(connected(&a), connected(&b));

    // 150 requests alternating between the hosts, 10 at a time.
    let started = Instant::now();
    let mut allowed_remaining = Vec::new();
    let mut refused = 0;
    for batch in 0..15 {
        let requests = (0..10).map(|i| {
            let host = if (batch * 10 + i) % 2 == 0 { &a } else { &b };
            host.get("/hello")
        });
        for response in futures::future::join_all(requests).await {
            match response.status().as_u16() {
                200 => allowed_remaining.push(ratelimit(&response).1),
                429 => refused += 1,
                other => panic!("status {other}"),
            }
        }
    }
    let elapsed = started.elapsed();

    // GCRA lets a full bucket's 100 through at once, then one more every
    // 600 ms: exact while the burst takes under 600 ms, and never more
    // than one extra per 600 ms that it takes.
    let allowed = allowed_remaining.len();
    let refills = (elapsed.as_millis() / 600) as usize;
    assert!(
        (100..=100 + refills).contains(&allowed),
        "{allowed} allowed, {refused} refused in {elapsed:?}"
    );
    assert_eq!(allowed + refused, 150);
    if refills == 0 {
        // Each allowed request saw a different count left: one bucket.
        allowed_remaining.sort_unstable();
        assert_eq!(allowed_remaining, (0..100).collect::<Vec<_>>());
    }
    // Both hosts counted in Redis throughout.
    for host in [&a, &b] {
        assert_eq!(
            metric(host, "trellis_rate_limit_redis_fallbacks_total", &[]).await,
            0.0
        );
    }
    eprintln!("two hosts: {allowed} allowed, {refused} refused in {elapsed:?}");
}

#[tokio::test]
async fn a_redis_outage_falls_back_to_per_host_limits_and_recovers() {
    let mut server = RedisServer::start().await;
    let p = unique("outage");
    let manifest = Manifest::new()
        .section(&redis(&server.url()))
        .section(&policy(&p, 3, "1h", "header:x-client"))
        .route(
            "hello",
            "/hello",
            component::HELLO,
            &[&format!("rate_limit = {p:?}")],
        );
    let (a, b) = tokio::join!(Trellis::start(manifest.clone()), Trellis::start(manifest));
    tokio::join!(connected(&a), connected(&b));
    let status = async |host: &Trellis, client: &str| get_as(host, "/hello", client).await.status();

    // Shared: what A grants, B does not grant again.
    for host in [&a, &a, &b] {
        assert_eq!(status(host, "before").await, 200);
    }
    assert_eq!(status(&b, "before").await, 429);
    assert_eq!(status(&a, "before").await, 429);

    // Redis down: each host keeps serving, under its own limit.
    server.stop();
    for host in [&a, &b] {
        let statuses = [
            status(host, "during").await,
            status(host, "during").await,
            status(host, "during").await,
            status(host, "during").await,
        ];
        assert_eq!(
            statuses,
            [200, 200, 200, 429],
            "each host limits on its own"
        );
        assert_eq!(host.get("/health/live").await.status(), 200);
        assert!(metric(host, "trellis_rate_limit_redis_fallbacks_total", &[]).await >= 4.0);
        host.wait_log("the fallback warning", |l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("rate limits: redis unavailable"))
        })
        .await;
    }

    // Redis back: once both hosts use it again, limits are shared again.
    server.restart().await;
    let deadline = Instant::now() + WAIT;
    for attempt in 0.. {
        let client = format!("after-{attempt}");
        for host in [&a, &a, &a] {
            assert_eq!(status(host, &client).await, 200);
        }
        if status(&b, &client).await == 429 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "limits never became shared again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for host in [&a, &b] {
        host.wait_log("the recovery", |l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("rate limits: redis is back"))
        })
        .await;
    }
    let response = get_as(&b, "/hello", "final").await;
    assert_eq!(ratelimit(&response), (3, 2, 1200));
    assert_eq!(get_as(&a, "/hello", "final").await.status(), 200);
    assert_eq!(ratelimit(&get_as(&a, "/hello", "final").await).1, 0);
    assert_eq!(get_as(&b, "/hello", "final").await.status(), 429);
}
