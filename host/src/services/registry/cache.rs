//! The on-disk cache of what was pulled: manifests and layers by digest
//! (`oci/blobs/sha256/HEX`, content-addressed, checked again on every
//! read), and the digest each tag last resolved to (`oci/tags/…`), so a
//! host restarting while its registry is down still loads what it served.

use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};

use crate::config::reference::Reference;

/// Blobs and tag resolutions under one directory.
pub(super) struct Cache {
    /// `<cache_dir>/oci`; lives as long as the host, shared by hosts that
    /// share the cache directory (every write is a rename).
    dir: PathBuf,
}

/// `sha256:` and the hex SHA-256 of `bytes`.
pub(crate) fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", crate::ids::hex(&Sha256::digest(bytes)))
}

impl Cache {
    pub(super) fn new(dir: PathBuf) -> Cache {
        Cache { dir }
    }

    fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        let hex = digest.strip_prefix("sha256:")?;
        let ok = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
        ok.then(|| self.dir.join("blobs").join("sha256").join(hex))
    }

    /// The cached blob `digest`, if present and intact; one that does not
    /// hash to its name is removed (and pulled again).
    pub(super) fn read(&self, digest: &str) -> Option<Vec<u8>> {
        let path = self.blob_path(digest)?;
        let bytes = std::fs::read(&path).ok()?;
        if digest_of(&bytes) == digest {
            return Some(bytes);
        }
        tracing::warn!(path = %path.display(), digest, "cached blob does not match its digest; removing it");
        let _ = std::fs::remove_file(&path);
        None
    }

    /// Keeps `bytes` as blob `digest` (best effort: a cache that cannot be
    /// written only costs a pull next time).
    pub(super) fn write(&self, digest: &str, bytes: &[u8]) {
        if let Some(path) = self.blob_path(digest)
            && !path.exists()
        {
            store(&path, bytes);
        }
    }

    fn tag_path(&self, reference: &Reference) -> Option<PathBuf> {
        let tag = reference.tag.as_deref()?;
        // Hashed: registry names hold ':' and repositories '/'.
        let key = format!("{}/{}:{tag}", reference.registry, reference.repository);
        Some(
            self.dir
                .join("tags")
                .join(crate::ids::hex(&Sha256::digest(key.as_bytes()))),
        )
    }

    /// The manifest digest `reference`'s tag last resolved to here.
    pub(super) fn tag(&self, reference: &Reference) -> Option<String> {
        let text = std::fs::read_to_string(self.tag_path(reference)?).ok()?;
        let digest = text.trim().to_owned();
        crate::config::reference::check_digest(&digest)
            .is_ok()
            .then_some(digest)
    }

    /// Remembers that `reference`'s tag resolved to `digest`.
    pub(super) fn write_tag(&self, reference: &Reference, digest: &str) {
        if let Some(path) = self.tag_path(reference) {
            store(&path, digest.as_bytes());
        }
    }
}

/// Writes through a temporary file and a rename, so a concurrent reader
/// never sees half a blob.
fn store(path: &Path, bytes: &[u8]) {
    let written = (|| {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(err) = written {
        tracing::warn!(cause = %err, path = %path.display(), "cannot write the registry cache; continuing without it");
    }
}
