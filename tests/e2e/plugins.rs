//! One test per guest plugin, named after it (`main.rs` checks that each
//! exists): the plugin's own contract, served by a host that routes to it.

use std::time::{Duration, Instant};

use crate::util::{
    Manifest, Trellis, assert_error, assert_security_headers, component, header, sha256_hex,
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
