//! What a store hands the rescoring pipeline: the scoring inputs of one
//! chunk of eligible contacts ([`Transaction::scoring_inputs`]), and how a
//! contact's live (log-scaled) score state is built from them.
//!
//! [`Transaction::scoring_inputs`]: crate::store::Transaction::scoring_inputs

use crate::{
    domain::{
        ActivityKind, ContactId, Score, SignalKind, Timestamp, check_optional_timestamp,
        check_timestamp,
    },
    error::{FieldError, ValidationErrors},
};

use super::{ScoringInput, ScoringModel};

/// Which contacts [`Transaction::scoring_inputs`](crate::store::Transaction::scoring_inputs)
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

impl ContactInputs {
    /// The inputs as [`ScoringInput`]s for `model`: each activity as the
    /// signal its kind maps to, each recorded signal as itself, and one
    /// `deal_exists` per open deal at the time the deal was created.
    pub fn scoring_inputs<'a>(
        &'a self,
        model: &'a ScoringModel,
    ) -> impl Iterator<Item = ScoringInput> + 'a {
        let activities = self
            .activities
            .iter()
            .map(|(k, t)| ScoringInput::new(model.activity_signal(*k).clone(), *t));
        let signals = self
            .signals
            .iter()
            .map(|(k, t)| ScoringInput::new(k.clone(), *t));
        let deals = self
            .open_deals
            .iter()
            .map(|t| ScoringInput::deal_exists(*t));
        activities.chain(signals).chain(deals)
    }

    /// The live state these inputs give under `model`: see [`live_log_sum`].
    /// Open deals are not part of it.
    pub fn live_log_sum(&self, model: &ScoringModel) -> Option<f64> {
        let terms = self
            .activities
            .iter()
            .filter_map(|(k, t)| model.log_term(model.activity_signal(*k), *t))
            .chain(
                self.signals
                    .iter()
                    .filter_map(|(k, t)| model.log_term(k, *t)),
            );
        live_log_sum(terms)
    }
}

/// `ln Σ e^term` of a contact's live terms, computed in one stable pass
/// (the largest term factored out, the rest summed smallest first), so that
/// it does not depend on the order of the terms. `None` for no terms.
///
/// The stores keep the live state by adding one term at a time with
/// [`ScoringModel::log_add`]; the two agree to a relative error of a few
/// ulps per term (see [`crate::scoring::explain`]).
pub fn live_log_sum(terms: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut terms: Vec<f64> = terms.into_iter().collect();
    if terms.is_empty() {
        return None;
    }
    terms.sort_unstable_by(f64::total_cmp);
    let max = *terms.last()?;
    if !max.is_finite() {
        return Some(max);
    }
    let sum: f64 = terms.iter().map(|t| (t - max).exp()).sum();
    Some(max + sum.ln())
}
