//! One test per guest plugin, named after it (`main.rs` checks that each
//! exists): the plugin's own contract, served by a host that routes to it.

use std::time::{Duration, Instant};

use crate::harness::{
    Manifest, Trellis, Upstream, assert_error, assert_security_headers, component, header,
    sha256_hex,
};

#[tokio::test]
pub(crate) async fn hello() {
    let trellis =
        Trellis::start(Manifest::new().route("hello", "/hello", component::HELLO, &[])).await;
    let response = trellis.get("/hello").await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_security_headers(&headers);
    assert!(header(&headers, "content-type").starts_with("text/plain"));
    let digest = sha256_hex(component::HELLO);
    assert_eq!(
        header(&headers, "x-trellis-component"),
        format!("hello@{}", &digest[..12])
    );
    assert_eq!(response.text().await.unwrap(), "Hello, world!\n");
}

#[tokio::test]
pub(crate) async fn echo() {
    let trellis =
        Trellis::start(Manifest::new().route("echo", "/echo/{*rest}", component::ECHO, &[])).await;
    let body = "ping\n".repeat(40_000); // 200 kB: several 64 KiB reads.
    for path in ["/echo/a/b?q=1&r=two", "/echo/buffered?buffer"] {
        let response = trellis
            .client()
            .post(trellis.url(path))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(header(response.headers(), "x-echo-method"), "POST");
        assert_eq!(header(response.headers(), "x-echo-path"), path);
        assert!(
            response.text().await.unwrap() == body,
            "{path}: body came back changed"
        );
    }
}

#[tokio::test]
pub(crate) async fn trap() {
    let trellis =
        Trellis::start(Manifest::new().route("trap", "/trap", component::TRAP, &[])).await;
    let response = trellis.get("/trap").await;
    let request_id = header(response.headers(), "x-request-id");
    let body = assert_error(response, 500, "HANDLER_FAILED").await;
    assert_eq!(body["error"]["message"], "internal error");
    assert!(
        !body.to_string().contains("secret-detail"),
        "trap detail leaked: {body}"
    );
    let log = trellis.request_log(&request_id).await;
    assert_eq!(log["status"], 500);
    assert_eq!(log["route"], "trap");
    // The panic message is for the operator: in the log, with the request.
    let panic = trellis
        .wait_log("the guest's panic message", |l| {
            l["stream"] == "stderr"
                && l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("secret-detail-5f1c"))
        })
        .await;
    assert_eq!(panic["request_id"], request_id);
}

#[tokio::test]
pub(crate) async fn loop_forever() {
    let trellis = Trellis::start(Manifest::new().route(
        "loop",
        "/loop",
        component::LOOP,
        &[r#"timeout = "1s""#],
    ))
    .await;
    let started = Instant::now();
    let response = trellis.get("/loop").await;
    let elapsed = started.elapsed();
    assert_error(response, 504, "HANDLER_TIMEOUT").await;
    // Loose bounds: the deadline is enforced, neither early nor never.
    assert!(
        elapsed >= Duration::from_millis(500),
        "timed out after only {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(10),
        "timed out after {elapsed:?}"
    );
}

#[tokio::test]
pub(crate) async fn membomb() {
    let trellis = Trellis::start(Manifest::new().route(
        "membomb",
        "/membomb",
        component::MEMBOMB,
        &[r#"memory = "16MiB""#],
    ))
    .await;
    let body = assert_error(trellis.get("/membomb").await, 500, "HANDLER_FAILED").await;
    assert_eq!(body["error"]["message"], "internal error");
}

#[tokio::test]
pub(crate) async fn slow() {
    let trellis =
        Trellis::start(Manifest::new().route("slow", "/slow", component::SLOW, &[])).await;
    let started = Instant::now();
    let response = trellis.get("/slow?ms=300").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "slept 300\n");
    assert!(started.elapsed() >= Duration::from_millis(300));

    let response = trellis.get("/slow").await;
    assert_eq!(response.text().await.unwrap(), "slept 500\n");
}

#[tokio::test]
pub(crate) async fn stream() {
    let trellis =
        Trellis::start(Manifest::new().route("stream", "/stream", component::STREAM, &[])).await;
    let response = trellis.get("/stream?bytes=100001&pattern=z").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(response.headers(), "content-type"),
        "application/octet-stream"
    );
    let body = response.bytes().await.unwrap();
    assert_eq!(body.len(), 100_001);
    assert!(body.iter().all(|&b| b == b'z'));

    let body = trellis.get("/stream").await.bytes().await.unwrap();
    assert_eq!(body.len(), 1024 * 1024, "default size");
    assert!(body.iter().all(|&b| b == b'x'), "default pattern");
}

#[tokio::test]
pub(crate) async fn wstd_hello() {
    let trellis =
        Trellis::start(Manifest::new().route("wstd", "/wstd", component::WSTD_HELLO, &[])).await;
    let response = trellis.get("/wstd").await;
    assert_eq!(response.status(), 200);
    assert!(header(response.headers(), "x-trellis-component").starts_with("wstd@"));
    assert_eq!(response.text().await.unwrap(), "hello from wstd\n");
}

/// Serves `component` at `/v` and checks the body and the digest header.
async fn serves_exactly(component: &str, body: &str) {
    let trellis = Trellis::start(Manifest::new().route("v", "/v", component, &[])).await;
    let response = trellis.get("/v").await;
    assert_eq!(response.status(), 200);
    let digest = sha256_hex(component);
    assert_eq!(
        header(response.headers(), "x-trellis-component"),
        format!("v@{}", &digest[..12])
    );
    assert_eq!(response.text().await.unwrap(), body);
}

#[tokio::test]
pub(crate) async fn version_a() {
    serves_exactly(component::VERSION_A, "version a\n").await;
}

#[tokio::test]
pub(crate) async fn version_b() {
    serves_exactly(component::VERSION_B, "version b\n").await;
    assert_ne!(
        sha256_hex(component::VERSION_A),
        sha256_hex(component::VERSION_B)
    );
}

#[tokio::test]
pub(crate) async fn big_blob() {
    let size = std::fs::metadata(component::BIG_BLOB).unwrap().len();
    assert!(size > 4 << 20, "big-blob is only {size} bytes");
    // 4 MiB in 1024 blocks; every 7th block's last byte is 4095 % 251 + 1 = 80.
    serves_exactly(component::BIG_BLOB, "big-blob 4194304 11760\n").await;
}

#[tokio::test]
pub(crate) async fn users() {
    let migrations = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/users/migrations");
    let grants = r#"grants = ["sql", "cache", "config", "log"]"#;
    // No `url`: the default SQLite file beside the manifest.
    let trellis = Trellis::start(
        Manifest::new()
            .database(&format!(
                r#"migrations = [{{ sqlite = "{migrations}/001_users.sqlite.sql", postgres = "{migrations}/001_users.postgres.sql" }}]"#
            ))
            .route("users", "/users", component::USERS, &[grants])
            .route("users-item", "/users/{id}", component::USERS, &[grants]),
    )
    .await;
    let created = trellis
        .client()
        .post(trellis.url("/users"))
        .body(r#"{"name":"Ada","email":"ada@example.com"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: serde_json::Value = serde_json::from_str(&created.text().await.unwrap()).unwrap();
    let id = created["id"].as_i64().expect("an id");
    let fetched = trellis.get(&format!("/users/{id}")).await;
    assert_eq!(fetched.status(), 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&fetched.text().await.unwrap()).unwrap(),
        created
    );
    assert!(
        trellis
            .manifest_path()
            .with_file_name("trellis.db")
            .is_file()
    );

    // The plugin's own router answers a method it has no route for, in the
    // contract's error shape, echoing the request id it was given.
    let refused = trellis
        .client()
        .post(trellis.url(&format!("/users/{id}")))
        .header("x-request-id", "users-plugin-test")
        .body("{}")
        .send()
        .await
        .unwrap();
    let allow = header(refused.headers(), "allow");
    let body = assert_error(refused, 405, "METHOD_NOT_ALLOWED").await;
    assert_eq!(body["error"]["request_id"], "users-plugin-test");
    assert_eq!(allow, "GET, PUT, DELETE");
}

#[tokio::test]
pub(crate) async fn sql_probe() {
    let trellis = Trellis::start(Manifest::new().route(
        "probe",
        "/probe",
        component::SQL_PROBE,
        &[r#"grants = ["sql", "config", "log"]"#],
    ))
    .await;
    let response = trellis
        .client()
        .post(trellis.url("/probe"))
        .body(r#"{"steps":[{"op":"dialect"},{"op":"query","sql":"SELECT $1 AS v","params":[{"text":"é"}]}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(
        body,
        serde_json::json!({ "results": [
            { "ok": "sqlite" },
            { "ok": { "columns": ["v"], "rows": [[{ "text": "é" }]] } },
        ] })
    );
}

#[tokio::test]
pub(crate) async fn cache_probe() {
    let manifest = Manifest::new().route(
        "probe",
        "/cache/{op}",
        component::CACHE_PROBE,
        &["grants = [\"cache\", \"log\"]"],
    );
    let trellis = Trellis::start(manifest).await;
    let set = trellis
        .client()
        .post(trellis.url("/cache/set?key=a"))
        .body("1")
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    let got: serde_json::Value =
        serde_json::from_slice(&trellis.get("/cache/get?key=a").await.bytes().await.unwrap())
            .unwrap();
    assert_eq!(got, serde_json::json!({"value": "1"}));
    // A guest's error carries the request id the host assigned, which
    // the host passes to the guest in `x-request-id`.
    let missing = trellis.get("/cache/get").await;
    assert_error(missing, 422, "VALIDATION_FAILED").await;
}

#[tokio::test]
pub(crate) async fn limit_probe() {
    let policy = crate::harness::unique("probe");
    let trellis = Trellis::start(
        Manifest::new()
            .section(&format!(
                "[rate_limits.{policy}]\nrequests = 2\nwindow = \"1h\"\nkey = \"route\""
            ))
            .route(
                "probe",
                "/probe",
                component::LIMIT_PROBE,
                &[r#"grants = ["rate-limit"]"#],
            ),
    )
    .await;
    let check = async |policy: &str, key: &str| {
        let response = trellis
            .get(&format!("/probe?policy={policy}&key={key}"))
            .await;
        assert_eq!(response.status(), 200);
        serde_json::from_slice::<serde_json::Value>(&response.bytes().await.unwrap()).unwrap()
    };
    let first = check(&policy, "user-1").await;
    assert_eq!(first["decision"]["allowed"], true, "{first}");
    assert_eq!(first["decision"]["limit"], 2);
    assert_eq!(first["decision"]["remaining"], 1);
    assert_eq!(first["decision"]["retry_after_ms"], 0);
    let reset = first["decision"]["reset_ms"].as_u64().unwrap();
    assert!((1_799_000..=1_800_000).contains(&reset), "{first}");
    assert_eq!(check(&policy, "user-1").await["decision"]["remaining"], 0);
    let refused = check(&policy, "user-1").await;
    assert_eq!(refused["decision"]["allowed"], false, "{refused}");
    let retry = refused["decision"]["retry_after_ms"].as_u64().unwrap();
    assert!((1_798_000..=1_800_000).contains(&retry), "{refused}");
    // The guest chooses the key: another is another bucket.
    assert_eq!(check(&policy, "user-2").await["decision"]["allowed"], true);

    let unknown = check("no-such-policy", "k").await;
    assert!(
        unknown["error"]["unknown-policy"]
            .as_str()
            .unwrap()
            .contains("no-such-policy"),
        "{unknown}"
    );
    assert!(check(&policy, "").await["error"]["invalid-key"].is_string());
    let longest = "k".repeat(512);
    assert_eq!(check(&policy, &longest).await["decision"]["allowed"], true);
    let too_long = "k".repeat(513);
    assert!(check(&policy, &too_long).await["error"]["invalid-key"].is_string());
}

#[tokio::test]
pub(crate) async fn metrics_probe() {
    let manifest = Manifest::new().route(
        "orders",
        "/{op}",
        component::METRICS_PROBE,
        &["grants = [\"metrics\", \"log\"]"],
    );
    let trellis = Trellis::start(manifest).await;
    let ok = |path: &'static str| {
        let trellis = &trellis;
        async move {
            let body = trellis.get(path).await.bytes().await.unwrap();
            serde_json::from_slice::<serde_json::Value>(&body).unwrap()
        }
    };
    assert_eq!(
        ok("/count?name=orders_total&value=2&label=kind:new").await,
        serde_json::json!({"ok": true})
    );
    assert_eq!(
        ok("/count?name=orders_total&value=3&label=kind:new").await,
        serde_json::json!({"ok": true})
    );
    assert_eq!(
        ok("/observe?name=checkout_seconds&value=0.02").await,
        serde_json::json!({"ok": true})
    );
    let wrong = ok("/count?name=orders_total&label=other:x").await;
    assert!(
        wrong["err"].as_str().unwrap().contains("InvalidLabels"),
        "{wrong}"
    );
    let text = trellis.get("/metrics").await.text().await.unwrap();
    assert!(
        text.contains("guest_orders_total{kind=\"new\",route=\"orders\"} 5"),
        "{text}"
    );
    assert!(
        text.contains("guest_checkout_seconds_count{route=\"orders\"} 1"),
        "{text}"
    );
}

#[tokio::test]
pub(crate) async fn ready_probe() {
    let manifest = Manifest::new().route(
        "ready",
        "/",
        component::READY_PROBE,
        &[
            "grants = [\"config\", \"log\"]",
            "config = { ready = \"yes\" }",
        ],
    );
    let trellis = Trellis::start(manifest).await;
    assert_eq!(trellis.get("/").await.text().await.unwrap(), "up\n");
    let ready = trellis.get("/health/ready").await;
    assert_eq!(ready.status(), 200);
}

#[tokio::test]
pub(crate) async fn outbound_probe() {
    let upstream = Upstream::start().await;
    let origin = upstream.origin();
    let trellis = Trellis::start(
        Manifest::new()
            .section(&format!("[upstreams.api]\nurl = \"{origin}\"\n"))
            .route(
                "out",
                "/out",
                component::OUTBOUND_PROBE,
                &[r#"outbound = ["api"]"#],
            ),
    )
    .await;
    let response = trellis.get("/out").await;
    assert_eq!(response.status(), 400);
    let url = format!("{origin}/ok")
        .replace(':', "%3A")
        .replace('/', "%2F");
    let response = trellis.get(&format!("/out?url={url}")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(response.headers(), "x-upstream-status"), "200");
    assert_eq!(response.text().await.unwrap(), "hello from upstream");
    assert_eq!(upstream.requests(), 1);
}

#[tokio::test]
pub(crate) async fn identity_probe() {
    let manifest = Manifest::new()
        .section(
            "[auth.k]\ntype = \"api-key\"\nheader = \"x-key\"\nkeys = { env = \"TRELLIS_E2E_PROBE_KEYS_UNSET\", default = \"probe-key-0123456789\" }",
        )
        .route(
            "probe",
            "/who",
            component::IDENTITY_PROBE,
            &["auth = \"k\"", "grants = [\"identity\", \"log\"]"],
        );
    let trellis = Trellis::start(manifest).await;
    let response = trellis
        .client()
        .get(trellis.url("/who"))
        .header("x-key", "probe-key-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(body["caller"]["policy"], "k", "{body}");
    assert!(
        body["caller"]["subject"]
            .as_str()
            .unwrap()
            .starts_with("api-key:")
    );
    assert_eq!(body["has_scope_read"], false);
}

#[tokio::test]
pub(crate) async fn counter() {
    // By default every request gets a fresh instance: the static count
    // never gets past 1, and each answer names its own request.
    let trellis = Trellis::start(Manifest::new().route(
        "counter",
        "/counter",
        component::COUNTER,
        &[r#"grants = ["log"]"#],
    ))
    .await;
    for _ in 0..3 {
        let response = trellis.get("/counter").await;
        assert_eq!(response.status(), 200);
        let request_id = header(response.headers(), "x-request-id");
        assert_eq!(
            response.text().await.unwrap(),
            format!("count=1 request_id={request_id}\n")
        );
    }
}

#[tokio::test]
pub(crate) async fn p3_counter() {
    // A WASI 0.3 handler, served like a 0.2 one: by default every request
    // gets a fresh instance, and the answer names its own request.
    let trellis = Trellis::start(Manifest::new().route(
        "p3",
        "/p3",
        component::P3_COUNTER,
        &[r#"grants = ["log"]"#],
    ))
    .await;
    for _ in 0..3 {
        let response = trellis.get("/p3").await;
        assert_eq!(response.status(), 200);
        let request_id = header(response.headers(), "x-request-id");
        assert_eq!(header(response.headers(), "content-type"), "text/plain");
        assert_security_headers(response.headers());
        assert_eq!(
            response.text().await.unwrap(),
            format!("count=1 request_id={request_id} most=1\n")
        );
    }
}

#[tokio::test]
pub(crate) async fn p3_hello() {
    // The WASI 0.3 hello of the benchmarks answers as plugins/hello does,
    // fresh and with concurrent reuse.
    let trellis = Trellis::start(
        Manifest::new()
            .route("fresh", "/fresh", component::P3_HELLO, &[])
            .route(
                "kept",
                "/kept",
                component::P3_HELLO,
                &["reuse = { requests = 128, concurrent = 16 }"],
            ),
    )
    .await;
    for path in ["/fresh", "/kept", "/kept"] {
        let response = trellis.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(header(response.headers(), "content-length"), "14");
        assert_eq!(response.text().await.unwrap(), "Hello, world!\n");
    }
}

/// The quotes gateway of `examples/quotes`: a quote through the declared
/// upstream, then the walk-through of its README: failures open the
/// upstream's breaker, after which calls fail at once (the upstream sees
/// no request) with 503 `UPSTREAM_UNAVAILABLE`, and readiness says
/// `degraded`.
#[tokio::test]
pub(crate) async fn quotes() {
    let upstream = Upstream::start().await;
    let origin = upstream.origin();
    let route = |url: &str| {
        [
            r#"grants = ["config", "log"]"#.to_owned(),
            r#"outbound = ["quotes"]"#.to_owned(),
            format!("config = {{ quotes_url = \"{origin}{url}\" }}"),
        ]
    };
    let (good, failing) = (route("/ok"), route("/status/503"));
    let refs = |r: &[String; 3]| -> Vec<String> { r.to_vec() };
    let (good, failing) = (refs(&good), refs(&failing));
    let good: Vec<&str> = good.iter().map(String::as_str).collect();
    let failing: Vec<&str> = failing.iter().map(String::as_str).collect();
    let trellis = Trellis::start(
        Manifest::new()
            .section(&format!(
                "[upstreams.quotes]\nurl = \"{origin}\"\nretries = 0\nbreaker = {{ failures = 2, window = \"30s\", open_for = \"60s\" }}\n"
            ))
            .route("quote", "/quote", component::QUOTES, &good)
            .route("flaky", "/flaky/quote", component::QUOTES, &failing),
    )
    .await;

    let response = trellis.get("/quote").await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(body["quote"], "hello from upstream", "{body}");
    assert_eq!(upstream.requests(), 1);

    // Two 5xx answers within the window open the breaker.
    for _ in 0..2 {
        assert_error(trellis.get("/flaky/quote").await, 502, "UPSTREAM_FAILED").await;
    }
    assert_eq!(upstream.requests(), 3);

    // Open: the healthy route fails too, at once, without a request.
    let response = trellis.get("/quote").await;
    assert_eq!(header(response.headers(), "retry-after"), "1");
    assert_error(response, 503, "UPSTREAM_UNAVAILABLE").await;
    assert_eq!(upstream.requests(), 3, "an open breaker sent a request");
    let state = crate::harness::metric(
        &trellis,
        "trellis_upstream_breaker_state",
        &[("upstream", "quotes")],
    )
    .await;
    assert_eq!(state, 1.0);
    let ready = trellis.get("/health/ready").await;
    assert_eq!(ready.status(), 200);
    let ready: serde_json::Value = serde_json::from_slice(&ready.bytes().await.unwrap()).unwrap();
    assert_eq!(ready["status"], "degraded", "{ready}");
}

/// The queue probe: its contract is exercised in `jobs`; here, that it
/// loads on a route granting `queue` and answers an error result for a
/// queue it may not use.
#[tokio::test]
pub(crate) async fn job_probe() {
    let trellis = Trellis::start(Manifest::new().section("[queues.work]").route(
        "probe",
        "/enqueue",
        component::JOB_PROBE,
        &["grants = [\"queue\", \"log\"]"],
    ))
    .await;
    let response = trellis
        .client()
        .post(trellis.url("/enqueue?queue=work"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(answer["error"], "not-granted", "{answer}");
}

/// The test worker runs in `jobs`; `trellis check` accepts it as a worker
/// and refuses it as a route handler.
#[tokio::test]
pub(crate) async fn job_worker() {
    worker_loads(component::JOB_WORKER, &["sql", "queue"], "outbound = []\n").await;
}

/// The example's route: `jobs::the_jobs_example_walks_through`.
#[tokio::test]
pub(crate) async fn emails() {
    let trellis = Trellis::start(Manifest::new().section("[queues.email]").route(
        "emails",
        "/emails",
        component::EMAILS,
        &["grants = [\"queue\", \"log\"]", "queues = [\"email\"]"],
    ))
    .await;
    let response = trellis
        .client()
        .post(trellis.url("/emails"))
        .body(r#"{"to":"x","subject":"y"}"#)
        .send()
        .await
        .unwrap();
    assert_error(response, 422, "VALIDATION_FAILED").await;
}

/// The example's worker: `jobs::the_jobs_example_walks_through`.
#[tokio::test]
pub(crate) async fn mailer() {
    worker_loads(component::MAILER, &["sql", "log"], "").await;
}

/// `trellis check` of a manifest with `component` as a worker granting
/// `grants` succeeds, and with it as a route fails: it is no handler.
async fn worker_loads(component: &str, grants: &[&str], extra: &str) {
    let dir = crate::harness::TempDir::new();
    let grants = format!("{grants:?}");
    let worker = format!(
        "[queues.q]\n\n[[worker]]\nqueue = \"q\"\ncomponent = {component:?}\ngrants = {grants}\n{extra}"
    );
    let manifest = dir.write("worker.toml", &worker);
    let out = crate::harness::run_cli(&["check", manifest.to_str().unwrap()], dir.path()).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let route =
        format!("[[route]]\npath = \"/w\"\ncomponent = {component:?}\ngrants = {grants}\n{extra}");
    let manifest = dir.write("route.toml", &route);
    let out = crate::harness::run_cli(&["check", manifest.to_str().unwrap()], dir.path()).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("wasi:http/incoming-handler"), "{stderr}");
}
