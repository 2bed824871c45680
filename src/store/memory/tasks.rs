//! Tasks in the memory store ([`TasksTx`]).

use async_trait::async_trait;

use super::MemoryTransaction;
use crate::{
    domain::*,
    error::{Error, Result},
    store::{Page, PageRequest, TasksTx},
};

fn not_yet() -> Error {
    Error::backend("not implemented yet")
}

#[async_trait]
impl TasksTx for MemoryTransaction {
    async fn create_task(&mut self, new: NewTask) -> Result<Task> {
        let _ = (new,);
        Err(not_yet())
    }

    async fn get_task(&mut self, id: TaskId) -> Result<Option<Task>> {
        let _ = (id,);
        Err(not_yet())
    }

    async fn update_task(
        &mut self,
        id: TaskId,
        expected: Version,
        patch: TaskPatch,
    ) -> Result<Task> {
        let _ = (id, expected, patch);
        Err(not_yet())
    }

    async fn complete_task(&mut self, id: TaskId, at: Timestamp) -> Result<Task> {
        let _ = (id, at);
        Err(not_yet())
    }

    async fn reopen_task(&mut self, id: TaskId) -> Result<Task> {
        let _ = (id,);
        Err(not_yet())
    }

    async fn delete_task(&mut self, id: TaskId) -> Result<bool> {
        let _ = (id,);
        Err(not_yet())
    }

    async fn open_tasks(&mut self, assignee: &OwnerId, page: &PageRequest) -> Result<Page<Task>> {
        let _ = (assignee, page);
        Err(not_yet())
    }

    async fn overdue_tasks(
        &mut self,
        now: Timestamp,
        assignee: Option<&OwnerId>,
        page: &PageRequest,
    ) -> Result<Page<Task>> {
        let _ = (now, assignee, page);
        Err(not_yet())
    }

    async fn tasks_of(&mut self, record: RecordRef, page: &PageRequest) -> Result<Page<Task>> {
        let _ = (record, page);
        Err(not_yet())
    }
}
