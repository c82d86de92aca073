//! The manifest's edge policies: `[auth.NAME]` (who may call a route) and
//! `[cors]` (which browser origins may), as written, with their checks.
//! What enforces them lives in [`crate::services::auth`] and
//! [`crate::http`].

use super::FromEnv;
use crate::config::units::Duration;
use serde::{Deserialize, Serialize};
use std::time;
use toml::Spanned;

/// An `[auth.NAME]` policy as written. One flat table for both types, so
/// every value keeps its manifest line; [`AuthPolicy::check`] says which
/// keys each type takes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthPolicy {
    /// `jwt` or `api-key`.
    #[serde(rename = "type")]
    pub kind: Spanned<String>,
    /// JWT: the `iss` a token must carry.
    pub issuer: Option<Spanned<String>>,
    /// JWT: an `aud` a token must carry (one of these, when a list).
    pub audience: Option<Spanned<OneOrMany>>,
    /// JWT: the signature algorithms accepted; HS256 with `secret`, RS256
    /// with `jwks`, when absent.
    pub algorithms: Option<Spanned<Vec<String>>>,
    /// JWT: the HMAC secret for HS256/384/512, from the environment.
    pub secret: Option<Spanned<FromEnv>>,
    /// JWT: the public keys, a JWKS file (relative to the manifest) or an
    /// `http://` or `https://` URL.
    pub jwks: Option<Spanned<String>>,
    /// JWT: a PEM file of extra roots trusted for an `https://` JWKS URL
    /// (relative to the manifest), beside the Mozilla roots.
    pub jwks_ca: Option<Spanned<String>>,
    /// JWT: the least time between two fetches of a JWKS URL prompted by a
    /// token whose `kid` it lacks.
    pub jwks_cooldown: Option<Spanned<Duration>>,
    /// JWT: clock skew allowed on `exp` and `nbf`.
    pub leeway: Option<Spanned<Duration>>,
    /// JWT: the claims the guest sees through `identity`; all of them when
    /// absent.
    pub claims: Option<Spanned<Vec<String>>>,
    /// API key: the request header carrying the key.
    pub header: Option<Spanned<String>>,
    /// API key: the accepted keys, comma-separated, from the environment.
    pub keys: Option<Spanned<FromEnv>>,
    /// API key: `"database"` to also accept the keys `trellis keys add`
    /// stored (hashed) in the host's database.
    pub store: Option<Spanned<String>>,
    /// API key with a store: how long a key looked up in the database is
    /// remembered, so a revocation takes effect within this long.
    pub cache_ttl: Option<Spanned<Duration>>,
    /// `secret` and `keys` read from the environment, at validation.
    #[serde(skip)]
    pub resolved: Resolved,
}

/// A policy's secret material, read from the environment when the
/// manifest loads. Its `Debug` prints no value.
#[derive(Clone, Default)]
pub struct Resolved {
    /// The HMAC secret.
    pub secret: Option<std::sync::Arc<[u8]>>,
    /// The API keys.
    pub keys: Vec<std::sync::Arc<[u8]>>,
    /// The `jwks_ca` file's contents (checked to hold PEM certificates).
    pub jwks_ca_pem: Option<std::sync::Arc<[u8]>>,
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolved")
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("keys", &self.keys.len())
            .field("jwks_ca_pem", &self.jwks_ca_pem.as_ref().map(|p| p.len()))
            .finish()
    }
}

/// A string or a list of strings.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One value.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The values.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(v) => vec![v.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// The JWT algorithms a policy may list. `none` is not among them, ever.
pub const JWT_ALGORITHMS: &[&str] = &[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "EdDSA",
];

/// Default `leeway`: a minute of clock skew, as Envoy's `jwt_authn` allows.
pub const DEFAULT_LEEWAY: time::Duration = time::Duration::from_secs(60);
/// Most `leeway` a policy may allow.
pub const MAX_LEEWAY: time::Duration = time::Duration::from_secs(300);
/// Default `cache_ttl` of an api-key store: a revoked key stops working
/// within this long.
pub const DEFAULT_KEY_CACHE_TTL: time::Duration = time::Duration::from_secs(10);
/// Most `cache_ttl` an api-key store may set.
pub const MAX_KEY_CACHE_TTL: time::Duration = time::Duration::from_secs(300);
/// The one `store` an api-key policy may name today.
pub const STORE_DATABASE: &str = "database";
/// Default `jwks_cooldown`.
pub const DEFAULT_JWKS_COOLDOWN: time::Duration = time::Duration::from_secs(30);
/// Shortest HMAC secret accepted: 32 bytes, the output size of SHA-256
/// (RFC 7518 §3.2 requires a key at least that long for HS256).
pub const MIN_SECRET_BYTES: usize = 32;

/// A policy's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    /// Bearer JWTs.
    Jwt,
    /// A static key in a header.
    ApiKey,
}

impl AuthPolicy {
    /// The parsed `type`.
    pub fn auth_kind(&self) -> Result<AuthKind, String> {
        match self.kind.get_ref().as_str() {
            "jwt" => Ok(AuthKind::Jwt),
            "api-key" => Ok(AuthKind::ApiKey),
            other => Err(format!(
                "{other:?} is not a policy type; use \"jwt\" or \"api-key\""
            )),
        }
    }

    /// The algorithms accepted, defaults applied.
    pub fn algorithm_names(&self) -> Vec<String> {
        match &self.algorithms {
            Some(list) => list.get_ref().clone(),
            None if self.secret.is_some() => vec!["HS256".to_owned()],
            None => vec!["RS256".to_owned()],
        }
    }

    /// Whether this policy takes keys from the database (`store =
    /// "database"`), whose table the host then creates.
    pub fn stores_keys_in_database(&self) -> bool {
        self.store
            .as_ref()
            .is_some_and(|s| s.get_ref() == STORE_DATABASE)
    }

    /// How long a key looked up in the store is remembered.
    pub fn key_cache_ttl(&self) -> time::Duration {
        self.cache_ttl
            .as_ref()
            .map_or(DEFAULT_KEY_CACHE_TTL, |t| t.get_ref().0)
    }

    /// Checks the policy and reads its secret material from the
    /// environment and its `jwks_ca` file (relative to `base_dir`). The
    /// error is (span, key, message).
    pub fn resolve(
        &mut self,
        base_dir: &std::path::Path,
    ) -> Result<AuthKind, (std::ops::Range<usize>, &'static str, String)> {
        let kind = self.check()?;
        if let Some(ca) = &self.jwks_ca {
            let pem = super::upstreams::read_ca(&base_dir.join(ca.get_ref()))
                .map_err(|m| (ca.span(), "jwks_ca", m))?;
            self.resolved.jwks_ca_pem = Some(pem.into());
        }
        let read = |value: &Spanned<FromEnv>, key: &'static str| {
            let FromEnv { env, default } = value.get_ref();
            match (
                crate::config::env::var(env).filter(|v| !v.is_empty()),
                default,
            ) {
                (Some(v), _) => Ok(v),
                (None, Some(d)) => Ok(d.clone()),
                (None, None) => Err((
                    value.span(),
                    key,
                    format!(
                        "environment variable {env} is not set (or empty) and no default is given"
                    ),
                )),
            }
        };
        if let Some(secret) = &self.secret {
            let value = read(secret, "secret")?;
            if value.len() < MIN_SECRET_BYTES {
                return Err((
                    secret.span(),
                    "secret",
                    format!(
                        "the secret is {} bytes; HMAC secrets must be at least {MIN_SECRET_BYTES}",
                        value.len()
                    ),
                ));
            }
            self.resolved.secret = Some(value.into_bytes().into());
        }
        if let Some(keys) = &self.keys {
            let value = read(keys, "keys")?;
            let list: Vec<std::sync::Arc<[u8]>> = value
                .split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(|k| k.as_bytes().into())
                .collect();
            if list.is_empty() {
                return Err((
                    keys.span(),
                    "keys",
                    "no keys: the variable holds no non-empty key".into(),
                ));
            }
            if let Some(short) = list.iter().find(|k| k.len() < 16) {
                return Err((
                    keys.span(),
                    "keys",
                    format!(
                        "a key of {} bytes is too short to be secret: at least 16",
                        short.len()
                    ),
                ));
            }
            self.resolved.keys = list;
        }
        Ok(kind)
    }

    /// Checks what parsed but cannot work. The error is (span, key, message).
    pub fn check(&self) -> Result<AuthKind, (std::ops::Range<usize>, &'static str, String)> {
        let kind = self
            .auth_kind()
            .map_err(|m| (self.kind.span(), "type", m))?;
        let type_span = self.kind.span();
        let jwt_only: [(&'static str, Option<std::ops::Range<usize>>); 9] = [
            ("issuer", self.issuer.as_ref().map(Spanned::span)),
            ("audience", self.audience.as_ref().map(Spanned::span)),
            ("algorithms", self.algorithms.as_ref().map(Spanned::span)),
            ("secret", self.secret.as_ref().map(Spanned::span)),
            ("jwks", self.jwks.as_ref().map(Spanned::span)),
            ("jwks_ca", self.jwks_ca.as_ref().map(Spanned::span)),
            (
                "jwks_cooldown",
                self.jwks_cooldown.as_ref().map(Spanned::span),
            ),
            ("leeway", self.leeway.as_ref().map(Spanned::span)),
            ("claims", self.claims.as_ref().map(Spanned::span)),
        ];
        let key_only: [(&'static str, Option<std::ops::Range<usize>>); 4] = [
            ("header", self.header.as_ref().map(Spanned::span)),
            ("keys", self.keys.as_ref().map(Spanned::span)),
            ("store", self.store.as_ref().map(Spanned::span)),
            ("cache_ttl", self.cache_ttl.as_ref().map(Spanned::span)),
        ];
        let (foreign, this) = match kind {
            AuthKind::Jwt => (&key_only[..], "jwt"),
            AuthKind::ApiKey => (&jwt_only[..], "api-key"),
        };
        if let Some((key, Some(span))) = foreign.iter().find(|(_, s)| s.is_some()) {
            return Err((
                span.clone(),
                *key,
                format!("not a key of a {this:?} policy"),
            ));
        }
        match kind {
            AuthKind::Jwt => self.check_jwt(type_span).map(|()| kind),
            AuthKind::ApiKey => {
                let Some(header) = &self.header else {
                    return Err((
                        type_span,
                        "header",
                        "an api-key policy needs `header`".into(),
                    ));
                };
                let name = header.get_ref();
                if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    return Err((
                        header.span(),
                        "header",
                        format!("{name:?} is not a header name"),
                    ));
                }
                if let Some(store) = &self.store
                    && store.get_ref() != STORE_DATABASE
                {
                    return Err((
                        store.span(),
                        "store",
                        format!(
                            "{:?} is not a key store; use \"{STORE_DATABASE}\"",
                            store.get_ref()
                        ),
                    ));
                }
                if let Some(ttl) = &self.cache_ttl {
                    if self.store.is_none() {
                        return Err((
                            ttl.span(),
                            "cache_ttl",
                            "only a policy with `store = \"database\"` caches lookups".into(),
                        ));
                    }
                    let value = ttl.get_ref().0;
                    if value.is_zero() || value > MAX_KEY_CACHE_TTL {
                        return Err((
                            ttl.span(),
                            "cache_ttl",
                            format!(
                                "{} is out of range: more than 0 and at most {}",
                                ttl.get_ref(),
                                Duration(MAX_KEY_CACHE_TTL)
                            ),
                        ));
                    }
                }
                if self.keys.is_none() && self.store.is_none() {
                    return Err((
                        type_span,
                        "keys",
                        "an api-key policy needs `keys = { env = \"NAME\" }`, \
                         `store = \"database\"`, or both"
                            .into(),
                    ));
                }
                Ok(kind)
            }
        }
    }

    fn check_jwt(
        &self,
        type_span: std::ops::Range<usize>,
    ) -> Result<(), (std::ops::Range<usize>, &'static str, String)> {
        let algs = self.algorithm_names();
        let alg_span = self
            .algorithms
            .as_ref()
            .map_or(type_span.clone(), Spanned::span);
        if algs.is_empty() {
            return Err((
                alg_span,
                "algorithms",
                "must name at least one algorithm".into(),
            ));
        }
        for alg in &algs {
            if alg.eq_ignore_ascii_case("none") {
                return Err((
                    alg_span,
                    "algorithms",
                    "\"none\" (unsigned tokens) is never accepted".into(),
                ));
            }
            if !JWT_ALGORITHMS.contains(&alg.as_str()) {
                return Err((
                    alg_span,
                    "algorithms",
                    format!(
                        "{alg:?} is not supported; use one of {}",
                        JWT_ALGORITHMS.join(", ")
                    ),
                ));
            }
        }
        let hmac = algs.iter().any(|a| a.starts_with("HS"));
        let public = algs.iter().any(|a| !a.starts_with("HS"));
        match (&self.secret, hmac) {
            (None, true) => {
                return Err((
                    alg_span,
                    "secret",
                    "HS256/384/512 need `secret = { env = \"NAME\" }`".into(),
                ));
            }
            (Some(secret), false) => {
                return Err((
                    secret.span(),
                    "secret",
                    "a secret is only used by HS256/384/512, which `algorithms` does not list"
                        .into(),
                ));
            }
            _ => {}
        }
        match (&self.jwks, public) {
            (None, true) => {
                return Err((
                    alg_span,
                    "jwks",
                    "RS*, PS*, ES* and EdDSA need `jwks` (a file or an http(s):// URL)".into(),
                ));
            }
            (Some(jwks), false) => {
                return Err((
                    jwks.span(),
                    "jwks",
                    "public keys are only used by RS*, PS*, ES* and EdDSA, which `algorithms` does not list".into(),
                ));
            }
            _ => {}
        }
        let mut https = false;
        if let Some(jwks) = &self.jwks {
            let url = jwks.get_ref();
            if let Some(rest) = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"))
            {
                https = url.starts_with("https://");
                let ok = !rest.is_empty()
                    && url
                        .parse::<http::Uri>()
                        .is_ok_and(|u| u.host().is_some_and(|h| !h.is_empty()));
                if !ok {
                    return Err((jwks.span(), "jwks", format!("{url:?} is not a URL")));
                }
            } else if url.contains("://") {
                return Err((
                    jwks.span(),
                    "jwks",
                    format!("{url:?}: only http:// and https:// URLs, and files"),
                ));
            }
        }
        if let Some(ca) = &self.jwks_ca
            && !https
        {
            return Err((
                ca.span(),
                "jwks_ca",
                "only an https:// `jwks` URL uses a CA".into(),
            ));
        }
        if let Some(leeway) = &self.leeway
            && leeway.get_ref().0 > MAX_LEEWAY
        {
            return Err((
                leeway.span(),
                "leeway",
                format!(
                    "{} is too long: at most {}",
                    leeway.get_ref(),
                    Duration(MAX_LEEWAY)
                ),
            ));
        }
        if let Some(cooldown) = &self.jwks_cooldown
            && cooldown.get_ref().0.is_zero()
        {
            return Err((
                cooldown.span(),
                "jwks_cooldown",
                "must be more than 0".into(),
            ));
        }
        Ok(())
    }
}

/// `[cors]`, or a route's `cors = {...}`, which replaces it for that route.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Cors {
    /// Exact origins (`https://app.example.com`), or `["*"]` for any
    /// (not with credentials).
    #[serde(default)]
    pub allow_origins: Vec<String>,
    /// Methods a cross-origin request may use; the route's methods (or
    /// GET, HEAD, POST) when absent.
    pub allow_methods: Option<Vec<String>>,
    /// Request headers a cross-origin request may send, besides the
    /// CORS-safelisted ones; `["*"]` for any (not with credentials).
    #[serde(default)]
    pub allow_headers: Vec<String>,
    /// Response headers the browser lets the page read.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// Whether cookies and `Authorization` may be sent cross-origin.
    #[serde(default)]
    pub allow_credentials: bool,
    /// How long a browser may cache a preflight answer.
    pub max_age: Option<Duration>,
}

impl Cors {
    /// Checks what parsed but cannot work; the error is (key, message).
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.allow_origins.is_empty() {
            return Err(("allow_origins", "must name at least one origin".into()));
        }
        for origin in &self.allow_origins {
            if origin == "*" {
                if self.allow_credentials {
                    return Err((
                        "allow_origins",
                        "\"*\" cannot be used with allow_credentials = true; list the origins"
                            .into(),
                    ));
                }
                continue;
            }
            let uri: Result<http::Uri, _> = origin.parse();
            let ok = uri.is_ok_and(|u| {
                matches!(u.scheme_str(), Some("http" | "https"))
                    && u.host().is_some()
                    && u.path_and_query()
                        .is_none_or(|p| p.as_str() == "/" && !origin.ends_with('/'))
            });
            if !ok {
                return Err((
                    "allow_origins",
                    format!("{origin:?} is not an origin (scheme://host[:port], no path)"),
                ));
            }
        }
        if let Some(methods) = &self.allow_methods {
            super::parse_methods(methods).map_err(|m| ("allow_methods", m))?;
        }
        for (key, list) in [
            ("allow_headers", &self.allow_headers),
            ("expose_headers", &self.expose_headers),
        ] {
            for name in list {
                if name == "*" {
                    if self.allow_credentials {
                        return Err((
                            key,
                            "\"*\" cannot be used with allow_credentials = true".into(),
                        ));
                    }
                    continue;
                }
                if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    return Err((key, format!("{name:?} is not a header name")));
                }
            }
        }
        if let Some(max_age) = self.max_age
            && max_age.0 > time::Duration::from_secs(24 * 3600)
        {
            return Err(("max_age", format!("{max_age} is too long: at most 24h")));
        }
        Ok(())
    }
}
