//! The HTTP edge around every route: request ids, security headers, the
//! component header, compression, and the per-request log line.

use reqwest::header::{ACCEPT_ENCODING, CONTENT_ENCODING, HeaderValue};

use crate::harness::{
    Manifest, Trellis, assert_error, assert_security_headers, component, header, raw_client,
    sha256_hex,
};

fn manifest() -> Manifest {
    Manifest::new()
        .server("compression_min_size = 1024")
        .route(
            "hello",
            "/hello",
            component::HELLO,
            &[r#"methods = ["GET"]"#],
        )
        .route("stream", "/stream", component::STREAM, &[])
}

#[tokio::test]
async fn request_id_is_kept_when_sane_and_made_otherwise() {
    let trellis = Trellis::start(manifest()).await;
    let send = |path: &str, id: HeaderValue| {
        trellis
            .client()
            .get(trellis.url(path))
            .header("x-request-id", id)
            .send()
    };

    // Kept, on success and on a host error alike.
    let sane = "req-42_A.b~c:d";
    let response = send("/hello", HeaderValue::from_static(sane))
        .await
        .unwrap();
    assert_eq!(header(response.headers(), "x-request-id"), sane);
    let response = send("/missing", HeaderValue::from_static(sane))
        .await
        .unwrap();
    let body = assert_error(response, 404, "NOT_FOUND").await;
    assert_eq!(body["error"]["request_id"], sane);
    let longest = "a".repeat(128);
    let response = send("/hello", HeaderValue::from_str(&longest).unwrap())
        .await
        .unwrap();
    assert_eq!(header(response.headers(), "x-request-id"), longest);

    // Replaced when too long or not visible ASCII.
    for bad in [
        HeaderValue::from_str(&"a".repeat(129)).unwrap(),
        HeaderValue::from_bytes("caf\u{e9}".as_bytes()).unwrap(),
    ] {
        let response = send("/hello", bad.clone()).await.unwrap();
        let id = response
            .headers()
            .get("x-request-id")
            .expect("x-request-id")
            .clone();
        assert_ne!(id, bad);
        assert!(!id.is_empty() && id.len() <= 128, "generated id {id:?}");
    }

    // Made when absent, and different each time.
    let first = header(trellis.get("/hello").await.headers(), "x-request-id");
    let second = header(trellis.get("/hello").await.headers(), "x-request-id");
    assert_ne!(first, second);
}

#[tokio::test]
async fn security_headers_on_every_response() {
    let trellis = Trellis::start(manifest()).await;
    let ok = trellis.get("/hello").await;
    assert_eq!(ok.status(), 200);
    assert_security_headers(ok.headers());
    // `assert_error` checks them too.
    assert_error(trellis.get("/nowhere").await, 404, "NOT_FOUND").await;
    let response = trellis
        .client()
        .delete(trellis.url("/hello"))
        .send()
        .await
        .unwrap();
    assert_error(response, 405, "METHOD_NOT_ALLOWED").await;
}

#[tokio::test]
async fn component_is_named_by_route_and_digest() {
    let trellis = Trellis::start(manifest()).await;
    let digest = sha256_hex(component::HELLO);
    let loaded = trellis.loaded_log("hello").await;
    assert_eq!(loaded["digest"], digest.as_str());
    assert_eq!(loaded["cache"], "miss");
    assert!(loaded["compile_ms"].is_number(), "{loaded}");

    let response = trellis.get("/hello").await;
    assert_eq!(
        header(response.headers(), "x-trellis-component"),
        format!("hello@{}", &digest[..12])
    );
    let response = trellis.get("/stream?bytes=10").await;
    let stream_digest = sha256_hex(component::STREAM);
    assert_eq!(
        header(response.headers(), "x-trellis-component"),
        format!("stream@{}", &stream_digest[..12])
    );
    // Host errors come from no component.
    assert!(
        trellis
            .get("/nowhere")
            .await
            .headers()
            .get("x-trellis-component")
            .is_none()
    );
}

#[tokio::test]
async fn compresses_large_bodies_for_clients_that_accept_it() {
    let trellis = Trellis::start(manifest()).await;
    let raw = raw_client();
    let get = |path: &str, encoding: Option<&'static str>| {
        let mut request = raw.get(trellis.url(path));
        if let Some(encoding) = encoding {
            request = request.header(ACCEPT_ENCODING, encoding);
        }
        request.send()
    };

    for encoding in ["gzip", "br"] {
        let response = get("/stream?bytes=65536", Some(encoding)).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(header(response.headers(), "content-encoding"), encoding);
        let wire = response.bytes().await.unwrap();
        assert!(
            wire.len() < 65536,
            "{encoding}: {} bytes on the wire",
            wire.len()
        );
    }

    // Not asked for: not compressed, but a cache is told it could be.
    let response = get("/stream?bytes=65536", None).await.unwrap();
    assert!(response.headers().get(CONTENT_ENCODING).is_none());
    assert_eq!(header(response.headers(), "vary"), "accept-encoding");
    assert_eq!(response.bytes().await.unwrap().len(), 65536);

    // Below compression_min_size (hello sends a content-length of 14): not compressed.
    let response = get("/hello", Some("gzip, br")).await.unwrap();
    assert!(response.headers().get(CONTENT_ENCODING).is_none());
    assert_eq!(response.text().await.unwrap(), "Hello, world!\n");

    // A client that decodes gets the original bytes.
    let body = trellis
        .get("/stream?bytes=65536")
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(body.len(), 65536);
    assert!(body.iter().all(|&b| b == b'x'));
}

#[tokio::test]
async fn each_request_is_logged() {
    let trellis = Trellis::start(manifest()).await;
    let response = trellis
        .client()
        .get(trellis.url("/hello"))
        .header("x-request-id", "log-me-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let log = trellis.request_log("log-me-1").await;
    assert_eq!(log["method"], "GET");
    assert_eq!(log["path"], "/hello");
    assert_eq!(log["route"], "hello");
    assert_eq!(log["component"], sha256_hex(component::HELLO).as_str());
    assert_eq!(log["status"], 200);
    assert!(log["duration_ms"].is_number(), "{log}");
    assert!(
        log["level"].is_string() && log["timestamp"].is_string(),
        "{log}"
    );

    let response = trellis
        .client()
        .get(trellis.url("/nope"))
        .header("x-request-id", "log-me-2")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let log = trellis.request_log("log-me-2").await;
    assert_eq!(log["status"], 404);
    assert_eq!(log["path"], "/nope");
}
