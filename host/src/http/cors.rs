//! CORS (`[cors]`, or a route's `cors = {...}`): preflight `OPTIONS`
//! answered by the host (204) without auth or an instance, and the
//! `Access-Control-*` headers on the route's other responses, errors
//! included, so a page can read why it was refused.
//!
//! An origin the rules do not allow gets no CORS headers at all (its
//! preflight is a 403), which is what makes the browser refuse.

use crate::config::manifest::Cors;
use axum::extract::Request;
use axum::response::Response;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};

/// Request headers a browser sends without asking (the CORS-safelisted
/// ones), always allowed.
const SAFELISTED: &[&str] = &[
    "accept",
    "accept-language",
    "content-language",
    "content-type",
];

/// Methods allowed when neither the rules nor the route name any.
const DEFAULT_METHODS: &[Method] = &[Method::GET, Method::HEAD, Method::POST];

/// Whether `req` is a CORS preflight.
pub fn is_preflight(req: &Request) -> bool {
    req.method() == Method::OPTIONS
        && req.headers().contains_key(header::ORIGIN)
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The answer to a preflight: 204 with the grants when the origin, method
/// and headers are allowed, else `None` (the caller answers 403 with no
/// CORS headers).
pub fn preflight(
    rules: &Cors,
    route_methods: Option<&[Method]>,
    req: &Request,
) -> Option<Response> {
    let origin = req.headers().get(header::ORIGIN)?;
    let allow_origin = allowed_origin(rules, origin)?;
    let methods = allowed_methods(rules, route_methods);
    let requested = req
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())?;
    if !methods.contains(&requested) {
        return None;
    }
    let asked: Vec<String> = req
        .headers()
        .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect();
    let any_header = rules.allow_headers.iter().any(|h| h == "*");
    let header_ok = |h: &String| {
        any_header
            || SAFELISTED.contains(&h.as_str())
            || rules
                .allow_headers
                .iter()
                .any(|a| a.eq_ignore_ascii_case(h))
    };
    if !asked.iter().all(header_ok) {
        return None;
    }
    let mut response = Response::new(axum::body::Body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
    let list = methods
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    insert(headers, header::ACCESS_CONTROL_ALLOW_METHODS, &list);
    let allow_headers = if any_header {
        asked.join(", ")
    } else {
        rules.allow_headers.join(", ")
    };
    if !allow_headers.is_empty() {
        insert(
            headers,
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            &allow_headers,
        );
    }
    if rules.allow_credentials {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if let Some(max_age) = rules.max_age {
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, max_age.0.as_secs().into());
    }
    headers.insert(
        header::VARY,
        HeaderValue::from_static(
            "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        ),
    );
    Some(response)
}

/// Adds the CORS headers for `origin` (the request's, if any) to a
/// response of a route with `rules`.
pub fn decorate(rules: &Cors, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
    let wildcard = rules.allow_origins.iter().any(|o| o == "*");
    if !wildcard {
        // The answer depends on the origin: caches must key on it.
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    let Some(allow) = origin.and_then(|o| allowed_origin(rules, o)) else {
        return;
    };
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
    if rules.allow_credentials {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if !rules.expose_headers.is_empty() {
        insert(
            headers,
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            &rules.expose_headers.join(", "),
        );
    }
}

/// The `Access-Control-Allow-Origin` value for `origin`, if allowed: `*`
/// for a wildcard without credentials, else the origin itself.
fn allowed_origin(rules: &Cors, origin: &HeaderValue) -> Option<HeaderValue> {
    let text = origin.to_str().ok()?;
    if rules.allow_origins.iter().any(|o| o == text) {
        return Some(origin.clone());
    }
    let wildcard = rules.allow_origins.iter().any(|o| o == "*");
    (wildcard && !rules.allow_credentials).then(|| HeaderValue::from_static("*"))
}

fn allowed_methods(rules: &Cors, route: Option<&[Method]>) -> Vec<Method> {
    match (&rules.allow_methods, route) {
        (Some(list), _) => list
            .iter()
            .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
            .collect(),
        (None, Some(route)) => route.to_vec(),
        (None, None) => DEFAULT_METHODS.to_vec(),
    }
}

fn insert(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(origins: &[&str], credentials: bool) -> Cors {
        Cors {
            allow_origins: origins.iter().map(|s| (*s).to_owned()).collect(),
            allow_methods: Some(vec!["GET".into(), "POST".into()]),
            allow_headers: vec!["authorization".into(), "x-custom".into()],
            expose_headers: vec!["x-request-id".into()],
            allow_credentials: credentials,
            max_age: None,
        }
    }

    fn preflight_req(origin: &str, method: &str, headers: &str) -> Request {
        let mut b = http::Request::builder()
            .method("OPTIONS")
            .uri("/x")
            .header("origin", origin)
            .header("access-control-request-method", method);
        if !headers.is_empty() {
            b = b.header("access-control-request-headers", headers);
        }
        b.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn preflight_grants_only_what_is_allowed() {
        let r = rules(&["https://app.example"], true);
        let ok = preflight(
            &r,
            None,
            &preflight_req("https://app.example", "POST", "Authorization, content-type"),
        )
        .unwrap();
        assert_eq!(ok.status(), 204);
        assert_eq!(
            ok.headers()["access-control-allow-origin"],
            "https://app.example"
        );
        assert_eq!(ok.headers()["access-control-allow-credentials"], "true");
        assert!(preflight(&r, None, &preflight_req("https://evil.example", "POST", "")).is_none());
        assert!(
            preflight(
                &r,
                None,
                &preflight_req("https://app.example", "DELETE", "")
            )
            .is_none()
        );
        assert!(
            preflight(
                &r,
                None,
                &preflight_req("https://app.example", "GET", "x-other")
            )
            .is_none()
        );
        // A look-alike origin is not the origin.
        assert!(
            preflight(
                &r,
                None,
                &preflight_req("https://app.example.evil", "GET", "")
            )
            .is_none()
        );
    }

    #[test]
    fn actual_responses_carry_headers_for_allowed_origins_only() {
        let r = rules(&["https://app.example"], false);
        let mut h = HeaderMap::new();
        decorate(
            &r,
            Some(&HeaderValue::from_static("https://app.example")),
            &mut h,
        );
        assert_eq!(h["access-control-allow-origin"], "https://app.example");
        assert_eq!(h["access-control-expose-headers"], "x-request-id");
        assert_eq!(h["vary"], "Origin");
        let mut h = HeaderMap::new();
        decorate(
            &r,
            Some(&HeaderValue::from_static("https://evil.example")),
            &mut h,
        );
        assert!(!h.contains_key("access-control-allow-origin"));
        let any = rules(&["*"], false);
        let mut h = HeaderMap::new();
        decorate(
            &any,
            Some(&HeaderValue::from_static("https://x.example")),
            &mut h,
        );
        assert_eq!(h["access-control-allow-origin"], "*");
        assert!(!h.contains_key("vary"));
    }
}
