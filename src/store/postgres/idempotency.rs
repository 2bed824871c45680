//! Idempotency keys on PostgreSQL: the table `idempotency_keys` (migration
//! 2), primary key `(tenant_id, source, key)`.
//!
//! A claim is `INSERT … ON CONFLICT DO NOTHING`: when another transaction
//! holds the key, the insert waits for its row lock and then does nothing
//! (it committed) or inserts (it rolled back). The wait is bounded by a
//! transaction-local `lock_timeout` set just for the claim and restored
//! after it, in the same round trip (the statements are pipelined); a
//! timeout (55P03) is [`Error::KeyInUse`]. An expired record is taken over
//! by an `UPDATE … WHERE expires_at <= now`, under the same bound.

use futures_util::try_join;
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

const SET_LOCK_TIMEOUT: &str = "SELECT set_config('crm.saved_lock_timeout', \
     current_setting('lock_timeout'), true), set_config('lock_timeout', $1, true)";
const RESTORE_LOCK_TIMEOUT: &str = "SELECT set_config('lock_timeout', \
     current_setting('crm.saved_lock_timeout'), true)";
const CLAIM: &str = "INSERT INTO idempotency_keys \
     (tenant_id, source, key, fingerprint, status, created_at, expires_at) \
     VALUES ($1, $2, $3, $4, 'pending', $5, $6) \
     ON CONFLICT (tenant_id, source, key) DO NOTHING";
const TAKE_OVER: &str = "UPDATE idempotency_keys SET fingerprint = $4, status = 'pending', \
     result = NULL, created_at = $5, completed_at = NULL, expires_at = $6 \
     WHERE tenant_id = $1 AND source = $2 AND key = $3 AND expires_at <= $5";
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
    let tenant: Uuid = row.try_get(0).map_err(error::db)?;
    let source: String = row.try_get(1).map_err(error::db)?;
    let key: String = row.try_get(2).map_err(error::db)?;
    let fingerprint: String = row.try_get(3).map_err(error::db)?;
    let status: String = row.try_get(4).map_err(error::db)?;
    let result: Option<Value> = row.try_get(5).map_err(error::db)?;
    let created_at: Timestamp = row.try_get(6).map_err(error::db)?;
    let completed_at: Option<Timestamp> = row.try_get(7).map_err(error::db)?;
    let expires_at: Timestamp = row.try_get(8).map_err(error::db)?;
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

impl PgTransaction {
    /// Runs `sql` (an insert or update of one key) under a transaction-local
    /// `lock_timeout`, restoring the previous one after it: three pipelined
    /// statements, one round trip. Returns the rows it changed.
    async fn under_lock_timeout(
        &mut self,
        wait: WaitPolicy,
        sql: &str,
        claim: &IdempotencyClaim,
    ) -> Result<u64> {
        self.check_open()?;
        let timeout = lock_timeout(wait);
        let tenant = self.tenant_uuid();
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [
            &tenant,
            &claim.source.as_str(),
            &claim.key.as_str(),
            &claim.fingerprint.as_str(),
            &claim.now,
            &claim.expires_at,
        ];
        let begin = self.pending_begin.take();
        let result = match self.conn.as_ref() {
            Some(conn) => {
                let prepared = try_join!(
                    conn.prepare_cached(SET_LOCK_TIMEOUT),
                    conn.prepare_cached(sql),
                    conn.prepare_cached(RESTORE_LOCK_TIMEOUT),
                );
                match prepared {
                    Ok((set, write, restore)) => {
                        let set_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] =
                            [&timeout];
                        // A pending BEGIN goes first, in the same round trip.
                        let begun = async {
                            match begin.as_deref() {
                                Some(b) => conn.batch_execute(b).await,
                                None => Ok(()),
                            }
                        };
                        try_join!(
                            begun,
                            conn.query(&set, &set_params),
                            conn.execute(&write, &params),
                            conn.query(&restore, &[]),
                        )
                    }
                    .map(|(_, _, n, _)| n),
                    Err(e) => Err(e),
                }
            }
            None => return Ok(0),
        };
        result.map_err(|e| {
            let lock_timed_out = e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE);
            let mapped = self.failed(e);
            if lock_timed_out {
                key_in_use(&claim.source, &claim.key)
            } else {
                mapped
            }
        })
    }

    pub(super) async fn idempotency_claim(&mut self, claim: &IdempotencyClaim) -> Result<Claim> {
        for _ in 0..CLAIM_ATTEMPTS {
            if self.under_lock_timeout(claim.wait, CLAIM, claim).await? == 1 {
                return Ok(Claim::Claimed);
            }
            match self.idempotency_get(&claim.source, &claim.key).await? {
                // Purged in between: insert again.
                None => continue,
                Some(existing) if !existing.is_expired(claim.now) => {
                    return Ok(Claim::Existing(existing));
                }
                Some(_) => {
                    if self
                        .under_lock_timeout(claim.wait, TAKE_OVER, claim)
                        .await?
                        == 1
                    {
                        return Ok(Claim::Claimed);
                    }
                    // Taken over (or purged) by another transaction: look again.
                }
            }
        }
        Err(key_in_use(&claim.source, &claim.key))
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
        if self.aborted {
            self.finish("ROLLBACK").await?;
            return Err(Error::backend(super::Aborted));
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
