//! A route's `schema` (JSON Schema 2020-12 for the body and the query) on
//! the real binary: invalid bodies refused with JSON pointers, valid ones
//! reaching the guest byte for byte, hostile bodies (not JSON, nested
//! 10,000 deep, too large), bad schema files and remote `$ref`s refused at
//! load, the query as an object of strings, the edge order, hot reload,
//! and `/openapi.json`. Every refusal is checked to have cost no
//! instantiation.

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use futures::stream;
use serde_json::{Value, json};

use crate::harness::{
    Launch, Manifest, TempDir, Trellis, assert_error, assert_valid_openapi, component, header,
    metric, run_cli,
};

/// A signup form: most keywords a JSON API uses, a `$ref` into `$defs`
/// and a property whose name needs escaping in a JSON pointer.
fn signup_schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["email", "name", "age"],
        "additionalProperties": false,
        "properties": {
            "email": {"type": "string", "format": "email", "maxLength": 254},
            "name": {"type": "string", "minLength": 1, "maxLength": 50},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "role": {"enum": ["user", "admin"]},
            "tags": {
                "type": "array", "maxItems": 3, "uniqueItems": true,
                "items": {"type": "string", "pattern": "^[a-z]+$"}
            },
            "address": {"$ref": "#/$defs/address"},
            "website": {"type": "string", "format": "uri"},
            "birthday": {"type": "string", "format": "date"},
            "id": {"type": "string", "format": "uuid"},
            "score": {"type": "number", "multipleOf": 0.5, "exclusiveMaximum": 10},
            "nickname": {"type": ["string", "null"], "minLength": 2},
            "kind": {"const": "person"},
            "prefs": {"type": "object", "minProperties": 1, "maxProperties": 2},
            "a/b": {"type": "integer"},
            "contact": {"oneOf": [{"type": "string"}, {"type": "integer"}]}
        },
        "$defs": {
            "address": {
                "type": "object",
                "required": ["city"],
                "properties": {
                    "city": {"type": "string"},
                    "zip": {"type": "string", "pattern": "^[0-9]{5}$"}
                }
            }
        }
    })
}

/// The smallest body the signup schema accepts, with `extra` merged in (a
/// `null` removes a key).
fn signup(extra: Value) -> Value {
    let mut body = json!({"email": "ada@example.com", "name": "Ada", "age": 36});
    let map = body.as_object_mut().unwrap();
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            map.remove(k);
        } else {
            map.insert(k.clone(), v.clone());
        }
    }
    body
}

/// Writes `schema` as `name` in `dir`; the absolute path, for a manifest.
fn schema_file(dir: &TempDir, name: &str, schema: &Value) -> String {
    dir.write(name, &schema.to_string())
        .to_str()
        .unwrap()
        .to_owned()
}

async fn instantiations(trellis: &Trellis, route: &str) -> f64 {
    metric(
        trellis,
        "trellis_instantiate_seconds_count",
        &[("route", route)],
    )
    .await
}

async fn post_json(
    trellis: &Trellis,
    path: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    trellis
        .client()
        .post(trellis.url(path))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Asserts a 422 `VALIDATION_FAILED` whose details name `path`; returns
/// the error object.
async fn assert_refused_at(response: reqwest::Response, path: &str, what: &str) -> Value {
    let body = assert_error(response, 422, "VALIDATION_FAILED").await;
    let error = body["error"].clone();
    let details = error["details"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: no details in {body}"));
    assert!(!details.is_empty() && details.len() <= 20, "{what}: {body}");
    for d in details {
        assert!(
            d["path"].is_string() && d["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {body}"
        );
    }
    assert!(
        details.iter().any(|d| d["path"] == path),
        "{what}: no detail at {path:?} in {body}"
    );
    error
}

#[tokio::test]
async fn invalid_bodies_are_refused_with_pointers_before_any_instance() {
    let dir = TempDir::new();
    let file = schema_file(&dir, "signup.json", &signup_schema());
    let trellis = Trellis::start(Manifest::new().route(
        "signup",
        "/signup",
        component::ECHO,
        &[&format!("schema = {{ body = {file:?} }}")],
    ))
    .await;

    let long = "x".repeat(300);
    let cases: Vec<(Value, &str)> = vec![
        (json!({}), "/email"),
        (signup(json!({"email": null})), "/email"),
        (signup(json!({"name": null})), "/name"),
        (signup(json!({"age": null})), "/age"),
        (signup(json!({"email": 5})), "/email"),
        (signup(json!({"email": "zz-not-an-email-zz"})), "/email"),
        (
            signup(json!({"email": format!("{long}@example.com")})),
            "/email",
        ),
        (signup(json!({"name": ""})), "/name"),
        (signup(json!({"name": "n".repeat(51)})), "/name"),
        (signup(json!({"name": ["Ada"]})), "/name"),
        (signup(json!({"age": -1})), "/age"),
        (signup(json!({"age": 151})), "/age"),
        (signup(json!({"age": 3.5})), "/age"),
        (signup(json!({"age": "36"})), "/age"),
        (signup(json!({"admin": true})), "/admin"),
        (signup(json!({"role": "root"})), "/role"),
        (signup(json!({"tags": "a"})), "/tags"),
        (signup(json!({"tags": ["a", "B"]})), "/tags/1"),
        (signup(json!({"tags": [1]})), "/tags/0"),
        (signup(json!({"tags": ["a", "b", "c", "d"]})), "/tags"),
        (signup(json!({"tags": ["a", "a"]})), "/tags"),
        (signup(json!({"address": {}})), "/address/city"),
        (
            signup(json!({"address": {"city": "Paris", "zip": "123"}})),
            "/address/zip",
        ),
        (signup(json!({"address": "Paris"})), "/address"),
        (signup(json!({"website": "not a uri"})), "/website"),
        (signup(json!({"birthday": "2024-13-45"})), "/birthday"),
        (signup(json!({"id": "not-a-uuid"})), "/id"),
        (signup(json!({"score": 10})), "/score"),
        (signup(json!({"score": 0.3})), "/score"),
        (signup(json!({"nickname": "a"})), "/nickname"),
        (signup(json!({"kind": "robot"})), "/kind"),
        (signup(json!({"prefs": {}})), "/prefs"),
        (signup(json!({"prefs": {"a": 1, "b": 2, "c": 3}})), "/prefs"),
        (signup(json!({"a/b": "x"})), "/a~1b"),
        (signup(json!({"contact": true})), "/contact"),
        (json!([]), ""),
        (json!("a string"), ""),
        (json!(null), ""),
        (json!(42), ""),
    ];
    assert!(cases.len() >= 30);
    for (body, path) in &cases {
        let response = post_json(&trellis, "/signup", body.to_string()).await;
        let error = assert_refused_at(response, path, &body.to_string()).await;
        let message = error["message"].as_str().unwrap();
        assert!(
            message.starts_with("the request body does not match the route's schema at "),
            "{body}: {message}"
        );
        // The client's values are never quoted back.
        assert!(!error.to_string().contains("zz-not-an-email-zz"), "{error}");
        assert!(!error.to_string().contains(&long), "{error}");
    }
    // `{}` misses three fields: all are listed.
    let response = post_json(&trellis, "/signup", "{}").await;
    let error = assert_refused_at(response, "/age", "{}").await;
    assert_eq!(error["details"].as_array().unwrap().len(), 3, "{error}");

    // At most 20 details, however many problems.
    let many: serde_json::Map<String, Value> =
        (0..100).map(|i| (format!("k{i}"), json!(i))).collect();
    let response = post_json(&trellis, "/signup", Value::Object(many).to_string()).await;
    let error = assert_refused_at(response, "/k0", "100 extra keys").await;
    assert_eq!(error["details"].as_array().unwrap().len(), 20, "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("more than"),
        "{error}"
    );

    assert_eq!(
        instantiations(&trellis, "signup").await,
        0.0,
        "a refused request instantiated the component"
    );
    // And a valid one goes through.
    let response = post_json(&trellis, "/signup", signup(json!({})).to_string()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(instantiations(&trellis, "signup").await, 1.0);
}

#[tokio::test]
async fn valid_bodies_reach_the_guest_byte_for_byte() {
    let dir = TempDir::new();
    let file = schema_file(&dir, "signup.json", &signup_schema());
    let trellis = Trellis::start(Manifest::new().route(
        "signup",
        "/signup",
        component::ECHO,
        &[
            &format!("schema = {{ body = {file:?} }}"),
            "methods = [\"GET\", \"POST\", \"PUT\", \"PATCH\", \"DELETE\"]",
        ],
    ))
    .await;
    // Odd spacing, escapes, key order, a duplicate key, exponent numbers,
    // a BOM-free UTF-8 name: the parser's view is not what the guest gets.
    let bodies = [
        signup(json!({})).to_string(),
        "{ \"age\" : 36 ,\n\t\"name\":\"Ad\\u00e9\" , \"email\":\"ada@example.com\" }\n".to_owned(),
        "{\"email\":\"a@example.com\",\"name\":\"Zoë 🌱\",\"age\":1e1,\"score\":9.5,\"tags\":[\"x\",\"y\"],\"address\":{\"city\":\"Lyon\",\"zip\":\"69001\"},\"nickname\":null}".to_owned(),
        "{\"name\":\"first\",\"name\":\"Ada\",\"email\":\"ada@example.com\",\"age\":0}".to_owned(),
    ];
    for body in &bodies {
        for method in [
            reqwest::Method::POST,
            reqwest::Method::PUT,
            reqwest::Method::PATCH,
        ] {
            let response = trellis
                .client()
                .request(method.clone(), trellis.url("/signup?x=1"))
                .header("content-type", "application/json; charset=utf-8")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{method} {body}");
            assert_eq!(header(response.headers(), "x-echo-path"), "/signup?x=1");
            assert_eq!(
                response.bytes().await.unwrap(),
                body.as_bytes(),
                "{method} {body}"
            );
        }
    }
    // Sent chunked, in small pieces: the same bytes, joined.
    let body = bodies[2].clone().into_bytes();
    let pieces: Vec<Result<Bytes, std::io::Error>> = body
        .chunks(7)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let response = trellis
        .client()
        .post(trellis.url("/signup"))
        .header("content-type", "application/vnd.api+json")
        .body(reqwest::Body::wrap_stream(stream::iter(pieces)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap(), body);

    // GET and DELETE carry no body here, so there is nothing to check.
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let response = trellis
            .client()
            .request(method.clone(), trellis.url("/signup"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{method}");
    }
    // A DELETE that does carry one is checked like any other.
    let response = trellis
        .client()
        .delete(trellis.url("/signup"))
        .header("content-type", "application/json")
        .body("{\"age\": 1}")
        .send()
        .await
        .unwrap();
    assert_refused_at(response, "/email", "DELETE with a body").await;
}

#[tokio::test]
async fn bodies_that_are_not_json_are_400_and_hostile_ones_too() {
    let dir = TempDir::new();
    let file = schema_file(&dir, "signup.json", &signup_schema());
    let trellis = Trellis::start(Manifest::new().route(
        "signup",
        "/signup",
        component::ECHO,
        &[
            &format!("schema = {{ body = {file:?} }}"),
            r#"max_body = "64KiB""#,
        ],
    ))
    .await;
    let valid = signup(json!({})).to_string();
    let send = |content_type: Option<&'static str>, body: Vec<u8>| {
        let mut request = trellis.client().post(trellis.url("/signup")).body(body);
        if let Some(value) = content_type {
            request = request.header("content-type", value);
        }
        request.send()
    };

    for (content_type, body, says) in [
        (
            Some("application/json"),
            b"{not json".to_vec(),
            "not valid JSON",
        ),
        (
            Some("application/json"),
            b"{\"email\": ".to_vec(),
            "not valid JSON",
        ),
        (
            Some("application/json"),
            b"{\"a\":1} trailing".to_vec(),
            "not valid JSON",
        ),
        (
            Some("application/json"),
            b"\xff\xfe{}".to_vec(),
            "not valid JSON",
        ),
        (
            Some("application/json"),
            b"{\"name\": \"\xc3\x28\"}".to_vec(),
            "not valid JSON",
        ),
        (Some("application/json"), Vec::new(), "empty"),
        (
            Some("text/plain"),
            valid.clone().into_bytes(),
            "Content-Type: application/json",
        ),
        (
            Some("application/x-www-form-urlencoded"),
            valid.clone().into_bytes(),
            "Content-Type: application/json",
        ),
        (
            Some("text/json"),
            valid.clone().into_bytes(),
            "Content-Type: application/json",
        ),
        (
            None,
            valid.clone().into_bytes(),
            "Content-Type: application/json",
        ),
        (
            Some("application/json"),
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
            "nested too deeply",
        ),
        (
            Some("application/json"),
            format!("{}1{}", "{\"a\":".repeat(10_000), "}".repeat(10_000)).into_bytes(),
            "nested too deeply",
        ),
        (
            Some("application/json"),
            // Deep inside an otherwise valid body.
            format!(
                "{{\"email\":\"a@example.com\",\"name\":\"A\",\"age\":1,\"prefs\":{{\"x\":{}{}}}}}",
                "[".repeat(5_000),
                "]".repeat(5_000)
            )
            .into_bytes(),
            "nested too deeply",
        ),
    ] {
        let what = format!(
            "{content_type:?} {}",
            String::from_utf8_lossy(&body[..body.len().min(40)])
        );
        let response = send(content_type, body).await.unwrap();
        let error = assert_error(response, 400, "BAD_REQUEST").await;
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{what}: {message}");
    }

    // Too large: on Content-Length before reading, or while reading a
    // chunked body; either way 413, and the host still serves.
    let big = format!(
        "{{\"email\":\"a@example.com\",\"name\":\"{}\",\"age\":1}}",
        "n".repeat(70_000)
    );
    let response = post_json(&trellis, "/signup", big.clone()).await;
    assert_eq!(header(response.headers(), "connection"), "close");
    assert_error(response, 413, "PAYLOAD_TOO_LARGE").await;
    let pieces: Vec<Result<Bytes, std::io::Error>> = big
        .into_bytes()
        .chunks(4096)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let response = trellis
        .client()
        .post(trellis.url("/signup"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream::iter(pieces)))
        .send()
        .await
        .unwrap();
    assert_error(response, 413, "PAYLOAD_TOO_LARGE").await;
    // Exactly at the limit is read and checked (and refused as a schema
    // mismatch, not as too large).
    let name_len = 64 * 1024 - "{\"email\":\"a@example.com\",\"name\":\"\",\"age\":1}".len();
    let at_limit = format!(
        "{{\"email\":\"a@example.com\",\"name\":\"{}\",\"age\":1}}",
        "n".repeat(name_len)
    );
    assert_eq!(at_limit.len(), 64 * 1024);
    let response = post_json(&trellis, "/signup", at_limit).await;
    assert_refused_at(response, "/name", "a 64 KiB name").await;

    assert_eq!(instantiations(&trellis, "signup").await, 0.0);
    let response = post_json(&trellis, "/signup", valid.clone()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), valid);
    assert_eq!(instantiations(&trellis, "signup").await, 1.0);
}

#[tokio::test]
async fn the_query_is_checked_as_an_object_of_strings() {
    let dir = TempDir::new();
    let query = json!({
        "type": "object",
        "required": ["q"],
        "properties": {
            "q": {"type": "string", "minLength": 1},
            "limit": {"type": "string", "pattern": "^[1-9][0-9]{0,2}$"},
            "tag": {
                "type": ["string", "array"],
                "pattern": "^[a-z]+$",
                "items": {"type": "string", "pattern": "^[a-z]+$"}
            },
            "flag": {"enum": ["", "yes"]}
        },
        "additionalProperties": false
    });
    let file = schema_file(&dir, "query.json", &query);
    let trellis = Trellis::start(Manifest::new().route(
        "search",
        "/search",
        component::ECHO,
        &[&format!("schema = {{ query = {file:?} }}")],
    ))
    .await;
    for ok in [
        "/search?q=a",
        "/search?q=a+b&limit=10",
        "/search?q=%2Fx&tag=abc",
        "/search?q=a&tag=ab&tag=cd&tag=ef",
        "/search?q=a&flag",
        "/search?flag=yes&q=z",
    ] {
        let response = trellis.get(ok).await;
        assert_eq!(response.status(), 200, "{ok}");
        assert_eq!(header(response.headers(), "x-echo-path"), ok);
    }
    for (bad, path) in [
        ("/search", "/q"),
        ("/search?limit=10", "/q"),
        ("/search?q=", "/q"),
        ("/search?q=a&limit=abc", "/limit"),
        ("/search?q=a&limit=0", "/limit"),
        ("/search?q=a&limit=1000", "/limit"),
        ("/search?q=a&limit=1&limit=2", "/limit"),
        ("/search?q=a&tag=AB", "/tag"),
        ("/search?q=a&tag=ab&tag=C", "/tag/1"),
        ("/search?q=a&flag=no", "/flag"),
        ("/search?q=a&other=1", "/other"),
    ] {
        let error = assert_refused_at(trellis.get(bad).await, path, bad).await;
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .starts_with("the query string does not match"),
            "{error}"
        );
    }
    // The query is checked on every method, before the body.
    let response = trellis
        .client()
        .post(trellis.url("/search?limit=5"))
        .body("anything")
        .send()
        .await
        .unwrap();
    assert_refused_at(response, "/q", "POST without q").await;
    assert_eq!(instantiations(&trellis, "search").await, 6.0);
}

/// Rate limit and auth come first, the response cache after: a caller
/// without a key learns nothing about the schema, and a refused query is
/// never cached.
#[tokio::test]
async fn validation_runs_after_auth_and_before_the_cache() {
    let dir = TempDir::new();
    let body = schema_file(&dir, "signup.json", &signup_schema());
    let query = schema_file(
        &dir,
        "query.json",
        &json!({"properties": {"n": {"type": "string", "pattern": "^[0-9]+$"}}}),
    );
    let key = "schema-order-key-0123456789";
    let trellis = Trellis::start(
        Manifest::new()
            .section(&format!(
                "[auth.k]\ntype = \"api-key\"\nheader = \"x-api-key\"\nkeys = {{ env = \"TRELLIS_E2E_SCHEMA_UNSET\", default = {key:?} }}"
            ))
            .route(
                "guarded",
                "/guarded",
                component::ECHO,
                &["auth = \"k\"", &format!("schema = {{ body = {body:?} }}")],
            )
            .route(
                "cached",
                "/cached",
                component::HELLO,
                &["cache = { ttl = \"60s\" }", &format!("schema = {{ query = {query:?} }}")],
            ),
    )
    .await;
    let response = post_json(&trellis, "/guarded", "{not json").await;
    assert_error(response, 401, "UNAUTHORIZED").await;
    let response = post_json(&trellis, "/guarded", "{}").await;
    assert_error(response, 401, "UNAUTHORIZED").await;
    let with_key = |body: &'static str| {
        trellis
            .client()
            .post(trellis.url("/guarded"))
            .header("x-api-key", key)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    assert_refused_at(with_key("{}").await.unwrap(), "/email", "with a key").await;
    assert_eq!(instantiations(&trellis, "guarded").await, 0.0);
    let valid = r#"{"email":"a@example.com","name":"A","age":1}"#;
    let response = with_key(valid).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), valid);

    for _ in 0..3 {
        assert_refused_at(trellis.get("/cached?n=x").await, "/n", "cached").await;
    }
    let first = trellis.get("/cached?n=1").await;
    assert_eq!(first.status(), 200);
    assert_eq!(header(first.headers(), "x-trellis-cache"), "miss");
    let second = trellis.get("/cached?n=1").await;
    assert_eq!(header(second.headers(), "x-trellis-cache"), "hit");
    assert_eq!(instantiations(&trellis, "cached").await, 1.0);
}

/// Bad schema files are manifest errors naming the line of `schema` and
/// the field; a remote `$ref` is refused without any connection to it.
#[tokio::test]
async fn bad_schemas_and_remote_refs_are_refused_at_load() {
    let dir = TempDir::new();
    // A server the remote `$ref`s point at: it must never see a connection.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let remote = format!("http://{}/schema.json", listener.local_addr().unwrap());
    let write = |name: &str, text: &str| {
        dir.write(name, text)
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    };
    let cases: Vec<(String, &str, &str)> = vec![
        ("missing.json".into(), "body", "cannot read missing.json"),
        (write("not-json.json", "{\"type\": "), "body", "is not JSON"),
        (
            write("strin.json", "{\"type\": \"strin\"}"),
            "body",
            "not a valid JSON Schema 2020-12",
        ),
        (
            write("neg.json", "{\"minLength\": -1}"),
            "body",
            "not a valid JSON Schema",
        ),
        (
            write("regex.json", "{\"pattern\": \"(\"}"),
            "body",
            "not a valid JSON Schema",
        ),
        (write("array.json", "[]"), "body", "is not a JSON Schema"),
        (
            write(
                "remote.json",
                &json!({"properties": {"a": {"$ref": remote}}}).to_string(),
            ),
            "body",
            "is not in this file",
        ),
        (
            write(
                "remote-root.json",
                &json!({"$ref": format!("{remote}#/defs/a")}).to_string(),
            ),
            "body",
            "references outside it are refused",
        ),
        (
            write(
                "https.json",
                &json!({"$ref": "https://json-schema.org/draft/2020-12/schema"}).to_string(),
            ),
            "body",
            "is not in this file",
        ),
        (
            write("relative.json", &json!({"$ref": "other.json"}).to_string()),
            "body",
            "\"other.json\"",
        ),
        (
            write(
                "draft7.json",
                &json!({"$schema": "http://json-schema.org/draft-07/schema#"}).to_string(),
            ),
            "body",
            "only JSON Schema 2020-12",
        ),
        (
            write(
                "int-query.json",
                &json!({"properties": {"limit": {"type": "integer"}}}).to_string(),
            ),
            "query",
            "has type integer",
        ),
    ];
    for (file, key, says) in &cases {
        let text = format!(
            "[[route]]\npath = \"/a\"\ncomponent = \"a.wasm\"\n\nschema = {{ {key} = {file:?} }}\n"
        );
        let path = dir.write("trellis.toml", &text);
        let output = run_cli(&["check", path.to_str().unwrap()], dir.path()).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "accepted {file}");
        assert!(
            stderr.contains(&format!(":5: route[0].schema.{key}: ")),
            "{file}: {stderr}"
        );
        assert!(stderr.contains(says), "{file}: {says} not in {stderr}");
    }
    for (text, says) in [
        (
            "schema = {}",
            ":4: route[0].schema.body: name a `body` or a `query`",
        ),
        ("schema = { bdy = \"x.json\" }", "bdy"),
    ] {
        let path = dir.write(
            "trellis.toml",
            &format!("[[route]]\npath = \"/a\"\ncomponent = \"a.wasm\"\n{text}\n"),
        );
        let output = run_cli(&["check", path.to_str().unwrap()], dir.path()).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && stderr.contains(says),
            "{text}: {stderr}"
        );
        assert!(
            stderr.contains("line 4") || stderr.contains(":4:"),
            "{stderr}"
        );
    }
    // `serve` refuses it too, before listening.
    let served = Manifest::new().route(
        "a",
        "/a",
        component::ECHO,
        &["schema = { body = \"remote.json\" }"],
    );
    let path = dir.write("serve.toml", &served.render());
    let output = run_cli(
        &["serve", path.to_str().unwrap(), "--listen", "127.0.0.1:0"],
        dir.path(),
    )
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("route[0].schema.body") && stderr.contains("is not in this file"),
        "{stderr}"
    );

    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the host connected to the remote $ref"
    );
}

/// A schema in force is published in `/openapi.json`, which still
/// validates as OpenAPI 3.1.
#[tokio::test]
async fn schemas_are_published_in_openapi() {
    let dir = TempDir::new();
    let body = schema_file(&dir, "signup.json", &signup_schema());
    let query = schema_file(
        &dir,
        "query.json",
        &json!({
            "type": "object",
            "required": ["q"],
            "properties": {"q": {"type": "string"}, "page": {"$ref": "#/$defs/page"}},
            "$defs": {"page": {"type": "string", "pattern": "^[0-9]+$"}}
        }),
    );
    let trellis = Trellis::start(
        Manifest::new()
            .route(
                "signup",
                "/signup/{team}",
                component::ECHO,
                &[
                    "methods = [\"GET\", \"POST\"]",
                    &format!("schema = {{ body = {body:?}, query = {query:?} }}"),
                ],
            )
            .route("hello", "/", component::HELLO, &[]),
    )
    .await;
    let text = trellis.get("/openapi.json").await.text().await.unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["signup.body"]["required"],
        json!(["email", "name", "age"])
    );
    assert_eq!(
        schemas["signup.body"]["properties"]["address"]["$ref"],
        "#/components/schemas/signup.body/$defs/address"
    );
    let post = &doc["paths"]["/signup/{team}"]["post"];
    assert_eq!(
        post["requestBody"],
        json!({"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/signup.body"}}}})
    );
    assert!(post["responses"]["422"].is_object() && post["responses"]["400"].is_object());
    let get = &doc["paths"]["/signup/{team}"]["get"];
    assert!(get["requestBody"].is_null());
    let params = get["parameters"].as_array().unwrap();
    let find = |name: &str| {
        params
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} in {params:?}"))
    };
    assert_eq!(find("team")["in"], "path");
    assert_eq!(find("q")["in"], "query");
    assert_eq!(find("q")["required"], true);
    assert_eq!(find("page")["required"], false);
    assert_eq!(
        find("page")["schema"]["$ref"],
        "#/components/schemas/signup.query/$defs/page"
    );
    assert!(
        doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["details"]
            .is_object()
    );
    assert!(doc["paths"]["/"]["get"]["responses"]["422"].is_null());

    assert_valid_openapi(&text).await;
}

/// Watch mode: editing a schema file reloads it; a schema that no longer
/// compiles is logged and changes nothing.
#[tokio::test]
async fn watch_mode_reloads_schemas_and_keeps_the_last_good_one() {
    let dir = TempDir::new();
    let file: PathBuf = dir.write("s.json", &json!({"type": "object"}).to_string());
    let manifest = Manifest::new().route(
        "w",
        "/w",
        component::ECHO,
        &[&format!(
            "schema = {{ body = {:?} }}",
            file.to_str().unwrap()
        )],
    );
    let trellis = Trellis::launch(Launch {
        args: vec!["--watch".into()],
        ..Launch::manifest(manifest)
    })
    .await;
    trellis
        .wait_log("watching", |l| l["message"] == "watching for changes")
        .await;
    let status = |body: &'static str| {
        let trellis = &trellis;
        async move { post_json(trellis, "/w", body).await.status().as_u16() }
    };
    assert_eq!(status("{}").await, 200);

    std::fs::write(
        &file,
        json!({"type": "object", "required": ["id"]}).to_string(),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + crate::harness::WAIT;
    while status("{}").await != 422 {
        assert!(
            std::time::Instant::now() < deadline,
            "the stricter schema never applied"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status("{\"id\": 1}").await, 200);

    std::fs::write(&file, "{\"type\": \"strin\"}").unwrap();
    trellis
        .wait_log("the reload refused", |l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("manifest reload failed"))
                && l["cause"]
                    .as_str()
                    .is_some_and(|c| c.contains("route[0].schema.body"))
        })
        .await;
    assert_eq!(
        status("{}").await,
        422,
        "the last good schema still applies"
    );
    assert_eq!(status("{\"id\": 1}").await, 200);
}
