//! Test plugin: allocates and touches memory until the host's limit kills it.

use std::hint::black_box;

use wasi::http::types::{IncomingRequest, ResponseOutparam};

const CHUNK: usize = 1024 * 1024;

struct Membomb;

impl wasi::exports::http::incoming_handler::Guest for Membomb {
    fn handle(_request: IncomingRequest, _response_out: ResponseOutparam) {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            // Writing every byte makes the pages real, not just reserved.
            let chunk = vec![0xA5_u8; CHUNK];
            hoard.push(black_box(chunk));
        }
    }
}

wasi::http::proxy::export!(Membomb);
