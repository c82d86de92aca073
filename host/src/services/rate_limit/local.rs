//! The in-process backend: each bucket's TAT in a sharded map.
//!
//! Used alone without `[redis]`, and as the fallback while Redis is
//! unavailable. Sharding keeps concurrent checks on different keys from
//! queueing on one lock; the locks are held only for a map operation,
//! never across an await.

use super::gcra::{Gcra, Step};
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::Instant;

/// Shards per map: a few per core is enough to make contention rare.
const SHARDS: usize = 32;

/// A shard is swept of idle buckets once it holds this many entries, and
/// after each sweep once it has doubled again.
const SWEEP_FLOOR: usize = 1024;

/// Buckets by key. Memory stays proportional to the keys that were busy
/// within the last window: a bucket whose TAT has passed is the same as
/// one never seen, so sweeps drop it.
pub(crate) struct LocalBuckets {
    shards: Box<[Mutex<Shard>]>,
    hasher: std::hash::RandomState,
    /// The zero of this backend's clock; monotonic, so a wall-clock step
    /// cannot refill or drain buckets.
    epoch: Instant,
}

#[derive(Default)]
struct Shard {
    /// Key to TAT, in µs since `epoch`.
    tats: HashMap<Box<str>, u64>,
    /// Size at which the next sweep runs.
    sweep_at: usize,
}

impl LocalBuckets {
    /// An empty map.
    pub(crate) fn new() -> LocalBuckets {
        LocalBuckets {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: std::hash::RandomState::new(),
            epoch: Instant::now(),
        }
    }

    /// Microseconds on this backend's clock.
    pub(crate) fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// One check of `key` under `gcra` at `now`.
    pub(crate) fn check(&self, gcra: &Gcra, key: &str, now: u64) -> Step {
        let shard = &self.shards[self.hasher.hash_one(key) as usize % SHARDS];
        let mut shard = shard
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let step = gcra.step(shard.tats.get(key).copied(), now);
        if step.allowed {
            match shard.tats.get_mut(key) {
                Some(tat) => *tat = step.tat,
                None => {
                    shard.tats.insert(key.into(), step.tat);
                    shard.sweep_if_large(now);
                }
            }
        }
        step
    }

    /// Buckets held, across shards (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().expect("not poisoned").tats.len())
            .sum()
    }
}

impl Shard {
    /// Drops idle buckets once the shard has grown enough that the sweep's
    /// cost is spread over the inserts since the last one.
    fn sweep_if_large(&mut self, now: u64) {
        if self.tats.len() < self.sweep_at.max(SWEEP_FLOOR) {
            return;
        }
        self.tats.retain(|_, tat| *tat > now);
        self.sweep_at = self.tats.len() * 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn keys_are_separate_and_idle_ones_are_swept() {
        let buckets = LocalBuckets::new();
        let gcra = Gcra::new(2, Duration::from_secs(1));
        let allowed = |key: &str, now| buckets.check(&gcra, key, now).allowed;
        assert!(allowed("a", 0) && allowed("a", 0) && !allowed("a", 0));
        assert!(allowed("b", 0), "another key has its own bucket");

        // Many keys, one per millisecond, each idle half a second after
        // its check: the map keeps no more than a sweep's worth per shard.
        let inserted = SHARDS * SWEEP_FLOOR * 4;
        for i in 0..inserted {
            assert!(allowed(&format!("k{i}"), 10_000_000 + i as u64 * 1_000));
        }
        let held = buckets.len();
        assert!(
            held <= SHARDS * SWEEP_FLOOR,
            "{held} of {inserted} buckets held; idle ones should have been swept"
        );
    }
}
