//! API keys stored hashed in the host's database (`store = "database"`),
//! managed with `trellis keys add|list|revoke` against the manifest a
//! running host serves, on SQLite and on PostgreSQL: keys the CLI adds are
//! accepted, revoked ones refused within the policy's `cache_ttl`, and no
//! key is ever written to the database in the clear.

use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::database::{Db, on_both};
use crate::harness::{Launch, Manifest, TempDir, Trellis, assert_error, component, metric, unique};

/// The policy's `cache_ttl`: how late a revocation may take effect.
const CACHE_TTL: Duration = Duration::from_secs(1);

on_both!(stored_keys_are_added_listed_and_revoked);

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The manifest a `trellis keys` command reads, and the variable its
/// `{ env = ... }` values need (the CLI resolves them as the host does).
struct Cli<'a> {
    manifest: &'a std::path::Path,
    env: (&'a str, &'a str),
}

/// `trellis keys ARGS --manifest PATH`: (success, stdout, stderr).
async fn keys(cli: &Cli<'_>, args: &[&str]) -> (bool, String, String) {
    let dir = TempDir::new();
    let mut all = vec!["keys"];
    all.extend_from_slice(args);
    all.extend(["--manifest", cli.manifest.to_str().unwrap()]);
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(&all)
        .current_dir(dir.path())
        .env(cli.env.0, cli.env.1)
        .env_remove("TRELLIS_DATABASE_URL")
        .kill_on_drop(true)
        .output()
        .await
        .expect("running trellis keys");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Adds a key and returns it (stdout holds the key alone).
async fn add(cli: &Cli<'_>, args: &[&str]) -> String {
    let mut all = vec!["add", "partners"];
    all.extend_from_slice(args);
    let (ok, stdout, stderr) = keys(cli, &all).await;
    assert!(ok, "keys add failed: {stderr}");
    let key = stdout.trim().to_owned();
    assert!(
        key.starts_with("trk_") && key.len() == 4 + 64 && !key.contains(char::is_whitespace),
        "{stdout:?}"
    );
    assert!(stderr.contains("shown only this once"), "{stderr}");
    key
}

async fn get(trellis: &Trellis, key: &str) -> reqwest::Response {
    trellis
        .client()
        .get(trellis.url("/p"))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap()
}

async fn caller(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), 200);
    let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    body["caller"].clone()
}

async fn stored_keys_are_added_listed_and_revoked(db: Db) {
    let env = unique("TRELLIS_E2E_STORE_ENV")
        .to_uppercase()
        .replace('-', "_");
    let env_key = "an-env-key-0123456789abcdef";
    let manifest = db
        .manifest(Manifest::new())
        .section(&format!(
            "[auth.partners]\ntype = \"api-key\"\nheader = \"x-api-key\"\nstore = \"database\"\ncache_ttl = \"1s\"\nkeys = {{ env = {env:?} }}"
        ))
        .section(&format!(
            "[auth.envonly]\ntype = \"api-key\"\nheader = \"x-k\"\nkeys = {{ env = {env:?} }}"
        ))
        .route(
            "partner",
            "/p",
            component::IDENTITY_PROBE,
            &["auth = \"partners\"", "grants = [\"identity\", \"log\"]"],
        );
    let mut launch = Launch::manifest(manifest);
    launch.env.push((env.clone(), env_key.to_owned()));
    let trellis = Trellis::launch(launch).await;
    let path = trellis.manifest_path();
    // The host created the table at start, before any key existed.
    assert_eq!(db.scalar("SELECT COUNT(*) FROM trellis_api_keys").await, 0);

    let cli = Cli {
        manifest: &path,
        env: (&env, env_key),
    };
    let alpha = add(&cli, &["--name", "alpha"]).await;
    // Keys the CLI adds to a running host's database are accepted at once
    // (never presented before, so nothing remembered them as unknown).
    let found = caller(get(&trellis, &alpha).await).await;
    let alpha_digest = sha256_hex(&alpha);
    assert_eq!(found["policy"], "partners");
    assert_eq!(found["subject"], format!("api-key:{}", &alpha_digest[..12]));
    assert_eq!(found["claims"]["key_name"], "alpha", "{found}");
    // The environment's keys work beside the stored ones.
    let from_env = caller(get(&trellis, env_key).await).await;
    assert_eq!(from_env["claims"], serde_json::json!({}), "{from_env}");

    let beta = add(&cli, &[]).await;
    let beta_digest = sha256_hex(&beta);
    let beta_name = format!("key-{}", &beta_digest[..8]);
    assert_eq!(
        caller(get(&trellis, &beta).await).await["claims"]["key_name"],
        beta_name.as_str()
    );

    // Near misses and unknown keys are refused, and cost no instance.
    for bad in [
        &alpha[..alpha.len() - 1],
        &format!("{alpha}0"),
        &alpha.to_uppercase(),
        &alpha_digest,
        "trk_0000000000000000000000000000000000000000000000000000000000000000",
    ] {
        let response = get(&trellis, bad).await;
        let body = assert_error(response, 401, "UNAUTHORIZED").await;
        assert!(!body.to_string().contains(bad), "key echoed: {body}");
    }

    // `list` shows names, digest prefixes and times, never a key.
    let (ok, listing, stderr) = keys(&cli, &["list", "partners"]).await;
    assert!(ok, "{stderr}");
    assert!(listing.starts_with("NAME"), "{listing}");
    for (name, digest) in [("alpha", &alpha_digest), (&beta_name, &beta_digest)] {
        let line = listing
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} not listed: {listing}"));
        assert!(
            line.contains(&digest[..12]) && !line.contains(&digest[..13]),
            "{line}"
        );
        assert!(line.trim_end().ends_with(" -"), "not revoked yet: {line}");
    }
    assert!(
        !listing.contains(&alpha) && !listing.contains(&beta),
        "{listing}"
    );

    // Revoked by name: refused within cache_ttl, the other key unaffected.
    let (ok, _, stderr) = keys(&cli, &["revoke", "partners", "alpha"]).await;
    assert!(ok, "{stderr}");
    assert!(stderr.contains("within 1s"), "{stderr}");
    let revoked = Instant::now();
    let mut accepted = 3.0;
    loop {
        let status = get(&trellis, &alpha).await.status().as_u16();
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        accepted += 1.0;
        assert!(
            revoked.elapsed() < CACHE_TTL + Duration::from_millis(1500),
            "a revoked key still works {:?} after the revocation",
            revoked.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(&trellis, &beta).await.status(), 200);
    accepted += 1.0;

    // Revoked by digest prefix; ambiguity, unknown keys and reuse refused.
    let (ok, _, stderr) = keys(&cli, &["revoke", "partners", &beta_digest[..8]]).await;
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = keys(&cli, &["revoke", "partners", "alpha"]).await;
    assert!(!ok && stderr.contains("already revoked"), "{stderr}");
    let (ok, _, stderr) = keys(&cli, &["revoke", "partners", "nobody"]).await;
    assert!(!ok && stderr.contains("no key named"), "{stderr}");
    let (ok, _, stderr) = keys(&cli, &["add", "partners", "--name", "alpha"]).await;
    assert!(
        !ok && stderr.contains("already has a key named"),
        "{stderr}"
    );
    let (ok, _, stderr) = keys(&cli, &["add", "partners", "--name", "bad name"]).await;
    assert!(!ok && stderr.contains("key name"), "{stderr}");
    let (ok, _, stderr) = keys(&cli, &["add", "nosuch"]).await;
    assert!(!ok && stderr.contains("no policy \"nosuch\""), "{stderr}");
    let (ok, _, stderr) = keys(&cli, &["add", "envonly"]).await;
    assert!(!ok && stderr.contains("store = \"database\""), "{stderr}");
    tokio::time::sleep(CACHE_TTL + Duration::from_millis(200)).await;
    assert_eq!(get(&trellis, &beta).await.status(), 401);
    let (_, listing, _) = keys(&cli, &["list", "partners"]).await;
    assert_eq!(
        listing
            .lines()
            .filter(|l| l.trim_end().ends_with('Z'))
            .count(),
        2,
        "both keys show a revocation time: {listing}"
    );

    // The database holds digests only.
    assert_eq!(db.scalar("SELECT COUNT(*) FROM trellis_api_keys").await, 2);
    for (key, digest) in [(&alpha, &alpha_digest), (&beta, &beta_digest)] {
        let rows = db
            .scalar(&format!(
                "SELECT COUNT(*) FROM trellis_api_keys WHERE digest = '{digest}' AND policy = 'partners' AND revoked_at IS NOT NULL"
            ))
            .await;
        assert_eq!(rows, 1);
        let plain = db
            .scalar(&format!(
                "SELECT COUNT(*) FROM trellis_api_keys WHERE (digest || name || created_at || COALESCE(revoked_at, '')) LIKE '%{}%'",
                &key[4..]
            ))
            .await;
        assert_eq!(plain, 0, "a key is stored in the clear");
    }
    if !db.is_postgres() {
        let file = std::fs::read(db.sqlite_path()).unwrap();
        let wal = std::fs::read(db.sqlite_path().with_extension("db-wal")).unwrap_or_default();
        for key in [&alpha, &beta] {
            for bytes in [&file, &wal] {
                assert!(
                    !bytes
                        .windows(key.len() - 4)
                        .any(|w| w == &key.as_bytes()[4..]),
                    "a key is in the SQLite file"
                );
            }
        }
    }
    // Every accepted request ran the component; no refusal did.
    let ran = metric(
        &trellis,
        "trellis_instantiate_seconds_count",
        &[("route", "partner")],
    )
    .await;
    assert_eq!(ran, accepted);
}
