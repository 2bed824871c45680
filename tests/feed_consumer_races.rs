#![cfg(all(feature = "postgres", feature = "conformance"))]
//! A consumer's reads racing other processes on PostgreSQL: the same named
//! consumer run by two processes, and a purge committed between a read's
//! two statements.

mod support;

use crm_core::{
    Actor, Context, Error, Store, StoreExt, TenantId,
    domain::{
        ActivityKind, ConsumerName, Email, FeedPosition, NewActivity, NewContact, PersonName,
    },
};
use support::{TestStore, until_backends_wait_for_locks};

fn ctx() -> Context {
    Context::new(Actor::parse("user:consumer").unwrap())
}

fn new_contact(email: &str) -> NewContact {
    NewContact::new(
        Email::parse(email).unwrap(),
        PersonName::parse("Ada").unwrap(),
        PersonName::parse("Lovelace").unwrap(),
    )
}

/// Two processes (two stores) run one named consumer, each applying its
/// batch and acking in the same transaction, the exactly-once recipe. The
/// second's `next_batch` waits for the first's transaction, then reads
/// after the first's ack: every event is applied once. Without the
/// consumer's lock both read the same batch and both commit its effects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_consumer_in_two_processes_applies_each_event_once() {
    let owner = TestStore::new().await;
    let tenant = TenantId::new();
    let crm = owner.scope(tenant, &ctx());
    let sink = crm
        .create_contact(new_contact("sink@x.example"))
        .await
        .unwrap();
    for i in 0..3 {
        crm.create_contact(new_contact(&format!("e{i}@x.example")))
            .await
            .unwrap();
    }
    let name = ConsumerName::parse("indexer").unwrap();
    // The consumer starts after the sink's own event.
    let mut tx = owner.begin(tenant, ctx()).await.unwrap();
    let first = tx.next_batch(&name, 1).await.unwrap();
    tx.ack(&name, first[0].position).await.unwrap();
    tx.commit().await.unwrap();

    // Applies a batch (one activity on the sink per event, itself an event
    // of the feed) and acks it, in one transaction; returns the positions
    // it applied.
    async fn apply(
        store: crm_core::PostgresStore,
        tenant: TenantId,
        name: ConsumerName,
        sink: crm_core::domain::ContactId,
    ) -> crm_core::Result<Vec<FeedPosition>> {
        let mut tx = store.begin(tenant, ctx()).await?;
        let batch = tx.next_batch(&name, 100).await?;
        for _ in &batch {
            tx.log_activity(NewActivity::new(sink, ActivityKind::Note))
                .await?;
        }
        if let Some(last) = batch.last() {
            tx.ack(&name, last.position).await?;
        }
        tx.commit().await?;
        Ok(batch.iter().map(|e| e.position).collect())
    }

    let p1 = owner.db().store();
    let mut t1 = p1.begin(tenant, ctx()).await.unwrap();
    let b1 = t1.next_batch(&name, 100).await.unwrap();
    assert_eq!(b1.len(), 3);
    // The second process reads while the first holds its batch.
    let second = tokio::spawn(apply(owner.db().store(), tenant, name.clone(), sink.id));
    until_backends_wait_for_locks(owner.db(), 1).await;
    for _ in &b1 {
        t1.log_activity(NewActivity::new(sink.id, ActivityKind::Note))
            .await
            .unwrap();
    }
    t1.ack(&name, b1.last().unwrap().position).await.unwrap();
    t1.commit().await.unwrap();
    let by_second = second.await.unwrap().unwrap();
    let last = b1.last().unwrap().position;
    assert!(
        by_second.iter().all(|p| *p > last),
        "the second process reads after the first one's ack: {by_second:?} after {last:?}"
    );
    // What the second read are the first's own effects (three activities).
    assert_eq!(by_second.len(), 3);

    // Two more events; both processes race for them from the start.
    for i in 3..5 {
        crm.create_contact(new_contact(&format!("e{i}@x.example")))
            .await
            .unwrap();
    }
    let (a, b) = tokio::join!(
        apply(owner.db().store(), tenant, name.clone(), sink.id),
        apply(owner.db().store(), tenant, name.clone(), sink.id)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(
        !a.is_empty() && !b.is_empty(),
        "each read a batch: {a:?}, {b:?}"
    );
    assert!(
        a.iter().all(|p| !b.contains(p)),
        "no event applied by both processes: {a:?}, {b:?}"
    );
    let (earlier, later) = if a[0] < b[0] { (&a, &b) } else { (&b, &a) };
    assert!(
        later[0] > *earlier.last().unwrap(),
        "the later batch starts after the earlier one's ack"
    );
}

/// The two ways of running a consumer: `subscribe` acks what it delivered
/// in a transaction of its own, then reads on; the exactly-once recipe
/// reads, applies, then acks in one transaction. A process of each on one
/// consumer: no deadlock, and the subscriber reads after the recipe's ack.
/// (A transaction that acked and then read, while the recipe held its
/// batch, would hold the cursor's row while waiting for the consumer's
/// lock, and deadlock with the recipe's ack.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ack_then_a_read_beside_a_read_then_an_ack_do_not_deadlock() {
    let owner = TestStore::new().await;
    let tenant = TenantId::new();
    let crm = owner.scope(tenant, &ctx());
    for i in 0..3 {
        crm.create_contact(new_contact(&format!("f{i}@x.example")))
            .await
            .unwrap();
    }
    let name = ConsumerName::parse("mixed").unwrap();
    let mut recipe = owner.begin(tenant, ctx()).await.unwrap();
    let batch = recipe.next_batch(&name, 100).await.unwrap();
    assert_eq!(batch.len(), 3);
    let store = owner.db().store();
    let (n, first) = (name.clone(), batch[0].position);
    let subscriber = tokio::spawn(async move {
        let mut tx = store.begin(tenant, ctx()).await?;
        tx.ack(&n, first).await?;
        tx.commit().await?;
        let mut tx = store.begin(tenant, ctx()).await?;
        let got = tx.next_batch(&n, 100).await?;
        tx.rollback().await?;
        Ok::<_, crm_core::Error>(got)
    });
    until_backends_wait_for_locks(owner.db(), 1).await;
    recipe
        .ack(&name, batch.last().unwrap().position)
        .await
        .unwrap();
    recipe.commit().await.unwrap();
    let got = tokio::time::timeout(std::time::Duration::from_secs(30), subscriber)
        .await
        .expect("the subscriber ends")
        .unwrap()
        .unwrap();
    assert!(got.is_empty(), "read after the recipe's ack: {got:?}");
}

/// A task that reads a batch in one transaction and acks it in another
/// before ending the first: the ack takes no consumer lock, so it does not
/// wait for the task's own reading transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_in_a_second_transaction_of_the_reader_does_not_wait_for_it() {
    let owner = TestStore::new().await;
    let tenant = TenantId::new();
    let crm = owner.scope(tenant, &ctx());
    crm.create_contact(new_contact("one@x.example"))
        .await
        .unwrap();
    let name = ConsumerName::parse("split").unwrap();
    let mut reading = owner.begin(tenant, ctx()).await.unwrap();
    let batch = reading.next_batch(&name, 10).await.unwrap();
    let acked = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        let mut tx = owner.begin(tenant, ctx()).await?;
        tx.ack(&name, batch[0].position).await?;
        tx.commit().await
    })
    .await
    .expect("the ack does not wait for the reading transaction");
    acked.unwrap();
    reading.rollback().await.unwrap();
}

/// A consumer behind the retention: a purge commits after `next_batch` has
/// read the head (which had the consumer's cursor above the purged
/// position) and before it reads the events. The read starts past the
/// purged events; `next_batch` must not return it as the next batch (a
/// silent jump over the purged commits) but `FeedExpired`, and so must
/// `events_after`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_between_the_head_and_the_read_is_feed_expired() {
    let owner = TestStore::new().await;
    // The consumer acks the end of a commit, or the middle of one (a batch
    // cut inside a commit of two events, whose next event the purge takes
    // with the commit: the read then starts at the next commit's first).
    for (by_consumer, mid_commit) in [(true, false), (false, false), (true, true), (false, true)] {
        let tenant = TenantId::new();
        let crm = owner.scope(tenant, &ctx());
        let before_cut = if mid_commit { 1 } else { 5 };
        for i in 0..before_cut {
            let mut tx = owner.begin(tenant, ctx()).await.unwrap();
            tx.create_contact(new_contact(&format!("c{i}@x.example")))
                .await
                .unwrap();
            if mid_commit {
                tx.create_contact(new_contact(&format!("d{i}@x.example")))
                    .await
                    .unwrap();
            }
            tx.commit().await.unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let cut = chrono::Utc::now();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        for i in 5..10 {
            crm.create_contact(new_contact(&format!("c{i}@x.example")))
                .await
                .unwrap();
        }
        let name = ConsumerName::parse("late").unwrap();
        let mut tx = owner.begin(tenant, ctx()).await.unwrap();
        let first = tx.next_batch(&name, 1).await.unwrap();
        let acked = first[0].position;
        tx.ack(&name, acked).await.unwrap();
        tx.commit().await.unwrap();

        // `history` is read by the events' statement, not by the head's: a
        // lock on it stops the reader between the two.
        let side = owner.db().client().await;
        side.batch_execute("BEGIN; LOCK TABLE crm.history IN ACCESS EXCLUSIVE MODE")
            .await
            .unwrap();
        let reader = owner.db().store();
        let consumer = name.clone();
        let read = tokio::spawn(async move {
            let mut tx = reader.begin(tenant, ctx()).await.unwrap();
            let r = if by_consumer {
                tx.next_batch(&consumer, 100).await
            } else {
                tx.events_after(acked, 100).await
            };
            let _ = tx.rollback().await;
            r
        });
        until_backends_wait_for_locks(owner.db(), 1).await;
        let mut purge = owner.begin(tenant, ctx()).await.unwrap();
        let purged = purge.purge_feed(cut).await.unwrap();
        purge.commit().await.unwrap();
        assert_eq!(
            purged,
            5 - u64::from(mid_commit) * 3,
            "the events before the cut"
        );
        side.batch_execute("ROLLBACK").await.unwrap();
        match read.await.unwrap() {
            Err(Error::FeedExpired {
                consumer,
                position,
                purged,
            }) => {
                assert_eq!(position, acked);
                assert!(purged > acked);
                assert_eq!(consumer.is_some(), by_consumer);
            }
            other => panic!(
                "the purge took the events after the cursor; expected FeedExpired, got {other:?}"
            ),
        }
        // And so does the next call.
        let mut tx = owner.begin(tenant, ctx()).await.unwrap();
        assert!(matches!(
            tx.next_batch(&name, 100).await,
            Err(Error::FeedExpired { .. })
        ));
        tx.rollback().await.unwrap();
    }
}

/// Reads dropped at any point (a caller's timeout, a stream dropped in the
/// middle of a read), some in a transaction that had begun, each after a
/// commit that a read has to number first (schema 19), the transaction
/// then dropped, rolled back or used again: none leaves a lock or a
/// transaction behind (checked after each, on the server). A read dropped
/// inside the numbering's own transaction used to hand its connection
/// back to the pool with the tenant's numbering lock held, and every later
/// read of the tenant waited for it for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_dropped_at_any_point_leave_nothing_held() {
    let ts = TestStore::new().await;
    let tenant = TenantId::new();
    let crm = ts.scope(tenant, &ctx());
    let name = ConsumerName::parse("impatient").unwrap();
    let admin = ts.db().client().await;
    let mut written = 0;
    for i in 0..100u64 {
        crm.create_contact(new_contact(&format!("d{i}@x.example")))
            .await
            .unwrap();
        written += 1;
        // Each dropped read in a process of its own: a connection it
        // handed back inside a transaction would stay there (no next user
        // ends it with its own statements).
        let impatient = ts.db().store();
        let mut tx = impatient.begin(tenant, ctx()).await.unwrap();
        let cut = std::time::Duration::from_micros(fastrand::u64(0..3_000));
        let begun_first = i % 2 == 1;
        let _ = tokio::time::timeout(cut, async {
            if begun_first {
                // The numbering then runs on a second connection.
                tx.consumer_position(&name).await?;
            }
            tx.next_batch(&name, 100).await
        })
        .await;
        // Then the transaction is dropped, rolled back, or used again.
        match i % 3 {
            0 => drop(tx),
            1 => {
                let _ = tx.rollback().await;
            }
            _ => {
                let _ = tx.consumer_position(&name).await;
                let _ = tx.commit().await;
            }
        }
        // A dropped transaction's rollback is queued, not awaited: a
        // moment for it, then no session of the database may be left
        // inside a transaction (the numbering's idle timeout, 10 s, is
        // far off).
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let stuck: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_catalog.pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid() \
                 AND state LIKE 'idle in transaction%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            stuck, 0,
            "read {i} (cut after {cut:?}) left a connection inside a transaction"
        );
        drop(impatient);
    }
    // Shorter than the numbering's idle timeout (10 s), which would end a
    // session left behind and hide it.
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let mut tx = ts.begin(tenant, ctx()).await.unwrap();
        let events = tx.next_batch(&name, 1000).await.unwrap();
        tx.commit().await.unwrap();
        events
    })
    .await
    .expect("a read after the dropped ones waits for nothing they left");
    assert_eq!(read.len(), written);
}
