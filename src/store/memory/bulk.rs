//! Bulk operations of the in-memory store: upsert by email.

use uuid::Uuid;

use super::{MemoryTransaction, SignalKey, now};
use crate::{
    bulk::{ConflictPolicy, UpsertOutcome, conflict_patch, merge_context},
    domain::{
        Activity, ActivityId, Contact, ContactId, Deal, DealId, NewContact, Signal, SignalId,
    },
    error::Result,
};

impl MemoryTransaction {
    /// See [`Transaction::upsert_contacts`](crate::Transaction::upsert_contacts).
    pub(super) fn bulk_upsert_contacts(
        &mut self,
        rows: &[NewContact],
        policy: ConflictPolicy,
    ) -> Result<Vec<UpsertOutcome>> {
        let at = now();
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let existing = self
                .data()?
                .by_email
                .get(row.email.normalized())
                .and_then(|id| self.data().ok()?.contacts.get(id).cloned());
            match existing {
                None => {
                    let contact = Contact::create(self.tenant, row.clone(), at);
                    let id = contact.id;
                    self.set_contact(id, Some(contact))?;
                    out.push(UpsertOutcome::Inserted(id));
                }
                Some(current) => {
                    let patch = conflict_patch(&current, row, policy);
                    match current.patched(&patch, at) {
                        None => out.push(UpsertOutcome::Unchanged(current.id)),
                        Some(next) => {
                            self.set_contact(current.id, Some(next))?;
                            out.push(UpsertOutcome::Updated(current.id));
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

impl MemoryTransaction {
    /// See [`Transaction::merge_contacts`](crate::Transaction::merge_contacts).
    pub(super) fn bulk_merge_contacts(
        &mut self,
        survivor: ContactId,
        loser: ContactId,
        policy: ConflictPolicy,
    ) -> Result<Contact> {
        crate::store::shared::check_merge_pair(survivor, loser)?;
        let kept = self.contact(survivor)?.clone();
        let gone = self.contact(loser)?.clone();
        let at = now();
        let merged = crate::store::shared::merged(&kept, &gone, policy, at)?;
        // Every version this merge writes carries its reason.
        let context = self.context.clone();
        self.context = merge_context(&context, survivor, loser);
        let result = self.move_and_delete(&kept, merged, loser, at);
        self.context = context;
        result
    }

    fn move_and_delete(
        &mut self,
        kept: &Contact,
        merged: Option<Contact>,
        loser: ContactId,
        at: crate::domain::Timestamp,
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
        self.live_merge(survivor, loser)?;
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
