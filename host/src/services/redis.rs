//! The shared Redis behind cache L2, cross-host cache invalidation,
//! shared rate limits and the Redis Streams job store.
//!
//! Redis is an optimisation the host must survive losing: every call has a
//! timeout, and after a failure a breaker skips Redis for
//! [`BREAKER_OPEN`] so requests do not each pay the timeout while it is
//! down. Callers fall back to in-process state meanwhile (the job store
//! cannot: it reports itself unavailable). The host starts
//! even when Redis is down and connects when it comes up.

use redis::aio::ConnectionManager;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long Redis is skipped after a failed call.
pub const BREAKER_OPEN: Duration = Duration::from_secs(1);

/// Redis is not answering (down, slow, or skipped by the breaker).
#[derive(Debug, thiserror::Error)]
#[error("redis unavailable: {0}")]
pub struct Unavailable(pub String);

/// A connection to the shared Redis, reconnecting on its own.
pub struct Redis {
    client: redis::Client,
    display_url: String,
    conn: arc_swap::ArcSwapOption<ConnectionManager>,
    timeout: Duration,
    /// Milliseconds since `epoch` before which calls are skipped.
    open_until: AtomicU64,
    epoch: Instant,
    /// Set once the first connection attempt has ended, either way.
    attempted: tokio::sync::watch::Sender<bool>,
}

impl Redis {
    /// A client for `url`; connects in the background (call within the
    /// tokio runtime), so a host can start while Redis is down.
    pub fn start(url: &str, timeout: Duration) -> anyhow::Result<Arc<Redis>> {
        let client = redis::Client::open(url).map_err(|e| {
            anyhow::anyhow!(
                "redis url {}: {e}",
                crate::observability::telemetry::redact_url(url)
            )
        })?;
        let redis = Arc::new(Redis {
            client,
            display_url: crate::observability::telemetry::redact_url(url),
            conn: arc_swap::ArcSwapOption::empty(),
            timeout,
            open_until: AtomicU64::new(0),
            epoch: Instant::now(),
            attempted: tokio::sync::watch::Sender::new(false),
        });
        tokio::spawn(connect(Arc::downgrade(&redis)));
        Ok(redis)
    }

    /// Waits until the first connection attempt has ended (it is bounded
    /// by [`Redis::connect_timeout`]).
    pub async fn first_attempt(&self) {
        let _ = self.attempted.subscribe().wait_for(|done| *done).await;
    }

    /// How long one attempt to connect may take.
    pub fn connect_timeout(&self) -> Duration {
        self.timeout.max(Duration::from_millis(500))
    }

    /// The URL without its password, for logs.
    pub fn display_url(&self) -> &str {
        &self.display_url
    }

    /// The client, for connections of their own (pub/sub).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// Runs `call` on the shared connection under the timeout and the
    /// breaker.
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T, Unavailable>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let now = self.epoch.elapsed().as_millis() as u64;
        if now < self.open_until.load(Ordering::Relaxed) {
            return Err(Unavailable("skipped after a recent failure".into()));
        }
        let Some(conn) = self.conn.load_full() else {
            return Err(Unavailable("not connected yet".into()));
        };
        let outcome = tokio::time::timeout(self.timeout, call((*conn).clone())).await;
        let failure = match outcome {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(err)) if !is_connection_error(&err) => {
                // Redis answered: the command was wrong, not the link.
                return Err(Unavailable(err.to_string()));
            }
            Ok(Err(err)) => err.to_string(),
            Err(_) => format!("no answer within {:?}", self.timeout),
        };
        let reopen = self.epoch.elapsed() + BREAKER_OPEN;
        let was = self
            .open_until
            .swap(reopen.as_millis() as u64, Ordering::Relaxed);
        if was <= now {
            tracing::warn!(url = %self.display_url, cause = %failure, "redis call failed; using in-process state for {BREAKER_OPEN:?}");
        }
        Err(Unavailable(failure))
    }

    /// One PING, bypassing the breaker: readiness wants the truth.
    pub async fn ping(&self) -> anyhow::Result<()> {
        let conn = self
            .conn
            .load_full()
            .ok_or_else(|| anyhow::anyhow!("not connected"))?;
        let mut conn = (*conn).clone();
        let pong: String =
            tokio::time::timeout(self.timeout, redis::cmd("PING").query_async(&mut conn))
                .await
                .map_err(|_| anyhow::anyhow!("no answer within {:?}", self.timeout))??;
        anyhow::ensure!(pong == "PONG", "unexpected answer {pong:?}");
        self.open_until.store(0, Ordering::Relaxed);
        Ok(())
    }
}

fn is_connection_error(err: &redis::RedisError) -> bool {
    err.is_io_error()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_timeout()
}

/// Connects, retrying every [`BREAKER_OPEN`] until it succeeds; from then
/// on the connection manager reconnects by itself.
async fn connect(redis: std::sync::Weak<Redis>) {
    let mut logged = false;
    loop {
        let Some(r) = redis.upgrade() else { return };
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(r.connect_timeout())
            .set_response_timeout(r.timeout)
            .set_number_of_retries(1)
            .set_max_delay(1000);
        match r.client.get_connection_manager_with_config(config).await {
            Ok(conn) => {
                r.conn.store(Some(Arc::new(conn)));
                r.attempted.send_replace(true);
                tracing::info!(url = %r.display_url, "redis connected");
                return;
            }
            Err(err) if !logged => {
                logged = true;
                tracing::warn!(url = %r.display_url, cause = %err, "redis unreachable; retrying in the background");
            }
            Err(_) => {}
        }
        r.attempted.send_replace(true);
        drop(r);
        tokio::time::sleep(BREAKER_OPEN).await;
    }
}

/// The test environment's Redis, for unit tests of its users.
#[cfg(test)]
pub(crate) mod test_support {
    use super::Redis;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// The Redis the tests use: `TRELLIS_TEST_REDIS_URL`, or the local default.
    pub(crate) fn redis_url() -> String {
        std::env::var("TRELLIS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
    }

    /// A connected client for the test Redis; `None` (skip) only outside CI
    /// when it is not running.
    pub(crate) async fn test_redis() -> Option<Arc<Redis>> {
        let redis = Redis::start(&redis_url(), Duration::from_secs(2)).expect("a valid redis url");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match redis.ping().await {
                Ok(()) => return Some(redis),
                Err(err) if Instant::now() > deadline => {
                    if std::env::var("CI").is_ok_and(|v| v == "true") {
                        panic!("redis at {} is required under CI: {err:#}", redis_url());
                    }
                    eprintln!("SKIPPED: no redis at {}: {err:#}", redis_url());
                    return None;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}
