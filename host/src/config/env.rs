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
/// How much the cache directory may hold; wins over
/// `server.cache_dir_max_size`.
pub const CACHE_DIR_MAX_SIZE: &str = "TRELLIS_CACHE_DIR_MAX_SIZE";

/// This host's id in a fleet sharing deployments (default: the hostname
/// and a random suffix, new at each start).
pub const HOST_ID: &str = "TRELLIS_HOST_ID";

/// What an admin `secret.KEY=NAME` names: the variable `TRELLIS_SECRET_NAME`
/// of each host. The prefix keeps the admin API from reading anything else
/// of the host's environment (its database URL, its admin token).
pub const SECRET_PREFIX: &str = "TRELLIS_SECRET_";

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
    /// [`CACHE_DIR_MAX_SIZE`], as written (checked with the manifest).
    pub cache_dir_max_size: Option<String>,
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
            cache_dir_max_size: lookup(CACHE_DIR_MAX_SIZE),
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

/// The secret an admin `secret.KEY=NAME` refers to: [`SECRET_PREFIX`] and
/// `NAME` (`A-Z 0-9 _`), read from this host's environment now. The error
/// names the variable, for the operator who has to set it.
pub fn secret(name: &str) -> Result<String, String> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    if !ok {
        return Err(format!(
            "{name:?} is not a secret's name: use A-Z, 0-9 and _ (it names the \
             variable {SECRET_PREFIX}NAME of each host)"
        ));
    }
    let variable = format!("{SECRET_PREFIX}{name}");
    lookup(&variable).ok_or_else(|| format!("{variable} is not set (or empty) on this host"))
}

/// The variable `name`, if set, valid UTF-8 and not empty.
pub fn lookup(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}
