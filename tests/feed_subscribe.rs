#![cfg(feature = "conformance")]
//! Subscriptions to the change feed: woken by commits (an in-process
//! channel in memory, LISTEN/NOTIFY on PostgreSQL), reading by position,
//! and losing nothing when the subscriber's connections are killed.

#[cfg(feature = "postgres")]
mod support;

use std::{sync::Arc, time::Duration};

use crm_core::{
    Actor, Context, InMemoryStore, StoreExt, TenantId,
    domain::{ConsumerName, Email, FeedEvent, NewContact, PersonName},
    feed::{SubscribeOptions, WakeUps, subscribe},
};
use futures_util::StreamExt;

fn ctx() -> Context {
    Context::new(Actor::parse("user:subscriber").unwrap())
}

fn contact(i: usize) -> NewContact {
    NewContact::new(
        Email::parse(&format!("sub{i}@example.com")).unwrap(),
        PersonName::parse("Sub").unwrap(),
        PersonName::parse("Scriber").unwrap(),
    )
}

/// Options that only a wake-up can make quick: without one, a read would
/// wait an hour.
fn woken_only() -> SubscribeOptions {
    SubscribeOptions {
        poll_interval: Duration::from_secs(3600),
        ..SubscribeOptions::default()
    }
}

/// Takes `n` events from `stream`, failing after a minute.
async fn take<S>(stream: S, n: usize) -> Vec<FeedEvent>
where
    S: futures_util::Stream<Item = crm_core::Result<FeedEvent>>,
{
    let events = tokio::time::timeout(
        Duration::from_secs(60),
        stream.take(n).map(|r| r.unwrap()).collect::<Vec<_>>(),
    )
    .await
    .expect("every event arrives");
    for w in events.windows(2) {
        assert!(w[0].position < w[1].position, "in position order, once");
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_memory_subscription_is_woken_by_each_commit() {
    let store = Arc::new(InMemoryStore::new());
    let tenant = TenantId::new();
    let wake: WakeUps = store.feed_wake_ups();
    let events = subscribe(
        Arc::clone(&store),
        tenant,
        ctx(),
        ConsumerName::parse("live").unwrap(),
        wake,
        woken_only(),
    );
    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for i in 0..20 {
                store
                    .scope(tenant, &ctx())
                    .create_contact(contact(i))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let got = take(events, 20).await;
    writer.await.unwrap();
    assert_eq!(got.len(), 20);
}

/// What comes again after a stop: the events of the batch in hand, and
/// none from before it. Ten events read in batches of 4; the subscriber
/// stops holding the seventh (the second batch's third). The next one
/// starts at the fifth, the second batch's first (the first batch was
/// acked when the second was read); with batches of 1 it starts at the
/// event in hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_subscription_repeats_at_most_the_batch_in_hand() {
    for (batch, resumed_at) in [(4, 4), (1, 6)] {
        let store = Arc::new(InMemoryStore::new());
        let tenant = TenantId::new();
        for i in 0..10 {
            store
                .scope(tenant, &ctx())
                .create_contact(contact(i))
                .await
                .unwrap();
        }
        let options = SubscribeOptions {
            batch,
            ..woken_only()
        };
        let name = ConsumerName::parse("resumes").unwrap();
        let first = subscribe(
            Arc::clone(&store),
            tenant,
            ctx(),
            name.clone(),
            crm_core::feed::no_wake_ups(),
            options,
        );
        let mut first = Box::pin(first);
        let mut seen = Vec::new();
        for _ in 0..7 {
            seen.push(first.next().await.unwrap().unwrap());
        }
        drop(first);
        let again = subscribe(
            Arc::clone(&store),
            tenant,
            ctx(),
            name,
            crm_core::feed::no_wake_ups(),
            options,
        );
        let rest = take(again, 10 - resumed_at).await;
        assert_eq!(
            rest[0].position,
            seen[resumed_at].position,
            "batch {batch}: resumed at event {}",
            resumed_at + 1
        );
        assert_eq!(rest.last().unwrap().position.commit, 10);
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use support::TestStore;

    /// A store that counts the transactions begun through it.
    #[derive(Debug)]
    struct Counting {
        inner: crm_core::PostgresStore,
        begun: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl crm_core::Store for Counting {
        async fn begin(
            &self,
            tenant: TenantId,
            context: Context,
        ) -> crm_core::Result<Box<dyn crm_core::Transaction>> {
            self.begun.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.inner.begin(tenant, context).await
        }

        fn pipelines(&self) -> &crm_core::domain::Pipelines {
            self.inner.pipelines()
        }
    }

    /// A subscription that only a wake-up can make read (it would poll
    /// after an hour) gets every commit: on plain PostgreSQL, and on a
    /// Citus cluster, where the feed's triggers run on the workers and the
    /// committing session notifies its tenant's channel. The subscriber
    /// has read everything before each commit comes, so each needs a
    /// wake-up. Afterwards, idle, it reads no more (were its own reads to
    /// wake it, it would read at round-trip speed).
    async fn a_postgres_subscription_is_woken_by_notify(target: support::Target) {
        let Some(ts) = TestStore::on(target).await else {
            return;
        };
        let store = Arc::new(
            ts.db()
                .store_with(4, crm_core::conformance::test_pipelines())
                .with_feed_listener(ts.db().config()),
        );
        let counting = Arc::new(Counting {
            inner: (*store).clone(),
            begun: Default::default(),
        });
        let tenant = TenantId::new();
        let events = subscribe(
            Arc::clone(&counting),
            tenant,
            ctx(),
            ConsumerName::parse("live").unwrap(),
            store.feed_wake_ups(tenant),
            woken_only(),
        );
        // The subscription runs on its own: once it has read what there
        // is, it waits for a wake-up (or an hour) before it reads again.
        let (got_tx, mut got) = tokio::sync::mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                if got_tx.send(event.unwrap()).is_err() {
                    break;
                }
            }
        });
        let crm = store.scope(tenant, &ctx());
        let mut last = None;
        for i in 0..20 {
            crm.create_contact(contact(i)).await.unwrap();
            let event = tokio::time::timeout(Duration::from_secs(30), got.recv())
                .await
                .unwrap_or_else(|_| panic!("no wake-up for commit {i}"))
                .expect("the subscription goes on");
            assert!(last < Some(event.position), "{event:?}");
            last = Some(event.position);
            // Give the subscription time to find nothing more and wait.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = counting.begun.load(std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle = counting.begun.load(std::sync::atomic::Ordering::SeqCst) - before;
        // At most the read that acks the last event and the one its own
        // commit wakes, late under load; a subscription that woke itself
        // read hundreds of times.
        assert!(idle <= 5, "an idle subscription read {idle} times in 2 s");
        reader.abort();
    }

    crate::on_every_target!(a_postgres_subscription_is_woken_by_notify);

    /// A writer sends its `NOTIFY` only when a listener holds the channel's
    /// shared advisory lock, as the store's listening connections do: a
    /// bare `LISTEN` hears nothing, the same connection holding the lock
    /// hears the next commit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_notifies_only_while_a_subscriber_listens() {
        use futures_util::stream::poll_fn;
        use tokio_postgres::{AsyncMessage, NoTls};

        let ts = TestStore::new().await;
        let tenant = TenantId::new();
        let channel = format!("crm_feed_{}", tenant.as_uuid().simple());
        let (client, mut connection) = ts.db().config().connect(NoTls).await.unwrap();
        let (heard_tx, mut heard) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut messages = std::pin::pin!(poll_fn(move |cx| connection.poll_message(cx)));
            while let Some(Ok(message)) = messages.next().await {
                if let AsyncMessage::Notification(n) = message {
                    let _ = heard_tx.send(n.channel().to_string());
                }
            }
        });
        client
            .batch_execute(&format!("LISTEN {channel}"))
            .await
            .unwrap();
        let crm = ts.scope(tenant, &ctx());
        crm.create_contact(contact(1)).await.unwrap();
        // A commit's wake-up is sent in the same round trip as its COMMIT;
        // the next commit's round trip comes after it on the same pool.
        crm.create_contact(contact(2)).await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(500), heard.recv())
                .await
                .is_err(),
            "no NOTIFY while nobody holds the channel's lock"
        );

        client
            .batch_execute(&format!(
                "SELECT pg_advisory_lock_shared(hashtextextended('{channel}', 0))"
            ))
            .await
            .unwrap();
        crm.create_contact(contact(3)).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), heard.recv())
            .await
            .expect("a NOTIFY once a listener holds the lock");
        assert_eq!(got.as_deref(), Some(channel.as_str()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn killing_the_subscribers_connections_loses_no_event() {
        let ts = TestStore::new().await;
        let writers = ts
            .db()
            .store_with(4, crm_core::conformance::test_pipelines());
        let mut config = ts.db().config();
        config.application_name("crm-feed-subscriber");
        let subscriber = Arc::new(
            crm_core::PostgresStore::from_pool(
                support::pool_for(config.clone(), 2),
                crm_core::conformance::test_pipelines(),
            )
            .with_feed_listener(config),
        );
        let tenant = TenantId::new();
        let n = 300;
        let events = subscribe(
            Arc::clone(&subscriber),
            tenant,
            ctx(),
            ConsumerName::parse("survivor").unwrap(),
            subscriber.feed_wake_ups(tenant),
            SubscribeOptions {
                batch: 7,
                poll_interval: Duration::from_millis(200),
                ..SubscribeOptions::default()
            },
        );
        let writer = tokio::spawn(async move {
            for i in 0..n {
                writers
                    .scope(tenant, &ctx())
                    .create_contact(contact(i))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        });
        let admin = ts.db().client().await;
        let killer = tokio::spawn(async move {
            let mut killed = 0i64;
            for _ in 0..8 {
                tokio::time::sleep(Duration::from_millis(120)).await;
                let row = admin
                    .query_one(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                         WHERE application_name = 'crm-feed-subscriber' \
                         AND datname = current_database()",
                        &[],
                    )
                    .await
                    .unwrap();
                killed += row.get::<_, i64>(0);
            }
            killed
        });
        let got = take(events, n).await;
        writer.await.unwrap();
        let killed = killer.await.unwrap();
        assert!(killed > 0, "the subscriber's connections were killed");
        let ids: std::collections::HashSet<_> = got.iter().map(|e| e.id).collect();
        assert_eq!(
            ids.len(),
            n,
            "every event once, none lost ({killed} connections killed)"
        );
    }
}
