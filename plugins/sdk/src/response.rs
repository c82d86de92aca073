//! The response a handler returns: status, headers, and a body that is
//! either in memory or written by the handler as it goes.

use std::fmt;

use serde::Serialize;
use wasi::io::streams::{OutputStream, StreamError};

use crate::error::Error;

/// How much a [`BodyWriter`] gathers before handing it to the host: large
/// enough that a row-per-line export costs one host call per 64 KiB.
const BUFFER: usize = 64 * 1024;

/// Writes a streamed body; see [`Response::stream`].
type Writer = Box<dyn FnOnce(&mut BodyWriter) -> Result<(), Error>>;

pub(crate) enum Body {
    Bytes(Vec<u8>),
    Stream(Writer),
}

/// An HTTP response.
///
/// ```no_run
/// use trellis_sdk::Response;
///
/// let created = Response::json(&serde_json::json!({ "id": 7 })).with_status(201);
/// let gone = Response::no_content();
/// let page = Response::text("hello\n").with_header("cache-control", "no-store");
/// ```
pub struct Response {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    pub(crate) body: Body,
}

impl Response {
    /// An empty response with `status`.
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Body::Bytes(Vec::new()),
        }
    }

    /// 204 No Content.
    pub fn no_content() -> Response {
        Response::new(204)
    }

    /// 200 with a `text/plain; charset=utf-8` body.
    pub fn text(body: impl Into<String>) -> Response {
        Response::bytes("text/plain; charset=utf-8", body.into().into_bytes())
    }

    /// 200 with `value` as an `application/json` body. A value that cannot
    /// be serialized (a map with non-string keys) is a 500.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Response {
        match serde_json::to_vec(value) {
            Ok(body) => Response::bytes("application/json", body),
            Err(err) => {
                let error = Error::internal(format!("serializing the response: {err}"));
                crate::serve::report(&error);
                error.into_response(None)
            }
        }
    }

    /// 200 with `body` of `content_type`.
    pub fn bytes(content_type: &str, body: Vec<u8>) -> Response {
        Response::new(200)
            .with_header("content-type", content_type)
            .with_body(Body::Bytes(body))
    }

    /// 200 with a body that `write` produces after the status and headers
    /// have gone out, so a body of any size needs only [`BodyWriter`]'s
    /// buffer. The writer honours the host's backpressure.
    ///
    /// Once the headers are out the status cannot change: if `write`
    /// fails, the error is logged and the body is cut off without its end,
    /// so the client sees an incomplete response, never a complete-looking
    /// one.
    ///
    /// ```no_run
    /// use std::io::Write as _;
    /// use trellis_sdk::Response;
    ///
    /// let numbers = Response::stream("text/csv", |out| {
    ///     for i in 0..1_000_000 {
    ///         writeln!(out, "{i}")?;
    ///     }
    ///     Ok(())
    /// });
    /// ```
    pub fn stream(
        content_type: &str,
        write: impl FnOnce(&mut BodyWriter) -> Result<(), Error> + 'static,
    ) -> Response {
        Response::new(200)
            .with_header("content-type", content_type)
            .with_body(Body::Stream(Box::new(write)))
    }

    /// The same response with another status.
    #[must_use]
    pub fn with_status(mut self, status: u16) -> Response {
        self.status = status;
        self
    }

    /// The same response with one more header.
    #[must_use]
    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers
            .push((name.to_ascii_lowercase(), value.as_bytes().to_vec()));
        self
    }

    fn with_body(mut self, body: Body) -> Response {
        self.body = body;
        self
    }

    /// The status.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The headers set so far.
    pub fn headers(&self) -> &[(String, Vec<u8>)] {
        &self.headers
    }

    /// The status, the headers and the body, for the code that sends it.
    pub(crate) fn into_parts(self) -> (u16, Vec<(String, Vec<u8>)>, Body) {
        (self.status, self.headers, self.body)
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("headers", &self.headers.len())
            .finish_non_exhaustive()
    }
}

/// The body of a streamed [`Response`]: gathers writes into a 64 KiB buffer
/// and passes each full buffer to the host, waiting while the host's own
/// buffer is full (backpressure from a slow client).
///
/// It implements [`std::io::Write`], so `write!` works on it.
pub struct BodyWriter {
    stream: OutputStream,
    buffer: Vec<u8>,
    written: u64,
}

impl BodyWriter {
    pub(crate) fn new(stream: OutputStream) -> BodyWriter {
        BodyWriter {
            stream,
            buffer: Vec::with_capacity(BUFFER),
            written: 0,
        }
    }

    /// Appends `bytes` to the body.
    pub fn write_bytes(&mut self, bytes: &[u8]) -> Result<(), Error> {
        if self.buffer.len() + bytes.len() > BUFFER {
            self.send_buffer()?;
        }
        if bytes.len() >= BUFFER {
            write_all(&self.stream, bytes).map_err(stream_error)?;
        } else {
            self.buffer.extend_from_slice(bytes);
        }
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Sends what is buffered and waits until the host has taken it all.
    pub(crate) fn finish(mut self) -> Result<OutputStream, Error> {
        self.send_buffer()?;
        self.stream.blocking_flush().map_err(stream_error)?;
        Ok(self.stream)
    }

    fn send_buffer(&mut self) -> Result<(), Error> {
        if !self.buffer.is_empty() {
            write_all(&self.stream, &self.buffer).map_err(stream_error)?;
            self.buffer.clear();
        }
        Ok(())
    }
}

impl std::io::Write for BodyWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_bytes(buf).map_err(std::io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send_buffer().map_err(std::io::Error::other)
    }
}

fn stream_error(err: StreamError) -> Error {
    let why = match err {
        StreamError::Closed => "closed".to_owned(),
        StreamError::LastOperationFailed(err) => err.to_debug_string(),
    };
    Error::internal(format!("writing the response body: {why}"))
}

/// Writes all of `buf` as fast as the host accepts it, waiting when its
/// buffer is full.
pub(crate) fn write_all(out: &OutputStream, mut buf: &[u8]) -> Result<(), StreamError> {
    while !buf.is_empty() {
        let permit = out.check_write()?;
        if permit == 0 {
            out.subscribe().block();
            continue;
        }
        let n = buf.len().min(usize::try_from(permit).unwrap_or(usize::MAX));
        out.write(&buf[..n])?;
        buf = &buf[n..];
    }
    Ok(())
}
