//! Routing a request to its component, with the route's limits applied
//! before any guest code runs.

use crate::app::App;
use crate::app::routes::Route;
use crate::capabilities::GuestContext;
use crate::http::body::BodyFaults;
use crate::http::body::LimitedBody;
use crate::http::edge::{RequestContext, Served, X_REQUEST_ID};
use crate::http::error::{ApiError, ErrorKind};
use crate::http::{auth, cors, response_cache, validation};
use crate::observability::metrics::FailureKind;
use crate::observability::metrics::RouteMetrics;
use crate::runtime::invoke::{self, Failure, invoke};
use crate::runtime::service::{Held, Service};
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
    // for the others this is one branch. The policies' futures are boxed
    // where they run, so that the request future every route carries is
    // not as large as the largest of them: it is moved, whole, at each
    // layer below the edge.
    if let Some(schema) = &route.spec.schema {
        req = match Box::pin(validation::check(schema, req, &route.spec.limits)).await {
            Ok(req) => req,
            Err(kind) => return fail(kind),
        };
    }

    let mut response = match response_cache::Plan::new(route, &req) {
        Some(plan) => match Box::pin(plan.lookup(&app.services.cache)).await {
            Some(hit) => hit,
            None => {
                let response = run_component(app, route, req, context).await;
                Box::pin(plan.store(
                    &app.services.cache,
                    response,
                    app.services.cache.max_value(),
                ))
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
    let guest = route.guest_context(request_id.clone(), context.trace.clone(), identity);

    let guards = (route_slot, in_flight);
    let service = route.service(&app.engine, &app.budget, &app.metrics);
    let p3 = service.is_some();
    let result = match service {
        Some(service) => serve_p3(app, route, service, req, guest, guards, &faults).await,
        None => serve_p2(app, route, req, guest, guards, series, &faults).await,
    };

    if faults.exceeded.load(Ordering::Acquire) {
        if let Some(rest) = faults.take_rest() {
            crate::http::body::discard(rest).await;
        }
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
        Ok(response) => response,
        Err(Failure::Timeout(limit)) => fail(ErrorKind::HandlerTimeout(limit)),
        Err(Failure::NoInstance) => fail(ErrorKind::Overloaded),
        Err(failure) => {
            // WASI 0.3 failures were recorded above, WASI 0.2 traps where
            // they happened, with the cause.
            if !matches!(failure, Failure::Trapped(_)) && !p3 {
                app.metrics
                    .guest_failed(&route.name, FailureKind::NoResponse);
                tracing::warn!(route = %route.name, request_id = %request_id, cause = %failure, "handler failed");
            }
            fail(ErrorKind::HandlerFailed)
        }
    }
}

/// The guards a request holds until its response body has been sent:
/// its slot of the route's `max_concurrency` and its in-flight count.
type Guards = (
    tokio::sync::OwnedSemaphorePermit,
    crate::observability::metrics::InFlight,
);

/// A WASI 0.3 handler: `service` finds or makes the instance. Failures
/// are counted and logged here (the worker loop knows no request).
async fn serve_p3(
    app: &App,
    route: &Route,
    service: &Service,
    req: http::Request<LimitedBody>,
    guest: GuestContext,
    guards: Guards,
    faults: &BodyFaults,
) -> Result<Response, Failure> {
    let request_id = guest.caller.request_id.clone();
    let req = req.map(http_body_util::BodyExt::boxed_unsync);
    let result = service.handle(guest, req).await;
    if let Err(failure) = &result
        && !faults.client.load(Ordering::Acquire)
        && !matches!(failure, Failure::NoInstance)
    {
        let kind = match failure {
            Failure::Timeout(_) => FailureKind::Timeout,
            Failure::Trapped(_) => FailureKind::Trap,
            _ => FailureKind::NoResponse,
        };
        app.metrics.guest_failed(&route.name, kind);
        tracing::warn!(route = %route.name, request_id = %request_id, cause = %failure, "handler failed");
    }
    result.map(|response| response.map(|body| Body::new(Held::new(body, guards))))
}

/// A WASI 0.2 handler: a kept instance if the route has one idle, else a
/// slot of the instance budget for a new one, run by [`invoke`].
async fn serve_p2(
    app: &App,
    route: &Route,
    req: http::Request<LimitedBody>,
    guest: GuestContext,
    guards: Guards,
    series: Arc<RouteMetrics>,
    faults: &BodyFaults,
) -> Result<Response, Failure> {
    let lease = app
        .budget
        .instance_within(route.spec.limits.queue_timeout.0, route.pool.as_ref())
        .await
        .ok_or(Failure::NoInstance)?;
    let cx = invoke::Context {
        metrics: app.metrics.clone(),
        series,
        guest,
        slow_slots: route.slow_slots.clone(),
        client_fault: faults.client.clone(),
    };
    let response = invoke(
        &app.engine,
        route.handler.clone(),
        &route.spec.limits,
        req,
        guards,
        lease,
        cx,
    )
    .await?;
    Ok(response.map(Body::new))
}

fn content_length(req: &Request) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
