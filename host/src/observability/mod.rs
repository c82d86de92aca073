//! Observability: Prometheus metrics, W3C traces, the log writer and the
//! one-line-per-request access log.
//!
//! Owns the process's telemetry sinks. Calls only [`crate::config`]; every
//! other layer records into it.

pub mod access_log;
pub mod guest_metrics;
pub mod log_writer;
pub mod metrics;
pub mod telemetry;
pub mod trace;
