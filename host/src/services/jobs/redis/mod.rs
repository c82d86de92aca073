//! The Redis Streams backend of the job store, chosen when `[redis]` is
//! set: jobs survive a host's crash and every host sharing the Redis
//! works the same queues.
//!
//! Each queue is a stream of ready job ids read through one consumer group
//! (`workers`), so each entry goes to one host's worker; a job's payload,
//! attempt count and state sit in a hash beside it. Ready jobs with a
//! priority wait in a sorted set instead, and the claim script moves the
//! best of them to a second stream just before reading it. Delayed jobs and
//! backoff retries wait in a sorted set, moved into the stream by the
//! claiming script; a delivered entry left unacknowledged longer than the
//! lease (its host died) is taken back with `XAUTOCLAIM` and queued again;
//! dead jobs go to a stream of their own. A topic is one stream with one
//! consumer group per subscriber, created at its end (`$`) when the
//! subscriber is deployed; claiming moves the group's new events into the
//! group's own queue, so retries and dead letters work as for any queue.
//!
//! Every operation is one Lua script (`*.lua` beside this file, each
//! prefixed with `common.lua`, where the keys are listed), so it is atomic
//! against every other host. Scripts are sent as `EVALSHA` and loaded on
//! the first `NOSCRIPT`. Calls go through [`Redis::call`] (its timeout and
//! breaker) on the shared multiplexed connection: workers poll with short,
//! non-blocking scripts rather than a blocking `XREADGROUP`, which could
//! not run inside a script and would hold a connection per worker (see
//! docs/jobs.md). Standalone Redis (or a primary with replicas) only: the
//! scripts derive keys from the queue's base key, which Redis Cluster
//! does not allow.

use super::{Claimed, Counts, DeadJob, JobError, JobStore, NewJob, Settled, StoreFuture};
use crate::services::redis::Redis;
use redis::{FromRedisValue, Script};
use std::sync::Arc;

/// Script arguments as owned bytes, from anything byte-like.
macro_rules! args {
    ($($value:expr),* $(,)?) => {
        vec![$(AsRef::<[u8]>::as_ref(&$value).to_vec()),*]
    };
}

/// The default prefix of every job key (`[redis] jobs_prefix`).
pub const DEFAULT_PREFIX: &str = "trellis:jobs";

/// A consumer (a host that went away) with nothing pending is dropped
/// from its group after this long idle.
const CONSUMER_IDLE_MS: i64 = 24 * 3600 * 1000;

/// One script per operation, each with `common.lua` before it.
struct Scripts {
    enqueue: Script,
    claim: Script,
    ack_many: Script,
    fail: Script,
    reclaim: Script,
    counts: Script,
    dead: Script,
    retry_dead: Script,
    purge_dead: Script,
    sweep: Script,
    subscribe: Script,
    publish: Script,
}

fn script(body: &str) -> Script {
    Script::new(&format!("{}\n{body}", include_str!("common.lua")))
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            enqueue: script(include_str!("enqueue.lua")),
            claim: script(include_str!("claim.lua")),
            ack_many: script(include_str!("ack_many.lua")),
            fail: script(include_str!("fail.lua")),
            reclaim: script(include_str!("reclaim.lua")),
            counts: script(include_str!("counts.lua")),
            dead: script(include_str!("dead.lua")),
            retry_dead: script(include_str!("retry_dead.lua")),
            purge_dead: script(include_str!("purge_dead.lua")),
            sweep: script(include_str!("sweep.lua")),
            subscribe: script(include_str!("subscribe.lua")),
            publish: script(include_str!("publish.lua")),
        }
    }
}

/// The job store on the shared Redis.
pub struct RedisStore {
    redis: Arc<Redis>,
    /// Every key starts with it, so deployments can share one Redis.
    prefix: String,
    /// This host's consumer name in every group: new for each process, so
    /// a restarted host never settles its previous life's leases.
    consumer: String,
    scripts: Scripts,
}

/// What a store call gives back when Redis fails it.
fn unavailable(err: crate::services::redis::Unavailable) -> JobError {
    JobError::Unavailable(err.to_string())
}

impl RedisStore {
    /// A store on `redis` whose keys start with `prefix`.
    pub fn new(redis: Arc<Redis>, prefix: &str) -> RedisStore {
        RedisStore {
            redis,
            prefix: prefix.to_owned(),
            consumer: format!("{}-{}", std::process::id(), crate::ids::random_hex(64)),
            scripts: Scripts::new(),
        }
    }

    /// The base key of queue `queue` (a queue's name, or `topic/group`).
    fn base(&self, queue: &str) -> String {
        format!("{}:q:{queue}", self.prefix)
    }

    /// The event stream of `topic`.
    fn events(&self, topic: &str) -> String {
        format!("{}:t:{topic}:events", self.prefix)
    }

    /// The set of every queue that has (had) jobs, for the counts.
    fn registry(&self) -> String {
        format!("{}:queues", self.prefix)
    }

    /// Runs `script` with `keys` and `args` under the client's timeout
    /// and breaker.
    async fn run<T: FromRedisValue>(
        &self,
        script: &Script,
        keys: &[&str],
        args: Vec<Vec<u8>>,
    ) -> Result<T, JobError> {
        self.redis
            .call(|mut conn| {
                let mut invocation = script.prepare_invoke();
                for key in keys {
                    invocation.key(*key);
                }
                for arg in args {
                    invocation.arg(arg);
                }
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await
            .map_err(unavailable)
    }

    /// The arguments of the enqueue script for `job`, with `tick` the
    /// schedule tick's key ('' when not firing one).
    fn enqueue_args(&self, job: &NewJob<'_>, tick: &str) -> Vec<Vec<u8>> {
        let dedupe = job
            .dedupe
            .map(|key| format!("{}:dedupe:{key}", self.base(job.queue)))
            .unwrap_or_default();
        args![
            job.id.as_bytes(),
            job.queue.as_bytes(),
            job.payload,
            job.attempts.to_string().as_bytes(),
            job.run_at.to_string().as_bytes(),
            job.now.to_string().as_bytes(),
            job.trace.unwrap_or_default().as_bytes(),
            dedupe.as_bytes(),
            job.retention_ms.to_string().as_bytes(),
            tick.as_bytes(),
            self.registry().as_bytes(),
            job.priority.to_string().as_bytes(),
        ]
    }
}

fn num(n: impl ToString) -> Vec<u8> {
    n.to_string().into_bytes()
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// A job as the claim script returns it.
type ClaimedRow = (String, Vec<u8>, i64, i64, String, i64);

/// A dead job as the dead script returns it.
type DeadRow = (String, Vec<u8>, i64, String, i64, i64);

/// A queue's counts as the counts script returns them.
type CountsRow = (String, i64, i64, i64, i64, i64);

impl JobStore for RedisStore {
    fn enqueue<'a>(&'a self, job: NewJob<'a>) -> StoreFuture<'a, String> {
        Box::pin(async move {
            let base = self.base(job.queue);
            let id: Option<String> = self
                .run(&self.scripts.enqueue, &[&base], self.enqueue_args(&job, ""))
                .await?;
            id.ok_or_else(|| JobError::Unavailable("the job was not stored".into()))
        })
    }

    fn publish<'a>(
        &'a self,
        topic: &'a str,
        event_id: &'a str,
        payload: &'a [u8],
        attempts: u32,
        trace: Option<&'a str>,
        now: i64,
    ) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let events = self.events(topic);
            let groups: i64 = self
                .run(
                    &self.scripts.publish,
                    &[&events, &events],
                    args![
                        event_id.as_bytes(),
                        payload,
                        num(attempts),
                        trace.unwrap_or_default().as_bytes(),
                        num(now),
                        topic.as_bytes(),
                    ],
                )
                .await?;
            Ok(count(groups))
        })
    }

    fn subscribe<'a>(&'a self, topic: &'a str, group: &'a str, _now: i64) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let queue = format!("{topic}/{group}");
            let base = self.base(&queue);
            let _: i64 = self
                .run(
                    &self.scripts.subscribe,
                    &[&base, &self.events(topic)],
                    args![
                        group.as_bytes(),
                        queue.as_bytes(),
                        self.registry().as_bytes(),
                    ],
                )
                .await?;
            Ok(())
        })
    }

    fn claim<'a>(
        &'a self,
        queue: &'a str,
        max: u32,
        now: i64,
        _lease_until: i64,
    ) -> StoreFuture<'a, Vec<Claimed>> {
        Box::pin(async move {
            // The lease is the entry's time in the group's pending list;
            // `reclaim` takes it back after the worker's visibility.
            let (events, group) = match queue.split_once('/') {
                Some((topic, group)) => (self.events(topic), group),
                None => (String::new(), ""),
            };
            let rows: Vec<ClaimedRow> = self
                .run(
                    &self.scripts.claim,
                    &[&self.base(queue)],
                    args![
                        self.consumer.as_bytes(),
                        num(max),
                        num(now),
                        events.as_bytes(),
                        group.as_bytes(),
                    ],
                )
                .await?;
            Ok(rows
                .into_iter()
                .map(|(id, payload, attempt, attempts, trace, created)| Claimed {
                    id,
                    payload,
                    attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
                    attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                    trace: (!trace.is_empty()).then_some(trace),
                    created,
                })
                .collect())
        })
    }

    fn ack_many<'a>(
        &'a self,
        queue: &'a str,
        jobs: &'a [(&'a str, u32)],
        now: i64,
    ) -> StoreFuture<'a, Vec<bool>> {
        Box::pin(async move {
            if jobs.is_empty() {
                return Ok(Vec::new());
            }
            let mut args = Vec::with_capacity(1 + 2 * jobs.len());
            args.push(num(now));
            for (id, attempt) in jobs {
                args.push(id.as_bytes().to_vec());
                args.push(num(attempt));
            }
            let acked: Vec<i64> = self
                .run(&self.scripts.ack_many, &[&self.base(queue)], args)
                .await?;
            Ok(acked.into_iter().map(|a| a == 1).collect())
        })
    }

    fn fail<'a>(
        &'a self,
        queue: &'a str,
        id: &'a str,
        attempt: u32,
        error: &'a str,
        retry_at: i64,
        now: i64,
    ) -> StoreFuture<'a, Settled> {
        Box::pin(async move {
            let settled: String = self
                .run(
                    &self.scripts.fail,
                    &[&self.base(queue)],
                    args![
                        id.as_bytes(),
                        num(attempt),
                        error.as_bytes(),
                        num(retry_at),
                        num(now),
                    ],
                )
                .await?;
            Ok(match settled.as_str() {
                "dead" => Settled::Dead,
                "retry" => Settled::Retry,
                _ => Settled::Lost,
            })
        })
    }

    fn reclaim<'a>(&'a self, queue: &'a str, visibility_ms: i64, now: i64) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let n: i64 = self
                .run(
                    &self.scripts.reclaim,
                    &[&self.base(queue)],
                    args![
                        &num(visibility_ms.max(1)),
                        num(now),
                        self.consumer.as_bytes(),
                    ],
                )
                .await?;
            Ok(count(n))
        })
    }

    fn counts<'a>(&'a self, now: i64) -> StoreFuture<'a, Vec<(String, Counts)>> {
        Box::pin(async move {
            let registry = self.registry();
            let rows: Vec<CountsRow> = self
                .run(
                    &self.scripts.counts,
                    &[&registry],
                    args![
                        registry.as_bytes(),
                        format!("{}:q:", self.prefix).as_bytes(),
                        format!("{}:t:", self.prefix).as_bytes(),
                        num(now),
                    ],
                )
                .await?;
            Ok(rows
                .into_iter()
                .map(|(queue, waiting, active, delayed, done, dead)| {
                    let counts = Counts {
                        waiting: count(waiting),
                        active: count(active),
                        delayed: count(delayed),
                        done: count(done),
                        dead: count(dead),
                    };
                    (queue, counts)
                })
                .collect())
        })
    }

    fn dead<'a>(&'a self, queue: &'a str, limit: u32) -> StoreFuture<'a, Vec<DeadJob>> {
        Box::pin(async move {
            let rows: Vec<DeadRow> = self
                .run(&self.scripts.dead, &[&self.base(queue)], args![num(limit)])
                .await?;
            Ok(rows
                .into_iter()
                .map(
                    |(id, payload, attempts, error, created_at, failed_at)| DeadJob {
                        id,
                        payload,
                        attempts: u32::try_from(attempts).unwrap_or(0),
                        error: (!error.is_empty()).then_some(error),
                        created_at,
                        failed_at: Some(failed_at),
                    },
                )
                .collect())
        })
    }

    fn retry_dead<'a>(
        &'a self,
        queue: &'a str,
        id: Option<&'a str>,
        _now: i64,
    ) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let n: i64 = self
                .run(
                    &self.scripts.retry_dead,
                    &[&self.base(queue)],
                    args![id.unwrap_or_default().as_bytes()],
                )
                .await?;
            Ok(count(n))
        })
    }

    fn purge_dead<'a>(&'a self, queue: &'a str, id: Option<&'a str>) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let n: i64 = self
                .run(
                    &self.scripts.purge_dead,
                    &[&self.base(queue)],
                    args![id.unwrap_or_default().as_bytes()],
                )
                .await?;
            Ok(count(n))
        })
    }

    fn sweep<'a>(&'a self, queue: &'a str, before: i64) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let events = queue
                .split_once('/')
                .map(|(topic, _)| self.events(topic))
                .unwrap_or_default();
            let n: i64 = self
                .run(
                    &self.scripts.sweep,
                    &[&self.base(queue)],
                    args![num(before), num(CONSUMER_IDLE_MS), events.as_bytes(),],
                )
                .await?;
            Ok(count(n))
        })
    }

    fn fire<'a>(&'a self, schedule: &'a str, tick: i64, job: NewJob<'a>) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            // The tick's key and its job are written by one script: the
            // host whose SET NX wins enqueues, the others do nothing.
            let tick_key = format!("{}:tick:{schedule}:{tick}", self.prefix);
            let base = self.base(job.queue);
            let id: Option<String> = self
                .run(
                    &self.scripts.enqueue,
                    &[&base, &tick_key],
                    self.enqueue_args(&job, &tick_key),
                )
                .await?;
            Ok(id.is_some())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::redis::test_support::test_redis;
    use std::time::Duration;

    /// A store on the test Redis under a prefix of its own, so tests
    /// sharing the Redis never meet each other's jobs.
    async fn store() -> Option<RedisStore> {
        let redis = test_redis().await?;
        let prefix = format!("trellis-test:{}", crate::ids::random_hex(64));
        Some(RedisStore::new(redis, &prefix))
    }

    /// Deletes the test's keys.
    async fn forget(store: &RedisStore) {
        let pattern = format!("{}:*", store.prefix);
        let keys: Vec<String> = store
            .redis
            .call(|mut conn| async move {
                redis::cmd("KEYS")
                    .arg(&pattern)
                    .query_async(&mut conn)
                    .await
            })
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: () = store
                .redis
                .call(|mut conn| async move {
                    redis::cmd("DEL").arg(&keys).query_async(&mut conn).await
                })
                .await
                .unwrap();
        }
    }

    fn job<'a>(id: &'a str, run_at: i64, dedupe: Option<&'a str>) -> NewJob<'a> {
        NewJob {
            id,
            queue: "q",
            payload: b"p",
            attempts: 2,
            priority: 0,
            run_at,
            dedupe,
            retention_ms: 1000,
            trace: None,
            now: 0,
        }
    }

    #[tokio::test]
    async fn a_job_goes_from_waiting_to_done_once() {
        let Some(store) = store().await else { return };
        assert_eq!(store.enqueue(job("a", 0, None)).await.unwrap(), "a");
        assert_eq!(
            store.enqueue(job("later", 50, None)).await.unwrap(),
            "later"
        );
        let claimed = store.claim("q", 10, 10, 1000).await.unwrap();
        assert_eq!(claimed.len(), 1, "the delayed job is not ready");
        assert_eq!((claimed[0].id.as_str(), claimed[0].attempt), ("a", 1));
        assert_eq!(claimed[0].payload, b"p");
        assert!(
            store.claim("q", 10, 20, 1000).await.unwrap().is_empty(),
            "leased"
        );
        let counts = store.counts(20).await.unwrap();
        assert_eq!(
            counts,
            [(
                "q".to_owned(),
                Counts {
                    active: 1,
                    delayed: 1,
                    ..Counts::default()
                }
            )]
        );
        assert!(store.ack("q", "a", 1, 30).await.unwrap());
        assert!(!store.ack("q", "a", 1, 31).await.unwrap(), "acked once");
        let later = store.claim("q", 10, 60, 1000).await.unwrap();
        assert_eq!(later[0].id, "later", "due now");
        assert_eq!(store.sweep("q", 30).await.unwrap(), 0, "within retention");
        assert_eq!(store.sweep("q", 31).await.unwrap(), 1);
        forget(&store).await;
    }

    #[tokio::test]
    async fn failures_retry_then_die_and_expired_leases_come_back() {
        let Some(store) = store().await else { return };
        store.enqueue(job("a", 0, None)).await.unwrap();
        let c = store.claim("q", 1, 0, 100).await.unwrap();
        assert_eq!(
            store
                .fail("q", "a", c[0].attempt, "boom", 50, 1)
                .await
                .unwrap(),
            Settled::Retry
        );
        assert!(
            store.claim("q", 1, 40, 100).await.unwrap().is_empty(),
            "backing off"
        );
        let c = store.claim("q", 1, 50, 150).await.unwrap();
        assert_eq!(c[0].attempt, 2);
        assert_eq!(
            store.fail("q", "a", 1, "late", 0, 2).await.unwrap(),
            Settled::Lost,
            "a stale settlement of attempt 1 changes nothing"
        );
        assert_eq!(
            store.reclaim("q", 60_000, 150).await.unwrap(),
            0,
            "the lease holds"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(store.reclaim("q", 10, 150).await.unwrap(), 1);
        let dead = store.dead("q", 10).await.unwrap();
        assert_eq!(dead.len(), 1, "out of attempts after the lease expired");
        assert!(dead[0].error.as_deref().unwrap().contains("lease expired"));
        assert_eq!(dead[0].attempts, 2);
        assert!(
            !store.ack("q", "a", 2, 160).await.unwrap(),
            "the expired lease cannot settle"
        );
        assert_eq!(store.retry_dead("q", Some("nope"), 200).await.unwrap(), 0);
        assert_eq!(store.retry_dead("q", Some("a"), 200).await.unwrap(), 1);
        let c = store.claim("q", 1, 200, 300).await.unwrap();
        assert_eq!(c[0].attempt, 1, "fresh attempts");
        assert_eq!(
            store.fail("q", "a", 1, "x", 0, 201).await.unwrap(),
            Settled::Retry
        );
        let c = store.claim("q", 1, 201, 300).await.unwrap();
        assert_eq!(
            store
                .fail("q", "a", c[0].attempt, "x", 0, 202)
                .await
                .unwrap(),
            Settled::Dead
        );
        assert_eq!(store.counts(300).await.unwrap()[0].1.dead, 1);
        assert_eq!(store.purge_dead("q", None).await.unwrap(), 1);
        assert_eq!(store.counts(300).await.unwrap()[0].1, Counts::default());
        forget(&store).await;
    }

    #[tokio::test]
    async fn dedupe_keys_hold_for_the_retention_and_ticks_fire_once() {
        let Some(store) = store().await else { return };
        let mut short = job("a", 0, Some("k"));
        short.retention_ms = 100;
        assert_eq!(store.enqueue(short).await.unwrap(), "a");
        assert_eq!(store.enqueue(job("b", 0, Some("k"))).await.unwrap(), "a");
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(
            store.enqueue(job("c", 0, Some("k"))).await.unwrap(),
            "c",
            "past the retention"
        );
        assert!(store.fire("s", 1000, job("t1", 1000, None)).await.unwrap());
        assert!(!store.fire("s", 1000, job("t2", 1000, None)).await.unwrap());
        assert!(store.fire("s", 2000, job("t3", 2000, None)).await.unwrap());
        assert_eq!(
            store
                .publish("topic", "e0", b"x", 3, None, 0)
                .await
                .unwrap(),
            0,
            "no subscriber yet"
        );
        store.subscribe("topic", "g1", 0).await.unwrap();
        store.subscribe("topic", "g2", 0).await.unwrap();
        assert_eq!(
            store
                .publish("topic", "e", b"x", 3, Some("tp"), 0)
                .await
                .unwrap(),
            2
        );
        store.subscribe("topic", "g1", 5).await.unwrap();
        let c = store.claim("topic/g2", 5, 0, 10).await.unwrap();
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!((c[0].id.as_str(), c[0].attempts), ("e.g2", 3));
        assert_eq!(c[0].trace.as_deref(), Some("tp"));
        let c = store.claim("topic/g1", 5, 0, 10).await.unwrap();
        assert_eq!(c.len(), 1, "re-subscribing kept the group's position");
        assert!(store.ack("topic/g1", "e.g1", 1, 1).await.unwrap());
        let counts = store.counts(1).await.unwrap();
        let of = |q: &str| counts.iter().find(|(n, _)| n == q).unwrap().1;
        assert_eq!(of("topic/g1").done, 1);
        assert_eq!(of("topic/g2").active, 1);
        assert_eq!((of("q").waiting, of("q").delayed), (2, 2), "{counts:?}");
        forget(&store).await;
    }

    #[tokio::test]
    async fn higher_priorities_run_first_then_the_oldest() {
        let Some(store) = store().await else { return };
        for (id, priority) in [("a", 0), ("b", 5), ("c", -1), ("d", 5), ("e", 9), ("f", 0)] {
            let mut job = job(id, 0, None);
            job.priority = priority;
            store.enqueue(job).await.unwrap();
        }
        let counts = store.counts(0).await.unwrap();
        assert_eq!(counts[0].1.waiting, 6, "{counts:?}");
        let first = store.claim("q", 2, 0, 10).await.unwrap();
        let rest = store.claim("q", 10, 0, 10).await.unwrap();
        let order: Vec<&str> = first.iter().chain(&rest).map(|c| c.id.as_str()).collect();
        assert_eq!(order, ["e", "b", "d", "a", "f", "c"]);
        assert_eq!(store.counts(0).await.unwrap()[0].1.active, 6);
        // A ranked job is leased, settled and taken back like the others.
        assert!(store.ack("q", "e", 1, 1).await.unwrap());
        assert_eq!(
            store.fail("q", "b", 1, "x", 0, 1).await.unwrap(),
            Settled::Retry
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(store.reclaim("q", 10, 2).await.unwrap(), 4);
        let again = store.claim("q", 10, 2, 10).await.unwrap();
        let order: Vec<&str> = again.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(order, ["d", "b", "a", "f", "c"], "{again:?}");
        let c = store.counts(2).await.unwrap()[0].1;
        assert_eq!((c.active, c.done, c.waiting), (5, 1, 0), "{c:?}");
        forget(&store).await;
    }

    #[tokio::test]
    async fn ack_many_settles_the_jobs_still_leased_and_only_once() {
        let Some(store) = store().await else { return };
        let mut first = job("c", 0, None);
        first.now = 7;
        store.enqueue(first).await.unwrap();
        let c = store.claim("q", 1, 0, 100).await.unwrap();
        assert_eq!(
            (c[0].id.as_str(), c[0].created),
            ("c", 7),
            "the enqueue time"
        );
        // c's lease expires and c goes back to waiting; a, b and d are
        // leased afresh.
        tokio::time::sleep(Duration::from_millis(300)).await;
        for id in ["a", "b", "d"] {
            store.enqueue(job(id, 0, None)).await.unwrap();
        }
        assert_eq!(store.claim("q", 10, 0, 100).await.unwrap().len(), 3);
        assert_eq!(store.reclaim("q", 200, 1).await.unwrap(), 1, "c only");
        assert!(store.ack_many("q", &[], 2).await.unwrap().is_empty());
        let acked = store
            .ack_many(
                "q",
                &[
                    ("a", 1),
                    ("b", 2),
                    ("c", 1),
                    ("d", 1),
                    ("d", 1),
                    ("nope", 1),
                ],
                2,
            )
            .await
            .unwrap();
        assert_eq!(acked, [true, false, false, true, false, false]);
        let counts = store.counts(3).await.unwrap()[0].1;
        assert_eq!(
            (counts.done, counts.active, counts.waiting),
            (2, 1, 1),
            "{counts:?}"
        );
        let again = store.claim("q", 10, 3, 100).await.unwrap();
        assert_eq!((again[0].id.as_str(), again[0].attempt), ("c", 2));
        assert!(store.ack("q", "b", 1, 4).await.unwrap(), "b's own attempt");
        assert_eq!(store.ack_many("q", &[("c", 2)], 4).await.unwrap(), [true]);
        assert_eq!(store.counts(5).await.unwrap()[0].1.done, 4);
        // Over a thousand at once: the script's calls take them in parts.
        let ids: Vec<String> = (0..1001).map(|i| format!("m{i}")).collect();
        for id in &ids {
            store.enqueue(job(id, 0, None)).await.unwrap();
        }
        let claimed = store.claim("q", 2000, 6, 100).await.unwrap();
        assert_eq!(claimed.len(), 1001);
        let pairs: Vec<(&str, u32)> = claimed.iter().map(|c| (c.id.as_str(), c.attempt)).collect();
        let acked = store.ack_many("q", &pairs, 7).await.unwrap();
        assert!(acked.iter().all(|a| *a), "every one acknowledged");
        let counts = store.counts(8).await.unwrap()[0].1;
        assert_eq!(
            (counts.done, counts.active, counts.waiting),
            (1005, 0, 0),
            "{counts:?}"
        );
        forget(&store).await;
    }
}
