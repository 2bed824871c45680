#![cfg(all(feature = "postgres", feature = "conformance"))]
//! What only PostgreSQL can do to the idempotency guard: lose the
//! connection in the middle of a handler, and meet duplicates from other
//! processes (other guards) at the row lock of the claim.

mod support;

use std::time::Duration;

use crm_core::{
    Actor, Context, Error, StoreExt, TenantId,
    domain::{Email, NewContact, PersonName},
    idempotency::{
        Execution, HandlerError, HandlerFuture, IdempotencyGuard, InboundEvent, WaitPolicy, handler,
    },
};
use serde_json::json;
use support::TestStore;
use tokio::sync::oneshot;

fn ctx() -> Context {
    Context::new(Actor::parse("webhook:test").unwrap())
}

fn contact(email: &str) -> NewContact {
    NewContact::new(
        Email::parse(email).unwrap(),
        PersonName::parse("Kill").unwrap(),
        PersonName::parse("Ed").unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_killed_mid_handler_leaves_no_key_and_no_rows_and_the_retry_succeeds() {
    let db = TestStore::new().await;
    let store = (*db).clone();
    let admin = db.db().client().await;
    let (t, guard) = (TenantId::new(), IdempotencyGuard::new());
    let ev = InboundEvent::new("stripe", "evt_killed", &json!({"id": 1})).unwrap();
    let (started_tx, started_rx) = oneshot::channel::<()>();
    let (release_tx, release_rx) = oneshot::channel::<()>();

    let delivery = {
        let (store, guard, ev) = (store.clone(), guard.clone(), ev.clone());
        tokio::spawn(async move {
            guard
                .run(&store, t, &ctx(), &ev, move |tx| {
                    Box::pin(async move {
                        let c = tx.create_contact(contact("killed@example.com")).await?;
                        let _ = started_tx.send(());
                        let _ = release_rx.await;
                        // The connection is gone by now.
                        tx.get_contact(c.id).await?;
                        Ok::<_, HandlerError>(c.id.to_string())
                    }) as HandlerFuture<'_, String>
                })
                .await
        })
    };
    started_rx.await.unwrap();
    let killed: Vec<bool> = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND state = 'idle in transaction' AND pid <> pg_backend_pid()",
            &[&db.db().name()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        killed,
        [true],
        "the handler's connection was found and killed"
    );
    release_tx.send(()).unwrap();

    let err = delivery
        .await
        .unwrap()
        .expect_err("the handler lost its connection");
    assert!(
        err.is_retryable(),
        "a lost connection is retryable: {err:?}"
    );
    let record = guard
        .lookup(&store, t, &ctx(), ev.source(), ev.key())
        .await
        .unwrap();
    assert!(record.is_none(), "no key is kept: {record:?}");
    let email = Email::parse("killed@example.com").unwrap();
    assert!(
        store
            .get_contact_by_email(t, &ctx(), &email)
            .await
            .unwrap()
            .is_none(),
        "no contact is kept"
    );

    let retry = guard
        .run(&store, t, &ctx(), &ev, |tx| {
            Box::pin(async move {
                let c = tx.create_contact(contact("killed@example.com")).await?;
                Ok::<_, HandlerError>(c.id.to_string())
            }) as HandlerFuture<'_, String>
        })
        .await
        .unwrap();
    assert_eq!(retry.execution, Execution::Executed);
    assert!(
        store
            .get_contact_by_email(t, &ctx(), &email)
            .await
            .unwrap()
            .is_some()
    );
}

/// Two guards share nothing, as two processes would: the duplicate meets
/// the first delivery at the row lock of its claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_from_another_process_waits_on_the_row_lock_or_gets_key_in_use() {
    let db = TestStore::new().await;
    let store = (*db).clone();
    let t = TenantId::new();
    let (first_guard, other_guard) = (IdempotencyGuard::new(), IdempotencyGuard::new());
    let ev = InboundEvent::new("hubspot", "evt_cross", &json!({"id": 2})).unwrap();
    let (started_tx, started_rx) = oneshot::channel::<()>();
    let (release_tx, release_rx) = oneshot::channel::<()>();

    let first = {
        let (store, ev) = (store.clone(), ev.clone());
        tokio::spawn(async move {
            first_guard
                .run(&store, t, &ctx(), &ev, move |tx| {
                    Box::pin(async move {
                        tx.create_contact(contact("cross@example.com")).await?;
                        let _ = started_tx.send(());
                        let _ = release_rx.await;
                        Ok::<_, HandlerError>(42_u32)
                    }) as HandlerFuture<'_, u32>
                })
                .await
        })
    };
    started_rx.await.unwrap();

    let noop = || handler(|_| Box::pin(async { Ok::<_, HandlerError>(0_u32) }));
    let no_wait = other_guard
        .with_wait(WaitPolicy::NoWait)
        .run(&store, t, &ctx(), &ev, noop())
        .await;
    assert!(
        matches!(no_wait, Err(Error::KeyInUse { .. })),
        "no wait: {no_wait:?}"
    );
    let short = other_guard
        .with_wait(WaitPolicy::Wait(Duration::from_millis(100)))
        .run(&store, t, &ctx(), &ev, noop())
        .await;
    assert!(
        matches!(short, Err(Error::KeyInUse { .. })),
        "a wait that runs out: {short:?}"
    );

    // A patient duplicate blocks on the row lock and replays once the
    // first commits.
    let patient = {
        let (store, ev, guard) = (store.clone(), ev.clone(), other_guard.clone());
        tokio::spawn(async move {
            guard
                .run(&store, t, &ctx(), &ev, |_| {
                    Box::pin(async { Ok::<_, HandlerError>(0_u32) }) as HandlerFuture<'_, u32>
                })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    release_tx.send(()).unwrap();
    let first = first.await.unwrap().unwrap();
    let patient = patient.await.unwrap().unwrap();
    assert_eq!(first.execution, Execution::Executed);
    assert_eq!(patient.execution, Execution::Replayed);
    assert_eq!(patient.result, Ok(42));
}
