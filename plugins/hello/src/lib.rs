//! The quickstart plugin: `Hello, world!` over `wasi:http/incoming-handler`.
//!
//! It is also the benchmark route, so it does the least a handler can do:
//! one header list, one write, no allocation beyond what the bindings need.

use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

const BODY: &[u8] = b"Hello, world!\n";

struct Hello;

impl wasi::exports::http::incoming_handler::Guest for Hello {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        let headers = Fields::from_list(&[
            ("content-type".into(), b"text/plain".to_vec()),
            ("content-length".into(), BODY.len().to_string().into_bytes()),
        ])
        .expect("static headers are valid");
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("body is taken once");
        ResponseOutparam::set(response_out, Ok(response));

        let out = body.write().expect("stream is taken once");
        // 14 bytes is far below the 4096-byte limit of one blocking write.
        if out.blocking_write_and_flush(BODY).is_err() {
            return; // The client went away; nothing left to do.
        }
        drop(out);
        let _ = OutgoingBody::finish(body, None);
    }
}

wasi::http::proxy::export!(Hello);
