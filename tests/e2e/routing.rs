//! Routing: path patterns, methods, host errors for unrouted requests, and
//! which manifest `serve` picks.

use crate::harness::{Launch, Manifest, TempDir, Trellis, assert_error, component, header};

fn routes() -> Manifest {
    Manifest::new()
        .route(
            "greet",
            "/hello/{name}",
            component::HELLO,
            &[r#"methods = ["GET"]"#],
        )
        .route("files", "/files/{*rest}", component::ECHO, &[])
}

#[tokio::test]
async fn unknown_path_is_json_404() {
    let trellis = Trellis::start(routes()).await;
    for path in ["/", "/nope", "/hello", "/hello/alice/extra", "/files"] {
        assert_error(trellis.get(path).await, 404, "NOT_FOUND").await;
    }
}

#[tokio::test]
async fn wrong_method_is_405_with_allow() {
    let trellis = Trellis::start(routes()).await;
    let response = trellis
        .client()
        .post(trellis.url("/hello/alice"))
        .send()
        .await
        .unwrap();
    let allow = header(response.headers(), "allow");
    assert!(allow.contains("GET"), "allow: {allow:?}");
    assert!(!allow.contains("POST"), "allow: {allow:?}");
    assert_error(response, 405, "METHOD_NOT_ALLOWED").await;
}

#[tokio::test]
async fn params_and_catch_all_reach_the_component() {
    let trellis = Trellis::start(routes()).await;
    let response = trellis.get("/hello/alice").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "Hello, world!\n");

    // The component sees the request's own path and query.
    let response = trellis.get("/files/a/b/c.txt?x=1&y=%20").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(response.headers(), "x-echo-path"),
        "/files/a/b/c.txt?x=1&y=%20"
    );
}

#[tokio::test]
async fn methods_default_to_all() {
    let trellis = Trellis::start(routes()).await;
    for method in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = trellis
            .client()
            .request(method.clone(), trellis.url("/files/x"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{method}");
        assert_eq!(header(response.headers(), "x-echo-method"), method.as_str());
    }
}

#[tokio::test]
async fn quickstart_without_a_manifest() {
    let empty = TempDir::new();
    let launch = Launch {
        manifest: None,
        cwd: Some(empty.path().to_owned()),
        cache_dir: None,
        ..Launch::default()
    };
    let trellis = Trellis::launch(launch).await;
    let response = trellis.get("/hello").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "Hello, world!\n");
}

#[tokio::test]
async fn serve_defaults_to_trellis_toml_in_working_dir() {
    let cwd = TempDir::new();
    cwd.write(
        "trellis.toml",
        &Manifest::new()
            .route("greet", "/greet", component::HELLO, &[])
            .render(),
    );
    let launch = Launch {
        manifest: None,
        cwd: Some(cwd.path().to_owned()),
        cache_dir: None,
        ..Launch::default()
    };
    let trellis = Trellis::launch(launch).await;
    assert_eq!(trellis.get("/greet").await.status(), 200);
    // Not the quickstart: its route is absent.
    assert_error(trellis.get("/hello").await, 404, "NOT_FOUND").await;
}

#[tokio::test]
async fn listen_flag_overrides_manifest() {
    // 192.0.2.1 (TEST-NET-1) is on no interface here: binding it would fail,
    // so the host only starts if `--listen 127.0.0.1:0` wins.
    let manifest =
        Manifest::new()
            .listen("192.0.2.1:9")
            .route("hello", "/hello", component::HELLO, &[]);
    let trellis = Trellis::start(manifest).await;
    assert!(trellis.addr.ip().is_loopback());
    assert_eq!(trellis.get("/hello").await.status(), 200);
}
