//! An OCI registry of a test's own: Debian's `docker-registry`
//! (distribution 2.8) run as `docker-registry serve CONFIG` on a free
//! loopback port over plain HTTP, with filesystem storage in a temp dir
//! the test can reach into (to tamper with a blob), optionally behind
//! htpasswd Basic auth or behind token auth (the Bearer flow of Docker Hub
//! and ghcr.io) with a [`TokenServer`] of the test's own. The test may stop
//! it (an outage) and start it again.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::WAIT;
use super::scratch::TempDir;

/// How a registry authenticates.
enum Auth<'a> {
    /// htpasswd: user, password.
    Basic(&'a str, &'a str),
    /// Bearer tokens from this server.
    Token(&'a TokenServer),
}

/// The `service` (the tokens' audience) and `issuer` a token-auth
/// registry expects.
const SERVICE: &str = "trellis-e2e-registry";
const ISSUER: &str = "trellis-e2e-tokens";

pub(crate) struct Registry {
    port: u16,
    dir: TempDir,
    config: PathBuf,
    child: Option<Child>,
}

impl Registry {
    /// A registry anyone may pull from and push to.
    pub(crate) async fn start() -> Registry {
        Registry::launch(None).await
    }

    /// A registry that wants `user`/`password` (HTTP Basic, an htpasswd
    /// file made with `htpasswd -B`, the only hash distribution accepts).
    pub(crate) async fn with_basic_auth(user: &str, password: &str) -> Registry {
        Registry::launch(Some(Auth::Basic(user, password))).await
    }

    /// A registry that wants a Bearer token from `tokens`, which hands
    /// them to `user`/`password` (distribution's `auth: token`: the token
    /// is an RS256 JWT whose `x5c` certificate the registry trusts).
    pub(crate) async fn with_token_auth(tokens: &TokenServer) -> Registry {
        Registry::launch(Some(Auth::Token(tokens))).await
    }

    async fn launch(auth: Option<Auth<'_>>) -> Registry {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = TempDir::new();
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).expect("creating the registry's storage");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: trellis-e2e-secret\n",
            storage.display()
        );
        if let Some(Auth::Token(tokens)) = auth {
            config.push_str(&format!(
                "auth:\n  token:\n    realm: {}/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
                tokens.origin,
                tokens.cert.display()
            ));
        }
        if let Some(Auth::Basic(user, password)) = auth {
            let file = dir.path().join("htpasswd");
            let out = Command::new("htpasswd")
                .args(["-Bbc", &file.display().to_string(), user, password])
                .output()
                .expect("running htpasswd (apt install apache2-utils)");
            assert!(out.status.success(), "htpasswd: {out:?}");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: trellis-e2e\n    path: {}\n",
                file.display()
            ));
        }
        let config_path = dir.write("config.yml", &config);
        let mut registry = Registry {
            port,
            dir,
            config: config_path,
            child: None,
        };
        registry.restart().await;
        registry
    }

    /// `HOST:PORT`, the `[registries]` key.
    pub(crate) fn authority(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `oci://127.0.0.1:PORT/REPOSITORY:TAG`.
    pub(crate) fn reference(&self, repository: &str, tag: &str) -> String {
        format!("oci://{}/{repository}:{tag}", self.authority())
    }

    /// The `[registries."127.0.0.1:PORT"]` table for it, plus `extra` lines.
    pub(crate) fn section(&self, extra: &[&str]) -> String {
        let mut text = format!("[registries.\"{}\"]\ninsecure = true\n", self.authority());
        for line in extra {
            text.push_str(line);
            text.push('\n');
        }
        text
    }

    /// Where a blob's bytes live in the filesystem storage.
    pub(crate) fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Starts it (again) on its port and waits until `/v2/` answers.
    pub(crate) async fn restart(&mut self) {
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning docker-registry (apt install docker-registry)");
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        loop {
            let up = reqwest::get(format!("http://{}/v2/", self.authority()))
                .await
                .is_ok();
            if up {
                break;
            }
            assert!(Instant::now() < deadline, "docker-registry did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
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

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A token endpoint as a registry's `auth: token` uses it: `GET
/// /token?service=…&scope=repository:NAME:pull,push` with HTTP Basic
/// credentials answers `{"token": JWT}` granting the asked actions, signed
/// with a key whose self-signed certificate the registry trusts; wrong or
/// missing credentials are 401. It counts the tokens it issued.
pub(crate) struct TokenServer {
    origin: String,
    cert: PathBuf,
    issued: Arc<AtomicUsize>,
    _dir: TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl TokenServer {
    pub(crate) async fn start(user: &str, password: &str) -> TokenServer {
        use base64::Engine as _;
        let dir = TempDir::new();
        let openssl = |args: &[&str]| super::openssl(dir.path(), args);
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=trellis-e2e-tokens",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
        ]);
        openssl(&[
            "x509", "-in", "cert.pem", "-outform", "DER", "-out", "cert.der",
        ]);
        let key = jsonwebtoken::EncodingKey::from_rsa_der(&super::rsa_der(dir.path()));
        let cert = base64::engine::general_purpose::STANDARD
            .encode(std::fs::read(dir.path().join("cert.der")).unwrap());
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let issued = Arc::new(AtomicUsize::new(0));
        let state = (key, cert, expected, user.to_owned(), issued.clone());
        let app = axum::Router::new()
            .route("/token", axum::routing::get(issue))
            .with_state(Arc::new(state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        TokenServer {
            origin,
            cert: dir.path().join("cert.pem"),
            issued,
            _dir: dir,
            task,
        }
    }

    /// Tokens issued so far.
    pub(crate) fn issued(&self) -> usize {
        self.issued.load(Ordering::SeqCst)
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type TokenState = (
    jsonwebtoken::EncodingKey,
    String,
    String,
    String,
    Arc<AtomicUsize>,
);

async fn issue(
    axum::extract::State(state): axum::extract::State<Arc<TokenState>>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
    headers: http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let (key, cert, expected, user, issued) = &*state;
    let authorized = headers
        .get(http::header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == expected.as_bytes());
    if !authorized || query.get("service").map(String::as_str) != Some(SERVICE) {
        return http::StatusCode::UNAUTHORIZED.into_response();
    }
    // `repository:NAME:ACTIONS`; the base `/v2/` check asks for none.
    let access: Vec<serde_json::Value> = query
        .get("scope")
        .and_then(|scope| {
            let (kind, rest) = scope.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            Some(serde_json::json!({
                "type": kind,
                "name": name,
                "actions": actions.split(',').collect::<Vec<_>>(),
            }))
        })
        .into_iter()
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let n = issued.fetch_add(1, Ordering::SeqCst);
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": user, "aud": SERVICE, "iat": now, "nbf": now - 10,
        "exp": now + 300, "jti": format!("e2e-{n}"), "access": access,
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.x5c = Some(vec![cert.clone()]);
    let token = jsonwebtoken::encode(&header, &claims, key).unwrap();
    axum::Json(serde_json::json!({ "token": token })).into_response()
}
