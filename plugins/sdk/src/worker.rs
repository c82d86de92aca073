//! Workers: components that run background jobs (`[[worker]]` in the
//! manifest). Implement [`Worker`] and export it with
//! [`export_worker!`](crate::export_worker):
//!
//! ```ignore
//! struct Mailer;
//!
//! impl trellis_sdk::Worker for Mailer {
//!     fn process(job: trellis_sdk::Job) -> Result<(), String> {
//!         let email: serde_json::Value = job.json().map_err(|e| e.to_string())?;
//!         trellis_sdk::log::info("sending", &[("to", &email["to"])]);
//!         Ok(())
//!     }
//! }
//!
//! trellis_sdk::export_worker!(Mailer);
//! ```
//!
//! An `Err`, a panic or a timeout fails the attempt: the host runs the job
//! again after its queue's backoff, and dead-letters it after its last
//! attempt.

/// The `worker` export, generated for the worker world with the SDK's own
/// import bindings reused.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "trellis:api/worker-component",
        path: "../../wit",
        with: {
            "trellis:api/sql@0.1.0": crate::bindings::trellis::api::sql,
            "trellis:api/config@0.1.0": crate::bindings::trellis::api::config,
            "trellis:api/log@0.1.0": crate::bindings::trellis::api::log,
            "trellis:api/rate-limit@0.1.0": crate::bindings::trellis::api::rate_limit,
            "trellis:api/cache@0.1.0": crate::bindings::trellis::api::cache,
            "trellis:api/metrics@0.1.0": crate::bindings::trellis::api::metrics,
            "trellis:api/identity@0.1.0": crate::bindings::trellis::api::identity,
            "trellis:api/queue@0.1.0": crate::bindings::trellis::api::queue,
        },
        pub_export_macro: true,
        export_macro_name: "__export_worker_world",
        default_bindings_module: "trellis_sdk::worker::bindings",
    });
}

use bindings::exports::trellis::api::worker as wit;

pub use wit::Source;

/// One job, as the host hands it to [`Worker::process`].
#[derive(Debug, Clone)]
pub struct Job {
    /// The job's id (also the request id on its log lines).
    pub id: String,
    /// Its queue or topic.
    pub source: Source,
    /// Its bytes.
    pub payload: Vec<u8>,
    /// This attempt, from 1.
    pub attempt: u32,
    /// Attempts it has in all.
    pub attempts: u32,
}

impl Job {
    /// The payload parsed as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.payload)
    }

    /// The queue's (or topic's) name.
    pub fn queue(&self) -> &str {
        match &self.source {
            Source::Queue(name) | Source::Topic(name) => name,
        }
    }

    /// Whether this is the job's last attempt.
    pub fn is_last_attempt(&self) -> bool {
        self.attempt >= self.attempts
    }
}

/// A background job runner: one call per job attempt, on a fresh instance.
pub trait Worker {
    /// Runs one job; `Err` with a reason fails the attempt.
    fn process(job: Job) -> Result<(), String>;
}

/// What [`export_worker!`](crate::export_worker) calls.
#[doc(hidden)]
pub fn process<W: Worker>(job: wit::Job) -> Result<(), String> {
    W::process(Job {
        id: job.id,
        source: job.source,
        payload: job.payload,
        attempt: job.attempt,
        attempts: job.attempts,
    })
}

/// Re-exported for [`export_worker!`](crate::export_worker).
#[doc(hidden)]
pub use wit::{Guest, Job as RawJob};
