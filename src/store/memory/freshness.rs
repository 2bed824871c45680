//! Contact freshness in the in-memory store ([`FreshnessTx`]): one
//! [`Freshness`] per contact beside it, and the stale order as an ordered
//! set walked from the cursor, so a page costs what its size costs.
//! Every write that PostgreSQL keeps freshness current on calls in here,
//! computing the same values with the domain's functions.

use std::ops::Bound;

use async_trait::async_trait;

use super::{MemoryTransaction, TenantData, Undo};
use crate::{
    domain::{
        Contact, ContactId, FreshField, Freshness, FreshnessKey, SignalKind, StaleContact,
        StalePosition, StaleQuery, Timestamp,
    },
    error::{Entity, Error, Result},
    store::{FreshnessTx, Page, freshness::check_fields, shared::now},
};

/// Sets (or removes) a contact's freshness, keeping the stale order;
/// returns the previous one.
pub(super) fn put_fresh(
    data: &mut TenantData,
    id: ContactId,
    value: Option<Freshness>,
) -> Option<Freshness> {
    let old = data.freshness.remove(&id);
    if let Some(o) = &old {
        data.by_freshness.remove(&(o.order_key(), id));
    }
    if let Some(n) = value {
        data.by_freshness.insert((n.order_key(), id));
        data.freshness.insert(id, n);
    }
    old
}

impl MemoryTransaction {
    fn set_fresh(&mut self, id: ContactId, value: Option<Freshness>) -> Result<()> {
        let tenant = self.tenant;
        let old = put_fresh(self.data_mut()?, id, value);
        self.undo.push(Undo::Freshness(tenant, id, old));
        Ok(())
    }

    /// Keeps freshness with a write of contact `id` that replaced `old`
    /// (the new value is stored already): created with the contact,
    /// dropped with it, its email's marks cleared when the address changes
    /// (to another address, or to the erasure placeholder).
    pub(super) fn fresh_follow(&mut self, id: ContactId, old: Option<&Contact>) -> Result<()> {
        let data = self.data()?;
        let next = match (old, data.contacts.get(&id)) {
            (None, Some(n)) => Some(Freshness::new(id, n.created_at)),
            (Some(_), None) => None,
            (Some(o), Some(n)) if email_key(o) != email_key(n) => match data.freshness.get(&id) {
                Some(f) => Some(f.email_changed()),
                None => return Ok(()),
            },
            _ => return Ok(()),
        };
        self.set_fresh(id, next)
    }

    /// An activity (`signal` `None`) or a signal of `contact` at `at`.
    pub(super) fn fresh_engaged(
        &mut self,
        contact: ContactId,
        signal: Option<&SignalKind>,
        at: Timestamp,
    ) -> Result<()> {
        let Some(f) = self.data()?.freshness.get(&contact) else {
            return Ok(());
        };
        let next = f.engaged(signal, at);
        self.set_fresh(contact, Some(next))
    }

    /// Sets `contact`'s last engagement again from the activities and
    /// signals it holds now (an unmerge moved some of them back). For the
    /// loser an unmerge restores, `restore` is `Some`: its verifications
    /// and marks come back as the merge journal kept them (when it kept
    /// them).
    pub(super) fn fresh_recompute(
        &mut self,
        contact: ContactId,
        restore: Option<Option<&Freshness>>,
    ) -> Result<()> {
        let data = self.data()?;
        let Some(current) = data.freshness.get(&contact) else {
            return Ok(());
        };
        let last = data
            .activities_of(contact)
            .map(|a| a.occurred_at)
            .chain(data.signals_of(contact).map(|s| s.occurred_at))
            .max();
        let mut next = match restore {
            Some(Some(kept)) => Freshness {
                contact_id: contact,
                created_at: current.created_at,
                ..kept.clone()
            },
            _ => current.clone(),
        };
        next.last_engaged_at = last;
        if next == *current {
            return Ok(());
        }
        self.set_fresh(contact, Some(next))
    }

    /// The survivor of a merge takes the later engagement of the two.
    pub(super) fn fresh_merge(&mut self, survivor: ContactId, loser: ContactId) -> Result<()> {
        let data = self.data()?;
        let (Some(kept), Some(gone)) = (data.freshness.get(&survivor), data.freshness.get(&loser))
        else {
            return Ok(());
        };
        let next = kept.merged(gone);
        self.set_fresh(survivor, Some(next))
    }
}

/// The caseless key of a contact's email, as PostgreSQL stores it (`None`
/// for an erased contact).
fn email_key(c: &Contact) -> Option<&str> {
    (!c.is_erased()).then(|| c.email.normalized())
}

#[async_trait]
impl FreshnessTx for MemoryTransaction {
    async fn freshness(&mut self, contact: ContactId) -> Result<Option<Freshness>> {
        Ok(self.data()?.freshness.get(&contact).cloned())
    }

    async fn verify_contact(
        &mut self,
        contact: ContactId,
        fields: &[FreshField],
    ) -> Result<Freshness> {
        check_fields(fields)?;
        let current = self
            .data()?
            .freshness
            .get(&contact)
            .ok_or_else(|| Error::not_found(Entity::Contact, contact))?;
        let next = current.verified(fields, now());
        self.set_fresh(contact, Some(next.clone()))?;
        Ok(next)
    }

    async fn stale_contacts(&mut self, query: &StaleQuery) -> Result<Page<StaleContact>> {
        let bounds = query.bounds(now())?;
        let limit = query.page.checked_limit()?;
        let list = query.list();
        let after: Option<StalePosition> = query.page.position(list)?;
        let start = match after.as_ref().and_then(FreshnessKey::of_position) {
            Some((key, id)) => Bound::Excluded((key, id)),
            None => Bound::Unbounded,
        };
        let data = self.data()?;
        let mut items = Vec::with_capacity(limit + 1);
        for (key, id) in data.by_freshness.range((start, Bound::Unbounded)) {
            if bounds.rank_below.is_some_and(|r| key.rank() >= r) {
                break;
            }
            let (Some(contact), Some(freshness)) = (data.contacts.get(id), data.freshness.get(id))
            else {
                continue;
            };
            if contact.is_erased() {
                continue;
            }
            let reasons = freshness.stale_reasons(&bounds);
            if reasons.is_empty() {
                continue;
            }
            items.push(StaleContact {
                contact: contact.clone(),
                freshness: freshness.clone(),
                reasons,
            });
            if items.len() > limit {
                break;
            }
        }
        Ok(Page::from_overfetch(
            items,
            limit,
            list,
            |s: &StaleContact| s.freshness.order_key().position(s.contact.id),
        ))
    }
}
