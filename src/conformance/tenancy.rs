//! The conformance suite's tenancy points: another tenant neither sees
//! nor changes a tenant's records, and may hold the same email.

use super::prelude::*;
use super::support::{
    all, assert_same, begin, create, ctx, default_stages, email, expect_not_found, full_contact,
    new_contact, new_deal, ok, person, score, snapshot,
};

/// Another tenant using a tenant's ids and emails in every operation finds
/// nothing, changes nothing and gets `NotFound`, `None`, empty lists or
/// `false`; the first tenant's records are unchanged afterwards.
pub async fn another_tenant_cannot_see_or_change_a_tenants_records(store: &DynStore) {
    let a = TenantId::new();
    let b = TenantId::new();
    let stages = default_stages(store);
    let ca = create(store, a, full_contact("owner@example.com")).await;
    let (open_deal, won_deal) = with_tx!(store, a, async |tx| {
        let d1 = ok(
            tx.create_deal(new_deal(ca.id, "Open deal", "100", "EUR"))
                .await,
            "deal",
        );
        let d2 = ok(
            tx.create_deal(new_deal(ca.id, "Won deal", "200", "USD"))
                .await,
            "deal",
        );
        let d2 = ok(
            tx.move_deal(d2.id, d2.version, &stages.won, None).await,
            "win",
        );
        ok(
            tx.log_activity(NewActivity::new(ca.id, ActivityKind::Meeting).deal(d1.id))
                .await,
            "activity",
        );
        ok(
            tx.record_signal(NewSignal::new(ca.id, SignalKind::DEMO_REQUEST))
                .await,
            "signal",
        );
        ok(
            tx.write_scores(&[ContactScore::new(ca.id, score(55))])
                .await,
            "score",
        );
        (d1, d2)
    })
    .await;
    let before = snapshot(store, a, &[ca.id], &[open_deal.id, won_deal.id]).await;

    let cb = create(store, b, new_contact("someone@example.com", "Some", "One")).await;
    let first = PageRequest::first(MAX_PAGE_SIZE);
    with_tx!(store, b, async |tx| {
        assert!(
            ok(tx.get_contact(ca.id).await, "get").is_none(),
            "get_contact of another tenant's id is None"
        );
        assert!(
            ok(tx.get_contact_by_email(&ca.email).await, "get by email").is_none(),
            "get_contact_by_email of another tenant's email is None"
        );
        expect_not_found(
            tx.update_contact(
                ca.id,
                ca.version,
                ContactPatch {
                    first_name: Some(person("Hijacked")),
                    ..ContactPatch::default()
                },
            )
            .await,
            Entity::Contact,
            ca.id,
            "update another tenant's contact",
        );
        expect_not_found(
            tx.deactivate_contact(ca.id).await,
            Entity::Contact,
            ca.id,
            "deactivate another tenant's contact",
        );
        assert!(
            !ok(tx.delete_contact(ca.id).await, "delete"),
            "deleting another tenant's contact returns false"
        );
        let found = ok(
            tx.search_contacts(&all(ContactSort::CreatedAsc)).await,
            "search",
        );
        assert_eq!(
            found.items.iter().map(|c| c.id).collect::<Vec<_>>(),
            vec![cb.id],
            "search sees only the tenant's own contacts"
        );
        let q = ContactQuery {
            email_prefix: Some("owner".into()),
            ..all(ContactSort::ScoreDesc)
        };
        assert!(
            ok(tx.search_contacts(&q).await, "search").items.is_empty(),
            "search by another tenant's email prefix finds nothing"
        );
        expect_not_found(
            tx.create_deal(new_deal(ca.id, "Sneaky", "1", "EUR")).await,
            Entity::Contact,
            ca.id,
            "create a deal on another tenant's contact",
        );
        assert!(
            ok(tx.get_deal(open_deal.id).await, "get deal").is_none(),
            "get_deal of another tenant's deal is None"
        );
        expect_not_found(
            tx.update_deal(
                open_deal.id,
                open_deal.version,
                DealPatch {
                    title: Some(DealTitle::parse("Hijacked").expect("title")),
                    ..DealPatch::default()
                },
            )
            .await,
            Entity::Deal,
            open_deal.id,
            "update another tenant's deal",
        );
        expect_not_found(
            tx.move_deal(open_deal.id, open_deal.version, &stages.open[1], None)
                .await,
            Entity::Deal,
            open_deal.id,
            "move another tenant's deal",
        );
        expect_not_found(
            tx.reopen_deal(won_deal.id, won_deal.version, &stages.open[0])
                .await,
            Entity::Deal,
            won_deal.id,
            "reopen another tenant's deal",
        );
        assert!(
            !ok(tx.delete_deal(open_deal.id).await, "delete deal"),
            "deleting another tenant's deal returns false"
        );
        assert!(
            ok(tx.list_deals_for_contact(ca.id, &first).await, "deals")
                .items
                .is_empty(),
            "another tenant's contact has no deals here"
        );
        for s in stages.pipeline.stages() {
            let page = ok(
                tx.list_deals_in_stage(stages.pipeline.key(), &s.key, &first)
                    .await,
                "deals in stage",
            );
            assert!(
                page.items.is_empty(),
                "stage {} lists none of another tenant's deals",
                s.key
            );
        }
        let summary = ok(
            tx.pipeline_summary(stages.pipeline.key()).await,
            "pipeline summary",
        );
        assert!(
            summary.stages.iter().all(|s| s.totals.is_empty()),
            "the pipeline summary counts none of another tenant's deals: {summary:?}"
        );
        expect_not_found(
            tx.log_activity(NewActivity::new(ca.id, ActivityKind::Note))
                .await,
            Entity::Contact,
            ca.id,
            "log an activity on another tenant's contact",
        );
        expect_not_found(
            tx.log_activity(NewActivity::new(cb.id, ActivityKind::Note).deal(open_deal.id))
                .await,
            Entity::Deal,
            open_deal.id,
            "link an activity to another tenant's deal",
        );
        assert!(
            ok(tx.timeline(ca.id, &first).await, "timeline")
                .items
                .is_empty(),
            "another tenant's timeline is empty here"
        );
        expect_not_found(
            tx.record_signal(NewSignal::new(ca.id, SignalKind::PAGE_VIEW))
                .await,
            Entity::Contact,
            ca.id,
            "record a signal for another tenant's contact",
        );
        assert!(
            ok(tx.list_signals(ca.id).await, "signals").is_empty(),
            "another tenant's signals are not listed"
        );
        assert_eq!(
            ok(
                tx.write_scores(&[ContactScore::new(ca.id, score(99))])
                    .await,
                "write scores"
            ),
            0,
            "scores of another tenant's contacts are not written"
        );
    })
    .await;

    let after = snapshot(store, a, &[ca.id], &[open_deal.id, won_deal.id]).await;
    assert_eq!(after, before, "the first tenant's records are unchanged");
}

/// Emails are unique per tenant: another tenant may create a contact with
/// the same email, and each tenant finds its own.
pub async fn another_tenant_may_hold_the_same_email(store: &DynStore) {
    let a = TenantId::new();
    let b = TenantId::new();
    let ca = create(store, a, new_contact("shared@example.com", "In", "A")).await;
    let cb = create(store, b, new_contact("Shared@Example.com", "In", "B")).await;
    assert_ne!(ca.id, cb.id);
    assert_eq!(cb.tenant_id, b);
    for (t, c) in [(a, &ca), (b, &cb)] {
        let found = ok(
            store
                .scope(t, &ctx())
                .get_contact_by_email(&email("SHARED@example.com"))
                .await,
            "get by email",
        )
        .expect("each tenant finds its own contact");
        assert_same(&found, c, "the tenant's own contact");
    }
}
