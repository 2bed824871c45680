//! The contacts of a tenant: create, read, change, deactivate, delete and
//! search them ([`ContactsTx`], with [`ContactQuery`]).

use async_trait::async_trait;

#[cfg(doc)]
use crate::error::Error;
use crate::{
    domain::*,
    error::{FieldError, Result, ValidationErrors},
};

/// The contacts of the transaction's tenant. Part of [`Transaction`](crate::Transaction).
///
/// # Contract
///
/// Beside the points on [`Store`](crate::Store):
///
/// - **Emails** are unique per tenant compared case-insensitively (by
///   their [`caseless_key`](crate::domain::caseless_key), whatever the
///   database's locale); a create or update that would break this returns
///   [`Error::DuplicateEmail`](crate::Error::DuplicateEmail) with the id of
///   the contact holding the email, also when two transactions race for it.
/// - **Deleting a contact** deletes its deals, activities and signals.
#[async_trait]
pub trait ContactsTx: Send {
    /// Creates a contact (version 1, score 0, active). With
    /// [`NewContact::original`], its `created_at` and `updated_at` are
    /// those original times; its history version is still written now.
    ///
    /// Errors: [`Error::DuplicateEmail`] when the tenant has the email in any casing;
    /// [`Error::Validation`] on `created_at` / `updated_at` for original
    /// times after the store's clock ([`NewContact::checked`]).
    async fn create_contact(&mut self, new: NewContact) -> Result<Contact>;

    /// A contact by id.
    async fn get_contact(&mut self, id: ContactId) -> Result<Option<Contact>>;

    /// The contacts among `ids` that exist, in the order of `ids` (an id
    /// given twice comes once, a missing one is left out): one read for a
    /// batch, where [`get_contact`](Self::get_contact) is one per contact.
    ///
    /// Errors: [`Error::Validation`] on `ids` for more than
    /// [`MAX_GET_MANY`](crate::store::MAX_GET_MANY) ids.
    async fn get_contacts(&mut self, ids: &[ContactId]) -> Result<Vec<Contact>> {
        super::check_get_many("ids", ids.len())?;
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for id in ids {
            if seen.insert(*id)
                && let Some(c) = self.get_contact(*id).await?
            {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// A contact by email, in any casing.
    async fn get_contact_by_email(&mut self, email: &Email) -> Result<Option<Contact>>;

    /// The contacts holding `emails` (in any casing), in the order of
    /// `emails` (a contact named twice comes once, an email no contact
    /// holds is left out): one read for a batch.
    ///
    /// Errors: [`Error::Validation`] on `emails` for more than
    /// [`MAX_GET_MANY`](crate::store::MAX_GET_MANY) emails.
    async fn get_contacts_by_email(&mut self, emails: &[Email]) -> Result<Vec<Contact>> {
        super::check_get_many("emails", emails.len())?;
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for email in emails {
            if let Some(c) = self.get_contact_by_email(email).await?
                && seen.insert(c.id)
            {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// Applies `patch` if the contact is at `expected`.
    ///
    /// Errors: [`Error::NotFound`], [`Error::Conflict`], [`Error::DuplicateEmail`].
    async fn update_contact(
        &mut self,
        id: ContactId,
        expected: Version,
        patch: ContactPatch,
    ) -> Result<Contact>;

    /// Marks the contact inactive, whatever its version (a no-op when it
    /// already is). Errors: [`Error::NotFound`].
    async fn deactivate_contact(&mut self, id: ContactId) -> Result<Contact>;

    /// Deletes the contact with its deals, activities and signals.
    /// `Ok(false)` when there was no such contact.
    async fn delete_contact(&mut self, id: ContactId) -> Result<bool>;

    /// Contacts matching `query`, in its order, one page at a time.
    async fn search_contacts(&mut self, query: &ContactQuery) -> Result<Page<Contact>>;
}

impl CursorList {
    /// [`Transaction::search_contacts`](crate::store::ContactsTx::search_contacts)
    /// with the filters and order of `q` (its page aside), as
    /// [`ContactQuery::checked`] gives them.
    pub fn contacts(q: &ContactQuery) -> ListScope {
        let mut sources: Vec<&str> = q.lead_sources.iter().map(|l| l.as_str()).collect();
        sources.sort_unstable();
        sources.dedup();
        let micros = |t: Option<Timestamp>| t.map(|t| t.timestamp_micros());
        q.sort.cursor_list().scoped(&(
            q.sort,
            (&q.email_prefix, &q.name_prefix, &q.company_prefix),
            sources,
            (
                q.min_score.map(|s| s.get()),
                q.max_score.map(|s| s.get()),
                q.active,
            ),
            (
                micros(q.created_from),
                micros(q.created_until),
                micros(q.updated_from),
                micros(q.updated_until),
            ),
            q.metadata_contains.as_ref().map(|m| m.as_map()),
            (
                q.owner.as_ref().map(|o| o.as_str()),
                q.company_id,
                q.tags.scope_key(),
            ),
        ))
    }
}

/// The longest search prefix ([`ContactQuery`]'s `email_prefix`,
/// `name_prefix`, `company_prefix`): longer than any value it searches.
pub const MAX_PREFIX_CHARS: usize = 255;

/// The order of a contact search. Ties are broken by id, in the same direction.
///
/// More orders may come as the CRM grows: a `match` on it outside
/// this crate needs a `_` arm.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ContactSort {
    /// Highest score first.
    ScoreDesc,
    /// Lowest score first.
    ScoreAsc,
    /// Newest first (the default).
    #[default]
    CreatedDesc,
    /// Oldest first.
    CreatedAsc,
    /// Most recently changed first.
    UpdatedDesc,
    /// Least recently changed first.
    UpdatedAsc,
    /// By last name, then first name, case-insensitively: by their
    /// [`caseless_key`](crate::domain::caseless_key)s in code-point order,
    /// the same on every backend and in every database locale.
    NameAsc,
    /// By last name, then first name, reversed.
    NameDesc,
}

/// Filters, order and page of a contact search. Every filter is optional and
/// they combine with AND. Text prefixes match case-insensitively (the
/// value's [`caseless_key`](crate::domain::caseless_key) starts with the
/// prefix's) and literally (`%` and `_` are not wildcards); as keys are
/// composed (NFC), a prefix ends on a whole letter: `Zoe` does not find
/// `Zoë`, whose `e` and diaeresis compose into one. Time ranges include
/// their start and exclude their end.
///
/// Built from [`ContactQuery::new`] (or [`top_leads`](ContactQuery::top_leads))
/// with the `with_*` setters:
///
/// ```
/// use crm_core::{ContactQuery, ContactSort, PageRequest};
/// use crm_core::domain::Score;
///
/// let q = ContactQuery::new()
///     .with_company_prefix("acme")
///     .with_min_score(Score::new(40)?)
///     .with_active(true)
///     .with_sort(ContactSort::NameAsc)
///     .with_page(PageRequest::first(20));
/// assert_eq!(q.company_prefix.as_deref(), Some("acme"));
/// # Ok::<_, crm_core::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ContactQuery {
    /// Email starts with this.
    pub email_prefix: Option<String>,
    /// First name or last name starts with this.
    pub name_prefix: Option<String>,
    /// Company starts with this.
    pub company_prefix: Option<String>,
    /// Lead source is one of these (empty: any).
    pub lead_sources: Vec<LeadSource>,
    /// Score at least this.
    pub min_score: Option<Score>,
    /// Score at most this.
    pub max_score: Option<Score>,
    /// Active or not.
    pub active: Option<bool>,
    /// Created at or after.
    pub created_from: Option<Timestamp>,
    /// Created before.
    pub created_until: Option<Timestamp>,
    /// Last changed at or after.
    pub updated_from: Option<Timestamp>,
    /// Last changed before.
    pub updated_until: Option<Timestamp>,
    /// Metadata contains this object (PostgreSQL `jsonb @>` semantics).
    pub metadata_contains: Option<Metadata>,
    /// Owned by.
    pub owner: Option<OwnerId>,
    /// Linked to this company.
    pub company_id: Option<CompanyId>,
    /// Tags carried.
    pub tags: crate::store::TagFilter,
    /// Order.
    pub sort: ContactSort,
    /// Page.
    pub page: PageRequest,
}

impl ContactQuery {
    /// Every contact, newest first, 50 a page.
    pub fn new() -> Self {
        Self::default()
    }

    /// The top `limit` active contacts by score: the "top leads" query.
    pub fn top_leads(limit: u32) -> Self {
        ContactQuery {
            active: Some(true),
            sort: ContactSort::ScoreDesc,
            page: PageRequest::first(limit),
            ..Self::default()
        }
    }

    /// Only contacts whose email starts with `prefix`.
    pub fn with_email_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.email_prefix = Some(prefix.into());
        self
    }

    /// Only contacts whose first or last name starts with `prefix`.
    pub fn with_name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.name_prefix = Some(prefix.into());
        self
    }

    /// Only contacts whose company starts with `prefix`.
    pub fn with_company_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.company_prefix = Some(prefix.into());
        self
    }

    /// Only contacts from one of `sources` (none: any source).
    pub fn with_lead_sources(mut self, sources: impl IntoIterator<Item = LeadSource>) -> Self {
        self.lead_sources = sources.into_iter().collect();
        self
    }

    /// Only contacts scored at least `score`.
    pub fn with_min_score(mut self, score: Score) -> Self {
        self.min_score = Some(score);
        self
    }

    /// Only contacts scored at most `score`.
    pub fn with_max_score(mut self, score: Score) -> Self {
        self.max_score = Some(score);
        self
    }

    /// Only active contacts (`true`) or only inactive ones (`false`).
    pub fn with_active(mut self, active: bool) -> Self {
        self.active = Some(active);
        self
    }

    /// Only contacts created at or after `at`.
    pub fn with_created_from(mut self, at: Timestamp) -> Self {
        self.created_from = Some(at);
        self
    }

    /// Only contacts created before `at`.
    pub fn with_created_until(mut self, at: Timestamp) -> Self {
        self.created_until = Some(at);
        self
    }

    /// Only contacts last changed at or after `at`.
    pub fn with_updated_from(mut self, at: Timestamp) -> Self {
        self.updated_from = Some(at);
        self
    }

    /// Only contacts last changed before `at`.
    pub fn with_updated_until(mut self, at: Timestamp) -> Self {
        self.updated_until = Some(at);
        self
    }

    /// Only contacts whose metadata contains `metadata` (PostgreSQL `jsonb @>` semantics).
    pub fn with_metadata_contains(mut self, metadata: Metadata) -> Self {
        self.metadata_contains = Some(metadata);
        self
    }

    /// Only contacts owned by `owner`.
    pub fn with_owner(mut self, owner: OwnerId) -> Self {
        self.owner = Some(owner);
        self
    }

    /// Only contacts linked to `company`.
    pub fn with_company(mut self, company: CompanyId) -> Self {
        self.company_id = Some(company);
        self
    }

    /// Only contacts whose tags pass `tags`.
    pub fn with_tags(mut self, tags: crate::store::TagFilter) -> Self {
        self.tags = tags;
        self
    }

    /// In this order.
    pub fn with_sort(mut self, sort: ContactSort) -> Self {
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

    /// The query as every store runs it, or every reason it cannot be:
    /// prefixes without NUL, and time bounds within years 1–9999, normalised
    /// ([`check_timestamp`](crate::domain::check_timestamp)). Borrowed when
    /// nothing needed normalising. Every store calls it first. (The page is
    /// checked when it is read: [`PageRequest::checked_limit`],
    /// [`PageRequest::position`].)
    pub fn checked(&self) -> std::result::Result<std::borrow::Cow<'_, Self>, ValidationErrors> {
        use crate::domain::check_optional_timestamp;
        let mut errors = ValidationErrors::new();
        for (field, prefix) in [
            ("email_prefix", &self.email_prefix),
            ("name_prefix", &self.name_prefix),
            ("company_prefix", &self.company_prefix),
        ] {
            if let Some(p) = prefix {
                errors.check(crate::domain::no_nul(field, p));
                let chars = p.chars().count();
                if chars > MAX_PREFIX_CHARS {
                    errors.push(FieldError::new(
                        field,
                        "too_long",
                        format!(
                            "must have at most {MAX_PREFIX_CHARS} characters (no value it \
                             searches is longer), got {chars}"
                        ),
                    ));
                }
            }
        }
        let created_from =
            errors.check(check_optional_timestamp("created_from", self.created_from));
        let created_until = errors.check(check_optional_timestamp(
            "created_until",
            self.created_until,
        ));
        let updated_from =
            errors.check(check_optional_timestamp("updated_from", self.updated_from));
        let updated_until = errors.check(check_optional_timestamp(
            "updated_until",
            self.updated_until,
        ));
        self.tags.check_into(&mut errors);
        if !errors.is_empty() {
            return Err(errors);
        }
        let times = (
            created_from.flatten(),
            created_until.flatten(),
            updated_from.flatten(),
            updated_until.flatten(),
        );
        if times
            == (
                self.created_from,
                self.created_until,
                self.updated_from,
                self.updated_until,
            )
        {
            return Ok(std::borrow::Cow::Borrowed(self));
        }
        Ok(std::borrow::Cow::Owned(ContactQuery {
            created_from: times.0,
            created_until: times.1,
            updated_from: times.2,
            updated_until: times.3,
            ..self.clone()
        }))
    }
}

/// The sort key of a contact in a search, as stored in cursors. Backends use
/// it to compare positions; PostgreSQL builds the same tuple in SQL.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum ContactSortKey {
    /// Score, then id.
    Score(i64, uuid::Uuid),
    /// Timestamp in microseconds since the epoch, then id.
    Time(i64, uuid::Uuid),
    /// The caseless keys ([`caseless_key`](crate::domain::caseless_key))
    /// of the last name and the first name, then id.
    Name(String, String, uuid::Uuid),
}

impl ContactSortKey {
    /// The key of `c` under `sort`.
    pub fn of(sort: ContactSort, c: &Contact) -> Self {
        let id = c.id.as_uuid();
        match sort {
            ContactSort::ScoreAsc | ContactSort::ScoreDesc => {
                ContactSortKey::Score(i64::from(c.score.get()), id)
            }
            ContactSort::CreatedAsc | ContactSort::CreatedDesc => {
                ContactSortKey::Time(c.created_at.timestamp_micros(), id)
            }
            ContactSort::UpdatedAsc | ContactSort::UpdatedDesc => {
                ContactSortKey::Time(c.updated_at.timestamp_micros(), id)
            }
            ContactSort::NameAsc | ContactSort::NameDesc => ContactSortKey::Name(
                crate::domain::caseless_key(c.last_name.as_str()),
                crate::domain::caseless_key(c.first_name.as_str()),
                id,
            ),
        }
    }
}

impl ContactSort {
    /// True for the descending orders.
    pub fn is_descending(self) -> bool {
        matches!(
            self,
            ContactSort::ScoreDesc
                | ContactSort::CreatedDesc
                | ContactSort::UpdatedDesc
                | ContactSort::NameDesc
        )
    }
}

impl ContactSort {
    /// The list a search in this order is, for its cursors: one per sort
    /// key (score, creation time, update time, name), either direction.
    pub fn cursor_list(self) -> CursorList {
        match self {
            ContactSort::ScoreAsc | ContactSort::ScoreDesc => CursorList::ContactsByScore,
            ContactSort::CreatedAsc | ContactSort::CreatedDesc => CursorList::ContactsByCreation,
            ContactSort::UpdatedAsc | ContactSort::UpdatedDesc => CursorList::ContactsByUpdate,
            ContactSort::NameAsc | ContactSort::NameDesc => CursorList::ContactsByName,
        }
    }
}

/// The longest text a name position of a search cursor may hold, in
/// characters (a name's sort key is never longer).
const MAX_NAME_KEY_CHARS: usize = 1024;

/// A search position: the key of the list's sort, with a score of 0–100,
/// a time within years 1–9999, or name keys without NUL and of bounded
/// length.
impl CursorPosition for ContactSortKey {
    fn check(&self, list: CursorList) -> Result<(), FieldError> {
        let wrong_list = || {
            FieldError::new(
                "cursor",
                "invalid_format",
                "holds the position of a search on another key",
            )
        };
        match self {
            ContactSortKey::Score(score, _) => {
                if list != CursorList::ContactsByScore {
                    return Err(wrong_list());
                }
                Score::new_field("cursor", *score).map(drop)
            }
            ContactSortKey::Time(micros, _) => {
                if !matches!(
                    list,
                    CursorList::ContactsByCreation | CursorList::ContactsByUpdate
                ) {
                    return Err(wrong_list());
                }
                micros.check(list)
            }
            ContactSortKey::Name(last, first, _) => {
                if list != CursorList::ContactsByName {
                    return Err(wrong_list());
                }
                for key in [last, first] {
                    crate::domain::no_nul("cursor", key)?;
                    if key.chars().count() > MAX_NAME_KEY_CHARS {
                        return Err(FieldError::new(
                            "cursor",
                            "too_long",
                            format!("a name key has more than {MAX_NAME_KEY_CHARS} characters"),
                        ));
                    }
                }
                Ok(())
            }
        }
    }
}
