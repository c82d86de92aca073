//! Loading a handler component: compile once (or fetch the precompiled
//! artifact from the on-disk cache), link, and pre-instantiate, so serving a
//! request is only a cheap instantiation from the pool.

use crate::capabilities::bindings::WorkerComponentPre;
use crate::runtime::store::StoreData;
use crate::services::disk_cache::{self, DiskCache, Kind, Pin};
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use wasmtime::Engine;
use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p3::bindings::ServicePre;

/// A component ready to serve: compiled, linked and pre-instantiated. It
/// lives as long as some route points at it (requests in flight keep it
/// alive across a swap).
pub struct Handler {
    /// Pre-instantiated handler world; instantiation per request is a pool
    /// allocation plus data-segment copy.
    pub pre: HandlerPre,
    /// Hex SHA-256 of the component bytes: what operators see in logs.
    pub digest: Arc<str>,
    /// Keeps its precompiled artifact (and its registry layer) on disk
    /// while it is loaded.
    _pin: Pin,
}

/// Which `wasi:http` handler a component exports.
pub enum HandlerPre {
    /// `wasi:http/incoming-handler@0.2.x`: one call per request, served by
    /// [`crate::runtime::invoke`].
    P2(ProxyPre<StoreData>),
    /// `wasi:http/handler@0.3.x`: an async export that may serve several
    /// requests at once, served by [`crate::runtime::service`].
    P3(ServicePre<StoreData>),
}

impl HandlerPre {
    /// The linked component, for calls other than the handler's.
    pub fn instance_pre(&self) -> &InstancePre<StoreData> {
        match self {
            HandlerPre::P2(pre) => pre.instance_pre(),
            HandlerPre::P3(pre) => pre.instance_pre(),
        }
    }
}

/// Whether the compiled artifact came from the on-disk cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded precompiled code.
    Hit,
    /// Compiled now (and stored for next time).
    Miss,
}

impl CacheOutcome {
    /// `"hit"` or `"miss"`, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
        }
    }
}

/// A component that cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Cranelift rejected the bytes (not a component, invalid wasm...).
    #[error("compiling component: {0:#}")]
    Compile(wasmtime::Error),
    /// An import the host does not provide, or a missing export.
    #[error("linking component: {0:#}")]
    Link(wasmtime::Error),
    /// The component imports a capability its route does not grant, or an
    /// interface the host does not offer.
    #[error(transparent)]
    Grant(#[from] crate::runtime::grants::ImportError),
    /// The component exports neither `wasi:http/incoming-handler@0.2.x`
    /// nor `wasi:http/handler@0.3.x`.
    #[error(
        "component exports neither wasi:http/incoming-handler@0.2.x (WASI 0.2) nor wasi:http/handler@0.3.x (WASI 0.3): {0:#}"
    )]
    NotAHandler(wasmtime::Error),
    /// A `[[worker]]` component does not export `trellis:api/worker`.
    #[error("component does not export trellis:api/worker@0.1.0: {0:#}")]
    NotAWorker(wasmtime::Error),
}

/// A worker component ready to run jobs: compiled, linked and
/// pre-instantiated, like a [`Handler`].
pub struct WorkerComponent {
    /// Pre-instantiated `worker` world.
    pub pre: WorkerComponentPre<StoreData>,
    /// Hex SHA-256 of the component bytes.
    pub digest: Arc<str>,
    /// Keeps its precompiled artifact on disk while it is loaded.
    _pin: Pin,
}

/// Compiles and links components against one engine and linker, keeping
/// precompiled artifacts in the cache directory.
pub struct Loader {
    engine: Engine,
    linker: Linker<StoreData>,
    /// Where artifacts are kept, and what pins those in use.
    disk: Arc<DiskCache>,
    /// Distinguishes artifacts of engines with different settings or
    /// wasmtime versions, which must never be mixed.
    engine_key: u64,
}

impl Loader {
    /// A loader for `engine`, caching under `cache_dir`, which it never
    /// prunes.
    pub fn new(engine: Engine, linker: Linker<StoreData>, cache_dir: PathBuf) -> Loader {
        Loader::with_disk_cache(engine, linker, DiskCache::new(cache_dir, u64::MAX))
    }

    /// A loader for `engine`, caching in `disk`, where every component it
    /// loads stays pinned while loaded.
    pub fn with_disk_cache(
        engine: Engine,
        linker: Linker<StoreData>,
        disk: Arc<DiskCache>,
    ) -> Loader {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Loader {
            engine_key: hasher.finish(),
            engine,
            linker,
            disk,
        }
    }

    /// The engine components are compiled for.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles (or loads from cache), checks against `grants` and the
    /// `outbound` upstreams, links and pre-instantiates `bytes`.
    pub fn load(
        &self,
        bytes: &[u8],
        grants: &[String],
        outbound: Option<&[String]>,
    ) -> Result<(Handler, CacheOutcome), LoadError> {
        let digest = crate::ids::hex(&Sha256::digest(bytes));
        // Pinned before its artifact is looked for or written, so no
        // prune takes it from under this load.
        let pin = self.pin(&digest);
        let (component, outcome) = self.compile(bytes, &digest)?;
        Ok((
            self.link(component, digest, pin, grants, outbound)?,
            outcome,
        ))
    }

    /// Like [`Loader::load`], for the component whose SHA-256 is `digest`,
    /// from the precompiled cache alone; `None` when it is not there (or
    /// unusable), and the bytes are needed.
    pub fn load_precompiled(
        &self,
        digest: &str,
        grants: &[String],
        outbound: Option<&[String]>,
    ) -> Option<Result<Handler, LoadError>> {
        let digest_ok = digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit());
        if !digest_ok {
            return None;
        }
        let pin = self.pin(digest);
        let component = self.cached(&self.artifact(digest))?;
        Some(self.link(component, digest.to_owned(), pin, grants, outbound))
    }

    /// Checks `component` against its grants, links and pre-instantiates it.
    fn link(
        &self,
        component: Component,
        digest: String,
        pin: Pin,
        grants: &[String],
        outbound: Option<&[String]>,
    ) -> Result<Handler, LoadError> {
        crate::runtime::grants::check(&self.engine, &component, grants, outbound)?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(LoadError::Link)?;
        // As `wasmtime serve` decides: a WASI 0.3 handler if it exports
        // one, else it must be a WASI 0.2 one.
        let pre = match ServicePre::new(instance_pre.clone()) {
            Ok(pre) => HandlerPre::P3(pre),
            Err(_) => HandlerPre::P2(ProxyPre::new(instance_pre).map_err(LoadError::NotAHandler)?),
        };
        Ok(Handler {
            pre,
            digest: digest.into(),
            _pin: pin,
        })
    }

    /// Where the precompiled artifact of `digest` is kept.
    fn artifact(&self, digest: &str) -> PathBuf {
        self.disk
            .dir()
            .join(format!("{digest}-{:016x}.cwasm", self.engine_key))
    }

    /// Protects what the component `digest` needs on disk: its artifact,
    /// and its layer when it came from a registry (the layer's digest is
    /// the component's).
    fn pin(&self, digest: &str) -> Pin {
        self.disk
            .pin([Kind::Artifact.key(digest), Kind::Blob.key(digest)])
    }

    /// Compiles (or loads from cache), checks against `grants`, links and
    /// pre-instantiates the worker component `bytes`. Workers have no
    /// upstreams: `wasi:http/outgoing-handler` is refused.
    pub fn load_worker(
        &self,
        bytes: &[u8],
        grants: &[String],
        outbound: Option<&[String]>,
    ) -> Result<(WorkerComponent, CacheOutcome), LoadError> {
        let digest = crate::ids::hex(&Sha256::digest(bytes));
        let pin = self.pin(&digest);
        let (component, outcome) = self.compile(bytes, &digest)?;
        crate::runtime::grants::check(&self.engine, &component, grants, outbound)?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(LoadError::Link)?;
        let pre = WorkerComponentPre::new(instance_pre).map_err(LoadError::NotAWorker)?;
        Ok((
            WorkerComponent {
                pre,
                digest: digest.into(),
                _pin: pin,
            },
            outcome,
        ))
    }

    fn compile(&self, bytes: &[u8], digest: &str) -> Result<(Component, CacheOutcome), LoadError> {
        let path = self.artifact(digest);
        if let Some(component) = self.cached(&path) {
            return Ok((component, CacheOutcome::Hit));
        }
        let started = Instant::now();
        let component = Component::new(&self.engine, bytes).map_err(LoadError::Compile)?;
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "compiled component"
        );
        let stored = component
            .serialize()
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|artifact| disk_cache::write_atomically(&path, &artifact));
        if let Err(err) = stored {
            tracing::warn!(cause = %err, path = %path.display(), "cannot write the precompiled-component cache; continuing without it");
        }
        Ok((component, CacheOutcome::Miss))
    }

    fn cached(&self, path: &Path) -> Option<Component> {
        if !path.exists() {
            return None;
        }
        // SAFETY: the file was written by `precompile_component` of an engine
        // with the same compatibility hash (it is in the file name), into a
        // directory only the operator controls; wasmtime additionally checks
        // the header and refuses artifacts from other versions or settings.
        #[expect(unsafe_code, reason = "loading our own precompiled artifact")]
        match unsafe { Component::deserialize_file(&self.engine, path) } {
            Ok(component) => {
                disk_cache::touch(path);
                Some(component)
            }
            Err(err) => {
                tracing::warn!(cause = %err, path = %path.display(), "ignoring unusable precompiled component");
                None
            }
        }
    }
}
