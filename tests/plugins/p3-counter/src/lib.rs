//! Test plugin: a WASI 0.3 handler (`wasi:http/handler@0.3.0`). It counts
//! the requests its instance has served in a static, and the most it has
//! had in flight at once, and answers
//! `count=N request_id=ID most=M`: a kept instance counts up, a fresh one
//! says 1, and `most` above 1 shows one instance serving requests
//! concurrently. Each request also writes a `trellis:api/log` record
//! `counted` with the request id it was sent, which the host tags with the
//! request id it attributes the call to.
//!
//! The query changes what one request does: `?sleep=MS` waits that long
//! (an async `wait-for`, so other requests run meanwhile) before it logs,
//! `?trap` panics, `?loop` spins until the host's deadline and `?grow=N`
//! keeps N more MiB of memory.
//!
//! `?echo` answers with the request body instead, streamed back as it
//! arrives; `?echo=buffer` reads all of it first (so a body over the
//! route's `max_body` fails before the answer starts).

use std::hint::black_box;
use std::sync::atomic::{AtomicU32, Ordering};
use wasip3::http::types::{ErrorCode, Fields, Request, Response};
use wasip3::wit_bindgen::{StreamResult, StreamWriter};
use wasip3::{wit_future, wit_stream};

/// The `trellis:api` imports; only `log` is used.
mod bindings {
    wit_bindgen::generate!({
        world: "trellis:api/imports",
        path: "../../../wit",
        generate_all,
    });
}

use bindings::trellis::api::log::{self, Level};

wasip3::http::service::export!(Counter);

/// Requests this instance has taken, this one included.
static COUNT: AtomicU32 = AtomicU32::new(0);
/// Requests in flight in this instance now.
static IN_FLIGHT: AtomicU32 = AtomicU32::new(0);
/// The most requests this instance has had in flight at once.
static MOST: AtomicU32 = AtomicU32::new(0);

/// Memory kept by `?grow`.
static KEPT: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

struct Counter;

impl wasip3::exports::http::handler::Guest for Counter {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let path = request.get_path_with_query().unwrap_or_default();
        let query = path.split_once('?').map_or("", |(_, q)| q);
        match query {
            "echo" => return echo(request, false).await,
            "echo=buffer" => return echo(request, true).await,
            _ => {}
        }
        let count = COUNT.fetch_add(1, Ordering::Relaxed) + 1;
        let now = IN_FLIGHT.fetch_add(1, Ordering::Relaxed) + 1;
        MOST.fetch_max(now, Ordering::Relaxed);
        let request_id = request
            .get_headers()
            .get("x-request-id")
            .first()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        for param in query.split('&') {
            match param.split_once('=').unwrap_or((param, "")) {
                ("sleep", ms) => {
                    let ms: u64 = ms.parse().unwrap_or(0);
                    wasip3::clocks::monotonic_clock::wait_for(ms * 1_000_000).await;
                }
                ("trap", _) => panic!("p3-counter: trap requested on request {count}"),
                ("grow", mib) => {
                    let mib: usize = mib.parse().unwrap_or(0);
                    let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
                    kept.push(black_box(vec![1u8; mib << 20]));
                }
                ("loop", _) => {
                    let mut n = 0u64;
                    loop {
                        n = black_box(n.wrapping_add(1));
                    }
                }
                _ => {}
            }
        }
        let _ = log::write(
            Level::Info,
            "counted",
            &[
                ("count".into(), count.to_string()),
                ("seen_request_id".into(), request_id.clone()),
            ],
        );
        let most = MOST.load(Ordering::Relaxed);
        IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);

        let body = format!("count={count} request_id={request_id} most={most}\n");
        let (response, mut contents) = response(b"text/plain")?;
        // The host reads the body after `handle` returns: write it from a
        // task that outlives this call.
        wasip3::spawn(async move {
            let rest = contents.write_all(body.into_bytes()).await;
            assert!(rest.is_empty(), "the host stopped reading the body");
        });
        Ok(response)
    }
}

/// Answers with `request`'s body: streamed back as it arrives, or once all
/// of it is read (`buffer`).
async fn echo(request: Request, buffer: bool) -> Result<Response, ErrorCode> {
    let (handled, handled_reader) = wit_future::new(|| Ok(()));
    let (mut body, _trailers) = Request::consume_body(request, handled_reader);
    let (response, mut contents) = response(b"application/octet-stream")?;
    let mut kept = Vec::new();
    if buffer {
        loop {
            let (result, chunk) = body.read(Vec::with_capacity(64 << 10)).await;
            kept.extend_from_slice(&chunk);
            if !matches!(result, StreamResult::Complete(_)) {
                break;
            }
        }
    }
    wasip3::spawn(async move {
        let _handled = handled;
        if buffer {
            let _ = contents.write_all(kept).await;
            return;
        }
        loop {
            let (result, chunk) = body.read(Vec::with_capacity(64 << 10)).await;
            if !chunk.is_empty() && !contents.write_all(chunk).await.is_empty() {
                return;
            }
            if !matches!(result, StreamResult::Complete(_)) {
                return;
            }
        }
    });
    Ok(response)
}

/// A response of `content_type` with no trailers, and the writer of its
/// body.
fn response(content_type: &[u8]) -> Result<(Response, StreamWriter<u8>), ErrorCode> {
    let headers = Fields::from_list(&[("content-type".into(), content_type.to_vec())])
        .map_err(|_| ErrorCode::InternalError(Some("building headers".into())))?;
    let (contents, reader) = wit_stream::new();
    let (trailers, trailers_reader) = wit_future::new(|| Ok(None));
    drop(trailers);
    let (response, _sent) = Response::new(headers, Some(reader), trailers_reader);
    Ok((response, contents))
}
