//! Companies and owners in the memory store ([`CompaniesTx`], [`OwnersTx`]).
//!
//! Domains are kept unique through the tenant's domain index; deleting a
//! company unlinks its contacts, deals and tasks and detaches its tags in
//! one atomic step; a search filters every company of the tenant and sorts
//! the matches by the query's key.

use async_trait::async_trait;

use uuid::Uuid;

use super::{MemoryTransaction, page_desc};
use crate::{
    domain::*,
    error::{Entity, Error, Result},
    store::{
        CompaniesTx, CompanyQuery, CompanySortKey, CursorList, OwnersTx, Page, PipelineSummary,
        Reassigned, TimeIdKey,
        shared::{self, now},
    },
};

impl MemoryTransaction {
    /// Fails with `Duplicate` when another company than `except` holds `domain`.
    fn check_domain_free(&self, domain: &CompanyDomain, except: Option<CompanyId>) -> Result<()> {
        match self.data()?.companies_by_domain.get(domain.as_str()) {
            Some(existing) if Some(*existing) != except => Err(Error::Duplicate {
                entity: Entity::Company,
                field: "domain",
                value: domain.as_str().to_string(),
                existing_id: existing.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// Links to `to` (`None`: unlinks) the contacts, deals and tasks
    /// linked to company `from`, each a recorded change made at `at`: what
    /// deleting (or merging away) a company does first.
    fn relink_company(
        &mut self,
        from: CompanyId,
        to: Option<CompanyId>,
        at: Timestamp,
    ) -> Result<()> {
        let data = self.data()?;
        let contacts: Vec<Contact> = data
            .contacts
            .values()
            .filter(|c| c.company_id == Some(from))
            .cloned()
            .collect();
        let deals: Vec<Deal> = data
            .deals
            .values()
            .filter(|d| d.company_id == Some(from))
            .cloned()
            .collect();
        let tasks: Vec<Task> = data
            .tasks
            .values()
            .filter(|t| t.company_id == Some(from))
            .cloned()
            .collect();
        for mut c in contacts {
            c.company_id = to;
            c.updated_at = at;
            c.version = c.version.next();
            self.set_contact(c.id, Some(c))?;
        }
        for mut d in deals {
            d.company_id = to;
            d.updated_at = at;
            d.version = d.version.next();
            self.set_deal(d.id, Some(d))?;
        }
        for mut t in tasks {
            t.company_id = to;
            t.updated_at = at;
            t.version = t.version.next();
            self.set_task(t.id, Some(t))?;
        }
        Ok(())
    }
}

#[async_trait]
impl CompaniesTx for MemoryTransaction {
    async fn create_company(&mut self, new: NewCompany) -> Result<Company> {
        let new = new.checked()?;
        if let Some(domain) = &new.domain {
            self.check_domain_free(domain, None)?;
        }
        let company = Company::create(self.tenant, new, now());
        self.set_company(company.id, Some(company.clone()))?;
        Ok(company)
    }

    async fn get_company(&mut self, id: CompanyId) -> Result<Option<Company>> {
        Ok(self.data()?.companies.get(&id).cloned())
    }

    async fn get_company_by_domain(&mut self, domain: &CompanyDomain) -> Result<Option<Company>> {
        let data = self.data()?;
        Ok(data
            .companies_by_domain
            .get(domain.as_str())
            .and_then(|id| data.companies.get(id))
            .cloned())
    }

    async fn update_company(
        &mut self,
        id: CompanyId,
        expected: Version,
        patch: CompanyPatch,
    ) -> Result<Company> {
        let patch = patch.checked()?;
        let current = self.company(id)?.clone();
        shared::check_version(Entity::Company, id, expected, current.version)?;
        if let Some(Some(domain)) = &patch.domain {
            self.check_domain_free(domain, Some(id))?;
        }
        match current.patched(&patch, now()) {
            None => Ok(current),
            Some(next) => {
                self.set_company(id, Some(next.clone()))?;
                Ok(next)
            }
        }
    }

    async fn delete_company(&mut self, id: CompanyId) -> Result<bool> {
        if !self.data()?.companies.contains_key(&id) {
            return Ok(false);
        }
        let at = now();
        self.atomic(|tx| {
            tx.relink_company(id, None, at)?;
            tx.detach_all_from(RecordRef::Company(id))?;
            tx.set_company(id, None)
        })?;
        Ok(true)
    }

    async fn merge_companies(&mut self, survivor: CompanyId, loser: CompanyId) -> Result<Company> {
        self.atomic(|tx| {
            shared::check_company_merge_pair(survivor, loser)?;
            let kept = tx.company(survivor)?.clone();
            let gone = tx.company(loser)?.clone();
            let at = now();
            let merged = shared::merged_company(&kept, &gone, at)?;
            // Every version this merge writes carries its reason.
            let context = tx.context.clone();
            tx.context = with_merge_reason(&context, company_merge_reason(survivor, loser));
            let result = (|| {
                tx.relink_company(loser, Some(survivor), at)?;
                tx.copy_taggings(RecordRef::Company(loser), RecordRef::Company(survivor))?;
                tx.detach_all_from(RecordRef::Company(loser))?;
                // The loser goes first: the survivor may take its domain.
                tx.set_company(loser, None)?;
                match merged {
                    Some(next) => {
                        tx.set_company(survivor, Some(next.clone()))?;
                        Ok(next)
                    }
                    None => Ok(kept),
                }
            })();
            tx.context = context;
            result
        })
    }

    async fn search_companies(&mut self, q: &CompanyQuery) -> Result<Page<Company>> {
        q.checked()?;
        let limit = q.page.checked_limit()?;
        let list = CursorList::companies(q);
        let after: Option<CompanySortKey> = q.page.position(list)?;
        let data = self.data()?;
        let desc = q.sort.is_descending();
        let prefix = q.name_prefix.as_deref().map(caseless_key);
        let mut keyed: Vec<(CompanySortKey, &Company)> = data
            .companies
            .values()
            .filter(|c| {
                prefix
                    .as_ref()
                    .is_none_or(|p| caseless_key(c.name.as_str()).starts_with(p.as_str()))
                    && q.domain
                        .as_ref()
                        .is_none_or(|d| c.domain.as_ref() == Some(d))
                    && q.owner.as_ref().is_none_or(|o| c.owner.as_ref() == Some(o))
                    && (q.tags.is_empty()
                        || q.tags.matches(&data.carried_tags(RecordRef::Company(c.id))))
                    && q.metadata_contains
                        .as_ref()
                        .is_none_or(|m| c.metadata.contains(m))
            })
            .map(|c| (CompanySortKey::of(q.sort, c), c))
            .filter(|(k, _)| match &after {
                None => true,
                Some(a) if desc => k < a,
                Some(a) => k > a,
            })
            .collect();
        keyed.sort_by(|a, b| if desc { b.0.cmp(&a.0) } else { a.0.cmp(&b.0) });
        let items: Vec<(CompanySortKey, Company)> = keyed
            .into_iter()
            .take(limit + 1)
            .map(|(k, c)| (k, c.clone()))
            .collect();
        let page = Page::from_overfetch(items, limit, list, |(key, _)| key.clone());
        Ok(Page {
            items: page.items.into_iter().map(|(_, c)| c).collect(),
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
        let after: Option<TimeIdKey> = page.position(list)?;
        let data = self.data()?;
        let mut items: Vec<Activity> = Vec::new();
        for contact in data
            .contacts
            .values()
            .filter(|c| c.company_id == Some(company))
        {
            let id = contact.id;
            items.extend(page_desc(
                &data.timeline,
                (id, i64::MIN, ActivityId::from_uuid(Uuid::nil())),
                (id, i64::MAX, ActivityId::from_uuid(Uuid::max())),
                after.map(|(t, a)| (id, t, ActivityId::from_uuid(a))),
                limit,
                |k| data.activities.get(&k.2).cloned(),
            ));
        }
        let key = |a: &Activity| (a.occurred_at.timestamp_micros(), a.id.as_uuid());
        items.sort_by_key(|a| std::cmp::Reverse(key(a)));
        items.truncate(limit + 1);
        Ok(Page::from_overfetch(items, limit, list, key))
    }

    async fn list_deals_for_company(
        &mut self,
        company: CompanyId,
        page: &PageRequest,
    ) -> Result<Page<Deal>> {
        let limit = page.checked_limit()?;
        let list = CursorList::deals_of_company(company);
        let after: Option<TimeIdKey> = page.position(list)?;
        let key = |d: &Deal| (d.created_at.timestamp_micros(), d.id.as_uuid());
        let mut items: Vec<Deal> = self
            .data()?
            .deals
            .values()
            .filter(|d| d.company_id == Some(company) && after.is_none_or(|a| key(d) < a))
            .cloned()
            .collect();
        items.sort_by_key(|d| std::cmp::Reverse(key(d)));
        items.truncate(limit + 1);
        Ok(Page::from_overfetch(items, limit, list, key))
    }

    async fn pipeline_summary_for_company(
        &mut self,
        pipeline: &PipelineKey,
        company: CompanyId,
    ) -> Result<PipelineSummary> {
        self.pipeline_summary_of(pipeline, |d| d.company_id == Some(company))
    }
}

// ---- owners ----

#[async_trait]
impl OwnersTx for MemoryTransaction {
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
        let at = crate::store::shared::now();
        let owned = Some(from);
        self.atomic(|tx| {
            if wanted(RecordKind::Contact) {
                let data = tx.data()?;
                let contacts: Vec<Contact> = data
                    .contacts
                    .values()
                    .filter(|c| c.owner.as_ref() == owned)
                    .cloned()
                    .collect();
                for mut c in contacts {
                    c.owner = Some(to.clone());
                    c.updated_at = at;
                    c.version = c.version.next();
                    tx.set_contact(c.id, Some(c))?;
                    moved.contacts += 1;
                }
            }
            if wanted(RecordKind::Company) {
                let data = tx.data()?;
                let companies: Vec<Company> = data
                    .companies
                    .values()
                    .filter(|c| c.owner.as_ref() == owned)
                    .cloned()
                    .collect();
                for mut c in companies {
                    c.owner = Some(to.clone());
                    c.updated_at = at;
                    c.version = c.version.next();
                    tx.set_company(c.id, Some(c))?;
                    moved.companies += 1;
                }
            }
            if wanted(RecordKind::Deal) {
                let data = tx.data()?;
                let deals: Vec<Deal> = data
                    .deals
                    .values()
                    .filter(|d| d.owner.as_ref() == owned)
                    .cloned()
                    .collect();
                for mut d in deals {
                    d.owner = Some(to.clone());
                    d.updated_at = at;
                    d.version = d.version.next();
                    tx.set_deal(d.id, Some(d))?;
                    moved.deals += 1;
                }
            }
            Ok(moved)
        })
    }
}
