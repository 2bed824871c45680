#![cfg(all(feature = "postgres", feature = "conformance"))]
//! The PostgreSQL backend's fixed SQL against the schema the migrations
//! make: every constant statement prepares (so a misspelt column, a
//! dropped table or a parameter of no inferable type fails here, not at
//! the first call in production), and each row insert binds its columns
//! at the positions, and with the types, of the columns it names.

mod support;

use std::collections::HashMap;

use crm_core::store::postgres::statements;
use support::TestStore;

/// A client of the store's database whose search path is the store's
/// schema: the statements name tables without their schema, as the
/// store's transactions find them through the search path.
async fn client_in_schema(store: &TestStore) -> tokio_postgres::Client {
    let client = store.db().client().await;
    client
        .batch_execute(&format!("SET search_path TO \"{}\"", store.schema()))
        .await
        .unwrap();
    client
}

/// The database's message for a failed statement.
fn message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixed_statement_prepares_against_the_migrated_schema() {
    let store = TestStore::new().await;
    let client = client_in_schema(&store).await;
    let all = statements::all();
    assert!(all.len() > 60, "only {} statements listed", all.len());
    // In one transaction, where the bulk staging table (dropped at
    // commit) exists once its statement has run; each statement under a
    // savepoint, so that one failure does not hide the others.
    client.batch_execute("BEGIN").await.unwrap();
    let mut failures = Vec::new();
    for statement in &all {
        if statement.name == "bulk::STAGE" {
            if let Err(e) = client.batch_execute(&statement.sql).await {
                panic!("{}: {}", statement.name, message(&e));
            }
            continue;
        }
        // A simple-query batch is prepared statement by statement.
        for sql in statement.sql.split(';').map(str::trim) {
            if sql.is_empty() {
                continue;
            }
            client.batch_execute("SAVEPOINT each").await.unwrap();
            match client.prepare(sql).await {
                Ok(_) => client
                    .batch_execute("RELEASE SAVEPOINT each")
                    .await
                    .unwrap(),
                Err(e) => {
                    failures.push(format!("{}: {}\n    {sql}", statement.name, message(&e)));
                    client
                        .batch_execute("ROLLBACK TO SAVEPOINT each")
                        .await
                        .unwrap();
                }
            }
        }
    }
    client.batch_execute("ROLLBACK").await.unwrap();
    assert!(
        failures.is_empty(),
        "statements that do not prepare:\n{}",
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_row_insert_binds_every_column_with_the_column_type() {
    let store = TestStore::new().await;
    let client = client_in_schema(&store).await;
    for insert in statements::inserts() {
        let types: HashMap<String, String> = client
            .query(
                "SELECT column_name::text, udt_name::text FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1",
                &[&insert.table],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let prepared = client
            .prepare(insert.sql)
            .await
            .unwrap_or_else(|e| panic!("{}: {}", insert.name, message(&e)));
        let params = prepared.params();
        assert_eq!(
            params.len(),
            insert.columns.len() + insert.extra.len(),
            "{}",
            insert.name
        );
        for (i, expected) in insert.extra.iter().enumerate() {
            let n = insert.columns.len() + i;
            assert_eq!(params[n].name(), expected, "{}: ${}", insert.name, n + 1);
        }
        for (i, column) in insert.columns.iter().enumerate() {
            let expected = types
                .get(column)
                .unwrap_or_else(|| panic!("{}: no column {column}", insert.name));
            assert_eq!(
                params[i].name(),
                expected,
                "{}: ${} is bound to {column}",
                insert.name,
                i + 1
            );
        }
    }
}

/// The EXPLAIN of a fixed statement, by name, with these parameters.
async fn plan_of(
    client: &tokio_postgres::Client,
    name: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> (String, usize) {
    let statement = statements::all()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no statement {name}"));
    let plan: Vec<String> = client
        .query(&format!("EXPLAIN {}", statement.sql), params)
        .await
        .unwrap_or_else(|e| panic!("{name}: {}", message(&e)))
        .iter()
        .map(|r| r.get(0))
        .collect();
    let found = client
        .query(statement.sql.as_ref(), params)
        .await
        .unwrap_or_else(|e| panic!("{name}: {}", message(&e)))
        .len();
    (plan.join("\n"), found)
}

/// Lookups by key take the key's index whatever the planner believes of
/// the table: here 20,000 contacts, 60,000 taggings, 20,000 external
/// links and 20,000 companies loaded into tables nothing has analysed
/// (what a tenant's first import or sync meets; autovacuum is off for
/// them, so that it cannot analyse them meanwhile). Written as
/// `email_key = ANY($2)`, PostgreSQL planned the email lookup as a scan of
/// the whole tenant through the primary key, filtered by the array — one
/// such scan per batch made an import slow down as the table grew; the
/// tags of a page of records, as `contact_id = ANY($2)`, as a read of
/// every tagging of the tenant; a batch of activities' locks of its
/// contacts and of their live states, as `id = ANY($2)`, as reads of the
/// tenant's contacts and states; an import batch's lock of the companies
/// it names and of those holding its emails' domains, as
/// `id = ANY($2) OR domain = ANY($3)`, as a read of every company of the
/// tenant. (The external-id lookups, `= ANY` and a join, take their index
/// as they are; they are checked so that they keep doing so.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_lookups_use_the_key_index_on_tables_never_analysed() {
    let store = TestStore::new().await;
    let client = client_in_schema(&store).await;
    let tenant = uuid::Uuid::now_v7();
    client
        .batch_execute(&format!(
            "ALTER TABLE contacts SET (autovacuum_enabled = off); \
             ALTER TABLE tags SET (autovacuum_enabled = off); \
             ALTER TABLE taggings SET (autovacuum_enabled = off); \
             ALTER TABLE external_ids SET (autovacuum_enabled = off); \
             ALTER TABLE contact_scores SET (autovacuum_enabled = off); \
             ALTER TABLE companies SET (autovacuum_enabled = off); \
             INSERT INTO companies (tenant_id, id, name, domain, created_at, updated_at, name_key) \
             SELECT '{tenant}', gen_random_uuid(), 'C' || g, 'c' || g || '.plan.example', now(), \
             now(), 'c' || g FROM generate_series(1, 20000) AS g; \
             INSERT INTO contacts (tenant_id, id, email, first_name, last_name, lead_source, \
             created_at, updated_at, email_key, first_name_key, last_name_key) \
             SELECT '{tenant}', gen_random_uuid(), 'p' || g || '@plan.example', 'P', 'Q', \
             'import', now(), now(), 'p' || g || '@plan.example', 'p', 'q' \
             FROM generate_series(1, 20000) AS g; \
             INSERT INTO tags (tenant_id, id, name, created_at, updated_at, name_key) \
             SELECT '{tenant}', gen_random_uuid(), 't' || g, now(), now(), 't' || g \
             FROM generate_series(0, 19) AS g; \
             INSERT INTO taggings (tenant_id, id, tag_id, contact_id, created_at) \
             SELECT '{tenant}', gen_random_uuid(), t.id, c.id, now() \
             FROM (SELECT id, row_number() OVER () AS n FROM contacts) AS c \
             CROSS JOIN generate_series(0, 2) AS k \
             JOIN tags t ON t.name_key = 't' || ((c.n + k * 7) % 20); \
             INSERT INTO external_ids (tenant_id, system, kind, record_id, external_id, updated_at) \
             SELECT '{tenant}', 'hubspot', 'contact', gen_random_uuid(), 'h' || g, now() \
             FROM generate_series(1, 20000) AS g"
        ))
        .await
        .unwrap();
    let analysed: i64 = client
        .query_one(
            "SELECT coalesce(sum(analyze_count + autoanalyze_count), 0)::int8 \
             FROM pg_stat_user_tables WHERE relid IN ('contacts'::regclass, \
             'taggings'::regclass, 'external_ids'::regclass, 'contact_scores'::regclass, \
             'companies'::regclass)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(analysed, 0, "the tables must not have been analysed yet");
    // As the batch operations plan them (`custom_plans`).
    client
        .batch_execute("SET plan_cache_mode TO force_custom_plan")
        .await
        .unwrap();
    let emails: Vec<String> = (1..=1000)
        .map(|i| format!("p{}@plan.example", i * 17))
        .collect();
    let contacts: Vec<uuid::Uuid> = client
        .query("SELECT id FROM contacts ORDER BY id LIMIT 1000", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    // A tenth of them lose their live-state row (what a load with the
    // triggers off leaves): the batch creates those again.
    let lacking: Vec<uuid::Uuid> = contacts.iter().step_by(10).copied().collect();
    let deleted = client
        .execute(
            "DELETE FROM contact_scores WHERE tenant_id = $1 AND contact_id = ANY($2)",
            &[&tenant, &lacking],
        )
        .await
        .unwrap();
    assert_eq!(deleted, 100);
    let externals: Vec<String> = (1..=1000).map(|i| format!("h{}", i * 17)).collect();
    // An import batch's companies: 100 named by id, and the domains of
    // 1,000 emails, 500 of them distinct, 490 held (one by a named
    // company), ten by none.
    let mut named: Vec<uuid::Uuid> = client
        .query(
            "SELECT id FROM companies WHERE domain <> 'c7.plan.example' ORDER BY id LIMIT 99",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    named.push(
        client
            .query_one(
                "SELECT id FROM companies WHERE domain = 'c7.plan.example'",
                &[],
            )
            .await
            .unwrap()
            .get(0),
    );
    let domains: Vec<String> = (0..1000)
        .map(|i| match (i % 500) * 7 {
            d if d > 3430 => format!("nobody{d}.plan.example"),
            d => format!("c{d}.plan.example"),
        })
        .collect();
    let held_domains: usize = 490;
    let overlap = client
        .query_one(
            "SELECT count(*) FROM companies WHERE id = ANY($1) AND domain = ANY($2)",
            &[&named, &domains],
        )
        .await
        .unwrap()
        .get::<_, i64>(0) as usize;
    let kinds = vec!["contact".to_string(); externals.len()];
    type Params<'a> = Vec<&'a (dyn tokio_postgres::types::ToSql + Sync)>;
    // What reading the tenant's rows filtered by the array looks like.
    const WHOLE_TENANT: &[&str] = &[
        "= ANY",
        "Bitmap Heap Scan",
        "Seq Scan",
        "Hash Join",
        "Hash Anti",
        "Hash Semi",
    ];
    // (statement, the index it must use, indexes it must not, rows)
    let lookups: [(&str, &str, &[&str], Params<'_>, usize); 11] = [
        (
            "bulk::IDS_BY_EMAIL",
            "contacts_email_key",
            &["contacts_pkey"],
            vec![&tenant, &emails],
            1000,
        ),
        (
            "contacts::GET_CONTACTS_BY_EMAIL",
            "contacts_email_key",
            &["contacts_pkey"],
            vec![&tenant, &emails],
            1000,
        ),
        (
            "tags::TAGS_OF_CONTACTS",
            "taggings_contact_idx",
            &[
                "taggings_pkey",
                "taggings_contact_key",
                "Seq Scan on taggings",
            ],
            vec![&tenant, &contacts],
            3000,
        ),
        (
            "external::BY_EXTERNAL",
            "external_ids_external_id_key",
            &["external_ids_pkey"],
            vec![&tenant, &"hubspot", &"contact", &externals],
            1000,
        ),
        (
            "external::HOLDERS",
            "external_ids_external_id_key",
            &["external_ids_pkey"],
            vec![&tenant, &"hubspot", &kinds, &externals],
            1000,
        ),
        // An import batch's companies, by id and by domain: each key by
        // its index, the locks by the primary key, in id order.
        (
            "bulk::SHARE_COMPANIES",
            "Scan using companies_domain_key",
            WHOLE_TENANT,
            vec![&tenant, &named, &domains],
            named.len() + held_domains - overlap,
        ),
        (
            "bulk::DOMAIN_HOLDERS",
            "Scan using companies_domain_key",
            WHOLE_TENANT,
            vec![&tenant, &domains],
            held_domains,
        ),
        // A batch of activities or signals: each contact and its live
        // state by its key, not the tenant's rows filtered by the array
        // (a bitmap scan of the key's first column, or a hash join).
        (
            "timeline_batch::SHARE_CONTACTS",
            "Scan using contacts_pkey",
            WHOLE_TENANT,
            vec![&tenant, &contacts],
            1000,
        ),
        // The same without a lock, for a batch the domain refused.
        (
            "timeline_batch::FIND_CONTACTS",
            "Scan using contacts_pkey",
            WHOLE_TENANT,
            vec![&tenant, &contacts],
            1000,
        ),
        (
            "timeline_batch::READ_STATES",
            "Scan using contact_scores_pkey",
            WHOLE_TENANT,
            vec![&tenant, &contacts],
            900,
        ),
        // No row returned: the rows it inserts are counted below.
        (
            "timeline_batch::CREATE_STATES",
            "Scan using contact_scores_pkey",
            WHOLE_TENANT,
            vec![&tenant, &contacts],
            0,
        ),
    ];
    for (name, index, not, params, rows) in &lookups {
        let (plan, found) = plan_of(&client, name, params).await;
        assert!(
            plan.contains(index) && !not.iter().any(|n| plan.contains(n)),
            "{name} does not look its keys up by {index}:\n{plan}"
        );
        assert_eq!(found, *rows, "{name}: every key found once");
    }
    let states: i64 = client
        .query_one(
            "SELECT count(*) FROM contact_scores WHERE tenant_id = $1 AND contact_id = ANY($2)",
            &[&tenant, &contacts],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        states, 1000,
        "CREATE_STATES gave the 100 contacts their row"
    );
}
