//! The admin API, on its own listener: list routes, deploy a component to
//! a route, roll a route back, remove it, and with shared deployments see
//! the fleet (DESIGN.md, Operators).
//!
//! Every request needs `authorization: Bearer <TRELLIS_ADMIN_TOKEN>`; with
//! no token configured the API is not served at all. Answers are JSON, and
//! errors have the host's usual `{"error":{..}}` shape.

use crate::app::routes::Route;
use crate::config::Token;
use crate::config::manifest::RouteSpec;
use crate::http::edge::{EdgeLayer, RequestContext};
use crate::http::error::{ApiError, ErrorKind};
use crate::ops::deployments::{DeployError, Deployed, Deployments, VersionInfo};
use crate::ops::fleet::store::{Change, StoreError};
use crate::ops::route_settings::{SettingsQuery, settings};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::request::Parts;
use http::{StatusCode, header};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::net::TcpListener;

#[derive(Clone)]
struct AdminState {
    deployments: Arc<Deployments>,
    token: Token,
}

/// The admin router.
pub fn router(deployments: Arc<Deployments>, token: Token) -> Router {
    let state = AdminState { deployments, token };
    Router::new()
        .route("/admin/routes", get(list))
        .route("/admin/routes/{name}", get(show).put(deploy).delete(remove))
        .route("/admin/routes/{name}/rollback", post(rollback))
        .route("/admin/fleet", get(fleet))
        .route("/admin/queues", get(queues::list))
        .route("/admin/workers", get(workers::list))
        .route(
            "/admin/workers/{name}",
            get(workers::show).put(workers::deploy),
        )
        .route(
            "/admin/queues/{name}/dead",
            get(queues::dead).delete(queues::purge),
        )
        .route("/admin/queues/{name}/dead/retry", post(queues::retry_all))
        .route(
            "/admin/queues/{name}/dead/{id}",
            axum::routing::delete(queues::purge_one),
        )
        .route(
            "/admin/queues/{name}/dead/{id}/retry",
            post(queues::retry_one),
        )
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize,
        ))
        .with_state(state)
        .layer(EdgeLayer::default())
}

/// Binds the admin listener when the API is on: it needs both
/// `server.admin_listen` and a token. Logs either way.
pub async fn bind(
    addr: Option<SocketAddr>,
    token: Option<&Token>,
) -> std::io::Result<Option<TcpListener>> {
    let (Some(addr), Some(_)) = (addr, token) else {
        let why = if addr.is_none() {
            "no server.admin_listen (or --admin-listen)"
        } else {
            "TRELLIS_ADMIN_TOKEN is not set"
        };
        tracing::info!(reason = why, "admin API off");
        return Ok(None);
    };
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "admin listening");
    Ok(Some(listener))
}

/// Serves the admin API on `listener` until `shutdown` resolves.
pub async fn serve(
    deployments: Arc<Deployments>,
    listener: TcpListener,
    token: Token,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(deployments, token))
        .with_graceful_shutdown(shutdown)
        .await
}

/// `/admin/workers`: each `[[worker]]`'s component, and hot load of a new
/// one (`PUT` with the component as body; the settings stay the
/// manifest's).
mod workers {
    use super::{AdminState, Rid, deploy_failed, read_upload, rfc3339};
    use crate::app::WorkerVersion;
    use crate::http::error::ErrorKind;
    use axum::extract::{Path, Request, State};
    use axum::response::{IntoResponse, Response};
    use serde_json::{Value, json};

    fn describe(version: &WorkerVersion) -> Value {
        json!({
            "name": version.spec.name,
            "queue": crate::jobs::worker::queue_key(version),
            "version": version.version,
            "digest": version.component.digest,
            "loaded_at": rfc3339(version.loaded_at),
            "concurrency": version.spec.concurrency,
            "grants": version.spec.grants,
        })
    }

    pub(super) async fn list(State(state): State<AdminState>) -> Response {
        let workers: Vec<Value> = state
            .deployments
            .app()
            .workers
            .iter()
            .map(|w| describe(&w.current()))
            .collect();
        axum::Json(json!({ "workers": workers })).into_response()
    }

    pub(super) async fn show(
        State(state): State<AdminState>,
        Path(name): Path<String>,
        rid: Rid,
    ) -> Response {
        match state
            .deployments
            .app()
            .workers
            .iter()
            .find(|w| w.name == name)
        {
            Some(worker) => axum::Json(describe(&worker.current())).into_response(),
            None => rid.fail(ErrorKind::NoSuchWorker(name)),
        }
    }

    pub(super) async fn deploy(
        State(state): State<AdminState>,
        Path(name): Path<String>,
        rid: Rid,
        req: Request,
    ) -> Response {
        let (parts, body) = req.into_parts();
        if !state
            .deployments
            .app()
            .workers
            .iter()
            .any(|w| w.name == name)
        {
            return super::refuse(body, &rid, ErrorKind::NoSuchWorker(name)).await;
        }
        let bytes = match read_upload(&state, &rid, &parts, body).await {
            Ok(bytes) => bytes,
            Err(refused) => return refused,
        };
        match state.deployments.deploy_worker(&name, bytes).await {
            Ok(version) => axum::Json(describe(&version)).into_response(),
            Err(err) => deploy_failed(&rid, &name, err),
        }
    }
}

/// `/admin/queues`: job counts, dead letters, retry and purge.
mod queues {
    use super::{AdminState, Rid};
    use crate::http::error::ErrorKind;
    use crate::services::jobs::{JobError, now_ms};
    use axum::extract::{Path, Query, State};
    use axum::response::{IntoResponse, Response};
    use serde::Deserialize;
    use serde_json::json;

    /// The queues and topic groups this host knows: `[queues]` and the
    /// `topic/group` of each topic worker.
    fn known(state: &AdminState) -> Vec<String> {
        let app = state.deployments.app();
        let mut names = app.services.jobs.queue_names();
        for worker in &app.workers {
            let key = crate::jobs::worker::queue_key(&worker.current());
            if !names.contains(&key) {
                names.push(key);
            }
        }
        names
    }

    fn unavailable(rid: &Rid, err: JobError) -> Response {
        tracing::warn!(request_id = %rid.0, cause = %err, "admin: the job store is unavailable");
        rid.fail(ErrorKind::UpstreamUnavailable(
            "the job store is unavailable".into(),
        ))
    }

    /// The 404 for a queue no job, schedule or subscription names.
    fn unknown(state: &AdminState, rid: &Rid, name: &str) -> Option<Response> {
        (!known(state).iter().any(|q| q == name))
            .then(|| rid.fail(ErrorKind::NoSuchQueue(name.to_owned())))
    }

    pub(super) async fn list(State(state): State<AdminState>, rid: Rid) -> Response {
        let jobs = &state.deployments.app().services.jobs;
        let counts = match jobs.counts().await {
            Ok(counts) => counts,
            Err(err) => return unavailable(&rid, err),
        };
        let names = known(&state);
        let queues: Vec<_> = names
            .iter()
            .map(|name| {
                let c = counts
                    .iter()
                    .find(|(q, _)| q == name)
                    .map(|(_, c)| *c)
                    .unwrap_or_default();
                json!({
                    "name": name,
                    "waiting": c.waiting,
                    "active": c.active,
                    "delayed": c.delayed,
                    "done": c.done,
                    "dead": c.dead,
                })
            })
            .collect();
        axum::Json(json!({ "queues": queues })).into_response()
    }

    #[derive(Deserialize)]
    pub(super) struct Limit {
        limit: Option<u32>,
    }

    pub(super) async fn dead(
        State(state): State<AdminState>,
        Path(name): Path<String>,
        Query(query): Query<Limit>,
        rid: Rid,
    ) -> Response {
        if let Some(response) = unknown(&state, &rid, &name) {
            return response;
        }
        let limit = query.limit.unwrap_or(100).clamp(1, 1000);
        let store = state.deployments.app().services.jobs.store().clone();
        match store.dead(&name, limit).await {
            Ok(jobs) => {
                let jobs: Vec<_> = jobs
                    .into_iter()
                    .map(|j| {
                        json!({
                            "id": j.id,
                            "payload": String::from_utf8_lossy(&j.payload),
                            "attempts": j.attempts,
                            "error": j.error,
                            "enqueued_at": super::rfc3339(millis(j.created_at)),
                            "failed_at": j.failed_at.map(|t| super::rfc3339(millis(t))),
                        })
                    })
                    .collect();
                axum::Json(json!({ "queue": name, "dead": jobs })).into_response()
            }
            Err(err) => unavailable(&rid, err),
        }
    }

    fn millis(ms: i64) -> std::time::SystemTime {
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0))
    }

    async fn retry(state: AdminState, name: String, id: Option<String>, rid: Rid) -> Response {
        if let Some(response) = unknown(&state, &rid, &name) {
            return response;
        }
        let jobs = state.deployments.app().services.jobs.clone();
        match jobs
            .store()
            .retry_dead(&name, id.as_deref(), now_ms())
            .await
        {
            Ok(0) if id.is_some() => rid.fail(ErrorKind::NotFound),
            Ok(n) => {
                jobs.waker(&name).notify_waiters();
                tracing::info!(queue = %name, jobs = n, "admin: dead jobs queued again");
                axum::Json(json!({ "queue": name, "retried": n })).into_response()
            }
            Err(err) => unavailable(&rid, err),
        }
    }

    pub(super) async fn retry_all(
        State(state): State<AdminState>,
        Path(name): Path<String>,
        rid: Rid,
    ) -> Response {
        retry(state, name, None, rid).await
    }

    pub(super) async fn retry_one(
        State(state): State<AdminState>,
        Path((name, id)): Path<(String, String)>,
        rid: Rid,
    ) -> Response {
        retry(state, name, Some(id), rid).await
    }

    async fn purge_some(state: AdminState, name: String, id: Option<String>, rid: Rid) -> Response {
        if let Some(response) = unknown(&state, &rid, &name) {
            return response;
        }
        let store = state.deployments.app().services.jobs.store().clone();
        match store.purge_dead(&name, id.as_deref()).await {
            Ok(0) if id.is_some() => rid.fail(ErrorKind::NotFound),
            Ok(n) => {
                tracing::info!(queue = %name, jobs = n, "admin: dead jobs purged");
                axum::Json(json!({ "queue": name, "purged": n })).into_response()
            }
            Err(err) => unavailable(&rid, err),
        }
    }

    pub(super) async fn purge(
        State(state): State<AdminState>,
        Path(name): Path<String>,
        rid: Rid,
    ) -> Response {
        purge_some(state, name, None, rid).await
    }

    pub(super) async fn purge_one(
        State(state): State<AdminState>,
        Path((name, id)): Path<(String, String)>,
        rid: Rid,
    ) -> Response {
        purge_some(state, name, Some(id), rid).await
    }
}

/// The request id the edge assigned, for error bodies.
struct Rid(Arc<str>);

impl<S: Sync> FromRequestParts<S> for Rid {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Rid, Infallible> {
        Ok(Rid(RequestContext::id_of(&parts.extensions)))
    }
}

impl Rid {
    fn fail(&self, kind: ErrorKind) -> Response {
        ApiError::new(kind, &self.0).into_response()
    }
}

async fn authorize(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .unwrap_or_default();
    if state.token.matches(given) {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let Ok(rid) = Rid::from_request_parts(&mut parts, &()).await;
    tracing::warn!(path = %parts.uri.path(), "admin request refused: missing or wrong token");
    refuse(body, &rid, ErrorKind::Unauthorized).await
}

/// Answers `kind` to a request whose body was not read: reads and drops
/// the body first (bounded, see [`crate::http::body::discard`]), or a client
/// still uploading a component sees a reset instead of the answer.
/// The component uploaded as the body of an admin `PUT`: `application/wasm`
/// (or octet-stream), at most `max_component_size`, not empty. A refusal
/// reads the rest of the upload first, so the client sees the answer.
async fn read_upload(
    state: &AdminState,
    rid: &Rid,
    parts: &Parts,
    body: Body,
) -> Result<Bytes, Response> {
    if let Some(kind) = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|ct| !matches!(*ct, "application/wasm" | "application/octet-stream"))
    {
        let message = format!("content-type {kind:?}: send the component as application/wasm");
        return Err(refuse(body, rid, ErrorKind::ValidationFailed(message)).await);
    }
    let limit = state.deployments.app().server.max_component_size.0;
    let too_large = || rid.fail(ErrorKind::PayloadTooLarge { limit });
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(refuse(body, rid, ErrorKind::PayloadTooLarge { limit }).await);
    }
    let bytes = match axum::body::to_bytes(body, usize::try_from(limit).unwrap_or(usize::MAX)).await
    {
        Ok(bytes) => bytes,
        Err(err) => {
            let over = std::error::Error::source(&err)
                .is_some_and(|e| e.is::<http_body_util::LengthLimitError>());
            if over {
                return Err(too_large());
            }
            return Err(rid.fail(ErrorKind::ValidationFailed(format!(
                "reading the component upload: {err}"
            ))));
        }
    };
    if bytes.is_empty() {
        return Err(rid.fail(ErrorKind::ValidationFailed(
            "the request body must be the component (.wasm)".into(),
        )));
    }
    Ok(bytes)
}

async fn refuse(body: Body, rid: &Rid, kind: ErrorKind) -> Response {
    crate::http::body::discard(body).await;
    rid.fail(kind)
}

async fn not_found(rid: Rid) -> Response {
    rid.fail(ErrorKind::NotFound)
}

async fn list(State(state): State<AdminState>) -> Response {
    let table = state.deployments.app().routes.load_full();
    let mut routes = Vec::new();
    for route in table.iter() {
        let (history, changes) = state.deployments.versions(&route.name).await;
        routes.push(describe(route, &history, changes));
    }
    axum::Json(json!({ "routes": routes })).into_response()
}

async fn show(State(state): State<AdminState>, Path(name): Path<String>, rid: Rid) -> Response {
    let Some(route) = state.deployments.app().routes.load().get(&name).cloned() else {
        return rid.fail(ErrorKind::NoSuchRoute(name));
    };
    let (history, changes) = state.deployments.versions(&name).await;
    axum::Json(describe(&route, &history, changes)).into_response()
}

/// `GET /admin/fleet`: every host sharing the deployment store, what each
/// serves against what the store wants, and what each could not load.
async fn fleet(State(state): State<AdminState>, rid: Rid) -> Response {
    let Some(fleet) = state.deployments.fleet() else {
        return rid.fail(ErrorKind::Conflict(
            "this host does not share deployments: set [deployments] shared = true".into(),
        ));
    };
    match fleet.status(&state.deployments).await {
        Ok(status) => axum::Json(status).into_response(),
        Err(err) => {
            tracing::warn!(request_id = %rid.0, cause = %err, "GET /admin/fleet: reading the store");
            rid.fail(ErrorKind::UpstreamUnavailable(err.to_string()))
        }
    }
}

async fn deploy(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    query: Result<Query<SettingsQuery>, QueryRejection>,
    rid: Rid,
    req: Request,
) -> Response {
    // Every refusal before `to_bytes` below goes through `refuse`, which
    // reads the unread upload first.
    let (parts, body) = req.into_parts();
    let mut query = match query {
        Ok(Query(query)) => query,
        Err(rejection) => {
            let message = format!("query parameters: {}", rejection.body_text());
            return refuse(body, &rid, ErrorKind::ValidationFailed(message)).await;
        }
    };
    let pull = query.component.take();
    let app = state.deployments.app();
    let current = app.routes.load().get(&name).cloned();
    let host_cors = app.services.cors.as_ref();
    // Names the host lacks are refused before the upload is read.
    let spec = match settings(&name, current.as_deref().map(|r| &r.spec), query, host_cors)
        .and_then(|spec| match state.deployments.check_names(&spec) {
            Ok(()) => Ok(spec),
            Err(err) => Err(err.to_string()),
        }) {
        Ok(spec) => spec,
        Err(message) => return refuse(body, &rid, ErrorKind::ValidationFailed(message)).await,
    };
    if let Some(component) = pull {
        return deploy_pulled(&state, &name, &rid, body, &component, spec).await;
    }
    let bytes = match read_upload(&state, &rid, &parts, body).await {
        Ok(bytes) => bytes,
        Err(refused) => return refused,
    };
    match state.deployments.deploy(spec, bytes, None).await {
        Ok(deployed) => deployed_response(&state, deployed).await,
        Err(err) => deploy_failed(&rid, &name, err),
    }
}

/// `PUT /admin/routes/{name}?component=oci://…`: pulls the component
/// (resolving a tag to its digest now, once), then deploys it like an
/// upload. The request has no body.
async fn deploy_pulled(
    state: &AdminState,
    name: &str,
    rid: &Rid,
    body: Body,
    component: &str,
    spec: RouteSpec,
) -> Response {
    crate::http::body::discard(body).await;
    let reference = match crate::config::reference::Reference::parse(component) {
        Ok(reference) => reference,
        Err(message) => {
            return rid.fail(ErrorKind::ValidationFailed(format!(
                "query parameter component: {message}"
            )));
        }
    };
    let registries = state.deployments.app().services.registries.clone();
    let pulled = match registries.pull(&reference).await {
        Ok(pulled) => pulled,
        Err(err) => return deploy_failed(rid, name, err.into()),
    };
    match state
        .deployments
        .deploy(spec, pulled.bytes, Some(pulled.source))
        .await
    {
        Ok(deployed) => deployed_response(state, deployed).await,
        Err(err) => deploy_failed(rid, name, err),
    }
}

async fn deployed_response(state: &AdminState, deployed: Deployed) -> Response {
    let (history, changes) = state.deployments.versions(&deployed.route.name).await;
    let mut body = describe(&deployed.route, &history, changes);
    body["cache"] = json!(deployed.cache.as_str());
    body["load_ms"] = json!(deployed.load_ms);
    let status = if deployed.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (status, axum::Json(body)).into_response()
}

async fn rollback(State(state): State<AdminState>, Path(name): Path<String>, rid: Rid) -> Response {
    match state.deployments.rollback(&name).await {
        Ok(route) => {
            let (history, changes) = state.deployments.versions(&name).await;
            axum::Json(describe(&route, &history, changes)).into_response()
        }
        Err(err) => deploy_failed(&rid, &name, err),
    }
}

async fn remove(State(state): State<AdminState>, Path(name): Path<String>, rid: Rid) -> Response {
    match state.deployments.remove(&name).await {
        Ok(route) => axum::Json(json!({ "removed": describe(&route, &[], None) })).into_response(),
        Err(err) => deploy_failed(&rid, &name, err),
    }
}

fn deploy_failed(rid: &Rid, name: &str, err: DeployError) -> Response {
    let kind = match &err {
        DeployError::Load(_)
        | DeployError::Instantiate(_)
        | DeployError::PathConflict { .. }
        | DeployError::Database(_)
        | DeployError::Settings(_)
        | DeployError::NotLoadedHere(_)
        | DeployError::UnknownUpstream(_)
        | DeployError::Policy(_) => ErrorKind::ValidationFailed(err.to_string()),
        DeployError::NoSuchRoute(name) | DeployError::Store(StoreError::NoSuchRoute(name)) => {
            ErrorKind::NoSuchRoute(name.clone())
        }
        DeployError::NoSuchWorker(name) => ErrorKind::NoSuchWorker(name.clone()),
        DeployError::NoEarlierVersion(_) | DeployError::Store(StoreError::NoEarlierVersion(_)) => {
            ErrorKind::Conflict(err.to_string())
        }
        // The operator needs the cause: the admin API is theirs.
        DeployError::Store(store) if store.is_transient() => ErrorKind::UpstreamUnavailable(
            format!("{err}; nothing changed on any host, retry when the database answers"),
        ),
        DeployError::Store(_) => ErrorKind::ValidationFailed(err.to_string()),
        DeployError::Busy(_) => ErrorKind::Overloaded,
        // Named for the operator: which registry, which reference.
        DeployError::Registry(pull) if pull.is_unreachable() => ErrorKind::UpstreamUnavailable(
            format!("{err}; the route keeps serving its current version"),
        ),
        DeployError::Registry(_) => ErrorKind::ValidationFailed(err.to_string()),
        DeployError::Task(_) => ErrorKind::Internal,
    };
    tracing::warn!(route = %name, request_id = %rid.0, cause = %err, "admin change refused; routes unchanged");
    rid.fail(kind)
}

/// A route version as the admin API shows it; with shared deployments,
/// also the route's last changes across the fleet.
fn describe(route: &Route, history: &[VersionInfo], changes: Option<Vec<Change>>) -> Value {
    let spec = &route.spec;
    let mut out = json!({
        "name": &*route.name,
        "path": spec.path,
        "methods": spec.methods.as_ref().map(|m| m.iter().map(http::Method::as_str).collect::<Vec<_>>()),
        "version": route.version,
        "digest": route.handler.digest,
        "loaded_at": rfc3339(route.loaded_at),
        "grants": spec.grants,
        "outbound": spec.outbound,
        "limits": spec.limits,
        "reuse": spec.reuse,
        "rate_limit": spec.rate_limit,
        "auth": spec.auth,
        "scopes": spec.scopes,
        "response_cache": spec.cache.as_ref().map(|c| json!({"ttl": c.ttl.to_string(), "vary": c.vary})),
        "config": spec.config.variables().collect::<BTreeMap<_, _>>(),
        "secrets": spec.config.secret_keys().collect::<Vec<_>>(),
        "schema": spec.schema.as_ref().map(|s| json!({
            "body": s.body.as_ref().map(|b| &b.document),
            "query": s.query.as_ref().map(|q| &q.document),
        })),
        "cors": spec.cors,
        "history": history.iter().map(|v| {
            let mut entry = json!({
                "version": v.version,
                "digest": v.digest,
                "loaded_at": rfc3339(v.at),
            });
            if let Some(by) = &v.by {
                entry["deployed_by"] = json!(by);
            }
            if let Some(source) = &v.source {
                entry["source"] = json!(source);
            }
            entry
        }).collect::<Vec<_>>(),
    });
    if let Some(source) = &route.source {
        let mut asked = (**source).clone();
        if asked.tag.is_some() {
            asked.digest = None;
        }
        out["source"] = json!({
            "reference": asked.to_string(),
            "digest": source.digest,
            "pinned": source.to_string(),
        });
    }
    if let Some(changes) = changes {
        out["changes"] = changes
            .iter()
            .map(|c| {
                json!({
                    "id": c.id,
                    "action": c.action,
                    "version": c.version,
                    "digest": c.digest,
                    "host": c.host,
                    "at": rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(c.at_ms).unwrap_or(0))),
                })
            })
            .collect();
    }
    out
}

/// `2026-11-24T02:49:07.123Z`.
pub(crate) fn rfc3339(at: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(at).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn token_comparison() {
        let token = Token::new("s3cret").unwrap();
        assert!(token.matches(b"s3cret"));
        assert!(!token.matches(b"s3creT"));
        assert!(!token.matches(b"s3cre"));
        assert!(!token.matches(b""));
        assert!(Token::new("").is_none());
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + std::time::Duration::from_millis(1_795_920_547_123);
        assert_eq!(rfc3339(t), "2026-11-29T02:49:07.123Z");
    }
}
