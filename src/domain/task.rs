//! Tasks: things to do, with a due time, an assignee and a priority,
//! linked to a contact, a company or a deal.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use super::{
    CompanyId, ContactId, DealId, OwnerId, TenantId, Timestamp, Version,
    activity::{parse_id, parse_timestamp},
    contact::{double_option, optional, required},
    id_type,
    text::text_type,
    truncate_to_micros,
};
use crate::domain::error::{FieldError, ValidationErrors};

id_type!(
    /// The id of a [`Task`] (UUID v7).
    TaskId
);

text_type!(
    /// A task's title: 1–255 characters after trimming.
    TaskTitle, field = "title", min = 1, max = 255, multiline = false
);

text_type!(
    /// A task's description: 1–100,000 characters after trimming, on as
    /// many lines as it needs.
    TaskBody, field = "body", min = 1, max = 100_000, multiline = true
);

/// How urgent a task is; priorities order from [`Low`](Self::Low) to
/// [`Urgent`](Self::Urgent).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum TaskPriority {
    /// When there is time.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Before normal tasks.
    High,
    /// Before anything else.
    Urgent,
}

impl TaskPriority {
    /// Every priority, lowest first.
    pub const ALL: [TaskPriority; 4] = [
        TaskPriority::Low,
        TaskPriority::Normal,
        TaskPriority::High,
        TaskPriority::Urgent,
    ];

    /// The name used in storage and JSON (`"low"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            TaskPriority::Low => "low",
            TaskPriority::Normal => "normal",
            TaskPriority::High => "high",
            TaskPriority::Urgent => "urgent",
        }
    }

    /// Parses a priority name (trimmed, any casing), reporting under `field`.
    pub fn parse_field(field: &str, value: &str) -> Result<Self, FieldError> {
        let v = value.trim().to_ascii_lowercase();
        TaskPriority::ALL
            .into_iter()
            .find(|p| p.as_str() == v)
            .ok_or_else(|| {
                FieldError::new(
                    field,
                    "unknown_value",
                    format!(
                        "must be one of low, normal, high, urgent; got {:?}",
                        value.trim()
                    ),
                )
            })
    }
}

impl fmt::Display for TaskPriority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskPriority {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskPriority::parse_field("priority", s)
    }
}

/// A task as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Its id.
    pub id: TaskId,
    /// The tenant it belongs to.
    pub tenant_id: TenantId,
    /// What to do.
    pub title: TaskTitle,
    /// More about it, if anything.
    pub body: Option<TaskBody>,
    /// When it is due, if ever.
    pub due_at: Option<Timestamp>,
    /// When it was done; `None` while it is open.
    pub done_at: Option<Timestamp>,
    /// The host's user it is assigned to, if any.
    pub assignee: Option<OwnerId>,
    /// How urgent it is.
    pub priority: TaskPriority,
    /// The contact it concerns, if any.
    pub contact_id: Option<ContactId>,
    /// The company it concerns, if any.
    pub company_id: Option<CompanyId>,
    /// The deal it concerns, if any.
    pub deal_id: Option<DealId>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// Its version, for optimistic concurrency.
    pub version: Version,
}

impl Task {
    /// A new, open task from validated input, version 1.
    pub fn create(tenant_id: TenantId, new: NewTask, now: Timestamp) -> Task {
        Task {
            id: TaskId::new(),
            tenant_id,
            title: new.title,
            body: new.body,
            due_at: new.due_at.map(truncate_to_micros),
            done_at: None,
            assignee: new.assignee,
            priority: new.priority,
            contact_id: new.contact_id,
            company_id: new.company_id,
            deal_id: new.deal_id,
            created_at: now,
            updated_at: now,
            version: Version::FIRST,
        }
    }

    /// True while the task is not done.
    pub fn is_open(&self) -> bool {
        self.done_at.is_none()
    }

    /// True when the task is open and was due before `now`.
    pub fn is_overdue(&self, now: Timestamp) -> bool {
        self.is_open() && self.due_at.is_some_and(|due| due < now)
    }

    /// The task with `patch` applied, its version bumped and `updated_at`
    /// set — or `None` when the patch changes nothing.
    pub fn patched(&self, patch: &TaskPatch, now: Timestamp) -> Option<Task> {
        let mut next = self.clone();
        if let Some(v) = &patch.title {
            next.title = v.clone();
        }
        if let Some(v) = &patch.body {
            next.body = v.clone();
        }
        if let Some(v) = patch.due_at {
            next.due_at = v;
        }
        if let Some(v) = &patch.assignee {
            next.assignee = v.clone();
        }
        if let Some(v) = patch.priority {
            next.priority = v;
        }
        if let Some(v) = patch.contact_id {
            next.contact_id = v;
        }
        if let Some(v) = patch.company_id {
            next.company_id = v;
        }
        if let Some(v) = patch.deal_id {
            next.deal_id = v;
        }
        if next == *self {
            return None;
        }
        next.updated_at = now;
        next.version = self.version.next();
        Some(next)
    }

    /// The task done at `at` (truncated to microseconds), changed at `now`
    /// — or `None` when it is already done.
    pub fn completed(&self, at: Timestamp, now: Timestamp) -> Option<Task> {
        if !self.is_open() {
            return None;
        }
        let mut next = self.clone();
        next.done_at = Some(truncate_to_micros(at));
        next.updated_at = now;
        next.version = self.version.next();
        Some(next)
    }

    /// The task open again — or `None` when it is open.
    pub fn reopened(&self, now: Timestamp) -> Option<Task> {
        if self.is_open() {
            return None;
        }
        let mut next = self.clone();
        next.done_at = None;
        next.updated_at = now;
        next.version = self.version.next();
        Some(next)
    }
}

/// A validated new task.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    /// Title.
    pub title: TaskTitle,
    /// Description.
    pub body: Option<TaskBody>,
    /// When it is due. Microsecond precision.
    pub due_at: Option<Timestamp>,
    /// Who it is assigned to.
    pub assignee: Option<OwnerId>,
    /// Priority.
    pub priority: TaskPriority,
    /// The contact it concerns.
    pub contact_id: Option<ContactId>,
    /// The company it concerns.
    pub company_id: Option<CompanyId>,
    /// The deal it concerns.
    pub deal_id: Option<DealId>,
}

impl NewTask {
    /// An open task with a title, normal priority and nothing else.
    pub fn new(title: TaskTitle) -> Self {
        NewTask {
            title,
            body: None,
            due_at: None,
            assignee: None,
            priority: TaskPriority::Normal,
            contact_id: None,
            company_id: None,
            deal_id: None,
        }
    }

    /// The task as every store takes it, or why it cannot be: `due_at`
    /// within years 1–9999 and normalised
    /// ([`check_timestamp`](super::check_timestamp)). Every store calls it
    /// before anything else.
    pub fn checked(mut self) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        if let Some(at) = self.due_at {
            self.due_at = errors.check(super::check_timestamp("due_at", at));
        }
        errors.finish(|| self)
    }
}

/// Inbound JSON for a new task. Unknown fields are rejected.
///
/// Read it with [`FromJson::from_json`](super::FromJson::from_json) (or
/// `from_json_slice`, `from_json_value`): a wrong type or an unknown field
/// is then an [`Error::Validation`](crate::Error::Validation) naming the
/// field, which plain `serde_json::from_str` does not do.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTaskDto {
    /// Required.
    #[serde(default)]
    pub title: Option<String>,
    /// Optional, at most 100,000 characters; blank means none.
    #[serde(default)]
    pub body: Option<String>,
    /// Optional: RFC 3339.
    #[serde(default)]
    pub due_at: Option<String>,
    /// Optional: the assigned user's id; blank means none.
    #[serde(default)]
    pub assignee: Option<String>,
    /// Optional: `low | normal | high | urgent`; `normal` when absent.
    #[serde(default)]
    pub priority: Option<String>,
    /// Optional: a contact's id.
    #[serde(default)]
    pub contact_id: Option<String>,
    /// Optional: a company's id.
    #[serde(default)]
    pub company_id: Option<String>,
    /// Optional: a deal's id.
    #[serde(default)]
    pub deal_id: Option<String>,
}

impl TryFrom<NewTaskDto> for NewTask {
    type Error = ValidationErrors;

    fn try_from(dto: NewTaskDto) -> Result<Self, Self::Error> {
        let mut errors = ValidationErrors::new();
        let title = errors.check(required("title", &dto.title).and_then(TaskTitle::parse));
        let body = errors.check(optional(dto.body.as_deref(), TaskBody::parse));
        let due_at = errors.check(optional(dto.due_at.as_deref(), |v| {
            parse_timestamp("due_at", v)
        }));
        let assignee = errors.check(optional(dto.assignee.as_deref(), |v| {
            OwnerId::parse_field("assignee", v)
        }));
        let priority = errors.check(match dto.priority.as_deref() {
            None => Ok(TaskPriority::Normal),
            Some(v) => TaskPriority::parse_field("priority", v),
        });
        let contact_id = errors.check(optional(dto.contact_id.as_deref(), |v| {
            parse_id("contact_id", v)
        }));
        let company_id = errors.check(optional(dto.company_id.as_deref(), |v| {
            parse_id("company_id", v)
        }));
        let deal_id = errors.check(optional(dto.deal_id.as_deref(), |v| parse_id("deal_id", v)));
        match (
            title, body, due_at, assignee, priority, contact_id, company_id, deal_id,
        ) {
            (
                Some(title),
                Some(body),
                Some(due_at),
                Some(assignee),
                Some(priority),
                Some(contact_id),
                Some(company_id),
                Some(deal_id),
            ) if errors.is_empty() => Ok(NewTask {
                title,
                body,
                due_at,
                assignee,
                priority,
                contact_id,
                company_id,
                deal_id,
            }),
            _ => Err(errors),
        }
    }
}

/// Inbound JSON for a partial update of a task (completing and reopening
/// are operations of their own). An absent field is left as it is; `null`
/// (or a blank string) clears an optional field. Unknown fields are
/// rejected.
///
/// Read it with [`FromJson::from_json`](super::FromJson::from_json) (or
/// `from_json_slice`, `from_json_value`): a wrong type or an unknown field
/// is then an [`Error::Validation`](crate::Error::Validation) naming the
/// field, which plain `serde_json::from_str` does not do.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskPatchDto {
    /// New title.
    #[serde(default)]
    pub title: Option<String>,
    /// New description; `null` clears it.
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub body: Option<Option<String>>,
    /// New due time (RFC 3339); `null` clears it.
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub due_at: Option<Option<String>>,
    /// New assignee; `null` clears it.
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub assignee: Option<Option<String>>,
    /// New priority.
    #[serde(default)]
    pub priority: Option<String>,
    /// New contact; `null` unlinks it.
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub contact_id: Option<Option<String>>,
    /// New company; `null` unlinks it.
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub company_id: Option<Option<String>>,
    /// New deal; `null` unlinks it.
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub deal_id: Option<Option<String>>,
}

/// A validated partial update of a task: `None` leaves a field as it is,
/// `Some(None)` clears an optional one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskPatch {
    /// New title.
    pub title: Option<TaskTitle>,
    /// New description.
    pub body: Option<Option<TaskBody>>,
    /// New due time. Microsecond precision.
    pub due_at: Option<Option<Timestamp>>,
    /// New assignee.
    pub assignee: Option<Option<OwnerId>>,
    /// New priority.
    pub priority: Option<TaskPriority>,
    /// New contact.
    pub contact_id: Option<Option<ContactId>>,
    /// New company.
    pub company_id: Option<Option<CompanyId>>,
    /// New deal.
    pub deal_id: Option<Option<DealId>>,
}

impl TaskPatch {
    /// True when the patch sets nothing.
    pub fn is_empty(&self) -> bool {
        *self == TaskPatch::default()
    }

    /// The patch as every store takes it, or why it cannot be: `due_at`
    /// within years 1–9999 and normalised
    /// ([`check_timestamp`](super::check_timestamp)). Every store calls it
    /// before anything else.
    pub fn checked(mut self) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        if let Some(Some(at)) = self.due_at {
            self.due_at = errors.check(super::check_timestamp("due_at", at)).map(Some);
        }
        errors.finish(|| self)
    }
}

impl TryFrom<TaskPatchDto> for TaskPatch {
    type Error = ValidationErrors;

    fn try_from(dto: TaskPatchDto) -> Result<Self, Self::Error> {
        let mut errors = ValidationErrors::new();
        let mut patch = TaskPatch::default();
        if let Some(v) = &dto.title {
            patch.title = errors.check(TaskTitle::parse(v));
        }
        if let Some(v) = &dto.body {
            patch.body = errors.check(optional(v.as_deref(), TaskBody::parse));
        }
        if let Some(v) = &dto.due_at {
            patch.due_at = errors.check(optional(v.as_deref(), |v| parse_timestamp("due_at", v)));
        }
        if let Some(v) = &dto.assignee {
            patch.assignee = errors.check(optional(v.as_deref(), |v| {
                OwnerId::parse_field("assignee", v)
            }));
        }
        if let Some(v) = &dto.priority {
            patch.priority = errors.check(TaskPriority::parse_field("priority", v));
        }
        if let Some(v) = &dto.contact_id {
            patch.contact_id = errors.check(optional(v.as_deref(), |v| parse_id("contact_id", v)));
        }
        if let Some(v) = &dto.company_id {
            patch.company_id = errors.check(optional(v.as_deref(), |v| parse_id("company_id", v)));
        }
        if let Some(v) = &dto.deal_id {
            patch.deal_id = errors.check(optional(v.as_deref(), |v| parse_id("deal_id", v)));
        }
        errors.finish(|| patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        chrono::DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn task() -> Task {
        Task::create(
            TenantId::new(),
            NewTask::new(TaskTitle::parse("Call Ada").unwrap()),
            at(1_000),
        )
    }

    #[test]
    fn priorities_order_from_low_to_urgent_and_read_any_case() {
        assert!(TaskPriority::Low < TaskPriority::Normal);
        assert!(TaskPriority::High < TaskPriority::Urgent);
        assert_eq!(TaskPriority::default(), TaskPriority::Normal);
        assert_eq!(
            TaskPriority::parse_field("p", " URGENT "),
            Ok(TaskPriority::Urgent)
        );
        assert_eq!(
            serde_json::to_string(&TaskPriority::High).unwrap(),
            r#""high""#
        );
        let e = TaskPriority::parse_field("priority", "asap").unwrap_err();
        assert_eq!((e.field.as_str(), e.code), ("priority", "unknown_value"));
    }

    #[test]
    fn a_task_is_overdue_only_while_open_and_past_its_due_time() {
        let mut t = task();
        assert!(t.is_open());
        assert!(!t.is_overdue(at(5_000)));
        t.due_at = Some(at(2_000));
        assert!(!t.is_overdue(at(2_000)));
        assert!(t.is_overdue(at(2_001)));
        let done = t.completed(at(3_000), at(3_000)).unwrap();
        assert!(!done.is_open());
        assert!(!done.is_overdue(at(9_000)));
    }

    #[test]
    fn completing_and_reopening_change_the_task_once() {
        let t = task();
        assert_eq!(t.reopened(at(2_000)), None);
        let done = t.completed(at(2_000), at(2_000)).unwrap();
        assert_eq!(done.done_at, Some(at(2_000)));
        assert_eq!(done.updated_at, at(2_000));
        assert_eq!(done.version, t.version.next());
        assert_eq!(done.completed(at(3_000), at(3_000)), None);
        let open = done.reopened(at(4_000)).unwrap();
        assert_eq!(open.done_at, None);
        assert_eq!(open.version, done.version.next());
        assert_eq!(open.updated_at, at(4_000));
    }

    #[test]
    fn a_patch_bumps_the_version_only_when_it_changes_something() {
        let t = task();
        assert_eq!(t.patched(&TaskPatch::default(), at(2_000)), None);
        let same = TaskPatch {
            priority: Some(TaskPriority::Normal),
            body: Some(None),
            ..TaskPatch::default()
        };
        assert_eq!(t.patched(&same, at(2_000)), None);
        let patch = TaskPatch::try_from(TaskPatchDto {
            due_at: Some(Some("2030-01-02T03:04:05.123456789+02:00".into())),
            priority: Some("high".into()),
            ..TaskPatchDto::default()
        })
        .unwrap();
        let next = t.patched(&patch, at(2_000)).unwrap();
        assert_eq!(next.version, t.version.next());
        assert_eq!(
            next.due_at.unwrap().to_rfc3339(),
            "2030-01-02T01:04:05.123456+00:00"
        );
    }

    #[test]
    fn a_new_task_reads_every_field_and_reports_every_error() {
        let contact = ContactId::new();
        let new = NewTask::try_from(NewTaskDto {
            title: Some(" Send the quote ".into()),
            body: Some("Line one\nLine two".into()),
            due_at: Some("2030-01-01T09:00:00Z".into()),
            assignee: Some("user:9".into()),
            priority: Some("Urgent".into()),
            contact_id: Some(contact.to_string()),
            company_id: Some(String::new()),
            ..NewTaskDto::default()
        })
        .unwrap();
        assert_eq!(new.title.as_str(), "Send the quote");
        assert_eq!(new.priority, TaskPriority::Urgent);
        assert_eq!(new.contact_id, Some(contact));
        assert_eq!(new.company_id, None);
        let t = Task::create(TenantId::new(), new.checked().unwrap(), at(0));
        assert!(t.is_overdue(at(2_000_000_000)));

        let e = NewTask::try_from(NewTaskDto {
            body: Some("\u{202e}".into()),
            due_at: Some("tomorrow".into()),
            assignee: Some("x\n".into()),
            priority: Some("asap".into()),
            contact_id: Some("nope".into()),
            company_id: Some("1".into()),
            deal_id: Some("2".into()),
            ..NewTaskDto::default()
        })
        .unwrap_err();
        let fields: Vec<&str> = e.as_slice().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "title",
                "body",
                "due_at",
                "assignee",
                "priority",
                "contact_id",
                "company_id",
                "deal_id"
            ]
        );
    }

    #[test]
    fn a_due_time_out_of_range_is_refused_by_the_check_every_store_makes() {
        let mut new = NewTask::new(TaskTitle::parse("x").unwrap());
        new.due_at = Some(chrono::DateTime::<chrono::Utc>::MAX_UTC);
        let e = new.checked().unwrap_err();
        assert_eq!(e.as_slice()[0].field, "due_at");
        let patch = TaskPatch {
            due_at: Some(Some(chrono::DateTime::<chrono::Utc>::MIN_UTC)),
            ..TaskPatch::default()
        };
        assert_eq!(patch.checked().unwrap_err().as_slice()[0].field, "due_at");
        let clear = TaskPatch {
            due_at: Some(None),
            ..TaskPatch::default()
        };
        assert_eq!(clear.clone().checked(), Ok(clear));
    }
}
