//! Test harness for the PostgreSQL backend: a fresh database per test,
//! migrated, dropped afterwards — and kept, with its name printed, when the
//! test failed, so that it can be inspected.
//!
//! The server comes from `CRM_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); its user must be allowed
//! to create databases (and roles, for the row-level security test). When
//! the server cannot be reached the tests fail and say how to provide one.

#![allow(dead_code, unreachable_pub)]

pub mod citus;

use std::{ops::Deref, str::FromStr};

use crm_core::{PostgresStore, conformance, domain::Pipelines};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::{Client, Config, NoTls};

/// The default server: the local PostgreSQL, as user `postgres`.
pub const DEFAULT_SERVER_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The URL of the server the tests create their databases on.
pub fn server_url() -> String {
    std::env::var("CRM_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_SERVER_URL.to_string())
}

fn server_config() -> Config {
    let url = server_url();
    Config::from_str(&url).unwrap_or_else(|e| {
        panic!("CRM_TEST_DATABASE_URL={url:?} is not a PostgreSQL connection string: {e}")
    })
}

/// Connects to `config` with a plain client (its connection task spawned).
pub async fn client(config: &Config) -> Client {
    let (client, connection) = config.connect(NoTls).await.unwrap_or_else(|e| {
        panic!(
            "cannot reach the PostgreSQL test server at {}: {}\n\
             The PostgreSQL tests need a server where they may create databases. \
             Set CRM_TEST_DATABASE_URL (e.g. postgres://postgres@127.0.0.1:5432/postgres), \
             or start the local server (e.g. `pg_ctlcluster 15 main start`).",
            server_url(),
            chain(&e)
        )
    });
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// An error with its sources, `: `-separated.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// A database created for one test, dropped when this value is dropped —
/// unless the test is failing, then it is kept and its name printed.
#[derive(Debug)]
pub struct TestDb {
    name: String,
    config: Config,
    /// On a Citus cluster: the test's schema and the ordinary role its
    /// stores log in as (see [`citus`]).
    citus: Option<citus::Place>,
}

/// Where a test runs: a fresh database of the plain PostgreSQL server, or
/// a fresh schema of the Citus cluster (distributed, used by an ordinary
/// role).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The PostgreSQL server of `CRM_TEST_DATABASE_URL`.
    Plain,
    /// The Citus coordinator of `CRM_TEST_CITUS_URL`.
    Citus,
}

impl TestDb {
    /// Creates an empty database `crm_test_<random>` (not migrated).
    pub async fn create() -> TestDb {
        Self::create_with("").await
    }

    /// Creates schema `schema` and applies the store's migrations up to
    /// `version`, recording them as `PostgresStore::migrate` does: the
    /// schema a store of that version left, for an upgrade to be tested.
    #[allow(dead_code)]
    pub async fn schema_at_version(&self, schema: &str, version: i64) {
        let client = self.client().await;
        client
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .unwrap();
        Self::migrate_schema_to(&client, schema, version).await;
    }

    /// Applies the store's migrations up to `version` in the existing
    /// `schema`, as the user of `client` (the schema's owner), recording
    /// them as the store does.
    pub async fn migrate_schema_to(client: &Client, schema: &str, version: i64) {
        client
            .batch_execute(&format!(
                "CREATE TABLE {schema}.schema_migrations ( \
                 version bigint PRIMARY KEY, name text NOT NULL, checksum bigint NOT NULL, \
                 applied_at timestamptz NOT NULL DEFAULT now())"
            ))
            .await
            .unwrap();
        for m in crm_core::store::postgres::MIGRATIONS
            .iter()
            .filter(|m| m.version <= version)
        {
            client
                .batch_execute(&format!(
                    "BEGIN; SET LOCAL search_path TO {schema}, pg_temp; {}\n; COMMIT",
                    m.sql
                ))
                .await
                .unwrap_or_else(|e| panic!("migration {}: {e}", m.version));
            client
                .execute(
                    &format!(
                        "INSERT INTO {schema}.schema_migrations (version, name, checksum) \
                         VALUES ($1, $2, $3)"
                    ),
                    &[&m.version, &m.name, &m.checksum()],
                )
                .await
                .unwrap();
        }
    }

    /// The schema of the store's tables: `crm`, or the test's own schema
    /// on Citus.
    pub fn schema(&self) -> &str {
        self.citus.as_ref().map_or("crm", |c| c.schema.as_str())
    }

    /// `sql` with the default schema `crm` replaced by the test's where
    /// it qualifies a name (`crm.contacts`, `crm.crm_write_history`), as
    /// the tests' raw SQL names the store's objects; the settings
    /// (`crm.tenant_id`, `crm.actor`, …) keep their names, which do not
    /// depend on the schema.
    pub fn sql(&self, sql: &str) -> String {
        const SETTINGS: [&str; 7] = [
            "tenant_id",
            "actor",
            "reason",
            "request_id",
            "idempotency_key",
            "history_operation",
            "saved_lock_timeout",
        ];
        let Some(c) = &self.citus else {
            return sql.to_string();
        };
        let mut out = String::with_capacity(sql.len());
        let mut rest = sql;
        while let Some(at) = rest.find("crm.") {
            let after = &rest[at + 4..];
            let name_len = after
                .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                .unwrap_or(after.len());
            let preceded_by_name = rest[..at]
                .chars()
                .next_back()
                .is_some_and(|ch| ch.is_ascii_alphanumeric() || ch == '_');
            out.push_str(&rest[..at]);
            if preceded_by_name || SETTINGS.contains(&&after[..name_len]) {
                out.push_str("crm.");
            } else {
                out.push_str(&c.schema);
                out.push('.');
            }
            rest = after;
        }
        out.push_str(rest);
        out
    }

    /// True on the Citus cluster.
    pub fn is_citus(&self) -> bool {
        self.citus.is_some()
    }

    /// Creates an empty database whose character classification and
    /// collation are the `C` locale (`TEMPLATE template0 LC_CTYPE 'C'
    /// LC_COLLATE 'C'`): `lower()` there changes ASCII letters only.
    pub async fn create_c_locale() -> TestDb {
        Self::create_with(" TEMPLATE template0 ENCODING 'UTF8' LC_CTYPE 'C' LC_COLLATE 'C'").await
    }

    async fn create_with(options: &str) -> TestDb {
        let server = server_config();
        let name = format!("crm_test_{}", uuid::Uuid::now_v7().simple());
        let admin = client(&server).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}{options}"))
            .await
            .unwrap_or_else(|e| panic!("cannot create the test database {name}: {e}"));
        let mut config = server;
        config.dbname(&name);
        TestDb {
            name,
            config,
            citus: None,
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A connection configuration for it.
    pub fn config(&self) -> Config {
        self.config.clone()
    }

    /// A `key=value` connection string for it (TCP hosts only).
    pub fn url(&self) -> String {
        let c = &self.config;
        let host = match c.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => "127.0.0.1".to_string(),
        };
        let port = c.get_ports().first().copied().unwrap_or(5432);
        let mut url = format!("host={host} port={port} dbname={}", self.name);
        if let Some(user) = c.get_user() {
            url.push_str(&format!(" user={user}"));
        }
        if let Some(pw) = c.get_password() {
            url.push_str(&format!(" password='{}'", String::from_utf8_lossy(pw)));
        }
        url
    }

    /// A pool of up to `size` connections to it (as the administrative
    /// user).
    pub fn pool(&self, size: usize) -> Pool {
        pool_for(self.config(), size)
    }

    /// The configuration the stores connect with: on Citus, as the test's
    /// ordinary role.
    pub fn store_config(&self) -> Config {
        let mut c = self.config();
        if let Some(citus) = &self.citus {
            c.user(&citus.role);
        }
        c
    }

    /// A store over it that knows the conformance suite's pipelines (not
    /// migrated), with a pool of 8 connections.
    pub fn store(&self) -> PostgresStore {
        self.store_with(8, conformance::test_pipelines())
    }

    /// A store over it with a pool of `size` connections and `pipelines`,
    /// in the test's schema, connecting as [`store_config`](Self::store_config) says.
    pub fn store_with(&self, size: usize, pipelines: Pipelines) -> PostgresStore {
        PostgresStore::from_pool(pool_for(self.store_config(), size), pipelines)
            .with_schema(self.schema())
            .expect("a valid schema name")
    }

    /// A plain client connected to it.
    pub async fn client(&self) -> Client {
        client(&self.config).await
    }

    /// Runs each of `statements` (DDL naming the store's tables with the
    /// `crm.` prefix, see [`sql`](Self::sql)) as the administrative user,
    /// one at a time: Citus forwards a DDL string to the workers as it was
    /// sent, and refuses several commands in one there. On Citus with
    /// `citus.enable_unsafe_triggers`, without which it refuses triggers
    /// on distributed tables (a trigger then runs on each shard, seeing
    /// that shard's rows only).
    pub async fn ddl(&self, statements: &[&str]) {
        let client = self.client().await;
        if self.is_citus() {
            client
                .batch_execute("SET citus.enable_unsafe_triggers TO on")
                .await
                .unwrap();
        }
        for statement in statements {
            client
                .batch_execute(&self.sql(statement))
                .await
                .unwrap_or_else(|e| panic!("{statement}: {}", chain(&e)));
        }
    }
}

/// A pool over `config`.
pub fn pool_for(config: Config, size: usize) -> Pool {
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    // A test waiting for a connection fails after a while instead of hanging.
    Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(std::time::Duration::from_secs(60)))
        .runtime(Runtime::Tokio1)
        .build()
        .expect("a pool with the tokio runtime builds")
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(place) = self.citus.take() {
            place.drop_now(&self.config);
            return;
        }
        if std::thread::panicking() {
            eprintln!(
                "the test failed: its database {} is kept for inspection (drop it with \
                 `DROP DATABASE {}`)",
                self.name, self.name
            );
            return;
        }
        let name = self.name.clone();
        // Drop may run inside an async runtime, which must not block:
        // talk to the server from a thread of our own.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime builds");
            rt.block_on(async {
                let admin = client(&server_config()).await;
                admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop the test database {}: {e}", self.name),
            Err(_) => eprintln!("could not drop the test database {}", self.name),
        }
    }
}

/// A migrated [`PostgresStore`] over a database of its own, which is
/// dropped with it. Dereferences to the store.
#[derive(Debug)]
pub struct TestStore {
    // Fields drop in order: the pool closes before the database is dropped.
    store: PostgresStore,
    db: TestDb,
}

impl TestStore {
    /// A fresh database, migrated, with a store that knows the conformance
    /// suite's pipelines.
    pub async fn new() -> TestStore {
        Self::with_pipelines(conformance::test_pipelines()).await
    }

    /// Like [`new`](Self::new), over a database in the `C` locale
    /// ([`TestDb::create_c_locale`]).
    pub async fn c_locale() -> TestStore {
        Self::over(
            TestDb::create_c_locale().await,
            conformance::test_pipelines(),
        )
        .await
    }

    /// Like [`new`](Self::new), with the given pipelines.
    pub async fn with_pipelines(pipelines: Pipelines) -> TestStore {
        Self::over(TestDb::create().await, pipelines).await
    }

    /// Like [`new`](Self::new), on `target`: `None` on Citus when no
    /// coordinator is named (the test then passes at once).
    pub async fn on(target: Target) -> Option<TestStore> {
        match target {
            Target::Plain => Some(Self::new().await),
            Target::Citus => {
                let db = citus::create().await?;
                let store = db.store();
                Some(TestStore { store, db })
            }
        }
    }

    async fn over(db: TestDb, pipelines: Pipelines) -> TestStore {
        let store = PostgresStore::from_pool(db.pool(8), pipelines);
        store
            .migrate()
            .await
            .unwrap_or_else(|e| panic!("migrating {} failed: {e}", db.name()));
        TestStore { store, db }
    }

    /// The database.
    pub fn db(&self) -> &TestDb {
        &self.db
    }
}

impl Deref for TestStore {
    type Target = PostgresStore;
    fn deref(&self) -> &PostgresStore {
        &self.store
    }
}

/// An ordinary role (no superuser, no BYPASSRLS) allowed to read and write
/// the CRM tables (schema `crm`) of one test database, so that row-level
/// security applies to it. Dropped with its grants when this value is
/// dropped; declare it after the database so that it goes first.
#[derive(Debug)]
pub struct TestRole {
    name: String,
    db_config: Config,
}

impl TestRole {
    /// Creates the role and grants it what a role using the store needs in
    /// the default schema `crm` of `db` (migrated already): `USAGE` on the
    /// schema, and reading and writing its tables.
    pub async fn create(db: &TestDb) -> TestRole {
        let name = format!("crm_test_role_{}", uuid::Uuid::now_v7().simple());
        db.client()
            .await
            .batch_execute(&format!(
                "CREATE ROLE {name} LOGIN NOSUPERUSER NOBYPASSRLS;
                 GRANT USAGE ON SCHEMA crm TO {name};
                 GRANT SELECT, INSERT, UPDATE, DELETE
                     ON ALL TABLES IN SCHEMA crm TO {name};"
            ))
            .await
            .unwrap_or_else(|e| panic!("cannot create the test role {name}: {e}"));
        TestRole {
            name,
            db_config: db.config(),
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A connection configuration for the database, as this role.
    pub fn config(&self) -> Config {
        let mut c = self.db_config.clone();
        c.user(&self.name);
        c
    }
}

impl Drop for TestRole {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "the test failed: its role {} is kept (drop it with `DROP OWNED BY {0}; \
                 DROP ROLE {0}` in its database)",
                self.name
            );
            return;
        }
        let (name, config) = (self.name.clone(), self.db_config.clone());
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime builds");
            rt.block_on(async {
                let db = client(&config).await;
                db.batch_execute(&format!("DROP OWNED BY {name}; DROP ROLE {name};"))
                    .await
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop the test role {}: {e}", self.name),
            Err(_) => eprintln!("could not drop the test role {}", self.name),
        }
    }
}

/// Waits until a backend of `db` waits for a lock (a transaction queued
/// behind another's row, key or advisory lock), so that a test interleaves
/// as it says whatever the machine's speed. Fails after a minute.
pub async fn until_a_backend_waits_for_a_lock(db: &TestDb) {
    until_backends_wait_for_locks(db, 1).await;
}

/// How many backends of `db` wait for a lock now (on a Citus cluster,
/// on its workers).
#[allow(dead_code)]
pub async fn lock_waiters(db: &TestDb, client: &tokio_postgres::Client) -> i64 {
    match &db.citus {
        None => client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get(0),
        Some(place) => place.lock_waits(client).await,
    }
}

/// Waits until at least `n` backends of `db` wait for a lock. Fails after
/// a minute.
pub async fn until_backends_wait_for_locks(db: &TestDb, n: i64) {
    let client = db.client().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if lock_waiters(db, &client).await >= n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "fewer than {n} backends of {} waited for a lock within a minute",
            db.name()
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Inserts a contact row by hand into the store's tables of `db` (through
/// `client`, connected to it), as a host (or an earlier version, whose
/// rules were looser) might have stored it: `email` as given, the names
/// 'Émile' and 'Zoë', the company 'Ünited', and their caseless keys
/// computed in Rust. Runs under the tenant's setting so that forced
/// row-level security lets it in.
pub async fn insert_contact_row(
    db: &TestDb,
    client: &Client,
    tenant: crm_core::TenantId,
    id: uuid::Uuid,
    email: &str,
) {
    use crm_core::domain::caseless_key;
    client.batch_execute("BEGIN").await.unwrap();
    client
        .execute(
            "SELECT set_config('crm.tenant_id', $1, true)",
            &[&tenant.to_string()],
        )
        .await
        .unwrap();
    client
        .execute(
            &db.sql(
                "INSERT INTO crm.contacts (tenant_id, id, email, first_name, last_name, company, \
                 created_at, updated_at, email_key, first_name_key, last_name_key, company_key) \
                 VALUES ($1, $2, $3, 'Émile', 'Zoë', 'Ünited', now(), now(), $4, $5, $6, $7)",
            ),
            &[
                &tenant.as_uuid(),
                &id,
                &email,
                &caseless_key(email.trim()),
                &caseless_key("Émile"),
                &caseless_key("Zoë"),
                &caseless_key("Ünited"),
            ],
        )
        .await
        .unwrap();
    client.batch_execute("COMMIT").await.unwrap();
}

/// The contacts of the schema without a rank row, rank rows without a
/// contact, and rank rows whose copies differ from their contact.
pub async fn ranks_out_of_step(db: &TestDb) -> i64 {
    db.client()
        .await
        .query_one(
            &db.sql(
                "SELECT count(*) FROM crm.contacts c FULL JOIN crm.contact_ranks r \
                 ON r.tenant_id = c.tenant_id AND r.contact_id = c.id \
                 WHERE c.id IS NULL OR r.contact_id IS NULL OR c.active <> r.active \
                 OR c.created_at <> r.created_at",
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// Runs each `async fn name(target: Target)` of the calling file as two
/// tests: `on_plain::name` on the plain PostgreSQL server and
/// `on_citus::name` on the Citus cluster (which passes at once when no
/// coordinator is named; see [`citus`]). Each runs on a runtime of two
/// worker threads, or as many as `name(worker_threads = n)` says.
#[macro_export]
macro_rules! on_every_target {
    ($($name:ident $((worker_threads = $threads:literal))?),* $(,)?) => {
        mod on_plain {
            $(
                $crate::on_every_target!(@test Plain $name $($threads)?);
            )*
        }
        mod on_citus {
            $(
                $crate::on_every_target!(@test Citus $name $($threads)?);
            )*
        }
    };
    (@test $target:ident $name:ident) => {
        $crate::on_every_target!(@test $target $name 2);
    };
    (@test $target:ident $name:ident $threads:literal) => {
        #[::tokio::test(flavor = "multi_thread", worker_threads = $threads)]
        async fn $name() {
            super::$name($crate::support::Target::$target).await
        }
    };
}
