//! Host capabilities offered to guests as `trellis:api` imports, one module
//! per WIT interface. A guest reaches a capability only if it imports the
//! interface, and it may import only what its route grants
//! ([`crate::grants`]).

pub mod config;
pub mod log;
pub mod sql;

use crate::database::Database;
use crate::manifest::Manifest;
use config::RouteConfig;
use std::sync::Arc;

/// Host-wide services behind the capabilities, shared by every route.
pub struct Services {
    /// The pool behind `sql`.
    pub database: Arc<Database>,
}

impl Services {
    /// The services `manifest` configures; nothing connects until used.
    pub fn new(manifest: &Manifest) -> Services {
        Services {
            database: Arc::new(Database::new(manifest)),
        }
    }
}

/// What one guest instance's capability calls need to know about where
/// they come from: carried in its store, dropped with it.
#[derive(Clone)]
pub struct GuestContext {
    /// Host-wide services.
    pub services: Arc<Services>,
    /// The route's name, for logs.
    pub route: Arc<str>,
    /// The component's digest, for logs.
    pub component: Arc<str>,
    /// The request's id; empty for a readiness probe.
    pub request_id: Arc<str>,
    /// The route's variables and secrets.
    pub config: Arc<RouteConfig>,
}
