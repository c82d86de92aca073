//! The host-side response cache of a route with `cache = { ttl = ... }`:
//! GET responses kept in the tiered cache and served without running the
//! component.
//!
//! - The key is the route, the path with its query, the verified caller
//!   (on a route with `auth`) and the values of the route's `vary` headers.
//! - A client's `Cache-Control: no-cache` skips the lookup (the fresh
//!   response is still stored); `no-store` skips both.
//! - A handler's `Cache-Control: no-store`, `no-cache` or `private`, a
//!   status other than 200, a `Set-Cookie`, or a body larger than the
//!   cache's `max_value` keeps the response out.
//! - Stored responses get a strong `ETag` (from the body's SHA-256), and a
//!   matching `If-None-Match` gets 304. Hits carry `Age` and, unless the
//!   handler set one, `Cache-Control: public, max-age=<seconds left>`.

use crate::app::routes::Route;
use crate::ids::hex;
use crate::services::cache::{Cache, Entry};
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::StreamExt as _;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use http_body_util::BodyExt as _;
use sha2::{Digest, Sha256};
use std::time::Duration;

static X_TRELLIS_CACHE: HeaderName = HeaderName::from_static("x-trellis-cache");

/// Headers that describe one response only, never stored.
const UNSTORED: &[HeaderName] = &[
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::DATE,
    header::AGE,
];

/// How one request uses its route's response cache.
pub struct Plan {
    key: String,
    ttl: Duration,
    lookup: bool,
    store: bool,
    if_none_match: Option<HeaderValue>,
}

impl Plan {
    /// The plan for `req`, or `None` when the route has no response cache
    /// or the request is not a GET.
    pub fn new(route: &Route, req: &Request) -> Option<Plan> {
        let settings = route.spec.cache.as_ref()?;
        if req.method() != http::Method::GET {
            return None;
        }
        let directives = cache_control(req.headers());
        let mut key = format!(
            "resp:{}:{}",
            route.name,
            req.uri().path_and_query().map_or("/", |p| p.as_str())
        );
        // With `auth`, each caller has entries of their own: a response
        // made for one must never be served to another.
        if let Some(id) = req
            .extensions()
            .get::<std::sync::Arc<crate::services::auth::Identity>>()
        {
            key.push_str("\0sub:");
            key.push_str(&id.policy);
            key.push('\0');
            key.push_str(&id.subject);
        }
        for name in &settings.vary {
            key.push('\0');
            if let Some(value) = req.headers().get(name.as_str()) {
                key.push_str(&String::from_utf8_lossy(value.as_bytes()));
            }
        }
        Some(Plan {
            key,
            ttl: settings.ttl.0,
            lookup: !directives.no_cache && !directives.no_store,
            store: !directives.no_store,
            if_none_match: req.headers().get(header::IF_NONE_MATCH).cloned(),
        })
    }

    /// The cached response, if any.
    pub async fn lookup(&self, cache: &Cache) -> Option<Response> {
        if !self.lookup {
            return None;
        }
        let (entry, _tier) = cache.get(&self.key).await?;
        let stored = decode(&entry.value)?;
        Some(self.answer(stored, &entry, "hit"))
    }

    /// Stores `response` when it may be cached and answers it (with its
    /// `ETag`, or a 304); returns it unchanged otherwise.
    pub async fn store(&self, cache: &Cache, response: Response, max: usize) -> Response {
        let mut response = response;
        let cacheable = self.store && response.status() == StatusCode::OK && {
            let d = cache_control(response.headers());
            !d.no_store
                && !d.no_cache
                && !d.private
                && !response.headers().contains_key(header::SET_COOKIE)
        };
        if !cacheable {
            set_cache_header(&mut response, "bypass");
            return response;
        }
        let (parts, body) = response.into_parts();
        let mut body = body;
        let mut buf = BytesMut::new();
        loop {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        buf.extend_from_slice(&data);
                    }
                    if buf.len() > max {
                        // Too big to keep: send what was read, then the rest.
                        let head = futures::stream::once(std::future::ready(Ok::<_, axum::Error>(
                            buf.freeze(),
                        )));
                        let rest = body.into_data_stream();
                        let mut response =
                            Response::from_parts(parts, Body::from_stream(head.chain(rest)));
                        set_cache_header(&mut response, "bypass");
                        return response;
                    }
                }
                Some(Err(err)) => {
                    tracing::warn!(cause = %err, "response body failed while filling the response cache");
                    let mut response = Response::from_parts(parts, Body::empty());
                    *response.status_mut() = StatusCode::BAD_GATEWAY;
                    return response;
                }
                None => break,
            }
        }
        let body = buf.freeze();
        // The ETag is computed once, here, and stored with the response:
        // hits, the hot path, only copy it.
        let mut headers = parts.headers;
        headers.insert(header::ETAG, etag(&body));
        let stored = Stored {
            status: parts.status,
            headers,
            body,
        };
        let encoded = encode(&stored);
        if let Err(err) = cache.set(&self.key, encoded, self.ttl).await {
            tracing::debug!(cause = %err, "response not cached");
        }
        let now = std::time::Instant::now();
        let entry = Entry {
            value: Bytes::new(),
            stored: now,
            expires: now + self.ttl,
        };
        self.answer(stored, &entry, "miss")
    }

    /// `stored` as a response to this request: 304 when its `ETag`
    /// matches `If-None-Match`.
    fn answer(&self, stored: Stored, entry: &Entry, outcome: &'static str) -> Response {
        let mut headers = stored.headers;
        let etag = match headers.remove(header::ETAG) {
            Some(etag) => etag,
            None => etag(&stored.body),
        };
        let not_modified = self
            .if_none_match
            .as_ref()
            .is_some_and(|inm| matches_etag(inm, &etag));
        let mut response = if not_modified {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            for name in [
                header::CACHE_CONTROL,
                header::VARY,
                header::EXPIRES,
                header::CONTENT_LOCATION,
            ] {
                if let Some(v) = headers.remove(&name) {
                    r.headers_mut().insert(name, v);
                }
            }
            r
        } else {
            let mut r = Response::new(Body::from(stored.body));
            *r.status_mut() = stored.status;
            *r.headers_mut() = headers;
            r
        };
        let h = response.headers_mut();
        h.insert(header::ETAG, etag);
        if !h.contains_key(header::CACHE_CONTROL) {
            let value = format!("public, max-age={}", entry.remaining().as_secs());
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_str(&value).expect("ascii"),
            );
        }
        if outcome == "hit" {
            let age = entry.stored.elapsed().as_secs();
            h.insert(header::AGE, HeaderValue::from(age));
        }
        set_cache_header(&mut response, outcome);
        response
    }
}

fn set_cache_header(response: &mut Response, outcome: &'static str) {
    response
        .headers_mut()
        .insert(X_TRELLIS_CACHE.clone(), HeaderValue::from_static(outcome));
}

#[derive(Default)]
struct Directives {
    no_cache: bool,
    no_store: bool,
    private: bool,
}

fn cache_control(headers: &HeaderMap) -> Directives {
    let mut d = Directives::default();
    for value in headers.get_all(header::CACHE_CONTROL) {
        for token in value.to_str().unwrap_or_default().split(',') {
            let name = token.trim().split('=').next().unwrap_or_default();
            match name.to_ascii_lowercase().as_str() {
                "no-cache" => d.no_cache = true,
                "no-store" => d.no_store = true,
                "private" => d.private = true,
                _ => {}
            }
        }
    }
    if headers
        .get(header::PRAGMA)
        .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"no-cache"))
    {
        d.no_cache = true;
    }
    d
}

fn etag(body: &[u8]) -> HeaderValue {
    let digest = hex(&Sha256::digest(body));
    HeaderValue::from_str(&format!("\"{}\"", &digest[..32])).expect("hex is a valid header")
}

/// Whether `If-None-Match` names `etag` (weak comparison, as RFC 9110
/// asks for `If-None-Match`).
fn matches_etag(if_none_match: &HeaderValue, etag: &HeaderValue) -> bool {
    let ours = etag.to_str().unwrap_or_default();
    if_none_match
        .to_str()
        .unwrap_or_default()
        .split(',')
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == ours)
}

/// A response as kept in the cache.
struct Stored {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// `status u16 | header count u16 | (name len u16, name, value len u32,
/// value)* | body`: compact, and nothing to parse but lengths.
fn encode(stored: &Stored) -> Bytes {
    let headers: Vec<_> = stored
        .headers
        .iter()
        .filter(|(name, _)| !UNSTORED.contains(name))
        .collect();
    let mut out = BytesMut::with_capacity(stored.body.len() + 256);
    out.put_u16(stored.status.as_u16());
    out.put_u16(headers.len() as u16);
    for (name, value) in headers {
        out.put_u16(name.as_str().len() as u16);
        out.put_slice(name.as_str().as_bytes());
        out.put_u32(value.len() as u32);
        out.put_slice(value.as_bytes());
    }
    out.put_slice(&stored.body);
    out.freeze()
}

fn decode(bytes: &Bytes) -> Option<Stored> {
    let mut buf = bytes.clone();
    let need = |buf: &Bytes, n: usize| (buf.remaining() >= n).then_some(());
    need(&buf, 4)?;
    let status = StatusCode::from_u16(buf.get_u16()).ok()?;
    let count = buf.get_u16();
    let mut headers = HeaderMap::new();
    for _ in 0..count {
        need(&buf, 2)?;
        let len = buf.get_u16() as usize;
        need(&buf, len)?;
        let name = HeaderName::from_bytes(&buf.split_to(len)).ok()?;
        need(&buf, 4)?;
        let len = buf.get_u32() as usize;
        need(&buf, len)?;
        let value = HeaderValue::from_maybe_shared(buf.split_to(len)).ok()?;
        headers.append(name, value);
    }
    Some(Stored {
        status,
        headers,
        body: buf,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_responses_round_trip() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.append("x-multi", HeaderValue::from_static("a"));
        headers.append("x-multi", HeaderValue::from_static("b"));
        headers.insert(header::DATE, HeaderValue::from_static("not stored"));
        let stored = Stored {
            status: StatusCode::OK,
            headers,
            body: Bytes::from_static(b"{\"id\":1}"),
        };
        let back = decode(&encode(&stored)).unwrap();
        assert_eq!(back.status, StatusCode::OK);
        assert_eq!(back.body, stored.body);
        assert_eq!(back.headers.get_all("x-multi").iter().count(), 2);
        assert!(back.headers.get(header::DATE).is_none());
        assert!(
            decode(&Bytes::from_static(b"\x00\xc8\x00\x05")).is_none(),
            "truncated input is refused"
        );
    }

    #[test]
    fn if_none_match_forms() {
        let tag = HeaderValue::from_static("\"abc\"");
        for inm in ["\"abc\"", "W/\"abc\"", "\"x\", \"abc\"", "*"] {
            assert!(
                matches_etag(&HeaderValue::from_str(inm).unwrap(), &tag),
                "{inm}"
            );
        }
        assert!(!matches_etag(&HeaderValue::from_static("\"abd\""), &tag));
    }
}
