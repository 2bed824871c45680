//! The locks a transaction takes on a contact: to change it, to delete or
//! merge it away, and the key-share lock that keeps it from being deleted
//! while a deal, activity or signal is attached to it.

use super::{rows, schema::contact_select, transaction::PgTransaction};
use crate::{
    domain::{Contact, ContactId},
    error::{Entity, Error, Result},
};

// Updates lock with FOR NO KEY UPDATE: they never change a key, so they
// need not wait for (nor block) the FOR KEY SHARE lock that logging an
// activity or creating a deal takes on its contact.
pub(super) const LOCK_CONTACT: &str = concat!(
    "SELECT ",
    contact_select!(),
    " FROM contacts WHERE tenant_id = $1 AND id = $2 FOR NO KEY UPDATE"
);
// What deletes or merges a contact locks it with FOR UPDATE, which (unlike
// FOR NO KEY UPDATE) conflicts with the FOR KEY SHARE that logging an
// activity, recording a signal or creating a deal takes on the contact:
// such a write either commits before the merge reads what to move, or
// waits and finds the contact gone (NotFound). Never a cascade of
// acknowledged work.
pub(super) const LOCK_CONTACT_FOR_DELETE: &str = concat!(
    "SELECT ",
    contact_select!(),
    " FROM contacts WHERE tenant_id = $1 AND id = $2 FOR UPDATE"
);
/// Fails unless the contact exists; holds a key-share lock on it.
pub(super) const SHARE_CONTACT: &str =
    "SELECT 1 FROM contacts WHERE tenant_id = $1 AND id = $2 FOR KEY SHARE";

/// The fixed statements of this file, for [`super::statements`].
pub(super) const STATEMENTS: &[(&str, &str)] =
    super::statements::listed![LOCK_CONTACT, LOCK_CONTACT_FOR_DELETE, SHARE_CONTACT];

impl PgTransaction {
    /// Locks a contact to change it (`FOR NO KEY UPDATE`).
    pub(super) async fn lock_contact(&mut self, id: ContactId) -> Result<Contact> {
        self.lock_contact_with(LOCK_CONTACT, id).await
    }

    /// Locks a contact that this transaction will delete (or merge away):
    /// waits for every transaction attaching a record to it to end, and
    /// keeps new ones waiting until this one ends.
    pub(super) async fn lock_contact_for_delete(&mut self, id: ContactId) -> Result<Contact> {
        self.lock_contact_with(LOCK_CONTACT_FOR_DELETE, id).await
    }

    async fn lock_contact_with(&mut self, sql: &str, id: ContactId) -> Result<Contact> {
        let tenant = self.tenant_uuid();
        match self.query_opt(sql, &[&tenant, &id.as_uuid()]).await? {
            Some(row) => rows::contact(&row),
            None => Err(Error::not_found(Entity::Contact, id)),
        }
    }

    /// Fails with `NotFound` unless the contact exists; holds a key-share
    /// lock on it so that it cannot be deleted before this transaction ends.
    pub(super) async fn share_contact(&mut self, id: ContactId) -> Result<()> {
        let tenant = self.tenant_uuid();
        match self
            .query_opt(SHARE_CONTACT, &[&tenant, &id.as_uuid()])
            .await?
        {
            Some(_) => Ok(()),
            None => Err(Error::not_found(Entity::Contact, id)),
        }
    }
}
