//! `trellis deploy` and `trellis rollback`: clients of a running host's
//! admin API. The component is streamed from disk with a progress line on
//! stderr; the host's JSON answer goes to stdout. With `--wait`, the client
//! then polls `GET /admin/fleet` until every live host serves the version
//! the answer names.

use crate::config::cli::{Action, AdminCall, ComponentSource};
use crate::services::registry::client::encode;
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
    /// `--wait` ran out of time, or a host could not load the version.
    #[error("{0}")]
    NotConverged(String),
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
            let mut query: Vec<(&str, String)> = settings
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect();
            // A registry reference goes as `component=`: the host pulls it.
            let upload = match component {
                ComponentSource::File(file) => Some(file.clone()),
                ComponentSource::Oci(reference) => {
                    query.push(("component", reference.to_string()));
                    None
                }
            };
            for (i, (key, value)) in query.iter().enumerate() {
                let sep = if i == 0 { '?' } else { '&' };
                path.push_str(&format!("{sep}{}={}", encode(key), encode(value)));
            }
            (Method::PUT, path, upload)
        }
        Action::Rollback { route } => (
            Method::POST,
            format!("{prefix}/admin/routes/{}/rollback", encode(route)),
            None,
        ),
    };

    let target = Target {
        addr,
        authority: authority.to_string(),
        token,
    };
    let (status, bytes) = target.send(method, &path, body).await?;
    let json: Option<serde_json::Value> = serde_json::from_slice(&bytes).ok();
    let shown = match &json {
        Some(v) => serde_json::to_string_pretty(v).unwrap_or_default(),
        None => String::from_utf8_lossy(&bytes).into_owned(),
    };
    println!("{shown}");
    if !status.is_success() {
        let field = |name: &str| {
            json.as_ref()
                .and_then(|v| v["error"][name].as_str())
                .unwrap_or_default()
                .to_owned()
        };
        return Err(ClientError::Refused {
            status: status.as_u16(),
            code: field("code"),
            message: field("message"),
        });
    }
    let (Some(within), Some(answer)) = (call.wait, json) else {
        return Ok(());
    };
    let route = answer["name"].as_str().unwrap_or_default().to_owned();
    let version = answer["version"].as_i64().unwrap_or_default();
    let digest = answer["digest"].as_str().unwrap_or_default().to_owned();
    wait_for_fleet(
        &target,
        &format!("{prefix}/admin/fleet"),
        &route,
        version,
        &digest,
        within,
    )
    .await
}

/// Where admin calls go.
struct Target {
    addr: String,
    authority: String,
    token: String,
}

impl Target {
    /// One call on a connection of its own: its status and body.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<PathBuf>,
    ) -> Result<(http::StatusCode, Bytes), ClientError> {
        let stream = tokio::net::TcpStream::connect(&self.addr)
            .await
            .map_err(|source| ClientError::Connect {
                addr: self.addr.clone(),
                source,
            })?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);

        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, self.authority.as_str())
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token));
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
        tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| ClientError::Timeout(CALL_TIMEOUT))?
    }
}

/// How often `--wait` asks the fleet.
const WAIT_POLL: Duration = Duration::from_millis(100);

/// Polls `fleet` (`GET /admin/fleet`) until every live host serves
/// `version` (`digest`) of `route`. Fails at once when a live host reports
/// it cannot load that version, or when a later change replaced it; after
/// `within`, names the hosts that do not serve it.
async fn wait_for_fleet(
    target: &Target,
    fleet: &str,
    route: &str,
    version: i64,
    digest: &str,
    within: Duration,
) -> Result<(), ClientError> {
    let started = Instant::now();
    eprintln!("waiting up to {within:?} for every live host to serve {route} version {version}…");
    loop {
        let (status, bytes) = target.send(Method::GET, fleet, None).await?;
        let status_json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        if !status.is_success() {
            let field = |name: &str| {
                status_json["error"][name]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            };
            return Err(ClientError::Refused {
                status: status.as_u16(),
                code: field("code"),
                message: field("message"),
            });
        }
        match converged(&status_json, route, version, digest) {
            Ok(hosts) => {
                eprintln!(
                    "{hosts} live host(s) serve {route} version {version} ({} ms)",
                    started.elapsed().as_millis()
                );
                return Ok(());
            }
            Err(Wait::Failed(message)) => return Err(ClientError::NotConverged(message)),
            Err(Wait::Pending(lagging)) if started.elapsed() >= within => {
                return Err(ClientError::NotConverged(format!(
                    "not every live host serves {route} version {version} after {within:?}: {lagging}"
                )));
            }
            Err(Wait::Pending(_)) => tokio::time::sleep(WAIT_POLL).await,
        }
    }
}

/// Why the fleet is not there yet.
#[derive(Debug)]
enum Wait {
    /// Still loading: which hosts, serving what.
    Pending(String),
    /// It will not get there.
    Failed(String),
}

/// Whether every live host in the `GET /admin/fleet` answer serves
/// `version` of `route`: the number of live hosts, or why not.
fn converged(
    fleet: &serde_json::Value,
    route: &str,
    version: i64,
    digest: &str,
) -> Result<usize, Wait> {
    let desired = &fleet["desired"][route];
    if desired.is_object() && desired["version"].as_i64() != Some(version) {
        return Err(Wait::Failed(format!(
            "{route} changed again before every host served version {version}: the fleet now wants version {}",
            desired["version"]
        )));
    }
    let hosts = fleet["hosts"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut lagging = Vec::new();
    let mut live = 0;
    for host in hosts.iter().filter(|h| h["live"] == true) {
        live += 1;
        let id = host["id"].as_str().unwrap_or("?");
        let error = &host["errors"][route];
        if error.is_object() && error["version"].as_i64() == Some(version) {
            return Err(Wait::Failed(format!(
                "host {id} cannot load {route} version {version}: {}",
                error["error"].as_str().unwrap_or("?")
            )));
        }
        let serving = &host["serving"][route];
        if serving["version"].as_i64() != Some(version)
            || serving["digest"].as_str() != Some(digest)
        {
            let now = match serving["version"].as_i64() {
                Some(v) => format!("version {v}"),
                None => "nothing".to_owned(),
            };
            lagging.push(format!("{id} (serving {now})"));
        }
    }
    if lagging.is_empty() {
        Ok(live)
    } else {
        Err(Wait::Pending(format!(
            "hosts not serving it: {}",
            lagging.join(", ")
        )))
    }
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
