#![cfg(feature = "conformance")]
//! The operators' view of the change feed: every tenant's head, for a
//! host's own workers, and on PostgreSQL only for a member of
//! `crm_feed_operator` (row-level security).

#[cfg(feature = "postgres")]
mod support;

use crm_core::{
    Actor, Context, InMemoryStore, StoreExt, TenantId,
    domain::{Email, FeedPosition, NewContact, PersonName},
    store::FeedHeads,
};

fn ctx() -> Context {
    Context::new(Actor::parse("user:operator").unwrap())
}

fn contact(i: usize) -> NewContact {
    NewContact::new(
        Email::parse(&format!("op{i}@example.com")).unwrap(),
        PersonName::parse("Op").unwrap(),
        PersonName::parse("Erator").unwrap(),
    )
}

#[tokio::test]
async fn the_in_memory_heads_list_every_tenant_with_events() {
    let store = InMemoryStore::new();
    let (a, b, quiet) = (TenantId::new(), TenantId::new(), TenantId::new());
    store
        .scope(a, &ctx())
        .create_contact(contact(1))
        .await
        .unwrap();
    store
        .scope(b, &ctx())
        .create_contact(contact(2))
        .await
        .unwrap();
    store
        .scope(b, &ctx())
        .create_contact(contact(3))
        .await
        .unwrap();
    store
        .scope(quiet, &ctx())
        .get_contact(crm_core::domain::ContactId::new())
        .await
        .unwrap();
    let heads = store.feed_heads().await.unwrap();
    let mut expected = vec![(a, FeedPosition::new(1, 1)), (b, FeedPosition::new(2, 1))];
    expected.sort_by_key(|(t, _)| t.as_uuid());
    assert_eq!(heads, expected);
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn only_a_member_of_the_operator_role_sees_every_tenants_head() {
    use crm_core::Store;
    use support::{TestRole, TestStore};
    let ts = TestStore::new().await;
    let (a, b, purged) = (TenantId::new(), TenantId::new(), TenantId::new());
    ts.scope(a, &ctx())
        .create_contact(contact(1))
        .await
        .unwrap();
    for i in 2..4 {
        ts.scope(b, &ctx())
            .create_contact(contact(i))
            .await
            .unwrap();
    }
    // A tenant whose every event was purged: its head is the purged one.
    ts.scope(purged, &ctx())
        .create_contact(contact(4))
        .await
        .unwrap();
    let mut tx = ts.begin(purged, ctx()).await.unwrap();
    let later = chrono::Utc::now() + chrono::Duration::seconds(1);
    assert_eq!(tx.purge_feed(later).await.unwrap(), 1);
    tx.commit().await.unwrap();
    let role = TestRole::create(ts.db()).await;
    let mut config = role.config();
    config.dbname(ts.db().name());
    let as_role = crm_core::PostgresStore::from_pool(
        support::pool_for(config, 2),
        crm_core::conformance::test_pipelines(),
    );
    assert!(
        as_role.feed_heads().await.unwrap().is_empty(),
        "without the operator role, row-level security hides every head"
    );
    let admin = ts.db().client().await;
    admin
        .batch_execute(&format!(
            "DO $$ BEGIN CREATE ROLE crm_feed_operator NOLOGIN; \
             EXCEPTION WHEN duplicate_object THEN NULL; END $$; \
             GRANT crm_feed_operator TO {}",
            role.name()
        ))
        .await
        .unwrap();
    let heads = as_role.feed_heads().await.unwrap();
    let mut expected = vec![
        (a, FeedPosition::new(1, 1)),
        (b, FeedPosition::new(2, 1)),
        (purged, FeedPosition::new(1, 1)),
    ];
    expected.sort_by_key(|(t, _)| t.as_uuid());
    assert_eq!(
        heads, expected,
        "a member of crm_feed_operator sees every head"
    );
    admin
        .batch_execute(&format!("REVOKE crm_feed_operator FROM {}", role.name()))
        .await
        .unwrap();
}
