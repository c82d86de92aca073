//! Test plugin for the hot-load benchmark: a component of several MiB (a
//! 4 MiB data segment), to time uploading, compiling and swapping in a
//! large component. It answers `big-blob <len> <checksum>\n`.

use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

const BLOCK_LEN: usize = 4096;
const BLOCKS: usize = 1024;

/// One 4 KiB block of a non-zero pattern: zero bytes would become `.bss`
/// and cost nothing in the file.
const BLOCK: [u8; BLOCK_LEN] = {
    let mut block = [0u8; BLOCK_LEN];
    let mut i = 0;
    while i < BLOCK_LEN {
        block[i] = (i % 251) as u8 + 1;
        i += 1;
    }
    block
};

/// 4 MiB that land in the component's data segment.
static BLOB: [[u8; BLOCK_LEN]; BLOCKS] = [BLOCK; BLOCKS];

struct BigBlob;

impl wasi::exports::http::incoming_handler::Guest for BigBlob {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        // `black_box` keeps the optimizer from folding the blob away.
        let blob = core::hint::black_box(&BLOB);
        let checksum = blob
            .iter()
            .step_by(7)
            .map(|block| u64::from(block[BLOCK_LEN - 1]))
            .sum::<u64>();
        let body = format!("big-blob {} {checksum}\n", BLOCK_LEN * BLOCKS).into_bytes();
        let headers = Fields::from_list(&[("content-type".into(), b"text/plain".to_vec())])
            .expect("static headers are valid");
        let response = OutgoingResponse::new(headers);
        let out_body = response.body().expect("body is taken once");
        ResponseOutparam::set(response_out, Ok(response));
        let out = out_body.write().expect("stream is taken once");
        if out.blocking_write_and_flush(&body).is_err() {
            return;
        }
        drop(out);
        let _ = OutgoingBody::finish(out_body, None);
    }
}

wasi::http::proxy::export!(BigBlob);
