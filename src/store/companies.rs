//! The companies of a tenant ([`CompaniesTx`], with [`CompanyQuery`]) and
//! reassigning records between owners ([`OwnersTx`]).

use async_trait::async_trait;

#[cfg(doc)]
use crate::error::Error;
use crate::{
    domain::*,
    error::{FieldError, Result, ValidationErrors},
    store::{MAX_PREFIX_CHARS, PipelineSummary, TagFilter},
};

/// The companies of the transaction's tenant. Part of [`Transaction`](crate::Transaction).
///
/// # Contract
///
/// Beside the points on [`Store`](crate::Store):
///
/// - **Domains** are unique per tenant when present, compared as
///   [`CompanyDomain`] normalises them (the one definition, on every
///   backend); a create or update that would break this returns
///   [`Error::Duplicate`] with the id of the company holding the domain,
///   also when two transactions race for it.
/// - **Linking.** Contacts and deals link to a company through their
///   `company_id`; a link to a company that does not exist is
///   [`Error::NotFound`]. A store that links by email domain (the default)
///   links a new contact without a company to the company whose domain is
///   its email's, unless the domain is a free-mail one
///   ([`CompanyDomain::is_free_mail`]).
/// - **Deleting a company** unlinks its contacts, deals and tasks (each a
///   recorded change of that record) and never deletes them.
#[async_trait]
pub trait CompaniesTx: Send {
    /// Creates a company (version 1). With [`NewCompany::original`], its
    /// `created_at` and `updated_at` are those original times; its history
    /// version is still written now.
    ///
    /// Errors: [`Error::Duplicate`] when another company has the domain;
    /// [`Error::Validation`] on `created_at` / `updated_at` for original
    /// times after the store's clock.
    async fn create_company(&mut self, new: NewCompany) -> Result<Company>;

    /// A company by id.
    async fn get_company(&mut self, id: CompanyId) -> Result<Option<Company>>;

    /// The company with this domain.
    async fn get_company_by_domain(&mut self, domain: &CompanyDomain) -> Result<Option<Company>>;

    /// Applies `patch` if the company is at `expected`.
    ///
    /// Errors: [`Error::NotFound`], [`Error::Conflict`], [`Error::Duplicate`].
    async fn update_company(
        &mut self,
        id: CompanyId,
        expected: Version,
        patch: CompanyPatch,
    ) -> Result<Company>;

    /// Deletes the company after unlinking its contacts, deals and tasks.
    /// `Ok(false)` when there was no such company.
    async fn delete_company(&mut self, id: CompanyId) -> Result<bool>;

    /// Merges company `loser` into `survivor`: the loser's contacts, deals
    /// and tasks link to the survivor (each a recorded change of that
    /// record), its tags move to the survivor (a tag both carry stays
    /// once), the survivor fills its blanks from the loser's values
    /// ([`Company::merged_with`]: the name and every value it holds stay),
    /// and the loser is deleted. Every version the merge writes records
    /// the reason `merged company <loser> into <survivor>`
    /// ([`crate::bulk::company_merge_reason`], after the context's own
    /// reason, if any). Returns the survivor.
    ///
    /// A record linked to the loser by a transaction that commits before
    /// the merge moves with the others; one linked after it finds the
    /// loser gone ([`Error::NotFound`]): nothing stays linked to a deleted
    /// company.
    ///
    /// Errors: [`Error::NotFound`] naming the survivor when it is missing,
    /// else the loser when it is; [`Error::Validation`] on `loser` when it
    /// is the survivor, on `metadata` when the merged custom fields are
    /// too large.
    async fn merge_companies(&mut self, survivor: CompanyId, loser: CompanyId) -> Result<Company>;

    /// Companies matching `query`, in its order, one page at a time.
    async fn search_companies(&mut self, query: &CompanyQuery) -> Result<Page<Company>>;

    /// The activities of the company's contacts (the contacts whose
    /// `company_id` is `company`), newest first (`occurred_at`, then id,
    /// descending). Empty for a company that does not exist.
    async fn company_timeline(
        &mut self,
        company: CompanyId,
        page: &PageRequest,
    ) -> Result<Page<Activity>>;

    /// The deals linked to the company, newest first (`created_at`, then
    /// id, descending). Empty for a company that does not exist.
    async fn list_deals_for_company(
        &mut self,
        company: CompanyId,
        page: &PageRequest,
    ) -> Result<Page<Deal>>;

    /// [`DealsTx::pipeline_summary`](crate::store::DealsTx::pipeline_summary)
    /// counting only the deals linked to `company`.
    ///
    /// Errors: [`Error::Validation`] on `pipeline` for an unknown pipeline.
    async fn pipeline_summary_for_company(
        &mut self,
        pipeline: &PipelineKey,
        company: CompanyId,
    ) -> Result<PipelineSummary>;
}

/// How many records of each kind [`OwnersTx::reassign_owner`] moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Reassigned {
    /// Contacts.
    pub contacts: u64,
    /// Companies.
    pub companies: u64,
    /// Deals.
    pub deals: u64,
}

/// The owners of records. Part of [`Transaction`](crate::Transaction).
#[async_trait]
pub trait OwnersTx: Send {
    /// Gives every record of owner `from` (of kind `kind` only, when given)
    /// to owner `to`: one statement per kind of record, each record a
    /// recorded change (version and `updated_at` move on). Reassigning an
    /// owner to itself changes nothing.
    ///
    /// On PostgreSQL it first locks what it moves, and key-shares the
    /// companies and contacts those records belong to, in the order of the
    /// deletes and merges (companies, contacts, deals, each by id): a
    /// company delete or merge, or a contact delete or merge, racing it
    /// waits for it, or it for them, rather than meeting it in a deadlock.
    /// It moves the records that were the owner's when it locked them; one
    /// given to the owner while it runs stays the owner's. A bulk import
    /// writing the same contacts in its own order may still meet it in a
    /// deadlock (a retryable error).
    async fn reassign_owner(
        &mut self,
        from: &OwnerId,
        to: &OwnerId,
        kind: Option<RecordKind>,
    ) -> Result<Reassigned>;
}

/// The order of a company search. Ties are broken by id, in the same direction.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CompanySort {
    /// By name, case-insensitively (by its caseless key, code-point order). The default.
    #[default]
    NameAsc,
    /// By name, reversed.
    NameDesc,
    /// Newest first.
    CreatedDesc,
    /// Oldest first.
    CreatedAsc,
}

impl CompanySort {
    /// True for the descending orders.
    pub fn is_descending(self) -> bool {
        matches!(self, CompanySort::NameDesc | CompanySort::CreatedDesc)
    }

    /// The list a search in this order is, for its cursors.
    pub fn cursor_list(self) -> CursorList {
        match self {
            CompanySort::NameAsc | CompanySort::NameDesc => CursorList::CompaniesByName,
            CompanySort::CreatedAsc | CompanySort::CreatedDesc => CursorList::CompaniesByCreation,
        }
    }
}

/// Filters, order and page of a company search. Every filter is optional
/// and they combine with AND; the name prefix matches as
/// [`ContactQuery`](crate::ContactQuery)'s prefixes do.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct CompanyQuery {
    /// Name starts with this.
    pub name_prefix: Option<String>,
    /// Exactly this domain.
    pub domain: Option<CompanyDomain>,
    /// Owned by.
    pub owner: Option<OwnerId>,
    /// Tags carried.
    pub tags: TagFilter,
    /// Metadata contains this object (PostgreSQL `jsonb @>` semantics).
    pub metadata_contains: Option<Metadata>,
    /// Order.
    pub sort: CompanySort,
    /// Page.
    pub page: PageRequest,
}

impl CompanyQuery {
    /// Every company by name, 50 a page.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only companies whose name starts with `prefix`.
    pub fn with_name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.name_prefix = Some(prefix.into());
        self
    }

    /// Only the company with `domain`.
    pub fn with_domain(mut self, domain: CompanyDomain) -> Self {
        self.domain = Some(domain);
        self
    }

    /// Only companies owned by `owner`.
    pub fn with_owner(mut self, owner: OwnerId) -> Self {
        self.owner = Some(owner);
        self
    }

    /// Only companies whose tags pass `tags`.
    pub fn with_tags(mut self, tags: TagFilter) -> Self {
        self.tags = tags;
        self
    }

    /// Only companies whose metadata contains `metadata`.
    pub fn with_metadata_contains(mut self, metadata: Metadata) -> Self {
        self.metadata_contains = Some(metadata);
        self
    }

    /// In this order.
    pub fn with_sort(mut self, sort: CompanySort) -> Self {
        self.sort = sort;
        self
    }

    /// This page.
    pub fn with_page(mut self, page: PageRequest) -> Self {
        self.page = page;
        self
    }

    /// The same query, continuing after `cursor`.
    pub fn after(&self, cursor: Cursor) -> Self {
        let mut q = self.clone();
        q.page.cursor = Some(cursor);
        q
    }

    /// Checks the query as every store runs it first: the prefix without
    /// NUL and at most [`MAX_PREFIX_CHARS`] long, the tag filter bounded.
    pub fn checked(&self) -> std::result::Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::new();
        if let Some(p) = &self.name_prefix {
            errors.check(crate::domain::no_nul("name_prefix", p));
            let chars = p.chars().count();
            if chars > MAX_PREFIX_CHARS {
                errors.push(FieldError::new(
                    "name_prefix",
                    "too_long",
                    format!("must have at most {MAX_PREFIX_CHARS} characters, got {chars}"),
                ));
            }
        }
        self.tags.check_into(&mut errors);
        errors.finish(|| ())
    }
}

impl CursorList {
    /// [`Transaction::company_timeline`](crate::store::CompaniesTx::company_timeline)
    /// of `company`.
    pub fn company_timeline(company: CompanyId) -> ListScope {
        CursorList::CompanyTimeline.scoped(&company)
    }

    /// [`Transaction::list_deals_for_company`](crate::store::CompaniesTx::list_deals_for_company)
    /// of `company`.
    pub fn deals_of_company(company: CompanyId) -> ListScope {
        CursorList::DealsOfCompany.scoped(&company)
    }

    /// [`Transaction::search_companies`](crate::store::CompaniesTx::search_companies)
    /// with the filters and order of `q` (its page aside).
    pub fn companies(q: &CompanyQuery) -> ListScope {
        q.sort.cursor_list().scoped(&(
            q.sort,
            &q.name_prefix,
            q.domain.as_ref().map(|d| d.as_str()),
            q.owner.as_ref().map(|o| o.as_str()),
            q.tags.scope_key(),
            q.metadata_contains.as_ref().map(|m| m.as_map()),
        ))
    }
}

/// The sort key of a company in a search, as stored in cursors.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum CompanySortKey {
    /// The caseless key of the name, then id.
    Name(String, uuid::Uuid),
    /// Creation time in microseconds since the epoch, then id.
    Time(i64, uuid::Uuid),
}

impl CompanySortKey {
    /// The key of `c` under `sort`.
    pub fn of(sort: CompanySort, c: &Company) -> Self {
        match sort {
            CompanySort::NameAsc | CompanySort::NameDesc => {
                CompanySortKey::Name(caseless_key(c.name.as_str()), c.id.as_uuid())
            }
            CompanySort::CreatedAsc | CompanySort::CreatedDesc => {
                CompanySortKey::Time(c.created_at.timestamp_micros(), c.id.as_uuid())
            }
        }
    }
}

/// The longest name key a company cursor may hold, in characters.
const MAX_NAME_KEY_CHARS: usize = 1024;

impl CursorPosition for CompanySortKey {
    fn check(&self, list: CursorList) -> std::result::Result<(), FieldError> {
        let wrong_list = || {
            FieldError::new(
                "cursor",
                "invalid_format",
                "holds the position of a search on another key",
            )
        };
        match self {
            CompanySortKey::Name(key, _) => {
                if list != CursorList::CompaniesByName {
                    return Err(wrong_list());
                }
                crate::domain::no_nul("cursor", key)?;
                if key.chars().count() > MAX_NAME_KEY_CHARS {
                    return Err(FieldError::new(
                        "cursor",
                        "too_long",
                        format!("a name key has more than {MAX_NAME_KEY_CHARS} characters"),
                    ));
                }
                Ok(())
            }
            CompanySortKey::Time(micros, _) => {
                if list != CursorList::CompaniesByCreation {
                    return Err(wrong_list());
                }
                micros.check(list)
            }
        }
    }
}
