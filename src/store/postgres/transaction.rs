//! `PgTransaction`: one pooled connection inside `BEGIN … COMMIT`. This
//! file holds what every area shares: opening the transaction (`BEGIN` and
//! the settings pipelined with the first statement), sending statements,
//! the savepoint of an operation, the contact locks several areas take, and
//! the [`Transaction`] impl (commit, rollback, completing an idempotency key
//! with the commit). The operations are in one file per area, each
//! implementing that area's trait: `contacts.rs`, `deals.rs`,
//! `timeline.rs`, `history.rs`, `idempotency.rs`, `bulk.rs`, `scoring.rs`.
//!
//! Every operation that can fail on the caller's input (not found, stale
//! version, duplicate email, refused stage move, validation) checks before
//! it writes, so such an error leaves the PostgreSQL transaction usable.
//! The one write that can still collide with a concurrent writer — an email
//! change racing a create — runs under a savepoint, and so does every
//! operation of several writing statements (upsert, merge, erasure): if it
//! fails after a write, the savepoint undoes what it wrote, so an error
//! never leaves part of an operation behind and the transaction goes on.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::Object;
use tokio_postgres::{Row, Statement, error::SqlState, types::ToSql};
use uuid::Uuid;

use super::{
    error::{self, Aborted, ConnectionLost, Finished, OperationCut},
    idempotency,
    idempotency_claim::{self, ClaimState, ClaimValues, KeyTaken},
};
use crate::{
    domain::{Context, Pipelines, TenantId, Timestamp, check_timestamp, truncate_to_micros},
    error::{Error, FieldError, Result, ValidationErrors},
    store::Transaction,
};

/// The parameters of a statement.
pub(super) type Params<'a> = [&'a (dyn ToSql + Sync)];

/// The savepoint of an operation of several statements
/// ([`PgTransaction::begin_atomic`]).
const OPERATION_SAVEPOINT: &str = "SAVEPOINT crm_operation";
const OPERATION_RELEASE: &str = "RELEASE SAVEPOINT crm_operation";
const OPERATION_ROLLBACK_TO: &str =
    "ROLLBACK TO SAVEPOINT crm_operation; RELEASE SAVEPOINT crm_operation";

/// The transaction-local settings: `SET LOCAL` commands, one simple-query
/// batch sent right after `BEGIN` (see [`PgTransaction::settings_batch`]).
///
/// Why `SET LOCAL` and not `set_config(…, true)` with bound parameters: on
/// a distributed PostgreSQL (Citus) only `SET LOCAL` reaches the worker
/// nodes, where row-level security and the history triggers read the
/// settings, and only when `citus.propagate_set_commands` is `local` — which
/// the batch sets first (on plain PostgreSQL it is an unused placeholder).
/// Citus replays the whole text of the batch on each worker, so the batch
/// holds nothing but these commands. `SET` takes no parameters: the values
/// are SQL literals, the tenant id a UUID the library formats and the
/// acting context escaped by `postgres_protocol::escape::escape_literal`
/// (libpq's `PQescapeLiteral`: quotes doubled, and an `E'…'` string when a
/// backslash is present, so the literal reads the same whatever
/// `standard_conforming_strings` is). The context's values are validated
/// text without NUL characters.
const SETTINGS_PREFIX: &str = "SET LOCAL citus.propagate_set_commands TO 'local'";

/// Score write-backs are change-feed events in this transaction (the
/// trigger `contact_ranks_score_feed` reads it; see `0017_contact_ranks.sql`).
const SCORE_EVENTS: &str = "SET LOCAL crm.score_events TO 'on'";

/// Statements of this transaction are planned for their parameters at
/// every execution (see [`PgTransaction::custom_plans`]).
const CUSTOM_PLANS: &str = "SET LOCAL plan_cache_mode TO force_custom_plan";

/// The change feed's wake-up, sent right after every `COMMIT` (pipelined:
/// no round trip of its own): when the committed transaction wrote feed
/// events, the feed's commit trigger left the tenant in the session-level
/// setting `crm.feed_wake`, and this clears it and, when a subscriber
/// listens on the tenant, sends the payload-free `NOTIFY` on the tenant's
/// channel. One statement, so a transaction of its own (which ends,
/// whatever happens, with the statement), committed without waiting for
/// the flush: the database-wide lock a notifying commit takes is held for
/// an instant, and never by the writer's transaction (see
/// `migrations/0006_feed.sql`). When nothing is pending it sends nothing
/// and writes nothing.
///
/// Whether anyone listens: every listening connection holds, for as long
/// as it listens, a shared session-level advisory lock on the channel's
/// key (`hashtextextended(channel, 0)`, the `bigint` form, which never
/// meets the idempotency claims' two-`int4` keys; see `listen.rs`), taken
/// before its `LISTEN` and before it reads from its cursor. This takes the
/// same key exclusively, without waiting: when it gets it, nobody listens
/// and no `NOTIFY` is needed (a listener that comes later reads what was
/// committed before it); when it does not, it notifies. (Two writers at
/// the same instant may both notify; a hash collision only adds a
/// wake-up.) Its outcome is not the commit's: a failure is ignored
/// (subscriptions poll too).
///
/// The setting is read in a subquery that `OFFSET 0` keeps from being
/// merged into the outer one: merged, its `current_setting` would be
/// evaluated where the channel is used, after the setting was cleared.
pub(super) const WAKE: &str = "SELECT \
     CASE WHEN pg_try_advisory_xact_lock(hashtextextended(c, 0)) THEN NULL \
          ELSE set_config('synchronous_commit', 'off', true) || pg_notify(c, '')::text END, \
     set_config('crm.feed_wake', '', false) \
     FROM (SELECT 'crm_feed_' || replace(w, '-', '') AS c \
             FROM (SELECT current_setting('crm.feed_wake', true) AS w) AS setting \
            WHERE w <> '' OFFSET 0) AS pending";

/// The wake-up on a distributed schema (Citus), where the feed's commit
/// trigger runs on the worker that holds the tenant's rows and the
/// session setting [`WAKE`] reads is set in the worker's session, never
/// in this one: after every `COMMIT` of a transaction that sent a
/// statement, notify the tenant's channel when someone listens (the same
/// advisory-lock test as [`WAKE`]). A transaction that wrote no event
/// (a read committed by hand, an `ack`) wakes its subscribers for a read
/// that finds nothing; `feed::subscribe` ends such a read with a rollback,
/// so that it does not wake itself in turn. `{channel}` is `crm_feed_` and the tenant's id in
/// hexadecimal ([`wake_tenant`]): no value from input.
pub(super) const WAKE_TENANT: &str = "SELECT \
     CASE WHEN pg_try_advisory_xact_lock(hashtextextended(c, 0)) THEN NULL \
          ELSE set_config('synchronous_commit', 'off', true) || pg_notify(c, '')::text END \
     FROM (SELECT '{channel}'::text AS c) AS pending";

/// [`WAKE_TENANT`] for `tenant`.
pub(super) fn wake_tenant(tenant: TenantId) -> String {
    WAKE_TENANT.replace(
        "{channel}",
        &format!("crm_feed_{}", tenant.as_uuid().simple()),
    )
}

/// How this store's commits wake the change feed's subscribers, found out
/// once per store (see [`PgTransaction::wake`]).
pub(super) mod wake_mode {
    /// Not known yet.
    pub(in crate::store::postgres) const UNKNOWN: u8 = 0;
    /// The feed's triggers run in the committing session: [`super::WAKE`].
    pub(in crate::store::postgres) const SESSION: u8 = 1;
    /// The feed's tables are distributed (Citus): [`super::WAKE_TENANT`].
    pub(in crate::store::postgres) const TENANT: u8 = 2;
    /// The database has no Citus extension: [`super::WAKE`], and a
    /// transaction's beginning and settings go in one request (see
    /// `PgTransaction::send_begin`).
    pub(in crate::store::postgres) const PLAIN: u8 = 3;
}

/// The current time, at the microsecond precision the store keeps.
pub(super) fn now() -> Timestamp {
    truncate_to_micros(Utc::now())
}

/// A pooled connection that must not go back to the pool as it is: unless
/// [`release`](Self::release)d, dropping it detaches the connection from
/// the pool so that it closes (and the server rolls back what it had open).
pub(super) struct Detach(Option<Object>);

impl Detach {
    /// Guards `conn`.
    pub(super) fn new(conn: Object) -> Self {
        Detach(Some(conn))
    }

    pub(super) fn conn(&self) -> Option<&Object> {
        self.0.as_ref()
    }

    /// Returns the connection to the pool.
    pub(super) fn release(mut self) {
        drop(self.0.take());
    }
}

impl Drop for Detach {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            drop(Object::take(conn));
        }
    }
}

/// A [`Transaction`] on one pooled PostgreSQL connection.
pub(super) struct PgTransaction {
    pub(super) conn: Option<Object>,
    pub(super) tenant: TenantId,
    pub(super) context: Context,
    pub(super) pipelines: Arc<Pipelines>,
    /// `BEGIN` (`READ ONLY` for a read-only transaction) and the search
    /// path, as one simple-query batch naming the store's schema (see
    /// [`PgTransaction::send_begin`]).
    pub(super) begin_batch: Arc<str>,
    /// `BEGIN`, the search path and the transaction-local settings, not
    /// sent yet: they go out with the first statement, pipelined in the
    /// same round trip. (Holds [`begin_batch`](Self::begin_batch).)
    pub(super) pending_begin: Option<Arc<str>>,
    /// A statement failed: PostgreSQL has aborted the transaction, and
    /// `commit` must not report success.
    pub(super) aborted: bool,
    /// The model of the live scores, if kept.
    pub(super) live_scoring: Option<Arc<crate::scoring::ScoringModel>>,
    /// New contacts without a company are linked to the company of their
    /// email's domain.
    pub(super) company_linking: bool,
    /// Score write-backs are feed events (`crm.score_events`).
    pub(super) score_events: bool,
    /// The transaction only reads ([`Store::begin_read`]): it begins
    /// `READ ONLY` and sets the tenant alone, not the acting context.
    ///
    /// [`Store::begin_read`]: crate::Store::begin_read
    pub(super) read_only: bool,
    /// [`CUSTOM_PLANS`] was sent in this transaction.
    custom_plans: bool,
    /// The transaction only reads and ends with its first statement, when
    /// that is a [`query`](Self::query): the `ROLLBACK` goes with it (see
    /// [`Transaction::end_with_next_statement`]).
    end_with_next: bool,
    /// How a commit wakes the feed's subscribers ([`wake_mode`]), shared
    /// by the store's transactions.
    pub(super) wake_mode: Arc<std::sync::atomic::AtomicU8>,
    /// `BEGIN` and the search path of a transaction that may write (the
    /// store's, also for a read-only transaction): the numbering of the
    /// feed's pending commits runs in a transaction of its own
    /// (`feed::number_on`).
    pub(super) number_begin: Arc<str>,
    /// An idempotency claim deferred to the first statement, and its
    /// answer (behind a lock only because statements are sent through
    /// `&self`; it is never contended).
    pub(super) claim: std::sync::Mutex<ClaimState>,
    /// The deferred claim found its key taken (`source:key`): everything
    /// but a rollback is refused.
    pub(super) claim_lost: Option<String>,
    /// The keys this transaction claimed and has not completed.
    pub(super) held_claims: Vec<idempotency::Held>,
    /// The connection saw an error that leaves it unusable (see
    /// [`error::spoils_connection`]): it never goes back to the pool.
    /// Set through `&self`, as statements are sent through `&self`.
    spoiled: AtomicBool,
    /// An operation of several round trips began
    /// ([`begin_atomic`](Self::begin_atomic)) and has not ended
    /// ([`end_atomic`](Self::end_atomic)). Still set when the next one
    /// begins, or at the commit, it was cut off: its future was dropped
    /// between two round trips.
    operation_open: bool,
    /// An operation was cut off (see `operation_open`): part of it may
    /// have run, so nothing but a rollback is accepted.
    cut: bool,
}

impl fmt::Debug for PgTransaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgTransaction")
            .field("tenant", &self.tenant)
            .field("context", &self.context)
            .field("open", &self.conn.is_some())
            .field("aborted", &self.aborted)
            .field("claim_lost", &self.claim_lost)
            .field("spoiled", &self.is_spoiled())
            .field("cut", &(self.cut || self.operation_open))
            .finish()
    }
}

impl Drop for PgTransaction {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if self.is_spoiled() || conn.is_closed() {
            // Lost, unfit to send on, or inside a transaction of the
            // store's own that did not end (the feed's numbering, ahead of
            // this transaction's `BEGIN`): closing it ends the transaction
            // on the server, and the pool opens a new one when needed.
            drop(Detach(Some(conn)));
            return;
        }
        if self.pending_begin.is_some() {
            // Nothing was sent: the connection is idle, outside any transaction.
            drop(conn);
            return;
        }
        // Queue ROLLBACK on the connection without waiting for its answer,
        // then hand the connection back: the next user's statements follow
        // the ROLLBACK on the same connection, so they run after it. The
        // first poll of the request puts it on the connection's queue; the
        // answer is read and discarded by the connection task. So the
        // server ends the transaction, and releases its locks, shortly
        // after the drop, not by the time it returns: a transaction on
        // another connection can still meet them (see `Transaction`).
        let mut rollback = Box::pin(conn.batch_execute("ROLLBACK"));
        match futures_util::FutureExt::now_or_never(rollback.as_mut()) {
            // Queued (the answer is pending) or, improbably, done.
            None | Some(Ok(())) => {
                drop(rollback);
                drop(conn);
            }
            // The connection is closed: it must not go back to the pool.
            Some(Err(_)) => {
                drop(rollback);
                drop(Detach(Some(conn)));
            }
        }
    }
}

impl PgTransaction {
    /// Opens the transaction on `conn`. `BEGIN`, the search path and the
    /// transaction-local settings are not sent on their own: they go out
    /// with the transaction's first statement, pipelined, so that opening a
    /// transaction costs no round trip of its own.
    ///
    /// `begin_batch` is `BEGIN` and `SET LOCAL search_path` to the store's
    /// schema (a quoted identifier): no value from input is in it. The
    /// acting context follows in the settings batch ([`SETTINGS_PREFIX`]).
    pub(super) async fn begin(
        conn: Object,
        tenant: TenantId,
        context: Context,
        pipelines: Arc<Pipelines>,
        begin_batch: Arc<str>,
        wake_mode: Arc<std::sync::atomic::AtomicU8>,
    ) -> Result<Self> {
        Ok(PgTransaction {
            conn: Some(conn),
            tenant,
            context,
            pipelines,
            pending_begin: Some(Arc::clone(&begin_batch)),
            number_begin: Arc::clone(&begin_batch),
            begin_batch,
            aborted: false,
            live_scoring: None,
            company_linking: true,
            score_events: false,
            read_only: false,
            custom_plans: false,
            end_with_next: false,
            wake_mode,
            claim: std::sync::Mutex::default(),
            claim_lost: None,
            held_claims: Vec::new(),
            spoiled: AtomicBool::new(false),
            operation_open: false,
            cut: false,
        })
    }

    /// Sends `BEGIN` and the settings now, if the first statement has not
    /// taken them along yet. For code that talks to the connection directly.
    pub(super) async fn ensure_begun(&mut self) -> Result<()> {
        if self.pending_begin.take().is_none() {
            return Ok(());
        }
        // A deferred claim goes with BEGIN and the settings.
        let r = self.raw_query_all(&[], true).await;
        self.settle(r).map(drop)
    }

    /// The tenant's id, as bound to statements.
    pub(super) fn tenant_uuid(&self) -> Uuid {
        self.tenant.as_uuid()
    }

    /// The wake-up sent right after this transaction's `COMMIT`:
    /// [`WAKE`], or [`WAKE_TENANT`] on a distributed schema.
    fn wake(&self) -> std::borrow::Cow<'static, str> {
        if self.wake_mode.load(Ordering::Relaxed) == wake_mode::TENANT {
            std::borrow::Cow::Owned(wake_tenant(self.tenant))
        } else {
            std::borrow::Cow::Borrowed(WAKE)
        }
    }

    /// Ends the transaction with `sql` (`COMMIT` or `ROLLBACK`), and
    /// returns once the server has answered: by then it has ended the
    /// transaction and released its locks.
    async fn finish(&mut self, sql: &str) -> Result<()> {
        let conn = self.conn.take().ok_or_else(|| Error::backend(Finished))?;
        if self.pending_begin.take().is_some() {
            // Nothing of this transaction was sent, so there is nothing to
            // commit or roll back. A connection marked unfit may be inside
            // the feed's numbering, interrupted: closed, not handed back.
            if self.is_spoiled() {
                drop(Detach(Some(conn)));
            } else {
                drop(conn);
            }
            return Ok(());
        }
        let guard = Detach(Some(conn));
        if self.is_spoiled() {
            // Nothing more can go over it: the guard closes it, and the
            // server rolls back when it notices.
            return Err(Error::retryable(ConnectionLost));
        }
        let result = match guard.conn() {
            // A read-only transaction wrote no event: nobody to wake.
            Some(c) if sql == "COMMIT" && !self.read_only => {
                let wake = self.wake();
                let (committed, _woken) =
                    futures_util::join!(c.batch_execute(sql), c.batch_execute(&wake));
                committed
            }
            Some(c) => c.batch_execute(sql).await,
            None => return Err(Error::backend(Finished)),
        };
        match result {
            Ok(()) => {
                guard.release();
                Ok(())
            }
            Err(e) => {
                // The server answered, so the transaction is over and the
                // connection is idle — unless the answer ends the session
                // (or there was none): then the guard closes it.
                if !error::spoils_connection(&e) {
                    guard.release();
                }
                if sql == "COMMIT" && (e.as_db_error().is_none() || error::spoils_connection(&e)) {
                    // No answer, or one that ends the session (the process
                    // terminated, the server shutting down): whether it
                    // committed is unknown.
                    return Err(error::commit_unknown(e));
                }
                Err(error::db(e))
            }
        }
    }

    /// Marks the connection unfit to go back to the pool as it is, until
    /// [`unspoil`](Self::unspoil): for work that opens a transaction of its
    /// own on it (see `feed::number_on`), which a drop could interrupt.
    pub(super) fn spoil(&self) {
        self.spoiled.store(true, Ordering::Relaxed);
    }

    /// Ends [`spoil`](Self::spoil): the work ended, and its transaction
    /// with it (an error that leaves the connection unusable is noted
    /// again by [`note`](Self::note)).
    pub(super) fn unspoil(&self) {
        self.spoiled.store(false, Ordering::Relaxed);
    }

    /// True when the connection saw an error that leaves it unusable.
    pub(super) fn is_spoiled(&self) -> bool {
        self.spoiled.load(Ordering::Relaxed)
    }

    /// Passes `r` on, noting whether its error leaves the connection
    /// unusable, so that it never goes back to the pool. The senders of
    /// statements pass their outcome through here; errors of the other
    /// requests are noted by [`failed`](Self::failed) or handled where
    /// they are sent (`finish`, the idempotency commit).
    pub(super) fn note<T>(
        &self,
        r: std::result::Result<T, tokio_postgres::Error>,
    ) -> std::result::Result<T, tokio_postgres::Error> {
        if let Err(e) = &r
            && error::spoils_connection(e)
        {
            self.spoiled.store(true, Ordering::Relaxed);
        }
        r
    }

    /// Runs a prepared (and cached) statement; with `begin`, the pending
    /// `BEGIN` and settings go out ahead of it in the same round trip.
    pub(super) async fn raw_query(
        &self,
        sql: &str,
        params: &Params<'_>,
        begin: bool,
    ) -> std::result::Result<Vec<Row>, tokio_postgres::Error> {
        let Some(conn) = self.conn.as_ref() else {
            return Ok(Vec::new());
        };
        let r = self
            .run_prepared(conn, &[sql], begin, |prepared| async move {
                conn.query(&prepared[0], params).await
            })
            .await;
        self.note(r)
    }

    /// Like [`raw_query`](Self::raw_query), returning the rows affected.
    pub(super) async fn raw_execute(
        &self,
        sql: &str,
        params: &Params<'_>,
        begin: bool,
    ) -> std::result::Result<u64, tokio_postgres::Error> {
        let Some(conn) = self.conn.as_ref() else {
            return Ok(0);
        };
        let r = self
            .run_prepared(conn, &[sql], begin, |prepared| async move {
                conn.execute(&prepared[0], params).await
            })
            .await;
        self.note(r)
    }

    /// Runs several statements pipelined in one round trip, in order, and
    /// returns their rows; with `begin`, the pending `BEGIN` and settings go
    /// first. Every statement is prepared before any is run.
    pub(super) async fn raw_query_all(
        &self,
        statements: &[(&str, &Params<'_>)],
        begin: bool,
    ) -> std::result::Result<Vec<Vec<Row>>, tokio_postgres::Error> {
        let Some(conn) = self.conn.as_ref() else {
            return Ok(Vec::new());
        };
        let sqls: Vec<&str> = statements.iter().map(|(sql, _)| *sql).collect();
        let r = self
            .run_prepared(conn, &sqls, begin, |prepared| async move {
                futures_util::future::try_join_all(
                    prepared
                        .iter()
                        .zip(statements)
                        .map(|(statement, (_, params))| conn.query(statement, params)),
                )
                .await
            })
            .await;
        self.note(r)
    }

    /// Prepares `sqls` (from the connection's cache when it has them), then
    /// runs `run` with the statements; with `begin`, the pending `BEGIN` and
    /// settings go first, pipelined.
    ///
    /// A statement the connection has not prepared yet is prepared after
    /// `BEGIN` and the search path, so that its names are looked up in the
    /// store's schema; its preparation costs a round trip, once per
    /// connection. When every statement is cached, `BEGIN`, the settings
    /// and `run`'s requests leave in one round trip.
    async fn run_prepared<T, F, Fut>(
        &self,
        conn: &Object,
        sqls: &[&str],
        begin: bool,
        run: F,
    ) -> std::result::Result<T, tokio_postgres::Error>
    where
        F: FnOnce(Vec<Statement>) -> Fut,
        Fut: Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    {
        let prepare = async {
            futures_util::future::try_join_all(sqls.iter().map(|sql| conn.prepare_cached(sql)))
                .await
        };
        if !begin {
            return run(prepare.await?).await;
        }
        self.after_begin(conn, prepare, run).await
    }

    /// Sends `BEGIN` and the settings, then `prepare` (requests not sent
    /// yet: futures are lazy, and each request is queued at its first
    /// poll), then `run` with the prepared statements, all pipelined in
    /// that order: in one round trip when `prepare` needs no answer from
    /// the server (every statement cached), else in two.
    ///
    /// A deferred idempotency claim goes after the settings and the
    /// preparation of the statements, before `run`; its answer is kept for
    /// [`settle`](Self::settle).
    async fn after_begin<T, P, F, Fut>(
        &self,
        conn: &Object,
        prepare: P,
        run: F,
    ) -> std::result::Result<T, tokio_postgres::Error>
    where
        P: Future<Output = std::result::Result<Vec<Statement>, tokio_postgres::Error>>,
        F: FnOnce(Vec<Statement>) -> Fut,
        Fut: Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    {
        let Some(claim) = self.take_deferred_claim() else {
            let (_, out) = futures_util::try_join!(self.send_begin(conn), async {
                run(prepare.await?).await
            })?;
            return Ok(out);
        };
        let claim_values = ClaimValues::new(self, &claim);
        let params = claim_values.params();
        let claimed_then_run = async {
            let prepared =
                futures_util::try_join!(conn.prepare_cached(idempotency_claim::CLAIM), prepare);
            let (claim_statement, prepared) = match prepared {
                Ok(p) => p,
                // Nothing of the claim was sent.
                Err(e) => return (None, Err(e)),
            };
            // Joined, not tried: the claim's answer is wanted whatever the
            // statement gives. Each request is queued at its first poll, in
            // order.
            let (found, out) =
                futures_util::join!(conn.query(&claim_statement, &params), run(prepared));
            (Some(self.note(found)), out)
        };
        let (begun, (found, out)) = futures_util::join!(self.send_begin(conn), claimed_then_run);
        match (found, &begun) {
            // A failed claim is reported by `settle`, ahead of the
            // statement's own error.
            (Some(found), _) => self.claim_sent(claim, Ok(found)),
            (None, Err(e)) => self.claim_sent(claim, Err(error::db_ref(e))),
            // Preparing a statement failed, after BEGIN: the claim was
            // never made, and the preparation's failure is the statement's.
            (None, Ok(())) => self.claim_unsent(claim),
        }
        begun?;
        out
    }

    /// `BEGIN` and the search path ([`begin_batch`](Self::begin_batch):
    /// `READ ONLY` for a read-only transaction), then the settings, queued
    /// on the connection in that order at the first poll. On PostgreSQL
    /// without Citus ([`wake_mode::PLAIN`]) they are one simple-query
    /// request; elsewhere two, as Citus replays the text of the request
    /// that sets them on its workers (see [`SETTINGS_PREFIX`]). The
    /// settings start with [`SETTINGS_PREFIX`] either way: a store that
    /// found no Citus and meets a distributed schema later (another process
    /// installed Citus and distributed it) still sets the tenant on the
    /// workers, which then replay `BEGIN` too and only warn that a
    /// transaction is in progress; without it they would see no tenant,
    /// and every read would come back empty.
    fn send_begin<'a>(
        &'a self,
        conn: &'a Object,
    ) -> impl Future<Output = std::result::Result<(), tokio_postgres::Error>> + 'a {
        let plain = self.wake_mode.load(Ordering::Relaxed) == wake_mode::PLAIN;
        let settings = self.settings_batch();
        async move {
            if plain {
                conn.batch_execute(&format!("{}; {settings}", self.begin_batch))
                    .await
            } else {
                futures_util::try_join!(
                    conn.batch_execute(&self.begin_batch),
                    conn.batch_execute(&settings)
                )
                .map(drop)
            }
        }
    }

    /// The transaction-local settings (see [`SETTINGS_PREFIX`], which goes
    /// first): `crm.tenant_id`, then, unless the transaction only reads,
    /// `crm.actor`, `crm.reason`, `crm.request_id` and
    /// `crm.idempotency_key` (the absent ones empty) and [`SCORE_EVENTS`]
    /// when asked for.
    pub(super) fn settings_batch(&self) -> String {
        if self.read_only {
            return tenant_settings(self.tenant);
        }
        let mut batch = settings_batch(self.tenant, &self.context);
        if self.score_events {
            batch.push_str("; ");
            batch.push_str(SCORE_EVENTS);
        }
        batch
    }

    /// Fails unless the transaction can take another statement: it is not
    /// finished, and no statement failed (after a failure PostgreSQL refuses
    /// everything but a rollback; refusing here too keeps that true when the
    /// failure came before the pipelined `BEGIN` reached the server).
    pub(super) fn check_open(&self) -> Result<()> {
        if self.conn.is_none() {
            Err(Error::backend(Finished))
        } else if self.is_spoiled() {
            // Lost, or left inside the feed's numbering by a read that was
            // interrupted: nothing more can go over it.
            Err(Error::retryable(ConnectionLost))
        } else if self.cut {
            Err(Error::retryable(OperationCut))
        } else if let Some(key) = &self.claim_lost {
            Err(Error::backend(KeyTaken(key.clone())))
        } else if self.aborted {
            Err(Error::backend(Aborted))
        } else {
            Ok(())
        }
    }

    /// Notes that an operation of several round trips begins: fails when
    /// the previous one never ended (its future was dropped), which makes
    /// the transaction refuse everything but a rollback.
    fn enter_operation(&mut self) -> Result<()> {
        if self.operation_open {
            self.cut = true;
        }
        self.check_open()?;
        self.operation_open = true;
        Ok(())
    }

    /// True when an operation was cut off: the transaction may hold part of
    /// it, and must not be committed.
    fn was_cut(&self) -> bool {
        self.cut || self.operation_open
    }

    /// After a round trip: reads the answer to a deferred claim that went
    /// with it (whose failure is the error then), and maps the result.
    pub(super) fn settle<T>(
        &mut self,
        r: std::result::Result<T, tokio_postgres::Error>,
    ) -> Result<T> {
        if let Some(e) = self.settle_claim() {
            if r.is_err() {
                self.aborted = true;
            }
            return Err(e);
        }
        r.map_err(|e| self.failed(e))
    }

    /// Records that PostgreSQL aborted the transaction (and whether the
    /// connection is still usable), and maps the error.
    pub(super) fn failed(&mut self, e: tokio_postgres::Error) -> Error {
        self.aborted = true;
        if error::spoils_connection(&e) {
            self.spoiled.store(true, Ordering::Relaxed);
        }
        error::db(e)
    }

    /// Runs a statement (with the pending `BEGIN`, if any) and returns its rows.
    pub(super) async fn query(&mut self, sql: &str, params: &Params<'_>) -> Result<Vec<Row>> {
        self.check_open()?;
        let begin = self.pending_begin.take().is_some();
        let end = std::mem::take(&mut self.end_with_next);
        if begin && end && self.read_only && !matches!(self.claim_state(), ClaimState::Deferred(_))
        {
            let (r, ended) = self.raw_query_ending(sql, params).await;
            if ended {
                // The server ended the transaction with the statement: a
                // statement after it begins anew, and a drop has nothing
                // to roll back. Otherwise (the `ROLLBACK` failed, or was
                // never sent because the statement's preparation failed)
                // the transaction ends as any other, the drop sending a
                // `ROLLBACK` of its own (at worst one too many, which the
                // server only warns about).
                self.pending_begin = Some(Arc::clone(&self.begin_batch));
            }
            return self.settle(r);
        }
        let r = self.raw_query(sql, params, begin).await;
        self.settle(r)
    }

    /// [`raw_query`](Self::raw_query) with the pending `BEGIN`, then the
    /// statement, then `ROLLBACK`, pipelined in one round trip: a
    /// read-only transaction of one statement, which the server ends
    /// whatever the statement gives (after a failed statement it skips to
    /// the `ROLLBACK`, a request of its own). The `ROLLBACK` is queued
    /// after the statement (each request is queued at its future's first
    /// poll, in the order joined, and `join!` polls both even when the
    /// first fails at once), so it never overtakes it, even when the
    /// statement is prepared first. Returns the statement's rows and
    /// whether the `ROLLBACK` succeeded.
    async fn raw_query_ending(
        &self,
        sql: &str,
        params: &Params<'_>,
    ) -> (std::result::Result<Vec<Row>, tokio_postgres::Error>, bool) {
        let Some(conn) = self.conn.as_ref() else {
            return (Ok(Vec::new()), false);
        };
        let r = self
            .run_prepared(conn, &[sql], true, |prepared| async move {
                Ok(futures_util::join!(
                    conn.query(&prepared[0], params),
                    conn.batch_execute("ROLLBACK")
                ))
            })
            .await;
        match r {
            Ok((rows, rolled_back)) => {
                let ended = self.note(rolled_back).is_ok();
                (self.note(rows), ended)
            }
            Err(e) => (self.note(Err(e)), false),
        }
    }

    /// The first row of [`query`](Self::query), if any.
    pub(super) async fn query_opt(
        &mut self,
        sql: &str,
        params: &Params<'_>,
    ) -> Result<Option<Row>> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }

    /// Runs a statement (with the pending `BEGIN`, if any) and returns the
    /// number of rows it affected.
    pub(super) async fn execute(&mut self, sql: &str, params: &Params<'_>) -> Result<u64> {
        self.check_open()?;
        let begin = self.pending_begin.take().is_some();
        let r = self.raw_execute(sql, params, begin).await;
        self.settle(r)
    }

    /// Runs `sql` as a simple query (no parameters, several statements
    /// allowed). The pending `BEGIN` and settings go out ahead of it in the
    /// same round trip; a deferred claim is sent and settled first.
    pub(super) async fn simple(&mut self, sql: &str) -> Result<()> {
        self.check_open()?;
        if matches!(self.claim_state(), ClaimState::Deferred(_)) {
            self.ensure_begun().await?;
        }
        let begin = self.pending_begin.take().is_some();
        let Some(conn) = self.conn.as_ref() else {
            return Err(Error::backend(Finished));
        };
        let r = if begin {
            futures_util::try_join!(self.send_begin(conn), conn.batch_execute(sql)).map(drop)
        } else {
            conn.batch_execute(sql).await
        };
        r.map_err(|e| self.failed(e))
    }

    /// Makes the rest of this transaction plan each statement for the
    /// parameters it is run with ([`CUSTOM_PLANS`]), once per transaction;
    /// called by the batch operations before their savepoint (a rollback
    /// to it would undo the setting).
    ///
    /// Why: they look keys up with `= ANY($n)` over arrays of up to
    /// thousands of values, and PostgreSQL, after five executions of a
    /// prepared statement, may switch to a generic plan costed for the
    /// table's size at that moment and keep it until the table is next
    /// analysed. A generic plan chosen while a tenant's tables were empty
    /// (a new schema, the first batches of an import) is a sequential
    /// scan comparing every row with every value of the array: an import
    /// of 100,000 contacts went from linear to quadratic (about 1,000 rows
    /// a second) on a server whose autovacuum had not yet analysed the
    /// table. Planning each batch's statements costs a fraction of a
    /// millisecond.
    pub(super) async fn custom_plans(&mut self) -> Result<()> {
        if self.custom_plans {
            return Ok(());
        }
        self.simple(CUSTOM_PLANS).await?;
        self.custom_plans = true;
        Ok(())
    }

    /// Starts an operation of several statements that must leave nothing
    /// when it fails: a savepoint, ended by [`end_atomic`](Self::end_atomic).
    ///
    /// Until `end_atomic` has its answer, the operation is open: when its
    /// future is dropped in between (a caller's timeout), the transaction
    /// refuses everything but a rollback from then on, and `commit` rolls
    /// it back, so that it never commits half an operation.
    pub(super) async fn begin_atomic(&mut self) -> Result<()> {
        self.enter_operation()?;
        let begun = self.simple(OPERATION_SAVEPOINT).await;
        if begun.is_err() {
            // Nothing of the operation ran; its callers return at once.
            self.operation_open = false;
        }
        begun
    }

    /// Like [`begin_atomic`](Self::begin_atomic), with `statements` sent
    /// after the savepoint in the same round trip; their rows. On an error
    /// the operation still ends with [`end_atomic`](Self::end_atomic).
    pub(super) async fn begin_atomic_with(
        &mut self,
        statements: &[(&str, &Params<'_>)],
    ) -> Result<Vec<Vec<Row>>> {
        self.enter_operation()?;
        let none: [&(dyn ToSql + Sync); 0] = [];
        let mut all: Vec<(&str, &Params<'_>)> = Vec::with_capacity(statements.len() + 1);
        all.push((OPERATION_SAVEPOINT, &none));
        all.extend_from_slice(statements);
        let begin = self.pending_begin.take().is_some();
        let r = self.raw_query_all(&all, begin).await;
        let mut rows = self.settle(r)?;
        if !rows.is_empty() {
            rows.remove(0);
        }
        Ok(rows)
    }

    /// Ends what [`begin_atomic`](Self::begin_atomic) started: on success
    /// the savepoint is released; on failure everything the operation wrote
    /// is rolled back to it — also after a statement failed, which
    /// PostgreSQL lets a savepoint undo — so that the error leaves no trace
    /// and the transaction stays usable. Returns `result`, or the failure
    /// to release.
    pub(super) async fn end_atomic<T>(&mut self, result: Result<T>) -> Result<T> {
        if result.is_ok() {
            let released = self.simple(OPERATION_RELEASE).await;
            // Answered (either way): the operation is over.
            self.operation_open = false;
            return released.and(result);
        }
        // (A deferred claim was settled before the savepoint: `simple`
        // sends it first, and refuses everything once it is lost.)
        let undone = match self.conn.as_ref() {
            Some(c) => c.batch_execute(OPERATION_ROLLBACK_TO).await,
            None => {
                self.operation_open = false;
                return result;
            }
        };
        self.operation_open = false;
        match undone {
            // Whatever failed inside is undone: the transaction is as it
            // was before the operation.
            Ok(()) => self.aborted = false,
            Err(e) => {
                self.failed(e);
            }
        }
        result
    }
}

/// The time of a keyset cursor's position (microseconds since the epoch).
pub(super) fn cursor_time(micros: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros).ok_or_else(|| {
        ValidationErrors::single(FieldError::new(
            "cursor",
            "invalid_format",
            "is not a cursor of this list",
        ))
        .into()
    })
}

#[async_trait]
impl Transaction for PgTransaction {
    fn tenant(&self) -> TenantId {
        self.tenant
    }

    fn context(&self) -> &Context {
        &self.context
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        if self.was_cut() {
            self.finish("ROLLBACK").await?;
            return Err(Error::retryable(OperationCut));
        }
        if let Some(key) = self.claim_lost.take() {
            self.finish("ROLLBACK").await?;
            return Err(Error::backend(KeyTaken(key)));
        }
        if self.aborted {
            self.finish("ROLLBACK").await?;
            return Err(Error::backend(Aborted));
        }
        self.finish("COMMIT").await
    }

    async fn rollback(mut self: Box<Self>) -> Result<()> {
        self.finish("ROLLBACK").await
    }

    fn end_with_next_statement(&mut self) {
        self.end_with_next = self.read_only;
    }

    async fn complete_idempotency_key_and_commit(
        mut self: Box<Self>,
        source: &crate::idempotency::IdempotencySource,
        key: &crate::idempotency::IdempotencyKey,
        result: &crate::idempotency::StoredResult,
        completed_at: Timestamp,
    ) -> Result<crate::idempotency::IdempotencyRecord> {
        // Refused before anything is sent; the transaction is dropped (and
        // rolled back) with the error, as when the store refuses.
        let completed_at = check_timestamp("completed_at", completed_at)?;
        result.check()?;
        // The outcome is stored and the transaction committed in one round
        // trip: the `INSERT` and the `COMMIT` are pipelined. When the insert
        // fails, PostgreSQL turns the `COMMIT` into a rollback, and the
        // insert's error is returned.
        if self.aborted || self.claim_lost.is_some() || self.is_spoiled() || self.was_cut() {
            // (A lost connection makes `finish` fail, with why.)
            self.finish("ROLLBACK").await?;
            return Err(match self.claim_lost.take() {
                Some(key) => Error::backend(KeyTaken(key)),
                None if self.was_cut() => Error::retryable(OperationCut),
                None => Error::backend(Aborted),
            });
        }
        self.ensure_begun().await?;
        let Some(held) = self.take_held(source, key) else {
            self.finish("ROLLBACK").await?;
            return Err(crate::store::shared::not_claimed(source, key));
        };
        let tenant = self.tenant_uuid();
        let completed_at = truncate_to_micros(completed_at);
        let guard = Detach(Some(
            self.conn.take().ok_or_else(|| Error::backend(Finished))?,
        ));
        let Some(conn) = guard.conn() else {
            return Err(Error::backend(Finished));
        };
        let sql = if held.over_expired {
            idempotency::STORE_OVER_EXPIRED
        } else {
            idempotency::STORE
        };
        // Prepared inside the transaction, as its table is found through
        // the transaction's search path: from the connection's cache but
        // the first time.
        let statement = match conn.prepare_cached(sql).await {
            Ok(statement) => statement,
            Err(e) => {
                // A failed preparation aborts the transaction.
                if !error::spoils_connection(&e) && conn.batch_execute("ROLLBACK").await.is_ok() {
                    guard.release();
                }
                return Err(error::db(e));
            }
        };
        let c = &held.claim;
        let wake = self.wake();
        let params: [&(dyn ToSql + Sync); 9] = [
            &tenant,
            &c.source.as_str(),
            &c.key.as_str(),
            &c.fingerprint.as_str(),
            &result.status(),
            result.value(),
            &c.now,
            &completed_at,
            &c.expires_at,
        ];
        // The INSERT, its values bound, and the COMMIT pipelined: one
        // round trip. When the INSERT fails, PostgreSQL has aborted the
        // transaction, and the COMMIT that follows ends it with a rollback.
        let (stored, committed, _woken) = futures_util::join!(
            conn.execute(&statement, &params),
            conn.batch_execute("COMMIT"),
            conn.batch_execute(&wake)
        );
        let lost = [stored.as_ref().err(), committed.as_ref().err()]
            .into_iter()
            .flatten()
            .any(error::spoils_connection);
        let e = match (stored, committed) {
            (Ok(_), Ok(())) => {
                guard.release();
                return Ok(held.record(self.tenant, result, completed_at));
            }
            (Err(e), _) | (Ok(_), Err(e)) => e,
        };
        if !lost {
            // The server answered the COMMIT: the transaction is over (rolled
            // back) and the connection idle. (Otherwise the guard closes it.)
            guard.release();
        }
        if e.code() == Some(&SqlState::DIVISION_BY_ZERO) {
            Err(crate::store::shared::not_claimed(source, key))
        } else {
            Err(error::db(e))
        }
    }
}

/// The fixed statements of this file, for [`super::statements`].
pub(super) const STATEMENTS: &[(&str, &str)] = super::statements::listed![
    OPERATION_SAVEPOINT,
    OPERATION_RELEASE,
    OPERATION_ROLLBACK_TO,
    SETTINGS_PREFIX,
    SCORE_EVENTS,
    CUSTOM_PLANS,
    WAKE,
    WAKE_TENANT,
];

/// The batch of [`PgTransaction::settings_batch`] for a transaction that
/// may write.
pub(super) fn settings_batch(tenant: TenantId, context: &Context) -> String {
    [
        SETTINGS_PREFIX.to_string(),
        set_local("crm.tenant_id", &tenant_text(tenant)),
        set_local("crm.actor", context.actor().as_str()),
        set_local("crm.reason", context.reason().unwrap_or("")),
        set_local("crm.request_id", context.request_id().unwrap_or("")),
        set_local(
            "crm.idempotency_key",
            context.idempotency_key().unwrap_or(""),
        ),
    ]
    .join("; ")
}

/// The settings of a transaction that only names its tenant (see
/// [`SETTINGS_PREFIX`], which goes first).
pub(super) fn tenant_settings(tenant: TenantId) -> String {
    format!(
        "{SETTINGS_PREFIX}; {}",
        set_local("crm.tenant_id", &tenant_text(tenant))
    )
}

/// The tenant's id as `crm.tenant_id` holds it.
fn tenant_text(tenant: TenantId) -> String {
    tenant.as_uuid().hyphenated().to_string()
}

/// `SET LOCAL <name> TO <value>`, the value an escaped literal (see
/// [`SETTINGS_PREFIX`]); `name` is one of the library's fixed setting
/// names, never input.
pub(super) fn set_local(name: &'static str, value: &str) -> String {
    format!(
        "SET LOCAL {name} TO {}",
        postgres_protocol::escape::escape_literal(value)
    )
}
