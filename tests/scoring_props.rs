//! The lead-scoring model: worked examples of the reference model, the
//! activity mapping, configuration checks, and properties that must hold for
//! any signals (monotonicity, decay, bounds, order independence, and the
//! agreement of the log-scaled form with `score`).

use chrono::{Duration, TimeZone, Utc};
use crm_core::domain::{
    Activity, ActivityId, ActivityKind, ContactId, Signal, SignalId, SignalKind, Timestamp,
};
use crm_core::scoring::{Scored, ScoringConfig, ScoringInput, ScoringModel};
use crm_core::{TenantId, ValidationErrors};
use proptest::prelude::*;

fn now() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
}

fn days_ago(days: i64) -> Timestamp {
    now() - Duration::days(days)
}

fn input(kind: SignalKind, at: Timestamp) -> ScoringInput {
    ScoringInput::new(kind, at)
}

fn activity(kind: ActivityKind, occurred_at: Timestamp) -> Activity {
    Activity {
        id: ActivityId::new(),
        tenant_id: TenantId::new(),
        contact_id: ContactId::new(),
        deal_id: None,
        kind,
        direction: None,
        subject: None,
        body: None,
        occurred_at,
        created_at: occurred_at,
    }
}

fn fields(errors: &ValidationErrors) -> Vec<&str> {
    errors.as_slice().iter().map(|e| e.field.as_str()).collect()
}

// ---------------------------------------------------------------------------
// Worked examples of the reference model (cap = 2 × 115 = 230).
// ---------------------------------------------------------------------------

#[test]
fn a_demo_request_today_and_an_email_open_30_days_ago_score_14() {
    let scored = ScoringModel::default().score(
        now(),
        [
            input(SignalKind::DEMO_REQUEST, now()),
            input(SignalKind::EMAIL_OPEN, days_ago(30)),
        ],
    );
    // 30 + 5 × 0.5 = 32.5; floor(32.5 × 100 / 230) = floor(14.13) = 14.
    assert_eq!(scored.decayed_sum, 32.5);
    assert_eq!(scored.raw_sum, 35.0);
    assert_eq!(scored.signal_count, 2);
    assert_eq!(scored.score.get(), 14);
    let top: Vec<_> = scored
        .top_signals
        .iter()
        .map(|c| {
            (
                c.kind.as_str(),
                c.base_weight,
                c.decay_factor,
                c.contribution,
            )
        })
        .collect();
    assert_eq!(
        top,
        [
            ("demo_request", 30.0, 1.0, 30.0),
            ("email_open", 5.0, 0.5, 2.5)
        ]
    );
}

#[test]
fn the_reference_cap_is_twice_the_sum_of_the_weights() {
    let model = ScoringModel::default();
    assert_eq!(model.cap(), 230.0);
    assert_eq!(model.half_life_days(), 30.0);
    assert_eq!(model.ignore_after_half_lives(), Some(2.0));
    assert_eq!(model.lookback_days(), 90.0);
    assert_eq!(model.top_signals(), 3);
    let weights: Vec<_> = [
        SignalKind::EMAIL_OPEN,
        SignalKind::EMAIL_CLICK,
        SignalKind::PAGE_VIEW,
        SignalKind::PRICING_PAGE_VIEW,
        SignalKind::DEMO_REQUEST,
        SignalKind::MEETING_BOOKED,
        SignalKind::FORM_SUBMIT,
        SignalKind::DEAL_EXISTS,
    ]
    .iter()
    .map(|k| model.weight(k))
    .collect();
    assert_eq!(
        weights,
        [5.0, 10.0, 2.0, 15.0, 30.0, 25.0, 8.0, 20.0].map(Some)
    );
}

#[test]
fn one_of_every_reference_signal_today_scores_exactly_50_and_explains_with_the_three_heaviest() {
    let model = ScoringModel::default();
    let kinds: Vec<SignalKind> = model.weights().keys().cloned().collect();
    let scored = model.score(now(), kinds.into_iter().map(|k| input(k, now())));
    // 115 × 100 / 230 = 50.
    assert_eq!(scored.decayed_sum, 115.0);
    assert_eq!(scored.score.get(), 50);
    assert_eq!(scored.signal_count, 8);
    let top: Vec<_> = scored.top_signals.iter().map(|c| c.kind.as_str()).collect();
    assert_eq!(top, ["demo_request", "meeting_booked", "deal_exists"]);
}

#[test]
fn an_open_deal_today_and_a_meeting_a_month_ago_score_14() {
    let model = ScoringModel::default();
    let scored = model.score(
        now(),
        [
            ScoringInput::deal_exists(now()),
            ScoringInput::from_activity(&activity(ActivityKind::Meeting, days_ago(30)), &model),
        ],
    );
    // 20 + 25 × 0.5 = 32.5 → 14.
    assert_eq!(scored.decayed_sum, 32.5);
    assert_eq!(scored.score.get(), 14);
    assert_eq!(scored.top_signals[1].kind, SignalKind::MEETING_BOOKED);
}

#[test]
fn a_signal_exactly_two_half_lives_old_counts_a_quarter_and_one_second_older_counts_nothing() {
    let model = ScoringModel::default();
    let at_cutoff = model.score(now(), [input(SignalKind::PRICING_PAGE_VIEW, days_ago(60))]);
    // 15 × 0.25 = 3.75; floor(375 / 230) = floor(1.63) = 1.
    assert_eq!(at_cutoff.decayed_sum, 3.75);
    assert_eq!(at_cutoff.score.get(), 1);
    assert_eq!(at_cutoff.signal_count, 1);

    let past_cutoff = model.score(
        now(),
        [input(
            SignalKind::PRICING_PAGE_VIEW,
            days_ago(60) - Duration::seconds(1),
        )],
    );
    assert_eq!(past_cutoff.decayed_sum, 0.0);
    assert_eq!(past_cutoff.raw_sum, 0.0);
    assert_eq!(past_cutoff.signal_count, 0);
    assert!(past_cutoff.top_signals.is_empty());
}

#[test]
fn a_call_fifteen_days_ago_counts_as_a_meeting_booked_at_half_a_half_life() {
    let model = ScoringModel::default();
    let scored = model.score(
        now(),
        [ScoringInput::from_activity(
            &activity(ActivityKind::Call, days_ago(15)),
            &model,
        )],
    );
    // 25 × 2^(−0.5) = 17.677…; floor(1767.7 / 230) = floor(7.69) = 7.
    let expected = 25.0 * 0.5f64.sqrt();
    assert!((scored.decayed_sum - expected).abs() < 1e-12);
    assert_eq!(scored.score.get(), 7);
}

#[test]
fn ten_demo_requests_today_saturate_at_100() {
    let scored = ScoringModel::default().score(
        now(),
        (0..10).map(|_| input(SignalKind::DEMO_REQUEST, now())),
    );
    assert_eq!(scored.decayed_sum, 300.0);
    assert_eq!(scored.score.get(), 100);
    assert_eq!(scored.top_signals.len(), 3);
    assert_eq!(scored.signal_count, 10);
}

#[test]
fn a_signal_in_the_future_counts_at_full_weight() {
    let scored = ScoringModel::default().score(
        now(),
        [input(SignalKind::DEMO_REQUEST, now() + Duration::days(3))],
    );
    // floor(3000 / 230) = floor(13.04) = 13.
    assert_eq!(scored.top_signals[0].decay_factor, 1.0);
    assert_eq!(scored.score.get(), 13);
}

#[test]
fn no_signals_score_zero_with_an_empty_explanation() {
    let scored = ScoringModel::default().score(now(), Vec::new());
    assert_eq!(scored.score.get(), 0);
    assert_eq!(scored.decayed_sum, 0.0);
    assert_eq!(scored.signal_count, 0);
    assert!(scored.top_signals.is_empty());
}

#[test]
fn a_signal_kind_without_a_weight_counts_nothing() {
    let webinar = SignalKind::parse("webinar_attended").unwrap();
    let scored = ScoringModel::default().score(
        now(),
        [
            input(webinar, now()),
            input(SignalKind::PAGE_VIEW, days_ago(30)),
        ],
    );
    assert_eq!(scored.signal_count, 1);
    assert_eq!(scored.raw_sum, 2.0);
    assert_eq!(scored.decayed_sum, 1.0);
    assert_eq!(scored.top_signals.len(), 1);
    assert_eq!(scored.score.get(), 0);
}

#[test]
fn a_zero_weight_counts_nothing() {
    let model = ScoringModel::builder()
        .weight(SignalKind::PAGE_VIEW, 0.0)
        .build()
        .unwrap();
    let scored = model.score(now(), [input(SignalKind::PAGE_VIEW, now())]);
    assert_eq!(scored.signal_count, 0);
    assert!(model.log_term(&SignalKind::PAGE_VIEW, now()).is_none());
}

#[test]
fn recorded_signals_count_as_their_own_kind() {
    let signal = Signal {
        id: SignalId::new(),
        tenant_id: TenantId::new(),
        contact_id: ContactId::new(),
        kind: SignalKind::EMAIL_CLICK,
        occurred_at: days_ago(30),
    };
    let model = ScoringModel::default();
    let by_ref = model.score(now(), [ScoringInput::from(&signal)]);
    let by_value = model.score(now(), [ScoringInput::from(signal)]);
    assert_eq!(by_ref, by_value);
    assert_eq!(by_ref.decayed_sum, 5.0);
    assert_eq!(by_ref.top_signals[0].kind, SignalKind::EMAIL_CLICK);
}

#[test]
fn equal_contributions_are_explained_by_kind_then_oldest_first() {
    let a = SignalKind::parse("a_signal").unwrap();
    let b = SignalKind::parse("b_signal").unwrap();
    let model = ScoringModel::builder()
        .clear_weights()
        .weight(a.clone(), 10.0)
        .weight(b.clone(), 10.0)
        .top_signals(4)
        .build()
        .unwrap();
    // Future signals all count at factor 1, so these four tie.
    let t1 = now() + Duration::days(1);
    let t2 = now() + Duration::days(2);
    let scored = model.score(
        now(),
        [
            input(b.clone(), t2),
            input(a.clone(), t2),
            input(b.clone(), t1),
            input(a.clone(), t1),
        ],
    );
    let order: Vec<_> = scored
        .top_signals
        .iter()
        .map(|c| (c.kind.clone(), c.occurred_at))
        .collect();
    assert_eq!(order, [(a.clone(), t1), (a, t2), (b.clone(), t1), (b, t2)]);
}

#[test]
fn top_signals_zero_keeps_no_explanation_but_still_scores() {
    let model = ScoringModel::builder().top_signals(0).build().unwrap();
    let scored = model.score(now(), [input(SignalKind::DEMO_REQUEST, now())]);
    assert!(scored.top_signals.is_empty());
    assert_eq!(scored.signal_count, 1);
    assert_eq!(scored.score.get(), 13);
}

#[test]
fn an_explicit_cap_replaces_the_derived_one() {
    let model = ScoringModel::builder().cap(60.0).build().unwrap();
    assert_eq!(model.cap(), 60.0);
    let scored = model.score(now(), [input(SignalKind::DEMO_REQUEST, now())]);
    assert_eq!(scored.score.get(), 50);
}

#[test]
fn the_derived_cap_follows_the_weights() {
    let model = ScoringModel::builder()
        .clear_weights()
        .weight(SignalKind::DEMO_REQUEST, 50.0)
        .build()
        .unwrap();
    assert_eq!(model.cap(), 100.0);
}

// ---------------------------------------------------------------------------
// Eligibility.
// ---------------------------------------------------------------------------

#[test]
fn only_active_contacts_created_within_the_lookback_window_are_eligible() {
    let model = ScoringModel::default();
    assert!(model.is_eligible(now(), days_ago(90), true));
    assert!(!model.is_eligible(now(), days_ago(90) - Duration::seconds(1), true));
    assert!(model.is_eligible(now(), now(), true));
    assert!(model.is_eligible(now(), now() + Duration::days(1), true));
    assert!(!model.is_eligible(now(), now(), false));
    let short = ScoringModel::builder().lookback_days(0.0).build().unwrap();
    assert!(short.is_eligible(now(), now(), true));
    assert!(!short.is_eligible(now(), now() - Duration::seconds(1), true));
}

// ---------------------------------------------------------------------------
// The activity → signal mapping.
// ---------------------------------------------------------------------------

#[test]
fn the_reference_maps_each_activity_kind_to_its_signal() {
    let model = ScoringModel::default();
    let table = [
        (ActivityKind::Email, SignalKind::EMAIL_OPEN),
        (ActivityKind::Call, SignalKind::MEETING_BOOKED),
        (ActivityKind::Meeting, SignalKind::MEETING_BOOKED),
        (ActivityKind::Note, SignalKind::FORM_SUBMIT),
        (ActivityKind::Task, SignalKind::PAGE_VIEW),
    ];
    assert_eq!(table.len(), ActivityKind::ALL.len());
    for (kind, signal) in table {
        assert_eq!(model.activity_signal(kind), &signal, "{kind}");
        let from = ScoringInput::from_activity(&activity(kind, days_ago(2)), &model);
        assert_eq!(from, input(signal, days_ago(2)), "{kind}");
    }
}

#[test]
fn a_remapped_activity_kind_counts_as_its_new_signal_and_others_keep_the_reference() {
    let model = ScoringModel::builder()
        .activity_signal(
            ActivityKind::Task,
            SignalKind::parse("task_logged").unwrap(),
        )
        .build()
        .unwrap();
    let scored = model.score(
        now(),
        [ScoringInput::from_activity(
            &activity(ActivityKind::Task, now()),
            &model,
        )],
    );
    assert_eq!(scored.signal_count, 0, "task_logged has no weight");
    assert_eq!(
        model.activity_signal(ActivityKind::Email),
        &SignalKind::EMAIL_OPEN
    );
}

// ---------------------------------------------------------------------------
// Configuration checks.
// ---------------------------------------------------------------------------

#[test]
fn the_builder_with_no_changes_builds_the_reference_model() {
    assert_eq!(
        ScoringModel::builder().build().unwrap(),
        ScoringModel::default()
    );
    assert_eq!(
        ScoringModel::from_config(ScoringConfig::default()).unwrap(),
        ScoringModel::default()
    );
}

#[test]
fn negative_or_non_finite_weights_are_rejected_under_the_weight_field() {
    for bad in [-1.0, -0.001, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let err = ScoringModel::builder()
            .weight(SignalKind::EMAIL_OPEN, bad)
            .build()
            .unwrap_err();
        assert_eq!(fields(&err), ["weights.email_open"], "{bad}");
        assert_eq!(err.as_slice()[0].code, "out_of_range");
    }
}

#[test]
fn a_half_life_that_is_not_positive_and_finite_is_rejected() {
    // Under an hour, the live score's terms lose their precision (at 86 ns
    // the live and batch scores of one contact differed; shorter, the live
    // state overflowed and a rebuild of the live states failed).
    let under_an_hour = crm_core::scoring::MIN_HALF_LIFE_DAYS * 0.999;
    for bad in [
        0.0,
        -30.0,
        f64::NAN,
        f64::INFINITY,
        1e-12,
        1e-306,
        under_an_hour,
    ] {
        let err = ScoringModel::builder()
            .half_life_days(bad)
            .build()
            .unwrap_err();
        assert_eq!(fields(&err), ["half_life_days"], "{bad}");
    }
    let hour = ScoringModel::builder()
        .half_life_days(crm_core::scoring::MIN_HALF_LIFE_DAYS)
        .build()
        .expect("an hour is the shortest half-life");
    assert_eq!(hour.half_life_days(), 1.0 / 24.0);
}

#[test]
fn an_age_cutoff_that_is_not_positive_and_finite_is_rejected() {
    for bad in [0.0, -2.0, f64::NAN, f64::INFINITY] {
        let err = ScoringModel::builder()
            .ignore_after_half_lives(bad)
            .build()
            .unwrap_err();
        assert_eq!(fields(&err), ["ignore_after_half_lives"], "{bad}");
    }
    assert!(ScoringModel::builder().no_age_cutoff().build().is_ok());
}

#[test]
fn a_negative_or_non_finite_lookback_window_is_rejected() {
    for bad in [-1.0, f64::NAN, f64::INFINITY] {
        let err = ScoringModel::builder()
            .lookback_days(bad)
            .build()
            .unwrap_err();
        assert_eq!(fields(&err), ["lookback_days"], "{bad}");
    }
}

#[test]
fn a_cap_that_is_not_positive_and_finite_is_rejected() {
    for bad in [0.0, -230.0, f64::NAN, f64::INFINITY] {
        let err = ScoringModel::builder().cap(bad).build().unwrap_err();
        assert_eq!(fields(&err), ["cap"], "{bad}");
    }
}

#[test]
fn no_positive_weight_and_no_cap_is_rejected_under_cap() {
    let err = ScoringModel::builder().clear_weights().build().unwrap_err();
    assert_eq!(fields(&err), ["cap"]);
    let zeros = ScoringModel::builder()
        .clear_weights()
        .weight(SignalKind::PAGE_VIEW, 0.0)
        .build()
        .unwrap_err();
    assert_eq!(fields(&zeros), ["cap"]);
    assert!(
        ScoringModel::builder()
            .clear_weights()
            .cap(10.0)
            .build()
            .is_ok()
    );
}

#[test]
fn every_invalid_setting_is_reported_at_once() {
    let err = ScoringModel::builder()
        .weight(SignalKind::PAGE_VIEW, -2.0)
        .half_life_days(0.0)
        .ignore_after_half_lives(-1.0)
        .lookback_days(-1.0)
        .cap(0.0)
        .build()
        .unwrap_err();
    assert_eq!(
        fields(&err),
        [
            "weights.page_view",
            "half_life_days",
            "ignore_after_half_lives",
            "lookback_days",
            "cap"
        ]
    );
}

#[test]
fn a_config_in_json_takes_the_reference_for_what_it_leaves_out() {
    let model: ScoringModel =
        serde_json::from_str(r#"{"half_life_days": 7, "top_signals": 1}"#).unwrap();
    assert_eq!(model.half_life_days(), 7.0);
    assert_eq!(model.top_signals(), 1);
    assert_eq!(model.weights(), ScoringModel::default().weights());
    assert_eq!(model.cap(), 230.0);
}

#[test]
fn a_config_in_json_is_validated_and_rejects_unknown_fields() {
    let invalid = serde_json::from_str::<ScoringModel>(r#"{"half_life_days": -1}"#).unwrap_err();
    assert!(invalid.to_string().contains("half_life_days"), "{invalid}");
    let negative_top = serde_json::from_str::<ScoringModel>(r#"{"top_signals": -1}"#);
    assert!(negative_top.is_err());
    let unknown = serde_json::from_str::<ScoringModel>(r#"{"halflife": 3}"#).unwrap_err();
    assert!(unknown.to_string().contains("halflife"), "{unknown}");
    let null_cutoff: ScoringModel =
        serde_json::from_str(r#"{"ignore_after_half_lives": null}"#).unwrap();
    assert_eq!(null_cutoff.ignore_after_half_lives(), None);
}

#[test]
fn a_model_survives_a_json_round_trip() {
    let model = ScoringModel::builder()
        .weight(SignalKind::parse("trial_started").unwrap(), 40.5)
        .activity_signal(ActivityKind::Note, SignalKind::EMAIL_CLICK)
        .half_life_days(12.5)
        .no_age_cutoff()
        .cap(99.0)
        .build()
        .unwrap();
    let json = serde_json::to_string(&model).unwrap();
    let back: ScoringModel = serde_json::from_str(&json).unwrap();
    assert_eq!(back, model);
    assert_eq!(
        back.activity_signal(ActivityKind::Note),
        &SignalKind::EMAIL_CLICK
    );
}

// ---------------------------------------------------------------------------
// The log-scaled form, by example.
// ---------------------------------------------------------------------------

fn log_sum(model: &ScoringModel, inputs: &[ScoringInput]) -> Option<f64> {
    inputs.iter().fold(None, |acc, i| {
        match model.log_term(&i.kind, i.occurred_at) {
            Some(term) => Some(ScoringModel::log_add(acc, term)),
            None => acc,
        }
    })
}

#[test]
fn the_log_form_of_the_worked_example_gives_the_same_score() {
    let model = ScoringModel::default();
    let inputs = [
        input(SignalKind::DEMO_REQUEST, now()),
        input(SignalKind::EMAIL_OPEN, days_ago(30)),
    ];
    let sum = log_sum(&model, &inputs);
    assert!((model.decayed_from_log(sum, now()) - 32.5).abs() < 1e-9);
    assert_eq!(model.score_from_log(sum, now()).get(), 14);
    assert_eq!(model.score_from_log(None, now()).get(), 0);
}

#[test]
fn the_log_form_keeps_counting_signals_past_the_age_cutoff() {
    let model = ScoringModel::default();
    // Three demo requests 61 days ago: ignored by score, 3 × 30 × 2^(−61/30)
    // ≈ 21.9 → 9 in the log form.
    let inputs: Vec<_> = (0..3)
        .map(|_| input(SignalKind::DEMO_REQUEST, days_ago(61)))
        .collect();
    assert_eq!(model.score(now(), inputs.clone()).score.get(), 0);
    let expected = 90.0 * (-61.0f64 / 30.0).exp2();
    let sum = log_sum(&model, &inputs);
    assert!((model.decayed_from_log(sum, now()) - expected).abs() < 1e-9);
    assert_eq!(model.score_from_log(sum, now()).get(), 9);
}

#[test]
fn log_terms_stay_finite_centuries_from_the_epoch() {
    let model = ScoringModel::builder().half_life_days(1.0).build().unwrap();
    let far = Utc.with_ymd_and_hms(2400, 1, 1, 0, 0, 0).unwrap();
    let term = model.log_term(&SignalKind::DEMO_REQUEST, far).unwrap();
    assert!(term.is_finite());
    let sum = ScoringModel::log_add(Some(term), term);
    assert!((model.decayed_from_log(Some(sum), far) - 60.0).abs() < 1e-6);
}

// ---------------------------------------------------------------------------
// Properties.
// ---------------------------------------------------------------------------

const KINDS: [&str; 10] = [
    "email_open",
    "email_click",
    "page_view",
    "pricing_page_view",
    "demo_request",
    "meeting_booked",
    "form_submit",
    "deal_exists",
    "webinar_attended",
    "zero_weight",
];

fn kind(i: usize) -> SignalKind {
    SignalKind::parse(KINDS[i]).unwrap()
}

/// Some point between 2021 and 2035, at microsecond precision.
fn arb_now() -> impl Strategy<Value = Timestamp> {
    (1_609_459_200i64..2_051_222_400, 0u32..1_000_000)
        .prop_map(|(s, us)| Utc.timestamp_opt(s, us * 1_000).unwrap())
}

/// A signal whose age ranges from 5 days in the future to 100 days
/// (past the reference cutoff of 60).
fn arb_input(now: Timestamp) -> impl Strategy<Value = ScoringInput> {
    (0..KINDS.len(), -5 * 86_400_000_000i64..100 * 86_400_000_000)
        .prop_map(move |(k, age_us)| input(kind(k), now - Duration::microseconds(age_us)))
}

fn arb_case() -> impl Strategy<Value = (Timestamp, Vec<ScoringInput>)> {
    arb_now().prop_flat_map(|now| (Just(now), prop::collection::vec(arb_input(now), 0..40)))
}

/// A valid model with random settings (weights may be zero).
fn arb_model() -> impl Strategy<Value = ScoringModel> {
    (
        prop::collection::vec(0.0f64..100.0, KINDS.len() - 2),
        0.5f64..365.0,
        prop::option::of(0.5f64..6.0),
        prop::option::of(1.0f64..1_000.0),
        0usize..6,
    )
        .prop_map(|(weights, half_life, cutoff, cap, top)| {
            let mut b = ScoringModel::builder()
                .clear_weights()
                .weight(kind(KINDS.len() - 1), 0.0)
                .half_life_days(half_life)
                .top_signals(top)
                .cap(cap.unwrap_or(500.0));
            for (i, w) in weights.into_iter().enumerate() {
                b = b.weight(kind(i), w);
            }
            b = match cutoff {
                Some(n) => b.ignore_after_half_lives(n),
                None => b.no_age_cutoff(),
            };
            b.build().unwrap()
        })
}

fn any_model() -> impl Strategy<Value = ScoringModel> {
    prop_oneof![Just(ScoringModel::default()), arb_model()]
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(f64::MIN_POSITIVE)
}

/// The exact (real-number) score of a decayed sum is `sum × 100 / cap`: true
/// when it is so close to an integer (or the clamp at 100) that rounding may
/// put two equal sums on different sides.
fn near_boundary(model: &ScoringModel, decayed: f64) -> bool {
    let x = decayed * 100.0 / model.cap();
    x < 100.0 + 1e-9 && (x - x.round()).abs() <= 1e-9 * x.max(1.0)
}

fn assert_score_matches_sum(model: &ScoringModel, scored: &Scored) {
    let x = scored.decayed_sum * 100.0 / model.cap();
    let expected = if x >= 100.0 { 100 } else { x.floor() as u8 };
    assert_eq!(scored.score.get(), expected);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn adding_a_signal_never_lowers_the_score(
        model in any_model(),
        (now, inputs) in arb_case(),
        extra_kind in 0..KINDS.len(),
        extra_age_us in -5 * 86_400_000_000i64..100 * 86_400_000_000,
        position in any::<prop::sample::Index>(),
    ) {
        let before = model.score(now, inputs.clone());
        let mut more = inputs;
        let at = position.index(more.len() + 1);
        more.insert(at, input(kind(extra_kind), now - Duration::microseconds(extra_age_us)));
        let after = model.score(now, more);
        prop_assert!(after.score >= before.score);
        prop_assert!(after.decayed_sum >= before.decayed_sum);
        prop_assert!(after.raw_sum >= before.raw_sum);
        prop_assert!(after.signal_count >= before.signal_count);
    }

    #[test]
    fn a_score_never_rises_with_time_alone(
        model in any_model(),
        (now, inputs) in arb_case(),
        later_us in 0i64..200 * 86_400_000_000,
    ) {
        let earlier = model.score(now, inputs.clone());
        let later = model.score(now + Duration::microseconds(later_us), inputs);
        prop_assert!(later.score <= earlier.score);
        prop_assert!(later.decayed_sum <= earlier.decayed_sum);
        prop_assert!(later.signal_count <= earlier.signal_count);
    }

    #[test]
    fn one_half_life_halves_a_single_signals_contribution(
        model in any_model(),
        now in arb_now(),
        k in 0..KINDS.len() - 2,
        age_fraction in 0.0f64..1.0,
    ) {
        // Keep both ages within the cutoff (or under two half-lives without one).
        let h = model.half_life_days();
        let room = model.ignore_after_half_lives().map_or(2.0, |n| n - 1.0).max(0.0);
        let age_days = age_fraction * room * h;
        let at = now - Duration::microseconds((age_days * 86_400e6) as i64);
        let later = now + Duration::microseconds((h * 86_400e6).round() as i64);
        let first = model.score(now, [input(kind(k), at)]);
        let second = model.score(later, [input(kind(k), at)]);
        prop_assume!(first.signal_count == 1 && second.signal_count == 1);
        // The half-life is rounded to a microsecond above: allow for that.
        prop_assert!(close(second.decayed_sum * 2.0, first.decayed_sum, 1e-9),
            "{} vs {}", second.decayed_sum, first.decayed_sum);
        prop_assert!(close(second.top_signals.first().map_or(0.0, |c| c.decay_factor) * 2.0,
            first.top_signals.first().map_or(0.0, |c| c.decay_factor), 1e-9) || model.top_signals() == 0);
    }

    #[test]
    fn a_score_is_between_0_and_100_and_is_the_floor_of_the_normalised_sum(
        model in any_model(),
        (now, inputs) in arb_case(),
    ) {
        let scored = model.score(now, inputs);
        prop_assert!(scored.score.get() <= 100);
        assert_score_matches_sum(&model, &scored);
        prop_assert!(scored.decayed_sum <= scored.raw_sum);
        prop_assert!(scored.top_signals.len() <= model.top_signals().min(scored.signal_count));
        prop_assert!(scored.top_signals.windows(2).all(|w| w[0].contribution >= w[1].contribution));
    }

    #[test]
    fn the_explanation_is_the_head_of_every_contribution_in_explanation_order(
        (now, inputs) in arb_case(),
        n in 0usize..60,
    ) {
        let model = ScoringModel::builder().top_signals(n).build().unwrap();
        let scored = model.score(now, inputs.clone());
        let mut all: Vec<_> = inputs
            .into_iter()
            .filter_map(|i| model.contribution(now, i))
            .collect();
        prop_assert_eq!(scored.signal_count, all.len());
        all.sort_by(|a, b| a.explanation_order(b));
        all.truncate(n);
        prop_assert_eq!(scored.top_signals, all);
    }

    #[test]
    fn signal_order_does_not_matter(
        model in any_model(),
        (now, inputs, shuffled) in arb_case().prop_flat_map(|(now, inputs)| {
            let shuffled = Just(inputs.clone()).prop_shuffle();
            (Just(now), Just(inputs), shuffled)
        }),
    ) {
        let a = model.score(now, inputs);
        let b = model.score(now, shuffled);
        // Exactly equal: score, sums bit for bit, and the explanation.
        prop_assert_eq!(a, b);
    }

    #[test]
    fn the_log_form_agrees_with_score_for_signals_within_the_cutoff(
        model in any_model(),
        now in arb_now(),
        signals in prop::collection::vec((0..KINDS.len(), 0.0f64..1.0), 0..40),
    ) {
        // Ages strictly between 0 and the cutoff (or up to 10 half-lives without one).
        let limit_days = model.ignore_after_half_lives().unwrap_or(10.0) * model.half_life_days();
        let inputs: Vec<_> = signals
            .iter()
            .map(|&(k, f)| {
                let age_us = (f * limit_days * 86_400e6).floor() as i64;
                input(kind(k), now - Duration::microseconds(age_us))
            })
            .collect();
        let scored = model.score(now, inputs.clone());
        let sum = log_sum(&model, &inputs);
        let from_log = model.decayed_from_log(sum, now);
        prop_assert_eq!(sum.is_none(), scored.signal_count == 0);
        prop_assert!(close(from_log, scored.decayed_sum, 1e-9),
            "log form {} vs score {}", from_log, scored.decayed_sum);
        if !near_boundary(&model, scored.decayed_sum) {
            prop_assert_eq!(model.score_from_log(sum, now), scored.score);
        }
    }

    #[test]
    fn the_log_form_never_scores_below_score_for_signals_in_the_past(
        model in any_model(),
        (now, inputs) in arb_case(),
    ) {
        let past: Vec<_> = inputs.into_iter().filter(|i| i.occurred_at <= now).collect();
        let scored = model.score(now, past.clone());
        let from_log = model.decayed_from_log(log_sum(&model, &past), now);
        prop_assert!(from_log >= scored.decayed_sum * (1.0 - 1e-9));
    }

    #[test]
    fn removing_a_term_with_log_sub_leaves_the_sum_of_the_others(
        model in any_model(),
        (now, inputs) in arb_case(),
        which in any::<prop::sample::Index>(),
    ) {
        prop_assume!(!inputs.is_empty());
        let removed = &inputs[which.index(inputs.len())];
        let rest: Vec<_> = inputs.iter().filter(|i| !std::ptr::eq(*i, removed)).cloned().collect();
        let all = log_sum(&model, &inputs);
        let expected = model.decayed_from_log(log_sum(&model, &rest), now);
        let left = match model.log_term(&removed.kind, removed.occurred_at) {
            Some(term) => ScoringModel::log_sub(all, term),
            None => all,
        };
        let got = model.decayed_from_log(left, now);
        // Cancellation: the error is relative to the sum before removal.
        let before = model.decayed_from_log(all, now);
        prop_assert!((got - expected).abs() <= 1e-9 * before.max(f64::MIN_POSITIVE),
            "{} vs {} (of {})", got, expected, before);
    }

    #[test]
    fn ranking_by_log_sum_is_ranking_by_decayed_sum_at_any_time(
        model in any_model(),
        (now, a) in arb_case(),
        b_offsets in prop::collection::vec((0..KINDS.len(), -5 * 86_400_000_000i64..100 * 86_400_000_000), 0..40),
        then_us in -300 * 86_400_000_000i64..300 * 86_400_000_000,
    ) {
        let b: Vec<_> = b_offsets
            .into_iter()
            .map(|(k, age)| input(kind(k), now - Duration::microseconds(age)))
            .collect();
        let (la, lb) = (log_sum(&model, &a), log_sum(&model, &b));
        let then = now + Duration::microseconds(then_us);
        let (da, db) = (model.decayed_from_log(la, then), model.decayed_from_log(lb, then));
        match (la, lb) {
            (None, None) => prop_assert_eq!((da, db), (0.0, 0.0)),
            (None, Some(_)) => prop_assert!(da < db),
            (Some(_), None) => prop_assert!(da > db),
            (Some(x), Some(y)) => {
                // Never contradicting; strict once the logs are apart.
                if x >= y {
                    prop_assert!(da >= db, "{} {} → {} {}", x, y, da, db);
                }
                if x <= y {
                    prop_assert!(da <= db, "{} {} → {} {}", x, y, da, db);
                }
                if (x - y).abs() > 1e-9 {
                    prop_assert_eq!(x.total_cmp(&y), da.total_cmp(&db));
                }
            }
        }
        // And, for signals within the cutoff at `now`, with what `score` sums.
        let recent = |v: &[ScoringInput]| -> Vec<ScoringInput> {
            v.iter()
                .filter(|i| i.occurred_at <= now && model.contribution(now, (*i).clone()).is_some())
                .cloned()
                .collect()
        };
        let (ra, rb) = (recent(&a), recent(&b));
        let (sa, sb) = (model.score(now, ra.clone()), model.score(now, rb.clone()));
        let (lra, lrb) = (log_sum(&model, &ra), log_sum(&model, &rb));
        if !close(sa.decayed_sum, sb.decayed_sum, 1e-9) {
            prop_assert_eq!(
                lra.unwrap_or(f64::NEG_INFINITY).total_cmp(&lrb.unwrap_or(f64::NEG_INFINITY)),
                sa.decayed_sum.total_cmp(&sb.decayed_sum)
            );
        }
    }
}
