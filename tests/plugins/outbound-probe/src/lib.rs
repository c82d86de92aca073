//! Test component: calls `?url=U` (percent-encoded) with
//! `wasi:http/outgoing-handler` and streams the upstream's response body
//! back, with `x-upstream-status`. Query parameters:
//!
//! - `method=POST` (default `GET`); `send=N` streams N bytes of request
//!   body (written after the call started, so it streams);
//! - `header=NAME:VALUE` adds a request header;
//! - `first_byte_ms=N` sets the request option `first-byte-timeout`.
//!
//! A failed call answers 502 with the error code's debug name (e.g.
//! `HttpRequestDenied`). `x-probe-sent-headers` lists the header names the
//! guest saw on its own outgoing request, so tests can check that the
//! host's injected headers never enter the guest.

use wasi::http::outgoing_handler;
use wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingRequest, OutgoingResponse,
    RequestOptions, ResponseOutparam, Scheme,
};
use wasi::io::streams::{OutputStream, StreamError};

const CHUNK: usize = 64 * 1024;

struct Probe;

impl wasi::exports::http::incoming_handler::Guest for Probe {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let query = request.path_with_query().unwrap_or_default();
        let param = |key: &str| query_param(&query, key).map(percent_decode);
        let Some(url) = param("url") else {
            return respond(response_out, 400, b"missing ?url=", &[]);
        };
        let Some((scheme, authority, path)) = split_url(&url) else {
            return respond(response_out, 400, b"bad url", &[]);
        };
        let headers = Fields::new();
        if let Some(h) = param("header")
            && let Some((name, value)) = h.split_once(':')
        {
            let _ = headers.append(&name.to_owned(), &value.as_bytes().to_vec());
        }
        let sent: Vec<String> = headers.entries().into_iter().map(|(n, _)| n).collect();
        let req = OutgoingRequest::new(headers);
        let method = match param("method").as_deref() {
            Some("POST") => Method::Post,
            Some("PUT") => Method::Put,
            _ => Method::Get,
        };
        let _ = req.set_method(&method);
        let _ = req.set_scheme(Some(&if scheme == "https" {
            Scheme::Https
        } else {
            Scheme::Http
        }));
        let _ = req.set_authority(Some(&authority));
        let _ = req.set_path_with_query(Some(&path));
        let send: u64 = param("send").and_then(|v| v.parse().ok()).unwrap_or(0);
        let body = if send > 0 || matches!(method, Method::Post) {
            Some(req.body().expect("body is taken once"))
        } else {
            None
        };
        let options = param("first_byte_ms")
            .and_then(|v| v.parse::<u64>().ok())
            .map(|ms| {
                let o = RequestOptions::new();
                let _ = o.set_first_byte_timeout(Some(ms * 1_000_000));
                o
            });
        let future = match outgoing_handler::handle(req, options) {
            Ok(f) => f,
            Err(code) => return respond(response_out, 502, code_name(&code).as_bytes(), &[]),
        };
        if let Some(body) = body {
            let out = body.write().expect("stream is taken once");
            let chunk = [b'p'; CHUNK];
            let mut left = send;
            while left > 0 {
                let n = usize::try_from(left).map_or(CHUNK, |l| l.min(CHUNK));
                if write_all(&out, &chunk[..n]).is_err() {
                    break;
                }
                left -= n as u64;
            }
            let _ = out.blocking_flush();
            drop(out);
            let _ = OutgoingBody::finish(body, None);
        }
        future.subscribe().block();
        let upstream = match future.get() {
            Some(Ok(Ok(response))) => response,
            Some(Ok(Err(code))) => {
                return respond(response_out, 502, code_name(&code).as_bytes(), &[]);
            }
            other => {
                return respond(response_out, 500, format!("{other:?}").as_bytes(), &[]);
            }
        };
        let status = upstream.status();
        let seen: Vec<String> = upstream
            .headers()
            .entries()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let headers = Fields::from_list(&[
            ("x-upstream-status".into(), status.to_string().into_bytes()),
            ("x-probe-sent-headers".into(), sent.join(",").into_bytes()),
            ("x-probe-seen-headers".into(), seen.join(",").into_bytes()),
        ])
        .expect("valid headers");
        let response = OutgoingResponse::new(headers);
        let out_body = response.body().expect("body is taken once");
        ResponseOutparam::set(response_out, Ok(response));
        let in_body = upstream.consume().expect("body is consumed once");
        let input = in_body.stream().expect("stream is taken once");
        let out = out_body.write().expect("stream is taken once");
        loop {
            match input.blocking_read(CHUNK as u64) {
                Ok(bytes) => {
                    if write_all(&out, &bytes).is_err() {
                        return;
                    }
                }
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(_)) => return, // cut the response short
            }
        }
        if out.blocking_flush().is_err() {
            return;
        }
        drop(out);
        let _ = OutgoingBody::finish(out_body, None);
    }
}

/// `HttpRequestDenied` for `ErrorCode::HttpRequestDenied`.
fn code_name(code: &wasi::http::types::ErrorCode) -> String {
    let name = format!("{code:?}");
    name.strip_prefix("ErrorCode::").unwrap_or(&name).to_owned()
}

fn respond(out: ResponseOutparam, status: u16, body: &[u8], headers: &[(String, Vec<u8>)]) {
    let fields = Fields::from_list(headers).expect("valid headers");
    let response = OutgoingResponse::new(fields);
    let _ = response.set_status_code(status);
    let out_body = response.body().expect("body is taken once");
    ResponseOutparam::set(out, Ok(response));
    let stream = out_body.write().expect("stream is taken once");
    let _ = stream.blocking_write_and_flush(body);
    drop(stream);
    let _ = OutgoingBody::finish(out_body, None);
}

/// `scheme://authority/path?query` → (scheme, authority, path with query).
fn split_url(url: &str) -> Option<(String, String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    Some((scheme.to_owned(), authority.to_owned(), path.to_owned()))
}

fn query_param<'a>(path_with_query: &'a str, key: &str) -> Option<&'a str> {
    let (_, query) = path_with_query.split_once('?')?;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Writes `buf` as fast as the host accepts it, waiting when its buffer is full.
fn write_all(out: &OutputStream, mut buf: &[u8]) -> Result<(), StreamError> {
    while !buf.is_empty() {
        let permit = out.check_write()?;
        if permit == 0 {
            out.subscribe().block();
            continue;
        }
        let n = buf.len().min(usize::try_from(permit).unwrap_or(usize::MAX));
        out.write(&buf[..n])?;
        buf = &buf[n..];
    }
    Ok(())
}

wasi::http::proxy::export!(Probe);
