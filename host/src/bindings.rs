//! Host bindings for the `trellis:api` WIT package (`wit/`), generated once
//! here; each interface is implemented in its own module under
//! [`crate::capabilities`].
#![allow(missing_docs, reason = "generated; the WIT files carry the docs")]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "trellis:api/imports",
    // Capability calls wait on the network (SQL, Redis); table lookups on
    // a guest's resource handles may trap.
    imports: { default: async | trappable },
    with: {
        "trellis:api/sql.transaction": crate::capabilities::sql::Transaction,
        "trellis:api/sql.row-stream": crate::capabilities::sql::RowStream,
        "trellis:api/cache.fill": crate::capabilities::cache::FillHandle,
    },
});
