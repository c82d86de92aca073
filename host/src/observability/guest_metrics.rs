//! Guests' own counters and histograms (the `metrics` capability), in
//! the host's registry as `guest_<name>{route, ...}`, with caps on how
//! many a guest may create.

use crate::observability::metrics::Metrics;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Most metrics guests may create on one host.
const MAX_METRICS: usize = 256;

/// Most label combinations per metric.
const MAX_SERIES: usize = 1000;

/// Histogram buckets, in seconds: a guest timing its own work.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Why a value was not recorded; the `metrics` capability hands it to
/// the guest as its WIT `error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// A bad name, or one already used for the other kind.
    InvalidName(String),
    /// Label names differ from the first use, or one is invalid.
    InvalidLabels(String),
    /// The cap on metrics or series is reached.
    TooMany(String),
}

/// Every guest-defined metric on this host.
pub struct GuestMetrics {
    registry: Arc<Metrics>,
    families: Mutex<HashMap<String, Family>>,
}

struct Family {
    kind: Kind,
    /// `route` first, then the guest's label names, sorted.
    labels: Vec<String>,
    series: usize,
}

enum Kind {
    Counter(IntCounterVec),
    Histogram(HistogramVec),
}

impl GuestMetrics {
    /// Guest metrics registered in `registry`.
    pub fn new(registry: Arc<Metrics>) -> GuestMetrics {
        GuestMetrics {
            registry,
            families: Mutex::new(HashMap::new()),
        }
    }

    /// Records one value: `Ok(counter)` adds, `Err(histogram)` observes.
    pub fn record(
        &self,
        route: &str,
        name: &str,
        labels: Vec<(String, String)>,
        value: Value,
    ) -> Result<(), Refused> {
        check_name(name).map_err(Refused::InvalidName)?;
        let mut labels = labels;
        labels.sort_by(|a, b| a.0.cmp(&b.0));
        for (label, _) in &labels {
            check_name(label).map_err(Refused::InvalidLabels)?;
            if label == "route" {
                return Err(Refused::InvalidLabels("`route` is set by the host".into()));
            }
        }
        let mut families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        if !families.contains_key(name) {
            if families.len() >= MAX_METRICS {
                return Err(Refused::TooMany(format!(
                    "guests may create at most {MAX_METRICS} metrics"
                )));
            }
            let family = self.create(name, &labels, &value)?;
            families.insert(name.to_owned(), family);
        }
        let family = families.get_mut(name).expect("inserted above");
        let names: Vec<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
        if family.labels[1..] != names[..] {
            return Err(Refused::InvalidLabels(format!(
                "{name} has labels {:?}, not {names:?}",
                &family.labels[1..]
            )));
        }
        let mut values: Vec<&str> = vec![route];
        values.extend(labels.iter().map(|(_, v)| v.as_str()));
        match (&family.kind, value) {
            (Kind::Counter(c), Value::Count(n)) => {
                // A new series counts against the cap; existing ones never fail.
                if c.get_metric_with_label_values(&values)
                    .map(|m| m.get())
                    .unwrap_or(0)
                    == 0
                {
                    family.series += 1;
                    if family.series > MAX_SERIES {
                        family.series -= 1;
                        return Err(Refused::TooMany(format!(
                            "{name} has {MAX_SERIES} label combinations already"
                        )));
                    }
                }
                c.with_label_values(&values).inc_by(n);
            }
            (Kind::Histogram(h), Value::Observation(v)) => {
                let series = h.with_label_values(&values);
                if series.get_sample_count() == 0 {
                    family.series += 1;
                    if family.series > MAX_SERIES {
                        family.series -= 1;
                        return Err(Refused::TooMany(format!(
                            "{name} has {MAX_SERIES} label combinations already"
                        )));
                    }
                }
                series.observe(v);
            }
            _ => {
                return Err(Refused::InvalidName(format!(
                    "{name} is a metric of the other kind"
                )));
            }
        }
        Ok(())
    }

    fn create(
        &self,
        name: &str,
        labels: &[(String, String)],
        value: &Value,
    ) -> Result<Family, Refused> {
        let full = format!("guest_{name}");
        let help = format!("Defined by guests through trellis:api/metrics ({name}).");
        let mut label_names = vec!["route".to_owned()];
        label_names.extend(labels.iter().map(|(k, _)| k.clone()));
        let refs: Vec<&str> = label_names.iter().map(String::as_str).collect();
        let kind = match value {
            Value::Count(_) => Kind::Counter(
                IntCounterVec::new(Opts::new(full, help), &refs)
                    .map_err(|e| Refused::InvalidName(e.to_string()))?,
            ),
            Value::Observation(_) => Kind::Histogram(
                HistogramVec::new(
                    HistogramOpts::new(full, help).buckets(BUCKETS.to_vec()),
                    &refs,
                )
                .map_err(|e| Refused::InvalidName(e.to_string()))?,
            ),
        };
        match &kind {
            Kind::Counter(c) => self.registry.try_register(c),
            Kind::Histogram(h) => self.registry.try_register(h),
        }
        .map_err(|e| Refused::InvalidName(format!("{name}: {e}")))?;
        Ok(Family {
            kind,
            labels: label_names,
            series: 0,
        })
    }
}

/// One recorded value.
pub enum Value {
    /// Added to a counter.
    Count(u64),
    /// Observed by a histogram.
    Observation(f64),
}

fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = name.len() <= 64
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not [a-z_][a-z0-9_]* of at most 64 bytes"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_labels_and_caps_are_enforced() {
        let metrics = Arc::new(Metrics::new());
        let guest = GuestMetrics::new(metrics.clone());
        let l = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        guest
            .record("r", "orders_total", l(&[("kind", "a")]), Value::Count(2))
            .unwrap();
        guest
            .record("r", "orders_total", l(&[("kind", "a")]), Value::Count(3))
            .unwrap();
        assert!(
            metrics
                .render()
                .contains("guest_orders_total{kind=\"a\",route=\"r\"} 5"),
            "{}",
            metrics.render()
        );
        assert!(matches!(
            guest.record("r", "orders_total", l(&[("other", "x")]), Value::Count(1)),
            Err(Refused::InvalidLabels(_))
        ));
        assert!(matches!(
            guest.record(
                "r",
                "orders_total",
                l(&[("kind", "a")]),
                Value::Observation(1.0)
            ),
            Err(Refused::InvalidName(_))
        ));
        assert!(matches!(
            guest.record("r", "Bad-Name", vec![], Value::Count(1)),
            Err(Refused::InvalidName(_))
        ));
        assert!(matches!(
            guest.record("r", "x", l(&[("route", "y")]), Value::Count(1)),
            Err(Refused::InvalidLabels(_))
        ));
        for i in 0..MAX_SERIES {
            guest
                .record("r", "wide", l(&[("i", &i.to_string())]), Value::Count(1))
                .unwrap();
        }
        assert!(matches!(
            guest.record("r", "wide", l(&[("i", "new")]), Value::Count(1)),
            Err(Refused::TooMany(_))
        ));
        guest
            .record("r", "wide", l(&[("i", "0")]), Value::Count(1))
            .unwrap();
    }
}
