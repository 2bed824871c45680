//! Companies and owners in the memory store ([`CompaniesTx`], [`OwnersTx`]).

use async_trait::async_trait;

use super::MemoryTransaction;
use crate::{
    domain::*,
    error::{Error, Result},
    store::{CompaniesTx, CompanyQuery, OwnersTx, Page, PageRequest, Reassigned},
};

fn not_yet() -> Error {
    Error::backend("not implemented yet")
}

#[async_trait]
impl CompaniesTx for MemoryTransaction {
    async fn create_company(&mut self, new: NewCompany) -> Result<Company> {
        let _ = (new,);
        Err(not_yet())
    }

    async fn get_company(&mut self, id: CompanyId) -> Result<Option<Company>> {
        let _ = (id,);
        Err(not_yet())
    }

    async fn get_company_by_domain(&mut self, domain: &CompanyDomain) -> Result<Option<Company>> {
        let _ = (domain,);
        Err(not_yet())
    }

    async fn update_company(
        &mut self,
        id: CompanyId,
        expected: Version,
        patch: CompanyPatch,
    ) -> Result<Company> {
        let _ = (id, expected, patch);
        Err(not_yet())
    }

    async fn delete_company(&mut self, id: CompanyId) -> Result<bool> {
        let _ = (id,);
        Err(not_yet())
    }

    async fn search_companies(&mut self, query: &CompanyQuery) -> Result<Page<Company>> {
        let _ = (query,);
        Err(not_yet())
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
