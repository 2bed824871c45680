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

// ---- owners ----

/// Gives the contacts of owner `$2` to owner `$3` (`$4`: now); the
/// history triggers record each change. `REASSIGN_COMPANIES` and
/// `REASSIGN_DEALS` do the same for companies and deals.
const REASSIGN_CONTACTS: &str = "UPDATE contacts SET owner_id = $3, version = version + 1, \
     updated_at = $4 WHERE tenant_id = $1 AND owner_id = $2";
const REASSIGN_COMPANIES: &str = "UPDATE companies SET owner_id = $3, version = version + 1, \
     updated_at = $4 WHERE tenant_id = $1 AND owner_id = $2";
const REASSIGN_DEALS: &str = "UPDATE deals SET owner_id = $3, version = version + 1, \
     updated_at = $4 WHERE tenant_id = $1 AND owner_id = $2";

/// The fixed statements of reassigning owners, for [`super::statements`].
pub(super) const OWNER_STATEMENTS: &[(&str, &str)] =
    super::statements::listed![REASSIGN_CONTACTS, REASSIGN_COMPANIES, REASSIGN_DEALS];

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
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
                [&tenant, &from.as_str(), &to.as_str(), &at];
            if wanted(RecordKind::Contact) {
                moved.contacts = self.execute(REASSIGN_CONTACTS, &params).await?;
            }
            if wanted(RecordKind::Company) {
                moved.companies = self.execute(REASSIGN_COMPANIES, &params).await?;
            }
            if wanted(RecordKind::Deal) {
                moved.deals = self.execute(REASSIGN_DEALS, &params).await?;
            }
            Ok(moved)
        }
        .await;
        self.end_atomic(result).await
    }
}
