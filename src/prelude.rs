//! The traits a host needs in scope to call a transaction's operations:
//! `use crm_core::prelude::*;`.
//!
//! [`Transaction`] is the sum of one trait per area (contacts, companies,
//! owners, tags, tasks, deals, timeline and signals, history, the change
//! feed, external ids, idempotency, bulk, scoring, freshness); Rust calls a method of such a trait
//! only when the trait is in scope.

pub use crate::store::{
    BulkTx, CompaniesTx, ContactsTx, DealsTx, ExternalIdsTx, FeedTx, FreshnessTx, HistoryTx,
    IdempotencyTx, OwnersTx, ScoringTx, Store, StoreExt, TagsTx, TasksTx, TimelineTx, Transaction,
};
