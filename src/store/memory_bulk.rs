//! Bulk operations of the in-memory store: upsert by email.

use super::{MemoryTransaction, now};
use crate::{
    bulk::{ConflictPolicy, UpsertOutcome, conflict_patch},
    domain::{Contact, NewContact},
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
