//! End-to-end tests: each test runs the real `trellis` binary on
//! `127.0.0.1:0` with its own manifest, cache dir and process, and talks to it
//! over HTTP like any client.
//!
//! The guest components come from `host/build.rs`, which exports their paths
//! as `<NAME>_COMPONENT` and lists them in `foreach_plugin!`. `plugins` has one
//! test per plugin, named after it, and the build fails if one is missing.
//!
//! `harness` holds what the tests share: the host process, manifests,
//! clients, waits, and Redis and PostgreSQL servers of a test's own.

mod auth;
mod auth_keys;
mod cache;
mod cache_dir;
mod cli;
mod config_and_log;
mod cors;
mod database;
mod fairness;
mod faults;
mod fleet;
mod grants;
mod harness;
mod health;
mod hostile;
mod hostile_connections;
mod hostile_edge;
mod hostile_fuzz;
mod hotload;
mod http_edge;
mod jobs;
mod limits;
mod metrics;
mod migrations;
mod oci;
mod outbound;
mod plugins;
mod probe;
mod rate_limit;
mod reuse;
mod routing;
mod scaffold;
mod schema;
mod shutdown;
mod sql;
mod sql_streams;
mod sql_tls;
mod sql_transactions;
mod streaming;
mod tiered_cache;
mod traces;
mod users;
mod wasi_p3;

include!(concat!(env!("OUT_DIR"), "/components.rs"));

macro_rules! assert_test_exists {
    ($name:ident) => {
        #[expect(unused_imports, reason = "only here to check that the test exists")]
        use self::plugins::$name as _;
    };
}
foreach_plugin!(assert_test_exists);
