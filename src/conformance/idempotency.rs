//! The idempotency guard's contract, through [`IdempotencyGuard`] over the
//! store under test: exactly-once effects under concurrent duplicates,
//! nothing kept from a failed or panicking handler, fingerprints, waiting,
//! expiry, tenancy and inspection.

use std::{
    panic::AssertUnwindSafe,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use futures_util::{
    FutureExt,
    future::{join, join_all},
};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::prelude::*;
use super::support::{ctx, new_contact, ok};

pub(super) fn event(source: &str, key: &str, payload: &Value) -> InboundEvent {
    InboundEvent::new(source, key, payload).expect("a valid event")
}

/// A handler that creates a contact with `address` and returns its id,
/// counting in `runs` the runs that got past that first store call: with
/// [`ClaimTiming::WithFirstStatement`] a duplicate may start a handler, but
/// its first store call fails.
pub(super) fn create_contact<'a>(
    address: &'a str,
    runs: &'a AtomicUsize,
) -> impl for<'t> FnOnce(&'t mut (dyn Transaction + 'a)) -> HandlerFuture<'t, String> + Send + 'a {
    move |tx| {
        Box::pin(async move {
            let c = tx
                .create_contact(new_contact(address, "Web", "Hook"))
                .await?;
            runs.fetch_add(1, Ordering::SeqCst);
            // Give concurrent duplicates time to arrive while this runs.
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(c.id.to_string())
        })
    }
}

pub(super) async fn contacts_with(store: &DynStore, tenant: TenantId, address: &str) -> usize {
    let q = ContactQuery {
        email_prefix: Some(address.to_string()),
        ..ContactQuery::new()
    };
    ok(
        store.scope(tenant, &ctx()).search_contacts(&q).await,
        "search",
    )
    .items
    .len()
}

pub(super) fn source(s: &str) -> IdempotencySource {
    IdempotencySource::parse(s).expect("a valid source")
}

pub(super) fn key(s: &str) -> IdempotencyKey {
    IdempotencyKey::parse(s).expect("a valid key")
}

/// Fifty concurrent deliveries of one event: the handler runs once, one
/// caller sees it executed, forty-nine see the same result replayed.
pub async fn fifty_concurrent_deliveries_of_one_event_run_the_handler_once(store: &DynStore) {
    for timing in TIMINGS {
        fifty_concurrent_deliveries(store, timing).await;
    }
}

/// Both claim timings.
pub(super) const TIMINGS: [ClaimTiming; 2] =
    [ClaimTiming::WithFirstStatement, ClaimTiming::BeforeHandler];

pub(super) fn guard_with(timing: ClaimTiming) -> IdempotencyGuard {
    IdempotencyGuard::with_config(GuardConfig {
        claim: timing,
        ..GuardConfig::default()
    })
}

async fn fifty_concurrent_deliveries(store: &DynStore, timing: ClaimTiming) {
    let t = TenantId::new();
    let guard = guard_with(timing);
    let runs = AtomicUsize::new(0);
    let payload = json!({"type": "contact.created", "email": "once@example.com"});
    let ev = event("hubspot", "evt-50", &payload);
    let outcomes: Vec<Outcome<String>> = join_all((0..50).map(|_| {
        let (guard, ev, runs) = (guard.clone(), &ev, &runs);
        async move {
            ok(
                guard
                    .run(
                        store,
                        t,
                        &ctx(),
                        ev,
                        create_contact("once@example.com", runs),
                    )
                    .await,
                "a delivery",
            )
        }
    }))
    .await;
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the handler ran once");
    assert_eq!(
        contacts_with(store, t, "once@example.com").await,
        1,
        "one contact was created"
    );
    let executed = outcomes.iter().filter(|o| !o.is_replay()).count();
    assert_eq!(executed, 1, "one delivery executed, 49 replayed");
    let first = &outcomes[0].result;
    assert!(first.is_ok(), "the handler succeeded");
    assert!(
        outcomes.iter().all(|o| &o.result == first),
        "every delivery got the same result"
    );
}

/// A handler that panics after writing leaves no key and no rows; the
/// retry runs the handler and succeeds.
pub async fn a_panicking_handler_leaves_no_key_and_no_rows_and_the_retry_runs(store: &DynStore) {
    let t = TenantId::new();
    let guard = IdempotencyGuard::new();
    let ev = event("stripe", "evt_panic", &json!({"n": 1}));
    let panicked = AssertUnwindSafe(guard.run(store, t, &ctx(), &ev, |tx| {
        Box::pin(async move {
            tx.create_contact(new_contact("panic@example.com", "Pan", "Ic"))
                .await?;
            if tx.tenant() != TenantId::from_uuid(uuid::Uuid::nil()) {
                panic!("the handler panics after writing");
            }
            Ok::<_, HandlerError>(())
        }) as HandlerFuture<'_, ()>
    }))
    .catch_unwind()
    .await;
    assert!(panicked.is_err(), "the panic reached the caller");
    let record = ok(
        guard.lookup(store, t, &ctx(), ev.source(), ev.key()).await,
        "lookup",
    );
    assert!(record.is_none(), "no key is kept: {record:?}");
    assert_eq!(
        contacts_with(store, t, "panic@example.com").await,
        0,
        "no rows"
    );

    let runs = AtomicUsize::new(0);
    let retry = ok(
        guard
            .run(
                store,
                t,
                &ctx(),
                &ev,
                create_contact("panic@example.com", &runs),
            )
            .await,
        "the retry",
    );
    assert_eq!(retry.execution, Execution::Executed);
    assert_eq!(contacts_with(store, t, "panic@example.com").await, 1);
}

/// The same key with another payload is refused with the original record;
/// key order and whitespace of the payload do not count as another payload.
pub async fn the_same_key_with_another_payload_is_a_fingerprint_mismatch(store: &DynStore) {
    let t = TenantId::new();
    let guard = IdempotencyGuard::new();
    let runs = AtomicUsize::new(0);
    let original: Value =
        serde_json::from_str(r#"{"a": 1, "b": {"x": [1, 2], "y": "z"}}"#).expect("json");
    let ev = event("stripe", "evt_fp", &original);
    let first = ok(
        guard
            .run(
                store,
                t,
                &ctx(),
                &ev,
                create_contact("fp@example.com", &runs),
            )
            .await,
        "first",
    );

    let reordered: Value =
        serde_json::from_str("{ \"b\" : {\"y\":\"z\",\n \"x\":[1,2]}, \"a\":1 }").expect("json");
    let same = ok(
        guard
            .run(
                store,
                t,
                &ctx(),
                &event("stripe", "evt_fp", &reordered),
                create_contact("fp@example.com", &runs),
            )
            .await,
        "the same payload in another key order",
    );
    assert_eq!(same.execution, Execution::Replayed);
    assert_eq!(same.result, first.result);

    let other = event("stripe", "evt_fp", &json!({"a": 2}));
    let err = guard
        .run(
            store,
            t,
            &ctx(),
            &other,
            create_contact("fp2@example.com", &runs),
        )
        .await
        .expect_err("another payload is refused");
    match err {
        Error::FingerprintMismatch {
            original,
            fingerprint,
        } => {
            assert_eq!(&fingerprint, other.fingerprint());
            assert_eq!(&original.fingerprint, ev.fingerprint());
            assert_eq!(original.key.as_str(), "evt_fp");
            assert_eq!(
                original.result,
                Some(StoredResult::Succeeded(json!(
                    first.result.clone().expect("ok")
                )))
            );
            assert_eq!(original.completed_at, Some(first.completed_at));
        }
        e => panic!("expected FingerprintMismatch, got {e:?}"),
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the handler ran once");
    assert_eq!(contacts_with(store, t, "fp2@example.com").await, 0);
}

/// A permanent failure is stored (without the handler's writes) and
/// replayed; a transient one stores nothing and the retry runs again.
pub async fn a_permanent_failure_is_stored_and_replayed_and_a_transient_one_is_not(
    store: &DynStore,
) {
    let t = TenantId::new();
    let guard = IdempotencyGuard::new();
    let runs = AtomicUsize::new(0);
    let runs_ref = &runs;
    let failing = move |permanent: bool| {
        let runs = runs_ref;
        handler(move |tx| {
            Box::pin(async move {
                tx.create_contact(new_contact("fail@example.com", "Fa", "Il"))
                    .await?;
                runs.fetch_add(1, Ordering::SeqCst);
                Err::<String, _>(if permanent {
                    HandlerError::permanent(json!({"error": "unknown plan"}))
                } else {
                    HandlerError::transient(std::io::Error::other("provider timed out"))
                })
            })
        })
    };

    let ev = event("billing", "inv-1", &json!({"plan": "nope"}));
    let first = ok(
        guard.run(store, t, &ctx(), &ev, failing(true)).await,
        "a permanent failure is an outcome",
    );
    assert_eq!(first.execution, Execution::Executed);
    assert_eq!(first.result, Err(json!({"error": "unknown plan"})));
    let again = ok(
        guard.run(store, t, &ctx(), &ev, failing(true)).await,
        "replay",
    );
    assert_eq!(again.execution, Execution::Replayed);
    assert_eq!(again.result, first.result);
    assert_eq!(runs.load(Ordering::SeqCst), 1, "not run again");
    assert_eq!(
        contacts_with(store, t, "fail@example.com").await,
        0,
        "the failed handler's writes are not kept"
    );
    let record = ok(
        guard.lookup(store, t, &ctx(), ev.source(), ev.key()).await,
        "lookup",
    )
    .expect("the failure is stored");
    assert_eq!(
        record.result,
        Some(StoredResult::Failed(json!({"error": "unknown plan"})))
    );

    let ev2 = event("billing", "inv-2", &json!({"plan": "pro"}));
    let err = guard
        .run(store, t, &ctx(), &ev2, failing(false))
        .await
        .expect_err("a transient failure is returned");
    assert!(err.is_retryable(), "{err:?}");
    assert!(
        ok(
            guard
                .lookup(store, t, &ctx(), ev2.source(), ev2.key())
                .await,
            "lookup"
        )
        .is_none(),
        "nothing is stored"
    );
    assert_eq!(contacts_with(store, t, "fail@example.com").await, 0);
    let retry = ok(
        guard
            .run(
                store,
                t,
                &ctx(),
                &ev2,
                create_contact("fail@example.com", &runs),
            )
            .await,
        "the retry",
    );
    assert_eq!(retry.execution, Execution::Executed);
    assert_eq!(runs.load(Ordering::SeqCst), 3);
}

/// While a delivery is in flight, a duplicate that may not wait gets a
/// retryable `KeyInUse`, as does one whose wait runs out; afterwards the
/// result replays.
pub async fn a_duplicate_that_may_not_wait_gets_key_in_use_while_the_first_runs(store: &DynStore) {
    let t = TenantId::new();
    let guard = IdempotencyGuard::new();
    let ev = event("stripe", "evt_busy", &json!({"id": 7}));
    let (started_tx, started_rx) = oneshot::channel::<()>();
    let (release_tx, release_rx) = oneshot::channel::<()>();

    let context = ctx();
    let first = guard.run(store, t, &context, &ev, move |tx| {
        Box::pin(async move {
            tx.create_contact(new_contact("busy@example.com", "Bu", "Sy"))
                .await?;
            let _ = started_tx.send(());
            let _ = release_rx.await;
            Ok::<_, HandlerError>(7_u32)
        }) as HandlerFuture<'_, u32>
    });
    let duplicates = async {
        let _ = started_rx.await;
        let no_wait = guard
            .with_wait(WaitPolicy::NoWait)
            .run(store, t, &ctx(), &ev, |_| {
                Box::pin(async { Ok::<_, HandlerError>(0_u32) }) as HandlerFuture<'_, u32>
            })
            .await;
        let short_wait = guard
            .with_wait(WaitPolicy::Wait(Duration::from_millis(50)))
            .run(store, t, &ctx(), &ev, |_| {
                Box::pin(async { Ok::<_, HandlerError>(0_u32) }) as HandlerFuture<'_, u32>
            })
            .await;
        let _ = release_tx.send(());
        (no_wait, short_wait)
    };
    let (first, (no_wait, short_wait)) = join(first, duplicates).await;
    for (what, r) in [("no wait", no_wait), ("a short wait", short_wait)] {
        match r {
            Err(e @ Error::KeyInUse { .. }) => assert!(e.is_retryable()),
            other => panic!("{what}: expected KeyInUse, got {other:?}"),
        }
    }
    let first = ok(first, "the first delivery");
    assert_eq!(first.result, Ok(7));
    let later = ok(
        guard
            .with_wait(WaitPolicy::NoWait)
            .run(store, t, &ctx(), &ev, |_| {
                Box::pin(async { Ok::<_, HandlerError>(0_u32) }) as HandlerFuture<'_, u32>
            })
            .await,
        "a delivery after the first ended",
    );
    assert_eq!(later.execution, Execution::Replayed);
    assert_eq!(later.result, Ok(7));
}

/// An expired record counts as absent (the event runs again), and purging
/// deletes expired records in batches, keeping the others.
pub async fn an_expired_key_runs_again_and_purge_deletes_only_expired_keys(store: &DynStore) {
    let t = TenantId::new();
    let short = IdempotencyGuard::with_config(GuardConfig {
        retention: Duration::from_millis(300),
        purge_batch: 2,
        ..GuardConfig::default()
    });
    let long = IdempotencyGuard::new();
    let runs = AtomicUsize::new(0);
    let runs_ref = &runs;
    let counting = move |n: u32| {
        let runs = runs_ref;
        handler(move |tx| {
            Box::pin(async move {
                // A store call first: past it, only the key's holder runs.
                tx.get_contact(ContactId::new()).await?;
                runs.fetch_add(1, Ordering::SeqCst);
                Ok(n)
            })
        })
    };
    for i in 1..=5 {
        let ev = event("stripe", &format!("short-{i}"), &json!(i));
        ok(short.run(store, t, &ctx(), &ev, counting(i)).await, "short");
    }
    let again = event("stripe", "again", &json!(0));
    ok(
        short.run(store, t, &ctx(), &again, counting(0)).await,
        "again",
    );
    let kept = event("stripe", "kept", &json!(9));
    ok(long.run(store, t, &ctx(), &kept, counting(9)).await, "kept");
    tokio::time::sleep(Duration::from_millis(400)).await;

    // Run again through the long-lived guard: the record it stores stays
    // unexpired however slowly the rest of this test runs.
    let rerun = ok(
        long.run(store, t, &ctx(), &again, counting(1)).await,
        "an expired key",
    );
    assert_eq!(
        rerun.execution,
        Execution::Executed,
        "an expired key runs again"
    );
    assert_eq!(rerun.result, Ok(1));
    assert_eq!(runs.load(Ordering::SeqCst), 8);

    let purged = ok(short.purge_expired(store, t, &ctx()).await, "purge");
    assert_eq!(
        purged, 5,
        "the five expired keys are purged, in batches of two"
    );
    let left = ok(
        long.list(
            store,
            t,
            &ctx(),
            &source("stripe"),
            &PageRequest::first(100),
        )
        .await,
        "list",
    );
    let mut keys: Vec<&str> = left.items.iter().map(|r| r.key.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["again", "kept"], "unexpired keys are kept");
    assert_eq!(
        ok(short.purge_expired(store, t, &ctx()).await, "purge again"),
        0
    );
    let fresh = ok(
        short
            .run(
                store,
                t,
                &ctx(),
                &event("stripe", "short-1", &json!(1)),
                counting(1),
            )
            .await,
        "a purged key",
    );
    assert_eq!(fresh.execution, Execution::Executed);
}

/// Keys are scoped by tenant and by source.
pub async fn the_same_key_in_two_tenants_or_two_sources_is_independent(store: &DynStore) {
    let (t1, t2) = (TenantId::new(), TenantId::new());
    let guard = IdempotencyGuard::new();
    let runs = AtomicUsize::new(0);
    let payload = json!({"id": "shared"});
    let a = ok(
        guard
            .run(
                store,
                t1,
                &ctx(),
                &event("stripe", "shared", &payload),
                create_contact("t@example.com", &runs),
            )
            .await,
        "tenant one",
    );
    let b = ok(
        guard
            .run(
                store,
                t2,
                &ctx(),
                &event("stripe", "shared", &payload),
                create_contact("t@example.com", &runs),
            )
            .await,
        "tenant two",
    );
    let other = event("hubspot", "shared", &json!({"other": true}));
    let c = ok(
        guard
            .run(
                store,
                t1,
                &ctx(),
                &other,
                create_contact("h@example.com", &runs),
            )
            .await,
        "another source",
    );
    for o in [&a, &b, &c] {
        assert_eq!(o.execution, Execution::Executed);
    }
    assert_ne!(a.result, b.result, "each tenant created its own contact");
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    let seen_by_t2 = ok(
        guard
            .lookup(store, t2, &ctx(), &source("hubspot"), &key("shared"))
            .await,
        "lookup",
    );
    assert!(
        seen_by_t2.is_none(),
        "tenant two does not see tenant one's key"
    );
}

/// Lookup returns what was stored; listing is newest first and pages
/// through every key of the source exactly once.
pub async fn lookup_and_list_show_the_stored_records_newest_first(store: &DynStore) {
    let t = TenantId::new();
    let guard = IdempotencyGuard::new();
    let ev = event("hubspot", "lookup-0", &json!({"n": 0}));
    let seen_key = ok(
        guard
            .run(store, t, &ctx(), &ev, |tx| {
                Box::pin(async move {
                    Ok::<_, HandlerError>(tx.context().idempotency_key().map(str::to_string))
                }) as HandlerFuture<'_, Option<String>>
            })
            .await,
        "run",
    );
    assert_eq!(
        seen_key.result,
        Ok(Some("hubspot:lookup-0".to_string())),
        "the handler's transaction carries source:key as its idempotency key"
    );
    for i in 1..7 {
        let ev = event("hubspot", &format!("lookup-{i}"), &json!({"n": i}));
        ok(
            guard
                .run(store, t, &ctx(), &ev, move |_| {
                    Box::pin(async move { Ok::<_, HandlerError>(json!({"n": i})) })
                        as HandlerFuture<'_, Value>
                })
                .await,
            "run",
        );
        if i % 2 == 0 {
            super::support::tick().await;
        }
    }
    ok(
        guard
            .run(
                store,
                t,
                &ctx(),
                &event("stripe", "elsewhere", &json!(1)),
                |_| Box::pin(async { Ok::<_, HandlerError>(()) }) as HandlerFuture<'_, ()>,
            )
            .await,
        "another source",
    );

    let record = ok(
        guard
            .lookup(store, t, &ctx(), &source("hubspot"), &key("lookup-3"))
            .await,
        "lookup",
    )
    .expect("the record exists");
    assert_eq!(record.tenant_id, t);
    assert_eq!(
        record.fingerprint,
        *event("hubspot", "x", &json!({"n": 3})).fingerprint()
    );
    assert_eq!(
        record.result,
        Some(StoredResult::Succeeded(json!({"n": 3})))
    );
    assert!(record.completed_at.is_some_and(|c| c >= record.created_at));
    assert!(record.expires_at > record.created_at);
    assert!(
        ok(
            guard
                .lookup(store, t, &ctx(), &source("hubspot"), &key("missing"))
                .await,
            "lookup"
        )
        .is_none()
    );

    let mut all = Vec::new();
    let mut page = PageRequest::first(2);
    loop {
        let p = ok(
            guard
                .list(store, t, &ctx(), &source("hubspot"), &page)
                .await,
            "list",
        );
        assert!(p.items.len() <= 2);
        all.extend(p.items);
        match p.next_cursor {
            Some(c) => page = PageRequest::after(2, c),
            None => break,
        }
    }
    let got: Vec<(i64, String)> = all
        .iter()
        .map(|r| (r.created_at.timestamp_micros(), r.key.as_str().to_string()))
        .collect();
    let mut expected = got.clone();
    expected.sort_by(|a, b| b.cmp(a));
    assert_eq!(got.len(), 7, "every key of the source, once: {got:?}");
    assert_eq!(got, expected, "newest first, ties by key descending");
    let err = guard
        .list(store, t, &ctx(), &source("hubspot"), &PageRequest::first(0))
        .await
        .expect_err("a limit of 0");
    assert_eq!(err.field_errors()[0].field, "limit");
}
