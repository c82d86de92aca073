//! The `sql` capability (`wit/sql.wit`): parameterized statements on the
//! host's pool. Parameters are always bound, never spliced into the text;
//! failures come back to the guest as the WIT `error`, never as a trap.

mod value;

use crate::capabilities::bindings::api::sql::{
    DatabaseError, Dialect, Error, Host, HostRowStream, HostTransaction, Row, Rows, Value,
};
use crate::capabilities::{View, table_trap, trappable};
use crate::observability::trace::SpanGuard;
use crate::services::database::pool::Conn;
use crate::services::database::{Database, Kind, Pool};
use futures::TryStreamExt as _;
use prometheus::Histogram;
use sqlx::{Executor, IntoArguments, TransactionManager as _};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use value::Backend;
use wasmtime::component::{HasData, Linker, Resource};
use wasmtime_wasi::TrappableError;

/// Rows a stream reads ahead of the guest: enough to hide a round trip,
/// few enough that a million-row export stays small.
const READ_AHEAD: usize = 256;

/// The `sql` error as a host function returns it: for the guest, or a
/// trap.
pub type SqlError = TrappableError<Error>;

/// What `sql` reaches: the host's database and its pool.
pub struct SqlCtx {
    /// Opened on first use; credentials never leave it.
    pub database: Arc<Database>,
}

/// `sql` for one instance: transactions and row streams live in its table.
pub type SqlView<'a> = View<'a, SqlCtx>;

struct HasSql;

impl HasData for HasSql {
    type Data<'a> = SqlView<'a>;
}

/// Offers `trellis:api/sql` through `view`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> SqlView<'_>,
) -> wasmtime::Result<()> {
    crate::capabilities::bindings::api::sql::add_to_linker::<T, HasSql>(linker, view)
}

/// A transaction on one pooled connection. Dropping it (the guest drops
/// the handle, or the store goes away after a trap) rolls it back.
pub enum Transaction {
    /// On SQLite.
    Sqlite(Open<sqlx::Sqlite>),
    /// On PostgreSQL.
    Postgres(Open<sqlx::Postgres>),
    /// Committed or rolled back.
    Closed,
}

/// A connection with a transaction begun on it.
pub struct Open<DB: sqlx::Database>(Option<Conn<DB>>);

impl<DB: sqlx::Database> Open<DB> {
    async fn begin(mut conn: Conn<DB>) -> Result<Open<DB>, sqlx::Error> {
        DB::TransactionManager::begin(&mut conn, None).await?;
        Ok(Open(Some(conn)))
    }

    fn conn(&mut self) -> &mut DB::Connection {
        self.0
            .as_mut()
            .expect("open until committed or rolled back")
    }

    /// Commits (`commit`) or rolls back, then hands the connection back.
    async fn end(mut self, commit: bool) -> Result<(), Error> {
        let mut conn = self.0.take().expect("open until ended");
        let ended = if commit {
            DB::TransactionManager::commit(&mut conn).await
        } else {
            DB::TransactionManager::rollback(&mut conn).await
        };
        let result = ended.map_err(to_error);
        give_back(conn, &result);
        result
    }
}

impl<DB: sqlx::Database> Drop for Open<DB> {
    fn drop(&mut self) {
        // Queues the ROLLBACK; the pool's ping of a connection dropped
        // without release sends it and waits for it.
        if let Some(mut conn) = self.0.take() {
            DB::TransactionManager::start_rollback(&mut conn);
        }
    }
}

/// A query read in batches. A task owns the connection and the cursor and
/// feeds rows through a bounded channel, so the database is read only as
/// fast as the guest consumes; dropping the stream ends the task.
pub struct RowStream {
    columns: Vec<String>,
    rows: mpsc::Receiver<Message>,
    /// An error that arrived after some rows, reported by the next call.
    failed: Option<Error>,
}

enum Message {
    Columns(Vec<String>),
    Row(Row),
    Failed(Error),
}

/// One statement on a connection taken from the pool for it: opens the
/// pool if needed, applies the statement timeout and records the span.
macro_rules! on_a_pooled_connection {
    ($store:ident, $span:literal, $statement:ident, $params:ident, $run:ident) => {{
        let span = $store.sql_span($span, Some(&$statement));
        let (pool, timeout, waited) = match open($store.database()).await {
            Ok(opened) => opened,
            Err(e) => return span.finish(Err(e)).map_err(Into::into),
        };
        let result = match &pool {
            Pool::Sqlite(p) => {
                within(timeout, async {
                    let mut conn = acquire(p, &waited).await?;
                    let result =
                        $run::<sqlx::Sqlite>(&mut conn, timeout, &$statement, $params).await;
                    give_back(conn, &result);
                    result
                })
                .await
            }
            Pool::Postgres(p) => {
                within(timeout, async {
                    let mut conn = acquire(p, &waited).await?;
                    let result =
                        $run::<sqlx::Postgres>(&mut conn, timeout, &$statement, $params).await;
                    give_back(conn, &result);
                    result
                })
                .await
            }
        };
        span.finish(result).map_err(Into::into)
    }};
}

/// One statement on a transaction's connection, under the statement
/// timeout, with its span; `closed` once the transaction has ended.
macro_rules! in_the_transaction {
    ($store:ident, $tx:ident, $span:literal, $statement:ident, $params:ident, $run:ident) => {{
        let span = $store.sql_span($span, Some(&$statement));
        let timeout = $store.ctx.database.statement_timeout();
        let result = match $store.table.get_mut(&$tx).map_err(table_trap)? {
            Transaction::Sqlite(t) => {
                within(
                    timeout,
                    $run::<sqlx::Sqlite>(t.conn(), timeout, &$statement, $params),
                )
                .await
            }
            Transaction::Postgres(t) => {
                within(
                    timeout,
                    $run::<sqlx::Postgres>(t.conn(), timeout, &$statement, $params),
                )
                .await
            }
            Transaction::Closed => Err(Error::Closed),
        };
        span.finish(result).map_err(Into::into)
    }};
}

impl SqlView<'_> {
    /// The database; a clone, so no borrow of the store lives across an
    /// `.await` (the store is not `Sync`).
    fn database(&self) -> Arc<Database> {
        self.ctx.database.clone()
    }

    /// A child span of the request for one SQL call, naming the statement
    /// (its text only: parameters may be personal data).
    fn sql_span(&self, name: &'static str, statement: Option<&str>) -> SpanGuard {
        let mut span = self.caller.trace.child(name);
        if let Some(statement) = statement {
            span.attribute("db.statement", || statement.to_owned());
        }
        span
    }
}

/// The pool and statement timeout, or the error a guest sees when the
/// pool cannot be opened.
async fn open(database: Arc<Database>) -> Result<(Pool, Duration, Histogram), Error> {
    match database.pool().await {
        Ok(pool) => Ok((
            pool.clone(),
            database.statement_timeout(),
            database.acquire_histogram().clone(),
        )),
        Err(err) => {
            tracing::warn!(cause = format!("{err:#}"), "database unavailable");
            Err(Error::Unavailable("the database is unavailable".into()))
        }
    }
}

impl Host for SqlView<'_> {
    async fn current_dialect(&mut self) -> wasmtime::Result<Dialect> {
        Ok(match self.ctx.database.kind() {
            Kind::Sqlite => Dialect::Sqlite,
            Kind::Postgres => Dialect::Postgres,
        })
    }

    async fn query(&mut self, statement: String, params: Vec<Value>) -> Result<Rows, SqlError> {
        on_a_pooled_connection!(self, "sql.query", statement, params, fetch_all)
    }

    async fn execute(&mut self, statement: String, params: Vec<Value>) -> Result<u64, SqlError> {
        on_a_pooled_connection!(self, "sql.execute", statement, params, execute)
    }

    async fn query_stream(
        &mut self,
        statement: String,
        params: Vec<Value>,
    ) -> Result<Resource<RowStream>, SqlError> {
        // Spans the query's start, up to its first row; reading the rest
        // belongs to the guest's own time.
        let _span = self.sql_span("sql.query_stream", Some(&statement));
        let (pool, _, waited) = open(self.database()).await?;
        let (tx, mut rx) = mpsc::channel(READ_AHEAD);
        match pool {
            Pool::Sqlite(p) => tokio::spawn(feed(p, waited, statement, params, tx)),
            Pool::Postgres(p) => tokio::spawn(feed(p, waited, statement, params, tx)),
        };
        // Wait for the first message, so a bad statement fails here rather
        // than at the first `next`.
        let columns = match rx.recv().await {
            Some(Message::Columns(columns)) => columns,
            Some(Message::Failed(err)) => return Err(err.into()),
            Some(Message::Row(_)) | None => Vec::new(),
        };
        let stream = RowStream {
            columns,
            rows: rx,
            failed: None,
        };
        self.table.push(stream).map_err(table_trap)
    }

    async fn begin(&mut self) -> Result<Resource<Transaction>, SqlError> {
        let _span = self.sql_span("sql.begin", None);
        let (pool, timeout, waited) = open(self.database()).await?;
        let begun = match &pool {
            Pool::Sqlite(p) => within(timeout, async {
                let conn = acquire(p, &waited).await?;
                Open::begin(conn).await.map_err(to_error)
            })
            .await
            .map(Transaction::Sqlite),
            Pool::Postgres(p) => within(timeout, async {
                let conn = acquire(p, &waited).await?;
                Open::begin(conn).await.map_err(to_error)
            })
            .await
            .map(Transaction::Postgres),
        };
        self.table.push(begun?).map_err(table_trap)
    }

    fn convert_error(&mut self, err: SqlError) -> wasmtime::Result<Error> {
        trappable(err)
    }
}

impl HostTransaction for SqlView<'_> {
    async fn query(
        &mut self,
        tx: Resource<Transaction>,
        statement: String,
        params: Vec<Value>,
    ) -> Result<Rows, SqlError> {
        in_the_transaction!(self, tx, "sql.query", statement, params, fetch_all)
    }

    async fn execute(
        &mut self,
        tx: Resource<Transaction>,
        statement: String,
        params: Vec<Value>,
    ) -> Result<u64, SqlError> {
        in_the_transaction!(self, tx, "sql.execute", statement, params, execute)
    }

    async fn commit(&mut self, tx: Resource<Transaction>) -> Result<(), SqlError> {
        let _span = self.sql_span("sql.commit", None);
        let tx = self.table.get_mut(&tx).map_err(table_trap)?;
        let tx = std::mem::replace(tx, Transaction::Closed);
        Ok(match tx {
            Transaction::Sqlite(t) => t.end(true).await,
            Transaction::Postgres(t) => t.end(true).await,
            Transaction::Closed => Err(Error::Closed),
        }?)
    }

    async fn rollback(&mut self, tx: Resource<Transaction>) -> Result<(), SqlError> {
        let _span = self.sql_span("sql.rollback", None);
        let tx = self.table.get_mut(&tx).map_err(table_trap)?;
        let tx = std::mem::replace(tx, Transaction::Closed);
        Ok(match tx {
            Transaction::Sqlite(t) => t.end(false).await,
            Transaction::Postgres(t) => t.end(false).await,
            Transaction::Closed => Err(Error::Closed),
        }?)
    }

    async fn drop(&mut self, tx: Resource<Transaction>) -> wasmtime::Result<()> {
        // An unfinished transaction rolls back when it is dropped.
        self.table.delete(tx)?;
        Ok(())
    }
}

impl HostRowStream for SqlView<'_> {
    async fn columns(&mut self, stream: Resource<RowStream>) -> wasmtime::Result<Vec<String>> {
        Ok(self.table.get(&stream)?.columns.clone())
    }

    async fn next(&mut self, stream: Resource<RowStream>, max: u32) -> Result<Vec<Row>, SqlError> {
        let stream = self.table.get_mut(&stream).map_err(table_trap)?;
        if let Some(err) = stream.failed.take() {
            stream.failed = Some(Error::Closed);
            return Err(err.into());
        }
        let max = (max as usize).clamp(1, 4096);
        let mut rows = Vec::new();
        let mut message = stream.rows.recv().await;
        while let Some(m) = message {
            match m {
                Message::Row(row) => rows.push(row),
                Message::Columns(columns) => stream.columns = columns,
                Message::Failed(err) => {
                    if rows.is_empty() {
                        stream.failed = Some(Error::Closed);
                        return Err(err.into());
                    }
                    stream.failed = Some(err);
                    break;
                }
            }
            if rows.len() >= max {
                break;
            }
            // A full batch unless the result ends first: the rows of one
            // query follow each other closely, and a guest gets the same
            // batches whatever the timing.
            message = stream.rows.recv().await;
        }
        Ok(rows)
    }

    async fn drop(&mut self, stream: Resource<RowStream>) -> wasmtime::Result<()> {
        self.table.delete(stream)?;
        Ok(())
    }
}

/// Runs `statement` with `params` on `conn` and collects every row.
///
/// Generic over the database through its connection type: the
/// higher-ranked bound is what lets rustc see the future is `Send` (a
/// generic `Executor` does not, rust-lang/rust#100013).
async fn fetch_all<DB>(
    conn: &mut DB::Connection,
    timeout: Duration,
    statement: &str,
    params: Vec<Value>,
) -> Result<Rows, Error>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
{
    let query = DB::statement(statement, params)?;
    DB::arm_timeout(conn, timeout).await?;
    let rows = query.fetch_all(&mut *conn).await.map_err(to_error)?;
    let columns = rows.first().map(DB::column_names).unwrap_or_default();
    let rows = rows.iter().map(DB::decode).collect::<Result<_, _>>()?;
    Ok(Rows { columns, rows })
}

/// Runs `statement` with `params` on `conn`; returns the rows affected.
async fn execute<DB>(
    conn: &mut DB::Connection,
    timeout: Duration,
    statement: &str,
    params: Vec<Value>,
) -> Result<u64, Error>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
{
    let query = DB::statement(statement, params)?;
    DB::arm_timeout(conn, timeout).await?;
    let done = query.execute(&mut *conn).await.map_err(to_error)?;
    Ok(DB::rows_affected(&done))
}

/// A pooled connection, recording the wait in `waited`.
async fn acquire<DB: sqlx::Database>(
    pool: &crate::services::database::pool::Pool<DB>,
    waited: &Histogram,
) -> Result<Conn<DB>, Error> {
    let started = std::time::Instant::now();
    let conn = pool.acquire().await.map_err(to_error);
    waited.observe(started.elapsed().as_secs_f64());
    conn
}

/// Returns `conn` to the pool after a call that ran to completion. One
/// whose connection failed is dropped instead: the pool pings it, and
/// closes it if that fails too.
fn give_back<DB: sqlx::Database, T>(conn: Conn<DB>, result: &Result<T, Error>) {
    if !matches!(result, Err(Error::Unavailable(_))) {
        conn.release();
    }
}

/// The row-stream task: runs the query on its own pooled connection and
/// sends its rows until the cursor ends, an error, or the guest drops the
/// stream (the send fails).
async fn feed<DB>(
    pool: crate::services::database::pool::Pool<DB>,
    waited: Histogram,
    statement: String,
    params: Vec<Value>,
    tx: mpsc::Sender<Message>,
) where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
{
    let prepared = match DB::statement(&statement, params) {
        Ok(query) => acquire(&pool, &waited).await.map(|conn| (query, conn)),
        Err(err) => Err(err),
    };
    let (query, mut conn) = match prepared {
        Ok(ready) => ready,
        Err(err) => {
            let _ = tx.send(Message::Failed(err)).await;
            return;
        }
    };
    let mut rows = query.fetch(&mut *conn);
    let mut first = true;
    // Leaving the loop early (the guest dropped the stream, or an error)
    // drops the connection mid-exchange: the pool pings it before reuse.
    loop {
        let message = match rows.try_next().await {
            Ok(Some(row)) => {
                if first {
                    first = false;
                    if tx
                        .send(Message::Columns(DB::column_names(&row)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                match DB::decode(&row) {
                    Ok(values) => Message::Row(values),
                    Err(err) => Message::Failed(err),
                }
            }
            Ok(None) => {
                drop(rows);
                conn.release();
                return;
            }
            Err(err) => Message::Failed(to_error(err)),
        };
        let stop = matches!(message, Message::Failed(_));
        if tx.send(message).await.is_err() || stop {
            return;
        }
    }
}

/// `call`, failing with `timeout` past the statement timeout.
async fn within<T>(
    timeout: Duration,
    call: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or(Err(Error::Timeout))
}

/// The guest's view of a sqlx error. Connection-level detail stays in the
/// host's log.
/// Whether PostgreSQL's SQLSTATE `code` says the server or the connection
/// is going away (the connection exceptions of class 08; 57P01-57P03,
/// shutdown or not accepting connections) rather than that the statement
/// failed: a request in flight when the database stops is then
/// `unavailable` (the SDK's 503), like one that could not connect at all.
/// 08P01, a protocol violation, is left out: PostgreSQL reports a
/// statement given too few parameters with it.
fn is_server_going_away(code: &str) -> bool {
    matches!(
        code,
        "08000" | "08001" | "08003" | "08004" | "08006" | "08007" | "57P01" | "57P02" | "57P03"
    )
}

fn to_error(err: sqlx::Error) -> Error {
    match err {
        sqlx::Error::Database(db) => {
            let detail = DatabaseError {
                code: db.code().map(|c| c.into_owned()),
                message: db.message().to_owned(),
            };
            if db.is_unique_violation() {
                Error::Conflict(detail)
            } else if detail.code.as_deref().is_some_and(is_server_going_away) {
                tracing::warn!(cause = %detail.message, "database connection failed");
                Error::Unavailable("the database connection failed".into())
            } else if matches!(detail.code.as_deref(), Some("57014" | "9")) {
                // PostgreSQL's query_canceled (its statement_timeout) or
                // SQLite's SQLITE_INTERRUPT (our progress handler).
                Error::Timeout
            } else {
                Error::Database(detail)
            }
        }
        sqlx::Error::PoolTimedOut => Error::PoolTimeout,
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => {
            tracing::warn!(cause = %err, "database connection failed");
            Error::Unavailable("the database connection failed".into())
        }
        other => Error::Database(DatabaseError {
            code: None,
            message: other.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::is_server_going_away;

    #[test]
    fn a_server_going_away_is_told_from_a_failed_statement() {
        for code in ["57P01", "57P02", "57P03", "08006", "08003", "08000"] {
            assert!(is_server_going_away(code), "{code}");
        }
        for code in ["23505", "42601", "57014", "40001", "08P01", "9"] {
            assert!(!is_server_going_away(code), "{code}");
        }
    }
}
