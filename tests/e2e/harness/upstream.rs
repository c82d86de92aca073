//! A real HTTP upstream for the outbound tests: hyper on `127.0.0.1:0`,
//! plain or TLS (with a CA and certificate made by the `openssl` CLI), that
//! counts the connections and requests it sees and records request heads.
//!
//! Paths: `/ok` (200 `hello from upstream`), `/status/N` (status N),
//! `/hang` (never answers), `/trickle` (one chunk, then stalls), `/bytes/N`
//! (N bytes of `u` in 64 KiB chunks, streamed), `/sink` (reads the body,
//! answers its length), `/v1/traces` (keeps the body: an OTLP collector),
//! `/jwks.json` (the document [`Upstream::set_jwks`] gave, else 404).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use super::scratch::TempDir;

type BoxBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

#[derive(Default)]
struct Counters {
    connections: AtomicUsize,
    requests: AtomicUsize,
    heads: Mutex<Vec<http::request::Parts>>,
    bodies: Mutex<Vec<Bytes>>,
    jwks: Mutex<Option<String>>,
}

/// A running upstream; stops when dropped.
pub(crate) struct Upstream {
    pub(crate) addr: SocketAddr,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
    /// For TLS: the CA certificate (PEM) clients should trust.
    pub(crate) ca: Option<PathBuf>,
    _dir: Option<TempDir>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// A plain HTTP upstream.
    pub(crate) async fn start() -> Upstream {
        Upstream::serve(None, false).await
    }

    /// An HTTPS upstream whose certificate (for `127.0.0.1`) is signed by
    /// a CA made for this test; [`Upstream::ca`] is its PEM.
    pub(crate) async fn start_tls() -> Upstream {
        Upstream::start_tls_with(false).await
    }

    /// [`Upstream::start_tls`] offering only HTTP/2 (ALPN `h2`).
    pub(crate) async fn start_tls_h2() -> Upstream {
        Upstream::start_tls_with(true).await
    }

    async fn start_tls_with(h2: bool) -> Upstream {
        let dir = TempDir::new();
        let d = dir.path();
        super::tls::make_certs(d);
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(d.join("server.pem"))
                .unwrap()
                .map(Result::unwrap)
                .collect();
        let key = PrivateKeyDer::from_pem_file(d.join("server.key")).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        config.alpn_protocols = vec![if h2 {
            b"h2".to_vec()
        } else {
            b"http/1.1".to_vec()
        }];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let mut upstream = Upstream::serve(Some(acceptor), h2).await;
        upstream.ca = Some(d.join("ca.pem"));
        upstream._dir = Some(dir);
        upstream
    }

    async fn serve(tls: Option<tokio_rustls::TlsAcceptor>, h2: bool) -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                c.connections.fetch_add(1, Ordering::SeqCst);
                let c = c.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(c.clone(), req));
                    let builder = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(tcp).await else {
                                return;
                            };
                            if h2 {
                                let _ = hyper::server::conn::http2::Builder::new(
                                    hyper_util::rt::TokioExecutor::new(),
                                )
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                                return;
                            }
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                        }
                    }
                });
            }
        });
        Upstream {
            addr,
            counters,
            task,
            ca: None,
            _dir: None,
        }
    }

    /// `http://127.0.0.1:PORT` (or `https://`).
    pub(crate) fn origin(&self) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Connections accepted so far.
    pub(crate) fn connections(&self) -> usize {
        self.counters.connections.load(Ordering::SeqCst)
    }

    /// Requests received so far.
    pub(crate) fn requests(&self) -> usize {
        self.counters.requests.load(Ordering::SeqCst)
    }

    /// The bodies posted to `/v1/traces` so far.
    pub(crate) fn bodies(&self) -> Vec<Bytes> {
        self.counters.bodies.lock().unwrap().clone()
    }

    /// Serves `document` at `/jwks.json` from now on.
    pub(crate) fn set_jwks(&self, document: String) {
        *self.counters.jwks.lock().unwrap() = Some(document);
    }

    /// The heads of the requests received so far.
    pub(crate) fn heads(&self) -> Vec<http::request::Parts> {
        self.counters.heads.lock().unwrap().clone()
    }
}

async fn handle(c: Arc<Counters>, req: Request<Incoming>) -> Result<Response<BoxBody>, Infallible> {
    c.requests.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    c.heads.lock().unwrap().push(parts.clone());
    let path = parts.uri.path().to_owned();
    let full = |status: u16, text: String| {
        Response::builder()
            .status(status)
            .body(Full::new(Bytes::from(text)).boxed())
            .unwrap()
    };
    if path == "/hang" {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    if let Some(code) = path.strip_prefix("/status/") {
        return Ok(full(code.parse().unwrap_or(500), format!("status {code}")));
    }
    if path == "/jwks.json" {
        return Ok(match c.jwks.lock().unwrap().clone() {
            Some(document) => full(200, document),
            None => full(404, "no JWKS".into()),
        });
    }
    if path == "/v1/traces" {
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        c.bodies.lock().unwrap().push(body);
        return Ok(full(200, "{}".into()));
    }
    if path == "/sink" {
        let mut body = body;
        let mut n = 0u64;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => n += f.data_ref().map_or(0, |d| d.len() as u64),
                Err(_) => break,
            }
        }
        return Ok(full(200, n.to_string()));
    }
    if path == "/trickle" {
        let stream = futures::stream::unfold(0u8, |step| async move {
            match step {
                0 => Some((
                    Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"first"))),
                    1,
                )),
                _ => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    None
                }
            }
        });
        return Ok(Response::new(StreamBody::new(stream).boxed()));
    }
    if let Some(n) = path.strip_prefix("/bytes/") {
        let total: u64 = n.parse().unwrap_or(0);
        const CHUNK: u64 = 64 * 1024;
        let chunk = Bytes::from(vec![b'u'; CHUNK as usize]);
        let stream = futures::stream::unfold(total, move |left| {
            let chunk = chunk.clone();
            async move {
                if left == 0 {
                    return None;
                }
                let n = left.min(CHUNK);
                Some((
                    Ok::<_, Infallible>(Frame::data(chunk.slice(..n as usize))),
                    left - n,
                ))
            }
        });
        return Ok(Response::builder()
            .header("content-length", total)
            .body(StreamBody::new(stream).boxed())
            .unwrap());
    }
    Ok(full(200, "hello from upstream".into()))
}
