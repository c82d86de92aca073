//! A hostile client at the HTTP edge, on raw sockets: broken request bodies
//! are the client's error (400, no guest failure counted), an oversized
//! `Expect: 100-continue` upload is refused before it starts, and a guest
//! that fails after its response head left never yields a body that looks
//! complete.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::harness::{Manifest, Trellis, WAIT, component, metric};

const GUEST_FAILURES: &str = "trellis_guest_failures_total";
const CLIENT_BODY_FAILURES: &str = "trellis_client_body_failures_total";

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

/// Sends `request` on a fresh connection, half-closes it when `half_close`,
/// and returns every byte the host sends until it closes (or `WAIT`
/// passes, which fails the test).
async fn exchange(trellis: &Trellis, request: &[u8], half_close: bool) -> Vec<u8> {
    let mut socket = TcpStream::connect(trellis.addr).await.unwrap();
    socket.write_all(request).await.unwrap();
    if half_close {
        socket.shutdown().await.unwrap();
    }
    read_to_close(&mut socket).await
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

/// Asserts a 200 whose body was cut off: for a chunked body, no
/// terminating `0\r\n\r\n` chunk; for a fixed length, fewer bytes.
fn assert_cut_off(wire: &Wire) {
    assert_eq!(wire.status, 200, "head {:?}", wire.head);
    if wire.head.contains("transfer-encoding: chunked") {
        assert!(
            !wire.body.ends_with(b"0\r\n\r\n"),
            "a chunked body that failed must not end with the last chunk: {:?}",
            String::from_utf8_lossy(&wire.body[wire.body.len().saturating_sub(64)..])
        );
    } else {
        let length: usize = wire
            .head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("neither chunked nor a length: {:?}", wire.head));
        assert!(
            wire.body.len() < length,
            "{} of {length} bytes",
            wire.body.len()
        );
    }
}

async fn assert_still_serving(trellis: &Trellis) {
    let response = trellis.get("/hello").await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn malformed_chunked_bodies_are_400_and_not_guest_failures() {
    let trellis = Trellis::start(manifest()).await;
    let chunked = |chunks: &str, query: &str| {
        format!(
            "POST /echo{query} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n{chunks}"
        )
    };
    let cases = [
        ("not hex", "zz\r\n"),
        ("negative", "-5\r\nhello\r\n0\r\n\r\n"),
        ("2^64", "10000000000000000\r\nhello\r\n0\r\n\r\n"),
        ("after a good chunk", "5\r\nhello\r\nzz\r\n"),
    ];
    // `?buffer`: echo reads the whole body before it answers, so the
    // failure comes before any head.
    for (what, chunks) in cases {
        let wire = parse(&exchange(&trellis, chunked(chunks, "?buffer").as_bytes(), true).await);
        assert_eq!(wire.status, 400, "{what}: {:?}", wire.head);
        assert_json_error(&wire, 400, "BAD_REQUEST");
    }
    // Streaming: echo answers before it reads, so the head may have left
    // by the time the body fails; then the body is cut off instead.
    for (what, chunks) in cases {
        let wire = parse(&exchange(&trellis, chunked(chunks, "").as_bytes(), true).await);
        if wire.status == 400 {
            assert_json_error(&wire, 400, "BAD_REQUEST");
        } else {
            assert!(wire.status == 200, "{what}: {:?}", wire.head);
            assert_cut_off(&wire);
        }
    }
    assert_eq!(metric(&trellis, GUEST_FAILURES, &[]).await, 0.0);
    assert_eq!(
        metric(&trellis, CLIENT_BODY_FAILURES, &[("route", "echo")]).await,
        8.0
    );
    let log = trellis
        .logs()
        .into_iter()
        .find(|l| l["message"] == "handler failed");
    assert!(log.is_none(), "logged as a guest failure: {log:?}");
    assert_still_serving(&trellis).await;
}

#[tokio::test]
async fn body_shorter_than_its_length_is_400_before_the_head() {
    let trellis = Trellis::start(manifest()).await;
    // `?buffer`: echo reads the whole body before answering.
    let request = format!(
        "POST /echo?buffer HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n{}",
        "a".repeat(20)
    );
    let wire = parse(&exchange(&trellis, request.as_bytes(), true).await);
    assert_json_error(&wire, 400, "BAD_REQUEST");
    assert_eq!(metric(&trellis, GUEST_FAILURES, &[]).await, 0.0);
    assert_eq!(
        metric(&trellis, CLIENT_BODY_FAILURES, &[("route", "echo")]).await,
        1.0
    );
    assert_still_serving(&trellis).await;
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

#[tokio::test]
async fn guest_trap_after_the_head_cuts_the_body_off() {
    let trellis = Trellis::start(manifest()).await;
    // echo answers first and then streams; the body ends early, so its read
    // fails and it traps with the head already sent.
    let request = format!(
        "POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n{}",
        "a".repeat(20)
    );
    let wire = parse(&exchange(&trellis, request.as_bytes(), true).await);
    assert_cut_off(&wire);
    // The client broke the body: counted once, as the client's.
    assert_eq!(metric(&trellis, GUEST_FAILURES, &[]).await, 0.0);
    assert_eq!(
        metric(&trellis, CLIENT_BODY_FAILURES, &[("route", "echo")]).await,
        1.0
    );
    assert_still_serving(&trellis).await;
}

#[tokio::test]
async fn timeout_after_the_head_cuts_the_body_off() {
    let trellis = Trellis::start(manifest()).await;

    // Waiting for a body that never comes: echo's 1 s timeout, head sent.
    let request = format!(
        "POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n{}",
        "a".repeat(20)
    );
    let wire = parse(&exchange(&trellis, request.as_bytes(), false).await);
    assert_cut_off(&wire);
    let echo = [("route", "echo"), ("kind", "timeout")];
    // The count lands when the guest's task ends, just after the cut.
    let mut count = 0.0;
    for _ in 0..50 {
        count = metric(&trellis, GUEST_FAILURES, &echo).await;
        if count > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(count, 1.0, "counted once");

    // Streaming a body too long for the route's 500 ms.
    let request = "GET /stream?bytes=100000000000 HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let wire = parse(&exchange(&trellis, request.as_bytes(), false).await);
    assert_cut_off(&wire);
    assert!(wire.body.len() > 1000, "{} bytes streamed", wire.body.len());
    assert_eq!(
        metric(
            &trellis,
            GUEST_FAILURES,
            &[("route", "stream"), ("kind", "timeout")]
        )
        .await,
        1.0
    );
    let failures = trellis
        .logs()
        .into_iter()
        .filter(|l| l["message"] == "handler failed")
        .count();
    assert_eq!(failures, 2, "one log line per failure");
    assert_still_serving(&trellis).await;
}
