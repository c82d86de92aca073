//! Test component for the `queue` capability:
//!
//! - `POST /enqueue?queue=Q[&delay_ms=N][&attempts=N][&dedupe=K][&priority=N]`
//!   with the payload as body enqueues it: 200 `{"job": id}`.
//! - `POST /publish?topic=T` publishes the body: 200 `{"event": id}`.
//!
//! A queue error is 200 `{"error": "<variant>", "detail": "..."}`, so the
//! tests can see which variant the host returned (an error result, never
//! a trap).

use trellis_sdk::raw::queue as wit;
use trellis_sdk::{Error, Handler, Request, Response};

struct Probe;

fn report(result: Result<String, wit::Error>, key: &str) -> Response {
    match result {
        Ok(id) => Response::json(&serde_json::json!({ key: id })),
        Err(err) => {
            let (variant, detail) = match err {
                wit::Error::UnknownQueue(n) => ("unknown-queue", n),
                wit::Error::NotGranted(n) => ("not-granted", n),
                wit::Error::PayloadTooLarge(n) => ("payload-too-large", n.to_string()),
                wit::Error::InvalidOptions(n) => ("invalid-options", n),
                wit::Error::Unavailable(n) => ("unavailable", n),
            };
            Response::json(&serde_json::json!({ "error": variant, "detail": detail }))
        }
    }
}

impl Handler for Probe {
    fn handle(request: Request) -> Result<Response, Error> {
        let body = request.body()?.to_vec();
        match request.path() {
            "/enqueue" => {
                let queue = request.query("queue").unwrap_or_default();
                let options = wit::Options {
                    delay_ms: request.query_as("delay_ms")?.unwrap_or(0),
                    attempts: request.query_as("attempts")?,
                    dedupe_key: request.query("dedupe"),
                    priority: request.query_as("priority")?.unwrap_or(0),
                };
                Ok(report(wit::enqueue(&queue, &body, &options), "job"))
            }
            "/publish" => {
                let topic = request.query("topic").unwrap_or_default();
                Ok(report(wit::publish(&topic, &body), "event"))
            }
            _ => Err(Error::not_found("no such probe")),
        }
    }
}

trellis_sdk::export!(Probe);
