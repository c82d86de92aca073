//! Test plugin: sleeps `?ms=N` milliseconds (default 500), then answers
//! `slept N`. Used for concurrency limits and graceful shutdown.

use wasi::clocks::monotonic_clock::subscribe_duration;
use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

const DEFAULT_MS: u64 = 500;

struct Slow;

impl wasi::exports::http::incoming_handler::Guest for Slow {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let ms = request
            .path_with_query()
            .and_then(|p| query_param(&p, "ms").and_then(|v| v.parse().ok()))
            .unwrap_or(DEFAULT_MS);
        // Blocks on a host pollable: the guest waits without burning CPU.
        subscribe_duration(ms * 1_000_000).block();

        let headers = Fields::from_list(&[("content-type".into(), b"text/plain".to_vec())])
            .expect("static headers are valid");
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("body is taken once");
        ResponseOutparam::set(response_out, Ok(response));
        let out = body.write().expect("stream is taken once");
        if out
            .blocking_write_and_flush(format!("slept {ms}\n").as_bytes())
            .is_err()
        {
            return;
        }
        drop(out);
        let _ = OutgoingBody::finish(body, None);
    }
}

fn query_param<'a>(path_with_query: &'a str, key: &str) -> Option<&'a str> {
    let (_, query) = path_with_query.split_once('?')?;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
}

wasi::http::proxy::export!(Slow);
