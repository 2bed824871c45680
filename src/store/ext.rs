//! The scoped handle for every [`Store`] ([`StoreExt::scope`]).

use super::{Scope, Store};
use crate::domain::{Context, TenantId};

/// What every [`Store`] offers host code on top of the contract: a
/// [`Scope`], the store seen by one tenant acting as one [`Context`], with
/// every operation as one call.
pub trait StoreExt: Store {
    /// This store seen by `tenant`, acting as `ctx`: every operation as one
    /// call ([`Scope`]).
    fn scope(&self, tenant: TenantId, ctx: &Context) -> Scope<'_, Self> {
        Scope::new(self, tenant, ctx.clone())
    }
}

impl<T: Store + ?Sized> StoreExt for T {}
