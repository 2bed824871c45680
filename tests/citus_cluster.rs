#![cfg(all(feature = "postgres", feature = "conformance"))]
//! What `PostgresStore::distribute` makes of a schema on a Citus cluster:
//! every table distributed by tenant and colocated (or a reference table),
//! nothing left local, again and again, also for a table that arrives
//! later; and a tenant's reads routed to the one worker that holds it.
//! These run when `CRM_TEST_CITUS_URL` names a coordinator (see
//! `support::citus`).

mod support;

use crm_core::{
    Actor, ContactQuery, Context, PostgresStore, Store, StoreExt, TenantId,
    domain::{
        ActivityKind, ContactId, ContactScore, Email, NewActivity, NewContact, PersonName, Score,
    },
    store::postgres::statements,
};
use support::{Target, TestDb, TestStore, citus};
use tokio_postgres::Client;

fn ctx() -> Context {
    Context::new(Actor::parse("user:citus-test").unwrap())
}

/// A table of the test's schema: its name, how Citus holds it (`h`
/// distributed by hash, `n` reference, `None` local), its distribution
/// column and its colocation group.
type Placement = (String, Option<String>, Option<String>, Option<i32>);

/// Every table of the test's schema, by name.
async fn placement(db: &TestDb) -> Vec<Placement> {
    db.client()
        .await
        .query(
            "SELECT c.relname::text, p.partmethod::text, \
                    CASE WHEN p.partmethod = 'h' \
                         THEN column_to_column_name(p.logicalrelid, p.partkey) END, \
                    p.colocationid \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             LEFT JOIN pg_dist_partition p ON p.logicalrelid = c.oid \
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') ORDER BY 1",
            &[&db.schema()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

/// Asserts that every table of the schema is distributed by `tenant_id`
/// in one colocation group, except `schema_migrations`, a reference table.
/// A table that a migration adds and nothing distributes fails it.
fn assert_all_distributed(tables: &[Placement]) {
    assert!(tables.len() >= 8, "the store's tables: {tables:?}");
    let group = tables
        .iter()
        .find(|t| t.0 == "contacts")
        .and_then(|t| t.3)
        .expect("contacts is distributed");
    for (name, method, column, colocation) in tables {
        if name == "schema_migrations" {
            assert_eq!(method.as_deref(), Some("n"), "{name} is a reference table");
        } else {
            assert_eq!(
                method.as_deref(),
                Some("h"),
                "{name} is distributed (not left local): {tables:?}"
            );
            assert_eq!(column.as_deref(), Some("tenant_id"), "{name} by tenant");
            assert_eq!(
                *colocation,
                Some(group),
                "{name} is colocated with contacts"
            );
        }
    }
}

/// A store of the test's schema as the administrative user.
fn owner(db: &TestDb) -> PostgresStore {
    PostgresStore::from_pool(db.pool(1), crm_core::conformance::test_pipelines())
        .with_schema(db.schema())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_table_is_distributed_by_tenant_and_colocated_and_the_rest_are_reference_tables() {
    let Some(store) = TestStore::on(Target::Citus).await else {
        return;
    };
    assert_all_distributed(&placement(store.db()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributing_or_migrating_again_changes_nothing() {
    let Some(store) = TestStore::on(Target::Citus).await else {
        return;
    };
    let before = placement(store.db()).await;
    let owner = owner(store.db());
    assert_eq!(owner.distribute().await.unwrap(), Vec::<String>::new());
    assert_eq!(owner.migrate().await.unwrap(), Vec::<i64>::new());
    assert_eq!(placement(store.db()).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_added_to_a_distributed_schema_is_distributed_by_the_next_migrate() {
    let Some(store) = TestStore::on(Target::Citus).await else {
        return;
    };
    let db = store.db();
    // What a later migration does: a table keyed by tenant that references
    // contacts, and a table without a tenant.
    db.client()
        .await
        .batch_execute(&db.sql(
            "CREATE TABLE crm.notes (tenant_id uuid NOT NULL, id uuid NOT NULL, \
                 contact_id uuid NOT NULL, PRIMARY KEY (tenant_id, id), \
                 FOREIGN KEY (tenant_id, contact_id) REFERENCES crm.contacts (tenant_id, id)); \
             CREATE TABLE crm.settings (name text PRIMARY KEY, value text);",
        ))
        .await
        .unwrap();
    let applied = owner(db).migrate().await.unwrap();
    assert!(applied.is_empty(), "no migration is new: {applied:?}");
    let tables = placement(db).await;
    let of = |name: &str| tables.iter().find(|t| t.0 == name).cloned().unwrap();
    assert_eq!(of("notes").1.as_deref(), Some("h"), "{tables:?}");
    assert_eq!(of("notes").3, of("contacts").3, "colocated with contacts");
    assert_eq!(of("settings").1.as_deref(), Some("n"), "{tables:?}");
}

/// The plan of `sql` with `params`, as the store's role sees it.
async fn explain(
    client: &Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> String {
    client
        .query(&format!("EXPLAIN {sql}"), params)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

fn statement(name: &str) -> String {
    statements::all()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no statement {name}"))
        .sql
        .into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_live_top_leads_and_timeline_go_to_one_worker() {
    let Some(store) = TestStore::on(Target::Citus).await else {
        return;
    };
    let tenant = TenantId::new();
    let crm = store.scope(tenant, &ctx());
    let contact = crm
        .create_contact(NewContact::new(
            Email::parse("routed@example.com").unwrap(),
            PersonName::parse("Ada").unwrap(),
            PersonName::parse("Lovelace").unwrap(),
        ))
        .await
        .unwrap();
    crm.log_activity(NewActivity::new(contact.id, ActivityKind::Call))
        .await
        .unwrap();

    let db = store.db();
    let client = citus::client(&db.store_config()).await;
    client
        .batch_execute(&format!(
            "BEGIN; SET LOCAL search_path TO {}; SET LOCAL citus.propagate_set_commands TO 'local'; \
             SET LOCAL crm.tenant_id TO '{tenant}'",
            db.schema()
        ))
        .await
        .unwrap();
    let (t, c, limit) = (tenant.as_uuid(), contact.id.as_uuid(), 50i64);
    let top = explain(&client, &statement("scoring::LIVE_TOP"), &[&t, &limit]).await;
    let timeline = explain(&client, &statement("timeline::TIMELINE"), &[&t, &c, &limit]).await;
    client.batch_execute("ROLLBACK").await.unwrap();
    for (what, plan) in [("top leads", &top), ("timeline", &timeline)] {
        assert!(
            plan.contains("Custom Scan (Citus Adaptive)"),
            "{what}:\n{plan}"
        );
        assert!(
            plan.contains("Task Count: 1"),
            "{what} is one task:\n{plan}"
        );
    }

    // ... on the worker that holds every table's shard for the tenant.
    let nodes: Vec<i32> = db
        .client()
        .await
        .query(
            "SELECT DISTINCT s.nodeport FROM unnest($2::text[]) AS t(name) \
             CROSS JOIN LATERAL get_shard_id_for_distribution_column( \
                 format('%I.%I', $1::text, t.name)::regclass, $3::uuid) AS shard \
             JOIN pg_dist_shard_placement s ON s.shardid = shard",
            &[
                &db.schema(),
                &vec![
                    "contacts",
                    "deals",
                    "activities",
                    "signals",
                    "contact_scores",
                    "history",
                    "idempotency_keys",
                ],
                &tenant.as_uuid(),
            ],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(nodes.len(), 1, "one node holds the tenant: {nodes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_adding_triggers_and_a_table_to_a_distributed_schema_applies_and_records() {
    let Some(store) = TestStore::on(Target::Citus).await else {
        return;
    };
    let db = store.db();
    // Take the companies migration back out of the distributed schema, as
    // if the schema predated it: the next migrate applies it there — new
    // tables with keys to and from the distributed contacts and deals,
    // new columns, functions, and triggers on distributed tables.
    db.ddl(&[
        "DROP TABLE crm.taggings, crm.tasks, crm.tags",
        "ALTER TABLE crm.contacts DROP COLUMN company_id CASCADE, DROP COLUMN owner_id CASCADE",
        "ALTER TABLE crm.deals DROP COLUMN company_id CASCADE, DROP COLUMN owner_id CASCADE",
        "DROP TABLE crm.companies",
        "DROP FUNCTION crm.crm_company_data, crm.crm_tag_data, crm.crm_tagging_data, \
         crm.crm_task_data, crm.crm_companies_history, crm.crm_tags_history, \
         crm.crm_taggings_history, crm.crm_tasks_history",
        "DROP FUNCTION crm.crm_contact_data(uuid, text, text, text, text, text, text, text, \
         jsonb, boolean, timestamptz, timestamptz, bigint, uuid, text)",
        "DROP FUNCTION crm.crm_deal_data(uuid, uuid, text, numeric, text, text, text, date, \
         timestamptz, timestamptz, text, timestamptz, timestamptz, bigint, uuid, text)",
        "DELETE FROM crm.schema_migrations WHERE version = 5",
    ])
    .await;
    assert_eq!(owner(db).migrate().await.unwrap(), vec![5]);
    assert_all_distributed(&placement(db).await);
    db.ddl(&[&format!(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON crm.companies, crm.tags, crm.taggings, \
         crm.tasks TO {}",
        db.store_config().get_user().unwrap()
    )])
    .await;

    let tenant = TenantId::new();
    let crm = store.scope(tenant, &ctx());
    let contact = crm
        .create_contact(NewContact::new(
            Email::parse("after@example.com").unwrap(),
            PersonName::parse("Ada").unwrap(),
            PersonName::parse("Lovelace").unwrap(),
        ))
        .await
        .unwrap();
    let history = crm
        .entity_history(contact.id, &Default::default())
        .await
        .unwrap();
    assert_eq!(history.items.len(), 1, "{history:?}");
    assert_eq!(history.items[0].actor, "user:citus-test");
}

/// Schemas 13 (statement triggers that read their transition tables in
/// slices), 14 (the timeline indexes carrying the kind) and 15 (the
/// idempotency claim's first read) apply to a schema distributed before
/// them: functions replaced, indexes built and dropped on every shard;
/// afterwards contacts record their history, and a batch of activities
/// (one statement of many rows, through the sliced feed trigger) is
/// logged and read back on a contact's timeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_13_to_15_apply_to_a_schema_distributed_before_them() {
    let Some(store) = TestStore::on(Target::Citus).await else {
        return;
    };
    let db = store.db();
    db.ddl(&[
        "CREATE INDEX activities_timeline_idx \
         ON crm.activities (tenant_id, contact_id, occurred_at DESC, id DESC)",
        "DROP INDEX crm.activities_timeline_kind_idx",
        "CREATE INDEX signals_contact_idx ON crm.signals (tenant_id, contact_id, occurred_at, id)",
        "DROP INDEX crm.signals_contact_kind_idx",
        "DROP FUNCTION crm.crm_statement_slice()",
        "DROP FUNCTION crm.crm_log_feed_write(text, text, uuid[], uuid[])",
        "DROP FUNCTION crm.crm_idempotency_settled_record(uuid, text, text, bigint)",
        "DELETE FROM crm.schema_migrations WHERE version IN (13, 14, 15)",
    ])
    .await;
    assert_eq!(owner(db).migrate().await.unwrap(), vec![13, 14, 15]);
    assert_all_distributed(&placement(db).await);
    let client = db.client().await;
    let indexes: Vec<String> = client
        .query(
            "SELECT indexname FROM pg_indexes WHERE schemaname = $1 \
             AND tablename IN ('activities', 'signals') ORDER BY indexname",
            &[&db.schema()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        indexes.contains(&"activities_timeline_kind_idx".to_string())
            && indexes.contains(&"signals_contact_kind_idx".to_string())
            && !indexes.contains(&"activities_timeline_idx".to_string())
            && !indexes.contains(&"signals_contact_idx".to_string()),
        "{indexes:?}"
    );

    let tenant = TenantId::new();
    let crm = store.scope(tenant, &ctx());
    let mut ids = Vec::new();
    for i in 0..3 {
        let c = crm
            .create_contact(NewContact::new(
                Email::parse(&format!("slice{i}@example.com")).unwrap(),
                PersonName::parse("Ada").unwrap(),
                PersonName::parse("Lovelace").unwrap(),
            ))
            .await
            .unwrap();
        ids.push(c.id);
    }
    let activities: Vec<NewActivity> = ids
        .iter()
        .flat_map(|id| (0..4).map(|_| NewActivity::new(*id, ActivityKind::Call)))
        .collect();
    crm.log_activities(&activities).await.unwrap();
    let page = crm.timeline(ids[0], &Default::default()).await.unwrap();
    assert_eq!(page.items.len(), 4);
    let history = crm
        .entity_history(ids[2], &Default::default())
        .await
        .unwrap();
    assert_eq!(history.items.len(), 1, "{history:?}");
}

/// Schema 17 (the batch score out of `contacts`, into `contact_ranks`)
/// applies to a schema distributed before it: the new table is
/// distributed and colocated, every contact's score is copied on its
/// worker, and afterwards the top leads, a score write and a new contact's
/// rank row (made by the trigger on the worker's shard) all work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_17_applies_to_a_schema_distributed_before_it() {
    let Some(store) = TestStore::on(Target::Citus).await else {
        return;
    };
    let db = store.db();
    let tenant = TenantId::new();
    let crm = store.scope(tenant, &ctx());
    let mut ids = Vec::new();
    for i in 0..6 {
        let c = crm
            .create_contact(NewContact::new(
                Email::parse(&format!("rank{i}@example.com")).unwrap(),
                PersonName::parse("Ada").unwrap(),
                PersonName::parse("Lovelace").unwrap(),
            ))
            .await
            .unwrap();
        ids.push(c.id);
    }
    let scores: Vec<ContactScore> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| ContactScore::new(*id, Score::new(10 * i as i64 + 5).unwrap()))
        .collect();
    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    tx.write_scores(&scores).await.unwrap();
    tx.commit().await.unwrap();
    // Back to schema 16's layout, the scores in their column.
    db.ddl(&[
        "ALTER TABLE crm.contacts ADD COLUMN score smallint NOT NULL DEFAULT 0",
        "UPDATE crm.contacts c SET score = r.score FROM crm.contact_ranks r \
         WHERE r.tenant_id = c.tenant_id AND r.contact_id = c.id",
        "CREATE INDEX contacts_top_leads_idx ON crm.contacts (tenant_id, score DESC, id DESC) \
         WHERE active",
        "DROP TABLE crm.contact_ranks",
        "DROP TRIGGER contacts_ranks_insert ON crm.contacts",
        "DROP TRIGGER contacts_ranks_follow ON crm.contacts",
        "DROP FUNCTION crm.crm_contact_ranks_insert(), crm.crm_contact_ranks_follow()",
        "CREATE TRIGGER contacts_score_feed AFTER UPDATE OF score ON crm.contacts \
         FOR EACH ROW EXECUTE FUNCTION crm.crm_score_feed()",
        "DELETE FROM crm.schema_migrations WHERE version = 17",
    ])
    .await;
    assert_eq!(owner(db).migrate().await.unwrap(), vec![17]);
    assert_all_distributed(&placement(db).await);

    let top = crm
        .search_contacts(&ContactQuery::top_leads(10))
        .await
        .unwrap();
    let got: Vec<(ContactId, Score)> = top.items.iter().map(|c| (c.id, c.score)).collect();
    let mut want: Vec<(ContactId, Score)> = scores.iter().map(|s| (s.contact, s.score)).collect();
    want.reverse();
    assert_eq!(got, want, "the scores, copied, rank the top leads");
    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    let written = tx
        .write_scores(&[ContactScore::new(ids[0], Score::new(99).unwrap())])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(written, 1);
    let new = crm
        .create_contact(NewContact::new(
            Email::parse("rank-new@example.com").unwrap(),
            PersonName::parse("Ada").unwrap(),
            PersonName::parse("Lovelace").unwrap(),
        ))
        .await
        .unwrap();
    assert_eq!(crm.get_contact(new.id).await.unwrap(), Some(new));
    let top = crm
        .search_contacts(&ContactQuery::top_leads(1))
        .await
        .unwrap();
    assert_eq!(top.items[0].id, ids[0]);
    assert_eq!(top.items[0].score.get(), 99);
}

/// The text of `function` as migration `version` created it, to be
/// created again (`CREATE OR REPLACE`).
fn function_of(version: i64, function: &str) -> String {
    let sql = crm_core::store::postgres::MIGRATIONS
        .iter()
        .find(|m| m.version == version)
        .expect("a migration")
        .sql;
    let start = [
        format!("CREATE OR REPLACE FUNCTION {function}("),
        format!("CREATE FUNCTION {function}("),
    ]
    .iter()
    .find_map(|head| sql.find(head.as_str()))
    .unwrap_or_else(|| panic!("{function} in migration {version}"));
    let end = start + sql[start..].find("\n$$;").expect("the end of the body") + "\n$$;".len();
    let text = &sql[start..end];
    text.replacen("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)
}

/// Schema 18 (each history version its own feed event, the marker with
/// its number of events) applies to a schema distributed before it: the
/// new columns, index, check and commit trigger reach every shard, the
/// events written under schema 17 read on, with their diffs, and the
/// events written afterwards (numbered and committed by the triggers on
/// the workers) follow with no gap. Schema 19 follows it: its log table is
/// made and distributed with the others, and the transactions the workers'
/// commit triggers append to it are numbered by the reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_18_applies_to_a_schema_distributed_before_it() {
    use crm_core::domain::{ContactPatch, FeedPosition};
    let Some(store) = TestStore::on(Target::Citus).await else {
        return;
    };
    let db = store.db();
    // Back to schema 17's layout and functions (schema 20's insert
    // triggers, then schema 19's log and bounds first).
    let mut undo_20 = Vec::new();
    for (table, kind) in [
        ("contacts", "contact"),
        ("companies", "company"),
        ("deals", "deal"),
    ] {
        undo_20.extend([
            format!("DROP TRIGGER {table}_history_insert ON crm.{table}"),
            format!(
                "CREATE TRIGGER {table}_history_insert AFTER INSERT ON crm.{table} \
                 REFERENCING NEW TABLE AS new_rows \
                 FOR EACH STATEMENT EXECUTE FUNCTION crm.crm_{table}_history_set()"
            ),
            format!("DROP FUNCTION crm.crm_{table}_history_created()"),
            format!("DROP FUNCTION crm.crm_created_diff_{kind}(jsonb)"),
        ]);
    }
    undo_20.extend([
        "DROP FUNCTION crm.crm_history_created(uuid, integer)".to_string(),
        "DROP FUNCTION crm.crm_created_field(jsonb, text)".to_string(),
        "DROP FUNCTION crm.crm_created_diff(jsonb)".to_string(),
    ]);
    db.ddl(&undo_20.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    db.ddl(&[
        "DROP TABLE crm.feed_pending",
        "ALTER TABLE crm.feed_commits DROP COLUMN seen_node, DROP COLUMN seen_xmax, \
         DROP COLUMN running",
        "ALTER TABLE crm.feed_heads DROP COLUMN purged_node, DROP COLUMN purged_xmax, \
         DROP COLUMN purged_running",
        "DROP TRIGGER history_feed_commit ON crm.history",
        "DROP TRIGGER history_keep_events ON crm.history",
        "DROP FUNCTION crm.crm_history_keep_events()",
        "ALTER TABLE crm.history DROP CONSTRAINT history_feed_check, DROP COLUMN txn, \
         DROP COLUMN seq",
        "ALTER TABLE crm.feed_commits DROP CONSTRAINT feed_commits_check, DROP COLUMN events",
        "ALTER TABLE crm.feed_commits ADD CONSTRAINT feed_commits_position_check \
         CHECK (position IS NULL OR position >= 1)",
    ])
    .await;
    let functions = [
        function_of(2, "crm_write_history"),
        function_of(12, "crm_history_write_set"),
        function_of(8, "crm_feed_write"),
        function_of(12, "crm_feed_write_set"),
        function_of(13, "crm_history_feed_set"),
        function_of(16, "crm_feed_commit"),
    ];
    let client = db.client().await;
    client
        .batch_execute(&format!(
            "SET citus.enable_unsafe_triggers TO on; SET search_path TO \"{}\", pg_temp; {}",
            db.schema(),
            functions.join("\n")
        ))
        .await
        .unwrap();
    db.ddl(&[
        "DROP FUNCTION crm.crm_feed_claim(uuid, integer)",
        "CREATE TRIGGER history_feed AFTER INSERT ON crm.history \
         REFERENCING NEW TABLE AS new_rows \
         FOR EACH STATEMENT EXECUTE FUNCTION crm.crm_history_feed_set()",
        "DELETE FROM crm.schema_migrations WHERE version IN (18, 19, 20)",
    ])
    .await;

    let tenant = TenantId::new();
    let crm = store.scope(tenant, &ctx());
    let rename = |first: &'static str| ContactPatch {
        first_name: Some(PersonName::parse(first).unwrap()),
        ..ContactPatch::default()
    };
    let c = crm
        .create_contact(NewContact::new(
            Email::parse("feed18@example.com").unwrap(),
            PersonName::parse("Ada").unwrap(),
            PersonName::parse("Lovelace").unwrap(),
        ))
        .await
        .unwrap();
    let c = crm
        .update_contact(c.id, c.version, rename("Augusta"))
        .await
        .unwrap();

    assert_eq!(owner(db).migrate().await.unwrap(), vec![18, 19, 20]);
    assert_all_distributed(&placement(db).await);
    crm.log_activity(NewActivity::new(c.id, ActivityKind::Call))
        .await
        .unwrap();
    crm.update_contact(c.id, c.version, rename("Grace"))
        .await
        .unwrap();

    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    let events = tx.events_after(FeedPosition::START, 100).await.unwrap();
    let head = tx.feed_head().await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        events
            .iter()
            .map(|e| (e.position, e.version))
            .collect::<Vec<_>>(),
        vec![
            (FeedPosition::new(1, 1), Some(1)),
            (FeedPosition::new(2, 1), Some(2)),
            (FeedPosition::new(3, 1), None),
            (FeedPosition::new(4, 1), Some(3)),
        ]
    );
    assert_eq!(head, FeedPosition::new(4, 1));
    let renamed = |i: usize| {
        events[i]
            .diff
            .as_ref()
            .map(|d| d["first_name"].new.to_string())
    };
    assert_eq!(renamed(1).as_deref(), Some("\"Augusta\""));
    assert_eq!(renamed(3).as_deref(), Some("\"Grace\""));

    // Schema 20's insert trigger runs on the upgraded shards: a contact
    // created now is recorded with every value not null as a change.
    let created = crm
        .create_contact(NewContact::new(
            Email::parse("feed20@example.com").unwrap(),
            PersonName::parse("Grace").unwrap(),
            PersonName::parse("Hopper").unwrap(),
        ))
        .await
        .unwrap();
    let diff: serde_json::Value = db
        .client()
        .await
        .query_one(
            &db.sql("SELECT diff FROM crm.history WHERE tenant_id = $1 AND entity_id = $2"),
            &[&tenant.as_uuid(), &created.id.as_uuid()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(diff["email"]["new"], "feed20@example.com");
    assert_eq!(diff["last_name"]["new"], "Hopper");
    assert!(diff["email"]["old"].is_null());
    assert!(diff.get("title").is_none(), "{diff}");
}
