//! The bridge from `wasi:http/incoming-handler` to a [`Handler`]: builds
//! the [`Request`], calls the handler, logs internal errors and sends the
//! [`Response`].

use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

use crate::Handler;
use crate::error::Error;
use crate::request::{Request, request_id_of};
use crate::response::{Body, BodyWriter, Response, write_all};

/// The most `output-stream.blocking-write-and-flush` takes at once.
const BLOCKING_WRITE_MAX: usize = 4096;

/// Serves one request with `H`; what [`export!`](crate::export) calls.
pub fn serve<H: Handler>(request: IncomingRequest, response_out: ResponseOutparam) {
    let request = Request::from_wasi(request);
    // Only an error body needs the request id, so a handler that succeeds
    // without reading headers costs no header calls.
    let incoming = request.incoming();
    let request_id = || request_id_of(&incoming);
    let response = match H::handle(request) {
        Ok(response) => response,
        Err(error) => {
            report(&error);
            error.into_response(request_id().as_deref())
        }
    };
    send(response, response_out, request_id);
}

/// Logs the cause of a 5xx: the client only sees "internal error".
pub(crate) fn report(error: &Error) {
    if error.status() >= 500 {
        let cause = error.cause().unwrap_or(error.message());
        fail_log(&format!("request failed: {}", error.code()), cause);
    }
}

#[cfg(feature = "log-errors")]
fn fail_log(message: &str, cause: &str) {
    crate::log::error(message, &[("cause", &cause)]);
}

#[cfg(not(feature = "log-errors"))]
fn fail_log(message: &str, cause: &str) {
    eprintln!("{message}: {cause}");
}

fn send(
    response: Response,
    response_out: ResponseOutparam,
    request_id: impl Fn() -> Option<String>,
) {
    let (status, headers, mut body) = response.into_parts();
    let outgoing = match outgoing(status, headers, &body) {
        Ok(outgoing) => outgoing,
        Err(error) => {
            report(&error);
            let (status, headers, error_body) =
                error.into_response(request_id().as_deref()).into_parts();
            body = error_body;
            match outgoing(status, headers, &body) {
                Ok(outgoing) => outgoing,
                Err(_) => return, // Unreachable for our own headers; the host answers 500.
            }
        }
    };
    let Ok(out_body) = outgoing.body() else {
        return;
    };
    ResponseOutparam::set(response_out, Ok(outgoing));
    let Ok(stream) = out_body.write() else {
        return;
    };
    let stream = match body {
        Body::Bytes(bytes) => {
            // A body within one blocking write (wasi:io's limit is 4096
            // bytes), as most API answers are, costs one host call.
            let written = if bytes.len() <= BLOCKING_WRITE_MAX {
                stream.blocking_write_and_flush(&bytes)
            } else {
                write_all(&stream, &bytes).and_then(|()| stream.blocking_flush())
            };
            if written.is_err() {
                return; // The client went away.
            }
            stream
        }
        Body::Stream(write) => {
            let mut writer = BodyWriter::new(stream);
            match write(&mut writer).and_then(|()| writer.finish()) {
                Ok(stream) => stream,
                Err(error) => {
                    // Headers are out: dropping the body unfinished tells the
                    // host (and the client) the response is incomplete.
                    fail_log("streaming the response body failed", &error.to_string());
                    return;
                }
            }
        }
    };
    drop(stream);
    let _ = OutgoingBody::finish(out_body, None);
}

/// The response head; an in-memory body's length goes in `content-length`.
fn outgoing(
    status: u16,
    mut headers: Vec<(String, Vec<u8>)>,
    body: &Body,
) -> Result<OutgoingResponse, Error> {
    if let Body::Bytes(bytes) = body {
        headers.push((
            "content-length".to_owned(),
            bytes.len().to_string().into_bytes(),
        ));
    }
    let fields = Fields::from_list(&headers)
        .map_err(|err| Error::internal(format!("invalid response header: {err:?}")))?;
    let outgoing = OutgoingResponse::new(fields);
    // A new response is already 200; each host call counts on a hot route.
    if status != 200 {
        outgoing
            .set_status_code(status)
            .map_err(|()| Error::internal(format!("invalid response status {status}")))?;
    }
    Ok(outgoing)
}
