//! Result rows, read by column name: `row.get::<i64>("id")`.

use std::rc::Rc;

use super::value::FromSql;
use super::{Value, wit};
use crate::error::Error;

/// A type built from one row, for [`Rows::decode`] and
/// [`query_as`](super::query_as).
///
/// ```no_run
/// use trellis_sdk::sql::{FromRow, Row};
///
/// struct User { id: i64, name: String }
///
/// impl FromRow for User {
///     fn from_row(row: &Row) -> Result<Self, trellis_sdk::Error> {
///         Ok(User { id: row.get("id")?, name: row.get("name")? })
///     }
/// }
/// ```
pub trait FromRow: Sized {
    /// Reads one row.
    fn from_row(row: &Row) -> Result<Self, Error>;
}

/// One row; the column names are shared with the rest of its result.
#[derive(Clone, Debug)]
pub struct Row {
    columns: Rc<[String]>,
    values: Vec<Value>,
}

impl Row {
    pub(crate) fn new(columns: Rc<[String]>, values: Vec<Value>) -> Row {
        Row { columns, values }
    }

    /// Column `name` as `T`. A missing column or a value of another type is
    /// an internal error (a bug in the query, not the request) naming the
    /// column.
    pub fn get<T: FromSql>(&self, name: &str) -> Result<T, Error> {
        let value = self
            .value(name)
            .ok_or_else(|| Error::internal(format!("sql: no column {name:?} in the result")))?;
        T::from_sql(value).map_err(|why| Error::internal(format!("sql: column {name:?}: {why}")))
    }

    /// Column `index` (from 0) as `T`.
    pub fn get_at<T: FromSql>(&self, index: usize) -> Result<T, Error> {
        let value = self
            .values
            .get(index)
            .ok_or_else(|| Error::internal(format!("sql: no column {index} in the result")))?;
        T::from_sql(value).map_err(|why| Error::internal(format!("sql: column {index}: {why}")))
    }

    /// The raw value of column `name`.
    pub fn value(&self, name: &str) -> Option<&Value> {
        let index = self.columns.iter().position(|c| c == name)?;
        self.values.get(index)
    }

    /// Column names, in order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The values, in column order.
    pub fn values(&self) -> &[Value] {
        &self.values
    }

    /// The values, in column order, without copying.
    pub fn into_values(self) -> Vec<Value> {
        self.values
    }
}

/// A whole result set.
#[derive(Clone, Debug)]
pub struct Rows {
    columns: Rc<[String]>,
    rows: Vec<Row>,
}

impl From<wit::Rows> for Rows {
    fn from(rows: wit::Rows) -> Rows {
        let columns: Rc<[String]> = rows.columns.into();
        let rows = rows
            .rows
            .into_iter()
            .map(|values| Row::new(columns.clone(), values))
            .collect();
        Rows { columns, rows }
    }
}

impl Rows {
    /// Column names, in order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// How many rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The rows, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Row> {
        self.rows.iter()
    }

    /// The first row, if any.
    pub fn into_first(self) -> Option<Row> {
        self.rows.into_iter().next()
    }

    /// Every row decoded as `T`.
    pub fn decode<T: FromRow>(&self) -> Result<Vec<T>, Error> {
        self.rows.iter().map(T::from_row).collect()
    }
}

impl IntoIterator for Rows {
    type Item = Row;
    type IntoIter = std::vec::IntoIter<Row>;

    fn into_iter(self) -> Self::IntoIter {
        self.rows.into_iter()
    }
}

impl<'a> IntoIterator for &'a Rows {
    type Item = &'a Row;
    type IntoIter = std::slice::Iter<'a, Row>;

    fn into_iter(self) -> Self::IntoIter {
        self.rows.iter()
    }
}
