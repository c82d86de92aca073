//! Request bodies as guests see them: streamed, never buffered, and cut off
//! at the route's `max_body`.

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime_wasi_http::Error;

/// A request body that errors once more than `limit` bytes arrive, and
/// records how the client's body failed so the dispatcher can answer 413 or
/// 400 instead of whatever the guest made of the broken stream.
pub struct LimitedBody {
    inner: Body,
    remaining: u64,
    limit: u64,
    faults: BodyFaults,
}

/// How a request body failed on the client's side. Shared between the
/// body (which the guest reads, possibly on another task) and the
/// dispatcher; lives as long as the request.
#[derive(Clone, Default)]
pub struct BodyFaults {
    /// More than `max_body` bytes arrived.
    pub exceeded: Arc<AtomicBool>,
    /// The body failed because of the client: over `max_body`, malformed
    /// (a bad chunk size), or cut short (shorter than its Content-Length,
    /// then a close). A guest failure that follows is the client's fault.
    pub client: Arc<AtomicBool>,
    /// The unread rest of a body that went over `max_body`, kept so the
    /// dispatcher can [`discard`] it before the 413: the guest stops
    /// reading at the limit, and closing with the rest unread resets the
    /// connection under a client that is still sending.
    rest: Arc<Mutex<Option<Body>>>,
}

impl BodyFaults {
    /// Takes the unread rest of a body that went over `max_body`.
    pub fn take_rest(&self) -> Option<Body> {
        self.rest.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl LimitedBody {
    /// Wraps `inner`; the flags record how the client's body failed.
    pub fn new(inner: Body, limit: u64) -> (LimitedBody, BodyFaults) {
        let faults = BodyFaults::default();
        let body = LimitedBody {
            inner,
            remaining: limit,
            limit,
            faults: faults.clone(),
        };
        (body, faults)
    }
}

impl http_body::Body for LimitedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            // hyper's body errors are all the client's doing: a malformed
            // chunk, a body cut short, a connection gone.
            Poll::Ready(Some(Err(_))) => {
                self.faults.client.store(true, Ordering::Release);
                return Poll::Ready(Some(Err(Error::ConnectionTerminated)));
            }
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if let Some(data) = frame.data_ref() {
            let len = data.len() as u64;
            if len > self.remaining {
                self.faults.exceeded.store(true, Ordering::Release);
                self.faults.client.store(true, Ordering::Release);
                self.remaining = 0;
                let rest = std::mem::replace(&mut self.inner, Body::empty());
                *self.faults.rest.lock().unwrap_or_else(|e| e.into_inner()) = Some(rest);
                return Poll::Ready(Some(Err(Error::HttpRequestBodySize(Some(self.limit)))));
            }
            self.remaining -= len;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How much of a refused body is read and thrown away before answering.
pub const DISCARD_LIMIT: u64 = 16 << 20;

/// How long reading a refused body may take before answering anyway.
pub const DISCARD_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads and discards what is left of `body` (up to [`DISCARD_LIMIT`]
/// bytes, for at most [`DISCARD_TIME`]) before an early refusal such as a
/// 413. A client still sending when the server closes gets a reset instead
/// of the answer; reading the rest first, as nginx's lingering close does,
/// lets it see the JSON error. The bounds keep a hostile client from
/// holding the connection open with it.
pub async fn discard(body: Body) {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut seen = 0u64;
    let drain = async {
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len() as u64);
            if seen > DISCARD_LIMIT {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DISCARD_TIME, drain).await;
}

/// Disposes of the body of a request refused before it was read, such as
/// a 413 on its Content-Length or a 429.
///
/// A client that sent `Expect: 100-continue` is waiting for permission
/// before it uploads anything; hyper sends the `100 Continue` when the body
/// is first polled, so the body is dropped unread instead: the refusal
/// goes out at once, with no interim response, and hyper closes the
/// connection after it (the unsent body cannot be skipped). Any other body
/// is [`discard`]ed so the client sees the answer.
pub async fn discard_request(req: http::Request<Body>) {
    let expects_continue = req
        .headers()
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue {
        return;
    }
    discard(req.into_body()).await;
}
