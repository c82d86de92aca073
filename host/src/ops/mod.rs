//! What operators drive: the admin API, hot load and rollback
//! (deployments), watch mode, the health, metrics and OpenAPI endpoints, and the
//! client the `trellis deploy` / `trellis rollback` commands use, and
//! `trellis keys`.
//!
//! The top layer: may call every other one; nothing below calls it.

pub mod admin;
pub mod client;
pub mod deployments;
pub mod endpoints;
pub mod health;
pub mod keys;
pub mod openapi;
pub mod watch;

use crate::app::App;

/// What `trellis check` prints: each route and the component it loaded.
pub fn report_check(app: &App, origin: &str) {
    let routes = app.routes.load();
    for route in routes.iter() {
        let label = route.label.to_str().unwrap_or_default();
        println!("ok  {} -> {label}", route.name);
    }
    println!("{origin}: {} route(s) valid", routes.iter().count());
}
