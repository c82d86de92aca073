//! Readiness: what `GET /health/ready` (and `/health`) reports.
//!
//! Each loaded component is checked by instantiating it once, fresh,
//! under its route's limits (without calling its handler), so a component
//! that can no longer start (its initial memory exceeds the route's cap,
//! its start function traps) turns the host `degraded` instead of failing
//! every request while readiness says 200. The database (once opened) and
//! Redis (when configured) are pinged too.
//!
//! Results are cached for a second, and concurrent callers share one run,
//! so a storm of health probes costs one round of checks per second.

use crate::app::App;
use crate::runtime::invoke::instantiate_once;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// How long a report is served from cache.
const CACHE_FOR: Duration = Duration::from_secs(1);

/// The longest one check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// One check's outcome. Failure causes go to the log, not the body: the
/// endpoint is public.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// `ok` or `failed`.
    pub status: &'static str,
    /// How long the check took.
    pub latency_ms: f64,
}

/// A readiness report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// `ok` when every check passed, else `degraded`.
    pub status: &'static str,
    /// Checks by name, e.g. `component:hello`.
    pub checks: BTreeMap<String, Check>,
}

impl Report {
    /// Whether every check passed.
    pub fn is_ok(&self) -> bool {
        self.status == "ok"
    }
}

/// The cached last report; lives as long as the app.
#[derive(Default)]
pub struct Readiness {
    last: Mutex<Option<(Instant, Arc<Report>)>>,
}

impl Readiness {
    /// The current report, at most [`CACHE_FOR`] old.
    pub async fn report(&self, app: &App) -> Arc<Report> {
        // Holding the lock while checking makes concurrent callers wait
        // for this run instead of starting their own.
        let mut last = self.last.lock().await;
        if let Some((at, report)) = &*last
            && at.elapsed() < CACHE_FOR
        {
            return report.clone();
        }
        let report = Arc::new(run_checks(app).await);
        *last = Some((Instant::now(), report.clone()));
        report
    }
}

async fn run_checks(app: &App) -> Report {
    let routes = app.routes.load_full();
    let mut checks = BTreeMap::new();
    if app.services.database.opened().is_some() {
        let database = &app.services.database;
        let check = timed("database", async { database.ping().await }).await;
        checks.insert("database".to_owned(), check);
    }
    if let Some(redis) = &app.services.redis {
        // Requests survive a Redis outage (the cache falls back to its
        // in-process tier), but an operator must see it.
        let check = timed("redis", async { redis.ping().await }).await;
        checks.insert("redis".to_owned(), check);
    }
    for route in routes.iter() {
        let name = format!("component:{}", route.name);
        let check = timed(&name, async {
            // Like a request, a check needs an instance slot.
            let _slot = app.instances.clone().acquire_owned().await?;
            instantiate_once(
                &app.engine,
                &route.handler,
                &route.spec.limits,
                route.probe_context(),
            )
            .await
            .map_err(anyhow::Error::from)
        })
        .await;
        checks.insert(name, check);
    }
    let ok = checks.values().all(|c| c.status == "ok");
    Report {
        status: if ok { "ok" } else { "degraded" },
        checks,
    }
}

/// Runs one check under [`CHECK_TIMEOUT`], logging why it failed.
async fn timed(name: &str, check: impl Future<Output = anyhow::Result<()>>) -> Check {
    let started = Instant::now();
    let failure = match tokio::time::timeout(CHECK_TIMEOUT, check).await {
        Ok(Ok(())) => None,
        Ok(Err(err)) => Some(format!("{err:#}")),
        Err(_) => Some(format!("no answer within {CHECK_TIMEOUT:?}")),
    };
    if let Some(cause) = &failure {
        tracing::warn!(check = %name, cause = %cause, "readiness check failed");
    }
    Check {
        status: if failure.is_none() { "ok" } else { "failed" },
        latency_ms: started.elapsed().as_secs_f64() * 1000.0,
    }
}
