//! Deals on their pipelines' stage machines ([`DealsTx`]) and the pipeline
//! summary ([`PipelineSummary`]).

use std::collections::BTreeMap;

use async_trait::async_trait;
use rust_decimal::Decimal;
use serde::Serialize;

#[cfg(doc)]
use crate::error::Error;
use crate::{
    domain::*,
    error::{Result, ValidationErrors},
    store::TagFilter,
};

/// Deals and their pipelines. Part of [`Transaction`](crate::Transaction).
///
/// # Contract
///
/// Beside the points on [`Store`](crate::Store): deals follow their
/// pipeline's stage machine ([`Pipeline::check_move`](crate::domain::Pipeline::check_move));
/// a refused move is [`Error::InvalidTransition`](crate::Error::InvalidTransition).
#[async_trait]
pub trait DealsTx: Send {
    /// Creates a deal for an existing contact, in the pipeline's first open
    /// stage unless the input names an open stage — or a won or lost stage
    /// with [`NewDeal::original_closed_at`] (a deal imported closed: its
    /// `won_at` / `lost_at`). With [`NewDeal::original`], its `created_at`
    /// and `updated_at` are those original times; its history version is
    /// still written now.
    ///
    /// Errors: [`Error::NotFound`] for the contact; [`Error::Validation`]
    /// on `pipeline` for an unknown pipeline, on `stage` for a stage not in
    /// the pipeline or a closed starting stage without a close time, on
    /// `original_closed_at` and `lost_reason` as [`NewDeal::checked`] and
    /// [`Deal::create`] say, on `created_at` / `updated_at` for original
    /// times after the store's clock.
    async fn create_deal(&mut self, new: NewDeal) -> Result<Deal>;

    /// A deal by id.
    async fn get_deal(&mut self, id: DealId) -> Result<Option<Deal>>;

    /// The deals among `ids` that exist, in the order of `ids` (an id
    /// given twice comes once, a missing one is left out): one read for a
    /// batch.
    ///
    /// Errors: [`Error::Validation`] on `ids` for more than
    /// [`MAX_GET_MANY`](crate::store::MAX_GET_MANY) ids.
    async fn get_deals(&mut self, ids: &[DealId]) -> Result<Vec<Deal>> {
        super::check_get_many("ids", ids.len())?;
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for id in ids {
            if seen.insert(*id)
                && let Some(d) = self.get_deal(*id).await?
            {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Applies `patch` if the deal is at `expected`.
    ///
    /// Errors: [`Error::NotFound`], [`Error::Conflict`].
    async fn update_deal(
        &mut self,
        id: DealId,
        expected: Version,
        patch: DealPatch,
    ) -> Result<Deal>;

    /// Moves the deal to stage `to` along the stage machine
    /// ([`Pipeline::check_move`]). A lost stage needs `lost_reason`, and
    /// only a lost stage takes one.
    ///
    /// Errors: [`Error::NotFound`], [`Error::Conflict`],
    /// [`Error::InvalidTransition`]; [`Error::Validation`] on `stage` when
    /// `to` is not a stage of the deal's pipeline.
    async fn move_deal(
        &mut self,
        id: DealId,
        expected: Version,
        to: &StageKey,
        lost_reason: Option<LostReason>,
    ) -> Result<Deal>;

    /// Reopens a closed deal into open stage `to`, clearing `won_at`,
    /// `lost_at` and the lost reason.
    ///
    /// Errors: [`Error::NotFound`], [`Error::Conflict`],
    /// [`Error::InvalidTransition`] when the deal is not closed or `to` is not open.
    async fn reopen_deal(&mut self, id: DealId, expected: Version, to: &StageKey) -> Result<Deal>;

    /// Deletes a deal and unlinks its activities. `Ok(false)` when there was none.
    async fn delete_deal(&mut self, id: DealId) -> Result<bool>;

    /// A contact's deals, newest first (`created_at`, then id, descending).
    async fn list_deals_for_contact(
        &mut self,
        contact: ContactId,
        page: &PageRequest,
    ) -> Result<Page<Deal>>;

    /// The first page of each of `contacts`' deals, in the order given:
    /// what [`list_deals_for_contact`](Self::list_deals_for_contact) gives
    /// it for `PageRequest::first(limit)`, its next cursor included (a
    /// contact listed twice gets its page twice; a contact that does not
    /// exist, an empty page). At most
    /// [`MAX_GET_MANY`](crate::store::MAX_GET_MANY) contacts. For pages of
    /// contacts (the exports): on PostgreSQL one statement, where a list per
    /// contact takes one each. The default lists each contact's deals in
    /// turn.
    ///
    /// Errors: [`Error::Validation`] on `contacts` when it lists more, on
    /// `limit` out of range.
    async fn first_deal_pages(
        &mut self,
        contacts: &[ContactId],
        limit: u32,
    ) -> Result<Vec<Page<Deal>>> {
        let page = PageRequest::first(limit);
        page.checked_limit()?;
        crate::store::check_get_many("contacts", contacts.len())?;
        let mut out = Vec::with_capacity(contacts.len());
        for contact in contacts {
            out.push(self.list_deals_for_contact(*contact, &page).await?);
        }
        Ok(out)
    }

    /// The deals in one stage of a pipeline, newest first. A pipeline the
    /// store does not know, or a stage it does not have, is a validation
    /// error on `pipeline` or `stage` (not an empty page).
    async fn list_deals_in_stage(
        &mut self,
        pipeline: &PipelineKey,
        stage: &StageKey,
        page: &PageRequest,
    ) -> Result<Page<Deal>>;

    /// Deals matching `query` (owner, company, contact, pipeline, stage,
    /// tags; every filter optional, combined with AND), newest first
    /// (`created_at`, then id, descending), one page at a time. A cursor is
    /// taken back only by the same query.
    ///
    /// Errors: [`Error::Validation`] on `pipeline` for an unknown pipeline,
    /// on `stage` for a stage not in the pipeline named, on a `tags` side
    /// naming too many tags, on `limit` or `cursor`.
    async fn search_deals(&mut self, query: &DealQuery) -> Result<Page<Deal>>;

    /// Per stage of `pipeline` (in pipeline order, empty stages included)
    /// and per currency: the number of deals, their sum and their sum
    /// weighted by the stage's win probability. Currencies are never added together.
    ///
    /// Errors: [`Error::Validation`] on `pipeline` for an unknown pipeline.
    async fn pipeline_summary(&mut self, pipeline: &PipelineKey) -> Result<PipelineSummary>;
}

/// One currency's totals in one stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CurrencyTotal {
    /// The currency.
    pub currency: Currency,
    /// How many deals.
    pub count: u64,
    /// The sum of their amounts.
    pub sum: Decimal,
    /// The sum weighted by the stage's win probability.
    pub weighted: Decimal,
}

/// One stage's totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StageSummary {
    /// The stage.
    pub stage: StageKey,
    /// Its label.
    pub label: String,
    /// Open, won or lost.
    pub kind: StageKind,
    /// Its win probability in percent.
    pub win_probability: u8,
    /// Per currency, ordered by currency code; empty when the stage has no deals.
    pub totals: Vec<CurrencyTotal>,
}

/// A pipeline's deals summed per stage and currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PipelineSummary {
    /// The pipeline.
    pub pipeline: PipelineKey,
    /// Its stages in order.
    pub stages: Vec<StageSummary>,
}

impl PipelineSummary {
    /// Builds the summary from per-(stage, currency) counts and sums, as a
    /// backend computes them. Rows of stages not in the pipeline are ignored.
    pub fn from_totals(
        pipeline: &Pipeline,
        totals: impl IntoIterator<Item = (StageKey, Currency, u64, Decimal)>,
    ) -> Self {
        let mut by_stage: BTreeMap<StageKey, BTreeMap<&'static str, (Currency, u64, Decimal)>> =
            BTreeMap::new();
        for (stage, currency, count, sum) in totals {
            let e = by_stage
                .entry(stage)
                .or_default()
                .entry(currency.code())
                .or_insert((currency, 0, Decimal::ZERO));
            e.1 += count;
            e.2 += sum;
        }
        let stages = pipeline
            .stages()
            .iter()
            .map(|def| StageSummary {
                stage: def.key.clone(),
                label: def.label.clone(),
                kind: def.kind,
                win_probability: def.win_probability,
                totals: by_stage
                    .remove(&def.key)
                    .unwrap_or_default()
                    .into_values()
                    .map(|(currency, count, sum)| CurrencyTotal {
                        currency,
                        count,
                        sum,
                        weighted: (sum * Decimal::from(def.win_probability) / Decimal::ONE_HUNDRED)
                            .normalize(),
                    })
                    .collect(),
            })
            .collect();
        PipelineSummary {
            pipeline: pipeline.key().clone(),
            stages,
        }
    }

    /// Totals per currency over the open stages: the open pipeline value and
    /// its weighted forecast.
    pub fn open_totals(&self) -> Vec<CurrencyTotal> {
        let mut acc: BTreeMap<&'static str, CurrencyTotal> = BTreeMap::new();
        for s in self.stages.iter().filter(|s| s.kind == StageKind::Open) {
            for t in &s.totals {
                let e = acc.entry(t.currency.code()).or_insert(CurrencyTotal {
                    currency: t.currency,
                    count: 0,
                    sum: Decimal::ZERO,
                    weighted: Decimal::ZERO,
                });
                e.count += t.count;
                e.sum += t.sum;
                e.weighted += t.weighted;
            }
        }
        acc.into_values().collect()
    }
}

/// Filters and page of a deal search
/// ([`DealsTx::search_deals`]). Every filter is optional; they combine
/// with AND.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct DealQuery {
    /// Owned by.
    pub owner: Option<OwnerId>,
    /// Linked to this company.
    pub company_id: Option<CompanyId>,
    /// Of this contact.
    pub contact_id: Option<ContactId>,
    /// In this pipeline.
    pub pipeline: Option<PipelineKey>,
    /// In a stage of this key (of the pipeline named, if one is).
    pub stage: Option<StageKey>,
    /// Tags carried.
    pub tags: TagFilter,
    /// Page.
    pub page: PageRequest,
}

impl DealQuery {
    /// Every deal, newest first, 50 a page.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only deals owned by `owner`.
    pub fn with_owner(mut self, owner: OwnerId) -> Self {
        self.owner = Some(owner);
        self
    }

    /// Only deals linked to `company`.
    pub fn with_company(mut self, company: CompanyId) -> Self {
        self.company_id = Some(company);
        self
    }

    /// Only the deals of `contact`.
    pub fn with_contact(mut self, contact: ContactId) -> Self {
        self.contact_id = Some(contact);
        self
    }

    /// Only deals in `pipeline`.
    pub fn with_pipeline(mut self, pipeline: PipelineKey) -> Self {
        self.pipeline = Some(pipeline);
        self
    }

    /// Only deals in a stage keyed `stage`.
    pub fn with_stage(mut self, stage: StageKey) -> Self {
        self.stage = Some(stage);
        self
    }

    /// Only deals whose tags pass `tags`.
    pub fn with_tags(mut self, tags: TagFilter) -> Self {
        self.tags = tags;
        self
    }

    /// This page.
    pub fn with_page(mut self, page: PageRequest) -> Self {
        self.page = page;
        self
    }

    /// Why the query cannot be run against `pipelines`, if it cannot: a
    /// pipeline not configured, a stage not in the pipeline named (or, with
    /// none named, in no pipeline), a tag filter side naming more than
    /// [`MAX_FILTER_TAGS`](crate::store::MAX_FILTER_TAGS) tags. Every store
    /// calls it before anything else.
    pub fn checked(&self, pipelines: &Pipelines) -> std::result::Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::new();
        match (&self.pipeline, &self.stage) {
            (Some(key), Some(stage)) => {
                if let Err(e) = check_stage_of(pipelines, key, stage) {
                    for e in e {
                        errors.push(e);
                    }
                }
            }
            (Some(key), None) => {
                errors.check(pipelines.require("pipeline", key));
            }
            (None, Some(stage)) if !pipelines.iter().any(|p| p.stage(stage).is_some()) => {
                errors.push(crate::error::FieldError::new(
                    "stage",
                    "unknown_value",
                    format!("no pipeline has a stage {stage}"),
                ));
            }
            (None, _) => {}
        }
        self.tags.check_into(&mut errors);
        errors.finish(|| ())
    }
}

/// Checks that `pipeline` is one the store knows and `stage` one of its
/// stages: a validation error on `pipeline`, or on `stage`, otherwise
/// (what [`DealsTx::list_deals_in_stage`] and a [`DealQuery`] with both
/// check before reading).
pub(crate) fn check_stage_of(
    pipelines: &Pipelines,
    pipeline: &PipelineKey,
    stage: &StageKey,
) -> std::result::Result<(), ValidationErrors> {
    let mut errors = ValidationErrors::new();
    if let Some(p) = errors.check(pipelines.require("pipeline", pipeline)) {
        errors.check(p.require_stage("stage", stage));
    }
    errors.finish(|| ())
}

impl CursorList {
    /// [`DealsTx::search_deals`] of one query (its page aside).
    pub fn deal_search(q: &DealQuery) -> ListScope {
        CursorList::DealSearch.scoped(&(
            q.owner.as_ref().map(|o| o.as_str()),
            q.company_id,
            q.contact_id,
            &q.pipeline,
            &q.stage,
            q.tags.scope_key(),
        ))
    }
}
