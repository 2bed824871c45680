//! What a store hands the rescoring pipeline: which contacts
//! ([`InputsRequest`]) and each one's scoring inputs as stored
//! ([`ContactInputs`]). The model that scores them is [`crate::scoring`].

use super::{
    ActivityKind, ContactId, Score, SignalKind, Timestamp, check_optional_timestamp,
    check_timestamp,
    error::{FieldError, ValidationErrors},
};

/// Which contacts [`Transaction::scoring_inputs`](crate::store::ScoringTx::scoring_inputs)
/// returns: the active contacts created at or after `created_from`, with an
/// id greater than `after`, in id order, at most `limit` of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputsRequest {
    /// Contacts created before this are left out (the lookback window).
    pub created_from: Timestamp,
    /// Continue after this contact id (keyset order); `None` from the start.
    pub after: Option<ContactId>,
    /// How many contacts at most (1 or more).
    pub limit: u32,
    /// Activities, signals and open deals that happened before this may be
    /// left out (they are past the model's age cutoff); `None` returns them
    /// all.
    pub inputs_from: Option<Timestamp>,
}

impl InputsRequest {
    /// The request as every store takes it, or every reason it cannot be:
    /// `created_from` and `inputs_from` within years 1–9999 and normalised
    /// ([`check_timestamp`](crate::domain::check_timestamp)), `limit` at
    /// least 1. Every store calls it before anything else.
    pub fn checked(&self) -> Result<InputsRequest, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let created_from = errors.check(check_timestamp("created_from", self.created_from));
        let inputs_from = errors.check(check_optional_timestamp("inputs_from", self.inputs_from));
        if self.limit == 0 {
            errors.push(FieldError::new(
                "limit",
                "out_of_range",
                "must be at least 1",
            ));
        }
        match (created_from, inputs_from) {
            (Some(created_from), Some(inputs_from)) if errors.is_empty() => Ok(InputsRequest {
                created_from,
                inputs_from,
                ..self.clone()
            }),
            _ => Err(errors),
        }
    }
}

/// One contact's scoring inputs, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ContactInputs {
    /// The contact.
    pub id: ContactId,
    /// When it was created.
    pub created_at: Timestamp,
    /// Its stored score.
    pub score: Score,
    /// Its activities: kind and `occurred_at`, in no particular order.
    pub activities: Vec<(ActivityKind, Timestamp)>,
    /// Its recorded signals: kind and `occurred_at`, in no particular order.
    pub signals: Vec<(SignalKind, Timestamp)>,
    /// The `created_at` of each of its open deals (neither won nor lost).
    pub open_deals: Vec<Timestamp>,
}
