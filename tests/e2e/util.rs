//! Test harness: runs the real `trellis` binary on `127.0.0.1:0` and gives
//! tests its address, its JSON log lines and its process.

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Read as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use tokio::sync::watch;

/// How long a host may take from spawn to `listening`. Generous: test builds
/// of the host are unoptimized, and compiling components is their slowest part.
pub(crate) const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);

/// Default bound on any single wait in a test.
pub(crate) const WAIT: Duration = Duration::from_secs(30);

pub(crate) const MIB: u64 = 1024 * 1024;

/// Serializes the tests that move gigabytes: two at once would starve the
/// 2-core machine and blur each other's memory measurements.
pub(crate) static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new() -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("clock after 1970")
            .subsec_nanos();
        let name = format!(
            "trellis-e2e-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).expect("creating a temp dir");
        TempDir(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `contents` to `name` inside the dir and returns its path.
    pub(crate) fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("writing a temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `trellis.toml` under construction.
#[derive(Clone)]
pub(crate) struct Manifest {
    listen: String,
    server: String,
    database: String,
    sections: String,
    routes: String,
    /// A whole manifest given as text, rendered as it is.
    raw: Option<String>,
}

impl Manifest {
    pub(crate) fn new() -> Manifest {
        Manifest {
            listen: "127.0.0.1:0".to_owned(),
            server: String::new(),
            database: String::new(),
            sections: String::new(),
            routes: String::new(),
            raw: None,
        }
    }

    /// A manifest that is exactly `text` (e.g. an example's, adapted).
    pub(crate) fn raw(text: &str) -> Manifest {
        Manifest {
            raw: Some(text.to_owned()),
            ..Manifest::new()
        }
    }

    /// Adds raw TOML (e.g. a `[redis]` table) before the routes.
    pub(crate) fn section(mut self, text: &str) -> Manifest {
        writeln!(self.sections, "\n{text}").expect("writing to a String");
        self
    }

    /// Adds a raw line (e.g. `max_connections = 1`) to `[database]`.
    pub(crate) fn database(mut self, line: &str) -> Manifest {
        writeln!(self.database, "{line}").expect("writing to a String");
        self
    }

    /// Sets `[server].listen` (which `--listen`, always passed by `Trellis`, overrides).
    pub(crate) fn listen(mut self, addr: &str) -> Manifest {
        addr.clone_into(&mut self.listen);
        self
    }

    /// Adds a raw line (e.g. `shutdown_grace = "1s"`) to `[server]`.
    pub(crate) fn server(mut self, line: &str) -> Manifest {
        writeln!(self.server, "{line}").expect("writing to a String");
        self
    }

    /// Adds a `[[route]]` named `name` at `path` served by `component` (a
    /// path to a `.wasm`), plus raw `key = value` lines in `extra`.
    pub(crate) fn route(
        mut self,
        name: &str,
        path: &str,
        component: &str,
        extra: &[&str],
    ) -> Manifest {
        writeln!(
            self.routes,
            "\n[[route]]\nname = {name:?}\npath = {path:?}\ncomponent = {component:?}"
        )
        .expect("writing to a String");
        for line in extra {
            writeln!(self.routes, "{line}").expect("writing to a String");
        }
        self
    }

    pub(crate) fn render(&self) -> String {
        if let Some(raw) = &self.raw {
            return raw.clone();
        }
        let database = if self.database.is_empty() {
            String::new()
        } else {
            format!("\n[database]\n{}", self.database)
        };
        format!(
            "[server]\nlisten = {:?}\n{}{database}{}{}",
            self.listen, self.server, self.sections, self.routes
        )
    }
}

/// How to launch a host.
#[derive(Default)]
pub(crate) struct Launch {
    /// Written to `trellis.toml` in the host's temp dir and passed to `serve`.
    /// `None` runs `trellis serve` with no manifest argument.
    pub(crate) manifest: Option<Manifest>,
    /// The working directory; the host's temp dir when `None`.
    pub(crate) cwd: Option<PathBuf>,
    /// The precompiled-component cache; a fresh dir when `None`.
    pub(crate) cache_dir: Option<PathBuf>,
    /// `TRELLIS_ADMIN_TOKEN`; with it the admin API listens on
    /// `127.0.0.1:0` (`--admin-listen`). Never inherited from the test's
    /// environment.
    pub(crate) admin_token: Option<String>,
    /// Extra arguments to `serve`, e.g. `--watch`.
    pub(crate) args: Vec<String>,
    /// Extra environment variables. `TRELLIS_DATABASE_URL` is never
    /// inherited from the test's environment, only set from here.
    pub(crate) env: Vec<(String, String)>,
}

impl Launch {
    pub(crate) fn manifest(manifest: Manifest) -> Launch {
        Launch {
            manifest: Some(manifest),
            ..Launch::default()
        }
    }
}

/// A running `trellis serve`, killed on drop.
pub(crate) struct Trellis {
    child: Child,
    pub(crate) addr: SocketAddr,
    /// The admin API's address, when it was started.
    pub(crate) admin: Option<SocketAddr>,
    logs: watch::Receiver<Vec<Value>>,
    stderr: Arc<Mutex<String>>,
    client: reqwest::Client,
    /// Holds the manifest and the default cache dir; outlives the process.
    _dir: TempDir,
}

impl Trellis {
    /// Serves `manifest` with a fresh cache dir.
    pub(crate) async fn start(manifest: Manifest) -> Trellis {
        Trellis::launch(Launch::manifest(manifest)).await
    }

    pub(crate) async fn launch(launch: Launch) -> Trellis {
        let dir = TempDir::new();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_trellis"));
        cmd.arg("serve");
        if let Some(manifest) = &launch.manifest {
            cmd.arg(dir.write("trellis.toml", &manifest.render()));
        }
        cmd.args(["--listen", "127.0.0.1:0"])
            .current_dir(launch.cwd.as_deref().unwrap_or(dir.path()))
            .env("TRELLIS_LOG_FORMAT", "json")
            .env("TRELLIS_LOG", "info")
            .env(
                "TRELLIS_CACHE_DIR",
                launch.cache_dir.unwrap_or_else(|| dir.path().join("cache")),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.env_remove("TRELLIS_ADMIN_TOKEN")
            .env_remove("TRELLIS_DATABASE_URL")
            .env_remove("TRELLIS_REDIS_URL")
            .env_remove("TRELLIS_OTLP_ENDPOINT")
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .args(&launch.args);
        if let Some(token) = &launch.admin_token {
            cmd.env("TRELLIS_ADMIN_TOKEN", token)
                .args(["--admin-listen", "127.0.0.1:0"]);
        }
        let mut child = cmd.spawn().expect("spawning trellis");

        // Drain both pipes on threads for the life of the process, so a full
        // pipe can never stall the host, and tests can look at any line.
        let stdout = child.stdout.take().expect("piped");
        let (tx, mut logs) = watch::channel(Vec::new());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let value = serde_json::from_str(&line).unwrap_or(Value::String(line));
                tx.send_modify(|logs| logs.push(value));
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("piped");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                sink.lock()
                    .expect("stderr lock")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });

        let listening = |l: &Value| l["message"] == "listening";
        let waited = tokio::time::timeout(
            STARTUP_TIMEOUT,
            logs.wait_for(|ls| ls.iter().any(listening)),
        )
        .await
        .map(|found| found.is_ok());
        let addr = match waited {
            Ok(true) => logs
                .borrow()
                .iter()
                .find(|l| listening(l))
                .and_then(|l| l["addr"].as_str()?.parse().ok())
                .expect("`listening` carries a socket address in `addr`"),
            Ok(false) | Err(_) => {
                let why = if waited.is_err() {
                    "did not log `listening` in time"
                } else {
                    "exited"
                };
                let _ = child.kill();
                let status = child.wait().ok();
                panic!(
                    "trellis {why} (status {status:?})\nstdout: {:#?}\nstderr: {}",
                    *logs.borrow(),
                    stderr.lock().expect("stderr lock")
                );
            }
        };
        // The admin listener is bound, and logged, before `listening`.
        let admin = logs
            .borrow()
            .iter()
            .find(|l| l["message"] == "admin listening")
            .and_then(|l| l["addr"].as_str()?.parse().ok());
        let client = client_builder().build().expect("building a client");
        Trellis {
            child,
            addr,
            admin,
            logs,
            stderr,
            client,
            _dir: dir,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The admin API's base URL (`http://127.0.0.1:PORT`).
    pub(crate) fn admin_url(&self) -> String {
        format!("http://{}", self.admin.expect("the admin API is on"))
    }

    /// The manifest the host was started with.
    pub(crate) fn manifest_path(&self) -> PathBuf {
        self._dir.path().join("trellis.toml")
    }

    /// A client with reqwest's defaults (transparent gzip/br), bounded waits.
    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub(crate) async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything logged on stdout so far (JSON values; other lines as strings).
    pub(crate) fn logs(&self) -> Vec<Value> {
        self.logs.borrow().clone()
    }

    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr lock").clone()
    }

    /// Waits for a log line matching `pred`, failing the test after `WAIT`.
    pub(crate) async fn wait_log(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let mut logs = self.logs.clone();
        match tokio::time::timeout(WAIT, logs.wait_for(|logs| logs.iter().any(&pred))).await {
            Ok(Ok(logs)) => logs
                .iter()
                .find(|l| pred(l))
                .cloned()
                .expect("just matched"),
            _ => panic!(
                "no log line for {what}; logs: {:#?}\nstderr: {}",
                self.logs(),
                self.stderr()
            ),
        }
    }

    /// The `request` log line for the request with this id.
    pub(crate) async fn request_log(&self, request_id: &str) -> Value {
        self.wait_log(&format!("request {request_id}"), |l| {
            l["message"] == "request" && l["request_id"] == request_id
        })
        .await
    }

    /// The `component loaded` log line for `route`.
    pub(crate) async fn loaded_log(&self, route: &str) -> Value {
        self.wait_log(&format!("component loaded for {route}"), |l| {
            l["message"] == "component loaded" && l["route"] == route
        })
        .await
    }

    pub(crate) fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Polls for the process to exit; `None` if it still runs after `within`.
    pub(crate) async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for trellis") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) fn is_running(&mut self) -> bool {
        self.child
            .try_wait()
            .expect("waiting for trellis")
            .is_none()
    }

    /// The host's current and peak resident set size, in bytes.
    pub(crate) fn memory(&self) -> Memory {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("reading /proc/<pid>/status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kb| kb * 1024)
                .unwrap_or_else(|| panic!("{name} missing from /proc status"))
        };
        Memory {
            rss: field("VmRSS:"),
            hwm: field("VmHWM:"),
        }
    }
}

impl Drop for Trellis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            // The test failed: show what the host said (the harness prints
            // a failed test's output).
            let logs = self.logs();
            let tail = &logs[logs.len().saturating_sub(50)..];
            eprintln!("--- trellis stderr ---\n{}", self.stderr());
            eprintln!("--- trellis stdout (last {} lines) ---", tail.len());
            for line in tail {
                eprintln!("{line}");
            }
        }
    }
}

/// Resident memory of the host, in bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Memory {
    pub(crate) rss: u64,
    pub(crate) hwm: u64,
}

/// The base for every client: bounded, and never through a proxy (a CI proxy
/// must not see, or break, loopback traffic).
pub(crate) fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
}

/// A client that neither asks for nor decodes compression, so tests see the
/// bytes on the wire.
pub(crate) fn raw_client() -> reqwest::Client {
    client_builder()
        .no_gzip()
        .no_brotli()
        .build()
        .expect("building a client")
}

/// Runs `trellis ARGS` to completion (for `check`), bounded in time.
pub(crate) async fn run_cli(args: &[&str], cwd: &Path) -> Output {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(args)
        .current_dir(cwd)
        .env("TRELLIS_CACHE_DIR", cwd.join("cache"))
        .env_remove("TRELLIS_DATABASE_URL")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(STARTUP_TIMEOUT, child)
        .await
        .expect("trellis finished in time")
        .expect("running trellis")
}

/// Asserts `response` is a host error with `status` and `code` in the JSON
/// shape of the contract, and returns the body.
pub(crate) async fn assert_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(
        response.status().as_u16(),
        status,
        "status of {}",
        response.url()
    );
    let headers = response.headers().clone();
    assert_security_headers(&headers);
    let content_type = header(&headers, "content-type");
    assert!(
        content_type.starts_with("application/json"),
        "content-type {content_type:?}"
    );
    let request_id = header(&headers, "x-request-id");
    let bytes = response.bytes().await.expect("reading the error body");
    let body: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "error body is not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    let error = &body["error"];
    assert_eq!(error["code"], code, "body {body}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "body {body}"
    );
    assert_eq!(error["request_id"], request_id.as_str(), "body {body}");
    body
}

/// The headers every response carries.
pub(crate) fn assert_security_headers(headers: &reqwest::header::HeaderMap) {
    assert_eq!(header(headers, "x-content-type-options"), "nosniff");
    assert_eq!(header(headers, "x-frame-options"), "DENY");
    assert_eq!(header(headers, "referrer-policy"), "no-referrer");
    assert!(!header(headers, "x-request-id").is_empty());
}

/// A header's value as a string; panics if it is missing.
pub(crate) fn header(headers: &reqwest::header::HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("missing header {name}; headers: {headers:?}"))
        .to_str()
        .expect("header is ASCII")
        .to_owned()
}

/// Hex sha256 of a file, as the host reports component digests.
pub(crate) fn sha256_hex(path: &str) -> String {
    use sha2::Digest as _;
    let bytes = std::fs::read(path).expect("reading a component");
    sha2::Sha256::digest(bytes)
        .iter()
        .fold(String::new(), |mut s, b| {
            write!(s, "{b:02x}").expect("writing to a String");
            s
        })
}

/// Paths of the guest components built by `host/build.rs`.
pub(crate) mod component {
    pub(crate) const HELLO: &str = env!("HELLO_COMPONENT");
    pub(crate) const ECHO: &str = env!("ECHO_COMPONENT");
    pub(crate) const TRAP: &str = env!("TRAP_COMPONENT");
    pub(crate) const LOOP: &str = env!("LOOP_FOREVER_COMPONENT");
    pub(crate) const MEMBOMB: &str = env!("MEMBOMB_COMPONENT");
    pub(crate) const STREAM: &str = env!("STREAM_COMPONENT");
    pub(crate) const SLOW: &str = env!("SLOW_COMPONENT");
    pub(crate) const WSTD_HELLO: &str = env!("WSTD_HELLO_COMPONENT");
    pub(crate) const VERSION_A: &str = env!("VERSION_A_COMPONENT");
    pub(crate) const VERSION_B: &str = env!("VERSION_B_COMPONENT");
    pub(crate) const BIG_BLOB: &str = env!("BIG_BLOB_COMPONENT");
    pub(crate) const USERS: &str = env!("USERS_COMPONENT");
    pub(crate) const SQL_PROBE: &str = env!("SQL_PROBE_COMPONENT");
    pub(crate) const CACHE_PROBE: &str = env!("CACHE_PROBE_COMPONENT");
    pub(crate) const METRICS_PROBE: &str = env!("METRICS_PROBE_COMPONENT");
    pub(crate) const READY_PROBE: &str = env!("READY_PROBE_COMPONENT");
    pub(crate) const LIMIT_PROBE: &str = env!("LIMIT_PROBE_COMPONENT");
}

/// Sends `GET path` until one is turned away with 503, which shows that
/// another request holds the route's only slot (`max_concurrency = 1`), and
/// returns that response. The contract has no other sign that a request is
/// in flight, and this one needs no sleep.
pub(crate) async fn wait_until_busy(trellis: &Trellis, path: &str) -> reqwest::Response {
    let deadline = Instant::now() + WAIT;
    loop {
        let response = trellis.get(path).await;
        match response.status().as_u16() {
            503 => return response,
            200 => assert!(Instant::now() < deadline, "{path} never reported busy"),
            other => panic!("{path} answered {other} while probing for busy"),
        }
    }
}

/// A precompiled-component cache shared across runs by the tests that are
/// not about the cache: compiling the same components afresh in every
/// SQL test would dominate their run time. Entries are keyed by digest and
/// written atomically, so concurrent hosts can share it.
pub(crate) fn shared_cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e-component-cache")
}

/// The shared Redis the tests use: `TRELLIS_TEST_REDIS_URL`, else the
/// machine's at 127.0.0.1:6379. Tests that share it use keys and names of
/// their own ([`unique`]) and never flush it.
pub(crate) fn redis_url() -> String {
    std::env::var("TRELLIS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A name no other test (or earlier run) uses: `prefix` plus the process
/// id, a counter and the time.
pub(crate) fn unique(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!(
        "{prefix}{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A `redis-server` of the test's own on a free port, which the test may
/// stop and start again (the shared one must stay up for the others).
pub(crate) struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    pub(crate) async fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut server = RedisServer { port, child: None };
        server.restart().await;
        server
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on its port and waits until it accepts.
    pub(crate) async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning redis-server (apt install redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills it, as an outage would.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A PostgreSQL server of the test's own (initdb in a temp dir, on a free
/// port), which the test may stop and start again: the shared server must
/// stay up for the other tests.
pub(crate) struct PostgresServer {
    dir: TempDir,
    port: u16,
}

impl PostgresServer {
    pub(crate) async fn start() -> PostgresServer {
        let dir = TempDir::new();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        // PostgreSQL refuses to run as root; CI runs as root.
        let _ = Command::new("chown")
            .args(["-R", "postgres"])
            .arg(dir.path())
            .status();
        let server = PostgresServer { dir, port };
        let data = server.data_dir();
        let out = server.pg(&[
            "initdb",
            "-D",
            &data,
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ]);
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        server.up().await;
        server
    }

    fn data_dir(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// Runs a PostgreSQL tool, as `postgres` when the test runs as root.
    fn pg(&self, args: &[&str]) -> Output {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|mut versions| versions.next())
            .and_then(Result::ok)
            .map(|v| v.path().join("bin"))
            .expect("PostgreSQL under /usr/lib/postgresql");
        let tool = bin.join(args[0]).display().to_string();
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0"));
        let mut cmd = if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", &tool]);
            c
        } else {
            Command::new(&tool)
        };
        cmd.args(&args[1..])
            .current_dir(self.dir.path())
            .output()
            .expect("running a PostgreSQL tool")
    }

    /// Starts the server and waits until it accepts connections.
    pub(crate) async fn up(&self) {
        let data = self.data_dir();
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {}",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").display().to_string();
        let out = self.pg(&[
            "pg_ctl", "start", "-D", &data, "-l", &log, "-w", "-o", &options,
        ]);
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops it at once, as a crash would.
    pub(crate) fn down(&self) {
        let _ = self.pg(&[
            "pg_ctl",
            "stop",
            "-D",
            &self.data_dir(),
            "-m",
            "immediate",
            "-w",
        ]);
    }

    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.down();
    }
}
