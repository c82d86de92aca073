//! A small router: patterns with `{param}` and trailing `{*rest}` segments,
//! matched in the order they were added, with 404 and 405 answered as the
//! contract's JSON errors.

use crate::error::Error;
use crate::request::{Request, percent_decode};
use crate::response::Response;

/// A route handler: a function (or a closure that captures nothing).
pub type Route = fn(Request) -> Result<Response, Error>;

enum Segment {
    Literal(String),
    /// `{name}`: one non-empty segment.
    Param(String),
    /// `{*name}`: the rest of the path, possibly empty; last only.
    Rest(String),
}

/// Routes requests by method and path.
///
/// ```no_run
/// use trellis_sdk::{Error, Request, Response, Router};
///
/// fn show(request: Request) -> Result<Response, Error> {
///     Ok(Response::text(format!("item {}\n", request.param("id").unwrap_or_default())))
/// }
///
/// fn answer(request: Request) -> Result<Response, Error> {
///     Router::new()
///         .get("/items/{id}", show)
///         .delete("/items/{id}", |_| Ok(Response::no_content()))
///         .handle(request)
/// }
/// ```
#[derive(Default)]
pub struct Router {
    routes: Vec<(String, Vec<Segment>, Route)>,
}

impl Router {
    /// A router with no routes: everything is a 404.
    pub fn new() -> Router {
        Router::default()
    }

    /// Routes `method` requests (upper case, e.g. `"GET"`) matching
    /// `pattern` to `handler`.
    #[must_use]
    pub fn route(mut self, method: &str, pattern: &str, handler: Route) -> Router {
        let segments = split(pattern)
            .map(|segment| {
                let name = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}'));
                match name {
                    Some(rest) if rest.starts_with('*') => Segment::Rest(rest[1..].to_owned()),
                    Some(name) => Segment::Param(name.to_owned()),
                    None => Segment::Literal(segment.to_owned()),
                }
            })
            .collect();
        self.routes.push((method.to_owned(), segments, handler));
        self
    }

    /// Routes `GET` (and `HEAD`) requests.
    #[must_use]
    pub fn get(self, pattern: &str, handler: Route) -> Router {
        self.route("GET", pattern, handler)
    }

    /// Routes `POST` requests.
    #[must_use]
    pub fn post(self, pattern: &str, handler: Route) -> Router {
        self.route("POST", pattern, handler)
    }

    /// Routes `PUT` requests.
    #[must_use]
    pub fn put(self, pattern: &str, handler: Route) -> Router {
        self.route("PUT", pattern, handler)
    }

    /// Routes `PATCH` requests.
    #[must_use]
    pub fn patch(self, pattern: &str, handler: Route) -> Router {
        self.route("PATCH", pattern, handler)
    }

    /// Routes `DELETE` requests.
    #[must_use]
    pub fn delete(self, pattern: &str, handler: Route) -> Router {
        self.route("DELETE", pattern, handler)
    }

    /// Calls the first route whose method and pattern match. A path that
    /// matches no pattern is a 404; one that matches only under other
    /// methods is a 405 listing them in `Allow`.
    pub fn handle(&self, mut request: Request) -> Result<Response, Error> {
        let mut allowed: Vec<&str> = Vec::new();
        for (method, pattern, handler) in &self.routes {
            let Some(params) = matches(pattern, request.path()) else {
                continue;
            };
            let head_as_get = request.method() == "HEAD" && method == "GET";
            if method == request.method() || head_as_get {
                request.set_params(params);
                return handler(request);
            }
            if !allowed.contains(&method.as_str()) {
                allowed.push(method);
            }
        }
        if allowed.is_empty() {
            Err(Error::not_found("no route for this path"))
        } else {
            Err(Error::method_not_allowed(&allowed))
        }
    }
}

/// The segments of a path, without the leading `/`.
fn split(path: &str) -> impl Iterator<Item = &str> {
    path.strip_prefix('/').unwrap_or(path).split('/')
}

/// The decoded parameters when `path` matches `pattern`.
fn matches(pattern: &[Segment], path: &str) -> Option<Vec<(String, String)>> {
    let mut params = Vec::new();
    let mut parts = split(path);
    let mut rest_of = path.strip_prefix('/').unwrap_or(path);
    for segment in pattern {
        if let Segment::Rest(name) = segment {
            params.push((name.clone(), percent_decode(rest_of)));
            return Some(params);
        }
        let part = parts.next()?;
        rest_of = rest_of.get(part.len() + 1..).unwrap_or("");
        match segment {
            Segment::Literal(literal) if literal == part => {}
            Segment::Param(name) if !part.is_empty() => {
                params.push((name.clone(), percent_decode(part)));
            }
            _ => return None,
        }
    }
    parts.next().is_none().then_some(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(p: &str) -> Vec<Segment> {
        let router = Router::new().get(p, |_| Ok(Response::no_content()));
        router
            .routes
            .into_iter()
            .next()
            .map(|r| r.1)
            .unwrap_or_default()
    }

    #[test]
    fn matches_literals_params_and_rest() {
        assert_eq!(matches(&pattern("/users"), "/users"), Some(vec![]));
        assert_eq!(matches(&pattern("/users"), "/users/"), None);
        assert_eq!(matches(&pattern("/users"), "/users/1"), None);
        assert_eq!(
            matches(&pattern("/users/{id}"), "/users/a%20b"),
            Some(vec![("id".to_owned(), "a b".to_owned())])
        );
        assert_eq!(matches(&pattern("/users/{id}"), "/users/"), None);
        assert_eq!(matches(&pattern("/users/{id}"), "/users/1/x"), None);
        assert_eq!(
            matches(&pattern("/files/{*path}"), "/files/a/b%2Fc"),
            Some(vec![("path".to_owned(), "a/b/c".to_owned())])
        );
        assert_eq!(
            matches(&pattern("/files/{*path}"), "/files/"),
            Some(vec![("path".to_owned(), String::new())])
        );
    }
}
