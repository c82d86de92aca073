//! Serving one request with one instance: instantiate from the pool (or,
//! on a route with `reuse`, take a warm instance), call
//! `wasi:http/incoming-handler.handle`, and hand the guest's response back
//! while the guest keeps streaming its body on its own task. A kept
//! instance goes back to its [`Pool`] only once both the guest returned
//! and its response body ended without an error ([`Handback`]).

use crate::capabilities::GuestContext;
use crate::config::manifest::Limits;
use crate::observability::metrics::{FailureKind, Metrics, RouteMetrics};
use crate::runtime::component::{Handler, HandlerPre};
use crate::runtime::lane::Lane;
use crate::runtime::pool::{Pool, Tally, Warm};
use crate::runtime::store::{StoreData, new_store, set_deadline};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::{Engine, Store, Trap};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// Why a guest produced no response.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The route's `timeout` passed (epoch deadline or wall clock).
    #[error("handler exceeded its {0:?} deadline")]
    Timeout(Duration),
    /// The guest trapped: a panic, `unreachable`, or a memory limit.
    #[error("handler trapped: {0:#}")]
    Trapped(wasmtime::Error),
    /// The guest set an error code instead of a response.
    #[error("handler answered with error code {0:?}")]
    ErrorCode(ErrorCode),
    /// The guest returned without setting a response.
    #[error("handler returned without a response")]
    NoResponse,
    /// A WASI 0.3 guest returned an error code instead of a response.
    #[error("handler answered with error code {0}")]
    Refused(String),
    /// No slot of `[server].max_instances` for a new instance in time.
    #[error("no instance slot free in time")]
    NoInstance,
    /// Setting up the request resources failed (a host bug or a request
    /// wasi:http cannot represent).
    #[error("preparing the request for the guest: {0:#}")]
    Setup(wasmtime::Error),
}

/// Who is asking, for log lines and metrics written after the response
/// has left.
#[derive(Clone)]
pub struct Context {
    /// Where failures are recorded.
    pub metrics: Arc<Metrics>,
    /// Where the route's instantiation and guest times are recorded.
    pub series: Arc<RouteMetrics>,
    /// The route, component and request, for capability calls.
    pub guest: GuestContext,
    /// Caps the route's guests in the slow lane ([`crate::runtime::lane`]).
    pub slow_slots: Arc<Semaphore>,
    /// Set by the caller's request body when it failed on the client's
    /// side (malformed, cut short, too large): a guest failure that
    /// follows is then the client's error, not the guest's.
    pub client_fault: Arc<AtomicBool>,
}

/// The guest's response body as the host sends it: the guest's own body,
/// ended with an error instead of cleanly when the guest failed (trap or
/// timeout) after its head left. hyper then cuts the connection (no last
/// chunk, or fewer bytes than the Content-Length), so the client sees the
/// failure instead of a response that looks complete.
pub struct GuestBody {
    inner: HyperOutgoingBody,
    /// Frames taken from `inner` before hyper asked for them
    /// ([`GuestBody::drain_finished`]), sent first.
    taken: std::collections::VecDeque<Result<Frame<Bytes>, wasmtime_wasi_http::Error>>,
    /// `inner` ended cleanly after `taken`.
    done: bool,
    /// Set by the guest's task when it fails, before its store (and with
    /// it the sending end of `inner`) is dropped.
    failed: Arc<AtomicBool>,
    /// On a route with `reuse`: told how the body ended, so the instance
    /// is not kept after a body that ended in an error (the guest's
    /// `finish` disagreed with its Content-Length, or it aborted). Taken
    /// when told.
    handback: Option<Arc<Handback>>,
}

impl GuestBody {
    fn new(
        inner: HyperOutgoingBody,
        failed: Arc<AtomicBool>,
        handback: Option<Arc<Handback>>,
    ) -> Self {
        GuestBody {
            inner,
            taken: std::collections::VecDeque::new(),
            done: false,
            failed,
            handback,
        }
    }

    /// Takes what the guest already sent, once it has returned: if that
    /// is the whole body, ended cleanly, a kept instance goes back to its
    /// pool now rather than after hyper has written the response. Under
    /// many connections the answers wait their turn to be written
    /// (`http::server::Split`), and instances held that long meant one
    /// instance per connection instead of a few warm ones.
    fn drain_finished(&mut self) {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        loop {
            match Pin::new(&mut self.inner).poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(frame))) => self.taken.push_back(Ok(frame)),
                Poll::Ready(Some(Err(err))) => {
                    self.taken.push_back(Err(err));
                    return;
                }
                Poll::Ready(None) if !self.failed.load(Ordering::Acquire) => {
                    self.done = true;
                    self.ended(true);
                    return;
                }
                // A failure is reported when hyper reaches the end.
                Poll::Ready(None) | Poll::Pending => return,
            }
        }
    }

    fn ended(&mut self, clean: bool) {
        if let Some(handback) = self.handback.take() {
            handback.body_ended(clean);
        }
    }
}

impl Drop for GuestBody {
    fn drop(&mut self) {
        // hyper drops a body with a Content-Length once it has sent that
        // many bytes, without polling for its end; a client gone or a
        // HEAD request drops it early too. None of that says anything
        // about the guest, which is judged by how its call ended.
        self.ended(true);
    }
}

impl Body for GuestBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(frame) = self.taken.pop_front() {
            if frame.is_err() {
                self.ended(false);
            }
            return Poll::Ready(Some(frame));
        }
        if self.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(None) if self.failed.load(Ordering::Acquire) => {
                self.ended(false);
                Poll::Ready(Some(Err(wasmtime_wasi_http::Error::InternalError(Some(
                    "the handler failed".into(),
                )))))
            }
            Poll::Ready(None) => {
                self.ended(true);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(err))) => {
                self.ended(false);
                Poll::Ready(Some(Err(err)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        // Never claim the end early: hyper would skip the poll that
        // reports a failure. Once drained, the end is known to be clean.
        self.done && self.taken.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Where the instance serving a request comes from, and where it goes.
pub enum Lease {
    /// A fresh instance in this slot of the instance budget, dropped
    /// after the request.
    Fresh(OwnedSemaphorePermit),
    /// A fresh instance in this slot, kept in the pool afterwards.
    New(OwnedSemaphorePermit, Arc<Pool>),
    /// A warm instance from the pool, returned to it afterwards.
    Warm(Warm, Arc<Pool>),
}

/// Returns a reused instance to its pool once the guest returned cleanly
/// *and* its response body ended without an error, whichever comes last;
/// drops it if either did not.
pub struct Handback {
    pool: Arc<Pool>,
    state: Mutex<Handing>,
}

enum Handing {
    /// Neither has happened yet.
    Open,
    /// The guest is done; waiting for the body.
    Parked(Warm),
    /// The body ended cleanly; waiting for the guest.
    BodyDone,
    /// Decided.
    Closed,
}

impl Handback {
    fn new(pool: Arc<Pool>) -> Arc<Handback> {
        Arc::new(Handback {
            pool,
            state: Mutex::new(Handing::Open),
        })
    }

    /// The guest returned from `handle` without a failure.
    fn guest_done(&self, warm: Warm) {
        let mut state = self.state.lock().expect("handback lock");
        match std::mem::replace(&mut *state, Handing::Closed) {
            Handing::Open => *state = Handing::Parked(warm),
            Handing::BodyDone => {
                drop(state);
                self.pool.put(warm);
            }
            Handing::Parked(_) | Handing::Closed => {}
        }
    }

    /// The response body ended, cleanly or not.
    fn body_ended(&self, clean: bool) {
        let mut state = self.state.lock().expect("handback lock");
        match std::mem::replace(&mut *state, Handing::Closed) {
            Handing::Open if clean => *state = Handing::BodyDone,
            Handing::Parked(warm) if clean => {
                drop(state);
                self.pool.put(warm);
            }
            // Not clean: the parked instance (if any) drops here.
            _ => {}
        }
    }
}

/// Marks the response body failed unless disarmed: a guest future dropped
/// before it finished (cancelled) did not finish its body either.
struct FailOnDrop(Option<Arc<AtomicBool>>);

impl FailOnDrop {
    /// Takes the flag out, so dropping no longer sets it.
    fn disarm(&mut self) -> Option<Arc<AtomicBool>> {
        self.0.take()
    }
}

impl Drop for FailOnDrop {
    fn drop(&mut self) {
        if let Some(failed) = self.0.take() {
            failed.store(true, Ordering::Release);
        }
    }
}

/// Runs `req` through an instance of `handler` under `limits`: a fresh
/// one, or a kept one per `lease`.
///
/// `guard` is held until the guest finishes, including streaming the
/// response body, so concurrency limits count the whole request.
pub async fn invoke<B, G>(
    engine: &Engine,
    handler: Arc<Handler>,
    limits: &Limits,
    req: http::Request<B>,
    guard: G,
    lease: Lease,
    cx: Context,
) -> Result<http::Response<GuestBody>, Failure>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<wasmtime_wasi_http::Error>,
    G: Send + 'static,
{
    let timeout = limits.timeout.0;
    let deadline = Instant::now() + timeout;
    let route = cx.guest.caller.route.clone();
    let request_id = cx.guest.caller.request_id.clone();
    let slow_slots = cx.slow_slots.clone();
    let (mut store, proxy, slot, tally, pool) = match lease {
        Lease::Fresh(slot) => (new_store(engine, limits, cx.guest), None, slot, None, None),
        Lease::New(slot, pool) => {
            let tally = Tally::new(cx.series.clone());
            let store = new_store(engine, limits, cx.guest);
            (store, None, slot, Some(tally), Some(pool))
        }
        Lease::Warm(warm, pool) => {
            let Warm {
                mut store,
                proxy,
                slot,
                tally,
            } = warm;
            store.data_mut().serve(cx.guest);
            (store, Some(proxy), slot, Some(tally), Some(pool))
        }
    };
    set_deadline(&mut store, deadline);
    let handback = pool.map(Handback::new);

    let (tx, mut rx) = tokio::sync::oneshot::channel();
    let mut http = store.data_mut().http();
    let req = http
        .new_incoming_request(Scheme::Http, req)
        .map_err(Failure::Setup)?;
    let out = http.new_response_outparam(tx).map_err(Failure::Setup)?;

    let failed = Arc::new(AtomicBool::new(false));
    let mut unfinished = FailOnDrop(Some(failed.clone()));
    let guest_handback = handback.clone();
    let guest = async move {
        let _guard = guard;
        let started = Instant::now();
        let run = async {
            let proxy = match proxy {
                Some(proxy) => proxy,
                None => {
                    let HandlerPre::P2(pre) = &handler.pre else {
                        wasmtime::bail!(
                            "a WASI 0.3 handler reached the WASI 0.2 path (a host bug)"
                        );
                    };
                    let proxy = pre.instantiate_async(&mut store).await?;
                    cx.series.instantiated(started.elapsed());
                    proxy
                }
            };
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await?;
            Ok::<_, wasmtime::Error>(proxy)
        };
        let result = match tokio::time::timeout_at(deadline.into(), run).await {
            Ok(Ok(proxy)) => Ok(proxy),
            Ok(Err(err)) if err.downcast_ref::<Trap>() == Some(&Trap::Interrupt) => {
                Err(Failure::Timeout(timeout))
            }
            Ok(Err(err)) => Err(Failure::Trapped(err)),
            Err(_elapsed) => Err(Failure::Timeout(timeout)),
        };
        cx.series
            .guest_finished(started.elapsed(), store.data().memory_peak());
        if let Err(failure) = &result {
            // Before the store goes, so the body sees it when it ends.
            if let Some(failed) = unfinished.disarm() {
                failed.store(true, Ordering::Release);
            }
            // If the response head already left, this is the only trace
            // of the failure: the client sees a truncated body.
            if cx.client_fault.load(Ordering::Acquire) {
                cx.metrics.client_body_failed(&route);
                tracing::info!(route = %route, request_id = %request_id, cause = %failure, "handler stopped: the client's request body failed");
            } else {
                let kind = match failure {
                    Failure::Timeout(_) => FailureKind::Timeout,
                    _ => FailureKind::Trap,
                };
                cx.metrics.guest_failed(&route, kind);
                tracing::warn!(route = %route, request_id = %request_id, cause = %failure, "handler failed");
            }
        }
        match result {
            Ok(proxy) => {
                unfinished.disarm();
                // Kept only if the body ends cleanly too.
                if let (Some(handback), Some(mut tally)) = (guest_handback, tally) {
                    tally.served += 1;
                    handback.guest_done(Warm {
                        store,
                        proxy,
                        slot,
                        tally,
                    });
                } else {
                    drop(store);
                    drop(slot);
                }
                Ok(())
            }
            Err(failure) => {
                // A failed instance (trap, timeout, memory limit) is never
                // kept: its store goes before the slot that stands for it.
                drop(store);
                drop(slot);
                Err(failure)
            }
        }
    };
    // Timed on this thread; past its slice it moves to the slow lane.
    let mut guest = Lane::new(guest, slow_slots);

    // Drive the guest on this task: most handlers finish in one go, and a
    // spawn per request would cost a cross-thread wake-up. Only a guest
    // still streaming its body after answering moves to a task of its own.
    let answered = tokio::select! {
        biased;
        answered = &mut rx => answered,
        finished = &mut guest => {
            finished?;
            return match rx.await {
                Ok(Ok(response)) => Ok(response.map(|inner| {
                    let mut body = GuestBody::new(inner, failed, handback);
                    body.drain_finished();
                    body
                })),
                Ok(Err(code)) => Err(Failure::ErrorCode(code)),
                Err(_) => Err(Failure::NoResponse),
            };
        }
    };
    match answered {
        Ok(Ok(response)) => {
            tokio::spawn(guest);
            Ok(response.map(|inner| GuestBody::new(inner, failed, handback)))
        }
        Ok(Err(code)) => {
            tokio::spawn(guest);
            Err(Failure::ErrorCode(code))
        }
        // The guest dropped the outparam without answering; its own result
        // says why.
        Err(_) => match guest.await {
            Err(failure) => Err(failure),
            Ok(()) => Err(Failure::NoResponse),
        },
    }
}

/// The readiness export a plugin may have (`wit/health.wit`).
const HEALTH: &str = "trellis:api/health@0.1.0";

/// Instantiates `handler` in a fresh store under `limits` (memory, and
/// `timeout` for its start function), calling nothing: `trellis check`'s
/// test of a component that needs no services.
pub async fn instantiate_fresh(
    engine: &Engine,
    handler: &Handler,
    limits: &Limits,
    guest: GuestContext,
) -> wasmtime::Result<(Store<StoreData>, wasmtime::component::Instance)> {
    let mut store = new_store(engine, limits, guest);
    set_deadline(&mut store, Instant::now() + limits.timeout.0);
    let instance = handler
        .pre
        .instance_pre()
        .instantiate_async(&mut store)
        .await?;
    Ok((store, instance))
}

/// Instantiates `handler` once in a fresh store under `limits` and, if the
/// component exports `trellis:api/health`, calls its `ready`; the request
/// handler itself is not called. Catches what linking cannot, such as
/// initial memory above `memory`, a failing start function, or a plugin
/// that says it cannot serve.
pub async fn instantiate_once(
    engine: &Engine,
    handler: &Handler,
    limits: &Limits,
    guest: GuestContext,
) -> wasmtime::Result<()> {
    let (mut store, instance) = instantiate_fresh(engine, handler, limits, guest).await?;
    let Some(health) = instance.get_export_index(&mut store, None, HEALTH) else {
        return Ok(());
    };
    let ready = instance
        .get_export_index(&mut store, Some(&health), "ready")
        .ok_or_else(|| wasmtime::format_err!("{HEALTH} has no `ready` function"))?;
    let ready = instance.get_typed_func::<(), (Result<(), String>,)>(&mut store, &ready)?;
    let (outcome,) = ready.call_async(&mut store, ()).await?;
    outcome.map_err(|why| wasmtime::format_err!("the plugin reports it is not ready: {why}"))
}
