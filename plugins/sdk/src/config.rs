//! Helpers over `trellis:api/config`: the route's variables and secrets.
//!
//! ```no_run
//! # fn f() -> Result<(), trellis_sdk::Error> {
//! use trellis_sdk::config;
//!
//! let page_size: u32 = config::parse("page_size")?.unwrap_or(20);
//! let api_key = config::require("api_key")?;
//! # Ok(()) }
//! ```

use std::fmt::Display;
use std::str::FromStr;

use crate::bindings::trellis::api::config as wit;

pub use wit::Error;

/// The value of `key`; `None` when the route sets neither a variable nor a
/// secret of that name.
pub fn get(key: &str) -> Result<Option<String>, Error> {
    wit::get(key)
}

/// The value of `key`, or an internal error (500) when it is not set: the
/// operator's manifest is missing something the handler needs.
pub fn require(key: &str) -> Result<String, crate::Error> {
    get(key)?.ok_or_else(|| crate::Error::internal(format!("config: {key:?} is not set")))
}

/// The value of `key` parsed as `T`; `None` when it is not set, an internal
/// error naming the key when it does not parse.
pub fn parse<T>(key: &str) -> Result<Option<T>, crate::Error>
where
    T: FromStr,
    T::Err: Display,
{
    get(key)?
        .map(|value| {
            value
                .parse()
                .map_err(|err| crate::Error::internal(format!("config: {key:?} is invalid: {err}")))
        })
        .transpose()
}

/// Every variable and secret of the route.
pub fn all() -> Result<Vec<(String, String)>, Error> {
    wit::get_all()
}
