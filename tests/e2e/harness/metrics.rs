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
