//! The limiter against both backends; the Redis tests use the real Redis
//! of the test environment.

use super::shared::KEY_PREFIX;
use super::*;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use crate::services::redis::test_support::test_redis;

/// A policy name no other test or earlier run has used, so tests sharing
/// the Redis never meet each other's buckets.
fn unique(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    format!("{name}_{}_{nanos}", std::process::id())
}

fn manifest(policies: &[(&str, u32, &str)]) -> Manifest {
    let text: String = policies
        .iter()
        .map(|(name, requests, window)| {
            format!("[rate_limits.{name}]\nrequests = {requests}\nwindow = \"{window}\"\nkey = \"route\"\n")
        })
        .collect();
    Manifest::parse(&text, Path::new("test.toml"), PathBuf::from(".")).expect("a valid manifest")
}

async fn allowed(limiter: &RateLimiter, policy: &str, key: &str) -> bool {
    limiter
        .check(policy, key)
        .await
        .expect("known policy")
        .allowed
}

/// Deletes the test's buckets from the shared Redis.
async fn forget(redis: &Redis, keys: &[String]) {
    let keys: Vec<String> = keys.iter().map(|k| format!("{KEY_PREFIX}{k}")).collect();
    let _: Result<i64, _> = redis
        .call(|mut conn| async move { redis::cmd("DEL").arg(&keys).query_async(&mut conn).await })
        .await;
}

#[tokio::test]
async fn in_process_counts_per_policy_and_key_and_names_unknown_policies() {
    let metrics = Metrics::new();
    let limiter = RateLimiter::new(
        &manifest(&[("two", 2, "1h"), ("one", 1, "1h")]),
        None,
        &metrics,
    );
    assert!(allowed(&limiter, "two", "a").await);
    let second = limiter.check("two", "a").await.unwrap();
    assert!(second.allowed);
    assert_eq!((second.limit, second.remaining), (2, 0));
    let third = limiter.check("two", "a").await.unwrap();
    assert!(!third.allowed);
    // The first of the two is due again half an hour after it was made.
    let lag = Duration::from_secs(1800) - third.retry_after;
    assert!(
        lag < Duration::from_secs(1),
        "retry after {:?}",
        third.retry_after
    );
    assert!(
        allowed(&limiter, "two", "b").await,
        "keys have their own buckets"
    );
    assert!(allowed(&limiter, "one", "a").await, "so do policies");
    assert!(
        limiter.check_guest("two", "a").await.unwrap().allowed,
        "guest keys are apart from host keys"
    );

    let err = limiter.check("nope", "a").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "rate limit check: no policy \"nope\" in [rate_limits]"
    );

    // A reload that adds a policy makes it usable; buckets carry over.
    limiter.set_policies(&manifest(&[("two", 2, "1h"), ("three", 3, "1h")]));
    assert!(allowed(&limiter, "three", "a").await);
    assert!(!allowed(&limiter, "two", "a").await);
    assert!(limiter.check("one", "a").await.is_err());

    let text = metrics.render();
    assert!(
        text.contains(r#"trellis_rate_limit_decisions_total{outcome="refused",policy="two"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"trellis_rate_limit_decisions_total{outcome="allowed",policy="two"} 4"#),
        "{text}"
    );
}

/// A limiter with metrics of its own.
fn limiter(m: &Manifest, redis: Option<Arc<Redis>>) -> RateLimiter {
    RateLimiter::new(m, redis, &Metrics::new())
}

#[tokio::test]
async fn redis_is_shared_by_hosts_and_exact() {
    let Some(redis_a) = test_redis().await else {
        return;
    };
    let Some(redis_b) = test_redis().await else {
        return;
    };
    let policy = unique("shared");
    let m = manifest(&[(&policy, 10, "1h")]);
    // Two limiters on two connections: two hosts.
    let a = limiter(&m, Some(redis_a.clone()));
    let b = limiter(&m, Some(redis_b));
    let mut remaining = Vec::new();
    for i in 0..10 {
        let host = if i % 2 == 0 { &a } else { &b };
        let d = host.check(&policy, "k").await.unwrap();
        assert!(d.allowed, "check {i}");
        remaining.push(d.remaining);
    }
    assert_eq!(remaining, (0..10).rev().collect::<Vec<_>>());
    let refused = b.check(&policy, "k").await.unwrap();
    assert!(!refused.allowed);
    // 10 per hour: the next one is due 6 minutes after the first, and the
    // clock is Redis's, so only the test's own latency is lost.
    let lag = Duration::from_secs(360) - refused.retry_after;
    assert!(
        lag < Duration::from_secs(2),
        "retry after {:?}",
        refused.retry_after
    );
    assert!(!a.check(&policy, "k").await.unwrap().allowed);

    // The bucket expires when it would be full again, not before.
    let key = format!("{KEY_PREFIX}{policy}:k");
    let ttl: i64 = redis_a
        .call(|mut conn| async move { redis::cmd("PTTL").arg(&key).query_async(&mut conn).await })
        .await
        .unwrap();
    assert!((3_598_000..=3_600_000).contains(&ttl), "ttl {ttl} ms");
    assert_eq!(a.fallbacks.get(), 0);
    forget(&redis_a, &[format!("{policy}:k")]).await;
}

#[tokio::test]
async fn redis_allows_exactly_the_limit_under_concurrency() {
    let Some(redis_a) = test_redis().await else {
        return;
    };
    let Some(redis_b) = test_redis().await else {
        return;
    };
    let policy = unique("race");
    let m = manifest(&[(&policy, 50, "1h")]);
    let limiters = [
        Arc::new(limiter(&m, Some(redis_a.clone()))),
        Arc::new(limiter(&m, Some(redis_b))),
    ];
    let tasks: Vec<_> = (0..400)
        .map(|i| {
            let limiter = limiters[i % 2].clone();
            let policy = policy.clone();
            tokio::spawn(async move { limiter.check(&policy, "hot").await.unwrap().allowed })
        })
        .collect();
    let mut allowed = 0;
    for task in tasks {
        allowed += usize::from(task.await.unwrap());
    }
    assert_eq!(allowed, 50);
    assert_eq!(limiters[0].fallbacks.get() + limiters[1].fallbacks.get(), 0);
    forget(&redis_a, &[format!("{policy}:hot")]).await;
}

#[tokio::test]
async fn without_redis_it_falls_back_to_in_process_limits() {
    // A port nothing listens on: every call fails, fast.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let redis = Redis::start(
        &format!("redis://127.0.0.1:{port}"),
        Duration::from_millis(200),
    )
    .unwrap();
    let limiter = limiter(&manifest(&[("p", 3, "1h")]), Some(redis));
    let started = Instant::now();
    let outcomes: Vec<bool> =
        futures::future::join_all((0..5).map(|_| allowed(&limiter, "p", "k"))).await;
    assert_eq!(outcomes.iter().filter(|a| **a).count(), 3);
    assert_eq!(limiter.fallbacks.get(), 5);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}
