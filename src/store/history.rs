//! Reading, purging and erasing the audit history ([`HistoryTx`]); the
//! model is described in [`crate::history`].

use async_trait::async_trait;

#[cfg(doc)]
use crate::error::Error;
use crate::{domain::*, error::Result};

/// The audit history. Part of [`Transaction`](crate::Transaction).
///
/// # Contract
///
/// Beside the points on [`Store`](crate::Store): every committed create,
/// update and delete of a contact or deal (a deal deleted with its contact
/// too) is a version in the history, written in the same transaction, with
/// the transaction's context; an update that changes nothing and a score
/// write-back record nothing. See [`crate::history`].
#[async_trait]
pub trait HistoryTx: Send {
    /// The versions of one contact or deal, newest first (by `valid_from`),
    /// including its tombstone if it was deleted. Empty for a record with
    /// no history. See [`crate::history`].
    ///
    /// Errors: [`Error::Validation`] on `limit` or `cursor`.
    async fn entity_history(
        &mut self,
        entity: HistoryEntity,
        page: &PageRequest,
    ) -> Result<Page<HistoryEntry>>;

    /// The version of a record in force at `at`, or `None` when the record
    /// did not exist then (before its creation, after its deletion, or in
    /// a purged past).
    async fn entity_as_of(
        &mut self,
        entity: HistoryEntity,
        at: Timestamp,
    ) -> Result<Option<HistoryEntry>>;

    /// The versions whose diff changes `query.field`, of one record or of
    /// every record of the kind, newest first (`valid_from`, then entity id,
    /// descending).
    ///
    /// Errors: [`Error::Validation`] on `limit` or `cursor`.
    async fn field_changes(&mut self, query: &FieldQuery) -> Result<Page<HistoryEntry>>;

    /// Every version of every contact and deal of the tenant with
    /// `from <= valid_from < until`, oldest first (`valid_from`, then entity
    /// id, ascending): for export and for reading the past. A version
    /// written in a transaction still open when the window is read shows
    /// in none of the windows read so far once it commits (its
    /// `valid_from` is the time of the write): a sync that must see every
    /// change follows the change feed instead (see [`crate::history`]).
    ///
    /// Errors: [`Error::Validation`] on `limit` or `cursor`.
    async fn changes_between(
        &mut self,
        from: Timestamp,
        until: Timestamp,
        page: &PageRequest,
    ) -> Result<Page<HistoryEntry>>;

    /// Deletes the tenant's versions that ended before `before`
    /// (`valid_to < before`) and the tombstones of records deleted before it
    /// (`valid_from < before`); versions in force are kept. Returns how
    /// many versions it deleted.
    async fn purge_history(&mut self, before: Timestamp) -> Result<u64>;

    /// Erases a contact's personal data from its row and from every one of
    /// its versions, recording an [`Operation::Erased`](Operation::Erased)
    /// version; returns the erased contact (see [`crate::history`] for
    /// what it looks like). Erasing an erased contact changes nothing.
    ///
    /// Errors: [`Error::NotFound`].
    async fn erase_contact(&mut self, id: ContactId) -> Result<Contact>;
}
