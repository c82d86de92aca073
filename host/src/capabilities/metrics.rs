//! The `metrics` capability (`wit/metrics.wit`): guests' own counters and
//! histograms, recorded in [`crate::observability::guest_metrics`].

use crate::capabilities::bindings::api::metrics::{Error, Host};
use crate::capabilities::{View, trappable};
use crate::observability::guest_metrics::{GuestMetrics, Refused, Value};
use std::sync::Arc;
use wasmtime::component::{HasData, Linker};
use wasmtime_wasi::TrappableError;

/// The `metrics` error as a host function returns it: for the guest, or
/// a trap.
pub type MetricsError = TrappableError<Error>;

/// What `metrics` reaches: the host's guest-metric families.
pub struct MetricsCtx {
    /// Shared by every route, so a name means one family host-wide.
    pub metrics: Arc<GuestMetrics>,
}

/// `metrics` for one instance.
pub type MetricsView<'a> = View<'a, MetricsCtx>;

struct HasMetrics;

impl HasData for HasMetrics {
    type Data<'a> = MetricsView<'a>;
}

/// Offers `trellis:api/metrics` through `view`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> MetricsView<'_>,
) -> wasmtime::Result<()> {
    crate::capabilities::bindings::api::metrics::add_to_linker::<T, HasMetrics>(linker, view)
}

impl From<Refused> for Error {
    fn from(refused: Refused) -> Error {
        match refused {
            Refused::InvalidName(m) => Error::InvalidName(m),
            Refused::InvalidLabels(m) => Error::InvalidLabels(m),
            Refused::TooMany(m) => Error::TooMany(m),
        }
    }
}

impl Host for MetricsView<'_> {
    async fn counter_add(
        &mut self,
        name: String,
        value: u64,
        labels: Vec<(String, String)>,
    ) -> Result<(), MetricsError> {
        let route = &self.caller.route;
        self.ctx
            .metrics
            .record(route, &name, labels, Value::Count(value))
            .map_err(|r| Error::from(r).into())
    }

    async fn histogram_observe(
        &mut self,
        name: String,
        value: f64,
        labels: Vec<(String, String)>,
    ) -> Result<(), MetricsError> {
        let route = &self.caller.route;
        self.ctx
            .metrics
            .record(route, &name, labels, Value::Observation(value))
            .map_err(|r| Error::from(r).into())
    }

    fn convert_error(&mut self, err: MetricsError) -> wasmtime::Result<Error> {
        trappable(err)
    }
}
