//! {{name}}: a Trellis route handler. `GET /` answers 200 with JSON built
//! from the capabilities its route grants ({{grants_list}}).

use trellis_sdk::{Error, Handler, Request, Response, Router};
// trellis:if sql
use trellis_sdk::sql;
// trellis:end
// trellis:if log
use trellis_sdk::log;
// trellis:end
// trellis:if config
use trellis_sdk::config;
// trellis:end
// trellis:if cache
use trellis_sdk::raw::cache;
// trellis:end
// trellis:if metrics
use trellis_sdk::raw::metrics;
// trellis:end
// trellis:if rate-limit
use trellis_sdk::raw::rate_limit;
// trellis:end

struct App;

impl Handler for App {
    fn handle(request: Request) -> Result<Response, Error> {
        Router::new().get("/", index).handle(request)
    }
}

fn index(request: Request) -> Result<Response, Error> {
    let mut body = serde_json::json!({ "message": "Hello from {{name}}!" });
    // trellis:if sql
    // Parameters bind as $1, $2, ... on SQLite and PostgreSQL alike.
    let row = sql::query("SELECT 1 + $1 AS answer", &[&41_i64])?
        .into_first()
        .ok_or_else(|| Error::internal("the query returned no row"))?;
    body["answer"] = row.get::<i64>("answer")?.into();
    // trellis:end
    // trellis:if config
    // `config = { greeting = "..." }` on the route sets it.
    body["greeting"] = config::get("greeting")?.into();
    // trellis:end
    // trellis:if cache
    let visits = match cache::get("visits").map_err(internal)? {
        Some(bytes) => String::from_utf8_lossy(&bytes).parse::<u64>().unwrap_or(0) + 1,
        None => 1,
    };
    cache::set("visits", visits.to_string().as_bytes(), 60_000).map_err(internal)?;
    body["visits"] = visits.into();
    // trellis:end
    // trellis:if rate-limit
    // The `per_client` policy is defined in trellis.toml.
    let decision = rate_limit::check("per_client", "anonymous").map_err(internal)?;
    if !decision.allowed {
        return Err(Error::new(429, "RATE_LIMITED", "slow down"));
    }
    body["remaining"] = decision.remaining.into();
    // trellis:end
    // trellis:if metrics
    metrics::counter_add("index_requests", 1, &[]).map_err(internal)?;
    // trellis:end
    // trellis:if log
    log::info("handled", &[("path", &request.path())]);
    // trellis:end
    let _ = &request;
    Ok(Response::json(&body))
}

// trellis:if cache,metrics,rate-limit
/// A 500 whose cause (a raw capability error) goes to the log.
fn internal(error: impl std::fmt::Debug) -> Error {
    Error::internal(format!("{error:?}"))
}

// trellis:end
trellis_sdk::export!(App);
