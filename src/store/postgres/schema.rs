//! The schema: embedded migrations, table and column identifiers for
//! sea-query, and the column lists the row readers expect.

use sea_query::Iden;

use super::Migration;

/// The embedded migrations, in version order.
pub static MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("migrations/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "idempotency_keys",
        sql: include_str!("migrations/0002_idempotency_keys.sql"),
    },
    Migration {
        version: 3,
        name: "history",
        sql: include_str!("migrations/0003_history.sql"),
    },
    Migration {
        version: 4,
        name: "scoring",
        sql: include_str!("migrations/0004_scoring.sql"),
    },
    Migration {
        version: 5,
        name: "idempotency_recent_index",
        sql: include_str!("migrations/0005_idempotency_recent_index.sql"),
    },
    Migration {
        version: 6,
        name: "history_create_fast_path",
        sql: include_str!("migrations/0006_history_create_fast_path.sql"),
    },
    Migration {
        version: 7,
        name: "idempotency_record_function",
        sql: include_str!("migrations/0007_idempotency_record_function.sql"),
    },
    Migration {
        version: 8,
        name: "caseless_keys",
        sql: include_str!("migrations/0008_caseless_keys.sql"),
    },
    Migration {
        version: 9,
        name: "caseless_key_constraints",
        sql: include_str!("migrations/0009_caseless_key_constraints.sql"),
    },
];

/// The migration before which the caseless keys of the rows already
/// stored are filled in (by [`super::keys::backfill`]).
pub(super) const KEYS_REQUIRED: i64 = 9;

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
pub(super) const CONTACT_COLUMNS: [Contacts; 15] = [
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
];

/// The columns a contact is inserted with: [`CONTACT_COLUMNS`], then its
/// caseless keys (see [`super::keys::ContactKeys`]).
pub(super) const CONTACT_INSERT_COLUMNS: [Contacts; 19] = {
    let keys = [
        Contacts::EmailKey,
        Contacts::FirstNameKey,
        Contacts::LastNameKey,
        Contacts::CompanyKey,
    ];
    let mut out = [Contacts::TenantId; 19];
    let mut i = 0;
    while i < out.len() {
        out[i] = if i < CONTACT_COLUMNS.len() {
            CONTACT_COLUMNS[i]
        } else {
            keys[i - CONTACT_COLUMNS.len()]
        };
        i += 1;
    }
    out
};

/// [`CONTACT_COLUMNS`] as SQL, for `concat!`.
macro_rules! contact_select {
    () => {
        "tenant_id, id, email, first_name, last_name, company, title, phone, lead_source, \
         metadata, score, active, created_at, updated_at, version"
    };
}
pub(super) use contact_select;

/// [`CONTACT_COLUMNS`] as SQL.
#[cfg(test)]
const CONTACT_SELECT: &str = contact_select!();

/// The columns of a deal row, in the order the reader expects.
pub(super) const DEAL_COLUMNS: [Deals; 15] = [
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
];

/// [`DEAL_COLUMNS`] as SQL, for `concat!`.
macro_rules! deal_select {
    () => {
        "tenant_id, id, contact_id, title, amount, currency, pipeline, stage, \
         expected_close_date, won_at, lost_at, lost_reason, created_at, updated_at, version"
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
        let d: Vec<&dyn Iden> = DEAL_COLUMNS.iter().map(|c| c as &dyn Iden).collect();
        assert_eq!(names(&d), split(DEAL_SELECT));
        let a: Vec<&dyn Iden> = ACTIVITY_COLUMNS.iter().map(|c| c as &dyn Iden).collect();
        assert_eq!(names(&a), split(ACTIVITY_SELECT));
        let s: Vec<&dyn Iden> = SIGNAL_COLUMNS.iter().map(|c| c as &dyn Iden).collect();
        assert_eq!(names(&s), split(SIGNAL_SELECT));
        assert_eq!(Contacts::Table.to_string(), "contacts");
        assert_eq!(Activities::Table.to_string(), "activities");
    }
}
