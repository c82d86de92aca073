//! The route table: path patterns to routes, each with its component,
//! limits and version.
//!
//! A table is immutable once built. Hot load builds a new one and swaps it
//! in whole (see [`crate::ops::deployments`]); a request holds the `Arc<Route>`
//! it matched, so it finishes on the version it started with.

use crate::capabilities::{Capabilities, GuestContext, Services};
use crate::config::manifest::RouteSpec;
use crate::observability::metrics::{Metrics, RouteMetrics};
use crate::observability::trace::TraceContext;
use crate::runtime::budget::Budget;
use crate::runtime::component::{Handler, HandlerPre};
use crate::runtime::lane::SLOW_PER_ROUTE;
use crate::runtime::pool::Pool;
use crate::runtime::service::Service;
use http::{HeaderValue, Method};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One version of one route, ready to serve.
pub struct Route {
    /// Name used in logs, metrics and the admin API.
    pub name: Arc<str>,
    /// Settings this version was deployed with.
    pub spec: RouteSpec,
    /// The component serving this route.
    pub handler: Arc<Handler>,
    /// Version number within the route's history, from 1.
    pub version: u32,
    /// When this version was loaded.
    pub loaded_at: SystemTime,
    /// The registry reference the component was pulled from, pinned to
    /// the manifest digest its tag resolved to; `None` for a file or an
    /// upload. Set by [`Route::set_source`].
    pub source: Option<Arc<crate::config::reference::Reference>>,
    /// Keeps `source`'s manifest and tag in the disk cache while this
    /// version is loaded.
    source_pin: Option<crate::services::disk_cache::Pin>,
    /// The capability contexts its requests share.
    pub capabilities: Arc<Capabilities>,
    /// `x-trellis-component` value: `route@digest-prefix`.
    pub label: HeaderValue,
    /// Caps requests in flight at `limits.max_concurrency`. Shared by all
    /// requests on the route, and by successive versions with the same
    /// limits, so a swap does not hand out a fresh set of slots.
    slots: Arc<Semaphore>,
    /// Caps this route's guests in the slow lane; shared by its versions
    /// like `slots`.
    pub slow_slots: Arc<Semaphore>,
    /// This version's warm instances, when the route has `reuse`. Never
    /// shared: each version (and each route) starts with an empty pool.
    pub pool: Option<Arc<Pool>>,
    /// This version's WASI 0.3 instances, when its component is a 0.3
    /// handler: made on the first request, which brings the engine and the
    /// instance budget.
    service: OnceLock<Service>,
    /// This route's metric series, resolved on first use.
    metrics: OnceLock<Arc<RouteMetrics>>,
}

impl Route {
    /// Version `version` of the route `spec`, serving `handler` on
    /// `services`, its instances counted in `budget`. It shares
    /// `previous`'s concurrency slots when the limits are unchanged.
    pub fn new(
        spec: RouteSpec,
        handler: Arc<Handler>,
        version: u32,
        previous: Option<&Route>,
        services: &Services,
        budget: &Budget,
    ) -> Route {
        let label = format!("{}@{}", spec.name, &handler.digest[..12]);
        let slots = match previous {
            Some(prev) if prev.spec.limits.max_concurrency == spec.limits.max_concurrency => {
                prev.slots.clone()
            }
            _ => Arc::new(Semaphore::new(spec.limits.max_concurrency as usize)),
        };
        let slow_slots = previous.map_or_else(
            || Arc::new(Semaphore::new(SLOW_PER_ROUTE)),
            |prev| prev.slow_slots.clone(),
        );
        // WASI 0.3 instances live in their `service`, not a pool.
        let pool = match handler.pre {
            HandlerPre::P2(_) => spec.reuse.map(|reuse| {
                let pool = Arc::new(Pool::new(reuse));
                budget.keep(&pool);
                pool
            }),
            HandlerPre::P3(_) => None,
        };
        Route {
            name: spec.name.as_str().into(),
            label: HeaderValue::from_str(&label).unwrap_or(HeaderValue::from_static("invalid")),
            handler,
            version,
            capabilities: Arc::new(Capabilities::new(services, &spec)),
            loaded_at: SystemTime::now(),
            source: None,
            source_pin: None,
            slots,
            slow_slots,
            pool,
            service: OnceLock::new(),
            spec,
            metrics: OnceLock::new(),
        }
    }

    /// Records that the component came from `source` (pinned to its
    /// manifest digest), and keeps what loading it again reads from the
    /// disk cache there while this version is loaded.
    pub fn set_source(
        &mut self,
        source: Option<Arc<crate::config::reference::Reference>>,
        services: &Services,
    ) {
        self.source_pin = source
            .as_ref()
            .map(|s| services.registries.pin(s, &self.handler.digest));
        self.source = source;
    }

    /// This route's series of `metrics`.
    pub fn metrics(&self, metrics: &Metrics) -> &Arc<RouteMetrics> {
        self.metrics
            .get_or_init(|| Arc::new(metrics.route(&self.name)))
    }

    /// This version stopped serving (swapped out or removed): its idle
    /// instances go now, busy ones when their requests finish.
    pub fn retire(&self) {
        if let Some(pool) = &self.pool {
            pool.retire();
        }
        if let Some(service) = self.service.get() {
            service.retire();
        }
    }

    /// The WASI 0.3 service of this version, `None` for a WASI 0.2
    /// handler; its instances run on `engine` within `budget`.
    pub fn service(
        &self,
        engine: &wasmtime::Engine,
        budget: &Arc<Budget>,
        metrics: &Metrics,
    ) -> Option<&Service> {
        if !matches!(self.handler.pre, HandlerPre::P3(_)) {
            return None;
        }
        Some(self.service.get_or_init(|| {
            Service::new(
                engine.clone(),
                self.handler.clone(),
                self.spec.limits,
                self.spec.reuse,
                budget.clone(),
                self.metrics(metrics).clone(),
                self.probe_context(),
            )
        }))
    }

    /// This version serves again (rolled back to).
    pub fn reinstate(&self) {
        if let Some(pool) = &self.pool {
            pool.reinstate();
        }
    }

    /// The capability context for one request on this route, by the
    /// caller `identity` when the route has `auth`.
    pub fn guest_context(
        &self,
        request_id: Arc<str>,
        trace: Arc<TraceContext>,
        identity: Option<Arc<crate::services::auth::Identity>>,
    ) -> GuestContext {
        let (route, component) = (self.name.clone(), self.handler.digest.clone());
        GuestContext::new(
            self.capabilities.clone(),
            route,
            component,
            request_id,
            trace,
            identity,
        )
    }

    /// The capability context for a readiness probe on this route.
    pub fn probe_context(&self) -> GuestContext {
        let (route, component) = (self.name.clone(), self.handler.digest.clone());
        GuestContext::probe(self.capabilities.clone(), route, component)
    }

    /// Whether `method` is served here.
    pub fn allows(&self, method: &Method) -> bool {
        self.spec
            .methods
            .as_ref()
            .is_none_or(|m| m.contains(method))
    }

    /// The `Allow` header for a 405.
    pub fn allow_header(&self) -> String {
        match &self.spec.methods {
            Some(methods) => methods
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", "),
            None => "*".to_owned(),
        }
    }

    /// Waits up to `queue_timeout` for a slot; `None` means overloaded.
    pub async fn admit(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Some(permit);
        }
        let wait: Duration = self.spec.limits.queue_timeout.0;
        tokio::time::timeout(wait, self.slots.clone().acquire_owned())
            .await
            .ok()?
            .ok()
    }
}

/// All routes, matched by path. Immutable: changes build a new table.
#[derive(Default)]
pub struct RouteTable {
    paths: matchit::Router<usize>,
    routes: Vec<Arc<Route>>,
}

impl RouteTable {
    /// Adds `route` at its path.
    pub fn insert(&mut self, route: Arc<Route>) -> Result<(), matchit::InsertError> {
        self.paths.insert(&route.spec.path, self.routes.len())?;
        self.routes.push(route);
        Ok(())
    }

    /// The route whose pattern matches `path`.
    pub fn lookup(&self, path: &str) -> Option<&Arc<Route>> {
        let matched = self.paths.at(path).ok()?;
        self.routes.get(*matched.value)
    }

    /// The route named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| &*r.name == name)
    }

    /// Every route, in manifest order (routes added later come last).
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.iter()
    }
}
