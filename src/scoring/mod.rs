//! Lead scoring: how interested a contact is, as a number from 0 to 100
//! that decays with time, with the signals that explain it.
//!
//! The model is pure (no I/O, no async, no store access): a
//! [`ScoringModel`] turns a contact's signals and a point in time `now` into
//! a [`Scored`]. Around it, two ways to keep scores in a store:
//!
//! - **Batch:** [`rescore`] (or [`rescore_in_transaction`] on a transaction of your
//!   own) recomputes the eligible contacts' scores and writes back the
//!   ones that changed: the stored `score` that contact searches sort by.
//! - **Live:** a store keeps a per-contact state up to date as activities
//!   and signals arrive, from which [`live_score`] and [`live_top_leads`]
//!   read always-current scores; [`explain`] shows how a score came about.
//!   See [`live`].
//!
//! # The model
//!
//! Each input is a signal kind and the time it happened ([`ScoringInput`]):
//! a recorded behavioural [`Signal`](crate::domain::Signal) counts as its own
//! kind, an [`Activity`](crate::domain::Activity) counts as the signal its
//! kind maps to, and an open deal adds one `deal_exists` signal. A signal
//! of kind `k` that happened `age` days before `now` contributes
//!
//! ```text
//! contribution = weight(k) × 0.5^(age / half_life)
//! ```
//!
//! where a signal in the future has `age = 0`, a kind with no (or zero)
//! weight is not counted, and a signal older than
//! `ignore_after_half_lives × half_life` is not counted. Then
//!
//! ```text
//! decayed_sum = Σ contribution
//! raw_sum     = Σ weight(k)                       (of the counted signals)
//! score       = min(floor(decayed_sum × 100 / cap), 100)
//! ```
//!
//! and the explanation keeps the `top_signals` largest contributions,
//! largest first (ties by kind, then oldest first). The result depends only
//! on `now` and the inputs, not on their order.
//!
//! Only active contacts created within the lookback window are scored:
//! [`ScoringModel::is_eligible`] says which.
//!
//! # The reference model
//!
//! [`ScoringModel::default()`] reproduces the reference pipeline:
//!
//! | signal kind         | weight |   | activity kind | counts as        |
//! |---------------------|-------:|---|---------------|------------------|
//! | `email_open`        | 5      |   | `email`       | `email_open`     |
//! | `email_click`       | 10     |   | `call`        | `meeting_booked` |
//! | `page_view`         | 2      |   | `meeting`     | `meeting_booked` |
//! | `pricing_page_view` | 15     |   | `note`        | `form_submit`    |
//! | `demo_request`      | 30     |   | `task`        | `page_view`      |
//! | `meeting_booked`    | 25     |   |               |                  |
//! | `form_submit`       | 8      |   |               |                  |
//! | `deal_exists`       | 20     |   |               |                  |
//!
//! with a half-life of 30 days, signals older than 2 half-lives (60 days)
//! ignored, a lookback window of 90 days, a cap of twice the sum of the
//! weights (2 × 115 = 230) and the top 3 signals kept.
//!
//! ```
//! use chrono::{Duration, TimeZone, Utc};
//! use crm_core::domain::SignalKind;
//! use crm_core::scoring::{ScoringInput, ScoringModel};
//!
//! let model = ScoringModel::default();
//! let now = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
//! let scored = model.score(now, [
//!     ScoringInput::new(SignalKind::DEMO_REQUEST, now),
//!     ScoringInput::new(SignalKind::EMAIL_OPEN, now - Duration::days(30)),
//! ]);
//! // 30 + 5 × 0.5 = 32.5, and floor(32.5 × 100 / 230) = 14.
//! assert_eq!(scored.decayed_sum, 32.5);
//! assert_eq!(scored.raw_sum, 35.0);
//! assert_eq!(scored.score.get(), 14);
//! assert_eq!(scored.top_signals[0].kind, SignalKind::DEMO_REQUEST);
//! ```
//!
//! # Configuring it
//!
//! Every setting can be changed through [`ScoringModel::builder()`], which
//! starts from the reference and validates on
//! [`build`](ScoringModelBuilder::build), reporting each invalid setting by
//! field name: weights must be finite and ≥ 0, the half-life and the age
//! cutoff finite and > 0, the lookback window finite and ≥ 0, the cap finite
//! and > 0. The same settings as data are a [`ScoringConfig`], which
//! (de)serialises (every field optional, unknown fields rejected), and a
//! `ScoringModel` itself serialises as its config.
//!
//! ```
//! use crm_core::domain::{ActivityKind, SignalKind};
//! use crm_core::scoring::ScoringModel;
//!
//! let model = ScoringModel::builder()
//!     .weight(SignalKind::parse("trial_started").unwrap(), 40.0)
//!     .without_weight(&SignalKind::PAGE_VIEW)
//!     .activity_signal(ActivityKind::Task, SignalKind::parse("task_logged").unwrap())
//!     .half_life_days(14.0)
//!     .ignore_after_half_lives(4.0)
//!     .lookback_days(180.0)
//!     .cap(100.0)
//!     .top_signals(5)
//!     .build()?;
//! let json = serde_json::to_string(&model).unwrap();
//! assert_eq!(serde_json::from_str::<ScoringModel>(&json).unwrap(), model);
//! # Ok::<_, crm_core::ValidationErrors>(())
//! ```
//!
//! # Always-current scores
//!
//! Because the decay is exponential, the decayed sum factors into a part
//! that depends only on the signals and a part that depends only on `now`
//! (times in days from a fixed epoch, [`LOG_EPOCH_UNIX_SECONDS`]):
//!
//! ```text
//! Σ w·2^(−(now−t)/h) = 2^(−now/h) · Σ w·2^(t/h)
//! ```
//!
//! So a store can keep, per contact, `log_sum = ln Σ w·2^(t/h)`, updated when
//! a signal arrives with [`ScoringModel::log_add`]`(log_sum,
//! `[`ScoringModel::log_term`]`(kind, t))`, and read the score at any time
//! with [`ScoringModel::score_from_log`]. Since `2^(−now/h)` is the same for
//! every contact, ordering contacts by `log_sum` orders them by decayed sum
//! at every `now`: a ranking by `log_sum` is the "top leads" ranking at any
//! moment, with no batch ([`live_top_leads`] is one). Everything stays in
//! log space, so nothing overflows however far the signals are from the
//! epoch. [`ScoringModel::log_sub`] takes a term back out (a deal that
//! closed).
//!
//! ```
//! use chrono::{Duration, TimeZone, Utc};
//! use crm_core::domain::SignalKind;
//! use crm_core::scoring::ScoringModel;
//!
//! let model = ScoringModel::default();
//! let t0 = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
//! // Kept with the contact and updated as signals arrive:
//! let mut log_sum = None;
//! for (kind, at) in [
//!     (SignalKind::DEMO_REQUEST, t0),
//!     (SignalKind::EMAIL_OPEN, t0 - Duration::days(30)),
//! ] {
//!     if let Some(term) = model.log_term(&kind, at) {
//!         log_sum = Some(ScoringModel::log_add(log_sum, term));
//!     }
//! }
//! assert_eq!(model.score_from_log(log_sum, t0).get(), 14);
//! // A month later, with no new signal: (30 + 2.5) / 2 = 16.25 → 7.
//! assert_eq!(model.score_from_log(log_sum, t0 + Duration::days(30)).get(), 7);
//! ```
//!
//! The log form has no age cutoff and does not hold future signals at age
//! 0; see [`ScoringModel::score_from_log`] for exactly how it differs from
//! [`ScoringModel::score`]. A stored `log_sum` is tied to the weights and
//! half-life that produced it: recompute it when they change.

mod inputs;
pub mod live;
mod model;
mod rescore;
mod scored;

pub use crate::domain::{ContactInputs, InputsRequest};
pub use inputs::live_log_sum;
pub use live::{
    Explanation, LIVE_TOLERANCE, LiveAccount, LiveLead, explain, live_score, live_top_accounts,
    live_top_leads,
};
pub use rescore::{
    DEFAULT_CHUNK_SIZE, DEFAULT_TOP, MAX_TOP, RescoreOptions, RescoreReport, TopLead, rescore,
    rescore_in_transaction,
};

pub use model::{
    Contribution, LOG_EPOCH_UNIX_SECONDS, MIN_HALF_LIFE_DAYS, REFERENCE_ACTIVITY_SIGNALS,
    REFERENCE_CAP_WEIGHT_MULTIPLE, REFERENCE_HALF_LIFE_DAYS, REFERENCE_IGNORE_AFTER_HALF_LIVES,
    REFERENCE_LOOKBACK_DAYS, REFERENCE_TOP_SIGNALS, REFERENCE_WEIGHTS, Scored, ScoringConfig,
    ScoringInput, ScoringModel, ScoringModelBuilder,
};
