//! The conformance suite's atomicity points: a rolled back or dropped
//! transaction leaves no trace, a failed operation writes nothing and the
//! transaction goes on, and uncommitted writes are seen by their own
//! transaction only.

use futures_util::future::join;

use super::prelude::*;
use super::support::{
    all, assert_same, begin, create, ctx, default_stages, email, expect_conflict, expect_duplicate,
    expect_invalid_transition, expect_not_found, expect_validation, full_contact, get, get_deal,
    lost_reason, money, new_contact, new_deal, ok, person, score, search, search_ids, snapshot,
    tick, timeline_all,
};

/// A rolled-back transaction leaves none of the records it created.
pub async fn rollback_leaves_no_trace_of_new_records(store: &DynStore) {
    let t = TenantId::new();
    let mut tx = begin(store, t).await;
    let c = ok(
        tx.create_contact(new_contact("ghost@example.com", "Gho", "St"))
            .await,
        "create",
    );
    let d = ok(
        tx.create_deal(new_deal(c.id, "Ghost", "5", "EUR")).await,
        "deal",
    );
    ok(
        tx.log_activity(NewActivity::new(c.id, ActivityKind::Email).deal(d.id))
            .await,
        "activity",
    );
    ok(
        tx.record_signal(NewSignal::new(c.id, SignalKind::EMAIL_OPEN))
            .await,
        "signal",
    );
    ok(tx.rollback().await, "rollback");

    let empty = snapshot(store, t, &[c.id], &[d.id]).await;
    let fresh = snapshot(store, TenantId::new(), &[c.id], &[d.id]).await;
    assert_eq!(empty, fresh, "after a rollback the tenant looks untouched");
    assert!(get(store, t, c.id).await.is_none(), "the contact is gone");
    let again = create(store, t, new_contact("ghost@example.com", "Gho", "St")).await;
    assert_ne!(again.id, c.id, "the rolled-back email is free");
}

async fn busy_tenant(
    store: &DynStore,
    t: TenantId,
) -> (Vec<ContactId>, Vec<DealId>, Contact, Deal) {
    let stages = default_stages(store);
    with_tx!(store, t, async |tx| {
        let a = ok(
            tx.create_contact(full_contact("busy@example.com")).await,
            "a",
        );
        let b = ok(
            tx.create_contact(new_contact("bystander@example.com", "By", "Stander"))
                .await,
            "b",
        );
        let d = ok(
            tx.create_deal(new_deal(a.id, "Busy", "300", "EUR")).await,
            "deal",
        );
        let lost = ok(
            tx.create_deal(new_deal(b.id, "Lost", "30", "USD")).await,
            "deal",
        );
        ok(
            tx.move_deal(
                lost.id,
                lost.version,
                &stages.lost,
                Some(lost_reason("price")),
            )
            .await,
            "lose",
        );
        ok(
            tx.log_activity(NewActivity::new(a.id, ActivityKind::Call).deal(d.id))
                .await,
            "activity",
        );
        ok(
            tx.log_activity(NewActivity::new(b.id, ActivityKind::Note))
                .await,
            "activity",
        );
        ok(
            tx.record_signal(NewSignal::new(a.id, SignalKind::PRICING_PAGE_VIEW))
                .await,
            "signal",
        );
        ok(
            tx.write_scores(&[
                ContactScore::new(a.id, score(40)),
                ContactScore::new(b.id, score(10)),
            ])
            .await,
            "scores",
        );
        let a = ok(tx.get_contact(a.id).await, "get").expect("a");
        (vec![a.id, b.id], vec![d.id, lost.id], a, d)
    })
    .await
}

/// Changes the busy tenant with every kind of write; returns the id of the
/// contact it creates.
async fn change_everything(
    tx: &mut dyn Transaction,
    store: &DynStore,
    a: &Contact,
    d: &Deal,
    b: ContactId,
) -> ContactId {
    let stages = default_stages(store);
    let a2 = ok(
        tx.update_contact(
            a.id,
            a.version,
            ContactPatch {
                email: Some(email("renamed@example.com")),
                last_name: Some(person("Renamed")),
                ..ContactPatch::default()
            },
        )
        .await,
        "update",
    );
    ok(tx.deactivate_contact(a2.id).await, "deactivate");
    ok(
        tx.write_scores(&[ContactScore::new(a.id, score(90))]).await,
        "score",
    );
    let d2 = ok(
        tx.update_deal(
            d.id,
            d.version,
            DealPatch {
                amount: Some(money("999.99", "USD")),
                ..DealPatch::default()
            },
        )
        .await,
        "update deal",
    );
    ok(
        tx.move_deal(d2.id, d2.version, &stages.open[1], None).await,
        "move",
    );
    ok(tx.delete_deal(d.id).await, "delete deal");
    ok(
        tx.log_activity(NewActivity::new(a.id, ActivityKind::Task))
            .await,
        "activity",
    );
    ok(
        tx.record_signal(NewSignal::new(a.id, SignalKind::FORM_SUBMIT))
            .await,
        "signal",
    );
    assert!(
        ok(tx.delete_contact(b).await, "delete contact"),
        "b is deleted"
    );
    let c = ok(
        tx.create_contact(new_contact("newcomer@example.com", "New", "Comer"))
            .await,
        "create",
    );
    ok(
        tx.create_deal(new_deal(c.id, "Newcomer", "1", "EUR")).await,
        "deal",
    );
    c.id
}

/// `rollback` undoes updates, deactivations, score writes, deal moves,
/// deletes (with their cascades) and creations, indexes included.
pub async fn rollback_restores_changed_and_deleted_records(store: &DynStore) {
    let t = TenantId::new();
    let (contacts, deals, a, d) = busy_tenant(store, t).await;
    let before = snapshot(store, t, &contacts, &deals).await;
    let mut tx = begin(store, t).await;
    let newcomer = change_everything(&mut *tx, store, &a, &d, contacts[1]).await;
    ok(tx.rollback().await, "rollback");
    assert_eq!(
        snapshot(store, t, &contacts, &deals).await,
        before,
        "after a rollback every record and list is as before"
    );
    assert!(
        get(store, t, newcomer).await.is_none(),
        "the contact created in the rolled-back transaction does not exist"
    );
    let renamed = ok(
        store
            .scope(t, &ctx())
            .get_contact_by_email(&email("renamed@example.com"))
            .await,
        "get by email",
    );
    assert!(
        renamed.is_none(),
        "the rolled-back email change left no trace"
    );
}

/// Dropping a transaction without committing discards everything it did:
/// new records and changes to existing ones.
pub async fn dropping_a_transaction_without_commit_leaves_no_trace(store: &DynStore) {
    let t = TenantId::new();
    let crm = store.scope(t, &ctx());
    {
        let mut tx = begin(store, t).await;
        let c = ok(
            tx.create_contact(new_contact("dropped@example.com", "Dro", "Pped"))
                .await,
            "create",
        );
        ok(
            tx.update_contact(
                c.id,
                c.version,
                ContactPatch {
                    first_name: Some(person("Updated")),
                    ..ContactPatch::default()
                },
            )
            .await,
            "update",
        );
        let d = ok(
            tx.create_deal(new_deal(c.id, "Dropped", "5", "EUR")).await,
            "deal",
        );
        ok(
            tx.log_activity(NewActivity::new(c.id, ActivityKind::Email).deal(d.id))
                .await,
            "activity",
        );
        drop(tx);
    }
    let found = search(store, t, &all(ContactSort::CreatedAsc)).await;
    assert!(
        found.items.is_empty(),
        "a dropped transaction created nothing"
    );
    let by_email = ok(
        crm.get_contact_by_email(&email("dropped@example.com"))
            .await,
        "get by email",
    );
    assert!(by_email.is_none(), "a dropped transaction created nothing");
    let summary = ok(
        crm.pipeline_summary(&PipelineKey::default_pipeline()).await,
        "summary",
    );
    assert!(
        summary.stages.iter().all(|s| s.totals.is_empty()),
        "a dropped transaction created no deal"
    );

    let (contacts, deals, a, d) = busy_tenant(store, t).await;
    let before = snapshot(store, t, &contacts, &deals).await;
    {
        let mut tx = begin(store, t).await;
        change_everything(&mut *tx, store, &a, &d, contacts[1]).await;
        drop(tx);
    }
    assert_eq!(
        snapshot(store, t, &contacts, &deals).await,
        before,
        "a dropped transaction changed nothing"
    );
}

/// An operation that fails writes nothing, and the transaction can go on
/// and commit its other writes.
pub async fn a_failed_operation_writes_nothing_and_the_transaction_goes_on(store: &DynStore) {
    let t = TenantId::new();
    let stages = default_stages(store);
    let (a, b, d) = with_tx!(store, t, async |tx| {
        let a = ok(
            tx.create_contact(new_contact("first@example.com", "Fir", "St"))
                .await,
            "create a",
        );
        expect_duplicate(
            tx.create_contact(new_contact("FIRST@example.com", "Du", "Plicate"))
                .await,
            a.id,
            "duplicate in the same transaction",
        );
        let b = ok(
            tx.create_contact(new_contact("second@example.com", "Sec", "Ond"))
                .await,
            "create b after a failure",
        );
        expect_conflict(
            tx.update_contact(
                b.id,
                Version::new(5),
                ContactPatch {
                    first_name: Some(person("Stale")),
                    ..ContactPatch::default()
                },
            )
            .await,
            Entity::Contact,
            b.id,
            5,
            1,
            "stale update",
        );
        expect_duplicate(
            tx.update_contact(
                b.id,
                b.version,
                ContactPatch {
                    email: Some(email("First@Example.com")),
                    first_name: Some(person("Taken")),
                    ..ContactPatch::default()
                },
            )
            .await,
            a.id,
            "taking a's email",
        );
        let d = ok(
            tx.create_deal(new_deal(a.id, "Deal", "10", "EUR")).await,
            "deal",
        );
        expect_invalid_transition(
            tx.move_deal(d.id, d.version, &stages.lost, None).await,
            &stages.open[0],
            &stages.lost,
            "losing without a reason",
        );
        expect_invalid_transition(
            tx.move_deal(d.id, d.version, &d.stage, None).await,
            &d.stage,
            &d.stage,
            "staying in the stage",
        );
        expect_validation(
            tx.create_deal(NewDeal {
                pipeline: PipelineKey::parse("no_such_pipeline").expect("key"),
                ..new_deal(a.id, "Nowhere", "1", "EUR")
            })
            .await,
            "pipeline",
            "unknown pipeline",
        );
        let ghost = ContactId::new();
        expect_not_found(
            tx.log_activity(NewActivity::new(ghost, ActivityKind::Note))
                .await,
            Entity::Contact,
            ghost,
            "activity on a missing contact",
        );
        let seen_b = ok(tx.get_contact(b.id).await, "get b").expect("b");
        assert_same(
            &seen_b,
            &b,
            "failed updates left b as it was, inside the transaction",
        );
        let seen_d = ok(tx.get_deal(d.id).await, "get d").expect("d");
        assert_same(&seen_d, &d, "failed moves left the deal as it was");
        let b2 = ok(
            tx.update_contact(
                b.id,
                b.version,
                ContactPatch {
                    first_name: Some(person("Fine")),
                    ..ContactPatch::default()
                },
            )
            .await,
            "a good update after failures",
        );
        assert_eq!(b2.version, Version::new(2));
        (a, b2, d)
    })
    .await;

    assert_same(
        &get(store, t, a.id).await.expect("a"),
        &a,
        "a was committed",
    );
    assert_same(
        &get(store, t, b.id).await.expect("b"),
        &b,
        "b's good update was committed",
    );
    assert_same(
        &get_deal(store, t, d.id).await.expect("d"),
        &d,
        "the deal was committed unmoved",
    );
    let everyone = search_ids(store, t, &all(ContactSort::CreatedAsc)).await;
    assert_eq!(
        everyone,
        vec![a.id, b.id],
        "the failed create wrote nothing"
    );
    let timeline = timeline_all(store, t, a.id).await;
    assert!(timeline.is_empty(), "no activity was written");
    let summary = ok(
        store
            .scope(t, &ctx())
            .pipeline_summary(stages.pipeline.key())
            .await,
        "summary",
    );
    let counted: u64 = summary
        .stages
        .iter()
        .flat_map(|s| &s.totals)
        .map(|x| x.count)
        .sum();
    assert_eq!(counted, 1, "only the one good deal exists");
}

/// A transaction reads its own writes before it commits: gets, searches,
/// lists and deletes all see them.
pub async fn a_transaction_sees_its_own_writes_before_commit(store: &DynStore) {
    let t = TenantId::new();
    let stages = default_stages(store);
    let mut tx = begin(store, t).await;
    assert_eq!(tx.tenant(), t, "a transaction reports its tenant");
    assert_eq!(tx.context(), &ctx(), "a transaction reports its context");
    let c = ok(
        tx.create_contact(new_contact("mine@example.com", "Mi", "Ne"))
            .await,
        "create",
    );
    assert_same(
        &ok(tx.get_contact(c.id).await, "get").expect("own contact"),
        &c,
        "get sees the own new contact",
    );
    assert_same(
        &ok(
            tx.get_contact_by_email(&email("MINE@example.com")).await,
            "get by email",
        )
        .expect("own contact by email"),
        &c,
        "get by email sees the own new contact",
    );
    let found = ok(
        tx.search_contacts(&all(ContactSort::CreatedDesc)).await,
        "search",
    );
    assert_eq!(found.items.len(), 1, "search sees the own new contact");
    let c2 = ok(
        tx.update_contact(
            c.id,
            c.version,
            ContactPatch {
                first_name: Some(person("Changed")),
                ..ContactPatch::default()
            },
        )
        .await,
        "update own new contact",
    );
    assert_eq!(c2.version, Version::new(2));
    ok(
        tx.write_scores(&[ContactScore::new(c.id, score(77))]).await,
        "score",
    );
    let top = ok(
        tx.search_contacts(&ContactQuery {
            min_score: Some(score(77)),
            ..all(ContactSort::ScoreDesc)
        })
        .await,
        "search by score",
    );
    assert_eq!(top.items.len(), 1, "search sees the own score write");
    let d = ok(
        tx.create_deal(new_deal(c.id, "Mine", "5", "EUR")).await,
        "deal",
    );
    let listed = ok(
        tx.list_deals_in_stage(
            stages.pipeline.key(),
            &stages.open[0],
            &PageRequest::first(10),
        )
        .await,
        "deals in stage",
    );
    assert_eq!(listed.items.len(), 1, "the own deal is listed in its stage");
    let a = ok(
        tx.log_activity(NewActivity::new(c.id, ActivityKind::Note).deal(d.id))
            .await,
        "activity",
    );
    let timeline = ok(tx.timeline(c.id, &PageRequest::first(10)).await, "timeline");
    assert_eq!(
        timeline.items.iter().map(|x| x.id).collect::<Vec<_>>(),
        vec![a.id],
        "the timeline shows the own activity"
    );
    ok(
        tx.record_signal(NewSignal::new(c.id, SignalKind::PAGE_VIEW))
            .await,
        "signal",
    );
    assert_eq!(ok(tx.list_signals(c.id).await, "signals").len(), 1);
    let summary = ok(tx.pipeline_summary(stages.pipeline.key()).await, "summary");
    assert_eq!(
        summary.stages[0].totals.len(),
        1,
        "the summary counts the own deal"
    );
    assert!(
        ok(tx.delete_contact(c.id).await, "delete"),
        "the own contact can be deleted"
    );
    assert!(
        ok(tx.get_contact(c.id).await, "get").is_none(),
        "the own delete is seen"
    );
    assert!(
        ok(tx.get_deal(d.id).await, "get deal").is_none(),
        "the own cascade is seen"
    );
    ok(tx.commit().await, "commit");
    assert!(get(store, t, c.id).await.is_none());
}

/// What a transaction wrote is not visible to another transaction before
/// it commits (and, after a rollback, never).
pub async fn uncommitted_writes_are_invisible_to_other_transactions(store: &DynStore) {
    let t = TenantId::new();
    let (written_tx, written_rx) = tokio::sync::oneshot::channel::<()>();
    let writer = async {
        let mut tx = begin(store, t).await;
        ok(
            tx.create_contact(new_contact("pending@example.com", "Pen", "Ding"))
                .await,
            "create",
        );
        let _ = written_tx.send(());
        // Give the reader a chance to look while the transaction is open
        // (a backend that serializes transactions makes it wait instead).
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        tick().await;
        ok(tx.rollback().await, "rollback");
    };
    let reader = async {
        let _ = written_rx.await;
        ok(
            store
                .scope(t, &ctx())
                .get_contact_by_email(&email("pending@example.com"))
                .await,
            "get by email",
        )
    };
    let ((), seen) = join(writer, reader).await;
    assert!(
        seen.is_none(),
        "another transaction never saw the uncommitted contact"
    );
}
