//! The locks a transaction takes on a contact: to change it, to delete or
//! merge it away, and the key-share lock that keeps it from being deleted
//! while a deal, activity or signal is attached to it.

use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{rows, schema::contact_select_joined, transaction::PgTransaction};
use crate::{
    domain::{Contact, ContactId},
    error::{Entity, Error, Result},
};

// Updates lock with FOR NO KEY UPDATE: they never change a key, so they
// need not wait for (nor block) the FOR KEY SHARE lock that logging an
// activity or creating a deal takes on its contact.
//
// The contact's rank row (its score, schema 17) is locked with it, after
// it: a score written by another transaction that is not committed yet
// is waited for and then read, as when the score was a column of the
// contact. Without that lock a merge read the loser's score from before
// a write that committed ahead of the merge, and its unmerge put the old
// score back over an acknowledged one. (An inner join: a locking clause
// cannot name the nullable side of an outer one; a contact without its
// rank row is told apart afterwards.)
pub(super) const LOCK_CONTACT: &str = concat!(
    "SELECT ",
    contact_select_joined!(),
    " FROM contacts c JOIN contact_ranks r ON r.tenant_id = c.tenant_id AND r.contact_id = c.id \
     WHERE c.tenant_id = $1 AND c.id = $2 FOR NO KEY UPDATE OF c, r"
);
// What deletes or merges a contact locks it with FOR UPDATE, which (unlike
// FOR NO KEY UPDATE) conflicts with the FOR KEY SHARE that logging an
// activity, recording a signal or creating a deal takes on the contact:
// such a write either commits before the merge reads what to move, or
// waits and finds the contact gone (NotFound). Never a cascade of
// acknowledged work.
pub(super) const LOCK_CONTACT_FOR_DELETE: &str = concat!(
    "SELECT ",
    contact_select_joined!(),
    " FROM contacts c JOIN contact_ranks r ON r.tenant_id = c.tenant_id AND r.contact_id = c.id \
     WHERE c.tenant_id = $1 AND c.id = $2 FOR UPDATE OF c, r"
);
/// Fails unless the contact exists; holds a key-share lock on it.
pub(super) const SHARE_CONTACT: &str =
    "SELECT 1 FROM contacts WHERE tenant_id = $1 AND id = $2 FOR KEY SHARE";
/// Whether the contact exists, its rank row aside.
const CONTACT_EXISTS: &str = "SELECT 1 FROM contacts WHERE tenant_id = $1 AND id = $2";

/// Takes a transaction-level advisory lock on the key `($1, $2)` (see
/// [`advisory_key`]), waiting for the transaction holding it to end.
pub(super) const ADVISORY_XACT_LOCK: &str = "SELECT pg_advisory_xact_lock($1::int4, $2::int4)";

/// The fixed statements of this file, for [`super::statements`].
pub(super) const STATEMENTS: &[(&str, &str)] = super::statements::listed![
    LOCK_CONTACT,
    LOCK_CONTACT_FOR_DELETE,
    SHARE_CONTACT,
    CONTACT_EXISTS,
    ADVISORY_XACT_LOCK
];

/// The key of one of the store's advisory locks, as PostgreSQL's two
/// 32-bit keys (the two-key form, which the migration lock's one-key form
/// never meets): the first 64 bits of a SHA-256 of `label`, a NUL, the
/// tenant id and `parts`, each part after the first preceded by a NUL.
/// Each kind of lock has its own label, so kinds never share a key; two
/// things of one kind sharing a key would only wait for each other.
///
/// The bytes hashed are part of the store's behaviour across versions: two
/// processes of different versions must compute the same key for the same
/// thing, or they stop excluding each other.
pub(super) fn advisory_key(label: &str, tenant: Uuid, parts: &[&str]) -> (i32, i32) {
    let mut hash = Sha256::new();
    hash.update(label.as_bytes());
    hash.update([0]);
    hash.update(tenant.as_bytes());
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hash.update([0]);
        }
        hash.update(part.as_bytes());
    }
    let digest = hash.finalize();
    let word =
        |i: usize| i32::from_be_bytes([digest[i], digest[i + 1], digest[i + 2], digest[i + 3]]);
    (word(0), word(4))
}

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
            None => match self
                .query_opt(CONTACT_EXISTS, &[&tenant, &id.as_uuid()])
                .await?
            {
                // Written around the store with its triggers off, or its
                // row deleted by hand: reported as the reads report it.
                Some(_) => Err(Error::backend(format!(
                    "contact {id} has no rank row (contact_ranks): its score is missing"
                ))),
                None => Err(Error::not_found(Entity::Contact, id)),
            },
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys of the locks taken before this function existed (an
    /// import's, an idempotency claim's) are what they were: the bytes
    /// hashed, spelt out.
    #[test]
    fn advisory_keys_hash_the_label_the_tenant_and_the_parts() {
        let tenant = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        let expected = |bytes: &[u8]| {
            let d = Sha256::digest(bytes);
            (
                i32::from_be_bytes([d[0], d[1], d[2], d[3]]),
                i32::from_be_bytes([d[4], d[5], d[6], d[7]]),
            )
        };
        let mut import = b"crm-core import\0".to_vec();
        import.extend_from_slice(tenant.as_bytes());
        assert_eq!(
            advisory_key("crm-core import", tenant, &[]),
            expected(&import)
        );
        let mut claim = b"crm-core idempotency\0".to_vec();
        claim.extend_from_slice(tenant.as_bytes());
        claim.extend_from_slice(b"stripe\0evt_1");
        assert_eq!(
            advisory_key("crm-core idempotency", tenant, &["stripe", "evt_1"]),
            expected(&claim)
        );
        assert_ne!(
            advisory_key("crm-core idempotency", tenant, &["ab", "c"]),
            advisory_key("crm-core idempotency", tenant, &["a", "bc"])
        );
        assert_ne!(
            advisory_key("crm-core feed consumer", tenant, &["a"]),
            advisory_key("crm-core feed consumer", Uuid::nil(), &["a"])
        );
    }
}
