//! The linker: which host interfaces a guest can import.

use crate::store::StoreData;
use wasmtime::Engine;
use wasmtime::component::{HasSelf, Linker};

/// Builds the linker shared by every route: WASI 0.2 (inert: see
/// [`StoreData`]), `wasi:http` and the `trellis:api` capabilities. Which
/// capabilities a component may import is checked per route at load
/// ([`crate::grants`]), so one linker serves all routes.
pub fn new_linker(engine: &Engine) -> wasmtime::Result<Linker<StoreData>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    crate::bindings::Imports::add_to_linker::<_, HasSelf<StoreData>>(&mut linker, |data| data)?;
    Ok(linker)
}
