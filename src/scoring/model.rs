//! The lead-scoring model: its configuration (validated once, by the
//! builder), and the pure functions that turn a contact's signals into a
//! [`Score`] with an explanation. See the [module docs](crate::scoring) for
//! the formula.

use std::{cmp::Ordering, collections::BTreeMap, f64::consts::LN_2};

use serde::{Deserialize, Serialize};

use crate::domain::{ActivityKind, Score, SignalKind, Timestamp};
use crate::error::{FieldError, ValidationErrors};

pub use super::scored::{Contribution, Scored, ScoringInput};

/// The origin of the time axis of [`ScoringModel::log_term`]:
/// 2020-01-01T00:00:00Z, in seconds since the Unix epoch.
///
/// A stored log-scaled sum is only meaningful together with this origin and
/// the model (weights and half-life) that produced it.
pub const LOG_EPOCH_UNIX_SECONDS: i64 = 1_577_836_800;

const SECONDS_PER_DAY: f64 = 86_400.0;

/// The weights of the reference pipeline, per signal kind.
pub const REFERENCE_WEIGHTS: [(SignalKind, f64); 8] = [
    (SignalKind::EMAIL_OPEN, 5.0),
    (SignalKind::EMAIL_CLICK, 10.0),
    (SignalKind::PAGE_VIEW, 2.0),
    (SignalKind::PRICING_PAGE_VIEW, 15.0),
    (SignalKind::DEMO_REQUEST, 30.0),
    (SignalKind::MEETING_BOOKED, 25.0),
    (SignalKind::FORM_SUBMIT, 8.0),
    (SignalKind::DEAL_EXISTS, 20.0),
];

/// The signal each activity kind counts as in the reference pipeline.
pub const REFERENCE_ACTIVITY_SIGNALS: [(ActivityKind, SignalKind); 5] = [
    (ActivityKind::Email, SignalKind::EMAIL_OPEN),
    (ActivityKind::Call, SignalKind::MEETING_BOOKED),
    (ActivityKind::Meeting, SignalKind::MEETING_BOOKED),
    (ActivityKind::Note, SignalKind::FORM_SUBMIT),
    (ActivityKind::Task, SignalKind::PAGE_VIEW),
];

/// The reference half-life, in days.
pub const REFERENCE_HALF_LIFE_DAYS: f64 = 30.0;
/// The reference age cutoff: signals older than this many half-lives are ignored.
pub const REFERENCE_IGNORE_AFTER_HALF_LIVES: f64 = 2.0;
/// The reference lookback window, in days: only contacts created within it are scored.
pub const REFERENCE_LOOKBACK_DAYS: f64 = 90.0;
/// The reference cap is this multiple of the sum of the weights.
pub const REFERENCE_CAP_WEIGHT_MULTIPLE: f64 = 2.0;
/// The reference number of signals kept to explain a score.
pub const REFERENCE_TOP_SIGNALS: usize = 3;

/// The shortest half-life a model takes: an hour (1/24 of a day). The
/// live score keeps each signal as `ln(weight) + t / half-life · ln 2`,
/// with `t` the time since 2020: with a half-life of an hour that term is
/// at most about 7·10⁷ up to the year 9999, kept to 10⁻⁸ by a 64-bit
/// float; with a half-life of nanoseconds the live and batch scores of
/// one contact drifted apart, and then the live state overflowed.
pub const MIN_HALF_LIFE_DAYS: f64 = 1.0 / 24.0;

/// The settings of a [`ScoringModel`], as plain data.
///
/// This is the (de)serialisable form: every field may be left out of JSON and
/// then takes the reference value, and unknown fields are rejected. A
/// `ScoringConfig` is not validated; turn it into a model with
/// [`ScoringModel::from_config`] (or `ScoringModel::try_from`), which reports
/// every invalid setting at once.
///
/// Read it with [`FromJson::from_json`](crate::domain::FromJson::from_json)
/// (or `from_json_slice`, `from_json_value`): a wrong type or an unknown
/// field is then an [`Error::Validation`](crate::Error::Validation) naming
/// the field's path (`weights.email_open`), which plain
/// `serde_json::from_str` does not do. [`ScoringModel`] reads the same way
/// and then reports every invalid setting too.
///
/// ```
/// use crm_core::scoring::{ScoringConfig, ScoringModel};
///
/// let config: ScoringConfig = serde_json::from_str(
///     r#"{"half_life_days": 14, "weights": {"webinar_attended": 12}, "cap": 50}"#,
/// ).unwrap();
/// let model = ScoringModel::from_config(config).unwrap();
/// assert_eq!(model.half_life_days(), 14.0);
/// // Weights given in JSON replace the whole table.
/// assert_eq!(model.weights().len(), 1);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ScoringConfig {
    /// Weight per signal kind: finite and ≥ 0. A kind that is absent (or
    /// weighs 0) counts nothing.
    pub weights: BTreeMap<SignalKind, f64>,
    /// Half-life of a signal's contribution, in days: finite and at least
    /// [`MIN_HALF_LIFE_DAYS`] (an hour).
    pub half_life_days: f64,
    /// Signals older than this many half-lives are ignored (finite, > 0);
    /// `None` (JSON `null`) keeps signals of any age.
    pub ignore_after_half_lives: Option<f64>,
    /// Only contacts created within this many days are eligible: finite, ≥ 0.
    pub lookback_days: f64,
    /// The decayed sum that maps to a score of 100 (finite, > 0); `None`
    /// means twice the sum of the weights.
    pub cap: Option<f64>,
    /// How many signals the explanation keeps.
    pub top_signals: usize,
    /// The signal each activity kind counts as. Kinds left out keep the
    /// reference mapping.
    pub activity_signals: BTreeMap<ActivityKind, SignalKind>,
}

impl Default for ScoringConfig {
    /// The reference configuration.
    fn default() -> Self {
        ScoringConfig {
            weights: REFERENCE_WEIGHTS.into_iter().collect(),
            half_life_days: REFERENCE_HALF_LIFE_DAYS,
            ignore_after_half_lives: Some(REFERENCE_IGNORE_AFTER_HALF_LIVES),
            lookback_days: REFERENCE_LOOKBACK_DAYS,
            cap: None,
            top_signals: REFERENCE_TOP_SIGNALS,
            activity_signals: REFERENCE_ACTIVITY_SIGNALS.into_iter().collect(),
        }
    }
}

/// A validated lead-scoring model. Cheap to share (`Clone`, `Send`, `Sync`);
/// every method is pure.
///
/// [`ScoringModel::default()`] is the reference model; build another with
/// [`ScoringModel::builder()`] or from a [`ScoringConfig`]. It serialises as
/// its `ScoringConfig` and is validated again when deserialised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ScoringConfig", into = "ScoringConfig")]
pub struct ScoringModel {
    /// The settings, with `activity_signals` complete.
    config: ScoringConfig,
    /// The cap in effect.
    cap: f64,
    /// The signal of each activity kind, indexed by [`activity_index`].
    activity_signals: [SignalKind; 5],
}

impl Default for ScoringModel {
    /// The reference model.
    fn default() -> Self {
        let config = ScoringConfig::default();
        let cap = REFERENCE_CAP_WEIGHT_MULTIPLE * weight_sum(&config.weights);
        ScoringModel {
            config,
            cap,
            activity_signals: REFERENCE_ACTIVITY_SIGNALS.map(|(_, s)| s),
        }
    }
}

impl TryFrom<ScoringConfig> for ScoringModel {
    type Error = ValidationErrors;

    fn try_from(config: ScoringConfig) -> Result<Self, Self::Error> {
        ScoringModel::from_config(config)
    }
}

impl crate::domain::FromJson for ScoringConfig {}

/// Reads a [`ScoringConfig`] with errors naming their field, then builds the
/// model, reporting every invalid setting.
impl crate::domain::FromJson for ScoringModel {
    fn from_json_slice(json: &[u8]) -> crate::Result<Self> {
        let config = <ScoringConfig as crate::domain::FromJson>::from_json_slice(json)?;
        Ok(ScoringModel::from_config(config)?)
    }

    fn from_json_value(value: serde_json::Value) -> crate::Result<Self> {
        let config = <ScoringConfig as crate::domain::FromJson>::from_json_value(value)?;
        Ok(ScoringModel::from_config(config)?)
    }
}

impl From<ScoringModel> for ScoringConfig {
    fn from(model: ScoringModel) -> Self {
        model.config
    }
}

/// Builds a [`ScoringModel`], starting from the reference settings. Nothing
/// is checked until [`build`](Self::build), which reports every invalid
/// setting at once.
///
/// ```
/// use crm_core::scoring::ScoringModel;
/// use crm_core::domain::SignalKind;
///
/// let model = ScoringModel::builder()
///     .weight(SignalKind::parse("webinar_attended").unwrap(), 12.0)
///     .half_life_days(14.0)
///     .top_signals(5)
///     .build()
///     .unwrap();
/// assert_eq!(model.top_signals(), 5);
///
/// let err = ScoringModel::builder().half_life_days(0.0).cap(-1.0).build().unwrap_err();
/// let fields: Vec<_> = err.as_slice().iter().map(|e| e.field.as_str()).collect();
/// assert_eq!(fields, ["half_life_days", "cap"]);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ScoringModelBuilder {
    config: ScoringConfig,
}

impl From<ScoringConfig> for ScoringModelBuilder {
    fn from(config: ScoringConfig) -> Self {
        ScoringModelBuilder { config }
    }
}

impl ScoringModelBuilder {
    /// Sets the weight of a signal kind (adding the kind if it was not weighed).
    pub fn weight(mut self, kind: SignalKind, weight: f64) -> Self {
        self.config.weights.insert(kind, weight);
        self
    }

    /// Removes a signal kind from the weights: it will count nothing.
    pub fn without_weight(mut self, kind: &SignalKind) -> Self {
        self.config.weights.remove(kind);
        self
    }

    /// Removes every weight, to define the table from scratch.
    pub fn clear_weights(mut self) -> Self {
        self.config.weights.clear();
        self
    }

    /// Sets the half-life, in days (finite, > 0).
    pub fn half_life_days(mut self, days: f64) -> Self {
        self.config.half_life_days = days;
        self
    }

    /// Ignores signals older than `n` half-lives (finite, > 0).
    pub fn ignore_after_half_lives(mut self, n: f64) -> Self {
        self.config.ignore_after_half_lives = Some(n);
        self
    }

    /// Keeps signals of any age: [`ScoringModel::score`] then agrees with
    /// [`ScoringModel::score_from_log`] for every signal in the past.
    pub fn no_age_cutoff(mut self) -> Self {
        self.config.ignore_after_half_lives = None;
        self
    }

    /// Sets the lookback window of [`ScoringModel::is_eligible`], in days
    /// (finite, ≥ 0).
    pub fn lookback_days(mut self, days: f64) -> Self {
        self.config.lookback_days = days;
        self
    }

    /// Sets the decayed sum that maps to 100 (finite, > 0).
    pub fn cap(mut self, cap: f64) -> Self {
        self.config.cap = Some(cap);
        self
    }

    /// Derives the cap from the weights: twice their sum (the default).
    pub fn cap_from_weights(mut self) -> Self {
        self.config.cap = None;
        self
    }

    /// Sets how many signals the explanation keeps.
    pub fn top_signals(mut self, n: usize) -> Self {
        self.config.top_signals = n;
        self
    }

    /// Sets the signal an activity kind counts as.
    pub fn activity_signal(mut self, activity: ActivityKind, signal: SignalKind) -> Self {
        self.config.activity_signals.insert(activity, signal);
        self
    }

    /// Validates the settings.
    pub fn build(self) -> Result<ScoringModel, ValidationErrors> {
        ScoringModel::from_config(self.config)
    }
}

impl ScoringModel {
    /// A builder starting from the reference settings.
    pub fn builder() -> ScoringModelBuilder {
        ScoringModelBuilder::default()
    }

    /// Validates `config`, reporting every invalid setting under its field
    /// name (`weights.<kind>`, `half_life_days`, `ignore_after_half_lives`,
    /// `lookback_days`, `cap`).
    pub fn from_config(mut config: ScoringConfig) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let mut weights_ok = true;
        for (kind, &weight) in &config.weights {
            if !(weight.is_finite() && weight >= 0.0) {
                weights_ok = false;
                errors.push(FieldError::new(
                    format!("weights.{kind}"),
                    "out_of_range",
                    format!("must be a finite number ≥ 0, got {weight}"),
                ));
            }
        }
        let h = config.half_life_days;
        if !(h.is_finite() && h >= MIN_HALF_LIFE_DAYS) {
            errors.push(FieldError::new(
                "half_life_days",
                "out_of_range",
                format!("must be a finite number of days ≥ 1/24 (an hour), got {h}"),
            ));
        }
        if let Some(n) = config.ignore_after_half_lives
            && !(n.is_finite() && n > 0.0)
        {
            errors.push(FieldError::new(
                "ignore_after_half_lives",
                "out_of_range",
                format!("must be a finite number > 0 (or none, for no cutoff), got {n}"),
            ));
        }
        let w = config.lookback_days;
        if !(w.is_finite() && w >= 0.0) {
            errors.push(FieldError::new(
                "lookback_days",
                "out_of_range",
                format!("must be a finite number of days ≥ 0, got {w}"),
            ));
        }
        let cap = match config.cap {
            Some(cap) => {
                if !(cap.is_finite() && cap > 0.0) {
                    errors.push(FieldError::new(
                        "cap",
                        "out_of_range",
                        format!("must be a finite number > 0, got {cap}"),
                    ));
                }
                cap
            }
            None => {
                let cap = REFERENCE_CAP_WEIGHT_MULTIPLE * weight_sum(&config.weights);
                if weights_ok && !(cap.is_finite() && cap > 0.0) {
                    errors.push(FieldError::new(
                        "cap",
                        "out_of_range",
                        format!(
                            "is not set and twice the sum of the weights ({cap}) is not a \
                             finite number > 0; give a kind a positive weight or set a cap"
                        ),
                    ));
                }
                cap
            }
        };
        for (activity, signal) in REFERENCE_ACTIVITY_SIGNALS {
            config.activity_signals.entry(activity).or_insert(signal);
        }
        let activity_signals = ActivityKind::ALL.map(|a| match config.activity_signals.get(&a) {
            Some(s) => s.clone(),
            None => SignalKind::PAGE_VIEW,
        });
        errors.finish(|| ScoringModel {
            config,
            cap,
            activity_signals,
        })
    }

    /// The settings (with the activity mapping complete).
    pub fn config(&self) -> &ScoringConfig {
        &self.config
    }

    /// A builder starting from this model's settings.
    pub fn to_builder(&self) -> ScoringModelBuilder {
        ScoringModelBuilder::from(self.config.clone())
    }

    /// The weight table.
    pub fn weights(&self) -> &BTreeMap<SignalKind, f64> {
        &self.config.weights
    }

    /// The weight of `kind`, or `None` when it has none.
    pub fn weight(&self, kind: &SignalKind) -> Option<f64> {
        self.config.weights.get(kind).copied()
    }

    /// The half-life, in days.
    pub fn half_life_days(&self) -> f64 {
        self.config.half_life_days
    }

    /// Signals older than this many half-lives are ignored by
    /// [`score`](Self::score); `None` when signals of any age count.
    pub fn ignore_after_half_lives(&self) -> Option<f64> {
        self.config.ignore_after_half_lives
    }

    /// The lookback window of [`is_eligible`](Self::is_eligible), in days.
    pub fn lookback_days(&self) -> f64 {
        self.config.lookback_days
    }

    /// The decayed sum that maps to a score of 100.
    pub fn cap(&self) -> f64 {
        self.cap
    }

    /// How many signals an explanation keeps.
    pub fn top_signals(&self) -> usize {
        self.config.top_signals
    }

    /// The signal an activity of `kind` counts as.
    pub fn activity_signal(&self, kind: ActivityKind) -> &SignalKind {
        &self.activity_signals[activity_index(kind)]
    }

    /// Whether a contact is scored at all: it is active and was created at
    /// most [`lookback_days`](Self::lookback_days) before `now` (a creation
    /// time after `now` counts as age 0).
    pub fn is_eligible(&self, now: Timestamp, created_at: Timestamp, active: bool) -> bool {
        active
            && days_between(UnixTime::of(created_at), UnixTime::of(now))
                <= self.config.lookback_days
    }

    /// `0.5^(age_days / half_life_days)` for a signal at `occurred_at`, with
    /// a signal in the future at age 0 (factor 1). Ignores the age cutoff.
    pub fn decay_factor(&self, now: Timestamp, occurred_at: Timestamp) -> f64 {
        let age_days = days_between(UnixTime::of(occurred_at), UnixTime::of(now));
        (-(age_days.max(0.0) / self.config.half_life_days)).exp2()
    }

    /// What one input adds to a score at `now`, or `None` when it is not
    /// counted: its kind has no positive weight, or it is older than the age
    /// cutoff (a signal exactly at the cutoff still counts).
    pub fn contribution(&self, now: Timestamp, input: ScoringInput) -> Option<Contribution> {
        self.contribution_at(UnixTime::of(now), input)
    }

    fn contribution_at(&self, now: UnixTime, input: ScoringInput) -> Option<Contribution> {
        let base_weight = self.positive_weight(&input.kind)?;
        let age_days = days_between(UnixTime::of(input.occurred_at), now);
        let half_lives = age_days.max(0.0) / self.config.half_life_days;
        if let Some(n) = self.config.ignore_after_half_lives
            && half_lives > n
        {
            return None;
        }
        let decay_factor = (-half_lives).exp2();
        Some(Contribution {
            kind: input.kind,
            base_weight,
            decay_factor,
            contribution: base_weight * decay_factor,
            occurred_at: input.occurred_at,
        })
    }

    /// Scores one contact's signals at `now`.
    ///
    /// The result depends only on `now` and the multiset of inputs, never on
    /// their order: the sums are taken over the contributions sorted by
    /// value, smallest first, and the explanation keeps the first
    /// [`top_signals`](Self::top_signals) in [`Contribution::explanation_order`]
    /// (a total order). Eligibility ([`is_eligible`](Self::is_eligible)) is
    /// the caller's to check.
    pub fn score(&self, now: Timestamp, signals: impl IntoIterator<Item = ScoringInput>) -> Scored {
        let now = UnixTime::of(now);
        let top_n = self.config.top_signals;
        let mut top = TopContributions::new(top_n);
        // (contribution, weight) as bits: both are finite and ≥ +0, so their
        // bit patterns sort in numeric order, and sorting integers is cheap.
        let mut terms: Vec<(u64, u64)> = Vec::new();
        for input in signals {
            if let Some(c) = self.contribution_at(now, input) {
                terms.push((c.contribution.to_bits(), c.base_weight.to_bits()));
                top.offer(c);
            }
        }
        terms.sort_unstable();
        let (mut raw_sum, mut decayed_sum) = (0.0, 0.0);
        for &(contribution, weight) in &terms {
            decayed_sum += f64::from_bits(contribution);
            raw_sum += f64::from_bits(weight);
        }
        Scored {
            score: self.normalise(decayed_sum),
            raw_sum,
            decayed_sum,
            signal_count: terms.len(),
            top_signals: top.into_sorted(),
        }
    }

    /// `min(floor(decayed_sum × 100 / cap), 100)`, and 0 for a sum that is
    /// negative or not a number.
    pub fn normalise(&self, decayed_sum: f64) -> Score {
        let percent = (decayed_sum * 100.0 / self.cap).floor();
        let value = if percent >= 100.0 {
            100
        } else if percent >= 0.0 {
            percent as i64
        } else {
            0
        };
        Score::new(value).unwrap_or(Score::MIN)
    }

    /// The log-scaled term of one signal for an always-current score:
    /// `ln(weight) + (t / half_life_days) · ln 2`, with `t` the days from
    /// [`LOG_EPOCH_UNIX_SECONDS`] to `occurred_at`. `None` when the kind has
    /// no positive weight (it adds nothing).
    ///
    /// The term is computed in log space so that it stays finite however far
    /// `occurred_at` is from the epoch (`weight · 2^(t/h)` itself would
    /// overflow a few decades out with short half-lives).
    pub fn log_term(&self, kind: &SignalKind, occurred_at: Timestamp) -> Option<f64> {
        let weight = self.positive_weight(kind)?;
        Some(weight.ln() + self.half_lives_since_log_epoch(occurred_at) * LN_2)
    }

    /// `ln(e^a + e^b)`, computed without overflow (log-sum-exp); `a = None`
    /// is the empty sum, giving `b`.
    pub fn log_add(a: Option<f64>, b: f64) -> f64 {
        let Some(a) = a else { return b };
        let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
        if hi == f64::INFINITY || lo == f64::NEG_INFINITY || lo.is_nan() {
            return if lo.is_nan() { lo } else { hi };
        }
        hi + (lo - hi).exp().ln_1p()
    }

    /// `ln(e^a − e^b)`: removes a term `b` that was added to `a` (a closed
    /// deal's `deal_exists`, a deleted signal). `None` when nothing is left
    /// (`b ≥ a`, which rounding may also produce when `b` was the only term).
    ///
    /// Subtraction loses precision when what is left is much smaller than
    /// what is removed (relative error about `2^-52 × e^b / (e^a − e^b)`);
    /// recompute the sum from the remaining signals when that matters.
    pub fn log_sub(a: Option<f64>, b: f64) -> Option<f64> {
        let a = a?;
        if a.is_nan() || b.is_nan() {
            return Some(f64::NAN);
        }
        if b >= a {
            return None;
        }
        if b == f64::NEG_INFINITY || a == f64::INFINITY {
            return Some(a);
        }
        Some(a + (-(b - a).exp_m1()).ln())
    }

    /// The decayed sum at `now` of the signals whose [`log_term`](Self::log_term)s
    /// were accumulated with [`log_add`](Self::log_add) into `log_sum`:
    /// `exp(log_sum − (now_days / half_life_days) · ln 2)`; 0 for `None`.
    pub fn decayed_from_log(&self, log_sum: Option<f64>, now: Timestamp) -> f64 {
        match log_sum {
            None => 0.0,
            Some(l) => (l - self.half_lives_since_log_epoch(now) * LN_2).exp(),
        }
    }

    /// The normalised score at `now` of an accumulated log-scaled sum:
    /// [`normalise`](Self::normalise) of [`decayed_from_log`](Self::decayed_from_log).
    ///
    /// It differs from [`score`](Self::score) in two ways, both because the
    /// log-scaled sum cannot know `now` when a term is added:
    /// - there is no age cutoff: a signal older than
    ///   [`ignore_after_half_lives`](Self::ignore_after_half_lives) keeps
    ///   adding its decayed weight, less than `weight × 0.5^n` for a cutoff of
    ///   `n` half-lives, so the score is never lower and each such signal
    ///   raises it by less than `weight × 0.5^n × 100 / cap` points (with the
    ///   reference model, 7.5 × 100 / 230 ≈ 3.3 for a demo request);
    /// - a signal in the future is not held at age 0: its factor
    ///   `0.5^(age/h)` exceeds 1 until it happens. Add terms with
    ///   `min(occurred_at, recorded_at)` to avoid that.
    ///
    /// For signals all in the past and within the cutoff (or a model with
    /// [`no_age_cutoff`](ScoringModelBuilder::no_age_cutoff)) the two agree up
    /// to floating-point rounding.
    pub fn score_from_log(&self, log_sum: Option<f64>, now: Timestamp) -> Score {
        self.normalise(self.decayed_from_log(log_sum, now))
    }

    fn positive_weight(&self, kind: &SignalKind) -> Option<f64> {
        self.weight(kind).filter(|w| *w > 0.0)
    }

    fn half_lives_since_log_epoch(&self, t: Timestamp) -> f64 {
        let epoch = UnixTime {
            seconds: LOG_EPOCH_UNIX_SECONDS,
            nanos: 0,
        };
        days_between(epoch, UnixTime::of(t)) / self.config.half_life_days
    }
}

/// The first `n` contributions in [`Contribution::explanation_order`].
///
/// For a small `n` (the usual case) it keeps a sorted buffer of at most `n`
/// and rejects most candidates with one comparison; for a large `n` it keeps
/// everything and sorts once at the end.
struct TopContributions {
    n: usize,
    kept: Vec<Contribution>,
}

impl TopContributions {
    /// Above this, inserting into a sorted buffer costs more than one sort.
    const MAX_BUFFERED: usize = 32;

    fn new(n: usize) -> Self {
        TopContributions {
            n,
            kept: Vec::with_capacity(n.min(Self::MAX_BUFFERED) + 1),
        }
    }

    fn offer(&mut self, c: Contribution) {
        if self.n == 0 {
            return;
        }
        if self.n > Self::MAX_BUFFERED {
            self.kept.push(c);
            return;
        }
        if self.kept.len() == self.n
            && let Some(last) = self.kept.last()
            && c.explanation_order(last) != Ordering::Less
        {
            // Equal means identical: keeping either gives the same list.
            return;
        }
        let at = self
            .kept
            .partition_point(|k| k.explanation_order(&c) == Ordering::Less);
        self.kept.insert(at, c);
        self.kept.truncate(self.n);
    }

    fn into_sorted(mut self) -> Vec<Contribution> {
        if self.n > Self::MAX_BUFFERED {
            self.kept.sort_unstable_by(Contribution::explanation_order);
            self.kept.truncate(self.n);
        }
        self.kept
    }
}

/// A point in time as whole seconds and nanoseconds since the Unix epoch:
/// differences of these are exact integers (chrono's range spans less than
/// 2^43 seconds), converted to days only at the end.
#[derive(Debug, Clone, Copy)]
struct UnixTime {
    seconds: i64,
    nanos: i64,
}

impl UnixTime {
    fn of(t: Timestamp) -> Self {
        UnixTime {
            seconds: t.timestamp(),
            nanos: i64::from(t.timestamp_subsec_nanos()),
        }
    }
}

/// Days from `from` to `to` (negative when `to` is earlier).
fn days_between(from: UnixTime, to: UnixTime) -> f64 {
    let seconds = to.seconds - from.seconds;
    let nanos = to.nanos - from.nanos;
    (seconds as f64 + nanos as f64 * 1e-9) / SECONDS_PER_DAY
}

/// The sum of the weights, in a fixed (key) order.
fn weight_sum(weights: &BTreeMap<SignalKind, f64>) -> f64 {
    weights.values().sum()
}

fn activity_index(kind: ActivityKind) -> usize {
    match kind {
        ActivityKind::Email => 0,
        ActivityKind::Call => 1,
        ActivityKind::Meeting => 2,
        ActivityKind::Note => 3,
        ActivityKind::Task => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_index_follows_the_order_of_all_kinds() {
        for (i, kind) in ActivityKind::ALL.into_iter().enumerate() {
            assert_eq!(activity_index(kind), i);
        }
    }

    #[test]
    fn log_add_of_two_equal_terms_adds_ln_2() {
        let sum = ScoringModel::log_add(Some(1000.0), 1000.0);
        assert!((sum - (1000.0 + LN_2)).abs() < 1e-12);
        assert_eq!(ScoringModel::log_add(None, -3.0), -3.0);
        assert_eq!(ScoringModel::log_add(Some(f64::NEG_INFINITY), 2.0), 2.0);
    }

    #[test]
    fn log_sub_removes_what_log_add_added() {
        let (x, y) = (40.0f64.ln() + 700.0, 2.0f64.ln() + 700.0);
        let sum = ScoringModel::log_add(Some(x), y);
        let back = ScoringModel::log_sub(Some(sum), y).unwrap();
        assert!((back - x).abs() < 1e-12, "{back} vs {x}");
        assert_eq!(ScoringModel::log_sub(Some(y), y), None);
        assert_eq!(ScoringModel::log_sub(Some(y), x), None);
        assert_eq!(ScoringModel::log_sub(None, y), None);
        assert_eq!(ScoringModel::log_sub(Some(x), f64::NEG_INFINITY), Some(x));
    }
}
