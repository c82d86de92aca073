//! Background jobs end to end: the `queue` capability (`tests/plugins/
//! job-probe`), workers (`tests/plugins/job-worker`, which records every
//! attempt in `job_runs`), schedules, events, the admin API and the
//! `examples/jobs` walk-through, on the database backend (SQLite and
//! PostgreSQL) and on the Redis Streams one (each test under a key prefix
//! of its own on the shared Redis; the worker's records stay in SQLite).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Connection as _;

use crate::database::{Db, PgProxy};
use crate::harness::{
    Launch, Manifest, RedisServer, TempDir, Trellis, Upstream, component, metric, redis_url,
    run_cli, shared_cache_dir, unique, wait_until,
};

const TOKEN: &str = "jobs-admin-token";

const RUNS: &str = "CREATE TABLE job_runs (job_id TEXT NOT NULL, source TEXT NOT NULL, \
    tag TEXT NOT NULL, attempt BIGINT NOT NULL, at_ms BIGINT NOT NULL);\n";

/// The test `$name` on one job store: `sqlite` or `postgres` (the
/// database backend), or `redis` (Redis Streams; the worker's records stay
/// in SQLite).
macro_rules! on_store {
    ($name:ident, sqlite) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn sqlite() {
            super::$name(super::Setup::new(crate::database::Db::sqlite())).await;
        }
    };
    ($name:ident, postgres) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn postgres() {
            super::$name(super::Setup::new(crate::database::Db::postgres().await)).await;
        }
    };
    ($name:ident, redis) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn redis() {
            super::$name(super::Setup::redis(crate::database::Db::sqlite())).await;
        }
    };
}

/// Runs each test on every job store: the database (SQLite, PostgreSQL)
/// and Redis Streams.
macro_rules! on_all {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            on_store!($name, sqlite);
            on_store!($name, postgres);
            on_store!($name, redis);
        }
    )*};
}

/// Runs each test on SQLite and on Redis Streams: what the test checks
/// does not depend on the database's dialect.
macro_rules! on_sqlite_and_redis {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            on_store!($name, sqlite);
            on_store!($name, redis);
        }
    )*};
}

/// A test's database, job store, migration and manifest pieces.
struct Setup {
    db: Db,
    dir: TempDir,
    /// With Redis Streams as the job store: the Redis URL and this test's
    /// own `jobs_prefix`; `None` keeps jobs in the database.
    redis: Option<(String, String)>,
    /// Deletes the test's job keys from the shared Redis.
    _keys: Option<JobKeys>,
}

/// A test's `jobs_prefix` on a Redis; its keys are deleted on drop, so
/// the shared Redis does not collect every run's jobs.
struct JobKeys {
    url: String,
    prefix: String,
}

impl Drop for JobKeys {
    fn drop(&mut self) {
        let (url, pattern) = (self.url.clone(), format!("{}:*", self.prefix));
        // Off the test's runtime: the sync client blocks.
        let _ = std::thread::spawn(move || -> redis::RedisResult<()> {
            let mut conn = redis::Client::open(url)?.get_connection()?;
            let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query(&mut conn)?;
            for chunk in keys.chunks(500) {
                redis::cmd("DEL").arg(chunk).query::<()>(&mut conn)?;
            }
            Ok(())
        })
        .join();
    }
}

impl Setup {
    fn new(db: Db) -> Setup {
        let dir = TempDir::new();
        dir.write("001_runs.sql", RUNS);
        Setup {
            db,
            dir,
            redis: None,
            _keys: None,
        }
    }

    /// Jobs on the shared Redis, under a prefix no other test uses.
    fn redis(db: Db) -> Setup {
        Setup::redis_at(db, redis_url())
    }

    /// Jobs on the Redis at `url`, under a prefix of the test's own.
    fn redis_at(db: Db, url: String) -> Setup {
        let prefix = unique("trellis-test-jobs-");
        Setup {
            redis: Some((url.clone(), prefix.clone())),
            _keys: Some(JobKeys { url, prefix }),
            ..Setup::new(db)
        }
    }

    /// A manifest on this database with `sections` (queues, workers,
    /// schedules) and the probe routes, which may use `uses`
    /// (`queues = [...]` / `topics = [...]` lines).
    fn manifest(&self, sections: &str, uses: &[&str]) -> Manifest {
        let migration = self.dir.path().join("001_runs.sql");
        let mut extra = vec!["grants = [\"queue\", \"log\"]"];
        extra.extend_from_slice(uses);
        let mut manifest = self
            .db
            .manifest(Manifest::new())
            .database(&format!(
                "migrations = [{:?}]",
                migration.display().to_string()
            ))
            .server("shutdown_grace = \"10s\"");
        if let Some((url, prefix)) = &self.redis {
            manifest = manifest.section(&format!(
                "[redis]\nurl = {url:?}\ntimeout = \"1s\"\njobs_prefix = {prefix:?}"
            ));
        }
        manifest
            .section(sections)
            .route("enqueue", "/enqueue", component::JOB_PROBE, &extra)
            .route("publish", "/publish", component::JOB_PROBE, &extra)
    }

    async fn start(&self, manifest: Manifest) -> Trellis {
        Trellis::launch(Launch {
            manifest: Some(manifest),
            cache_dir: Some(shared_cache_dir()),
            admin_token: Some(TOKEN.to_owned()),
            ..Launch::default()
        })
        .await
    }

    /// Every `job_runs` row: (job id, source, tag, attempt, at ms), oldest first.
    async fn runs(&self) -> Vec<(String, String, String, i64, i64)> {
        let sql =
            "SELECT job_id, source, tag, attempt, at_ms FROM job_runs ORDER BY at_ms, attempt";
        match &self.db {
            Db::Sqlite(_) => {
                let options =
                    sqlx::sqlite::SqliteConnectOptions::new().filename(self.db.sqlite_path());
                let mut conn = sqlx::SqliteConnection::connect_with(&options)
                    .await
                    .unwrap();
                sqlx::query_as(sql)
                    .fetch_all(&mut conn)
                    .await
                    .unwrap_or_default()
            }
            Db::Postgres(schema) => {
                let mut conn = schema.connect().await;
                sqlx::query_as(sql)
                    .fetch_all(&mut conn)
                    .await
                    .unwrap_or_default()
            }
        }
    }

    /// The runs of job `id`.
    async fn runs_of(&self, id: &str) -> Vec<(String, String, String, i64, i64)> {
        self.runs()
            .await
            .into_iter()
            .filter(|r| r.0 == id)
            .collect()
    }

    /// Waits for `n` runs of job `id`.
    async fn wait_runs(&self, id: &str, n: usize) -> Vec<(String, String, String, i64, i64)> {
        wait_until(
            &format!("{n} runs of job {id}"),
            Duration::from_millis(50),
            async || {
                let runs = self.runs_of(id).await;
                (runs.len() >= n).then_some(runs)
            },
        )
        .await
    }
}

/// Enqueues `payload` through the probe route; the JSON answer.
async fn enqueue(trellis: &Trellis, query: &str, payload: &str) -> Value {
    let response = trellis
        .client()
        .post(trellis.url(&format!("/enqueue?{query}")))
        .body(payload.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{query}");
    serde_json::from_str(&response.text().await.unwrap()).unwrap()
}

/// The job id of an enqueue that must succeed.
async fn job(trellis: &Trellis, query: &str, payload: &str) -> String {
    let answer = enqueue(trellis, query, payload).await;
    answer["job"]
        .as_str()
        .unwrap_or_else(|| panic!("enqueue {query} {payload}: {answer}"))
        .to_owned()
}

async fn admin(trellis: &Trellis, method: reqwest::Method, path: &str) -> (u16, Value) {
    admin_with(trellis, method, path, None).await
}

/// An admin API request, with `body` as a component upload when given;
/// the status and the JSON answer (null when there is none).
async fn admin_with(
    trellis: &Trellis,
    method: reqwest::Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> (u16, Value) {
    let mut request = trellis
        .client()
        .request(method, format!("{}{path}", trellis.admin_url()))
        .bearer_auth(TOKEN);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/wasm")
            .body(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (
        status,
        serde_json::from_str(&response.text().await.unwrap()).unwrap_or(Value::Null),
    )
}

/// The `/admin/queues` entry of `queue`.
async fn counts(trellis: &Trellis, queue: &str) -> Value {
    let (status, body) = admin(trellis, reqwest::Method::GET, "/admin/queues").await;
    assert_eq!(status, 200, "{body}");
    body["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == queue)
        .cloned()
        .unwrap_or_else(|| panic!("no queue {queue} in {body}"))
}

async fn wait_counts(trellis: &Trellis, queue: &str, pred: impl Fn(&Value) -> bool) -> Value {
    wait_until(
        &format!("counts of {queue}"),
        Duration::from_millis(100),
        async || {
            let c = counts(trellis, queue).await;
            pred(&c).then_some(c)
        },
    )
    .await
}

const WORK: &str = r#"
[queues.work]
attempts = 3
backoff = { initial = "300ms", max = "5s" }
visibility = "5s"

[queues.other]

[[worker]]
name = "runner"
queue = "work"
component = "JOB_WORKER"
grants = ["sql", "queue"]
queues = ["work"]
outbound = []
concurrency = 2
timeout = "2s"
memory = "16MiB"
"#;

fn work() -> String {
    WORK.replace("JOB_WORKER", component::JOB_WORKER)
}

on_all!(enqueued_jobs_run_once_and_are_counted);

async fn enqueued_jobs_run_once_and_are_counted(setup: Setup) {
    let trellis = setup
        .start(setup.manifest(&work(), &["queues = [\"work\"]"]))
        .await;
    let id = job(&trellis, "queue=work", "ok:first").await;
    assert_eq!(id.len(), 32, "{id}");
    let runs = setup.wait_runs(&id, 1).await;
    assert_eq!(runs[0].1, "queue:work");
    assert_eq!(runs[0].2, "first");
    assert_eq!(runs[0].3, 1, "the first attempt");
    let c = wait_counts(&trellis, "work", |c| c["done"] == 1).await;
    assert_eq!(
        c,
        json!({"name":"work","waiting":0,"active":0,"delayed":0,"done":1,"dead":0})
    );
    // The job's log line carries its id, its worker and the outcome.
    let line = trellis
        .wait_log("job done", |l| {
            l["message"] == "job done" && l["job_id"] == id.as_str()
        })
        .await;
    assert_eq!(line["worker"], "runner");
    // And the time from its enqueue to its acknowledgement, which holds
    // the attempt's own.
    let latency = line["latency_ms"].as_u64().expect("latency_ms");
    let duration = line["duration_ms"].as_u64().expect("duration_ms");
    assert!(
        latency + 1 >= duration && latency < 30_000,
        "{latency} ms from enqueue to done, {duration} ms in the worker"
    );
    assert_eq!(
        metric(
            &trellis,
            "trellis_jobs_total",
            &[("queue", "work"), ("outcome", "done")]
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &trellis,
            "trellis_queue_depth",
            &[("queue", "work"), ("state", "done")]
        )
        .await,
        1.0
    );
    assert!(
        metric(
            &trellis,
            "trellis_job_duration_seconds_count",
            &[("queue", "work")]
        )
        .await
            >= 1.0
    );
    // Still once, a while later.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(setup.runs_of(&id).await.len(), 1);
}

on_all!(bad_names_and_payloads_are_error_results);

async fn bad_names_and_payloads_are_error_results(setup: Setup) {
    let trellis = setup
        .start(setup.manifest(&work(), &["queues = [\"work\"]"]))
        .await;
    for (query, payload, error, detail) in [
        ("queue=nope", "ok:x", "unknown-queue", "nope"),
        ("queue=other", "ok:x", "not-granted", "other"),
        ("queue=work&dedupe=", "ok:x", "invalid-options", ""),
        ("queue=work&attempts=0", "ok:x", "invalid-options", ""),
    ] {
        let answer = enqueue(&trellis, query, payload).await;
        assert_eq!(answer["error"], error, "{query}: {answer}");
        assert!(
            answer["detail"].as_str().unwrap().contains(detail),
            "{answer}"
        );
    }
    let big = "x".repeat(300 << 10);
    let answer = enqueue(&trellis, "queue=work", &big).await;
    assert_eq!(answer["error"], "payload-too-large", "{answer}");
    assert_eq!(answer["detail"], (256 << 10).to_string());
    let response = trellis
        .client()
        .post(trellis.url("/publish?topic=nobody"))
        .body("x")
        .send()
        .await
        .unwrap();
    let answer: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(answer["error"], "unknown-queue", "{answer}");
    // A worker chaining to a queue it may not use gets an error result too.
    let id = job(&trellis, "queue=work", "chain:other:x").await;
    let runs = setup.wait_runs(&id, 1).await;
    assert_eq!(runs[0].2, "chain:not-granted");
    let id = job(&trellis, "queue=work", "chain:work:y").await;
    assert_eq!(setup.wait_runs(&id, 1).await[0].2, "chain:enqueued");
    wait_until("the chained job", Duration::from_millis(50), async || {
        setup.runs().await.iter().any(|r| r.2 == "y").then_some(())
    })
    .await;
    let c = counts(&trellis, "work").await;
    assert_eq!(c["dead"], 0, "{c}");
}

on_sqlite_and_redis!(delays_and_backoff_hold_their_lower_bounds);

async fn delays_and_backoff_hold_their_lower_bounds(setup: Setup) {
    let trellis = setup
        .start(setup.manifest(&work(), &["queues = [\"work\"]"]))
        .await;
    let before = now_ms();
    let delayed = job(&trellis, "queue=work&delay_ms=1200", "ok:late").await;
    let c = counts(&trellis, "work").await;
    assert_eq!(c["delayed"], 1, "{c}");
    let runs = setup.wait_runs(&delayed, 1).await;
    let waited = runs[0].4 - before;
    assert!((1200..6000).contains(&waited), "ran after {waited} ms");

    // attempts = 3, backoff 300 ms doubling, jittered down by at most 25 %.
    let failing = job(&trellis, "queue=work", "fail:again").await;
    let runs = setup.wait_runs(&failing, 3).await;
    let gaps: Vec<i64> = runs.windows(2).map(|w| w[1].4 - w[0].4).collect();
    assert_eq!(runs.iter().map(|r| r.3).collect::<Vec<_>>(), [1, 2, 3]);
    assert!((225..3000).contains(&gaps[0]), "first retry after {gaps:?}");
    assert!(
        (450..4000).contains(&gaps[1]),
        "second retry after {gaps:?}"
    );
    wait_counts(&trellis, "work", |c| c["dead"] == 1).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(setup.runs_of(&failing).await.len(), 3, "no fourth attempt");
}

on_sqlite_and_redis!(a_dedupe_key_enqueues_once);

async fn a_dedupe_key_enqueues_once(setup: Setup) {
    let trellis = setup
        .start(setup.manifest(&work(), &["queues = [\"work\"]"]))
        .await;
    let first = job(&trellis, "queue=work&dedupe=welcome-7", "ok:d1").await;
    let second = job(&trellis, "queue=work&dedupe=welcome-7", "ok:d2").await;
    assert_eq!(first, second);
    setup.wait_runs(&first, 1).await;
    let third = job(&trellis, "queue=work&dedupe=welcome-7", "ok:d3").await;
    assert_eq!(first, third, "the key holds for the queue's retention");
    let other = job(&trellis, "queue=work&dedupe=welcome-8", "ok:d4").await;
    assert_ne!(first, other);
    setup.wait_runs(&other, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tags: Vec<String> = setup.runs().await.into_iter().map(|r| r.2).collect();
    assert_eq!(tags, ["d1", "d4"]);
}

on_all!(poison_jobs_die_and_the_admin_api_retries_them);

async fn poison_jobs_die_and_the_admin_api_retries_them(setup: Setup) {
    use reqwest::Method;
    let trellis = setup
        .start(setup.manifest(&work(), &["queues = [\"work\"]"]))
        .await;
    let id = job(&trellis, "queue=work&attempts=2", "fail:poison").await;
    setup.wait_runs(&id, 2).await;
    wait_counts(&trellis, "work", |c| c["dead"] == 1).await;
    let (status, dead) = admin(&trellis, Method::GET, "/admin/queues/work/dead").await;
    assert_eq!(status, 200);
    let entry = &dead["dead"][0];
    assert_eq!(entry["id"], id.as_str(), "{dead}");
    assert_eq!(entry["attempts"], 2);
    assert_eq!(entry["payload"], "fail:poison");
    assert!(
        entry["error"]
            .as_str()
            .unwrap()
            .contains("failing on purpose"),
        "{entry}"
    );
    // The store shows the job dead just before the runner counts it.
    crate::harness::wait_until(
        "the dead job counted",
        std::time::Duration::from_millis(10),
        async || {
            let dead = metric(
                &trellis,
                "trellis_jobs_total",
                &[("queue", "work"), ("outcome", "dead")],
            )
            .await;
            (dead == 1.0).then_some(())
        },
    )
    .await;
    assert_eq!(
        metric(
            &trellis,
            "trellis_jobs_total",
            &[("queue", "work"), ("outcome", "retry")]
        )
        .await,
        1.0
    );

    let (status, body) = admin(
        &trellis,
        Method::POST,
        &format!("/admin/queues/work/dead/{id}/retry"),
    )
    .await;
    assert_eq!((status, &body["retried"]), (200, &json!(1)), "{body}");
    let runs = setup.wait_runs(&id, 4).await;
    assert_eq!(
        runs.iter().map(|r| r.3).collect::<Vec<_>>(),
        [1, 2, 1, 2],
        "fresh attempts"
    );
    wait_counts(&trellis, "work", |c| c["dead"] == 1).await;
    let (status, body) = admin(&trellis, Method::POST, "/admin/queues/work/dead/retry").await;
    assert_eq!((status, &body["retried"]), (200, &json!(1)), "{body}");
    setup.wait_runs(&id, 6).await;
    wait_counts(&trellis, "work", |c| c["dead"] == 1).await;
    let (status, body) = admin(&trellis, Method::DELETE, "/admin/queues/work/dead").await;
    assert_eq!((status, &body["purged"]), (200, &json!(1)), "{body}");
    assert_eq!(counts(&trellis, "work").await["dead"], 0);
    let (status, _) = admin(&trellis, Method::POST, "/admin/queues/work/dead/nope/retry").await;
    assert_eq!(status, 404);
    let (status, body) = admin(&trellis, Method::GET, "/admin/queues/nope/dead").await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trapping_looping_and_hoarding_workers_fail_their_attempt_only() {
    let setup = Setup::new(Db::sqlite());
    // One job at a time, one attempt each: a stalled queue would never
    // reach the last job.
    let sections = work()
        .replace("concurrency = 2", "concurrency = 1")
        .replace("attempts = 3", "attempts = 1");
    let trellis = setup
        .start(setup.manifest(&sections, &["queues = [\"work\"]"]))
        .await;
    let trap = job(&trellis, "queue=work", "trap:t").await;
    let spin = job(&trellis, "queue=work", "loop:l").await;
    let hoard = job(&trellis, "queue=work", "membomb:m").await;
    let after = job(&trellis, "queue=work", "ok:after").await;
    setup.wait_runs(&after, 1).await;
    // The last job ran after the three that failed, but its acknowledgement
    // (batched) may reach the store after their dead letters.
    wait_counts(&trellis, "work", |c| c["dead"] == 3 && c["done"] == 1).await;
    let (_, dead) = admin(&trellis, reqwest::Method::GET, "/admin/queues/work/dead").await;
    let error_of = |id: &str| -> String {
        dead["dead"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["id"] == id)
            .map(|j| j["error"].as_str().unwrap().to_owned())
            .unwrap_or_else(|| panic!("{id} not dead: {dead}"))
    };
    assert!(error_of(&trap).contains("trapped"), "{}", error_of(&trap));
    assert!(error_of(&spin).contains("timeout"), "{}", error_of(&spin));
    assert!(error_of(&hoard).contains("trapped"), "{}", error_of(&hoard));
}

/// `bytes` (a component) with a custom section holding `tag` appended:
/// the same code under another digest.
fn tagged(bytes: &[u8], tag: &str) -> Vec<u8> {
    let name = b"trellis-test";
    let size = 1 + name.len() + tag.len();
    assert!(size < 128, "one-byte LEB128 sizes");
    let mut out = bytes.to_vec();
    out.extend_from_slice(&[0, size as u8, name.len() as u8]);
    out.extend_from_slice(name);
    out.extend_from_slice(tag.as_bytes());
    out
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn put_worker(trellis: &Trellis, name: &str, bytes: Vec<u8>) -> (u16, Value) {
    let path = format!("/admin/workers/{name}");
    admin_with(trellis, reqwest::Method::PUT, &path, Some(bytes)).await
}

/// The version of the worker that settled job `id`, from its log line.
async fn done_on(trellis: &Trellis, id: &str) -> i64 {
    let line = trellis
        .wait_log(&format!("job {id} done"), |l| {
            l["message"] == "job done" && l["job_id"] == id
        })
        .await;
    line["version"]
        .as_i64()
        .expect("the version in the log line")
}

/// A worker's component is swapped through the admin API and by watch
/// mode: a job in progress finishes on the version it started on, later
/// ones run on the new one, and what is not a worker changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_components_are_hot_loaded() {
    let setup = Setup::new(Db::sqlite());
    let original = std::fs::read(component::JOB_WORKER).unwrap();
    let file = setup.dir.path().join("worker.wasm");
    std::fs::write(&file, &original).unwrap();
    let sections = WORK.replace("JOB_WORKER", &file.display().to_string());
    let trellis = Trellis::launch(Launch {
        manifest: Some(setup.manifest(&sections, &["queues = [\"work\"]"])),
        cache_dir: Some(shared_cache_dir()),
        admin_token: Some(TOKEN.to_owned()),
        args: vec!["--watch".to_owned()],
        ..Launch::default()
    })
    .await;
    let (_, listed) = admin(&trellis, reqwest::Method::GET, "/admin/workers").await;
    assert_eq!(listed["workers"][0]["name"], "runner", "{listed}");
    assert_eq!(listed["workers"][0]["version"], 1, "{listed}");
    assert_eq!(
        listed["workers"][0]["digest"],
        sha256(&original),
        "{listed}"
    );

    let slow = job(&trellis, "queue=work", "sleep:1000:slow").await;
    setup.wait_runs(&slow, 1).await;
    let second = tagged(&original, "2");
    let (status, answer) = put_worker(&trellis, "runner", second.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["version"], 2, "{answer}");
    assert_eq!(answer["digest"], sha256(&second), "{answer}");
    let fresh = job(&trellis, "queue=work", "ok:fresh").await;
    assert_eq!(
        done_on(&trellis, &fresh).await,
        2,
        "enqueued after the swap"
    );
    assert_eq!(done_on(&trellis, &slow).await, 1, "in progress at the swap");

    let (status, answer) = put_worker(&trellis, "nope", second.clone()).await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (404, &json!("NOT_FOUND")),
        "{answer}"
    );
    for (refused, reason) in [
        (component::HELLO, "trellis:api/worker"),
        (component::JOB_PROBE, "does not grant \"log\""),
    ] {
        let (status, answer) =
            put_worker(&trellis, "runner", std::fs::read(refused).unwrap()).await;
        assert_eq!(status, 422, "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(reason), "{message}");
    }
    let (status, _) = put_worker(&trellis, "runner", Vec::new()).await;
    assert_eq!(status, 422);
    let (_, shown) = admin(&trellis, reqwest::Method::GET, "/admin/workers/runner").await;
    assert_eq!(shown["version"], 2, "refusals change nothing: {shown}");

    // Watch mode reloads the worker's file when it changes.
    let third = tagged(&original, "3");
    std::fs::write(&file, &third).unwrap();
    wait_until(
        "the watched worker file reloaded",
        Duration::from_millis(100),
        async || {
            let (_, shown) = admin(&trellis, reqwest::Method::GET, "/admin/workers/runner").await;
            (shown["digest"] == sha256(&third)).then_some(())
        },
    )
    .await;
    let later = job(&trellis, "queue=work", "ok:later").await;
    assert_eq!(done_on(&trellis, &later).await, 3);
}

/// A worker calls the upstreams its `outbound` names, like a route, and
/// nothing else; a worker naming an upstream the manifest lacks is a
/// manifest error with its line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_call_the_upstreams_they_are_granted() {
    let upstream = Upstream::start().await;
    let setup = Setup::new(Db::sqlite());
    let sections = format!(
        "[upstreams.up]\nurl = \"http://{}\"\n{}",
        upstream.addr,
        work().replace("outbound = []", "outbound = [\"up\"]")
    );
    let trellis = setup
        .start(setup.manifest(&sections, &["queues = [\"work\"]"]))
        .await;
    let granted = job(
        &trellis,
        "queue=work",
        &format!("fetch:http://{}/ok", upstream.addr),
    )
    .await;
    let other = job(&trellis, "queue=work", "fetch:http://127.0.0.1:9/ok").await;
    assert_eq!(setup.wait_runs(&granted, 1).await[0].2, "fetch:200");
    assert_eq!(setup.wait_runs(&other, 1).await[0].2, "fetch:denied");
    assert_eq!(upstream.requests(), 1, "only the granted call was sent");
    drop(trellis);

    let unknown = work().replace("outbound = []", "outbound = [\"nope\"]");
    let manifest = setup.dir.write(
        "bad.toml",
        &setup.manifest(&unknown, &["queues = [\"work\"]"]).render(),
    );
    let out = run_cli(&["check", manifest.to_str().unwrap()], setup.dir.path()).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("worker[0].outbound") && stderr.contains("\"nope\""),
        "{stderr}"
    );
}

on_sqlite_and_redis!(a_job_whose_host_was_killed_runs_again_after_its_visibility);

async fn a_job_whose_host_was_killed_runs_again_after_its_visibility(setup: Setup) {
    let sections = work().replace("visibility = \"5s\"", "visibility = \"3s\"");
    let manifest = setup.manifest(&sections, &["queues = [\"work\"]"]);
    let first = setup.start(manifest.clone()).await;
    let id = job(&first, "queue=work", "sleep:1500:k").await;
    setup.wait_runs(&id, 1).await;
    let killed_at = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-KILL", &first.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    drop(first);
    let second = setup.start(manifest).await;
    let runs = setup.wait_runs(&id, 3).await;
    let tags: Vec<(&str, i64)> = runs.iter().map(|r| (r.2.as_str(), r.3)).collect();
    assert_eq!(tags, [("k:start", 1), ("k:start", 2), ("k:done", 2)]);
    let redelivered_after = runs[1].4 - runs[0].4;
    assert!(
        redelivered_after >= 3000,
        "redelivered {redelivered_after} ms after the first start, within the 3 s visibility"
    );
    assert!(killed_at.elapsed() < Duration::from_secs(60));
    let c = wait_counts(&second, "work", |c| c["done"] == 1).await;
    assert_eq!(c["dead"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_running_jobs_finish() {
    let setup = Setup::new(Db::sqlite());
    let mut trellis = setup
        .start(setup.manifest(&work(), &["queues = [\"work\"]"]))
        .await;
    let id = job(&trellis, "queue=work", "sleep:1200:s").await;
    setup.wait_runs(&id, 1).await;
    trellis.sigterm();
    let status = trellis
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("the host exits");
    assert!(status.success(), "{status:?}");
    let runs = setup.runs_of(&id).await;
    let tags: Vec<&str> = runs.iter().map(|r| r.2.as_str()).collect();
    assert_eq!(
        tags,
        ["s:start", "s:done"],
        "the job finished before the host exited"
    );
}

const EVENTS: &str = r#"
[[worker]]
name = "audit"
topic = "user.created"
component = "JOB_WORKER"
grants = ["sql", "queue"]
outbound = []

[[worker]]
name = "welcome"
topic = "user.created"
component = "JOB_WORKER"
grants = ["sql", "queue"]
outbound = []
"#;

on_all!(events_fan_out_to_every_subscriber_group);

async fn events_fan_out_to_every_subscriber_group(setup: Setup) {
    let sections = format!(
        "{}{}",
        work(),
        EVENTS.replace("JOB_WORKER", component::JOB_WORKER)
    );
    let trellis = setup
        .start(setup.manifest(&sections, &["topics = [\"user.created\"]"]))
        .await;
    let response = trellis
        .client()
        .post(trellis.url("/publish?topic=user.created"))
        .body("ok:user-7")
        .send()
        .await
        .unwrap();
    let answer: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    let event = answer["event"]
        .as_str()
        .unwrap_or_else(|| panic!("{answer}"))
        .to_owned();
    let runs = wait_until("both groups", Duration::from_millis(50), async || {
        let runs = setup.runs().await;
        (runs.len() >= 2).then_some(runs)
    })
    .await;
    let mut ids: Vec<&str> = runs.iter().map(|r| r.0.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, [format!("{event}.audit"), format!("{event}.welcome")]);
    assert!(
        runs.iter()
            .all(|r| r.1 == "topic:user.created" && r.2 == "user-7")
    );
    wait_counts(&trellis, "user.created/audit", |c| c["done"] == 1).await;
    wait_counts(&trellis, "user.created/welcome", |c| c["done"] == 1).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(setup.runs().await.len(), 2, "each group once");
}

mod schedules_fire_once_per_tick_across_two_hosts {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        let setup = super::Setup::new(crate::database::Db::postgres().await);
        super::schedules_fire_once_per_tick_across_two_hosts(setup).await;
    }

    /// On PostgreSQL too: two hosts starting at once migrate one SQLite
    /// file at the same time, and one may find it locked.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis() {
        let setup = super::Setup::redis(crate::database::Db::postgres().await);
        super::schedules_fire_once_per_tick_across_two_hosts(setup).await;
    }
}

async fn schedules_fire_once_per_tick_across_two_hosts(setup: Setup) {
    let sections = format!(
        "{}\n[queues.ticks]\n\n[[schedule]]\nname = \"every-second\"\ncron = \"* * * * * *\"\nqueue = \"ticks\"\npayload = \"ok:tick\"\n",
        work()
    );
    let manifest = setup.manifest(&sections, &[]);
    let (a, b) = tokio::join!(setup.start(manifest.clone()), setup.start(manifest));
    tokio::time::sleep(Duration::from_millis(4500)).await;
    // No worker runs `ticks`: every job it got is still waiting there.
    let c = counts(&a, "ticks").await;
    let jobs = c["waiting"].as_i64().unwrap() + c["delayed"].as_i64().unwrap();
    let fired: Vec<String> = [&a, &b]
        .iter()
        .flat_map(|t| t.logs())
        .filter(|l| l["message"] == "schedule fired")
        .map(|l| l["tick"].as_str().unwrap().to_owned())
        .collect();
    let ticks: std::collections::BTreeSet<&String> = fired.iter().collect();
    assert!(jobs >= 3, "{jobs} ticks in 4.5 s");
    assert_eq!(
        ticks.len(),
        fired.len(),
        "a tick fired on both hosts: {fired:?}"
    );
    // Every job (up to a tick firing between the two reads) was fired by
    // exactly one host.
    assert!(
        (fired.len() as i64 - jobs).abs() <= 1,
        "{jobs} jobs, fired {fired:?}"
    );
    if let (Db::Postgres(schema), None) = (&setup.db, &setup.redis) {
        let mut conn = schema.connect().await;
        let (jobs, ticks): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COUNT(DISTINCT run_at) FROM trellis_jobs WHERE queue = 'ticks'",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(jobs, ticks, "a tick enqueued twice");
    }
}

/// `examples/jobs`, as its README walks through it.
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/jobs");

async fn start_example(db: &Db, dir: &Path, redis: Option<&JobKeys>) -> Trellis {
    let mut text = std::fs::read_to_string(format!("{EXAMPLE}/trellis.toml")).unwrap();
    for (from, to) in [
        (
            "\"../../target/guests/wasm32-wasip2/release/emails.wasm\"".to_owned(),
            format!("{:?}", component::EMAILS),
        ),
        (
            "\"../../target/guests/wasm32-wasip2/release/mailer.wasm\"".to_owned(),
            format!("{:?}", component::MAILER),
        ),
        (
            "\"migrations/".to_owned(),
            format!("\"{EXAMPLE}/migrations/"),
        ),
        (
            "url = \"sqlite://jobs.db\"".to_owned(),
            format!("url = \"sqlite://{}/jobs.db\"", dir.display()),
        ),
    ] {
        assert!(text.contains(&from), "the example no longer has {from}");
        text = text.replace(&from, &to);
    }
    if let Some(keys) = redis {
        // The same manifest with Redis: jobs move to Redis Streams (under
        // a prefix of this test's own on the shared Redis).
        text.push_str(&format!(
            "\n[redis]\nurl = {:?}\njobs_prefix = {:?}\n",
            keys.url, keys.prefix
        ));
    }
    let env = match db {
        Db::Sqlite(_) => vec![],
        Db::Postgres(_) => vec![("TRELLIS_DATABASE_URL".to_owned(), db.url())],
    };
    Trellis::launch(Launch {
        manifest: Some(Manifest::raw(&text)),
        cache_dir: Some(shared_cache_dir()),
        admin_token: Some(TOKEN.to_owned()),
        env,
        ..Launch::default()
    })
    .await
}

mod the_jobs_example_walks_through {
    use crate::database::Db;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::the_jobs_example_walks_through(Db::sqlite(), false).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::the_jobs_example_walks_through(Db::postgres().await, false).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_and_postgres() {
        super::the_jobs_example_walks_through(Db::postgres().await, true).await;
    }
}

async fn the_jobs_example_walks_through(db: Db, redis: bool) {
    use reqwest::Method;
    let dir = TempDir::new();
    let keys = redis.then(|| JobKeys {
        url: redis_url(),
        prefix: unique("trellis-test-example-"),
    });
    let trellis = start_example(&db, dir.path(), keys.as_ref()).await;
    let post = async |body: Value| {
        trellis
            .client()
            .post(trellis.url("/emails"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    };
    let response = post(json!({"to": "ada@example.com", "subject": "Welcome"})).await;
    assert_eq!(response.status(), 202);
    let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    let id = body["job"].as_str().unwrap().to_owned();
    let count_sql = format!(
        "SELECT COUNT(*) FROM emails WHERE job_id = '{id}' AND to_address = 'ada@example.com'"
    );
    let sent = async || match &db {
        Db::Sqlite(_) => {
            let options =
                sqlx::sqlite::SqliteConnectOptions::new().filename(dir.path().join("jobs.db"));
            let mut conn = sqlx::SqliteConnection::connect_with(&options)
                .await
                .unwrap();
            sqlx::query_scalar::<_, i64>(&count_sql)
                .fetch_one(&mut conn)
                .await
                .unwrap_or(0)
        }
        Db::Postgres(_) => db.scalar(&count_sql).await,
    };
    wait_until(
        "the email recorded",
        Duration::from_millis(100),
        async || (sent().await == 1).then_some(()),
    )
    .await;
    wait_counts(&trellis, "email", |c| c["done"] == 1).await;

    let response = post(json!({"to": "fail@example.com", "subject": "Never"})).await;
    assert_eq!(response.status(), 202);
    let dead_id = serde_json::from_str::<Value>(&response.text().await.unwrap()).unwrap()["job"]
        .as_str()
        .unwrap()
        .to_owned();
    let c = wait_counts(&trellis, "email", |c| c["dead"] == 1).await;
    assert_eq!(c["done"], 1, "{c}");
    let (_, dead) = admin(&trellis, Method::GET, "/admin/queues/email/dead").await;
    assert_eq!(dead["dead"][0]["id"], dead_id.as_str());
    assert_eq!(dead["dead"][0]["attempts"], 3);
    assert!(
        dead["dead"][0]["error"]
            .as_str()
            .unwrap()
            .contains("refuses all mail")
    );
    let (status, body) = admin(&trellis, Method::POST, "/admin/queues/email/dead/retry").await;
    assert_eq!((status, &body["retried"]), (200, &json!(1)));
    // Three fresh attempts, then dead again.
    wait_until("dead again", Duration::from_millis(100), async || {
        let died = trellis
            .logs()
            .iter()
            .filter(|l| {
                l["message"] == "job failed its last attempt; dead-lettered"
                    && l["job_id"] == dead_id.as_str()
                    && l["attempt"] == 3
            })
            .count();
        (died == 2).then_some(())
    })
    .await;
    wait_counts(&trellis, "email", |c| c["dead"] == 1).await;
    let refused = post(json!({"to": "nobody", "subject": "x"})).await;
    assert_eq!(refused.status(), 422);
}

/// Two hosts sharing a Redis split the jobs of one queue: each job runs
/// exactly once (no host dies), and both hosts take some.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_on_redis_run_each_job_once() {
    let setup = Setup::redis(Db::postgres().await);
    let manifest = setup.manifest(&work(), &["queues = [\"work\"]"]);
    let (a, b) = tokio::join!(setup.start(manifest.clone()), setup.start(manifest));
    let mut ids = Vec::new();
    for i in 0..60 {
        let host = if i % 2 == 0 { &a } else { &b };
        ids.push(job(host, "queue=work", &format!("ok:n{i}")).await);
    }
    let runs = wait_until("60 runs", Duration::from_millis(100), async || {
        let runs = setup.runs().await;
        (runs.len() >= 60).then_some(runs)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let runs_now = setup.runs().await;
    assert_eq!(runs_now.len(), 60, "a job ran twice");
    let mut ran: Vec<&str> = runs.iter().map(|r| r.0.as_str()).collect();
    ran.sort_unstable();
    ids.sort_unstable();
    assert_eq!(ran, ids);
    let done_by = |t: &Trellis| {
        t.logs()
            .iter()
            .filter(|l| l["message"] == "job done")
            .count()
    };
    let (on_a, on_b) = (done_by(&a), done_by(&b));
    assert_eq!(on_a + on_b, 60);
    assert!(on_a > 0 && on_b > 0, "one host did all: {on_a} + {on_b}");
    let c = wait_counts(&a, "work", |c| c["done"] == 60).await;
    assert_eq!(c["waiting"], 0, "{c}");
}

/// With Redis down an enqueue is refused with the capability's
/// `unavailable` error; workers wait, and both resume once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_refuses_enqueues_and_workers_resume() {
    let mut server = RedisServer::start().await;
    let setup = Setup::redis_at(Db::sqlite(), server.url());
    let trellis = setup
        .start(setup.manifest(&work(), &["queues = [\"work\"]"]))
        .await;
    let first = job(&trellis, "queue=work", "ok:before").await;
    setup.wait_runs(&first, 1).await;
    server.stop();
    assert_store_away(&trellis).await;
    server.restart().await;
    let after = enqueue_once_back(&trellis).await;
    setup.wait_runs(&after, 1).await;
    let line = trellis
        .wait_log("claiming jobs failed", |l| {
            l["message"] == "claiming jobs failed; retrying every second"
        })
        .await;
    assert_eq!(line["worker"], "runner");
}

/// The database backend while PostgreSQL is away: enqueues are refused
/// (an error result, not a trap), the admin API says so, workers retry,
/// and when it is back every job acknowledged before runs (at least once:
/// one whose settlement was cut off runs again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_going_away_refuses_enqueues_and_workers_resume() {
    let setup = Setup::new(Db::postgres().await);
    let mut proxy = PgProxy::start().await;
    let trellis = Trellis::launch(Launch {
        manifest: Some(setup.manifest(&work(), &["queues = [\"work\"]"])),
        cache_dir: Some(shared_cache_dir()),
        admin_token: Some(TOKEN.to_owned()),
        env: vec![(
            "TRELLIS_DATABASE_URL".to_owned(),
            proxy.route(&setup.db.url()),
        )],
        ..Launch::default()
    })
    .await;
    let first = job(&trellis, "queue=work", "ok:before").await;
    setup.wait_runs(&first, 1).await;
    // Acknowledged, then the database goes away before a worker takes it.
    let waiting = job(&trellis, "queue=work", "sleep:1:waiting").await;
    proxy.cut();
    assert_store_away(&trellis).await;
    proxy.restore().await;
    let after = enqueue_once_back(&trellis).await;
    setup.wait_runs(&after, 1).await;
    // An attempt that started before the cut may have lost its `done`
    // row with the connection; the next one records both.
    wait_until(
        "the job acknowledged before the outage ran to its end",
        Duration::from_millis(50),
        async || {
            let runs = setup.runs_of(&waiting).await;
            runs.iter().any(|r| r.2 == "waiting:done").then_some(())
        },
    )
    .await;
    let c = wait_counts(&trellis, "work", |c| c["done"] == 3).await;
    assert_eq!(
        (c["waiting"].clone(), c["dead"].clone()),
        (json!(0), json!(0)),
        "{c}"
    );
}

/// While the job store is away: an enqueue is an `unavailable` error
/// result and the admin API answers 503.
async fn assert_store_away(trellis: &Trellis) {
    let answer = enqueue(trellis, "queue=work", "ok:during").await;
    assert_eq!(answer["error"], "unavailable", "{answer}");
    let (status, _) = admin(trellis, reqwest::Method::GET, "/admin/queues").await;
    assert_eq!(status, 503, "the admin API says the store is unavailable");
}

/// The id of the first enqueue that succeeds once the store is back: its
/// client reconnects by itself, and the first calls may still fail.
async fn enqueue_once_back(trellis: &Trellis) -> String {
    wait_until(
        "an enqueue after the store is back",
        Duration::from_millis(200),
        async || {
            enqueue(trellis, "queue=work", "ok:after").await["job"]
                .as_str()
                .map(str::to_owned)
        },
    )
    .await
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
