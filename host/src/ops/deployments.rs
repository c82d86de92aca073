//! Hot load: validate a component, then swap it into the route table
//! atomically, keeping a short history per route for rollback.
//!
//! Validation (compile or fetch from the cache, link against the host's
//! imports, pre-instantiate, one test instantiation, the readiness check)
//! happens before anything changes, so a failed load leaves the table as
//! it was. The swap itself replaces the whole [`RouteTable`] through an
//! [`ArcSwap`]: requests that already matched keep their `Arc<Route>` and
//! finish on the old version; the next lookup sees the new one.
//!
//! With `[deployments] shared` ([`crate::ops::fleet`]) a change is first
//! recorded in the database, which gives its version number, and every
//! host (this one included) then applies the store's state through
//! [`Deployments::apply`]; each route remembers the store generation it
//! last applied, so changes arriving twice or out of order are ignored.

use crate::app::routes::{Route, RouteTable};
use crate::app::{App, WorkerVersion};
use crate::capabilities::{Capabilities, GuestContext};
use crate::config::manifest::{KeySource, RouteSpec};
use crate::config::reference::Reference;
use crate::ops::fleet::Fleet;
use crate::ops::fleet::store::{Change, RouteState, StoreError};
use crate::runtime::component::{CacheOutcome, Handler, LoadError};
use crate::runtime::invoke::instantiate_once;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Mutex;

/// Versions kept per route, current included: how far back rollback goes.
pub const HISTORY: usize = 5;

/// The stored setting (shared deployments) holding the registry reference
/// a version was pulled from, pinned to its digest; only shown, never
/// pulled again (the store keeps the component itself).
pub const SOURCE_SETTING: &str = "component";

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
    /// The deployment store every host shares, with `[deployments]
    /// shared`; changes go through it first.
    fleet: Option<Arc<Fleet>>,
}

#[derive(Default)]
struct History {
    versions: Vec<Arc<Route>>,
    next_version: u32,
    /// The store generation of the route this host last applied; 0 for a
    /// route only the manifest defines.
    generation: i64,
}

/// One entry of a route's history, as the admin API shows it.
pub struct VersionInfo {
    /// Version number.
    pub version: u32,
    /// SHA-256 of its component.
    pub digest: String,
    /// When it was loaded here, or (shared) deployed.
    pub at: SystemTime,
    /// The host that deployed it (shared deployments).
    pub by: Option<String>,
    /// The registry reference it was pulled from, pinned to its digest.
    pub source: Option<String>,
}

/// A component that passed validation, not yet serving.
pub struct Prepared {
    /// The compiled, linked, pre-instantiated component.
    pub handler: Arc<Handler>,
    /// Whether compilation was skipped thanks to the on-disk cache.
    pub cache: CacheOutcome,
    /// Time spent compiling (or loading) and validating.
    pub load_ms: u64,
    /// The registry reference the component came from, pinned to the
    /// manifest digest its tag resolved to.
    pub source: Option<Arc<Reference>>,
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
    /// No `[[worker]]` has this name.
    #[error("no worker named {0:?}")]
    NoSuchWorker(String),
    /// Rollback asked of a route with a single version.
    #[error("route {0:?} has no earlier version to roll back to")]
    NoEarlierVersion(String),
    /// Every instance slot stayed busy; the load can be retried.
    #[error("test instantiation: no instance slot freed up within {0:?}")]
    Busy(Duration),
    /// The route grants `sql` and the database cannot be opened.
    #[error("opening the database: {0:#}")]
    Database(anyhow::Error),
    /// The deployment store refused the change or could not be reached;
    /// nothing changed on any host.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The change is recorded in the store (every other host follows it),
    /// but this host could not load the version.
    #[error("recorded in the deployment store, but this host could not load it: {0}")]
    NotLoadedHere(String),
    /// A stored version's settings do not validate on this host.
    #[error("stored settings: {0}")]
    Settings(String),
    /// The compile task panicked or was cancelled (a host bug).
    #[error("compile task: {0}")]
    Task(tokio::task::JoinError),
    /// The component could not be pulled from its registry (down, a
    /// digest that does not match, a missing tag, refused credentials).
    #[error("pulling the component: {0}")]
    Registry(#[from] crate::services::registry::RegistryError),
    /// The route's `outbound` names an upstream this host did not declare
    /// at start (upstreams are read once; declaring one needs a restart).
    #[error(
        "outbound: no upstream {0:?} in this host's [upstreams] (they are read at start; restart to add one)"
    )]
    UnknownUpstream(String),
    /// The route's edge settings do not fit this host's policies (one it
    /// lacks, scopes on an api-key policy, a subject count without auth).
    #[error("{0}")]
    Policy(String),
}

impl Deployments {
    /// Manages `app`'s routes, whose current versions become the first of
    /// their history.
    pub fn new(app: Arc<App>) -> Deployments {
        Deployments::with_fleet(app, None)
    }

    /// Manages `app`'s routes through the deployment store `fleet` shares
    /// with the other hosts, when there is one.
    pub fn with_fleet(app: Arc<App>, fleet: Option<Arc<Fleet>>) -> Deployments {
        let history = app
            .routes
            .load()
            .iter()
            .map(|route| {
                let h = History {
                    versions: vec![route.clone()],
                    next_version: route.version + 1,
                    generation: 0,
                };
                (route.name.to_string(), h)
            })
            .collect();
        Deployments {
            app,
            history: Mutex::new(history),
            fleet,
        }
    }

    /// The deployment store, with `[deployments] shared`.
    pub fn fleet(&self) -> Option<&Arc<Fleet>> {
        self.fleet.as_ref()
    }

    /// The store generation this host applied for route `name` (0: the
    /// manifest's, or none).
    pub async fn generation(&self, name: &str) -> i64 {
        self.history
            .lock()
            .await
            .get(name)
            .map_or(0, |h| h.generation)
    }

    /// The app this manages.
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Validates `bytes` for a route with `spec`'s limits, without
    /// changing anything. Compilation runs on the blocking pool, so serving
    /// continues meanwhile.
    pub async fn prepare(&self, spec: &RouteSpec, bytes: Bytes) -> Result<Prepared, DeployError> {
        let started = Instant::now();
        self.check_names(spec)?;
        let loader = self.app.loader.clone();
        let (grants, outbound) = (spec.grants.clone(), spec.outbound.clone());
        let (handler, cache) =
            tokio::task::spawn_blocking(move || loader.load(&bytes, &grants, outbound.as_deref()))
                .await
                .map_err(DeployError::Task)??;
        self.validate(spec, handler, cache, started).await
    }

    /// Like [`Deployments::prepare`] for the stored component `digest`:
    /// from the precompiled cache when it is there, else fetched from the
    /// store (and checked against its digest) and compiled.
    async fn prepare_stored(
        &self,
        fleet: &Fleet,
        spec: &RouteSpec,
        digest: &str,
    ) -> Result<Prepared, DeployError> {
        let started = Instant::now();
        self.check_names(spec)?;
        let loader = self.app.loader.clone();
        let (grants, outbound) = (spec.grants.clone(), spec.outbound.clone());
        let wanted = digest.to_owned();
        let cached = tokio::task::spawn_blocking(move || {
            loader.load_precompiled(&wanted, &grants, outbound.as_deref())
        })
        .await
        .map_err(DeployError::Task)?;
        match cached {
            Some(handler) => {
                self.validate(spec, handler?, CacheOutcome::Hit, started)
                    .await
            }
            None => {
                let bytes = fleet.store().component(digest).await?;
                self.prepare(spec, Bytes::from(bytes)).await
            }
        }
    }

    /// Refuses a route that names an upstream or a policy this host lacks,
    /// with the manifest's rules for how they combine.
    pub fn check_names(&self, spec: &RouteSpec) -> Result<(), DeployError> {
        let services = &self.app.services;
        if let Some(unknown) = spec
            .outbound
            .iter()
            .flatten()
            .find(|n| services.upstreams.get(n).is_none())
        {
            return Err(DeployError::UnknownUpstream(unknown.clone()));
        }
        let refuse =
            |field: &str, message: String| Err(DeployError::Policy(format!("{field}: {message}")));
        let subject = match spec.rate_limit.as_deref() {
            None => false,
            Some(policy) => match services.rate_limiter.key_source(policy) {
                None => {
                    return refuse(
                        "rate_limit",
                        format!("no policy {policy:?} in this host's [rate_limits]"),
                    );
                }
                Some(source) => source == KeySource::Subject,
            },
        };
        let auth = match spec.auth.as_deref() {
            None => None,
            Some(policy) => match services.auth.policy(policy) {
                None => {
                    return refuse(
                        "auth",
                        format!("no policy {policy:?} in this host's [auth]"),
                    );
                }
                Some(policy) => Some(policy),
            },
        };
        if !spec.scopes.is_empty() && !auth.as_ref().is_some_and(|p| p.is_bearer()) {
            return refuse("scopes", "scopes need `auth` naming a jwt policy".into());
        }
        if auth.is_none() && spec.grants.iter().any(|g| g == "identity") {
            return refuse(
                "grants",
                "\"identity\" needs `auth` on the route: without it there is no caller".into(),
            );
        }
        if auth.is_none() && subject {
            return refuse(
                "rate_limit",
                "the policy counts by subject, which needs `auth` on the route".into(),
            );
        }
        Ok(())
    }

    /// The checks after linking: the database for `sql`, and one test
    /// instantiation.
    async fn validate(
        &self,
        spec: &RouteSpec,
        handler: Handler,
        cache: CacheOutcome,
        started: Instant,
    ) -> Result<Prepared, DeployError> {
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
            source: None,
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
        let _slot = self
            .app
            .budget
            .slot_within(Some(SLOT_WAIT))
            .await
            .ok_or(DeployError::Busy(SLOT_WAIT))?;
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
    /// or the next version of an existing one). With shared deployments the
    /// version is recorded in the store first, which every host then loads;
    /// a store that cannot be reached fails the deploy and changes nothing.
    /// `source`: the registry reference the bytes were pulled from, pinned.
    pub async fn deploy(
        &self,
        spec: RouteSpec,
        bytes: Bytes,
        source: Option<Reference>,
    ) -> Result<Deployed, DeployError> {
        let mut prepared = self.prepare(&spec, bytes.clone()).await?;
        prepared.source = source.map(Arc::new);
        let Some(fleet) = &self.fleet else {
            return self.install(spec, prepared, None).await;
        };
        let pinned = prepared.source.as_ref().map(|r| r.to_string());
        let (version, generation) = fleet
            .record_deploy(
                self,
                &spec,
                &bytes,
                &prepared.handler.digest,
                pinned.as_deref(),
            )
            .await?;
        let version = u32::try_from(version).unwrap_or(u32::MAX);
        let deployed = self
            .install(spec, prepared, Some((version, generation)))
            .await?;
        fleet.applied(self, &deployed.route.name).await;
        Ok(deployed)
    }

    /// Validates `bytes` and serves them on this host only, whatever the
    /// store says (watch mode: the manifest's files). A route the store
    /// manages is left alone: the store wins over the manifest.
    pub async fn deploy_local(
        &self,
        spec: RouteSpec,
        bytes: Bytes,
    ) -> Result<Option<Deployed>, DeployError> {
        if self.generation(&spec.name).await > 0 {
            tracing::warn!(route = %spec.name, "not reloading from the manifest: the route is deployed through the shared store, which wins");
            return Ok(None);
        }
        let prepared = self.prepare(&spec, bytes).await?;
        self.install(spec, prepared, None).await.map(Some)
    }

    /// Swaps a validated component in as the next version of `spec.name`,
    /// or, with `stored` (version, generation) from the deployment store,
    /// as that version unless this host applied that change or a later one
    /// already (then nothing changes and the answer describes the version
    /// without serving it).
    pub async fn install(
        &self,
        spec: RouteSpec,
        prepared: Prepared,
        stored: Option<(u32, i64)>,
    ) -> Result<Deployed, DeployError> {
        let mut history = self.history.lock().await;
        let current = self.app.routes.load_full();
        let previous = current.get(&spec.name);
        let created = previous.is_none();
        let applied = history.get(&spec.name).map_or(0, |h| h.generation);
        let version = match stored {
            Some((version, _)) => version,
            None => history.get(&spec.name).map_or(1, |h| h.next_version.max(1)),
        };
        let mut route = Route::new(
            spec,
            prepared.handler,
            version,
            previous.map(|p| &**p),
            &self.app.services,
            &self.app.budget,
        );
        route.set_source(prepared.source, &self.app.services);
        let route = Arc::new(route);
        let superseded = stored.is_some_and(|(_, generation)| generation <= applied);
        if !superseded {
            self.swap(&current, &route.name, Some(route.clone()))?;
            let entry = history.entry(route.name.to_string()).or_default();
            entry.versions.push(route.clone());
            if entry.versions.len() > HISTORY {
                entry.versions.remove(0);
            }
            entry.next_version = entry.next_version.max(version + 1);
            if let Some((_, generation)) = stored {
                entry.generation = generation;
            }
            tracing::info!(
                route = %route.name,
                version,
                digest = %route.handler.digest,
                cache = prepared.cache.as_str(),
                load_ms = prepared.load_ms,
                "route reloaded"
            );
            drop((history, current));
            self.prune_cache();
        }
        Ok(Deployed {
            route,
            created,
            cache: prepared.cache,
            load_ms: prepared.load_ms,
        })
    }

    /// Brings route `state.name` on this host to what the deployment store
    /// says, unless this host applied that change (or a later one) already:
    /// a version it still holds is swapped back in at once; another is
    /// loaded by digest (precompiled cache, else the store), validated like
    /// an upload, then swapped. On failure the route keeps serving what it
    /// served. Returns the version now serving, if it changed.
    pub async fn apply(
        &self,
        fleet: &Fleet,
        state: &RouteState,
    ) -> Result<Option<Arc<Route>>, DeployError> {
        let name = state.name.as_str();
        if self.generation(name).await >= state.generation {
            return Ok(None);
        }
        let Some(wanted) = &state.current else {
            let mut history = self.history.lock().await;
            let entry = history.entry(name.to_owned()).or_default();
            if entry.generation >= state.generation {
                return Ok(None);
            }
            let current = self.app.routes.load_full();
            if let Some(route) = current.get(name) {
                tracing::info!(route = %name, version = route.version, "route removed");
                self.swap(&current, name, None)?;
            }
            entry.versions.clear();
            entry.generation = state.generation;
            drop((history, current));
            self.prune_cache();
            return Ok(None);
        };
        let version = u32::try_from(wanted.version).unwrap_or(u32::MAX);
        {
            let mut history = self.history.lock().await;
            let entry = history.entry(name.to_owned()).or_default();
            if entry.generation >= state.generation {
                return Ok(None);
            }
            let kept = entry
                .versions
                .iter()
                .position(|r| r.version == version && *r.handler.digest == wanted.digest);
            if let Some(at) = kept {
                let route = entry.versions[at].clone();
                let current = self.app.routes.load_full();
                let serving = current.get(name).is_some_and(|r| Arc::ptr_eq(r, &route));
                if !serving {
                    self.swap(&current, name, Some(route.clone()))?;
                    tracing::info!(route = %name, version, digest = %route.handler.digest, "route rolled back");
                }
                // Versions after it were rolled back from.
                entry.versions.truncate(at + 1);
                entry.generation = state.generation;
                drop(history);
                self.prune_cache();
                return Ok((!serving).then_some(route));
            }
        }
        let spec = fleet
            .spec_for(name, &wanted.settings, self.app.services.cors.as_ref())
            .map_err(DeployError::Settings)?;
        let mut prepared = self.prepare_stored(fleet, &spec, &wanted.digest).await?;
        prepared.source = wanted
            .settings
            .get(SOURCE_SETTING)
            .and_then(|s| Reference::parse(s).ok())
            .map(Arc::new);
        let deployed = self
            .install(spec, prepared, Some((version, state.generation)))
            .await?;
        Ok(Some(deployed.route))
    }

    /// Serves the version before the current one of route `name` again
    /// (with its settings); the current version leaves the history. With
    /// shared deployments, on every host.
    pub async fn rollback(&self, name: &str) -> Result<Arc<Route>, DeployError> {
        if let Some(fleet) = &self.fleet {
            let served_here = self.app.routes.load().get(name).is_some();
            let state = match fleet.store().rollback(name).await {
                Err(StoreError::NoSuchRoute(_)) if served_here => {
                    return Err(DeployError::NoEarlierVersion(name.to_owned()));
                }
                other => other?,
            };
            // Committed: every host follows, this one through the same
            // path as the others, so a failure here is reported alike.
            let failure = fleet.sync(self, name).await;
            fleet.changed();
            let serving = self.app.routes.load().get(name).cloned();
            let wanted = state
                .current
                .as_ref()
                .map(|v| (v.version, v.digest.as_str()));
            return match serving {
                Some(route)
                    if wanted == Some((i64::from(route.version), &*route.handler.digest)) =>
                {
                    Ok(route)
                }
                _ => Err(DeployError::NotLoadedHere(
                    failure.unwrap_or_else(|| "a later change replaced it".to_owned()),
                )),
            };
        }
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
        drop((history, current));
        self.prune_cache();
        Ok(target)
    }

    /// Validates `bytes` as worker `name`'s next component (compiled,
    /// linked against its grants, instantiated once under its limits) and
    /// swaps it in: jobs that start from now on run on it, and those in
    /// progress finish on the version they started on. The worker's
    /// settings stay its manifest entry's. Per host: shared deployments
    /// carry routes only.
    pub async fn deploy_worker(
        &self,
        name: &str,
        bytes: Bytes,
    ) -> Result<Arc<WorkerVersion>, DeployError> {
        let worker = self
            .app
            .workers
            .iter()
            .find(|w| w.name == name)
            .ok_or_else(|| DeployError::NoSuchWorker(name.to_owned()))?;
        let current = worker.current();
        let loader = self.app.loader.clone();
        let (grants, outbound) = (current.spec.grants.clone(), current.spec.outbound.clone());
        let (component, cache) = tokio::task::spawn_blocking(move || {
            loader.load_worker(&bytes, &grants, outbound.as_deref())
        })
        .await
        .map_err(DeployError::Task)??;
        let mut next = WorkerVersion {
            spec: current.spec.clone(),
            component: Arc::new(component),
            capabilities: current.capabilities.clone(),
            version: 0,
            loaded_at: SystemTime::now(),
        };
        crate::jobs::worker::instantiate_once(&self.app, &next)
            .await
            .map_err(DeployError::Instantiate)?;
        // Changes take turns, so versions are numbered in swap order.
        let turn = self.history.lock().await;
        next.version = worker.current().version + 1;
        let next = Arc::new(next);
        let previous = worker.swap(next.clone());
        tracing::info!(
            worker = %name,
            version = next.version,
            digest = %next.component.digest,
            previous = %previous.component.digest,
            cache = cache.as_str(),
            "worker component swapped; jobs in progress finish on the previous one"
        );
        drop((turn, previous));
        self.prune_cache();
        Ok(next)
    }

    /// Stops serving route `name` and forgets its history; with shared
    /// deployments, on every host.
    pub async fn remove(&self, name: &str) -> Result<Arc<Route>, DeployError> {
        let served = self.app.routes.load().get(name).cloned();
        if let Some(fleet) = &self.fleet {
            let generation = fleet.store().delete(name, served.is_some()).await?;
            let state = RouteState {
                name: name.to_owned(),
                generation,
                current: None,
            };
            self.apply(fleet, &state).await?;
            fleet.applied(self, name).await;
            return served.ok_or_else(|| DeployError::NoSuchRoute(name.to_owned()));
        }
        self.remove_local(name).await
    }

    /// Stops serving route `name` on this host only (watch mode).
    pub async fn remove_local(&self, name: &str) -> Result<Arc<Route>, DeployError> {
        let mut history = self.history.lock().await;
        let current = self.app.routes.load_full();
        let Some(route) = current.get(name).cloned() else {
            return Err(DeployError::NoSuchRoute(name.to_owned()));
        };
        if history.get(name).is_some_and(|h| h.generation > 0) {
            tracing::warn!(route = %name, "not removing: the route is deployed through the shared store, which wins over the manifest");
            return Ok(route);
        }
        self.swap(&current, name, None)?;
        history.remove(name);
        tracing::info!(route = %name, version = route.version, "route removed");
        drop((history, current));
        self.prune_cache();
        Ok(route)
    }

    /// Every version kept for route `name`, oldest first, and with shared
    /// deployments its last changes across the fleet (from the store, or
    /// this host's own record when the store cannot be read).
    pub async fn versions(&self, name: &str) -> (Vec<VersionInfo>, Option<Vec<Change>>) {
        if let Some(fleet) = &self.fleet
            && self.generation(name).await > 0
        {
            match fleet.store().history(name, 50).await {
                Ok((versions, changes)) => {
                    let versions = versions
                        .into_iter()
                        .map(|v| VersionInfo {
                            version: u32::try_from(v.version).unwrap_or(u32::MAX),
                            digest: v.digest,
                            at: SystemTime::UNIX_EPOCH
                                + Duration::from_millis(u64::try_from(v.deployed_ms).unwrap_or(0)),
                            by: Some(v.deployed_by),
                            source: v.settings.get(SOURCE_SETTING).cloned(),
                        })
                        .collect();
                    return (versions, Some(changes));
                }
                Err(err) => {
                    tracing::warn!(route = %name, cause = %err, "reading the route's history from the store; showing this host's");
                }
            }
        }
        let history = self.history.lock().await;
        let versions = history
            .get(name)
            .map(|h| {
                h.versions
                    .iter()
                    .map(|r| VersionInfo {
                        version: r.version,
                        digest: r.handler.digest.to_string(),
                        at: r.loaded_at,
                        by: None,
                        source: r.source.as_ref().map(|s| s.to_string()),
                    })
                    .collect()
            })
            .unwrap_or_default();
        (versions, None)
    }

    /// Prunes the cache directory on the blocking pool, now that a change
    /// may have released entries (a version that left every history, a
    /// removed route, a swapped-out worker). Call without the history
    /// lock, once the versions the change dropped are dropped here.
    fn prune_cache(&self) {
        self.app.services.disk_cache.prune_soon();
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
