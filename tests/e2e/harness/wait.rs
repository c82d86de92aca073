//! Waiting on observable state instead of sleeping: each wait polls what a
//! client can see and fails the test after [`WAIT`](super::WAIT).

use std::time::{Duration, Instant};

use super::WAIT;
use super::host::Trellis;
use super::metrics::metric;

/// Waits until `route` has a request in flight (its gauge in `/metrics`),
/// then sends `GET path` until one is turned away with 503, which shows
/// that the request holds the only slot (`max_concurrency = 1`, or one
/// instance), and returns that response. Probing only once the holder is
/// in flight keeps the probes from taking the slot first and turning the
/// holder away, as they could on a loaded machine.
pub(crate) async fn wait_until_busy(
    trellis: &Trellis,
    route: &str,
    path: &str,
) -> reqwest::Response {
    wait_until(
        &format!("route {route} never had a request in flight"),
        Duration::from_millis(10),
        async || {
            let in_flight =
                metric(trellis, "trellis_requests_in_flight", &[("route", route)]).await;
            (in_flight >= 1.0).then_some(())
        },
    )
    .await;
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
