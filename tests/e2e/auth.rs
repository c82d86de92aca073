//! Edge auth (`[auth.NAME]`, a route's `auth` and `scopes`) on the real
//! binary, with tokens the tests mint themselves: HS256 with a secret,
//! ES256 and RS256 with keys generated here and published as a JWKS file,
//! by a small HTTP server of the test's own that rotates its key and fails
//! on demand, or over HTTPS by a server whose certificate a test CA signed.
//! Every refusal is checked to have cost no instantiation.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::pkcs8::EncodePrivateKey as _;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::harness::{
    Launch, Manifest, TempDir, Trellis, Upstream, assert_error, assert_valid_openapi, component,
    header, metric, run_cli, unique,
};

const SECRET: &str = "e2e-hs256-secret-that-is-long-enough-0123";
const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "trellis-e2e";

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

/// Claims that verify under [`hs_policy`], with `extra` merged in (a
/// `null` removes a claim).
fn claims(extra: Value) -> Value {
    let mut c = json!({
        "sub": "alice", "iss": ISSUER, "aud": AUDIENCE,
        "exp": now() + 600, "iat": now(),
        "scope": "read write", "email": "alice@example.com",
    });
    let map = c.as_object_mut().unwrap();
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            map.remove(k);
        } else {
            map.insert(k.clone(), v.clone());
        }
    }
    c
}

fn hs(alg: Algorithm, claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret)).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// An ES256 key pair of the test's own.
struct EcKey {
    encoding: EncodingKey,
    jwk: Jwk,
    kid: String,
}

impl EcKey {
    fn new(kid: &str) -> EcKey {
        let secret = loop {
            if let Ok(key) = p256::SecretKey::from_slice(&rand::random::<[u8; 32]>()) {
                break key;
            }
        };
        let der = secret.to_pkcs8_der().unwrap();
        let encoding = EncodingKey::from_ec_der(der.as_bytes());
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        EcKey {
            encoding,
            jwk,
            kid: kid.to_owned(),
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }

    /// The public key's x coordinate, as an attacker would find it in the
    /// published JWKS.
    fn public_x(&self) -> Vec<u8> {
        match &self.jwk.algorithm {
            jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(p) => {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(&p.x)
                    .unwrap()
            }
            other => panic!("not EC: {other:?}"),
        }
    }
}

fn jwks(keys: &[&EcKey]) -> String {
    serde_json::to_string(&JwkSet {
        keys: keys.iter().map(|k| k.jwk.clone()).collect(),
    })
    .unwrap()
}

/// `[auth.NAME]` for HS256 with [`SECRET`] from `env`.
fn hs_policy(name: &str, env: &str) -> String {
    format!(
        "[auth.{name}]\ntype = \"jwt\"\nissuer = {ISSUER:?}\naudience = {AUDIENCE:?}\nalgorithms = [\"HS256\"]\nsecret = {{ env = {env:?} }}\nleeway = \"5s\""
    )
}

async fn call(trellis: &Trellis, path: &str, auth: Option<&str>) -> reqwest::Response {
    let mut request = trellis.client().get(trellis.url(path));
    if let Some(value) = auth {
        request = request.header("authorization", value);
    }
    request.send().await.unwrap()
}

async fn instantiations(trellis: &Trellis, route: &str) -> f64 {
    metric(
        trellis,
        "trellis_instantiate_seconds_count",
        &[("route", route)],
    )
    .await
}

/// A 401 `UNAUTHORIZED` whose body and challenge never quote `token`;
/// returns (message, WWW-Authenticate).
async fn refused(response: reqwest::Response, token: &str) -> (String, String) {
    let challenge = header(response.headers(), "www-authenticate");
    let body = assert_error(response, 401, "UNAUTHORIZED").await;
    let message = body["error"]["message"].as_str().unwrap().to_owned();
    if token.len() > 8 {
        assert!(!body.to_string().contains(token), "token echoed: {body}");
        assert!(!challenge.contains(token), "token echoed: {challenge}");
    }
    (message, challenge)
}

#[tokio::test]
async fn hs256_tokens_are_verified_before_any_instance() {
    let env = unique("TRELLIS_E2E_JWT_SECRET")
        .to_uppercase()
        .replace('-', "_");
    let manifest = Manifest::new()
        .section(&hs_policy("users", &env))
        .route(
            "me",
            "/me",
            component::IDENTITY_PROBE,
            &[
                "auth = \"users\"",
                "scopes = [\"read\"]",
                "grants = [\"identity\", \"log\"]",
            ],
        )
        .route(
            "admin",
            "/admin-only",
            component::IDENTITY_PROBE,
            &[
                "auth = \"users\"",
                "scopes = [\"admin\"]",
                "grants = [\"identity\", \"log\"]",
            ],
        );
    let mut launch = Launch::manifest(manifest);
    launch.env.push((env.clone(), SECRET.to_owned()));
    let trellis = Trellis::launch(launch).await;
    let secret = SECRET.as_bytes();

    // A good token: the guest sees the verified caller, and a forged
    // identity header changes nothing.
    let good = hs(Algorithm::HS256, &claims(json!({})), secret);
    let response = trellis
        .client()
        .get(trellis.url("/me"))
        .header("authorization", format!("Bearer {good}"))
        .header("x-trellis-subject", "mallory")
        .header("x-trellis-identity", r#"{"subject":"mallory"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(body["caller"]["subject"], "alice", "{body}");
    assert_eq!(body["caller"]["policy"], "users");
    assert_eq!(body["caller"]["scopes"], json!(["read", "write"]));
    assert_eq!(body["caller"]["claims"]["email"], "alice@example.com");
    assert_eq!(body["has_scope_read"], true);
    assert_eq!(instantiations(&trellis, "me").await, 1.0);

    // No credential: a challenge without an error code (RFC 6750 §3).
    let (message, challenge) = refused(call(&trellis, "/me", None).await, "").await;
    assert_eq!(challenge, "Bearer realm=\"trellis\"");
    assert!(message.contains("bearer token is required"), "{message}");

    let no_exp = claims(json!({"exp": null}));
    let none_token = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims(json!({})).to_string().as_bytes())
    );
    let nested = format!(
        "{}.{}.c2ln",
        b64(("[".repeat(2_500) + &"]".repeat(2_500)).as_bytes()),
        b64(b"{}")
    );
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            hs(
                Algorithm::HS256,
                &claims(json!({"exp": now() - 60})),
                secret,
            ),
            "expired",
        ),
        (
            "not yet valid",
            hs(
                Algorithm::HS256,
                &claims(json!({"nbf": now() + 120})),
                secret,
            ),
            "not valid yet",
        ),
        (
            "wrong issuer",
            hs(
                Algorithm::HS256,
                &claims(json!({"iss": "https://evil.test"})),
                secret,
            ),
            "issuer",
        ),
        (
            "wrong audience",
            hs(
                Algorithm::HS256,
                &claims(json!({"aud": "someone-else"})),
                secret,
            ),
            "audience",
        ),
        ("no exp", hs(Algorithm::HS256, &no_exp, secret), "exp"),
        (
            "other secret",
            hs(
                Algorithm::HS256,
                &claims(json!({})),
                b"a-different-secret-0123456789abcdef",
            ),
            "signature",
        ),
        (
            "HS384, not listed",
            hs(Algorithm::HS384, &claims(json!({})), secret),
            "not accepted",
        ),
        ("alg none", none_token, "malformed"),
        ("garbage", "garbage".to_owned(), "malformed"),
        ("bad base64", "!!!.@@@.###".to_owned(), "malformed"),
        ("nested header", nested, "malformed"),
        ("64 KiB", "A".repeat(64 << 10), "longer than"),
        (
            "signature stripped",
            {
                let t = hs(Algorithm::HS256, &claims(json!({})), secret);
                t[..t.rfind('.').unwrap() + 1].to_owned()
            },
            "signature",
        ),
    ];
    for (what, token, want) in &cases {
        let (message, challenge) = refused(
            call(&trellis, "/me", Some(&format!("Bearer {token}"))).await,
            token,
        )
        .await;
        assert!(message.contains(want), "{what}: {message}");
        assert!(
            challenge.starts_with("Bearer realm=\"trellis\", error=\"invalid_token\""),
            "{what}: {challenge}"
        );
    }
    // Not the Bearer scheme, or an empty token.
    for value in [format!("Basic {good}"), "Bearer ".to_owned(), good.clone()] {
        let (message, _) = refused(call(&trellis, "/me", Some(&value)).await, &good).await;
        assert!(
            message.contains("Bearer") || message.contains("empty") || message.contains("bearer"),
            "{message}"
        );
    }

    // Verified but without the route's scope: 403 with the scope named.
    let response = call(&trellis, "/admin-only", Some(&format!("Bearer {good}"))).await;
    let challenge = header(response.headers(), "www-authenticate");
    assert!(
        challenge.contains("error=\"insufficient_scope\"") && challenge.contains("scope=\"admin\""),
        "{challenge}"
    );
    let body = assert_error(response, 403, "FORBIDDEN").await;
    assert!(body["error"]["message"].as_str().unwrap().contains("admin"));

    // `scp` as an array grants too.
    let scp = hs(
        Algorithm::HS256,
        &claims(json!({"scope": null, "scp": ["admin"]})),
        secret,
    );
    assert_eq!(
        call(&trellis, "/admin-only", Some(&format!("Bearer {scp}")))
            .await
            .status(),
        200
    );

    // Only the two accepted requests made instances.
    assert_eq!(instantiations(&trellis, "me").await, 1.0);
    assert_eq!(instantiations(&trellis, "admin").await, 1.0);
}

#[tokio::test]
async fn es256_from_a_jwks_file_and_no_algorithm_confusion() {
    let dir = TempDir::new();
    let key = EcKey::new("k1");
    let stranger = EcKey::new("k1"); // same kid, other key
    let jwks_path = dir.write("jwks.json", &jwks(&[&key]));
    let env = unique("TRELLIS_E2E_MIXED").to_uppercase().replace('-', "_");
    let manifest = Manifest::new()
        .section(&format!(
            "[auth.es]\ntype = \"jwt\"\nissuer = {ISSUER:?}\naudience = {AUDIENCE:?}\nalgorithms = [\"ES256\"]\njwks = {:?}",
            jwks_path.to_str().unwrap()
        ))
        // Both families in one policy: HS* must still only use the secret.
        .section(&format!(
            "[auth.mixed]\ntype = \"jwt\"\nalgorithms = [\"HS256\", \"ES256\"]\nsecret = {{ env = {env:?} }}\njwks = {:?}",
            jwks_path.to_str().unwrap()
        ))
        .route("es", "/es", component::IDENTITY_PROBE, &["auth = \"es\"", "grants = [\"identity\", \"log\"]"])
        .route("mixed", "/mixed", component::IDENTITY_PROBE, &["auth = \"mixed\"", "grants = [\"identity\", \"log\"]"]);
    let mut launch = Launch::manifest(manifest);
    launch.env.push((env, SECRET.to_owned()));
    let trellis = Trellis::launch(launch).await;

    let good = key.sign(&claims(json!({"sub": "bob"})));
    let response = call(&trellis, "/es", Some(&format!("Bearer {good}"))).await;
    assert_eq!(response.status(), 200);
    let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(body["caller"]["subject"], "bob");
    assert_eq!(
        call(&trellis, "/mixed", Some(&format!("Bearer {good}")))
            .await
            .status(),
        200
    );

    // The classic confusion: HS256 "signed" with the public key.
    let x = key.public_x();
    let jwk_text = serde_json::to_vec(&key.jwk).unwrap();
    for secret in [&x[..], &jwk_text[..]] {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        let forged = jsonwebtoken::encode(
            &header,
            &claims(json!({})),
            &EncodingKey::from_secret(secret),
        )
        .unwrap();
        let (message, _) = refused(
            call(&trellis, "/es", Some(&format!("Bearer {forged}"))).await,
            &forged,
        )
        .await;
        assert!(message.contains("not accepted"), "{message}");
        let (message, _) = refused(
            call(&trellis, "/mixed", Some(&format!("Bearer {forged}"))).await,
            &forged,
        )
        .await;
        assert!(message.contains("signature"), "{message}");
    }
    // Right kid, wrong key; unknown kid; ES384 (not listed).
    let (message, _) = refused(
        call(
            &trellis,
            "/es",
            Some(&format!("Bearer {}", stranger.sign(&claims(json!({}))))),
        )
        .await,
        "",
    )
    .await;
    assert!(message.contains("signature"), "{message}");
    let other_kid = EcKey::new("k2").sign(&claims(json!({})));
    let (message, _) = refused(
        call(&trellis, "/es", Some(&format!("Bearer {other_kid}"))).await,
        &other_kid,
    )
    .await;
    assert!(message.contains("kid"), "{message}");

    assert_eq!(instantiations(&trellis, "es").await, 1.0);
    assert_eq!(instantiations(&trellis, "mixed").await, 1.0);
}

/// What the test's JWKS server answers.
#[derive(Clone)]
enum Serve {
    Keys(String),
    Status500,
    Garbage,
    Hang,
}

/// A JWKS endpoint of the test's own: answers `GET` with whatever `mode`
/// says, counting requests.
struct JwksServer {
    addr: SocketAddr,
    mode: Arc<Mutex<Serve>>,
    hits: Arc<AtomicUsize>,
}

impl JwksServer {
    async fn start(initial: Serve) -> JwksServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(Mutex::new(initial));
        let hits = Arc::new(AtomicUsize::new(0));
        let (m, h) = (mode.clone(), hits.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let (m, h) = (m.clone(), h.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    h.fetch_add(1, Ordering::SeqCst);
                    let mode = m.lock().unwrap().clone();
                    let (status, body) = match mode {
                        Serve::Keys(body) => ("200 OK", body),
                        Serve::Status500 => ("500 Internal Server Error", "oops".to_owned()),
                        Serve::Garbage => ("200 OK", "<html>not json".to_owned()),
                        Serve::Hang => {
                            tokio::time::sleep(Duration::from_secs(60)).await;
                            return;
                        }
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                });
            }
        });
        JwksServer { addr, mode, hits }
    }

    fn set(&self, mode: Serve) {
        *self.mode.lock().unwrap() = mode;
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn jwks_url_rotates_is_rate_limited_and_survives_outages() {
    let a = EcKey::new("a");
    let b = EcKey::new("b");
    let server = JwksServer::start(Serve::Keys(jwks(&[&a]))).await;
    let manifest = Manifest::new()
        .section(&format!(
            "[auth.remote]\ntype = \"jwt\"\nalgorithms = [\"ES256\"]\njwks = \"http://{}/jwks.json\"\njwks_cooldown = \"2s\"",
            server.addr
        ))
        .route("remote", "/r", component::IDENTITY_PROBE, &["auth = \"remote\"", "grants = [\"identity\", \"log\"]"]);
    let trellis = Trellis::start(manifest).await;
    assert_eq!(server.hits(), 1, "fetched once at start");
    let bearer = |t: String| format!("Bearer {t}");

    assert_eq!(
        call(&trellis, "/r", Some(&bearer(a.sign(&claims(json!({}))))))
            .await
            .status(),
        200
    );
    assert_eq!(server.hits(), 1, "served from the cached copy");

    // The issuer rotates to key b: the unknown kid prompts one fetch.
    server.set(Serve::Keys(jwks(&[&a, &b])));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        call(&trellis, "/r", Some(&bearer(b.sign(&claims(json!({}))))))
            .await
            .status(),
        200
    );
    assert_eq!(server.hits(), 2);

    // A storm of unknown kids within the cooldown fetches at most once.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    for i in 0..10 {
        let t = EcKey::new(&format!("unknown-{i}")).sign(&claims(json!({})));
        let (message, _) = refused(call(&trellis, "/r", Some(&bearer(t.clone()))).await, &t).await;
        assert!(message.contains("kid"), "{message}");
    }
    assert_eq!(server.hits(), 3, "one fetch for ten unknown kids");

    // The endpoint fails in every way; known keys keep verifying.
    for mode in [Serve::Status500, Serve::Garbage, Serve::Hang] {
        server.set(mode);
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let unknown = EcKey::new("c").sign(&claims(json!({})));
        let started = std::time::Instant::now();
        let response = call(&trellis, "/r", Some(&bearer(unknown.clone()))).await;
        refused(response, &unknown).await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a hanging JWKS is bounded"
        );
        assert_eq!(
            call(&trellis, "/r", Some(&bearer(b.sign(&claims(json!({}))))))
                .await
                .status(),
            200
        );
    }
    assert_eq!(instantiations(&trellis, "remote").await, 5.0);
}

#[tokio::test]
async fn jwks_down_at_start_is_503_until_it_answers() {
    let key = EcKey::new("k");
    let server = JwksServer::start(Serve::Status500).await;
    let manifest = Manifest::new()
        .section(&format!(
            "[auth.remote]\ntype = \"jwt\"\nalgorithms = [\"ES256\"]\njwks = \"http://{}/jwks.json\"\njwks_cooldown = \"1s\"",
            server.addr
        ))
        .route("remote", "/r", component::IDENTITY_PROBE, &["auth = \"remote\"", "grants = [\"identity\", \"log\"]"]);
    let trellis = Trellis::start(manifest).await;
    let token = format!("Bearer {}", key.sign(&claims(json!({}))));
    let response = call(&trellis, "/r", Some(&token)).await;
    assert_error(response, 503, "UPSTREAM_UNAVAILABLE").await;
    server.set(Serve::Keys(jwks(&[&key])));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(call(&trellis, "/r", Some(&token)).await.status(), 200);
}

#[tokio::test]
async fn api_keys_from_env_are_compared_whole() {
    let env = unique("TRELLIS_E2E_KEYS").to_uppercase().replace('-', "_");
    let k1 = "partner-one-0123456789abcdef";
    let k2 = "partner-two-fedcba9876543210";
    let manifest = Manifest::new()
        .section(&format!(
            "[auth.partners]\ntype = \"api-key\"\nheader = \"x-api-key\"\nkeys = {{ env = {env:?} }}"
        ))
        .route(
            "partner",
            "/p",
            component::IDENTITY_PROBE,
            &["auth = \"partners\"", "grants = [\"identity\", \"log\"]"],
        );
    let mut launch = Launch::manifest(manifest);
    launch.env.push((env, format!("{k1}, {k2}")));
    let trellis = Trellis::launch(launch).await;
    let with_key = |key: &str| {
        trellis
            .client()
            .get(trellis.url("/p"))
            .header("x-api-key", key)
            .send()
    };
    let mut subjects = Vec::new();
    for key in [k1, k2] {
        let response = with_key(key).await.unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        let subject = body["caller"]["subject"].as_str().unwrap().to_owned();
        assert!(
            subject.starts_with("api-key:") && !subject.contains("partner"),
            "{subject}"
        );
        subjects.push(subject);
    }
    assert_ne!(subjects[0], subjects[1]);
    let near_misses = [
        &k1[..k1.len() - 1],
        &format!("{k1}0"),
        &k1.to_uppercase(),
        &format!("{k1},{k2}"),
        "partner-one-0123456789abcdeF",
        "x",
    ];
    for key in near_misses {
        let (message, challenge) = refused(with_key(key).await.unwrap(), key).await;
        assert!(message.contains("not valid"), "{message}");
        assert_eq!(challenge, "ApiKey realm=\"trellis\", header=\"x-api-key\"");
    }
    let (message, _) = refused(call(&trellis, "/p", None).await, "").await;
    assert!(message.contains("x-api-key"), "{message}");
    assert_eq!(instantiations(&trellis, "partner").await, 2.0);
}

#[tokio::test]
async fn rate_limits_can_count_by_subject() {
    let env = unique("TRELLIS_E2E_SUBJ").to_uppercase().replace('-', "_");
    let policy = unique("per-user");
    let manifest = Manifest::new()
        .section(&hs_policy("users", &env))
        .section(&format!(
            "[rate_limits.{policy}]\nrequests = 2\nwindow = \"1h\"\nkey = \"subject\""
        ))
        .route(
            "limited",
            "/l",
            component::IDENTITY_PROBE,
            &[
                "auth = \"users\"",
                "grants = [\"identity\", \"log\"]",
                &format!("rate_limit = {policy:?}"),
            ],
        );
    let mut launch = Launch::manifest(manifest);
    launch.env.push((env, SECRET.to_owned()));
    let trellis = Trellis::launch(launch).await;
    let token = |sub: &str| {
        format!(
            "Bearer {}",
            hs(
                Algorithm::HS256,
                &claims(json!({"sub": sub})),
                SECRET.as_bytes()
            )
        )
    };
    for user in ["ann", "ben"] {
        for _ in 0..2 {
            assert_eq!(call(&trellis, "/l", Some(&token(user))).await.status(), 200);
        }
        assert_error(
            call(&trellis, "/l", Some(&token(user))).await,
            429,
            "RATE_LIMITED",
        )
        .await;
    }
    // A bad token is refused by auth, before it could count against anyone.
    refused(call(&trellis, "/l", Some("Bearer nope")).await, "").await;
    assert_eq!(instantiations(&trellis, "limited").await, 4.0);
}

#[tokio::test]
async fn policies_are_checked_at_load_with_line_and_field() {
    let cases = [
        (
            "[[route]]\npath = \"/a\"\ncomponent = \"a.wasm\"\nauth = \"nobody\"\n",
            ":4: route[0].auth",
        ),
        (
            "[auth.x]\ntype = \"jwt\"\nalgorithms = [\"none\"]\n",
            "auth.x.algorithms",
        ),
        (
            "[auth.x]\ntype = \"jwt\"\nalgorithms = [\"RS256\"]\njwks = \"ftp://issuer.example/jwks\"\n",
            ":4: auth.x.jwks",
        ),
        (
            "[auth.x]\ntype = \"jwt\"\nalgorithms = [\"RS256\"]\njwks = \"http://issuer.example/jwks\"\njwks_ca = \"ca.pem\"\n",
            ":5: auth.x.jwks_ca: only an https://",
        ),
        (
            "[auth.x]\ntype = \"jwt\"\nalgorithms = [\"RS256\"]\njwks = \"https://issuer.example/jwks\"\njwks_ca = \"missing.pem\"\n",
            ":5: auth.x.jwks_ca: cannot read",
        ),
        (
            "[auth.k]\ntype = \"api-key\"\nheader = \"x-k\"\nstore = \"redis\"\n",
            ":4: auth.k.store",
        ),
        (
            "[auth.k]\ntype = \"api-key\"\nheader = \"x-k\"\nkeys = { env = \"K\", default = \"0123456789abcdef\" }\ncache_ttl = \"5s\"\n",
            ":5: auth.k.cache_ttl",
        ),
        (
            "[auth.k]\ntype = \"api-key\"\nheader = \"x-k\"\nstore = \"database\"\ncache_ttl = \"1h\"\n",
            ":5: auth.k.cache_ttl",
        ),
        (
            "[auth.x]\ntype = \"jwt\"\nsecret = { env = \"X\", default = \"short\" }\n",
            ":3: auth.x.secret",
        ),
        (
            "[auth.k]\ntype = \"api-key\"\nheader = \"x-k\"\nkeys = { env = \"K\", default = \"0123456789abcdef\" }\n[[route]]\npath = \"/a\"\ncomponent = \"a.wasm\"\nauth = \"k\"\nscopes = [\"a\"]\n",
            ":9: route[0].scopes",
        ),
        (
            "[[route]]\npath = \"/a\"\ncomponent = \"a.wasm\"\ngrants = [\"identity\", \"log\"]\n",
            ":4: route[0].grants",
        ),
        (
            "[cors]\nallow_origins = [\"*\"]\nallow_credentials = true\n",
            "cors.allow_origins",
        ),
    ];
    for (text, want) in cases {
        let dir = TempDir::new();
        let path = dir.write("trellis.toml", text);
        let output = run_cli(&["check", path.to_str().unwrap()], dir.path()).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "accepted {text}");
        assert!(stderr.contains(want), "{want} not in {stderr}");
    }
}

/// A component that imports `identity` on a route that does not grant it
/// is refused at load, naming the grant.
#[tokio::test]
async fn identity_needs_its_grant() {
    let dir = TempDir::new();
    let manifest = Manifest::new()
        .section(&format!(
            "[auth.u]\ntype = \"jwt\"\nsecret = {{ env = \"TRELLIS_E2E_UNSET\", default = {SECRET:?} }}"
        ))
        .route(
            "stingy",
            "/s",
            component::IDENTITY_PROBE,
            &["auth = \"u\"", "grants = [\"log\"]"],
        );
    let path = dir.write("trellis.toml", &manifest.render());
    let output = run_cli(&["check", path.to_str().unwrap()], dir.path()).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("trellis:api/identity") && stderr.contains("grant \"identity\""),
        "{stderr}"
    );
}

/// Watch mode reloads policies with the manifest: a rotated key takes
/// effect, and a route gaining `auth` is guarded from then on.
#[tokio::test]
async fn watch_mode_reloads_policies() {
    let policy = |key: &str| {
        format!(
            "[auth.k]\ntype = \"api-key\"\nheader = \"x-api-key\"\nkeys = {{ env = \"TRELLIS_E2E_WATCH_UNSET\", default = {key:?} }}"
        )
    };
    let route = |extra: &[&str]| {
        let mut lines = vec!["grants = [\"identity\", \"log\"]"];
        lines.extend_from_slice(extra);
        lines.iter().map(|l| (*l).to_owned()).collect::<Vec<_>>()
    };
    let build = |key: &str, guarded_open: bool| {
        let open: Vec<String> = if guarded_open {
            route(&["auth = \"k\""])
        } else {
            vec!["grants = [\"log\"]".to_owned()]
        };
        let open: Vec<&str> = open.iter().map(String::as_str).collect();
        let guarded = route(&["auth = \"k\""]);
        let guarded: Vec<&str> = guarded.iter().map(String::as_str).collect();
        Manifest::new()
            .section(&policy(key))
            .route("guarded", "/g", component::IDENTITY_PROBE, &guarded)
            .route("open", "/o", component::HELLO, &open)
    };
    let old_key = "old-key-0123456789abcdef";
    let new_key = "new-key-0123456789abcdef";
    let trellis = Trellis::launch(Launch {
        args: vec!["--watch".into()],
        ..Launch::manifest(build(old_key, false))
    })
    .await;
    trellis
        .wait_log("watching", |l| l["message"] == "watching for changes")
        .await;
    let with_key = |path: &'static str, key: &'static str| {
        trellis
            .client()
            .get(trellis.url(path))
            .header("x-api-key", key)
            .send()
    };
    assert_eq!(with_key("/g", old_key).await.unwrap().status(), 200);
    assert_eq!(call(&trellis, "/o", None).await.status(), 200);

    std::fs::write(trellis.manifest_path(), build(new_key, true).render()).unwrap();
    let deadline = std::time::Instant::now() + crate::harness::WAIT;
    while call(&trellis, "/o", None).await.status() != 401 {
        assert!(
            std::time::Instant::now() < deadline,
            "/o not guarded after reload"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(with_key("/g", new_key).await.unwrap().status(), 200);
    refused(with_key("/g", old_key).await.unwrap(), old_key).await;
    assert_eq!(with_key("/o", new_key).await.unwrap().status(), 200);
}

/// `GET /openapi.json` describes the routes, their parameters and their
/// security, and is a valid OpenAPI 3.1 document (checked with the
/// `openapi-spec-validator` Python package, which the CI installs).
#[tokio::test]
async fn openapi_document_is_generated_and_valid() {
    let manifest = Manifest::new()
        .section(&format!(
            "[auth.users]\ntype = \"jwt\"\nsecret = {{ env = \"TRELLIS_E2E_OPENAPI_UNSET\", default = {SECRET:?} }}"
        ))
        .section(
            "[auth.partners]\ntype = \"api-key\"\nheader = \"x-api-key\"\nkeys = { env = \"TRELLIS_E2E_OPENAPI_UNSET\", default = \"partner-key-0123456789\" }",
        )
        .section("[rate_limits.per_ip]\nrequests = 100\nwindow = \"1m\"")
        .route(
            "users",
            "/users/{id}",
            component::IDENTITY_PROBE,
            &[
                "methods = [\"GET\", \"PUT\"]",
                "summary = \"One user\"",
                "description = \"Reads or replaces a user.\"",
                "auth = \"users\"",
                "scopes = [\"users:read\"]",
                "grants = [\"identity\", \"log\"]",
                "rate_limit = \"per_ip\"",
            ],
        )
        .route(
            "files",
            "/files/{*rest}",
            component::IDENTITY_PROBE,
            &["auth = \"partners\"", "grants = [\"identity\", \"log\"]"],
        )
        .route("hello", "/", component::HELLO, &[]);
    let trellis = Trellis::start(manifest).await;
    let response = trellis.get("/openapi.json").await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let get = &doc["paths"]["/users/{id}"]["get"];
    assert_eq!(get["security"], json!([{"users": ["users:read"]}]));
    assert_eq!(get["parameters"][0]["name"], "id");
    assert_eq!(get["summary"], "One user");
    assert_eq!(
        doc["paths"]["/users/{id}"]["put"]["description"],
        "Reads or replaces a user."
    );
    assert!(get["responses"]["401"].is_object() && get["responses"]["429"].is_object());
    assert!(doc["paths"]["/users/{id}"]["post"].is_null());
    assert_eq!(
        doc["paths"]["/files/{rest}"]["get"]["parameters"][0]["name"],
        "rest"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["partners"],
        json!({"type": "apiKey", "in": "header", "name": "x-api-key"})
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["users"]["scheme"],
        "bearer"
    );
    assert!(doc["paths"]["/"]["delete"].is_object());

    assert_valid_openapi(&text).await;
}

/// EdDSA (Ed25519) keys from a JWKS, with a key the test generates; a
/// token signed by another Ed25519 key under the same `kid` is refused.
#[tokio::test]
async fn eddsa_from_a_jwks_file() {
    // PKCS#8 v1 for an Ed25519 seed: a fixed prefix, then the seed.
    const PKCS8_PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    let key = |seed: [u8; 32]| {
        let public = ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes();
        let der = [&PKCS8_PREFIX[..], &seed[..]].concat();
        (EncodingKey::from_ed_der(&der), b64(&public))
    };
    let (signing, x) = key(rand::random());
    let (other, _) = key(rand::random());
    let dir = TempDir::new();
    let jwks =
        json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "ed", "alg": "EdDSA"}]});
    let path = dir.write("jwks.json", &jwks.to_string());
    let manifest = Manifest::new()
        .section(&format!(
            "[auth.ed]\ntype = \"jwt\"\nalgorithms = [\"EdDSA\"]\njwks = {:?}",
            path.to_str().unwrap()
        ))
        .route(
            "ed",
            "/ed",
            component::IDENTITY_PROBE,
            &["auth = \"ed\"", "grants = [\"identity\", \"log\"]"],
        );
    let trellis = Trellis::start(manifest).await;
    let sign = |k: &EncodingKey| {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some("ed".into());
        jsonwebtoken::encode(&header, &claims(json!({"sub": "eve"})), k).unwrap()
    };
    let response = call(&trellis, "/ed", Some(&format!("Bearer {}", sign(&signing)))).await;
    assert_eq!(response.status(), 200);
    let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(body["caller"]["subject"], "eve");
    let forged = sign(&other);
    let (message, _) = refused(
        call(&trellis, "/ed", Some(&format!("Bearer {forged}"))).await,
        &forged,
    )
    .await;
    assert!(message.contains("signature"), "{message}");
    assert_eq!(instantiations(&trellis, "ed").await, 1.0);
}

/// An RS256 key pair of the test's own, generated by the `openssl` CLI (an
/// unoptimized test build would take many seconds to find RSA primes).
struct RsaKey {
    encoding: EncodingKey,
    jwk: Jwk,
    kid: String,
}

impl RsaKey {
    fn new(kid: &str) -> RsaKey {
        let dir = TempDir::new();
        let run = |args: &[&str]| crate::harness::openssl(dir.path(), args);
        run(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "key.pem",
        ]);
        let der = crate::harness::rsa_der(dir.path());
        let encoding = EncodingKey::from_rsa_der(&der);
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        RsaKey {
            encoding,
            jwk,
            kid: kid.to_owned(),
        }
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_as(&self.kid, claims)
    }

    /// Signed with this key but naming `kid`: a forgery when `kid` is
    /// another key's.
    fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }

    /// The public modulus, as anyone reading the JWKS has it.
    fn public_n(&self) -> Vec<u8> {
        match &self.jwk.algorithm {
            jsonwebtoken::jwk::AlgorithmParameters::RSA(p) => {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(&p.n)
                    .unwrap()
            }
            other => panic!("not RSA: {other:?}"),
        }
    }
}

fn rsa_jwks(keys: &[&RsaKey]) -> String {
    serde_json::to_string(&JwkSet {
        keys: keys.iter().map(|k| k.jwk.clone()).collect(),
    })
    .unwrap()
}

/// RS256 tokens against a JWKS URL whose server rotates its key: the new
/// key is fetched on its first token, the old one stops verifying once the
/// document drops it, and neither a forged `kid` nor the public key used as
/// an HMAC secret gets through.
#[tokio::test]
async fn rs256_from_a_jwks_server_that_rotates_its_key() {
    let (one, two, three) = (RsaKey::new("one"), RsaKey::new("two"), RsaKey::new("three"));
    let server = JwksServer::start(Serve::Keys(rsa_jwks(&[&one]))).await;
    let manifest = Manifest::new()
        .section(&format!(
            "[auth.rsa]\ntype = \"jwt\"\nissuer = {ISSUER:?}\naudience = {AUDIENCE:?}\nalgorithms = [\"RS256\"]\njwks = \"http://{}/jwks.json\"\njwks_cooldown = \"1s\"",
            server.addr
        ))
        .route(
            "rsa",
            "/r",
            component::IDENTITY_PROBE,
            &["auth = \"rsa\"", "grants = [\"identity\", \"log\"]"],
        );
    let trellis = Trellis::start(manifest).await;
    let bearer = |t: &str| format!("Bearer {t}");
    let with = |sub: &str| claims(json!({ "sub": sub }));

    let response = call(&trellis, "/r", Some(&bearer(&one.sign(&with("ann"))))).await;
    assert_eq!(response.status(), 200);
    let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(body["caller"]["subject"], "ann", "{body}");
    assert_eq!(server.hits(), 1);

    // The issuer rotates: the document now holds only key two.
    server.set(Serve::Keys(rsa_jwks(&[&two])));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let response = call(&trellis, "/r", Some(&bearer(&two.sign(&with("ben"))))).await;
    assert_eq!(response.status(), 200);
    assert_eq!(server.hits(), 2, "the unknown kid prompted one fetch");

    // A new token from the retired key no longer verifies.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let retired = one.sign(&with("cat"));
    let (message, challenge) = refused(
        call(&trellis, "/r", Some(&bearer(&retired))).await,
        &retired,
    )
    .await;
    assert!(message.contains("kid"), "{message}");
    assert!(challenge.contains("invalid_token"), "{challenge}");

    // Key three signing under key two's kid: the signature fails.
    let forged = three.sign_as("two", &with("dan"));
    let (message, _) = refused(call(&trellis, "/r", Some(&bearer(&forged))).await, &forged).await;
    assert!(message.contains("signature"), "{message}");
    // The public key as an HMAC secret: HS256 is not on the list.
    let confused = hs(Algorithm::HS256, &with("eve"), &two.public_n());
    let (message, _) = refused(
        call(&trellis, "/r", Some(&bearer(&confused))).await,
        &confused,
    )
    .await;
    assert!(message.contains("not accepted"), "{message}");
    // Expired and wrong-audience RS256 tokens, properly signed.
    for (extra, want) in [
        (json!({"exp": now() - 120}), "expired"),
        (json!({"aud": "someone-else"}), "audience"),
    ] {
        let token = two.sign(&claims(extra));
        let (message, _) = refused(call(&trellis, "/r", Some(&bearer(&token))).await, &token).await;
        assert!(message.contains(want), "{want}: {message}");
    }
    assert_eq!(instantiations(&trellis, "rsa").await, 2.0);
}

/// An `https://` JWKS URL, fetched with the upstreams' TLS client: trusted
/// through the policy's `jwks_ca`, refused (and the keys unavailable)
/// without it, and refreshed over TLS when the issuer adds a key.
#[tokio::test]
async fn https_jwks_with_a_private_ca() {
    let (one, two) = (RsaKey::new("one"), RsaKey::new("two"));
    let upstream = Upstream::start_tls().await;
    upstream.set_jwks(rsa_jwks(&[&one]));
    let ca = upstream.ca.clone().unwrap();
    let policy = |ca_line: &str| {
        Manifest::new()
            .section(&format!(
                "[auth.tls]\ntype = \"jwt\"\nalgorithms = [\"RS256\"]\njwks = \"{}/jwks.json\"\njwks_cooldown = \"1s\"\n{ca_line}",
                upstream.origin()
            ))
            .route(
                "tls",
                "/t",
                component::IDENTITY_PROBE,
                &["auth = \"tls\"", "grants = [\"identity\", \"log\"]"],
            )
    };
    let trellis =
        Trellis::start(policy(&format!("jwks_ca = {:?}", ca.display().to_string()))).await;
    assert!(upstream.origin().starts_with("https://"));
    let token = |key: &RsaKey| format!("Bearer {}", key.sign(&claims(json!({}))));
    assert_eq!(call(&trellis, "/t", Some(&token(&one))).await.status(), 200);
    let fetched = upstream.requests();
    assert!(fetched >= 1, "the JWKS came from the TLS server");

    upstream.set_jwks(rsa_jwks(&[&one, &two]));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(call(&trellis, "/t", Some(&token(&two))).await.status(), 200);
    assert_eq!(upstream.requests(), fetched + 1, "fetched again over TLS");
    assert_eq!(instantiations(&trellis, "tls").await, 2.0);

    // Without the CA the server's certificate is not trusted: no keys, 503.
    let untrusting = Trellis::start(policy("")).await;
    let response = call(&untrusting, "/t", Some(&token(&one))).await;
    assert_error(response, 503, "UPSTREAM_UNAVAILABLE").await;
    let line = untrusting
        .wait_log("the failed JWKS fetch", |l| {
            l["message"] == "JWKS fetch failed; keeping the last good copy"
        })
        .await;
    let cause = line["cause"].as_str().unwrap_or_default();
    assert!(cause.contains("certificate"), "{line}");
    assert_eq!(instantiations(&untrusting, "tls").await, 0.0);
}
