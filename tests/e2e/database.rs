//! Databases for end-to-end tests: a SQLite file in a temp dir, or a
//! PostgreSQL schema of the test's own on the real server, so tests run in
//! parallel without seeing each other's tables. The host reaches the
//! schema through the URL's `options=-csearch_path=<schema>`.
//!
//! PostgreSQL is required, never skipped: `TRELLIS_TEST_DATABASE_URL`
//! points at it (default `postgres://postgres@127.0.0.1:5432/test`).

use std::path::PathBuf;

use sqlx::Connection as _;

use crate::harness::{Manifest, TempDir, unique};

const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The PostgreSQL server the tests use.
pub(crate) fn pg_server_url() -> String {
    std::env::var("TRELLIS_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_owned())
}

/// Runs the test body `name(db: Db)` once on SQLite and once on PostgreSQL,
/// as `name::sqlite` and `name::postgres`.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::database::Db::sqlite()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::database::Db::postgres().await).await;
            }
        }
    )*};
}
pub(crate) use on_both;

/// A test's own database.
pub(crate) enum Db {
    /// `test.db` in a temp dir of its own.
    Sqlite(TempDir),
    Postgres(PgSchema),
}

impl Db {
    pub(crate) fn sqlite() -> Db {
        Db::Sqlite(TempDir::new())
    }

    pub(crate) async fn postgres() -> Db {
        Db::Postgres(PgSchema::create().await)
    }

    /// What `[database].url` (or `TRELLIS_DATABASE_URL`) is set to.
    pub(crate) fn url(&self) -> String {
        match self {
            Db::Sqlite(_) => format!("sqlite://{}", self.sqlite_path().display()),
            Db::Postgres(schema) => schema.url(),
        }
    }

    /// The SQLite file; panics on PostgreSQL.
    pub(crate) fn sqlite_path(&self) -> PathBuf {
        match self {
            Db::Sqlite(dir) => dir.path().join("test.db"),
            Db::Postgres(_) => panic!("not a SQLite database"),
        }
    }

    /// `sqlite` or `postgres`, as the `dialect` function names them.
    pub(crate) fn dialect(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    pub(crate) fn is_postgres(&self) -> bool {
        matches!(self, Db::Postgres(_))
    }

    /// `manifest` with `[database] url` set to this database.
    pub(crate) fn manifest(&self, manifest: Manifest) -> Manifest {
        manifest.database(&format!("url = {:?}", self.url()))
    }

    /// `sql` on a connection of the test's own, not the host's: the first
    /// column of the first row as an integer.
    pub(crate) async fn scalar(&self, sql: &str) -> i64 {
        match self {
            Db::Sqlite(_) => {
                let options =
                    sqlx::sqlite::SqliteConnectOptions::new().filename(self.sqlite_path());
                let mut conn = sqlx::SqliteConnection::connect_with(&options)
                    .await
                    .expect("opening the test's SQLite file");
                sqlx::query_scalar(sql)
                    .fetch_one(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"))
            }
            Db::Postgres(schema) => {
                let mut conn = schema.connect().await;
                sqlx::query_scalar(sql)
                    .fetch_one(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"))
            }
        }
    }
}

/// A schema of its own on the test server, dropped (with its tables) on drop.
pub(crate) struct PgSchema {
    name: String,
    server: String,
}

impl PgSchema {
    pub(crate) async fn create() -> PgSchema {
        let name = unique("e2e_");
        let server = pg_server_url();
        let mut conn = sqlx::PgConnection::connect(&server)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL at {server} is not reachable ({e}). These tests need it; \
                 point TRELLIS_TEST_DATABASE_URL at a server (trust auth) to run them."
                )
            });
        sqlx::query(&format!("CREATE SCHEMA {name}"))
            .execute(&mut conn)
            .await
            .expect("creating the test's schema");
        PgSchema { name, server }
    }

    /// The server URL with `search_path` set to this schema.
    pub(crate) fn url(&self) -> String {
        let separator = if self.server.contains('?') { '&' } else { '?' };
        format!(
            "{}{separator}options=-csearch_path%3D{}",
            self.server, self.name
        )
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) async fn connect(&self) -> sqlx::PgConnection {
        sqlx::PgConnection::connect(&self.url())
            .await
            .expect("connecting to the test's schema")
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        // Drop runs inside the test's runtime, which cannot be blocked on;
        // a thread with a runtime of its own can.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("building a runtime");
            runtime.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&server).await?;
                sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                    .execute(&mut conn)
                    .await
                    .map(drop)
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) && !std::thread::panicking() {
            eprintln!("could not drop test schema {}: {dropped:?}", self.name);
        }
    }
}

/// A TCP proxy in front of the test's PostgreSQL server that the test can
/// cut and restore, to take the database away from a running host without
/// stopping a server other tests share.
pub(crate) struct PgProxy {
    addr: std::net::SocketAddr,
    upstream: String,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl PgProxy {
    /// Listens on a free loopback port and forwards to the test server.
    pub(crate) async fn start() -> PgProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let mut proxy = PgProxy {
            addr,
            upstream: authority(&pg_server_url()).to_owned(),
            task: None,
        };
        proxy.serve(listener);
        proxy
    }

    /// `url` (a test server URL) with the proxy in place of the server.
    pub(crate) fn route(&self, url: &str) -> String {
        url.replacen(authority(url), &self.addr.to_string(), 1)
    }

    /// Stops accepting and drops every connection through the proxy.
    pub(crate) fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// Accepts connections again, on the same port.
    pub(crate) async fn restore(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .expect("rebinding the proxy's port");
        self.serve(listener);
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let upstream = self.upstream.clone();
        self.task = Some(tokio::spawn(async move {
            // Connections live in this set, so aborting the task drops them all.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                connections.spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        }));
    }
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.cut();
    }
}

/// The `host:port` of a `postgres://[user[:password]@]host:port/db` URL.
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, rest)| rest);
    rest.split(['/', '?']).next().unwrap_or(rest)
}
