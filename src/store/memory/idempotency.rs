//! Idempotency keys in the in-memory store ([`IdempotencyTx`]): per tenant, a map by (source,
//! key) with the two orders the queries walk (newest first per source, by
//! expiry for purging). Every change goes through the transaction's undo
//! log, so a rollback (or a drop, or a panic in a handler) removes a claim.
//!
//! The store serializes transactions, so a claim never meets a key held by
//! another running transaction: a concurrent delivery waits in `begin`
//! instead, and the guard bounds that wait (see [`crate::idempotency`]).

use std::{
    collections::{BTreeSet, HashMap},
    ops::Bound,
};

use async_trait::async_trait;

use super::{MemoryTransaction, Undo};
use crate::{
    domain::{Timestamp, check_timestamp, truncate_to_micros},
    error::Result,
    idempotency::{
        Claim, IdempotencyClaim, IdempotencyKey, IdempotencyRecord, IdempotencySource, StoredResult,
    },
    store::{CursorList, IdempotencyTx, Page, PageRequest, shared},
};

/// A record's identity within its tenant.
pub(super) type RecordKey = (IdempotencySource, IdempotencyKey);

/// The position of a record in a source's list, as stored in cursors:
/// `created_at` in microseconds, then the key.
type ListKey = (i64, String);

/// One tenant's idempotency records and their indexes.
#[derive(Default)]
pub(super) struct Records {
    by_key: HashMap<RecordKey, IdempotencyRecord>,
    recent: BTreeSet<(IdempotencySource, i64, String)>,
    expiry: BTreeSet<(i64, IdempotencySource, IdempotencyKey)>,
}

impl Records {
    /// Replaces (or removes, with `None`) a record, keeping the indexes;
    /// returns the previous value.
    pub(super) fn put(
        &mut self,
        key: RecordKey,
        value: Option<IdempotencyRecord>,
    ) -> Option<IdempotencyRecord> {
        let old = self.by_key.remove(&key);
        if let Some(o) = &old {
            self.recent.remove(&(
                o.source.clone(),
                o.created_at.timestamp_micros(),
                o.key.as_str().to_string(),
            ));
            self.expiry.remove(&(
                o.expires_at.timestamp_micros(),
                o.source.clone(),
                o.key.clone(),
            ));
        }
        if let Some(n) = value {
            self.recent.insert((
                n.source.clone(),
                n.created_at.timestamp_micros(),
                n.key.as_str().to_string(),
            ));
            self.expiry.insert((
                n.expires_at.timestamp_micros(),
                n.source.clone(),
                n.key.clone(),
            ));
            self.by_key.insert(key, n);
        }
        old
    }
}

impl MemoryTransaction {
    fn set_idempotency_record(
        &mut self,
        key: RecordKey,
        value: Option<IdempotencyRecord>,
    ) -> Result<()> {
        let tenant = self.tenant;
        let old = self.data_mut()?.idempotency.put(key.clone(), value);
        self.undo
            .push(Undo::Idempotency(tenant, key, old.map(Box::new)));
        Ok(())
    }

    fn idempotency_record(&self, key: &RecordKey) -> Result<Option<&IdempotencyRecord>> {
        Ok(self.data()?.idempotency.by_key.get(key))
    }
}

#[async_trait]
impl IdempotencyTx for MemoryTransaction {
    async fn claim_idempotency_key(&mut self, claim: &IdempotencyClaim) -> Result<Claim> {
        let claim = claim.checked()?;
        let key = (claim.source.clone(), claim.key.clone());
        if let Some(existing) = self.idempotency_record(&key)?
            && !existing.is_expired(claim.now)
        {
            return Ok(Claim::Existing(existing.clone()));
        }
        let record = IdempotencyRecord {
            tenant_id: self.tenant,
            source: claim.source.clone(),
            key: claim.key.clone(),
            fingerprint: claim.fingerprint.clone(),
            result: None,
            created_at: truncate_to_micros(claim.now),
            completed_at: None,
            expires_at: truncate_to_micros(claim.expires_at),
        };
        self.set_idempotency_record(key, Some(record))?;
        Ok(Claim::Claimed)
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
        let rk = (source.clone(), key.clone());
        let mut record = match self.idempotency_record(&rk)? {
            Some(r) if r.result.is_none() => r.clone(),
            _ => return Err(shared::not_claimed(source, key)),
        };
        record.result = Some(result.clone());
        record.completed_at = Some(truncate_to_micros(completed_at));
        self.set_idempotency_record(rk, Some(record.clone()))?;
        Ok(record)
    }

    async fn get_idempotency_record(
        &mut self,
        source: &IdempotencySource,
        key: &IdempotencyKey,
    ) -> Result<Option<IdempotencyRecord>> {
        Ok(self
            .idempotency_record(&(source.clone(), key.clone()))?
            .cloned())
    }

    async fn list_idempotency_records(
        &mut self,
        source: &IdempotencySource,
        page: &PageRequest,
    ) -> Result<Page<IdempotencyRecord>> {
        let limit = page.checked_limit()?;
        let after: Option<ListKey> = page.position(CursorList::idempotency_records(source))?;
        let records = &self.data()?.idempotency;
        let lower = Bound::Included((source.clone(), i64::MIN, String::new()));
        let upper = match after {
            Some((t, k)) => Bound::Excluded((source.clone(), t, k)),
            None => Bound::Excluded((source.clone(), i64::MAX, String::new())),
        };
        let items: Vec<IdempotencyRecord> = records
            .recent
            .range((lower, upper))
            .rev()
            .filter_map(|(_, t, k)| {
                let key = IdempotencyKey::parse(k).ok()?;
                let r = records.by_key.get(&(source.clone(), key))?;
                (r.created_at.timestamp_micros() == *t).then_some(r)
            })
            .take(limit + 1)
            .cloned()
            .collect();
        Ok(Page::from_overfetch(
            items,
            limit,
            CursorList::idempotency_records(source),
            |r| (r.created_at.timestamp_micros(), r.key.as_str().to_string()),
        ))
    }

    async fn purge_idempotency_records(&mut self, now: Timestamp, limit: u32) -> Result<u64> {
        let now = check_timestamp("now", now)?.timestamp_micros();
        let expired: Vec<RecordKey> = self
            .data()?
            .idempotency
            .expiry
            .iter()
            .take_while(|(t, _, _)| *t <= now)
            .take(limit as usize)
            .map(|(_, s, k)| (s.clone(), k.clone()))
            .collect();
        let n = expired.len() as u64;
        for key in expired {
            self.set_idempotency_record(key, None)?;
        }
        Ok(n)
    }
}
