//! A route's `schema` at the edge: the query string and the JSON body
//! checked against the schemas compiled at load
//! ([`crate::config::manifest::schema`]), after auth and before the
//! response cache and any instance, so a refused request costs no guest.
//!
//! - A query schema sees the query as an object of strings (a key given
//!   more than once, an array of its strings), percent- and `+`-decoded;
//!   nothing is converted to numbers or booleans.
//! - A body schema applies to POST, PUT and PATCH, which must carry a
//!   JSON body, and to any other request that carries a body. The body is
//!   read whole under the route's `max_body` (413 past it) and `timeout`,
//!   parsed (serde_json's depth limit of 128 keeps a deeply nested body
//!   off the stack), checked, and handed to the guest byte for byte as it
//!   came.
//!
//! Not JSON, or not labelled as JSON, is 400 `BAD_REQUEST`; JSON that
//! does not match is 422 `VALIDATION_FAILED` with one detail (a JSON
//! pointer and a message that never quotes the value) per problem, at
//! most [`MAX_DETAILS`].

use crate::config::manifest::Limits;
use crate::config::manifest::schema::{RouteSchema, Schema};
use crate::http::body::{discard, discard_request};
use crate::http::error::ErrorKind;
use axum::body::Body;
use axum::extract::Request;
use bytes::{Bytes, BytesMut};
use http::{Method, header};
use http_body_util::BodyExt as _;
use jsonschema::error::ValidationErrorKind;
use serde_json::Value;

/// Most problems listed in one refusal: enough to fix a form at once,
/// few enough that a hostile body cannot make a huge answer.
pub const MAX_DETAILS: usize = 20;

/// Longest message of one detail, in bytes.
const MAX_MESSAGE: usize = 200;

/// Checks `req` against `schema`. Returns the request to serve (its body
/// read into memory when it was checked), or the refusal; a refused
/// request's unread body is disposed of first, so the client sees the
/// answer.
pub async fn check(
    schema: &RouteSchema,
    req: Request,
    limits: &Limits,
) -> Result<Request, ErrorKind> {
    if let Some(query) = &schema.query {
        let object = query_object(req.uri().query());
        if let Some(refusal) = refusal(query, &object, "the query string") {
            discard_request(req).await;
            return Err(refusal);
        }
    }
    let Some(body_schema) = &schema.body else {
        return Ok(req);
    };
    let required = matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH);
    if !required && http_body::Body::is_end_stream(req.body()) {
        return Ok(req);
    }
    if !labelled_json(req.headers()) {
        discard_request(req).await;
        return Err(ErrorKind::BadRequest(
            "this route takes a JSON body: send it with Content-Type: application/json".into(),
        ));
    }
    let max_body = limits.max_body.0;
    if content_length(&req).is_some_and(|len| len > max_body) {
        discard_request(req).await;
        return Err(ErrorKind::PayloadTooLarge { limit: max_body });
    }
    let (parts, body) = req.into_parts();
    let bytes = match tokio::time::timeout(limits.timeout.0, read(body, max_body)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(failure)) => return Err(failure),
        Err(_) => {
            return Err(ErrorKind::BadRequest(format!(
                "the request body did not arrive within {}",
                limits.timeout
            )));
        }
    };
    if bytes.is_empty() {
        return Err(ErrorKind::BadRequest(
            "the request body is empty; this route takes a JSON body".into(),
        ));
    }
    let instance: Value = serde_json::from_slice(&bytes).map_err(|e| {
        ErrorKind::BadRequest(if e.to_string().starts_with("recursion limit") {
            "the request body is nested too deeply: at most 128 levels of arrays and objects".into()
        } else {
            format!("the request body is not valid JSON: {e}")
        })
    })?;
    if let Some(refusal) = refusal(body_schema, &instance, "the request body") {
        return Err(refusal);
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// Reads all of `body`, up to `limit` bytes.
async fn read(mut body: Body, limit: u64) -> Result<Bytes, ErrorKind> {
    let mut first: Option<Bytes> = None;
    let mut rest = BytesMut::new();
    let mut seen = 0u64;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Err(ErrorKind::BadRequest(
                "the request body is malformed or incomplete".into(),
            ));
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers: not part of the JSON
        };
        seen += data.len() as u64;
        if seen > limit {
            // Read the rest (bounded) so the client sees the 413.
            discard(body).await;
            return Err(ErrorKind::PayloadTooLarge { limit });
        }
        // One chunk, the usual case for a small JSON body, is kept as
        // it came; more are joined.
        match &first {
            None if rest.is_empty() => first = Some(data),
            _ => {
                if let Some(chunk) = first.take() {
                    rest.extend_from_slice(&chunk);
                }
                rest.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| rest.freeze()))
}

/// Whether the request says its body is JSON: `application/json` or
/// `application/*+json`, any parameters. Requiring the label also keeps
/// browsers from sending such a body cross-origin without a CORS
/// preflight, as they do for `text/plain` and form encodings.
fn labelled_json(headers: &http::HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return false;
    };
    let essence = value
        .as_bytes()
        .split(|b| *b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    let Some(subtype) = essence
        .split_at_checked(12)
        .filter(|(ty, _)| ty.eq_ignore_ascii_case(b"application/"))
        .map(|(_, sub)| sub)
    else {
        return false;
    };
    subtype.eq_ignore_ascii_case(b"json")
        || subtype
            .split_last_chunk::<5>()
            .is_some_and(|(name, suffix)| !name.is_empty() && suffix.eq_ignore_ascii_case(b"+json"))
}

fn content_length(req: &Request) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The query string as the query schema sees it: an object of strings,
/// with an array of strings for a key that repeats.
pub fn query_object(query: Option<&str>) -> Value {
    let mut object = serde_json::Map::new();
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let value = Value::String(value.into_owned());
        match object.entry(key.into_owned()) {
            serde_json::map::Entry::Vacant(slot) => {
                slot.insert(value);
            }
            serde_json::map::Entry::Occupied(mut slot) => match slot.get_mut() {
                Value::Array(list) => list.push(value),
                first => {
                    let first = first.take();
                    slot.insert(Value::Array(vec![first, value]));
                }
            },
        }
    }
    Value::Object(object)
}

/// The 422 for `instance` against `schema`, or `None` when it matches.
fn refusal(schema: &Schema, instance: &Value, what: &str) -> Option<ErrorKind> {
    let validator = schema.validator();
    if validator.is_valid(instance) {
        return None;
    }
    let mut details = Vec::new();
    let mut more = false;
    for error in validator.iter_errors(instance) {
        if details.len() >= MAX_DETAILS {
            more = true;
            break;
        }
        let at = error.instance_path().as_str();
        match error.kind() {
            // Point at the property itself, as a form wants it.
            ValidationErrorKind::Required {
                property: Value::String(name),
            } => details.push((pointer(at, name), "is required".to_owned())),
            ValidationErrorKind::AdditionalProperties { unexpected }
            | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
                for name in unexpected {
                    details.push((pointer(at, name), "is not allowed here".to_owned()));
                }
            }
            _ => details.push((
                at.to_owned(),
                bounded(error.masked_with("the value").to_string()),
            )),
        }
    }
    // One error can bring many (`additionalProperties`).
    more |= details.len() > MAX_DETAILS;
    details.truncate(MAX_DETAILS);
    if details.is_empty() {
        // `is_valid` said no; never let a request through on a silent
        // error iterator.
        details.push((String::new(), "does not match".to_owned()));
    }
    // The first problem in the message, for people and logs; all of them
    // in `details`, for programs.
    let (path, problem) = &details[0];
    let at = if path.is_empty() { "its root" } else { path };
    let others = match (more, details.len() - 1) {
        (true, n) => format!(" (and more than {n} others; {MAX_DETAILS} are listed)"),
        (false, 0) => String::new(),
        (false, 1) => " (and 1 other)".to_owned(),
        (false, n) => format!(" (and {n} others)"),
    };
    Some(ErrorKind::SchemaMismatch {
        message: format!("{what} does not match the route's schema at {at}: {problem}{others}"),
        details,
    })
}

/// `at` (a JSON pointer) extended by the property `name`, escaped, and
/// bounded: the name is the client's.
fn pointer(at: &str, name: &str) -> String {
    bounded(format!(
        "{at}/{}",
        name.replace('~', "~0").replace('/', "~1")
    ))
}

fn bounded(mut text: String) -> String {
    if text.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::manifest::schema::Part;
    use serde_json::json;

    #[test]
    fn json_labels() {
        let headers = |v: &'static str| {
            let mut h = http::HeaderMap::new();
            h.insert(header::CONTENT_TYPE, http::HeaderValue::from_static(v));
            h
        };
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/merge-patch+json",
            " application/json ;x=y",
        ] {
            assert!(labelled_json(&headers(ok)), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/+json",
            "application/jsonx",
            "text/json",
            "",
        ] {
            assert!(!labelled_json(&headers(bad)), "{bad}");
        }
        assert!(!labelled_json(&http::HeaderMap::new()));
    }

    #[test]
    fn queries_are_objects_of_strings() {
        assert_eq!(
            query_object(Some("a=1&b=x+y&c=%2F&a=2&a=3&empty=&flag")),
            json!({"a": ["1", "2", "3"], "b": "x y", "c": "/", "empty": "", "flag": ""})
        );
        assert_eq!(query_object(None), json!({}));
    }

    #[test]
    fn details_point_at_fields_and_never_quote_values() {
        let schema = Schema::compile(
            "s.json",
            json!({
                "type": "object",
                "required": ["email", "a/b"],
                "additionalProperties": false,
                "properties": {
                    "email": {"type": "string", "format": "email"},
                    "a/b": {"type": "integer"},
                    "n": {"type": "integer", "maximum": 3}
                }
            }),
            Part::Body,
        )
        .unwrap();
        let Some(ErrorKind::SchemaMismatch { message, details }) = refusal(
            &schema,
            &json!({"n": 40, "secret-looking": 1, "email": "hunter2"}),
            "the body",
        ) else {
            panic!("expected a refusal")
        };
        let paths: Vec<&str> = details.iter().map(|(p, _)| p.as_str()).collect();
        assert!(paths.contains(&"/a~1b"), "{details:?}");
        assert!(paths.contains(&"/n"), "{details:?}");
        assert!(paths.contains(&"/email"), "{details:?}");
        assert!(paths.contains(&"/secret-looking"), "{details:?}");
        assert!(message.contains("(and 3 others)"), "{message}");
        assert!(!format!("{details:?}").contains("hunter2"), "{details:?}");
        assert!(refusal(&schema, &json!({"email": "a@b.example", "a/b": 1}), "x").is_none());

        let many: serde_json::Map<String, Value> =
            (0..50).map(|i| (format!("k{i}"), json!(i))).collect();
        let Some(ErrorKind::SchemaMismatch { message, details }) =
            refusal(&schema, &Value::Object(many), "the body")
        else {
            panic!("expected a refusal")
        };
        assert_eq!(details.len(), MAX_DETAILS);
        assert!(message.contains("and more than 19 others"), "{message}");
    }
}
