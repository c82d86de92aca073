//! Components from OCI registries, against a real registry of each test's
//! own (`docker-registry`, see `harness::Registry`): `trellis push`
//! publishes the wasm artifact layout and a host serves it from the
//! manifest or an admin deploy; a tag is pinned to its digest when loaded
//! (a moved tag changes nothing that runs); a restart with the registry
//! down loads from the disk cache; a registry that is down, a missing tag,
//! a tampered blob and missing credentials are refused with errors that
//! name the registry, the reference and the digests; `insecure` is refused
//! for a registry that is not on loopback. On a shared fleet (PostgreSQL)
//! the pinned reference travels with the version to every host, and a
//! manifest route pulled from a registry can be rolled back to.

use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::database::Db;
use crate::harness::{
    Launch, Manifest, Registry, STARTUP_TIMEOUT, TempDir, TokenServer, Trellis, assert_error,
    component, header, run_cli, sha256_hex, wait_until,
};

const TOKEN: &str = "oci-admin-token-0123456789";

/// Runs `trellis ARGS` with `env`, bounded in time.
async fn cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(args)
        .env_remove("TRELLIS_ADMIN_TOKEN")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(STARTUP_TIMEOUT, child)
        .await
        .expect("trellis finished in time")
        .expect("running trellis")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `trellis push FILE REFERENCE --insecure`: the JSON it prints.
async fn push(file: &str, reference: &str) -> Value {
    let out = cli(&["push", file, reference, "--insecure"], &[]).await;
    assert!(
        out.status.success(),
        "push {reference}: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    serde_json::from_str(&text(&out.stdout)).expect("push prints JSON")
}

async fn start_admin(manifest: Manifest, env: Vec<(String, String)>) -> Trellis {
    Trellis::launch(Launch {
        admin_token: Some(TOKEN.to_owned()),
        env,
        ..Launch::manifest(manifest)
    })
    .await
}

async fn json_of(response: reqwest::Response) -> Value {
    let status = response.status();
    let body = response.text().await.expect("a body");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {body}"))
}

async fn show(trellis: &Trellis, name: &str) -> Value {
    let response = trellis
        .client()
        .get(format!("{}/admin/routes/{name}", trellis.admin_url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET reaches the admin API");
    assert_eq!(response.status(), 200);
    json_of(response).await
}

/// The body at `/v` and the component digest prefix its header names.
async fn served(trellis: &Trellis) -> (String, String) {
    let response = trellis.get("/v").await;
    assert_eq!(response.status(), 200);
    let label = header(response.headers(), "x-trellis-component");
    (response.text().await.unwrap(), label)
}

fn label(file: &str) -> String {
    format!("v@{}", &sha256_hex(file)[..12])
}

/// `trellis push` publishes the wasm OCI artifact layout; a manifest route
/// naming the tag serves it, pinned to the pushed digest; `trellis deploy
/// ROUTE oci://…` has the host pull the next version.
#[tokio::test]
async fn push_then_serve_from_the_registry() {
    let registry = Registry::start().await;
    let v1 = registry.reference("acme/v", "1");
    let pushed = push(component::VERSION_A, &v1).await;
    let digest = pushed["digest"].as_str().unwrap().to_owned();
    assert_eq!(
        pushed["layer"],
        format!("sha256:{}", sha256_hex(component::VERSION_A))
    );
    assert_eq!(pushed["pinned"], format!("{v1}@{digest}"));

    // The layout wkg, Spin and wasmCloud read, as the registry holds it.
    let manifest: Value = reqwest::Client::new()
        .get(format!(
            "http://{}/v2/acme/v/manifests/1",
            registry.authority()
        ))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .map(|t| serde_json::from_str(&t).expect("the manifest is JSON"))
        .unwrap();
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0]["mediaType"], "application/wasm");
    assert_eq!(layers[0]["digest"], pushed["layer"]);

    let host_manifest = Manifest::new()
        .section(&registry.section(&[]))
        .route("v", "/v", &v1, &[]);
    let trellis = start_admin(host_manifest, Vec::new()).await;
    let (body, got) = served(&trellis).await;
    assert_eq!(
        (body.as_str(), got),
        ("version a\n", label(component::VERSION_A))
    );
    let route = show(&trellis, "v").await;
    assert_eq!(route["source"]["reference"], v1);
    assert_eq!(route["source"]["digest"], digest);
    assert_eq!(route["digest"], sha256_hex(component::VERSION_A));

    // The CLI names a reference; the host pulls it.
    let v2 = registry.reference("acme/v", "2");
    let pushed_b = push(component::VERSION_B, &v2).await;
    let out = cli(
        &["deploy", "v", &v2, "--admin", &trellis.admin_url()],
        &[("TRELLIS_ADMIN_TOKEN", TOKEN)],
    )
    .await;
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let answer: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(answer["version"], 2);
    assert_eq!(answer["source"]["digest"], pushed_b["digest"]);
    assert_eq!(answer["digest"], sha256_hex(component::VERSION_B));
    let (body, got) = served(&trellis).await;
    assert_eq!(
        (body.as_str(), got),
        ("version b\n", label(component::VERSION_B))
    );
}

/// A tag is resolved to a digest at deploy time, and that digest is what
/// keeps running (and what the admin API shows) after the tag moves.
#[tokio::test]
async fn a_moved_tag_does_not_change_what_runs() {
    let registry = Registry::start().await;
    let live = registry.reference("acme/v", "live");
    let a = push(component::VERSION_A, &live).await;
    let manifest =
        Manifest::new()
            .section(&registry.section(&[]))
            .route("v", "/v", component::VERSION_B, &[]);
    let trellis = start_admin(manifest, Vec::new()).await;

    let response = trellis.put_route_ref("v", &live).await;
    assert_eq!(response.status(), 200);
    let answer = json_of(response).await;
    assert_eq!(answer["source"]["digest"], a["digest"]);
    assert_eq!(
        answer["source"]["pinned"],
        format!("{live}@{}", a["digest"].as_str().unwrap())
    );
    assert_eq!(served(&trellis).await.0, "version a\n");

    // The tag moves to version b; what runs does not.
    let b = push(component::VERSION_B, &live).await;
    assert_ne!(a["digest"], b["digest"]);
    for _ in 0..5 {
        let (body, got) = served(&trellis).await;
        assert_eq!(
            (body.as_str(), got),
            ("version a\n", label(component::VERSION_A))
        );
    }
    let route = show(&trellis, "v").await;
    assert_eq!(route["source"]["digest"], a["digest"]);
    let history = route["history"].as_array().unwrap();
    assert_eq!(
        history.last().unwrap()["source"],
        answer["source"]["pinned"]
    );

    // Deploying the tag again takes its new digest.
    let answer = json_of(trellis.put_route_ref("v", &live).await).await;
    assert_eq!(answer["source"]["digest"], b["digest"]);
    assert_eq!(served(&trellis).await.0, "version b\n");
    let route = show(&trellis, "v").await;
    let sources: Vec<_> = route["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["source"].as_str())
        .map(str::to_owned)
        .collect();
    assert_eq!(
        sources,
        [
            format!("{live}@{}", a["digest"].as_str().unwrap()),
            format!("{live}@{}", b["digest"].as_str().unwrap()),
        ]
    );
}

/// What was pulled is cached on disk by digest: a host restarting while
/// the registry is down loads a tag from the digest it last resolved to,
/// and a digest-pinned reference without asking the registry at all.
#[tokio::test]
async fn a_restart_loads_from_the_disk_cache_with_the_registry_down() {
    let mut registry = Registry::start().await;
    let tagged = registry.reference("acme/v", "1");
    push(component::VERSION_A, &tagged).await;
    let b = push(component::VERSION_B, &registry.reference("acme/w", "1")).await;
    let pinned = format!(
        "oci://{}/acme/w@{}",
        registry.authority(),
        b["digest"].as_str().unwrap()
    );
    let manifest = Manifest::new()
        .section(&registry.section(&[]))
        .route("v", "/v", &tagged, &[])
        .route("w", "/w", &pinned, &[]);
    let cache = TempDir::new();
    let launch = || Launch {
        cache_dir: Some(cache.path().to_owned()),
        ..Launch::manifest(manifest.clone())
    };

    let mut first = Trellis::launch(launch()).await;
    assert_eq!(served(&first).await.0, "version a\n");
    first.kill();
    registry.stop();

    let second = Trellis::launch(launch()).await;
    assert_eq!(served(&second).await.0, "version a\n");
    let response = second.get("/w").await;
    assert_eq!(response.text().await.unwrap(), "version b\n");
    let warned = second
        .wait_log("the cached tag fallback", |l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("registry unreachable"))
        })
        .await;
    assert_eq!(warned["reference"], tagged);
    let cached: Vec<_> = second
        .logs()
        .into_iter()
        .filter(|l| l["message"] == "component pulled")
        .collect();
    assert_eq!(cached.len(), 2, "{cached:?}");
    assert!(cached.iter().all(|l| l["from_cache"] == true), "{cached:?}");
}

/// With shared deployments, a deploy by reference through one host
/// reaches the other with the digest it was pinned to: the store keeps the
/// pinned reference with the version, and the other host shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_deploy_by_reference_shows_its_pinned_digest_on_every_host() {
    let registry = Registry::start().await;
    let live = registry.reference("acme/v", "live");
    let a = push(component::VERSION_A, &live).await;
    let pinned = format!("{live}@{}", a["digest"].as_str().unwrap());
    let db = Db::postgres().await;
    let manifest = Manifest::new()
        .section(&registry.section(&[]))
        .section("[deployments]\nshared = true\nreconcile = \"1s\"\nstale_after = \"3s\"")
        .database(&format!("url = {:?}", db.url()))
        .route("v", "/v", component::VERSION_B, &[]);
    let id = |name: &str| vec![("TRELLIS_HOST_ID".to_owned(), name.to_owned())];
    let one = start_admin(manifest.clone(), id("one")).await;
    let two = start_admin(manifest, id("two")).await;

    let answer = json_of(one.put_route_ref("v", &live).await).await;
    assert_eq!(answer["source"]["pinned"], pinned, "{answer:#}");
    wait_until(
        "host two serving version a",
        Duration::from_millis(50),
        async || (served(&two).await.0 == "version a\n").then_some(()),
    )
    .await;
    let route = show(&two, "v").await;
    assert_eq!(route["source"]["pinned"], pinned, "{route:#}");
    let history = route["history"].as_array().unwrap();
    assert_eq!(history.last().unwrap()["source"], pinned, "{route:#}");
    assert_eq!(history.last().unwrap()["deployed_by"], "one", "{route:#}");
}

/// A manifest route whose component is `oci://` enters the shared store
/// with the first deploy (its pulled bytes and pinned reference), so a
/// rollback through another host returns every host to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_fleet_rolls_back_to_a_manifest_route_pulled_from_a_registry() {
    let registry = Registry::start().await;
    let v1 = registry.reference("acme/v", "1");
    let a = push(component::VERSION_A, &v1).await;
    let pinned = format!("{v1}@{}", a["digest"].as_str().unwrap());
    let db = Db::postgres().await;
    let manifest = Manifest::new()
        .section(&registry.section(&[]))
        .section("[deployments]\nshared = true\nreconcile = \"1s\"\nstale_after = \"3s\"")
        .database(&format!("url = {:?}", db.url()))
        .route("v", "/v", &v1, &[]);
    let id = |name: &str| vec![("TRELLIS_HOST_ID".to_owned(), name.to_owned())];
    let one = start_admin(manifest.clone(), id("one")).await;
    let two = start_admin(manifest, id("two")).await;

    let b = registry.reference("acme/v", "2");
    push(component::VERSION_B, &b).await;
    let answer = json_of(one.put_route_ref("v", &b).await).await;
    assert_eq!(answer["version"], 2, "{answer:#}");
    let history = answer["history"].as_array().unwrap();
    assert_eq!(
        history[0]["source"], pinned,
        "the manifest's version: {answer:#}"
    );

    let back = trellis_post(&two, "/admin/routes/v/rollback").await;
    assert_eq!(back["version"], 1, "{back:#}");
    assert_eq!(back["source"]["pinned"], pinned, "{back:#}");
    for host in [&one, &two] {
        wait_until(
            "every host back on version a",
            Duration::from_millis(50),
            async || (served(host).await.0 == "version a\n").then_some(()),
        )
        .await;
    }
}

async fn trellis_post(trellis: &Trellis, path: &str) -> Value {
    let response = trellis.admin_post(path).await;
    assert_eq!(response.status(), 200);
    json_of(response).await
}

/// A registry that is down, or a tag it does not have, fails the deploy
/// with an error naming the registry and the reference; the route keeps
/// serving its version.
#[tokio::test]
async fn a_registry_down_or_a_missing_tag_fails_the_deploy_and_the_route_keeps_serving() {
    let mut registry = Registry::start().await;
    let manifest =
        Manifest::new()
            .section(&registry.section(&[]))
            .route("v", "/v", component::VERSION_A, &[]);
    let trellis = start_admin(manifest, Vec::new()).await;

    let missing = registry.reference("acme/v", "nope");
    let response = trellis.put_route_ref("v", &missing).await;
    let message = error_message(response, 422, "VALIDATION_FAILED").await;
    assert!(
        message.contains(&format!("registry {}", registry.authority()))
            && message.contains(&missing)
            && message.contains("tag \"nope\" not found (404)"),
        "{message}"
    );

    let v1 = registry.reference("acme/v", "1");
    push(component::VERSION_B, &v1).await;
    registry.stop();
    let response = trellis.put_route_ref("v", &v1).await;
    let message = error_message(response, 503, "UPSTREAM_UNAVAILABLE").await;
    assert!(
        message.contains(&format!("registry {}", registry.authority()))
            && message.contains(&v1)
            && message.contains("unreachable")
            && message.contains("keeps serving"),
        "{message}"
    );
    let (body, got) = served(&trellis).await;
    assert_eq!(
        (body.as_str(), got),
        ("version a\n", label(component::VERSION_A))
    );
    assert_eq!(show(&trellis, "v").await["version"], 1);
}

/// A blob whose bytes no longer hash to its digest is refused, naming the
/// registry, the reference and both digests, at deploy and at start.
#[tokio::test]
async fn a_tampered_blob_is_refused_naming_both_digests() {
    let registry = Registry::start().await;
    let v1 = registry.reference("acme/v", "1");
    let pushed = push(component::VERSION_A, &v1).await;
    let layer = pushed["layer"].as_str().unwrap().to_owned();
    let file = registry.blob_file(&layer);
    let mut bytes = std::fs::read(&file).expect("the layer's blob file");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    let tampered = {
        use sha2::Digest as _;
        let hex: String = sha2::Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("sha256:{hex}")
    };

    let manifest =
        Manifest::new()
            .section(&registry.section(&[]))
            .route("v", "/v", component::VERSION_B, &[]);
    let trellis = start_admin(manifest, Vec::new()).await;
    let response = trellis.put_route_ref("v", &v1).await;
    let message = error_message(response, 422, "VALIDATION_FAILED").await;
    assert!(
        message.contains(&format!("registry {}", registry.authority()))
            && message.contains(&v1)
            && message.contains(&format!(
                "the layer {layer} was served with digest {tampered}"
            )),
        "{message}"
    );
    assert_eq!(served(&trellis).await.0, "version b\n");

    // At start, too: `trellis check` names the route and its line.
    let dir = TempDir::new();
    let text_manifest = format!(
        "{}\n[[route]]\nname = \"v\"\npath = \"/v\"\ncomponent = \"{v1}\"\n",
        registry.section(&[])
    );
    let path = dir.write("trellis.toml", &text_manifest);
    let out = run_cli(&["check", path.to_str().unwrap()], dir.path()).await;
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("route \"v\" (manifest line 7)") && stderr.contains(&tampered),
        "{stderr}"
    );
}

/// A registry behind HTTP Basic auth: credentials from the environment
/// through `[registries]` push and pull; none, or wrong ones, are refused
/// with an error saying so.
#[tokio::test]
async fn a_registry_with_basic_auth_takes_credentials_from_the_environment() {
    let registry = Registry::with_basic_auth("alice", "s3cret-pw").await;
    let creds = WithCredentials::new(&registry);

    let out = cli(
        &["push", component::VERSION_A, &creds.reference, "--insecure"],
        &[],
    )
    .await;
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("registry {}", registry.authority()))
            && stderr.contains("unauthorized")
            && stderr.contains("set username and password"),
        "{stderr}"
    );

    let out = creds.push("alice", "nope").await;
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("refused the configured"), "{stderr}");

    let out = creds.push("alice", "s3cret-pw").await;
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let trellis = creds.serve("alice", "s3cret-pw").await;
    assert_eq!(served(&trellis).await.0, "version a\n");
}

/// A registry behind token auth, as Docker Hub and ghcr.io are: the
/// client answers the `Bearer realm=…` challenge by asking the token
/// endpoint with the configured credentials, for `push` and for a host's
/// pull alike.
#[tokio::test]
async fn a_registry_with_token_auth_gets_bearer_tokens_with_the_credentials() {
    let tokens = TokenServer::start("bob", "t0ken-pw").await;
    let registry = Registry::with_token_auth(&tokens).await;
    let creds = WithCredentials::new(&registry);

    let out = creds.push("bob", "nope").await;
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("token endpoint") && stderr.contains("401"),
        "{stderr}"
    );
    assert_eq!(tokens.issued(), 0);

    let out = creds.push("bob", "t0ken-pw").await;
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let pushed = tokens.issued();
    assert!(pushed >= 1, "the push asked for a token");
    let trellis = creds.serve("bob", "t0ken-pw").await;
    assert_eq!(served(&trellis).await.0, "version a\n");
    assert!(tokens.issued() > pushed, "the host asked for its own token");
}

/// `acme/v:1` on a registry whose `[registries]` table takes its
/// credentials from `OCI_TEST_USER` and `OCI_TEST_PASSWORD`.
struct WithCredentials {
    reference: String,
    section: String,
    file: String,
    _dir: TempDir,
}

impl WithCredentials {
    fn new(registry: &Registry) -> WithCredentials {
        let section = registry.section(&[
            "username = { env = \"OCI_TEST_USER\" }",
            "password = { env = \"OCI_TEST_PASSWORD\" }",
        ]);
        let dir = TempDir::new();
        let file = dir.write("registries.toml", &section);
        WithCredentials {
            reference: registry.reference("acme/v", "1"),
            section,
            file: file.to_str().unwrap().to_owned(),
            _dir: dir,
        }
    }

    /// `trellis push` of version a, as `user` with `password`.
    async fn push(&self, user: &str, password: &str) -> Output {
        let env = [("OCI_TEST_USER", user), ("OCI_TEST_PASSWORD", password)];
        let args = [
            "push",
            component::VERSION_A,
            &self.reference,
            "--manifest",
            &self.file,
        ];
        cli(&args, &env).await
    }

    /// A host serving the reference at `/v`, pulling it as `user`.
    async fn serve(&self, user: &str, password: &str) -> Trellis {
        let manifest =
            Manifest::new()
                .section(&self.section)
                .route("v", "/v", &self.reference, &[]);
        let env = [("OCI_TEST_USER", user), ("OCI_TEST_PASSWORD", password)];
        let env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        start_admin(manifest, env).await
    }
}

/// `insecure = true` only for a loopback registry, and a malformed
/// reference, are manifest errors naming the line and the field.
#[tokio::test]
async fn insecure_for_a_remote_registry_and_bad_references_are_manifest_errors() {
    let dir = TempDir::new();
    let check = |text: &'static str| {
        let path = dir.write("trellis.toml", text);
        let dir = dir.path().to_owned();
        async move {
            let out = run_cli(&["check", path.to_str().unwrap()], &dir).await;
            assert!(!out.status.success(), "{text}");
            text_of(&out)
        }
    };
    let stderr = check(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[registries.\"registry.example.com\"]\ninsecure = true\n",
    )
    .await;
    assert!(
        stderr.contains(":5: registries.\"registry.example.com\".insecure")
            && stderr.contains("loopback"),
        "{stderr}"
    );
    let stderr =
        check("[[route]]\npath = \"/v\"\ncomponent = \"oci://127.0.0.1:5000/Acme/v:1\"\n").await;
    assert!(
        stderr.contains(":3: route[0].component") && stderr.contains("repository"),
        "{stderr}"
    );
    let stderr =
        check("[[route]]\npath = \"/v\"\ncomponent = \"oci://127.0.0.1:5000/acme/v\"\n").await;
    assert!(
        stderr.contains(":3: route[0].component") && stderr.contains("name a tag"),
        "{stderr}"
    );
    // And `trellis push --insecure` to a remote registry.
    let out = cli(
        &[
            "push",
            component::VERSION_A,
            "oci://registry.example.com/acme/v:1",
            "--insecure",
        ],
        &[],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        text_of(&out).contains("only for a registry on loopback"),
        "{}",
        text_of(&out)
    );
}

/// The error message of a refusal with `status` and `code`.
async fn error_message(response: reqwest::Response, status: u16, code: &str) -> String {
    let body = assert_error(response, status, code).await;
    body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn text_of(out: &Output) -> String {
    text(&out.stderr)
}
