#![cfg(all(feature = "postgres", feature = "conformance"))]
//! Connection settings at and past their limits, and connections that fail
//! where an error's advice matters: each setting a store can never work
//! with is refused by `build` naming it (never a panic, an abort or a
//! wait for good), no error invites a retry that cannot succeed or that
//! could write twice, and no output shows the password.

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use crm_core::{
    Actor, Context, Error, PostgresStore, Store, StoreExt, TenantId,
    domain::{ActivityKind, Email, NewActivity, NewContact, PersonName},
    store::postgres::MAX_POOL_SIZE,
};
use support::{TestDb, TestStore};

fn ctx() -> Context {
    Context::new(Actor::parse("user:settings").unwrap())
}

fn fields(e: &Error) -> Vec<(String, &'static str)> {
    e.field_errors()
        .iter()
        .map(|f| (f.field.clone(), f.code))
        .collect()
}

/// A pool size over `MAX_POOL_SIZE` is refused naming `pool_size`: the
/// pool set aside room for every connection at once, so `usize::MAX`
/// panicked ("capacity overflow") and 2^36 aborted the process. The
/// largest is accepted.
#[tokio::test]
async fn a_pool_size_over_the_largest_is_refused_naming_it() {
    let db = TestDb::create().await;
    for size in [usize::MAX, 1 << 36, MAX_POOL_SIZE + 1] {
        let e = PostgresStore::builder(&db.url())
            .pool_size(size)
            .build()
            .await
            .err()
            .unwrap_or_else(|| panic!("a pool of {size} built"));
        assert_eq!(fields(&e), [("pool_size".into(), "out_of_range")], "{e}");
    }
    let store = PostgresStore::builder(&db.url())
        .pool_size(MAX_POOL_SIZE)
        .build()
        .await
        .expect("the largest pool");
    store.migrate().await.unwrap();
}

/// An acquire timeout of zero, which no connection can be opened within,
/// is refused naming `acquire_timeout` (it failed every attempt to build,
/// each time as "retryable").
#[tokio::test]
async fn a_zero_acquire_timeout_is_refused_naming_it() {
    let db = TestDb::create().await;
    let e = PostgresStore::builder(&db.url())
        .acquire_timeout(Duration::ZERO)
        .build()
        .await
        .expect_err("built");
    assert_eq!(
        fields(&e),
        [("acquire_timeout".into(), "out_of_range")],
        "{e}"
    );
}

/// The builder's `Debug` output leaves the password out, in both forms of
/// connection string, as the store's own does.
#[test]
fn the_builders_debug_output_leaves_the_password_out() {
    for url in [
        "postgres://crm:hunter2-secret@db.example.com/crm",
        "host=db.example.com user=crm password=hunter2-secret dbname=crm",
        "postgres://crm:hunter2-secret@db.example.com/crm?sslmode=verify-full&sslrootcert=/ca.pem",
    ] {
        let shown = format!("{:?}", PostgresStore::builder(url));
        assert!(!shown.contains("hunter2-secret"), "{shown}");
        assert!(shown.contains("db.example.com"), "{shown}");
    }
}

/// A NUL byte in the connection string can never connect: not retryable
/// (the driver's encoding error was taken for a lost connection).
#[tokio::test]
async fn a_nul_in_the_connection_string_is_not_retryable() {
    for url in [
        "host=127.0.0.1 port=5432 user=post\0gres dbname=postgres",
        "host=127.0.0.1 port=5432 user=postgres dbname=post\0gres",
    ] {
        let e = PostgresStore::builder(url)
            .acquire_timeout(Duration::from_secs(5))
            .build()
            .await
            .expect_err("built");
        assert!(!e.is_retryable(), "{url:?}: {e:?}");
    }
}

/// A store over a caller's pool that can hold no connection fails at once
/// (migrate and begin waited for good).
#[tokio::test]
async fn a_store_over_a_pool_of_no_connection_fails_at_once() {
    use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
    let db = TestDb::create().await;
    let manager = Manager::from_config(
        db.config(),
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(0)
        .runtime(Runtime::Tokio1)
        .build()
        .unwrap();
    let store = PostgresStore::from_pool(pool, crm_core::conformance::test_pipelines());
    let within = Duration::from_secs(10);
    let migrated = tokio::time::timeout(within, store.migrate()).await;
    let e = migrated.expect("migrate waited").unwrap_err();
    assert!(e.to_string().contains("max_size is 0"), "{e}");
    let begun = tokio::time::timeout(within, store.begin(TenantId::new(), ctx())).await;
    assert!(begun.expect("begin waited").is_err());
}

/// A schema holding a migration's objects without its record (restored in
/// part, edited by hand) fails to migrate with an error naming the
/// migration, and applies nothing.
#[tokio::test]
async fn a_migration_that_fails_is_named() {
    let store = TestStore::new().await;
    let client = store.db().client().await;
    client
        .batch_execute("DELETE FROM crm.schema_migrations WHERE version = 16")
        .await
        .unwrap();
    let e = store.migrate().await.unwrap_err();
    let shown = e.to_string();
    assert!(
        shown.contains("migration 16 (feed_head_from_markers) failed"),
        "{shown}"
    );
    let recorded: i64 = client
        .query_one(
            "SELECT count(*) FROM crm.schema_migrations WHERE version = 16",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(recorded, 0);
}

/// A TCP proxy to the test server that, once `cut` is set, passes the
/// client's requests on but not the server's answers, closing the client's
/// side when the first answer comes: the request reached the server, its
/// answer never arrives.
async fn answer_cutting_proxy(server: (String, u16), cut: Arc<AtomicBool>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = tokio::net::TcpStream::connect((server.0.as_str(), server.1))
                .await
                .unwrap();
            let (mut from_client, mut to_client) = client.into_split();
            let (mut from_server, mut to_server) = server.into_split();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok(n @ 1..) = from_client.read(&mut buf).await {
                    if to_server.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
            let cut = cut.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok(n @ 1..) = from_server.read(&mut buf).await {
                    if cut.load(Ordering::SeqCst) {
                        let _ = to_client.shutdown().await;
                        return;
                    }
                    if to_client.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// The connection is lost after `COMMIT` reached the server and before its
/// answer came back: the transaction committed, and the error says the
/// outcome is unknown and is not retryable (it was retryable: a caller
/// following the advice, as the imports do, logged the activity twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_is_lost_is_not_retryable() {
    let owner = TestStore::new().await;
    let config = owner.db().config();
    let (host, port) = match (config.get_hosts(), config.get_ports()) {
        ([tokio_postgres::config::Host::Tcp(h), ..], [p, ..]) => (h.clone(), *p),
        ([tokio_postgres::config::Host::Tcp(h), ..], []) => (h.clone(), 5432),
        _ => panic!("the test server is not reached over TCP"),
    };
    let cut = Arc::new(AtomicBool::new(false));
    let proxy = answer_cutting_proxy((host, port), cut.clone()).await;
    let user = config.get_user().unwrap_or("postgres");
    let url = format!(
        "host=127.0.0.1 port={proxy} user={user} dbname={} sslmode=disable",
        owner.db().name()
    );
    let store = PostgresStore::builder(&url)
        .pool_size(1)
        .acquire_timeout(Duration::from_secs(10))
        .build()
        .await
        .unwrap();
    let tenant = TenantId::new();
    let contact = store
        .scope(tenant, &ctx())
        .create_contact(NewContact::new(
            Email::parse("lost-commit@example.com").unwrap(),
            PersonName::parse("Ada").unwrap(),
            PersonName::parse("Lovelace").unwrap(),
        ))
        .await
        .unwrap();
    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    tx.log_activity(NewActivity::new(contact.id, ActivityKind::Call))
        .await
        .unwrap();
    cut.store(true, Ordering::SeqCst);
    let e = tx.commit().await.expect_err("the answer was cut");
    assert!(!e.is_retryable(), "{e:?}");
    assert!(e.is_commit_outcome_unknown(), "{e:?}");
    assert!(e.to_string().contains("may have committed"), "{e}");
    let client = owner.db().client().await;
    let mut stored: i64 = 0;
    for _ in 0..50 {
        stored = client
            .query_one(
                "SELECT count(*) FROM crm.activities WHERE tenant_id = $1",
                &[&tenant.as_uuid()],
            )
            .await
            .unwrap()
            .get(0);
        if stored == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stored, 1, "the transaction committed");
}
