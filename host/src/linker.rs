//! The linker: which host interfaces a guest can import.

use crate::store::StoreData;
use wasmtime::Engine;
use wasmtime::component::Linker;

/// Builds the linker shared by every route: WASI 0.2 (inert: see
/// [`StoreData`]) and `wasi:http`.
pub fn new_linker(engine: &Engine) -> wasmtime::Result<Linker<StoreData>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    Ok(linker)
}
