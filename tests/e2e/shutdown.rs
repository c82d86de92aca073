//! Graceful shutdown on SIGTERM: requests in flight finish within
//! `shutdown_grace`, then the process exits and stops taking connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{Manifest, Trellis, component, metric, wait_until, wait_until_busy};

/// A slow route with one slot, so `wait_until_busy` can tell when a request
/// is in flight.
fn manifest(grace: &str) -> Manifest {
    Manifest::new()
        .server(&format!("shutdown_grace = {grace:?}"))
        .route(
            "slow",
            "/slow",
            component::SLOW,
            &[
                "max_concurrency = 1",
                r#"queue_timeout = "200ms""#,
                r#"timeout = "60s""#,
            ],
        )
}

#[tokio::test]
async fn sigterm_lets_requests_in_flight_finish() {
    let mut trellis = Trellis::start(manifest("30s")).await;
    let in_flight = tokio::spawn(trellis.client().get(trellis.url("/slow?ms=1500")).send());
    wait_until_busy(&trellis, "slow", "/slow?ms=0").await;

    trellis.sigterm();
    let signalled = Instant::now();
    let response = in_flight
        .await
        .unwrap()
        .expect("the request in flight is answered");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "slept 1500\n");

    let status = trellis
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("trellis exits");
    assert!(status.success(), "exit status {status}");
    assert!(signalled.elapsed() < Duration::from_secs(20));
    let refused = tokio::net::TcpStream::connect(trellis.addr).await;
    assert!(refused.is_err(), "still accepting connections after exit");
}

#[tokio::test]
async fn sigterm_gives_up_after_shutdown_grace() {
    let mut trellis = Trellis::start(manifest("1s")).await;
    let in_flight = tokio::spawn(trellis.client().get(trellis.url("/slow?ms=8000")).send());
    wait_until_busy(&trellis, "slow", "/slow?ms=0").await;

    trellis.sigterm();
    let signalled = Instant::now();
    // 1 s of grace plus slack, and well short of the 8 s request.
    trellis
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("trellis exits soon after its grace");
    let waited = signalled.elapsed();
    assert!(
        waited >= Duration::from_millis(800),
        "exited after only {waited:?}, before the grace ran out"
    );

    let outcome = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("the cut-off request ends")
        .unwrap();
    assert!(
        !outcome.as_ref().is_ok_and(|r| r.status() == 200),
        "the cut-off request cannot have completed: {outcome:?}"
    );
    assert!(tokio::net::TcpStream::connect(trellis.addr).await.is_err());
}

#[tokio::test]
async fn sigterm_under_load_answers_every_accepted_request() {
    let manifest = Manifest::new().server(r#"shutdown_grace = "10s""#).route(
        "slow",
        "/slow",
        component::SLOW,
        &[r#"timeout = "30s""#],
    );
    let mut trellis = Trellis::start(manifest).await;
    let url = trellis.url("/slow?ms=700");
    let signalled: Arc<std::sync::OnceLock<Instant>> = Default::default();
    // Responses each client has had so far.
    let answered: Arc<Vec<AtomicU32>> = Arc::new((0..16).map(|_| AtomicU32::new(0)).collect());
    let mut clients = Vec::new();
    for i in 0..16 {
        let (url, signalled, answered) = (url.clone(), signalled.clone(), answered.clone());
        clients.push(tokio::spawn(async move {
            let client = crate::harness::client_builder().build().unwrap();
            let (mut ok, mut bad, mut in_flight_lost) = (0u32, Vec::new(), 0u32);
            loop {
                let sent = Instant::now();
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {
                        let body = r.text().await;
                        match body.as_deref() {
                            Ok("slept 700\n") => ok += 1,
                            other => bad.push(format!("body {other:?}")),
                        }
                        answered[i].fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => {
                        bad.push(format!("status {}", r.status()));
                        answered[i].fetch_add(1, Ordering::Relaxed);
                    }
                    // After the signal, new requests are turned away at the
                    // socket. One sent well before it was in flight and
                    // must have been answered.
                    Err(_) => {
                        let before = signalled
                            .get()
                            .is_some_and(|s| sent + Duration::from_millis(300) < *s);
                        if before {
                            in_flight_lost += 1;
                        }
                        break;
                    }
                }
            }
            (ok, bad, in_flight_lost)
        }));
    }
    // The signal comes under load: once every client has had two answers
    // (the count below expects them) and the host has all sixteen requests
    // in flight at once. A client that stopped early ends the wait, for the
    // checks below to report.
    wait_until(
        "the clients never had two answers each with 16 requests in flight",
        Duration::from_millis(20),
        async || {
            if clients.iter().any(|c| c.is_finished()) {
                return Some(());
            }
            if answered.iter().any(|n| n.load(Ordering::Relaxed) < 2) {
                return None;
            }
            let in_flight = metric(&trellis, "trellis_requests_in_flight", &[("route", "slow")]);
            (in_flight.await >= 16.0).then_some(())
        },
    )
    .await;
    signalled.set(Instant::now()).unwrap();
    trellis.sigterm();
    let status = trellis
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("trellis exits within its grace");
    assert!(status.success(), "exit status {status}");
    assert!(signalled.get().unwrap().elapsed() < Duration::from_secs(10));
    let mut total = 0;
    for client in clients {
        let (ok, bad, lost) = tokio::time::timeout(Duration::from_secs(30), client)
            .await
            .expect("clients finish")
            .unwrap();
        assert!(bad.is_empty(), "wrong answers: {bad:?}");
        assert_eq!(lost, 0, "requests in flight at SIGTERM were dropped");
        total += ok;
    }
    // 16 clients × at least two 700 ms requests before the signal, plus the
    // ones in flight at the signal.
    assert!(total >= 32, "only {total} requests answered");
}
