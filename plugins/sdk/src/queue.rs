//! Helpers over `trellis:api/queue`: hand slow work to a background job,
//! or publish an event. The route must grant `"queue"` and name the queue
//! (`queues = ["email"]`) or topic (`topics = ["user.created"]`).
//!
//! ```no_run
//! # fn f() -> Result<(), trellis_sdk::Error> {
//! use trellis_sdk::queue;
//!
//! let id = queue::enqueue("email", br#"{"to":"ada@example.com"}"#)?;
//! let later = queue::Options::new().delay_ms(60_000).dedupe("welcome:ada");
//! queue::enqueue_with("email", b"...", later)?;
//! queue::publish("user.created", br#"{"id":7}"#)?;
//! # let _ = id; Ok(()) }
//! ```

use crate::bindings::trellis::api::queue as wit;

pub use wit::Error;

/// How to run a job: built with [`Options::new`] and its setters.
#[derive(Debug, Clone, Default)]
pub struct Options {
    delay_ms: u64,
    attempts: Option<u32>,
    dedupe: Option<String>,
    priority: i32,
}

impl Options {
    /// Run now, with the queue's attempts, no dedupe key, priority 0.
    pub fn new() -> Options {
        Options::default()
    }

    /// Wait `ms` milliseconds before the job may run.
    pub fn delay_ms(mut self, ms: u64) -> Options {
        self.delay_ms = ms;
        self
    }

    /// Attempts before the job is dead-lettered, instead of the queue's.
    pub fn attempts(mut self, attempts: u32) -> Options {
        self.attempts = Some(attempts);
        self
    }

    /// Within the queue's retention, enqueue at most one job with `key`.
    pub fn dedupe(mut self, key: impl Into<String>) -> Options {
        self.dedupe = Some(key.into());
        self
    }

    /// Higher runs first among ready jobs.
    pub fn priority(mut self, priority: i32) -> Options {
        self.priority = priority;
        self
    }
}

/// Enqueues `payload` on `queue` now; the job's id once it is stored.
pub fn enqueue(queue: &str, payload: &[u8]) -> Result<String, Error> {
    enqueue_with(queue, payload, Options::new())
}

/// Enqueues `payload` on `queue` with `options`.
pub fn enqueue_with(queue: &str, payload: &[u8], options: Options) -> Result<String, Error> {
    wit::enqueue(
        queue,
        payload,
        &wit::Options {
            delay_ms: options.delay_ms,
            attempts: options.attempts,
            dedupe_key: options.dedupe,
            priority: options.priority,
        },
    )
}

/// Publishes `payload` on `topic`; the event's id.
pub fn publish(topic: &str, payload: &[u8]) -> Result<String, Error> {
    wit::publish(topic, payload)
}

/// A readable description of `error`.
pub fn describe(error: &Error) -> String {
    match error {
        Error::UnknownQueue(name) => format!("no queue or topic {name:?}"),
        Error::NotGranted(name) => format!("the route may not use {name:?}"),
        Error::PayloadTooLarge(limit) => format!("the payload is over {limit} bytes"),
        Error::InvalidOptions(why) => format!("invalid options: {why}"),
        Error::Unavailable(why) => format!("the job store is unavailable: {why}"),
    }
}
