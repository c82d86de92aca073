//! The on-disk cache of what was pulled: manifests and layers by digest
//! (`oci/blobs/sha256/HEX`, content-addressed, checked again on every
//! read), and the digest each tag last resolved to (`oci/tags/…`), so a
//! host restarting while its registry is down still loads what it served.
//!
//! Entries are touched when read and pruned least recently used first by
//! [`crate::services::disk_cache`], which never deletes one pinned
//! ([`Cache::pin`]) by what a loaded version needs.

use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::reference::Reference;
use crate::services::disk_cache::{self, DiskCache, Kind, Pin};

/// Blobs and tag resolutions under one directory.
pub(super) struct Cache {
    /// `<cache_dir>/oci`; lives as long as the host, shared by hosts that
    /// share the cache directory (every write is a rename).
    dir: PathBuf,
    /// The cache directory, whose pins protect entries from pruning.
    disk: Arc<DiskCache>,
}

/// `sha256:` and the hex SHA-256 of `bytes`.
pub(crate) fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", crate::ids::hex(&Sha256::digest(bytes)))
}

impl Cache {
    pub(super) fn new(disk: Arc<DiskCache>) -> Cache {
        Cache {
            dir: disk.dir().join("oci"),
            disk,
        }
    }

    /// Protects the manifest `digest`, the layer `layer` (and the layer's
    /// compiled code: its digest is the component's) and, for a
    /// reference by tag, the tag's resolution from pruning while the pin
    /// lives.
    pub(super) fn pin(&self, reference: &Reference, digest: &str, layer: &str) -> Pin {
        let hex = |d: &str| d.strip_prefix("sha256:").map(str::to_owned);
        let manifest = hex(digest).map(|h| Kind::Blob.key(&h));
        let layer = hex(layer)
            .map(|h| [Kind::Blob.key(&h), Kind::Artifact.key(&h)])
            .into_iter()
            .flatten();
        let tag = self
            .tag_path(reference)
            .and_then(|p| Some(Kind::Tag.key(p.file_name()?.to_str()?)));
        self.disk.pin(manifest.into_iter().chain(layer).chain(tag))
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
            disk_cache::touch(&path);
            return Some(bytes);
        }
        tracing::warn!(path = %path.display(), digest, "cached blob does not match its digest; removing it");
        let _ = std::fs::remove_file(&path);
        None
    }

    /// Keeps `bytes` as blob `digest` (best effort: a cache that cannot be
    /// written only costs a pull next time).
    pub(super) fn write(&self, digest: &str, bytes: &[u8]) {
        if let Some(path) = self.blob_path(digest) {
            if path.exists() {
                disk_cache::touch(&path);
            } else {
                store(&path, bytes);
            }
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
        let path = self.tag_path(reference)?;
        let text = std::fs::read_to_string(&path).ok()?;
        disk_cache::touch(&path);
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
/// (or a prune) never sees half a blob.
fn store(path: &Path, bytes: &[u8]) {
    if let Err(err) = disk_cache::write_atomically(path, bytes) {
        tracing::warn!(cause = %err, path = %path.display(), "cannot write the registry cache; continuing without it");
    }
}
