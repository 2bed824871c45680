//! Bulk operations of the in-memory store ([`BulkTx`]): upserts by email and
//! merges of two contacts, each all or nothing through the undo log.

use async_trait::async_trait;
use uuid::Uuid;

use super::{MemoryTransaction, SignalKey};
use crate::{
    bulk::{ConflictPolicy, UpsertOutcome, conflict_patch, merge_context},
    domain::{
        Activity, ActivityId, Contact, ContactId, Deal, DealId, MergeId, MergeRecord, NewContact,
        RecordRef, Signal, SignalId, Timestamp, UnmergeConflicts, Unmerged,
    },
    error::Result,
    store::{
        BulkTx,
        shared::{self, now},
    },
};

#[async_trait]
impl BulkTx for MemoryTransaction {
    async fn upsert_contacts(
        &mut self,
        rows: &[NewContact],
        policy: ConflictPolicy,
    ) -> Result<Vec<UpsertOutcome>> {
        shared::check_upsert_rows(rows)?;
        self.atomic(|tx| {
            let at = now();
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                let data = tx.data()?;
                let existing = data
                    .by_email
                    .get(row.email.normalized())
                    .and_then(|id| data.contacts.get(id).cloned());
                tx.check_company(row.company_id)?;
                match existing {
                    None => {
                        let row = tx.linked(row.clone())?;
                        let contact = Contact::create(tx.tenant, row, at);
                        let id = contact.id;
                        tx.set_contact(id, Some(contact))?;
                        out.push(UpsertOutcome::Inserted(id));
                    }
                    Some(current) => {
                        let patch = conflict_patch(&current, row, policy);
                        match current.patched(&patch, at) {
                            None => out.push(UpsertOutcome::Unchanged(current.id)),
                            Some(next) => {
                                tx.set_contact(current.id, Some(next))?;
                                out.push(UpsertOutcome::Updated(current.id));
                            }
                        }
                    }
                }
            }
            Ok(out)
        })
    }

    async fn merge_contacts(
        &mut self,
        survivor: ContactId,
        loser: ContactId,
        policy: ConflictPolicy,
    ) -> Result<Contact> {
        self.atomic(|tx| {
            shared::check_merge_pair(survivor, loser)?;
            let kept = tx.contact(survivor)?.clone();
            let gone = tx.contact(loser)?.clone();
            let at = now();
            let merged = shared::merged(&kept, &gone, policy, at)?;
            let start = tx.merge_start(&kept, &gone)?;
            // Every version this merge writes carries its reason.
            let context = tx.context.clone();
            tx.context = merge_context(&context, survivor, loser);
            let result = tx.move_and_delete(&kept, merged, loser, at);
            tx.context = context;
            let after = result?;
            tx.journal_merge(start, &after, policy, at)?;
            Ok(after)
        })
    }

    async fn contact_merges(&mut self, contact: ContactId) -> Result<Vec<MergeRecord>> {
        self.merges_of(contact)
    }

    async fn unmerge_contacts(
        &mut self,
        merge: MergeId,
        conflicts: UnmergeConflicts,
    ) -> Result<Unmerged> {
        self.atomic(|tx| tx.unmerge(merge, conflicts))
    }
}

impl MemoryTransaction {
    /// The writes of a merge: moves the loser's deals, activities, signals
    /// and live score to the survivor of `kept`, deletes the loser, then
    /// writes the `merged` survivor (if it changes); returns the survivor.
    fn move_and_delete(
        &mut self,
        kept: &Contact,
        merged: Option<Contact>,
        loser: ContactId,
        at: Timestamp,
    ) -> Result<Contact> {
        let survivor = kept.id;
        let data = self.data()?;
        let deals: Vec<Deal> = data
            .deals_by_contact
            .range(
                (loser, i64::MIN, DealId::from_uuid(Uuid::nil()))
                    ..=(loser, i64::MAX, DealId::from_uuid(Uuid::max())),
            )
            .filter_map(|k| data.deals.get(&k.2).cloned())
            .collect();
        let activities: Vec<Activity> = data
            .timeline
            .range(
                (loser, i64::MIN, ActivityId::from_uuid(Uuid::nil()))
                    ..=(loser, i64::MAX, ActivityId::from_uuid(Uuid::max())),
            )
            .filter_map(|k| data.activities.get(&k.2).cloned())
            .collect();
        let signals: Vec<(SignalKey, Signal)> = data
            .signals
            .range(
                (loser, i64::MIN, SignalId::from_uuid(Uuid::nil()))
                    ..=(loser, i64::MAX, SignalId::from_uuid(Uuid::max())),
            )
            .map(|(k, s)| (*k, s.clone()))
            .collect();
        for mut d in deals {
            d.contact_id = survivor;
            d.updated_at = at;
            d.version = d.version.next();
            self.set_deal(d.id, Some(d))?;
        }
        for mut a in activities {
            a.contact_id = survivor;
            self.set_activity(a.id, Some(a))?;
        }
        for (key, mut s) in signals {
            self.set_signal(key, None)?;
            s.contact_id = survivor;
            self.set_signal((survivor, key.1, key.2), Some(s))?;
        }
        self.move_tasks(loser, survivor, at)?;
        self.live_merge(survivor, loser)?;
        self.fresh_merge(survivor, loser)?;
        // The survivor gets the loser's tags; the loser's taggings go with
        // it, as the foreign key's cascade takes them on PostgreSQL.
        self.copy_taggings(RecordRef::Contact(loser), RecordRef::Contact(survivor))?;
        self.detach_all_from(RecordRef::Contact(loser))?;
        // The loser goes first: the survivor may take nothing of its email,
        // but a store checks uniqueness at each write.
        self.set_contact(loser, None)?;
        match merged {
            Some(next) => {
                self.set_contact(survivor, Some(next.clone()))?;
                Ok(next)
            }
            None => Ok(kept.clone()),
        }
    }
}
