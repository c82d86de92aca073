//! The `queue` capability (`wit/queue.wit`): enqueue a job on a queue, or
//! publish an event on a topic, among those the route (or worker) names in
//! its `queues` and `topics`. A name it may not use is an error result for
//! the guest, never a trap.

use crate::capabilities::bindings::api::queue::{Error, Host, Options};
use crate::capabilities::{View, trappable};
use crate::services::jobs::{EnqueueOptions, JobError, Jobs};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{HasData, Linker};
use wasmtime_wasi::TrappableError;

/// The `queue` error as a host function returns it: for the guest, or a
/// trap.
pub type QueueError = TrappableError<Error>;

/// What `queue` reaches: the job store and the names this route may use.
pub struct QueueCtx {
    /// The jobs service, shared by every route.
    pub jobs: Arc<Jobs>,
    /// The route's `queues`.
    pub queues: Arc<[String]>,
    /// The route's `topics`.
    pub topics: Arc<[String]>,
}

/// `queue` for one instance.
pub type QueueView<'a> = View<'a, QueueCtx>;

struct HasQueue;

impl HasData for HasQueue {
    type Data<'a> = QueueView<'a>;
}

/// Offers `trellis:api/queue` through `view`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> QueueView<'_>,
) -> wasmtime::Result<()> {
    crate::capabilities::bindings::api::queue::add_to_linker::<T, HasQueue>(linker, view)
}

impl QueueView<'_> {
    /// Refuses `name` unless the route names it in `allowed`; says whether
    /// it exists at all, so an author can tell a typo from a missing grant.
    fn check(&self, name: &str, allowed: &[String], exists: bool) -> Result<(), Error> {
        if allowed.iter().any(|n| n == name) {
            Ok(())
        } else if exists {
            Err(Error::NotGranted(name.to_owned()))
        } else {
            Err(Error::UnknownQueue(name.to_owned()))
        }
    }
}

fn to_wit(err: JobError) -> Error {
    match err {
        JobError::UnknownQueue(name) => Error::UnknownQueue(name),
        JobError::PayloadTooLarge(limit) => {
            Error::PayloadTooLarge(u32::try_from(limit).unwrap_or(u32::MAX))
        }
        JobError::InvalidOptions(why) => Error::InvalidOptions(why),
        JobError::Unavailable(why) => {
            tracing::warn!(cause = %why, "queue: the job store is unavailable");
            Error::Unavailable("the job store is unavailable".into())
        }
    }
}

impl Host for QueueView<'_> {
    async fn enqueue(
        &mut self,
        queue: String,
        payload: Vec<u8>,
        options: Options,
    ) -> Result<String, QueueError> {
        self.check(&queue, &self.ctx.queues, self.ctx.jobs.is_queue(&queue))?;
        let _span = self.caller.trace.child("queue.enqueue");
        let trace = self.caller.trace.traceparent();
        let options = EnqueueOptions {
            delay: Duration::from_millis(options.delay_ms),
            attempts: options.attempts,
            dedupe: options.dedupe_key,
            priority: options.priority,
        };
        let id = self
            .ctx
            .jobs
            .enqueue(&queue, &payload, options, trace.to_str().ok())
            .await
            .map_err(to_wit)?;
        tracing::debug!(route = %self.caller.route, request_id = %self.caller.request_id, queue = %queue, job_id = %id, "job enqueued");
        Ok(id)
    }

    async fn publish(&mut self, topic: String, payload: Vec<u8>) -> Result<String, QueueError> {
        self.check(&topic, &self.ctx.topics, self.ctx.jobs.is_topic(&topic))?;
        let _span = self.caller.trace.child("queue.publish");
        let trace = self.caller.trace.traceparent();
        let id = self
            .ctx
            .jobs
            .publish(&topic, &payload, trace.to_str().ok())
            .await
            .map_err(to_wit)?;
        Ok(id)
    }

    fn convert_error(&mut self, err: QueueError) -> wasmtime::Result<Error> {
        trappable(err)
    }
}
