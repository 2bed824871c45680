//! The conformance suite's task points: tasks link to records that exist,
//! change under optimistic versions, are completed and reopened once, are
//! listed (open, overdue, per record) in the contract's orders with cursors
//! that fit only their own call, survive the deletion and merging of what
//! they link to, and leave a history.

use chrono::{DateTime, Utc};

use super::prelude::*;
use super::support::{
    begin, create, deal, expect_conflict, expect_not_found, expect_validation, new_contact,
    new_deal, ok, tick,
};
use crate::domain::{
    CompanyId, CursorList, NewTask, OwnerId, RecordRef, Task, TaskBody, TaskId, TaskPatch,
    TaskPriority, TaskTitle,
};

fn title(s: &str) -> TaskTitle {
    TaskTitle::parse(s).expect("a valid task title")
}

fn owner(s: &str) -> OwnerId {
    OwnerId::parse(s).expect("a valid owner id")
}

/// `secs` seconds after 2030-01-01T00:00:00Z.
fn at(secs: i64) -> Timestamp {
    DateTime::from_timestamp(1_893_456_000 + secs, 0).expect("a valid time")
}

/// A task titled `name`, assigned to `who`, due at `due` (seconds after
/// 2030-01-01), nothing else.
fn new_task(name: &str, who: Option<&OwnerId>, due: Option<i64>) -> NewTask {
    NewTask {
        assignee: who.cloned(),
        due_at: due.map(at),
        ..NewTask::new(title(name))
    }
}

async fn create_task(store: &DynStore, t: TenantId, new: NewTask) -> Task {
    with_tx!(store, t, async |tx| ok(
        tx.create_task(new).await,
        "create a task"
    ))
    .await
}

async fn get_task(store: &DynStore, t: TenantId, id: TaskId) -> Option<Task> {
    with_tx!(store, t, async |tx| ok(tx.get_task(id).await, "get a task")).await
}

/// Reads every task of `ids` back, each required to exist.
async fn reread(store: &DynStore, t: TenantId, tasks: &[&Task]) -> Vec<Task> {
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(
            get_task(store, t, task.id)
                .await
                .unwrap_or_else(|| panic!("task {} ({}) still exists", task.id, task.title)),
        );
    }
    out
}

fn ids(tasks: &[Task]) -> Vec<TaskId> {
    tasks.iter().map(|t| t.id).collect()
}

/// Every open task of `who`, through pages of `limit`.
async fn open_all(store: &DynStore, t: TenantId, who: &OwnerId, limit: u32) -> Vec<Task> {
    with_tx!(store, t, async |tx| collect_pages!(limit, async |page| ok(
        tx.open_tasks(who, &page).await,
        "open tasks"
    ))
    .await)
    .await
}

/// Every overdue task before `now` (of `who`), through pages of `limit`.
async fn overdue_all(
    store: &DynStore,
    t: TenantId,
    now: Timestamp,
    who: Option<&OwnerId>,
    limit: u32,
) -> Vec<Task> {
    with_tx!(store, t, async |tx| collect_pages!(limit, async |page| ok(
        tx.overdue_tasks(now, who, &page).await,
        "overdue tasks"
    ))
    .await)
    .await
}

/// Every task of `record`, through pages of `limit`.
async fn of_all(store: &DynStore, t: TenantId, record: RecordRef, limit: u32) -> Vec<Task> {
    with_tx!(store, t, async |tx| collect_pages!(limit, async |page| ok(
        tx.tasks_of(record, &page).await,
        "tasks of a record"
    ))
    .await)
    .await
}

/// A created task comes back with every field as given (its due time at
/// microsecond precision), version 1, open, created and updated at once.
pub async fn a_created_task_comes_back_with_every_field(store: &DynStore) {
    let t = TenantId::new();
    let c = create(store, t, new_contact("task-all@example.com", "Ta", "Sk")).await;
    let d = deal(store, t, new_deal(c.id, "Deal", "10", "EUR")).await;
    let other = create(store, t, new_contact("task-other@example.com", "Ot", "Her")).await;
    let due = DateTime::from_timestamp(1_900_000_000, 123_456_789).expect("a valid time");
    let new = NewTask {
        title: title("Send the quote ✉"),
        body: Some(TaskBody::parse("Line one\nLine two — Zoë").expect("a valid body")),
        due_at: Some(due),
        assignee: Some(owner("auth0|5f1c")),
        priority: TaskPriority::Urgent,
        contact_id: Some(other.id),
        company_id: None,
        // A task's deal need not be one of its contact's.
        deal_id: Some(d.id),
    };
    let created = create_task(store, t, new.clone()).await;
    assert_eq!(created.version, Version::FIRST, "a new task is version 1");
    assert!(created.is_open(), "a new task is open");
    assert_eq!(created.created_at, created.updated_at);
    assert_eq!(
        created.due_at,
        Some(truncate_to_micros(due)),
        "the due time is kept at microsecond precision"
    );
    assert_eq!(created.title, new.title);
    assert_eq!(created.body, new.body);
    assert_eq!(created.assignee, new.assignee);
    assert_eq!(created.priority, TaskPriority::Urgent);
    assert_eq!(
        (created.contact_id, created.company_id, created.deal_id),
        (Some(other.id), None, Some(d.id))
    );
    assert_eq!(created.tenant_id, t);
    let read = get_task(store, t, created.id).await;
    assert_eq!(
        read.as_ref(),
        Some(&created),
        "get returns the task as created"
    );
    assert_eq!(
        get_task(store, t, TaskId::new()).await,
        None,
        "get of a missing task is None"
    );
    assert_eq!(
        get_task(store, TenantId::new(), created.id).await,
        None,
        "another tenant does not see the task"
    );
}

/// A task linked to a contact, company or deal that does not exist is
/// refused with NotFound naming it; nothing is written and the
/// transaction goes on. An update linking to one is refused alike.
pub async fn a_task_linked_to_a_missing_record_is_refused_and_writes_nothing(store: &DynStore) {
    let t = TenantId::new();
    let who = owner("user:links");
    let c = create(store, t, new_contact("links@example.com", "Li", "Nk")).await;
    let (missing_contact, missing_company, missing_deal) =
        (ContactId::new(), CompanyId::new(), DealId::new());
    let kept = with_tx!(store, t, async |tx| {
        let refused = [
            (
                NewTask {
                    contact_id: Some(missing_contact),
                    ..new_task("a", Some(&who), None)
                },
                Entity::Contact,
                missing_contact.to_string(),
            ),
            (
                NewTask {
                    contact_id: Some(c.id),
                    company_id: Some(missing_company),
                    ..new_task("b", Some(&who), None)
                },
                Entity::Company,
                missing_company.to_string(),
            ),
            (
                NewTask {
                    contact_id: Some(c.id),
                    deal_id: Some(missing_deal),
                    ..new_task("c", Some(&who), None)
                },
                Entity::Deal,
                missing_deal.to_string(),
            ),
        ];
        for (new, entity, id) in refused {
            expect_not_found(
                tx.create_task(new).await,
                entity,
                &id,
                "a task linked to a missing record",
            );
        }
        // The transaction is still usable after the refusals.
        ok(
            tx.create_task(NewTask {
                contact_id: Some(c.id),
                ..new_task("kept", Some(&who), None)
            })
            .await,
            "create after refusals",
        )
    })
    .await;
    let open = open_all(store, t, &who, 10).await;
    assert_eq!(
        ids(&open),
        vec![kept.id],
        "only the task with existing links was written"
    );
    let with_contact = of_all(store, t, RecordRef::Contact(c.id), 10).await;
    assert_eq!(ids(&with_contact), vec![kept.id]);

    with_tx!(store, t, async |tx| {
        let patch = TaskPatch {
            deal_id: Some(Some(missing_deal)),
            ..TaskPatch::default()
        };
        expect_not_found(
            tx.update_task(kept.id, kept.version, patch).await,
            Entity::Deal,
            missing_deal,
            "an update linking a missing deal",
        );
        let patch = TaskPatch {
            contact_id: Some(Some(missing_contact)),
            ..TaskPatch::default()
        };
        expect_not_found(
            tx.update_task(kept.id, kept.version, patch).await,
            Entity::Contact,
            missing_contact,
            "an update linking a missing contact",
        );
        let missing = TaskId::new();
        expect_not_found(
            tx.update_task(missing, Version::FIRST, TaskPatch::default())
                .await,
            Entity::Task,
            missing,
            "an update of a missing task",
        );
    })
    .await;
    assert_eq!(
        get_task(store, t, kept.id).await.as_ref(),
        Some(&kept),
        "a refused update changes nothing"
    );
}

/// An update at the current version bumps it and sets `updated_at`; a
/// stale version is a conflict that changes nothing; a patch that changes
/// nothing keeps the version.
pub async fn a_task_update_is_versioned_and_a_no_op_keeps_the_version(store: &DynStore) {
    let t = TenantId::new();
    let c = create(store, t, new_contact("upd-task@example.com", "Up", "Date")).await;
    let task = create_task(store, t, new_task("Call", Some(&owner("user:1")), Some(60))).await;
    tick().await;
    let patch = TaskPatch {
        title: Some(title("Call back")),
        due_at: Some(None),
        assignee: Some(Some(owner("user:2"))),
        priority: Some(TaskPriority::High),
        contact_id: Some(Some(c.id)),
        ..TaskPatch::default()
    };
    let next = with_tx!(store, t, async |tx| ok(
        tx.update_task(task.id, task.version, patch.clone()).await,
        "update at the current version"
    ))
    .await;
    assert_eq!(
        next.version,
        task.version.next(),
        "the version goes up by one"
    );
    assert!(next.updated_at > task.updated_at, "updated_at moves on");
    assert_eq!(next.created_at, task.created_at, "created_at stays");
    assert_eq!(next.title, title("Call back"));
    assert_eq!(next.due_at, None);
    assert_eq!(next.assignee, Some(owner("user:2")));
    assert_eq!(next.priority, TaskPriority::High);
    assert_eq!(next.contact_id, Some(c.id));
    assert_eq!(get_task(store, t, task.id).await.as_ref(), Some(&next));

    let stale = with_tx!(store, t, async |tx| tx
        .update_task(task.id, task.version, patch.clone())
        .await)
    .await;
    expect_conflict(
        stale,
        Entity::Task,
        task.id,
        task.version.get(),
        next.version.get(),
        "an update at a stale version",
    );
    assert_eq!(get_task(store, t, task.id).await.as_ref(), Some(&next));

    let same = with_tx!(store, t, async |tx| ok(
        tx.update_task(next.id, next.version, patch.clone()).await,
        "a patch that changes nothing"
    ))
    .await;
    assert_eq!(same, next, "a no-op returns the task unchanged");
    let empty = with_tx!(store, t, async |tx| ok(
        tx.update_task(next.id, next.version, TaskPatch::default())
            .await,
        "an empty patch"
    ))
    .await;
    assert_eq!(empty, next);
    assert_eq!(get_task(store, t, task.id).await.as_ref(), Some(&next));
}

/// Completing sets `done_at` (at microsecond precision) once: completing
/// a done task returns it unchanged. Reopening clears it once.
pub async fn completing_and_reopening_a_task_change_it_once(store: &DynStore) {
    let t = TenantId::new();
    let task = create_task(store, t, new_task("Finish", None, None)).await;
    let done_at = DateTime::from_timestamp(1_800_000_000, 987_654_321).expect("a valid time");
    let done = with_tx!(store, t, async |tx| ok(
        tx.complete_task(task.id, done_at).await,
        "complete"
    ))
    .await;
    assert_eq!(done.done_at, Some(truncate_to_micros(done_at)));
    assert_eq!(done.version, task.version.next());
    assert!(!done.is_open());
    assert_eq!(get_task(store, t, task.id).await.as_ref(), Some(&done));
    let again = with_tx!(store, t, async |tx| ok(
        tx.complete_task(task.id, at(5)).await,
        "complete again"
    ))
    .await;
    assert_eq!(again, done, "completing a done task changes nothing");
    tick().await;
    let open = with_tx!(store, t, async |tx| ok(
        tx.reopen_task(task.id).await,
        "reopen"
    ))
    .await;
    assert_eq!(open.done_at, None);
    assert_eq!(open.version, done.version.next());
    assert!(open.updated_at > done.updated_at);
    let still = with_tx!(store, t, async |tx| ok(
        tx.reopen_task(task.id).await,
        "reopen an open task"
    ))
    .await;
    assert_eq!(still, open, "reopening an open task changes nothing");
    assert_eq!(get_task(store, t, task.id).await.as_ref(), Some(&open));
    let missing = TaskId::new();
    with_tx!(store, t, async |tx| {
        expect_not_found(
            tx.complete_task(missing, at(0)).await,
            Entity::Task,
            missing,
            "complete a missing task",
        );
        expect_not_found(
            tx.reopen_task(missing).await,
            Entity::Task,
            missing,
            "reopen a missing task",
        );
    })
    .await;
}

/// Times out of the stores' range are refused naming their parameter:
/// `at` of a completion, `now` of the overdue list, `due_at` of a task.
pub async fn task_times_out_of_range_are_refused_naming_them(store: &DynStore) {
    let t = TenantId::new();
    let task = create_task(store, t, new_task("Range", None, None)).await;
    with_tx!(store, t, async |tx| {
        expect_validation(
            tx.complete_task(task.id, DateTime::<Utc>::MAX_UTC).await,
            "at",
            "complete at a time out of range",
        );
        expect_validation(
            tx.overdue_tasks(DateTime::<Utc>::MIN_UTC, None, &PageRequest::default())
                .await,
            "now",
            "overdue before a time out of range",
        );
        expect_validation(
            tx.create_task(NewTask {
                due_at: Some(DateTime::<Utc>::MAX_UTC),
                ..new_task("late", None, None)
            })
            .await,
            "due_at",
            "a due time out of range",
        );
        expect_validation(
            tx.update_task(
                task.id,
                task.version,
                TaskPatch {
                    due_at: Some(Some(DateTime::<Utc>::MIN_UTC)),
                    ..TaskPatch::default()
                },
            )
            .await,
            "due_at",
            "a due time out of range in a patch",
        );
    })
    .await;
    assert_eq!(
        get_task(store, t, task.id).await.as_ref(),
        Some(&task),
        "refused times change nothing"
    );
}

/// An assignee's open tasks: dated ones by due time, then the undated
/// ones, ties by id; done tasks and other assignees' left out; every page
/// size visits each once.
pub async fn open_tasks_come_by_due_time_undated_last_ties_by_id(store: &DynStore) {
    let t = TenantId::new();
    let who = owner("user:open");
    let someone = owner("user:someone");
    let mut expected = Vec::new();
    let mut done = Vec::new();
    with_tx!(store, t, async |tx| {
        for (i, due) in [
            Some(300),
            None,
            Some(100),
            Some(200),
            Some(100),
            None,
            Some(-50),
            Some(200),
            None,
            Some(100),
        ]
        .into_iter()
        .enumerate()
        {
            let task = ok(
                tx.create_task(new_task(&format!("open {i}"), Some(&who), due))
                    .await,
                "create",
            );
            expected.push(task);
        }
        for due in [Some(150), None] {
            let task = ok(
                tx.create_task(new_task("done", Some(&who), due)).await,
                "create",
            );
            done.push(ok(tx.complete_task(task.id, at(0)).await, "complete").id);
        }
        ok(
            tx.create_task(new_task("theirs", Some(&someone), Some(100)))
                .await,
            "create",
        );
        ok(
            tx.create_task(new_task("nobody's", None, Some(100))).await,
            "create",
        );
    })
    .await;
    let order = |v: &mut Vec<Task>| v.sort_by_key(|t| (t.due_at.is_none(), t.due_at, t.id));
    order(&mut expected);
    for limit in [1, 2, 3, 4, 1000] {
        let got = open_all(store, t, &who, limit).await;
        assert_eq!(
            ids(&got),
            ids(&expected),
            "open tasks by due time, undated last, ties by id (pages of {limit})"
        );
        assert!(
            got.iter()
                .all(|t| t.is_open() && t.assignee.as_ref() == Some(&who))
        );
    }
    let theirs = open_all(store, t, &someone, 10).await;
    assert_eq!(theirs.len(), 1, "each assignee sees only their own");
    // Completing takes a task out of the list, reopening brings it back.
    let first = expected.remove(0);
    with_tx!(store, t, async |tx| ok(
        tx.complete_task(first.id, at(0)).await,
        "complete"
    ))
    .await;
    assert_eq!(ids(&open_all(store, t, &who, 3).await), ids(&expected));
    let reopened = with_tx!(store, t, async |tx| ok(
        tx.reopen_task(done[1]).await,
        "reopen"
    ))
    .await;
    expected.push(reopened);
    order(&mut expected);
    assert_eq!(
        ids(&open_all(store, t, &who, 2).await),
        ids(&expected),
        "the reopened task is listed again, in its place"
    );
}

/// The overdue tasks: open, due strictly before `now`, of the assignee
/// when one is given, by due time then id.
pub async fn overdue_tasks_respect_now_and_the_assignee(store: &DynStore) {
    let t = TenantId::new();
    let (a, b) = (owner("user:a"), owner("user:b"));
    let mut all = Vec::new();
    with_tx!(store, t, async |tx| {
        for (who, due) in [
            (Some(&a), Some(10)),
            (Some(&b), Some(20)),
            (None, Some(5)),
            (Some(&a), Some(100)),
            (Some(&a), None),
            (Some(&b), Some(10)),
            (Some(&a), Some(20)),
            (Some(&a), Some(10)),
        ] {
            all.push(ok(
                tx.create_task(new_task("due", who, due)).await,
                "create",
            ));
        }
        let gone = ok(
            tx.create_task(new_task("done", Some(&a), Some(1))).await,
            "create",
        );
        ok(tx.complete_task(gone.id, at(2)).await, "complete");
    })
    .await;
    let expect = |now: i64, who: Option<&OwnerId>| {
        let mut v: Vec<&Task> = all
            .iter()
            .filter(|t| t.due_at.is_some_and(|d| d < at(now)))
            .filter(|t| who.is_none_or(|w| t.assignee.as_ref() == Some(w)))
            .collect();
        v.sort_by_key(|t| (t.due_at, t.id));
        v.into_iter().map(|t| t.id).collect::<Vec<_>>()
    };
    for (now, who) in [
        (20, None),
        (20, Some(&a)),
        (21, Some(&a)),
        (1000, None),
        (1000, Some(&b)),
        (5, None),
        (0, Some(&a)),
    ] {
        let wanted = expect(now, who);
        for limit in [1, 2, 1000] {
            let got = overdue_all(store, t, at(now), who, limit).await;
            assert_eq!(
                ids(&got),
                wanted,
                "overdue before {now} of {who:?}, by due time then id (pages of {limit})"
            );
        }
    }
    assert_eq!(
        expect(20, Some(&a)).len(),
        2,
        "due exactly at `now` is not overdue"
    );
}

/// The tasks of a contact or a deal, newest first, through every page
/// size; a record without tasks has none.
pub async fn the_tasks_of_a_record_come_newest_first(store: &DynStore) {
    let t = TenantId::new();
    let c = create(store, t, new_contact("of@example.com", "Of", "Record")).await;
    let d = deal(store, t, new_deal(c.id, "Deal", "1", "EUR")).await;
    let other = create(store, t, new_contact("of2@example.com", "Ot", "Her")).await;
    let mut tasks = Vec::new();
    for i in 0..5 {
        let new = NewTask {
            contact_id: Some(if i == 2 { other.id } else { c.id }),
            deal_id: (i % 2 == 0).then_some(d.id),
            ..new_task(&format!("task {i}"), None, None)
        };
        tasks.push(create_task(store, t, new).await);
        if i == 1 {
            tick().await;
        }
    }
    // Several in one transaction, which may give them one creation time.
    with_tx!(store, t, async |tx| {
        for i in 5..8 {
            let new = NewTask {
                contact_id: Some(c.id),
                deal_id: Some(d.id),
                ..new_task(&format!("task {i}"), None, None)
            };
            tasks.push(ok(tx.create_task(new).await, "create"));
        }
    })
    .await;
    let newest_first = |pick: &dyn Fn(&Task) -> bool| {
        let mut v: Vec<&Task> = tasks.iter().filter(|t| pick(t)).collect();
        v.sort_by_key(|t| std::cmp::Reverse((t.created_at, t.id)));
        v.into_iter().map(|t| t.id).collect::<Vec<_>>()
    };
    for limit in [1, 2, 3, 1000] {
        let of_contact = of_all(store, t, RecordRef::Contact(c.id), limit).await;
        assert_eq!(
            ids(&of_contact),
            newest_first(&|t| t.contact_id == Some(c.id)),
            "a contact's tasks, newest first (pages of {limit})"
        );
        let of_deal = of_all(store, t, RecordRef::Deal(d.id), limit).await;
        assert_eq!(
            ids(&of_deal),
            newest_first(&|t| t.deal_id == Some(d.id)),
            "a deal's tasks, newest first (pages of {limit})"
        );
    }
    let of_other = of_all(store, t, RecordRef::Contact(other.id), 2).await;
    assert_eq!(ids(&of_other), vec![tasks[2].id]);
    assert!(
        of_all(store, t, RecordRef::Company(CompanyId::new()), 2)
            .await
            .is_empty(),
        "a company without tasks has none"
    );
}

/// Deleting a deal unlinks its tasks, and deleting a contact unlinks its
/// tasks and those of its deals: the tasks survive, each changed once
/// (version up by one, updated then), other links kept.
pub async fn deleting_a_contact_or_a_deal_unlinks_its_tasks(store: &DynStore) {
    let t = TenantId::new();
    let c = create(store, t, new_contact("unlink@example.com", "Un", "Link")).await;
    let d = deal(store, t, new_deal(c.id, "Of c", "1", "EUR")).await;
    let c2 = create(store, t, new_contact("unlink2@example.com", "Ot", "Her")).await;
    let d2 = deal(store, t, new_deal(c2.id, "Of c2", "1", "EUR")).await;
    let link = |name: &str, contact: Option<ContactId>, deal: Option<DealId>| NewTask {
        contact_id: contact,
        deal_id: deal,
        ..new_task(name, None, None)
    };
    let only_c = create_task(store, t, link("c", Some(c.id), None)).await;
    let only_d = create_task(store, t, link("d", None, Some(d.id))).await;
    let c_and_d = create_task(store, t, link("c+d", Some(c.id), Some(d.id))).await;
    let c_and_d2 = create_task(store, t, link("c+d2", Some(c.id), Some(d2.id))).await;
    let c2_and_d = create_task(store, t, link("c2+d", Some(c2.id), Some(d.id))).await;
    let only_d2 = create_task(store, t, link("d2", None, Some(d2.id))).await;
    let untouched = create_task(store, t, link("c2", Some(c2.id), None)).await;
    tick().await;

    let deleted = with_tx!(store, t, async |tx| ok(
        tx.delete_deal(d2.id).await,
        "delete a deal with tasks"
    ))
    .await;
    assert!(deleted, "the deal is deleted");
    let [a, b] =
        <[Task; 2]>::try_from(reread(store, t, &[&c_and_d2, &only_d2]).await).expect("two tasks");
    for (before, after) in [(&c_and_d2, &a), (&only_d2, &b)] {
        assert_eq!(
            after.deal_id, None,
            "{}: the deal is unlinked",
            before.title
        );
        assert_eq!(
            after.contact_id, before.contact_id,
            "{}: the contact stays",
            before.title
        );
        assert_eq!(
            after.version,
            before.version.next(),
            "{}: one change",
            before.title
        );
        assert!(
            after.updated_at > before.updated_at,
            "{}: updated then",
            before.title
        );
    }
    tick().await;

    let deleted = with_tx!(store, t, async |tx| ok(
        tx.delete_contact(c.id).await,
        "delete a contact with tasks"
    ))
    .await;
    assert!(deleted, "the contact is deleted");
    assert_eq!(
        super::support::get_deal(store, t, d.id).await,
        None,
        "its deal went with it"
    );
    let after = reread(
        store,
        t,
        &[&only_c, &only_d, &c_and_d, &a, &c2_and_d, &untouched],
    )
    .await;
    let before = [&only_c, &only_d, &c_and_d, &a, &c2_and_d, &untouched];
    for (before, after) in before.iter().zip(&after) {
        if before.id == untouched.id {
            assert_eq!(after, *before, "a task of neither is untouched");
            continue;
        }
        assert_ne!(
            after.contact_id,
            Some(c.id),
            "{}: the contact is unlinked",
            before.title
        );
        assert_ne!(
            after.deal_id,
            Some(d.id),
            "{}: its deal is unlinked",
            before.title
        );
        assert_eq!(
            after.version,
            before.version.next(),
            "{}: one change",
            before.title
        );
        assert!(
            after.updated_at > before.updated_at,
            "{}: updated then",
            before.title
        );
    }
    assert_eq!(
        after[4].contact_id,
        Some(c2.id),
        "another contact stays linked"
    );
    assert!(
        of_all(store, t, RecordRef::Contact(c.id), 10)
            .await
            .is_empty()
    );
    assert!(of_all(store, t, RecordRef::Deal(d.id), 10).await.is_empty());
    let history = with_tx!(store, t, async |tx| ok(
        tx.entity_history(HistoryEntity::Task(c_and_d.id), &PageRequest::default())
            .await,
        "history of an unlinked task"
    ))
    .await;
    assert_eq!(
        history
            .items
            .first()
            .map(|e| (e.operation, e.values.clone())),
        Some((Operation::Updated, crate::history::task_values(&after[2]))),
        "the unlinking is a recorded change of the task"
    );
}

/// Merging two contacts moves the loser's tasks to the survivor, each a
/// change of the task; the survivor's own stay as they are.
pub async fn merging_contacts_moves_the_losers_tasks_to_the_survivor(store: &DynStore) {
    let t = TenantId::new();
    let keep = create(store, t, new_contact("keep-t@example.com", "Ke", "Ep")).await;
    let gone = create(store, t, new_contact("gone-t@example.com", "Go", "Ne")).await;
    let d = deal(store, t, new_deal(gone.id, "Deal", "1", "EUR")).await;
    let link = |name: &str, contact: ContactId, deal: Option<DealId>| NewTask {
        contact_id: Some(contact),
        deal_id: deal,
        ..new_task(name, None, None)
    };
    let own = create_task(store, t, link("own", keep.id, None)).await;
    let moved = create_task(store, t, link("moved", gone.id, None)).await;
    let with_deal = create_task(store, t, link("with deal", gone.id, Some(d.id))).await;
    tick().await;
    with_tx!(store, t, async |tx| ok(
        tx.merge_contacts(keep.id, gone.id, ConflictPolicy::NonEmptyIncoming)
            .await,
        "merge"
    ))
    .await;
    let after = reread(store, t, &[&own, &moved, &with_deal]).await;
    assert_eq!(after[0], own, "the survivor's own task is untouched");
    for (before, after) in [(&moved, &after[1]), (&with_deal, &after[2])] {
        assert_eq!(
            after.contact_id,
            Some(keep.id),
            "{}: now the survivor's",
            before.title
        );
        assert_eq!(
            after.deal_id, before.deal_id,
            "{}: the deal stays",
            before.title
        );
        assert_eq!(
            after.version,
            before.version.next(),
            "{}: one change",
            before.title
        );
        assert!(
            after.updated_at > before.updated_at,
            "{}: updated then",
            before.title
        );
    }
    let mut of_keep = ids(&of_all(store, t, RecordRef::Contact(keep.id), 10).await);
    of_keep.sort();
    let mut all = vec![own.id, moved.id, with_deal.id];
    all.sort();
    assert_eq!(of_keep, all, "the survivor has every task");
    assert!(
        of_all(store, t, RecordRef::Contact(gone.id), 10)
            .await
            .is_empty()
    );
}

/// A cursor of a task list is taken back only by the same call: another
/// assignee, another `now` or assignee of the overdue list, another record,
/// or another list altogether is refused on `cursor`.
pub async fn a_task_list_cursor_is_refused_for_other_parameters(store: &DynStore) {
    let t = TenantId::new();
    let (a, b) = (owner("user:ca"), owner("user:cb"));
    let c = create(store, t, new_contact("cur-t@example.com", "Cu", "Rsor")).await;
    let c2 = create(store, t, new_contact("cur-t2@example.com", "Cu", "Rsor")).await;
    with_tx!(store, t, async |tx| {
        for (who, due) in [(&a, Some(1)), (&a, Some(2)), (&b, Some(1)), (&b, Some(2))] {
            let new = NewTask {
                contact_id: Some(c.id),
                ..new_task("x", Some(who), due)
            };
            ok(tx.create_task(new).await, "create");
        }
        let first = PageRequest::first(1);
        let open = ok(tx.open_tasks(&a, &first).await, "open tasks of a");
        let open_cursor = open
            .next_cursor
            .expect("a first page of one has a next page");
        let overdue = ok(
            tx.overdue_tasks(at(100), Some(&a), &first).await,
            "overdue of a",
        );
        let overdue_cursor = overdue.next_cursor.expect("a next page");
        let of = ok(tx.tasks_of(RecordRef::Contact(c.id), &first).await, "of c");
        let of_cursor = of.next_cursor.expect("a next page");

        let open_next = PageRequest::after(1, open_cursor.clone());
        ok(
            tx.open_tasks(&a, &open_next).await,
            "the same call takes its cursor",
        );
        expect_validation(
            tx.open_tasks(&b, &open_next).await,
            "cursor",
            "open tasks of another assignee",
        );
        expect_validation(
            tx.overdue_tasks(at(100), Some(&a), &open_next).await,
            "cursor",
            "an open-tasks cursor given to the overdue list",
        );
        let overdue_next = PageRequest::after(1, overdue_cursor);
        ok(
            tx.overdue_tasks(at(100), Some(&a), &overdue_next).await,
            "the same call takes its cursor",
        );
        for (now, who) in [(at(100), Some(&b)), (at(100), None), (at(101), Some(&a))] {
            expect_validation(
                tx.overdue_tasks(now, who, &overdue_next).await,
                "cursor",
                "overdue tasks with other parameters",
            );
        }
        expect_validation(
            tx.open_tasks(&a, &overdue_next).await,
            "cursor",
            "an overdue cursor given to the open list",
        );
        let of_next = PageRequest::after(1, of_cursor);
        ok(
            tx.tasks_of(RecordRef::Contact(c.id), &of_next).await,
            "the same call takes its cursor",
        );
        for record in [
            RecordRef::Contact(c2.id),
            RecordRef::Company(CompanyId::from_uuid(c.id.as_uuid())),
        ] {
            expect_validation(
                tx.tasks_of(record, &of_next).await,
                "cursor",
                "tasks of another record",
            );
        }
        expect_validation(
            tx.open_tasks(&a, &PageRequest::after(1, Cursor::from_string("zz".into())))
                .await,
            "cursor",
            "garbage",
        );
        // Positions out of the stores' range, in cursors made for the call.
        let far = (Some(i64::MAX), uuid::Uuid::nil());
        let crafted = Cursor::encode(CursorList::OpenTasks.scoped(&a), &far);
        expect_validation(
            tx.open_tasks(&a, &PageRequest::after(1, crafted)).await,
            "cursor",
            "an open-tasks position out of range",
        );
        let crafted = Cursor::encode(
            CursorList::TasksOfRecord.scoped(&RecordRef::Contact(c.id)),
            &(i64::MIN, uuid::Uuid::nil()),
        );
        expect_validation(
            tx.tasks_of(RecordRef::Contact(c.id), &PageRequest::after(1, crafted))
                .await,
            "cursor",
            "a record's-tasks position out of range",
        );
        expect_validation(
            tx.list_deals_for_contact(c.id, &open_next).await,
            "cursor",
            "a task cursor given to another list",
        );
        expect_validation(
            tx.open_tasks(&a, &PageRequest::first(0)).await,
            "limit",
            "a limit of 0",
        );
    })
    .await;
}

/// A task's history: its creation, each change and its deletion, with the
/// values every store records for a task.
pub async fn a_tasks_history_records_creation_changes_and_deletion(store: &DynStore) {
    let t = TenantId::new();
    let c = create(store, t, new_contact("hist-t@example.com", "Hi", "Story")).await;
    let created = create_task(
        store,
        t,
        NewTask {
            contact_id: Some(c.id),
            body: Some(TaskBody::parse("body").expect("a valid body")),
            ..new_task("History", Some(&owner("user:h")), Some(42))
        },
    )
    .await;
    tick().await;
    let updated = with_tx!(store, t, async |tx| ok(
        tx.update_task(
            created.id,
            created.version,
            TaskPatch {
                priority: Some(TaskPriority::Low),
                body: Some(None),
                ..TaskPatch::default()
            },
        )
        .await,
        "update"
    ))
    .await;
    tick().await;
    let done = with_tx!(store, t, async |tx| ok(
        tx.complete_task(created.id, at(7)).await,
        "complete"
    ))
    .await;
    tick().await;
    let deleted = with_tx!(store, t, async |tx| {
        let first = ok(tx.delete_task(created.id).await, "delete");
        let second = ok(tx.delete_task(created.id).await, "delete again");
        (first, second)
    })
    .await;
    assert_eq!(
        deleted,
        (true, false),
        "a delete says whether there was a task"
    );
    assert_eq!(get_task(store, t, created.id).await, None);
    let history = with_tx!(store, t, async |tx| ok(
        tx.entity_history(HistoryEntity::Task(created.id), &PageRequest::default())
            .await,
        "task history"
    ))
    .await;
    let mut versions = history.items;
    versions.reverse();
    let got: Vec<(Operation, serde_json::Value)> = versions
        .iter()
        .map(|e| (e.operation, e.values.clone()))
        .collect();
    let values = crate::history::task_values;
    assert_eq!(
        got,
        vec![
            (Operation::Created, values(&created)),
            (Operation::Updated, values(&updated)),
            (Operation::Updated, values(&done)),
            (Operation::Deleted, values(&done)),
        ],
        "every version of the task, with its values"
    );
    assert!(
        versions
            .iter()
            .all(|e| e.entity == HistoryEntity::Task(created.id)),
        "the entries are the task's"
    );
    assert!(versions[1].diff.contains_key("priority"));
    assert!(versions[2].diff.contains_key("done_at"));
}

/// Tasks created for a contact and its deal while the contact is being
/// deleted: each creation either comes first, and its task is then
/// unlinked by the delete (and survives), or comes after and is refused
/// with NotFound. The delete never fails on a task it did not see.
pub async fn tasks_created_while_their_contact_is_deleted_are_unlinked_or_refused(
    store: &DynStore,
) {
    let t = TenantId::new();
    let c = create(store, t, new_contact("race-t@example.com", "Ra", "Ce")).await;
    let d = deal(store, t, new_deal(c.id, "Deal", "1", "EUR")).await;
    let creators = (0..18).map(|i| {
        let new = NewTask {
            contact_id: (i % 3 != 1).then_some(c.id),
            deal_id: (i % 3 != 0).then_some(d.id),
            ..new_task(&format!("racer {i}"), None, None)
        };
        async move {
            let mut tx = begin(store, t).await;
            match tx.create_task(new).await {
                Ok(task) => {
                    ok(tx.commit().await, "commit a task");
                    Ok(task)
                }
                Err(e) => {
                    ok(tx.rollback().await, "roll back a refused task");
                    Err(e)
                }
            }
        }
    });
    let deleter = async {
        tick().await;
        let mut tx = begin(store, t).await;
        let deleted = ok(tx.delete_contact(c.id).await, "delete the contact");
        ok(tx.commit().await, "commit the delete");
        deleted
    };
    let (created, deleted) = futures_util::join!(futures_util::future::join_all(creators), deleter);
    assert!(deleted, "the contact is deleted");
    let mut survivors = Vec::new();
    for r in created {
        match r {
            Ok(task) => survivors.push(task),
            Err(Error::NotFound { entity, .. })
                if entity == Entity::Contact || entity == Entity::Deal => {}
            Err(e) => panic!("a racing creation succeeds or gets NotFound, got {e:?}"),
        }
    }
    for before in &survivors {
        let after = get_task(store, t, before.id)
            .await
            .unwrap_or_else(|| panic!("{} survives the delete", before.title));
        assert_eq!(
            (after.contact_id, after.deal_id),
            (None, None),
            "{}: unlinked by the delete",
            before.title
        );
        assert_eq!(
            after.version,
            before.version.next(),
            "{}: one change",
            before.title
        );
    }
}

/// Tasks created for a deal while the deal is deleted, and for a contact
/// while it is merged away: each creation either comes first, and its task
/// is then unlinked (or moved to the survivor), or comes after and is
/// refused with NotFound.
pub async fn tasks_created_while_their_deal_is_deleted_or_contact_merged_are_kept_or_refused(
    store: &DynStore,
) {
    let t = TenantId::new();
    let keep = create(store, t, new_contact("race-keep@example.com", "Ke", "Ep")).await;
    let gone = create(store, t, new_contact("race-gone@example.com", "Go", "Ne")).await;
    let d = deal(store, t, new_deal(keep.id, "Deal", "1", "EUR")).await;
    let creators = (0..18).map(|i| {
        let new = if i % 2 == 0 {
            NewTask {
                deal_id: Some(d.id),
                ..new_task(&format!("deal racer {i}"), None, None)
            }
        } else {
            NewTask {
                contact_id: Some(gone.id),
                ..new_task(&format!("contact racer {i}"), None, None)
            }
        };
        async move {
            let mut tx = begin(store, t).await;
            match tx.create_task(new).await {
                Ok(task) => {
                    ok(tx.commit().await, "commit a task");
                    Ok(task)
                }
                Err(e) => {
                    ok(tx.rollback().await, "roll back a refused task");
                    Err(e)
                }
            }
        }
    });
    let deleter = async {
        tick().await;
        let mut tx = begin(store, t).await;
        let deleted = ok(tx.delete_deal(d.id).await, "delete the deal");
        ok(tx.commit().await, "commit the delete");
        deleted
    };
    let merger = async {
        tick().await;
        let mut tx = begin(store, t).await;
        ok(
            tx.merge_contacts(keep.id, gone.id, ConflictPolicy::Existing)
                .await,
            "merge the contact away",
        );
        ok(tx.commit().await, "commit the merge");
    };
    let (created, deleted, ()) =
        futures_util::join!(futures_util::future::join_all(creators), deleter, merger);
    assert!(deleted, "the deal is deleted");
    for r in created {
        let before = match r {
            Ok(task) => task,
            Err(Error::NotFound { entity, .. })
                if entity == Entity::Contact || entity == Entity::Deal =>
            {
                continue;
            }
            Err(e) => panic!("a racing creation succeeds or gets NotFound, got {e:?}"),
        };
        let after = get_task(store, t, before.id)
            .await
            .unwrap_or_else(|| panic!("{} survives", before.title));
        let expected = if before.deal_id.is_some() {
            (None, None)
        } else {
            (Some(keep.id), None)
        };
        assert_eq!(
            (after.contact_id, after.deal_id),
            expected,
            "{}: unlinked from the deal, or moved to the survivor",
            before.title
        );
        assert_eq!(
            after.version,
            before.version.next(),
            "{}: one change",
            before.title
        );
    }
}
