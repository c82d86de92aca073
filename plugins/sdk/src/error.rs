//! The handler's error: an HTTP status and the contract's JSON error body,
//! with the internal cause of a 5xx kept for the log and out of the body.

use std::borrow::Cow;
use std::fmt;

use serde_json::json;

use crate::bindings::trellis::api::{config, sql};
use crate::response::Response;

/// A request that failed, answered as
/// `{"error":{"code":"NOT_FOUND","message":"..."}}` with its status.
///
/// 4xx errors carry detail for the client. 5xx errors say only `internal
/// error` (or `service unavailable`); what went wrong is in [`Error::cause`],
/// which the SDK logs and never sends.
#[derive(Clone, Debug)]
pub struct Error {
    status: u16,
    code: Cow<'static, str>,
    message: String,
    /// The request field that failed validation, when there is one.
    field: Option<String>,
    /// For the log only.
    cause: Option<String>,
    headers: Vec<(String, String)>,
}

impl Error {
    /// An error with any status, code and message.
    pub fn new(
        status: u16,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Error {
        Error {
            status,
            code: code.into(),
            message: message.into(),
            field: None,
            cause: None,
            headers: Vec::new(),
        }
    }

    /// 400 `BAD_REQUEST`: the request cannot be read at all (e.g. malformed JSON).
    pub fn bad_request(message: impl Into<String>) -> Error {
        Error::new(400, "BAD_REQUEST", message)
    }

    /// 401 `UNAUTHORIZED`.
    pub fn unauthorized(message: impl Into<String>) -> Error {
        Error::new(401, "UNAUTHORIZED", message)
    }

    /// 403 `FORBIDDEN`.
    pub fn forbidden(message: impl Into<String>) -> Error {
        Error::new(403, "FORBIDDEN", message)
    }

    /// 404 `NOT_FOUND`.
    pub fn not_found(message: impl Into<String>) -> Error {
        Error::new(404, "NOT_FOUND", message)
    }

    /// 405 `METHOD_NOT_ALLOWED`, with the `Allow` header listing `allowed`.
    pub fn method_not_allowed(allowed: &[&str]) -> Error {
        Error::new(405, "METHOD_NOT_ALLOWED", "method not allowed")
            .with_header("allow", &allowed.join(", "))
    }

    /// 409 `CONFLICT`: the request clashes with the current state (a
    /// duplicate of a unique value, say).
    pub fn conflict(message: impl Into<String>) -> Error {
        Error::new(409, "CONFLICT", message)
    }

    /// 422 `VALIDATION_FAILED` for the request field `field`; the message
    /// is `"{field} {problem}"`, e.g. `invalid("name", "must not be empty")`,
    /// and the body names the field in `error.field`.
    pub fn invalid(field: &str, problem: impl fmt::Display) -> Error {
        let mut error = Error::new(422, "VALIDATION_FAILED", format!("{field} {problem}"));
        error.field = Some(field.to_owned());
        error
    }

    /// 422 `VALIDATION_FAILED` not tied to one field.
    pub fn validation(message: impl Into<String>) -> Error {
        Error::new(422, "VALIDATION_FAILED", message)
    }

    /// 500 `INTERNAL_ERROR`: the client sees `internal error`; `cause` goes
    /// to the log.
    pub fn internal(cause: impl fmt::Display) -> Error {
        Error::new(500, "INTERNAL_ERROR", "internal error").with_cause(cause)
    }

    /// 503 `UNAVAILABLE` with `Retry-After: 1`: a dependency is busy or
    /// down, and trying again soon may work.
    pub fn unavailable(cause: impl fmt::Display) -> Error {
        Error::new(503, "UNAVAILABLE", "service unavailable")
            .with_cause(cause)
            .with_header("retry-after", "1")
    }

    /// Attaches an internal cause, written to the log with a 5xx.
    #[must_use]
    pub fn with_cause(mut self, cause: impl fmt::Display) -> Error {
        self.cause = Some(cause.to_string());
        self
    }

    /// Adds a response header.
    #[must_use]
    pub fn with_header(mut self, name: &str, value: &str) -> Error {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The machine-readable code, e.g. `NOT_FOUND`.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The message the client sees.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The internal cause, if any; never sent to the client.
    pub fn cause(&self) -> Option<&str> {
        self.cause.as_deref()
    }

    /// The JSON response; `request_id` is echoed in the body as the host's
    /// own errors do.
    pub(crate) fn into_response(self, request_id: Option<&str>) -> Response {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(field) = self.field {
            error["field"] = field.into();
        }
        if let Some(id) = request_id {
            error["request_id"] = id.into();
        }
        let mut response = Response::json(&json!({ "error": error })).with_status(self.status);
        for (name, value) in &self.headers {
            response = response.with_header(name, value);
        }
        response
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)?;
        if let Some(cause) = &self.cause {
            write!(f, " ({cause})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

/// A unique-constraint `conflict` is a 409 whose message names no SQL; a
/// busy or unreachable database is a 503; anything else is a 500. The
/// database's own message stays in the cause.
impl From<sql::Error> for Error {
    fn from(error: sql::Error) -> Error {
        let cause = format!("sql: {}", crate::sql::describe(&error));
        match error {
            sql::Error::Conflict(_) => {
                Error::conflict("the request conflicts with an existing record").with_cause(cause)
            }
            sql::Error::PoolTimeout | sql::Error::Timeout | sql::Error::Unavailable(_) => {
                Error::unavailable(cause)
            }
            sql::Error::Database(_) | sql::Error::UnsupportedType(_) | sql::Error::Closed => {
                Error::internal(cause)
            }
        }
    }
}

impl From<config::Error> for Error {
    fn from(error: config::Error) -> Error {
        match error {
            config::Error::InvalidKey(key) => {
                Error::internal(format!("config: invalid key {key:?}"))
            }
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(error: std::io::Error) -> Error {
        Error::internal(format!("io: {error}"))
    }
}

/// A queue the route may not use or that does not exist is the handler's
/// bug (500); a payload over the limit or bad options is the client's
/// input (422); a store out of reach is a 503.
impl From<crate::queue::Error> for Error {
    fn from(error: crate::queue::Error) -> Error {
        let cause = format!("queue: {}", crate::queue::describe(&error));
        match error {
            crate::queue::Error::PayloadTooLarge(_) | crate::queue::Error::InvalidOptions(_) => {
                Error::validation(crate::queue::describe(&error)).with_cause(cause)
            }
            crate::queue::Error::Unavailable(_) => Error::unavailable(cause),
            crate::queue::Error::UnknownQueue(_) | crate::queue::Error::NotGranted(_) => {
                Error::internal(cause)
            }
        }
    }
}
