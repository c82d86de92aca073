//! Clients that are bounded and bypass proxies, and assertions on what
//! every response carries: the security headers and the JSON error shape.

use std::time::Duration;

use serde_json::Value;

/// The base for every client: bounded, and never through a proxy (a CI proxy
/// must not see, or break, loopback traffic).
pub(crate) fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
}

/// A client that neither asks for nor decodes compression, so tests see the
/// bytes on the wire.
pub(crate) fn raw_client() -> reqwest::Client {
    client_builder()
        .no_gzip()
        .no_brotli()
        .build()
        .expect("building a client")
}

/// Asserts `response` is a host error with `status` and `code` in the JSON
/// shape of the contract, and returns the body.
pub(crate) async fn assert_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(
        response.status().as_u16(),
        status,
        "status of {}",
        response.url()
    );
    let headers = response.headers().clone();
    assert_security_headers(&headers);
    let content_type = header(&headers, "content-type");
    assert!(
        content_type.starts_with("application/json"),
        "content-type {content_type:?}"
    );
    let request_id = header(&headers, "x-request-id");
    let bytes = response.bytes().await.expect("reading the error body");
    let body: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "error body is not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    let error = &body["error"];
    assert_eq!(error["code"], code, "body {body}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "body {body}"
    );
    assert_eq!(error["request_id"], request_id.as_str(), "body {body}");
    body
}

/// The headers every response carries.
pub(crate) fn assert_security_headers(headers: &reqwest::header::HeaderMap) {
    assert_eq!(header(headers, "x-content-type-options"), "nosniff");
    assert_eq!(header(headers, "x-frame-options"), "DENY");
    assert_eq!(header(headers, "referrer-policy"), "no-referrer");
    assert!(!header(headers, "x-request-id").is_empty());
}

/// A header's value as a string; panics if it is missing.
pub(crate) fn header(headers: &reqwest::header::HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("missing header {name}; headers: {headers:?}"))
        .to_str()
        .expect("header is ASCII")
        .to_owned()
}
