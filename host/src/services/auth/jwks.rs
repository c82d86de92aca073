//! A JWT policy's public keys: a JWKS read from a file or fetched over
//! HTTP or HTTPS (the upstreams' rustls client: Mozilla roots plus the
//! policy's `jwks_ca`), kept in memory, and fetched again when a token names a `kid` it
//! lacks (at most once per cooldown) or when the copy is older than
//! [`MAX_AGE`]. A failed fetch keeps the last good copy.

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use std::path::PathBuf;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest JWKS document accepted.
const MAX_BYTES: usize = 1 << 20;
/// Most keys kept from one document.
const MAX_KEYS: usize = 64;
/// A fetch (connect, request, whole body) that takes longer has failed.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// A copy older than this is fetched again in the background, so keys an
/// issuer removed stop verifying without a restart.
const MAX_AGE: Duration = Duration::from_secs(600);

/// Where the keys come from.
#[derive(Debug, Clone)]
pub(super) enum Source {
    /// A file, relative to the manifest.
    File(PathBuf),
    /// An `http://` or `https://` URL.
    Url(http::Uri),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Url(uri) => write!(f, "{uri}"),
        }
    }
}

/// The client a URL source is fetched with.
type Fetcher = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// One usable key of a JWKS.
pub(super) struct Key {
    /// `kid`, when the document gives one.
    pub(super) kid: Option<String>,
    /// `alg`, when the document pins one.
    pub(super) alg: Option<Algorithm>,
    /// EC keys: the algorithm their curve implies.
    curve_alg: Option<Algorithm>,
    /// The key.
    pub(super) key: DecodingKey,
}

impl Key {
    /// Whether this key may verify a token signed with `alg`: same family
    /// as the key, the key's own `alg` if it pins one, the curve's for EC.
    pub(super) fn fits(&self, alg: Algorithm) -> bool {
        let family = self.key.family();
        family.algorithms().contains(&alg)
            && self.alg.is_none_or(|a| a == alg)
            && self.curve_alg.is_none_or(|a| a == alg)
    }
}

struct Loaded {
    keys: Vec<Arc<Key>>,
    at: Instant,
}

/// The keys of one policy.
pub(super) struct KeySet {
    source: Source,
    /// For a URL: its client (keep-alive, TLS for `https://`).
    fetcher: Option<Fetcher>,
    current: ArcSwapOption<Loaded>,
    /// When the last fetch started; one fetch at a time.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    cooldown: Duration,
}

impl KeySet {
    /// Keys from `source`; a file is read now, and a bad one is an error.
    /// `ca_pem`: extra roots for an `https://` URL.
    pub(super) fn new(
        source: Source,
        cooldown: Duration,
        ca_pem: Option<&[u8]>,
    ) -> anyhow::Result<Arc<KeySet>> {
        let fetcher = match &source {
            Source::File(_) => None,
            Source::Url(_) => {
                let connector =
                    crate::services::upstreams::client::https_connector(ca_pem, FETCH_TIMEOUT)
                        .map_err(|e| anyhow::anyhow!("jwks: the TLS client: {e:#}"))?;
                Some(
                    Client::builder(TokioExecutor::new())
                        .pool_timer(TokioTimer::new())
                        .build(connector),
                )
            }
        };
        let set = Arc::new(KeySet {
            fetcher,
            current: ArcSwapOption::empty(),
            last_fetch: tokio::sync::Mutex::new(None),
            cooldown,
            source,
        });
        if let Source::File(path) = &set.source {
            let bytes = std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("jwks: reading {}: {e}", path.display()))?;
            let keys =
                parse(&bytes).map_err(|e| anyhow::anyhow!("jwks {}: {e}", path.display()))?;
            set.current.store(Some(Arc::new(Loaded {
                keys,
                at: Instant::now(),
            })));
        }
        Ok(set)
    }

    /// The first fetch of a URL source; nothing for a file.
    pub(super) async fn warm_up(self: &Arc<Self>) -> anyhow::Result<()> {
        if self.current.load().is_some() {
            return Ok(());
        }
        self.refresh(true).await
    }

    /// The keys that may verify a token with `kid` and `alg`. An unknown
    /// `kid` (or no keys yet) prompts a fetch, unless one started within
    /// the cooldown. `None`: no keys were ever had.
    pub(super) async fn candidates(
        self: &Arc<Self>,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Option<Vec<Arc<Key>>> {
        let pick = |loaded: &Loaded| -> Vec<Arc<Key>> {
            loaded
                .keys
                .iter()
                .filter(|k| kid.is_none_or(|kid| k.kid.as_deref() == Some(kid)) && k.fits(alg))
                .cloned()
                .collect()
        };
        let current = self.current.load_full();
        if let Some(loaded) = &current {
            if loaded.at.elapsed() > MAX_AGE {
                let this = self.clone();
                tokio::spawn(async move {
                    let _ = this.refresh(false).await;
                });
            }
            let found = pick(loaded);
            if !found.is_empty() {
                return Some(found);
            }
        }
        // Unknown kid, or nothing loaded: maybe the issuer rotated keys.
        let _ = self.refresh(false).await;
        self.current.load_full().map(|loaded| pick(&loaded))
    }

    /// Fetches the document again, unless `force` is false and a fetch
    /// started within the cooldown. A failure keeps the last good copy.
    async fn refresh(&self, force: bool) -> anyhow::Result<()> {
        let mut last = self.last_fetch.lock().await;
        if !force && last.is_some_and(|t| t.elapsed() < self.cooldown) {
            return Ok(());
        }
        *last = Some(Instant::now());
        let result = async {
            let bytes = match &self.source {
                Source::File(path) => Bytes::from(tokio::fs::read(path).await?),
                Source::Url(uri) => {
                    let fetcher = self.fetcher.as_ref().expect("a URL source has a client");
                    tokio::time::timeout(FETCH_TIMEOUT, get(fetcher, uri))
                        .await
                        .map_err(|_| anyhow::anyhow!("no answer within {FETCH_TIMEOUT:?}"))??
                }
            };
            parse(&bytes)
        }
        .await;
        match result {
            Ok(keys) => {
                tracing::info!(source = %self.source, keys = keys.len(), "JWKS loaded");
                self.current.store(Some(Arc::new(Loaded {
                    keys,
                    at: Instant::now(),
                })));
                Ok(())
            }
            Err(err) => {
                tracing::warn!(source = %self.source, cause = %err, "JWKS fetch failed; keeping the last good copy");
                Err(err)
            }
        }
    }
}

/// `GET uri` (HTTP/1.1, TLS for `https://`), the body bounded by
/// [`MAX_BYTES`].
async fn get(fetcher: &Fetcher, uri: &http::Uri) -> anyhow::Result<Bytes> {
    let request = http::Request::get(uri.clone())
        .header(http::header::ACCEPT, "application/json")
        .header(http::header::USER_AGENT, "trellis")
        .body(Empty::<Bytes>::new())?;
    let response = fetcher
        .request(request)
        .await
        .map_err(|e| anyhow::anyhow!("{}", crate::services::upstreams::client::error_chain(&e)))?;
    if response.status() != http::StatusCode::OK {
        anyhow::bail!("answered {}", response.status());
    }
    let body = Limited::new(response.into_body(), MAX_BYTES)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the body: {e}"))?
        .to_bytes();
    Ok(body)
}

/// The usable keys of a JWKS document. Keys this host cannot use (an
/// unknown type, `"use": "enc"`, symmetric `oct` keys, which would let a
/// public document stand in for a secret) are skipped; a document with
/// none left is an error.
fn parse(bytes: &[u8]) -> anyhow::Result<Vec<Arc<Key>>> {
    #[derive(serde::Deserialize)]
    struct Document {
        keys: Vec<serde_json::Value>,
    }
    let document: Document = serde_json::from_slice(bytes)
        .map_err(|e| anyhow::anyhow!("not a JWKS document ({{\"keys\": [...]}}): {e}"))?;
    let mut keys = Vec::new();
    for value in document.keys.into_iter().take(MAX_KEYS) {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            continue;
        };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let curve_alg = match &jwk.algorithm {
            AlgorithmParameters::OctetKey(_) => continue,
            AlgorithmParameters::EllipticCurve(p) => match p.curve {
                EllipticCurve::P256 => Some(Algorithm::ES256),
                EllipticCurve::P384 => Some(Algorithm::ES384),
                _ => continue,
            },
            AlgorithmParameters::OctetKeyPair(p) => {
                if p.curve != EllipticCurve::Ed25519 {
                    continue;
                }
                None
            }
            AlgorithmParameters::RSA(_) => None,
        };
        let alg = match jwk.common.key_algorithm {
            Some(a) => match Algorithm::from_str(&a.to_string()) {
                Ok(alg) => Some(alg),
                Err(_) => continue,
            },
            None => None,
        };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        keys.push(Arc::new(Key {
            kid: jwk.common.key_id.clone(),
            alg,
            curve_alg,
            key,
        }));
    }
    if keys.is_empty() {
        anyhow::bail!("no usable signing key (RSA, EC P-256/P-384 or Ed25519)");
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_symmetric_and_encryption_keys() {
        let doc = br#"{"keys":[
            {"kty":"oct","k":"c2VjcmV0","kid":"o"},
            {"kty":"RSA","use":"enc","n":"AQAB","e":"AQAB","kid":"e"},
            {"kty":"weird"},
            {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"ed"}
        ]}"#;
        let keys = parse(doc).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("ed"));
        assert!(keys[0].fits(Algorithm::EdDSA));
        assert!(!keys[0].fits(Algorithm::HS256));
        assert!(!keys[0].fits(Algorithm::ES256));

        assert!(parse(br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#).is_err());
        assert!(parse(b"<html>").is_err());
        assert!(parse(br#"{"keys": 1}"#).is_err());
    }
}
