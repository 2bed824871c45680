//! Upserting contacts in bulk, the import lock and merging two contacts
//! ([`BulkTx`]); the import and export engines are in [`crate::bulk`].

use async_trait::async_trait;

#[cfg(doc)]
use crate::error::Error;
use crate::{domain::*, error::Result};

/// Bulk upserts, the import lock and merges. Part of [`Transaction`](crate::Transaction).
#[async_trait]
pub trait BulkTx: Send {
    /// Upserts contacts by email, in any casing: a row whose email no
    /// contact of the tenant holds is created (version 1, score 0, active);
    /// otherwise the contact holding it gets the values `policy` picks
    /// ([`crate::bulk::conflict_patch`]; the stored email is kept) and its
    /// version goes up by one, unless nothing changes. Returns one outcome
    /// per row, in row order. Rows are applied in order, so a later row
    /// with the email of an earlier one updates the contact the earlier
    /// one wrote. Concurrent upserts of the same emails never fail with
    /// [`Error::DuplicateEmail`]: one inserts, the others update.
    ///
    /// A row's original times ([`NewContact::original`]) are the
    /// `created_at` and `updated_at` of the contact it creates; a row that
    /// meets an existing contact updates it as a change made now (its
    /// original times are not used). Either way the history version is
    /// written at the time of the load. A row whose original times are
    /// after the store's clock fails the whole call with
    /// [`Error::Validation`] naming `rows[i].created_at` or
    /// `rows[i].updated_at`, before anything is written.
    async fn upsert_contacts(
        &mut self,
        rows: &[NewContact],
        policy: ConflictPolicy,
    ) -> Result<Vec<UpsertOutcome>>;

    /// Takes the tenant's import lock for the rest of this transaction, as
    /// `lock` says: what an import does first, so that imports of one tenant
    /// queue up instead of deadlocking over each other's rows (see
    /// [`ImportLock`](ImportLock)). Other writers do not take
    /// it: a transaction of the host's own that writes several contacts can
    /// still deadlock with an import, and one of the two then fails with a
    /// retryable [`Error::Backend`].
    ///
    /// The default does nothing: right for a backend whose transactions
    /// never wait for each other's rows while holding some (the in-memory
    /// store runs one transaction at a time).
    async fn lock_for_import(&mut self, lock: ImportLock) -> Result<()> {
        let _ = lock;
        Ok(())
    }

    /// Merges contact `loser` into `survivor`: the loser's deals (each
    /// gaining a version), activities and signals move to the survivor, the
    /// survivor takes the loser's values as `policy` says
    /// ([`crate::bulk::merged_survivor`]; custom fields merged key by key),
    /// and the loser is deleted. Every version the merge writes records the
    /// reason `merged <loser> into <survivor>` (after the context's own
    /// reason, if any) with the transaction's request id. Returns the
    /// survivor.
    ///
    /// The merge is written to the merge journal in the same transaction
    /// (see [`contact_merges`](Self::contact_merges)): the loser as it was,
    /// the survivor before and after, the ids of what moved and the tags
    /// the survivor gained, so that
    /// [`unmerge_contacts`](Self::unmerge_contacts) can undo it.
    ///
    /// An erased loser gives nothing but its deals, activities and signals.
    /// A transaction that holds locks on both contacts (it logged an
    /// activity for the survivor, then wants to log one for the loser) can
    /// deadlock with the merge and get a retryable [`Error::Backend`].
    ///
    /// Errors: [`Error::NotFound`] naming the survivor when it is missing,
    /// else the loser when it is; [`Error::Validation`] on `loser` when it
    /// is the survivor, on `survivor` when it is erased (it must hold no
    /// personal data), on `metadata` when the merged custom fields are too
    /// large.
    async fn merge_contacts(
        &mut self,
        survivor: ContactId,
        loser: ContactId,
        policy: ConflictPolicy,
    ) -> Result<Contact>;

    /// The merges of the journal where `contact` is the survivor or the
    /// loser, newest first (by merge time, then id). Empty for a contact
    /// that never took part in one.
    async fn contact_merges(&mut self, contact: ContactId) -> Result<Vec<MergeRecord>>;

    /// Undoes merge `merge`: the loser comes back with its id and its
    /// values from before the merge (a version after its last one; linked
    /// to no company when its company was deleted, or merged into another,
    /// since: no journal records where a merged company went) and its
    /// tags (those not deleted since); the deals, activities, signals and
    /// tasks that came from it and are still on the survivor move back
    /// (deals and tasks gaining a version; a deal deleted or linked
    /// elsewhere since is left and reported); what the survivor got after
    /// the merge stays; the taggings the merge gave the survivor are taken
    /// off; the survivor's fields the merge changed get their values back,
    /// unless edited since (`conflicts` says what then); both live scores
    /// are computed again from their activities and signals. Every version
    /// written carries the reason `unmerged <loser> from <survivor>` (after
    /// the context's own). The journal row is marked undone.
    ///
    /// Merges of one survivor are undone newest first: each restores the
    /// values it found, which a later merge may have changed.
    ///
    /// Errors, none writing anything: [`Error::NotFound`] (entity
    /// [`Merge`](crate::Entity::Merge)) for an unknown merge;
    /// [`Error::UnmergeRefused`] when it was undone already, the survivor
    /// was deleted, erased or merged into another contact (naming that
    /// merge), a later merge into the survivor is in effect (naming it),
    /// the journal's snapshot was erased or purged, or (with
    /// [`UnmergeConflicts::Refuse`]) survivor fields the merge changed were
    /// edited since (naming them); [`Error::DuplicateEmail`] when another
    /// contact holds the loser's email now.
    async fn unmerge_contacts(
        &mut self,
        merge: MergeId,
        conflicts: UnmergeConflicts,
    ) -> Result<Unmerged>;
}
