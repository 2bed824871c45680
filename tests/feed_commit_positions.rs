#![cfg(all(feature = "postgres", feature = "conformance"))]
//! How a commit takes its feed position (schema 16: the tenant's last
//! marker, under a lock of the tenant's `feed_heads` row that updates
//! nothing), met from outside the store: transactions written by hand at
//! `REPEATABLE READ`, a transaction over thousands of tenants, the upgrade
//! from schema 15 beside an open write, the operators' view on a long
//! feed, an event no reader could read, and the purges (schema 18: a
//! history purge keeps the events of the versions it removes) beside
//! erasures, commits and each other.

mod support;

use chrono::{DateTime, Utc};
use crm_core::{
    Actor, Context, PostgresStore, Store, StoreExt, TenantId, conformance,
    domain::{ConsumerName, ContactId, ContactPatch, Email, FeedPosition, NewContact, PersonName},
    store::postgres::statements,
};
use support::{TestDb, TestStore};
use tokio_postgres::error::SqlState;
use uuid::Uuid;

fn ctx() -> Context {
    Context::new(Actor::parse("user:positions").unwrap())
}

fn new_contact(email: &str) -> NewContact {
    NewContact::new(
        Email::parse(email).unwrap(),
        PersonName::parse("Ada").unwrap(),
        PersonName::parse("Lovelace").unwrap(),
    )
}

fn write(db: &TestDb, tenant: TenantId, entity: Uuid) -> String {
    db.sql(&format!(
        "SELECT crm.crm_feed_write('{}', 'contact', '{entity}', 'created', 1, now(), \
         'user:probe', NULL, NULL, NULL)",
        tenant.as_uuid()
    ))
}

/// A tenant with one contact, and a transaction of it written by hand at
/// REPEATABLE READ that took its snapshot and wrote the event of `entity`,
/// left open.
async fn a_tenant_and_an_open_repeatable_read_write(
    ts: &TestStore,
    entity: Uuid,
) -> (TenantId, tokio_postgres::Client) {
    let tenant = TenantId::new();
    ts.scope(tenant, &ctx())
        .create_contact(new_contact("first@example.com"))
        .await
        .unwrap();
    let by_hand = ts.db().client().await;
    by_hand
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1; {}",
            write(ts.db(), tenant, entity)
        ))
        .await
        .unwrap();
    (tenant, by_hand)
}

/// A transaction written by hand at REPEATABLE READ (the feed's triggers
/// run for every writer, not only the store's): its commit trigger reads
/// with the transaction's snapshot. When another commit and a purge of
/// both came after that snapshot, it must not take the purged position
/// again (a reader positioned at the purged event would never see it):
/// either it commits and a reader after the purge sees its event, or it
/// fails as a serialization failure, to be retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeatable_read_commit_after_a_purge_is_not_lost() {
    let ts = TestStore::new().await;
    let late = Uuid::now_v7();
    let (tenant, by_hand) = a_tenant_and_an_open_repeatable_read_write(&ts, late).await;
    ts.scope(tenant, &ctx())
        .create_contact(new_contact("two@example.com"))
        .await
        .unwrap();
    let mut tx = ts.begin(tenant, ctx()).await.unwrap();
    let later = chrono::Utc::now() + chrono::Duration::seconds(1);
    assert_eq!(tx.purge_feed(later).await.unwrap(), 2);
    tx.commit().await.unwrap();
    let committed = by_hand.batch_execute("COMMIT").await;

    let mut tx = ts.begin(tenant, ctx()).await.unwrap();
    let reader = ConsumerName::parse("after-purge").unwrap();
    let seen: Vec<Uuid> = tx
        .next_batch(&reader, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    let head = tx.feed_head().await.unwrap();
    tx.commit().await.unwrap();
    match committed {
        Ok(()) => assert_eq!(
            seen,
            vec![late],
            "the commit succeeded, so a reader at the purged position must see its event \
             (head {head:?})"
        ),
        Err(e) => assert_eq!(
            e.code(),
            Some(&SqlState::T_R_SERIALIZATION_FAILURE),
            "{e:?}"
        ),
    }
}

/// Two transactions of a tenant, the later-committing one at REPEATABLE
/// READ, whose snapshot misses the other's commit: it commits (schema 19:
/// a commit reads no position; until schema 18 it read the last one with
/// its snapshot and failed as a serialization failure), and a reader
/// after both is given both, the earlier commit first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeatable_read_commit_beside_another_commit_of_its_tenant_commits() {
    let ts = TestStore::new().await;
    let late = Uuid::now_v7();
    let (tenant, by_hand) = a_tenant_and_an_open_repeatable_read_write(&ts, late).await;
    let other = ts
        .scope(tenant, &ctx())
        .create_contact(new_contact("one@example.com"))
        .await
        .unwrap();
    by_hand
        .batch_execute("COMMIT")
        .await
        .expect("a commit at REPEATABLE READ waits for no position");
    let mut tx = ts.begin(tenant, ctx()).await.unwrap();
    let reader = ConsumerName::parse("both").unwrap();
    let events = tx.next_batch(&reader, 100).await.unwrap();
    tx.commit().await.unwrap();
    let seen: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    assert_eq!(seen[1..], [other.id.as_uuid(), late], "{events:?}");
}

/// A transaction written by hand (without row-level security) that writes
/// events of many tenants commits: the lock each tenant's commit takes is
/// kept in the tenant's row, not in the server's shared lock table (an
/// advisory lock per tenant ran out of it: "out of shared memory").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_writing_events_of_many_tenants_commits() {
    let ts = TestStore::new().await;
    let client = ts.db().client().await;
    let r = client
        .batch_execute(&ts.db().sql(
            "BEGIN; SELECT count(crm.crm_feed_write(gen_random_uuid(), 'contact', \
             gen_random_uuid(), 'created', 1, now(), 'user:probe', NULL, NULL, NULL)) \
             FROM generate_series(1, 20000); COMMIT",
        ))
        .await;
    assert!(r.is_ok(), "{r:?}");
}

/// A store at schema 15, migrated to 16 while a write transaction is open
/// (it wrote its events, and commits after the migration began): the
/// migration waits for it, and both succeed. (Locking `feed_heads` before
/// `feed_events`, the migration met the writer, which holds `feed_events`
/// and needs `feed_heads` at commit, in a deadlock.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upgrade_to_16_completes_beside_an_open_write() {
    let db = TestDb::create().await;
    db.schema_at_version("upgrade", 15).await;
    let store = PostgresStore::builder(&db.url())
        .pool_size(3)
        .pipelines(conformance::test_pipelines())
        .schema("upgrade")
        .build()
        .await
        .unwrap();
    let tenant = TenantId::new();
    store
        .scope(tenant, &ctx())
        .create_contact(new_contact("before@example.com"))
        .await
        .unwrap();
    let mut open = store.begin(tenant, ctx()).await.unwrap();
    open.create_contact(new_contact("open@example.com"))
        .await
        .unwrap();
    let mut migrating = {
        let store = store.clone();
        tokio::spawn(async move { store.migrate().await })
    };
    // The migration waits for the open write's lock (or, were it to take
    // none, ends at once).
    let early = tokio::select! {
        r = &mut migrating => Some(r.unwrap()),
        () = support::until_a_backend_waits_for_a_lock(&db) => None,
    };
    let committed = open.commit().await;
    let migrated = match early {
        Some(r) => r,
        None => migrating.await.unwrap(),
    };
    assert!(
        migrated.is_ok() && committed.is_ok(),
        "migration: {migrated:?}; the open write's commit: {committed:?}"
    );
}

/// The operators' view reads one marker per tenant, however long their
/// feeds (`max(…) GROUP BY` per tenant could not use the min/max rewrite
/// and read every marker).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_view_reads_one_marker_per_tenant() {
    let ts = TestStore::new().await;
    let client = ts.db().client().await;
    for tenant in [TenantId::new(), TenantId::new()] {
        // 5,000 commits' markers of one tenant (a marker per run of events).
        client
            .batch_execute(&format!(
                "BEGIN; DO $$ BEGIN FOR i IN 1..5000 LOOP \
                 PERFORM crm.crm_feed_write('{}', 'contact', gen_random_uuid(), 'created', 1, \
                 now(), 'user:probe', NULL, NULL, NULL); \
                 PERFORM set_config('crm.feed_txn', '', true); END LOOP; END $$; COMMIT",
                tenant.as_uuid()
            ))
            .await
            .unwrap();
    }
    client
        .batch_execute("ANALYZE crm.feed_heads, crm.feed_commits, crm.feed_events")
        .await
        .unwrap();
    let all_heads = statements::all()
        .into_iter()
        .find(|s| s.name == "feed::ALL_HEADS")
        .expect("the operators' statement")
        .sql;
    client
        .batch_execute("SET search_path TO crm, pg_temp")
        .await
        .unwrap();
    let plan: serde_json::Value = client
        .query_one(&format!("EXPLAIN (ANALYZE, FORMAT JSON) {all_heads}"), &[])
        .await
        .unwrap()
        .get::<_, serde_json::Value>(0);
    fn markers_read(node: &serde_json::Value) -> f64 {
        let own = if node["Relation Name"] == "feed_commits" {
            node["Actual Rows"].as_f64().unwrap_or(0.0)
                * node["Actual Loops"].as_f64().unwrap_or(1.0)
        } else {
            0.0
        };
        own + node["Plans"]
            .as_array()
            .map_or(0.0, |ps| ps.iter().map(markers_read).sum())
    }
    let read = markers_read(&plan[0]["Plan"]);
    assert!(
        read <= 10.0,
        "the operators' view read {read} markers for 2 tenants: {plan}"
    );
}

/// An event of an unknown kind written by hand is refused when written
/// (the table's check): stored, it would make every later read of the
/// tenant's feed fail on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_of_an_unknown_kind_is_refused_when_written() {
    let ts = TestStore::new().await;
    let tenant = TenantId::new();
    let client = ts.db().client().await;
    let written = client
        .batch_execute(&ts.db().sql(&format!(
            "BEGIN; SELECT crm.crm_feed_write('{}', 'bogus', gen_random_uuid(), 'created', 1, \
             now(), 'user:probe', NULL, NULL, NULL); COMMIT",
            tenant.as_uuid()
        )))
        .await;
    let mut tx = ts.begin(tenant, ctx()).await.unwrap();
    let read = tx.next_batch(&ConsumerName::parse("r").unwrap(), 10).await;
    assert!(
        written.is_err(),
        "the write was accepted; the tenant's feed now reads as {read:?}"
    );
}

/// A tenant whose every event was purged (an idle tenant past the
/// retention) while some transaction of the database keeps an older
/// snapshot: the head read of every poll of its consumers (and the first
/// commit after the purge) looks for the last marker above the purged
/// position, and so never walks the purged markers' index entries, none of
/// which can be pruned meanwhile (unbounded, the read touched 388 pages
/// for 20,000 purged markers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_head_of_a_fully_purged_tenant_is_read_in_a_few_pages_beside_an_old_snapshot() {
    let ts = TestStore::new().await;
    let tenant = TenantId::new();
    let client = ts.db().client().await;
    // 20,000 commits' markers of one tenant (a marker per run of events).
    client
        .batch_execute(&ts.db().sql(&format!(
            "BEGIN; DO $$ BEGIN FOR i IN 1..20000 LOOP \
             PERFORM crm.crm_feed_write('{}', 'contact', gen_random_uuid(), 'created', 1, \
             now(), 'user:probe', NULL, NULL, NULL); \
             PERFORM set_config('crm.feed_txn', '', true); END LOOP; END $$; COMMIT",
            tenant.as_uuid()
        )))
        .await
        .unwrap();
    // Some session holds an old snapshot (a report, a dump).
    let old = ts.db().client().await;
    old.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1")
        .await
        .unwrap();
    let mut tx = ts.begin(tenant, ctx()).await.unwrap();
    let later = chrono::Utc::now() + chrono::Duration::seconds(1);
    assert_eq!(tx.purge_feed(later).await.unwrap(), 20000);
    tx.commit().await.unwrap();

    let head = statements::all()
        .into_iter()
        .find(|s| s.name == "feed::HEAD")
        .expect("the head's statement")
        .sql
        .replace("$1", &format!("'{}'::uuid", tenant.as_uuid()));
    client
        .batch_execute(&format!("SET search_path TO {}, pg_temp", ts.db().schema()))
        .await
        .unwrap();
    let mut pages = Vec::new();
    for _ in 0..3 {
        let plan: serde_json::Value = client
            .query_one(
                &format!("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {head}"),
                &[],
            )
            .await
            .unwrap()
            .get::<_, serde_json::Value>(0);
        let p = &plan[0]["Plan"];
        pages.push(
            p["Shared Hit Blocks"].as_i64().unwrap_or(0)
                + p["Shared Read Blocks"].as_i64().unwrap_or(0),
        );
    }
    ts.scope(tenant, &ctx())
        .create_contact(new_contact("after@example.com"))
        .await
        .unwrap();
    old.batch_execute("COMMIT").await.unwrap();
    let mut tx = ts.begin(tenant, ctx()).await.unwrap();
    assert_eq!(
        tx.feed_head().await.unwrap(),
        crm_core::domain::FeedPosition::new(20001, 1),
        "the commit after the purge goes on after the purged position"
    );
    tx.commit().await.unwrap();
    assert!(
        pages.iter().all(|&p| p <= 20),
        "each head read of a purged tenant read {pages:?} pages"
    );
}

/// A contact renamed once (its first version ended), and a time after
/// that.
async fn a_renamed_contact(ts: &TestStore, tenant: TenantId) -> (ContactId, DateTime<Utc>) {
    let crm = ts.scope(tenant, &ctx());
    let c = crm
        .create_contact(new_contact("renamed@example.com"))
        .await
        .unwrap();
    let patch = ContactPatch {
        first_name: Some(PersonName::parse("Augusta").unwrap()),
        ..ContactPatch::default()
    };
    crm.update_contact(c.id, c.version, patch).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    (c.id, Utc::now())
}

/// The rows of `feed_events` whose transaction has no marker, numbered or
/// pending (schema 19): events no reader can reach and no purge removes.
async fn stranded_events(ts: &TestStore, tenant: TenantId) -> i64 {
    ts.db()
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM crm.feed_events e WHERE e.tenant_id = $1 AND NOT EXISTS \
             (SELECT 1 FROM crm.feed_commits c WHERE c.tenant_id = $1 AND c.txn = e.txn) \
             AND NOT EXISTS \
             (SELECT 1 FROM crm.feed_pending p WHERE p.tenant_id = $1 AND p.txn = e.txn)",
            &[&tenant.as_uuid()],
        )
        .await
        .unwrap()
        .get(0)
}

/// A history purge and an erasure of the same contact, the erasure's scrub
/// holding the versions the purge deletes: the purge waits for the
/// erasure, and both commit. (A purge that locked the tenant's feed head
/// first met the erasure's commit, which locks it too, in a deadlock.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_purge_beside_an_erasure_waits_for_it_and_both_commit() {
    let ts = TestStore::new().await;
    let tenant = TenantId::new();
    let (id, cutoff) = a_renamed_contact(&ts, tenant).await;
    let mut eraser = ts.begin(tenant, ctx()).await.unwrap();
    eraser.erase_contact(id).await.unwrap();
    let purger = ts.db().store();
    let purging = tokio::spawn(async move {
        let mut tx = purger.begin(tenant, ctx()).await?;
        let n = tx.purge_history(cutoff).await?;
        tx.commit().await?;
        Ok::<_, crm_core::Error>(n)
    });
    support::until_a_backend_waits_for_a_lock(ts.db()).await;
    eraser.commit().await.expect("the erasure commits");
    assert_eq!(purging.await.unwrap().expect("the purge commits"), 1);
    assert_eq!(stranded_events(&ts, tenant).await, 0);
}

/// A write of a tenant commits while a history purge of that tenant is
/// open: nothing a commit takes is held by a purge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_does_not_wait_for_an_open_history_purge() {
    let ts = TestStore::new().await;
    let tenant = TenantId::new();
    let (_, cutoff) = a_renamed_contact(&ts, tenant).await;
    let mut purge = ts.begin(tenant, ctx()).await.unwrap();
    assert_eq!(purge.purge_history(cutoff).await.unwrap(), 1);
    let other = ts.db().store();
    let created = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        other
            .scope(tenant, &ctx())
            .create_contact(new_contact("during@example.com")),
    )
    .await;
    assert!(
        matches!(created, Ok(Ok(_))),
        "the create waited for the purge: {created:?}"
    );
    purge.commit().await.unwrap();
}

/// A feed purge that starts while a history purge of the same tenant is
/// open (it copied the events of the versions it removes, not committed
/// yet) waits for it, and removes those copies with the rest: no event is
/// left in `feed_events` without its marker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_purge_beside_a_history_purge_leaves_no_event_behind() {
    let ts = TestStore::new().await;
    let tenant = TenantId::new();
    let (_, cutoff) = a_renamed_contact(&ts, tenant).await;
    let mut history = ts.begin(tenant, ctx()).await.unwrap();
    assert_eq!(history.purge_history(cutoff).await.unwrap(), 1);
    let purger = ts.db().store();
    let later = Utc::now() + chrono::Duration::seconds(1);
    let purging = tokio::spawn(async move {
        let mut tx = purger.begin(tenant, ctx()).await?;
        let n = tx.purge_feed(later).await?;
        tx.commit().await?;
        Ok::<_, crm_core::Error>(n)
    });
    support::until_a_backend_waits_for_a_lock(ts.db()).await;
    history.commit().await.unwrap();
    assert_eq!(purging.await.unwrap().expect("the feed purge"), 2);
    assert_eq!(stranded_events(&ts, tenant).await, 0);
    let mut tx = ts.begin(tenant, ctx()).await.unwrap();
    assert_eq!(tx.feed_head().await.unwrap(), FeedPosition::new(2, 1));
    assert!(
        tx.events_after(FeedPosition::new(2, 1), 10)
            .await
            .unwrap()
            .is_empty()
    );
    tx.commit().await.unwrap();
}

/// Schema 19's numbering finds every committed transaction it has not
/// numbered, through the bounds the last numbering recorded. The case a
/// bound on the highest WAL position seen would miss: X reaches its
/// commit trigger before M (a lower WAL position) but took its
/// transaction id after M's, and is still open when a read numbers M.
/// A snapshot then does not list X as running (its id is above every
/// completed one); it is at or above the snapshot's `xmax`, and the next
/// read after X commits must deliver it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_open_across_a_numbering_after_its_trigger_is_delivered() {
    let ts = TestStore::new().await;
    let tenant = TenantId::new();
    ts.scope(tenant, &ctx())
        .create_contact(new_contact("first@example.com"))
        .await
        .unwrap();
    let (m_id, x_id) = (Uuid::now_v7(), Uuid::now_v7());
    let m = ts.db().client().await;
    let x = ts.db().client().await;
    // M takes its transaction id first, X second.
    m.batch_execute(&format!("BEGIN; {}", write(ts.db(), tenant, m_id)))
        .await
        .unwrap();
    // X's commit trigger runs now (the deferred trigger made immediate),
    // and X stays open.
    x.batch_execute(&format!(
        "BEGIN; {}; SET CONSTRAINTS ALL IMMEDIATE",
        write(ts.db(), tenant, x_id)
    ))
    .await
    .unwrap();
    m.batch_execute("SET CONSTRAINTS ALL IMMEDIATE; COMMIT")
        .await
        .unwrap();
    let reader = ConsumerName::parse("bounds").unwrap();
    let mut tx = ts.begin(tenant, ctx()).await.unwrap();
    let first = tx.next_batch(&reader, 100).await.unwrap();
    tx.ack(&reader, first.last().unwrap().position)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let first: Vec<Uuid> = first.iter().map(|e| e.id).collect();
    assert_eq!(first.last(), Some(&m_id), "{first:?}");
    assert!(!first.contains(&x_id), "X is not committed yet: {first:?}");

    x.batch_execute("COMMIT").await.unwrap();
    let mut tx = ts.begin(tenant, ctx()).await.unwrap();
    let second: Vec<Uuid> = tx
        .next_batch(&reader, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    tx.commit().await.unwrap();
    assert_eq!(second, vec![x_id], "X is delivered after its commit");
}

/// The numbering's bounds are one server's transaction ids: a tenant whose
/// rows came from another server (its shards moved to another worker, a
/// dump restored elsewhere) carries bounds that mean nothing here — on a
/// server whose ids are far behind, every new commit would be below them
/// and never numbered. Bounds recorded under another system identifier
/// are not used: the commit is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounds_recorded_on_another_server_are_not_used() {
    let ts = TestStore::new().await;
    let tenant = TenantId::new();
    let crm = ts.scope(tenant, &ctx());
    crm.create_contact(new_contact("before@example.com"))
        .await
        .unwrap();
    let reader = ConsumerName::parse("moved").unwrap();
    let mut tx = ts.begin(tenant, ctx()).await.unwrap();
    let first = tx.next_batch(&reader, 100).await.unwrap();
    tx.ack(&reader, first.last().unwrap().position)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // As if the last numbering had run on a server far ahead in ids.
    let moved = ts
        .db()
        .client()
        .await
        .execute(
            &ts.db().sql(
                "UPDATE crm.feed_commits SET seen_node = seen_node + 1, \
                 seen_xmax = '900000000000'::xid8, running = '{}' \
                 WHERE tenant_id = $1 AND seen_node IS NOT NULL",
            ),
            &[&tenant.as_uuid()],
        )
        .await
        .unwrap();
    assert_eq!(moved, 1, "the last marker records its numbering's bounds");
    let after = crm
        .create_contact(new_contact("after@example.com"))
        .await
        .unwrap();
    let mut tx = ts.begin(tenant, ctx()).await.unwrap();
    let second: Vec<Uuid> = tx
        .next_batch(&reader, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    tx.commit().await.unwrap();
    assert_eq!(second, vec![after.id.as_uuid()]);
}
