//! Tags on PostgreSQL: [`TagsTx`] for [`PgTransaction`]. Names are unique
//! per tenant by the caseless key computed in Rust (`name_key`): a create
//! is one `INSERT … ON CONFLICT DO NOTHING` that yields to the tag holding
//! the name, a rename runs under a savepoint. Attaching takes key-share
//! locks on the tag and the record (so neither can be deleted before the
//! transaction ends), then inserts the tagging against the partial unique
//! index of its kind of record. Taggings go with their tag or record by
//! the foreign keys' cascade, and a trigger records each in the history.

use async_trait::async_trait;
use tokio_postgres::{Row, error::SqlState, types::ToSql};
use uuid::Uuid;

use super::{
    error::{self, InvalidRow},
    locks::SHARE_CONTACT,
    transaction::{PgTransaction, now},
};
use crate::{
    domain::*,
    error::{Entity, Error, FieldError, Result},
    store::{CursorList, Page, PageRequest, TagsTx, shared},
};

/// The columns [`tag_row`] reads, in order.
macro_rules! tag_select {
    () => {
        "tenant_id, id, name, colour, created_at, updated_at, version"
    };
}

/// The columns of [`tag_select!`] with the `t.` prefix, for joins.
macro_rules! tag_select_t {
    () => {
        "t.tenant_id, t.id, t.name, t.colour, t.created_at, t.updated_at, t.version"
    };
}

const GET_TAG: &str = concat!(
    "SELECT ",
    tag_select!(),
    " FROM tags WHERE tenant_id = $1 AND id = $2"
);
// Names are looked up by their caseless key, computed in Rust
// (`TagName::key`), never through the database's `lower()`.
const GET_TAG_BY_KEY: &str = concat!(
    "SELECT ",
    tag_select!(),
    " FROM tags WHERE tenant_id = $1 AND name_key = $2"
);
const TAG_ID_BY_KEY: &str = "SELECT id FROM tags WHERE tenant_id = $1 AND name_key = $2";
/// A new tag; a name whose key the tenant holds inserts nothing.
const INSERT_TAG: &str = concat!(
    "INSERT INTO tags (",
    tag_select!(),
    ", name_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT (tenant_id, name_key) DO NOTHING"
);
/// Locks a tag to change it. Its name key is a unique key, so a rename
/// takes the stronger lock that waits for the key-share locks of
/// attachments under way.
const LOCK_TAG: &str = concat!(
    "SELECT ",
    tag_select!(),
    " FROM tags WHERE tenant_id = $1 AND id = $2 FOR NO KEY UPDATE"
);
const UPDATE_TAG: &str = "UPDATE tags SET name = $3, colour = $4, updated_at = $5, version = $6, \
     name_key = $7 WHERE tenant_id = $1 AND id = $2";
/// Deletes a tag; its taggings go with it (`ON DELETE CASCADE`), each
/// recorded in the history by the taggings' trigger.
const DELETE_TAG: &str = "DELETE FROM tags WHERE tenant_id = $1 AND id = $2";
const TAGS_FIRST: &str = concat!(
    "SELECT ",
    tag_select!(),
    " FROM tags WHERE tenant_id = $1 ORDER BY name_key, id LIMIT $2"
);
const TAGS_AFTER: &str = concat!(
    "SELECT ",
    tag_select!(),
    " FROM tags WHERE tenant_id = $1 AND (name_key, id) > ($2, $3) \
     ORDER BY name_key, id LIMIT $4"
);
/// Fails unless the tag exists; holds a key-share lock on it, so that it
/// cannot be deleted before the transaction ends.
const SHARE_TAG: &str = "SELECT 1 FROM tags WHERE tenant_id = $1 AND id = $2 FOR KEY SHARE";
/// [`SHARE_TAG`] for a company.
const SHARE_COMPANY: &str =
    "SELECT 1 FROM companies WHERE tenant_id = $1 AND id = $2 FOR KEY SHARE";
/// [`SHARE_TAG`] for a deal.
const SHARE_DEAL_FOR_TAG: &str =
    "SELECT 1 FROM deals WHERE tenant_id = $1 AND id = $2 FOR KEY SHARE";
// One tagging per kind of record: `ON CONFLICT` names the partial unique
// index of the kind, its predicate included (without it PostgreSQL finds
// no index to infer).
const ATTACH_TO_CONTACT: &str = "INSERT INTO taggings (tenant_id, id, tag_id, contact_id, \
     created_at) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (tenant_id, tag_id, contact_id) WHERE contact_id IS NOT NULL DO NOTHING \
     RETURNING tag_id, id";
const ATTACH_TO_COMPANY: &str = "INSERT INTO taggings (tenant_id, id, tag_id, company_id, \
     created_at) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (tenant_id, tag_id, company_id) WHERE company_id IS NOT NULL DO NOTHING \
     RETURNING tag_id, id";
const ATTACH_TO_DEAL: &str = "INSERT INTO taggings (tenant_id, id, tag_id, deal_id, \
     created_at) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (tenant_id, tag_id, deal_id) WHERE deal_id IS NOT NULL DO NOTHING";
/// The tags a contact (a company) carries, with when each was attached:
/// what a merge gives the survivor. The taggings are locked `FOR UPDATE`,
/// so that a detach in progress is waited for (and its tagging then
/// skipped), and the tags `FOR KEY SHARE`, so that a tag being deleted is
/// waited for (and skipped) rather than failing the insert on its key.
const CARRIED_BY_CONTACT: &str = "SELECT tg.tag_id, tg.created_at, tg.id FROM taggings tg \
     JOIN tags t ON t.tenant_id = tg.tenant_id AND t.id = tg.tag_id \
     WHERE tg.tenant_id = $1 AND t.tenant_id = $1 AND tg.contact_id = $2 \
     FOR UPDATE OF tg FOR KEY SHARE OF t";
const CARRIED_BY_COMPANY: &str = "SELECT tg.tag_id, tg.created_at, tg.id FROM taggings tg \
     JOIN tags t ON t.tenant_id = tg.tenant_id AND t.id = tg.tag_id \
     WHERE tg.tenant_id = $1 AND t.tenant_id = $1 AND tg.company_id = $2 \
     FOR UPDATE OF tg FOR KEY SHARE OF t";
// A merge's taggings for the survivor: `$2` ids, `$3` tags, `$4` attach
// times, `$5` the survivor; a tag it already carries stays as it is.
const ATTACH_ALL_TO_CONTACT: &str = "INSERT INTO taggings (tenant_id, id, tag_id, contact_id, \
     created_at) SELECT $1, u.id, u.tag_id, $5, u.at \
     FROM unnest($2::uuid[], $3::uuid[], $4::timestamptz[]) AS u(id, tag_id, at) \
     ON CONFLICT (tenant_id, tag_id, contact_id) WHERE contact_id IS NOT NULL DO NOTHING \
     RETURNING tag_id, id";
const ATTACH_ALL_TO_COMPANY: &str = "INSERT INTO taggings (tenant_id, id, tag_id, company_id, \
     created_at) SELECT $1, u.id, u.tag_id, $5, u.at \
     FROM unnest($2::uuid[], $3::uuid[], $4::timestamptz[]) AS u(id, tag_id, at) \
     ON CONFLICT (tenant_id, tag_id, company_id) WHERE company_id IS NOT NULL DO NOTHING \
     RETURNING tag_id, id";
const DETACH_FROM_CONTACT: &str = "DELETE FROM taggings WHERE tenant_id = $1 AND tag_id = $2 \
     AND contact_id = $3 RETURNING id";
const DETACH_FROM_COMPANY: &str = "DELETE FROM taggings WHERE tenant_id = $1 AND tag_id = $2 \
     AND company_id = $3 RETURNING id";
const DETACH_FROM_DEAL: &str = "DELETE FROM taggings WHERE tenant_id = $1 AND tag_id = $2 \
     AND deal_id = $3 RETURNING id";
const TAGS_OF_CONTACT: &str = concat!(
    "SELECT ",
    tag_select_t!(),
    " FROM taggings g JOIN tags t ON t.tenant_id = g.tenant_id AND t.id = g.tag_id \
     WHERE g.tenant_id = $1 AND g.contact_id = $2 ORDER BY t.name_key, t.id"
);
const TAGS_OF_COMPANY: &str = concat!(
    "SELECT ",
    tag_select_t!(),
    " FROM taggings g JOIN tags t ON t.tenant_id = g.tenant_id AND t.id = g.tag_id \
     WHERE g.tenant_id = $1 AND g.company_id = $2 ORDER BY t.name_key, t.id"
);
const TAGS_OF_DEAL: &str = concat!(
    "SELECT ",
    tag_select_t!(),
    " FROM taggings g JOIN tags t ON t.tenant_id = g.tenant_id AND t.id = g.tag_id \
     WHERE g.tenant_id = $1 AND g.deal_id = $2 ORDER BY t.name_key, t.id"
);

/// The tags of the records `$2` whose id is in the taggings' column `$col`
/// (`contact_id`, `company_id`, `deal_id`), each row followed by its
/// record and the tag's name key (for the order: by record, then by name).
///
/// Looked up record by record, through a `LATERAL` subquery that
/// `OFFSET 0` keeps from being merged into a join: written as
/// `g.contact_id = ANY($2)`, PostgreSQL planned it, on a table it had not
/// analysed, as a read of all the tenant's taggings per page (250–290 ms
/// for a page of 1,000 contacts among 300,000 taggings, against about
/// 6.5 ms this way). See `bulk::IDS_BY_EMAIL`.
macro_rules! tags_of_records {
    ($col:literal) => {
        concat!(
            "SELECT x.* FROM (SELECT DISTINCT r FROM unnest($2::uuid[]) AS u(r)) AS u \
             CROSS JOIN LATERAL (SELECT ",
            tag_select_t!(),
            ", g.",
            $col,
            " AS record, t.name_key FROM taggings g \
             JOIN tags t ON t.tenant_id = g.tenant_id AND t.id = g.tag_id \
             WHERE g.tenant_id = $1 AND g.",
            $col,
            " = u.r OFFSET 0) AS x ORDER BY x.record, x.name_key, x.id"
        )
    };
}
/// The tags of the contacts `$2` ([`tags_of_records!`]).
const TAGS_OF_CONTACTS: &str = tags_of_records!("contact_id");
/// The tags of the companies `$2` ([`tags_of_records!`]).
const TAGS_OF_COMPANIES: &str = tags_of_records!("company_id");
/// The tags of the deals `$2` ([`tags_of_records!`]).
const TAGS_OF_DEALS: &str = tags_of_records!("deal_id");

const NAME_SAVEPOINT: &str = "SAVEPOINT crm_tag_rename";
const NAME_RELEASE: &str = "RELEASE SAVEPOINT crm_tag_rename";
const NAME_ROLLBACK_TO: &str = "ROLLBACK TO SAVEPOINT crm_tag_rename";

/// The fixed statements of this file, for [`super::statements`].
pub(super) const STATEMENTS: &[(&str, &str)] = super::statements::listed![
    GET_TAG,
    GET_TAG_BY_KEY,
    TAG_ID_BY_KEY,
    INSERT_TAG,
    LOCK_TAG,
    UPDATE_TAG,
    DELETE_TAG,
    TAGS_FIRST,
    TAGS_AFTER,
    SHARE_TAG,
    SHARE_COMPANY,
    SHARE_DEAL_FOR_TAG,
    ATTACH_TO_CONTACT,
    ATTACH_TO_COMPANY,
    ATTACH_TO_DEAL,
    DETACH_FROM_CONTACT,
    DETACH_FROM_COMPANY,
    DETACH_FROM_DEAL,
    CARRIED_BY_CONTACT,
    CARRIED_BY_COMPANY,
    ATTACH_ALL_TO_CONTACT,
    ATTACH_ALL_TO_COMPANY,
    TAGS_OF_CONTACT,
    TAGS_OF_COMPANY,
    TAGS_OF_DEAL,
    TAGS_OF_CONTACTS,
    TAGS_OF_COMPANIES,
    TAGS_OF_DEALS,
    NAME_SAVEPOINT,
    NAME_RELEASE,
    NAME_ROLLBACK_TO,
];

/// How often a create retries when the tag holding its name vanishes
/// between the conflict and the lookup.
const NAME_RACE_RETRIES: usize = 3;

/// The tag holding a name kept vanishing between a write's conflict and
/// the lookup of its id (concurrent creates, renames and deletes).
#[derive(Debug, thiserror::Error)]
#[error("the tag name was taken and released concurrently; try again")]
struct TagNameRace;

/// A tag from a row of [`tag_select!`], rebuilt through the domain's
/// constructors.
fn tag_row(row: &Row) -> Result<Tag> {
    let get_err = error::db;
    let tenant_id: Uuid = row.try_get(0).map_err(get_err)?;
    let id: Uuid = row.try_get(1).map_err(get_err)?;
    let name: String = row.try_get(2).map_err(get_err)?;
    let colour: Option<String> = row.try_get(3).map_err(get_err)?;
    let created_at: Timestamp = row.try_get(4).map_err(get_err)?;
    let updated_at: Timestamp = row.try_get(5).map_err(get_err)?;
    let version: i64 = row.try_get(6).map_err(get_err)?;
    let mut errors = Vec::new();
    let name = TagName::parse_stored("name", &name)
        .map_err(|e| errors.push(e))
        .ok();
    let colour = match colour {
        None => Some(None),
        Some(c) => TagColour::parse(&c)
            .map(Some)
            .map_err(|e| errors.push(e))
            .ok(),
    };
    if version < 1 {
        errors.push(FieldError::new(
            "version",
            "out_of_range",
            format!("must be at least 1, got {version}"),
        ));
    }
    match (name, colour) {
        (Some(name), Some(colour)) if errors.is_empty() => Ok(Tag {
            id: TagId::from_uuid(id),
            tenant_id: TenantId::from_uuid(tenant_id),
            name,
            colour,
            created_at,
            updated_at,
            version: Version::new(version),
        }),
        _ => Err(Error::backend(InvalidRow {
            table: "tags",
            id: id.to_string(),
            errors,
        })),
    }
}

fn tags(rows: &[Row]) -> Result<Vec<Tag>> {
    rows.iter().map(tag_row).collect()
}

/// The error of a name `holder` holds.
fn duplicate(name: &TagName, holder: Uuid) -> Error {
    Error::Duplicate {
        entity: Entity::Tag,
        field: "name",
        value: name.as_str().to_string(),
        existing_id: holder.to_string(),
    }
}

impl PgTransaction {
    /// The id of the tag holding `name` (by its key), if any.
    async fn tag_id_by_name(&mut self, name: &TagName) -> Result<Option<Uuid>> {
        let tenant = self.tenant_uuid();
        let row = self
            .query_opt(TAG_ID_BY_KEY, &[&tenant, &name.key()])
            .await?;
        row.map(|r| r.try_get::<_, Uuid>(0))
            .transpose()
            .map_err(error::db)
    }

    /// Writes a changed tag (locked by this transaction), mapping a lost
    /// race for its new name to `Duplicate` without aborting the
    /// transaction.
    async fn write_tag(&mut self, current: &Tag, next: Tag) -> Result<Tag> {
        let tenant = self.tenant_uuid();
        let key = next.name.key();
        let colour = next.colour.as_ref().map(|c| c.as_str());
        let params: [&(dyn ToSql + Sync); 7] = [
            &tenant,
            &next.id.as_uuid(),
            &next.name.as_str(),
            &colour,
            &next.updated_at,
            &next.version.get(),
            &key,
        ];
        if key == current.name.key() {
            self.execute(UPDATE_TAG, &params).await?;
            return Ok(next);
        }
        // Another transaction may hold the name uncommitted: the UPDATE
        // waits for it and fails with a unique violation if it commits.
        self.simple(NAME_SAVEPOINT).await?;
        let r = self.raw_execute(UPDATE_TAG, &params, false).await;
        match r {
            Ok(_) => {
                self.simple(NAME_RELEASE).await?;
                Ok(next)
            }
            // The update changes no other unique column, so a unique
            // violation is the name's (confirmed by the lookup).
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                self.simple(NAME_ROLLBACK_TO).await?;
                match self.tag_id_by_name(&next.name).await? {
                    Some(holder) => Err(duplicate(&next.name, holder)),
                    None => Err(error::db_retryable(e)),
                }
            }
            Err(e) => Err(self.failed(e)),
        }
    }

    /// Takes key-share locks on `tag` and `record` in one round trip;
    /// `NotFound` names the first that does not exist.
    async fn share_tag_and_record(&mut self, tag: TagId, record: RecordRef) -> Result<()> {
        let tenant = self.tenant_uuid();
        let (share_record, record_id, entity, id) = match record {
            RecordRef::Contact(c) => (SHARE_CONTACT, c.as_uuid(), Entity::Contact, c.to_string()),
            RecordRef::Company(c) => (SHARE_COMPANY, c.as_uuid(), Entity::Company, c.to_string()),
            RecordRef::Deal(d) => (SHARE_DEAL_FOR_TAG, d.as_uuid(), Entity::Deal, d.to_string()),
        };
        let tag_params: [&(dyn ToSql + Sync); 2] = [&tenant, &tag.as_uuid()];
        let record_params: [&(dyn ToSql + Sync); 2] = [&tenant, &record_id];
        self.check_open()?;
        let begin = self.pending_begin.take().is_some();
        let result = self
            .raw_query_all(
                &[(SHARE_TAG, &tag_params), (share_record, &record_params)],
                begin,
            )
            .await;
        let rows = self.settle(result)?;
        if rows.first().is_none_or(|r| r.is_empty()) {
            return Err(Error::not_found(Entity::Tag, tag));
        }
        if rows.get(1).is_none_or(|r| r.is_empty()) {
            return Err(Error::not_found(entity, id));
        }
        Ok(())
    }
}

impl PgTransaction {
    /// Attaches to `to` every tag `from` carries (each a new tagging,
    /// recorded, keeping when the tag was attached), for a merge that then
    /// deletes `from` and its taggings with it. The caller holds `from`
    /// `FOR UPDATE`, so no tag is attached to it meanwhile; a detach from
    /// it or a tag delete in progress is waited for (see
    /// [`CARRIED_BY_CONTACT`]); one attaching to `to` meanwhile meets the
    /// copy on the unique key and keeps one. Two round trips when `from`
    /// carries tags, one otherwise.
    pub(super) async fn copy_taggings(&mut self, from: MergedRecord) -> Result<CopiedTaggings> {
        let (read, write, from, to) = match from {
            MergedRecord::Contact { from, to } => (
                CARRIED_BY_CONTACT,
                ATTACH_ALL_TO_CONTACT,
                from.as_uuid(),
                to.as_uuid(),
            ),
            MergedRecord::Company { from, to } => (
                CARRIED_BY_COMPANY,
                ATTACH_ALL_TO_COMPANY,
                from.as_uuid(),
                to.as_uuid(),
            ),
        };
        let tenant = self.tenant_uuid();
        let rows = self.query(read, &[&tenant, &from]).await?;
        let mut copied = CopiedTaggings::default();
        if rows.is_empty() {
            return Ok(copied);
        }
        let mut ids = Vec::with_capacity(rows.len());
        let mut tags = Vec::with_capacity(rows.len());
        let mut times = Vec::with_capacity(rows.len());
        for r in &rows {
            let (tag, at, id) = (
                r.try_get::<_, Uuid>(0).map_err(error::db)?,
                r.try_get::<_, Timestamp>(1).map_err(error::db)?,
                r.try_get::<_, Uuid>(2).map_err(error::db)?,
            );
            copied
                .carried
                .push((TagId::from_uuid(tag), TaggingId::from_uuid(id), at));
            ids.push(TaggingId::new().as_uuid());
            tags.push(tag);
            times.push(at);
        }
        for r in self
            .query(write, &[&tenant, &ids, &tags, &times, &to])
            .await?
        {
            copied.gained.push((
                TagId::from_uuid(r.try_get(0).map_err(error::db)?),
                TaggingId::from_uuid(r.try_get(1).map_err(error::db)?),
            ));
        }
        Ok(copied)
    }
}

/// What [`copy_taggings`](PgTransaction::copy_taggings) did.
#[derive(Debug, Default)]
pub(super) struct CopiedTaggings {
    /// The taggings of the record merged away: tag, tagging, attach time.
    pub(super) carried: Vec<(TagId, TaggingId, Timestamp)>,
    /// The taggings it gave the survivor (tags the survivor lacked).
    pub(super) gained: Vec<(TagId, TaggingId)>,
}

/// The two records of a merge whose taggings
/// [`copy_taggings`](PgTransaction::copy_taggings) copies.
#[derive(Debug, Clone, Copy)]
pub(super) enum MergedRecord {
    /// Contact `from` merged into `to`.
    Contact {
        /// The loser.
        from: ContactId,
        /// The survivor.
        to: ContactId,
    },
    /// Company `from` merged into `to`.
    Company {
        /// The loser.
        from: CompanyId,
        /// The survivor.
        to: CompanyId,
    },
}

#[async_trait]
impl TagsTx for PgTransaction {
    async fn create_tag(&mut self, new: NewTag) -> Result<Tag> {
        let t = Tag::create(self.tenant, new, now());
        let key = t.name.key();
        let colour = t.colour.as_ref().map(|c| c.as_str());
        let params: [&(dyn ToSql + Sync); 8] = [
            &t.tenant_id.as_uuid(),
            &t.id.as_uuid(),
            &t.name.as_str(),
            &colour,
            &t.created_at,
            &t.updated_at,
            &t.version.get(),
            &key,
        ];
        for _ in 0..NAME_RACE_RETRIES {
            // In READ COMMITTED, a conflicting insert that is not committed
            // yet makes this wait; once it commits, nothing is inserted and
            // the lookup below sees the winner.
            if self.execute(INSERT_TAG, &params).await? == 1 {
                return Ok(t);
            }
            if let Some(holder) = self.tag_id_by_name(&t.name).await? {
                return Err(duplicate(&t.name, holder));
            }
            tracing::debug!("retry: the tag holding the name went away before it was read");
        }
        Err(Error::retryable(TagNameRace))
    }

    async fn get_tag(&mut self, id: TagId) -> Result<Option<Tag>> {
        let tenant = self.tenant_uuid();
        self.query_opt(GET_TAG, &[&tenant, &id.as_uuid()])
            .await?
            .map(|r| tag_row(&r))
            .transpose()
    }

    async fn get_tag_by_name(&mut self, name: &TagName) -> Result<Option<Tag>> {
        let tenant = self.tenant_uuid();
        self.query_opt(GET_TAG_BY_KEY, &[&tenant, &name.key()])
            .await?
            .map(|r| tag_row(&r))
            .transpose()
    }

    async fn list_tags(&mut self, page: &PageRequest) -> Result<Page<Tag>> {
        let limit = page.checked_limit()?;
        let after: Option<(String, Uuid)> = page.position(CursorList::Tags)?;
        let tenant = self.tenant_uuid();
        let fetch = limit as i64 + 1;
        let rows = match &after {
            None => self.query(TAGS_FIRST, &[&tenant, &fetch]).await?,
            Some((key, id)) => self.query(TAGS_AFTER, &[&tenant, key, id, &fetch]).await?,
        };
        let items = tags(&rows)?;
        Ok(Page::from_overfetch(items, limit, CursorList::Tags, |t| {
            (t.name.key(), t.id.as_uuid())
        }))
    }

    async fn update_tag(&mut self, id: TagId, expected: Version, patch: TagPatch) -> Result<Tag> {
        let tenant = self.tenant_uuid();
        let current = match self.query_opt(LOCK_TAG, &[&tenant, &id.as_uuid()]).await? {
            Some(row) => tag_row(&row)?,
            None => return Err(Error::not_found(Entity::Tag, id)),
        };
        shared::check_version(Entity::Tag, id, expected, current.version)?;
        if let Some(name) = &patch.name {
            match self.tag_id_by_name(name).await? {
                Some(holder) if holder != id.as_uuid() => return Err(duplicate(name, holder)),
                _ => {}
            }
        }
        match current.patched(&patch, now()) {
            None => Ok(current),
            Some(next) => self.write_tag(&current, next).await,
        }
    }

    async fn delete_tag(&mut self, id: TagId) -> Result<bool> {
        let tenant = self.tenant_uuid();
        Ok(self.execute(DELETE_TAG, &[&tenant, &id.as_uuid()]).await? > 0)
    }

    async fn attach_tag(&mut self, tag: TagId, record: RecordRef) -> Result<bool> {
        self.share_tag_and_record(tag, record).await?;
        let (sql, record_id) = match record {
            RecordRef::Contact(c) => (ATTACH_TO_CONTACT, c.as_uuid()),
            RecordRef::Company(c) => (ATTACH_TO_COMPANY, c.as_uuid()),
            RecordRef::Deal(d) => (ATTACH_TO_DEAL, d.as_uuid()),
        };
        let tenant = self.tenant_uuid();
        let inserted = self
            .execute(
                sql,
                &[
                    &tenant,
                    &TaggingId::new().as_uuid(),
                    &tag.as_uuid(),
                    &record_id,
                    &now(),
                ],
            )
            .await?;
        Ok(inserted == 1)
    }

    async fn detach_tag(&mut self, tag: TagId, record: RecordRef) -> Result<bool> {
        let (sql, record_id) = match record {
            RecordRef::Contact(c) => (DETACH_FROM_CONTACT, c.as_uuid()),
            RecordRef::Company(c) => (DETACH_FROM_COMPANY, c.as_uuid()),
            RecordRef::Deal(d) => (DETACH_FROM_DEAL, d.as_uuid()),
        };
        let tenant = self.tenant_uuid();
        let rows = self
            .query(sql, &[&tenant, &tag.as_uuid(), &record_id])
            .await?;
        Ok(!rows.is_empty())
    }

    async fn tags_of(&mut self, record: RecordRef) -> Result<Vec<Tag>> {
        let (sql, record_id) = match record {
            RecordRef::Contact(c) => (TAGS_OF_CONTACT, c.as_uuid()),
            RecordRef::Company(c) => (TAGS_OF_COMPANY, c.as_uuid()),
            RecordRef::Deal(d) => (TAGS_OF_DEAL, d.as_uuid()),
        };
        let tenant = self.tenant_uuid();
        let rows = self.query(sql, &[&tenant, &record_id]).await?;
        tags(&rows)
    }

    async fn tags_of_many(&mut self, records: &[RecordRef]) -> Result<Vec<Vec<Tag>>> {
        crate::store::check_get_many("records", records.len())?;
        let tenant = self.tenant_uuid();
        let mut of: std::collections::HashMap<RecordRef, Vec<Tag>> =
            std::collections::HashMap::new();
        for (kind, sql) in [
            (RecordKind::Contact, TAGS_OF_CONTACTS),
            (RecordKind::Company, TAGS_OF_COMPANIES),
            (RecordKind::Deal, TAGS_OF_DEALS),
        ] {
            let ids: Vec<Uuid> = records
                .iter()
                .filter(|r| r.kind() == kind)
                .map(RecordRef::id_uuid)
                .collect();
            if ids.is_empty() {
                continue;
            }
            for row in &self.query(sql, &[&tenant, &ids]).await? {
                let tag = tag_row(row)?;
                let id: Uuid = row.try_get(TAG_COLUMN_COUNT).map_err(error::db)?;
                of.entry(RecordRef::from_parts(kind, id))
                    .or_default()
                    .push(tag);
            }
        }
        Ok(records
            .iter()
            .map(|r| of.get(r).cloned().unwrap_or_default())
            .collect())
    }
}

/// How many columns [`tag_select_t!`] reads.
const TAG_COLUMN_COUNT: usize = 7;
