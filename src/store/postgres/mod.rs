//! `PostgresStore`: the [`Store`] contract on PostgreSQL, through
//! tokio-postgres and a deadpool connection pool.
//!
//! - **Schema.** Everything the store creates lives in a PostgreSQL schema
//!   of its own, `crm` unless set otherwise
//!   ([`PostgresStoreBuilder::schema`], [`PostgresStore::with_schema`]), so
//!   it never meets the host's tables of the same names. Versioned SQL
//!   migrations are embedded in the crate and applied by
//!   [`PostgresStore::migrate`] in one transaction under an advisory lock
//!   of that schema, so two processes may migrate at once. Every primary,
//!   unique and foreign key begins with `tenant_id` (the schema can be
//!   distributed by tenant), CHECK constraints mirror the domain rules, and
//!   row-level security restricts every table to the tenant set in the
//!   transaction-local setting `crm.tenant_id`.
//! - **Transactions.** A [`Transaction`] holds one pooled connection from
//!   `begin` to `commit`/`rollback`. `BEGIN`, the search path (`SET LOCAL
//!   search_path` to the store's schema, then `pg_temp`) and the
//!   transaction-local settings `crm.tenant_id`, `crm.actor`, `crm.reason`,
//!   `crm.request_id` and `crm.idempotency_key` (bound parameters, never
//!   SQL text) go out with the transaction's first statement, pipelined in
//!   the same round trip, so opening a transaction
//!   costs no round trip of its own (and one that sends nothing costs none
//!   at all). Dropping a transaction without committing queues a `ROLLBACK`
//!   on its connection before the connection returns to the pool; whoever
//!   uses the connection next is served after it. The server ends the
//!   transaction and releases its locks when it runs that `ROLLBACK`:
//!   shortly after the drop, not by the time it returns, so a transaction
//!   on *another* connection can still meet them for a moment;
//!   `rollback().await` returns after the server's answer. The read
//!   conveniences of [`StoreExt`](crate::StoreExt) end their transaction
//!   by a drop: a read has nothing to commit and holds no lock.
//! - **Connections.** A connection that saw an error which leaves it
//!   unusable — closed, an I/O or protocol error, or a server error of
//!   severity FATAL (as when its server process is terminated) — never
//!   goes back to the pool: it is closed, and the pool opens a new one
//!   when needed. So when server processes die, the operations that were
//!   using them fail (retryably), and the pool does not hand their
//!   connections out again. A connection whose loss nobody has noticed
//!   yet (its server process was killed while it sat idle in the pool)
//!   can still be handed out before its closing is seen: its first
//!   statement then fails, retryably. Checking each connection with a
//!   round trip before handing it out would close that gap at the price
//!   of a round trip per transaction; the pool does not (deadpool's
//!   `RecyclingMethod::Fast`, which checks only whether the connection is
//!   known to be closed).
//! - **Queries.** Every query filters by `tenant_id` explicitly; row-level
//!   security is the second wall. Statements name tables unqualified and
//!   are prepared once per connection and cached; a statement's first
//!   preparation on a connection goes out after the transaction's search
//!   path is set, and PostgreSQL analyses a cached statement again when the
//!   search path differs from the one it was prepared under. Timestamps are made in Rust at microsecond
//!   precision, like [`InMemoryStore`](crate::InMemoryStore) does, so both
//!   backends behave alike.
//!
//! # Schema
//!
//! In the store's schema (`crm` by default):
//!
//! | table | primary key | holds |
//! |---|---|---|
//! | `contacts` | `(tenant_id, id)` | `email`, `first_name`, `last_name`, `company`, `title`, `phone`, `lead_source`, `metadata` (jsonb object), `score` (smallint 0–100), `active`, `created_at`, `updated_at`, `version`, and the caseless keys `email_key`, `first_name_key`, `last_name_key`, `company_key` (`COLLATE "C"`) |
//! | `deals` | `(tenant_id, id)` | `contact_id`, `title`, `amount` (numeric, scale ≤ 4), `currency`, `pipeline`, `stage`, `expected_close_date`, `won_at`, `lost_at`, `lost_reason`, `created_at`, `updated_at`, `version` |
//! | `activities` | `(tenant_id, id)` | `contact_id`, `deal_id`, `kind`, `direction`, `subject`, `body`, `occurred_at`, `created_at` |
//! | `signals` | `(tenant_id, id)` | `contact_id`, `kind`, `occurred_at` |
//! | `history` | `(tenant_id, entity_id, valid_from)` | `valid_to`, `entity_kind`, `operation`, `data` (jsonb: the recorded values), `diff` (jsonb), `actor`, `reason`, `request_id`, `idempotency_key`; written by triggers on `contacts` and `deals` (see [`crate::history`]) |
//! | `idempotency_keys` | `(tenant_id, source, key)` | `fingerprint`, `status`, `result` (json), `created_at`, `completed_at`, `expires_at` |
//! | `contact_scores` | `(tenant_id, contact_id)` | `score_log` (the live score state) |
//! | `schema_migrations` | `version` | `name`, `checksum`, `applied_at` |
//!
//! Deals, activities and signals reference `contacts (tenant_id, id)` with
//! `ON DELETE CASCADE`; activities reference `deals (tenant_id, id)` with
//! `ON DELETE SET NULL (deal_id)`. Emails are unique per tenant through the
//! index `contacts_email_key` on `(tenant_id, email_key)`.
//!
//! The caseless keys are [`caseless_key`](crate::domain::caseless_key) of
//! the email, the names and the company, computed in Rust and stored:
//! uniqueness, email lookups, search prefixes and the name sort compare
//! them byte by byte, never through the database's `lower()`, whose result
//! depends on the database's `LC_CTYPE`. A row written by hand must carry
//! them (`company_key` is NULL exactly when `company` is).
//!
//! Rows written around the store (bulk loads, SQL by hand) must be valid
//! for the domain, not only for the CHECK constraints: every row read back
//! goes through the domain's constructors, and one that fails them (an
//! email without a dot in its domain, metadata over 16 KiB, …) makes the
//! read fail with a backend error. Timestamps are kept at microseconds.
//!
//! The row-level security policies compare `tenant_id` with the
//! transaction-local setting `crm.tenant_id` and are forced on the tables'
//! owner too; superusers and roles with `BYPASSRLS` are not subject to
//! them. PostgreSQL refuses `COPY … FROM` into a table under row-level
//! security, so bulk loads run as such a role. Besides `crm.tenant_id`,
//! every transaction sets `crm.actor`, `crm.reason`, `crm.request_id` and
//! `crm.idempotency_key` (empty when the context has none) for triggers to
//! read. These settings keep their names whatever the schema is called.
//!
//! # The schema, roles and the host's own SQL
//!
//! [`migrate`](PostgresStore::migrate) creates the schema when it is
//! missing (which needs `CREATE` on the database; a schema created
//! beforehand by an administrator is used as it is, and the migrating role
//! then needs `CREATE` on it) and records the applied versions in its
//! `schema_migrations` table. Two stores on two schemas of one database
//! share nothing: their migrations, tables and rows are apart, even for the
//! same tenant id. The name is used exactly as given (always quoted, so
//! `Crm` and `crm` are two schemas); renaming a migrated schema is not
//! supported, as its functions keep the name they were created under.
//!
//! A role that only uses the store (not the one that migrates) needs
//! `USAGE` on the schema and `SELECT, INSERT, UPDATE, DELETE` on its tables:
//!
//! ```sql
//! GRANT USAGE ON SCHEMA crm TO app;
//! GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA crm TO app;
//! ```
//!
//! (`EXECUTE` on the schema's functions is granted to everyone by default.)
//!
//! The host may read and write the tables through its own connections.
//! Either qualify the names (`crm.contacts`) or set the search path for the
//! transaction (`SET LOCAL search_path TO crm`); set `crm.tenant_id` with
//! `set_config('crm.tenant_id', …, true)` inside the transaction, as
//! row-level security hides every row otherwise, and `crm.actor` if the
//! history should name someone other than `db:<role>`. The history
//! triggers and the schema's functions find the schema's tables whatever
//! the session's search path is: the PL/pgSQL functions carry the search
//! path they were created with, and the SQL functions were bound to the
//! schema's tables when created. The host's tables and functions are never
//! looked at by the store's statements, which see only the store's schema
//! (and `pg_catalog`).
//!
//! ```no_run
//! use crm_core::{PostgresStore, Store, StoreExt, TenantId, Context, Actor};
//!
//! # async fn run() -> crm_core::Result<()> {
//! let store = PostgresStore::connect("postgres://crm@localhost/crm").await?;
//! store.migrate().await?;
//! let tenant = TenantId::new();
//! let ctx = Context::new(Actor::parse("user:ada")?);
//! let mut tx = store.begin(tenant, ctx).await?;
//! // ... work in the transaction ...
//! tx.commit().await?;
//! # Ok(())
//! # }
//! ```

mod error;
mod keys;
mod rows;
mod schema;
mod search;
mod transaction;

use std::{fmt, str::FromStr, sync::Arc, time::Duration};

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use super::{Store, Transaction, traced};
use crate::{
    domain::{Context, Pipelines, TenantId},
    error::{Error, Result},
};

use schema::SchemaName;
pub use schema::{DEFAULT_SCHEMA, MIGRATIONS};

/// One embedded schema migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// Its version; migrations apply in ascending order.
    pub version: i64,
    /// A short name.
    pub name: &'static str,
    /// The SQL it runs.
    pub sql: &'static str,
}

/// The default number of pooled connections.
pub const DEFAULT_POOL_SIZE: usize = 16;

/// A [`Store`] on PostgreSQL. Cheap to clone: clones share the pool.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    pipelines: Arc<Pipelines>,
    live_scoring: Option<Arc<crate::scoring::ScoringModel>>,
    schema: Arc<SchemaName>,
    /// `BEGIN` and the search path of every transaction, as one
    /// simple-query batch (no value from input in it).
    begin_batch: Arc<str>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("pool", &self.pool.status())
            .field("pipelines", &self.pipelines)
            .field("schema", &self.schema.as_str())
            .finish()
    }
}

/// `BEGIN` and `SET LOCAL search_path` for `schema`. The isolation level is
/// explicit: the store's operations (and the idempotency claim's read after
/// its lock) are written for READ COMMITTED, whatever the server's
/// `default_transaction_isolation`.
fn begin_batch(schema: &SchemaName) -> Arc<str> {
    Arc::from(format!(
        "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL search_path TO {}",
        schema.search_path()
    ))
}

impl PostgresStore {
    /// Connects to the database at `url` (a `postgres://` URL or a
    /// `key=value` connection string) with a pool of
    /// [`DEFAULT_POOL_SIZE`] connections and the default pipeline, and
    /// checks that the server answers.
    ///
    /// Connections are made without TLS; to use TLS, build a
    /// [`deadpool_postgres::Pool`] with a TLS connector and use
    /// [`from_pool`](Self::from_pool).
    pub async fn connect(url: &str) -> Result<Self> {
        Self::builder(url).build().await
    }

    /// A builder for a store at `url`, to set the pool size, pipelines and
    /// schema.
    pub fn builder(url: &str) -> PostgresStoreBuilder {
        PostgresStoreBuilder {
            url: url.to_string(),
            pool_size: DEFAULT_POOL_SIZE,
            acquire_timeout: None,
            pipelines: Pipelines::default(),
            schema: DEFAULT_SCHEMA.to_string(),
        }
    }

    /// A store over an existing pool, knowing `pipelines`, in the schema
    /// [`DEFAULT_SCHEMA`] (see [`with_schema`](Self::with_schema)).
    ///
    /// The pool's connections may serve the host too: the store sets its
    /// search path per transaction (`SET LOCAL`), never for the session.
    pub fn from_pool(pool: Pool, pipelines: Pipelines) -> Self {
        let schema = SchemaName::parse(DEFAULT_SCHEMA)
            .unwrap_or_else(|_| unreachable!("the default schema name is valid"));
        PostgresStore {
            pool,
            pipelines: Arc::new(pipelines),
            live_scoring: Some(Arc::new(crate::scoring::ScoringModel::default())),
            begin_batch: begin_batch(&schema),
            schema: Arc::new(schema),
        }
    }

    /// The same store keeping its tables, functions and migration records in
    /// the PostgreSQL schema `name` rather than [`DEFAULT_SCHEMA`].
    ///
    /// Fails with a validation error on the field `schema` unless `name` is
    /// a PostgreSQL identifier the server keeps as it is: not empty, at most
    /// 63 bytes, no NUL character, not beginning with `pg_`. The name is
    /// used exactly as given (quoted), case included.
    pub fn with_schema(mut self, name: &str) -> Result<Self> {
        let schema = SchemaName::parse(name)?;
        self.begin_batch = begin_batch(&schema);
        self.schema = Arc::new(schema);
        Ok(self)
    }

    /// The name of the PostgreSQL schema the store works in.
    pub fn schema(&self) -> &str {
        self.schema.as_str()
    }

    /// The same store keeping live scores with `model` (the reference model
    /// by default), or keeping none with `None`. See [`crate::scoring::live`].
    pub fn with_live_scoring(mut self, model: Option<crate::scoring::ScoringModel>) -> Self {
        self.live_scoring = model.map(Arc::new);
        self
    }

    /// The connection pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Applies the embedded migrations that the store's schema does not have
    /// yet, in one transaction under an advisory lock of that schema,
    /// recording each applied version with a checksum of its SQL in the
    /// schema's `schema_migrations` table. Creates the schema first if it
    /// does not exist. Safe to run again and from several processes at
    /// once: the others wait, then find nothing to do. Stores on other
    /// schemas migrate independently.
    ///
    /// Returns the versions it applied. Fails, applying nothing, when an
    /// applied migration's SQL differs from the embedded one (it was edited
    /// after release). Versions the schema has but this build does not
    /// know (applied by a newer build) are left alone.
    ///
    /// Emits an INFO event (target `crm_core::store::postgres`) naming the
    /// schema and the versions it applied, once they are committed.
    pub async fn migrate(&self) -> Result<Vec<i64>> {
        let started = std::time::Instant::now();
        let mut conn = self.pool.get().await.map_err(error::pool)?;
        let tx = conn.transaction().await.map_err(error::db)?;
        tx.execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&self.schema.migration_lock_key()],
        )
        .await
        .map_err(error::db)?;
        // CREATE SCHEMA checks the right to create schemas in the database
        // even when the schema exists: ask first, so that a schema an
        // administrator created beforehand needs no such right.
        let exists = tx
            .query_opt(
                "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1",
                &[&self.schema.as_str()],
            )
            .await
            .map_err(error::db)?
            .is_some();
        let mut setup = String::new();
        if !exists {
            setup.push_str(&format!("CREATE SCHEMA {}; ", self.schema.quoted()));
        }
        // The migrations name their objects unqualified; functions that
        // look names up when they run keep this search path.
        setup.push_str(&format!(
            "SET LOCAL search_path TO {}; \
             CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    bigint      PRIMARY KEY,
                 name       text        NOT NULL,
                 checksum   bigint      NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
            self.schema.search_path()
        ));
        tx.batch_execute(&setup).await.map_err(error::db)?;
        let mut applied = std::collections::HashMap::new();
        for row in tx
            .query("SELECT version, checksum FROM schema_migrations", &[])
            .await
            .map_err(error::db)?
        {
            let version: i64 = row.try_get(0).map_err(error::db)?;
            let checksum: i64 = row.try_get(1).map_err(error::db)?;
            applied.insert(version, checksum);
        }
        let mut done = Vec::new();
        for m in MIGRATIONS {
            match applied.get(&m.version) {
                Some(&checksum) if checksum == m.checksum() => {}
                Some(_) => {
                    return Err(Error::backend(error::MigrationChanged {
                        version: m.version,
                        name: m.name,
                    }));
                }
                None => {
                    tx.batch_execute(m.sql).await.map_err(error::db)?;
                    tx.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) \
                         VALUES ($1, $2, $3)",
                        &[&m.version, &m.name, &m.checksum()],
                    )
                    .await
                    .map_err(error::db)?;
                    done.push(m.version);
                }
            }
        }
        tx.commit().await.map_err(error::db)?;
        if done.is_empty() {
            tracing::debug!(schema = self.schema.as_str(), "schema is up to date");
        } else {
            tracing::info!(
                schema = self.schema.as_str(),
                versions = ?done,
                elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                "applied migrations"
            );
        }
        Ok(done)
    }
}

impl Migration {
    /// A checksum of the SQL (64-bit FNV-1a, ignoring carriage returns so
    /// that a checkout with CRLF line ends gives the same value).
    pub fn checksum(&self) -> i64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.sql.bytes().filter(|b| *b != b'\r') {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        i64::from_ne_bytes(hash.to_ne_bytes())
    }
}

/// Builds a [`PostgresStore`]: pool size, pipelines and schema.
#[derive(Debug, Clone)]
pub struct PostgresStoreBuilder {
    url: String,
    pool_size: usize,
    acquire_timeout: Option<Duration>,
    pipelines: Pipelines,
    schema: String,
}

impl PostgresStoreBuilder {
    /// The most connections the pool opens (at least 1; default
    /// [`DEFAULT_POOL_SIZE`]). Each open transaction holds one.
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// How long `begin` waits for a free connection (or for a new one to
    /// connect) before failing with a retryable error. Default: no limit.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = Some(timeout);
        self
    }

    /// The pipelines deals may use (default: the default pipeline).
    pub fn pipelines(mut self, pipelines: Pipelines) -> Self {
        self.pipelines = pipelines;
        self
    }

    /// The PostgreSQL schema the store keeps its tables, functions and
    /// migration records in (default [`DEFAULT_SCHEMA`]). The name is
    /// checked by [`build`](Self::build), as
    /// [`PostgresStore::with_schema`] checks it.
    pub fn schema(mut self, name: &str) -> Self {
        self.schema = name.to_string();
        self
    }

    /// Builds the pool and checks that the server answers. Fails with a
    /// validation error on the field `schema` when the schema's name is not
    /// one PostgreSQL keeps as it is, before connecting.
    pub async fn build(self) -> Result<PostgresStore> {
        let schema = SchemaName::parse(&self.schema)?;
        let config = tokio_postgres::Config::from_str(&self.url).map_err(Error::backend)?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(self.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(self.acquire_timeout)
            .create_timeout(self.acquire_timeout)
            .build()
            .map_err(Error::backend)?;
        // Fail now, with the cause, rather than on the first transaction.
        drop(pool.get().await.map_err(error::pool)?);
        let mut store = PostgresStore::from_pool(pool, self.pipelines);
        store.begin_batch = begin_batch(&schema);
        store.schema = Arc::new(schema);
        Ok(store)
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn begin(&self, tenant: TenantId, context: Context) -> Result<Box<dyn Transaction>> {
        let span = traced::transaction_span(tenant, "postgres");
        let started = traced::start_wait(&span);
        let conn = self
            .pool
            .get()
            .await
            .map_err(|e| traced::begin_failed(&span, error::pool(e)))?;
        traced::record_wait(&span, started);
        let mut tx = transaction::PgTransaction::begin(
            conn,
            tenant,
            context,
            Arc::clone(&self.pipelines),
            Arc::clone(&self.begin_batch),
        )
        .await
        .map_err(|e| traced::begin_failed(&span, e))?;
        tx.set_live_scoring(self.live_scoring.clone());
        Ok(traced::Traced::wrap(Box::new(tx), span))
    }

    fn pipelines(&self) -> &Pipelines {
        &self.pipelines
    }
}
