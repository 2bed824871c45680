//! The freshness model's properties, for any contact and any instant: the
//! score stays in 0–100, never rises as time passes or as a fact ages, and
//! the time-invariant order key ranks contacts as their scores do.

use chrono::{DateTime, Duration, Utc};
use crm_core::domain::{
    ContactId, FreshField, Freshness, FreshnessModel, SignalKind, StaleQuery, Timestamp,
};
use proptest::prelude::*;

/// An instant within ±20 years of 2026, in whole microseconds.
fn instant() -> impl Strategy<Value = Timestamp> {
    let base = 1_767_225_600_000_000i64; // 2026-01-01
    let span = 20 * 365 * 86_400_000_000i64;
    (-span..span).prop_map(move |d| DateTime::from_timestamp_micros(base + d).unwrap_or_default())
}

fn freshness() -> impl Strategy<Value = Freshness> {
    (
        instant(),
        proptest::collection::vec(proptest::option::of(instant()), 5),
        any::<bool>(),
    )
        .prop_map(|(created, times, invalid)| Freshness {
            contact_id: ContactId::new(),
            created_at: created,
            last_engaged_at: times[0],
            email_verified_at: times[1],
            phone_verified_at: times[2],
            title_verified_at: times[3],
            company_verified_at: times[4],
            email_invalid_at: invalid.then_some(created),
            reverify_since: None,
            unsubscribed_at: None,
        })
}

proptest! {
    #[test]
    fn the_score_is_between_0_and_100(f in freshness(), now in instant()) {
        let s = f.score(&FreshnessModel::default(), now);
        prop_assert!(s <= 100);
    }

    #[test]
    fn the_score_never_rises_as_time_passes(
        f in freshness(),
        now in instant(),
        later in 0i64..(50 * 365 * 86_400_000_000),
    ) {
        let model = FreshnessModel::default();
        let a = f.score(&model, now);
        let b = f.score(&model, now + Duration::microseconds(later));
        prop_assert!(b <= a, "{a} then {b}");
    }

    #[test]
    fn an_older_verification_never_scores_higher(
        f in freshness(),
        now in instant(),
        field in 0usize..4,
        older in 0i64..(10 * 365 * 86_400_000_000),
    ) {
        let model = FreshnessModel::default();
        let field = FreshField::ALL[field];
        let at = f.effective_verified_at(field);
        let mut aged = f.clone();
        let slot = at - Duration::microseconds(older);
        match field {
            FreshField::Email => aged.email_verified_at = Some(slot),
            FreshField::Phone => aged.phone_verified_at = Some(slot),
            FreshField::Title => aged.title_verified_at = Some(slot),
            FreshField::Company => aged.company_verified_at = Some(slot),
        }
        prop_assert!(aged.score(&model, now) <= f.score(&model, now));
        prop_assert!(aged.order_key() <= f.order_key());
    }

    #[test]
    fn the_order_key_ranks_as_the_score_at_any_instant(
        a in freshness(),
        b in freshness(),
        now in instant(),
    ) {
        let model = FreshnessModel::default();
        // The whole key: an invalid email first (and scoring 0), then the
        // weighted sum.
        let (ka, kb) = (a.order_key(), b.order_key());
        let (sa, sb) = (a.score(&model, now), b.score(&model, now));
        if ka < kb {
            prop_assert!(sa <= sb, "key {ka:?} < {kb:?} but score {sa} > {sb}");
        } else if ka > kb {
            prop_assert!(sa >= sb, "key {ka:?} > {kb:?} but score {sa} < {sb}");
        } else {
            prop_assert_eq!(sa, sb);
        }
    }

    #[test]
    fn engagement_only_moves_forward(f in freshness(), at in instant()) {
        let next = f.engaged(Some(&SignalKind::PAGE_VIEW), at);
        let before = f.last_engaged_at;
        prop_assert_eq!(next.last_engaged_at, Some(before.map_or(at, |b| b.max(at))));
        prop_assert!(next.order_key().weighted >= f.order_key().weighted || before.is_none());
    }
}

#[test]
fn verifying_title_and_company_after_a_job_change_clears_it() {
    let t0 = Utc::now();
    let f = Freshness::new(ContactId::new(), t0)
        .engaged(Some(&SignalKind::JOB_CHANGED), t0 + Duration::days(1));
    assert!(f.reverify_since.is_some());
    let g = f.verified(&[FreshField::Title], t0 + Duration::days(2));
    assert!(g.reverify_since.is_some());
    let h = g.verified(&[FreshField::Company], t0 + Duration::days(3));
    assert_eq!(h.reverify_since, None);
}

#[test]
fn a_query_that_asks_for_nothing_names_the_query() {
    let e = StaleQuery::default().bounds(Utc::now()).unwrap_err();
    assert!(e.to_string().contains("stale_query"), "{e}");
}
