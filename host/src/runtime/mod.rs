//! The wasm runtime: the engine, compiling and pre-instantiating
//! components, the per-request store, and running one request through one
//! fresh instance.
//!
//! Calls [`crate::capabilities`] (what a store holds and the linker
//! offers), [`crate::services`], [`crate::observability`] and
//! [`crate::config`]; never the HTTP server or the admin API.

pub mod component;
pub mod engine;
pub mod grants;
pub mod invoke;
pub mod lane;
pub mod linker;
pub mod output;
pub mod pool;
pub mod store;
