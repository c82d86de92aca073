//! Per-route limits from the manifest: body size, deadline, memory and
//! concurrency.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream;

use crate::harness::{Manifest, Trellis, assert_error, component, header, wait_until_busy};

/// A body with no content-length (sent chunked) of `chunks` × `size` bytes.
fn chunked(chunks: usize, size: usize) -> reqwest::Body {
    let parts = (0..chunks).map(move |_| Ok::<_, std::io::Error>(Bytes::from(vec![b'c'; size])));
    reqwest::Body::wrap_stream(stream::iter(parts))
}

#[tokio::test]
async fn content_length_over_max_body_is_413() {
    let trellis = Trellis::start(Manifest::new().route(
        "echo",
        "/echo",
        component::ECHO,
        &[r#"max_body = "1KiB""#],
    ))
    .await;
    let post = |len: usize| {
        trellis
            .client()
            .post(trellis.url("/echo"))
            .body(vec![b'a'; len])
            .send()
    };

    let response = post(1024).await.unwrap();
    assert_eq!(response.status(), 200, "exactly max_body is allowed");
    assert_eq!(response.bytes().await.unwrap().len(), 1024);

    let refused = post(1025).await.unwrap();
    assert_eq!(header(refused.headers(), "connection"), "close");
    assert_error(refused, 413, "PAYLOAD_TOO_LARGE").await;

    // A body far larger than the socket buffers: the host reads and drops
    // it before answering, so the client gets the 413 rather than a reset
    // in the middle of sending.
    for _ in 0..3 {
        let refused = post(4 << 20)
            .await
            .expect("the client sees the answer, not a reset");
        assert_error(refused, 413, "PAYLOAD_TOO_LARGE").await;
    }
    assert_eq!(
        trellis.get("/echo").await.status(),
        200,
        "the route still serves"
    );
}

#[tokio::test]
async fn chunked_body_over_max_body_is_413() {
    let trellis = Trellis::start(Manifest::new().route(
        "echo",
        "/echo",
        component::ECHO,
        &[r#"max_body = "1KiB""#],
    ))
    .await;
    let post = |body| {
        trellis
            .client()
            .post(trellis.url("/echo?buffer"))
            .body(body)
            .send()
    };

    let response = post(chunked(4, 256)).await.unwrap();
    assert_eq!(
        response.status(),
        200,
        "a chunked body within max_body is fine"
    );
    assert_eq!(response.bytes().await.unwrap().len(), 1024);

    // `?buffer` makes echo read it all before it answers, so the limit trips
    // while the host can still choose the status.
    let refused = post(chunked(16, 512)).await.unwrap();
    // The unread rest of the body makes the connection unusable; the host
    // must say so, or the client's next request on it fails.
    assert_eq!(header(refused.headers(), "connection"), "close");
    assert_error(refused, 413, "PAYLOAD_TOO_LARGE").await;

    // The guest stops reading at the limit; the host reads and drops the
    // rest (far more than the socket buffers hold) before it answers, so
    // the client still sending sees the 413 rather than a reset.
    for _ in 0..3 {
        let refused = post(chunked(64, 64 << 10))
            .await
            .expect("the client sees the answer, not a reset");
        assert_error(refused, 413, "PAYLOAD_TOO_LARGE").await;
    }

    let response = trellis.get("/echo").await;
    assert_eq!(response.status(), 200, "the route still serves");
}

#[tokio::test]
async fn over_max_concurrency_is_503_after_queue_timeout() {
    let trellis = Trellis::start(Manifest::new().route(
        "slow",
        "/slow",
        component::SLOW,
        &[
            "max_concurrency = 1",
            r#"queue_timeout = "50ms""#,
            r#"timeout = "10s""#,
        ],
    ))
    .await;
    let holder = tokio::spawn(trellis.client().get(trellis.url("/slow?ms=1500")).send());

    let busy = wait_until_busy(&trellis, "slow", "/slow?ms=0").await;
    assert!(!holder.is_finished(), "503 only after the holder's answer");
    let retry_after = header(busy.headers(), "retry-after");
    assert!(
        retry_after.parse::<u64>().is_ok(),
        "retry-after {retry_after:?}"
    );
    assert_error(busy, 503, "OVERLOADED").await;

    let holder = holder.await.unwrap().expect("the holder is answered");
    assert_eq!(holder.status(), 200);
    assert_eq!(holder.text().await.unwrap(), "slept 1500\n");

    let response = trellis.get("/slow?ms=0").await;
    assert_eq!(response.status(), 200, "the slot is free again");
}

#[tokio::test]
async fn requests_queue_for_a_slot_within_queue_timeout() {
    let trellis = Trellis::start(Manifest::new().route(
        "slow",
        "/slow",
        component::SLOW,
        &["max_concurrency = 1", r#"queue_timeout = "5s""#],
    ))
    .await;
    // Two 600 ms requests through one slot take about 1.2 s: they ran one
    // after the other, and neither was turned away.
    let started = Instant::now();
    let (a, b) = tokio::join!(trellis.get("/slow?ms=600"), trellis.get("/slow?ms=600"));
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    assert!(
        started.elapsed() >= Duration::from_millis(1150),
        "ran side by side: {:?}",
        started.elapsed()
    );
}

/// The process-wide instance budget (`[server] max_instances`) queues like
/// a route's `max_concurrency`: a request that finds every instance busy
/// waits up to its route's `queue_timeout`, then gets 503.
#[tokio::test]
async fn the_instance_budget_queues_within_queue_timeout() {
    let trellis = Trellis::start(
        Manifest::new()
            .server("max_instances = 1")
            .route(
                "patient",
                "/slow",
                component::SLOW,
                &[r#"queue_timeout = "5s""#],
            )
            .route(
                "hasty",
                "/hasty",
                component::SLOW,
                &[r#"queue_timeout = "50ms""#],
            ),
    )
    .await;
    let started = Instant::now();
    let (a, b) = tokio::join!(trellis.get("/slow?ms=600"), trellis.get("/slow?ms=600"));
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    assert!(
        started.elapsed() >= Duration::from_millis(1150),
        "two instances side by side under max_instances = 1: {:?}",
        started.elapsed()
    );

    let holder = tokio::spawn(trellis.client().get(trellis.url("/slow?ms=1500")).send());
    let busy = wait_until_busy(&trellis, "patient", "/hasty?ms=0").await;
    assert_error(busy, 503, "OVERLOADED").await;
    let holder = holder.await.unwrap().expect("the holder is answered");
    assert_eq!(holder.status(), 200);
}
