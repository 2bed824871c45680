//! Deals in the in-memory store ([`DealsTx`]): the stage machine of the
//! domain applied to records kept with two indexes, by contact and by stage.

use std::collections::BTreeMap;

use async_trait::async_trait;
use rust_decimal::Decimal;
use uuid::Uuid;

use super::{MemoryTransaction, page_desc};
use crate::{
    domain::{
        Activity, ActivityId, ContactId, Currency, Deal, DealId, DealPatch, LostReason, NewDeal,
        PipelineKey, RecordRef, StageKey, Version,
    },
    error::{Entity, Result},
    store::{
        CursorList, DealQuery, DealsTx, Page, PageRequest, PipelineSummary, TimeIdKey,
        shared::{self, now},
    },
};

impl MemoryTransaction {
    /// Writes `next` over the deal of its id and returns it.
    fn replace_deal(&mut self, next: Deal) -> Result<Deal> {
        self.set_deal(next.id, Some(next.clone()))?;
        Ok(next)
    }
}

#[async_trait]
impl DealsTx for MemoryTransaction {
    async fn create_deal(&mut self, new: NewDeal) -> Result<Deal> {
        let new = new.checked()?;
        let pipeline = shared::pipeline(&self.pipelines, &new.pipeline)?;
        self.contact(new.contact_id)?;
        self.check_company(new.company_id)?;
        let deal = Deal::create(self.tenant, new, &pipeline, now())?;
        self.replace_deal(deal)
    }

    async fn get_deal(&mut self, id: DealId) -> Result<Option<Deal>> {
        Ok(self.data()?.deals.get(&id).cloned())
    }

    async fn update_deal(
        &mut self,
        id: DealId,
        expected: Version,
        patch: DealPatch,
    ) -> Result<Deal> {
        let patch = patch.checked()?;
        let current = self.deal(id)?.clone();
        shared::check_version(Entity::Deal, id, expected, current.version)?;
        if let Some(company) = patch.company_id {
            self.check_company(company)?;
        }
        match current.patched(&patch, now()) {
            None => Ok(current),
            Some(next) => self.replace_deal(next),
        }
    }

    async fn move_deal(
        &mut self,
        id: DealId,
        expected: Version,
        to: &StageKey,
        lost_reason: Option<LostReason>,
    ) -> Result<Deal> {
        let current = self.deal(id)?.clone();
        shared::check_version(Entity::Deal, id, expected, current.version)?;
        let pipeline = shared::pipeline(&self.pipelines, &current.pipeline)?;
        let next = current.moved(&pipeline, to, lost_reason, now())?;
        self.replace_deal(next)
    }

    async fn reopen_deal(&mut self, id: DealId, expected: Version, to: &StageKey) -> Result<Deal> {
        let current = self.deal(id)?.clone();
        shared::check_version(Entity::Deal, id, expected, current.version)?;
        let pipeline = shared::pipeline(&self.pipelines, &current.pipeline)?;
        let next = current.reopened(&pipeline, to, now())?;
        self.replace_deal(next)
    }

    async fn delete_deal(&mut self, id: DealId) -> Result<bool> {
        let Some(deal) = self.data()?.deals.get(&id).cloned() else {
            return Ok(false);
        };
        let c = deal.contact_id;
        let data = self.data()?;
        let linked: Vec<Activity> = data
            .timeline
            .range(
                (c, i64::MIN, ActivityId::from_uuid(Uuid::nil()))
                    ..=(c, i64::MAX, ActivityId::from_uuid(Uuid::max())),
            )
            .filter_map(|k| data.activities.get(&k.2))
            .filter(|a| a.deal_id == Some(id))
            .cloned()
            .collect();
        self.atomic(|tx| {
            for mut a in linked {
                a.deal_id = None;
                tx.set_activity(a.id, Some(a))?;
            }
            // The deal's tasks are unlinked, never deleted.
            tx.unlink_tasks(|_| false, |d| d == id, now())?;
            tx.detach_all_from(RecordRef::Deal(id))?;
            tx.set_deal(id, None)
        })?;
        Ok(true)
    }

    async fn list_deals_for_contact(
        &mut self,
        contact: ContactId,
        page: &PageRequest,
    ) -> Result<Page<Deal>> {
        let limit = page.checked_limit()?;
        let after: Option<TimeIdKey> = page.position(CursorList::deals_of_contact(contact))?;
        let data = self.data()?;
        let items = page_desc(
            &data.deals_by_contact,
            (contact, i64::MIN, DealId::from_uuid(Uuid::nil())),
            (contact, i64::MAX, DealId::from_uuid(Uuid::max())),
            after.map(|(t, id)| (contact, t, DealId::from_uuid(id))),
            limit,
            |k| data.deals.get(&k.2).cloned(),
        );
        Ok(Page::from_overfetch(
            items,
            limit,
            CursorList::deals_of_contact(contact),
            |d: &Deal| (d.created_at.timestamp_micros(), d.id.as_uuid()),
        ))
    }

    async fn list_deals_in_stage(
        &mut self,
        pipeline: &PipelineKey,
        stage: &StageKey,
        page: &PageRequest,
    ) -> Result<Page<Deal>> {
        crate::store::deals::check_stage_of(&self.pipelines, pipeline, stage)?;
        let limit = page.checked_limit()?;
        let after: Option<TimeIdKey> =
            page.position(CursorList::deals_in_stage(pipeline, stage))?;
        let data = self.data()?;
        let key = |t: i64, id: Uuid| (pipeline.clone(), stage.clone(), t, DealId::from_uuid(id));
        let items = page_desc(
            &data.deals_by_stage,
            key(i64::MIN, Uuid::nil()),
            key(i64::MAX, Uuid::max()),
            after.map(|(t, id)| key(t, id)),
            limit,
            |k| data.deals.get(&k.3).cloned(),
        );
        Ok(Page::from_overfetch(
            items,
            limit,
            CursorList::deals_in_stage(pipeline, stage),
            |d: &Deal| (d.created_at.timestamp_micros(), d.id.as_uuid()),
        ))
    }

    async fn search_deals(&mut self, q: &DealQuery) -> Result<Page<Deal>> {
        q.checked(&self.pipelines)?;
        let limit = q.page.checked_limit()?;
        let list = CursorList::deal_search(q);
        let after: Option<TimeIdKey> = q.page.position(list)?;
        let data = self.data()?;
        let mut keyed: Vec<(TimeIdKey, &Deal)> = data
            .deals
            .values()
            .filter(|d| {
                q.owner.as_ref().is_none_or(|o| d.owner.as_ref() == Some(o))
                    && q.company_id.is_none_or(|c| d.company_id == Some(c))
                    && q.contact_id.is_none_or(|c| d.contact_id == c)
                    && q.pipeline.as_ref().is_none_or(|p| &d.pipeline == p)
                    && q.stage.as_ref().is_none_or(|s| &d.stage == s)
                    && (q.tags.is_empty()
                        || q.tags.matches(&data.carried_tags(RecordRef::Deal(d.id))))
            })
            .map(|d| ((d.created_at.timestamp_micros(), d.id.as_uuid()), d))
            .filter(|(k, _)| after.is_none_or(|a| *k < a))
            .collect();
        keyed.sort_by_key(|k| std::cmp::Reverse(k.0));
        let items: Vec<Deal> = keyed
            .into_iter()
            .take(limit + 1)
            .map(|(_, d)| d.clone())
            .collect();
        Ok(Page::from_overfetch(items, limit, list, |d: &Deal| {
            (d.created_at.timestamp_micros(), d.id.as_uuid())
        }))
    }

    async fn pipeline_summary(&mut self, pipeline: &PipelineKey) -> Result<PipelineSummary> {
        self.pipeline_summary_of(pipeline, |_| true)
    }
}

impl MemoryTransaction {
    /// [`DealsTx::pipeline_summary`] over the deals of `pipeline` that
    /// `keep` takes.
    pub(super) fn pipeline_summary_of(
        &self,
        pipeline: &PipelineKey,
        keep: impl Fn(&Deal) -> bool,
    ) -> Result<PipelineSummary> {
        let def = shared::pipeline(&self.pipelines, pipeline)?;
        let mut totals: BTreeMap<(StageKey, Currency), (u64, Decimal)> = BTreeMap::new();
        for d in self
            .data()?
            .deals
            .values()
            .filter(|d| &d.pipeline == pipeline && keep(d))
        {
            let e = totals
                .entry((d.stage.clone(), d.amount.currency()))
                .or_insert((0, Decimal::ZERO));
            e.0 += 1;
            e.1 += d.amount.amount();
        }
        Ok(PipelineSummary::from_totals(
            &def,
            totals.into_iter().map(|((s, c), (n, sum))| (s, c, n, sum)),
        ))
    }
}
