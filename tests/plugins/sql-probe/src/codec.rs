//! JSON forms of WIT values and errors, exact in both directions so a test
//! can send any `value` and compare what comes back bit for bit.
//!
//! Values: `"null"`, `{"int":-9223372036854775808}`, `{"float":1.5}` or
//! `{"float_bits":"3ff8000000000000"}` (read back as both),
//! `{"text":"é"}`, `{"blob":"00ff"}` (hex), `{"bool":true}`.
//! Errors: `{"variant":"conflict","code":"23505","message":".."}`,
//! `{"variant":"unsupported-type","detail":".."}`, `{"variant":"closed"}`, ...

use serde_json::{Value as Json, json};
use trellis_sdk::raw::{config, log, sql};

/// A parameter from its JSON form.
pub(crate) fn value(json: &Json) -> Result<sql::Value, String> {
    if json == "null" {
        return Ok(sql::Value::Null);
    }
    let (tag, inner) = json
        .as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.iter().next())
        .ok_or_else(|| format!("not a tagged value: {json}"))?;
    let bad = || format!("bad {tag} value: {inner}");
    Ok(match tag.as_str() {
        "int" => sql::Value::Int(inner.as_i64().ok_or_else(bad)?),
        "float" => sql::Value::Float(inner.as_f64().ok_or_else(bad)?),
        "float_bits" => {
            let bits = inner.as_str().ok_or_else(bad)?;
            sql::Value::Float(f64::from_bits(
                u64::from_str_radix(bits, 16).map_err(|_| bad())?,
            ))
        }
        "text" => sql::Value::Text(inner.as_str().ok_or_else(bad)?.to_owned()),
        "blob" => sql::Value::Blob(unhex(inner.as_str().ok_or_else(bad)?).ok_or_else(bad)?),
        "bool" => sql::Value::Boolean(inner.as_bool().ok_or_else(bad)?),
        _ => return Err(format!("unknown value tag {tag:?}")),
    })
}

/// The JSON form of a column value.
pub(crate) fn value_json(value: &sql::Value) -> Json {
    match value {
        sql::Value::Null => json!("null"),
        sql::Value::Int(i) => json!({ "int": i }),
        sql::Value::Float(f) => json!({ "float": f, "bits": format!("{:016x}", f.to_bits()) }),
        sql::Value::Text(s) => json!({ "text": s }),
        sql::Value::Blob(b) => json!({ "blob": hex(b) }),
        sql::Value::Boolean(b) => json!({ "bool": b }),
    }
}

pub(crate) fn rows_json(columns: &[String], rows: &[Vec<sql::Value>]) -> Json {
    json!({ "columns": columns, "rows": rows_only(rows) })
}

pub(crate) fn rows_only(rows: &[Vec<sql::Value>]) -> Json {
    rows.iter()
        .map(|row| row.iter().map(value_json).collect::<Json>())
        .collect()
}

pub(crate) fn sql_error(error: &sql::Error) -> Json {
    let database = |variant: &str, e: &sql::DatabaseError| json!({ "variant": variant, "code": e.code, "message": e.message });
    match error {
        sql::Error::Database(e) => database("database", e),
        sql::Error::Conflict(e) => database("conflict", e),
        sql::Error::PoolTimeout => json!({ "variant": "pool-timeout" }),
        sql::Error::Timeout => json!({ "variant": "timeout" }),
        sql::Error::UnsupportedType(detail) => {
            json!({ "variant": "unsupported-type", "detail": detail })
        }
        sql::Error::Closed => json!({ "variant": "closed" }),
        sql::Error::Unavailable(detail) => json!({ "variant": "unavailable", "detail": detail }),
    }
}

pub(crate) fn config_error(error: &config::Error) -> Json {
    match error {
        config::Error::InvalidKey(detail) => json!({ "variant": "invalid-key", "detail": detail }),
    }
}

pub(crate) fn log_error(error: &log::Error) -> Json {
    match error {
        log::Error::TooLarge(limit) => json!({ "variant": "too-large", "limit": limit }),
    }
}

pub(crate) fn level(name: &str) -> Result<log::Level, String> {
    Ok(match name {
        "trace" => log::Level::Trace,
        "debug" => log::Level::Debug,
        "info" => log::Level::Info,
        "warn" => log::Level::Warn,
        "error" => log::Level::Error,
        other => return Err(format!("unknown level {other:?}")),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
