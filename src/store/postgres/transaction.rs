//! `PgTransaction`: one pooled connection inside `BEGIN … COMMIT`, doing
//! the contract's operations with explicit tenant filters.
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
    collections::HashMap,
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::Object;
use rust_decimal::Decimal;
use sea_query::{Expr, ExprTrait, OnConflict, PostgresQueryBuilder, Query, Value};
use sea_query_postgres::{PostgresBinder, PostgresValues};
use tokio_postgres::{Row, Statement, types::ToSql};
use uuid::Uuid;

use super::{
    error::{self, Aborted, ConnectionLost, Finished},
    keys::ContactKeys,
    rows,
    schema::{
        ACTIVITY_COLUMNS, Activities, CONTACT_COLUMNS, CONTACT_INSERT_COLUMNS, Contacts,
        DEAL_COLUMNS, Deals, SIGNAL_COLUMNS, Signals, activity_select, contact_select, deal_select,
        signal_select,
    },
    search,
};
use crate::{
    domain::{
        Activity, Contact, ContactId, ContactPatch, Context, Currency, Deal, DealId, DealPatch,
        Email, LostReason, NewActivity, NewContact, NewDeal, NewSignal, Pipeline, PipelineKey,
        Pipelines, Score, Signal, StageKey, TenantId, Timestamp, Version, check_timestamp,
        check_timestamps, truncate_to_micros,
    },
    error::{Entity, Error, FieldError, Result, ValidationErrors},
    prelude::*,
    store::{
        ContactQuery, ContactSort, ContactSortKey, CursorList, Page, PageRequest, PipelineSummary,
        TimeIdKey, Transaction,
    },
};

type Params<'a> = [&'a (dyn ToSql + Sync)];

#[path = "bulk.rs"]
mod bulk;
#[path = "history.rs"]
mod history;
#[path = "idempotency.rs"]
mod idempotency;
#[path = "scoring.rs"]
mod scoring;

const GET_CONTACT: &str = concat!(
    "SELECT ",
    contact_select!(),
    " FROM contacts WHERE tenant_id = $1 AND id = $2"
);
// Updates lock with FOR NO KEY UPDATE: they never change a key, so they
// need not wait for (nor block) the FOR KEY SHARE lock that logging an
// activity or creating a deal takes on its contact.
const LOCK_CONTACT: &str = concat!(
    "SELECT ",
    contact_select!(),
    " FROM contacts WHERE tenant_id = $1 AND id = $2 FOR NO KEY UPDATE"
);
// Emails are looked up by their caseless key, computed in Rust
// (`Email::normalized`), never through the database's `lower()`.
// What deletes or merges a contact locks it with FOR UPDATE, which (unlike
// FOR NO KEY UPDATE) conflicts with the FOR KEY SHARE that logging an
// activity, recording a signal or creating a deal takes on the contact:
// such a write either commits before the merge reads what to move, or
// waits and finds the contact gone (NotFound). Never a cascade of
// acknowledged work.
const LOCK_CONTACT_FOR_DELETE: &str = concat!(
    "SELECT ",
    contact_select!(),
    " FROM contacts WHERE tenant_id = $1 AND id = $2 FOR UPDATE"
);
const GET_CONTACT_BY_EMAIL: &str = concat!(
    "SELECT ",
    contact_select!(),
    " FROM contacts WHERE tenant_id = $1 AND email_key = $2"
);
const CONTACT_ID_BY_EMAIL: &str = "SELECT id FROM contacts WHERE tenant_id = $1 AND email_key = $2";
const SHARE_CONTACT: &str = "SELECT 1 FROM contacts WHERE tenant_id = $1 AND id = $2 FOR KEY SHARE";
const DELETE_CONTACT: &str = "DELETE FROM contacts WHERE tenant_id = $1 AND id = $2";

const GET_DEAL: &str = concat!(
    "SELECT ",
    deal_select!(),
    " FROM deals WHERE tenant_id = $1 AND id = $2"
);
const LOCK_DEAL: &str = concat!(
    "SELECT ",
    deal_select!(),
    " FROM deals WHERE tenant_id = $1 AND id = $2 FOR NO KEY UPDATE"
);
// A deal is changed under its contact's key-share lock, taken first, so
// that every writer locks a contact before its deals, as a merge does (the
// loser, then its deals): a handler that updates a deal and then logs an
// activity for its contact cannot deadlock with a merge of that contact.
const SHARE_DEALS_CONTACT: &str = "SELECT c.id FROM contacts c WHERE c.tenant_id = $1 \
     AND c.id = (SELECT d.contact_id FROM deals d WHERE d.tenant_id = $1 AND d.id = $2) \
     FOR KEY SHARE OF c";
const SHARE_DEAL: &str =
    "SELECT contact_id FROM deals WHERE tenant_id = $1 AND id = $2 FOR KEY SHARE";
const DELETE_DEAL: &str = "DELETE FROM deals WHERE tenant_id = $1 AND id = $2";
const DEALS_FOR_CONTACT: &str = concat!(
    "SELECT ",
    deal_select!(),
    " FROM deals WHERE tenant_id = $1 AND contact_id = $2",
    " ORDER BY created_at DESC, id DESC LIMIT $3"
);
const DEALS_FOR_CONTACT_AFTER: &str = concat!(
    "SELECT ",
    deal_select!(),
    " FROM deals WHERE tenant_id = $1 AND contact_id = $2 AND (created_at, id) < ($3, $4)",
    " ORDER BY created_at DESC, id DESC LIMIT $5"
);
const DEALS_IN_STAGE: &str = concat!(
    "SELECT ",
    deal_select!(),
    " FROM deals WHERE tenant_id = $1 AND pipeline = $2 AND stage = $3",
    " ORDER BY created_at DESC, id DESC LIMIT $4"
);
const DEALS_IN_STAGE_AFTER: &str = concat!(
    "SELECT ",
    deal_select!(),
    " FROM deals WHERE tenant_id = $1 AND pipeline = $2 AND stage = $3",
    " AND (created_at, id) < ($4, $5) ORDER BY created_at DESC, id DESC LIMIT $6"
);
const PIPELINE_TOTALS: &str = "SELECT stage, currency, count(*), sum(amount) FROM deals \
     WHERE tenant_id = $1 AND pipeline = $2 GROUP BY stage, currency";

const TIMELINE: &str = concat!(
    "SELECT ",
    activity_select!(),
    " FROM activities WHERE tenant_id = $1 AND contact_id = $2",
    " ORDER BY occurred_at DESC, id DESC LIMIT $3"
);
const TIMELINE_AFTER: &str = concat!(
    "SELECT ",
    activity_select!(),
    " FROM activities WHERE tenant_id = $1 AND contact_id = $2",
    " AND (occurred_at, id) < ($3, $4) ORDER BY occurred_at DESC, id DESC LIMIT $5"
);
const SIGNALS: &str = concat!(
    "SELECT ",
    signal_select!(),
    " FROM signals WHERE tenant_id = $1 AND contact_id = $2 ORDER BY occurred_at, id"
);
const WRITE_SCORES: &str = "UPDATE contacts AS c SET score = u.score \
     FROM unnest($2::uuid[], $3::smallint[]) AS u(id, score) \
     WHERE c.tenant_id = $1 AND c.id = u.id AND c.score <> u.score";

const EMAIL_SAVEPOINT: &str = "SAVEPOINT crm_email_change";
const EMAIL_RELEASE: &str = "RELEASE SAVEPOINT crm_email_change";
const EMAIL_ROLLBACK_TO: &str = "ROLLBACK TO SAVEPOINT crm_email_change";

/// The savepoint of an operation of several statements
/// ([`PgTransaction::begin_atomic`]).
const OPERATION_SAVEPOINT: &str = "SAVEPOINT crm_operation";
const OPERATION_RELEASE: &str = "RELEASE SAVEPOINT crm_operation";
const OPERATION_ROLLBACK_TO: &str =
    "ROLLBACK TO SAVEPOINT crm_operation; RELEASE SAVEPOINT crm_operation";

/// The transaction-local settings, a prepared statement whose values are
/// bound parameters: the acting context is user text, and never becomes
/// SQL text. It names no table, so it can be prepared outside a
/// transaction, before the search path is set.
const SETTINGS: &str = "SELECT set_config('crm.tenant_id', $1, true), \
     set_config('crm.actor', $2, true), set_config('crm.reason', $3, true), \
     set_config('crm.request_id', $4, true), set_config('crm.idempotency_key', $5, true)";

/// Values of the [`SETTINGS`] parameters.
struct Settings([String; 5]);

impl Settings {
    fn params(&self) -> [&(dyn ToSql + Sync); 5] {
        let [a, b, c, d, e] = &self.0;
        [a, b, c, d, e]
    }
}

/// How often a deal is locked again when merges keep moving it to another
/// contact between the two locks.
const DEAL_MOVE_RETRIES: usize = 5;

/// How often a create retries when the contact holding its email vanishes
/// between the conflict and the lookup.
const EMAIL_RACE_RETRIES: usize = 3;

fn now() -> Timestamp {
    truncate_to_micros(Utc::now())
}

/// A pooled connection that must not go back to the pool as it is: unless
/// [`release`](Self::release)d, dropping it detaches the connection from
/// the pool so that it closes (and the server rolls back what it had open).
struct Detach(Option<Object>);

impl Detach {
    fn conn(&self) -> Option<&Object> {
        self.0.as_ref()
    }

    /// Returns the connection to the pool.
    fn release(mut self) {
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
    conn: Option<Object>,
    tenant: TenantId,
    context: Context,
    pipelines: Arc<Pipelines>,
    /// `BEGIN` and the search path, as one simple-query batch naming the
    /// store's schema (see [`PgTransaction::send_begin`]).
    begin_batch: Arc<str>,
    /// `BEGIN`, the search path and the transaction-local settings, not
    /// sent yet: they go out with the first statement, pipelined in the
    /// same round trip. (Holds [`begin_batch`](Self::begin_batch).)
    pending_begin: Option<Arc<str>>,
    /// A statement failed: PostgreSQL has aborted the transaction, and
    /// `commit` must not report success.
    aborted: bool,
    /// The model of the live scores, if kept.
    live_scoring: Option<Arc<crate::scoring::ScoringModel>>,
    /// An idempotency claim deferred to the first statement, and its
    /// answer (behind a lock only because statements are sent through
    /// `&self`; it is never contended).
    claim: std::sync::Mutex<idempotency::ClaimState>,
    /// The deferred claim found its key taken (`source:key`): everything
    /// but a rollback is refused.
    claim_lost: Option<String>,
    /// The keys this transaction claimed and has not completed.
    held_claims: Vec<idempotency::Held>,
    /// The connection saw an error that leaves it unusable (see
    /// [`error::spoils_connection`]): it never goes back to the pool.
    /// Set through `&self`, as statements are sent through `&self`.
    spoiled: AtomicBool,
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
            .finish()
    }
}

impl Drop for PgTransaction {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if self.pending_begin.is_some() {
            // Nothing was sent: the connection is idle, outside any transaction.
            drop(conn);
            return;
        }
        if self.is_spoiled() || conn.is_closed() {
            // Lost, or unfit to send on: closing it ends the transaction
            // on the server, and the pool opens a new one when needed.
            drop(Detach(Some(conn)));
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
    /// acting context goes as bound parameters of [`SETTINGS`].
    pub(super) async fn begin(
        conn: Object,
        tenant: TenantId,
        context: Context,
        pipelines: Arc<Pipelines>,
        begin_batch: Arc<str>,
    ) -> Result<Self> {
        Ok(PgTransaction {
            conn: Some(conn),
            tenant,
            context,
            pipelines,
            pending_begin: Some(Arc::clone(&begin_batch)),
            begin_batch,
            aborted: false,
            live_scoring: None,
            claim: std::sync::Mutex::default(),
            claim_lost: None,
            held_claims: Vec::new(),
            spoiled: AtomicBool::new(false),
        })
    }

    /// Sends `BEGIN` and the settings now, if the first statement has not
    /// taken them along yet. For code that talks to the connection directly.
    pub(super) async fn ensure_begun(&mut self) -> Result<()> {
        if self.pending_begin.take().is_none() {
            return Ok(());
        }
        // A deferred claim goes with BEGIN, in place of the settings.
        let r = self.raw_query_all(&[], true).await;
        self.settle(r).map(drop)
    }

    fn tenant_uuid(&self) -> Uuid {
        self.tenant.as_uuid()
    }

    /// Ends the transaction with `sql` (`COMMIT` or `ROLLBACK`), and
    /// returns once the server has answered: by then it has ended the
    /// transaction and released its locks.
    async fn finish(&mut self, sql: &str) -> Result<()> {
        let conn = self.conn.take().ok_or_else(|| Error::backend(Finished))?;
        if self.pending_begin.take().is_some() {
            // Nothing was sent, so there is nothing to commit or roll back.
            drop(conn);
            return Ok(());
        }
        let guard = Detach(Some(conn));
        if self.is_spoiled() {
            // Nothing more can go over it: the guard closes it, and the
            // server rolls back when it notices.
            return Err(Error::retryable(ConnectionLost));
        }
        let result = match guard.conn() {
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
                Err(error::db(e))
            }
        }
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
    fn note<T>(
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
    async fn raw_query(
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
    async fn raw_execute(
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
    /// A deferred idempotency claim goes in place of the settings (it sets
    /// them itself), after the statements are prepared; its answer is kept
    /// for [`settle`](Self::settle).
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
            // No table in it: prepared (once per connection) before BEGIN.
            let settings = conn.prepare_cached(SETTINGS).await?;
            let values = self.settings();
            let values = values.params();
            let (_, _, out) = futures_util::try_join!(
                self.send_begin(conn),
                conn.execute(&settings, &values),
                async { run(prepare.await?).await },
            )?;
            return Ok(out);
        };
        // The claim sets the settings itself.
        let claim_values = idempotency::ClaimValues::new(self, &claim);
        let params = claim_values.params();
        let claimed_then_run = async {
            let prepared =
                futures_util::try_join!(conn.prepare_cached(idempotency::CLAIM), prepare);
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

    /// `BEGIN` and the search path: one simple-query request, queued on the
    /// connection at its first poll.
    fn send_begin<'a>(
        &'a self,
        conn: &'a Object,
    ) -> impl Future<Output = std::result::Result<(), tokio_postgres::Error>> + 'a {
        conn.batch_execute(&self.begin_batch)
    }

    /// The transaction-local settings, as parameters of [`SETTINGS`].
    fn settings(&self) -> Settings {
        Settings([
            self.tenant.as_uuid().hyphenated().to_string(),
            self.context.actor().as_str().to_string(),
            self.context.reason().unwrap_or("").to_string(),
            self.context.request_id().unwrap_or("").to_string(),
            self.context.idempotency_key().unwrap_or("").to_string(),
        ])
    }

    /// Fails unless the transaction can take another statement: it is not
    /// finished, and no statement failed (after a failure PostgreSQL refuses
    /// everything but a rollback; refusing here too keeps that true when the
    /// failure came before the pipelined `BEGIN` reached the server).
    fn check_open(&self) -> Result<()> {
        if self.conn.is_none() {
            Err(Error::backend(Finished))
        } else if let Some(key) = &self.claim_lost {
            Err(Error::backend(idempotency::KeyTaken(key.clone())))
        } else if self.aborted {
            Err(Error::backend(Aborted))
        } else {
            Ok(())
        }
    }

    /// After a round trip: reads the answer to a deferred claim that went
    /// with it (whose failure is the error then), and maps the result.
    fn settle<T>(&mut self, r: std::result::Result<T, tokio_postgres::Error>) -> Result<T> {
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
    fn failed(&mut self, e: tokio_postgres::Error) -> Error {
        self.aborted = true;
        if error::spoils_connection(&e) {
            self.spoiled.store(true, Ordering::Relaxed);
        }
        error::db(e)
    }

    async fn query(&mut self, sql: &str, params: &Params<'_>) -> Result<Vec<Row>> {
        self.check_open()?;
        let begin = self.pending_begin.take().is_some();
        let r = self.raw_query(sql, params, begin).await;
        self.settle(r)
    }

    async fn query_opt(&mut self, sql: &str, params: &Params<'_>) -> Result<Option<Row>> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }

    async fn execute(&mut self, sql: &str, params: &Params<'_>) -> Result<u64> {
        self.check_open()?;
        let begin = self.pending_begin.take().is_some();
        let r = self.raw_execute(sql, params, begin).await;
        self.settle(r)
    }

    async fn execute_built(&mut self, (sql, values): (String, PostgresValues)) -> Result<u64> {
        self.execute(&sql, &values.as_params()).await
    }

    /// Runs `sql` as a simple query (no parameters, several statements
    /// allowed). The pending `BEGIN` and settings go out ahead of it in the
    /// same round trip; a deferred claim is sent and settled first.
    async fn simple(&mut self, sql: &str) -> Result<()> {
        self.check_open()?;
        if matches!(self.claim_state(), idempotency::ClaimState::Deferred(_)) {
            self.ensure_begun().await?;
        }
        let begin = self.pending_begin.take().is_some();
        let Some(conn) = self.conn.as_ref() else {
            return Err(Error::backend(Finished));
        };
        let r = if begin {
            let values = self.settings();
            let values = values.params();
            async {
                let settings = conn.prepare_cached(SETTINGS).await?;
                futures_util::try_join!(
                    self.send_begin(conn),
                    conn.execute(&settings, &values),
                    conn.batch_execute(sql),
                )
                .map(drop)
            }
            .await
        } else {
            conn.batch_execute(sql).await
        };
        r.map_err(|e| self.failed(e))
    }

    /// Starts an operation of several statements that must leave nothing
    /// when it fails: a savepoint, ended by [`end_atomic`](Self::end_atomic).
    pub(super) async fn begin_atomic(&mut self) -> Result<()> {
        self.simple(OPERATION_SAVEPOINT).await
    }

    /// Ends what [`begin_atomic`](Self::begin_atomic) started: on success
    /// the savepoint is released; on failure everything the operation wrote
    /// is rolled back to it — also after a statement failed, which
    /// PostgreSQL lets a savepoint undo — so that the error leaves no trace
    /// and the transaction stays usable. Returns `result`, or the failure
    /// to release.
    pub(super) async fn end_atomic<T>(&mut self, result: Result<T>) -> Result<T> {
        if result.is_ok() {
            return match self.simple(OPERATION_RELEASE).await {
                Ok(()) => result,
                Err(e) => Err(e),
            };
        }
        // (A deferred claim was settled before the savepoint: `simple`
        // sends it first, and refuses everything once it is lost.)
        let undone = match self.conn.as_ref() {
            Some(c) => c.batch_execute(OPERATION_ROLLBACK_TO).await,
            None => return result,
        };
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

    fn pipeline(&self, key: &PipelineKey) -> Result<Pipeline> {
        self.pipelines
            .require("pipeline", key)
            .cloned()
            .map_err(|e| ValidationErrors::single(e).into())
    }

    async fn contact_id_by_email(&mut self, email: &Email) -> Result<Option<ContactId>> {
        let tenant = self.tenant_uuid();
        let row = self
            .query_opt(CONTACT_ID_BY_EMAIL, &[&tenant, &email.normalized()])
            .await?;
        row.map(|r| r.try_get::<_, Uuid>(0).map(ContactId::from_uuid))
            .transpose()
            .map_err(error::db)
    }

    async fn lock_contact(&mut self, id: ContactId) -> Result<Contact> {
        self.lock_contact_with(LOCK_CONTACT, id).await
    }

    /// Locks a contact that this transaction will delete (or merge away):
    /// waits for every transaction attaching a record to it to end, and
    /// keeps new ones waiting until this one ends.
    pub(super) async fn lock_contact_for_delete(&mut self, id: ContactId) -> Result<Contact> {
        self.lock_contact_with(LOCK_CONTACT_FOR_DELETE, id).await
    }

    async fn lock_contact_with(&mut self, sql: &str, id: ContactId) -> Result<Contact> {
        let tenant = self.tenant_uuid();
        match self.query_opt(sql, &[&tenant, &id.as_uuid()]).await? {
            Some(row) => rows::contact(&row),
            None => Err(Error::not_found(Entity::Contact, id)),
        }
    }

    /// Fails with `NotFound` unless the contact exists; holds a key-share
    /// lock on it so that it cannot be deleted before this transaction ends.
    async fn share_contact(&mut self, id: ContactId) -> Result<()> {
        let tenant = self.tenant_uuid();
        match self
            .query_opt(SHARE_CONTACT, &[&tenant, &id.as_uuid()])
            .await?
        {
            Some(_) => Ok(()),
            None => Err(Error::not_found(Entity::Contact, id)),
        }
    }

    /// Locks a deal to change it: its contact with a key-share lock first,
    /// then the deal, in one round trip. A deal that a merge moved to
    /// another contact in between is locked again under its new contact;
    /// that second round holds the deal before the new contact, so it can
    /// meet a second merge of that contact in a deadlock (a retryable
    /// error, and only when two merges move the deal within one round trip).
    async fn lock_deal(&mut self, id: DealId) -> Result<Deal> {
        let (tenant, deal) = (self.tenant_uuid(), id.as_uuid());
        for _ in 0..DEAL_MOVE_RETRIES {
            self.check_open()?;
            let params: [&(dyn ToSql + Sync); 2] = [&tenant, &deal];
            let begin = self.pending_begin.take().is_some();
            let result = self
                .raw_query_all(
                    &[(SHARE_DEALS_CONTACT, &params), (LOCK_DEAL, &params)],
                    begin,
                )
                .await;
            let rows = self.settle(result)?;
            let shared: Option<Uuid> = rows
                .first()
                .and_then(|r| r.first())
                .map(|r| r.try_get(0))
                .transpose()
                .map_err(error::db)?;
            let Some(row) = rows.get(1).and_then(|r| r.first()) else {
                return Err(Error::not_found(Entity::Deal, id));
            };
            let locked = rows::deal(row)?;
            if shared == Some(locked.contact_id.as_uuid()) {
                return Ok(locked);
            }
            tracing::debug!(deal = %id, "retry: a merge moved the deal while it was being locked");
        }
        Err(Error::retryable(error::DealMoving(id.to_string())))
    }

    /// Writes the changed columns of a contact (everything but the score),
    /// with its caseless keys.
    fn contact_update(&self, c: &Contact) -> (String, PostgresValues) {
        let keys = ContactKeys::of(c);
        Query::update()
            .table(Contacts::Table)
            .values([
                (Contacts::Email, Expr::val(c.email.as_str())),
                (Contacts::FirstName, Expr::val(c.first_name.as_str())),
                (Contacts::LastName, Expr::val(c.last_name.as_str())),
                (
                    Contacts::Company,
                    Expr::val(c.company.as_ref().map(|v| v.as_str().to_string())),
                ),
                (
                    Contacts::Title,
                    Expr::val(c.title.as_ref().map(|v| v.as_str().to_string())),
                ),
                (
                    Contacts::Phone,
                    Expr::val(c.phone.as_ref().map(|v| v.as_str().to_string())),
                ),
                (Contacts::LeadSource, Expr::val(c.lead_source.as_str())),
                (
                    Contacts::Metadata,
                    Expr::val(serde_json::Value::from(c.metadata.clone())),
                ),
                (Contacts::Active, Expr::val(c.active)),
                (Contacts::UpdatedAt, Expr::val(c.updated_at)),
                (Contacts::Version, Expr::val(c.version.get())),
                (Contacts::EmailKey, Expr::val(keys.email)),
                (Contacts::FirstNameKey, Expr::val(keys.first_name)),
                (Contacts::LastNameKey, Expr::val(keys.last_name)),
                (Contacts::CompanyKey, Expr::val(keys.company)),
            ])
            .and_where(Expr::col(Contacts::TenantId).eq(self.tenant_uuid()))
            .and_where(Expr::col(Contacts::Id).eq(c.id.as_uuid()))
            .build_postgres(PostgresQueryBuilder)
    }

    /// Writes an updated contact, mapping a lost race for its new email to
    /// `DuplicateEmail` without aborting the transaction.
    async fn write_contact(&mut self, current: &Contact, next: Contact) -> Result<Contact> {
        let update = self.contact_update(&next);
        if next.email.normalized() == current.email.normalized() {
            self.execute_built(update).await?;
            return Ok(next);
        }
        // Another transaction may hold the email uncommitted: our UPDATE
        // waits for it and fails with a unique violation if it commits.
        self.simple(EMAIL_SAVEPOINT).await?;
        let r = self
            .raw_execute(&update.0, &update.1.as_params(), false)
            .await;
        match r {
            Ok(_) => {
                self.simple(EMAIL_RELEASE).await?;
                Ok(next)
            }
            Err(e) if error::is_email_conflict(&e) => {
                self.simple(EMAIL_ROLLBACK_TO).await?;
                match self.contact_id_by_email(&next.email).await? {
                    Some(existing_id) => Err(Error::DuplicateEmail {
                        email: next.email,
                        existing_id,
                    }),
                    None => Err(error::db_retryable(e)),
                }
            }
            Err(e) => Err(self.failed(e)),
        }
    }

    fn deal_update(&self, d: &Deal) -> (String, PostgresValues) {
        Query::update()
            .table(Deals::Table)
            .values([
                (Deals::Title, Expr::val(d.title.as_str())),
                (Deals::Amount, Expr::val(d.amount.amount())),
                (Deals::Currency, Expr::val(d.amount.currency().code())),
                (Deals::Stage, Expr::val(d.stage.as_str())),
                (Deals::ExpectedCloseDate, Expr::val(d.expected_close_date)),
                (Deals::WonAt, Expr::val(d.won_at)),
                (Deals::LostAt, Expr::val(d.lost_at)),
                (
                    Deals::LostReason,
                    Expr::val(d.lost_reason.as_ref().map(|r| r.as_str().to_string())),
                ),
                (Deals::UpdatedAt, Expr::val(d.updated_at)),
                (Deals::Version, Expr::val(d.version.get())),
            ])
            .and_where(Expr::col(Deals::TenantId).eq(self.tenant_uuid()))
            .and_where(Expr::col(Deals::Id).eq(d.id.as_uuid()))
            .build_postgres(PostgresQueryBuilder)
    }

    async fn write_deal(&mut self, next: Deal) -> Result<Deal> {
        let update = self.deal_update(&next);
        self.execute_built(update).await?;
        Ok(next)
    }

    async fn deal_page(
        &mut self,
        list: crate::store::ListScope,
        (first, after): (&str, &str),
        keys: &Params<'_>,
        page: &PageRequest,
    ) -> Result<Page<Deal>> {
        let limit = page.checked_limit()?;
        let cursor: Option<TimeIdKey> = page.position(list)?;
        let fetch = limit as i64 + 1;
        let rows = match cursor {
            None => {
                let mut params = keys.to_vec();
                params.push(&fetch);
                self.query(first, &params).await?
            }
            Some((micros, id)) => {
                let at = cursor_time(micros)?;
                let mut params = keys.to_vec();
                params.extend_from_slice(&[&at as &(dyn ToSql + Sync), &id, &fetch]);
                self.query(after, &params).await?
            }
        };
        let items = rows::all(&rows, rows::deal)?;
        Ok(Page::from_overfetch(items, limit, list, |d: &Deal| {
            (d.created_at.timestamp_micros(), d.id.as_uuid())
        }))
    }
}

fn cursor_time(micros: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros).ok_or_else(|| {
        ValidationErrors::single(FieldError::new(
            "cursor",
            "invalid_format",
            "is not a cursor of this list",
        ))
        .into()
    })
}

fn opt_text<T: AsRef<str>>(v: &Option<T>) -> Value {
    Value::from(v.as_ref().map(|t| t.as_ref().to_string()))
}

/// The values of [`CONTACT_INSERT_COLUMNS`].
fn contact_values(c: &Contact) -> [Expr; 19] {
    let keys = ContactKeys::of(c);
    [
        Expr::val(c.tenant_id.as_uuid()),
        Expr::val(c.id.as_uuid()),
        Expr::val(c.email.as_str()),
        Expr::val(c.first_name.as_str()),
        Expr::val(c.last_name.as_str()),
        Expr::val(opt_text(&c.company)),
        Expr::val(opt_text(&c.title)),
        Expr::val(Value::from(
            c.phone.as_ref().map(|p| p.as_str().to_string()),
        )),
        Expr::val(c.lead_source.as_str()),
        Expr::val(serde_json::Value::from(c.metadata.clone())),
        Expr::val(i16::from(c.score.get())),
        Expr::val(c.active),
        Expr::val(c.created_at),
        Expr::val(c.updated_at),
        Expr::val(c.version.get()),
        Expr::val(keys.email),
        Expr::val(keys.first_name),
        Expr::val(keys.last_name),
        Expr::val(keys.company),
    ]
}

fn deal_values(d: &Deal) -> [Expr; 15] {
    [
        Expr::val(d.tenant_id.as_uuid()),
        Expr::val(d.id.as_uuid()),
        Expr::val(d.contact_id.as_uuid()),
        Expr::val(d.title.as_str()),
        Expr::val(d.amount.amount()),
        Expr::val(d.amount.currency().code()),
        Expr::val(d.pipeline.as_str()),
        Expr::val(d.stage.as_str()),
        Expr::val(Value::from(d.expected_close_date)),
        Expr::val(Value::from(d.won_at)),
        Expr::val(Value::from(d.lost_at)),
        Expr::val(opt_text(&d.lost_reason)),
        Expr::val(d.created_at),
        Expr::val(d.updated_at),
        Expr::val(d.version.get()),
    ]
}

fn activity_values(a: &Activity) -> [Expr; 10] {
    [
        Expr::val(a.tenant_id.as_uuid()),
        Expr::val(a.id.as_uuid()),
        Expr::val(a.contact_id.as_uuid()),
        Expr::val(Value::from(a.deal_id.map(|d| d.as_uuid()))),
        Expr::val(a.kind.as_str()),
        Expr::val(Value::from(a.direction.map(|d| d.as_str().to_string()))),
        Expr::val(opt_text(&a.subject)),
        Expr::val(Value::from(a.body.clone())),
        Expr::val(a.occurred_at),
        Expr::val(a.created_at),
    ]
}

fn signal_values(s: &Signal) -> [Expr; 5] {
    [
        Expr::val(s.tenant_id.as_uuid()),
        Expr::val(s.id.as_uuid()),
        Expr::val(s.contact_id.as_uuid()),
        Expr::val(s.kind.as_str()),
        Expr::val(s.occurred_at),
    ]
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
        if let Some(key) = self.claim_lost.take() {
            self.finish("ROLLBACK").await?;
            return Err(Error::backend(idempotency::KeyTaken(key)));
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

    async fn complete_idempotency_key_and_commit(
        self: Box<Self>,
        source: &crate::idempotency::IdempotencySource,
        key: &crate::idempotency::IdempotencyKey,
        result: &crate::idempotency::StoredResult,
        completed_at: Timestamp,
    ) -> Result<crate::idempotency::IdempotencyRecord> {
        // Refused before anything is sent; the transaction is dropped (and
        // rolled back) with the error, as when the store refuses.
        let completed_at = check_timestamp("completed_at", completed_at)?;
        result.check()?;
        self.idempotency_complete_and_commit(source, key, result, completed_at)
            .await
    }
}

#[async_trait]
impl ContactsTx for PgTransaction {
    async fn create_contact(&mut self, new: NewContact) -> Result<Contact> {
        let contact = Contact::create(self.tenant, new, now());
        let mut insert = Query::insert();
        insert
            .into_table(Contacts::Table)
            .columns(CONTACT_INSERT_COLUMNS)
            .values(contact_values(&contact))
            .map_err(Error::backend)?
            .on_conflict(
                OnConflict::columns([Contacts::TenantId, Contacts::EmailKey])
                    .do_nothing()
                    .to_owned(),
            );
        let built = insert.build_postgres(PostgresQueryBuilder);
        for _ in 0..EMAIL_RACE_RETRIES {
            // In READ COMMITTED, a conflicting insert that is not committed
            // yet makes this wait; once it commits, nothing is inserted and
            // the lookup below sees the winner.
            if self.execute(&built.0, &built.1.as_params()).await? == 1 {
                return Ok(contact);
            }
            if let Some(existing_id) = self.contact_id_by_email(&contact.email).await? {
                return Err(Error::DuplicateEmail {
                    email: contact.email,
                    existing_id,
                });
            }
            tracing::debug!("retry: the contact holding the email went away before it was read");
        }
        Err(Error::retryable(error::EmailRace))
    }

    async fn get_contact(&mut self, id: ContactId) -> Result<Option<Contact>> {
        let tenant = self.tenant_uuid();
        self.query_opt(GET_CONTACT, &[&tenant, &id.as_uuid()])
            .await?
            .map(|r| rows::contact(&r))
            .transpose()
    }

    async fn get_contact_by_email(&mut self, email: &Email) -> Result<Option<Contact>> {
        let tenant = self.tenant_uuid();
        self.query_opt(GET_CONTACT_BY_EMAIL, &[&tenant, &email.normalized()])
            .await?
            .map(|r| rows::contact(&r))
            .transpose()
    }

    async fn update_contact(
        &mut self,
        id: ContactId,
        expected: Version,
        patch: ContactPatch,
    ) -> Result<Contact> {
        let current = self.lock_contact(id).await?;
        crate::store::shared::check_version(Entity::Contact, id, expected, current.version)?;
        if let Some(email) = &patch.email {
            match self.contact_id_by_email(email).await? {
                Some(existing_id) if existing_id != id => {
                    return Err(Error::DuplicateEmail {
                        email: email.clone(),
                        existing_id,
                    });
                }
                _ => {}
            }
        }
        match current.patched(&patch, now()) {
            None => Ok(current),
            Some(next) => self.write_contact(&current, next).await,
        }
    }

    async fn deactivate_contact(&mut self, id: ContactId) -> Result<Contact> {
        let current = self.lock_contact(id).await?;
        let patch = ContactPatch {
            active: Some(false),
            ..ContactPatch::default()
        };
        match current.patched(&patch, now()) {
            None => Ok(current),
            Some(next) => self.write_contact(&current, next).await,
        }
    }

    async fn delete_contact(&mut self, id: ContactId) -> Result<bool> {
        let tenant = self.tenant_uuid();
        Ok(self
            .execute(DELETE_CONTACT, &[&tenant, &id.as_uuid()])
            .await?
            > 0)
    }

    async fn search_contacts(&mut self, q: &ContactQuery) -> Result<Page<Contact>> {
        let q = &*q.checked()?;
        let limit = q.page.checked_limit()?;
        let after: Option<ContactSortKey> = q.page.position(CursorList::contacts(q))?;
        let (sql, values) = search::build(self.tenant, q, limit, after.as_ref())?;
        let rows = self.query(&sql, &values.as_params()).await?;
        if !matches!(q.sort, ContactSort::NameAsc | ContactSort::NameDesc) {
            let items = rows::all(&rows, rows::contact)?;
            return Ok(Page::from_overfetch(
                items,
                limit,
                CursorList::contacts(q),
                |c| ContactSortKey::of(q.sort, c),
            ));
        }
        // The cursor holds the keys the rows were ordered by, as stored
        // (not recomputed), so that paging follows the index exactly.
        let mut items = Vec::with_capacity(rows.len());
        for row in &rows {
            let contact = rows::contact(row)?;
            let last: String = row.try_get(CONTACT_COLUMNS.len()).map_err(error::db)?;
            let first: String = row.try_get(CONTACT_COLUMNS.len() + 1).map_err(error::db)?;
            let key = ContactSortKey::Name(last, first, contact.id.as_uuid());
            items.push((contact, key));
        }
        let page = Page::from_overfetch(items, limit, CursorList::contacts(q), |(_, key)| {
            key.clone()
        });
        Ok(Page {
            items: page.items.into_iter().map(|(c, _)| c).collect(),
            next_cursor: page.next_cursor,
        })
    }
}

#[async_trait]
impl DealsTx for PgTransaction {
    async fn create_deal(&mut self, new: NewDeal) -> Result<Deal> {
        let new = new.checked()?;
        let pipeline = self.pipeline(&new.pipeline)?;
        self.share_contact(new.contact_id).await?;
        let deal = Deal::create(self.tenant, new, &pipeline, now())?;
        let mut insert = Query::insert();
        insert
            .into_table(Deals::Table)
            .columns(DEAL_COLUMNS)
            .values(deal_values(&deal))
            .map_err(Error::backend)?;
        self.execute_built(insert.build_postgres(PostgresQueryBuilder))
            .await?;
        Ok(deal)
    }

    async fn get_deal(&mut self, id: DealId) -> Result<Option<Deal>> {
        let tenant = self.tenant_uuid();
        self.query_opt(GET_DEAL, &[&tenant, &id.as_uuid()])
            .await?
            .map(|r| rows::deal(&r))
            .transpose()
    }

    async fn update_deal(
        &mut self,
        id: DealId,
        expected: Version,
        patch: DealPatch,
    ) -> Result<Deal> {
        let patch = patch.checked()?;
        let current = self.lock_deal(id).await?;
        crate::store::shared::check_version(Entity::Deal, id, expected, current.version)?;
        match current.patched(&patch, now()) {
            None => Ok(current),
            Some(next) => self.write_deal(next).await,
        }
    }

    async fn move_deal(
        &mut self,
        id: DealId,
        expected: Version,
        to: &StageKey,
        lost_reason: Option<LostReason>,
    ) -> Result<Deal> {
        let current = self.lock_deal(id).await?;
        crate::store::shared::check_version(Entity::Deal, id, expected, current.version)?;
        let pipeline = self.pipeline(&current.pipeline)?;
        let next = current.moved(&pipeline, to, lost_reason, now())?;
        self.write_deal(next).await
    }

    async fn reopen_deal(&mut self, id: DealId, expected: Version, to: &StageKey) -> Result<Deal> {
        let current = self.lock_deal(id).await?;
        crate::store::shared::check_version(Entity::Deal, id, expected, current.version)?;
        let pipeline = self.pipeline(&current.pipeline)?;
        let next = current.reopened(&pipeline, to, now())?;
        self.write_deal(next).await
    }

    async fn delete_deal(&mut self, id: DealId) -> Result<bool> {
        match self.lock_deal(id).await {
            Ok(_) => {}
            Err(Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e),
        }
        let tenant = self.tenant_uuid();
        Ok(self.execute(DELETE_DEAL, &[&tenant, &id.as_uuid()]).await? > 0)
    }

    async fn list_deals_for_contact(
        &mut self,
        contact: ContactId,
        page: &PageRequest,
    ) -> Result<Page<Deal>> {
        let tenant = self.tenant_uuid();
        let list = CursorList::deals_of_contact(contact);
        let contact = contact.as_uuid();
        self.deal_page(
            list,
            (DEALS_FOR_CONTACT, DEALS_FOR_CONTACT_AFTER),
            &[&tenant, &contact],
            page,
        )
        .await
    }

    async fn list_deals_in_stage(
        &mut self,
        pipeline: &PipelineKey,
        stage: &StageKey,
        page: &PageRequest,
    ) -> Result<Page<Deal>> {
        let tenant = self.tenant_uuid();
        self.deal_page(
            CursorList::deals_in_stage(pipeline, stage),
            (DEALS_IN_STAGE, DEALS_IN_STAGE_AFTER),
            &[&tenant, &pipeline.as_str(), &stage.as_str()],
            page,
        )
        .await
    }

    async fn pipeline_summary(&mut self, pipeline: &PipelineKey) -> Result<PipelineSummary> {
        let def = self.pipeline(pipeline)?;
        let tenant = self.tenant_uuid();
        let rows = self
            .query(PIPELINE_TOTALS, &[&tenant, &pipeline.as_str()])
            .await?;
        let mut totals = Vec::with_capacity(rows.len());
        for row in &rows {
            let stage: String = row.try_get(0).map_err(error::db)?;
            let currency: String = row.try_get(1).map_err(error::db)?;
            let count: i64 = row.try_get(2).map_err(error::db)?;
            let sum: Decimal = row.try_get(3).map_err(error::db)?;
            let invalid = |e: FieldError| {
                Error::backend(error::InvalidRow {
                    table: "deals",
                    id: format!("(stage {stage}, currency {currency})"),
                    errors: vec![e],
                })
            };
            let stage_key = StageKey::parse(&stage).map_err(invalid)?;
            let currency = Currency::parse(&currency).map_err(invalid)?;
            totals.push((stage_key, currency, count.unsigned_abs(), sum));
        }
        Ok(PipelineSummary::from_totals(&def, totals))
    }
}

#[async_trait]
impl TimelineTx for PgTransaction {
    async fn log_activity(&mut self, new: NewActivity) -> Result<Activity> {
        let new = new.checked()?;
        let live = self.live_lock(new.contact_id).await?;
        if let Some(deal_id) = new.deal_id {
            let tenant = self.tenant_uuid();
            let row = self
                .query_opt(SHARE_DEAL, &[&tenant, &deal_id.as_uuid()])
                .await?
                .ok_or_else(|| Error::not_found(Entity::Deal, deal_id))?;
            let owner: Uuid = row.try_get(0).map_err(error::db)?;
            if owner != new.contact_id.as_uuid() {
                return Err(crate::domain::deal_of_another_contact().into());
            }
        }
        let activity = Activity::create(self.tenant, new, now());
        let mut insert = Query::insert();
        insert
            .into_table(Activities::Table)
            .columns(ACTIVITY_COLUMNS)
            .values(activity_values(&activity))
            .map_err(Error::backend)?;
        self.insert_activity_live(insert.build_postgres(PostgresQueryBuilder), live, &activity)
            .await?;
        Ok(activity)
    }

    async fn timeline(&mut self, contact: ContactId, page: &PageRequest) -> Result<Page<Activity>> {
        let limit = page.checked_limit()?;
        let list = CursorList::timeline(contact);
        let cursor: Option<TimeIdKey> = page.position(list)?;
        let tenant = self.tenant_uuid();
        let contact = contact.as_uuid();
        let fetch = limit as i64 + 1;
        let rows = match cursor {
            None => self.query(TIMELINE, &[&tenant, &contact, &fetch]).await?,
            Some((micros, id)) => {
                let at = cursor_time(micros)?;
                self.query(TIMELINE_AFTER, &[&tenant, &contact, &at, &id, &fetch])
                    .await?
            }
        };
        let items = rows::all(&rows, rows::activity)?;
        Ok(Page::from_overfetch(items, limit, list, |a: &Activity| {
            (a.occurred_at.timestamp_micros(), a.id.as_uuid())
        }))
    }

    async fn record_signal(&mut self, new: NewSignal) -> Result<Signal> {
        let new = new.checked()?;
        let live = self.live_lock(new.contact_id).await?;
        let signal = Signal::create(self.tenant, new, now());
        let mut insert = Query::insert();
        insert
            .into_table(Signals::Table)
            .columns(SIGNAL_COLUMNS)
            .values(signal_values(&signal))
            .map_err(Error::backend)?;
        self.insert_signal_live(insert.build_postgres(PostgresQueryBuilder), live, &signal)
            .await?;
        Ok(signal)
    }

    async fn list_signals(&mut self, contact: ContactId) -> Result<Vec<Signal>> {
        let tenant = self.tenant_uuid();
        let rows = self.query(SIGNALS, &[&tenant, &contact.as_uuid()]).await?;
        rows::all(&rows, rows::signal)
    }
}

#[async_trait]
impl HistoryTx for PgTransaction {
    async fn entity_history(
        &mut self,
        entity: crate::history::HistoryEntity,
        page: &PageRequest,
    ) -> Result<Page<crate::history::HistoryEntry>> {
        self.history_page(entity, page).await
    }

    async fn entity_as_of(
        &mut self,
        entity: crate::history::HistoryEntity,
        at: Timestamp,
    ) -> Result<Option<crate::history::HistoryEntry>> {
        let at = check_timestamp("at", at)?;
        self.history_as_of(entity, at).await
    }

    async fn field_changes(
        &mut self,
        query: &crate::history::FieldQuery,
    ) -> Result<Page<crate::history::HistoryEntry>> {
        query.check()?;
        self.history_field_changes(query).await
    }

    async fn changes_between(
        &mut self,
        from: Timestamp,
        until: Timestamp,
        page: &PageRequest,
    ) -> Result<Page<crate::history::HistoryEntry>> {
        let [from, until] = check_timestamps([("from", from), ("until", until)])?;
        self.history_between(from, until, page).await
    }

    async fn purge_history(&mut self, before: Timestamp) -> Result<u64> {
        let before = check_timestamp("before", before)?;
        self.history_purge(before).await
    }

    async fn erase_contact(&mut self, id: ContactId) -> Result<Contact> {
        self.begin_atomic().await?;
        let erased = self.history_erase_contact(id).await;
        self.end_atomic(erased).await
    }
}

#[async_trait]
impl IdempotencyTx for PgTransaction {
    async fn claim_idempotency_key(
        &mut self,
        claim: &crate::idempotency::IdempotencyClaim,
    ) -> Result<crate::idempotency::Claim> {
        let claim = claim.checked()?;
        self.idempotency_claim(&claim).await
    }

    async fn defer_idempotency_claim(
        &mut self,
        claim: &crate::idempotency::IdempotencyClaim,
    ) -> Result<Option<crate::idempotency::Claim>> {
        let claim = claim.checked()?;
        if self.idempotency_defer(&claim) {
            Ok(None)
        } else {
            self.idempotency_claim(&claim).await.map(Some)
        }
    }

    async fn resolve_idempotency_claim(&mut self) -> Result<crate::idempotency::Claim> {
        self.idempotency_resolve().await
    }

    async fn complete_idempotency_key(
        &mut self,
        source: &crate::idempotency::IdempotencySource,
        key: &crate::idempotency::IdempotencyKey,
        result: &crate::idempotency::StoredResult,
        completed_at: Timestamp,
    ) -> Result<crate::idempotency::IdempotencyRecord> {
        let completed_at = check_timestamp("completed_at", completed_at)?;
        result.check()?;
        self.idempotency_complete(source, key, result, completed_at)
            .await
    }

    async fn get_idempotency_record(
        &mut self,
        source: &crate::idempotency::IdempotencySource,
        key: &crate::idempotency::IdempotencyKey,
    ) -> Result<Option<crate::idempotency::IdempotencyRecord>> {
        self.idempotency_get(source, key).await
    }

    async fn list_idempotency_records(
        &mut self,
        source: &crate::idempotency::IdempotencySource,
        page: &PageRequest,
    ) -> Result<Page<crate::idempotency::IdempotencyRecord>> {
        self.idempotency_list(source, page).await
    }

    async fn purge_idempotency_records(&mut self, now: Timestamp, limit: u32) -> Result<u64> {
        let now = check_timestamp("now", now)?;
        self.idempotency_purge(now, limit).await
    }
}

#[async_trait]
impl BulkTx for PgTransaction {
    async fn upsert_contacts(
        &mut self,
        rows: &[NewContact],
        policy: crate::bulk::ConflictPolicy,
    ) -> Result<Vec<crate::bulk::UpsertOutcome>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        self.begin_atomic().await?;
        let outcomes = self.bulk_upsert_contacts(rows, policy).await;
        self.end_atomic(outcomes).await
    }

    async fn lock_for_import(&mut self, lock: crate::bulk::ImportLock) -> Result<()> {
        self.take_import_lock(lock).await
    }

    async fn merge_contacts(
        &mut self,
        survivor: ContactId,
        loser: ContactId,
        policy: crate::bulk::ConflictPolicy,
    ) -> Result<Contact> {
        self.begin_atomic().await?;
        let merged = self.bulk_merge_contacts(survivor, loser, policy).await;
        self.end_atomic(merged).await
    }
}

#[async_trait]
impl ScoringTx for PgTransaction {
    async fn write_scores(&mut self, scores: &[(ContactId, Score)]) -> Result<u64> {
        if scores.is_empty() {
            return Ok(0);
        }
        // One row per contact, the last score given for it winning (an
        // UPDATE … FROM applies only one of several matching rows).
        let mut position: HashMap<Uuid, usize> = HashMap::with_capacity(scores.len());
        let mut ids: Vec<Uuid> = Vec::with_capacity(scores.len());
        let mut values: Vec<i16> = Vec::with_capacity(scores.len());
        for (id, score) in scores {
            let id = id.as_uuid();
            let score = i16::from(score.get());
            match position.get(&id) {
                Some(&i) => values[i] = score,
                None => {
                    position.insert(id, ids.len());
                    ids.push(id);
                    values.push(score);
                }
            }
        }
        let tenant = self.tenant_uuid();
        self.execute(WRITE_SCORES, &[&tenant, &ids, &values]).await
    }

    async fn scoring_inputs(
        &mut self,
        request: &crate::scoring::InputsRequest,
    ) -> Result<Vec<crate::scoring::ContactInputs>> {
        self.scoring_chunk(&request.checked()?).await
    }

    async fn live_score_log(&mut self, id: ContactId) -> Result<Option<Option<f64>>> {
        self.live_log_of(id).await
    }

    async fn live_top_leads(&mut self, limit: u32) -> Result<Vec<(Contact, f64)>> {
        self.live_top(limit).await
    }

    async fn write_live_score_logs(&mut self, logs: &[(ContactId, Option<f64>)]) -> Result<u64> {
        let logs = crate::scoring::live::checked_logs(logs)?;
        self.live_write(&logs).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Company, LeadSource, PersonName};

    fn insert_sql(c: &Contact) -> (String, usize) {
        let mut insert = Query::insert();
        insert
            .into_table(Contacts::Table)
            .columns(CONTACT_INSERT_COLUMNS)
            .values(contact_values(c))
            .unwrap()
            .on_conflict(
                OnConflict::columns([Contacts::TenantId, Contacts::EmailKey])
                    .do_nothing()
                    .to_owned(),
            );
        let (sql, values) = insert.build_postgres(PostgresQueryBuilder);
        (sql, values.0.len())
    }

    #[test]
    fn a_contact_insert_is_the_same_statement_whichever_optional_fields_are_set() {
        let bare = Contact::create(
            TenantId::new(),
            NewContact::new(
                Email::parse("a@example.com").unwrap(),
                PersonName::parse("A").unwrap(),
                PersonName::parse("B").unwrap(),
            ),
            now(),
        );
        let mut full = bare.clone();
        full.company = Some(Company::parse("Acme").unwrap());
        full.lead_source = LeadSource::Paid;
        let (a, n) = insert_sql(&bare);
        let (b, m) = insert_sql(&full);
        assert_eq!(a, b, "one prepared statement serves every contact");
        assert_eq!((n, m), (19, 19));
        assert!(
            a.ends_with(r#"ON CONFLICT ("tenant_id", "email_key") DO NOTHING"#),
            "{a}"
        );
    }
}
