#![cfg(all(feature = "postgres", feature = "conformance"))]
//! `PostgresStore` under concurrency and faults: racing creates of one
//! email, racing updates of one version, a transaction dropped half-way and
//! one whose server connection is killed half-way.
//!
//! Each test has a database of its own. The tests of this file take turns
//! (one lock), so that the connections they open at once stay well below
//! the server's `max_connections`, and so that a test that looks for "the
//! session idle in a transaction" in its database finds only its own.

mod support;

use std::{sync::Arc, time::Duration};

use crm_core::{
    Actor, Context, Error, ErrorKind, PostgresStore, Store, StoreExt, TenantId, Version,
    conformance,
    domain::{
        ActivityKind, ContactPatch, Currency, DealTitle, Email, Money, NewActivity, NewContact,
        NewDeal, PersonName,
    },
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
            &format!("SELECT count(*) FROM {table} WHERE tenant_id = $1"),
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
            let mut tx = store.begin(tenant, ctx()).await?;
            barrier.wait().await;
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
            "SELECT id FROM contacts WHERE tenant_id = $1 AND email_key = $2",
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
        .create_contact(tenant, &ctx(), new_contact("ada@example.com"))
        .await
        .unwrap();
    let barrier = Arc::new(Barrier::new(RACERS));

    let mut tasks = Vec::new();
    for i in 0..RACERS {
        let (store, barrier) = (Arc::clone(&store), Arc::clone(&barrier));
        let name = format!("Racer{i:02}");
        tasks.push(tokio::spawn(async move {
            let mut tx = store.begin(tenant, ctx()).await?;
            barrier.wait().await;
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
        .get_contact(tenant, &ctx(), contact.id)
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
            "SELECT version FROM contacts WHERE tenant_id = $1 AND id = $2",
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
        store.create_contact(tenant, &ctx(), new_contact("DROPPED@example.com")),
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
        .create_contact(tenant, &ctx(), new_contact("killed@example.com"))
        .await;
    assert!(again.is_ok(), "the store carries on: {again:?}");
    assert_eq!(count(&sql, "contacts", tenant).await, 1);
    drop((store, sql));
}
