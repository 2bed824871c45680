//! Companies and owners in the postgres store ([`CompaniesTx`], [`OwnersTx`]).
//!
//! A create is one `INSERT … ON CONFLICT DO NOTHING` that yields to the
//! company holding the domain; an update locks the row, checks the version
//! and writes the changed company back (under a savepoint when the domain
//! changes, which can race a create); a delete locks the row `FOR UPDATE`
//! (which waits for every transaction linking a record to it, whose
//! foreign-key checks take key-share locks, and keeps new ones waiting),
//! then unlinks its contacts, deals and tasks and deletes it, in one round
//! trip. A merge locks both companies so, in id order, copies the loser's
//! tags, links its records to the survivor, deletes it and writes the
//! survivor. The search is one statement built from the query's filters.

use async_trait::async_trait;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::{
    error, rows,
    schema::{COMPANY_COLUMNS, COMPANY_INSERT_COLUMNS, company_select, deal_select},
    search::{Binder, like_prefix, tag_filter_sql},
    tags::MergedRecord,
    transaction::{PgTransaction, cursor_time, now, set_local},
};
use crate::{
    domain::*,
    error::{Entity, Error, FieldError, Result, ValidationErrors},
    store::{
        CompaniesTx, CompanyQuery, CompanySort, CompanySortKey, CursorList, OwnersTx, Page,
        PageRequest, PipelineSummary, Reassigned, TimeIdKey,
    },
};

const GET_COMPANY: &str = concat!(
    "SELECT ",
    company_select!(),
    " FROM companies WHERE tenant_id = $1 AND id = $2"
);
// Domains are compared as `CompanyDomain` normalises them, in Rust.
const GET_COMPANY_BY_DOMAIN: &str = concat!(
    "SELECT ",
    company_select!(),
    " FROM companies WHERE tenant_id = $1 AND domain = $2"
);
const COMPANY_ID_BY_DOMAIN: &str = "SELECT id FROM companies WHERE tenant_id = $1 AND domain = $2";
/// Locks a company to change it: `FOR NO KEY UPDATE`, which lets records
/// be linked to it meanwhile.
const LOCK_COMPANY: &str = concat!(
    "SELECT ",
    company_select!(),
    " FROM companies WHERE tenant_id = $1 AND id = $2 FOR NO KEY UPDATE"
);
/// Locks a company that is to be deleted: `FOR UPDATE`, which waits for
/// every transaction that linked a contact, deal or task to it (their
/// foreign-key checks hold `FOR KEY SHARE` locks) and makes later ones
/// wait, so that nothing is linked between the unlinking and the delete.
const LOCK_COMPANY_FOR_DELETE: &str = concat!(
    "SELECT ",
    company_select!(),
    " FROM companies WHERE tenant_id = $1 AND id = $2 FOR UPDATE"
);
/// A new company: the columns of [`COMPANY_INSERT_COLUMNS`] (the row
/// reader's, then the name's caseless key). A domain already held in the
/// tenant inserts nothing.
pub(super) const INSERT_COMPANY: &str = concat!(
    "INSERT INTO companies (",
    company_select!(),
    ", name_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
     $16, $17, $18, $19) ON CONFLICT (tenant_id, domain) DO NOTHING"
);
/// The columns of a changed company: everything but its keys and creation
/// time, with the name's caseless key.
const UPDATE_COMPANY: &str = "UPDATE companies SET name = $3, domain = $4, industry = $5, \
     employee_count = $6, revenue_amount = $7, revenue_currency = $8, street = $9, city = $10, \
     region = $11, postal_code = $12, country = $13, metadata = $14, owner_id = $15, \
     updated_at = $16, version = $17, name_key = $18 WHERE tenant_id = $1 AND id = $2";
// Deleting a company unlinks what links to it first, merging one links it
// to the survivor (`$3`, NULL to unlink): the foreign keys have no `ON
// DELETE SET NULL`, which a distributed PostgreSQL refuses for keys holding
// the distribution column (see the migration). Each relinked record is a
// recorded change: its version and `updated_at` (`$4`) move on.
const RELINK_CONTACTS: &str = "UPDATE contacts SET company_id = $3, version = version + 1, \
     updated_at = $4 WHERE tenant_id = $1 AND company_id = $2";
const RELINK_DEALS: &str = "UPDATE deals SET company_id = $3, version = version + 1, \
     updated_at = $4 WHERE tenant_id = $1 AND company_id = $2";
const RELINK_TASKS: &str = "UPDATE tasks SET company_id = $3, version = version + 1, \
     updated_at = $4 WHERE tenant_id = $1 AND company_id = $2";
/// Deletes a company (its taggings go with it, by the foreign key's
/// `ON DELETE CASCADE`).
const DELETE_COMPANY: &str = "DELETE FROM companies WHERE tenant_id = $1 AND id = $2 RETURNING id";

/// The activities of a company's contacts, newest first: one join, both
/// sides held to the tenant (so that a distributed PostgreSQL routes it to
/// one shard), each contact's activities read from the timeline index.
const COMPANY_TIMELINE: &str = "SELECT a.tenant_id, a.id, a.contact_id, a.deal_id, a.kind, \
     a.direction, a.subject, a.body, a.occurred_at, a.created_at FROM activities a \
     JOIN contacts c ON c.tenant_id = a.tenant_id AND c.id = a.contact_id \
     WHERE a.tenant_id = $1 AND c.tenant_id = $1 AND c.company_id = $2 \
     ORDER BY a.occurred_at DESC, a.id DESC LIMIT $3";
const COMPANY_TIMELINE_AFTER: &str = "SELECT a.tenant_id, a.id, a.contact_id, a.deal_id, \
     a.kind, a.direction, a.subject, a.body, a.occurred_at, a.created_at FROM activities a \
     JOIN contacts c ON c.tenant_id = a.tenant_id AND c.id = a.contact_id \
     WHERE a.tenant_id = $1 AND c.tenant_id = $1 AND c.company_id = $2 \
     AND (a.occurred_at, a.id) < ($3, $4) ORDER BY a.occurred_at DESC, a.id DESC LIMIT $5";
const DEALS_FOR_COMPANY: &str = concat!(
    "SELECT ",
    deal_select!(),
    " FROM deals WHERE tenant_id = $1 AND company_id = $2",
    " ORDER BY created_at DESC, id DESC LIMIT $3"
);
const DEALS_FOR_COMPANY_AFTER: &str = concat!(
    "SELECT ",
    deal_select!(),
    " FROM deals WHERE tenant_id = $1 AND company_id = $2 AND (created_at, id) < ($3, $4)",
    " ORDER BY created_at DESC, id DESC LIMIT $5"
);
/// The totals of `PIPELINE_TOTALS` (see `deals.rs`) over one company's deals.
const PIPELINE_TOTALS_OF_COMPANY: &str = "SELECT stage, currency, count(*), sum(amount) \
     FROM deals WHERE tenant_id = $1 AND pipeline = $2 AND company_id = $3 \
     GROUP BY stage, currency";

const DOMAIN_SAVEPOINT: &str = "SAVEPOINT crm_domain_change";
const DOMAIN_RELEASE: &str = "RELEASE SAVEPOINT crm_domain_change";
const DOMAIN_ROLLBACK_TO: &str = "ROLLBACK TO SAVEPOINT crm_domain_change";

/// The fixed statements of this file, for [`super::statements`].
pub(super) const STATEMENTS: &[(&str, &str)] = super::statements::listed![
    GET_COMPANY,
    GET_COMPANY_BY_DOMAIN,
    COMPANY_ID_BY_DOMAIN,
    LOCK_COMPANY,
    LOCK_COMPANY_FOR_DELETE,
    INSERT_COMPANY,
    UPDATE_COMPANY,
    RELINK_CONTACTS,
    RELINK_DEALS,
    RELINK_TASKS,
    DELETE_COMPANY,
    DOMAIN_SAVEPOINT,
    DOMAIN_RELEASE,
    DOMAIN_ROLLBACK_TO,
    COMPANY_TIMELINE,
    COMPANY_TIMELINE_AFTER,
    DEALS_FOR_COMPANY,
    DEALS_FOR_COMPANY_AFTER,
    PIPELINE_TOTALS_OF_COMPANY,
];

/// How often a create retries when the company holding its domain
/// vanishes between the conflict and the lookup.
const DOMAIN_RACE_RETRIES: usize = 3;

/// The company holding a domain kept vanishing between a create's conflict
/// and the lookup of its id (concurrent creates and deletes of that domain).
#[derive(Debug, thiserror::Error)]
#[error("the domain was taken and released concurrently; try again")]
struct DomainRace;

/// The columns of a company as [`INSERT_COMPANY`] (`$1` to `$19`) and
/// [`UPDATE_COMPANY`] bind them.
struct CompanyValues {
    tenant: Uuid,
    id: Uuid,
    name: String,
    domain: Option<String>,
    industry: Option<String>,
    employee_count: Option<i32>,
    revenue_amount: Option<rust_decimal::Decimal>,
    revenue_currency: Option<&'static str>,
    street: Option<String>,
    city: Option<String>,
    region: Option<String>,
    postal_code: Option<String>,
    country: Option<String>,
    metadata: serde_json::Value,
    owner: Option<String>,
    created_at: Timestamp,
    updated_at: Timestamp,
    version: i64,
    name_key: String,
}

impl CompanyValues {
    fn of(c: &Company) -> Result<Self> {
        let text = |v: Option<&AddressPart>| v.map(|p| p.as_str().to_string());
        let employee_count = c
            .employee_count
            .map(i32::try_from)
            .transpose()
            .map_err(|_| {
                ValidationErrors::single(FieldError::new(
                    "employee_count",
                    "out_of_range",
                    format!("must be 0 to {MAX_EMPLOYEES}"),
                ))
            })?;
        Ok(CompanyValues {
            tenant: c.tenant_id.as_uuid(),
            id: c.id.as_uuid(),
            name: c.name.as_str().to_string(),
            domain: c.domain.as_ref().map(|d| d.as_str().to_string()),
            industry: c.industry.as_ref().map(|v| v.as_str().to_string()),
            employee_count,
            revenue_amount: c.annual_revenue.as_ref().map(|m| m.amount()),
            revenue_currency: c.annual_revenue.as_ref().map(|m| m.currency().code()),
            street: text(c.address.street.as_ref()),
            city: text(c.address.city.as_ref()),
            region: text(c.address.region.as_ref()),
            postal_code: text(c.address.postal_code.as_ref()),
            country: text(c.address.country.as_ref()),
            metadata: serde_json::Value::from(c.metadata.clone()),
            owner: c.owner.as_ref().map(|o| o.as_str().to_string()),
            created_at: c.created_at,
            updated_at: c.updated_at,
            version: c.version.get(),
            name_key: caseless_key(c.name.as_str()),
        })
    }

    /// The parameters of [`INSERT_COMPANY`].
    fn insert_params(&self) -> [&(dyn ToSql + Sync); COMPANY_INSERT_COLUMNS.len()] {
        [
            &self.tenant,
            &self.id,
            &self.name,
            &self.domain,
            &self.industry,
            &self.employee_count,
            &self.revenue_amount,
            &self.revenue_currency,
            &self.street,
            &self.city,
            &self.region,
            &self.postal_code,
            &self.country,
            &self.metadata,
            &self.owner,
            &self.created_at,
            &self.updated_at,
            &self.version,
            &self.name_key,
        ]
    }

    /// The parameters of [`UPDATE_COMPANY`].
    fn update_params(&self) -> [&(dyn ToSql + Sync); 18] {
        [
            &self.tenant,
            &self.id,
            &self.name,
            &self.domain,
            &self.industry,
            &self.employee_count,
            &self.revenue_amount,
            &self.revenue_currency,
            &self.street,
            &self.city,
            &self.region,
            &self.postal_code,
            &self.country,
            &self.metadata,
            &self.owner,
            &self.updated_at,
            &self.version,
            &self.name_key,
        ]
    }
}

/// The duplicate-domain error naming the company holding `domain`.
fn duplicate(domain: &CompanyDomain, existing_id: CompanyId) -> Error {
    Error::Duplicate {
        entity: Entity::Company,
        field: "domain",
        value: domain.as_str().to_string(),
        existing_id: existing_id.to_string(),
    }
}

impl PgTransaction {
    /// The id of the company holding `domain`, if any.
    async fn company_id_by_domain(&mut self, domain: &CompanyDomain) -> Result<Option<CompanyId>> {
        let tenant = self.tenant_uuid();
        let row = self
            .query_opt(COMPANY_ID_BY_DOMAIN, &[&tenant, &domain.as_str()])
            .await?;
        row.map(|r| r.try_get::<_, Uuid>(0).map(CompanyId::from_uuid))
            .transpose()
            .map_err(error::db)
    }

    /// Locks a company with `lock` (`$1` tenant, `$2` company).
    async fn lock_company_with(&mut self, id: CompanyId, lock: &str) -> Result<Company> {
        let tenant = self.tenant_uuid();
        match self.query_opt(lock, &[&tenant, &id.as_uuid()]).await? {
            Some(row) => rows::company(&row),
            None => Err(Error::not_found(Entity::Company, id)),
        }
    }

    /// Links the contacts, deals and tasks of company `from` (locked `FOR
    /// UPDATE` by this transaction) to `to` (`None`: unlinks them), each a
    /// change made at `at`, then deletes `from`, in one round trip. Whether
    /// it was deleted.
    async fn relink_and_delete(
        &mut self,
        from: CompanyId,
        to: Option<CompanyId>,
        at: Timestamp,
    ) -> Result<bool> {
        let (tenant, company) = (self.tenant_uuid(), from.as_uuid());
        let target = to.map(|c| c.as_uuid());
        let relink: [&(dyn ToSql + Sync); 4] = [&tenant, &company, &target, &at];
        let params: [&(dyn ToSql + Sync); 2] = [&tenant, &company];
        self.check_open()?;
        let begin = self.pending_begin.take().is_some();
        let result = self
            .raw_query_all(
                &[
                    (RELINK_CONTACTS, &relink),
                    (RELINK_DEALS, &relink),
                    (RELINK_TASKS, &relink),
                    (DELETE_COMPANY, &params),
                ],
                begin,
            )
            .await;
        let rows = self.settle(result)?;
        Ok(rows.get(3).is_some_and(|deleted| !deleted.is_empty()))
    }

    /// Writes an updated company (locked by this transaction), mapping a
    /// lost race for its new domain to `Duplicate` without aborting the
    /// transaction.
    async fn write_company(&mut self, current: &Company, next: Company) -> Result<Company> {
        let values = CompanyValues::of(&next)?;
        let params = values.update_params();
        let Some(domain) = next
            .domain
            .as_ref()
            .filter(|d| current.domain.as_ref() != Some(*d))
        else {
            self.execute(UPDATE_COMPANY, &params).await?;
            return Ok(next);
        };
        // Another transaction may hold the domain uncommitted: our UPDATE
        // waits for it and fails with a unique violation if it commits.
        self.simple(DOMAIN_SAVEPOINT).await?;
        let r = self.raw_execute(UPDATE_COMPANY, &params, false).await;
        match r {
            Ok(_) => {
                self.simple(DOMAIN_RELEASE).await?;
                Ok(next)
            }
            // The update changes no other unique column (the id stays), so
            // any unique violation is the domain index's.
            Err(e) if error::is_email_conflict(&e) => {
                self.simple(DOMAIN_ROLLBACK_TO).await?;
                match self.company_id_by_domain(domain).await? {
                    Some(existing_id) => Err(duplicate(domain, existing_id)),
                    None => Err(error::db_retryable(e)),
                }
            }
            Err(e) => Err(self.failed(e)),
        }
    }
}

#[async_trait]
impl CompaniesTx for PgTransaction {
    async fn create_company(&mut self, new: NewCompany) -> Result<Company> {
        let new = new.checked()?;
        let c = Company::create(self.tenant, new, now());
        let values = CompanyValues::of(&c)?;
        let params = values.insert_params();
        for _ in 0..DOMAIN_RACE_RETRIES {
            // In READ COMMITTED, a conflicting insert that is not committed
            // yet makes this wait; once it commits, nothing is inserted and
            // the lookup below sees the winner.
            if self.execute(INSERT_COMPANY, &params).await? == 1 {
                return Ok(c);
            }
            let Some(domain) = &c.domain else {
                // Only the domain's key can conflict.
                return Err(Error::backend(DomainRace));
            };
            if let Some(existing_id) = self.company_id_by_domain(domain).await? {
                return Err(duplicate(domain, existing_id));
            }
            tracing::debug!("retry: the company holding the domain went away before it was read");
        }
        Err(Error::retryable(DomainRace))
    }

    async fn get_company(&mut self, id: CompanyId) -> Result<Option<Company>> {
        let tenant = self.tenant_uuid();
        self.query_opt(GET_COMPANY, &[&tenant, &id.as_uuid()])
            .await?
            .map(|r| rows::company(&r))
            .transpose()
    }

    async fn get_company_by_domain(&mut self, domain: &CompanyDomain) -> Result<Option<Company>> {
        let tenant = self.tenant_uuid();
        self.query_opt(GET_COMPANY_BY_DOMAIN, &[&tenant, &domain.as_str()])
            .await?
            .map(|r| rows::company(&r))
            .transpose()
    }

    async fn update_company(
        &mut self,
        id: CompanyId,
        expected: Version,
        patch: CompanyPatch,
    ) -> Result<Company> {
        let patch = patch.checked()?;
        let current = self.lock_company_with(id, LOCK_COMPANY).await?;
        crate::store::shared::check_version(Entity::Company, id, expected, current.version)?;
        if let Some(Some(domain)) = &patch.domain {
            match self.company_id_by_domain(domain).await? {
                Some(existing_id) if existing_id != id => {
                    return Err(duplicate(domain, existing_id));
                }
                _ => {}
            }
        }
        match current.patched(&patch, now()) {
            None => Ok(current),
            Some(next) => self.write_company(&current, next).await,
        }
    }

    async fn delete_company(&mut self, id: CompanyId) -> Result<bool> {
        match self.lock_company_with(id, LOCK_COMPANY_FOR_DELETE).await {
            Ok(_) => {}
            Err(Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e),
        }
        // The company is locked, and begun: everything goes in one round trip.
        let deleted = self.relink_and_delete(id, None, now()).await?;
        Ok(deleted)
    }

    async fn merge_companies(&mut self, survivor: CompanyId, loser: CompanyId) -> Result<Company> {
        // Several statements: under the operation's savepoint, so that a
        // failure leaves none of them behind.
        self.begin_atomic().await?;
        let merged: Result<Company> = async {
            crate::store::shared::check_company_merge_pair(survivor, loser)?;
            // Both `FOR UPDATE`, in id order (two merges of the same pair,
            // or crossing pairs, cannot deadlock): a transaction linking a
            // record to either, or tagging either, holds a key-share lock
            // that this waits for (and then moves what it linked), and one
            // that comes later waits for the merge and finds the loser
            // gone. Companies are locked before any contact or deal, as a
            // delete and every link do.
            let (kept, gone) = if survivor.as_uuid() < loser.as_uuid() {
                let kept = self
                    .lock_company_with(survivor, LOCK_COMPANY_FOR_DELETE)
                    .await?;
                (
                    kept,
                    self.lock_company_with(loser, LOCK_COMPANY_FOR_DELETE)
                        .await?,
                )
            } else {
                let gone = match self.lock_company_with(loser, LOCK_COMPANY_FOR_DELETE).await {
                    // Both missing: the survivor is the one named, as the
                    // contract says, whatever the lock order.
                    Err(e @ Error::NotFound { .. }) => {
                        return Err(match self.get_company(survivor).await? {
                            None => Error::not_found(Entity::Company, survivor),
                            Some(_) => e,
                        });
                    }
                    other => other?,
                };
                (
                    self.lock_company_with(survivor, LOCK_COMPANY_FOR_DELETE)
                        .await?,
                    gone,
                )
            };
            let at = now();
            let merged = crate::store::shared::merged_company(&kept, &gone, at)?;
            // Every version this merge writes carries its reason; the
            // caller's reason comes back afterwards.
            let reason = with_merge_reason(&self.context, company_merge_reason(survivor, loser))
                .reason()
                .unwrap_or_default()
                .to_string();
            let own = self.context.reason().unwrap_or_default().to_string();
            self.simple(&set_local("crm.reason", &reason)).await?;
            self.copy_taggings(MergedRecord::Company {
                from: loser,
                to: survivor,
            })
            .await
            .map(drop)?;
            self.relink_and_delete(loser, Some(survivor), at).await?;
            // After the loser's delete: the survivor may take its domain.
            let out = match merged {
                Some(next) => self.write_company(&kept, next).await?,
                None => kept,
            };
            self.simple(&set_local("crm.reason", &own)).await?;
            Ok(out)
        }
        .await;
        self.end_atomic(merged).await
    }

    async fn search_companies(&mut self, q: &CompanyQuery) -> Result<Page<Company>> {
        q.checked()?;
        let limit = q.page.checked_limit()?;
        let list = CursorList::companies(q);
        let after: Option<CompanySortKey> = q.page.position(list)?;
        let (sql, b) = search_sql(self.tenant, q, limit, after.as_ref())?;
        let rows = self.query(&sql, &b.params()).await?;
        // Under a name sort the cursor holds the key the rows were ordered
        // by, as stored (not recomputed), so that paging follows the index.
        let mut items = Vec::with_capacity(rows.len());
        for row in &rows {
            let company = rows::company(row)?;
            let key = match q.sort {
                CompanySort::NameAsc | CompanySort::NameDesc => {
                    let name_key: String = row.try_get(COMPANY_COLUMNS.len()).map_err(error::db)?;
                    CompanySortKey::Name(name_key, company.id.as_uuid())
                }
                _ => CompanySortKey::of(q.sort, &company),
            };
            items.push((company, key));
        }
        let page = Page::from_overfetch(items, limit, list, |(_, key)| key.clone());
        Ok(Page {
            items: page.items.into_iter().map(|(c, _)| c).collect(),
            next_cursor: page.next_cursor,
        })
    }

    async fn company_timeline(
        &mut self,
        company: CompanyId,
        page: &PageRequest,
    ) -> Result<Page<Activity>> {
        let limit = page.checked_limit()?;
        let list = CursorList::company_timeline(company);
        let cursor: Option<TimeIdKey> = page.position(list)?;
        let tenant = self.tenant_uuid();
        let company = company.as_uuid();
        let fetch = limit as i64 + 1;
        let rows = match cursor {
            None => {
                self.query(COMPANY_TIMELINE, &[&tenant, &company, &fetch])
                    .await?
            }
            Some((micros, id)) => {
                let at = cursor_time(micros)?;
                self.query(
                    COMPANY_TIMELINE_AFTER,
                    &[&tenant, &company, &at, &id, &fetch],
                )
                .await?
            }
        };
        let items = rows::all(&rows, rows::activity)?;
        Ok(Page::from_overfetch(items, limit, list, |a: &Activity| {
            (a.occurred_at.timestamp_micros(), a.id.as_uuid())
        }))
    }

    async fn list_deals_for_company(
        &mut self,
        company: CompanyId,
        page: &PageRequest,
    ) -> Result<Page<Deal>> {
        let tenant = self.tenant_uuid();
        let list = CursorList::deals_of_company(company);
        let company = company.as_uuid();
        self.deal_page(
            list,
            (DEALS_FOR_COMPANY, DEALS_FOR_COMPANY_AFTER),
            &[&tenant, &company],
            page,
        )
        .await
    }

    async fn pipeline_summary_for_company(
        &mut self,
        pipeline: &PipelineKey,
        company: CompanyId,
    ) -> Result<PipelineSummary> {
        let company = company.as_uuid();
        self.pipeline_summary_of(pipeline, PIPELINE_TOTALS_OF_COMPANY, &[&company])
            .await
    }
}

// ---- owners ----

/// Gives the contacts `$5` still of owner `$2` (those the lock statements
/// returned) to owner `$3` (`$4`: now); the history triggers record each
/// change. `REASSIGN_COMPANIES` and `REASSIGN_DEALS` do the same for
/// companies and deals.
const REASSIGN_CONTACTS: &str = "UPDATE contacts SET owner_id = $3, version = version + 1, \
     updated_at = $4 WHERE tenant_id = $1 AND id = ANY($5) AND owner_id = $2";
const REASSIGN_COMPANIES: &str = "UPDATE companies SET owner_id = $3, version = version + 1, \
     updated_at = $4 WHERE tenant_id = $1 AND id = ANY($5) AND owner_id = $2";
const REASSIGN_DEALS: &str = "UPDATE deals SET owner_id = $3, version = version + 1, \
     updated_at = $4 WHERE tenant_id = $1 AND id = ANY($5) AND owner_id = $2";

/// The companies a reassignment moves (`$3`: companies are reassigned)
/// and those of the contacts and deals it moves (`$4`, `$5`), locked in id
/// order before it writes anything (companies before any contact or deal,
/// as a company delete or merge locks them): the ids of those still the
/// owner's, which the update moves (a company given to the owner after
/// this statement stays the owner's). `FOR NO KEY UPDATE`, which a link
/// to the company (a key share) does not wait for.
macro_rules! reassigned_companies {
    ($mode:literal) => {
        concat!(
            "SELECT coalesce(array_agg(l.id) FILTER (WHERE l.owner_id = $2), '{}') FROM (\
             SELECT c.id, c.owner_id FROM companies c WHERE c.tenant_id = $1 AND c.id IN (\
               SELECT x.id FROM companies x WHERE $3 AND x.tenant_id = $1 AND x.owner_id = $2 \
               UNION ALL SELECT p.company_id FROM contacts p \
                 WHERE $4 AND p.tenant_id = $1 AND p.owner_id = $2 \
               UNION ALL SELECT d.company_id FROM deals d \
                 WHERE $5 AND d.tenant_id = $1 AND d.owner_id = $2) \
             ORDER BY c.id ",
            $mode,
            " OF c) AS l"
        )
    };
}
const LOCK_REASSIGNED_COMPANIES: &str = reassigned_companies!("FOR NO KEY UPDATE");
/// The same when no company is reassigned: key-shared only, so that an
/// update of those companies (a company import) neither waits for the
/// reassignment nor meets it in a deadlock, while a delete or merge of
/// them (`FOR UPDATE`) still does. (One mode per reassignment: a row
/// key-shared, then locked for update, could meet a waiting delete in a
/// deadlock.)
const SHARE_REASSIGNED_COMPANIES: &str = reassigned_companies!("FOR KEY SHARE");
/// Then the contacts it moves (`$3`) and those of the deals it moves
/// (`$4`), in id order, before any deal (a contact delete or merge locks
/// the contact, then its deals; a merge its two contacts in id order):
/// the ids of those still the owner's.
macro_rules! reassigned_contacts {
    ($mode:literal) => {
        concat!(
            "SELECT coalesce(array_agg(l.id) FILTER (WHERE l.owner_id = $2), '{}') FROM (\
             SELECT c.id, c.owner_id FROM contacts c WHERE c.tenant_id = $1 AND c.id IN (\
               SELECT p.id FROM contacts p WHERE $3 AND p.tenant_id = $1 AND p.owner_id = $2 \
               UNION ALL SELECT d.contact_id FROM deals d \
                 WHERE $4 AND d.tenant_id = $1 AND d.owner_id = $2) \
             ORDER BY c.id ",
            $mode,
            " OF c) AS l"
        )
    };
}
const LOCK_REASSIGNED_CONTACTS: &str = reassigned_contacts!("FOR NO KEY UPDATE");
/// The same when deals alone are reassigned: the deals' contacts
/// key-shared only (see [`SHARE_REASSIGNED_COMPANIES`]).
const SHARE_REASSIGNED_CONTACTS: &str = reassigned_contacts!("FOR KEY SHARE");
/// Then the deals it moves, in id order: their ids.
const LOCK_REASSIGNED_DEALS: &str = "SELECT coalesce(array_agg(l.id), '{}') FROM (SELECT id \
     FROM deals WHERE tenant_id = $1 AND owner_id = $2 ORDER BY id FOR NO KEY UPDATE) AS l";

/// The fixed statements of reassigning owners, for [`super::statements`].
pub(super) const OWNER_STATEMENTS: &[(&str, &str)] = super::statements::listed![
    REASSIGN_CONTACTS,
    REASSIGN_COMPANIES,
    REASSIGN_DEALS,
    LOCK_REASSIGNED_COMPANIES,
    SHARE_REASSIGNED_COMPANIES,
    LOCK_REASSIGNED_CONTACTS,
    SHARE_REASSIGNED_CONTACTS,
    LOCK_REASSIGNED_DEALS,
];
/// The SQL and parameters of `q` for `tenant`, fetching `limit + 1` rows
/// (the extra one says whether another page follows). Each row holds the
/// columns of `company_select!()`, then the stored `name_key`. Every value
/// of the query is a bound parameter.
fn search_sql(
    tenant: TenantId,
    q: &CompanyQuery,
    limit: usize,
    after: Option<&CompanySortKey>,
) -> Result<(String, Binder)> {
    let mut b = Binder::default();
    let t = b.bind(tenant.as_uuid());
    let mut sql = format!(
        "SELECT {}, name_key FROM companies c WHERE c.tenant_id = {t}",
        company_select!()
    );
    if let Some(p) = &q.name_prefix {
        sql += &format!(" AND c.name_key LIKE {}", b.bind(like_prefix(p)));
    }
    if let Some(d) = &q.domain {
        sql += &format!(" AND c.domain = {}", b.bind(d.as_str().to_string()));
    }
    if let Some(o) = &q.owner {
        sql += &format!(" AND c.owner_id = {}", b.bind(o.as_str().to_string()));
    }
    sql += &tag_filter_sql(&mut b, &t, &q.tags, "company_id", "c.id");
    if let Some(m) = &q.metadata_contains {
        let json = serde_json::Value::from(m.clone());
        sql += &format!(" AND c.metadata @> {}", b.bind(json));
    }
    let desc = q.sort.is_descending();
    let (op, dir) = if desc { ("<", "DESC") } else { (">", "ASC") };
    let invalid = || {
        Error::from(ValidationErrors::single(FieldError::new(
            "cursor",
            "invalid_format",
            "is not a cursor of this list",
        )))
    };
    let by_name = matches!(q.sort, CompanySort::NameAsc | CompanySort::NameDesc);
    match after {
        None => {}
        Some(CompanySortKey::Name(key, id)) if by_name => {
            let (key, id) = (b.bind(key.clone()), b.bind(*id));
            sql += &format!(" AND (c.name_key, c.id) {op} ({key}, {id})");
        }
        Some(CompanySortKey::Time(micros, id)) if !by_name => {
            let (at, id) = (b.bind(cursor_time(*micros)?), b.bind(*id));
            sql += &format!(" AND (c.created_at, c.id) {op} ({at}, {id})");
        }
        Some(_) => return Err(invalid()),
    }
    let column = if by_name { "name_key" } else { "created_at" };
    let fetch = b.bind(limit as i64 + 1);
    sql += &format!(" ORDER BY c.{column} {dir}, c.id {dir} LIMIT {fetch}");
    Ok((sql, b))
}

impl PgTransaction {
    /// The ids a reassignment's lock statement returned (one row, one
    /// array).
    async fn owned_ids(
        &mut self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Uuid>> {
        match self.query_opt(sql, params).await? {
            Some(row) => row.try_get(0).map_err(super::error::db),
            None => Ok(Vec::new()),
        }
    }
}

#[async_trait]
impl OwnersTx for PgTransaction {
    async fn reassign_owner(
        &mut self,
        from: &OwnerId,
        to: &OwnerId,
        kind: Option<RecordKind>,
    ) -> Result<Reassigned> {
        let mut moved = Reassigned::default();
        if from == to {
            return Ok(moved);
        }
        let wanted = |k: RecordKind| kind.is_none_or(|only| only == k);
        let tenant = self.tenant_uuid();
        let at = super::transaction::now();
        // Several statements: under the operation's savepoint, so that a
        // failure leaves none of them behind.
        self.begin_atomic().await?;
        let result: Result<Reassigned> = async {
            // Locked in the order of the deletes and merges (companies,
            // then contacts, then deals, each by id) before anything is
            // written, so that a company delete or merge, or a contact
            // delete or merge, racing it waits rather than deadlocks; each
            // update moves what its lock statement returned.
            let (companies, contacts, deals) = (
                wanted(RecordKind::Company),
                wanted(RecordKind::Contact),
                wanted(RecordKind::Deal),
            );
            let from = from.as_str();
            let lock_companies = if companies {
                LOCK_REASSIGNED_COMPANIES
            } else {
                SHARE_REASSIGNED_COMPANIES
            };
            let owned_companies = self
                .owned_ids(
                    lock_companies,
                    &[&tenant, &from, &companies, &contacts, &deals],
                )
                .await?;
            let owned_contacts = if contacts || deals {
                let lock = if contacts {
                    LOCK_REASSIGNED_CONTACTS
                } else {
                    SHARE_REASSIGNED_CONTACTS
                };
                self.owned_ids(lock, &[&tenant, &from, &contacts, &deals])
                    .await?
            } else {
                Vec::new()
            };
            let owned_deals = if deals {
                self.owned_ids(LOCK_REASSIGNED_DEALS, &[&tenant, &from])
                    .await?
            } else {
                Vec::new()
            };
            let to = to.as_str();
            for (count, update, ids) in [
                (
                    &mut moved.companies,
                    REASSIGN_COMPANIES,
                    companies.then_some(owned_companies),
                ),
                (
                    &mut moved.contacts,
                    REASSIGN_CONTACTS,
                    contacts.then_some(owned_contacts),
                ),
                (&mut moved.deals, REASSIGN_DEALS, Some(owned_deals)),
            ] {
                if let Some(ids) = ids.filter(|ids| !ids.is_empty()) {
                    *count = self
                        .execute(update, &[&tenant, &from, &to, &at, &ids])
                        .await?;
                }
            }
            Ok(moved)
        }
        .await;
        self.end_atomic(result).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TagFilter;

    #[test]
    fn a_search_binds_every_filter_and_orders_by_the_sort_then_id() {
        let q = CompanyQuery::new()
            .with_name_prefix("Ac%")
            .with_domain(CompanyDomain::parse("acme.com").unwrap())
            .with_owner(OwnerId::parse("u1").unwrap())
            .with_tags(
                TagFilter::new()
                    .any_of([TagId::new()])
                    .all_of([TagId::new(), TagId::new()])
                    .none_of([TagId::new()]),
            )
            .with_metadata_contains(Metadata::parse(serde_json::json!({"a": 1})).unwrap())
            .with_sort(CompanySort::NameDesc);
        let key = CompanySortKey::Name("acme".into(), Uuid::nil());
        let (sql, values) = search_sql(TenantId::new(), &q, 10, Some(&key)).unwrap();
        assert!(
            sql.contains("WHERE c.tenant_id = $1 AND c.name_key LIKE $2"),
            "{sql}"
        );
        assert!(
            sql.contains("AND (SELECT count(*) FROM taggings tg"),
            "{sql}"
        );
        assert!(sql.contains("(c.name_key, c.id) < ($10, $11)"), "{sql}");
        assert!(
            sql.ends_with("ORDER BY c.name_key DESC, c.id DESC LIMIT $12"),
            "{sql}"
        );
        assert_eq!(values.params().len(), 12);
    }

    #[test]
    fn a_cursor_of_the_other_order_is_refused() {
        let q = CompanyQuery::new().with_sort(CompanySort::CreatedAsc);
        let key = CompanySortKey::Name("acme".into(), Uuid::nil());
        assert!(search_sql(TenantId::new(), &q, 10, Some(&key)).is_err());
    }
}
