//! The change feed's records: where an event stands ([`FeedPosition`]),
//! what changed ([`FeedEvent`], [`FeedKind`]) and who reads
//! ([`ConsumerName`]). The feed itself is described in [`crate::feed`].

use std::{collections::BTreeMap, fmt};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{EntityKind, FieldChange, Operation, Timestamp, text::text_type};
use crate::domain::error::{FieldError, ValidationErrors};

text_type!(
    /// The name of a feed consumer: 1–100 characters after trimming. Each
    /// tenant's consumers are told apart by their names, compared byte by
    /// byte.
    ConsumerName, field = "consumer", min = 1, max = 100, multiline = false
);

/// The most events one read of the feed returns.
pub const MAX_FEED_BATCH: usize = 10_000;

/// Checks the size a caller asks of one read of the feed (1 to
/// [`MAX_FEED_BATCH`]), reporting the error under `max`.
pub fn check_feed_batch(max: usize) -> Result<usize, ValidationErrors> {
    if (1..=MAX_FEED_BATCH).contains(&max) {
        Ok(max)
    } else {
        Err(ValidationErrors::single(FieldError::new(
            "max",
            "out_of_range",
            format!("must be between 1 and {MAX_FEED_BATCH}, got {max}"),
        )))
    }
}

/// Where an event stands in its tenant's feed: the number of its commit
/// (the tenant's transactions that wrote events, numbered 1, 2, 3, … in
/// the order they committed, with no gap) and its index in that commit
/// (1, 2, 3, … in the order it was written). Positions order the feed:
/// by commit, then index.
///
/// A consumer's cursor is a position too: every event after it is still
/// to be read. [`FeedPosition::START`] comes before every event.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct FeedPosition {
    /// The commit's number (0 only in [`FeedPosition::START`]).
    pub commit: i64,
    /// The event's index in its commit (0 before its first event).
    pub index: i32,
}

impl FeedPosition {
    /// Before every event.
    pub const START: FeedPosition = FeedPosition {
        commit: 0,
        index: 0,
    };

    /// The position of event `index` of commit `commit`.
    pub const fn new(commit: i64, index: i32) -> Self {
        FeedPosition { commit, index }
    }

    /// Checks a position a caller gives: neither part negative. Reports
    /// the error under `field`.
    pub fn checked(self, field: &str) -> Result<Self, ValidationErrors> {
        if self.commit < 0 || self.index < 0 {
            Err(ValidationErrors::single(FieldError::new(
                field,
                "out_of_range",
                format!("must not be negative, got {self}"),
            )))
        } else {
            Ok(self)
        }
    }
}

impl fmt::Display for FeedPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.commit, self.index)
    }
}

/// The kinds of record whose changes the feed carries.
///
/// More kinds may come as the CRM grows: a `match` on it outside this
/// crate needs a `_` arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FeedKind {
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
    /// An activity on a contact's timeline.
    Activity,
    /// A scoring signal.
    Signal,
    /// A contact's stored score, changed by a score write-back (batch
    /// rescoring); the id is the contact's. Only from a store configured
    /// to announce scores (`with_score_events`); never by default.
    Score,
}

impl FeedKind {
    /// Its name as stored: `contact`, `deal`, `company`, `tag`, `tagging`,
    /// `task`, `activity`, `signal` or `score`.
    pub fn as_str(self) -> &'static str {
        match self {
            FeedKind::Contact => "contact",
            FeedKind::Deal => "deal",
            FeedKind::Company => "company",
            FeedKind::Tag => "tag",
            FeedKind::Tagging => "tagging",
            FeedKind::Task => "task",
            FeedKind::Activity => "activity",
            FeedKind::Signal => "signal",
            FeedKind::Score => "score",
        }
    }

    /// The kind named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "activity" => Some(FeedKind::Activity),
            "signal" => Some(FeedKind::Signal),
            "score" => Some(FeedKind::Score),
            other => EntityKind::parse(other).map(FeedKind::from),
        }
    }
}

impl From<EntityKind> for FeedKind {
    fn from(kind: EntityKind) -> Self {
        match kind {
            EntityKind::Contact => FeedKind::Contact,
            EntityKind::Deal => FeedKind::Deal,
            EntityKind::Company => FeedKind::Company,
            EntityKind::Tag => FeedKind::Tag,
            EntityKind::Tagging => FeedKind::Tagging,
            EntityKind::Task => FeedKind::Task,
        }
    }
}

impl fmt::Display for FeedKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One committed change, as the feed hands it out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedEvent {
    /// Where it stands in the tenant's feed.
    pub position: FeedPosition,
    /// When its transaction committed (the same for every event of it).
    pub committed_at: Timestamp,
    /// What kind of record changed.
    pub kind: FeedKind,
    /// The record's id.
    pub id: Uuid,
    /// What happened to it.
    pub operation: Operation,
    /// The record's version after the change (`None` for records without
    /// versions: taggings, activities, signals).
    pub version: Option<i64>,
    /// The changed fields, as the history records them (see
    /// [`crate::history`]): `None` for activities and signals, which the
    /// history does not keep, and when the history version was purged. A
    /// [`FeedKind::Score`] event carries `score` with its old and new value.
    pub diff: Option<BTreeMap<String, FieldChange>>,
    /// Who made the change.
    pub actor: String,
    /// Why, if the context said.
    pub reason: Option<String>,
    /// The request or event id, if the context had one.
    pub request_id: Option<String>,
    /// The idempotency key of the event being handled, if any.
    pub idempotency_key: Option<String>,
}
