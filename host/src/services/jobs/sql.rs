//! The database backend of the job store: one `trellis_jobs` table on the
//! host's own pool (SQLite by default, PostgreSQL when configured), so a
//! host needs nothing else for durable jobs.
//!
//! Claiming is one statement that leases up to N ready jobs: on
//! PostgreSQL the candidate rows are locked with `FOR UPDATE SKIP LOCKED`,
//! so hosts claiming together take different jobs without waiting on each
//! other; on SQLite the `UPDATE ... RETURNING` runs under the database's
//! single write lock. A job's state moves `waiting` → `active` (leased
//! until `run_at`) → `done`, back to `waiting` (a failed attempt, after
//! its backoff; a lease that expired), or `dead`. Acks and failures name
//! the attempt they belong to, so a worker whose lease expired and whose
//! job was claimed again cannot settle the new attempt.

use super::{Claimed, Counts, DeadJob, JobError, JobStore, NewJob, Settled, StoreFuture};
use crate::services::database::{Database, Pool};
use sqlx::{Connection as _, Row as _};
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::OnceCell;

/// The tables, per dialect; created once per process (and under the
/// migrations' lock on PostgreSQL, so hosts starting together do not race).
const SQLITE_SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS trellis_jobs (\
        id TEXT PRIMARY KEY, queue TEXT NOT NULL, state TEXT NOT NULL, payload BLOB NOT NULL, \
        priority INTEGER NOT NULL DEFAULT 0, attempt INTEGER NOT NULL DEFAULT 0, \
        max_attempts INTEGER NOT NULL, run_at INTEGER NOT NULL, dedupe TEXT, trace TEXT, \
        error TEXT, created_at INTEGER NOT NULL, finished_at INTEGER)",
    "CREATE INDEX IF NOT EXISTS trellis_jobs_ready ON trellis_jobs (queue, state, run_at)",
    "CREATE UNIQUE INDEX IF NOT EXISTS trellis_jobs_dedupe ON trellis_jobs (queue, dedupe) WHERE dedupe IS NOT NULL",
    "CREATE TABLE IF NOT EXISTS trellis_job_groups (\
        topic TEXT NOT NULL, name TEXT NOT NULL, since INTEGER NOT NULL, PRIMARY KEY (topic, name))",
    "CREATE TABLE IF NOT EXISTS trellis_schedule_ticks (\
        name TEXT NOT NULL, tick INTEGER NOT NULL, PRIMARY KEY (name, tick))",
];

const POSTGRES_SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS trellis_jobs (\
        id TEXT PRIMARY KEY, queue TEXT NOT NULL, state TEXT NOT NULL, payload BYTEA NOT NULL, \
        priority BIGINT NOT NULL DEFAULT 0, attempt BIGINT NOT NULL DEFAULT 0, \
        max_attempts BIGINT NOT NULL, run_at BIGINT NOT NULL, dedupe TEXT, trace TEXT, \
        error TEXT, created_at BIGINT NOT NULL, finished_at BIGINT)",
    "CREATE INDEX IF NOT EXISTS trellis_jobs_ready ON trellis_jobs (queue, state, run_at)",
    "CREATE UNIQUE INDEX IF NOT EXISTS trellis_jobs_dedupe ON trellis_jobs (queue, dedupe) WHERE dedupe IS NOT NULL",
    "CREATE TABLE IF NOT EXISTS trellis_job_groups (\
        topic TEXT NOT NULL, name TEXT NOT NULL, since BIGINT NOT NULL, PRIMARY KEY (topic, name))",
    "CREATE TABLE IF NOT EXISTS trellis_schedule_ticks (\
        name TEXT NOT NULL, tick BIGINT NOT NULL, PRIMARY KEY (name, tick))",
];

const INSERT: &str = "INSERT INTO trellis_jobs \
    (id, queue, state, payload, priority, attempt, max_attempts, run_at, dedupe, trace, created_at) \
    VALUES ($1, $2, 'waiting', $3, $4, 0, $5, $6, $7, $8, $9) \
    ON CONFLICT (queue, dedupe) WHERE dedupe IS NOT NULL DO NOTHING RETURNING id";

const CLAIM_SQLITE: &str = "UPDATE trellis_jobs SET state = 'active', attempt = attempt + 1, run_at = $3 \
    WHERE id IN (SELECT id FROM trellis_jobs WHERE queue = $1 AND state = 'waiting' AND run_at <= $2 \
    ORDER BY priority DESC, run_at, id LIMIT $4) \
    RETURNING id, payload, attempt, max_attempts, trace, created_at";

const CLAIM_POSTGRES: &str = "UPDATE trellis_jobs SET state = 'active', attempt = attempt + 1, run_at = $3 \
    WHERE id IN (SELECT id FROM trellis_jobs WHERE queue = $1 AND state = 'waiting' AND run_at <= $2 \
    ORDER BY priority DESC, run_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) \
    RETURNING id, payload, attempt, max_attempts, trace, created_at";

/// Most jobs one acknowledging statement names (two bound parameters
/// each); longer lists take one statement per this many, in one
/// transaction.
/// (Three in the tests, so they cover the transaction.)
const ACK_CHUNK: usize = if cfg!(test) { 3 } else { 1000 };

/// The statement that marks done the active jobs among `n` (id, attempt)
/// pairs, bound from `$2` on (`$1` is the finish time).
fn ack_statement(n: usize) -> String {
    use std::fmt::Write as _;
    let mut sql = String::from(
        "UPDATE trellis_jobs SET state = 'done', finished_at = $1, error = NULL \
         WHERE state = 'active' AND (id, attempt) IN (VALUES ",
    );
    for i in 0..n {
        let sep = if i == 0 { "" } else { ", " };
        let _ = write!(sql, "{sep}(${}, ${})", 2 + 2 * i, 3 + 2 * i);
    }
    sql.push_str(") RETURNING id, attempt");
    sql
}

/// The job store on the host's database.
pub struct SqlStore {
    database: Arc<Database>,
    schema: OnceCell<()>,
}

impl SqlStore {
    /// A store on `database`; its tables are created on first use.
    pub fn new(database: Arc<Database>) -> SqlStore {
        SqlStore {
            database,
            schema: OnceCell::new(),
        }
    }

    async fn pool(&self) -> Result<&Pool, JobError> {
        let pool = self
            .database
            .pool()
            .await
            .map_err(|e| JobError::Unavailable(format!("{e:#}")))?;
        self.schema
            .get_or_try_init(|| async {
                let statements = match pool {
                    Pool::Sqlite(_) => SQLITE_SCHEMA,
                    Pool::Postgres(_) => POSTGRES_SCHEMA,
                };
                crate::services::database::host_schema(pool, "jobs", statements)
                    .await
                    .map_err(|e| JobError::Unavailable(format!("creating the job tables: {e:#}")))
            })
            .await?;
        Ok(pool)
    }
}

/// Runs `$body` with `$conn` bound to a pooled connection of either
/// database (their types differ, the statements mostly do not); `$pg`
/// tells the body which one it has. The connection goes back to the pool
/// as clean only when the body succeeded.
macro_rules! with_conn {
    ($self:ident, |$conn:ident, $pg:ident| $body:expr) => {{
        match $self.pool().await? {
            Pool::Sqlite(pool) => {
                let mut held = pool.acquire().await.map_err(JobError::from)?;
                #[allow(unused_variables, reason = "not every body needs to know")]
                let $pg = false;
                let $conn = &mut *held;
                let result: Result<_, JobError> = async { $body }.await;
                if result.is_ok() {
                    held.release();
                }
                result
            }
            Pool::Postgres(pool) => {
                let mut held = pool.acquire().await.map_err(JobError::from)?;
                #[allow(unused_variables, reason = "not every body needs to know")]
                let $pg = true;
                let $conn = &mut *held;
                let result: Result<_, JobError> = async { $body }.await;
                if result.is_ok() {
                    held.release();
                }
                result
            }
        }
    }};
}

impl From<sqlx::Error> for JobError {
    fn from(err: sqlx::Error) -> JobError {
        JobError::Unavailable(err.to_string())
    }
}

fn count(n: u32) -> i64 {
    i64::from(n)
}

impl JobStore for SqlStore {
    fn enqueue<'a>(&'a self, job: NewJob<'a>) -> StoreFuture<'a, String> {
        Box::pin(async move {
            with_conn!(self, |conn, _pg| {
                if let Some(key) = job.dedupe {
                    // A key older than the queue's retention is forgotten.
                    sqlx::query("UPDATE trellis_jobs SET dedupe = NULL WHERE queue = $1 AND dedupe = $2 AND created_at < $3")
                        .bind(job.queue)
                        .bind(key)
                        .bind(job.now - job.retention_ms)
                        .execute(&mut *conn)
                        .await?;
                }
                let inserted = sqlx::query(INSERT)
                    .bind(job.id)
                    .bind(job.queue)
                    .bind(job.payload)
                    .bind(i64::from(job.priority))
                    .bind(count(job.attempts))
                    .bind(job.run_at)
                    .bind(job.dedupe)
                    .bind(job.trace)
                    .bind(job.now)
                    .fetch_optional(&mut *conn)
                    .await?;
                match (inserted, job.dedupe) {
                    (Some(row), _) => Ok(row.try_get::<String, _>("id")?),
                    (None, Some(key)) => {
                        let first: Option<String> = sqlx::query_scalar(
                            "SELECT id FROM trellis_jobs WHERE queue = $1 AND dedupe = $2",
                        )
                        .bind(job.queue)
                        .bind(key)
                        .fetch_optional(&mut *conn)
                        .await?;
                        first.ok_or_else(|| {
                            JobError::Unavailable(
                                "the job with this dedupe key went away; try again".into(),
                            )
                        })
                    }
                    (None, None) => Err(JobError::Unavailable("the job was not stored".into())),
                }
            })
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
            with_conn!(self, |conn, _pg| {
                let done = sqlx::query(
                    "INSERT INTO trellis_jobs (id, queue, state, payload, priority, attempt, max_attempts, run_at, trace, created_at) \
                     SELECT $1 || '.' || name, topic || '/' || name, 'waiting', $2, 0, 0, $3, $4, $5, $4 \
                     FROM trellis_job_groups WHERE topic = $6",
                )
                .bind(event_id)
                .bind(payload)
                .bind(count(attempts))
                .bind(now)
                .bind(trace)
                .bind(topic)
                .execute(&mut *conn)
                .await?;
                Ok(done.rows_affected())
            })
        })
    }

    fn subscribe<'a>(&'a self, topic: &'a str, group: &'a str, now: i64) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            with_conn!(self, |conn, _pg| {
                sqlx::query("INSERT INTO trellis_job_groups (topic, name, since) VALUES ($1, $2, $3) ON CONFLICT (topic, name) DO NOTHING")
                    .bind(topic)
                    .bind(group)
                    .bind(now)
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        })
    }

    fn claim<'a>(
        &'a self,
        queue: &'a str,
        max: u32,
        now: i64,
        lease_until: i64,
    ) -> StoreFuture<'a, Vec<Claimed>> {
        Box::pin(async move {
            with_conn!(self, |conn, pg| {
                let sql = if pg { CLAIM_POSTGRES } else { CLAIM_SQLITE };
                let rows = sqlx::query(sql)
                    .bind(queue)
                    .bind(now)
                    .bind(lease_until)
                    .bind(count(max))
                    .fetch_all(&mut *conn)
                    .await?;
                let mut claimed = Vec::with_capacity(rows.len());
                for row in rows {
                    claimed.push(Claimed {
                        id: row.try_get("id")?,
                        payload: row.try_get("payload")?,
                        attempt: u32::try_from(row.try_get::<i64, _>("attempt")?)
                            .unwrap_or(u32::MAX),
                        attempts: u32::try_from(row.try_get::<i64, _>("max_attempts")?)
                            .unwrap_or(u32::MAX),
                        trace: row.try_get("trace")?,
                        created: row.try_get("created_at")?,
                    });
                }
                Ok(claimed)
            })
        })
    }

    fn ack_many<'a>(
        &'a self,
        _queue: &'a str,
        jobs: &'a [(&'a str, u32)],
        now: i64,
    ) -> StoreFuture<'a, Vec<bool>> {
        Box::pin(async move {
            if jobs.is_empty() {
                return Ok(Vec::new());
            }
            with_conn!(self, |conn, _pg| {
                // The (id, attempt) pairs still active, as the statements
                // return them.
                let mut acked: HashSet<(String, i64)> = HashSet::new();
                macro_rules! ack_chunk {
                    ($exec:expr, $chunk:expr) => {{
                        let chunk = $chunk;
                        let sql = ack_statement(chunk.len());
                        let mut query = sqlx::query(&sql).bind(now);
                        for (id, attempt) in chunk {
                            query = query.bind(*id).bind(count(*attempt));
                        }
                        for row in query.fetch_all($exec).await? {
                            acked.insert((row.try_get("id")?, row.try_get("attempt")?));
                        }
                    }};
                }
                if jobs.len() <= ACK_CHUNK {
                    ack_chunk!(&mut *conn, jobs);
                } else {
                    let mut tx = conn.begin().await?;
                    for chunk in jobs.chunks(ACK_CHUNK) {
                        ack_chunk!(&mut *tx, chunk);
                    }
                    tx.commit().await?;
                }
                // A job named twice was acknowledged by its first mention.
                Ok(jobs
                    .iter()
                    .map(|(id, attempt)| acked.remove(&((*id).to_owned(), count(*attempt))))
                    .collect())
            })
        })
    }

    fn fail<'a>(
        &'a self,
        _queue: &'a str,
        id: &'a str,
        attempt: u32,
        error: &'a str,
        retry_at: i64,
        now: i64,
    ) -> StoreFuture<'a, Settled> {
        Box::pin(async move {
            with_conn!(self, |conn, _pg| {
                let state: Option<String> = sqlx::query_scalar(
                    "UPDATE trellis_jobs SET \
                     state = CASE WHEN attempt >= max_attempts THEN 'dead' ELSE 'waiting' END, \
                     finished_at = CASE WHEN attempt >= max_attempts THEN $5 ELSE NULL END, \
                     run_at = $4, error = $3 \
                     WHERE id = $1 AND attempt = $2 AND state = 'active' RETURNING state",
                )
                .bind(id)
                .bind(count(attempt))
                .bind(error)
                .bind(retry_at)
                .bind(now)
                .fetch_optional(&mut *conn)
                .await?;
                Ok(match state.as_deref() {
                    Some("dead") => Settled::Dead,
                    Some(_) => Settled::Retry,
                    None => Settled::Lost,
                })
            })
        })
    }

    fn reclaim<'a>(
        &'a self,
        queue: &'a str,
        _visibility_ms: i64,
        now: i64,
    ) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            with_conn!(self, |conn, _pg| {
                let done = sqlx::query(
                    "UPDATE trellis_jobs SET \
                     state = CASE WHEN attempt >= max_attempts THEN 'dead' ELSE 'waiting' END, \
                     finished_at = CASE WHEN attempt >= max_attempts THEN $1 ELSE NULL END, \
                     error = 'lease expired: the worker did not settle the job within the visibility timeout', \
                     run_at = $1 \
                     WHERE queue = $2 AND state = 'active' AND run_at <= $1",
                )
                .bind(now)
                .bind(queue)
                .execute(&mut *conn)
                .await?;
                Ok(done.rows_affected())
            })
        })
    }

    fn counts<'a>(&'a self, now: i64) -> StoreFuture<'a, Vec<(String, Counts)>> {
        Box::pin(async move {
            with_conn!(self, |conn, _pg| {
                let rows = sqlx::query(
                    "SELECT queue, CASE WHEN state = 'waiting' AND run_at > $1 THEN 'delayed' ELSE state END AS s, \
                     COUNT(*) AS n FROM trellis_jobs GROUP BY queue, s",
                )
                .bind(now)
                .fetch_all(&mut *conn)
                .await?;
                let mut out: Vec<(String, Counts)> = Vec::new();
                for row in rows {
                    let queue: String = row.try_get("queue")?;
                    let state: String = row.try_get("s")?;
                    let n = u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0);
                    let at = match out.iter().position(|(q, _)| *q == queue) {
                        Some(at) => at,
                        None => {
                            out.push((queue, Counts::default()));
                            out.len() - 1
                        }
                    };
                    let c = &mut out[at].1;
                    match state.as_str() {
                        "waiting" => c.waiting += n,
                        "delayed" => c.delayed += n,
                        "active" => c.active += n,
                        "done" => c.done += n,
                        "dead" => c.dead += n,
                        _ => {}
                    }
                }
                Ok(out)
            })
        })
    }

    fn dead<'a>(&'a self, queue: &'a str, limit: u32) -> StoreFuture<'a, Vec<DeadJob>> {
        Box::pin(async move {
            with_conn!(self, |conn, _pg| {
                let rows = sqlx::query(
                    "SELECT id, payload, attempt, error, created_at, finished_at FROM trellis_jobs \
                     WHERE queue = $1 AND state = 'dead' ORDER BY finished_at DESC, id LIMIT $2",
                )
                .bind(queue)
                .bind(count(limit))
                .fetch_all(&mut *conn)
                .await?;
                let mut out = Vec::with_capacity(rows.len());
                for row in rows {
                    out.push(DeadJob {
                        id: row.try_get("id")?,
                        payload: row.try_get("payload")?,
                        attempts: u32::try_from(row.try_get::<i64, _>("attempt")?).unwrap_or(0),
                        error: row.try_get("error")?,
                        created_at: row.try_get("created_at")?,
                        failed_at: row.try_get("finished_at")?,
                    });
                }
                Ok(out)
            })
        })
    }

    fn retry_dead<'a>(
        &'a self,
        queue: &'a str,
        id: Option<&'a str>,
        now: i64,
    ) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            with_conn!(self, |conn, _pg| {
                let done = sqlx::query(
                    "UPDATE trellis_jobs SET state = 'waiting', attempt = 0, run_at = $2, finished_at = NULL \
                     WHERE queue = $1 AND state = 'dead' AND ($3 IS NULL OR id = $3)",
                )
                .bind(queue)
                .bind(now)
                .bind(id)
                .execute(&mut *conn)
                .await?;
                Ok(done.rows_affected())
            })
        })
    }

    fn purge_dead<'a>(&'a self, queue: &'a str, id: Option<&'a str>) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            with_conn!(self, |conn, _pg| {
                let done = sqlx::query(
                    "DELETE FROM trellis_jobs WHERE queue = $1 AND state = 'dead' AND ($2 IS NULL OR id = $2)",
                )
                .bind(queue)
                .bind(id)
                .execute(&mut *conn)
                .await?;
                Ok(done.rows_affected())
            })
        })
    }

    fn sweep<'a>(&'a self, queue: &'a str, before: i64) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            with_conn!(self, |conn, _pg| {
                let done = sqlx::query(
                    "DELETE FROM trellis_jobs WHERE queue = $1 AND state = 'done' AND finished_at < $2",
                )
                .bind(queue)
                .bind(before)
                .execute(&mut *conn)
                .await?;
                sqlx::query("UPDATE trellis_jobs SET dedupe = NULL WHERE queue = $1 AND dedupe IS NOT NULL AND created_at < $2")
                    .bind(queue)
                    .bind(before)
                    .execute(&mut *conn)
                    .await?;
                Ok(done.rows_affected())
            })
        })
    }

    fn fire<'a>(&'a self, schedule: &'a str, tick: i64, job: NewJob<'a>) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            with_conn!(self, |conn, _pg| {
                // The tick's row and its job commit together: the host that
                // inserts the row enqueues, every other host sees the
                // conflict and does nothing.
                let mut tx = conn.begin().await?;
                let claimed = sqlx::query(
                    "INSERT INTO trellis_schedule_ticks (name, tick) VALUES ($1, $2) ON CONFLICT (name, tick) DO NOTHING",
                )
                .bind(schedule)
                .bind(tick)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if claimed {
                    sqlx::query(INSERT)
                        .bind(job.id)
                        .bind(job.queue)
                        .bind(job.payload)
                        .bind(i64::from(job.priority))
                        .bind(count(job.attempts))
                        .bind(job.run_at)
                        .bind(job.dedupe)
                        .bind(job.trace)
                        .bind(job.now)
                        .execute(&mut *tx)
                        .await?;
                    // Ticks older than a day can no longer be contested.
                    sqlx::query("DELETE FROM trellis_schedule_ticks WHERE name = $1 AND tick < $2")
                        .bind(schedule)
                        .bind(tick - 24 * 3600 * 1000)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(claimed)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::manifest::Manifest;
    use crate::observability::metrics::Metrics;
    use crate::services::jobs::JobStore;
    use std::path::Path;

    /// A store on `url` (its tables are made on first use).
    fn store_on(url: &str) -> SqlStore {
        let dir = std::env::temp_dir().join(format!("trellis-jobs-{}", crate::ids::random_hex(64)));
        std::fs::create_dir_all(&dir).unwrap();
        let manifest = Manifest::parse("", Path::new("t.toml"), dir.clone()).unwrap();
        let url = url.replace("{dir}", &dir.display().to_string());
        let database = Database::new(&manifest, Some(&url), &Metrics::new());
        SqlStore::new(Arc::new(database))
    }

    /// Runs `test` on a store on a fresh SQLite file, then on one in a
    /// fresh schema of the test PostgreSQL (`TRELLIS_TEST_DATABASE_URL`,
    /// default the local `test` database). PostgreSQL is required, never
    /// skipped: its SQL is a dialect of its own.
    async fn on_both<F, Fut>(test: F)
    where
        F: Fn(SqlStore) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        use sqlx::Connection as _;
        eprintln!("on SQLite");
        test(store_on("sqlite://{dir}/jobs.db")).await;

        let server = std::env::var("TRELLIS_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let schema = format!("unit_jobs_{}", crate::ids::random_hex(64));
        let mut admin = sqlx::PgConnection::connect(&server)
            .await
            .unwrap_or_else(|err| panic!("PostgreSQL at {server} is required: {err}"));
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut admin)
            .await
            .unwrap();
        let separator = if server.contains('?') { '&' } else { '?' };
        eprintln!("on PostgreSQL, schema {schema}");
        test(store_on(&format!(
            "{server}{separator}options=-csearch_path%3D{schema}"
        )))
        .await;
        sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&mut admin)
            .await
            .unwrap();
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
        on_both(|store| async move {
            assert_eq!(store.enqueue(job("a", 0, None)).await.unwrap(), "a");
            assert_eq!(
                store.enqueue(job("later", 50, None)).await.unwrap(),
                "later"
            );
            let claimed = store.claim("q", 10, 10, 1000).await.unwrap();
            assert_eq!(claimed.len(), 1, "the delayed job is not ready");
            assert_eq!((claimed[0].id.as_str(), claimed[0].attempt), ("a", 1));
            assert!(
                store.claim("q", 10, 20, 1000).await.unwrap().is_empty(),
                "leased"
            );
            let counts = store.counts(20).await.unwrap();
            assert_eq!(
                counts[0].1,
                Counts {
                    active: 1,
                    delayed: 1,
                    ..Counts::default()
                }
            );
            assert!(store.ack("q", "a", 1, 30).await.unwrap());
            assert!(!store.ack("q", "a", 1, 31).await.unwrap(), "acked once");
            assert_eq!(store.sweep("q", 30).await.unwrap(), 0, "within retention");
            assert_eq!(store.sweep("q", 31).await.unwrap(), 1);
        })
        .await;
    }

    #[tokio::test]
    async fn failures_retry_then_die_and_expired_leases_come_back() {
        on_both(|store| async move {
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
            // The lease expires; a stale settlement of attempt 1 changes nothing.
            assert_eq!(
                store.fail("q", "a", 1, "late", 0, 2).await.unwrap(),
                Settled::Lost
            );
            assert_eq!(store.reclaim("q", 100, 150).await.unwrap(), 1);
            let dead = store.dead("q", 10).await.unwrap();
            assert_eq!(dead.len(), 1, "out of attempts after the lease expired");
            assert!(dead[0].error.as_deref().unwrap().contains("lease expired"));
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
            assert_eq!(store.purge_dead("q", None).await.unwrap(), 1);
            assert!(store.counts(300).await.unwrap().is_empty());
        })
        .await;
    }

    #[tokio::test]
    async fn dedupe_keys_hold_for_the_retention_and_ticks_fire_once() {
        on_both(|store| async move {
            assert_eq!(store.enqueue(job("a", 0, Some("k"))).await.unwrap(), "a");
            assert_eq!(store.enqueue(job("b", 0, Some("k"))).await.unwrap(), "a");
            let mut late = job("c", 0, Some("k"));
            late.now = 2000;
            assert_eq!(
                store.enqueue(late).await.unwrap(),
                "c",
                "past the retention"
            );
            assert!(store.fire("s", 1000, job("t1", 1000, None)).await.unwrap());
            assert!(!store.fire("s", 1000, job("t2", 1000, None)).await.unwrap());
            assert!(store.fire("s", 2000, job("t3", 2000, None)).await.unwrap());
            store.subscribe("topic", "g1", 0).await.unwrap();
            store.subscribe("topic", "g2", 0).await.unwrap();
            store.subscribe("topic", "g1", 5).await.unwrap();
            assert_eq!(
                store.publish("topic", "e", b"x", 3, None, 0).await.unwrap(),
                2
            );
            let c = store.claim("topic/g2", 5, 0, 10).await.unwrap();
            assert_eq!(c.len(), 1);
            assert_eq!((c[0].id.as_str(), c[0].attempts), ("e.g2", 3));
        })
        .await;
    }

    #[tokio::test]
    async fn ack_many_settles_the_jobs_still_leased_and_only_once() {
        on_both(|store| async move {
            let mut first = job("c", 0, None);
            first.now = 7;
            store.enqueue(first).await.unwrap();
            let c = store.claim("q", 1, 0, 100).await.unwrap();
            assert_eq!(
                (c[0].id.as_str(), c[0].created),
                ("c", 7),
                "the enqueue time"
            );
            for id in ["a", "b", "d"] {
                store.enqueue(job(id, 0, None)).await.unwrap();
            }
            assert_eq!(store.claim("q", 10, 0, 1000).await.unwrap().len(), 3);
            // c's lease (until 100) expires; a, b and d hold theirs.
            assert_eq!(store.reclaim("q", 0, 150).await.unwrap(), 1);
            assert!(store.ack_many("q", &[], 160).await.unwrap().is_empty());
            // Two statements (ACK_CHUNK is 3 in tests) in one transaction.
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
                    160,
                )
                .await
                .unwrap();
            assert_eq!(acked, [true, false, false, true, false, false]);
            let counts = store.counts(160).await.unwrap()[0].1;
            assert_eq!(
                (counts.done, counts.active, counts.waiting),
                (2, 1, 1),
                "{counts:?}"
            );
            let again = store.claim("q", 10, 170, 1000).await.unwrap();
            assert_eq!((again[0].id.as_str(), again[0].attempt), ("c", 2));
            assert!(
                store.ack("q", "b", 1, 180).await.unwrap(),
                "b's own attempt"
            );
            assert_eq!(store.ack_many("q", &[("c", 2)], 180).await.unwrap(), [true]);
            assert_eq!(store.counts(190).await.unwrap()[0].1.done, 4);
        })
        .await;
    }
}
