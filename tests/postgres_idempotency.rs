#![cfg(all(feature = "postgres", feature = "conformance"))]
//! What only PostgreSQL can do to the idempotency guard: lose the
//! connection in the middle of a handler, and meet duplicates from other
//! processes (other guards) at the claim's lock. On PostgreSQL and on a
//! Citus cluster (see `support::citus`).

mod support;

use std::time::Duration;

use crm_core::{
    Actor, Context, Error, Store, StoreExt, TenantId,
    domain::{ContactPatch, Email, NewContact, PersonName},
    idempotency::{
        Claim, ClaimTiming, Execution, Fingerprint, GuardConfig, HandlerError, HandlerFuture,
        IdempotencyClaim, IdempotencyGuard, IdempotencyKey, IdempotencySource, InboundEvent,
        Outcome, StoredResult, WaitPolicy, handler,
    },
};
use serde_json::json;
use support::{Target, TestStore};
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

async fn a_connection_killed_mid_handler_leaves_no_key_and_no_rows_and_the_retry_succeeds(
    target: Target,
) {
    let Some(db) = TestStore::on(target).await else {
        return;
    };
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
    // The test's backends: its database's, or on Citus its role's (on the
    // coordinator, where the store's connections are).
    let (column, name) = if db.db().is_citus() {
        (
            "usename",
            db.db().store_config().get_user().unwrap().to_string(),
        )
    } else {
        ("datname", db.db().name().to_string())
    };
    let killed: Vec<bool> = admin
        .query(
            &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE {column} = $1 AND state = 'idle in transaction' \
                 AND pid <> pg_backend_pid()"
            ),
            &[&name],
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
            .scope(t, &ctx())
            .get_contact_by_email(&email)
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
            .scope(t, &ctx())
            .get_contact_by_email(&email)
            .await
            .unwrap()
            .is_some()
    );
}

/// Two guards share nothing, as two processes would: the duplicate meets
/// the first delivery at the advisory lock of its claim.
async fn a_duplicate_from_another_process_waits_on_the_claim_or_gets_key_in_use(target: Target) {
    let Some(db) = TestStore::on(target).await else {
        return;
    };
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

    // A patient duplicate blocks on the claim's lock and replays once the
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

/// Fifty processes (fifty guards, sharing no registry) receive the same
/// event at once: under either claim timing the handler's contact is
/// created once, and every delivery gets the same result. With the claim
/// sent along with the handler's first statement, the duplicates meet the
/// first delivery at the advisory lock of its claim, and read its record
/// once it commits.
async fn fifty_processes_receiving_one_event_create_one_contact_under_either_claim_timing(
    target: Target,
) {
    let Some(db) = TestStore::on(target).await else {
        return;
    };
    let store = (*db).clone();
    for timing in [ClaimTiming::WithFirstStatement, ClaimTiming::BeforeHandler] {
        let t = TenantId::new();
        let ev = InboundEvent::new("stripe", "evt_fifty", &json!({"id": 50})).unwrap();
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (store, ev) = (store.clone(), ev.clone());
                let guard =
                    IdempotencyGuard::with_config(GuardConfig::default().with_claim(timing));
                tokio::spawn(async move {
                    guard
                        .run(&store, t, &ctx(), &ev, move |tx| {
                            Box::pin(async move {
                                let c = tx.create_contact(contact("fifty@example.com")).await?;
                                // Hold the key while the others arrive.
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                Ok::<_, HandlerError>(c.id.to_string())
                            }) as HandlerFuture<'_, String>
                        })
                        .await
                })
            })
            .collect();
        let mut outcomes: Vec<Outcome<String>> = Vec::new();
        for task in tasks {
            outcomes.push(
                task.await
                    .unwrap()
                    .unwrap_or_else(|e| panic!("{timing:?}: {e:?}")),
            );
        }
        let executed = outcomes.iter().filter(|o| !o.is_replay()).count();
        assert_eq!(executed, 1, "{timing:?}: one delivery executed");
        let first = &outcomes[0].result;
        assert!(
            outcomes.iter().all(|o| &o.result == first),
            "{timing:?}: every delivery got the same result"
        );
        let found = store
            .scope(t, &ctx())
            .get_contact_by_email(&Email::parse("fifty@example.com").unwrap())
            .await
            .unwrap()
            .expect("the contact");
        assert_eq!(Ok(found.id.to_string()), *first, "{timing:?}");
    }
}

/// The claim bounds its own wait for the key's holder with a
/// transaction-local `lock_timeout`, and restores the setting before the
/// handler's statements run: a handler statement that waits for a row lock
/// longer than the guard's wait still succeeds.
async fn the_claims_lock_timeout_does_not_bound_the_handlers_own_statements(target: Target) {
    let Some(db) = TestStore::on(target).await else {
        return;
    };
    let store = (*db).clone();
    let t = TenantId::new();
    let created = store
        .scope(t, &ctx())
        .create_contact(contact("locked@example.com"))
        .await
        .unwrap();
    for (timing, name) in [
        (ClaimTiming::WithFirstStatement, "Held"),
        (ClaimTiming::BeforeHandler, "Kept"),
    ] {
        // Another transaction holds the contact's row lock until the
        // handler's update has waited for it 300 ms, twice the guard's wait.
        let mut holder = store.begin(t, ctx()).await.unwrap();
        let current = holder.get_contact(created.id).await.unwrap().unwrap();
        holder
            .update_contact(
                created.id,
                current.version,
                ContactPatch {
                    first_name: Some(PersonName::parse(name).unwrap()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let release = {
            let db = db.db();
            async move {
                // Until the handler's update waits (or a minute has gone).
                support::until_a_backend_waits_for_a_lock(db).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                holder.commit().await.unwrap();
            }
        };

        let guard = IdempotencyGuard::with_config(
            GuardConfig::default()
                .with_claim(timing)
                .with_wait(WaitPolicy::Wait(Duration::from_millis(150))),
        );
        let ev = InboundEvent::new("crm", &format!("evt_lock_{timing:?}"), &json!({})).unwrap();
        let id = created.id;
        let context = ctx();
        let run = guard.run(&store, t, &context, &ev, move |tx| {
            Box::pin(async move {
                // Waits for the holder, longer than the guard's wait.
                let c = tx.get_contact(id).await?.expect("the contact");
                let started = std::time::Instant::now();
                let updated = tx
                    .update_contact(
                        id,
                        c.version,
                        ContactPatch {
                            last_name: Some(PersonName::parse("Waited").unwrap()),
                            ..Default::default()
                        },
                    )
                    .await;
                // The version read before the holder committed is stale
                // once the lock is granted: a conflict means the update
                // waited for the lock rather than time out.
                let waited = started.elapsed();
                match updated {
                    Err(Error::Conflict { .. }) => Ok::<_, HandlerError>(waited.as_millis()),
                    other => Err(HandlerError::permanent(format!("{other:?}"))),
                }
            }) as HandlerFuture<'_, u128>
        });
        let (outcome, ()) = tokio::join!(run, release);
        let outcome = outcome.unwrap();
        assert_eq!(outcome.execution, Execution::Executed);
        match outcome.result {
            Ok(waited) => assert!(waited >= 300, "{timing:?}: waited only {waited} ms"),
            Err(e) => panic!("{timing:?}: the handler's update did not wait: {e}"),
        }
    }
}

fn claim_of(key: &str, wait: WaitPolicy) -> IdempotencyClaim {
    let now = chrono::DateTime::from_timestamp_micros(chrono::Utc::now().timestamp_micros())
        .expect("now");
    IdempotencyClaim {
        source: IdempotencySource::parse("stripe").unwrap(),
        key: IdempotencyKey::parse(key).unwrap(),
        fingerprint: Fingerprint::of_json(&json!({"key": key})),
        now,
        expires_at: now + chrono::Duration::hours(1),
        wait,
    }
}

/// A key whose result is stored (and has not expired) is answered without
/// its lock: replays never wait for one another, and a duplicate that may
/// not wait gets the replay even while another transaction that read the
/// record is still open. A key not yet settled still takes the lock. (The
/// claim of a settled key used to take the lock too: the fifty duplicates
/// of a burst replayed one at a time, and under load the last ran out of
/// their wait with `KeyInUse`.)
async fn a_settled_key_is_replayed_without_waiting_for_other_replays(target: Target) {
    let Some(db) = TestStore::on(target).await else {
        return;
    };
    let store = (*db).clone();
    let t = TenantId::new();
    let mut first = store.begin(t, ctx()).await.unwrap();
    let claim = claim_of("settled", WaitPolicy::NoWait);
    assert_eq!(
        first.claim_idempotency_key(&claim).await.unwrap(),
        Claim::Claimed
    );
    let stored = StoredResult::Succeeded(json!({"contact": 7}));
    first
        .complete_idempotency_key_and_commit(&claim.source, &claim.key, &stored, claim.now)
        .await
        .unwrap();

    // Several transactions read the record and stay open; one more, that
    // may not wait, still gets it.
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut tx = store.begin(t, ctx()).await.unwrap();
        let answer = tx
            .claim_idempotency_key(&claim_of("settled", WaitPolicy::NoWait))
            .await
            .unwrap();
        assert!(
            matches!(&answer, Claim::Existing(r) if r.result == Some(stored.clone())),
            "{answer:?}"
        );
        open.push(tx);
    }
    let mut last = store.begin(t, ctx()).await.unwrap();
    let answer = last
        .claim_idempotency_key(&claim_of("settled", WaitPolicy::NoWait))
        .await;
    assert!(
        matches!(&answer, Ok(Claim::Existing(r)) if r.result == Some(stored.clone())),
        "a replay does not wait for the open ones: {answer:?}"
    );
    last.rollback().await.unwrap();
    for tx in open {
        tx.rollback().await.unwrap();
    }

    // A key without a record is claimed under its lock: a second claim
    // meets it.
    let mut holder = store.begin(t, ctx()).await.unwrap();
    assert_eq!(
        holder
            .claim_idempotency_key(&claim_of("unsettled", WaitPolicy::NoWait))
            .await
            .unwrap(),
        Claim::Claimed
    );
    let mut other = store.begin(t, ctx()).await.unwrap();
    let r = other
        .claim_idempotency_key(&claim_of("unsettled", WaitPolicy::NoWait))
        .await;
    assert!(matches!(r, Err(Error::KeyInUse { .. })), "{r:?}");
    other.rollback().await.unwrap();
    holder.rollback().await.unwrap();

    // An expired record is not settled: its claim takes the lock, and a
    // second claim of it meets the first.
    let mut expired = claim_of("expiring", WaitPolicy::NoWait);
    expired.now -= chrono::Duration::hours(2);
    expired.expires_at = expired.now + chrono::Duration::hours(1);
    let mut tx = store.begin(t, ctx()).await.unwrap();
    assert_eq!(
        tx.claim_idempotency_key(&expired).await.unwrap(),
        Claim::Claimed
    );
    tx.complete_idempotency_key_and_commit(&expired.source, &expired.key, &stored, expired.now)
        .await
        .unwrap();
    let mut taker = store.begin(t, ctx()).await.unwrap();
    assert_eq!(
        taker
            .claim_idempotency_key(&claim_of("expiring", WaitPolicy::NoWait))
            .await
            .unwrap(),
        Claim::Claimed,
        "an expired record is taken over"
    );
    let mut other = store.begin(t, ctx()).await.unwrap();
    let r = other
        .claim_idempotency_key(&claim_of("expiring", WaitPolicy::NoWait))
        .await;
    assert!(matches!(r, Err(Error::KeyInUse { .. })), "{r:?}");
    other.rollback().await.unwrap();
    taker.rollback().await.unwrap();
}

/// A claim made while another is deferred is made inside the transaction
/// (the deferred one goes out first, with BEGIN): both keys are held until
/// the transaction ends.
async fn a_second_claim_while_one_is_deferred_holds_its_key_inside_the_transaction(target: Target) {
    let Some(db) = TestStore::on(target).await else {
        return;
    };
    let store = (*db).clone();
    let t = TenantId::new();
    let mut tx = store.begin(t, ctx()).await.unwrap();
    let first = tx
        .defer_idempotency_claim(&claim_of("k1", WaitPolicy::NoWait))
        .await
        .unwrap();
    assert_eq!(first, None, "PostgreSQL defers the first claim");
    let second = tx
        .defer_idempotency_claim(&claim_of("k2", WaitPolicy::NoWait))
        .await
        .unwrap();
    assert_eq!(second, Some(Claim::Claimed), "the second is made at once");
    for key in ["k1", "k2"] {
        let mut other = store.begin(t, ctx()).await.unwrap();
        let r = other
            .claim_idempotency_key(&claim_of(key, WaitPolicy::NoWait))
            .await;
        assert!(
            matches!(r, Err(Error::KeyInUse { .. })),
            "{key} is held by the first transaction: {r:?}"
        );
    }
    assert_eq!(
        tx.resolve_idempotency_claim().await.unwrap(),
        Claim::Claimed
    );
    tx.rollback().await.unwrap();
    let mut other = store.begin(t, ctx()).await.unwrap();
    let r = other
        .claim_idempotency_key(&claim_of("k2", WaitPolicy::NoWait))
        .await
        .unwrap();
    assert_eq!(r, Claim::Claimed, "released by the rollback");
}

/// When a deferred claim finds its key taken, the statement that carried it
/// fails at once, and nothing of the transaction can commit: not by
/// `commit`, not by completing the key.
async fn after_a_deferred_claim_finds_its_key_taken_nothing_of_the_transaction_commits(
    target: Target,
) {
    let Some(db) = TestStore::on(target).await else {
        return;
    };
    let store = (*db).clone();
    let t = TenantId::new();
    let ev = InboundEvent::new("stripe", "evt_taken", &json!({"key": "evt_taken"})).unwrap();
    let first = IdempotencyGuard::new()
        .run(&store, t, &ctx(), &ev, |tx| {
            Box::pin(async move {
                tx.create_contact(contact("first@example.com")).await?;
                Ok::<_, HandlerError>(1_u32)
            }) as HandlerFuture<'_, u32>
        })
        .await
        .unwrap();
    assert_eq!(first.execution, Execution::Executed);
    let taken = claim_of("evt_taken", WaitPolicy::NoWait);

    // The statement carrying the claim fails, later ones are refused, and
    // commit fails.
    let mut tx = store.begin(t, ctx()).await.unwrap();
    assert_eq!(tx.defer_idempotency_claim(&taken).await.unwrap(), None);
    let carried = tx.create_contact(contact("sneaky@example.com")).await;
    let err = carried.expect_err("the call that carried the claim fails");
    match &err {
        Error::Backend { source, .. } => {
            assert!(source.to_string().contains("not claimed"), "{source}")
        }
        other => panic!("expected a backend error naming the key, got {other:?}"),
    }
    assert!(
        tx.get_contact(crm_core::domain::ContactId::new())
            .await
            .is_err()
    );
    assert!(tx.commit().await.is_err(), "commit refuses");

    // Completing the key refuses too.
    let mut tx = store.begin(t, ctx()).await.unwrap();
    assert_eq!(tx.defer_idempotency_claim(&taken).await.unwrap(), None);
    assert!(
        tx.create_contact(contact("sneaky@example.com"))
            .await
            .is_err()
    );
    let completed = tx
        .complete_idempotency_key_and_commit(
            &taken.source,
            &taken.key,
            &StoredResult::Succeeded(json!(2)),
            chrono::Utc::now(),
        )
        .await;
    assert!(completed.is_err(), "{completed:?}");

    // And the claim's outcome is the record that holds the key.
    let mut tx = store.begin(t, ctx()).await.unwrap();
    assert_eq!(tx.defer_idempotency_claim(&taken).await.unwrap(), None);
    assert!(
        tx.create_contact(contact("sneaky@example.com"))
            .await
            .is_err()
    );
    match tx.resolve_idempotency_claim().await.unwrap() {
        Claim::Existing(record) => {
            assert_eq!(record.result, Some(StoredResult::Succeeded(json!(1))))
        }
        other => panic!("expected the existing record, got {other:?}"),
    }
    drop(tx);

    let sneaky = store
        .scope(t, &ctx())
        .get_contact_by_email(&Email::parse("sneaky@example.com").unwrap())
        .await
        .unwrap();
    assert!(
        sneaky.is_none(),
        "nothing of the refused transactions was kept"
    );
}

/// The server's default isolation level does not matter: the store opens
/// its transactions READ COMMITTED, which the claim's read after its lock
/// relies on. Under a REPEATABLE READ default, duplicates from other
/// processes still replay.
async fn duplicates_replay_under_a_repeatable_read_default(target: Target) {
    let Some(owner) = TestStore::on(target).await else {
        return;
    };
    let db = owner.db();
    // The default of the test's database, or on Citus of its role (on
    // every node: Citus passes ALTER ROLE on to the workers).
    let of = if db.is_citus() {
        format!("ROLE {}", db.store_config().get_user().unwrap())
    } else {
        format!("DATABASE {}", db.name())
    };
    db.client()
        .await
        .batch_execute(&format!(
            "ALTER {of} SET default_transaction_isolation = 'repeatable read'"
        ))
        .await
        .unwrap();
    // A store of its own, whose connections start after the change.
    let store = db.store();
    let t = TenantId::new();
    let ev = InboundEvent::new("stripe", "evt_rr", &json!({"id": "rr"})).unwrap();
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (store, ev) = (store.clone(), ev.clone());
            tokio::spawn(async move {
                IdempotencyGuard::new()
                    .run(&store, t, &ctx(), &ev, move |tx| {
                        Box::pin(async move {
                            let c = tx.create_contact(contact("rr@example.com")).await?;
                            tokio::time::sleep(Duration::from_millis(30)).await;
                            Ok::<_, HandlerError>(c.id.to_string())
                        }) as HandlerFuture<'_, String>
                    })
                    .await
            })
        })
        .collect();
    let mut executed = 0;
    for task in tasks {
        let outcome = task.await.unwrap().expect("every delivery succeeds");
        if !outcome.is_replay() {
            executed += 1;
        }
    }
    assert_eq!(executed, 1);
}

/// A record expiring at the last instant stores take (the end of the year
/// 9999, where the guard clamps expiry) is written and read back to the
/// microsecond, by the claim's read too; one beyond it is refused on
/// `expires_at` before anything is sent, and the transaction goes on.
async fn a_record_expiring_at_the_end_of_the_year_9999_is_written_and_read_back_exactly(
    target: Target,
) {
    let Some(db) = TestStore::on(target).await else {
        return;
    };
    let store = (*db).clone();
    let t = TenantId::new();
    let mut claim = claim_of("far", WaitPolicy::NoWait);
    let mut tx = store.begin(t, ctx()).await.unwrap();
    claim.expires_at = chrono::DateTime::<chrono::Utc>::MAX_UTC;
    let refused = tx.claim_idempotency_key(&claim).await.unwrap_err();
    assert_eq!(refused.field_errors()[0].field, "expires_at", "{refused}");
    claim.expires_at = crm_core::domain::latest_timestamp();
    assert_eq!(
        tx.claim_idempotency_key(&claim).await.unwrap(),
        Claim::Claimed
    );
    let stored = tx
        .complete_idempotency_key_and_commit(
            &claim.source,
            &claim.key,
            &StoredResult::Succeeded(json!({"far": true})),
            claim.now,
        )
        .await
        .unwrap();
    assert_eq!(stored.expires_at, claim.expires_at);

    let mut tx = store.begin(t, ctx()).await.unwrap();
    let read = tx
        .get_idempotency_record(&claim.source, &claim.key)
        .await
        .unwrap();
    assert_eq!(read.as_ref(), Some(&stored), "read by the primary key");
    let again = claim_of("far", WaitPolicy::NoWait);
    match tx.claim_idempotency_key(&again).await.unwrap() {
        Claim::Existing(record) => assert_eq!(record, stored, "read by the claim"),
        other => panic!("expected the stored record, got {other:?}"),
    }
}

/// A store over `db` (migrated already) with a pool of its own: one
/// process.
fn process(db: &support::TestDb) -> crm_core::PostgresStore {
    db.store()
}

/// Deliveries of one event from several processes at once (several stores,
/// one guard each, so they meet only at the claim), whose handler fails
/// permanently: every one that waits long enough gets the stored failure,
/// executed by one and replayed to the others — never `KeyInUse`, also
/// when its own handler ran and failed while another stored the failure.
async fn concurrent_deliveries_of_a_permanently_failing_event_all_get_the_stored_failure(
    target: Target,
) {
    const PROCESSES: usize = 4;
    const DELIVERIES: usize = 24;
    let Some(owner) = TestStore::on(target).await else {
        return;
    };
    let stores: Vec<_> = (0..PROCESSES).map(|_| process(owner.db())).collect();
    for timing in [ClaimTiming::WithFirstStatement, ClaimTiming::BeforeHandler] {
        for round in 0..4 {
            let t = TenantId::new();
            let ev =
                InboundEvent::new("billing", &format!("evt_bad_{round}"), &json!({"n": round}))
                    .unwrap();
            let tasks: Vec<_> = (0..DELIVERIES)
                .map(|i| {
                    let (store, ev) = (stores[i % PROCESSES].clone(), ev.clone());
                    let guard = IdempotencyGuard::with_config(
                        GuardConfig::default()
                            .with_claim(timing)
                            // Long enough for every delivery's turn, even on a
                            // loaded machine: no wait runs out here.
                            .with_wait(WaitPolicy::Wait(Duration::from_secs(60))),
                    );
                    tokio::spawn(async move {
                        guard
                            .run(&store, t, &ctx(), &ev, move |tx| {
                                Box::pin(async move {
                                    tx.create_contact(contact(&format!("bad{i}@example.com")))
                                        .await?;
                                    tokio::time::sleep(Duration::from_millis(5)).await;
                                    Err::<u32, _>(HandlerError::permanent(
                                        json!({"error": "no such plan"}),
                                    ))
                                }) as HandlerFuture<'_, u32>
                            })
                            .await
                    })
                })
                .collect();
            let mut executed = 0;
            for task in tasks {
                let outcome = task
                    .await
                    .unwrap()
                    .unwrap_or_else(|e| panic!("{timing:?} round {round}: {e:?}"));
                assert_eq!(
                    outcome.result,
                    Err(json!({"error": "no such plan"})),
                    "{timing:?} round {round}: the stored failure"
                );
                if !outcome.is_replay() {
                    executed += 1;
                }
            }
            assert_eq!(executed, 1, "{timing:?} round {round}: one stored it");
            let record = IdempotencyGuard::new()
                .lookup(&stores[0], t, &ctx(), ev.source(), ev.key())
                .await
                .unwrap()
                .expect("the record");
            assert_eq!(
                record.result,
                Some(StoredResult::Failed(json!({"error": "no such plan"})))
            );
            let search = stores[0]
                .scope(t, &ctx())
                .search_contacts(&crm_core::ContactQuery::new())
                .await
                .unwrap();
            assert!(search.items.is_empty(), "no handler's writes were kept");
        }
    }
}

/// When `run` returns — with a replay, a fingerprint mismatch, or by the
/// handler's panic — the delivery holds nothing any more: a duplicate
/// that may not wait, sent at once from another process (another store),
/// is never refused with `KeyInUse` because of it. Several such pairs run
/// at once, under both claim timings.
async fn a_no_wait_delivery_right_after_a_replay_or_a_panic_is_never_refused_because_of_it(
    target: Target,
) {
    use futures_util::FutureExt;
    const PAIRS: usize = 4;
    const ROUNDS: usize = 40;
    let Some(owner) = TestStore::on(target).await else {
        return;
    };
    let (first, second) = (process(owner.db()), process(owner.db()));
    let t = TenantId::new();
    let make = |i: usize| {
        handler(move |tx| {
            Box::pin(async move {
                let c = tx
                    .create_contact(contact(&format!("k{i}@example.com")))
                    .await?;
                Ok::<_, HandlerError>(c.id.to_string())
            }) as HandlerFuture<'_, String>
        })
    };
    let pairs: Vec<_> = (0..PAIRS)
        .map(|pair| {
            let (first, second) = (first.clone(), second.clone());
            tokio::spawn(async move {
                let mut refused = Vec::new();
                for round in 0..ROUNDS {
                    let n = pair * ROUNDS + round;
                    let timing = if n.is_multiple_of(2) {
                        ClaimTiming::WithFirstStatement
                    } else {
                        ClaimTiming::BeforeHandler
                    };
                    let guard =
                        IdempotencyGuard::with_config(GuardConfig::default().with_claim(timing));
                    let other = IdempotencyGuard::new().with_wait(WaitPolicy::NoWait);
                    let ev =
                        InboundEvent::new("crm", &format!("evt_{n}"), &json!({"n": n})).unwrap();
                    let done = guard.run(&first, t, &ctx(), &ev, make(n)).await.unwrap();
                    assert_eq!(done.execution, Execution::Executed);

                    // A replay, then at once a duplicate from elsewhere.
                    let replay = guard.run(&first, t, &ctx(), &ev, make(n)).await.unwrap();
                    assert_eq!(replay.execution, Execution::Replayed);
                    match other.run(&second, t, &ctx(), &ev, make(n)).await {
                        Ok(o) => assert_eq!(o.result, done.result),
                        Err(e) => refused.push(format!("after a replay ({timing:?}): {e:?}")),
                    }

                    // A fingerprint mismatch, then the same.
                    let forged =
                        InboundEvent::new("crm", &format!("evt_{n}"), &json!({"n": -1})).unwrap();
                    let mismatch = guard.run(&first, t, &ctx(), &forged, make(n)).await;
                    assert!(
                        matches!(mismatch, Err(Error::FingerprintMismatch { .. })),
                        "{mismatch:?}"
                    );
                    match other.run(&second, t, &ctx(), &ev, make(n)).await {
                        Ok(o) => assert_eq!(o.result, done.result),
                        Err(e) => refused.push(format!("after a mismatch ({timing:?}): {e:?}")),
                    }

                    // A handler that panics after its first write, then a
                    // retry from elsewhere, which runs it.
                    let fresh =
                        InboundEvent::new("crm", &format!("evt_p{n}"), &json!({"n": n})).unwrap();
                    let panicked =
                        std::panic::AssertUnwindSafe(guard.run(&first, t, &ctx(), &fresh, |tx| {
                            Box::pin(async move {
                                tx.create_contact(contact(&format!("p{n}@example.com")))
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
                    match other
                        .run(&second, t, &ctx(), &fresh, make(n + 100_000))
                        .await
                    {
                        Ok(o) => assert_eq!(o.execution, Execution::Executed),
                        Err(e) => refused.push(format!("after a panic ({timing:?}): {e:?}")),
                    }
                }
                refused
            })
        })
        .collect();
    let mut refused = Vec::new();
    for pair in pairs {
        refused.extend(pair.await.unwrap());
    }
    eprintln!(
        "{} of {} no-wait deliveries refused",
        refused.len(),
        3 * PAIRS * ROUNDS
    );
    assert!(refused.is_empty(), "refused: {refused:#?}");
}

/// The statement a deferred claim was to go with fails while it is
/// prepared (after `BEGIN`, as its names are looked up in the store's
/// schema): the claim is never made, the transaction only rolls back, and
/// the connection serves the next transaction as if nothing happened.
async fn a_deferred_claim_whose_statement_cannot_be_prepared_is_never_made(target: Target) {
    let Some(db) = TestStore::on(target).await else {
        return;
    };
    // One connection, so that the next transaction gets the same one.
    let store = db
        .db()
        .store_with(1, crm_core::conformance::test_pipelines());
    let t = TenantId::new();
    db.db()
        .ddl(&["ALTER TABLE crm.contacts RENAME TO contacts_moved"])
        .await;
    let claim = claim_of("evt_unprepared", WaitPolicy::NoWait);
    let mut tx = store.begin(t, ctx()).await.unwrap();
    assert_eq!(tx.defer_idempotency_claim(&claim).await.unwrap(), None);
    let err = tx
        .get_contact(crm_core::domain::ContactId::new())
        .await
        .expect_err("the statement cannot be prepared");
    assert!(err.to_string().contains("contacts"), "{err}");
    let outcome = tx.resolve_idempotency_claim().await;
    assert!(
        matches!(&outcome, Err(e) if e.is_retryable()),
        "the claim was not sent: {outcome:?}"
    );
    assert!(tx.commit().await.is_err(), "commit refuses");
    db.db()
        .ddl(&["ALTER TABLE crm.contacts_moved RENAME TO contacts"])
        .await;

    // The same connection, clean: the key is free and the claim succeeds.
    let mut tx = store.begin(t, ctx()).await.unwrap();
    assert_eq!(tx.defer_idempotency_claim(&claim).await.unwrap(), None);
    tx.create_contact(contact("after@example.com"))
        .await
        .unwrap();
    assert!(matches!(
        tx.resolve_idempotency_claim().await,
        Ok(Claim::Claimed)
    ));
    tx.complete_idempotency_key_and_commit(
        &claim.source,
        &claim.key,
        &StoredResult::Succeeded(json!(1)),
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    let mut tx = store.begin(t, ctx()).await.unwrap();
    let record = tx
        .get_idempotency_record(&claim.source, &claim.key)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert!(record.is_some(), "the record was stored");
    drop(store);
}

/// Storing the record fails (here a trigger refuses it): the `COMMIT` sent
/// with it ends the transaction with a rollback, the error is the
/// insert's, nothing of the handler is kept, and the connection serves the
/// next transaction.
async fn a_record_that_fails_to_store_rolls_the_transaction_back_and_the_connection_goes_on(
    target: Target,
) {
    let Some(db) = TestStore::on(target).await else {
        return;
    };
    let store = db
        .db()
        .store_with(1, crm_core::conformance::test_pipelines());
    let t = TenantId::new();
    // The function in the test's schema, so that tests sharing a Citus
    // database do not meet.
    db.db()
        .ddl(&[
            "CREATE FUNCTION crm.refuse_record() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION 'record refused'; END $$",
            "CREATE TRIGGER refuse_record BEFORE INSERT ON crm.idempotency_keys
                 FOR EACH ROW EXECUTE FUNCTION crm.refuse_record()",
        ])
        .await;
    let claim = claim_of("evt_refused", WaitPolicy::NoWait);
    let mut tx = store.begin(t, ctx()).await.unwrap();
    assert_eq!(tx.defer_idempotency_claim(&claim).await.unwrap(), None);
    tx.create_contact(contact("handled@example.com"))
        .await
        .unwrap();
    assert!(matches!(
        tx.resolve_idempotency_claim().await,
        Ok(Claim::Claimed)
    ));
    let stored = tx
        .complete_idempotency_key_and_commit(
            &claim.source,
            &claim.key,
            &StoredResult::Succeeded(json!({"it's": "quoted \\ fine"})),
            chrono::Utc::now(),
        )
        .await;
    let err = stored.expect_err("the record was refused");
    assert!(err.to_string().contains("record refused"), "{err}");
    db.db()
        .ddl(&["DROP TRIGGER refuse_record ON crm.idempotency_keys"])
        .await;

    let email = Email::parse("handled@example.com").unwrap();
    let kept = store
        .scope(t, &ctx())
        .get_contact_by_email(&email)
        .await
        .unwrap();
    assert!(kept.is_none(), "nothing of the handler was committed");
    // The key is free again, and a result with quotes and backslashes is
    // stored as given.
    let mut tx = store.begin(t, ctx()).await.unwrap();
    assert_eq!(tx.defer_idempotency_claim(&claim).await.unwrap(), None);
    assert!(matches!(
        tx.resolve_idempotency_claim().await,
        Ok(Claim::Claimed)
    ));
    let result = json!({"it's": "quoted \\ fine", "$$": "E'x'"});
    tx.complete_idempotency_key_and_commit(
        &claim.source,
        &claim.key,
        &StoredResult::Succeeded(result.clone()),
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    let mut tx = store.begin(t, ctx()).await.unwrap();
    let record = tx
        .get_idempotency_record(&claim.source, &claim.key)
        .await
        .unwrap()
        .expect("the record");
    tx.rollback().await.unwrap();
    assert_eq!(record.result, Some(StoredResult::Succeeded(result)));
    drop(store);
}

crate::on_every_target!(
    a_connection_killed_mid_handler_leaves_no_key_and_no_rows_and_the_retry_succeeds,
    a_duplicate_from_another_process_waits_on_the_claim_or_gets_key_in_use,
    fifty_processes_receiving_one_event_create_one_contact_under_either_claim_timing(
        worker_threads = 4
    ),
    the_claims_lock_timeout_does_not_bound_the_handlers_own_statements,
    a_second_claim_while_one_is_deferred_holds_its_key_inside_the_transaction,
    a_settled_key_is_replayed_without_waiting_for_other_replays,
    after_a_deferred_claim_finds_its_key_taken_nothing_of_the_transaction_commits,
    duplicates_replay_under_a_repeatable_read_default(worker_threads = 4),
    a_record_expiring_at_the_end_of_the_year_9999_is_written_and_read_back_exactly,
    concurrent_deliveries_of_a_permanently_failing_event_all_get_the_stored_failure(
        worker_threads = 4
    ),
    a_no_wait_delivery_right_after_a_replay_or_a_panic_is_never_refused_because_of_it(
        worker_threads = 4
    ),
    a_deferred_claim_whose_statement_cannot_be_prepared_is_never_made,
    a_record_that_fails_to_store_rolls_the_transaction_back_and_the_connection_goes_on,
);
