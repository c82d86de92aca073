//! The `cache` capability (`wit/cache.wit`): the tiered cache, with every
//! key inside the route's namespace.

use crate::bindings::trellis::api::cache::{Error, Host, HostFill, Lookup};
use crate::cache::{self, Cache};
use crate::store::StoreData;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::Resource;

/// Longest key a guest may use, in bytes.
const MAX_KEY: usize = 512;

/// Longest a guest may wait for another caller's computation.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// A guest's fill: taken by `set`, so a second `set` is `closed`.
pub struct FillHandle(Option<cache::Fill>);

impl StoreData {
    /// The cache and the namespaced form of `key`; owned, so no borrow of
    /// the store lives across an `.await`.
    fn cache_key(&self, key: &str) -> Result<(Arc<Cache>, String), Error> {
        if key.is_empty() || key.len() > MAX_KEY {
            return Err(Error::InvalidKey(format!(
                "keys are 1 to {MAX_KEY} bytes, this one is {}",
                key.len()
            )));
        }
        let guest = self.guest();
        Ok((
            guest.services.cache.clone(),
            format!("ns:{}:{key}", guest.cache_namespace),
        ))
    }
}

fn too_large(err: cache::TooLarge) -> Error {
    Error::TooLarge(err.limit as u64)
}

impl Host for StoreData {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        let _span = self.guest().trace.child("cache.get");
        let (cache, key) = match self.cache_key(&key) {
            Ok(k) => k,
            Err(e) => return Ok(Err(e)),
        };
        Ok(Ok(cache
            .get(&key)
            .await
            .map(|(entry, _)| entry.value.to_vec())))
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> wasmtime::Result<Result<(), Error>> {
        let _span = self.guest().trace.child("cache.set");
        let (cache, key) = match self.cache_key(&key) {
            Ok(k) => k,
            Err(e) => return Ok(Err(e)),
        };
        let ttl = Duration::from_millis(ttl_ms.max(1));
        Ok(cache.set(&key, value.into(), ttl).await.map_err(too_large))
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<bool, Error>> {
        let _span = self.guest().trace.child("cache.delete");
        let (cache, key) = match self.cache_key(&key) {
            Ok(k) => k,
            Err(e) => return Ok(Err(e)),
        };
        Ok(Ok(cache.delete(&key).await))
    }

    async fn get_or_fill(
        &mut self,
        key: String,
        wait_ms: u32,
    ) -> wasmtime::Result<Result<Lookup, Error>> {
        let (cache, key) = match self.cache_key(&key) {
            Ok(k) => k,
            Err(e) => return Ok(Err(e)),
        };
        let _span = self.guest().trace.child("cache.get_or_fill");
        let wait = Duration::from_millis(wait_ms.into()).min(MAX_WAIT);
        Ok(Ok(match cache.get_or_fill(&key, wait).await {
            cache::Lookup::Hit(entry) => Lookup::Hit(entry.value.to_vec()),
            cache::Lookup::Miss(fill) => Lookup::Miss(self.table().push(FillHandle(Some(fill)))?),
        }))
    }
}

impl HostFill for StoreData {
    async fn set(
        &mut self,
        fill: Resource<FillHandle>,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> wasmtime::Result<Result<(), Error>> {
        let Some(fill) = self.table().get_mut(&fill)?.0.take() else {
            return Ok(Err(Error::Closed));
        };
        let ttl = Duration::from_millis(ttl_ms.max(1));
        Ok(fill.set(value.into(), ttl).await.map_err(too_large))
    }

    async fn drop(&mut self, fill: Resource<FillHandle>) -> wasmtime::Result<()> {
        // Dropping an unused fill wakes the next waiter to compute.
        self.table().delete(fill)?;
        Ok(())
    }
}
