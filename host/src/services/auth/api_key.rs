//! `type = "api-key"`: a key in a named header, accepted when it is one of
//! the keys in the environment (compared in constant time against each)
//! or a live key in the database store (looked up by digest, lookups
//! remembered for the policy's `cache_ttl`).

use super::{AuthError, Identity, key_store};
use crate::config::manifest::AuthPolicy;
use crate::services::database::Database;
use sha2::{Digest as _, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq as _;

/// Most lookups a store remembers (live keys and unknown ones).
const CACHE_ENTRIES: u64 = 10_000;

/// One api-key policy.
pub struct ApiKeyPolicy {
    name: Arc<str>,
    /// The request header carrying the key.
    pub header: http::HeaderName,
    /// SHA-256 digests of the keys from the environment, each with the
    /// caller it names: comparing digests of equal length keeps the
    /// comparison's time independent of the key's length as well as its
    /// bytes.
    env: Vec<([u8; 32], Arc<Identity>)>,
    /// The database store, with `store = "database"`.
    store: Option<Store>,
}

/// Keys in the database, and what lookups found lately.
struct Store {
    database: Arc<Database>,
    /// Digest to the caller (`None`: no live key has that digest), kept
    /// for the policy's `cache_ttl`: how late a revocation (or a new key
    /// presented just before it was added) takes effect. Concurrent
    /// lookups of one digest share one query.
    found: moka::future::Cache<[u8; 32], Option<Arc<Identity>>>,
}

impl ApiKeyPolicy {
    pub(super) fn new(
        name: Arc<str>,
        policy: &AuthPolicy,
        database: Option<&Arc<Database>>,
    ) -> anyhow::Result<ApiKeyPolicy> {
        let header = policy
            .header
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no header"))?;
        let store = if policy.stores_keys_in_database() {
            let database = database
                .ok_or_else(|| anyhow::anyhow!("store = \"database\" needs the host's database"))?;
            Some(Store {
                database: database.clone(),
                found: moka::future::Cache::builder()
                    .max_capacity(CACHE_ENTRIES)
                    .time_to_live(policy.key_cache_ttl())
                    .build(),
            })
        } else {
            None
        };
        Ok(ApiKeyPolicy {
            header: http::HeaderName::from_bytes(header.get_ref().as_bytes())?,
            env: policy
                .resolved
                .keys
                .iter()
                .map(|k| {
                    let digest: [u8; 32] = Sha256::digest(k).into();
                    (digest, Arc::new(identity(&name, &digest, None)))
                })
                .collect(),
            store,
            name,
        })
    }

    pub(super) async fn verify(&self, presented: &[u8]) -> Result<Arc<Identity>, AuthError> {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        // Every key is compared, whichever matches, so the time taken
        // says nothing about which key (or how much of one) was right.
        let matched = self
            .env
            .iter()
            .fold(subtle::Choice::from(0), |acc, (d, _)| {
                acc | d.ct_eq(&digest)
            });
        if bool::from(matched) {
            // Which of the keys it is: the caller holds a right key.
            if let Some((_, id)) = self.env.iter().find(|(d, _)| *d == digest) {
                return Ok(id.clone());
            }
        }
        let invalid = || AuthError::Invalid("the API key is not valid".into());
        let Some(store) = &self.store else {
            return Err(invalid());
        };
        // The database finds the row by the digest's index; what its
        // timing could reveal is how much of a stored digest matches the
        // presented key's digest, which says nothing about any key.
        // A hit costs a lookup in memory; a miss, one query shared by the
        // requests that miss together.
        if let Some(found) = store.found.get(&digest).await {
            return found.ok_or_else(invalid);
        }
        let found = store
            .found
            .try_get_with(digest, async {
                let name = key_store::lookup(&store.database, &self.name, &digest).await?;
                anyhow::Ok(name.map(|n| Arc::new(identity(&self.name, &digest, Some(&n)))))
            })
            .await
            .map_err(|err| {
                tracing::warn!(policy = %self.name, cause = %format!("{err:#}"), "API key lookup failed; request refused with 503");
                AuthError::KeysUnavailable
            })?;
        found.ok_or_else(invalid)
    }
}

/// The caller a key names: `api-key:` and 12 hex digits of its digest (a
/// stable name that does not reveal the key), and for a stored key its
/// name as the `key_name` claim.
fn identity(policy: &Arc<str>, digest: &[u8; 32], name: Option<&str>) -> Identity {
    Identity {
        policy: policy.clone(),
        subject: format!("api-key:{}", crate::ids::hex(&digest[..6])),
        scopes: Vec::new(),
        claims: name
            .map(|n| {
                vec![(
                    "key_name".to_owned(),
                    serde_json::Value::from(n).to_string(),
                )]
            })
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepts_listed_keys_only() {
        let name: Arc<str> = "p".into();
        let policy = ApiKeyPolicy {
            name: name.clone(),
            header: http::HeaderName::from_static("x-api-key"),
            env: ["key-one-0123456789", "key-two-0123456789"]
                .iter()
                .map(|k| {
                    let d: [u8; 32] = Sha256::digest(k.as_bytes()).into();
                    (d, Arc::new(identity(&name, &d, None)))
                })
                .collect(),
            store: None,
        };
        let one = policy.verify(b"key-one-0123456789").await.unwrap();
        let two = policy.verify(b"key-two-0123456789").await.unwrap();
        assert!(one.subject.starts_with("api-key:") && one.subject.len() == 8 + 12);
        assert_ne!(one.subject, two.subject);
        for bad in [
            &b"key-one-012345678"[..],
            b"key-one-0123456789 ",
            b"",
            b"KEY-ONE-0123456789",
        ] {
            assert!(policy.verify(bad).await.is_err(), "{bad:?}");
        }
    }

    /// A store whose database cannot be reached answers "unavailable"
    /// (503 at the edge), not "invalid": the host cannot tell; keys from
    /// the environment keep working.
    #[tokio::test]
    async fn an_unreachable_store_is_unavailable_not_invalid() {
        let text = "[database]\nurl = \"postgres://postgres@127.0.0.1:1/none\"\nacquire_timeout = \"200ms\"\n\
            [auth.p]\ntype = \"api-key\"\nheader = \"x-k\"\nstore = \"database\"\n\
            keys = { env = \"TRELLIS_UNIT_SURELY_UNSET_KEYS\", default = \"env-key-0123456789\" }\n";
        let manifest = crate::config::manifest::Manifest::parse(
            text,
            std::path::Path::new("t.toml"),
            ".".into(),
        )
        .unwrap();
        let metrics = crate::observability::metrics::Metrics::new();
        let database = Arc::new(Database::new(&manifest, None, &metrics));
        let policy = ApiKeyPolicy::new("p".into(), &manifest.auth["p"], Some(&database)).unwrap();
        assert!(policy.verify(b"env-key-0123456789").await.is_ok());
        let started = std::time::Instant::now();
        assert_eq!(
            policy.verify(b"trk_not-in-the-env-0123").await.unwrap_err(),
            AuthError::KeysUnavailable
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        // Failures are not remembered: the next request asks again.
        let digest: [u8; 32] = Sha256::digest(b"trk_not-in-the-env-0123").into();
        let store = policy.store.as_ref().unwrap();
        assert!(store.found.get(&digest).await.is_none());
    }
}
