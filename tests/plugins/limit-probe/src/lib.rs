//! Test plugin: `GET /anything?policy=P&key=K` makes one
//! `trellis:api/rate-limit.check(P, K)` and answers 200 with the outcome as
//! JSON: `{"decision":{"allowed":..,"limit":..,"remaining":..,
//! "reset_ms":..,"retry_after_ms":..}}`, or `{"error":{"unknown-policy":
//! ".."}}` / `{"error":{"invalid-key":".."}}`. A missing `policy`
//! parameter is a 500 with a message. `key` may be empty, and `%XX`
//! escapes are decoded, so tests can send empty and oversized keys.

use serde_json::{Value as Json, json};
use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

/// The `trellis:api` imports; only `rate-limit` is used, so it is the
/// only one the component imports.
mod bindings {
    wit_bindgen::generate!({
        world: "trellis:api/imports",
        path: "../../../wit",
        generate_all,
    });
}

use bindings::trellis::api::rate_limit::{self, Error};

struct Probe;

impl wasi::exports::http::incoming_handler::Guest for Probe {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let query = path.split_once('?').map_or("", |(_, q)| q);
        let (status, body) = match (param(query, "policy"), param(query, "key")) {
            (Some(policy), key) => (200, check(&policy, &key.unwrap_or_default())),
            (None, _) => (
                500,
                json!({ "message": "limit-probe: missing query parameter `policy`" }),
            ),
        };
        respond(response_out, status, &body.to_string());
    }
}

fn check(policy: &str, key: &str) -> Json {
    match rate_limit::check(policy, key) {
        Ok(d) => json!({ "decision": {
            "allowed": d.allowed,
            "limit": d.limit,
            "remaining": d.remaining,
            "reset_ms": d.reset_ms,
            "retry_after_ms": d.retry_after_ms,
        } }),
        Err(Error::UnknownPolicy(message)) => json!({ "error": { "unknown-policy": message } }),
        Err(Error::InvalidKey(message)) => json!({ "error": { "invalid-key": message } }),
    }
}

/// The decoded value of query parameter `name`.
fn param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| decode(v))
    })
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn respond(response_out: ResponseOutparam, status: u16, body: &str) {
    let headers = Fields::from_list(&[
        ("content-type".into(), b"application/json".to_vec()),
        ("content-length".into(), body.len().to_string().into_bytes()),
    ])
    .expect("static headers are valid");
    let response = OutgoingResponse::new(headers);
    response
        .set_status_code(status)
        .expect("a valid status code");
    let out_body = response.body().expect("body is taken once");
    ResponseOutparam::set(response_out, Ok(response));
    let out = out_body.write().expect("stream is taken once");
    // Bodies here are far below one blocking write's 4096-byte limit.
    if out.blocking_write_and_flush(body.as_bytes()).is_err() {
        return; // The client went away.
    }
    drop(out);
    let _ = OutgoingBody::finish(out_body, None);
}

wasi::http::proxy::export!(Probe);
