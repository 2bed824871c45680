//! What both built-in backends do the same way, written once: the store's
//! clock, the pipeline lookup, the version check of an update, the
//! deactivated and erased forms of a contact, the last of several scores
//! for one contact, the refusal to complete an idempotency key not claimed,
//! and the checks that open a merge.

use std::{collections::HashMap, fmt};

use chrono::Utc;

use crate::{
    domain::{
        Company, CompanyId, ConflictPolicy, Contact, ContactId, ContactPatch, ContactScore, Email,
        IdempotencyKey, IdempotencySource, LiveState, Metadata, PersonName, Pipeline, PipelineKey,
        Pipelines, Timestamp, Version, merged_survivor, same_record, truncate_to_micros,
    },
    error::{Entity, Error, FieldError, Result, ValidationErrors},
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

/// One item per contact, the last one `items` gives for it, in the order
/// the contacts first appear: a contact listed twice is written (and
/// counted) once.
fn last_per_contact<T: Copy>(
    items: impl IntoIterator<Item = (ContactId, T)>,
) -> Vec<(ContactId, T)> {
    let items = items.into_iter();
    let mut position: HashMap<ContactId, usize> = HashMap::with_capacity(items.size_hint().0);
    let mut out: Vec<(ContactId, T)> = Vec::with_capacity(items.size_hint().0);
    for (id, item) in items {
        match position.get(&id) {
            Some(&i) => out[i].1 = item,
            None => {
                position.insert(id, out.len());
                out.push((id, item));
            }
        }
    }
    out
}

/// One score per contact, the last one `scores` gives for it, in the order
/// the contacts first appear.
pub(crate) fn last_score_per_contact(scores: &[ContactScore]) -> Vec<ContactScore> {
    last_per_contact(scores.iter().map(|s| (s.contact, s.score)))
        .into_iter()
        .map(|(contact, score)| ContactScore::new(contact, score))
        .collect()
}

/// Checks live states given by a caller before a store keeps them: each
/// is a finite number (NaN and infinities are refused as
/// [`Error::Validation`] on `score_log`), and a negative zero becomes zero,
/// so that every backend orders them alike. Returns one state per contact,
/// in the order the contacts first appear, the last state given for a
/// contact winning.
pub(crate) fn checked_live_states(states: &[LiveState]) -> Result<Vec<LiveState>> {
    let mut checked = Vec::with_capacity(states.len());
    for state in states {
        let log = match state.log {
            Some(l) if !l.is_finite() => {
                return Err(FieldError::new(
                    "score_log",
                    "out_of_range",
                    format!("must be a finite number, got {l}"),
                )
                .into());
            }
            // `+ 0.0` turns -0.0 into 0.0 and keeps every other value.
            Some(l) => Some(l + 0.0),
            None => None,
        };
        checked.push((state.contact, log));
    }
    Ok(last_per_contact(checked)
        .into_iter()
        .map(|(contact, log)| LiveState::new(contact, log))
        .collect())
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
        Err(same_record("contact"))
    } else {
        Ok(())
    }
}

/// Refuses merging a company into itself.
pub(crate) fn check_company_merge_pair(survivor: CompanyId, loser: CompanyId) -> Result<()> {
    if survivor == loser {
        Err(same_record("company"))
    } else {
        Ok(())
    }
}

/// The survivor of merging company `gone` into `kept` at `at`
/// ([`Company::merged_with`]), its refusal as a validation error.
pub(crate) fn merged_company(
    kept: &Company,
    gone: &Company,
    at: Timestamp,
) -> Result<Option<Company>> {
    kept.merged_with(gone, at)
        .map_err(|e| Error::from(ValidationErrors::single(e)))
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

/// Checks the original times of upserted rows against the store's clock
/// ([`NewContact::checked`](crate::domain::NewContact::checked)): every
/// error, named `rows[i].<field>`.
pub(crate) fn check_upsert_rows(rows: &[crate::domain::NewContact]) -> Result<()> {
    let mut errors = crate::error::ValidationErrors::new();
    for (i, row) in rows.iter().enumerate() {
        if row.original.is_none() {
            continue;
        }
        if let Err(e) = row.clone().checked() {
            for mut e in e {
                e.field = format!("rows[{i}].{}", e.field);
                errors.push(e);
            }
        }
    }
    Ok(errors.finish(|| ())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contact_given_several_scores_keeps_the_last_in_the_place_it_first_took()
    -> std::result::Result<(), crate::error::FieldError> {
        let (a, b) = (ContactId::new(), ContactId::new());
        let (low, mid, high) = (
            crate::domain::Score::MIN,
            crate::domain::Score::new(50)?,
            crate::domain::Score::MAX,
        );
        assert_eq!(
            last_score_per_contact(&[
                ContactScore::new(a, low),
                ContactScore::new(b, mid),
                ContactScore::new(a, high),
                ContactScore::new(a, mid)
            ]),
            vec![ContactScore::new(a, mid), ContactScore::new(b, mid)]
        );
        assert_eq!(
            last_score_per_contact(&[
                ContactScore::new(b, low),
                ContactScore::new(a, high),
                ContactScore::new(b, high)
            ]),
            vec![ContactScore::new(b, high), ContactScore::new(a, high)]
        );
        Ok(())
    }
}
