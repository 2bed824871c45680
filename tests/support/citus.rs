//! The Citus target: the PostgreSQL tests that also run against a
//! distributed PostgreSQL, each on a fresh schema of the cluster's
//! database, distributed by tenant, used through an ordinary role under
//! row-level security.
//!
//! The coordinator comes from `CRM_TEST_CITUS_URL` (for example
//! `postgres://postgres@127.0.0.1:5440/crm`, what
//! `../shared/citus/cluster.sh ensure` starts); its user must be allowed to
//! create schemas and roles. Without the variable these tests pass at once,
//! printing how to run them; `.ci/run` sets it, so CI always runs them.
//! When it is set and the coordinator cannot be reached, they fail.

use std::{str::FromStr, sync::Once};

use crm_core::{PostgresStore, conformance};
use tokio_postgres::Config;

use super::{TestDb, chain, pool_for};

/// The variable naming the coordinator.
pub const ENV: &str = "CRM_TEST_CITUS_URL";

/// Shards per distributed table in the tests: few, so that a schema is
/// distributed quickly, and more than the two workers, so that tenants
/// spread over both.
pub const SHARD_COUNT: u32 = 4;

/// The coordinator's configuration, or `None` (said once per test
/// binary) when [`ENV`] is not set.
pub fn coordinator() -> Option<Config> {
    let Ok(url) = std::env::var(ENV) else {
        static SAID: Once = Once::new();
        SAID.call_once(|| {
            eprintln!(
                "the Citus tests pass without running: set {ENV} to a Citus coordinator \
                 (e.g. postgres://postgres@127.0.0.1:5440/crm, started by \
                 `../shared/citus/cluster.sh ensure`; .ci/run does both)"
            )
        });
        return None;
    };
    Some(
        Config::from_str(&url)
            .unwrap_or_else(|e| panic!("{ENV}={url:?} is not a PostgreSQL connection string: {e}")),
    )
}

/// A plain client of the coordinator at `config`.
pub async fn client(config: &Config) -> tokio_postgres::Client {
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot reach the Citus coordinator named by {ENV}: {}\n\
             Start one with `../shared/citus/cluster.sh ensure` (coordinator on \
             127.0.0.1:5440, database crm), or unset {ENV} to skip the Citus tests.",
                chain(&e)
            )
        });
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A test's place on the cluster: its schema and the ordinary role its
/// stores log in as.
#[derive(Debug)]
pub struct Place {
    pub schema: String,
    pub role: String,
}

/// A fresh schema on the cluster, migrated and distributed (as the
/// coordinator's user, with [`SHARD_COUNT`] shards per table), and an
/// ordinary role of its own (no superuser, no `BYPASSRLS`) allowed to use
/// it, so that row-level security applies on the coordinator and the
/// workers. `None` when no coordinator is named. The [`TestDb`]'s
/// `config` is the administrative user's, its `name` the schema's; it
/// drops the schema and the role — unless the test is failing, then both
/// are kept and named.
pub async fn create() -> Option<TestDb> {
    let mut admin = coordinator()?;
    admin.options(format!("-c citus.shard_count={SHARD_COUNT}"));
    let id = uuid::Uuid::now_v7().simple().to_string();
    let schema = format!("crm_test_{id}");
    let role = format!("crm_test_role_{id}");
    let owner = PostgresStore::from_pool(pool_for(admin.clone(), 1), conformance::test_pipelines())
        .with_schema(&schema)
        .expect("a valid schema name");
    // Tests set up their schemas in parallel, and Citus' DDL takes
    // cluster-wide locks: a distributed deadlock between two setups is
    // retryable, and retried (the whole distribute rolled back).
    let mut attempt = 0;
    let distributed = loop {
        attempt += 1;
        match owner.distribute().await {
            Ok(tables) => break tables,
            Err(e) if e.is_retryable() && attempt < 3 => {
                eprintln!("distributing {schema} again after: {e}");
            }
            Err(e) => {
                panic!("distributing the schema {schema} on the Citus coordinator failed: {e:?}")
            }
        }
    };
    assert!(
        !distributed.is_empty(),
        "distribute distributes a new schema"
    );
    owner.pool().close();
    client(&admin)
        .await
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS;
             GRANT USAGE ON SCHEMA {schema} TO {role};
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role};"
        ))
        .await
        .unwrap_or_else(|e| panic!("cannot create the test role {role}: {}", chain(&e)));
    Some(TestDb {
        name: schema.clone(),
        config: admin,
        citus: Some(Place { schema, role }),
    })
}

/// Counts the backends of a role that wait for a lock, on one node.
const LOCK_WAITS: &str = "SELECT count(*) FROM pg_stat_activity \
     WHERE usename = $1 AND wait_event_type = 'Lock'";

impl Place {
    /// How many backends of this test's role wait for a lock, on the
    /// coordinator (advisory locks) or on a worker (row locks of shards).
    pub async fn lock_waits(&self, admin: &tokio_postgres::Client) -> i64 {
        let here: i64 = admin
            .query_one(LOCK_WAITS, &[&self.role])
            .await
            .unwrap()
            .get(0);
        let on_workers = format!(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = '{}' \
             AND wait_event_type = 'Lock'",
            self.role
        );
        let workers: i64 = admin
            .query_one(
                "SELECT coalesce(sum(result::bigint), 0)::bigint \
                 FROM run_command_on_workers($1::text)",
                &[&on_workers],
            )
            .await
            .unwrap()
            .get(0);
        here + workers
    }

    /// Drops the schema and the role (or keeps them, naming them, when the
    /// test is failing).
    pub fn drop_now(self, admin: &Config) {
        let Place { schema, role } = self;
        if std::thread::panicking() {
            eprintln!(
                "the test failed: its Citus schema {schema} and role {role} are kept (drop \
                 them with `DROP SCHEMA {schema} CASCADE; DROP OWNED BY {role}; DROP ROLE \
                 {role}`)"
            );
            return;
        }
        let admin = admin.clone();
        let sql = format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; DROP OWNED BY {role}; \
             DROP ROLE IF EXISTS {role};"
        );
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime builds");
            rt.block_on(async { client(&admin).await.batch_execute(&sql).await })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!(
                "could not drop the Citus schema {schema} or role {role}: {}",
                chain(&e)
            ),
            Err(_) => eprintln!("could not drop the Citus schema {schema}"),
        }
    }
}
