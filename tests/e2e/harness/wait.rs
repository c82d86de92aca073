//! Waiting on observable state instead of sleeping: each wait polls what a
//! client can see and fails the test after [`WAIT`](super::WAIT).

use std::time::{Duration, Instant};

use super::WAIT;
use super::host::Trellis;

/// Sends `GET path` until one is turned away with 503, which shows that
/// another request holds the route's only slot (`max_concurrency = 1`), and
/// returns that response. The contract has no other sign that a request is
/// in flight, and this one needs no sleep.
pub(crate) async fn wait_until_busy(trellis: &Trellis, path: &str) -> reqwest::Response {
    let deadline = Instant::now() + WAIT;
    loop {
        let response = trellis.get(path).await;
        match response.status().as_u16() {
            503 => return response,
            200 => assert!(Instant::now() < deadline, "{path} never reported busy"),
            other => panic!("{path} answered {other} while probing for busy"),
        }
    }
}

/// Runs `check` every `every` until it gives `Some`, and returns that; after
/// [`WAIT`] fails the test with `failure` (what never happened).
pub(crate) async fn wait_until<T>(
    failure: &str,
    every: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(reached) = check().await {
            return reached;
        }
        assert!(Instant::now() < deadline, "{failure}");
        tokio::time::sleep(every).await;
    }
}
