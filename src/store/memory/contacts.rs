//! Contacts in the in-memory store ([`ContactsTx`]): emails kept unique
//! through the tenant's email index, deletes that take the contact's deals,
//! activities, signals and taggings along, and searches that walk the score
//! or name index when the order allows it.

use std::ops::Bound;

use async_trait::async_trait;
use uuid::Uuid;

use super::{MemoryTransaction, NameKeys, SignalKey, TenantData};
use crate::{
    domain::{
        ActivityId, CompanyDomain, CompanyId, Contact, ContactId, ContactPatch, DealId, Email,
        NewContact, RecordRef, Score, SignalId, Version, caseless_key,
    },
    error::{Entity, Error, Result},
    store::{
        ContactQuery, ContactSort, ContactSortKey, ContactsTx, CursorList, Page, TagFilter,
        shared::{self, now},
    },
};

impl MemoryTransaction {
    /// Fails with `DuplicateEmail` when another contact than `except` holds `email`.
    fn check_email_free(&self, email: &Email, except: Option<ContactId>) -> Result<()> {
        match self.data()?.by_email.get(email.normalized()) {
            Some(existing) if Some(*existing) != except => Err(Error::DuplicateEmail {
                email: email.clone(),
                existing_id: *existing,
            }),
            _ => Ok(()),
        }
    }

    /// `NotFound` unless company `id` exists.
    pub(super) fn check_company(&self, id: Option<CompanyId>) -> Result<()> {
        match id {
            Some(id) => self.company(id).map(drop),
            None => Ok(()),
        }
    }

    /// `new` with the company it is to be linked to: the one it names
    /// (which must exist), else, when this store links by domain, the
    /// company of its email's domain unless that is a free-mail one.
    pub(super) fn linked(&self, mut new: NewContact) -> Result<NewContact> {
        self.check_company(new.company_id)?;
        if new.company_id.is_none() && self.company_linking {
            let data = self.data()?;
            new.company_id = CompanyDomain::of_email(&new.email)
                .filter(|d| !d.is_free_mail())
                .and_then(|d| data.companies_by_domain.get(d.as_str()).copied());
        }
        Ok(new)
    }
}

#[async_trait]
impl ContactsTx for MemoryTransaction {
    async fn create_contact(&mut self, new: NewContact) -> Result<Contact> {
        let new = self.linked(new.checked()?)?;
        self.check_email_free(&new.email, None)?;
        let contact = Contact::create(self.tenant, new, now());
        self.set_contact(contact.id, Some(contact.clone()))?;
        Ok(contact)
    }

    async fn get_contact(&mut self, id: ContactId) -> Result<Option<Contact>> {
        Ok(self.data()?.contacts.get(&id).cloned())
    }

    async fn get_contact_by_email(&mut self, email: &Email) -> Result<Option<Contact>> {
        let data = self.data()?;
        Ok(data
            .by_email
            .get(email.normalized())
            .and_then(|id| data.contacts.get(id))
            .cloned())
    }

    async fn update_contact(
        &mut self,
        id: ContactId,
        expected: Version,
        patch: ContactPatch,
    ) -> Result<Contact> {
        let current = self.contact(id)?.clone();
        shared::check_version(Entity::Contact, id, expected, current.version)?;
        if let Some(email) = &patch.email {
            self.check_email_free(email, Some(id))?;
        }
        if let Some(company) = patch.company_id {
            self.check_company(company)?;
        }
        match current.patched(&patch, now()) {
            None => Ok(current),
            Some(next) => {
                self.set_contact(id, Some(next.clone()))?;
                Ok(next)
            }
        }
    }

    async fn deactivate_contact(&mut self, id: ContactId) -> Result<Contact> {
        let current = self.contact(id)?.clone();
        match shared::deactivated(&current, now()) {
            None => Ok(current),
            Some(next) => {
                self.set_contact(id, Some(next.clone()))?;
                Ok(next)
            }
        }
    }

    async fn delete_contact(&mut self, id: ContactId) -> Result<bool> {
        let data = self.data()?;
        if !data.contacts.contains_key(&id) {
            return Ok(false);
        }
        let deals: Vec<DealId> = data
            .deals_by_contact
            .range(
                (id, i64::MIN, DealId::from_uuid(Uuid::nil()))
                    ..=(id, i64::MAX, DealId::from_uuid(Uuid::max())),
            )
            .map(|k| k.2)
            .collect();
        let activities: Vec<ActivityId> = data
            .timeline
            .range(
                (id, i64::MIN, ActivityId::from_uuid(Uuid::nil()))
                    ..=(id, i64::MAX, ActivityId::from_uuid(Uuid::max())),
            )
            .map(|k| k.2)
            .collect();
        let signals: Vec<SignalKey> = data
            .signals
            .range(
                (id, i64::MIN, SignalId::from_uuid(Uuid::nil()))
                    ..=(id, i64::MAX, SignalId::from_uuid(Uuid::max())),
            )
            .map(|(k, _)| *k)
            .collect();
        self.atomic(|tx| {
            // The contact's tasks, and those of its deals, are unlinked,
            // never deleted.
            tx.unlink_tasks(|c| c == id, |d| deals.contains(&d), now())?;
            for a in activities {
                tx.set_activity(a, None)?;
            }
            for s in signals {
                tx.set_signal(s, None)?;
            }
            for d in deals {
                tx.detach_all_from(RecordRef::Deal(d))?;
                tx.set_deal(d, None)?;
            }
            tx.detach_all_from(RecordRef::Contact(id))?;
            tx.set_contact(id, None)
        })?;
        Ok(true)
    }

    async fn search_contacts(&mut self, q: &ContactQuery) -> Result<Page<Contact>> {
        let q = &*q.checked()?;
        let limit = q.page.checked_limit()?;
        let after: Option<ContactSortKey> = q.page.position(CursorList::contacts(q))?;
        let data = self.data()?;
        let desc = q.sort.is_descending();
        let past_cursor = |key: &ContactSortKey| match &after {
            None => true,
            Some(a) if desc => key < a,
            Some(a) => key > a,
        };
        let matching = |c: &&Contact| {
            matches(q, c, data.keys.get(&c.id)) && passes_tag_filter(data, &q.tags, c.id)
        };
        let items: Vec<Contact> = match q.sort {
            ContactSort::ScoreAsc | ContactSort::ScoreDesc => {
                // Walk the score index in order; stop once the page is full.
                let iter: Box<dyn Iterator<Item = &(Score, ContactId)>> = if desc {
                    Box::new(data.by_score.iter().rev())
                } else {
                    Box::new(data.by_score.iter())
                };
                iter.filter_map(|(_, id)| data.contacts.get(id))
                    .filter(|c| past_cursor(&ContactSortKey::of(q.sort, c)))
                    .filter(matching)
                    .take(limit + 1)
                    .cloned()
                    .collect()
            }
            ContactSort::NameAsc | ContactSort::NameDesc => {
                // Walk the name index from the cursor on.
                let from = match &after {
                    Some(ContactSortKey::Name(last, first, id)) => {
                        Bound::Excluded((last.clone(), first.clone(), ContactId::from_uuid(*id)))
                    }
                    _ => Bound::Unbounded,
                };
                let iter: Box<dyn Iterator<Item = &(String, String, ContactId)>> = if desc {
                    Box::new(data.by_name.range((Bound::Unbounded, from)).rev())
                } else {
                    Box::new(data.by_name.range((from, Bound::Unbounded)))
                };
                iter.filter_map(|(_, _, id)| data.contacts.get(id))
                    .filter(matching)
                    .take(limit + 1)
                    .cloned()
                    .collect()
            }
            _ => {
                let mut keyed: Vec<(ContactSortKey, &Contact)> = data
                    .contacts
                    .values()
                    .filter(matching)
                    .map(|c| (ContactSortKey::of(q.sort, c), c))
                    .filter(|(k, _)| past_cursor(k))
                    .collect();
                keyed.sort_by(|a, b| if desc { b.0.cmp(&a.0) } else { a.0.cmp(&b.0) });
                keyed
                    .into_iter()
                    .take(limit + 1)
                    .map(|(_, c)| c.clone())
                    .collect()
            }
        };
        Ok(Page::from_overfetch(
            items,
            limit,
            CursorList::contacts(q),
            |c| match q.sort {
                ContactSort::NameAsc | ContactSort::NameDesc => match data.keys.get(&c.id) {
                    Some(k) => {
                        ContactSortKey::Name(k.last.clone(), k.first.clone(), c.id.as_uuid())
                    }
                    None => ContactSortKey::of(q.sort, c),
                },
                _ => ContactSortKey::of(q.sort, c),
            },
        ))
    }
}

/// Whether contact `id` passes the tag filter of a search (by the tags it
/// carries in `data`).
fn passes_tag_filter(data: &TenantData, tags: &TagFilter, id: ContactId) -> bool {
    tags.is_empty() || tags.matches(&data.carried_tags(RecordRef::Contact(id)))
}

/// Whether contact `c` (with its caseless name `keys`) passes the filters of `q`.
fn matches(q: &ContactQuery, c: &Contact, keys: Option<&NameKeys>) -> bool {
    let starts = |key: Option<&str>, prefix: &Option<String>| {
        prefix
            .as_ref()
            .is_none_or(|p| key.is_some_and(|k| k.starts_with(&caseless_key(p))))
    };
    starts(Some(c.email.normalized()), &q.email_prefix)
        && (starts(keys.map(|k| k.first.as_str()), &q.name_prefix)
            || starts(keys.map(|k| k.last.as_str()), &q.name_prefix))
        && starts(keys.and_then(|k| k.company.as_deref()), &q.company_prefix)
        && q.owner.as_ref().is_none_or(|o| c.owner.as_ref() == Some(o))
        && q.company_id.is_none_or(|id| c.company_id == Some(id))
        && (q.lead_sources.is_empty() || q.lead_sources.contains(&c.lead_source))
        && q.min_score.is_none_or(|m| c.score >= m)
        && q.max_score.is_none_or(|m| c.score <= m)
        && q.active.is_none_or(|a| c.active == a)
        && q.created_from.is_none_or(|t| c.created_at >= t)
        && q.created_until.is_none_or(|t| c.created_at < t)
        && q.updated_from.is_none_or(|t| c.updated_at >= t)
        && q.updated_until.is_none_or(|t| c.updated_at < t)
        && q.metadata_contains
            .as_ref()
            .is_none_or(|m| c.metadata.contains(m))
}
