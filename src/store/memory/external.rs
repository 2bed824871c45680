//! External ids and sync windows in the memory store
//! ([`ExternalIdsTx`]): links kept both ways in the tenant's data, every
//! change put in the undo log; neither history nor feed.

use std::collections::HashMap;

use async_trait::async_trait;
use uuid::Uuid;

use super::{MemoryTransaction, Undo};
use crate::{
    domain::{
        EntityKind, ExternalId, ExternalLink, ExternalSystem, Timestamp, check_external_count,
        check_timestamp, checked_links,
    },
    error::{Entity, Error, Result},
    store::ExternalIdsTx,
};

/// A record of a kind in a system.
type RecordKey = (ExternalSystem, EntityKind, Uuid);
/// An external id of a kind in a system.
type ExternalKey = (ExternalSystem, EntityKind, ExternalId);

/// One tenant's links (both ways) and windows.
#[derive(Default)]
pub(super) struct ExternalIds {
    by_record: HashMap<RecordKey, ExternalId>,
    by_external: HashMap<ExternalKey, Uuid>,
    windows: HashMap<(ExternalSystem, EntityKind), Timestamp>,
}

/// What to restore on rollback.
pub(super) enum ExternalUndo {
    Link(RecordKey, Option<ExternalId>),
    Window((ExternalSystem, EntityKind), Option<Timestamp>),
}

impl ExternalIds {
    /// Sets (or removes) the link of a record, keeping both ways; returns
    /// the previous id.
    fn put_link(&mut self, key: RecordKey, value: Option<ExternalId>) -> Option<ExternalId> {
        let old = match value {
            Some(id) => self.by_record.insert(key.clone(), id),
            None => self.by_record.remove(&key),
        };
        let (system, kind, record) = key;
        if let Some(o) = &old {
            self.by_external.remove(&(system.clone(), kind, o.clone()));
        }
        if let Some(n) = self.by_record.get(&(system.clone(), kind, record)) {
            self.by_external.insert((system, kind, n.clone()), record);
        }
        old
    }

    fn put_window(
        &mut self,
        key: (ExternalSystem, EntityKind),
        value: Option<Timestamp>,
    ) -> Option<Timestamp> {
        match value {
            Some(at) => self.windows.insert(key, at),
            None => self.windows.remove(&key),
        }
    }

    pub(super) fn undo(&mut self, undo: ExternalUndo) {
        match undo {
            ExternalUndo::Link(key, v) => {
                self.put_link(key, v);
            }
            ExternalUndo::Window(key, v) => {
                self.put_window(key, v);
            }
        }
    }
}

impl MemoryTransaction {
    fn set_link(&mut self, key: RecordKey, value: Option<ExternalId>) -> Result<()> {
        let tenant = self.tenant;
        let old = self.data_mut()?.external.put_link(key.clone(), value);
        self.undo
            .push(Undo::External(tenant, ExternalUndo::Link(key, old)));
        Ok(())
    }
}

#[async_trait]
impl ExternalIdsTx for MemoryTransaction {
    async fn link_external_ids(
        &mut self,
        system: &ExternalSystem,
        links: &[ExternalLink],
    ) -> Result<u64> {
        let links = checked_links(links)?;
        let data = &self.data()?.external;
        let changed: Vec<&ExternalLink> = links
            .into_iter()
            .filter(|l| {
                data.by_record.get(&(system.clone(), l.kind, l.record)) != Some(&l.external)
            })
            .collect();
        // Checked against the state the call leaves: an id may move from a
        // record of this call to another.
        for link in &changed {
            let key = (system.clone(), link.kind, link.external.clone());
            if let Some(holder) = data.by_external.get(&key) {
                let moves_away = changed
                    .iter()
                    .any(|l| l.kind == link.kind && l.record == *holder);
                if *holder != link.record && !moves_away {
                    return Err(Error::Duplicate {
                        entity: Entity::from(link.kind),
                        field: "external_id",
                        value: link.external.as_str().to_string(),
                        existing_id: holder.to_string(),
                    });
                }
            }
        }
        let count = changed.len() as u64;
        let writes: Vec<(RecordKey, ExternalId)> = changed
            .into_iter()
            .map(|l| ((system.clone(), l.kind, l.record), l.external.clone()))
            .collect();
        self.atomic(|tx| {
            // Every old id first, so that a swap finds its id free.
            for (key, _) in &writes {
                tx.set_link(key.clone(), None)?;
            }
            for (key, id) in writes {
                tx.set_link(key, Some(id))?;
            }
            Ok(count)
        })
    }

    async fn unlink_external_ids(
        &mut self,
        system: &ExternalSystem,
        kind: EntityKind,
        records: &[Uuid],
    ) -> Result<u64> {
        check_external_count("records", records.len())?;
        let mut removed = 0;
        for record in records {
            let key = (system.clone(), kind, *record);
            if self.data()?.external.by_record.contains_key(&key) {
                self.set_link(key, None)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn external_ids(
        &mut self,
        system: &ExternalSystem,
        kind: EntityKind,
        records: &[Uuid],
    ) -> Result<HashMap<Uuid, ExternalId>> {
        check_external_count("records", records.len())?;
        let data = &self.data()?.external;
        Ok(records
            .iter()
            .filter_map(|r| {
                data.by_record
                    .get(&(system.clone(), kind, *r))
                    .map(|id| (*r, id.clone()))
            })
            .collect())
    }

    async fn records_by_external_id(
        &mut self,
        system: &ExternalSystem,
        kind: EntityKind,
        external: &[ExternalId],
    ) -> Result<HashMap<ExternalId, Uuid>> {
        check_external_count("external", external.len())?;
        let data = &self.data()?.external;
        Ok(external
            .iter()
            .filter_map(|e| {
                data.by_external
                    .get(&(system.clone(), kind, e.clone()))
                    .map(|r| (e.clone(), *r))
            })
            .collect())
    }

    async fn sync_window(
        &mut self,
        system: &ExternalSystem,
        kind: EntityKind,
    ) -> Result<Option<Timestamp>> {
        Ok(self
            .data()?
            .external
            .windows
            .get(&(system.clone(), kind))
            .copied())
    }

    async fn set_sync_window(
        &mut self,
        system: &ExternalSystem,
        kind: EntityKind,
        at: Timestamp,
    ) -> Result<()> {
        let at = check_timestamp("at", at)?;
        let tenant = self.tenant;
        let key = (system.clone(), kind);
        let old = self.data_mut()?.external.put_window(key.clone(), Some(at));
        self.undo
            .push(Undo::External(tenant, ExternalUndo::Window(key, old)));
        Ok(())
    }
}
