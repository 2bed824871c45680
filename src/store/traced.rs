//! Spans for every transaction and every store operation, through the
//! `tracing` crate: the built-in backends wrap each transaction they open
//! in [`Traced`], and so can a backend of the host's own
//! ([`trace_transaction`]).
//!
//! - `crm.transaction` (level INFO, target `crm_core::store`), opened by
//!   `begin`: `tenant` (the tenant id), `backend` (`"memory"`,
//!   `"postgres"`, or what a host's backend calls itself), `pool_wait_us`
//!   (how long `begin` waited for a pooled connection, or for the
//!   in-memory store's lock, in microseconds) and `outcome`: `committed`,
//!   `rolled_back`, `dropped` (ended by a drop, which rolls back) or
//!   `failed` (`begin`, `commit` or `rollback` returned an error). It is
//!   closed when the transaction ends; its parent is the span current when
//!   `begin` was called (the host's request, say).
//! - `crm.op` (level INFO, same target), a child of its transaction's span
//!   for each call of a [`Transaction`] method, `commit` and `rollback`
//!   included: `operation` (the method's name) and `outcome`, `ok` or the
//!   error's kind in snake case (`not_found`, `conflict`, `backend`, …),
//!   with `retryable` (true or false) when it failed. Whatever the backend
//!   logs while the operation runs is inside it.
//!
//! No field holds personal data: ids, operation names, durations and error
//! kinds only — never an email, a name, metadata, a reason or an error's
//! message (which may quote input).
//!
//! With no subscriber, or one that does not want `crm.transaction` spans,
//! a transaction costs one check of a cached interest and is not wrapped:
//! its operations make no spans (a subscriber that wants `crm.op` spans
//! must want their transaction's too).

use std::{
    fmt,
    pin::pin,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use tracing::{Instrument, Span, field::Empty};

use super::{
    BulkTx, CompaniesTx, CompanyQuery, ContactQuery, ContactsTx, DealQuery, DealsTx, ExternalIdsTx,
    FeedTx, FreshnessTx, HistoryTx, IdempotencyTx, OwnersTx, PipelineSummary, Reassigned,
    ScoringTx, TagsTx, TasksTx, TimelineTx, Transaction,
};
use crate::{
    domain::*,
    error::{ErrorKind, Result},
};

/// The span of a transaction of `backend` for `tenant`, opened when `begin`
/// starts: handed to [`Traced::wrap`] with the transaction, or recorded as
/// failed with [`begin_failed`] when `begin` fails.
pub(crate) fn transaction_span(tenant: TenantId, backend: &'static str) -> Span {
    tracing::info_span!(
        target: "crm_core::store",
        "crm.transaction",
        tenant = %tenant,
        backend,
        pool_wait_us = Empty,
        outcome = Empty,
    )
}

/// Starts timing what `begin` waits for, when `span` is recorded at all
/// (reading the clock costs about 0.1 µs on a virtual machine: a store
/// call without a subscriber does not pay it).
pub(crate) fn start_wait(span: &Span) -> Option<Instant> {
    (!span.is_disabled()).then(Instant::now)
}

/// Records on a transaction's span how long `begin` waited since
/// [`start_wait`].
pub(crate) fn record_wait(span: &Span, started: Option<Instant>) {
    if let Some(started) = started {
        record_wait_of(span, started.elapsed());
    }
}

fn record_wait_of(span: &Span, wait: Duration) {
    span.record(
        "pool_wait_us",
        u64::try_from(wait.as_micros()).unwrap_or(u64::MAX),
    );
}

/// Records that `begin` failed, and gives the error back.
#[cfg(feature = "postgres")]
pub(crate) fn begin_failed(span: &Span, e: crate::Error) -> crate::Error {
    span.record("outcome", "failed");
    e
}

/// Wraps a transaction that a backend of your own opened, so that it makes
/// the same spans as the built-in backends' transactions: a
/// `crm.transaction` span (for its tenant, with `backend` as given and
/// `pool_wait_us` from `wait`, what `begin` waited for a connection or a
/// lock) and a `crm.op` span per operation. Call it at the end of your
/// [`Store::begin`](super::Store::begin); see the
/// [`Store`](super::Store) documentation, **Tracing**.
///
/// Not for transactions of the built-in backends, which are wrapped
/// already: wrapping one again makes every span twice.
pub fn trace_transaction(
    tx: Box<dyn Transaction>,
    backend: &'static str,
    wait: Duration,
) -> Box<dyn Transaction> {
    let span = transaction_span(tx.tenant(), backend);
    record_wait_of(&span, wait);
    Traced::wrap(tx, span)
}

/// A transaction with spans around it: every method runs the inner
/// transaction's under a `crm.op` span. Every method is forwarded, the
/// defaulted ones included (a defaulted method left out would run the
/// trait's default over the wrapper instead of the backend's own).
pub(crate) struct Traced {
    inner: Box<dyn Transaction>,
    end: End,
}

/// The transaction's span, which records `dropped` when the transaction is
/// dropped before it was ended.
struct End {
    span: Span,
    ended: bool,
}

impl End {
    fn finish(mut self, outcome: &'static str) {
        self.span.record("outcome", outcome);
        self.ended = true;
    }
}

impl Drop for End {
    fn drop(&mut self) {
        if !self.ended {
            self.span.record("outcome", "dropped");
        }
    }
}

impl Traced {
    /// `inner` with `span` (from [`transaction_span`]) as its transaction
    /// span; `inner` itself when no subscriber wants that span, so that a
    /// host without one pays nothing per operation. (Its operations then
    /// make no spans either, even under a subscriber set meanwhile.)
    pub(crate) fn wrap(inner: Box<dyn Transaction>, span: Span) -> Box<dyn Transaction> {
        if span.is_disabled() {
            return inner;
        }
        Box::new(Traced {
            inner,
            end: End { span, ended: false },
        })
    }
}

/// The span of one operation of the transaction whose span is `parent`.
///
/// Made inside `parent` rather than with `parent` as its explicit parent:
/// a transaction begun under one subscriber and used under another (a
/// scoped default set meanwhile) would otherwise hand the second one a
/// span id it does not know, which `tracing-subscriber`'s registry refuses
/// with a panic.
fn op_span(parent: &Span, operation: &'static str) -> Span {
    parent.in_scope(|| {
        tracing::info_span!(
            target: "crm_core::store",
            "crm.op",
            operation,
            outcome = Empty,
            retryable = Empty,
        )
    })
}

/// Runs `fut` in `span` and records its outcome there before the span closes.
async fn run<T>(span: Span, fut: impl Future<Output = Result<T>>) -> Result<T> {
    let mut fut = pin!(fut.instrument(span));
    let out = fut.as_mut().await;
    let span = fut.span();
    match &out {
        Ok(_) => span.record("outcome", "ok"),
        Err(e) => span
            .record("outcome", kind_name(e.kind()))
            .record("retryable", e.is_retryable()),
    };
    out
}

/// An error kind as a span records it.
fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Validation => "validation",
        ErrorKind::DuplicateEmail => "duplicate_email",
        ErrorKind::Duplicate => "duplicate",
        ErrorKind::NotFound => "not_found",
        ErrorKind::Conflict => "conflict",
        ErrorKind::InvalidTransition => "invalid_transition",
        ErrorKind::Backend => "backend",
        ErrorKind::KeyInUse => "key_in_use",
        ErrorKind::FingerprintMismatch => "fingerprint_mismatch",
        ErrorKind::FeedExpired => "feed_expired",
        ErrorKind::UnmergeRefused => "unmerge_refused",
    }
}

impl fmt::Debug for Traced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The wrapper is not the host's business: show the transaction.
        self.inner.fmt(f)
    }
}

/// Implements an area trait for [`Traced`], each method forwarded under
/// its operation's span.
macro_rules! traced_area {
    ($area:ident {
        $(fn $name:ident(&mut self $(, $arg:ident: $ty:ty)* $(,)?) -> $out:ty;)*
    }) => {
        #[async_trait]
        impl $area for Traced {
            $(
                async fn $name(&mut self $(, $arg: $ty)*) -> Result<$out> {
                    let span = op_span(&self.end.span, stringify!($name));
                    run(span, self.inner.$name($($arg),*)).await
                }
            )*
        }
    };
}

traced_area!(ContactsTx {
    fn create_contact(&mut self, new: NewContact) -> Contact;
    fn get_contact(&mut self, id: ContactId) -> Option<Contact>;
    fn get_contacts(&mut self, ids: &[ContactId]) -> Vec<Contact>;
    fn get_contact_by_email(&mut self, email: &Email) -> Option<Contact>;
    fn get_contacts_by_email(&mut self, emails: &[Email]) -> Vec<Contact>;
    fn update_contact(&mut self, id: ContactId, expected: Version, patch: ContactPatch) -> Contact;
    fn deactivate_contact(&mut self, id: ContactId) -> Contact;
    fn delete_contact(&mut self, id: ContactId) -> bool;
    fn search_contacts(&mut self, query: &ContactQuery) -> Page<Contact>;
});

traced_area!(CompaniesTx {
    fn create_company(&mut self, new: NewCompany) -> Company;
    fn get_company(&mut self, id: CompanyId) -> Option<Company>;
    fn get_company_by_domain(&mut self, domain: &CompanyDomain) -> Option<Company>;
    fn update_company(&mut self, id: CompanyId, expected: Version, patch: CompanyPatch) -> Company;
    fn delete_company(&mut self, id: CompanyId) -> bool;
    fn merge_companies(&mut self, survivor: CompanyId, loser: CompanyId) -> Company;
    fn search_companies(&mut self, query: &CompanyQuery) -> Page<Company>;
    fn company_timeline(&mut self, company: CompanyId, page: &PageRequest) -> Page<Activity>;
    fn list_deals_for_company(&mut self, company: CompanyId, page: &PageRequest) -> Page<Deal>;
    fn pipeline_summary_for_company(
        &mut self,
        pipeline: &PipelineKey,
        company: CompanyId,
    ) -> PipelineSummary;
});

traced_area!(OwnersTx {
    fn reassign_owner(
        &mut self,
        from: &OwnerId,
        to: &OwnerId,
        kind: Option<RecordKind>,
    ) -> Reassigned;
});

traced_area!(TagsTx {
    fn create_tag(&mut self, new: NewTag) -> Tag;
    fn get_tag(&mut self, id: TagId) -> Option<Tag>;
    fn get_tag_by_name(&mut self, name: &TagName) -> Option<Tag>;
    fn list_tags(&mut self, page: &PageRequest) -> Page<Tag>;
    fn update_tag(&mut self, id: TagId, expected: Version, patch: TagPatch) -> Tag;
    fn delete_tag(&mut self, id: TagId) -> bool;
    fn attach_tag(&mut self, tag: TagId, record: RecordRef) -> bool;
    fn detach_tag(&mut self, tag: TagId, record: RecordRef) -> bool;
    fn tags_of(&mut self, record: RecordRef) -> Vec<Tag>;
    fn tags_of_many(&mut self, records: &[RecordRef]) -> Vec<Vec<Tag>>;
});

traced_area!(TasksTx {
    fn create_task(&mut self, new: NewTask) -> Task;
    fn get_task(&mut self, id: TaskId) -> Option<Task>;
    fn update_task(&mut self, id: TaskId, expected: Version, patch: TaskPatch) -> Task;
    fn complete_task(&mut self, id: TaskId, at: Timestamp) -> Task;
    fn reopen_task(&mut self, id: TaskId) -> Task;
    fn delete_task(&mut self, id: TaskId) -> bool;
    fn open_tasks(&mut self, assignee: &OwnerId, page: &PageRequest) -> Page<Task>;
    fn overdue_tasks(
        &mut self,
        now: Timestamp,
        assignee: Option<&OwnerId>,
        page: &PageRequest,
    ) -> Page<Task>;
    fn tasks_of(&mut self, record: RecordRef, page: &PageRequest) -> Page<Task>;
});

traced_area!(DealsTx {
    fn create_deal(&mut self, new: NewDeal) -> Deal;
    fn get_deal(&mut self, id: DealId) -> Option<Deal>;
    fn get_deals(&mut self, ids: &[DealId]) -> Vec<Deal>;
    fn update_deal(&mut self, id: DealId, expected: Version, patch: DealPatch) -> Deal;
    fn move_deal(
        &mut self,
        id: DealId,
        expected: Version,
        to: &StageKey,
        lost_reason: Option<LostReason>,
    ) -> Deal;
    fn reopen_deal(&mut self, id: DealId, expected: Version, to: &StageKey) -> Deal;
    fn delete_deal(&mut self, id: DealId) -> bool;
    fn list_deals_for_contact(&mut self, contact: ContactId, page: &PageRequest) -> Page<Deal>;
    fn first_deal_pages(&mut self, contacts: &[ContactId], limit: u32) -> Vec<Page<Deal>>;
    fn list_deals_in_stage(
        &mut self,
        pipeline: &PipelineKey,
        stage: &StageKey,
        page: &PageRequest,
    ) -> Page<Deal>;
    fn search_deals(&mut self, query: &DealQuery) -> Page<Deal>;
    fn pipeline_summary(&mut self, pipeline: &PipelineKey) -> PipelineSummary;
});

traced_area!(TimelineTx {
    fn log_activity(&mut self, new: NewActivity) -> Activity;
    fn log_activities(&mut self, new: &[NewActivity]) -> Vec<Activity>;
    fn timeline(&mut self, contact: ContactId, page: &PageRequest) -> Page<Activity>;
    fn first_timeline_pages(&mut self, contacts: &[ContactId], limit: u32) -> Vec<Page<Activity>>;
    fn record_signal(&mut self, new: NewSignal) -> Signal;
    fn record_signals(&mut self, new: &[NewSignal]) -> Vec<Signal>;
    fn list_signals(&mut self, contact: ContactId) -> Vec<Signal>;
    fn signals_of_many(&mut self, contacts: &[ContactId]) -> Vec<Vec<Signal>>;
});

traced_area!(HistoryTx {
    fn entity_history(&mut self, entity: HistoryEntity, page: &PageRequest) -> Page<HistoryEntry>;
    fn entity_as_of(&mut self, entity: HistoryEntity, at: Timestamp) -> Option<HistoryEntry>;
    fn field_changes(&mut self, query: &FieldQuery) -> Page<HistoryEntry>;
    fn changes_between(
        &mut self,
        from: Timestamp,
        until: Timestamp,
        page: &PageRequest,
    ) -> Page<HistoryEntry>;
    fn purge_history(&mut self, before: Timestamp) -> u64;
    fn erase_contact(&mut self, id: ContactId) -> Contact;
});

traced_area!(FeedTx {
    fn next_batch(&mut self, consumer: &ConsumerName, max: usize) -> Vec<FeedEvent>;
    fn ack(&mut self, consumer: &ConsumerName, position: FeedPosition) -> ();
    fn consumer_position(&mut self, consumer: &ConsumerName) -> FeedPosition;
    fn events_after(&mut self, after: FeedPosition, max: usize) -> Vec<FeedEvent>;
    fn feed_head(&mut self) -> FeedPosition;
    fn purge_feed(&mut self, before: Timestamp) -> u64;
});

traced_area!(ExternalIdsTx {
    fn link_external_ids(&mut self, system: &ExternalSystem, links: &[ExternalLink]) -> u64;
    fn unlink_external_ids(
        &mut self,
        system: &ExternalSystem,
        kind: EntityKind,
        records: &[uuid::Uuid],
    ) -> u64;
    fn external_ids(
        &mut self,
        system: &ExternalSystem,
        kind: EntityKind,
        records: &[uuid::Uuid],
    ) -> std::collections::HashMap<uuid::Uuid, ExternalId>;
    fn records_by_external_id(
        &mut self,
        system: &ExternalSystem,
        kind: EntityKind,
        external: &[ExternalId],
    ) -> std::collections::HashMap<ExternalId, uuid::Uuid>;
    fn sync_window(&mut self, system: &ExternalSystem, kind: EntityKind) -> Option<Timestamp>;
    fn set_sync_window(&mut self, system: &ExternalSystem, kind: EntityKind, at: Timestamp) -> ();
});

traced_area!(FreshnessTx {
    fn freshness(&mut self, contact: ContactId) -> Option<Freshness>;
    fn verify_contact(&mut self, contact: ContactId, fields: &[FreshField]) -> Freshness;
    fn stale_contacts(&mut self, query: &StaleQuery) -> Page<StaleContact>;
});

traced_area!(IdempotencyTx {
    fn claim_idempotency_key(&mut self, claim: &IdempotencyClaim) -> Claim;
    fn defer_idempotency_claim(&mut self, claim: &IdempotencyClaim) -> Option<Claim>;
    fn resolve_idempotency_claim(&mut self) -> Claim;
    fn complete_idempotency_key(
        &mut self,
        source: &IdempotencySource,
        key: &IdempotencyKey,
        result: &StoredResult,
        completed_at: Timestamp,
    ) -> IdempotencyRecord;
    fn get_idempotency_record(
        &mut self,
        source: &IdempotencySource,
        key: &IdempotencyKey,
    ) -> Option<IdempotencyRecord>;
    fn list_idempotency_records(
        &mut self,
        source: &IdempotencySource,
        page: &PageRequest,
    ) -> Page<IdempotencyRecord>;
    fn purge_idempotency_records(&mut self, now: Timestamp, limit: u32) -> u64;
});

traced_area!(BulkTx {
    fn upsert_contacts(&mut self, rows: &[NewContact], policy: ConflictPolicy) -> Vec<UpsertOutcome>;
    fn lock_for_import(&mut self, lock: ImportLock) -> ();
    fn merge_contacts(
        &mut self,
        survivor: ContactId,
        loser: ContactId,
        policy: ConflictPolicy,
    ) -> Contact;
    fn contact_merges(&mut self, contact: ContactId) -> Vec<MergeRecord>;
    fn unmerge_contacts(&mut self, merge: MergeId, conflicts: UnmergeConflicts) -> Unmerged;
});

traced_area!(ScoringTx {
    fn write_scores(&mut self, scores: &[ContactScore]) -> u64;
    fn scoring_inputs(&mut self, request: &InputsRequest) -> Vec<ContactInputs>;
    fn lock_live_states(&mut self, request: &InputsRequest) -> Vec<ContactId>;
    fn live_score_log(&mut self, id: ContactId) -> Option<LiveState>;
    fn live_top_leads(&mut self, limit: u32) -> Vec<LiveRanked>;
    fn live_top_accounts(&mut self, limit: u32) -> Vec<LiveRankedAccount>;
    fn write_live_score_logs(&mut self, states: &[LiveState]) -> u64;
});

#[async_trait]
impl Transaction for Traced {
    fn tenant(&self) -> TenantId {
        self.inner.tenant()
    }

    fn context(&self) -> &Context {
        self.inner.context()
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        let Traced { inner, end } = *self;
        let out = run(op_span(&end.span, "commit"), inner.commit()).await;
        end.finish(if out.is_ok() { "committed" } else { "failed" });
        out
    }

    async fn rollback(self: Box<Self>) -> Result<()> {
        let Traced { inner, end } = *self;
        let out = run(op_span(&end.span, "rollback"), inner.rollback()).await;
        end.finish(if out.is_ok() { "rolled_back" } else { "failed" });
        out
    }

    fn end_with_next_statement(&mut self) {
        self.inner.end_with_next_statement();
    }

    async fn complete_idempotency_key_and_commit(
        self: Box<Self>,
        source: &IdempotencySource,
        key: &IdempotencyKey,
        result: &StoredResult,
        completed_at: Timestamp,
    ) -> Result<IdempotencyRecord> {
        let Traced { inner, end } = *self;
        let span = op_span(&end.span, "complete_idempotency_key_and_commit");
        let out = run(
            span,
            inner.complete_idempotency_key_and_commit(source, key, result, completed_at),
        )
        .await;
        end.finish(if out.is_ok() { "committed" } else { "failed" });
        out
    }
}
