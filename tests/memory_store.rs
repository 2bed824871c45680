#![cfg(feature = "conformance")]
//! The conformance suite against `InMemoryStore`: with a fresh store per
//! test, through one store shared by every test, and all at once on one
//! store; plus what only the in-memory store's locking can get wrong.

use std::{
    sync::{Arc, LazyLock},
    time::Duration,
};

use crm_core::{
    Actor, Context, InMemoryStore, Store, TenantId, conformance,
    domain::{Email, NewContact, PersonName},
};

fn memory() -> InMemoryStore {
    InMemoryStore::with_pipelines(conformance::test_pipelines())
}

mod fresh_store_per_test {
    use super::*;

    crm_core::conformance_tests!(async { Arc::new(memory()) });
}

mod one_shared_store {
    use super::*;

    static SHARED: LazyLock<Arc<dyn Store>> = LazyLock::new(|| Arc::new(memory()));

    crm_core::conformance_tests!(async { Arc::clone(&SHARED) });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_suite_passes_at_once_on_one_store() {
    let store: Arc<dyn Store> = Arc::new(memory());
    assert!(
        conformance::SUITE.len() >= 50,
        "the suite lists its functions"
    );
    conformance::run_all(&*store).await;
}

#[tokio::test]
async fn the_suite_passes_on_a_store_with_only_the_default_pipeline() {
    let store = InMemoryStore::new();
    conformance::every_configured_pipeline_is_honoured(&store).await;
    conformance::pipeline_summary_sums_per_stage_and_currency_exactly(&store).await;
}

fn ctx() -> Context {
    Context::new(Actor::parse("test:memory").unwrap())
}

fn contact(email: &str) -> NewContact {
    NewContact::new(
        Email::parse(email).unwrap(),
        PersonName::parse("Wai").unwrap(),
        PersonName::parse("Ter").unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_dropped_while_another_task_waits_for_the_store_lets_the_waiter_proceed() {
    let store = Arc::new(memory());
    let t = TenantId::new();
    let mut tx = store.begin(t, ctx()).await.unwrap();
    tx.create_contact(contact("held@example.com"))
        .await
        .unwrap();

    let waiter = tokio::spawn({
        let store = Arc::clone(&store);
        async move {
            let mut tx = store.begin(t, ctx()).await?;
            let found = tx
                .get_contact_by_email(&Email::parse("held@example.com").unwrap())
                .await?;
            tx.create_contact(contact("after@example.com")).await?;
            tx.commit().await?;
            Ok::<_, crm_core::Error>(found)
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !waiter.is_finished(),
        "the waiter waits while the transaction holds the store"
    );

    drop(tx);
    let found = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter proceeds once the transaction is dropped")
        .unwrap()
        .unwrap();
    assert!(found.is_none(), "the dropped transaction was rolled back");

    let mut tx = store.begin(t, ctx()).await.unwrap();
    let after = tx
        .get_contact_by_email(&Email::parse("after@example.com").unwrap())
        .await
        .unwrap();
    assert!(after.is_some(), "the waiter's transaction committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_begin_given_up_while_waiting_leaves_the_store_usable() {
    let store = Arc::new(memory());
    let t = TenantId::new();
    let tx = store.begin(t, ctx()).await.unwrap();
    let gave_up = tokio::time::timeout(Duration::from_millis(20), store.begin(t, ctx())).await;
    assert!(
        gave_up.is_err(),
        "a second begin waits while a transaction is open"
    );
    tx.commit().await.unwrap();
    let again = tokio::time::timeout(Duration::from_secs(5), store.begin(t, ctx()))
        .await
        .expect("the store is free once the transaction ends");
    again.unwrap().rollback().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_does_not_link_by_domain_leaves_new_contacts_unlinked() {
    use crm_core::{
        bulk::ConflictPolicy,
        domain::{CompanyDomain, CompanyName, NewCompany},
    };
    let on = memory();
    let off = on.clone().with_company_linking(false);
    let t = TenantId::new();
    let mut tx = on.begin(t, ctx()).await.unwrap();
    let acme = tx
        .create_company(NewCompany {
            domain: Some(CompanyDomain::parse("acme.example").unwrap()),
            ..NewCompany::new(CompanyName::parse("Acme").unwrap())
        })
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let mut tx = off.begin(t, ctx()).await.unwrap();
    let created = tx.create_contact(contact("a@acme.example")).await.unwrap();
    let imported = tx
        .upsert_contacts(
            &[contact("b@acme.example")],
            ConflictPolicy::NonEmptyIncoming,
        )
        .await
        .unwrap();
    let imported = tx.get_contact(imported[0].id()).await.unwrap().unwrap();
    tx.commit().await.unwrap();
    assert_eq!((created.company_id, imported.company_id), (None, None));

    let mut tx = on.begin(t, ctx()).await.unwrap();
    let linked = tx.create_contact(contact("c@acme.example")).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(linked.company_id, Some(acme.id), "the other store links");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn score_write_backs_are_events_when_the_store_announces_them() {
    let store: Arc<dyn Store> = Arc::new(memory().with_score_events(true));
    conformance::score_write_backs_are_events_when_announced(&*store).await;
}
