//! The in-memory store's audit history ([`HistoryTx`]): versions kept per
//! tenant beside the records, written whenever `set_contact` or `set_deal`
//! changes a record, and undone on rollback like every other write.

use std::{
    collections::{BTreeMap, BTreeSet},
    ops::Bound,
};

use async_trait::async_trait;
use chrono::Duration;
use serde_json::Value;
use uuid::Uuid;

use super::{MemoryTransaction, Undo};
use crate::{
    domain::{Contact, ContactId, DealId, Timestamp, check_timestamp, check_timestamps},
    error::Result,
    history::{
        self, FieldQuery, HistoryEntity, HistoryEntry, HistoryKey, Operation, contact_values,
        deal_values, erased_values,
    },
    store::{
        CursorList, HistoryTx, Page, PageRequest,
        shared::{self, now},
    },
};

/// An entry's key: the entity's id and `valid_from` in microseconds.
pub(super) type EntryKey = (Uuid, i64);

/// One tenant's versions, by entity and by time.
#[derive(Default)]
pub(super) struct MemoryHistory {
    entries: BTreeMap<EntryKey, HistoryEntry>,
    by_time: BTreeSet<(i64, Uuid)>,
}

impl MemoryHistory {
    /// Replaces (or removes, with `None`) one entry; returns the previous one.
    pub(super) fn put(
        &mut self,
        key: EntryKey,
        value: Option<HistoryEntry>,
    ) -> Option<HistoryEntry> {
        let old = self.entries.remove(&key);
        if old.is_some() {
            self.by_time.remove(&(key.1, key.0));
        }
        if let Some(v) = value {
            self.by_time.insert((key.1, key.0));
            self.entries.insert(key, v);
        }
        old
    }

    /// The entry at `key`, if it is still kept.
    pub(super) fn get(&self, key: &EntryKey) -> Option<&HistoryEntry> {
        self.entries.get(key)
    }

    fn of(&self, id: Uuid) -> impl DoubleEndedIterator<Item = (&EntryKey, &HistoryEntry)> {
        self.entries.range((id, i64::MIN)..=(id, i64::MAX))
    }
}

impl MemoryTransaction {
    fn put_history(&mut self, key: EntryKey, value: Option<HistoryEntry>) -> Result<()> {
        let tenant = self.tenant;
        let old = self.data_mut()?.history.put(key, value);
        self.undo
            .push(Undo::History(tenant, key, old.map(Box::new)));
        Ok(())
    }

    /// Records the change of contact `id` from `old` to what it is now.
    pub(super) fn record_contact(
        &mut self,
        id: ContactId,
        old: Option<&Contact>,
        operation: Option<Operation>,
    ) -> Result<()> {
        let new = self.data()?.contacts.get(&id).map(contact_values);
        self.record(
            HistoryEntity::Contact(id),
            old.map(contact_values),
            new,
            operation,
        )
    }

    /// Records the change of deal `id` from `old` to what it is now.
    pub(super) fn record_deal(
        &mut self,
        id: DealId,
        old: Option<&crate::domain::Deal>,
    ) -> Result<()> {
        let new = self.data()?.deals.get(&id).map(deal_values);
        self.record(HistoryEntity::Deal(id), old.map(deal_values), new, None)
    }

    pub(super) fn record(
        &mut self,
        entity: HistoryEntity,
        old: Option<Value>,
        new: Option<Value>,
        operation: Option<Operation>,
    ) -> Result<()> {
        let diff = history::diff(old.as_ref(), new.as_ref());
        let operation = match (operation, &old, &new) {
            (Some(op), _, _) => op,
            (None, None, Some(_)) => Operation::Created,
            (None, Some(_), None) => Operation::Deleted,
            (None, Some(_), Some(_)) => Operation::Updated,
            (None, None, None) => return Ok(()),
        };
        if !history::is_change(&diff) {
            return Ok(());
        }
        let id = entity.id();
        let mut at = now();
        let previous = self
            .data()?
            .history
            .of(id)
            .next_back()
            .map(|(k, e)| (*k, e.clone()));
        if let Some((key, mut previous)) = previous {
            let floor = previous.valid_from + Duration::microseconds(1);
            if at < floor {
                at = floor;
            }
            previous.valid_to = Some(at);
            self.put_history(key, Some(previous))?;
        }
        let context = &self.context;
        let entry = HistoryEntry {
            entity,
            operation,
            valid_from: at,
            valid_to: None,
            values: new.or(old).unwrap_or(Value::Null),
            diff,
            actor: context.actor().as_str().to_string(),
            reason: context.reason().map(str::to_string),
            request_id: context.request_id().map(str::to_string),
            idempotency_key: context.idempotency_key().map(str::to_string),
        };
        // The version is also the feed's event (its diff is read from
        // here), with the context the version records.
        let key = (id, at.timestamp_micros());
        let version = entry.values.get("version").and_then(Value::as_i64);
        let acting = super::feed::Acting {
            actor: entry.actor.clone(),
            reason: entry.reason.clone(),
            request_id: entry.request_id.clone(),
            idempotency_key: entry.idempotency_key.clone(),
        };
        self.put_history(key, Some(entry))?;
        self.feed_write(
            entity.kind().into(),
            id,
            operation,
            version,
            Some(key),
            Some(acting),
        )
    }
}

#[async_trait]
impl HistoryTx for MemoryTransaction {
    async fn entity_history(
        &mut self,
        entity: HistoryEntity,
        page: &PageRequest,
    ) -> Result<Page<HistoryEntry>> {
        let limit = page.checked_limit()?;
        let after: Option<i64> = page.position(CursorList::entity_history(&entity))?;
        let id = entity.id();
        let upper = after.map_or(Bound::Included((id, i64::MAX)), |t| {
            Bound::Excluded((id, t))
        });
        let items: Vec<HistoryEntry> = self
            .data()?
            .history
            .entries
            .range((Bound::Included((id, i64::MIN)), upper))
            .rev()
            .map(|(_, e)| e)
            .filter(|e| e.entity == entity)
            .take(limit + 1)
            .cloned()
            .collect();
        Ok(Page::from_overfetch(
            items,
            limit,
            CursorList::entity_history(&entity),
            |e| e.valid_from.timestamp_micros(),
        ))
    }

    async fn entity_as_of(
        &mut self,
        entity: HistoryEntity,
        at: Timestamp,
    ) -> Result<Option<HistoryEntry>> {
        let at = check_timestamp("at", at)?;
        let id = entity.id();
        let at_micros = at.timestamp_micros();
        Ok(self
            .data()?
            .history
            .entries
            .range((id, i64::MIN)..=(id, at_micros))
            .next_back()
            .map(|(_, e)| e)
            .filter(|e| e.entity == entity && !e.is_tombstone() && e.is_valid_at(at))
            .cloned())
    }

    async fn field_changes(&mut self, q: &FieldQuery) -> Result<Page<HistoryEntry>> {
        q.check()?;
        let limit = q.page.checked_limit()?;
        let after: Option<HistoryKey> = q.page.position(CursorList::field_changes(q))?;
        let history = &self.data()?.history;
        let wanted = |e: &&HistoryEntry| {
            e.entity.kind() == q.kind
                && e.diff.contains_key(&q.field)
                && after.is_none_or(|a| (e.valid_from.timestamp_micros(), e.entity.id()) < a)
        };
        let items: Vec<HistoryEntry> = match q.entity {
            Some(id) => history
                .of(id)
                .rev()
                .map(|(_, e)| e)
                .filter(wanted)
                .take(limit + 1)
                .cloned()
                .collect(),
            None => history
                .by_time
                .iter()
                .rev()
                .filter_map(|(t, id)| history.entries.get(&(*id, *t)))
                .filter(wanted)
                .take(limit + 1)
                .cloned()
                .collect(),
        };
        Ok(Page::from_overfetch(
            items,
            limit,
            CursorList::field_changes(q),
            |e| (e.valid_from.timestamp_micros(), e.entity.id()),
        ))
    }

    async fn changes_between(
        &mut self,
        from: Timestamp,
        until: Timestamp,
        page: &PageRequest,
    ) -> Result<Page<HistoryEntry>> {
        let [from, until] = check_timestamps([("from", from), ("until", until)])?;
        let limit = page.checked_limit()?;
        let list = CursorList::tenant_changes(from, until);
        let after: Option<HistoryKey> = page.position(list)?;
        let history = &self.data()?.history;
        let lower = match after {
            Some(a) if a >= (from.timestamp_micros(), Uuid::nil()) => Bound::Excluded(a),
            _ => Bound::Included((from.timestamp_micros(), Uuid::nil())),
        };
        let until = until.timestamp_micros();
        let items: Vec<HistoryEntry> = history
            .by_time
            .range((lower, Bound::Unbounded))
            .take_while(|(t, _)| *t < until)
            .filter_map(|(t, id)| history.entries.get(&(*id, *t)))
            .take(limit + 1)
            .cloned()
            .collect();
        Ok(Page::from_overfetch(items, limit, list, |e| {
            (e.valid_from.timestamp_micros(), e.entity.id())
        }))
    }

    async fn purge_history(&mut self, before: Timestamp) -> Result<u64> {
        let before = check_timestamp("before", before)?;
        let doomed: Vec<EntryKey> = self
            .data()?
            .history
            .entries
            .iter()
            .filter(|(_, e)| {
                e.valid_to.is_some_and(|to| to < before)
                    || (e.is_tombstone() && e.valid_from < before)
            })
            .map(|(k, _)| *k)
            .collect();
        let n = doomed.len() as u64;
        for key in doomed {
            self.put_history(key, None)?;
        }
        // The merges of that time lose their snapshots with the losers'
        // tombstones.
        self.purge_merges(before)?;
        Ok(n)
    }

    async fn erase_contact(&mut self, id: ContactId) -> Result<Contact> {
        self.atomic(|tx| {
            let current = tx.contact(id)?.clone();
            let Some(next) = shared::erased(&current, now())? else {
                return Ok(current);
            };
            let tenant = tx.tenant;
            let old = tx.data_mut()?.put_contact(id, Some(next.clone()));
            tx.record_contact(id, old.as_ref(), Some(Operation::Erased))?;
            let fresh = tx.fresh_follow(id, old.as_ref());
            tx.undo.push(Undo::Contact(tenant, id, old));
            fresh?;
            let placeholders = erased_values(id);
            let versions: Vec<(EntryKey, HistoryEntry)> = tx
                .data()?
                .history
                .of(id.as_uuid())
                .map(|(k, e)| (*k, e.clone()))
                .collect();
            for (key, mut entry) in versions {
                history::scrub(&mut entry, &placeholders);
                tx.put_history(key, Some(entry))?;
            }
            // The merge journal keeps no personal data of an erased person.
            tx.clear_merges_of(id)?;
            Ok(next)
        })
    }
}
