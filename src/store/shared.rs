//! What both built-in backends do the same way, written once: the version
//! check of an update, the erased form of a contact, the refusal to
//! complete an idempotency key not claimed, and the checks that open a merge.

use std::fmt;

use crate::{
    domain::{
        ConflictPolicy, Contact, ContactId, Email, IdempotencyKey, IdempotencySource, Metadata,
        PersonName, Timestamp, Version, merged_survivor, same_contact,
    },
    error::{Entity, Error, Result, ValidationErrors},
    history::{self, ERASED_NAME, contact_values},
};

/// [`Error::Conflict`] unless the record is at the version the caller expects.
pub(crate) fn check_version(
    entity: Entity,
    id: impl fmt::Display,
    expected: Version,
    actual: Version,
) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(Error::Conflict {
            entity,
            id: id.to_string(),
            expected: expected.get(),
            actual: actual.get(),
        })
    }
}

/// The erased form of `current` (personal fields replaced by their
/// placeholders, inactive), one version on and changed at `at`; `None` when
/// it is erased already.
pub(crate) fn erased(current: &Contact, at: Timestamp) -> Result<Option<Contact>> {
    let mut next = current.clone();
    next.email = Email::erased(current.id);
    next.first_name = PersonName::parse(ERASED_NAME)?;
    next.last_name = PersonName::parse(ERASED_NAME)?;
    next.company = None;
    next.title = None;
    next.phone = None;
    next.metadata = Metadata::new();
    next.active = false;
    if !history::is_change(&history::diff(
        Some(&contact_values(current)),
        Some(&contact_values(&next)),
    )) {
        return Ok(None);
    }
    next.version = current.version.next();
    next.updated_at = at;
    Ok(Some(next))
}

/// Raised when a transaction completes a key it does not hold.
#[derive(Debug, thiserror::Error)]
#[error("the idempotency key {0} is not claimed by this transaction")]
struct NotClaimed(String);

/// [`Error::Backend`] for completing `source`:`key` without holding its claim.
pub(crate) fn not_claimed(source: &IdempotencySource, key: &IdempotencyKey) -> Error {
    Error::backend(NotClaimed(format!("{source}:{key}")))
}

/// Refuses a merge of a contact into itself.
pub(crate) fn check_merge_pair(survivor: ContactId, loser: ContactId) -> Result<()> {
    if survivor == loser {
        Err(same_contact())
    } else {
        Ok(())
    }
}

/// The survivor of merging `gone` into `kept` under `policy` at `at`
/// ([`merged_survivor`]: `None` when the survivor stays as it is), its
/// refusal as a validation error.
pub(crate) fn merged(
    kept: &Contact,
    gone: &Contact,
    policy: ConflictPolicy,
    at: Timestamp,
) -> Result<Option<Contact>> {
    merged_survivor(kept, gone, policy, at).map_err(|e| Error::from(ValidationErrors::single(e)))
}
