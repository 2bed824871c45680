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
    let client = store.db().client().await;
    // The statements name tables without their schema, as the store's
    // transactions find them through the search path.
    client
        .batch_execute(&format!("SET search_path TO \"{}\"", store.schema()))
        .await
        .unwrap();
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
    let client = store.db().client().await;
    // The statements name tables without their schema, as the store's
    // transactions find them through the search path.
    client
        .batch_execute(&format!("SET search_path TO \"{}\"", store.schema()))
        .await
        .unwrap();
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

/// The lookups of contacts by email take the email index whatever the
/// planner believes of the table: here 20,000 contacts loaded into a table
/// nothing has analysed (what a tenant's first import meets). Written as
/// `email_key = ANY($2)`, PostgreSQL planned this as a scan of the whole
/// tenant through the primary key, filtered by the array — one such scan
/// per batch made an import slow down as the table grew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_lookups_use_the_email_index_on_a_table_never_analysed() {
    let store = TestStore::new().await;
    let client = store.db().client().await;
    client
        .batch_execute(&format!("SET search_path TO \"{}\"", store.schema()))
        .await
        .unwrap();
    let tenant = uuid::Uuid::now_v7();
    client
        .batch_execute(&format!(
            "INSERT INTO contacts (tenant_id, id, email, first_name, last_name, lead_source, \
             created_at, updated_at, email_key, first_name_key, last_name_key) \
             SELECT '{tenant}', gen_random_uuid(), 'p' || g || '@plan.example', 'P', 'Q', \
             'import', now(), now(), 'p' || g || '@plan.example', 'p', 'q' \
             FROM generate_series(1, 20000) AS g"
        ))
        .await
        .unwrap();
    let analysed: i64 = client
        .query_one(
            "SELECT coalesce(analyze_count + autoanalyze_count, 0) FROM pg_stat_user_tables \
             WHERE relid = 'contacts'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(analysed, 0, "the table must not have been analysed yet");
    let keys: Vec<String> = (1..=1000)
        .map(|i| format!("p{}@plan.example", i * 17))
        .collect();
    // As the batch operations plan them (`custom_plans`).
    client
        .batch_execute("SET plan_cache_mode TO force_custom_plan")
        .await
        .unwrap();
    for name in ["bulk::IDS_BY_EMAIL", "contacts::GET_CONTACTS_BY_EMAIL"] {
        let statement = statements::all()
            .into_iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no statement {name}"));
        let plan: Vec<String> = client
            .query(&format!("EXPLAIN {}", statement.sql), &[&tenant, &keys])
            .await
            .unwrap_or_else(|e| panic!("{name}: {}", message(&e)))
            .iter()
            .map(|r| r.get(0))
            .collect();
        let plan = plan.join("\n");
        assert!(
            plan.contains("contacts_email_key") && !plan.contains("contacts_pkey"),
            "{name} does not look emails up by the email index:\n{plan}"
        );
        let found = client
            .query(statement.sql.as_ref(), &[&tenant, &keys])
            .await
            .unwrap();
        assert_eq!(found.len(), keys.len(), "{name}: every key found once");
    }
}
