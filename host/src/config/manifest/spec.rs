//! What the host runs a route with: its limits, its resolved variables
//! and secrets, and the [`RouteSpec`] that a `[[route]]` or an admin
//! `PUT` becomes once validated.

use super::{ConfigValue, FromEnv, ResponseCache};
use crate::config::units::{ByteSize, Duration};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time;

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
    /// The limits' names, as the manifest and the admin API spell them.
    pub const NAMES: [&'static str; 5] = [
        "timeout",
        "memory",
        "max_body",
        "max_concurrency",
        "queue_timeout",
    ];

    /// Sets the limit `name` from its text form (`2s`, `32MiB`, `64`), as
    /// an admin `PUT` gives it; `Ok(false)` when `name` is not a limit.
    /// The manifest's `[[route]]` spells the same fields as TOML values,
    /// so its schema ([`super::RouteEntry`]) lists them too; serde's
    /// `flatten` would share one list but lose the line and field of a bad
    /// value, which every manifest error must name.
    pub fn set(&mut self, name: &str, value: &str) -> Result<bool, String> {
        fn parse<T: std::str::FromStr>(value: &str) -> Result<T, String>
        where
            T::Err: fmt::Display,
        {
            value.parse().map_err(|e: T::Err| e.to_string())
        }
        match name {
            "timeout" => self.timeout = parse(value)?,
            "memory" => self.memory = parse(value)?,
            "max_body" => self.max_body = parse(value)?,
            "max_concurrency" => self.max_concurrency = parse(value)?,
            "queue_timeout" => self.queue_timeout = parse(value)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    pub(super) fn default_timeout() -> Duration {
        Duration(time::Duration::from_secs(30))
    }
    pub(super) fn default_memory() -> ByteSize {
        ByteSize(64 << 20)
    }
    pub(super) fn default_max_body() -> ByteSize {
        ByteSize(10 << 20)
    }
    pub(super) fn default_max_concurrency() -> u32 {
        1024
    }
    pub(super) fn default_queue_timeout() -> Duration {
        Duration(time::Duration::from_millis(100))
    }
}

/// A route's `reuse = { requests, concurrent, idle }`: one instance
/// serves up to `requests` requests, then is dropped; an instance idle for
/// `idle` is dropped too. `concurrent` is how many requests one instance
/// may serve at once; WASI 0.2 handlers are served one at a time whatever
/// it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reuse {
    /// Requests one instance serves before it is dropped.
    #[serde(default = "Reuse::default_requests")]
    pub requests: u32,
    /// Requests one instance serves at once (WASI 0.3 handlers only).
    #[serde(default = "Reuse::default_concurrent")]
    pub concurrent: u32,
    /// How long an unused instance is kept.
    #[serde(default = "Reuse::default_idle")]
    pub idle: Duration,
}

impl Reuse {
    pub(super) fn default_requests() -> u32 {
        128
    }
    pub(super) fn default_concurrent() -> u32 {
        1
    }
    pub(super) fn default_idle() -> Duration {
        Duration(time::Duration::from_secs(1))
    }
}

impl Default for Reuse {
    fn default() -> Self {
        Reuse {
            requests: Reuse::default_requests(),
            concurrent: Reuse::default_concurrent(),
            idle: Reuse::default_idle(),
        }
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
    /// The `[upstreams]` the component may call; `None` when the route
    /// does not say, which refuses a component importing
    /// `wasi:http/outgoing-handler`, while `Some([])` links it with every
    /// call denied (for toolchains that always import it).
    pub outbound: Option<Vec<String>>,
    /// The `[auth]` policy checked before the component runs.
    pub auth: Option<String>,
    /// Scopes the caller must hold.
    pub scopes: Vec<String>,
    /// The CORS rules in force (the route's own, else `[cors]`).
    pub cors: Option<Arc<super::Cors>>,
    /// The compiled `schema` the body and query are checked against
    /// before the component runs; `None` checks nothing.
    pub schema: Option<Arc<super::RouteSchema>>,
    /// `/openapi.json`: the operations' summary.
    pub summary: Option<String>,
    /// `/openapi.json`: the operations' description.
    pub description: Option<String>,
    /// Instance reuse; `None` is a fresh instance per request.
    pub reuse: Option<Reuse>,
    /// The `[queues]` the component may enqueue on.
    pub queues: Vec<String>,
    /// The topics the component may publish on.
    pub topics: Vec<String>,
    /// The settings an admin `PUT` set beyond a manifest's (`rate_limit`,
    /// `auth`, `scopes`, `cache_ttl`, `cache_vary`, `config.KEY`), as its
    /// query gave them. Later versions keep them, and the deployment store
    /// carries them to every host, where they apply over that host's
    /// manifest.
    pub set_by_admin: BTreeMap<String, String>,
}

/// One route's resolved variables and secrets.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RouteConfig {
    /// Key to (value, is secret).
    pub(crate) values: BTreeMap<String, (String, bool)>,
}

/// Why a route's configuration cannot be resolved.
#[derive(Debug)]
pub struct ResolveError {
    /// The offending key.
    pub key: String,
    /// Whether it is in `secrets` (else `config`).
    pub secret: bool,
    /// What is wrong.
    pub message: String,
}

impl RouteConfig {
    /// Resolves a route's `config` and `secrets` tables against the
    /// process environment.
    pub fn resolve(
        config: Option<&BTreeMap<String, ConfigValue>>,
        secrets: Option<&BTreeMap<String, ConfigValue>>,
    ) -> Result<RouteConfig, ResolveError> {
        let mut values = BTreeMap::new();
        let tables = [(config, false), (secrets, true)];
        for (table, secret) in tables {
            for (key, value) in table.into_iter().flatten() {
                let fail = |message: String| ResolveError {
                    key: key.clone(),
                    secret,
                    message,
                };
                valid_key(key).map_err(fail)?;
                let resolved = match value {
                    ConfigValue::Literal(v) => v.clone(),
                    ConfigValue::Env(FromEnv { env, default }) => {
                        match (crate::config::env::var(env), default) {
                            (Some(v), _) => v,
                            (None, Some(d)) => d.clone(),
                            (None, None) => {
                                return Err(fail(format!(
                                    "environment variable {env} is not set and no default is given"
                                )));
                            }
                        }
                    }
                };
                if values.insert(key.clone(), (resolved, secret)).is_some() {
                    return Err(fail("is set in both config and secrets".into()));
                }
            }
        }
        Ok(RouteConfig { values })
    }

    /// Sets the variable `key`; a secret of that name stays one (a
    /// variable would show its value in the admin API).
    pub fn set_variable(&mut self, key: &str, value: &str) -> Result<(), String> {
        valid_key(key)?;
        if self.values.get(key).is_some_and(|(_, secret)| *secret) {
            return Err(format!(
                "{key:?} is one of the route's secrets; remove it first (secret.{key}= with \
                 no value) to make it a variable"
            ));
        }
        self.values
            .insert(key.to_owned(), (value.to_owned(), false));
        Ok(())
    }

    /// Sets the secret `key` (replacing a variable of that name).
    pub fn set_secret(&mut self, key: &str, value: String) -> Result<(), String> {
        valid_key(key)?;
        self.values.insert(key.to_owned(), (value, true));
        Ok(())
    }

    /// Removes `key`, a variable or a secret.
    pub fn remove(&mut self, key: &str) -> Result<(), String> {
        valid_key(key)?;
        self.values.remove(key);
        Ok(())
    }

    /// The secrets' keys (never their values).
    pub fn secret_keys(&self) -> impl Iterator<Item = &str> {
        self.values
            .iter()
            .filter(|(_, (_, secret))| *secret)
            .map(|(k, _)| k.as_str())
    }

    /// The variables (not the secrets), by key.
    pub fn variables(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values
            .iter()
            .filter(|(_, (_, secret))| !secret)
            .map(|(k, (v, _))| (k.as_str(), v.as_str()))
    }

    /// The value of `key`, a variable or a secret.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(|(v, _)| v.as_str())
    }

    /// The secrets' values, for masking them in guest log records. Empty
    /// ones are skipped: masking "" would mask nothing but cost a scan.
    pub fn secret_values(&self) -> impl Iterator<Item = &str> {
        self.values
            .values()
            .filter(|(v, secret)| *secret && !v.is_empty())
            .map(|(v, _)| v.as_str())
    }
}

impl fmt::Debug for RouteConfig {
    /// Secrets print as `[redacted]`, so a stray `{:?}` cannot leak them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.values
                    .iter()
                    .map(|(k, (v, secret))| (k, if *secret { "[redacted]" } else { v.as_str() })),
            )
            .finish()
    }
}

/// Whether `key` may name a config variable: letters, digits, `_`, `-`, `.`.
pub fn valid_key(key: &str) -> Result<(), String> {
    let ok = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{key:?} is not a valid key (letters, digits, '_', '-', '.')"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ConfigValue, FromEnv};
    use super::*;

    #[test]
    fn resolves_literals_env_and_defaults_and_hides_secrets() {
        let table = |entries: &[(&str, ConfigValue)]| {
            entries
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect::<BTreeMap<_, _>>()
        };
        let env = |name: &str, default: Option<&str>| {
            ConfigValue::Env(FromEnv {
                env: name.into(),
                default: default.map(Into::into),
            })
        };
        let config = table(&[
            ("page_size", ConfigValue::Literal("20".into())),
            ("home", env("HOME", None)),
            ("unset", env("TRELLIS_TEST_SURELY_UNSET", Some("fallback"))),
        ]);
        let secrets = table(&[("token", ConfigValue::Literal("s3cret".into()))]);
        let resolved = RouteConfig::resolve(Some(&config), Some(&secrets)).unwrap();
        assert_eq!(resolved.get("page_size"), Some("20"));
        assert_eq!(resolved.get("home"), std::env::var("HOME").ok().as_deref());
        assert_eq!(resolved.get("unset"), Some("fallback"));
        assert_eq!(resolved.get("token"), Some("s3cret"));
        assert_eq!(resolved.secret_values().collect::<Vec<_>>(), ["s3cret"]);
        assert!(!format!("{resolved:?}").contains("s3cret"));

        let missing = table(&[("k", env("TRELLIS_TEST_SURELY_UNSET", None))]);
        let err = RouteConfig::resolve(None, Some(&missing)).unwrap_err();
        assert!(err.secret && err.key == "k", "{err:?}");
        assert!(err.message.contains("TRELLIS_TEST_SURELY_UNSET"), "{err:?}");
    }
}
