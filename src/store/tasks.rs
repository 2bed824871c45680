//! The tasks of a tenant ([`TasksTx`]).

use async_trait::async_trait;

#[cfg(doc)]
use crate::error::Error;
use crate::{domain::*, error::Result};

/// The tasks of the transaction's tenant: work for an assignee, linked to a
/// contact, a company and/or a deal. Part of [`Transaction`](crate::Transaction).
///
/// # Contract
///
/// Beside the points on [`Store`](crate::Store):
///
/// - **Links** name records that exist ([`Error::NotFound`] otherwise).
///   Deleting a contact, company or deal unlinks its tasks (each a
///   recorded change of the task) and never deletes them.
/// - **Open tasks** are those without `done_at`; they are listed by due
///   time, earliest first, undated ones last, ties by id.
#[async_trait]
pub trait TasksTx: Send {
    /// Creates a task (version 1, open).
    ///
    /// Errors: [`Error::NotFound`] for a linked record.
    async fn create_task(&mut self, new: NewTask) -> Result<Task>;

    /// A task by id.
    async fn get_task(&mut self, id: TaskId) -> Result<Option<Task>>;

    /// Applies `patch` if the task is at `expected`.
    ///
    /// Errors: [`Error::NotFound`] (for the task or a linked record),
    /// [`Error::Conflict`].
    async fn update_task(
        &mut self,
        id: TaskId,
        expected: Version,
        patch: TaskPatch,
    ) -> Result<Task>;

    /// Marks the task done at `at` (a no-op when it is done already).
    ///
    /// Errors: [`Error::NotFound`]; [`Error::Validation`] on `at`.
    async fn complete_task(&mut self, id: TaskId, at: Timestamp) -> Result<Task>;

    /// Opens a done task again (a no-op when it is open).
    ///
    /// Errors: [`Error::NotFound`].
    async fn reopen_task(&mut self, id: TaskId) -> Result<Task>;

    /// Deletes a task. `Ok(false)` when there was none.
    async fn delete_task(&mut self, id: TaskId) -> Result<bool>;

    /// The open tasks of `assignee`, by due time (undated last), then id.
    async fn open_tasks(&mut self, assignee: &OwnerId, page: &PageRequest) -> Result<Page<Task>>;

    /// The open tasks due before `now` (of `assignee` only, when given),
    /// by due time, then id.
    ///
    /// Errors: [`Error::Validation`] on `now`.
    async fn overdue_tasks(
        &mut self,
        now: Timestamp,
        assignee: Option<&OwnerId>,
        page: &PageRequest,
    ) -> Result<Page<Task>>;

    /// The tasks linked to `record`, newest first (`created_at`, then id).
    async fn tasks_of(&mut self, record: RecordRef, page: &PageRequest) -> Result<Page<Task>>;
}

/// What every backend's tasks share: the lists' cursor scopes and
/// positions, and the checks made before anything is read.
pub(crate) mod shared {
    use uuid::Uuid;

    use crate::{
        domain::{
            CompanyId, ContactId, CursorList, DealId, ListScope, NewTask, OwnerId, RecordRef, Task,
            TaskPatch, Timestamp, check_timestamp,
        },
        error::{Result, ValidationErrors},
    };

    /// The position of a task in an assignee's open tasks: its due time
    /// in microseconds (`None`: undated, after every dated one), its id.
    pub(crate) type OpenKey = (Option<i64>, Uuid);

    /// The position of a task in the overdue tasks and in a record's tasks
    /// (due time, or creation time, in microseconds; its id).
    pub(crate) type TimeKey = (i64, Uuid);

    /// [`open_tasks`](super::TasksTx::open_tasks) of `assignee`.
    pub(crate) fn open_scope(assignee: &OwnerId) -> ListScope {
        CursorList::OpenTasks.scoped(assignee)
    }

    /// [`overdue_tasks`](super::TasksTx::overdue_tasks) before `now`, of
    /// `assignee` (or of everyone).
    pub(crate) fn overdue_scope(now: Timestamp, assignee: Option<&OwnerId>) -> ListScope {
        CursorList::OverdueTasks.scoped(&(now.timestamp_micros(), assignee))
    }

    /// [`tasks_of`](super::TasksTx::tasks_of) `record`.
    pub(crate) fn record_scope(record: RecordRef) -> ListScope {
        CursorList::TasksOfRecord.scoped(&record)
    }

    /// A task's position in its assignee's open tasks.
    pub(crate) fn open_key(t: &Task) -> OpenKey {
        (t.due_at.map(|d| d.timestamp_micros()), t.id.as_uuid())
    }

    /// An open-tasks position as it sorts: dated ones by time, then the
    /// undated ones; ties by id.
    pub(crate) fn open_order(k: &OpenKey) -> (bool, i64, Uuid) {
        (k.0.is_none(), k.0.unwrap_or(0), k.1)
    }

    /// A task's position in the overdue tasks.
    pub(crate) fn overdue_key(t: &Task) -> TimeKey {
        (
            t.due_at.map_or(i64::MIN, |d| d.timestamp_micros()),
            t.id.as_uuid(),
        )
    }

    /// A task's position in a record's tasks (newest first).
    pub(crate) fn created_key(t: &Task) -> TimeKey {
        (t.created_at.timestamp_micros(), t.id.as_uuid())
    }

    /// `t` checked as the time named `field` (`at`, `now`).
    pub(crate) fn checked_time(field: &str, t: Timestamp) -> Result<Timestamp> {
        check_timestamp(field, t).map_err(|e| ValidationErrors::single(e).into())
    }

    /// The records a new task links to.
    pub(crate) fn links_of_new(new: &NewTask) -> Links {
        Links {
            contact: new.contact_id,
            company: new.company_id,
            deal: new.deal_id,
        }
    }

    /// The records a patch links the task to (those it sets, not those it
    /// clears or leaves).
    pub(crate) fn links_of_patch(patch: &TaskPatch) -> Links {
        Links {
            contact: patch.contact_id.flatten(),
            company: patch.company_id.flatten(),
            deal: patch.deal_id.flatten(),
        }
    }

    /// The records an operation links a task to, each checked to exist
    /// (in this order) before anything is written.
    #[derive(Debug, Clone, Copy, Default)]
    pub(crate) struct Links {
        pub(crate) contact: Option<ContactId>,
        pub(crate) company: Option<CompanyId>,
        pub(crate) deal: Option<DealId>,
    }

    /// Whether `t` is linked to `record`.
    pub(crate) fn is_linked(t: &Task, record: RecordRef) -> bool {
        match record {
            RecordRef::Contact(id) => t.contact_id == Some(id),
            RecordRef::Company(id) => t.company_id == Some(id),
            RecordRef::Deal(id) => t.deal_id == Some(id),
        }
    }
}
