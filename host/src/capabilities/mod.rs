//! Host capabilities offered to guests as `trellis:api` imports, one module
//! per WIT interface. A guest reaches a capability only if it imports the
//! interface, and it may import only what its route grants
//! ([`crate::grants`]).

pub mod config;
pub mod log;
pub mod sql;

use crate::database::Database;
use crate::manifest::Manifest;
use crate::redis::Redis;
use config::RouteConfig;
use std::sync::Arc;
use std::time::Duration;

/// Host-wide services behind the capabilities, shared by every route.
pub struct Services {
    /// The pool behind `sql`.
    pub database: Arc<Database>,
    /// The shared Redis, when configured.
    pub redis: Option<Arc<Redis>>,
}

impl Services {
    /// The services `manifest` configures. The database connects on first
    /// use; Redis connects in the background (call within the runtime).
    pub fn new(manifest: &Manifest) -> anyhow::Result<Services> {
        let redis = match (std::env::var(crate::redis::URL_ENV), &manifest.redis) {
            (Ok(url), settings) if !url.is_empty() => {
                let timeout = settings
                    .as_ref()
                    .map_or(Duration::from_millis(250), |r| r.timeout.0);
                Some(Redis::start(&url, timeout)?)
            }
            (_, Some(settings)) => Some(Redis::start(settings.url.get_ref(), settings.timeout.0)?),
            (_, None) => None,
        };
        Ok(Services {
            database: Arc::new(Database::new(manifest)),
            redis,
        })
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
