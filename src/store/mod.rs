//! The storage contract: [`Store`] opens [`Transaction`]s, and every backend
//! (in memory, PostgreSQL, your own) implements the same semantics, checked
//! by the conformance suite.
//!
//! A [`Transaction`] is the sum of one trait per area — [`ContactsTx`],
//! [`CompaniesTx`], [`OwnersTx`], [`TagsTx`], [`TasksTx`], [`DealsTx`], [`TimelineTx`], [`HistoryTx`], [`IdempotencyTx`],
//! [`BulkTx`], [`ScoringTx`], [`FeedTx`], [`ExternalIdsTx`], [`FreshnessTx`] — which a backend implements one by one. The
//! promises every backend keeps are on [`Store`] (its *Contract*) and, for
//! what one area alone promises, on that area's trait. How the built-in
//! backends keep them: `ARCHITECTURE.md` in the repository.

use std::fmt;

use async_trait::async_trait;

#[cfg(doc)]
use crate::error::Error;
use crate::{
    domain::{Context, Pipelines, TenantId, Timestamp},
    error::Result,
};

pub use crate::domain::{
    Cursor, CursorList, CursorPosition, DEFAULT_PAGE_SIZE, ListScope, MAX_PAGE_SIZE, Page,
    PageRequest, TimeIdKey,
};

mod bulk;
mod companies;
mod contacts;
mod deals;
mod ext;
mod external;
mod feed;
mod freshness;
mod history;
mod idempotency;
mod scope;
mod scoring;
mod shared;
mod tags;
mod tasks;
mod timeline;
mod traced;

pub use bulk::BulkTx;
pub use companies::{CompaniesTx, CompanyQuery, CompanySort, CompanySortKey, OwnersTx, Reassigned};
pub use contacts::{ContactQuery, ContactSort, ContactSortKey, ContactsTx, MAX_PREFIX_CHARS};
pub use deals::{CurrencyTotal, DealQuery, DealsTx, PipelineSummary, StageSummary};
pub use ext::StoreExt;
pub use external::ExternalIdsTx;
pub use feed::{FeedHeads, FeedTx};
pub use freshness::FreshnessTx;
pub use history::HistoryTx;
pub use idempotency::IdempotencyTx;
pub use scope::Scope;
pub use scoring::ScoringTx;
pub use tags::{MAX_FILTER_TAGS, TagFilter, TagsTx};
pub use tasks::TasksTx;
pub use timeline::{TimelineTx, batch_row};
pub use traced::trace_transaction;

/// The checks and the survivor of a contact merge, for its preview.
pub(crate) use shared::{check_merge_pair, merged};

/// The current time as the store stamps it (UTC, microseconds).
pub(crate) fn shared_now() -> Timestamp {
    shared::now()
}

pub mod memory;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres;

/// A storage backend for the CRM: opens transactions scoped to one tenant.
///
/// Use it as `Arc<dyn Store>` ([`DynStore`]); host code serving one tenant
/// holds a [`Scope`] ([`StoreExt::scope`]), with every operation as one call.
///
/// # Contract
///
/// Every backend honours all of the following; the conformance suite
/// (feature `conformance`) checks each point.
///
/// - **Tenancy.** A transaction is opened for one tenant and one acting
///   [`Context`]. It never sees another tenant's records: reading, updating
///   or deleting another tenant's id behaves exactly like an id that does
///   not exist, and changes nothing.
/// - **Atomicity.** Nothing a transaction wrote is visible to others before
///   [`Transaction::commit`] returns `Ok`. [`Transaction::rollback`], an error
///   from `commit`, and dropping the transaction without committing all leave
///   no trace of it. An operation that returns an error writes nothing, and
///   the transaction stays usable. An operation cut off before it returned
///   (its future dropped: a timeout, a cancelled task) may have run in
///   part; a backend whose operations take several round trips then
///   refuses the next such operation and the commit (which rolls the
///   transaction back and returns a retryable error), so that half an
///   operation is never committed.
/// - **Ending.** When [`Transaction::commit`] or [`Transaction::rollback`]
///   returns `Ok`, the transaction has ended and everything it held — row
///   locks, the idempotency keys it claimed — is released: no other
///   transaction waits for it any more. Dropping a transaction without
///   committing rolls it back too, but without waiting: what it held is
///   released shortly after the drop, not necessarily by the time the drop
///   returns, and a transaction started right after it can still meet its
///   locks for a moment. Code whose next step depends on them being gone (a
///   claim that may not wait, an immediate retry of the same work) awaits
///   `rollback()` instead of dropping. When `rollback` fails, the backend
///   lost the transaction's connection, and ends the transaction (without
///   committing it) on its own.
/// - **Missing records.** `get_*` return `Ok(None)`; operations on a missing
///   record (update, move, log an activity for it) return
///   [`Error::NotFound`] naming the missing record; `delete_*` return
///   `Ok(false)`.
/// - **Versions.** Contacts and deals start at version 1 and gain one per
///   change. An update with a stale expected version returns
///   [`Error::Conflict`] and changes nothing. An update that changes nothing
///   returns the record as it is, with its version unchanged.
/// - **Timestamps** are UTC at microsecond precision. `created_at` and
///   `updated_at` are set by the store; a score write-back changes neither
///   the version nor `updated_at`.
/// - **Input** is checked before anything reaches storage, by the same
///   domain checks on every backend: every time and date a caller gives
///   lies in years 1–9999 (UTC) and is kept as
///   [`truncate_to_micros`](crate::domain::truncate_to_micros) makes it (a
///   leap second folded into the next second); no text holds NUL; every
///   JSON value is bounded in depth; sizes a caller gives are bounded.
///   Each operation runs its input's check first
///   ([`NewActivity::checked`](crate::domain::NewActivity::checked),
///   [`ContactQuery::checked`],
///   [`check_timestamp`](crate::domain::check_timestamp), …). A refused
///   input is [`Error::Validation`] naming the parameter or field
///   (`occurred_at`, `created_from`, `at`, `from`, `until`, `before`,
///   `now`, `expires_at`, `completed_at`, `email_prefix`, `field`, `body`,
///   `result`, `cursor`, …), writes nothing and leaves the transaction
///   usable.
/// - **Lists** are keyset-paginated: a page holds at most `limit` items
///   (1–1000) and a `next_cursor` exactly when more follow (so only a full
///   page has one); following cursors visits every matching record exactly
///   once. Orders are total: ties are broken by id in the direction of the
///   sort. A limit outside 1–1000 is [`Error::Validation`] on `limit`; a
///   cursor that is not one this list made (garbage, another list's, or a
///   search cursor of a sort on another key: score, creation time, update
///   time or name; see [`CursorList`]), one the list made for other
///   parameters (another contact, stage, record, field, range, source, or
///   another search's filters or direction: see [`ListScope`]), or one
///   holding a position out of range, is [`Error::Validation`] on `cursor`.
/// - **Areas.** Each area of [`Transaction`] states its own points too:
///   [`ContactsTx`] (unique emails, deleting a contact), [`DealsTx`] (the
///   stage machine), [`HistoryTx`] (what the history records),
///   [`FreshnessTx`] (what keeps freshness current).
///
/// # Tracing
///
/// The built-in backends trace through the [`tracing`] crate: each
/// transaction they open has a `crm.transaction` span (tenant id, backend,
/// how long `begin` waited for a connection or lock, and how it ended:
/// `committed`, `rolled_back`, `dropped` or `failed`), and each call of a
/// [`Transaction`] method a `crm.op` child span (the method's name, and
/// `ok` or the error's kind with whether it is retryable). Both are at
/// level INFO with the target `crm_core::store`; their fields hold ids,
/// names of operations, durations and error kinds, never personal data.
/// Events (target `crm_core::…`) tell of applied migrations (INFO), of
/// retries inside an operation (DEBUG) or of an import batch (INFO), and of
/// the idempotency guard's replays and waits (DEBUG). Without a subscriber
/// (or under one that filters `crm.transaction` out), a transaction costs
/// one check of a cached interest and its operations make no spans.
///
/// A backend of your own makes the same spans when its `begin` returns its
/// transaction through [`trace_transaction`]; nothing else is needed, and
/// a store that only delegates to a built-in one (as `Arc<S>` does) must
/// not wrap again.
#[async_trait]
pub trait Store: fmt::Debug + Send + Sync + 'static {
    /// Opens a transaction for `tenant`, acting as `context`.
    async fn begin(&self, tenant: TenantId, context: Context) -> Result<Box<dyn Transaction>>;

    /// Opens a transaction for `tenant` that will only read: the one-call
    /// reads of [`Scope`] use it. A store may open it more cheaply than
    /// [`begin`](Self::begin) and refuse writes in it (PostgreSQL opens it
    /// `READ ONLY`, without the acting context that only writes record: a
    /// statement that writes fails with a backend error, and writes
    /// nothing). The default is [`begin`](Self::begin), which is always
    /// correct; a store that delegates to another should forward it.
    async fn begin_read(&self, tenant: TenantId, context: Context) -> Result<Box<dyn Transaction>> {
        self.begin(tenant, context).await
    }

    /// The pipelines deals may use.
    fn pipelines(&self) -> &Pipelines;

    /// Whether one more transaction can be opened right now beside those
    /// open, `begin` not waiting for one of them to end (a pool with an
    /// idle connection or room for one, say). Batch jobs ask it after
    /// opening their main transaction, to read on a second one while they
    /// write on the first ([`crate::scoring::rescore`]), and do without
    /// the second when the answer is `false`. The answer can be out of
    /// date by the time `begin` runs; it must never be `true` when a
    /// `begin` could only be served by a transaction the caller holds.
    /// The default is `false`, which is always safe: the in-memory store,
    /// which runs one transaction at a time, says so.
    fn concurrent_transactions(&self) -> bool {
        false
    }
}

/// A shared store is a store: a host that holds an `Arc` passes it as it is.
#[async_trait]
impl<S: Store + ?Sized> Store for std::sync::Arc<S> {
    async fn begin(&self, tenant: TenantId, context: Context) -> Result<Box<dyn Transaction>> {
        (**self).begin(tenant, context).await
    }

    async fn begin_read(&self, tenant: TenantId, context: Context) -> Result<Box<dyn Transaction>> {
        (**self).begin_read(tenant, context).await
    }

    fn pipelines(&self) -> &Pipelines {
        (**self).pipelines()
    }

    fn concurrent_transactions(&self) -> bool {
        (**self).concurrent_transactions()
    }
}

/// A boxed store is a store.
#[async_trait]
impl<S: Store + ?Sized> Store for Box<S> {
    async fn begin(&self, tenant: TenantId, context: Context) -> Result<Box<dyn Transaction>> {
        (**self).begin(tenant, context).await
    }

    async fn begin_read(&self, tenant: TenantId, context: Context) -> Result<Box<dyn Transaction>> {
        (**self).begin_read(tenant, context).await
    }

    fn pipelines(&self) -> &Pipelines {
        (**self).pipelines()
    }

    fn concurrent_transactions(&self) -> bool {
        (**self).concurrent_transactions()
    }
}

/// A [`Store`] as a trait object.
pub type DynStore = dyn Store;

/// The most ids (or emails) one [`get_contacts`](ContactsTx::get_contacts),
/// [`get_contacts_by_email`](ContactsTx::get_contacts_by_email) or
/// [`get_deals`](DealsTx::get_deals) call takes.
pub const MAX_GET_MANY: usize = 1000;

/// `Validation` on `field` past [`MAX_GET_MANY`].
pub(crate) fn check_get_many(field: &str, n: usize) -> Result<()> {
    if n > MAX_GET_MANY {
        return Err(
            crate::error::ValidationErrors::single(crate::error::FieldError::new(
                field,
                "out_of_range",
                format!("must hold at most {MAX_GET_MANY} items, got {n}"),
            ))
            .into(),
        );
    }
    Ok(())
}

/// A unit of work for one tenant: everything in it commits together or not
/// at all. Dropping it without [`commit`](Transaction::commit) rolls it
/// back, and releases what it held shortly after the drop (not by the time
/// it returns); [`rollback`](Transaction::rollback) returns once it is
/// released.
///
/// See the contract on [`Store`] (**Ending** in particular).
#[async_trait]
pub trait Transaction:
    ContactsTx
    + CompaniesTx
    + OwnersTx
    + TagsTx
    + TasksTx
    + DealsTx
    + TimelineTx
    + HistoryTx
    + IdempotencyTx
    + BulkTx
    + ScoringTx
    + FeedTx
    + ExternalIdsTx
    + FreshnessTx
    + fmt::Debug
    + Send
{
    /// The tenant this transaction works in.
    fn tenant(&self) -> TenantId;

    /// Who is acting.
    fn context(&self) -> &Context;

    /// Makes every write of this transaction durable and visible; once it
    /// returns `Ok`, what the transaction held is released.
    ///
    /// A commit whose answer is lost (the connection to PostgreSQL went
    /// away after the commit was sent) is an [`Error::Backend`] that is
    /// *not* retryable, whose message says the outcome is unknown: the
    /// transaction may have committed, and running it again could write
    /// its records twice. Look for its writes (or make it idempotent, as
    /// the idempotency guard does) before running it again.
    async fn commit(self: Box<Self>) -> Result<()>;

    /// Discards every write of this transaction; once it returns `Ok`, what
    /// the transaction held is released (which a drop does not promise).
    async fn rollback(self: Box<Self>) -> Result<()>;

    /// Says that this transaction only reads and that its next operation
    /// is the last: a backend may end the transaction with that
    /// operation's first statement, in the same round trip (PostgreSQL
    /// pipelines the `ROLLBACK` after it), instead of when the transaction
    /// is dropped.
    /// A statement after that one then runs in a transaction of its own.
    /// For the one-call reads of [`Scope`] that send one statement; the
    /// default does nothing.
    #[doc(hidden)]
    fn end_with_next_statement(&mut self) {}

    /// [`complete_idempotency_key`](IdempotencyTx::complete_idempotency_key),
    /// then [`commit`](Self::commit): what the default does. A backend may send
    /// both at once; either way the outcome is stored if and only if the
    /// commit succeeds.
    async fn complete_idempotency_key_and_commit(
        mut self: Box<Self>,
        source: &crate::domain::IdempotencySource,
        key: &crate::domain::IdempotencyKey,
        result: &crate::domain::StoredResult,
        completed_at: Timestamp,
    ) -> Result<crate::domain::IdempotencyRecord> {
        let record = self
            .complete_idempotency_key(source, key, result, completed_at)
            .await?;
        self.commit().await?;
        Ok(record)
    }
}
