//! The feed's commit marker (schema 8): a transaction's
//! first event undone by a savepoint, and events of two tenants in one
//! transaction, written through `crm_feed_write` as the store's triggers
//! write them. Each asserts what a reader must see.

mod support;

use crm_core::{
    Actor, Context, Store, TenantId,
    domain::{ConsumerName, FeedKind},
};
use support::TestStore;
use uuid::Uuid;

fn ctx() -> Context {
    Context::new(Actor::parse("user:test").unwrap())
}

fn write(ts: &TestStore, tenant: TenantId, entity: Uuid) -> String {
    ts.db().sql(&format!(
        "SELECT crm.crm_feed_write('{}', 'contact', '{entity}', 'created', 1, now(), \
         'user:probe', NULL, NULL, NULL)",
        tenant.as_uuid()
    ))
}

async fn events(ts: &TestStore, tenant: TenantId) -> Vec<Uuid> {
    let mut tx = ts.begin(tenant, ctx()).await.unwrap();
    let batch = tx
        .next_batch(&ConsumerName::parse("probe").unwrap(), 100)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    batch
        .iter()
        .filter(|e| e.kind == FeedKind::Contact)
        .map(|e| e.id)
        .collect()
}

/// The first event is undone with its savepoint; the next one must still
/// get a commit marker (the settings of the sequence are undone with it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undone_first_event_leaves_the_next_one_visible() {
    let ts = TestStore::new().await;
    let tenant = TenantId::new();
    let (undone, kept) = (Uuid::now_v7(), Uuid::now_v7());
    let client = ts.db().client().await;
    client
        .batch_execute(&format!(
            "BEGIN; SAVEPOINT s; {}; ROLLBACK TO SAVEPOINT s; {}; COMMIT",
            write(&ts, tenant, undone),
            write(&ts, tenant, kept)
        ))
        .await
        .unwrap();
    assert_eq!(events(&ts, tenant).await, vec![kept]);
}

/// Events of two tenants, interleaved, in one transaction: each tenant
/// sees its own, all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleaved_tenants_in_one_transaction_lose_no_event() {
    let ts = TestStore::new().await;
    let (a, b) = (TenantId::new(), TenantId::new());
    let (a1, b1, a2) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let client = ts.db().client().await;
    client
        .batch_execute(&format!(
            "BEGIN; {}; {}; {}; COMMIT",
            write(&ts, a, a1),
            write(&ts, b, b1),
            write(&ts, a, a2)
        ))
        .await
        .unwrap();
    assert_eq!(events(&ts, a).await, vec![a1, a2]);
    assert_eq!(events(&ts, b).await, vec![b1]);
}

/// A commit only inserts: its position comes from the tenant's last
/// marker, so the tenant's `feed_heads` row is written once, at its first
/// commit, and never again. (A row every commit updated grew a chain of
/// versions that no vacuum could remove while any transaction of the
/// database kept an older snapshot: each commit walked it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_take_their_positions_without_rewriting_a_row() {
    let ts = TestStore::new().await;
    let tenant = TenantId::new();
    let client = ts.db().client().await;
    let head_row = ts.db().sql(&format!(
        "SELECT xmin::text FROM crm.feed_heads WHERE tenant_id = '{}'",
        tenant.as_uuid()
    ));
    let mut first = None;
    for _ in 0..4 {
        client
            .batch_execute(&format!(
                "BEGIN; {}; COMMIT",
                write(&ts, tenant, Uuid::now_v7())
            ))
            .await
            .unwrap();
        if first.is_none() {
            first = Some(
                client
                    .query_one(&head_row, &[])
                    .await
                    .unwrap()
                    .get::<_, String>(0),
            );
        }
    }
    let first = first.unwrap();
    let rows = client.query(&head_row, &[]).await.unwrap();
    assert_eq!(rows.len(), 1, "one head row per tenant");
    assert_eq!(
        rows[0].get::<_, String>(0),
        first,
        "later commits leave the tenant's head row as the first one wrote it"
    );
    assert_eq!(events(&ts, tenant).await.len(), 4);
    let mut tx = ts.begin(tenant, ctx()).await.unwrap();
    assert_eq!(
        tx.feed_head().await.unwrap(),
        crm_core::domain::FeedPosition::new(4, 1)
    );
    tx.commit().await.unwrap();
}
