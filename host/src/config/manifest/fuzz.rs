//! A mutation fuzzer for the manifest parser, run as a unit test for a
//! bounded number of cases: real manifests, bytes flipped, cut, repeated
//! or spliced with tokens that have broken parsers before. Whatever comes
//! out, parsing must return (never panic) and an error must name the
//! manifest. `TRELLIS_FUZZ_CASES` sets the number of cases (default
//! 4000) and `TRELLIS_FUZZ_SEED` replays a run; a failure prints both.

use super::Manifest;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use std::path::{Path, PathBuf};

/// Manifests to start from: every example, and one with every section.
const SEEDS: &[&str] = &[
    include_str!("../../../../examples/quickstart/trellis.toml"),
    include_str!("../../../../examples/users/trellis.toml"),
    include_str!("../../../../benches/users.toml"),
    r#"
[server]
listen = "127.0.0.1:8080"
shutdown_grace = "5s"
header_timeout = "10s"
idle_timeout = "60s"
max_connections = 100
[database]
url = "sqlite://t.db"
max_connections = 4
migrations = ["m.sql", { sqlite = "a.sql", postgres = "b.sql" }]
[redis]
url = "redis://127.0.0.1:6379"
timeout = "250ms"
[cache]
memory = "64MiB"
max_value = "1MiB"
[rate_limits.per_ip]
requests = 100
window = "1m"
key = "header:x-api-key"
[[route]]
name = "users"
path = "/users/{id}"
methods = ["GET", "PUT"]
component = "u.wasm"
grants = ["sql", "cache", "log", "config"]
timeout = "2s"
memory = "32MiB"
max_body = "1MiB"
max_concurrency = 64
queue_timeout = "100ms"
rate_limit = "per_ip"
cache = { ttl = "30s", vary = ["accept"] }
config = { page = "20", home = { env = "HOME", default = "/" } }
secrets = { token = "s" }
cache_namespace = "users"
"#,
];

/// Tokens that sit at the edges of the grammar and of our units.
const TOKENS: &[&str] = &[
    "=",
    "[[route]]",
    "[server]",
    "\"",
    "'",
    "{",
    "}",
    "[",
    "]",
    ",",
    "\n",
    "#",
    "\\u0000",
    "99999999999999h",
    "18446744073709551616",
    "-1",
    "0",
    "1e308",
    "0s",
    "1KiB",
    "9999999TiB",
    "\u{0}",
    "\u{feff}",
    "é",
    "..",
    "/",
    "{*rest}",
    "{id}",
    "env",
    "ms",
    "nan",
    "inf",
];

fn mutate(rng: &mut StdRng, text: &str) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for _ in 0..rng.gen_range(1..=4) {
        let at = rng.gen_range(0..=bytes.len());
        match rng.gen_range(0..5) {
            0 if !bytes.is_empty() => {
                let i = at.min(bytes.len() - 1);
                bytes[i] ^= 1 << rng.gen_range(0..8);
            }
            1 => {
                let end = (at + rng.gen_range(0..32)).min(bytes.len());
                bytes.drain(at..end);
            }
            2 => {
                let end = (at + rng.gen_range(0..64)).min(bytes.len());
                let copy = bytes[at..end].to_vec();
                bytes.splice(at..at, copy);
            }
            _ => {
                let token = TOKENS[rng.gen_range(0..TOKENS.len())];
                bytes.splice(at..at, token.bytes());
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn the_parser_survives_mutated_manifests() {
    let cases: usize = crate::config::env::lookup("TRELLIS_FUZZ_CASES")
        .and_then(|n| n.parse().ok())
        .unwrap_or(4000);
    let seed: u64 = crate::config::env::lookup("TRELLIS_FUZZ_SEED")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(crate::ids::random_u64);
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut accepted, mut refused) = (0, 0);
    for case in 0..cases {
        let text = mutate(&mut rng, SEEDS[case % SEEDS.len()]);
        let parsed = std::panic::catch_unwind(|| {
            Manifest::parse(&text, Path::new("fuzz.toml"), PathBuf::from("."))
        });
        match parsed {
            Ok(Ok(_)) => accepted += 1,
            Ok(Err(err)) => {
                let shown = err.to_string();
                assert!(
                    shown.starts_with("manifest fuzz.toml"),
                    "seed {seed}, case {case}: an error that does not name the manifest: {shown}\n{text}"
                );
                refused += 1;
            }
            Err(_) => panic!("seed {seed}, case {case}: the parser panicked on:\n{text}"),
        }
    }
    // A fuzzer that only ever produced garbage (or never did) tests little.
    assert!(
        accepted > 0 && refused > 0,
        "seed {seed}: {accepted} accepted, {refused} refused"
    );
}
