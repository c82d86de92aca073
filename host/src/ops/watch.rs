//! Watch mode (`trellis serve --watch`): poll the manifest and every
//! component and schema file it names, and hot-load what changed through
//! the same validation and atomic swap as the admin API. A schema file is
//! part of the manifest: a change to one reloads the manifest, so a schema
//! that does not compile changes nothing.
//!
//! Polling (modification time and size, every [`POLL`]) needs no
//! platform file-notification API, and a change is acted on only once it
//! has held still for one poll, so a file caught half-written by a build is
//! not loaded.

use crate::config::manifest::{Manifest, RouteSpec};
use crate::ops::deployments::Deployments;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How often files are looked at.
pub const POLL: Duration = Duration::from_millis(500);

/// What a poll sees of a file; `None` when it is missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
    })
}

/// One watched file: the stamp last acted on and the one seen last poll.
struct Tracker {
    applied: Option<Stamp>,
    seen: Option<Stamp>,
}

impl Tracker {
    fn new(path: &Path) -> Tracker {
        let now = stamp(path);
        Tracker {
            applied: now,
            seen: now,
        }
    }

    /// Whether `path` changed since last acted on and has since held still
    /// for one poll.
    fn settled_change(&mut self, path: &Path) -> bool {
        let now = stamp(path);
        let still = now == self.seen;
        self.seen = now;
        if still && now != self.applied {
            self.applied = now;
            return true;
        }
        false
    }
}

/// A route as the manifest last defined it.
struct Watched {
    spec: RouteSpec,
    component: PathBuf,
}

/// Watches `path`, whose current contents are `manifest`, until the task
/// is dropped.
pub async fn watch(deployments: Arc<Deployments>, path: PathBuf, manifest: Manifest) {
    let mut manifest_file = Tracker::new(&path);
    let mut schema_files = schema_trackers(&manifest, HashMap::new());
    let mut routes = watched(&manifest);
    let mut files: HashMap<PathBuf, Tracker> = trackers(&routes, HashMap::new());
    let mut server = server_settings(&manifest);
    // Workers keep their manifest settings until a restart; their
    // component files are hot-loaded.
    let workers = worker_files(&manifest);
    let mut worker_trackers: HashMap<PathBuf, Tracker> = workers
        .iter()
        .map(|(_, file)| (file.clone(), Tracker::new(file)))
        .collect();
    tracing::info!(manifest = %path.display(), files = files.len() + worker_trackers.len(), poll_ms = POLL.as_millis() as u64, "watching for changes");
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Every tracker is polled each tick, so none misses a settle.
        let mut schema_changed = false;
        for (file, tracker) in &mut schema_files {
            schema_changed |= tracker.settled_change(file);
        }
        if manifest_file.settled_change(&path) | schema_changed {
            match Manifest::load(&path) {
                Err(err) => {
                    tracing::error!(cause = %err, "manifest reload failed; routes unchanged");
                }
                Ok(new) => {
                    let services = &deployments.app().services;
                    if let Err(err) = services.auth.set_policies(&new) {
                        tracing::error!(cause = %err, "manifest reload failed: auth policies; routes unchanged");
                        continue;
                    }
                    let auth = services.auth.clone();
                    tokio::spawn(async move { auth.warm_up().await });
                    if server_settings(&new) != server {
                        server = server_settings(&new);
                        tracing::warn!("[server] settings changed; they apply at the next restart");
                    }
                    if worker_files(&new) != workers {
                        tracing::warn!(
                            "[[worker]] entries changed; they apply at the next restart (a worker's component file is reloaded when it changes)"
                        );
                    }
                    // Policies first, so reloaded routes find theirs.
                    deployments.app().services.rate_limiter.set_policies(&new);
                    schema_files = schema_trackers(&new, schema_files);
                    let next = watched(&new);
                    apply_manifest(&deployments, &routes, &next, &mut files).await;
                    routes = next;
                    files = trackers(&routes, files);
                }
            }
            continue;
        }
        let changed: Vec<PathBuf> = files
            .iter_mut()
            .filter_map(|(file, tracker)| tracker.settled_change(file).then(|| file.clone()))
            .collect();
        for file in changed {
            for route in routes.values().filter(|r| r.component == file) {
                reload(&deployments, route).await;
            }
        }
        let changed: Vec<PathBuf> = worker_trackers
            .iter_mut()
            .filter_map(|(file, tracker)| tracker.settled_change(file).then(|| file.clone()))
            .collect();
        for file in changed {
            for (name, _) in workers.iter().filter(|(_, f)| *f == file) {
                reload_worker(&deployments, name, &file).await;
            }
        }
    }
}

async fn reload_worker(deployments: &Deployments, name: &str, file: &Path) {
    let bytes = match tokio::fs::read(file).await {
        Ok(bytes) => bytes,
        Err(err) => {
            tracing::error!(worker = %name, path = %file.display(), cause = %err, "worker reload failed: reading the component; the previous one keeps running");
            return;
        }
    };
    if let Err(err) = deployments.deploy_worker(name, bytes.into()).await {
        tracing::error!(worker = %name, path = %file.display(), cause = %err, "worker reload failed; the previous component keeps running");
    }
}

/// Each `[[worker]]`'s name and component file (one from a registry has
/// none to watch).
fn worker_files(manifest: &Manifest) -> Vec<(String, PathBuf)> {
    manifest
        .workers
        .iter()
        .zip(manifest.worker_specs())
        .filter(|(entry, _)| !entry.component.get_ref().starts_with("oci://"))
        .map(|(entry, spec)| (spec.name, manifest.base_dir.join(entry.component.get_ref())))
        .collect()
}

/// Reloads routes that are new or changed in `next`, removes those gone.
async fn apply_manifest(
    deployments: &Deployments,
    before: &HashMap<String, Watched>,
    next: &HashMap<String, Watched>,
    files: &mut HashMap<PathBuf, Tracker>,
) {
    for (name, route) in next {
        let now = stamp(&route.component);
        let file_changed = files.get_mut(&route.component).is_some_and(|t| {
            let changed = t.applied != now;
            t.applied = now;
            t.seen = now;
            changed
        });
        let changed = before
            .get(name)
            .is_none_or(|old| old.spec != route.spec || old.component != route.component);
        if changed || file_changed {
            reload(deployments, route).await;
        }
    }
    for name in before.keys().filter(|n| !next.contains_key(*n)) {
        match deployments.remove_local(name).await {
            Ok(_) => {}
            Err(err) => tracing::warn!(route = %name, cause = %err, "removing route"),
        }
    }
}

async fn reload(deployments: &Deployments, route: &Watched) {
    let name = &route.spec.name;
    let bytes = match tokio::fs::read(&route.component).await {
        Ok(bytes) => bytes,
        Err(err) => {
            tracing::error!(route = %name, path = %route.component.display(), cause = %err, "route reload failed: reading the component; the previous version keeps serving");
            return;
        }
    };
    if let Err(err) = deployments
        .deploy_local(route.spec.clone(), bytes.into())
        .await
    {
        tracing::error!(route = %name, path = %route.component.display(), cause = %err, "route reload failed; the previous version keeps serving");
    }
}

/// `[server]` as it matters for a restart warning; the addresses are left
/// out because the command line may override them.
fn server_settings(manifest: &Manifest) -> String {
    let mut server = manifest.server.clone();
    server.listen = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
    server.admin_listen = None;
    format!("{server:?}")
}

fn watched(manifest: &Manifest) -> HashMap<String, Watched> {
    manifest
        .routes
        .iter()
        .map(|r| {
            let w = Watched {
                spec: r.spec(),
                component: r.component_path(&manifest.base_dir),
            };
            (w.spec.name.clone(), w)
        })
        .collect()
}

/// Trackers for the schema files `manifest` names, keeping `old` ones.
fn schema_trackers(
    manifest: &Manifest,
    mut old: HashMap<PathBuf, Tracker>,
) -> HashMap<PathBuf, Tracker> {
    manifest
        .routes
        .iter()
        .filter_map(|r| r.schema.as_ref())
        .flat_map(|files| {
            let files = files.get_ref();
            [files.body.clone(), files.query.clone()]
        })
        .flatten()
        .map(|file| {
            let path = manifest.base_dir.join(file);
            let tracker = old.remove(&path).unwrap_or_else(|| Tracker::new(&path));
            (path, tracker)
        })
        .collect()
}

/// Trackers for the component files of `routes`, keeping `old` ones.
fn trackers(
    routes: &HashMap<String, Watched>,
    mut old: HashMap<PathBuf, Tracker>,
) -> HashMap<PathBuf, Tracker> {
    routes
        .values()
        .map(|r| {
            let tracker = old
                .remove(&r.component)
                .unwrap_or_else(|| Tracker::new(&r.component));
            (r.component.clone(), tracker)
        })
        .collect()
}

/// Starts watching `config`'s manifest on a background task (a bundled
/// quickstart has nothing to watch).
pub fn spawn(
    deployments: Arc<Deployments>,
    config: &crate::config::Config,
) -> Option<tokio::task::JoinHandle<()>> {
    match &config.source {
        crate::config::ManifestSource::File { path, .. } => Some(tokio::spawn(watch(
            deployments,
            path.clone(),
            config.manifest.clone(),
        ))),
        crate::config::ManifestSource::Bundled => {
            tracing::warn!("--watch: the bundled quickstart has no files to watch");
            None
        }
    }
}
