//! The `cache` capability (`wit/cache.wit`): the tiered cache, with every
//! key inside the route's namespace.

use crate::capabilities::bindings::api::cache::{Error, Host, HostFill, Lookup};
use crate::capabilities::{View, table_trap, trappable};
use crate::services::cache::{self, Cache};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{HasData, Linker, Resource};
use wasmtime_wasi::TrappableError;

/// Longest key a guest may use, in bytes.
const MAX_KEY: usize = 512;

/// Longest a guest may wait for another caller's computation.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// The `cache` error as a host function returns it: for the guest, or a
/// trap.
pub type CacheError = TrappableError<Error>;

/// What `cache` reaches: the tiered cache, and the route's namespace.
pub struct CacheCtx {
    /// Shared by every route and the response cache.
    pub cache: Arc<Cache>,
    /// Prefix of this route's keys; routes naming the same namespace
    /// share keys.
    pub namespace: Arc<str>,
}

/// `cache` for one instance.
pub type CacheView<'a> = View<'a, CacheCtx>;

struct HasCache;

impl HasData for HasCache {
    type Data<'a> = CacheView<'a>;
}

/// Offers `trellis:api/cache` through `view`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> CacheView<'_>,
) -> wasmtime::Result<()> {
    crate::capabilities::bindings::api::cache::add_to_linker::<T, HasCache>(linker, view)
}

/// A guest's fill: taken by `set`, so a second `set` is `closed`.
pub struct FillHandle(Option<cache::Fill>);

impl CacheView<'_> {
    /// The cache and the namespaced form of `key`; owned, so no borrow of
    /// the store lives across an `.await`.
    fn cache_key(&self, key: &str) -> Result<(Arc<Cache>, String), Error> {
        if key.is_empty() || key.len() > MAX_KEY {
            return Err(Error::InvalidKey(format!(
                "keys are 1 to {MAX_KEY} bytes, this one is {}",
                key.len()
            )));
        }
        Ok((
            self.ctx.cache.clone(),
            format!("ns:{}:{key}", self.ctx.namespace),
        ))
    }
}

fn too_large(err: cache::TooLarge) -> CacheError {
    Error::TooLarge(err.limit as u64).into()
}

impl Host for CacheView<'_> {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, CacheError> {
        let _span = self.caller.trace.child("cache.get");
        let (cache, key) = self.cache_key(&key)?;
        Ok(cache.get(&key).await.map(|(entry, _)| entry.value.to_vec()))
    }

    async fn set(&mut self, key: String, value: Vec<u8>, ttl_ms: u64) -> Result<(), CacheError> {
        let _span = self.caller.trace.child("cache.set");
        let (cache, key) = self.cache_key(&key)?;
        let ttl = Duration::from_millis(ttl_ms.max(1));
        cache.set(&key, value.into(), ttl).await.map_err(too_large)
    }

    async fn delete(&mut self, key: String) -> Result<bool, CacheError> {
        let _span = self.caller.trace.child("cache.delete");
        let (cache, key) = self.cache_key(&key)?;
        Ok(cache.delete(&key).await)
    }

    async fn get_or_fill(&mut self, key: String, wait_ms: u32) -> Result<Lookup, CacheError> {
        let (cache, key) = self.cache_key(&key)?;
        let _span = self.caller.trace.child("cache.get_or_fill");
        let wait = Duration::from_millis(wait_ms.into()).min(MAX_WAIT);
        Ok(match cache.get_or_fill(&key, wait).await {
            cache::Lookup::Hit(entry) => Lookup::Hit(entry.value.to_vec()),
            cache::Lookup::Miss(fill) => Lookup::Miss(
                self.table
                    .push(FillHandle(Some(fill)))
                    .map_err(table_trap)?,
            ),
        })
    }

    fn convert_error(&mut self, err: CacheError) -> wasmtime::Result<Error> {
        trappable(err)
    }
}

impl HostFill for CacheView<'_> {
    async fn set(
        &mut self,
        fill: Resource<FillHandle>,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> Result<(), CacheError> {
        let handle = self.table.get_mut(&fill).map_err(table_trap)?;
        let Some(fill) = handle.0.take() else {
            return Err(Error::Closed.into());
        };
        let ttl = Duration::from_millis(ttl_ms.max(1));
        fill.set(value.into(), ttl).await.map_err(too_large)
    }

    async fn drop(&mut self, fill: Resource<FillHandle>) -> wasmtime::Result<()> {
        // Dropping an unused fill wakes the next waiter to compute.
        self.table.delete(fill)?;
        Ok(())
    }
}
