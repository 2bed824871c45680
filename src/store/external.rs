//! Ids of the tenant's records in external systems, and how far each
//! system was read ([`ExternalIdsTx`]): the bookkeeping of a sync.

use std::collections::HashMap;

use async_trait::async_trait;
use uuid::Uuid;

#[cfg(doc)]
use crate::domain::MAX_EXTERNAL_LINKS;
#[cfg(doc)]
use crate::error::Error;
use crate::{
    domain::{EntityKind, ExternalId, ExternalLink, ExternalSystem, Timestamp},
    error::Result,
};

/// The ids the transaction's tenant's records have in external systems
/// (one id per record, kind and system), and a sync window per system and
/// kind. Part of [`Transaction`](crate::Transaction).
///
/// # Contract
///
/// Beside the points on [`Store`](crate::Store):
///
/// - **Bookkeeping only.** Links and windows write no history and no feed
///   event, so a feed consumer may write them in the transaction of its
///   [`ack`](crate::store::FeedTx::ack) without reading its own writes back.
///   They are writes of their transaction like any other: kept by a
///   commit, gone with a rollback (or a drop), invisible to other tenants.
/// - **Any record id.** A link does not check that its record exists, and
///   deleting (or merging away) a record leaves its links: a sync unlinks
///   what it no longer wants.
/// - **One id per record, one record per id.** In a system, a record of a
///   kind has at most one external id, and an external id belongs to at
///   most one record of a kind (the same id may name a contact and a deal).
///   Linking an id another record of the kind holds is
///   [`Error::Duplicate`] (field `external_id`, the id as value, the
///   holder's id as `existing_id`) and writes nothing of the call; so is
///   losing a race for it to a transaction that commits first.
/// - **Input.** At most [`MAX_EXTERNAL_LINKS`] links, records or external
///   ids per call ([`Error::Validation`] on `links`, `records` or
///   `external`); one call may not give one record two ids, nor one id to
///   two records ([`Error::Validation`] on `links`); a window is checked
///   as every time is ([`check_timestamp`](crate::domain::check_timestamp),
///   field `at`).
#[async_trait]
pub trait ExternalIdsTx: Send {
    /// Links each record to its id in `system` (one id per record and
    /// kind; a new id replaces the old one). Returns how many links were
    /// created or changed (an identical link counts 0). The links of one
    /// call are checked against the state they leave: a call may swap two
    /// records' ids.
    ///
    /// Errors: [`Error::Duplicate`] (field `external_id`) when another
    /// record of the same kind holds one of the ids, and nothing of the
    /// call is written; [`Error::Validation`] on `links`.
    async fn link_external_ids(
        &mut self,
        system: &ExternalSystem,
        links: &[ExternalLink],
    ) -> Result<u64>;

    /// Removes the links of `records` of `kind` in `system`; returns how
    /// many were removed.
    ///
    /// Errors: [`Error::Validation`] on `records`.
    async fn unlink_external_ids(
        &mut self,
        system: &ExternalSystem,
        kind: EntityKind,
        records: &[Uuid],
    ) -> Result<u64>;

    /// The external ids of `records` of `kind` that are linked (absent =
    /// not linked).
    ///
    /// Errors: [`Error::Validation`] on `records`.
    async fn external_ids(
        &mut self,
        system: &ExternalSystem,
        kind: EntityKind,
        records: &[Uuid],
    ) -> Result<HashMap<Uuid, ExternalId>>;

    /// The records of `kind` linked to `external` ids (absent = none).
    ///
    /// Errors: [`Error::Validation`] on `external`.
    async fn records_by_external_id(
        &mut self,
        system: &ExternalSystem,
        kind: EntityKind,
        external: &[ExternalId],
    ) -> Result<HashMap<ExternalId, Uuid>>;

    /// The stored sync window of (`system`, `kind`): the time up to which
    /// a pull has read; `None` before the first.
    async fn sync_window(
        &mut self,
        system: &ExternalSystem,
        kind: EntityKind,
    ) -> Result<Option<Timestamp>>;

    /// Stores the sync window of (`system`, `kind`), replacing the one
    /// stored (any value: an earlier one too).
    ///
    /// Errors: [`Error::Validation`] on `at` outside years 1–9999.
    async fn set_sync_window(
        &mut self,
        system: &ExternalSystem,
        kind: EntityKind,
        at: Timestamp,
    ) -> Result<()>;
}
