#![cfg(all(feature = "postgres", feature = "conformance"))]
//! Deleting a deal while other transactions attach activities to it, on
//! PostgreSQL and on a Citus cluster: the foreign key from activities to
//! deals has no `ON DELETE` action, so `delete_deal` must unlink every
//! activity that refers to the deal, including one committed while the
//! delete waited for it.

mod support;

use crm_core::{
    Actor, Context, Error, Store, StoreExt, TenantId,
    domain::{
        ActivityKind, ContactId, Currency, DealTitle, Email, Money, NewActivity, NewContact,
        NewDeal, PersonName,
    },
};
use support::{Target, TestStore};

fn ctx() -> Context {
    Context::new(Actor::parse("user:deal-race").unwrap())
}

fn new_contact(email: &str) -> NewContact {
    NewContact::new(
        Email::parse(email).unwrap(),
        PersonName::parse("Ada").unwrap(),
        PersonName::parse("Lovelace").unwrap(),
    )
}

fn new_deal(contact: ContactId) -> NewDeal {
    NewDeal::new(
        contact,
        DealTitle::parse("Renewal").unwrap(),
        Money::parse("100", Currency::parse("EUR").unwrap()).unwrap(),
    )
}

/// T1 logs an activity on the deal and holds; T2 deletes the deal, and
/// waits for T1's hold on it; T1 commits. T2 must then delete the deal and
/// unlink the activity T1 committed — as `ON DELETE SET NULL` did — not
/// fail on the foreign key.
async fn a_deal_deleted_while_an_activity_is_logged_on_it_is_deleted_and_the_activity_unlinked(
    target: Target,
) {
    let Some(owner) = TestStore::on(target).await else {
        return;
    };
    let (writer, deleter) = (owner.db().store(), owner.db().store());
    let tenant = TenantId::new();
    let crm = owner.scope(tenant, &ctx());
    let contact = crm
        .create_contact(new_contact("deal-race@example.com"))
        .await
        .unwrap();
    let deal = crm.create_deal(new_deal(contact.id)).await.unwrap();

    let mut t1 = writer.begin(tenant, ctx()).await.unwrap();
    let activity = t1
        .log_activity(NewActivity::new(contact.id, ActivityKind::Note).deal(deal.id))
        .await
        .unwrap();

    let delete = tokio::spawn(async move {
        let mut t2 = deleter.begin(tenant, ctx()).await?;
        let deleted = t2.delete_deal(deal.id).await?;
        t2.commit().await?;
        Ok::<_, Error>(deleted)
    });
    support::until_a_backend_waits_for_a_lock(owner.db()).await;
    t1.commit().await.expect("T1's activity is acknowledged");
    let deleted = delete.await.unwrap();
    assert!(
        matches!(deleted, Ok(true)),
        "the deal is deleted once T1 commits: {deleted:?}"
    );
    let timeline = crm.timeline(contact.id, &Default::default()).await.unwrap();
    let kept = timeline
        .items
        .iter()
        .find(|a| a.id == activity.id)
        .expect("the acknowledged activity is kept");
    assert_eq!(kept.deal_id, None, "and no longer names the deleted deal");
}

/// T1 merges the deal's contact away (moving the deal and its activity)
/// and holds; T2 deletes the deal and waits; T1 commits. T2 must delete
/// the deal under its new contact, unlinking the moved activity; or, with
/// T2 first, the merge must go on without the deleted deal.
async fn a_deal_deleted_while_its_contact_is_merged_away_is_deleted_either_way(target: Target) {
    let Some(owner) = TestStore::on(target).await else {
        return;
    };
    for delete_first in [false, true] {
        let (merger, deleter) = (owner.db().store(), owner.db().store());
        let tenant = TenantId::new();
        let crm = owner.scope(tenant, &ctx());
        let survivor = crm
            .create_contact(new_contact("keep@example.com"))
            .await
            .unwrap();
        let loser = crm
            .create_contact(new_contact("gone@example.com"))
            .await
            .unwrap();
        let deal = crm.create_deal(new_deal(loser.id)).await.unwrap();
        let activity = crm
            .log_activity(NewActivity::new(loser.id, ActivityKind::Note).deal(deal.id))
            .await
            .unwrap();

        let policy = crm_core::bulk::ConflictPolicy::NonEmptyIncoming;
        let (merged, deleted) = if delete_first {
            let mut t2 = deleter.begin(tenant, ctx()).await.unwrap();
            assert!(t2.delete_deal(deal.id).await.unwrap());
            let merge = tokio::spawn(async move {
                let mut t1 = merger.begin(tenant, ctx()).await?;
                let out = t1.merge_contacts(survivor.id, loser.id, policy).await?;
                t1.commit().await?;
                Ok::<_, Error>(out)
            });
            support::until_a_backend_waits_for_a_lock(owner.db()).await;
            t2.commit().await.unwrap();
            (merge.await.unwrap().map(drop), Ok(true))
        } else {
            let mut t1 = merger.begin(tenant, ctx()).await.unwrap();
            t1.merge_contacts(survivor.id, loser.id, policy)
                .await
                .unwrap();
            let delete = tokio::spawn(async move {
                let mut t2 = deleter.begin(tenant, ctx()).await?;
                let deleted = t2.delete_deal(deal.id).await?;
                t2.commit().await?;
                Ok::<_, Error>(deleted)
            });
            support::until_a_backend_waits_for_a_lock(owner.db()).await;
            t1.commit().await.unwrap();
            (Ok(()), delete.await.unwrap())
        };
        assert!(merged.is_ok(), "delete first: {delete_first}: {merged:?}");
        assert!(
            matches!(deleted, Ok(true)),
            "delete first: {delete_first}: {deleted:?}"
        );
        assert!(crm.get_deal(deal.id).await.unwrap().is_none());
        let timeline = crm
            .timeline(survivor.id, &Default::default())
            .await
            .unwrap();
        let moved = timeline
            .items
            .iter()
            .find(|a| a.id == activity.id)
            .expect("the activity moved to the survivor");
        assert_eq!(moved.deal_id, None);
    }
}

crate::on_every_target!(
    a_deal_deleted_while_an_activity_is_logged_on_it_is_deleted_and_the_activity_unlinked,
    a_deal_deleted_while_its_contact_is_merged_away_is_deleted_either_way,
);
