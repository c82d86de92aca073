//! Serving WASI 0.3 handlers (`wasi:http/handler@0.3.x`).
//!
//! A 0.3 handler is an async export: one instance may serve several
//! requests at once, and its response body flows only while the host keeps
//! driving that instance's event loop. wasmtime-wasi-http's worker loop
//! ([`ProxyHandler`], the one `wasmtime serve` runs) does both; Trellis
//! supplies what makes it a Trellis route:
//!
//! - the instances: a store under the route's `memory`, a slot of
//!   `[server].max_instances`, epoch ticks that make a busy guest yield;
//!   an idle one gives its slot up when another request needs it
//!   ([`Budget::claim_idle`]);
//! - when an instance takes another request: never again after one
//!   request without `reuse`, else up to `reuse.requests` in all and
//!   `reuse.concurrent` at once;
//! - deadlines: each request gets the route's `timeout`; an instance whose
//!   newest request ran past it is dropped (with every request on it),
//!   and an idle one after `reuse.idle`, or at once when its version is
//!   swapped out;
//! - attribution: each capability call runs for the request whose guest
//!   task made it ([`StoreData::enter_task`]), so concurrent requests on
//!   one instance keep their own request id, trace and identity.

use crate::capabilities::GuestContext;
use crate::config::manifest::{Limits, Reuse};
use crate::observability::metrics::RouteMetrics;
use crate::runtime::budget::{Budget, Leaving};
use crate::runtime::component::{Handler, HandlerPre};
use crate::runtime::invoke::Failure;
use crate::runtime::pool::Tally;
use crate::runtime::store::{StoreData, new_store};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::futures::OwnedNotified;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use wasmtime::component::GuestTaskId;
use wasmtime::{CallHook, Engine, StoreContextMut};
use wasmtime_wasi_http::handler::{
    ExpirationError, HandlerState, Instance, InstantiationError, Proxy, ProxyHandler, ShouldAccept,
    TrapOrPanicError, WorkerExpiration, WorkerState, WorkerStatus,
};
use wasmtime_wasi_http::{WasiBody, WasiHttpView};

/// One route version's WASI 0.3 instances and the requests waiting for
/// them.
pub struct Service {
    handler: ProxyHandler<Instances>,
    timeout: Duration,
}

/// What a request brings to the instance that takes it.
pub struct Ask {
    guest: GuestContext,
    deadline: Instant,
}

/// No slot of `[server].max_instances` freed up within `queue_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("no instance slot free within the route's queue_timeout")]
struct NoSlot;

impl Service {
    /// Serves `handler` (a WASI 0.3 one) under `limits` and `reuse`, with
    /// instances counted in `budget`.
    pub fn new(
        engine: Engine,
        handler: Arc<Handler>,
        limits: Limits,
        reuse: Option<Reuse>,
        budget: Arc<Budget>,
        series: Arc<RouteMetrics>,
        none: GuestContext,
    ) -> Service {
        let timeout = limits.timeout.0;
        Service {
            handler: ProxyHandler::new(Instances {
                engine,
                handler,
                limits,
                reuse,
                budget,
                series,
                none,
                retired: Mutex::new(CancellationToken::new()),
            }),
            timeout,
        }
    }

    /// Serves `req` for the caller `guest` on an instance that will take
    /// it: an idle or not yet full one, else a new one.
    pub async fn handle(
        &self,
        guest: GuestContext,
        req: http::Request<WasiBody>,
    ) -> Result<http::Response<WasiBody>, Failure> {
        let deadline = Instant::now() + self.timeout;
        let ask = Ask { guest, deadline };
        // The worker applies the deadline once the request is taken; this
        // one also covers the wait for an instance and its instantiation.
        match tokio::time::timeout_at(deadline.into(), self.handler.handle(ask, req)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(err)) => Err(failure(err, self.timeout)),
            Err(_elapsed) => Err(Failure::Timeout(self.timeout)),
        }
    }

    /// This version stopped serving: idle instances go now, busy ones
    /// once their requests are done; a rollback gets new ones.
    pub fn retire(&self) {
        let mut retired = self.handler.state().retired.lock().expect("retire lock");
        retired.cancel();
        *retired = CancellationToken::new();
    }
}

/// Names why the worker loop gave no response.
fn failure(err: wasmtime::Error, timeout: Duration) -> Failure {
    if err.is::<ExpirationError>() {
        return Failure::Timeout(timeout);
    }
    if let Some(failed) = err.downcast_ref::<InstantiationError<Ask>>() {
        if failed.error.is::<NoSlot>() {
            return Failure::NoInstance;
        }
        return Failure::Trapped(wasmtime::format_err!("instantiating: {:#}", failed.error));
    }
    if err.is::<TrapOrPanicError>() {
        return Failure::Trapped(wasmtime::format_err!(
            "the instance trapped while serving this request (see its log line)"
        ));
    }
    if let Some(code) =
        err.downcast_ref::<wasmtime_wasi_http::p3::bindings::http::types::ErrorCode>()
    {
        return Failure::Refused(format!("{code:?}"));
    }
    Failure::Trapped(err)
}

/// Makes the instances of one route version.
struct Instances {
    engine: Engine,
    handler: Arc<Handler>,
    limits: Limits,
    reuse: Option<Reuse>,
    budget: Arc<Budget>,
    series: Arc<RouteMetrics>,
    /// The caller of calls no request owns (instantiation, background work).
    none: GuestContext,
    /// Cancelled when the version is swapped out.
    retired: Mutex<CancellationToken>,
}

impl HandlerState for Instances {
    type StoreData = StoreData;
    type WorkerExpiration = Expiry;
    type WorkerState = Worker;

    async fn instantiate(&self) -> wasmtime::Result<Instance<StoreData, Expiry, Worker>> {
        let HandlerPre::P3(pre) = &self.handler.pre else {
            wasmtime::bail!("a WASI 0.2 handler reached the WASI 0.3 service (a host bug)");
        };
        let slot = self
            .budget
            .slot_within(Some(self.limits.queue_timeout.0))
            .await
            .ok_or_else(|| wasmtime::Error::new(NoSlot))?;
        let started = Instant::now();
        let mut store = new_store(&self.engine, &self.limits, self.none.clone());
        // Ticks make a busy guest yield (so its instance's deadline can be
        // checked, and other tasks run); the deadline itself is the
        // worker's, as in `wasmtime serve`.
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
        let (requests, concurrent) = accepts(self.reuse.as_ref());
        store
            .data_mut()
            .track_tasks(concurrent.saturating_mul(4).max(64).min(requests));
        store.call_hook(attribute);
        let service =
            tokio::time::timeout(self.limits.timeout.0, pre.instantiate_async(&mut store))
                .await
                .map_err(|_| {
                    wasmtime::format_err!("instantiating took longer than the route's timeout")
                })??;
        self.series.instantiated(started.elapsed());
        let tally = Arc::new(Mutex::new(Tally::new(self.series.clone())));
        let retired = self.retired.lock().expect("retire lock").clone();
        let idle = self.reuse.as_ref().map_or(Duration::ZERO, |r| r.idle.0);
        let timeout = self.limits.timeout.0;
        let leaving = Arc::new(Mutex::new(None));
        Ok(Instance {
            store,
            proxy: Proxy::P3(service),
            view: <StoreData as WasiHttpView>::http,
            expiration: Expiry {
                idle,
                timeout,
                sleep: Box::pin(tokio::time::sleep(Duration::MAX)),
                retired: Box::pin(retired.clone().cancelled_owned()),
                asked: Box::pin(self.budget.asked()),
                budget: self.budget.clone(),
                leaving: leaving.clone(),
                tally: tally.clone(),
            },
            state: Worker {
                requests,
                concurrent,
                retired,
                slot: Mutex::new(Some(slot)),
                leaving,
                tally,
                route: self.none.caller.route.clone(),
            },
        })
    }
}

/// Requests in all and at once an instance takes: one without `reuse`.
fn accepts(reuse: Option<&Reuse>) -> (usize, usize) {
    match reuse {
        Some(reuse) => (reuse.requests as usize, reuse.concurrent.max(1) as usize),
        None => (1, 1),
    }
}

/// Sets the instance's caller to the request of the guest task making a
/// host call: the root of the call's async call stack.
fn attribute(mut store: StoreContextMut<'_, StoreData>, hook: CallHook) -> wasmtime::Result<()> {
    if matches!(hook, CallHook::CallingHost) {
        let root: Option<GuestTaskId> =
            store.async_call_stack().ok().and_then(|stack| stack.last());
        store.data_mut().enter_task(root);
    }
    Ok(())
}

/// One instance's accept rule and its slot of the instance budget.
struct Worker {
    requests: usize,
    concurrent: usize,
    retired: CancellationToken,
    /// Given back after the store is dropped.
    slot: Mutex<Option<OwnedSemaphorePermit>>,
    /// Set when the instance left, idle, for a request short of a slot;
    /// held until the slot is back.
    leaving: Arc<Mutex<Option<Leaving>>>,
    tally: Arc<Mutex<Tally>>,
    route: Arc<str>,
}

impl WorkerState for Worker {
    type StoreData = StoreData;
    type RequestData = Ask;

    fn should_accept_request(&self, concurrent: usize, total: usize) -> ShouldAccept {
        if total >= self.requests || self.retired.is_cancelled() {
            ShouldAccept::Never
        } else if concurrent >= self.concurrent {
            ShouldAccept::No
        } else {
            ShouldAccept::Yes
        }
    }

    fn on_request_start(
        &self,
        mut store: StoreContextMut<'_, StoreData>,
        ask: Ask,
        task: GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync + 'static>> {
        self.tally.lock().expect("tally lock").served += 1;
        store.data_mut().start_task(task, ask.guest, ask.deadline);
        Box::pin(tokio::time::sleep_until(ask.deadline.into()))
    }

    fn drop(&self, store: wasmtime::Store<StoreData>, result: wasmtime::Result<()>) {
        if let Err(err) = &result {
            tracing::warn!(route = %self.route, cause = %format!("{err:#}"), "WASI 0.3 instance failed; dropped with the requests it was serving");
        }
        // The store frees its pooling-allocator slot before the permit
        // that stands for it goes.
        drop(store);
        self.slot.lock().expect("slot lock").take();
        self.leaving.lock().expect("leaving lock").take();
    }
}

/// When an instance goes: idle past `reuse.idle` (at once without reuse,
/// or when retired, or when a request elsewhere needs its slot), or busy
/// past the route's `timeout` since its newest request started.
struct Expiry {
    idle: Duration,
    timeout: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
    retired: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Wakes an idle instance when a request starts waiting for a slot.
    asked: Pin<Box<OwnedNotified>>,
    budget: Arc<Budget>,
    leaving: Arc<Mutex<Option<Leaving>>>,
    tally: Arc<Mutex<Tally>>,
}

impl Expiry {
    /// Whether this idle instance should leave to free its slot for a
    /// request waiting for one; registers for the next ask otherwise.
    fn asked_to_leave(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            let fired = self.asked.as_mut().poll(cx).is_ready();
            if fired {
                self.asked = Box::pin(self.budget.asked());
            }
            if let Some(leaving) = self.budget.claim_idle() {
                *self.leaving.lock().expect("leaving lock") = Some(leaving);
                return true;
            }
            if !fired {
                return false;
            }
        }
    }
}

impl WorkerExpiration for Expiry {
    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        status: WorkerStatus,
        start: Instant,
    ) -> Poll<()> {
        let this = self.get_mut();
        let idle = status == WorkerStatus::Idle;
        this.tally.lock().expect("tally lock").set_idle(idle);
        if idle && (this.retired.as_mut().poll(cx).is_ready() || this.asked_to_leave(cx)) {
            return Poll::Ready(());
        }
        let limit = if idle { this.idle } else { this.timeout };
        let Some(deadline) = start.checked_add(limit) else {
            return Poll::Pending;
        };
        let deadline = tokio::time::Instant::from_std(deadline);
        if this.sleep.deadline() != deadline {
            this.sleep.as_mut().reset(deadline);
        }
        this.sleep.as_mut().poll(cx)
    }
}

pin_project_lite::pin_project! {
    /// A WASI 0.3 response body that holds `guard` (the route's
    /// concurrency slot) until it has been sent or dropped, so
    /// `max_concurrency` counts the whole response, as for WASI 0.2.
    pub struct Held<B, G> {
        #[pin]
        inner: B,
        guard: G,
    }
}

impl<B, G> Held<B, G> {
    /// `inner`, holding `guard` as long as it lives.
    pub fn new(inner: B, guard: G) -> Self {
        Held { inner, guard }
    }
}

impl<B: http_body::Body, G> http_body::Body for Held<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
