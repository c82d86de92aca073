//! The `identity` capability (`wit/identity.wit`): the caller the route's
//! `auth` policy verified at the edge, handed to the guest from the
//! request's context, never from headers a client could forge.

use crate::capabilities::View;
use crate::capabilities::bindings::api::identity::{Caller, Host};
use wasmtime::component::{HasData, Linker};

/// What `identity` reaches: nothing per route; the caller is per request
/// and lives in [`crate::capabilities::Caller`].
pub struct IdentityCtx;

/// `identity` for one instance.
pub type IdentityView<'a> = View<'a, IdentityCtx>;

struct HasIdentity;

impl HasData for HasIdentity {
    type Data<'a> = IdentityView<'a>;
}

/// Offers `trellis:api/identity` through `view`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> IdentityView<'_>,
) -> wasmtime::Result<()> {
    crate::capabilities::bindings::api::identity::add_to_linker::<T, HasIdentity>(linker, view)
}

impl Host for IdentityView<'_> {
    async fn current(&mut self) -> wasmtime::Result<Option<Caller>> {
        Ok(self.caller.identity.as_ref().map(|id| Caller {
            policy: id.policy.to_string(),
            subject: id.subject.clone(),
            scopes: id.scopes.clone(),
            claims: id.claims.clone(),
        }))
    }

    async fn has_scope(&mut self, scope: String) -> wasmtime::Result<bool> {
        Ok(self
            .caller
            .identity
            .as_ref()
            .is_some_and(|id| id.has_scope(&scope)))
    }
}
