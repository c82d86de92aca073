//! Helpers over `trellis:api/log`: structured records in the host's log,
//! tagged by the host with the route, the component and the request id.
//!
//! ```no_run
//! use trellis_sdk::log;
//!
//! let user_id = 7;
//! log::info("user created", &[("user_id", &user_id)]);
//! ```
//!
//! The level helpers never fail the request: a record the host would drop
//! is not built, and one over the size limit is dropped.

use std::fmt::Display;

use crate::bindings::trellis::api::log as wit;

pub use wit::{Error, Level};

/// Fields of a record: names and anything printable.
pub type Fields<'a> = [(&'a str, &'a dyn Display)];

/// Whether a record at `level` would be written.
pub fn enabled(level: Level) -> bool {
    wit::enabled(level)
}

/// Writes one record, whatever the level filter says; the host may refuse
/// it as too large.
pub fn write(level: Level, message: &str, fields: &Fields<'_>) -> Result<(), Error> {
    let fields: Vec<(String, String)> = fields
        .iter()
        .map(|(name, value)| ((*name).to_owned(), value.to_string()))
        .collect();
    wit::write(level, message, &fields)
}

/// Writes a record at `level` if the host would keep it.
pub fn log(level: Level, message: &str, fields: &Fields<'_>) {
    if enabled(level) {
        // A record over the size limit is lost; losing it must not fail
        // the request that wanted to log it.
        let _ = write(level, message, fields);
    }
}

/// A `trace` record.
pub fn trace(message: &str, fields: &Fields<'_>) {
    log(Level::Trace, message, fields);
}

/// A `debug` record.
pub fn debug(message: &str, fields: &Fields<'_>) {
    log(Level::Debug, message, fields);
}

/// An `info` record.
pub fn info(message: &str, fields: &Fields<'_>) {
    log(Level::Info, message, fields);
}

/// A `warn` record.
pub fn warn(message: &str, fields: &Fields<'_>) {
    log(Level::Warn, message, fields);
}

/// An `error` record.
pub fn error(message: &str, fields: &Fields<'_>) {
    log(Level::Error, message, fields);
}
