//! A tag attached to a record: what the history records of attaching and
//! detaching tags.

use serde::{Deserialize, Serialize};

use super::{RecordRef, TagId, TenantId, Timestamp, id_type};

id_type!(
    /// The id of a [`Tagging`] (UUID v7): one attachment of a tag to a
    /// record, the record of its history (created when attached, deleted
    /// when detached).
    TaggingId
);

/// One tag attached to one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tagging {
    /// Its id.
    pub id: TaggingId,
    /// The tenant.
    pub tenant_id: TenantId,
    /// The tag.
    pub tag_id: TagId,
    /// What carries it.
    pub record: RecordRef,
    /// When it was attached.
    pub created_at: Timestamp,
}
