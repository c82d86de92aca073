//! Outbound HTTP: a guest calls declared upstreams through
//! `wasi:http/outgoing-handler`, against real upstream servers the tests
//! start (plain and TLS), counting what reaches them.

use std::time::{Duration, Instant};

use crate::harness::{
    HEAVY, Launch, MIB, Manifest, TempDir, Trellis, Upstream, component, header, metric, run_cli,
};

/// The `/out` route calling `url` through the outbound probe.
fn out(url: &str) -> String {
    let encoded: String = url
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("/out?url={encoded}")
}

/// A manifest with `upstreams` (raw TOML) and the probe at `/out` granted
/// `outbound`.
fn manifest(upstreams: &str, outbound: &str) -> Manifest {
    Manifest::new().section(upstreams).route(
        "out",
        "/out",
        component::OUTBOUND_PROBE,
        &[&format!("outbound = {outbound}"), r#"timeout = "60s""#],
    )
}

async fn call(trellis: &Trellis, url: &str) -> (u16, Option<String>, String) {
    let response = trellis.get(&out(url)).await;
    let status = response.status().as_u16();
    let upstream_status = response
        .headers()
        .get("x-upstream-status")
        .map(|v| v.to_str().unwrap().to_owned());
    (
        status,
        upstream_status,
        response.text().await.unwrap_or_default(),
    )
}

/// A granted upstream is reached with the host's header (from the
/// environment) and the request's traceparent; the guest never sees the
/// header; connections are pooled; anything not matching the upstream's
/// scheme, authority and base path is denied without touching the network.
#[tokio::test]
async fn calls_reach_granted_upstreams_only() {
    let upstream = Upstream::start().await;
    let other = Upstream::start().await;
    let origin = upstream.origin();
    let upstreams = format!(
        "[upstreams.api]\nurl = \"{origin}\"\nheaders = {{ x-api-key = {{ env = \"OUTBOUND_TEST_KEY\" }} }}\n\n[upstreams.v1]\nurl = \"{origin}/v1\"\n\n[upstreams.unused]\nurl = \"{}\"\n",
        other.origin()
    );
    let trellis = Trellis::launch(Launch {
        env: vec![("OUTBOUND_TEST_KEY".into(), "s3cret-key".into())],
        ..Launch::manifest(manifest(&upstreams, r#"["api", "v1"]"#))
    })
    .await;

    let response = trellis.get(&out(&format!("{origin}/ok"))).await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(header(&headers, "x-upstream-status"), "200");
    assert!(!header(&headers, "x-probe-sent-headers").contains("x-api-key"));
    assert!(!header(&headers, "x-probe-seen-headers").contains("x-api-key"));
    assert_eq!(response.text().await.unwrap(), "hello from upstream");
    let heads = upstream.heads();
    assert_eq!(heads.len(), 1);
    assert_eq!(heads[0].headers["x-api-key"], "s3cret-key");
    assert_eq!(heads[0].uri.path(), "/ok");
    let traceparent = heads[0].headers["traceparent"].to_str().unwrap();
    assert!(
        traceparent.starts_with("00-") && traceparent.len() == 55,
        "{traceparent}"
    );
    // Hyper hands a connection back to the pool just after the body ends:
    // give it that moment, so each call finds it idle.
    let settle = || tokio::time::sleep(Duration::from_millis(50));
    settle().await;
    // A guest setting the header itself is overridden by the host.
    let response = trellis
        .get(&format!(
            "{}&header=x-api-key%3Aforged",
            out(&format!("{origin}/ok"))
        ))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(upstream.heads()[1].headers["x-api-key"], "s3cret-key");

    // Pooled: more sequential calls reuse the one connection.
    for _ in 0..5 {
        settle().await;
        assert_eq!(call(&trellis, &format!("{origin}/ok")).await.0, 200);
    }
    assert_eq!(upstream.requests(), 7);
    assert_eq!(
        upstream.connections(),
        1,
        "keep-alive connections are reused"
    );

    // Denied: an undeclared origin, a declared but ungranted one, the same
    // server under another name, another scheme, and paths escaping the
    // base path of an upstream that only grants /v1.
    let port = upstream.addr.port();
    for url in [
        "http://127.0.0.1:1/ok".to_owned(),
        format!("{}/ok", other.origin()),
        format!("http://localhost:{port}/ok"),
        format!("https://127.0.0.1:{port}/ok"),
    ] {
        let (status, _, body) = call(&trellis, &url).await;
        assert_eq!((status, body.as_str()), (502, "HttpRequestDenied"), "{url}");
    }
    assert_eq!(other.requests(), 0);
    assert_eq!(upstream.requests(), 7);

    // The v1 upstream (same server, base path /v1) grants /v1/... only;
    // the `api` grant covers the whole origin, so check v1 alone on a host
    // granting only it.
    drop(trellis);
    let trellis = Trellis::launch(Launch {
        env: vec![("OUTBOUND_TEST_KEY".into(), "s3cret-key".into())],
        ..Launch::manifest(manifest(&upstreams, r#"["v1"]"#))
    })
    .await;
    assert_eq!(
        call(&trellis, &format!("{origin}/v1/ok"))
            .await
            .1
            .as_deref(),
        Some("200")
    );
    assert_eq!(call(&trellis, &format!("{origin}/v1")).await.0, 200);
    for path in ["/ok", "/v1x/ok", "/v1/../ok", "/v1/%2e%2e/ok"] {
        let (status, _, body) = call(&trellis, &format!("{origin}{path}")).await;
        assert_eq!(
            (status, body.as_str()),
            (502, "HttpRequestDenied"),
            "{path}"
        );
    }
    assert_eq!(upstream.requests(), 9);
}

/// A component importing `wasi:http/outgoing-handler` on a route without
/// `outbound` is refused by `check` and `serve`, naming the grant; bad
/// upstream declarations are manifest errors naming line and field.
#[tokio::test]
async fn outbound_needs_its_grant_and_a_valid_declaration() {
    let dir = TempDir::new();
    let manifest = Manifest::new().route(
        "stingy",
        "/out",
        component::OUTBOUND_PROBE,
        &[r#"grants = ["log"]"#],
    );
    let path = dir.write("trellis.toml", &manifest.render());
    let path = path.to_str().unwrap();
    for args in [
        vec!["check", path],
        vec!["serve", path, "--listen", "127.0.0.1:0"],
    ] {
        let output = run_cli(&args, dir.path()).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?}: {stderr}");
        for needle in [
            "stingy",
            "wasi:http/outgoing-handler",
            "grant \"outbound\"",
            "outbound = [",
        ] {
            assert!(
                stderr.contains(needle),
                "{args:?}: {needle} not in {stderr}"
            );
        }
    }
    std::fs::write(dir.path().join("not.pem"), "hello").unwrap();
    for (upstreams, outbound, want) in [
        (
            "[upstreams.a]\nurl = \"http://127.0.0.1:9/x?q=1\"\n",
            r#"["a"]"#,
            ":5: upstreams.a.url: ",
        ),
        (
            "[upstreams.a]\nurl = \"http://127.0.0.1:9\"\n",
            r#"["a", "b"]"#,
            "route[0].outbound: no upstream \"b\"",
        ),
        (
            "[upstreams.a]\nurl = \"https://127.0.0.1:9\"\nca = \"not.pem\"\n",
            r#"["a"]"#,
            ":6: upstreams.a.ca: ",
        ),
    ] {
        let path = dir.write(
            "trellis.toml",
            &self::manifest(upstreams, outbound).render(),
        );
        let output = run_cli(&["check", path.to_str().unwrap()], dir.path()).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && stderr.contains(want),
            "{want}: {stderr}"
        );
    }
    // With the grant, the same component passes.
    let path = dir.write(
        "trellis.toml",
        &self::manifest("[upstreams.a]\nurl = \"http://127.0.0.1:9\"\n", r#"["a"]"#).render(),
    );
    let output = run_cli(&["check", path.to_str().unwrap()], dir.path()).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `outbound = []` says a route calls no upstream: a component importing
/// `outgoing-handler` loads (as JavaScript and Python components always
/// import it), and every call it makes is denied without touching the
/// network, even to an upstream the host declares.
#[tokio::test]
async fn an_empty_outbound_links_the_import_and_denies_every_call() {
    let upstream = Upstream::start().await;
    let origin = upstream.origin();
    let trellis = Trellis::start(manifest(
        &format!("[upstreams.api]\nurl = \"{origin}\"\n"),
        "[]",
    ))
    .await;
    let (status, _, body) = call(&trellis, &format!("{origin}/ok")).await;
    assert_eq!((status, body.as_str()), (502, "HttpRequestDenied"));
    assert_eq!(upstream.requests(), 0);
}

/// An upstream that never answers fails the call with
/// `connection-read-timeout` after the upstream's `timeout`; one that
/// stalls mid-body cuts the guest's response short.
#[tokio::test]
async fn timeouts_end_calls_with_wasi_error_codes() {
    let upstream = Upstream::start().await;
    let origin = upstream.origin();
    let trellis = Trellis::start(manifest(
        &format!("[upstreams.api]\nurl = \"{origin}\"\ntimeout = \"400ms\"\nretries = 0\n"),
        r#"["api"]"#,
    ))
    .await;
    let started = Instant::now();
    let response = trellis
        .client()
        .get(trellis.url(&out(&format!("{origin}/hang"))))
        .header("x-request-id", "hang-1")
        .send()
        .await
        .unwrap();
    let (status, body) = (response.status().as_u16(), response.text().await.unwrap());
    let took = started.elapsed();
    assert_eq!((status, body.as_str()), (502, "ConnectionReadTimeout"));
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // The request log line says how long the guest waited on upstreams.
    let log = trellis.request_log("hang-1").await;
    let upstream_ms = log["upstream_ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("{log}"));
    assert!((400.0..5000.0).contains(&upstream_ms), "{log}");

    // The guest's own first-byte-timeout lowers the upstream's.
    let started = Instant::now();
    let response = trellis
        .get(&format!(
            "{}&first_byte_ms=100",
            out(&format!("{origin}/hang"))
        ))
        .await;
    assert_eq!(response.text().await.unwrap(), "ConnectionReadTimeout");
    assert!(
        started.elapsed() < Duration::from_millis(390),
        "{:?}",
        started.elapsed()
    );

    // Head, one chunk, then silence: the body stalls past `timeout`.
    let response = trellis.get(&out(&format!("{origin}/trickle"))).await;
    assert_eq!(response.status(), 200);
    let started = Instant::now();
    let body = response.bytes().await;
    assert!(
        body.is_err(),
        "a stalled upstream body must not look complete: {body:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// Idempotent calls without a body are retried on 5xx (the upstream sees
/// 1 + retries attempts); a POST is sent once.
#[tokio::test]
async fn retries_only_idempotent_calls() {
    let upstream = Upstream::start().await;
    let origin = upstream.origin();
    let trellis = Trellis::start(manifest(
        &format!(
            "[upstreams.api]\nurl = \"{origin}\"\nretries = 2\nbreaker = {{ failures = 100, window = \"1m\", open_for = \"1s\" }}\n"
        ),
        r#"["api"]"#,
    ))
    .await;
    let (status, upstream_status, _) = call(&trellis, &format!("{origin}/status/503")).await;
    assert_eq!((status, upstream_status.as_deref()), (200, Some("503")));
    assert_eq!(upstream.requests(), 3, "GET: one call and two retries");

    let response = trellis
        .get(&format!(
            "{}&method=POST&send=10",
            out(&format!("{origin}/status/503"))
        ))
        .await;
    assert_eq!(header(response.headers(), "x-upstream-status"), "503");
    assert_eq!(upstream.requests(), 4, "POST: never retried");

    // A streamed POST body arrives whole.
    let response = trellis
        .get(&format!(
            "{}&method=POST&send=1000000",
            out(&format!("{origin}/sink"))
        ))
        .await;
    assert_eq!(response.text().await.unwrap(), "1000000");

    let attempts = metric(
        &trellis,
        "trellis_upstream_requests_total",
        &[("upstream", "api"), ("outcome", "server_error")],
    )
    .await;
    assert_eq!(attempts, 4.0);
}

/// After `failures` failures the breaker opens: calls fail at once with
/// `destination-unavailable` without reaching the upstream, readiness says
/// degraded (200); after `open_for` one probe goes through and closes it.
#[tokio::test]
async fn breaker_opens_fails_fast_and_probes() {
    let upstream = Upstream::start().await;
    let origin = upstream.origin();
    let trellis = Trellis::start(manifest(
        &format!(
            "[upstreams.api]\nurl = \"{origin}\"\nretries = 0\nbreaker = {{ failures = 3, window = \"30s\", open_for = \"1500ms\" }}\n"
        ),
        r#"["api"]"#,
    ))
    .await;
    let state = || {
        metric(
            &trellis,
            "trellis_upstream_breaker_state",
            &[("upstream", "api")],
        )
    };
    assert_eq!(state().await, 0.0);
    for _ in 0..3 {
        assert_eq!(
            call(&trellis, &format!("{origin}/status/500"))
                .await
                .1
                .as_deref(),
            Some("500")
        );
    }
    assert_eq!(state().await, 1.0);
    let (requests, connections) = (upstream.requests(), upstream.connections());
    let started = Instant::now();
    for _ in 0..5 {
        let (status, _, body) = call(&trellis, &format!("{origin}/ok")).await;
        assert_eq!((status, body.as_str()), (502, "DestinationUnavailable"));
    }
    assert!(started.elapsed() < Duration::from_secs(1), "fails fast");
    assert_eq!(upstream.requests(), requests, "no request while open");
    assert_eq!(
        upstream.connections(),
        connections,
        "no connection while open"
    );
    let ready = trellis.get("/health/ready").await;
    assert_eq!(ready.status(), 200);
    let report: serde_json::Value = serde_json::from_slice(&ready.bytes().await.unwrap()).unwrap();
    assert_eq!(report["status"], "degraded", "{report}");
    assert_eq!(
        report["checks"]["upstream:api"]["status"], "failed",
        "{report}"
    );
    let rejected = metric(
        &trellis,
        "trellis_upstream_requests_total",
        &[("upstream", "api"), ("outcome", "rejected")],
    )
    .await;
    assert_eq!(rejected, 5.0);

    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(
        call(&trellis, &format!("{origin}/ok")).await.1.as_deref(),
        Some("200")
    );
    assert_eq!(upstream.requests(), requests + 1, "one probe");
    assert_eq!(state().await, 0.0);
    assert_eq!(
        call(&trellis, &format!("{origin}/ok")).await.1.as_deref(),
        Some("200")
    );
    let logs = trellis.logs();
    let changes: Vec<&str> = logs
        .iter()
        .filter(|l| l["upstream"] == "api" && l["state"].is_string())
        .map(|l| l["state"].as_str().unwrap())
        .collect();
    assert_eq!(changes, ["open", "half-open", "closed"], "{logs:?}");
    tokio::time::sleep(Duration::from_millis(1100)).await; // readiness caches for 1 s
    let report: serde_json::Value =
        serde_json::from_slice(&trellis.get("/health/ready").await.bytes().await.unwrap()).unwrap();
    assert_eq!(report["status"], "ok", "{report}");
}

/// An HTTPS upstream that offers HTTP/2 through ALPN is called over
/// HTTP/2, and a stream of calls shares one connection.
#[tokio::test]
async fn http2_is_used_where_the_upstream_offers_it() {
    let upstream = Upstream::start_tls_h2().await;
    let origin = upstream.origin();
    let ca = upstream.ca.as_ref().unwrap().display().to_string();
    let trellis = Trellis::start(manifest(
        &format!("[upstreams.h2]\nurl = \"{origin}\"\nca = \"{ca}\"\n"),
        r#"["h2"]"#,
    ))
    .await;
    for _ in 0..3 {
        let (status, upstream_status, body) = call(&trellis, &format!("{origin}/ok")).await;
        assert_eq!(
            (status, upstream_status.as_deref(), body.as_str()),
            (200, Some("200"), "hello from upstream")
        );
    }
    let versions: Vec<http::Version> = upstream.heads().iter().map(|h| h.version).collect();
    assert_eq!(versions, [http::Version::HTTP_2; 3]);
    assert_eq!(
        upstream.connections(),
        1,
        "HTTP/2 calls share one connection"
    );
}

/// HTTPS to a server whose certificate a test CA signed: trusted through
/// `ca`, refused as a certificate error without it.
#[tokio::test]
async fn https_upstream_trusted_through_ca() {
    let upstream = Upstream::start_tls().await;
    let origin = upstream.origin();
    let ca = upstream.ca.as_ref().unwrap().display().to_string();
    let trellis = Trellis::start(
        Manifest::new()
            .section(&format!(
                "[upstreams.private]\nurl = \"{origin}\"\nca = \"{ca}\"\n"
            ))
            .section(&format!("[upstreams.public]\nurl = \"{origin}/public\"\n"))
            .route(
                "out",
                "/out",
                component::OUTBOUND_PROBE,
                &[r#"outbound = ["private"]"#],
            )
            .route(
                "pub",
                "/pub",
                component::OUTBOUND_PROBE,
                &[r#"outbound = ["public"]"#],
            ),
    )
    .await;
    let (status, upstream_status, body) = call(&trellis, &format!("{origin}/ok")).await;
    assert_eq!(
        (status, upstream_status.as_deref(), body.as_str()),
        (200, Some("200"), "hello from upstream")
    );
    let response = trellis
        .get(&out(&format!("{origin}/public/ok")).replacen("/out", "/pub", 1))
        .await;
    assert_eq!(response.status(), 502);
    assert_eq!(response.text().await.unwrap(), "TlsCertificateError");
}

/// 1 GiB streamed from the upstream through the guest to the client
/// leaves the host's memory flat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_download_streams_in_constant_memory() {
    const TOTAL: u64 = 1024 * MIB;
    const MAX_GROWTH: u64 = 100 * MIB;
    let _heavy = HEAVY.lock().await;
    let upstream = Upstream::start().await;
    let origin = upstream.origin();
    // A debug host on a busy machine may take over a minute for 1 GiB;
    // the route's deadline would then cut the body, as it should.
    let trellis = Trellis::start(
        Manifest::new()
            .section(&format!("[upstreams.api]\nurl = \"{origin}\"\n"))
            .route(
                "out",
                "/out",
                component::OUTBOUND_PROBE,
                &[r#"outbound = ["api"]"#, r#"timeout = "10m""#],
            ),
    )
    .await;
    for _ in 0..3 {
        let body = trellis
            .get(&out(&format!("{origin}/bytes/1048576")))
            .await
            .bytes()
            .await;
        assert_eq!(body.unwrap().len(), MIB as usize);
    }
    let baseline = trellis.memory();
    let client = crate::harness::client_builder()
        .no_gzip()
        .no_brotli()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    let mut response = client
        .get(trellis.url(&out(&format!("{origin}/bytes/{TOTAL}"))))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (mut received, mut max_rss) = (0u64, baseline.rss);
    while let Some(chunk) = response.chunk().await.unwrap() {
        assert!(chunk.iter().all(|b| *b == b'u'));
        received += chunk.len() as u64;
        if received % (16 * MIB) < chunk.len() as u64 {
            max_rss = max_rss.max(trellis.memory().rss);
        }
    }
    assert_eq!(received, TOTAL);
    let end = trellis.memory();
    let grew = max_rss.max(end.rss).saturating_sub(baseline.rss);
    let peak = end.hwm.saturating_sub(baseline.hwm);
    assert!(
        grew < MAX_GROWTH && peak < MAX_GROWTH,
        "host RSS grew {} MiB (sampled), {} MiB (peak) for {} MiB streamed",
        grew / MIB,
        peak / MIB,
        TOTAL / MIB
    );
}

/// Retries stop before the route's deadline (the guest still answers,
/// with the last 5xx), and connection errors count as breaker failures.
#[tokio::test]
async fn retries_end_by_the_deadline_and_refused_connections_open_the_breaker() {
    let upstream = Upstream::start().await;
    let origin = upstream.origin();
    // A port nothing listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let trellis = Trellis::start(
        Manifest::new()
            .section(&format!(
                "[upstreams.api]\nurl = \"{origin}\"\nretries = 10\nbreaker = {{ failures = 100, window = \"1m\", open_for = \"1m\" }}\n"
            ))
            .section(&format!(
                "[upstreams.down]\nurl = \"http://{closed}\"\nretries = 0\nbreaker = {{ failures = 2, window = \"1m\", open_for = \"1m\" }}\n"
            ))
            .route(
                "out",
                "/out",
                component::OUTBOUND_PROBE,
                &[r#"outbound = ["api", "down"]"#, r#"timeout = "2s""#],
            ),
    )
    .await;
    let started = Instant::now();
    let (status, upstream_status, _) = call(&trellis, &format!("{origin}/status/502")).await;
    let took = started.elapsed();
    assert_eq!((status, upstream_status.as_deref()), (200, Some("502")));
    assert!(took < Duration::from_secs(2), "{took:?}");
    // Ten retries would back off for more than 5 s in all.
    let attempts = upstream.requests();
    assert!((2..11).contains(&attempts), "{attempts} attempts");

    for _ in 0..2 {
        let (status, _, body) = call(&trellis, &format!("http://{closed}/x")).await;
        assert_eq!((status, body.as_str()), (502, "ConnectionRefused"));
    }
    let (status, _, body) = call(&trellis, &format!("http://{closed}/x")).await;
    assert_eq!((status, body.as_str()), (502, "DestinationUnavailable"));
    for (outcome, count) in [("connect_error", 2.0), ("rejected", 1.0)] {
        let labels = [("upstream", "down"), ("outcome", outcome)];
        let value = metric(&trellis, "trellis_upstream_requests_total", &labels).await;
        assert_eq!(value, count, "{outcome}");
    }
}

/// The admin API deploys a route with `?outbound=`, refusing names the
/// host did not declare and components importing `outgoing-handler`
/// without the grant; a deployed one reaches its upstream.
#[tokio::test]
async fn admin_deploys_with_outbound() {
    const TOKEN: &str = "outbound-admin-token";
    let upstream = Upstream::start().await;
    let origin = upstream.origin();
    let trellis = Trellis::launch(Launch {
        admin_token: Some(TOKEN.into()),
        ..Launch::manifest(
            Manifest::new()
                .section(&format!("[upstreams.api]\nurl = \"{origin}\"\n"))
                .route("hello", "/hello", component::HELLO, &[]),
        )
    })
    .await;
    let bytes = std::fs::read(component::OUTBOUND_PROBE).unwrap();
    let put = |query: &'static str| {
        trellis
            .client()
            .put(format!("{}/admin/routes/out{query}", trellis.admin_url()))
            .bearer_auth(TOKEN)
            .header("content-type", "application/wasm")
            .body(bytes.clone())
            .send()
    };
    for (query, want) in [
        ("?path=/out&outbound=nope", "no upstream \"nope\""),
        ("?path=/out", "grant \"outbound\""),
    ] {
        let response = put(query).await.unwrap();
        let status = response.status().as_u16();
        let body: serde_json::Value =
            serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            (400..500).contains(&status) && message.contains(want),
            "{query}: {status} {body}"
        );
    }
    let response = put("?path=/out&outbound=api").await.unwrap();
    let status = response.status().as_u16();
    let body: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["outbound"], serde_json::json!(["api"]), "{body}");
    let (status, upstream_status, text) = call(&trellis, &format!("{origin}/ok")).await;
    assert_eq!(
        (status, upstream_status.as_deref(), text.as_str()),
        (200, Some("200"), "hello from upstream")
    );
}
