//! What a guest prints. Its stdout and stderr reach the host's log as
//! structured lines (target `guest`, with route, component, request id,
//! trace id and `stream`), where `println!`, `console.log` and `print`
//! debugging is found, instead of being dropped (stdout) or written raw
//! between the host's own JSON lines (stderr).
//!
//! A line is logged when its newline arrives, or when it reaches
//! [`MAX_LINE`] bytes, or when the instance ends (or, on a route with
//! `reuse`, moves on to its next request). The route's secrets are masked
//! as in `trellis:api/log`. An instance logs at most [`LINES_PER_SECOND`]
//! lines a second; beyond that lines are counted, not logged, and one
//! warning says how many were left out, so a chatty guest cannot flood
//! the log or slow the host's log writer for everyone else.

use crate::capabilities::Caller;
use crate::capabilities::log::mask_secrets;
use crate::config::manifest::RouteConfig;
use bytes::Bytes;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Longest line logged as one: a longer one is logged in pieces.
pub const MAX_LINE: usize = 8 << 10;
/// Lines an instance may log per second; the rest are counted.
pub const LINES_PER_SECOND: u32 = 100;
const WINDOW: Duration = Duration::from_secs(1);
/// What `check-write` grants per call: the guest never waits on us.
const WRITE_PERMIT: usize = 64 << 10;

/// Which of the guest's two output streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Logged at `INFO`.
    Stdout,
    /// Logged at `WARN`: where panics, tracebacks and uncaught exceptions go.
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One instance's output: both streams, their partial lines and the
/// instance's line budget. Cloning shares it.
#[derive(Clone)]
pub struct GuestOutput {
    shared: Arc<Mutex<Printer>>,
}

impl GuestOutput {
    /// Output tagged with `caller` and masked with `config`'s secrets.
    pub fn new(caller: Caller, config: Arc<RouteConfig>) -> GuestOutput {
        GuestOutput {
            shared: Arc::new(Mutex::new(Printer {
                caller,
                config,
                lines: [Vec::new(), Vec::new()],
                window: Instant::now(),
                logged: 0,
                suppressed: 0,
            })),
        }
    }

    /// The stream for `stream`, for `WasiCtxBuilder::stdout`/`stderr`.
    pub fn stream(&self, stream: Stream) -> impl StdoutStream + 'static {
        Handle {
            stream,
            shared: self.shared.clone(),
        }
    }

    /// Ends the current request's output (partial lines, the count of
    /// lines left out) and tags what follows with `caller`: a kept
    /// instance's next request.
    pub fn serve(&self, caller: Caller) {
        let mut printer = self.lock();
        printer.finish();
        printer.caller = caller;
    }

    fn lock(&self) -> MutexGuard<'_, Printer> {
        lock(&self.shared)
    }
}

fn lock(shared: &Mutex<Printer>) -> MutexGuard<'_, Printer> {
    // A panic while logging leaves nothing half-updated that matters.
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Printer {
    caller: Caller,
    config: Arc<RouteConfig>,
    /// The partial line of stdout and of stderr.
    lines: [Vec<u8>; 2],
    window: Instant,
    logged: u32,
    suppressed: u64,
}

impl Printer {
    fn write(&mut self, stream: Stream, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let line = &mut self.lines[stream as usize];
            let room = MAX_LINE - line.len();
            match bytes[..bytes.len().min(room)]
                .iter()
                .position(|&b| b == b'\n')
            {
                Some(end) => {
                    line.extend_from_slice(&bytes[..end]);
                    bytes = &bytes[end + 1..];
                }
                None if bytes.len() < room => {
                    line.extend_from_slice(bytes);
                    return;
                }
                None => {
                    line.extend_from_slice(&bytes[..room]);
                    bytes = &bytes[room..];
                }
            }
            self.end_line(stream);
        }
    }

    /// Logs the partial line of `stream`, within the budget.
    fn end_line(&mut self, stream: Stream) {
        let mut line = std::mem::take(&mut self.lines[stream as usize]);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let now = Instant::now();
        if now.duration_since(self.window) >= WINDOW {
            self.report_suppressed();
            self.window = now;
            self.logged = 0;
        }
        if self.logged >= LINES_PER_SECOND {
            self.suppressed += 1;
        } else {
            self.logged += 1;
            self.emit(stream, &String::from_utf8_lossy(&line));
        }
        // Keep the allocation for the next line.
        line.clear();
        self.lines[stream as usize] = line;
    }

    fn emit(&self, stream: Stream, text: &str) {
        let text = mask_secrets(text, self.config.secret_values());
        let guest = &self.caller;
        macro_rules! emit {
            ($level:expr) => {
                tracing::event!(
                    target: "guest",
                    $level,
                    route = %guest.route,
                    component = %guest.component,
                    request_id = %guest.request_id,
                    trace_id = %guest.trace.trace_id,
                    stream = stream.name(),
                    "{text}"
                )
            };
        }
        match stream {
            Stream::Stdout => emit!(tracing::Level::INFO),
            Stream::Stderr => emit!(tracing::Level::WARN),
        }
    }

    fn report_suppressed(&mut self) {
        if self.suppressed > 0 {
            let guest = &self.caller;
            tracing::warn!(
                target: "guest",
                route = %guest.route,
                component = %guest.component,
                request_id = %guest.request_id,
                suppressed = self.suppressed,
                "guest output over {LINES_PER_SECOND} lines a second: {} lines not logged",
                self.suppressed
            );
            self.suppressed = 0;
        }
    }

    /// Logs what is pending: partial lines, then the count left out.
    fn finish(&mut self) {
        for stream in [Stream::Stdout, Stream::Stderr] {
            if !self.lines[stream as usize].is_empty() {
                self.end_line(stream);
            }
        }
        self.report_suppressed();
    }
}

impl Drop for Printer {
    fn drop(&mut self) {
        self.finish();
    }
}

/// One stream handle the guest holds; all share one [`Printer`].
struct Handle {
    stream: Stream,
    shared: Arc<Mutex<Printer>>,
}

impl Handle {
    fn write(&self, bytes: &[u8]) {
        lock(&self.shared).write(self.stream, bytes);
    }
}

impl IsTerminal for Handle {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Handle {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone_handle())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone_handle())
    }
}

impl Handle {
    fn clone_handle(&self) -> Handle {
        Handle {
            stream: self.stream,
            shared: self.shared.clone(),
        }
    }
}

impl OutputStream for Handle {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        Handle::write(self, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Handle {
    async fn ready(&mut self) {}
}

impl AsyncWrite for Handle {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Handle::write(&self, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
