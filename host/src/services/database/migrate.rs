//! Migrations: the SQL files `[database].migrations` lists, applied once
//! each, in order, at start, and recorded in `trellis_migrations` with a
//! checksum so an edited migration is caught instead of silently skipped.
//!
//! On PostgreSQL an advisory lock serializes hosts starting together; on
//! SQLite the database's own write lock does.
//!
//! The host's own tables are migrations too, recorded the same way under
//! names starting `trellis:` (no file can have that name in the list, as
//! migrations are named by their paths), applied only when something needs
//! them: with `[deployments] shared` the deployment tables, before the
//! operator's migrations; for api-key policies with `store = "database"`,
//! `trellis_api_keys` ([`host_api_keys`]).

use super::Pool;
use crate::ids::hex;
use anyhow::{Context as _, bail};
use sha2::{Digest, Sha256};
use sqlx::{Connection, Executor};
use std::path::PathBuf;

/// `pg_advisory_lock` key: "trellis" in ASCII.
const LOCK_KEY: i64 = 0x0074_7265_6c6c_6973;

const CREATE: &str = "CREATE TABLE IF NOT EXISTS trellis_migrations (\
    name TEXT PRIMARY KEY, checksum TEXT NOT NULL, applied_at TEXT NOT NULL)";

/// The tables behind `[deployments] shared` (see `ops::fleet::store`):
/// components by digest, each route's versions and settings, the log of
/// changes, and the hosts' heartbeats. Times are Unix milliseconds.
/// (name, SQLite, PostgreSQL); append new steps, never edit one.
const DEPLOYMENT_TABLES: &[(&str, &str, &str)] = &[(
    "trellis:deployments:1",
    "CREATE TABLE trellis_components (
        digest TEXT PRIMARY KEY, bytes BLOB NOT NULL, size INTEGER NOT NULL,
        stored_ms INTEGER NOT NULL);
    CREATE TABLE trellis_routes (
        name TEXT PRIMARY KEY, version INTEGER, next_version INTEGER NOT NULL,
        generation INTEGER NOT NULL, changed_ms INTEGER NOT NULL);
    CREATE TABLE trellis_route_versions (
        route TEXT NOT NULL, version INTEGER NOT NULL,
        digest TEXT NOT NULL REFERENCES trellis_components (digest),
        settings TEXT NOT NULL, deployed_ms INTEGER NOT NULL, deployed_by TEXT NOT NULL,
        retired INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (route, version));
    CREATE TABLE trellis_route_changes (
        id INTEGER PRIMARY KEY AUTOINCREMENT, route TEXT NOT NULL, action TEXT NOT NULL,
        version INTEGER, digest TEXT, host TEXT NOT NULL, at_ms INTEGER NOT NULL);
    CREATE INDEX trellis_route_changes_route ON trellis_route_changes (route, id);
    CREATE TABLE trellis_hosts (
        id TEXT PRIMARY KEY, address TEXT NOT NULL, admin TEXT,
        started_ms INTEGER NOT NULL, last_seen_ms INTEGER NOT NULL,
        serving TEXT NOT NULL, errors TEXT NOT NULL);",
    "CREATE TABLE trellis_components (
        digest TEXT PRIMARY KEY, bytes BYTEA NOT NULL, size BIGINT NOT NULL,
        stored_ms BIGINT NOT NULL);
    CREATE TABLE trellis_routes (
        name TEXT PRIMARY KEY, version BIGINT, next_version BIGINT NOT NULL,
        generation BIGINT NOT NULL, changed_ms BIGINT NOT NULL);
    CREATE TABLE trellis_route_versions (
        route TEXT NOT NULL, version BIGINT NOT NULL,
        digest TEXT NOT NULL REFERENCES trellis_components (digest),
        settings TEXT NOT NULL, deployed_ms BIGINT NOT NULL, deployed_by TEXT NOT NULL,
        retired BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (route, version));
    CREATE TABLE trellis_route_changes (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, route TEXT NOT NULL,
        action TEXT NOT NULL, version BIGINT, digest TEXT, host TEXT NOT NULL,
        at_ms BIGINT NOT NULL);
    CREATE INDEX trellis_route_changes_route ON trellis_route_changes (route, id);
    CREATE TABLE trellis_hosts (
        id TEXT PRIMARY KEY, address TEXT NOT NULL, admin TEXT,
        started_ms BIGINT NOT NULL, last_seen_ms BIGINT NOT NULL,
        serving TEXT NOT NULL, errors TEXT NOT NULL);",
)];

/// The API keys of `store = "database"` policies: SHA-256 digests (lower-
/// case hex) only, never a key. One statement that both SQLite and
/// PostgreSQL take; times are RFC 3339 text, as in `trellis_migrations`.
const API_KEYS: (&str, &str) = (
    "trellis:api_keys.1",
    "CREATE TABLE IF NOT EXISTS trellis_api_keys (\
    digest TEXT PRIMARY KEY, \
    policy TEXT NOT NULL, \
    name TEXT NOT NULL, \
    created_at TEXT NOT NULL, \
    revoked_at TEXT, \
    UNIQUE (policy, name))",
);

/// Applies the host's deployment tables (when `shared_deployments`), then
/// every migration in `files` ((name, path), in order), each unless the
/// database has recorded it already.
pub(super) async fn apply(
    pool: &Pool,
    files: &[(String, PathBuf)],
    shared_deployments: bool,
) -> anyhow::Result<()> {
    if files.is_empty() && !shared_deployments {
        return Ok(());
    }
    let mut scripts = Vec::with_capacity(files.len() + 1);
    if shared_deployments {
        for (name, sqlite, postgres) in DEPLOYMENT_TABLES {
            let sql = match pool {
                Pool::Sqlite(_) => sqlite,
                Pool::Postgres(_) => postgres,
            };
            let checksum = hex(&Sha256::digest(sql.as_bytes()));
            scripts.push(((*name).to_owned(), (*sql).to_owned(), checksum));
        }
    }
    for (name, path) in files {
        let sql = std::fs::read_to_string(path)
            .with_context(|| format!("reading migration {name} ({})", path.display()))?;
        let checksum = hex(&Sha256::digest(sql.as_bytes()));
        scripts.push((name.clone(), sql, checksum));
    }
    run(pool, &scripts).await
}

/// Creates the host's `trellis_api_keys` table, once.
pub(super) async fn host_api_keys(pool: &Pool) -> anyhow::Result<()> {
    let (name, sql) = API_KEYS;
    let checksum = hex(&Sha256::digest(sql.as_bytes()));
    run(pool, &[(name.to_owned(), sql.to_owned(), checksum)]).await
}

/// Applies `scripts` ((name, SQL, checksum), in order) not yet recorded.
async fn run(pool: &Pool, scripts: &[(String, String, String)]) -> anyhow::Result<()> {
    // One body for both databases: the connection types differ, the
    // steps do not.
    macro_rules! apply_each {
        ($conn:expr) => {{
            let conn = $conn;
            conn.execute(CREATE).await.context("migrations: creating trellis_migrations")?;
            for (name, sql, checksum) in scripts.iter() {
                let applied: Option<String> =
                    sqlx::query_scalar("SELECT checksum FROM trellis_migrations WHERE name = $1")
                        .bind(name.as_str())
                        .fetch_optional(&mut *conn)
                        .await?;
                if check_applied(name, applied, checksum)? {
                    continue;
                }
                let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                let mut tx = conn.begin().await?;
                tx.execute(sqlx::raw_sql(sql.as_str())).await.with_context(|| format!("migration {name}"))?;
                sqlx::query("INSERT INTO trellis_migrations (name, checksum, applied_at) VALUES ($1, $2, $3)")
                    .bind(name.as_str())
                    .bind(checksum.as_str())
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .with_context(|| format!("migration {name}: recording it"))?;
                tx.commit().await.with_context(|| format!("migration {name}: commit"))?;
                tracing::info!(migration = %name, "migration applied");
            }
            anyhow::Ok(())
        }};
    }
    match pool {
        Pool::Sqlite(pool) => {
            let mut conn = pool
                .acquire()
                .await
                .context("migrations: acquiring a connection")?;
            apply_each!(&mut *conn)?;
            conn.release();
        }
        Pool::Postgres(pool) => {
            let mut conn = pool
                .acquire()
                .await
                .context("migrations: acquiring a connection")?;
            sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(LOCK_KEY)
                .execute(&mut *conn)
                .await
                .context("migrations: taking the advisory lock")?;
            let result = async { apply_each!(&mut *conn) }.await;
            let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(LOCK_KEY)
                .execute(&mut *conn)
                .await;
            conn.release();
            result?;
        }
    }
    Ok(())
}

/// Whether migration `name` is applied already; an error if it was applied
/// with different contents.
fn check_applied(name: &str, applied: Option<String>, checksum: &str) -> anyhow::Result<bool> {
    match applied {
        None => Ok(false),
        Some(recorded) if recorded == checksum => Ok(true),
        Some(_) => bail!(
            "migration {name} changed after it was applied (its checksum differs from the one recorded in trellis_migrations); add a new migration instead of editing an applied one"
        ),
    }
}

/// Creates the host's own tables for `what` (e.g. the job store) with
/// `statements`, each idempotent (`CREATE ... IF NOT EXISTS`). On
/// PostgreSQL under the migrations' advisory lock: two hosts creating the
/// same table at once would otherwise race in the catalog.
pub(super) async fn host_schema(
    pool: &Pool,
    what: &str,
    statements: &[&str],
) -> anyhow::Result<()> {
    match pool {
        Pool::Sqlite(pool) => {
            let mut conn = pool
                .acquire()
                .await
                .with_context(|| format!("{what} tables: acquiring a connection"))?;
            for statement in statements {
                conn.execute(*statement)
                    .await
                    .with_context(|| format!("{what} tables: {statement}"))?;
            }
            conn.release();
        }
        Pool::Postgres(pool) => {
            let mut conn = pool
                .acquire()
                .await
                .with_context(|| format!("{what} tables: acquiring a connection"))?;
            sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(LOCK_KEY)
                .execute(&mut *conn)
                .await
                .with_context(|| format!("{what} tables: taking the advisory lock"))?;
            let mut result = Ok(());
            for statement in statements {
                if let Err(err) = conn.execute(*statement).await {
                    result = Err(
                        anyhow::Error::from(err).context(format!("{what} tables: {statement}"))
                    );
                    break;
                }
            }
            let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(LOCK_KEY)
                .execute(&mut *conn)
                .await;
            conn.release();
            result?;
        }
    }
    Ok(())
}
