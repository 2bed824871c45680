//! `InMemoryStore`: the whole contract in process memory, for tests, examples
//! and small tools.
//!
//! Transactions are serialized: a transaction holds the store's lock from
//! `begin` until it commits, rolls back or is dropped, and keeps an undo log
//! so that a rollback (or a drop) restores exactly what it changed. This
//! gives every transaction a serializable view with no partial writes.
//! Because of that, a task must not open a second transaction on the same
//! store while it holds one: the second `begin` waits for the first to end.
//!
//! This file holds the store, the tenant data with its indexes, the undo
//! log and what ends a transaction; each area of [`Transaction`] is
//! implemented in a file of its own ([`ContactsTx`](crate::store::ContactsTx)
//! in `contacts.rs`, and so on).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    ops::Bound,
    sync::Arc,
};

use async_trait::async_trait;
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::{Store, Transaction, shared::now as shared_now, traced};
use crate::{
    domain::{
        Activity, ActivityId, Company, CompanyId, Contact, ContactId, Context, Deal, DealId,
        PipelineKey, Pipelines, RecordRef, Score, Signal, SignalId, StageKey, Tag, TagId, Tagging,
        Task, TaskId, TenantId, caseless_key,
    },
    error::{Entity, Error, Result},
};

mod bulk;
mod companies;
mod contacts;
mod deals;
mod external;
mod feed;
mod freshness;
mod history;
mod idempotency;
mod merges;
mod scoring;
mod tags;
mod tasks;
mod timeline;

/// A [`Store`] in process memory, with the same semantics as the PostgreSQL
/// backend. Cheap to clone: clones share the same data.
#[derive(Clone)]
pub struct InMemoryStore {
    state: Arc<Mutex<State>>,
    pipelines: Arc<Pipelines>,
    live_scoring: Option<Arc<crate::scoring::ScoringModel>>,
    company_linking: bool,
    /// Score write-backs are feed events.
    score_events: bool,
    /// Counts the commits that wrote feed events: subscribers wait on it.
    feed_wake: Arc<tokio::sync::watch::Sender<u64>>,
}

impl fmt::Debug for InMemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryStore")
            .field("pipelines", &self.pipelines)
            .finish_non_exhaustive()
    }
}

impl Default for InMemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryStore {
    /// An empty store that knows the default pipeline.
    pub fn new() -> Self {
        Self::with_pipelines(Pipelines::default())
    }

    /// An empty store that knows `pipelines`.
    pub fn with_pipelines(pipelines: Pipelines) -> Self {
        InMemoryStore {
            state: Arc::new(Mutex::new(State::default())),
            pipelines: Arc::new(pipelines),
            live_scoring: Some(Arc::new(crate::scoring::ScoringModel::default())),
            company_linking: true,
            score_events: false,
            feed_wake: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }

    /// The same store keeping live scores with `model` (the reference model
    /// by default), or keeping none with `None`. See [`crate::scoring::live`].
    pub fn with_live_scoring(mut self, model: Option<crate::scoring::ScoringModel>) -> Self {
        self.live_scoring = model.map(Arc::new);
        self
    }

    /// Wake-ups for [`crate::feed::subscribe`]: one whenever a transaction
    /// that wrote feed events commits (in any tenant).
    pub fn feed_wake_ups(&self) -> crate::feed::WakeUps {
        let mut rx = self.feed_wake.subscribe();
        rx.mark_unchanged();
        Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.changed().await.ok()?;
            Some(((), rx))
        }))
    }

    /// The same store linking (`true`, the default) or not linking new
    /// contacts to a company by their email's domain: a contact created or
    /// imported without a company, whose email's domain is not a free-mail
    /// one, is linked to the company with that domain, if there is one.
    pub fn with_company_linking(mut self, on: bool) -> Self {
        self.company_linking = on;
        self
    }

    /// The same store announcing (`true`) or not (`false`, the default)
    /// score write-backs in the change feed, as
    /// [`PostgresStore::with_score_events`](crate::PostgresStore::with_score_events)
    /// does: every stored score that
    /// [`ScoringTx::write_scores`](crate::store::ScoringTx::write_scores)
    /// changes is then an event of kind
    /// [`FeedKind::Score`](crate::domain::FeedKind::Score).
    pub fn with_score_events(mut self, on: bool) -> Self {
        self.score_events = on;
        self
    }
}

#[async_trait]
impl Store for InMemoryStore {
    async fn begin(&self, tenant: TenantId, context: Context) -> Result<Box<dyn Transaction>> {
        let span = traced::transaction_span(tenant, "memory");
        let started = traced::start_wait(&span);
        let guard = Arc::clone(&self.state).lock_owned().await;
        traced::record_wait(&span, started);
        let tx = Box::new(MemoryTransaction {
            guard: Some(guard),
            tenant,
            context,
            undo: Vec::new(),
            pipelines: Arc::clone(&self.pipelines),
            live_scoring: self.live_scoring.clone(),
            company_linking: self.company_linking,
            score_events: self.score_events,
            feed_wake: Arc::clone(&self.feed_wake),
        });
        Ok(traced::Traced::wrap(tx, span))
    }

    fn pipelines(&self) -> &Pipelines {
        &self.pipelines
    }
}

#[derive(Default)]
struct State {
    tenants: HashMap<TenantId, TenantData>,
}

type SignalKey = (ContactId, i64, SignalId);

/// One tenant's records and the indexes the queries walk.
#[derive(Default)]
struct TenantData {
    contacts: HashMap<ContactId, Contact>,
    by_email: HashMap<String, ContactId>,
    by_score: BTreeSet<(Score, ContactId)>,
    /// The name sort's index: caseless keys of last and first name, id.
    by_name: BTreeSet<(String, String, ContactId)>,
    /// The caseless keys of each contact's names and company.
    keys: HashMap<ContactId, NameKeys>,
    deals: HashMap<DealId, Deal>,
    deals_by_contact: BTreeSet<(ContactId, i64, DealId)>,
    deals_by_stage: BTreeSet<(PipelineKey, StageKey, i64, DealId)>,
    activities: HashMap<ActivityId, Activity>,
    timeline: BTreeSet<(ContactId, i64, ActivityId)>,
    signals: BTreeMap<SignalKey, Signal>,
    history: history::MemoryHistory,
    feed: feed::MemoryFeed,
    /// Ids in external systems and sync windows.
    external: external::ExternalIds,
    idempotency: idempotency::Records,
    live_scores: HashMap<ContactId, f64>,
    /// Each contact's freshness, and the stale order over it.
    freshness: HashMap<ContactId, crate::domain::Freshness>,
    by_freshness: BTreeSet<(crate::domain::FreshnessKey, ContactId)>,
    companies: HashMap<CompanyId, Company>,
    /// Companies by normalised domain.
    companies_by_domain: HashMap<String, CompanyId>,
    tags: HashMap<TagId, Tag>,
    /// Tags by the caseless key of their name.
    tags_by_key: HashMap<String, TagId>,
    /// Who carries which tag, by record then tag.
    taggings: BTreeMap<(RecordRef, TagId), Tagging>,
    tasks: HashMap<TaskId, Task>,
    /// The merge journal.
    merges: BTreeMap<crate::domain::MergeId, crate::domain::MergeJournalEntry>,
}

/// The caseless keys of a contact's names and company, kept beside it so
/// that searches do not compute them again.
struct NameKeys {
    first: String,
    last: String,
    company: Option<String>,
}

impl NameKeys {
    fn of(c: &Contact) -> Self {
        NameKeys {
            first: caseless_key(c.first_name.as_str()),
            last: caseless_key(c.last_name.as_str()),
            company: c.company.as_ref().map(|co| caseless_key(co.as_str())),
        }
    }
}

impl TenantData {
    /// `contact`'s activities, oldest first.
    pub(super) fn activities_of(&self, contact: ContactId) -> impl Iterator<Item = &Activity> {
        self.timeline
            .range(
                (contact, i64::MIN, ActivityId::from_uuid(uuid::Uuid::nil()))
                    ..=(contact, i64::MAX, ActivityId::from_uuid(uuid::Uuid::max())),
            )
            .filter_map(|k| self.activities.get(&k.2))
    }

    /// `contact`'s signals, oldest first.
    pub(super) fn signals_of(&self, contact: ContactId) -> impl Iterator<Item = &Signal> {
        self.signals
            .range(
                (contact, i64::MIN, SignalId::from_uuid(uuid::Uuid::nil()))
                    ..=(contact, i64::MAX, SignalId::from_uuid(uuid::Uuid::max())),
            )
            .map(|(_, s)| s)
    }

    /// Replaces (or removes, with `None`) a contact, keeping the indexes; returns the previous value.
    fn put_contact(&mut self, id: ContactId, value: Option<Contact>) -> Option<Contact> {
        let old = self.contacts.remove(&id);
        if let Some(o) = &old {
            self.by_email.remove(o.email.normalized());
            self.by_score.remove(&(o.score, id));
            if let Some(k) = self.keys.remove(&id) {
                self.by_name.remove(&(k.last, k.first, id));
            }
        }
        if let Some(n) = value {
            self.by_email.insert(n.email.normalized().to_string(), id);
            self.by_score.insert((n.score, id));
            let keys = NameKeys::of(&n);
            self.by_name
                .insert((keys.last.clone(), keys.first.clone(), id));
            self.keys.insert(id, keys);
            self.contacts.insert(id, n);
        }
        old
    }

    fn put_deal(&mut self, id: DealId, value: Option<Deal>) -> Option<Deal> {
        let old = self.deals.remove(&id);
        if let Some(o) = &old {
            let t = o.created_at.timestamp_micros();
            self.deals_by_contact.remove(&(o.contact_id, t, id));
            self.deals_by_stage
                .remove(&(o.pipeline.clone(), o.stage.clone(), t, id));
        }
        if let Some(n) = value {
            let t = n.created_at.timestamp_micros();
            self.deals_by_contact.insert((n.contact_id, t, id));
            self.deals_by_stage
                .insert((n.pipeline.clone(), n.stage.clone(), t, id));
            self.deals.insert(id, n);
        }
        old
    }

    fn put_activity(&mut self, id: ActivityId, value: Option<Activity>) -> Option<Activity> {
        let old = self.activities.remove(&id);
        if let Some(o) = &old {
            self.timeline
                .remove(&(o.contact_id, o.occurred_at.timestamp_micros(), id));
        }
        if let Some(n) = value {
            self.timeline
                .insert((n.contact_id, n.occurred_at.timestamp_micros(), id));
            self.activities.insert(id, n);
        }
        old
    }

    fn put_company(&mut self, id: CompanyId, value: Option<Company>) -> Option<Company> {
        let old = self.companies.remove(&id);
        if let Some(d) = old.as_ref().and_then(|o| o.domain.as_ref()) {
            self.companies_by_domain.remove(d.as_str());
        }
        if let Some(n) = value {
            if let Some(d) = &n.domain {
                self.companies_by_domain.insert(d.as_str().to_string(), id);
            }
            self.companies.insert(id, n);
        }
        old
    }

    fn put_tag(&mut self, id: TagId, value: Option<Tag>) -> Option<Tag> {
        let old = self.tags.remove(&id);
        if let Some(o) = &old {
            self.tags_by_key.remove(&o.name.key());
        }
        if let Some(n) = value {
            self.tags_by_key.insert(n.name.key(), id);
            self.tags.insert(id, n);
        }
        old
    }

    fn put_tagging(&mut self, key: (RecordRef, TagId), value: Option<Tagging>) -> Option<Tagging> {
        match value {
            Some(t) => self.taggings.insert(key, t),
            None => self.taggings.remove(&key),
        }
    }

    fn put_task(&mut self, id: TaskId, value: Option<Task>) -> Option<Task> {
        match value {
            Some(t) => self.tasks.insert(id, t),
            None => self.tasks.remove(&id),
        }
    }

    /// The tags `record` carries.
    fn carried_tags(&self, record: RecordRef) -> BTreeSet<TagId> {
        let lo = (record, TagId::from_uuid(uuid::Uuid::nil()));
        let hi = (record, TagId::from_uuid(uuid::Uuid::max()));
        self.taggings.range(lo..=hi).map(|(k, _)| k.1).collect()
    }

    fn put_signal(&mut self, key: SignalKey, value: Option<Signal>) -> Option<Signal> {
        match value {
            Some(s) => self.signals.insert(key, s),
            None => self.signals.remove(&key),
        }
    }
}

/// What to restore on rollback: the previous value of one record.
enum Undo {
    Contact(TenantId, ContactId, Option<Contact>),
    Deal(TenantId, DealId, Option<Deal>),
    Activity(TenantId, ActivityId, Option<Activity>),
    Signal(TenantId, SignalKey, Option<Signal>),
    LiveScore(TenantId, ContactId, Option<f64>),
    Freshness(TenantId, ContactId, Option<crate::domain::Freshness>),
    Company(TenantId, CompanyId, Option<Company>),
    Tag(TenantId, TagId, Option<Tag>),
    Tagging(TenantId, (RecordRef, TagId), Option<Tagging>),
    Task(TenantId, TaskId, Option<Task>),
    History(
        TenantId,
        history::EntryKey,
        Option<Box<crate::history::HistoryEntry>>,
    ),
    Idempotency(
        TenantId,
        idempotency::RecordKey,
        Option<Box<crate::idempotency::IdempotencyRecord>>,
    ),
    Feed(TenantId, feed::FeedUndo),
    External(TenantId, external::ExternalUndo),
    Merge(
        TenantId,
        crate::domain::MergeId,
        Option<Box<crate::domain::MergeJournalEntry>>,
    ),
}

/// A transaction of [`InMemoryStore`]: holds the store's lock until it
/// ends, and the undo log of what it changed.
struct MemoryTransaction {
    guard: Option<OwnedMutexGuard<State>>,
    tenant: TenantId,
    context: Context,
    undo: Vec<Undo>,
    pipelines: Arc<Pipelines>,
    live_scoring: Option<Arc<crate::scoring::ScoringModel>>,
    /// New contacts without a company are linked to the company of their
    /// email's domain.
    company_linking: bool,
    /// Score write-backs are feed events.
    score_events: bool,
    /// Wakes the feed's subscribers when a commit wrote events.
    feed_wake: Arc<tokio::sync::watch::Sender<u64>>,
}

impl fmt::Debug for MemoryTransaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryTransaction")
            .field("tenant", &self.tenant)
            .field("context", &self.context)
            .field("pending_changes", &self.undo.len())
            .finish()
    }
}

impl Drop for MemoryTransaction {
    fn drop(&mut self) {
        if let Some(mut guard) = self.guard.take() {
            roll_back(&mut guard, std::mem::take(&mut self.undo));
        }
    }
}

fn roll_back(state: &mut State, undo: Vec<Undo>) {
    for u in undo.into_iter().rev() {
        match u {
            Undo::Contact(t, id, v) => {
                state.tenants.entry(t).or_default().put_contact(id, v);
            }
            Undo::Deal(t, id, v) => {
                state.tenants.entry(t).or_default().put_deal(id, v);
            }
            Undo::Activity(t, id, v) => {
                state.tenants.entry(t).or_default().put_activity(id, v);
            }
            Undo::Signal(t, key, v) => {
                state.tenants.entry(t).or_default().put_signal(key, v);
            }
            Undo::Company(t, id, v) => {
                state.tenants.entry(t).or_default().put_company(id, v);
            }
            Undo::Tag(t, id, v) => {
                state.tenants.entry(t).or_default().put_tag(id, v);
            }
            Undo::Tagging(t, key, v) => {
                state.tenants.entry(t).or_default().put_tagging(key, v);
            }
            Undo::Task(t, id, v) => {
                state.tenants.entry(t).or_default().put_task(id, v);
            }
            Undo::LiveScore(t, id, v) => {
                scoring::put_live(state.tenants.entry(t).or_default(), id, v);
            }
            Undo::Freshness(t, id, v) => {
                freshness::put_fresh(state.tenants.entry(t).or_default(), id, v);
            }
            Undo::History(t, key, v) => {
                state
                    .tenants
                    .entry(t)
                    .or_default()
                    .history
                    .put(key, v.map(|e| *e));
            }
            Undo::Feed(t, u) => {
                state.tenants.entry(t).or_default().feed.undo(u);
            }
            Undo::External(t, u) => {
                state.tenants.entry(t).or_default().external.undo(u);
            }
            Undo::Merge(t, id, v) => {
                let merges = &mut state.tenants.entry(t).or_default().merges;
                match v {
                    Some(e) => merges.insert(id, *e),
                    None => merges.remove(&id),
                };
            }
            Undo::Idempotency(t, key, v) => {
                state
                    .tenants
                    .entry(t)
                    .or_default()
                    .idempotency
                    .put(key, v.map(|r| *r));
            }
        }
    }
}

fn finished() -> Error {
    Error::backend("the transaction has already ended")
}

static EMPTY: std::sync::LazyLock<TenantData> = std::sync::LazyLock::new(TenantData::default);

impl MemoryTransaction {
    /// Runs an operation of several writes so that, if it fails, none of
    /// its writes stays: they are undone from the undo log.
    fn atomic<T>(&mut self, operation: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let mark = self.undo.len();
        let result = operation(self);
        if result.is_err() {
            let undo = self.undo.split_off(mark);
            if let Some(guard) = self.guard.as_mut() {
                roll_back(guard, undo);
            }
        }
        result
    }

    fn data(&self) -> Result<&TenantData> {
        let guard = self.guard.as_ref().ok_or_else(finished)?;
        Ok(guard.tenants.get(&self.tenant).unwrap_or(&EMPTY))
    }

    fn data_mut(&mut self) -> Result<&mut TenantData> {
        let tenant = self.tenant;
        let guard = self.guard.as_mut().ok_or_else(finished)?;
        Ok(guard.tenants.entry(tenant).or_default())
    }

    /// Replaces (or removes, with `None`) a contact, recording the change
    /// in the history and in the undo log; `set_deal`, `set_activity` and
    /// `set_signal` do the same for their records (the last two keep no
    /// history).
    fn set_contact(&mut self, id: ContactId, value: Option<Contact>) -> Result<()> {
        let tenant = self.tenant;
        let old = self.data_mut()?.put_contact(id, value);
        self.record_contact(id, old.as_ref(), None)?;
        let fresh = self.fresh_follow(id, old.as_ref());
        self.undo.push(Undo::Contact(tenant, id, old));
        fresh
    }

    fn set_deal(&mut self, id: DealId, value: Option<Deal>) -> Result<()> {
        let tenant = self.tenant;
        let old = self.data_mut()?.put_deal(id, value);
        self.record_deal(id, old.as_ref())?;
        self.undo.push(Undo::Deal(tenant, id, old));
        Ok(())
    }

    fn set_activity(&mut self, id: ActivityId, value: Option<Activity>) -> Result<()> {
        let tenant = self.tenant;
        let present = value.is_some();
        let old = self.data_mut()?.put_activity(id, value);
        let changed = old.is_some() || present;
        let operation = log_operation(old.is_some(), present);
        self.undo.push(Undo::Activity(tenant, id, old));
        if changed {
            self.feed_write(
                crate::domain::FeedKind::Activity,
                id.as_uuid(),
                operation,
                None,
                None,
                None,
            )?;
        }
        Ok(())
    }

    fn set_signal(&mut self, key: SignalKey, value: Option<Signal>) -> Result<()> {
        let tenant = self.tenant;
        let present = value.is_some();
        let old = self.data_mut()?.put_signal(key, value);
        let changed = old.is_some() || present;
        let operation = log_operation(old.is_some(), present);
        self.undo.push(Undo::Signal(tenant, key, old));
        if changed {
            self.feed_write(
                crate::domain::FeedKind::Signal,
                key.2.as_uuid(),
                operation,
                None,
                None,
                None,
            )?;
        }
        Ok(())
    }

    /// Replaces (or removes) a company, recording the change in the
    /// history and the undo log; `set_tag`, `set_tagging` and `set_task`
    /// do the same for theirs.
    fn set_company(&mut self, id: CompanyId, value: Option<Company>) -> Result<()> {
        let tenant = self.tenant;
        let old = self.data_mut()?.put_company(id, value);
        let new = self
            .data()?
            .companies
            .get(&id)
            .map(crate::history::company_values);
        self.record(
            crate::history::HistoryEntity::Company(id),
            old.as_ref().map(crate::history::company_values),
            new,
            None,
        )?;
        self.undo.push(Undo::Company(tenant, id, old));
        Ok(())
    }

    fn set_tag(&mut self, id: TagId, value: Option<Tag>) -> Result<()> {
        let tenant = self.tenant;
        let old = self.data_mut()?.put_tag(id, value);
        let new = self.data()?.tags.get(&id).map(crate::history::tag_values);
        self.record(
            crate::history::HistoryEntity::Tag(id),
            old.as_ref().map(crate::history::tag_values),
            new,
            None,
        )?;
        self.undo.push(Undo::Tag(tenant, id, old));
        Ok(())
    }

    fn set_tagging(&mut self, key: (RecordRef, TagId), value: Option<Tagging>) -> Result<()> {
        let tenant = self.tenant;
        let entity = value.as_ref().map(|t| t.id);
        let new = value.as_ref().map(crate::history::tagging_values);
        let old = self.data_mut()?.put_tagging(key, value);
        if let Some(id) = entity.or(old.as_ref().map(|t| t.id)) {
            self.record(
                crate::history::HistoryEntity::Tagging(id),
                old.as_ref().map(crate::history::tagging_values),
                new,
                None,
            )?;
        }
        self.undo.push(Undo::Tagging(tenant, key, old));
        Ok(())
    }

    /// Attaches to `to` every tag `from` carries and `to` does not (each a
    /// new tagging, recorded, keeping when the tag was attached): what a
    /// merge does before it deletes `from` with its taggings.
    fn copy_taggings(&mut self, from: RecordRef, to: RecordRef) -> Result<()> {
        let data = self.data()?;
        let kept = data.carried_tags(to);
        let copies: Vec<Tagging> = data
            .carried_tags(from)
            .into_iter()
            .filter(|tag| !kept.contains(tag))
            .filter_map(|tag| data.taggings.get(&(from, tag)))
            .map(|t| Tagging {
                id: crate::domain::TaggingId::new(),
                record: to,
                ..t.clone()
            })
            .collect();
        for t in copies {
            self.set_tagging((to, t.tag_id), Some(t))?;
        }
        Ok(())
    }

    fn set_task(&mut self, id: TaskId, value: Option<Task>) -> Result<()> {
        let tenant = self.tenant;
        let old = self.data_mut()?.put_task(id, value);
        let new = self.data()?.tasks.get(&id).map(crate::history::task_values);
        self.record(
            crate::history::HistoryEntity::Task(id),
            old.as_ref().map(crate::history::task_values),
            new,
            None,
        )?;
        self.undo.push(Undo::Task(tenant, id, old));
        Ok(())
    }

    fn company(&self, id: CompanyId) -> Result<&Company> {
        self.data()?
            .companies
            .get(&id)
            .ok_or_else(|| Error::not_found(Entity::Company, id))
    }

    fn tag(&self, id: TagId) -> Result<&Tag> {
        self.data()?
            .tags
            .get(&id)
            .ok_or_else(|| Error::not_found(Entity::Tag, id))
    }

    fn task(&self, id: TaskId) -> Result<&Task> {
        self.data()?
            .tasks
            .get(&id)
            .ok_or_else(|| Error::not_found(Entity::Task, id))
    }

    fn contact(&self, id: ContactId) -> Result<&Contact> {
        self.data()?
            .contacts
            .get(&id)
            .ok_or_else(|| Error::not_found(Entity::Contact, id))
    }

    fn deal(&self, id: DealId) -> Result<&Deal> {
        self.data()?
            .deals
            .get(&id)
            .ok_or_else(|| Error::not_found(Entity::Deal, id))
    }
}

/// The feed's operation for an activity or signal that was there before
/// (`old`) or not, and is there now (`new`) or not.
fn log_operation(old: bool, new: bool) -> crate::history::Operation {
    use crate::history::Operation;
    match (old, new) {
        (false, _) => Operation::Created,
        (true, true) => Operation::Updated,
        (true, false) => Operation::Deleted,
    }
}

/// Pages through `set` (ordered ascending) backwards, i.e. newest first,
/// within `lo..=hi`, starting strictly before `cursor`.
fn page_desc<K: Ord + Clone, T>(
    set: &BTreeSet<K>,
    lo: K,
    hi: K,
    cursor: Option<K>,
    limit: usize,
    fetch: impl Fn(&K) -> Option<T>,
) -> Vec<T> {
    let upper = match cursor {
        Some(c) if c <= hi => Bound::Excluded(c),
        _ => Bound::Included(hi),
    };
    set.range((Bound::Included(lo), upper))
        .rev()
        .take(limit + 1)
        .filter_map(fetch)
        .collect()
}

#[async_trait]
impl Transaction for MemoryTransaction {
    fn tenant(&self) -> TenantId {
        self.tenant
    }

    fn context(&self) -> &Context {
        &self.context
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        self.undo.clear();
        let mut guard = self.guard.take().ok_or_else(finished)?;
        let wrote = guard
            .tenants
            .get_mut(&self.tenant)
            .is_some_and(|t| t.feed.commit_pending(shared_now()));
        drop(guard);
        if wrote {
            self.feed_wake.send_modify(|n| *n = n.wrapping_add(1));
        }
        Ok(())
    }

    async fn rollback(mut self: Box<Self>) -> Result<()> {
        let mut guard = self.guard.take().ok_or_else(finished)?;
        roll_back(&mut guard, std::mem::take(&mut self.undo));
        Ok(())
    }
}
