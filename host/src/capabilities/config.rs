//! The `config` capability (`wit/config.wit`): a route's variables and
//! secrets, resolved from the manifest and the host's environment when the
//! manifest loads, so a request never touches the environment.

use crate::bindings::trellis::api::config::{Error, Host};
use crate::store::StoreData;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;

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

/// One route's resolved variables and secrets.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RouteConfig {
    /// Key to (value, is secret).
    values: BTreeMap<String, (String, bool)>,
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
                        match (std::env::var(env), default) {
                            (Ok(v), _) => v,
                            (Err(_), Some(d)) => d.clone(),
                            (Err(_), None) => {
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

fn valid_key(key: &str) -> Result<(), String> {
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

impl Host for StoreData {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<String>, Error>> {
        if let Err(message) = valid_key(&key) {
            return Ok(Err(Error::InvalidKey(message)));
        }
        Ok(Ok(self.guest().config.get(&key).map(str::to_owned)))
    }

    async fn get_all(&mut self) -> wasmtime::Result<Result<Vec<(String, String)>, Error>> {
        let config = &self.guest().config;
        Ok(Ok(config
            .values
            .iter()
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect()))
    }
}

#[cfg(test)]
mod tests {
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
