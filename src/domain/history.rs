//! The history's records: which record ([`HistoryEntity`]), what happened
//! to it ([`Operation`]), one version of it ([`HistoryEntry`]) and the
//! question of which versions changed a field ([`FieldQuery`]).

use std::{collections::BTreeMap, fmt};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{
    CompanyId, ContactId, Cursor, DealId, PageRequest, TagId, TaggingId, TaskId, Timestamp,
};

/// The kinds of record the history keeps.
///
/// More kinds of record (companies, tasks) may come as the CRM grows: a
/// `match` on it outside this crate needs a `_` arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EntityKind {
    /// A contact.
    Contact,
    /// A deal.
    Deal,
    /// A company.
    Company,
    /// A tag.
    Tag,
    /// A tag attached to a record.
    Tagging,
    /// A task.
    Task,
}

impl EntityKind {
    /// Its name as stored: `contact`, `deal`, `company`, `tag`, `tagging` or `task`.
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Contact => "contact",
            EntityKind::Deal => "deal",
            EntityKind::Company => "company",
            EntityKind::Tag => "tag",
            EntityKind::Tagging => "tagging",
            EntityKind::Task => "task",
        }
    }

    /// The kind named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "contact" => Some(EntityKind::Contact),
            "deal" => Some(EntityKind::Deal),
            "company" => Some(EntityKind::Company),
            "tag" => Some(EntityKind::Tag),
            "tagging" => Some(EntityKind::Tagging),
            "task" => Some(EntityKind::Task),
            _ => None,
        }
    }
}

impl fmt::Display for EntityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One record whose history is kept.
///
/// More kinds of record (companies, tasks) may come as the CRM grows: a
/// `match` on it outside this crate needs a `_` arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
#[non_exhaustive]
pub enum HistoryEntity {
    /// A contact.
    Contact(ContactId),
    /// A deal.
    Deal(DealId),
    /// A company.
    Company(CompanyId),
    /// A tag.
    Tag(TagId),
    /// A tag attached to a record.
    Tagging(TaggingId),
    /// A task.
    Task(TaskId),
}

impl HistoryEntity {
    /// Which kind of record.
    pub fn kind(self) -> EntityKind {
        match self {
            HistoryEntity::Contact(_) => EntityKind::Contact,
            HistoryEntity::Deal(_) => EntityKind::Deal,
            HistoryEntity::Company(_) => EntityKind::Company,
            HistoryEntity::Tag(_) => EntityKind::Tag,
            HistoryEntity::Tagging(_) => EntityKind::Tagging,
            HistoryEntity::Task(_) => EntityKind::Task,
        }
    }

    /// Its id.
    pub fn id(self) -> Uuid {
        match self {
            HistoryEntity::Contact(id) => id.as_uuid(),
            HistoryEntity::Deal(id) => id.as_uuid(),
            HistoryEntity::Company(id) => id.as_uuid(),
            HistoryEntity::Tag(id) => id.as_uuid(),
            HistoryEntity::Tagging(id) => id.as_uuid(),
            HistoryEntity::Task(id) => id.as_uuid(),
        }
    }

    /// The record of kind `kind` with id `id`.
    pub fn new(kind: EntityKind, id: Uuid) -> Self {
        match kind {
            EntityKind::Contact => HistoryEntity::Contact(ContactId::from_uuid(id)),
            EntityKind::Deal => HistoryEntity::Deal(DealId::from_uuid(id)),
            EntityKind::Company => HistoryEntity::Company(CompanyId::from_uuid(id)),
            EntityKind::Tag => HistoryEntity::Tag(TagId::from_uuid(id)),
            EntityKind::Tagging => HistoryEntity::Tagging(TaggingId::from_uuid(id)),
            EntityKind::Task => HistoryEntity::Task(TaskId::from_uuid(id)),
        }
    }
}

impl From<ContactId> for HistoryEntity {
    fn from(id: ContactId) -> Self {
        HistoryEntity::Contact(id)
    }
}

impl From<DealId> for HistoryEntity {
    fn from(id: DealId) -> Self {
        HistoryEntity::Deal(id)
    }
}

impl From<CompanyId> for HistoryEntity {
    fn from(id: CompanyId) -> Self {
        HistoryEntity::Company(id)
    }
}

impl From<TagId> for HistoryEntity {
    fn from(id: TagId) -> Self {
        HistoryEntity::Tag(id)
    }
}

impl From<TaggingId> for HistoryEntity {
    fn from(id: TaggingId) -> Self {
        HistoryEntity::Tagging(id)
    }
}

impl From<TaskId> for HistoryEntity {
    fn from(id: TaskId) -> Self {
        HistoryEntity::Task(id)
    }
}

/// What a version records.
///
/// More operations may come as the CRM grows: a `match` on it outside
/// this crate needs a `_` arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Operation {
    /// The record was created.
    Created,
    /// The record was changed.
    Updated,
    /// The record was deleted: a tombstone, after which it does not exist.
    Deleted,
    /// The contact's personal data was erased.
    Erased,
}

impl Operation {
    /// Its name as stored: `created`, `updated`, `deleted` or `erased`.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Created => "created",
            Operation::Updated => "updated",
            Operation::Deleted => "deleted",
            Operation::Erased => "erased",
        }
    }

    /// The operation named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "created" => Some(Operation::Created),
            "updated" => Some(Operation::Updated),
            "deleted" => Some(Operation::Deleted),
            "erased" => Some(Operation::Erased),
            _ => None,
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One field's change: its value before and after (JSON `null` for absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    /// The value before.
    pub old: Value,
    /// The value after.
    pub new: Value,
}

/// One version of a contact or deal. See the [history module](crate::history).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The record.
    pub entity: HistoryEntity,
    /// What happened.
    pub operation: Operation,
    /// When this version came into force (inclusive).
    pub valid_from: Timestamp,
    /// When the next version replaced it (exclusive); `None` while it is in force.
    pub valid_to: Option<Timestamp>,
    /// The record's recorded fields in this version (for a tombstone, the last values).
    pub values: Value,
    /// Per changed field, the old and the new value.
    pub diff: BTreeMap<String, FieldChange>,
    /// Who made the change (`db:<role>` for SQL outside the library).
    pub actor: String,
    /// Why, if the context said.
    pub reason: Option<String>,
    /// The request or event id, if the context had one.
    pub request_id: Option<String>,
    /// The idempotency key of the event being handled, if any.
    pub idempotency_key: Option<String>,
}

impl HistoryEntry {
    /// True when the record did not exist in this version (a tombstone).
    pub fn is_tombstone(&self) -> bool {
        self.operation == Operation::Deleted
    }

    /// True when this version was in force at `at`.
    pub fn is_valid_at(&self, at: Timestamp) -> bool {
        self.valid_from <= at && self.valid_to.is_none_or(|to| at < to)
    }
}

/// Which field changes to list: the changes of one field of one kind of
/// record, across a tenant or for one record, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldQuery {
    /// Contacts or deals.
    pub kind: EntityKind,
    /// The field's name as recorded (`"amount"`, `"email"`, …).
    pub field: String,
    /// Only this record, if given (its id; the kind is `kind`).
    pub entity: Option<Uuid>,
    /// The page.
    pub page: PageRequest,
}

impl FieldQuery {
    /// The changes of a deal field across the tenant, 50 a page.
    pub fn deals(field: &str) -> Self {
        Self::new(EntityKind::Deal, field)
    }

    /// The changes of a contact field across the tenant, 50 a page.
    pub fn contacts(field: &str) -> Self {
        Self::new(EntityKind::Contact, field)
    }

    /// The changes of `field` of records of `kind`.
    pub fn new(kind: EntityKind, field: &str) -> Self {
        FieldQuery {
            kind,
            field: field.to_string(),
            entity: None,
            page: PageRequest::default(),
        }
    }

    /// The changes of `field` of one record only.
    pub fn of(entity: HistoryEntity, field: &str) -> Self {
        FieldQuery {
            entity: Some(entity.id()),
            ..Self::new(entity.kind(), field)
        }
    }

    /// Sets the page.
    pub fn page(mut self, page: PageRequest) -> Self {
        self.page = page;
        self
    }

    /// The same query, continuing after `cursor`.
    pub fn after(&self, cursor: Cursor) -> Self {
        let mut q = self.clone();
        q.page.cursor = Some(cursor);
        q
    }

    /// Checks the query as every store does first: a field name without
    /// NUL (the page is checked when it is read).
    pub fn check(&self) -> Result<(), super::error::FieldError> {
        super::no_nul("field", &self.field)
    }
}

/// The position of an entry in a list ordered by `valid_from` then entity
/// id, as stored in cursors (field changes, tenant changes).
pub type HistoryKey = (i64, Uuid);
