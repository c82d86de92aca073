//! Test worker. Each attempt first records a row in `job_runs` (job id,
//! source, tag, attempt, wall-clock ms), then does what its payload says:
//!
//! - `ok:TAG`: succeeds.
//! - `noop`: succeeds at once, recording nothing (benches/jobs.sh).
//! - `fail:TAG`: fails (returns an error).
//! - `trap:TAG`: panics.
//! - `loop:TAG`: loops until the host's timeout stops it.
//! - `membomb:TAG`: grows memory until the host's limit stops it.
//! - `sleep:MS:TAG`: sleeps MS milliseconds, records a `done` row, succeeds.
//! - `chain:QUEUE:TAG`: enqueues `ok:TAG` on QUEUE and records the outcome.
//! - `fetch:URL`: GETs URL through the worker's `outbound` upstreams and
//!   records `fetch:STATUS`, or `fetch:denied` / `fetch:error` (it always
//!   imports `wasi:http/outgoing-handler`, so its worker needs `outbound`).
//!
//! The table is `job_runs (job_id, source, tag, attempt, at_ms)`.

use trellis_sdk::worker::Source;
use trellis_sdk::{Job, Worker, queue, sql};

struct Probe;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn record(job: &Job, tag: &str) -> Result<(), String> {
    let source = match &job.source {
        Source::Queue(q) => format!("queue:{q}"),
        Source::Topic(t) => format!("topic:{t}"),
    };
    let attempt = i64::from(job.attempt);
    sql::execute(
        "INSERT INTO job_runs (job_id, source, tag, attempt, at_ms) VALUES ($1, $2, $3, $4, $5)",
        &[&job.id, &source, &tag, &attempt, &now_ms()],
    )
    .map(|_| ())
    .map_err(|e| format!("recording the run: {}", sql::describe(&e)))
}

impl Worker for Probe {
    fn process(job: Job) -> Result<(), String> {
        let text = String::from_utf8_lossy(&job.payload).into_owned();
        let (command, rest) = text.split_once(':').unwrap_or((text.as_str(), ""));
        match command {
            "noop" => Ok(()),
            "ok" => record(&job, rest),
            "fail" => {
                record(&job, rest)?;
                Err(format!("failing on purpose ({rest})"))
            }
            "trap" => {
                record(&job, rest)?;
                panic!("trapping on purpose ({rest})");
            }
            "loop" => {
                record(&job, rest)?;
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "membomb" => {
                record(&job, rest)?;
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "sleep" => {
                let (ms, tag) = rest.split_once(':').unwrap_or((rest, ""));
                record(&job, &format!("{tag}:start"))?;
                let ms: u64 = ms.parse().map_err(|_| "sleep:MS:TAG".to_owned())?;
                std::thread::sleep(std::time::Duration::from_millis(ms));
                record(&job, &format!("{tag}:done"))
            }
            "chain" => {
                let (target, tag) = rest.split_once(':').unwrap_or((rest, ""));
                let outcome = match queue::enqueue(target, format!("ok:{tag}").as_bytes()) {
                    Ok(_) => "enqueued".to_owned(),
                    Err(queue::Error::UnknownQueue(_)) => "unknown-queue".to_owned(),
                    Err(queue::Error::NotGranted(_)) => "not-granted".to_owned(),
                    Err(e) => queue::describe(&e),
                };
                record(&job, &format!("chain:{outcome}"))
            }
            "fetch" => {
                let outcome = match trellis_sdk::http::get(rest) {
                    Ok(response) => format!("fetch:{}", response.status),
                    Err(trellis_sdk::http::HttpError::Denied) => "fetch:denied".to_owned(),
                    Err(_) => "fetch:error".to_owned(),
                };
                record(&job, &outcome)
            }
            _ => Err(format!("unknown command {command:?}")),
        }
    }
}

trellis_sdk::export_worker!(Probe);
