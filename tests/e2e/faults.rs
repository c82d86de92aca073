//! Fault isolation: a guest that traps, spins or exhausts its memory fails
//! only its own request; the host and every other route keep serving.

use std::time::{Duration, Instant};

use futures::future::join_all;

use crate::harness::{Manifest, Trellis, assert_error, component, header};

fn manifest() -> Manifest {
    Manifest::new()
        .route("hello", "/hello", component::HELLO, &[])
        .route("trap", "/trap", component::TRAP, &[])
        .route("loop", "/loop", component::LOOP, &[r#"timeout = "2s""#])
        .route(
            "membomb",
            "/membomb",
            component::MEMBOMB,
            &[r#"memory = "16MiB""#],
        )
}

/// Generous for an unoptimized test build on a busy 2-core machine, yet far
/// below the 2 s the spinning guest holds its thread.
const QUICK: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_fail_only_their_own_request() {
    let trellis = Trellis::start(manifest()).await;
    let faults = async {
        let (trap, looped, bomb) = tokio::join!(
            trellis.get("/trap"),
            trellis.get("/loop"),
            trellis.get("/membomb")
        );
        let ids = [&trap, &looped, &bomb].map(|r| header(r.headers(), "x-request-id"));
        assert_error(trap, 500, "HANDLER_FAILED").await;
        assert_error(looped, 504, "HANDLER_TIMEOUT").await;
        assert_error(bomb, 500, "HANDLER_FAILED").await;
        ids
    };
    // While the faults run (the loop holds on for 2 s), hello stays fast.
    let hellos = async {
        let mut answered = 0;
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(1500) {
            let sent = Instant::now();
            let response = trellis.get("/hello").await;
            assert_eq!(response.status(), 200);
            assert_eq!(response.text().await.unwrap(), "Hello, world!\n");
            assert!(
                sent.elapsed() < QUICK,
                "hello took {:?} next to faults",
                sent.elapsed()
            );
            answered += 1;
        }
        answered
    };
    let (ids, answered) = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(faults, hellos)
    })
    .await
    .expect("faults and hellos finish");
    assert!(answered >= 3, "only {answered} hellos answered in 1.5 s");

    for (id, status) in ids.iter().zip([500, 504, 500]) {
        assert_eq!(trellis.request_log(id).await["status"], status);
    }
    let response = trellis.get("/hello").await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn repeated_faults_leave_the_host_healthy() {
    let mut trellis = Trellis::start(manifest()).await;
    for round in 0..5 {
        let responses =
            join_all((0..4).flat_map(|_| [trellis.get("/trap"), trellis.get("/membomb")])).await;
        for response in responses {
            assert_error(response, 500, "HANDLER_FAILED").await;
        }
        let response = trellis.get("/hello").await;
        assert_eq!(response.status(), 200, "round {round}");
    }
    assert!(trellis.is_running());
}
