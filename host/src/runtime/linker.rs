//! The linker: which host interfaces a guest can import.

use crate::capabilities;
use crate::runtime::store::StoreData;
use wasmtime::Engine;
use wasmtime::component::Linker;

/// Builds the linker shared by every route: WASI 0.2 and 0.3 (inert: see
/// [`StoreData`]), `wasi:http` of both and the `trellis:api` capabilities.
/// A WASI 0.3 component built from Rust imports both: its standard library
/// still speaks 0.2. Which
/// capabilities a component may import is checked per route at load
/// ([`crate::runtime::grants`]), so one linker serves all routes.
pub fn new_linker(engine: &Engine) -> wasmtime::Result<Linker<StoreData>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    wasmtime_wasi::p3::add_to_linker(&mut linker)?;
    wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
    let l = &mut linker;
    capabilities::sql::add_to_linker(l, StoreData::sql)?;
    capabilities::cache::add_to_linker(l, StoreData::cache)?;
    capabilities::config::add_to_linker(l, StoreData::config)?;
    capabilities::log::add_to_linker(l, StoreData::log)?;
    capabilities::metrics::add_to_linker(l, StoreData::metrics)?;
    capabilities::rate_limit::add_to_linker(l, StoreData::rate_limit)?;
    capabilities::identity::add_to_linker(l, StoreData::identity)?;
    capabilities::queue::add_to_linker(l, StoreData::queue)?;
    Ok(linker)
}
