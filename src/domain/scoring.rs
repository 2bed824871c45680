//! What a store hands the rescoring pipeline: which contacts
//! ([`InputsRequest`]) and each one's scoring inputs as stored
//! ([`ContactInputs`]). The model that scores them is [`crate::scoring`].

use super::{
    ActivityKind, Contact, ContactId, Score, SignalKind, Timestamp, check_optional_timestamp,
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

/// A lead score to store for one contact: what the batch writes back
/// ([`ScoringTx::write_scores`](crate::store::ScoringTx::write_scores)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContactScore {
    /// The contact.
    pub contact: ContactId,
    /// Its score.
    pub score: Score,
}

impl ContactScore {
    /// `contact`'s score is `score`.
    pub fn new(contact: ContactId, score: Score) -> Self {
        ContactScore { contact, score }
    }
}

/// A contact's live score state: `ln Σ weight·2^(t/half_life)` over the
/// activities and signals it counts (see [`crate::scoring::live`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LiveState {
    /// The contact.
    pub contact: ContactId,
    /// The state; `None` when the contact has nothing counted (or the store
    /// keeps no live scores).
    pub log: Option<f64>,
}

impl LiveState {
    /// `contact`'s live state is `log`.
    pub fn new(contact: ContactId, log: Option<f64>) -> Self {
        LiveState { contact, log }
    }
}

/// A contact with its live state, as the live top leads rank it
/// ([`ScoringTx::live_top_leads`](crate::store::ScoringTx::live_top_leads)).
#[derive(Debug, Clone, PartialEq)]
pub struct LiveRanked {
    /// The contact, as stored.
    pub contact: Contact,
    /// Its live state.
    pub log: f64,
}

/// How many of a company's contacts make its account score
/// ([`LiveRankedAccount`]).
pub const ACCOUNT_TOP_CONTACTS: usize = 3;

/// A company with the live states of its best contacts, as the live top
/// accounts rank it
/// ([`ScoringTx::live_top_accounts`](crate::store::ScoringTx::live_top_accounts)).
#[derive(Debug, Clone, PartialEq)]
pub struct LiveRankedAccount {
    /// The company, as stored.
    pub company: super::Company,
    /// Its best active contacts with their live states (at most
    /// [`ACCOUNT_TOP_CONTACTS`], never empty), highest state first, ties by
    /// contact id, descending (as the live top leads order them).
    pub best_contacts: Vec<(ContactId, f64)>,
}

impl LiveRankedAccount {
    /// The live state of its best contact.
    pub fn best_log(&self) -> f64 {
        self.best_contacts
            .first()
            .map_or(f64::NEG_INFINITY, |(_, l)| *l)
    }

    /// The live state of its best contacts together: the log of the sum of
    /// their decayed sums (`ln Σ e^logᵢ`, computed as `l₁ + ln(1 + Σ
    /// e^(lᵢ − l₁))` so that it never overflows). Like every live state it
    /// orders accounts the same way at every instant.
    ///
    /// The sum is taken as PostgreSQL's statement takes it, term by term
    /// from 1 (`(1 + e^(l₂−l₁)) + e^(l₃−l₁)`), so that both give the same
    /// bits.
    pub fn top_log(&self) -> f64 {
        let best = self.best_log();
        let sum = self
            .best_contacts
            .iter()
            .skip(1)
            .fold(1.0, |sum, (_, l)| sum + (l - best).exp());
        best + sum.ln()
    }

    /// The ranking of accounts: by [`top_log`](Self::top_log), then
    /// [`best_log`](Self::best_log), both highest first, then by company id,
    /// descending (as the live top leads break ties).
    pub fn rank(a: &Self, b: &Self) -> std::cmp::Ordering {
        b.top_log()
            .total_cmp(&a.top_log())
            .then(b.best_log().total_cmp(&a.best_log()))
            .then(b.company.id.cmp(&a.company.id))
    }

    /// The order of contacts within an account: state highest first, then
    /// id descending.
    pub fn contact_order(a: &(ContactId, f64), b: &(ContactId, f64)) -> std::cmp::Ordering {
        b.1.total_cmp(&a.1).then(b.0.cmp(&a.0))
    }
}
