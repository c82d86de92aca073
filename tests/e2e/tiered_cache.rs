//! The `cache` capability and the host's response cache, on one host and
//! across two hosts sharing a real Redis: values set on one are read on the
//! other, a delete on one evicts the other's in-process copy, get-or-fill
//! computes once per key across both, and a Redis outage degrades to the
//! in-process tier and recovers.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{
    Manifest, RedisServer, Trellis, component, header, redis_url, unique, wait_until,
};

/// A host serving the cache probe, with Redis at `redis` when given.
/// `/cache/*` uses namespace `ns`; `/other/*` its own; `/now` has a
/// 30 s response cache that varies on `accept-language`.
///
/// Its Redis timeout is generous: a call timing out on a busy machine
/// opens the Redis breaker, and the host then coordinates only within
/// itself, which is right for an outage but not what these tests check.
async fn host(redis: Option<&str>, ns: &str) -> Trellis {
    host_with_redis_timeout(redis, ns, "5s").await
}

/// [`host`] with the given Redis `timeout`.
async fn host_with_redis_timeout(redis: Option<&str>, ns: &str, timeout: &str) -> Trellis {
    let mut manifest = Manifest::new();
    if let Some(url) = redis {
        manifest = manifest.section(&format!("[redis]\nurl = {url:?}\ntimeout = {timeout:?}"));
    }
    let grants = "grants = [\"cache\", \"log\"]";
    let namespace = format!("cache_namespace = {ns:?}");
    let manifest = manifest
        .route(
            "probe",
            "/cache/{op}",
            component::CACHE_PROBE,
            &[grants, &namespace],
        )
        .route(
            "other",
            "/other/cache/{op}",
            component::CACHE_PROBE,
            &[grants],
        )
        .route(
            "now",
            "/now",
            component::CACHE_PROBE,
            &[
                grants,
                "cache = { ttl = \"30s\", vary = [\"accept-language\"] }",
            ],
        );
    Trellis::start(manifest).await
}

async fn json_of(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), 200, "{:?}", response.headers());
    serde_json::from_slice(&response.bytes().await.unwrap()).expect("JSON body")
}

async fn get(trellis: &Trellis, path: &str) -> Value {
    json_of(trellis.get(path).await).await
}

async fn set(trellis: &Trellis, key: &str, value: &str) {
    let url = trellis.url(&format!("/cache/set?key={key}"));
    let response = trellis
        .client()
        .post(url)
        .body(value.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(response).await, json!({"ok": true}));
}

async fn delete(trellis: &Trellis, key: &str) -> Value {
    let url = trellis.url(&format!("/cache/del?key={key}"));
    json_of(trellis.client().delete(url).send().await.unwrap()).await
}

#[tokio::test]
async fn keys_live_in_the_route_namespace() {
    let trellis = host(None, &unique("ns")).await;
    set(&trellis, "k", "mine").await;
    assert_eq!(
        get(&trellis, "/cache/get?key=k").await,
        json!({"value": "mine"})
    );
    assert_eq!(
        get(&trellis, "/other/cache/get?key=k").await,
        json!({"value": null}),
        "another route must not see the key"
    );
    assert_eq!(delete(&trellis, "k").await, json!({"deleted": true}));
    assert_eq!(delete(&trellis, "k").await, json!({"deleted": false}));
    assert_eq!(
        get(&trellis, "/cache/get?key=k").await,
        json!({"value": null})
    );

    // A short TTL expires. A read answered within the TTL of sending the
    // write must see the value; a slower one (a busy machine) may rightly
    // miss it and proves nothing, so then the write and read are repeated.
    let ttl = Duration::from_millis(150);
    let written = wait_until(
        "never read the key back within its TTL",
        Duration::from_millis(10),
        async || {
            let sent = Instant::now();
            let url = trellis.url("/cache/set?key=brief&ttl_ms=150");
            trellis.client().post(url).body("x").send().await.unwrap();
            let written = Instant::now();
            let read = get(&trellis, "/cache/get?key=brief").await;
            if sent.elapsed() < ttl {
                assert_eq!(read, json!({"value": "x"}));
            }
            (read == json!({"value": "x"})).then_some(written)
        },
    )
    .await;
    // Waiting out the TTL is what is under test, and cannot race: the host
    // stored the value before it answered the write, so twice the TTL after
    // that answer the value is past its expiry.
    tokio::time::sleep_until((written + 2 * ttl).into()).await;
    assert_eq!(
        get(&trellis, "/cache/get?key=brief").await,
        json!({"value": null})
    );
}

#[tokio::test]
async fn two_hosts_share_values_and_deletes() {
    let ns = unique("shared");
    let url = redis_url();
    let (a, b) = tokio::join!(host(Some(&url), &ns), host(Some(&url), &ns));
    set(&a, "user-1", "ada").await;
    // B reads through to Redis and keeps an in-process copy.
    assert_eq!(
        get(&b, "/cache/get?key=user-1").await,
        json!({"value": "ada"})
    );
    assert_eq!(
        get(&b, "/cache/get?key=user-1").await,
        json!({"value": "ada"})
    );

    // A delete on A evicts B's in-process copy too.
    assert_eq!(delete(&a, "user-1").await, json!({"deleted": true}));
    wait_until(
        "B still serves the deleted key",
        Duration::from_millis(10),
        async || (get(&b, "/cache/get?key=user-1").await == json!({"value": null})).then_some(()),
    )
    .await;

    // An overwrite on B reaches A, which held the old value in process.
    set(&a, "user-2", "old").await;
    assert_eq!(
        get(&a, "/cache/get?key=user-2").await,
        json!({"value": "old"})
    );
    set(&b, "user-2", "new").await;
    wait_until(
        "A still serves the overwritten value",
        Duration::from_millis(10),
        async || (get(&a, "/cache/get?key=user-2").await == json!({"value": "new"})).then_some(()),
    )
    .await;
}

#[tokio::test]
async fn get_or_fill_computes_once_per_key_across_hosts() {
    let ns = unique("fill");
    let url = redis_url();
    let (a, b) = tokio::join!(host(Some(&url), &ns), host(Some(&url), &ns));
    let mut calls = Vec::new();
    for i in 0..20 {
        let trellis = if i % 2 == 0 { &a } else { &b };
        let path = format!("/cache/fill?key=hot&compute_ms=300&value=v{i}");
        calls.push(async move { get(trellis, &path).await });
    }
    let results = futures::future::join_all(calls).await;
    let computed: Vec<_> = results.iter().filter(|r| r["computed"] == true).collect();
    assert_eq!(computed.len(), 1, "exactly one computation: {results:#?}");
    let value = &computed[0]["value"];
    assert!(
        results.iter().all(|r| &r["value"] == value),
        "every caller got the one computed value: {results:#?}"
    );

    // A fill dropped without a value hands the job to the next caller. The
    // next caller asks once the first holds the fill, which shows as its
    // lock in Redis (the host takes it after registering the fill), and
    // while the first still computes: for a second, so that a busy machine
    // cannot make the next caller arrive after the drop.
    let lock = format!("trellis:fill:ns:{ns}:flaky");
    let mut redis = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let dropped = async { get(&a, "/cache/fill-drop?key=flaky&compute_ms=1000").await };
    let waiter = async {
        wait_until(
            "the dropped fill never took the fill lock",
            Duration::from_millis(5),
            async || {
                let held: bool = redis::cmd("EXISTS")
                    .arg(&lock)
                    .query_async(&mut redis)
                    .await
                    .unwrap();
                held.then_some(())
            },
        )
        .await;
        get(&a, "/cache/fill?key=flaky&value=second").await
    };
    let (dropped, waiter) = tokio::join!(dropped, waiter);
    assert_eq!(dropped, json!({"dropped": true}));
    assert_eq!(waiter, json!({"computed": true, "value": "second"}));
}

#[tokio::test]
async fn a_redis_outage_degrades_to_the_in_process_tier_and_recovers() {
    let mut redis = RedisServer::start().await;
    // A short timeout: the outage should be noticed quickly.
    let trellis = host_with_redis_timeout(Some(&redis.url()), &unique("outage"), "200ms").await;
    set(&trellis, "k", "before").await;
    assert_eq!(trellis.get("/health/ready").await.status(), 200);

    redis.stop();
    // Requests still succeed, on the in-process tier.
    assert_eq!(
        get(&trellis, "/cache/get?key=k").await,
        json!({"value": "before"})
    );
    set(&trellis, "k2", "during").await;
    assert_eq!(
        get(&trellis, "/cache/get?key=k2").await,
        json!({"value": "during"})
    );
    let fill = get(&trellis, "/cache/fill?key=f&value=local").await;
    assert_eq!(fill, json!({"computed": true, "value": "local"}));
    // Readiness says so (its report is cached for a second), but stays
    // 200: Redis is a soft dependency, and replicas sharing it must not
    // all leave the load balancer at once.
    let ready = async || {
        let response = trellis.get("/health/ready").await;
        let status = response.status().as_u16();
        let body = serde_json::from_slice::<Value>(&response.bytes().await.unwrap()).unwrap();
        assert_eq!(status, 200, "{body}");
        body
    };
    let body = wait_until(
        "readiness never reported the outage",
        Duration::from_millis(100),
        async || {
            let body = ready().await;
            (body["checks"]["redis"]["status"] == "failed").then_some(body)
        },
    )
    .await;
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["checks"]["component:probe"]["status"], "ok", "{body}");

    redis.restart().await;
    wait_until(
        "readiness never recovered",
        Duration::from_millis(100),
        async || (ready().await["status"] == "ok").then_some(()),
    )
    .await;
    // The shared tier works again: a value set now is in this Redis.
    set(&trellis, "k3", "after").await;
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("trellis:cache:*k3")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        keys.len(),
        1,
        "the value reached Redis after recovery: {keys:?}"
    );
}

#[tokio::test]
async fn responses_are_cached_with_etags_and_client_directives() {
    let trellis = host(None, &unique("resp")).await;
    let first = trellis.get("/now").await;
    assert_eq!(header(first.headers(), "x-trellis-cache"), "miss");
    let etag = header(first.headers(), "etag");
    let body = first.text().await.unwrap();

    let hit = trellis.get("/now").await;
    assert_eq!(header(hit.headers(), "x-trellis-cache"), "hit");
    assert_eq!(header(hit.headers(), "etag"), etag);
    assert!(header(hit.headers(), "cache-control").starts_with("public, max-age="));
    assert!(hit.headers().contains_key("age"));
    assert_eq!(
        hit.text().await.unwrap(),
        body,
        "served from cache, not recomputed"
    );

    // If-None-Match → 304 with no body.
    let revalidated = trellis
        .client()
        .get(trellis.url("/now"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(revalidated.status(), 304);
    assert_eq!(header(revalidated.headers(), "etag"), etag);
    assert!(revalidated.text().await.unwrap().is_empty());

    // The query and the vary header are part of the key.
    let other = trellis.get("/now?page=2").await;
    assert_eq!(header(other.headers(), "x-trellis-cache"), "miss");
    let french = trellis
        .client()
        .get(trellis.url("/now"))
        .header("accept-language", "fr")
        .send()
        .await
        .unwrap();
    assert_eq!(header(french.headers(), "x-trellis-cache"), "miss");
    assert_ne!(french.text().await.unwrap(), body);

    // Client no-cache: fresh response, stored for the next caller.
    let fresh = trellis
        .client()
        .get(trellis.url("/now"))
        .header("cache-control", "no-cache")
        .send()
        .await
        .unwrap();
    assert_eq!(header(fresh.headers(), "x-trellis-cache"), "miss");
    let fresh_body = fresh.text().await.unwrap();
    assert_ne!(fresh_body, body);
    assert_eq!(trellis.get("/now").await.text().await.unwrap(), fresh_body);

    // Client no-store: neither read nor written.
    let bypass = trellis
        .client()
        .get(trellis.url("/now"))
        .header("cache-control", "no-store")
        .send()
        .await
        .unwrap();
    assert_eq!(header(bypass.headers(), "x-trellis-cache"), "bypass");
    assert_eq!(trellis.get("/now").await.text().await.unwrap(), fresh_body);

    // The handler's private / no-store keeps its response out.
    for query in ["private", "nostore"] {
        let path = format!("/now?{query}");
        let a = trellis.get(&path).await;
        assert_eq!(header(a.headers(), "x-trellis-cache"), "bypass", "{query}");
        let a = a.text().await.unwrap();
        let b = trellis.get(&path).await.text().await.unwrap();
        assert_ne!(a, b, "{query}: a handler's {query} response was cached");
    }

    // Not for other methods.
    let post = trellis
        .client()
        .post(trellis.url("/now"))
        .send()
        .await
        .unwrap();
    assert!(!post.headers().contains_key("x-trellis-cache"));
}
