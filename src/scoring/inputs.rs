//! What a store hands the rescoring pipeline: the scoring inputs of one
//! chunk of eligible contacts ([`Transaction::scoring_inputs`]), and how a
//! contact's live (log-scaled) score state is built from them.
//!
//! [`Transaction::scoring_inputs`]: crate::store::Transaction::scoring_inputs

use crate::domain::ContactInputs;

use super::{ScoringInput, ScoringModel};

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
