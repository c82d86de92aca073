//! Route settings as the admin API takes them: the query parameters of a
//! `PUT /admin/routes/{name}`, checked exactly as the manifest checks the
//! same fields, and the same parameters as the deployment store keeps them
//! with each version, so every host of a fleet rebuilds the same route
//! over its own manifest entry (docs/operations.md, "Hot load").

use crate::config::manifest::schema::{Part, Schema};
use crate::config::manifest::{
    Cors, Limits, ResponseCache, RouteSpec, check_cache, check_grants, check_limits, check_path,
    check_reuse, check_route_name, check_scopes, parse_methods,
};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Route settings given as query parameters of a `PUT`; the ones left out
/// keep their current values (or the defaults, for a new route).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct SettingsQuery {
    path: Option<String>,
    /// Comma-separated; empty or `*` for every method.
    methods: Option<String>,
    /// Comma-separated; empty for none.
    grants: Option<String>,
    /// Comma-separated `[upstreams]` names; empty for none.
    outbound: Option<String>,
    /// `reuse.requests`; `0` turns reuse off.
    reuse_requests: Option<String>,
    /// `reuse.idle`; turns reuse on with the default `requests`.
    reuse_idle: Option<String>,
    /// A `[rate_limits]` policy of the host's manifest; empty for none.
    rate_limit: Option<String>,
    /// An `[auth]` policy of the host's manifest; empty for none.
    auth: Option<String>,
    /// Comma-separated; empty for none.
    scopes: Option<String>,
    /// The response cache's `ttl`; `0` turns it off.
    cache_ttl: Option<String>,
    /// The response cache's `vary` headers, comma-separated.
    cache_vary: Option<String>,
    /// The body's JSON Schema, the document itself (the manifest names a
    /// file, which other hosts would not have); empty for none.
    schema_body: Option<String>,
    /// The query's JSON Schema, likewise.
    schema_query: Option<String>,
    /// The manifest's `cors = {...}` table as a JSON object; empty for
    /// the host's `[cors]`.
    cors: Option<String>,
    /// `oci://HOST/NAMESPACE/NAME:TAG` (or `@sha256:…`): pull the
    /// component from a registry instead of reading it from the body.
    /// Stored with a version (pinned to its digest) to show where it came
    /// from; never a route setting.
    pub(crate) component: Option<String>,
    /// Everything else: the route's [`Limits`] by name (`timeout=2s`), its
    /// variables as `config.KEY=value` and its secrets as
    /// `secret.KEY=NAME`; any other name is refused by [`settings`].
    #[serde(flatten)]
    rest: BTreeMap<String, String>,
}

/// The settings of route `name` after applying `query` to the `current`
/// version's (or the defaults, for a new route, which follows the host's
/// `[cors]`, `host_cors`), validated like the manifest's.
pub(crate) fn settings(
    name: &str,
    current: Option<&RouteSpec>,
    query: SettingsQuery,
    host_cors: Option<&Arc<Cors>>,
) -> Result<RouteSpec, String> {
    check_route_name(name)?;
    let mut spec = match current {
        Some(spec) => spec.clone(),
        None => RouteSpec {
            name: name.to_owned(),
            path: query
                .path
                .clone()
                .ok_or("a new route needs a path: add ?path=/some/path")?,
            methods: None,
            grants: Vec::new(),
            limits: Limits::default(),
            config: Default::default(),
            rate_limit: None,
            cache: None,
            cache_namespace: name.to_owned(),
            outbound: None,
            auth: None,
            scopes: Vec::new(),
            cors: host_cors.cloned(),
            schema: None,
            summary: None,
            description: None,
            reuse: None,
            // An admin deploy keeps the version's own, and a new route
            // may use no queue.
            queues: Vec::new(),
            topics: Vec::new(),
            set_by_admin: BTreeMap::new(),
        },
    };
    let bad = |field: &str, message: String| format!("query parameter {field}: {message}");
    edge_settings(&mut spec, &query, host_cors).map_err(|(field, m)| bad(field, m))?;
    variables(&mut spec, &query.rest).map_err(|(field, m)| bad(&field, m))?;
    if let Some(path) = query.path {
        check_path(&path).map_err(|m| bad("path", m))?;
        spec.path = path;
    }
    if let Some(methods) = query.methods {
        spec.methods = match methods.trim() {
            "" | "*" => None,
            list => Some(parse_methods(&split(list)).map_err(|m| bad("methods", m))?),
        };
    }
    if let Some(grants) = query.grants {
        let grants = split(&grants);
        check_grants(&grants).map_err(|m| bad("grants", m))?;
        spec.grants = grants;
    }
    if let Some(outbound) = query.outbound {
        spec.outbound = Some(split(&outbound));
    }
    for (field, value) in &query.rest {
        if variable(field).is_some() {
            continue;
        }
        if !spec.limits.set(field, value).map_err(|m| bad(field, m))? {
            return Err(format!(
                "query parameter {field}: unknown; expected path, methods, grants, outbound, \
                 reuse_requests, reuse_idle, rate_limit, auth, scopes, cache_ttl, cache_vary, \
                 schema_body, schema_query, cors, config.KEY, secret.KEY or one of {}",
                Limits::NAMES.join(", ")
            ));
        }
    }
    check_limits(&spec.limits).map_err(|(field, m)| bad(field, m))?;
    if query.reuse_requests.is_some() || query.reuse_idle.is_some() {
        let mut reuse = spec.reuse.unwrap_or_default();
        if let Some(requests) = &query.reuse_requests {
            reuse.requests = requests
                .parse()
                .map_err(|e| bad("reuse_requests", format!("{e}")))?;
        }
        if let Some(idle) = &query.reuse_idle {
            reuse.idle = idle.parse().map_err(|e| bad("reuse_idle", e))?;
        }
        spec.reuse = if reuse.requests == 0 {
            None
        } else {
            check_reuse(&reuse).map_err(|(field, m)| bad(&format!("reuse_{field}"), m))?;
            Some(reuse)
        };
    }
    Ok(spec)
}

/// The key of a `config.KEY` or `secret.KEY` parameter, and whether it is
/// a secret; `None` for any other parameter.
fn variable(field: &str) -> Option<(&str, bool)> {
    match field.split_once('.')? {
        ("config", key) => Some((key, false)),
        ("secret", key) => Some((key, true)),
        _ => None,
    }
}

/// Applies the query's `config.KEY=value` and `secret.KEY=NAME`
/// parameters, remembering each in `spec.set_by_admin`. An empty value
/// removes the key. Removals go first, then secrets, then variables, so
/// one query (and the replay of a stored one) can turn either kind into
/// the other.
///
/// A secret is given by reference: `NAME` is resolved on each host from
/// its own `TRELLIS_SECRET_NAME` ([`crate::config::env::secret`]), so the
/// value never crosses the admin API or enters the deployment store.
fn variables(
    spec: &mut RouteSpec,
    rest: &BTreeMap<String, String>,
) -> Result<(), (String, String)> {
    let params: Vec<(&String, &str, bool, &str)> = rest
        .iter()
        .filter_map(|(field, value)| {
            let (key, secret) = variable(field)?;
            Some((field, key, secret, value.trim()))
        })
        .collect();
    let config = Arc::make_mut(&mut spec.config);
    for &(field, key, _, _) in params.iter().filter(|p| p.3.is_empty()) {
        config.remove(key).map_err(|m| (field.clone(), m))?;
    }
    for &(field, key, _, name) in params.iter().filter(|p| p.2 && !p.3.is_empty()) {
        let value = crate::config::env::secret(name).map_err(|m| (field.clone(), m))?;
        config
            .set_secret(key, value)
            .map_err(|m| (field.clone(), m))?;
        // The variable it replaces must not come back when the stored
        // settings are replayed.
        spec.set_by_admin.remove(&format!("config.{key}"));
    }
    for &(field, key, _, value) in params.iter().filter(|p| !p.2 && !p.3.is_empty()) {
        config
            .set_variable(key, value)
            .map_err(|m| (field.clone(), m))?;
    }
    for (field, _, _, value) in params {
        spec.set_by_admin.insert(field.clone(), value.to_owned());
    }
    Ok(())
}

/// Applies the query's edge settings (rate limit, auth, scopes, response
/// cache, schemas, CORS) to `spec`, remembering each in
/// `spec.set_by_admin`. Whether the policies they name exist on this host
/// is checked at deploy ([`crate::ops::deployments::Deployments::check_names`]);
/// here, what needs no host.
fn edge_settings(
    spec: &mut RouteSpec,
    query: &SettingsQuery,
    host_cors: Option<&Arc<Cors>>,
) -> Result<(), (&'static str, String)> {
    let name = |value: &str| Some(value.trim().to_owned()).filter(|v| !v.is_empty());
    if let Some(policy) = &query.rate_limit {
        spec.rate_limit = name(policy);
    }
    if let Some(policy) = &query.auth {
        spec.auth = name(policy);
    }
    if let Some(scopes) = &query.scopes {
        spec.scopes = split(scopes);
        check_scopes(&spec.scopes).map_err(|m| ("scopes", m))?;
    }
    if query.cache_ttl.is_some() || query.cache_vary.is_some() {
        spec.cache = response_cache(spec.cache.take(), query)?;
    }
    if query.schema_body.is_some() || query.schema_query.is_some() {
        let mut schema = spec.schema.as_deref().cloned().unwrap_or_default();
        for (field, part, text, slot) in [
            (
                "schema_body",
                Part::Body,
                &query.schema_body,
                &mut schema.body,
            ),
            (
                "schema_query",
                Part::Query,
                &query.schema_query,
                &mut schema.query,
            ),
        ] {
            if let Some(text) = text {
                *slot = compile_schema(text, part).map_err(|m| (field, m))?;
            }
        }
        spec.schema = (schema.body.is_some() || schema.query.is_some()).then(|| Arc::new(schema));
    }
    if let Some(cors) = &query.cors {
        spec.cors = if cors.trim().is_empty() {
            host_cors.cloned()
        } else {
            let rules: Cors = serde_json::from_str(cors).map_err(|e| {
                (
                    "cors",
                    format!("not the manifest's `cors` table as JSON: {e}"),
                )
            })?;
            rules
                .check()
                .map_err(|(key, m)| ("cors", format!("{key}: {m}")))?;
            Some(Arc::new(rules))
        };
    }
    for (field, value) in [
        ("rate_limit", &query.rate_limit),
        ("auth", &query.auth),
        ("scopes", &query.scopes),
        ("cache_ttl", &query.cache_ttl),
        ("cache_vary", &query.cache_vary),
        ("schema_body", &query.schema_body),
        ("schema_query", &query.schema_query),
        ("cors", &query.cors),
    ] {
        if let Some(value) = value {
            spec.set_by_admin.insert(field.to_owned(), value.clone());
        }
    }
    Ok(())
}

/// The response cache after the query's `cache_ttl` and `cache_vary` over
/// the `current` one.
fn response_cache(
    current: Option<ResponseCache>,
    query: &SettingsQuery,
) -> Result<Option<ResponseCache>, (&'static str, String)> {
    let ttl = match &query.cache_ttl {
        Some(ttl) if ttl.trim() == "0" => None,
        Some(ttl) => Some(ttl.parse().map_err(|m| ("cache_ttl", m))?),
        None => current.as_ref().map(|c| c.ttl),
    };
    let Some(ttl) = ttl else {
        if query.cache_vary.is_some() && query.cache_ttl.is_none() {
            return Err((
                "cache_vary",
                "the route has no response cache: add cache_ttl".into(),
            ));
        }
        return Ok(None);
    };
    let vary = match &query.cache_vary {
        Some(vary) => split(vary),
        None => current.map(|c| c.vary).unwrap_or_default(),
    };
    let cache = ResponseCache { ttl, vary };
    check_cache(&cache).map_err(|(key, m)| match key {
        "vary" => ("cache_vary", m),
        _ => ("cache_ttl", m),
    })?;
    Ok(Some(cache))
}

/// A schema given inline (`schema_body`, `schema_query`): compiled as a
/// manifest's file would be; empty for none.
fn compile_schema(text: &str, part: Part) -> Result<Option<Arc<Schema>>, String> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let document = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    Schema::compile("the document", document, part).map(|s| Some(Arc::new(s)))
}

/// The settings of `spec` the admin API can set, as the query parameters
/// that set them: what the deployment store keeps per version.
pub(crate) fn stored_settings(spec: &RouteSpec) -> BTreeMap<String, String> {
    let join = |list: &[String]| list.join(",");
    let mut out = BTreeMap::new();
    out.insert("path".to_owned(), spec.path.clone());
    let methods = spec.methods.as_ref().map_or_else(String::new, |m| {
        m.iter()
            .map(http::Method::as_str)
            .collect::<Vec<_>>()
            .join(",")
    });
    out.insert("methods".to_owned(), methods);
    out.insert("grants".to_owned(), join(&spec.grants));
    if let Some(outbound) = &spec.outbound {
        out.insert("outbound".to_owned(), join(outbound));
    }
    let limits = &spec.limits;
    for (name, value) in [
        ("timeout", limits.timeout.to_string()),
        ("memory", limits.memory.to_string()),
        ("max_body", limits.max_body.to_string()),
        ("max_concurrency", limits.max_concurrency.to_string()),
        ("queue_timeout", limits.queue_timeout.to_string()),
    ] {
        out.insert(name.to_owned(), value);
    }
    match &spec.reuse {
        Some(reuse) => {
            out.insert("reuse_requests".to_owned(), reuse.requests.to_string());
            out.insert("reuse_idle".to_owned(), reuse.idle.to_string());
        }
        None => {
            out.insert("reuse_requests".to_owned(), "0".to_owned());
        }
    }
    out.extend(spec.set_by_admin.clone());
    out
}

/// Route `name` with `stored` settings (see [`stored_settings`]) on top of
/// `base`, this host's manifest route of that name if any, which supplies
/// what the admin API did not set (its config and secrets, edge policies,
/// schemas, CORS), else the host's `[cors]`: validated exactly as an admin
/// `PUT`, and secrets resolved from this host's environment.
pub(crate) fn settings_from_stored(
    name: &str,
    base: Option<&RouteSpec>,
    stored: &BTreeMap<String, String>,
    host_cors: Option<&Arc<Cors>>,
) -> Result<RouteSpec, String> {
    let base = base.map(|spec| RouteSpec {
        methods: None,
        grants: Vec::new(),
        outbound: None,
        limits: Limits::default(),
        reuse: None,
        ..spec.clone()
    });
    let query: SettingsQuery = serde_json::to_value(stored)
        .and_then(serde_json::from_value)
        .map_err(|e| e.to_string())?;
    settings(name, base.as_ref(), query, host_cors)
}

fn split(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`super::settings`] on a host without `[cors]`.
    fn settings(
        name: &str,
        current: Option<&RouteSpec>,
        query: SettingsQuery,
    ) -> Result<RouteSpec, String> {
        super::settings(name, current, query, None)
    }

    /// [`super::settings_from_stored`] on a host without `[cors]`.
    fn settings_from_stored(
        name: &str,
        base: Option<&RouteSpec>,
        stored: &BTreeMap<String, String>,
    ) -> Result<RouteSpec, String> {
        super::settings_from_stored(name, base, stored, None)
    }

    fn q(json: &str) -> SettingsQuery {
        serde_json::from_value(serde_json::from_str(json).unwrap()).unwrap()
    }

    /// What the deployment store keeps of a version rebuilds the same
    /// settings on another host, and the manifest supplies the rest.
    #[test]
    fn stored_settings_round_trip() {
        let spec = settings(
            "x",
            None,
            q(r#"{"path":"/x/{id}","methods":"GET,HEAD","grants":"sql,log","outbound":"","timeout":"2s","memory":"16MiB","max_concurrency":"8","reuse_requests":"4","reuse_idle":"250ms"}"#),
        )
        .unwrap();
        let stored = stored_settings(&spec);
        assert_eq!(stored["timeout"], "2s");
        assert_eq!(stored["memory"], "16MiB");
        let again = settings_from_stored("x", None, &stored).unwrap();
        assert_eq!(again, spec);
        // Without reuse and outbound, they stay off even over a base that
        // has them.
        let plain = settings("x", None, q(r#"{"path":"/x"}"#)).unwrap();
        let mut base = spec.clone();
        base.rate_limit = Some("per_ip".into());
        let rebuilt = settings_from_stored("x", Some(&base), &stored_settings(&plain)).unwrap();
        assert_eq!(rebuilt.reuse, None);
        assert_eq!(rebuilt.outbound, None);
        assert_eq!(rebuilt.methods, None);
        assert!(rebuilt.grants.is_empty());
        assert_eq!(
            rebuilt.rate_limit.as_deref(),
            Some("per_ip"),
            "the manifest's own"
        );
        let mut bad = stored_settings(&plain);
        bad.insert("timeout".into(), "2x".into());
        let err = settings_from_stored("x", None, &bad).unwrap_err();
        assert!(err.contains("timeout"), "{err}");
    }

    #[test]
    fn admin_set_edge_settings_travel_with_the_version() {
        let spec = settings(
            "x",
            None,
            q(r#"{"path":"/x","rate_limit":"tight","auth":"jwt","scopes":"read,write","cache_ttl":"30s","cache_vary":"accept","config.GREETING":"hi"}"#),
        )
        .unwrap();
        assert_eq!(spec.rate_limit.as_deref(), Some("tight"));
        assert_eq!(spec.scopes, ["read", "write"]);
        assert_eq!(spec.cache.as_ref().unwrap().vary, ["accept"]);
        assert_eq!(spec.config.get("GREETING"), Some("hi"));
        // Over another host's manifest entry, which has its own cache and
        // a secret: what the admin set wins, the rest is that host's.
        let mut base = settings("x", None, q(r#"{"path":"/x"}"#)).unwrap();
        base.cache = Some(ResponseCache {
            ttl: "5s".parse().unwrap(),
            vary: Vec::new(),
        });
        base.description = Some("from the manifest".into());
        let stored = stored_settings(&spec);
        let rebuilt = settings_from_stored("x", Some(&base), &stored).unwrap();
        assert_eq!(rebuilt.cache, spec.cache);
        assert_eq!(rebuilt.auth.as_deref(), Some("jwt"));
        assert_eq!(rebuilt.config.get("GREETING"), Some("hi"));
        assert_eq!(rebuilt.description.as_deref(), Some("from the manifest"));
        // A later version keeps them; empty values clear them.
        let next = settings(
            "x",
            Some(&rebuilt),
            q(r#"{"rate_limit":"","cache_ttl":"0"}"#),
        )
        .unwrap();
        assert_eq!((next.rate_limit, next.cache), (None, None));
        assert_eq!(next.auth.as_deref(), Some("jwt"));
        let err = settings("x", Some(&spec), q(r#"{"cache_vary":"a b"}"#)).unwrap_err();
        assert!(err.contains("cache_vary"), "{err}");
        let err = settings("x", None, q(r#"{"path":"/x","cache_vary":"accept"}"#)).unwrap_err();
        assert!(err.contains("add cache_ttl"), "{err}");
    }

    #[test]
    fn settings_are_validated_like_the_manifest() {
        let err = settings("x", None, SettingsQuery::default()).unwrap_err();
        assert!(err.contains("needs a path"), "{err}");
        let spec = settings(
            "x",
            None,
            q(r#"{"path":"/x","methods":"GET,HEAD","timeout":"2s","memory":"16MiB"}"#),
        )
        .unwrap();
        assert_eq!(spec.methods.unwrap().len(), 2);
        assert_eq!(spec.limits.timeout.0, std::time::Duration::from_secs(2));
        assert_eq!(spec.limits.memory.0, 16 << 20);
        let err = settings("x", None, q(r#"{"path":"/health/x"}"#)).unwrap_err();
        assert!(err.contains("path") && err.contains("/health"), "{err}");
        let err = settings("x", None, q(r#"{"path":"/x","timeout":"2x"}"#)).unwrap_err();
        assert!(err.contains("timeout"), "{err}");
        for timeout in ["99999999999999h", "61m"] {
            let query = format!(r#"{{"path":"/x","timeout":"{timeout}"}}"#);
            let err = settings("x", None, q(&query)).unwrap_err();
            assert!(err.starts_with("query parameter timeout:"), "{err}");
        }
        let err = settings("x", None, q(r#"{"path":"/x","memory":"1KiB"}"#)).unwrap_err();
        assert!(err.contains("memory") && err.contains("1MiB"), "{err}");
        let err = settings("x", None, q(r#"{"path":"/x","grants":"sql,disk"}"#)).unwrap_err();
        assert!(err.contains("disk"), "{err}");
        let err = settings("x", None, q(r#"{"path":"/x","bogus":"1"}"#)).unwrap_err();
        assert!(
            err.contains("bogus") && err.contains("queue_timeout"),
            "{err}"
        );
        let err = settings("a b", None, q(r#"{"path":"/x"}"#)).unwrap_err();
        assert!(err.contains("route name"), "{err}");
        for name in [".", ".."] {
            let err = settings(name, None, q(r#"{"path":"/x"}"#)).unwrap_err();
            assert!(err.contains("route name"), "{err}");
        }
        let spec = settings("x", None, q(r#"{"path":"/x","outbound":"a, b"}"#)).unwrap();
        assert_eq!(spec.outbound.unwrap(), ["a", "b"]);
        let spec = settings("x", None, q(r#"{"path":"/x","outbound":""}"#)).unwrap();
        assert_eq!(spec.outbound, Some(vec![]));
        assert!(
            settings("x", None, q(r#"{"path":"/x"}"#))
                .unwrap()
                .outbound
                .is_none()
        );
    }

    /// `config.KEY` and `secret.KEY`: an empty value removes the key, a
    /// secret is a reference resolved on this host (never its value), and
    /// the stored settings rebuild the same keys over a manifest entry.
    #[test]
    fn variables_and_secret_references() {
        let spec = settings(
            "x",
            None,
            q(r#"{"path":"/x","config.A":"1","config.B":"2"}"#),
        )
        .unwrap();
        let next = settings("x", Some(&spec), q(r#"{"config.A":""}"#)).unwrap();
        assert_eq!(next.config.get("A"), None);
        assert_eq!(next.config.get("B"), Some("2"));
        let rebuilt = settings_from_stored("x", Some(&spec), &stored_settings(&next)).unwrap();
        assert_eq!(rebuilt.config, next.config, "the removal is replayed too");

        let err = settings("x", None, q(r#"{"path":"/x","secret.T":"lower"}"#)).unwrap_err();
        assert!(
            err.starts_with("query parameter secret.T:") && err.contains("A-Z"),
            "{err}"
        );
        let err = settings(
            "x",
            None,
            q(r#"{"path":"/x","secret.T":"NOT_SET_ANYWHERE_42"}"#),
        )
        .unwrap_err();
        assert!(
            err.contains("TRELLIS_SECRET_NOT_SET_ANYWHERE_42 is not set"),
            "{err}"
        );

        // A manifest secret: a variable cannot replace it unless it is
        // removed in the same query; then it is a plain variable, also
        // when replayed over that manifest entry.
        let mut base = spec.clone();
        Arc::make_mut(&mut base.config)
            .set_secret("T", "s3cret".into())
            .unwrap();
        let err = settings("x", Some(&base), q(r#"{"config.T":"v"}"#)).unwrap_err();
        assert!(err.contains("secret.T="), "{err}");
        let plain = settings("x", Some(&base), q(r#"{"secret.T":"","config.T":"v"}"#)).unwrap();
        assert_eq!(plain.config.get("T"), Some("v"));
        assert_eq!(plain.config.secret_keys().count(), 0);
        let replayed = settings_from_stored("x", Some(&base), &stored_settings(&plain)).unwrap();
        assert_eq!(replayed.config, plain.config);
        let stored = stored_settings(&base);
        assert!(
            !stored.values().any(|v| v.contains("s3cret")),
            "a secret's value is never stored: {stored:?}"
        );
    }

    #[test]
    fn inline_schemas_are_compiled_like_the_manifest_files() {
        let body = r#"{"type":"object","required":["to"],"properties":{"to":{"type":"string"}}}"#;
        let query = serde_json::json!({"path": "/x", "schema_body": body}).to_string();
        let spec = settings("x", None, q(&query)).unwrap();
        let schema = spec.schema.as_ref().unwrap();
        assert!(schema.query.is_none());
        let document = &schema.body.as_ref().unwrap().document;
        assert_eq!(document["required"][0], "to");
        assert!(
            schema
                .body
                .as_ref()
                .unwrap()
                .validator()
                .is_valid(&serde_json::json!({"to": "a"}))
        );
        // Stored as written and rebuilt on another host.
        let rebuilt = settings_from_stored("x", None, &stored_settings(&spec)).unwrap();
        assert_eq!(rebuilt.schema, spec.schema);
        // Removed by an empty value; the route then has no schema at all.
        let off = settings("x", Some(&spec), q(r#"{"schema_body":""}"#)).unwrap();
        assert!(off.schema.is_none());
        for (document, expect) in [
            (r#"{"type":"#, "not JSON"),
            (r#"[1]"#, "is not a JSON Schema"),
            (r#"{"$ref":"https://example.com/s.json"}"#, "$ref"),
        ] {
            let query = serde_json::json!({"path": "/x", "schema_body": document}).to_string();
            let err = settings("x", None, q(&query)).unwrap_err();
            assert!(
                err.starts_with("query parameter schema_body:") && err.contains(expect),
                "{err}"
            );
        }
        // A query schema must describe strings, as in the manifest.
        let query = serde_json::json!({"path": "/x", "schema_query": r#"{"properties":{"n":{"type":"integer"}}}"#}).to_string();
        let err = settings("x", None, q(&query)).unwrap_err();
        assert!(err.starts_with("query parameter schema_query:"), "{err}");
    }

    #[test]
    fn cors_follows_the_host_unless_set() {
        let host: Arc<Cors> =
            Arc::new(serde_json::from_str(r#"{"allow_origins":["https://app.example"]}"#).unwrap());
        let spec = super::settings("x", None, q(r#"{"path":"/x"}"#), Some(&host)).unwrap();
        assert_eq!(
            spec.cors.as_ref(),
            Some(&host),
            "a new route follows [cors]"
        );
        let own = r#"{"allow_origins":["http://localhost:3000"],"max_age":"10m","allow_credentials":true}"#;
        let query = serde_json::json!({ "cors": own }).to_string();
        let spec = super::settings("x", Some(&spec), q(&query), Some(&host)).unwrap();
        assert_eq!(
            spec.cors.as_ref().unwrap().allow_origins,
            ["http://localhost:3000"]
        );
        let rebuilt =
            super::settings_from_stored("x", None, &stored_settings(&spec), Some(&host)).unwrap();
        assert_eq!(rebuilt.cors, spec.cors);
        let back = super::settings("x", Some(&spec), q(r#"{"cors":""}"#), Some(&host)).unwrap();
        assert_eq!(back.cors.as_ref(), Some(&host));
        for (rules, expect) in [
            (
                r#"{"allow_origins":["https://a.example/path"]}"#,
                "allow_origins",
            ),
            (
                r#"{"allow_origins":["*"],"allow_credentials":true}"#,
                "allow_credentials",
            ),
            (r#"{"allow_origin":["https://a.example"]}"#, "unknown field"),
        ] {
            let query = serde_json::json!({ "path": "/x", "cors": rules }).to_string();
            let err = settings("x", None, q(&query)).unwrap_err();
            assert!(
                err.starts_with("query parameter cors:") && err.contains(expect),
                "{err}"
            );
        }
    }
}
