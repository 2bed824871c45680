#![cfg(all(feature = "postgres", feature = "conformance"))]
//! `PostgresStore::distribute` where it is not the first thing done to a
//! fresh, plainly named schema: on plain PostgreSQL (it must fail and
//! change nothing), on a schema that already holds a tenant's records and
//! their history, on schemas whose names need quoting, and from two stores
//! at once. The Citus tests run when `CRM_TEST_CITUS_URL` names a
//! coordinator (see `support::citus`).

mod support;

use crm_core::{
    Actor, Context, Error, PostgresStore, StoreExt, TenantId,
    domain::{
        ActivityKind, ContactPatch, Currency, DealTitle, Email, Money, NewActivity, NewContact,
        NewDeal, PersonName,
    },
    history::HistoryEntity,
};
use support::{TestDb, citus};
use tokio_postgres::Config;

fn ctx() -> Context {
    Context::new(Actor::parse("user:distribute-test").unwrap())
}

fn new_contact(email: &str) -> NewContact {
    NewContact::new(
        Email::parse(email).unwrap(),
        PersonName::parse("Ada").unwrap(),
        PersonName::parse("Lovelace").unwrap(),
    )
}

/// A schema of the Citus cluster made by a test, dropped afterwards
/// (kept, and named, when the test fails).
struct Schema {
    name: String,
    admin: Config,
}

impl Schema {
    /// The schema `name` (not created yet).
    fn new(admin: &Config, name: &str) -> Schema {
        Schema {
            name: name.to_string(),
            admin: admin.clone(),
        }
    }

    /// A store of the schema as the coordinator's user, with `pool`
    /// connections.
    fn store(&self, pool: usize) -> PostgresStore {
        PostgresStore::from_pool(
            support::pool_for(self.admin.clone(), pool),
            crm_core::conformance::test_pipelines(),
        )
        .with_schema(&self.name)
        .expect("a valid schema name")
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("the test failed: its Citus schema {:?} is kept", self.name);
            return;
        }
        let admin = self.admin.clone();
        let sql = format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            postgres_protocol::escape::escape_identifier(&self.name)
        );
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async { citus::client(&admin).await.batch_execute(&sql).await })
        })
        .join();
    }
}

/// The coordinator, with few shards per table.
fn coordinator() -> Option<Config> {
    let mut admin = citus::coordinator()?;
    admin.options(format!("-c citus.shard_count={}", citus::SHARD_COUNT));
    Some(admin)
}

/// 16 hex digits of a v7 id's random tail: distinct for tests started in
/// the same millisecond (its head is the time, and is not).
fn suffix() -> String {
    uuid::Uuid::now_v7().simple().to_string()[16..].to_string()
}

/// How Citus holds each table of `schema` (`h`, `n`, or `None` for a
/// local table), by name.
async fn placement(admin: &Config, schema: &str) -> Vec<(String, Option<String>)> {
    citus::client(admin)
        .await
        .query(
            "SELECT c.relname::text, p.partmethod::text \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             LEFT JOIN pg_dist_partition p ON p.logicalrelid = c.oid \
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') ORDER BY 1",
            &[&schema],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn assert_distributed(tables: &[(String, Option<String>)]) {
    assert!(tables.len() >= 7, "{tables:?}");
    for (name, method) in tables {
        let want = if name == "schema_migrations" {
            "n"
        } else {
            "h"
        };
        assert_eq!(method.as_deref(), Some(want), "{name}: {tables:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distribute_on_plain_postgresql_fails_with_a_backend_error_and_creates_nothing() {
    let db = TestDb::create().await;
    let store = PostgresStore::from_pool(db.pool(2), crm_core::conformance::test_pipelines());
    let err = store
        .distribute()
        .await
        .expect_err("no Citus, no distribution");
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
    let message = std::error::Error::source(&err)
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(
        message.contains("no Citus extension") && message.contains("\"crm\""),
        "names the schema and what is missing: {message}"
    );
    let client = db.client().await;
    let schemas: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'crm'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(schemas, 0, "the failed distribute left no schema behind");

    // Over a migrated schema, it changes nothing either; migrate still works.
    assert!(!store.migrate().await.unwrap().is_empty());
    let before: i64 = client
        .query_one("SELECT count(*) FROM crm.schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert!(store.distribute().await.is_err());
    let after: i64 = client
        .query_one("SELECT count(*) FROM crm.schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(before, after);
    assert_eq!(store.migrate().await.unwrap(), Vec::<i64>::new());
}

/// A schema of the coordinator, migrated and used while still local:
/// a contact with two versions, a deal, and an activity on the deal.
/// Returns the store, the tenant's scope and the contact's and deal's ids.
async fn a_local_schema_holding_records(
    schema: &Schema,
) -> (
    PostgresStore,
    TenantId,
    crm_core::domain::ContactId,
    crm_core::domain::DealId,
) {
    let store = schema.store(2);
    assert!(!store.migrate().await.unwrap().is_empty());
    assert!(
        placement(&schema.admin, &schema.name)
            .await
            .iter()
            .all(|t| t.1.is_none())
    );
    let tenant = TenantId::new();
    let crm = store.scope(tenant, &ctx());
    let contact = crm
        .create_contact(new_contact("before@example.com"))
        .await
        .unwrap();
    let contact = crm
        .update_contact(
            contact.id,
            contact.version,
            ContactPatch {
                first_name: Some(PersonName::parse("Augusta").unwrap()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let deal = crm
        .create_deal(NewDeal::new(
            contact.id,
            DealTitle::parse("Renewal").unwrap(),
            Money::parse("100", Currency::parse("EUR").unwrap()).unwrap(),
        ))
        .await
        .unwrap();
    crm.log_activity(NewActivity::new(contact.id, ActivityKind::Note).deal(deal.id))
        .await
        .unwrap();
    (store, tenant, contact.id, deal.id)
}

/// The number of rows of `table` in the schema, as the coordinator's user.
async fn rows(schema: &Schema, table: &str) -> i64 {
    citus::client(&schema.admin)
        .await
        .query_one(
            &format!(
                "SELECT count(*) FROM {}.{table}",
                postgres_protocol::escape::escape_identifier(&schema.name)
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// Distributing a schema that already holds records (which the method's
/// documentation promises: "Tables that hold rows are distributed with
/// them") succeeds, every record stays readable, and its history is
/// neither lost nor doubled: the copy into the shards must not fire the
/// history triggers (Citus creates the shards' triggers before it copies
/// the rows: copying `contacts` fired the history trigger on a worker,
/// which met no `history` table there, `relation "history" does not
/// exist`, from `multi_copy.c`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_holding_records_is_distributed_with_them_and_their_history_exactly_once() {
    let Some(admin) = coordinator() else {
        return;
    };
    let schema = Schema::new(&admin, &format!("crm_test_rows_{}", suffix()));
    let (store, tenant, contact, deal) = a_local_schema_holding_records(&schema).await;
    let crm = store.scope(tenant, &ctx());
    assert_eq!(rows(&schema, "history").await, 3);

    let distributed = store.distribute().await.unwrap();
    assert!(
        distributed.contains(&"contacts".to_string()),
        "{distributed:?}"
    );
    assert_distributed(&placement(&admin, &schema.name).await);

    assert_eq!(
        crm.get_contact(contact)
            .await
            .unwrap()
            .map(|c| c.version.get()),
        Some(2)
    );
    assert_eq!(
        crm.timeline(contact, &Default::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert_eq!(
        rows(&schema, "history").await,
        3,
        "two versions of the contact, one of the deal: distributing neither loses nor doubles \
         history"
    );
    // Citus leaves the copied rows in the coordinator's local tables;
    // distribute removes that dead copy.
    for table in ["contacts", "deals", "activities", "history"] {
        let local: i64 = citus::client(&schema.admin)
            .await
            .query_one(
                "SELECT pg_relation_size(format('%I.%I', $1::text, $2::text)::regclass)",
                &[&schema.name, &table],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(local, 0, "the coordinator keeps no local copy of {table}");
    }
    // A write after distributing is recorded once, on the worker.
    crm.delete_deal(deal).await.unwrap();
    assert_eq!(rows(&schema, "history").await, 4);
}

/// Whatever `distribute` makes of a schema holding records, it does not
/// lose or half-distribute them: when it fails, every table is still
/// local and holds what it held, and the store goes on working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributing_a_schema_holding_records_either_succeeds_or_leaves_it_local_and_intact() {
    let Some(admin) = coordinator() else {
        return;
    };
    let schema = Schema::new(&admin, &format!("crm_test_rows_{}", suffix()));
    let (store, tenant, contact, _) = a_local_schema_holding_records(&schema).await;
    let before: Vec<i64> = futures_util::future::join_all(
        ["contacts", "deals", "activities", "history"].map(|t| rows(&schema, t)),
    )
    .await;
    let placement_after = match store.distribute().await {
        Ok(_) => {
            assert_distributed(&placement(&admin, &schema.name).await);
            None
        }
        Err(e) => Some((e, placement(&admin, &schema.name).await)),
    };
    if let Some((e, tables)) = &placement_after {
        assert!(
            tables.iter().all(|t| t.1.is_none()),
            "a failed distribute ({e}) leaves every table local: {tables:?}"
        );
    }
    let after: Vec<i64> = futures_util::future::join_all(
        ["contacts", "deals", "activities", "history"].map(|t| rows(&schema, t)),
    )
    .await;
    assert_eq!(
        before, after,
        "rows of contacts, deals, activities, history"
    );
    let crm = store.scope(tenant, &ctx());
    assert!(crm.get_contact(contact).await.unwrap().is_some());
    crm.create_contact(new_contact("after@example.com"))
        .await
        .unwrap();
}

/// Distributes a fresh schema named `name`, writes through it and reads
/// the history back, then distributes again (nothing to do).
async fn a_schema_named(admin: &Config, name: &str) {
    let schema = Schema::new(admin, name);
    let store = schema.store(2);
    let distributed = store
        .distribute()
        .await
        .unwrap_or_else(|e| panic!("distributing {name:?}: {e:?}"));
    assert!(!distributed.is_empty());
    assert_distributed(&placement(admin, name).await);
    let tenant = TenantId::new();
    let crm = store.scope(tenant, &ctx());
    let contact = crm
        .create_contact(new_contact("odd@example.com"))
        .await
        .unwrap_or_else(|e| panic!("writing in {name:?}: {e:?}"));
    let history = crm
        .entity_history(HistoryEntity::Contact(contact.id), &Default::default())
        .await
        .unwrap()
        .items;
    assert_eq!(history.len(), 1, "{name:?}: {history:?}");
    assert_eq!(store.distribute().await.unwrap(), Vec::<String>::new());
    assert_eq!(store.migrate().await.unwrap(), Vec::<i64>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_whose_names_need_quoting_are_distributed_and_used() {
    let Some(admin) = coordinator() else {
        return;
    };
    let s = suffix();
    let quoted = format!("Crm \"Odd\" {s}");
    let unicode = format!("crmé😀_{s}");
    let punctuated = format!("a.b;c'd-{s}");
    // 63 bytes, the longest name PostgreSQL keeps.
    let mut longest = format!("crm_test_long_{s}_");
    while longest.len() < 63 {
        longest.push('x');
    }
    assert_eq!(longest.len(), 63);
    for name in [&quoted, &unicode, &punctuated, &longest] {
        a_schema_named(&admin, name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_distributing_one_fresh_schema_at_once_both_succeed_and_distribute_it_once() {
    let Some(admin) = coordinator() else {
        return;
    };
    let schema = Schema::new(&admin, &format!("crm_test_twice_{}", suffix()));
    let (a, b) = (schema.store(1), schema.store(1));
    let (ra, rb) = tokio::join!(a.distribute(), b.migrate());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    let c = schema.store(1);
    let (rc, rd) = tokio::join!(c.distribute(), a.distribute());
    let (rc, rd) = (rc.unwrap(), rd.unwrap());
    assert!(
        !ra.is_empty() || !rc.is_empty() || !rd.is_empty(),
        "someone distributed: {ra:?} {rb:?} {rc:?} {rd:?}"
    );
    assert_distributed(&placement(&admin, &schema.name).await);
    let crm = c.scope(TenantId::new(), &ctx());
    crm.create_contact(new_contact("twice@example.com"))
        .await
        .unwrap();
}
