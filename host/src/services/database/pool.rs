//! The host's connection pool.
//!
//! Ours rather than sqlx's for two reasons the SQL read benchmark showed:
//! sqlx pings every connection on its way back to the pool (a second round
//! trip per one-query request, 15 % of the host's CPU and a quarter of
//! PostgreSQL's), and keeping connections past that ping jumps its queue.
//! Here a connection whose statement ran to completion goes straight back,
//! and only one dropped mid-statement (cancelled, timed out, a stream the
//! guest abandoned) is pinged first, on a task of its own. Waiting is FIFO
//! (tokio's semaphore), for one-statement calls, transactions and row
//! streams alike.

use sqlx::{Connection, Database};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// How long a ping of a connection dropped mid-statement may take before
/// the connection is closed instead.
const PING_ON_DROP: Duration = Duration::from_secs(5);

/// Prepares a connection for its next user; an error closes it.
pub type BeforeUse<DB> = for<'c> fn(
    &'c mut <DB as Database>::Connection,
) -> futures::future::BoxFuture<'c, Result<(), sqlx::Error>>;

/// Sizes and timeouts, from `[database]`.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Connections open at most.
    pub max: u32,
    /// Connections kept open while idle.
    pub min: u32,
    /// How long `acquire` waits for a connection.
    pub acquire_timeout: Duration,
    /// How long a connection beyond `min` may sit idle before it closes.
    pub idle_timeout: Duration,
}

/// A FIFO-fair pool of connections to one database.
pub struct Pool<DB: Database> {
    shared: Arc<Shared<DB>>,
}

impl<DB: Database> Clone for Pool<DB> {
    fn clone(&self) -> Self {
        Pool {
            shared: self.shared.clone(),
        }
    }
}

impl<DB: Database> std::fmt::Debug for Pool<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("size", &self.size())
            .field("idle", &self.num_idle())
            .field("settings", &self.shared.settings)
            .finish()
    }
}

struct Shared<DB: Database> {
    options: <DB::Connection as Connection>::Options,
    settings: Settings,
    before_use: Option<BeforeUse<DB>>,
    /// One permit per connection that may be in use; waiters queue FIFO.
    permits: Semaphore,
    /// Open connections not in use, the most recently used last.
    idle: Mutex<Vec<Idle<DB>>>,
    /// Connections open, idle or in use.
    size: AtomicU32,
    closed: AtomicBool,
}

struct Idle<DB: Database> {
    conn: DB::Connection,
    since: Instant,
}

impl<DB: Database> Pool<DB> {
    /// A pool connecting with `options`. Opens one connection now, so a
    /// database that cannot be reached fails here, then `min` in all.
    pub async fn connect(
        options: <DB::Connection as Connection>::Options,
        settings: Settings,
        before_use: Option<BeforeUse<DB>>,
    ) -> Result<Pool<DB>, sqlx::Error> {
        let max = settings.max.max(1);
        let pool = Pool {
            shared: Arc::new(Shared {
                options,
                settings: Settings { max, ..settings },
                before_use,
                permits: Semaphore::new(max as usize),
                idle: Mutex::new(Vec::new()),
                size: AtomicU32::new(0),
                closed: AtomicBool::new(false),
            }),
        };
        let mut opened: Vec<Conn<DB>> = Vec::new();
        for _ in 0..settings.min.clamp(1, max) {
            opened.push(pool.acquire().await?);
        }
        for conn in opened {
            conn.release();
        }
        tokio::spawn(reap(Arc::downgrade(&pool.shared)));
        Ok(pool)
    }

    /// A connection, waiting in line up to the acquire timeout.
    pub async fn acquire(&self) -> Result<Conn<DB>, sqlx::Error> {
        let shared = &self.shared;
        let take = async {
            let permit = shared
                .permits
                .acquire()
                .await
                .map_err(|_| sqlx::Error::PoolClosed)?;
            permit.forget();
            // Gives the permit back if anything below fails or is cancelled.
            let mut slot = Slot {
                shared,
                lent: false,
            };
            let idle = shared.idle.lock().expect("pool lock").pop();
            let mut conn = match idle {
                Some(idle) => idle.conn,
                None => shared.open().await?,
            };
            if let Some(before_use) = shared.before_use
                && let Err(err) = before_use(&mut conn).await
            {
                shared.size.fetch_sub(1, Ordering::AcqRel);
                return Err(err);
            }
            slot.lent = true;
            Ok(Conn {
                conn: Some(conn),
                shared: shared.clone(),
            })
        };
        tokio::time::timeout(shared.settings.acquire_timeout, take)
            .await
            .unwrap_or(Err(sqlx::Error::PoolTimedOut))
    }

    /// Checks that the database answers, on a pooled connection.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        let mut conn = self.acquire().await?;
        conn.ping().await?;
        conn.release();
        Ok(())
    }

    /// Connections open, idle or in use.
    pub fn size(&self) -> u32 {
        self.shared.size.load(Ordering::Acquire)
    }

    /// Connections open and not in use.
    pub fn num_idle(&self) -> usize {
        self.shared.idle.lock().expect("pool lock").len()
    }

    /// Stops lending connections, closes the idle ones, and waits (up to
    /// `within`) for those in use to come back and be closed.
    pub async fn close(&self, within: Duration) {
        let shared = &self.shared;
        shared.closed.store(true, Ordering::Release);
        shared.permits.close();
        let deadline = Instant::now() + within;
        loop {
            let idle = std::mem::take(&mut *shared.idle.lock().expect("pool lock"));
            for idle in idle {
                shared.size.fetch_sub(1, Ordering::AcqRel);
                let _ = idle.conn.close().await;
            }
            if shared.size.load(Ordering::Acquire) == 0 || Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl<DB: Database> Shared<DB> {
    async fn open(&self) -> Result<DB::Connection, sqlx::Error> {
        let conn = DB::Connection::connect_with(&self.options).await?;
        self.size.fetch_add(1, Ordering::AcqRel);
        Ok(conn)
    }

    /// Puts `conn` back and lets the next waiter in.
    fn put_back(&self, conn: DB::Connection) {
        if self.closed.load(Ordering::Acquire) {
            self.size.fetch_sub(1, Ordering::AcqRel);
            tokio::spawn(async move {
                let _ = conn.close().await;
            });
            return;
        }
        self.idle.lock().expect("pool lock").push(Idle {
            conn,
            since: Instant::now(),
        });
        self.permits.add_permits(1);
    }

    /// Forgets a connection that is gone or broken.
    fn discard(&self) {
        self.size.fetch_sub(1, Ordering::AcqRel);
        self.permits.add_permits(1);
    }
}

/// Returns a permit whose acquire did not end with a connection lent.
struct Slot<'a, DB: Database> {
    shared: &'a Shared<DB>,
    lent: bool,
}

impl<DB: Database> Drop for Slot<'_, DB> {
    fn drop(&mut self) {
        if !self.lent {
            self.shared.permits.add_permits(1);
        }
    }
}

/// A connection lent by the pool. [`Conn::release`] returns it after a
/// statement ran to completion; dropped otherwise, it may be mid-statement,
/// so it is pinged (which also drains what is left of the exchange) before
/// it goes back, or closed if that fails.
pub struct Conn<DB: Database> {
    conn: Option<DB::Connection>,
    shared: Arc<Shared<DB>>,
}

impl<DB: Database> Conn<DB> {
    /// Hands the connection back, in a clean state, to the next waiter.
    pub fn release(mut self) {
        if let Some(conn) = self.conn.take() {
            self.shared.put_back(conn);
        }
    }
}

impl<DB: Database> std::ops::Deref for Conn<DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &DB::Connection {
        self.conn
            .as_ref()
            .expect("connection present until released")
    }
}

impl<DB: Database> std::ops::DerefMut for Conn<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        self.conn
            .as_mut()
            .expect("connection present until released")
    }
}

impl<DB: Database> Drop for Conn<DB> {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let shared = self.shared.clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            shared.discard();
            return;
        };
        runtime.spawn(async move {
            match tokio::time::timeout(PING_ON_DROP, conn.ping()).await {
                Ok(Ok(())) => shared.put_back(conn),
                _ => {
                    shared.discard();
                    let _ = conn.close_hard().await;
                }
            }
        });
    }
}

/// Closes connections idle past the idle timeout while more than `min` are
/// open, and opens connections while fewer are; ends with the pool.
async fn reap<DB: Database>(shared: std::sync::Weak<Shared<DB>>) {
    let every = match shared.upgrade() {
        Some(s) => {
            (s.settings.idle_timeout / 2).clamp(Duration::from_millis(100), Duration::from_secs(30))
        }
        None => return,
    };
    loop {
        tokio::time::sleep(every).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.closed.load(Ordering::Acquire) {
            return;
        }
        let expired: Vec<DB::Connection> = {
            let mut idle = shared.idle.lock().expect("pool lock");
            let open = shared.size.load(Ordering::Acquire);
            let spare = open.saturating_sub(shared.settings.min) as usize;
            // Oldest first: the front of the list has waited longest.
            let n = match Instant::now().checked_sub(shared.settings.idle_timeout) {
                Some(cutoff) => idle.iter().take_while(|i| i.since <= cutoff).count(),
                None => 0,
            };
            let n = n.min(spare);
            idle.drain(..n).map(|i| i.conn).collect()
        };
        for conn in expired {
            shared.size.fetch_sub(1, Ordering::AcqRel);
            let _ = conn.close().await;
        }
        // Connections discarded as broken are replaced up to `min`; a
        // database that cannot be reached is tried again next round. Each
        // opening holds a permit, as a user's does, so users opening at the
        // same time cannot take the pool past `max`.
        while shared.size.load(Ordering::Acquire) < shared.settings.min {
            let Ok(permit) = shared.permits.try_acquire() else {
                break;
            };
            permit.forget();
            let opening = tokio::time::timeout(shared.settings.acquire_timeout, shared.open());
            match opening.await {
                Ok(Ok(conn)) => shared.put_back(conn),
                _ => {
                    shared.permits.add_permits(1);
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Sqlite;
    use sqlx::sqlite::SqliteConnectOptions;
    use std::str::FromStr;

    async fn pool(max: u32, min: u32, idle_timeout: Duration) -> Pool<Sqlite> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:").unwrap();
        let settings = Settings {
            max,
            min,
            acquire_timeout: Duration::from_millis(300),
            idle_timeout,
        };
        Pool::connect(options, settings, None).await.unwrap()
    }

    #[tokio::test]
    async fn waiters_are_served_in_the_order_they_came() {
        let pool = pool(1, 1, Duration::from_secs(60)).await;
        let held = pool.acquire().await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for i in 0..3 {
            let (pool, order) = (pool.clone(), order.clone());
            waiters.push(tokio::spawn(async move {
                let conn = pool.acquire().await.unwrap();
                order.lock().unwrap().push(i);
                conn.release();
            }));
            // Let waiter `i` reach the queue before the next one starts.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        held.release();
        for w in waiters {
            w.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [0, 1, 2]);
        assert_eq!(pool.size(), 1);
    }

    #[tokio::test]
    async fn a_full_pool_times_out_and_a_dropped_connection_comes_back() {
        let pool = pool(1, 1, Duration::from_secs(60)).await;
        let held = pool.acquire().await.unwrap();
        assert!(matches!(
            pool.acquire().await,
            Err(sqlx::Error::PoolTimedOut)
        ));
        // Dropped rather than released: pinged on a task, then lent again.
        drop(held);
        let mut conn = pool.acquire().await.unwrap();
        conn.ping().await.unwrap();
        conn.release();
        assert_eq!((pool.size(), pool.num_idle()), (1, 1));
    }

    #[tokio::test]
    async fn idle_connections_beyond_min_close() {
        let pool = pool(3, 1, Duration::from_millis(200)).await;
        let conns = [
            pool.acquire().await.unwrap(),
            pool.acquire().await.unwrap(),
            pool.acquire().await.unwrap(),
        ];
        assert_eq!(pool.size(), 3);
        for conn in conns {
            conn.release();
        }
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!((pool.size(), pool.num_idle()), (1, 1));
    }

    #[tokio::test]
    async fn discarded_connections_are_replaced_up_to_min() {
        let pool = pool(3, 2, Duration::from_millis(200)).await;
        assert_eq!(pool.size(), 2);
        // One connection found broken: the pool forgets it.
        let mut conn = pool.acquire().await.unwrap();
        let broken = conn.conn.take().unwrap();
        conn.shared.discard();
        drop(broken);
        assert_eq!(pool.size(), 1);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!((pool.size(), pool.num_idle()), (2, 2));
    }

    #[tokio::test]
    async fn close_refuses_new_users_and_closes_returned_connections() {
        let pool = pool(2, 1, Duration::from_secs(60)).await;
        let held = pool.acquire().await.unwrap();
        let closing = tokio::spawn({
            let pool = pool.clone();
            async move { pool.close(Duration::from_secs(5)).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(matches!(pool.acquire().await, Err(sqlx::Error::PoolClosed)));
        held.release();
        closing.await.unwrap();
        assert_eq!(pool.size(), 0);
    }
}
