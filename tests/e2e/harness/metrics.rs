//! Reading one figure from a host's `GET /metrics`, as Prometheus parses it.

use prometheus_parse::{Scrape, Value as Sample};

use super::host::Trellis;

/// The value of a counter or gauge (or a histogram's `_count`) with all
/// of `labels`, summed over its other labels; 0 when absent.
pub(crate) async fn metric(trellis: &Trellis, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = trellis.get("/metrics").await.text().await.unwrap();
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text");
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            Sample::Counter(v) | Sample::Gauge(v) | Sample::Untyped(v) => v,
            ref other => panic!("{name} is not a counter or gauge: {other:?}"),
        })
        .sum()
}

/// `trellis_instances{route, state}`: a reusing route's instances that are
/// `busy` or `idle`.
pub(crate) async fn instances(trellis: &Trellis, route: &str, state: &str) -> f64 {
    metric(
        trellis,
        "trellis_instances",
        &[("route", route), ("state", state)],
    )
    .await
}

/// Waits for `route` to have `n` idle instances (the instance goes back
/// once the response body has ended, just after the client has it).
pub(crate) async fn wait_idle(trellis: &Trellis, route: &str, n: f64) {
    super::wait_until(
        &format!("{route} never had {n} idle instances"),
        std::time::Duration::from_millis(20),
        async || (instances(trellis, route, "idle").await == n).then_some(()),
    )
    .await;
}
