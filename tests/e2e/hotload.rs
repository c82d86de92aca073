//! Hot load through the admin API and watch mode: swaps under load drop no
//! request and never mix versions, failed loads change nothing, rollback,
//! removal, the token, and the `deploy`/`rollback` CLI.

use std::process::{Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{
    Launch, Manifest, STARTUP_TIMEOUT, TempDir, Trellis, WAIT, assert_error, component, header,
    sha256_hex, wait_until_busy,
};

const TOKEN: &str = "test-admin-token-0123456789";

/// A host serving `manifest` with the admin API on.
async fn start_admin(manifest: Manifest) -> Trellis {
    Trellis::launch(Launch {
        admin_token: Some(TOKEN.to_owned()),
        ..Launch::manifest(manifest)
    })
    .await
}

fn one_route(component: &str) -> Manifest {
    Manifest::new().route("v", "/v", component, &[])
}

/// `PUT /admin/routes/{name}?query` with the file at `component` as body.
async fn put(trellis: &Trellis, name: &str, query: &str, body: Vec<u8>) -> reqwest::Response {
    trellis.put_route(name, query, body).await
}

async fn put_file(trellis: &Trellis, name: &str, query: &str, component: &str) -> Value {
    let bytes = std::fs::read(component).unwrap();
    let response = put(trellis, name, query, bytes).await;
    let status = response.status();
    let body = response.text().await.unwrap();
    assert!(status.is_success(), "PUT {name} answered {status}: {body}");
    serde_json::from_str(&body).unwrap()
}

async fn json_of(response: reqwest::Response) -> Value {
    let text = response.text().await.expect("reading a JSON body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
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

/// The version letter the body names, checked against the digest header:
/// the component that wrote the body is the one the header names.
fn version_of(header_value: &str, body: &str, a: &str, b: &str) -> Result<char, String> {
    let expected = match body {
        "version a\n" => ('a', a),
        "version b\n" => ('b', b),
        other => return Err(format!("unexpected body {other:?}")),
    };
    if header_value != format!("v@{}", &expected.1[..12]) {
        return Err(format!(
            "body says version {} but x-trellis-component is {header_value}",
            expected.0
        ));
    }
    Ok(expected.0)
}

async fn body_of(trellis: &Trellis, path: &str) -> (u16, String, String) {
    let response = trellis.get(path).await;
    let status = response.status().as_u16();
    let label = response
        .headers()
        .get("x-trellis-component")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, label, response.text().await.unwrap())
}

#[tokio::test]
async fn swaps_under_load_drop_nothing_and_never_mix_versions() {
    let trellis = Arc::new(start_admin(one_route(component::VERSION_A)).await);
    let (a, b) = (
        sha256_hex(component::VERSION_A),
        sha256_hex(component::VERSION_B),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..16 {
        let (trellis, stop, a, b) = (trellis.clone(), stop.clone(), a.clone(), b.clone());
        clients.push(tokio::spawn(async move {
            // Each task has its own client, hence its own connections.
            let client = crate::harness::client_builder().build().unwrap();
            let (mut seen_a, mut seen_b, mut failures) = (0u32, 0u32, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let outcome = async {
                    let response = client
                        .get(trellis.url("/v"))
                        .send()
                        .await
                        .map_err(|e| format!("request failed: {e}"))?;
                    let status = response.status();
                    let label = header(response.headers(), "x-trellis-component");
                    let body = response
                        .text()
                        .await
                        .map_err(|e| format!("body failed: {e}"))?;
                    if status != 200 {
                        return Err(format!("status {status}: {body}"));
                    }
                    version_of(&label, &body, &a, &b)
                }
                .await;
                match outcome {
                    Ok('a') => seen_a += 1,
                    Ok(_) => seen_b += 1,
                    Err(e) => failures.push(e),
                }
            }
            (seen_a, seen_b, failures)
        }));
    }

    // 20 swaps, alternating b, a, b, ...; each answer names the new version,
    // and the very next request is served by it.
    for i in 0..20u64 {
        let (file, letter) = if i % 2 == 0 {
            (component::VERSION_B, 'b')
        } else {
            (component::VERSION_A, 'a')
        };
        let answer = put_file(&trellis, "v", "", file).await;
        assert_eq!(answer["version"], i + 2, "{answer}");
        assert_eq!(answer["digest"], sha256_hex(file), "{answer}");
        let (status, label, body) = body_of(&trellis, "/v").await;
        assert_eq!(status, 200);
        assert_eq!(
            version_of(&label, &body, &a, &b),
            Ok(letter),
            "after swap {i}"
        );
        // Let the load run on this version for a moment.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The last swap installed a; rollback returns to b.
    let back = admin(&trellis, reqwest::Method::POST, "/admin/routes/v/rollback").await;
    assert_eq!(back.status(), 200);
    let back = json_of(back).await;
    assert_eq!(back["digest"], b, "{back}");
    assert_eq!(back["version"], 20, "{back}");
    let (_, label, body) = body_of(&trellis, "/v").await;
    assert_eq!(version_of(&label, &body, &a, &b), Ok('b'));
    tokio::time::sleep(Duration::from_millis(200)).await;

    stop.store(true, Ordering::Relaxed);
    let (mut total_a, mut total_b) = (0, 0);
    for client in clients {
        let (seen_a, seen_b, failures) = tokio::time::timeout(WAIT, client)
            .await
            .expect("clients stop")
            .unwrap();
        assert!(failures.is_empty(), "failed requests: {failures:?}");
        total_a += seen_a;
        total_b += seen_b;
    }
    assert!(
        total_a >= 20 && total_b >= 20,
        "load too thin to mean anything: {total_a} a, {total_b} b"
    );
}

#[tokio::test]
async fn requests_in_flight_finish_on_the_old_version_and_rollback_restores_it() {
    let manifest = Manifest::new().route(
        "v",
        "/v",
        component::SLOW,
        &[
            r#"timeout = "30s""#,
            "max_concurrency = 1",
            r#"queue_timeout = "200ms""#,
        ],
    );
    let trellis = start_admin(manifest).await;
    let slow = sha256_hex(component::SLOW);
    let in_flight = tokio::spawn(trellis.client().get(trellis.url("/v?ms=1500")).send());
    wait_until_busy(&trellis, "v", "/v?ms=0").await;

    // New limits, so version 2 gets its own slot rather than queueing
    // behind the request in flight.
    let answer = put_file(&trellis, "v", "?max_concurrency=8", component::VERSION_A).await;
    assert_eq!(answer["version"], 2);
    assert_eq!(answer["history"].as_array().unwrap().len(), 2, "{answer}");
    let (status, _, body) = body_of(&trellis, "/v").await;
    assert_eq!((status, body.as_str()), (200, "version a\n"));

    // The request log says which version served each request.
    let probe = trellis
        .client()
        .get(trellis.url("/v"))
        .header("x-request-id", "after-swap")
        .send()
        .await
        .unwrap();
    assert_eq!(probe.status(), 200);
    let log = trellis.request_log("after-swap").await;
    assert_eq!(log["version"], 2, "{log}");
    assert_eq!(log["component"], sha256_hex(component::VERSION_A), "{log}");

    let old = in_flight
        .await
        .unwrap()
        .expect("the request in flight is answered");
    assert_eq!(old.status(), 200);
    assert_eq!(
        header(old.headers(), "x-trellis-component"),
        format!("v@{}", &slow[..12])
    );
    assert_eq!(old.text().await.unwrap(), "slept 1500\n");

    // GET /admin/routes: what serves, from when, with which settings.
    let list = json_of(admin(&trellis, reqwest::Method::GET, "/admin/routes").await).await;
    let route = &list["routes"][0];
    assert_eq!(route["name"], "v", "{list}");
    assert_eq!(route["path"], "/v");
    assert_eq!(route["version"], 2);
    assert_eq!(route["digest"], sha256_hex(component::VERSION_A));
    assert_eq!(route["limits"]["timeout"], "30s", "{route}");
    assert!(
        route["loaded_at"].as_str().unwrap().ends_with('Z'),
        "{route}"
    );
    assert!(route["grants"].as_array().unwrap().is_empty());

    let back = admin(&trellis, reqwest::Method::POST, "/admin/routes/v/rollback").await;
    assert_eq!(back.status(), 200);
    let back = json_of(back).await;
    assert_eq!(
        (back["version"].as_u64(), back["digest"].as_str()),
        (Some(1), Some(slow.as_str()))
    );
    let (status, label, body) = body_of(&trellis, "/v?ms=0").await;
    assert_eq!((status, body.as_str()), (200, "slept 0\n"));
    assert_eq!(label, format!("v@{}", &slow[..12]));

    // Nothing earlier than version 1.
    let none = admin(&trellis, reqwest::Method::POST, "/admin/routes/v/rollback").await;
    assert_error(none, 409, "CONFLICT").await;
    let missing = admin(
        &trellis,
        reqwest::Method::POST,
        "/admin/routes/nope/rollback",
    )
    .await;
    assert_error(missing, 404, "NOT_FOUND").await;
}

/// A minimal component binary (no imports, no exports).
const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

/// Version a, importing `wasi:cli/environmenz` (which the host does not
/// provide) instead of `wasi:cli/environment`: a same-length rename of
/// every occurrence keeps the binary valid and self-consistent.
fn importing_unknown() -> Vec<u8> {
    let mut bytes = std::fs::read(component::VERSION_A).unwrap();
    let (from, to) = (b"wasi:cli/environment", b"wasi:cli/environmenz");
    let mut renamed = 0;
    let mut i = 0;
    while i + from.len() <= bytes.len() {
        if &bytes[i..i + from.len()] == from {
            bytes[i..i + from.len()].copy_from_slice(to);
            renamed += 1;
        }
        i += 1;
    }
    assert!(
        renamed > 0,
        "version a no longer imports wasi:cli/environment"
    );
    bytes
}

#[tokio::test]
async fn broken_uploads_are_refused_with_the_reason_and_change_nothing() {
    let manifest = one_route(component::VERSION_A).server(r#"max_component_size = "1MiB""#);
    let trellis = start_admin(manifest).await;
    let noise: Vec<u8> = (0..50_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("random bytes", noise, "compiling component"),
        (
            "a component without the handler export",
            EMPTY_COMPONENT.to_vec(),
            "incoming-handler",
        ),
        (
            "a component importing an unknown interface",
            importing_unknown(),
            "wasi:cli/environmenz",
        ),
        ("an empty body", Vec::new(), "component"),
    ];
    for (what, bytes, reason) in cases {
        let response = put(&trellis, "v", "", bytes).await;
        let body = assert_error(response, 422, "VALIDATION_FAILED").await;
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(reason), "{what}: {message}");
        let (status, _, served) = body_of(&trellis, "/v").await;
        assert_eq!(
            (status, served.as_str()),
            (200, "version a\n"),
            "after {what}"
        );
    }
    // Settings are validated like the manifest's, before any compiling.
    let bytes = std::fs::read(component::VERSION_B).unwrap();
    for (query, reason) in [
        ("?timeout=2x", "timeout"),
        // Bounded per field (at most 1h for a route's timeout), never
        // accepted and left to overflow a timer.
        ("?timeout=99999999999999h", "timeout"),
        ("?timeout=2h", "timeout"),
        ("?queue_timeout=11m", "queue_timeout"),
        ("?path=/health/x", "/health"),
        ("?memory=1KiB", "memory"),
        ("?grants=disk", "disk"),
        ("?bogus=1", "bogus"),
    ] {
        let response = put(&trellis, "v", query, bytes.clone()).await;
        let body = assert_error(response, 422, "VALIDATION_FAILED").await;
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(reason), "{query}: {message}");
    }
    // Instantiation under the route's limits is part of validation: version b
    // needs more than 1 MiB of linear memory when it starts.
    let response = put(&trellis, "v", "?memory=1MiB", bytes.clone()).await;
    let body = assert_error(response, 422, "VALIDATION_FAILED").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("test instantiation"),
        "{body}"
    );
    // Over `max_component_size`.
    let response = put(&trellis, "v", "", vec![0; 2 << 20]).await;
    assert_error(response, 413, "PAYLOAD_TOO_LARGE").await;

    let list = json_of(admin(&trellis, reqwest::Method::GET, "/admin/routes").await).await;
    assert_eq!(list["routes"][0]["version"], 1, "{list}");
    assert_eq!(
        list["routes"][0]["digest"],
        sha256_hex(component::VERSION_A)
    );
    trellis
        .wait_log("a refused change", |l| {
            l["message"] == "admin change refused; routes unchanged"
                && l["cause"]
                    .as_str()
                    .is_some_and(|c| c.contains("environmenz"))
        })
        .await;
}

#[tokio::test]
async fn new_routes_are_served_and_deleted_ones_are_gone() {
    let trellis = start_admin(one_route(component::VERSION_A)).await;
    let bytes = std::fs::read(component::VERSION_B).unwrap();

    let response = put(&trellis, "fresh", "", bytes.clone()).await;
    let body = assert_error(response, 422, "VALIDATION_FAILED").await;
    assert!(body["error"]["message"].as_str().unwrap().contains("path"));
    let response = put(&trellis, "fresh", "?path=/v", bytes.clone()).await;
    let body = assert_error(response, 422, "VALIDATION_FAILED").await;
    assert!(
        body["error"]["message"].as_str().unwrap().contains("/v"),
        "{body}"
    );

    let response = put(
        &trellis,
        "fresh",
        "?path=/fresh/%7Bid%7D&methods=GET&timeout=2s",
        bytes,
    )
    .await;
    assert_eq!(response.status(), 201);
    let created = json_of(response).await;
    assert_eq!(created["version"], 1, "{created}");
    assert_eq!(created["methods"], serde_json::json!(["GET"]));
    let (status, _, body) = body_of(&trellis, "/fresh/1").await;
    assert_eq!((status, body.as_str()), (200, "version b\n"));
    let post = trellis
        .client()
        .post(trellis.url("/fresh/1"))
        .send()
        .await
        .unwrap();
    assert_error(post, 405, "METHOD_NOT_ALLOWED").await;

    // A replace keeps the settings it is not given.
    let answer = put_file(&trellis, "fresh", "", component::VERSION_A).await;
    assert_eq!(answer["path"], "/fresh/{id}");
    assert_eq!(answer["limits"]["timeout"], "2s");

    let deleted = admin(&trellis, reqwest::Method::DELETE, "/admin/routes/fresh").await;
    assert_eq!(deleted.status(), 200);
    assert_error(trellis.get("/fresh/1").await, 404, "NOT_FOUND").await;
    let again = admin(&trellis, reqwest::Method::DELETE, "/admin/routes/fresh").await;
    assert_error(again, 404, "NOT_FOUND").await;
    // The other route is untouched.
    let (status, _, body) = body_of(&trellis, "/v").await;
    assert_eq!((status, body.as_str()), (200, "version a\n"));
}

/// What a manifest sets beyond the basics, an admin `PUT` sets too: the
/// response cache, variables, the rate limit and auth policies (naming
/// the host's own), each checked as the manifest checks it, and kept by
/// later versions until changed.
#[tokio::test]
async fn admin_deploys_set_the_cache_config_rate_limit_and_auth() {
    let key = "admin-set-key-0123456789abcdef";
    let manifest = one_route(component::VERSION_A)
        .section("[rate_limits.two]\nrequests = 2\nwindow = \"60s\"")
        .section("[rate_limits.per_user]\nrequests = 9\nwindow = \"60s\"\nkey = \"subject\"")
        .section(
            "[auth.keys]\ntype = \"api-key\"\nheader = \"x-key\"\nkeys = { env = \"TRELLIS_E2E_ADMIN_KEYS\" }",
        );
    let trellis = Trellis::launch(Launch {
        admin_token: Some(TOKEN.to_owned()),
        env: vec![("TRELLIS_E2E_ADMIN_KEYS".to_owned(), key.to_owned())],
        ..Launch::manifest(manifest)
    })
    .await;
    let get = |with_key: bool| {
        let request = trellis.client().get(trellis.url("/now"));
        let request = if with_key {
            request.header("x-key", key)
        } else {
            request
        };
        async move { request.send().await.unwrap() }
    };
    let cached = |response: &reqwest::Response| {
        response
            .headers()
            .get("x-trellis-cache")
            .map(|v| v.to_str().unwrap().to_owned())
    };

    let created = put_file(
        &trellis,
        "now",
        "?path=/now&grants=cache,log&cache_ttl=30s&cache_vary=accept-language&config.GREETING=hi",
        component::CACHE_PROBE,
    )
    .await;
    assert_eq!(created["response_cache"]["ttl"], "30s", "{created}");
    assert_eq!(
        created["response_cache"]["vary"],
        serde_json::json!(["accept-language"])
    );
    assert_eq!(created["config"]["GREETING"], "hi", "{created}");
    let first = get(false).await;
    assert_eq!(cached(&first).as_deref(), Some("miss"));
    let first = first.text().await.unwrap();
    let second = get(false).await;
    assert_eq!(cached(&second).as_deref(), Some("hit"));
    assert_eq!(second.text().await.unwrap(), first, "served from the cache");

    // Policies must be the host's own, and combine as in a manifest.
    let bytes = std::fs::read(component::CACHE_PROBE).unwrap();
    for (query, reason) in [
        (
            "?rate_limit=nope",
            "no policy \"nope\" in this host's [rate_limits]",
        ),
        ("?auth=nope", "no policy \"nope\" in this host's [auth]"),
        (
            "?auth=keys&scopes=read",
            "scopes need `auth` naming a jwt policy",
        ),
        ("?scopes=a%20b", "is not a scope"),
        ("?rate_limit=per_user", "counts by subject"),
        ("?cache_ttl=8d", "cache_ttl"),
        ("?cache_vary=bad%20header", "cache_vary"),
        ("?config.bad%20key=1", "config.bad key"),
    ] {
        let response = put(&trellis, "now", query, bytes.clone()).await;
        let body = assert_error(response, 422, "VALIDATION_FAILED").await;
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(reason), "{query}: {message}");
    }

    // A new version with a rate limit and auth keeps the cache and config.
    let guarded = put_file(
        &trellis,
        "now",
        "?rate_limit=two&auth=keys",
        component::CACHE_PROBE,
    )
    .await;
    assert_eq!(
        (guarded["rate_limit"].as_str(), guarded["auth"].as_str()),
        (Some("two"), Some("keys"))
    );
    assert_eq!(guarded["response_cache"]["ttl"], "30s", "{guarded}");
    assert_eq!(guarded["config"]["GREETING"], "hi", "{guarded}");
    assert_error(get(false).await, 401, "UNAUTHORIZED").await;
    assert_eq!(get(true).await.status(), 200);
    assert_error(get(true).await, 429, "RATE_LIMITED").await;

    // Empty values take them off again.
    let open = put_file(
        &trellis,
        "now",
        "?rate_limit=&auth=&cache_ttl=0",
        component::CACHE_PROBE,
    )
    .await;
    assert_eq!(open["response_cache"], Value::Null, "{open}");
    for _ in 0..3 {
        let response = get(false).await;
        assert_eq!(response.status(), 200);
        assert_eq!(cached(&response), None, "no response cache");
    }
}

/// A query string of `params`, percent-encoded (JSON documents included).
fn query_of(params: &[(&str, &str)]) -> String {
    let url = reqwest::Url::parse_with_params("http://query/", params).unwrap();
    format!("?{}", url.query().unwrap_or_default())
}

#[tokio::test]
async fn admin_deploys_set_secrets_by_reference_schemas_and_cors() {
    const SECRET: &str = "payments-secret-7d2e91";
    const GLOBAL: &str = "https://app.example.com";
    const LOCAL: &str = "http://localhost:3000";
    let manifest =
        one_route(component::VERSION_A).section(&format!("[cors]\nallow_origins = [{GLOBAL:?}]"));
    let trellis = Trellis::launch(Launch {
        admin_token: Some(TOKEN.to_owned()),
        env: vec![("TRELLIS_SECRET_E2E_PAYMENTS".to_owned(), SECRET.to_owned())],
        ..Launch::manifest(manifest)
    })
    .await;
    let probe = std::fs::read(component::SQL_PROBE).unwrap();
    let deploy = |params: Vec<(&'static str, &'static str)>| {
        let (trellis, probe) = (&trellis, probe.clone());
        async move { put(trellis, "probe", &query_of(&params), probe).await }
    };
    let allowed = |origin: &'static str| {
        let trellis = &trellis;
        async move {
            let response = trellis
                .client()
                .request(reqwest::Method::OPTIONS, trellis.url("/probe"))
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .send()
                .await
                .unwrap();
            response
                .headers()
                .get("access-control-allow-origin")
                .is_some_and(|v| v == origin)
        }
    };
    let body_schema =
        r#"{"type":"object","required":["steps"],"properties":{"steps":{"type":"array"}}}"#;
    let get = |key: &str| serde_json::json!({ "op": "config_get", "key": key });

    let response = deploy(vec![
        ("path", "/probe"),
        ("grants", "sql,config,log"),
        ("secret.api", "E2E_PAYMENTS"),
        ("config.color", "red"),
        ("schema_body", body_schema),
    ])
    .await;
    assert_eq!(response.status(), 201);
    let created = json_of(response).await;
    assert!(!created.to_string().contains(SECRET), "{created}");
    assert_eq!(created["secrets"], serde_json::json!(["api"]), "{created}");
    assert_eq!(created["config"], serde_json::json!({"color": "red"}));
    assert_eq!(created["schema"]["body"]["required"][0], "steps");
    assert_eq!(
        created["cors"]["allow_origins"][0], GLOBAL,
        "a new route follows [cors]"
    );
    let results = crate::probe::script_at(
        &trellis,
        "/probe",
        serde_json::json!([get("api"), get("color")]),
    )
    .await;
    assert_eq!(
        crate::probe::ok(&results[0]),
        SECRET,
        "resolved from this host's environment"
    );
    assert_eq!(crate::probe::ok(&results[1]), "red");
    let refused =
        crate::probe::post_script(&trellis, "/probe", &serde_json::json!({"not": "steps"})).await;
    let refused = assert_error(refused, 422, "VALIDATION_FAILED").await;
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("array"),
        "{refused}"
    );
    assert!(allowed(GLOBAL).await && !allowed(LOCAL).await);

    // The route's own CORS rules replace the host's.
    let own = deploy(vec![(
        "cors",
        r#"{"allow_origins":["http://localhost:3000"],"max_age":"10m"}"#,
    )])
    .await;
    let own = json_of(own).await;
    assert_eq!(own["cors"]["max_age"], "600s", "{own}");
    assert_eq!(
        own["secrets"],
        serde_json::json!(["api"]),
        "kept from the last version"
    );
    assert!(allowed(LOCAL).await && !allowed(GLOBAL).await);

    // Refused as the manifest refuses them, naming the parameter; the
    // route keeps serving what it had.
    for (param, value, reason) in [
        (
            "secret.api",
            "E2E_NOT_SET_ANYWHERE",
            "TRELLIS_SECRET_E2E_NOT_SET_ANYWHERE is not set",
        ),
        ("secret.api", "lower", "A-Z, 0-9 and _"),
        ("config.api", "plain", "secret.api="),
        ("schema_body", r#"{"type":"#, "not JSON"),
        (
            "schema_query",
            r#"{"properties":{"n":{"type":"integer"}}}"#,
            "no query value has",
        ),
        (
            "cors",
            r#"{"allow_origins":["*"],"allow_credentials":true}"#,
            "allow_credentials",
        ),
    ] {
        let body = assert_error(deploy(vec![(param, value)]).await, 422, "VALIDATION_FAILED").await;
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("query parameter {param}")) && message.contains(reason),
            "{param}={value}: {message}"
        );
    }
    assert!(allowed(LOCAL).await);

    // Empty values take them off: the secret, the schema, the route's own
    // CORS (back to the host's).
    let open =
        json_of(deploy(vec![("secret.api", ""), ("schema_body", ""), ("cors", "")]).await).await;
    assert_eq!(
        (&open["secrets"], &open["schema"]),
        (&serde_json::json!([]), &Value::Null),
        "{open}"
    );
    let results = crate::probe::script_at(
        &trellis,
        "/probe",
        serde_json::json!([get("api"), get("color")]),
    )
    .await;
    assert_eq!(crate::probe::ok(&results[0]), &Value::Null);
    assert_eq!(crate::probe::ok(&results[1]), "red");
    let unchecked =
        crate::probe::post_script(&trellis, "/probe", &serde_json::json!({"not": "steps"})).await;
    let unchecked = unchecked.text().await.unwrap();
    assert!(
        unchecked.contains("`steps` must be an array"),
        "the probe itself answers: {unchecked}"
    );
    assert!(allowed(GLOBAL).await && !allowed(LOCAL).await);

    let logs = serde_json::to_string(&trellis.logs()).unwrap();
    assert!(
        !logs.contains(SECRET) && !trellis.stderr().contains(SECRET),
        "the secret was logged"
    );
}

#[tokio::test]
async fn the_admin_api_needs_the_token() {
    let trellis = start_admin(one_route(component::VERSION_A)).await;
    let url = format!("{}/admin/routes", trellis.admin_url());
    let client = trellis.client();
    let missing = client.get(&url).send().await.unwrap();
    assert_eq!(
        header(missing.headers(), "www-authenticate"),
        r#"Bearer realm="trellis-admin""#
    );
    assert_error(missing, 401, "UNAUTHORIZED").await;
    let same_length = "x".repeat(TOKEN.len());
    for wrong in [same_length.as_str(), "short", &format!("{TOKEN}x")] {
        let response = client.get(&url).bearer_auth(wrong).send().await.unwrap();
        assert_error(response, 401, "UNAUTHORIZED").await;
    }
    // Also for changes: a wrong token deploys nothing.
    let response = client
        .put(format!("{}/admin/routes/v", trellis.admin_url()))
        .bearer_auth("short")
        .body(std::fs::read(component::VERSION_B).unwrap())
        .send()
        .await
        .unwrap();
    assert_error(response, 401, "UNAUTHORIZED").await;
    let ok = client.get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let (_, _, body) = body_of(&trellis, "/v").await;
    assert_eq!(body, "version a\n");
}

#[tokio::test]
async fn without_a_token_the_admin_api_is_off() {
    let trellis = Trellis::launch(Launch {
        args: vec!["--admin-listen".into(), "127.0.0.1:0".into()],
        ..Launch::manifest(one_route(component::VERSION_A))
    })
    .await;
    let off = trellis
        .wait_log("admin API off", |l| l["message"] == "admin API off")
        .await;
    assert!(
        off["reason"]
            .as_str()
            .unwrap()
            .contains("TRELLIS_ADMIN_TOKEN"),
        "{off}"
    );
    assert!(trellis.admin.is_none());
    assert!(
        !trellis
            .logs()
            .iter()
            .any(|l| l["message"] == "admin listening"),
        "admin API listening without a token"
    );
}

/// Polls `GET path` until its body is `want`, failing after `WAIT`.
async fn eventually_serves(trellis: &Trellis, path: &str, want: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, _, body) = body_of(trellis, path).await;
        if status == 200 && body == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path} still answers {status} {body:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn watch_mode_reloads_what_changed_and_ignores_a_broken_manifest() {
    let files = TempDir::new();
    let comp = files.path().join("v.wasm");
    std::fs::copy(component::VERSION_A, &comp).unwrap();
    let comp = comp.to_str().unwrap().to_owned();
    let manifest = one_route(&comp);
    let trellis = Trellis::launch(Launch {
        args: vec!["--watch".into()],
        ..Launch::manifest(manifest.clone())
    })
    .await;
    trellis
        .wait_log("watching", |l| l["message"] == "watching for changes")
        .await;
    eventually_serves(&trellis, "/v", "version a\n").await;

    // A rebuilt component file.
    std::fs::copy(component::VERSION_B, &comp).unwrap();
    eventually_serves(&trellis, "/v", "version b\n").await;
    let reloaded = trellis
        .wait_log("route reloaded", |l| l["message"] == "route reloaded")
        .await;
    assert_eq!(reloaded["route"], "v");
    assert_eq!(reloaded["version"], 2);
    assert_eq!(reloaded["digest"], sha256_hex(component::VERSION_B));

    // A broken manifest changes nothing.
    let path = trellis.manifest_path();
    std::fs::write(&path, "[[route]]\npath = \"/v\"\ncomponent = \n").unwrap();
    trellis
        .wait_log("manifest reload failed", |l| {
            l["message"] == "manifest reload failed; routes unchanged"
        })
        .await;
    let (status, _, body) = body_of(&trellis, "/v").await;
    assert_eq!((status, body.as_str()), (200, "version b\n"));

    // A valid edit: a new route is added, and removing it again works.
    let more = manifest.clone().route("w", "/w", component::VERSION_A, &[]);
    std::fs::write(&path, more.render()).unwrap();
    eventually_serves(&trellis, "/w", "version a\n").await;
    let (_, _, body) = body_of(&trellis, "/v").await;
    assert_eq!(body, "version b\n");
    assert!(
        !trellis
            .logs()
            .iter()
            .any(|l| l["message"] == "route reloaded" && l["route"] == "v" && l["version"] == 3),
        "the unchanged route was reloaded"
    );
    std::fs::write(&path, manifest.render()).unwrap();
    let deadline = Instant::now() + WAIT;
    while trellis.get("/w").await.status() != 404 {
        assert!(
            Instant::now() < deadline,
            "/w still served after its removal"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A broken component file is refused; the route keeps serving.
    std::fs::write(&comp, b"not a component").unwrap();
    trellis
        .wait_log("route reload failed", |l| {
            l["message"] == "route reload failed; the previous version keeps serving"
        })
        .await;
    let (status, _, body) = body_of(&trellis, "/v").await;
    assert_eq!((status, body.as_str()), (200, "version b\n"));
}

/// Runs `trellis ARGS` with `token` in the environment.
async fn cli(args: &[&str], token: Option<&str>) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_trellis"));
    cmd.args(args)
        .env_remove("TRELLIS_ADMIN_TOKEN")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(token) = token {
        cmd.env("TRELLIS_ADMIN_TOKEN", token);
    }
    tokio::time::timeout(STARTUP_TIMEOUT, cmd.output())
        .await
        .expect("trellis finished in time")
        .expect("running trellis")
}

#[tokio::test]
async fn cli_deploy_and_rollback_against_a_live_host() {
    let trellis = start_admin(one_route(component::VERSION_A)).await;
    let admin_url = trellis.admin_url();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();

    let out = cli(
        &["deploy", "v", component::VERSION_B, "--admin", &admin_url],
        Some(TOKEN),
    )
    .await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "deploy failed: {stdout}\n{stderr}");
    let answer: Value = serde_json::from_str(&stdout).expect("deploy prints the host's JSON");
    assert_eq!(answer["version"], 2);
    assert_eq!(answer["digest"], sha256_hex(component::VERSION_B));
    assert!(stderr.contains("uploading"), "{stderr}");
    assert!(stderr.contains("uploaded 0.1 MiB / 0.1 MiB"), "{stderr}");
    assert!(stderr.contains("compiling"), "{stderr}");
    eventually_serves(&trellis, "/v", "version b\n").await;

    // A new route, with its path and settings from flags; token from --token.
    let out = cli(
        &[
            "deploy",
            "big",
            component::BIG_BLOB,
            "--admin",
            &admin_url,
            "--token",
            TOKEN,
            "--path",
            "/big",
            "--set",
            "methods=GET",
            "--set",
            "timeout=5s",
        ],
        None,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("/ 4.1 MiB"),
        "{}",
        text(&out.stderr)
    );
    eventually_serves(&trellis, "/big", "big-blob 4194304 11760\n").await;

    let out = cli(&["rollback", "v", "--admin", &admin_url], Some(TOKEN)).await;
    assert!(
        out.status.success(),
        "rollback failed: {}",
        text(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["version"], 1);
    eventually_serves(&trellis, "/v", "version a\n").await;

    // Failures exit non-zero and say why.
    let out = cli(&["rollback", "v", "--admin", &admin_url], Some("wrong")).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stdout).contains("UNAUTHORIZED"),
        "{}",
        text(&out.stdout)
    );
    assert!(text(&out.stderr).contains("401"), "{}", text(&out.stderr));
    let junk = TempDir::new();
    let junk = junk.write("junk.wasm", "definitely not wasm");
    let out = cli(
        &["deploy", "v", junk.to_str().unwrap(), "--admin", &admin_url],
        Some(TOKEN),
    )
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("VALIDATION_FAILED"),
        "{}",
        text(&out.stderr)
    );
    let out = cli(&["rollback", "v", "--admin", &admin_url], None).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("TRELLIS_ADMIN_TOKEN"),
        "{}",
        text(&out.stderr)
    );
    let (_, _, body) = body_of(&trellis, "/v").await;
    assert_eq!(body, "version a\n");
}

#[tokio::test]
async fn refusals_before_the_upload_is_read_still_reach_the_client() {
    // 12 MiB is more than loopback buffers take in at once: unless the
    // host reads the upload before refusing it, the client is still
    // sending when the connection closes and sees a reset, not the answer.
    let trellis = start_admin(one_route(component::VERSION_A)).await;
    let big = || vec![0u8; 12 << 20];
    let response = put(&trellis, "v", "?timeout=2x", big()).await;
    assert_error(response, 422, "VALIDATION_FAILED").await;
    let response = put(&trellis, "v", "?no_such_setting=1", big()).await;
    assert_error(response, 422, "VALIDATION_FAILED").await;
    let response = trellis
        .client()
        .put(format!("{}/admin/routes/v", trellis.admin_url()))
        .bearer_auth("wrong-token-wrong-token-wrong-token")
        .header("content-type", "application/wasm")
        .body(big())
        .send()
        .await
        .expect("the refusal reaches the client");
    assert_error(response, 401, "UNAUTHORIZED").await;
    let response = trellis
        .client()
        .put(format!("{}/admin/routes/v", trellis.admin_url()))
        .bearer_auth(TOKEN)
        .header("content-type", "text/plain")
        .body(big())
        .send()
        .await
        .expect("the refusal reaches the client");
    assert_error(response, 422, "VALIDATION_FAILED").await;
    let (status, _, body) = body_of(&trellis, "/v").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "version a\n"),
        "nothing changed"
    );
}

/// A plugin whose own readiness check fails is refused at hot load, and
/// the route keeps serving the version it had.
#[tokio::test]
async fn a_plugin_that_is_not_ready_is_refused() {
    let trellis = start_admin(one_route(component::VERSION_A)).await;
    // Routes deployed through the admin API get no config, so the probe's
    // `ready` finds no `ready = "yes"` and says no.
    let bytes = std::fs::read(component::READY_PROBE).unwrap();
    let response = put(&trellis, "v", "?grants=config,log", bytes).await;
    let body = assert_error(response, 422, "VALIDATION_FAILED").await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("not ready: config ready is None"),
        "{message}"
    );
    assert_eq!(trellis.get("/v").await.text().await.unwrap(), "version a\n");
}
