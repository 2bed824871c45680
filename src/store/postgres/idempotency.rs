//! Idempotency keys on PostgreSQL: the table `idempotency_keys` (migration
//! 2), primary key `(tenant_id, source, key)`.
//!
//! A claim is one statement, [`CLAIM`]: `INSERT … ON CONFLICT DO NOTHING`
//! on the primary key (when another transaction holds the key, the insert
//! waits for its row lock and then does nothing, if it committed, or
//! inserts, if it rolled back), an `UPDATE` that takes over an expired
//! record, and a read of the record holding the key, so that a replay
//! needs no second statement. The wait is bounded by a transaction-local
//! `lock_timeout` that the same statement sets before the insert and
//! restores after it; a timeout (55P03) is [`Error::KeyInUse`].
//!
//! The guard defers its claim ([`PgTransaction::idempotency_defer`]): the
//! claim goes out with the transaction's first statement, after `BEGIN`
//! and the settings, in the same round trip, and its answer is read before
//! that statement's. When it finds the key taken, the statement's effects
//! are rolled back with the rest and the statement reports [`KeyTaken`].
//! The stored result goes out with `COMMIT`. So a guarded transaction makes
//! as many round trips as the same work unguarded.

use serde_json::Value;
use tokio_postgres::{Row, error::SqlState};
use uuid::Uuid;

use super::{PgTransaction, error};
use crate::{
    domain::{TenantId, Timestamp},
    error::{Error, FieldError, Result},
    idempotency::{
        Claim, Fingerprint, IdempotencyClaim, IdempotencyKey, IdempotencyRecord, IdempotencySource,
        StoredResult, WaitPolicy, key_in_use,
    },
    store::{Page, PageRequest},
};

#[cfg(test)]
const COLUMNS: &str = "tenant_id, source, key, fingerprint, status, result, created_at, \
                       completed_at, expires_at";

/// The claim, in one statement: bound the lock wait (`lock_timeout`, set
/// transaction-locally and restored at the end of the statement), insert a
/// pending record unless the key is held, or else take over an expired
/// record, and read the record that holds the key. The result's first
/// column counts the claims made (0 or 1); the record columns follow the
/// restored setting, from [`CLAIM_RECORD`] on, and are null unless a record
/// that has not expired was visible when the statement began.
///
/// `lt` runs first (the insert reads from it) and the restore last (the
/// projection reads the inserts' counts first). When the insert waited for
/// a transaction that then committed, the record it met is newer than the
/// statement's snapshot: no claim and no record, and the caller claims
/// again with a statement of its own.
pub(super) const CLAIM: &str = "WITH lt AS MATERIALIZED ( \
         SELECT current_setting('lock_timeout') AS saved, \
         set_config('lock_timeout', $7::text, true) AS bound), \
     ins AS (INSERT INTO idempotency_keys \
         (tenant_id, source, key, fingerprint, status, created_at, expires_at) \
         SELECT $1::uuid, $2::text, $3::text, $4::text, 'pending', $5::timestamptz, \
         $6::timestamptz FROM lt \
         ON CONFLICT (tenant_id, source, key) DO NOTHING RETURNING 1), \
     took AS (UPDATE idempotency_keys SET fingerprint = $4, status = 'pending', \
         result = NULL, created_at = $5, completed_at = NULL, expires_at = $6 \
         WHERE tenant_id = $1 AND source = $2 AND key = $3 AND expires_at <= $5 \
         AND NOT EXISTS (SELECT 1 FROM ins) RETURNING 1) \
     SELECT (SELECT count(*) FROM ins) + (SELECT count(*) FROM took) AS claimed, \
         set_config('lock_timeout', (SELECT saved FROM lt), true) AS restored, \
         k.tenant_id, k.source, k.key, k.fingerprint, k.status, k.result, k.created_at, \
         k.completed_at, k.expires_at \
     FROM (SELECT 1) AS one LEFT JOIN idempotency_keys AS k \
         ON k.tenant_id = $1 AND k.source = $2 AND k.key = $3 AND k.expires_at > $5";
/// Where the record columns of [`CLAIM`]'s row begin.
const CLAIM_RECORD: usize = 2;
const GET: &str = "SELECT tenant_id, source, key, fingerprint, status, result, created_at, \
     completed_at, expires_at FROM idempotency_keys \
     WHERE tenant_id = $1 AND source = $2 AND key = $3";
const COMPLETE: &str = "UPDATE idempotency_keys SET status = $4, result = $5, completed_at = $6 \
     WHERE tenant_id = $1 AND source = $2 AND key = $3 AND status = 'pending' \
     RETURNING tenant_id, source, key, fingerprint, status, result, created_at, \
     completed_at, expires_at";
/// [`COMPLETE`] that fails (division by zero) when the key holds no pending
/// claim of this transaction, so that a `COMMIT` pipelined after it rolls
/// back rather than commit a claim without its result. (The `WHERE` makes
/// PostgreSQL compute the division, which it skips for an unused column.)
const COMPLETE_OR_FAIL: &str = "WITH done AS (UPDATE idempotency_keys \
     SET status = $4, result = $5, completed_at = $6 \
     WHERE tenant_id = $1 AND source = $2 AND key = $3 AND status = 'pending' \
     RETURNING tenant_id, source, key, fingerprint, status, result, created_at, \
     completed_at, expires_at), \
     exactly_one AS (SELECT 1 / count(*)::int AS one FROM done) \
     SELECT done.tenant_id, done.source, done.key, done.fingerprint, done.status, done.result, \
     done.created_at, done.completed_at, done.expires_at \
     FROM exactly_one LEFT JOIN done ON true WHERE exactly_one.one = 1";
const LIST: &str = "SELECT tenant_id, source, key, fingerprint, status, result, created_at, \
     completed_at, expires_at FROM idempotency_keys WHERE tenant_id = $1 AND source = $2 \
     ORDER BY created_at DESC, key DESC LIMIT $3";
const LIST_AFTER: &str = "SELECT tenant_id, source, key, fingerprint, status, result, \
     created_at, completed_at, expires_at FROM idempotency_keys \
     WHERE tenant_id = $1 AND source = $2 AND (created_at, key) < ($3, $4) \
     ORDER BY created_at DESC, key DESC LIMIT $5";
const PURGE: &str = "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND (source, key) IN \
     (SELECT source, key FROM idempotency_keys WHERE tenant_id = $1 AND expires_at <= $2 \
      ORDER BY expires_at LIMIT $3 FOR UPDATE SKIP LOCKED)";

/// How often a claim starts over when the record it met vanished (purged)
/// or was taken over in between.
const CLAIM_ATTEMPTS: usize = 4;

/// The position of a record in a source's list: `created_at`, then key.
type ListKey = (i64, String);

/// Raised when a transaction completes a key it does not hold.
#[derive(Debug)]
struct NotClaimed(String);

impl std::fmt::Display for NotClaimed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the idempotency key {} is not claimed by this transaction",
            self.0
        )
    }
}

impl std::error::Error for NotClaimed {}

/// `lock_timeout` for a claim under `wait` (`0` would mean no limit).
fn lock_timeout(wait: WaitPolicy) -> String {
    match wait {
        WaitPolicy::NoWait => "1ms".to_string(),
        WaitPolicy::Wait(d) => format!("{}ms", d.as_millis().clamp(1, i32::MAX as u128)),
    }
}

fn record(row: &Row) -> Result<IdempotencyRecord> {
    record_at(row, 0)
}

/// The record in the nine columns of `row` from `at` on.
fn record_at(row: &Row, at: usize) -> Result<IdempotencyRecord> {
    let tenant: Uuid = row.try_get(at).map_err(error::db)?;
    let source: String = row.try_get(at + 1).map_err(error::db)?;
    let key: String = row.try_get(at + 2).map_err(error::db)?;
    let fingerprint: String = row.try_get(at + 3).map_err(error::db)?;
    let status: String = row.try_get(at + 4).map_err(error::db)?;
    let result: Option<Value> = row.try_get(at + 5).map_err(error::db)?;
    let created_at: Timestamp = row.try_get(at + 6).map_err(error::db)?;
    let completed_at: Option<Timestamp> = row.try_get(at + 7).map_err(error::db)?;
    let expires_at: Timestamp = row.try_get(at + 8).map_err(error::db)?;
    let mut errors = Vec::new();
    let parsed_source = IdempotencySource::parse(&source)
        .map_err(|e| errors.push(e))
        .ok();
    let parsed_key = IdempotencyKey::parse(&key).map_err(|e| errors.push(e)).ok();
    let parsed_fingerprint = Fingerprint::parse(&fingerprint)
        .map_err(|e| errors.push(e))
        .ok();
    let parsed_result = match (status.as_str(), result) {
        ("pending", None) => Some(None),
        ("succeeded", Some(v)) => Some(Some(StoredResult::Succeeded(v))),
        ("failed", Some(v)) => Some(Some(StoredResult::Failed(v))),
        _ => {
            errors.push(FieldError::new(
                "status",
                "invalid_format",
                format!("status {status:?} does not match the stored result"),
            ));
            None
        }
    };
    match (parsed_source, parsed_key, parsed_fingerprint, parsed_result) {
        (Some(source), Some(key), Some(fingerprint), Some(result)) => Ok(IdempotencyRecord {
            tenant_id: TenantId::from_uuid(tenant),
            source,
            key,
            fingerprint,
            result,
            created_at,
            completed_at,
            expires_at,
        }),
        _ => Err(Error::backend(error::InvalidRow {
            table: "idempotency_keys",
            id: format!("{source}:{key}"),
            errors,
        })),
    }
}

/// What one claim statement found.
#[derive(Debug)]
pub(super) enum ClaimAnswer {
    /// The key is this transaction's now.
    Claimed,
    /// A record that has not expired holds it.
    Existing(IdempotencyRecord),
    /// The key changed hands while the claim waited (the record it met is
    /// newer than the statement's snapshot): claim again with a new
    /// statement.
    Again,
}

/// A claim waiting for the transaction's first statement, which it goes
/// out ahead of: see [`PgTransaction::idempotency_defer`].
#[derive(Debug, Default)]
pub(super) enum ClaimState {
    /// No deferred claim.
    #[default]
    None,
    /// Deferred, not sent yet.
    Deferred(Box<IdempotencyClaim>),
    /// Sent with a statement; its answer, not read yet.
    Answered(
        Box<IdempotencyClaim>,
        std::result::Result<Vec<Row>, tokio_postgres::Error>,
    ),
    /// Could not be sent (preparing a statement failed).
    NotSent(Box<IdempotencyClaim>),
    /// Read: what the claim found, until the guard asks for it.
    Settled(Result<ClaimAnswer>),
}

/// A deferred claim found the key taken (or failed): the transaction's
/// statements went out with it, and it can only be rolled back.
#[derive(Debug)]
pub(super) struct KeyTaken(pub(super) String);

impl std::fmt::Display for KeyTaken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the idempotency key {} was not claimed by this transaction (an earlier delivery \
             holds it, or the claim failed); the transaction can only be rolled back",
            self.0
        )
    }
}

impl std::error::Error for KeyTaken {}

/// Asked for the outcome of a deferred claim when none was made.
#[derive(Debug)]
struct NoDeferredClaim;

impl std::fmt::Display for NoDeferredClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("this transaction has no deferred idempotency claim")
    }
}

impl std::error::Error for NoDeferredClaim {}

/// The parameters of [`CLAIM`] for a claim by a tenant.
pub(super) struct ClaimValues<'a> {
    tenant: Uuid,
    source: &'a str,
    key: &'a str,
    fingerprint: &'a str,
    now: Timestamp,
    expires_at: Timestamp,
    timeout: String,
}

impl<'a> ClaimValues<'a> {
    pub(super) fn new(tenant: Uuid, claim: &'a IdempotencyClaim) -> Self {
        ClaimValues {
            tenant,
            source: claim.source.as_str(),
            key: claim.key.as_str(),
            fingerprint: claim.fingerprint.as_str(),
            now: claim.now,
            expires_at: claim.expires_at,
            timeout: lock_timeout(claim.wait),
        }
    }

    pub(super) fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 7] {
        [
            &self.tenant,
            &self.source,
            &self.key,
            &self.fingerprint,
            &self.now,
            &self.expires_at,
            &self.timeout,
        ]
    }
}

/// `source:key`, as errors name a claimed key.
fn scoped(claim: &IdempotencyClaim) -> String {
    format!("{}:{}", claim.source, claim.key)
}

/// Reads the answer of [`CLAIM`].
pub(super) fn claim_answer(rows: &[Row]) -> Result<ClaimAnswer> {
    let Some(row) = rows.first() else {
        return Err(Error::backend(error::InvalidRow {
            table: "idempotency_keys",
            id: "claim".to_string(),
            errors: vec![FieldError::new(
                "claimed",
                "missing",
                "the claim returned no row",
            )],
        }));
    };
    let claimed: i64 = row.try_get(0).map_err(error::db)?;
    if claimed > 0 {
        return Ok(ClaimAnswer::Claimed);
    }
    let holder: Option<Uuid> = row.try_get(CLAIM_RECORD).map_err(error::db)?;
    match holder {
        Some(_) => record_at(row, CLAIM_RECORD).map(ClaimAnswer::Existing),
        None => Ok(ClaimAnswer::Again),
    }
}

/// What a failed claim statement means: a lock wait that ran out is
/// [`Error::KeyInUse`].
pub(super) fn claim_error(e: tokio_postgres::Error, claim: &IdempotencyClaim) -> Error {
    if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
        key_in_use(&claim.source, &claim.key)
    } else {
        error::db(e)
    }
}

impl PgTransaction {
    /// Sends one claim statement (after a pending `BEGIN`) and reads what
    /// it found.
    async fn claim_once(&mut self, claim: &IdempotencyClaim) -> Result<ClaimAnswer> {
        self.check_open()?;
        let values = ClaimValues::new(self.tenant_uuid(), claim);
        let params = values.params();
        let begin = self.pending_begin.take().is_some();
        let r = self.raw_query(CLAIM, &params, begin).await;
        if let Some(e) = self.settle_claim() {
            return Err(e);
        }
        match r {
            Ok(rows) => claim_answer(&rows),
            Err(e) => {
                self.aborted = true;
                Err(claim_error(e, claim))
            }
        }
    }

    pub(super) async fn idempotency_claim(&mut self, claim: &IdempotencyClaim) -> Result<Claim> {
        for _ in 0..CLAIM_ATTEMPTS {
            match self.claim_once(claim).await? {
                ClaimAnswer::Claimed => return Ok(Claim::Claimed),
                ClaimAnswer::Existing(record) => return Ok(Claim::Existing(record)),
                // Nothing else went out with it: look again.
                ClaimAnswer::Again => continue,
            }
        }
        Err(key_in_use(&claim.source, &claim.key))
    }

    /// Defers `claim` to the transaction's first statement, which it goes
    /// out ahead of (after `BEGIN` and the settings) in the same round
    /// trip; `false` when a statement was sent already (or a claim is
    /// deferred), and the caller must claim now.
    pub(super) fn idempotency_defer(&mut self, claim: &IdempotencyClaim) -> bool {
        if self.pending_begin.is_none() || !matches!(self.claim_state(), ClaimState::None) {
            return false;
        }
        *self.claim_state() = ClaimState::Deferred(Box::new(claim.clone()));
        true
    }

    /// The deferred claim's state, for code holding the transaction mutably.
    pub(super) fn claim_state(&mut self) -> &mut ClaimState {
        self.claim
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes the deferred claim to send it, for [`PgTransaction::after_begin`].
    pub(super) fn take_deferred_claim(&self) -> Option<Box<IdempotencyClaim>> {
        let mut state = self
            .claim
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match std::mem::take(&mut *state) {
            ClaimState::Deferred(claim) => Some(claim),
            other => {
                *state = other;
                None
            }
        }
    }

    /// Keeps the answer to a claim sent by [`PgTransaction::after_begin`].
    pub(super) fn claim_sent(
        &self,
        claim: Box<IdempotencyClaim>,
        answer: Option<std::result::Result<Vec<Row>, tokio_postgres::Error>>,
    ) {
        let mut state = self
            .claim
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *state = match answer {
            Some(answer) => ClaimState::Answered(claim, answer),
            None => ClaimState::NotSent(claim),
        };
    }

    /// Reads the answer to a deferred claim that went out with the last
    /// round trip, if one did. `None` when there was none, or when the key
    /// is now this transaction's; otherwise the error for the statement
    /// that went with it, and the transaction refuses everything but a
    /// rollback from then on (its statements ran without the key).
    pub(super) fn settle_claim(&mut self) -> Option<Error> {
        let state = self.claim_state();
        let (claim, outcome) = match std::mem::take(state) {
            ClaimState::Answered(claim, Ok(rows)) => {
                let outcome = claim_answer(&rows);
                (claim, outcome)
            }
            ClaimState::Answered(claim, Err(e)) => {
                let outcome = Err(claim_error(e, &claim));
                (claim, outcome)
            }
            ClaimState::NotSent(claim) => {
                let outcome = Err(Error::backend(KeyTaken(scoped(&claim))));
                (claim, outcome)
            }
            other => {
                *state = other;
                return None;
            }
        };
        let claimed = matches!(outcome, Ok(ClaimAnswer::Claimed));
        let failed = outcome.is_err();
        *state = ClaimState::Settled(outcome);
        if claimed {
            return None;
        }
        if failed {
            // The server aborted the transaction at the claim.
            self.aborted = true;
        }
        self.claim_lost = Some(scoped(&claim));
        Some(Error::backend(KeyTaken(scoped(&claim))))
    }

    /// What the deferred claim found, sending it now if no statement took
    /// it along. `None`: the key changed hands while the claim waited, and
    /// the transaction must be rolled back and the claim made again in a
    /// new one.
    pub(super) async fn idempotency_resolve(&mut self) -> Result<Option<Claim>> {
        let mut sent_alone = None;
        if matches!(self.claim_state(), ClaimState::Deferred(_)) {
            if self.pending_begin.take().is_some() {
                // No statement took it along: it goes now, with BEGIN.
                sent_alone = self.raw_query_all(&[], true).await.err();
            } else if let ClaimState::Deferred(claim) = std::mem::take(self.claim_state()) {
                // Cannot happen (a claim is deferred only before BEGIN is
                // sent, and BEGIN takes it along); claim now if it does.
                return self.idempotency_claim(&claim).await.map(Some);
            }
        }
        let _ = self.settle_claim();
        let outcome = std::mem::take(self.claim_state());
        if let Some(e) = sent_alone {
            self.aborted = true;
            if !matches!(outcome, ClaimState::Settled(Err(_))) {
                return Err(error::db(e));
            }
        }
        match outcome {
            ClaimState::Settled(Ok(ClaimAnswer::Claimed)) => Ok(Some(Claim::Claimed)),
            ClaimState::Settled(Ok(ClaimAnswer::Existing(record))) => {
                Ok(Some(Claim::Existing(record)))
            }
            ClaimState::Settled(Ok(ClaimAnswer::Again)) => Ok(None),
            ClaimState::Settled(Err(e)) => Err(e),
            _ => Err(Error::backend(NoDeferredClaim)),
        }
    }

    pub(super) async fn idempotency_complete(
        &mut self,
        source: &IdempotencySource,
        key: &IdempotencyKey,
        result: &StoredResult,
        completed_at: Timestamp,
    ) -> Result<IdempotencyRecord> {
        let tenant = self.tenant_uuid();
        let completed_at = crate::domain::truncate_to_micros(completed_at);
        let row = self
            .query_opt(
                COMPLETE,
                &[
                    &tenant,
                    &source.as_str(),
                    &key.as_str(),
                    &result.status(),
                    result.value(),
                    &completed_at,
                ],
            )
            .await?;
        match row {
            Some(row) => record(&row),
            None => Err(Error::backend(NotClaimed(format!("{source}:{key}")))),
        }
    }

    /// Stores the outcome and commits in one round trip: the `UPDATE` and
    /// the `COMMIT` are pipelined. When the update fails, PostgreSQL turns
    /// the `COMMIT` into a rollback, and the update's error is returned.
    pub(super) async fn idempotency_complete_and_commit(
        mut self: Box<Self>,
        source: &IdempotencySource,
        key: &IdempotencyKey,
        result: &StoredResult,
        completed_at: Timestamp,
    ) -> Result<IdempotencyRecord> {
        if self.aborted || self.claim_lost.is_some() {
            self.finish("ROLLBACK").await?;
            return Err(match self.claim_lost.take() {
                Some(key) => Error::backend(KeyTaken(key)),
                None => Error::backend(super::Aborted),
            });
        }
        self.ensure_begun().await?;
        let tenant = self.tenant_uuid();
        let completed_at = crate::domain::truncate_to_micros(completed_at);
        let guard = super::Detach(Some(
            self.conn
                .take()
                .ok_or_else(|| Error::backend(super::Finished))?,
        ));
        let Some(conn) = guard.conn() else {
            return Err(Error::backend(super::Finished));
        };
        let statement = match conn.prepare_cached(COMPLETE_OR_FAIL).await {
            Ok(s) => s,
            Err(e) => {
                // Nothing was sent but the prepare: end the transaction.
                let rolled_back = conn.batch_execute("ROLLBACK").await.is_ok();
                if rolled_back {
                    guard.release();
                }
                return Err(error::db(e));
            }
        };
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [
            &tenant,
            &source.as_str(),
            &key.as_str(),
            &result.status(),
            result.value(),
            &completed_at,
        ];
        let (updated, committed) = futures_util::future::join(
            conn.query(&statement, &params),
            conn.batch_execute("COMMIT"),
        )
        .await;
        match committed {
            Ok(()) => guard.release(),
            Err(e) => {
                // The server answered: the connection is idle again.
                if e.as_db_error().is_some() {
                    guard.release();
                }
                return Err(updated.err().map_or_else(|| error::db(e), error::db));
            }
        }
        match updated {
            Ok(rows) => match rows.first() {
                Some(row) => record(row),
                None => Err(Error::backend(NotClaimed(format!("{source}:{key}")))),
            },
            Err(e) if e.code() == Some(&SqlState::DIVISION_BY_ZERO) => {
                Err(Error::backend(NotClaimed(format!("{source}:{key}"))))
            }
            // The COMMIT rolled the transaction back.
            Err(e) => Err(error::db(e)),
        }
    }

    pub(super) async fn idempotency_get(
        &mut self,
        source: &IdempotencySource,
        key: &IdempotencyKey,
    ) -> Result<Option<IdempotencyRecord>> {
        let tenant = self.tenant_uuid();
        self.query_opt(GET, &[&tenant, &source.as_str(), &key.as_str()])
            .await?
            .as_ref()
            .map(record)
            .transpose()
    }

    pub(super) async fn idempotency_list(
        &mut self,
        source: &IdempotencySource,
        page: &PageRequest,
    ) -> Result<Page<IdempotencyRecord>> {
        let limit = page.checked_limit()?;
        let after: Option<ListKey> = page.position()?;
        let tenant = self.tenant_uuid();
        let fetch = limit as i64 + 1;
        let rows = match after {
            None => {
                self.query(LIST, &[&tenant, &source.as_str(), &fetch])
                    .await?
            }
            Some((micros, key)) => {
                let at = chrono::DateTime::from_timestamp_micros(micros).ok_or_else(|| {
                    Error::from(FieldError::new(
                        "cursor",
                        "invalid_format",
                        "is not a cursor of this list",
                    ))
                })?;
                self.query(LIST_AFTER, &[&tenant, &source.as_str(), &at, &key, &fetch])
                    .await?
            }
        };
        let items = rows.iter().map(record).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, limit, |r| {
            (r.created_at.timestamp_micros(), r.key.as_str().to_string())
        }))
    }

    pub(super) async fn idempotency_purge(&mut self, now: Timestamp, limit: u32) -> Result<u64> {
        let tenant = self.tenant_uuid();
        self.execute(PURGE, &[&tenant, &now, &i64::from(limit)])
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_select_lists_name_the_same_columns() {
        for sql in [GET, COMPLETE, LIST, LIST_AFTER] {
            assert!(sql.contains(COLUMNS), "{sql}");
        }
    }

    #[test]
    fn a_lock_timeout_is_never_zero_which_would_mean_no_limit() {
        assert_eq!(lock_timeout(WaitPolicy::NoWait), "1ms");
        assert_eq!(
            lock_timeout(WaitPolicy::Wait(std::time::Duration::ZERO)),
            "1ms"
        );
        assert_eq!(
            lock_timeout(WaitPolicy::Wait(std::time::Duration::from_secs(10))),
            "10000ms"
        );
    }
}
