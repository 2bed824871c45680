//! Bulk upsert on PostgreSQL: a batch is copied (binary `COPY`) into a
//! transaction-local staging table, with the caseless keys computed in
//! Rust, then merged with one `INSERT … SELECT … ON CONFLICT (tenant_id,
//! email_key) DO UPDATE … RETURNING` statement. `xmax = 0` on a returned row tells an insert from
//! an update; the `WHERE` of `DO UPDATE` skips rows whose values would not
//! change, so those come back from a second lookup as unchanged. No
//! per-row round trips.
//!
//! Also here: the merge of two contacts, and the tenant's import lock.
//!
//! Rows are merged in `email_key` order, so that two batches upserting
//! overlapping emails at once take their row locks in the same order
//! rather than deadlocking. A batch holding one email twice is merged in
//! rounds (one row per email each), since one statement may not touch a
//! row twice.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use futures_util::pin_mut;

use tokio_postgres::{
    binary_copy::BinaryCopyInWriter,
    types::{ToSql, Type},
};
use uuid::Uuid;

use super::{
    contacts::DELETE_CONTACT,
    freshness::{FRESH_MERGE, FRESHNESS_OF},
    keys::ContactKeys,
    locks::{ADVISORY_XACT_LOCK, advisory_key},
    tags::MergedRecord,
    transaction::{PgTransaction, now, set_local},
};
use crate::{
    bulk::{ConflictPolicy, ImportLock, UpsertOutcome, merge_context},
    domain::{
        CompanyDomain, CompanyId, Contact, ContactId, MergeId, MergeRecord, NewContact, Timestamp,
        UnmergeConflicts, Unmerged,
    },
    error::{Entity, Error, Result},
    store::{BulkTx, ContactsTx},
};

const STAGE: &str = "CREATE TEMPORARY TABLE IF NOT EXISTS crm_bulk_contacts (\
     id uuid NOT NULL, email text NOT NULL, first_name text NOT NULL, last_name text NOT NULL, \
     company text, title text, phone text, lead_source text NOT NULL, metadata jsonb NOT NULL, \
     email_key text COLLATE \"C\" NOT NULL, first_name_key text COLLATE \"C\" NOT NULL, \
     last_name_key text COLLATE \"C\" NOT NULL, company_key text COLLATE \"C\", \
     company_id uuid, owner_id text COLLATE \"C\", \
     created_at timestamptz, updated_at timestamptz\
     ) ON COMMIT DROP; TRUNCATE crm_bulk_contacts";

const COPY: &str = "COPY crm_bulk_contacts (id, email, first_name, last_name, company, title, \
     phone, lead_source, metadata, email_key, first_name_key, last_name_key, company_key, \
     company_id, owner_id, created_at, updated_at) FROM STDIN (FORMAT binary)";

const STAGE_TYPES: [Type; 17] = [
    Type::UUID,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::JSONB,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::UUID,
    Type::TEXT,
    Type::TIMESTAMPTZ,
    Type::TIMESTAMPTZ,
];

/// The values the `DO UPDATE` sets, per policy, as SQL over `c` (stored)
/// and `excluded` (incoming); must agree with [`crate::bulk::conflict_patch`].
fn merged_columns(policy: ConflictPolicy) -> [(&'static str, &'static str); 9] {
    match policy {
        ConflictPolicy::Incoming => [
            ("first_name", "excluded.first_name"),
            ("last_name", "excluded.last_name"),
            ("company", "excluded.company"),
            ("title", "excluded.title"),
            ("phone", "excluded.phone"),
            ("lead_source", "excluded.lead_source"),
            ("metadata", "excluded.metadata"),
            ("company_id", "coalesce(excluded.company_id, c.company_id)"),
            ("owner_id", "coalesce(excluded.owner_id, c.owner_id)"),
        ],
        ConflictPolicy::NonEmptyIncoming => [
            ("first_name", "excluded.first_name"),
            ("last_name", "excluded.last_name"),
            ("company", "coalesce(excluded.company, c.company)"),
            ("title", "coalesce(excluded.title, c.title)"),
            ("phone", "coalesce(excluded.phone, c.phone)"),
            ("lead_source", "excluded.lead_source"),
            (
                "metadata",
                "CASE WHEN excluded.metadata = '{}'::jsonb THEN c.metadata ELSE excluded.metadata END",
            ),
            ("company_id", "coalesce(excluded.company_id, c.company_id)"),
            ("owner_id", "coalesce(excluded.owner_id, c.owner_id)"),
        ],
        ConflictPolicy::Existing => [
            ("first_name", "c.first_name"),
            ("last_name", "c.last_name"),
            ("company", "coalesce(c.company, excluded.company)"),
            ("title", "coalesce(c.title, excluded.title)"),
            ("phone", "coalesce(c.phone, excluded.phone)"),
            ("lead_source", "c.lead_source"),
            (
                "metadata",
                "CASE WHEN c.metadata = '{}'::jsonb THEN excluded.metadata ELSE c.metadata END",
            ),
            ("company_id", "coalesce(c.company_id, excluded.company_id)"),
            ("owner_id", "coalesce(c.owner_id, excluded.owner_id)"),
        ],
    }
}

/// The columns whose caseless key is stored beside them.
const KEYED: [&str; 3] = ["first_name", "last_name", "company"];

/// The merge statement for `policy`: `$1` tenant, `$2` now.
///
/// The parameters are cast and appear only in the `SELECT`, not in `DO
/// UPDATE` (which takes the time from `excluded`): a distributed
/// PostgreSQL (Citus) runs the `SELECT` on the coordinator and the insert
/// on the workers, and there a parameter of `DO UPDATE` has no type.
pub(super) fn upsert_sql(policy: ConflictPolicy) -> String {
    let cols = merged_columns(policy);
    let mut set: Vec<String> = cols.iter().map(|(c, e)| format!("{c} = {e}")).collect();
    // A key follows its column: the same choice, made on the keys (a key
    // is NULL exactly when its column is).
    for (c, e) in cols.iter().filter(|(c, _)| KEYED.contains(c)) {
        set.push(format!("{c}_key = {}", e.replace(c, &format!("{c}_key"))));
    }
    let stored: Vec<String> = cols.iter().map(|(c, _)| format!("c.{c}")).collect();
    let merged: Vec<&str> = cols.iter().map(|(_, e)| *e).collect();
    format!(
        "INSERT INTO contacts AS c (tenant_id, id, email, first_name, last_name, company, title, \
         phone, lead_source, metadata, active, created_at, updated_at, version, \
         email_key, first_name_key, last_name_key, company_key, company_id, owner_id) \
         SELECT $1::uuid, s.id, s.email, s.first_name, s.last_name, s.company, s.title, s.phone, \
         s.lead_source, s.metadata, true, $2::timestamptz, $2::timestamptz, 1, \
         s.email_key, s.first_name_key, s.last_name_key, s.company_key, s.company_id, s.owner_id \
         FROM crm_bulk_contacts s ORDER BY s.email_key \
         ON CONFLICT (tenant_id, email_key) DO UPDATE SET {}, updated_at = excluded.updated_at, \
         version = c.version + 1 \
         WHERE ({}) IS DISTINCT FROM ({}) \
         RETURNING c.id, c.email_key, (c.xmax = 0) AS inserted",
        set.join(", "),
        stored.join(", "),
        merged.join(", "),
    )
}

/// The staged rows with original times (see [`NewContact::original`])
/// whose email no contact holds, inserted with those times (`$1`
/// tenant); a row whose email a contact holds is left to the merge
/// statement, which updates it as a change made now. Returns the email
/// keys inserted.
///
/// The merge statement cannot do this itself: its `DO UPDATE` must set
/// `updated_at` to now, and takes it from `excluded` (see
/// [`upsert_sql`]), which would hold the original time.
const INSERT_ORIGINAL: &str = "INSERT INTO contacts AS c (tenant_id, id, email, first_name, \
     last_name, company, title, phone, lead_source, metadata, active, created_at, \
     updated_at, version, email_key, first_name_key, last_name_key, company_key, company_id, \
     owner_id) \
     SELECT $1::uuid, s.id, s.email, s.first_name, s.last_name, s.company, s.title, s.phone, \
     s.lead_source, s.metadata, true, s.created_at, s.updated_at, 1, \
     s.email_key, s.first_name_key, s.last_name_key, s.company_key, s.company_id, s.owner_id \
     FROM crm_bulk_contacts s WHERE s.created_at IS NOT NULL ORDER BY s.email_key \
     ON CONFLICT (tenant_id, email_key) DO NOTHING \
     RETURNING c.id, c.email_key";

/// Removes the staged rows [`INSERT_ORIGINAL`] inserted (`$1`: their
/// email keys), so that the merge statement does not meet them again.
const UNSTAGE: &str = "DELETE FROM crm_bulk_contacts WHERE email_key = ANY($1)";

/// The contacts holding the caseless keys `$2`: one lookup of the email
/// index per key, whatever the planner believes of the table's size.
///
/// Not `email_key = ANY($2)`: while a tenant's first load outruns the
/// table's statistics (a new table holds "a few hundred rows" until it is
/// analysed), the planner reads that as a scan of the tenant's primary key
/// filtered by the array, cheaper on paper than the email index; each
/// batch then reads every contact of the tenant, and an import of 100,000
/// contacts spent a quarter of its time (33 ms a batch, growing with the
/// table) in this lookup. A `LATERAL` subquery with `LIMIT` is planned per
/// key, and for one key the unique index is the only sensible plan.
pub(super) const IDS_BY_EMAIL: &str = "SELECT c.id, c.email_key \
     FROM (SELECT DISTINCT key FROM unnest($2::text[]) AS u(key)) AS k \
     CROSS JOIN LATERAL (SELECT id, email_key FROM contacts \
     WHERE tenant_id = $1 AND email_key = k.key LIMIT 1) AS c";

/// The distinct domains of `$3` (`$2` for [`DOMAIN_HOLDERS`]), each
/// looked up on its own in the domain index, as [`IDS_BY_EMAIL`] looks up
/// emails: not `domain = ANY(…)`, which a tenant's first load, ahead of
/// the statistics, plans as a read of every company of the tenant
/// filtered by the array (`tests/postgres_statements.rs`), so that each
/// import batch of a tenant whose companies were loaded first read them
/// all, and slowed down as they grew.
macro_rules! domain_holders {
    ($domains:literal, $columns:literal) => {
        concat!(
            "(SELECT DISTINCT d FROM unnest(",
            $domains,
            "::text[]) AS u(d)) AS w CROSS JOIN LATERAL (SELECT ",
            $columns,
            " FROM companies WHERE tenant_id = $1 AND domain = w.d LIMIT 1) AS h"
        )
    };
}

/// The companies a batch links to: those it names (`$2`) and those of the
/// domains its rows may be linked by (`$3`), key-share locked so that none
/// is deleted before the transaction ends.
///
/// Each company is looked up by its key (the domains' holders found first,
/// without a lock) and locked by its id, in id order, as a batch of
/// activities locks its contacts (`timeline_batch.rs`): two batches, or a
/// batch and a merge locking its companies in id order, wait for each
/// other rather than deadlock. (A batch that reads its companies again,
/// when one changed while it waited, keeps the locks it has and may then
/// lock a lower id after a higher one: a deadlock is possible there, and
/// reported, retryable.) A company locked after waiting is returned
/// as it then is: one whose domain changed meanwhile comes back with its
/// new domain, and [`DOMAIN_HOLDERS`], on a later snapshot, finds who
/// holds the old one now.
const SHARE_COMPANIES: &str = concat!(
    "SELECT c.id, c.domain FROM (SELECT DISTINCT a.id FROM \
     (SELECT u.id FROM unnest($2::uuid[]) AS u(id) UNION ALL SELECT h.id FROM ",
    domain_holders!("$3", "id"),
    ") AS a ORDER BY a.id) AS k \
     CROSS JOIN LATERAL (SELECT id, domain FROM companies \
     WHERE tenant_id = $1 AND id = k.id LIMIT 1 FOR KEY SHARE) AS c"
);

/// The companies holding the domains `$2`, read without a lock: what
/// [`SHARE_COMPANIES`] should have found by domain, on a later snapshot.
const DOMAIN_HOLDERS: &str = concat!(
    "SELECT h.id, h.domain FROM ",
    domain_holders!("$2", "id, domain")
);

/// How often a batch reads its domains' companies again when they changed
/// while it waited for them (a merge moving a domain to its survivor).
const DOMAIN_RACE_RETRIES: usize = 5;

/// The company each row of a batch is linked to by its email's domain
/// (see [`PgTransaction::link_domain`]), when it names none and makes a
/// new contact.
struct BatchLinks {
    /// Per row: the company of its email's domain, for a row that names
    /// no company and whose email no contact held before the batch.
    by_domain: Vec<Option<Uuid>>,
}

impl PgTransaction {
    /// Begins the operation of upserting `rows` (see
    /// [`begin_atomic`](Self::begin_atomic)) and, in the same round trip,
    /// key-share locks the companies they name (`NotFound` for the first
    /// that does not exist) and those of their domains, and reads which of
    /// the emails to link by domain a contact already holds.
    async fn begin_batch_links(&mut self, rows: &[NewContact]) -> Result<BatchLinks> {
        let named: Vec<Uuid> = rows
            .iter()
            .filter_map(|r| r.company_id.map(|c| c.as_uuid()))
            .collect();
        let domains: Vec<Option<CompanyDomain>> =
            rows.iter().map(|r| self.link_domain(r)).collect();
        let mut by_domain = vec![None; rows.len()];
        if named.is_empty() && domains.iter().all(Option::is_none) {
            self.begin_atomic().await?;
            return Ok(BatchLinks { by_domain });
        }
        let wanted: Vec<&str> = domains.iter().flatten().map(|d| d.as_str()).collect();
        let emails: Vec<&str> = rows
            .iter()
            .zip(&domains)
            .filter(|(_, d)| d.is_some())
            .map(|(r, _)| r.email.normalized())
            .collect();
        let tenant = self.tenant_uuid();
        // A statement that waits for a company's row lock and finds it
        // deleted (merged away) reads no other row, not even the merge's
        // survivor that took its domain (`READ COMMITTED` checks again only
        // the row waited for). So the domains are read again without a
        // lock, on a later snapshot: when that read finds other holders,
        // both run again, until they agree. Then every company found is
        // locked, and no other held its domain after the locks were taken.
        let share: [&(dyn ToSql + Sync); 3] = [&tenant, &named, &wanted];
        let holders: [&(dyn ToSql + Sync); 2] = [&tenant, &wanted];
        let mut answers = self
            .begin_atomic_with(&[
                (SHARE_COMPANIES, &share),
                (DOMAIN_HOLDERS, &holders),
                (IDS_BY_EMAIL, &[&tenant, &emails]),
            ])
            .await?;
        let (Some(held), Some(mut seen), Some(mut companies)) =
            (answers.pop(), answers.pop(), answers.pop())
        else {
            return Ok(BatchLinks { by_domain });
        };
        let mut attempts = 0;
        while !same_holders(&companies, &seen, &wanted)? {
            attempts += 1;
            if attempts > DOMAIN_RACE_RETRIES {
                return Err(Error::retryable(super::error::EmailRace));
            }
            self.check_open()?;
            let r = self
                .raw_query_all(
                    &[(SHARE_COMPANIES, &share), (DOMAIN_HOLDERS, &holders)],
                    false,
                )
                .await;
            let mut again = self.settle(r)?;
            match (again.pop(), again.pop()) {
                (Some(s), Some(c)) => (seen, companies) = (s, c),
                _ => return Err(Error::backend("a lookup of companies answered nothing")),
            }
        }
        let mut found: HashSet<Uuid> = HashSet::new();
        let mut of_domain: HashMap<String, Uuid> = HashMap::new();
        for row in &companies {
            let id: Uuid = row.try_get(0).map_err(super::error::db)?;
            let domain: Option<String> = row.try_get(1).map_err(super::error::db)?;
            found.insert(id);
            if let Some(d) = domain {
                of_domain.insert(d, id);
            }
        }
        if let Some(missing) = named.iter().find(|id| !found.contains(id)) {
            return Err(Error::not_found(
                Entity::Company,
                crate::domain::CompanyId::from_uuid(*missing),
            ));
        }
        let mut existing: HashSet<String> = HashSet::new();
        for row in &held {
            existing.insert(row.try_get(1).map_err(super::error::db)?);
        }
        for ((slot, domain), r) in by_domain.iter_mut().zip(&domains).zip(rows) {
            if !existing.contains(r.email.normalized()) {
                *slot = domain
                    .as_ref()
                    .and_then(|d| of_domain.get(d.as_str()).copied());
            }
        }
        Ok(BatchLinks { by_domain })
    }
}

/// Whether the companies locked by [`SHARE_COMPANIES`] hold, of the
/// domains `wanted`, those that [`DOMAIN_HOLDERS`] found held, and no
/// others.
fn same_holders(
    locked: &[tokio_postgres::Row],
    seen: &[tokio_postgres::Row],
    wanted: &[&str],
) -> Result<bool> {
    let by_domain = |rows: &[tokio_postgres::Row]| -> Result<HashMap<String, Uuid>> {
        let mut map = HashMap::with_capacity(rows.len());
        for row in rows {
            let domain: Option<String> = row.try_get(1).map_err(super::error::db)?;
            if let Some(domain) = domain {
                map.insert(domain, row.try_get(0).map_err(super::error::db)?);
            }
        }
        Ok(map)
    };
    let seen = by_domain(seen)?;
    let mut locked = by_domain(locked)?;
    // A company named by id may hold a domain no row links by.
    locked.retain(|domain, _| wanted.contains(&domain.as_str()));
    Ok(locked == seen)
}

impl PgTransaction {
    /// Upserts `rows[i]` for each `i` of `round` (distinct emails); the
    /// outcomes in the order of `round`.
    async fn upsert_round(
        &mut self,
        rows: &[NewContact],
        round: &[usize],
        policy: ConflictPolicy,
        links: Option<&BatchLinks>,
        at: Timestamp,
    ) -> Result<Vec<UpsertOutcome>> {
        if round.is_empty() {
            return Ok(Vec::new());
        }
        let companies: Vec<Option<Uuid>> = round
            .iter()
            .map(|i| {
                let by_domain = links.and_then(|l| l.by_domain[*i]);
                rows[*i].company_id.map(|c| c.as_uuid()).or(by_domain)
            })
            .collect();
        let tenant = self.tenant_uuid();
        self.simple(STAGE).await?;
        self.ensure_begun().await?;
        let copied = self.copy_round(rows, round, &companies).await;
        copied.map_err(|e| self.failed(e))?;
        let mut by_email: HashMap<String, UpsertOutcome> = HashMap::with_capacity(round.len());
        if round.iter().any(|i| rows[*i].original.is_some()) {
            let mut inserted: Vec<String> = Vec::new();
            for row in self.query(INSERT_ORIGINAL, &[&tenant]).await? {
                let id: Uuid = row.try_get(0).map_err(|e| self.failed(e))?;
                let email: String = row.try_get(1).map_err(|e| self.failed(e))?;
                by_email.insert(
                    email.clone(),
                    UpsertOutcome::Inserted(ContactId::from_uuid(id)),
                );
                inserted.push(email);
            }
            if !inserted.is_empty() {
                self.execute(UNSTAGE, &[&inserted]).await?;
            }
        }
        let sql = upsert_sql(policy);
        let written = self.query(&sql, &[&tenant, &at]).await?;
        for row in &written {
            let id: Uuid = row.try_get(0).map_err(|e| self.failed(e))?;
            let email: String = row.try_get(1).map_err(|e| self.failed(e))?;
            let inserted: bool = row.try_get(2).map_err(|e| self.failed(e))?;
            let id = ContactId::from_uuid(id);
            by_email.insert(
                email,
                if inserted {
                    UpsertOutcome::Inserted(id)
                } else {
                    UpsertOutcome::Updated(id)
                },
            );
        }
        if by_email.len() < round.len() {
            let missing: Vec<String> = round
                .iter()
                .map(|i| rows[*i].email.normalized())
                .filter(|e| !by_email.contains_key(*e))
                .map(str::to_string)
                .collect();
            for row in self.query(IDS_BY_EMAIL, &[&tenant, &missing]).await? {
                let id: Uuid = row.try_get(0).map_err(|e| self.failed(e))?;
                let email: String = row.try_get(1).map_err(|e| self.failed(e))?;
                by_email.insert(email, UpsertOutcome::Unchanged(ContactId::from_uuid(id)));
            }
        }
        round
            .iter()
            .map(|i| {
                let email = rows[*i].email.normalized();
                by_email.get(email).copied().ok_or_else(|| {
                    Error::backend(format!("the bulk upsert left no contact for {email}"))
                })
            })
            .collect()
    }

    async fn copy_round(
        &self,
        rows: &[NewContact],
        round: &[usize],
        companies: &[Option<Uuid>],
    ) -> std::result::Result<(), tokio_postgres::Error> {
        let Some(conn) = self.conn.as_ref() else {
            return Ok(());
        };
        let sink = conn.copy_in(COPY).await?;
        let writer = BinaryCopyInWriter::new(sink, &STAGE_TYPES);
        pin_mut!(writer);
        for (i, company) in round.iter().zip(companies) {
            let r = &rows[*i];
            let id = ContactId::new().as_uuid();
            let metadata = serde_json::Value::Object(r.metadata.as_map().clone());
            let keys = ContactKeys::of_new(r);
            writer
                .as_mut()
                .write(&[
                    &id,
                    &r.email.as_str(),
                    &r.first_name.as_str(),
                    &r.last_name.as_str(),
                    &r.company.as_ref().map(|v| v.as_str()),
                    &r.title.as_ref().map(|v| v.as_str()),
                    &r.phone.as_ref().map(|v| v.as_str()),
                    &r.lead_source.as_str(),
                    &metadata,
                    &keys.email,
                    &keys.first_name,
                    &keys.last_name,
                    &keys.company,
                    company,
                    &r.owner.as_ref().map(|v| v.as_str()),
                    &r.original.map(|t| t.created_at()),
                    &r.original.map(|t| t.updated_at()),
                ])
                .await?;
        }
        writer.finish().await?;
        Ok(())
    }
}

const MOVE_DEALS: &str = "UPDATE deals SET contact_id = $3, version = version + 1, updated_at = $4 \
     WHERE tenant_id = $1 AND contact_id = $2 RETURNING id";
/// The companies of a merge's two contacts (`$2`, `$3`), read before
/// they are locked.
const MERGED_COMPANIES: &str =
    "SELECT id, company_id FROM contacts WHERE tenant_id = $1 AND id IN ($2, $3)";
const MOVE_ACTIVITIES: &str =
    "UPDATE activities SET contact_id = $3 WHERE tenant_id = $1 AND contact_id = $2 RETURNING id";
/// Moves the loser's tasks, each a change of the task.
const MOVE_TASKS: &str = "UPDATE tasks SET contact_id = $3, version = version + 1, updated_at = $4 \
     WHERE tenant_id = $1 AND contact_id = $2 RETURNING id";
const MOVE_SIGNALS: &str =
    "UPDATE signals SET contact_id = $3 WHERE tenant_id = $1 AND contact_id = $2 RETURNING id";

// ---- the tenant's import lock ----
//
// The tenant's import lock on PostgreSQL: a transaction-level advisory
// lock (`pg_advisory_xact_lock`, or its `_shared` form) on a key derived
// from the tenant, so that an all-or-nothing import runs alone among the
// tenant's imports and best-effort batches run together. PostgreSQL
// releases it when the transaction ends.
//
// The key is a pair of 32-bit keys (PostgreSQL's two-key form): the first
// 64 bits of a SHA-256 of a label and the tenant id, so it does not meet
// the idempotency claims' keys (another label) nor the migration lock
// (the one-key form). Two tenants sharing a key would only queue their
// imports behind each other.

const IMPORT_LOCK_SHARED: &str = "SELECT pg_advisory_xact_lock_shared($1::int4, $2::int4)";

/// The advisory lock key of a tenant's imports.
fn lock_key(tenant: Uuid) -> (i32, i32) {
    advisory_key("crm-core import", tenant, &[])
}

/// The fixed statements of this file, for [`super::statements`] (the
/// merge statement is made per policy: see [`upsert_sql`]).
pub(super) const STATEMENTS: &[(&str, &str)] = super::statements::listed![
    STAGE,
    COPY,
    INSERT_ORIGINAL,
    UNSTAGE,
    IDS_BY_EMAIL,
    SHARE_COMPANIES,
    DOMAIN_HOLDERS,
    MOVE_DEALS,
    MERGED_COMPANIES,
    MOVE_ACTIVITIES,
    MOVE_SIGNALS,
    MOVE_TASKS,
    IMPORT_LOCK_SHARED,
];

#[async_trait]
impl BulkTx for PgTransaction {
    async fn upsert_contacts(
        &mut self,
        rows: &[NewContact],
        policy: ConflictPolicy,
    ) -> Result<Vec<UpsertOutcome>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        crate::store::shared::check_upsert_rows(rows)?;
        self.custom_plans().await?;
        let outcomes: Result<Vec<UpsertOutcome>> = async {
            let links = self.begin_batch_links(rows).await?;
            // One time for the whole call, as one call writes it (a row
            // that updates the contact an earlier row of the call made
            // leaves its `updated_at` at its `created_at`), taken once the
            // companies are locked: a time taken before that wait could
            // be earlier than a change another transaction committed
            // meanwhile, and a contact's `updated_at` would go back.
            let at = now();
            let mut out: Vec<Option<UpsertOutcome>> = vec![None; rows.len()];
            // Rounds of rows with distinct emails, each row in the round
            // after the previous row of its email.
            let mut remaining: Vec<usize> = (0..rows.len()).collect();
            let mut first_round = true;
            while !remaining.is_empty() {
                let mut seen = HashSet::with_capacity(remaining.len());
                let (round, later): (Vec<usize>, Vec<usize>) = remaining
                    .into_iter()
                    .partition(|i| seen.insert(rows[*i].email.normalized()));
                remaining = later;
                // Only a row of the first round can make a new contact:
                // the later ones meet the contact an earlier row made.
                let round_links = first_round.then_some(&links);
                first_round = false;
                let outcomes = self
                    .upsert_round(rows, &round, policy, round_links, at)
                    .await?;
                for (i, o) in round.into_iter().zip(outcomes) {
                    out[i] = Some(o);
                }
            }
            out.into_iter()
                .map(|o| o.ok_or_else(|| Error::backend("a bulk row got no outcome")))
                .collect()
        }
        .await;
        self.end_atomic(outcomes).await
    }

    async fn lock_for_import(&mut self, lock: ImportLock) -> Result<()> {
        // Waits for the transactions that hold it in a conflicting mode (as
        // long as `lock_timeout` allows).
        let (a, b) = lock_key(self.tenant_uuid());
        let sql = match lock {
            ImportLock::Exclusive => ADVISORY_XACT_LOCK,
            ImportLock::Shared => IMPORT_LOCK_SHARED,
        };
        self.query(sql, &[&a, &b]).await.map(drop)
    }

    async fn merge_contacts(
        &mut self,
        survivor: ContactId,
        loser: ContactId,
        policy: ConflictPolicy,
    ) -> Result<Contact> {
        // The company the survivor takes, when its links changed between
        // their read and the locks (see below): key-shared first on the
        // next attempt.
        let mut takes: Option<CompanyId> = None;
        for attempt in 0..3 {
            // Several statements: under the operation's savepoint, so that a
            // failure leaves none of them behind.
            self.begin_atomic().await?;
            let merged = self
                .merge_contacts_once(survivor, loser, policy, takes, attempt < 2)
                .await;
            match merged {
                Ok(Err(company)) => {
                    // Undone, locks included; again with it key-shared.
                    let undone = Err(Error::not_found(Entity::Company, company));
                    let _ = self.end_atomic::<()>(undone).await;
                    takes = Some(company);
                }
                Ok(Ok(contact)) => return self.end_atomic(Ok(contact)).await,
                Err(e) => return self.end_atomic(Err(e)).await,
            }
        }
        unreachable!("the last attempt does not start another")
    }

    async fn contact_merges(&mut self, contact: ContactId) -> Result<Vec<MergeRecord>> {
        self.merges_of(contact).await
    }

    async fn unmerge_contacts(
        &mut self,
        merge: MergeId,
        conflicts: UnmergeConflicts,
    ) -> Result<Unmerged> {
        // Several statements: under the operation's savepoint, so that a
        // refusal or failure leaves none of them behind.
        self.begin_atomic().await?;
        let out = self.unmerge(merge, conflicts).await;
        self.end_atomic(out).await
    }
}

impl PgTransaction {
    /// One attempt of [`BulkTx::merge_contacts`], under its savepoint:
    /// `Ok(Err(company))` when the survivor takes a company that was not
    /// key-shared before the contacts were locked and `restart` allows
    /// another attempt (with `company` as `takes`).
    async fn merge_contacts_once(
        &mut self,
        survivor: ContactId,
        loser: ContactId,
        policy: ConflictPolicy,
        takes: Option<CompanyId>,
        restart: bool,
    ) -> Result<std::result::Result<Contact, CompanyId>> {
        crate::store::shared::check_merge_pair(survivor, loser)?;
        // A survivor without a company takes the loser's: key-share it
        // before locking the contacts, as every other link does before
        // it writes. Taken after them, it would wait for a deletion of
        // that company that itself waits for the loser's row to unlink
        // it: a deadlock. A company deleted meanwhile is no error here;
        // the loser, locked below, is then unlinked from it. (Read
        // before the locks, the links may change before them: when the
        // survivor then takes a company not key-shared here, the
        // attempt is undone, its locks with it, and made again with
        // that company key-shared first — its write would otherwise
        // key-share it after the contacts, and could meet a delete or
        // merge of that company in a deadlock. Two attempts; a third
        // goes on as the links then are.)
        let tenant = self.tenant_uuid();
        let links = self
            .query(
                MERGED_COMPANIES,
                &[&tenant, &survivor.as_uuid(), &loser.as_uuid()],
            )
            .await?;
        let mut company_of = HashMap::new();
        for r in &links {
            let id: Uuid = r.try_get(0).map_err(super::error::db)?;
            let company: Option<Uuid> = r.try_get(1).map_err(super::error::db)?;
            company_of.insert(id, company);
        }
        let survivor_has_none = company_of
            .get(&survivor.as_uuid())
            .is_none_or(Option::is_none);
        // The loser's company as read now, and the one a previous
        // attempt found the survivor taking; in id order.
        let mut shared: Vec<CompanyId> = takes.into_iter().collect();
        if survivor_has_none && let Some(Some(company)) = company_of.get(&loser.as_uuid()).copied()
        {
            shared.push(CompanyId::from_uuid(company));
        }
        shared.sort_by_key(|c| c.as_uuid());
        shared.dedup();
        for company in &shared {
            match self.share_company(*company).await {
                Err(Error::NotFound { .. }) => {}
                other => other?,
            }
        }
        // Lock both in id order, so that two merges of the same pair (or
        // crossing pairs) cannot deadlock. The loser is locked FOR
        // UPDATE: a transaction attaching a deal, activity or signal to
        // it holds a key-share lock, so the merge waits for it to commit
        // (and then moves what it wrote: each statement below sees every
        // commit made before it starts), and one that comes later waits
        // for the merge and finds the loser gone. Nothing is left behind
        // for the delete to cascade to.
        let (kept, gone) = if survivor.as_uuid() < loser.as_uuid() {
            let kept = self.lock_contact(survivor).await?;
            (kept, self.lock_contact_for_delete(loser).await?)
        } else {
            let gone = match self.lock_contact_for_delete(loser).await {
                // Both missing: the survivor is the one named, as the
                // contract says, whatever the lock order.
                Err(e @ Error::NotFound { .. }) => {
                    return Err(match self.get_contact(survivor).await? {
                        None => Error::not_found(Entity::Contact, survivor),
                        Some(_) => e,
                    });
                }
                other => other?,
            };
            (self.lock_contact(survivor).await?, gone)
        };
        let at = now();
        let merged = crate::store::shared::merged(&kept, &gone, policy, at)?;
        if let Some(company) = merged
            .as_ref()
            .and_then(|m| m.company_id)
            .filter(|c| Some(*c) != kept.company_id && !shared.contains(c))
            && restart
        {
            return Ok(Err(company));
        }
        // Every version this merge writes carries its reason; the
        // caller's reason comes back afterwards.
        let reason = merge_context(&self.context, survivor, loser)
            .reason()
            .unwrap_or_default()
            .to_string();
        let own = self.context.reason().unwrap_or_default().to_string();
        // `SET LOCAL`, which a distributed PostgreSQL passes on to its
        // workers, like the transaction's settings.
        self.simple(&set_local("crm.reason", &reason)).await?;
        let tenant = self.tenant_uuid();
        let (s, l) = (survivor.as_uuid(), loser.as_uuid());
        // The moves, in order, in one round trip.
        let moved: [&(dyn ToSql + Sync); 3] = [&tenant, &l, &s];
        let timed: [&(dyn ToSql + Sync); 4] = [&tenant, &l, &s, &at];
        self.check_open()?;
        let begin = self.pending_begin.take().is_some();
        let result = self
            .raw_query_all(
                &[
                    (MOVE_DEALS, &timed),
                    (MOVE_ACTIVITIES, &moved),
                    (MOVE_SIGNALS, &moved),
                    (MOVE_TASKS, &timed),
                    (FRESH_MERGE, &moved),
                    (FRESHNESS_OF, &moved[..2]),
                ],
                begin,
            )
            .await;
        let moved = self.settle(result)?;
        self.live_merge(survivor, loser).await?;
        let taggings = self
            .copy_taggings(MergedRecord::Contact {
                from: loser,
                to: survivor,
            })
            .await?;
        self.execute(DELETE_CONTACT, &[&tenant, &l]).await?;
        let out = match merged {
            Some(next) => self.write_contact(&kept, next.clone()).await?,
            None => kept.clone(),
        };
        self.simple(&set_local("crm.reason", &own)).await?;
        let snapshot = super::merges::snapshot(kept, gone, &out, &moved, taggings)?;
        self.journal_merge(snapshot, policy, at).await?;
        Ok(Ok(out))
    }
}

#[cfg(test)]
mod import_lock_tests {
    use super::*;

    #[test]
    fn each_tenant_has_its_own_import_lock_key() {
        let (t1, t2) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(lock_key(t1), lock_key(t1));
        assert_ne!(lock_key(t1), lock_key(t2));
    }
}
