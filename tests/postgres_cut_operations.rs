#![cfg(all(feature = "postgres", feature = "conformance"))]
//! Operations of several round trips cut off on PostgreSQL: the caller's
//! future dropped (a timeout, a cancelled task) while a statement of the
//! operation waits for another transaction's lock. Part of the operation
//! may have run by then and the rest never will, so the transaction must
//! not commit it: the next operation of several round trips is refused,
//! `commit` rolls back and says why (retryable), and what was stored
//! before stays as it was. Committed, the transaction kept half a batch of contacts, or a
//! merge that had moved the loser's records but neither deleted the loser
//! nor journalled the merge.

mod support;

use chrono::Utc;
use crm_core::{
    Actor, Context, Error, PageRequest, Store, StoreExt, TenantId,
    bulk::ConflictPolicy,
    domain::{
        ActivityKind, Currency, DealPatch, DealTitle, Email, Money, NewActivity, NewContact,
        NewDeal, OriginalTimes, PersonName,
    },
};
use support::{TestStore, until_backends_wait_for_locks};

fn ctx() -> Context {
    Context::new(Actor::parse("user:cut-operations").unwrap())
}

fn contact(email: &str) -> NewContact {
    NewContact::new(
        Email::parse(email).unwrap(),
        PersonName::parse("Ada").unwrap(),
        PersonName::parse("Lovelace").unwrap(),
    )
}

/// The refusal a cut operation leaves behind.
fn assert_cut(what: &str, r: Result<(), Error>) {
    match r {
        Err(e) => {
            assert!(e.is_retryable(), "{what}: {e:?}");
            assert!(e.to_string().contains("cut off"), "{what}: {e}");
        }
        Ok(()) => panic!("{what} was accepted after an operation was cut off"),
    }
}

/// A batch upsert of two rows, `a@` with original times (its own insert,
/// which waits for another transaction creating `a@`) and `b@` (the merge
/// statement, never sent), cut while the first waits. The other
/// transaction then gives up, and the caller commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_batch_upsert_is_never_committed_half_done() {
    let owner = TestStore::new().await;
    let tenant = TenantId::new();
    let old = Utc::now() - chrono::Duration::days(400);
    let times = OriginalTimes::new(old, old).unwrap();
    let other = owner.db().store();
    let mut blocker = other.begin(tenant, ctx()).await.unwrap();
    blocker
        .create_contact(contact("a@cut.example"))
        .await
        .unwrap();
    let rows = vec![
        contact("a@cut.example").original_times(times),
        contact("b@cut.example"),
    ];
    let mut tx = owner.begin(tenant, ctx()).await.unwrap();
    tokio::select! {
        r = tx.upsert_contacts(&rows, ConflictPolicy::Incoming) => {
            panic!("the upsert did not wait for the other transaction: {r:?}")
        }
        () = until_backends_wait_for_locks(owner.db(), 1) => {}
    }
    blocker.rollback().await.unwrap();
    // The cut statement's answer has come by now (the lock it waited for
    // is gone), and it inserted `a@`.
    let again = [contact("c@cut.example")];
    let refused = tx.upsert_contacts(&again, ConflictPolicy::Incoming).await;
    assert_cut("a batch after the cut", refused.map(drop));
    assert_cut("the commit", tx.commit().await);
    let crm = owner.scope(tenant, &ctx());
    for email in ["a@cut.example", "b@cut.example", "c@cut.example"] {
        let stored = crm
            .get_contact_by_email(&Email::parse(email).unwrap())
            .await
            .unwrap();
        assert!(stored.is_none(), "{email} was committed: {stored:?}");
    }
}

/// A contact merge cut while it waits for the lock of one of the loser's
/// deals, which another transaction holds: the loser keeps its activity
/// and its deal, and no merge is journalled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_merge_is_never_committed_half_done() {
    let owner = TestStore::new().await;
    let tenant = TenantId::new();
    let crm = owner.scope(tenant, &ctx());
    let survivor = crm.create_contact(contact("s@cut.example")).await.unwrap();
    let loser = crm.create_contact(contact("l@cut.example")).await.unwrap();
    crm.log_activity(NewActivity::new(loser.id, ActivityKind::Meeting))
        .await
        .unwrap();
    let deal = crm
        .create_deal(NewDeal::new(
            loser.id,
            DealTitle::parse("Held").unwrap(),
            Money::parse("10", Currency::parse("EUR").unwrap()).unwrap(),
        ))
        .await
        .unwrap();
    // Another transaction holds the deal (an update in progress).
    let mut holder = owner.begin(tenant, ctx()).await.unwrap();
    holder
        .update_deal(
            deal.id,
            deal.version,
            DealPatch {
                title: Some(DealTitle::parse("Held still").unwrap()),
                ..DealPatch::default()
            },
        )
        .await
        .unwrap();
    let mut tx = owner.begin(tenant, ctx()).await.unwrap();
    tokio::select! {
        r = tx.merge_contacts(survivor.id, loser.id, ConflictPolicy::NonEmptyIncoming) => {
            panic!("the merge did not wait for the deal: {r:?}")
        }
        () = until_backends_wait_for_locks(owner.db(), 1) => {}
    }
    holder.rollback().await.unwrap();
    assert_cut("the commit", tx.commit().await);
    assert!(crm.get_contact(loser.id).await.unwrap().is_some());
    let on_loser = crm
        .timeline(loser.id, &PageRequest::first(10))
        .await
        .unwrap()
        .items;
    assert_eq!(on_loser.len(), 1, "the loser keeps its activity");
    let on_survivor = crm
        .timeline(survivor.id, &PageRequest::first(10))
        .await
        .unwrap()
        .items;
    assert!(on_survivor.is_empty(), "{on_survivor:?}");
    assert_eq!(
        crm.get_deal(deal.id).await.unwrap().unwrap().contact_id,
        loser.id
    );
    let mut read = owner.begin(tenant, ctx()).await.unwrap();
    assert!(read.contact_merges(survivor.id).await.unwrap().is_empty());
    read.rollback().await.unwrap();
}

/// A cut operation leaves the transaction to a rollback, which ends it
/// (`Ok`), and the store serves the next transaction as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_with_a_cut_operation_rolls_back() {
    let owner = TestStore::new().await;
    let tenant = TenantId::new();
    let crm = owner.scope(tenant, &ctx());
    let ada = crm
        .create_contact(contact("ada@cut.example"))
        .await
        .unwrap();
    // Another transaction deletes the contact, not yet committed: a batch
    // of activities waits for its lock.
    let mut deleting = owner.begin(tenant, ctx()).await.unwrap();
    assert!(deleting.delete_contact(ada.id).await.unwrap());
    let mut tx = owner.begin(tenant, ctx()).await.unwrap();
    let batch = [NewActivity::new(ada.id, ActivityKind::Call)];
    tokio::select! {
        r = tx.log_activities(&batch) => panic!("the batch did not wait: {r:?}"),
        () = until_backends_wait_for_locks(owner.db(), 1) => {}
    }
    deleting.rollback().await.unwrap();
    assert_cut("a second batch", tx.log_activities(&batch).await.map(drop));
    tx.rollback().await.unwrap();
    crm.log_activities(&batch).await.unwrap();
    let timeline = crm
        .timeline(ada.id, &PageRequest::first(10))
        .await
        .unwrap()
        .items;
    assert_eq!(timeline.len(), 1, "{timeline:?}");
}
