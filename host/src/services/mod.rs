//! Services shared by every route: the database and its pool, the tiered
//! cache, Redis, the rate limiter, the auth policies, the upstreams
//! guests call and the OCI registries components come from.
//!
//! Owns the connections and the state that outlives a request. Calls
//! [`crate::config`] and [`crate::observability`]; knows nothing of
//! guests, routes or HTTP.

pub mod auth;
pub mod cache;
pub mod database;
pub mod disk_cache;
pub mod jobs;
pub mod rate_limit;
pub mod redis;
pub mod registry;
pub mod upstreams;

use self::redis::Redis;
use crate::config::env::Env;
use crate::config::manifest::{Cors, Manifest};
use crate::observability::guest_metrics::GuestMetrics;
use crate::observability::metrics::Metrics;
use cache::Cache;
use database::Database;
use rate_limit::RateLimiter;
use std::sync::Arc;
use std::time::Duration;
use upstreams::Upstreams;

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
    pub guest_metrics: Arc<GuestMetrics>,
    /// The `[upstreams]`, each with its pooled client and breaker.
    pub upstreams: Arc<Upstreams>,
    /// The `[auth]` policies.
    pub auth: Arc<auth::Authenticator>,
    /// Background jobs: the store behind `queue`, workers and schedules.
    pub jobs: Arc<jobs::Jobs>,
    /// The OCI registries `oci://` components are pulled from.
    pub registries: Arc<registry::Registries>,
    /// The cache directory (precompiled components, pulled blobs), kept
    /// under `[server] cache_dir_max_size`.
    pub disk_cache: Arc<disk_cache::DiskCache>,
    /// `[cors]`: the rules of every route that sets none, those the admin
    /// API creates included.
    pub cors: Option<Arc<Cors>>,
}

impl Services {
    /// Waits, boundedly, for the first attempts to reach Redis: the shared
    /// connection and the cache's invalidation subscription. A host whose
    /// Redis is up then uses it from its first request instead of serving
    /// those from in-process state; one whose Redis is down starts anyway
    /// and keeps connecting in the background.
    pub async fn reach_redis(&self) {
        let Some(redis) = &self.redis else { return };
        let attempts =
            async { tokio::join!(redis.first_attempt(), self.cache.invalidations_attempted()) };
        let _ = tokio::time::timeout(redis.connect_timeout() * 2, attempts).await;
    }

    /// The services `manifest` configures. The database connects on first
    /// use; Redis connects in the background (call within the runtime).
    pub fn new(manifest: &Manifest, env: &Env) -> anyhow::Result<Services> {
        let redis = match (&env.redis_url, &manifest.redis) {
            (Some(url), settings) => {
                let timeout = settings
                    .as_ref()
                    .map_or(Duration::from_millis(250), |r| r.timeout.0);
                Some(Redis::start(url, timeout)?)
            }
            (_, Some(settings)) => Some(Redis::start(settings.url.get_ref(), settings.timeout.0)?),
            (_, None) => None,
        };
        let metrics = Arc::new(Metrics::new());
        let database = Arc::new(Database::new(
            manifest,
            env.database_url.as_deref(),
            &metrics,
        ));
        let cache = Cache::new(
            manifest.cache.memory.0,
            usize::try_from(manifest.cache.max_value.0).unwrap_or(usize::MAX),
            redis.clone(),
            &metrics,
        );
        let rate_limiter = Arc::new(RateLimiter::new(manifest, redis.clone(), &metrics));
        let upstreams = Arc::new(Upstreams::new(manifest, &metrics)?);
        let auth = Arc::new(auth::Authenticator::new(manifest, Some(database.clone()))?);
        // Jobs live in Redis Streams when Redis is configured, in the
        // database otherwise (DESIGN.md, `queue`).
        let store: Arc<dyn jobs::JobStore> = match &redis {
            Some(redis) => {
                let prefix = manifest
                    .redis
                    .as_ref()
                    .map_or(jobs::redis::DEFAULT_PREFIX, |r| r.jobs_prefix.get_ref());
                Arc::new(jobs::redis::RedisStore::new(redis.clone(), prefix))
            }
            None => Arc::new(jobs::sql::SqlStore::new(database.clone())),
        };
        let jobs = Arc::new(jobs::Jobs::new(manifest, store, &metrics));
        let disk_cache = disk_cache::DiskCache::with_metrics(
            manifest.cache_dir(env),
            manifest.server.cache_dir_max_size.0,
            &metrics,
        );
        let registries = Arc::new(registry::Registries::new(
            &manifest.registries,
            disk_cache.clone(),
            manifest.server.max_component_size.0,
        )?);
        Ok(Services {
            cors: manifest
                .cors
                .as_ref()
                .map(|c| Arc::new(c.get_ref().clone())),
            registries,
            disk_cache,
            jobs,
            upstreams,
            auth,
            database,
            redis,
            cache,
            guest_metrics: Arc::new(GuestMetrics::new(metrics.clone())),
            metrics,
            rate_limiter,
        })
    }
}
