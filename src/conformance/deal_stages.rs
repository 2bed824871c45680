//! The conformance suite's stage machine points: a deal moves through
//! the open stages to won or lost, leaves a closed stage only through
//! reopen, and every configured pipeline is honoured.

use super::prelude::*;
use super::support::{
    assert_micros, assert_same, begin, create, ctx, deal, default_stages, expect_conflict,
    expect_invalid_transition, expect_validation, get_deal, lost_reason, move_in_tx, new_contact,
    new_deal, ok, stage, stages_of, tick,
};

/// A deal moves through every open stage in order and then to won: each
/// move bumps the version; winning stamps `won_at`.
pub async fn a_deal_moves_through_the_open_stages_to_won_and_is_stamped(store: &DynStore) {
    let t = TenantId::new();
    let stages = default_stages(store);
    let crm = store.scope(t, &ctx());
    let c = create(store, t, new_contact("winner@example.com", "Win", "Ner")).await;
    let mut d = deal(store, t, new_deal(c.id, "Path", "100", "EUR")).await;
    let mut path: Vec<StageKey> = stages.open[1..].to_vec();
    path.push(stages.won.clone());
    for to in &path {
        tick().await;
        let before = d.clone();
        d = ok(
            crm.move_deal(d.id, d.version, to).await,
            &format!("move to {to}"),
        );
        assert_eq!(&d.stage, to, "the deal is in {to}");
        assert_eq!(d.version, before.version.next(), "a move bumps the version");
        assert!(d.updated_at > before.updated_at, "a move bumps updated_at");
    }
    let won_at = d.won_at.expect("winning stamps won_at");
    assert_eq!(won_at, d.updated_at, "won_at is the time of the move");
    assert_micros(won_at, "won_at");
    assert!(d.lost_at.is_none() && d.lost_reason.is_none());
    assert_same(
        &get_deal(store, t, d.id).await.expect("d"),
        &d,
        "the win is stored",
    );
}

/// Losing a deal needs a reason (`InvalidTransition` without); with one it
/// stamps `lost_at` and keeps the reason.
pub async fn losing_a_deal_needs_a_reason_and_stamps_lost_at(store: &DynStore) {
    let t = TenantId::new();
    let stages = default_stages(store);
    let c = create(store, t, new_contact("loser@example.com", "Lo", "Ser")).await;
    let d = deal(store, t, new_deal(c.id, "Doomed", "100", "EUR")).await;
    expect_invalid_transition(
        store
            .scope(t, &ctx())
            .move_deal(d.id, d.version, &stages.lost)
            .await,
        &d.stage,
        &stages.lost,
        "losing without a reason",
    );
    assert_same(
        &get_deal(store, t, d.id).await.expect("d"),
        &d,
        "the refused move changed nothing",
    );
    let lost = ok(
        move_in_tx(
            store,
            t,
            d.id,
            d.version,
            &stages.lost,
            Some(lost_reason("Went with a competitor\non price")),
        )
        .await,
        "lose with a reason",
    );
    assert_eq!(lost.stage, stages.lost);
    assert_eq!(lost.version, Version::new(2));
    assert_eq!(lost.lost_at, Some(lost.updated_at), "losing stamps lost_at");
    assert_eq!(
        lost.lost_reason.as_ref().map(LostReason::as_str),
        Some("Went with a competitor\non price"),
        "the reason is kept"
    );
    assert!(lost.won_at.is_none());
    assert_same(
        &get_deal(store, t, d.id).await.expect("d"),
        &lost,
        "the loss is stored",
    );
}

/// A won or lost deal cannot move to any stage; only a reopen takes it out.
pub async fn a_closed_deal_leaves_its_stage_only_through_reopen(store: &DynStore) {
    let t = TenantId::new();
    let s = default_stages(store);
    let crm = store.scope(t, &ctx());
    let c = create(store, t, new_contact("closed@example.com", "Clo", "Sed")).await;
    let won = deal(store, t, new_deal(c.id, "Won", "1", "EUR")).await;
    let won = ok(crm.move_deal(won.id, won.version, &s.won).await, "win");
    let lost = deal(store, t, new_deal(c.id, "Lost", "1", "EUR")).await;
    let lost = ok(
        crm.lose_deal(lost.id, lost.version, lost_reason("no budget"))
            .await,
        "lose",
    );
    for closed in [&won, &lost] {
        for to in s.open.iter().chain([&s.won]) {
            if to == &closed.stage {
                continue;
            }
            expect_invalid_transition(
                crm.move_deal(closed.id, closed.version, to).await,
                &closed.stage,
                to,
                &format!("moving a closed deal to {to}"),
            );
        }
        expect_invalid_transition(
            move_in_tx(
                store,
                t,
                closed.id,
                closed.version,
                &s.lost,
                Some(lost_reason("again")),
            )
            .await,
            &closed.stage,
            &s.lost,
            "moving a closed deal to lost",
        );
        assert_same(
            &get_deal(store, t, closed.id).await.expect("exists"),
            closed,
            "refused moves changed nothing",
        );
    }
}

/// Reopening takes a closed deal into an open stage and clears `won_at`,
/// `lost_at` and the reason; an open deal, or a closed target stage, is
/// `InvalidTransition`.
pub async fn reopen_clears_the_stamps_and_only_takes_closed_deals_into_open_stages(
    store: &DynStore,
) {
    let t = TenantId::new();
    let s = default_stages(store);
    let c = create(store, t, new_contact("reopen@example.com", "Re", "Open")).await;
    let d = deal(store, t, new_deal(c.id, "Again", "1", "EUR")).await;
    with_tx!(store, t, async |tx| {
        expect_invalid_transition(
            tx.reopen_deal(d.id, d.version, &s.open[1]).await,
            &d.stage,
            &s.open[1],
            "reopening an open deal",
        );
        let lost = ok(
            tx.move_deal(d.id, d.version, &s.lost, Some(lost_reason("timing")))
                .await,
            "lose",
        );
        expect_invalid_transition(
            tx.reopen_deal(d.id, lost.version, &s.won).await,
            &s.lost,
            &s.won,
            "reopening into a won stage",
        );
        expect_invalid_transition(
            tx.reopen_deal(d.id, lost.version, &s.lost).await,
            &s.lost,
            &s.lost,
            "reopening into a lost stage",
        );
        let reopened = ok(
            tx.reopen_deal(d.id, lost.version, &s.open[1]).await,
            "reopen",
        );
        assert_eq!(
            reopened.stage, s.open[1],
            "the deal is in the chosen open stage"
        );
        assert_eq!(reopened.version, lost.version.next());
        assert!(reopened.lost_at.is_none(), "reopening clears lost_at");
        assert!(
            reopened.lost_reason.is_none(),
            "reopening clears the reason"
        );
        assert!(reopened.won_at.is_none());
        let won = ok(
            tx.move_deal(d.id, reopened.version, &s.won, None).await,
            "win after reopening",
        );
        assert!(won.won_at.is_some());
        let again = ok(
            tx.reopen_deal(d.id, won.version, &s.open[0]).await,
            "reopen a won deal",
        );
        assert!(again.won_at.is_none(), "reopening clears won_at");
        assert_eq!(again.stage, s.open[0]);
        assert_eq!(again.version, Version::new(5));
        let stored = ok(tx.get_deal(d.id).await, "get").expect("d");
        assert_same(&stored, &again, "the reopen is stored");
    })
    .await;
}

/// Moving to the deal's own stage, or giving a lost reason when not
/// losing, is `InvalidTransition`; a stage outside the pipeline is a
/// validation error.
pub async fn refused_moves_are_invalid_transitions_and_unknown_stages_validation_errors(
    store: &DynStore,
) {
    let t = TenantId::new();
    let s = default_stages(store);
    let c = create(store, t, new_contact("mover@example.com", "Mo", "Ver")).await;
    let d = deal(store, t, new_deal(c.id, "Stay", "1", "EUR")).await;
    with_tx!(store, t, async |tx| {
        expect_invalid_transition(
            tx.move_deal(d.id, d.version, &d.stage, None).await,
            &d.stage,
            &d.stage,
            "moving to the same stage",
        );
        expect_invalid_transition(
            tx.move_deal(d.id, d.version, &s.open[1], Some(lost_reason("why")))
                .await,
            &d.stage,
            &s.open[1],
            "a lost reason on an open move",
        );
        expect_invalid_transition(
            tx.move_deal(d.id, d.version, &s.won, Some(lost_reason("why")))
                .await,
            &d.stage,
            &s.won,
            "a lost reason on a win",
        );
        expect_validation(
            tx.move_deal(d.id, d.version, &stage("no_such_stage"), None)
                .await,
            "stage",
            "moving to a stage outside the pipeline",
        );
        let stored = ok(tx.get_deal(d.id).await, "get").expect("d");
        assert_same(&stored, &d, "refused moves changed nothing");
        let back = ok(
            tx.move_deal(d.id, d.version, &s.open[1], None).await,
            "forward",
        );
        let back = ok(
            tx.move_deal(d.id, back.version, &s.open[0], None).await,
            "backward",
        );
        assert_eq!(
            back.stage, s.open[0],
            "open stages may be moved between in either direction"
        );
    })
    .await;
}

/// A move or reopen at a stale version is `Conflict` and changes nothing.
pub async fn a_stale_version_on_move_or_reopen_is_a_conflict(store: &DynStore) {
    let t = TenantId::new();
    let s = default_stages(store);
    let crm = store.scope(t, &ctx());
    let c = create(store, t, new_contact("stale.deal@example.com", "St", "Ale")).await;
    let d = deal(store, t, new_deal(c.id, "Stale", "1", "EUR")).await;
    let moved = ok(crm.move_deal(d.id, d.version, &s.open[1]).await, "move");
    expect_conflict(
        crm.move_deal(d.id, d.version, &s.won).await,
        Entity::Deal,
        d.id,
        1,
        2,
        "a move at a stale version",
    );
    let won = ok(crm.move_deal(d.id, moved.version, &s.won).await, "win");
    with_tx!(store, t, async |tx| {
        expect_conflict(
            tx.reopen_deal(d.id, moved.version, &s.open[0]).await,
            Entity::Deal,
            d.id,
            2,
            3,
            "a reopen at a stale version",
        );
    })
    .await;
    assert_same(
        &get_deal(store, t, d.id).await.expect("d"),
        &won,
        "conflicts changed nothing",
    );
}

/// Every pipeline the store knows is honoured: deals start in its first
/// open stage, move along its stages, and its summary lists its stages in
/// its order; a stage of another pipeline is a validation error.
pub async fn every_configured_pipeline_is_honoured(store: &DynStore) {
    let t = TenantId::new();
    let crm = store.scope(t, &ctx());
    let pipelines: Vec<Pipeline> = store.pipelines().iter().cloned().collect();
    assert!(
        pipelines
            .iter()
            .any(|p| p.key() == &PipelineKey::default_pipeline()),
        "the store knows the default pipeline"
    );
    let c = create(
        store,
        t,
        new_contact("pipelines@example.com", "Pipe", "Lines"),
    )
    .await;
    let mut parked_deals = Vec::new();
    for p in &pipelines {
        let s = stages_of(p);
        let d = deal(
            store,
            t,
            NewDeal {
                pipeline: p.key().clone(),
                ..new_deal(c.id, "In a pipeline", "10", "EUR")
            },
        )
        .await;
        assert_eq!(&d.pipeline, p.key());
        assert_eq!(
            d.stage,
            p.first_open_stage().key,
            "starts in {}'s first open stage",
            p.key()
        );
        let mut cur = d.clone();
        for to in s.open[1..].iter().chain([&s.won]) {
            cur = ok(
                crm.move_deal(cur.id, cur.version, to).await,
                &format!("move in {} to {to}", p.key()),
            );
        }
        assert!(cur.won_at.is_some());
        // A second deal stays in the second open stage (whose key another
        // pipeline may share).
        let parked = deal(
            store,
            t,
            NewDeal {
                pipeline: p.key().clone(),
                ..new_deal(c.id, "Parked", "5", "USD")
            },
        )
        .await;
        let parked = ok(
            crm.move_deal(parked.id, parked.version, &s.open[1]).await,
            "park",
        );
        parked_deals.push((p.key().clone(), s.open[1].clone(), parked.id));
        for other in &pipelines {
            if let Some(foreign) = other.stages().iter().find(|x| p.stage(&x.key).is_none()) {
                let fresh = deal(
                    store,
                    t,
                    NewDeal {
                        pipeline: p.key().clone(),
                        ..new_deal(c.id, "Foreign", "1", "EUR")
                    },
                )
                .await;
                expect_validation(
                    crm.move_deal(fresh.id, fresh.version, &foreign.key).await,
                    "stage",
                    &format!(
                        "moving a {} deal to {}'s stage {}",
                        p.key(),
                        other.key(),
                        foreign.key
                    ),
                );
                expect_validation(
                    crm.create_deal(NewDeal {
                        pipeline: p.key().clone(),
                        stage: Some(foreign.key.clone()),
                        ..new_deal(c.id, "Foreign start", "1", "EUR")
                    })
                    .await,
                    "stage",
                    &format!(
                        "starting a {} deal in {}'s stage {}",
                        p.key(),
                        other.key(),
                        foreign.key
                    ),
                );
                assert!(
                    ok(
                        with_tx!(store, t, async |tx| tx.delete_deal(fresh.id).await).await,
                        "delete"
                    ),
                    "the helper deal is deleted"
                );
            }
        }
    }
    for (pipeline, stage_key, parked) in &parked_deals {
        let listed = with_tx!(store, t, async |tx| ok(
            tx.list_deals_in_stage(pipeline, stage_key, &PageRequest::first(10))
                .await,
            "deals in stage"
        ))
        .await;
        assert_eq!(
            listed.items.iter().map(|d| d.id).collect::<Vec<_>>(),
            vec![*parked],
            "stage {stage_key} of {pipeline} lists only that pipeline's deal"
        );
    }
    for p in &pipelines {
        let summary = ok(crm.pipeline_summary(p.key()).await, "summary");
        assert_eq!(&summary.pipeline, p.key());
        let got: Vec<(&StageKey, &str, StageKind, u8)> = summary
            .stages
            .iter()
            .map(|x| (&x.stage, x.label.as_str(), x.kind, x.win_probability))
            .collect();
        let want: Vec<(&StageKey, &str, StageKind, u8)> = p
            .stages()
            .iter()
            .map(|x| (&x.key, x.label.as_str(), x.kind, x.win_probability))
            .collect();
        assert_eq!(
            got,
            want,
            "the summary of {} lists its stages in order",
            p.key()
        );
        let counted: u64 = summary
            .stages
            .iter()
            .flat_map(|x| &x.totals)
            .map(|x| x.count)
            .sum();
        assert_eq!(
            counted,
            2,
            "the summary of {} counts only its own two deals",
            p.key()
        );
    }
}
