//! What operators drive: the admin API, hot load and rollback
//! (deployments), deployments shared by a fleet, watch mode, the health,
//! metrics and OpenAPI endpoints, the client the `trellis deploy` /
//! `trellis rollback` commands use, `trellis push` and `trellis keys`.
//!
//! The top layer: may call every other one; nothing below calls it.

pub mod admin;
pub mod client;
pub mod deployments;
pub mod endpoints;
pub mod fleet;
pub mod health;
pub mod keys;
pub mod openapi;
pub mod push;
pub mod route_settings;
pub mod watch;

use crate::app::App;
use crate::capabilities::GuestContext;
use crate::runtime::invoke::instantiate_fresh;

/// `trellis check` after the manifest and every component loaded: each
/// route's component instantiated once under the route's limits, as a hot
/// load does (without the readiness check, which may need the database),
/// so a component too big for its `memory` fails here rather than on
/// every request once served. Prints a line per route.
pub async fn report_check(app: &App, origin: &str) -> anyhow::Result<()> {
    let routes = app.routes.load();
    let mut failed = Vec::new();
    for route in routes.iter() {
        let label = route.label.to_str().unwrap_or_default();
        let guest = GuestContext::probe(
            route.capabilities.clone(),
            route.name.clone(),
            route.handler.digest.clone(),
        );
        let engine = app.loader.engine();
        match instantiate_fresh(engine, &route.handler, &route.spec.limits, guest).await {
            Ok(_) => println!("ok  {} -> {label}", route.name),
            Err(err) => {
                println!(
                    "FAIL {} -> {label}: instantiating under the route's limits: {err:#}",
                    route.name
                );
                failed.push(route.name.to_string());
            }
        }
    }
    let count = routes.iter().count();
    if !failed.is_empty() {
        anyhow::bail!(
            "{origin}: route(s) {} cannot be instantiated under their limits (of {count})",
            failed.join(", ")
        );
    }
    println!("{origin}: {count} route(s) valid");
    Ok(())
}
