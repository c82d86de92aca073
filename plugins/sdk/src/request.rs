//! The incoming request as a handler sees it: method, path, query, route
//! parameters, and headers and a body read from the host on first use.

use std::cell::OnceCell;
use std::rc::Rc;
use std::str::FromStr;

use serde::de::DeserializeOwned;
use wasi::http::types::{IncomingRequest, Method};
use wasi::io::streams::StreamError;

use crate::error::Error;

/// The header carrying the host's request id.
const REQUEST_ID: &str = "x-request-id";

/// The request id of `request`, read from the host (one header lookup).
pub(crate) fn request_id_of(request: &IncomingRequest) -> Option<String> {
    let values = request.headers().get(REQUEST_ID);
    values
        .into_iter()
        .next()
        .and_then(|value| String::from_utf8(value).ok())
}

/// Largest read asked of the body stream at once.
const READ_CHUNK: u64 = 64 * 1024;

/// An HTTP request. The headers and the body are read from the host only
/// when a handler asks for them, so a `GET` that needs neither costs no
/// host calls for them.
pub struct Request {
    /// Shared with [`serve`](crate::serve::serve), which looks up the
    /// request id only if the handler fails.
    inner: Rc<IncomingRequest>,
    method: String,
    path: String,
    query: String,
    headers: OnceCell<Vec<(String, Vec<u8>)>>,
    /// Set by the [`Router`](crate::Router) from the matched pattern.
    params: Vec<(String, String)>,
    body: OnceCell<Result<Vec<u8>, Error>>,
}

impl Request {
    pub(crate) fn from_wasi(inner: IncomingRequest) -> Request {
        let method = match inner.method() {
            Method::Get => "GET".to_owned(),
            Method::Head => "HEAD".to_owned(),
            Method::Post => "POST".to_owned(),
            Method::Put => "PUT".to_owned(),
            Method::Delete => "DELETE".to_owned(),
            Method::Connect => "CONNECT".to_owned(),
            Method::Options => "OPTIONS".to_owned(),
            Method::Trace => "TRACE".to_owned(),
            Method::Patch => "PATCH".to_owned(),
            Method::Other(other) => other,
        };
        let target = inner.path_with_query().unwrap_or_else(|| "/".to_owned());
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path.to_owned(), query.to_owned()),
            None => (target, String::new()),
        };
        Request {
            inner: Rc::new(inner),
            method,
            path,
            query,
            headers: OnceCell::new(),
            params: Vec::new(),
            body: OnceCell::new(),
        }
    }

    /// The method, upper case (`GET`, `POST`, ...).
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The path, as sent (percent-encoded), without the query.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The raw query string, without the `?`; empty when there is none.
    pub fn query_string(&self) -> &str {
        &self.query
    }

    /// Every query parameter, decoded (`+` and `%XX`), in order.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        self.query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (decode_query(key), decode_query(value))
            })
            .collect()
    }

    /// The first value of query parameter `name`, decoded.
    pub fn query(&self, name: &str) -> Option<String> {
        self.query_pairs()
            .into_iter()
            .find_map(|(key, value)| (key == name).then_some(value))
    }

    /// Query parameter `name` parsed as `T`; `None` when absent or empty, a
    /// 422 naming the parameter when it does not parse.
    pub fn query_as<T>(&self, name: &str) -> Result<Option<T>, Error>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        match self.query(name).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(value) => value
                .parse()
                .map(Some)
                .map_err(|err| Error::invalid(name, format_args!("is not valid: {err}"))),
        }
    }

    /// Route parameter `name` (from a `{name}` segment), decoded.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find_map(|(key, value)| (key == name).then_some(value.as_str()))
    }

    /// Route parameter `name` parsed as `T`: a 422 naming the parameter when
    /// it does not parse. A missing parameter is a bug in the route table,
    /// so it is a 500.
    pub fn param_as<T>(&self, name: &str) -> Result<T, Error>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        let value = self
            .param(name)
            .ok_or_else(|| Error::internal(format!("route has no parameter {name:?}")))?;
        value
            .parse()
            .map_err(|err| Error::invalid(name, format_args!("is not valid: {err}")))
    }

    pub(crate) fn set_params(&mut self, params: Vec<(String, String)>) {
        self.params = params;
    }

    /// The first value of header `name` (any case), if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers()
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .and_then(|(_, value)| std::str::from_utf8(value).ok())
    }

    /// Every header as sent, names in lower case; read from the host on
    /// the first call.
    pub fn headers(&self) -> &[(String, Vec<u8>)] {
        // `headers()` is a child resource, dropped here before `inner` is.
        self.headers.get_or_init(|| self.inner.headers().entries())
    }

    /// The host's request, for what [`serve`](crate::serve::serve) needs
    /// after the handler has consumed `self`.
    pub(crate) fn incoming(&self) -> Rc<IncomingRequest> {
        Rc::clone(&self.inner)
    }

    /// The request id the host logs this request under, when it is known
    /// (`x-request-id`).
    pub fn request_id(&self) -> Option<&str> {
        self.header(REQUEST_ID)
    }

    /// The whole body, read from the host on the first call. The route's
    /// `max_body` bounds it.
    pub fn body(&self) -> Result<&[u8], Error> {
        self.body
            .get_or_init(|| read_body(&self.inner))
            .as_deref()
            .map_err(Clone::clone)
    }

    /// The body as UTF-8 text; 400 when it is not.
    pub fn text(&self) -> Result<&str, Error> {
        std::str::from_utf8(self.body()?)
            .map_err(|_| Error::bad_request("the request body is not UTF-8"))
    }

    /// The body parsed as JSON into `T`: 400 `BAD_REQUEST` when it is not
    /// JSON, 422 `VALIDATION_FAILED` when it is JSON of the wrong shape.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(self.body()?).map_err(|err| match err.classify() {
            serde_json::error::Category::Data => {
                Error::validation(format!("invalid request body: {err}"))
            }
            _ => Error::bad_request(format!("the request body is not valid JSON: {err}")),
        })
    }
}

fn read_body(request: &IncomingRequest) -> Result<Vec<u8>, Error> {
    let unreadable =
        |why: &str| Error::bad_request("the request body could not be read").with_cause(why);
    let body = request
        .consume()
        .map_err(|()| unreadable("body already consumed"))?;
    let stream = body
        .stream()
        .map_err(|()| unreadable("body stream taken"))?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(READ_CHUNK) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(err)) => {
                return Err(unreadable(&err.to_debug_string()));
            }
        }
    }
    drop(stream);
    drop(wasi::http::types::IncomingBody::finish(body));
    Ok(bytes)
}

/// Decodes a query component: `+` is a space, `%XX` a byte.
fn decode_query(s: &str) -> String {
    percent_decode(&s.replace('+', " "))
}

/// Decodes `%XX` escapes; invalid escapes stay as they are, and the result
/// is made valid UTF-8 lossily.
pub(crate) fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&hi), Some(&lo)) if hex(hi).is_some() && hex(lo).is_some() => {
                let value = hex(hi).unwrap_or(0) * 16 + hex(lo).unwrap_or(0);
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes_and_keeps_invalid_ones() {
        assert_eq!(percent_decode("a%20b%2Fc"), "a b/c");
        assert_eq!(percent_decode("%E2%9C%93"), "✓");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(decode_query("a+b%2B"), "a b+");
    }
}
