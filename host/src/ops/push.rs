//! `trellis push FILE oci://…`: publishes a component to an OCI registry
//! in the wasm artifact layout and prints the manifest digest that pins it.

use crate::config::cli::PushCall;
use crate::services::registry::{Registries, RegistryError};

/// A push that did not happen.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The file could not be read.
    #[error("reading component {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a WebAssembly component.
    #[error(
        "{0}: not a WebAssembly component (a core module or another file); build it for wasm32-wasip2"
    )]
    NotAComponent(std::path::PathBuf),
    /// `--insecure` for a registry that is not on loopback, or the client
    /// could not be built.
    #[error("{0}")]
    Setup(String),
    /// The registry refused, or could not be reached.
    #[error("{0}")]
    Registry(#[from] RegistryError),
}

/// The preamble of a component binary: `\0asm`, then version 0x0d and
/// layer 1 (a core module has version 1, layer 0).
const COMPONENT_PREAMBLE: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

/// Pushes `call.file` to `call.reference`; prints the digests on stdout.
pub async fn run(call: PushCall) -> Result<(), PushError> {
    let bytes = tokio::fs::read(&call.file)
        .await
        .map_err(|source| PushError::Read {
            path: call.file.clone(),
            source,
        })?;
    if !bytes.starts_with(&COMPONENT_PREAMBLE) {
        return Err(PushError::NotAComponent(call.file));
    }
    // A push reads nothing back from the cache, and never prunes it.
    let disk = crate::services::disk_cache::DiskCache::new(call.cache_dir, u64::MAX);
    let mut registries = Registries::new(&call.registries, disk, u64::MAX)
        .map_err(|e| PushError::Setup(format!("the registry client: {e:#}")))?;
    if call.insecure {
        registries
            .allow_insecure(&call.reference.registry)
            .map_err(PushError::Setup)?;
    }
    eprintln!(
        "pushing {} ({} bytes) to {}…",
        call.file.display(),
        bytes.len(),
        call.reference
    );
    let pushed = registries.push(&call.reference, bytes.into()).await?;
    let pinned = call.reference.pinned(&pushed.manifest_digest);
    println!(
        "{}",
        serde_json::json!({
            "reference": call.reference.to_string(),
            "digest": pushed.manifest_digest,
            "pinned": pinned.to_string(),
            "layer": pushed.layer_digest,
            "size": pushed.size,
        })
    );
    eprintln!("pushed {pinned}");
    Ok(())
}
