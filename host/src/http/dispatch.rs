//! Routing a request to its component, with the route's limits applied
//! before any guest code runs.

use crate::app::App;
use crate::app::routes::Route;
use crate::http::body::LimitedBody;
use crate::http::edge::{RequestContext, Served, X_REQUEST_ID};
use crate::http::error::{ApiError, ErrorKind};
use crate::http::{auth, cors, response_cache, validation};
use crate::observability::metrics::FailureKind;
use crate::runtime::invoke::{self, Failure, Lease, invoke};
use crate::services::auth::Identity;
use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, header};
use std::sync::Arc;
use std::sync::atomic::Ordering;

static X_TRELLIS_COMPONENT: HeaderName = HeaderName::from_static("x-trellis-component");

/// Everything that is not a host endpoint: its route's component, or a
/// JSON error. The route's edge policies run first, in the order
/// DESIGN.md gives: rate limit, CORS, auth, validation, response cache,
/// component; a refusal at any of them costs no instance.
pub async fn dispatch(app: Arc<App>, req: Request) -> Response {
    let context = RequestContext::of(req.extensions());

    // One load of the table per request: the `Arc<Route>` taken here keeps
    // this version (its component and limits) alive until the request is
    // done, whatever hot load swaps in meanwhile.
    let Some(route) = app.routes.load().lookup(req.uri().path()).cloned() else {
        return ApiError::new(ErrorKind::NotFound, &context.id).into_response();
    };
    // A preflight's answer carries its own headers (a refused one none);
    // a handler's own win.
    let preflight = route.spec.cors.is_some() && cors::is_preflight(&req);
    let origin = req.headers().get(header::ORIGIN).cloned();
    let mut response = edge_then_component(&app, &route, req, &context, preflight).await;
    if let Some(rules) = &route.spec.cors
        && !preflight
        && !response
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
    {
        cors::decorate(rules, origin.as_ref(), response.headers_mut());
    }
    response
}

/// The route's edge policies, then (if they all pass) its component.
async fn edge_then_component(
    app: &Arc<App>,
    route: &Arc<Route>,
    mut req: Request,
    context: &RequestContext,
    preflight: bool,
) -> Response {
    let fail = |kind| ApiError::new(kind, &context.id).into_response();
    if !preflight && !route.allows(req.method()) {
        return fail(ErrorKind::MethodNotAllowed {
            allow: route.allow_header(),
        });
    }
    context.served_by(served(app, route));
    let limiter = &app.services.rate_limiter;
    let by_subject = limiter.by_subject(route);
    // Before the cache and any instantiation: a refusal costs one check.
    let mut limit = None;
    if !by_subject {
        limit = limiter.check_route(route, &req).await;
        if let Some(refused) = limit.filter(|d| !d.allowed) {
            crate::http::body::discard_request(req).await;
            return fail(ErrorKind::RateLimited(refused));
        }
    }
    if preflight {
        let rules = route.spec.cors.as_deref().expect("checked by the caller");
        return match cors::preflight(rules, route.spec.methods.as_deref(), &req) {
            Some(answer) => answer,
            None => fail(ErrorKind::Forbidden {
                message: "CORS preflight refused: this origin, method or header is not allowed"
                    .into(),
                challenge: None,
            }),
        };
    }
    match auth::authenticate(&app.services.auth, route, &req).await {
        Ok(None) => {}
        Ok(Some(identity)) => {
            req.extensions_mut().insert(identity);
        }
        Err(kind) => {
            crate::http::body::discard_request(req).await;
            return fail(kind);
        }
    }
    if by_subject {
        limit = limiter.check_route(route, &req).await;
        if let Some(refused) = limit.filter(|d| !d.allowed) {
            crate::http::body::discard_request(req).await;
            return fail(ErrorKind::RateLimited(refused));
        }
    }
    // Only routes with a `schema` pay for it (their bodies are read whole);
    // for the others this is one branch.
    if let Some(schema) = &route.spec.schema {
        req = match validation::check(schema, req, &route.spec.limits).await {
            Ok(req) => req,
            Err(kind) => return fail(kind),
        };
    }

    let mut response = match response_cache::Plan::new(route, &req) {
        Some(plan) => match plan.lookup(&app.services.cache).await {
            Some(hit) => hit,
            None => {
                let response = run_component(app, route, req, context).await;
                plan.store(
                    &app.services.cache,
                    response,
                    app.services.cache.max_value(),
                )
                .await
            }
        },
        None => run_component(app, route, req, context).await,
    };
    response
        .headers_mut()
        .insert(X_TRELLIS_COMPONENT.clone(), route.label.clone());
    if let Some(limit) = &limit {
        limit.write_headers(response.headers_mut());
    }
    response
}

/// What the request log and metrics name a response by.
fn served(app: &App, route: &Route) -> Served {
    Served {
        route: route.name.clone(),
        component: route.handler.digest.clone(),
        version: route.version,
        metrics: Some(route.metrics(&app.metrics).clone()),
    }
}

/// Runs `req` through an instance of the route's component (fresh, or
/// kept when the route has `reuse`), under
/// the route's body, concurrency and time limits.
async fn run_component(
    app: &App,
    route: &Route,
    mut req: Request,
    context: &RequestContext,
) -> Response {
    let request_id = &context.id;
    let fail = |kind| ApiError::new(kind, request_id).into_response();
    let max_body = route.spec.limits.max_body.0;
    if content_length(&req).is_some_and(|len| len > max_body) {
        crate::http::body::discard_request(req).await;
        return fail(ErrorKind::PayloadTooLarge { limit: max_body });
    }
    let Some(route_slot) = route.admit().await else {
        return fail(ErrorKind::Overloaded);
    };
    // A kept instance if the route has one idle, else a slot for a new one.
    let warm = route
        .pool
        .as_ref()
        .and_then(|pool| Some((pool.take()?, pool.clone())));
    let lease = match warm {
        Some((warm, pool)) => Lease::Warm(warm, pool),
        None => {
            let wait = route.spec.limits.queue_timeout.0;
            let Some(slot) = app.instance_slot_within(wait).await else {
                return fail(ErrorKind::Overloaded);
            };
            match &route.pool {
                Some(pool) => Lease::New(slot, pool.clone()),
                None => Lease::Fresh(slot),
            }
        }
    };

    // The guest sees the request id the client will see, even when the
    // host made it up, so its logs and error bodies can carry it.
    if let Ok(id) = HeaderValue::from_str(request_id) {
        req.headers_mut().insert(X_REQUEST_ID.clone(), id);
    }
    // wasi:http needs an authority; HTTP/1.0 clients may not send one.
    if !req.headers().contains_key(header::HOST) && req.uri().authority().is_none() {
        req.headers_mut()
            .insert(header::HOST, HeaderValue::from_static("localhost"));
    }
    let identity = req.extensions().get::<Arc<Identity>>().cloned();
    let (parts, body) = req.into_parts();
    let (body, faults) = LimitedBody::new(body, max_body);
    let req = Request::from_parts(parts, body);
    let series = route.metrics(&app.metrics).clone();
    let in_flight = series.in_flight();
    let cx = invoke::Context {
        metrics: app.metrics.clone(),
        series,
        guest: route.guest_context(request_id.clone(), context.trace.clone(), identity),
        slow_slots: route.slow_slots.clone(),
        client_fault: faults.client.clone(),
    };
    let result = invoke(
        &app.engine,
        route.handler.clone(),
        &route.spec.limits,
        req,
        (route_slot, in_flight),
        lease,
        cx,
    )
    .await;

    if faults.exceeded.load(Ordering::Acquire) {
        return fail(ErrorKind::PayloadTooLarge { limit: max_body });
    }
    // The guest failed on a body the client broke (malformed chunking, cut
    // short): the client's error, already counted as such by `invoke`.
    if result.is_err() && faults.client.load(Ordering::Acquire) {
        return fail(ErrorKind::BadRequest(
            "the request body is malformed or incomplete".into(),
        ));
    }
    match result {
        Ok(response) => response.map(Body::new),
        Err(Failure::Timeout(limit)) => fail(ErrorKind::HandlerTimeout(limit)),
        Err(failure) => {
            if !matches!(failure, Failure::Trapped(_)) {
                app.metrics
                    .guest_failed(&route.name, FailureKind::NoResponse);
                // Traps were logged where they happened, with the cause.
                tracing::warn!(route = %route.name, request_id = %request_id, cause = %failure, "handler failed");
            }
            fail(ErrorKind::HandlerFailed)
        }
    }
}

fn content_length(req: &Request) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
