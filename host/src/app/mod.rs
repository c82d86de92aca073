//! Application state shared by every request: the engine, the loaded
//! routes and the process-wide limits.

pub mod routes;

use crate::app::routes::{Route, RouteTable};
use crate::capabilities::{Capabilities, Services};
use crate::config::manifest::{Manifest, ScheduleEntry, Server, WorkerSpec, line_of};
use crate::config::quickstart;
use crate::config::reference::Reference;
use crate::config::{Config, ManifestSource};
use crate::observability::metrics::Metrics;
use crate::runtime::budget::Budget;
use crate::runtime::component::{Handler, Loader, WorkerComponent};
use crate::runtime::engine::{EpochTicker, new_engine};
use crate::runtime::linker::new_linker;
use anyhow::Context as _;
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

/// Everything a request handler needs, built once at startup.
pub struct App {
    /// The engine all components are compiled for.
    pub engine: wasmtime::Engine,
    /// Routes by path. Swapped whole on hot load: a request loads it once
    /// and keeps the `Arc<Route>` it matched until it finishes.
    pub routes: ArcSwap<RouteTable>,
    /// Compiles, links and pre-instantiates components, at startup and
    /// on hot load.
    pub loader: Arc<Loader>,
    /// Process-wide settings from `[server]`.
    pub server: Server,
    /// Live instances across all routes (`[server].max_instances`).
    pub budget: Arc<Budget>,
    /// Set once shutdown begins; readiness then answers 503.
    pub draining: AtomicBool,
    /// What `GET /metrics` reports.
    pub metrics: Arc<Metrics>,
    /// The services behind the capabilities (database, ...).
    pub services: Arc<Services>,
    /// The `[[worker]]`s ([`crate::jobs`] runs them), whose components
    /// hot load swaps.
    pub workers: Vec<Arc<Worker>>,
    /// The `[[schedule]]`s.
    pub schedules: Vec<ScheduleEntry>,
    _ticker: EpochTicker,
}

/// A `[[worker]]` ready to run: its settings, component and capability
/// contexts. A job runs on the version it was claimed under until it is
/// settled, whatever hot load swaps in meanwhile.
pub struct WorkerVersion {
    /// Its validated settings.
    pub spec: WorkerSpec,
    /// The compiled component.
    pub component: Arc<WorkerComponent>,
    /// What its jobs' capability calls reach.
    pub capabilities: Arc<Capabilities>,
    /// 1 for the manifest's component, one more per hot load.
    pub version: u32,
    /// When it was loaded.
    pub loaded_at: std::time::SystemTime,
}

/// One `[[worker]]` for the host's life; its component is swapped whole
/// on hot load (the settings stay the manifest's).
pub struct Worker {
    /// The worker's name (`[[worker]].name`).
    pub name: String,
    current: ArcSwap<WorkerVersion>,
}

impl Worker {
    fn new(version: WorkerVersion) -> Worker {
        Worker {
            name: version.spec.name.clone(),
            current: ArcSwap::from_pointee(version),
        }
    }

    /// The version new jobs run on.
    pub fn current(&self) -> Arc<WorkerVersion> {
        self.current.load_full()
    }

    /// Makes `version` the one new jobs run on; returns the one before.
    pub fn swap(&self, version: Arc<WorkerVersion>) -> Arc<WorkerVersion> {
        self.current.swap(version)
    }
}

impl App {
    /// Compiles, links and pre-instantiates every route's component. Any
    /// failure names the route and the manifest line.
    pub fn load(config: &Config, services: Arc<Services>) -> anyhow::Result<App> {
        let (manifest, source) = (&config.manifest, &config.source);
        let engine = new_engine(manifest.server.max_instances)
            .map_err(anyhow::Error::from)
            .context("creating the wasmtime engine")?;
        let linker = new_linker(&engine)
            .map_err(anyhow::Error::from)
            .context("creating the linker")?;
        let loader = Arc::new(Loader::with_disk_cache(
            engine.clone(),
            linker,
            services.disk_cache.clone(),
        ));
        let budget = Arc::new(Budget::new(manifest.server.max_instances as usize));
        let mut routes = RouteTable::default();
        for route in &manifest.routes {
            let name = route.name();
            let line = source
                .text()
                .map(|t| line_of(t, route.component.span().start));
            let what = match line {
                Some(line) => format!("route {name:?} (manifest line {line})"),
                None => format!("route {name:?}"),
            };
            let (handler, pulled_from) = load_route(&loader, manifest, route, source, &services)
                .with_context(|| what.clone())?;
            let mut route_ =
                Route::new(route.spec(), Arc::new(handler), 1, None, &services, &budget);
            route_.set_source(pulled_from, &services);
            routes
                .insert(Arc::new(route_))
                .with_context(|| format!("{what}: path {:?}", route.path.get_ref()))?;
        }
        let mut workers = Vec::new();
        for (entry, spec) in manifest.workers.iter().zip(manifest.worker_specs()) {
            let line = source
                .text()
                .map(|t| line_of(t, entry.component.span().start));
            let what = match line {
                Some(line) => format!("worker {:?} (manifest line {line})", spec.name),
                None => format!("worker {:?}", spec.name),
            };
            let path = manifest.base_dir.join(entry.component.get_ref());
            let bytes = match services.registries.prefetched(entry.component.get_ref()) {
                Some(pulled) => pulled.bytes.to_vec(),
                None => read_component(&path, source).with_context(|| what.clone())?,
            };
            let (component, cache) = loader
                .load_worker(&bytes, &spec.grants, spec.outbound.as_deref())
                .with_context(|| format!("{what}: component {}", entry.component.get_ref()))?;
            tracing::info!(worker = %spec.name, digest = %component.digest, cache = cache.as_str(), "worker component loaded");
            workers.push(Arc::new(Worker::new(WorkerVersion {
                capabilities: Arc::new(Capabilities::for_worker(&services, &spec)),
                component: Arc::new(component),
                spec,
                version: 1,
                loaded_at: std::time::SystemTime::now(),
            })));
        }
        let routes = ArcSwap::from_pointee(routes);
        let metrics = services.metrics.clone();
        Ok(App {
            _ticker: EpochTicker::start(&engine),
            engine,
            loader,
            services,
            routes,
            budget,
            server: manifest.server.clone(),
            draining: AtomicBool::new(false),
            metrics,
            workers,
            schedules: manifest.schedules.clone(),
        })
    }
}

/// Loads a route's component: its file, or the one
/// [`Registries::prefetch`](crate::services::registry::Registries::prefetch)
/// pulled for an `oci://` reference (returned pinned to its digest).
fn load_route(
    loader: &Loader,
    manifest: &Manifest,
    route: &crate::config::manifest::RouteEntry,
    source: &ManifestSource,
    services: &Services,
) -> anyhow::Result<(Handler, Option<Arc<Reference>>)> {
    let written = route.component.get_ref();
    let (bytes, pulled_from) = match services.registries.prefetched(written) {
        Some(pulled) => (pulled.bytes.to_vec(), Some(Arc::new(pulled.source.clone()))),
        None if Reference::is_oci(written) => {
            anyhow::bail!("component {written}: not pulled (a host bug)")
        }
        None => (
            read_component(&route.component_path(&manifest.base_dir), source)?,
            None,
        ),
    };
    let started = Instant::now();
    let spec = route.spec();
    let shown = match &pulled_from {
        Some(reference) => reference.to_string(),
        None => route
            .component_path(&manifest.base_dir)
            .display()
            .to_string(),
    };
    let (handler, cache) = loader
        .load(&bytes, &spec.grants, spec.outbound.as_deref())
        .with_context(|| format!("component {shown}"))?;
    tracing::info!(
        route = %route.name(),
        digest = %handler.digest,
        source = pulled_from.as_ref().map(|r| r.to_string()),
        cache = cache.as_str(),
        compile_ms = started.elapsed().as_millis() as u64,
        "component loaded"
    );
    Ok((handler, pulled_from))
}

/// The bytes of the component at `path` (bundled ones for the quickstart).
pub fn read_component(path: &std::path::Path, source: &ManifestSource) -> anyhow::Result<Vec<u8>> {
    Ok(match source {
        ManifestSource::Bundled => quickstart::component(path)
            .with_context(|| format!("no bundled component {}", path.display()))?
            .to_vec(),
        ManifestSource::File { .. } => {
            std::fs::read(path).with_context(|| format!("reading component {}", path.display()))?
        }
    })
}
