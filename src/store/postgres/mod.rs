//! `PostgresStore`: the [`Store`] contract on PostgreSQL, through
//! tokio-postgres and a deadpool connection pool.
//!
//! # Setting up
//!
//! [`PostgresStore::connect`] (or [`PostgresStore::builder`], for the pool
//! size, the wait for a free connection, the pipelines, the schema and the
//! trusted CAs) makes the store; [`PostgresStore::migrate`] then creates or
//! upgrades the crate's tables in its schema. It applies the embedded
//! migrations ([`MIGRATIONS`]) that the schema lacks, is safe to run at
//! every start and from several processes at once, and fails, applying
//! nothing, when a migration the schema has was edited since.
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
//! # On Citus
//!
//! On a Citus coordinator, [`PostgresStore::distribute`] (once, in place
//! of or after [`migrate`](PostgresStore::migrate)) distributes every
//! table by tenant, so that each tenant's rows live on one worker and its
//! statements go to that worker alone. Send every guarded webhook delivery
//! through the coordinator: the idempotency claim's lock is the
//! coordinator's. See the README, "Running on Citus", and ARCHITECTURE.md,
//! "Distributed PostgreSQL (Citus)", for what the schema avoids and why.
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
//! A migration that adds a table gives it the privileges of the table it
//! belongs with (schema 17's `contact_ranks` those of `contacts`), so the
//! grant above need not be run again after an upgrade.
//!
//! The host may read and write the tables through its own connections.
//! Either qualify the names (`crm.contacts`) or set the search path for the
//! transaction (`SET LOCAL search_path TO crm`); set `crm.tenant_id`
//! inside the transaction (`SET LOCAL crm.tenant_id TO '…'`), as
//! row-level security hides every row otherwise, and `crm.actor` if the
//! history should name someone other than `db:<role>`. (On Citus, set
//! `citus.propagate_set_commands` to `local` first, as the store does:
//! only `SET LOCAL` then reaches the workers, not `set_config`; and send
//! the `SET LOCAL`s as a request of their own, since Citus replays the
//! whole text of that request on the workers.) The history
//! triggers and the schema's functions find the schema's tables whatever
//! the session's search path is: the PL/pgSQL functions carry the search
//! path they were created with, and the SQL functions were bound to the
//! schema's tables when created. The host's tables and functions are never
//! looked at by the store's statements, which see only the store's schema
//! (and `pg_catalog`).
//!
//! # TLS
//!
//! Connections use TLS (rustls) as the connection string's `sslmode` says,
//! with libpq's meaning of each mode: `disable` never; `prefer` (the
//! default) when the server offers it; `require` always; `verify-ca` and
//! `verify-full` always, checking that a trusted CA signed the server's
//! certificate and, for `verify-full`, that it names the host. `prefer`
//! and `require` check the certificate only when CA certificates are given.
//! Trusted CAs come from `sslrootcert=/path/ca.pem` in the connection
//! string, [`PostgresStoreBuilder::ca_file`] or
//! [`PostgresStoreBuilder::ca_certificate_pem`], and otherwise from the
//! operating system's store. A setting that cannot be used, or a
//! certificate that fails verification, is an [`Error::Backend`]
//! (not retryable) whose source is a [`TlsError`] naming the setting.
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
//! rescoring rebuilds them ([`crate::scoring::live`]). Every contact has
//! a row in `contact_ranks` (its score, schema 17), made by a trigger on
//! the insert: a load with the triggers of `contacts` off must write those
//! rows itself (`INSERT INTO crm.contact_ranks (tenant_id, contact_id,
//! active, created_at) SELECT tenant_id, id, active, created_at FROM
//! crm.contacts c WHERE NOT EXISTS (…)`), or reading such a contact fails
//! with a backend error naming the score.
//!
//! The tables, keys and indexes, how transactions and round trips work,
//! and why: `ARCHITECTURE.md` in the repository, sections "PostgreSQL
//! backend", "PostgreSQL schema", "TLS", "SQL statements", "Idempotency",
//! "Audit history", "Lead scoring" and "Bulk import and export".

mod bulk;
mod companies;
mod contacts;
mod deals;
mod distribute;
mod error;
mod external;
mod feed;
mod freshness;
mod history;
mod idempotency;
mod idempotency_claim;
mod keys;
mod listen;
mod locks;
mod merges;
mod rows;
mod schema;
mod scoring;
mod search;
mod split;
#[doc(hidden)]
pub mod statements;
mod tags;
mod tasks;
mod timeline;
mod timeline_batch;
mod tls;
mod transaction;

use std::{
    fmt,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};

use super::{Store, Transaction, traced};
use crate::{
    domain::{Context, Pipelines, TenantId},
    error::{Error, FieldError, Result, ValidationErrors},
};

use schema::SchemaName;
pub use schema::{DEFAULT_SCHEMA, MIGRATIONS};
pub use tls::{SslMode, TlsError};
use transaction::wake_mode;

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

/// The largest pool a [`PostgresStoreBuilder`] builds: 10,000 connections,
/// more than a PostgreSQL server is usually set to accept
/// (`max_connections`). The pool sets aside room for every connection it
/// may hold, so a size from a configuration file gone wrong
/// (`usize::MAX`) would abort the process instead.
pub const MAX_POOL_SIZE: usize = 10_000;

/// A [`Store`] on PostgreSQL. Cheap to clone: clones share the pool.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    pipelines: Arc<Pipelines>,
    live_scoring: Option<Arc<crate::scoring::ScoringModel>>,
    /// Whether new contacts are linked to a company by their email's domain.
    company_linking: bool,
    /// Whether score write-backs are change-feed events.
    score_events: bool,
    schema: Arc<SchemaName>,
    /// `BEGIN` and the search path of every transaction, as one
    /// simple-query batch (no value from input in it).
    begin_batch: Arc<str>,
    /// The same for a read-only transaction ([`Store::begin_read`]).
    begin_read_batch: Arc<str>,
    /// How the change feed's wake-ups connect (`None`: they do not, and
    /// subscriptions poll).
    listener: Option<listen::Listener>,
    /// How commits wake the feed's subscribers (`transaction::wake_mode`),
    /// found out on the first transaction once the schema exists.
    wake_mode: Arc<AtomicU8>,
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

/// [`begin_batch`] for a transaction that only reads: `READ ONLY`.
fn begin_read_batch(schema: &SchemaName) -> Arc<str> {
    Arc::from(format!(
        "BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY; SET LOCAL search_path TO {}",
        schema.search_path()
    ))
}

impl PostgresStore {
    /// Connects to the database at `url` (a `postgres://` URL or a
    /// `key=value` connection string) with a pool of
    /// [`DEFAULT_POOL_SIZE`] connections and the default pipeline, and
    /// checks that the server answers.
    ///
    /// TLS follows the connection string's `sslmode` as libpq does:
    /// `disable` never uses it; `prefer` (the default) uses it when the
    /// server offers it; `require` insists on it; `verify-ca` also verifies
    /// that the server's certificate is signed by a trusted CA, and
    /// `verify-full` also that it is valid for the host name connected to
    /// (`host`; with `hostaddr` set, TCP goes to that address while the
    /// certificate is checked against `host`). `prefer` and `require`
    /// accept any certificate unless CA certificates are given, then verify
    /// it as `verify-ca` does. The trusted CAs are those of `sslrootcert`
    /// (a PEM file) and of the builder's
    /// [`ca_file`](PostgresStoreBuilder::ca_file) and
    /// [`ca_certificate_pem`](PostgresStoreBuilder::ca_certificate_pem),
    /// or, when none is given (or with `sslrootcert=system`), the
    /// operating system's trusted roots. Both the URL form
    /// (`postgres://db.example.com/crm?sslmode=verify-full`) and the
    /// `key=value` form (`host=db.example.com sslmode=verify-full`) are
    /// read.
    ///
    /// An unknown `sslmode` (or `allow`, not supported), an unreadable or
    /// invalid CA file, a certificate that fails verification and a server
    /// without TLS when TLS is required fail with a backend error whose
    /// source is a [`TlsError`] naming the setting and the reason.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::builder(url).build().await
    }

    /// A builder for a store at `url` (read as [`connect`](Self::connect)
    /// reads it), to set the pool size, pipelines, schema and trusted CAs.
    pub fn builder(url: &str) -> PostgresStoreBuilder {
        PostgresStoreBuilder {
            url: url.to_string(),
            pool_size: DEFAULT_POOL_SIZE,
            acquire_timeout: None,
            pipelines: Pipelines::default(),
            schema: DEFAULT_SCHEMA.to_string(),
            ca: Vec::new(),
            company_linking: true,
            score_events: false,
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
            company_linking: true,
            score_events: false,
            begin_batch: begin_batch(&schema),
            begin_read_batch: begin_read_batch(&schema),
            schema: Arc::new(schema),
            listener: None,
            wake_mode: Arc::new(AtomicU8::new(wake_mode::UNKNOWN)),
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
        self.begin_read_batch = begin_read_batch(&schema);
        self.schema = Arc::new(schema);
        self.wake_mode = Arc::new(AtomicU8::new(wake_mode::UNKNOWN));
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

    /// The same store linking (`true`, the default) or not linking new
    /// contacts to a company by their email's domain: a contact created or
    /// imported without a company, whose email's domain is not a free-mail
    /// one, is linked to the company with that domain, if there is one.
    pub fn with_company_linking(mut self, on: bool) -> Self {
        self.company_linking = on;
        self
    }

    /// The same store announcing (`true`) or not (`false`, the default)
    /// score write-backs in the change feed: with it on, every stored score
    /// that [`ScoringTx::write_scores`](crate::store::ScoringTx::write_scores)
    /// (batch rescoring) changes is an event of kind
    /// [`FeedKind::Score`](crate::domain::FeedKind::Score), whose diff holds
    /// the old and new score. Off by default: a rescore of a large tenant
    /// changes many scores at once, and scores are derived data.
    pub fn with_score_events(mut self, on: bool) -> Self {
        self.score_events = on;
        self
    }

    /// The same store waking the change feed's subscriptions over plain
    /// (unencrypted) connections made with `config`. A store made by
    /// [`connect`](Self::connect) or [`build`](PostgresStoreBuilder::build)
    /// knows how to connect already; one made with
    /// [`from_pool`](Self::from_pool) needs this, or its subscriptions
    /// poll.
    pub fn with_feed_listener(mut self, config: tokio_postgres::Config) -> Self {
        self.listener = Some(listen::Listener { config, tls: None });
        self
    }

    /// Wake-ups of `tenant`'s change feed for [`crate::feed::subscribe`]:
    /// a connection of its own `LISTEN`s to the tenant's channel (reopened
    /// when lost) while the stream lives. Without a way to connect (see
    /// [`with_feed_listener`](Self::with_feed_listener)), none come and
    /// subscriptions poll. The `NOTIFY` is sent by the store right after
    /// a commit that wrote events; on Citus the store cannot tell (the
    /// feed's triggers run on the workers) and sends none, and writes made
    /// by SQL outside the store send none either: subscriptions find those
    /// events at their next poll.
    pub fn feed_wake_ups(&self, tenant: TenantId) -> crate::feed::WakeUps {
        match &self.listener {
            Some(l) => l.wake_ups(tenant),
            None => crate::feed::no_wake_ups(),
        }
    }

    /// The connection pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Applies the embedded migrations that the store's schema does not have
    /// yet, in one transaction, recording each applied version with a
    /// checksum of its SQL in the schema's `schema_migrations` table.
    /// Creates the schema first if it does not exist. Safe to run again and
    /// from several processes at once: the others wait, then find nothing
    /// to do. Stores on other schemas migrate independently.
    ///
    /// Returns the versions it applied. Fails, applying nothing, when an
    /// applied migration's SQL differs from the embedded one (it was edited
    /// after release), or when a migration fails (the error names it).
    /// Versions the schema has but this build does not know (applied by a
    /// newer build) are left alone, with a WARN event naming them: this
    /// build then runs against changes it does not know.
    ///
    /// Emits an INFO event (target `crm_core::store::postgres`) naming the
    /// schema and the versions it applied, once they are committed.
    ///
    /// On a schema that [`distribute`](Self::distribute) distributed, every
    /// table still local — those the applied migrations add — is
    /// distributed too, in the same transaction.
    pub async fn migrate(&self) -> Result<Vec<i64>> {
        let (done, _) = self.migrate_and(distribute::Scope::IfDistributed).await?;
        Ok(done)
    }

    /// Makes the store's tables distributed on a Citus cluster (run it on
    /// the coordinator): every table holding a `tenant_id` — contacts,
    /// deals, activities, signals, scores, history, idempotency keys —
    /// distributed by it and colocated, so that each tenant's rows live
    /// together on one worker and a tenant's queries go to that worker
    /// alone; `schema_migrations` becomes a reference table. Migrates
    /// first (see [`migrate`](Self::migrate)), in the same transaction;
    /// every later `migrate` distributes what is still local in the
    /// schema (the tables its migrations add).
    ///
    /// The number of shards is Citus' `citus.shard_count` (32 unless the
    /// database, the role or the connection string sets another). Tables
    /// that hold rows are distributed with them (Citus copies them; their
    /// history is neither lost nor recorded again, and no copy is left on
    /// the coordinator).
    ///
    /// Safe to run again: returns the tables it distributed, empty when
    /// every table already was. Fails with a backend error, changing
    /// nothing, when the database has no Citus extension. Distributing two
    /// schemas at the same moment can meet a distributed deadlock: a
    /// retryable error ([`Error::is_retryable`]), after which nothing of
    /// the attempt remains; run it again.
    ///
    /// See the README, "Running on Citus", for what changes on a cluster.
    pub async fn distribute(&self) -> Result<Vec<String>> {
        let (_, tables) = self.migrate_and(distribute::Scope::All).await?;
        self.wake_mode.store(wake_mode::TENANT, Ordering::Relaxed);
        Ok(tables)
    }

    /// Finds out, once the schema exists, how commits wake the feed's
    /// subscribers: on a distributed schema (Citus) the feed's commit
    /// trigger runs on a worker, and the session setting the plain wake-up
    /// reads is never set in the committing session, so commits notify
    /// their tenant's channel instead (see `transaction::WAKE_TENANT`).
    /// Two short queries on the store's first transaction (one without
    /// Citus); a failure leaves the plain wake-up, and subscriptions poll.
    async fn find_wake_mode(&self, conn: &deadpool_postgres::Object) {
        if self.wake_mode.load(Ordering::Relaxed) != wake_mode::UNKNOWN {
            return;
        }
        let mode = async {
            let citus = conn
                .query_opt(
                    "SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'citus'",
                    &[],
                )
                .await?
                .is_some();
            if !citus {
                return Ok(Some(wake_mode::PLAIN));
            }
            let table = format!("{}.feed_commits", self.schema.quoted());
            let row = conn
                .query_one(
                    "SELECT to_regclass($1) IS NOT NULL, EXISTS (SELECT 1 FROM \
                     pg_catalog.pg_dist_partition WHERE logicalrelid = to_regclass($1))",
                    &[&table],
                )
                .await?;
            let (exists, distributed): (bool, bool) = (row.try_get(0)?, row.try_get(1)?);
            Ok::<_, tokio_postgres::Error>(match (exists, distributed) {
                // Not migrated yet: ask again on the next transaction.
                (false, _) => None,
                (true, true) => Some(wake_mode::TENANT),
                (true, false) => Some(wake_mode::SESSION),
            })
        }
        .await;
        // Only over "not known yet": `distribute` may have said already.
        let known = |mode| {
            let _ = self.wake_mode.compare_exchange(
                wake_mode::UNKNOWN,
                mode,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        };
        match mode {
            Ok(Some(mode)) => known(mode),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "could not tell whether the feed's tables are distributed: feed \
                     subscribers are woken as on plain PostgreSQL (on Citus they poll)"
                );
                known(wake_mode::SESSION);
            }
        }
    }

    /// A connection of the pool. A pool that can hold none (a `max_size`
    /// of 0, which [`from_pool`](Self::from_pool) takes as it is) is an
    /// error at once: waiting for it would wait for good.
    async fn connection(&self) -> Result<deadpool_postgres::Object> {
        if self.pool.status().max_size == 0 {
            return Err(Error::backend(error::EmptyPool));
        }
        self.pool.get().await.map_err(tls::pool_error)
    }

    /// Applies the migrations, then distributes as `scope` says, in one
    /// transaction.
    async fn migrate_and(&self, scope: distribute::Scope) -> Result<(Vec<i64>, Vec<String>)> {
        let started = std::time::Instant::now();
        let mut conn = self.connection().await?;
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
        // On a distributed schema (see `distribute`), Citus asks for
        // `citus.enable_unsafe_triggers` to create a trigger on a
        // distributed table, and one connection per node for DDL that
        // creates functions after the distributed tables changed
        // (`multi_shard_modify_mode`); elsewhere the settings are unused
        // placeholders.
        setup.push_str(&format!(
            "SET LOCAL citus.enable_unsafe_triggers TO on; \
             SET LOCAL citus.multi_shard_modify_mode TO 'sequential'; \
             SET LOCAL search_path TO {}; \
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
        let newer: Vec<i64> = {
            let known: std::collections::HashSet<i64> =
                MIGRATIONS.iter().map(|m| m.version).collect();
            let mut newer: Vec<i64> = applied
                .keys()
                .filter(|v| !known.contains(v))
                .copied()
                .collect();
            newer.sort_unstable();
            newer
        };
        if !newer.is_empty() {
            // Left alone, as documented; but this build does not know what
            // they changed (a trigger, a constraint it would have to keep).
            tracing::warn!(
                schema = %self.schema.search_path(),
                versions = ?newer,
                "the schema holds migrations this build does not know (applied by a newer \
                 build): it runs against them without knowing what they changed"
            );
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
                    // One request per statement: Citus forwards some DDL on
                    // a distributed table as the request's text, which a
                    // worker refuses when it holds several commands.
                    // A table a migration creates is distributed at once on a
                    // distributed schema, before the keys that the migration
                    // adds to or from it (Citus keys only join tables
                    // distributed alike).
                    for statement in split::statements(m.sql) {
                        tx.batch_execute(statement)
                            .await
                            .map_err(|e| error::migration_failed(m.version, m.name, e))?;
                        if split::creates_table(statement) {
                            distribute::run(&tx, &self.schema, distribute::Scope::IfDistributed)
                                .await?;
                        }
                    }
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
        let distributed = distribute::run(&tx, &self.schema, scope).await?;
        tx.commit().await.map_err(error::db)?;
        if !distributed.is_empty() {
            tracing::info!(
                schema = self.schema.as_str(),
                tables = ?distributed,
                "distributed tables by tenant"
            );
        }
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
        Ok((done, distributed))
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

/// Builds a [`PostgresStore`]: pool size, pipelines, schema, the CA
/// certificates TLS trusts and whether contacts are linked to companies by
/// their email's domain. Its `Debug` output shows the connection string as
/// the driver's configuration shows it: without the password.
#[derive(Clone)]
pub struct PostgresStoreBuilder {
    url: String,
    pool_size: usize,
    acquire_timeout: Option<Duration>,
    pipelines: Pipelines,
    schema: String,
    ca: Vec<tls::CaSource>,
    company_linking: bool,
    score_events: bool,
}

impl std::fmt::Debug for PostgresStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStoreBuilder")
            .field("url", &tls::shown(&self.url))
            .field("pool_size", &self.pool_size)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("pipelines", &self.pipelines)
            .field("schema", &self.schema)
            .field("ca", &self.ca)
            .field("company_linking", &self.company_linking)
            .field("score_events", &self.score_events)
            .finish()
    }
}

impl PostgresStoreBuilder {
    /// The most connections the pool opens (at least 1, at most
    /// [`MAX_POOL_SIZE`]; default [`DEFAULT_POOL_SIZE`]). Each open
    /// transaction holds one. A size of 0 is taken as 1; one over the
    /// largest is refused by [`build`](Self::build), naming `pool_size`.
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// How long `begin` waits for a free connection (or for a new one to
    /// connect) before failing with a retryable error. Default: no limit.
    /// Zero is refused by [`build`](Self::build), naming `acquire_timeout`:
    /// no connection could ever be opened in no time (and one shorter than
    /// opening a connection takes, a few milliseconds, fails every build).
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

    /// Whether new contacts are linked to a company by their email's domain
    /// (default `true`; see [`PostgresStore::with_company_linking`]).
    pub fn company_linking(mut self, on: bool) -> Self {
        self.company_linking = on;
        self
    }

    /// Whether score write-backs are change-feed events (default `false`;
    /// see [`PostgresStore::with_score_events`]).
    pub fn score_events(mut self, on: bool) -> Self {
        self.score_events = on;
        self
    }

    /// Trusts the CA certificates of the PEM file at `path` (one or more
    /// `CERTIFICATE` blocks, as libpq's `sslrootcert`) to sign the server's
    /// certificate, instead of the operating system's roots. The file is
    /// read by [`build`](Self::build), which fails with a [`TlsError`]
    /// naming `ca_file` when it cannot be read or holds no usable
    /// certificate. May be given several times, with
    /// [`ca_certificate_pem`](Self::ca_certificate_pem) and with
    /// `sslrootcert`: every certificate given is trusted.
    ///
    /// With a CA given, `sslmode=prefer` and `require` verify the
    /// certificate chain too (as libpq does with a root certificate).
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca.push(tls::CaSource::File(path.into()));
        self
    }

    /// Trusts the CA certificates in `pem` (PEM text with one or more
    /// `CERTIFICATE` blocks), as [`ca_file`](Self::ca_file) trusts a file's.
    pub fn ca_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca.push(tls::CaSource::Pem(pem.into()));
        self
    }

    /// Builds the pool and checks that the server answers (over TLS as the
    /// connection string's `sslmode` says; see [`PostgresStore::connect`]).
    /// Fails with a validation error on the field `schema` when the
    /// schema's name is not one PostgreSQL keeps as it is, before
    /// connecting.
    pub async fn build(self) -> Result<PostgresStore> {
        let mut errors = ValidationErrors::new();
        if self.pool_size > MAX_POOL_SIZE {
            errors.push(FieldError::new(
                "pool_size",
                "out_of_range",
                format!("must be 1 to {MAX_POOL_SIZE}, got {}", self.pool_size),
            ));
        }
        if self.acquire_timeout == Some(Duration::ZERO) {
            errors.push(FieldError::new(
                "acquire_timeout",
                "out_of_range",
                "must be longer than zero (no connection opens in no time)",
            ));
        }
        errors.finish(|| ())?;
        let schema = SchemaName::parse(&self.schema)?;
        let tls::Connector { config, tls } = tls::connector(&self.url, &self.ca)?;
        let listener = listen::Listener {
            config: config.clone(),
            tls: Some(tls.clone()),
        };
        let manager = Manager::from_config(
            config,
            tls,
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
        drop(pool.get().await.map_err(tls::pool_error)?);
        let mut store = PostgresStore::from_pool(pool, self.pipelines)
            .with_company_linking(self.company_linking)
            .with_score_events(self.score_events);
        store.begin_batch = begin_batch(&schema);
        store.begin_read_batch = begin_read_batch(&schema);
        store.schema = Arc::new(schema);
        store.listener = Some(listener);
        Ok(store)
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn begin(&self, tenant: TenantId, context: Context) -> Result<Box<dyn Transaction>> {
        self.open(tenant, context, false).await
    }

    async fn begin_read(&self, tenant: TenantId, context: Context) -> Result<Box<dyn Transaction>> {
        self.open(tenant, context, true).await
    }

    fn pipelines(&self) -> &Pipelines {
        &self.pipelines
    }

    /// True when the pool has an idle connection or room for a new one.
    fn concurrent_transactions(&self) -> bool {
        let status = self.pool.status();
        status.available > 0 || status.size < status.max_size
    }
}

impl PostgresStore {
    /// Opens a transaction ([`Store::begin`], or [`Store::begin_read`]
    /// when `read_only`).
    async fn open(
        &self,
        tenant: TenantId,
        context: Context,
        read_only: bool,
    ) -> Result<Box<dyn Transaction>> {
        let span = traced::transaction_span(tenant, "postgres");
        let started = traced::start_wait(&span);
        let conn = self
            .connection()
            .await
            .map_err(|e| traced::begin_failed(&span, e))?;
        traced::record_wait(&span, started);
        self.find_wake_mode(&conn).await;
        let mut tx = transaction::PgTransaction::begin(
            conn,
            tenant,
            context,
            Arc::clone(&self.pipelines),
            Arc::clone(if read_only {
                &self.begin_read_batch
            } else {
                &self.begin_batch
            }),
            Arc::clone(&self.wake_mode),
        )
        .await
        .map_err(|e| traced::begin_failed(&span, e))?;
        tx.set_live_scoring(self.live_scoring.clone());
        tx.company_linking = self.company_linking;
        tx.score_events = self.score_events;
        tx.read_only = read_only;
        tx.number_begin = Arc::clone(&self.begin_batch);
        Ok(traced::Traced::wrap(Box::new(tx), span))
    }
}
