//! Guest bindings for the `trellis:api/imports` world, generated once from
//! `wit/` so the SDK's modules share one set of types.

wit_bindgen::generate!({
    world: "trellis:api/imports",
    path: "../../wit",
    generate_all,
});
