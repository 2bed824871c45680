//! The one error type of the crate. Its variants are *kinds* that callers
//! branch on; backend failures keep their source error.

use std::fmt;

use super::{ContactId, Email, StageKey};

/// `Result` with the crate's [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A boxed error from a backend, kept as the source of [`Error::Backend`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in crm-core.
///
/// Match on the variant (or on [`Error::kind`]) to decide what to do: a
/// [`Validation`](Error::Validation) error goes back to whoever sent the input,
/// a [`Conflict`](Error::Conflict) means "reload and retry", a
/// [`Backend`](Error::Backend) error with [`Error::is_retryable`] may succeed
/// when the whole transaction is tried again.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Input failed validation. Holds *every* field error, not just the first.
    #[error("invalid input: {0}")]
    Validation(ValidationErrors),

    /// Another contact of the tenant already has this email (compared
    /// case-insensitively).
    #[error("a contact with email {email} already exists (id {existing_id})")]
    DuplicateEmail {
        /// The email as it was submitted.
        email: Email,
        /// The contact that already holds the email.
        existing_id: ContactId,
    },

    /// Another record of the tenant already holds this unique value: a
    /// company's domain or a tag's name (compared as their one definition
    /// compares them: the normalised domain, the name's caseless key), or
    /// an id in an external system, which another record of the same kind
    /// is linked to (`external_id`; see
    /// [`ExternalIdsTx`](crate::store::ExternalIdsTx)).
    #[error("a {entity} with {field} {value} already exists (id {existing_id})")]
    Duplicate {
        /// What kind of record.
        entity: Entity,
        /// The unique field: `domain`, `name` or `external_id`.
        field: &'static str,
        /// The value as it was submitted.
        value: String,
        /// The record that already holds it (for `external_id`, the id
        /// of the record of that kind linked to it).
        existing_id: String,
    },

    /// The record does not exist in this tenant (or was deleted).
    #[error("{entity} {id} not found")]
    NotFound {
        /// What kind of record was looked for.
        entity: Entity,
        /// Its id.
        id: String,
    },

    /// The record changed since it was read: its version is not the expected one.
    #[error("{entity} {id} was changed concurrently: expected version {expected}, found {actual}")]
    Conflict {
        /// What kind of record.
        entity: Entity,
        /// Its id.
        id: String,
        /// The version the caller based its change on.
        expected: i64,
        /// The version the record has now.
        actual: i64,
    },

    /// The deal's stage machine refused the move.
    #[error("a deal cannot move from {from} to {to}: {why}")]
    InvalidTransition {
        /// The stage the deal is in.
        from: StageKey,
        /// The stage that was asked for.
        to: StageKey,
        /// Why the move is refused.
        why: String,
    },

    /// The storage backend failed. `retryable` is true for failures that a
    /// retry of the whole transaction may cure (serialization failures,
    /// deadlocks, lost connections).
    #[error("storage backend failed{}: {source}", if *retryable { " (retryable)" } else { "" })]
    Backend {
        /// Whether retrying the whole transaction may succeed.
        retryable: bool,
        /// The backend's own error.
        #[source]
        source: BoxError,
    },

    /// Another delivery of the same inbound event (same tenant, source and
    /// key) is being handled right now and did not finish within the
    /// guard's wait (or the guard does not wait). Retryable: the retry
    /// replays that delivery's result, or runs the handler if it failed.
    #[error(
        "the idempotency key {event_source}:{key} is held by a delivery still being handled; try again"
    )]
    KeyInUse {
        /// Where the event came from.
        event_source: super::idempotency::IdempotencySource,
        /// The event's key.
        key: super::idempotency::IdempotencyKey,
    },

    /// The idempotency key was already used for an event with another
    /// payload: a provider bug or a key collision, never a retry.
    #[error(
        "the idempotency key {}:{} was used at {} for another payload ({}), not {fingerprint}",
        original.source, original.key, original.created_at, original.fingerprint
    )]
    FingerprintMismatch {
        /// The record of the first use: when, its fingerprint, its stored result.
        original: Box<super::idempotency::IdempotencyRecord>,
        /// The fingerprint of the payload just received.
        fingerprint: super::idempotency::Fingerprint,
    },

    /// A read of the change feed asked for events the retention has
    /// purged: the consumer's cursor (or the position read from) is behind
    /// the oldest event still held. Nothing skips ahead on its own: move
    /// the cursor (`ack`) to a retained position, knowing what was lost.
    #[error(
        "the feed position {position}{} is behind the retention: events up to {purged} were purged",
        consumer.as_ref().map(|c| format!(" of consumer {c}")).unwrap_or_default()
    )]
    FeedExpired {
        /// The consumer whose cursor it is, when a consumer read.
        consumer: Option<super::feed::ConsumerName>,
        /// The position read from.
        position: super::feed::FeedPosition,
        /// The last purged position: reads start after it.
        purged: super::feed::FeedPosition,
    },

    /// A merge of two contacts cannot be undone, for the reason given
    /// (survivor fields edited since are listed by name). Nothing was
    /// written.
    #[error("merge {merge} cannot be undone: {refusal}")]
    UnmergeRefused {
        /// The merge.
        merge: super::merge::MergeId,
        /// Why.
        refusal: super::merge::UnmergeRefusal,
    },
}

impl Error {
    /// The kind of this error, for matching without destructuring.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Validation(_) => ErrorKind::Validation,
            Error::DuplicateEmail { .. } => ErrorKind::DuplicateEmail,
            Error::Duplicate { .. } => ErrorKind::Duplicate,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::Conflict { .. } => ErrorKind::Conflict,
            Error::InvalidTransition { .. } => ErrorKind::InvalidTransition,
            Error::Backend { .. } => ErrorKind::Backend,
            Error::KeyInUse { .. } => ErrorKind::KeyInUse,
            Error::FingerprintMismatch { .. } => ErrorKind::FingerprintMismatch,
            Error::FeedExpired { .. } => ErrorKind::FeedExpired,
            Error::UnmergeRefused { .. } => ErrorKind::UnmergeRefused,
        }
    }

    /// True when trying the whole transaction again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Backend {
                retryable: true,
                ..
            } | Error::KeyInUse { .. }
        )
    }

    /// True when a commit's answer was lost (the connection went away
    /// after the commit was sent): the transaction may have committed or
    /// not. Not retryable as such; a caller whose transaction is safe to run
    /// twice (an ack, an idempotent write) may run it again.
    pub fn is_commit_outcome_unknown(&self) -> bool {
        matches!(self, Error::Backend { source, .. } if source.is::<CommitOutcomeUnknown>())
    }

    /// A backend error that is not retryable.
    pub fn backend(source: impl Into<BoxError>) -> Self {
        Error::Backend {
            retryable: false,
            source: source.into(),
        }
    }

    /// A backend error that a retry of the transaction may cure.
    pub fn retryable(source: impl Into<BoxError>) -> Self {
        Error::Backend {
            retryable: true,
            source: source.into(),
        }
    }

    pub(crate) fn not_found(entity: Entity, id: impl fmt::Display) -> Self {
        Error::NotFound {
            entity,
            id: id.to_string(),
        }
    }

    /// The field errors, when this is a validation error.
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            Error::Validation(errors) => errors.as_slice(),
            _ => &[],
        }
    }
}

impl From<ValidationErrors> for Error {
    fn from(errors: ValidationErrors) -> Self {
        Error::Validation(errors)
    }
}

/// The source of an [`Error::Backend`] whose commit's answer never came
/// (see [`Error::is_commit_outcome_unknown`]): the connection went away
/// after the commit was sent, so the transaction may have committed or
/// not.
#[derive(Debug, thiserror::Error)]
#[error(
    "the connection was lost before the answer to COMMIT ({0}): the transaction may have \
     committed; look for its writes before running it again"
)]
pub struct CommitOutcomeUnknown(#[source] pub(crate) BoxError);

/// The kinds of [`Error`], without their data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// See [`Error::Validation`].
    Validation,
    /// See [`Error::DuplicateEmail`].
    DuplicateEmail,
    /// See [`Error::Duplicate`].
    Duplicate,
    /// See [`Error::NotFound`].
    NotFound,
    /// See [`Error::Conflict`].
    Conflict,
    /// See [`Error::InvalidTransition`].
    InvalidTransition,
    /// See [`Error::Backend`].
    Backend,
    /// See [`Error::KeyInUse`].
    KeyInUse,
    /// See [`Error::FingerprintMismatch`].
    FingerprintMismatch,
    /// See [`Error::FeedExpired`].
    FeedExpired,
    /// See [`Error::UnmergeRefused`].
    UnmergeRefused,
}

/// The kinds of record the store keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Entity {
    /// A contact.
    Contact,
    /// A deal.
    Deal,
    /// An activity.
    Activity,
    /// A pipeline definition.
    Pipeline,
    /// A company.
    Company,
    /// A tag.
    Tag,
    /// A task.
    Task,
    /// A tag attached to a record.
    Tagging,
    /// A merge of two contacts, in the merge journal.
    Merge,
}

impl From<super::history::EntityKind> for Entity {
    fn from(kind: super::history::EntityKind) -> Self {
        use super::history::EntityKind;
        match kind {
            EntityKind::Contact => Entity::Contact,
            EntityKind::Deal => Entity::Deal,
            EntityKind::Company => Entity::Company,
            EntityKind::Tag => Entity::Tag,
            EntityKind::Tagging => Entity::Tagging,
            EntityKind::Task => Entity::Task,
        }
    }
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Entity::Contact => "contact",
            Entity::Deal => "deal",
            Entity::Activity => "activity",
            Entity::Pipeline => "pipeline",
            Entity::Company => "company",
            Entity::Tag => "tag",
            Entity::Task => "task",
            Entity::Tagging => "tagging",
            Entity::Merge => "merge",
        })
    }
}

/// One field that failed validation: which field, a stable machine-readable
/// code and a human-readable reason.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    /// The field's name as it appears in the input (`"email"`, `"metadata.plan"`).
    pub field: String,
    /// A stable code: `required`, `too_long`, `too_short`, `invalid_format`,
    /// `out_of_range`, `unknown_value`, `unknown_field`, `too_deep`, `too_large`,
    /// `in_future` (a time after now), `out_of_order` (a time before
    /// another it must follow, as an original `updated_at` before its
    /// `created_at`), `duplicate` (a value another row of the input, or
    /// another record, already holds).
    pub code: &'static str,
    /// What is wrong, in words.
    pub reason: String,
}

impl FieldError {
    /// A field error.
    pub fn new(field: impl Into<String>, code: &'static str, reason: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            code,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for FieldError {}

impl From<FieldError> for Error {
    fn from(error: FieldError) -> Self {
        Error::Validation(ValidationErrors::single(error))
    }
}

/// Every field error of one input, in the order the fields were checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct ValidationErrors(Vec<FieldError>);

impl ValidationErrors {
    /// No errors yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A single field error.
    pub fn single(error: FieldError) -> Self {
        ValidationErrors(vec![error])
    }

    /// Adds one error.
    pub fn push(&mut self, error: FieldError) {
        self.0.push(error);
    }

    /// True when nothing failed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The errors.
    pub fn as_slice(&self) -> &[FieldError] {
        &self.0
    }

    /// The errors of one field.
    pub fn for_field<'a>(&'a self, field: &'a str) -> impl Iterator<Item = &'a FieldError> + 'a {
        self.0.iter().filter(move |e| e.field == field)
    }

    /// Records the error of `result` (if any) and returns its value.
    pub fn check<T>(&mut self, result: Result<T, FieldError>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.push(e);
                None
            }
        }
    }

    /// `Ok(value)` when no error was recorded, the errors otherwise.
    pub fn finish<T>(self, value: impl FnOnce() -> T) -> Result<T, ValidationErrors> {
        if self.0.is_empty() {
            Ok(value())
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

impl IntoIterator for ValidationErrors {
    type Item = FieldError;
    type IntoIter = std::vec::IntoIter<FieldError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}
