//! Test plugin for hot load: answers `version a\n`, so a test under load
//! can tell which of two versions of a route served each request (its twin
//! is `tests/plugins/version-b`).

use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

const BODY: &[u8] = b"version a\n";

struct Version;

impl wasi::exports::http::incoming_handler::Guest for Version {
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
        if out.blocking_write_and_flush(BODY).is_err() {
            return; // The client went away.
        }
        drop(out);
        let _ = OutgoingBody::finish(body, None);
    }
}

wasi::http::proxy::export!(Version);
