//! Readiness: what `GET /health/ready` (and `/health`) reports.
//!
//! A failed check is *hard* or *soft*. Hard: the database (once opened)
//! and each component's own check; the host cannot serve those requests,
//! so readiness answers 503 and a load balancer should send traffic
//! elsewhere. Soft: Redis, which the host degrades around (the cache falls
//! back to its in-process tier, rate limits to local buckets); readiness
//! stays 200 with `"status":"degraded"` and the check `failed`, so that
//! replicas sharing one Redis are not all dropped at once when it fails.
//! An upstream whose circuit breaker is open (`upstream:NAME`) is soft
//! too: the routes calling it fail fast, the rest serve.
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
use crate::services::upstreams::breaker::State as BreakerState;
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
    /// Whether every hard check passed: the host can serve (200), perhaps
    /// degraded by a soft failure. `false` answers 503.
    #[serde(skip)]
    pub ready: bool,
}

impl Report {
    /// Builds the report from the checks; `soft` names the checks whose
    /// failure degrades the host without making it unready.
    fn new(checks: BTreeMap<String, Check>, soft: &[&str]) -> Report {
        let ok = checks.values().all(|c| c.status == "ok");
        let is_soft = |name: &str| soft.contains(&name) || name.starts_with(UPSTREAM_CHECK_PREFIX);
        let ready = checks
            .iter()
            .all(|(name, c)| c.status == "ok" || is_soft(name));
        Report {
            status: if ok { "ok" } else { "degraded" },
            checks,
            ready,
        }
    }

    /// Whether the host is ready: every hard check passed.
    pub fn is_ready(&self) -> bool {
        self.ready
    }
}

/// Checks whose failure the host degrades around (besides every
/// `upstream:NAME`).
const SOFT_CHECKS: &[&str] = &["redis"];

/// Upstream breaker checks are named `upstream:NAME`.
const UPSTREAM_CHECK_PREFIX: &str = "upstream:";

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
        // in-process tier), so it is a soft check, but an operator must
        // see it.
        let check = timed("redis", async { redis.ping().await }).await;
        checks.insert("redis".to_owned(), check);
    }
    for upstream in app.services.upstreams.iter() {
        // No request is sent: the breaker already knows whether calls
        // fail, and probing a paid API from every health check would cost.
        let open = upstream.breaker_state() != BreakerState::Closed;
        if open {
            tracing::warn!(check = %format!("{UPSTREAM_CHECK_PREFIX}{}", upstream.spec.name), state = upstream.breaker_state().as_str(), "readiness: upstream circuit breaker is not closed");
        }
        let check = Check {
            status: if open { "failed" } else { "ok" },
            latency_ms: 0.0,
        };
        checks.insert(
            format!("{UPSTREAM_CHECK_PREFIX}{}", upstream.spec.name),
            check,
        );
    }
    for route in routes.iter() {
        let name = format!("component:{}", route.name);
        let check = timed(&name, async {
            // Like a request, a check needs an instance slot.
            // (Idle kept instances give theirs up first.)
            let _slot = app.budget.slot_within(None).await;
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
    Report::new(checks, SOFT_CHECKS)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn checks(failed: &[&str]) -> BTreeMap<String, Check> {
        ["database", "redis", "component:a"]
            .into_iter()
            .map(|name| {
                let status = if failed.contains(&name) {
                    "failed"
                } else {
                    "ok"
                };
                let check = Check {
                    status,
                    latency_ms: 0.0,
                };
                (name.to_owned(), check)
            })
            .collect()
    }

    #[test]
    fn only_hard_failures_make_the_host_unready() {
        let all_ok = Report::new(checks(&[]), SOFT_CHECKS);
        assert_eq!((all_ok.status, all_ok.is_ready()), ("ok", true));
        let mut open = checks(&[]);
        open.insert(
            "upstream:payments".into(),
            Check {
                status: "failed",
                latency_ms: 0.0,
            },
        );
        let open = Report::new(open, SOFT_CHECKS);
        assert_eq!((open.status, open.is_ready()), ("degraded", true));
        let redis_down = Report::new(checks(&["redis"]), SOFT_CHECKS);
        assert_eq!(
            (redis_down.status, redis_down.is_ready()),
            ("degraded", true)
        );
        for hard in [&["database"][..], &["component:a"], &["redis", "database"]] {
            let report = Report::new(checks(hard), SOFT_CHECKS);
            assert_eq!(
                (report.status, report.is_ready()),
                ("degraded", false),
                "{hard:?}"
            );
        }
    }
}
