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
