//! What both built-in backends do the same way, written once: the store's
//! clock, the pipeline lookup, the version check of an update, the
//! deactivated and erased forms of a contact, the last of several scores
//! for one contact, the refusal to complete an idempotency key not claimed,
//! and the checks that open a merge.

use std::{collections::HashMap, fmt};

use chrono::Utc;

use crate::{
    domain::{
        ConflictPolicy, Contact, ContactId, ContactPatch, Email, IdempotencyKey, IdempotencySource,
        Metadata, PersonName, Pipeline, PipelineKey, Pipelines, Score, Timestamp, Version,
        merged_survivor, same_contact, truncate_to_micros,
    },
    error::{Entity, Error, Result, ValidationErrors},
    history::{self, ERASED_NAME, contact_values},
};

/// The present moment as the stores keep times: UTC, whole microseconds.
pub(crate) fn now() -> Timestamp {
    truncate_to_micros(Utc::now())
}

/// The definition of pipeline `key`; a key `pipelines` does not know is
/// [`Error::Validation`] on `pipeline`.
pub(crate) fn pipeline(pipelines: &Pipelines, key: &PipelineKey) -> Result<Pipeline> {
    pipelines
        .require("pipeline", key)
        .cloned()
        .map_err(|e| ValidationErrors::single(e).into())
}

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

/// `current` made inactive at `at`, one version on; `None` when it is
/// inactive already.
pub(crate) fn deactivated(current: &Contact, at: Timestamp) -> Option<Contact> {
    let patch = ContactPatch {
        active: Some(false),
        ..ContactPatch::default()
    };
    current.patched(&patch, at)
}

/// One score per contact, the last one `scores` gives for it, in the order
/// the contacts first appear: a contact listed twice is written (and
/// counted) once.
pub(crate) fn last_score_per_contact(scores: &[(ContactId, Score)]) -> Vec<(ContactId, Score)> {
    let mut position: HashMap<ContactId, usize> = HashMap::with_capacity(scores.len());
    let mut out: Vec<(ContactId, Score)> = Vec::with_capacity(scores.len());
    for &(id, score) in scores {
        match position.get(&id) {
            Some(&i) => out[i].1 = score,
            None => {
                position.insert(id, out.len());
                out.push((id, score));
            }
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contact_given_several_scores_keeps_the_last_in_the_place_it_first_took()
    -> std::result::Result<(), crate::error::FieldError> {
        let (a, b) = (ContactId::new(), ContactId::new());
        let (low, mid, high) = (Score::MIN, Score::new(50)?, Score::MAX);
        assert_eq!(
            last_score_per_contact(&[(a, low), (b, mid), (a, high), (a, mid)]),
            vec![(a, mid), (b, mid)]
        );
        assert_eq!(
            last_score_per_contact(&[(b, low), (a, high), (b, high)]),
            vec![(b, high), (a, high)]
        );
        Ok(())
    }
}
