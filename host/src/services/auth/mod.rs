//! The `[auth.NAME]` policies: verifying a caller's credential (a bearer
//! JWT or an API key) and saying who the caller is.
//!
//! Knows nothing of HTTP: [`crate::http::auth`] takes the credential out
//! of the request and turns refusals into 401/403 responses. Secret
//! material never appears in an error or a log line, nor does the token.

mod api_key;
mod jwks;
mod jwt;
pub mod key_store;

use crate::config::manifest::edge::AuthKind;
use crate::config::manifest::{AuthPolicy, Manifest};
use crate::services::database::Database;
use arc_swap::ArcSwap;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The verified caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The policy that verified it.
    pub policy: Arc<str>,
    /// Who: the JWT `sub`, or `api-key:` and a digest prefix of the key.
    pub subject: String,
    /// What it may do: the JWT `scope` (space-separated) or `scp` claim.
    pub scopes: Vec<String>,
    /// The token's claims (those the policy forwards), values as JSON.
    pub claims: Vec<(String, String)>,
}

impl Identity {
    /// Whether the caller holds `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// Why a credential was refused. The messages are for the client: they
/// say what is wrong without quoting the credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credential in the request.
    #[error("{0}")]
    Missing(String),
    /// A credential that does not verify; the reason for the client.
    #[error("{0}")]
    Invalid(String),
    /// The keys needed to verify it could not be had (a JWKS endpoint
    /// down since start, the key store's database down); not the
    /// client's fault.
    #[error("the keys to verify the credential are not available")]
    KeysUnavailable,
}

/// Every policy of a manifest, ready to verify credentials. Replaced whole
/// when watch mode reloads the manifest; a request keeps the policy it
/// started with.
#[derive(Default)]
pub struct Authenticator {
    policies: ArcSwap<BTreeMap<String, Arc<Policy>>>,
    /// Where `store = "database"` policies look keys up.
    database: Option<Arc<Database>>,
}

/// One policy, by type.
pub enum Policy {
    /// Bearer JWTs.
    Jwt(jwt::JwtPolicy),
    /// Keys in a header.
    ApiKey(api_key::ApiKeyPolicy),
}

impl Authenticator {
    /// The policies of `manifest`. JWKS files are read here (a bad file
    /// fails startup); JWKS URLs are fetched by [`Authenticator::warm_up`].
    /// `database` holds the keys of `store = "database"` policies.
    pub fn new(
        manifest: &Manifest,
        database: Option<Arc<Database>>,
    ) -> anyhow::Result<Authenticator> {
        Ok(Authenticator {
            policies: ArcSwap::from_pointee(policies(manifest, database.as_ref())?),
            database,
        })
    }

    /// Replaces the policies with `manifest`'s (watch mode). On an error
    /// (a JWKS file that cannot be read) nothing changes. JWKS URLs of the
    /// new policies are fetched by the next [`Authenticator::warm_up`] or
    /// the first token that needs them.
    pub fn set_policies(&self, manifest: &Manifest) -> anyhow::Result<()> {
        self.policies
            .store(Arc::new(policies(manifest, self.database.as_ref())?));
        Ok(())
    }

    /// The policy `name`.
    pub fn policy(&self, name: &str) -> Option<Arc<Policy>> {
        self.policies.load().get(name).cloned()
    }

    /// Fetches every JWKS URL once, each bounded by its fetch timeout. A
    /// failure is logged, not fatal: requests are refused with 503 until
    /// a later fetch succeeds.
    pub async fn warm_up(&self) {
        let policies = self.policies.load_full();
        let fetches = policies.iter().filter_map(|(name, p)| match &**p {
            Policy::Jwt(jwt) => jwt.keys.as_ref().map(|keys| async move {
                if let Err(err) = keys.warm_up().await {
                    tracing::warn!(policy = %name, cause = %err, "JWKS fetch failed; tokens signed with its keys are refused until it succeeds");
                }
            }),
            Policy::ApiKey(_) => None,
        });
        futures::future::join_all(fetches).await;
    }
}

impl Policy {
    /// The header the credential comes in: `authorization` for JWTs.
    pub fn header(&self) -> &http::HeaderName {
        match self {
            Policy::Jwt(_) => &http::header::AUTHORIZATION,
            Policy::ApiKey(p) => &p.header,
        }
    }

    /// Whether this policy takes bearer tokens.
    pub fn is_bearer(&self) -> bool {
        matches!(self, Policy::Jwt(_))
    }

    /// Verifies `credential` (the bearer token, or the key) and names the
    /// caller.
    pub async fn verify(&self, credential: &[u8]) -> Result<Arc<Identity>, AuthError> {
        match self {
            Policy::Jwt(p) => p.verify(credential).await,
            Policy::ApiKey(p) => p.verify(credential).await,
        }
    }
}

fn policies(
    manifest: &Manifest,
    database: Option<&Arc<Database>>,
) -> anyhow::Result<BTreeMap<String, Arc<Policy>>> {
    let mut policies = BTreeMap::new();
    for (name, policy) in &manifest.auth {
        let built = build(name, policy, &manifest.base_dir, database)
            .map_err(|e| anyhow::anyhow!("auth.{name}: {e}"))?;
        policies.insert(name.clone(), Arc::new(built));
    }
    Ok(policies)
}

fn build(
    name: &str,
    policy: &AuthPolicy,
    base: &std::path::Path,
    database: Option<&Arc<Database>>,
) -> anyhow::Result<Policy> {
    let name: Arc<str> = name.into();
    Ok(match policy.auth_kind().map_err(anyhow::Error::msg)? {
        AuthKind::Jwt => Policy::Jwt(jwt::JwtPolicy::new(name, policy, base)?),
        AuthKind::ApiKey => Policy::ApiKey(api_key::ApiKeyPolicy::new(name, policy, database)?),
    })
}
