//! A route's `auth = "NAME"` and `scopes = [...]` at the edge: the
//! credential taken from the request, verified by the policy
//! ([`crate::services::auth`]), before any instance exists.
//!
//! Missing or bad credentials are 401 `UNAUTHORIZED` with a
//! `WWW-Authenticate` challenge (RFC 6750 for bearer tokens); a verified
//! caller without a required scope is 403 `FORBIDDEN`. The verified
//! identity goes into the request's extensions, where the dispatcher hands
//! it to the guest's `identity` capability; it is never a header, so a
//! client cannot forge one.

use crate::app::routes::Route;
use crate::http::error::ErrorKind;
use crate::services::auth::{AuthError, Authenticator, Identity, Policy};
use http::HeaderValue;
use std::sync::Arc;

/// The realm named in challenges.
const REALM: &str = "trellis";

/// Verifies the caller of `req` on `route`: `Ok(None)` when the route has
/// no `auth`, the identity when it verifies, else the refusal.
///
/// The credential is copied out before the returned future first runs, so
/// the future holds no borrow of the request (whose body is not `Sync`).
pub fn authenticate<'a, B>(
    auth: &'a Authenticator,
    route: &'a Route,
    req: &http::Request<B>,
) -> impl Future<Output = Result<Option<Arc<Identity>>, ErrorKind>> + Send + use<'a, B> {
    let taken = route
        .spec
        .auth
        .as_deref()
        .map(|name| match auth.policy(name) {
            Some(policy) => {
                let credential = credential(&policy, req).map(<[u8]>::to_vec);
                Ok((policy, credential))
            }
            None => Err(name),
        });
    async move {
        match taken {
            None => Ok(None),
            Some(Err(name)) => {
                // Validation ties routes to policies; only a bug gets here.
                tracing::error!(route = %route.name, policy = name, "auth policy unknown; request refused");
                Err(ErrorKind::Internal)
            }
            // Boxed: only routes with `auth` get here, and inline a JWKS
            // fetch would size every request's future.
            Some(Ok((policy, credential))) => {
                Box::pin(verify(route, &policy, credential)).await.map(Some)
            }
        }
    }
}

async fn verify(
    route: &Route,
    policy: &Policy,
    credential: Result<Vec<u8>, String>,
) -> Result<Arc<Identity>, ErrorKind> {
    let credential = match credential {
        Ok(c) => c,
        Err(message) => {
            return Err(ErrorKind::AuthFailed {
                challenge: challenge(policy, None),
                message,
            });
        }
    };
    let identity = match policy.verify(&credential).await {
        Ok(identity) => identity,
        Err(AuthError::KeysUnavailable) => {
            return Err(ErrorKind::UpstreamUnavailable(
                "the keys to verify credentials are not available yet; retry shortly".into(),
            ));
        }
        Err(err) => {
            let message = err.to_string();
            return Err(ErrorKind::AuthFailed {
                challenge: challenge(policy, Some(&message)),
                message,
            });
        }
    };
    let missing: Vec<&str> = route
        .spec
        .scopes
        .iter()
        .filter(|s| !identity.has_scope(s))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        let needed = route.spec.scopes.join(" ");
        let value = format!(
            "Bearer realm=\"{REALM}\", error=\"insufficient_scope\", scope=\"{}\"",
            quotable(&needed)
        );
        return Err(ErrorKind::Forbidden {
            message: format!("the token lacks the scope {}", missing.join(", ")),
            challenge: HeaderValue::from_str(&value).ok(),
        });
    }
    Ok(identity)
}

/// The credential in `req` for `policy`, or why there is none usable.
fn credential<'r, B>(policy: &Policy, req: &'r http::Request<B>) -> Result<&'r [u8], String> {
    let name = policy.header();
    let mut values = req.headers().get_all(name).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(if req.headers().contains_key(name) {
            format!("more than one {name} header")
        } else if policy.is_bearer() {
            "a bearer token is required (Authorization: Bearer ...)".into()
        } else {
            format!("an API key is required in the {name} header")
        });
    };
    let bytes = value.as_bytes();
    if !policy.is_bearer() {
        return Ok(bytes);
    }
    // RFC 6750 §2.1: `Bearer` (any case), one space, the token.
    match bytes.split_at_checked(7) {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case(b"bearer ") => {
            let token = token.trim_ascii();
            if token.is_empty() {
                Err("the bearer token is empty".into())
            } else {
                Ok(token)
            }
        }
        _ => Err("the Authorization header must use the Bearer scheme".into()),
    }
}

/// The `WWW-Authenticate` value for a refusal; `error`, when a credential
/// was given and refused.
fn challenge(policy: &Policy, error: Option<&str>) -> HeaderValue {
    let value = match (policy.is_bearer(), error) {
        (true, None) => format!("Bearer realm=\"{REALM}\""),
        (true, Some(why)) => format!(
            "Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"{}\"",
            quotable(why)
        ),
        // Not a registered scheme, but it tells a client where the key goes.
        (false, _) => format!("ApiKey realm=\"{REALM}\", header=\"{}\"", policy.header()),
    };
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
}

/// `text` fit for a quoted-string: printable ASCII without `"` or `\`.
fn quotable(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '"' | '\\' => '\'',
            c if c.is_ascii_graphic() || c == ' ' => c,
            _ => '?',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header;

    #[test]
    fn challenges_quote_safely() {
        assert_eq!(quotable("the \"exp\" claim\n"), "the 'exp' claim?");
    }

    #[test]
    fn bearer_scheme_is_parsed_strictly() {
        let text = "[auth.p]\ntype = \"jwt\"\nsecret = { env = \"TRELLIS_UNSET_FOR_TEST\", default = \"0123456789abcdef0123456789abcdef\" }\n";
        let manifest = crate::config::manifest::Manifest::parse(
            text,
            std::path::Path::new("t.toml"),
            ".".into(),
        )
        .unwrap();
        let auth = Authenticator::new(&manifest, None).unwrap();
        let policy = &*auth.policy("p").unwrap();
        let req = |v: &'static str| {
            let mut r = http::Request::new(());
            r.headers_mut()
                .insert(header::AUTHORIZATION, HeaderValue::from_static(v));
            r
        };
        assert_eq!(credential(policy, &req("Bearer abc")).unwrap(), b"abc");
        assert_eq!(credential(policy, &req("bEARER  abc ")).unwrap(), b"abc");
        assert!(credential(policy, &req("Basic abc")).is_err());
        assert!(credential(policy, &req("Bearer ")).is_err());
        assert!(credential(policy, &req("Bearer")).is_err());
        let mut two = req("Bearer a");
        two.headers_mut()
            .append(header::AUTHORIZATION, HeaderValue::from_static("Bearer b"));
        assert!(
            credential(policy, &two)
                .unwrap_err()
                .contains("more than one")
        );
        assert!(credential(policy, &http::Request::new(())).is_err());
    }
}
