//! The quotes gateway of `examples/quotes`: `GET` (on its route's path,
//! `/quote` in the example) asks a quote
//! service for today's quote and answers `{"quote": ..., "source": ...}`.
//!
//! The service's URL comes from the route's `config` (`quotes_url`); the
//! call goes through the route's declared upstream, so the host's pool,
//! timeout, retries and circuit breaker apply. When the service is down or
//! its breaker is open, the client gets 503 `UPSTREAM_UNAVAILABLE` with
//! `Retry-After`, and the cause goes to the log.

use trellis_sdk::{Error, Handler, Request, Response, Router, config, http, log};

struct Quotes;

impl Handler for Quotes {
    fn handle(request: Request) -> Result<Response, Error> {
        // Whatever path its route gives it: the manifest decides where the
        // gateway lives.
        Router::new().get("/{*path}", quote).handle(request)
    }
}

fn quote(_request: Request) -> Result<Response, Error> {
    let url = config::require("quotes_url")?;
    let answer = http::get(&url)?;
    if !answer.ok() {
        log::warn(
            "the quote service answered an error",
            &[("status", &answer.status.to_string())],
        );
        return Err(Error::new(
            502,
            "UPSTREAM_FAILED",
            "the quote service answered an error",
        ));
    }
    let quote = answer.text()?.trim();
    Ok(Response::json(&serde_json::json!({
        "quote": quote,
        "source": url,
    })))
}

trellis_sdk::export!(Quotes);
