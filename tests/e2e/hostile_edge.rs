//! A hostile client at the HTTP edge, on raw sockets: broken request bodies
//! are the client's error (400, no guest failure counted), an oversized
//! `Expect: 100-continue` upload is refused before it starts, and a guest
//! that fails after its response head left never yields a body that looks
//! complete.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::util::{Manifest, Trellis, WAIT, component};

fn manifest() -> Manifest {
    Manifest::new()
        .route("hello", "/hello", component::HELLO, &[])
        .route(
            "echo",
            "/echo",
            component::ECHO,
            &[r#"max_body = "1KiB""#, r#"timeout = "1s""#],
        )
        .route(
            "stream",
            "/stream",
            component::STREAM,
            &[r#"timeout = "500ms""#],
        )
}


/// Everything until the host closes the connection; a reset counts as a
/// close (what was read before it is kept).
async fn read_to_close(socket: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0; 64 * 1024];
    tokio::time::timeout(WAIT, async {
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the host closes the connection");
    out
}

/// A response read off the wire: status, lower-cased head, body bytes.
struct Wire {
    status: u16,
    head: String,
    body: Vec<u8>,
}

fn parse(bytes: &[u8]) -> Wire {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(bytes)));
    let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    Wire {
        status,
        head,
        body: bytes[end + 4..].to_vec(),
    }
}

/// Asserts a host JSON error with `status` and `code`.
fn assert_json_error(wire: &Wire, status: u16, code: &str) {
    assert_eq!(wire.status, status, "head {:?}", wire.head);
    assert!(
        wire.head.contains("content-type: application/json"),
        "head {:?}",
        wire.head
    );
    let body: Value = serde_json::from_slice(&wire.body).unwrap_or_else(|e| {
        panic!(
            "error body is not JSON ({e}): {}",
            String::from_utf8_lossy(&wire.body)
        )
    });
    assert_eq!(body["error"]["code"], code, "body {body}");
}

#[tokio::test]
async fn oversized_expect_continue_is_413_without_100() {
    let trellis = Trellis::start(manifest()).await;
    let request = "POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n";
    let mut socket = TcpStream::connect(trellis.addr).await.unwrap();
    socket.write_all(request.as_bytes()).await.unwrap();
    // No half-close and no body: the client waits for permission, as
    // curl does, and the answer must come without it.
    let started = std::time::Instant::now();
    let bytes = read_to_close(&mut socket).await;
    let text = String::from_utf8_lossy(&bytes);
    assert!(!text.contains("100 Continue"), "{text}");
    let wire = parse(&bytes);
    assert_json_error(&wire, 413, "PAYLOAD_TOO_LARGE");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "413 took {:?}",
        started.elapsed()
    );

    // Within max_body, the same request is invited to send its body.
    let request = "POST /echo?buffer HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n";
    let mut socket = TcpStream::connect(trellis.addr).await.unwrap();
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut buf = [0; 64];
    let n = tokio::time::timeout(WAIT, socket.read(&mut buf))
        .await
        .expect("an interim response")
        .unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 100 Continue"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    socket.write_all(b"hello").await.unwrap();
    let wire = parse(&read_to_close(&mut socket).await);
    assert_eq!(wire.status, 200);
    assert_eq!(wire.body, b"hello");
}
