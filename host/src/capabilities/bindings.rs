//! Host bindings for the `trellis:api` WIT package (`wit/`), generated once
//! here; each interface is implemented in its own module beside this one.
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
        world: "trellis:api/imports",
        // Capability calls wait on the network (SQL, Redis); table lookups
        // on a guest's resource handles may trap.
        imports: { default: async | trappable },
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
        },
    });
}

pub use generated::trellis::api;
