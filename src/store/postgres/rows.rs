//! Rows read back from PostgreSQL, rebuilt through the domain's
//! constructors. A row that fails validation is a backend error naming the
//! row and every invalid field, never a panic.

use chrono::NaiveDate;
use rust_decimal::Decimal;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{
    error::{self, InvalidRow},
    transaction::PgTransaction,
};
use crate::{
    domain::{
        Activity, ActivityId, ActivityKind, Address, AddressPart, Company, CompanyDomain,
        CompanyId, CompanyName, Contact, ContactId, Currency, Deal, DealId, DealTitle, Direction,
        Email, Industry, JobTitle, LeadSource, LostReason, MAX_EMPLOYEES, Metadata, Money, OwnerId,
        PersonName, Phone, PipelineKey, Score, Signal, SignalId, SignalKind, StageKey, Subject,
        Task, TaskBody, TaskId, TaskPriority, TaskTitle, TenantId, Timestamp, Version,
    },
    error::{Error, FieldError, Result},
    store::{ListScope, Page, PageRequest},
};

/// Collects field errors while a row is rebuilt.
struct Check {
    table: &'static str,
    id: Uuid,
    errors: Vec<FieldError>,
}

impl Check {
    fn new(table: &'static str, row: &Row) -> Result<Self> {
        Ok(Check {
            table,
            id: row.try_get(1).map_err(error::db)?,
            errors: Vec::new(),
        })
    }

    fn ok<T>(&mut self, r: Result<T, FieldError>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.errors.push(e);
                None
            }
        }
    }

    fn opt<T>(
        &mut self,
        v: Option<&str>,
        parse: impl FnOnce(&str) -> Result<T, FieldError>,
    ) -> Option<Option<T>> {
        match v {
            None => Some(None),
            Some(s) => self.ok(parse(s)).map(Some),
        }
    }

    fn fail(self) -> Error {
        Error::backend(InvalidRow {
            table: self.table,
            id: self.id.to_string(),
            errors: self.errors,
        })
    }
}

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, idx: usize) -> Result<T> {
    row.try_get(idx).map_err(error::db)
}

/// A contact from a row of `contact_select!()`.
pub(super) fn contact(row: &Row) -> Result<Contact> {
    let mut c = Check::new("contacts", row)?;
    let tenant_id: Uuid = get(row, 0)?;
    let email: &str = get(row, 2)?;
    let first_name: &str = get(row, 3)?;
    let last_name: &str = get(row, 4)?;
    let company: Option<&str> = get(row, 5)?;
    let title: Option<&str> = get(row, 6)?;
    let phone: Option<&str> = get(row, 7)?;
    let lead_source: &str = get(row, 8)?;
    let metadata: serde_json::Value = get(row, 9)?;
    // From the contact's rank row: NULL when it has none (see
    // `contacts_join!`), which is reported, not read as a score.
    let score: Option<i16> = get(row, 10)?;
    let active: bool = get(row, 11)?;
    let created_at: Timestamp = get(row, 12)?;
    let updated_at: Timestamp = get(row, 13)?;
    let version: i64 = get(row, 14)?;
    let company_id: Option<Uuid> = get(row, 15)?;
    let owner: Option<&str> = get(row, 16)?;

    let email = c.ok(Email::parse_stored("email", email));
    // Text and custom fields are rebuilt under the rules they were stored
    // with (`parse_stored`): a rule added for input since must not make a
    // stored record unreadable.
    let first_name = c.ok(PersonName::parse_stored("first_name", first_name));
    let last_name = c.ok(PersonName::parse_stored("last_name", last_name));
    let company = c.opt(company, |v| CompanyName::parse_stored("company", v));
    let title = c.opt(title, |v| JobTitle::parse_stored("title", v));
    let phone = c.opt(phone, Phone::parse);
    let lead_source = c.ok(LeadSource::parse_field("lead_source", lead_source));
    let metadata = c.ok(Metadata::parse_stored(metadata));
    let score = c.ok(match score {
        Some(s) => Score::new(i64::from(s)),
        None => Err(FieldError::new(
            "score",
            "missing",
            "has no rank row (contact_ranks)",
        )),
    });
    let version = c.ok(check_version(version));
    let owner = c.opt(owner, OwnerId::parse);
    match (
        email,
        first_name,
        last_name,
        company,
        title,
        phone,
        lead_source,
        metadata,
        score,
        version,
        owner,
    ) {
        (
            Some(email),
            Some(first_name),
            Some(last_name),
            Some(company),
            Some(title),
            Some(phone),
            Some(lead_source),
            Some(metadata),
            Some(score),
            Some(version),
            Some(owner),
        ) => Ok(Contact {
            id: ContactId::from_uuid(c.id),
            tenant_id: TenantId::from_uuid(tenant_id),
            email,
            first_name,
            last_name,
            company,
            title,
            phone,
            lead_source,
            metadata,
            score,
            active,
            created_at,
            updated_at,
            version,
            company_id: company_id.map(CompanyId::from_uuid),
            owner,
        }),
        _ => Err(c.fail()),
    }
}

fn check_version(v: i64) -> Result<Version, FieldError> {
    if v >= 1 {
        Ok(Version::new(v))
    } else {
        Err(FieldError::new(
            "version",
            "out_of_range",
            format!("must be at least 1, got {v}"),
        ))
    }
}

/// A deal from a row of `deal_select!()`.
pub(super) fn deal(row: &Row) -> Result<Deal> {
    let mut c = Check::new("deals", row)?;
    let tenant_id: Uuid = get(row, 0)?;
    let contact_id: Uuid = get(row, 2)?;
    let title: &str = get(row, 3)?;
    let amount: Decimal = get(row, 4)?;
    let currency: &str = get(row, 5)?;
    let pipeline: &str = get(row, 6)?;
    let stage: &str = get(row, 7)?;
    let expected_close_date: Option<NaiveDate> = get(row, 8)?;
    let won_at: Option<Timestamp> = get(row, 9)?;
    let lost_at: Option<Timestamp> = get(row, 10)?;
    let lost_reason: Option<&str> = get(row, 11)?;
    let created_at: Timestamp = get(row, 12)?;
    let updated_at: Timestamp = get(row, 13)?;
    let version: i64 = get(row, 14)?;
    let company_id: Option<Uuid> = get(row, 15)?;
    let owner: Option<&str> = get(row, 16)?;

    let title = c.ok(DealTitle::parse_stored("title", title));
    let currency = c.ok(Currency::parse(currency));
    let amount = currency.and_then(|cur| c.ok(Money::new(amount, cur)));
    let pipeline = c.ok(PipelineKey::parse(pipeline));
    let stage = c.ok(StageKey::parse(stage));
    let lost_reason = c.opt(lost_reason, |v| LostReason::parse_stored("lost_reason", v));
    let version = c.ok(check_version(version));
    let owner = c.opt(owner, OwnerId::parse);
    if lost_at.is_some() != matches!(lost_reason, Some(Some(_))) {
        c.errors.push(FieldError::new(
            "lost_reason",
            "invalid_value",
            "is set exactly when lost_at is set",
        ));
    }
    match (title, amount, pipeline, stage, lost_reason, version, owner) {
        (
            Some(title),
            Some(amount),
            Some(pipeline),
            Some(stage),
            Some(lost_reason),
            Some(version),
            Some(owner),
        ) if c.errors.is_empty() => Ok(Deal {
            id: DealId::from_uuid(c.id),
            tenant_id: TenantId::from_uuid(tenant_id),
            contact_id: ContactId::from_uuid(contact_id),
            title,
            amount,
            pipeline,
            stage,
            expected_close_date,
            won_at,
            lost_at,
            lost_reason,
            created_at,
            updated_at,
            version,
            company_id: company_id.map(CompanyId::from_uuid),
            owner,
        }),
        _ => Err(c.fail()),
    }
}

/// An activity from a row of `activity_select!()`.
pub(super) fn activity(row: &Row) -> Result<Activity> {
    let mut c = Check::new("activities", row)?;
    let tenant_id: Uuid = get(row, 0)?;
    let contact_id: Uuid = get(row, 2)?;
    let deal_id: Option<Uuid> = get(row, 3)?;
    let kind: &str = get(row, 4)?;
    let direction: Option<&str> = get(row, 5)?;
    let subject: Option<&str> = get(row, 6)?;
    let body: Option<&str> = get(row, 7)?;
    let occurred_at: Timestamp = get(row, 8)?;
    let created_at: Timestamp = get(row, 9)?;

    let kind = c.ok(ActivityKind::parse_field("kind", kind));
    let direction = c.opt(direction, |d| Direction::parse_field("direction", d));
    let subject = c.opt(subject, |v| Subject::parse_stored("subject", v));
    if let Some(b) = &body {
        let chars = b.chars().count();
        if chars == 0 || chars > crate::domain::MAX_BODY_CHARS {
            c.errors.push(FieldError::new(
                "body",
                "out_of_range",
                format!(
                    "must have 1 to {} characters",
                    crate::domain::MAX_BODY_CHARS
                ),
            ));
        }
    }
    match (kind, direction, subject) {
        (Some(kind), Some(direction), Some(subject)) if c.errors.is_empty() => Ok(Activity {
            id: ActivityId::from_uuid(c.id),
            tenant_id: TenantId::from_uuid(tenant_id),
            contact_id: ContactId::from_uuid(contact_id),
            deal_id: deal_id.map(DealId::from_uuid),
            kind,
            direction,
            subject,
            body: body.map(str::to_string),
            occurred_at,
            created_at,
        }),
        _ => Err(c.fail()),
    }
}

/// A signal from a row of `signal_select!()`.
pub(super) fn signal(row: &Row) -> Result<Signal> {
    let mut c = Check::new("signals", row)?;
    let tenant_id: Uuid = get(row, 0)?;
    let contact_id: Uuid = get(row, 2)?;
    let kind: &str = get(row, 3)?;
    let occurred_at: Timestamp = get(row, 4)?;
    match c.ok(SignalKind::parse(kind)) {
        Some(kind) => Ok(Signal {
            id: SignalId::from_uuid(c.id),
            tenant_id: TenantId::from_uuid(tenant_id),
            contact_id: ContactId::from_uuid(contact_id),
            kind,
            occurred_at,
        }),
        None => Err(c.fail()),
    }
}

/// A task from a row of `task_select!()`.
pub(super) fn task(row: &Row) -> Result<Task> {
    let mut c = Check::new("tasks", row)?;
    let tenant_id: Uuid = get(row, 0)?;
    let title: &str = get(row, 2)?;
    let body: Option<&str> = get(row, 3)?;
    let due_at: Option<Timestamp> = get(row, 4)?;
    let done_at: Option<Timestamp> = get(row, 5)?;
    let assignee: Option<&str> = get(row, 6)?;
    let priority: &str = get(row, 7)?;
    let contact_id: Option<Uuid> = get(row, 8)?;
    let company_id: Option<Uuid> = get(row, 9)?;
    let deal_id: Option<Uuid> = get(row, 10)?;
    let created_at: Timestamp = get(row, 11)?;
    let updated_at: Timestamp = get(row, 12)?;
    let version: i64 = get(row, 13)?;

    let title = c.ok(TaskTitle::parse_stored("title", title));
    let body = c.opt(body, |v| TaskBody::parse_stored("body", v));
    let assignee = c.opt(assignee, |v| OwnerId::parse_field("assignee", v));
    let priority = c.ok(TaskPriority::parse_field("priority", priority));
    let version = c.ok(check_version(version));
    match (title, body, assignee, priority, version) {
        (Some(title), Some(body), Some(assignee), Some(priority), Some(version)) => Ok(Task {
            id: TaskId::from_uuid(c.id),
            tenant_id: TenantId::from_uuid(tenant_id),
            title,
            body,
            due_at,
            done_at,
            assignee,
            priority,
            contact_id: contact_id.map(ContactId::from_uuid),
            company_id: company_id.map(CompanyId::from_uuid),
            deal_id: deal_id.map(DealId::from_uuid),
            created_at,
            updated_at,
            version,
        }),
        _ => Err(c.fail()),
    }
}

/// Rebuilds every row with `f`.
pub(super) fn all<T>(rows: &[Row], f: impl Fn(&Row) -> Result<T>) -> Result<Vec<T>> {
    rows.iter().map(f).collect()
}

impl PgTransaction {
    /// The first page of each of `contacts`' records, `limit` at most each,
    /// read with `sql` (`$1` tenant, `$2` the contacts, `$3` rows per
    /// contact; each row a record's columns, then at `ordinal` the position
    /// of its contact in `$2`, from 1, in the list's order): for each
    /// contact the page its own list gives ([`Page::from_overfetch`] with
    /// `list` and `key`). Checks `limit` and the number of contacts.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn first_pages<T, K: serde::Serialize>(
        &mut self,
        sql: &str,
        contacts: &[ContactId],
        limit: u32,
        ordinal: usize,
        f: impl Fn(&Row) -> Result<T>,
        list: impl Fn(ContactId) -> ListScope,
        key: impl Fn(&T) -> K,
    ) -> Result<Vec<Page<T>>> {
        let limit = PageRequest::first(limit).checked_limit()?;
        crate::store::check_get_many("contacts", contacts.len())?;
        if contacts.is_empty() {
            return Ok(Vec::new());
        }
        let tenant = self.tenant_uuid();
        let ids: Vec<Uuid> = contacts.iter().map(|c| c.as_uuid()).collect();
        let fetch = limit as i64 + 1;
        let rows = self.query(sql, &[&tenant, &ids, &fetch]).await?;
        let items = per_contact(&rows, contacts.len(), ordinal, f)?;
        Ok(contacts
            .iter()
            .zip(items)
            .map(|(c, items)| Page::from_overfetch(items, limit, list(*c), &key))
            .collect())
    }
}

/// The records of `rows` rebuilt with `f`, each in the list of its
/// contact (at `ordinal` of each row: the contact's position in the list
/// asked for, from 1, of `contacts` contacts), in the rows' order.
pub(super) fn per_contact<T>(
    rows: &[Row],
    contacts: usize,
    ordinal: usize,
    f: impl Fn(&Row) -> Result<T>,
) -> Result<Vec<Vec<T>>> {
    let mut items: Vec<Vec<T>> = (0..contacts).map(|_| Vec::new()).collect();
    for row in rows {
        let n: i64 = get(row, ordinal)?;
        let slot = usize::try_from(n - 1)
            .ok()
            .and_then(|i| items.get_mut(i))
            .ok_or_else(|| Error::backend(format!("a row names contact {n} of {contacts}")))?;
        slot.push(f(row)?);
    }
    Ok(items)
}

/// A company from a row of `company_select!()`.
pub(super) fn company(row: &Row) -> Result<Company> {
    let mut c = Check::new("companies", row)?;
    let tenant_id: Uuid = get(row, 0)?;
    let name: &str = get(row, 2)?;
    let domain: Option<&str> = get(row, 3)?;
    let industry: Option<&str> = get(row, 4)?;
    let employee_count: Option<i32> = get(row, 5)?;
    let revenue_amount: Option<Decimal> = get(row, 6)?;
    let revenue_currency: Option<&str> = get(row, 7)?;
    let street: Option<&str> = get(row, 8)?;
    let city: Option<&str> = get(row, 9)?;
    let region: Option<&str> = get(row, 10)?;
    let postal_code: Option<&str> = get(row, 11)?;
    let country: Option<&str> = get(row, 12)?;
    let metadata: serde_json::Value = get(row, 13)?;
    let owner: Option<&str> = get(row, 14)?;
    let created_at: Timestamp = get(row, 15)?;
    let updated_at: Timestamp = get(row, 16)?;
    let version: i64 = get(row, 17)?;

    let name = c.ok(CompanyName::parse_stored("name", name));
    let domain = c.opt(domain, |v| CompanyDomain::parse_field("domain", v));
    let industry = c.opt(industry, |v| Industry::parse_stored("industry", v));
    let employee_count = c.ok(match employee_count {
        None => Ok(None),
        Some(n) => u32::try_from(n)
            .ok()
            .filter(|n| *n <= MAX_EMPLOYEES)
            .map(Some)
            .ok_or_else(|| {
                FieldError::new(
                    "employee_count",
                    "out_of_range",
                    format!("must be 0 to {MAX_EMPLOYEES}, got {n}"),
                )
            }),
    });
    let annual_revenue = match (revenue_amount, revenue_currency) {
        (None, None) => Some(None),
        (Some(amount), Some(currency)) => c
            .ok(Currency::parse_field("revenue_currency", currency))
            .and_then(|cur| c.ok(Money::new_field("revenue_amount", amount, cur)))
            .map(Some),
        _ => {
            c.errors.push(FieldError::new(
                "revenue_amount",
                "invalid_value",
                "is set exactly when revenue_currency is set",
            ));
            None
        }
    };
    let part = |field: &'static str| move |v: &str| AddressPart::parse_stored(field, v);
    let street = c.opt(street, part("street"));
    let city = c.opt(city, part("city"));
    let region = c.opt(region, part("region"));
    let postal_code = c.opt(postal_code, part("postal_code"));
    let country = c.opt(country, part("country"));
    let metadata = c.ok(Metadata::parse_stored(metadata));
    let owner = c.opt(owner, |v| OwnerId::parse_field("owner_id", v));
    let version = c.ok(check_version(version));
    match (
        name,
        domain,
        industry,
        employee_count,
        annual_revenue,
        (street, city, region, postal_code, country),
        metadata,
        owner,
        version,
    ) {
        (
            Some(name),
            Some(domain),
            Some(industry),
            Some(employee_count),
            Some(annual_revenue),
            (Some(street), Some(city), Some(region), Some(postal_code), Some(country)),
            Some(metadata),
            Some(owner),
            Some(version),
        ) if c.errors.is_empty() => Ok(Company {
            id: CompanyId::from_uuid(c.id),
            tenant_id: TenantId::from_uuid(tenant_id),
            name,
            domain,
            industry,
            employee_count,
            annual_revenue,
            address: Address {
                street,
                city,
                region,
                postal_code,
                country,
            },
            metadata,
            owner,
            created_at,
            updated_at,
            version,
        }),
        _ => Err(c.fail()),
    }
}
