//! A hostile client against the real binary: requests a well-behaved HTTP
//! client would never send, written byte by byte on raw sockets.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{Launch, Manifest, Trellis, component};

const TOKEN: &str = "test-admin-token-0123456789";

/// A response as read off the wire.
struct Raw {
    status: u16,
    /// Header lines, lower-cased names, in order.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// Asserts a host error with `status` and `code` in the contract's shape.
    fn assert_error(&self, status: u16, code: &str) -> Value {
        let body = self.json();
        assert_eq!(self.status, status, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(body["error"]["message"].is_string(), "{body}");
        assert!(self.header("x-request-id").is_some(), "{:?}", self.headers);
        body
    }
}

/// Writes `request` as it is to `addr` and reads the one response (the
/// request should ask for `Connection: close`, or the server close).
async fn raw(addr: SocketAddr, request: &[u8]) -> Raw {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(request).await.expect("write request");
        let mut bytes = Vec::new();
        let mut buf = [0; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
            }
            if let Some(response) = parse(&bytes) {
                return response;
            }
        }
        parse(&bytes).unwrap_or_else(|| {
            panic!(
                "no complete response: {:?}",
                String::from_utf8_lossy(&bytes)
            )
        })
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("a response in time")
}

/// One complete response at the start of `bytes`, if there is one yet.
fn parse(bytes: &[u8]) -> Option<Raw> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&bytes[..end]).expect("UTF-8 head");
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &bytes[end + 4..];
    let find = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    let body = if let Some(len) = find("content-length") {
        let len: usize = len.parse().ok()?;
        rest.get(..len)?.to_vec()
    } else if find("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
        let mut body = Vec::new();
        let mut at = rest;
        loop {
            let line = at.windows(2).position(|w| w == b"\r\n")?;
            let size =
                usize::from_str_radix(std::str::from_utf8(&at[..line]).ok()?.trim(), 16).ok()?;
            at = &at[line + 2..];
            if size == 0 {
                break;
            }
            body.extend_from_slice(at.get(..size)?);
            at = at.get(size + 2..)?;
        }
        body
    } else {
        return None;
    };
    Some(Raw {
        status,
        headers,
        body,
    })
}

#[tokio::test]
async fn route_names_that_are_path_segments_are_refused_by_the_admin_api() {
    let trellis = Trellis::launch(Launch {
        admin_token: Some(TOKEN.to_owned()),
        ..Launch::manifest(Manifest::new().route("v", "/v", component::VERSION_A, &[]))
    })
    .await;
    let admin = trellis.admin.expect("the admin API is on");
    let wasm = std::fs::read(component::VERSION_B).unwrap();
    // reqwest (like any URL parser) resolves `%2e%2e` before sending it,
    // so the request is written by hand.
    for name in ["%2e%2e", "%2E%2E", "..", "%2e", "."] {
        let mut request = format!(
            "PUT /admin/routes/{name}?path=/dots HTTP/1.1\r\nhost: localhost\r\n\
             authorization: Bearer {TOKEN}\r\ncontent-type: application/wasm\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n",
            wasm.len()
        )
        .into_bytes();
        request.extend_from_slice(&wasm);
        let response = raw(admin, &request).await;
        if name.starts_with('.') && matches!(response.status, 404 | 405) {
            // `/admin/routes/..` as a literal may be resolved to another
            // route by the router; what matters is that nothing is created.
            continue;
        }
        let body = response.assert_error(422, "VALIDATION_FAILED");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("route name"), "{name}: {message}");
    }
    let list = trellis
        .client()
        .get(format!("{}/admin/routes", trellis.admin_url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let list: Value = serde_json::from_str(&list).unwrap();
    let names: Vec<&str> = list["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["v"], "{list}");
    let dots = trellis.get("/dots").await;
    assert_eq!(dots.status(), 404);
}

#[tokio::test]
async fn http11_without_one_host_header_is_400() {
    let trellis =
        Trellis::start(Manifest::new().route("hello", "/hello", component::HELLO, &[])).await;
    for (request, why) in [
        (
            "GET /hello HTTP/1.1\r\nconnection: close\r\n\r\n",
            "carry a Host header",
        ),
        (
            "GET /hello HTTP/1.1\r\nhost: a.example\r\nhost: b.example\r\nconnection: close\r\n\r\n",
            "not several",
        ),
        (
            "GET /health/live HTTP/1.1\r\nconnection: close\r\n\r\n",
            "carry a Host header",
        ),
        // Found by hostile_fuzz (seed 1796050509356360347, case 146): a
        // non-ASCII byte in Host was a 500 from the guest's setup.
        (
            "GET /hello HTTP/1.1\r\nhost: localh\u{fffd}st\r\nconnection: close\r\n\r\n",
            "not a valid authority",
        ),
        (
            "GET /hello HTTP/1.1\r\nhost: a b\r\nconnection: close\r\n\r\n",
            "not a valid authority",
        ),
    ] {
        let response = raw(trellis.addr, request.as_bytes()).await;
        let body = response.assert_error(400, "BAD_REQUEST");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(why), "{request:?}: {body}");
    }
    // HTTP/1.0 may omit it, and one Host is served as ever.
    let old = raw(trellis.addr, b"GET /hello HTTP/1.0\r\n\r\n").await;
    assert_eq!(old.status, 200);
    let ok = raw(
        trellis.addr,
        b"GET /hello HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(ok.status, 200);
}
