//! The storage step of the idempotency guard ([`IdempotencyTx`]); host
//! code uses [`IdempotencyGuard`](crate::idempotency::IdempotencyGuard).

use async_trait::async_trait;

use crate::{
    domain::*,
    error::{Error, Result},
};

/// Idempotency records of inbound events, for
/// [`IdempotencyGuard`](crate::idempotency::IdempotencyGuard). Part of
/// [`Transaction`](crate::Transaction).
#[async_trait]
pub trait IdempotencyTx: Send {
    /// Claims an inbound event's key (tenant, source, key) for this
    /// transaction: the storage step of
    /// [`IdempotencyGuard`](crate::idempotency::IdempotencyGuard), which is
    /// what host code uses.
    ///
    /// [`Claim::Claimed`](Claim::Claimed) when no
    /// record holds the key, or only an expired one (`expires_at <=
    /// claim.now`, to be replaced): this transaction then holds the key
    /// until it ends, and [`complete_idempotency_key`](Self::complete_idempotency_key)
    /// stores its record (`created_at = claim.now`) with the outcome; a
    /// rollback leaves the key as it was. Whether a claimed key shows a
    /// pending record to [`get_idempotency_record`](Self::get_idempotency_record)
    /// in the claiming transaction is the backend's affair.
    /// [`Claim::Existing`](Claim::Existing) with the
    /// record when a record that has not expired holds it. Never a
    /// check-then-insert race: while another transaction holds the key, the
    /// claim waits for it to end as `claim.wait` allows.
    ///
    /// Errors: [`Error::KeyInUse`] when the wait runs out (the transaction
    /// may then be unusable: roll it back).
    async fn claim_idempotency_key(&mut self, claim: &IdempotencyClaim) -> Result<Claim>;

    /// Claims a key like [`claim_idempotency_key`](Self::claim_idempotency_key),
    /// but lets the backend send the claim with this transaction's first
    /// statement, in the same round trip. A backend that does answers
    /// `Ok(None)`, and [`resolve_idempotency_claim`](Self::resolve_idempotency_claim)
    /// tells later what the claim found; one that does not (the default)
    /// claims at once and answers `Ok(Some(claim))`.
    ///
    /// While the claim is deferred, the first statement runs before the
    /// caller knows whether the key is free. When the claim finds it taken
    /// (or fails), the operation that carried it returns an error, the
    /// transaction refuses everything but a rollback, and nothing it did
    /// can commit.
    ///
    /// Errors: those of `claim_idempotency_key`, when claiming at once.
    async fn defer_idempotency_claim(&mut self, claim: &IdempotencyClaim) -> Result<Option<Claim>> {
        self.claim_idempotency_key(claim).await.map(Some)
    }

    /// What the claim deferred by [`defer_idempotency_claim`](Self::defer_idempotency_claim)
    /// found, sending it now if no statement took it along.
    ///
    /// Errors: those of [`claim_idempotency_key`](Self::claim_idempotency_key);
    /// [`Error::Backend`] when no claim is deferred (the default, for
    /// backends that never defer).
    async fn resolve_idempotency_claim(&mut self) -> Result<Claim> {
        Err(Error::backend(
            "this transaction has no deferred idempotency claim",
        ))
    }

    /// Stores the outcome of a key this transaction claimed, stamping
    /// `completed_at`; returns the record.
    ///
    /// Errors: [`Error::Backend`] when this transaction holds no pending
    /// claim on the key.
    async fn complete_idempotency_key(
        &mut self,
        source: &IdempotencySource,
        key: &IdempotencyKey,
        result: &StoredResult,
        completed_at: Timestamp,
    ) -> Result<IdempotencyRecord>;

    /// The record of a key, expired or not, until it is purged.
    async fn get_idempotency_record(
        &mut self,
        source: &IdempotencySource,
        key: &IdempotencyKey,
    ) -> Result<Option<IdempotencyRecord>>;

    /// The records of one source, newest first (`created_at`, then key in
    /// code-point order, descending), expired ones included until purged.
    ///
    /// Errors: [`Error::Validation`] on `limit` or `cursor`.
    async fn list_idempotency_records(
        &mut self,
        source: &IdempotencySource,
        page: &PageRequest,
    ) -> Result<Page<IdempotencyRecord>>;

    /// Deletes up to `limit` of the tenant's records that expired at `now`
    /// (`expires_at <= now`), the longest expired first; returns how many.
    async fn purge_idempotency_records(&mut self, now: Timestamp, limit: u32) -> Result<u64>;
}
