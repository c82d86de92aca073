//! The `trellis.toml` manifest: its schema and defaults (here), its
//! validation ([`validate`]) and the runtime specs it yields ([`spec`]).
//!
//! Every error names the file, the line and the field, because operators
//! meet these errors at deploy time, usually in a CI log.

pub mod edge;
#[cfg(test)]
mod fuzz;
pub mod jobs;
pub mod registries;
pub mod schema;
pub mod spec;
pub mod upstreams;
mod validate;

use crate::config::reference::Reference;
use crate::config::units::{ByteSize, Duration};
pub use edge::{AuthPolicy, Cors};
pub use jobs::{Backoff, JobSource, QueueSettings, ScheduleEntry, WorkerEntry, WorkerSpec};
pub use registries::{Credentials, RegistryEntry};
pub use schema::{RouteSchema, SchemaFiles};
use serde::Deserialize;
pub use spec::{Limits, Reuse, RouteConfig, RouteSpec};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time;
use toml::Spanned;
pub use upstreams::{BreakerSettings, UpstreamEntry, UpstreamSpec};
pub use validate::{
    MIN_CACHE_DIR_SIZE, check_cache, check_cache_dir_max_size, check_database_url, check_grants,
    check_limits, check_path, check_reuse, check_route_name, check_scopes, parse_methods,
};

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
    "identity",
];

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
    /// HTTP services guests may call, granted per route by `outbound`.
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamEntry>,
    /// Named authentication policies, attached to routes by `auth`.
    #[serde(default)]
    pub auth: BTreeMap<String, AuthPolicy>,
    /// CORS for every route that does not set its own `cors`.
    #[serde(default)]
    pub cors: Option<Spanned<Cors>>,
    /// Where route versions live: this host only, or a database every
    /// host of a fleet shares.
    #[serde(default)]
    pub deployments: Deployments,
    /// OCI registries components are pulled from (`component =
    /// "oci://HOST/…"`), by `HOST[:PORT]`: credentials and plain HTTP.
    #[serde(default)]
    pub registries: BTreeMap<String, Spanned<RegistryEntry>>,
    /// The routes, each served by its own component.
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteEntry>,
    /// Named job queues (`[queues.NAME]`).
    #[serde(default)]
    pub queues: BTreeMap<String, Spanned<QueueSettings>>,
    /// Components running the jobs of a queue or the events of a topic.
    #[serde(default, rename = "worker")]
    pub workers: Vec<WorkerEntry>,
    /// Jobs enqueued on a cron schedule.
    #[serde(default, rename = "schedule")]
    pub schedules: Vec<ScheduleEntry>,
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
    /// How much the cache directory may hold before its least recently
    /// used entries that no loaded version needs are deleted (env
    /// `TRELLIS_CACHE_DIR_MAX_SIZE` wins).
    pub cache_dir_max_size: ByteSize,
    /// Most guest instances alive at once across all routes; sizes the
    /// pooling allocator.
    pub max_instances: u32,
    /// Largest component the admin API accepts in one upload.
    pub max_component_size: ByteSize,
    /// How long a client has to send a whole request head, counted from
    /// the connection's accept or from the first byte of a later request
    /// on it; past it the connection is closed.
    pub header_timeout: Duration,
    /// How long a keep-alive connection may sit idle between requests
    /// before it is closed.
    pub idle_timeout: Duration,
    /// Most client connections open at once; beyond it the host stops
    /// accepting until one closes.
    pub max_connections: u32,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: None,
            shutdown_grace: Duration(time::Duration::from_secs(30)),
            compression_min_size: ByteSize(1024),
            cache_dir: None,
            cache_dir_max_size: ByteSize(1 << 30),
            max_instances: 1000,
            max_component_size: ByteSize(64 << 20),
            header_timeout: Duration(time::Duration::from_secs(10)),
            idle_timeout: Duration(time::Duration::from_secs(60)),
            max_connections: 10_000,
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

/// The `[deployments]` table: whether route versions are shared through
/// the database with every host using it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Deployments {
    /// Components, versions, settings and history of routes changed
    /// through the admin API live in the database, and a change through
    /// any host reaches every host sharing it.
    pub shared: bool,
    /// How often a host compares what it serves with the database (and
    /// heartbeats), so a missed notification heals.
    pub reconcile: Duration,
    /// A host not seen for this long is shown as not live in
    /// `GET /admin/fleet`, and `deploy --wait` stops waiting for it.
    pub stale_after: Duration,
}

impl Default for Deployments {
    fn default() -> Self {
        Deployments {
            shared: false,
            reconcile: Duration(time::Duration::from_secs(5)),
            stale_after: Duration(time::Duration::from_secs(30)),
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
    /// The prefix of every key background jobs keep in Redis; deployments
    /// sharing one Redis each set their own.
    #[serde(default = "Redis::default_jobs_prefix")]
    pub jobs_prefix: Spanned<String>,
}

impl Redis {
    fn default_timeout() -> Duration {
        Duration(time::Duration::from_millis(250))
    }
    fn default_jobs_prefix() -> Spanned<String> {
        Spanned::new(
            0..0,
            crate::services::jobs::redis::DEFAULT_PREFIX.to_owned(),
        )
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
    /// What a request is counted by: `ip`, `header:NAME`, `route` or
    /// `subject` (the caller `auth` verified).
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
    /// The subject of the verified caller (routes with `auth` only); the
    /// check then runs just after authentication.
    Subject,
}

impl KeySource {
    /// Parses `ip`, `header:NAME`, `route` or `subject`.
    pub fn parse(key: &str) -> Result<KeySource, String> {
        match key {
            "ip" => Ok(KeySource::Ip),
            "route" => Ok(KeySource::Route),
            "subject" => Ok(KeySource::Subject),
            _ => match key.strip_prefix("header:") {
                Some(name) => http::HeaderName::from_bytes(name.as_bytes())
                    .map(KeySource::Header)
                    .map_err(|_| format!("{name:?} is not a header name")),
                None => Err(format!(
                    "{key:?} is not a key; use \"ip\", \"header:NAME\", \"route\" or \"subject\""
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

/// One `[[route]]` as written; [`RouteEntry::spec`] turns it into the
/// [`RouteSpec`] the host runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteEntry {
    /// Name used by logs, metrics and the admin API; derived from the path
    /// when absent.
    pub name: Option<Spanned<String>>,
    /// Path pattern, with `{param}` and `{*rest}` segments.
    pub path: Spanned<String>,
    /// Allowed methods; all when absent.
    pub methods: Option<Spanned<Vec<String>>>,
    /// The component file, relative to the manifest, or an
    /// `oci://HOST/NAMESPACE/NAME:TAG` (or `@sha256:…`) reference.
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
    /// The `[upstreams]` the component may call.
    pub outbound: Option<Spanned<Vec<String>>>,
    /// The `[auth]` policy a caller must satisfy before the component runs.
    pub auth: Option<Spanned<String>>,
    /// Scopes the verified caller must all hold (JWT `scope` or `scp`).
    pub scopes: Option<Spanned<Vec<String>>>,
    /// CORS for this route, replacing `[cors]`.
    pub cors: Option<Spanned<Cors>>,
    /// JSON Schema files the body and the query must match before the
    /// component runs.
    pub schema: Option<Spanned<SchemaFiles>>,
    /// A one-line summary for `/openapi.json`.
    pub summary: Option<String>,
    /// A longer description for `/openapi.json`.
    pub description: Option<String>,
    /// Opt-in instance reuse; a fresh instance per request when absent.
    pub reuse: Option<Spanned<Reuse>>,
    /// The `[queues]` the component may enqueue on (with the `queue` grant).
    pub queues: Option<Spanned<Vec<String>>>,
    /// The topics the component may publish on (with the `queue` grant);
    /// each must be some `[[worker]]`'s topic.
    pub topics: Option<Spanned<Vec<String>>>,
    /// `config` and `secrets` with environment references resolved, at
    /// validation.
    #[serde(skip)]
    resolved_config: Arc<RouteConfig>,
    /// The route's `cors`, else `[cors]`, at validation.
    #[serde(skip)]
    resolved_cors: Option<Arc<Cors>>,
    /// The route's `schema`, compiled at validation.
    #[serde(skip)]
    resolved_schema: Option<Arc<RouteSchema>>,
}

/// A `config` or `secrets` entry as written in the manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ConfigValue {
    /// The value itself.
    Literal(String),
    /// The value of a host environment variable.
    Env(FromEnv),
}

/// `{ env = "NAME", default = "..." }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FromEnv {
    /// The environment variable to read when the manifest loads.
    pub env: String,
    /// The value when the variable is unset; without one, an unset
    /// variable is a manifest error.
    pub default: Option<String>,
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

    /// The `[queues]` settings by name.
    pub fn queue_settings(&self) -> BTreeMap<String, QueueSettings> {
        self.queues
            .iter()
            .map(|(k, v)| (k.clone(), *v.get_ref()))
            .collect()
    }

    /// The `[[worker]]`s as the host runs them.
    pub fn worker_specs(&self) -> Vec<WorkerSpec> {
        let queues = self.queue_settings();
        self.workers.iter().map(|w| w.spec(&queues)).collect()
    }

    /// Whether the manifest uses background jobs at all.
    pub fn uses_jobs(&self) -> bool {
        !self.queues.is_empty() || !self.workers.is_empty()
    }

    /// Where precompiled components are cached: `TRELLIS_CACHE_DIR`, then
    /// `server.cache_dir`, then the user's cache directory.
    pub fn cache_dir(&self, env: &crate::config::env::Env) -> PathBuf {
        if let Some(dir) = &env.cache_dir {
            return dir.clone();
        }
        if let Some(dir) = &self.server.cache_dir {
            return self.base_dir.join(dir);
        }
        let base = env
            .user_cache_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir);
        base.join("trellis")
    }
}

impl RouteEntry {
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
            outbound: self.outbound.as_ref().map(|o| o.get_ref().clone()),
            auth: self.auth.as_ref().map(|a| a.get_ref().clone()),
            scopes: self
                .scopes
                .as_ref()
                .map(|s| s.get_ref().clone())
                .unwrap_or_default(),
            cors: self.resolved_cors.clone(),
            schema: self.resolved_schema.clone(),
            summary: self.summary.clone(),
            description: self.description.clone(),
            reuse: self.reuse.as_ref().map(|r| *r.get_ref()),
            queues: self
                .queues
                .as_ref()
                .map(|q| q.get_ref().clone())
                .unwrap_or_default(),
            topics: self
                .topics
                .as_ref()
                .map(|t| t.get_ref().clone())
                .unwrap_or_default(),
            set_by_admin: BTreeMap::new(),
        }
    }

    /// The component's file path, resolved against the manifest directory.
    pub fn component_path(&self, base_dir: &Path) -> PathBuf {
        base_dir.join(self.component.get_ref())
    }

    /// The component's registry reference, when it is `oci://…` (checked
    /// at validation).
    pub fn oci(&self) -> Option<crate::config::reference::Reference> {
        crate::config::reference::Reference::parse(self.component.get_ref()).ok()
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

    /// The manifest and the admin API (through [`Limits::set`]) accept the
    /// same limits and read them the same way.
    #[test]
    fn every_limit_is_settable_in_the_manifest_and_by_name() {
        let values = [
            ("timeout", "\"2s\""),
            ("memory", "\"16MiB\""),
            ("max_body", "\"1KiB\""),
            ("max_concurrency", "8"),
            ("queue_timeout", "\"50ms\""),
        ];
        for name in Limits::NAMES {
            let (_, value) = values.iter().find(|(n, _)| *n == name).expect(name);
            let text =
                format!("[[route]]\npath = \"/a\"\ncomponent = \"a.wasm\"\n{name} = {value}\n");
            let from_manifest = parse(&text).unwrap().routes[0].limits();
            let mut by_name = Limits::default();
            assert!(
                by_name.set(name, value.trim_matches('"')).unwrap(),
                "{name}"
            );
            assert_ne!(by_name, Limits::default(), "{name} changed nothing");
            assert_eq!(from_manifest, by_name, "{name}");
        }
        assert!(!Limits::default().set("bogus", "1").unwrap());
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
    fn reuse_is_opt_in_with_defaults_and_bounds() {
        let route = |line: &str| {
            parse(&format!(
                "[[route]]\npath = \"/a\"\ncomponent = \"a.wasm\"\n{line}\n"
            ))
            .map(|m| m.routes[0].spec().reuse)
            .map_err(|e| e.to_string())
        };
        assert_eq!(route("").unwrap(), None, "fresh instances by default");
        let reuse = route("reuse = { requests = 64 }").unwrap().unwrap();
        assert_eq!(reuse.requests, 64);
        assert_eq!(reuse.concurrent, 1);
        assert_eq!(reuse.idle.0, time::Duration::from_secs(1));
        let reuse = route("reuse = { requests = 2, concurrent = 16, idle = \"250ms\" }")
            .unwrap()
            .unwrap();
        assert_eq!((reuse.requests, reuse.concurrent), (2, 16));
        assert_eq!(reuse.idle.0, time::Duration::from_millis(250));
        assert_eq!(route("reuse = {}").unwrap().unwrap().requests, 128);

        for (line, field, says) in [
            (
                "reuse = { requests = 0 }",
                "route[0].reuse.requests",
                "at least 1",
            ),
            (
                "reuse = { concurrent = 0 }",
                "route[0].reuse.concurrent",
                "at least 1",
            ),
            (
                "reuse = { concurrent = 5000 }",
                "route[0].reuse.concurrent",
                "at most 1024",
            ),
            (
                "reuse = { idle = \"0s\" }",
                "route[0].reuse.idle",
                "more than 0",
            ),
            (
                "reuse = { idle = \"61m\" }",
                "route[0].reuse.idle",
                "at most 3600s",
            ),
        ] {
            let err = route(line).unwrap_err();
            assert!(err.contains(&format!(":4: {field}")), "{line}: {err}");
            assert!(err.contains(says), "{line}: {err}");
        }
        let err = route("reuse = { request = 3 }").unwrap_err();
        assert!(err.contains("line 4") && err.contains("request"), "{err}");
        let err = route("reuse = { requests = -1 }").unwrap_err();
        assert!(err.contains("line 4") && err.contains("requests"), "{err}");
        let err = route("reuse = { idle = \"1x\" }").unwrap_err();
        assert!(
            err.contains("line 4") && err.contains("unit must be"),
            "{err}"
        );
    }

    #[test]
    fn route_names_that_are_path_segments_are_refused() {
        for name in [".", ".."] {
            let text =
                format!("[[route]]\nname = {name:?}\npath = \"/a\"\ncomponent = \"a.wasm\"\n");
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(":2: route[0].name"), "{err}");
            assert!(err.contains("path segment"), "{err}");
        }
        let err = parse("[[route]]\npath = \"/..\"\ncomponent = \"a.wasm\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("route[0].name"), "{err}");
        let err = parse("[[route]]\nname = \"a/b\"\npath = \"/a\"\ncomponent = \"a.wasm\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("route[0].name"), "{err}");
        parse("[[route]]\nname = \"v1.2\"\npath = \"/a\"\ncomponent = \"a.wasm\"\n").unwrap();
    }

    #[test]
    fn durations_have_a_maximum_per_field() {
        let route = |line: &str| {
            parse(&format!(
                "[[route]]\npath = \"/a\"\ncomponent = \"a.wasm\"\n{line}\n"
            ))
            .map(|_| ())
            .map_err(|e| e.to_string())
        };
        route("timeout = \"1h\"").unwrap();
        let err = route("timeout = \"61m\"").unwrap_err();
        assert!(
            err.contains("route[0].timeout") && err.contains("at most 3600s"),
            "{err}"
        );
        let err = route("timeout = \"99999999999999h\"").unwrap_err();
        assert!(
            err.contains("timeout") && err.contains("too large"),
            "{err}"
        );
        let err = route("queue_timeout = \"11m\"").unwrap_err();
        assert!(err.contains("route[0].queue_timeout"), "{err}");
        let err = route("cache = { ttl = \"169h\" }").unwrap_err();
        assert!(err.contains("route[0].cache.ttl"), "{err}");
        let err = parse("[server]\nshutdown_grace = \"2h\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.shutdown_grace"), "{err}");
        let err = parse("[redis]\nurl = \"redis://x\"\ntimeout = \"2m\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("redis.timeout"), "{err}");
        let err = parse("[redis]\nurl = \"redis://x\"\njobs_prefix = \"a b\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("redis.jobs_prefix") && err.contains(":3:"),
            "{err}"
        );
        let err = parse("[database]\nstatement_timeout = \"2h\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("database.statement_timeout"), "{err}");
        let err = parse("[rate_limits.a]\nrequests = 1\nwindow = \"25h\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("rate_limits.a.window"), "{err}");
    }

    #[test]
    fn connection_settings_default_and_are_bounded() {
        let m = parse("").unwrap();
        assert_eq!(m.server.header_timeout.0, time::Duration::from_secs(10));
        assert_eq!(m.server.idle_timeout.0, time::Duration::from_secs(60));
        assert_eq!(m.server.max_connections, 10_000);

        let m = parse(
            "[server]\nheader_timeout = \"1s\"\nidle_timeout = \"2m\"\nmax_connections = 20\n",
        )
        .unwrap();
        assert_eq!(m.server.header_timeout.0, time::Duration::from_secs(1));
        assert_eq!(m.server.idle_timeout.0, time::Duration::from_secs(120));
        assert_eq!(m.server.max_connections, 20);

        for (text, want) in [
            (
                "[server]\nlisten = \"127.0.0.1:1\"\nheader_timeout = \"0s\"\n",
                ":3: server.header_timeout: must be more than 0",
            ),
            (
                "[server]\nheader_timeout = \"2h\"\n",
                ":2: server.header_timeout: 7200s is too long: at most 3600s",
            ),
            (
                "[server]\nidle_timeout = \"0ms\"\n",
                ":2: server.idle_timeout: must be more than 0",
            ),
            (
                "[server]\nidle_timeout = \"25h\"\n",
                ":2: server.idle_timeout:",
            ),
            (
                "\n[server]\nmax_connections = 0\n",
                ":3: server.max_connections: must be at least 1",
            ),
            (
                "[server]\nmax_connections = 1000001\n",
                ":2: server.max_connections: must be at most 1000000",
            ),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn the_cache_directory_size_defaults_to_1gib_and_is_checked() {
        let m = parse("").unwrap();
        assert_eq!(m.server.cache_dir_max_size.0, 1 << 30);
        let m = parse("[server]\ncache_dir_max_size = \"256MiB\"\n").unwrap();
        assert_eq!(m.server.cache_dir_max_size.0, 256 << 20);
        let m = parse("[server]\ncache_dir_max_size = 2097152\n").unwrap();
        assert_eq!(m.server.cache_dir_max_size.0, 2 << 20);
        for (text, want) in [
            (
                "[server]\nlisten = \"127.0.0.1:1\"\ncache_dir_max_size = \"512KiB\"\n",
                ":3: server.cache_dir_max_size: 512KiB is too small: at least 1MiB",
            ),
            (
                "[server]\ncache_dir_max_size = 0\n",
                ":2: server.cache_dir_max_size: 0B is too small",
            ),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
        // A value that is not a size: the parser's report, with the line
        // and the key.
        let err = parse("[server]\n\ncache_dir_max_size = \"1 lots\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 3")
                && err.contains("cache_dir_max_size")
                && err.contains("invalid size"),
            "{err}"
        );
    }

    #[test]
    fn deployments_default_to_local_and_are_bounded() {
        let m = parse("").unwrap();
        assert!(!m.deployments.shared);
        assert_eq!(m.deployments.reconcile.0, time::Duration::from_secs(5));
        let m = parse("[deployments]\nshared = true\nreconcile = \"1s\"\nstale_after = \"3s\"\n")
            .unwrap();
        assert!(m.deployments.shared);
        for (text, want) in [
            (
                "[deployments]\nreconcile = \"10ms\"\n",
                ":2: deployments.reconcile: must be at least 100ms",
            ),
            (
                "[deployments]\nreconcile = \"2h\"\nstale_after = \"5h\"\n",
                ":2: deployments.reconcile:",
            ),
            (
                "[deployments]\nshared = true\nstale_after = \"9s\"\n",
                ":3: deployments.stale_after: 9s is too short",
            ),
            ("[deployments]\nshare = true\n", "share"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn registries_and_oci_components_are_checked_with_line_and_field() {
        let m = parse(
            "[registries.\"127.0.0.1:5000\"]\ninsecure = true\n\n\
             [registries.\"registry.example.com\"]\nusername = \"bot\"\n\
             password = { env = \"TRELLIS_UNIT_SURELY_UNSET\", default = \"pw\" }\n\n\
             [[route]]\npath = \"/a\"\ncomponent = \"oci://registry.example.com/acme/a:1.0\"\n\n\
             [queues.q]\n[[worker]]\nqueue = \"q\"\ncomponent = \"oci://127.0.0.1:5000/acme/mailer:2\"\n",
        )
        .unwrap();
        assert!(m.registries["127.0.0.1:5000"].get_ref().is_insecure());
        let creds = m.registries["registry.example.com"]
            .get_ref()
            .resolved
            .clone()
            .unwrap();
        assert_eq!(
            (creds.username.as_str(), creds.password.as_str()),
            ("bot", "pw")
        );
        assert!(!format!("{creds:?}").contains("pw"));
        let reference = m.routes[0].oci().unwrap();
        assert_eq!(reference.repository, "acme/a");
        assert_eq!(m.worker_specs()[0].name, "mailer");
        assert!(m.routes[0].oci().is_some());

        for (text, want) in [
            (
                "[registries.\"10.0.0.5:5000\"]\ninsecure = true\n",
                ":2: registries.\"10.0.0.5:5000\".insecure: plain HTTP is allowed only for a registry on loopback",
            ),
            (
                "[registries.\"r.example\"]\nusername = \"u\"\n",
                ":2: registries.\"r.example\".password: a username needs a password",
            ),
            (
                "[registries.\"r.example\"]\nusername = \"u\"\npassword = { env = \"TRELLIS_UNIT_SURELY_UNSET\" }\n",
                ":3: registries.\"r.example\".password: environment variable TRELLIS_UNIT_SURELY_UNSET",
            ),
            ("[registries.\"a b\"]\n", "registries.\"a b\""),
            (
                "[[route]]\npath = \"/a\"\ncomponent = \"oci://r.example/acme/a\"\n",
                ":3: route[0].component: \"oci://r.example/acme/a\": name a tag",
            ),
            (
                "[queues.q]\n[[worker]]\nqueue = \"q\"\ncomponent = \"oci://r.example/A/b:1\"\n",
                ":4: worker[0].component",
            ),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn rate_limit_policy_names_cannot_split_bucket_keys() {
        let err = parse("[rate_limits.\"a:b\"]\nrequests = 1\nwindow = \"1s\"\nkey = \"ip\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains(":4: rate_limits.\"a:b\""), "{err}");
        parse("[rate_limits.per-ip_v2]\nrequests = 1\nwindow = \"1s\"\n").unwrap();
    }

    #[test]
    fn upstreams_resolve_and_bad_ones_name_line_and_field() {
        let dir = std::env::temp_dir().join(format!("trellis-upstreams-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("not.pem"), "hello").unwrap();
        let parse_in = |text: &str| {
            Manifest::parse(text, Path::new("trellis.toml"), dir.clone()).map_err(|e| e.to_string())
        };
        let route = "\n[[route]]\npath = \"/a\"\ncomponent = \"a.wasm\"\noutbound = [\"pay\"]\n";
        let m = parse_in(&format!(
            "[upstreams.pay]\nurl = \"https://Pay.example/v1/\"\nretries = 2\nbreaker = {{ failures = 3 }}\nheaders = {{ x-key = \"k\" }}\n{route}"
        ))
        .unwrap();
        let spec = m.upstreams["pay"].spec().unwrap();
        assert_eq!(
            (spec.host.as_str(), spec.port, spec.base_path.as_str()),
            ("pay.example", 443, "/v1")
        );
        assert_eq!((spec.retries, spec.breaker.failures), (2, 3));
        assert_eq!(spec.breaker.open_for.0, time::Duration::from_secs(30));
        assert!(spec.headers[0].1.is_sensitive());
        assert_eq!(m.routes[0].spec().outbound.unwrap(), ["pay"]);

        for (text, want) in [
            (
                "[upstreams.pay]\nurl = \"http://x/?q=1\"\n",
                ":2: upstreams.pay.url: ",
            ),
            (
                "[upstreams.pay]\nurl = \"ftp://x\"\n",
                ":2: upstreams.pay.url: ",
            ),
            (
                "[upstreams.pay]\nurl = \"http://u:p@x\"\n",
                ":2: upstreams.pay.url: ",
            ),
            (
                "[upstreams.pay]\nurl = \"https://x\"\nca = \"not.pem\"\n",
                ":3: upstreams.pay.ca: ",
            ),
            (
                "[upstreams.pay]\nurl = \"https://x\"\nca = \"missing.pem\"\n",
                ":3: upstreams.pay.ca: cannot read",
            ),
            (
                "[upstreams.pay]\nurl = \"http://x\"\ntimeout = \"0s\"\n",
                "upstreams.pay.timeout: must be more than 0",
            ),
            (
                "[upstreams.pay]\nurl = \"http://x\"\nretries = 11\n",
                "upstreams.pay.retries",
            ),
            (
                "[upstreams.pay]\nurl = \"http://x\"\nbreaker = { failures = 0 }\n",
                "upstreams.pay.breaker.failures",
            ),
            (
                "[upstreams.pay]\nurl = \"http://x\"\nheaders = { x = { env = \"TRELLIS_TEST_SURELY_UNSET\" } }\n",
                "TRELLIS_TEST_SURELY_UNSET",
            ),
            (
                "[upstreams.pay]\nurl = \"http://x\"\nmax_connections = 0\n",
                "upstreams.pay.max_connections",
            ),
        ] {
            let err = parse_in(&format!("{text}{route}")).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
        let err = parse_in(&format!("[upstreams.other]\nurl = \"http://x\"\n{route}")).unwrap_err();
        assert!(
            err.contains(":7: route[0].outbound: no upstream \"pay\"") && err.contains("\"other\""),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn edge_policies_are_checked_with_line_and_field() {
        const KEY: &str = "keys = { env = \"TRELLIS_UNIT_UNSET\", default = \"0123456789abcdef\" }";
        let route = "[[route]]\npath = \"/a\"\ncomponent = \"a.wasm\"\n";
        let cases: Vec<(String, &str)> = vec![
            (
                format!("{route}scopes = [\"a\"]\n"),
                ":4: route[0].scopes: scopes need `auth`",
            ),
            (
                format!(
                    "[rate_limits.s]\nrequests = 1\nwindow = \"1s\"\nkey = \"subject\"\n{route}rate_limit = \"s\"\n"
                ),
                ":8: route[0].rate_limit",
            ),
            (
                "[auth.j]\ntype = \"jwt\"\nalgorithms = [\"RS256\"]\n".into(),
                ":3: auth.j.jwks",
            ),
            (
                "[auth.j]\ntype = \"jwt\"\nalgorithms = [\"HS256\"]\n".into(),
                ":3: auth.j.secret",
            ),
            (
                "[auth.j]\ntype = \"jwt\"\nsecret = { env = \"TRELLIS_UNIT_SURELY_UNSET\" }\n"
                    .into(),
                ":3: auth.j.secret: environment variable TRELLIS_UNIT_SURELY_UNSET",
            ),
            (
                "[auth.j]\ntype = \"jwt\"\njwks = \"k.json\"\nalgorithms = [\"XS1\"]\n".into(),
                "auth.j.algorithms",
            ),
            (
                format!("[auth.k]\ntype = \"api-key\"\n{KEY}\n"),
                "auth.k.header",
            ),
            (
                format!("[auth.k]\ntype = \"api-key\"\nheader = \"x-k\"\nissuer = \"i\"\n{KEY}\n"),
                ":4: auth.k.issuer",
            ),
            ("[auth.k]\ntype = \"oauth\"\n".into(), ":2: auth.k.type"),
            (
                "[cors]\nallow_origins = [\"https://a.example/path\"]\n".into(),
                "cors.allow_origins",
            ),
            (
                format!("{route}cors = {{ allow_origins = [] }}\n"),
                ":4: route[0].cors.allow_origins",
            ),
        ];
        for (text, want) in cases {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
        // And a valid set.
        let ok = format!(
            "[auth.k]\ntype = \"api-key\"\nheader = \"x-k\"\n{KEY}\n[cors]\nallow_origins = [\"https://a.example\", \"http://localhost:3000\"]\n{route}auth = \"k\"\ngrants = [\"identity\"]\n"
        );
        let m = parse(&ok).unwrap();
        let spec = m.routes[0].spec();
        assert_eq!(spec.auth.as_deref(), Some("k"));
        assert_eq!(spec.cors.unwrap().allow_origins.len(), 2);
        assert_eq!(m.auth["k"].resolved.keys.len(), 1);
        assert!(!format!("{:?}", m.auth["k"].resolved).contains("0123456789abcdef"));
    }

    #[test]
    fn jobs_parse_with_defaults_and_bad_ones_name_line_and_field() {
        let ok = "[queues.email]\nattempts = 3\nbackoff = { initial = \"100ms\" }\n\n[queues.reports]\n\n\
            [[worker]]\nqueue = \"email\"\ncomponent = \"mailer.wasm\"\ngrants = [\"sql\"]\n\n\
            [[worker]]\ntopic = \"user.created\"\ncomponent = \"audit.wasm\"\n\n\
            [[schedule]]\nname = \"nightly\"\ncron = \"0 3 * * *\"\nqueue = \"reports\"\npayload = \"{}\"\n\n\
            [[route]]\npath = \"/a\"\ncomponent = \"a.wasm\"\ngrants = [\"queue\"]\nqueues = [\"email\"]\ntopics = [\"user.created\"]\n";
        let m = parse(ok).unwrap();
        let workers = m.worker_specs();
        assert_eq!(workers[0].name, "mailer");
        assert_eq!(workers[0].source, JobSource::Queue("email".into()));
        assert_eq!(workers[0].settings.attempts, 3);
        assert_eq!(
            workers[0].settings.backoff.initial.0,
            time::Duration::from_millis(100)
        );
        assert_eq!(
            workers[0].settings.backoff.max.0,
            time::Duration::from_secs(300)
        );
        assert_eq!(workers[0].concurrency, 4);
        assert_eq!(workers[1].source, JobSource::Topic("user.created".into()));
        assert_eq!(workers[1].name, "audit");
        assert!(m.schedules[0].parsed.is_some());
        assert_eq!(m.routes[0].spec().queues, ["email"]);
        assert!(m.uses_jobs());

        let route = "\n[[route]]\npath = \"/a\"\ncomponent = \"a.wasm\"\n";
        for (text, want) in [
            (
                "[queues.q]\n\n[[schedule]]\nname = \"s\"\ncron = \"* * 32 * *\"\nqueue = \"q\"\n".to_owned(),
                ":5: schedule[0].cron: day of month field",
            ),
            (
                "[queues.q]\n\n[[schedule]]\nname = \"s\"\ncron = \"* * *\"\nqueue = \"q\"\n".to_owned(),
                ":5: schedule[0].cron: \"* * *\" has 3 fields",
            ),
            (
                "[[schedule]]\nname = \"s\"\ncron = \"* * * * *\"\nqueue = \"q\"\n".to_owned(),
                ":4: schedule[0].queue: no queue \"q\"",
            ),
            (
                "[queues.q]\n[[worker]]\nqueue = \"r\"\ncomponent = \"w.wasm\"\n".to_owned(),
                ":3: worker[0].queue: no queue \"r\" in [queues]; declared: \"q\"",
            ),
            (
                "[queues.q]\n[[worker]]\nqueue = \"q\"\ntopic = \"t\"\ncomponent = \"w.wasm\"\n".to_owned(),
                ":4: worker[0].topic: a worker has a queue or a topic, not both",
            ),
            (
                "[queues.q]\n[[worker]]\nqueue = \"q\"\ncomponent = \"w.wasm\"\ntimeout = \"25h\"\n".to_owned(),
                "worker[0].timeout: must be more than 0 and at most 24h",
            ),
            (
                "[queues.q]\nattempts = 0\n".to_owned(),
                "queues.q.attempts: must be 1 to 1000",
            ),
            (
                "[queues.q]\nbackoff = { initial = \"2s\", max = \"1s\" }\n".to_owned(),
                "queues.q.backoff.max",
            ),
            (
                format!("[queues.q]\n{route}queues = [\"email\"]\n"),
                ":6: route[0].queues: no queue \"email\" in [queues]; declared: \"q\"",
            ),
            (
                format!("[queues.q]\n{route}topics = [\"user.created\"]\n"),
                ":6: route[0].topics: no [[worker]] subscribes to topic \"user.created\"",
            ),
            (
                "[queues.\"a/b\"]\n".to_owned(),
                "queues.\"a/b\"",
            ),
            (
                "[queues.q]\n[[worker]]\nqueue = \"q\"\ncomponent = \"w.wasm\"\ngrants = [\"identity\"]\n".to_owned(),
                ":5: worker[0].grants",
            ),
        ] {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
        let err = parse("[queues.q]\natempts = 3\n").unwrap_err().to_string();
        assert!(err.contains("atempts") && err.contains("line 2"), "{err}");
    }
}
