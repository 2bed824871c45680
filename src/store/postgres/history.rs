//! The audit history on PostgreSQL: triggers
//! (`migrations/0002_history.sql`) write the versions; this module reads
//! them, purges them and erases a contact's personal data from them.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_postgres::{Row, types::ToSql};
use uuid::Uuid;

use super::{
    contacts::{ContactUpdate, UPDATE_CONTACT},
    error,
    transaction::{PgTransaction, cursor_time, now},
};
use crate::{
    domain::{Contact, ContactId, Timestamp, check_timestamp, check_timestamps},
    error::{Entity, Error, Result},
    history::{
        self, FieldChange, FieldQuery, HistoryEntity, HistoryEntry, HistoryKey, Operation,
        erased_values,
    },
    store::{CursorList, HistoryTx, Page, PageRequest},
};

macro_rules! history_select {
    () => {
        "SELECT entity_kind, entity_id, operation, valid_from, valid_to, data, diff, actor, \
         reason, request_id, idempotency_key FROM history"
    };
}

const ENTITY_HISTORY: &str = concat!(
    history_select!(),
    " WHERE tenant_id = $1 AND entity_id = $2 AND entity_kind = $3",
    " ORDER BY valid_from DESC LIMIT $4"
);
const ENTITY_HISTORY_AFTER: &str = concat!(
    history_select!(),
    " WHERE tenant_id = $1 AND entity_id = $2 AND entity_kind = $3 AND valid_from < $5",
    " ORDER BY valid_from DESC LIMIT $4"
);
const AS_OF: &str = concat!(
    history_select!(),
    " WHERE tenant_id = $1 AND entity_id = $2 AND valid_from <= $3",
    " ORDER BY valid_from DESC LIMIT 1"
);
const FIELD_CHANGES: &str = concat!(
    history_select!(),
    " WHERE tenant_id = $1 AND entity_kind = $2 AND diff ? $3",
    " AND ($4::timestamptz IS NULL OR (valid_from, entity_id) < ($4, $5::uuid))",
    " ORDER BY valid_from DESC, entity_id DESC LIMIT $6"
);
const FIELD_CHANGES_OF: &str = concat!(
    history_select!(),
    " WHERE tenant_id = $1 AND entity_kind = $2 AND diff ? $3",
    " AND ($4::timestamptz IS NULL OR (valid_from, entity_id) < ($4, $5::uuid))",
    " AND entity_id = $7",
    " ORDER BY valid_from DESC, entity_id DESC LIMIT $6"
);
const BETWEEN: &str = concat!(
    history_select!(),
    " WHERE tenant_id = $1 AND valid_from >= $2 AND valid_from < $3",
    " ORDER BY valid_from, entity_id LIMIT $4"
);
const BETWEEN_AFTER: &str = concat!(
    history_select!(),
    " WHERE tenant_id = $1 AND valid_from >= $2 AND valid_from < $3",
    " AND (valid_from, entity_id) > ($5, $6)",
    " ORDER BY valid_from, entity_id LIMIT $4"
);
/// The versions a purge before `$2` removes: closed before it, or
/// tombstones written before it.
const PURGE: &str = "DELETE FROM history WHERE tenant_id = $1 \
     AND (valid_to < $2 OR (operation = 'deleted' AND valid_from < $2))";
/// Marks the next writes as an erasure for the history trigger, and ends
/// the mark: `SET LOCAL`, which a distributed PostgreSQL passes on to its
/// workers, where the trigger runs.
const MARK_ERASURE: &str = "SET LOCAL crm.history_operation TO 'erased'";
const UNMARK_ERASURE: &str = "SET LOCAL crm.history_operation TO ''";
const SCRUB: &str = "UPDATE history SET \
     data = data || $3::jsonb, \
     diff = (SELECT coalesce(jsonb_object_agg(key, CASE WHEN $3::jsonb ? key \
                 THEN jsonb_build_object('old', $3::jsonb -> key, 'new', $3::jsonb -> key) \
                 ELSE value END), '{}'::jsonb) \
             FROM jsonb_each(diff)) \
     WHERE tenant_id = $1 AND entity_id = $2 AND entity_kind = 'contact'";

/// The fixed statements of this file, for [`super::statements`].
pub(super) const STATEMENTS: &[(&str, &str)] = super::statements::listed![
    ENTITY_HISTORY,
    ENTITY_HISTORY_AFTER,
    AS_OF,
    FIELD_CHANGES,
    FIELD_CHANGES_OF,
    BETWEEN,
    BETWEEN_AFTER,
    PURGE,
    MARK_ERASURE,
    UNMARK_ERASURE,
    SCRUB,
];

fn bad_row(what: &str) -> Error {
    Error::backend(format!("a history row holds {what}"))
}

fn entry(row: &Row) -> Result<HistoryEntry> {
    let kind: String = row.try_get(0).map_err(error::db)?;
    let id: Uuid = row.try_get(1).map_err(error::db)?;
    let operation: String = row.try_get(2).map_err(error::db)?;
    let valid_from: DateTime<Utc> = row.try_get(3).map_err(error::db)?;
    let valid_to: Option<DateTime<Utc>> = row.try_get(4).map_err(error::db)?;
    let values: serde_json::Value = row.try_get(5).map_err(error::db)?;
    let diff: serde_json::Value = row.try_get(6).map_err(error::db)?;
    let diff: BTreeMap<String, FieldChange> =
        serde_json::from_value(diff).map_err(|_| bad_row("a malformed diff"))?;
    Ok(HistoryEntry {
        entity: HistoryEntity::new(
            history::EntityKind::parse(&kind).ok_or_else(|| bad_row("an unknown kind"))?,
            id,
        ),
        operation: Operation::parse(&operation).ok_or_else(|| bad_row("an unknown operation"))?,
        valid_from,
        valid_to,
        values,
        diff,
        actor: row.try_get(7).map_err(error::db)?,
        reason: row.try_get(8).map_err(error::db)?,
        request_id: row.try_get(9).map_err(error::db)?,
        idempotency_key: row.try_get(10).map_err(error::db)?,
    })
}

fn entries(rows: &[Row]) -> Result<Vec<HistoryEntry>> {
    rows.iter().map(entry).collect()
}

#[async_trait]
impl HistoryTx for PgTransaction {
    async fn entity_history(
        &mut self,
        entity: HistoryEntity,
        page: &PageRequest,
    ) -> Result<Page<HistoryEntry>> {
        let limit = page.checked_limit()?;
        let after: Option<i64> = page.position(CursorList::entity_history(&entity))?;
        let (tenant, id, kind) = (self.tenant_uuid(), entity.id(), entity.kind().as_str());
        let fetch = limit as i64 + 1;
        let rows = match after {
            None => {
                self.query(ENTITY_HISTORY, &[&tenant, &id, &kind, &fetch])
                    .await?
            }
            Some(micros) => {
                let at = cursor_time(micros)?;
                self.query(ENTITY_HISTORY_AFTER, &[&tenant, &id, &kind, &fetch, &at])
                    .await?
            }
        };
        Ok(Page::from_overfetch(
            entries(&rows)?,
            limit,
            CursorList::entity_history(&entity),
            |e| e.valid_from.timestamp_micros(),
        ))
    }

    async fn entity_as_of(
        &mut self,
        entity: HistoryEntity,
        at: Timestamp,
    ) -> Result<Option<HistoryEntry>> {
        let at = check_timestamp("at", at)?;
        let (tenant, id) = (self.tenant_uuid(), entity.id());
        let row = self.query_opt(AS_OF, &[&tenant, &id, &at]).await?;
        Ok(row
            .map(|r| entry(&r))
            .transpose()?
            .filter(|e| e.entity == entity && !e.is_tombstone() && e.is_valid_at(at)))
    }

    async fn field_changes(&mut self, q: &FieldQuery) -> Result<Page<HistoryEntry>> {
        q.check()?;
        let limit = q.page.checked_limit()?;
        let after: Option<HistoryKey> = q.page.position(CursorList::field_changes(q))?;
        let at = after.map(|(t, _)| cursor_time(t)).transpose()?;
        let after_id = after.map(|(_, id)| id);
        let (tenant, kind, fetch) = (self.tenant_uuid(), q.kind.as_str(), limit as i64 + 1);
        let mut params: Vec<&(dyn ToSql + Sync)> =
            vec![&tenant, &kind, &q.field, &at, &after_id, &fetch];
        let sql = match &q.entity {
            Some(id) => {
                params.push(id);
                FIELD_CHANGES_OF
            }
            None => FIELD_CHANGES,
        };
        let rows = self.query(sql, &params).await?;
        Ok(Page::from_overfetch(
            entries(&rows)?,
            limit,
            CursorList::field_changes(q),
            |e| (e.valid_from.timestamp_micros(), e.entity.id()),
        ))
    }

    async fn changes_between(
        &mut self,
        from: Timestamp,
        until: Timestamp,
        page: &PageRequest,
    ) -> Result<Page<HistoryEntry>> {
        let [from, until] = check_timestamps([("from", from), ("until", until)])?;
        let limit = page.checked_limit()?;
        let after: Option<HistoryKey> = page.position(CursorList::tenant_changes(from, until))?;
        let (tenant, fetch) = (self.tenant_uuid(), limit as i64 + 1);
        let rows = match after {
            None => {
                self.query(BETWEEN, &[&tenant, &from, &until, &fetch])
                    .await?
            }
            Some((micros, id)) => {
                let at = cursor_time(micros)?;
                self.query(BETWEEN_AFTER, &[&tenant, &from, &until, &fetch, &at, &id])
                    .await?
            }
        };
        Ok(Page::from_overfetch(
            entries(&rows)?,
            limit,
            CursorList::tenant_changes(from, until),
            |e| (e.valid_from.timestamp_micros(), e.entity.id()),
        ))
    }

    async fn purge_history(&mut self, before: Timestamp) -> Result<u64> {
        let before = check_timestamp("before", before)?;
        let tenant = self.tenant_uuid();
        self.begin_atomic().await?;
        let purged: Result<u64> = async {
            // The versions' events stay in the feed (the trigger
            // `history_keep_events` copies them, for the transactions
            // whose markers it sees): no feed purge of the tenant runs
            // meanwhile, which would miss the copies and leave them behind.
            let (a, b) = super::feed::purge_lock_key(tenant);
            self.execute(super::locks::ADVISORY_XACT_LOCK, &[&a, &b])
                .await?;
            let n = self.execute(PURGE, &[&tenant, &before]).await?;
            // The merges of that time lose their snapshots with the
            // losers' tombstones.
            self.execute(super::merges::CLEAR_PURGED_MERGES, &[&tenant, &before])
                .await?;
            Ok(n)
        }
        .await;
        self.end_atomic(purged).await
    }

    async fn erase_contact(&mut self, id: ContactId) -> Result<Contact> {
        // Several statements: under the operation's savepoint, so that a
        // failure leaves none of them behind.
        self.begin_atomic().await?;
        let erased: Result<Contact> = async {
            let current = self.lock_contact(id).await?;
            let Some(next) = crate::store::shared::erased(&current, now())? else {
                return Ok(current);
            };
            let tenant = self.tenant_uuid();
            let update = ContactUpdate::new(tenant, &next);
            self.simple(MARK_ERASURE).await?;
            let written = self.execute(UPDATE_CONTACT, &update.params()).await?;
            self.simple(UNMARK_ERASURE).await?;
            if written != 1 {
                return Err(Error::not_found(Entity::Contact, id));
            }
            let placeholders = serde_json::Value::Object(erased_values(id));
            self.execute(SCRUB, &[&tenant, &id.as_uuid(), &placeholders])
                .await?;
            // The merge journal keeps no personal data of an erased person.
            self.clear_merges_of(id).await?;
            Ok(next)
        }
        .await;
        self.end_atomic(erased).await
    }
}
