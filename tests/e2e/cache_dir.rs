//! The cache directory is kept under `[server] cache_dir_max_size`: at
//! start and after every deploy the least recently used entries
//! (precompiled components, registry manifests, layers and tags) are
//! deleted until it fits, never one that a loaded version needs (the
//! route's current version and its rollback history, the manifest's
//! `oci://` component), each prune that deletes something logs `cache
//! pruned`, rollback still works, a pruned version deployed again is
//! compiled and pulled again, and what is loaded is kept even when it
//! alone exceeds the limit.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{
    Launch, Manifest, Registry, STARTUP_TIMEOUT, TempDir, Trellis, component, header, metric,
    sha256_hex, wait_until,
};

const TOKEN: &str = "cache-dir-admin-token-0123456789";

/// The host's files under the cache directory `dir`, by path relative to
/// it, with their sizes: `*.cwasm` at the top, `oci/blobs/sha256/*` and
/// `oci/tags/*`. (What else the directory holds is not the host's.)
fn cache_files(dir: &Path) -> BTreeMap<String, u64> {
    let mut files = BTreeMap::new();
    for sub in ["", "oci/blobs/sha256", "oci/tags"] {
        let Ok(read) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for item in read.flatten() {
            let meta = item.metadata().unwrap();
            let name = item.file_name().into_string().unwrap();
            if meta.is_file() && (!sub.is_empty() || name.ends_with(".cwasm")) {
                let path = if sub.is_empty() {
                    name
                } else {
                    format!("{sub}/{name}")
                };
                files.insert(path, meta.len());
            }
        }
    }
    files
}

/// The precompiled artifact of the component at `file` among `files`.
fn artifact_of(files: &BTreeMap<String, u64>, file: &str) -> Option<String> {
    let prefix = format!("{}-", sha256_hex(file));
    let mut found = files
        .keys()
        .filter(|name| name.starts_with(&prefix) && name.ends_with(".cwasm"));
    let first = found.next().cloned();
    assert!(found.next().is_none(), "one artifact per component");
    first
}

fn blob(digest: &str) -> String {
    format!(
        "oci/blobs/sha256/{}",
        digest.strip_prefix("sha256:").unwrap()
    )
}

/// Where the host keeps the digest tag `tag` of `repository` last
/// resolved to: named by the SHA-256 of `REGISTRY/REPOSITORY:TAG`.
fn tag_file(registry: &Registry, repository: &str, tag: &str) -> String {
    use sha2::Digest as _;
    let key = format!("{}/{repository}:{tag}", registry.authority());
    let hex: String = sha2::Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("oci/tags/{hex}")
}

/// `trellis push FILE REFERENCE --insecure`: the manifest digest.
async fn push(file: &str, reference: &str) -> String {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(["push", file, reference, "--insecure"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(STARTUP_TIMEOUT, child)
        .await
        .expect("push finished in time")
        .expect("running trellis push");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "push {reference}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pushed: Value = serde_json::from_str(&stdout).expect("push prints JSON");
    pushed["digest"].as_str().unwrap().to_owned()
}

/// `trellis_cache_dir_prunes_total`: prunes that have finished.
async fn prunes(trellis: &Trellis) -> f64 {
    metric(trellis, "trellis_cache_dir_prunes_total", &[]).await
}

/// Waits until `count` prunes have finished.
async fn pruned(trellis: &Trellis, count: f64) {
    wait_until(
        &format!("prune number {count} never finished"),
        Duration::from_millis(50),
        async || (prunes(trellis).await >= count).then_some(()),
    )
    .await;
}

async fn answer(response: reqwest::Response) -> Value {
    let status = response.status();
    let body = response.text().await.unwrap();
    assert!(status.is_success(), "{status}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Deploys to route `v` (an upload of `file`, or with `reference` a pull),
/// then waits for the prune that follows it: each change asks for exactly
/// one, and none is running when the test makes a change.
async fn deploy(trellis: &Trellis, file: &str, reference: Option<&str>) -> Value {
    let before = prunes(trellis).await;
    let response = match reference {
        Some(reference) => trellis.put_route_ref("v", reference).await,
        None => {
            trellis
                .put_route("v", "", std::fs::read(file).unwrap())
                .await
        }
    };
    let deployed = answer(response).await;
    assert_eq!(deployed["digest"], sha256_hex(file), "{deployed}");
    pruned(trellis, before + 1.0).await;
    deployed
}

/// Which component serves `/v`: the digest prefix its header names.
async fn serving(trellis: &Trellis) -> String {
    let response = trellis.get("/v").await;
    assert_eq!(response.status(), 200);
    header(response.headers(), "x-trellis-component")
}

fn label(file: &str) -> String {
    format!("v@{}", &sha256_hex(file)[..12])
}

/// The `cache pruned` lines logged so far.
fn prune_lines(trellis: &Trellis) -> Vec<Value> {
    trellis
        .logs()
        .into_iter()
        .filter(|l| l["message"] == "cache pruned")
        .collect()
}

#[tokio::test]
async fn a_small_cache_directory_drops_the_least_recently_used_and_keeps_what_is_loaded() {
    let registry = Registry::start().await;
    let (one, two) = (
        registry.reference("acme/v", "1"),
        registry.reference("acme/v", "2"),
    );
    let manifest_one = push(component::VERSION_A, &one).await;
    let manifest_two = push(component::VERSION_B, &two).await;
    // Route `v`'s versions in order: 1 from the manifest (pulled), 2
    // deployed by reference (pulled), the others uploaded.
    let versions = [
        component::VERSION_A,
        component::VERSION_B,
        component::HELLO,
        component::ECHO,
        component::WSTD_HELLO,
        component::STREAM,
        component::SLOW,
        component::P3_HELLO,
    ];
    let cache = TempDir::new();

    // First, a host with the default limit (1GiB) loads all of them, to
    // see what each leaves in the directory; it prunes nothing.
    let mut all = Manifest::new().section(&registry.section(&[]));
    for (i, file) in versions.iter().enumerate() {
        let source = match i {
            0 => one.as_str(),
            1 => two.as_str(),
            _ => *file,
        };
        all = all.route(&format!("r{i}"), &format!("/r{i}"), source, &[]);
    }
    let first = Trellis::launch(Launch {
        cache_dir: Some(cache.path().to_owned()),
        ..Launch::manifest(all)
    })
    .await;
    pruned(&first, 1.0).await;
    assert!(prune_lines(&first).is_empty(), "{:?}", prune_lines(&first));
    drop(first);
    let files = cache_files(cache.path());
    let artifacts: Vec<String> = versions
        .iter()
        .map(|f| artifact_of(&files, f).unwrap_or_else(|| panic!("no artifact of {f}: {files:?}")))
        .collect();
    // What version 1 needs as long as the host runs (the manifest names
    // it): its artifact, manifest, layer and tag.
    let pulled_one = [
        artifacts[0].clone(),
        blob(&manifest_one),
        blob(&format!("sha256:{}", sha256_hex(component::VERSION_A))),
        tag_file(&registry, "acme/v", "1"),
    ];
    let pulled_two = [
        artifacts[1].clone(),
        blob(&manifest_two),
        blob(&format!("sha256:{}", sha256_hex(component::VERSION_B))),
        tag_file(&registry, "acme/v", "2"),
    ];
    let all_files: Vec<&String> = pulled_one
        .iter()
        .chain(&pulled_two)
        .chain(&artifacts[2..])
        .collect();
    let mut expected: Vec<&String> = all_files.clone();
    expected.sort();
    expected.dedup();
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        expected,
        "the first host's cache directory"
    );
    // The limit: what version 1 and versions 3 to 8 need. With the 8
    // versions loaded one after the other, version 2's files are then the
    // least recently used, and the rest fits exactly.
    let size = |name: &String| files[name];
    let limit: u64 = pulled_one.iter().chain(&artifacts[2..]).map(size).sum();
    let total: u64 = files.values().sum();
    assert!(
        limit >= 1 << 20,
        "the test needs artifacts large enough for the smallest limit (1MiB): {files:?}"
    );

    let trellis = Trellis::launch(Launch {
        cache_dir: Some(cache.path().to_owned()),
        admin_token: Some(TOKEN.to_owned()),
        ..Launch::manifest(
            Manifest::new()
                .server(&format!("cache_dir_max_size = {limit}"))
                .section(&registry.section(&[]))
                .route("v", "/v", &one, &[]),
        )
    })
    .await;
    // At start only version 1 is loaded: the directory is over the limit
    // by version 2's files, so some of the rest goes at once.
    pruned(&trellis, 1.0).await;
    let at_start = trellis
        .wait_log("cache pruned at start", |l| l["message"] == "cache pruned")
        .await;
    assert!(at_start["files"].as_u64().unwrap() >= 1, "{at_start}");
    assert!(
        at_start["bytes"].as_u64().unwrap() >= 1 && at_start["total"].as_u64().unwrap() <= limit,
        "{at_start}"
    );
    assert_eq!(at_start["limit"].as_u64(), Some(limit), "{at_start}");
    assert!(cache_files(cache.path()).values().sum::<u64>() <= limit);
    for name in &pulled_one {
        assert!(cache.path().join(name).exists(), "{name} is in use");
    }

    let deployed = deploy(&trellis, component::VERSION_B, Some(&two)).await;
    assert_eq!(deployed["version"], 2, "{deployed}");
    for (i, file) in versions.iter().enumerate().skip(2) {
        let deployed = deploy(&trellis, file, None).await;
        assert_eq!(deployed["version"], i + 1, "{deployed}");
    }
    assert_eq!(serving(&trellis).await, label(component::P3_HELLO));

    // Versions 4 to 8 are the rollback history; 1 stays because the
    // manifest names it. Version 2 left the history before version 3, so
    // its four files went, and then everything fits.
    let files = cache_files(cache.path());
    let mut kept: Vec<&String> = pulled_one.iter().chain(&artifacts[2..]).collect();
    kept.sort();
    assert_eq!(files.keys().collect::<Vec<_>>(), kept, "{files:?}");
    let now: u64 = files.values().sum();
    assert!(now <= limit, "{now} > {limit}");
    assert!(total > limit);
    assert_eq!(
        metric(&trellis, "trellis_cache_dir_bytes", &[]).await,
        now as f64
    );
    // Every prune that deleted something logged it: at start, and after
    // the deploys (the log reaches stdout in batches, hence the wait).
    let deleted = metric(&trellis, "trellis_cache_dir_pruned_bytes_total", &[]).await;
    assert!(deleted > at_start["bytes"].as_u64().unwrap() as f64);
    wait_until(
        "the `cache pruned` lines add up to trellis_cache_dir_pruned_bytes_total",
        Duration::from_millis(50),
        async || {
            let lines = prune_lines(&trellis);
            let logged: u64 = lines.iter().map(|l| l["bytes"].as_u64().unwrap()).sum();
            (lines.len() >= 2 && logged as f64 == deleted).then_some(())
        },
    )
    .await;

    // Rollback goes to version 7, whose artifact was kept.
    let before = prunes(&trellis).await;
    let back = answer(trellis.admin_post("/admin/routes/v/rollback").await).await;
    assert_eq!(back["version"], 7, "{back}");
    assert_eq!(serving(&trellis).await, label(component::SLOW));
    pruned(&trellis, before + 1.0).await;
    assert!(cache.path().join(&artifacts[6]).exists());

    // Version 2 deployed again: compiled and pulled again, and kept.
    let again = deploy(&trellis, component::VERSION_B, Some(&two)).await;
    assert_eq!(again["cache"], "miss", "{again}");
    assert_eq!(serving(&trellis).await, label(component::VERSION_B));
    let files = cache_files(cache.path());
    for name in pulled_two.iter().chain(&pulled_one) {
        assert!(files.contains_key(name), "{name} is in use: {files:?}");
    }
    drop(trellis);

    // A host whose loaded versions alone need more than its limit (1MiB,
    // the smallest) keeps all of them, however long unused, deletes
    // everything else, and says it is over.
    let in_use: Vec<&String> = pulled_one
        .iter()
        .chain(&pulled_two)
        .chain([&artifacts[4]])
        .collect();
    let needed: u64 = in_use.iter().map(|name| files[*name]).sum();
    assert!(
        needed > 1 << 20,
        "{needed}: the test needs more in use than 1MiB"
    );
    let last = Trellis::launch(Launch {
        cache_dir: Some(cache.path().to_owned()),
        ..Launch::manifest(
            Manifest::new()
                .server("cache_dir_max_size = \"1MiB\"")
                .section(&registry.section(&[]))
                .route("v", "/v", &one, &[])
                .route("w", "/w", &two, &[])
                .route("x", "/x", versions[4], &[]),
        )
    })
    .await;
    pruned(&last, 1.0).await;
    let mut in_use = in_use;
    in_use.sort();
    let files = cache_files(cache.path());
    assert_eq!(files.keys().collect::<Vec<_>>(), in_use, "{files:?}");
    let over = last
        .wait_log("the directory is over its limit", |l| {
            l["message"]
                == "cache directory over server.cache_dir_max_size: what is left is in use by loaded versions"
        })
        .await;
    assert_eq!(over["total"].as_u64(), Some(needed), "{over}");
    assert_eq!(over["in_use"].as_u64(), Some(in_use.len() as u64), "{over}");
}
