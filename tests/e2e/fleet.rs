//! Shared deployments (`[deployments] shared = true`): several hosts on one
//! database, each test with a PostgreSQL schema (or SQLite file) of its
//! own. A deploy, rollback or delete through any host reaches every host
//! with no failed request; a (re)started host serves the fleet's version
//! and its history; `GET /admin/fleet` shows who serves what; `deploy
//! --wait` waits for all; a database that is down fails a deploy clearly;
//! concurrent deploys are serialized.

use std::process::{Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::database::{Db, PgProxy, PgSchema};
use crate::harness::{
    Launch, Manifest, STARTUP_TIMEOUT, Trellis, WAIT, assert_error, client_builder, component,
    header, sha256_hex, shared_cache_dir, wait_until,
};

const TOKEN: &str = "fleet-admin-token-0123456789";

/// Seconds between reconciles in these tests (heartbeats too).
const RECONCILE: &str = "1s";

/// A manifest serving version a at `/v`, sharing deployments through the
/// database at `url`. A host counts as gone after 8 s without a
/// heartbeat: long enough for one that is busy compiling on a loaded
/// machine (3 s was not), short enough to see a killed one go within
/// [`WAIT`].
fn fleet_manifest(url: &str) -> Manifest {
    fleet_manifest_reconciling(url, RECONCILE, "8s")
}

/// Like [`fleet_manifest`], reconciling every `reconcile`.
fn fleet_manifest_reconciling(url: &str, reconcile: &str, stale_after: &str) -> Manifest {
    Manifest::new()
        .route("v", "/v", component::VERSION_A, &[])
        .database(&format!("url = {url:?}"))
        .section(&format!(
            "[deployments]\nshared = true\nreconcile = \"{reconcile}\"\nstale_after = \"{stale_after}\""
        ))
}

/// A host of the fleet, named `id`, with the admin API on and a
/// precompiled-component cache of its own (so it loads what it did not
/// compile from the store).
async fn host(manifest: Manifest, id: &str) -> Trellis {
    host_with(manifest, id, &[]).await
}

/// Like [`host`], with more environment variables.
async fn host_with(manifest: Manifest, id: &str, env: &[(&str, &str)]) -> Trellis {
    let mut vars = vec![("TRELLIS_HOST_ID".to_owned(), id.to_owned())];
    vars.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    Trellis::launch(Launch {
        admin_token: Some(TOKEN.to_owned()),
        env: vars,
        ..Launch::manifest(manifest)
    })
    .await
}

/// Like [`host`], on the precompiled cache the tests share, as hosts on
/// one machine (or one volume) would: the 2 s bound below is about
/// propagation and the swap, not about how long an unoptimized test build
/// takes to compile (a second or more per host on a loaded 2-core VM).
async fn host_sharing_the_cache(manifest: Manifest, id: &str) -> Trellis {
    Trellis::launch(Launch {
        admin_token: Some(TOKEN.to_owned()),
        env: vec![("TRELLIS_HOST_ID".to_owned(), id.to_owned())],
        cache_dir: Some(shared_cache_dir()),
        ..Launch::manifest(manifest)
    })
    .await
}

async fn put(trellis: &Trellis, name: &str, query: &str, component: &str) -> reqwest::Response {
    let bytes = std::fs::read(component).unwrap();
    trellis.put_route(name, query, bytes).await
}

async fn json_of(response: reqwest::Response) -> Value {
    let status = response.status();
    let text = response.text().await.expect("reading a JSON body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {text}"))
}

async fn deploy(trellis: &Trellis, component: &str) -> Value {
    let response = put(trellis, "v", "", component).await;
    assert_eq!(
        response.status(),
        200,
        "deploy through {}",
        trellis.admin_url()
    );
    json_of(response).await
}

async fn admin(trellis: &Trellis, method: reqwest::Method, path: &str) -> reqwest::Response {
    trellis
        .client()
        .request(method, format!("{}{path}", trellis.admin_url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("the admin API answers")
}

async fn fleet(trellis: &Trellis) -> Value {
    let response = admin(trellis, reqwest::Method::GET, "/admin/fleet").await;
    assert_eq!(response.status(), 200);
    json_of(response).await
}

/// The digest `x-trellis-component` names for `/v`, and the body.
async fn served(trellis: &Trellis) -> (String, String) {
    let response = trellis.get("/v").await;
    assert_eq!(response.status(), 200);
    let label = header(response.headers(), "x-trellis-component");
    (label, response.text().await.unwrap())
}

fn label(component: &str) -> String {
    format!("v@{}", &sha256_hex(component)[..12])
}

/// Waits until every host serves `component` at `/v`; returns how long
/// that took.
async fn until_all_serve(hosts: &[&Trellis], component: &str, within: Duration) -> Duration {
    let started = Instant::now();
    let want = label(component);
    for trellis in hosts {
        loop {
            let (got, _) = served(trellis).await;
            if got == want {
                break;
            }
            assert!(
                started.elapsed() < within,
                "{} still serves {got}, not {want}, after {within:?}",
                trellis.url("/v")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    started.elapsed()
}

/// `hosts` under constant load on `/v`: each answer must be 200 and its
/// body must be the version its header names.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<(u32, Vec<String>)>>,
}

impl Load {
    fn start(hosts: &[Arc<Trellis>]) -> Load {
        let (a, b) = (label(component::VERSION_A), label(component::VERSION_B));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for trellis in hosts {
            for _ in 0..3 {
                let (trellis, stop, a, b) = (trellis.clone(), stop.clone(), a.clone(), b.clone());
                tasks.push(tokio::spawn(async move {
                    let client = client_builder().build().unwrap();
                    let (mut ok, mut failures) = (0u32, Vec::new());
                    while !stop.load(Ordering::Relaxed) {
                        let outcome = async {
                            let response = client
                                .get(trellis.url("/v"))
                                .send()
                                .await
                                .map_err(|e| format!("request failed: {e}"))?;
                            let status = response.status();
                            let label = header(response.headers(), "x-trellis-component");
                            let body = response.text().await.map_err(|e| format!("body: {e}"))?;
                            let consistent = (body == "version a\n" && label == a)
                                || (body == "version b\n" && label == b);
                            if status != 200 || !consistent {
                                return Err(format!("{status} {label}: {body:?}"));
                            }
                            Ok(())
                        }
                        .await;
                        match outcome {
                            Ok(()) => ok += 1,
                            Err(e) => failures.push(e),
                        }
                    }
                    (ok, failures)
                }));
            }
        }
        Load { stop, tasks }
    }

    /// Stops the load; the number of answers, after asserting none failed.
    async fn finish(self) -> u32 {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = 0;
        for task in self.tasks {
            let (ok, failures) = tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
            assert!(failures.is_empty(), "failed requests: {failures:?}");
            total += ok;
        }
        total
    }
}

/// The host entry of `id` in a `GET /admin/fleet` answer.
fn host_entry<'a>(fleet: &'a Value, id: &str) -> &'a Value {
    fleet["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["id"] == id)
        .unwrap_or_else(|| panic!("no host {id} in {fleet:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_through_one_host_reaches_all_three_under_load_and_so_does_a_rollback() {
    let schema = PgSchema::create().await;
    // Reconciling only every 30 s: changes reach the other hosts within
    // 2 s through LISTEN/NOTIFY, not through the reconcile.
    let manifest = fleet_manifest_reconciling(&schema.url(), "30s", "90s");
    let (a, b, c) = tokio::join!(
        host_sharing_the_cache(manifest.clone(), "host-a"),
        host_sharing_the_cache(manifest.clone(), "host-b"),
        host_sharing_the_cache(manifest.clone(), "host-c"),
    );
    let (a, b, c) = (Arc::new(a), Arc::new(b), Arc::new(c));
    let (digest_a, digest_b) = (
        sha256_hex(component::VERSION_A),
        sha256_hex(component::VERSION_B),
    );

    // Before: three live hosts, nothing in the store, all serving the
    // manifest's version.
    let before = fleet(&b).await;
    assert_eq!(before["host"], "host-b", "{before:#}");
    assert_eq!(before["desired"], serde_json::json!({}), "{before:#}");
    assert_eq!(before["converged"], true, "{before:#}");
    for id in ["host-a", "host-b", "host-c"] {
        let entry = host_entry(&before, id);
        assert_eq!(entry["live"], true, "{entry}");
        assert_eq!(entry["serving"]["v"]["version"], 1, "{entry}");
        assert_eq!(
            entry["serving"]["v"]["digest"],
            digest_a.as_str(),
            "{entry}"
        );
        assert!(
            entry["address"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{entry}"
        );
        assert!(
            entry["last_seen"].as_str().unwrap().ends_with('Z'),
            "{entry}"
        );
    }

    let load = Load::start(&[a.clone(), b.clone(), c.clone()]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answer = deploy(&a, component::VERSION_B).await;
    assert_eq!(answer["version"], 2, "{answer}");
    assert_eq!(answer["digest"], digest_b.as_str(), "{answer}");
    let took = until_all_serve(&[&a, &b, &c], component::VERSION_B, Duration::from_secs(2)).await;
    eprintln!("deploy reached three hosts in {} ms", took.as_millis());
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A rollback through another host reaches all three too.
    let back = admin(&b, reqwest::Method::POST, "/admin/routes/v/rollback").await;
    assert_eq!(back.status(), 200);
    let back = json_of(back).await;
    assert_eq!(
        (back["version"].as_u64(), back["digest"].as_str()),
        (Some(1), Some(digest_a.as_str())),
        "{back}"
    );
    let took = until_all_serve(&[&a, &b, &c], component::VERSION_A, Duration::from_secs(2)).await;
    eprintln!("rollback reached three hosts in {} ms", took.as_millis());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answers = load.finish().await;
    assert!(answers >= 100, "load too thin to mean anything: {answers}");

    // And version numbers go on growing: the next deploy is 3, through c.
    let answer = deploy(&c, component::VERSION_B).await;
    assert_eq!(answer["version"], 3, "{answer}");
    until_all_serve(&[&a, &b, &c], component::VERSION_B, Duration::from_secs(2)).await;

    // After: the store wants version 3 and every host reports serving it.
    let deadline = Instant::now() + WAIT;
    let after = loop {
        let after = fleet(&a).await;
        if after["converged"] == true {
            break after;
        }
        assert!(Instant::now() < deadline, "never converged: {after:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(after["desired"]["v"]["version"], 3, "{after:#}");
    assert_eq!(
        after["desired"]["v"]["digest"],
        digest_b.as_str(),
        "{after:#}"
    );
    for id in ["host-a", "host-b", "host-c"] {
        let entry = host_entry(&after, id);
        assert_eq!(entry["matches"], true, "{entry}");
        assert_eq!(entry["serving"]["v"]["version"], 3, "{entry}");
        assert_eq!(entry["errors"], serde_json::json!({}), "{entry}");
    }

    // Every host shows the fleet's history: version 1 (the manifest's,
    // recorded when the route entered the store) and 3; 2 was rolled back.
    let route = json_of(admin(&b, reqwest::Method::GET, "/admin/routes/v").await).await;
    let versions: Vec<u64> = route["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [1, 3], "{route:#}");
    let changes: Vec<(String, u64, String)> = route["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["action"].as_str().unwrap().to_owned(),
                c["version"].as_u64().unwrap(),
                c["host"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        [
            ("deploy".to_owned(), 2, "host-a".to_owned()),
            ("rollback".to_owned(), 1, "host-b".to_owned()),
            ("deploy".to_owned(), 3, "host-c".to_owned()),
        ],
        "{route:#}"
    );

    // A delete through one host removes the route from all three.
    let deleted = admin(&a, reqwest::Method::DELETE, "/admin/routes/v").await;
    assert_eq!(deleted.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(2);
    for trellis in [&a, &b, &c] {
        while trellis.get("/v").await.status() != 404 {
            assert!(
                Instant::now() < deadline,
                "{} still serves /v after the delete",
                trellis.url("/v")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_mid_swap_restarts_serving_the_fleets_version_and_history() {
    let schema = PgSchema::create().await;
    let manifest = fleet_manifest(&schema.url());
    let (a, b) = tokio::join!(
        host(manifest.clone(), "host-a"),
        host(manifest.clone(), "host-b")
    );
    let mut b = b;
    // b is killed as the deploy through a lands: it may be mid-swap.
    let deploying = deploy(&a, component::VERSION_B);
    let ((), answer) = tokio::join!(
        async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            b.kill();
        },
        deploying
    );
    assert_eq!(answer["version"], 2, "{answer}");
    assert!(b.wait_exit(WAIT).await.is_some(), "host-b did not die");
    // a's answer stands: it serves version 2.
    assert_eq!(served(&a).await.0, label(component::VERSION_B));

    // While b is down, /admin/fleet soon stops counting it as live.
    let deadline = Instant::now() + WAIT;
    loop {
        let status = fleet(&a).await;
        let entry = host_entry(&status, "host-b");
        if entry["live"] == false {
            assert_eq!(
                status["converged"], true,
                "a dead host does not block convergence: {status:#}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "host-b still live: {status:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Restarted with the manifest's version a, b serves the fleet's b from
    // its very first request, with the fleet's history.
    let b = host(manifest.clone(), "host-b").await;
    assert_eq!(
        served(&b).await.0,
        label(component::VERSION_B),
        "the first request after restart"
    );
    let route = json_of(admin(&b, reqwest::Method::GET, "/admin/routes/v").await).await;
    assert_eq!(route["version"], 2, "{route:#}");
    let versions: Vec<u64> = route["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [1, 2], "{route:#}");
    assert_eq!(route["history"][1]["deployed_by"], "host-a", "{route:#}");
    // A fresh host with a cache of its own has no precompiled copy of
    // version b: it fetched the component from the store by digest and
    // compiled it, before listening.
    let reloaded = b
        .wait_log("the fleet's version loaded", |l| {
            l["message"] == "route reloaded"
        })
        .await;
    assert_eq!(
        (reloaded["version"].as_u64(), reloaded["cache"].as_str()),
        (Some(2), Some("miss")),
        "{reloaded}"
    );
    assert_eq!(reloaded["digest"], sha256_hex(component::VERSION_B));
    let logs = b.logs();
    let position = |message: &str| logs.iter().position(|l| l["message"] == message).unwrap();
    assert!(
        position("route reloaded") < position("listening"),
        "loaded after listening"
    );
    let status = fleet(&a).await;
    assert_eq!(host_entry(&status, "host-b")["live"], true, "{status:#}");

    // Version numbers go on where the fleet left them.
    let answer = deploy(&b, component::VERSION_A).await;
    assert_eq!(answer["version"], 3, "{answer}");
    until_all_serve(&[&a, &b], component::VERSION_A, Duration::from_secs(2)).await;
}

/// Runs `trellis ARGS` with the token in the environment.
async fn cli(args: &[&str]) -> Output {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(args)
        .env("TRELLIS_ADMIN_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(STARTUP_TIMEOUT, child)
        .await
        .expect("trellis finished in time")
        .expect("running trellis")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_wait_returns_when_every_host_serves_it_or_names_the_host_that_cannot() {
    let schema = PgSchema::create().await;
    let manifest = fleet_manifest(&schema.url());
    // Host b has no [upstreams.pay]: it cannot load a version that calls it.
    let with_upstream = manifest
        .clone()
        .section("[upstreams.pay]\nurl = \"http://127.0.0.1:9\"");
    let (a, b) = tokio::join!(host(with_upstream, "host-a"), host(manifest, "host-b"));
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();

    let out = cli(&[
        "deploy",
        "v",
        component::VERSION_B,
        "--admin",
        &a.admin_url(),
        "--wait",
    ])
    .await;
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{}\n{stderr}", text(&out.stdout));
    assert!(
        stderr.contains("2 live host(s) serve v version 2"),
        "{stderr}"
    );
    // --wait returned only once both serve it: no polling needed here.
    assert_eq!(served(&a).await.0, label(component::VERSION_B));
    assert_eq!(served(&b).await.0, label(component::VERSION_B));

    let out = cli(&[
        "deploy",
        "v",
        component::VERSION_A,
        "--admin",
        &a.admin_url(),
        "--set",
        "outbound=pay",
        "--wait",
        "20s",
    ])
    .await;
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("host host-b cannot load v version 3") && stderr.contains("pay"),
        "{stderr}"
    );
    // a took it; b keeps serving the version it had, and says why.
    assert_eq!(served(&a).await.0, label(component::VERSION_A));
    assert_eq!(served(&b).await.0, label(component::VERSION_B));
    let status = fleet(&b).await;
    let entry = host_entry(&status, "host-b");
    assert_eq!(entry["matches"], false, "{status:#}");
    assert_eq!(entry["behind"], serde_json::json!(["v"]), "{status:#}");
    assert_eq!(entry["errors"]["v"]["version"], 3, "{status:#}");
    assert!(
        entry["errors"]["v"]["error"]
            .as_str()
            .unwrap()
            .contains("pay"),
        "{status:#}"
    );
    assert_eq!(status["converged"], false, "{status:#}");

    // A version b can load clears its error.
    let out = cli(&[
        "deploy",
        "v",
        component::VERSION_B,
        "--admin",
        &b.admin_url(),
        "--set",
        "outbound=",
        "--wait",
        "20s",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status = fleet(&a).await;
    assert_eq!(
        host_entry(&status, "host-b")["errors"],
        serde_json::json!({}),
        "{status:#}"
    );
    assert_eq!(status["desired"]["v"]["version"], 4, "{status:#}");

    // Rolling back to 3 takes a back to it; --wait names b again.
    let out = cli(&["rollback", "v", "--admin", &a.admin_url(), "--wait", "20s"]).await;
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["version"], 3, "{answer}");
    assert!(
        stderr.contains("host host-b cannot load v version 3"),
        "{stderr}"
    );
    assert_eq!(served(&b).await.0, label(component::VERSION_B));
}

/// A secret given by reference (`secret.KEY=NAME`) is resolved on each
/// host from its own `TRELLIS_SECRET_NAME`; a host without it reports the
/// version it cannot load and keeps serving; the store never holds a value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_by_reference_resolve_on_each_host_and_settings_reach_all() {
    let schema = PgSchema::create().await;
    let manifest = fleet_manifest(&schema.url());
    let (a, b) = tokio::join!(
        host_with(
            manifest.clone(),
            "host-a",
            &[
                ("TRELLIS_SECRET_E2E_FLEET", "secret-of-a-5c1e"),
                ("TRELLIS_SECRET_E2E_ONLY_A", "only-a-77f0")
            ],
        ),
        host_with(
            manifest,
            "host-b",
            &[("TRELLIS_SECRET_E2E_FLEET", "secret-of-b-0b9d")]
        ),
    );
    let scratch = crate::harness::TempDir::new();
    let body_schema = scratch.write(
        "body.json",
        r#"{"type":"object","required":["steps"],"properties":{"steps":{"type":"array"}}}"#,
    );
    let schema_arg = format!("schema_body=@{}", body_schema.display());
    let admin = a.admin_url();
    let deploy = |settings: &[&str]| {
        let mut args = vec![
            "deploy",
            "probe",
            component::SQL_PROBE,
            "--admin",
            &admin,
            "--wait",
            "20s",
        ];
        for setting in settings {
            args.extend(["--set", setting]);
        }
        let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        async move { cli(&args.iter().map(String::as_str).collect::<Vec<_>>()).await }
    };
    let out = deploy(&[
        "path=/probe",
        "grants=sql,config,log",
        "secret.api=E2E_FLEET",
        &schema_arg,
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let get = serde_json::json!([{ "op": "config_get", "key": "api" }]);
    for (host, want) in [(&a, "secret-of-a-5c1e"), (&b, "secret-of-b-0b9d")] {
        let results = crate::probe::script_at(host, "/probe", get.clone()).await;
        assert_eq!(crate::probe::ok(&results[0]), want, "each host's own");
        // The schema reached b too, from a file only a's client read.
        let refused = crate::probe::post_script(host, "/probe", &serde_json::json!({})).await;
        assert_error(refused, 422, "VALIDATION_FAILED").await;
    }

    // A reference only host a can resolve: b names it and keeps serving.
    let out = deploy(&["secret.api=E2E_ONLY_A"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("host host-b cannot load probe version 2"),
        "{stderr}"
    );
    let status = fleet(&a).await;
    let error = host_entry(&status, "host-b")["errors"]["probe"]["error"].to_string();
    assert!(
        error.contains("TRELLIS_SECRET_E2E_ONLY_A is not set"),
        "{status:#}"
    );
    let results = crate::probe::script_at(&a, "/probe", get.clone()).await;
    assert_eq!(crate::probe::ok(&results[0]), "only-a-77f0");
    let results = crate::probe::script_at(&b, "/probe", get.clone()).await;
    assert_eq!(
        crate::probe::ok(&results[0]),
        "secret-of-b-0b9d",
        "b keeps version 1"
    );

    // What the store holds names the references, never a value.
    let mut conn = schema.connect().await;
    let stored: Vec<(String,)> = sqlx::query_as("SELECT settings FROM trellis_route_versions")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let stored = format!("{stored:?}");
    for value in ["secret-of-a-5c1e", "secret-of-b-0b9d", "only-a-77f0"] {
        assert!(
            !stored.contains(value),
            "{value} is in the deployment store"
        );
    }
    assert!(stored.contains("E2E_ONLY_A"), "the reference is stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_while_the_database_is_down_fails_clearly_and_hosts_keep_serving() {
    let schema = PgSchema::create().await;
    let mut proxy = PgProxy::start().await;
    let trellis = host(fleet_manifest(&proxy.route(&schema.url())), "host-a").await;
    assert_eq!(served(&trellis).await.0, label(component::VERSION_A));

    proxy.cut();
    let response = put(&trellis, "v", "", component::VERSION_B).await;
    let body = assert_error(response, 503, "UPSTREAM_UNAVAILABLE").await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("deployment store") && message.contains("nothing changed"),
        "{message}"
    );
    // Nothing changed, and the host serves on.
    for _ in 0..20 {
        assert_eq!(served(&trellis).await.0, label(component::VERSION_A));
    }
    let rollback = admin(&trellis, reqwest::Method::POST, "/admin/routes/v/rollback").await;
    assert_error(rollback, 503, "UPSTREAM_UNAVAILABLE").await;
    let fleet_down = admin(&trellis, reqwest::Method::GET, "/admin/fleet").await;
    assert_error(fleet_down, 503, "UPSTREAM_UNAVAILABLE").await;

    proxy.restore().await;
    let answer = deploy(&trellis, component::VERSION_B).await;
    assert_eq!(answer["version"], 2, "{answer}");
    assert_eq!(served(&trellis).await.0, label(component::VERSION_B));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deploys_through_two_hosts_are_serialized() {
    let schema = PgSchema::create().await;
    let manifest = fleet_manifest(&schema.url());
    let (a, b) = tokio::join!(host(manifest.clone(), "host-a"), host(manifest, "host-b"));
    let mut deploys = Vec::new();
    for i in 0..6 {
        let (trellis, file) = match i % 2 {
            0 => (&a, component::VERSION_B),
            _ => (&b, component::VERSION_A),
        };
        deploys.push(put(trellis, "v", "", file));
    }
    let answers = futures::future::join_all(deploys).await;
    let mut versions = Vec::new();
    for response in answers {
        assert_eq!(response.status(), 200, "every operator gets an answer");
        versions.push(json_of(response).await["version"].as_u64().unwrap());
    }
    versions.sort_unstable();
    assert_eq!(versions, [2, 3, 4, 5, 6, 7], "no version number twice");

    let route = json_of(admin(&a, reqwest::Method::GET, "/admin/routes/v").await).await;
    let deploys = route["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] == "deploy")
        .count();
    assert_eq!(deploys, 6, "{route:#}");
    // Both hosts end on the last version.
    let deadline = Instant::now() + WAIT;
    loop {
        let status = fleet(&a).await;
        if status["converged"] == true {
            assert_eq!(status["desired"]["v"]["version"], 7, "{status:#}");
            break;
        }
        assert!(Instant::now() < deadline, "never converged: {status:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (la, lb) = (served(&a).await.0, served(&b).await.0);
    assert_eq!(la, lb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_one_host_keeps_its_history_across_a_restart() {
    let db = Db::sqlite();
    let manifest = fleet_manifest(&db.url());
    let trellis = host(manifest.clone(), "solo").await;
    assert_eq!(deploy(&trellis, component::VERSION_B).await["version"], 2);
    let back = admin(&trellis, reqwest::Method::POST, "/admin/routes/v/rollback").await;
    let back = json_of(back).await;
    assert_eq!(back["version"], 1, "{back:#}");
    assert_eq!(deploy(&trellis, component::VERSION_B).await["version"], 3);
    drop(trellis);

    let trellis = host(manifest, "solo").await;
    assert_eq!(
        served(&trellis).await.0,
        label(component::VERSION_B),
        "the first request after restart"
    );
    let route = json_of(admin(&trellis, reqwest::Method::GET, "/admin/routes/v").await).await;
    assert_eq!(route["version"], 3, "{route:#}");
    let versions: Vec<u64> = route["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [1, 3], "{route:#}");
    assert_eq!(route["changes"].as_array().unwrap().len(), 3, "{route:#}");
    // Rollback after the restart goes back to the manifest's version.
    let back = admin(&trellis, reqwest::Method::POST, "/admin/routes/v/rollback").await;
    assert_eq!(json_of(back).await["version"], 1);
    assert_eq!(served(&trellis).await.0, label(component::VERSION_A));
    assert_eq!(deploy(&trellis, component::VERSION_B).await["version"], 4);
    let status = fleet(&trellis).await;
    assert_eq!(status["hosts"].as_array().unwrap().len(), 1, "{status:#}");
    assert_eq!(
        host_entry(&status, "solo")["serving"]["v"]["version"],
        4,
        "{status:#}"
    );
}

/// Waits until the store holds exactly `want` components.
async fn until_components(db: &Db, want: i64) {
    wait_until(
        &format!("the store never held {want} component(s)"),
        Duration::from_millis(50),
        async || {
            let n = db.scalar("SELECT COUNT(*) FROM trellis_components").await;
            (n == want).then_some(())
        },
    )
    .await;
}

/// A component no version in any rollback history names leaves the store
/// after the change that retired it; deploying it again stores it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_no_version_uses_leave_the_store() {
    let db = Db::postgres().await;
    let trellis = host(fleet_manifest(&db.url()), "gc").await;
    let b = sha256_hex(component::VERSION_B);
    let stored_b = format!("SELECT COUNT(*) FROM trellis_components WHERE digest = '{b}'");
    assert_eq!(deploy(&trellis, component::VERSION_B).await["version"], 2);
    until_components(&db, 2).await;

    // Rolling back retires version 2, the only one naming b.
    let back = admin(&trellis, reqwest::Method::POST, "/admin/routes/v/rollback").await;
    assert_eq!(json_of(back).await["version"], 1);
    until_components(&db, 1).await;
    assert_eq!(db.scalar(&stored_b).await, 0);
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM trellis_route_versions WHERE retired = 1")
            .await,
        0
    );
    assert_eq!(served(&trellis).await.0, label(component::VERSION_A));

    // b comes back with the next deploy, and serves.
    assert_eq!(deploy(&trellis, component::VERSION_B).await["version"], 3);
    assert_eq!(db.scalar(&stored_b).await, 1);
    assert_eq!(served(&trellis).await.0, label(component::VERSION_B));

    // Deleting the route leaves nothing stored.
    let removed = admin(&trellis, reqwest::Method::DELETE, "/admin/routes/v").await;
    assert_eq!(removed.status(), 200);
    until_components(&db, 0).await;
}

#[tokio::test]
async fn a_host_that_does_not_share_deployments_says_so() {
    let trellis = Trellis::launch(Launch {
        admin_token: Some(TOKEN.to_owned()),
        ..Launch::manifest(Manifest::new().route("v", "/v", component::VERSION_A, &[]))
    })
    .await;
    let response = admin(&trellis, reqwest::Method::GET, "/admin/fleet").await;
    let body = assert_error(response, 409, "CONFLICT").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("[deployments] shared"),
        "{body}"
    );
}
