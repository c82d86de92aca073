//! Liveness and readiness: readiness checks every loaded component and
//! says `degraded` (503) when one cannot start, instead of answering 200
//! while that route fails every request.

use serde_json::Value;

use crate::harness::{Manifest, Trellis, assert_security_headers, component};

async fn json(trellis: &Trellis, path: &str) -> (u16, Value) {
    let response = trellis.get(path).await;
    let status = response.status().as_u16();
    assert_security_headers(response.headers());
    let body = response.bytes().await.unwrap();
    (status, serde_json::from_slice(&body).expect("JSON body"))
}

#[tokio::test]
async fn ready_when_every_component_instantiates() {
    let trellis = Trellis::start(
        Manifest::new()
            .route("hello", "/hello", component::HELLO, &[])
            .route("echo", "/echo", component::ECHO, &[]),
    )
    .await;
    for path in ["/health/ready", "/health"] {
        let (status, body) = json(&trellis, path).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body["status"], "ok");
        for name in ["component:hello", "component:echo"] {
            assert_eq!(body["checks"][name]["status"], "ok", "{body}");
            assert!(
                body["checks"][name]["latency_ms"].as_f64().unwrap() >= 0.0,
                "{body}"
            );
        }
    }
    let (status, body) = json(&trellis, "/health/live").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
}

#[tokio::test]
async fn a_component_that_cannot_start_makes_the_host_degraded() {
    // big-blob's data segment alone is 4 MiB: under a 2 MiB cap it links
    // and loads, but no instance of it can be created.
    let trellis = Trellis::start(
        Manifest::new()
            .route("hello", "/hello", component::HELLO, &[])
            .route(
                "blob",
                "/blob",
                component::BIG_BLOB,
                &[r#"memory = "2MiB""#],
            ),
    )
    .await;
    let (status, body) = json(&trellis, "/health/ready").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "degraded");
    assert_eq!(
        body["checks"]["component:blob"]["status"], "failed",
        "{body}"
    );
    assert_eq!(body["checks"]["component:hello"]["status"], "ok", "{body}");
    assert!(
        !body.to_string().contains("memory limit"),
        "causes go to the log, not the public body: {body}"
    );
    trellis
        .wait_log("the failed check's cause", |l| {
            l["message"] == "readiness check failed"
                && l["check"] == "component:blob"
                && l["cause"]
                    .as_str()
                    .is_some_and(|c| c.contains("memory limit"))
        })
        .await;

    // The route indeed fails its requests, and liveness is unaffected.
    assert_eq!(trellis.get("/blob").await.status(), 500);
    assert_eq!(trellis.get("/hello").await.status(), 200);
    assert_eq!(trellis.get("/health/live").await.status(), 200);
}

/// Readiness follows the database: 503 `degraded` while PostgreSQL is
/// down, 200 again once it is back, without restarting the host.
#[tokio::test]
async fn readiness_follows_postgres_down_and_back() {
    let postgres = crate::harness::PostgresServer::start().await;
    let manifest = Manifest::new()
        .database(&format!("url = {:?}", postgres.url()))
        .database("acquire_timeout = \"500ms\"")
        .route("hello", "/hello", component::HELLO, &[]);
    let trellis = Trellis::start(manifest).await;
    let ready = |expect: u16| {
        let trellis = &trellis;
        async move {
            let deadline = tokio::time::Instant::now() + crate::harness::WAIT;
            loop {
                let response = trellis.get("/health/ready").await;
                if response.status() == expect {
                    let body = response.bytes().await.unwrap();
                    return serde_json::from_slice::<serde_json::Value>(&body).unwrap();
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "readiness never became {expect}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    };
    let body = ready(200).await;
    assert_eq!(body["checks"]["database"]["status"], "ok", "{body}");

    postgres.down();
    let body = ready(503).await;
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["checks"]["database"]["status"], "failed", "{body}");
    assert_eq!(body["checks"]["component:hello"]["status"], "ok", "{body}");
    assert_eq!(
        trellis.get("/hello").await.status(),
        200,
        "requests not using SQL still succeed"
    );

    postgres.up().await;
    let body = ready(200).await;
    assert_eq!(body["checks"]["database"]["status"], "ok", "{body}");
}

/// A plugin exporting `trellis:api/health` is asked at every readiness
/// check; its "not ready" makes the host degraded, with the reason only in
/// the log.
#[tokio::test]
async fn readiness_asks_plugins_that_export_a_check() {
    let manifest = Manifest::new()
        .route("hello", "/hello", component::HELLO, &[])
        .route(
            "probe",
            "/probe",
            component::READY_PROBE,
            &[
                "grants = [\"config\", \"log\"]",
                "config = { ready = \"no\" }",
            ],
        );
    let trellis = Trellis::start(manifest).await;
    let response = trellis.get("/health/ready").await;
    assert_eq!(response.status(), 503);
    let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(
        body["checks"]["component:probe"]["status"], "failed",
        "{body}"
    );
    assert_eq!(body["checks"]["component:hello"]["status"], "ok", "{body}");
    assert!(
        !body.to_string().contains("config ready"),
        "the reason stays in the log: {body}"
    );
    trellis
        .wait_log("the plugin's reason", |l| {
            l["message"] == "readiness check failed"
                && l["cause"]
                    .as_str()
                    .is_some_and(|c| c.contains("not ready: config ready is Some(\"no\")"))
        })
        .await;
}
