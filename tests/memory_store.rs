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
