//! `[registries."HOST[:PORT]"]`: how the host reaches an OCI registry a
//! `component = "oci://…"` names: credentials (literal or from the
//! environment) and, for a registry on this machine only, plain HTTP.

use super::ConfigValue;
use crate::config::reference::{check_registry, is_loopback};
use serde::Deserialize;
use std::fmt;
use std::ops::Range;
use toml::Spanned;

/// One `[registries."HOST[:PORT]"]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryEntry {
    /// The user name for HTTP Basic auth, or for the token endpoint of a
    /// registry that answers with a Bearer challenge.
    pub username: Option<Spanned<ConfigValue>>,
    /// Its password or access token.
    pub password: Option<Spanned<ConfigValue>>,
    /// Plain HTTP instead of HTTPS; only for a registry on loopback.
    pub insecure: Option<Spanned<bool>>,
    /// The credentials, resolved at validation.
    #[serde(skip)]
    pub resolved: Option<Credentials>,
}

impl RegistryEntry {
    /// Whether the registry is reached over plain HTTP.
    pub fn is_insecure(&self) -> bool {
        self.insecure.as_ref().is_some_and(|i| *i.get_ref())
    }

    /// Checks the entry for registry `key` and resolves its credentials;
    /// the error is (span, field, message). `whole` is the table's span,
    /// for what no field carries.
    pub(super) fn resolve(
        &mut self,
        key: &str,
        whole: Range<usize>,
    ) -> Result<(), (Range<usize>, &'static str, String)> {
        check_registry(key).map_err(|m| (whole.clone(), "", m))?;
        if let Some(insecure) = &self.insecure
            && *insecure.get_ref()
            && !is_loopback(key)
        {
            return Err((
                insecure.span(),
                "insecure",
                format!(
                    "plain HTTP is allowed only for a registry on loopback (localhost, 127.0.0.0/8, ::1); \
                     {key:?} is not: serve it over HTTPS"
                ),
            ));
        }
        let read = |value: &Spanned<ConfigValue>, field: &'static str| match value.get_ref() {
            ConfigValue::Literal(v) => Ok(v.clone()),
            ConfigValue::Env(from) => crate::config::env::lookup(&from.env)
                .or_else(|| from.default.clone())
                .ok_or_else(|| {
                    (
                        value.span(),
                        field,
                        format!(
                            "environment variable {} is not set (or empty) and no default is given",
                            from.env
                        ),
                    )
                }),
        };
        self.resolved = match (&self.username, &self.password) {
            (None, None) => None,
            (Some(u), Some(p)) => Some(Credentials {
                username: read(u, "username")?,
                password: read(p, "password")?,
            }),
            (Some(u), None) => {
                return Err((u.span(), "password", "a username needs a password".into()));
            }
            (None, Some(p)) => {
                return Err((p.span(), "username", "a password needs a username".into()));
            }
        };
        Ok(())
    }
}

/// A registry's user name and password. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password or token.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .finish()
    }
}
