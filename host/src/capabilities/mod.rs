//! Host capabilities offered to guests as `trellis:api` imports, one module
//! per WIT interface. A guest reaches a capability only if it imports the
//! interface, and it may import only what its route grants
//! ([`crate::grants`]).

pub mod cache;
pub mod config;
pub mod log;
pub mod metrics;
pub mod rate_limit;
pub mod sql;

use crate::cache::Cache;
use crate::database::Database;
use crate::manifest::Manifest;
use crate::metrics::Metrics;
use crate::rate_limit::RateLimiter;
use crate::redis::Redis;
use crate::trace::TraceContext;
use config::RouteConfig;
use metrics::GuestMetrics;
use std::sync::Arc;
use std::time::Duration;

/// Host-wide services behind the capabilities, shared by every route.
pub struct Services {
    /// The pool behind `sql`.
    pub database: Arc<Database>,
    /// The shared Redis, when configured.
    pub redis: Option<Arc<Redis>>,
    /// The tiered cache behind `cache` and the response cache.
    pub cache: Arc<Cache>,
    /// What `GET /metrics` reports.
    pub metrics: Arc<Metrics>,
    /// The `[rate_limits]` policies and their buckets, behind both the
    /// per-route limits and `rate-limit`.
    pub rate_limiter: Arc<RateLimiter>,
    /// Guests' own counters and histograms.
    pub guest_metrics: GuestMetrics,
}

impl Services {
    /// The services `manifest` configures. The database connects on first
    /// use; Redis connects in the background (call within the runtime).
    pub fn new(manifest: &Manifest) -> anyhow::Result<Services> {
        let redis = match (std::env::var(crate::redis::URL_ENV), &manifest.redis) {
            (Ok(url), settings) if !url.is_empty() => {
                let timeout = settings
                    .as_ref()
                    .map_or(Duration::from_millis(250), |r| r.timeout.0);
                Some(Redis::start(&url, timeout)?)
            }
            (_, Some(settings)) => Some(Redis::start(settings.url.get_ref(), settings.timeout.0)?),
            (_, None) => None,
        };
        let metrics = Arc::new(Metrics::new());
        let database = Arc::new(Database::new(manifest, &metrics));
        let cache = Cache::new(
            manifest.cache.memory.0,
            usize::try_from(manifest.cache.max_value.0).unwrap_or(usize::MAX),
            redis.clone(),
            &metrics,
        );
        let rate_limiter = Arc::new(RateLimiter::new(manifest, redis.clone(), &metrics));
        Ok(Services {
            database,
            redis,
            cache,
            guest_metrics: GuestMetrics::new(metrics.clone()),
            metrics,
            rate_limiter,
        })
    }
}

/// What one guest instance's capability calls need to know about where
/// they come from: carried in its store, dropped with it.
#[derive(Clone)]
pub struct GuestContext {
    /// Host-wide services.
    pub services: Arc<Services>,
    /// The route's name, for logs.
    pub route: Arc<str>,
    /// The component's digest, for logs.
    pub component: Arc<str>,
    /// The request's id; empty for a readiness probe.
    pub request_id: Arc<str>,
    /// The route's variables and secrets.
    pub config: Arc<RouteConfig>,
    /// The namespace of the route's `cache` keys.
    pub cache_namespace: Arc<str>,
    /// The request's trace: capability calls are its child spans.
    pub trace: Arc<TraceContext>,
}
