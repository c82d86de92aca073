//! The tiered cache behind the `cache` capability and the response cache:
//! an in-process tier (L1, bounded by bytes) on every host in front of the
//! shared Redis (L2) when one is configured.
//!
//! - A read tries L1, then L2, copying an L2 hit into L1 for the rest of
//!   its TTL.
//! - A write or delete goes to both tiers and is announced on a Redis
//!   channel, so every other host drops its L1 copy ([`invalidate`]).
//! - With Redis down the cache is L1 only: requests still succeed, and
//!   readiness reports Redis as failed.
//! - `get-or-fill` gives exactly one caller per key the job of computing a
//!   missing value, across hosts (a Redis lock) and within one (a map of
//!   fills in flight); the others wait for its value ([`fill`]).

mod fill;
mod invalidate;

pub use fill::{Fill, Lookup};

use crate::services::redis::Redis;
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Redis key prefix of cached values.
const VALUE_PREFIX: &str = "trellis:cache:";

/// Which tier answered a read, for metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// In process.
    L1,
    /// Redis.
    L2,
}

/// A cached value and when it expires.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The value.
    pub value: Bytes,
    /// When it was stored (on whichever host stored it, as far as known).
    pub stored: Instant,
    /// When it expires.
    pub expires: Instant,
}

impl Entry {
    /// Time left before it expires.
    pub fn remaining(&self) -> Duration {
        self.expires.saturating_duration_since(Instant::now())
    }
}

/// Per-entry TTLs for the in-process tier.
struct PerEntryTtl;

impl moka::Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _key: &String, value: &Entry, _at: Instant) -> Option<Duration> {
        Some(value.remaining())
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &Entry,
        _at: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.remaining())
    }
}

/// The tiered cache, one per host.
pub struct Cache {
    l1: moka::future::Cache<String, Entry>,
    redis: Option<Arc<Redis>>,
    max_value: usize,
    fills: fill::InFlight,
    /// Tells this host's own invalidations apart on the channel.
    host_id: String,
    /// Set once the first attempt to subscribe to invalidations has ended.
    subscription_attempted: tokio::sync::watch::Sender<bool>,
    /// `trellis_cache_requests_total{tier, outcome}`.
    lookups: prometheus::IntCounterVec,
}

/// A value the cache refuses.
#[derive(Debug, thiserror::Error)]
#[error("value of {size} bytes exceeds the cache's limit of {limit}")]
pub struct TooLarge {
    /// The value's size.
    pub size: usize,
    /// The limit.
    pub limit: usize,
}

impl Cache {
    /// A cache holding at most `memory` bytes in process and values of at
    /// most `max_value` bytes, backed by `redis` when given (then also
    /// subscribing to invalidations; call within the runtime).
    pub fn new(
        memory: u64,
        max_value: usize,
        redis: Option<Arc<Redis>>,
        metrics: &crate::observability::metrics::Metrics,
    ) -> Arc<Cache> {
        let lookups = metrics.register(
            &prometheus::IntCounterVec::new(
                prometheus::Opts::new(
                    "trellis_cache_requests_total",
                    "Cache reads by tier (l1, l2) and outcome (hit, miss).",
                ),
                &["tier", "outcome"],
            )
            .expect("valid metric"),
        );
        let l1 = moka::future::Cache::builder()
            .max_capacity(memory)
            .weigher(|key: &String, entry: &Entry| {
                u32::try_from(key.len() + entry.value.len() + 64).unwrap_or(u32::MAX)
            })
            .expire_after(PerEntryTtl)
            .build();
        let host_id = format!("{:016x}", crate::ids::random_u64());
        let cache = Arc::new(Cache {
            l1,
            redis,
            max_value,
            fills: fill::InFlight::default(),
            host_id,
            subscription_attempted: tokio::sync::watch::Sender::new(false),
            lookups,
        });
        if let Some(redis) = &cache.redis {
            invalidate::subscribe(Arc::downgrade(&cache), redis.clone());
        }
        cache
    }

    /// Waits until the first attempt to subscribe to the other hosts'
    /// invalidations has ended; at once without Redis.
    pub async fn invalidations_attempted(&self) {
        if self.redis.is_some() {
            invalidate::first_attempt(self).await;
        }
    }

    /// Largest value the cache accepts.
    pub fn max_value(&self) -> usize {
        self.max_value
    }

    /// The entry under `key` (already namespaced), from the nearest tier.
    pub async fn get(&self, key: &str) -> Option<(Entry, Tier)> {
        if let Some(entry) = self.l1.get(key).await {
            self.count(Tier::L1, true);
            return Some((entry, Tier::L1));
        }
        self.count(Tier::L1, false);
        let redis = self.redis.as_ref()?;
        let redis_key = format!("{VALUE_PREFIX}{key}");
        let found: Result<(Option<Vec<u8>>, i64), _> = redis
            .call(|mut conn| async move {
                redis::pipe()
                    .get(&redis_key)
                    .pttl(&redis_key)
                    .query_async(&mut conn)
                    .await
            })
            .await;
        match found {
            Ok((Some(value), ttl_ms)) if ttl_ms > 0 => {
                self.count(Tier::L2, true);
                let now = Instant::now();
                let entry = Entry {
                    value: value.into(),
                    stored: now,
                    expires: now + Duration::from_millis(ttl_ms as u64),
                };
                self.l1.insert(key.to_owned(), entry.clone()).await;
                Some((entry, Tier::L2))
            }
            Ok(_) => {
                self.count(Tier::L2, false);
                None
            }
            Err(_) => None,
        }
    }

    /// Stores `value` under `key` for `ttl` in both tiers and tells the
    /// other hosts to drop their copies.
    pub async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), TooLarge> {
        if value.len() > self.max_value {
            return Err(TooLarge {
                size: value.len(),
                limit: self.max_value,
            });
        }
        let now = Instant::now();
        let entry = Entry {
            value: value.clone(),
            stored: now,
            expires: now + ttl,
        };
        self.l1.insert(key.to_owned(), entry).await;
        if let Some(redis) = &self.redis {
            let redis_key = format!("{VALUE_PREFIX}{key}");
            let ttl_ms = ttl.as_millis().max(1) as u64;
            let message = invalidate::message(&self.host_id, key);
            let _ = redis
                .call(|mut conn| async move {
                    redis::pipe()
                        .set_options(
                            &redis_key,
                            value.as_ref(),
                            redis::SetOptions::default()
                                .with_expiration(redis::SetExpiry::PX(ttl_ms)),
                        )
                        .ignore()
                        .publish(invalidate::CHANNEL, message)
                        .ignore()
                        .query_async::<()>(&mut conn)
                        .await
                })
                .await;
        }
        Ok(())
    }

    /// Removes `key` from both tiers on every host; whether it was cached.
    pub async fn delete(&self, key: &str) -> bool {
        let local = self.l1.remove(key).await.is_some();
        let Some(redis) = &self.redis else {
            return local;
        };
        let redis_key = format!("{VALUE_PREFIX}{key}");
        let message = invalidate::message(&self.host_id, key);
        let removed: Result<(i64,), _> = redis
            .call(|mut conn| async move {
                redis::pipe()
                    .del(&redis_key)
                    .publish(invalidate::CHANNEL, message)
                    .ignore()
                    .query_async(&mut conn)
                    .await
            })
            .await;
        local || removed.is_ok_and(|(n,)| n > 0)
    }

    /// The value under `key`, or the [`Fill`] that makes the caller the
    /// one to compute it; see [`fill`].
    pub async fn get_or_fill(self: &Arc<Self>, key: &str, wait: Duration) -> Lookup {
        fill::get_or_fill(self, key, wait).await
    }

    fn count(&self, tier: Tier, hit: bool) {
        let tier = match tier {
            Tier::L1 => "l1",
            Tier::L2 => "l2",
        };
        let outcome = if hit { "hit" } else { "miss" };
        self.lookups.with_label_values(&[tier, outcome]).inc();
    }

    /// Drops this host's copy of `key` (another host changed it).
    async fn forget(&self, key: &str) {
        self.l1.invalidate(key).await;
    }

    /// Drops every in-process copy (after missing invalidations).
    fn forget_all(&self) {
        self.l1.invalidate_all();
    }
}
