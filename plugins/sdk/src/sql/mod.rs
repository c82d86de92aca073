//! Typed helpers over `trellis:api/sql`: parameters from Rust values, rows
//! read by column name, transactions and row streams.
//!
//! Statements take their inputs as `$1`, `$2`, ... parameters on both
//! SQLite and PostgreSQL, so values are always data, never SQL.
//!
//! ```no_run
//! use trellis_sdk::{Error, sql};
//!
//! fn rename(id: i64, name: &str) -> Result<bool, Error> {
//!     let tx = sql::begin()?;
//!     let changed = tx.execute("UPDATE users SET name = $1 WHERE id = $2", &[&name, &id])?;
//!     tx.execute("INSERT INTO audit (user_id) VALUES ($1)", &[&id])?;
//!     tx.commit()?;
//!     Ok(changed == 1)
//! }
//! ```
//!
//! Errors are the WIT [`Error`] variant; `?` turns them into an HTTP
//! [`crate::Error`] (409 for `conflict`, 503 for a busy or unreachable
//! database, 500 otherwise, with the database's message only in the log).

mod row;
mod value;

use std::rc::Rc;

use crate::bindings::trellis::api::sql as wit;

pub use row::{FromRow, Row, Rows};
pub use value::{FromSql, ToSql};
pub use wit::{DatabaseError, Dialect, Error, Value};

/// Which database the host is connected to.
pub fn dialect() -> Dialect {
    wit::current_dialect()
}

/// Runs a statement returning rows (`SELECT`, or anything with `RETURNING`).
///
/// ```no_run
/// # use trellis_sdk::sql;
/// # fn f() -> Result<(), trellis_sdk::Error> {
/// let rows = sql::query("SELECT id, name FROM users WHERE name LIKE $1", &[&"a%"])?;
/// for row in &rows {
///     let id: i64 = row.get("id")?;
///     let name: String = row.get("name")?;
/// }
/// # Ok(()) }
/// ```
pub fn query(statement: &str, params: &[&dyn ToSql]) -> Result<Rows, Error> {
    wit::query(statement, &values(params)).map(Rows::from)
}

/// Runs a statement and decodes every row as `T`.
pub fn query_as<T: FromRow>(
    statement: &str,
    params: &[&dyn ToSql],
) -> Result<Vec<T>, crate::Error> {
    query(statement, params)?.decode()
}

/// Runs a statement and decodes its first row as `T`, if there is one.
pub fn query_opt<T: FromRow>(
    statement: &str,
    params: &[&dyn ToSql],
) -> Result<Option<T>, crate::Error> {
    query(statement, params)?
        .into_first()
        .map(|row| T::from_row(&row))
        .transpose()
}

/// Runs a statement; returns the number of rows it affected.
pub fn execute(statement: &str, params: &[&dyn ToSql]) -> Result<u64, Error> {
    wit::execute(statement, &values(params))
}

/// Runs a query whose rows are read in batches, for results too large to
/// hold at once. The stream holds a pooled connection until it is dropped.
///
/// ```no_run
/// # use trellis_sdk::sql;
/// # fn f() -> Result<(), trellis_sdk::Error> {
/// let mut stream = sql::stream("SELECT id FROM events", &[])?;
/// loop {
///     let batch = stream.next_batch(1000)?;
///     if batch.is_empty() {
///         break;
///     }
///     for row in &batch {
///         let _id: i64 = row.get("id")?;
///     }
/// }
/// # Ok(()) }
/// ```
pub fn stream(statement: &str, params: &[&dyn ToSql]) -> Result<RowStream, Error> {
    wit::query_stream(statement, &values(params)).map(|inner| RowStream {
        inner,
        columns: None,
    })
}

/// Starts a transaction. Dropping it without [`Transaction::commit`] rolls
/// it back, as does a trap.
pub fn begin() -> Result<Transaction, Error> {
    wit::begin().map(Transaction)
}

/// A transaction on one pooled connection; see [`begin`].
pub struct Transaction(wit::Transaction);

impl Transaction {
    /// Runs a statement returning rows inside the transaction.
    pub fn query(&self, statement: &str, params: &[&dyn ToSql]) -> Result<Rows, Error> {
        self.0.query(statement, &values(params)).map(Rows::from)
    }

    /// Runs a statement inside the transaction; returns rows affected.
    pub fn execute(&self, statement: &str, params: &[&dyn ToSql]) -> Result<u64, Error> {
        self.0.execute(statement, &values(params))
    }

    /// Commits.
    pub fn commit(self) -> Result<(), Error> {
        self.0.commit()
    }

    /// Rolls back (dropping the transaction does the same).
    pub fn rollback(self) -> Result<(), Error> {
        self.0.rollback()
    }
}

/// Rows read in batches; see [`stream`].
pub struct RowStream {
    inner: wit::RowStream,
    /// Fetched once, after the first batch (the host knows them only then).
    columns: Option<Rc<[String]>>,
}

impl RowStream {
    /// The next `max` rows, fewer only at the end; an empty batch means the end.
    pub fn next_batch(&mut self, max: u32) -> Result<Vec<Row>, Error> {
        let batch = self.inner.next(max)?;
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let columns = self
            .columns
            .get_or_insert_with(|| self.inner.columns().into())
            .clone();
        Ok(batch
            .into_iter()
            .map(|values| Row::new(columns.clone(), values))
            .collect())
    }

    /// Column names, in order; empty before the first row has arrived.
    pub fn columns(&self) -> Vec<String> {
        match &self.columns {
            Some(columns) => columns.to_vec(),
            None => self.inner.columns(),
        }
    }
}

fn values(params: &[&dyn ToSql]) -> Vec<Value> {
    params.iter().map(|p| p.to_sql()).collect()
}

/// A one-line description of `error` for logs; it carries the database's
/// message, so it is not for clients.
pub fn describe(error: &Error) -> String {
    let database = |kind: &str, e: &DatabaseError| match &e.code {
        Some(code) => format!("{kind} [{code}]: {}", e.message),
        None => format!("{kind}: {}", e.message),
    };
    match error {
        Error::Database(e) => database("database error", e),
        Error::Conflict(e) => database("conflict", e),
        Error::PoolTimeout => "no pooled connection became free in time".to_owned(),
        Error::Timeout => "statement timed out".to_owned(),
        Error::UnsupportedType(column) => format!("unsupported column type: {column}"),
        Error::Closed => "transaction or stream already closed".to_owned(),
        Error::Unavailable(why) => format!("database unavailable: {why}"),
    }
}
