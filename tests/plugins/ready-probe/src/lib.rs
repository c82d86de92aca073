//! Test plugin: a handler that also exports `trellis:api/health`. Its
//! `ready` answers `ok` when the route's config says `ready = "yes"` and
//! an error naming the value otherwise; `GET /` answers `up`.
#![allow(unsafe_code, reason = "wit-bindgen's generated export glue")]

#[allow(
    missing_docs,
    reason = "generated from wit/health.wit, which carries the docs"
)]
mod wit {
    wit_bindgen::generate!({
        inline: "package test:ready-probe; world probe { export trellis:api/health@0.1.0; }",
        path: "../../../wit",
    });
}

use trellis_sdk::{Error, Handler, Request, Response};

struct Probe;

impl Handler for Probe {
    fn handle(_request: Request) -> Result<Response, Error> {
        Ok(Response::text("up\n"))
    }
}

trellis_sdk::export!(Probe);

impl wit::exports::trellis::api::health::Guest for Probe {
    fn ready() -> Result<(), String> {
        match trellis_sdk::config::get("ready") {
            Ok(Some(value)) if value == "yes" => Ok(()),
            Ok(value) => Err(format!("config ready is {value:?}")),
            Err(err) => Err(format!("config: {err:?}")),
        }
    }
}

wit::export!(Probe with_types_in wit);
