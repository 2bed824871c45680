//! The deal stage machine: which moves and reopens a pipeline allows, what a
//! move stamps on the deal, and how custom pipelines are checked.

use chrono::{Duration, TimeZone, Utc};
use crm_core::domain::{
    ContactId, Currency, Deal, DealTitle, LostReason, Money, NewDeal, Pipeline, PipelineKey,
    StageDef, StageKey, StageKind, Timestamp,
};
use crm_core::{Error, TenantId, Version};
use proptest::prelude::*;

const STAGES: [&str; 5] = [
    "qualified",
    "proposal",
    "negotiation",
    "closed_won",
    "closed_lost",
];

/// What the default pipeline answers to a move from row to column, without
/// a lost reason: `ok` (open), `won`, or `-` (refused).
const WITHOUT_REASON: [[&str; 5]; 5] = [
    //  qualified proposal negotiation closed_won closed_lost
    ["-", "ok", "ok", "won", "-"], // from qualified
    ["ok", "-", "ok", "won", "-"], // from proposal
    ["ok", "ok", "-", "won", "-"], // from negotiation
    ["-", "-", "-", "-", "-"],     // from closed_won
    ["-", "-", "-", "-", "-"],     // from closed_lost
];

/// The same with a lost reason: only losing an open deal is allowed.
const WITH_REASON: [[&str; 5]; 5] = [
    ["-", "-", "-", "-", "lost"],
    ["-", "-", "-", "-", "lost"],
    ["-", "-", "-", "-", "lost"],
    ["-", "-", "-", "-", "-"],
    ["-", "-", "-", "-", "-"],
];

/// Reopening: only a closed deal, only into an open stage.
const REOPEN: [[&str; 5]; 5] = [
    ["-", "-", "-", "-", "-"],
    ["-", "-", "-", "-", "-"],
    ["-", "-", "-", "-", "-"],
    ["ok", "ok", "ok", "-", "-"],
    ["ok", "ok", "ok", "-", "-"],
];

fn key(s: &str) -> StageKey {
    StageKey::parse(s).unwrap()
}

fn t0() -> Timestamp {
    Utc.with_ymd_and_hms(2025, 6, 1, 9, 0, 0).unwrap()
}

fn reason() -> LostReason {
    LostReason::parse("Went with a competitor").unwrap()
}

fn new_deal() -> NewDeal {
    NewDeal::new(
        ContactId::new(),
        DealTitle::parse("Annual licence").unwrap(),
        Money::parse("12000", Currency::parse("EUR").unwrap()).unwrap(),
    )
}

/// A deal of the default pipeline sitting in `stage`, with the stamps that
/// stage implies.
fn deal_in(stage: &str) -> Deal {
    let p = Pipeline::default_pipeline();
    let fresh = Deal::create(TenantId::new(), new_deal(), &p, t0()).unwrap();
    match stage {
        "qualified" => fresh,
        "closed_won" => fresh.moved(&p, &key(stage), None, t0()).unwrap(),
        "closed_lost" => fresh.moved(&p, &key(stage), Some(reason()), t0()).unwrap(),
        open => Deal::create(
            TenantId::new(),
            NewDeal {
                stage: Some(key(open)),
                ..new_deal()
            },
            &p,
            t0(),
        )
        .unwrap(),
    }
}

fn assert_invalid_transition(result: Result<impl std::fmt::Debug, Error>, from: &str, to: &str) {
    match result {
        Err(Error::InvalidTransition {
            from: f,
            to: t,
            why,
        }) => {
            assert_eq!(f.as_str(), from);
            assert_eq!(t.as_str(), to);
            assert!(!why.is_empty());
        }
        other => panic!("{from} -> {to}: expected InvalidTransition, got {other:?}"),
    }
}

#[test]
fn every_move_of_the_default_pipeline_is_allowed_or_refused_as_the_table_says() {
    let p = Pipeline::default_pipeline();
    let later = t0() + Duration::minutes(5);
    for (table, with_reason) in [(WITHOUT_REASON, false), (WITH_REASON, true)] {
        for (i, from) in STAGES.iter().enumerate() {
            for (j, to) in STAGES.iter().enumerate() {
                let expected = table[i][j];
                let check = p.check_move(&key(from), &key(to), with_reason);
                let deal = deal_in(from);
                let lost_reason = with_reason.then(reason);
                let moved = deal.moved(&p, &key(to), lost_reason.clone(), later);
                if expected == "-" {
                    assert_invalid_transition(check, from, to);
                    assert_invalid_transition(moved, from, to);
                    continue;
                }
                let kind = check.unwrap_or_else(|e| panic!("{from} -> {to}: {e}"));
                let moved = moved.unwrap();
                assert_eq!(
                    kind,
                    match expected {
                        "ok" => StageKind::Open,
                        "won" => StageKind::Won,
                        _ => StageKind::Lost,
                    },
                    "{from} -> {to}"
                );
                assert_eq!(moved.stage.as_str(), *to);
                assert_eq!(moved.version, deal.version.next());
                assert_eq!(moved.updated_at, later);
                assert_eq!(moved.created_at, deal.created_at);
                assert_eq!(
                    moved.won_at,
                    (kind == StageKind::Won).then_some(later),
                    "{from} -> {to}"
                );
                assert_eq!(moved.lost_at, (kind == StageKind::Lost).then_some(later));
                assert_eq!(
                    moved.lost_reason,
                    if kind == StageKind::Lost {
                        lost_reason
                    } else {
                        None
                    }
                );
            }
        }
    }
}

#[test]
fn every_reopen_of_the_default_pipeline_is_allowed_or_refused_as_the_table_says() {
    let p = Pipeline::default_pipeline();
    let later = t0() + Duration::days(3);
    for (i, from) in STAGES.iter().enumerate() {
        for (j, to) in STAGES.iter().enumerate() {
            let deal = deal_in(from);
            let check = p.check_reopen(&key(from), &key(to));
            let reopened = deal.reopened(&p, &key(to), later);
            if REOPEN[i][j] == "-" {
                assert_invalid_transition(check, from, to);
                assert_invalid_transition(reopened, from, to);
                continue;
            }
            check.unwrap();
            let reopened = reopened.unwrap();
            assert_eq!(reopened.stage.as_str(), *to);
            assert_eq!(reopened.won_at, None);
            assert_eq!(reopened.lost_at, None);
            assert_eq!(reopened.lost_reason, None);
            assert_eq!(reopened.version, deal.version.next());
            assert_eq!(reopened.updated_at, later);
        }
    }
}

#[test]
fn refusals_say_why() {
    let p = Pipeline::default_pipeline();
    let why = |from: &str, to: &str, reason: bool| match p.check_move(&key(from), &key(to), reason)
    {
        Err(Error::InvalidTransition { why, .. }) => why,
        other => panic!("{other:?}"),
    };
    assert!(why("proposal", "proposal", false).contains("already"));
    assert!(why("closed_won", "proposal", false).contains("reopen"));
    assert!(why("proposal", "closed_lost", false).contains("lost reason"));
    assert!(why("proposal", "negotiation", true).contains("lost reason"));
    let err = p
        .check_move(&key("closed_won"), &key("qualified"), false)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "a deal cannot move from closed_won to qualified: the deal is closed; reopen it first"
    );
}

#[test]
fn a_stage_that_is_not_in_the_pipeline_is_a_validation_error_not_a_transition() {
    let p = Pipeline::default_pipeline();
    for (from, to) in [("qualified", "won"), ("won", "qualified")] {
        let err = p.check_move(&key(from), &key(to), false).unwrap_err();
        assert!(matches!(err, Error::Validation(_)), "{err:?}");
        assert_eq!(err.field_errors()[0].field, "stage");
        assert_eq!(err.field_errors()[0].code, "unknown_value");
        assert!(matches!(
            p.check_reopen(&key(from), &key(to)),
            Err(Error::Validation(_))
        ));
    }
}

#[test]
fn a_new_deal_starts_in_the_first_open_stage_and_never_in_a_closed_one() {
    let p = Pipeline::default_pipeline();
    let deal = Deal::create(TenantId::new(), new_deal(), &p, t0()).unwrap();
    assert_eq!(deal.stage.as_str(), "qualified");
    assert_eq!(deal.version, Version::FIRST);
    assert_eq!((deal.won_at, deal.lost_at), (None, None));
    for closed in ["closed_won", "closed_lost"] {
        let err = Deal::create(
            TenantId::new(),
            NewDeal {
                stage: Some(key(closed)),
                ..new_deal()
            },
            &p,
            t0(),
        )
        .unwrap_err();
        assert_eq!(err.field_errors()[0].field, "stage", "{err:?}");
    }
}

#[test]
fn the_default_pipeline_has_the_five_stages_in_order_with_their_probabilities() {
    let p = Pipeline::default_pipeline();
    assert_eq!(p.key(), &PipelineKey::default_pipeline());
    let stages: Vec<(&str, u8, StageKind)> = p
        .stages()
        .iter()
        .map(|s| (s.key.as_str(), s.win_probability, s.kind))
        .collect();
    assert_eq!(
        stages,
        [
            ("qualified", 20, StageKind::Open),
            ("proposal", 40, StageKind::Open),
            ("negotiation", 70, StageKind::Open),
            ("closed_won", 100, StageKind::Won),
            ("closed_lost", 0, StageKind::Lost),
        ]
    );
}

// ---------------------------------------------------------- custom pipelines

fn stage(k: &str, p: u8, kind: StageKind) -> StageDef {
    StageDef::new(key(k), k, p, kind)
}

fn pipeline(stages: Vec<StageDef>) -> Result<Pipeline, crm_core::ValidationErrors> {
    Pipeline::new(
        PipelineKey::parse("enterprise").unwrap(),
        "Enterprise",
        stages,
    )
}

fn codes(errors: &crm_core::ValidationErrors) -> Vec<(String, &'static str)> {
    errors
        .as_slice()
        .iter()
        .map(|e| (e.field.clone(), e.code))
        .collect()
}

#[test]
fn a_pipeline_without_a_won_or_lost_stage_is_rejected() {
    let no_won = pipeline(vec![
        stage("lead", 10, StageKind::Open),
        stage("lost", 0, StageKind::Lost),
    ])
    .unwrap_err();
    assert_eq!(codes(&no_won), [("stages".to_string(), "required")]);
    assert!(no_won.as_slice()[0].reason.contains("won"));

    let no_lost = pipeline(vec![
        stage("lead", 10, StageKind::Open),
        stage("won", 100, StageKind::Won),
    ])
    .unwrap_err();
    assert_eq!(codes(&no_lost), [("stages".to_string(), "required")]);
    assert!(no_lost.as_slice()[0].reason.contains("lost"));

    let empty = pipeline(vec![]).unwrap_err();
    assert_eq!(
        empty.as_slice().len(),
        3,
        "open, won and lost are all missing"
    );
}

#[test]
fn a_pipeline_with_duplicate_stage_keys_is_rejected() {
    let err = pipeline(vec![
        stage("lead", 10, StageKind::Open),
        stage("won", 100, StageKind::Won),
        stage("lead", 30, StageKind::Open),
        stage("lost", 0, StageKind::Lost),
    ])
    .unwrap_err();
    assert_eq!(codes(&err), [("stages[2]".to_string(), "duplicate")]);
}

#[test]
fn a_pipeline_with_bad_probabilities_is_rejected_with_every_bad_stage_named() {
    let err = pipeline(vec![
        stage("lead", 101, StageKind::Open),
        stage("won", 90, StageKind::Won),
        stage("lost", 5, StageKind::Lost),
    ])
    .unwrap_err();
    assert_eq!(
        codes(&err),
        [
            ("stages[0]".to_string(), "out_of_range"),
            ("stages[1]".to_string(), "out_of_range"),
            ("stages[2]".to_string(), "out_of_range"),
        ]
    );
}

#[test]
fn a_pipeline_needs_a_label() {
    let err = Pipeline::new(
        PipelineKey::parse("p").unwrap(),
        "  ",
        vec![
            stage("lead", 10, StageKind::Open),
            stage("won", 100, StageKind::Won),
            stage("lost", 0, StageKind::Lost),
        ],
    )
    .unwrap_err();
    assert_eq!(codes(&err), [("label".to_string(), "required")]);
}

#[test]
fn a_custom_pipeline_follows_the_same_machine() {
    let p = pipeline(vec![
        stage("won", 100, StageKind::Won),
        stage("discovery", 10, StageKind::Open),
        stage("pilot", 50, StageKind::Open),
        stage("lost_to_competitor", 0, StageKind::Lost),
        stage("no_budget", 0, StageKind::Lost),
    ])
    .unwrap();
    assert_eq!(p.first_open_stage().key.as_str(), "discovery");
    assert_eq!(p.label(), "Enterprise");
    let deal = Deal::create(
        TenantId::new(),
        NewDeal {
            pipeline: p.key().clone(),
            ..new_deal()
        },
        &p,
        t0(),
    )
    .unwrap();
    assert_eq!(deal.stage.as_str(), "discovery");
    let lost = deal
        .moved(&p, &key("no_budget"), Some(reason()), t0())
        .unwrap();
    assert_eq!(lost.lost_at, Some(t0()));
    assert_invalid_transition(
        lost.moved(&p, &key("lost_to_competitor"), Some(reason()), t0()),
        "no_budget",
        "lost_to_competitor",
    );
    let back = lost.reopened(&p, &key("pilot"), t0()).unwrap();
    assert_eq!(back.version, Version::new(3));
    let won = back.moved(&p, &key("won"), None, t0()).unwrap();
    assert_eq!(won.won_at, Some(t0()));
}

// ------------------------------------------------- random move sequences

#[derive(Debug, Clone)]
enum Step {
    Move { to: usize, with_reason: bool },
    Reopen { to: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..STAGES.len(), any::<bool>()).prop_map(|(to, with_reason)| Step::Move { to, with_reason }),
        1 => (0..STAGES.len()).prop_map(|to| Step::Reopen { to }),
    ]
}

fn index_of(stage: &StageKey) -> usize {
    STAGES.iter().position(|s| *s == stage.as_str()).unwrap()
}

proptest! {
    #[test]
    fn random_move_sequences_keep_the_stamps_and_versions_consistent(
        start in 0..3_usize,
        steps in prop::collection::vec(step(), 1..40),
    ) {
        let p = Pipeline::default_pipeline();
        let mut deal = deal_in(STAGES[start]);
        // Every open starting stage is built at version 1.
        let mut accepted = 0_i64;
        for (n, s) in steps.into_iter().enumerate() {
            let now = t0() + Duration::minutes(n as i64 + 1);
            let from = index_of(&deal.stage);
            let (result, expected) = match s {
                Step::Move { to, with_reason } => {
                    let table = if with_reason { WITH_REASON } else { WITHOUT_REASON };
                    (
                        deal.moved(&p, &key(STAGES[to]), with_reason.then(reason), now),
                        table[from][to] != "-",
                    )
                }
                Step::Reopen { to } => (deal.reopened(&p, &key(STAGES[to]), now), REOPEN[from][to] != "-"),
            };
            match result {
                Ok(next) => {
                    prop_assert!(expected, "accepted a move the table refuses: {} -> {}", deal.stage, next.stage);
                    prop_assert_eq!(next.version, deal.version.next());
                    prop_assert_eq!(next.updated_at, now);
                    accepted += 1;
                    deal = next;
                }
                Err(Error::InvalidTransition { from: f, .. }) => {
                    prop_assert!(!expected, "refused a move the table allows from {}", f);
                    prop_assert_eq!(f, deal.stage.clone());
                }
                Err(other) => prop_assert!(false, "unexpected error {:?}", other),
            }
            let kind = p.stage(&deal.stage).unwrap().kind;
            prop_assert_eq!(deal.won_at.is_some(), kind == StageKind::Won);
            prop_assert_eq!(deal.lost_at.is_some(), kind == StageKind::Lost);
            prop_assert_eq!(deal.lost_reason.is_some(), kind == StageKind::Lost);
            prop_assert_eq!(deal.version.get(), Version::FIRST.get() + accepted);
        }
    }
}
