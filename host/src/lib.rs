//! Trellis: serve HTTP routes from sandboxed WebAssembly components.
//!
//! Each route of a `trellis.toml` manifest is served by its own
//! `wasm32-wasip2` component exporting `wasi:http/incoming-handler`, with
//! one fresh pooled instance per request and per-route limits on time,
//! memory, body size and concurrency.
//!
//! The modules are layers, listed from the bottom up; each may call the
//! ones above it in this list and never the ones below:
//!
//! - [`ids`]: hex and random ids, used by every layer.
//! - [`config`]: the command line, the manifest and its units.
//! - [`observability`]: metrics, traces, the log writer and request log.
//! - [`services`]: the database and its pool, the tiered cache, Redis and
//!   the rate limiter, shared by every route.
//! - [`capabilities`]: the `trellis:api` interfaces guests import, one
//!   module per WIT interface, on top of the services.
//! - [`runtime`]: the wasmtime engine, loading components, the store and
//!   running one request through one instance.
//! - [`app`]: the state every request reads: the route table and its
//!   limits, and the loaded workers.
//! - [`jobs`]: background work: the worker runners (claim, run a fresh
//!   instance per job, settle) and the schedules.
//! - [`http`]: the public HTTP server: edge, dispatch, bodies, errors.
//! - [`ops`]: what operators drive: the admin API, hot load, watch mode,
//!   health, and the admin API's client.
//! - [`run`]: the listeners and shutdown, which `main` calls.
//!
//! Beside them, [`scaffold`] is the plugin author's `new`, `build` and
//! `wit`; it uses only [`config`].

#![deny(missing_docs)]

pub mod app;
pub mod capabilities;
pub mod config;
pub mod http;
pub mod ids;
pub mod jobs;
pub mod observability;
pub mod ops;
pub mod run;
pub mod runtime;
pub mod scaffold;
pub mod services;

pub use run::{Listeners, run, shutdown_signal};
