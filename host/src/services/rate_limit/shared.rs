//! The Redis backend: every host counts in the same buckets, in one round
//! trip per check (`gcra.lua`, run atomically by Redis).

use super::gcra::Gcra;
use crate::services::redis::{Redis, Unavailable};
use std::sync::Arc;

/// Prefix of every bucket key, so rate limits never collide with the
/// cache or anything else sharing the Redis.
pub(crate) const KEY_PREFIX: &str = "trellis:rl:";

/// Buckets kept in the shared Redis.
pub(crate) struct SharedBuckets {
    redis: Arc<Redis>,
    /// Sent as EVALSHA, loaded on the first NOSCRIPT (a fresh or restarted
    /// Redis).
    script: redis::Script,
}

/// What the script reports: whether the check was allowed, and how far
/// the bucket's TAT is now ahead of Redis's clock, in µs.
pub(crate) struct Outcome {
    pub(crate) allowed: bool,
    pub(crate) ahead: u64,
}

impl SharedBuckets {
    pub(crate) fn new(redis: Arc<Redis>) -> SharedBuckets {
        SharedBuckets {
            redis,
            script: redis::Script::new(include_str!("gcra.lua")),
        }
    }

    /// One check of `key` (already namespaced by policy) under `gcra`.
    pub(crate) async fn check(&self, gcra: &Gcra, key: &str) -> Result<Outcome, Unavailable> {
        let redis_key = format!("{KEY_PREFIX}{key}");
        let (allowed, ahead): (i64, i64) = self
            .redis
            .call(|mut conn| {
                let mut invocation = self.script.key(redis_key);
                invocation.arg(gcra.interval_us()).arg(gcra.window_us());
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        Ok(Outcome {
            allowed: allowed == 1,
            ahead: u64::try_from(ahead).unwrap_or(0),
        })
    }
}
