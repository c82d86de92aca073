//! A route's `schema = { body = "...", query = "..." }`: JSON Schema 2020-12
//! documents, read and compiled once when the manifest loads, so a bad
//! schema is a manifest error and a request never pays for compiling one.
//! What checks requests against them is [`crate::http::validation`].
//!
//! Nothing is ever fetched: the validator is built without a resolver
//! (`jsonschema` without its default features, and `offline`), and a
//! `$ref` that leaves the file is refused here, at load, with the file and
//! the pointer to it.

use serde::Deserialize;
use serde_json::Value;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// The dialect every schema is read as; a `$schema` naming another is
/// refused, since `/openapi.json` (OpenAPI 3.1) publishes them as 2020-12.
pub const DIALECT: &str = "https://json-schema.org/draft/2020-12/schema";

/// Largest schema file read: schemas are written by hand, and this keeps a
/// wrong path (a log, a dump) from being loaded into memory whole.
pub const MAX_FILE: u64 = 1 << 20;

/// `schema = { body, query }` as written: file paths, relative to the
/// manifest.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SchemaFiles {
    /// The schema a JSON request body must match.
    pub body: Option<String>,
    /// The schema the query string, as an object of strings, must match.
    pub query: Option<String>,
}

/// A route's compiled schemas. Shared by every version of the route built
/// from the same manifest, and compared by their documents so watch mode
/// sees a changed schema as a changed route.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteSchema {
    /// The body's schema.
    pub body: Option<Arc<Schema>>,
    /// The query's schema.
    pub query: Option<Arc<Schema>>,
}

/// One compiled schema and the document it came from.
pub struct Schema {
    /// The file, as the manifest names it.
    pub file: String,
    /// The document, for `/openapi.json` and for comparing versions.
    pub document: Value,
    validator: jsonschema::Validator,
}

impl Schema {
    /// Reads `file` (relative to `base_dir`) and compiles it as the `part`
    /// schema; the error says what is wrong, naming the file.
    pub fn load(base_dir: &Path, file: &str, part: Part) -> Result<Schema, String> {
        let path = base_dir.join(file);
        let size = std::fs::metadata(&path)
            .map_err(|e| format!("cannot read {file}: {e}"))?
            .len();
        if size > MAX_FILE {
            return Err(format!(
                "{file} is {size} bytes; a schema file may be at most {MAX_FILE}"
            ));
        }
        let text = std::fs::read(&path).map_err(|e| format!("cannot read {file}: {e}"))?;
        let document: Value =
            serde_json::from_slice(&text).map_err(|e| format!("{file} is not JSON: {e}"))?;
        Schema::compile(file, document, part)
    }

    /// Compiles `document`, named `file` in errors.
    pub fn compile(file: &str, document: Value, part: Part) -> Result<Schema, String> {
        if !matches!(document, Value::Object(_) | Value::Bool(_)) {
            return Err(format!(
                "{file} is not a JSON Schema: a schema is an object (or true/false)"
            ));
        }
        let mut ids = Vec::new();
        collect_ids(&document, &mut ids);
        check_references(&document, "", &ids).map_err(|m| format!("{file}: {m}"))?;
        if part == Part::Query {
            check_query(&document).map_err(|m| format!("{file}: {m}"))?;
        }
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            // `format` asserts (an `"email"` must look like one), as an
            // operator writing it expects; 2020-12 leaves this to the
            // implementation.
            .should_validate_formats(true)
            // Linear-time matching for `pattern`: the schema is the
            // operator's, but the strings it runs on are anyone's.
            .with_pattern_options(jsonschema::PatternOptions::regex())
            .offline()
            .build(&document)
            .map_err(|e| format!("{file} is not a valid JSON Schema 2020-12: {e}"))?;
        Ok(Schema {
            file: file.to_owned(),
            document,
            validator,
        })
    }

    /// The compiled validator.
    pub fn validator(&self) -> &jsonschema::Validator {
        &self.validator
    }
}

impl PartialEq for Schema {
    fn eq(&self, other: &Schema) -> bool {
        self.file == other.file && self.document == other.document
    }
}

// JSON has no NaN, so equality of documents is reflexive.
impl Eq for Schema {}

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schema").field("file", &self.file).finish()
    }
}

/// Which part of a request a schema checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The JSON body.
    Body,
    /// The query string, as an object of strings.
    Query,
}

impl Part {
    /// The key under `schema`.
    pub fn key(self) -> &'static str {
        match self {
            Part::Body => "body",
            Part::Query => "query",
        }
    }
}

/// Keywords whose values are data, not schemas: a `$ref` inside them is
/// not a reference.
const DATA_KEYWORDS: &[&str] = &["const", "enum", "examples", "default"];

fn collect_ids(value: &Value, ids: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if DATA_KEYWORDS.contains(&key.as_str()) {
                    continue;
                }
                if key == "$id"
                    && let Value::String(id) = child
                {
                    ids.push(id.trim_end_matches('#').to_owned());
                }
                collect_ids(child, ids);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_ids(v, ids)),
        _ => {}
    }
}

/// Refuses any `$ref` or `$dynamicRef` that leaves the document (an
/// `http(s)://` URL, a file, any URI that no `$id` in the document
/// declares) and any `$schema` other than 2020-12. `at` is the JSON
/// pointer of `value`.
fn check_references(value: &Value, at: &str, ids: &[String]) -> Result<(), String> {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if DATA_KEYWORDS.contains(&key.as_str()) {
                    continue;
                }
                let here = format!("{at}/{}", key.replace('~', "~0").replace('/', "~1"));
                match (key.as_str(), child) {
                    ("$ref" | "$dynamicRef", Value::String(target)) => {
                        let resource = target.split('#').next().unwrap_or_default();
                        if !resource.is_empty() && !ids.iter().any(|id| id == resource) {
                            return Err(format!(
                                "{key} {target:?} at {here} is not in this file: references \
                                 outside it are refused (nothing is ever fetched); move the \
                                 schema under \"$defs\" and refer to it as \"#/$defs/NAME\""
                            ));
                        }
                    }
                    ("$schema", Value::String(dialect))
                        if dialect.trim_end_matches('#') != DIALECT =>
                    {
                        return Err(format!(
                            "$schema {dialect:?} at {here}: only JSON Schema 2020-12 \
                             ({DIALECT:?}) is supported; leave $schema out or name it"
                        ));
                    }
                    _ => check_references(child, &here, ids)?,
                }
            }
            Ok(())
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| check_references(v, &format!("{at}/{i}"), ids)),
        _ => Ok(()),
    }
}

/// A query is an object of strings (arrays of strings for repeated
/// keys), never coerced: a property typed only as a number, a boolean or
/// an object could never match, so it is refused at load rather than
/// refusing every request.
fn check_query(document: &Value) -> Result<(), String> {
    let types = |schema: &Value| -> Option<Vec<String>> {
        match schema.get("type")? {
            Value::String(t) => Some(vec![t.clone()]),
            Value::Array(list) => Some(
                list.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect(),
            ),
            _ => None,
        }
    };
    if let Some(top) = types(document)
        && !top.iter().any(|t| t == "object")
    {
        return Err(format!(
            "a query schema describes an object (the query's keys), not {}",
            top.join(" or ")
        ));
    }
    let Some(Value::Object(properties)) = document.get("properties") else {
        return Ok(());
    };
    for (name, schema) in properties {
        if let Some(list) = types(schema)
            && !list.iter().any(|t| t == "string" || t == "array")
        {
            return Err(format!(
                "query property {name:?} has type {}, which no query value has: values are \
                 strings (an array of strings when the key repeats) and are not converted; \
                 use {{\"type\": \"string\", \"pattern\": \"^[0-9]+$\"}} for a number",
                list.join(" or ")
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compile(document: Value, part: Part) -> Result<Schema, String> {
        Schema::compile("s.json", document, part)
    }

    #[test]
    fn compiles_and_validates_2020_12() {
        let schema = compile(
            json!({
                "$schema": DIALECT,
                "type": "object",
                "required": ["email"],
                "properties": {
                    "email": {"type": "string", "format": "email"},
                    "tags": {"$ref": "#/$defs/tags"}
                },
                "$defs": {"tags": {"type": "array", "prefixItems": [{"const": "a"}]}}
            }),
            Part::Body,
        )
        .unwrap();
        let v = schema.validator();
        assert!(v.is_valid(&json!({"email": "a@example.com", "tags": ["a"]})));
        assert!(
            !v.is_valid(&json!({"email": "not an email"})),
            "format asserts"
        );
        assert!(!v.is_valid(&json!({"email": "a@example.com", "tags": ["b"]})));
        assert!(!v.is_valid(&json!({})));
    }

    #[test]
    fn refuses_references_that_leave_the_file() {
        for (document, says) in [
            (
                json!({"$ref": "https://example.com/user.json"}),
                "$ref \"https://example.com/user.json\" at /$ref is not in this file",
            ),
            (
                json!({"properties": {"a": {"$ref": "http://127.0.0.1:9/x.json#/a"}}}),
                "at /properties/a/$ref",
            ),
            (json!({"items": {"$ref": "other.json"}}), "\"other.json\""),
            (json!({"$ref": "file:///etc/passwd"}), "file:///etc/passwd"),
            (json!({"$dynamicRef": "urn:x"}), "$dynamicRef \"urn:x\""),
            (
                json!({"$schema": "http://json-schema.org/draft-07/schema#"}),
                "only JSON Schema 2020-12",
            ),
        ] {
            let err = compile(document.clone(), Part::Body).unwrap_err();
            assert!(err.contains(says), "{document}: {err}");
            assert!(err.starts_with("s.json: "), "{err}");
        }
        // An embedded resource is in the file; data is not a reference.
        compile(
            json!({
                "$id": "https://example.com/root",
                "properties": {"a": {"$ref": "https://example.com/addr"}},
                "$defs": {"addr": {"$id": "https://example.com/addr", "type": "string"}},
                "examples": [{"$ref": "https://elsewhere.example/"}]
            }),
            Part::Body,
        )
        .unwrap();
    }

    #[test]
    fn refuses_invalid_schemas_and_impossible_query_types() {
        let err = compile(json!({"type": "strin"}), Part::Body).unwrap_err();
        assert!(err.contains("not a valid JSON Schema 2020-12"), "{err}");
        let err = compile(json!({"minLength": -1}), Part::Body).unwrap_err();
        assert!(err.contains("not a valid JSON Schema"), "{err}");
        let err = compile(json!({"pattern": "("}), Part::Body).unwrap_err();
        assert!(err.contains("not a valid JSON Schema"), "{err}");
        let err = compile(json!([1]), Part::Body).unwrap_err();
        assert!(err.contains("is not a JSON Schema"), "{err}");
        let err = compile(
            json!({"properties": {"limit": {"type": "integer"}}}),
            Part::Query,
        )
        .unwrap_err();
        assert!(err.contains("\"limit\" has type integer"), "{err}");
        let err = compile(json!({"type": "array"}), Part::Query).unwrap_err();
        assert!(err.contains("describes an object"), "{err}");
        compile(
            json!({"properties": {"tag": {"type": ["string", "array"]}}}),
            Part::Query,
        )
        .unwrap();
    }
}
