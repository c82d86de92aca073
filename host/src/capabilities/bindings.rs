//! Host bindings for the `trellis:api` WIT package (`wit/`), generated once
//! here; each interface is implemented in its own module beside this one.
//! The world is `worker`: every import a guest may use, plus the `worker`
//! export that worker components have (handlers are typed by wasmtime's
//! own `wasi:http/proxy` bindings instead).
//!
//! Each interface's `error` is trappable: a host function returns
//! `Result<T, XError>`, where `XError` is either the WIT error the guest
//! receives or a trap (a broken invariant such as a stale resource
//! handle), so no call site writes `Ok(Err(..))`.

#[expect(
    missing_docs,
    reason = "bindgen-generated code; the WIT files carry the docs"
)]
mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "trellis:api/worker-component",
        // Capability calls wait on the network (SQL, Redis); table lookups
        // on a guest's resource handles may trap.
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "trellis:api/sql.transaction": crate::capabilities::sql::Transaction,
            "trellis:api/sql.row-stream": crate::capabilities::sql::RowStream,
            "trellis:api/cache.fill": crate::capabilities::cache::FillHandle,
        },
        trappable_error_type: {
            "trellis:api/sql.error" => crate::capabilities::sql::SqlError,
            "trellis:api/cache.error" => crate::capabilities::cache::CacheError,
            "trellis:api/config.error" => crate::capabilities::config::ConfigError,
            "trellis:api/log.error" => crate::capabilities::log::LogError,
            "trellis:api/metrics.error" => crate::capabilities::metrics::MetricsError,
            "trellis:api/rate-limit.error" => crate::capabilities::rate_limit::RateLimitError,
            "trellis:api/queue.error" => crate::capabilities::queue::QueueError,
        },
    });
}

pub use generated::trellis::api;

/// The `worker` export of worker components.
pub use generated::exports::trellis::api::worker;
/// A worker component pre-instantiated, and its instance.
pub use generated::{WorkerComponent, WorkerComponentPre};
