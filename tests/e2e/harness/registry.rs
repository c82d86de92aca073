//! An OCI registry of a test's own: Debian's `docker-registry`
//! (distribution 2.8) run as `docker-registry serve CONFIG` on a free
//! loopback port over plain HTTP, with filesystem storage in a temp dir
//! the test can reach into (to tamper with a blob), optionally behind
//! htpasswd Basic auth. The test may stop it (an outage) and start it again.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::WAIT;
use super::scratch::TempDir;

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
        Registry::launch(Some((user, password))).await
    }

    async fn launch(auth: Option<(&str, &str)>) -> Registry {
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
        if let Some((user, password)) = auth {
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
