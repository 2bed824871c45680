#![cfg(all(feature = "postgres", feature = "conformance"))]
//! The store's own PostgreSQL schema: a host's tables of the same names are
//! never touched, two stores on two schemas of one database share nothing,
//! migrating is idempotent per schema, the name is checked and quoted, and
//! the store leaves the session's search path as it found it.

mod support;

use crm_core::{
    Actor, ContactQuery, Context, Error, PageRequest, PostgresStore, Store, StoreExt, TenantId,
    conformance,
    domain::{ContactPatch, Email, NewContact, PersonName},
    history::{HistoryEntity, Operation},
    idempotency::{Execution, HandlerError, HandlerFuture, IdempotencyGuard, InboundEvent},
    store::postgres::{DEFAULT_SCHEMA, MIGRATIONS},
};
use support::TestDb;

fn ctx() -> Context {
    Context::new(Actor::parse("user:schema").unwrap())
}

fn new_contact(email: &str, first: &str) -> NewContact {
    NewContact::new(
        Email::parse(email).unwrap(),
        PersonName::parse(first).unwrap(),
        PersonName::parse("Lovelace").unwrap(),
    )
}

fn all_versions() -> Vec<i64> {
    MIGRATIONS.iter().map(|m| m.version).collect()
}

/// Whether `e` is a validation error on the field `schema`.
fn names_the_schema_field(e: &Error) -> bool {
    matches!(e, Error::Validation(_)) && e.field_errors().iter().any(|f| f.field == "schema")
}

/// The host's `public.contacts` and `public.history`, with columns of its
/// own and a row each, and the host's functions with the store's names,
/// which fail if anything calls them.
const HOST_TABLES: &str = "
    CREATE TABLE public.contacts (id serial PRIMARY KEY, full_name text NOT NULL, phone text);
    INSERT INTO public.contacts (full_name, phone) VALUES ('Host Person', '+1 555');
    CREATE TABLE public.history (happened text NOT NULL);
    INSERT INTO public.history VALUES ('the host''s own history');
    CREATE FUNCTION public.crm_write_history(
        text, uuid, uuid, text, jsonb, jsonb) RETURNS void LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'the host''s function was called'; END $$;
    CREATE FUNCTION public.crm_idempotency_record(uuid, text, text) RETURNS text
        LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'the host''s function was called'; END $$;
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_holding_the_hosts_contacts_and_history_tables_migrates_and_leaves_them_untouched()
 {
    let db = TestDb::create().await;
    let host = db.client().await;
    host.batch_execute(HOST_TABLES).await.unwrap();
    let store = db.store();
    assert_eq!(store.schema(), DEFAULT_SCHEMA);
    assert_eq!(store.migrate().await.unwrap(), all_versions());

    let tenant = TenantId::new();
    let crm = store.scope(tenant, &ctx());
    let c = crm
        .create_contact(new_contact("ada@example.com", "Ada"))
        .await
        .unwrap();
    let patch = ContactPatch {
        first_name: Some(PersonName::parse("Augusta").unwrap()),
        ..Default::default()
    };
    crm.update_contact(c.id, c.version, patch).await.unwrap();
    // A write through the host's own connection, whose search path finds
    // the host's tables first: the trigger still records into the store's
    // history.
    host.batch_execute(&format!(
        "BEGIN; SELECT set_config('crm.tenant_id', '{tenant}', true);
         UPDATE crm.contacts SET title = 'Countess' WHERE id = '{}'; COMMIT;",
        c.id
    ))
    .await
    .unwrap();
    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    let versions = tx
        .entity_history(HistoryEntity::Contact(c.id), &PageRequest::first(10))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let operations: Vec<Operation> = versions.items.iter().map(|v| v.operation).collect();
    assert_eq!(
        operations,
        [Operation::Updated, Operation::Updated, Operation::Created]
    );
    assert!(versions.items[0].actor.starts_with("db:"), "{versions:?}");

    // The host's tables are as they were: same columns, same rows.
    let contacts: Vec<(i32, String, Option<String>)> = host
        .query("SELECT id, full_name, phone FROM public.contacts", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        contacts,
        [(1, "Host Person".to_string(), Some("+1 555".to_string()))]
    );
    let history: Vec<String> = host
        .query("SELECT happened FROM public.history", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(history, ["the host's own history"]);
    let columns: i64 = host
        .query_one(
            "SELECT count(*) FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name IN ('contacts', 'history')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(columns, 4, "no column was added to the host's tables");
    let stray: i64 = host
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = 'public' \
             AND tablename NOT IN ('contacts', 'history')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stray, 0, "the store created nothing in the host's schema");
    drop((store, host));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idempotency_claim_uses_the_stores_function_not_the_hosts_of_the_same_name() {
    let db = TestDb::create().await;
    db.client().await.batch_execute(HOST_TABLES).await.unwrap();
    let store = db.store();
    store.migrate().await.unwrap();
    let tenant = TenantId::new();
    let guard = IdempotencyGuard::new();
    let event = InboundEvent::new("stripe", "evt_1", &serde_json::json!({"n": 1})).unwrap();
    let mut executions = Vec::new();
    for _ in 0..2 {
        let outcome = guard
            .run(&store, tenant, &ctx(), &event, |tx| {
                Box::pin(async move {
                    tx.create_contact(new_contact("webhook@example.com", "Web"))
                        .await?;
                    Ok::<_, HandlerError>(1_u32)
                }) as HandlerFuture<'_, u32>
            })
            .await
            .unwrap();
        executions.push(outcome.execution);
    }
    assert_eq!(executions, [Execution::Executed, Execution::Replayed]);
    let n = store
        .scope(tenant, &ctx())
        .search_contacts(&crm_core::ContactQuery::new())
        .await
        .unwrap()
        .items
        .len();
    assert_eq!(n, 1, "the second delivery is a replay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_two_schemas_of_one_database_do_not_see_each_others_contacts_or_history() {
    let db = TestDb::create().await;
    let a = db.store();
    let b = db.store().with_schema("crm_other").unwrap();
    assert_eq!(b.schema(), "crm_other");
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    assert_eq!(
        ra.unwrap(),
        all_versions(),
        "each schema has its migrations"
    );
    assert_eq!(
        rb.unwrap(),
        all_versions(),
        "each schema has its migrations"
    );

    // The same tenant, the same email: two contacts, one per schema.
    let tenant = TenantId::new();
    let (seen_by_a, seen_by_b) = (a.scope(tenant, &ctx()), b.scope(tenant, &ctx()));
    let in_a = seen_by_a
        .create_contact(new_contact("same@example.com", "Ada"))
        .await
        .unwrap();
    let in_b = seen_by_b
        .create_contact(new_contact("same@example.com", "Bea"))
        .await
        .expect("the other schema holds no contact with this email");
    let email = Email::parse("same@example.com").unwrap();
    let found_a = seen_by_a.get_contact_by_email(&email).await.unwrap();
    let found_b = seen_by_b.get_contact_by_email(&email).await.unwrap();
    assert_eq!(found_a.map(|c| c.id), Some(in_a.id));
    assert_eq!(found_b.map(|c| c.id), Some(in_b.id));
    assert!(seen_by_a.get_contact(in_b.id).await.unwrap().is_none());
    assert!(seen_by_b.get_contact(in_a.id).await.unwrap().is_none());

    // Each schema's history holds its own contact's versions only.
    for (store, own, other) in [(&a, in_a.id, in_b.id), (&b, in_b.id, in_a.id)] {
        let mut tx = store.begin(tenant, ctx()).await.unwrap();
        let mine = tx
            .entity_history(HistoryEntity::Contact(own), &PageRequest::first(10))
            .await
            .unwrap();
        let theirs = tx
            .entity_history(HistoryEntity::Contact(other), &PageRequest::first(10))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(mine.items.len(), 1, "in {}", store.schema());
        assert!(theirs.items.is_empty(), "in {}", store.schema());
    }
    let client = db.client().await;
    for schema in ["crm", "crm_other"] {
        let (contacts, history, migrations): (i64, i64, i64) = {
            let row = client
                .query_one(
                    &format!(
                        "SELECT (SELECT count(*) FROM {schema}.contacts), \
                                (SELECT count(*) FROM {schema}.history), \
                                (SELECT count(*) FROM {schema}.schema_migrations)"
                    ),
                    &[],
                )
                .await
                .unwrap();
            (row.get(0), row.get(1), row.get(2))
        };
        assert_eq!(
            (contacts, history, migrations),
            (1, 1, MIGRATIONS.len() as i64),
            "{schema}"
        );
    }
    drop((a, b, client));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrating_twice_applies_nothing_the_second_time() {
    let db = TestDb::create().await;
    let store = db.store().with_schema("twice").unwrap();
    assert_eq!(store.migrate().await.unwrap(), all_versions());
    assert!(store.migrate().await.unwrap().is_empty());
    let client = db.client().await;
    let applied: Vec<i64> = client
        .query(
            "SELECT version FROM twice.schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(applied, all_versions());
    drop((store, client));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_name_that_needs_quoting_is_used_exactly_as_given() {
    let db = TestDb::create().await;
    let name = "Crm \"Tenant\"; DROP SCHEMA public --";
    let store = db.store().with_schema(name).unwrap();
    store.migrate().await.unwrap();
    let tenant = TenantId::new();
    let crm = store.scope(tenant, &ctx());
    let c = crm
        .create_contact(new_contact("quoted@example.com", "Ada"))
        .await
        .unwrap();
    assert!(crm.get_contact(c.id).await.unwrap().is_some());
    let client = db.client().await;
    let schemas: Vec<String> = client
        .query(
            "SELECT nspname::text FROM pg_catalog.pg_namespace \
             WHERE nspname IN ($1, 'public') ORDER BY nspname",
            &[&name],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(schemas, [name, "public"]);
    drop((store, client));
}

#[tokio::test]
async fn an_invalid_schema_name_is_a_validation_error_naming_the_field() {
    let db = TestDb::create().await;
    let long = "s".repeat(64);
    for bad in ["", long.as_str(), "nul\0inside", "pg_crm", "PG_Catalog"] {
        let err = db.store().with_schema(bad).unwrap_err();
        assert!(names_the_schema_field(&err), "{bad:?}: {err:?}");
    }
    assert!(db.store().with_schema(&"s".repeat(63)).is_ok());
    assert!(db.store().with_schema("é").is_ok());
    // The builder checks the name before it connects: port 1 would
    // otherwise make it a retryable connection error.
    let err = PostgresStore::builder("postgres://postgres@127.0.0.1:1/postgres")
        .schema("")
        .build()
        .await
        .unwrap_err();
    assert!(names_the_schema_field(&err), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builder_puts_the_store_in_the_schema_it_names() {
    let db = TestDb::create().await;
    let store = PostgresStore::builder(&db.url())
        .pool_size(2)
        .pipelines(conformance::test_pipelines())
        .schema("built")
        .build()
        .await
        .unwrap();
    assert_eq!(store.schema(), "built");
    store.migrate().await.unwrap();
    store
        .scope(TenantId::new(), &ctx())
        .create_contact(new_contact("built@example.com", "Ada"))
        .await
        .unwrap();
    let n: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM built.contacts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    drop(store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_leaves_a_shared_connections_search_path_as_it_found_it() {
    let db = TestDb::create().await;
    // One connection, shared by the store and the host.
    let pool = db.pool(1);
    let store = PostgresStore::from_pool(pool.clone(), conformance::test_pipelines());
    store.migrate().await.unwrap();
    let before: String = {
        let conn = pool.get().await.unwrap();
        conn.query_one("SHOW search_path", &[])
            .await
            .unwrap()
            .get(0)
    };
    let tenant = TenantId::new();
    let c = store
        .scope(tenant, &ctx())
        .create_contact(new_contact("shared@example.com", "Ada"))
        .await
        .unwrap();
    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    tx.get_contact(c.id).await.unwrap();
    drop(tx);
    let conn = pool.get().await.unwrap();
    let after: String = conn
        .query_one("SHOW search_path", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(after, before);
    assert!(!after.contains("crm"), "{after}");
}

/// A role that is no superuser, without the right to create schemas in the
/// database, migrates into a schema an administrator created for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_migrates_into_a_schema_created_for_it_without_creating_schemas_itself() {
    let db = TestDb::create().await;
    let name = format!("crm_schema_owner_{}", uuid::Uuid::now_v7().simple());
    let admin = db.client().await;
    admin
        .batch_execute(&format!(
            "CREATE ROLE {name} LOGIN NOSUPERUSER NOBYPASSRLS;
             REVOKE CREATE ON DATABASE {} FROM PUBLIC;
             CREATE SCHEMA app_crm AUTHORIZATION {name};",
            db.name()
        ))
        .await
        .unwrap();
    let mut config = db.config();
    config.user(&name);
    let store =
        PostgresStore::from_pool(support::pool_for(config, 2), conformance::test_pipelines())
            .with_schema("app_crm")
            .unwrap();
    let outcome = store.migrate().await;
    let in_default = PostgresStore::from_pool(
        support::pool_for(store_config(&db, &name), 1),
        conformance::test_pipelines(),
    )
    .migrate()
    .await;
    let tenant = TenantId::new();
    let created = match &outcome {
        Ok(_) => Some(
            store
                .scope(tenant, &ctx())
                .create_contact(new_contact("owner@example.com", "Ada"))
                .await,
        ),
        Err(_) => None,
    };
    drop(store);
    admin
        .batch_execute(&format!(
            "DROP SCHEMA app_crm CASCADE; DROP OWNED BY {name}; DROP ROLE {name};"
        ))
        .await
        .unwrap();
    assert_eq!(outcome.unwrap(), all_versions());
    assert!(matches!(created, Some(Ok(_))), "{created:?}");
    assert!(
        in_default.is_err(),
        "without the right, creating the default schema is refused"
    );
}

fn store_config(db: &TestDb, user: &str) -> tokio_postgres::Config {
    let mut config = db.config();
    config.user(user);
    config
}

/// Schema 16 takes a commit's position from the tenant's last marker
/// instead of a counter row. A feed written under schema 15 goes on across
/// the upgrade from its last position, with no gap and no repeat; a tenant
/// whose events were all purged goes on after the purged position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_goes_on_from_its_last_position_across_the_upgrade_to_schema_16() {
    use crm_core::domain::{ConsumerName, FeedPosition};
    let db = TestDb::create().await;
    db.schema_at_version("upgrade", 15).await;
    let store = PostgresStore::builder(&db.url())
        .pool_size(2)
        .pipelines(conformance::test_pipelines())
        .schema("upgrade")
        .build()
        .await
        .unwrap();
    let (kept, purged) = (TenantId::new(), TenantId::new());
    for i in 0..3 {
        store
            .scope(kept, &ctx())
            .create_contact(new_contact(&format!("kept{i}@example.com"), "Ada"))
            .await
            .unwrap();
    }
    for i in 0..2 {
        store
            .scope(purged, &ctx())
            .create_contact(new_contact(&format!("gone{i}@example.com"), "Ada"))
            .await
            .unwrap();
    }
    // Both commits purged, as schema 15's store purged them (this build's
    // purge reads schema 18).
    let purged_rows = db
        .client()
        .await
        .execute(
            "WITH e AS (DELETE FROM upgrade.feed_events WHERE tenant_id = $1 RETURNING 1), \
             c AS (DELETE FROM upgrade.feed_commits WHERE tenant_id = $1 RETURNING 1) \
             UPDATE upgrade.feed_heads SET purged_position = 2, purged_seq = 1 \
             WHERE tenant_id = $1 AND (SELECT count(*) FROM e) = 2 AND (SELECT count(*) FROM c) = 2",
            &[&purged.as_uuid()],
        )
        .await
        .unwrap();
    assert_eq!(purged_rows, 1);

    assert_eq!(store.migrate().await.unwrap(), vec![16, 17, 18, 19, 20]);
    store
        .scope(kept, &ctx())
        .create_contact(new_contact("kept3@example.com", "Ada"))
        .await
        .unwrap();
    store
        .scope(purged, &ctx())
        .create_contact(new_contact("gone2@example.com", "Ada"))
        .await
        .unwrap();

    let reader = ConsumerName::parse("upgrade").unwrap();
    let mut tx = store.begin(kept, ctx()).await.unwrap();
    let positions: Vec<FeedPosition> = tx
        .next_batch(&reader, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.position)
        .collect();
    assert_eq!(
        positions,
        (1..=4).map(|c| FeedPosition::new(c, 1)).collect::<Vec<_>>(),
        "the commit after the upgrade takes the next position"
    );
    assert_eq!(tx.feed_head().await.unwrap(), FeedPosition::new(4, 1));
    tx.commit().await.unwrap();
    let mut tx = store.begin(purged, ctx()).await.unwrap();
    let batch = tx.next_batch(&reader, 100).await.unwrap();
    assert_eq!(
        batch.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![FeedPosition::new(3, 1)],
        "after a purge of every event, the next commit goes on after the purged position"
    );
    tx.commit().await.unwrap();
    drop(store);
}

/// Schema 17 moves the score out of `contacts` into `contact_ranks`. A
/// tenant written under schema 16 keeps every contact's score, active
/// flag and creation time across the upgrade — migrated by the schema's
/// owner, no superuser, under the forced row-level security — ranks its
/// top leads in the same order, and a score written afterwards touches no
/// contact. A role granted rights on the tables before has the same on
/// the new one, and reads and writes contacts as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scores_keep_their_contacts_across_the_upgrade_to_schema_17() {
    let db = TestDb::create().await;
    let suffix = uuid::Uuid::now_v7().simple();
    let (owner, app) = (
        format!("crm_test_role_owner_{suffix}"),
        format!("crm_test_role_app_{suffix}"),
    );
    let admin = db.client().await;
    admin
        .batch_execute(&format!(
            "CREATE ROLE {owner} LOGIN NOSUPERUSER NOBYPASSRLS; \
             CREATE ROLE {app} LOGIN NOSUPERUSER NOBYPASSRLS; \
             CREATE SCHEMA upgrade AUTHORIZATION {owner};"
        ))
        .await
        .unwrap();
    let client = support::client(&store_config(&db, &owner)).await;
    TestDb::migrate_schema_to(&client, "upgrade", 16).await;
    client
        .batch_execute(&format!(
            "GRANT USAGE ON SCHEMA upgrade TO {app}; \
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA upgrade TO {app};"
        ))
        .await
        .unwrap();
    let tenant = TenantId::new();
    client
        .batch_execute(&format!(
            "BEGIN; SELECT set_config('crm.tenant_id', '{tenant}', true); \
             INSERT INTO upgrade.contacts (tenant_id, id, email, first_name, last_name, \
             lead_source, score, active, created_at, updated_at, email_key, first_name_key, \
             last_name_key) \
             SELECT '{tenant}', gen_random_uuid(), 'c' || i || '@example.com', 'Ada', 'Byron', \
             'organic', (i * 37) % 101, i % 4 <> 0, now() - i * interval '1 hour', now(), \
             'c' || i || '@example.com', 'ada', 'byron' FROM generate_series(1, 300) i; COMMIT"
        ))
        .await
        .unwrap();
    // Read as the administrator, whom row-level security lets see every
    // tenant.
    let rows = |sql: &'static str| {
        let client = &admin;
        async move {
            let mut out: Vec<(uuid::Uuid, i16, bool, chrono::DateTime<chrono::Utc>)> = client
                .query(sql, &[])
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
                .collect();
            out.sort();
            out
        }
    };
    let before = rows("SELECT id, score, active, created_at FROM upgrade.contacts").await;
    assert_eq!(before.len(), 300);
    let mut leads: Vec<(i16, uuid::Uuid)> =
        before.iter().filter(|c| c.2).map(|c| (c.1, c.0)).collect();
    leads.sort_by(|a, b| b.cmp(a));

    let migrator = PostgresStore::from_pool(
        support::pool_for(store_config(&db, &owner), 1),
        conformance::test_pipelines(),
    )
    .with_schema("upgrade")
    .unwrap();
    assert_eq!(migrator.migrate().await.unwrap(), vec![17, 18, 19, 20]);
    drop(migrator);
    let after = rows(
        "SELECT contact_id, score, active, created_at FROM upgrade.contact_ranks \
         WHERE tenant_id IS NOT NULL",
    )
    .await;
    assert_eq!(after, before, "every contact's rank row, as it was");
    let column: i64 = client
        .query_one(
            "SELECT count(*) FROM information_schema.columns \
             WHERE table_schema = 'upgrade' AND table_name = 'contacts' AND column_name = 'score'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(column, 0, "the column is gone from contacts");
    let granted: bool = admin
        .query_one(
            &format!(
                "SELECT has_table_privilege('{app}', 'upgrade.contact_ranks', \
                 'SELECT, INSERT, UPDATE, DELETE') \
                 AND NOT has_table_privilege('{app}', 'upgrade.contact_ranks', 'TRUNCATE')"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(granted, "the rights the role has on contacts");

    // The application's role, no superuser.
    let store = PostgresStore::from_pool(
        support::pool_for(store_config(&db, &app), 2),
        conformance::test_pipelines(),
    )
    .with_schema("upgrade")
    .unwrap();
    let crm = store.scope(tenant, &ctx());
    let page = crm
        .search_contacts(&ContactQuery::top_leads(50))
        .await
        .unwrap();
    let got: Vec<(i16, uuid::Uuid)> = page
        .items
        .iter()
        .map(|c| (i16::from(c.score.get()), c.id.as_uuid()))
        .collect();
    assert_eq!(got, leads[..50].to_vec(), "the same top leads, in order");

    // A score written now changes the rank row only: no new version of
    // the contact.
    let top = page.items[0].clone();
    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    let written = tx
        .write_scores(&[crm_core::domain::ContactScore::new(
            top.id,
            crm_core::domain::Score::new(3).unwrap(),
        )])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(written, 1);
    let again = crm.get_contact(top.id).await.unwrap().unwrap();
    assert_eq!(again.score.get(), 3);
    assert_eq!(again.version, top.version);
    assert_eq!(again.updated_at, top.updated_at);
    // A new contact gets its rank row through the trigger, as the role.
    let new = crm
        .create_contact(new_contact("new@example.com", "Ada"))
        .await
        .unwrap();
    assert_eq!(crm.get_contact(new.id).await.unwrap(), Some(new));
    drop(crm);
    drop((store, client));
    admin
        .batch_execute(&format!(
            "DROP SCHEMA upgrade CASCADE; DROP OWNED BY {app}; DROP ROLE {app}; \
             DROP OWNED BY {owner}; DROP ROLE {owner};"
        ))
        .await
        .unwrap();
}

/// Schema 18 makes each history version its own feed event. A feed
/// written under schema 17 (every event a row of `feed_events`) reads on
/// across the upgrade: the old events with their diffs, the new ones after
/// them with no gap, a consumer's cursor where it was. A history purge
/// afterwards takes the diffs of the purged versions, old and new, and no
/// event; a feed purge then counts every event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_reads_on_across_the_upgrade_to_schema_18() {
    use crm_core::domain::{ActivityKind, ConsumerName, FeedEvent, FeedPosition, NewActivity};
    let db = TestDb::create().await;
    db.schema_at_version("upgrade", 17).await;
    let store = PostgresStore::builder(&db.url())
        .pool_size(2)
        .pipelines(conformance::test_pipelines())
        .schema("upgrade")
        .build()
        .await
        .unwrap();
    let t = TenantId::new();
    let crm = store.scope(t, &ctx());
    let rename = |first: &'static str| ContactPatch {
        first_name: Some(PersonName::parse(first).unwrap()),
        ..ContactPatch::default()
    };
    let c = crm
        .create_contact(new_contact("upgraded@example.com", "Ada"))
        .await
        .unwrap();
    let c = crm
        .update_contact(c.id, c.version, rename("Augusta"))
        .await
        .unwrap();
    crm.log_activity(NewActivity::new(c.id, ActivityKind::Call))
        .await
        .unwrap();
    // A consumer's cursor, as schema 17's store kept it.
    let reader = ConsumerName::parse("across").unwrap();
    db.client()
        .await
        .execute(
            "INSERT INTO upgrade.feed_consumers (tenant_id, name, position, seq, updated_at) \
             VALUES ($1, 'across', 1, 1, now())",
            &[&t.as_uuid()],
        )
        .await
        .unwrap();

    assert_eq!(store.migrate().await.unwrap(), vec![18, 19, 20]);
    let c = crm
        .update_contact(c.id, c.version, rename("Grace"))
        .await
        .unwrap();
    crm.log_activity(NewActivity::new(c.id, ActivityKind::Email))
        .await
        .unwrap();
    let c = crm
        .update_contact(c.id, c.version, rename("Hopper"))
        .await
        .unwrap();

    let read_all = || async {
        let mut tx = store.begin(t, ctx()).await.unwrap();
        let all = tx.events_after(FeedPosition::START, 100).await.unwrap();
        tx.commit().await.unwrap();
        all
    };
    let names = |events: &[FeedEvent]| -> Vec<Option<(String, String)>> {
        events
            .iter()
            .map(|e| {
                e.diff.as_ref().map(|d| {
                    let f = &d["first_name"];
                    (f.old.to_string(), f.new.to_string())
                })
            })
            .collect()
    };
    let all = read_all().await;
    assert_eq!(
        all.iter()
            .map(|e| (e.position, e.version))
            .collect::<Vec<_>>(),
        vec![
            (FeedPosition::new(1, 1), Some(1)),
            (FeedPosition::new(2, 1), Some(2)),
            (FeedPosition::new(3, 1), None),
            (FeedPosition::new(4, 1), Some(3)),
            (FeedPosition::new(5, 1), None),
            (FeedPosition::new(6, 1), Some(4)),
        ],
        "the events before and after the upgrade, one commit each, no gap"
    );
    let named = names(&all);
    assert_eq!(named[1], Some(("\"Ada\"".into(), "\"Augusta\"".into())));
    assert_eq!(named[3], Some(("\"Augusta\"".into(), "\"Grace\"".into())));
    assert_eq!(named[5], Some(("\"Grace\"".into(), "\"Hopper\"".into())));
    assert!(
        named[2].is_none() && named[4].is_none(),
        "activities have no diff"
    );

    let mut tx = store.begin(t, ctx()).await.unwrap();
    let batch = tx.next_batch(&reader, 100).await.unwrap();
    assert_eq!(
        batch.first().map(|e| e.position),
        Some(FeedPosition::new(2, 1)),
        "the cursor acked before the upgrade"
    );
    assert_eq!(batch.len(), 5);
    assert_eq!(tx.feed_head().await.unwrap(), FeedPosition::new(6, 1));
    tx.commit().await.unwrap();

    // Versions 1 to 3 have ended: 1 and 2 announced by rows of
    // feed_events, 3 its own event.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let mut tx = store.begin(t, ctx()).await.unwrap();
    let later = chrono::Utc::now() + chrono::Duration::seconds(1);
    assert_eq!(tx.purge_history(later).await.unwrap(), 3);
    tx.commit().await.unwrap();
    let after = read_all().await;
    assert_eq!(
        after
            .iter()
            .map(|e| (e.position, e.kind, e.id, e.version))
            .collect::<Vec<_>>(),
        all.iter()
            .map(|e| (e.position, e.kind, e.id, e.version))
            .collect::<Vec<_>>(),
        "the history purge takes no event"
    );
    let named = names(&after);
    assert!(
        named[0].is_none() && named[1].is_none() && named[3].is_none(),
        "the purged versions' diffs are gone: {named:?}"
    );
    assert_eq!(named[5], Some(("\"Grace\"".into(), "\"Hopper\"".into())));

    let mut tx = store.begin(t, ctx()).await.unwrap();
    assert_eq!(tx.purge_feed(later).await.unwrap(), 6);
    assert!(
        tx.events_after(FeedPosition::new(6, 1), 10)
            .await
            .unwrap()
            .is_empty()
    );
    tx.commit().await.unwrap();
    assert_eq!(c.version.get(), 4);
    drop(store);
}
