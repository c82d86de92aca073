//! The instance budget, `[server].max_instances`: one slot per live
//! instance across every route, job and check, sized like the pooling
//! allocator so that a full budget is a clean 503, not an instantiation
//! error.
//!
//! Instances kept idle for reuse hold their slot. So that they never turn
//! away a request a fresh instance could serve, a request short of a slot
//! makes an idle one go: a WASI 0.2 route's at once (its [`Pool`]), a WASI
//! 0.3 route's by asking its worker, which ends and gives its slot back
//! ([`Budget::claim_idle`]).

use crate::runtime::invoke::Lease;
use crate::runtime::pool::Pool;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::futures::OwnedNotified;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// The slots, and the idle instances that can give theirs up.
pub struct Budget {
    slots: Arc<Semaphore>,
    /// The WASI 0.2 routes' pools of idle instances ([`Budget::keep`]).
    pools: Mutex<Vec<Weak<Pool>>>,
    asks: Arc<Asks>,
}

/// Requests waiting for a slot, and the idle WASI 0.3 instances leaving to
/// free one for them.
struct Asks {
    waiting: AtomicUsize,
    leaving: AtomicUsize,
    /// Wakes idle WASI 0.3 workers to look at `waiting`.
    notify: Arc<Notify>,
}

/// A request waiting for a slot; it stops counting when dropped.
struct Waiting<'a>(&'a Asks);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An idle instance that took a waiting request's ask: hold it until the
/// instance's slot is given back, so that no second instance leaves for
/// the same request.
pub struct Leaving(Arc<Asks>);

impl Drop for Leaving {
    fn drop(&mut self) {
        self.0.leaving.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Budget {
    /// `max` slots, all free.
    pub fn new(max: usize) -> Budget {
        Budget {
            slots: Arc::new(Semaphore::new(max)),
            pools: Mutex::new(Vec::new()),
            asks: Arc::new(Asks {
                waiting: AtomicUsize::new(0),
                leaving: AtomicUsize::new(0),
                notify: Arc::new(Notify::new()),
            }),
        }
    }

    /// Lets requests short of a slot drop `pool`'s idle instances.
    pub fn keep(&self, pool: &Arc<Pool>) {
        let mut pools = self.pools.lock().expect("pools lock");
        pools.retain(|p| p.strong_count() > 0);
        pools.push(Arc::downgrade(pool));
    }

    /// A slot within `wait` (`None`: however long it takes), making room
    /// as [`Budget::instance_within`] does.
    pub async fn slot_within(&self, wait: Option<Duration>) -> Option<OwnedSemaphorePermit> {
        let deadline = wait.and_then(|wait| Instant::now().checked_add(wait));
        match self.within(deadline, None).await? {
            Lease::Fresh(slot) | Lease::New(slot, _) => Some(slot),
            Lease::Warm(..) => unreachable!("no pool, no warm instance"),
        }
    }

    /// An instance for a request of the route whose kept instances are
    /// `own` (if it has `reuse`): one of them, or a slot for a new one,
    /// waiting up to `wait`. A request that arrives as another finishes
    /// (its response sent, its instance not yet dropped or kept) queues
    /// briefly, as on a route's `max_concurrency`, instead of being turned
    /// away; when the finishing instance is its own route's and kept, it
    /// takes that one rather than evicting it to instantiate anew.
    pub async fn instance_within(&self, wait: Duration, own: Option<&Arc<Pool>>) -> Option<Lease> {
        self.within(Instant::now().checked_add(wait), own).await
    }

    async fn within(&self, deadline: Option<Instant>, own: Option<&Arc<Pool>>) -> Option<Lease> {
        // A finishing request wakes the wait; an instance another route
        // keeps idle does not, so eviction is tried again this often.
        const RECHECK: Duration = Duration::from_millis(10);
        let lease = |slot| match own {
            Some(pool) => Lease::New(slot, pool.clone()),
            None => Lease::Fresh(slot),
        };
        let mut waiting = None;
        loop {
            if let Some((warm, pool)) = own.and_then(|pool| Some((pool.take()?, pool))) {
                return Some(Lease::Warm(warm, pool.clone()));
            }
            if let Ok(slot) = self.slots.clone().try_acquire_owned() {
                return Some(lease(slot));
            }
            // Make room by evicting another route's idle instance; one of
            // this route's that came back meanwhile is taken above instead.
            if self.evict_idle(own) {
                continue;
            }
            // Else an idle WASI 0.3 instance may leave for this request.
            waiting.get_or_insert_with(|| self.asks.wait());
            let left = match deadline {
                Some(deadline) => deadline.checked_duration_since(Instant::now())?,
                None => RECHECK,
            };
            let returned = async {
                match own {
                    Some(pool) => pool.returned().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                acquired = self.slots.clone().acquire_owned() => {
                    if let Ok(slot) = acquired {
                        return Some(lease(slot));
                    }
                }
                () = returned => {}
                () = tokio::time::sleep(left.min(RECHECK)) => {}
            }
        }
    }

    /// Drops one longest-idle WASI 0.2 instance of a route other than
    /// `spare`'s, freeing its slot; false when there is none.
    fn evict_idle(&self, spare: Option<&Arc<Pool>>) -> bool {
        let pools: Vec<Arc<Pool>> = {
            let pools = self.pools.lock().expect("pools lock");
            pools.iter().filter_map(Weak::upgrade).collect()
        };
        pools
            .iter()
            .any(|pool| !spare.is_some_and(|spare| Arc::ptr_eq(spare, pool)) && pool.evict_oldest())
    }

    /// For an idle WASI 0.3 instance: whether a request is waiting for a
    /// slot that no other instance is already leaving to free. If so the
    /// instance should end, holding the returned [`Leaving`] until its slot
    /// is back.
    pub fn claim_idle(&self) -> Option<Leaving> {
        let asks = &self.asks;
        let mut leaving = asks.leaving.load(Ordering::Acquire);
        loop {
            if leaving >= asks.waiting.load(Ordering::Acquire) {
                return None;
            }
            match asks.leaving.compare_exchange_weak(
                leaving,
                leaving + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(Leaving(asks.clone())),
                Err(now) => leaving = now,
            }
        }
    }

    /// Resolves when a request starts waiting for a slot: then an idle
    /// WASI 0.3 instance checks [`Budget::claim_idle`].
    pub fn asked(&self) -> OwnedNotified {
        self.asks.notify.clone().notified_owned()
    }
}

impl Asks {
    /// Counts a request waiting for a slot and wakes the idle WASI 0.3
    /// workers to consider leaving.
    fn wait(&self) -> Waiting<'_> {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        self.notify.notify_waiters();
        Waiting(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slot if one is free now.
    fn try_slot(budget: &Budget) -> Option<OwnedSemaphorePermit> {
        budget.slots.clone().try_acquire_owned().ok()
    }

    #[tokio::test]
    async fn one_idle_instance_leaves_per_waiting_request() {
        let budget = Arc::new(Budget::new(1));
        let held = try_slot(&budget).expect("a free slot");
        assert!(budget.claim_idle().is_none(), "nobody waits yet");
        assert!(try_slot(&budget).is_none(), "the only slot is held");

        let asked = budget.asked();
        let waiter = tokio::spawn({
            let budget = budget.clone();
            async move { budget.slot_within(Some(Duration::from_secs(5))).await }
        });
        // The waiter's ask wakes the idle instances.
        tokio::time::timeout(Duration::from_secs(5), asked)
            .await
            .expect("an idle instance is told");
        let leaving = budget.claim_idle().expect("one instance may leave");
        assert!(
            budget.claim_idle().is_none(),
            "a second instance would leave for the same request"
        );
        // The instance that left gives its slot back, then stops leaving.
        drop(held);
        drop(leaving);
        let slot = waiter
            .await
            .unwrap()
            .expect("the waiter gets the freed slot");
        assert!(budget.claim_idle().is_none(), "the request no longer waits");
        drop(slot);
        assert!(try_slot(&budget).is_some());
    }

    #[tokio::test]
    async fn a_request_gives_up_at_its_wait() {
        let budget = Budget::new(1);
        let _held = try_slot(&budget).unwrap();
        let started = Instant::now();
        assert!(
            budget
                .slot_within(Some(Duration::from_millis(50)))
                .await
                .is_none()
        );
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert!(budget.claim_idle().is_none(), "its ask went with it");
    }
}
