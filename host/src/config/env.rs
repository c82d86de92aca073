//! The process environment: the one module that reads it.
//!
//! [`Env::read`] runs once, in [`crate::config::Config::load`], and what
//! it finds is passed down explicitly; [`lookup`] serves the manifest's
//! `{ env = "NAME" }` values, resolved when a route loads.

use std::path::PathBuf;

/// The admin API's bearer token.
pub const ADMIN_TOKEN: &str = "TRELLIS_ADMIN_TOKEN";
/// A database URL that wins over `[database] url`.
pub const DATABASE_URL: &str = "TRELLIS_DATABASE_URL";
/// A Redis URL that wins over `[redis] url` (and enables Redis).
pub const REDIS_URL: &str = "TRELLIS_REDIS_URL";
/// An OTLP/HTTP collector for traces.
pub const OTLP_ENDPOINT: &str = "TRELLIS_OTLP_ENDPOINT";
/// A PEM file of extra roots trusted for an `https://` OTLP endpoint.
pub const OTLP_CA: &str = "TRELLIS_OTLP_CA";
/// `json` for JSON log lines.
pub const LOG_FORMAT: &str = "TRELLIS_LOG_FORMAT";
/// The log filter (`tracing` directives; default `info`).
pub const LOG: &str = "TRELLIS_LOG";
/// Where precompiled components are cached; wins over `server.cache_dir`.
pub const CACHE_DIR: &str = "TRELLIS_CACHE_DIR";

/// This host's id in a fleet sharing deployments (default: the hostname
/// and a random suffix, new at each start).
pub const HOST_ID: &str = "TRELLIS_HOST_ID";

/// What the host takes from its environment. Empty values count as unset.
#[derive(Clone, Debug, Default)]
pub struct Env {
    /// [`ADMIN_TOKEN`].
    pub admin_token: Option<String>,
    /// [`DATABASE_URL`].
    pub database_url: Option<String>,
    /// [`REDIS_URL`].
    pub redis_url: Option<String>,
    /// [`OTLP_ENDPOINT`].
    pub otlp_endpoint: Option<String>,
    /// [`OTLP_CA`].
    pub otlp_ca: Option<PathBuf>,
    /// [`LOG_FORMAT`] is `json` (any case).
    pub log_json: bool,
    /// [`LOG`].
    pub log_filter: Option<String>,
    /// [`CACHE_DIR`].
    pub cache_dir: Option<PathBuf>,
    /// [`HOST_ID`].
    pub host_id: Option<String>,
    /// The machine's name (`HOSTNAME`, else `/etc/hostname`), the default
    /// prefix of the host id.
    pub hostname: Option<String>,
    /// The user's cache directory (`XDG_CACHE_HOME`, else `$HOME/.cache`),
    /// the last fallback for the component cache.
    pub user_cache_dir: Option<PathBuf>,
}

impl Env {
    /// Reads every variable the host uses.
    pub fn read() -> Env {
        Env {
            admin_token: lookup(ADMIN_TOKEN),
            database_url: lookup(DATABASE_URL),
            redis_url: lookup(REDIS_URL),
            otlp_endpoint: lookup(OTLP_ENDPOINT),
            otlp_ca: lookup(OTLP_CA).map(PathBuf::from),
            log_json: lookup(LOG_FORMAT).is_some_and(|f| f.eq_ignore_ascii_case("json")),
            log_filter: lookup(LOG),
            cache_dir: lookup(CACHE_DIR).map(PathBuf::from),
            host_id: lookup(HOST_ID),
            hostname: lookup("HOSTNAME").or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
                    .filter(|h| !h.is_empty())
            }),
            user_cache_dir: lookup("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| lookup("HOME").map(|h| PathBuf::from(h).join(".cache"))),
        }
    }
}

/// The variable `name` as set, empty or not: a manifest value
/// `{ env = "NAME" }` takes what the operator exported.
pub fn var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The variable `name`, if set, valid UTF-8 and not empty.
pub fn lookup(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}
