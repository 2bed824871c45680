//! `PostgresStore`: the [`Store`] contract on PostgreSQL, through
//! tokio-postgres and a deadpool connection pool.
//!
//! # Setting up
//!
//! [`PostgresStore::connect`] (or [`PostgresStore::builder`], for the pool
//! size, the wait for a free connection and the pipelines) makes the
//! store; [`PostgresStore::migrate`] then creates or upgrades the crate's
//! tables. It applies the embedded migrations ([`MIGRATIONS`]) that the
//! database lacks, is safe to run at every start and from several
//! processes at once, and fails, applying nothing, when a migration the
//! database has was edited since.
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
//!
//! # Transactions and connections
//!
//! - An open [`Transaction`] holds one pooled connection until it ends, so
//!   the pool size bounds how many are open at once; `begin` waits for a
//!   free connection (as long as
//!   [`acquire_timeout`](PostgresStoreBuilder::acquire_timeout) allows).
//!   `begin` takes a connection but sends no statement: `BEGIN` goes out
//!   with the transaction's first one.
//! - A transaction dropped without committing is rolled back, and its
//!   locks are released shortly after the drop (the contract's
//!   **Ending**, on [`Store`]): await
//!   [`rollback`](Transaction::rollback) when the next step depends on
//!   them being gone.
//! - A connection that failed in a way that leaves it unusable (closed,
//!   an I/O or protocol error, its server process terminated) is closed,
//!   never handed out again; the operation that met the failure returns a
//!   retryable error ([`Error::is_retryable`](crate::Error::is_retryable)).
//!   A connection whose server process died while it sat idle in the pool
//!   can still be handed out once: its first statement then fails,
//!   retryably too.
//! - Timestamps are made by the library at microsecond precision, as
//!   [`InMemoryStore`](crate::InMemoryStore) makes them, so both backends
//!   behave alike; only the history's validity times come from the
//!   database server's clock (see [`crate::history`]).
//!
//! # Tenants and database roles
//!
//! Every query is filtered by tenant, and row-level security restricts
//! every table to the transaction's tenant as a second wall. Superusers
//! and roles with `BYPASSRLS` are not subject to row-level security: run
//! the application as an ordinary role (the tables' owner is fine).
//!
//! # Rows written around the store
//!
//! Rows written by bulk loads or SQL by hand must be valid for the domain,
//! not only for the table constraints: every row read back goes through
//! the domain's constructors, and one that fails them (an email without a
//! dot in its domain, metadata over 16 KiB, …) makes the read fail with a
//! backend error. A contact row must also carry the caseless keys
//! `email_key`, `first_name_key`, `last_name_key` and `company_key`
//! ([`caseless_key`](crate::domain::caseless_key) of each value;
//! `company_key` is NULL exactly when `company` is), which keep emails
//! unique and drive lookups, prefixes and the name sort. PostgreSQL
//! refuses `COPY … FROM` into tables under row-level security, so such
//! loads run as a role that bypasses it. Such changes are recorded in the
//! history ([`crate::history`]), but not in the live scores until a
//! rescoring rebuilds them ([`crate::scoring::live`]).
//!
//! The tables, keys and indexes, how transactions and round trips work,
//! and why: `ARCHITECTURE.md` in the repository, sections "PostgreSQL
//! backend", "Idempotency", "Audit history", "Lead scoring" and "Bulk
//! import and export".

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

use super::{Store, Transaction};
use crate::{
    domain::{Context, Pipelines, TenantId},
    error::{Error, Result},
};

pub use schema::MIGRATIONS;

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

/// The key of the advisory lock that serializes migrations
/// (`pg_advisory_xact_lock`), the same for every process.
const MIGRATION_LOCK_KEY: i64 = 0x0063_726d_636f_7265; // "crmcore"

/// The default number of pooled connections.
pub const DEFAULT_POOL_SIZE: usize = 16;

/// A [`Store`] on PostgreSQL. Cheap to clone: clones share the pool.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    pipelines: Arc<Pipelines>,
    live_scoring: Option<Arc<crate::scoring::ScoringModel>>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("pool", &self.pool.status())
            .field("pipelines", &self.pipelines)
            .finish()
    }
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

    /// A builder for a store at `url`, to set the pool size and pipelines.
    pub fn builder(url: &str) -> PostgresStoreBuilder {
        PostgresStoreBuilder {
            url: url.to_string(),
            pool_size: DEFAULT_POOL_SIZE,
            acquire_timeout: None,
            pipelines: Pipelines::default(),
        }
    }

    /// A store over an existing pool, knowing `pipelines`.
    pub fn from_pool(pool: Pool, pipelines: Pipelines) -> Self {
        PostgresStore {
            pool,
            pipelines: Arc::new(pipelines),
            live_scoring: Some(Arc::new(crate::scoring::ScoringModel::default())),
        }
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

    /// Applies the embedded migrations that the database does not have yet,
    /// in one transaction under an advisory lock, recording each applied
    /// version with a checksum of its SQL in `crm_schema_migrations`. Safe
    /// to run again and from several processes at once: the others wait,
    /// then find nothing to do.
    ///
    /// Returns the versions it applied. Fails, applying nothing, when an
    /// applied migration's SQL differs from the embedded one (it was edited
    /// after release). Versions the database has but this build does not
    /// know (applied by a newer build) are left alone.
    pub async fn migrate(&self) -> Result<Vec<i64>> {
        let mut conn = self.pool.get().await.map_err(error::pool)?;
        let tx = conn.transaction().await.map_err(error::db)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
            .await
            .map_err(error::db)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS crm_schema_migrations (
                 version    bigint      PRIMARY KEY,
                 name       text        NOT NULL,
                 checksum   bigint      NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await
        .map_err(error::db)?;
        let mut applied = std::collections::HashMap::new();
        for row in tx
            .query("SELECT version, checksum FROM crm_schema_migrations", &[])
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
                    if m.version == schema::KEYS_REQUIRED {
                        keys::backfill(&tx).await?;
                    }
                    tx.batch_execute(m.sql).await.map_err(error::db)?;
                    tx.execute(
                        "INSERT INTO crm_schema_migrations (version, name, checksum) \
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

/// Builds a [`PostgresStore`]: pool size and pipelines.
#[derive(Debug, Clone)]
pub struct PostgresStoreBuilder {
    url: String,
    pool_size: usize,
    acquire_timeout: Option<Duration>,
    pipelines: Pipelines,
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

    /// Builds the pool and checks that the server answers.
    pub async fn build(self) -> Result<PostgresStore> {
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
        Ok(PostgresStore::from_pool(pool, self.pipelines))
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn begin(&self, tenant: TenantId, context: Context) -> Result<Box<dyn Transaction>> {
        let conn = self.pool.get().await.map_err(error::pool)?;
        let mut tx =
            transaction::PgTransaction::begin(conn, tenant, context, Arc::clone(&self.pipelines))
                .await?;
        tx.set_live_scoring(self.live_scoring.clone());
        Ok(Box::new(tx))
    }

    fn pipelines(&self) -> &Pipelines {
        &self.pipelines
    }
}
