//! Keyset pagination: which page of a list ([`PageRequest`]), one page of
//! it ([`Page`]), and the opaque [`Cursor`] that says where the next page
//! starts. A cursor names the list and the call that made it
//! ([`CursorList`], [`ListScope`]), and a list takes back only its own.

use std::fmt;

use serde::{Serialize, de::DeserializeOwned};

use super::{
    ContactId, PipelineKey, StageKey, Timestamp,
    error::{Error, FieldError, Result, ValidationErrors},
    history::{FieldQuery, HistoryEntity},
    idempotency::{IdempotencyKey, IdempotencySource},
};

/// The largest page a list returns.
pub const MAX_PAGE_SIZE: u32 = 1000;
/// The page size when none is given.
pub const DEFAULT_PAGE_SIZE: u32 = 50;

/// Which page of a list: how many items, and where to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// How many items at most (1–1000).
    pub limit: u32,
    /// Where to continue; `None` for the first page.
    pub cursor: Option<Cursor>,
}

impl Default for PageRequest {
    fn default() -> Self {
        PageRequest {
            limit: DEFAULT_PAGE_SIZE,
            cursor: None,
        }
    }
}

impl PageRequest {
    /// The first page of `limit` items.
    pub fn first(limit: u32) -> Self {
        PageRequest {
            limit,
            cursor: None,
        }
    }

    /// The page after `cursor`.
    pub fn after(limit: u32, cursor: Cursor) -> Self {
        PageRequest {
            limit,
            cursor: Some(cursor),
        }
    }

    /// The limit, checked to be 1–1000.
    pub fn checked_limit(&self) -> Result<usize> {
        if (1..=MAX_PAGE_SIZE).contains(&self.limit) {
            Ok(self.limit as usize)
        } else {
            Err(ValidationErrors::single(FieldError::new(
                "limit",
                "out_of_range",
                format!("must be 1 to {MAX_PAGE_SIZE}, got {}", self.limit),
            ))
            .into())
        }
    }

    /// The position of the cursor, if any, decoded as one of `list` and
    /// checked ([`Cursor::decode`]).
    pub fn position<T: CursorPosition>(&self, list: impl Into<ListScope>) -> Result<Option<T>> {
        let list = list.into();
        self.cursor.as_ref().map(|c| c.decode(list)).transpose()
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The items, in the list's order.
    pub items: Vec<T>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<Cursor>,
}

impl<T> Page<T> {
    /// Builds a page of `list` from up to `limit + 1` items fetched in
    /// order: the extra item, if present, only says that more follow, and
    /// the next cursor holds the position `key` gives the last item kept.
    pub fn from_overfetch<K: Serialize>(
        mut items: Vec<T>,
        limit: usize,
        list: impl Into<ListScope>,
        key: impl Fn(&T) -> K,
    ) -> Self {
        let list = list.into();
        let more = items.len() > limit;
        items.truncate(limit);
        let next_cursor = if more {
            items.last().map(|last| Cursor::encode(list, &key(last)))
        } else {
            None
        };
        Page { items, next_cursor }
    }
}

/// An opaque position in a list. Pass it back unchanged to get the next page.
///
/// A cursor names the list that made it and holds a position in it; a list
/// takes back only its own cursors, and checks the position they hold
/// ([`CursorPosition`]) before it is used. Its text is lower-case hex, at
/// most [`Cursor::MAX_CHARS`] characters.
///
/// Opaque is not secret: the text is the position encoded, not encrypted,
/// so a cursor of a list sorted by name holds the last row's name keys
/// (lower-cased names), one sorted by score its score. Keep cursors where
/// you would keep the rows they page through (not in a log, nor in a URL
/// that others see).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Cursor(String);

impl Cursor {
    /// The longest cursor text a list reads (longer is refused before it is
    /// decoded). Every cursor the crate makes is far shorter.
    pub const MAX_CHARS: usize = 8192;

    /// Encodes a position of `list`.
    pub fn encode<T: Serialize + ?Sized>(list: impl Into<ListScope>, position: &T) -> Cursor {
        let ListScope { list, scope } = list.into();
        let json = serde_json::to_vec(&(list, scope, position)).unwrap_or_default();
        let mut s = String::with_capacity(json.len() * 2);
        for b in json {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        Cursor(s)
    }

    /// Decodes a position of `list` and checks it: a cursor that is not
    /// one `list` made (garbage, too long, another list's), or whose
    /// position is out of range, is a validation error on `cursor`.
    pub fn decode<T: CursorPosition>(&self, list: impl Into<ListScope>) -> Result<T> {
        let ListScope { list, scope } = list.into();
        let invalid = |reason: &str| {
            Error::from(ValidationErrors::single(FieldError::new(
                "cursor",
                "invalid_format",
                reason,
            )))
        };
        let bytes = self.0.as_bytes();
        if bytes.len() > Self::MAX_CHARS {
            return Err(invalid("is too long to be a cursor of this list"));
        }
        if !bytes.len().is_multiple_of(2) {
            return Err(invalid("is not a cursor of this list"));
        }
        let nibble = |c: u8| HEX.iter().position(|h| *h == c).map(|p| p as u8);
        let mut json = Vec::with_capacity(bytes.len() / 2);
        for pair in bytes.chunks(2) {
            match (nibble(pair[0]), nibble(pair[1])) {
                (Some(hi), Some(lo)) => json.push(hi << 4 | lo),
                _ => return Err(invalid("is not a cursor of this list")),
            }
        }
        let (of, made_for, position): (CursorList, u64, serde_json::Value) =
            serde_json::from_slice(&json).map_err(|_| invalid("is not a cursor of this list"))?;
        if of != list {
            return Err(invalid(&format!(
                "is a cursor of another list ({}), not of {}",
                of.name(),
                list.name()
            )));
        }
        if made_for != scope {
            return Err(invalid(&format!(
                "is a cursor of {} for other parameters (another contact, stage, \
                 record, source, range, filters or order): pass each list its own cursors",
                list.name()
            )));
        }
        let position: T = serde_json::from_value(position)
            .map_err(|_| invalid("is not a cursor of this list"))?;
        position.check(list).map_err(|e| {
            Error::from(ValidationErrors::single(FieldError::new(
                "cursor",
                e.code,
                format!("holds a position out of range: {}", e.reason),
            )))
        })?;
        Ok(position)
    }

    /// The cursor as text (to put in a URL or a response).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A cursor from text received back from a client.
    pub fn from_string(s: String) -> Cursor {
        Cursor(s)
    }
}

/// The keyset-paginated lists of the contract: every cursor carries the
/// list that made it, and a list takes back only its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CursorList {
    /// [`Transaction::search_contacts`](crate::store::ContactsTx::search_contacts)
    /// sorted by score (either direction).
    ContactsByScore,
    /// [`Transaction::search_contacts`](crate::store::ContactsTx::search_contacts)
    /// sorted by creation time.
    ContactsByCreation,
    /// [`Transaction::search_contacts`](crate::store::ContactsTx::search_contacts)
    /// sorted by update time.
    ContactsByUpdate,
    /// [`Transaction::search_contacts`](crate::store::ContactsTx::search_contacts)
    /// sorted by name.
    ContactsByName,
    /// [`Transaction::list_deals_for_contact`](crate::store::DealsTx::list_deals_for_contact).
    DealsOfContact,
    /// [`Transaction::list_deals_in_stage`](crate::store::DealsTx::list_deals_in_stage).
    DealsInStage,
    /// [`Transaction::timeline`](crate::store::TimelineTx::timeline).
    Timeline,
    /// [`Transaction::entity_history`](crate::store::HistoryTx::entity_history).
    EntityHistory,
    /// [`Transaction::field_changes`](crate::store::HistoryTx::field_changes).
    FieldChanges,
    /// [`Transaction::changes_between`](crate::store::HistoryTx::changes_between).
    TenantChanges,
    /// [`Transaction::list_idempotency_records`](crate::store::IdempotencyTx::list_idempotency_records).
    IdempotencyRecords,
    /// [`Transaction::search_companies`](crate::store::CompaniesTx::search_companies)
    /// sorted by name.
    CompaniesByName,
    /// [`Transaction::search_companies`](crate::store::CompaniesTx::search_companies)
    /// sorted by creation time.
    CompaniesByCreation,
    /// [`Transaction::list_tags`](crate::store::TagsTx::list_tags).
    Tags,
    /// [`Transaction::open_tasks`](crate::store::TasksTx::open_tasks).
    OpenTasks,
    /// [`Transaction::overdue_tasks`](crate::store::TasksTx::overdue_tasks).
    OverdueTasks,
    /// [`Transaction::tasks_of`](crate::store::TasksTx::tasks_of).
    TasksOfRecord,
    /// [`Transaction::company_timeline`](crate::store::CompaniesTx::company_timeline).
    CompanyTimeline,
    /// [`Transaction::list_deals_for_company`](crate::store::CompaniesTx::list_deals_for_company).
    DealsOfCompany,
    /// [`Transaction::search_deals`](crate::store::DealsTx::search_deals).
    DealSearch,
    /// [`Transaction::stale_contacts`](crate::store::FreshnessTx::stale_contacts).
    StaleContacts,
    /// The pairs of a [`DuplicateScan`](crate::quality::DuplicateScan).
    DuplicateContacts,
    /// The pairs of a [`CompanyDuplicateScan`](crate::quality::CompanyDuplicateScan).
    DuplicateCompanies,
}

impl CursorList {
    /// Its name, as cursors carry it.
    pub fn name(self) -> &'static str {
        match self {
            CursorList::ContactsByScore => "contacts_by_score",
            CursorList::ContactsByCreation => "contacts_by_creation",
            CursorList::ContactsByUpdate => "contacts_by_update",
            CursorList::ContactsByName => "contacts_by_name",
            CursorList::DealsOfContact => "deals_of_contact",
            CursorList::DealsInStage => "deals_in_stage",
            CursorList::Timeline => "timeline",
            CursorList::EntityHistory => "entity_history",
            CursorList::FieldChanges => "field_changes",
            CursorList::TenantChanges => "tenant_changes",
            CursorList::IdempotencyRecords => "idempotency_records",
            CursorList::CompaniesByName => "companies_by_name",
            CursorList::CompaniesByCreation => "companies_by_creation",
            CursorList::Tags => "tags",
            CursorList::OpenTasks => "open_tasks",
            CursorList::OverdueTasks => "overdue_tasks",
            CursorList::TasksOfRecord => "tasks_of_record",
            CursorList::CompanyTimeline => "company_timeline",
            CursorList::DealsOfCompany => "deals_of_company",
            CursorList::DealSearch => "deal_search",
            CursorList::StaleContacts => "stale_contacts",
            CursorList::DuplicateContacts => "duplicate_contacts",
            CursorList::DuplicateCompanies => "duplicate_companies",
        }
    }
}

/// A list with the parameters of one call to it (the contact whose
/// timeline, the filters and order of a search, …): what a cursor is made
/// for and taken back by. A cursor of the same list made for other
/// parameters is refused, as it would skip or repeat items.
///
/// A [`CursorList`] alone is the list without parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListScope {
    list: CursorList,
    /// A 64-bit FNV-1a hash of the parameters' JSON (0 for none): not a
    /// secret, only a check that a cursor comes back to the call it was
    /// made for.
    scope: u64,
}

impl From<CursorList> for ListScope {
    fn from(list: CursorList) -> Self {
        ListScope { list, scope: 0 }
    }
}

impl CursorList {
    /// This list with the parameters of one call (anything that
    /// serializes to JSON, the same way for the same call).
    pub fn scoped<P: Serialize + ?Sized>(self, parameters: &P) -> ListScope {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in serde_json::to_vec(parameters).unwrap_or_default() {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        ListScope {
            list: self,
            scope: hash,
        }
    }

    /// [`Transaction::list_deals_for_contact`](crate::store::DealsTx::list_deals_for_contact)
    /// of `contact`.
    pub fn deals_of_contact(contact: ContactId) -> ListScope {
        CursorList::DealsOfContact.scoped(&contact)
    }

    /// [`Transaction::list_deals_in_stage`](crate::store::DealsTx::list_deals_in_stage)
    /// of one stage.
    pub fn deals_in_stage(pipeline: &PipelineKey, stage: &StageKey) -> ListScope {
        CursorList::DealsInStage.scoped(&(pipeline, stage))
    }

    /// [`Transaction::timeline`](crate::store::TimelineTx::timeline) of
    /// `contact`.
    pub fn timeline(contact: ContactId) -> ListScope {
        CursorList::Timeline.scoped(&contact)
    }

    /// [`Transaction::entity_history`](crate::store::HistoryTx::entity_history)
    /// of one record.
    pub fn entity_history(entity: &HistoryEntity) -> ListScope {
        CursorList::EntityHistory.scoped(entity)
    }

    /// [`Transaction::field_changes`](crate::store::HistoryTx::field_changes)
    /// of one query (its page aside).
    pub fn field_changes(q: &FieldQuery) -> ListScope {
        CursorList::FieldChanges.scoped(&(q.kind, &q.field, q.entity))
    }

    /// [`Transaction::changes_between`](crate::store::HistoryTx::changes_between)
    /// of one range.
    pub fn tenant_changes(from: Timestamp, until: Timestamp) -> ListScope {
        CursorList::TenantChanges.scoped(&(from.timestamp_micros(), until.timestamp_micros()))
    }

    /// [`Transaction::list_idempotency_records`](crate::store::IdempotencyTx::list_idempotency_records)
    /// of one source.
    pub fn idempotency_records(source: &IdempotencySource) -> ListScope {
        CursorList::IdempotencyRecords.scoped(source)
    }
}

/// A position a list keeps in its cursors, checked when a cursor comes
/// back ([`Cursor::decode`]) so that no store ever sees one out of range.
pub trait CursorPosition: Serialize + DeserializeOwned {
    /// Checks a decoded position of `list` (the error's field is replaced
    /// by `cursor`).
    fn check(&self, list: CursorList) -> Result<(), FieldError>;
}

/// A time in microseconds since the Unix epoch (the history of one
/// record): within years 1–9999.
impl CursorPosition for i64 {
    fn check(&self, _: CursorList) -> Result<(), FieldError> {
        super::timestamp_from_micros("cursor", *self).map(drop)
    }
}

/// A time in microseconds, then an id (deal lists, the timeline, field and
/// tenant changes): the time within years 1–9999.
impl CursorPosition for (i64, uuid::Uuid) {
    fn check(&self, list: CursorList) -> Result<(), FieldError> {
        self.0.check(list)
    }
}

/// A time in microseconds, then an idempotency key (the records of a
/// source): the time within years 1–9999, the key a valid
/// [`IdempotencyKey`].
impl CursorPosition for (i64, String) {
    fn check(&self, list: CursorList) -> Result<(), FieldError> {
        self.0.check(list)?;
        IdempotencyKey::parse(&self.1).map(drop)
    }
}

/// An optional time in microseconds (none: after every time), then an id
/// (an assignee's open tasks by due time, undated last): the time within
/// years 1–9999.
impl CursorPosition for (Option<i64>, uuid::Uuid) {
    fn check(&self, list: CursorList) -> Result<(), FieldError> {
        self.0.map_or(Ok(()), |t| t.check(list))
    }
}

/// The longest caseless key a name position may hold, in characters.
const MAX_KEY_CHARS: usize = 1024;

/// A caseless key, then an id (tags by name): the key without NUL and of
/// bounded length.
impl CursorPosition for (String, uuid::Uuid) {
    fn check(&self, _: CursorList) -> Result<(), FieldError> {
        super::no_nul("cursor", &self.0)?;
        if self.0.chars().count() > MAX_KEY_CHARS {
            return Err(FieldError::new(
                "cursor",
                "too_long",
                format!("a name key has more than {MAX_KEY_CHARS} characters"),
            ));
        }
        Ok(())
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The position of an item in a list ordered by a timestamp then an id, as
/// stored in cursors (timeline, deal lists).
pub type TimeIdKey = (i64, uuid::Uuid);
