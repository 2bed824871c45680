//! The conformance suite's deal points: creation in a pipeline's stage,
//! versioned updates, deal lists, and deletion.

use rust_decimal::Decimal;

use super::prelude::*;
use super::support::{
    assert_micros, assert_same, begin, create, ctx, deal, dec, default_stages, expect_conflict,
    expect_not_found, expect_validation, get_deal, money, new_contact, new_deal, ok, stage, tick,
    timeline_all,
};

/// A new deal starts in the default pipeline's first open stage (or the
/// open stage it names), version 1, no stamps, at microsecond precision.
pub async fn create_deal_starts_in_the_first_open_stage_of_the_default_pipeline(store: &DynStore) {
    let t = TenantId::new();
    let key = PipelineKey::default_pipeline();
    assert!(
        store.pipelines().get(&key).is_some(),
        "every store knows the default pipeline"
    );
    let stages = default_stages(store);
    let c = create(store, t, new_contact("buyer@example.com", "Bu", "Yer")).await;
    let input = NewDeal {
        expected_close_date: chrono::NaiveDate::from_ymd_opt(2031, 2, 28),
        ..new_deal(c.id, "Big deal", "1250.50", "EUR")
    };
    let d = deal(store, t, input.clone()).await;
    assert_eq!(d.tenant_id, t);
    assert_eq!(d.contact_id, c.id);
    assert_eq!(d.title, input.title);
    assert_eq!(d.amount, input.amount);
    assert_eq!(d.amount.amount(), dec("1250.5"));
    assert_eq!(d.expected_close_date, input.expected_close_date);
    assert_eq!(d.pipeline, key);
    assert_eq!(
        d.stage,
        stages.pipeline.first_open_stage().key,
        "a deal starts in the first open stage"
    );
    assert_eq!(d.version, Version::FIRST);
    assert!(d.won_at.is_none() && d.lost_at.is_none() && d.lost_reason.is_none());
    assert_eq!(d.created_at, d.updated_at);
    assert_micros(d.created_at, "a deal's created_at");
    assert_same(
        &get_deal(store, t, d.id).await.expect("exists"),
        &d,
        "get_deal returns the created deal",
    );

    let named = deal(
        store,
        t,
        NewDeal {
            stage: Some(stages.open[1].clone()),
            ..new_deal(c.id, "Further along", "0", "USD")
        },
    )
    .await;
    assert_eq!(
        named.stage, stages.open[1],
        "a deal may start in a named open stage"
    );
    assert_eq!(named.amount.amount(), Decimal::ZERO);
    assert_same(
        &get_deal(store, t, named.id).await.expect("exists"),
        &named,
        "get_deal returns the created deal",
    );
}

/// Creating a deal for a contact that does not exist is `NotFound`.
pub async fn create_deal_for_a_missing_contact_is_not_found(store: &DynStore) {
    let t = TenantId::new();
    let ghost = ContactId::new();
    expect_not_found(
        store
            .scope(t, &ctx())
            .create_deal(new_deal(ghost, "Nobody", "1", "EUR"))
            .await,
        Entity::Contact,
        ghost,
        "a deal for a missing contact",
    );
}

/// An unknown pipeline, an unknown stage or a closed starting stage is a
/// validation error (on `pipeline` or `stage`), and creates nothing.
pub async fn create_deal_rejects_unknown_pipeline_unknown_stage_and_closed_stage(store: &DynStore) {
    let t = TenantId::new();
    let stages = default_stages(store);
    let c = create(store, t, new_contact("picky@example.com", "Pi", "Cky")).await;
    let base = new_deal(c.id, "Picky", "1", "EUR");
    let cases = [
        (
            "an unknown pipeline",
            NewDeal {
                pipeline: PipelineKey::parse("no_such_pipeline").expect("key"),
                ..base.clone()
            },
            "pipeline",
        ),
        (
            "an unknown stage",
            NewDeal {
                stage: Some(stage("no_such_stage")),
                ..base.clone()
            },
            "stage",
        ),
        (
            "a won starting stage",
            NewDeal {
                stage: Some(stages.won.clone()),
                ..base.clone()
            },
            "stage",
        ),
        (
            "a lost starting stage",
            NewDeal {
                stage: Some(stages.lost.clone()),
                ..base.clone()
            },
            "stage",
        ),
    ];
    for (label, input, field) in cases {
        expect_validation(
            store.scope(t, &ctx()).create_deal(input).await,
            field,
            label,
        );
    }
    let listed = with_tx!(store, t, async |tx| {
        ok(
            tx.list_deals_for_contact(c.id, &PageRequest::first(10))
                .await,
            "deals",
        )
    })
    .await;
    assert!(listed.items.is_empty(), "refused deals were not created");
}

/// Deal updates check the version like contact updates: the right one
/// bumps it, a stale one is `Conflict`, a no-op keeps it.
pub async fn update_deal_checks_the_version(store: &DynStore) {
    let t = TenantId::new();
    let c = create(store, t, new_contact("deals@example.com", "De", "Als")).await;
    let d = deal(store, t, new_deal(c.id, "First title", "10", "EUR")).await;
    tick().await;
    let patch = DealPatch {
        title: Some(DealTitle::parse("Second title").expect("title")),
        amount: Some(money("12.3400", "USD")),
        expected_close_date: Some(chrono::NaiveDate::from_ymd_opt(2030, 1, 31)),
        ..DealPatch::default()
    };
    let d2 = with_tx!(store, t, async |tx| {
        ok(
            tx.update_deal(d.id, d.version, patch.clone()).await,
            "update deal",
        )
    })
    .await;
    assert_eq!(d2.version, Version::new(2));
    assert!(d2.updated_at > d.updated_at, "updated_at moves forward");
    assert_eq!(d2.created_at, d.created_at);
    assert_eq!(d2.title.as_str(), "Second title");
    assert_eq!(d2.amount, money("12.34", "USD"));
    assert_eq!(
        d2.expected_close_date,
        chrono::NaiveDate::from_ymd_opt(2030, 1, 31)
    );
    assert_eq!(d2.stage, d.stage, "an update does not move the deal");
    assert_same(
        &get_deal(store, t, d.id).await.expect("d"),
        &d2,
        "the update is stored",
    );

    with_tx!(store, t, async |tx| {
        expect_conflict(
            tx.update_deal(d.id, d.version, patch.clone()).await,
            Entity::Deal,
            d.id,
            1,
            2,
            "a stale deal update",
        );
        let same = ok(
            tx.update_deal(d.id, d2.version, patch.clone()).await,
            "no-op",
        );
        assert_same(&same, &d2, "a patch of the current values changes nothing");
        let empty = ok(
            tx.update_deal(d.id, d2.version, DealPatch::default()).await,
            "empty",
        );
        assert_same(&empty, &d2, "an empty patch changes nothing");
        let cleared = ok(
            tx.update_deal(
                d.id,
                d2.version,
                DealPatch {
                    expected_close_date: Some(None),
                    ..DealPatch::default()
                },
            )
            .await,
            "clear the close date",
        );
        assert_eq!(cleared.expected_close_date, None);
        assert_eq!(cleared.version, Version::new(3));
    })
    .await;
}

/// Deal lists (of a contact, of a stage) are newest first, ties broken by
/// id descending, and paging visits every deal once.
pub async fn deal_lists_are_newest_first_and_page_through_every_deal(store: &DynStore) {
    let t = TenantId::new();
    let s = default_stages(store);
    let x = create(store, t, new_contact("x@example.com", "X", "X")).await;
    let y = create(store, t, new_contact("y@example.com", "Y", "Y")).await;
    let mut made: Vec<Deal> = with_tx!(store, t, async |tx| {
        let mut v = Vec::new();
        for i in 0..3 {
            v.push(ok(
                tx.create_deal(new_deal(x.id, &format!("x{i}"), "1", "EUR"))
                    .await,
                "deal",
            ));
        }
        v.push(ok(
            tx.create_deal(new_deal(y.id, "y0", "1", "EUR")).await,
            "deal",
        ));
        v
    })
    .await;
    for i in 3..7 {
        tick().await;
        made.push(deal(store, t, new_deal(x.id, &format!("x{i}"), "1", "EUR")).await);
    }
    tick().await;
    made.push(deal(store, t, new_deal(y.id, "y1", "1", "EUR")).await);
    // Move two of x's deals on.
    for i in [1, 4] {
        let d = &made[i];
        made[i] = ok(
            store
                .scope(t, &ctx())
                .move_deal(d.id, d.version, &s.open[1])
                .await,
            "move",
        );
    }
    let newest_first = |ds: Vec<&Deal>| -> Vec<DealId> {
        let mut v = ds;
        v.sort_by_key(|d| (d.created_at, d.id));
        v.reverse();
        v.into_iter().map(|d| d.id).collect()
    };
    let of_x = newest_first(made.iter().filter(|d| d.contact_id == x.id).collect());
    assert_eq!(of_x[0], made[7].id, "the last deal created is listed first");
    let in_first = newest_first(made.iter().filter(|d| d.stage == s.open[0]).collect());
    let in_second = newest_first(made.iter().filter(|d| d.stage == s.open[1]).collect());
    assert_eq!(in_second.len(), 2);

    let context = ctx();
    for limit in [1, 3, 1000] {
        let got = collect_pages!(limit, async |page| {
            with_tx!(store, t, async |tx| {
                ok(tx.list_deals_for_contact(x.id, &page).await, "deals of x")
            })
            .await
        })
        .await;
        assert_eq!(
            got.iter().map(|d| d.id).collect::<Vec<_>>(),
            of_x,
            "deals of a contact, limit {limit}"
        );
        for (stage_key, want) in [(&s.open[0], &in_first), (&s.open[1], &in_second)] {
            let got = collect_pages!(limit, async |page| {
                let mut tx = ok(store.begin(t, context.clone()).await, "begin");
                let out = ok(
                    tx.list_deals_in_stage(s.pipeline.key(), stage_key, &page)
                        .await,
                    "deals in stage",
                );
                ok(tx.commit().await, "commit");
                out
            })
            .await;
            assert_eq!(
                &got.iter().map(|d| d.id).collect::<Vec<_>>(),
                want,
                "deals in {stage_key}, limit {limit}"
            );
        }
    }
    let won_list = with_tx!(store, t, async |tx| {
        ok(
            tx.list_deals_in_stage(s.pipeline.key(), &s.won, &PageRequest::first(10))
                .await,
            "won",
        )
    })
    .await;
    assert!(won_list.items.is_empty(), "an empty stage lists nothing");
}

/// Deleting a deal unlinks its activities (they stay, with no deal) and
/// returns `true`, then `false`.
pub async fn deleting_a_deal_unlinks_its_activities(store: &DynStore) {
    let t = TenantId::new();
    let c = create(store, t, new_contact("unlink@example.com", "Un", "Link")).await;
    let (d, other, linked, unlinked, other_linked) = with_tx!(store, t, async |tx| {
        let d = ok(
            tx.create_deal(new_deal(c.id, "Doomed", "1", "EUR")).await,
            "deal",
        );
        let other = ok(
            tx.create_deal(new_deal(c.id, "Other", "1", "EUR")).await,
            "deal",
        );
        let linked = ok(
            tx.log_activity(
                NewActivity::new(c.id, ActivityKind::Meeting)
                    .deal(d.id)
                    .subject(Subject::parse("Kick-off").expect("subject"))
                    .direction(Direction::Outbound),
            )
            .await,
            "activity",
        );
        let unlinked = ok(
            tx.log_activity(NewActivity::new(c.id, ActivityKind::Note))
                .await,
            "activity",
        );
        let other_linked = ok(
            tx.log_activity(NewActivity::new(c.id, ActivityKind::Call).deal(other.id))
                .await,
            "activity",
        );
        (d, other, linked, unlinked, other_linked)
    })
    .await;
    let deleted = with_tx!(store, t, async |tx| ok(
        tx.delete_deal(d.id).await,
        "delete"
    ))
    .await;
    assert!(deleted, "deleting an existing deal returns true");
    assert!(get_deal(store, t, d.id).await.is_none(), "the deal is gone");
    assert!(
        get_deal(store, t, other.id).await.is_some(),
        "the other deal stays"
    );
    let timeline = timeline_all(store, t, c.id).await;
    let find = |id| {
        timeline
            .iter()
            .find(|a| a.id == id)
            .cloned()
            .unwrap_or_else(|| panic!("activity {id} stays on the timeline"))
    };
    let mut expected = linked.clone();
    expected.deal_id = None;
    assert_same(
        &find(linked.id),
        &expected,
        "the deal's activity is unlinked, otherwise unchanged",
    );
    assert_same(
        &find(unlinked.id),
        &unlinked,
        "an unlinked activity is unchanged",
    );
    assert_same(
        &find(other_linked.id),
        &other_linked,
        "another deal's activity keeps its link",
    );
    assert_eq!(timeline.len(), 3);
    let again = with_tx!(store, t, async |tx| ok(
        tx.delete_deal(d.id).await,
        "delete again"
    ))
    .await;
    assert!(!again, "deleting a missing deal returns false");
}
