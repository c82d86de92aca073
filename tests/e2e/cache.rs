//! The precompiled-component cache survives restarts.

use std::time::Duration;

use crate::harness::{Launch, Manifest, TempDir, Trellis, component};

#[tokio::test]
async fn second_start_hits_the_precompiled_cache() {
    let cache = TempDir::new();
    let manifest = Manifest::new().route("hello", "/hello", component::HELLO, &[]);
    let launch = || Launch {
        manifest: Some(manifest.clone()),
        cwd: None,
        cache_dir: Some(cache.path().to_owned()),
        ..Launch::default()
    };

    let mut first = Trellis::launch(launch()).await;
    let cold = first.loaded_log("hello").await;
    assert_eq!(cold["cache"], "miss", "{cold}");
    assert_eq!(first.get("/hello").await.status(), 200);
    first.sigterm();
    first
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("the first host exits");
    drop(first);

    let second = Trellis::launch(launch()).await;
    let warm = second.loaded_log("hello").await;
    assert_eq!(warm["cache"], "hit", "{warm}");
    assert_eq!(warm["digest"], cold["digest"]);
    let response = second.get("/hello").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "Hello, world!\n");
}
