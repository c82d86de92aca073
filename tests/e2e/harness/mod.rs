//! Test harness: runs the real `trellis` binary on `127.0.0.1:0` and gives
//! tests its address, its JSON log lines and its process, plus the
//! manifests, clients, servers and waits they need around it.
//!
//! - [`host`]: spawning `trellis serve` ([`Trellis`], [`Launch`]) and
//!   one-shot commands ([`run_cli`]); its log lines and process.
//! - [`manifest`]: building the `trellis.toml` a host serves.
//! - [`scratch`]: what a test owns alone: temp dirs and unique names.
//! - [`component`]: the guest components `host/build.rs` builds, their
//!   digests, and the precompiled-component cache the tests share.
//! - [`http`]: clients, and assertions on the responses every route gives.
//! - [`metrics`]: one figure from `GET /metrics`.
//! - [`wait`]: waiting on observable state, bounded by [`WAIT`].
//! - [`tls`]: a CA and a server certificate made for a test.
//! - [`upstream`]: an HTTP(S) server the outbound tests call through a
//!   guest, counting connections and requests.
//! - [`redis`], [`postgres`]: the shared servers' addresses, and servers of
//!   a test's own that it may stop and start.
//! - [`registry`]: an OCI registry (`docker-registry`) of a test's own.

use std::time::Duration;

pub(crate) mod component;
mod host;
mod http;
mod manifest;
mod metrics;
mod openapi;
mod postgres;
mod redis;
mod registry;
mod scratch;
mod tls;
mod upstream;
mod wait;

pub(crate) use self::component::{sha256_hex, shared_cache_dir};
pub(crate) use self::host::{Launch, Memory, Trellis, run_cli};
pub(crate) use self::http::{
    assert_error, assert_security_headers, client_builder, header, raw_client,
};
pub(crate) use self::manifest::Manifest;
pub(crate) use self::metrics::{instances, metric, wait_idle};
pub(crate) use self::openapi::assert_valid_openapi;
pub(crate) use self::postgres::PostgresServer;
pub(crate) use self::redis::{RedisServer, redis_url};
pub(crate) use self::registry::{Registry, TokenServer};
pub(crate) use self::scratch::{TempDir, unique};
pub(crate) use self::tls::{make_certs, openssl, rsa_der};
pub(crate) use self::upstream::Upstream;
pub(crate) use self::wait::{wait_until, wait_until_busy};

/// How long a host may take from spawn to `listening`. Generous: test builds
/// of the host are unoptimized, and compiling components is their slowest part.
pub(crate) const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);

/// Default bound on any single wait in a test.
pub(crate) const WAIT: Duration = Duration::from_secs(30);

pub(crate) const MIB: u64 = 1024 * 1024;

/// Serializes the tests that move gigabytes: two at once would starve the
/// 2-core machine and blur each other's memory measurements.
pub(crate) static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
