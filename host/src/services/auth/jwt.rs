//! `type = "jwt"`: bearer tokens verified against an HMAC secret (HS*) or
//! a JWKS (RS*, PS*, ES*, EdDSA), with issuer, audience, expiry and
//! not-before checked.
//!
//! The token's `alg` must be in the policy's allow-list, and picks the
//! key: HS* only ever uses the secret and the others only the JWKS, so a
//! token cannot make a public key serve as an HMAC secret. `none` cannot
//! be listed, and `jsonwebtoken` does not parse it.

use super::jwks::{KeySet, Source};
use super::{AuthError, Identity};
use crate::config::manifest::AuthPolicy;
use crate::config::manifest::edge::{DEFAULT_JWKS_COOLDOWN, DEFAULT_LEEWAY};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde_json::{Map, Value};
use sha2::Digest as _;
use std::str::FromStr as _;
use std::sync::Arc;

/// Longest token looked at. Real tokens are well under 2 KiB; anything
/// longer is refused before it is decoded.
pub(super) const MAX_TOKEN: usize = 8 << 10;

/// Verified tokens kept, by SHA-256 of the token, so a client sending the
/// same token again costs a hash rather than a signature check (RS256 and
/// ES256 verification dominate an authenticated request otherwise), as
/// gateways do.
const CACHE_ENTRIES: u64 = 10_000;
/// How long a verified token is trusted without checking it again, at
/// most (never past its `exp` plus the leeway): bounds how long a key
/// removed from the JWKS keeps working for tokens already seen.
const CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(300);

/// One jwt policy.
pub struct JwtPolicy {
    name: Arc<str>,
    /// One validation per accepted algorithm, each allowing only it.
    validations: Vec<(Algorithm, Validation)>,
    secret: Option<DecodingKey>,
    /// The JWKS, when the policy has one.
    pub(super) keys: Option<Arc<KeySet>>,
    /// Claims forwarded to the guest; all when `None`.
    claims: Option<Vec<String>>,
    /// Verified tokens: digest to (identity, unix second it expires at,
    /// leeway included).
    verified: moka::future::Cache<[u8; 32], (Arc<Identity>, u64)>,
    leeway: u64,
}

impl JwtPolicy {
    pub(super) fn new(
        name: Arc<str>,
        policy: &AuthPolicy,
        base: &std::path::Path,
    ) -> anyhow::Result<JwtPolicy> {
        let leeway = policy
            .leeway
            .as_ref()
            .map_or(DEFAULT_LEEWAY, |l| l.get_ref().0);
        let mut validations = Vec::new();
        for name in policy.algorithm_names() {
            let alg = Algorithm::from_str(&name)
                .map_err(|_| anyhow::anyhow!("algorithm {name:?} is not supported"))?;
            let mut v = Validation::new(alg);
            v.leeway = leeway.as_secs();
            v.validate_nbf = true;
            v.validate_exp = true;
            let mut required = vec!["exp"];
            if let Some(issuer) = &policy.issuer {
                v.set_issuer(&[issuer.get_ref()]);
                required.push("iss");
            }
            match &policy.audience {
                Some(audience) => {
                    v.set_audience(&audience.get_ref().to_vec());
                    required.push("aud");
                }
                None => v.validate_aud = false,
            }
            v.set_required_spec_claims(&required);
            validations.push((alg, v));
        }
        let keys = match &policy.jwks {
            None => None,
            Some(jwks) => {
                let source = match jwks.get_ref().parse::<http::Uri>() {
                    Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) => {
                        Source::Url(uri)
                    }
                    _ => Source::File(base.join(jwks.get_ref())),
                };
                let cooldown = policy
                    .jwks_cooldown
                    .as_ref()
                    .map_or(DEFAULT_JWKS_COOLDOWN, |c| c.get_ref().0);
                Some(KeySet::new(
                    source,
                    cooldown,
                    policy.resolved.jwks_ca_pem.as_deref(),
                )?)
            }
        };
        Ok(JwtPolicy {
            name,
            validations,
            secret: policy
                .resolved
                .secret
                .as_ref()
                .map(|s| DecodingKey::from_secret(s)),
            keys,
            claims: policy.claims.as_ref().map(|c| c.get_ref().clone()),
            verified: moka::future::Cache::builder()
                .max_capacity(CACHE_ENTRIES)
                .time_to_live(CACHE_TTL)
                .build(),
            leeway: leeway.as_secs(),
        })
    }

    pub(super) async fn verify(&self, token: &[u8]) -> Result<Arc<Identity>, AuthError> {
        if token.len() > MAX_TOKEN {
            return Err(AuthError::Invalid(format!(
                "the token is longer than {MAX_TOKEN} bytes"
            )));
        }
        let digest: [u8; 32] = sha2::Sha256::digest(token).into();
        let now = jsonwebtoken::get_current_timestamp();
        if let Some((identity, until)) = self.verified.get(&digest).await {
            if now < until {
                return Ok(identity);
            }
            self.verified.invalidate(&digest).await;
        }
        let (identity, exp) = self.verify_uncached(token).await?;
        let identity = Arc::new(identity);
        let until = exp.saturating_add(self.leeway);
        if now < until {
            self.verified
                .insert(digest, (identity.clone(), until))
                .await;
        }
        Ok(identity)
    }

    /// Verifies `token` in full; the identity and the token's `exp`.
    async fn verify_uncached(&self, token: &[u8]) -> Result<(Identity, u64), AuthError> {
        let invalid = |m: &str| AuthError::Invalid(m.to_owned());
        let token = std::str::from_utf8(token).map_err(|_| invalid("the token is malformed"))?;
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| invalid("the token is malformed"))?;
        let Some((alg, validation)) = self.validations.iter().find(|(a, _)| *a == header.alg)
        else {
            return Err(AuthError::Invalid(format!(
                "the token's algorithm {:?} is not accepted",
                header.alg
            )));
        };
        let decoded = if family(*alg) == AlgorithmFamily::Hmac {
            let secret = self
                .secret
                .as_ref()
                .ok_or_else(|| invalid("the token's algorithm is not accepted"))?;
            decode(token, secret, validation)?
        } else {
            let keys = self
                .keys
                .as_ref()
                .ok_or_else(|| invalid("the token's algorithm is not accepted"))?;
            let candidates = keys
                .candidates(header.kid.as_deref(), *alg)
                .await
                .ok_or(AuthError::KeysUnavailable)?;
            if candidates.is_empty() {
                return Err(invalid("the token's key (kid) is not known"));
            }
            let mut last = invalid("the token's signature does not verify");
            let mut verified = None;
            for key in candidates {
                match decode(token, &key.key, validation) {
                    Ok(claims) => {
                        verified = Some(claims);
                        break;
                    }
                    Err(err) => last = err,
                }
            }
            verified.ok_or(last)?
        };
        let exp = decoded.get("exp").and_then(Value::as_u64).unwrap_or(0);
        Ok((self.identity(decoded)?, exp))
    }

    fn identity(&self, claims: Map<String, Value>) -> Result<Identity, AuthError> {
        let subject = ["sub", "client_id", "azp"]
            .iter()
            .find_map(|c| claims.get(*c).and_then(Value::as_str))
            .ok_or_else(|| AuthError::Invalid("the token names no subject (sub)".into()))?
            .to_owned();
        let mut scopes: Vec<String> = Vec::new();
        for claim in ["scope", "scp"] {
            match claims.get(claim) {
                Some(Value::String(s)) => scopes.extend(s.split_whitespace().map(str::to_owned)),
                Some(Value::Array(items)) => {
                    scopes.extend(items.iter().filter_map(Value::as_str).map(str::to_owned))
                }
                _ => {}
            }
        }
        let forwarded = claims
            .iter()
            .filter(|(k, _)| self.claims.as_ref().is_none_or(|c| c.contains(k)))
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect();
        Ok(Identity {
            policy: self.name.clone(),
            subject,
            scopes,
            claims: forwarded,
        })
    }
}

fn family(alg: Algorithm) -> AlgorithmFamily {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => AlgorithmFamily::Hmac,
        Algorithm::ES256 | Algorithm::ES384 => AlgorithmFamily::Ec,
        Algorithm::EdDSA => AlgorithmFamily::Ed,
        _ => AlgorithmFamily::Rsa,
    }
}

/// Verifies `token` with `key`; the refusal says why, for the client.
fn decode(
    token: &str,
    key: &DecodingKey,
    validation: &Validation,
) -> Result<Map<String, Value>, AuthError> {
    jsonwebtoken::decode::<Map<String, Value>>(token, key, validation)
        .map(|data| data.claims)
        .map_err(|err| {
            AuthError::Invalid(match err.kind() {
                ErrorKind::ExpiredSignature => "the token has expired".into(),
                ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".into(),
                ErrorKind::InvalidIssuer => "the token's issuer is not accepted".into(),
                ErrorKind::InvalidAudience => "the token's audience is not accepted".into(),
                ErrorKind::InvalidSignature => "the token's signature does not verify".into(),
                ErrorKind::MissingRequiredClaim(c) => format!("the token has no {c:?} claim"),
                ErrorKind::InvalidClaimFormat(c) => format!("the token's {c:?} claim is malformed"),
                ErrorKind::InvalidAlgorithm => {
                    "the token's algorithm does not match its key".into()
                }
                _ => "the token is malformed".into(),
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::manifest::Manifest;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &str = "an-hs256-secret-of-at-least-32-bytes!!";

    fn policy(extra: &str) -> JwtPolicy {
        let text = format!(
            "[auth.p]\ntype = \"jwt\"\nissuer = \"https://issuer.test\"\naudience = \"trellis\"\nsecret = {{ env = \"TRELLIS_JWT_UNIT_SECRET\", default = {SECRET:?} }}\n{extra}"
        );
        let manifest =
            Manifest::parse(&text, std::path::Path::new("t.toml"), ".".into()).expect("manifest");
        JwtPolicy::new("p".into(), &manifest.auth["p"], std::path::Path::new(".")).unwrap()
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn token(alg: Algorithm, claims: Value, secret: &[u8]) -> String {
        encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    fn good(extra: Value) -> Value {
        let mut c = json!({"sub": "u1", "iss": "https://issuer.test", "aud": "trellis", "exp": now() + 300, "scope": "a b"});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    }

    async fn check(p: &JwtPolicy, t: &str) -> Result<Arc<Identity>, String> {
        p.verify(t.as_bytes()).await.map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn verifies_and_refuses_with_reasons() {
        let p = policy("leeway = \"5s\"");
        let s = SECRET.as_bytes();
        let id = check(&p, &token(Algorithm::HS256, good(json!({})), s))
            .await
            .unwrap();
        assert_eq!(id.subject, "u1");
        assert_eq!(id.scopes, ["a", "b"]);
        // Seen again: served from the cache of verified tokens.
        let twice = token(Algorithm::HS256, good(json!({"sub": "u2"})), s);
        let first = check(&p, &twice).await.unwrap();
        let again = check(&p, &twice).await.unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        let id = check(
            &p,
            &token(
                Algorithm::HS256,
                good(json!({"scope": null, "scp": ["x"]})),
                s,
            ),
        )
        .await
        .unwrap();
        assert_eq!(id.scopes, ["x"]);

        let cases = [
            (good(json!({"exp": now() - 60})), "expired"),
            (good(json!({"nbf": now() + 60})), "not valid yet"),
            (good(json!({"iss": "https://evil.test"})), "issuer"),
            (good(json!({"aud": "other"})), "audience"),
        ];
        for (claims, want) in cases {
            let err = check(&p, &token(Algorithm::HS256, claims, s))
                .await
                .unwrap_err();
            assert!(err.contains(want), "{want}: {err}");
        }
        let mut no_exp = good(json!({}));
        no_exp.as_object_mut().unwrap().remove("exp");
        let err = check(&p, &token(Algorithm::HS256, no_exp, s))
            .await
            .unwrap_err();
        assert!(err.contains("\"exp\""), "{err}");

        let forged = token(
            Algorithm::HS256,
            good(json!({})),
            b"another-secret-of-32-bytes-or-more!!",
        );
        assert!(check(&p, &forged).await.unwrap_err().contains("signature"));
        // HS384 is not in the list, even with the right secret.
        let other_alg = token(Algorithm::HS384, good(json!({})), s);
        assert!(
            check(&p, &other_alg)
                .await
                .unwrap_err()
                .contains("not accepted")
        );
        // alg "none", by hand.
        let b64 = |v: &str| {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
        };
        let none = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(&good(json!({})).to_string())
        );
        assert!(check(&p, &none).await.unwrap_err().contains("malformed"));
        for garbage in [
            "",
            "a.b.c",
            "....",
            "not a token",
            &"A".repeat(MAX_TOKEN + 1),
        ] {
            assert!(check(&p, garbage).await.is_err(), "{garbage:.20}");
        }
        let nested = format!("{}.e30.x", b64(&("[".repeat(10_000) + &"]".repeat(10_000))));
        assert!(check(&p, &nested).await.is_err());
    }

    /// A remembered token stops verifying at its `exp` (plus the leeway),
    /// however recently it was verified: the cache never outlives it.
    #[tokio::test]
    async fn remembered_tokens_still_expire() {
        let p = policy("leeway = \"0s\"");
        let s = SECRET.as_bytes();
        let exp = now() + 2;
        let t = token(Algorithm::HS256, good(json!({"exp": exp})), s);
        let first = check(&p, &t).await.unwrap();
        let again = check(&p, &t).await.unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "the second check hit the cache"
        );
        let digest: [u8; 32] = sha2::Sha256::digest(t.as_bytes()).into();
        assert_eq!(
            p.verified.get(&digest).await.map(|(_, until)| until),
            Some(exp)
        );
        // Past exp: refused, and no longer remembered.
        while now() <= exp {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let err = check(&p, &t).await.unwrap_err();
        assert!(err.contains("expired"), "{err}");
        assert!(p.verified.get(&digest).await.is_none());

        // With a leeway, the token is remembered until exp + leeway, and
        // one already past that is never remembered at all.
        let p = policy("leeway = \"30s\"");
        let t = token(Algorithm::HS256, good(json!({"exp": now() + 5})), s);
        check(&p, &t).await.unwrap();
        let digest: [u8; 32] = sha2::Sha256::digest(t.as_bytes()).into();
        let until = p.verified.get(&digest).await.unwrap().1;
        assert!(until > now() + 30 && until <= now() + 35, "{until}");
        let late = token(Algorithm::HS256, good(json!({"exp": now() - 40})), s);
        assert!(check(&p, &late).await.unwrap_err().contains("expired"));
        let digest: [u8; 32] = sha2::Sha256::digest(late.as_bytes()).into();
        assert!(p.verified.get(&digest).await.is_none());
    }
}
