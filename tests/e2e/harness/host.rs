//! The real `trellis` binary: `trellis serve` on `127.0.0.1:0` as a
//! [`Trellis`] (its address, JSON log lines, stderr and process, killed on
//! drop), and one-shot commands such as `check` through [`run_cli`].

use std::io::{BufRead as _, BufReader, Read as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::watch;

use super::http::client_builder;
use super::manifest::Manifest;
use super::scratch::TempDir;
use super::{STARTUP_TIMEOUT, WAIT};

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
    /// The admin API's bearer token, when it was started.
    admin_token: Option<String>,
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
            .env_remove("TRELLIS_OTLP_CA")
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
            admin_token: launch.admin_token.clone(),
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

    /// `POST` to the admin API's `path` (such as
    /// `/admin/routes/NAME/rollback`), no body.
    pub(crate) async fn admin_post(&self, path: &str) -> reqwest::Response {
        let token = self.admin_token.as_deref().expect("the admin API is on");
        self.client
            .post(format!("{}{path}", self.admin_url()))
            .bearer_auth(token)
            .send()
            .await
            .expect("POST reaches the admin API")
    }

    /// `PUT /admin/routes/NAME?component=REFERENCE`, no body: a deploy of
    /// a component the host pulls from a registry.
    pub(crate) async fn put_route_ref(&self, name: &str, reference: &str) -> reqwest::Response {
        let token = self.admin_token.as_deref().expect("the admin API is on");
        self.client
            .put(format!("{}/admin/routes/{name}", self.admin_url()))
            .query(&[("component", reference)])
            .bearer_auth(token)
            .send()
            .await
            .expect("PUT reaches the admin API")
    }

    /// `PUT /admin/routes/NAME` + `query` (empty, or `?...`) with the
    /// component `bytes`: a deploy through the admin API.
    pub(crate) async fn put_route(
        &self,
        name: &str,
        query: &str,
        bytes: Vec<u8>,
    ) -> reqwest::Response {
        let token = self.admin_token.as_deref().expect("the admin API is on");
        self.client
            .put(format!("{}/admin/routes/{name}{query}", self.admin_url()))
            .bearer_auth(token)
            .header("content-type", "application/wasm")
            .body(bytes)
            .send()
            .await
            .expect("PUT reaches the admin API")
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

    /// Kills the process at once (SIGKILL), as a crash would.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
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
