//! Companies and owners in the postgres store ([`CompaniesTx`], [`OwnersTx`]).

use async_trait::async_trait;

use super::transaction::PgTransaction;
use crate::{
    domain::*,
    error::{Error, Result},
    store::{CompaniesTx, CompanyQuery, OwnersTx, Page, PageRequest, Reassigned},
};

fn not_yet() -> Error {
    Error::backend("not implemented yet")
}

#[async_trait]
impl CompaniesTx for PgTransaction {
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

#[async_trait]
impl OwnersTx for PgTransaction {
    async fn reassign_owner(
        &mut self,
        from: &OwnerId,
        to: &OwnerId,
        kind: Option<RecordKind>,
    ) -> Result<Reassigned> {
        let _ = (from, to, kind);
        Err(not_yet())
    }
}
