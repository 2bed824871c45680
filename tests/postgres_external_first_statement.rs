//! External links on PostgreSQL: a link refused as the
//! first statement of a transaction (its BEGIN pipelined with the link's
//! savepoint) leaves the transaction usable and the holder's link intact.

mod support;

use crm_core::{
    Actor, Context, Error, Store, TenantId,
    domain::{Email, EntityKind, ExternalId, ExternalLink, ExternalSystem, NewContact, PersonName},
};
use support::{Target, TestStore};

fn ctx() -> Context {
    Context::new(Actor::parse("user:test").unwrap())
}

fn contact(email: &str) -> NewContact {
    NewContact::new(
        Email::parse(email).unwrap(),
        PersonName::parse("Ada").unwrap(),
        PersonName::parse("Lovelace").unwrap(),
    )
}

fn link(record: uuid::Uuid) -> ExternalLink {
    ExternalLink {
        kind: EntityKind::Contact,
        record,
        external: ExternalId::parse("E-1").unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_refused_as_the_first_statement_leaves_the_transaction_usable() {
    refused_link(Target::Plain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_refused_as_the_first_statement_leaves_the_transaction_usable_on_citus() {
    refused_link(Target::Citus).await;
}

async fn refused_link(target: Target) {
    let Some(ts) = TestStore::on(target).await else {
        return;
    };
    let tenant = TenantId::new();
    let system = ExternalSystem::parse("hubspot").unwrap();
    let mut tx = ts.begin(tenant, ctx()).await.unwrap();
    let a = tx.create_contact(contact("a@example.com")).await.unwrap();
    let b = tx.create_contact(contact("b@example.com")).await.unwrap();
    tx.link_external_ids(&system, &[link(a.id.as_uuid())])
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let mut tx = ts.begin(tenant, ctx()).await.unwrap();
    let refused = tx.link_external_ids(&system, &[link(b.id.as_uuid())]).await;
    assert!(
        matches!(refused, Err(Error::Duplicate { ref existing_id, .. }) if *existing_id == a.id.as_uuid().to_string()),
        "{refused:?}"
    );
    let c = tx.create_contact(contact("c@example.com")).await.unwrap();
    tx.commit().await.unwrap();

    let mut tx = ts.begin(tenant, ctx()).await.unwrap();
    assert!(tx.get_contact(c.id).await.unwrap().is_some());
    let held = tx
        .records_by_external_id(
            &system,
            EntityKind::Contact,
            &[ExternalId::parse("E-1").unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(
        held.values().copied().collect::<Vec<_>>(),
        vec![a.id.as_uuid()]
    );
    tx.commit().await.unwrap();
}
