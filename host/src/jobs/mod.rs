//! Background work: one runner per `[[worker]]` ([`worker`]) and one
//! timer per `[[schedule]]` ([`schedule`]), started with the servers and
//! stopped with them.
//!
//! Calls [`crate::app`] (the loaded workers, the engine and the instance
//! budget), [`crate::runtime`], [`crate::capabilities`] and
//! [`crate::services`]; nothing below calls it.

pub mod schedule;
pub mod worker;

use crate::app::App;
use crate::services::jobs::now_ms;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The running workers and schedules.
pub struct Background {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Background {
    /// Starts every worker and schedule of `app`. Topic workers register
    /// their subscriber group first, so they receive every event
    /// published from now on.
    pub async fn start(app: Arc<App>) -> Background {
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        for worker in &app.workers {
            let version = worker.current();
            if let crate::config::manifest::JobSource::Topic(topic) = &version.spec.source {
                let store = app.services.jobs.store();
                if let Err(err) = store.subscribe(topic, &version.spec.name, now_ms()).await {
                    // The runner retries when it polls; the group is
                    // registered as soon as the store answers.
                    tracing::warn!(worker = %version.spec.name, topic = %topic, cause = %err, "registering the subscriber group failed; retrying while polling");
                }
            }
            tasks.spawn(worker::run(app.clone(), worker.clone(), stopped.clone()));
        }
        for entry in &app.schedules {
            tasks.spawn(schedule::run(app.clone(), entry.clone(), stopped.clone()));
        }
        if !app.workers.is_empty() || !app.schedules.is_empty() {
            tracing::info!(
                workers = app.workers.len(),
                schedules = app.schedules.len(),
                "background jobs started"
            );
        }
        Background { stop, tasks }
    }

    /// Stops claiming jobs and firing schedules, and waits up to `grace`
    /// for jobs in progress. Jobs still running then are dropped; their
    /// leases expire and another host (or this one, restarted) runs them
    /// again after the queue's `visibility`.
    pub async fn stop(mut self, grace: Duration) {
        let _ = self.stop.send(true);
        let drained = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                "jobs still running at the end of shutdown_grace were stopped; they will be delivered again after their queue's visibility"
            );
            self.tasks.abort_all();
        }
    }
}
