//! Contacts on PostgreSQL: [`ContactsTx`] for [`PgTransaction`]. A create
//! is one `INSERT … ON CONFLICT DO NOTHING` that yields to the contact
//! holding the email; an update locks the row, checks the version and
//! writes the changed record back (under a savepoint when the email
//! changes, which can race a create); the search is built by
//! [`super::search`].

use async_trait::async_trait;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::{
    error,
    keys::ContactKeys,
    rows,
    schema::{
        CONTACT_COLUMNS, CONTACT_INSERT_COLUMNS, contact_insert, contact_select, contacts_scored,
    },
    search,
    transaction::{PgTransaction, now},
};
use crate::{
    domain::{
        CompanyDomain, CompanyId, Contact, ContactId, ContactPatch, Email, NewContact, Timestamp,
        Version,
    },
    error::{Entity, Error, Result},
    store::{ContactQuery, ContactSort, ContactSortKey, ContactsTx, CursorList, Page},
};

const GET_CONTACT: &str = concat!(
    "SELECT ",
    contact_select!(),
    " FROM ",
    contacts_scored!(),
    " WHERE tenant_id = $1 AND id = $2"
);
/// The contacts among `$2` (one index lookup each; put in the order asked
/// for in Rust).
const GET_CONTACTS: &str = concat!(
    "SELECT ",
    contact_select!(),
    " FROM ",
    contacts_scored!(),
    " WHERE tenant_id = $1 AND id = ANY($2)"
);
// Emails are looked up by their caseless key, computed in Rust
// (`Email::normalized`), never through the database's `lower()`.
const GET_CONTACT_BY_EMAIL: &str = concat!(
    "SELECT ",
    contact_select!(),
    " FROM ",
    contacts_scored!(),
    " WHERE tenant_id = $1 AND email_key = $2"
);
/// The contacts holding the caseless keys `$2`, one lookup of the email
/// index per key (why not `email_key = ANY($2)`: see
/// [`IDS_BY_EMAIL`](super::bulk::IDS_BY_EMAIL)).
///
/// The lookup reads `contacts` alone and each found contact's score is a
/// subquery naming the tenant: a distributed PostgreSQL (Citus) plans such
/// a per-key `LIMIT` only on the tenant's shard, when every table is held
/// to the tenant by a constant.
const GET_CONTACTS_BY_EMAIL: &str = "SELECT c.tenant_id, c.id, c.email, c.first_name, \
     c.last_name, c.company, c.title, c.phone, c.lead_source, c.metadata, \
     (SELECT r.score FROM contact_ranks r WHERE r.tenant_id = $1 AND r.contact_id = c.id), \
     c.active, c.created_at, c.updated_at, c.version, c.company_id, c.owner_id \
     FROM (SELECT DISTINCT key FROM unnest($2::text[]) AS u(key)) AS k \
     CROSS JOIN LATERAL (SELECT tenant_id, id, email, first_name, last_name, company, title, \
     phone, lead_source, metadata, active, created_at, updated_at, version, company_id, \
     owner_id FROM contacts WHERE tenant_id = $1 AND email_key = k.key LIMIT 1) AS c";
const CONTACT_ID_BY_EMAIL: &str = "SELECT id FROM contacts WHERE tenant_id = $1 AND email_key = $2";
/// Deletes a contact (its deals, activities and signals go with it, by
/// the foreign keys' `ON DELETE CASCADE`).
pub(super) const DELETE_CONTACT: &str = "DELETE FROM contacts WHERE tenant_id = $1 AND id = $2";
/// A new contact: the columns of [`CONTACT_INSERT_COLUMNS`] (the row
/// readers' columns but the score, then the caseless keys), then `$21`,
/// the normalised domain to link the contact by (NULL: none). Its rank
/// row (score 0) comes from the insert's trigger. An email already held in
/// the tenant inserts nothing; else the stored company comes back.
///
/// Without a company (`$15`), the contact takes the company holding the
/// domain, key-share locked so that it cannot be deleted before this
/// transaction ends. That lock may wait for a transaction holding the
/// company (a merge, a delete), and a row found deleted (or no longer
/// holding the domain) after the wait reads as none: under `READ
/// COMMITTED` PostgreSQL checks again only the row it waited for, not the
/// domain's new holder (a merge's survivor, which took the domain). So the
/// statement also looks the domain up without a lock, on the same
/// snapshot, and inserts nothing when the two differ: the caller finds no
/// contact holding the email and runs it again, on a snapshot taken after
/// the wait. An `INSERT … SELECT`, with its parameters cast: a distributed
/// PostgreSQL (Citus) takes no subquery in `VALUES`.
pub(super) const INSERT_CONTACT: &str = concat!(
    "INSERT INTO contacts (",
    contact_insert!(),
    ") SELECT $1::uuid, $2::uuid, \
     $3::text, $4::text, $5::text, $6::text, $7::text, $8::text, $9::text, $10::jsonb, \
     $11::bool, $12::timestamptz, $13::timestamptz, $14::int8, \
     coalesce($15::uuid, l.locked), $16::text, $17::text, $18::text, $19::text, $20::text \
     FROM (SELECT (SELECT co.id FROM companies co WHERE co.tenant_id = $1::uuid \
     AND co.domain = $21::text FOR KEY SHARE) AS locked, (SELECT co.id FROM companies co \
     WHERE co.tenant_id = $1::uuid AND co.domain = $21::text) AS seen) AS l \
     WHERE $15::uuid IS NOT NULL OR l.locked IS NOT DISTINCT FROM l.seen \
     ON CONFLICT (tenant_id, email_key) DO NOTHING RETURNING company_id"
);
/// Key-share locks a company that a contact or deal is to link to, so
/// that it is not deleted before this transaction ends.
pub(super) const SHARE_COMPANY: &str =
    "SELECT id FROM companies WHERE tenant_id = $1 AND id = $2 FOR KEY SHARE";
/// The columns of a changed contact, everything but the score (which
/// only the scoring pipeline writes) and what never changes, with its
/// caseless keys: see [`ContactUpdate`].
pub(super) const UPDATE_CONTACT: &str = "UPDATE contacts SET email = $3, first_name = $4, last_name = $5, \
     company = $6, title = $7, phone = $8, lead_source = $9, metadata = $10, active = $11, \
     updated_at = $12, version = $13, email_key = $14, first_name_key = $15, \
     last_name_key = $16, company_key = $17, company_id = $18, owner_id = $19 \
     WHERE tenant_id = $1 AND id = $2";

/// Locks a contact that is to be deleted, as
/// [`LOCK_CONTACT_FOR_DELETE`](super::locks::LOCK_CONTACT_FOR_DELETE) does
/// but reading nothing, so not its rank row: the delete removes that row
/// with the contact, and a contact that lost it (written around the store)
/// is deleted and said to be.
const LOCK_FOR_DELETE: &str = "SELECT id FROM contacts WHERE tenant_id = $1 AND id = $2 FOR UPDATE";
/// Locks the deals of a contact that is to be deleted (with it, by the
/// cascade): waits for every transaction that holds one of them for a
/// task (`FOR KEY SHARE`), so that the unlinking below sees its task.
const LOCK_DEALS_FOR_DELETE: &str =
    "SELECT id FROM deals WHERE tenant_id = $1 AND contact_id = $2 FOR UPDATE";
/// Unlinks the tasks of a contact's deals before the contact (and its
/// deals, by the cascade) is deleted, and the contact too when the task
/// links to it: one change of each task. The foreign keys of tasks have
/// no `ON DELETE SET NULL`, which a distributed PostgreSQL refuses (see
/// the migration).
const UNLINK_DEALS_TASKS: &str = "UPDATE tasks SET deal_id = NULL, \
     contact_id = NULLIF(contact_id, $2), version = version + 1, updated_at = $3 \
     WHERE tenant_id = $1 AND deal_id IN \
     (SELECT d.id FROM deals d WHERE d.tenant_id = $1 AND d.contact_id = $2)";
/// Unlinks the contact's other tasks.
const UNLINK_CONTACT_TASKS: &str = "UPDATE tasks SET contact_id = NULL, version = version + 1, \
     updated_at = $3 WHERE tenant_id = $1 AND contact_id = $2";

const EMAIL_SAVEPOINT: &str = "SAVEPOINT crm_email_change";
const EMAIL_RELEASE: &str = "RELEASE SAVEPOINT crm_email_change";
const EMAIL_ROLLBACK_TO: &str = "ROLLBACK TO SAVEPOINT crm_email_change";

/// The fixed statements of this file, for [`super::statements`].
pub(super) const STATEMENTS: &[(&str, &str)] = super::statements::listed![
    GET_CONTACT,
    GET_CONTACTS,
    GET_CONTACT_BY_EMAIL,
    GET_CONTACTS_BY_EMAIL,
    CONTACT_ID_BY_EMAIL,
    DELETE_CONTACT,
    LOCK_FOR_DELETE,
    LOCK_DEALS_FOR_DELETE,
    UNLINK_DEALS_TASKS,
    UNLINK_CONTACT_TASKS,
    INSERT_CONTACT,
    SHARE_COMPANY,
    UPDATE_CONTACT,
    EMAIL_SAVEPOINT,
    EMAIL_RELEASE,
    EMAIL_ROLLBACK_TO,
];

/// How often a create retries when the contact holding its email vanishes
/// between the conflict and the lookup, or the company holding its domain
/// changes while the insert waits for it (a merge moving the domain).
const EMAIL_RACE_RETRIES: usize = 5;

/// A changed contact as [`UPDATE_CONTACT`] binds it.
pub(super) struct ContactUpdate<'a> {
    tenant: Uuid,
    id: Uuid,
    email: &'a str,
    first_name: &'a str,
    last_name: &'a str,
    company: Option<&'a str>,
    title: Option<&'a str>,
    phone: Option<&'a str>,
    lead_source: &'a str,
    metadata: serde_json::Value,
    active: bool,
    updated_at: Timestamp,
    version: i64,
    keys: ContactKeys,
    company_id: Option<Uuid>,
    owner: Option<&'a str>,
}

impl<'a> ContactUpdate<'a> {
    /// The update writing `c` in `tenant`.
    pub(super) fn new(tenant: Uuid, c: &'a Contact) -> Self {
        ContactUpdate {
            tenant,
            id: c.id.as_uuid(),
            email: c.email.as_str(),
            first_name: c.first_name.as_str(),
            last_name: c.last_name.as_str(),
            company: c.company.as_ref().map(|v| v.as_str()),
            title: c.title.as_ref().map(|v| v.as_str()),
            phone: c.phone.as_ref().map(|v| v.as_str()),
            lead_source: c.lead_source.as_str(),
            metadata: serde_json::Value::from(c.metadata.clone()),
            active: c.active,
            updated_at: c.updated_at,
            version: c.version.get(),
            keys: ContactKeys::of(c),
            company_id: c.company_id.map(|v| v.as_uuid()),
            owner: c.owner.as_ref().map(|v| v.as_str()),
        }
    }

    /// The parameters of [`UPDATE_CONTACT`], `$1` to `$19`.
    pub(super) fn params(&self) -> [&(dyn ToSql + Sync); 19] {
        [
            &self.tenant,
            &self.id,
            &self.email,
            &self.first_name,
            &self.last_name,
            &self.company,
            &self.title,
            &self.phone,
            &self.lead_source,
            &self.metadata,
            &self.active,
            &self.updated_at,
            &self.version,
            &self.keys.email,
            &self.keys.first_name,
            &self.keys.last_name,
            &self.keys.company,
            &self.company_id,
            &self.owner,
        ]
    }
}

impl PgTransaction {
    /// Key-share locks company `id` for a link to it (see
    /// [`SHARE_COMPANY`]); `NotFound` when there is no such company.
    pub(super) async fn share_company(&mut self, id: CompanyId) -> Result<()> {
        let tenant = self.tenant_uuid();
        match self
            .query_opt(SHARE_COMPANY, &[&tenant, &id.as_uuid()])
            .await?
        {
            Some(_) => Ok(()),
            None => Err(Error::not_found(Entity::Company, id)),
        }
    }

    /// Key-shares the company an update links its record to (`link`: the
    /// patch's `company_id`), before the record is locked: the order of a
    /// company delete or merge (company, then its records), with which the
    /// update could otherwise deadlock. A missing company comes back as
    /// the error to report once the record's own checks pass.
    pub(super) async fn share_linked_company(
        &mut self,
        link: Option<Option<CompanyId>>,
    ) -> Result<Option<Error>> {
        match link {
            Some(Some(company)) => match self.share_company(company).await {
                Ok(()) => Ok(None),
                Err(e @ Error::NotFound { .. }) => Ok(Some(e)),
                Err(e) => Err(e),
            },
            _ => Ok(None),
        }
    }

    /// The domain a new contact is linked to a company by: its email's,
    /// when this store links by domain, the contact names no company and
    /// the domain is not a free-mail one.
    pub(super) fn link_domain(&self, new: &NewContact) -> Option<CompanyDomain> {
        if !self.company_linking || new.company_id.is_some() {
            return None;
        }
        CompanyDomain::of_email(&new.email).filter(|d| !d.is_free_mail())
    }

    /// The id of the contact holding `email`, if any.
    async fn contact_id_by_email(&mut self, email: &Email) -> Result<Option<ContactId>> {
        let tenant = self.tenant_uuid();
        let row = self
            .query_opt(CONTACT_ID_BY_EMAIL, &[&tenant, &email.normalized()])
            .await?;
        row.map(|r| r.try_get::<_, Uuid>(0).map(ContactId::from_uuid))
            .transpose()
            .map_err(error::db)
    }

    /// Writes an updated contact (locked by this transaction), mapping a
    /// lost race for its new email to `DuplicateEmail` without aborting the
    /// transaction.
    pub(super) async fn write_contact(
        &mut self,
        current: &Contact,
        next: Contact,
    ) -> Result<Contact> {
        if let Some(company) = next.company_id.filter(|c| Some(*c) != current.company_id) {
            self.share_company(company).await?;
        }
        let update = ContactUpdate::new(self.tenant_uuid(), &next);
        let params = update.params();
        if next.email.normalized() == current.email.normalized() {
            self.execute(UPDATE_CONTACT, &params).await?;
            return Ok(next);
        }
        // Another transaction may hold the email uncommitted: our UPDATE
        // waits for it and fails with a unique violation if it commits.
        self.simple(EMAIL_SAVEPOINT).await?;
        let r = self.raw_execute(UPDATE_CONTACT, &params, false).await;
        match r {
            Ok(_) => {
                self.simple(EMAIL_RELEASE).await?;
                Ok(next)
            }
            Err(e) if error::is_email_conflict(&e) => {
                self.simple(EMAIL_ROLLBACK_TO).await?;
                match self.contact_id_by_email(&next.email).await? {
                    Some(existing_id) => Err(Error::DuplicateEmail {
                        email: next.email,
                        existing_id,
                    }),
                    None => Err(error::db_retryable(e)),
                }
            }
            Err(e) => Err(self.failed(e)),
        }
    }
}

/// A contact's values as [`INSERT_CONTACT`] takes them: the columns of
/// [`CONTACT_INSERT_COLUMNS`] and the email's domain a company link is
/// looked up by (`None`: no lookup).
pub(super) struct InsertRow<'a> {
    c: &'a Contact,
    tenant: Uuid,
    id: Uuid,
    email: &'a str,
    first_name: &'a str,
    last_name: &'a str,
    lead_source: &'static str,
    company: Option<&'a str>,
    title: Option<&'a str>,
    phone: Option<&'a str>,
    metadata: serde_json::Value,
    version: i64,
    company_id: Option<Uuid>,
    owner: Option<&'a str>,
    keys: ContactKeys,
    domain: Option<&'a str>,
}

impl<'a> InsertRow<'a> {
    /// The values of `c`, linking it by `domain`.
    pub(super) fn of(c: &'a Contact, domain: Option<&'a str>) -> Self {
        InsertRow {
            c,
            tenant: c.tenant_id.as_uuid(),
            id: c.id.as_uuid(),
            email: c.email.as_str(),
            first_name: c.first_name.as_str(),
            last_name: c.last_name.as_str(),
            lead_source: c.lead_source.as_str(),
            company: c.company.as_ref().map(|v| v.as_str()),
            title: c.title.as_ref().map(|v| v.as_str()),
            phone: c.phone.as_ref().map(|v| v.as_str()),
            metadata: serde_json::Value::from(c.metadata.clone()),
            version: c.version.get(),
            company_id: c.company_id.map(|v| v.as_uuid()),
            owner: c.owner.as_ref().map(|v| v.as_str()),
            keys: ContactKeys::of(c),
            domain,
        }
    }

    /// The parameters of [`INSERT_CONTACT`], in its order.
    pub(super) fn params(&self) -> [&(dyn ToSql + Sync); CONTACT_INSERT_COLUMNS.len() + 1] {
        let c = self.c;
        [
            &self.tenant,
            &self.id,
            &self.email,
            &self.first_name,
            &self.last_name,
            &self.company,
            &self.title,
            &self.phone,
            &self.lead_source,
            &self.metadata,
            &c.active,
            &c.created_at,
            &c.updated_at,
            &self.version,
            &self.company_id,
            &self.owner,
            &self.keys.email,
            &self.keys.first_name,
            &self.keys.last_name,
            &self.keys.company,
            &self.domain,
        ]
    }
}

#[async_trait]
impl ContactsTx for PgTransaction {
    async fn create_contact(&mut self, new: NewContact) -> Result<Contact> {
        let new = new.checked()?;
        if let Some(company) = new.company_id {
            self.share_company(company).await?;
        }
        let domain = self.link_domain(&new);
        let domain = domain.as_ref().map(|d| d.as_str());
        let mut c = Contact::create(self.tenant, new, now());
        let row = InsertRow::of(&c, domain);
        let params = row.params();
        for _ in 0..EMAIL_RACE_RETRIES {
            // In READ COMMITTED, a conflicting insert that is not committed
            // yet makes this wait; once it commits, nothing is inserted and
            // the lookup below sees the winner. (Nothing is inserted either
            // when the domain's company changed during the statement: then
            // no contact holds the email, and the insert runs again.)
            if let Some(row) = self.query_opt(INSERT_CONTACT, &params).await? {
                let linked: Option<Uuid> = row.try_get(0).map_err(error::db)?;
                c.company_id = linked.map(CompanyId::from_uuid);
                return Ok(c);
            }
            if let Some(existing_id) = self.contact_id_by_email(&c.email).await? {
                return Err(Error::DuplicateEmail {
                    email: c.email,
                    existing_id,
                });
            }
            tracing::debug!(
                "retry: the contact holding the email, or the company holding its domain, \
                 changed during the insert"
            );
        }
        Err(Error::retryable(error::EmailRace))
    }

    async fn get_contact(&mut self, id: ContactId) -> Result<Option<Contact>> {
        let tenant = self.tenant_uuid();
        self.query_opt(GET_CONTACT, &[&tenant, &id.as_uuid()])
            .await?
            .map(|r| rows::contact(&r))
            .transpose()
    }

    async fn get_contacts(&mut self, ids: &[ContactId]) -> Result<Vec<Contact>> {
        crate::store::check_get_many("ids", ids.len())?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let tenant = self.tenant_uuid();
        let uuids: Vec<Uuid> = ids.iter().map(|id| id.as_uuid()).collect();
        self.custom_plans().await?;
        let rows = self.query(GET_CONTACTS, &[&tenant, &uuids]).await?;
        let mut found = std::collections::HashMap::with_capacity(rows.len());
        for row in &rows {
            let c = rows::contact(row)?;
            found.insert(c.id, c);
        }
        Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
    }

    async fn get_contacts_by_email(&mut self, emails: &[Email]) -> Result<Vec<Contact>> {
        crate::store::check_get_many("emails", emails.len())?;
        if emails.is_empty() {
            return Ok(Vec::new());
        }
        let tenant = self.tenant_uuid();
        let keys: Vec<&str> = emails.iter().map(|e| e.normalized()).collect();
        self.custom_plans().await?;
        let rows = self.query(GET_CONTACTS_BY_EMAIL, &[&tenant, &keys]).await?;
        let mut found = std::collections::HashMap::with_capacity(rows.len());
        for row in &rows {
            let c = rows::contact(row)?;
            found.insert(c.email.normalized().to_string(), c);
        }
        Ok(emails
            .iter()
            .filter_map(|e| found.remove(e.normalized()))
            .collect())
    }

    async fn get_contact_by_email(&mut self, email: &Email) -> Result<Option<Contact>> {
        let tenant = self.tenant_uuid();
        self.query_opt(GET_CONTACT_BY_EMAIL, &[&tenant, &email.normalized()])
            .await?
            .map(|r| rows::contact(&r))
            .transpose()
    }

    async fn update_contact(
        &mut self,
        id: ContactId,
        expected: Version,
        patch: ContactPatch,
    ) -> Result<Contact> {
        // The company first (see `share_linked_company`); a missing one is
        // reported after the contact, its version and the email.
        let missing_company = self.share_linked_company(patch.company_id).await?;
        let current = self.lock_contact(id).await?;
        crate::store::shared::check_version(Entity::Contact, id, expected, current.version)?;
        if let Some(email) = &patch.email {
            match self.contact_id_by_email(email).await? {
                Some(existing_id) if existing_id != id => {
                    return Err(Error::DuplicateEmail {
                        email: email.clone(),
                        existing_id,
                    });
                }
                _ => {}
            }
        }
        if let Some(e) = missing_company {
            return Err(e);
        }
        match current.patched(&patch, now()) {
            None => Ok(current),
            Some(next) => self.write_contact(&current, next).await,
        }
    }

    async fn deactivate_contact(&mut self, id: ContactId) -> Result<Contact> {
        let current = self.lock_contact(id).await?;
        let patch = ContactPatch {
            active: Some(false),
            ..ContactPatch::default()
        };
        match current.patched(&patch, now()) {
            None => Ok(current),
            Some(next) => self.write_contact(&current, next).await,
        }
    }

    async fn delete_contact(&mut self, id: ContactId) -> Result<bool> {
        self.check_open()?;
        let (tenant, contact, at) = (self.tenant_uuid(), id.as_uuid(), now());
        let key: [&(dyn ToSql + Sync); 2] = [&tenant, &contact];
        let timed: [&(dyn ToSql + Sync); 3] = [&tenant, &contact, &at];
        // In one round trip: the contact is locked FOR UPDATE (which waits
        // for every transaction attaching a deal, activity, signal or task
        // to it, and keeps later ones waiting), then its deals, so that
        // the tasks unlinked next are all there are; then the delete,
        // which takes the deals, activities and signals along. A contact
        // that does not exist locks, unlinks and deletes nothing.
        let begin = self.pending_begin.take().is_some();
        let result = self
            .raw_query_all(
                &[
                    (LOCK_FOR_DELETE, &key),
                    (LOCK_DEALS_FOR_DELETE, &key),
                    (UNLINK_DEALS_TASKS, &timed),
                    (UNLINK_CONTACT_TASKS, &timed),
                    (DELETE_CONTACT, &key),
                ],
                begin,
            )
            .await;
        let rows = self.settle(result)?;
        Ok(rows.first().is_some_and(|locked| !locked.is_empty()))
    }

    async fn search_contacts(&mut self, q: &ContactQuery) -> Result<Page<Contact>> {
        let q = &*q.checked()?;
        let limit = q.page.checked_limit()?;
        let after: Option<ContactSortKey> = q.page.position(CursorList::contacts(q))?;
        let (sql, values) = search::build(self.tenant, q, limit, after.as_ref())?;
        let rows = self.query(&sql, &values.as_params()).await?;
        if !matches!(q.sort, ContactSort::NameAsc | ContactSort::NameDesc) {
            let items = rows::all(&rows, rows::contact)?;
            return Ok(Page::from_overfetch(
                items,
                limit,
                CursorList::contacts(q),
                |c| ContactSortKey::of(q.sort, c),
            ));
        }
        // The cursor holds the keys the rows were ordered by, as stored
        // (not recomputed), so that paging follows the index exactly.
        let mut items = Vec::with_capacity(rows.len());
        for row in &rows {
            let contact = rows::contact(row)?;
            let last: String = row.try_get(CONTACT_COLUMNS.len()).map_err(error::db)?;
            let first: String = row.try_get(CONTACT_COLUMNS.len() + 1).map_err(error::db)?;
            let key = ContactSortKey::Name(last, first, contact.id.as_uuid());
            items.push((contact, key));
        }
        let page = Page::from_overfetch(items, limit, CursorList::contacts(q), |(_, key)| {
            key.clone()
        });
        Ok(Page {
            items: page.items.into_iter().map(|(c, _)| c).collect(),
            next_cursor: page.next_cursor,
        })
    }
}
