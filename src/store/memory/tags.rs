//! Tags in the memory store ([`TagsTx`]): names kept unique through the
//! tenant's index of caseless keys, and taggings kept by record then tag,
//! every attachment and detachment written through `set_tagging` so that
//! the history records it.

use std::ops::Bound;

use async_trait::async_trait;
use uuid::Uuid;

use super::MemoryTransaction;
use crate::{
    domain::*,
    error::{Entity, Error, Result},
    store::{
        CursorList, Page, PageRequest, TagsTx,
        shared::{self, now},
    },
};

impl MemoryTransaction {
    /// Fails with `Duplicate` when another tag than `except` holds `name`
    /// (by its caseless key).
    fn check_tag_name_free(&self, name: &TagName, except: Option<TagId>) -> Result<()> {
        match self.data()?.tags_by_key.get(&name.key()) {
            Some(existing) if Some(*existing) != except => Err(Error::Duplicate {
                entity: Entity::Tag,
                field: "name",
                value: name.as_str().to_string(),
                existing_id: existing.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// Fails with `NotFound` unless `record` exists.
    fn record_exists(&self, record: RecordRef) -> Result<()> {
        match record {
            RecordRef::Contact(id) => self.contact(id).map(drop),
            RecordRef::Company(id) => self.company(id).map(drop),
            RecordRef::Deal(id) => self.deal(id).map(drop),
        }
    }

    /// Detaches every tag `record` carries, recording each detachment:
    /// what deleting the record does to its taggings.
    pub(super) fn detach_all_from(&mut self, record: RecordRef) -> Result<()> {
        let carried = self.data()?.carried_tags(record);
        for tag in carried {
            self.set_tagging((record, tag), None)?;
        }
        Ok(())
    }
}

#[async_trait]
impl TagsTx for MemoryTransaction {
    async fn create_tag(&mut self, new: NewTag) -> Result<Tag> {
        self.check_tag_name_free(&new.name, None)?;
        let tag = Tag::create(self.tenant, new, now());
        self.set_tag(tag.id, Some(tag.clone()))?;
        Ok(tag)
    }

    async fn get_tag(&mut self, id: TagId) -> Result<Option<Tag>> {
        Ok(self.data()?.tags.get(&id).cloned())
    }

    async fn get_tag_by_name(&mut self, name: &TagName) -> Result<Option<Tag>> {
        let data = self.data()?;
        Ok(data
            .tags_by_key
            .get(&name.key())
            .and_then(|id| data.tags.get(id))
            .cloned())
    }

    async fn list_tags(&mut self, page: &PageRequest) -> Result<Page<Tag>> {
        let limit = page.checked_limit()?;
        let after: Option<(String, Uuid)> = page.position(CursorList::Tags)?;
        let data = self.data()?;
        let mut keyed: Vec<((String, Uuid), &Tag)> = data
            .tags
            .values()
            .map(|t| ((t.name.key(), t.id.as_uuid()), t))
            .filter(|(k, _)| after.as_ref().is_none_or(|a| k > a))
            .collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        let items: Vec<Tag> = keyed
            .into_iter()
            .take(limit + 1)
            .map(|(_, t)| t.clone())
            .collect();
        Ok(Page::from_overfetch(items, limit, CursorList::Tags, |t| {
            (t.name.key(), t.id.as_uuid())
        }))
    }

    async fn update_tag(&mut self, id: TagId, expected: Version, patch: TagPatch) -> Result<Tag> {
        let current = self.tag(id)?.clone();
        shared::check_version(Entity::Tag, id, expected, current.version)?;
        if let Some(name) = &patch.name {
            self.check_tag_name_free(name, Some(id))?;
        }
        match current.patched(&patch, now()) {
            None => Ok(current),
            Some(next) => {
                self.set_tag(id, Some(next.clone()))?;
                Ok(next)
            }
        }
    }

    async fn delete_tag(&mut self, id: TagId) -> Result<bool> {
        let data = self.data()?;
        if !data.tags.contains_key(&id) {
            return Ok(false);
        }
        let carriers: Vec<(RecordRef, TagId)> = data
            .taggings
            .keys()
            .filter(|(_, tag)| *tag == id)
            .copied()
            .collect();
        self.atomic(|tx| {
            for key in carriers {
                tx.set_tagging(key, None)?;
            }
            tx.set_tag(id, None)
        })?;
        Ok(true)
    }

    async fn attach_tag(&mut self, tag: TagId, record: RecordRef) -> Result<bool> {
        self.tag(tag)?;
        self.record_exists(record)?;
        if self.data()?.taggings.contains_key(&(record, tag)) {
            return Ok(false);
        }
        let tagging = Tagging {
            id: TaggingId::new(),
            tenant_id: self.tenant,
            tag_id: tag,
            record,
            created_at: now(),
        };
        self.set_tagging((record, tag), Some(tagging))?;
        Ok(true)
    }

    async fn detach_tag(&mut self, tag: TagId, record: RecordRef) -> Result<bool> {
        if !self.data()?.taggings.contains_key(&(record, tag)) {
            return Ok(false);
        }
        self.set_tagging((record, tag), None)?;
        Ok(true)
    }

    async fn tags_of(&mut self, record: RecordRef) -> Result<Vec<Tag>> {
        let data = self.data()?;
        let lo = (record, TagId::from_uuid(Uuid::nil()));
        let hi = (record, TagId::from_uuid(Uuid::max()));
        let mut tags: Vec<Tag> = data
            .taggings
            .range((Bound::Included(lo), Bound::Included(hi)))
            .filter_map(|((_, tag), _)| data.tags.get(tag))
            .cloned()
            .collect();
        tags.sort_by_cached_key(|t| (t.name.key(), t.id));
        Ok(tags)
    }
}
