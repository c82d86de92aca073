//! The public HTTP server: its accept loop and connection limits (count,
//! header and idle timeouts), the edge every request crosses (request id,
//! trace, security headers, log line), dispatch to a route's component
//! under its limits, request bodies, JSON errors, and the edge policies:
//! per-route rate limits, CORS, auth, schema validation and the response
//! cache.
//!
//! Calls [`crate::app`] and every layer below it; the admin API
//! ([`crate::ops`]) sits above and may reuse its edge and errors.

pub mod auth;
pub mod body;
pub mod conn;
pub mod cors;
pub mod dispatch;
pub mod edge;
pub mod error;
pub mod rate_limit;
pub mod response_cache;
pub mod server;
pub mod validation;
