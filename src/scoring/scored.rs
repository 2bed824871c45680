//! What the scoring model reads and gives: one input ([`ScoringInput`]), a
//! score with its explanation ([`Scored`]) and one signal's part in it
//! ([`Contribution`]).

use serde::{Deserialize, Serialize};

use super::ScoringModel;
use std::cmp::Ordering;

use crate::domain::{Activity, Score, Signal, SignalKind, Timestamp};

/// One input to [`ScoringModel::score`]: a signal kind and when it happened.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ScoringInput {
    /// What happened.
    pub kind: SignalKind,
    /// When it happened.
    pub occurred_at: Timestamp,
}

impl ScoringInput {
    /// An input of `kind` at `occurred_at`.
    pub fn new(kind: SignalKind, occurred_at: Timestamp) -> Self {
        ScoringInput { kind, occurred_at }
    }

    /// A recorded behavioural signal, which counts as its own kind.
    pub fn from_signal(signal: &Signal) -> Self {
        ScoringInput::new(signal.kind.clone(), signal.occurred_at)
    }

    /// An activity, counted as the signal `model` maps its kind to
    /// (see [`ScoringModel::activity_signal`]).
    pub fn from_activity(activity: &Activity, model: &ScoringModel) -> Self {
        ScoringInput::new(
            model.activity_signal(activity.kind).clone(),
            activity.occurred_at,
        )
    }

    /// The contact has an open deal; `at` is when it was opened (it decays
    /// from then like any signal; pass `now` for a bonus that does not decay).
    pub fn deal_exists(at: Timestamp) -> Self {
        ScoringInput::new(SignalKind::DEAL_EXISTS, at)
    }
}

impl From<&Signal> for ScoringInput {
    fn from(signal: &Signal) -> Self {
        ScoringInput::from_signal(signal)
    }
}

impl From<Signal> for ScoringInput {
    fn from(signal: Signal) -> Self {
        ScoringInput::new(signal.kind, signal.occurred_at)
    }
}

/// What one counted signal adds to a score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    /// The signal kind.
    pub kind: SignalKind,
    /// Its weight in the model.
    pub base_weight: f64,
    /// `0.5^(age_days / half_life_days)`, in [0, 1]; 1 for a signal in the future.
    pub decay_factor: f64,
    /// `base_weight × decay_factor`.
    pub contribution: f64,
    /// When it happened.
    pub occurred_at: Timestamp,
}

impl Contribution {
    /// The explanation order: largest contribution first, then by kind, then
    /// oldest first. Two contributions that compare equal are identical, so
    /// sorting by this order gives one sequence whatever the input order.
    pub fn explanation_order(&self, other: &Self) -> Ordering {
        other
            .contribution
            .total_cmp(&self.contribution)
            .then_with(|| self.kind.cmp(&other.kind))
            .then_with(|| self.occurred_at.cmp(&other.occurred_at))
    }
}

/// A contact's score and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Scored {
    /// The normalised score, 0–100.
    pub score: Score,
    /// The sum of the (undecayed) weights of the counted signals.
    pub raw_sum: f64,
    /// The sum of the decayed contributions of the counted signals.
    pub decayed_sum: f64,
    /// How many signals were counted (a positive weight, within the age cutoff).
    pub signal_count: usize,
    /// The largest contributions, at most [`ScoringModel::top_signals`] of
    /// them, in [`Contribution::explanation_order`].
    pub top_signals: Vec<Contribution>,
}
