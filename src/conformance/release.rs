//! When what a transaction holds is released: by the time `rollback` (or
//! `commit`) returns; shortly after a drop, not by the time it returns. And
//! the idempotency guard, which relies on it: when `run` returns (or its
//! handler's panic leaves it), the delivery holds its key no longer.

use std::{panic::AssertUnwindSafe, time::Duration};

use futures_util::{FutureExt, future::join_all};
use serde_json::json;

use super::prelude::*;
use super::support::{ctx, new_contact, ok};

fn claim(key: &str, wait: WaitPolicy) -> IdempotencyClaim {
    let now = crate::domain::truncate_to_micros(chrono::Utc::now());
    IdempotencyClaim {
        source: IdempotencySource::parse("release").expect("a valid source"),
        key: IdempotencyKey::parse(key).expect("a valid key"),
        fingerprint: Fingerprint::of_json(&json!({"key": key})),
        now,
        expires_at: now + chrono::Duration::hours(1),
        wait,
    }
}

/// A claim made right after another transaction's `rollback` returned
/// gets the key without waiting: the rollback released it. Many times
/// over, so that a release that only follows the rollback's return shows.
pub async fn a_key_released_by_rollback_is_free_to_a_claim_that_may_not_wait(store: &DynStore) {
    let t = TenantId::new();
    for i in 0..20 {
        let key = format!("rolled-back-{i}");
        let mut first = ok(store.begin(t, ctx()).await, "begin");
        assert_eq!(
            ok(
                first
                    .claim_idempotency_key(&claim(&key, WaitPolicy::NoWait))
                    .await,
                "claim"
            ),
            Claim::Claimed
        );
        ok(first.rollback().await, "rollback");
        let mut second = ok(store.begin(t, ctx()).await, "begin");
        assert_eq!(
            ok(
                second
                    .claim_idempotency_key(&claim(&key, WaitPolicy::NoWait))
                    .await,
                "a claim right after the rollback"
            ),
            Claim::Claimed,
            "{key}"
        );
        ok(second.rollback().await, "rollback");
    }
}

/// A dropped transaction is rolled back and what it held is released —
/// shortly after the drop, not necessarily by the time it returns: a
/// claim that waits gets the key.
pub async fn a_key_held_by_a_dropped_transaction_is_released_to_a_claim_that_waits(
    store: &DynStore,
) {
    let t = TenantId::new();
    let mut tx = ok(store.begin(t, ctx()).await, "begin");
    assert_eq!(
        ok(
            tx.claim_idempotency_key(&claim("dropped", WaitPolicy::NoWait))
                .await,
            "claim"
        ),
        Claim::Claimed
    );
    drop(tx);
    let mut next = ok(store.begin(t, ctx()).await, "begin");
    let wait = WaitPolicy::Wait(Duration::from_secs(30));
    assert_eq!(
        ok(
            next.claim_idempotency_key(&claim("dropped", wait)).await,
            "a claim that waits for the dropped transaction's end"
        ),
        Claim::Claimed
    );
    ok(next.rollback().await, "rollback");
}

/// After a delivery replayed a stored result, was refused for another
/// payload, or ended in its handler's panic, a delivery of the same event
/// that may not wait — through another guard, as from another process —
/// is never refused with `KeyInUse` because of the one before: `run` ends
/// its transaction before it returns (or lets the panic go on). Four such
/// sequences run at once.
pub async fn a_no_wait_delivery_right_after_a_replay_or_a_panic_is_not_refused(store: &DynStore) {
    let t = TenantId::new();
    join_all((0..4).map(|lane| deliveries_right_after_each_other(store, t, lane))).await;
}

/// One sequence of [`a_no_wait_delivery_right_after_a_replay_or_a_panic_is_not_refused`].
async fn deliveries_right_after_each_other(store: &DynStore, t: TenantId, lane: usize) {
    let make = |label: String| {
        handler(move |tx| {
            Box::pin(async move {
                let c = tx
                    .create_contact(new_contact(&format!("{label}@example.com"), "Re", "Lease"))
                    .await?;
                Ok::<_, HandlerError>(c.id.to_string())
            }) as HandlerFuture<'_, String>
        })
    };
    let other = IdempotencyGuard::new().with_wait(WaitPolicy::NoWait);
    for round in 0..10 {
        let i = lane * 100 + round;
        let timing = if i.is_multiple_of(2) {
            ClaimTiming::WithFirstStatement
        } else {
            ClaimTiming::BeforeHandler
        };
        let guard = IdempotencyGuard::with_config(GuardConfig {
            claim: timing,
            ..GuardConfig::default()
        });
        let ev = InboundEvent::new("release", &format!("evt-{i}"), &json!({"i": i}))
            .expect("a valid event");
        let done = ok(
            guard
                .run(store, t, &ctx(), &ev, make(format!("done{i}")))
                .await,
            "the first delivery",
        );
        assert_eq!(done.execution, Execution::Executed);

        let replay = ok(
            guard
                .run(store, t, &ctx(), &ev, make(format!("replay{i}")))
                .await,
            "a replay",
        );
        assert_eq!(replay.execution, Execution::Replayed);
        let next = ok(
            other
                .run(store, t, &ctx(), &ev, make(format!("next{i}")))
                .await,
            &format!("{timing:?}: a delivery right after a replay"),
        );
        assert_eq!(next.result, done.result);

        let forged = InboundEvent::new("release", &format!("evt-{i}"), &json!({"i": -1}))
            .expect("a valid event");
        let refused = guard
            .run(store, t, &ctx(), &forged, make(format!("forged{i}")))
            .await;
        assert!(
            matches!(refused, Err(Error::FingerprintMismatch { .. })),
            "{refused:?}"
        );
        let next = ok(
            other
                .run(store, t, &ctx(), &ev, make(format!("after{i}")))
                .await,
            &format!("{timing:?}: a delivery right after a mismatch"),
        );
        assert_eq!(next.result, done.result);

        let fresh = InboundEvent::new("release", &format!("evt-p{i}"), &json!({"i": i}))
            .expect("a valid event");
        let panicked = AssertUnwindSafe(guard.run(store, t, &ctx(), &fresh, |tx| {
            Box::pin(async move {
                tx.create_contact(new_contact(&format!("panic{i}@example.com"), "Pan", "Ic"))
                    .await?;
                if !tx.tenant().as_uuid().is_nil() {
                    panic!("the handler panics after writing");
                }
                Ok::<_, HandlerError>(String::new())
            }) as HandlerFuture<'_, String>
        }))
        .catch_unwind()
        .await;
        assert!(panicked.is_err(), "the panic reaches the caller");
        let retry = ok(
            other
                .run(store, t, &ctx(), &fresh, make(format!("retry{i}")))
                .await,
            &format!("{timing:?}: a retry right after a panic"),
        );
        assert_eq!(retry.execution, Execution::Executed);
    }
}
