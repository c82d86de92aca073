//! The users API (`examples/users`): create, read, list, update and delete
//! users in the host's SQL database, on SQLite or PostgreSQL alike.
//!
//! | request | answer |
//! |---|---|
//! | `POST /users` `{"name","email"}` | 201 + the user, `Location`; 422 `VALIDATION_FAILED` naming the field; 409 `CONFLICT` for a taken email |
//! | `GET /users/{id}` | 200 + the user; 404 `NOT_FOUND` |
//! | `GET /users?limit=&offset=` | 200 `{"users":[..],"limit","offset","total"}`, ordered by id |
//! | `PUT /users/{id}` `{"name","email"}` | 200 + the user (both fields replaced, validated as on create) |
//! | `DELETE /users/{id}` | 204; 404 `NOT_FOUND` |
//!
//! A user is `{"id":1,"name":"..","email":"..","created_at":".."}`, with
//! `created_at` in ISO 8601. The page size defaults to the route's config
//! `page_size` (20 when unset) and is capped at 100.
//!
//! With the route's config `cache_ttl_ms` set, `GET /users/{id}` reads
//! through the host's tiered cache (`trellis:api/cache`), computing each
//! user once however many callers ask at the same time; `PUT` and `DELETE`
//! drop the cached copy on every host. The component imports `cache`
//! either way, so its routes grant it.

use serde::Serialize;
use serde_json::Value as Json;
use trellis_sdk::raw::cache;
use trellis_sdk::sql::{self, FromRow, Row};
use trellis_sdk::{Error, Handler, Request, Response, Router, config, log};

/// Longest name, in characters.
const MAX_NAME: usize = 100;
/// Longest email, in characters (RFC 5321's path limit).
const MAX_EMAIL: usize = 254;
/// Page size when the route's config does not set `page_size`.
const DEFAULT_PAGE: u32 = 20;
/// Largest page a client may ask for.
const MAX_PAGE: u32 = 100;
/// How long a reader waits for another caller loading the same user.
const FILL_WAIT_MS: u32 = 2_000;

/// The columns a user is read from, in every statement; a macro so the
/// statements are constants, built at compile time.
macro_rules! columns {
    () => {
        "id, name, email, created_at"
    };
}

const INSERT: &str = concat!(
    "INSERT INTO users (name, email) VALUES ($1, $2) RETURNING ",
    columns!()
);
const SELECT_ONE: &str = concat!("SELECT ", columns!(), " FROM users WHERE id = $1");
const SELECT_PAGE: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM users ORDER BY id LIMIT $1 OFFSET $2"
);
const UPDATE: &str = concat!(
    "UPDATE users SET name = $1, email = $2 WHERE id = $3 RETURNING ",
    columns!()
);

struct Users;

impl Handler for Users {
    fn handle(request: Request) -> Result<Response, Error> {
        Router::new()
            .post("/users", create)
            .get("/users", list)
            .get("/users/{id}", get)
            .put("/users/{id}", update)
            .delete("/users/{id}", delete)
            .handle(request)
    }
}

trellis_sdk::export!(Users);

#[derive(Serialize)]
struct User {
    id: i64,
    name: String,
    email: String,
    created_at: String,
}

impl FromRow for User {
    fn from_row(row: &Row) -> Result<Self, Error> {
        Ok(User {
            id: row.get("id")?,
            name: row.get("name")?,
            email: row.get("email")?,
            created_at: row.get("created_at")?,
        })
    }
}

/// A validated `{"name","email"}` body.
struct Input {
    name: String,
    email: String,
}

impl Input {
    /// Reads and validates the body; each failure names its field.
    fn from_request(request: &Request) -> Result<Input, Error> {
        let body: Json = request.json()?;
        if !body.is_object() {
            return Err(Error::validation("the body must be a JSON object"));
        }
        let name = string_field(&body, "name")?.trim().to_owned();
        if name.is_empty() {
            return Err(Error::invalid("name", "must not be empty"));
        }
        if name.chars().count() > MAX_NAME {
            return Err(Error::invalid(
                "name",
                format_args!("must be at most {MAX_NAME} characters"),
            ));
        }
        let email = string_field(&body, "email")?.trim().to_owned();
        if !email.contains('@') {
            return Err(Error::invalid("email", "must contain '@'"));
        }
        if email.chars().count() > MAX_EMAIL {
            return Err(Error::invalid(
                "email",
                format_args!("must be at most {MAX_EMAIL} characters"),
            ));
        }
        Ok(Input { name, email })
    }
}

fn string_field<'a>(body: &'a Json, field: &str) -> Result<&'a str, Error> {
    match body.get(field) {
        None | Some(Json::Null) => Err(Error::invalid(field, "is required")),
        Some(value) => value
            .as_str()
            .ok_or_else(|| Error::invalid(field, "must be a string")),
    }
}

/// A taken email is the only unique constraint a user has.
fn email_taken(error: sql::Error) -> Error {
    match error {
        sql::Error::Conflict(_) => Error::conflict("a user with this email already exists")
            .with_cause(sql::describe(&error)),
        other => other.into(),
    }
}

fn no_such_user(id: i64) -> Error {
    Error::not_found(format!("no user with id {id}"))
}

fn create(request: Request) -> Result<Response, Error> {
    let input = Input::from_request(&request)?;
    let user: User = sql::query(INSERT, &[&input.name, &input.email])
        .map_err(email_taken)?
        .into_first()
        .ok_or_else(|| Error::internal("INSERT .. RETURNING returned no row"))
        .and_then(|row| User::from_row(&row))?;
    log::info("user created", &[("user_id", &user.id)]);
    Ok(Response::json(&user)
        .with_status(201)
        .with_header("location", &format!("/users/{}", user.id)))
}

fn get(request: Request) -> Result<Response, Error> {
    let id: i64 = request.param_as("id")?;
    let load = || -> Result<User, Error> {
        let user: Option<User> = sql::query_opt(SELECT_ONE, &[&id])?;
        user.ok_or_else(|| no_such_user(id))
    };
    let Some(ttl) = cache_ttl()? else {
        return Ok(Response::json(&load()?));
    };
    // Read-through: one caller per id (on any host) reads the database,
    // the others wait for its answer. A missing user is not cached: the
    // fill is dropped, and the next caller asks the database again.
    match cache::get_or_fill(&cache_key(id), FILL_WAIT_MS).map_err(cache_failed)? {
        cache::Lookup::Hit(body) => Ok(Response::bytes("application/json", body)),
        cache::Lookup::Miss(fill) => {
            let body = serde_json::to_vec(&load()?).map_err(Error::internal)?;
            if let Err(err) = fill.set(&body, ttl) {
                log::warn(
                    "user not cached",
                    &[("user_id", &id), ("cause", &format!("{err:?}"))],
                );
            }
            Ok(Response::bytes("application/json", body))
        }
    }
}

/// The read-through cache's TTL in milliseconds: the route's
/// `cache_ttl_ms` config; caching is off without it.
fn cache_ttl() -> Result<Option<u64>, Error> {
    config::parse::<u64>("cache_ttl_ms")
}

fn cache_key(id: i64) -> String {
    format!("user:{id}")
}

/// Drops a changed or deleted user from the cache, on every host.
fn forget(id: i64) -> Result<(), Error> {
    if cache_ttl()?.is_some() {
        cache::delete(&cache_key(id)).map_err(cache_failed)?;
    }
    Ok(())
}

fn cache_failed(error: cache::Error) -> Error {
    Error::internal(format_args!("cache: {error:?}"))
}

fn list(request: Request) -> Result<Response, Error> {
    let default = config::parse::<u32>("page_size")?.unwrap_or(DEFAULT_PAGE);
    let limit = request.query_as::<u32>("limit")?.unwrap_or(default);
    if limit == 0 {
        return Err(Error::invalid("limit", "must be at least 1"));
    }
    let limit = limit.min(MAX_PAGE);
    let offset = request.query_as::<u32>("offset")?.unwrap_or(0);
    let users: Vec<User> = sql::query_as(SELECT_PAGE, &[&limit, &offset])?;
    let total: i64 = sql::query("SELECT COUNT(*) AS total FROM users", &[])?
        .into_first()
        .ok_or_else(|| Error::internal("COUNT(*) returned no row"))?
        .get("total")?;
    Ok(Response::json(&serde_json::json!({
        "users": users,
        "limit": limit,
        "offset": offset,
        "total": total,
    })))
}

fn update(request: Request) -> Result<Response, Error> {
    let id: i64 = request.param_as("id")?;
    let input = Input::from_request(&request)?;
    let user: Option<User> = sql::query(UPDATE, &[&input.name, &input.email, &id])
        .map_err(email_taken)?
        .into_first()
        .map(|row| User::from_row(&row))
        .transpose()?;
    let user = user.ok_or_else(|| no_such_user(id))?;
    forget(id)?;
    log::info("user updated", &[("user_id", &id)]);
    Ok(Response::json(&user))
}

fn delete(request: Request) -> Result<Response, Error> {
    let id: i64 = request.param_as("id")?;
    if sql::execute("DELETE FROM users WHERE id = $1", &[&id])? == 0 {
        return Err(no_such_user(id));
    }
    forget(id)?;
    log::info("user deleted", &[("user_id", &id)]);
    Ok(Response::no_content())
}
