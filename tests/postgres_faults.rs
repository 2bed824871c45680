#![cfg(all(feature = "postgres", feature = "conformance"))]
//! `PostgresStore` under concurrency and faults: racing creates of one
//! email, racing updates of one version, a transaction dropped half-way,
//! one whose server connection is killed half-way, and the server
//! processes of writers on several stores killed round after round.
//!
//! Each test has a database of its own. The tests of this file take turns
//! (one lock), so that the connections they open at once stay well below
//! the server's `max_connections`, and so that a test that looks for "the
//! session idle in a transaction" in its database finds only its own.

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use crm_core::{
    Actor, Context, Error, ErrorKind, PostgresStore, Store, StoreExt, TenantId, Version,
    conformance,
    domain::{
        ActivityKind, ContactId, ContactPatch, Currency, DealTitle, Email, Money, NewActivity,
        NewContact, NewDeal, PersonName,
    },
    idempotency::{HandlerError, HandlerFuture, IdempotencyGuard, InboundEvent},
};
use support::TestDb;
use tokio::sync::{Barrier, Mutex};
use tokio_postgres::Client;

/// The tests of this file run one at a time.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// How long a test waits for the server to reach a state it polls for.
const POLL_LIMIT: Duration = Duration::from_secs(20);

fn ctx() -> Context {
    Context::new(Actor::parse("user:faults").unwrap())
}

fn new_contact(email: &str) -> NewContact {
    NewContact::new(
        Email::parse(email).unwrap(),
        PersonName::parse("Ada").unwrap(),
        PersonName::parse("Lovelace").unwrap(),
    )
}

/// `s` with its ASCII letters upper-cased where the bits of `mask` say.
fn casing(s: &str, mask: u64) -> String {
    let mut bit = 0;
    s.chars()
        .map(|c| {
            if c.is_ascii_alphabetic() {
                bit += 1;
                if mask >> (bit - 1) & 1 == 1 {
                    return c.to_ascii_uppercase();
                }
            }
            c
        })
        .collect()
}

/// A migrated store over a fresh database with a pool of `size` connections.
async fn store_with_pool(db: &TestDb, size: usize) -> PostgresStore {
    let store = PostgresStore::from_pool(db.pool(size), conformance::test_pipelines());
    store.migrate().await.unwrap();
    store
}

async fn count(client: &Client, table: &str, tenant: TenantId) -> i64 {
    client
        .query_one(
            &format!("SELECT count(*) FROM crm.{table} WHERE tenant_id = $1"),
            &[&tenant.as_uuid()],
        )
        .await
        .unwrap()
        .get(0)
}

/// The server processes of `db` that sit idle inside a transaction.
async fn idle_in_transaction(client: &Client, db: &TestDb) -> Vec<i32> {
    client
        .query(
            "SELECT pid FROM pg_stat_activity
             WHERE datname = $1 AND state = 'idle in transaction' AND pid <> pg_backend_pid()",
            &[&db.name()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Polls `check` every 20 ms until it holds, failing after [`POLL_LIMIT`].
async fn eventually<F>(what: &str, mut check: F)
where
    F: AsyncFnMut() -> bool,
{
    let deadline = tokio::time::Instant::now() + POLL_LIMIT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {POLL_LIMIT:?} in vain for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_racing_creates_of_one_email_in_fifty_casings_make_one_contact_and_49_duplicates() {
    let _turn = SERIAL.lock().await;
    const RACERS: usize = 50;
    let db = TestDb::create().await;
    // One connection per racer: all fifty transactions are open at once.
    let store = Arc::new(store_with_pool(&db, RACERS).await);
    let tenant = TenantId::new();
    let barrier = Arc::new(Barrier::new(RACERS));

    let mut tasks = Vec::new();
    for i in 0..RACERS {
        let (store, barrier) = (Arc::clone(&store), Arc::clone(&barrier));
        // Fifty distinct casings of one address.
        let email = casing("race.condition@example.com", i as u64 * 0x0002_4925 + 1);
        tasks.push(tokio::spawn(async move {
            // Every racer reaches the barrier, also one whose begin failed
            // (the server out of connections): it then reports its error
            // instead of leaving the others waiting for it for ever.
            let tx = store.begin(tenant, ctx()).await;
            barrier.wait().await;
            let mut tx = tx?;
            let contact = tx.create_contact(new_contact(&email)).await?;
            tx.commit().await?;
            Ok::<_, Error>(contact)
        }));
    }
    let mut created = Vec::new();
    let mut duplicates = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(c) => created.push(c),
            Err(Error::DuplicateEmail { existing_id, .. }) => duplicates.push(existing_id),
            Err(e) => panic!("a racing create failed otherwise: {e:?}"),
        }
    }
    let emails: std::collections::HashSet<String> = (0..RACERS)
        .map(|i| casing("race.condition@example.com", i as u64 * 0x0002_4925 + 1))
        .collect();
    assert_eq!(emails.len(), RACERS, "the casings are all different");

    assert_eq!(created.len(), 1, "exactly one create wins");
    assert_eq!(duplicates.len(), RACERS - 1);
    let winner = created[0].id;
    assert!(
        duplicates.iter().all(|id| *id == winner),
        "every duplicate names the winner {winner}: {duplicates:?}"
    );

    let sql = db.client().await;
    assert_eq!(count(&sql, "contacts", tenant).await, 1);
    let stored: uuid::Uuid = sql
        .query_one(
            "SELECT id FROM crm.contacts WHERE tenant_id = $1 AND email_key = $2",
            &[&tenant.as_uuid(), &"race.condition@example.com"],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, winner.as_uuid());
    drop((store, sql));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_racing_updates_of_one_version_let_exactly_one_through() {
    let _turn = SERIAL.lock().await;
    const RACERS: usize = 20;
    let db = TestDb::create().await;
    let store = Arc::new(store_with_pool(&db, RACERS).await);
    let tenant = TenantId::new();
    let contact = store
        .scope(tenant, &ctx())
        .create_contact(new_contact("ada@example.com"))
        .await
        .unwrap();
    let barrier = Arc::new(Barrier::new(RACERS));

    let mut tasks = Vec::new();
    for i in 0..RACERS {
        let (store, barrier) = (Arc::clone(&store), Arc::clone(&barrier));
        let name = format!("Racer{i:02}");
        tasks.push(tokio::spawn(async move {
            // Every racer reaches the barrier, also one whose begin failed
            // (the server out of connections): it then reports its error
            // instead of leaving the others waiting for it for ever.
            let tx = store.begin(tenant, ctx()).await;
            barrier.wait().await;
            let mut tx = tx?;
            let patch = ContactPatch {
                first_name: Some(PersonName::parse(&name).unwrap()),
                ..ContactPatch::default()
            };
            let updated = tx.update_contact(contact.id, Version::FIRST, patch).await?;
            tx.commit().await?;
            Ok::<_, Error>(updated)
        }));
    }
    let mut won = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(c) => won.push(c),
            Err(Error::Conflict {
                expected, actual, ..
            }) => assert_eq!(
                (expected, actual),
                (1, 2),
                "a loser sees the winner's version"
            ),
            Err(e) => panic!("a racing update failed otherwise: {e:?}"),
        }
    }
    assert_eq!(won.len(), 1, "exactly one update wins: {won:?}");
    assert_eq!(won[0].version, Version::new(2));

    let stored = store
        .scope(tenant, &ctx())
        .get_contact(contact.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.version,
        Version::new(2),
        "no update was lost or doubled"
    );
    assert_eq!(
        stored.first_name, won[0].first_name,
        "the winner's change is kept"
    );
    let sql = db.client().await;
    let version: i64 = sql
        .query_one(
            "SELECT version FROM crm.contacts WHERE tenant_id = $1 AND id = $2",
            &[&tenant.as_uuid(), &contact.id.as_uuid()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, 2);
    drop((store, sql));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_dropped_half_way_leaves_no_rows_and_releases_what_it_held() {
    let _turn = SERIAL.lock().await;
    let db = TestDb::create().await;
    let store = store_with_pool(&db, 4).await;
    let sql = db.client().await;
    let tenant = TenantId::new();

    {
        let mut tx = store.begin(tenant, ctx()).await.unwrap();
        let contact = tx
            .create_contact(new_contact("dropped@example.com"))
            .await
            .unwrap();
        let deal = tx
            .create_deal(NewDeal::new(
                contact.id,
                DealTitle::parse("Pilot").unwrap(),
                Money::parse("1200", Currency::parse("EUR").unwrap()).unwrap(),
            ))
            .await
            .unwrap();
        for kind in [ActivityKind::Call, ActivityKind::Note] {
            tx.log_activity(NewActivity::new(contact.id, kind).deal(deal.id))
                .await
                .unwrap();
        }
        assert_eq!(
            idle_in_transaction(&sql, &db).await.len(),
            1,
            "the transaction is open on the server"
        );
        // Dropped here, without commit or rollback.
    }

    // The rollback is sent from a spawned task: wait for it.
    eventually("the dropped transaction is rolled back", async || {
        idle_in_transaction(&sql, &db).await.is_empty()
    })
    .await;
    for table in ["contacts", "deals", "activities"] {
        assert_eq!(count(&sql, table, tenant).await, 0, "no rows in {table}");
    }
    // Nothing holds the email any more: creating it again neither waits
    // nor clashes.
    let again = tokio::time::timeout(
        Duration::from_secs(10),
        store
            .scope(tenant, &ctx())
            .create_contact(new_contact("DROPPED@example.com")),
    )
    .await
    .expect("the email is not held by the dropped transaction");
    assert!(again.is_ok(), "{again:?}");
    assert_eq!(count(&sql, "contacts", tenant).await, 1);
    drop((store, sql));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_whose_connection_is_killed_fails_retryably_and_the_store_carries_on() {
    let _turn = SERIAL.lock().await;
    let db = TestDb::create().await;
    // One connection: the store can only carry on if the pool replaces the
    // killed one.
    let store = store_with_pool(&db, 1).await;
    let sql = db.client().await;
    let tenant = TenantId::new();

    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    let contact = tx
        .create_contact(new_contact("killed@example.com"))
        .await
        .unwrap();

    // The transaction's server process: the one idle in a transaction in
    // this test's own database.
    let mut pids = Vec::new();
    eventually("the transaction shows as idle in transaction", async || {
        pids = idle_in_transaction(&sql, &db).await;
        pids.len() == 1
    })
    .await;
    let pid = pids[0];
    let killed: bool = sql
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap()
        .get(0);
    assert!(killed, "pg_terminate_backend({pid}) succeeded");
    eventually("the killed process is gone", async || {
        sql.query("SELECT 1 FROM pg_stat_activity WHERE pid = $1", &[&pid])
            .await
            .unwrap()
            .is_empty()
    })
    .await;

    let next = tx
        .create_deal(NewDeal::new(
            contact.id,
            DealTitle::parse("Pilot").unwrap(),
            Money::parse("10", Currency::parse("EUR").unwrap()).unwrap(),
        ))
        .await;
    let err = next.expect_err("an operation on a killed connection fails");
    assert_eq!(err.kind(), ErrorKind::Backend, "{err:?}");
    assert!(
        err.is_retryable(),
        "a lost connection is retryable: {err:?}"
    );
    let mut source = std::error::Error::source(&err);
    let mut reaches_driver = false;
    while let Some(s) = source {
        reaches_driver |= s.downcast_ref::<tokio_postgres::Error>().is_some();
        source = s.source();
    }
    assert!(
        reaches_driver,
        "the driver's error is kept as the source: {err:?}"
    );
    let commit = tx.commit().await;
    assert!(
        matches!(&commit, Err(e) if e.kind() == ErrorKind::Backend),
        "the commit of a killed transaction fails: {commit:?}"
    );

    for table in ["contacts", "deals"] {
        assert_eq!(count(&sql, table, tenant).await, 0, "no rows in {table}");
    }

    // The pool dropped the dead connection and opens a new one.
    let again = store
        .scope(tenant, &ctx())
        .create_contact(new_contact("killed@example.com"))
        .await;
    assert!(again.is_ok(), "the store carries on: {again:?}");
    assert_eq!(count(&sql, "contacts", tenant).await, 1);
    drop((store, sql));
}

/// What the writers of the kill test did: operations ended and failed,
/// and the writes acknowledged to them.
#[derive(Debug, Default)]
struct Tally {
    ended: AtomicUsize,
    failed: AtomicUsize,
    /// Failures that a lost connection should not give (not retryable).
    odd_errors: std::sync::Mutex<Vec<String>>,
    /// Contacts and activities whose commit returned `Ok`.
    contacts: std::sync::Mutex<Vec<uuid::Uuid>>,
    activities: std::sync::Mutex<Vec<uuid::Uuid>>,
    /// Events acknowledged as executed, with the contact their handler made.
    events: std::sync::Mutex<Vec<(String, uuid::Uuid)>>,
}

/// One writer's operations until `stop`, in turn: a transaction that
/// creates a contact and logs an activity for it; a read of a contact it
/// wrote (a transaction ended by a drop); and a guarded event whose
/// handler does what the transaction does. Each is one operation, failed
/// or not. While something holds the activities table locked, a writer's
/// activity waits: the operation is in flight.
async fn write_until(
    store: PostgresStore,
    tenant: TenantId,
    writer: usize,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
) {
    let guard = IdempotencyGuard::new();
    let mut mine: Option<ContactId> = None;
    let mut i = 0usize;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        let email = format!("w{writer}-{i}@example.com");
        let result: Result<(), Error> = match i % 3 {
            1 if mine.is_some() => store
                .scope(tenant, &ctx())
                .get_contact(mine.expect("a contact of its own"))
                .await
                .map(|found| assert!(found.is_some(), "an acknowledged contact is there")),
            2 => {
                let key = format!("evt-{writer}-{i}");
                let event = InboundEvent::new("faults", &key, &serde_json::json!({"i": i}))
                    .expect("a valid event");
                let handled = guard
                    .run(&store, tenant, &ctx(), &event, move |tx| {
                        Box::pin(async move {
                            let c = tx.create_contact(new_contact(&email)).await?;
                            tx.log_activity(NewActivity::new(c.id, ActivityKind::Note))
                                .await?;
                            Ok::<_, HandlerError>(c.id.as_uuid())
                        }) as HandlerFuture<'_, uuid::Uuid>
                    })
                    .await;
                handled.map(|outcome| {
                    assert!(!outcome.is_replay(), "a fresh event is executed");
                    let id = outcome.result.expect("the handler never fails permanently");
                    tally.events.lock().unwrap().push((key, id));
                })
            }
            _ => {
                let written = async {
                    let mut tx = store.begin(tenant, ctx()).await?;
                    let contact = tx.create_contact(new_contact(&email)).await?;
                    let activity = tx
                        .log_activity(NewActivity::new(contact.id, ActivityKind::Note))
                        .await?;
                    tx.commit().await?;
                    Ok::<_, Error>((contact.id, activity.id.as_uuid()))
                }
                .await;
                written.map(|(contact, activity)| {
                    mine = Some(contact);
                    tally.contacts.lock().unwrap().push(contact.as_uuid());
                    tally.activities.lock().unwrap().push(activity);
                })
            }
        };
        if let Err(e) = result {
            tally.failed.fetch_add(1, Ordering::SeqCst);
            if !e.is_retryable() {
                tally.odd_errors.lock().unwrap().push(format!("{e:?}"));
            }
        }
        tally.ended.fetch_add(1, Ordering::SeqCst);
    }
}

/// How many rows of `table` in `tenant` have one of `ids`.
async fn present(client: &Client, table: &str, tenant: TenantId, ids: &[uuid::Uuid]) -> usize {
    let n: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM crm.{table} WHERE tenant_id = $1 AND id = ANY($2)"),
            &[&tenant.as_uuid(), &ids],
        )
        .await
        .unwrap()
        .get(0);
    n as usize
}

/// Writers on several stores (several processes) run while the server
/// processes of the test's database are killed, round after round, each
/// time while every writer waits in a statement (for a table lock the
/// test holds). A killed backend fails the one operation that was using it,
/// and no other: a connection that lost its server is never handed out
/// again, not even when the pool has no other. So the failed operations
/// never outnumber the killed backends — a bound that does not depend on
/// timing — and every write acknowledged to a writer is there afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_backends_under_writers_fails_at_most_one_operation_per_killed_backend() {
    const ROUNDS: usize = 30;
    /// Stores of one connection each, one writer on each: a writer that
    /// failed takes its next connection from a pool whose only one was
    /// the killed one.
    const WRITERS: usize = 4;
    /// Operations that end between two rounds.
    const PROGRESS: usize = 2 * WRITERS;
    let _turn = SERIAL.lock().await;
    let db = TestDb::create().await;
    let mut stores = Vec::new();
    for _ in 0..WRITERS {
        stores.push(store_with_pool(&db, 1).await);
    }
    let admin = db.client().await;
    let blocker = db.client().await;
    let blocker_pid: i32 = blocker
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let tenant = TenantId::new();
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = stores
        .iter()
        .enumerate()
        .map(|(w, store)| {
            tokio::spawn(write_until(
                store.clone(),
                tenant,
                w,
                Arc::clone(&tally),
                Arc::clone(&stop),
            ))
        })
        .collect();

    let waiting = async || -> i64 {
        admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = $1 AND wait_event_type = 'Lock'",
                &[&db.name()],
            )
            .await
            .unwrap()
            .get(0)
    };
    let mut killed = 0i64;
    for round in 0..ROUNDS {
        let before = tally.ended.load(Ordering::SeqCst);
        eventually(&format!("progress before round {round}"), async || {
            tally.ended.load(Ordering::SeqCst) >= before + PROGRESS
        })
        .await;
        // Hold off new activities (the lock queue is fair: it is granted
        // once the transactions that wrote one end): every writer comes
        // to wait for it.
        blocker
            .batch_execute("BEGIN; LOCK TABLE crm.activities IN SHARE MODE")
            .await
            .unwrap();
        eventually(
            &format!("every writer waits in round {round}"),
            async || waiting().await == WRITERS as i64,
        )
        .await;
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE datname = $1 AND pid <> pg_backend_pid() AND pid <> $2",
                &[&db.name(), &blocker_pid],
            )
            .await
            .unwrap()
            .get(0);
        killed += n;
        blocker.batch_execute("COMMIT").await.unwrap();
    }
    // The stores carry on after the last round.
    let before = tally.ended.load(Ordering::SeqCst);
    eventually("progress after the last round", async || {
        tally.ended.load(Ordering::SeqCst) >= before + PROGRESS
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }

    let failed = tally.failed.load(Ordering::SeqCst);
    let ended = tally.ended.load(Ordering::SeqCst);
    eprintln!(
        "{killed} backends killed in {ROUNDS} rounds; {failed} of {ended} operations failed \
         ({:.2} per killed backend)",
        failed as f64 / killed.max(1) as f64
    );
    assert!(
        killed >= (ROUNDS * WRITERS) as i64,
        "every round killed every writer's backend: {killed} in {ROUNDS} rounds"
    );
    assert!(
        failed as i64 <= killed,
        "{failed} failed operations for {killed} killed backends: a connection that lost its \
         server was handed out again"
    );
    let odd = tally.odd_errors.lock().unwrap().clone();
    assert!(odd.is_empty(), "failures that are not retryable: {odd:#?}");

    // Every acknowledged write is there.
    let contacts = tally.contacts.lock().unwrap().clone();
    let activities = tally.activities.lock().unwrap().clone();
    let events = tally.events.lock().unwrap().clone();
    assert!(
        !contacts.is_empty() && !events.is_empty(),
        "the writers got work done"
    );
    assert_eq!(
        present(&admin, "contacts", tenant, &contacts).await,
        contacts.len()
    );
    assert_eq!(
        present(&admin, "activities", tenant, &activities).await,
        activities.len()
    );
    let made: Vec<uuid::Uuid> = events.iter().map(|(_, id)| *id).collect();
    assert_eq!(
        present(&admin, "contacts", tenant, &made).await,
        events.len(),
        "every executed event's contact is there"
    );
    let keys: Vec<String> = events.iter().map(|(k, _)| k.clone()).collect();
    let stored: i64 = admin
        .query_one(
            "SELECT count(*) FROM crm.idempotency_keys
             WHERE tenant_id = $1 AND source = 'faults' AND key = ANY($2)",
            &[&tenant.as_uuid(), &keys],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        stored as usize,
        events.len(),
        "every executed event's key is stored"
    );
    drop((stores, admin, blocker));
}
