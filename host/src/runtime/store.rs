//! Per-instance store data: one `StoreData` per guest instance, built
//! fresh for every request and dropped with it, or, on a route with
//! `reuse`, kept with its instance and handed the next request's caller
//! ([`StoreData::serve`]) once it has shown it holds nothing of the last
//! ([`StoreData::is_clean`]).

use crate::capabilities::cache::CacheView;
use crate::capabilities::config::ConfigView;
use crate::capabilities::identity::IdentityView;
use crate::capabilities::log::LogView;
use crate::capabilities::metrics::MetricsView;
use crate::capabilities::outbound::OutboundHooks;
use crate::capabilities::queue::QueueView;
use crate::capabilities::rate_limit::RateLimitView;
use crate::capabilities::sql::SqlView;
use crate::capabilities::{Caller, GuestContext, View};
use crate::config::manifest::Limits;
use crate::runtime::output::{GuestOutput, Stream};
use std::time::Instant;
use wasmtime::component::{GuestTaskId, ResourceTable};
use wasmtime::{Engine, ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Everything one instance can reach. It lives as long as its instance:
/// one request, or on a route with `reuse` several, each of which starts
/// with an empty resource table and its own caller.
pub struct StoreData {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    limits: MemoryLimiter,
    /// Sends a guest's outgoing requests to its route's upstreams.
    hooks: OutboundHooks,
    /// The guest's stdout and stderr, on their way to the host's log.
    output: GuestOutput,
    guest: GuestContext,
    /// On a WASI 0.3 instance: which request each of its tasks serves, so
    /// a capability call is made on behalf of the right one
    /// ([`StoreData::enter_task`]).
    tasks: Option<Box<Tasks>>,
}

/// The requests a WASI 0.3 instance has taken, by the guest task serving
/// each, most recent last. Bounded: a task older than the last `keep`
/// requests (a guest's background work long after its request) calls as
/// no request at all.
struct Tasks {
    recent: std::collections::VecDeque<(GuestTaskId, GuestContext, Instant)>,
    keep: usize,
    /// The task the instance's context is set for now.
    current: Option<GuestTaskId>,
    /// The context of calls no request owns: no request id, no identity.
    none: GuestContext,
}

impl StoreData {
    fn new(limits: &Limits, guest: GuestContext) -> StoreData {
        // The WASI context is deliberately empty: no environment, no
        // arguments, no preopened directories and no sockets. Guests reach
        // the outside world only through capabilities their route grants.
        // What it prints goes to the host's log.
        let output = GuestOutput::new(guest.caller.clone(), guest.capabilities.log.config.clone());
        let wasi = WasiCtxBuilder::new()
            .stdout(output.stream(Stream::Stdout))
            .stderr(output.stream(Stream::Stderr))
            .allow_tcp(false)
            .allow_udp(false)
            .build();
        let memory = usize::try_from(limits.memory.0).unwrap_or(usize::MAX);
        StoreData {
            table: ResourceTable::new(),
            wasi,
            http: WasiHttpCtx::new(),
            limits: MemoryLimiter {
                limit: memory,
                peak: 0,
            },
            hooks: OutboundHooks::new(guest.capabilities.clone(), guest.caller.trace.clone()),
            output,
            guest,
            tasks: None,
        }
    }
}

impl WasiView for StoreData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for StoreData {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// One capability's view of this instance, for its `add_to_linker`.
macro_rules! views {
    ($($(#[$doc:meta])* $field:ident -> $view:ty;)*) => {
        impl StoreData {
            $(
                $(#[$doc])*
                pub fn $field(&mut self) -> $view {
                    View {
                        ctx: &self.guest.capabilities.$field,
                        caller: &self.guest.caller,
                        table: &mut self.table,
                    }
                }
            )*
        }
    };
}

views! {
    /// `trellis:api/sql`.
    sql -> SqlView<'_>;
    /// `trellis:api/cache`.
    cache -> CacheView<'_>;
    /// `trellis:api/config`.
    config -> ConfigView<'_>;
    /// `trellis:api/log`.
    log -> LogView<'_>;
    /// `trellis:api/metrics`.
    metrics -> MetricsView<'_>;
    /// `trellis:api/rate-limit`.
    rate_limit -> RateLimitView<'_>;
    /// `trellis:api/identity`.
    identity -> IdentityView<'_>;
    /// `trellis:api/queue`.
    queue -> QueueView<'_>;
}

impl StoreData {
    /// Who this instance serves.
    pub fn caller(&self) -> &Caller {
        &self.guest.caller
    }

    /// Hands a kept instance the next request: its request id, trace and
    /// capability contexts. The resource table is empty by then
    /// ([`StoreData::is_clean`]), so no handle of the last request can
    /// reach anything of this one.
    pub fn serve(&mut self, guest: GuestContext) {
        self.output.serve(guest.caller.clone());
        // Outgoing calls carry this request's trace, not the last one's.
        self.hooks = OutboundHooks::new(guest.capabilities.clone(), guest.caller.trace.clone());
        self.guest = guest;
    }

    /// Makes this a WASI 0.3 instance, whose calls are attributed per task
    /// ([`StoreData::start_task`]), remembering up to `keep` requests.
    pub fn track_tasks(&mut self, keep: usize) {
        self.tasks = Some(Box::new(Tasks {
            recent: std::collections::VecDeque::new(),
            keep: keep.max(1),
            current: None,
            none: self.guest.clone(),
        }));
    }

    /// The guest task `task` serves the request `guest`, due by `deadline`.
    pub fn start_task(&mut self, task: GuestTaskId, guest: GuestContext, deadline: Instant) {
        let Some(tasks) = &mut self.tasks else { return };
        if tasks.recent.len() >= tasks.keep {
            tasks.recent.pop_front();
        }
        // Task ids are reused once a task is gone: if the context is still
        // set for an earlier task with this id, it is this request's now.
        let stale = tasks.current == Some(task);
        tasks.recent.push_back((task, guest.clone(), deadline));
        if stale {
            self.run_as(guest, Some(deadline));
        }
    }

    /// Before a host call of a WASI 0.3 instance: sets the caller (request
    /// id, trace, identity, outgoing deadline) to the request of `task`,
    /// the root task of the call, when it is not already. Several requests
    /// share one instance at once, so this is decided per call.
    pub fn enter_task(&mut self, task: Option<GuestTaskId>) {
        let Some(tasks) = &mut self.tasks else { return };
        // Also when both are `None`: the caller is then already the
        // context of no request.
        if task == tasks.current {
            return;
        }
        let found = task.and_then(|task| tasks.recent.iter().rev().find(|(t, ..)| *t == task));
        let (guest, deadline) = match found {
            Some((_, guest, deadline)) => (guest.clone(), Some(*deadline)),
            None => (tasks.none.clone(), None),
        };
        tasks.current = found.map(|(t, ..)| *t);
        self.run_as(guest, deadline);
    }

    /// Makes `guest` the caller of the instance's calls, with outgoing
    /// calls due by `deadline` (none for calls no request owns).
    fn run_as(&mut self, guest: GuestContext, deadline: Option<Instant>) {
        self.serve(guest);
        if let Some(deadline) = deadline {
            self.hooks.set_deadline(deadline);
        }
    }

    /// Whether the instance holds no host resource (a wasi:http request,
    /// body or stream, a capability's transaction, stream or fill): true
    /// after a request whose guest dropped everything it was handed.
    pub fn is_clean(&self) -> bool {
        self.table.is_empty()
    }

    /// What the instance still holds, by kind, for the log line of an
    /// instance that is not reused: which resource a guest language's
    /// runtime keeps is what its author (or we) can act on.
    pub fn leftovers(&mut self) -> Vec<&'static str> {
        use wasmtime_wasi_http::p2::body::{HostIncomingBody, HostOutgoingBody};
        use wasmtime_wasi_http::p2::types::{
            HostIncomingRequest, HostOutgoingResponse, HostResponseOutparam,
        };
        self.table
            .iter_mut()
            .map(|entry| {
                let entry: &dyn std::any::Any = entry;
                macro_rules! kind {
                    ($($ty:ty => $name:literal),* $(,)?) => {
                        $(if entry.is::<$ty>() { return $name; })*
                    };
                }
                kind!(
                    wasmtime_wasi::p2::DynInputStream => "input-stream",
                    wasmtime_wasi::p2::DynOutputStream => "output-stream",
                    wasmtime_wasi::p2::DynPollable => "pollable",
                    wasmtime_wasi::filesystem::Descriptor => "descriptor",
                    HostIncomingRequest => "incoming-request",
                    HostResponseOutparam => "response-outparam",
                    HostIncomingBody => "incoming-body",
                    HostOutgoingBody => "outgoing-body",
                    HostOutgoingResponse => "outgoing-response",
                    wasmtime_wasi_http::FieldMap => "fields",
                );
                "other"
            })
            .collect()
    }

    /// The largest linear memory this instance has reached, in bytes.
    pub fn memory_peak(&self) -> usize {
        self.limits.peak
    }
}

/// Caps linear memory at the route's `memory` (growing past it traps, so
/// the request fails as `HANDLER_FAILED`) and remembers the peak for the
/// `trellis_guest_memory_peak_bytes` metric.
struct MemoryLimiter {
    limit: usize,
    peak: usize,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            wasmtime::bail!(
                "memory limit of {} bytes exceeded: the guest asked for {desired}",
                self.limit
            );
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Table sizes are capped by the pooling allocator's slots.
        Ok(true)
    }
}

/// Arms the epoch deadline: at every tick a running guest yields to the
/// scheduler (so a busy loop cannot starve other requests) or, past
/// `deadline`, is interrupted with a trap. Outgoing HTTP calls end by it
/// too.
pub fn set_deadline(store: &mut Store<StoreData>, deadline: Instant) {
    store.data_mut().hooks.set_deadline(deadline);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        Ok(if Instant::now() >= deadline {
            UpdateDeadline::Interrupt
        } else {
            UpdateDeadline::Yield(1)
        })
    });
}

/// Builds the store for one request under the route's `limits`.
pub fn new_store(engine: &Engine, limits: &Limits, guest: GuestContext) -> Store<StoreData> {
    let mut store = Store::new(engine, StoreData::new(limits, guest));
    store.limiter(|data| &mut data.limits);
    store
}
