//! `oci://HOST[:PORT]/NAMESPACE/NAME:TAG` (or `@sha256:…`): where a
//! component lives in an OCI registry. Parsed here, in the configuration
//! layer, because the manifest and the command line both validate them
//! before anything is pulled; [`crate::services::registry`] pulls and
//! pushes them.

use std::fmt;

/// The scheme that marks a component as living in a registry.
pub const SCHEME: &str = "oci://";

/// A component in an OCI registry: which registry, which repository, and
/// a tag or a digest (or both once a tag is pinned).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// `HOST[:PORT]`, as written: the key of its `[registries]` entry.
    pub registry: String,
    /// `NAMESPACE/NAME` (one or more `/`-separated components).
    pub repository: String,
    /// The tag, e.g. `1.4.0`.
    pub tag: Option<String>,
    /// `sha256:` and 64 hex digits: the manifest's digest. When a tag is
    /// given as well, the digest is what is pulled and the tag only says
    /// where it came from.
    pub digest: Option<String>,
}

impl Reference {
    /// Whether `component` names a registry rather than a file.
    pub fn is_oci(component: &str) -> bool {
        component.starts_with(SCHEME)
    }

    /// Parses `oci://HOST[:PORT]/REPOSITORY(:TAG)?(@sha256:HEX)?`; one of
    /// the tag and the digest is required (no implicit `latest`: what runs
    /// should be what the operator named).
    pub fn parse(text: &str) -> Result<Reference, String> {
        let rest = text
            .strip_prefix(SCHEME)
            .ok_or_else(|| format!("{text:?} is not an oci:// reference"))?;
        let bad = |why: String| format!("{text:?}: {why}");
        let (registry, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("expected oci://HOST[:PORT]/NAMESPACE/NAME:TAG".into()))?;
        check_registry(registry).map_err(bad)?;
        let (name_tag, digest) = match path.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (path, None),
        };
        let (repository, tag) = match name_tag.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag)),
            _ => (name_tag, None),
        };
        check_repository(repository).map_err(bad)?;
        if let Some(tag) = tag {
            check_tag(tag).map_err(bad)?;
        }
        if let Some(digest) = digest {
            check_digest(digest).map_err(bad)?;
        }
        if tag.is_none() && digest.is_none() {
            return Err(bad(
                "name a tag (…/name:1.0) or a digest (…/name@sha256:…)".into()
            ));
        }
        Ok(Reference {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag: tag.map(str::to_owned),
            digest: digest.map(str::to_owned),
        })
    }

    /// What the registry API calls the reference: the digest when there
    /// is one, else the tag.
    pub fn api_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// This reference pinned to the manifest `digest`, keeping the tag to
    /// say where it came from: `oci://h/ns/name:1.0@sha256:…`.
    pub fn pinned(&self, digest: &str) -> Reference {
        Reference {
            digest: Some(digest.to_owned()),
            ..self.clone()
        }
    }

    /// The host part of [`Reference::registry`], without the port.
    pub fn host(&self) -> &str {
        registry_host(&self.registry)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// The host of a `HOST[:PORT]` registry (brackets kept off an IPv6 one).
pub fn registry_host(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry.split(':').next().unwrap_or(registry)
}

/// Whether `registry` (`HOST[:PORT]`) is on this machine: `localhost`,
/// 127.0.0.0/8 or `::1`. Only such a registry may be reached over plain
/// HTTP (`insecure = true`): anywhere else a network could read the
/// credentials and swap the components.
pub fn is_loopback(registry: &str) -> bool {
    let host = registry_host(registry);
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `HOST[:PORT]`: a DNS name or IP address, and an optional port.
pub fn check_registry(registry: &str) -> Result<(), String> {
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("registry {registry:?}: unclosed '['"))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("registry {registry:?}: not an IPv6 address"));
        }
        (host, after.strip_prefix(':'))
    } else {
        match registry.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (registry, None),
        }
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'));
    if !host_ok {
        return Err(format!("registry {registry:?}: expected HOST[:PORT]"));
    }
    if let Some(port) = port
        && port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(format!(
            "registry {registry:?}: port {port:?} is not 1-65535"
        ));
    }
    Ok(())
}

/// The distribution spec's repository name: `/`-separated components of
/// lower-case letters and digits joined by `.`, `_`, `__` or `-`.
fn check_repository(repository: &str) -> Result<(), String> {
    let component_ok = |c: &str| {
        let b = c.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|&x| {
                x.is_ascii_lowercase() || x.is_ascii_digit() || matches!(x, b'.' | b'_' | b'-')
            })
    };
    if repository.len() > 255 || !repository.split('/').all(component_ok) {
        return Err(format!(
            "repository {repository:?}: expected NAMESPACE/NAME of lower-case letters, digits, '.', '_', '-'"
        ));
    }
    Ok(())
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn check_tag(tag: &str) -> Result<(), String> {
    let b = tag.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tag {tag:?}: expected 1 to 128 of letters, digits, '_', '.', '-'"
        ))
    }
}

/// `sha256:` and 64 lower-case hex digits (the only algorithm pulled).
pub fn check_digest(digest: &str) -> Result<(), String> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| format!("digest {digest:?}: only sha256: digests are supported"))?;
    if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(format!(
            "digest {digest:?}: expected sha256: and 64 lower-case hex digits"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_tags_digests_and_ports() {
        let r = Reference::parse("oci://registry.example.com/acme/users:1.4.0").unwrap();
        assert_eq!(r.registry, "registry.example.com");
        assert_eq!(r.repository, "acme/users");
        assert_eq!(r.tag.as_deref(), Some("1.4.0"));
        assert_eq!(r.api_reference(), "1.4.0");
        assert_eq!(r.to_string(), "oci://registry.example.com/acme/users:1.4.0");

        let r = Reference::parse(&format!("oci://127.0.0.1:5000/a/b/c@{D}")).unwrap();
        assert_eq!(
            (r.registry.as_str(), r.host()),
            ("127.0.0.1:5000", "127.0.0.1")
        );
        assert_eq!(r.repository, "a/b/c");
        assert_eq!(r.tag, None);
        assert_eq!(r.api_reference(), D);

        let pinned = Reference::parse("oci://localhost:5000/ns/n:v1")
            .unwrap()
            .pinned(D);
        let again = Reference::parse(&pinned.to_string()).unwrap();
        assert_eq!(again, pinned);
        assert_eq!(again.api_reference(), D);
        assert_eq!(again.tag.as_deref(), Some("v1"));

        let r = Reference::parse("oci://[::1]:5000/ns/n:v1").unwrap();
        assert_eq!(r.host(), "::1");
        assert!(is_loopback(&r.registry));
    }

    #[test]
    fn refuses_bad_references_naming_the_part() {
        for (text, want) in [
            ("https://x/a:1", "not an oci://"),
            ("oci://x", "expected oci://HOST"),
            ("oci://x/a", "name a tag"),
            ("oci://x/Acme/users:1", "repository"),
            ("oci://x/acme//users:1", "repository"),
            ("oci://x/acme/users:-1", "tag"),
            ("oci://x/acme/users@sha512:00", "only sha256"),
            ("oci://x/acme/users@sha256:00", "64"),
            ("oci://x:0/a:1", "port"),
            ("oci://x:99999/a:1", "port"),
            ("oci://x y/a:1", "HOST[:PORT]"),
        ] {
            let err = Reference::parse(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn loopback_is_only_this_machine() {
        for r in [
            "127.0.0.1:5000",
            "localhost",
            "LOCALHOST:1",
            "127.1.2.3",
            "[::1]:80",
        ] {
            assert!(is_loopback(r), "{r}");
        }
        for r in [
            "10.0.0.1:5000",
            "registry.example.com",
            "localhost.example.com",
            "0.0.0.0",
        ] {
            assert!(!is_loopback(r), "{r}");
        }
    }
}
