//! Outbound HTTP: a short client over the standard
//! `wasi:http/outgoing-handler`.
//!
//! The host sends each call through the upstream the URL matches among
//! those the route's `outbound` grants (`[upstreams.NAME]` in the
//! manifest), with that upstream's pooled connections, timeouts, retries,
//! circuit breaker and injected headers. A URL no granted upstream matches
//! fails with [`HttpError::Denied`] without touching the network.
//!
//! ```no_run
//! use trellis_sdk::{http, Error};
//! # fn run() -> Result<(), Error> {
//! let quote = http::get("http://127.0.0.1:9000/quote")?.text()?.to_owned();
//! let receipt = http::post_json("http://127.0.0.1:9000/pay", &serde_json::json!({ "cents": 250 }))?;
//! # Ok(()) }
//! ```

use crate::Error;
use crate::response::write_all;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use wasi::http::outgoing_handler;
use wasi::http::types::{ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
use wasi::io::streams::StreamError;

/// Read size for response bodies.
const CHUNK: u64 = 64 * 1024;

/// An upstream's answer, whatever its status.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code, e.g. 200.
    pub status: u16,
    /// The headers, names lower-case, in the order received.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The whole body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// Whether the status is 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first value of header `name` (lower-case), as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// The body as UTF-8 text.
    pub fn text(&self) -> Result<&str, HttpError> {
        std::str::from_utf8(&self.body)
            .map_err(|_| HttpError::BadResponse("the body is not UTF-8".into()))
    }

    /// The body parsed as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| HttpError::BadResponse(format!("the body is not the expected JSON: {e}")))
    }
}

/// Why a call produced no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// No upstream the route grants matches the URL
    /// (`HTTP-request-denied`).
    Denied,
    /// The upstream cannot be reached: its breaker is open, or connecting
    /// failed (the wasi:http error code says which).
    Unavailable(String),
    /// The upstream did not answer within its `timeout`.
    Timeout(String),
    /// The URL is not `http://` or `https://` with an authority.
    InvalidUrl(String),
    /// The response could not be read or was not what the caller expected.
    BadResponse(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Denied => write!(f, "outbound call denied: no granted upstream matches"),
            HttpError::Unavailable(why) => write!(f, "upstream unavailable: {why}"),
            HttpError::Timeout(why) => write!(f, "upstream timed out: {why}"),
            HttpError::InvalidUrl(why) => write!(f, "invalid URL: {why}"),
            HttpError::BadResponse(why) => write!(f, "bad upstream response: {why}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// Unreachable or slow upstreams answer the client 503 `UPSTREAM_UNAVAILABLE`
/// (with `Retry-After`); anything else is the handler's own fault, a 500.
/// The cause goes to the log either way.
impl From<HttpError> for Error {
    fn from(err: HttpError) -> Error {
        match err {
            HttpError::Unavailable(_) | HttpError::Timeout(_) => Error::new(
                503,
                "UPSTREAM_UNAVAILABLE",
                "an upstream service is unavailable",
            )
            .with_cause(&err)
            .with_header("retry-after", "1"),
            _ => Error::internal(&err),
        }
    }
}

/// `GET url`.
pub fn get(url: &str) -> Result<HttpResponse, HttpError> {
    send("GET", url, &[], None)
}

/// `POST url` with `value` as a JSON body.
pub fn post_json<T: Serialize>(url: &str, value: &T) -> Result<HttpResponse, HttpError> {
    let body = serde_json::to_vec(value)
        .map_err(|e| HttpError::InvalidUrl(format!("the body does not serialize: {e}")))?;
    send(
        "POST",
        url,
        &[("content-type", b"application/json".as_slice())],
        Some(&body),
    )
}

/// Any method, with extra headers and an optional body. A call without a
/// body may be retried by the host (for idempotent methods); one with a
/// body is sent once.
pub fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &[u8])],
    body: Option<&[u8]>,
) -> Result<HttpResponse, HttpError> {
    let (scheme, authority, path) = split_url(url)?;
    let fields = Fields::new();
    for (name, value) in headers {
        fields
            .append(&(*name).to_owned(), &value.to_vec())
            .map_err(|e| HttpError::InvalidUrl(format!("header {name}: {e:?}")))?;
    }
    let request = OutgoingRequest::new(fields);
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "OPTIONS" => Method::Options,
        other => Method::Other(other.to_owned()),
    };
    let invalid = |what: &str| HttpError::InvalidUrl(format!("{what} of {url:?}"));
    request
        .set_method(&method)
        .map_err(|()| invalid("method"))?;
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| invalid("scheme"))?;
    request
        .set_authority(Some(authority))
        .map_err(|()| invalid("authority"))?;
    request
        .set_path_with_query(Some(&path))
        .map_err(|()| invalid("path"))?;
    let outgoing = match body {
        Some(_) => Some(request.body().expect("the body is taken once")),
        None => None,
    };
    let future = outgoing_handler::handle(request, None).map_err(classify)?;
    if let (Some(outgoing), Some(bytes)) = (outgoing, body) {
        let stream = outgoing.write().expect("the stream is taken once");
        let written = write_all(&stream, bytes).and_then(|()| stream.blocking_flush());
        drop(stream);
        written.map_err(|e| HttpError::Unavailable(format!("sending the body: {e:?}")))?;
        OutgoingBody::finish(outgoing, None).map_err(classify)?;
    }
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(classify(code)),
        other => return Err(HttpError::BadResponse(format!("{other:?}"))),
    };
    let status = response.status();
    let headers = response.headers().entries();
    let incoming = response.consume().expect("the body is consumed once");
    let stream = incoming.stream().expect("the stream is taken once");
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(CHUNK) {
            Ok(bytes) => body.extend_from_slice(&bytes),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(HttpError::BadResponse(format!(
                    "reading the body: {}",
                    e.to_debug_string()
                )));
            }
        }
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

/// The wasi:http error code as an [`HttpError`].
fn classify(code: ErrorCode) -> HttpError {
    let name = format!("{code:?}");
    match code {
        ErrorCode::HttpRequestDenied => HttpError::Denied,
        ErrorCode::ConnectionTimeout
        | ErrorCode::ConnectionReadTimeout
        | ErrorCode::ConnectionWriteTimeout
        | ErrorCode::HttpResponseTimeout => HttpError::Timeout(name),
        // Refused, reset, DNS, TLS, an open breaker (destination-unavailable)
        // and the rest: the upstream could not serve this call.
        _ => HttpError::Unavailable(name),
    }
}

/// `scheme://authority/path?query` → its parts; the path gets a leading
/// `/` when it has none.
fn split_url(url: &str) -> Result<(Scheme, &str, String), HttpError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| HttpError::InvalidUrl(format!("{url:?} has no scheme")))?;
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => return Err(HttpError::InvalidUrl(format!("scheme {other:?}"))),
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_owned()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_owned()),
    };
    if authority.is_empty() {
        return Err(HttpError::InvalidUrl(format!("{url:?} has no host")));
    }
    Ok((scheme, authority, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_scheme_authority_and_path() {
        let (scheme, authority, path) = split_url("https://api.example:8443/v1/pay?x=1").unwrap();
        assert!(matches!(scheme, Scheme::Https));
        assert_eq!(
            (authority, path.as_str()),
            ("api.example:8443", "/v1/pay?x=1")
        );
        let (_, authority, path) = split_url("http://127.0.0.1:9000").unwrap();
        assert_eq!((authority, path.as_str()), ("127.0.0.1:9000", "/"));
        let (_, authority, path) = split_url("http://h?q=1").unwrap();
        assert_eq!((authority, path.as_str()), ("h", "/?q=1"));
        for bad in ["ftp://h/x", "h/x", "http:///x"] {
            assert!(
                matches!(split_url(bad), Err(HttpError::InvalidUrl(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn unreachable_upstreams_are_503_and_denials_500() {
        let unavailable: Error = HttpError::Unavailable("DestinationUnavailable".into()).into();
        let denied: Error = HttpError::Denied.into();
        assert_eq!(unavailable.status(), 503);
        assert_eq!(denied.status(), 500);
    }
}
