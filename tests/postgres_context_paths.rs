#![cfg(all(feature = "postgres", feature = "conformance"))]
//! The acting context at its limits — a 500-character reason full of
//! quotes, backslashes, dollar signs, comment markers and multi-byte
//! characters — through every path that sets the transaction's settings:
//! the first statement of a transaction being a bulk upsert, a merge (which
//! sets its own reason and then restores the caller's) or an erasure (which
//! marks its write), and a merge that fails (its reason must not outlive
//! it). On plain PostgreSQL and on Citus, where the settings must reach the
//! worker that writes the history.

mod support;

use crm_core::{
    Actor, Context, Error, Store, StoreExt, TenantId,
    bulk::ConflictPolicy,
    domain::{ContactId, ContactPatch, Email, NewContact, PersonName, merge_reason},
    history::{HistoryEntity, HistoryEntry, Operation},
};
use support::{Target, TestStore};

/// A reason of exactly 500 characters (the most a context takes) that is
/// hostile to SQL literals and byte-oriented code.
fn longest_hostile_reason() -> String {
    let pattern = "it's \\ \\' '' é😀€ $$ $t$ ; -- /* E'x' \"q\" \u{200B}";
    let reason: String = pattern
        .chars()
        .cycle()
        .take(Context::MAX_REASON_CHARS)
        .collect();
    assert_eq!(reason.chars().count(), 500);
    reason
}

fn ctx(reason: &str) -> Context {
    Context::parse("user:ctx-paths", Some(reason), Some("req-ctx-paths")).expect("a valid context")
}

fn new_contact(email: &str) -> NewContact {
    NewContact::new(
        Email::parse(email).unwrap(),
        PersonName::parse("Ada").unwrap(),
        PersonName::parse("Lovelace").unwrap(),
    )
}

async fn history(store: &TestStore, tenant: TenantId, id: ContactId) -> Vec<HistoryEntry> {
    store
        .scope(tenant, &Context::new(Actor::parse("user:reader").unwrap()))
        .entity_history(HistoryEntity::Contact(id), &Default::default())
        .await
        .unwrap()
        .items
}

fn rename(name: &str) -> ContactPatch {
    ContactPatch {
        first_name: Some(PersonName::parse(name).unwrap()),
        ..Default::default()
    }
}

async fn a_500_character_hostile_reason_reaches_the_history_through_every_path(target: Target) {
    let Some(store) = TestStore::on(target).await else {
        return;
    };
    let reason = longest_hostile_reason();
    let tenant = TenantId::new();

    // A bulk upsert as the transaction's first statement.
    let mut tx = store.begin(tenant, ctx(&reason)).await.unwrap();
    tx.upsert_contacts(
        &[
            new_contact("bulk@example.com"),
            new_contact("other@example.com"),
        ],
        ConflictPolicy::NonEmptyIncoming,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let crm = store.scope(tenant, &ctx(&reason));
    let bulk = crm
        .get_contact_by_email(&Email::parse("bulk@example.com").unwrap())
        .await
        .unwrap()
        .unwrap();
    let other = crm
        .get_contact_by_email(&Email::parse("other@example.com").unwrap())
        .await
        .unwrap()
        .unwrap();
    let h = history(&store, tenant, bulk.id).await;
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].reason.as_deref(), Some(reason.as_str()), "bulk upsert");
    assert_eq!(h[0].request_id.as_deref(), Some("req-ctx-paths"));

    // A merge as the first statement, then a write of the caller's own.
    // The reason is too long to take the merge's after it: the merge's
    // versions record the merge's reason alone.
    let mut tx = store.begin(tenant, ctx(&reason)).await.unwrap();
    let survivor = tx
        .merge_contacts(bulk.id, other.id, ConflictPolicy::NonEmptyIncoming)
        .await
        .unwrap();
    let survivor = tx
        .update_contact(survivor.id, survivor.version, rename("Augusta"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let merged = merge_reason(bulk.id, other.id);
    let tombstone = history(&store, tenant, other.id).await;
    assert_eq!(tombstone[0].operation, Operation::Deleted);
    assert_eq!(tombstone[0].reason.as_deref(), Some(merged.as_str()));
    let h = history(&store, tenant, bulk.id).await;
    assert_eq!(h[0].operation, Operation::Updated);
    assert_eq!(
        h[0].reason.as_deref(),
        Some(reason.as_str()),
        "the write after the merge carries the caller's reason again: {h:?}"
    );

    // A merge that fails (the loser is missing) leaves the caller's reason.
    let mut tx = store.begin(tenant, ctx(&reason)).await.unwrap();
    let survivor = tx.get_contact(survivor.id).await.unwrap().unwrap();
    let missing = tx
        .merge_contacts(
            survivor.id,
            ContactId::new(),
            ConflictPolicy::NonEmptyIncoming,
        )
        .await;
    assert!(
        matches!(missing, Err(Error::NotFound { .. })),
        "{missing:?}"
    );
    let survivor = tx
        .update_contact(survivor.id, survivor.version, rename("Byron"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let h = history(&store, tenant, bulk.id).await;
    assert_eq!(h[0].reason.as_deref(), Some(reason.as_str()), "{h:?}");

    // An erasure as the first statement, then a write of the caller's own:
    // the erasure's version is marked, the next one is not.
    let mut tx = store.begin(tenant, ctx(&reason)).await.unwrap();
    let erased = tx.erase_contact(survivor.id).await.unwrap();
    tx.update_contact(
        erased.id,
        erased.version,
        ContactPatch {
            lead_source: Some(crm_core::domain::LeadSource::Referral),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let h = history(&store, tenant, bulk.id).await;
    assert_eq!(h[0].operation, Operation::Updated, "{h:?}");
    assert_eq!(h[1].operation, Operation::Erased, "{h:?}");
    assert_eq!(h[1].reason.as_deref(), Some(reason.as_str()));
    assert_eq!(h[0].reason.as_deref(), Some(reason.as_str()));
}

crate::on_every_target!(a_500_character_hostile_reason_reaches_the_history_through_every_path);
