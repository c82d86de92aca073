//! `get-or-fill`: when a value is missing, exactly one caller computes it
//! while the others wait for its result instead of stampeding the
//! database.
//!
//! Within a host, the first caller registers a fill in flight and later
//! callers watch it. Across hosts, the first host's filler also takes a
//! Redis lock (`SET NX PX`) and reads the shared tier once more under it
//! (the previous holder may have just stored the value and let go); fillers
//! on other hosts poll the shared tier for the value instead. A waiter gives up after its `wait` and computes
//! itself; a filler that drops its fill without a value (the guest
//! trapped, say) hands the job to the next waiter at once.

use super::{Cache, Entry, TooLarge};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Redis key prefix of fill locks.
const LOCK_PREFIX: &str = "trellis:fill:";

/// How long a fill lock lives if its holder never releases it (a host
/// that died mid-computation).
const LOCK_TTL: Duration = Duration::from_secs(30);

/// Deletes the lock only if this filler still holds it.
const RELEASE: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

/// What `get-or-fill` found.
pub enum Lookup {
    /// The cached (or just computed) value.
    Hit(Entry),
    /// Nothing cached: the caller computes the value and stores it through
    /// the fill.
    Miss(Fill),
}

#[derive(Clone)]
enum State {
    Pending,
    Done(Entry),
    Abandoned,
}

/// Fills in flight on this host, by key.
#[derive(Default)]
pub(super) struct InFlight(Mutex<HashMap<String, watch::Receiver<State>>>);

/// The job of computing one missing value. Dropping it unused lets the
/// next waiter compute instead.
pub struct Fill {
    cache: Arc<Cache>,
    key: String,
    /// Wakes this host's waiters; `None` for a fill taken after a wait
    /// timed out, which nobody waits on.
    waiters: Option<watch::Sender<State>>,
    /// The Redis lock's token, when this fill holds it.
    lock: Option<String>,
}

impl Fill {
    /// Stores `value` for `ttl` and hands it to the waiters.
    pub async fn set(mut self, value: Bytes, ttl: Duration) -> Result<(), TooLarge> {
        self.cache.set(&self.key, value.clone(), ttl).await?;
        let now = Instant::now();
        self.finish(State::Done(Entry {
            value,
            stored: now,
            expires: now + ttl,
        }));
        Ok(())
    }

    fn finish(&mut self, state: State) {
        if let Some(tx) = self.waiters.take() {
            let mut map = self.cache.fills.0.lock().unwrap_or_else(|p| p.into_inner());
            if map
                .get(&self.key)
                .is_some_and(|rx| rx.same_channel(&tx.subscribe()))
            {
                map.remove(&self.key);
            }
            drop(map);
            tx.send_replace(state);
        }
        if let (Some(token), Some(redis)) = (self.lock.take(), self.cache.redis.clone()) {
            let key = format!("{LOCK_PREFIX}{}", self.key);
            tokio::spawn(async move {
                let _ = redis
                    .call(|mut conn| async move {
                        redis::Script::new(RELEASE)
                            .key(key)
                            .arg(token)
                            .invoke_async::<i64>(&mut conn)
                            .await
                    })
                    .await;
            });
        }
    }
}

impl Drop for Fill {
    fn drop(&mut self) {
        self.finish(State::Abandoned);
    }
}

/// See the module docs.
pub(super) async fn get_or_fill(cache: &Arc<Cache>, key: &str, wait: Duration) -> Lookup {
    let deadline = Instant::now() + wait;
    loop {
        if let Some((entry, _)) = cache.get(key).await {
            return Lookup::Hit(entry);
        }
        let watching = {
            let mut map = cache.fills.0.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(key) {
                Some(rx) if rx.has_changed().is_ok() => Err(rx.clone()),
                _ => {
                    let (tx, rx) = watch::channel(State::Pending);
                    map.insert(key.to_owned(), rx);
                    Ok(tx)
                }
            }
        };
        let tx = match watching {
            Ok(tx) => tx,
            Err(mut rx) => {
                let outcome = tokio::time::timeout_at(
                    deadline.into(),
                    rx.wait_for(|s| !matches!(s, State::Pending)),
                )
                .await;
                match outcome {
                    Ok(Ok(state)) => match &*state {
                        State::Done(entry) => return Lookup::Hit(entry.clone()),
                        _ => continue, // Abandoned: try to become the filler.
                    },
                    Ok(Err(_)) => continue, // The filler vanished.
                    Err(_) => return Lookup::Miss(detached(cache, key)),
                }
            }
        };
        let mut fill = Fill {
            cache: cache.clone(),
            key: key.to_owned(),
            waiters: Some(tx),
            lock: None,
        };
        let Some(redis) = cache.redis.clone() else {
            return Lookup::Miss(fill);
        };
        // This host's filler; now make it the only one across hosts.
        let lock_key = format!("{LOCK_PREFIX}{key}");
        let mut pause = Duration::from_millis(2);
        loop {
            let token = crate::ids::random_hex(64);
            let taken: Result<Option<String>, _> = redis
                .call(|mut conn| {
                    let (lock_key, token) = (lock_key.clone(), token.clone());
                    async move {
                        redis::cmd("SET")
                            .arg(lock_key)
                            .arg(token)
                            .arg("NX")
                            .arg("PX")
                            .arg(LOCK_TTL.as_millis() as u64)
                            .query_async(&mut conn)
                            .await
                    }
                })
                .await;
            match taken {
                Ok(Some(_)) => {
                    fill.lock = Some(token);
                    // Another host may have stored the value and released
                    // its lock between our last read and this SET: read
                    // again under the lock before computing.
                    if let Some((entry, _)) = cache.get(key).await {
                        fill.finish(State::Done(entry.clone()));
                        return Lookup::Hit(entry);
                    }
                    return Lookup::Miss(fill);
                }
                // Redis is down: coordinate within this host only.
                Err(_) => return Lookup::Miss(fill),
                Ok(None) => {} // Another host computes.
            }
            if Instant::now() >= deadline {
                return Lookup::Miss(fill);
            }
            tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
            pause = (pause * 2).min(Duration::from_millis(50));
            if let Some((entry, _)) = cache.get(key).await {
                fill.finish(State::Done(entry.clone()));
                return Lookup::Hit(entry);
            }
        }
    }
}

/// A fill for a caller whose wait ran out: it computes on its own,
/// without taking over the in-flight fill it waited on.
fn detached(cache: &Arc<Cache>, key: &str) -> Fill {
    Fill {
        cache: cache.clone(),
        key: key.to_owned(),
        waiters: None,
        lock: None,
    }
}
