//! CORS (`[cors]` and a route's `cors = {...}`) on the real binary:
//! preflights answered by the host without auth or an instance, headers on
//! actual responses (errors included) for allowed origins only, and a
//! route's own rules replacing the global ones.

use crate::harness::{Manifest, Trellis, assert_error, component, header, metric};

const APP: &str = "https://app.example.com";

async fn preflight(
    trellis: &Trellis,
    path: &str,
    origin: &str,
    method: &str,
    headers: Option<&str>,
) -> reqwest::Response {
    let mut request = trellis
        .client()
        .request(reqwest::Method::OPTIONS, trellis.url(path))
        .header("origin", origin)
        .header("access-control-request-method", method);
    if let Some(h) = headers {
        request = request.header("access-control-request-headers", h);
    }
    request.send().await.unwrap()
}

async fn get_from(trellis: &Trellis, path: &str, origin: &str) -> reqwest::Response {
    trellis
        .client()
        .get(trellis.url(path))
        .header("origin", origin)
        .send()
        .await
        .unwrap()
}

fn manifest() -> Manifest {
    Manifest::new()
        .section(&format!(
            "[cors]\nallow_origins = [{APP:?}]\nallow_methods = [\"GET\", \"POST\"]\nallow_headers = [\"authorization\", \"content-type\", \"x-custom\"]\nexpose_headers = [\"x-request-id\"]\nallow_credentials = true\nmax_age = \"10m\""
        ))
        .section(
            "[auth.k]\ntype = \"api-key\"\nheader = \"x-api-key\"\nkeys = { env = \"TRELLIS_E2E_CORS_UNSET\", default = \"cors-key-0123456789\" }",
        )
        .route("open", "/open", component::HELLO, &[])
        .route(
            "guarded",
            "/guarded",
            component::IDENTITY_PROBE,
            &["auth = \"k\"", "grants = [\"identity\", \"log\"]"],
        )
        .route(
            "public",
            "/public",
            component::HELLO,
            &["cors = { allow_origins = [\"*\"], allow_methods = [\"GET\"] }"],
        )
}

#[tokio::test]
async fn preflights_are_answered_by_the_host() {
    let trellis = Trellis::start(manifest()).await;

    // Allowed: 204 with the grants, on a route with auth and no key, and
    // no instance made.
    let response = preflight(
        &trellis,
        "/guarded",
        APP,
        "POST",
        Some("Authorization, X-Custom"),
    )
    .await;
    assert_eq!(response.status(), 204);
    let h = response.headers();
    assert_eq!(header(h, "access-control-allow-origin"), APP);
    assert_eq!(header(h, "access-control-allow-methods"), "GET, POST");
    assert_eq!(
        header(h, "access-control-allow-headers"),
        "authorization, content-type, x-custom"
    );
    assert_eq!(header(h, "access-control-allow-credentials"), "true");
    assert_eq!(header(h, "access-control-max-age"), "600");
    assert!(header(h, "vary").contains("Origin"));

    // Refused: an unknown origin, a look-alike, a method or a header not
    // allowed. 403 and no CORS headers at all.
    for (origin, method, headers) in [
        ("https://evil.example.com", "GET", None),
        ("https://app.example.com.evil.net", "GET", None),
        ("http://app.example.com", "GET", None),
        ("null", "GET", None),
        (APP, "DELETE", None),
        (APP, "GET", Some("x-not-allowed")),
    ] {
        let response = preflight(&trellis, "/guarded", origin, method, headers).await;
        assert!(
            response
                .headers()
                .get("access-control-allow-origin")
                .is_none(),
            "{origin} {method}"
        );
        assert_error(response, 403, "FORBIDDEN").await;
    }
    assert_eq!(
        metric(
            &trellis,
            "trellis_instantiate_seconds_count",
            &[("route", "guarded")]
        )
        .await,
        0.0
    );

    // A plain OPTIONS (not a preflight) still goes through the route's
    // methods: hello's route takes any method.
    let plain = trellis
        .client()
        .request(reqwest::Method::OPTIONS, trellis.url("/open"))
        .send()
        .await
        .unwrap();
    assert_ne!(plain.status(), 204);
}

#[tokio::test]
async fn actual_responses_carry_headers_for_allowed_origins_only() {
    let trellis = Trellis::start(manifest()).await;

    let response = get_from(&trellis, "/open", APP).await;
    assert_eq!(response.status(), 200);
    let h = response.headers();
    assert_eq!(header(h, "access-control-allow-origin"), APP);
    assert_eq!(header(h, "access-control-allow-credentials"), "true");
    assert_eq!(header(h, "access-control-expose-headers"), "x-request-id");
    assert!(header(h, "vary").contains("Origin"));

    let response = get_from(&trellis, "/open", "https://evil.example.com").await;
    assert_eq!(response.status(), 200);
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    assert!(header(response.headers(), "vary").contains("Origin"));

    // A refusal by auth carries the headers, so the page can read the 401.
    let response = get_from(&trellis, "/guarded", APP).await;
    assert_eq!(
        header(response.headers(), "access-control-allow-origin"),
        APP
    );
    assert_error(response, 401, "UNAUTHORIZED").await;

    // The route's own rules replace [cors]: any origin, no credentials.
    let response = get_from(&trellis, "/public", "https://anyone.example").await;
    assert_eq!(
        header(response.headers(), "access-control-allow-origin"),
        "*"
    );
    assert!(
        response
            .headers()
            .get("access-control-allow-credentials")
            .is_none()
    );
    let response = preflight(&trellis, "/public", "https://anyone.example", "GET", None).await;
    assert_eq!(response.status(), 204);
    let response = preflight(&trellis, "/public", "https://anyone.example", "POST", None).await;
    assert_error(response, 403, "FORBIDDEN").await;
}
