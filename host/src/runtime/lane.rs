//! Fair CPU between requests: a guest that keeps computing moves off the
//! serving threads.
//!
//! Every guest starts on the serving runtime, where most finish in well
//! under a millisecond. [`Lane`] times each poll of a guest. A guest that
//! computes runs until the next epoch tick and yields, so its polls are
//! long; after [`LONG_POLLS`] poll of at least [`LONG_POLL`] it moves to
//! the slow lane: a runtime of its own whose threads run at a lower
//! priority (nice [`SLOW_NICE`]). (A short guest whose thread the kernel
//! preempted that long mid-poll moves too, and finishes there.) Short requests then keep the
//! serving threads, and the kernel gives long guests what CPU is left. At
//! most [`SLOW_PER_ROUTE`] guests of one route run in the slow lane at
//! once; the others wait there, their deadlines still running, so one
//! route's loopers cannot crowd out another's.

use crate::runtime::engine::EPOCH_TICK;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

/// A poll this long is the guest computing through an epoch tick (half a
/// tick, so a poll cut short by the tick counts too). A Rust hello
/// handler runs for tens of microseconds in all; a SQL handler's polls
/// end at each wait on the database.
pub const LONG_POLL: Duration = Duration::from_micros(EPOCH_TICK.as_micros() as u64 / 2);

/// Long polls after which a guest moves to the slow lane. One: measured
/// on `benches/fairness.sh`, every tick a looping guest spends on the
/// serving threads is taken from the short requests.
pub const LONG_POLLS: u32 = 1;

/// Guests of one route running in the slow lane at once.
pub const SLOW_PER_ROUTE: usize = 4;

/// The slow lane's thread priority: under contention the kernel gives a
/// nice-10 thread about a tenth of what a nice-0 thread gets.
pub const SLOW_NICE: i32 = 15;

/// The slow lane's runtime, started on first use; it lives as long as
/// the process.
fn slow_runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(2, usize::from);
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("trellis-slow")
            .on_thread_start(lower_priority)
            .enable_all()
            .build()
            .expect("starting the slow-lane runtime")
    })
}

/// Lowers this thread's priority to [`SLOW_NICE`]; on failure the lane
/// still works, only without the priority.
fn lower_priority() {
    let tid = rustix::thread::gettid();
    if let Err(err) = rustix::process::setpriority_process(Some(tid), SLOW_NICE) {
        tracing::debug!(cause = %err, "slow lane: cannot lower thread priority");
    }
}

/// Where a guest's future is.
enum State<F: Future> {
    /// On the serving runtime, polled in place.
    Fast(Pin<Box<F>>),
    /// Past its slice, waiting for a slow-lane slot of its route.
    Waiting(
        Pin<Box<F>>,
        Pin<Box<dyn Future<Output = OwnedSemaphorePermit> + Send>>,
    ),
    /// Running in the slow lane.
    Slow(JoinHandle<F::Output>),
    /// Finished (or moved out while changing state).
    Done,
}

/// A guest's future, timed on the serving runtime and moved to the slow
/// lane once it has used its slice. Dropping it cancels the guest
/// wherever it runs.
pub struct Lane<F: Future> {
    state: State<F>,
    /// Polls of at least [`LONG_POLL`] on the serving runtime.
    long_polls: u32,
    /// Whether it has left the serving runtime.
    moved: bool,
    slots: Arc<Semaphore>,
}

impl<F> Lane<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    /// Wraps `guest`; `slots` caps its route's guests in the slow lane.
    pub fn new(guest: F, slots: Arc<Semaphore>) -> Lane<F> {
        Lane {
            state: State::Fast(Box::pin(guest)),
            long_polls: 0,
            moved: false,
            slots,
        }
    }

    /// Whether the guest has moved to the slow lane.
    pub fn is_slow(&self) -> bool {
        self.moved
    }
}

impl<F> Future for Lane<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Fast(guest) => {
                    let started = Instant::now();
                    let polled = guest.as_mut().poll(cx);
                    if started.elapsed() >= LONG_POLL {
                        this.long_polls += 1;
                    }
                    if let Poll::Ready(output) = polled {
                        this.state = State::Done;
                        return Poll::Ready(output);
                    }
                    if this.long_polls < LONG_POLLS {
                        return Poll::Pending;
                    }
                    let State::Fast(guest) = std::mem::replace(&mut this.state, State::Done) else {
                        unreachable!("matched Fast above");
                    };
                    this.moved = true;
                    tracing::debug!(long_polls = this.long_polls, "guest moves to the slow lane");
                    let slots = this.slots.clone();
                    let acquire = async move {
                        slots
                            .acquire_owned()
                            .await
                            .expect("slow-lane slots are never closed")
                    };
                    this.state = State::Waiting(guest, Box::pin(acquire));
                }
                State::Waiting(_, acquire) => {
                    let permit = ready!(acquire.as_mut().poll(cx));
                    let State::Waiting(guest, _) = std::mem::replace(&mut this.state, State::Done)
                    else {
                        unreachable!("matched Waiting above");
                    };
                    let task = slow_runtime().spawn(async move {
                        let _permit = permit;
                        guest.await
                    });
                    this.state = State::Slow(task);
                }
                State::Slow(task) => {
                    let joined = ready!(Pin::new(task).poll(cx));
                    this.state = State::Done;
                    return Poll::Ready(match joined {
                        Ok(output) => output,
                        // The task is aborted only by our own drop, so this
                        // is a panic in the guest's host code: pass it on.
                        Err(err) => std::panic::resume_unwind(err.into_panic()),
                    });
                }
                State::Done => panic!("Lane polled after completion"),
            }
        }
    }
}

impl<F: Future> Drop for Lane<F> {
    fn drop(&mut self) {
        if let State::Slow(task) = &self.state {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A future that spins `each` per poll, `polls` times, yielding in
    /// between, like a looping guest at every epoch tick.
    async fn spin(polls: u32, each: Duration) -> std::thread::ThreadId {
        for _ in 0..polls {
            let until = Instant::now() + each;
            while Instant::now() < until {
                std::hint::spin_loop();
            }
            tokio::task::yield_now().await;
        }
        std::thread::current().id()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn short_guests_stay_and_long_ones_move_to_the_slow_lane() {
        let slots = Arc::new(Semaphore::new(SLOW_PER_ROUTE));
        let thread = || std::thread::current().name().map(str::to_owned);
        let mut short = Lane::new(
            async move {
                spin(2, Duration::from_micros(50)).await;
                thread()
            },
            slots.clone(),
        );
        let ran_on = (&mut short).await;
        assert!(!short.is_slow(), "a short guest stays");
        assert_ne!(ran_on.as_deref(), Some("trellis-slow"));

        let mut long = Lane::new(
            async move {
                spin(3, LONG_POLL + Duration::from_millis(1)).await;
                thread()
            },
            slots.clone(),
        );
        let thread = (&mut long).await;
        assert!(long.is_slow(), "past its slice, the guest moved");
        assert_eq!(thread.as_deref(), Some("trellis-slow"));
        assert_eq!(slots.available_permits(), SLOW_PER_ROUTE, "slot returned");
    }

    #[tokio::test]
    async fn dropping_a_slow_guest_cancels_it() {
        let slots = Arc::new(Semaphore::new(1));
        let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = finished.clone();
        let mut lane = Lane::new(
            async move {
                spin(2, LONG_POLL + Duration::from_millis(1)).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            },
            slots.clone(),
        );
        // Drive it until it has moved, then drop it.
        let _ = tokio::time::timeout(Duration::from_millis(50), &mut lane).await;
        assert!(lane.is_slow());
        drop(lane);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!finished.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(
            slots.available_permits(),
            1,
            "the aborted guest's slot is back"
        );
    }
}
