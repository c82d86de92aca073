//! The wasm runtime: the engine, compiling and pre-instantiating
//! components, the per-request store, and running one request through an
//! instance: WASI 0.2 handlers in [`invoke`], WASI 0.3 ones in [`service`].
//!
//! Calls [`crate::capabilities`] (what a store holds and the linker
//! offers), [`crate::services`], [`crate::observability`] and
//! [`crate::config`]; never the HTTP server or the admin API.

pub mod budget;
pub mod component;
pub mod engine;
pub mod grants;
pub mod invoke;
pub mod lane;
pub mod linker;
pub mod output;
pub mod pool;
pub mod service;
pub mod store;
