//! The deployment store: the tables `[deployments] shared` keeps in the
//! host's database (created by `services::database::migrate`), on SQLite
//! or PostgreSQL.
//!
//! - `trellis_components`: component bytes by SHA-256 digest, stored once,
//!   deleted once no version in any rollback history names them
//!   ([`Store::collect_garbage`]).
//! - `trellis_routes`: per route, the version serving (`NULL` once
//!   deleted), the next version number and a generation that grows with
//!   every change, which is what hosts compare to know they are behind.
//! - `trellis_route_versions`: each version's digest and settings;
//!   `retired` marks versions out of the rollback history.
//! - `trellis_route_changes`: every deploy, rollback and delete, by host.
//! - `trellis_hosts`: each host's heartbeat, what it serves, what it could
//!   not load.
//!
//! Each change is one transaction that first locks the route's row
//! (`SELECT … FOR UPDATE` on PostgreSQL; on SQLite the first write takes
//! the database's write lock), so two changes of one route are serialized
//! and their version numbers never collide. On PostgreSQL the transaction
//! also sends a `NOTIFY` that is delivered to every host at commit.

use crate::services::database::{Database, Pool};
use sqlx::Connection as _;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Versions kept per route for rollback, current included (as on one host).
const HISTORY: i64 = crate::ops::deployments::HISTORY as i64;

/// A route's settings as stored: the admin API's query parameters
/// (`path`, `methods`, `timeout`, ...), so a host rebuilds them through the
/// same validation an admin `PUT` goes through.
pub type Settings = BTreeMap<String, String>;

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened.
    #[error("deployment store unreachable: {0:#}")]
    Open(anyhow::Error),
    /// A statement failed (the database went away, or refused it).
    #[error("deployment store: {stage}: {source}")]
    Db {
        /// What was being done.
        stage: &'static str,
        /// sqlx's error.
        source: sqlx::Error,
    },
    /// No route of this name is in the store.
    #[error("no route named {0:?}")]
    NoSuchRoute(String),
    /// Rollback of a route with a single version.
    #[error("route {0:?} has no earlier version to roll back to")]
    NoEarlierVersion(String),
    /// A version names a component the store does not have.
    #[error("deployment store: no component {0}")]
    MissingComponent(String),
    /// The stored bytes do not hash to their digest.
    #[error("deployment store: component {digest} hashes to {actual}; refusing it")]
    Corrupt {
        /// The digest asked for.
        digest: String,
        /// What the bytes hash to.
        actual: String,
    },
    /// A version's settings are not a JSON object of strings.
    #[error("deployment store: settings of {route} version {version}: {message}")]
    Settings {
        /// The route.
        route: String,
        /// The version.
        version: i64,
        /// What is wrong.
        message: String,
    },
}

impl StoreError {
    /// Whether trying again later may succeed (the database was away), as
    /// opposed to an answer that will not change.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Open(_) | StoreError::Db { .. })
    }
}

/// Attaches the stage to a sqlx error.
fn at(stage: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Db { stage, source }
}

/// One version of a route, as stored.
#[derive(Clone, Debug)]
pub struct Version {
    /// Version number within the route, from 1.
    pub version: i64,
    /// SHA-256 of the component.
    pub digest: String,
    /// Its settings.
    pub settings: Settings,
    /// When it was deployed (Unix ms).
    pub deployed_ms: i64,
    /// The host whose admin API deployed it.
    pub deployed_by: String,
}

/// A route as the store says it should be served.
#[derive(Clone, Debug)]
pub struct RouteState {
    /// The route.
    pub name: String,
    /// Grows with every change of the route.
    pub generation: i64,
    /// The version to serve; `None` once the route is deleted.
    pub current: Option<Version>,
}

/// One deploy, rollback or delete.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Change {
    /// Order of changes across the fleet.
    pub id: i64,
    /// `deploy`, `rollback` or `delete`.
    pub action: String,
    /// The version serving after it (none after a delete).
    pub version: Option<i64>,
    /// Its digest.
    pub digest: Option<String>,
    /// The host whose admin API made it.
    pub host: String,
    /// When (Unix ms).
    pub at_ms: i64,
}

/// A host's heartbeat row.
#[derive(Clone, Debug)]
pub struct HostRow {
    /// The host's id.
    pub id: String,
    /// Its public listener.
    pub address: String,
    /// Its admin listener, when on.
    pub admin: Option<String>,
    /// When it started (Unix ms).
    pub started_ms: i64,
    /// Its last heartbeat (Unix ms).
    pub last_seen_ms: i64,
    /// JSON: route → `{version, digest}` it serves.
    pub serving: String,
    /// JSON: route → the version it could not load and why.
    pub errors: String,
}

/// A version to record before the one deployed: the manifest's version of
/// a route that enters the store, so rollback can return to it.
pub struct Seed<'a> {
    /// Its version number on the deploying host.
    pub version: i64,
    /// Its component.
    pub bytes: &'a [u8],
    /// Its digest.
    pub digest: &'a str,
    /// Its settings.
    pub settings: &'a Settings,
}

/// The deployment tables of the host's database.
pub struct Store {
    database: Arc<Database>,
    /// This host's id, recorded with each change it makes.
    host: String,
    /// The PostgreSQL channel changes are announced on: one per database
    /// and schema, so fleets sharing a server do not wake each other.
    channel: tokio::sync::OnceCell<String>,
    /// Serializes this host's writes (changes, heartbeats and garbage
    /// collection): on SQLite a transaction whose read turns into a write
    /// fails with "database is locked" at once if another write committed
    /// since its read, rather than wait.
    writes: tokio::sync::Mutex<()>,
}

/// Runs `$body` with `$conn` bound to a pooled connection of either
/// database, returning it to the pool on success. `$pg` is whether the
/// database is PostgreSQL, for the few statements that differ.
macro_rules! with_conn {
    ($self:ident, $conn:ident, $pg:ident, $body:expr) => {{
        match $self.pool().await? {
            Pool::Sqlite(pool) => {
                let mut $conn = pool.acquire().await.map_err(at("acquiring a connection"))?;
                let $pg = false;
                let result: Result<_, StoreError> = $body;
                if result.is_ok() {
                    $conn.release();
                }
                result
            }
            Pool::Postgres(pool) => {
                let mut $conn = pool.acquire().await.map_err(at("acquiring a connection"))?;
                let $pg = true;
                let result: Result<_, StoreError> = $body;
                if result.is_ok() {
                    $conn.release();
                }
                result
            }
        }
    }};
}

/// Inserts a component unless its digest is stored already.
macro_rules! put_component {
    ($tx:ident, $digest:expr, $bytes:expr, $now:expr) => {
        sqlx::query(
            "INSERT INTO trellis_components (digest, bytes, size, stored_ms) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (digest) DO NOTHING",
        )
        .bind($digest)
        .bind($bytes)
        .bind($bytes.len() as i64)
        .bind($now)
        .execute(&mut *$tx)
        .await
        .map_err(at("storing the component"))?
    };
}

/// Logs a change and, on PostgreSQL, announces it (delivered at commit).
macro_rules! record_change {
    ($tx:ident, $pg:ident, $channel:expr, $name:expr, $action:expr, $version:expr, $digest:expr, $host:expr, $now:expr) => {{
        sqlx::query(
            "INSERT INTO trellis_route_changes (route, action, version, digest, host, at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind($name)
        .bind($action)
        .bind($version)
        .bind($digest)
        .bind($host)
        .bind($now)
        .execute(&mut *$tx)
        .await
        .map_err(at("logging the change"))?;
        if $pg {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind($channel)
                .bind($name)
                .execute(&mut *$tx)
                .await
                .map_err(at("notifying the fleet"))?;
        }
    }};
}

impl Store {
    /// The store in `database`, making changes as host `host`.
    pub fn new(database: Arc<Database>, host: String) -> Store {
        Store {
            database,
            host,
            channel: tokio::sync::OnceCell::new(),
            writes: tokio::sync::Mutex::new(()),
        }
    }

    /// Whether the database is PostgreSQL (which can notify other hosts).
    pub fn is_postgres(&self) -> bool {
        self.database.kind() == crate::services::database::Kind::Postgres
    }

    /// The database, for the notification listener.
    pub fn database(&self) -> &Arc<Database> {
        &self.database
    }

    async fn pool(&self) -> Result<&Pool, StoreError> {
        self.database.pool().await.map_err(StoreError::Open)
    }

    /// The channel this fleet's changes are announced on (PostgreSQL).
    pub async fn channel(&self) -> Result<String, StoreError> {
        self.channel
            .get_or_try_init(|| async {
                let Pool::Postgres(pool) = self.pool().await? else {
                    return Ok(String::new());
                };
                let mut conn = pool.acquire().await.map_err(at("acquiring a connection"))?;
                let scope: String =
                    sqlx::query_scalar("SELECT current_database() || '.' || current_schema()")
                        .fetch_one(&mut *conn)
                        .await
                        .map_err(at("naming the notification channel"))?;
                conn.release();
                Ok(channel_name(&scope))
            })
            .await
            .cloned()
    }

    /// Records a new version of route `name`: its component (once per
    /// digest), its settings, the change, and (the first time a route
    /// enters the store) the version it replaces, `seed`. Returns the
    /// version number and the route's new generation.
    pub async fn deploy(
        &self,
        name: &str,
        bytes: &[u8],
        digest: &str,
        settings: &Settings,
        seed: Option<Seed<'_>>,
    ) -> Result<(i64, i64), StoreError> {
        let _writing = self.writes.lock().await;
        let channel = self.channel().await?;
        let settings = serde_json::to_string(settings).expect("strings serialize");
        let now = now_ms();
        with_conn!(self, conn, pg, {
            let mut tx = conn.begin().await.map_err(at("beginning the deploy"))?;
            put_component!(tx, digest, bytes, now);
            sqlx::query(
                "INSERT INTO trellis_routes (name, version, next_version, generation, changed_ms) \
                 VALUES ($1, NULL, 1, 0, $2) ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(at("creating the route"))?;
            let lock = if pg { " FOR UPDATE" } else { "" };
            let (mut next, generation, current): (i64, i64, Option<i64>) = sqlx::query_as(&format!(
                "SELECT next_version, generation, version FROM trellis_routes WHERE name = $1{lock}"
            ))
            .bind(name)
            .fetch_one(&mut *tx)
            .await
            .map_err(at("locking the route"))?;
            if let Some(seed) = seed.filter(|_| current.is_none() && next == 1) {
                put_component!(tx, seed.digest, seed.bytes, now);
                let seed_settings =
                    serde_json::to_string(seed.settings).expect("strings serialize");
                let version = seed.version.max(1);
                sqlx::query(
                    "INSERT INTO trellis_route_versions \
                     (route, version, digest, settings, deployed_ms, deployed_by, retired) \
                     VALUES ($1, $2, $3, $4, $5, $6, 0)",
                )
                .bind(name)
                .bind(version)
                .bind(seed.digest)
                .bind(seed_settings)
                .bind(now)
                .bind(format!("{} (manifest)", self.host))
                .execute(&mut *tx)
                .await
                .map_err(at("recording the manifest's version"))?;
                next = version + 1;
            }
            let version = next;
            sqlx::query(
                "INSERT INTO trellis_route_versions \
                 (route, version, digest, settings, deployed_ms, deployed_by, retired) \
                 VALUES ($1, $2, $3, $4, $5, $6, 0)",
            )
            .bind(name)
            .bind(version)
            .bind(digest)
            .bind(&settings)
            .bind(now)
            .bind(&self.host)
            .execute(&mut *tx)
            .await
            .map_err(at("recording the version"))?;
            sqlx::query(
                "UPDATE trellis_route_versions SET retired = 1 \
                 WHERE route = $1 AND retired = 0 AND version NOT IN \
                 (SELECT version FROM trellis_route_versions WHERE route = $1 AND retired = 0 \
                  ORDER BY version DESC LIMIT $2)",
            )
            .bind(name)
            .bind(HISTORY)
            .execute(&mut *tx)
            .await
            .map_err(at("trimming the history"))?;
            let generation = generation + 1;
            sqlx::query(
                "UPDATE trellis_routes SET version = $2, next_version = $3, generation = $4, \
                 changed_ms = $5 WHERE name = $1",
            )
            .bind(name)
            .bind(version)
            .bind(version + 1)
            .bind(generation)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(at("updating the route"))?;
            record_change!(
                tx,
                pg,
                &channel,
                name,
                "deploy",
                Some(version),
                Some(digest),
                &self.host,
                now
            );
            tx.commit().await.map_err(at("committing the deploy"))?;
            Ok((version, generation))
        })
    }

    /// Serves the version before the current one of route `name` again;
    /// the current one leaves the history.
    pub async fn rollback(&self, name: &str) -> Result<RouteState, StoreError> {
        let _writing = self.writes.lock().await;
        let channel = self.channel().await?;
        let now = now_ms();
        let generation = with_conn!(self, conn, pg, {
            let mut tx = conn.begin().await.map_err(at("beginning the rollback"))?;
            let lock = if pg { " FOR UPDATE" } else { "" };
            let row: Option<(i64, Option<i64>)> = sqlx::query_as(&format!(
                "SELECT generation, version FROM trellis_routes WHERE name = $1{lock}"
            ))
            .bind(name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(at("locking the route"))?;
            let Some((generation, Some(current))) = row else {
                return Err(StoreError::NoSuchRoute(name.to_owned()));
            };
            let target: Option<(i64, String)> = sqlx::query_as(
                "SELECT version, digest FROM trellis_route_versions \
                 WHERE route = $1 AND retired = 0 AND version < $2 ORDER BY version DESC LIMIT 1",
            )
            .bind(name)
            .bind(current)
            .fetch_optional(&mut *tx)
            .await
            .map_err(at("finding the earlier version"))?;
            let Some((target, digest)) = target else {
                return Err(StoreError::NoEarlierVersion(name.to_owned()));
            };
            sqlx::query(
                "UPDATE trellis_route_versions SET retired = 1 WHERE route = $1 AND version = $2",
            )
            .bind(name)
            .bind(current)
            .execute(&mut *tx)
            .await
            .map_err(at("retiring the current version"))?;
            let generation = generation + 1;
            sqlx::query(
                "UPDATE trellis_routes SET version = $2, generation = $3, changed_ms = $4 WHERE name = $1",
            )
            .bind(name)
            .bind(target)
            .bind(generation)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(at("updating the route"))?;
            record_change!(
                tx,
                pg,
                &channel,
                name,
                "rollback",
                Some(target),
                Some(digest.as_str()),
                &self.host,
                now
            );
            tx.commit().await.map_err(at("committing the rollback"))?;
            Ok(generation)
        })?;
        let state = self.route(name).await?;
        // Another change may have landed since: that is the state to serve.
        state
            .filter(|s| s.generation >= generation)
            .ok_or_else(|| StoreError::NoSuchRoute(name.to_owned()))
    }

    /// Deletes route `name` on every host and forgets its history. A route
    /// the store does not know yet but `served_here` (a manifest route) is
    /// recorded as deleted, so every host drops it. Returns the generation.
    pub async fn delete(&self, name: &str, served_here: bool) -> Result<i64, StoreError> {
        let _writing = self.writes.lock().await;
        let channel = self.channel().await?;
        let now = now_ms();
        with_conn!(self, conn, pg, {
            let mut tx = conn.begin().await.map_err(at("beginning the delete"))?;
            if served_here {
                // Version numbers go on from the manifest's 1 if it comes back.
                sqlx::query(
                    "INSERT INTO trellis_routes (name, version, next_version, generation, changed_ms) \
                     VALUES ($1, NULL, 2, 0, $2) ON CONFLICT (name) DO NOTHING",
                )
                .bind(name)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(at("creating the route"))?;
            }
            let lock = if pg { " FOR UPDATE" } else { "" };
            let row: Option<(i64, Option<i64>)> = sqlx::query_as(&format!(
                "SELECT generation, version FROM trellis_routes WHERE name = $1{lock}"
            ))
            .bind(name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(at("locking the route"))?;
            let generation = match row {
                Some((generation, Some(_))) => generation,
                Some((generation, None)) if served_here => generation,
                _ => return Err(StoreError::NoSuchRoute(name.to_owned())),
            };
            sqlx::query("UPDATE trellis_route_versions SET retired = 1 WHERE route = $1")
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(at("retiring the versions"))?;
            let generation = generation + 1;
            sqlx::query(
                "UPDATE trellis_routes SET version = NULL, generation = $2, changed_ms = $3 WHERE name = $1",
            )
            .bind(name)
            .bind(generation)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(at("updating the route"))?;
            record_change!(
                tx,
                pg,
                &channel,
                name,
                "delete",
                None::<i64>,
                None::<&str>,
                &self.host,
                now
            );
            tx.commit().await.map_err(at("committing the delete"))?;
            Ok(generation)
        })
    }

    /// Deletes what no route can serve again: versions out of every
    /// rollback history (retired), then components no remaining version
    /// names. Its own transaction, run after a change has committed, so it
    /// never fails a change: a component another host's change is adding
    /// back at that moment keeps it (the foreign key refuses the deletion,
    /// and the next collection tries again). Returns (versions, components)
    /// deleted.
    pub async fn collect_garbage(&self) -> Result<(u64, u64), StoreError> {
        let _writing = self.writes.lock().await;
        with_conn!(self, conn, _pg, {
            let mut tx = conn
                .begin()
                .await
                .map_err(at("beginning garbage collection"))?;
            let versions = sqlx::query("DELETE FROM trellis_route_versions WHERE retired = 1")
                .execute(&mut *tx)
                .await
                .map_err(at("deleting retired versions"))?
                .rows_affected();
            let components = sqlx::query(
                "DELETE FROM trellis_components \
                 WHERE digest NOT IN (SELECT digest FROM trellis_route_versions)",
            )
            .execute(&mut *tx)
            .await
            .map_err(at("deleting unused components"))?
            .rows_affected();
            tx.commit()
                .await
                .map_err(at("committing garbage collection"))?;
            Ok((versions, components))
        })
    }

    /// Every route's generation: what a reconcile compares.
    pub async fn generations(&self) -> Result<Vec<(String, i64)>, StoreError> {
        with_conn!(self, conn, _pg, {
            sqlx::query_as("SELECT name, generation FROM trellis_routes")
                .fetch_all(&mut *conn)
                .await
                .map_err(at("listing the routes"))
        })
    }

    /// Route `name` as the store says to serve it.
    pub async fn route(&self, name: &str) -> Result<Option<RouteState>, StoreError> {
        type Row = (
            i64,
            Option<i64>,
            Option<String>,
            Option<String>,
            Option<i64>,
            Option<String>,
        );
        let row: Option<Row> = with_conn!(self, conn, _pg, {
            sqlx::query_as(
                "SELECT r.generation, r.version, v.digest, v.settings, v.deployed_ms, v.deployed_by \
                 FROM trellis_routes r LEFT JOIN trellis_route_versions v \
                 ON v.route = r.name AND v.version = r.version WHERE r.name = $1",
            )
            .bind(name)
            .fetch_optional(&mut *conn)
            .await
            .map_err(at("reading the route"))
        })?;
        let Some((generation, version, digest, settings, deployed_ms, deployed_by)) = row else {
            return Ok(None);
        };
        let current = match (version, digest, settings) {
            (Some(version), Some(digest), Some(settings)) => Some(Version {
                settings: parse_settings(name, version, &settings)?,
                version,
                digest,
                deployed_ms: deployed_ms.unwrap_or_default(),
                deployed_by: deployed_by.unwrap_or_default(),
            }),
            _ => None,
        };
        Ok(Some(RouteState {
            name: name.to_owned(),
            generation,
            current,
        }))
    }

    /// The versions of route `name` still in its history, oldest first,
    /// and its last `changes` changes, oldest first.
    pub async fn history(
        &self,
        name: &str,
        changes: i64,
    ) -> Result<(Vec<Version>, Vec<Change>), StoreError> {
        type VersionRow = (i64, String, String, i64, String);
        type ChangeRow = (i64, String, Option<i64>, Option<String>, String, i64);
        let (versions, log): (Vec<VersionRow>, Vec<ChangeRow>) = with_conn!(self, conn, _pg, {
            async {
                let versions = sqlx::query_as(
                    "SELECT version, digest, settings, deployed_ms, deployed_by \
                     FROM trellis_route_versions WHERE route = $1 AND retired = 0 ORDER BY version",
                )
                .bind(name)
                .fetch_all(&mut *conn)
                .await
                .map_err(at("reading the history"))?;
                let log = sqlx::query_as(
                    "SELECT id, action, version, digest, host, at_ms FROM trellis_route_changes \
                     WHERE route = $1 ORDER BY id DESC LIMIT $2",
                )
                .bind(name)
                .bind(changes)
                .fetch_all(&mut *conn)
                .await
                .map_err(at("reading the changes"))?;
                Ok::<_, StoreError>((versions, log))
            }
            .await
        })?;
        let versions = versions
            .into_iter()
            .map(|(version, digest, settings, deployed_ms, deployed_by)| {
                Ok(Version {
                    settings: parse_settings(name, version, &settings)?,
                    version,
                    digest,
                    deployed_ms,
                    deployed_by,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        let mut log: Vec<Change> = log
            .into_iter()
            .map(|(id, action, version, digest, host, at_ms)| Change {
                id,
                action,
                version,
                digest,
                host,
                at_ms,
            })
            .collect();
        log.reverse();
        Ok((versions, log))
    }

    /// The bytes of component `digest`, checked against it.
    pub async fn component(&self, digest: &str) -> Result<Vec<u8>, StoreError> {
        let bytes: Option<Vec<u8>> = with_conn!(self, conn, _pg, {
            sqlx::query_scalar("SELECT bytes FROM trellis_components WHERE digest = $1")
                .bind(digest)
                .fetch_optional(&mut *conn)
                .await
                .map_err(at("fetching the component"))
        })?;
        let bytes = bytes.ok_or_else(|| StoreError::MissingComponent(digest.to_owned()))?;
        let actual = crate::ids::hex(&<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        if actual != digest {
            return Err(StoreError::Corrupt {
                digest: digest.to_owned(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Records this host's heartbeat, and forgets hosts not seen since
    /// `forget_before` (Unix ms).
    pub async fn heartbeat(&self, row: &HostRow, forget_before: i64) -> Result<(), StoreError> {
        let _writing = self.writes.lock().await;
        with_conn!(self, conn, _pg, {
            async {
                sqlx::query(
                    "INSERT INTO trellis_hosts \
                     (id, address, admin, started_ms, last_seen_ms, serving, errors) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO UPDATE SET \
                     address = excluded.address, admin = excluded.admin, \
                     started_ms = excluded.started_ms, last_seen_ms = excluded.last_seen_ms, \
                     serving = excluded.serving, errors = excluded.errors",
                )
                .bind(&row.id)
                .bind(&row.address)
                .bind(&row.admin)
                .bind(row.started_ms)
                .bind(row.last_seen_ms)
                .bind(&row.serving)
                .bind(&row.errors)
                .execute(&mut *conn)
                .await
                .map_err(at("recording the heartbeat"))?;
                sqlx::query("DELETE FROM trellis_hosts WHERE last_seen_ms < $1")
                    .bind(forget_before)
                    .execute(&mut *conn)
                    .await
                    .map_err(at("forgetting departed hosts"))?;
                Ok::<_, StoreError>(())
            }
            .await
        })
    }

    /// Every host's heartbeat row.
    pub async fn hosts(&self) -> Result<Vec<HostRow>, StoreError> {
        type Row = (String, String, Option<String>, i64, i64, String, String);
        let rows: Vec<Row> = with_conn!(self, conn, _pg, {
            sqlx::query_as(
                "SELECT id, address, admin, started_ms, last_seen_ms, serving, errors \
                 FROM trellis_hosts ORDER BY id",
            )
            .fetch_all(&mut *conn)
            .await
            .map_err(at("listing the hosts"))
        })?;
        Ok(rows
            .into_iter()
            .map(
                |(id, address, admin, started_ms, last_seen_ms, serving, errors)| HostRow {
                    id,
                    address,
                    admin,
                    started_ms,
                    last_seen_ms,
                    serving,
                    errors,
                },
            )
            .collect())
    }

    /// What every route in the store should serve: route → (version,
    /// digest), deleted routes left out.
    pub async fn desired(&self) -> Result<BTreeMap<String, (i64, String)>, StoreError> {
        let rows: Vec<(String, i64, String)> = with_conn!(self, conn, _pg, {
            sqlx::query_as(
                "SELECT r.name, r.version, v.digest FROM trellis_routes r \
                 JOIN trellis_route_versions v ON v.route = r.name AND v.version = r.version \
                 ORDER BY r.name",
            )
            .fetch_all(&mut *conn)
            .await
            .map_err(at("reading the desired versions"))
        })?;
        Ok(rows
            .into_iter()
            .map(|(name, version, digest)| (name, (version, digest)))
            .collect())
    }
}

fn parse_settings(route: &str, version: i64, text: &str) -> Result<Settings, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Settings {
        route: route.to_owned(),
        version,
        message: e.to_string(),
    })
}

/// `trellis_deploy_` and 16 hex digits of the scope's SHA-256: a valid
/// PostgreSQL identifier whatever the schema is called.
fn channel_name(scope: &str) -> String {
    let digest = crate::ids::hex(&<sha2::Sha256 as sha2::Digest>::digest(scope.as_bytes()));
    format!("trellis_deploy_{}", &digest[..16])
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_are_identifiers_per_scope() {
        let a = channel_name("test.e2e_1");
        assert_eq!(a.len(), "trellis_deploy_".len() + 16);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        );
        assert_ne!(a, channel_name("test.e2e_2"));
        assert_eq!(a, channel_name("test.e2e_1"));
    }
}
