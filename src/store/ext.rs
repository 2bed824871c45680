//! One-call conveniences for every [`Store`] ([`StoreExt`]).

use async_trait::async_trait;

use super::{ContactQuery, PipelineSummary};
#[cfg(doc)]
use super::{ContactsTx, DealsTx, TimelineTx};
use super::{Store, Transaction};
use crate::{domain::*, error::Result};

/// Single-operation conveniences for every [`Store`]: each opens a
/// transaction, does one thing and commits.
#[async_trait]
pub trait StoreExt: Store {
    /// This store seen by `tenant`, acting as `ctx`: every operation as one
    /// call ([`Scope`](super::Scope)).
    fn scope(&self, tenant: TenantId, ctx: &Context) -> super::Scope<'_, Self> {
        super::Scope::new(self, tenant, ctx.clone())
    }

    /// See [`ContactsTx::create_contact`].
    async fn create_contact(
        &self,
        tenant: TenantId,
        ctx: &Context,
        new: NewContact,
    ) -> Result<Contact> {
        let mut tx = self.begin(tenant, ctx.clone()).await?;
        let out = tx.create_contact(new).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// See [`ContactsTx::get_contact`].
    async fn get_contact(
        &self,
        tenant: TenantId,
        ctx: &Context,
        id: ContactId,
    ) -> Result<Option<Contact>> {
        let mut tx = self.begin(tenant, ctx.clone()).await?;
        let out = tx.get_contact(id).await?;
        end_read(tx);
        Ok(out)
    }

    /// See [`ContactsTx::get_contact_by_email`].
    async fn get_contact_by_email(
        &self,
        tenant: TenantId,
        ctx: &Context,
        email: &Email,
    ) -> Result<Option<Contact>> {
        let mut tx = self.begin(tenant, ctx.clone()).await?;
        let out = tx.get_contact_by_email(email).await?;
        end_read(tx);
        Ok(out)
    }

    /// See [`ContactsTx::update_contact`].
    async fn update_contact(
        &self,
        tenant: TenantId,
        ctx: &Context,
        id: ContactId,
        expected: Version,
        patch: ContactPatch,
    ) -> Result<Contact> {
        let mut tx = self.begin(tenant, ctx.clone()).await?;
        let out = tx.update_contact(id, expected, patch).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// See [`ContactsTx::search_contacts`].
    async fn search_contacts(
        &self,
        tenant: TenantId,
        ctx: &Context,
        query: &ContactQuery,
    ) -> Result<Page<Contact>> {
        let mut tx = self.begin(tenant, ctx.clone()).await?;
        let out = tx.search_contacts(query).await?;
        end_read(tx);
        Ok(out)
    }

    /// See [`DealsTx::create_deal`].
    async fn create_deal(&self, tenant: TenantId, ctx: &Context, new: NewDeal) -> Result<Deal> {
        let mut tx = self.begin(tenant, ctx.clone()).await?;
        let out = tx.create_deal(new).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// See [`DealsTx::move_deal`].
    async fn move_deal(
        &self,
        tenant: TenantId,
        ctx: &Context,
        id: DealId,
        expected: Version,
        to: &StageKey,
        lost_reason: Option<LostReason>,
    ) -> Result<Deal> {
        let mut tx = self.begin(tenant, ctx.clone()).await?;
        let out = tx.move_deal(id, expected, to, lost_reason).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// See [`TimelineTx::log_activity`].
    async fn log_activity(
        &self,
        tenant: TenantId,
        ctx: &Context,
        new: NewActivity,
    ) -> Result<Activity> {
        let mut tx = self.begin(tenant, ctx.clone()).await?;
        let out = tx.log_activity(new).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// See [`TimelineTx::timeline`].
    async fn timeline(
        &self,
        tenant: TenantId,
        ctx: &Context,
        contact: ContactId,
        page: &PageRequest,
    ) -> Result<Page<Activity>> {
        let mut tx = self.begin(tenant, ctx.clone()).await?;
        let out = tx.timeline(contact, page).await?;
        end_read(tx);
        Ok(out)
    }

    /// See [`DealsTx::pipeline_summary`].
    async fn pipeline_summary(
        &self,
        tenant: TenantId,
        ctx: &Context,
        pipeline: &PipelineKey,
    ) -> Result<PipelineSummary> {
        let mut tx = self.begin(tenant, ctx.clone()).await?;
        let out = tx.pipeline_summary(pipeline).await?;
        end_read(tx);
        Ok(out)
    }
}

impl<T: Store + ?Sized> StoreExt for T {}

/// Ends a transaction that only read. A read has nothing to commit, so the
/// transaction is dropped, which rolls it back: on PostgreSQL the rollback
/// goes out without the caller waiting for its answer, saving a round trip.
fn end_read(tx: Box<dyn Transaction>) {
    drop(tx);
}
