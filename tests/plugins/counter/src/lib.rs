//! Test plugin: counts the requests its instance has served in a static
//! and answers `count=N request_id=ID`, so a test can tell a kept instance
//! (the count goes up) from a fresh one (it is 1 again). Each request also
//! writes a `trellis:api/log` record `counted` with the count, which the
//! host tags with the request id it believes the instance serves.
//!
//! The query changes what one request does, after counting it:
//! `?trap` panics, `?loop` spins until the host's deadline stops it,
//! `?leak` keeps a `wasi:http` resource (a `fields`) in a static past the
//! end of the request, and `?grow=N` keeps N more MiB of memory.

use std::cell::RefCell;
use std::hint::black_box;
use std::sync::atomic::{AtomicU32, Ordering};
use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

/// The `trellis:api` imports; only `log` is used.
mod bindings {
    wit_bindgen::generate!({
        world: "trellis:api/imports",
        path: "../../../wit",
        generate_all,
    });
}

use bindings::trellis::api::log::{self, Level};

/// Requests this instance has served, this one included.
static COUNT: AtomicU32 = AtomicU32::new(0);

thread_local! {
    /// Resources kept past their request by `?leak`.
    static LEAKED: RefCell<Vec<Fields>> = const { RefCell::new(Vec::new()) };
    /// Memory kept by `?grow`.
    static KEPT: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

struct Counter;

impl wasi::exports::http::incoming_handler::Guest for Counter {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let count = COUNT.fetch_add(1, Ordering::Relaxed) + 1;
        let request_id = request
            .headers()
            .get("x-request-id")
            .first()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        let path = request.path_with_query().unwrap_or_default();
        let query = path.split_once('?').map_or("", |(_, q)| q);
        let _ = log::write(
            Level::Info,
            "counted",
            &[
                ("count".into(), count.to_string()),
                ("seen_request_id".into(), request_id.clone()),
            ],
        );
        for param in query.split('&') {
            match param.split_once('=').unwrap_or((param, "")) {
                ("trap", _) => panic!("counter: trap requested on request {count}"),
                ("loop", _) => {
                    let mut n: u64 = 0;
                    loop {
                        n = black_box(n.wrapping_add(1));
                    }
                }
                ("leak", _) => LEAKED.with(|l| l.borrow_mut().push(Fields::new())),
                ("grow", mib) => {
                    let mib: usize = mib.parse().unwrap_or(1);
                    KEPT.with(|k| k.borrow_mut().push(black_box(vec![1u8; mib << 20])));
                }
                _ => {}
            }
        }
        respond(
            response_out,
            &format!("count={count} request_id={request_id}\n"),
        );
    }
}

fn respond(response_out: ResponseOutparam, body: &str) {
    let headers = Fields::from_list(&[
        ("content-type".into(), b"text/plain".to_vec()),
        ("content-length".into(), body.len().to_string().into_bytes()),
    ])
    .expect("static headers are valid");
    let response = OutgoingResponse::new(headers);
    let out_body = response.body().expect("body is taken once");
    ResponseOutparam::set(response_out, Ok(response));
    let out = out_body.write().expect("stream is taken once");
    if out.blocking_write_and_flush(body.as_bytes()).is_err() {
        return; // The client went away.
    }
    drop(out);
    let _ = OutgoingBody::finish(out_body, None);
}

wasi::http::proxy::export!(Counter);
