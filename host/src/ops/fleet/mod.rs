//! Shared deployments (`[deployments] shared = true`): one deploy, rollback
//! or delete through any host's admin API reaches every host sharing the
//! database.
//!
//! A change is one transaction in the [`store`]. Every host then brings
//! its route table to the store's state: woken by PostgreSQL `NOTIFY`
//! (through a `LISTEN` connection of its own), and by a reconcile every
//! `[deployments] reconcile` that compares each route's generation, so a
//! missed notification heals. A host loads a version by digest (from the
//! precompiled-component cache, else the store), validates it like an
//! upload and swaps it in as hot load does; one it cannot load is reported
//! and the previous version keeps serving. Each reconcile is also a
//! heartbeat: address, start, last seen, what the host serves and what it
//! could not load, which `GET /admin/fleet` shows.
//!
//! Nothing here runs on the request path: it all happens on background
//! tasks beside serving, which only ever sees a new route table.

pub mod store;

use crate::config::manifest::{Cors, RouteSpec};
use crate::config::{Config, ManifestSource};
use crate::ops::admin::rfc3339;
use crate::ops::deployments::{DeployError, Deployments};
use crate::ops::route_settings::{settings_from_stored, stored_settings};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};
use store::{HostRow, Seed, Settings, Store, StoreError, now_ms};
use tokio::sync::Notify;

/// Hosts not seen for this many `stale_after` periods leave the table.
const FORGET_AFTER_STALE: i64 = 10;

/// This host's part in a fleet sharing one deployment store.
pub struct Fleet {
    store: Store,
    /// This host's id (`TRELLIS_HOST_ID`, else hostname and a random
    /// suffix).
    id: String,
    /// `[deployments]`.
    settings: crate::config::manifest::Deployments,
    /// The manifest's routes by name: the settings only a manifest can
    /// give (config, secrets, edge policies) for a stored version of the
    /// same route, and the file a route entering the store came from.
    manifest: HashMap<String, (RouteSpec, PathBuf)>,
    /// Where the manifest came from, to read its component files.
    source: ManifestSource,
    started_ms: i64,
    /// The public and admin addresses, for heartbeats; set at start.
    addresses: Mutex<(String, Option<String>)>,
    /// Versions this host could not load, by route; cleared when the
    /// route next applies. Lives as long as the process.
    failures: Mutex<BTreeMap<String, Failure>>,
    /// Serializes this host's syncs (notifications, reconciles), so one
    /// version is never loaded twice at once.
    syncing: tokio::sync::Mutex<()>,
    /// Wakes the heartbeat at once after a change, so `deploy --wait`
    /// sees convergence without waiting for the next reconcile.
    beat: Notify,
}

/// A version this host could not load.
#[derive(Clone, Debug, Serialize)]
struct Failure {
    version: Option<i64>,
    digest: Option<String>,
    error: String,
    at_ms: i64,
    /// The store generation that failed; not retried unless the failure
    /// was transient (the database away) or the route changes again.
    #[serde(skip)]
    generation: i64,
    #[serde(skip)]
    transient: bool,
}

/// What a host serves of one route, as heartbeats carry it.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
struct Serving {
    version: i64,
    digest: String,
}

impl Fleet {
    /// This host's part in the fleet `config` describes, sharing the store
    /// in `database`.
    pub fn new(config: &Config, database: Arc<crate::services::database::Database>) -> Fleet {
        let manifest = &config.manifest;
        let id = config.env.host_id.clone().unwrap_or_else(|| {
            let name = config.env.hostname.as_deref().unwrap_or("host");
            format!("{name}-{}", &crate::ids::random_hex(64)[..8])
        });
        let routes = manifest
            .routes
            .iter()
            .map(|r| {
                let spec = r.spec();
                let path = r.component_path(&manifest.base_dir);
                (spec.name.clone(), (spec, path))
            })
            .collect();
        Fleet {
            store: Store::new(database, id.clone()),
            id,
            settings: manifest.deployments.clone(),
            manifest: routes,
            source: config.source.clone(),
            started_ms: now_ms(),
            addresses: Mutex::new((String::new(), None)),
            failures: Mutex::new(BTreeMap::new()),
            syncing: tokio::sync::Mutex::new(()),
            beat: Notify::new(),
        }
    }

    /// The deployment store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// This host's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Something changed here: heartbeat now.
    pub fn changed(&self) {
        self.beat.notify_one();
    }

    /// A change to route `name` went through here and this host serves
    /// it. Its last load failure is over, and the fleet learns both from
    /// the heartbeat before the change is answered, so another host's
    /// `GET /admin/fleet` never shows the old state after `deploy --wait`.
    pub async fn applied(&self, deployments: &Deployments, name: &str) {
        self.failures.lock().expect("failures lock").remove(name);
        self.heartbeat(deployments).await;
        self.changed();
    }

    /// Serves the fleet's current state before the host takes requests
    /// (the store wins over the manifest for every route it holds), then
    /// keeps following it on background tasks until they are aborted.
    pub async fn start(
        self: &Arc<Self>,
        deployments: Arc<Deployments>,
        public: SocketAddr,
        admin: Option<SocketAddr>,
    ) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
        use anyhow::Context as _;
        *self.addresses.lock().expect("addresses lock") =
            (public.to_string(), admin.map(|a| a.to_string()));
        let generations = self
            .store
            .generations()
            .await
            .context("reading the shared deployments")?;
        let routes = generations.len();
        self.reconcile_with(&deployments, generations).await;
        self.heartbeat(&deployments).await;
        tracing::info!(host = %self.id, routes, postgres = self.store.is_postgres(), reconcile_ms = self.settings.reconcile.0.as_millis() as u64, "following shared deployments");
        let mut tasks = vec![tokio::spawn(self.clone().tick(deployments.clone()))];
        if self.store.is_postgres() {
            tasks.push(tokio::spawn(self.clone().listen(deployments)));
        }
        Ok(tasks)
    }

    /// Reconciles and heartbeats every `reconcile`, and heartbeats at once
    /// after a change.
    async fn tick(self: Arc<Self>, deployments: Arc<Deployments>) {
        let mut tick = tokio::time::interval(self.settings.reconcile.0);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut reachable = true;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    match self.store.generations().await {
                        Ok(generations) => {
                            if !reachable {
                                tracing::info!("deployment store reachable again");
                                reachable = true;
                            }
                            self.reconcile_with(&deployments, generations).await;
                        }
                        Err(err) => {
                            if reachable {
                                tracing::warn!(cause = %err, "reconcile: deployment store unreachable; serving what is loaded");
                                reachable = false;
                            }
                            continue;
                        }
                    }
                }
                () = self.beat.notified() => {
                    // A change went through here: what it retired may
                    // leave components no version uses.
                    self.heartbeat(&deployments).await;
                    match self.store.collect_garbage().await {
                        Ok((0, 0)) => {}
                        Ok((versions, components)) => tracing::info!(versions, components, "deployment store: deleted retired versions and the components no version uses"),
                        Err(err) => tracing::debug!(cause = %err, "deployment store: garbage collection failed; retried after the next change"),
                    }
                    continue;
                }
            }
            self.heartbeat(&deployments).await;
        }
    }

    /// Follows the store's notifications (PostgreSQL), reconnecting after
    /// a lost connection and reconciling then, as notifications sent
    /// meanwhile are lost.
    async fn listen(self: Arc<Self>, deployments: Arc<Deployments>) {
        loop {
            let listening = async {
                let channel = self.store.channel().await?;
                let mut listener = self
                    .store
                    .database()
                    .listener()
                    .await
                    .map_err(StoreError::Open)?
                    .expect("PostgreSQL has a listener");
                listener
                    .listen(&channel)
                    .await
                    .map_err(|source| StoreError::Db {
                        stage: "LISTEN",
                        source,
                    })?;
                tracing::debug!(channel = %channel, "listening for deployment changes");
                self.reconcile(&deployments).await;
                loop {
                    match listener.try_recv().await {
                        Ok(Some(notification)) => {
                            self.sync(&deployments, notification.payload()).await;
                            self.changed();
                        }
                        Ok(None) => {
                            tracing::warn!(
                                "deployment notifications: connection lost and reopened; reconciling"
                            );
                            self.reconcile(&deployments).await;
                        }
                        Err(source) => {
                            return Err::<(), _>(StoreError::Db {
                                stage: "receiving notifications",
                                source,
                            });
                        }
                    }
                }
            };
            if let Err(err) = listening.await {
                tracing::warn!(cause = %err, retry_ms = self.settings.reconcile.0.as_millis() as u64, "deployment notifications unavailable; the periodic reconcile goes on");
            }
            tokio::time::sleep(self.settings.reconcile.0).await;
        }
    }

    /// Brings every route the store changed since this host applied it.
    async fn reconcile(&self, deployments: &Deployments) {
        match self.store.generations().await {
            Ok(generations) => self.reconcile_with(deployments, generations).await,
            Err(err) => tracing::warn!(cause = %err, "reconcile: deployment store unreachable"),
        }
    }

    async fn reconcile_with(&self, deployments: &Deployments, generations: Vec<(String, i64)>) {
        let mut changed = false;
        for (name, generation) in generations {
            if deployments.generation(&name).await >= generation {
                continue;
            }
            let failed = self
                .failures
                .lock()
                .expect("failures lock")
                .get(&name)
                .is_some_and(|f| f.generation == generation && !f.transient);
            if failed {
                continue;
            }
            self.sync(deployments, &name).await;
            changed = true;
        }
        if changed {
            self.changed();
        }
    }

    /// Brings route `name` to the store's state, recording (and
    /// returning) a failure.
    pub async fn sync(&self, deployments: &Deployments, name: &str) -> Option<String> {
        let _one_at_a_time = self.syncing.lock().await;
        let state = match self.store.route(name).await {
            Ok(Some(state)) => state,
            Ok(None) => return None,
            Err(err) => {
                tracing::warn!(route = %name, cause = %err, "reading the route from the deployment store");
                return Some(err.to_string());
            }
        };
        match deployments.apply(self, &state).await {
            Ok(_) => {
                self.failures.lock().expect("failures lock").remove(name);
                None
            }
            Err(err) => {
                let transient = matches!(&err, DeployError::Store(e) if e.is_transient())
                    || matches!(err, DeployError::Busy(_) | DeployError::Database(_));
                let current = state.current.as_ref();
                tracing::error!(
                    route = %name,
                    version = current.map(|v| v.version),
                    digest = current.map(|v| v.digest.as_str()),
                    cause = %err,
                    "loading the fleet's version failed; the previous version keeps serving"
                );
                self.failures.lock().expect("failures lock").insert(
                    name.to_owned(),
                    Failure {
                        version: current.map(|v| v.version),
                        digest: current.map(|v| v.digest.clone()),
                        error: err.to_string(),
                        at_ms: now_ms(),
                        generation: state.generation,
                        transient,
                    },
                );
                Some(err.to_string())
            }
        }
    }

    /// What this host serves, by route.
    fn serving(deployments: &Deployments) -> BTreeMap<String, Serving> {
        deployments
            .app()
            .routes
            .load()
            .iter()
            .map(|r| {
                let s = Serving {
                    version: i64::from(r.version),
                    digest: r.handler.digest.to_string(),
                };
                (r.name.to_string(), s)
            })
            .collect()
    }

    /// Records what this host serves and could not load.
    async fn heartbeat(&self, deployments: &Deployments) {
        let serving = Fleet::serving(deployments);
        let failures = self.failures.lock().expect("failures lock").clone();
        let (address, admin) = self.addresses.lock().expect("addresses lock").clone();
        let now = now_ms();
        let row = HostRow {
            id: self.id.clone(),
            address,
            admin,
            started_ms: self.started_ms,
            last_seen_ms: now,
            serving: serde_json::to_string(&serving).expect("serializes"),
            errors: serde_json::to_string(&failures).expect("serializes"),
        };
        let stale = i64::try_from(self.settings.stale_after.0.as_millis()).unwrap_or(i64::MAX);
        let forget_before = now.saturating_sub(stale.saturating_mul(FORGET_AFTER_STALE));
        if let Err(err) = self.store.heartbeat(&row, forget_before).await {
            tracing::debug!(cause = %err, "heartbeat not recorded");
        }
    }

    /// Takes this host out of the fleet's table (at shutdown).
    pub async fn leave(&self) {
        let forget = async {
            let row = HostRow {
                id: self.id.clone(),
                address: String::new(),
                admin: None,
                started_ms: self.started_ms,
                last_seen_ms: 0,
                serving: "{}".into(),
                errors: "{}".into(),
            };
            // A last-seen of 0 is forgotten by the delete that follows.
            self.store.heartbeat(&row, 1).await
        };
        if let Ok(Err(err)) = tokio::time::timeout(Duration::from_secs(2), forget).await {
            tracing::debug!(cause = %err, "leaving the fleet's table");
        }
    }

    /// Route `name`'s settings for `stored` on this host: this host's
    /// manifest entry (else its `[cors]`, `host_cors`) supplies what the
    /// admin API did not set.
    pub fn spec_for(
        &self,
        name: &str,
        stored: &Settings,
        host_cors: Option<&Arc<Cors>>,
    ) -> Result<RouteSpec, String> {
        let base = self.manifest.get(name).map(|(spec, _)| spec);
        settings_from_stored(name, base, stored, host_cors)
    }

    /// Records a deploy of `spec` (component `bytes`, `digest`) in the
    /// store. A manifest route entering the store brings its current
    /// version along, so rollback can return to it on every host.
    pub async fn record_deploy(
        &self,
        deployments: &Deployments,
        spec: &RouteSpec,
        bytes: &[u8],
        digest: &str,
        source: Option<&str>,
    ) -> Result<(i64, i64), StoreError> {
        let mut settings = stored_settings(spec);
        if let Some(source) = source {
            settings.insert(
                crate::ops::deployments::SOURCE_SETTING.to_owned(),
                source.to_owned(),
            );
        }
        let name = spec.name.as_str();
        let mut seed_parts = None;
        if deployments.generation(name).await == 0
            && let Some(route) = deployments.app().routes.load().get(name).cloned()
            && let Some((_, path)) = self.manifest.get(name)
        {
            // An `oci://` component: the bytes pulled at start; a file:
            // read again.
            let registries = &deployments.app().services.registries;
            let seed_bytes = match &route.source {
                Some(source) => registries.pulled(source).map(|b| b.to_vec()),
                None => crate::app::read_component(path, &self.source).ok(),
            };
            let seed_digest = seed_bytes
                .as_ref()
                .map(|b| crate::ids::hex(&<sha2::Sha256 as sha2::Digest>::digest(b)));
            // The file may have changed since it was loaded: only the
            // version actually serving is recorded.
            if let (Some(seed_bytes), Some(seed_digest)) = (seed_bytes, seed_digest)
                && seed_digest == *route.handler.digest
            {
                let mut seed_settings = stored_settings(&route.spec);
                if let Some(source) = &route.source {
                    seed_settings.insert(
                        crate::ops::deployments::SOURCE_SETTING.to_owned(),
                        source.to_string(),
                    );
                }
                seed_parts = Some((
                    i64::from(route.version),
                    seed_bytes,
                    seed_digest,
                    seed_settings,
                ));
            }
        }
        let seed = seed_parts
            .as_ref()
            .map(|(version, bytes, digest, settings)| Seed {
                version: *version,
                bytes,
                digest,
                settings,
            });
        self.store
            .deploy(name, bytes, digest, &settings, seed)
            .await
    }

    /// `GET /admin/fleet`: each host (live or not), what the store wants
    /// per route, whether each live host serves it, and its load failures.
    /// This host's own entry is its state now, not its last heartbeat.
    pub async fn status(&self, deployments: &Deployments) -> Result<Value, StoreError> {
        let desired = self.store.desired().await?;
        let mut hosts = self.store.hosts().await?;
        for host in hosts.iter_mut().filter(|h| h.id == self.id) {
            host.serving = serde_json::to_string(&Fleet::serving(deployments)).expect("serializes");
            let failures = self.failures.lock().expect("failures lock").clone();
            host.errors = serde_json::to_string(&failures).expect("serializes");
            host.last_seen_ms = now_ms();
        }
        let now = now_ms();
        let stale = i64::try_from(self.settings.stale_after.0.as_millis()).unwrap_or(i64::MAX);
        let at =
            |ms: i64| rfc3339(UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
        let mut converged = true;
        let hosts: Vec<Value> = hosts
            .into_iter()
            .map(|h| {
                let serving: BTreeMap<String, Serving> =
                    serde_json::from_str(&h.serving).unwrap_or_default();
                let errors: Value = serde_json::from_str(&h.errors).unwrap_or_else(|_| json!({}));
                let live = now.saturating_sub(h.last_seen_ms) <= stale;
                let behind: Vec<&String> = desired
                    .iter()
                    .filter(|(name, (version, digest))| {
                        serving
                            .get(*name)
                            .is_none_or(|s| s.version != *version || s.digest != *digest)
                    })
                    .map(|(name, _)| name)
                    .collect();
                if live && !behind.is_empty() {
                    converged = false;
                }
                json!({
                    "id": h.id,
                    "address": h.address,
                    "admin": h.admin,
                    "started_at": at(h.started_ms),
                    "last_seen": at(h.last_seen_ms),
                    "live": live,
                    "matches": behind.is_empty(),
                    "behind": behind,
                    "serving": serving,
                    "errors": errors,
                })
            })
            .collect();
        let desired: BTreeMap<&String, Value> = desired
            .iter()
            .map(|(name, (version, digest))| (name, json!({"version": version, "digest": digest})))
            .collect();
        Ok(json!({
            "host": self.id,
            "desired": desired,
            "converged": converged,
            "stale_after": self.settings.stale_after.to_string(),
            "hosts": hosts,
        }))
    }
}
