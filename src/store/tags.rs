//! The tags of a tenant and what carries them ([`TagsTx`], [`TagFilter`]).

use async_trait::async_trait;

#[cfg(doc)]
use crate::error::Error;
use crate::{
    domain::*,
    error::{FieldError, Result, ValidationErrors},
};

/// The tags of the transaction's tenant, attached to contacts, companies
/// and deals. Part of [`Transaction`](crate::Transaction).
///
/// # Contract
///
/// Beside the points on [`Store`](crate::Store):
///
/// - **Names** are unique per tenant compared case-insensitively, by their
///   [`TagName::key`] (the same one-definition rule as emails); a create or
///   rename that would break this returns [`Error::Duplicate`] with the id
///   of the tag holding the name, also when two transactions race for it.
/// - **Attaching** a tag a record already carries, or detaching one it does
///   not, changes nothing and returns `false`. Each attachment and each
///   detachment is recorded in the history (as a `tagging` created or
///   deleted), also the detachments of deleting a tag or a record.
#[async_trait]
pub trait TagsTx: Send {
    /// Creates a tag (version 1).
    ///
    /// Errors: [`Error::Duplicate`] when the tenant has the name in any casing.
    async fn create_tag(&mut self, new: NewTag) -> Result<Tag>;

    /// A tag by id.
    async fn get_tag(&mut self, id: TagId) -> Result<Option<Tag>>;

    /// The tag with this name, in any casing.
    async fn get_tag_by_name(&mut self, name: &TagName) -> Result<Option<Tag>>;

    /// The tenant's tags by name (caseless key, code-point order, then id).
    async fn list_tags(&mut self, page: &PageRequest) -> Result<Page<Tag>>;

    /// Renames or recolours the tag if it is at `expected`.
    ///
    /// Errors: [`Error::NotFound`], [`Error::Conflict`], [`Error::Duplicate`].
    async fn update_tag(&mut self, id: TagId, expected: Version, patch: TagPatch) -> Result<Tag>;

    /// Deletes the tag and detaches it from everything that carries it.
    /// `Ok(false)` when there was no such tag.
    async fn delete_tag(&mut self, id: TagId) -> Result<bool>;

    /// Attaches `tag` to `record`; `Ok(false)` when it already carries it.
    ///
    /// Errors: [`Error::NotFound`] for the tag or the record.
    async fn attach_tag(&mut self, tag: TagId, record: RecordRef) -> Result<bool>;

    /// Detaches `tag` from `record`; `Ok(false)` when it did not carry it
    /// (or either does not exist).
    async fn detach_tag(&mut self, tag: TagId, record: RecordRef) -> Result<bool>;

    /// The tags `record` carries, by name (empty for a record that does not exist).
    async fn tags_of(&mut self, record: RecordRef) -> Result<Vec<Tag>>;

    /// The tags of each of `records`, in the order given: the list
    /// [`tags_of`](Self::tags_of) gives for it (empty for a record that does
    /// not exist; a record listed twice gets its list twice). At most
    /// [`MAX_GET_MANY`](crate::store::MAX_GET_MANY) records. For pages of
    /// records (the exports): on PostgreSQL one statement per kind of record
    /// listed, where a `tags_of` per record takes one each. The default
    /// calls `tags_of` for each record.
    ///
    /// Errors: [`Error::Validation`](crate::Error::Validation) on `records`
    /// when it lists more.
    async fn tags_of_many(&mut self, records: &[RecordRef]) -> Result<Vec<Vec<Tag>>> {
        crate::store::check_get_many("records", records.len())?;
        let mut out = Vec::with_capacity(records.len());
        for record in records {
            out.push(self.tags_of(*record).await?);
        }
        Ok(out)
    }
}

/// The most tags one side of a [`TagFilter`] may name.
pub const MAX_FILTER_TAGS: usize = 100;

/// A search filter on tags: records carrying at least one of `any_of`
/// (when it is not empty), every one of `all_of`, and none of `none_of`.
/// Empty sides filter nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TagFilter {
    /// At least one of these.
    pub any_of: Vec<TagId>,
    /// Every one of these.
    pub all_of: Vec<TagId>,
    /// None of these.
    pub none_of: Vec<TagId>,
}

impl TagFilter {
    /// No filter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records carrying at least one of `tags`.
    pub fn any_of(mut self, tags: impl IntoIterator<Item = TagId>) -> Self {
        self.any_of = tags.into_iter().collect();
        self
    }

    /// Records carrying every one of `tags`.
    pub fn all_of(mut self, tags: impl IntoIterator<Item = TagId>) -> Self {
        self.all_of = tags.into_iter().collect();
        self
    }

    /// Records carrying none of `tags`.
    pub fn none_of(mut self, tags: impl IntoIterator<Item = TagId>) -> Self {
        self.none_of = tags.into_iter().collect();
        self
    }

    /// True when it filters nothing.
    pub fn is_empty(&self) -> bool {
        self.any_of.is_empty() && self.all_of.is_empty() && self.none_of.is_empty()
    }

    /// True when a record carrying `carried` passes.
    pub fn matches(&self, carried: &std::collections::BTreeSet<TagId>) -> bool {
        (self.any_of.is_empty() || self.any_of.iter().any(|t| carried.contains(t)))
            && self.all_of.iter().all(|t| carried.contains(t))
            && !self.none_of.iter().any(|t| carried.contains(t))
    }

    /// Each side sorted and without repeats (the same filter in any order
    /// is the same list for cursors).
    pub fn scope_key(&self) -> [Vec<TagId>; 3] {
        let norm = |v: &[TagId]| {
            let mut v = v.to_vec();
            v.sort_unstable();
            v.dedup();
            v
        };
        [norm(&self.any_of), norm(&self.all_of), norm(&self.none_of)]
    }

    /// Pushes an error for each side naming more than [`MAX_FILTER_TAGS`] tags.
    pub(crate) fn check_into(&self, errors: &mut ValidationErrors) {
        for (field, side) in [
            ("tags.any_of", &self.any_of),
            ("tags.all_of", &self.all_of),
            ("tags.none_of", &self.none_of),
        ] {
            if side.len() > MAX_FILTER_TAGS {
                errors.push(FieldError::new(
                    field,
                    "too_large",
                    format!(
                        "may name at most {MAX_FILTER_TAGS} tags, got {}",
                        side.len()
                    ),
                ));
            }
        }
    }
}
