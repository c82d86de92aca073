//! `[upstreams.NAME]`: the HTTP services guests may call through
//! `wasi:http/outgoing-handler`, and what an upstream resolves to once
//! validated ([`UpstreamSpec`]): its origin and base path, its limits, its
//! breaker, its private root and the headers the host adds.

use super::ConfigValue;
use crate::config::units::Duration;
use http::{HeaderName, HeaderValue};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time;
use toml::Spanned;

/// One `[upstreams.NAME]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamEntry {
    /// `http://` or `https://`, an authority, and optionally a base path
    /// the guest's URLs must start with.
    pub url: Spanned<String>,
    /// The longest one attempt may wait for the response head, and the
    /// longest the response body may stall between two chunks.
    #[serde(default = "defaults::timeout")]
    pub timeout: Duration,
    /// The longest opening a connection (TCP and TLS) may take.
    #[serde(default = "defaults::connect_timeout")]
    pub connect_timeout: Duration,
    /// Most connections open to the upstream at once (requests beyond it
    /// wait for one, within `timeout`); idle ones are kept alive.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: u32,
    /// Extra attempts after a failure, for idempotent methods without a
    /// request body.
    #[serde(default)]
    pub retries: u32,
    /// The circuit breaker.
    #[serde(default)]
    pub breaker: BreakerSettings,
    /// A PEM file of extra roots trusted for this upstream, relative to
    /// the manifest.
    pub ca: Option<Spanned<String>>,
    /// Headers the host adds to every request, replacing the guest's;
    /// their values never enter the guest.
    #[serde(default)]
    pub headers: BTreeMap<String, ConfigValue>,
    /// The resolved upstream, set at validation.
    #[serde(skip)]
    pub(super) resolved: Option<Arc<UpstreamSpec>>,
}

/// `breaker = { failures, window, open_for }`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSettings {
    /// Failures (connection errors, timeouts, 5xx) within `window` that
    /// open the breaker.
    pub failures: u32,
    /// The sliding window failures are counted in.
    pub window: Duration,
    /// How long the breaker stays open before one probe is let through.
    pub open_for: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            failures: 5,
            window: Duration(time::Duration::from_secs(10)),
            open_for: Duration(time::Duration::from_secs(30)),
        }
    }
}

mod defaults {
    use crate::config::units::Duration;
    use std::time;

    pub(super) fn timeout() -> Duration {
        Duration(time::Duration::from_secs(10))
    }
    pub(super) fn connect_timeout() -> Duration {
        Duration(time::Duration::from_secs(2))
    }
    pub(super) fn max_connections() -> u32 {
        32
    }
}

/// An upstream as the host runs it.
#[derive(Debug)]
pub struct UpstreamSpec {
    /// The table's name: metric label, log field, and what a route's
    /// `outbound` names.
    pub name: String,
    /// Whether connections use TLS.
    pub https: bool,
    /// Lower-case host name or IP literal (IPv6 without brackets).
    pub host: String,
    /// The port, explicit or the scheme's default.
    pub port: u16,
    /// `""` or a path without a trailing `/` (e.g. `/v1`) that requests
    /// must be under.
    pub base_path: String,
    /// See [`UpstreamEntry::timeout`].
    pub timeout: time::Duration,
    /// See [`UpstreamEntry::connect_timeout`].
    pub connect_timeout: time::Duration,
    /// See [`UpstreamEntry::max_connections`].
    pub max_connections: u32,
    /// See [`UpstreamEntry::retries`].
    pub retries: u32,
    /// The breaker's settings.
    pub breaker: BreakerSettings,
    /// The `ca` file's contents (checked to hold PEM certificates).
    pub ca_pem: Option<Vec<u8>>,
    /// Headers added to every request, values marked sensitive.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// Why an upstream is invalid: the field and what is wrong.
pub(super) struct Invalid {
    pub field: &'static str,
    pub message: String,
    /// Whether the `ca` span (else the `url` span) locates it.
    pub at_ca: bool,
}

/// The longest an upstream's `timeout`, `connect_timeout`, breaker
/// `window` and `open_for` may be.
const MAX_DURATION: time::Duration = time::Duration::from_secs(3600);
/// Most `max_connections`.
const MAX_CONNECTIONS: u32 = 100_000;
/// Most `retries`.
const MAX_RETRIES: u32 = 10;

impl UpstreamEntry {
    /// Checks the entry named `name` and resolves it (environment
    /// references in `headers`, the `ca` file under `base_dir`).
    pub(super) fn resolve(&mut self, name: &str, base_dir: &Path) -> Result<(), Invalid> {
        let fail = |field: &'static str, message: String| Invalid {
            field,
            message,
            at_ca: false,
        };
        let (https, host, port, base_path) =
            parse_url(self.url.get_ref()).map_err(|m| fail("url", m))?;
        for (field, value) in [
            ("timeout", self.timeout),
            ("connect_timeout", self.connect_timeout),
            ("breaker.window", self.breaker.window),
            ("breaker.open_for", self.breaker.open_for),
        ] {
            if value.0.is_zero() {
                return Err(fail(field, "must be more than 0".into()));
            }
            if value.0 > MAX_DURATION {
                return Err(fail(
                    field,
                    format!("{value} is too long: at most {}", Duration(MAX_DURATION)),
                ));
            }
        }
        if !(1..=MAX_CONNECTIONS).contains(&self.max_connections) {
            return Err(fail(
                "max_connections",
                format!("must be 1 to {MAX_CONNECTIONS}"),
            ));
        }
        if self.retries > MAX_RETRIES {
            return Err(fail("retries", format!("must be at most {MAX_RETRIES}")));
        }
        if self.breaker.failures == 0 {
            return Err(fail("breaker.failures", "must be at least 1".into()));
        }
        let ca_pem = match &self.ca {
            None => None,
            Some(ca) => Some(
                read_ca(&base_dir.join(ca.get_ref())).map_err(|message| Invalid {
                    field: "ca",
                    message,
                    at_ca: true,
                })?,
            ),
        };
        if ca_pem.is_some() && !https {
            return Err(Invalid {
                field: "ca",
                message: "only an https:// upstream uses a ca".into(),
                at_ca: true,
            });
        }
        let mut headers = Vec::new();
        for (key, value) in &self.headers {
            let header = HeaderName::from_bytes(key.as_bytes())
                .map_err(|_| fail("headers", format!("{key:?} is not a header name")))?;
            let value = match value {
                ConfigValue::Literal(v) => v.clone(),
                ConfigValue::Env(from) => match (crate::config::env::var(&from.env), &from.default)
                {
                    (Some(v), _) => v,
                    (None, Some(d)) => d.clone(),
                    (None, None) => {
                        return Err(fail(
                            "headers",
                            format!(
                                "{key}: environment variable {} is not set and no default is given",
                                from.env
                            ),
                        ));
                    }
                },
            };
            let mut value = HeaderValue::from_str(&value).map_err(|_| {
                fail(
                    "headers",
                    format!("{key}: the value is not a valid header value"),
                )
            })?;
            value.set_sensitive(true);
            headers.push((header, value));
        }
        self.resolved = Some(Arc::new(UpstreamSpec {
            name: name.to_owned(),
            https,
            host,
            port,
            base_path,
            timeout: self.timeout.0,
            connect_timeout: self.connect_timeout.0,
            max_connections: self.max_connections,
            retries: self.retries,
            breaker: self.breaker,
            ca_pem,
            headers,
        }));
        Ok(())
    }

    /// The validated upstream.
    pub fn spec(&self) -> Option<&Arc<UpstreamSpec>> {
        self.resolved.as_ref()
    }
}

/// Splits an upstream URL into (https, host, port, base path). Userinfo,
/// a query or a fragment are refused: none means anything for an origin.
fn parse_url(url: &str) -> Result<(bool, String, u16, String), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(format!("{url:?} must start with http:// or https://")),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{url:?} has no host"))?;
    if authority.as_str().contains('@') {
        return Err(format!(
            "{url:?}: credentials in the URL are not allowed; use headers"
        ));
    }
    if authority.host().is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    if uri.query().is_some() || url.contains('#') {
        return Err(format!(
            "{url:?}: only scheme, host, port and a base path are allowed, not a query or fragment"
        ));
    }
    let path = uri.path().trim_end_matches('/');
    if path.split('/').any(|s| s == "." || s == "..") {
        return Err(format!("{url:?}: the base path has a dot segment"));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    Ok((https, host, port, path.to_owned()))
}

/// Reads `path` and checks it holds at least one PEM certificate.
pub(super) fn read_ca(path: &Path) -> Result<Vec<u8>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        cert.map_err(|e| format!("{} is not a PEM certificate file: {e}", path.display()))?;
        count += 1;
    }
    if count == 0 {
        return Err(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_origins_with_an_optional_base_path() {
        assert_eq!(
            parse_url("https://API.example.com").unwrap(),
            (true, "api.example.com".into(), 443, String::new())
        );
        assert_eq!(
            parse_url("http://127.0.0.1:8081/v1/").unwrap(),
            (false, "127.0.0.1".into(), 8081, "/v1".into())
        );
        assert_eq!(
            parse_url("http://[::1]:9000").unwrap(),
            (false, "::1".into(), 9000, String::new())
        );
        for bad in [
            "ftp://x",
            "example.com",
            "http://u:p@x",
            "http://x/?a=1",
            "http://x/a#f",
            "http://x/a/../b",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
