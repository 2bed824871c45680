#![cfg(all(feature = "postgres", feature = "conformance"))]
//! The change feed under concurrent writers, on PostgreSQL and on the Citus
//! cluster: 16 writers × 500 transactions with random pauses between their
//! writes and their commits (some held open for a second or more, some
//! rolled back), and 3 consumers reading at the same time. Every consumer
//! must receive every committed event exactly once, each record's changes
//! in commit order (its versions in order, none missing), and no event of
//! a rolled-back transaction.
//!
//! `CRM_FEED_WRITERS` and `CRM_FEED_TRANSACTIONS` change the load: 16
//! writers; 500 transactions each on PostgreSQL, whose commits are not
//! flushed here (`synchronous_commit = off`: the order of positions does
//! not depend on the flush), and 100 on Citus, where every commit is a
//! two-phase commit.

mod support;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use crm_core::{
    Actor, Context, Error, Store, StoreExt, TenantId,
    domain::{
        ActivityKind, ConsumerName, ContactId, ContactPatch, FeedEvent, FeedKind, FeedPosition,
        JobTitle, NewActivity, NewContact,
    },
    history::Operation,
};
use support::{Target, TestStore};
use tokio::sync::Mutex;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ctx() -> Context {
    Context::new(Actor::parse("user:feed-test").unwrap())
}

fn contact(address: String) -> NewContact {
    NewContact::new(
        crm_core::domain::Email::parse(&address).unwrap(),
        crm_core::domain::PersonName::parse("Feed").unwrap(),
        crm_core::domain::PersonName::parse("Writer").unwrap(),
    )
}

/// What the writers committed and rolled back.
#[derive(Default)]
struct Ledger {
    /// Activities of committed transactions.
    committed: HashSet<uuid::Uuid>,
    /// Activities of rolled-back transactions.
    rolled_back: HashSet<uuid::Uuid>,
    /// Per shared contact, the versions its committed updates made.
    versions: BTreeMap<uuid::Uuid, Vec<i64>>,
}

async fn run(target: Target) {
    let Some(ts) = TestStore::on(target).await else {
        return;
    };
    let writers = setting("CRM_FEED_WRITERS", 16);
    // On Citus every commit is a two-phase commit, and a tenant's commits
    // take their positions one at a time: 100 transactions per writer keep
    // the run in CI's time.
    let default = if target == Target::Citus { 100 } else { 500 };
    let transactions = setting("CRM_FEED_TRANSACTIONS", default);
    let mut config = ts.db().store_config();
    if target == Target::Plain {
        // The order of positions does not depend on the commit's flush,
        // which would only make the run slower (a tenant's commits take
        // their positions one at a time).
        config.options("-c synchronous_commit=off");
    }
    let store = Arc::new(
        crm_core::PostgresStore::from_pool(
            support::pool_for(config, writers + 8),
            crm_core::conformance::test_pipelines(),
        )
        .with_schema(ts.db().schema())
        .unwrap(),
    );
    let tenant = TenantId::new();
    let crm = store.scope(tenant, &ctx());
    // Contacts every writer updates (their row locks make writers wait for
    // each other), and one private contact per writer, on which each
    // transaction logs an activity first: it has begun writing (and holds
    // an xid) before it waits for a shared contact, so that the order in
    // which transactions began writing differs from the order in which
    // they commit.
    let mut shared = Vec::new();
    for i in 0..8 {
        shared.push(
            crm.create_contact(contact(format!("shared{i}@example.com")))
                .await
                .unwrap(),
        );
    }
    let mut own = Vec::new();
    for w in 0..writers {
        own.push(
            crm.create_contact(contact(format!("own{w}@example.com")))
                .await
                .unwrap(),
        );
    }
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    {
        let mut l = ledger.lock().await;
        for c in shared.iter().chain(&own) {
            l.versions.insert(c.id.as_uuid(), vec![1]);
        }
    }
    let started = Instant::now();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));

    let consumers: Vec<_> = (0..3)
        .map(|n| {
            let store = Arc::clone(&store);
            let done = Arc::clone(&done);
            tokio::spawn(async move {
                let name = ConsumerName::parse(&format!("consumer-{n}")).unwrap();
                let mut seen: Vec<FeedEvent> = Vec::new();
                let mut idle_after_done = 0;
                loop {
                    let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                    let mut tx = store.begin(tenant, ctx()).await.unwrap();
                    let batch = tx.next_batch(&name, 100 + 100 * n).await.unwrap();
                    if let Some(last) = batch.last() {
                        tx.ack(&name, last.position).await.unwrap();
                    }
                    tx.commit().await.unwrap();
                    if batch.is_empty() {
                        if finished {
                            idle_after_done += 1;
                            if idle_after_done > 1 {
                                return seen;
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    } else {
                        seen.extend(batch);
                    }
                }
            })
        })
        .collect();

    let writer_tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = Arc::clone(&store);
            let ledger = Arc::clone(&ledger);
            let shared: Vec<ContactId> = shared.iter().map(|c| c.id).collect();
            let own = own[w].id;
            tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(w as u64 * 7919 + 1);
                for i in 0..transactions {
                    let mut tx = store.begin(tenant, ctx()).await.unwrap();
                    let activity = tx
                        .log_activity(NewActivity::new(own, ActivityKind::Note))
                        .await
                        .unwrap();
                    // Mostly a shared contact; a transaction held open for
                    // a second or more updates its writer's own contact, so
                    // that it holds the readers back (its position comes
                    // after everything committed meanwhile) without making
                    // the other writers wait for its row lock.
                    let long = rng.u32(..1000) < 3;
                    let target = if long {
                        own
                    } else {
                        shared[rng.usize(..shared.len())]
                    };
                    // Read, then update: when another writer committed in
                    // between (this one waited for its row lock), read
                    // again and write the next version after it.
                    let mut updated;
                    loop {
                        let current = tx.get_contact(target).await.unwrap().unwrap();
                        let patch = ContactPatch {
                            title: Some(Some(JobTitle::parse(&format!("w{w} t{i}")).unwrap())),
                            ..ContactPatch::default()
                        };
                        updated = tx.update_contact(target, current.version, patch).await;
                        if !matches!(updated, Err(Error::Conflict { .. })) {
                            break;
                        }
                    }
                    // A pause between the writes and the commit.
                    let pause = if long {
                        Duration::from_millis(1000 + rng.u64(..1000))
                    } else {
                        Duration::from_micros(rng.u64(..2000))
                    };
                    tokio::time::sleep(pause).await;
                    let rollback = rng.u32(..10) == 0;
                    match updated {
                        Ok(u) if !rollback => match tx.commit().await {
                            Ok(()) => {
                                let mut l = ledger.lock().await;
                                l.committed.insert(activity.id.as_uuid());
                                l.versions
                                    .get_mut(&target.as_uuid())
                                    .unwrap()
                                    .push(u.version.get());
                            }
                            Err(e) => panic!("commit failed: {e:?}"),
                        },
                        other => {
                            if let Err(e) = &other {
                                assert!(e.is_retryable(), "an update failed: {e:?}");
                            }
                            if rng.bool() {
                                tx.rollback().await.unwrap();
                            } else {
                                drop(tx);
                            }
                            ledger
                                .lock()
                                .await
                                .rolled_back
                                .insert(activity.id.as_uuid());
                        }
                    }
                }
            })
        })
        .collect();
    for w in writer_tasks {
        w.await.unwrap();
    }
    let written = started.elapsed();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut all = Vec::new();
    for c in consumers {
        all.push(c.await.unwrap());
    }
    eprintln!(
        "{target:?}: {writers} writers x {transactions} transactions in {written:?}, \
         read by 3 consumers in {:?}",
        started.elapsed()
    );

    let ledger = ledger.lock().await;
    let creates = shared.len() + own.len();
    for (n, events) in all.iter().enumerate() {
        // Exactly once, in position order, numbered with no gap.
        for w in events.windows(2) {
            assert!(
                w[0].position < w[1].position,
                "consumer {n}: positions increase ({} then {})",
                w[0].position,
                w[1].position
            );
            assert!(
                w[1].position.commit <= w[0].position.commit + 1,
                "consumer {n}: no commit is skipped ({} then {})",
                w[0].position,
                w[1].position
            );
        }
        let activities: Vec<uuid::Uuid> = events
            .iter()
            .filter(|e| e.kind == FeedKind::Activity)
            .map(|e| e.id)
            .collect();
        let unique: HashSet<uuid::Uuid> = activities.iter().copied().collect();
        assert_eq!(
            unique.len(),
            activities.len(),
            "consumer {n}: no event twice"
        );
        assert!(
            unique.is_disjoint(&ledger.rolled_back),
            "consumer {n}: no event of a rolled-back transaction"
        );
        assert_eq!(
            unique, ledger.committed,
            "consumer {n}: every committed activity, once"
        );
        // Each shared contact's versions: all of them, in commit order.
        let mut versions: HashMap<uuid::Uuid, Vec<i64>> = HashMap::new();
        for e in events.iter().filter(|e| e.kind == FeedKind::Contact) {
            versions.entry(e.id).or_default().push(e.version.unwrap());
        }
        for (id, expected) in &ledger.versions {
            let mut sorted = expected.clone();
            sorted.sort_unstable();
            assert_eq!(
                versions.get(id),
                Some(&sorted),
                "consumer {n}: contact {id}'s versions, each once and in commit order"
            );
        }
        let contact_events = events
            .iter()
            .filter(|e| e.kind == FeedKind::Contact)
            .count();
        assert_eq!(
            contact_events,
            creates + ledger.committed.len(),
            "consumer {n}: one contact event per create and per committed update"
        );
        assert!(events.iter().all(|e| e.operation != Operation::Deleted));
    }
    let head = {
        let mut tx = store.begin(tenant, ctx()).await.unwrap();
        let h = tx.feed_head().await.unwrap();
        tx.commit().await.unwrap();
        h
    };
    assert_eq!(
        all[0].last().map(|e| e.position),
        Some(head),
        "the consumers read up to the head"
    );
    assert_eq!(
        head.commit,
        (creates + ledger.committed.len()) as i64,
        "one commit number per committed transaction, no gap"
    );
    let _ = FeedPosition::START;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_and_consumers_never_skip_or_repeat_an_event() {
    run(Target::Plain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_and_consumers_never_skip_or_repeat_an_event_on_citus() {
    run(Target::Citus).await;
}
