//! A PostgreSQL server of a test's own (`initdb` in a temp dir), for the
//! tests that stop and start it; the shared server is in `crate::database`.

use std::process::{Command, Output};

use super::scratch::TempDir;

/// A PostgreSQL server of the test's own (initdb in a temp dir, on a free
/// port), which the test may stop and start again: the shared server must
/// stay up for the other tests.
pub(crate) struct PostgresServer {
    dir: TempDir,
    port: u16,
    /// Extra `postgres` options (TLS).
    extra: String,
}

impl PostgresServer {
    pub(crate) async fn start() -> PostgresServer {
        PostgresServer::start_with(false).await
    }

    /// A server that accepts TLS connections only (`hostssl` in
    /// pg_hba.conf), with a certificate for 127.0.0.1 signed by
    /// [`PostgresServer::ca`].
    pub(crate) async fn start_tls() -> PostgresServer {
        PostgresServer::start_with(true).await
    }

    /// The CA that signed a TLS server's certificate (PEM).
    pub(crate) fn ca(&self) -> std::path::PathBuf {
        self.dir.path().join("tls").join("ca.pem")
    }

    async fn start_with(tls: bool) -> PostgresServer {
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
        let mut server = PostgresServer {
            dir,
            port,
            extra: String::new(),
        };
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
        if tls {
            let certs = server.dir.path().join("tls");
            std::fs::create_dir_all(&certs).expect("creating the tls dir");
            super::tls::make_certs(&certs);
            // PostgreSQL wants its key private to its own user.
            let key = certs.join("server.key");
            let _ = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(&certs)
                .status();
            let _ = Command::new("chmod").arg("600").arg(&key).status();
            std::fs::write(
                std::path::Path::new(&data).join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
            )
            .expect("writing pg_hba.conf");
            server.extra = format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                certs.join("server.pem").display(),
                key.display()
            );
        }
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
            "-p {} -c listen_addresses=127.0.0.1 -k {}{}",
            self.port,
            self.dir.path().display(),
            self.extra
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

    /// Stops it the way an operator does (`pg_ctl stop -m fast`): sessions
    /// in flight are told the server is shutting down (57P01).
    pub(crate) fn stop(&self) {
        let _ = self.pg(&["pg_ctl", "stop", "-D", &self.data_dir(), "-m", "fast", "-w"]);
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
