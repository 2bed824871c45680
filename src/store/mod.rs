//! The storage contract: [`Store`] opens [`Transaction`]s, and every backend
//! (in memory, PostgreSQL, your own) implements the same semantics, checked
//! by the conformance suite.

use std::{collections::BTreeMap, fmt};

use async_trait::async_trait;
use rust_decimal::Decimal;
use serde::Serialize;

use crate::{
    domain::{
        Activity, Contact, ContactId, ContactPatch, Context, Currency, Deal, DealId, DealPatch,
        Email, LeadSource, LostReason, Metadata, NewActivity, NewContact, NewDeal, NewSignal,
        Pipeline, PipelineKey, Pipelines, Score, Signal, StageKey, StageKind, TenantId, Timestamp,
        Version,
    },
    error::{Error, FieldError, Result, ValidationErrors},
};

pub use crate::domain::{
    Cursor, CursorList, CursorPosition, DEFAULT_PAGE_SIZE, ListScope, MAX_PAGE_SIZE, Page,
    PageRequest, TimeIdKey,
};

pub mod memory;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres;

/// A storage backend for the CRM: opens transactions scoped to one tenant.
///
/// Use it as `Arc<dyn Store>` ([`DynStore`]); single-operation conveniences
/// are in [`StoreExt`], implemented for every store.
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
///   the transaction stays usable.
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
/// - **Emails** are unique per tenant compared case-insensitively (by
///   their [`caseless_key`](crate::domain::caseless_key), whatever the
///   database's locale); a create or update that would break this returns
///   [`Error::DuplicateEmail`] with the id of the contact holding the
///   email, also when two transactions race for it.
/// - **Versions.** Contacts and deals start at version 1 and gain one per
///   change. An update with a stale expected version returns
///   [`Error::Conflict`] and changes nothing. An update that changes nothing
///   returns the record as it is, with its version unchanged.
/// - **Deals** follow their pipeline's stage machine
///   ([`Pipeline::check_move`]); a refused move is
///   [`Error::InvalidTransition`].
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
///   ([`NewActivity::checked`], [`ContactQuery::checked`],
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
/// - **Deleting a contact** deletes its deals, activities and signals.
/// - **History.** Every committed create, update and delete of a contact
///   or deal (a deal deleted with its contact too) is a version in the
///   history, written in the same transaction, with the transaction's
///   context; an update that changes nothing and a score write-back record
///   nothing. See [`crate::history`].
#[async_trait]
pub trait Store: fmt::Debug + Send + Sync + 'static {
    /// Opens a transaction for `tenant`, acting as `context`.
    async fn begin(&self, tenant: TenantId, context: Context) -> Result<Box<dyn Transaction>>;

    /// The pipelines deals may use.
    fn pipelines(&self) -> &Pipelines;
}

/// A [`Store`] as a trait object.
pub type DynStore = dyn Store;

/// A unit of work for one tenant: everything in it commits together or not
/// at all. Dropping it without [`commit`](Transaction::commit) rolls it
/// back, and releases what it held shortly after the drop (not by the time
/// it returns); [`rollback`](Transaction::rollback) returns once it is
/// released.
///
/// See the contract on [`Store`] (**Ending** in particular).
#[async_trait]
pub trait Transaction: fmt::Debug + Send {
    /// The tenant this transaction works in.
    fn tenant(&self) -> TenantId;

    /// Who is acting.
    fn context(&self) -> &Context;

    /// Makes every write of this transaction durable and visible; once it
    /// returns `Ok`, what the transaction held is released.
    async fn commit(self: Box<Self>) -> Result<()>;

    /// Discards every write of this transaction; once it returns `Ok`, what
    /// the transaction held is released (which a drop does not promise).
    async fn rollback(self: Box<Self>) -> Result<()>;

    // ---- contacts ----

    /// Creates a contact (version 1, score 0, active).
    ///
    /// Errors: [`Error::DuplicateEmail`] when the tenant has the email in any casing.
    async fn create_contact(&mut self, new: NewContact) -> Result<Contact>;

    /// A contact by id.
    async fn get_contact(&mut self, id: ContactId) -> Result<Option<Contact>>;

    /// A contact by email, in any casing.
    async fn get_contact_by_email(&mut self, email: &Email) -> Result<Option<Contact>>;

    /// Applies `patch` if the contact is at `expected`.
    ///
    /// Errors: [`Error::NotFound`], [`Error::Conflict`], [`Error::DuplicateEmail`].
    async fn update_contact(
        &mut self,
        id: ContactId,
        expected: Version,
        patch: ContactPatch,
    ) -> Result<Contact>;

    /// Marks the contact inactive, whatever its version (a no-op when it
    /// already is). Errors: [`Error::NotFound`].
    async fn deactivate_contact(&mut self, id: ContactId) -> Result<Contact>;

    /// Deletes the contact with its deals, activities and signals.
    /// `Ok(false)` when there was no such contact.
    async fn delete_contact(&mut self, id: ContactId) -> Result<bool>;

    /// Contacts matching `query`, in its order, one page at a time.
    async fn search_contacts(&mut self, query: &ContactQuery) -> Result<Page<Contact>>;

    // ---- deals ----

    /// Creates a deal for an existing contact, in the pipeline's first open
    /// stage unless the input names an open stage.
    ///
    /// Errors: [`Error::NotFound`] for the contact; [`Error::Validation`]
    /// on `pipeline` for an unknown pipeline, on `stage` for a stage not in
    /// the pipeline or a closed starting stage.
    async fn create_deal(&mut self, new: NewDeal) -> Result<Deal>;

    /// A deal by id.
    async fn get_deal(&mut self, id: DealId) -> Result<Option<Deal>>;

    /// Applies `patch` if the deal is at `expected`.
    ///
    /// Errors: [`Error::NotFound`], [`Error::Conflict`].
    async fn update_deal(
        &mut self,
        id: DealId,
        expected: Version,
        patch: DealPatch,
    ) -> Result<Deal>;

    /// Moves the deal to stage `to` along the stage machine
    /// ([`Pipeline::check_move`]). A lost stage needs `lost_reason`, and
    /// only a lost stage takes one.
    ///
    /// Errors: [`Error::NotFound`], [`Error::Conflict`],
    /// [`Error::InvalidTransition`]; [`Error::Validation`] on `stage` when
    /// `to` is not a stage of the deal's pipeline.
    async fn move_deal(
        &mut self,
        id: DealId,
        expected: Version,
        to: &StageKey,
        lost_reason: Option<LostReason>,
    ) -> Result<Deal>;

    /// Reopens a closed deal into open stage `to`, clearing `won_at`,
    /// `lost_at` and the lost reason.
    ///
    /// Errors: [`Error::NotFound`], [`Error::Conflict`],
    /// [`Error::InvalidTransition`] when the deal is not closed or `to` is not open.
    async fn reopen_deal(&mut self, id: DealId, expected: Version, to: &StageKey) -> Result<Deal>;

    /// Deletes a deal and unlinks its activities. `Ok(false)` when there was none.
    async fn delete_deal(&mut self, id: DealId) -> Result<bool>;

    /// A contact's deals, newest first (`created_at`, then id, descending).
    async fn list_deals_for_contact(
        &mut self,
        contact: ContactId,
        page: &PageRequest,
    ) -> Result<Page<Deal>>;

    /// The deals in one stage of a pipeline, newest first.
    async fn list_deals_in_stage(
        &mut self,
        pipeline: &PipelineKey,
        stage: &StageKey,
        page: &PageRequest,
    ) -> Result<Page<Deal>>;

    /// Per stage of `pipeline` (in pipeline order, empty stages included)
    /// and per currency: the number of deals, their sum and their sum
    /// weighted by the stage's win probability. Currencies are never added together.
    ///
    /// Errors: [`Error::Validation`] on `pipeline` for an unknown pipeline.
    async fn pipeline_summary(&mut self, pipeline: &PipelineKey) -> Result<PipelineSummary>;

    // ---- activities and signals ----

    /// Logs an activity on a contact's timeline (and, optionally, one of
    /// its deals). Without `occurred_at`, it happened when it was logged:
    /// `occurred_at == created_at`.
    ///
    /// Errors: [`Error::NotFound`] for the contact or the deal;
    /// [`Error::Validation`] on `deal_id` when the deal belongs to another
    /// contact.
    async fn log_activity(&mut self, new: NewActivity) -> Result<Activity>;

    /// A contact's activities, newest first (`occurred_at`, then id,
    /// descending). Empty for a contact that does not exist.
    async fn timeline(&mut self, contact: ContactId, page: &PageRequest) -> Result<Page<Activity>>;

    /// Records a behavioural signal for a contact.
    ///
    /// Errors: [`Error::NotFound`] for the contact.
    async fn record_signal(&mut self, new: NewSignal) -> Result<Signal>;

    /// A contact's signals, oldest first (`occurred_at`, then id). Empty
    /// for a contact that does not exist.
    async fn list_signals(&mut self, contact: ContactId) -> Result<Vec<Signal>>;

    /// Writes lead scores in bulk. Ids that are not contacts of the tenant
    /// are ignored; neither versions nor `updated_at` change. An id listed
    /// more than once gets the last score given for it. Returns how many
    /// contacts' scores actually changed (a contact counts once, and not at
    /// all when its final score is the one it had).
    async fn write_scores(&mut self, scores: &[(ContactId, Score)]) -> Result<u64>;

    // ---- history ----

    /// The versions of one contact or deal, newest first (by `valid_from`),
    /// including its tombstone if it was deleted. Empty for a record with
    /// no history. See [`crate::history`].
    ///
    /// Errors: [`Error::Validation`] on `limit` or `cursor`.
    async fn entity_history(
        &mut self,
        entity: crate::history::HistoryEntity,
        page: &PageRequest,
    ) -> Result<Page<crate::history::HistoryEntry>>;

    /// The version of a record in force at `at`, or `None` when the record
    /// did not exist then (before its creation, after its deletion, or in
    /// a purged past).
    async fn entity_as_of(
        &mut self,
        entity: crate::history::HistoryEntity,
        at: Timestamp,
    ) -> Result<Option<crate::history::HistoryEntry>>;

    /// The versions whose diff changes `query.field`, of one record or of
    /// every record of the kind, newest first (`valid_from`, then entity id,
    /// descending).
    ///
    /// Errors: [`Error::Validation`] on `limit` or `cursor`.
    async fn field_changes(
        &mut self,
        query: &crate::history::FieldQuery,
    ) -> Result<Page<crate::history::HistoryEntry>>;

    /// Every version of every contact and deal of the tenant with
    /// `from <= valid_from < until`, oldest first (`valid_from`, then entity
    /// id, ascending): for sync and export.
    ///
    /// Errors: [`Error::Validation`] on `limit` or `cursor`.
    async fn changes_between(
        &mut self,
        from: Timestamp,
        until: Timestamp,
        page: &PageRequest,
    ) -> Result<Page<crate::history::HistoryEntry>>;

    /// Deletes the tenant's versions that ended before `before`
    /// (`valid_to < before`) and the tombstones of records deleted before it
    /// (`valid_from < before`); versions in force are kept. Returns how
    /// many versions it deleted.
    async fn purge_history(&mut self, before: Timestamp) -> Result<u64>;

    /// Erases a contact's personal data from its row and from every one of
    /// its versions, recording an [`Operation::Erased`](crate::history::Operation::Erased)
    /// version; returns the erased contact (see [`crate::history`] for
    /// what it looks like). Erasing an erased contact changes nothing.
    ///
    /// Errors: [`Error::NotFound`].
    async fn erase_contact(&mut self, id: ContactId) -> Result<Contact>;

    // ---- idempotency ----

    /// Claims an inbound event's key (tenant, source, key) for this
    /// transaction: the storage step of
    /// [`IdempotencyGuard`](crate::idempotency::IdempotencyGuard), which is
    /// what host code uses.
    ///
    /// [`Claim::Claimed`](crate::idempotency::Claim::Claimed) when no
    /// record holds the key, or only an expired one (`expires_at <=
    /// claim.now`, to be replaced): this transaction then holds the key
    /// until it ends, and [`complete_idempotency_key`](Self::complete_idempotency_key)
    /// stores its record (`created_at = claim.now`) with the outcome; a
    /// rollback leaves the key as it was. Whether a claimed key shows a
    /// pending record to [`get_idempotency_record`](Self::get_idempotency_record)
    /// in the claiming transaction is the backend's affair.
    /// [`Claim::Existing`](crate::idempotency::Claim::Existing) with the
    /// record when a record that has not expired holds it. Never a
    /// check-then-insert race: while another transaction holds the key, the
    /// claim waits for it to end as `claim.wait` allows.
    ///
    /// Errors: [`Error::KeyInUse`] when the wait runs out (the transaction
    /// may then be unusable: roll it back).
    async fn claim_idempotency_key(
        &mut self,
        claim: &crate::idempotency::IdempotencyClaim,
    ) -> Result<crate::idempotency::Claim>;

    /// Claims a key like [`claim_idempotency_key`](Self::claim_idempotency_key),
    /// but lets the backend send the claim with this transaction's first
    /// statement, in the same round trip. A backend that does answers
    /// `Ok(None)`, and [`resolve_idempotency_claim`](Self::resolve_idempotency_claim)
    /// tells later what the claim found; one that does not (the default)
    /// claims at once and answers `Ok(Some(claim))`.
    ///
    /// While the claim is deferred, the first statement runs before the
    /// caller knows whether the key is free. When the claim finds it taken
    /// (or fails), the operation that carried it returns an error, the
    /// transaction refuses everything but a rollback, and nothing it did
    /// can commit.
    ///
    /// Errors: those of `claim_idempotency_key`, when claiming at once.
    async fn defer_idempotency_claim(
        &mut self,
        claim: &crate::idempotency::IdempotencyClaim,
    ) -> Result<Option<crate::idempotency::Claim>> {
        self.claim_idempotency_key(claim).await.map(Some)
    }

    /// What the claim deferred by [`defer_idempotency_claim`](Self::defer_idempotency_claim)
    /// found, sending it now if no statement took it along.
    ///
    /// Errors: those of [`claim_idempotency_key`](Self::claim_idempotency_key);
    /// [`Error::Backend`] when no claim is deferred (the default, for
    /// backends that never defer).
    async fn resolve_idempotency_claim(&mut self) -> Result<crate::idempotency::Claim> {
        Err(Error::backend(
            "this transaction has no deferred idempotency claim",
        ))
    }

    /// Stores the outcome of a key this transaction claimed, stamping
    /// `completed_at`; returns the record.
    ///
    /// Errors: [`Error::Backend`] when this transaction holds no pending
    /// claim on the key.
    async fn complete_idempotency_key(
        &mut self,
        source: &crate::idempotency::IdempotencySource,
        key: &crate::idempotency::IdempotencyKey,
        result: &crate::idempotency::StoredResult,
        completed_at: Timestamp,
    ) -> Result<crate::idempotency::IdempotencyRecord>;

    /// [`complete_idempotency_key`](Self::complete_idempotency_key), then
    /// [`commit`](Self::commit): what the default does. A backend may send
    /// both at once; either way the outcome is stored if and only if the
    /// commit succeeds.
    async fn complete_idempotency_key_and_commit(
        mut self: Box<Self>,
        source: &crate::idempotency::IdempotencySource,
        key: &crate::idempotency::IdempotencyKey,
        result: &crate::idempotency::StoredResult,
        completed_at: Timestamp,
    ) -> Result<crate::idempotency::IdempotencyRecord> {
        let record = self
            .complete_idempotency_key(source, key, result, completed_at)
            .await?;
        self.commit().await?;
        Ok(record)
    }

    /// The record of a key, expired or not, until it is purged.
    async fn get_idempotency_record(
        &mut self,
        source: &crate::idempotency::IdempotencySource,
        key: &crate::idempotency::IdempotencyKey,
    ) -> Result<Option<crate::idempotency::IdempotencyRecord>>;

    /// The records of one source, newest first (`created_at`, then key in
    /// code-point order, descending), expired ones included until purged.
    ///
    /// Errors: [`Error::Validation`] on `limit` or `cursor`.
    async fn list_idempotency_records(
        &mut self,
        source: &crate::idempotency::IdempotencySource,
        page: &PageRequest,
    ) -> Result<Page<crate::idempotency::IdempotencyRecord>>;

    /// Deletes up to `limit` of the tenant's records that expired at `now`
    /// (`expires_at <= now`), the longest expired first; returns how many.
    async fn purge_idempotency_records(&mut self, now: Timestamp, limit: u32) -> Result<u64>;

    // ---- bulk ----

    /// Upserts contacts by email, in any casing: a row whose email no
    /// contact of the tenant holds is created (version 1, score 0, active);
    /// otherwise the contact holding it gets the values `policy` picks
    /// ([`crate::bulk::conflict_patch`]; the stored email is kept) and its
    /// version goes up by one, unless nothing changes. Returns one outcome
    /// per row, in row order. Rows are applied in order, so a later row
    /// with the email of an earlier one updates the contact the earlier
    /// one wrote. Concurrent upserts of the same emails never fail with
    /// [`Error::DuplicateEmail`]: one inserts, the others update.
    async fn upsert_contacts(
        &mut self,
        rows: &[NewContact],
        policy: crate::bulk::ConflictPolicy,
    ) -> Result<Vec<crate::bulk::UpsertOutcome>>;

    /// Takes the tenant's import lock for the rest of this transaction, as
    /// `lock` says: what an import does first, so that imports of one tenant
    /// queue up instead of deadlocking over each other's rows (see
    /// [`ImportLock`](crate::bulk::ImportLock)). Other writers do not take
    /// it: a transaction of the host's own that writes several contacts can
    /// still deadlock with an import, and one of the two then fails with a
    /// retryable [`Error::Backend`].
    ///
    /// The default does nothing: right for a backend whose transactions
    /// never wait for each other's rows while holding some (the in-memory
    /// store runs one transaction at a time).
    async fn lock_for_import(&mut self, lock: crate::bulk::ImportLock) -> Result<()> {
        let _ = lock;
        Ok(())
    }

    /// Merges contact `loser` into `survivor`: the loser's deals (each
    /// gaining a version), activities and signals move to the survivor, the
    /// survivor takes the loser's values as `policy` says
    /// ([`crate::bulk::merged_survivor`]; custom fields merged key by key),
    /// and the loser is deleted. Every version the merge writes records the
    /// reason `merged <loser> into <survivor>` (after the context's own
    /// reason, if any) with the transaction's request id. Returns the
    /// survivor.
    ///
    /// An erased loser gives nothing but its deals, activities and signals.
    /// A transaction that holds locks on both contacts (it logged an
    /// activity for the survivor, then wants to log one for the loser) can
    /// deadlock with the merge and get a retryable [`Error::Backend`].
    ///
    /// Errors: [`Error::NotFound`] naming the survivor when it is missing,
    /// else the loser when it is; [`Error::Validation`] on `loser` when it
    /// is the survivor, on `survivor` when it is erased (it must hold no
    /// personal data), on `metadata` when the merged custom fields are too
    /// large.
    async fn merge_contacts(
        &mut self,
        survivor: ContactId,
        loser: ContactId,
        policy: crate::bulk::ConflictPolicy,
    ) -> Result<Contact>;

    // ---- scoring ----

    /// The scoring inputs of one chunk of contacts, for the rescoring
    /// pipeline ([`crate::scoring::rescore`]): the active contacts created
    /// at or after `request.created_from` with an id greater than
    /// `request.after`, in ascending id order, at most `request.limit`, each
    /// with its activities, signals and open deals (those before
    /// `request.inputs_from` may be left out). A few statements per chunk,
    /// never one per contact.
    ///
    /// Errors: [`Error::Validation`] on `limit` when it is 0.
    async fn scoring_inputs(
        &mut self,
        request: &crate::scoring::InputsRequest,
    ) -> Result<Vec<crate::scoring::ContactInputs>>;

    /// A contact's live score state: `ln Σ weight·2^(t/half_life)` over its
    /// activities and signals (see [`crate::scoring::live`]). `Ok(None)`
    /// when there is no such contact, `Ok(Some(None))` when it has nothing
    /// counted (or the store keeps no live scores).
    async fn live_score_log(&mut self, id: ContactId) -> Result<Option<Option<f64>>>;

    /// The live top leads: active contacts with a live state, highest
    /// state first (ties by id, descending), at most `limit` (1–1000),
    /// each with its state.
    ///
    /// Errors: [`Error::Validation`] on `limit`.
    async fn live_top_leads(&mut self, limit: u32) -> Result<Vec<(Contact, f64)>>;

    /// Replaces live states in bulk (a rebuild by the batch). Ids that are
    /// not contacts of the tenant are ignored; versions, `updated_at` and
    /// history are untouched. An id listed more than once gets the last
    /// state given for it and counts once. Returns how many contacts it
    /// set.
    ///
    /// Errors: [`Error::Validation`] on `score_log` for a state that is not
    /// a finite number (a log-scaled sum never is NaN or infinite); a
    /// negative zero is kept as zero, as PostgreSQL keeps it.
    async fn write_live_score_logs(&mut self, logs: &[(ContactId, Option<f64>)]) -> Result<u64>;
}

impl CursorList {
    /// [`Transaction::search_contacts`] with the filters and order of `q`
    /// (its page aside), as [`ContactQuery::checked`] gives them.
    pub fn contacts(q: &ContactQuery) -> ListScope {
        let mut sources: Vec<&str> = q.lead_sources.iter().map(|l| l.as_str()).collect();
        sources.sort_unstable();
        sources.dedup();
        let micros = |t: Option<Timestamp>| t.map(|t| t.timestamp_micros());
        q.sort.cursor_list().scoped(&(
            q.sort,
            (&q.email_prefix, &q.name_prefix, &q.company_prefix),
            sources,
            (
                q.min_score.map(|s| s.get()),
                q.max_score.map(|s| s.get()),
                q.active,
            ),
            (
                micros(q.created_from),
                micros(q.created_until),
                micros(q.updated_from),
                micros(q.updated_until),
            ),
            q.metadata_contains.as_ref().map(|m| m.as_map()),
        ))
    }
}

/// The longest search prefix ([`ContactQuery`]'s `email_prefix`,
/// `name_prefix`, `company_prefix`): longer than any value it searches.
pub const MAX_PREFIX_CHARS: usize = 255;


/// The order of a contact search. Ties are broken by id, in the same direction.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ContactSort {
    /// Highest score first.
    ScoreDesc,
    /// Lowest score first.
    ScoreAsc,
    /// Newest first (the default).
    #[default]
    CreatedDesc,
    /// Oldest first.
    CreatedAsc,
    /// Most recently changed first.
    UpdatedDesc,
    /// Least recently changed first.
    UpdatedAsc,
    /// By last name, then first name, case-insensitively: by their
    /// [`caseless_key`](crate::domain::caseless_key)s in code-point order,
    /// the same on every backend and in every database locale.
    NameAsc,
    /// By last name, then first name, reversed.
    NameDesc,
}

/// Filters, order and page of a contact search. Every filter is optional and
/// they combine with AND. Text prefixes match case-insensitively (the
/// value's [`caseless_key`](crate::domain::caseless_key) starts with the
/// prefix's) and literally (`%` and `_` are not wildcards); as keys are
/// composed (NFC), a prefix ends on a whole letter: `Zoe` does not find
/// `Zoë`, whose `e` and diaeresis compose into one. Time ranges include
/// their start and exclude their end.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContactQuery {
    /// Email starts with this.
    pub email_prefix: Option<String>,
    /// First name or last name starts with this.
    pub name_prefix: Option<String>,
    /// Company starts with this.
    pub company_prefix: Option<String>,
    /// Lead source is one of these (empty: any).
    pub lead_sources: Vec<LeadSource>,
    /// Score at least this.
    pub min_score: Option<Score>,
    /// Score at most this.
    pub max_score: Option<Score>,
    /// Active or not.
    pub active: Option<bool>,
    /// Created at or after.
    pub created_from: Option<Timestamp>,
    /// Created before.
    pub created_until: Option<Timestamp>,
    /// Last changed at or after.
    pub updated_from: Option<Timestamp>,
    /// Last changed before.
    pub updated_until: Option<Timestamp>,
    /// Metadata contains this object (PostgreSQL `jsonb @>` semantics).
    pub metadata_contains: Option<Metadata>,
    /// Order.
    pub sort: ContactSort,
    /// Page.
    pub page: PageRequest,
}

impl ContactQuery {
    /// Every contact, newest first, 50 a page.
    pub fn new() -> Self {
        Self::default()
    }

    /// The top `limit` active contacts by score: the "top leads" query.
    pub fn top_leads(limit: u32) -> Self {
        ContactQuery {
            active: Some(true),
            sort: ContactSort::ScoreDesc,
            page: PageRequest::first(limit),
            ..Self::default()
        }
    }

    /// Sets the order.
    pub fn sort(mut self, sort: ContactSort) -> Self {
        self.sort = sort;
        self
    }

    /// Sets the page.
    pub fn page(mut self, page: PageRequest) -> Self {
        self.page = page;
        self
    }

    /// The same query, continuing after `cursor`.
    pub fn after(&self, cursor: Cursor) -> Self {
        let mut q = self.clone();
        q.page.cursor = Some(cursor);
        q
    }

    /// The query as every store runs it, or every reason it cannot be:
    /// prefixes without NUL, and time bounds within years 1–9999, normalised
    /// ([`check_timestamp`](crate::domain::check_timestamp)). Borrowed when
    /// nothing needed normalising. Every store calls it first. (The page is
    /// checked when it is read: [`PageRequest::checked_limit`],
    /// [`PageRequest::position`].)
    pub fn checked(&self) -> std::result::Result<std::borrow::Cow<'_, Self>, ValidationErrors> {
        use crate::domain::check_optional_timestamp;
        let mut errors = ValidationErrors::new();
        for (field, prefix) in [
            ("email_prefix", &self.email_prefix),
            ("name_prefix", &self.name_prefix),
            ("company_prefix", &self.company_prefix),
        ] {
            if let Some(p) = prefix {
                errors.check(crate::domain::no_nul(field, p));
                let chars = p.chars().count();
                if chars > MAX_PREFIX_CHARS {
                    errors.push(FieldError::new(
                        field,
                        "too_long",
                        format!(
                            "must have at most {MAX_PREFIX_CHARS} characters (no value it \
                             searches is longer), got {chars}"
                        ),
                    ));
                }
            }
        }
        let created_from =
            errors.check(check_optional_timestamp("created_from", self.created_from));
        let created_until = errors.check(check_optional_timestamp(
            "created_until",
            self.created_until,
        ));
        let updated_from =
            errors.check(check_optional_timestamp("updated_from", self.updated_from));
        let updated_until = errors.check(check_optional_timestamp(
            "updated_until",
            self.updated_until,
        ));
        if !errors.is_empty() {
            return Err(errors);
        }
        let times = (
            created_from.flatten(),
            created_until.flatten(),
            updated_from.flatten(),
            updated_until.flatten(),
        );
        if times
            == (
                self.created_from,
                self.created_until,
                self.updated_from,
                self.updated_until,
            )
        {
            return Ok(std::borrow::Cow::Borrowed(self));
        }
        Ok(std::borrow::Cow::Owned(ContactQuery {
            created_from: times.0,
            created_until: times.1,
            updated_from: times.2,
            updated_until: times.3,
            ..self.clone()
        }))
    }
}

/// One currency's totals in one stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CurrencyTotal {
    /// The currency.
    pub currency: Currency,
    /// How many deals.
    pub count: u64,
    /// The sum of their amounts.
    pub sum: Decimal,
    /// The sum weighted by the stage's win probability.
    pub weighted: Decimal,
}

/// One stage's totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StageSummary {
    /// The stage.
    pub stage: StageKey,
    /// Its label.
    pub label: String,
    /// Open, won or lost.
    pub kind: StageKind,
    /// Its win probability in percent.
    pub win_probability: u8,
    /// Per currency, ordered by currency code; empty when the stage has no deals.
    pub totals: Vec<CurrencyTotal>,
}

/// A pipeline's deals summed per stage and currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PipelineSummary {
    /// The pipeline.
    pub pipeline: PipelineKey,
    /// Its stages in order.
    pub stages: Vec<StageSummary>,
}

impl PipelineSummary {
    /// Builds the summary from per-(stage, currency) counts and sums, as a
    /// backend computes them. Rows of stages not in the pipeline are ignored.
    pub fn from_totals(
        pipeline: &Pipeline,
        totals: impl IntoIterator<Item = (StageKey, Currency, u64, Decimal)>,
    ) -> Self {
        let mut by_stage: BTreeMap<StageKey, BTreeMap<&'static str, (Currency, u64, Decimal)>> =
            BTreeMap::new();
        for (stage, currency, count, sum) in totals {
            let e = by_stage
                .entry(stage)
                .or_default()
                .entry(currency.code())
                .or_insert((currency, 0, Decimal::ZERO));
            e.1 += count;
            e.2 += sum;
        }
        let stages = pipeline
            .stages()
            .iter()
            .map(|def| StageSummary {
                stage: def.key.clone(),
                label: def.label.clone(),
                kind: def.kind,
                win_probability: def.win_probability,
                totals: by_stage
                    .remove(&def.key)
                    .unwrap_or_default()
                    .into_values()
                    .map(|(currency, count, sum)| CurrencyTotal {
                        currency,
                        count,
                        sum,
                        weighted: (sum * Decimal::from(def.win_probability) / Decimal::ONE_HUNDRED)
                            .normalize(),
                    })
                    .collect(),
            })
            .collect();
        PipelineSummary {
            pipeline: pipeline.key().clone(),
            stages,
        }
    }

    /// Totals per currency over the open stages: the open pipeline value and
    /// its weighted forecast.
    pub fn open_totals(&self) -> Vec<CurrencyTotal> {
        let mut acc: BTreeMap<&'static str, CurrencyTotal> = BTreeMap::new();
        for s in self.stages.iter().filter(|s| s.kind == StageKind::Open) {
            for t in &s.totals {
                let e = acc.entry(t.currency.code()).or_insert(CurrencyTotal {
                    currency: t.currency,
                    count: 0,
                    sum: Decimal::ZERO,
                    weighted: Decimal::ZERO,
                });
                e.count += t.count;
                e.sum += t.sum;
                e.weighted += t.weighted;
            }
        }
        acc.into_values().collect()
    }
}

/// Single-operation conveniences for every [`Store`]: each opens a
/// transaction, does one thing and commits.
#[async_trait]
pub trait StoreExt: Store {
    /// See [`Transaction::create_contact`].
    async fn create_contact(
        &self,
        tenant: TenantId,
        ctx: &Context,
        new: NewContact,
    ) -> Result<Contact> {
        let mut tx = self.begin(tenant, ctx.clone()).await?;
        let out = tx.create_contact(new).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// See [`Transaction::get_contact`].
    async fn get_contact(
        &self,
        tenant: TenantId,
        ctx: &Context,
        id: ContactId,
    ) -> Result<Option<Contact>> {
        let mut tx = self.begin(tenant, ctx.clone()).await?;
        let out = tx.get_contact(id).await?;
        end_read(tx);
        Ok(out)
    }

    /// See [`Transaction::get_contact_by_email`].
    async fn get_contact_by_email(
        &self,
        tenant: TenantId,
        ctx: &Context,
        email: &Email,
    ) -> Result<Option<Contact>> {
        let mut tx = self.begin(tenant, ctx.clone()).await?;
        let out = tx.get_contact_by_email(email).await?;
        end_read(tx);
        Ok(out)
    }

    /// See [`Transaction::update_contact`].
    async fn update_contact(
        &self,
        tenant: TenantId,
        ctx: &Context,
        id: ContactId,
        expected: Version,
        patch: ContactPatch,
    ) -> Result<Contact> {
        let mut tx = self.begin(tenant, ctx.clone()).await?;
        let out = tx.update_contact(id, expected, patch).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// See [`Transaction::search_contacts`].
    async fn search_contacts(
        &self,
        tenant: TenantId,
        ctx: &Context,
        query: &ContactQuery,
    ) -> Result<Page<Contact>> {
        let mut tx = self.begin(tenant, ctx.clone()).await?;
        let out = tx.search_contacts(query).await?;
        end_read(tx);
        Ok(out)
    }

    /// See [`Transaction::create_deal`].
    async fn create_deal(&self, tenant: TenantId, ctx: &Context, new: NewDeal) -> Result<Deal> {
        let mut tx = self.begin(tenant, ctx.clone()).await?;
        let out = tx.create_deal(new).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// See [`Transaction::move_deal`].
    async fn move_deal(
        &self,
        tenant: TenantId,
        ctx: &Context,
        id: DealId,
        expected: Version,
        to: &StageKey,
        lost_reason: Option<LostReason>,
    ) -> Result<Deal> {
        let mut tx = self.begin(tenant, ctx.clone()).await?;
        let out = tx.move_deal(id, expected, to, lost_reason).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// See [`Transaction::log_activity`].
    async fn log_activity(
        &self,
        tenant: TenantId,
        ctx: &Context,
        new: NewActivity,
    ) -> Result<Activity> {
        let mut tx = self.begin(tenant, ctx.clone()).await?;
        let out = tx.log_activity(new).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// See [`Transaction::timeline`].
    async fn timeline(
        &self,
        tenant: TenantId,
        ctx: &Context,
        contact: ContactId,
        page: &PageRequest,
    ) -> Result<Page<Activity>> {
        let mut tx = self.begin(tenant, ctx.clone()).await?;
        let out = tx.timeline(contact, page).await?;
        end_read(tx);
        Ok(out)
    }

    /// See [`Transaction::pipeline_summary`].
    async fn pipeline_summary(
        &self,
        tenant: TenantId,
        ctx: &Context,
        pipeline: &PipelineKey,
    ) -> Result<PipelineSummary> {
        let mut tx = self.begin(tenant, ctx.clone()).await?;
        let out = tx.pipeline_summary(pipeline).await?;
        end_read(tx);
        Ok(out)
    }
}

impl<T: Store + ?Sized> StoreExt for T {}

/// Ends a transaction that only read. A read has nothing to commit, so the
/// transaction is dropped, which rolls it back: on PostgreSQL the rollback
/// goes out without the caller waiting for its answer, saving a round trip.
fn end_read(tx: Box<dyn Transaction>) {
    drop(tx);
}

/// The sort key of a contact in a search, as stored in cursors. Backends use
/// it to compare positions; PostgreSQL builds the same tuple in SQL.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum ContactSortKey {
    /// Score, then id.
    Score(i64, uuid::Uuid),
    /// Timestamp in microseconds since the epoch, then id.
    Time(i64, uuid::Uuid),
    /// The caseless keys ([`caseless_key`](crate::domain::caseless_key))
    /// of the last name and the first name, then id.
    Name(String, String, uuid::Uuid),
}

impl ContactSortKey {
    /// The key of `c` under `sort`.
    pub fn of(sort: ContactSort, c: &Contact) -> Self {
        let id = c.id.as_uuid();
        match sort {
            ContactSort::ScoreAsc | ContactSort::ScoreDesc => {
                ContactSortKey::Score(i64::from(c.score.get()), id)
            }
            ContactSort::CreatedAsc | ContactSort::CreatedDesc => {
                ContactSortKey::Time(c.created_at.timestamp_micros(), id)
            }
            ContactSort::UpdatedAsc | ContactSort::UpdatedDesc => {
                ContactSortKey::Time(c.updated_at.timestamp_micros(), id)
            }
            ContactSort::NameAsc | ContactSort::NameDesc => ContactSortKey::Name(
                crate::domain::caseless_key(c.last_name.as_str()),
                crate::domain::caseless_key(c.first_name.as_str()),
                id,
            ),
        }
    }
}

impl ContactSort {
    /// True for the descending orders.
    pub fn is_descending(self) -> bool {
        matches!(
            self,
            ContactSort::ScoreDesc
                | ContactSort::CreatedDesc
                | ContactSort::UpdatedDesc
                | ContactSort::NameDesc
        )
    }
}

impl ContactSort {
    /// The list a search in this order is, for its cursors: one per sort
    /// key (score, creation time, update time, name), either direction.
    pub fn cursor_list(self) -> CursorList {
        match self {
            ContactSort::ScoreAsc | ContactSort::ScoreDesc => CursorList::ContactsByScore,
            ContactSort::CreatedAsc | ContactSort::CreatedDesc => CursorList::ContactsByCreation,
            ContactSort::UpdatedAsc | ContactSort::UpdatedDesc => CursorList::ContactsByUpdate,
            ContactSort::NameAsc | ContactSort::NameDesc => CursorList::ContactsByName,
        }
    }
}

/// The longest text a name position of a search cursor may hold, in
/// characters (a name's sort key is never longer).
const MAX_NAME_KEY_CHARS: usize = 1024;

/// A search position: the key of the list's sort, with a score of 0–100,
/// a time within years 1–9999, or name keys without NUL and of bounded
/// length.
impl CursorPosition for ContactSortKey {
    fn check(&self, list: CursorList) -> Result<(), FieldError> {
        let wrong_list = || {
            FieldError::new(
                "cursor",
                "invalid_format",
                "holds the position of a search on another key",
            )
        };
        match self {
            ContactSortKey::Score(score, _) => {
                if list != CursorList::ContactsByScore {
                    return Err(wrong_list());
                }
                Score::new_field("cursor", *score).map(drop)
            }
            ContactSortKey::Time(micros, _) => {
                if !matches!(
                    list,
                    CursorList::ContactsByCreation | CursorList::ContactsByUpdate
                ) {
                    return Err(wrong_list());
                }
                micros.check(list)
            }
            ContactSortKey::Name(last, first, _) => {
                if list != CursorList::ContactsByName {
                    return Err(wrong_list());
                }
                for key in [last, first] {
                    crate::domain::no_nul("cursor", key)?;
                    if key.chars().count() > MAX_NAME_KEY_CHARS {
                        return Err(FieldError::new(
                            "cursor",
                            "too_long",
                            format!("a name key has more than {MAX_NAME_KEY_CHARS} characters"),
                        ));
                    }
                }
                Ok(())
            }
        }
    }
}

