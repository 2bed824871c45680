#![cfg(all(feature = "postgres", feature = "conformance"))]
//! How many round trips the store's transactions make, counted by a proxy
//! between the store and the server: `BEGIN`, the search path and the
//! acting context go out with a transaction's first statement whichever
//! way it is sent, and a webhook's record goes out with its `COMMIT`.
//!
//! The proxy holds every answer of the server back for a moment, so that
//! requests the store pipelines all leave before any answer arrives; a
//! round trip is counted each time the store sends after an answer reached
//! it. Each operation runs once on the connection before it is counted,
//! so that its statements are prepared and cached, as in a running system.

mod support;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use crm_core::{
    ContactQuery, Context, PostgresStore, Store, StoreExt, TenantId,
    bulk::ConflictPolicy,
    conformance,
    domain::{ContactId, Email, NewContact, OwnerId, PageRequest, PersonName},
    idempotency::{HandlerError, HandlerFuture, IdempotencyGuard, InboundEvent},
};
use support::TestDb;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// How long the proxy holds each answer back.
const HOLD: Duration = Duration::from_millis(25);

/// A TCP proxy to the test server that counts round trips.
struct Proxy {
    addr: SocketAddr,
    round_trips: Arc<AtomicU64>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let round_trips = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&round_trips);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    return;
                };
                tokio::spawn(relay(client, server, Arc::clone(&counter)));
            }
        });
        Proxy { addr, round_trips }
    }

    fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::SeqCst)
    }
}

/// Relays one connection: the client's bytes at once, the server's after
/// [`HOLD`]. A send of the client that follows an answer is a round trip.
async fn relay(client: TcpStream, server: TcpStream, round_trips: Arc<AtomicU64>) {
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let answered = Arc::new(AtomicBool::new(false));
    let answered_up = Arc::clone(&answered);
    let up = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from_client.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if answered_up.swap(false, Ordering::SeqCst) {
                round_trips.fetch_add(1, Ordering::SeqCst);
            }
            if to_server.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from_server.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            tokio::time::sleep(HOLD).await;
            answered.store(true, Ordering::SeqCst);
            if to_client.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(up, down);
}

/// A migrated store on one connection through a proxy.
async fn store_through_proxy(db: &TestDb) -> (PostgresStore, Proxy) {
    db.store().migrate().await.unwrap();
    let config = db.config();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_string(),
    };
    let upstream = tokio::net::lookup_host((host.as_str(), port))
        .await
        .unwrap()
        .next()
        .unwrap();
    let proxy = Proxy::start(upstream).await;
    // A configuration of its own: `host` and `port` add to the ones set.
    let mut via = tokio_postgres::Config::new();
    via.host("127.0.0.1")
        .port(proxy.addr.port())
        .dbname(db.name());
    if let Some(user) = config.get_user() {
        via.user(user);
    }
    if let Some(password) = config.get_password() {
        via.password(password);
    }
    let store = PostgresStore::from_pool(support::pool_for(via, 1), conformance::test_pipelines());
    (store, proxy)
}

/// The round trips of the second run of `op` (the first prepares).
async fn round_trips_of<F, Fut>(proxy: &Proxy, op: F) -> u64
where
    F: Fn(u32) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    op(0).await;
    let before = proxy.round_trips();
    op(1).await;
    proxy.round_trips() - before
}

fn ctx() -> Context {
    Context::parse("user:o'brien\\", Some("it's $$ fine"), Some("req-1")).unwrap()
}

fn new_contact(email: &str) -> NewContact {
    NewContact::new(
        Email::parse(email).unwrap(),
        PersonName::parse("Ada").unwrap(),
        PersonName::parse("Lovelace").unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_sends_begin_and_its_context_with_its_first_statement() {
    let db = TestDb::create().await;
    let (store, proxy) = store_through_proxy(&db).await;
    let tenant = TenantId::new();

    // A prepared statement first: it carries BEGIN; COMMIT is the other.
    let read = round_trips_of(&proxy, |_| async {
        let mut tx = store.begin(tenant, ctx()).await.unwrap();
        tx.get_contact(ContactId::new()).await.unwrap();
        tx.commit().await.unwrap();
    })
    .await;
    assert_eq!(read, 2, "first statement with BEGIN, then COMMIT");

    // An operation of several statements: a savepoint (a simple query)
    // first.
    let mut pairs = Vec::new();
    for i in 0..2 {
        let a = store
            .scope(tenant, &ctx())
            .create_contact(new_contact(&format!("a{i}@example.com")))
            .await
            .unwrap();
        let b = store
            .scope(tenant, &ctx())
            .create_contact(new_contact(&format!("b{i}@example.com")))
            .await
            .unwrap();
        pairs.push((a.id, b.id));
    }
    let merge = round_trips_of(&proxy, |i| {
        let (store, (a, b)) = (&store, pairs[i as usize]);
        async move {
            let mut tx = store.begin(tenant, ctx()).await.unwrap();
            tx.merge_contacts(a, b, ConflictPolicy::Incoming)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
    })
    .await;
    assert_eq!(merge, MERGE_ROUND_TRIPS, "a merge");

    // A bulk upsert, which stages its rows with a simple query first.
    let bulk = round_trips_of(&proxy, |i| {
        let store = &store;
        async move {
            let mut tx = store.begin(tenant, ctx()).await.unwrap();
            tx.upsert_contacts(
                &[new_contact(&format!("bulk{i}@example.com"))],
                ConflictPolicy::Incoming,
            )
            .await
            .unwrap();
            tx.commit().await.unwrap();
        }
    })
    .await;
    assert_eq!(bulk, UPSERT_ROUND_TRIPS, "a bulk upsert of one row");
    drop(store);
}

/// A merge's round trips: its savepoint with BEGIN, the key-share lock of
/// the loser's company (taken before the contacts' locks, in the order a
/// company delete takes them), its locks, its moves (of deals, activities,
/// signals and tasks, in one), the read of the loser's tags (none here, so
/// nothing to copy), the merge journal's row (what an unmerge restores
/// from), COMMIT. Without the company lock and the tags, the
/// same before the acting context became bound parameters and the search
/// path joined `BEGIN`, as are the others below.
const MERGE_ROUND_TRIPS: u64 = 13;
/// A bulk upsert's: custom plans for the rest of the transaction (with
/// BEGIN), staging, the copy, the merge of the rows, COMMIT.
const UPSERT_ROUND_TRIPS: u64 = 9;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_sends_its_claim_with_begin_and_its_record_with_commit() {
    let db = TestDb::create().await;
    let (store, proxy) = store_through_proxy(&db).await;
    let tenant = TenantId::new();
    let guard = IdempotencyGuard::new();
    let deliver = |key: String| {
        let (store, guard) = (store.clone(), guard.clone());
        async move {
            let event = InboundEvent::new("stripe", &key, &serde_json::json!({})).unwrap();
            guard
                .run(&store, tenant, &ctx(), &event, |tx| {
                    Box::pin(async move {
                        tx.get_contact(ContactId::new()).await?;
                        Ok::<_, HandlerError>(())
                    }) as HandlerFuture<'_, ()>
                })
                .await
                .unwrap();
        }
    };
    let first = round_trips_of(&proxy, |i| deliver(format!("evt_{i}"))).await;
    assert_eq!(
        first, 2,
        "claim and statement with BEGIN, record with COMMIT"
    );
    let replay = round_trips_of(&proxy, |_| deliver("evt_0".to_string())).await;
    assert_eq!(replay, REPLAY_ROUND_TRIPS, "a replay");
    drop(store);
}

/// A replay's: the claim with BEGIN, which finds the record; then the end
/// of the transaction.
const REPLAY_ROUND_TRIPS: u64 = 2;

/// The round trips of the second run of `op`, counting what the store
/// sends up to 100 ms after `op` returned (a request sent when a
/// transaction is dropped leaves after the call).
async fn round_trips_with_late_sends<F, Fut>(proxy: &Proxy, op: F) -> u64
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    op().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = proxy.round_trips();
    op().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    proxy.round_trips() - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_call_read_ends_its_transaction_in_its_one_request() {
    let db = TestDb::create().await;
    let (store, proxy) = store_through_proxy(&db).await;
    let crm = store.scope(TenantId::new(), &ctx());
    let ada = crm
        .create_contact(new_contact("ada@example.com"))
        .await
        .unwrap();
    let owner = OwnerId::parse("user:1").unwrap();
    let page = PageRequest::first(50);
    let reads = [
        (
            "get_contact",
            round_trips_with_late_sends(&proxy, || async {
                assert!(crm.get_contact(ada.id).await.unwrap().is_some());
            })
            .await,
        ),
        (
            "search_contacts",
            round_trips_with_late_sends(&proxy, || async {
                let top = crm.search_contacts(&ContactQuery::top_leads(50)).await;
                assert_eq!(top.unwrap().items.len(), 1);
            })
            .await,
        ),
        (
            "timeline",
            round_trips_with_late_sends(&proxy, || async {
                assert!(crm.timeline(ada.id, &page).await.unwrap().items.is_empty());
            })
            .await,
        ),
        (
            "open_tasks",
            round_trips_with_late_sends(&proxy, || async {
                let tasks = crm.open_tasks(&owner, &page).await.unwrap();
                assert!(tasks.items.is_empty());
            })
            .await,
        ),
    ];
    for (read, round_trips) in reads {
        assert_eq!(
            round_trips, 1,
            "{read}: BEGIN, the statement and ROLLBACK in one request"
        );
    }
    // The pool's one connection is outside any transaction (not in a
    // read-only one left open): a write on it commits.
    let grace = crm
        .create_contact(new_contact("grace@example.com"))
        .await
        .unwrap();
    assert!(crm.get_contact(grace.id).await.unwrap().is_some());
    // A read in a transaction of the caller's own is ended by the caller.
    let mut tx = store.begin_read(crm.tenant(), ctx()).await.unwrap();
    assert!(tx.get_contact(ada.id).await.unwrap().is_some());
    assert!(tx.get_contact(grace.id).await.unwrap().is_some());
    tx.rollback().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_call_read_that_fails_in_the_server_leaves_its_connection_idle() {
    let db = TestDb::create().await;
    let (store, _proxy) = store_through_proxy(&db).await;
    let crm = store.scope(TenantId::new(), &ctx());
    let ada = crm
        .create_contact(new_contact("ada@example.com"))
        .await
        .unwrap();
    // Prepared on the connection, so that the failed run is the
    // statement's, after BEGIN, with the ROLLBACK queued behind it.
    crm.timeline(ada.id, &PageRequest::first(50)).await.unwrap();
    let locker = db.client().await;
    // The lock waits for no session of the store's: the earlier read's
    // transaction is over (it would hold the table's share lock).
    locker
        .batch_execute("BEGIN; SET LOCAL lock_timeout = '10s'")
        .await
        .unwrap();
    locker
        .batch_execute(&db.sql("LOCK TABLE crm.activities IN ACCESS EXCLUSIVE MODE"))
        .await
        .expect("a session of the store's holds a lock on activities");
    let canceller = db.client().await;
    let cancel = async {
        support::until_a_backend_waits_for_a_lock(&db).await;
        canceller
            .execute(
                "SELECT pg_cancel_backend(pid) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap();
    };
    let page = PageRequest::first(50);
    let (failed, ()) = tokio::join!(crm.timeline(ada.id, &page), cancel);
    assert!(failed.is_err(), "the cancelled read fails: {failed:?}");
    locker.batch_execute("ROLLBACK").await.unwrap();
    // No session of the store's is left inside a transaction …
    let open: i64 = canceller
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND state LIKE 'idle in transaction%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(open, 0, "a session was left inside a transaction");
    // … and the pool's one connection takes a write.
    let grace = crm
        .create_contact(new_contact("grace@example.com"))
        .await
        .unwrap();
    assert!(crm.get_contact(grace.id).await.unwrap().is_some());
}
