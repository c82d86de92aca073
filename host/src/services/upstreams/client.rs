//! The pooled client of one upstream: hyper-util's keep-alive pool over a
//! TCP connector with the upstream's connect timeout, and rustls (ring
//! provider, Mozilla roots plus the upstream's `ca`) for `https://`, with
//! HTTP/2 when the server offers it through ALPN.

use crate::config::manifest::UpstreamSpec;
use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::sync::Arc;
use std::time::Duration;

/// A request body the client sends: the guest's, streamed.
pub type OutgoingBody = UnsyncBoxBody<Bytes, BoxError>;

/// Any error, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The pooled client type.
pub type PooledClient = Client<HttpsConnector<HttpConnector>, OutgoingBody>;

/// How long an idle pooled connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// Builds the client for `spec`.
pub fn build(spec: &UpstreamSpec) -> anyhow::Result<PooledClient> {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(spec.connect_timeout));
    http.set_nodelay(true);
    http.enforce_http(false);
    let connector = if spec.https {
        hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(spec)?)
            .https_only()
            .enable_all_versions()
            .wrap_connector(http)
    } else {
        hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(spec)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http)
    };
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE)
        .pool_max_idle_per_host(spec.max_connections as usize)
        .build(connector))
}

/// The TLS settings: the Mozilla roots, plus the upstream's `ca`.
fn tls_config(spec: &UpstreamSpec) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(pem) = &spec.ca_pem {
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.context("reading the ca file")?;
            roots
                .add(cert)
                .context("the ca file holds a certificate rustls cannot use as a root")?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // ALPN (h2, http/1.1) is set by the connector builder.
    Ok(config)
}
