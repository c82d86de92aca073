//! API keys kept in the host's database (`store = "database"`), in the
//! `trellis_api_keys` table a host migration creates: one row per key with
//! its policy, a name, when it was created and when it was revoked, and
//! the SHA-256 of the key (lower-case hex). The key itself is never
//! stored: `trellis keys add` prints it once and keeps only its digest.
//!
//! The host looks a presented key up by digest ([`lookup`]); operators
//! add, list and revoke keys with `trellis keys` ([`add`], [`list`],
//! [`revoke`]).

use crate::ids::hex;
use crate::services::database::{Database, Pool};
use anyhow::{Context as _, bail};
use sha2::{Digest as _, Sha256};
use sqlx::Row as _;

/// Random bytes in a new key: 256 bits, beyond guessing.
const KEY_BYTES: usize = 32;
/// What every key `trellis keys add` makes starts with, so secret scanners
/// and people can tell one when they see it.
pub const KEY_PREFIX: &str = "trk_";
/// The digest prefix `trellis keys list` shows, and the shortest one
/// `trellis keys revoke` takes.
pub const SHOWN_DIGEST: usize = 12;
const MIN_DIGEST_PREFIX: usize = 6;

/// One stored key, as `trellis keys list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// The operator's label, unique within the policy.
    pub name: String,
    /// The key's SHA-256, lower-case hex.
    pub digest: String,
    /// When it was added (RFC 3339, UTC).
    pub created_at: String,
    /// When it was revoked, if it was.
    pub revoked_at: Option<String>,
}

/// A newly added key: shown once, never stored.
pub struct NewKey {
    /// The key itself.
    pub key: String,
    /// What was stored.
    pub stored: StoredKey,
}

/// Runs one statement body on a connection of either database.
macro_rules! on_conn {
    ($pool:expr, |$conn:ident| $body:expr) => {
        match $pool {
            Pool::Sqlite(pool) => {
                let mut conn = pool.acquire().await?;
                let $conn = &mut *conn;
                let result = $body;
                conn.release();
                result
            }
            Pool::Postgres(pool) => {
                let mut conn = pool.acquire().await?;
                let $conn = &mut *conn;
                let result = $body;
                conn.release();
                result
            }
        }
    };
}

/// The name of the live (unrevoked) key of `policy` whose digest is
/// `digest`, if there is one.
pub(super) async fn lookup(
    database: &Database,
    policy: &str,
    digest: &[u8; 32],
) -> anyhow::Result<Option<String>> {
    let pool = database.with_api_keys().await?;
    let digest = hex(digest);
    let sql = "SELECT name FROM trellis_api_keys \
               WHERE digest = $1 AND policy = $2 AND revoked_at IS NULL";
    let name: Option<String> = on_conn!(pool, |conn| {
        sqlx::query_scalar(sql)
            .bind(&digest)
            .bind(policy)
            .fetch_optional(conn)
            .await
    })?;
    Ok(name)
}

/// Makes a new random key for `policy`, stores its digest under `name`
/// (default `key-` and the digest's first 8 hex digits) and returns it.
pub async fn add(database: &Database, policy: &str, name: Option<&str>) -> anyhow::Result<NewKey> {
    let key = format!("{KEY_PREFIX}{}", crate::ids::random_hex(KEY_BYTES * 8));
    let digest = hex(&Sha256::digest(key.as_bytes()));
    let name = match name {
        Some(name) => {
            check_name(name)?;
            name.to_owned()
        }
        None => format!("key-{}", &digest[..8]),
    };
    let pool = database.with_api_keys().await?;
    let taken = list(database, policy)
        .await?
        .into_iter()
        .any(|k| k.name == name);
    if taken {
        bail!(
            "policy {policy:?} already has a key named {name:?} (revoked keys keep their names); choose another --name"
        );
    }
    let created_at = now();
    let sql = "INSERT INTO trellis_api_keys (digest, policy, name, created_at) \
               VALUES ($1, $2, $3, $4)";
    on_conn!(pool, |conn| {
        sqlx::query(sql)
            .bind(&digest)
            .bind(policy)
            .bind(&name)
            .bind(&created_at)
            .execute(conn)
            .await
            .map(drop)
    })
    .context("storing the key's digest")?;
    Ok(NewKey {
        key,
        stored: StoredKey {
            name,
            digest,
            created_at,
            revoked_at: None,
        },
    })
}

/// Every key of `policy`, oldest first, revoked ones included.
pub async fn list(database: &Database, policy: &str) -> anyhow::Result<Vec<StoredKey>> {
    let pool = database.with_api_keys().await?;
    let sql = "SELECT name, digest, created_at, revoked_at FROM trellis_api_keys \
               WHERE policy = $1 ORDER BY created_at, name";
    macro_rules! rows {
        ($conn:expr) => {{
            let rows = sqlx::query(sql).bind(policy).fetch_all($conn).await?;
            rows.iter()
                .map(|r| {
                    Ok(StoredKey {
                        name: r.try_get("name")?,
                        digest: r.try_get("digest")?,
                        created_at: r.try_get("created_at")?,
                        revoked_at: r.try_get("revoked_at")?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
        }};
    }
    let keys = on_conn!(pool, |conn| rows!(conn))?;
    Ok(keys)
}

/// Revokes the key of `policy` named `which`, or whose digest starts with
/// `which` (at least 6 hex digits, matching one key only). Returns it.
pub async fn revoke(database: &Database, policy: &str, which: &str) -> anyhow::Result<StoredKey> {
    let keys = list(database, policy).await?;
    let prefix = which.to_ascii_lowercase();
    let is_prefix =
        prefix.len() >= MIN_DIGEST_PREFIX && prefix.bytes().all(|b| b.is_ascii_hexdigit());
    let by_name: Vec<&StoredKey> = keys.iter().filter(|k| k.name == which).collect();
    let matched: Vec<&StoredKey> = if by_name.is_empty() && is_prefix {
        keys.iter()
            .filter(|k| k.digest.starts_with(&prefix))
            .collect()
    } else {
        by_name
    };
    let key = match matched.as_slice() {
        [] => bail!(
            "policy {policy:?} has no key named {which:?}{}",
            if is_prefix {
                " nor one whose digest starts with it"
            } else {
                " (a digest prefix needs at least 6 hex digits)"
            }
        ),
        [one] => (*one).clone(),
        many => bail!(
            "{which:?} matches {} keys of policy {policy:?}; give more of the digest",
            many.len()
        ),
    };
    if let Some(at) = &key.revoked_at {
        bail!("key {:?} was already revoked at {at}", key.name);
    }
    let revoked_at = now();
    let pool = database.with_api_keys().await?;
    let sql = "UPDATE trellis_api_keys SET revoked_at = $1 \
               WHERE digest = $2 AND revoked_at IS NULL";
    on_conn!(pool, |conn| {
        sqlx::query(sql)
            .bind(&revoked_at)
            .bind(&key.digest)
            .execute(conn)
            .await
            .map(drop)
    })
    .context("recording the revocation")?;
    Ok(StoredKey {
        revoked_at: Some(revoked_at),
        ..key
    })
}

/// Names are labels for people and logs: 1 to 64 of `A-Z a-z 0-9 - _ .
/// @`.
fn check_name(name: &str) -> anyhow::Result<()> {
    let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@');
    if name.is_empty() || name.len() > 64 || !name.bytes().all(plain) {
        bail!("a key name is 1 to 64 of A-Z, a-z, 0-9, '-', '_', '.', '@'");
    }
    Ok(())
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
