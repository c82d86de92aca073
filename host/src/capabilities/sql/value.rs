//! WIT `value`s to and from each database's types: binding parameters and
//! decoding columns, the only part of `sql` that differs by database.

use crate::capabilities::bindings::api::sql::{DatabaseError, Error, Row, Value};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::types::Oid;
use sqlx::postgres::{PgArgumentBuffer, PgRow, PgTypeInfo};
use sqlx::query::Query;
use sqlx::sqlite::SqliteRow;
use sqlx::{Column as _, Postgres, Row as _, Sqlite, TypeInfo as _, ValueRef as _};
use std::time::{Duration, Instant};

/// What `sql` needs from a database beyond what sqlx offers generically.
pub(super) trait Backend: sqlx::Database {
    /// Binds `params` to `query` as `$1`, `$2`, ...
    fn bind_all<'q>(
        query: Query<'q, Self, Self::Arguments<'q>>,
        params: Vec<Value>,
    ) -> Query<'q, Self, Self::Arguments<'q>>;

    /// One row's values, in column order.
    fn decode(row: &Self::Row) -> Result<Row, Error>;

    /// Rows a statement changed.
    fn rows_affected(done: &Self::QueryResult) -> u64;

    /// Makes the database itself stop the next statement on `conn` after
    /// `timeout`, so a timed-out statement frees its connection rather
    /// than running on after the host gave up on it.
    fn arm_timeout(
        conn: &mut Self::Connection,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Column names, in order.
    fn column_names(row: &Self::Row) -> Vec<String> {
        row.columns().iter().map(|c| c.name().to_owned()).collect()
    }

    /// An error if `statement` uses more parameters than the `given` ones.
    /// PostgreSQL checks this itself.
    fn check_params(_statement: &str, _given: usize) -> Result<(), Error> {
        Ok(())
    }

    /// `statement` with `params` bound, after checking there are enough:
    /// the one way a statement is built.
    fn statement<'q>(
        statement: &'q str,
        params: Vec<Value>,
    ) -> Result<Query<'q, Self, Self::Arguments<'q>>, Error> {
        Self::check_params(statement, params.len())?;
        Ok(Self::bind_all(sqlx::query(statement), params))
    }
}

/// Binds `params` to `query` in order, on any database that encodes the
/// WIT value types; only how a NULL is bound (`null`) differs by database.
fn bind_values<'q, DB, N>(
    mut query: Query<'q, DB, DB::Arguments<'q>>,
    params: Vec<Value>,
    null: impl Fn() -> N,
) -> Query<'q, DB, DB::Arguments<'q>>
where
    DB: sqlx::Database,
    N: sqlx::Encode<'q, DB> + sqlx::Type<DB> + Send + 'q,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    f64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Vec<u8>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    bool: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    for param in params {
        query = match param {
            Value::Null => query.bind(null()),
            Value::Int(v) => query.bind(v),
            Value::Float(v) => query.bind(v),
            Value::Text(v) => query.bind(v),
            Value::Blob(v) => query.bind(v),
            Value::Boolean(v) => query.bind(v),
        };
    }
    query
}

impl Backend for Sqlite {
    fn bind_all<'q>(
        query: Query<'q, Self, Self::Arguments<'q>>,
        params: Vec<Value>,
    ) -> Query<'q, Self, Self::Arguments<'q>> {
        bind_values(query, params, || None::<i64>)
    }

    fn decode(row: &SqliteRow) -> Result<Row, Error> {
        let mut values = Vec::with_capacity(row.len());
        for (i, column) in row.columns().iter().enumerate() {
            let raw = row.try_get_raw(i).map_err(decode_error)?;
            if raw.is_null() {
                values.push(Value::Null);
                continue;
            }
            // SQLite is dynamically typed: the value's storage class
            // decides, except that a column declared BOOLEAN reads as one.
            let storage = raw.type_info().name().to_owned();
            let value = match storage.as_str() {
                "INTEGER" if column.type_info().name() == "BOOLEAN" => {
                    Value::Boolean(row.try_get_unchecked::<i64, _>(i).map_err(decode_error)? != 0)
                }
                "INTEGER" => Value::Int(row.try_get_unchecked(i).map_err(decode_error)?),
                "REAL" => Value::Float(row.try_get_unchecked(i).map_err(decode_error)?),
                "TEXT" => Value::Text(row.try_get_unchecked(i).map_err(decode_error)?),
                "BLOB" => Value::Blob(row.try_get_unchecked(i).map_err(decode_error)?),
                other => return Err(unsupported(column.name(), other)),
            };
            values.push(value);
        }
        Ok(values)
    }

    fn rows_affected(done: &sqlx::sqlite::SqliteQueryResult) -> u64 {
        done.rows_affected()
    }

    /// SQLite (and sqlx, on purpose) binds a parameter it was not given as
    /// NULL; refused here instead, as PostgreSQL refuses it, so a missing
    /// parameter is an error on both databases rather than a silent NULL.
    fn check_params(statement: &str, given: usize) -> Result<(), Error> {
        let used = highest_parameter(statement);
        if used <= given {
            return Ok(());
        }
        Err(Error::Database(DatabaseError {
            code: None,
            message: format!("the statement uses parameter ${used} but {given} were given"),
        }))
    }

    /// SQLite has no statement timeout: a progress handler, called every
    /// few thousand virtual-machine steps, interrupts the statement once
    /// the deadline has passed.
    async fn arm_timeout(
        conn: &mut sqlx::SqliteConnection,
        timeout: Duration,
    ) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        let mut handle = conn.lock_handle().await.map_err(decode_error)?;
        handle.set_progress_handler(4096, move || Instant::now() < deadline);
        Ok(())
    }
}

/// A NULL parameter of no declared type, so PostgreSQL infers it from
/// context: a typed NULL (say, text) would fail against an integer column.
struct UntypedNull;

impl sqlx::Type<Postgres> for UntypedNull {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(0))
    }
}

impl sqlx::Encode<'_, Postgres> for UntypedNull {
    fn encode_by_ref(&self, _buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        Ok(IsNull::Yes)
    }
}

impl Backend for Postgres {
    fn bind_all<'q>(
        query: Query<'q, Self, Self::Arguments<'q>>,
        params: Vec<Value>,
    ) -> Query<'q, Self, Self::Arguments<'q>> {
        bind_values(query, params, || UntypedNull)
    }

    fn decode(row: &PgRow) -> Result<Row, Error> {
        use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, Utc};
        let mut values = Vec::with_capacity(row.len());
        for (i, column) in row.columns().iter().enumerate() {
            if row.try_get_raw(i).map_err(decode_error)?.is_null() {
                values.push(Value::Null);
                continue;
            }
            let get_err = decode_error;
            let value = match column.type_info().name() {
                "INT2" => Value::Int(row.try_get_unchecked::<i16, _>(i).map_err(get_err)?.into()),
                "INT4" => Value::Int(row.try_get_unchecked::<i32, _>(i).map_err(get_err)?.into()),
                "INT8" => Value::Int(row.try_get_unchecked(i).map_err(get_err)?),
                "FLOAT4" => {
                    Value::Float(row.try_get_unchecked::<f32, _>(i).map_err(get_err)?.into())
                }
                "FLOAT8" => Value::Float(row.try_get_unchecked(i).map_err(get_err)?),
                "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CHAR" => {
                    Value::Text(row.try_get_unchecked(i).map_err(get_err)?)
                }
                "BOOL" => Value::Boolean(row.try_get_unchecked(i).map_err(get_err)?),
                "BYTEA" => Value::Blob(row.try_get_unchecked(i).map_err(get_err)?),
                "TIMESTAMPTZ" => {
                    let t: DateTime<Utc> = row.try_get_unchecked(i).map_err(get_err)?;
                    Value::Text(t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
                }
                "TIMESTAMP" => {
                    let t: NaiveDateTime = row.try_get_unchecked(i).map_err(get_err)?;
                    Value::Text(t.format("%Y-%m-%dT%H:%M:%S%.f").to_string())
                }
                "DATE" => {
                    let d: NaiveDate = row.try_get_unchecked(i).map_err(get_err)?;
                    Value::Text(d.format("%Y-%m-%d").to_string())
                }
                "TIME" => {
                    let t: NaiveTime = row.try_get_unchecked(i).map_err(get_err)?;
                    Value::Text(t.format("%H:%M:%S%.f").to_string())
                }
                "UUID" => {
                    let raw = row.try_get_raw(i).map_err(decode_error)?;
                    Value::Text(uuid_text(
                        raw.as_bytes()
                            .map_err(|e| decode_error(sqlx::Error::Decode(e)))?,
                    )?)
                }
                "JSON" | "JSONB" => {
                    let j: serde_json::Value = row.try_get_unchecked(i).map_err(get_err)?;
                    Value::Text(j.to_string())
                }
                other => return Err(unsupported(column.name(), other)),
            };
            values.push(value);
        }
        Ok(values)
    }

    fn rows_affected(done: &sqlx::postgres::PgQueryResult) -> u64 {
        done.rows_affected()
    }

    /// PostgreSQL enforces `statement_timeout` itself (set on every
    /// connection when the pool opens it).
    async fn arm_timeout(_conn: &mut sqlx::PgConnection, _timeout: Duration) -> Result<(), Error> {
        Ok(())
    }
}

/// A UUID's 16 bytes in the usual hyphenated form.
fn uuid_text(bytes: &[u8]) -> Result<String, Error> {
    if bytes.len() != 16 {
        return Err(decode_error(sqlx::Error::Decode(
            "a UUID is 16 bytes".into(),
        )));
    }
    let hex = crate::ids::hex(bytes);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

fn unsupported(column: &str, ty: &str) -> Error {
    Error::UnsupportedType(format!(
        "column {column:?} has type {ty}, which has no sql value; cast it in the query, e.g. {column}::text"
    ))
}

fn decode_error(err: sqlx::Error) -> Error {
    Error::Database(DatabaseError {
        code: None,
        message: format!("reading a column: {err}"),
    })
}

/// The highest parameter number `statement` uses, counting SQLite's forms
/// `$N`, `?N` and `?` (one past the highest so far), outside string
/// literals, quoted identifiers and comments.
fn highest_parameter(statement: &str) -> usize {
    let bytes = statement.as_bytes();
    let number = |from: usize| {
        let digits = bytes[from..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let n = statement[from..from + digits].parse::<usize>().ok();
        (n, from + digits)
    };
    let (mut highest, mut i) = (0, 0);
    while i < bytes.len() {
        i = match bytes[i] {
            quote @ (b'\'' | b'"' | b'`') => {
                let close = bytes[i + 1..].iter().position(|&b| b == quote);
                close.map_or(bytes.len(), |at| i + 1 + at + 1)
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                let end = bytes[i..].iter().position(|&b| b == b'\n');
                end.map_or(bytes.len(), |at| i + at + 1)
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let end = statement[i + 2..].find("*/");
                end.map_or(bytes.len(), |at| i + 2 + at + 2)
            }
            b'$' | b'?' => {
                let (n, next) = number(i + 1);
                match n {
                    Some(n) => highest = highest.max(n),
                    None if bytes[i] == b'?' => highest += 1,
                    None => {}
                }
                next.max(i + 1)
            }
            _ => i + 1,
        };
    }
    highest
}

#[cfg(test)]
mod tests {
    use super::highest_parameter;

    #[test]
    fn parameters_are_counted_outside_literals_and_comments() {
        assert_eq!(highest_parameter("SELECT 1"), 0);
        assert_eq!(highest_parameter("SELECT $1, $3, $2"), 3);
        assert_eq!(highest_parameter("SELECT ?, ?, ?5, ?"), 6);
        assert_eq!(
            highest_parameter("SELECT '$9', \"$8\", `?7` -- $6\n, $1 /* $5 */"),
            1
        );
        assert_eq!(highest_parameter("SELECT 'it''s $4', $2"), 2);
        assert_eq!(highest_parameter("SELECT '$1"), 0);
    }
}
