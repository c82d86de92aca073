//! Validation of a parsed manifest, and the checks the admin API applies
//! to the same settings given in a query. Every error names the field and,
//! in a manifest, its line.

use super::spec::{Limits, Reuse};
use super::{KNOWN_GRANTS, Manifest, ManifestError, ResponseCache, RouteConfig, line_of};
use crate::config::units::{ByteSize, Duration};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use toml::Spanned;

/// Compiles a route's `schema` files; the error is (key, message).
fn compile_schema(
    files: &super::SchemaFiles,
    base_dir: &Path,
) -> Result<super::RouteSchema, (&'static str, String)> {
    use super::schema::{Part, Schema};
    if files.body.is_none() && files.query.is_none() {
        return Err(("body", "name a `body` or a `query` schema file".into()));
    }
    let load = |file: &Option<String>, part: Part| {
        file.as_deref()
            .map(|f| Schema::load(base_dir, f, part).map(Arc::new))
            .transpose()
            .map_err(|m| (part.key(), m))
    };
    Ok(super::RouteSchema {
        body: load(&files.body, Part::Body)?,
        query: load(&files.query, Part::Query)?,
    })
}

/// Paths the host serves itself; routes may not shadow them.
const RESERVED_PREFIXES: &[&str] = &["/health", "/metrics", "/openapi.json"];

impl Manifest {
    /// Checks what parsed but cannot work, and resolves each route's
    /// `config` and `secrets`.
    pub(super) fn validate(&mut self, text: &str, path: &Path) -> Result<(), ManifestError> {
        let invalid = |span: Range<usize>, field: String, message: String| ManifestError::Invalid {
            path: path.to_owned(),
            line: line_of(text, span.start),
            field,
            message,
        };
        let mut kinds = std::collections::BTreeMap::new();
        for (name, policy) in &mut self.auth {
            let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
            if name.is_empty() || name.len() > 64 || !name.bytes().all(plain) {
                return Err(invalid(
                    policy.kind.span(),
                    format!("auth.{name:?}"),
                    "a policy name is 1 to 64 of A-Z, a-z, 0-9, '-', '_', '.'".into(),
                ));
            }
            match policy.resolve(&self.base_dir) {
                Ok(kind) => kinds.insert(name.clone(), kind),
                Err((span, key, message)) => {
                    return Err(invalid(span, format!("auth.{name}.{key}"), message));
                }
            };
        }
        if let Some(cors) = &self.cors
            && let Err((key, message)) = cors.get_ref().check()
        {
            return Err(invalid(cors.span(), format!("cors.{key}"), message));
        }
        let topics = super::jobs::check(&self.queues, &self.workers, &mut self.schedules)
            .map_err(|(span, field, message)| invalid(span, field, message))?;
        let queue_settings = self.queue_settings();
        let global_cors = self.cors.as_ref().map(|c| Arc::new(c.get_ref().clone()));
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
            if super::Reference::is_oci(route.component.get_ref())
                && let Err(message) = super::Reference::parse(route.component.get_ref())
            {
                return Err(invalid(route.component.span(), field("component"), message));
            }
            let name = route.name();
            // An explicit name is held to the admin API's rule; one derived
            // from the path only has to not be a path segment (`/..`).
            let checked = match &route.name {
                Some(_) => check_route_name(&name),
                None if name == "." || name == ".." => check_route_name(&name),
                None => Ok(()),
            };
            if let Err(message) = checked {
                let span = route.name.as_ref().map_or(route.path.span(), Spanned::span);
                return Err(invalid(span, field("name"), message));
            }
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
            if let Some(reuse) = &route.reuse
                && let Err((name, message)) = check_reuse(reuse.get_ref())
            {
                return Err(invalid(
                    reuse.span(),
                    field(&format!("reuse.{name}")),
                    message,
                ));
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
            if let Some(outbound) = &route.outbound {
                let names = outbound.get_ref();
                if let Some(unknown) = names.iter().find(|n| !self.upstreams.contains_key(*n)) {
                    return Err(invalid(
                        outbound.span(),
                        field("outbound"),
                        format!(
                            "no upstream {unknown:?} in [upstreams]; declared: {}",
                            declared(self.upstreams.keys())
                        ),
                    ));
                }
            }
            super::jobs::check_uses(
                &queue_settings,
                &topics,
                route.queues.as_ref(),
                route.topics.as_ref(),
                &field,
            )
            .map_err(|(span, field, message)| invalid(span, field, message))?;
            if let Some(cache) = &route.cache
                && let Err((key, message)) = check_cache(cache.get_ref())
            {
                return Err(invalid(
                    cache.span(),
                    field(&format!("cache.{key}")),
                    message,
                ));
            }
            let kind = match &route.auth {
                None => None,
                Some(policy) => match kinds.get(policy.get_ref()) {
                    Some(kind) => Some(*kind),
                    None => {
                        return Err(invalid(
                            policy.span(),
                            field("auth"),
                            format!("no policy {:?} in [auth]", policy.get_ref()),
                        ));
                    }
                },
            };
            if let Some(scopes) = &route.scopes {
                match kind {
                    None => {
                        return Err(invalid(
                            scopes.span(),
                            field("scopes"),
                            "scopes need `auth` naming a jwt policy".into(),
                        ));
                    }
                    Some(super::edge::AuthKind::ApiKey) => {
                        return Err(invalid(
                            scopes.span(),
                            field("scopes"),
                            "api-key policies carry no scopes; use a jwt policy".into(),
                        ));
                    }
                    Some(super::edge::AuthKind::Jwt) => {}
                }
                if let Err(message) = check_scopes(scopes.get_ref()) {
                    return Err(invalid(scopes.span(), field("scopes"), message));
                }
            }
            if kind.is_none()
                && let Some(grants) = &route.grants
                && grants.get_ref().iter().any(|g| g == "identity")
            {
                return Err(invalid(
                    grants.span(),
                    field("grants"),
                    "\"identity\" needs `auth` on the route: without it there is no caller".into(),
                ));
            }
            if kind.is_none()
                && let Some(policy) = &route.rate_limit
                && self
                    .rate_limits
                    .get(policy.get_ref())
                    .is_some_and(|p| p.key_source() == Ok(super::KeySource::Subject))
            {
                return Err(invalid(
                    policy.span(),
                    field("rate_limit"),
                    format!(
                        "policy {:?} counts by subject, which needs `auth` on the route",
                        policy.get_ref()
                    ),
                ));
            }
            if let Some(cors) = &route.cors {
                if let Err((key, message)) = cors.get_ref().check() {
                    return Err(invalid(cors.span(), field(&format!("cors.{key}")), message));
                }
                route.resolved_cors = Some(Arc::new(cors.get_ref().clone()));
            } else {
                route.resolved_cors = global_cors.clone();
            }
            if let Some(files) = &route.schema {
                let compiled =
                    compile_schema(files.get_ref(), &self.base_dir).map_err(|(key, message)| {
                        invalid(files.span(), field(&format!("schema.{key}")), message)
                    })?;
                route.resolved_schema = Some(Arc::new(compiled));
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
            if let Err(message) = at_most(policy.window, max::RATE_LIMIT_WINDOW) {
                return Err(invalid(span, field("window"), message));
            }
        }
        for (name, upstream) in &mut self.upstreams {
            let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
            if name.is_empty() || name.len() > 64 || !name.bytes().all(plain) {
                return Err(invalid(
                    upstream.url.span(),
                    format!("upstreams.{name:?}"),
                    "an upstream name is 1 to 64 of A-Z, a-z, 0-9, '-', '_', '.'".into(),
                ));
            }
            if let Err(err) = upstream.resolve(name, &self.base_dir) {
                let span = match (&upstream.ca, err.at_ca) {
                    (Some(ca), true) => ca.span(),
                    _ => upstream.url.span(),
                };
                return Err(invalid(
                    span,
                    format!("upstreams.{name}.{}", err.field),
                    err.message,
                ));
            }
        }
        let server_field = |key: &str, message: String| ManifestError::Invalid {
            path: path.to_owned(),
            line: key_line(text, "server", key),
            field: format!("server.{key}"),
            message,
        };
        if let Err((key, message)) = check_server(&self.server) {
            return Err(server_field(key, message));
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
            for (name, value, max) in [
                (
                    "acquire_timeout",
                    database.acquire_timeout,
                    max::ACQUIRE_TIMEOUT,
                ),
                (
                    "statement_timeout",
                    database.statement_timeout,
                    max::STATEMENT_TIMEOUT,
                ),
                ("idle_timeout", database.idle_timeout, max::IDLE_TIMEOUT),
            ] {
                if let Err(message) = at_most(value, max) {
                    return Err(invalid(url_span.clone(), field(name), message));
                }
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
        for (i, worker) in self.workers.iter().enumerate() {
            if let Some(outbound) = &worker.outbound
                && let Some(unknown) = outbound
                    .get_ref()
                    .iter()
                    .find(|n| !self.upstreams.contains_key(*n))
            {
                return Err(invalid(
                    outbound.span(),
                    format!("worker[{i}].outbound"),
                    format!(
                        "no upstream {unknown:?} in [upstreams]; declared: {}",
                        declared(self.upstreams.keys())
                    ),
                ));
            }
            let component = worker.component.get_ref();
            if super::Reference::is_oci(component)
                && let Err(message) = super::Reference::parse(component)
            {
                return Err(invalid(
                    worker.component.span(),
                    format!("worker[{i}].component"),
                    message,
                ));
            }
        }
        for (key, entry) in &mut self.registries {
            let whole = entry.span();
            if let Err((span, name, message)) = entry.get_mut().resolve(key, whole) {
                let field = if name.is_empty() {
                    format!("registries.{key:?}")
                } else {
                    format!("registries.{key:?}.{name}")
                };
                return Err(invalid(span, field, message));
            }
        }
        if let Err((key, message)) = check_deployments(&self.deployments) {
            return Err(ManifestError::Invalid {
                path: path.to_owned(),
                line: key_line(text, "deployments", key),
                field: format!("deployments.{key}"),
                message,
            });
        }
        if let Some(redis) = &self.redis
            && let Err(message) = at_most(redis.timeout, max::REDIS_TIMEOUT)
        {
            return Err(invalid(redis.url.span(), "redis.timeout".into(), message));
        }
        if let Some(redis) = &self.redis {
            let prefix = redis.jobs_prefix.get_ref();
            if prefix.is_empty()
                || prefix.len() > 64
                || prefix.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(invalid(
                    redis.jobs_prefix.span(),
                    "redis.jobs_prefix".into(),
                    "must be 1 to 64 characters with no spaces".into(),
                ));
            }
        }
        Ok(())
    }
}

/// Most connections `max_connections` may allow.
const MAX_CONNECTIONS: u32 = 1_000_000;

/// Checks the `[server]` settings that bound time and connections: each
/// non-zero and at most its maximum ([`max`]). The error names the key.
fn check_server(server: &super::Server) -> Result<(), (&'static str, String)> {
    at_most(server.shutdown_grace, max::SHUTDOWN_GRACE).map_err(|m| ("shutdown_grace", m))?;
    let timeouts = [
        ("header_timeout", server.header_timeout, max::HEADER_TIMEOUT),
        ("idle_timeout", server.idle_timeout, max::CONNECTION_IDLE),
    ];
    for (key, value, max) in timeouts {
        if value.0.is_zero() {
            return Err((key, "must be more than 0".into()));
        }
        at_most(value, max).map_err(|m| (key, m))?;
    }
    check_cache_dir_max_size(server.cache_dir_max_size).map_err(|m| ("cache_dir_max_size", m))?;
    if server.max_connections == 0 {
        return Err(("max_connections", "must be at least 1".into()));
    }
    if server.max_connections > MAX_CONNECTIONS {
        return Err((
            "max_connections",
            format!("must be at most {MAX_CONNECTIONS}"),
        ));
    }
    Ok(())
}

/// The smallest `cache_dir_max_size`: a compiled component alone is
/// usually more, and a smaller value is more likely a unit left out.
pub const MIN_CACHE_DIR_SIZE: ByteSize = ByteSize(1 << 20);

/// Checks `[server] cache_dir_max_size` (or `TRELLIS_CACHE_DIR_MAX_SIZE`):
/// at least [`MIN_CACHE_DIR_SIZE`].
pub fn check_cache_dir_max_size(size: ByteSize) -> Result<(), String> {
    if size < MIN_CACHE_DIR_SIZE {
        return Err(format!(
            "{size} is too small: at least {MIN_CACHE_DIR_SIZE} (the cache directory holds compiled components, megabytes each)"
        ));
    }
    Ok(())
}

/// Checks `[deployments]`: a reconcile period from 100ms to 1h, and
/// hosts counted stale only after missing at least two heartbeats.
fn check_deployments(d: &super::Deployments) -> Result<(), (&'static str, String)> {
    if d.reconcile.0 < std::time::Duration::from_millis(100) {
        return Err(("reconcile", "must be at least 100ms".into()));
    }
    at_most(d.reconcile, max::RECONCILE).map_err(|m| ("reconcile", m))?;
    if d.stale_after.0 < d.reconcile.0 * 2 {
        return Err((
            "stale_after",
            format!(
                "{} is too short: at least twice reconcile ({})",
                d.stale_after,
                Duration(d.reconcile.0 * 2)
            ),
        ));
    }
    at_most(d.stale_after, max::STALE_AFTER).map_err(|m| ("stale_after", m))?;
    Ok(())
}

/// The 1-based line where `key` is set in `[table]`, else that of the
/// table's header, else 1. For tables whose values carry no span.
fn key_line(text: &str, table: &str, key: &str) -> usize {
    let header = format!("[{table}]");
    let mut in_table = false;
    let mut header_line = None;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.starts_with('[') {
            in_table = line.split('#').next().is_some_and(|h| h.trim() == header);
            if in_table {
                header_line.get_or_insert(i + 1);
            }
        } else if in_table
            && let Some(rest) = line.strip_prefix(key)
            && rest.trim_start().starts_with('=')
        {
            return i + 1;
        }
    }
    header_line.unwrap_or(1)
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

/// Checks a route name. Names end up in URLs (`/admin/routes/{name}`),
/// headers, metric labels and log lines, so they are plain: 1 to 64 of
/// A-Z, a-z, 0-9, '-', '_', '.', and not `.` or `..`, which a client or
/// proxy would resolve as a path segment.
pub fn check_route_name(name: &str) -> Result<(), String> {
    let plain = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !plain {
        return Err(format!(
            "route name {name:?}: use 1 to 64 of A-Z, a-z, 0-9, '-', '_', '.'"
        ));
    }
    if name == "." || name == ".." {
        return Err(format!(
            "route name {name:?} is a path segment; choose another name"
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

/// `"a", "b"`, or `none` for an empty list.
pub(crate) fn declared<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let list: Vec<String> = names.map(|n| format!("{n:?}")).collect();
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
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

/// The longest each duration setting may be. Values beyond these are
/// mistakes (a unit typed wrong, a number pasted twice), and some would
/// overflow timer arithmetic, so they are refused with the field named:
///
/// - route `timeout`: 1h. A request that runs longer belongs in a job queue.
/// - route `queue_timeout`: 10m. Waiting longer for a slot only holds the
///   client's connection.
/// - `[server].shutdown_grace`: 1h; `header_timeout`: 1h; `idle_timeout`:
///   24h.
/// - `[database].acquire_timeout`: 10m; `statement_timeout`: 1h;
///   `idle_timeout`: 24h.
/// - `[redis].timeout`: 1m. Redis is a fast path the host can do without.
/// - `[rate_limits.NAME].window`: 24h.
/// - a route's `cache.ttl`: 7 days (168h).
/// - a route's `reuse.idle`: 1h. An idle instance holds a pooling-allocator
///   slot and its memory; keeping one longer is a leak, not a cache.
/// - `[deployments].reconcile`: 1h (and at least 100ms); `stale_after`:
///   24h (and at least twice `reconcile`).
mod max {
    use std::time::Duration;

    const MINUTE: u64 = 60;
    const HOUR: u64 = 60 * MINUTE;
    pub(super) const ROUTE_TIMEOUT: Duration = Duration::from_secs(HOUR);
    pub(super) const QUEUE_TIMEOUT: Duration = Duration::from_secs(10 * MINUTE);
    pub(super) const SHUTDOWN_GRACE: Duration = Duration::from_secs(HOUR);
    pub(super) const HEADER_TIMEOUT: Duration = Duration::from_secs(HOUR);
    pub(super) const CONNECTION_IDLE: Duration = Duration::from_secs(24 * HOUR);
    pub(super) const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10 * MINUTE);
    pub(super) const STATEMENT_TIMEOUT: Duration = Duration::from_secs(HOUR);
    pub(super) const IDLE_TIMEOUT: Duration = Duration::from_secs(24 * HOUR);
    pub(super) const REDIS_TIMEOUT: Duration = Duration::from_secs(MINUTE);
    pub(super) const RATE_LIMIT_WINDOW: Duration = Duration::from_secs(24 * HOUR);
    pub(super) const CACHE_TTL: Duration = Duration::from_secs(7 * 24 * HOUR);
    pub(super) const REUSE_IDLE: Duration = Duration::from_secs(HOUR);
    pub(super) const RECONCILE: Duration = Duration::from_secs(HOUR);
    pub(super) const STALE_AFTER: Duration = Duration::from_secs(24 * HOUR);
}

/// `Err("at most MAX")` when `value` is over `max`.
fn at_most(value: Duration, max: std::time::Duration) -> Result<(), String> {
    if value.0 > max {
        Err(format!("{value} is too long: at most {}", Duration(max)))
    } else {
        Ok(())
    }
}

/// Checks limits that parse but cannot work; the error names the field.
pub fn check_limits(limits: &Limits) -> Result<(), (&'static str, String)> {
    if limits.timeout.0.is_zero() {
        return Err(("timeout", "must be more than 0".into()));
    }
    at_most(limits.timeout, max::ROUTE_TIMEOUT).map_err(|m| ("timeout", m))?;
    at_most(limits.queue_timeout, max::QUEUE_TIMEOUT).map_err(|m| ("queue_timeout", m))?;
    if limits.max_concurrency == 0 {
        return Err(("max_concurrency", "must be at least 1".into()));
    }
    if limits.memory.0 < 1 << 20 {
        return Err(("memory", "must be at least 1MiB".into()));
    }
    Ok(())
}

/// Checks a route's response `cache`; the error names the key within it.
pub fn check_cache(cache: &ResponseCache) -> Result<(), (&'static str, String)> {
    if cache.ttl.0.is_zero() {
        return Err(("ttl", "must be more than 0".into()));
    }
    at_most(cache.ttl, max::CACHE_TTL).map_err(|m| ("ttl", m))?;
    match cache
        .vary
        .iter()
        .find(|h| http::HeaderName::from_bytes(h.as_bytes()).is_err())
    {
        Some(bad) => Err(("vary", format!("{bad:?} is not a header name"))),
        None => Ok(()),
    }
}

/// Checks a route's `scopes` are scopes as RFC 6749 spells them.
pub fn check_scopes(scopes: &[String]) -> Result<(), String> {
    match scopes.iter().find(|s| {
        s.is_empty()
            || !s
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    }) {
        Some(bad) => Err(format!(
            "{bad:?} is not a scope (RFC 6749: printable ASCII, no spaces, quotes or backslashes)"
        )),
        None => Ok(()),
    }
}

/// Most requests one instance may serve at once with `reuse.concurrent`.
const MAX_REUSE_CONCURRENT: u32 = 1024;

/// Checks a route's `reuse`; the error names the key within it.
pub fn check_reuse(reuse: &Reuse) -> Result<(), (&'static str, String)> {
    if reuse.requests == 0 {
        return Err(("requests", "must be at least 1".into()));
    }
    if reuse.concurrent == 0 {
        return Err(("concurrent", "must be at least 1".into()));
    }
    if reuse.concurrent > MAX_REUSE_CONCURRENT {
        return Err((
            "concurrent",
            format!("must be at most {MAX_REUSE_CONCURRENT}"),
        ));
    }
    if reuse.idle.0.is_zero() {
        return Err(("idle", "must be more than 0".into()));
    }
    at_most(reuse.idle, max::REUSE_IDLE).map_err(|m| ("idle", m))
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
