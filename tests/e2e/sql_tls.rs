//! PostgreSQL over TLS: `sslmode` and `sslrootcert` in the database URL,
//! against a server of the test's own that accepts TLS connections only,
//! with a certificate signed by a CA the test makes.

use serde_json::json;

use crate::harness::{Manifest, PostgresServer, TempDir, component, make_certs, run_cli};
use crate::probe::{GRANTS, int, launch, query, rows, script};

fn manifest(url: &str) -> Manifest {
    Manifest::new()
        .database(&format!("url = {url:?}"))
        .database(r#"acquire_timeout = "2s""#)
        .route("probe", "/probe", component::SQL_PROBE, &[GRANTS])
}

#[tokio::test]
async fn postgres_over_verified_tls() {
    let server = PostgresServer::start_tls().await;
    let ca = server.ca().display().to_string();
    let url = format!("{}?sslmode=verify-full&sslrootcert={ca}", server.url());
    let trellis = launch(manifest(&url), &[]).await;
    let results = script(
        &trellis,
        json!([
            query("SELECT 1 AS one", json!([])),
            query(
                "SELECT CASE WHEN ssl THEN 1 ELSE 0 END AS tls FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                json!([])
            ),
        ]),
    )
    .await;
    assert_eq!(rows(&results[0])[0][0], int(1));
    assert_eq!(rows(&results[1])[0][0], int(1), "the session uses TLS");
    drop(trellis);

    // Without TLS the server refuses the host (pg_hba has hostssl only),
    // and a CA that did not sign the server's certificate fails
    // verification: either way the host, whose route needs the database,
    // does not start, and says why.
    let other = TempDir::new();
    make_certs(other.path());
    for (url, want) in [
        (format!("{}?sslmode=disable", server.url()), "no encryption"),
        (
            format!(
                "{}?sslmode=verify-full&sslrootcert={}",
                server.url(),
                other.path().join("ca.pem").display()
            ),
            "certificate",
        ),
    ] {
        let dir = TempDir::new();
        let path = dir.write("trellis.toml", &manifest(&url).render());
        let output = run_cli(
            &["serve", path.to_str().unwrap(), "--listen", "127.0.0.1:0"],
            dir.path(),
        )
        .await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{url}: {stderr}");
        assert!(
            stderr.contains("opening the database") && stderr.contains(want),
            "{url}: {want} not in {stderr}"
        );
    }
}
