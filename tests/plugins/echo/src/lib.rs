//! Test plugin: streams the request body back, chunk by chunk.
//!
//! Memory stays constant whatever the upload size: at most one 64 KiB chunk
//! is held at a time. The request's method and path (with query) come back in
//! `x-echo-method` and `x-echo-path`.
//!
//! With `?buffer` in the query it reads the whole body before it answers
//! (with a `content-length`), so a failed read, such as the host cutting off
//! a body over `max_body`, happens before any response exists. A failed read
//! traps either way: the guest cannot answer for a body it did not get.

use wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasi::io::streams::{InputStream, OutputStream, StreamError};

const CHUNK: u64 = 64 * 1024;

struct Echo;

impl wasi::exports::http::incoming_handler::Guest for Echo {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let headers = Fields::from_list(&[
            (
                "x-echo-method".into(),
                method_name(&request.method()).into_bytes(),
            ),
            ("x-echo-path".into(), path.clone().into_bytes()),
        ])
        .expect("method and path are valid header values");
        let in_body = request.consume().expect("body is consumed once");
        let input = in_body.stream().expect("stream is taken once");

        if path
            .split_once('?')
            .is_some_and(|(_, q)| q.split('&').any(|p| p == "buffer"))
        {
            let mut body = Vec::new();
            while let Some(chunk) = read(&input) {
                body.extend_from_slice(&chunk);
            }
            let length = body.len().to_string().into_bytes();
            headers
                .append("content-length", &length)
                .expect("content-length is valid");
            respond(response_out, headers, |output| write_all(output, &body));
            return;
        }

        // Send the head first so the client can read while it still uploads.
        respond(response_out, headers, |output| {
            while let Some(chunk) = read(&input) {
                write_all(output, &chunk)?;
            }
            Ok(())
        });
    }
}

/// The next chunk of the request body, `None` at its end.
fn read(input: &InputStream) -> Option<Vec<u8>> {
    match input.blocking_read(CHUNK) {
        Ok(chunk) => Some(chunk),
        Err(StreamError::Closed) => None,
        Err(StreamError::LastOperationFailed(err)) => {
            panic!("reading the request body failed: {err}")
        }
    }
}

/// Sends a 200 with `headers`, then a body written by `write`.
fn respond(
    response_out: ResponseOutparam,
    headers: Fields,
    write: impl FnOnce(&OutputStream) -> Result<(), StreamError>,
) {
    let response = OutgoingResponse::new(headers);
    let body = response.body().expect("body is taken once");
    ResponseOutparam::set(response_out, Ok(response));
    let output = body.write().expect("stream is taken once");
    if write(&output)
        .and_then(|()| output.blocking_flush())
        .is_err()
    {
        return; // The client went away.
    }
    drop(output);
    let _ = OutgoingBody::finish(body, None);
}

fn method_name(method: &Method) -> String {
    match method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Connect => "CONNECT",
        Method::Options => "OPTIONS",
        Method::Trace => "TRACE",
        Method::Patch => "PATCH",
        Method::Other(other) => other,
    }
    .to_owned()
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

wasi::http::proxy::export!(Echo);
