//! One `[[schedule]]`: at every tick of its cron expression (UTC), enqueue
//! its payload on its queue, once across every host sharing the job store.
//! Each host wakes at the tick and asks the store to record it
//! ([`crate::services::jobs::JobStore::fire`]); the first to record the
//! (schedule, tick) (a row, or a Redis key set with NX) enqueues in the
//! same transaction or script, and the others find it and do nothing. A host that is down at a tick does not
//! fire it later.

use crate::app::App;
use crate::config::manifest::ScheduleEntry;
use crate::services::jobs::{NewJob, now_ms};
use std::sync::Arc;
use tokio::sync::watch;

/// Fires `entry` at each tick until `stop` turns true.
pub async fn run(app: Arc<App>, entry: ScheduleEntry, mut stop: watch::Receiver<bool>) {
    let name = entry.name.get_ref().clone();
    let queue = entry.queue.get_ref().clone();
    let Some(cron) = entry.parsed.clone() else {
        return; // Validation parses every expression.
    };
    let jobs = app.services.jobs.clone();
    let Some(settings) = jobs.settings(&queue).copied() else {
        return;
    };
    while !*stop.borrow() {
        let now = chrono::Utc::now();
        let Some(tick) = cron.next_after(now) else {
            tracing::warn!(schedule = %name, "the cron expression has no future tick; the schedule stops");
            return;
        };
        let wait = (tick - now).to_std().unwrap_or_default();
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        let tick_ms = tick.timestamp_millis();
        let id = crate::ids::random_hex(128);
        let job = NewJob {
            id: &id,
            queue: &queue,
            payload: entry.payload.as_bytes(),
            attempts: settings.attempts,
            priority: 0,
            run_at: tick_ms,
            dedupe: None,
            retention_ms: 0,
            trace: None,
            now: now_ms(),
        };
        match jobs.store().fire(&name, tick_ms, job).await {
            Ok(true) => {
                tracing::info!(schedule = %name, queue = %queue, job_id = %id, tick = %tick.to_rfc3339(), "schedule fired");
                jobs.waker(&queue).notify_waiters();
            }
            Ok(false) => {
                tracing::debug!(schedule = %name, tick = %tick.to_rfc3339(), "tick fired by another host");
            }
            Err(err) => {
                tracing::warn!(schedule = %name, tick = %tick.to_rfc3339(), cause = %err, "firing the schedule failed; this host skips the tick");
            }
        }
    }
}
