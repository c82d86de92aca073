//! The guest components `host/build.rs` builds from `tests/plugins/`: their
//! paths, their digests as the host reports them, and the
//! precompiled-component cache the tests share.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

// Paths of the guest components, one per plugin.
pub(crate) const HELLO: &str = env!("HELLO_COMPONENT");
pub(crate) const ECHO: &str = env!("ECHO_COMPONENT");
pub(crate) const TRAP: &str = env!("TRAP_COMPONENT");
pub(crate) const LOOP: &str = env!("LOOP_FOREVER_COMPONENT");
pub(crate) const MEMBOMB: &str = env!("MEMBOMB_COMPONENT");
pub(crate) const STREAM: &str = env!("STREAM_COMPONENT");
pub(crate) const SLOW: &str = env!("SLOW_COMPONENT");
pub(crate) const WSTD_HELLO: &str = env!("WSTD_HELLO_COMPONENT");
pub(crate) const VERSION_A: &str = env!("VERSION_A_COMPONENT");
pub(crate) const VERSION_B: &str = env!("VERSION_B_COMPONENT");
pub(crate) const BIG_BLOB: &str = env!("BIG_BLOB_COMPONENT");
pub(crate) const USERS: &str = env!("USERS_COMPONENT");
pub(crate) const SQL_PROBE: &str = env!("SQL_PROBE_COMPONENT");
pub(crate) const CACHE_PROBE: &str = env!("CACHE_PROBE_COMPONENT");
pub(crate) const METRICS_PROBE: &str = env!("METRICS_PROBE_COMPONENT");
pub(crate) const READY_PROBE: &str = env!("READY_PROBE_COMPONENT");
pub(crate) const LIMIT_PROBE: &str = env!("LIMIT_PROBE_COMPONENT");
pub(crate) const OUTBOUND_PROBE: &str = env!("OUTBOUND_PROBE_COMPONENT");
pub(crate) const IDENTITY_PROBE: &str = env!("IDENTITY_PROBE_COMPONENT");
pub(crate) const COUNTER: &str = env!("COUNTER_COMPONENT");
pub(crate) const P3_COUNTER: &str = env!("P3_COUNTER_COMPONENT");
pub(crate) const P3_HELLO: &str = env!("P3_HELLO_COMPONENT");
pub(crate) const QUOTES: &str = env!("QUOTES_COMPONENT");
pub(crate) const JOB_PROBE: &str = env!("JOB_PROBE_COMPONENT");
pub(crate) const JOB_WORKER: &str = env!("JOB_WORKER_COMPONENT");
pub(crate) const EMAILS: &str = env!("EMAILS_COMPONENT");
pub(crate) const MAILER: &str = env!("MAILER_COMPONENT");

/// Hex sha256 of a file, as the host reports component digests.
pub(crate) fn sha256_hex(path: &str) -> String {
    use sha2::Digest as _;
    let bytes = std::fs::read(path).expect("reading a component");
    sha2::Sha256::digest(bytes)
        .iter()
        .fold(String::new(), |mut s, b| {
            write!(s, "{b:02x}").expect("writing to a String");
            s
        })
}

/// A precompiled-component cache shared across runs by the tests that are
/// not about the cache: compiling the same components afresh in every
/// SQL test would dominate their run time. Entries are keyed by digest and
/// written atomically, so concurrent hosts can share it.
pub(crate) fn shared_cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e-component-cache")
}
