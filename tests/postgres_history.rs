#![cfg(all(feature = "postgres", feature = "conformance"))]
//! What only the PostgreSQL history can get wrong: changes made by SQL
//! outside the library are recorded by the triggers, with the database
//! role as the actor; the score columns stay out of the history; the
//! history table is under row-level security. On PostgreSQL and on a
//! Citus cluster (see `support::citus`), where the triggers run on the
//! workers' shards.

mod support;

use crm_core::{
    Actor, Context, PageRequest, Store, StoreExt, TenantId,
    domain::{Currency, DealTitle, Email, Money, NewContact, NewDeal, PersonName},
    history::{FieldQuery, HistoryEntity, Operation},
};
use serde_json::json;
use support::{Target, TestRole, TestStore};

fn ctx() -> Context {
    Context::new(Actor::parse("user:test").unwrap())
}

fn new_contact(email: &str) -> NewContact {
    NewContact::new(
        Email::parse(email).unwrap(),
        PersonName::parse("Ada").unwrap(),
        PersonName::parse("Lovelace").unwrap(),
    )
}

async fn an_out_of_band_sql_update_is_recorded_with_the_database_role_as_actor(target: Target) {
    let Some(store) = TestStore::on(target).await else {
        return;
    };
    let t = TenantId::new();
    let crm = store.scope(t, &ctx());
    let c = crm
        .create_contact(new_contact("oob@example.com"))
        .await
        .unwrap();
    let eur = Currency::parse("EUR").unwrap();
    let d = crm
        .create_deal(NewDeal::new(
            c.id,
            DealTitle::parse("Deal").unwrap(),
            Money::parse("50000", eur).unwrap(),
        ))
        .await
        .unwrap();

    // A plain UPDATE on a raw connection, as someone in psql would type it.
    let raw = store.db().client().await;
    let n = raw
        .execute(
            &store
                .db()
                .sql("UPDATE crm.deals SET amount = 30000 WHERE id = $1"),
            &[&d.id.as_uuid()],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    let role: String = raw
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);

    let mut tx = store.begin(t, ctx()).await.unwrap();
    let changes = tx
        .field_changes(&FieldQuery::of(HistoryEntity::Deal(d.id), "amount"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(changes.items.len(), 2, "the creation and the SQL update");
    let change = &changes.items[0];
    assert_eq!(change.operation, Operation::Updated);
    assert_eq!(
        change.actor,
        format!("db:{role}"),
        "the database role acted"
    );
    assert_eq!(change.reason, None);
    assert_eq!(change.idempotency_key, None);
    assert_eq!(change.diff["amount"].old, json!("50000"));
    assert_eq!(change.diff["amount"].new, json!("30000"));
    assert_eq!(changes.items[1].actor, "user:test");

    // A score written by SQL (on the contact's rank row), and an update
    // that sets a column to its own value, record nothing.
    raw.batch_execute(&store.db().sql(&format!(
        "UPDATE crm.contact_ranks SET score = 42 WHERE contact_id = '{0}';
         UPDATE crm.deals SET title = title WHERE id = '{1}';",
        c.id, d.id
    )))
    .await
    .unwrap();
    let n: i64 = raw
        .query_one(&store.db().sql("SELECT count(*) FROM crm.history"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3, "contact created, deal created, deal amount changed");
}

async fn the_history_table_is_under_row_level_security_for_an_ordinary_role(target: Target) {
    let Some(store) = TestStore::on(target).await else {
        return;
    };
    let (t1, t2) = (TenantId::new(), TenantId::new());
    for (t, email) in [(t1, "one@example.com"), (t2, "two@example.com")] {
        store
            .scope(t, &ctx())
            .create_contact(new_contact(email))
            .await
            .unwrap();
    }
    // On Citus the stores log in as an ordinary role of the test's already.
    let role = if store.db().is_citus() {
        None
    } else {
        Some(TestRole::create(store.db()).await)
    };
    let config = role
        .as_ref()
        .map_or_else(|| store.db().store_config(), TestRole::config);
    let app = support::client(&config).await;
    if store.db().is_citus() {
        // Only `SET LOCAL`, propagated, reaches the workers, where the rows
        // and their policies are.
        app.batch_execute("BEGIN").await.unwrap();
        app.batch_execute(&format!(
            "SET LOCAL citus.propagate_set_commands TO 'local'; \
             SET LOCAL crm.tenant_id TO '{t1}'"
        ))
        .await
        .unwrap();
    } else {
        app.batch_execute(&format!(
            "SELECT set_config('crm.tenant_id', '{t1}', false)"
        ))
        .await
        .unwrap();
    }
    let n: i64 = app
        .query_one(&store.db().sql("SELECT count(*) FROM crm.history"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        n, 1,
        "a query without a tenant filter sees only the set tenant's history"
    );
    let none = app
        .execute(
            &store.db().sql(
                "INSERT INTO crm.history (tenant_id, entity_id, valid_from, entity_kind, operation, \
                 data, diff, actor) \
                 VALUES ($1, gen_random_uuid(), now(), 'contact', 'created', '{}', '{}', 'x')",
            ),
            &[&t2.as_uuid()],
        )
        .await;
    assert!(none.is_err(), "a row of another tenant cannot be written");
    drop(app);
    drop(role);
    let page = {
        let mut tx = store.begin(t1, ctx()).await.unwrap();
        let p = tx
            .changes_between(
                chrono::Utc::now() - chrono::Duration::days(1),
                chrono::Utc::now() + chrono::Duration::days(1),
                &PageRequest::first(10),
            )
            .await
            .unwrap();
        tx.commit().await.unwrap();
        p
    };
    assert_eq!(page.items.len(), 1);
}

/// An unmerge after the clock went back (the merge's tombstone dated by a
/// clock ahead of the one dating the unmerge's version: a clock set back,
/// a shard moved to another node) leaves the version it writes in force,
/// and no version ends before it begins. Told apart by their times, the
/// unmerge closed the new version and left the tombstone in force.
async fn an_unmerge_after_the_clock_went_back_leaves_the_restored_version_in_force(target: Target) {
    use crm_core::{bulk::ConflictPolicy, domain::UnmergeConflicts};
    let Some(store) = TestStore::on(target).await else {
        return;
    };
    let t = TenantId::new();
    let crm = store.scope(t, &ctx());
    let s = crm
        .create_contact(new_contact("s@clock.example"))
        .await
        .unwrap();
    let l = crm
        .create_contact(new_contact("l@clock.example"))
        .await
        .unwrap();
    let mut tx = store.begin(t, ctx()).await.unwrap();
    tx.merge_contacts(s.id, l.id, ConflictPolicy::NonEmptyIncoming)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // The tombstone as a clock an hour ahead would have dated it (the
    // time computed here: Citus refuses the arithmetic in an UPDATE).
    let h = crm
        .entity_history(HistoryEntity::Contact(l.id), &PageRequest::first(10))
        .await
        .unwrap()
        .items;
    let ahead = h[0].valid_from + chrono::Duration::hours(1);
    let raw = store.db().client().await;
    let moved = raw
        .execute(
            &store.db().sql(
                "UPDATE crm.history SET valid_from = $2 \
                 WHERE tenant_id = $3 AND entity_id = $1 AND operation = 'deleted'",
            ),
            &[&l.id.as_uuid(), &ahead, &t.as_uuid()],
        )
        .await
        .unwrap();
    assert_eq!(moved, 1);
    let mut tx = store.begin(t, ctx()).await.unwrap();
    let merge = tx.contact_merges(s.id).await.unwrap()[0].id;
    tx.unmerge_contacts(merge, UnmergeConflicts::KeepCurrent)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let h = crm
        .entity_history(HistoryEntity::Contact(l.id), &PageRequest::first(10))
        .await
        .unwrap()
        .items;
    let restored = h
        .iter()
        .find(|v| v.operation == Operation::Created && v.valid_from > h[2].valid_from)
        .expect("the unmerge's version");
    assert!(restored.valid_to.is_none(), "in force: {h:#?}");
    for v in &h {
        assert!(v.valid_to.is_none_or(|to| to >= v.valid_from), "{v:?}");
    }
}

crate::on_every_target!(
    an_out_of_band_sql_update_is_recorded_with_the_database_role_as_actor,
    the_history_table_is_under_row_level_security_for_an_ordinary_role,
    an_unmerge_after_the_clock_went_back_leaves_the_restored_version_in_force,
);
