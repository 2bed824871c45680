//! `InMemoryStore`: the whole contract in process memory, for tests, examples
//! and small tools.
//!
//! Transactions are serialized: a transaction holds the store's lock from
//! `begin` until it commits, rolls back or is dropped, and keeps an undo log
//! so that a rollback (or a drop) restores exactly what it changed. This
//! gives every transaction a serializable view with no partial writes.
//! Because of that, a task must not open a second transaction on the same
//! store while it holds one: the second `begin` waits for the first to end.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    ops::Bound,
    sync::Arc,
};

use async_trait::async_trait;
use chrono::Utc;
use rust_decimal::Decimal;
use tokio::sync::{Mutex, OwnedMutexGuard};
use uuid::Uuid;

use super::{
    ContactQuery, ContactSort, ContactSortKey, CursorList, Page, PageRequest, PipelineSummary,
    Store, TimeIdKey, Transaction,
};
use crate::{
    domain::{
        Activity, ActivityId, Contact, ContactId, ContactPatch, Context, Deal, DealId, DealPatch,
        Email, LostReason, NewActivity, NewContact, NewDeal, NewSignal, PipelineKey, Pipelines,
        Score, Signal, SignalId, StageKey, TenantId, Timestamp, Version, caseless_key,
        check_timestamp, check_timestamps, truncate_to_micros,
    },
    error::{Entity, Error, Result, ValidationErrors},
    prelude::*,
};

mod bulk;
mod history;
mod idempotency;
mod scoring;

/// A [`Store`] in process memory, with the same semantics as the PostgreSQL
/// backend. Cheap to clone: clones share the same data.
#[derive(Clone)]
pub struct InMemoryStore {
    state: Arc<Mutex<State>>,
    pipelines: Arc<Pipelines>,
    live_scoring: Option<Arc<crate::scoring::ScoringModel>>,
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
        }
    }

    /// The same store keeping live scores with `model` (the reference model
    /// by default), or keeping none with `None`. See [`crate::scoring::live`].
    pub fn with_live_scoring(mut self, model: Option<crate::scoring::ScoringModel>) -> Self {
        self.live_scoring = model.map(Arc::new);
        self
    }
}

#[async_trait]
impl Store for InMemoryStore {
    async fn begin(&self, tenant: TenantId, context: Context) -> Result<Box<dyn Transaction>> {
        let guard = Arc::clone(&self.state).lock_owned().await;
        Ok(Box::new(MemoryTransaction {
            guard: Some(guard),
            tenant,
            context,
            undo: Vec::new(),
            pipelines: Arc::clone(&self.pipelines),
            live_scoring: self.live_scoring.clone(),
        }))
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
    idempotency: idempotency::Records,
    live_scores: HashMap<ContactId, f64>,
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
}

struct MemoryTransaction {
    guard: Option<OwnedMutexGuard<State>>,
    tenant: TenantId,
    context: Context,
    undo: Vec<Undo>,
    pipelines: Arc<Pipelines>,
    live_scoring: Option<Arc<crate::scoring::ScoringModel>>,
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
            Undo::LiveScore(t, id, v) => {
                scoring::put_live(state.tenants.entry(t).or_default(), id, v);
            }
            Undo::History(t, key, v) => {
                state
                    .tenants
                    .entry(t)
                    .or_default()
                    .history
                    .put(key, v.map(|e| *e));
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

fn now() -> Timestamp {
    truncate_to_micros(Utc::now())
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

    fn set_contact(&mut self, id: ContactId, value: Option<Contact>) -> Result<()> {
        let tenant = self.tenant;
        let old = self.data_mut()?.put_contact(id, value);
        self.record_contact(id, old.as_ref(), None)?;
        self.undo.push(Undo::Contact(tenant, id, old));
        Ok(())
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
        let old = self.data_mut()?.put_activity(id, value);
        self.undo.push(Undo::Activity(tenant, id, old));
        Ok(())
    }

    fn set_signal(&mut self, key: SignalKey, value: Option<Signal>) -> Result<()> {
        let tenant = self.tenant;
        let old = self.data_mut()?.put_signal(key, value);
        self.undo.push(Undo::Signal(tenant, key, old));
        Ok(())
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

    /// Fails with `DuplicateEmail` when another contact than `except` holds `email`.
    fn check_email_free(&self, email: &Email, except: Option<ContactId>) -> Result<()> {
        match self.data()?.by_email.get(email.normalized()) {
            Some(existing) if Some(*existing) != except => Err(Error::DuplicateEmail {
                email: email.clone(),
                existing_id: *existing,
            }),
            _ => Ok(()),
        }
    }

    fn pipeline(&self, key: &PipelineKey) -> Result<crate::domain::Pipeline> {
        self.pipelines
            .require("pipeline", key)
            .cloned()
            .map_err(|e| ValidationErrors::single(e).into())
    }

    fn replace_deal(&mut self, next: Deal) -> Result<Deal> {
        self.set_deal(next.id, Some(next.clone()))?;
        Ok(next)
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

fn matches(q: &ContactQuery, c: &Contact, keys: Option<&NameKeys>) -> bool {
    let starts = |key: Option<&str>, prefix: &Option<String>| {
        prefix
            .as_ref()
            .is_none_or(|p| key.is_some_and(|k| k.starts_with(&caseless_key(p))))
    };
    starts(Some(c.email.normalized()), &q.email_prefix)
        && (starts(keys.map(|k| k.first.as_str()), &q.name_prefix)
            || starts(keys.map(|k| k.last.as_str()), &q.name_prefix))
        && starts(keys.and_then(|k| k.company.as_deref()), &q.company_prefix)
        && (q.lead_sources.is_empty() || q.lead_sources.contains(&c.lead_source))
        && q.min_score.is_none_or(|m| c.score >= m)
        && q.max_score.is_none_or(|m| c.score <= m)
        && q.active.is_none_or(|a| c.active == a)
        && q.created_from.is_none_or(|t| c.created_at >= t)
        && q.created_until.is_none_or(|t| c.created_at < t)
        && q.updated_from.is_none_or(|t| c.updated_at >= t)
        && q.updated_until.is_none_or(|t| c.updated_at < t)
        && q.metadata_contains
            .as_ref()
            .is_none_or(|m| c.metadata.contains(m))
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
        self.guard.take().ok_or_else(finished)?;
        Ok(())
    }

    async fn rollback(mut self: Box<Self>) -> Result<()> {
        let mut guard = self.guard.take().ok_or_else(finished)?;
        roll_back(&mut guard, std::mem::take(&mut self.undo));
        Ok(())
    }
}

#[async_trait]
impl ContactsTx for MemoryTransaction {
    async fn create_contact(&mut self, new: NewContact) -> Result<Contact> {
        self.check_email_free(&new.email, None)?;
        let contact = Contact::create(self.tenant, new, now());
        self.set_contact(contact.id, Some(contact.clone()))?;
        Ok(contact)
    }

    async fn get_contact(&mut self, id: ContactId) -> Result<Option<Contact>> {
        Ok(self.data()?.contacts.get(&id).cloned())
    }

    async fn get_contact_by_email(&mut self, email: &Email) -> Result<Option<Contact>> {
        let data = self.data()?;
        Ok(data
            .by_email
            .get(email.normalized())
            .and_then(|id| data.contacts.get(id))
            .cloned())
    }

    async fn update_contact(
        &mut self,
        id: ContactId,
        expected: Version,
        patch: ContactPatch,
    ) -> Result<Contact> {
        let current = self.contact(id)?.clone();
        crate::store::shared::check_version(Entity::Contact, id, expected, current.version)?;
        if let Some(email) = &patch.email {
            self.check_email_free(email, Some(id))?;
        }
        match current.patched(&patch, now()) {
            None => Ok(current),
            Some(next) => {
                self.set_contact(id, Some(next.clone()))?;
                Ok(next)
            }
        }
    }

    async fn deactivate_contact(&mut self, id: ContactId) -> Result<Contact> {
        let current = self.contact(id)?.clone();
        let patch = ContactPatch {
            active: Some(false),
            ..ContactPatch::default()
        };
        match current.patched(&patch, now()) {
            None => Ok(current),
            Some(next) => {
                self.set_contact(id, Some(next.clone()))?;
                Ok(next)
            }
        }
    }

    async fn delete_contact(&mut self, id: ContactId) -> Result<bool> {
        let data = self.data()?;
        if !data.contacts.contains_key(&id) {
            return Ok(false);
        }
        let deals: Vec<DealId> = data
            .deals_by_contact
            .range(
                (id, i64::MIN, DealId::from_uuid(Uuid::nil()))
                    ..=(id, i64::MAX, DealId::from_uuid(Uuid::max())),
            )
            .map(|k| k.2)
            .collect();
        let activities: Vec<ActivityId> = data
            .timeline
            .range(
                (id, i64::MIN, ActivityId::from_uuid(Uuid::nil()))
                    ..=(id, i64::MAX, ActivityId::from_uuid(Uuid::max())),
            )
            .map(|k| k.2)
            .collect();
        let signals: Vec<SignalKey> = data
            .signals
            .range(
                (id, i64::MIN, SignalId::from_uuid(Uuid::nil()))
                    ..=(id, i64::MAX, SignalId::from_uuid(Uuid::max())),
            )
            .map(|(k, _)| *k)
            .collect();
        self.atomic(|tx| {
            for a in activities {
                tx.set_activity(a, None)?;
            }
            for s in signals {
                tx.set_signal(s, None)?;
            }
            for d in deals {
                tx.set_deal(d, None)?;
            }
            tx.set_contact(id, None)
        })?;
        Ok(true)
    }

    async fn search_contacts(&mut self, q: &ContactQuery) -> Result<Page<Contact>> {
        let q = &*q.checked()?;
        let limit = q.page.checked_limit()?;
        let after: Option<ContactSortKey> = q.page.position(CursorList::contacts(q))?;
        let data = self.data()?;
        let desc = q.sort.is_descending();
        let past_cursor = |key: &ContactSortKey| match &after {
            None => true,
            Some(a) if desc => key < a,
            Some(a) => key > a,
        };
        let matching = |c: &&Contact| matches(q, c, data.keys.get(&c.id));
        let items: Vec<Contact> = match q.sort {
            ContactSort::ScoreAsc | ContactSort::ScoreDesc => {
                // Walk the score index in order; stop once the page is full.
                let iter: Box<dyn Iterator<Item = &(Score, ContactId)>> = if desc {
                    Box::new(data.by_score.iter().rev())
                } else {
                    Box::new(data.by_score.iter())
                };
                iter.filter_map(|(_, id)| data.contacts.get(id))
                    .filter(|c| past_cursor(&ContactSortKey::of(q.sort, c)))
                    .filter(matching)
                    .take(limit + 1)
                    .cloned()
                    .collect()
            }
            ContactSort::NameAsc | ContactSort::NameDesc => {
                // Walk the name index from the cursor on.
                let from = match &after {
                    Some(ContactSortKey::Name(last, first, id)) => {
                        Bound::Excluded((last.clone(), first.clone(), ContactId::from_uuid(*id)))
                    }
                    _ => Bound::Unbounded,
                };
                let iter: Box<dyn Iterator<Item = &(String, String, ContactId)>> = if desc {
                    Box::new(data.by_name.range((Bound::Unbounded, from)).rev())
                } else {
                    Box::new(data.by_name.range((from, Bound::Unbounded)))
                };
                iter.filter_map(|(_, _, id)| data.contacts.get(id))
                    .filter(matching)
                    .take(limit + 1)
                    .cloned()
                    .collect()
            }
            _ => {
                let mut keyed: Vec<(ContactSortKey, &Contact)> = data
                    .contacts
                    .values()
                    .filter(matching)
                    .map(|c| (ContactSortKey::of(q.sort, c), c))
                    .filter(|(k, _)| past_cursor(k))
                    .collect();
                keyed.sort_by(|a, b| if desc { b.0.cmp(&a.0) } else { a.0.cmp(&b.0) });
                keyed
                    .into_iter()
                    .take(limit + 1)
                    .map(|(_, c)| c.clone())
                    .collect()
            }
        };
        Ok(Page::from_overfetch(
            items,
            limit,
            CursorList::contacts(q),
            |c| match q.sort {
                ContactSort::NameAsc | ContactSort::NameDesc => match data.keys.get(&c.id) {
                    Some(k) => {
                        ContactSortKey::Name(k.last.clone(), k.first.clone(), c.id.as_uuid())
                    }
                    None => ContactSortKey::of(q.sort, c),
                },
                _ => ContactSortKey::of(q.sort, c),
            },
        ))
    }
}

#[async_trait]
impl DealsTx for MemoryTransaction {
    async fn create_deal(&mut self, new: NewDeal) -> Result<Deal> {
        let new = new.checked()?;
        let pipeline = self.pipeline(&new.pipeline)?;
        self.contact(new.contact_id)?;
        let deal = Deal::create(self.tenant, new, &pipeline, now())?;
        self.replace_deal(deal)
    }

    async fn get_deal(&mut self, id: DealId) -> Result<Option<Deal>> {
        Ok(self.data()?.deals.get(&id).cloned())
    }

    async fn update_deal(
        &mut self,
        id: DealId,
        expected: Version,
        patch: DealPatch,
    ) -> Result<Deal> {
        let patch = patch.checked()?;
        let current = self.deal(id)?.clone();
        crate::store::shared::check_version(Entity::Deal, id, expected, current.version)?;
        match current.patched(&patch, now()) {
            None => Ok(current),
            Some(next) => self.replace_deal(next),
        }
    }

    async fn move_deal(
        &mut self,
        id: DealId,
        expected: Version,
        to: &StageKey,
        lost_reason: Option<LostReason>,
    ) -> Result<Deal> {
        let current = self.deal(id)?.clone();
        crate::store::shared::check_version(Entity::Deal, id, expected, current.version)?;
        let pipeline = self.pipeline(&current.pipeline)?;
        let next = current.moved(&pipeline, to, lost_reason, now())?;
        self.replace_deal(next)
    }

    async fn reopen_deal(&mut self, id: DealId, expected: Version, to: &StageKey) -> Result<Deal> {
        let current = self.deal(id)?.clone();
        crate::store::shared::check_version(Entity::Deal, id, expected, current.version)?;
        let pipeline = self.pipeline(&current.pipeline)?;
        let next = current.reopened(&pipeline, to, now())?;
        self.replace_deal(next)
    }

    async fn delete_deal(&mut self, id: DealId) -> Result<bool> {
        let Some(deal) = self.data()?.deals.get(&id).cloned() else {
            return Ok(false);
        };
        let c = deal.contact_id;
        let linked: Vec<Activity> = self
            .data()?
            .timeline
            .range(
                (c, i64::MIN, ActivityId::from_uuid(Uuid::nil()))
                    ..=(c, i64::MAX, ActivityId::from_uuid(Uuid::max())),
            )
            .filter_map(|k| self.data().ok()?.activities.get(&k.2))
            .filter(|a| a.deal_id == Some(id))
            .cloned()
            .collect();
        for mut a in linked {
            a.deal_id = None;
            self.set_activity(a.id, Some(a))?;
        }
        self.set_deal(id, None)?;
        Ok(true)
    }

    async fn list_deals_for_contact(
        &mut self,
        contact: ContactId,
        page: &PageRequest,
    ) -> Result<Page<Deal>> {
        let limit = page.checked_limit()?;
        let after: Option<TimeIdKey> = page.position(CursorList::deals_of_contact(contact))?;
        let data = self.data()?;
        let items = page_desc(
            &data.deals_by_contact,
            (contact, i64::MIN, DealId::from_uuid(Uuid::nil())),
            (contact, i64::MAX, DealId::from_uuid(Uuid::max())),
            after.map(|(t, id)| (contact, t, DealId::from_uuid(id))),
            limit,
            |k| data.deals.get(&k.2).cloned(),
        );
        Ok(Page::from_overfetch(
            items,
            limit,
            CursorList::deals_of_contact(contact),
            |d: &Deal| (d.created_at.timestamp_micros(), d.id.as_uuid()),
        ))
    }

    async fn list_deals_in_stage(
        &mut self,
        pipeline: &PipelineKey,
        stage: &StageKey,
        page: &PageRequest,
    ) -> Result<Page<Deal>> {
        let limit = page.checked_limit()?;
        let after: Option<TimeIdKey> =
            page.position(CursorList::deals_in_stage(pipeline, stage))?;
        let data = self.data()?;
        let key = |t: i64, id: Uuid| (pipeline.clone(), stage.clone(), t, DealId::from_uuid(id));
        let items = page_desc(
            &data.deals_by_stage,
            key(i64::MIN, Uuid::nil()),
            key(i64::MAX, Uuid::max()),
            after.map(|(t, id)| key(t, id)),
            limit,
            |k| data.deals.get(&k.3).cloned(),
        );
        Ok(Page::from_overfetch(
            items,
            limit,
            CursorList::deals_in_stage(pipeline, stage),
            |d: &Deal| (d.created_at.timestamp_micros(), d.id.as_uuid()),
        ))
    }

    async fn pipeline_summary(&mut self, pipeline: &PipelineKey) -> Result<PipelineSummary> {
        let def = self.pipeline(pipeline)?;
        let mut totals: BTreeMap<(StageKey, crate::domain::Currency), (u64, Decimal)> =
            BTreeMap::new();
        for d in self
            .data()?
            .deals
            .values()
            .filter(|d| &d.pipeline == pipeline)
        {
            let e = totals
                .entry((d.stage.clone(), d.amount.currency()))
                .or_insert((0, Decimal::ZERO));
            e.0 += 1;
            e.1 += d.amount.amount();
        }
        Ok(PipelineSummary::from_totals(
            &def,
            totals.into_iter().map(|((s, c), (n, sum))| (s, c, n, sum)),
        ))
    }
}

#[async_trait]
impl TimelineTx for MemoryTransaction {
    async fn log_activity(&mut self, new: NewActivity) -> Result<Activity> {
        let new = new.checked()?;
        self.contact(new.contact_id)?;
        if let Some(deal_id) = new.deal_id {
            let deal = self.deal(deal_id)?;
            if deal.contact_id != new.contact_id {
                return Err(crate::domain::deal_of_another_contact().into());
            }
        }
        let activity = Activity::create(self.tenant, new, now());
        self.atomic(|tx| {
            tx.set_activity(activity.id, Some(activity.clone()))?;
            tx.live_add_activity(&activity)
        })?;
        Ok(activity)
    }

    async fn timeline(&mut self, contact: ContactId, page: &PageRequest) -> Result<Page<Activity>> {
        let limit = page.checked_limit()?;
        let after: Option<TimeIdKey> = page.position(CursorList::timeline(contact))?;
        let data = self.data()?;
        let items = page_desc(
            &data.timeline,
            (contact, i64::MIN, ActivityId::from_uuid(Uuid::nil())),
            (contact, i64::MAX, ActivityId::from_uuid(Uuid::max())),
            after.map(|(t, id)| (contact, t, ActivityId::from_uuid(id))),
            limit,
            |k| data.activities.get(&k.2).cloned(),
        );
        Ok(Page::from_overfetch(
            items,
            limit,
            CursorList::timeline(contact),
            |a: &Activity| (a.occurred_at.timestamp_micros(), a.id.as_uuid()),
        ))
    }

    async fn record_signal(&mut self, new: NewSignal) -> Result<Signal> {
        let new = new.checked()?;
        self.contact(new.contact_id)?;
        let signal = Signal::create(self.tenant, new, now());
        self.atomic(|tx| {
            tx.set_signal(
                (
                    signal.contact_id,
                    signal.occurred_at.timestamp_micros(),
                    signal.id,
                ),
                Some(signal.clone()),
            )?;
            tx.live_add_signal(&signal)
        })?;
        Ok(signal)
    }

    async fn list_signals(&mut self, contact: ContactId) -> Result<Vec<Signal>> {
        let lo = (contact, i64::MIN, SignalId::from_uuid(Uuid::nil()));
        let hi = (contact, i64::MAX, SignalId::from_uuid(Uuid::max()));
        Ok(self
            .data()?
            .signals
            .range(lo..=hi)
            .map(|(_, s)| s.clone())
            .collect())
    }
}

#[async_trait]
impl HistoryTx for MemoryTransaction {
    async fn entity_history(
        &mut self,
        entity: crate::history::HistoryEntity,
        page: &PageRequest,
    ) -> Result<Page<crate::history::HistoryEntry>> {
        self.history_page(entity, page)
    }

    async fn entity_as_of(
        &mut self,
        entity: crate::history::HistoryEntity,
        at: Timestamp,
    ) -> Result<Option<crate::history::HistoryEntry>> {
        let at = check_timestamp("at", at)?;
        self.history_as_of(entity, at)
    }

    async fn field_changes(
        &mut self,
        query: &crate::history::FieldQuery,
    ) -> Result<Page<crate::history::HistoryEntry>> {
        query.check()?;
        self.history_field_changes(query)
    }

    async fn changes_between(
        &mut self,
        from: Timestamp,
        until: Timestamp,
        page: &PageRequest,
    ) -> Result<Page<crate::history::HistoryEntry>> {
        let [from, until] = check_timestamps([("from", from), ("until", until)])?;
        self.history_between(from, until, page)
    }

    async fn purge_history(&mut self, before: Timestamp) -> Result<u64> {
        let before = check_timestamp("before", before)?;
        self.history_purge(before)
    }

    async fn erase_contact(&mut self, id: ContactId) -> Result<Contact> {
        self.atomic(|tx| tx.history_erase_contact(id))
    }
}

#[async_trait]
impl IdempotencyTx for MemoryTransaction {
    async fn claim_idempotency_key(
        &mut self,
        claim: &crate::idempotency::IdempotencyClaim,
    ) -> Result<crate::idempotency::Claim> {
        let claim = claim.checked()?;
        self.claim_idempotency(&claim)
    }

    async fn complete_idempotency_key(
        &mut self,
        source: &crate::idempotency::IdempotencySource,
        key: &crate::idempotency::IdempotencyKey,
        result: &crate::idempotency::StoredResult,
        completed_at: Timestamp,
    ) -> Result<crate::idempotency::IdempotencyRecord> {
        let completed_at = check_timestamp("completed_at", completed_at)?;
        result.check()?;
        self.complete_idempotency(source, key, result, completed_at)
    }

    async fn get_idempotency_record(
        &mut self,
        source: &crate::idempotency::IdempotencySource,
        key: &crate::idempotency::IdempotencyKey,
    ) -> Result<Option<crate::idempotency::IdempotencyRecord>> {
        self.get_idempotency(source, key)
    }

    async fn list_idempotency_records(
        &mut self,
        source: &crate::idempotency::IdempotencySource,
        page: &PageRequest,
    ) -> Result<Page<crate::idempotency::IdempotencyRecord>> {
        self.list_idempotency(source, page)
    }

    async fn purge_idempotency_records(&mut self, now: Timestamp, limit: u32) -> Result<u64> {
        let now = check_timestamp("now", now)?;
        self.purge_idempotency(now, limit)
    }
}

#[async_trait]
impl BulkTx for MemoryTransaction {
    async fn upsert_contacts(
        &mut self,
        rows: &[NewContact],
        policy: crate::bulk::ConflictPolicy,
    ) -> Result<Vec<crate::bulk::UpsertOutcome>> {
        self.atomic(|tx| tx.bulk_upsert_contacts(rows, policy))
    }

    async fn merge_contacts(
        &mut self,
        survivor: ContactId,
        loser: ContactId,
        policy: crate::bulk::ConflictPolicy,
    ) -> Result<Contact> {
        self.atomic(|tx| tx.bulk_merge_contacts(survivor, loser, policy))
    }
}

#[async_trait]
impl ScoringTx for MemoryTransaction {
    async fn write_scores(&mut self, scores: &[(ContactId, Score)]) -> Result<u64> {
        // One score per contact, the last one given for it: a contact
        // listed twice is written (and counted) once.
        let mut last: HashMap<ContactId, Score> = HashMap::with_capacity(scores.len());
        let mut order: Vec<ContactId> = Vec::with_capacity(scores.len());
        for (id, score) in scores {
            if last.insert(*id, *score).is_none() {
                order.push(*id);
            }
        }
        let mut changed = 0;
        for id in order {
            let Some(score) = last.get(&id).copied() else {
                continue;
            };
            let Some(c) = self.data()?.contacts.get(&id) else {
                continue;
            };
            if c.score == score {
                continue;
            }
            let mut next = c.clone();
            next.score = score;
            self.set_contact(id, Some(next))?;
            changed += 1;
        }
        Ok(changed)
    }

    async fn scoring_inputs(
        &mut self,
        request: &crate::scoring::InputsRequest,
    ) -> Result<Vec<crate::scoring::ContactInputs>> {
        self.scoring_chunk(&request.checked()?)
    }

    async fn live_score_log(&mut self, id: ContactId) -> Result<Option<Option<f64>>> {
        self.live_log_of(id)
    }

    async fn live_top_leads(&mut self, limit: u32) -> Result<Vec<(Contact, f64)>> {
        self.live_top(limit)
    }

    async fn write_live_score_logs(&mut self, logs: &[(ContactId, Option<f64>)]) -> Result<u64> {
        let logs = crate::scoring::live::checked_logs(logs)?;
        self.live_write(&logs)
    }
}
