#![cfg(all(feature = "postgres", feature = "conformance"))]
//! The change feed since schema 18 (a history version is its own feed
//! event, a commit's marker counts its events, a deleted version's event
//! stays in the feed), met from outside the store: every kind of change
//! against the in-memory store and against what schema 17 wrote,
//! transactions by hand over two tenants and at REPEATABLE READ, bulk
//! imports, small batches read from every position, and both purges — in
//! one transaction, beside each other, beside erasures and unmerges, and
//! beside writers and consumers on several stores.

mod support;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use crm_core::{
    Actor, Context, DynStore, InMemoryStore, Store, StoreExt, TenantId,
    domain::{
        ActivityKind, CompanyName, ConflictPolicy, ConsumerName, ContactPatch, DealTitle, Email,
        FeedEvent, FeedKind, FeedPosition, JobTitle, Money, NewActivity, NewCompany, NewContact,
        NewDeal, NewSignal, NewTag, NewTask, PersonName, RecordRef, SignalKind, TagName, TaskTitle,
        UnmergeConflicts,
    },
    history::Operation,
};
use support::{Target, TestStore};
use uuid::Uuid;

fn ctx() -> Context {
    Context::new(Actor::parse("user:feed18").unwrap())
}

fn new_contact(email: &str, first: &str) -> NewContact {
    NewContact::new(
        Email::parse(email).unwrap(),
        PersonName::parse(first).unwrap(),
        PersonName::parse("Lovelace").unwrap(),
    )
}

fn rename(first: &str) -> ContactPatch {
    ContactPatch {
        first_name: Some(PersonName::parse(first).unwrap()),
        ..ContactPatch::default()
    }
}

fn retitle(title: &str) -> ContactPatch {
    ContactPatch {
        title: Some(Some(JobTitle::parse(title).unwrap())),
        ..ContactPatch::default()
    }
}

/// Every event of the tenant, read in batches of `batch`.
async fn read_all_with(store: &DynStore, t: TenantId, batch: usize) -> Vec<FeedEvent> {
    let mut all = Vec::new();
    let mut at = FeedPosition::START;
    let mut tx = store.begin(t, ctx()).await.unwrap();
    loop {
        let got = tx.events_after(at, batch).await.unwrap();
        let Some(last) = got.last() else { break };
        at = last.position;
        all.extend(got);
    }
    tx.commit().await.unwrap();
    all
}

async fn read_all(store: &DynStore, t: TenantId) -> Vec<FeedEvent> {
    read_all_with(store, t, 7).await
}

async fn head(store: &DynStore, t: TenantId) -> FeedPosition {
    let mut tx = store.begin(t, ctx()).await.unwrap();
    let h = tx.feed_head().await.unwrap();
    tx.commit().await.unwrap();
    h
}

/// Positions follow each other with no gap: commits consecutive from
/// `first`, indexes 1, 2, … in each.
#[track_caller]
fn assert_numbered(events: &[FeedEvent], first: i64) {
    let mut expected = FeedPosition::new(first, 1);
    for (i, e) in events.iter().enumerate() {
        if i > 0 && e.position.commit != expected.commit {
            expected = FeedPosition::new(expected.commit + 1, 1);
        }
        assert_eq!(
            e.position,
            expected,
            "no gap (event {i} of {}: {:?})",
            events.len(),
            events
                .iter()
                .map(|e| (e.position, e.kind, e.operation, e.version))
                .collect::<Vec<_>>()
        );
        expected.index += 1;
    }
}

/// (commit, index, kind, operation, version, has diff) of each event.
type Shape = (i64, i32, FeedKind, Operation, Option<i64>, bool);

/// (kind, operation, version, has diff) of an event within its commit.
type CommitItem = (FeedKind, Operation, Option<i64>, bool);

/// The shapes with each commit's events sorted: the contract orders a
/// record's changes, not one operation's rows of several records.
fn per_commit_sorted(mut shapes: Vec<Shape>) -> Vec<(i64, Vec<CommitItem>)> {
    let mut out: Vec<(i64, Vec<_>)> = Vec::new();
    shapes.sort_by_key(|s| (s.0, s.1));
    for s in shapes {
        let item = (s.2, s.3, s.4, s.5);
        match out.last_mut() {
            Some((c, items)) if *c == s.0 => items.push(item),
            _ => out.push((s.0, vec![item])),
        }
    }
    for (_, items) in &mut out {
        items.sort_by_key(|i| format!("{i:?}"));
    }
    out
}

fn shape(events: &[FeedEvent]) -> Vec<Shape> {
    events
        .iter()
        .map(|e| {
            (
                e.position.commit,
                e.position.index,
                e.kind,
                e.operation,
                e.version,
                e.diff.is_some(),
            )
        })
        .collect()
}

/// A marker as `table_state` reads it: (position, marker's count, events
/// found, distinct indexes, smallest index, largest index).
type MarkerState = (i64, Option<i32>, i64, i64, Option<i32>, Option<i32>);

/// What the tables hold for `tenant`: each marker above the purged
/// position, and the events of no marker left in `feed_events`.
async fn table_state(ts: &TestStore, tenant: TenantId) -> (Vec<MarkerState>, i64) {
    // A read numbers the commits no read numbered yet (schema 19).
    let mut tx = ts.begin(tenant, ctx()).await.unwrap();
    tx.feed_head().await.unwrap();
    tx.commit().await.unwrap();
    let db = ts.db();
    let client = db.client().await;
    let rows = client
        .query(
            &db.sql(
                "WITH ev AS (SELECT txn, seq FROM crm.feed_events WHERE tenant_id = $1 \
                 UNION ALL SELECT txn, seq FROM crm.history WHERE tenant_id = $1 \
                 AND txn IS NOT NULL) \
                 SELECT c.position, c.events, count(ev.seq), count(DISTINCT ev.seq), \
                 min(ev.seq), max(ev.seq) \
                 FROM crm.feed_commits c LEFT JOIN ev ON ev.txn = c.txn \
                 WHERE c.tenant_id = $1 GROUP BY c.position, c.events ORDER BY c.position",
            ),
            &[&tenant.as_uuid()],
        )
        .await
        .unwrap();
    let markers = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect();
    let orphans: i64 = client
        .query_one(
            &db.sql(
                "SELECT count(*) FROM crm.feed_events e WHERE e.tenant_id = $1 AND NOT EXISTS \
                 (SELECT 1 FROM crm.feed_commits c WHERE c.tenant_id = $1 AND c.txn = e.txn)",
            ),
            &[&tenant.as_uuid()],
        )
        .await
        .unwrap()
        .get(0);
    (markers, orphans)
}

/// Every marker counts exactly its events, numbered 1..n, the positions
/// consecutive; no row of `feed_events` without its marker.
#[track_caller]
fn assert_tables_consistent(state: &(Vec<MarkerState>, i64)) {
    let (markers, orphans) = state;
    for w in markers.windows(2) {
        assert_eq!(w[0].0 + 1, w[1].0, "consecutive positions: {markers:?}");
    }
    for m in markers {
        let (_, events, count, distinct, min, max) = *m;
        assert!(count >= 1, "a marker with no event: {m:?} in {markers:?}");
        assert_eq!(
            events.map(i64::from),
            Some(count),
            "the marker's count: {m:?}"
        );
        assert_eq!(distinct, count, "no index twice: {m:?}");
        assert_eq!(min, Some(1), "from 1: {m:?}");
        assert_eq!(max.map(i64::from), Some(count), "no gap: {m:?}");
    }
    assert_eq!(*orphans, 0, "rows of feed_events without a marker");
}

// ---------------------------------------------------------------------
// 1. purge_history in the transaction that wrote the purged versions.
// ---------------------------------------------------------------------

/// One transaction creates a contact, renames it twice (closing two of
/// its versions) and purges the history before a time after those ends,
/// then commits. Its three changes are committed: the feed must deliver
/// three events, 1..3, as the in-memory store does (without the purged
/// diffs). The purge copies only versions of transactions that already
/// have a marker: this one's versions are deleted with their events.
async fn purge_history_in_the_writing_transaction_on(store: &DynStore) -> Vec<Shape> {
    let t = TenantId::new();
    let mut tx = store.begin(t, ctx()).await.unwrap();
    let c = tx
        .create_contact(new_contact("same-tx@example.com", "Ada"))
        .await
        .unwrap();
    let c = tx
        .update_contact(c.id, c.version, rename("Augusta"))
        .await
        .unwrap();
    tx.update_contact(c.id, c.version, rename("Grace"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let purged = tx
        .purge_history(chrono::Utc::now() + chrono::Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(purged, 2, "the two closed versions");
    tx.commit().await.unwrap();
    let events = read_all(store, t).await;
    assert_numbered(&events, 1);
    assert_eq!(
        head(store, t).await,
        events.last().map_or(FeedPosition::START, |e| e.position),
        "the head is the last delivered event"
    );
    shape(&events)
}

async fn purge_history_in_the_writing_transaction_keeps_its_events(target: Target) {
    let memory = InMemoryStore::new();
    let expected = purge_history_in_the_writing_transaction_on(&memory).await;
    assert_eq!(expected.len(), 3, "memory: {expected:?}");
    let Some(ts) = TestStore::on(target).await else {
        return;
    };
    let got = purge_history_in_the_writing_transaction_on(&*ts).await;
    assert_eq!(
        got, expected,
        "PostgreSQL delivers what the in-memory store does"
    );
}

// ---------------------------------------------------------------------
// 2. purge_history then purge_feed in one transaction.
// ---------------------------------------------------------------------

/// A retention job purges the history and the feed with one cutoff, in one
/// transaction. purge_history copies the purged creation's event (index 1
/// of commit 1) into feed_events, which queues the commit trigger for the
/// copy; purge_feed then deletes commit 1's marker and the copy. At
/// commit the trigger finds no marker for the copy's transaction and must
/// not write one. Afterwards the head, the reads, the next commit's
/// position and a later purge must be as in memory.
async fn purges_in_one_transaction_on(store: &DynStore) -> (Vec<Shape>, FeedPosition, u64, u64) {
    let t = TenantId::new();
    let crm = store.scope(t, &ctx());
    let c = crm
        .create_contact(new_contact("retention@example.com", "Ada"))
        .await
        .unwrap();
    crm.update_contact(c.id, c.version, rename("Augusta"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let cutoff = crm_core::domain::truncate_to_micros(chrono::Utc::now());
    tokio::time::sleep(Duration::from_millis(5)).await;
    crm.log_activity(NewActivity::new(c.id, ActivityKind::Call))
        .await
        .unwrap();

    let mut tx = store.begin(t, ctx()).await.unwrap();
    assert_eq!(tx.purge_history(cutoff).await.unwrap(), 1);
    let purged = tx.purge_feed(cutoff).await.unwrap();
    tx.commit().await.unwrap();

    let h = head(store, t).await;
    let after = {
        let mut tx = store.begin(t, ctx()).await.unwrap();
        let e = tx.events_after(FeedPosition::new(2, 1), 100).await.unwrap();
        tx.commit().await.unwrap();
        e
    };
    // A consumer at the head acks it.
    let mut tx = store.begin(t, ctx()).await.unwrap();
    tx.ack(
        &ConsumerName::parse("at-head").unwrap(),
        FeedPosition::new(3, 1),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    // The next commit.
    crm.log_activity(NewActivity::new(c.id, ActivityKind::Email))
        .await
        .unwrap();
    let mut all = after;
    {
        let mut tx = store.begin(t, ctx()).await.unwrap();
        all.extend(tx.events_after(FeedPosition::new(3, 1), 100).await.unwrap());
        tx.commit().await.unwrap();
    }
    // A later purge of everything.
    let mut tx = store.begin(t, ctx()).await.unwrap();
    let purged_all = tx
        .purge_feed(chrono::Utc::now() + chrono::Duration::seconds(1))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    (shape(&all), h, purged, purged_all)
}

async fn purge_history_then_purge_feed_in_one_transaction(target: Target) {
    let memory = InMemoryStore::new();
    let expected = purges_in_one_transaction_on(&memory).await;
    assert_eq!(expected.1, FeedPosition::new(3, 1), "memory's head");
    let Some(ts) = TestStore::on(target).await else {
        return;
    };
    let got = purges_in_one_transaction_on(&*ts).await;
    assert_eq!(
        got, expected,
        "(events after the purge, head, purged, purged later)"
    );
}

// ---------------------------------------------------------------------
// 3. An erasure racing a history purge.
// ---------------------------------------------------------------------

/// An erasure (which rewrites every history version of the contact) is
/// open when a history purge of the tenant starts: the purge takes the
/// tenant's feed head, then waits for the erasure's rows. The erasure
/// then commits, and its commit trigger needs the feed head. Both must
/// succeed (before schema 18 the purge held no feed lock, and simply
/// waited), and the feed must hold every event.
async fn an_erasure_racing_a_history_purge(target: Target) {
    let Some(ts) = TestStore::on(target).await else {
        return;
    };
    let store: Arc<crm_core::PostgresStore> = Arc::new((*ts).clone());
    let t = TenantId::new();
    let crm = store.scope(t, &ctx());
    let c = crm
        .create_contact(new_contact("erase-me@example.com", "Ada"))
        .await
        .unwrap();
    let c = crm
        .update_contact(c.id, c.version, rename("Augusta"))
        .await
        .unwrap();
    crm.update_contact(c.id, c.version, rename("Grace"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let cutoff = chrono::Utc::now();
    let before = read_all(&*store, t).await;

    let mut eraser = store.begin(t, ctx()).await.unwrap();
    eraser.erase_contact(c.id).await.unwrap();
    let purger = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let mut tx = store.begin(t, ctx()).await?;
            let n = tx.purge_history(cutoff).await?;
            tx.commit().await?;
            Ok::<u64, crm_core::Error>(n)
        })
    };
    support::until_a_backend_waits_for_a_lock(ts.db()).await;
    let erased = eraser.commit().await;
    let purged = purger.await.unwrap();
    assert!(
        erased.is_ok() && purged.is_ok(),
        "erasure: {erased:?}; purge: {purged:?}"
    );
    let after = read_all(&*store, t).await;
    assert_eq!(
        after.len(),
        before.len() + 1,
        "every event, and the erasure's"
    );
    assert_numbered(&after, 1);
}

// ---------------------------------------------------------------------
// 2b. After the purges of one transaction: a later purge_feed.
// ---------------------------------------------------------------------

/// As in 2, then a commit of its own, then a feed purge whose cutoff falls
/// between the purging transaction's commit and that commit: it must
/// purge the one commit before it (the activity of commit 3) and leave the
/// feed readable from its new purged position.
async fn a_later_purge_on(store: &DynStore) -> (u64, Vec<(FeedKind, Operation)>) {
    let t = TenantId::new();
    let crm = store.scope(t, &ctx());
    let c = crm
        .create_contact(new_contact("retention2@example.com", "Ada"))
        .await
        .unwrap();
    crm.update_contact(c.id, c.version, rename("Augusta"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let cutoff = crm_core::domain::truncate_to_micros(chrono::Utc::now());
    tokio::time::sleep(Duration::from_millis(5)).await;
    crm.log_activity(NewActivity::new(c.id, ActivityKind::Call))
        .await
        .unwrap();
    let mut tx = store.begin(t, ctx()).await.unwrap();
    tx.purge_history(cutoff).await.unwrap();
    tx.purge_feed(cutoff).await.unwrap();
    tx.commit().await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let cutoff2 = crm_core::domain::truncate_to_micros(chrono::Utc::now());
    tokio::time::sleep(Duration::from_millis(5)).await;
    crm.log_activity(NewActivity::new(c.id, ActivityKind::Email))
        .await
        .unwrap();
    let mut tx = store.begin(t, ctx()).await.unwrap();
    let n = tx.purge_feed(cutoff2).await.unwrap();
    tx.commit().await.unwrap();
    let reader = ConsumerName::parse("late").unwrap();
    let mut tx = store.begin(t, ctx()).await.unwrap();
    let rest = tx.next_batch(&reader, 100).await.unwrap();
    tx.commit().await.unwrap();
    (n, rest.iter().map(|e| (e.kind, e.operation)).collect())
}

async fn a_feed_purge_after_both_purges_in_one_transaction(target: Target) {
    let memory = InMemoryStore::new();
    let expected = a_later_purge_on(&memory).await;
    assert_eq!(
        expected,
        (1, vec![(FeedKind::Activity, Operation::Created)]),
        "memory"
    );
    let Some(ts) = TestStore::on(target).await else {
        return;
    };
    assert_eq!(a_later_purge_on(&*ts).await, expected);
}

// ---------------------------------------------------------------------
// 4. Transactions written by hand: several tenants, multi-row
//    statements, savepoints rolled back and released.
// ---------------------------------------------------------------------

async fn hand_written_transactions_over_two_tenants(target: Target) {
    let Some(ts) = TestStore::on(target).await else {
        return;
    };
    let db = ts.db();
    let (a, b) = (TenantId::new(), TenantId::new());
    let mut ids = BTreeMap::new();
    for (t, name) in [(a, "a"), (b, "b")] {
        for i in 1..=3 {
            let c = ts
                .scope(t, &ctx())
                .create_contact(new_contact(&format!("{name}{i}@example.com"), "Ada"))
                .await
                .unwrap();
            ids.insert(format!("{name}{i}"), c.id.as_uuid());
        }
    }
    let (act_a, act_b, act_rolled) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let id = |k: &str| ids[k];
    let activity = |t: TenantId, act: Uuid, c: Uuid| {
        format!("('{}', '{act}', '{c}', 'call', now(), now())", t.as_uuid())
    };
    let sql = format!(
        "BEGIN; \
         SET LOCAL crm.actor TO 'user:by-hand'; \
         UPDATE crm.contacts SET title = 'r1' WHERE id IN ('{a1}', '{b1}', '{a2}'); \
         INSERT INTO crm.activities (tenant_id, id, contact_id, kind, occurred_at, created_at) \
             VALUES {ab}, {aa}; \
         SAVEPOINT s1; \
         UPDATE crm.contacts SET title = 'r2' WHERE id IN ('{a3}', '{b2}'); \
         INSERT INTO crm.activities (tenant_id, id, contact_id, kind, occurred_at, created_at) \
             VALUES {ar}; \
         ROLLBACK TO SAVEPOINT s1; \
         UPDATE crm.contacts SET title = 'r3' WHERE id = '{a3}'; \
         SAVEPOINT s2; \
         UPDATE crm.contacts SET title = 'r4' WHERE id = '{b3}'; \
         RELEASE SAVEPOINT s2; \
         SAVEPOINT s3; \
         UPDATE crm.contacts SET title = 'r5' WHERE id IN ('{a1}', '{b1}'); \
         ROLLBACK TO SAVEPOINT s3; \
         UPDATE crm.contacts SET title = 'r6' WHERE id = '{a2}'; \
         COMMIT",
        a1 = id("a1"),
        a2 = id("a2"),
        a3 = id("a3"),
        b1 = id("b1"),
        b2 = id("b2"),
        b3 = id("b3"),
        ab = activity(b, act_b, id("b1")),
        aa = activity(a, act_a, id("a1")),
        ar = activity(a, act_rolled, id("a3")),
    );
    db.client()
        .await
        .batch_execute(&db.sql(&sql))
        .await
        .unwrap();
    // A rolled-back transaction by hand, too.
    db.client()
        .await
        .batch_execute(&db.sql(&format!(
            "BEGIN; UPDATE crm.contacts SET title = 'never' WHERE id IN ('{}', '{}'); ROLLBACK",
            id("a1"),
            id("b1")
        )))
        .await
        .unwrap();

    let expect = [
        (a, vec![id("a1"), id("a2"), act_a, id("a3"), id("a2")]),
        (b, vec![id("b1"), act_b, id("b3")]),
    ];
    for (t, ids_expected) in expect {
        let events = read_all(&*ts, t).await;
        // The three creations, each its own commit, then the hand-written
        // transaction's events.
        assert_numbered(&events, 1);
        let tail: Vec<Uuid> = events[3..].iter().map(|e| e.id).collect();
        let mut got = tail.clone();
        got.sort();
        let mut want = ids_expected.clone();
        want.sort();
        assert_eq!(
            got, want,
            "tenant {t}: each committed change once: {events:#?}"
        );
        assert!(
            events.iter().all(|e| e.id != act_rolled),
            "nothing rolled back"
        );
        for e in &events[3..] {
            if let Some(d) = &e.diff {
                let title = d.get("title").map(|c| c.new.to_string());
                assert!(
                    !matches!(title.as_deref(), Some("\"r2\"" | "\"r5\"" | "\"never\"")),
                    "a rolled-back change: {e:?}"
                );
            }
        }
        assert_eq!(
            head(&*ts, t).await,
            events.last().unwrap().position,
            "tenant {t}: the head"
        );
        if !db.is_citus() {
            assert_tables_consistent(&table_state(&ts, t).await);
        }
    }
}

// ---------------------------------------------------------------------
// 5. A repeatable-read transaction by hand whose first event is a
//    history version.
// ---------------------------------------------------------------------

/// Its snapshot misses a commit of the tenant made after it: either it
/// commits and both are in the feed with their positions, or it fails as
/// a serialization failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeatable_read_history_write_by_hand() {
    let ts = TestStore::new().await;
    let t = TenantId::new();
    let c = ts
        .scope(t, &ctx())
        .create_contact(new_contact("rr@example.com", "Ada"))
        .await
        .unwrap();
    let by_hand = ts.db().client().await;
    by_hand
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1; \
             UPDATE crm.contacts SET title = 'rr' WHERE id = '{}'; \
             INSERT INTO crm.activities (tenant_id, id, contact_id, kind, occurred_at, created_at) \
             VALUES ('{}', '{}', '{}', 'call', now(), now())",
            c.id,
            t.as_uuid(),
            Uuid::now_v7(),
            c.id
        ))
        .await
        .unwrap();
    let other = ts
        .scope(t, &ctx())
        .create_contact(new_contact("rr2@example.com", "Ada"))
        .await
        .unwrap();
    let committed = by_hand.batch_execute("COMMIT").await;
    let events = read_all(&*ts, t).await;
    assert_numbered(&events, 1);
    match committed {
        Ok(()) => {
            assert_eq!(events.len(), 4);
            assert_eq!(events[1].id, other.id.as_uuid());
            assert_eq!(events[2].position, FeedPosition::new(3, 1));
            assert_eq!(events[3].position, FeedPosition::new(3, 2));
        }
        Err(e) => {
            assert_eq!(
                e.code(),
                Some(&tokio_postgres::error::SqlState::T_R_SERIALIZATION_FAILURE),
                "{e:?}"
            );
            assert_eq!(events.len(), 2);
        }
    }
    assert_eq!(head(&*ts, t).await, events.last().unwrap().position);
    assert_tables_consistent(&table_state(&ts, t).await);
}

// ---------------------------------------------------------------------
// 6. Everything a store transaction writes, mixed in one transaction and
//    across several, against the in-memory store.
// ---------------------------------------------------------------------

fn company(name: &str) -> NewCompany {
    NewCompany::new(CompanyName::parse(name).unwrap())
}

/// A scenario of every kind of change; returns the feed's shape.
async fn everything_on(store: &DynStore) -> Vec<Shape> {
    let t = everything_written(store).await;
    let events = read_all(store, t).await;
    assert_numbered(&events, 1);
    assert_eq!(head(store, t).await, events.last().unwrap().position);
    shape(&events)
}

/// The writes of [`everything_on`]; returns the tenant.
async fn everything_written(store: &DynStore) -> TenantId {
    let t = TenantId::new();
    let crm = store.scope(t, &ctx());
    let c1 = crm
        .create_contact(new_contact("mix1@example.com", "Ada"))
        .await
        .unwrap();
    let c2 = crm
        .create_contact(new_contact("mix2@example.com", "Bob"))
        .await
        .unwrap();
    // Activities and signals before and after history writes, in one
    // transaction.
    let mut tx = store.begin(t, ctx()).await.unwrap();
    tx.log_activity(NewActivity::new(c1.id, ActivityKind::Call))
        .await
        .unwrap();
    let c1 = tx
        .update_contact(c1.id, c1.version, rename("Augusta"))
        .await
        .unwrap();
    tx.record_signal(NewSignal::new(c1.id, SignalKind::PAGE_VIEW))
        .await
        .unwrap();
    let tag = tx
        .create_tag(NewTag::new(TagName::parse("vip").unwrap()))
        .await
        .unwrap();
    tx.attach_tag(tag.id, RecordRef::Contact(c1.id))
        .await
        .unwrap();
    let task = tx
        .create_task(NewTask::new(TaskTitle::parse("Call back").unwrap()))
        .await
        .unwrap();
    let co = tx.create_company(company("Engines")).await.unwrap();
    let d = tx
        .create_deal(NewDeal::new(
            c1.id,
            DealTitle::parse("Engine").unwrap(),
            Money::parse("10", crm_core::domain::Currency::parse("EUR").unwrap()).unwrap(),
        ))
        .await
        .unwrap();
    tx.log_activities(&[
        NewActivity::new(c1.id, ActivityKind::Email),
        NewActivity::new(c2.id, ActivityKind::Meeting),
    ])
    .await
    .unwrap();
    // A failed operation in the middle (its savepoint rolled back).
    assert!(
        tx.update_contact(c2.id, crate_version(7), rename("Never"))
            .await
            .is_err()
    );
    tx.complete_task(task.id, chrono::Utc::now()).await.unwrap();
    tx.detach_tag(tag.id, RecordRef::Contact(c1.id))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // A rolled-back transaction.
    let mut tx = store.begin(t, ctx()).await.unwrap();
    tx.update_contact(c2.id, c2.version, rename("Rolled"))
        .await
        .unwrap();
    tx.log_activity(NewActivity::new(c2.id, ActivityKind::Call))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    // Companies merged, contacts merged and unmerged, an erasure, deletes.
    let co2 = crm.create_company(company("Engines Two")).await.unwrap();
    crm.attach_tag(tag.id, RecordRef::Contact(c2.id))
        .await
        .unwrap();
    crm.log_activity(NewActivity::new(c2.id, ActivityKind::Note))
        .await
        .unwrap();
    let mut tx = store.begin(t, ctx()).await.unwrap();
    tx.merge_companies(co.id, co2.id).await.unwrap();
    tx.merge_contacts(c1.id, c2.id, ConflictPolicy::default())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = store.begin(t, ctx()).await.unwrap();
    let merge = tx.contact_merges(c1.id).await.unwrap()[0].id;
    tx.unmerge_contacts(merge, UnmergeConflicts::KeepCurrent)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = store.begin(t, ctx()).await.unwrap();
    tx.erase_contact(c2.id).await.unwrap();
    tx.delete_deal(d.id).await.unwrap();
    tx.delete_tag(tag.id).await.unwrap();
    tx.delete_contact(c1.id).await.unwrap();
    tx.commit().await.unwrap();
    t
}

fn crate_version(v: i64) -> crm_core::Version {
    crm_core::Version::new(v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_change_matches_the_in_memory_store() {
    let memory = InMemoryStore::with_pipelines(crm_core::conformance::test_pipelines());
    let expected = everything_on(&memory).await;
    let ts = TestStore::new().await;
    let got = per_commit_sorted(everything_on(&*ts).await);
    let expected = per_commit_sorted(expected);
    if got != expected {
        let n = got.len().max(expected.len());
        let mut lines = String::new();
        for i in 0..n {
            lines.push_str(&format!(
                "{i:3}: pg {:?}\n     mem {:?}\n",
                got.get(i),
                expected.get(i)
            ));
        }
        panic!("the feeds differ:\n{lines}");
    }
}

// ---------------------------------------------------------------------
// 7. Bulk imports and upserts.
// ---------------------------------------------------------------------

async fn imports_on(store: &DynStore) -> Vec<Shape> {
    let t = imports_written(store).await;
    let events = read_all(store, t).await;
    assert_numbered(&events, 1);
    assert_eq!(head(store, t).await, events.last().unwrap().position);
    shape(&events)
}

async fn imports_written(store: &DynStore) -> TenantId {
    let t = TenantId::new();
    let crm = store.scope(t, &ctx());
    let existing = crm
        .create_contact(new_contact("imp3@example.com", "Old"))
        .await
        .unwrap();
    crm.log_activity(NewActivity::new(existing.id, ActivityKind::Call))
        .await
        .unwrap();
    let mut csv = String::from("email,first_name,last_name,title\n");
    for i in 0..25 {
        csv.push_str(&format!("imp{i}@example.com,Imp{i},Orter,T{i}\n"));
    }
    // A row repeating an email of the file.
    csv.push_str("imp4@example.com,Again,Orter,T99\n");
    let report = crm_core::bulk::import_contacts_csv(
        store,
        t,
        &ctx(),
        csv.as_bytes(),
        crm_core::bulk::ImportOptions::default().with_batch_size(10),
    )
    .await
    .unwrap();
    let _ = report;
    // Upserts mixed with a history write and an activity in one
    // transaction.
    let mut tx = store.begin(t, ctx()).await.unwrap();
    tx.log_activity(NewActivity::new(existing.id, ActivityKind::Email))
        .await
        .unwrap();
    tx.upsert_contacts(
        &[
            new_contact("imp1@example.com", "Upserted"),
            new_contact("fresh@example.com", "Fresh"),
            new_contact("imp2@example.com", "Upserted"),
        ],
        ConflictPolicy::Incoming,
    )
    .await
    .unwrap();
    tx.log_activity(NewActivity::new(existing.id, ActivityKind::Note))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    t
}

async fn bulk_imports_number_every_version(target: Target) {
    let memory = InMemoryStore::new();
    let expected = imports_on(&memory).await;
    let Some(ts) = TestStore::on(target).await else {
        return;
    };
    let got = imports_on(&*ts).await;
    assert_eq!(per_commit_sorted(got), per_commit_sorted(expected));
}

// ---------------------------------------------------------------------
// 8. purge_feed's count after purge_history copied events.
// ---------------------------------------------------------------------

async fn counts_on(store: &DynStore) -> (u64, u64, u64, Vec<Shape>) {
    let t = TenantId::new();
    let crm = store.scope(t, &ctx());
    let c = crm
        .create_contact(new_contact("count@example.com", "Ada"))
        .await
        .unwrap();
    let mut tx = store.begin(t, ctx()).await.unwrap();
    let c = tx
        .update_contact(c.id, c.version, rename("B"))
        .await
        .unwrap();
    tx.log_activity(NewActivity::new(c.id, ActivityKind::Call))
        .await
        .unwrap();
    let c = tx
        .update_contact(c.id, c.version, rename("C"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let c = crm
        .update_contact(c.id, c.version, rename("D"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let cutoff = crm_core::domain::truncate_to_micros(chrono::Utc::now());
    tokio::time::sleep(Duration::from_millis(5)).await;
    crm.update_contact(c.id, c.version, rename("E"))
        .await
        .unwrap();
    let mut tx = store.begin(t, ctx()).await.unwrap();
    let h1 = tx.purge_history(cutoff).await.unwrap();
    tx.commit().await.unwrap();
    let mut tx = store.begin(t, ctx()).await.unwrap();
    let h2 = tx.purge_history(cutoff).await.unwrap();
    tx.commit().await.unwrap();
    let before = read_all(store, t).await;
    let mut tx = store.begin(t, ctx()).await.unwrap();
    let f = tx.purge_feed(cutoff).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(h2, 0, "a second purge finds nothing");
    let _ = before;
    let mut tx = store.begin(t, ctx()).await.unwrap();
    let rest = tx
        .next_batch(&ConsumerName::parse("fresh").unwrap(), 100)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    (h1, h2, f, shape(&rest))
}

async fn a_feed_purge_counts_the_events_purge_history_kept(target: Target) {
    let memory = InMemoryStore::new();
    let expected = counts_on(&memory).await;
    assert_eq!(expected.2, 5, "memory purges 1 + 3 + 1 events");
    let Some(ts) = TestStore::on(target).await else {
        return;
    };
    let got = counts_on(&*ts).await;
    assert_eq!(got, expected);
}

// ---------------------------------------------------------------------
// 9. An unmerge racing a history purge (the loser's tombstone).
// ---------------------------------------------------------------------

/// A merge deleted the loser (its tombstone is purgeable); an unmerge is
/// open (it closed the tombstone and wrote the journal) when a history
/// purge of the tenant starts. Both must commit.
async fn an_unmerge_racing_a_history_purge(target: Target) {
    let Some(ts) = TestStore::on(target).await else {
        return;
    };
    let store: Arc<crm_core::PostgresStore> = Arc::new((*ts).clone());
    let t = TenantId::new();
    let crm = store.scope(t, &ctx());
    let s = crm
        .create_contact(new_contact("survivor@example.com", "Ada"))
        .await
        .unwrap();
    let l = crm
        .create_contact(new_contact("loser@example.com", "Bob"))
        .await
        .unwrap();
    let mut tx = store.begin(t, ctx()).await.unwrap();
    tx.merge_contacts(s.id, l.id, ConflictPolicy::default())
        .await
        .unwrap();
    let merge = tx.contact_merges(s.id).await.unwrap()[0].id;
    tx.commit().await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let cutoff = chrono::Utc::now();
    let before = read_all(&*store, t).await;

    let mut unmerger = store.begin(t, ctx()).await.unwrap();
    unmerger
        .unmerge_contacts(merge, UnmergeConflicts::KeepCurrent)
        .await
        .unwrap();
    let purger = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let mut tx = store.begin(t, ctx()).await?;
            let n = tx.purge_history(cutoff).await?;
            tx.commit().await?;
            Ok::<u64, crm_core::Error>(n)
        })
    };
    support::until_a_backend_waits_for_a_lock(ts.db()).await;
    let unmerged = unmerger.commit().await;
    let purged = purger.await.unwrap();
    assert!(
        unmerged.is_ok() && purged.is_ok(),
        "unmerge: {unmerged:?}; purge: {purged:?}"
    );
    let after = read_all(&*store, t).await;
    assert!(after.len() > before.len());
    assert_numbered(&after, 1);
}

crate::on_every_target!(
    purge_history_in_the_writing_transaction_keeps_its_events,
    a_delete_and_a_history_purge_in_one_transaction,
    purge_history_then_purge_feed_in_one_transaction,
    an_erasure_racing_a_history_purge,
    a_feed_purge_after_both_purges_in_one_transaction,
    hand_written_transactions_over_two_tenants,
    bulk_imports_number_every_version,
    a_feed_purge_counts_the_events_purge_history_kept,
    an_unmerge_racing_a_history_purge,
    purges_racing_writers_and_consumers,
    small_batches_read_what_one_large_read_does,
    reading_one_event_at_a_time_crosses_commits,
    a_consumer_reading_in_pairs_passes_a_commit_whose_events_were_purged,
    a_consumer_reading_in_pairs_passes_the_purging_transaction,
    two_history_purges_at_once,
    the_two_purges_from_two_stores_one_waiting_for_the_other,
    a_history_purge_and_writes_in_one_transaction,
);

// ---------------------------------------------------------------------
// 10. The feed schema 17 wrote (then upgraded) against schema 18's, for
//     the same writes: same events, same order, same positions.
// ---------------------------------------------------------------------

async fn store_at_17() -> (support::TestDb, crm_core::PostgresStore) {
    let db = support::TestDb::create().await;
    db.schema_at_version("upgrade", 17).await;
    let store = crm_core::PostgresStore::builder(&db.url())
        .pool_size(4)
        .pipelines(crm_core::conformance::test_pipelines())
        .schema("upgrade")
        .build()
        .await
        .unwrap();
    (db, store)
}

#[track_caller]
fn assert_same_shapes(got: &[Shape], expected: &[Shape]) {
    if got != expected {
        let n = got.len().max(expected.len());
        let mut lines = String::new();
        for i in 0..n {
            let mark = if got.get(i) == expected.get(i) {
                " "
            } else {
                "*"
            };
            lines.push_str(&format!(
                "{mark}{i:3}: 18 {:?}\n      17 {:?}\n",
                got.get(i),
                expected.get(i)
            ));
        }
        panic!("the feeds differ:\n{lines}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_change_is_the_feed_schema_17_wrote() {
    let (db, old) = store_at_17().await;
    let t = everything_written(&old).await;
    let u = imports_written(&old).await;
    assert_eq!(old.migrate().await.unwrap(), vec![18, 19, 20]);
    let expected = shape(&read_all(&old, t).await);
    let expected_imports = shape(&read_all(&old, u).await);
    drop(old);
    drop(db);
    let ts = TestStore::new().await;
    let got = everything_on(&*ts).await;
    assert_same_shapes(&got, &expected);
    let got = imports_on(&*ts).await;
    assert_same_shapes(&got, &expected_imports);
}

// ---------------------------------------------------------------------
// 11. Writers, history purges, feed purges and consumers at once, over
//     several stores.
// ---------------------------------------------------------------------

#[derive(Default)]
struct Ledger {
    /// Per contact, the versions its committed changes made.
    versions: BTreeMap<Uuid, Vec<i64>>,
    /// Activities of committed transactions.
    committed: std::collections::HashSet<Uuid>,
    /// Activities of rolled-back or failed transactions.
    rolled_back: std::collections::HashSet<Uuid>,
}

async fn purges_racing_writers_and_consumers(target: Target) {
    use tokio::sync::Mutex;
    let Some(ts) = TestStore::on(target).await else {
        return;
    };
    let per_writer = if target == Target::Citus { 15 } else { 40 };
    let writers = 3;
    let make = || {
        Arc::new(
            crm_core::PostgresStore::from_pool(
                support::pool_for(ts.db().store_config(), 4),
                crm_core::conformance::test_pipelines(),
            )
            .with_schema(ts.db().schema())
            .unwrap(),
        )
    };
    let stores: Vec<Arc<crm_core::PostgresStore>> = (0..5).map(|_| make()).collect();
    let t = TenantId::new();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut own = Vec::new();
    for w in 0..writers {
        let c = stores[0]
            .scope(t, &ctx())
            .create_contact(new_contact(&format!("w{w}@example.com"), "Ada"))
            .await
            .unwrap();
        ledger.lock().await.versions.insert(c.id.as_uuid(), vec![1]);
        own.push(c);
    }
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Progress of the consumers: the commit time of an event each has
    // acked (the feed purge stays behind both).
    let progress: Arc<Mutex<[Option<chrono::DateTime<chrono::Utc>>; 2]>> =
        Arc::new(Mutex::new([None, None]));

    let mut writer_tasks = Vec::new();
    for (w, c) in own.into_iter().enumerate() {
        let store = Arc::clone(&stores[w % 2]);
        let ledger = Arc::clone(&ledger);
        writer_tasks.push(tokio::spawn(async move {
            let mut version = c.version;
            for i in 0..per_writer {
                let mut tx = store.begin(t, ctx()).await.unwrap();
                let act = NewActivity::new(c.id, ActivityKind::Call);
                let mut acts = Vec::new();
                let before = i % 3 == 0;
                if before {
                    acts.push(tx.log_activity(act.clone()).await.unwrap().id.as_uuid());
                }
                let updated = tx
                    .update_contact(c.id, version, rename(&format!("N{w}x{i}")))
                    .await
                    .unwrap();
                if i % 2 == 0 {
                    tx.record_signal(NewSignal::new(c.id, SignalKind::PAGE_VIEW))
                        .await
                        .unwrap();
                }
                let updated = if i % 4 == 1 {
                    tx.update_contact(c.id, updated.version, retitle(&format!("T{i}")))
                        .await
                        .unwrap()
                } else {
                    updated
                };
                if !before {
                    acts.push(tx.log_activity(act).await.unwrap().id.as_uuid());
                }
                tokio::time::sleep(Duration::from_millis(fastrand::u64(0..4))).await;
                let rollback = i % 7 == 3;
                let mut l = ledger.lock().await;
                if rollback {
                    tx.rollback().await.unwrap();
                    l.rolled_back.extend(acts);
                } else {
                    match tx.commit().await {
                        Ok(()) => {
                            let vs = l.versions.get_mut(&c.id.as_uuid()).unwrap();
                            for v in (version.get() + 1)..=updated.version.get() {
                                vs.push(v);
                            }
                            version = updated.version;
                            l.committed.extend(acts);
                        }
                        Err(e) => panic!("a writer's commit failed: {e:?}"),
                    }
                }
            }
        }));
    }

    let history_purger = {
        let store = Arc::clone(&stores[2]);
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut purged = 0u64;
            let mut failures = Vec::new();
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(fastrand::u64(0..15))).await;
                let mut tx = store.begin(t, ctx()).await.unwrap();
                match tx.purge_history(chrono::Utc::now()).await {
                    Ok(n) => {
                        purged += n;
                        if let Err(e) = tx.commit().await {
                            failures.push(format!("{e:?}"));
                        }
                    }
                    Err(e) => {
                        failures.push(format!("{e:?}"));
                        let _ = tx.rollback().await;
                    }
                }
            }
            (purged, failures)
        })
    };
    let feed_purger = {
        let store = Arc::clone(&stores[3]);
        let done = Arc::clone(&done);
        let progress = Arc::clone(&progress);
        tokio::spawn(async move {
            let mut purged = 0u64;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(fastrand::u64(0..15))).await;
                let cutoff = {
                    let p = progress.lock().await;
                    match (p[0], p[1]) {
                        (Some(a), Some(b)) => a.min(b),
                        _ => continue,
                    }
                };
                let mut tx = store.begin(t, ctx()).await.unwrap();
                purged += tx.purge_feed(cutoff).await.unwrap();
                tx.commit().await.unwrap();
            }
            purged
        })
    };
    // Consumer 1: next_batch and ack in one transaction.
    let consumer = {
        let store = Arc::clone(&stores[4]);
        let done = Arc::clone(&done);
        let progress = Arc::clone(&progress);
        tokio::spawn(async move {
            let name = ConsumerName::parse("exact").unwrap();
            let mut seen: Vec<FeedEvent> = Vec::new();
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let mut tx = store.begin(t, ctx()).await.unwrap();
                let batch = tx.next_batch(&name, 13).await.unwrap();
                if let Some(last) = batch.last() {
                    tx.ack(&name, last.position).await.unwrap();
                }
                tx.commit().await.unwrap();
                if let Some(last) = batch.last() {
                    progress.lock().await[0] = Some(last.committed_at);
                }
                let empty = batch.is_empty();
                seen.extend(batch);
                if empty {
                    if finished {
                        return seen;
                    }
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
            }
        })
    };
    // Consumer 2: a subscription.
    let subscriber = {
        use futures_util::StreamExt;
        let store = Arc::clone(&stores[1]);
        let done = Arc::clone(&done);
        let progress = Arc::clone(&progress);
        tokio::spawn(async move {
            let stream = crm_core::feed::subscribe(
                store,
                t,
                ctx(),
                ConsumerName::parse("stream").unwrap(),
                crm_core::feed::no_wake_ups(),
                crm_core::feed::SubscribeOptions {
                    batch: 5,
                    poll_interval: Duration::from_millis(10),
                    ..crm_core::feed::SubscribeOptions::default()
                },
            );
            let mut stream = Box::pin(stream);
            let mut seen: Vec<FeedEvent> = Vec::new();
            loop {
                let next = tokio::time::timeout(Duration::from_millis(500), stream.next()).await;
                match next {
                    Ok(Some(Ok(e))) => {
                        // The event before this one is acked once this one
                        // is asked for.
                        if let Some(prev) = seen.last() {
                            progress.lock().await[1] = Some(prev.committed_at);
                        }
                        seen.push(e);
                    }
                    Ok(Some(Err(e))) => panic!("the subscription failed: {e:?}"),
                    Ok(None) => panic!("the subscription ended"),
                    Err(_) => {
                        if done.load(std::sync::atomic::Ordering::SeqCst) {
                            return seen;
                        }
                    }
                }
            }
        })
    };
    for w in writer_tasks {
        w.await.unwrap();
    }
    // Let the consumers catch up with the purges still running.
    tokio::time::sleep(Duration::from_millis(300)).await;
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let (history_purged, history_failures) = history_purger.await.unwrap();
    let feed_purged = feed_purger.await.unwrap();
    let seen = consumer.await.unwrap();
    let streamed = subscriber.await.unwrap();
    assert!(
        history_failures.is_empty(),
        "history purges failed: {history_failures:?}"
    );
    assert!(history_purged > 0, "the history purges purged");
    eprintln!(
        "{} events read; {history_purged} versions purged; {feed_purged} events purged from the feed",
        seen.len()
    );

    assert_numbered(&seen, 1);
    let ledger = ledger.lock().await;
    let mut versions: BTreeMap<Uuid, Vec<i64>> = BTreeMap::new();
    let mut activities = std::collections::HashSet::new();
    for e in &seen {
        match e.kind {
            FeedKind::Contact => versions.entry(e.id).or_default().push(e.version.unwrap()),
            FeedKind::Activity => {
                assert!(activities.insert(e.id), "an activity twice: {e:?}");
            }
            _ => {}
        }
    }
    assert_eq!(
        versions, ledger.versions,
        "every committed version, once, in order"
    );
    assert_eq!(
        activities, ledger.committed,
        "every committed activity, once"
    );
    assert!(ledger.rolled_back.iter().all(|a| !activities.contains(a)));
    let key = |e: &FeedEvent| (e.position, e.kind, e.id, e.operation, e.version);
    assert_eq!(
        streamed.iter().map(key).collect::<Vec<_>>(),
        seen.iter().map(key).collect::<Vec<_>>(),
        "the subscription saw the same events"
    );
    // What the feed purges counted and what remains are every event.
    let store = &stores[0];
    let mut tx = store.begin(t, ctx()).await.unwrap();
    let fresh = ConsumerName::parse("fresh").unwrap();
    let mut remaining = 0u64;
    let mut at = tx.consumer_position(&fresh).await.unwrap();
    loop {
        let got = tx.events_after(at, 50).await.unwrap();
        let Some(last) = got.last() else { break };
        at = last.position;
        remaining += got.len() as u64;
    }
    let h = tx.feed_head().await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(h, seen.last().unwrap().position, "the head");
    assert_eq!(
        feed_purged + remaining,
        seen.len() as u64,
        "purged ({feed_purged}) and remaining ({remaining}) events"
    );
    if !ts.db().is_citus() {
        assert_tables_consistent(&table_state(&ts, t).await);
    }
}

// ---------------------------------------------------------------------
// 12. Reads in small batches, from every position, across a commit whose
//     events are rows of both tables (and copies made by a purge).
// ---------------------------------------------------------------------

async fn small_batches_read_what_one_large_read_does(target: Target) {
    let Some(ts) = TestStore::on(target).await else {
        return;
    };
    let store: &DynStore = &*ts;
    let t = TenantId::new();
    let crm = store.scope(t, &ctx());
    let c = crm
        .create_contact(new_contact("batch-c@example.com", "Ada"))
        .await
        .unwrap();
    let d = crm
        .create_contact(new_contact("batch-d@example.com", "Bob"))
        .await
        .unwrap();
    let mut tx = store.begin(t, ctx()).await.unwrap();
    tx.log_activity(NewActivity::new(c.id, ActivityKind::Call))
        .await
        .unwrap();
    let c = tx
        .update_contact(c.id, c.version, rename("C1"))
        .await
        .unwrap();
    let d = tx
        .update_contact(d.id, d.version, rename("D1"))
        .await
        .unwrap();
    tx.record_signal(NewSignal::new(c.id, SignalKind::PAGE_VIEW))
        .await
        .unwrap();
    let c = tx
        .update_contact(c.id, c.version, rename("C2"))
        .await
        .unwrap();
    tx.log_activity(NewActivity::new(d.id, ActivityKind::Email))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    crm.update_contact(c.id, c.version, rename("C3"))
        .await
        .unwrap();
    let _ = d;
    let check = |all: Vec<FeedEvent>| async move {
        assert_numbered(&all, 1);
        let full: Vec<_> = all.iter().map(|e| (e.position, e.kind, e.id)).collect();
        let mut starts = vec![FeedPosition::START];
        starts.extend(all.iter().map(|e| e.position));
        for max in [2, 3] {
            for start in &starts {
                let mut got = Vec::new();
                let mut at = *start;
                let mut tx = store.begin(t, ctx()).await.unwrap();
                loop {
                    let batch = tx.events_after(at, max).await.unwrap();
                    assert!(batch.len() <= max);
                    let Some(last) = batch.last() else { break };
                    at = last.position;
                    got.extend(batch.iter().map(|e| (e.position, e.kind, e.id)));
                }
                tx.commit().await.unwrap();
                let want: Vec<_> = full.iter().filter(|e| e.0 > *start).cloned().collect();
                assert_eq!(got, want, "batches of {max} after {start:?}");
            }
        }
        all
    };
    let before = check(read_all_with(store, t, 100).await).await;
    // C's versions of the middle commit have ended (the first in the same
    // commit), D's has not: after the purge, that commit's events are
    // copies in feed_events and one history version.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut tx = store.begin(t, ctx()).await.unwrap();
    assert_eq!(tx.purge_history(chrono::Utc::now()).await.unwrap(), 4);
    tx.commit().await.unwrap();
    let after = check(read_all_with(store, t, 100).await).await;
    assert_eq!(
        after
            .iter()
            .map(|e| (e.position, e.kind, e.id, e.version))
            .collect::<Vec<_>>(),
        before
            .iter()
            .map(|e| (e.position, e.kind, e.id, e.version))
            .collect::<Vec<_>>()
    );
    if !ts.db().is_citus() {
        assert_tables_consistent(&table_state(&ts, t).await);
    }
}

// ---------------------------------------------------------------------
// 13. A history purge and a feed purge of one tenant from two stores,
//     each waiting for the other's open transaction.
// ---------------------------------------------------------------------

async fn the_two_purges_from_two_stores_one_waiting_for_the_other(target: Target) {
    let Some(ts) = TestStore::on(target).await else {
        return;
    };
    let make = || {
        Arc::new(
            crm_core::PostgresStore::from_pool(
                support::pool_for(ts.db().store_config(), 3),
                crm_core::conformance::test_pipelines(),
            )
            .with_schema(ts.db().schema())
            .unwrap(),
        )
    };
    let (one, two) = (make(), make());
    for history_first in [true, false] {
        let t = TenantId::new();
        let crm = one.scope(t, &ctx());
        let c = crm
            .create_contact(new_contact("purges@example.com", "Ada"))
            .await
            .unwrap();
        let mut tx = one.begin(t, ctx()).await.unwrap();
        let c = tx
            .update_contact(c.id, c.version, rename("B"))
            .await
            .unwrap();
        tx.log_activity(NewActivity::new(c.id, ActivityKind::Call))
            .await
            .unwrap();
        let c = tx
            .update_contact(c.id, c.version, rename("C"))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let cutoff = crm_core::domain::truncate_to_micros(chrono::Utc::now());
        tokio::time::sleep(Duration::from_millis(5)).await;
        crm.update_contact(c.id, c.version, rename("D"))
            .await
            .unwrap();
        let total = read_all(&*one, t).await;
        assert_eq!(total.len(), 5);

        let (first, second) = if history_first {
            (Arc::clone(&one), Arc::clone(&two))
        } else {
            (Arc::clone(&two), Arc::clone(&one))
        };
        let mut open = first.begin(t, ctx()).await.unwrap();
        let first_result = if history_first {
            open.purge_history(cutoff).await.unwrap()
        } else {
            open.purge_feed(cutoff).await.unwrap()
        };
        let waiting = {
            let second = Arc::clone(&second);
            tokio::spawn(async move {
                let mut tx = second.begin(t, ctx()).await?;
                let n = if history_first {
                    tx.purge_feed(cutoff).await?
                } else {
                    tx.purge_history(cutoff).await?
                };
                tx.commit().await?;
                Ok::<u64, crm_core::Error>(n)
            })
        };
        support::until_a_backend_waits_for_a_lock(ts.db()).await;
        open.commit().await.unwrap();
        let second_result = waiting.await.unwrap().unwrap();
        let (history_purged, feed_purged) = if history_first {
            (first_result, second_result)
        } else {
            (second_result, first_result)
        };
        assert_eq!(history_purged, 2, "history_first {history_first}");
        assert_eq!(feed_purged, 4, "history_first {history_first}");
        let mut tx = one.begin(t, ctx()).await.unwrap();
        let rest = tx
            .next_batch(&ConsumerName::parse("fresh").unwrap(), 100)
            .await
            .unwrap();
        let h = tx.feed_head().await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(
            rest.iter()
                .map(|e| (e.position, e.id, e.version))
                .collect::<Vec<_>>(),
            total[4..]
                .iter()
                .map(|e| (e.position, e.id, e.version))
                .collect::<Vec<_>>()
        );
        assert_eq!(h, total[4].position);
        if !ts.db().is_citus() {
            assert_tables_consistent(&table_state(&ts, t).await);
        }
    }
}

// ---------------------------------------------------------------------
// 14. A history purge before and after writes of the same transaction
//     (versions of earlier transactions only).
// ---------------------------------------------------------------------

async fn a_history_purge_and_writes_in_one_transaction(target: Target) {
    let Some(ts) = TestStore::on(target).await else {
        return;
    };
    let store: &DynStore = &*ts;
    let t = TenantId::new();
    let crm = store.scope(t, &ctx());
    let c = crm
        .create_contact(new_contact("mixed-purge@example.com", "Ada"))
        .await
        .unwrap();
    let c = crm
        .update_contact(c.id, c.version, rename("B"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let cutoff = chrono::Utc::now();
    // Purge first (copies commit 1's creation, index 1), then write.
    let mut tx = store.begin(t, ctx()).await.unwrap();
    assert_eq!(tx.purge_history(cutoff).await.unwrap(), 1);
    let c = tx
        .update_contact(c.id, c.version, rename("C"))
        .await
        .unwrap();
    tx.log_activity(NewActivity::new(c.id, ActivityKind::Call))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // Write first (closing commit 2's version), then purge it.
    let mut tx = store.begin(t, ctx()).await.unwrap();
    let c = tx
        .update_contact(c.id, c.version, rename("D"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let n = tx.purge_history(chrono::Utc::now()).await.unwrap();
    assert_eq!(n, 2, "commit 2's and commit 3's versions");
    tx.log_activity(NewActivity::new(c.id, ActivityKind::Email))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let events = read_all(store, t).await;
    assert_eq!(
        events
            .iter()
            .map(|e| (e.position, e.kind, e.version, e.diff.is_some()))
            .collect::<Vec<_>>(),
        vec![
            (FeedPosition::new(1, 1), FeedKind::Contact, Some(1), false),
            (FeedPosition::new(2, 1), FeedKind::Contact, Some(2), false),
            (FeedPosition::new(3, 1), FeedKind::Contact, Some(3), false),
            (FeedPosition::new(3, 2), FeedKind::Activity, None, false),
            (FeedPosition::new(4, 1), FeedKind::Contact, Some(4), true),
            (FeedPosition::new(4, 2), FeedKind::Activity, None, false),
        ]
    );
    assert_eq!(head(store, t).await, FeedPosition::new(4, 2));
    if !ts.db().is_citus() {
        assert_tables_consistent(&table_state(&ts, t).await);
    }
}

// ---------------------------------------------------------------------
// 15. Reading one event at a time (max = 1) from the last event of a
//     commit.
// ---------------------------------------------------------------------

/// `events_after(p, 1)` where `p` is the last event of its commit must
/// return the first event of the next commit (the in-memory store does).
/// The read takes the commits from `p`'s own on, at most `max` of them:
/// with `max = 1` that is `p`'s commit alone, which has nothing after `p`.
async fn reading_one_event_at_a_time_crosses_commits(target: Target) {
    async fn one_by_one(store: &DynStore) -> Vec<FeedPosition> {
        let t = TenantId::new();
        let crm = store.scope(t, &ctx());
        for i in 0..3 {
            crm.create_contact(new_contact(&format!("one{i}@example.com"), "Ada"))
                .await
                .unwrap();
        }
        let reader = ConsumerName::parse("one-by-one").unwrap();
        let mut got = Vec::new();
        for _ in 0..5 {
            let mut tx = store.begin(t, ctx()).await.unwrap();
            let batch = tx.next_batch(&reader, 1).await.unwrap();
            if let Some(e) = batch.first() {
                tx.ack(&reader, e.position).await.unwrap();
                got.push(e.position);
            }
            tx.commit().await.unwrap();
        }
        got
    }
    let memory = InMemoryStore::new();
    let expected = one_by_one(&memory).await;
    assert_eq!(
        expected,
        vec![
            FeedPosition::new(1, 1),
            FeedPosition::new(2, 1),
            FeedPosition::new(3, 1)
        ]
    );
    let Some(ts) = TestStore::on(target).await else {
        return;
    };
    assert_eq!(one_by_one(&*ts).await, expected);
}

// ---------------------------------------------------------------------
// 16. Consequences of 1 and 2 for a consumer reading small batches.
// ---------------------------------------------------------------------

/// Reads everything with `next_batch(consumer, 2)` and acks, until a read
/// returns nothing; the ids read.
async fn in_pairs(store: &DynStore, t: TenantId) -> Vec<Uuid> {
    let reader = ConsumerName::parse("pairs").unwrap();
    let mut got = Vec::new();
    loop {
        let mut tx = store.begin(t, ctx()).await.unwrap();
        let batch = tx.next_batch(&reader, 2).await.unwrap();
        if let Some(e) = batch.last() {
            tx.ack(&reader, e.position).await.unwrap();
        }
        tx.commit().await.unwrap();
        if batch.is_empty() {
            return got;
        }
        got.extend(batch.iter().map(|e| e.id));
    }
}

/// A transaction creates and deletes a contact and purges the history
/// after both (1: its two events go with the versions, its marker stays);
/// a contact is created after it. A consumer reading two events at a time
/// must still reach that contact.
async fn a_consumer_reading_in_pairs_passes_a_commit_whose_events_were_purged(target: Target) {
    async fn run(store: &DynStore) -> (usize, bool) {
        let t = TenantId::new();
        let crm = store.scope(t, &ctx());
        crm.create_contact(new_contact("first@example.com", "Ada"))
            .await
            .unwrap();
        let mut tx = store.begin(t, ctx()).await.unwrap();
        let c = tx
            .create_contact(new_contact("brief@example.com", "Ada"))
            .await
            .unwrap();
        tx.delete_contact(c.id).await.unwrap();
        tx.purge_history(chrono::Utc::now() + chrono::Duration::seconds(1))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let last = crm
            .create_contact(new_contact("last@example.com", "Ada"))
            .await
            .unwrap();
        let got = in_pairs(store, t).await;
        (got.len(), got.last() == Some(&last.id.as_uuid()))
    }
    let memory = InMemoryStore::new();
    let expected = run(&memory).await;
    assert_eq!(expected, (4, true), "memory");
    let Some(ts) = TestStore::on(target).await else {
        return;
    };
    assert_eq!(
        run(&*ts).await,
        expected,
        "(events read, the last contact among them)"
    );
}

/// After the purges of one transaction (2), a consumer that had read up to
/// the purged position's next commit reads on two at a time and must
/// reach the commits after the purging transaction.
async fn a_consumer_reading_in_pairs_passes_the_purging_transaction(target: Target) {
    async fn run(store: &DynStore) -> Vec<Uuid> {
        let t = TenantId::new();
        let crm = store.scope(t, &ctx());
        let c = crm
            .create_contact(new_contact("pairs@example.com", "Ada"))
            .await
            .unwrap();
        crm.update_contact(c.id, c.version, rename("B"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let cutoff = chrono::Utc::now();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let a = crm
            .log_activity(NewActivity::new(c.id, ActivityKind::Call))
            .await
            .unwrap();
        // The consumer has read the activity.
        let reader = ConsumerName::parse("pairs").unwrap();
        let mut tx = store.begin(t, ctx()).await.unwrap();
        tx.ack(&reader, FeedPosition::new(3, 1)).await.unwrap();
        tx.commit().await.unwrap();
        let mut tx = store.begin(t, ctx()).await.unwrap();
        tx.purge_history(cutoff).await.unwrap();
        tx.purge_feed(cutoff).await.unwrap();
        tx.commit().await.unwrap();
        let _ = a;
        let b = crm
            .log_activity(NewActivity::new(c.id, ActivityKind::Email))
            .await
            .unwrap();
        let got = in_pairs(store, t).await;
        assert!(
            got.contains(&b.id.as_uuid()),
            "the activity after the purges: {got:?}"
        );
        got
    }
    let memory = InMemoryStore::new();
    let expected = run(&memory).await;
    let Some(ts) = TestStore::on(target).await else {
        return;
    };
    assert_eq!(run(&*ts).await.len(), expected.len());
}

// ---------------------------------------------------------------------
// 17. Two history purges of one tenant at once (two stores).
// ---------------------------------------------------------------------

async fn two_history_purges_at_once(target: Target) {
    let Some(ts) = TestStore::on(target).await else {
        return;
    };
    let make = || {
        Arc::new(
            crm_core::PostgresStore::from_pool(
                support::pool_for(ts.db().store_config(), 3),
                crm_core::conformance::test_pipelines(),
            )
            .with_schema(ts.db().schema())
            .unwrap(),
        )
    };
    let (one, two) = (make(), make());
    let t = TenantId::new();
    let crm = one.scope(t, &ctx());
    let mut c = crm
        .create_contact(new_contact("twice@example.com", "Ada"))
        .await
        .unwrap();
    for i in 0..6 {
        c = crm
            .update_contact(c.id, c.version, rename(&format!("N{i}")))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    let cutoff = chrono::Utc::now();
    let before = read_all(&*one, t).await;
    let mut open = one.begin(t, ctx()).await.unwrap();
    let first = open.purge_history(cutoff).await.unwrap();
    let waiting = {
        let two = Arc::clone(&two);
        tokio::spawn(async move {
            let mut tx = two.begin(t, ctx()).await?;
            let n = tx.purge_history(cutoff).await?;
            tx.commit().await?;
            Ok::<u64, crm_core::Error>(n)
        })
    };
    support::until_a_backend_waits_for_a_lock(ts.db()).await;
    open.commit().await.unwrap();
    let second = waiting.await.unwrap().unwrap();
    assert_eq!((first, second), (6, 0));
    let after = read_all(&*one, t).await;
    assert_eq!(
        after
            .iter()
            .map(|e| (e.position, e.version))
            .collect::<Vec<_>>(),
        before
            .iter()
            .map(|e| (e.position, e.version))
            .collect::<Vec<_>>()
    );
    if !ts.db().is_citus() {
        assert_tables_consistent(&table_state(&ts, t).await);
    }
}

// ---------------------------------------------------------------------
// 1b. Delete a contact and purge the history in one transaction.
// ---------------------------------------------------------------------

/// "Delete this contact and drop its history": the delete's tombstone is
/// written before the cutoff, in the purging transaction, which has no
/// marker yet; the purge deletes it with its event. A consumer must still
/// be told the contact was deleted.
async fn a_delete_and_a_history_purge_in_one_transaction(target: Target) {
    async fn run(store: &DynStore) -> (Vec<(FeedKind, Operation, Option<i64>)>, FeedPosition) {
        let t = TenantId::new();
        let crm = store.scope(t, &ctx());
        let c = crm
            .create_contact(new_contact("forget-me@example.com", "Ada"))
            .await
            .unwrap();
        let mut tx = store.begin(t, ctx()).await.unwrap();
        assert!(tx.delete_contact(c.id).await.unwrap());
        tokio::time::sleep(Duration::from_millis(2)).await;
        let n = tx.purge_history(chrono::Utc::now()).await.unwrap();
        assert_eq!(n, 2, "the creation's version and the tombstone");
        tx.commit().await.unwrap();
        let events = read_all(store, t).await;
        assert_numbered(&events, 1);
        (
            events
                .iter()
                .map(|e| (e.kind, e.operation, e.version))
                .collect(),
            head(store, t).await,
        )
    }
    let memory = InMemoryStore::new();
    let expected = run(&memory).await;
    assert_eq!(
        expected,
        (
            vec![
                (FeedKind::Contact, Operation::Created, Some(1)),
                (FeedKind::Contact, Operation::Deleted, Some(1)),
            ],
            FeedPosition::new(2, 1)
        ),
        "memory"
    );
    let Some(ts) = TestStore::on(target).await else {
        return;
    };
    assert_eq!(run(&*ts).await, expected);
}
