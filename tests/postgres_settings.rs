#![cfg(all(feature = "postgres", feature = "conformance"))]
//! The acting context reaches the database as `SET LOCAL` literals (so that
//! a distributed PostgreSQL passes it on to its workers): generated hostile
//! text — quotes, backslashes, dollar signs, semicolons, comment markers,
//! line breaks, odd Unicode — must arrive unchanged in the history of the
//! write it accompanies, on plain PostgreSQL and on Citus (where the
//! history is written on a worker).

mod support;

use crm_core::{
    Actor, Context, StoreExt, TenantId,
    domain::{Email, FeedPosition, NewContact, PersonName},
    history::HistoryEntity,
};
use proptest::{
    prelude::*,
    test_runner::{Config, TestRunner},
};
use support::{Target, TestStore};

/// Text built from the characters that matter to SQL literals and to the
/// simple-query protocol, and some that matter to Unicode handling; `free`
/// text (a reason) also holds spaces and line breaks, which identifiers (a
/// request id, a key) may not.
fn hostile(max: usize, free: bool) -> impl Strategy<Value = String> {
    let mut pieces: Vec<&'static str> = vec![
        "'",
        "\\",
        "''",
        "\\'",
        "$$",
        "$tag$",
        ";",
        "--",
        "/*",
        "E'",
        "\"",
        "é😀€",
        "x",
        "ab",
    ];
    if free {
        pieces.extend([
            "\n",
            " ",
            "\u{200B}",
            "\u{FEFF}",
            "SET LOCAL crm.actor TO 'x'",
        ]);
    }
    proptest::collection::vec(proptest::sample::select(pieces), 1..max).prop_map(|v| v.concat())
}

async fn hostile_context_text_arrives_unchanged_in_the_history(target: Target) {
    let Some(store) = TestStore::on(target).await else {
        return;
    };
    let handle = tokio::runtime::Handle::current();
    let mut runner = TestRunner::new(Config {
        cases: 48,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        hostile(12, false),
        hostile(30, true),
        hostile(12, false),
        hostile(12, false),
    );
    let written = std::sync::atomic::AtomicUsize::new(0);
    let result = runner.run(&strategy, |(actor, reason, request, key)| {
        // Text the domain refuses never reaches the store.
        let Ok(ctx) = Context::parse(&format!("user:{actor}"), Some(&reason), Some(&request))
            .map_err(drop)
            .and_then(|c| c.with_idempotency_key(&format!("src:{key}")).map_err(drop))
        else {
            return Ok(());
        };
        let (actor, reason, request, key) = (
            ctx.actor().as_str().to_string(),
            ctx.reason().map(str::to_string),
            ctx.request_id().map(str::to_string),
            ctx.idempotency_key().map(str::to_string),
        );
        let entry = tokio::task::block_in_place(|| {
            handle.block_on(async {
                let tenant = TenantId::new();
                let crm = store.scope(tenant, &ctx);
                let contact = crm
                    .create_contact(NewContact::new(
                        Email::parse("ctx@example.com").unwrap(),
                        PersonName::parse("Ada").unwrap(),
                        PersonName::parse("Lovelace").unwrap(),
                    ))
                    .await
                    .unwrap();
                let page = store
                    .scope(tenant, &Context::new(Actor::parse("user:reader").unwrap()))
                    .entity_history(HistoryEntity::Contact(contact.id), &Default::default())
                    .await
                    .unwrap();
                page.items
                    .into_iter()
                    .next()
                    .expect("the creation's version")
            })
        });
        written.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        prop_assert_eq!(&entry.actor, &actor);
        prop_assert_eq!(&entry.reason, &reason);
        prop_assert_eq!(&entry.request_id, &request);
        prop_assert_eq!(&entry.idempotency_key, &key);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let written = written.into_inner();
    assert!(
        written >= 36,
        "only {written} of 48 contexts were valid: the strategy is too hostile"
    );
}

/// A read transaction (`Store::begin_read`, which the one-call reads use)
/// begins `READ ONLY`: its reads see the tenant's records, a write in it
/// fails naming the read-only transaction and writes nothing (no contact,
/// no history version, no feed event), and the pool's next writing
/// transaction records its actor as before. (Which settings a read
/// transaction sends is not observable through the store; the
/// conformance point on one-call reads checks that they still see the
/// tenant, on Citus too.)
async fn a_read_transaction_reads_the_tenant_and_refuses_writes(target: Target) {
    let Some(store) = TestStore::on(target).await else {
        return;
    };
    let tenant = TenantId::new();
    let ctx = Context::new(Actor::parse("user:writer").unwrap());
    let crm = store.scope(tenant, &ctx);
    let email = |s: &str| Email::parse(s).unwrap();
    let new = |s: &str| {
        NewContact::new(
            email(s),
            PersonName::parse("Ada").unwrap(),
            PersonName::parse("Lovelace").unwrap(),
        )
    };
    let ada = crm.create_contact(new("ada@example.com")).await.unwrap();

    let mut tx = crm.begin_read().await.unwrap();
    assert_eq!(
        tx.get_contact(ada.id).await.unwrap().map(|c| c.id),
        Some(ada.id),
        "a read transaction sees its tenant's records"
    );
    let message = tx
        .create_contact(new("bob@example.com"))
        .await
        .expect_err("a write in a read transaction fails")
        .to_string();
    assert!(
        message.contains("read-only transaction"),
        "a write in a read transaction fails, naming why: {message}"
    );
    drop(tx);
    let other = store.scope(TenantId::new(), &ctx);
    assert!(
        other.get_contact(ada.id).await.unwrap().is_none(),
        "a read transaction of another tenant does not see the record"
    );
    assert!(
        crm.get_contact_by_email(&email("bob@example.com"))
            .await
            .unwrap()
            .is_none(),
        "the refused write left no contact"
    );
    let history = crm
        .entity_history(HistoryEntity::Contact(ada.id), &Default::default())
        .await
        .unwrap();
    assert_eq!(history.items.len(), 1, "one version: the creation");
    let events = crm
        .begin()
        .await
        .unwrap()
        .events_after(FeedPosition::START, 100)
        .await
        .unwrap();
    assert_eq!(events.len(), 1, "one event: the creation");
    // The pool's connections still work for writes, with the context.
    let bob = crm.create_contact(new("bob@example.com")).await.unwrap();
    let entry = crm
        .entity_history(HistoryEntity::Contact(bob.id), &Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .next()
        .expect("the creation's version");
    assert_eq!(entry.actor, "user:writer");
}

crate::on_every_target!(
    hostile_context_text_arrives_unchanged_in_the_history,
    a_read_transaction_reads_the_tenant_and_refuses_writes,
);
