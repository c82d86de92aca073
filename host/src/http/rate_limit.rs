//! The host's per-route limits (`rate_limit = "NAME"` on a route): which
//! bucket a request counts in, and the `RateLimit-*` headers.
//!
//! Each route counts in buckets of its own, even when routes share a
//! policy: attaching a policy to a second route should not let traffic on
//! one starve the other.

use crate::app::routes::Route;
use crate::config::manifest::KeySource;
use crate::services::auth::Identity;
use crate::services::rate_limit::{Decision, RateLimiter};
use axum::extract::ConnectInfo;
use http::{HeaderMap, HeaderName, HeaderValue, header};
use sha2::Digest as _;
use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Header values longer than this are hashed into the key, so a client
/// cannot make the host store (or send Redis) arbitrarily long keys.
const MAX_HEADER_KEY: usize = 128;

static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

impl RateLimiter {
    /// Counts `req` against its route's policy, if the route has one. A
    /// policy unknown to the limiter (a route from a manifest whose
    /// policies were not loaded) is logged and not enforced: the same
    /// fail-open choice as during a Redis outage.
    ///
    /// The bucket is chosen before the returned future first runs, so the
    /// future holds no borrow of the request (whose body is not `Sync`).
    pub fn check_route<'a, B>(
        &'a self,
        route: &Route,
        req: &http::Request<B>,
    ) -> impl Future<Output = Option<Decision>> + Send + use<'a, B> {
        let bucket = self.route_bucket(route, req);
        async move {
            let (policy, key) = bucket?;
            // Boxed: only routes with a policy get here, and inline its
            // Redis future would size every request's future.
            Box::pin(self.check(&policy, &key)).await.ok()
        }
    }

    /// Whether `route`'s policy counts by subject: its check then runs
    /// after authentication, not before.
    pub fn by_subject(&self, route: &Route) -> bool {
        route
            .spec
            .rate_limit
            .as_deref()
            .and_then(|p| self.key_source(p))
            .is_some_and(|s| s == KeySource::Subject)
    }

    /// The policy and key `req` counts under on `route`.
    fn route_bucket<B>(&self, route: &Route, req: &http::Request<B>) -> Option<(String, String)> {
        let policy = route.spec.rate_limit.as_deref()?;
        let Some(source) = self.key_source(policy) else {
            tracing::error!(route = %route.name, policy, "rate limit policy unknown; request not limited");
            return None;
        };
        let client = client_key(&source, req);
        Some((policy.to_owned(), format!("route:{}:{client}", route.name)))
    }
}

/// The client part of a request's bucket key under `source`.
fn client_key<B>(source: &KeySource, req: &http::Request<B>) -> Cow<'static, str> {
    match source {
        // Without connection info (a router driven in-process) every
        // request shares one bucket.
        KeySource::Ip => req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(Cow::Borrowed(""), |ConnectInfo(addr)| {
                Cow::Owned(addr.ip().to_canonical().to_string())
            }),
        // Requests without the header share one bucket keyed "".
        KeySource::Header(name) => match req.headers().get(name) {
            None => Cow::Borrowed(""),
            Some(value) => match std::str::from_utf8(value.as_bytes()) {
                Ok(text) if text.len() <= MAX_HEADER_KEY => Cow::Owned(format!("h:{text}")),
                _ => Cow::Owned(format!(
                    "sha256:{:x}",
                    sha2::Sha256::digest(value.as_bytes())
                )),
            },
        },
        KeySource::Route => Cow::Borrowed(""),
        // Put there by authentication, which runs first for such routes.
        KeySource::Subject => match req.extensions().get::<Arc<Identity>>() {
            None => Cow::Borrowed(""),
            Some(id) if id.subject.len() <= MAX_HEADER_KEY => {
                Cow::Owned(format!("s:{}", id.subject))
            }
            Some(id) => Cow::Owned(format!(
                "sha256:{:x}",
                sha2::Sha256::digest(id.subject.as_bytes())
            )),
        },
    }
}

impl Decision {
    /// Sets `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`
    /// (seconds, rounded up), plus `Retry-After` on a refusal.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        headers.insert(RATELIMIT_LIMIT.clone(), HeaderValue::from(self.limit));
        headers.insert(
            RATELIMIT_REMAINING.clone(),
            HeaderValue::from(self.remaining),
        );
        headers.insert(
            RATELIMIT_RESET.clone(),
            HeaderValue::from(ceil_secs(self.reset)),
        );
        if !self.allowed {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(ceil_secs(self.retry_after)),
            );
        }
    }
}

/// Whole seconds, rounded up: a client waiting that long is never early.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_by_ip_header_or_route() {
        let mut req = http::Request::new(());
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 4000))));
        req.headers_mut()
            .insert("x-api-key", HeaderValue::from_static("k1"));
        assert_eq!(client_key(&KeySource::Ip, &req), "127.0.0.1");
        let header = KeySource::Header(HeaderName::from_static("x-api-key"));
        assert_eq!(client_key(&header, &req), "h:k1");
        let absent = KeySource::Header(HeaderName::from_static("x-other"));
        assert_eq!(client_key(&absent, &req), "");
        assert_eq!(client_key(&KeySource::Route, &req), "");

        // A v4 client on a dual-stack listener counts as itself.
        let mapped: std::net::Ipv6Addr = "::ffff:10.0.0.7".parse().unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from((mapped, 4000))));
        assert_eq!(client_key(&KeySource::Ip, &req), "10.0.0.7");

        // Long values are hashed, distinctly.
        let long = "x".repeat(MAX_HEADER_KEY + 1);
        req.headers_mut()
            .insert("x-api-key", HeaderValue::from_str(&long).unwrap());
        let hashed = client_key(&header, &req);
        assert!(
            hashed.starts_with("sha256:") && hashed.len() == 7 + 64,
            "{hashed}"
        );
    }

    #[test]
    fn headers_round_seconds_up() {
        let mut headers = HeaderMap::new();
        let refused = Decision {
            allowed: false,
            limit: 100,
            remaining: 0,
            reset: Duration::from_millis(59_400),
            retry_after: Duration::from_millis(1),
        };
        refused.write_headers(&mut headers);
        assert_eq!(headers["ratelimit-limit"], "100");
        assert_eq!(headers["ratelimit-remaining"], "0");
        assert_eq!(headers["ratelimit-reset"], "60");
        assert_eq!(headers["retry-after"], "1");

        let mut headers = HeaderMap::new();
        Decision {
            allowed: true,
            remaining: 99,
            reset: Duration::from_secs(1),
            retry_after: Duration::ZERO,
            ..refused
        }
        .write_headers(&mut headers);
        assert_eq!(headers["ratelimit-reset"], "1");
        assert!(!headers.contains_key("retry-after"));
    }
}
