//! Background jobs: the durable store behind the `queue` capability, the
//! workers and the schedules, and the rules around it (payload limits,
//! backoff, dedupe retention, counts for operators).
//!
//! The store is a trait, [`JobStore`], the way Spin's key-value factor
//! owns `StoreManager` and lets backends implement it: [`sql::SqlStore`]
//! keeps jobs in the host's database (embedded SQLite, or PostgreSQL with
//! `FOR UPDATE SKIP LOCKED`); [`redis::RedisStore`] keeps them in Redis
//! Streams (consumer groups, a sorted set for delays, `XAUTOCLAIM` for
//! leases), chosen when `[redis]` is set. [`Jobs`] is what the rest of
//! the host uses: it checks input against the manifest's `[queues]` and
//! turns times and settings into store calls.

pub mod redis;
pub mod sql;

use crate::config::manifest::{Manifest, QueueSettings};
use crate::observability::metrics::Metrics;
use futures::future::BoxFuture;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

/// Longest dedupe key, in bytes.
pub const MAX_DEDUPE_KEY: usize = 256;

/// Longest delay an `enqueue` may ask for.
pub const MAX_DELAY: Duration = Duration::from_secs(30 * 24 * 3600);

/// What a store call returns.
pub type StoreFuture<'a, T> = BoxFuture<'a, Result<T, JobError>>;

/// Why a job was not enqueued, claimed or settled.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// No `[queues]` queue or subscribed topic by that name.
    #[error("jobs: no queue or topic {0:?} in the manifest")]
    UnknownQueue(String),
    /// The payload is over the queue's `max_payload` (the limit, bytes).
    #[error("jobs: the payload is over the limit of {0} bytes")]
    PayloadTooLarge(u64),
    /// An option out of range.
    #[error("jobs: {0}")]
    InvalidOptions(String),
    /// The store could not be reached or refused the statement.
    #[error("jobs: the job store is unavailable: {0}")]
    Unavailable(String),
}

/// A job to store.
pub struct NewJob<'a> {
    /// Its id.
    pub id: &'a str,
    /// The queue (or `topic/group`) it goes on.
    pub queue: &'a str,
    /// Its bytes.
    pub payload: &'a [u8],
    /// Attempts before it is dead.
    pub attempts: u32,
    /// Higher runs first.
    pub priority: i32,
    /// Not claimed before this (ms since the epoch).
    pub run_at: i64,
    /// At most one job per key within `retention_ms`.
    pub dedupe: Option<&'a str>,
    /// How long a dedupe key holds.
    pub retention_ms: i64,
    /// The enqueuing request's `traceparent`.
    pub trace: Option<&'a str>,
    /// Now, ms since the epoch.
    pub now: i64,
}

/// A job leased to a worker.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Its id.
    pub id: String,
    /// Its bytes.
    pub payload: Vec<u8>,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// Attempts it has in all.
    pub attempts: u32,
    /// The enqueuing request's `traceparent`, if it had one.
    pub trace: Option<String>,
    /// When it was enqueued (ms since the epoch).
    pub created: i64,
}

/// Where a failed attempt left its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// It will run again after its backoff.
    Retry,
    /// Out of attempts: dead-lettered.
    Dead,
    /// The lease had expired and the job moved on; nothing changed.
    Lost,
}

/// Jobs of one queue by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Ready to run.
    pub waiting: u64,
    /// Leased to a worker.
    pub active: u64,
    /// Waiting for their delay or backoff.
    pub delayed: u64,
    /// Done, kept for the queue's `retention`.
    pub done: u64,
    /// Out of attempts.
    pub dead: u64,
}

/// A dead-lettered job, for the admin API.
#[derive(Debug, Clone)]
pub struct DeadJob {
    /// Its id.
    pub id: String,
    /// Its bytes.
    pub payload: Vec<u8>,
    /// Attempts it made.
    pub attempts: u32,
    /// Why its last attempt failed.
    pub error: Option<String>,
    /// When it was enqueued (ms since the epoch).
    pub created_at: i64,
    /// When it died.
    pub failed_at: Option<i64>,
}

/// A durable job store. Every method is one round trip (or one
/// transaction) and safe to call from many hosts at once.
pub trait JobStore: Send + Sync {
    /// Stores `job`; with a dedupe key already held, returns the holder's id.
    fn enqueue<'a>(&'a self, job: NewJob<'a>) -> StoreFuture<'a, String>;
    /// Stores one job per subscriber group of `topic`; returns how many.
    fn publish<'a>(
        &'a self,
        topic: &'a str,
        event_id: &'a str,
        payload: &'a [u8],
        attempts: u32,
        trace: Option<&'a str>,
        now: i64,
    ) -> StoreFuture<'a, u64>;
    /// Registers `group` as a subscriber of `topic` (once; it keeps its
    /// first `since`).
    fn subscribe<'a>(&'a self, topic: &'a str, group: &'a str, now: i64) -> StoreFuture<'a, ()>;
    /// Leases up to `max` ready jobs of `queue` until `lease_until`.
    fn claim<'a>(
        &'a self,
        queue: &'a str,
        max: u32,
        now: i64,
        lease_until: i64,
    ) -> StoreFuture<'a, Vec<Claimed>>;
    /// Marks attempt `attempt` of `id` (a job of `queue`) done; false if
    /// the lease was lost. [`JobStore::ack_many`] of one job.
    fn ack<'a>(
        &'a self,
        queue: &'a str,
        id: &'a str,
        attempt: u32,
        now: i64,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let jobs = [(id, attempt)];
            let acked = self.ack_many(queue, &jobs, now).await?;
            Ok(acked.first().copied().unwrap_or(false))
        })
    }
    /// Marks each `(id, attempt)` of `jobs` (jobs of `queue`) done, in one
    /// round trip (a group commit): per job, in order, whether it was
    /// still leased under that attempt (false: its lease was lost, or the
    /// job came earlier in the list).
    fn ack_many<'a>(
        &'a self,
        queue: &'a str,
        jobs: &'a [(&'a str, u32)],
        now: i64,
    ) -> StoreFuture<'a, Vec<bool>>;
    /// Fails attempt `attempt` of `id` (a job of `queue`): retried at
    /// `retry_at`, or dead.
    fn fail<'a>(
        &'a self,
        queue: &'a str,
        id: &'a str,
        attempt: u32,
        error: &'a str,
        retry_at: i64,
        now: i64,
    ) -> StoreFuture<'a, Settled>;
    /// Returns jobs of `queue` whose lease expired to `waiting` (or dead,
    /// out of attempts); how many. A lease lasts `visibility_ms` from its
    /// claim (the database records its end at claim instead).
    fn reclaim<'a>(&'a self, queue: &'a str, visibility_ms: i64, now: i64) -> StoreFuture<'a, u64>;
    /// Counts per queue and state.
    fn counts<'a>(&'a self, now: i64) -> StoreFuture<'a, Vec<(String, Counts)>>;
    /// The newest `limit` dead jobs of `queue`.
    fn dead<'a>(&'a self, queue: &'a str, limit: u32) -> StoreFuture<'a, Vec<DeadJob>>;
    /// Sends dead jobs of `queue` (one, or all) back to `waiting` with
    /// fresh attempts; how many.
    fn retry_dead<'a>(
        &'a self,
        queue: &'a str,
        id: Option<&'a str>,
        now: i64,
    ) -> StoreFuture<'a, u64>;
    /// Deletes dead jobs of `queue` (one, or all); how many.
    fn purge_dead<'a>(&'a self, queue: &'a str, id: Option<&'a str>) -> StoreFuture<'a, u64>;
    /// Deletes done jobs finished before `before` and forgets older
    /// dedupe keys; how many jobs.
    fn sweep<'a>(&'a self, queue: &'a str, before: i64) -> StoreFuture<'a, u64>;
    /// Enqueues `job` for tick `tick` of `schedule` unless some host did
    /// already; whether this call did.
    fn fire<'a>(&'a self, schedule: &'a str, tick: i64, job: NewJob<'a>) -> StoreFuture<'a, bool>;
}

/// A producer's options, as the `queue` capability passes them.
#[derive(Debug, Clone, Default)]
pub struct EnqueueOptions {
    /// Wait before the job may run.
    pub delay: Duration,
    /// Attempts; the queue's when `None`.
    pub attempts: Option<u32>,
    /// One job per key within the queue's retention.
    pub dedupe: Option<String>,
    /// Higher runs first.
    pub priority: i32,
}

/// The jobs service: the store, the manifest's queues and topics, local
/// wake-ups for workers, and the metrics.
pub struct Jobs {
    store: Arc<dyn JobStore>,
    /// `[queues]`, as loaded at start.
    queues: BTreeMap<String, QueueSettings>,
    /// Topics some `[[worker]]` subscribes to.
    topics: BTreeSet<String>,
    /// Wakes this host's workers of a queue when a job is enqueued here,
    /// so they need not wait for their next poll.
    wakers: Mutex<HashMap<String, Arc<Notify>>>,
    /// `trellis_jobs_total{queue,outcome}`.
    pub total: prometheus::IntCounterVec,
    /// `trellis_job_duration_seconds{queue}`.
    pub duration: prometheus::HistogramVec,
    /// `trellis_queue_depth{queue,state}`, refreshed at each scrape.
    depth: prometheus::IntGaugeVec,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Jobs {
    /// The jobs service for `manifest`, on `store`.
    pub fn new(manifest: &Manifest, store: Arc<dyn JobStore>, metrics: &Metrics) -> Jobs {
        let topics = manifest
            .workers
            .iter()
            .filter_map(|w| w.topic.as_ref().map(|t| t.get_ref().clone()))
            .collect();
        let total = metrics.register(
            &prometheus::IntCounterVec::new(
                prometheus::Opts::new(
                    "trellis_jobs_total",
                    "Job attempts by queue and outcome (done, retry, dead, lost).",
                ),
                &["queue", "outcome"],
            )
            .expect("valid metric"),
        );
        let duration = metrics.register(
            &prometheus::HistogramVec::new(
                prometheus::HistogramOpts::new(
                    "trellis_job_duration_seconds",
                    "Time one job attempt took in its worker, instantiation included.",
                )
                .buckets(vec![
                    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0,
                ]),
                &["queue"],
            )
            .expect("valid metric"),
        );
        let depth = metrics.register(
            &prometheus::IntGaugeVec::new(
                prometheus::Opts::new(
                    "trellis_queue_depth",
                    "Jobs per queue and state (waiting, active, delayed, done, dead), read from the store at scrape.",
                ),
                &["queue", "state"],
            )
            .expect("valid metric"),
        );
        Jobs {
            store,
            queues: manifest.queue_settings(),
            topics,
            wakers: Mutex::new(HashMap::new()),
            total,
            duration,
            depth,
        }
    }

    /// The store, for workers and schedules.
    pub fn store(&self) -> &Arc<dyn JobStore> {
        &self.store
    }

    /// The settings of queue `name`.
    pub fn settings(&self, name: &str) -> Option<&QueueSettings> {
        self.queues.get(name)
    }

    /// Whether `name` is a queue in `[queues]`.
    pub fn is_queue(&self, name: &str) -> bool {
        self.queues.contains_key(name)
    }

    /// Whether some `[[worker]]` subscribes to `topic`.
    pub fn is_topic(&self, topic: &str) -> bool {
        self.topics.contains(topic)
    }

    /// The queue names and topic groups operators see, in order.
    pub fn queue_names(&self) -> Vec<String> {
        self.queues.keys().cloned().collect()
    }

    /// The wake-up of this host's workers of `queue`.
    pub fn waker(&self, queue: &str) -> Arc<Notify> {
        self.wakers
            .lock()
            .expect("wakers lock")
            .entry(queue.to_owned())
            .or_default()
            .clone()
    }

    /// Enqueues `payload` on `queue`; the job's id once it is stored.
    pub async fn enqueue(
        &self,
        queue: &str,
        payload: &[u8],
        options: EnqueueOptions,
        trace: Option<&str>,
    ) -> Result<String, JobError> {
        let settings = self
            .queues
            .get(queue)
            .ok_or_else(|| JobError::UnknownQueue(queue.to_owned()))?;
        if payload.len() as u64 > settings.max_payload.0 {
            return Err(JobError::PayloadTooLarge(settings.max_payload.0));
        }
        if let Some(key) = &options.dedupe
            && (key.is_empty() || key.len() > MAX_DEDUPE_KEY)
        {
            return Err(JobError::InvalidOptions(format!(
                "a dedupe key is 1 to {MAX_DEDUPE_KEY} bytes; this one is {}",
                key.len()
            )));
        }
        if options.delay > MAX_DELAY {
            return Err(JobError::InvalidOptions("the delay is over 30 days".into()));
        }
        let attempts = options.attempts.unwrap_or(settings.attempts);
        if attempts == 0 || attempts > 1000 {
            return Err(JobError::InvalidOptions(
                "attempts must be 1 to 1000".into(),
            ));
        }
        let now = now_ms();
        let id = crate::ids::random_hex(128);
        let id = self
            .store
            .enqueue(NewJob {
                id: &id,
                queue,
                payload,
                attempts,
                priority: options.priority,
                run_at: now + ms(options.delay),
                dedupe: options.dedupe.as_deref(),
                retention_ms: ms(settings.retention.0),
                trace,
                now,
            })
            .await?;
        if options.delay.is_zero() {
            self.waker(queue).notify_waiters();
        }
        Ok(id)
    }

    /// Publishes `payload` on `topic`; the event's id.
    pub async fn publish(
        &self,
        topic: &str,
        payload: &[u8],
        trace: Option<&str>,
    ) -> Result<String, JobError> {
        if !self.is_topic(topic) {
            return Err(JobError::UnknownQueue(topic.to_owned()));
        }
        let settings = QueueSettings::default();
        if payload.len() as u64 > settings.max_payload.0 {
            return Err(JobError::PayloadTooLarge(settings.max_payload.0));
        }
        let id = crate::ids::random_hex(128);
        self.store
            .publish(topic, &id, payload, settings.attempts, trace, now_ms())
            .await?;
        // Topic groups' queues are `topic/group`; wake them all.
        let prefix = format!("{topic}/");
        let wakers: Vec<_> = self
            .wakers
            .lock()
            .expect("wakers lock")
            .iter()
            .filter(|(q, _)| q.starts_with(&prefix))
            .map(|(_, w)| w.clone())
            .collect();
        for waker in wakers {
            waker.notify_waiters();
        }
        Ok(id)
    }

    /// Counts per queue, with every `[queues]` queue present (zeros for
    /// one with no jobs); refreshes `trellis_queue_depth`.
    pub async fn counts(&self) -> Result<Vec<(String, Counts)>, JobError> {
        let stored = self.store.counts(now_ms()).await?;
        let mut all: BTreeMap<String, Counts> = self
            .queues
            .keys()
            .map(|q| (q.clone(), Counts::default()))
            .collect();
        for (queue, counts) in stored {
            all.insert(queue, counts);
        }
        for (queue, c) in &all {
            for (state, n) in [
                ("waiting", c.waiting),
                ("active", c.active),
                ("delayed", c.delayed),
                ("done", c.done),
                ("dead", c.dead),
            ] {
                self.depth
                    .with_label_values(&[queue.as_str(), state])
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
        Ok(all.into_iter().collect())
    }
}

/// The wait before the retry after failed attempt `attempt`, jittered
/// down by up to a quarter.
pub fn retry_delay(settings: &QueueSettings, attempt: u32) -> Duration {
    use rand::Rng as _;
    let base = settings.backoff.delay(attempt);
    let jitter = rand::thread_rng().gen_range(0.0..0.25);
    base.mul_f64(1.0 - jitter).max(Duration::from_millis(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::manifest::Backoff;
    use crate::config::units::Duration as D;

    #[test]
    fn backoff_doubles_up_to_its_max_with_jitter_below() {
        let settings = QueueSettings {
            backoff: Backoff {
                initial: D(Duration::from_millis(100)),
                max: D(Duration::from_millis(700)),
            },
            ..QueueSettings::default()
        };
        assert_eq!(settings.backoff.delay(1), Duration::from_millis(100));
        assert_eq!(settings.backoff.delay(2), Duration::from_millis(200));
        assert_eq!(settings.backoff.delay(3), Duration::from_millis(400));
        assert_eq!(settings.backoff.delay(4), Duration::from_millis(700));
        assert_eq!(settings.backoff.delay(90), Duration::from_millis(700));
        for attempt in 1..6 {
            let d = retry_delay(&settings, attempt);
            let base = settings.backoff.delay(attempt);
            assert!(d <= base && d >= base.mul_f64(0.75), "{attempt}: {d:?}");
        }
    }
}
