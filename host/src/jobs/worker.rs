//! One `[[worker]]`'s runner: claims jobs of its queue (or topic group),
//! ahead of its `concurrency` by about [`AHEAD_TIME`] of work, runs each on a fresh instance of its component under
//! its `timeout` and `memory`, and settles it: done, retried after the
//! queue's backoff, or dead after its last attempt. A trap, a timeout or a
//! memory-limit breach fails that attempt only; the runner goes on.
//!
//! Finished jobs are acknowledged by one acker per runner ([`acker`]): it
//! sends whatever has finished since its last call in one
//! [`JobStore::ack_many`](crate::services::jobs::JobStore::ack_many) (a
//! group commit), so under load one store round trip acknowledges many
//! jobs, and an idle runner's job is acknowledged at once.
//!
//! It polls its queue every [`POLL`] and is woken at once by jobs
//! enqueued on this host. Every [`RECLAIM`] it returns jobs whose lease
//! expired (their host died) to the queue, and every [`SWEEP`] deletes
//! done jobs past the queue's retention.

use crate::app::{App, Worker, WorkerVersion};
use crate::capabilities::GuestContext;
use crate::capabilities::bindings::worker::{Job, Source};
use crate::config::manifest::{JobSource, Limits};
use crate::observability::trace::TraceContext;
use crate::runtime::lane::{Lane, SLOW_PER_ROUTE};
use crate::runtime::store::{new_store, set_deadline};
use crate::services::jobs::{Claimed, Settled, now_ms, retry_delay};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use wasmtime::Trap;

/// How often an idle runner looks for ready jobs (delayed ones, retries,
/// and jobs enqueued on other hosts).
pub const POLL: Duration = Duration::from_millis(100);

/// How often a runner returns expired leases to its queue.
pub const RECLAIM: Duration = Duration::from_secs(1);

/// How often a runner deletes done jobs past the queue's retention.
pub const SWEEP: Duration = Duration::from_secs(60);

/// How much longer than a worker's `timeout` a lease lasts at least, for
/// the attempt to be settled after its deadline.
pub const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// How much of its lease a job claimed ahead must have left beyond one
/// `timeout` to be started: time to settle the attempt. (Leases allow one
/// `timeout` of waiting plus [`LEASE_MARGIN`], so a job that waited about
/// one `timeout`, as with slots busy with jobs that all ran to their
/// deadline, still starts.)
pub const SETTLE_MARGIN: Duration = Duration::from_secs(1);

/// Most jobs one acknowledgement call names.
pub const ACK_BATCH: usize = 512;

/// How much work, in time, a runner holds claimed beyond the jobs it
/// runs: its jobs' recent average duration decides how many jobs that is
/// ([`ahead`]), so a host takes many quick jobs per claim but never sits
/// on much of a queue another host could be running.
pub const AHEAD_TIME: Duration = Duration::from_millis(50);

/// At least this many times `concurrency` jobs are held ahead (the next
/// claim's round trip overlaps the jobs running), and at most
/// [`MAX_AHEAD`] times.
pub const MIN_AHEAD: usize = 1;

/// See [`MIN_AHEAD`].
pub const MAX_AHEAD: usize = 4;

/// Jobs to hold claimed beyond those running, for `concurrency` slots
/// whose jobs recently took `average` each: about [`AHEAD_TIME`] of work,
/// within [`MIN_AHEAD`] and [`MAX_AHEAD`] times `concurrency`.
pub fn ahead(concurrency: usize, average: Duration) -> usize {
    let by_time = AHEAD_TIME.as_nanos() * concurrency as u128 / average.as_nanos().max(1);
    let by_time = usize::try_from(by_time).unwrap_or(usize::MAX);
    by_time.clamp(MIN_AHEAD * concurrency, MAX_AHEAD * concurrency)
}

/// Jobs claimed ahead of free slots, oldest first, each with the end of
/// its lease. Claims ahead are sized by the recent pace ([`ahead`]); when
/// jobs suddenly get slower, one may wait so long that its lease would
/// end mid-attempt. It is skipped instead: its lease expires, the queue
/// gets it back ([`RECLAIM`]), and it runs once, a little later, never on
/// two hosts at a time.
struct Ahead {
    jobs: VecDeque<(Claimed, i64)>,
    /// What one attempt may take, in ms: `timeout` plus [`SETTLE_MARGIN`].
    attempt_ms: i64,
}

impl Ahead {
    fn len(&self) -> usize {
        self.jobs.len()
    }

    fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    fn extend(&mut self, claimed: Vec<Claimed>, lease_until: i64) {
        self.jobs
            .extend(claimed.into_iter().map(|job| (job, lease_until)));
    }

    /// The oldest job whose lease still covers a whole attempt from `now`.
    fn next(&mut self, now: i64) -> Option<Claimed> {
        while let Some((job, lease_until)) = self.jobs.pop_front() {
            if now.saturating_add(self.attempt_ms) <= lease_until {
                return Some(job);
            }
            tracing::debug!(job = %job.id, "a job claimed ahead waited past its lease; left for the queue to give back");
        }
        None
    }
}

/// A moving average of job durations (weight 1/8 to the newest), shared
/// by a runner's jobs; unknown (so [`MIN_AHEAD`]) until the first ends.
#[derive(Default)]
struct Pace(std::sync::atomic::AtomicU64);

impl Pace {
    fn record(&self, took: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let took = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX).max(1);
        let old = self.0.load(Relaxed);
        let new = if old == 0 {
            took
        } else {
            old - old / 8 + took / 8
        };
        self.0.store(new, Relaxed);
    }

    fn average(&self) -> Duration {
        match self.0.load(std::sync::atomic::Ordering::Relaxed) {
            0 => Duration::MAX,
            nanos => Duration::from_nanos(nanos),
        }
    }
}

/// The store's key of a worker's jobs: the queue, or `topic/group`.
pub fn queue_key(version: &WorkerVersion) -> String {
    match &version.spec.source {
        JobSource::Queue(queue) => queue.clone(),
        JobSource::Topic(topic) => format!("{topic}/{}", version.spec.name),
    }
}

/// Runs `worker` until `stop` turns true, then waits for its jobs in
/// progress (the caller bounds that wait by `shutdown_grace`). Each claimed
/// job runs on the worker's version at the time it starts.
pub async fn run(app: Arc<App>, worker: Arc<Worker>, mut stop: watch::Receiver<bool>) {
    let first = worker.current();
    let spec = &first.spec;
    let key = queue_key(&first);
    let jobs = app.services.jobs.clone();
    let store = jobs.store().clone();
    let waker = jobs.waker(&key);
    let slots = Arc::new(Semaphore::new(spec.concurrency as usize));
    let slow_slots = Arc::new(Semaphore::new(SLOW_PER_ROUTE));
    // A lease never ends before the attempt's own deadline: a job still
    // running must not be handed to another worker.
    let visibility = spec
        .settings
        .visibility
        .0
        .max(spec.timeout.0 + LEASE_MARGIN);
    let visibility_ms = i64::try_from(visibility.as_millis()).unwrap_or(i64::MAX);
    // Jobs are claimed ahead of free slots ([`ahead`]), so the next
    // claim's round trip overlaps the jobs running. A buffered job may
    // wait up to one attempt's `timeout` before it starts: its lease
    // covers that too.
    let concurrency = spec.concurrency as usize;
    let timeout_ms = i64::try_from(spec.timeout.0.as_millis()).unwrap_or(i64::MAX);
    let lease_ms = visibility_ms.saturating_add(timeout_ms);
    let mut buffer = Ahead {
        jobs: VecDeque::new(),
        attempt_ms: timeout_ms.saturating_add(SETTLE_MARGIN.as_millis() as i64),
    };
    let (done, finished) = mpsc::unbounded_channel();
    let acks = tokio::spawn(acker(app.clone(), spec.name.clone(), key.clone(), finished));
    let pace = Arc::new(Pace::default());
    let start = |job: Claimed, permit: OwnedSemaphorePermit| {
        let pace = pace.clone();
        let began = Instant::now();
        let work = attempt(
            app.clone(),
            worker.current(),
            key.clone(),
            job,
            slow_slots.clone(),
            done.clone(),
        );
        async move {
            work.await;
            pace.record(began.elapsed());
            drop(permit);
        }
    };
    let mut running = JoinSet::new();
    let mut last_reclaim = Instant::now() - RECLAIM;
    let mut last_sweep = Instant::now();
    let mut failing_since: Option<Instant> = None;
    let mut subscribed = !matches!(spec.source, JobSource::Topic(_));
    tracing::info!(worker = %spec.name, queue = %key, concurrency = spec.concurrency, "worker running");
    while !*stop.borrow() {
        while running.try_join_next().is_some() {}
        if !subscribed && let JobSource::Topic(topic) = &spec.source {
            subscribed = store.subscribe(topic, &spec.name, now_ms()).await.is_ok();
        }
        if last_reclaim.elapsed() >= RECLAIM {
            last_reclaim = Instant::now();
            match store.reclaim(&key, lease_ms, now_ms()).await {
                Ok(0) | Err(_) => {}
                Ok(n) => {
                    tracing::info!(worker = %spec.name, queue = %key, jobs = n, "jobs whose lease expired are queued again")
                }
            }
        }
        if last_sweep.elapsed() >= SWEEP {
            last_sweep = Instant::now();
            let before =
                now_ms() - i64::try_from(spec.settings.retention.0.as_millis()).unwrap_or(i64::MAX);
            let _ = store.sweep(&key, before).await;
        }
        // Buffered jobs start as slots free up, with no store round trip
        // between one job's end and the next one's start.
        while !buffer.is_empty()
            && let Ok(permit) = slots.clone().try_acquire_owned()
        {
            let Some(job) = buffer.next(now_ms()) else {
                break;
            };
            running.spawn(start(job, permit));
        }
        let ahead = ahead(concurrency, pace.average());
        let wanted = (concurrency + ahead).saturating_sub(running.len() + buffer.len());
        if buffer.len() >= ahead || wanted == 0 {
            tokio::select! {
                _ = running.join_next() => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        let notified = waker.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let now = now_ms();
        let lease_until = now.saturating_add(lease_ms);
        let wanted_u32 = u32::try_from(wanted).unwrap_or(u32::MAX);
        // While the claim is in flight, jobs that end hand their slots to
        // buffered ones: the round trip overlaps the jobs rather than
        // holding up the next one's start.
        let claim = store.claim(&key, wanted_u32, now, lease_until);
        tokio::pin!(claim);
        let claimed = loop {
            tokio::select! {
                claimed = &mut claim => break claimed,
                Some(_) = running.join_next(), if !running.is_empty() && !buffer.is_empty() => {
                    while !buffer.is_empty()
                        && let Ok(permit) = slots.clone().try_acquire_owned()
                    {
                        let Some(job) = buffer.next(now_ms()) else { break };
                        running.spawn(start(job, permit));
                    }
                }
            }
        };
        let claimed = match claimed {
            Ok(claimed) => {
                if failing_since.take().is_some() {
                    tracing::info!(worker = %spec.name, queue = %key, "job store reachable again");
                }
                claimed
            }
            Err(err) => {
                if failing_since.is_none() {
                    failing_since = Some(Instant::now());
                    tracing::warn!(worker = %spec.name, queue = %key, cause = %err, "claiming jobs failed; retrying every second");
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
        };
        let full = claimed.len() >= wanted;
        buffer.extend(claimed, lease_until);
        if full || !buffer.is_empty() && slots.available_permits() > 0 {
            continue;
        }
        tokio::select! {
            () = &mut notified => {}
            () = tokio::time::sleep(POLL) => {}
            _ = running.join_next(), if !running.is_empty() => {}
            _ = stop.changed() => {}
        }
    }
    // Stopped: claim nothing more. The jobs this host leased run (the
    // caller bounds that by `shutdown_grace`), those in progress finish.
    while let Some(job) = buffer.next(now_ms()) {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        running.spawn(start(job, permit));
    }
    while running.join_next().await.is_some() {}
    // Every attempt has handed its acknowledgement over: the acker sends
    // what is left and ends once the last sender is gone.
    drop(done);
    let _ = acks.await;
    tracing::info!(worker = %spec.name, queue = %key, "worker stopped");
}

/// One instantiation of `version` in a fresh store under its `memory`,
/// dropped at once: what a hot load checks before the swap (a component
/// whose initial memory exceeds the limit, or whose start traps).
pub async fn instantiate_once(app: &App, version: &WorkerVersion) -> wasmtime::Result<()> {
    let guest = GuestContext::probe(
        version.capabilities.clone(),
        version.spec.name.as_str().into(),
        version.component.digest.clone(),
    );
    let limits = Limits {
        timeout: version.spec.timeout,
        memory: version.spec.memory,
        ..Limits::default()
    };
    let _slot = app.budget.slot_within(None).await;
    let mut store = new_store(&app.engine, &limits, guest);
    set_deadline(&mut store, Instant::now() + version.spec.timeout.0);
    version.component.pre.instantiate_async(&mut store).await?;
    Ok(())
}

/// How one attempt ended.
enum Outcome {
    Done,
    Failed(String),
}

/// A job whose attempt succeeded, waiting for its acknowledgement.
struct Finished {
    id: String,
    attempt: u32,
    /// When it was enqueued (ms since the epoch).
    created: i64,
    /// The version it ran on.
    version: u32,
    /// How long the attempt took.
    took: Duration,
    trace: Arc<TraceContext>,
}

/// Acknowledges the jobs of queue `key` (worker `name`) that `finished`
/// receives: all those waiting at once, in one store call, while the
/// next ones queue up behind it. Ends when every sender is gone and what
/// they sent is acknowledged.
async fn acker(
    app: Arc<App>,
    name: String,
    key: String,
    mut finished: mpsc::UnboundedReceiver<Finished>,
) {
    let jobs = &app.services.jobs;
    let store = jobs.store();
    let mut batch = Vec::new();
    while finished.recv_many(&mut batch, ACK_BATCH).await > 0 {
        let ids: Vec<(&str, u32)> = batch.iter().map(|f| (f.id.as_str(), f.attempt)).collect();
        let now = now_ms();
        let acked = store.ack_many(&key, &ids, now).await;
        drop(ids);
        for (i, job) in batch.drain(..).enumerate() {
            let duration_ms = job.took.as_millis() as u64;
            let label = match &acked {
                Ok(acked) if acked.get(i) == Some(&true) => {
                    // From enqueue to done: the wait in the queue, the
                    // attempts, and this acknowledgement.
                    let latency_ms = u64::try_from(now - job.created).unwrap_or(0);
                    let trace_id = job.trace.traceparent();
                    let trace_id = trace_id.to_str().unwrap_or_default();
                    tracing::info!(worker = %name, queue = %key, job_id = %job.id, attempt = job.attempt, version = job.version, duration_ms, latency_ms, traceparent = %trace_id, "job done");
                    "done"
                }
                Ok(_) => {
                    tracing::warn!(worker = %name, queue = %key, job_id = %job.id, attempt = job.attempt, duration_ms, "job finished after its lease expired; it was delivered again");
                    "lost"
                }
                Err(err) => {
                    tracing::warn!(worker = %name, queue = %key, job_id = %job.id, attempt = job.attempt, cause = %err, "job done but acknowledging it failed; it will be delivered again after its visibility");
                    "lost"
                }
            };
            record_outcome(
                &app,
                &key,
                &name,
                &job.id,
                job.attempt,
                job.took,
                &job.trace,
                label,
            );
        }
    }
}

/// Counts a settled attempt in `trellis_jobs_total` and records its span.
#[allow(
    clippy::too_many_arguments,
    reason = "the attempt's fields, one by one"
)]
fn record_outcome(
    app: &App,
    key: &str,
    name: &str,
    id: &str,
    attempt: u32,
    took: Duration,
    trace: &TraceContext,
    label: &str,
) {
    app.services
        .jobs
        .total
        .with_label_values(&[key, label])
        .inc();
    trace.record_job(
        format!("process {key}"),
        took,
        vec![
            ("messaging.destination.name", key.to_owned()),
            ("messaging.message.id", id.to_owned()),
            ("trellis.worker", name.to_owned()),
            ("trellis.job.attempt", attempt.to_string()),
            ("trellis.job.outcome", label.to_owned()),
        ],
        label != "done",
    );
}

/// Runs one attempt of `job` and settles it in the store, or, when it
/// succeeded, hands it to the acker (`done`).
async fn attempt(
    app: Arc<App>,
    version: Arc<WorkerVersion>,
    key: String,
    job: Claimed,
    slow_slots: Arc<Semaphore>,
    done: mpsc::UnboundedSender<Finished>,
) {
    let spec = &version.spec;
    let started = Instant::now();
    // Its own trace, linked to the enqueuing request's span.
    let trace = Arc::new(TraceContext::linked_to(job.trace.as_deref()));
    let guest = GuestContext::new(
        version.capabilities.clone(),
        spec.name.as_str().into(),
        version.component.digest.clone(),
        job.id.as_str().into(),
        trace.clone(),
        None,
    );
    let limits = Limits {
        timeout: spec.timeout,
        memory: spec.memory,
        ..Limits::default()
    };
    let source = match &spec.source {
        JobSource::Queue(queue) => Source::Queue(queue.clone()),
        JobSource::Topic(topic) => Source::Topic(topic.clone()),
    };
    let record = Job {
        id: job.id.clone(),
        source,
        payload: job.payload,
        attempt: job.attempt,
        attempts: job.attempts,
    };
    let timeout = spec.timeout.0;
    let engine = app.engine.clone();
    let component = version.component.clone();
    // A slot of the process-wide instance budget, waited for: a job can
    // wait where a request would be refused.
    let slot = app.budget.slot_within(None).await;
    let run = async move {
        let _slot = slot;
        let deadline = Instant::now() + timeout;
        let mut store = new_store(&engine, &limits, guest);
        set_deadline(&mut store, deadline);
        let call = async {
            let worker = component.pre.instantiate_async(&mut store).await?;
            worker
                .trellis_api_worker()
                .call_process(&mut store, &record)
                .await
        };
        match tokio::time::timeout_at(deadline.into(), call).await {
            Ok(Ok(Ok(()))) => Outcome::Done,
            Ok(Ok(Err(reason))) => {
                Outcome::Failed(format!("the worker returned an error: {reason}"))
            }
            Ok(Err(err)) if err.downcast_ref::<Trap>() == Some(&Trap::Interrupt) => {
                Outcome::Failed(format!("the worker exceeded its {timeout:?} timeout"))
            }
            Ok(Err(err)) => Outcome::Failed(format!("the worker trapped: {err:#}")),
            Err(_) => Outcome::Failed(format!("the worker exceeded its {timeout:?} timeout")),
        }
    };
    let outcome = Lane::new(run, slow_slots).await;
    let took = started.elapsed();
    let jobs = &app.services.jobs;
    jobs.duration
        .with_label_values(&[key.as_str()])
        .observe(took.as_secs_f64());
    let cause = match outcome {
        Outcome::Done => {
            let finished = Finished {
                id: job.id,
                attempt: job.attempt,
                created: job.created,
                version: version.version,
                took,
                trace,
            };
            // The acker outlives every sender; should it be gone, the job
            // is redelivered after its visibility like any unacknowledged one.
            let _ = done.send(finished);
            return;
        }
        Outcome::Failed(cause) => cause,
    };
    let store = jobs.store();
    let now = now_ms();
    let duration_ms = took.as_millis() as u64;
    let wait = retry_delay(&spec.settings, job.attempt);
    let retry_at = now + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
    let label = match store
        .fail(&key, &job.id, job.attempt, &cause, retry_at, now)
        .await
    {
        Ok(Settled::Retry) => {
            tracing::warn!(worker = %spec.name, queue = %key, job_id = %job.id, attempt = job.attempt, attempts = job.attempts, retry_in_ms = wait.as_millis() as u64, duration_ms, cause = %cause, "job failed; retrying");
            "retry"
        }
        Ok(Settled::Dead) => {
            tracing::warn!(worker = %spec.name, queue = %key, job_id = %job.id, attempt = job.attempt, attempts = job.attempts, duration_ms, cause = %cause, "job failed its last attempt; dead-lettered");
            "dead"
        }
        Ok(Settled::Lost) => "lost",
        Err(err) => {
            tracing::warn!(worker = %spec.name, queue = %key, job_id = %job.id, cause = %err, "recording a failed attempt failed; the job will be delivered again after its visibility");
            "lost"
        }
    };
    record_outcome(
        &app,
        &key,
        &spec.name,
        &job.id,
        job.attempt,
        took,
        &trace,
        label,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_ahead_about_ahead_time_of_work_within_bounds() {
        // Unknown pace: one `concurrency` ahead.
        assert_eq!(ahead(8, Pace::default().average()), 8);
        // Quick jobs: as many as the cap allows.
        assert_eq!(ahead(8, Duration::from_micros(20)), 32);
        // 25 ms jobs on 8 slots: 50 ms of work is 16 jobs.
        assert_eq!(ahead(8, Duration::from_millis(25)), 16);
        // Slow jobs: never fewer than `concurrency`.
        assert_eq!(ahead(8, Duration::from_secs(2)), 8);
    }

    #[test]
    fn a_job_whose_lease_would_end_mid_attempt_is_skipped() {
        let job = |id: &str| Claimed {
            id: id.to_owned(),
            payload: Vec::new(),
            attempt: 1,
            attempts: 3,
            trace: None,
            created: 0,
        };
        let mut ahead = Ahead {
            jobs: VecDeque::new(),
            attempt_ms: 1_000,
        };
        ahead.extend(vec![job("a"), job("b")], 10_000);
        ahead.extend(vec![job("c")], 20_000);
        assert_eq!(ahead.next(9_000).map(|j| j.id), Some("a".to_owned()));
        // At 9 500 ms, `b`'s lease (to 10 000) no longer covers an attempt.
        assert_eq!(ahead.next(9_500).map(|j| j.id), Some("c".to_owned()));
        assert!(ahead.is_empty());
        assert_eq!(ahead.next(9_500).map(|j| j.id), None);
    }

    #[test]
    fn the_pace_follows_recent_jobs() {
        let pace = Pace::default();
        pace.record(Duration::from_millis(80));
        assert_eq!(pace.average(), Duration::from_millis(80));
        for _ in 0..64 {
            pace.record(Duration::from_millis(1));
        }
        assert!(
            pace.average() < Duration::from_millis(2),
            "{:?}",
            pace.average()
        );
    }
}
