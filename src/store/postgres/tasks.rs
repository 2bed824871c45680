//! Tasks on PostgreSQL: [`TasksTx`] for [`PgTransaction`]. The records a
//! task links to are checked with a key-share lock each (all in one round
//! trip), which keeps them from being deleted until the transaction ends;
//! a change locks the task, checks the version and writes the changed
//! record back. The lists are keyset pages over the indexes of migration
//! 5: an assignee's open tasks over `tasks_open_idx` (due time, undated
//! last, then id), the overdue ones over `tasks_overdue_idx` (or the open
//! index for one assignee), a record's tasks over its link's index.

use async_trait::async_trait;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::{
    locks::SHARE_CONTACT,
    rows,
    schema::{TASK_COLUMNS, task_select},
    transaction::{Params, PgTransaction, cursor_time, now},
};
use crate::{
    domain::*,
    error::{Entity, Error, Result},
    store::{
        Page, PageRequest, TasksTx,
        shared::check_version,
        tasks::shared::{
            Links, OpenKey, TimeKey, checked_time, created_key, links_of_new, links_of_patch,
            open_key, open_scope, overdue_key, overdue_scope, record_scope,
        },
    },
};

const GET_TASK: &str = concat!(
    "SELECT ",
    task_select!(),
    " FROM tasks WHERE tenant_id = $1 AND id = $2"
);
// A change never touches a key of the task: FOR NO KEY UPDATE.
const LOCK_TASK: &str = concat!(
    "SELECT ",
    task_select!(),
    " FROM tasks WHERE tenant_id = $1 AND id = $2 FOR NO KEY UPDATE"
);
/// Fails unless the company exists; holds a key-share lock on it.
const SHARE_COMPANY: &str =
    "SELECT 1 FROM companies WHERE tenant_id = $1 AND id = $2 FOR KEY SHARE";
/// Fails unless the deal exists; holds a key-share lock on it, which a
/// delete of the deal (or of its contact) waits for.
const SHARE_DEAL: &str = "SELECT 1 FROM deals WHERE tenant_id = $1 AND id = $2 FOR KEY SHARE";
/// A new task: the columns of [`TASK_COLUMNS`], the row reader's.
pub(super) const INSERT_TASK: &str = concat!(
    "INSERT INTO tasks (",
    task_select!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
);
/// The columns of a changed task: everything but its keys and creation
/// time, which never change.
const UPDATE_TASK: &str = "UPDATE tasks SET title = $3, body = $4, due_at = $5, done_at = $6, \
     assignee = $7, priority = $8, contact_id = $9, company_id = $10, deal_id = $11, \
     updated_at = $12, version = $13 WHERE tenant_id = $1 AND id = $2";
const DELETE_TASK: &str = "DELETE FROM tasks WHERE tenant_id = $1 AND id = $2";

// An assignee's open tasks walk `tasks_open_idx` (tenant_id, assignee,
// due_at, id) in its order: ascending, NULLS LAST (PostgreSQL's default
// for ascending order, and the index's), so the undated ones come last.
const OPEN_TASKS: &str = concat!(
    "SELECT ",
    task_select!(),
    " FROM tasks WHERE tenant_id = $1 AND assignee = $2 AND done_at IS NULL",
    " ORDER BY due_at, id LIMIT $3"
);
/// After a dated task: the dated ones after it, then the undated ones —
/// two range scans of the index, each cut at the limit.
const OPEN_TASKS_AFTER_DATED: &str = concat!(
    "SELECT ",
    task_select!(),
    " FROM ((SELECT ",
    task_select!(),
    " FROM tasks WHERE tenant_id = $1 AND assignee = $2 AND done_at IS NULL",
    " AND (due_at, id) > ($3, $4) ORDER BY due_at, id LIMIT $5)",
    " UNION ALL (SELECT ",
    task_select!(),
    " FROM tasks WHERE tenant_id = $1 AND assignee = $2 AND done_at IS NULL",
    " AND due_at IS NULL ORDER BY due_at, id LIMIT $5)) t ORDER BY due_at, id LIMIT $5"
);
/// After an undated task: the undated ones after it.
const OPEN_TASKS_AFTER_UNDATED: &str = concat!(
    "SELECT ",
    task_select!(),
    " FROM tasks WHERE tenant_id = $1 AND assignee = $2 AND done_at IS NULL",
    " AND due_at IS NULL AND id > $3 ORDER BY due_at, id LIMIT $4"
);
// Everyone's overdue tasks walk `tasks_overdue_idx` (tenant_id, due_at, id).
const OVERDUE_TASKS: &str = concat!(
    "SELECT ",
    task_select!(),
    " FROM tasks WHERE tenant_id = $1 AND done_at IS NULL AND due_at < $2",
    " ORDER BY due_at, id LIMIT $3"
);
const OVERDUE_TASKS_AFTER: &str = concat!(
    "SELECT ",
    task_select!(),
    " FROM tasks WHERE tenant_id = $1 AND done_at IS NULL AND due_at < $2",
    " AND (due_at, id) > ($3, $4) ORDER BY due_at, id LIMIT $5"
);
// One assignee's walk the open index.
const OVERDUE_TASKS_OF: &str = concat!(
    "SELECT ",
    task_select!(),
    " FROM tasks WHERE tenant_id = $1 AND assignee = $2 AND done_at IS NULL AND due_at < $3",
    " ORDER BY due_at, id LIMIT $4"
);
const OVERDUE_TASKS_OF_AFTER: &str = concat!(
    "SELECT ",
    task_select!(),
    " FROM tasks WHERE tenant_id = $1 AND assignee = $2 AND done_at IS NULL AND due_at < $3",
    " AND (due_at, id) > ($4, $5) ORDER BY due_at, id LIMIT $6"
);
// A record's tasks walk the index of its link, newest first.
const TASKS_OF_CONTACT: &str = concat!(
    "SELECT ",
    task_select!(),
    " FROM tasks WHERE tenant_id = $1 AND contact_id = $2",
    " ORDER BY created_at DESC, id DESC LIMIT $3"
);
const TASKS_OF_CONTACT_AFTER: &str = concat!(
    "SELECT ",
    task_select!(),
    " FROM tasks WHERE tenant_id = $1 AND contact_id = $2 AND (created_at, id) < ($3, $4)",
    " ORDER BY created_at DESC, id DESC LIMIT $5"
);
const TASKS_OF_COMPANY: &str = concat!(
    "SELECT ",
    task_select!(),
    " FROM tasks WHERE tenant_id = $1 AND company_id = $2",
    " ORDER BY created_at DESC, id DESC LIMIT $3"
);
const TASKS_OF_COMPANY_AFTER: &str = concat!(
    "SELECT ",
    task_select!(),
    " FROM tasks WHERE tenant_id = $1 AND company_id = $2 AND (created_at, id) < ($3, $4)",
    " ORDER BY created_at DESC, id DESC LIMIT $5"
);
const TASKS_OF_DEAL: &str = concat!(
    "SELECT ",
    task_select!(),
    " FROM tasks WHERE tenant_id = $1 AND deal_id = $2",
    " ORDER BY created_at DESC, id DESC LIMIT $3"
);
const TASKS_OF_DEAL_AFTER: &str = concat!(
    "SELECT ",
    task_select!(),
    " FROM tasks WHERE tenant_id = $1 AND deal_id = $2 AND (created_at, id) < ($3, $4)",
    " ORDER BY created_at DESC, id DESC LIMIT $5"
);

/// The fixed statements of this file, for [`super::statements`].
pub(super) const STATEMENTS: &[(&str, &str)] = super::statements::listed![
    GET_TASK,
    LOCK_TASK,
    SHARE_COMPANY,
    SHARE_DEAL,
    INSERT_TASK,
    UPDATE_TASK,
    DELETE_TASK,
    OPEN_TASKS,
    OPEN_TASKS_AFTER_DATED,
    OPEN_TASKS_AFTER_UNDATED,
    OVERDUE_TASKS,
    OVERDUE_TASKS_AFTER,
    OVERDUE_TASKS_OF,
    OVERDUE_TASKS_OF_AFTER,
    TASKS_OF_CONTACT,
    TASKS_OF_CONTACT_AFTER,
    TASKS_OF_COMPANY,
    TASKS_OF_COMPANY_AFTER,
    TASKS_OF_DEAL,
    TASKS_OF_DEAL_AFTER,
];

impl PgTransaction {
    /// Fails with `NotFound` naming the first record of `links` that does
    /// not exist (contact, company, deal); holds a key-share lock on each
    /// one that does, so that none is deleted before this transaction
    /// ends. One round trip, none without links; writes nothing.
    async fn share_links(&mut self, links: Links) -> Result<()> {
        let tenant = self.tenant_uuid();
        let mut wanted: Vec<(&str, Uuid, Entity)> = Vec::with_capacity(3);
        if let Some(id) = links.contact {
            wanted.push((SHARE_CONTACT, id.as_uuid(), Entity::Contact));
        }
        if let Some(id) = links.company {
            wanted.push((SHARE_COMPANY, id.as_uuid(), Entity::Company));
        }
        if let Some(id) = links.deal {
            wanted.push((SHARE_DEAL, id.as_uuid(), Entity::Deal));
        }
        if wanted.is_empty() {
            return Ok(());
        }
        self.check_open()?;
        let params: Vec<[&(dyn ToSql + Sync); 2]> = wanted
            .iter()
            .map(|(_, id, _)| [&tenant as _, id as _])
            .collect();
        let statements: Vec<(&str, &Params<'_>)> = wanted
            .iter()
            .zip(&params)
            .map(|((sql, _, _), p)| (*sql, &p[..]))
            .collect();
        let begin = self.pending_begin.take().is_some();
        let result = self.raw_query_all(&statements, begin).await;
        let found = self.settle(result)?;
        for (i, (_, id, entity)) in wanted.iter().enumerate() {
            if found.get(i).is_none_or(|rows| rows.is_empty()) {
                return Err(Error::not_found(*entity, id));
            }
        }
        Ok(())
    }

    /// Locks a task to change it.
    async fn lock_task(&mut self, id: TaskId) -> Result<Task> {
        let tenant = self.tenant_uuid();
        match self.query_opt(LOCK_TASK, &[&tenant, &id.as_uuid()]).await? {
            Some(row) => rows::task(&row),
            None => Err(Error::not_found(Entity::Task, id)),
        }
    }

    /// Writes a changed task (locked by this transaction).
    async fn write_task(&mut self, t: Task) -> Result<Task> {
        let tenant = self.tenant_uuid();
        self.execute(
            UPDATE_TASK,
            &[
                &tenant,
                &t.id.as_uuid(),
                &t.title.as_str(),
                &t.body.as_ref().map(|v| v.as_str()),
                &t.due_at,
                &t.done_at,
                &t.assignee.as_ref().map(|v| v.as_str()),
                &t.priority.as_str(),
                &t.contact_id.map(|v| v.as_uuid()),
                &t.company_id.map(|v| v.as_uuid()),
                &t.deal_id.map(|v| v.as_uuid()),
                &t.updated_at,
                &t.version.get(),
            ],
        )
        .await?;
        Ok(t)
    }

    /// The tasks of `sql` with `params`.
    async fn tasks(&mut self, sql: &str, params: &Params<'_>) -> Result<Vec<Task>> {
        let rows = self.query(sql, params).await?;
        rows::all(&rows, rows::task)
    }
}

#[async_trait]
impl TasksTx for PgTransaction {
    async fn create_task(&mut self, new: NewTask) -> Result<Task> {
        let new = new.checked()?;
        self.share_links(links_of_new(&new)).await?;
        let t = Task::create(self.tenant, new, now());
        let params: [&(dyn ToSql + Sync); TASK_COLUMNS.len()] = [
            &t.tenant_id.as_uuid(),
            &t.id.as_uuid(),
            &t.title.as_str(),
            &t.body.as_ref().map(|v| v.as_str()),
            &t.due_at,
            &t.done_at,
            &t.assignee.as_ref().map(|v| v.as_str()),
            &t.priority.as_str(),
            &t.contact_id.map(|v| v.as_uuid()),
            &t.company_id.map(|v| v.as_uuid()),
            &t.deal_id.map(|v| v.as_uuid()),
            &t.created_at,
            &t.updated_at,
            &t.version.get(),
        ];
        self.execute(INSERT_TASK, &params).await?;
        Ok(t)
    }

    async fn get_task(&mut self, id: TaskId) -> Result<Option<Task>> {
        let tenant = self.tenant_uuid();
        self.query_opt(GET_TASK, &[&tenant, &id.as_uuid()])
            .await?
            .map(|r| rows::task(&r))
            .transpose()
    }

    async fn update_task(
        &mut self,
        id: TaskId,
        expected: Version,
        patch: TaskPatch,
    ) -> Result<Task> {
        let patch = patch.checked()?;
        // The linked records before the task: a delete of a record locks
        // it, then its tasks, in that order too.
        self.share_links(links_of_patch(&patch)).await?;
        let current = self.lock_task(id).await?;
        check_version(Entity::Task, id, expected, current.version)?;
        match current.patched(&patch, now()) {
            None => Ok(current),
            Some(next) => self.write_task(next).await,
        }
    }

    async fn complete_task(&mut self, id: TaskId, at: Timestamp) -> Result<Task> {
        let at = checked_time("at", at)?;
        let current = self.lock_task(id).await?;
        match current.completed(at, now()) {
            None => Ok(current),
            Some(next) => self.write_task(next).await,
        }
    }

    async fn reopen_task(&mut self, id: TaskId) -> Result<Task> {
        let current = self.lock_task(id).await?;
        match current.reopened(now()) {
            None => Ok(current),
            Some(next) => self.write_task(next).await,
        }
    }

    async fn delete_task(&mut self, id: TaskId) -> Result<bool> {
        let tenant = self.tenant_uuid();
        Ok(self.execute(DELETE_TASK, &[&tenant, &id.as_uuid()]).await? > 0)
    }

    async fn open_tasks(&mut self, assignee: &OwnerId, page: &PageRequest) -> Result<Page<Task>> {
        let limit = page.checked_limit()?;
        let list = open_scope(assignee);
        let after: Option<OpenKey> = page.position(list)?;
        let (tenant, who, fetch) = (self.tenant_uuid(), assignee.as_str(), limit as i64 + 1);
        let items = match after {
            None => self.tasks(OPEN_TASKS, &[&tenant, &who, &fetch]).await?,
            Some((Some(micros), id)) => {
                let due = cursor_time(micros)?;
                self.tasks(OPEN_TASKS_AFTER_DATED, &[&tenant, &who, &due, &id, &fetch])
                    .await?
            }
            Some((None, id)) => {
                self.tasks(OPEN_TASKS_AFTER_UNDATED, &[&tenant, &who, &id, &fetch])
                    .await?
            }
        };
        Ok(Page::from_overfetch(items, limit, list, open_key))
    }

    async fn overdue_tasks(
        &mut self,
        now: Timestamp,
        assignee: Option<&OwnerId>,
        page: &PageRequest,
    ) -> Result<Page<Task>> {
        let now = checked_time("now", now)?;
        let limit = page.checked_limit()?;
        let list = overdue_scope(now, assignee);
        let after: Option<TimeKey> = page.position(list)?;
        let (tenant, fetch) = (self.tenant_uuid(), limit as i64 + 1);
        let after = after
            .map(|(micros, id)| cursor_time(micros).map(|at| (at, id)))
            .transpose()?;
        let items = match (assignee.map(OwnerId::as_str), after) {
            (None, None) => self.tasks(OVERDUE_TASKS, &[&tenant, &now, &fetch]).await?,
            (None, Some((due, id))) => {
                self.tasks(OVERDUE_TASKS_AFTER, &[&tenant, &now, &due, &id, &fetch])
                    .await?
            }
            (Some(who), None) => {
                self.tasks(OVERDUE_TASKS_OF, &[&tenant, &who, &now, &fetch])
                    .await?
            }
            (Some(who), Some((due, id))) => {
                self.tasks(
                    OVERDUE_TASKS_OF_AFTER,
                    &[&tenant, &who, &now, &due, &id, &fetch],
                )
                .await?
            }
        };
        Ok(Page::from_overfetch(items, limit, list, overdue_key))
    }

    async fn tasks_of(&mut self, record: RecordRef, page: &PageRequest) -> Result<Page<Task>> {
        let limit = page.checked_limit()?;
        let list = record_scope(record);
        let after: Option<TimeKey> = page.position(list)?;
        let (first, next) = match record {
            RecordRef::Contact(_) => (TASKS_OF_CONTACT, TASKS_OF_CONTACT_AFTER),
            RecordRef::Company(_) => (TASKS_OF_COMPANY, TASKS_OF_COMPANY_AFTER),
            RecordRef::Deal(_) => (TASKS_OF_DEAL, TASKS_OF_DEAL_AFTER),
        };
        let (tenant, of, fetch) = (self.tenant_uuid(), record.id_uuid(), limit as i64 + 1);
        let items = match after {
            None => self.tasks(first, &[&tenant, &of, &fetch]).await?,
            Some((micros, id)) => {
                let at = cursor_time(micros)?;
                self.tasks(next, &[&tenant, &of, &at, &id, &fetch]).await?
            }
        };
        Ok(Page::from_overfetch(items, limit, list, created_key))
    }
}
