//! Cross-host invalidation: every write or delete is published on one
//! Redis channel, and every host drops its in-process copy of the key.
//!
//! A host that loses its subscription may have missed messages, so on
//! every (re)subscription it drops its whole in-process tier: after an
//! outage the cache starts cold rather than stale.

use super::Cache;
use crate::services::redis::{BREAKER_OPEN, Redis};
use futures::StreamExt as _;
use std::sync::{Arc, Weak};

/// The channel invalidations travel on.
pub(super) const CHANNEL: &str = "trellis:cache:invalidate";

/// The message announcing a change to `key` by host `host_id`.
pub(super) fn message(host_id: &str, key: &str) -> String {
    format!("{host_id} {key}")
}

/// Waits until the first attempt to subscribe has ended, either way.
pub(super) async fn first_attempt(cache: &Cache) {
    let mut attempted = cache.subscription_attempted.subscribe();
    let _ = attempted.wait_for(|done| *done).await;
}

/// Subscribes in the background for as long as `cache` lives.
pub(super) fn subscribe(cache: Weak<Cache>, redis: Arc<Redis>) {
    tokio::spawn(async move {
        loop {
            let Some(host_id) = cache.upgrade().map(|c| c.host_id.clone()) else {
                return;
            };
            let subscribed = async {
                let mut pubsub = redis.client().get_async_pubsub().await?;
                pubsub.subscribe(CHANNEL).await?;
                redis::RedisResult::Ok(pubsub)
            }
            .await;
            if let Some(cache) = cache.upgrade() {
                cache.subscription_attempted.send_replace(true);
            }
            if let Ok(pubsub) = subscribed {
                match cache.upgrade() {
                    Some(c) => c.forget_all(),
                    None => return,
                }
                tracing::debug!("subscribed to cache invalidations");
                let mut messages = pubsub.into_on_message();
                while let Some(msg) = messages.next().await {
                    let Some(cache) = cache.upgrade() else { return };
                    let Ok(payload) = msg.get_payload::<String>() else {
                        continue;
                    };
                    if let Some((from, key)) = payload.split_once(' ')
                        && from != host_id
                    {
                        cache.forget(key).await;
                    }
                }
                tracing::warn!("lost the cache invalidation subscription; resubscribing");
            }
            tokio::time::sleep(BREAKER_OPEN).await;
        }
    });
}
