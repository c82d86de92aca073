//! One `[[worker]]`'s runner: claims up to `concurrency` jobs of its queue
//! (or topic group), runs each on a fresh instance of its component under
//! its `timeout` and `memory`, and settles it: done, retried after the
//! queue's backoff, or dead after its last attempt. A trap, a timeout or a
//! memory-limit breach fails that attempt only; the runner goes on.
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
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
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
    // Up to `concurrency` jobs are claimed ahead of free slots, so the next
    // claim's round trip overlaps the jobs running. A buffered job may
    // wait up to one attempt's `timeout` before it starts: its lease
    // covers that too.
    let concurrency = spec.concurrency as usize;
    let timeout_ms = i64::try_from(spec.timeout.0.as_millis()).unwrap_or(i64::MAX);
    let lease_ms = visibility_ms.saturating_add(timeout_ms);
    let mut buffer: VecDeque<Claimed> = VecDeque::new();
    let start = |job: Claimed, permit: OwnedSemaphorePermit| {
        let work = attempt(
            app.clone(),
            worker.current(),
            key.clone(),
            job,
            slow_slots.clone(),
        );
        async move {
            work.await;
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
            let job = buffer.pop_front().expect("not empty");
            running.spawn(start(job, permit));
        }
        let wanted = (2 * concurrency).saturating_sub(running.len() + buffer.len());
        if buffer.len() >= concurrency || wanted == 0 {
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
        let claimed = match store.claim(&key, wanted_u32, now, lease_until).await {
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
        buffer.extend(claimed);
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
    while let Some(job) = buffer.pop_front() {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        running.spawn(start(job, permit));
    }
    while running.join_next().await.is_some() {}
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
    let _slot = app.instances.clone().acquire_owned().await;
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

/// Runs one attempt of `job` and settles it in the store.
async fn attempt(
    app: Arc<App>,
    version: Arc<WorkerVersion>,
    key: String,
    job: Claimed,
    slow_slots: Arc<Semaphore>,
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
    let slot = app.instances.clone().acquire_owned().await;
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
    let store = jobs.store();
    let now = now_ms();
    let duration_ms = took.as_millis() as u64;
    let trace_id = trace.traceparent();
    let trace_id = trace_id.to_str().unwrap_or_default();
    let label = match outcome {
        Outcome::Done => match store.ack(&key, &job.id, job.attempt, now).await {
            Ok(true) => {
                tracing::info!(worker = %spec.name, queue = %key, job_id = %job.id, attempt = job.attempt, version = version.version, duration_ms, traceparent = %trace_id, "job done");
                "done"
            }
            Ok(false) => {
                tracing::warn!(worker = %spec.name, queue = %key, job_id = %job.id, attempt = job.attempt, duration_ms, "job finished after its lease expired; it was delivered again");
                "lost"
            }
            Err(err) => {
                tracing::warn!(worker = %spec.name, queue = %key, job_id = %job.id, attempt = job.attempt, cause = %err, "job done but acknowledging it failed; it will be delivered again after its visibility");
                "lost"
            }
        },
        Outcome::Failed(cause) => {
            let wait = retry_delay(&spec.settings, job.attempt);
            let retry_at = now + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
            match store
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
            }
        }
    };
    jobs.total.with_label_values(&[key.as_str(), label]).inc();
    trace.record_job(
        format!("process {key}"),
        took,
        vec![
            ("messaging.destination.name", key.clone()),
            ("messaging.message.id", job.id.clone()),
            ("trellis.worker", spec.name.clone()),
            ("trellis.job.attempt", job.attempt.to_string()),
            ("trellis.job.outcome", label.to_owned()),
        ],
        label != "done",
    );
}
