//! Host capabilities offered to guests as `trellis:api` imports, one module
//! per WIT interface. A guest reaches a capability only if it imports the
//! interface, and it may import only what its route grants
//! ([`crate::runtime::grants`]).
//!
//! Each capability has the shape wasmtime's own WASI crates use: an
//! `XCtx` with what it reaches (built once per route version and shared by
//! its requests), an `XView` borrowing that, the [`Caller`] and the
//! instance's resource table for one call, `impl Host for XView`, and an
//! `add_to_linker`. So the runtime depends on the capabilities and never
//! the reverse, and a `Host` impl can be called in a unit test without a
//! guest (see `tests` below). Calls [`crate::services`],
//! [`crate::observability`] and [`crate::config`].

pub mod bindings;
pub mod cache;
pub mod config;
pub mod identity;
pub mod log;
pub mod metrics;
pub mod outbound;
pub mod queue;
pub mod rate_limit;
pub mod sql;

use crate::config::manifest::{RouteSpec, WorkerSpec};
use crate::observability::trace::TraceContext;
pub use crate::services::Services;
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::TrappableError;

/// Who a capability call comes from: one request (or readiness probe) on
/// one route. Built at the edge of each request; lives in its store.
#[derive(Clone)]
pub struct Caller {
    /// The route's name, for logs and metric labels.
    pub route: Arc<str>,
    /// The component's digest, for logs.
    pub component: Arc<str>,
    /// The request's id; empty for a readiness probe.
    pub request_id: Arc<str>,
    /// The request's trace: capability calls are its child spans.
    pub trace: Arc<TraceContext>,
    /// The caller the route's `auth` verified; `None` without `auth`.
    pub identity: Option<Arc<crate::services::auth::Identity>>,
}

/// One capability's view of one instance: its context, the caller, and
/// the instance's resource table (where `sql` keeps transactions and
/// streams, `cache` its fills).
pub struct View<'a, C> {
    /// The capability's context.
    pub ctx: &'a C,
    /// Who is calling.
    pub caller: &'a Caller,
    /// The instance's resources.
    pub table: &'a mut ResourceTable,
}

/// Every capability's context for one route version, built when it loads
/// and shared by all of its requests.
pub struct Capabilities {
    /// `sql`.
    pub sql: sql::SqlCtx,
    /// `cache`.
    pub cache: cache::CacheCtx,
    /// `config`.
    pub config: config::ConfigCtx,
    /// `log`.
    pub log: log::LogCtx,
    /// `metrics`.
    pub metrics: metrics::MetricsCtx,
    /// `rate-limit`.
    pub rate_limit: rate_limit::RateLimitCtx,
    /// `wasi:http/outgoing-handler`: the granted upstreams.
    pub outbound: outbound::OutboundCtx,
    /// `identity`.
    pub identity: identity::IdentityCtx,
    /// `queue`.
    pub queue: queue::QueueCtx,
}

impl Capabilities {
    /// The contexts for a route with `spec`, on `services`.
    pub fn new(services: &Services, spec: &RouteSpec) -> Capabilities {
        Capabilities {
            sql: sql::SqlCtx {
                database: services.database.clone(),
            },
            cache: cache::CacheCtx {
                cache: services.cache.clone(),
                namespace: spec.cache_namespace.as_str().into(),
            },
            config: config::ConfigCtx {
                values: spec.config.clone(),
            },
            log: log::LogCtx {
                config: spec.config.clone(),
            },
            metrics: metrics::MetricsCtx {
                metrics: services.guest_metrics.clone(),
            },
            rate_limit: rate_limit::RateLimitCtx {
                limiter: services.rate_limiter.clone(),
            },
            outbound: outbound::OutboundCtx::new(
                &services.upstreams,
                spec.outbound.as_deref().unwrap_or_default(),
            ),
            identity: identity::IdentityCtx,
            queue: queue::QueueCtx {
                jobs: services.jobs.clone(),
                queues: spec.queues.as_slice().into(),
                topics: spec.topics.as_slice().into(),
            },
        }
    }

    /// The contexts for a `[[worker]]` with `spec`: no config or
    /// upstreams, its own cache namespace (`worker:NAME`).
    pub fn for_worker(services: &Services, spec: &WorkerSpec) -> Capabilities {
        Capabilities {
            sql: sql::SqlCtx {
                database: services.database.clone(),
            },
            cache: cache::CacheCtx {
                cache: services.cache.clone(),
                namespace: format!("worker:{}", spec.name).into(),
            },
            config: config::ConfigCtx {
                values: Default::default(),
            },
            log: log::LogCtx {
                config: Default::default(),
            },
            metrics: metrics::MetricsCtx {
                metrics: services.guest_metrics.clone(),
            },
            rate_limit: rate_limit::RateLimitCtx {
                limiter: services.rate_limiter.clone(),
            },
            outbound: outbound::OutboundCtx::new(
                &services.upstreams,
                spec.outbound.as_deref().unwrap_or_default(),
            ),
            identity: identity::IdentityCtx,
            queue: queue::QueueCtx {
                jobs: services.jobs.clone(),
                queues: spec.queues.as_slice().into(),
                topics: spec.topics.as_slice().into(),
            },
        }
    }
}

/// What one guest instance's capability calls reach: the route's
/// contexts and the caller. Carried in its store, dropped with it.
#[derive(Clone)]
pub struct GuestContext {
    /// The route version's capability contexts.
    pub capabilities: Arc<Capabilities>,
    /// Who is calling.
    pub caller: Caller,
}

impl GuestContext {
    /// The context for a request `request_id` on `route`, served by
    /// `component`, from `identity` when the route has `auth`.
    pub fn new(
        capabilities: Arc<Capabilities>,
        route: Arc<str>,
        component: Arc<str>,
        request_id: Arc<str>,
        trace: Arc<TraceContext>,
        identity: Option<Arc<crate::services::auth::Identity>>,
    ) -> GuestContext {
        GuestContext {
            capabilities,
            caller: Caller {
                route,
                component,
                request_id,
                trace,
                identity,
            },
        }
    }

    /// The context for a readiness probe or test instantiation: no
    /// request id, a trace of its own.
    pub fn probe(capabilities: Arc<Capabilities>, route: Arc<str>, component: Arc<str>) -> Self {
        let trace = Arc::new(TraceContext::from_request(None));
        GuestContext::new(capabilities, route, component, Arc::from(""), trace, None)
    }
}

/// The WIT error in `err`, or the trap it carries.
fn trappable<E>(err: TrappableError<E>) -> wasmtime::Result<E>
where
    E: std::error::Error + Send + Sync + 'static,
{
    err.downcast()
}

/// The trap for a resource-table failure (a stale or foreign handle).
fn table_trap<E>(err: wasmtime::component::ResourceTableError) -> TrappableError<E> {
    TrappableError::trap(err)
}

#[cfg(test)]
pub(crate) mod test_env;
