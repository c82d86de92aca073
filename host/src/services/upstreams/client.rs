//! The pooled client of one upstream: hyper-util's keep-alive pool over a
//! TCP connector with the upstream's connect timeout, and rustls (ring
//! provider, Mozilla roots plus the upstream's `ca`) for `https://`, with
//! HTTP/2 when the server offers it through ALPN. The same TLS settings
//! serve the host's other outbound fetches ([`https_connector`]: JWKS).

use crate::config::manifest::UpstreamSpec;
use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use prometheus::IntGauge;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;

/// A request body the client sends: the guest's, streamed.
pub type OutgoingBody = UnsyncBoxBody<Bytes, BoxError>;

/// Any error, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The pooled client type.
pub type PooledClient = Client<HttpsConnector<Counting>, OutgoingBody>;

/// How long an idle pooled connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// Builds the client for `spec`; `open` counts its open connections.
pub fn build(spec: &UpstreamSpec, open: IntGauge) -> anyhow::Result<PooledClient> {
    let mut tcp = HttpConnector::new();
    tcp.set_connect_timeout(Some(spec.connect_timeout));
    tcp.set_nodelay(true);
    tcp.enforce_http(false);
    let http = Counting { inner: tcp, open };
    let connector = if spec.https {
        hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(spec.ca_pem.as_deref())?)
            .https_only()
            .enable_all_versions()
            .wrap_connector(http)
    } else {
        hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(spec.ca_pem.as_deref())?)
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

/// A connector for one-off HTTP/1.1 fetches by the host itself (a JWKS),
/// `http://` or `https://`, with the upstreams' TLS settings: the Mozilla
/// roots plus `ca_pem` (a PEM file's contents) when given.
pub fn https_connector(
    ca_pem: Option<&[u8]>,
    connect_timeout: Duration,
) -> anyhow::Result<HttpsConnector<HttpConnector>> {
    let mut tcp = HttpConnector::new();
    tcp.set_connect_timeout(Some(connect_timeout));
    tcp.set_nodelay(true);
    tcp.enforce_http(false);
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(ca_pem)?)
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp))
}

/// The TLS settings: the Mozilla roots, plus the upstream's `ca`.
fn tls_config(ca_pem: Option<&[u8]>) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(pem) = ca_pem {
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

/// The TCP connector, counting the connections it opened that are still
/// open in a gauge (`trellis_upstream_pool_connections{state="open"}`).
#[derive(Clone)]
pub struct Counting {
    inner: HttpConnector,
    open: IntGauge,
}

impl tower::Service<http::Uri> for Counting {
    type Response = Counted;
    type Error = <HttpConnector as tower::Service<http::Uri>>::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Counted, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, dst: http::Uri) -> Self::Future {
        let connecting = self.inner.call(dst);
        let open = self.open.clone();
        Box::pin(async move {
            let stream = connecting.await?;
            open.inc();
            Ok(Counted { stream, open })
        })
    }
}

/// One counted TCP connection: leaves the gauge when dropped.
pub struct Counted {
    stream: TokioIo<TcpStream>,
    open: IntGauge,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl Connection for Counted {
    fn connected(&self) -> Connected {
        self.stream.connected()
    }
}

impl Read for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl Write for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
}

/// `err` and its sources, so a failed fetch (a JWKS, a registry) says
/// why (connection refused, an unknown issuer, a name mismatch) rather
/// than only "client error (Connect)".
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
