//! The enrichment hook: an [`Enricher`] the host implements against its
//! data provider, and [`enrich_stale`], which takes the stalest contacts,
//! asks the enricher about them in batches (with bounded concurrency and a
//! timeout) and applies its answers as ordinary updates.
//!
//! An answer is applied to a contact in a transaction of its own, as the
//! actor of the caller's [`Context`] with the reason
//! `enrichment:<provider>`: the history shows which provider changed
//! what. The fields the provider confirmed or changed get their
//! verification time ([`FreshnessTx::verify_contact`](crate::store::FreshnessTx::verify_contact)), so the contact is
//! no longer stale for them and the next run leaves it alone.
//!
//! ```
//! use async_trait::async_trait;
//! use crm_core::quality::enrich::{enrich_stale, EnrichOptions, Enricher, Enrichment, EnrichError};
//! use crm_core::domain::{Contact, FreshField, JobTitle};
//!
//! /// A provider that knows everyone's title.
//! struct Directory;
//!
//! #[async_trait]
//! impl Enricher for Directory {
//!     fn provider(&self) -> &str {
//!         "directory"
//!     }
//!
//!     async fn enrich(&self, contacts: &[Contact]) -> Result<Vec<Enrichment>, EnrichError> {
//!         let mut out = Vec::new();
//!         for c in contacts {
//!             let mut answer = Enrichment::new(c.id);
//!             answer.title = Some(JobTitle::parse("Engineer")?);
//!             answer.verified = vec![FreshField::Email];
//!             out.push(answer);
//!         }
//!         Ok(out)
//!     }
//! }
//! ```

use std::{
    collections::{HashMap, HashSet},
    fmt,
    panic::AssertUnwindSafe,
    time::Duration,
};

use async_trait::async_trait;
use futures_util::{FutureExt, StreamExt, stream};
use serde_json::{Map, Value};

use crate::{
    Context, Error, ErrorKind, FieldError, Result, Store, TenantId, ValidationErrors,
    domain::{
        CompanyName, Contact, ContactId, ContactPatch, Email, FreshField, JobTitle, Metadata,
        PageRequest, PersonName, Phone, StaleQuery,
    },
};

/// The error an [`Enricher`] returns for a whole batch: the provider was
/// unreachable, refused the call, answered nonsense. Every contact of the
/// batch is then reported as failed with its message.
pub type EnrichError = Box<dyn std::error::Error + Send + Sync>;

/// A data provider the host implements: looks contacts up and says what it
/// knows about them.
#[async_trait]
pub trait Enricher: Send + Sync {
    /// The provider's name, recorded in history as the reason
    /// `enrichment:<provider>` (at most 100 characters).
    fn provider(&self) -> &str;

    /// The most contacts one call of [`enrich`](Self::enrich) is given
    /// (default 25; clamped to 1–1000).
    fn batch_size(&self) -> usize {
        25
    }

    /// Looks `contacts` up. Returns what the provider knows, at most one
    /// [`Enrichment`] per contact; a contact it has no answer for is left
    /// out (it is reported as [`EnrichFailureReason::NoMatch`]).
    async fn enrich(&self, contacts: &[Contact]) -> Result<Vec<Enrichment>, EnrichError>;
}

/// What a provider knows about one contact: values to set (`None` leaves a
/// field as it is; a provider cannot clear a field) and the fields it
/// confirmed as they are.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Enrichment {
    /// The contact this is about.
    pub contact: ContactId,
    /// A new email address (must not be another contact's).
    pub email: Option<Email>,
    /// A new first name.
    pub first_name: Option<PersonName>,
    /// A new last name.
    pub last_name: Option<PersonName>,
    /// A new company name.
    pub company: Option<CompanyName>,
    /// A new job title.
    pub title: Option<JobTitle>,
    /// A new phone number.
    pub phone: Option<Phone>,
    /// Custom fields to set, merged key by key into the contact's own
    /// (within the limits of [`Metadata`]).
    pub custom: Map<String, Value>,
    /// The fields the provider confirmed as they are. A field it changes
    /// counts as verified too.
    pub verified: Vec<FreshField>,
}

impl Enrichment {
    /// An answer about `contact` that changes and confirms nothing yet.
    pub fn new(contact: ContactId) -> Self {
        Enrichment {
            contact,
            email: None,
            first_name: None,
            last_name: None,
            company: None,
            title: None,
            phone: None,
            custom: Map::new(),
            verified: Vec::new(),
        }
    }
}

/// How [`enrich_stale`] chooses and calls.
#[derive(Debug, Clone, PartialEq)]
pub struct EnrichOptions {
    /// Which contacts are stale, stalest first. Its page size is the size
    /// of each read; its cursor is ignored (every run starts at the
    /// stalest).
    pub query: StaleQuery,
    /// The most contacts one run enriches (1–100,000).
    pub limit: usize,
    /// The most calls of the enricher running at once (1–64).
    pub concurrency: usize,
    /// How long one call of the enricher may take (more than zero, at most
    /// ten minutes); a batch that takes longer fails with
    /// [`EnrichFailureReason::Timeout`].
    pub timeout: Duration,
}

impl EnrichOptions {
    /// The most contacts one run may enrich.
    pub const MAX_LIMIT: usize = 100_000;
    /// The most calls one run may have in flight.
    pub const MAX_CONCURRENCY: usize = 64;
    /// The longest timeout a call may be given.
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);

    /// Up to `limit` of the contacts `query` finds, four calls at once, 30
    /// seconds each.
    pub fn new(query: StaleQuery, limit: usize) -> Self {
        EnrichOptions {
            query,
            limit,
            concurrency: 4,
            timeout: Duration::from_secs(30),
        }
    }

    /// Every invalid option at once, each naming its field.
    fn check(&self, provider: &str) -> Result<()> {
        let mut errors = ValidationErrors::new();
        if !(1..=Self::MAX_LIMIT).contains(&self.limit) {
            errors.push(FieldError::new(
                "limit",
                "out_of_range",
                format!("must be 1 to {}, got {}", Self::MAX_LIMIT, self.limit),
            ));
        }
        if !(1..=Self::MAX_CONCURRENCY).contains(&self.concurrency) {
            errors.push(FieldError::new(
                "concurrency",
                "out_of_range",
                format!(
                    "must be 1 to {}, got {}",
                    Self::MAX_CONCURRENCY,
                    self.concurrency
                ),
            ));
        }
        if self.timeout.is_zero() || self.timeout > Self::MAX_TIMEOUT {
            errors.push(FieldError::new(
                "timeout",
                "out_of_range",
                format!(
                    "must be more than zero and at most {} s, got {:?}",
                    Self::MAX_TIMEOUT.as_secs(),
                    self.timeout
                ),
            ));
        }
        if let Err(e) = provider_reason(provider) {
            errors.push(e);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.into())
        }
    }
}

/// What one run of [`enrich_stale`] did.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct EnrichReport {
    /// The stale contacts chosen (at most the limit).
    pub selected: usize,
    /// Contacts whose values the answers changed (a new version each).
    pub updated: usize,
    /// Contacts whose verification times were set (the updated ones
    /// included).
    pub verified: usize,
    /// The contacts nothing was applied to, and why.
    pub failed: Vec<EnrichFailure>,
}

/// A contact an enrichment run could not apply an answer to.
#[derive(Debug, Clone, PartialEq)]
pub struct EnrichFailure {
    /// The contact.
    pub contact: ContactId,
    /// Why.
    pub reason: EnrichFailureReason,
}

/// Why nothing was applied to a contact.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EnrichFailureReason {
    /// The call for its batch took longer than the timeout.
    Timeout,
    /// The enricher failed the call for its batch (or panicked in it),
    /// with this message.
    Provider(String),
    /// The provider had no answer for it (or an answer that changes and
    /// confirms nothing).
    NoMatch,
    /// The answer named a contact that was not in the batch it was given.
    Unexpected,
    /// The provider answered more than once for the contact, not alike:
    /// which answer holds is not for the run to guess, so none is applied.
    /// The next run asks again.
    AnsweredTwice,
    /// The contact changed (or was deleted or merged away) after it was
    /// read for the provider: the answer was about an older record, so it
    /// is not applied. The next run asks again.
    Changed,
    /// The store refused the answer (for example another contact holds the
    /// new email, or the custom fields exceed their limits).
    Rejected {
        /// The kind of error.
        kind: ErrorKind,
        /// Its message.
        message: String,
    },
}

impl fmt::Display for EnrichFailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnrichFailureReason::Timeout => f.write_str("the provider timed out"),
            EnrichFailureReason::Provider(m) => write!(f, "the provider failed: {m}"),
            EnrichFailureReason::NoMatch => f.write_str("the provider had no answer"),
            EnrichFailureReason::Unexpected => {
                f.write_str("the provider answered for a contact it was not asked about")
            }
            EnrichFailureReason::AnsweredTwice => f.write_str(
                "the provider gave two different answers for the contact: neither is applied",
            ),
            EnrichFailureReason::Changed => {
                f.write_str("the contact changed while the provider was asked")
            }
            EnrichFailureReason::Rejected { message, .. } => write!(f, "refused: {message}"),
        }
    }
}

/// The history reason of an enrichment by `provider`, checked.
/// The message of a provider's panic.
fn panicked(panic: &(dyn std::any::Any + Send)) -> String {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message");
    format!("the provider panicked: {message}")
}

fn provider_reason(provider: &str) -> Result<String, FieldError> {
    let chars = provider.chars().count();
    if chars == 0 || chars > 100 || provider.chars().any(char::is_control) {
        return Err(FieldError::new(
            "provider",
            "invalid_value",
            format!("must be 1 to 100 characters without control characters, got {chars}"),
        ));
    }
    Ok(format!("enrichment:{provider}"))
}

/// Enriches up to `options.limit` of `tenant`'s stalest contacts (as
/// `options.query` finds them, stalest first) with `enricher`.
///
/// The contacts are read first, then handed to the enricher in batches of
/// its [`batch_size`](Enricher::batch_size), at most
/// `options.concurrency` calls at once, each within `options.timeout`. Each
/// answer is applied to its contact in a transaction of its own, acting as
/// `context`'s actor with the reason `enrichment:<provider>`: the values
/// that differ are written as one ordinary update (with history and feed
/// event), and the changed and confirmed fields get their verification
/// time. A contact that changed after it was read is left alone (its
/// answer was about the older record). Nothing that fails stops the run:
/// every contact that got nothing is in the report's `failed`, with why.
///
/// A run that finds nothing stale calls nothing and writes nothing.
///
/// Errors: [`Error::Validation`] for options out of range (each named) or
/// an invalid query; the store's errors while reading the stale contacts.
pub async fn enrich_stale<S, E>(
    store: &S,
    tenant: TenantId,
    context: &Context,
    enricher: &E,
    options: &EnrichOptions,
) -> Result<EnrichReport>
where
    S: Store + ?Sized,
    E: Enricher + ?Sized,
{
    options.check(enricher.provider())?;
    let reason = provider_reason(enricher.provider()).map_err(ValidationErrors::single)?;
    // The reason is made of the provider's name: what the history refuses
    // in it (bidirectional controls, invisible text) is the provider's.
    let context = context.clone().with_reason(&reason).map_err(|e| {
        ValidationErrors::single(FieldError::new(
            "provider",
            "invalid_value",
            format!(
                "cannot name the history's reason `{reason}`: it {}",
                e.reason
            ),
        ))
    })?;
    let stale = read_stale(store, tenant, &context, options).await?;
    let mut report = EnrichReport {
        selected: stale.len(),
        ..EnrichReport::default()
    };
    if stale.is_empty() {
        return Ok(report);
    }
    let batch_size = enricher.batch_size().clamp(1, 1000);
    let batches: Vec<&[Contact]> = stale.chunks(batch_size).collect();
    let context = &context;
    let mut runs = stream::iter(batches)
        .map(|batch| async move {
            // A panic in the provider's code fails its batch like an
            // error: the batches already applied stay reported.
            let call = AssertUnwindSafe(enricher.enrich(batch))
                .catch_unwind()
                .map(|answer| answer.unwrap_or_else(|panic| Err(panicked(panic.as_ref()).into())));
            let answer = tokio::time::timeout(options.timeout, call).await;
            apply_batch(store, tenant, context, batch, answer).await
        })
        .buffer_unordered(options.concurrency);
    while let Some(part) = runs.next().await {
        report.updated += part.updated;
        report.verified += part.verified;
        report.failed.extend(part.failed);
    }
    Ok(report)
}

/// Up to the limit of the stalest contacts, stalest first.
async fn read_stale<S: Store + ?Sized>(
    store: &S,
    tenant: TenantId,
    context: &Context,
    options: &EnrichOptions,
) -> Result<Vec<Contact>> {
    let mut query = options.query.clone();
    let page_size = query.page.limit;
    query.page = PageRequest::first(page_size);
    let mut out = Vec::new();
    // Each page is read on a snapshot of its own, and the rank it pages
    // by moves with every verification, activity or signal: a contact
    // that moved past the cursor between two pages comes again, and is
    // asked about once.
    let mut taken = HashSet::new();
    loop {
        let left = options.limit - out.len();
        query.page.limit = page_size.min(u32::try_from(left).unwrap_or(u32::MAX));
        let mut tx = store.begin(tenant, context.clone()).await?;
        let page = tx.stale_contacts(&query).await;
        drop(tx);
        let page = page?;
        out.extend(
            page.items
                .into_iter()
                .map(|s| s.contact)
                .filter(|c| taken.insert(c.id)),
        );
        match page.next_cursor {
            Some(cursor) if out.len() < options.limit => query.page.cursor = Some(cursor),
            _ => return Ok(out),
        }
    }
}

/// Applies the enricher's `answer` for `batch`, one contact at a time.
async fn apply_batch<S: Store + ?Sized>(
    store: &S,
    tenant: TenantId,
    context: &Context,
    batch: &[Contact],
    answer: std::result::Result<
        std::result::Result<Vec<Enrichment>, EnrichError>,
        tokio::time::error::Elapsed,
    >,
) -> EnrichReport {
    let mut report = EnrichReport::default();
    let fail_all = |reason: EnrichFailureReason| {
        batch
            .iter()
            .map(|c| EnrichFailure {
                contact: c.id,
                reason: reason.clone(),
            })
            .collect::<Vec<_>>()
    };
    let answers = match answer {
        Err(_) => {
            report.failed = fail_all(EnrichFailureReason::Timeout);
            return report;
        }
        Ok(Err(e)) => {
            report.failed = fail_all(EnrichFailureReason::Provider(e.to_string()));
            return report;
        }
        Ok(Ok(answers)) => answers,
    };
    let mut asked: HashMap<ContactId, &Contact> = batch.iter().map(|c| (c.id, c)).collect();
    // The answers by contact, in the order given; an answer repeated as it
    // was is one answer.
    let mut answers_of: Vec<(ContactId, Vec<&Enrichment>)> = Vec::new();
    let mut at: HashMap<ContactId, usize> = HashMap::new();
    for enrichment in &answers {
        let i = *at.entry(enrichment.contact).or_insert_with(|| {
            answers_of.push((enrichment.contact, Vec::new()));
            answers_of.len() - 1
        });
        if !answers_of[i].1.contains(&enrichment) {
            answers_of[i].1.push(enrichment);
        }
    }
    for (contact, given) in answers_of {
        let Some(read) = asked.remove(&contact) else {
            report.failed.push(EnrichFailure {
                contact,
                reason: EnrichFailureReason::Unexpected,
            });
            continue;
        };
        // Two answers not alike: neither is applied.
        let [enrichment] = given[..] else {
            report.failed.push(EnrichFailure {
                contact,
                reason: EnrichFailureReason::AnsweredTwice,
            });
            continue;
        };
        match apply_one(store, tenant, context, read, enrichment).await {
            Ok(Applied::Nothing) => report.failed.push(EnrichFailure {
                contact: read.id,
                reason: EnrichFailureReason::NoMatch,
            }),
            Ok(Applied::Verified) => report.verified += 1,
            Ok(Applied::Updated { verified }) => {
                report.updated += 1;
                report.verified += usize::from(verified);
            }
            Err(reason) => report.failed.push(EnrichFailure {
                contact: read.id,
                reason,
            }),
        }
    }
    // In batch order, so that a report reads like the run.
    let mut missing: Vec<ContactId> = batch
        .iter()
        .filter(|c| asked.contains_key(&c.id))
        .map(|c| c.id)
        .collect();
    missing.dedup();
    report
        .failed
        .extend(missing.into_iter().map(|contact| EnrichFailure {
            contact,
            reason: EnrichFailureReason::NoMatch,
        }));
    report
}

/// What applying one answer did.
enum Applied {
    Nothing,
    Verified,
    /// Updated, and its verification times set when the answer confirmed
    /// a field.
    Updated {
        verified: bool,
    },
}

/// Applies one answer about `read` (the contact as the provider was given
/// it) in a transaction of its own.
async fn apply_one<S: Store + ?Sized>(
    store: &S,
    tenant: TenantId,
    context: &Context,
    read: &Contact,
    enrichment: &Enrichment,
) -> std::result::Result<Applied, EnrichFailureReason> {
    let (patch, mut fields) = patch_for(read, enrichment).map_err(rejected)?;
    for f in &enrichment.verified {
        if !fields.contains(f) {
            fields.push(*f);
        }
    }
    if patch.is_empty() && fields.is_empty() {
        return Ok(Applied::Nothing);
    }
    let result: Result<Applied> = async {
        let mut tx = store.begin(tenant, context.clone()).await?;
        let updated = if patch.is_empty() {
            // Only verification: the contact must still be the one read,
            // and stay so until this commits. An update that changes
            // nothing checks the version and locks the contact (on
            // PostgreSQL), so that a change of its email committed in
            // between cannot be verified in place of the one the provider
            // confirmed.
            tx.update_contact(read.id, read.version, ContactPatch::default())
                .await?;
            false
        } else {
            tx.update_contact(read.id, read.version, patch).await?;
            true
        };
        // An answer that only corrects names or custom fields confirms
        // no field: there is nothing to verify.
        if !fields.is_empty() {
            tx.verify_contact(read.id, &fields).await?;
        }
        tx.commit().await?;
        Ok(if updated {
            Applied::Updated {
                verified: !fields.is_empty(),
            }
        } else {
            Applied::Verified
        })
    }
    .await;
    result.map_err(|e| match e {
        Error::Conflict { .. } | Error::NotFound { .. } => EnrichFailureReason::Changed,
        e => rejected(e),
    })
}

/// A refusal of the store, as a failure reason.
fn rejected(e: Error) -> EnrichFailureReason {
    EnrichFailureReason::Rejected {
        kind: e.kind(),
        message: e.to_string(),
    }
}

/// The update an answer makes to `current` (only the values that differ)
/// and the fields it changes.
fn patch_for(current: &Contact, e: &Enrichment) -> Result<(ContactPatch, Vec<FreshField>)> {
    let mut patch = ContactPatch::default();
    let mut fields = Vec::new();
    if let Some(email) = &e.email
        && email.normalized() != current.email.normalized()
    {
        patch.email = Some(email.clone());
        fields.push(FreshField::Email);
    }
    if let Some(v) = &e.first_name
        && *v != current.first_name
    {
        patch.first_name = Some(v.clone());
    }
    if let Some(v) = &e.last_name
        && *v != current.last_name
    {
        patch.last_name = Some(v.clone());
    }
    if let Some(v) = &e.company
        && current.company.as_ref() != Some(v)
    {
        patch.company = Some(Some(v.clone()));
        fields.push(FreshField::Company);
    }
    if let Some(v) = &e.title
        && current.title.as_ref() != Some(v)
    {
        patch.title = Some(Some(v.clone()));
        fields.push(FreshField::Title);
    }
    if let Some(v) = &e.phone
        && current.phone.as_ref() != Some(v)
    {
        patch.phone = Some(Some(v.clone()));
        fields.push(FreshField::Phone);
    }
    if !e.custom.is_empty() {
        let mut map = current.metadata.as_map().clone();
        map.extend(e.custom.clone());
        if &map != current.metadata.as_map() {
            let metadata = Metadata::parse(Value::Object(map)).map_err(ValidationErrors::single)?;
            patch.metadata = Some(metadata);
        }
    }
    Ok((patch, fields))
}
