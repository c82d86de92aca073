//! Grants: a component importing a `trellis:api` interface its route does
//! not grant is refused at load, by `check` and by `serve`.

use crate::harness::{Manifest, TempDir, component, run_cli};
use crate::probe::GRANTS;

/// A component importing `trellis:api/X` on a route that does not grant
/// `X` is refused by `check` and by `serve`, naming route, interface and grant.
#[tokio::test]
async fn imports_need_grants() {
    for (grants, missing) in [
        (r#"grants = ["config", "log"]"#, "sql"),
        (r#"grants = ["sql", "log"]"#, "config"),
        (r#"grants = ["sql", "config"]"#, "log"),
    ] {
        let dir = TempDir::new();
        let manifest = Manifest::new()
            .route("hello", "/hello", component::HELLO, &[])
            .route("stingy", "/probe", component::SQL_PROBE, &[grants]);
        let path = dir.write("trellis.toml", &manifest.render());
        let path = path.to_str().unwrap();
        for args in [
            vec!["check", path],
            vec!["serve", path, "--listen", "127.0.0.1:0"],
        ] {
            let output = run_cli(&args, dir.path()).await;
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                !output.status.success(),
                "{args:?} accepted {grants}: {stderr}"
            );
            for needle in [
                "stingy".to_owned(),
                format!("trellis:api/{missing}"),
                format!("grant \"{missing}\""),
            ] {
                assert!(
                    stderr.contains(&needle),
                    "{args:?}: {needle} not in {stderr}"
                );
            }
        }
    }
    // With every grant, the same component passes.
    let dir = TempDir::new();
    let manifest = Manifest::new().route("generous", "/probe", component::SQL_PROBE, &[GRANTS]);
    let path = dir.write("trellis.toml", &manifest.render());
    let output = run_cli(&["check", path.to_str().unwrap()], dir.path()).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
