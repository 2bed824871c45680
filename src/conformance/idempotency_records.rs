//! The idempotency records under the guard: completing only what was
//! claimed, duplicates under either claim timing, stored results of every
//! shape.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use serde_json::{Value, json};

use super::prelude::*;
use super::support::{ctx, new_contact, ok};

use super::idempotency::{TIMINGS, contacts_with, create_contact, event, guard_with, key, source};

/// Storing an outcome for a key the transaction did not claim fails, and
/// the transaction's writes are not committed.
pub async fn completing_an_unclaimed_key_fails_and_commits_nothing(store: &DynStore) {
    let t = TenantId::new();
    let mut tx = ok(store.begin(t, ctx()).await, "begin");
    ok(
        tx.create_contact(new_contact("unclaimed@example.com", "Un", "Claimed"))
            .await,
        "create",
    );
    let result = tx
        .complete_idempotency_key_and_commit(
            &source("stripe"),
            &key("never-claimed"),
            &StoredResult::Succeeded(json!(1)),
            chrono::Utc::now(),
        )
        .await;
    assert!(result.is_err(), "an unclaimed key: {result:?}");
    assert_eq!(
        contacts_with(store, t, "unclaimed@example.com").await,
        0,
        "nothing was committed"
    );
    let record = ok(
        IdempotencyGuard::new()
            .lookup(store, t, &ctx(), &source("stripe"), &key("never-claimed"))
            .await,
        "lookup",
    );
    assert!(record.is_none());
}

/// A duplicate's handler never commits a write, under either claim timing.
/// With the claim sent along with the handler's first statement, a
/// duplicate may start the handler, but that store call fails, and whatever
/// the handler does then (return the error, swallow it and succeed, fail
/// transiently, or make no store call at all) the stored result is
/// replayed. With the claim made before the handler, a duplicate never
/// starts it.
pub async fn a_duplicates_handler_never_commits_a_write_under_either_claim_timing(
    store: &DynStore,
) {
    for timing in TIMINGS {
        let t = TenantId::new();
        let guard = guard_with(timing);
        let ev = event("stripe", "evt_dup", &json!({"n": 1}));
        let starts = AtomicUsize::new(0);
        let starts_ref = &starts;
        // Creates a contact of an address of its own; with `swallow`, a
        // failing store call is ignored and the handler succeeds anyway.
        let writer = move |n: usize, swallow: bool| {
            let starts = starts_ref;
            handler(move |tx| {
                Box::pin(async move {
                    starts.fetch_add(1, Ordering::SeqCst);
                    let address = format!("dup{n}@example.com");
                    match tx.create_contact(new_contact(&address, "Du", "Pe")).await {
                        Ok(c) => Ok(c.id.to_string()),
                        Err(e) if swallow => Ok(format!("ignored: {e}")),
                        Err(e) => Err(e.into()),
                    }
                })
            })
        };
        let first = ok(
            guard.run(store, t, &ctx(), &ev, writer(0, false)).await,
            "first",
        );
        assert_eq!(first.execution, Execution::Executed, "{timing:?}");

        for (n, swallow) in [(1, false), (2, true)] {
            let again = ok(
                guard.run(store, t, &ctx(), &ev, writer(n, swallow)).await,
                "a duplicate",
            );
            assert_eq!(again.execution, Execution::Replayed, "{timing:?} {n}");
            assert_eq!(again.result, first.result, "{timing:?} {n}");
        }
        // A first store call that is a bulk upsert (on PostgreSQL a COPY,
        // which cannot carry the claim: it is sent ahead of it).
        let bulk = handler(move |tx| {
            Box::pin(async move {
                starts_ref.fetch_add(1, Ordering::SeqCst);
                let rows = [new_contact("dup-bulk@example.com", "Bu", "Lk")];
                let out = tx
                    .upsert_contacts(&rows, crate::bulk::ConflictPolicy::Incoming)
                    .await?;
                Ok::<_, HandlerError>(format!("{} rows", out.len()))
            })
        });
        let again = ok(
            guard.run(store, t, &ctx(), &ev, bulk).await,
            "a duplicate whose first call is a bulk upsert",
        );
        assert_eq!(again.execution, Execution::Replayed, "{timing:?}");
        assert_eq!(again.result, first.result, "{timing:?}");
        let transient = handler(move |_tx| {
            Box::pin(async move {
                starts_ref.fetch_add(1, Ordering::SeqCst);
                Err::<String, _>(HandlerError::transient(std::io::Error::other("down")))
            })
        });
        let again = ok(
            guard.run(store, t, &ctx(), &ev, transient).await,
            "a duplicate failing before any store call",
        );
        assert_eq!(again.execution, Execution::Replayed, "{timing:?}");
        assert_eq!(again.result, first.result, "{timing:?}");
        let storeless = handler(move |_tx| {
            Box::pin(async move {
                starts_ref.fetch_add(1, Ordering::SeqCst);
                Ok::<_, HandlerError>("made up".to_string())
            })
        });
        let again = ok(
            guard.run(store, t, &ctx(), &ev, storeless).await,
            "a duplicate making no store call",
        );
        assert_eq!(again.execution, Execution::Replayed, "{timing:?}");
        assert_eq!(again.result, first.result, "{timing:?}");

        assert_eq!(
            contacts_with(store, t, "dup").await,
            1,
            "{timing:?}: only the first delivery's contact exists"
        );
        assert_eq!(contacts_with(store, t, "dup0@").await, 1, "{timing:?}");
        if timing == ClaimTiming::BeforeHandler {
            assert_eq!(starts.load(Ordering::SeqCst), 1, "duplicates never start");
        }
    }
}

/// A handler whose output serializes to JSON `null` (here `None`) stores
/// that result, and a replay returns it: a stored `null` is not mistaken
/// for a missing result.
pub async fn a_null_result_is_stored_and_replayed(store: &DynStore) {
    for timing in TIMINGS {
        let t = TenantId::new();
        let guard = guard_with(timing);
        let ev = event("stripe", "evt_null", &json!({"n": 0}));
        let nothing = || {
            handler(|tx| {
                Box::pin(async move {
                    tx.get_contact(ContactId::new()).await?;
                    Ok::<Option<u32>, HandlerError>(None)
                })
            })
        };
        let first = ok(guard.run(store, t, &ctx(), &ev, nothing()).await, "first");
        assert_eq!(first.execution, Execution::Executed, "{timing:?}");
        assert_eq!(first.result, Ok(None));
        let again = ok(guard.run(store, t, &ctx(), &ev, nothing()).await, "replay");
        assert_eq!(again.execution, Execution::Replayed, "{timing:?}");
        assert_eq!(again.result, Ok(None), "{timing:?}");
        let record = ok(
            guard.lookup(store, t, &ctx(), ev.source(), ev.key()).await,
            "lookup",
        )
        .expect("the record");
        assert_eq!(record.result, Some(StoredResult::Succeeded(Value::Null)));
    }
}

/// A retention longer than the calendar works: the record expires at the
/// end of the year 9999 and replays like any other.
pub async fn a_retention_beyond_the_calendar_keeps_the_record_until_the_year_9999(
    store: &DynStore,
) {
    use chrono::Datelike;
    let t = TenantId::new();
    let guard = IdempotencyGuard::with_config(GuardConfig {
        retention: Duration::MAX,
        ..GuardConfig::default()
    });
    let ev = event("stripe", "evt_forever", &json!({"n": 1}));
    let runs = AtomicUsize::new(0);
    let first = ok(
        guard
            .run(
                store,
                t,
                &ctx(),
                &ev,
                create_contact("forever@example.com", &runs),
            )
            .await,
        "first",
    );
    assert_eq!(first.execution, Execution::Executed);
    let again = ok(
        guard
            .run(
                store,
                t,
                &ctx(),
                &ev,
                create_contact("forever@example.com", &runs),
            )
            .await,
        "replay",
    );
    assert_eq!(again.execution, Execution::Replayed);
    assert_eq!(again.result, first.result);
    let record = ok(
        guard.lookup(store, t, &ctx(), ev.source(), ev.key()).await,
        "lookup",
    )
    .expect("the record");
    assert_eq!(record.expires_at.year(), 9999);
}

/// The storage steps one by one: claim, complete (without the commit),
/// commit. The record returned by completing is the one stored; a second
/// completion of the key fails, as does completing a key never claimed;
/// and a claim over an expired record replaces it.
pub async fn claim_complete_and_commit_store_the_returned_record(store: &DynStore) {
    let t = TenantId::new();
    let claim_of = |k: &str, retention: chrono::Duration| {
        let now = crate::domain::truncate_to_micros(chrono::Utc::now());
        crate::idempotency::IdempotencyClaim {
            source: source("crm"),
            key: key(k),
            fingerprint: crate::idempotency::Fingerprint::of_json(&json!({"k": k})),
            now,
            expires_at: now + retention,
            wait: WaitPolicy::NoWait,
        }
    };
    for (k, retention) in [
        ("steps", chrono::Duration::hours(1)),
        // Expires at once: the second round replaces it.
        ("brief", chrono::Duration::milliseconds(1)),
        ("brief", chrono::Duration::hours(1)),
    ] {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let claim = claim_of(k, retention);
        let mut tx = ok(store.begin(t, ctx()).await, "begin");
        assert_eq!(
            ok(tx.claim_idempotency_key(&claim).await, "claim"),
            crate::idempotency::Claim::Claimed,
            "{k}"
        );
        let stored = ok(
            tx.complete_idempotency_key(
                &claim.source,
                &claim.key,
                &StoredResult::Succeeded(json!(k)),
                claim.now,
            )
            .await,
            "complete",
        );
        let again = tx
            .complete_idempotency_key(
                &claim.source,
                &claim.key,
                &StoredResult::Succeeded(json!("twice")),
                claim.now,
            )
            .await;
        assert!(again.is_err(), "a second completion: {again:?}");
        // The failed second completion may have spoilt that transaction
        // (PostgreSQL refuses it after an error): do it again, cleanly.
        // Rolled back, not dropped: the claim that follows may not wait,
        // and only a rollback that returned has released the key.
        ok(tx.rollback().await, "rollback");

        let mut tx = ok(store.begin(t, ctx()).await, "begin");
        assert_eq!(
            ok(tx.claim_idempotency_key(&claim).await, "claim"),
            crate::idempotency::Claim::Claimed,
            "{k}: nothing was kept from the dropped transaction"
        );
        let stored_now = ok(
            tx.complete_idempotency_key(
                &claim.source,
                &claim.key,
                &StoredResult::Succeeded(json!(k)),
                claim.now,
            )
            .await,
            "complete",
        );
        assert_eq!(stored_now, stored);
        let unclaimed = tx
            .complete_idempotency_key(
                &claim.source,
                &key("not-this-one"),
                &StoredResult::Succeeded(json!(0)),
                claim.now,
            )
            .await;
        assert!(unclaimed.is_err(), "a key never claimed: {unclaimed:?}");
        ok(tx.rollback().await, "rollback");

        let mut tx = ok(store.begin(t, ctx()).await, "begin");
        assert_eq!(
            ok(tx.claim_idempotency_key(&claim).await, "claim"),
            crate::idempotency::Claim::Claimed
        );
        let stored = ok(
            tx.complete_idempotency_key(
                &claim.source,
                &claim.key,
                &StoredResult::Succeeded(json!(k)),
                claim.now,
            )
            .await,
            "complete",
        );
        ok(tx.commit().await, "commit");
        let record = ok(
            IdempotencyGuard::new()
                .lookup(store, t, &ctx(), &claim.source, &claim.key)
                .await,
            "lookup",
        );
        assert_eq!(
            record,
            Some(stored),
            "{k}: the stored record is the returned one"
        );
    }
}
