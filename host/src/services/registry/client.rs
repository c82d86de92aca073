//! The HTTP side of the distribution API: one request to a registry with
//! its credentials, over the host's rustls client (the one JWKS fetches
//! use), answering a `401` challenge the standard ways: HTTP Basic, or a
//! `Bearer realm=…,service=…,scope=…` challenge whose token endpoint is
//! asked for a token (with the credentials, when configured), which is
//! then kept per registry and scope.

use crate::config::manifest::Credentials;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{AUTHORIZATION, HeaderName, LOCATION, WWW_AUTHENTICATE};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Longest a TCP and TLS connect may take: a registry that is down
/// should fail a deploy quickly.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest one exchange (request, response and its whole body) may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(300);

/// Largest error body or token answer read.
const SMALL: usize = 64 << 10;

/// Redirects followed for one blob (registries hand blobs to a CDN).
const MAX_REDIRECTS: usize = 5;

/// What went wrong talking to a registry, before [`super`] adds which
/// registry and reference.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// No connection, a reset, or no answer in time.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The registry refused the credentials (or there were none).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// `404`: the tag, manifest or blob is not there.
    #[error("{0} not found (404)")]
    NotFound(String),
    /// What was served does not hash to the digest it was asked for by.
    #[error("the {what} {expected} was served with digest {actual}; refusing it")]
    DigestMismatch {
        /// `manifest` or `layer`.
        what: &'static str,
        /// The digest asked for.
        expected: String,
        /// What the bytes hash to.
        actual: String,
    },
    /// The manifest is not a wasm component's (or not JSON).
    #[error("{0}")]
    Invalid(String),
    /// An answer the exchange did not expect.
    #[error("{stage}: the registry answered {status}: {body}")]
    Status {
        /// What was being done.
        stage: &'static str,
        /// The HTTP status.
        status: StatusCode,
        /// The start of its body (the registry's error JSON).
        body: String,
    },
    /// The component is larger than `server.max_component_size`.
    #[error("the component is {size} bytes, over server.max_component_size ({limit} bytes)")]
    TooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
}

/// A whole answer.
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
}

impl Answer {
    /// A [`Failure::Status`] for this answer.
    pub(super) fn unexpected(&self, stage: &'static str) -> Failure {
        let text = String::from_utf8_lossy(&self.body[..self.body.len().min(300)]);
        Failure::Status {
            stage,
            status: self.status,
            body: text.trim().to_owned(),
        }
    }

    /// A header as text.
    pub(super) fn header(&self, name: HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Where requests go: a registry's base URL and its credentials.
pub(super) struct Target<'a> {
    /// `HOST[:PORT]`, the key tokens are kept under.
    pub(super) registry: &'a str,
    /// `https://HOST[:PORT]` (`http://` for an insecure one).
    pub(super) base: String,
    /// From its `[registries]` entry.
    pub(super) credentials: Option<&'a Credentials>,
}

/// One request as it may be sent again after a challenge.
pub(super) struct Call<'a> {
    pub(super) method: Method,
    /// Absolute URL.
    pub(super) url: String,
    pub(super) headers: Vec<(HeaderName, String)>,
    pub(super) body: Bytes,
    /// `repository:NAME:pull` (or `pull,push`): the token scope asked for.
    pub(super) scope: &'a str,
    /// Largest body accepted back.
    pub(super) limit: usize,
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The client every registry call goes through, and the tokens got.
pub(super) struct Http {
    client: HttpClient,
    /// Bearer tokens by (registry, scope); dropped when refused.
    tokens: Mutex<HashMap<(String, String), String>>,
}

impl Http {
    pub(super) fn new() -> anyhow::Result<Http> {
        let connector = crate::services::upstreams::client::https_connector(None, CONNECT_TIMEOUT)?;
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Http {
            client,
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// Sends `call` to `target`, answering an auth challenge once.
    pub(super) async fn send(
        &self,
        target: &Target<'_>,
        call: &Call<'_>,
    ) -> Result<Answer, Failure> {
        let key = (target.registry.to_owned(), call.scope.to_owned());
        let cached = self.tokens.lock().expect("token lock").get(&key).cloned();
        let basic = target.credentials.map(basic_auth);
        let first_auth = cached.map(|t| format!("Bearer {t}")).or(basic.clone());
        let answer = self.once(call, first_auth.as_deref()).await?;
        if answer.status != StatusCode::UNAUTHORIZED {
            return Ok(answer);
        }
        self.tokens.lock().expect("token lock").remove(&key);
        let challenge = answer
            .header(WWW_AUTHENTICATE)
            .unwrap_or_default()
            .to_owned();
        let retry_auth = match Challenge::parse(&challenge) {
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let scope = scope.unwrap_or_else(|| call.scope.to_owned());
                let token = self
                    .token(target, &realm, service.as_deref(), &scope)
                    .await?;
                self.tokens
                    .lock()
                    .expect("token lock")
                    .insert(key, token.clone());
                format!("Bearer {token}")
            }
            Some(Challenge::Basic) => match basic {
                Some(basic) if first_auth.as_deref() != Some(basic.as_str()) => basic,
                Some(_) => {
                    return Err(Failure::Unauthorized(
                        "the registry refused the configured username and password".into(),
                    ));
                }
                None => {
                    return Err(Failure::Unauthorized(format!(
                        "the registry asks for credentials; set username and password in [registries.\"{}\"]",
                        target.registry
                    )));
                }
            },
            None => {
                return Err(Failure::Unauthorized(format!(
                    "401 with an unsupported challenge {challenge:?}"
                )));
            }
        };
        let answer = self.once(call, Some(&retry_auth)).await?;
        if answer.status == StatusCode::UNAUTHORIZED {
            let why = if target.credentials.is_some() {
                "the registry refused the configured credentials".to_owned()
            } else {
                format!(
                    "the registry asks for credentials; set username and password in [registries.\"{}\"]",
                    target.registry
                )
            };
            return Err(Failure::Unauthorized(why));
        }
        Ok(answer)
    }

    /// `GET` a blob, following redirects; credentials go only to the
    /// registry itself, never to where it redirects.
    pub(super) async fn get_following(
        &self,
        target: &Target<'_>,
        call: Call<'_>,
    ) -> Result<Answer, Failure> {
        let mut answer = self.send(target, &call).await?;
        for _ in 0..MAX_REDIRECTS {
            if !answer.status.is_redirection() {
                return Ok(answer);
            }
            let Some(location) = answer.header(LOCATION) else {
                return Ok(answer);
            };
            let url = resolve(&target.base, location);
            let next = Call {
                url,
                headers: call.headers.clone(),
                method: Method::GET,
                body: Bytes::new(),
                scope: call.scope,
                limit: call.limit,
            };
            answer = self.once(&next, None).await?;
        }
        Ok(answer)
    }

    /// Asks a Bearer challenge's token endpoint for a token.
    async fn token(
        &self,
        target: &Target<'_>,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<String, Failure> {
        let mut url = format!("{realm}{}scope={}", sep(realm), encode(scope));
        if let Some(service) = service {
            url.push_str(&format!("&service={}", encode(service)));
        }
        let call = Call {
            method: Method::GET,
            url,
            headers: Vec::new(),
            body: Bytes::new(),
            scope,
            limit: SMALL,
        };
        let basic = target.credentials.map(basic_auth);
        let answer = self.once(&call, basic.as_deref()).await?;
        if answer.status != StatusCode::OK {
            return Err(Failure::Unauthorized(format!(
                "the token endpoint {realm} answered {}",
                answer.status
            )));
        }
        let json: serde_json::Value = serde_json::from_slice(&answer.body).map_err(|e| {
            Failure::Unauthorized(format!("the token endpoint {realm} answered no JSON: {e}"))
        })?;
        json["token"]
            .as_str()
            .or(json["access_token"].as_str())
            .map(str::to_owned)
            .ok_or_else(|| {
                Failure::Unauthorized(format!("the token endpoint {realm} gave no token"))
            })
    }

    /// One exchange, bounded by [`EXCHANGE_TIMEOUT`]; the body is read
    /// whole, up to the call's limit.
    async fn once(&self, call: &Call<'_>, auth: Option<&str>) -> Result<Answer, Failure> {
        let mut request = Request::builder()
            .method(call.method.clone())
            .uri(&call.url)
            .header(http::header::USER_AGENT, "trellis");
        for (name, value) in &call.headers {
            request = request.header(name, value);
        }
        if let Some(auth) = auth {
            request = request.header(AUTHORIZATION, auth);
        }
        if !call.body.is_empty() || matches!(call.method, Method::PUT | Method::POST) {
            request = request.header(http::header::CONTENT_LENGTH, call.body.len());
        }
        let request = request
            .body(Full::new(call.body.clone()))
            .map_err(|e| Failure::Invalid(format!("request to {}: {e}", call.url)))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| {
                Failure::Unreachable(crate::services::upstreams::client::error_chain(&e))
            })?;
            let (parts, body) = response.into_parts();
            // Error bodies are read only so far: the registry's message.
            let limit = if parts.status.is_success() {
                call.limit
            } else {
                SMALL
            };
            let body = Limited::new(body, limit)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        Failure::Invalid(format!("the answer is larger than {limit} bytes"))
                    } else {
                        Failure::Unreachable(format!("reading the answer: {e}"))
                    }
                })?
                .to_bytes();
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
            .await
            .map_err(|_| Failure::Unreachable(format!("no answer within {EXCHANGE_TIMEOUT:?}")))?
    }
}

/// `Basic base64(user:password)`.
fn basic_auth(credentials: &Credentials) -> String {
    let pair = format!("{}:{}", credentials.username, credentials.password);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// `?` or `&`, whichever appends a query parameter to `url`.
pub(super) fn sep(url: &str) -> char {
    if url.contains('?') { '&' } else { '?' }
}

/// `location` (absolute, or a path on the registry) as an absolute URL.
pub(super) fn resolve(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_owned()
    } else {
        format!("{base}{location}")
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters
/// (also the admin client's, for paths and queries).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A `WWW-Authenticate` challenge the client answers.
#[derive(Debug, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

impl Challenge {
    fn parse(header: &str) -> Option<Challenge> {
        let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let params = params(rest);
        let get = |k: &str| {
            params
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };
        Some(Challenge::Bearer {
            realm: get("realm")?,
            service: get("service"),
            scope: get("scope"),
        })
    }
}

/// `key="value",key=value` pairs; commas inside quotes stay in the value.
fn params(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key.trim().trim_start_matches(',').trim().to_owned();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        out.push((key, value.to_owned()));
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        assert_eq!(
            Challenge::parse("Basic realm=\"Registry Realm\""),
            Some(Challenge::Basic)
        );
        assert_eq!(
            Challenge::parse(
                "Bearer realm=\"https://auth.example/token\",service=\"registry.example\",scope=\"repository:acme/users:pull,push\""
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:acme/users:pull,push".into()),
            })
        );
        assert_eq!(
            Challenge::parse("Bearer realm=https://a/t"),
            Some(Challenge::Bearer {
                realm: "https://a/t".into(),
                service: None,
                scope: None,
            })
        );
        assert_eq!(Challenge::parse("Negotiate"), None);
        assert_eq!(Challenge::parse("Bearer service=\"x\""), None);
    }

    #[test]
    fn basic_auth_and_urls() {
        let c = Credentials {
            username: "Aladdin".into(),
            password: "open sesame".into(),
        };
        assert_eq!(basic_auth(&c), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert_eq!(
            resolve("http://127.0.0.1:5000", "/v2/a/blobs/uploads/x?_state=1"),
            "http://127.0.0.1:5000/v2/a/blobs/uploads/x?_state=1"
        );
        assert_eq!(resolve("http://r", "https://cdn/x"), "https://cdn/x");
        assert_eq!(sep("http://r/x?_state=1"), '&');
        assert_eq!(
            encode("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
    }
}
