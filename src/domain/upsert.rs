//! What a bulk upsert of contacts is told and tells back: which values win
//! when a row meets a stored contact ([`ConflictPolicy`]), what happened to
//! each row ([`UpsertOutcome`]), and how an import queues behind the
//! tenant's other imports ([`ImportLock`]).

use serde::{Deserialize, Serialize};

use super::{CompanyId, Contact, ContactId, ContactPatch, Metadata, NewContact};

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
///
/// A contact's links (its `company_id` and `owner`) are never cleared by a
/// row that leaves them empty, whatever the policy: under `Incoming` and
/// `NonEmptyIncoming` a row's link replaces the stored one, under
/// `Existing` it only fills an empty one.
///
/// More policies may come as the CRM grows: a `match` on it outside
/// this crate needs a `_` arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
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

/// The patch that applies `incoming` to `existing` under `policy` (email
/// excluded). Backends that compute the merge themselves (PostgreSQL does,
/// in SQL) must give the same result.
pub fn conflict_patch(
    existing: &Contact,
    incoming: &NewContact,
    policy: ConflictPolicy,
) -> ContactPatch {
    fn pick<T: Clone>(
        existing: &Option<T>,
        incoming: &Option<T>,
        policy: ConflictPolicy,
    ) -> Option<T> {
        match policy {
            ConflictPolicy::Incoming => incoming.clone(),
            ConflictPolicy::NonEmptyIncoming => incoming.clone().or_else(|| existing.clone()),
            ConflictPolicy::Existing => existing.clone().or_else(|| incoming.clone()),
        }
    }
    // A link (company, owner) is never cleared by a row that leaves it
    // empty: an incoming one wins unless what is stored wins.
    fn link<T: Clone>(
        existing: &Option<T>,
        incoming: &Option<T>,
        policy: ConflictPolicy,
    ) -> Option<T> {
        match policy {
            ConflictPolicy::Incoming | ConflictPolicy::NonEmptyIncoming => {
                incoming.clone().or_else(|| existing.clone())
            }
            ConflictPolicy::Existing => existing.clone().or_else(|| incoming.clone()),
        }
    }
    let existing_wins = policy == ConflictPolicy::Existing;
    let metadata = match policy {
        ConflictPolicy::Incoming => incoming.metadata.clone(),
        ConflictPolicy::NonEmptyIncoming if incoming.metadata.is_empty() => {
            existing.metadata.clone()
        }
        ConflictPolicy::NonEmptyIncoming => incoming.metadata.clone(),
        ConflictPolicy::Existing if existing.metadata.is_empty() => incoming.metadata.clone(),
        ConflictPolicy::Existing => existing.metadata.clone(),
    };
    ContactPatch {
        email: None,
        first_name: Some(if existing_wins {
            existing.first_name.clone()
        } else {
            incoming.first_name.clone()
        }),
        last_name: Some(if existing_wins {
            existing.last_name.clone()
        } else {
            incoming.last_name.clone()
        }),
        company: Some(pick(&existing.company, &incoming.company, policy)),
        title: Some(pick(&existing.title, &incoming.title, policy)),
        phone: Some(pick(&existing.phone, &incoming.phone, policy)),
        lead_source: Some(if existing_wins {
            existing.lead_source
        } else {
            incoming.lead_source
        }),
        metadata: Some(metadata),
        active: None,
        company_id: Some(link(&existing.company_id, &incoming.company_id, policy)),
        owner: Some(link(&existing.owner, &incoming.owner, policy)),
    }
}

/// The survivor of a merge with `loser`'s values folded in under `policy`
/// (the loser plays the incoming row: [`ConflictPolicy::Existing`] keeps
/// the survivor's values and fills its blanks from the loser). Custom
/// fields are merged key by key, the same side winning a shared key. The
/// survivor keeps its email, score and active flag, and its company and
/// owner under every policy (it takes the loser's only where it has
/// none). `None` when the
/// survivor's values stay as they are — also when the loser is erased: it
/// has no personal data left to give.
///
/// Errors: `survivor` when it is erased (it must hold no personal data);
/// the merged custom fields break the [`Metadata`] limits.
pub fn merged_survivor(
    survivor: &Contact,
    loser: &Contact,
    policy: ConflictPolicy,
    now: crate::domain::Timestamp,
) -> Result<Option<Contact>, super::error::FieldError> {
    if survivor.is_erased() {
        // Whatever it took from the loser would be personal data on a
        // record that must hold none.
        return Err(super::error::FieldError::new(
            "survivor",
            "invalid_value",
            "is erased: it holds no personal data, so nothing can be merged into it",
        ));
    }
    if loser.is_erased() {
        // An erased contact has no personal data left to give: its
        // placeholders ("Erased", no company, …) are not values.
        return Ok(None);
    }
    let incoming = NewContact {
        email: loser.email.clone(),
        first_name: loser.first_name.clone(),
        last_name: loser.last_name.clone(),
        company: loser.company.clone(),
        title: loser.title.clone(),
        phone: loser.phone.clone(),
        lead_source: loser.lead_source,
        metadata: loser.metadata.clone(),
        company_id: loser.company_id,
        owner: loser.owner.clone(),
        original: None,
    };
    let mut patch = conflict_patch(survivor, &incoming, policy);
    // The survivor's links stay, whatever the policy: it takes the loser's
    // company and owner only where it has none.
    patch.company_id = Some(survivor.company_id.or(loser.company_id));
    patch.owner = Some(survivor.owner.clone().or_else(|| loser.owner.clone()));
    let (base, over) = match policy {
        ConflictPolicy::Existing => (&loser.metadata, &survivor.metadata),
        ConflictPolicy::Incoming | ConflictPolicy::NonEmptyIncoming => {
            (&survivor.metadata, &loser.metadata)
        }
    };
    let mut map = base.as_map().clone();
    map.extend(over.as_map().clone());
    // Both sides are stored values: the rules they were stored under
    // (a merge must not fail on a custom field an earlier version kept).
    patch.metadata = Some(Metadata::parse_stored(serde_json::Value::Object(map))?);
    Ok(survivor.patched(&patch, now))
}

/// The reason a merge records in the history of every record it changes.
pub fn merge_reason(survivor: ContactId, loser: ContactId) -> String {
    format!("merged {loser} into {survivor}")
}

/// The reason a merge of two companies records in the history of every
/// record it changes.
pub fn company_merge_reason(survivor: CompanyId, loser: CompanyId) -> String {
    format!("merged company {loser} into {survivor}")
}

/// The acting context with the merge's reason (after the caller's own).
pub(crate) fn merge_context(
    context: &crate::Context,
    survivor: ContactId,
    loser: ContactId,
) -> crate::Context {
    with_merge_reason(context, merge_reason(survivor, loser))
}

/// The acting context with `reason` after the caller's own.
pub(crate) fn with_merge_reason(context: &crate::Context, reason: String) -> crate::Context {
    let full = match context.reason() {
        Some(r) => format!("{r} ({reason})"),
        None => reason.clone(),
    };
    context
        .clone()
        .with_reason(&full)
        .or_else(|_| context.clone().with_reason(&reason))
        .unwrap_or_else(|_| context.clone())
}

/// The refusal of a merge of a record (`noun`: "contact", "company") into
/// itself, on `loser`.
pub(crate) fn same_record(noun: &str) -> super::error::Error {
    super::error::ValidationErrors::single(super::error::FieldError::new(
        "loser",
        "invalid_value",
        format!("a {noun} cannot be merged into itself"),
    ))
    .into()
}
