//! The users API of `examples/users`, end to end, on SQLite (the example's
//! default, a file beside the manifest) and on PostgreSQL (the example
//! unchanged but for `TRELLIS_DATABASE_URL`).
//!
//! The manifest is the example's own, with only the component and
//! migration paths made absolute and `page_size` changed, so a test
//! failure here is a failure of the example a user runs.

use reqwest::Method;
use serde_json::{Value, json};
use sqlx::Connection as _;

use crate::database::{Db, on_both};
use crate::harness::{
    Launch, Manifest, Trellis, assert_security_headers, component, header, shared_cache_dir,
};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/users");

/// The page size the tests configure, unlike the code's default of 20.
const PAGE_SIZE: usize = 7;

/// Serves `examples/users/trellis.toml` on `db`.
async fn start(db: &Db) -> Trellis {
    let example = std::fs::read_to_string(format!("{EXAMPLE}/trellis.toml"))
        .expect("reading the example's manifest");
    let mut text = example.clone();
    for (from, to) in [
        (
            "\"../../target/guests/wasm32-wasip2/release/users.wasm\"".to_owned(),
            format!("{:?}", component::USERS),
        ),
        (
            "\"migrations/".to_owned(),
            format!("\"{EXAMPLE}/migrations/"),
        ),
        (
            "body = \"schemas/".to_owned(),
            format!("body = \"{EXAMPLE}/schemas/"),
        ),
        (
            "query = \"schemas/".to_owned(),
            format!("query = \"{EXAMPLE}/schemas/"),
        ),
        (
            "page_size = \"20\"".to_owned(),
            format!("page_size = \"{PAGE_SIZE}\""),
        ),
    ] {
        assert!(text.contains(&from), "the example no longer has {from}");
        text = text.replace(&from, &to);
    }
    assert!(text.contains("url = \"sqlite://users.db\""));
    let env = match db {
        Db::Sqlite(_) => vec![],
        // The one variable the example says to set.
        Db::Postgres(_) => vec![("TRELLIS_DATABASE_URL".to_owned(), db.url())],
    };
    Trellis::launch(Launch {
        manifest: Some(Manifest::raw(&text)),
        cache_dir: Some(shared_cache_dir()),
        env,
        ..Launch::default()
    })
    .await
}

/// How many users the database holds, read outside the host.
async fn stored_users(db: &Db, trellis: &Trellis) -> i64 {
    match db {
        Db::Postgres(_) => db.scalar("SELECT COUNT(*) FROM users").await,
        Db::Sqlite(_) => {
            let file = trellis.manifest_path().with_file_name("users.db");
            let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&file);
            let mut conn = sqlx::SqliteConnection::connect_with(&options)
                .await
                .unwrap_or_else(|e| panic!("opening {}: {e}", file.display()));
            sqlx::query_scalar("SELECT COUNT(*) FROM users")
                .fetch_one(&mut conn)
                .await
                .expect("counting users")
        }
    }
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

async fn call(trellis: &Trellis, method: Method, path: &str, body: Option<&str>) -> Answer {
    let mut request = trellis.client().request(method.clone(), trellis.url(path));
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    assert_security_headers(&headers);
    let bytes = response.bytes().await.expect("reading the body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        assert!(
            header(&headers, "content-type").starts_with("application/json"),
            "{method} {path}: {headers:?}"
        );
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{method} {path}: not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        })
    };
    Answer {
        status,
        headers,
        body,
    }
}

async fn post(trellis: &Trellis, body: &Value) -> Answer {
    call(trellis, Method::POST, "/users", Some(&body.to_string())).await
}

/// Asserts an API error of the contract's shape; returns its message.
#[track_caller]
fn assert_api_error(answer: &Answer, status: u16, code: &str) -> String {
    assert_eq!(answer.status, status, "{}", answer.body);
    let error = &answer.body["error"];
    assert_eq!(error["code"], code, "{}", answer.body);
    // The SDK reads the id from the host only when a handler fails; it
    // must still be the one the response carries.
    assert_eq!(
        error["request_id"],
        header(&answer.headers, "x-request-id"),
        "{}",
        answer.body
    );
    let message = error["message"].as_str().expect("a message").to_owned();
    assert!(!message.is_empty());
    message
}

/// Asserts `user` is a complete user with this name and email.
#[track_caller]
fn assert_user(user: &Value, name: &str, email: &str) -> i64 {
    assert_eq!(user["name"], name, "{user}");
    assert_eq!(user["email"], email, "{user}");
    let created = user["created_at"].as_str().expect("created_at is a string");
    // ISO 8601 on both databases: 2026-11-01T03:04:05...
    assert!(
        created.len() >= 20 && created.as_bytes()[4] == b'-' && created.as_bytes()[10] == b'T',
        "created_at {created:?}"
    );
    assert_eq!(user.as_object().unwrap().len(), 4, "{user}");
    user["id"].as_i64().expect("an integer id")
}

on_both!(
    create_get_and_validate,
    list_and_paginate,
    update_and_delete,
    reads_go_through_the_cache
);

async fn create_get_and_validate(db: Db) {
    let trellis = start(&db).await;
    let created = post(
        &trellis,
        &json!({ "name": "Ada Lovelace", "email": "ada@example.com" }),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = assert_user(&created.body, "Ada Lovelace", "ada@example.com");
    assert_eq!(header(&created.headers, "location"), format!("/users/{id}"));

    let fetched = call(&trellis, Method::GET, &format!("/users/{id}"), None).await;
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.body, created.body, "GET returns what POST did");

    // Each invalid body is refused by the host, against the example's
    // `schemas/user.json`, with the field named; it stores nothing and
    // never reaches the component.
    let instances = || {
        crate::harness::metric(
            &trellis,
            "trellis_instantiate_seconds_count",
            &[("route", "users")],
        )
    };
    let before = instances().await;
    let long_name = "n".repeat(101);
    let long_email = format!("{}@example.com", "e".repeat(243));
    for (body, field) in [
        (json!({ "name": "", "email": "x@example.com" }), "name"),
        (json!({ "name": "   ", "email": "x@example.com" }), "name"),
        (
            json!({ "name": long_name, "email": "x@example.com" }),
            "name",
        ),
        (json!({ "email": "x@example.com" }), "name"),
        (json!({ "name": 7, "email": "x@example.com" }), "name"),
        (json!({ "name": "X", "email": "no-at-sign" }), "email"),
        (json!({ "name": "X", "email": long_email }), "email"),
        (json!({ "name": "X" }), "email"),
        (
            json!({ "name": "X", "email": "x@example.com", "admin": true }),
            "admin",
        ),
    ] {
        let answer = post(&trellis, &body).await;
        let message = assert_api_error(&answer, 422, "VALIDATION_FAILED");
        assert!(message.contains(&format!("/{field}")), "{body}: {message}");
        assert_eq!(
            answer.body["error"]["details"][0]["path"],
            format!("/{field}"),
            "{body}"
        );
    }
    let answer = call(&trellis, Method::POST, "/users", Some("{not json")).await;
    assert_api_error(&answer, 400, "BAD_REQUEST");
    let answer = call(&trellis, Method::POST, "/users", Some("[1, 2]")).await;
    assert_api_error(&answer, 422, "VALIDATION_FAILED");
    // Not sent as JSON: refused before the body is read.
    let response = trellis
        .client()
        .post(trellis.url("/users"))
        .body(json!({ "name": "Ada", "email": "a@example.com" }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    // The same schema guards PUT.
    let answer = call(
        &trellis,
        Method::PUT,
        &format!("/users/{id}"),
        Some(r#"{"name": "Ada"}"#),
    )
    .await;
    assert_api_error(&answer, 422, "VALIDATION_FAILED");
    assert_eq!(answer.body["error"]["details"][0]["path"], "/email");
    assert_eq!(
        instances().await,
        before,
        "a refused body reached the component"
    );

    // The limits are inclusive, and counted in characters.
    let name = "é".repeat(100);
    let email = format!("{}@example.com", "e".repeat(242));
    assert_eq!(email.chars().count(), 254);
    let answer = post(&trellis, &json!({ "name": name, "email": email })).await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    assert_user(&answer.body, &name, &email);

    // A taken email is a 409 that names no SQL.
    let answer = post(
        &trellis,
        &json!({ "name": "Imposter", "email": "ada@example.com" }),
    )
    .await;
    let message = assert_api_error(&answer, 409, "CONFLICT");
    for leak in ["UNIQUE", "unique", "constraint", "users", "2067", "23505"] {
        assert!(
            !message.contains(leak),
            "409 message leaks {leak}: {message}"
        );
    }

    // A name that looks like SQL is stored as written.
    let sneaky = "Robert'); DROP TABLE users;--";
    let answer = post(
        &trellis,
        &json!({ "name": sneaky, "email": "bobby@example.com" }),
    )
    .await;
    assert_eq!(answer.status, 201);
    let sneaky_id = assert_user(&answer.body, sneaky, "bobby@example.com");
    let fetched = call(&trellis, Method::GET, &format!("/users/{sneaky_id}"), None).await;
    assert_eq!(fetched.body["name"], sneaky);

    let missing = call(&trellis, Method::GET, "/users/999999", None).await;
    assert_api_error(&missing, 404, "NOT_FOUND");
    let not_a_number = call(&trellis, Method::GET, "/users/abc", None).await;
    let message = assert_api_error(&not_a_number, 422, "VALIDATION_FAILED");
    assert!(message.contains("id"), "{message}");

    assert_eq!(stored_users(&db, &trellis).await, 3);
    if let Db::Sqlite(_) = db {
        assert!(trellis.manifest_path().with_file_name("users.db").is_file());
    }

    let digest = crate::harness::sha256_hex(component::USERS);
    let log = trellis
        .wait_log("user created", |l| {
            l["message"] == "user created" && l["fields"] == format!("{{\"user_id\":\"{id}\"}}")
        })
        .await;
    assert_eq!(log["level"], "INFO");
    assert_eq!(log["route"], "users");
    assert_eq!(log["component"], digest);
    assert_eq!(log["request_id"], header(&created.headers, "x-request-id"));
}

async fn list_and_paginate(db: Db) {
    let trellis = start(&db).await;
    let empty = call(&trellis, Method::GET, "/users", None).await;
    assert_eq!(empty.status, 200);
    assert_eq!(
        empty.body,
        json!({ "users": [], "limit": PAGE_SIZE, "offset": 0, "total": 0 })
    );

    let mut ids = Vec::new();
    for i in 0..23 {
        let answer = post(
            &trellis,
            &json!({ "name": format!("user {i}"), "email": format!("u{i}@example.com") }),
        )
        .await;
        assert_eq!(answer.status, 201, "{}", answer.body);
        ids.push(answer.body["id"].as_i64().unwrap());
    }
    let page_ids = |answer: &Answer| -> Vec<i64> {
        answer.body["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["id"].as_i64().unwrap())
            .collect()
    };

    // The route's `page_size`, in id order.
    let first = call(&trellis, Method::GET, "/users", None).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.body["limit"], PAGE_SIZE);
    assert_eq!(first.body["offset"], 0);
    assert_eq!(first.body["total"], 23);
    assert_eq!(page_ids(&first), ids[..PAGE_SIZE]);
    assert_user(&first.body["users"][0], "user 0", "u0@example.com");

    let middle = call(&trellis, Method::GET, "/users?limit=10&offset=10", None).await;
    assert_eq!(page_ids(&middle), ids[10..20]);
    assert_eq!(
        (
            middle.body["limit"].as_i64(),
            middle.body["offset"].as_i64()
        ),
        (Some(10), Some(10))
    );

    let last = call(&trellis, Method::GET, "/users?offset=20&limit=10", None).await;
    assert_eq!(page_ids(&last), ids[20..]);
    let past = call(&trellis, Method::GET, "/users?offset=100", None).await;
    assert_eq!(page_ids(&past), Vec::<i64>::new());
    assert_eq!(past.body["total"], 23);

    // Capped at 100.
    let capped = call(&trellis, Method::GET, "/users?limit=5000", None).await;
    assert_eq!(capped.body["limit"], 100);
    assert_eq!(page_ids(&capped), ids);

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("offset=-1", "offset"),
    ] {
        let answer = call(&trellis, Method::GET, &format!("/users?{query}"), None).await;
        let message = assert_api_error(&answer, 422, "VALIDATION_FAILED");
        assert!(message.contains(field), "{query}: {message}");
        // Refused by the example's `schemas/list.json`.
        assert_eq!(
            answer.body["error"]["details"][0]["path"],
            format!("/{field}"),
            "{query}"
        );
    }
    assert_eq!(stored_users(&db, &trellis).await, 23);
}

async fn update_and_delete(db: Db) {
    let trellis = start(&db).await;
    let ada = post(
        &trellis,
        &json!({ "name": "Ada", "email": "ada@example.com" }),
    )
    .await;
    let grace = post(
        &trellis,
        &json!({ "name": "Grace", "email": "grace@example.com" }),
    )
    .await;
    let ada_id = ada.body["id"].as_i64().unwrap();
    let grace_id = grace.body["id"].as_i64().unwrap();
    let path = format!("/users/{ada_id}");
    let put = |body: Value| {
        let path = path.clone();
        let trellis = &trellis;
        async move { call(trellis, Method::PUT, &path, Some(&body.to_string())).await }
    };

    let updated = put(json!({ "name": "Ada King", "email": "ada@king.example" })).await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    assert_eq!(
        assert_user(&updated.body, "Ada King", "ada@king.example"),
        ada_id
    );
    assert_eq!(updated.body["created_at"], ada.body["created_at"]);
    let fetched = call(&trellis, Method::GET, &path, None).await;
    assert_eq!(fetched.body, updated.body);

    let answer = put(json!({ "name": "", "email": "ada@king.example" })).await;
    assert!(assert_api_error(&answer, 422, "VALIDATION_FAILED").contains("name"));
    let answer = put(json!({ "name": "Ada", "email": "nope" })).await;
    assert!(assert_api_error(&answer, 422, "VALIDATION_FAILED").contains("email"));
    let answer = put(json!({ "name": "Ada", "email": "grace@example.com" })).await;
    assert_api_error(&answer, 409, "CONFLICT");
    let unchanged = call(&trellis, Method::GET, &path, None).await;
    assert_eq!(
        unchanged.body, updated.body,
        "a refused update changes nothing"
    );
    let answer = call(
        &trellis,
        Method::PUT,
        "/users/999999",
        Some(r#"{"name":"Nobody","email":"nobody@example.com"}"#),
    )
    .await;
    assert_api_error(&answer, 404, "NOT_FOUND");

    let deleted = call(&trellis, Method::DELETE, &path, None).await;
    assert_eq!(deleted.status, 204);
    assert_eq!(deleted.body, Value::Null);
    assert_api_error(
        &call(&trellis, Method::GET, &path, None).await,
        404,
        "NOT_FOUND",
    );
    assert_api_error(
        &call(&trellis, Method::DELETE, &path, None).await,
        404,
        "NOT_FOUND",
    );
    // Grace is untouched, and her email can now be reused by no one else.
    let grace_now = call(&trellis, Method::GET, &format!("/users/{grace_id}"), None).await;
    assert_eq!(grace_now.body, grace.body);
    let reuse = post(
        &trellis,
        &json!({ "name": "Ada", "email": "ada@king.example" }),
    )
    .await;
    assert_eq!(reuse.status, 201, "a deleted user's email is free again");
    assert_eq!(stored_users(&db, &trellis).await, 2);

    let log = trellis
        .wait_log("user deleted", |l| l["message"] == "user deleted")
        .await;
    assert_eq!(log["route"], "users-item");
    assert_eq!(log["fields"], format!("{{\"user_id\":\"{ada_id}\"}}"));
}

/// Runs `sql` on the database behind the host's back.
async fn behind_the_hosts_back(db: &Db, trellis: &Trellis, sql: &str) {
    match db {
        Db::Postgres(_) => {
            db.scalar(&format!(
                "WITH changed AS ({sql} RETURNING 1) SELECT COUNT(*) FROM changed"
            ))
            .await;
        }
        Db::Sqlite(_) => {
            let file = trellis.manifest_path().with_file_name("users.db");
            let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&file);
            let mut conn = sqlx::SqliteConnection::connect_with(&options)
                .await
                .unwrap();
            sqlx::query(sql).execute(&mut conn).await.unwrap();
        }
    }
}

/// The example's item route reads through the cache (`cache_ttl_ms`): a
/// change made behind the host's back is not seen until the entry is
/// evicted, and the API's own update evicts it.
async fn reads_go_through_the_cache(db: Db) {
    let trellis = start(&db).await;
    let created = post(
        &trellis,
        &json!({ "name": "Grace", "email": "grace@example.com" }),
    )
    .await;
    let id = assert_user(&created.body, "Grace", "grace@example.com");
    let path = format!("/users/{id}");
    let first = call(&trellis, Method::GET, &path, None).await;
    assert_eq!(first.body["name"], "Grace");

    behind_the_hosts_back(
        &db,
        &trellis,
        &format!("UPDATE users SET name = 'Sneaky' WHERE id = {id}"),
    )
    .await;
    let cached = call(&trellis, Method::GET, &path, None).await;
    assert_eq!(
        cached.body["name"], "Grace",
        "served from the cache, not the database"
    );

    let body = json!({ "name": "Grace Hopper", "email": "grace@example.com" }).to_string();
    let updated = call(&trellis, Method::PUT, &path, Some(&body)).await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    let fresh = call(&trellis, Method::GET, &path, None).await;
    assert_eq!(
        fresh.body["name"], "Grace Hopper",
        "the update evicted the cached copy"
    );

    let deleted = call(&trellis, Method::DELETE, &path, None).await;
    assert_eq!(deleted.status, 204);
    let gone = call(&trellis, Method::GET, &path, None).await;
    assert_api_error(&gone, 404, "NOT_FOUND");
}
