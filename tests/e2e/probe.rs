//! A client for the `sql-probe` test component: starting a host that
//! routes to it, running scripts of capability calls, and reading each
//! step's `ok` or `err` (see `tests/plugins/sql-probe` for the JSON forms).

use serde_json::{Value, json};

use crate::database::Db;
use crate::harness::{Launch, Manifest, Trellis, component, shared_cache_dir};

pub(crate) const GRANTS: &str = r#"grants = ["sql", "config", "log"]"#;

/// The probe at `/probe` and `/export` on `db`, plus raw `[database]` lines.
pub(crate) fn manifest(db: &Db, database: &[&str]) -> Manifest {
    let mut manifest = db.manifest(Manifest::new());
    for line in database {
        manifest = manifest.database(line);
    }
    manifest
        .route(
            "probe",
            "/probe",
            component::SQL_PROBE,
            &[GRANTS, r#"timeout = "30s""#],
        )
        .route(
            "export",
            "/export",
            component::SQL_PROBE,
            &[GRANTS, r#"timeout = "300s""#],
        )
}

pub(crate) async fn launch(manifest: Manifest, env: &[(&str, &str)]) -> Trellis {
    Trellis::launch(Launch {
        manifest: Some(manifest),
        cache_dir: Some(shared_cache_dir()),
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Launch::default()
    })
    .await
}

pub(crate) async fn start(db: &Db) -> Trellis {
    launch(manifest(db, &[]), &[]).await
}

/// Posts a script to `path`; the raw response.
pub(crate) async fn post_script(trellis: &Trellis, path: &str, steps: &Value) -> reqwest::Response {
    trellis
        .client()
        .post(trellis.url(path))
        .header("content-type", "application/json")
        .body(json!({ "steps": steps }).to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"))
}

/// Runs `steps` at `/probe` and returns one result per step.
pub(crate) async fn script(trellis: &Trellis, steps: Value) -> Vec<Value> {
    script_at(trellis, "/probe", steps).await
}

pub(crate) async fn script_at(trellis: &Trellis, path: &str, steps: Value) -> Vec<Value> {
    let response = post_script(trellis, path, &steps).await;
    let status = response.status();
    let body = response.text().await.expect("reading the probe's answer");
    assert_eq!(status, 200, "probe answered {status}: {body}");
    let body: Value = serde_json::from_str(&body).expect("the probe answers JSON");
    let results = body["results"].as_array().expect("results").clone();
    assert_eq!(results.len(), steps.as_array().map_or(0, Vec::len));
    results
}

/// The `ok` of a step, failing the test on an `err`.
#[track_caller]
pub(crate) fn ok(result: &Value) -> &Value {
    match result.get("ok") {
        Some(ok) => ok,
        None => panic!("expected ok, got {result}"),
    }
}

/// The `err` of a step, failing the test on an `ok`.
#[track_caller]
pub(crate) fn err(result: &Value) -> &Value {
    match result.get("err") {
        Some(err) => err,
        None => panic!("expected an error, got {result}"),
    }
}

/// The error variant of a step.
#[track_caller]
pub(crate) fn variant(result: &Value) -> &str {
    err(result)["variant"].as_str().expect("variant")
}

/// The rows of a `query` step.
#[track_caller]
pub(crate) fn rows(result: &Value) -> &Vec<Value> {
    ok(result)["rows"].as_array().expect("rows")
}

pub(crate) fn int(i: i64) -> Value {
    json!({ "int": i })
}

pub(crate) fn text(s: &str) -> Value {
    json!({ "text": s })
}

pub(crate) fn query(sql: &str, params: Value) -> Value {
    json!({ "op": "query", "sql": sql, "params": params })
}

pub(crate) fn execute(sql: &str, params: Value) -> Value {
    json!({ "op": "execute", "sql": sql, "params": params })
}

pub(crate) fn tx_execute(sql: &str, params: Value) -> Value {
    json!({ "op": "tx_execute", "sql": sql, "params": params })
}

pub(crate) fn tx_query(sql: &str, params: Value) -> Value {
    json!({ "op": "tx_query", "sql": sql, "params": params })
}

pub(crate) fn op(name: &str) -> Value {
    json!({ "op": name })
}

/// `sqlite` or `postgres` DDL, whichever `db` is.
pub(crate) fn ddl<'a>(db: &Db, sqlite: &'a str, postgres: &'a str) -> &'a str {
    if db.is_postgres() { postgres } else { sqlite }
}
