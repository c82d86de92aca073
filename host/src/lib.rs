//! Trellis: serve HTTP routes from sandboxed WebAssembly components.
//!
//! Each route of a `trellis.toml` manifest is served by its own
//! `wasm32-wasip2` component exporting `wasi:http/incoming-handler`, with
//! one fresh pooled instance per request and per-route limits on time,
//! memory, body size and concurrency.

#![deny(missing_docs)]

pub mod access_log;
pub mod admin;
pub mod app;
pub mod bindings;
pub mod body;
pub mod cache;
pub mod capabilities;
pub mod component;
pub mod config;
pub mod database;
pub mod deploy;
pub mod deployments;
pub mod dispatch;
pub mod edge;
pub mod engine;
pub mod error;
pub mod grants;
pub mod health;
pub mod invoke;
pub mod linker;
pub mod log_writer;
pub mod manifest;
pub mod metrics;
pub mod quickstart;
pub mod rate_limit;
pub mod redis;
pub mod response_cache;
pub mod routes;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod trace;
pub mod units;
pub mod watch;

pub use server::{run, service, shutdown_signal};
