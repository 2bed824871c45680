//! Tasks in the memory store ([`TasksTx`]): kept by id; the lists sort the
//! tenant's tasks that match, which is all a store for tests and small
//! tools needs.

use async_trait::async_trait;

use super::MemoryTransaction;
use crate::{
    domain::*,
    error::{Entity, Result},
    store::{
        Page, PageRequest, TasksTx,
        shared::{self, now},
        tasks::shared::{
            Links, OpenKey, TimeKey, checked_time, created_key, is_linked, links_of_new,
            links_of_patch, open_key, open_order, open_scope, overdue_key, overdue_scope,
            record_scope,
        },
    },
};

impl MemoryTransaction {
    /// Fails with `NotFound` naming the first record of `links` that does
    /// not exist (contact, company, deal).
    fn check_task_links(&self, links: Links) -> Result<()> {
        if let Some(id) = links.contact {
            self.contact(id)?;
        }
        if let Some(id) = links.company {
            self.company(id)?;
        }
        if let Some(id) = links.deal {
            self.deal(id)?;
        }
        Ok(())
    }

    /// Unlinks from every task the contacts and deals for which `unlink`
    /// says so (a task may lose both at once), each a change of the task
    /// made at `at`. For a delete of what the tasks link to.
    pub(super) fn unlink_tasks(
        &mut self,
        unlink_contact: impl Fn(ContactId) -> bool,
        unlink_deal: impl Fn(DealId) -> bool,
        at: Timestamp,
    ) -> Result<()> {
        let changed: Vec<Task> = self
            .data()?
            .tasks
            .values()
            .filter_map(|t| {
                let contact = t.contact_id.filter(|c| unlink_contact(*c)).is_some();
                let deal = t.deal_id.filter(|d| unlink_deal(*d)).is_some();
                if !contact && !deal {
                    return None;
                }
                let mut next = t.clone();
                if contact {
                    next.contact_id = None;
                }
                if deal {
                    next.deal_id = None;
                }
                next.updated_at = at;
                next.version = t.version.next();
                Some(next)
            })
            .collect();
        for t in changed {
            self.set_task(t.id, Some(t))?;
        }
        Ok(())
    }

    /// Moves the tasks of contact `from` to contact `to` (a merge), each a
    /// change of the task made at `at`.
    pub(super) fn move_tasks(
        &mut self,
        from: ContactId,
        to: ContactId,
        at: Timestamp,
    ) -> Result<()> {
        let moved: Vec<Task> = self
            .data()?
            .tasks
            .values()
            .filter(|t| t.contact_id == Some(from))
            .map(|t| {
                let mut next = t.clone();
                next.contact_id = Some(to);
                next.updated_at = at;
                next.version = t.version.next();
                next
            })
            .collect();
        for t in moved {
            self.set_task(t.id, Some(t))?;
        }
        Ok(())
    }

    /// Writes `next` over the task of its id and returns it.
    fn replace_task(&mut self, next: Task) -> Result<Task> {
        self.set_task(next.id, Some(next.clone()))?;
        Ok(next)
    }
}

/// The page of `matching` (in any order) after the cursor's position
/// `after`, sorted by `order` of each task's position `key`.
fn page_of<K: Clone + serde::Serialize, O: Ord>(
    matching: Vec<&Task>,
    after: Option<K>,
    key: impl Fn(&Task) -> K,
    order: impl Fn(&K) -> O,
    limit: usize,
    list: ListScope,
) -> Page<Task> {
    let after = after.map(|a| order(&a));
    let mut keyed: Vec<(O, &Task)> = matching
        .into_iter()
        .map(|t| (order(&key(t)), t))
        .filter(|(o, _)| after.as_ref().is_none_or(|a| o > a))
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    let items: Vec<Task> = keyed
        .into_iter()
        .take(limit + 1)
        .map(|(_, t)| t.clone())
        .collect();
    Page::from_overfetch(items, limit, list, key)
}

#[async_trait]
impl TasksTx for MemoryTransaction {
    async fn create_task(&mut self, new: NewTask) -> Result<Task> {
        let new = new.checked()?;
        self.check_task_links(links_of_new(&new))?;
        let task = Task::create(self.tenant, new, now());
        self.replace_task(task)
    }

    async fn get_task(&mut self, id: TaskId) -> Result<Option<Task>> {
        Ok(self.data()?.tasks.get(&id).cloned())
    }

    async fn update_task(
        &mut self,
        id: TaskId,
        expected: Version,
        patch: TaskPatch,
    ) -> Result<Task> {
        let patch = patch.checked()?;
        // The linked records first, then the task: the order the
        // PostgreSQL store locks them in.
        self.check_task_links(links_of_patch(&patch))?;
        let current = self.task(id)?.clone();
        shared::check_version(Entity::Task, id, expected, current.version)?;
        match current.patched(&patch, now()) {
            None => Ok(current),
            Some(next) => self.replace_task(next),
        }
    }

    async fn complete_task(&mut self, id: TaskId, at: Timestamp) -> Result<Task> {
        let at = checked_time("at", at)?;
        let current = self.task(id)?.clone();
        match current.completed(at, now()) {
            None => Ok(current),
            Some(next) => self.replace_task(next),
        }
    }

    async fn reopen_task(&mut self, id: TaskId) -> Result<Task> {
        let current = self.task(id)?.clone();
        match current.reopened(now()) {
            None => Ok(current),
            Some(next) => self.replace_task(next),
        }
    }

    async fn delete_task(&mut self, id: TaskId) -> Result<bool> {
        if !self.data()?.tasks.contains_key(&id) {
            return Ok(false);
        }
        self.set_task(id, None)?;
        Ok(true)
    }

    async fn open_tasks(&mut self, assignee: &OwnerId, page: &PageRequest) -> Result<Page<Task>> {
        let limit = page.checked_limit()?;
        let list = open_scope(assignee);
        let after: Option<OpenKey> = page.position(list)?;
        let matching: Vec<&Task> = self
            .data()?
            .tasks
            .values()
            .filter(|t| t.is_open() && t.assignee.as_ref() == Some(assignee))
            .collect();
        Ok(page_of(matching, after, open_key, open_order, limit, list))
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
        let matching: Vec<&Task> = self
            .data()?
            .tasks
            .values()
            .filter(|t| {
                t.is_overdue(now) && assignee.is_none_or(|a| t.assignee.as_ref() == Some(a))
            })
            .collect();
        Ok(page_of(matching, after, overdue_key, |k| *k, limit, list))
    }

    async fn tasks_of(&mut self, record: RecordRef, page: &PageRequest) -> Result<Page<Task>> {
        let limit = page.checked_limit()?;
        let list = record_scope(record);
        let after: Option<TimeKey> = page.position(list)?;
        let matching: Vec<&Task> = self
            .data()?
            .tasks
            .values()
            .filter(|t| is_linked(t, record))
            .collect();
        // Newest first: the reverse of the position's order.
        Ok(page_of(
            matching,
            after,
            created_key,
            |k| std::cmp::Reverse(*k),
            limit,
            list,
        ))
    }
}
