//! Deals on PostgreSQL: [`DealsTx`] for [`PgTransaction`]. A deal is
//! changed under its contact's key-share lock and its own row lock, taken
//! in one round trip; the stage machine itself is the domain's
//! ([`Deal::moved`], [`Deal::reopened`]).

use async_trait::async_trait;
use rust_decimal::Decimal;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::{
    error, rows,
    schema::{DEAL_COLUMNS, deal_select},
    search::{Binder, tag_filter_sql},
    transaction::{Params, PgTransaction, cursor_time, now},
};
use crate::{
    domain::{
        ContactId, Currency, Deal, DealId, DealPatch, LostReason, NewDeal, Pipeline, PipelineKey,
        StageKey, TenantId, Version,
    },
    error::{Entity, Error, FieldError, Result, ValidationErrors},
    store::{
        CursorList, DealQuery, DealsTx, ListScope, Page, PageRequest, PipelineSummary, TimeIdKey,
    },
};

const GET_DEAL: &str = concat!(
    "SELECT ",
    deal_select!(),
    " FROM deals WHERE tenant_id = $1 AND id = $2"
);
/// The deals among `$2` (put in the order asked for in Rust).
const GET_DEALS: &str = concat!(
    "SELECT ",
    deal_select!(),
    " FROM deals WHERE tenant_id = $1 AND id = ANY($2)"
);
const LOCK_DEAL: &str = concat!(
    "SELECT ",
    deal_select!(),
    " FROM deals WHERE tenant_id = $1 AND id = $2 FOR NO KEY UPDATE"
);
/// Locks a deal that is to be deleted: `FOR UPDATE`, which waits for every
/// transaction holding the deal for an activity (`FOR KEY SHARE`, see
/// `timeline.rs`) and makes later ones wait. With `FOR NO KEY UPDATE` an
/// activity logged meanwhile would be committed after the unlinking and
/// before the delete, which then fails on the foreign key.
const LOCK_DEAL_FOR_DELETE: &str = concat!(
    "SELECT ",
    deal_select!(),
    " FROM deals WHERE tenant_id = $1 AND id = $2 FOR UPDATE"
);
// A deal is changed under its contact's key-share lock, taken first, so
// that every writer locks a contact before its deals, as a merge does (the
// loser, then its deals): a handler that updates a deal and then logs an
// activity for its contact cannot deadlock with a merge of that contact.
const SHARE_DEALS_CONTACT: &str = "SELECT c.id FROM contacts c WHERE c.tenant_id = $1 \
     AND c.id = (SELECT d.contact_id FROM deals d WHERE d.tenant_id = $1 AND d.id = $2) \
     FOR KEY SHARE OF c";
const DELETE_DEAL: &str = "DELETE FROM deals WHERE tenant_id = $1 AND id = $2 RETURNING id";
/// Unlinks a deal's activities before the deal is deleted: the foreign key
/// has no `ON DELETE SET NULL (deal_id)`, which a distributed PostgreSQL
/// refuses (see the migration).
const UNLINK_ACTIVITIES: &str =
    "UPDATE activities SET deal_id = NULL WHERE tenant_id = $1 AND deal_id = $2";
/// Unlinks a deal's tasks before the deal is deleted, each a change of
/// the task (for the same reason as the activities).
const UNLINK_TASKS: &str = "UPDATE tasks SET deal_id = NULL, version = version + 1, \
     updated_at = $3 WHERE tenant_id = $1 AND deal_id = $2";
const DEALS_FOR_CONTACT: &str = concat!(
    "SELECT ",
    deal_select!(),
    " FROM deals WHERE tenant_id = $1 AND contact_id = $2",
    " ORDER BY created_at DESC, id DESC LIMIT $3"
);
/// The first page of each of the contacts `$2` ([`DEALS_FOR_CONTACT`]
/// per contact, `$3` rows at most each), then the contact's position in
/// `$2`: one index range per contact.
const DEALS_FIRST_PAGES: &str = concat!(
    "SELECT x.*, u.n FROM unnest($2::uuid[]) WITH ORDINALITY AS u(c, n) \
     CROSS JOIN LATERAL (SELECT ",
    deal_select!(),
    " FROM deals WHERE tenant_id = $1 AND contact_id = u.c",
    " ORDER BY created_at DESC, id DESC LIMIT $3) AS x",
    " ORDER BY u.n, x.created_at DESC, x.id DESC"
);
const DEALS_FOR_CONTACT_AFTER: &str = concat!(
    "SELECT ",
    deal_select!(),
    " FROM deals WHERE tenant_id = $1 AND contact_id = $2 AND (created_at, id) < ($3, $4)",
    " ORDER BY created_at DESC, id DESC LIMIT $5"
);
const DEALS_IN_STAGE: &str = concat!(
    "SELECT ",
    deal_select!(),
    " FROM deals WHERE tenant_id = $1 AND pipeline = $2 AND stage = $3",
    " ORDER BY created_at DESC, id DESC LIMIT $4"
);
const DEALS_IN_STAGE_AFTER: &str = concat!(
    "SELECT ",
    deal_select!(),
    " FROM deals WHERE tenant_id = $1 AND pipeline = $2 AND stage = $3",
    " AND (created_at, id) < ($4, $5) ORDER BY created_at DESC, id DESC LIMIT $6"
);
const PIPELINE_TOTALS: &str = "SELECT stage, currency, count(*), sum(amount) FROM deals \
     WHERE tenant_id = $1 AND pipeline = $2 GROUP BY stage, currency";
/// A new deal: the columns of [`DEAL_COLUMNS`], the row reader's.
pub(super) const INSERT_DEAL: &str = concat!(
    "INSERT INTO deals (",
    deal_select!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
);
/// The columns of a changed deal: everything but its keys, contact,
/// pipeline and creation time, which never change.
const UPDATE_DEAL: &str = "UPDATE deals SET title = $3, amount = $4, currency = $5, stage = $6, \
     expected_close_date = $7, won_at = $8, lost_at = $9, lost_reason = $10, updated_at = $11, \
     version = $12, company_id = $13, owner_id = $14 WHERE tenant_id = $1 AND id = $2";

/// The fixed statements of this file, for [`super::statements`].
pub(super) const STATEMENTS: &[(&str, &str)] = super::statements::listed![
    GET_DEAL,
    GET_DEALS,
    LOCK_DEAL,
    LOCK_DEAL_FOR_DELETE,
    SHARE_DEALS_CONTACT,
    DELETE_DEAL,
    UNLINK_ACTIVITIES,
    UNLINK_TASKS,
    DEALS_FOR_CONTACT,
    DEALS_FOR_CONTACT_AFTER,
    DEALS_FIRST_PAGES,
    DEALS_IN_STAGE,
    DEALS_IN_STAGE_AFTER,
    PIPELINE_TOTALS,
    INSERT_DEAL,
    UPDATE_DEAL,
];

/// How often a deal is locked again when merges keep moving it to another
/// contact between the two locks.
const DEAL_MOVE_RETRIES: usize = 5;

impl PgTransaction {
    /// The pipeline `key` names, or a validation error on `pipeline`.
    fn pipeline(&self, key: &PipelineKey) -> Result<Pipeline> {
        self.pipelines
            .require("pipeline", key)
            .cloned()
            .map_err(|e| ValidationErrors::single(e).into())
    }

    /// Locks a deal to change it: its contact with a key-share lock first,
    /// then the deal, in one round trip. A deal that a merge moved to
    /// another contact in between is locked again under its new contact;
    /// that second round holds the deal before the new contact, so it can
    /// meet a second merge of that contact in a deadlock (a retryable
    /// error, and only when two merges move the deal within one round trip).
    async fn lock_deal(&mut self, id: DealId) -> Result<Deal> {
        self.lock_deal_with(id, LOCK_DEAL).await
    }

    /// Like [`lock_deal`](Self::lock_deal), with `lock` (`$1` tenant, `$2`
    /// deal) taking the deal's row lock.
    async fn lock_deal_with(&mut self, id: DealId, lock: &str) -> Result<Deal> {
        let (tenant, deal) = (self.tenant_uuid(), id.as_uuid());
        for _ in 0..DEAL_MOVE_RETRIES {
            self.check_open()?;
            let params: [&(dyn ToSql + Sync); 2] = [&tenant, &deal];
            let begin = self.pending_begin.take().is_some();
            let result = self
                .raw_query_all(&[(SHARE_DEALS_CONTACT, &params), (lock, &params)], begin)
                .await;
            let rows = self.settle(result)?;
            let shared: Option<Uuid> = rows
                .first()
                .and_then(|r| r.first())
                .map(|r| r.try_get(0))
                .transpose()
                .map_err(error::db)?;
            let Some(row) = rows.get(1).and_then(|r| r.first()) else {
                return Err(Error::not_found(Entity::Deal, id));
            };
            let locked = rows::deal(row)?;
            if shared == Some(locked.contact_id.as_uuid()) {
                return Ok(locked);
            }
            tracing::debug!(deal = %id, "retry: a merge moved the deal while it was being locked");
        }
        Err(Error::retryable(error::DealMoving(id.to_string())))
    }

    /// Writes a changed deal (locked by this transaction).
    async fn write_deal(&mut self, d: Deal) -> Result<Deal> {
        let tenant = self.tenant_uuid();
        self.execute(
            UPDATE_DEAL,
            &[
                &tenant,
                &d.id.as_uuid(),
                &d.title.as_str(),
                &d.amount.amount(),
                &d.amount.currency().code(),
                &d.stage.as_str(),
                &d.expected_close_date,
                &d.won_at,
                &d.lost_at,
                &d.lost_reason.as_ref().map(|r| r.as_str()),
                &d.updated_at,
                &d.version.get(),
                &d.company_id.map(|v| v.as_uuid()),
                &d.owner.as_ref().map(|v| v.as_str()),
            ],
        )
        .await?;
        Ok(d)
    }

    /// A page of deals, newest first: `first` for the first page, `after`
    /// (with the cursor's position) for the next ones; both take `keys`,
    /// then the limit.
    pub(super) async fn deal_page(
        &mut self,
        list: ListScope,
        (first, after): (&str, &str),
        keys: &Params<'_>,
        page: &PageRequest,
    ) -> Result<Page<Deal>> {
        let limit = page.checked_limit()?;
        let cursor: Option<TimeIdKey> = page.position(list)?;
        let fetch = limit as i64 + 1;
        let rows = match cursor {
            None => {
                let mut params = keys.to_vec();
                params.push(&fetch);
                self.query(first, &params).await?
            }
            Some((micros, id)) => {
                let at = cursor_time(micros)?;
                let mut params = keys.to_vec();
                params.extend_from_slice(&[&at as &(dyn ToSql + Sync), &id, &fetch]);
                self.query(after, &params).await?
            }
        };
        let items = rows::all(&rows, rows::deal)?;
        Ok(Page::from_overfetch(items, limit, list, |d: &Deal| {
            (d.created_at.timestamp_micros(), d.id.as_uuid())
        }))
    }
}

#[async_trait]
impl DealsTx for PgTransaction {
    async fn create_deal(&mut self, new: NewDeal) -> Result<Deal> {
        let new = new.checked()?;
        let pipeline = self.pipeline(&new.pipeline)?;
        self.share_contact(new.contact_id).await?;
        if let Some(company) = new.company_id {
            self.share_company(company).await?;
        }
        let d = Deal::create(self.tenant, new, &pipeline, now())?;
        let params: [&(dyn ToSql + Sync); DEAL_COLUMNS.len()] = [
            &d.tenant_id.as_uuid(),
            &d.id.as_uuid(),
            &d.contact_id.as_uuid(),
            &d.title.as_str(),
            &d.amount.amount(),
            &d.amount.currency().code(),
            &d.pipeline.as_str(),
            &d.stage.as_str(),
            &d.expected_close_date,
            &d.won_at,
            &d.lost_at,
            &d.lost_reason.as_ref().map(|r| r.as_str()),
            &d.created_at,
            &d.updated_at,
            &d.version.get(),
            &d.company_id.map(|v| v.as_uuid()),
            &d.owner.as_ref().map(|v| v.as_str()),
        ];
        self.execute(INSERT_DEAL, &params).await?;
        Ok(d)
    }

    async fn get_deal(&mut self, id: DealId) -> Result<Option<Deal>> {
        let tenant = self.tenant_uuid();
        self.query_opt(GET_DEAL, &[&tenant, &id.as_uuid()])
            .await?
            .map(|r| rows::deal(&r))
            .transpose()
    }

    async fn get_deals(&mut self, ids: &[DealId]) -> Result<Vec<Deal>> {
        crate::store::check_get_many("ids", ids.len())?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let tenant = self.tenant_uuid();
        let uuids: Vec<Uuid> = ids.iter().map(|id| id.as_uuid()).collect();
        self.custom_plans().await?;
        let rows = self.query(GET_DEALS, &[&tenant, &uuids]).await?;
        let mut found = std::collections::HashMap::with_capacity(rows.len());
        for row in &rows {
            let d = rows::deal(row)?;
            found.insert(d.id, d);
        }
        Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
    }

    async fn update_deal(
        &mut self,
        id: DealId,
        expected: Version,
        patch: DealPatch,
    ) -> Result<Deal> {
        let patch = patch.checked()?;
        // The company first (see `share_linked_company`); a missing one is
        // reported after the deal and its version.
        let missing_company = self.share_linked_company(patch.company_id).await?;
        let current = self.lock_deal(id).await?;
        crate::store::shared::check_version(Entity::Deal, id, expected, current.version)?;
        if let Some(e) = missing_company {
            return Err(e);
        }
        match current.patched(&patch, now()) {
            None => Ok(current),
            Some(next) => self.write_deal(next).await,
        }
    }

    async fn move_deal(
        &mut self,
        id: DealId,
        expected: Version,
        to: &StageKey,
        lost_reason: Option<LostReason>,
    ) -> Result<Deal> {
        let current = self.lock_deal(id).await?;
        crate::store::shared::check_version(Entity::Deal, id, expected, current.version)?;
        let pipeline = self.pipeline(&current.pipeline)?;
        let next = current.moved(&pipeline, to, lost_reason, now())?;
        self.write_deal(next).await
    }

    async fn reopen_deal(&mut self, id: DealId, expected: Version, to: &StageKey) -> Result<Deal> {
        let current = self.lock_deal(id).await?;
        crate::store::shared::check_version(Entity::Deal, id, expected, current.version)?;
        let pipeline = self.pipeline(&current.pipeline)?;
        let next = current.reopened(&pipeline, to, now())?;
        self.write_deal(next).await
    }

    async fn delete_deal(&mut self, id: DealId) -> Result<bool> {
        match self.lock_deal_with(id, LOCK_DEAL_FOR_DELETE).await {
            Ok(_) => {}
            Err(Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e),
        }
        let (tenant, deal, at) = (self.tenant_uuid(), id.as_uuid(), now());
        let params: [&(dyn ToSql + Sync); 2] = [&tenant, &deal];
        let timed: [&(dyn ToSql + Sync); 3] = [&tenant, &deal, &at];
        // The deal is locked (so no task can be linked to it meanwhile),
        // and begun: all three go in one round trip.
        let result = self
            .raw_query_all(
                &[
                    (UNLINK_ACTIVITIES, &params),
                    (UNLINK_TASKS, &timed),
                    (DELETE_DEAL, &params),
                ],
                false,
            )
            .await;
        let rows = self.settle(result)?;
        Ok(rows.get(2).is_some_and(|deleted| !deleted.is_empty()))
    }

    async fn list_deals_for_contact(
        &mut self,
        contact: ContactId,
        page: &PageRequest,
    ) -> Result<Page<Deal>> {
        let tenant = self.tenant_uuid();
        let list = CursorList::deals_of_contact(contact);
        let contact = contact.as_uuid();
        self.deal_page(
            list,
            (DEALS_FOR_CONTACT, DEALS_FOR_CONTACT_AFTER),
            &[&tenant, &contact],
            page,
        )
        .await
    }

    async fn first_deal_pages(
        &mut self,
        contacts: &[ContactId],
        limit: u32,
    ) -> Result<Vec<Page<Deal>>> {
        self.first_pages(
            DEALS_FIRST_PAGES,
            contacts,
            limit,
            DEAL_COLUMNS.len(),
            rows::deal,
            CursorList::deals_of_contact,
            |d: &Deal| (d.created_at.timestamp_micros(), d.id.as_uuid()),
        )
        .await
    }

    async fn list_deals_in_stage(
        &mut self,
        pipeline: &PipelineKey,
        stage: &StageKey,
        page: &PageRequest,
    ) -> Result<Page<Deal>> {
        crate::store::deals::check_stage_of(&self.pipelines, pipeline, stage)?;
        let tenant = self.tenant_uuid();
        self.deal_page(
            CursorList::deals_in_stage(pipeline, stage),
            (DEALS_IN_STAGE, DEALS_IN_STAGE_AFTER),
            &[&tenant, &pipeline.as_str(), &stage.as_str()],
            page,
        )
        .await
    }

    async fn search_deals(&mut self, q: &DealQuery) -> Result<Page<Deal>> {
        q.checked(&self.pipelines)?;
        let limit = q.page.checked_limit()?;
        let list = CursorList::deal_search(q);
        let after: Option<TimeIdKey> = q.page.position(list)?;
        let (sql, b) = deal_search_sql(self.tenant, q, limit, after)?;
        let rows = self.query(&sql, &b.params()).await?;
        let items = rows::all(&rows, rows::deal)?;
        Ok(Page::from_overfetch(items, limit, list, |d: &Deal| {
            (d.created_at.timestamp_micros(), d.id.as_uuid())
        }))
    }

    async fn pipeline_summary(&mut self, pipeline: &PipelineKey) -> Result<PipelineSummary> {
        self.pipeline_summary_of(pipeline, PIPELINE_TOTALS, &[])
            .await
    }
}

impl PgTransaction {
    /// [`DealsTx::pipeline_summary`] from `totals`, a statement like
    /// [`PIPELINE_TOTALS`] (stage, currency, count and sum per stage and
    /// currency) taking the tenant, the pipeline, then `filters`.
    pub(super) async fn pipeline_summary_of(
        &mut self,
        pipeline: &PipelineKey,
        totals_sql: &str,
        filters: &Params<'_>,
    ) -> Result<PipelineSummary> {
        let def = self.pipeline(pipeline)?;
        let tenant = self.tenant_uuid();
        let key = pipeline.as_str();
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&tenant, &key];
        params.extend_from_slice(filters);
        let rows = self.query(totals_sql, &params).await?;
        let mut totals = Vec::with_capacity(rows.len());
        for row in &rows {
            let stage: String = row.try_get(0).map_err(error::db)?;
            let currency: String = row.try_get(1).map_err(error::db)?;
            let count: i64 = row.try_get(2).map_err(error::db)?;
            let sum: Decimal = row.try_get(3).map_err(error::db)?;
            let invalid = |e: FieldError| {
                Error::backend(error::InvalidRow {
                    table: "deals",
                    id: format!("(stage {stage}, currency {currency})"),
                    errors: vec![e],
                })
            };
            let stage_key = StageKey::parse(&stage).map_err(invalid)?;
            let currency = Currency::parse(&currency).map_err(invalid)?;
            totals.push((stage_key, currency, count.unsigned_abs(), sum));
        }
        Ok(PipelineSummary::from_totals(&def, totals))
    }
}

/// The SQL of deal search `q` for `tenant`, fetching `limit + 1` rows
/// after the cursor's position `after`, newest first; every value a bound
/// parameter.
fn deal_search_sql(
    tenant: TenantId,
    q: &DealQuery,
    limit: usize,
    after: Option<TimeIdKey>,
) -> Result<(String, Binder)> {
    let mut b = Binder::default();
    let t = b.bind(tenant.as_uuid());
    let mut sql = format!(
        "SELECT {} FROM deals d WHERE d.tenant_id = {t}",
        deal_select!()
    );
    if let Some(o) = &q.owner {
        sql += &format!(" AND d.owner_id = {}", b.bind(o.as_str().to_string()));
    }
    if let Some(c) = q.company_id {
        sql += &format!(" AND d.company_id = {}", b.bind(c.as_uuid()));
    }
    if let Some(c) = q.contact_id {
        sql += &format!(" AND d.contact_id = {}", b.bind(c.as_uuid()));
    }
    if let Some(p) = &q.pipeline {
        sql += &format!(" AND d.pipeline = {}", b.bind(p.as_str().to_string()));
    }
    if let Some(s) = &q.stage {
        sql += &format!(" AND d.stage = {}", b.bind(s.as_str().to_string()));
    }
    sql += &tag_filter_sql(&mut b, &t, &q.tags, "deal_id", "d.id");
    if let Some((micros, id)) = after {
        let (at, id) = (b.bind(cursor_time(micros)?), b.bind(id));
        sql += &format!(" AND (d.created_at, d.id) < ({at}, {id})");
    }
    let fetch = b.bind(limit as i64 + 1);
    sql += &format!(" ORDER BY d.created_at DESC, d.id DESC LIMIT {fetch}");
    Ok((sql, b))
}
