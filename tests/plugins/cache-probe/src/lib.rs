//! Test plugin: the `cache` capability under the control of the test, and
//! responses whose body changes on every call, for the response cache.
//!
//! - `GET /cache/get?key=K` → `{"value": "..."|null}`
//! - `POST /cache/set?key=K&ttl_ms=N` (body: the value) → `{"ok": true}`
//! - `DELETE /cache/del?key=K` → `{"deleted": bool}`
//! - `GET /cache/fill?key=K&wait_ms=W&compute_ms=C&value=V` → get-or-fill;
//!   on a miss it "computes" for C ms, stores V and answers
//!   `{"computed": true, "value": V}`; on a hit `{"computed": false, ..}`.
//! - `GET /cache/fill-drop?key=K&compute_ms=C` → takes the fill and drops
//!   it unused after C ms (a failed computation).
//! - `/other/cache/get` and `/other/cache/set`: the same, for a second
//!   route in the tests.
//! - `GET /now[?private|nostore]` → a body with a fresh value each call
//!   (`Cache-Control: private`/`no-store` when asked).

use serde_json::json;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use trellis_sdk::raw::cache;
use trellis_sdk::{Error, Handler, Request, Response, Router};

struct Probe;

impl Handler for Probe {
    fn handle(request: Request) -> Result<Response, Error> {
        Router::new()
            .get("/cache/get", get)
            .post("/cache/set", set)
            .delete("/cache/del", del)
            .get("/cache/fill", fill)
            .get("/cache/fill-drop", fill_drop)
            .get("/now", now)
            // The same operations under a second route, for namespace tests.
            .get("/other/cache/get", get)
            .post("/other/cache/set", set)
            .handle(request)
    }
}

trellis_sdk::export!(Probe);

fn key(request: &Request) -> Result<String, Error> {
    request
        .query("key")
        .ok_or_else(|| Error::validation("key is required"))
}

fn cache_error(err: cache::Error) -> Error {
    Error::validation(format!("cache: {err:?}"))
}

fn get(request: Request) -> Result<Response, Error> {
    let value = cache::get(&key(&request)?).map_err(cache_error)?;
    let value = value.map(|v| String::from_utf8_lossy(&v).into_owned());
    Ok(Response::json(&json!({ "value": value })))
}

fn set(request: Request) -> Result<Response, Error> {
    let ttl: u64 = request.query_as("ttl_ms")?.unwrap_or(60_000);
    cache::set(&key(&request)?, request.body()?, ttl).map_err(cache_error)?;
    Ok(Response::json(&json!({ "ok": true })))
}

fn del(request: Request) -> Result<Response, Error> {
    let deleted = cache::delete(&key(&request)?).map_err(cache_error)?;
    Ok(Response::json(&json!({ "deleted": deleted })))
}

fn fill(request: Request) -> Result<Response, Error> {
    let wait: u32 = request.query_as("wait_ms")?.unwrap_or(5_000);
    let compute: u64 = request.query_as("compute_ms")?.unwrap_or(0);
    let value = request.query("value").unwrap_or_default();
    match cache::get_or_fill(&key(&request)?, wait).map_err(cache_error)? {
        cache::Lookup::Hit(v) => Ok(Response::json(
            &json!({ "computed": false, "value": String::from_utf8_lossy(&v) }),
        )),
        cache::Lookup::Miss(fill) => {
            std::thread::sleep(Duration::from_millis(compute));
            fill.set(value.as_bytes(), 60_000).map_err(cache_error)?;
            Ok(Response::json(&json!({ "computed": true, "value": value })))
        }
    }
}

fn fill_drop(request: Request) -> Result<Response, Error> {
    let compute: u64 = request.query_as("compute_ms")?.unwrap_or(0);
    match cache::get_or_fill(&key(&request)?, 5_000).map_err(cache_error)? {
        cache::Lookup::Hit(_) => Ok(Response::json(&json!({ "dropped": false }))),
        cache::Lookup::Miss(fill) => {
            std::thread::sleep(Duration::from_millis(compute));
            drop(fill);
            Ok(Response::json(&json!({ "dropped": true })))
        }
    }
}

fn now(request: Request) -> Result<Response, Error> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let mut response = Response::text(format!("{nanos}\n"));
    if request.query("private").is_some() {
        response = response.with_header("cache-control", "private");
    } else if request.query("nostore").is_some() {
        response = response.with_header("cache-control", "no-store");
    }
    Ok(response)
}
