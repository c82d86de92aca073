//! The database behind the `sql` capability: one sqlx pool owned by the
//! host, embedded SQLite by default, PostgreSQL when the operator says so.
//!
//! The pool opens on first need (at start when the manifest has a
//! `[database]` table or a route grants `sql`, else on the first hot load
//! of such a route), so a host with no SQL routes never creates a file.

mod migrate;
pub mod pool;

/// Creates tables the host itself owns (the job store's), idempotently.
pub async fn host_schema(pool: &Pool, what: &str, statements: &[&str]) -> anyhow::Result<()> {
    migrate::host_schema(pool, what, statements).await
}

use crate::config::manifest::{self, Manifest, Migration};
use crate::observability::metrics::Metrics;
use sqlx::postgres::{PgConnectOptions, Postgres};
use sqlx::sqlite::{Sqlite, SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;
use tokio::sync::OnceCell;

/// A connection pool of either database.
#[derive(Clone, Debug)]
pub enum Pool {
    /// Embedded SQLite.
    Sqlite(pool::Pool<Sqlite>),
    /// PostgreSQL.
    Postgres(pool::Pool<Postgres>),
}

/// Which database a URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Embedded SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// The host's database: settings now, the pool once opened.
pub struct Database {
    url: String,
    kind: Kind,
    settings: manifest::Database,
    /// Migrations for this database's dialect: (name, file).
    migrations: Vec<(String, PathBuf)>,
    /// Whether the manifest asks for the database: open it at start.
    wanted: bool,
    /// `[deployments] shared`: the host's own deployment tables are
    /// created (by [`migrate`]) before the operator's migrations.
    shared_deployments: bool,
    /// Whether an api-key policy keeps its keys here: create the host's
    /// `trellis_api_keys` table at start.
    wants_api_keys: bool,
    pool: OnceCell<Pool>,
    /// Set once `trellis_api_keys` exists.
    api_keys: OnceCell<()>,
    /// `trellis_db_pool_connections{state}`, refreshed at each scrape.
    connections: prometheus::IntGaugeVec,
    /// `trellis_db_acquire_seconds`: waiting for a pooled connection.
    acquire: prometheus::Histogram,
}

impl Database {
    /// The database `manifest` describes (or the embedded default), with
    /// `TRELLIS_DATABASE_URL` taking precedence over `[database].url`.
    pub fn new(manifest: &Manifest, url_override: Option<&str>, metrics: &Metrics) -> Database {
        let settings = manifest.database.clone().unwrap_or_default();
        let url = match url_override {
            Some(url) => url.to_owned(),
            None => match &settings.url {
                Some(url) => sqlite_relative_to(url.get_ref(), &manifest.base_dir),
                None => sqlite_relative_to("sqlite://trellis.db", &manifest.base_dir),
            },
        };
        let kind = if url.starts_with("sqlite:") {
            Kind::Sqlite
        } else {
            Kind::Postgres
        };
        let migrations = settings
            .migrations
            .iter()
            .map(|m| {
                let file = match (m.get_ref(), kind) {
                    (Migration::Both(f), _) => f,
                    (Migration::PerDialect { sqlite, .. }, Kind::Sqlite) => sqlite,
                    (Migration::PerDialect { postgres, .. }, Kind::Postgres) => postgres,
                };
                (file.clone(), manifest.base_dir.join(file))
            })
            .collect();
        let shared_deployments = manifest.deployments.shared;
        let wants_api_keys = manifest.auth.values().any(|p| p.stores_keys_in_database());
        // Background jobs are stored in the database too.
        let wanted = manifest.database.is_some()
            || shared_deployments
            || wants_api_keys
            || manifest.uses_jobs()
            || manifest.routes.iter().any(|r| {
                r.grants
                    .as_ref()
                    .is_some_and(|g| g.get_ref().iter().any(|g| g == "sql"))
            });
        let connections = metrics.register(
            &prometheus::IntGaugeVec::new(
                prometheus::Opts::new(
                    "trellis_db_pool_connections",
                    "SQL pool connections by state (idle, in_use) and the pool's max.",
                ),
                &["state"],
            )
            .expect("valid metric"),
        );
        let acquire = metrics.register(
            &prometheus::Histogram::with_opts(
                prometheus::HistogramOpts::new(
                    "trellis_db_acquire_seconds",
                    "Time a SQL call waited for a pooled connection.",
                )
                .buckets(vec![
                    0.00001, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
                ]),
            )
            .expect("valid metric"),
        );
        Database {
            url,
            kind,
            settings,
            migrations,
            wanted,
            shared_deployments,
            wants_api_keys,
            pool: OnceCell::new(),
            api_keys: OnceCell::new(),
            connections,
            acquire,
        }
    }

    /// Which database this is.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The URL without its password, for logs.
    pub fn display_url(&self) -> String {
        crate::observability::telemetry::redact_url(&self.url)
    }

    /// How long one statement may run.
    pub fn statement_timeout(&self) -> Duration {
        self.settings.statement_timeout.0
    }

    /// Opens the pool and applies migrations, when the manifest asks for a
    /// database: a host that cannot reach its database should not start.
    pub async fn open_if_wanted(&self) -> anyhow::Result<()> {
        if self.wanted {
            self.pool().await?;
        }
        if self.wants_api_keys {
            self.with_api_keys().await?;
        }
        Ok(())
    }

    /// The pool, with the host's `trellis_api_keys` table created (by a
    /// host migration, on first call).
    pub async fn with_api_keys(&self) -> anyhow::Result<&Pool> {
        let pool = self.pool().await?;
        self.api_keys
            .get_or_try_init(|| async {
                migrate::host_api_keys(pool)
                    .await
                    .map_err(|e| e.context("creating trellis_api_keys"))
            })
            .await?;
        Ok(pool)
    }

    /// The pool, opened (and migrated) on first call. A failed open is
    /// retried by the next call.
    pub async fn pool(&self) -> anyhow::Result<&Pool> {
        self.pool
            .get_or_try_init(|| async {
                let pool = self.connect().await?;
                migrate::apply(&pool, &self.migrations, self.shared_deployments).await?;
                tracing::info!(url = %self.display_url(), max_connections = self.settings.max_connections, "database ready");
                Ok(pool)
            })
            .await
    }

    /// The pool if it is open; health checks skip a database nothing used.
    pub fn opened(&self) -> Option<&Pool> {
        self.pool.get()
    }

    /// Where SQL calls record how long they waited for a connection.
    pub fn acquire_histogram(&self) -> &prometheus::Histogram {
        &self.acquire
    }

    /// Refreshes the pool gauges (called when `/metrics` is scraped).
    pub fn update_gauges(&self) {
        let (size, idle) = match self.pool.get() {
            Some(Pool::Sqlite(p)) => (p.size(), p.num_idle() as u32),
            Some(Pool::Postgres(p)) => (p.size(), p.num_idle() as u32),
            None => (0, 0),
        };
        let set = |state: &str, n: u32| self.connections.with_label_values(&[state]).set(n.into());
        set("idle", idle);
        set("in_use", size.saturating_sub(idle));
        set("max", self.settings.max_connections);
    }

    /// One round trip on a pooled connection.
    pub async fn ping(&self) -> anyhow::Result<()> {
        match self.pool.get() {
            Some(Pool::Sqlite(pool)) => pool.ping().await?,
            Some(Pool::Postgres(pool)) => pool.ping().await?,
            None => {}
        }
        Ok(())
    }

    /// Closes the pool, waiting a little for connections in use to come
    /// back.
    pub async fn close(&self) {
        const WITHIN: Duration = Duration::from_secs(5);
        match self.pool.get() {
            Some(Pool::Sqlite(pool)) => pool.close(WITHIN).await,
            Some(Pool::Postgres(pool)) => pool.close(WITHIN).await,
            None => {}
        }
    }

    /// A connection of its own that receives PostgreSQL notifications
    /// (`LISTEN`), reconnecting when it is lost; `None` on SQLite, which
    /// has none. Opened like the pool's connections, outside the pool so it
    /// never holds one of the guests' slots.
    pub async fn listener(&self) -> anyhow::Result<Option<sqlx::postgres::PgListener>> {
        use anyhow::Context as _;
        if self.kind != Kind::Postgres {
            return Ok(None);
        }
        let options = PgConnectOptions::from_str(&self.url)
            .with_context(|| format!("connecting to {}", self.display_url()))?
            .application_name("trellis-listener");
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(self.settings.acquire_timeout.0)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_with(options)
            .await
            .with_context(|| format!("connecting to {}", self.display_url()))?;
        let listener = sqlx::postgres::PgListener::connect_with(&pool)
            .await
            .context("opening the notification listener")?;
        Ok(Some(listener))
    }

    async fn connect(&self) -> anyhow::Result<Pool> {
        use anyhow::Context as _;
        let s = &self.settings;
        let what = || format!("connecting to {}", self.display_url());
        let settings = pool::Settings {
            max: s.max_connections,
            min: s.min_connections,
            acquire_timeout: s.acquire_timeout.0,
            idle_timeout: s.idle_timeout.0,
        };
        Ok(match self.kind {
            Kind::Sqlite => {
                let options = SqliteConnectOptions::from_str(&self.url)
                    .with_context(what)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(s.acquire_timeout.0);
                let pool = pool::Pool::connect(options, settings, Some(clear_progress_handler))
                    .await
                    .with_context(what)?;
                Pool::Sqlite(pool)
            }
            Kind::Postgres => {
                let timeout_ms = s.statement_timeout.0.as_millis();
                let options = PgConnectOptions::from_str(&self.url)
                    .with_context(what)?
                    .application_name("trellis")
                    .options([("statement_timeout", format!("{timeout_ms}ms"))]);
                // No ping before each use: it would double the round trips
                // of a one-query request. A connection the server dropped
                // fails its statement with `unavailable`, and the pool
                // discards it.
                let pool = pool::Pool::connect(options, settings, None)
                    .await
                    .with_context(what)?;
                Pool::Postgres(pool)
            }
        })
    }
}

/// A statement that timed out leaves its progress handler (see
/// `capabilities::sql::value`) behind; it is cleared before the
/// connection's next use.
fn clear_progress_handler(
    conn: &mut sqlx::SqliteConnection,
) -> futures::future::BoxFuture<'_, Result<(), sqlx::Error>> {
    Box::pin(async move {
        conn.lock_handle().await?.remove_progress_handler();
        Ok(())
    })
}

/// A `sqlite:` URL with a relative path made relative to `base` (the
/// manifest's directory), so the database does not depend on the working
/// directory. Other URLs come back unchanged.
fn sqlite_relative_to(url: &str, base: &Path) -> String {
    let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return url.to_owned();
    };
    let (path, query) = rest
        .split_once('?')
        .map_or((rest, None), |(p, q)| (p, Some(q)));
    if path.is_empty() || path.starts_with(':') || Path::new(path).is_absolute() {
        return url.to_owned();
    }
    let joined = base.join(path);
    match query {
        Some(q) => format!("sqlite://{}?{q}", joined.display()),
        None => format!("sqlite://{}", joined.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_paths_are_relative_to_the_manifest() {
        let base = Path::new("/srv/app");
        assert_eq!(
            sqlite_relative_to("sqlite://data/app.db", base),
            "sqlite:///srv/app/data/app.db"
        );
        assert_eq!(
            sqlite_relative_to("sqlite:app.db?mode=rwc", base),
            "sqlite:///srv/app/app.db?mode=rwc"
        );
        assert_eq!(
            sqlite_relative_to("sqlite:///abs.db", base),
            "sqlite:///abs.db"
        );
        assert_eq!(
            sqlite_relative_to("sqlite::memory:", base),
            "sqlite::memory:"
        );
        assert_eq!(
            sqlite_relative_to("postgres://h/db", base),
            "postgres://h/db"
        );
    }
}
