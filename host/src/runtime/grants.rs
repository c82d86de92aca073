//! Grants: a route names the `trellis:api` interfaces its component may
//! import, and a component importing more is refused when it loads, before
//! it can serve a single request.
//!
//! `wasi:http/outgoing-handler` (WASI 0.2) and `wasi:http/client` (0.3) are
//! linked for every component, so they too are checked here: importing
//! either needs the route's `outbound` grant (the
//! upstreams it may call). Other WASI interfaces are always linked, but
//! inert: the guest's WASI context has no environment, preopened directory
//! or socket (see [`crate::runtime::store`]), so they grant nothing.

use wasmtime::Engine;
use wasmtime::component::Component;

/// The package whose interfaces need a grant.
const PACKAGE: &str = "trellis:api/";

/// The interfaces that send HTTP requests out (WASI 0.2's and 0.3's), which
/// need `outbound`.
const OUTGOING: [&str; 2] = ["wasi:http/outgoing-handler", "wasi:http/client"];

/// A component importing an interface its route does not grant.
#[derive(Debug, thiserror::Error)]
#[error("the component imports {interface} but the route does not grant {grant:?}; {fix}")]
pub struct MissingGrant {
    /// The imported interface, e.g. `trellis:api/sql@0.1.0`.
    pub interface: String,
    /// The grant it needs, e.g. `sql`.
    pub grant: String,
    /// How to grant it.
    pub fix: String,
}

/// A component importing an interface the host does not implement at all,
/// named here rather than in wasmtime's generic linking error.
#[derive(Debug, thiserror::Error)]
#[error(
    "the component imports {interface}, which Trellis does not provide (it offers WASI 0.2 \
     and 0.3 cli, clocks, filesystem, io, random, sockets and http, and the trellis:api \
     capabilities sql, config, log, rate-limit, cache, metrics, identity and queue)"
)]
pub struct NotOffered {
    /// The imported interface, e.g. `wasi:keyvalue/store@0.2.0-draft`.
    pub interface: String,
}

/// Why a component's imports are refused.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// An interface no route can grant.
    #[error(transparent)]
    NotOffered(#[from] NotOffered),
    /// A capability this route does not grant.
    #[error(transparent)]
    MissingGrant(#[from] MissingGrant),
}

/// Packages whose 0.2 and 0.3 interfaces the linker provides (version-checked by
/// wasmtime when linking); `trellis:api` is checked against the grants.
const OFFERED: &[&str] = &[
    "wasi:cli/",
    "wasi:clocks/",
    "wasi:filesystem/",
    "wasi:io/",
    "wasi:random/",
    "wasi:sockets/",
    "wasi:http/",
    PACKAGE,
];

/// Checks every import of `component`: each must be an interface the host
/// offers, each `trellis:api` import must be in `grants`, and an import of
/// `wasi:http/outgoing-handler` needs the route to set `outbound` (to the
/// upstreams it calls, or to `[]` when it calls none: StarlingMonkey and
/// componentize-py's proxy world import it whether or not the code calls
/// out, and their calls are then denied).
pub fn check(
    engine: &Engine,
    component: &Component,
    grants: &[String],
    outbound: Option<&[String]>,
) -> Result<(), ImportError> {
    for (name, _) in component.component_type().imports(engine) {
        if !offered(name) {
            return Err(NotOffered {
                interface: name.to_owned(),
            }
            .into());
        }
        if is_outgoing_handler(name) && outbound.is_none() {
            return Err(MissingGrant {
                interface: name.to_owned(),
                grant: "outbound".to_owned(),
                fix: "declare the upstreams it calls with the route's outbound = [\"NAME\", ...] (each an [upstreams.NAME]), or outbound = [] if it calls none".to_owned(),
            }
            .into());
        }
        let Some(grant) = needed_grant(name) else {
            continue;
        };
        if !grants.iter().any(|g| g == grant) {
            return Err(MissingGrant {
                interface: name.to_owned(),
                grant: grant.to_owned(),
                fix: format!("add \"{grant}\" to the route's grants"),
            }
            .into());
        }
    }
    Ok(())
}

/// Whether `import` sends requests out: `wasi:http/outgoing-handler` or
/// `wasi:http/client`, in any version.
fn is_outgoing_handler(import: &str) -> bool {
    OUTGOING.iter().any(|interface| {
        import
            .strip_prefix(interface)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('@'))
    })
}

/// Whether `import` is in a package the linker implements.
fn offered(import: &str) -> bool {
    OFFERED.iter().any(|package| import.starts_with(package))
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
    fn imports_outside_the_offered_packages_are_named() {
        for ok in [
            "wasi:http/types@0.2.10",
            "wasi:io/streams@0.2.12",
            "wasi:cli/stdout@0.2.0",
            "trellis:api/sql@0.1.0",
        ] {
            assert!(offered(ok), "{ok}");
        }
        for missing in [
            "wasi:keyvalue/store@0.2.0-draft",
            "wasi:config/store@0.2.0-draft",
            "wasi:httpx/types@0.2.0",
            "acme:kv/store@1.0.0",
            "log",
        ] {
            assert!(!offered(missing), "{missing}");
        }
        let err = NotOffered {
            interface: "wasi:keyvalue/store@0.2.0-draft".to_owned(),
        };
        assert!(err.to_string().starts_with(
            "the component imports wasi:keyvalue/store@0.2.0-draft, which Trellis does not provide"
        ));
    }

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

    #[test]
    fn outgoing_handler_is_recognised_in_any_version() {
        assert!(is_outgoing_handler("wasi:http/outgoing-handler@0.2.4"));
        assert!(is_outgoing_handler("wasi:http/outgoing-handler"));
        assert!(is_outgoing_handler("wasi:http/client@0.3.0"));
        assert!(!is_outgoing_handler("wasi:http/clients@0.3.0"));
        assert!(!is_outgoing_handler("wasi:http/outgoing-handlerx@0.2.4"));
        assert!(!is_outgoing_handler("wasi:http/types@0.2.4"));
    }
}
