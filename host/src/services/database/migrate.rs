//! Migrations: the SQL files `[database].migrations` lists, applied once
//! each, in order, at start, and recorded in `trellis_migrations` with a
//! checksum so an edited migration is caught instead of silently skipped.
//!
//! On PostgreSQL an advisory lock serializes hosts starting together; on
//! SQLite the database's own write lock does.

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

/// Applies every migration in `files` ((name, path), in order) that the
/// database has not recorded yet.
pub(super) async fn apply(pool: &Pool, files: &[(String, PathBuf)]) -> anyhow::Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    let mut scripts = Vec::with_capacity(files.len());
    for (name, path) in files {
        let sql = std::fs::read_to_string(path)
            .with_context(|| format!("reading migration {name} ({})", path.display()))?;
        let checksum = hex(&Sha256::digest(sql.as_bytes()));
        scripts.push((name.as_str(), sql, checksum));
    }
    // One body for both databases: the connection types differ, the
    // steps do not.
    macro_rules! apply_each {
        ($conn:expr) => {{
            let conn = $conn;
            conn.execute(CREATE).await.context("migrations: creating trellis_migrations")?;
            for (name, sql, checksum) in &scripts {
                let applied: Option<String> =
                    sqlx::query_scalar("SELECT checksum FROM trellis_migrations WHERE name = $1")
                        .bind(*name)
                        .fetch_optional(&mut *conn)
                        .await?;
                if check_applied(name, applied, checksum)? {
                    continue;
                }
                let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                let mut tx = conn.begin().await?;
                tx.execute(sqlx::raw_sql(sql)).await.with_context(|| format!("migration {name}"))?;
                sqlx::query("INSERT INTO trellis_migrations (name, checksum, applied_at) VALUES ($1, $2, $3)")
                    .bind(*name)
                    .bind(checksum)
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
