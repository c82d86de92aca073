//! Test plugin: `trellis:api/metrics` under the control of the test.
//!
//! - `GET /count?name=N&value=V&label=k:v` → `counter-add`
//! - `GET /observe?name=N&value=V&label=k:v` → `histogram-observe`
//!
//! Each answers `{"ok":true}` or `{"err":"<variant>: <detail>"}`.

use serde_json::json;
use trellis_sdk::raw::metrics;
use trellis_sdk::{Error, Handler, Request, Response, Router};

struct Probe;

impl Handler for Probe {
    fn handle(request: Request) -> Result<Response, Error> {
        Router::new()
            .get("/count", count)
            .get("/observe", observe)
            .handle(request)
    }
}

trellis_sdk::export!(Probe);

fn labels(request: &Request) -> Vec<(String, String)> {
    request
        .query_pairs()
        .into_iter()
        .filter(|(k, _)| k == "label")
        .filter_map(|(_, v)| v.split_once(':').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

fn answer(result: Result<(), metrics::Error>) -> Response {
    match result {
        Ok(()) => Response::json(&json!({ "ok": true })),
        Err(e) => Response::json(&json!({ "err": format!("{e:?}") })),
    }
}

fn name(request: &Request) -> Result<String, Error> {
    request
        .query("name")
        .ok_or_else(|| Error::validation("name is required"))
}

fn count(request: Request) -> Result<Response, Error> {
    let value: u64 = request.query_as("value")?.unwrap_or(1);
    Ok(answer(metrics::counter_add(
        &name(&request)?,
        value,
        &labels(&request),
    )))
}

fn observe(request: Request) -> Result<Response, Error> {
    let value: f64 = request.query_as("value")?.unwrap_or(0.0);
    Ok(answer(metrics::histogram_observe(
        &name(&request)?,
        value,
        &labels(&request),
    )))
}
