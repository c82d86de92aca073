//! `trellis check`, and how `serve` treats a manifest it cannot use: errors
//! name the line and the field, and nothing is served.

use crate::harness::{Manifest, TempDir, component, run_cli};

/// The 1-based number of the line of `text` that contains `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    1 + text
        .lines()
        .position(|l| l.contains(needle))
        .expect("needle in manifest")
}

/// Writes `manifest` into a temp dir and runs `trellis check` on it.
async fn check(manifest: &str) -> (TempDir, std::process::Output) {
    let dir = TempDir::new();
    let path = dir.write("trellis.toml", manifest);
    let output = run_cli(
        &["check", path.to_str().expect("UTF-8 temp path")],
        dir.path(),
    )
    .await;
    (dir, output)
}

fn two_routes() -> Manifest {
    Manifest::new()
        .server(r#"shutdown_grace = "5s""#)
        .route(
            "greeter",
            "/greet/{name}",
            component::HELLO,
            &[r#"methods = ["GET"]"#, r#"timeout = "2s""#],
        )
        .route(
            "uploads",
            "/up/{*rest}",
            component::ECHO,
            &[
                r#"memory = "32MiB""#,
                r#"max_body = "1MiB""#,
                "max_concurrency = 8",
                r#"queue_timeout = "100ms""#,
            ],
        )
}

#[tokio::test]
async fn check_accepts_a_valid_manifest() {
    let (_dir, output) = check(&two_routes().render()).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "check failed: {stderr}");
    for route in ["greeter", "uploads"] {
        assert!(
            stdout.contains(route),
            "stdout does not mention {route}: {stdout}"
        );
    }
}

#[tokio::test]
async fn check_names_line_and_field_of_a_bad_value() {
    for (field, bad) in [
        ("timeout", r#"timeout = "2x""#),
        ("memory", r#"memory = "12 parsecs""#),
        ("shutdown_grace", r#"shutdown_grace = "soon""#),
        ("max_concurrency", r#"max_concurrency = "many""#),
    ] {
        let mut manifest = Manifest::new().route("hello", "/hello", component::HELLO, &[]);
        manifest = if field == "shutdown_grace" {
            manifest.server(bad)
        } else {
            manifest.route("broken", "/broken", component::HELLO, &[bad])
        };
        let text = manifest.render();
        let (_dir, output) = check(&text).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "check accepted `{bad}`");
        let line = format!("line {}", line_of(&text, bad));
        assert!(
            stderr.contains(&line),
            "`{bad}`: stderr lacks {line:?}: {stderr}"
        );
        assert!(
            stderr.contains(field),
            "`{bad}`: stderr lacks {field:?}: {stderr}"
        );
    }
}

#[tokio::test]
async fn check_names_an_unknown_field_and_its_line() {
    let text = Manifest::new()
        .route("hello", "/hello", component::HELLO, &[r#"tmeout = "2s""#])
        .render();
    let (_dir, output) = check(&text).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "check accepted an unknown field");
    assert!(stderr.contains("tmeout"), "stderr: {stderr}");
    let line = format!("line {}", line_of(&text, "tmeout"));
    assert!(stderr.contains(&line), "stderr lacks {line:?}: {stderr}");
}

/// A component whose initial memory is above its route's `memory` links
/// fine but can never be instantiated: `check` instantiates each route once
/// under its limits, so it fails there, naming the route and the limit,
/// instead of in every request once served.
#[tokio::test]
async fn check_instantiates_each_component_under_its_limits() {
    let text = Manifest::new()
        .route("hello", "/hello", component::HELLO, &[])
        // A 4 MiB data segment in a 2 MiB route.
        .route(
            "blob",
            "/blob",
            component::BIG_BLOB,
            &[r#"memory = "2MiB""#],
        )
        .render();
    let (_dir, output) = check(&text).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "check accepted a component over its memory limit: {stdout}"
    );
    assert!(stdout.contains("ok  hello"), "stdout: {stdout}");
    let fail = stdout
        .lines()
        .find(|l| l.starts_with("FAIL blob"))
        .unwrap_or_else(|| panic!("no FAIL line for blob: {stdout}"));
    assert!(fail.contains("memory limit of 2097152 bytes"), "{fail}");
    assert!(
        stderr.contains("blob"),
        "stderr does not name the route: {stderr}"
    );
}

#[tokio::test]
async fn check_names_the_route_of_a_missing_component() {
    let dir = TempDir::new();
    let missing = dir.path().join("nowhere/ghost.wasm");
    let missing = missing.to_str().expect("UTF-8 temp path");
    let text = Manifest::new()
        .route("hello", "/hello", component::HELLO, &[])
        .route("ghost", "/ghost", missing, &[])
        .render();
    let (_dir, output) = check(&text).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "check accepted a missing component"
    );
    assert!(
        stderr.contains("ghost"),
        "stderr does not name the route: {stderr}"
    );
    assert!(
        stderr.contains(missing),
        "stderr does not name {missing}: {stderr}"
    );
}

#[tokio::test]
async fn check_resolves_components_relative_to_the_manifest() {
    let dir = TempDir::new();
    std::fs::create_dir(dir.path().join("wasm")).unwrap();
    std::fs::copy(component::HELLO, dir.path().join("wasm/hello.wasm")).unwrap();
    let path = dir.write(
        "trellis.toml",
        &Manifest::new()
            .route("rel", "/rel", "wasm/hello.wasm", &[])
            .render(),
    );
    // Run from elsewhere: the path must resolve against the manifest's dir.
    let elsewhere = TempDir::new();
    let output = run_cli(&["check", path.to_str().unwrap()], elsewhere.path()).await;
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn serve_refuses_a_malformed_manifest() {
    let dir = TempDir::new();
    let text = Manifest::new()
        .route("hello", "/hello", component::HELLO, &[r#"timeout = "2x""#])
        .render();
    let path = dir.write("trellis.toml", &text);
    let output = run_cli(
        &["serve", path.to_str().unwrap(), "--listen", "127.0.0.1:0"],
        dir.path(),
    )
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "serve started on a bad manifest");
    assert!(stderr.contains("timeout"), "stderr: {stderr}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("listening"));
}
