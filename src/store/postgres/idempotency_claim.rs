//! The claim of an idempotency key on PostgreSQL (see
//! [`super::idempotency`] for how claiming and completing work): the
//! [`CLAIM`] statement and its parameters, the key's advisory lock, what a
//! claim found, and the state of a claim deferred to the transaction's
//! first statement, which [`PgTransaction`]'s statement helpers send and
//! settle. Also the reading of stored records, as rows and as the JSON of
//! `crm_idempotency_record`.

use serde_json::Value;

use tokio_postgres::{Row, error::SqlState, types::ToSql};
use uuid::Uuid;

use super::{error, idempotency::Held, locks::advisory_key, transaction::PgTransaction};
use crate::{
    domain::{TenantId, Timestamp},
    error::{Error, FieldError, Result},
    idempotency::{
        Fingerprint, IdempotencyClaim, IdempotencyKey, IdempotencyRecord, IdempotencySource,
        StoredResult, WaitPolicy, key_in_use,
    },
};

/// The claim: read the key's record with `crm_idempotency_settled_record`
/// (`0015_idempotency_settled.sql`); when it is settled (a stored result,
/// succeeded or failed, that has not expired at the claim's time `$7`,
/// microseconds since the Unix epoch, judged as
/// [`IdempotencyRecord::is_expired`] judges it), that is the answer, and
/// no lock is taken. Otherwise take the key's advisory lock, waiting at
/// most `$1` for a transaction holding it (`lock_timeout`, set
/// transaction-locally and restored right after), then read the record
/// again: `crm_idempotency_record`'s query takes a snapshot after the lock
/// is granted and so sees a holder that committed while the claim waited.
/// The target list is evaluated in order, after the first read (the
/// function in `FROM`, called once). The record, as JSON or null, is
/// column [`CLAIM_RECORD`].
///
/// Why a settled record needs no lock: nothing changes it but a new
/// delivery once it has expired, which claims the key under the lock
/// (the record it read was expired: not settled). Without this, the
/// duplicates of a burst (a sender retrying, fifty deliveries of one
/// event) replayed one at a time, each holding the key's lock for its
/// transaction's round trips, and on a loaded machine the last ones ran
/// out of their wait (`KeyInUse`) although the result had long been
/// stored.
///
/// The lock is an advisory lock of the server the client is connected to:
/// on a distributed PostgreSQL (Citus), of the coordinator (the statement
/// names no table: it is planned there, and the function reads the record
/// from the workers). `lock_timeout` is set with `set_config` because only
/// that server's lock wait reads it.
///
/// A deferred claim goes right after `BEGIN` and the settings, in the same
/// round trip as the transaction's first statement.
///
/// [`IdempotencyRecord::is_expired`]: crate::idempotency::IdempotencyRecord::is_expired
pub(super) const CLAIM: &str = "SELECT \
     set_config('crm.saved_lock_timeout', current_setting('lock_timeout'), true), \
     set_config('lock_timeout', $1::text, true), \
     CASE WHEN p.settled THEN NULL ELSE pg_advisory_xact_lock($2::int4, $3::int4)::text END, \
     set_config('lock_timeout', current_setting('crm.saved_lock_timeout'), true), \
     CASE WHEN p.settled THEN p.record \
          ELSE crm_idempotency_record($4::uuid, $5::text, $6::text) END \
     FROM crm_idempotency_settled_record($4::uuid, $5::text, $6::text, $7::int8) AS p";

/// The fixed statements of this file, for [`super::statements`].
pub(super) const STATEMENTS: &[(&str, &str)] = super::statements::listed![CLAIM];

/// The column of [`CLAIM`] that holds the record.
pub(super) const CLAIM_RECORD: usize = 4;

/// `lock_timeout` for a claim under `wait` (`0` would mean no limit).
fn lock_timeout(wait: WaitPolicy) -> String {
    match wait {
        WaitPolicy::NoWait => "1ms".to_string(),
        WaitPolicy::Wait(d) => format!("{}ms", d.as_millis().clamp(1, i32::MAX as u128)),
    }
}

/// The record in the nine columns of a row, in the order of the
/// idempotency module's `SELECT`s.
pub(super) fn record(row: &Row) -> Result<IdempotencyRecord> {
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

/// A record as `crm_idempotency_record` writes it: the
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

/// A claim waiting for the transaction's first statement, which it goes
/// out ahead of: see [`PgTransaction::defer_claim`].
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
#[derive(Debug, thiserror::Error)]
#[error(
    "the idempotency key {0} was not claimed by this transaction (an earlier delivery holds \
     it, or the claim failed); the transaction can only be rolled back"
)]
pub(super) struct KeyTaken(pub(super) String);

/// A deferred claim never reached the server: the statement it was to go
/// with failed before anything was sent.
#[derive(Debug, thiserror::Error)]
#[error(
    "the claim of the idempotency key {0} was not sent: the statement it was to go with \
     failed first"
)]
pub(super) struct NotSent(pub(super) String);

/// Asked for the outcome of a deferred claim when none was made.
#[derive(Debug, thiserror::Error)]
#[error("this transaction has no deferred idempotency claim")]
pub(super) struct NoDeferredClaim;

/// The advisory lock of a key: the first 64 bits of a SHA-256 of the
/// tenant, source and key, as PostgreSQL's two 32-bit lock keys.
fn lock_key(tenant: Uuid, claim: &IdempotencyClaim) -> (i32, i32) {
    advisory_key(
        "crm-core idempotency",
        tenant,
        &[claim.source.as_str(), claim.key.as_str()],
    )
}

/// The parameters of [`CLAIM`] for a claim by a transaction.
pub(super) struct ClaimValues<'a> {
    timeout: String,
    lock: (i32, i32),
    tenant: Uuid,
    source: &'a str,
    key: &'a str,
    /// The claim's time, microseconds since the Unix epoch.
    now: i64,
}

impl<'a> ClaimValues<'a> {
    pub(super) fn new(tx: &PgTransaction, claim: &'a IdempotencyClaim) -> Self {
        let tenant = tx.tenant_uuid();
        ClaimValues {
            timeout: lock_timeout(claim.wait),
            lock: lock_key(tenant, claim),
            tenant,
            source: claim.source.as_str(),
            key: claim.key.as_str(),
            now: claim.now.timestamp_micros(),
        }
    }

    pub(super) fn params(&self) -> [&(dyn ToSql + Sync); 7] {
        [
            &self.timeout,
            &self.lock.0,
            &self.lock.1,
            &self.tenant,
            &self.source,
            &self.key,
            &self.now,
        ]
    }
}

/// `source:key`, as errors name a claimed key.
pub(super) fn scoped(source: &IdempotencySource, key: &IdempotencyKey) -> String {
    format!("{source}:{key}")
}

/// Reads what a claim found for `claim`: the record's JSON in column
/// `at` of its one row.
pub(super) fn claim_answer(
    rows: &[Row],
    at: usize,
    claim: &IdempotencyClaim,
) -> Result<ClaimAnswer> {
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
pub(super) fn claim_error(e: tokio_postgres::Error, claim: &IdempotencyClaim) -> Error {
    if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
        key_in_use(&claim.source, &claim.key)
    } else {
        error::db(e)
    }
}

impl PgTransaction {
    /// Keeps a claim this transaction made, for completing it.
    pub(super) fn hold(&mut self, claim: &IdempotencyClaim, answer: &ClaimAnswer) {
        if let ClaimAnswer::Claimed { over_expired } = answer {
            self.held_claims.push(Held {
                claim: claim.clone(),
                over_expired: *over_expired,
            });
        }
    }

    /// Defers `claim` to the transaction's first statement, which it goes
    /// out ahead of (after `BEGIN` and the settings) in the same round
    /// trip; `false` when a statement was sent already (or a claim is
    /// deferred), and the caller must claim now.
    pub(super) fn defer_claim(&mut self, claim: &IdempotencyClaim) -> bool {
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

    /// Takes the deferred claim to send it, for `PgTransaction::after_begin`.
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

    /// Keeps the answer to a claim sent by `PgTransaction::after_begin`
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

    /// Puts back a deferred claim that `PgTransaction::after_begin` took
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
