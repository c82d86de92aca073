//! Test plugin: traps before it sets a response.
//!
//! The panic message is distinctive so tests can check it never reaches the
//! client (5xx bodies say only "internal error").

use wasi::http::types::{IncomingRequest, ResponseOutparam};

/// What the guest says as it dies; must appear in no response.
const SECRET: &str = "trap plugin panicked: secret-detail-5f1c";

struct Trap;

impl wasi::exports::http::incoming_handler::Guest for Trap {
    fn handle(_request: IncomingRequest, _response_out: ResponseOutparam) {
        panic!("{SECRET}");
    }
}

wasi::http::proxy::export!(Trap);
