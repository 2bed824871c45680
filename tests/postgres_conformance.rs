#![cfg(all(feature = "postgres", feature = "conformance"))]
//! The conformance suite against `PostgresStore` (a fresh database per
//! test), and what only the PostgreSQL backend can get wrong: migrations,
//! row-level security, connections returned to the pool, rows that the
//! domain rules reject.

mod support;

use std::sync::Arc;

use crm_core::{
    Actor, ContactQuery, Context, Error, PostgresStore, Store, StoreExt, TenantId,
    bulk::ConflictPolicy,
    conformance,
    domain::{
        ContactId, ContactPatch, Currency, DealTitle, Email, Money, NewContact, NewDeal,
        PersonName, Pipelines, Score,
    },
    store::postgres::MIGRATIONS,
};
use support::{TestDb, TestRole, TestStore};

crm_core::conformance_tests!(async { TestStore::new().await });

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_migrating_one_database_at_once_apply_each_migration_once() {
    let db = TestDb::create().await;
    let (a, b) = (db.store(), db.store());
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    let all: Vec<i64> = MIGRATIONS.iter().map(|m| m.version).collect();
    assert!(
        (ra == all && rb.is_empty()) || (rb == all && ra.is_empty()),
        "exactly one of the two applies the migrations: {ra:?} / {rb:?}"
    );
    assert!(
        a.migrate().await.unwrap().is_empty(),
        "a third run has nothing to do"
    );
    let client = db.client().await;
    let n: i64 = client
        .query_one("SELECT count(*) FROM crm.schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, all.len() as i64);
    drop((a, b, client));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_level_security_hides_other_tenants_from_a_query_without_a_tenant_filter() {
    let store = TestStore::new().await;
    let (t1, t2) = (TenantId::new(), TenantId::new());
    store
        .scope(t1, &ctx())
        .create_contact(new_contact("one@example.com"))
        .await
        .unwrap();
    store
        .scope(t2, &ctx())
        .create_contact(new_contact("two@example.com"))
        .await
        .unwrap();

    // Superusers bypass row-level security: query as an ordinary role.
    let role = TestRole::create(store.db()).await;
    let app = support::client(&role.config()).await;

    let unfiltered = async |tenant: Option<TenantId>| -> Vec<String> {
        app.batch_execute("BEGIN").await.unwrap();
        if let Some(t) = tenant {
            app.execute(
                "SELECT set_config('crm.tenant_id', $1, true)",
                &[&t.to_string()],
            )
            .await
            .unwrap();
        }
        let emails = app
            .query("SELECT email FROM crm.contacts ORDER BY email", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        app.batch_execute("COMMIT").await.unwrap();
        emails
    };
    assert_eq!(unfiltered(Some(t1)).await, ["one@example.com"]);
    assert_eq!(unfiltered(Some(t2)).await, ["two@example.com"]);
    assert!(unfiltered(None).await.is_empty(), "no tenant set: no rows");

    // Writing a row of another tenant is refused too.
    app.batch_execute("BEGIN").await.unwrap();
    app.execute(
        "SELECT set_config('crm.tenant_id', $1, true)",
        &[&t1.to_string()],
    )
    .await
    .unwrap();
    let foreign = app
        .execute(
            "INSERT INTO crm.contacts (tenant_id, id, email, first_name, last_name, created_at,
                 updated_at, email_key, first_name_key, last_name_key)
             VALUES ($1, $2, 'x@example.com', 'X', 'Y', now(), now(), 'x@example.com', 'x', 'y')",
            &[&t2.as_uuid(), &uuid::Uuid::now_v7()],
        )
        .await;
    let code = foreign.err().and_then(|e| e.code().cloned());
    assert_eq!(
        code,
        Some(tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
        "a row of another tenant is refused by the policy"
    );
    app.batch_execute("ROLLBACK").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_suite_passes_at_once_as_an_ordinary_role_under_row_level_security() {
    let owner = TestStore::new().await;
    let role = TestRole::create(owner.db()).await;
    // Enough connections for every suite function to hold two at once.
    let store = PostgresStore::from_pool(
        support::pool_for(role.config(), 60),
        conformance::test_pipelines(),
    );
    assert!(
        conformance::SUITE.len() >= 50,
        "the suite lists its functions"
    );
    conformance::run_all(&store).await;
    drop(store);
    drop(role);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_transaction_is_rolled_back_before_its_connection_is_reused() {
    let db = TestDb::create().await;
    // One connection: the next transaction must get the same one, clean.
    let store = PostgresStore::from_pool(db.pool(1), Pipelines::default());
    store.migrate().await.unwrap();
    let tenant = TenantId::new();
    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    tx.create_contact(new_contact("dropped@example.com"))
        .await
        .unwrap();
    drop(tx);

    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    let email = Email::parse("dropped@example.com").unwrap();
    assert!(tx.get_contact_by_email(&email).await.unwrap().is_none());
    tx.create_contact(new_contact("kept@example.com"))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let email = Email::parse("kept@example.com").unwrap();
    assert!(
        store
            .scope(tenant, &ctx())
            .get_contact_by_email(&email)
            .await
            .unwrap()
            .is_some()
    );
    let email = Email::parse("dropped@example.com").unwrap();
    assert!(
        store
            .scope(tenant, &ctx())
            .get_contact_by_email(&email)
            .await
            .unwrap()
            .is_none()
    );
    drop(store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_dropped_outside_a_runtime_leaves_no_trace() {
    let db = TestDb::create().await;
    let store = PostgresStore::from_pool(db.pool(1), Pipelines::default());
    store.migrate().await.unwrap();
    let tenant = TenantId::new();
    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    tx.create_contact(new_contact("outside@example.com"))
        .await
        .unwrap();
    // Dropped on a thread without a runtime: the ROLLBACK is still queued on
    // the connection, ahead of anything its next user sends.
    std::thread::spawn(move || drop(tx)).join().unwrap();

    let email = Email::parse("outside@example.com").unwrap();
    let found = store
        .scope(tenant, &ctx())
        .get_contact_by_email(&email)
        .await
        .unwrap();
    assert!(found.is_none(), "the dropped transaction left no trace");
    drop(store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contract_error_keeps_the_postgres_transaction_usable() {
    let store = TestStore::new().await;
    let tenant = TenantId::new();
    let crm = store.scope(tenant, &ctx());
    let first = crm
        .create_contact(new_contact("a@example.com"))
        .await
        .unwrap();
    let second = crm
        .create_contact(new_contact("b@example.com"))
        .await
        .unwrap();

    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    let dup = tx
        .create_contact(new_contact("A@EXAMPLE.COM"))
        .await
        .unwrap_err();
    assert!(matches!(dup, Error::DuplicateEmail { existing_id, .. } if existing_id == first.id));
    let patch = crm_core::domain::ContactPatch {
        email: Some(Email::parse("a@example.com").unwrap()),
        ..Default::default()
    };
    let dup = tx
        .update_contact(second.id, second.version, patch)
        .await
        .unwrap_err();
    assert!(matches!(dup, Error::DuplicateEmail { existing_id, .. } if existing_id == first.id));
    let missing = tx
        .create_deal(NewDeal::new(
            ContactId::new(),
            DealTitle::parse("x").unwrap(),
            Money::new(1.into(), Currency::parse("EUR").unwrap()).unwrap(),
        ))
        .await
        .unwrap_err();
    assert!(matches!(missing, Error::NotFound { .. }));
    tx.create_contact(new_contact("c@example.com"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let email = Email::parse("c@example.com").unwrap();
    assert!(crm.get_contact_by_email(&email).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_change_that_loses_a_race_is_a_duplicate_email_and_the_transaction_goes_on() {
    let store = TestStore::new().await;
    let tenant = TenantId::new();
    let c = store
        .scope(tenant, &ctx())
        .create_contact(new_contact("racer@example.com"))
        .await
        .unwrap();

    // Another transaction takes the email but has not committed yet.
    let mut winner = store.begin(tenant, ctx()).await.unwrap();
    let taken = winner
        .create_contact(new_contact("prize@example.com"))
        .await
        .unwrap();

    let store2: Arc<PostgresStore> = Arc::new((*store).clone());
    let loser = tokio::spawn(async move {
        let mut tx = store2.begin(tenant, ctx()).await.unwrap();
        let patch = crm_core::domain::ContactPatch {
            email: Some(Email::parse("PRIZE@example.com").unwrap()),
            ..Default::default()
        };
        let err = tx.update_contact(c.id, c.version, patch).await.unwrap_err();
        // The transaction is still usable after the lost race.
        let again = tx.get_contact(c.id).await.unwrap().unwrap();
        tx.commit().await.unwrap();
        (err, again)
    });
    // The loser's email change waits for the winner's uncommitted insert.
    support::until_a_backend_waits_for_a_lock(store.db()).await;
    winner.commit().await.unwrap();
    let (err, again) = loser.await.unwrap();
    assert!(
        matches!(&err, Error::DuplicateEmail { existing_id, .. } if *existing_id == taken.id),
        "{err:?}"
    );
    assert_eq!(again.email.as_str(), "racer@example.com");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_after_a_failed_statement_reports_the_failure_instead_of_success() {
    let store = TestStore::new().await;
    let tenant = TenantId::new();
    let admin = store.db().client().await;
    // A row the domain forbids, written out of band, fails the read...
    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    tx.create_contact(new_contact("before@example.com"))
        .await
        .unwrap();
    // ... and a statement the server rejects aborts the transaction.
    admin
        .batch_execute("ALTER TABLE crm.signals RENAME TO signals_moved")
        .await
        .unwrap();
    let err = tx.list_signals(ContactId::new()).await.unwrap_err();
    assert!(matches!(err, Error::Backend { .. }));
    let err = tx.commit().await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Backend {
                retryable: false,
                ..
            }
        ),
        "{err:?}"
    );
    admin
        .batch_execute("ALTER TABLE crm.signals_moved RENAME TO signals")
        .await
        .unwrap();
    let email = Email::parse("before@example.com").unwrap();
    assert!(
        store
            .scope(tenant, &ctx())
            .get_contact_by_email(&email)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_that_breaks_the_domain_rules_is_a_backend_error_not_a_panic() {
    let store = TestStore::new().await;
    let tenant = TenantId::new();
    let crm = store.scope(tenant, &ctx());
    let c = crm
        .create_contact(new_contact("odd@example.com"))
        .await
        .unwrap();
    let admin = store.db().client().await;
    // The CHECK constraints refuse what the domain refuses...
    let refused = admin
        .execute(
            "UPDATE crm.contact_ranks SET score = 101 WHERE contact_id = $1",
            &[&c.id.as_uuid()],
        )
        .await;
    assert!(
        refused.is_err(),
        "score above 100 violates contact_ranks_score_check"
    );
    // ... but not every rule: an address without a dot in its domain passes them.
    admin
        .execute(
            "UPDATE crm.contacts SET email = 'odd@localhost' WHERE id = $1",
            &[&c.id.as_uuid()],
        )
        .await
        .unwrap();
    let err = crm.get_contact(c.id).await.unwrap_err();
    assert!(matches!(err, Error::Backend { .. }), "{err:?}");
    assert!(err.to_string().contains("email"), "{err}");
}

/// A contact whose rank row (its score's row, schema 17) was removed by
/// hand is an error naming the score when read or updated — not a contact
/// that is not there — and deleting it deletes it and says so. The top
/// leads cannot list it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_without_its_rank_row_is_an_error_not_a_missing_contact() {
    let store = TestStore::new().await;
    let tenant = TenantId::new();
    let crm = store.scope(tenant, &ctx());
    let c = crm
        .create_contact(new_contact("unranked@example.com"))
        .await
        .unwrap();
    store
        .db()
        .client()
        .await
        .execute(
            &store
                .db()
                .sql("DELETE FROM crm.contact_ranks WHERE contact_id = $1"),
            &[&c.id.as_uuid()],
        )
        .await
        .unwrap();
    let named = |e: Error| {
        assert!(matches!(e, Error::Backend { .. }), "{e:?}");
        assert!(e.to_string().contains("score"), "{e}");
    };
    named(crm.get_contact(c.id).await.unwrap_err());
    named(
        crm.update_contact(
            c.id,
            c.version,
            ContactPatch {
                active: Some(false),
                ..ContactPatch::default()
            },
        )
        .await
        .unwrap_err(),
    );
    let top = crm
        .search_contacts(&ContactQuery::top_leads(10))
        .await
        .unwrap();
    assert!(top.items.is_empty(), "{top:?}");
    assert!(crm.delete_contact(c.id).await.unwrap(), "deleted");
    assert!(crm.get_contact(c.id).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn begin_hands_the_acting_context_to_the_database_quoted_safely() {
    let store = TestStore::new().await;
    let admin = store.db().client().await;
    admin
        .batch_execute(
            "CREATE TABLE public.seen (actor text, reason text, request_id text, tenant text,
                 key text);
             CREATE FUNCTION public.remember() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 INSERT INTO public.seen VALUES (current_setting('crm.actor'), current_setting('crm.reason'),
                     current_setting('crm.request_id'), current_setting('crm.tenant_id'),
                     current_setting('crm.idempotency_key'));
                 RETURN NEW;
             END $$;
             CREATE TRIGGER remember AFTER INSERT ON crm.contacts FOR EACH ROW EXECUTE FUNCTION public.remember();",
        )
        .await
        .unwrap();
    let tenant = TenantId::new();
    let tricky = Context::parse(
        "user:o'brien\\",
        Some("fix'); DROP TABLE contacts; --\nline two"),
        Some("req-$$-1"),
    )
    .unwrap()
    .with_idempotency_key("stripe:evt_'1")
    .unwrap();
    store
        .scope(tenant, &tricky)
        .create_contact(new_contact("ctx@example.com"))
        .await
        .unwrap();
    let row = admin.query_one("SELECT * FROM seen", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "user:o'brien\\");
    assert_eq!(
        row.get::<_, String>(1),
        "fix'); DROP TABLE contacts; --\nline two"
    );
    assert_eq!(row.get::<_, String>(2), "req-$$-1");
    assert_eq!(row.get::<_, String>(3), tenant.to_string());
    assert_eq!(row.get::<_, String>(4), "stripe:evt_'1");

    // The same whichever way the transaction's first statement goes out:
    // a simple query (a bulk upsert stages its rows first), a deferred
    // idempotency claim (which sets the settings itself), an operation of
    // several statements (a savepoint first).
    let mut tx = store.begin(tenant, tricky.clone()).await.unwrap();
    tx.upsert_contacts(&[new_contact("bulk@example.com")], ConflictPolicy::Incoming)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let event =
        crm_core::idempotency::InboundEvent::new("stripe", "evt_'1", &serde_json::json!({}))
            .unwrap();
    crm_core::idempotency::IdempotencyGuard::new()
        .run(&*store, tenant, &tricky, &event, |tx| {
            Box::pin(async move {
                tx.create_contact(new_contact("hook@example.com")).await?;
                Ok::<_, crm_core::idempotency::HandlerError>(())
            }) as crm_core::idempotency::HandlerFuture<'_, ()>
        })
        .await
        .unwrap();
    let crm = store.scope(tenant, &ctx());
    let (a, b) = (
        crm.create_contact(new_contact("a@example.com"))
            .await
            .unwrap(),
        crm.create_contact({
            let mut b = new_contact("b@example.com");
            b.first_name = PersonName::parse("Bea").unwrap();
            b
        })
        .await
        .unwrap(),
    );
    let mut tx = store.begin(tenant, tricky.clone()).await.unwrap();
    tx.merge_contacts(a.id, b.id, ConflictPolicy::Incoming)
        .await
        .unwrap();
    let merged = tx
        .entity_history(
            crm_core::history::HistoryEntity::Contact(a.id),
            &crm_core::PageRequest::first(1),
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let version = &merged.items[0];
    assert_eq!(
        (
            version.actor.as_str(),
            version.request_id.as_deref(),
            version.idempotency_key.as_deref()
        ),
        ("user:o'brien\\", Some("req-$$-1"), Some("stripe:evt_'1")),
        "the merge's version of the survivor"
    );
    // (The merge names itself after the reason given.)
    let reason = version.reason.as_deref().unwrap_or_default();
    assert!(
        reason.starts_with("fix'); DROP TABLE contacts; --\nline two"),
        "{reason:?}"
    );
    let seen: Vec<(String, String, String, String, String)> = admin
        .query(
            "SELECT actor, reason, request_id, tenant, key FROM seen WHERE actor <> 'user:test'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    let expected = (
        "user:o'brien\\".to_string(),
        "fix'); DROP TABLE contacts; --\nline two".to_string(),
        "req-$$-1".to_string(),
        tenant.to_string(),
        "stripe:evt_'1".to_string(),
    );
    assert_eq!(
        seen,
        vec![expected; 3],
        "created, bulk-upserted, by a webhook"
    );

    // Without the optional values, the settings are empty.
    crm.create_contact(new_contact("plain@example.com"))
        .await
        .unwrap();
    let row = admin
        .query_one(
            "SELECT reason, request_id, key FROM seen WHERE actor = 'user:test' LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    for i in 0..3 {
        assert_eq!(row.get::<_, String>(i), "");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_scores_with_a_contact_given_twice_keeps_the_last_score() {
    let store = TestStore::new().await;
    let tenant = TenantId::new();
    let c = store
        .scope(tenant, &ctx())
        .create_contact(new_contact("twice@example.com"))
        .await
        .unwrap();
    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    let n = tx
        .write_scores(&[
            crm_core::domain::ContactScore::new(c.id, Score::new(10).unwrap()),
            crm_core::domain::ContactScore::new(c.id, Score::new(40).unwrap()),
        ])
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(tx.get_contact(c.id).await.unwrap().unwrap().score.get(), 40);
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn connect_to_an_unreachable_server_is_a_retryable_backend_error() {
    let err = PostgresStore::connect("postgres://postgres@127.0.0.1:1/postgres?connect_timeout=2")
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_refuses_a_database_whose_applied_migration_was_edited() {
    let store = TestStore::new().await;
    let client = store.db().client().await;
    client
        .execute(
            "UPDATE crm.schema_migrations SET checksum = checksum + 1 WHERE version = 1",
            &[],
        )
        .await
        .unwrap();
    let err = store.migrate().await.unwrap_err();
    assert!(err.to_string().contains("migration 1"), "{err}");
    client
        .execute(
            "UPDATE crm.schema_migrations SET checksum = checksum - 1 WHERE version = 1",
            &[],
        )
        .await
        .unwrap();
    assert!(store.migrate().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn begin_on_an_exhausted_pool_times_out_with_a_retryable_error() {
    let db = TestDb::create().await;
    let store = PostgresStore::builder(&db.url())
        .pool_size(1)
        .acquire_timeout(std::time::Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let held = store.begin(TenantId::new(), ctx()).await.unwrap();
    let err = store.begin(TenantId::new(), ctx()).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    held.rollback().await.unwrap();
    let again = store.begin(TenantId::new(), ctx()).await.unwrap();
    again.commit().await.unwrap();
    drop(store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_contact_update_does_not_hold_up_logging_an_activity_for_it() {
    let store = TestStore::new().await;
    let tenant = TenantId::new();
    let c = store
        .scope(tenant, &ctx())
        .create_contact(new_contact("busy@example.com"))
        .await
        .unwrap();
    let mut editing = store.begin(tenant, ctx()).await.unwrap();
    let patch = crm_core::domain::ContactPatch {
        company: Some(Some(crm_core::domain::CompanyName::parse("Acme").unwrap())),
        ..Default::default()
    };
    editing
        .update_contact(c.id, c.version, patch)
        .await
        .unwrap();

    let logged = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        store
            .scope(tenant, &ctx())
            .log_activity(crm_core::domain::NewActivity::new(
                c.id,
                crm_core::domain::ActivityKind::Note,
            )),
    )
    .await
    .expect("logging does not wait for the open update")
    .unwrap();
    assert_eq!(logged.contact_id, c.id);
    editing.commit().await.unwrap();
}

// ---- caseless keys: one definition, whatever the database's locale ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_c_locale_database_every_cased_character_and_its_other_casings_are_one_email() {
    let store = TestStore::c_locale().await;
    conformance::every_cased_character_and_its_other_casings_are_one_email(&*store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_c_locale_database_name_sorted_paging_visits_every_contact_once() {
    let store = TestStore::c_locale().await;
    conformance::name_sorted_paging_visits_every_contact_once_whatever_the_casing(&*store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upserting_an_email_whose_case_the_database_maps_otherwise_reports_its_contact() {
    // U+1C89/U+1C8A (Unicode 16) are a case pair the database's lower()
    // does not know; 'É' is one lower() leaves alone in the C locale.
    for store in [TestStore::new().await, TestStore::c_locale().await] {
        let tenant = TenantId::new();
        let rows = [
            new_contact("\u{1C89}mile@example.com"),
            new_contact("Émile@example.com"),
        ];
        let mut tx = store.begin(tenant, ctx()).await.unwrap();
        let first = tx
            .upsert_contacts(&rows, ConflictPolicy::Incoming)
            .await
            .expect("an upsert of new emails reports each contact it inserted");
        assert!(
            first
                .iter()
                .all(|o| matches!(o, crm_core::bulk::UpsertOutcome::Inserted(_))),
            "{first:?}"
        );
        let again = [
            new_contact("\u{1C8A}mile@example.com"),
            new_contact("émile@example.com"),
        ];
        let second = tx
            .upsert_contacts(&again, ConflictPolicy::Incoming)
            .await
            .expect("the other casings update the same contacts");
        let ids =
            |o: &[crm_core::bulk::UpsertOutcome]| o.iter().map(|o| o.id()).collect::<Vec<_>>();
        assert_eq!(ids(&second), ids(&first));
        tx.commit().await.unwrap();
        let stored: i64 = store
            .db()
            .client()
            .await
            .query_one(
                "SELECT count(*) FROM crm.contacts WHERE tenant_id = $1",
                &[&tenant.as_uuid()],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(stored, 2, "one contact per email, in {}", store.db().name());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_upsert_undoes_its_writes_and_the_transaction_goes_on() {
    let store = TestStore::new().await;
    let tenant = TenantId::new();
    // A trigger fails the second round of the batch (the repeated email),
    // after the first round wrote both contacts.
    store
        .db()
        .client()
        .await
        .batch_execute(
            "CREATE FUNCTION refuse_boom() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF NEW.first_name = 'Boom' THEN RAISE EXCEPTION 'boom'; END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER refuse_boom BEFORE UPDATE ON crm.contacts
                 FOR EACH ROW EXECUTE FUNCTION refuse_boom();",
        )
        .await
        .unwrap();
    let mut boom = new_contact("ada@example.com");
    boom.first_name = PersonName::parse("Boom").unwrap();
    let rows = [
        new_contact("ada@example.com"),
        new_contact("bob@example.com"),
        boom,
    ];
    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    let kept = tx
        .create_contact(new_contact("kept@example.com"))
        .await
        .unwrap();
    let err = tx
        .upsert_contacts(&rows, ConflictPolicy::Incoming)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Backend { .. }), "{err:?}");
    // Nothing of the upsert is left, and the transaction goes on.
    for address in ["ada@example.com", "bob@example.com"] {
        let email = Email::parse(address).unwrap();
        assert!(
            tx.get_contact_by_email(&email).await.unwrap().is_none(),
            "{address} is not left behind by the failed upsert"
        );
    }
    tx.create_contact(new_contact("after@example.com"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let client = store.db().client().await;
    let emails: Vec<String> = client
        .query(
            "SELECT email FROM crm.contacts WHERE tenant_id = $1 ORDER BY email",
            &[&tenant.as_uuid()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(emails, ["after@example.com", "kept@example.com"]);
    let history: i64 = client
        .query_one(
            "SELECT count(*) FROM crm.history WHERE tenant_id = $1",
            &[&tenant.as_uuid()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(history, 2, "the failed upsert left no version either");
    drop(kept);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_stored_under_earlier_rules_stays_readable_and_can_be_corrected() {
    let store = TestStore::new().await;
    let tenant = TenantId::new();
    let crm = store.scope(tenant, &ctx());
    let c = crm
        .create_contact(new_contact("legacy@example.com"))
        .await
        .unwrap();
    // What an earlier version accepted and today's input rules refuse: a
    // bidirectional override in a name, a number no backend keeps exactly.
    store
        .db()
        .client()
        .await
        .execute(
            "UPDATE crm.contacts SET last_name = E'\\u202Eecalevol', \
             metadata = '{\"legacy_id\": 123456789012345678901234567890}' WHERE id = $1",
            &[&c.id.as_uuid()],
        )
        .await
        .unwrap();
    let read = crm
        .get_contact(c.id)
        .await
        .unwrap()
        .expect("the stored contact is readable");
    assert_eq!(read.last_name.as_str(), "\u{202E}ecalevol");
    let page = crm
        .search_contacts(&crm_core::ContactQuery::new())
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1, "a search that meets it still answers");
    let fixed = crm
        .update_contact(
            c.id,
            read.version,
            crm_core::domain::ContactPatch {
                last_name: Some(PersonName::parse("Lovelace").unwrap()),
                ..Default::default()
            },
        )
        .await
        .expect("and it can be corrected");
    assert_eq!(fixed.last_name.as_str(), "Lovelace");
    assert!(
        PersonName::parse("\u{202E}ecalevol").is_err(),
        "while new input with the override is refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_does_not_link_by_domain_leaves_new_contacts_unlinked() {
    use crm_core::domain::{CompanyDomain, CompanyName, NewCompany};
    let on = TestStore::new().await;
    let off = (*on).clone().with_company_linking(false);
    let t = TenantId::new();
    let mut tx = on.begin(t, ctx()).await.unwrap();
    let acme = tx
        .create_company(NewCompany {
            domain: Some(CompanyDomain::parse("acme.example").unwrap()),
            ..NewCompany::new(CompanyName::parse("Acme").unwrap())
        })
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let mut tx = off.begin(t, ctx()).await.unwrap();
    let created = tx
        .create_contact(new_contact("a@acme.example"))
        .await
        .unwrap();
    let imported = tx
        .upsert_contacts(
            &[new_contact("b@acme.example")],
            ConflictPolicy::NonEmptyIncoming,
        )
        .await
        .unwrap();
    let imported = tx.get_contact(imported[0].id()).await.unwrap().unwrap();
    tx.commit().await.unwrap();
    assert_eq!((created.company_id, imported.company_id), (None, None));

    let mut tx = on.begin(t, ctx()).await.unwrap();
    let linked = tx
        .create_contact(new_contact("c@acme.example"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(linked.company_id, Some(acme.id), "the other store links");
    drop((off, on));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn score_write_backs_are_events_when_the_store_announces_them() {
    let db = TestStore::new().await;
    let store: Arc<dyn Store> = Arc::new((*db).clone().with_score_events(true));
    conformance::score_write_backs_are_events_when_announced(&*store).await;
}
