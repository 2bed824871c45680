//! Contact freshness: when a contact was last heard from and when each of
//! its decaying facts (email, phone, title, company) was last verified
//! ([`Freshness`]), the model that turns those times into a 0–100 score
//! ([`FreshnessModel`]), the time-invariant order in which stale contacts
//! are listed ([`FreshnessKey`]), and the query that lists them
//! ([`StaleQuery`]).
//!
//! Why the order can be an index: [`FreshnessKey`]; where the default
//! half-lives come from: [`FreshnessModel`].

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    Contact, ContactId, CursorList, CursorPosition, ListScope, PageRequest, SignalKind, Timestamp,
    error::{Error, FieldError, Result, ValidationErrors},
};

/// A fact of a contact whose verification time is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FreshField {
    /// The email address.
    Email,
    /// The phone number.
    Phone,
    /// The job title.
    Title,
    /// The company: the company link and the company name.
    Company,
}

impl FreshField {
    /// Every field, in this order.
    pub const ALL: [FreshField; 4] = [
        FreshField::Email,
        FreshField::Phone,
        FreshField::Title,
        FreshField::Company,
    ];

    /// Its name: `email`, `phone`, `title` or `company`.
    pub fn as_str(self) -> &'static str {
        match self {
            FreshField::Email => "email",
            FreshField::Phone => "phone",
            FreshField::Title => "title",
            FreshField::Company => "company",
        }
    }
}

impl std::fmt::Display for FreshField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The weights of the order key: `10⁶ / half-life in days` of the default
/// model, for email, phone, title, company and engagement, in that order.
/// The PostgreSQL migration `0010_freshness.sql` holds the same numbers.
pub const FRESHNESS_ORDER_WEIGHTS: [i64; 5] = [1738, 1006, 1409, 1409, 1409];

/// How fresh one contact's data is: when it was last heard from, when each
/// decaying fact was last verified, and the marks signals left. Kept by the
/// store on every write (see
/// [`FreshnessTx`](crate::store::FreshnessTx)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freshness {
    /// The contact.
    pub contact_id: ContactId,
    /// When the contact was created: the effective time of every fact
    /// never verified, and of engagement when there has been none.
    pub created_at: Timestamp,
    /// The latest `occurred_at` of its activities and signals.
    pub last_engaged_at: Option<Timestamp>,
    /// When its email address was last verified.
    pub email_verified_at: Option<Timestamp>,
    /// When its phone number was last verified.
    pub phone_verified_at: Option<Timestamp>,
    /// When its title was last verified.
    pub title_verified_at: Option<Timestamp>,
    /// When its company was last verified.
    pub company_verified_at: Option<Timestamp>,
    /// When an email to its current address last bounced; cleared when the
    /// email is verified or changed.
    pub email_invalid_at: Option<Timestamp>,
    /// The earliest job change whose title and company have not both been
    /// verified since; cleared when they have.
    pub reverify_since: Option<Timestamp>,
    /// When it last unsubscribed (not a sign of staleness by itself).
    pub unsubscribed_at: Option<Timestamp>,
}

/// Where a contact stands in the order of [`FreshnessTx::stale_contacts`]:
/// contacts with an invalid email first, then ascending `weighted`
/// (stalest first). It does not depend on the time it is compared at.
///
/// # Why the order can be an index
///
/// Each fact *i* decays exponentially with its half-life *hᵢ*: the chance
/// that it still holds `age` days after it was last seen true is
/// `2^(−age/hᵢ)`. The score is the geometric mean of the five facts'
/// survival fractions (email, phone, title, company, engagement):
///
/// ```text
/// score(now) = 100 · 2^(−(1/5)·Σᵢ (now − tᵢ)/hᵢ)
///            = 100 · 2^(−(1/5)·(now·Σᵢ 1/hᵢ − Σᵢ tᵢ/hᵢ))
/// ```
///
/// where `tᵢ` is the fact's effective time (its verification, or the
/// contact's creation when it was never verified; the last activity or
/// signal, or the creation). The only part that depends on the contact is
/// `Σᵢ tᵢ/hᵢ`, which does not depend on `now`: ordering contacts by it
/// orders them by score at every instant. Stores keep it as an exact
/// integer ([`Freshness::order_key`]: `Σᵢ wᵢ·tᵢ` with `tᵢ` in microseconds
/// and `wᵢ = 10⁶/hᵢ`, hᵢ in days, a whole number), so the in-memory store
/// and PostgreSQL (a generated `numeric` column) agree to the last digit.
///
/// [`FreshnessTx::stale_contacts`]: crate::store::FreshnessTx::stale_contacts
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FreshnessKey {
    /// `false` when the email is marked invalid (those come first).
    pub email_valid: bool,
    /// `Σᵢ wᵢ·tᵢ` ([`FRESHNESS_ORDER_WEIGHTS`], `tᵢ` in microseconds since
    /// the Unix epoch).
    pub weighted: i128,
}

/// What an invalid email takes off a contact's rank
/// ([`FreshnessKey::rank`]): 10²⁴, more than twice the largest weighted
/// sum (about 1.4·10²¹ at the latest instant accepted).
pub const INVALID_EMAIL_OFFSET: i128 = 1_000_000_000_000_000_000_000_000;

impl FreshnessKey {
    /// The key as one number, in the same order: `weighted`, less
    /// [`INVALID_EMAIL_OFFSET`] for an invalid email (PostgreSQL indexes
    /// this as `fresh_rank`, so that where matches end is one bound of an
    /// index range).
    pub fn rank(self) -> i128 {
        if self.email_valid {
            self.weighted
        } else {
            self.weighted - INVALID_EMAIL_OFFSET
        }
    }
}

fn micros(t: Timestamp) -> i128 {
    i128::from(t.timestamp_micros())
}

impl Freshness {
    /// The freshness of a contact just created: nothing verified, never
    /// heard from, no mark.
    pub fn new(contact_id: ContactId, created_at: Timestamp) -> Self {
        Freshness {
            contact_id,
            created_at,
            last_engaged_at: None,
            email_verified_at: None,
            phone_verified_at: None,
            title_verified_at: None,
            company_verified_at: None,
            email_invalid_at: None,
            reverify_since: None,
            unsubscribed_at: None,
        }
    }

    /// When `field` was last verified.
    pub fn verified_at(&self, field: FreshField) -> Option<Timestamp> {
        match field {
            FreshField::Email => self.email_verified_at,
            FreshField::Phone => self.phone_verified_at,
            FreshField::Title => self.title_verified_at,
            FreshField::Company => self.company_verified_at,
        }
    }

    fn verified_slot(&mut self, field: FreshField) -> &mut Option<Timestamp> {
        match field {
            FreshField::Email => &mut self.email_verified_at,
            FreshField::Phone => &mut self.phone_verified_at,
            FreshField::Title => &mut self.title_verified_at,
            FreshField::Company => &mut self.company_verified_at,
        }
    }

    /// The time `field` counts as verified at: its verification, or the
    /// contact's creation when it never was (an absent phone, title or
    /// company too: the absence may be as stale as a value).
    pub fn effective_verified_at(&self, field: FreshField) -> Timestamp {
        self.verified_at(field).unwrap_or(self.created_at)
    }

    /// The time the contact counts as last heard from: its last activity or
    /// signal, or its creation.
    pub fn effective_engaged_at(&self) -> Timestamp {
        self.last_engaged_at.unwrap_or(self.created_at)
    }

    /// The effective times of the five facts, in the order of
    /// [`FRESHNESS_ORDER_WEIGHTS`].
    fn fact_times(&self) -> [Timestamp; 5] {
        [
            self.effective_verified_at(FreshField::Email),
            self.effective_verified_at(FreshField::Phone),
            self.effective_verified_at(FreshField::Title),
            self.effective_verified_at(FreshField::Company),
            self.effective_engaged_at(),
        ]
    }

    /// The contact's place in the stale order (see the module docs).
    pub fn order_key(&self) -> FreshnessKey {
        let weighted = self
            .fact_times()
            .iter()
            .zip(FRESHNESS_ORDER_WEIGHTS)
            .map(|(t, w)| micros(*t) * i128::from(w))
            .sum();
        FreshnessKey {
            email_valid: self.email_invalid_at.is_none(),
            weighted,
        }
    }

    /// The freshness score at `now`, 0–100: the geometric mean of the five
    /// facts' survival fractions `2^(−age/half_life)`, times 100, rounded
    /// (see the module docs). A fact whose time is after `now` counts as
    /// fresh; the score never exceeds 100. A contact whose email is marked
    /// invalid scores 0: the address is known to be wrong, the most decayed
    /// a fact can be (the stale order lists those contacts first, too).
    pub fn score(&self, model: &FreshnessModel, now: Timestamp) -> u8 {
        if self.email_invalid_at.is_some() {
            return 0;
        }
        let now = micros(now);
        let exponent: f64 = self
            .fact_times()
            .iter()
            .zip(model.half_lives())
            .map(|(t, h)| (now - micros(*t)) as f64 / MICROS_PER_DAY / h)
            .sum::<f64>()
            / 5.0;
        let score = (100.0 * (-exponent).exp2()).round();
        if score.is_nan() {
            return 0;
        }
        score.clamp(0.0, 100.0) as u8
    }

    /// The freshness after an activity (`signal` `None`) or a signal of
    /// kind `signal` that occurred at `at`: `last_engaged_at` becomes the
    /// later of the two (an older one, backfilled, does not move it back),
    /// and
    ///
    /// - `email_bounced` marks the email invalid (the later bounce is
    ///   kept), unless the email was verified after the bounce;
    /// - `job_changed` asks for title and company to be verified again
    ///   (the earliest such change is kept), unless both were verified
    ///   after it;
    /// - `unsubscribed` records the unsubscription (the later one is kept).
    pub fn engaged(&self, signal: Option<&SignalKind>, at: Timestamp) -> Freshness {
        let mut next = self.clone();
        next.last_engaged_at = later(self.last_engaged_at, at);
        let Some(kind) = signal else {
            return next;
        };
        let since = |v: Option<Timestamp>| v.is_some_and(|v| v >= at);
        if *kind == SignalKind::EMAIL_BOUNCED && self.email_verified_at.is_none_or(|v| at >= v) {
            next.email_invalid_at = later(self.email_invalid_at, at);
        } else if *kind == SignalKind::JOB_CHANGED
            && !(since(self.title_verified_at) && since(self.company_verified_at))
        {
            next.reverify_since = Some(self.reverify_since.map_or(at, |r| r.min(at)));
        } else if *kind == SignalKind::UNSUBSCRIBED {
            next.unsubscribed_at = later(self.unsubscribed_at, at);
        }
        next
    }

    /// The freshness after `fields` were verified at `at`: their verified
    /// times become `at`; verifying the email clears its invalid mark; the
    /// re-verification a job change asked for is cleared once title and
    /// company have both been verified at or after it (in one call or
    /// two).
    pub fn verified(&self, fields: &[FreshField], at: Timestamp) -> Freshness {
        let mut next = self.clone();
        for f in fields {
            *next.verified_slot(*f) = Some(at);
            if *f == FreshField::Email {
                next.email_invalid_at = None;
            }
        }
        if let Some(since) = next.reverify_since {
            let done = |v: Option<Timestamp>| v.is_some_and(|v| v >= since);
            if done(next.title_verified_at) && done(next.company_verified_at) {
                next.reverify_since = None;
            }
        }
        next
    }

    /// The freshness after the contact's email address changed: the new
    /// address is unverified and carries no bounce.
    pub fn email_changed(&self) -> Freshness {
        Freshness {
            email_verified_at: None,
            email_invalid_at: None,
            ..self.clone()
        }
    }

    /// The survivor's freshness after `loser` was merged into it: the later
    /// of the two engagements; its own verified times and marks.
    pub fn merged(&self, loser: &Freshness) -> Freshness {
        Freshness {
            last_engaged_at: match (self.last_engaged_at, loser.last_engaged_at) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            },
            ..self.clone()
        }
    }

    /// Why the contact matches `query` at the time `bounds` were made
    /// for (empty when it does not), in the order of [`StaleReason`].
    pub fn stale_reasons(&self, bounds: &StaleBounds) -> Vec<StaleReason> {
        let mut reasons = Vec::new();
        if bounds.invalid_email && self.email_invalid_at.is_some() {
            reasons.push(StaleReason::InvalidEmail);
        }
        if let Some(before) = bounds.inactive_before
            && self.effective_engaged_at() < before
        {
            reasons.push(StaleReason::Inactive);
        }
        if let Some(before) = bounds.unverified_before {
            for f in FreshField::ALL {
                if self.effective_verified_at(f) < before {
                    reasons.push(StaleReason::Unverified(f));
                }
            }
            if self.reverify_since.is_some() {
                reasons.push(StaleReason::Reverify);
            }
        }
        reasons
    }
}

fn later(current: Option<Timestamp>, at: Timestamp) -> Option<Timestamp> {
    Some(current.map_or(at, |c| c.max(at)))
}

const MICROS_PER_DAY: f64 = 86_400_000_000.0;

/// Half-lives, in days, of the five facts a freshness score weighs:
/// email, phone, title, company (how long until half of them no longer
/// hold) and engagement (how long a contact's last activity or signal
/// keeps half its worth). [`Default`] takes them from published decay
/// rates of B2B contact data.
///
/// # Default half-lives, from published rates
///
/// A fact that decays at a rate *x* per period has a half-life of
/// `ln 2 / −ln(1 − x)` periods:
///
/// - **email: 3.6 % a month** (email addresses going bad): 18.9 months,
///   **575.4 days**;
/// - **phone: 2.1 % a month** (≈ 22.5 % a year, the other published rate
///   for B2B contact data as a whole): 32.7 months, **994.0 days**;
/// - **title, company and engagement: 30 % a year** (the rate most often
///   quoted for B2B contact data going stale, largely by job changes):
///   1.94 years, **709.8 days**.
///
/// The defaults are those half-lives rounded so that `10⁶/h` is a whole
/// number (weights 1738, 1006, 1409, 1409, 1409; each half-life moves by
/// less than 0.02 %). A contact neither verified nor heard from for a year
/// scores 70 with them: 30 % gone in a year, as the published rate says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FreshnessModel {
    email: f64,
    phone: f64,
    title: f64,
    company: f64,
    engagement: f64,
}

impl Default for FreshnessModel {
    /// `10⁶ / w` days for each weight `w` of [`FRESHNESS_ORDER_WEIGHTS`]:
    /// email 575.4 (3.6 % a month), phone 994.0 (2.1 % a month), title,
    /// company and engagement 709.7 (30 % a year).
    fn default() -> Self {
        let h = |w: i64| 1_000_000.0 / w as f64;
        let [e, p, t, c, g] = FRESHNESS_ORDER_WEIGHTS;
        FreshnessModel {
            email: h(e),
            phone: h(p),
            title: h(t),
            company: h(c),
            engagement: h(g),
        }
    }
}

impl FreshnessModel {
    /// A model with these half-lives, in days: each finite and positive.
    ///
    /// Errors: [`Error::Validation`] naming each half-life that is not
    /// (`email`, `phone`, `title`, `company`, `engagement`).
    pub fn new(email: f64, phone: f64, title: f64, company: f64, engagement: f64) -> Result<Self> {
        let mut errors = ValidationErrors::new();
        for (field, h) in [
            ("email", email),
            ("phone", phone),
            ("title", title),
            ("company", company),
            ("engagement", engagement),
        ] {
            if !(h.is_finite() && h > 0.0) {
                errors.push(FieldError::new(
                    field,
                    "out_of_range",
                    "a half-life must be a positive number of days",
                ));
            }
        }
        if !errors.is_empty() {
            return Err(errors.into());
        }
        Ok(FreshnessModel {
            email,
            phone,
            title,
            company,
            engagement,
        })
    }

    /// The half-life, in days, of something that decays at `rate` (0–1,
    /// exclusive) per `period_days`: `period · ln 2 / −ln(1 − rate)`.
    /// `None` for a rate outside (0, 1).
    pub fn half_life_days(rate: f64, period_days: f64) -> Option<f64> {
        (rate > 0.0 && rate < 1.0 && period_days > 0.0)
            .then(|| period_days * std::f64::consts::LN_2 / -(1.0 - rate).ln())
    }

    /// The half-life of `field`'s verification, in days.
    pub fn half_life(&self, field: FreshField) -> f64 {
        match field {
            FreshField::Email => self.email,
            FreshField::Phone => self.phone,
            FreshField::Title => self.title,
            FreshField::Company => self.company,
        }
    }

    /// The half-life of engagement, in days.
    pub fn engagement_half_life(&self) -> f64 {
        self.engagement
    }

    fn half_lives(&self) -> [f64; 5] {
        [
            self.email,
            self.phone,
            self.title,
            self.company,
            self.engagement,
        ]
    }
}

/// The most days a [`StaleQuery`] may look back: about a hundred years.
pub const MAX_STALE_DAYS: u32 = 36_525;

/// Which contacts [`FreshnessTx::stale_contacts`] lists: those matching
/// any condition given.
///
/// [`FreshnessTx::stale_contacts`]: crate::store::FreshnessTx::stale_contacts
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StaleQuery {
    /// No activity or signal for this many days (1–[`MAX_STALE_DAYS`]);
    /// a contact never heard from counts from its creation.
    pub inactive_days: Option<u32>,
    /// A field not verified for this many days (1–[`MAX_STALE_DAYS`]):
    /// any of email, phone, title and company (one never verified counts
    /// from the contact's creation, present or not), or a job change not
    /// verified since.
    pub unverified_days: Option<u32>,
    /// An email marked invalid (by a bounce).
    pub invalid_email: bool,
    /// Which page.
    pub page: PageRequest,
}

/// A [`StaleQuery`]'s conditions as instants: what a contact is compared
/// with ([`Freshness::stale_reasons`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaleBounds {
    /// Inactive when last heard from before this.
    pub inactive_before: Option<Timestamp>,
    /// Unverified when a field was last verified before this.
    pub unverified_before: Option<Timestamp>,
    /// Whether an invalid email matches.
    pub invalid_email: bool,
    /// Where matches end in the stale order: no contact whose
    /// [`FreshnessKey::rank`] is at or above this matches (`None`: no such
    /// place). See [`StaleQuery::bounds`].
    pub rank_below: Option<i128>,
}

impl StaleQuery {
    /// Checks the query and turns its conditions into instants before
    /// `now`; the limit is checked with them.
    ///
    /// The bounds also say where, in the stale order, matches end
    /// ([`StaleBounds::rank_below`]), so that a list does not read the
    /// rest of the order to find nothing. Without `unverified_days` (whose
    /// job changes can be anywhere in the order): with `inactive_days` a
    /// contact last heard from before `B` has a key below
    /// `w_engagement·B + (Σ other weights)·(now + 1 day)`, its other facts
    /// being dated by the store no later than the call (a day of margin
    /// for clocks); with `invalid_email` alone, no valid email matches.
    ///
    /// Errors: [`Error::Validation`] on `stale_query` when it asks for
    /// nothing (no days and no invalid email), on `inactive_days` or
    /// `unverified_days` out of 1–[`MAX_STALE_DAYS`], on `limit`; every
    /// error at once.
    pub fn bounds(&self, now: Timestamp) -> Result<StaleBounds> {
        let mut errors = ValidationErrors::new();
        if self.inactive_days.is_none() && self.unverified_days.is_none() && !self.invalid_email {
            errors.push(FieldError::new(
                "stale_query",
                "required",
                "must ask for inactive_days, unverified_days or invalid_email",
            ));
        }
        let mut before = |field: &str, days: Option<u32>| match days {
            Some(d) if (1..=MAX_STALE_DAYS).contains(&d) => {
                Some(now - chrono::Duration::days(i64::from(d)))
            }
            Some(d) => {
                errors.push(FieldError::new(
                    field,
                    "out_of_range",
                    format!("must be 1 to {MAX_STALE_DAYS} days, got {d}"),
                ));
                None
            }
            None => None,
        };
        let inactive_before = before("inactive_days", self.inactive_days);
        let unverified_before = before("unverified_days", self.unverified_days);
        if let Err(Error::Validation(e)) = self.page.checked_limit() {
            for f in e {
                errors.push(f);
            }
        }
        if !errors.is_empty() {
            return Err(errors.into());
        }
        Ok(StaleBounds {
            inactive_before,
            unverified_before,
            invalid_email: self.invalid_email,
            rank_below: rank_limit(inactive_before, unverified_before, now),
        })
    }

    /// The list this query's cursors belong to: its conditions (not its
    /// page, nor the time it ran at).
    pub fn list(&self) -> ListScope {
        CursorList::StaleContacts.scoped(&(
            self.inactive_days,
            self.unverified_days,
            self.invalid_email,
        ))
    }
}

/// The rank no matching contact reaches (see [`StaleQuery::bounds`]).
fn rank_limit(
    inactive_before: Option<Timestamp>,
    unverified_before: Option<Timestamp>,
    now: Timestamp,
) -> Option<i128> {
    if unverified_before.is_some() {
        return None;
    }
    let Some(before) = inactive_before else {
        // Invalid emails only: every rank below the valid ones'.
        return Some(-INVALID_EMAIL_OFFSET / 2);
    };
    let [e, p, t, c, g] = FRESHNESS_ORDER_WEIGHTS.map(i128::from);
    let latest = micros(now) + 86_400_000_000;
    Some(g * micros(before) + (e + p + t + c) * latest)
}

/// Why a contact is listed as stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StaleReason {
    /// Its email is marked invalid.
    InvalidEmail,
    /// Not heard from for the query's `inactive_days`.
    Inactive,
    /// This field not verified for the query's `unverified_days`.
    Unverified(FreshField),
    /// A job change asks for its title and company to be verified again.
    Reverify,
}

/// A contact [`FreshnessTx::stale_contacts`] lists, with its freshness
/// and the reasons it matched (those of the conditions the query gave).
///
/// [`FreshnessTx::stale_contacts`]: crate::store::FreshnessTx::stale_contacts
#[derive(Debug, Clone, PartialEq)]
pub struct StaleContact {
    /// The contact.
    pub contact: Contact,
    /// Its freshness.
    pub freshness: Freshness,
    /// Why it matched.
    pub reasons: Vec<StaleReason>,
}

/// A position in the stale order, as cursors hold it: the email's
/// validity, the weighted sum (decimal text: it can exceed 64 bits), the
/// contact id.
pub type StalePosition = (bool, String, Uuid);

impl FreshnessKey {
    /// This key and `id` as a cursor position.
    pub fn position(self, id: ContactId) -> StalePosition {
        (self.email_valid, self.weighted.to_string(), id.as_uuid())
    }

    /// The key a cursor position holds (checked when it was decoded).
    pub fn of_position(p: &StalePosition) -> Option<(FreshnessKey, ContactId)> {
        let weighted = p.1.parse::<i128>().ok()?;
        Some((
            FreshnessKey {
                email_valid: p.0,
                weighted,
            },
            ContactId::from_uuid(p.2),
        ))
    }

    /// Compares two keys with their contacts' ids: the stale order.
    pub fn cmp_with(self, id: ContactId, other: FreshnessKey, other_id: ContactId) -> Ordering {
        (self, id.as_uuid()).cmp(&(other, other_id.as_uuid()))
    }
}

/// The largest weighted sum a position may hold: every fact at the latest
/// instant accepted, with room to spare.
const MAX_WEIGHTED: i128 = 1 << 80;

impl CursorPosition for (bool, String, Uuid) {
    fn check(&self, _: CursorList) -> std::result::Result<(), FieldError> {
        match self.1.parse::<i128>() {
            Ok(k) if k.abs() <= MAX_WEIGHTED => Ok(()),
            _ => Err(FieldError::new(
                "cursor",
                "invalid_format",
                "the freshness key is not a whole number in range",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(days: i64) -> Timestamp {
        chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default()
            + chrono::Duration::days(days)
    }

    #[test]
    fn the_default_weights_are_the_published_rates_half_lives() {
        let year = 365.2425;
        let expected = [
            FreshnessModel::half_life_days(0.036, year / 12.0),
            FreshnessModel::half_life_days(0.021, year / 12.0),
            FreshnessModel::half_life_days(0.30, year),
            FreshnessModel::half_life_days(0.30, year),
            FreshnessModel::half_life_days(0.30, year),
        ];
        for (w, h) in FRESHNESS_ORDER_WEIGHTS.iter().zip(expected) {
            let h = h.unwrap_or_default();
            assert_eq!(*w, (1e6 / h).round() as i64);
        }
        let m = FreshnessModel::default();
        assert!((m.half_life(FreshField::Email) - 575.4).abs() < 0.1);
    }

    #[test]
    fn a_contact_untouched_for_a_year_scores_seventy() {
        let f = Freshness::new(ContactId::new(), at(0));
        let model = FreshnessModel::default();
        assert_eq!(f.score(&model, at(0)), 100);
        assert_eq!(f.score(&model, at(365)), 70);
    }

    #[test]
    fn a_half_life_outside_the_positive_numbers_is_refused() {
        let e = FreshnessModel::new(1.0, 0.0, f64::NAN, 1.0, -1.0).unwrap_err();
        let Error::Validation(v) = e else {
            panic!("not a validation error: {e:?}")
        };
        let fields: Vec<&str> = v.as_slice().iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["phone", "title", "engagement"]);
    }
}
