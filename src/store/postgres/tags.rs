//! Tags in the postgres store ([`TagsTx`]).

use async_trait::async_trait;

use super::transaction::PgTransaction;
use crate::{
    domain::*,
    error::{Error, Result},
    store::{Page, PageRequest, TagsTx},
};

fn not_yet() -> Error {
    Error::backend("not implemented yet")
}

#[async_trait]
impl TagsTx for PgTransaction {
    async fn create_tag(&mut self, new: NewTag) -> Result<Tag> {
        let _ = (new,);
        Err(not_yet())
    }

    async fn get_tag(&mut self, id: TagId) -> Result<Option<Tag>> {
        let _ = (id,);
        Err(not_yet())
    }

    async fn get_tag_by_name(&mut self, name: &TagName) -> Result<Option<Tag>> {
        let _ = (name,);
        Err(not_yet())
    }

    async fn list_tags(&mut self, page: &PageRequest) -> Result<Page<Tag>> {
        let _ = (page,);
        Err(not_yet())
    }

    async fn update_tag(&mut self, id: TagId, expected: Version, patch: TagPatch) -> Result<Tag> {
        let _ = (id, expected, patch);
        Err(not_yet())
    }

    async fn delete_tag(&mut self, id: TagId) -> Result<bool> {
        let _ = (id,);
        Err(not_yet())
    }

    async fn attach_tag(&mut self, tag: TagId, record: RecordRef) -> Result<bool> {
        let _ = (tag, record);
        Err(not_yet())
    }

    async fn detach_tag(&mut self, tag: TagId, record: RecordRef) -> Result<bool> {
        let _ = (tag, record);
        Err(not_yet())
    }

    async fn tags_of(&mut self, record: RecordRef) -> Result<Vec<Tag>> {
        let _ = (record,);
        Err(not_yet())
    }
}
