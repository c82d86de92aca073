//! Rate limiting: the named policies of `[rate_limits]`, decided by GCRA
//! ([`gcra`]), counted in Redis when `[redis]` is configured so every host
//! shares one count, and in process otherwise.
//!
//! Two callers share the policies but never a bucket: the host's
//! per-route limits ([`crate::http::rate_limit`], keyed by client IP, a header or the whole
//! route, and decided before a component is instantiated) and the guest
//! `rate-limit` capability (keyed by whatever the guest chooses). Bucket
//! keys are `{policy}:route:{route}:{client}` and `{policy}:guest:{key}`.
//!
//! While Redis is unavailable (down, slow, or skipped by its breaker) each
//! host falls back to its in-process buckets: requests keep being served
//! under per-host limits rather than all refused, or all let through
//! unlimited. So during an outage N hosts allow up to N times a policy's
//! rate; the fallback is logged once when it starts and once when it ends,
//! and counted in `trellis_rate_limit_redis_fallbacks_total`.

mod gcra;
mod local;
mod shared;

use crate::config::manifest::{KeySource, Manifest};
use crate::observability::metrics::Metrics;
use crate::services::redis::Redis;
use arc_swap::ArcSwap;
use gcra::Gcra;
use local::LocalBuckets;
use prometheus::{IntCounter, IntCounterVec, Opts};
use shared::SharedBuckets;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed; if so it was counted.
    pub allowed: bool,
    /// The policy's requests per window.
    pub limit: u32,
    /// Requests that could still be made at once after this one.
    pub remaining: u32,
    /// Time until the bucket is full again (the whole limit available).
    pub reset: Duration,
    /// When refused, the time until a request would be allowed; zero when
    /// allowed.
    pub retry_after: Duration,
}

/// A check named a policy the manifest does not define.
#[derive(Debug, thiserror::Error)]
#[error("rate limit check: no policy {0:?} in [rate_limits]")]
pub struct UnknownPolicy(pub String);

/// One `[rate_limits.NAME]` policy, ready to decide.
#[derive(Debug, Clone)]
struct Policy {
    gcra: Gcra,
    /// What the host's per-route limit counts requests by.
    key: KeySource,
}

/// The host's rate limiter; one per process, shared by every route and
/// guest.
pub struct RateLimiter {
    /// Policies by name: replaced whole when watch mode reloads the
    /// manifest, so a check sees one consistent set.
    policies: ArcSwap<HashMap<String, Policy>>,
    /// The in-process buckets: the only ones without Redis, the fallback
    /// with it. Lives as long as the process.
    local: LocalBuckets,
    /// The Redis buckets, when `[redis]` is configured.
    shared: Option<SharedBuckets>,
    /// `trellis_rate_limit_decisions_total{policy, outcome}`.
    decisions: IntCounterVec,
    /// `trellis_rate_limit_redis_fallbacks_total`.
    fallbacks: IntCounter,
    /// Whether the last shared check fell back to `local`: the outage's
    /// start and end are each logged once.
    falling_back: AtomicBool,
}

impl RateLimiter {
    /// The limiter for `manifest`'s policies, counting in `redis` when
    /// given, with its counters in `metrics`.
    pub fn new(manifest: &Manifest, redis: Option<Arc<Redis>>, metrics: &Metrics) -> RateLimiter {
        let decisions = metrics.register(
            &IntCounterVec::new(
                Opts::new(
                    "trellis_rate_limit_decisions_total",
                    "Rate-limit checks, per-route and guest, by policy and outcome (allowed, refused).",
                ),
                &["policy", "outcome"],
            )
            .expect("valid metric"),
        );
        let fallbacks = metrics.register(
            &IntCounter::new(
                "trellis_rate_limit_redis_fallbacks_total",
                "Rate-limit checks counted in process because Redis was unavailable.",
            )
            .expect("valid metric"),
        );
        RateLimiter {
            policies: ArcSwap::from_pointee(policies(manifest)),
            local: LocalBuckets::new(),
            shared: redis.map(SharedBuckets::new),
            decisions,
            fallbacks,
            falling_back: AtomicBool::new(false),
        }
    }

    /// Adopts the policies of a reloaded manifest. Buckets are kept: a
    /// policy whose numbers changed carries on from its current state.
    pub fn set_policies(&self, manifest: &Manifest) {
        self.policies.store(Arc::new(policies(manifest)));
    }

    /// Counts one request against `policy` for `key` (which the caller
    /// namespaces), if the policy allows it.
    pub async fn check(&self, policy: &str, key: &str) -> Result<Decision, UnknownPolicy> {
        let Some(gcra) = self.policies.load().get(policy).map(|p| p.gcra) else {
            return Err(UnknownPolicy(policy.to_owned()));
        };
        let bucket = format!("{policy}:{key}");
        let decision = self.decide(&gcra, &bucket).await;
        let outcome = if decision.allowed {
            "allowed"
        } else {
            "refused"
        };
        self.decisions.with_label_values(&[policy, outcome]).inc();
        Ok(decision)
    }

    /// The guest capability's check: the guest's keys live apart from the
    /// host's per-route buckets.
    pub async fn check_guest(&self, policy: &str, key: &str) -> Result<Decision, UnknownPolicy> {
        self.check(policy, &format!("guest:{key}")).await
    }

    pub(crate) fn key_source(&self, policy: &str) -> Option<KeySource> {
        self.policies.load().get(policy).map(|p| p.key.clone())
    }

    async fn decide(&self, gcra: &Gcra, bucket: &str) -> Decision {
        if let Some(shared) = &self.shared {
            match shared.check(gcra, bucket).await {
                Ok(outcome) => {
                    if self.falling_back.swap(false, Ordering::Relaxed) {
                        tracing::info!("rate limits: redis is back; counting shared again");
                    }
                    return gcra.decision(outcome.allowed, outcome.ahead);
                }
                Err(err) => {
                    self.fallbacks.inc();
                    if !self.falling_back.swap(true, Ordering::Relaxed) {
                        tracing::warn!(cause = %err, "rate limits: redis unavailable; counting in process (per host) until it returns");
                    }
                }
            }
        }
        let now = self.local.now();
        let step = self.local.check(gcra, bucket, now);
        gcra.decision(step.allowed, step.tat - now)
    }
}

fn policies(manifest: &Manifest) -> HashMap<String, Policy> {
    manifest
        .rate_limits
        .iter()
        .filter_map(|(name, policy)| {
            // The manifest was validated, so this only skips what a future
            // key syntax might add.
            let key = policy
                .key_source()
                .inspect_err(|err| tracing::error!(policy = %name, cause = %err, "rate limit policy skipped"))
                .ok()?;
            let gcra = Gcra::new(policy.requests, policy.window.0);
            Some((name.clone(), Policy { gcra, key }))
        })
        .collect()
}

#[cfg(test)]
mod tests;
