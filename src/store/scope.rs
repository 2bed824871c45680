//! [`Scope`]: a store seen by one tenant acting as one [`Context`], with
//! every operation of the contract as one call.

use std::fmt;

#[cfg(doc)]
use super::{BulkTx, ContactsTx, DealsTx, HistoryTx, StoreExt, TimelineTx};
#[cfg(doc)]
use super::{CompaniesTx, FreshnessTx, OwnersTx, TagsTx, TasksTx};
use super::{
    CompanyQuery, ContactQuery, DealQuery, PipelineSummary, Reassigned, Store, Transaction,
};
use crate::{
    domain::{
        Activity, Company, CompanyDomain, CompanyId, CompanyPatch, ConflictPolicy, Contact,
        ContactId, ContactPatch, Context, Deal, DealId, DealPatch, Email, FieldQuery,
        HistoryEntity, HistoryEntry, LostReason, NewActivity, NewCompany, NewContact, NewDeal,
        NewSignal, NewTag, NewTask, OwnerId, Page, PageRequest, PipelineKey, RecordKind, RecordRef,
        Signal, StageKey, Tag, TagId, TagName, TagPatch, Task, TaskId, TaskPatch, TenantId,
        Timestamp, UpsertOutcome, Version,
    },
    domain::{FreshField, Freshness, StaleContact, StaleQuery},
    error::{Entity, Error, Result},
};

/// A store seen by one tenant, acting as one [`Context`]: what host code
/// holds while it serves one request. Each call opens a transaction of its
/// own, does one thing, and commits (or, for a read, ends the transaction
/// without writing); a failed call rolls back, and has ended its
/// transaction when it returns. For several operations that must commit
/// together, [`begin`](Scope::begin) a [`Transaction`].
///
/// Made by [`StoreExt::scope`](super::StoreExt::scope):
///
/// ```
/// use crm_core::{Actor, Context, InMemoryStore, StoreExt, TenantId};
/// use crm_core::domain::{Currency, DealTitle, Email, LostReason, Money, NewContact, NewDeal, PersonName, StageKey};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store = InMemoryStore::new();
/// let ctx = Context::new(Actor::parse("user:ada")?);
/// let crm = store.scope(TenantId::new(), &ctx);
///
/// let grace = crm
///     .create_contact(NewContact::new(
///         Email::parse("grace@example.com")?,
///         PersonName::parse("Grace")?,
///         PersonName::parse("Hopper")?,
///     ))
///     .await?;
/// let title = DealTitle::parse("Compiler licence")?;
/// let deal = crm.create_deal(NewDeal::new(grace.id, title, Money::parse("12000", Currency::parse("USD")?)?)).await?;
/// let deal = crm.move_deal(deal.id, deal.version, StageKey::PROPOSAL).await?;
/// let deal = crm.lose_deal(deal.id, deal.version, LostReason::parse("went with a competitor")?).await?;
/// assert_eq!(deal.stage, StageKey::CLOSED_LOST);
/// # Ok::<_, crm_core::Error>(())
/// # }).unwrap();
/// ```
pub struct Scope<'s, S: ?Sized> {
    store: &'s S,
    tenant: TenantId,
    context: Context,
}

impl<S: ?Sized> Clone for Scope<'_, S> {
    fn clone(&self) -> Self {
        Scope {
            store: self.store,
            tenant: self.tenant,
            context: self.context.clone(),
        }
    }
}

impl<S: ?Sized> fmt::Debug for Scope<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scope")
            .field("tenant", &self.tenant)
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

/// Ends `tx` after a write: commits when `out` is `Ok`, else rolls back and
/// waits for the rollback, so that what the transaction held is released
/// when the call returns.
async fn write<T>(tx: Box<dyn Transaction>, out: Result<T>) -> Result<T> {
    match out {
        Ok(value) => {
            tx.commit().await?;
            Ok(value)
        }
        Err(e) => {
            // The operation's error is the one to report; a failed
            // rollback means the connection is gone, which ends it too.
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

/// Ends `tx` after a read. A read has nothing to commit, so the transaction
/// is dropped, which rolls it back: on PostgreSQL the rollback goes out
/// without the caller waiting for its answer, saving a round trip.
fn read<T>(tx: Box<dyn Transaction>, out: Result<T>) -> Result<T> {
    drop(tx);
    out
}

macro_rules! one_call {
    ($(
        $(#[$doc:meta])*
        $kind:ident $name:ident($($arg:ident: $ty:ty),*) -> $out:ty;
    )*) => {$(
        $(#[$doc])*
        pub async fn $name(&self, $($arg: $ty),*) -> Result<$out> {
            let mut tx = one_call!(@begin $kind self);
            let out = tx.$name($($arg),*).await;
            one_call!(@end $kind tx, out)
        }
    )*};
    (@begin write $scope:ident) => { $scope.begin().await? };
    (@begin read $scope:ident) => { $scope.begin_read().await? };
    (@begin read_one $scope:ident) => {{
        let mut tx = $scope.begin_read().await?;
        tx.end_with_next_statement();
        tx
    }};
    (@end write $tx:ident, $out:ident) => { write($tx, $out).await };
    (@end read $tx:ident, $out:ident) => { read($tx, $out) };
    (@end read_one $tx:ident, $out:ident) => { read($tx, $out) };
}

impl<'s, S: Store + ?Sized> Scope<'s, S> {
    /// `store` seen by `tenant`, acting as `context`.
    pub fn new(store: &'s S, tenant: TenantId, context: Context) -> Self {
        Scope {
            store,
            tenant,
            context,
        }
    }

    /// The tenant.
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// Who is acting.
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// The same tenant acting as `context` (another actor, reason or request id).
    pub fn with_context(&self, context: Context) -> Self {
        Scope {
            store: self.store,
            tenant: self.tenant,
            context,
        }
    }

    /// The store.
    pub fn store(&self) -> &'s S {
        self.store
    }

    /// Opens a transaction for this tenant and context, for several
    /// operations that commit together.
    pub async fn begin(&self) -> Result<Box<dyn Transaction>> {
        self.store.begin(self.tenant, self.context.clone()).await
    }

    /// Opens a transaction for this tenant that will only read
    /// ([`Store::begin_read`]), for several reads on one connection. On
    /// PostgreSQL it is `READ ONLY`: a write in it fails.
    pub async fn begin_read(&self) -> Result<Box<dyn Transaction>> {
        self.store
            .begin_read(self.tenant, self.context.clone())
            .await
    }

    one_call! {
        /// See [`FreshnessTx::freshness`].
        read freshness(contact: ContactId) -> Option<Freshness>;
        /// See [`FreshnessTx::verify_contact`].
        write verify_contact(contact: ContactId, fields: &[FreshField]) -> Freshness;
        /// See [`FreshnessTx::stale_contacts`].
        read stale_contacts(query: &StaleQuery) -> Page<StaleContact>;
    }

    one_call! {
        /// See [`ContactsTx::create_contact`].
        write create_contact(new: NewContact) -> Contact;
        /// See [`ContactsTx::get_contact`].
        read_one get_contact(id: ContactId) -> Option<Contact>;
        /// See [`ContactsTx::get_contact_by_email`].
        read get_contact_by_email(email: &Email) -> Option<Contact>;
        /// See [`ContactsTx::update_contact`].
        write update_contact(id: ContactId, expected: Version, patch: ContactPatch) -> Contact;
        /// See [`ContactsTx::deactivate_contact`].
        write deactivate_contact(id: ContactId) -> Contact;
        /// See [`ContactsTx::delete_contact`].
        write delete_contact(id: ContactId) -> bool;
        /// See [`ContactsTx::search_contacts`].
        read_one search_contacts(query: &ContactQuery) -> Page<Contact>;

        /// See [`CompaniesTx::create_company`].
        write create_company(new: NewCompany) -> Company;
        /// See [`CompaniesTx::get_company`].
        read get_company(id: CompanyId) -> Option<Company>;
        /// See [`CompaniesTx::get_company_by_domain`].
        read get_company_by_domain(domain: &CompanyDomain) -> Option<Company>;
        /// See [`CompaniesTx::update_company`].
        write update_company(id: CompanyId, expected: Version, patch: CompanyPatch) -> Company;
        /// See [`CompaniesTx::delete_company`].
        write delete_company(id: CompanyId) -> bool;
        /// See [`CompaniesTx::merge_companies`].
        write merge_companies(survivor: CompanyId, loser: CompanyId) -> Company;
        /// See [`CompaniesTx::search_companies`].
        read search_companies(query: &CompanyQuery) -> Page<Company>;
        /// See [`CompaniesTx::company_timeline`].
        read company_timeline(company: CompanyId, page: &PageRequest) -> Page<Activity>;
        /// See [`CompaniesTx::list_deals_for_company`].
        read list_deals_for_company(company: CompanyId, page: &PageRequest) -> Page<Deal>;
        /// See [`CompaniesTx::pipeline_summary_for_company`].
        read pipeline_summary_for_company(pipeline: &PipelineKey, company: CompanyId) -> PipelineSummary;
        /// See [`OwnersTx::reassign_owner`].
        write reassign_owner(from: &OwnerId, to: &OwnerId, kind: Option<RecordKind>) -> Reassigned;

        /// See [`TagsTx::create_tag`].
        write create_tag(new: NewTag) -> Tag;
        /// See [`TagsTx::get_tag`].
        read get_tag(id: TagId) -> Option<Tag>;
        /// See [`TagsTx::get_tag_by_name`].
        read get_tag_by_name(name: &TagName) -> Option<Tag>;
        /// See [`TagsTx::list_tags`].
        read list_tags(page: &PageRequest) -> Page<Tag>;
        /// See [`TagsTx::update_tag`].
        write update_tag(id: TagId, expected: Version, patch: TagPatch) -> Tag;
        /// See [`TagsTx::delete_tag`].
        write delete_tag(id: TagId) -> bool;
        /// See [`TagsTx::attach_tag`].
        write attach_tag(tag: TagId, record: RecordRef) -> bool;
        /// See [`TagsTx::detach_tag`].
        write detach_tag(tag: TagId, record: RecordRef) -> bool;
        /// See [`TagsTx::tags_of`].
        read tags_of(record: RecordRef) -> Vec<Tag>;
        /// See [`TagsTx::tags_of_many`].
        read tags_of_many(records: &[RecordRef]) -> Vec<Vec<Tag>>;

        /// See [`TasksTx::create_task`].
        write create_task(new: NewTask) -> Task;
        /// See [`TasksTx::get_task`].
        read get_task(id: TaskId) -> Option<Task>;
        /// See [`TasksTx::update_task`].
        write update_task(id: TaskId, expected: Version, patch: TaskPatch) -> Task;
        /// See [`TasksTx::complete_task`].
        write complete_task(id: TaskId, at: Timestamp) -> Task;
        /// See [`TasksTx::reopen_task`].
        write reopen_task(id: TaskId) -> Task;
        /// See [`TasksTx::delete_task`].
        write delete_task(id: TaskId) -> bool;
        /// See [`TasksTx::open_tasks`].
        read_one open_tasks(assignee: &OwnerId, page: &PageRequest) -> Page<Task>;
        /// See [`TasksTx::overdue_tasks`].
        read overdue_tasks(now: Timestamp, assignee: Option<&OwnerId>, page: &PageRequest) -> Page<Task>;
        /// See [`TasksTx::tasks_of`].
        read tasks_of(record: RecordRef, page: &PageRequest) -> Page<Task>;

        /// See [`DealsTx::create_deal`].
        write create_deal(new: NewDeal) -> Deal;
        /// See [`DealsTx::get_deal`].
        read get_deal(id: DealId) -> Option<Deal>;
        /// See [`DealsTx::update_deal`].
        write update_deal(id: DealId, expected: Version, patch: DealPatch) -> Deal;
        /// See [`DealsTx::delete_deal`].
        write delete_deal(id: DealId) -> bool;
        /// See [`DealsTx::list_deals_for_contact`].
        read list_deals_for_contact(contact: ContactId, page: &PageRequest) -> Page<Deal>;
        /// See [`DealsTx::first_deal_pages`].
        read first_deal_pages(contacts: &[ContactId], limit: u32) -> Vec<Page<Deal>>;
        /// See [`DealsTx::list_deals_in_stage`].
        read list_deals_in_stage(pipeline: &PipelineKey, stage: &StageKey, page: &PageRequest) -> Page<Deal>;
        /// See [`DealsTx::search_deals`].
        read search_deals(query: &DealQuery) -> Page<Deal>;
        /// See [`DealsTx::pipeline_summary`].
        read pipeline_summary(pipeline: &PipelineKey) -> PipelineSummary;

        /// See [`TimelineTx::log_activity`].
        write log_activity(new: NewActivity) -> Activity;
        /// See [`TimelineTx::log_activities`].
        write log_activities(new: &[NewActivity]) -> Vec<Activity>;
        /// See [`TimelineTx::timeline`].
        read_one timeline(contact: ContactId, page: &PageRequest) -> Page<Activity>;
        /// See [`TimelineTx::first_timeline_pages`].
        read first_timeline_pages(contacts: &[ContactId], limit: u32) -> Vec<Page<Activity>>;
        /// See [`TimelineTx::record_signal`].
        write record_signal(new: NewSignal) -> Signal;
        /// See [`TimelineTx::record_signals`].
        write record_signals(new: &[NewSignal]) -> Vec<Signal>;
        /// See [`TimelineTx::list_signals`].
        read list_signals(contact: ContactId) -> Vec<Signal>;
        /// See [`TimelineTx::signals_of_many`].
        read signals_of_many(contacts: &[ContactId]) -> Vec<Vec<Signal>>;

        /// See [`HistoryTx::entity_as_of`].
        read entity_as_of(entity: HistoryEntity, at: Timestamp) -> Option<HistoryEntry>;
        /// See [`HistoryTx::field_changes`].
        read field_changes(query: &FieldQuery) -> Page<HistoryEntry>;
        /// See [`HistoryTx::changes_between`].
        read changes_between(from: Timestamp, until: Timestamp, page: &PageRequest) -> Page<HistoryEntry>;
        /// See [`HistoryTx::purge_history`].
        write purge_history(before: Timestamp) -> u64;
        /// See [`HistoryTx::erase_contact`].
        write erase_contact(id: ContactId) -> Contact;

        /// See [`BulkTx::upsert_contacts`].
        write upsert_contacts(rows: &[NewContact], policy: ConflictPolicy) -> Vec<UpsertOutcome>;
        /// See [`BulkTx::merge_contacts`].
        write merge_contacts(survivor: ContactId, loser: ContactId, policy: ConflictPolicy) -> Contact;
        /// See [`BulkTx::contact_merges`].
        read contact_merges(contact: ContactId) -> Vec<crate::domain::MergeRecord>;
        /// See [`BulkTx::unmerge_contacts`].
        write unmerge_contacts(
            merge: crate::domain::MergeId,
            conflicts: crate::domain::UnmergeConflicts
        ) -> crate::domain::Unmerged;
    }

    /// The versions of one contact or deal, newest first: see
    /// [`HistoryTx::entity_history`].
    pub async fn entity_history(
        &self,
        entity: impl Into<HistoryEntity>,
        page: &PageRequest,
    ) -> Result<Page<HistoryEntry>> {
        let entity = entity.into();
        let mut tx = self.begin_read().await?;
        let out = tx.entity_history(entity, page).await;
        read(tx, out)
    }

    /// Moves a deal to open or won stage `to` along the stage machine:
    /// see [`DealsTx::move_deal`]. Losing a deal takes a reason:
    /// [`lose_deal`](Self::lose_deal).
    pub async fn move_deal(
        &self,
        id: DealId,
        expected: Version,
        to: impl AsRef<StageKey>,
    ) -> Result<Deal> {
        let mut tx = self.begin().await?;
        let out = tx.move_deal(id, expected, to.as_ref(), None).await;
        write(tx, out).await
    }

    /// Wins a deal: moves it to its pipeline's won stage
    /// ([`Pipeline::won_stage`](crate::domain::Pipeline::won_stage)).
    ///
    /// Errors: those of [`DealsTx::move_deal`].
    pub async fn win_deal(&self, id: DealId, expected: Version) -> Result<Deal> {
        self.close_deal(id, expected, None).await
    }

    /// Loses a deal for `reason`: moves it to its pipeline's lost stage
    /// ([`Pipeline::lost_stage`](crate::domain::Pipeline::lost_stage)).
    ///
    /// Errors: those of [`DealsTx::move_deal`].
    pub async fn lose_deal(
        &self,
        id: DealId,
        expected: Version,
        reason: LostReason,
    ) -> Result<Deal> {
        self.close_deal(id, expected, Some(reason)).await
    }

    async fn close_deal(
        &self,
        id: DealId,
        expected: Version,
        lost: Option<LostReason>,
    ) -> Result<Deal> {
        let mut tx = self.begin().await?;
        let out = async {
            let deal = tx
                .get_deal(id)
                .await?
                .ok_or_else(|| Error::not_found(Entity::Deal, id))?;
            // A pipeline the store does not know is a validation error on
            // `pipeline`, as every deal operation reports it.
            let pipeline = super::shared::pipeline(self.store.pipelines(), &deal.pipeline)?;
            let to = match lost {
                Some(_) => pipeline.lost_stage(),
                None => pipeline.won_stage(),
            }
            .key
            .clone();
            tx.move_deal(id, expected, &to, lost).await
        }
        .await;
        write(tx, out).await
    }

    /// Reopens a closed deal into open stage `to`: see [`DealsTx::reopen_deal`].
    pub async fn reopen_deal(
        &self,
        id: DealId,
        expected: Version,
        to: impl AsRef<StageKey>,
    ) -> Result<Deal> {
        let mut tx = self.begin().await?;
        let out = tx.reopen_deal(id, expected, to.as_ref()).await;
        write(tx, out).await
    }
}
