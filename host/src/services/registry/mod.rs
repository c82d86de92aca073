//! Components from OCI registries: pulling `oci://HOST/NAMESPACE/NAME:TAG`
//! (or `@sha256:…`) and pushing a component there, in the wasm OCI
//! artifact layout `wkg`, Spin and wasmCloud use: an image manifest
//! (`application/vnd.oci.image.manifest.v1+json`) whose config is
//! `application/vnd.wasm.config.v0+json` and whose single layer is the
//! component (`application/wasm`).
//!
//! Everything pulled is checked against its digest: the manifest against
//! the digest it was asked for (or that the registry says it has), the
//! layer against the digest the manifest names. A tag is resolved to a
//! manifest digest once, when the component is loaded, and that digest is
//! what the host reports and keeps serving when the tag moves. Manifests
//! and layers are cached on disk by digest ([`cache`]), so a restart does
//! not pull again, and a tag's last resolution is kept so a restart with
//! the registry down still loads what it served.
//!
//! The distribution API subset used is small (manifest and blob `GET`,
//! blob upload `POST` + monolithic `PUT`, manifest `PUT`), so it is
//! written here over the host's own rustls client ([`client`]) rather than
//! pulling in a second HTTP stack.

mod cache;
pub mod client;

use crate::config::manifest::{Credentials, Manifest, RegistryEntry, line_of};
pub use crate::config::reference::Reference;
use bytes::Bytes;
pub(crate) use cache::digest_of;
use client::{Call, Failure, Http, Target};
use http::header::{ACCEPT, CONTENT_TYPE, LOCATION};
use http::{Method, StatusCode};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use toml::Spanned;

/// The OCI image manifest media type.
pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The wasm OCI artifact's config media type.
pub const CONFIG_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// The wasm OCI artifact's layer media type: the component itself.
pub const LAYER_TYPE: &str = "application/wasm";

/// Largest manifest read.
const MAX_MANIFEST: usize = 4 << 20;

/// A pull or push that failed, naming the registry and the reference.
#[derive(Debug, thiserror::Error)]
#[error("registry {registry}: {reference}: {failure}")]
pub struct RegistryError {
    /// `HOST[:PORT]`.
    pub registry: String,
    /// The reference as asked.
    pub reference: String,
    /// What went wrong.
    pub failure: Failure,
}

impl RegistryError {
    /// Whether the registry could not be reached (as opposed to an answer
    /// that will not change by retrying).
    pub fn is_unreachable(&self) -> bool {
        matches!(self.failure, Failure::Unreachable(_))
    }
}

/// A component pulled (or taken from the cache).
pub struct Pulled {
    /// The component.
    pub bytes: Bytes,
    /// The reference pinned to the manifest digest it resolved to (its tag
    /// kept): `oci://h/ns/name:1.0@sha256:…`.
    pub source: Reference,
    /// Whether nothing had to be downloaded.
    pub from_cache: bool,
    /// Keeps its manifest, layer and tag on disk while it lives (the
    /// manifest's components are kept for the host's life).
    _pin: crate::services::disk_cache::Pin,
}

/// A component pushed.
pub struct Pushed {
    /// The manifest's digest: what `@sha256:…` pins.
    pub manifest_digest: String,
    /// The layer's digest: the component's SHA-256, as the host reports it.
    pub layer_digest: String,
    /// The component's size in bytes.
    pub size: usize,
}

/// How one registry is reached.
#[derive(Debug, Clone, Default)]
struct Settings {
    insecure: bool,
    credentials: Option<Credentials>,
}

/// Every registry the host pulls from, with the client, the disk cache
/// and the components pulled at start. Built once; lives as long as the
/// host.
pub struct Registries {
    /// From `[registries]`, by `HOST[:PORT]`; a registry not listed is
    /// reached over HTTPS without credentials.
    settings: BTreeMap<String, Settings>,
    http: Http,
    cache: cache::Cache,
    /// `server.max_component_size`: no larger layer is pulled.
    max_size: u64,
    /// The manifest's `oci://` components, pulled before the routes load
    /// ([`Registries::prefetch`]), by the reference as written.
    prefetched: Mutex<HashMap<String, Arc<Pulled>>>,
}

impl Registries {
    /// The registries `entries` configures, caching under `oci/` of the
    /// cache directory `disk`.
    pub fn new(
        entries: &BTreeMap<String, Spanned<RegistryEntry>>,
        disk: Arc<crate::services::disk_cache::DiskCache>,
        max_size: u64,
    ) -> anyhow::Result<Registries> {
        let settings = entries
            .iter()
            .map(|(key, entry)| {
                let entry = entry.get_ref();
                let settings = Settings {
                    insecure: entry.is_insecure(),
                    credentials: entry.resolved.clone(),
                };
                (key.clone(), settings)
            })
            .collect();
        Ok(Registries {
            settings,
            http: Http::new()?,
            cache: cache::Cache::new(disk),
            max_size,
            prefetched: Mutex::new(HashMap::new()),
        })
    }

    /// Reaches `registry` over plain HTTP (`trellis push --insecure`);
    /// only a loopback registry may be.
    pub fn allow_insecure(&mut self, registry: &str) -> Result<(), String> {
        if !crate::config::reference::is_loopback(registry) {
            return Err(format!(
                "--insecure: plain HTTP is allowed only for a registry on loopback; {registry:?} is not"
            ));
        }
        self.settings
            .entry(registry.to_owned())
            .or_default()
            .insecure = true;
        Ok(())
    }

    fn target<'a>(&'a self, reference: &'a Reference) -> Target<'a> {
        let settings = self.settings.get(&reference.registry);
        let scheme = if settings.is_some_and(|s| s.insecure) {
            "http"
        } else {
            "https"
        };
        Target {
            registry: &reference.registry,
            base: format!("{scheme}://{}", reference.registry),
            credentials: settings.and_then(|s| s.credentials.as_ref()),
        }
    }

    /// Pulls every `oci://` component `manifest` names (routes and
    /// workers), so loading them needs no network; a failure names the
    /// route or worker and its manifest line.
    pub async fn prefetch(&self, manifest: &Manifest, text: Option<&str>) -> anyhow::Result<()> {
        let line = |span: std::ops::Range<usize>| {
            text.map(|t| format!(" (manifest line {})", line_of(t, span.start)))
                .unwrap_or_default()
        };
        let routes = manifest
            .routes
            .iter()
            .map(|r| (format!("route {:?}", r.name()), &r.component));
        let workers = manifest
            .workers
            .iter()
            .map(|w| (format!("worker {:?}", w.name()), &w.component));
        for (what, component) in routes.chain(workers) {
            let written = component.get_ref();
            if !Reference::is_oci(written) || self.prefetched(written).is_some() {
                continue;
            }
            let reference = Reference::parse(written).map_err(anyhow::Error::msg)?;
            let pulled = self.pull(&reference).await.map_err(|err| {
                anyhow::anyhow!("{what}{}: component: {err}", line(component.span()))
            })?;
            self.prefetched
                .lock()
                .expect("prefetch lock")
                .insert(written.to_owned(), Arc::new(pulled));
        }
        Ok(())
    }

    /// The component `written` (an `oci://` reference as the manifest
    /// spells it) that [`Registries::prefetch`] pulled.
    pub fn prefetched(&self, written: &str) -> Option<Arc<Pulled>> {
        self.prefetched
            .lock()
            .expect("prefetch lock")
            .get(written)
            .cloned()
    }

    /// The bytes [`Registries::prefetch`] pulled as `source` (a pinned
    /// reference), e.g. to record a manifest route's version in the
    /// deployment store.
    pub fn pulled(&self, source: &Reference) -> Option<Bytes> {
        self.prefetched
            .lock()
            .expect("prefetch lock")
            .values()
            .find(|p| p.source == *source)
            .map(|p| p.bytes.clone())
    }

    /// Pulls `reference`: its manifest (from the disk cache when pinned by
    /// digest), then its layer (from the cache when there), each checked
    /// against its digest. When the registry cannot be reached, a tag
    /// falls back to the digest it last resolved to here.
    pub async fn pull(&self, reference: &Reference) -> Result<Pulled, RegistryError> {
        let fail = |failure| RegistryError {
            registry: reference.registry.clone(),
            reference: reference.to_string(),
            failure,
        };
        let target = self.target(reference);
        let mut from_cache = true;
        let cached = reference
            .digest
            .as_ref()
            .and_then(|d| Some((d.clone(), self.cache.read(d)?)));
        let (digest, manifest) = match cached {
            Some(found) => found,
            None => match self.fetch_manifest(&target, reference).await {
                Ok(found) => {
                    from_cache = false;
                    found
                }
                Err(Failure::Unreachable(why)) if reference.digest.is_none() => {
                    let last = self
                        .cache
                        .tag(reference)
                        .and_then(|d| Some((d.clone(), self.cache.read(&d)?)));
                    let Some(found) = last else {
                        return Err(fail(Failure::Unreachable(why)));
                    };
                    tracing::warn!(
                        registry = %reference.registry,
                        reference = %reference,
                        digest = %found.0,
                        cause = %why,
                        "registry unreachable; using the digest this tag last resolved to (from the disk cache)"
                    );
                    found
                }
                Err(failure) => return Err(fail(failure)),
            },
        };
        let (layer, size) = layer_of(&manifest).map_err(fail)?;
        // Pinned before anything is read or written, so no prune takes
        // what this pull brings from under it.
        let pin = self.cache.pin(reference, &digest, &layer);
        if size > self.max_size {
            return Err(fail(Failure::TooLarge {
                size,
                limit: self.max_size,
            }));
        }
        let bytes = match self.cache.read(&layer) {
            Some(bytes) => bytes,
            None => {
                from_cache = false;
                let bytes = self
                    .fetch_blob(&target, reference, &layer)
                    .await
                    .map_err(fail)?;
                self.cache.write(&layer, &bytes);
                bytes
            }
        };
        self.cache.write(&digest, &manifest);
        if reference.digest.is_none() {
            self.cache.write_tag(reference, &digest);
        }
        let source = reference.pinned(&digest);
        tracing::info!(reference = %source, layer = %layer, from_cache, "component pulled");
        Ok(Pulled {
            bytes: bytes.into(),
            source,
            from_cache,
            _pin: pin,
        })
    }

    /// Protects what loading `source` (a reference pinned to its manifest
    /// digest, as [`Pulled::source`]) again would read from the disk
    /// cache: its manifest, its tag's resolution, and its layer, whose
    /// digest is the component's, `layer` (hex), and that layer's
    /// compiled code.
    pub fn pin(&self, source: &Reference, layer: &str) -> crate::services::disk_cache::Pin {
        let manifest = source.digest.as_deref().unwrap_or_default();
        self.cache.pin(source, manifest, &format!("sha256:{layer}"))
    }

    /// `GET /v2/NAME/manifests/REF`: the manifest and its digest, checked
    /// against the one asked for or the one the registry claims.
    async fn fetch_manifest(
        &self,
        target: &Target<'_>,
        reference: &Reference,
    ) -> Result<(String, Vec<u8>), Failure> {
        let scope = format!("repository:{}:pull", reference.repository);
        let call = Call {
            method: Method::GET,
            url: format!(
                "{}/v2/{}/manifests/{}",
                target.base,
                reference.repository,
                reference.api_reference()
            ),
            headers: vec![(ACCEPT, MANIFEST_TYPE.to_owned())],
            body: Bytes::new(),
            scope: &scope,
            limit: MAX_MANIFEST,
        };
        let answer = self.http.send(target, &call).await?;
        match answer.status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => {
                let what = match &reference.digest {
                    Some(d) => format!("manifest {d}"),
                    None => format!("tag {:?}", reference.api_reference()),
                };
                return Err(Failure::NotFound(what));
            }
            _ => return Err(answer.unexpected("fetching the manifest")),
        }
        let actual = digest_of(&answer.body);
        let claimed = answer
            .header(http::HeaderName::from_static("docker-content-digest"))
            .map(str::to_owned);
        if let Some(expected) = reference.digest.clone().or(claimed)
            && expected != actual
        {
            return Err(Failure::DigestMismatch {
                what: "manifest",
                expected,
                actual,
            });
        }
        Ok((actual, answer.body.to_vec()))
    }

    /// `GET /v2/NAME/blobs/DIGEST`, following redirects, checked against
    /// the digest.
    async fn fetch_blob(
        &self,
        target: &Target<'_>,
        reference: &Reference,
        digest: &str,
    ) -> Result<Vec<u8>, Failure> {
        let scope = format!("repository:{}:pull", reference.repository);
        let call = Call {
            method: Method::GET,
            url: format!("{}/v2/{}/blobs/{digest}", target.base, reference.repository),
            headers: Vec::new(),
            body: Bytes::new(),
            scope: &scope,
            limit: usize::try_from(self.max_size).unwrap_or(usize::MAX),
        };
        let answer = self.http.get_following(target, call).await?;
        match answer.status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Err(Failure::NotFound(format!("layer {digest}"))),
            _ => return Err(answer.unexpected("fetching the layer")),
        }
        let actual = digest_of(&answer.body);
        if actual != digest {
            return Err(Failure::DigestMismatch {
                what: "layer",
                expected: digest.to_owned(),
                actual,
            });
        }
        Ok(answer.body.to_vec())
    }

    /// Publishes `bytes` as `reference` (which names a tag): the config
    /// and layer blobs (each skipped when the registry has it), then the
    /// manifest.
    pub async fn push(&self, reference: &Reference, bytes: Bytes) -> Result<Pushed, RegistryError> {
        let fail = |failure| RegistryError {
            registry: reference.registry.clone(),
            reference: reference.to_string(),
            failure,
        };
        if reference.digest.is_some() || reference.tag.is_none() {
            return Err(fail(Failure::Invalid(
                "push to a tag (oci://HOST/NAMESPACE/NAME:TAG); the digest is the registry's to give".into(),
            )));
        }
        let target = self.target(reference);
        let layer_digest = digest_of(&bytes);
        let config = serde_json::to_vec(&json!({
            "architecture": "wasm",
            "os": "wasip2",
            "layerDigests": [layer_digest],
        }))
        .expect("JSON serializes");
        let config = Bytes::from(config);
        let config_digest = digest_of(&config);
        self.upload(&target, reference, &config_digest, config.clone())
            .await
            .map_err(fail)?;
        self.upload(&target, reference, &layer_digest, bytes.clone())
            .await
            .map_err(fail)?;
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {
                "mediaType": CONFIG_TYPE,
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": [{
                "mediaType": LAYER_TYPE,
                "digest": layer_digest,
                "size": bytes.len(),
            }],
        }))
        .expect("JSON serializes");
        let manifest_digest = digest_of(&manifest);
        let scope = format!("repository:{}:pull,push", reference.repository);
        let call = Call {
            method: Method::PUT,
            url: format!(
                "{}/v2/{}/manifests/{}",
                target.base,
                reference.repository,
                reference.api_reference()
            ),
            headers: vec![(CONTENT_TYPE, MANIFEST_TYPE.to_owned())],
            body: manifest.into(),
            scope: &scope,
            limit: 1 << 16,
        };
        let answer = self.http.send(&target, &call).await.map_err(fail)?;
        if answer.status != StatusCode::CREATED {
            return Err(fail(answer.unexpected("putting the manifest")));
        }
        Ok(Pushed {
            manifest_digest,
            layer_digest,
            size: bytes.len(),
        })
    }

    /// Uploads blob `digest` unless the registry has it: `POST` an upload
    /// session, then one monolithic `PUT` of the bytes.
    async fn upload(
        &self,
        target: &Target<'_>,
        reference: &Reference,
        digest: &str,
        bytes: Bytes,
    ) -> Result<(), Failure> {
        let scope = format!("repository:{}:pull,push", reference.repository);
        let repo = &reference.repository;
        let head = Call {
            method: Method::HEAD,
            url: format!("{}/v2/{repo}/blobs/{digest}", target.base),
            headers: Vec::new(),
            body: Bytes::new(),
            scope: &scope,
            limit: 1 << 16,
        };
        if self.http.send(target, &head).await?.status == StatusCode::OK {
            return Ok(());
        }
        let start = Call {
            method: Method::POST,
            url: format!("{}/v2/{repo}/blobs/uploads/", target.base),
            ..head
        };
        let answer = self.http.send(target, &start).await?;
        let location = match (answer.status, answer.header(LOCATION)) {
            (StatusCode::ACCEPTED, Some(location)) => client::resolve(&target.base, location),
            _ => return Err(answer.unexpected("starting a blob upload")),
        };
        let put = Call {
            method: Method::PUT,
            url: format!("{location}{}digest={digest}", client::sep(&location)),
            headers: vec![(CONTENT_TYPE, "application/octet-stream".to_owned())],
            body: bytes,
            scope: &scope,
            limit: 1 << 16,
        };
        let answer = self.http.send(target, &put).await?;
        if answer.status != StatusCode::CREATED {
            return Err(answer.unexpected("uploading a blob"));
        }
        Ok(())
    }
}

/// The component layer's digest and size from an image manifest, which
/// must be the wasm artifact layout: one `application/wasm` layer.
fn layer_of(manifest: &[u8]) -> Result<(String, u64), Failure> {
    let json: serde_json::Value = serde_json::from_slice(manifest)
        .map_err(|e| Failure::Invalid(format!("the manifest is not JSON: {e}")))?;
    let media_type = json["mediaType"].as_str().unwrap_or(MANIFEST_TYPE);
    if media_type != MANIFEST_TYPE {
        return Err(Failure::Invalid(format!(
            "the manifest is {media_type}, not an OCI image manifest ({MANIFEST_TYPE}); \
             push the component with `trellis push` or `wkg oci push`"
        )));
    }
    let layers = json["layers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let wasm: Vec<_> = layers
        .iter()
        .filter(|l| l["mediaType"] == LAYER_TYPE)
        .collect();
    let [layer] = wasm.as_slice() else {
        let types: Vec<_> = layers
            .iter()
            .map(|l| l["mediaType"].as_str().unwrap_or("?"))
            .collect();
        return Err(Failure::Invalid(format!(
            "expected one {LAYER_TYPE} layer (the wasm OCI artifact layout); the manifest has {types:?}"
        )));
    };
    let digest = layer["digest"].as_str().unwrap_or_default().to_owned();
    crate::config::reference::check_digest(&digest)
        .map_err(|m| Failure::Invalid(format!("the layer's {m}")))?;
    let size = layer["size"].as_u64().unwrap_or(0);
    Ok((digest, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_wasm_artifact_layout() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": CONFIG_TYPE, "digest": d('a'), "size": 2},
            "layers": [{"mediaType": LAYER_TYPE, "digest": d('b'), "size": 75}],
        });
        let bytes = serde_json::to_vec(&manifest).unwrap();
        assert_eq!(layer_of(&bytes).unwrap(), (d('b'), 75));

        let index =
            json!({"mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []});
        let err = layer_of(&serde_json::to_vec(&index).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("index"), "{err}");

        let image = json!({
            "mediaType": MANIFEST_TYPE,
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d('c'), "size": 1}],
        });
        let err = layer_of(&serde_json::to_vec(&image).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tar+gzip") && err.contains(LAYER_TYPE),
            "{err}"
        );
        assert!(layer_of(b"nope").is_err());
    }
}
