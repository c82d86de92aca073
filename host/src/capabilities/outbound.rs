//! Outbound HTTP: the standard `wasi:http/outgoing-handler`, reaching only
//! the upstreams the route's `outbound` grants.
//!
//! Unlike the `trellis:api` capabilities this one has no `Host` impl of
//! its own: wasmtime-wasi-http implements the interface and calls
//! [`WasiHttpHooks::send_request`], which [`OutboundHooks`] answers. A
//! request whose scheme, authority and base path match a granted upstream
//! goes through that upstream's pooled client
//! ([`crate::services::upstreams`]); anything else is
//! `HTTP-request-denied`. Bodies stream both ways: the guest's request
//! body is handed to the client as it is written, and the upstream's
//! response body to the guest as it arrives.

use crate::observability::trace::TraceContext;
use crate::services::upstreams::{BoxError, CallError, CallOptions, Upstream, Upstreams};
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Instant;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// The upstreams one route version may call, resolved from its
/// `outbound` names when it loads.
#[derive(Default)]
pub struct OutboundCtx {
    /// The granted upstreams.
    pub upstreams: Vec<Arc<Upstream>>,
}

impl OutboundCtx {
    /// The context for a route granting `names` of `upstreams` (names
    /// were validated against the manifest; unknown ones reach nothing).
    pub fn new(upstreams: &Upstreams, names: &[String]) -> OutboundCtx {
        OutboundCtx {
            upstreams: names
                .iter()
                .filter_map(|n| upstreams.get(n).cloned())
                .collect(),
        }
    }

    fn find(&self, uri: &http::Uri) -> Option<&Arc<Upstream>> {
        self.upstreams.iter().find(|u| u.matches(uri))
    }
}

/// `wasi:http` hooks of one instance: route outgoing requests to the
/// granted upstreams. Lives in the instance's store.
pub struct OutboundHooks {
    ctx: Arc<super::Capabilities>,
    trace: Arc<TraceContext>,
    deadline: Option<Instant>,
}

impl OutboundHooks {
    /// Hooks for an instance with `ctx`, serving a request in `trace`.
    pub fn new(ctx: Arc<super::Capabilities>, trace: Arc<TraceContext>) -> OutboundHooks {
        OutboundHooks {
            ctx,
            trace,
            deadline: None,
        }
    }

    /// Calls (with their retries and backoff) end by `deadline`, the
    /// route's.
    pub fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = Some(deadline);
    }
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> SendFuture {
        let Some(upstream) = self.ctx.outbound.find(request.uri()).cloned() else {
            tracing::debug!(uri = %request.uri(), "outgoing request to no granted upstream: denied");
            return Box::new(std::future::ready(Err(Error::HttpRequestDenied)));
        };
        let options = CallOptions {
            deadline: self.deadline,
            first_byte_timeout: options.and_then(|o| o.first_byte_timeout),
            between_bytes_timeout: options.and_then(|o| o.between_bytes_timeout),
        };
        let trace = self.trace.clone();
        Box::new(async move {
            let mut span = trace.child("http.client");
            span.attribute("upstream", || upstream.spec.name.clone());
            let (mut parts, body) = request.into_parts();
            parts.headers.insert("traceparent", trace.traceparent());
            let body = body.map_err(|e| Box::new(e) as BoxError).boxed_unsync();
            let request = http::Request::from_parts(parts, body);
            let started = Instant::now();
            let result = upstream.call(request, options).await;
            trace.add_upstream_time(started.elapsed());
            match result {
                Ok(response) => {
                    let status = response.status();
                    span.attribute("http.response.status_code", || status.as_u16().to_string());
                    if status.is_server_error() {
                        span.failed();
                    }
                    let response = response.map(|b| b.map_err(wasi_error).boxed_unsync());
                    let io: Box<dyn Future<Output = Result<(), Error>> + Send> =
                        Box::new(std::future::ready(Ok(())));
                    Ok((response, io))
                }
                Err(err) => {
                    span.failed();
                    tracing::debug!(upstream = %upstream.spec.name, cause = %err, "upstream call failed");
                    Err(wasi_error(err))
                }
            }
        })
    }
}

/// The `wasi:http` error code for `err`.
fn wasi_error(err: CallError) -> Error {
    match err {
        CallError::BreakerOpen => Error::DestinationUnavailable,
        CallError::ConnectionLimit(_) => Error::ConnectionLimitReached,
        CallError::ConnectTimeout => Error::ConnectionTimeout,
        CallError::ConnectionRefused => Error::ConnectionRefused,
        CallError::Dns(_) => Error::DnsError {
            rcode: None,
            info_code: None,
        },
        CallError::Tls {
            certificate: true, ..
        } => Error::TlsCertificateError,
        CallError::Tls { .. } => Error::TlsProtocolError,
        CallError::Timeout(_) | CallError::ReadTimeout(_) => Error::ConnectionReadTimeout,
        CallError::Terminated(_) => Error::ConnectionTerminated,
        // The guest's own body error (e.g. more bytes than its
        // content-length) goes back as it was.
        CallError::RequestBody(inner) => match inner.downcast::<Error>() {
            Ok(own) => *own,
            Err(other) => Error::InternalError(Some(other.to_string())),
        },
        CallError::Protocol(_) => Error::HttpProtocolError,
    }
}
