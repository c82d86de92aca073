//! The `trellis.toml` manifest: its schema, defaults and validation.
//!
//! Every error names the file, the line and the field, because operators
//! meet these errors at deploy time, usually in a CI log.

use crate::capabilities::config::{ConfigValue, RouteConfig};
use crate::units::{ByteSize, Duration};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time;
use toml::Spanned;

/// Capabilities a route may grant; see `wit/` and DESIGN.md.
pub const KNOWN_GRANTS: &[&str] = &[
    "sql",
    "cache",
    "rate-limit",
    "health",
    "log",
    "metrics",
    "config",
    "queue",
];

/// Paths the host serves itself; routes may not shadow them.
const RESERVED_PREFIXES: &[&str] = &["/health", "/metrics", "/openapi.json"];

/// A parsed, validated manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Listener and process-wide settings.
    #[serde(default)]
    pub server: Server,
    /// The database behind the `sql` capability; `None` means the
    /// embedded default (SQLite `trellis.db` beside the manifest).
    #[serde(default)]
    pub database: Option<Database>,
    /// The shared Redis; without it cache L2, cross-host invalidation and
    /// shared rate limits are off and each host keeps its own.
    #[serde(default)]
    pub redis: Option<Redis>,
    /// The in-process cache tier.
    #[serde(default)]
    pub cache: CacheSettings,
    /// Named rate-limit policies, attached to routes by `rate_limit` and
    /// usable by guests through the `rate-limit` capability.
    #[serde(default)]
    pub rate_limits: BTreeMap<String, RateLimitPolicy>,
    /// The routes, each served by its own component.
    #[serde(default, rename = "route")]
    pub routes: Vec<Route>,
    /// Directory the manifest lives in; component paths are relative to it.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// The `[server]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// Address of the public HTTP listener.
    pub listen: SocketAddr,
    /// Address of the admin API (hot load, rollback).
    pub admin_listen: Option<SocketAddr>,
    /// How long requests in flight may take to finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// Responses at least this large are compressed when the client accepts it.
    pub compression_min_size: ByteSize,
    /// Where precompiled components are kept (env `TRELLIS_CACHE_DIR` wins).
    pub cache_dir: Option<PathBuf>,
    /// Most guest instances alive at once across all routes; sizes the
    /// pooling allocator.
    pub max_instances: u32,
    /// Largest component the admin API accepts in one upload.
    pub max_component_size: ByteSize,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: None,
            shutdown_grace: Duration(time::Duration::from_secs(30)),
            compression_min_size: ByteSize(1024),
            cache_dir: None,
            max_instances: 1000,
            max_component_size: ByteSize(64 << 20),
        }
    }
}

/// The `[database]` table: the pool behind the `sql` capability.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Database {
    /// `sqlite://path` (relative to the manifest) or `postgres://...`;
    /// env `TRELLIS_DATABASE_URL` wins.
    pub url: Option<Spanned<String>>,
    /// Most connections the pool opens.
    pub max_connections: u32,
    /// Connections the pool keeps open when idle.
    pub min_connections: u32,
    /// How long a statement waits for a free connection before failing
    /// with `pool-timeout`.
    pub acquire_timeout: Duration,
    /// How long an idle connection above `min_connections` stays open.
    pub idle_timeout: Duration,
    /// How long one statement may run before failing with `timeout`.
    pub statement_timeout: Duration,
    /// SQL files applied once each, in order, at start.
    pub migrations: Vec<Spanned<Migration>>,
}

impl Default for Database {
    fn default() -> Self {
        Database {
            url: None,
            max_connections: 20,
            min_connections: 0,
            acquire_timeout: Duration(time::Duration::from_secs(5)),
            idle_timeout: Duration(time::Duration::from_secs(600)),
            statement_timeout: Duration(time::Duration::from_secs(30)),
            migrations: Vec::new(),
        }
    }
}

/// The `[redis]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redis {
    /// `redis://host:port/db`; env `TRELLIS_REDIS_URL` wins.
    pub url: Spanned<String>,
    /// The longest one Redis call may take before the host carries on
    /// without Redis.
    #[serde(default = "Redis::default_timeout")]
    pub timeout: Duration,
}

impl Redis {
    fn default_timeout() -> Duration {
        Duration(time::Duration::from_millis(250))
    }
}

/// The `[cache]` table: the in-process tier.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    /// Most bytes of keys and values held in process.
    pub memory: ByteSize,
    /// Largest value the cache accepts.
    pub max_value: ByteSize,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            memory: ByteSize(64 << 20),
            max_value: ByteSize(1 << 20),
        }
    }
}

/// A `[rate_limits.NAME]` policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitPolicy {
    /// Requests allowed per window (also the largest burst).
    pub requests: u32,
    /// The window.
    pub window: Duration,
    /// What a request is counted by: `ip`, `header:NAME` or `route`.
    #[serde(default = "RateLimitPolicy::default_key")]
    pub key: Spanned<String>,
}

impl RateLimitPolicy {
    fn default_key() -> Spanned<String> {
        Spanned::new(0..0, "ip".to_owned())
    }

    /// The parsed `key`.
    pub fn key_source(&self) -> Result<KeySource, String> {
        KeySource::parse(self.key.get_ref())
    }
}

/// What a host-side rate limit counts requests by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The client's IP address (the TCP peer).
    Ip,
    /// The value of a request header, e.g. an API key or
    /// `x-forwarded-for` behind a proxy. Requests without it share one
    /// bucket.
    Header(http::HeaderName),
    /// Nothing: one bucket for the whole route.
    Route,
}

impl KeySource {
    /// Parses `ip`, `header:NAME` or `route`.
    pub fn parse(key: &str) -> Result<KeySource, String> {
        match key {
            "ip" => Ok(KeySource::Ip),
            "route" => Ok(KeySource::Route),
            _ => match key.strip_prefix("header:") {
                Some(name) => http::HeaderName::from_bytes(name.as_bytes())
                    .map(KeySource::Header)
                    .map_err(|_| format!("{name:?} is not a header name")),
                None => Err(format!(
                    "{key:?} is not a key; use \"ip\", \"header:NAME\" or \"route\""
                )),
            },
        }
    }
}

/// A route's `cache = { ... }`: the host-side response cache for GET.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ResponseCache {
    /// How long a response is served from cache.
    pub ttl: Duration,
    /// Request headers whose values are part of the cache key.
    #[serde(default)]
    pub vary: Vec<String>,
}

/// One entry of `[database].migrations`: a file for both databases, or one
/// file per database where their SQL differs.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Migration {
    /// The same SQL on SQLite and PostgreSQL.
    Both(String),
    /// Dialect-specific SQL.
    PerDialect {
        /// The file applied on SQLite.
        sqlite: String,
        /// The file applied on PostgreSQL.
        postgres: String,
    },
}

/// One `[[route]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Name used by logs, metrics and the admin API; derived from the path
    /// when absent.
    pub name: Option<Spanned<String>>,
    /// Path pattern, with `{param}` and `{*rest}` segments.
    pub path: Spanned<String>,
    /// Allowed methods; all when absent.
    pub methods: Option<Spanned<Vec<String>>>,
    /// The component file, relative to the manifest.
    pub component: Spanned<String>,
    /// Capabilities the component may import.
    pub grants: Option<Spanned<Vec<String>>>,
    /// CPU and wall-clock deadline for one request.
    #[serde(default = "Limits::default_timeout")]
    pub timeout: Duration,
    /// Most linear memory one instance may grow to.
    #[serde(default = "Limits::default_memory")]
    pub memory: ByteSize,
    /// Largest request body accepted.
    #[serde(default = "Limits::default_max_body")]
    pub max_body: ByteSize,
    /// Requests served at once; more wait up to `queue_timeout`.
    #[serde(default = "Limits::default_max_concurrency")]
    pub max_concurrency: u32,
    /// How long a request waits for a free slot before a 503.
    #[serde(default = "Limits::default_queue_timeout")]
    pub queue_timeout: Duration,
    /// Variables the `config` capability hands the guest.
    pub config: Option<Spanned<BTreeMap<String, ConfigValue>>>,
    /// Like `config`, but never written to a log.
    pub secrets: Option<Spanned<BTreeMap<String, ConfigValue>>>,
    /// The `[rate_limits]` policy applied before the component runs.
    pub rate_limit: Option<Spanned<String>>,
    /// The host-side response cache for GET.
    pub cache: Option<Spanned<ResponseCache>>,
    /// The `cache` capability's key namespace; the route's name when
    /// absent. Routes naming the same namespace share keys.
    pub cache_namespace: Option<Spanned<String>>,
    /// `config` and `secrets` with environment references resolved, at
    /// validation.
    #[serde(skip)]
    resolved_config: Arc<RouteConfig>,
}

/// Per-route limits, as the dispatcher applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// CPU and wall-clock deadline for one request.
    pub timeout: Duration,
    /// Most linear memory one instance may grow to.
    pub memory: ByteSize,
    /// Largest request body accepted.
    pub max_body: ByteSize,
    /// Requests served at once; more wait up to `queue_timeout`.
    pub max_concurrency: u32,
    /// How long a request waits for a free slot before a 503.
    pub queue_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Limits::default_timeout(),
            memory: Limits::default_memory(),
            max_body: Limits::default_max_body(),
            max_concurrency: Limits::default_max_concurrency(),
            queue_timeout: Limits::default_queue_timeout(),
        }
    }
}

impl Limits {
    fn default_timeout() -> Duration {
        Duration(time::Duration::from_secs(30))
    }
    fn default_memory() -> ByteSize {
        ByteSize(64 << 20)
    }
    fn default_max_body() -> ByteSize {
        ByteSize(10 << 20)
    }
    fn default_max_concurrency() -> u32 {
        1024
    }
    fn default_queue_timeout() -> Duration {
        Duration(time::Duration::from_millis(100))
    }
}

/// One route's settings, wherever they were written (a `[[route]]` of the
/// manifest or the query of an admin `PUT`), validated by the same checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// Name used by logs, metrics and the admin API.
    pub name: String,
    /// Path pattern, with `{param}` and `{*rest}` segments.
    pub path: String,
    /// Methods served; `None` means all.
    pub methods: Option<Vec<http::Method>>,
    /// Capabilities the component may import.
    pub grants: Vec<String>,
    /// Limits applied to each request.
    pub limits: Limits,
    /// Variables and secrets for the `config` capability.
    pub config: Arc<RouteConfig>,
    /// The rate-limit policy applied before the component runs.
    pub rate_limit: Option<String>,
    /// The host-side response cache.
    pub cache: Option<ResponseCache>,
    /// The `cache` capability's key namespace.
    pub cache_namespace: String,
}

/// Checks a route path: absolute, and not under a path the host serves.
pub fn check_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("{p:?} must start with '/'"));
    }
    if let Some(prefix) = RESERVED_PREFIXES.iter().find(|r| p.starts_with(**r)) {
        return Err(format!(
            "{p:?} is under {prefix}, which the host serves itself"
        ));
    }
    Ok(())
}

/// Parses method names, which must be upper-case HTTP methods.
pub fn parse_methods(methods: &[String]) -> Result<Vec<http::Method>, String> {
    methods
        .iter()
        .map(|m| match http::Method::from_bytes(m.as_bytes()) {
            Ok(method) if !m.chars().any(|c| c.is_ascii_lowercase()) => Ok(method),
            _ => Err(format!(
                "{m:?} is not an HTTP method (use upper case, e.g. \"GET\")"
            )),
        })
        .collect()
}

/// Checks that every grant names a known capability.
pub fn check_grants(grants: &[String]) -> Result<(), String> {
    match grants.iter().find(|g| !KNOWN_GRANTS.contains(&g.as_str())) {
        Some(g) => Err(format!(
            "unknown capability {g:?}; known: {}",
            KNOWN_GRANTS.join(", ")
        )),
        None => Ok(()),
    }
}

/// Checks limits that parse but cannot work; the error names the field.
pub fn check_limits(limits: &Limits) -> Result<(), (&'static str, String)> {
    if limits.timeout.0.is_zero() {
        return Err(("timeout", "must be more than 0".into()));
    }
    if limits.max_concurrency == 0 {
        return Err(("max_concurrency", "must be at least 1".into()));
    }
    if limits.memory.0 < 1 << 20 {
        return Err(("memory", "must be at least 1MiB".into()));
    }
    Ok(())
}

/// A manifest that could not be read or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("manifest {path}: cannot read: {source}")]
    Read {
        /// The manifest path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// TOML syntax or schema error; the message carries line and column.
    #[error("manifest {path}: {source}")]
    Parse {
        /// The manifest path.
        path: PathBuf,
        /// The parser's error, which quotes the offending line.
        source: Box<toml::de::Error>,
    },
    /// A value parsed but is not acceptable.
    #[error("manifest {path}:{line}: {field}: {message}")]
    Invalid {
        /// The manifest path.
        path: PathBuf,
        /// 1-based line of the offending value.
        line: usize,
        /// The field, e.g. `route[2].path`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

impl Manifest {
    /// Reads and validates the manifest at `path`.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base_dir = path.parent().unwrap_or(Path::new(".")).to_owned();
        Manifest::parse(&text, path, base_dir)
    }

    /// Parses and validates manifest `text`; `path` is only used in errors.
    pub fn parse(text: &str, path: &Path, base_dir: PathBuf) -> Result<Manifest, ManifestError> {
        let mut manifest: Manifest = toml::from_str(text).map_err(|e| ManifestError::Parse {
            path: path.to_owned(),
            source: Box::new(e),
        })?;
        manifest.base_dir = base_dir;
        manifest.validate(text, path)?;
        Ok(manifest)
    }

    fn validate(&mut self, text: &str, path: &Path) -> Result<(), ManifestError> {
        let invalid = |span: Range<usize>, field: String, message: String| ManifestError::Invalid {
            path: path.to_owned(),
            line: line_of(text, span.start),
            field,
            message,
        };
        let mut names = std::collections::HashSet::new();
        let mut paths = matchit::Router::new();
        for (i, route) in self.routes.iter_mut().enumerate() {
            let field = |name: &str| format!("route[{i}].{name}");
            let p = route.path.get_ref();
            if let Err(message) = check_path(p) {
                return Err(invalid(route.path.span(), field("path"), message));
            }
            if let Err(e) = paths.insert(p.as_str(), ()) {
                return Err(invalid(route.path.span(), field("path"), e.to_string()));
            }
            let name = route.name();
            if !names.insert(name.clone()) {
                let span = route.name.as_ref().map_or(route.path.span(), Spanned::span);
                return Err(invalid(
                    span,
                    field("name"),
                    format!("route name {name:?} is used twice"),
                ));
            }
            if let Some(methods) = &route.methods
                && let Err(message) = parse_methods(methods.get_ref())
            {
                return Err(invalid(methods.span(), field("methods"), message));
            }
            if let Some(grants) = &route.grants
                && let Err(message) = check_grants(grants.get_ref())
            {
                return Err(invalid(grants.span(), field("grants"), message));
            }
            if let Err((name, message)) = check_limits(&route.limits()) {
                return Err(invalid(route.path.span(), field(name), message));
            }
            if let Some(policy) = &route.rate_limit
                && !self.rate_limits.contains_key(policy.get_ref())
            {
                return Err(invalid(
                    policy.span(),
                    field("rate_limit"),
                    format!("no policy {:?} in [rate_limits]", policy.get_ref()),
                ));
            }
            if let Some(cache) = &route.cache {
                let c = cache.get_ref();
                if c.ttl.0.is_zero() {
                    return Err(invalid(
                        cache.span(),
                        field("cache.ttl"),
                        "must be more than 0".into(),
                    ));
                }
                if let Some(bad) = c
                    .vary
                    .iter()
                    .find(|h| http::HeaderName::from_bytes(h.as_bytes()).is_err())
                {
                    return Err(invalid(
                        cache.span(),
                        field("cache.vary"),
                        format!("{bad:?} is not a header name"),
                    ));
                }
            }
            let config = RouteConfig::resolve(
                route.config.as_ref().map(Spanned::get_ref),
                route.secrets.as_ref().map(Spanned::get_ref),
            );
            match config {
                Ok(config) => route.resolved_config = Arc::new(config),
                Err(err) => {
                    let table = if err.secret { "secrets" } else { "config" };
                    let spanned = if err.secret {
                        &route.secrets
                    } else {
                        &route.config
                    };
                    let span = spanned.as_ref().map_or(route.path.span(), Spanned::span);
                    return Err(invalid(
                        span,
                        field(&format!("{table}.{}", err.key)),
                        err.message,
                    ));
                }
            }
        }
        for (name, policy) in &self.rate_limits {
            let span = policy.key.span();
            let field = |f: &str| format!("rate_limits.{name}.{f}");
            // Names are part of bucket keys (`{policy}:...`), so no ':'.
            let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
            if name.is_empty() || name.len() > 64 || !name.bytes().all(plain) {
                return Err(invalid(
                    span,
                    format!("rate_limits.{name:?}"),
                    "a policy name is 1 to 64 of A-Z, a-z, 0-9, '-', '_', '.'".into(),
                ));
            }
            if let Err(message) = policy.key_source() {
                return Err(invalid(span, field("key"), message));
            }
            if policy.requests == 0 {
                return Err(invalid(
                    span,
                    field("requests"),
                    "must be at least 1".into(),
                ));
            }
            if policy.window.0.is_zero() {
                return Err(invalid(span, field("window"), "must be more than 0".into()));
            }
        }
        if let Some(database) = &self.database {
            let field = |name: &str| format!("database.{name}");
            let span = |s: Option<Range<usize>>| s.unwrap_or(0..0);
            let url_span = span(database.url.as_ref().map(Spanned::span));
            if let Some(url) = &database.url
                && let Err(message) = check_database_url(url.get_ref())
            {
                return Err(invalid(url_span, field("url"), message));
            }
            if database.max_connections == 0 {
                return Err(invalid(
                    url_span,
                    field("max_connections"),
                    "must be at least 1".into(),
                ));
            }
            if database.min_connections > database.max_connections {
                return Err(invalid(
                    url_span,
                    field("min_connections"),
                    "must not exceed max_connections".into(),
                ));
            }
        }
        Ok(())
    }

    /// Where precompiled components are cached: `TRELLIS_CACHE_DIR`, then
    /// `server.cache_dir`, then the user's cache directory.
    pub fn cache_dir(&self) -> PathBuf {
        if let Some(dir) = std::env::var_os("TRELLIS_CACHE_DIR") {
            return dir.into();
        }
        if let Some(dir) = &self.server.cache_dir {
            return self.base_dir.join(dir);
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir);
        base.join("trellis")
    }
}

impl Route {
    /// The route's name: explicit, or derived from its path
    /// (`/users/{id}` → `users-id`).
    pub fn name(&self) -> String {
        if let Some(name) = &self.name {
            return name.get_ref().clone();
        }
        let derived: Vec<&str> = self
            .path
            .get_ref()
            .split('/')
            .map(|s| s.trim_matches(|c| c == '{' || c == '}' || c == '*'))
            .filter(|s| !s.is_empty())
            .collect();
        if derived.is_empty() {
            "root".to_owned()
        } else {
            derived.join("-")
        }
    }

    /// The limits every request on this route runs under.
    pub fn limits(&self) -> Limits {
        Limits {
            timeout: self.timeout,
            memory: self.memory,
            max_body: self.max_body,
            max_concurrency: self.max_concurrency,
            queue_timeout: self.queue_timeout,
        }
    }

    /// The methods this route answers; `None` means all.
    pub fn methods(&self) -> Option<Vec<http::Method>> {
        self.methods.as_ref().map(|m| {
            m.get_ref()
                .iter()
                .filter_map(|m| http::Method::from_bytes(m.as_bytes()).ok())
                .collect()
        })
    }

    /// The route's settings, apart from its component.
    pub fn spec(&self) -> RouteSpec {
        RouteSpec {
            name: self.name(),
            path: self.path.get_ref().clone(),
            methods: self.methods(),
            grants: self
                .grants
                .as_ref()
                .map(|g| g.get_ref().clone())
                .unwrap_or_default(),
            limits: self.limits(),
            config: self.resolved_config.clone(),
            rate_limit: self.rate_limit.as_ref().map(|r| r.get_ref().clone()),
            cache: self.cache.as_ref().map(|c| c.get_ref().clone()),
            cache_namespace: self
                .cache_namespace
                .as_ref()
                .map_or_else(|| self.name(), |n| n.get_ref().clone()),
        }
    }

    /// The component's file path, resolved against the manifest directory.
    pub fn component_path(&self, base_dir: &Path) -> PathBuf {
        base_dir.join(self.component.get_ref())
    }
}

/// Checks that a database URL names a database the host supports.
pub fn check_database_url(url: &str) -> Result<(), String> {
    if url.starts_with("sqlite:")
        || url.starts_with("postgres://")
        || url.starts_with("postgresql://")
    {
        Ok(())
    } else {
        Err("must start with sqlite: or postgres://".into())
    }
}

/// 1-based line number of byte offset `at` in `text`.
pub fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(text, Path::new("trellis.toml"), PathBuf::from("."))
    }

    #[test]
    fn defaults_and_derived_names() {
        let m = parse("[[route]]\npath = \"/users/{id}\"\ncomponent = \"u.wasm\"\n").unwrap();
        assert_eq!(m.routes[0].name(), "users-id");
        assert_eq!(m.routes[0].timeout.0, time::Duration::from_secs(30));
        assert!(m.routes[0].methods().is_none());
        assert_eq!(m.server.listen.port(), 8080);
    }

    #[test]
    fn bad_duration_names_line_and_value() {
        let err = parse("[[route]]\npath = \"/a\"\ncomponent = \"a.wasm\"\ntimeout = \"2x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 4"), "{err}");
        assert!(err.contains("timeout"), "{err}");
        assert!(err.contains("unit must be"), "{err}");
    }

    #[test]
    fn unknown_field_is_named() {
        let err = parse("[[route]]\npath = \"/a\"\ncomponent = \"a.wasm\"\ntmeout = \"2s\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("tmeout"), "{err}");
        assert!(err.contains("line 4"), "{err}");
    }

    #[test]
    fn semantic_errors_name_line_and_field() {
        let err = parse("[[route]]\npath = \"/a\"\ncomponent = \"a.wasm\"\n\n[[route]]\npath = \"/a\"\ncomponent = \"b.wasm\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("manifest trellis.toml:6: route[1].path:"),
            "{err}"
        );

        let err = parse("[[route]]\npath = \"/metrics\"\ncomponent = \"a.wasm\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains(":2: route[0].path"), "{err}");

        let err = parse("[[route]]\npath = \"/a\"\ncomponent = \"a.wasm\"\nmethods = [\"get\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains(":4: route[0].methods"), "{err}");

        let err = parse("[[route]]\npath = \"/a\"\ncomponent = \"a.wasm\"\ngrants = [\"sql\", \"filesystem\"]\n").unwrap_err().to_string();
        assert!(
            err.contains(":4: route[0].grants") && err.contains("filesystem"),
            "{err}"
        );
    }

    #[test]
    fn rate_limit_policy_names_cannot_split_bucket_keys() {
        let err = parse("[rate_limits.\"a:b\"]\nrequests = 1\nwindow = \"1s\"\nkey = \"ip\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains(":4: rate_limits.\"a:b\""), "{err}");
        parse("[rate_limits.per-ip_v2]\nrequests = 1\nwindow = \"1s\"\n").unwrap();
    }
}
