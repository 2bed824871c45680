//! External ids and sync windows on PostgreSQL: [`ExternalIdsTx`] for
//! [`PgTransaction`] (tables of `migrations/0009_external_ids.sql`). Each
//! call is one round trip of statements over arrays. A link deletes the
//! old links of its records whose id changes, then inserts the new ones,
//! ordered by external id (so that two transactions linking several ids
//! wait for each other in one order), under a savepoint sent in the same
//! round trip: losing an external id to another record (already
//! committed, or committed by a transaction racing for it: the unique
//! check waits for it) is a unique violation that the savepoint undoes,
//! reported as [`Error::Duplicate`] with the holder looked up afterwards,
//! and the transaction stays usable.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use tokio_postgres::{Row, error::SqlState, types::ToSql};
use uuid::Uuid;

use super::{
    error,
    transaction::{PgTransaction, now},
};
use crate::{
    domain::{
        EntityKind, ExternalId, ExternalLink, ExternalSystem, Timestamp, check_external_count,
        check_timestamp, checked_links,
    },
    error::{Entity, Error, Result},
    store::ExternalIdsTx,
};

/// The savepoint of a link.
const LINK_SAVEPOINT: &str = "SAVEPOINT crm_external_link";
const LINK_RELEASE: &str = "RELEASE SAVEPOINT crm_external_link";
/// Sent as a simple query: it runs in an aborted transaction, where
/// nothing can be prepared.
const LINK_ROLLBACK_TO: &str =
    "ROLLBACK TO SAVEPOINT crm_external_link; RELEASE SAVEPOINT crm_external_link";
/// Deletes the links of records `$4` (of kinds `$3`) whose id is not to
/// stay (`$5`): what frees an id one record of the call gives up for
/// another to take.
const CLEAR: &str = "DELETE FROM external_ids AS e \
     USING unnest($3::text[], $4::uuid[], $5::text[]) AS u(kind, record_id, external_id) \
     WHERE e.tenant_id = $1 AND e.system = $2 AND e.kind = u.kind \
     AND e.record_id = u.record_id AND e.external_id <> u.external_id";
/// Links `$4` of kinds `$3` to `$5` in system `$2`, after [`CLEAR`]: one
/// row per link created or changed (an identical link updates nothing; a
/// link another transaction wrote since is replaced).
const LINK: &str = "INSERT INTO external_ids AS e \
     (tenant_id, system, kind, record_id, external_id, updated_at) \
     SELECT $1, $2, u.kind, u.record_id, u.external_id, $6 \
     FROM unnest($3::text[], $4::uuid[], $5::text[]) AS u(kind, record_id, external_id) \
     ON CONFLICT (tenant_id, system, kind, record_id) DO UPDATE \
     SET external_id = excluded.external_id, updated_at = excluded.updated_at \
     WHERE e.external_id <> excluded.external_id \
     RETURNING 1";
/// The records holding the external ids `$4` of kinds `$3` (after a lost
/// link: who holds them now).
const HOLDERS: &str = "SELECT e.kind, e.external_id, e.record_id FROM external_ids e \
     JOIN unnest($3::text[], $4::text[]) AS u(kind, external_id) \
     ON e.kind = u.kind AND e.external_id = u.external_id \
     WHERE e.tenant_id = $1 AND e.system = $2";
const UNLINK: &str = "DELETE FROM external_ids \
     WHERE tenant_id = $1 AND system = $2 AND kind = $3 AND record_id = ANY($4::uuid[])";
const BY_RECORD: &str = "SELECT record_id, external_id FROM external_ids \
     WHERE tenant_id = $1 AND system = $2 AND kind = $3 AND record_id = ANY($4::uuid[])";
const BY_EXTERNAL: &str = "SELECT external_id, record_id FROM external_ids \
     WHERE tenant_id = $1 AND system = $2 AND kind = $3 AND external_id = ANY($4::text[])";
const WINDOW: &str =
    "SELECT window_at FROM sync_windows WHERE tenant_id = $1 AND system = $2 AND kind = $3";
const SET_WINDOW: &str = "INSERT INTO sync_windows (tenant_id, system, kind, window_at, \
     updated_at) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (tenant_id, system, kind) DO UPDATE \
     SET window_at = excluded.window_at, updated_at = excluded.updated_at";

pub(super) const STATEMENTS: &[(&str, &str)] = super::statements::listed!(
    LINK_SAVEPOINT,
    LINK_RELEASE,
    LINK_ROLLBACK_TO,
    CLEAR,
    LINK,
    HOLDERS,
    UNLINK,
    BY_RECORD,
    BY_EXTERNAL,
    WINDOW,
    SET_WINDOW,
);

/// An external id read back, checked as the domain checks it.
fn external_id(row: &Row, i: usize) -> Result<ExternalId> {
    let s: String = row.try_get(i).map_err(error::db)?;
    ExternalId::parse(&s).map_err(|e| Error::backend(format!("an external_ids row holds {e}")))
}

impl PgTransaction {
    /// After a link lost an id (`lost`, the unique violation): the first
    /// link of `links` whose id another record holds, that is not itself
    /// moved away by the call, as `Duplicate`.
    async fn link_refused(
        &mut self,
        system: &ExternalSystem,
        links: &[&ExternalLink],
        lost: tokio_postgres::Error,
    ) -> Error {
        let tenant = self.tenant_uuid();
        let kinds: Vec<&str> = links.iter().map(|l| l.kind.as_str()).collect();
        let ids: Vec<&str> = links.iter().map(|l| l.external.as_str()).collect();
        let rows = match self
            .query(HOLDERS, &[&tenant, &system.as_str(), &kinds, &ids])
            .await
        {
            Ok(rows) => rows,
            Err(e) => return e,
        };
        let mut holders: HashMap<(String, String), Uuid> = HashMap::new();
        for row in &rows {
            let read = (|| -> Result<((String, String), Uuid)> {
                let kind: String = row.try_get(0).map_err(error::db)?;
                let id: String = row.try_get(1).map_err(error::db)?;
                let record: Uuid = row.try_get(2).map_err(error::db)?;
                Ok(((kind, id), record))
            })();
            match read {
                Ok((key, record)) => {
                    holders.insert(key, record);
                }
                Err(e) => return e,
            }
        }
        let in_call: HashSet<(EntityKind, Uuid)> =
            links.iter().map(|l| (l.kind, l.record)).collect();
        for link in links {
            let key = (
                link.kind.as_str().to_string(),
                link.external.as_str().to_string(),
            );
            if let Some(holder) = holders.get(&key)
                && *holder != link.record
                && !in_call.contains(&(link.kind, *holder))
            {
                return Error::Duplicate {
                    entity: Entity::from(link.kind),
                    field: "external_id",
                    value: link.external.as_str().to_string(),
                    existing_id: holder.to_string(),
                };
            }
        }
        // The holder is gone again (it rolled back, or unlinked since):
        // trying again may succeed.
        error::db_retryable(lost)
    }
}

#[async_trait]
impl ExternalIdsTx for PgTransaction {
    async fn link_external_ids(
        &mut self,
        system: &ExternalSystem,
        links: &[ExternalLink],
    ) -> Result<u64> {
        let mut links = checked_links(links)?;
        if links.is_empty() {
            return Ok(0);
        }
        links.sort_by(|a, b| (a.kind, &a.external).cmp(&(b.kind, &b.external)));
        let tenant = self.tenant_uuid();
        let kinds: Vec<&str> = links.iter().map(|l| l.kind.as_str()).collect();
        let records: Vec<Uuid> = links.iter().map(|l| l.record).collect();
        let ids: Vec<&str> = links.iter().map(|l| l.external.as_str()).collect();
        let at = now();
        let none: [&(dyn ToSql + Sync); 0] = [];
        let params: [&(dyn ToSql + Sync); 6] =
            [&tenant, &system.as_str(), &kinds, &records, &ids, &at];
        let clear = &params[..5];
        self.check_open()?;
        let begin = self.pending_begin.take().is_some();
        let r = self
            .raw_query_all(
                &[
                    (LINK_SAVEPOINT, &none),
                    (CLEAR, clear),
                    (LINK, &params),
                    (LINK_RELEASE, &none),
                ],
                begin,
            )
            .await;
        if let Some(e) = self.settle_claim() {
            if r.is_err() {
                self.aborted = true;
            }
            return Err(e);
        }
        let failure = match r {
            Ok(rows) => return Ok(rows.get(2).map_or(0, |r| r.len() as u64)),
            Err(e) => e,
        };
        // Undo whatever the link did, so that the transaction stays usable.
        let undone = match self.conn.as_ref() {
            Some(c) => c.batch_execute(LINK_ROLLBACK_TO).await,
            None => return Err(error::db(failure)),
        };
        if let Err(e) = undone {
            return Err(self.failed(e));
        }
        if failure.code() == Some(&SqlState::UNIQUE_VIOLATION) {
            Err(self.link_refused(system, &links, failure).await)
        } else {
            Err(error::db(failure))
        }
    }

    async fn unlink_external_ids(
        &mut self,
        system: &ExternalSystem,
        kind: EntityKind,
        records: &[Uuid],
    ) -> Result<u64> {
        check_external_count("records", records.len())?;
        let tenant = self.tenant_uuid();
        self.execute(
            UNLINK,
            &[&tenant, &system.as_str(), &kind.as_str(), &records],
        )
        .await
    }

    async fn external_ids(
        &mut self,
        system: &ExternalSystem,
        kind: EntityKind,
        records: &[Uuid],
    ) -> Result<HashMap<Uuid, ExternalId>> {
        check_external_count("records", records.len())?;
        let tenant = self.tenant_uuid();
        let rows = self
            .query(
                BY_RECORD,
                &[&tenant, &system.as_str(), &kind.as_str(), &records],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let record: Uuid = row.try_get(0).map_err(error::db)?;
                Ok((record, external_id(row, 1)?))
            })
            .collect()
    }

    async fn records_by_external_id(
        &mut self,
        system: &ExternalSystem,
        kind: EntityKind,
        external: &[ExternalId],
    ) -> Result<HashMap<ExternalId, Uuid>> {
        check_external_count("external", external.len())?;
        let tenant = self.tenant_uuid();
        let ids: Vec<&str> = external.iter().map(ExternalId::as_str).collect();
        let rows = self
            .query(
                BY_EXTERNAL,
                &[&tenant, &system.as_str(), &kind.as_str(), &ids],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let record: Uuid = row.try_get(1).map_err(error::db)?;
                Ok((external_id(row, 0)?, record))
            })
            .collect()
    }

    async fn sync_window(
        &mut self,
        system: &ExternalSystem,
        kind: EntityKind,
    ) -> Result<Option<Timestamp>> {
        let tenant = self.tenant_uuid();
        let row = self
            .query_opt(WINDOW, &[&tenant, &system.as_str(), &kind.as_str()])
            .await?;
        row.map(|r| r.try_get::<_, Timestamp>(0))
            .transpose()
            .map_err(error::db)
    }

    async fn set_sync_window(
        &mut self,
        system: &ExternalSystem,
        kind: EntityKind,
        at: Timestamp,
    ) -> Result<()> {
        let at = check_timestamp("at", at)?;
        let tenant = self.tenant_uuid();
        let stamp = now();
        self.execute(
            SET_WINDOW,
            &[&tenant, &system.as_str(), &kind.as_str(), &at, &stamp],
        )
        .await
        .map(drop)
    }
}
