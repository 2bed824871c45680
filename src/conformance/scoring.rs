//! The conformance suite's scoring points: batch rescoring (dry run, only
//! changed scores written, report counts, lookback, determinism) and live
//! scores (kept by the writes that add a signal, in their transaction).

use chrono::{Duration, Utc};

use super::prelude::*;
use super::support::{begin, create, ctx, deal, new_contact, new_deal, ok};

async fn signal(store: &DynStore, t: TenantId, id: ContactId, kind: SignalKind, at: Timestamp) {
    let mut tx = begin(store, t).await;
    ok(
        tx.record_signal(NewSignal::new(id, kind).occurred_at(at))
            .await,
        "record a signal",
    );
    ok(tx.commit().await, "commit");
}

async fn activity(store: &DynStore, t: TenantId, id: ContactId, kind: ActivityKind, at: Timestamp) {
    let mut tx = begin(store, t).await;
    ok(
        tx.log_activity(NewActivity::new(id, kind).occurred_at(at))
            .await,
        "log an activity",
    );
    ok(tx.commit().await, "commit");
}

async fn stored_score(store: &DynStore, t: TenantId, id: ContactId) -> Score {
    let mut tx = begin(store, t).await;
    let c = ok(tx.get_contact(id).await, "get").expect("the contact exists");
    ok(tx.commit().await, "commit");
    c.score
}

async fn run(store: &DynStore, t: TenantId, options: &RescoreOptions) -> RescoreReport {
    ok(
        rescore(store, t, ctx(), &ScoringModel::default(), options).await,
        "rescore",
    )
}

/// Three contacts: `hot` with a demo request and a meeting, `warm` with an
/// email, `cold` with nothing; returns them and a `now` a day later.
async fn three(store: &DynStore, t: TenantId) -> ([ContactId; 3], Timestamp) {
    let hot = create(store, t, new_contact("hot@example.com", "Hot", "Lead")).await;
    let warm = create(store, t, new_contact("warm@example.com", "Warm", "Lead")).await;
    let cold = create(store, t, new_contact("cold@example.com", "Cold", "Lead")).await;
    let base = truncate_to_micros(Utc::now());
    signal(store, t, hot.id, SignalKind::DEMO_REQUEST, base).await;
    activity(store, t, hot.id, ActivityKind::Meeting, base).await;
    activity(store, t, warm.id, ActivityKind::Email, base).await;
    ([hot.id, warm.id, cold.id], base + Duration::days(1))
}

/// Rescoring writes only the scores that change, and says so: a second
/// run at the same time changes nothing.
pub async fn rescoring_writes_only_changed_scores_and_reports_counts(store: &DynStore) {
    let t = TenantId::new();
    let ([hot, warm, cold], now) = three(store, t).await;
    let model = ScoringModel::default();
    let report = run(store, t, &RescoreOptions::new().with_now(now)).await;
    assert_eq!(report.scanned, 3, "every eligible contact is scanned");
    assert_eq!(report.changed, 2, "the two contacts with signals change");
    assert_eq!(report.unchanged, 1, "the cold contact stays at 0");
    assert_eq!(report.written, 2, "only changed scores are written");
    assert_eq!(report.distribution.iter().sum::<u64>(), 3);
    assert_eq!(
        report.distribution[0], 2,
        "the warm and cold contacts score below 10"
    );
    let expected_hot = model.score(
        now,
        [
            crate::scoring::ScoringInput::new(SignalKind::DEMO_REQUEST, now - Duration::days(1)),
            crate::scoring::ScoringInput::new(SignalKind::MEETING_BOOKED, now - Duration::days(1)),
        ],
    );
    assert_eq!(stored_score(store, t, hot).await, expected_hot.score);
    assert!(expected_hot.score.get() > 0);
    assert!(stored_score(store, t, warm).await.get() > 0);
    assert_eq!(stored_score(store, t, cold).await.get(), 0);
    assert_eq!(
        report.top.first().map(|l| l.contact),
        Some(hot),
        "the best first"
    );
    assert_eq!(
        report.top[0].scored.top_signals[0].kind,
        SignalKind::DEMO_REQUEST
    );
    let again = run(store, t, &RescoreOptions::new().with_now(now)).await;
    assert_eq!((again.scanned, again.changed, again.written), (3, 0, 0));
    assert_eq!(again.unchanged, 3);
}

/// A dry run scores and previews, and writes nothing.
pub async fn a_dry_run_writes_nothing_and_previews_the_top(store: &DynStore) {
    let t = TenantId::new();
    let ([hot, warm, cold], now) = three(store, t).await;
    let report = run(store, t, &RescoreOptions::dry_run().with_now(now)).await;
    assert!(report.dry_run);
    assert_eq!((report.scanned, report.changed, report.written), (3, 2, 0));
    let order: Vec<ContactId> = report.top.iter().map(|l| l.contact).collect();
    assert_eq!(order[..2], [hot, warm], "the preview lists the best first");
    assert!(report.top.len() <= 10);
    for id in [hot, warm, cold] {
        assert_eq!(
            stored_score(store, t, id).await.get(),
            0,
            "nothing was written"
        );
    }
}

/// Only contacts created within the lookback window (and active) are
/// scanned; an override of the window applies.
pub async fn rescoring_scans_only_active_contacts_within_the_lookback(store: &DynStore) {
    let t = TenantId::new();
    let ([hot, _, _], now) = three(store, t).await;
    let gone = create(store, t, new_contact("gone@example.com", "Gone", "Lead")).await;
    let mut tx = begin(store, t).await;
    ok(tx.deactivate_contact(gone.id).await, "deactivate");
    ok(tx.commit().await, "commit");
    let later = now + Duration::days(10);
    let narrow = run(
        store,
        t,
        &RescoreOptions::new()
            .with_now(later)
            .with_lookback_days(5.0),
    )
    .await;
    assert_eq!(
        narrow.scanned, 0,
        "created 11 days earlier: outside a 5-day window"
    );
    assert_eq!(stored_score(store, t, hot).await.get(), 0);
    let wide = run(
        store,
        t,
        &RescoreOptions::new()
            .with_now(later)
            .with_lookback_days(20.0),
    )
    .await;
    assert_eq!(wide.scanned, 3, "the inactive contact is not scanned");
    assert!(stored_score(store, t, hot).await.get() > 0);
    assert_eq!(stored_score(store, t, gone.id).await.get(), 0);
}

/// With `now` fixed the report is the same whatever the chunk size.
pub async fn rescoring_at_a_fixed_now_is_deterministic_across_chunk_sizes(store: &DynStore) {
    let t = TenantId::new();
    let (_, now) = three(store, t).await;
    for i in 0..4 {
        let c = create(
            store,
            t,
            new_contact(&format!("more{i}@example.com"), "More", "Lead"),
        )
        .await;
        signal(
            store,
            t,
            c.id,
            SignalKind::PRICING_PAGE_VIEW,
            now - Duration::days(i),
        )
        .await;
    }
    let one = run(
        store,
        t,
        &RescoreOptions::dry_run().with_now(now).with_chunk_size(1),
    )
    .await;
    let many = run(
        store,
        t,
        &RescoreOptions::dry_run()
            .with_now(now)
            .with_chunk_size(1000),
    )
    .await;
    assert_eq!(one.chunks, 7, "one chunk per contact");
    assert_eq!(many.chunks, 1);
    assert_eq!(
        (one.scanned, one.changed, one.distribution, &one.top),
        (many.scanned, many.changed, many.distribution, &many.top)
    );
    assert_eq!(one.scanned, 7);
}

/// Logging a meeting raises a contact above another in the live top leads
/// at once, inside the transaction and after it commits; a rollback undoes
/// the change.
pub async fn logging_a_meeting_raises_the_live_rank_at_once_and_a_rollback_undoes_it(
    store: &DynStore,
) {
    let t = TenantId::new();
    let model = ScoringModel::default();
    let a = create(store, t, new_contact("a@example.com", "A", "Lead")).await;
    let b = create(store, t, new_contact("b@example.com", "B", "Lead")).await;
    let now = truncate_to_micros(Utc::now());
    signal(store, t, a.id, SignalKind::PRICING_PAGE_VIEW, now).await;
    signal(store, t, b.id, SignalKind::PAGE_VIEW, now).await;
    let ranked = |leads: Vec<crate::scoring::LiveLead>| -> Vec<ContactId> {
        leads.iter().map(|l| l.contact.id).collect()
    };
    let mut tx = begin(store, t).await;
    let before = ok(live_top_leads(&mut *tx, &model, 10, now).await, "live top");
    assert_eq!(ranked(before), [a.id, b.id]);
    let b_before = ok(
        tx.live_score_log(b.id).await.map(|s| s.map(|s| s.log)),
        "live state",
    )
    .flatten();
    ok(
        tx.log_activity(NewActivity::new(b.id, ActivityKind::Meeting).occurred_at(now))
            .await,
        "log a meeting",
    );
    let inside = ok(live_top_leads(&mut *tx, &model, 10, now).await, "live top");
    assert_eq!(
        ranked(inside),
        [b.id, a.id],
        "at once, in the same transaction"
    );
    ok(tx.rollback().await, "rollback");
    let mut tx = begin(store, t).await;
    let after_rollback = ok(
        tx.live_score_log(b.id).await.map(|s| s.map(|s| s.log)),
        "live state",
    )
    .flatten();
    assert_eq!(
        after_rollback.map(f64::to_bits),
        b_before.map(f64::to_bits),
        "the rollback restored the exact state"
    );
    ok(
        tx.log_activity(NewActivity::new(b.id, ActivityKind::Meeting).occurred_at(now))
            .await,
        "log a meeting",
    );
    ok(tx.commit().await, "commit");
    let mut tx = begin(store, t).await;
    let committed = ok(live_top_leads(&mut *tx, &model, 10, now).await, "live top");
    assert_eq!(ranked(committed.clone()), [b.id, a.id]);
    // 25 + 2 = 27 → floor(2700 / 230) = 11; 15 → 6.
    assert_eq!(committed[0].live_score.get(), 11);
    assert_eq!(committed[1].live_score.get(), 6);
    ok(tx.commit().await, "commit");
}

/// The displayed live score is what `explain` says, the stored state equals
/// its recomputation, and for recent signals without deals the live and
/// batch scores agree.
pub async fn the_displayed_live_score_is_what_explain_says(store: &DynStore) {
    let t = TenantId::new();
    let model = ScoringModel::default();
    let c = create(store, t, new_contact("x@example.com", "X", "Lead")).await;
    let base = truncate_to_micros(Utc::now());
    signal(
        store,
        t,
        c.id,
        SignalKind::DEMO_REQUEST,
        base - Duration::days(3),
    )
    .await;
    activity(
        store,
        t,
        c.id,
        ActivityKind::Call,
        base - Duration::days(10),
    )
    .await;
    signal(
        store,
        t,
        c.id,
        SignalKind::parse("unweighted").unwrap(),
        base,
    )
    .await;
    let now = base + Duration::hours(1);
    let mut tx = begin(store, t).await;
    let shown = ok(live_score(&mut *tx, &model, c.id, now).await, "live score")
        .expect("the contact exists");
    let e = ok(explain(&mut *tx, &model, c.id, Some(now)).await, "explain").expect("exists");
    ok(tx.commit().await, "commit");
    assert_eq!(
        e.live_score, shown,
        "the displayed score is the explained one"
    );
    assert_eq!(e.live_terms, 2, "the unweighted signal adds no term");
    assert!(
        e.live_consistent(),
        "{:?} vs {:?}",
        e.live_log,
        e.live_log_recomputed
    );
    assert_eq!(
        e.batch.score, e.live_score,
        "recent signals, no deal: the two agree"
    );
    assert!(shown.get() > 0);
    assert_eq!(e.batch.top_signals[0].kind, SignalKind::DEMO_REQUEST);
    let report = run(store, t, &RescoreOptions::new().with_now(now)).await;
    assert_eq!(report.written, 1);
    assert_eq!(
        stored_score(store, t, c.id).await,
        e.batch.score,
        "explain predicts the batch"
    );
}

/// A rebuild by the batch stores the recomputed live state, and a store
/// rejects a chunk size of 0.
pub async fn a_rebuild_stores_the_recomputed_live_state(store: &DynStore) {
    let t = TenantId::new();
    let model = ScoringModel::default();
    let ([hot, warm, cold], now) = three(store, t).await;
    let mut tx = begin(store, t).await;
    ok(
        tx.write_live_score_logs(&[LiveState::new(hot, None), LiveState::new(warm, Some(1.0))])
            .await,
        "clear",
    );
    ok(tx.commit().await, "commit");
    let report = run(
        store,
        t,
        &RescoreOptions::new().with_now(now).with_rebuild_live(true),
    )
    .await;
    assert_eq!(report.live_rebuilt, 3);
    let mut tx = begin(store, t).await;
    for id in [hot, warm, cold] {
        let e = ok(explain(&mut *tx, &model, id, Some(now)).await, "explain").expect("exists");
        assert!(
            e.live_consistent(),
            "rebuilt: {:?} vs {:?}",
            e.live_log,
            e.live_log_recomputed
        );
    }
    assert_eq!(
        ok(
            tx.live_score_log(cold).await.map(|s| s.map(|s| s.log)),
            "state"
        ),
        Some(None)
    );
    let zero =
        rescore_in_transaction(&mut *tx, &model, &RescoreOptions::new().with_chunk_size(0)).await;
    assert!(matches!(zero, Err(crate::Error::Validation(_))), "{zero:?}");
    ok(tx.commit().await, "commit");
}

/// Sets every one of `scores` (contact, score) with one `write_scores`.
async fn set_scores(store: &DynStore, t: TenantId, scores: &[(ContactId, Score)]) {
    let writes: Vec<ContactScore> = scores
        .iter()
        .map(|(id, s)| ContactScore::new(*id, *s))
        .collect();
    let mut tx = begin(store, t).await;
    ok(tx.write_scores(&writes).await, "write scores");
    ok(tx.commit().await, "commit");
}

/// A rescoring writes exactly the score the model gives each eligible
/// contact's inputs (activities as their signals, recorded signals, open
/// deals; the old ones past the age cutoff left out), in every chunk size,
/// in a transaction of its own or of the caller's; an inactive contact
/// keeps the score it had. Each run starts from scores that all differ
/// from the model's, so every eligible score is rewritten.
pub async fn rescoring_writes_exactly_the_models_scores_in_any_chunk_size(store: &DynStore) {
    use crate::scoring::ScoringInput;
    let t = TenantId::new();
    let model = ScoringModel::default();
    let base = truncate_to_micros(Utc::now());
    let kinds = [
        ActivityKind::Email,
        ActivityKind::Call,
        ActivityKind::Meeting,
        ActivityKind::Note,
        ActivityKind::Task,
    ];
    let signal_kinds = [
        SignalKind::EMAIL_OPEN,
        SignalKind::PRICING_PAGE_VIEW,
        SignalKind::DEMO_REQUEST,
        SignalKind::parse("trial_started").expect("a kind"),
    ];
    // (contact, its inputs, active)
    let mut contacts: Vec<(ContactId, Vec<ScoringInput>, bool)> = Vec::new();
    for i in 0..23usize {
        let c = create(
            store,
            t,
            new_contact(&format!("model{i}@example.com"), "Model", "Lead"),
        )
        .await;
        let mut inputs = Vec::new();
        let mut tx = begin(store, t).await;
        for j in 0..i % 6 {
            let kind = kinds[(i + j) % kinds.len()];
            // Up to 83 days old: some past the 60-day age cutoff.
            let at = base - Duration::hours(((i * 37 + j * 401) % 2000) as i64);
            ok(
                tx.log_activity(NewActivity::new(c.id, kind).occurred_at(at))
                    .await,
                "log an activity",
            );
            inputs.push(ScoringInput::new(model.activity_signal(kind).clone(), at));
        }
        for j in 0..i % 4 {
            let kind = signal_kinds[(i * 3 + j) % signal_kinds.len()].clone();
            let at = base - Duration::hours(((i * 53 + j * 211) % 1700) as i64);
            ok(
                tx.record_signal(NewSignal::new(c.id, kind.clone()).occurred_at(at))
                    .await,
                "record a signal",
            );
            inputs.push(ScoringInput::new(kind, at));
        }
        ok(tx.commit().await, "commit");
        if i % 4 == 1 {
            let d = deal(store, t, new_deal(c.id, "Open deal", "100", "EUR")).await;
            inputs.push(ScoringInput::deal_exists(d.created_at));
        }
        let active = i % 9 != 5;
        if !active {
            let mut tx = begin(store, t).await;
            ok(tx.deactivate_contact(c.id).await, "deactivate");
            ok(tx.commit().await, "commit");
        }
        contacts.push((c.id, inputs, active));
    }
    let now = base + Duration::hours(2);
    let expected: Vec<Score> = contacts
        .iter()
        .map(|(_, inputs, _)| model.score(now, inputs.iter().cloned()).score)
        .collect();
    let eligible = contacts.iter().filter(|c| c.2).count() as u64;
    for (round, chunk) in [1u32, 4, 7, 1000].into_iter().enumerate() {
        // Every score moved off the model's: (s + 50 + round) mod 101 ≠ s.
        let scrambled: Vec<(ContactId, Score)> = contacts
            .iter()
            .zip(&expected)
            .map(|((id, _, _), s)| {
                let v = (i64::from(s.get()) + 50 + round as i64) % 101;
                (*id, Score::new(v).expect("a score"))
            })
            .collect();
        set_scores(store, t, &scrambled).await;
        let options = RescoreOptions::new().with_now(now).with_chunk_size(chunk);
        let report = if round % 2 == 0 {
            run(store, t, &options).await
        } else {
            let mut tx = begin(store, t).await;
            let report = ok(
                rescore_in_transaction(tx.as_mut(), &model, &options).await,
                "rescore in a transaction",
            );
            ok(tx.commit().await, "commit");
            report
        };
        assert_eq!(
            (report.scanned, report.changed, report.written),
            (eligible, eligible, eligible),
            "chunks of {chunk}: every eligible contact rescored and written"
        );
        for (((id, _, active), want), (_, before)) in contacts.iter().zip(&expected).zip(&scrambled)
        {
            let want = if *active { *want } else { *before };
            assert_eq!(
                stored_score(store, t, *id).await,
                want,
                "chunks of {chunk}: the stored score of {id} (active: {active})"
            );
        }
    }
}

/// Each chunk of [`ScoringTx::scoring_inputs`] holds the eligible contacts
/// after the cursor, in id order, each with its own activities, signals
/// and open deals and nobody else's — whatever lies between them. The
/// inactive contacts here sit among the active ones in runs of one to
/// three and carry inputs of their own, so that in every chunk size some
/// chunks span few of them (a store may read such a chunk's inputs by id
/// range, and must drop what the left-out contacts bring) and some many;
/// with and without a cutoff for the inputs, and with the largest limit
/// there is.
///
/// [`ScoringTx::scoring_inputs`]: crate::store::ScoringTx::scoring_inputs
pub async fn each_chunk_of_scoring_inputs_holds_its_contacts_inputs_and_nobody_elses(
    store: &DynStore,
) {
    let t = TenantId::new();
    let base = truncate_to_micros(Utc::now());
    let kinds = [
        ActivityKind::Email,
        ActivityKind::Call,
        ActivityKind::Meeting,
    ];
    // A = active, I = inactive, in creation (and so id) order.
    let pattern = "AIAAIIIAAAAIAIIAA";
    // (contact, activities, signals, open deals), for the active ones.
    type Expected = (
        ContactId,
        Vec<(ActivityKind, Timestamp)>,
        Vec<(SignalKind, Timestamp)>,
        Vec<Timestamp>,
    );
    let mut expected: Vec<Expected> = Vec::new();
    for (i, flag) in pattern.chars().enumerate() {
        let c = create(
            store,
            t,
            new_contact(&format!("chunk{i}@example.com"), "Chunk", "Lead"),
        )
        .await;
        let (mut activities, mut signals, mut deals) = (Vec::new(), Vec::new(), Vec::new());
        let mut tx = begin(store, t).await;
        for j in 0..=(i % 4) {
            let kind = kinds[(i + j) % kinds.len()];
            let at = base - Duration::minutes((i * 10 + j) as i64);
            ok(
                tx.log_activity(NewActivity::new(c.id, kind).occurred_at(at))
                    .await,
                "log an activity",
            );
            activities.push((kind, at));
        }
        if i % 3 == 0 {
            let at = base - Duration::minutes((i * 10 + 3) as i64);
            ok(
                tx.record_signal(NewSignal::new(c.id, SignalKind::EMAIL_OPEN).occurred_at(at))
                    .await,
                "record a signal",
            );
            signals.push((SignalKind::EMAIL_OPEN, at));
        }
        ok(tx.commit().await, "commit");
        if i % 2 == 0 {
            let d = deal(store, t, new_deal(c.id, "Open deal", "100", "EUR")).await;
            deals.push(d.created_at);
        }
        if flag == 'I' {
            let mut tx = begin(store, t).await;
            ok(tx.deactivate_contact(c.id).await, "deactivate");
            ok(tx.commit().await, "commit");
        } else {
            activities.sort();
            signals.sort();
            expected.push((c.id, activities, signals, deals));
        }
    }
    let created_from = base - Duration::days(1);
    // Without a cutoff, and with one that leaves out the older activities
    // and signals: of contact 7, the activities 73 minutes old but not
    // those of 70–72 (72: exactly at the cutoff); the signals of contacts
    // 9, 12 and 15 (every deal was created after it).
    let cut = base - Duration::minutes(72);
    let cut_expected: Vec<Expected> = expected
        .iter()
        .map(|(id, activities, signals, deals)| {
            (
                *id,
                activities.iter().filter(|a| a.1 >= cut).cloned().collect(),
                signals.iter().filter(|s| s.1 >= cut).cloned().collect(),
                deals.clone(),
            )
        })
        .collect();
    for side in [1, 2] {
        let count = |e: &[Expected]| -> usize {
            e.iter()
                .map(|x| if side == 1 { x.1.len() } else { x.2.len() })
                .sum()
        };
        assert!(
            count(&cut_expected) < count(&expected),
            "the cutoff leaves out some of side {side}"
        );
    }
    let runs = [1u32, 2, 3, 4, 5, 6, 100, u32::MAX]
        .into_iter()
        .flat_map(|limit| [(limit, None), (limit, Some(cut))]);
    for (limit, inputs_from) in runs {
        let mut tx = begin(store, t).await;
        let mut got: Vec<Expected> = Vec::new();
        let mut after = None;
        loop {
            let chunk = ok(
                tx.scoring_inputs(&InputsRequest {
                    created_from,
                    after,
                    limit,
                    inputs_from,
                })
                .await,
                "scoring inputs",
            );
            assert!(
                chunk.len() <= limit as usize,
                "chunks of {limit}: a chunk of {} contacts",
                chunk.len()
            );
            let Some(last) = chunk.last() else {
                break;
            };
            after = Some(last.id);
            let full = chunk.len() == limit as usize;
            for mut c in chunk {
                c.activities.sort();
                c.signals.sort();
                c.open_deals.sort();
                got.push((c.id, c.activities, c.signals, c.open_deals));
            }
            if !full {
                break;
            }
        }
        ok(tx.commit().await, "commit");
        let ids: Vec<ContactId> = got.iter().map(|g| g.0).collect();
        let mut sorted = ids.clone();
        sorted.sort_by_key(|id| id.as_uuid());
        assert_eq!(ids, sorted, "chunks of {limit}: contacts in id order");
        let what = format!("chunks of {limit}, inputs from {inputs_from:?}");
        if inputs_from.is_none() {
            assert_eq!(
                got, expected,
                "{what}: each active contact once, with its own inputs"
            );
            continue;
        }
        // With a cutoff, the inputs before it may be left out (the
        // contract's "may"), and nothing at or after it may be.
        assert_eq!(
            got.iter().map(|g| g.0).collect::<Vec<_>>(),
            expected.iter().map(|e| e.0).collect::<Vec<_>>(),
            "{what}: each active contact once"
        );
        for ((g, all), cut_only) in got.iter().zip(&expected).zip(&cut_expected) {
            let kept = |v: &[(ActivityKind, Timestamp)]| -> Vec<(ActivityKind, Timestamp)> {
                v.iter().filter(|a| a.1 >= cut).cloned().collect()
            };
            assert_eq!(kept(&g.1), cut_only.1, "{what}: the activities of {}", g.0);
            assert!(
                g.1.iter().all(|a| all.1.contains(a)),
                "{what}: activities of {} that are not its own",
                g.0
            );
            let kept: Vec<_> = g.2.iter().filter(|s| s.1 >= cut).cloned().collect();
            assert_eq!(kept, cut_only.2, "{what}: the signals of {}", g.0);
            assert!(
                g.2.iter().all(|s| all.2.contains(s)),
                "{what}: signals of {} that are not its own",
                g.0
            );
            assert_eq!(g.3, cut_only.3, "{what}: the open deals of {}", g.0);
        }
    }
}
