//! What a bulk upsert of contacts is told and tells back: which values win
//! when a row meets a stored contact ([`ConflictPolicy`]), what happened to
//! each row ([`UpsertOutcome`]), and how an import queues behind the
//! tenant's other imports ([`ImportLock`]).

use serde::{Deserialize, Serialize};

use super::ContactId;

/// How an import transaction orders itself against the tenant's other
/// imports, taken with
/// [`BulkTx::lock_for_import`](crate::store::BulkTx::lock_for_import)
/// before the import writes anything.
///
/// An all-or-nothing import holds the rows of its earlier batches while it
/// writes the next one, so two of them over overlapping emails (or one and
/// a best-effort batch) could each wait for a row the other holds: a
/// deadlock. With this lock they queue up instead: an all-or-nothing
/// import holds the tenant's lock exclusively, each best-effort batch (one
/// statement, which takes its rows in email order) holds it shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImportLock {
    /// Shared with other best-effort batches: a best-effort batch.
    Shared,
    /// Alone: an all-or-nothing import, for its whole transaction.
    Exclusive,
}

/// Which values win when an imported row meets a contact that already holds
/// its email. The email itself (the key) keeps its stored casing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictPolicy {
    /// Every field takes the incoming value, an empty one clearing it.
    Incoming,
    /// Every field the row fills takes its value; a field the row leaves
    /// empty (company, title, phone, no custom fields) keeps what is stored.
    /// The default.
    #[default]
    NonEmptyIncoming,
    /// What is stored wins; only fields the contact has empty are filled
    /// from the row.
    Existing,
}

/// What an upsert did with one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "id")]
pub enum UpsertOutcome {
    /// A new contact was created.
    Inserted(ContactId),
    /// The contact holding the email was changed (its version went up by one).
    Updated(ContactId),
    /// The contact holding the email already had the resulting values.
    Unchanged(ContactId),
}

impl UpsertOutcome {
    /// The contact the row went to.
    pub fn id(self) -> ContactId {
        match self {
            UpsertOutcome::Inserted(id)
            | UpsertOutcome::Updated(id)
            | UpsertOutcome::Unchanged(id) => id,
        }
    }
}
