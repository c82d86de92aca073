//! What a new plugin author runs, on a clean directory: `trellis new` +
//! `trellis build` + `trellis serve` for Rust, JavaScript and Python, then
//! `GET /`. The toolchains come from the registries as `trellis build`
//! installs them (npm, PyPI, the Rust toolchain of this checkout); these
//! tests never skip, so CI needs node/npm and python3 with venv.
//!
//! The JavaScript and Python components are built against the authors'
//! world of WASI 0.2.10 while the host implements 0.2.12: they serving at
//! all is the check that the host links older 0.2.x imports.
//!
//! Also here: the JavaScript and Python examples (`examples/notes-js`,
//! `examples/notes-python`), built the same way and served on SQLite and
//! PostgreSQL.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

use crate::database::Db;
use crate::harness::{Launch, TempDir, Trellis, instances, shared_cache_dir};

/// One toolchain build at a time: they each want both cores, and npm and
/// cargo share their caches badly when run at once.
static BUILDS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `trellis ARGS` in `cwd` to completion, failing the test with its
/// output when it fails.
fn trellis(cwd: &Path, args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(args)
        .current_dir(cwd)
        // Rust projects share one target dir across runs, so the SDK and
        // its dependencies are compiled once per checkout, not per test.
        .env(
            "CARGO_TARGET_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("scaffold-target"),
        )
        .stdin(Stdio::null())
        .output()
        .expect("running trellis");
    assert!(
        output.status.success(),
        "trellis {args:?} in {} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        cwd.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    output
}

/// `trellis build` in `dir`; the component path it printed, checked.
async fn build(dir: &Path) -> PathBuf {
    let _one = BUILDS.lock().await;
    let dir2 = dir.to_owned();
    let output = tokio::task::spawn_blocking(move || trellis(&dir2, &["build"]))
        .await
        .expect("the build thread");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let printed = stdout.lines().last().expect("build prints the component");
    let component = dir.join(printed.trim());
    assert!(
        component.is_file(),
        "`trellis build` printed {printed:?}, which is not a file"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("==> built"),
        "no progress on the console: {stderr}"
    );
    component
}

/// `trellis new demo --lang LANG --grants GRANTS` in a fresh dir, built.
async fn scaffold(parent: &TempDir, lang: &str, grants: &str) -> PathBuf {
    let mut args = vec!["new", "demo", "--lang", lang];
    if !grants.is_empty() {
        args.extend(["--grants", grants]);
    }
    let output = trellis(parent.path(), &args);
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        said.contains("trellis build"),
        "`new` says what to do next: {said}"
    );
    let dir = parent.path().join("demo");
    for file in ["trellis.toml", "README.md", ".gitignore"] {
        assert!(dir.join(file).is_file(), "{file} missing");
    }
    let component = build(&dir).await;
    assert_eq!(component, dir.join("./dist/demo.wasm"));
    dir
}

/// `trellis serve` with no argument in `dir`, as the README says.
async fn serve(dir: &Path, env: Vec<(String, String)>) -> Trellis {
    Trellis::launch(Launch {
        cwd: Some(dir.to_owned()),
        cache_dir: Some(shared_cache_dir()),
        env,
        ..Launch::default()
    })
    .await
}

/// `GET /` answers 200 with the scaffold's JSON.
async fn get_index(trellis: &Trellis) -> Value {
    let response = trellis.get("/").await;
    let status = response.status();
    let body = response.text().await.expect("a body");
    assert_eq!(status, 200, "GET / answered {status}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// A scaffold with `--grants sql,log`: its answer comes from SQL and its
/// `log` record reaches the host's log with the route.
async fn sql_and_log(lang: &str) -> (TempDir, PathBuf) {
    let parent = TempDir::new();
    let dir = scaffold(&parent, lang, "sql,log").await;
    let manifest = std::fs::read_to_string(dir.join("trellis.toml")).unwrap();
    assert!(
        manifest.contains("grants = [\"sql\", \"log\"]"),
        "{manifest}"
    );
    let trellis = serve(&dir, vec![]).await;
    let body = get_index(&trellis).await;
    assert_eq!(body["message"], "Hello from demo!", "{body}");
    assert_eq!(body["answer"], 42, "the SQL result: {body}");
    let record = trellis
        .wait_log("the handler's log record", |l| {
            l["message"] == "handled" && l["target"] == "guest"
        })
        .await;
    assert_eq!(record["route"], "root", "{record}");
    let fields: Value =
        serde_json::from_str(record["fields"].as_str().expect("fields as a string")).unwrap();
    assert_eq!(fields, json!({ "path": "/" }), "{record}");
    (parent, dir)
}

#[tokio::test(flavor = "multi_thread")]
async fn rust_scaffold_serves_with_no_grant() {
    let parent = TempDir::new();
    let dir = scaffold(&parent, "rust", "").await;
    let cargo = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    assert!(cargo.contains("default-features = false"), "{cargo}");
    let trellis = serve(&dir, vec![]).await;
    let body = get_index(&trellis).await;
    assert_eq!(body, json!({ "message": "Hello from demo!" }));
}

#[tokio::test(flavor = "multi_thread")]
async fn rust_scaffold_uses_sql_and_log() {
    sql_and_log("rust").await;
}

/// Also: the TypeScript declarations `jco guest-types` wrote type-check
/// with the sources (`tsc --noEmit`), and the helper module does too.
#[tokio::test(flavor = "multi_thread")]
async fn js_scaffold_uses_sql_and_log_and_type_checks() {
    let parent = TempDir::new();
    let dir = scaffold(&parent, "js", "sql,log").await;
    let declarations = dir.join("types/generated/interfaces/trellis-api-sql.d.ts");
    assert!(
        declarations.is_file(),
        "no declarations for trellis:api/sql"
    );
    let check = Command::new("npx")
        .args(["--no-install", "tsc", "--noEmit", "-p", "."])
        .current_dir(&dir)
        .output()
        .expect("running npx tsc");
    assert!(
        check.status.success(),
        "tsc --noEmit failed:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    // A type error is caught, so the check above means something.
    std::fs::write(
        dir.join("src/broken.js"),
        "// @ts-check\nimport { query } from 'trellis:api/sql@0.1.0';\nquery(1, []);\n",
    )
    .unwrap();
    let broken = Command::new("npx")
        .args(["--no-install", "tsc", "--noEmit", "-p", "."])
        .current_dir(&dir)
        .output()
        .expect("running npx tsc");
    assert!(
        !broken.status.success(),
        "tsc accepted a number as a statement"
    );
    std::fs::remove_file(dir.join("src/broken.js")).unwrap();

    let trellis = serve(&dir, vec![]).await;
    let body = get_index(&trellis).await;
    assert_eq!(body["answer"], 42, "{body}");
    let record = trellis
        .wait_log("the handler's log record", |l| l["message"] == "handled")
        .await;
    assert_eq!(record["route"], "root", "{record}");
}

/// The Python scaffold also with `reuse`: its helper releases every handle
/// it is given (the request's too), so its instance is kept and reused
/// rather than dropped after each request.
#[tokio::test(flavor = "multi_thread")]
async fn python_scaffold_uses_sql_and_log_and_is_reused() {
    let (_parent, dir) = sql_and_log("python").await;
    let manifest = dir.join("trellis.toml");
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    assert!(
        text.trim_end().ends_with("timeout = \"5s\""),
        "the route comes last: {text}"
    );
    text.push_str("reuse = { requests = 8 }\n");
    std::fs::write(&manifest, text).unwrap();
    let trellis = serve(&dir, vec![]).await;
    for _ in 0..3 {
        assert_eq!(get_index(&trellis).await["answer"], 42);
        // The instance goes back to the pool just after its response has
        // left: wait for that, or the next request rightly takes another
        // (and the count below would be read too early). A dropped
        // instance also leaves none busy, but none idle either.
        crate::harness::wait_until(
            "the instance is handed back",
            std::time::Duration::from_millis(5),
            async || {
                let busy = instances(&trellis, "root", "busy").await;
                (busy == 0.0).then_some(())
            },
        )
        .await;
    }
    // An instance left holding a handle would have been dropped after each
    // request, leaving none idle.
    let idle = instances(&trellis, "root", "idle").await;
    assert_eq!(
        idle, 1.0,
        "one instance served the three requests and waits for more"
    );
}

/// The JavaScript and Python examples: a copy of the example directory
/// (so the checkout stays clean) built with `trellis build` and served
/// with its own manifest on SQLite, then on PostgreSQL.
async fn notes_example(name: &str) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name);
    let copy = TempDir::new();
    let dir = copy.path().join(name);
    copy_tree(&source, &dir);
    trellis(&dir, &["wit", "--grants", "sql,log"]);
    build(&dir).await;
    for db in [Db::sqlite(), Db::postgres().await] {
        let env = vec![("TRELLIS_DATABASE_URL".to_owned(), db.url())];
        let trellis = serve(&dir, env).await;
        let client = trellis.client();
        let empty = list_notes(&trellis).await;
        assert_eq!(empty, json!({ "notes": [] }), "{name}");
        for text in ["buy milk", "call mum"] {
            let created = client
                .post(trellis.url("/notes"))
                .body(json!({ "text": text }).to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(created.status(), 201, "{name}: {:?}", created.text().await);
        }
        let bad = client
            .post(trellis.url("/notes"))
            .body("{\"text\": 7}")
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 400, "{name}: a note's text must be a string");
        let listed = list_notes(&trellis).await;
        assert_eq!(
            listed,
            json!({ "notes": ["buy milk", "call mum"] }),
            "{name}"
        );
        trellis
            .wait_log("the example's log record", |l| {
                l["message"] == "note added" && l["target"] == "guest"
            })
            .await;
    }
}

/// `GET /notes`, which answers 200 with JSON.
async fn list_notes(trellis: &Trellis) -> Value {
    let response = trellis.get("/notes").await;
    assert_eq!(response.status(), 200);
    let body = response.text().await.expect("a body");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Copies `from` to `to`, leaving out what a build or an earlier run left.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if ["node_modules", ".venv", "dist", "types", "wit"]
            .iter()
            .any(|skip| name == *skip)
            || name.to_string_lossy().starts_with("trellis.db")
        {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn notes_example_in_javascript_on_sqlite_and_postgres() {
    notes_example("notes-js").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn notes_example_in_python_on_sqlite_and_postgres() {
    notes_example("notes-python").await;
}
