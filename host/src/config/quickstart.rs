//! The quickstart compiled into the binary, served by `trellis serve` when
//! no manifest is found, so a fresh checkout answers requests at once.

use std::path::Path;

/// The quickstart manifest, as in `examples/quickstart/trellis.toml`.
pub const MANIFEST: &str = include_str!("../../../examples/quickstart/trellis.toml");

/// The `hello` plugin, built for wasm32-wasip2 by `build.rs`.
static HELLO: &[u8] = include_bytes!(env!("HELLO_COMPONENT"));

/// The bundled component the quickstart manifest names at `path`, looked
/// up by file name.
pub fn component(path: &Path) -> Option<&'static [u8]> {
    match path.file_name()?.to_str()? {
        "hello.wasm" => Some(HELLO),
        _ => None,
    }
}
