//! Test plugin: spins forever without yielding, so only the host's deadline
//! (epoch interruption) can stop it.

use std::hint::black_box;

use wasi::http::types::{IncomingRequest, ResponseOutparam};

struct Loop;

impl wasi::exports::http::incoming_handler::Guest for Loop {
    fn handle(_request: IncomingRequest, _response_out: ResponseOutparam) {
        let mut n: u64 = 0;
        loop {
            // `black_box` keeps the optimizer from proving the loop useless.
            n = black_box(n.wrapping_add(1));
        }
    }
}

wasi::http::proxy::export!(Loop);
