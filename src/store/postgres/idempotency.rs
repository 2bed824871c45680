//! Idempotency keys on PostgreSQL: the table `idempotency_keys` (migration
//! 3), primary key `(tenant_id, source, key)`.
//!
//! **Claiming** a key takes a transaction-level advisory lock derived from
//! (tenant, source, key), waiting for a transaction that holds it at most
//! as long as the claim may wait (`lock_timeout`, set transaction-locally
//! for the wait; a timeout, 55P03, is [`Error::KeyInUse`]), and then reads
//! the key's record through `crm_idempotency_record` (migration 3), whose
//! query takes its snapshot after the lock is granted: it sees the record
//! of a holder that committed while the claim waited. No record, or an
//! expired one, and the key is this transaction's; a record that has not
//! expired is replayed. Nothing is written by a claim. All of it is one
//! statement, [`CLAIM`], which also sets the transaction's settings.
//!
//! **Completing** the key writes its record once, with the result: a plain
//! `INSERT` (or, over an expired record, an upsert that replaces it), its
//! values bound as parameters, pipelined with `COMMIT`. The primary key still refuses a second record,
//! should anything write one without the lock.
//!
//! The guard **defers** its claim ([`PgTransaction::idempotency_defer`]):
//! the claim goes out with the transaction's first statement, in place of
//! the settings statement that follows `BEGIN`, in the same round trip, and
//! its answer is read before that statement's. When the key is taken, the statement's
//! effects are rolled back with the rest and the statement reports
//! [`KeyTaken`]. So a guarded transaction makes as many round trips as the
//! same work unguarded, and the same number of statements but one: the
//! record's insert, sent with `COMMIT` in one message.
//!
//! The advisory lock is a pair of 32-bit keys (PostgreSQL's two-key form),
//! the first 64 bits of a SHA-256 of the tenant, source and key: two keys
//! that collide only wait for each other; the record's primary key decides.

use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio_postgres::{Row, error::SqlState, types::ToSql};
use uuid::Uuid;

use super::{PgTransaction, error};
use crate::{
    domain::{TenantId, Timestamp},
    error::{Error, FieldError, Result},
    idempotency::{
        Claim, Fingerprint, IdempotencyClaim, IdempotencyKey, IdempotencyRecord, IdempotencySource,
        StoredResult, WaitPolicy, key_in_use,
    },
    store::{CursorList, Page, PageRequest},
};

#[cfg(test)]
const COLUMNS: &str = "tenant_id, source, key, fingerprint, status, result, created_at, \
                       completed_at, expires_at";

/// The claim, with the transaction's settings (its parameters are the
/// five of `SETTINGS`, then six of its own): set the settings, take the
/// key's advisory lock, waiting at most `$6` for a transaction holding it
/// (`lock_timeout`, set transaction-locally and restored right after), then
/// read the key's record with `crm_idempotency_record` (migration 3), whose
/// query takes a snapshot after the lock is granted and so sees a holder
/// that committed while the claim waited. The target list is evaluated in
/// order. The record, as JSON or null, is column [`CLAIM_RECORD`].
///
/// A deferred claim goes right after `BEGIN` in place of the settings
/// statement; a claim made later sets the same settings again, harmlessly.
pub(super) const CLAIM: &str = "SELECT set_config('crm.tenant_id', $1, true), \
     set_config('crm.actor', $2, true), set_config('crm.reason', $3, true), \
     set_config('crm.request_id', $4, true), set_config('crm.idempotency_key', $5, true), \
     set_config('crm.saved_lock_timeout', current_setting('lock_timeout'), true), \
     set_config('lock_timeout', $6::text, true), \
     pg_advisory_xact_lock($7::int4, $8::int4)::text, \
     set_config('lock_timeout', current_setting('crm.saved_lock_timeout'), true), \
     crm_idempotency_record($9::uuid, $10::text, $11::text)";
/// The column of [`CLAIM`] that holds the record.
const CLAIM_RECORD: usize = 9;
const GET: &str = "SELECT tenant_id, source, key, fingerprint, status, result, created_at, \
     completed_at, expires_at FROM idempotency_keys \
     WHERE tenant_id = $1 AND source = $2 AND key = $3";
/// The record of a completed claim (its values are the caller's: nothing
/// is returned).
const STORE: &str = "INSERT INTO idempotency_keys \
     (tenant_id, source, key, fingerprint, status, result, created_at, completed_at, expires_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
/// [`STORE`] over an expired record, which it replaces (or a purge deleted
/// meanwhile). It fails (division by zero) when a record that has not
/// expired holds the key after all, so that a `COMMIT` pipelined after it
/// rolls back. (The `WHERE` makes PostgreSQL compute the division, which it
/// skips for an unused column.)
const STORE_OVER_EXPIRED: &str = "WITH done AS (INSERT INTO idempotency_keys \
     (tenant_id, source, key, fingerprint, status, result, created_at, completed_at, expires_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
     ON CONFLICT (tenant_id, source, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, \
     status = EXCLUDED.status, result = EXCLUDED.result, created_at = EXCLUDED.created_at, \
     completed_at = EXCLUDED.completed_at, expires_at = EXCLUDED.expires_at \
     WHERE idempotency_keys.expires_at <= EXCLUDED.created_at RETURNING 1) \
     SELECT 1 / count(*)::int FROM done";
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

/// The position of a record in a source's list: `created_at`, then key.
type ListKey = (i64, String);

/// `lock_timeout` for a claim under `wait` (`0` would mean no limit).
fn lock_timeout(wait: WaitPolicy) -> String {
    match wait {
        WaitPolicy::NoWait => "1ms".to_string(),
        WaitPolicy::Wait(d) => format!("{}ms", d.as_millis().clamp(1, i32::MAX as u128)),
    }
}

/// The record in the nine columns of a row, in [`GET`]'s order.
fn record(row: &Row) -> Result<IdempotencyRecord> {
    record_from(RecordColumns {
        tenant_id: row.try_get(0).map_err(error::db)?,
        source: row.try_get(1).map_err(error::db)?,
        key: row.try_get(2).map_err(error::db)?,
        fingerprint: row.try_get(3).map_err(error::db)?,
        status: row.try_get(4).map_err(error::db)?,
        result: row.try_get(5).map_err(error::db)?,
        created_at: row.try_get(6).map_err(error::db)?,
        completed_at: row.try_get(7).map_err(error::db)?,
        expires_at: row.try_get(8).map_err(error::db)?,
    })
}

/// A record's columns as stored.
#[derive(Debug)]
struct RecordColumns {
    tenant_id: Uuid,
    source: String,
    key: String,
    fingerprint: String,
    status: String,
    result: Option<Value>,
    created_at: Timestamp,
    completed_at: Option<Timestamp>,
    expires_at: Timestamp,
}

/// A record as `crm_idempotency_record` (migration 3) writes it: the
/// columns, timestamps in microseconds since the Unix epoch.
#[derive(Debug, serde::Deserialize)]
struct RecordJson {
    tenant_id: Uuid,
    source: String,
    key: String,
    fingerprint: String,
    status: String,
    result: Option<Value>,
    created_at: i64,
    completed_at: Option<i64>,
    expires_at: i64,
}

/// The record of `crm_idempotency_record`'s JSON. In JSON a stored `null`
/// result and no result look alike; the status tells them apart.
fn record_from_json(json: &str) -> Result<IdempotencyRecord> {
    let r: RecordJson = serde_json::from_str(json).map_err(Error::backend)?;
    let id = format!("{}:{}", r.source, r.key);
    let at = |field: &'static str, micros: i64| {
        chrono::DateTime::from_timestamp_micros(micros).ok_or_else(|| {
            Error::backend(error::InvalidRow {
                table: "idempotency_keys",
                id: id.clone(),
                errors: vec![FieldError::new(
                    field,
                    "out_of_range",
                    format!("{micros} µs since the epoch is not a time"),
                )],
            })
        })
    };
    let created_at = at("created_at", r.created_at)?;
    let completed_at = r.completed_at.map(|m| at("completed_at", m)).transpose()?;
    let expires_at = at("expires_at", r.expires_at)?;
    let result = match r.status.as_str() {
        "pending" => r.result,
        _ => Some(r.result.unwrap_or(Value::Null)),
    };
    record_from(RecordColumns {
        tenant_id: r.tenant_id,
        source: r.source,
        key: r.key,
        fingerprint: r.fingerprint,
        status: r.status,
        result,
        created_at,
        completed_at,
        expires_at,
    })
}

/// Checks a record's columns.
fn record_from(columns: RecordColumns) -> Result<IdempotencyRecord> {
    let RecordColumns {
        tenant_id: tenant,
        source,
        key,
        fingerprint,
        status,
        result,
        created_at,
        completed_at,
        expires_at,
    } = columns;
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

/// What a claim found.
#[derive(Debug)]
pub(super) enum ClaimAnswer {
    /// The key is this transaction's; `over_expired` when an expired
    /// record holds it, which completing replaces.
    Claimed {
        /// An expired record holds the key.
        over_expired: bool,
    },
    /// A record that has not expired holds it.
    Existing(IdempotencyRecord),
}

/// A key this transaction claimed: what its record is stored with.
#[derive(Debug)]
pub(super) struct Held {
    claim: IdempotencyClaim,
    over_expired: bool,
}

impl Held {
    /// The record that completing the claim with `result` stores.
    fn record(
        self,
        tenant: TenantId,
        result: &StoredResult,
        completed_at: Timestamp,
    ) -> IdempotencyRecord {
        IdempotencyRecord {
            tenant_id: tenant,
            source: self.claim.source,
            key: self.claim.key,
            fingerprint: self.claim.fingerprint,
            result: Some(result.clone()),
            created_at: crate::domain::truncate_to_micros(self.claim.now),
            completed_at: Some(completed_at),
            expires_at: crate::domain::truncate_to_micros(self.claim.expires_at),
        }
    }
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
    /// Sent with a statement; the answer of its read, not looked at yet.
    Answered(
        Box<IdempotencyClaim>,
        std::result::Result<Vec<Row>, tokio_postgres::Error>,
    ),
    /// Could not be sent (preparing a statement failed): why.
    NotSent(Box<IdempotencyClaim>, Error),
    /// Looked at: what the claim found, until the guard asks for it.
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

/// A deferred claim never reached the server: the statement it was to go
/// with failed before anything was sent.
#[derive(Debug)]
struct NotSent(String);

impl std::fmt::Display for NotSent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the claim of the idempotency key {} was not sent: the statement it was to go \
             with failed first",
            self.0
        )
    }
}

impl std::error::Error for NotSent {}

/// Asked for the outcome of a deferred claim when none was made.
#[derive(Debug)]
struct NoDeferredClaim;

impl std::fmt::Display for NoDeferredClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("this transaction has no deferred idempotency claim")
    }
}

impl std::error::Error for NoDeferredClaim {}

/// The advisory lock of a key: the first 64 bits of a SHA-256 of the
/// tenant, source and key, as PostgreSQL's two 32-bit lock keys.
fn lock_key(tenant: Uuid, claim: &IdempotencyClaim) -> (i32, i32) {
    let mut hash = Sha256::new();
    hash.update(b"crm-core idempotency\0");
    hash.update(tenant.as_bytes());
    hash.update(claim.source.as_str().as_bytes());
    hash.update([0]);
    hash.update(claim.key.as_str().as_bytes());
    let digest = hash.finalize();
    let word =
        |i: usize| i32::from_be_bytes([digest[i], digest[i + 1], digest[i + 2], digest[i + 3]]);
    (word(0), word(4))
}

/// The parameters of [`CLAIM`] for a claim by a transaction.
pub(super) struct ClaimValues<'a> {
    settings: super::Settings,
    timeout: String,
    lock: (i32, i32),
    tenant: Uuid,
    source: &'a str,
    key: &'a str,
}

impl<'a> ClaimValues<'a> {
    pub(super) fn new(tx: &PgTransaction, claim: &'a IdempotencyClaim) -> Self {
        let tenant = tx.tenant_uuid();
        ClaimValues {
            settings: tx.settings(),
            timeout: lock_timeout(claim.wait),
            lock: lock_key(tenant, claim),
            tenant,
            source: claim.source.as_str(),
            key: claim.key.as_str(),
        }
    }

    pub(super) fn params(&self) -> [&(dyn ToSql + Sync); 11] {
        let [a, b, c, d, e] = self.settings.params();
        [
            a,
            b,
            c,
            d,
            e,
            &self.timeout,
            &self.lock.0,
            &self.lock.1,
            &self.tenant,
            &self.source,
            &self.key,
        ]
    }
}

/// `source:key`, as errors name a claimed key.
fn scoped(source: &IdempotencySource, key: &IdempotencyKey) -> String {
    format!("{source}:{key}")
}

/// Reads what a claim found for `claim`: the record's JSON in column
/// `at` of its one row.
fn claim_answer(rows: &[Row], at: usize, claim: &IdempotencyClaim) -> Result<ClaimAnswer> {
    let Some(row) = rows.first() else {
        return Err(Error::backend(error::InvalidRow {
            table: "idempotency_keys",
            id: scoped(&claim.source, &claim.key),
            errors: vec![FieldError::new(
                "claim",
                "missing",
                "the claim returned no row",
            )],
        }));
    };
    let json: Option<String> = row.try_get(at).map_err(error::db)?;
    let Some(json) = json else {
        return Ok(ClaimAnswer::Claimed {
            over_expired: false,
        });
    };
    let record = record_from_json(&json)?;
    if record.is_expired(claim.now) {
        Ok(ClaimAnswer::Claimed { over_expired: true })
    } else {
        Ok(ClaimAnswer::Existing(record))
    }
}

/// What a failed claim statement means: a lock wait that ran out is
/// [`Error::KeyInUse`].
fn claim_error(e: tokio_postgres::Error, claim: &IdempotencyClaim) -> Error {
    if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
        key_in_use(&claim.source, &claim.key)
    } else {
        error::db(e)
    }
}

impl PgTransaction {
    /// Keeps a claim this transaction made, for completing it.
    fn hold(&mut self, claim: &IdempotencyClaim, answer: &ClaimAnswer) {
        if let ClaimAnswer::Claimed { over_expired } = answer {
            self.held_claims.push(Held {
                claim: claim.clone(),
                over_expired: *over_expired,
            });
        }
    }

    pub(super) async fn idempotency_claim(&mut self, claim: &IdempotencyClaim) -> Result<Claim> {
        self.check_open()?;
        if self.idempotency_defer(claim) {
            // Nothing sent yet: the claim goes with BEGIN, now.
            return self.idempotency_resolve().await;
        }
        if self.pending_begin.is_some() {
            // Another claim is deferred: BEGIN goes first, with it, so that
            // this claim's lock is taken inside the transaction.
            self.ensure_begun().await?;
        }
        self.claim_now(claim).await
    }

    /// Claims in a transaction that has sent statements already.
    async fn claim_now(&mut self, claim: &IdempotencyClaim) -> Result<Claim> {
        let values = ClaimValues::new(self, claim);
        let params = values.params();
        let r = self.raw_query(CLAIM, &params, false).await;
        let answer = match r {
            Ok(rows) => claim_answer(&rows, CLAIM_RECORD, claim)?,
            Err(e) => {
                self.aborted = true;
                return Err(claim_error(e, claim));
            }
        };
        self.hold(claim, &answer);
        Ok(match answer {
            ClaimAnswer::Claimed { .. } => Claim::Claimed,
            ClaimAnswer::Existing(record) => Claim::Existing(record),
        })
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

    /// Keeps the answer to a claim sent by [`PgTransaction::after_begin`]
    /// (`Ok`), or why it could not be sent (`Err`).
    pub(super) fn claim_sent(
        &self,
        claim: Box<IdempotencyClaim>,
        answer: std::result::Result<std::result::Result<Vec<Row>, tokio_postgres::Error>, Error>,
    ) {
        let mut state = self
            .claim
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *state = match answer {
            Ok(answer) => ClaimState::Answered(claim, answer),
            Err(why) => ClaimState::NotSent(claim, why),
        };
    }

    /// Puts back a deferred claim that [`PgTransaction::after_begin`] took
    /// but could not send (preparing the statement it was to go with
    /// failed): it was never made.
    pub(super) fn claim_unsent(&self, claim: Box<IdempotencyClaim>) {
        let mut state = self
            .claim
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *state = ClaimState::Deferred(claim);
    }

    /// Looks at the answer to a deferred claim that went out with the last
    /// round trip, if one did. `None` when there was none, or when the key
    /// is now this transaction's; otherwise the error for the statement
    /// that went with it, and the transaction refuses everything but a
    /// rollback from then on (its statements ran without the key).
    pub(super) fn settle_claim(&mut self) -> Option<Error> {
        let state = self.claim_state();
        let (claim, outcome) = match std::mem::take(state) {
            ClaimState::Answered(claim, Ok(rows)) => {
                let outcome = claim_answer(&rows, CLAIM_RECORD, &claim);
                (claim, outcome)
            }
            ClaimState::Answered(claim, Err(e)) => {
                let outcome = Err(claim_error(e, &claim));
                (claim, outcome)
            }
            ClaimState::NotSent(claim, why) => (claim, Err(why)),
            other => {
                *state = other;
                return None;
            }
        };
        if let Ok(answer) = &outcome {
            self.hold(&claim, answer);
        }
        let claimed = matches!(outcome, Ok(ClaimAnswer::Claimed { .. }));
        let failed = outcome.is_err();
        *self.claim_state() = ClaimState::Settled(outcome);
        if claimed {
            return None;
        }
        if failed {
            // The server aborted the transaction at the claim.
            self.aborted = true;
        }
        let key = scoped(&claim.source, &claim.key);
        self.claim_lost = Some(key.clone());
        Some(Error::backend(KeyTaken(key)))
    }

    /// What the deferred claim found, sending it now if no statement took
    /// it along.
    pub(super) async fn idempotency_resolve(&mut self) -> Result<Claim> {
        let mut sent_alone = None;
        if matches!(self.claim_state(), ClaimState::Deferred(_)) {
            if self.pending_begin.take().is_some() {
                // No statement took it along: it goes now, with BEGIN.
                sent_alone = self.raw_query_all(&[], true).await.err();
            } else if let ClaimState::Deferred(claim) = std::mem::take(self.claim_state()) {
                // The statement that took BEGIN failed before anything was
                // sent (preparing it failed), and the transaction refuses
                // everything since: the claim was never made.
                return Err(Error::retryable(NotSent(scoped(&claim.source, &claim.key))));
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
            ClaimState::Settled(Ok(ClaimAnswer::Claimed { .. })) => Ok(Claim::Claimed),
            ClaimState::Settled(Ok(ClaimAnswer::Existing(record))) => Ok(Claim::Existing(record)),
            ClaimState::Settled(Err(e)) => Err(e),
            _ => Err(Error::backend(NoDeferredClaim)),
        }
    }

    /// Takes the claim this transaction holds on `source`/`key`.
    fn take_held(&mut self, source: &IdempotencySource, key: &IdempotencyKey) -> Option<Held> {
        let at = self
            .held_claims
            .iter()
            .position(|h| h.claim.source == *source && h.claim.key == *key)?;
        Some(self.held_claims.swap_remove(at))
    }

    pub(super) async fn idempotency_complete(
        &mut self,
        source: &IdempotencySource,
        key: &IdempotencyKey,
        result: &StoredResult,
        completed_at: Timestamp,
    ) -> Result<IdempotencyRecord> {
        self.check_open()?;
        let Some(held) = self.take_held(source, key) else {
            return Err(crate::store::shared::not_claimed(source, key));
        };
        let tenant = self.tenant_uuid();
        let completed_at = crate::domain::truncate_to_micros(completed_at);
        let c = &held.claim;
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
        if held.over_expired {
            self.query(STORE_OVER_EXPIRED, &params).await?;
        } else {
            self.execute(STORE, &params).await?;
        }
        Ok(held.record(self.tenant, result, completed_at))
    }

    /// Stores the outcome and commits in one round trip: the `INSERT` and
    /// the `COMMIT` are pipelined. When the insert fails, PostgreSQL turns
    /// the `COMMIT` into a rollback, and the insert's error is returned.
    pub(super) async fn idempotency_complete_and_commit(
        mut self: Box<Self>,
        source: &IdempotencySource,
        key: &IdempotencyKey,
        result: &StoredResult,
        completed_at: Timestamp,
    ) -> Result<IdempotencyRecord> {
        if self.aborted || self.claim_lost.is_some() || self.is_spoiled() {
            // (A lost connection makes `finish` fail, with why.)
            self.finish("ROLLBACK").await?;
            return Err(match self.claim_lost.take() {
                Some(key) => Error::backend(KeyTaken(key)),
                None => Error::backend(super::Aborted),
            });
        }
        self.ensure_begun().await?;
        let Some(held) = self.take_held(source, key) else {
            self.finish("ROLLBACK").await?;
            return Err(crate::store::shared::not_claimed(source, key));
        };
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
        let sql = if held.over_expired {
            STORE_OVER_EXPIRED
        } else {
            STORE
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
        let (stored, committed) = futures_util::join!(
            conn.execute(&statement, &params),
            conn.batch_execute("COMMIT")
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
        let after: Option<ListKey> = page.position(CursorList::idempotency_records(source))?;
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
        Ok(Page::from_overfetch(
            items,
            limit,
            CursorList::idempotency_records(source),
            |r| (r.created_at.timestamp_micros(), r.key.as_str().to_string()),
        ))
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
        for sql in [GET, LIST, LIST_AFTER] {
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

    #[test]
    fn the_lock_key_depends_on_tenant_source_and_key_and_nothing_else() {
        let claim = |source: &str, key: &str| IdempotencyClaim {
            source: IdempotencySource::parse(source).unwrap(),
            key: IdempotencyKey::parse(key).unwrap(),
            fingerprint: Fingerprint::of_json(&serde_json::json!({})),
            now: chrono::Utc::now(),
            expires_at: chrono::Utc::now(),
            wait: WaitPolicy::NoWait,
        };
        let (t1, t2) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let a = lock_key(t1, &claim("stripe", "evt_1"));
        assert_eq!(a, lock_key(t1, &claim("stripe", "evt_1")));
        assert_ne!(a, lock_key(t2, &claim("stripe", "evt_1")));
        assert_ne!(a, lock_key(t1, &claim("hubspot", "evt_1")));
        assert_ne!(a, lock_key(t1, &claim("stripe", "evt_2")));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(
            lock_key(t1, &claim("ab", "c")),
            lock_key(t1, &claim("a", "bc"))
        );
    }
}
