//! `trellis keys add|list|revoke`: the API keys of a `store = "database"`
//! api-key policy, in the database the manifest names (or
//! `TRELLIS_DATABASE_URL`), through the same pool and migrations a host
//! opens. A new key goes to stdout alone, once; everything else to stderr
//! or, for `list`, a table on stdout.

use crate::config::cli::{KeysAction, KeysCall};
use crate::config::units::Duration;
use crate::observability::metrics::Metrics;
use crate::services::auth::key_store::{self, SHOWN_DIGEST};
use crate::services::database::Database;
use anyhow::{Context as _, bail};

/// Runs one `trellis keys` command.
pub async fn run(call: KeysCall) -> anyhow::Result<()> {
    let KeysCall {
        manifest,
        database_url,
        action,
    } = call;
    let name = match &action {
        KeysAction::Add { policy, .. }
        | KeysAction::List { policy }
        | KeysAction::Revoke { policy, .. } => policy.clone(),
    };
    let Some(policy) = manifest.auth.get(&name) else {
        bail!(
            "no policy {name:?} in [auth]; declared: {}",
            manifest
                .auth
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    if !policy.stores_keys_in_database() {
        bail!(
            "policy {name:?} does not keep keys in the database: give [auth.{name}] store = \"database\" (and type = \"api-key\")"
        );
    }
    let metrics = Metrics::new();
    let database = Database::new(&manifest, database_url.as_deref(), &metrics);
    let what = || format!("keys: the database at {}", database.display_url());
    let result = async {
        match action {
            KeysAction::Add { name: label, .. } => {
                let new = key_store::add(&database, &name, label.as_deref())
                    .await
                    .with_context(what)?;
                println!("{}", new.key);
                eprintln!(
                    "added key {:?} (digest {}) to policy {name:?}; the key is shown only this once",
                    new.stored.name,
                    &new.stored.digest[..SHOWN_DIGEST]
                );
            }
            KeysAction::List { .. } => {
                let keys = key_store::list(&database, &name).await.with_context(what)?;
                println!(
                    "{:<24} {:<width$} {:<24} REVOKED",
                    "NAME",
                    "DIGEST",
                    "CREATED",
                    width = SHOWN_DIGEST
                );
                for key in keys {
                    println!(
                        "{:<24} {:<width$} {:<24} {}",
                        key.name,
                        &key.digest[..SHOWN_DIGEST],
                        key.created_at,
                        key.revoked_at.as_deref().unwrap_or("-"),
                        width = SHOWN_DIGEST
                    );
                }
            }
            KeysAction::Revoke { key, .. } => {
                let revoked = key_store::revoke(&database, &name, &key)
                    .await
                    .with_context(what)?;
                eprintln!(
                    "revoked key {:?} (digest {}) of policy {name:?}; running hosts refuse it within {}",
                    revoked.name,
                    &revoked.digest[..SHOWN_DIGEST],
                    Duration(policy.key_cache_ttl())
                );
            }
        }
        anyhow::Ok(())
    }
    .await;
    database.close().await;
    result
}
