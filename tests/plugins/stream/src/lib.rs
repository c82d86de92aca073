//! Test plugin: a response body of `?bytes=N` bytes (default 1 MiB) of
//! `?pattern=C` (default `x`), written in 64 KiB chunks.
//!
//! It honours the output stream's backpressure (`check_write`), so memory
//! stays constant whether N is 1 KiB or 1 GiB.

use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasi::io::streams::{OutputStream, StreamError};

const DEFAULT_BYTES: u64 = 1024 * 1024;
const CHUNK: usize = 64 * 1024;

struct Stream;

impl wasi::exports::http::incoming_handler::Guest for Stream {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let total = query_param(&path, "bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_BYTES);
        let pattern = query_param(&path, "pattern")
            .and_then(|v| v.bytes().next())
            .unwrap_or(b'x');

        let headers =
            Fields::from_list(&[("content-type".into(), b"application/octet-stream".to_vec())])
                .expect("static headers are valid");
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("body is taken once");
        ResponseOutparam::set(response_out, Ok(response));

        let out = body.write().expect("stream is taken once");
        let chunk = [pattern; CHUNK];
        let mut left = total;
        while left > 0 {
            let n = usize::try_from(left).map_or(CHUNK, |l| l.min(CHUNK));
            if write_all(&out, &chunk[..n]).is_err() {
                return; // The client went away.
            }
            left -= n as u64;
        }
        if out.blocking_flush().is_err() {
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

wasi::http::proxy::export!(Stream);
