//! The CRM's own vocabulary as validated types: no I/O, no async, no SQL.
//!
//! Every value here is built through a constructor that validates it
//! (`Email::parse`, `NewContact::try_from(dto)`), so a value of one of these
//! types is valid by construction. Rows read back from a database go through
//! the same constructors.

mod activity;
mod company;
mod company_domain;
mod contact;
mod deal;
mod email;
pub(crate) mod error;
mod external;
mod feed;
mod freshness;
mod from_json;
mod history;
pub(crate) mod idempotency;
pub mod json;
mod key;
mod merge;
mod metadata;
mod original;
mod owner;
mod page;
mod pipeline;
mod record;
mod scoring;
mod tag;
mod tagging;
mod task;
mod tenant;
mod text;
mod time;
mod upsert;

pub(crate) use activity::deal_of_another_contact;
pub use activity::{
    Activity, ActivityId, ActivityKind, Direction, MAX_BODY_CHARS, NewActivity, NewActivityDto,
    NewSignal, NewSignalDto, Signal, SignalId, SignalKind, Subject,
};
pub use company::{
    Address, AddressPart, Company, CompanyId, CompanyPatch, CompanyPatchDto, Industry,
    MAX_EMPLOYEES, NewCompany, NewCompanyDto,
};
pub use company_domain::{CompanyDomain, FREE_MAIL_DOMAINS};
pub use contact::{
    CompanyName, Contact, ContactId, ContactPatch, ContactPatchDto, JobTitle, LeadSource,
    NewContact, NewContactDto, PersonName, Phone, Score,
};
pub use deal::{
    Currency, Deal, DealId, DealPatch, DealPatchDto, DealTitle, LostReason, Money, NewDeal,
    NewDealDto,
};
pub use email::Email;
pub use external::{ExternalId, ExternalLink, ExternalSystem, MAX_EXTERNAL_LINKS};
pub(crate) use external::{check_external_count, checked_links};
pub use feed::{ConsumerName, FeedEvent, FeedKind, FeedPosition, MAX_FEED_BATCH, check_feed_batch};
pub use freshness::{
    FRESHNESS_ORDER_WEIGHTS, FreshField, Freshness, FreshnessKey, FreshnessModel,
    INVALID_EMAIL_OFFSET, MAX_STALE_DAYS, StaleBounds, StaleContact, StalePosition, StaleQuery,
    StaleReason,
};
pub use from_json::{FromJson, ROOT_FIELD};
pub(crate) use from_json::{read_value, shortened};
pub use history::{
    EntityKind, FieldChange, FieldQuery, HistoryEntity, HistoryEntry, HistoryKey, Operation,
};
pub use idempotency::{
    Claim, Fingerprint, IdempotencyClaim, IdempotencyKey, IdempotencyRecord, IdempotencySource,
    InboundEvent, StoredResult, WaitPolicy,
};
pub use key::caseless_key;
pub(crate) use merge::MergeJournalEntry;
pub use merge::{
    MERGE_FIELDS, MergeCleared, MergeId, MergeRecord, MergeSnapshot, UnmergeConflicts,
    UnmergeRefusal, Unmerged, merge_changed_fields, restored_loser, unmerge_reason,
    unmerge_refusal, unmerged_survivor,
};
pub use metadata::Metadata;
pub(crate) use original::parse_original;
pub use original::{OriginalTimes, check_past};
pub use owner::OwnerId;
pub use page::{
    Cursor, CursorList, CursorPosition, DEFAULT_PAGE_SIZE, ListScope, MAX_PAGE_SIZE, Page,
    PageRequest, TimeIdKey,
};
pub use pipeline::{Pipeline, PipelineKey, Pipelines, StageDef, StageKey, StageKind};
pub use record::{RecordKind, RecordRef};
pub use scoring::{
    ACCOUNT_TOP_CONTACTS, ContactInputs, ContactScore, InputsRequest, LiveRanked,
    LiveRankedAccount, LiveState,
};
pub use tag::{NewTag, NewTagDto, Tag, TagColour, TagId, TagName, TagPatch, TagPatchDto};
pub use tagging::{Tagging, TaggingId};
pub use task::{
    NewTask, NewTaskDto, Task, TaskBody, TaskId, TaskPatch, TaskPatchDto, TaskPriority, TaskTitle,
};
pub use tenant::{Actor, Context, TenantId, Version};
pub(crate) use text::no_nul;
pub use time::{
    EARLIEST_MICROS, LATEST_MICROS, check_date, check_optional_timestamp, check_timestamp,
    check_timestamps, earliest_date, earliest_timestamp, latest_date, latest_timestamp,
    timestamp_from_micros,
};
pub use upsert::{
    ConflictPolicy, ImportLock, UpsertOutcome, company_merge_reason, conflict_patch, merge_reason,
    merged_survivor,
};
pub(crate) use upsert::{merge_context, same_record, with_merge_reason};

use chrono::{DateTime, Utc};

/// A point in time, UTC, at microsecond precision (what PostgreSQL stores).
/// The stores take years 1 to 9999: see [`check_timestamp`].
pub type Timestamp = DateTime<Utc>;

/// A timestamp as every backend keeps it: truncated to whole microseconds,
/// and a leap second (chrono's `23:59:60`) folded into the next second, as
/// PostgreSQL folds it (2016-12-31T23:59:60.5Z is 2017-01-01T00:00:00.5Z).
pub fn truncate_to_micros(t: Timestamp) -> Timestamp {
    // `timestamp_micros` counts a leap second's fraction on from the end
    // of the minute: exactly the instant PostgreSQL stores.
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// Generates a UUID-backed id newtype.
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(uuid::Uuid);

        impl $name {
            /// A new, time-ordered id (UUID v7).
            pub fn new() -> Self {
                Self(uuid::Uuid::now_v7())
            }

            /// Wraps an existing UUID (for ids read from storage or from the host).
            pub const fn from_uuid(id: uuid::Uuid) -> Self {
                Self(id)
            }

            /// The underlying UUID.
            pub const fn as_uuid(&self) -> uuid::Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl From<uuid::Uuid> for $name {
            fn from(id: uuid::Uuid) -> Self {
                Self(id)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Display::fmt(&self.0, f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                uuid::Uuid::parse_str(s).map(Self)
            }
        }
    };
}
pub(crate) use id_type;
