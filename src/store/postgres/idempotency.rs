//! Idempotency keys on PostgreSQL: the table `idempotency_keys`
//! (`migrations/0003_idempotency.sql`), primary key
//! `(tenant_id, source, key)`.
//!
//! **Claiming** a key first reads its record: a stored result that has not
//! expired is replayed at once, with no lock (schema 15,
//! `crm_idempotency_settled_record`). Otherwise the claim takes a
//! transaction-level advisory lock derived from
//! (tenant, source, key), waiting for a transaction that holds it at most
//! as long as the claim may wait (`lock_timeout`, set transaction-locally
//! for the wait; a timeout, 55P03, is [`Error::KeyInUse`]), and then reads
//! the key's record through `crm_idempotency_record` (created with the
//! table), whose query takes its snapshot after the lock is granted: it
//! sees the record of a holder that committed while the claim waited. No
//! record, or an expired one, and the key is this transaction's; a record
//! that has not expired is replayed. Nothing is written by a claim. All of
//! it is one statement, [`CLAIM`].
//!
//! **Completing** the key writes its record once, with the result: a plain
//! `INSERT` (or, over an expired record, an upsert that replaces it), its
//! values bound as parameters, pipelined with `COMMIT` in one round trip.
//! The primary key still refuses a second record, should anything write
//! one without the lock.
//!
//! The guard **defers** its claim ([`PgTransaction::defer_claim`]): the
//! claim goes out with the transaction's first statement, after `BEGIN` and
//! the settings, in the same round trip, and its
//! answer is read before that statement's. When the key is taken, the
//! statement's effects are rolled back with the rest and the statement
//! reports [`KeyTaken`](super::idempotency_claim::KeyTaken). So a guarded
//! transaction makes as many round trips as the same work unguarded, and
//! one statement more: the record's insert, which goes with `COMMIT` in the
//! same round trip.
//!
//! The advisory lock is a pair of 32-bit keys (PostgreSQL's two-key form),
//! the first 64 bits of a SHA-256 of the tenant, source and key: two keys
//! that collide only wait for each other; the record's primary key decides.

use async_trait::async_trait;
use tokio_postgres::types::ToSql;

use super::{
    error,
    idempotency_claim::{
        CLAIM, CLAIM_RECORD, ClaimAnswer, ClaimState, ClaimValues, NoDeferredClaim, NotSent,
        claim_answer, claim_error, record, scoped,
    },
    transaction::PgTransaction,
};
use crate::{
    domain::{TenantId, Timestamp, check_timestamp},
    error::{Error, FieldError, Result},
    idempotency::{
        Claim, IdempotencyClaim, IdempotencyKey, IdempotencyRecord, IdempotencySource, StoredResult,
    },
    store::{CursorList, IdempotencyTx, Page, PageRequest},
};

#[cfg(test)]
const COLUMNS: &str = "tenant_id, source, key, fingerprint, status, result, created_at, \
                       completed_at, expires_at";

const GET: &str = "SELECT tenant_id, source, key, fingerprint, status, result, created_at, \
     completed_at, expires_at FROM idempotency_keys \
     WHERE tenant_id = $1 AND source = $2 AND key = $3";
/// The record of a completed claim (its values are the caller's: nothing
/// is returned).
pub(super) const STORE: &str = "INSERT INTO idempotency_keys \
     (tenant_id, source, key, fingerprint, status, result, created_at, completed_at, expires_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
/// [`STORE`] over an expired record, which it replaces (or a purge deleted
/// meanwhile). It fails (division by zero) when a record that has not
/// expired holds the key after all, so that a `COMMIT` pipelined after it
/// rolls back. (The `WHERE` makes PostgreSQL compute the division, which it
/// skips for an unused column.)
pub(super) const STORE_OVER_EXPIRED: &str = "WITH done AS (INSERT INTO idempotency_keys \
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

/// The fixed statements of this file, for [`super::statements`].
pub(super) const STATEMENTS: &[(&str, &str)] =
    super::statements::listed![GET, STORE, STORE_OVER_EXPIRED, LIST, LIST_AFTER, PURGE];

/// A key this transaction claimed: what its record is stored with.
#[derive(Debug)]
pub(super) struct Held {
    pub(super) claim: IdempotencyClaim,
    pub(super) over_expired: bool,
}

impl Held {
    /// The record that completing the claim with `result` stores.
    pub(super) fn record(
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

impl PgTransaction {
    /// Takes the claim this transaction holds on `source`/`key`.
    pub(super) fn take_held(
        &mut self,
        source: &IdempotencySource,
        key: &IdempotencyKey,
    ) -> Option<Held> {
        let at = self
            .held_claims
            .iter()
            .position(|h| h.claim.source == *source && h.claim.key == *key)?;
        Some(self.held_claims.swap_remove(at))
    }
}

#[async_trait]
impl IdempotencyTx for PgTransaction {
    async fn claim_idempotency_key(&mut self, claim: &IdempotencyClaim) -> Result<Claim> {
        let claim = &claim.checked()?;
        self.check_open()?;
        if self.defer_claim(claim) {
            // Nothing sent yet: the claim goes with BEGIN, now.
            return self.resolve_idempotency_claim().await;
        }
        if self.pending_begin.is_some() {
            // Another claim is deferred: BEGIN goes first, with it, so that
            // this claim's lock is taken inside the transaction.
            self.ensure_begun().await?;
        }
        // The transaction has sent statements already: the claim goes on
        // its own.
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

    async fn defer_idempotency_claim(&mut self, claim: &IdempotencyClaim) -> Result<Option<Claim>> {
        let claim = claim.checked()?;
        if self.defer_claim(&claim) {
            Ok(None)
        } else {
            self.claim_idempotency_key(&claim).await.map(Some)
        }
    }

    async fn resolve_idempotency_claim(&mut self) -> Result<Claim> {
        // Sent now if no statement took it along.
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

    async fn complete_idempotency_key(
        &mut self,
        source: &IdempotencySource,
        key: &IdempotencyKey,
        result: &StoredResult,
        completed_at: Timestamp,
    ) -> Result<IdempotencyRecord> {
        let completed_at = check_timestamp("completed_at", completed_at)?;
        result.check()?;
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

    async fn get_idempotency_record(
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

    async fn list_idempotency_records(
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

    async fn purge_idempotency_records(&mut self, now: Timestamp, limit: u32) -> Result<u64> {
        let now = check_timestamp("now", now)?;
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
}
