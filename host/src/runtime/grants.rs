//! Grants: a route names the `trellis:api` interfaces its component may
//! import, and a component importing more is refused when it loads, before
//! it can serve a single request.
//!
//! WASI interfaces other than these are always linked, but inert: the
//! guest's WASI context has no environment, preopened directory or socket
//! (see [`crate::runtime::store`]), so they grant nothing.

use wasmtime::Engine;
use wasmtime::component::Component;

/// The package whose interfaces need a grant.
const PACKAGE: &str = "trellis:api/";

/// A component importing an interface its route does not grant.
#[derive(Debug, thiserror::Error)]
#[error(
    "the component imports {interface} but the route does not grant {grant:?}; add \"{grant}\" to the route's grants"
)]
pub struct MissingGrant {
    /// The imported interface, e.g. `trellis:api/sql@0.1.0`.
    pub interface: String,
    /// The grant it needs, e.g. `sql`.
    pub grant: String,
}

/// Checks every `trellis:api` import of `component` against `grants`.
pub fn check(
    engine: &Engine,
    component: &Component,
    grants: &[String],
) -> Result<(), MissingGrant> {
    for (name, _) in component.component_type().imports(engine) {
        let Some(grant) = needed_grant(name) else {
            continue;
        };
        if !grants.iter().any(|g| g == grant) {
            return Err(MissingGrant {
                interface: name.to_owned(),
                grant: grant.to_owned(),
            });
        }
    }
    Ok(())
}

/// The grant an import needs: the interface name of a `trellis:api`
/// import (`trellis:api/sql@0.1.0` → `sql`); `None` for anything else.
fn needed_grant(import: &str) -> Option<&str> {
    let interface = import.strip_prefix(PACKAGE)?;
    Some(
        interface
            .split_once('@')
            .map_or(interface, |(name, _)| name),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trellis_imports_need_their_interface_as_grant() {
        assert_eq!(needed_grant("trellis:api/sql@0.1.0"), Some("sql"));
        assert_eq!(
            needed_grant("trellis:api/rate-limit@0.1.0"),
            Some("rate-limit")
        );
        assert_eq!(needed_grant("trellis:api/log"), Some("log"));
        assert_eq!(needed_grant("wasi:http/types@0.2.4"), None);
        assert_eq!(needed_grant("trellis:apix/sql@0.1.0"), None);
    }
}
