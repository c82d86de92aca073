//! Helpers over `trellis:api/identity`: the caller the route's `auth`
//! policy verified before the handler ran. Needs `grants = ["identity"]`
//! and `auth = "..."` on the route.
//!
//! ```no_run
//! # fn f() -> Result<(), trellis_sdk::Error> {
//! use trellis_sdk::identity;
//!
//! let caller = identity::require()?;
//! let email: Option<String> = caller.claim("email");
//! if !caller.has_scope("users:write") {
//!     return Err(trellis_sdk::Error::forbidden("users:write is required"));
//! }
//! # Ok(()) }
//! ```

use crate::bindings::trellis::api::identity as wit;

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The `[auth.NAME]` policy that verified it.
    pub policy: String,
    /// The JWT's `sub`, or `api-key:<12 hex digits>` for an API key.
    pub subject: String,
    /// The scopes from the JWT's `scope` or `scp` claim.
    pub scopes: Vec<String>,
    /// The token's forwarded claims, values as JSON text.
    pub claims: Vec<(String, String)>,
}

impl Caller {
    /// Whether the caller holds `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// The claim `name` parsed from its JSON as `T`; `None` when absent or
    /// of another type.
    pub fn claim<T: serde::de::DeserializeOwned>(&self, name: &str) -> Option<T> {
        let (_, json) = self.claims.iter().find(|(k, _)| k == name)?;
        serde_json::from_str(json).ok()
    }
}

/// The verified caller; `None` on a route without `auth`.
pub fn current() -> Option<Caller> {
    wit::current().map(|c| Caller {
        policy: c.policy,
        subject: c.subject,
        scopes: c.scopes,
        claims: c.claims,
    })
}

/// The verified caller, or a 401 when there is none (a route deployed
/// without `auth`, which the host would normally refuse to load).
pub fn require() -> Result<Caller, crate::Error> {
    current().ok_or_else(|| crate::Error::unauthorized("no verified caller"))
}
