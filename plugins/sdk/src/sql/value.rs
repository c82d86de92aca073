//! Conversions between Rust values and SQL [`Value`]s: [`ToSql`] for
//! parameters, [`FromSql`] for columns.

use super::Value;

/// A Rust value that can be bound as a statement parameter.
///
/// `Option<T>` binds `None` as NULL. Integers bind as `int`, floats as
/// `float`, strings as `text`, byte slices as `blob`.
pub trait ToSql {
    /// The parameter value.
    fn to_sql(&self) -> Value;
}

/// A Rust value that a column can be read as, with the column's name in the
/// error when it cannot.
pub trait FromSql: Sized {
    /// Converts `value`, or says what was expected.
    fn from_sql(value: &Value) -> Result<Self, String>;
}

/// The name of a value's case, for conversion errors.
pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Int(_) => "int",
        Value::Float(_) => "float",
        Value::Text(_) => "text",
        Value::Blob(_) => "blob",
        Value::Boolean(_) => "boolean",
    }
}

fn expected<T>(what: &str, value: &Value) -> Result<T, String> {
    Err(format!("expected {what}, found {}", kind(value)))
}

impl ToSql for Value {
    fn to_sql(&self) -> Value {
        self.clone()
    }
}

impl<T: ToSql + ?Sized> ToSql for &T {
    fn to_sql(&self) -> Value {
        (**self).to_sql()
    }
}

impl<T: ToSql> ToSql for Option<T> {
    fn to_sql(&self) -> Value {
        self.as_ref().map_or(Value::Null, ToSql::to_sql)
    }
}

macro_rules! int_to_sql {
    ($($t:ty),*) => {$(
        impl ToSql for $t {
            fn to_sql(&self) -> Value {
                Value::Int(i64::from(*self))
            }
        }
    )*};
}
int_to_sql!(i8, i16, i32, i64, u8, u16, u32);

impl ToSql for f64 {
    fn to_sql(&self) -> Value {
        Value::Float(*self)
    }
}

impl ToSql for f32 {
    fn to_sql(&self) -> Value {
        Value::Float(f64::from(*self))
    }
}

impl ToSql for bool {
    fn to_sql(&self) -> Value {
        Value::Boolean(*self)
    }
}

impl ToSql for str {
    fn to_sql(&self) -> Value {
        Value::Text(self.to_owned())
    }
}

impl ToSql for String {
    fn to_sql(&self) -> Value {
        Value::Text(self.clone())
    }
}

impl ToSql for [u8] {
    fn to_sql(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}

impl ToSql for Vec<u8> {
    fn to_sql(&self) -> Value {
        Value::Blob(self.clone())
    }
}

impl FromSql for Value {
    fn from_sql(value: &Value) -> Result<Self, String> {
        Ok(value.clone())
    }
}

impl<T: FromSql> FromSql for Option<T> {
    fn from_sql(value: &Value) -> Result<Self, String> {
        match value {
            Value::Null => Ok(None),
            other => T::from_sql(other).map(Some),
        }
    }
}

impl FromSql for i64 {
    fn from_sql(value: &Value) -> Result<Self, String> {
        match value {
            Value::Int(i) => Ok(*i),
            other => expected("int", other),
        }
    }
}

macro_rules! narrow_int_from_sql {
    ($($t:ty),*) => {$(
        impl FromSql for $t {
            fn from_sql(value: &Value) -> Result<Self, String> {
                let wide = i64::from_sql(value)?;
                <$t>::try_from(wide)
                    .map_err(|_| format!("{wide} does not fit in {}", stringify!($t)))
            }
        }
    )*};
}
narrow_int_from_sql!(i8, i16, i32, u8, u16, u32, u64, usize);

impl FromSql for f64 {
    /// Also reads an `int`: SQLite stores a REAL with no fraction as one.
    fn from_sql(value: &Value) -> Result<Self, String> {
        match value {
            Value::Float(f) => Ok(*f),
            #[expect(
                clippy::cast_precision_loss,
                reason = "what a REAL column holds anyway"
            )]
            Value::Int(i) => Ok(*i as f64),
            other => expected("float", other),
        }
    }
}

impl FromSql for bool {
    /// Also reads `int` 0 or 1: SQLite has no boolean storage class.
    fn from_sql(value: &Value) -> Result<Self, String> {
        match value {
            Value::Boolean(b) => Ok(*b),
            Value::Int(0) => Ok(false),
            Value::Int(1) => Ok(true),
            other => expected("boolean", other),
        }
    }
}

impl FromSql for String {
    fn from_sql(value: &Value) -> Result<Self, String> {
        match value {
            Value::Text(s) => Ok(s.clone()),
            other => expected("text", other),
        }
    }
}

impl FromSql for Vec<u8> {
    fn from_sql(value: &Value) -> Result<Self, String> {
        match value {
            Value::Blob(b) => Ok(b.clone()),
            other => expected("blob", other),
        }
    }
}

impl FromSql for serde_json::Value {
    /// Parses a `text` column holding JSON (PostgreSQL `json`/`jsonb`).
    fn from_sql(value: &Value) -> Result<Self, String> {
        match value {
            Value::Text(s) => serde_json::from_str(s).map_err(|e| format!("invalid JSON: {e}")),
            other => expected("JSON text", other),
        }
    }
}
