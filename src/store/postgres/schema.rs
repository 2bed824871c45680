//! The schema: embedded migrations, the name of the PostgreSQL schema they
//! are applied in, table and column identifiers for sea-query, and the
//! column lists the row readers expect.

use postgres_protocol::escape::escape_identifier;
use sea_query::Iden;
use sha2::{Digest, Sha256};

use super::Migration;
use crate::error::{FieldError, Result, ValidationErrors};

/// The embedded migrations, in version order: one per area of the schema.
pub static MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "records",
        sql: include_str!("migrations/0001_records.sql"),
    },
    Migration {
        version: 2,
        name: "history",
        sql: include_str!("migrations/0002_history.sql"),
    },
    Migration {
        version: 3,
        name: "idempotency",
        sql: include_str!("migrations/0003_idempotency.sql"),
    },
    Migration {
        version: 4,
        name: "scoring",
        sql: include_str!("migrations/0004_scoring.sql"),
    },
    Migration {
        version: 5,
        name: "companies",
        sql: include_str!("migrations/0005_companies.sql"),
    },
    Migration {
        version: 6,
        name: "feed",
        sql: include_str!("migrations/0006_feed.sql"),
    },
    Migration {
        version: 7,
        name: "deal_search",
        sql: include_str!("migrations/0007_deal_search.sql"),
    },
    Migration {
        version: 8,
        name: "feed_commit_marker_scores",
        sql: include_str!("migrations/0008_feed_commit_marker_scores.sql"),
    },
    Migration {
        version: 9,
        name: "external_ids",
        sql: include_str!("migrations/0009_external_ids.sql"),
    },
    Migration {
        version: 10,
        name: "freshness",
        sql: include_str!("migrations/0010_freshness.sql"),
    },
    Migration {
        version: 11,
        name: "merge_journal",
        sql: include_str!("migrations/0011_merge_journal.sql"),
    },
    Migration {
        version: 12,
        name: "statement_triggers",
        sql: include_str!("migrations/0012_statement_triggers.sql"),
    },
    Migration {
        version: 13,
        name: "statement_slices",
        sql: include_str!("migrations/0013_statement_slices.sql"),
    },
    Migration {
        version: 14,
        name: "timeline_kind",
        sql: include_str!("migrations/0014_timeline_kind.sql"),
    },
    Migration {
        version: 15,
        name: "idempotency_settled",
        sql: include_str!("migrations/0015_idempotency_settled.sql"),
    },
    Migration {
        version: 16,
        name: "feed_head_from_markers",
        sql: include_str!("migrations/0016_feed_head_from_markers.sql"),
    },
    Migration {
        version: 17,
        name: "contact_ranks",
        sql: include_str!("migrations/0017_contact_ranks.sql"),
    },
    Migration {
        version: 18,
        name: "feed_events_in_history",
        sql: include_str!("migrations/0018_feed_events_in_history.sql"),
    },
    Migration {
        version: 19,
        name: "feed_positions_by_readers",
        sql: include_str!("migrations/0019_feed_positions_by_readers.sql"),
    },
    Migration {
        version: 20,
        name: "created_changes_from_data",
        sql: include_str!("migrations/0020_created_changes_from_data.sql"),
    },
];

/// The schema a store keeps its objects in when none is set.
pub const DEFAULT_SCHEMA: &str = "crm";

/// The PostgreSQL schema a store's tables, functions, triggers, policies and
/// migration records live in: a valid identifier, kept with its quoted form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SchemaName {
    name: String,
    /// `"name"`, quoted as an identifier (`"` doubled).
    quoted: String,
}

impl SchemaName {
    /// Checks `name` as a PostgreSQL identifier: not empty, at most 63 bytes
    /// (longer ones the server would cut short), no NUL character, and not
    /// beginning with `pg_` (reserved for system schemas). It is used as
    /// given, case and all: it is always quoted.
    pub(super) fn parse(name: &str) -> Result<Self> {
        let refuse = |code: &'static str, reason: String| {
            Err(ValidationErrors::single(FieldError::new("schema", code, reason)).into())
        };
        if name.is_empty() {
            return refuse("required", "is empty".to_string());
        }
        if name.len() > MAX_IDENTIFIER_BYTES {
            return refuse(
                "too_long",
                format!(
                    "is {} bytes long; PostgreSQL keeps at most {MAX_IDENTIFIER_BYTES}",
                    name.len()
                ),
            );
        }
        if name.contains('\0') {
            return refuse("invalid_format", "contains a NUL character".to_string());
        }
        if name.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("pg_")) {
            return refuse(
                "invalid_format",
                "begins with pg_, which PostgreSQL reserves for system schemas".to_string(),
            );
        }
        Ok(SchemaName {
            name: name.to_string(),
            quoted: escape_identifier(name),
        })
    }

    /// The name, as given.
    pub(super) fn as_str(&self) -> &str {
        &self.name
    }

    /// The name quoted as an identifier, for SQL text.
    pub(super) fn quoted(&self) -> &str {
        &self.quoted
    }

    /// `table` of this schema, both names quoted, for SQL text.
    pub(super) fn qualify(&self, table: &str) -> String {
        format!("{}.{}", self.quoted, escape_identifier(table))
    }

    /// The search path of the store's transactions and migrations: this
    /// schema, then the session's temporary schema (named last, so that a
    /// temporary table never hides one of the schema's).
    pub(super) fn search_path(&self) -> String {
        format!("{}, pg_temp", self.quoted)
    }

    /// The key of the advisory lock that serializes the migrations of this
    /// schema (`pg_advisory_xact_lock`): the same for every process, and
    /// another for another schema, so that two schemas migrate independently.
    pub(super) fn migration_lock_key(&self) -> i64 {
        let mut hash = Sha256::new();
        hash.update(b"crm-core migrations\0");
        hash.update(self.name.as_bytes());
        let digest = hash.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        i64::from_be_bytes(first)
    }
}

/// The longest identifier PostgreSQL keeps (`NAMEDATALEN - 1`).
const MAX_IDENTIFIER_BYTES: usize = 63;

/// The `contacts` table.
#[derive(Debug, Clone, Copy, Iden)]
pub(super) enum Contacts {
    Table,
    TenantId,
    Id,
    Email,
    FirstName,
    LastName,
    Company,
    Title,
    Phone,
    LeadSource,
    Metadata,
    Score,
    Active,
    CreatedAt,
    UpdatedAt,
    Version,
    EmailKey,
    FirstNameKey,
    LastNameKey,
    CompanyKey,
    CompanyId,
    OwnerId,
}

/// The `deals` table.
#[derive(Debug, Clone, Copy, Iden)]
pub(super) enum Deals {
    Table,
    TenantId,
    Id,
    ContactId,
    Title,
    Amount,
    Currency,
    Pipeline,
    Stage,
    ExpectedCloseDate,
    WonAt,
    LostAt,
    LostReason,
    CreatedAt,
    UpdatedAt,
    Version,
    CompanyId,
    OwnerId,
}

/// The `activities` table.
#[derive(Debug, Clone, Copy, Iden)]
pub(super) enum Activities {
    Table,
    TenantId,
    Id,
    ContactId,
    DealId,
    Kind,
    Direction,
    Subject,
    Body,
    OccurredAt,
    CreatedAt,
}

/// The `signals` table.
#[derive(Debug, Clone, Copy, Iden)]
pub(super) enum Signals {
    Table,
    TenantId,
    Id,
    ContactId,
    Kind,
    OccurredAt,
}

/// The columns of a contact row, in the order the reader expects.
pub(super) const CONTACT_COLUMNS: [Contacts; 17] = [
    Contacts::TenantId,
    Contacts::Id,
    Contacts::Email,
    Contacts::FirstName,
    Contacts::LastName,
    Contacts::Company,
    Contacts::Title,
    Contacts::Phone,
    Contacts::LeadSource,
    Contacts::Metadata,
    Contacts::Score,
    Contacts::Active,
    Contacts::CreatedAt,
    Contacts::UpdatedAt,
    Contacts::Version,
    Contacts::CompanyId,
    Contacts::OwnerId,
];

/// The columns a contact is inserted with: [`CONTACT_COLUMNS`] but the
/// score (a column of `contact_ranks`, whose row a trigger creates with
/// the contact), then its caseless keys (see
/// [`super::keys::ContactKeys`]).
pub(super) const CONTACT_INSERT_COLUMNS: [Contacts; 20] = {
    let keys = [
        Contacts::EmailKey,
        Contacts::FirstNameKey,
        Contacts::LastNameKey,
        Contacts::CompanyKey,
    ];
    let mut out = [Contacts::TenantId; 20];
    let (mut i, mut from) = (0, 0);
    while i < out.len() {
        if from < CONTACT_COLUMNS.len() && matches!(CONTACT_COLUMNS[from], Contacts::Score) {
            from += 1;
            continue;
        }
        out[i] = if from < CONTACT_COLUMNS.len() {
            CONTACT_COLUMNS[from]
        } else {
            keys[from - CONTACT_COLUMNS.len()]
        };
        i += 1;
        from += 1;
    }
    out
};

/// [`CONTACT_COLUMNS`] as SQL, for `concat!`: the names the reader reads
/// from [`contacts_scored!`] or [`contacts_ranked!`].
macro_rules! contact_select {
    () => {
        "tenant_id, id, email, first_name, last_name, company, title, phone, lead_source, \
         metadata, score, active, created_at, updated_at, version, company_id, owner_id"
    };
}
pub(super) use contact_select;

/// [`CONTACT_COLUMNS`] from [`contacts_join!`]: the contact `c`, its score
/// from its rank row `r`.
macro_rules! contact_select_joined {
    () => {
        "c.tenant_id, c.id, c.email, c.first_name, c.last_name, c.company, c.title, c.phone, \
         c.lead_source, c.metadata, r.score, c.active, c.created_at, c.updated_at, c.version, \
         c.company_id, c.owner_id"
    };
}
pub(super) use contact_select_joined;

/// Contacts `c` joined to their rank rows `r` (`contact_ranks`, one per
/// contact: the score, and copies of the active flag and creation time
/// that the top-leads index and the rescore read). An outer join, so that
/// a contact whose rank row is missing (written around the store with its
/// triggers off) is read as a row with no score, which the row reader
/// reports as an error, rather than not at all; a condition on the rank
/// row (the top leads' `rank_active`, a score bound) makes PostgreSQL plan
/// it as the inner join it then is.
macro_rules! contacts_join {
    () => {
        "contacts c LEFT JOIN contact_ranks r \
         ON r.tenant_id = c.tenant_id AND r.contact_id = c.id"
    };
}
pub(super) use contacts_join;

/// A table named `contacts` holding every column of a contact, the score
/// included, its caseless keys, `rank_active` (the rank row's copy of
/// `active`, which a condition on `active` repeats so that the partial
/// top-leads index applies) and `rank_id` (the rank row's `contact_id`,
/// equal to `id`, which a score order and its keyset name so that they
/// follow that index): what a statement reads with unqualified names,
/// such as the search. PostgreSQL plans it as the join itself.
macro_rules! contacts_ranked {
    () => {
        concat!(
            "(SELECT ",
            $crate::store::postgres::schema::contact_select_joined!(),
            ", c.email_key, c.first_name_key, c.last_name_key, c.company_key, \
             r.active AS rank_active, r.contact_id AS rank_id FROM ",
            $crate::store::postgres::schema::contacts_join!(),
            ") AS contacts"
        )
    };
}
pub(super) use contacts_ranked;

/// A table named `contacts` holding every column of a contact and its
/// caseless keys, like [`contacts_ranked!`], but reading the score with a
/// subquery of the rank row's primary key instead of a join: for the
/// statements whose rows neither the score's order nor a condition on it
/// chooses. PostgreSQL evaluates such a subquery only for the rows it
/// returns, after any sort and limit, whatever it believes of the tables'
/// sizes: with the join, a page read before the tables were analysed
/// (the first export after a tenant's import) joined every contact of the
/// tenant before sorting them. The statement's `$1` must be the tenant:
/// the subquery names it, so that a distributed PostgreSQL (Citus) sees
/// every table held to the tenant's shard by a constant (with the outer
/// row's tenant instead, a search with a tag filter was refused as a join
/// it cannot push down).
macro_rules! contacts_scored {
    () => {
        "(SELECT c.tenant_id, c.id, c.email, c.first_name, c.last_name, c.company, c.title, \
         c.phone, c.lead_source, c.metadata, (SELECT r.score FROM contact_ranks r \
         WHERE r.tenant_id = $1 AND r.contact_id = c.id) AS score, c.active, \
         c.created_at, c.updated_at, c.version, c.company_id, c.owner_id, c.email_key, \
         c.first_name_key, c.last_name_key, c.company_key FROM contacts c) AS contacts"
    };
}
pub(super) use contacts_scored;

/// The columns of [`CONTACT_INSERT_COLUMNS`] as SQL, for `concat!`.
macro_rules! contact_insert {
    () => {
        "tenant_id, id, email, first_name, last_name, company, title, phone, lead_source, \
         metadata, active, created_at, updated_at, version, company_id, owner_id, email_key, \
         first_name_key, last_name_key, company_key"
    };
}
pub(super) use contact_insert;

/// [`CONTACT_COLUMNS`] as SQL.
#[cfg(test)]
const CONTACT_SELECT: &str = contact_select!();

/// The columns of a deal row, in the order the reader expects.
pub(super) const DEAL_COLUMNS: [Deals; 17] = [
    Deals::TenantId,
    Deals::Id,
    Deals::ContactId,
    Deals::Title,
    Deals::Amount,
    Deals::Currency,
    Deals::Pipeline,
    Deals::Stage,
    Deals::ExpectedCloseDate,
    Deals::WonAt,
    Deals::LostAt,
    Deals::LostReason,
    Deals::CreatedAt,
    Deals::UpdatedAt,
    Deals::Version,
    Deals::CompanyId,
    Deals::OwnerId,
];

/// [`DEAL_COLUMNS`] as SQL, for `concat!`.
macro_rules! deal_select {
    () => {
        "tenant_id, id, contact_id, title, amount, currency, pipeline, stage, \
         expected_close_date, won_at, lost_at, lost_reason, created_at, updated_at, version, \
         company_id, owner_id"
    };
}
pub(super) use deal_select;

/// [`DEAL_COLUMNS`] as SQL.
#[cfg(test)]
const DEAL_SELECT: &str = deal_select!();

/// The columns of an activity row, in the order the reader expects.
pub(super) const ACTIVITY_COLUMNS: [Activities; 10] = [
    Activities::TenantId,
    Activities::Id,
    Activities::ContactId,
    Activities::DealId,
    Activities::Kind,
    Activities::Direction,
    Activities::Subject,
    Activities::Body,
    Activities::OccurredAt,
    Activities::CreatedAt,
];

/// [`ACTIVITY_COLUMNS`] as SQL, for `concat!`.
macro_rules! activity_select {
    () => {
        "tenant_id, id, contact_id, deal_id, kind, direction, subject, body, occurred_at, \
         created_at"
    };
}
pub(super) use activity_select;

/// [`ACTIVITY_COLUMNS`] as SQL.
#[cfg(test)]
const ACTIVITY_SELECT: &str = activity_select!();

/// The columns of a signal row, in the order the reader expects.
pub(super) const SIGNAL_COLUMNS: [Signals; 5] = [
    Signals::TenantId,
    Signals::Id,
    Signals::ContactId,
    Signals::Kind,
    Signals::OccurredAt,
];

/// [`SIGNAL_COLUMNS`] as SQL, for `concat!`.
macro_rules! signal_select {
    () => {
        "tenant_id, id, contact_id, kind, occurred_at"
    };
}
pub(super) use signal_select;

/// [`SIGNAL_COLUMNS`] as SQL.
#[cfg(test)]
const SIGNAL_SELECT: &str = signal_select!();

/// The `tasks` table.
#[derive(Debug, Clone, Copy, Iden)]
pub(super) enum Tasks {
    Table,
    TenantId,
    Id,
    Title,
    Body,
    DueAt,
    DoneAt,
    Assignee,
    Priority,
    ContactId,
    CompanyId,
    DealId,
    CreatedAt,
    UpdatedAt,
    Version,
}

/// The columns of a task row, in the order the reader expects.
pub(super) const TASK_COLUMNS: [Tasks; 14] = [
    Tasks::TenantId,
    Tasks::Id,
    Tasks::Title,
    Tasks::Body,
    Tasks::DueAt,
    Tasks::DoneAt,
    Tasks::Assignee,
    Tasks::Priority,
    Tasks::ContactId,
    Tasks::CompanyId,
    Tasks::DealId,
    Tasks::CreatedAt,
    Tasks::UpdatedAt,
    Tasks::Version,
];

/// [`TASK_COLUMNS`] as SQL, for `concat!`.
macro_rules! task_select {
    () => {
        "tenant_id, id, title, body, due_at, done_at, assignee, priority, contact_id, \
         company_id, deal_id, created_at, updated_at, version"
    };
}
pub(super) use task_select;

/// [`TASK_COLUMNS`] as SQL.
#[cfg(test)]
const TASK_SELECT: &str = task_select!();
/// The `companies` table.
#[derive(Debug, Clone, Copy, Iden)]
pub(super) enum Companies {
    Table,
    TenantId,
    Id,
    Name,
    Domain,
    Industry,
    EmployeeCount,
    RevenueAmount,
    RevenueCurrency,
    Street,
    City,
    Region,
    PostalCode,
    Country,
    Metadata,
    OwnerId,
    CreatedAt,
    UpdatedAt,
    Version,
    NameKey,
}

/// The columns of a company row, in the order the reader expects.
pub(super) const COMPANY_COLUMNS: [Companies; 18] = [
    Companies::TenantId,
    Companies::Id,
    Companies::Name,
    Companies::Domain,
    Companies::Industry,
    Companies::EmployeeCount,
    Companies::RevenueAmount,
    Companies::RevenueCurrency,
    Companies::Street,
    Companies::City,
    Companies::Region,
    Companies::PostalCode,
    Companies::Country,
    Companies::Metadata,
    Companies::OwnerId,
    Companies::CreatedAt,
    Companies::UpdatedAt,
    Companies::Version,
];

/// The columns a company is inserted with: [`COMPANY_COLUMNS`], then the
/// caseless key of its name.
pub(super) const COMPANY_INSERT_COLUMNS: [Companies; 19] = {
    let mut out = [Companies::NameKey; 19];
    let mut i = 0;
    while i < COMPANY_COLUMNS.len() {
        out[i] = COMPANY_COLUMNS[i];
        i += 1;
    }
    out
};

/// [`COMPANY_COLUMNS`] as SQL, for `concat!`.
macro_rules! company_select {
    () => {
        "tenant_id, id, name, domain, industry, employee_count, revenue_amount, \
         revenue_currency, street, city, region, postal_code, country, metadata, owner_id, \
         created_at, updated_at, version"
    };
}
pub(super) use company_select;

/// [`COMPANY_COLUMNS`] as SQL.
#[cfg(test)]
const COMPANY_SELECT: &str = company_select!();

#[cfg(test)]
mod tests {
    use sea_query::Iden;

    use super::*;

    #[test]
    fn the_select_lists_name_the_same_columns_as_the_identifier_lists() {
        let names = |cols: &[&dyn Iden]| cols.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        let split = |s: &str| {
            s.split(',')
                .map(|c| c.trim().to_string())
                .collect::<Vec<_>>()
        };
        let c: Vec<&dyn Iden> = CONTACT_COLUMNS.iter().map(|c| c as &dyn Iden).collect();
        assert_eq!(names(&c), split(CONTACT_SELECT));
        let joined: Vec<String> = split(contact_select_joined!())
            .iter()
            .map(|c| c[2..].to_string())
            .collect();
        assert_eq!(names(&c), joined);
        let i: Vec<&dyn Iden> = CONTACT_INSERT_COLUMNS
            .iter()
            .map(|c| c as &dyn Iden)
            .collect();
        assert_eq!(names(&i), split(contact_insert!()));
        let d: Vec<&dyn Iden> = DEAL_COLUMNS.iter().map(|c| c as &dyn Iden).collect();
        assert_eq!(names(&d), split(DEAL_SELECT));
        let a: Vec<&dyn Iden> = ACTIVITY_COLUMNS.iter().map(|c| c as &dyn Iden).collect();
        assert_eq!(names(&a), split(ACTIVITY_SELECT));
        let s: Vec<&dyn Iden> = SIGNAL_COLUMNS.iter().map(|c| c as &dyn Iden).collect();
        assert_eq!(names(&s), split(SIGNAL_SELECT));
        let t: Vec<&dyn Iden> = TASK_COLUMNS.iter().map(|c| c as &dyn Iden).collect();
        assert_eq!(names(&t), split(TASK_SELECT));
        assert_eq!(Tasks::Table.to_string(), "tasks");
        let co: Vec<&dyn Iden> = COMPANY_COLUMNS.iter().map(|c| c as &dyn Iden).collect();
        assert_eq!(names(&co), split(COMPANY_SELECT));
        assert_eq!(Contacts::Table.to_string(), "contacts");
        assert_eq!(Activities::Table.to_string(), "activities");
    }

    #[test]
    fn a_schema_name_is_quoted_as_an_identifier_and_searched_before_pg_temp() {
        let plain = SchemaName::parse("crm").unwrap();
        assert_eq!(plain.quoted(), r#""crm""#);
        assert_eq!(plain.search_path(), r#""crm", pg_temp"#);
        let odd = SchemaName::parse(r#"Crm "x"; --"#).unwrap();
        assert_eq!(odd.as_str(), r#"Crm "x"; --"#);
        assert_eq!(odd.quoted(), r#""Crm ""x""; --""#);
    }

    #[test]
    fn a_schema_name_postgresql_would_not_keep_as_given_is_refused() {
        for bad in ["", "pg_crm", "Pg_x", "a\0b", &"x".repeat(64)] {
            let err = SchemaName::parse(bad).unwrap_err();
            assert_eq!(err.field_errors()[0].field, "schema", "{bad:?}");
        }
        // 63 bytes, however many characters.
        assert!(SchemaName::parse(&"é".repeat(31)).is_ok());
        assert!(SchemaName::parse(&"é".repeat(32)).is_err());
    }

    #[test]
    fn each_schema_migrates_under_a_lock_of_its_own() {
        let key = |name: &str| SchemaName::parse(name).unwrap().migration_lock_key();
        assert_eq!(key("crm"), key("crm"));
        assert_ne!(key("crm"), key("crm_other"));
        assert_ne!(key("crm"), key("CRM"));
    }

    #[test]
    fn the_migrations_are_numbered_from_one_without_gaps() {
        let versions: Vec<i64> = MIGRATIONS.iter().map(|m| m.version).collect();
        let expected: Vec<i64> = (1..=MIGRATIONS.len() as i64).collect();
        assert_eq!(versions, expected);
    }
}
