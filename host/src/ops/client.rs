//! `trellis deploy` and `trellis rollback`: clients of a running host's
//! admin API. The component is streamed from disk with a progress line on
//! stderr; the host's JSON answer goes to stdout.

use crate::config::cli::{Action, AdminCall};
use bytes::Bytes;
use http::{Method, Request, Uri, header};
use http_body::Frame;
use http_body_util::{BodyExt as _, Empty, Full, StreamBody};
use hyper_util::rt::TokioIo;
use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt as _;

/// Bound on one admin call, upload and compilation included.
const CALL_TIMEOUT: Duration = Duration::from_secs(600);

/// Upload chunk size; also how often the progress line can move.
const CHUNK: usize = 256 << 10;

/// An admin call that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The `--admin` URL is not usable.
    #[error("admin URL {url:?}: {message}")]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        message: String,
    },
    /// No token was given.
    #[error("no admin token: pass --token or set TRELLIS_ADMIN_TOKEN")]
    NoToken,
    /// The component file could not be read.
    #[error("reading component {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The admin listener could not be reached.
    #[error("connecting to the admin API at {addr}: {source}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("admin API request: {0}")]
    Http(#[from] hyper::Error),
    /// The call took longer than [`CALL_TIMEOUT`].
    #[error("admin API request: no answer within {0:?}")]
    Timeout(Duration),
    /// The host answered with an error (its body went to stdout).
    #[error("the host refused: {status} {code}: {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The error code, e.g. `VALIDATION_FAILED`.
        code: String,
        /// The host's explanation.
        message: String,
    },
}

/// Runs `call`, printing the host's answer on stdout.
pub async fn run(call: AdminCall) -> Result<(), ClientError> {
    let token = call.token.clone().ok_or(ClientError::NoToken)?;
    let url_error = |message: &str| ClientError::Url {
        url: call.admin.clone(),
        message: message.to_owned(),
    };
    let base: Uri = call.admin.parse().map_err(|_| url_error("not a URL"))?;
    if base.scheme_str().is_some_and(|s| s != "http") {
        return Err(url_error(
            "only http:// is supported; reach a remote admin API through a tunnel or a TLS-terminating proxy",
        ));
    }
    let authority = base
        .authority()
        .ok_or_else(|| url_error("no host:port"))?
        .clone();
    let addr = format!(
        "{}:{}",
        authority.host(),
        authority.port_u16().unwrap_or(80)
    );
    let prefix = base.path().trim_end_matches('/').to_owned();

    let (method, path, body) = match &call.action {
        Action::Deploy {
            route,
            component,
            settings,
        } => {
            let mut path = format!("{prefix}/admin/routes/{}", encode(route));
            for (i, (key, value)) in settings.iter().enumerate() {
                let sep = if i == 0 { '?' } else { '&' };
                path.push_str(&format!("{sep}{}={}", encode(key), encode(value)));
            }
            (Method::PUT, path, Some(component.clone()))
        }
        Action::Rollback { route } => (
            Method::POST,
            format!("{prefix}/admin/routes/{}/rollback", encode(route)),
            None,
        ),
    };

    let stream = tokio::net::TcpStream::connect(&addr)
        .await
        .map_err(|source| ClientError::Connect {
            addr: addr.clone(),
            source,
        })?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);

    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, authority.as_str())
        .header(header::AUTHORIZATION, format!("Bearer {token}"));
    let exchange = async {
        let response = match body {
            Some(file) => {
                let (body, len) = upload(&file).await?;
                let request = request
                    .header(header::CONTENT_TYPE, "application/wasm")
                    .header(header::CONTENT_LENGTH, len)
                    .body(body)
                    .expect("request parts are valid");
                sender.send_request(request).await?
            }
            None => {
                let request = request
                    .body(
                        Empty::<Bytes>::new()
                            .map_err(|never| match never {})
                            .boxed_unsync(),
                    )
                    .expect("request parts are valid");
                sender.send_request(request).await?
            }
        };
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        Ok::<_, ClientError>((status, bytes))
    };
    let (status, bytes) = tokio::time::timeout(CALL_TIMEOUT, exchange)
        .await
        .map_err(|_| ClientError::Timeout(CALL_TIMEOUT))??;

    let json: Option<serde_json::Value> = serde_json::from_slice(&bytes).ok();
    let shown = match &json {
        Some(v) => serde_json::to_string_pretty(v).unwrap_or_default(),
        None => String::from_utf8_lossy(&bytes).into_owned(),
    };
    println!("{shown}");
    if status.is_success() {
        return Ok(());
    }
    let field = |name: &str| {
        json.as_ref()
            .and_then(|v| v["error"][name].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    Err(ClientError::Refused {
        status: status.as_u16(),
        code: field("code"),
        message: field("message"),
    })
}

type UploadBody = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

/// The file at `path` as a streamed body that reports progress as it is
/// sent, and its length.
async fn upload(path: &PathBuf) -> Result<(UploadBody, u64), ClientError> {
    let read_error = |source| ClientError::Read {
        path: path.clone(),
        source,
    };
    let file = tokio::fs::File::open(path).await.map_err(read_error)?;
    let total = file.metadata().await.map_err(read_error)?.len();
    let progress = Progress::new(total);
    let chunks = futures::stream::unfold(Some((file, progress)), |state| async move {
        let (mut file, mut progress) = state?;
        let mut buf = vec![0; CHUNK];
        match file.read(&mut buf).await {
            Ok(0) => {
                progress.finish();
                None
            }
            Ok(n) => {
                buf.truncate(n);
                progress.advance(n as u64);
                Some((Ok(Frame::data(Bytes::from(buf))), Some((file, progress))))
            }
            Err(err) => Some((Err(err), None)),
        }
    });
    let body = if total == 0 {
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed_unsync()
    } else {
        StreamBody::new(chunks).boxed_unsync()
    };
    Ok((body, total))
}

/// The progress line on stderr: redrawn in place on a terminal, a line at
/// the start and one at the end otherwise (logs of CI jobs).
struct Progress {
    total: u64,
    sent: u64,
    tty: bool,
    finished: bool,
    started: Instant,
    drawn: Instant,
}

impl Progress {
    fn new(total: u64) -> Progress {
        let tty = std::io::stderr().is_terminal();
        if !tty {
            eprintln!("uploading {}", mib(total));
        }
        let now = Instant::now();
        Progress {
            total,
            sent: 0,
            tty,
            finished: false,
            started: now,
            drawn: now,
        }
    }

    fn advance(&mut self, n: u64) {
        self.sent += n;
        // hyper need not poll past the declared length: finish here.
        if self.sent >= self.total {
            self.finish();
            return;
        }
        if self.tty && self.drawn.elapsed() >= Duration::from_millis(100) {
            self.drawn = Instant::now();
            let pct = self.sent * 100 / self.total.max(1);
            eprint!(
                "\ruploading {} / {} ({pct}%)",
                mib(self.sent),
                mib(self.total)
            );
            let _ = std::io::stderr().flush();
        }
    }

    fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        let line = format!(
            "uploaded {} / {} in {} ms; compiling and validating…",
            mib(self.sent),
            mib(self.total),
            self.started.elapsed().as_millis()
        );
        if self.tty {
            eprintln!("\r{line}");
        } else {
            eprintln!("{line}");
        }
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_query_values() {
        assert_eq!(encode("/users/{id}"), "%2Fusers%2F%7Bid%7D");
        assert_eq!(encode("GET,HEAD"), "GET%2CHEAD");
        assert_eq!(encode("v-1.2_x~"), "v-1.2_x~");
    }
}
