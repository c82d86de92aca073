//! Hot load: validate a component, then swap it into the route table
//! atomically, keeping a short history per route for rollback.
//!
//! Validation (compile or fetch from the cache, link against the host's
//! imports, pre-instantiate, one test instantiation, the readiness check)
//! happens before anything changes, so a failed load leaves the table as
//! it was. The swap itself replaces the whole [`RouteTable`] through an
//! [`ArcSwap`]: requests that already matched keep their `Arc<Route>` and
//! finish on the old version; the next lookup sees the new one.

use crate::app::App;
use crate::app::routes::{Route, RouteTable};
use crate::capabilities::{Capabilities, GuestContext};
use crate::config::manifest::RouteSpec;
use crate::runtime::component::{CacheOutcome, Handler, LoadError};
use crate::runtime::invoke::instantiate_once;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Versions kept per route, current included: how far back rollback goes.
pub const HISTORY: usize = 5;

/// How long validation waits for a free instance slot for its test
/// instantiation when the host is saturated.
const SLOT_WAIT: Duration = Duration::from_secs(10);

/// Applies changes to the live route table.
pub struct Deployments {
    /// The app whose route table changes: its loader compiles uploads,
    /// and test instantiations take an instance slot like any request.
    app: Arc<App>,
    /// Every route's versions, oldest first, the current one last. The
    /// lock also serializes changes: each builds the next table from the
    /// current one, so two at once would lose one. It is never held while
    /// compiling.
    history: Mutex<HashMap<String, History>>,
}

#[derive(Default)]
struct History {
    versions: Vec<Arc<Route>>,
    next_version: u32,
}

/// A component that passed validation, not yet serving.
pub struct Prepared {
    /// The compiled, linked, pre-instantiated component.
    pub handler: Arc<Handler>,
    /// Whether compilation was skipped thanks to the on-disk cache.
    pub cache: CacheOutcome,
    /// Time spent compiling (or loading) and validating.
    pub load_ms: u64,
}

/// The outcome of a deploy.
pub struct Deployed {
    /// The version now serving.
    pub route: Arc<Route>,
    /// Whether the route is new.
    pub created: bool,
    /// Whether compilation was skipped thanks to the on-disk cache.
    pub cache: CacheOutcome,
    /// Time spent compiling (or loading) and validating.
    pub load_ms: u64,
}

/// Why a change was refused; the table is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The component does not compile, link or export the handler.
    #[error("{0}")]
    Load(#[from] LoadError),
    /// The component linked but could not be instantiated under the
    /// route's limits (e.g. its initial memory exceeds `memory`), or its
    /// own readiness check (`trellis:api/health`) failed.
    #[error("test instantiation: {0:#}")]
    Instantiate(wasmtime::Error),
    /// The route's path conflicts with another route's.
    #[error("route table: path {path:?}: {source}")]
    PathConflict {
        /// The path that did not fit.
        path: String,
        /// matchit's explanation.
        source: matchit::InsertError,
    },
    /// No route has this name.
    #[error("no route named {0:?}")]
    NoSuchRoute(String),
    /// Rollback asked of a route with a single version.
    #[error("route {0:?} has no earlier version to roll back to")]
    NoEarlierVersion(String),
    /// Every instance slot stayed busy; the load can be retried.
    #[error("test instantiation: no instance slot freed up within {0:?}")]
    Busy(Duration),
    /// The route grants `sql` and the database cannot be opened.
    #[error("opening the database: {0:#}")]
    Database(anyhow::Error),
    /// The compile task panicked or was cancelled (a host bug).
    #[error("compile task: {0}")]
    Task(tokio::task::JoinError),
    /// The route's `outbound` names an upstream this host did not declare
    /// at start (upstreams are read once; declaring one needs a restart).
    #[error(
        "outbound: no upstream {0:?} in this host's [upstreams] (they are read at start; restart to add one)"
    )]
    UnknownUpstream(String),
}

impl Deployments {
    /// Manages `app`'s routes, whose current versions become the first of
    /// their history.
    pub fn new(app: Arc<App>) -> Deployments {
        let history = app
            .routes
            .load()
            .iter()
            .map(|route| {
                let h = History {
                    versions: vec![route.clone()],
                    next_version: route.version + 1,
                };
                (route.name.to_string(), h)
            })
            .collect();
        Deployments {
            app,
            history: Mutex::new(history),
        }
    }

    /// The app this manages.
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Validates `bytes` for a route with `spec`'s limits, without
    /// changing anything. Compilation runs on the blocking pool, so serving
    /// continues meanwhile.
    pub async fn prepare(&self, spec: &RouteSpec, bytes: Vec<u8>) -> Result<Prepared, DeployError> {
        let started = Instant::now();
        let upstreams = &self.app.services.upstreams;
        if let Some(unknown) = spec
            .outbound
            .iter()
            .flatten()
            .find(|n| upstreams.get(n).is_none())
        {
            return Err(DeployError::UnknownUpstream(unknown.clone()));
        }
        let loader = self.app.loader.clone();
        let (grants, outbound) = (spec.grants.clone(), spec.outbound.clone());
        let (handler, cache) =
            tokio::task::spawn_blocking(move || loader.load(&bytes, &grants, outbound.as_deref()))
                .await
                .map_err(DeployError::Task)??;
        if spec.grants.iter().any(|g| g == "sql") {
            // The first route to use SQL opens the pool: fail the deploy,
            // not its first request, when the database is unreachable.
            self.app
                .services
                .database
                .pool()
                .await
                .map_err(DeployError::Database)?;
        }
        let handler = Arc::new(handler);
        self.test_instantiate(spec, &handler).await?;
        Ok(Prepared {
            handler,
            cache,
            load_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// One instantiation in a fresh store under the route's limits, with
    /// the plugin's readiness check when it exports one, then dropped:
    /// catches what linking cannot, such as a component whose initial
    /// memory exceeds `memory`, a failing start function, or a plugin that
    /// says it cannot serve.
    async fn test_instantiate(
        &self,
        spec: &RouteSpec,
        handler: &Handler,
    ) -> Result<(), DeployError> {
        // Idle kept instances give their slots up first.
        let _slot = match self.app.instance_slot() {
            Some(slot) => slot,
            None => tokio::time::timeout(SLOT_WAIT, self.app.instances.clone().acquire_owned())
                .await
                .map_err(|_| DeployError::Busy(SLOT_WAIT))?
                .map_err(|_| DeployError::Busy(SLOT_WAIT))?,
        };
        let capabilities = Arc::new(Capabilities::new(&self.app.services, spec));
        let guest = GuestContext::probe(
            capabilities,
            spec.name.as_str().into(),
            handler.digest.clone(),
        );
        instantiate_once(self.app.loader.engine(), handler, &spec.limits, guest)
            .await
            .map_err(DeployError::Instantiate)?;
        Ok(())
    }

    /// Validates `bytes`, then serves them on the route `spec` (a new route
    /// or the next version of an existing one).
    pub async fn deploy(&self, spec: RouteSpec, bytes: Vec<u8>) -> Result<Deployed, DeployError> {
        let prepared = self.prepare(&spec, bytes).await?;
        self.install(spec, prepared).await
    }

    /// Swaps a validated component in as the next version of `spec.name`.
    pub async fn install(
        &self,
        spec: RouteSpec,
        prepared: Prepared,
    ) -> Result<Deployed, DeployError> {
        let mut history = self.history.lock().await;
        let current = self.app.routes.load_full();
        let previous = current.get(&spec.name);
        let created = previous.is_none();
        let version = history.get(&spec.name).map_or(1, |h| h.next_version.max(1));
        let route = Arc::new(Route::new(
            spec,
            prepared.handler,
            version,
            previous.map(|p| &**p),
            &self.app.services,
        ));
        self.swap(&current, &route.name, Some(route.clone()))?;
        let entry = history.entry(route.name.to_string()).or_default();
        entry.versions.push(route.clone());
        if entry.versions.len() > HISTORY {
            entry.versions.remove(0);
        }
        entry.next_version = version + 1;
        tracing::info!(
            route = %route.name,
            version,
            digest = %route.handler.digest,
            cache = prepared.cache.as_str(),
            load_ms = prepared.load_ms,
            "route reloaded"
        );
        Ok(Deployed {
            route,
            created,
            cache: prepared.cache,
            load_ms: prepared.load_ms,
        })
    }

    /// Serves the version before the current one of route `name` again
    /// (with its settings); the current version leaves the history.
    pub async fn rollback(&self, name: &str) -> Result<Arc<Route>, DeployError> {
        let mut history = self.history.lock().await;
        let current = self.app.routes.load_full();
        if current.get(name).is_none() {
            return Err(DeployError::NoSuchRoute(name.to_owned()));
        }
        let entry = history
            .get_mut(name)
            .filter(|h| h.versions.len() >= 2)
            .ok_or_else(|| DeployError::NoEarlierVersion(name.to_owned()))?;
        let target = entry.versions[entry.versions.len() - 2].clone();
        self.swap(&current, name, Some(target.clone()))?;
        entry.versions.pop();
        tracing::info!(
            route = %name,
            version = target.version,
            digest = %target.handler.digest,
            "route rolled back"
        );
        Ok(target)
    }

    /// Stops serving route `name` and forgets its history.
    pub async fn remove(&self, name: &str) -> Result<Arc<Route>, DeployError> {
        let mut history = self.history.lock().await;
        let current = self.app.routes.load_full();
        let Some(route) = current.get(name).cloned() else {
            return Err(DeployError::NoSuchRoute(name.to_owned()));
        };
        self.swap(&current, name, None)?;
        history.remove(name);
        tracing::info!(route = %name, version = route.version, "route removed");
        Ok(route)
    }

    /// Every version kept for route `name`, oldest first.
    pub async fn versions(&self, name: &str) -> Vec<Arc<Route>> {
        let history = self.history.lock().await;
        history
            .get(name)
            .map(|h| h.versions.clone())
            .unwrap_or_default()
    }

    /// Publishes `current` with route `name` replaced by `with` (added at
    /// the end if new, removed if `None`). Called with the history lock held.
    fn swap(
        &self,
        current: &RouteTable,
        name: &str,
        with: Option<Arc<Route>>,
    ) -> Result<(), DeployError> {
        let mut replaced = false;
        let mut routes: Vec<Arc<Route>> = Vec::new();
        for route in current.iter() {
            if &*route.name == name {
                replaced = true;
                routes.extend(with.clone());
            } else {
                routes.push(route.clone());
            }
        }
        if !replaced {
            routes.extend(with.clone());
        }
        let mut table = RouteTable::default();
        for route in routes {
            let path = route.spec.path.clone();
            table
                .insert(route)
                .map_err(|source| DeployError::PathConflict { path, source })?;
        }
        self.app.routes.store(Arc::new(table));
        // Kept instances belong to one version: the one swapped out drops
        // its idle ones now and the rest as their requests finish.
        for route in current.iter().filter(|r| &*r.name == name) {
            if with.as_ref().is_none_or(|w| !Arc::ptr_eq(w, route)) {
                route.retire();
            }
        }
        if let Some(route) = &with {
            route.reinstate();
        }
        Ok(())
    }
}
