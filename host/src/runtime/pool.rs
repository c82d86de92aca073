//! Warm instances for routes that opt in to `reuse`: after a request that
//! ended cleanly, its instance waits here for the next request of the same
//! route version, so that request skips instantiation.
//!
//! One [`Pool`] per route version, never shared between routes or
//! versions. An instance comes back only if its request succeeded, its
//! response body ended cleanly, it left no host resource behind and it has
//! served fewer than `reuse.requests`; it is dropped after `reuse.idle`
//! unused, when its version is swapped out ([`Pool::retire`]), or when the
//! process needs its slot of the instance budget ([`Pool::evict_oldest`]).
//! Every instance, busy or idle, holds one permit of the app's instance
//! budget (the pooling allocator's slots) until it is dropped.

use crate::config::manifest::Reuse;
use crate::observability::metrics::RouteMetrics;
use crate::runtime::store::StoreData;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, OwnedSemaphorePermit};
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::Proxy;

/// The sweeper never wakes more often than this, however short `idle` is.
const MIN_SWEEP: Duration = Duration::from_millis(5);

/// An instance kept for reuse, with its store and its slot of the
/// instance budget. Fields drop in order: the store (freeing its
/// pooling-allocator slot) before the permit that stands for it.
pub struct Warm {
    /// The instance's store; its data is reset for each request.
    pub store: Store<StoreData>,
    /// The instantiated `wasi:http/proxy` world.
    pub proxy: Proxy,
    /// This instance's permit of the app's instance budget.
    pub slot: OwnedSemaphorePermit,
    /// Requests served and the `trellis_instances` gauge it counts in.
    pub tally: Tally,
}

/// Counts one instance in `trellis_instances{state}` while it lives, and
/// records how many requests it served when it goes.
pub struct Tally {
    metrics: Arc<RouteMetrics>,
    idle: bool,
    /// Requests this instance has served (finished).
    pub served: u32,
}

impl Tally {
    /// A new instance, busy with its first request.
    pub fn new(metrics: Arc<RouteMetrics>) -> Tally {
        metrics.instance_busy(true);
        Tally {
            metrics,
            idle: false,
            served: 0,
        }
    }

    /// Moves the instance between `idle` and `busy` in the gauge.
    pub fn set_idle(&mut self, idle: bool) {
        if self.idle != idle {
            self.metrics.instance_idle(idle);
            self.metrics.instance_busy(!idle);
            self.idle = idle;
        }
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        if self.idle {
            self.metrics.instance_idle(false);
        } else {
            self.metrics.instance_busy(false);
        }
        self.metrics.instance_dropped(self.served);
    }
}

/// One route version's idle instances, most recently used last.
pub struct Pool {
    reuse: Reuse,
    state: Mutex<State>,
    /// Told when an instance comes back: a request of this route waiting
    /// for a slot of a full instance budget takes it instead.
    returned: Notify,
}

struct State {
    idle: Vec<(Instant, Warm)>,
    /// False once the version is swapped out: instances are dropped
    /// instead of kept.
    serving: bool,
    /// Whether a sweeper task runs for this pool.
    sweeping: bool,
}

impl Pool {
    /// An empty pool for a route with `reuse`.
    pub fn new(reuse: Reuse) -> Pool {
        Pool {
            reuse,
            state: Mutex::new(State {
                idle: Vec::new(),
                serving: true,
                sweeping: false,
            }),
            returned: Notify::new(),
        }
    }

    /// The route's reuse settings.
    pub fn reuse(&self) -> &Reuse {
        &self.reuse
    }

    /// The most recently used idle instance, marked busy; `None` when
    /// there is none (instantiate a new one).
    pub fn take(&self) -> Option<Warm> {
        let now = Instant::now();
        let mut stale = Vec::new();
        let found = {
            let mut state = self.state.lock().expect("pool lock");
            loop {
                match state.idle.pop() {
                    Some((since, warm)) if now.duration_since(since) > self.reuse.idle.0 => {
                        stale.push(warm);
                    }
                    Some((_, mut warm)) => {
                        warm.tally.set_idle(false);
                        break Some(warm);
                    }
                    None => break None,
                }
            }
        };
        // Dropping a store resets its memory: outside the lock.
        drop(stale);
        found
    }

    /// Keeps `warm`, which just finished a request cleanly, for the next
    /// one, unless it has served its `requests`, kept a host resource
    /// past its request, or this version no longer serves.
    pub fn put(self: &Arc<Self>, mut warm: Warm) {
        if warm.tally.served >= self.reuse.requests {
            return;
        }
        if !warm.store.data().is_clean() {
            let route = warm.store.data().caller().route.clone();
            tracing::debug!(
                %route,
                kept = ?warm.store.data_mut().leftovers(),
                "instance kept host resources past its request; not reused"
            );
            return;
        }
        let mut state = self.state.lock().expect("pool lock");
        if !state.serving {
            drop(state);
            return;
        }
        warm.tally.set_idle(true);
        state.idle.push((Instant::now(), warm));
        self.returned.notify_one();
        // Outside a runtime (never while serving) idle instances still
        // expire, lazily, when `take` finds them.
        if !state.sweeping
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            state.sweeping = true;
            drop(state);
            runtime.spawn(sweep(Arc::downgrade(self), self.reuse.idle.0));
        }
    }

    /// Resolves when an instance has come back since the last call (at
    /// once if one did while nobody waited): then [`Pool::take`] may find
    /// it.
    pub async fn returned(&self) {
        self.returned.notified().await;
    }

    /// Drops the instance idle longest, to free its slot of the instance
    /// budget; false when none is idle.
    pub fn evict_oldest(&self) -> bool {
        let evicted = {
            let mut state = self.state.lock().expect("pool lock");
            (!state.idle.is_empty()).then(|| state.idle.remove(0))
        };
        evicted.is_some()
    }

    /// Stops keeping instances (the version was swapped out) and drops
    /// the idle ones; requests in flight finish on theirs, which are then
    /// dropped.
    pub fn retire(&self) {
        let idle = {
            let mut state = self.state.lock().expect("pool lock");
            state.serving = false;
            std::mem::take(&mut state.idle)
        };
        drop(idle);
    }

    /// Keeps instances again (the version was rolled back to).
    pub fn reinstate(&self) {
        self.state.lock().expect("pool lock").serving = true;
    }

    /// Idle instances now.
    pub fn idle_count(&self) -> usize {
        self.state.lock().expect("pool lock").idle.len()
    }

    /// Drops instances idle longer than `idle`; whether any remain.
    fn expire(&self, now: Instant) -> bool {
        let (stale, remain) = {
            let mut state = self.state.lock().expect("pool lock");
            let keep = state
                .idle
                .iter()
                .position(|(since, _)| now.duration_since(*since) <= self.reuse.idle.0)
                .unwrap_or(state.idle.len());
            let stale: Vec<_> = state.idle.drain(..keep).collect();
            let remain = !state.idle.is_empty();
            if !remain {
                state.sweeping = false;
            }
            (stale, remain)
        };
        drop(stale);
        remain
    }
}

/// Wakes a few times per `idle` to drop instances idle longer than that;
/// ends when the pool is empty or gone (the next `put` starts another).
async fn sweep(pool: Weak<Pool>, idle: Duration) {
    let every = (idle / 4).max(MIN_SWEEP);
    loop {
        tokio::time::sleep(every).await;
        let Some(pool) = pool.upgrade() else { return };
        if !pool.expire(Instant::now()) {
            return;
        }
    }
}
