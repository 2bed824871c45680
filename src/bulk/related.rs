//! What the deal and activity exports and imports share: deals and
//! activities go out and in as JSON Lines or CSV, linked to contacts by
//! email. An export writes each record flat with its contact's email; an
//! import finds the contact by that email (in any casing) in the tenant. A
//! CSV has one column per field of the JSON lines, and each of its rows is
//! read into the object a line would hold and imported the same way.
//!
//! Import is per row through the store's ordinary operations (deals are
//! few next to contacts), one transaction per batch in best effort
//! ([`import_rows`]). Everything a row needs is decided before it writes,
//! so a rejected row writes nothing, not even a version in the history. A
//! line is read with every type error naming its field (see
//! [`FromJson`](crate::domain::FromJson)). CSV cells are read and written
//! as [`CsvFormulas`](super::CsvFormulas) says. The deals are in
//! [`deals`](super::deals), the activities in
//! [`activities`](super::activities).

use std::{borrow::Cow, collections::HashMap, pin::Pin};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    export::{Domains, Exporter},
    import::RejectedRow,
    read::Line,
};
use crate::{
    Context, Entity, Store, TenantId, Transaction,
    domain::{CompanyDomain, CompanyId, Contact, ContactId, Email, Page, read_value},
    error::{Error, FieldError, Result},
    store::PageRequest,
};

/// What an import of deals, activities or signals did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RelatedReport {
    /// Data rows read.
    pub rows: u64,
    /// Records created.
    pub created: u64,
    /// Rows refused, in file order.
    pub rejected: Vec<RejectedRow>,
    /// The file's `id` of each created record, to the id it got.
    pub ids: HashMap<String, String>,
}

/// What one row gives: its value, or every error that rejects it.
pub(super) type RowResult<T> = std::result::Result<T, Vec<FieldError>>;

/// A page of a contact's [`Owned`] records, as the store reads it.
pub(super) type PageFuture<'a, T> = Pin<Box<dyn Future<Output = Result<Page<T>>> + Send + 'a>>;

/// The first pages of the [`Owned`] records of a page of contacts.
pub(super) type PagesFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<Vec<Page<T>>>> + Send + 'a>>;

/// How many of each contact's records the first read of a page of
/// contacts takes ([`Owned::first_pages`]); a contact with more goes on
/// with pages of its own.
const FIRST_PAGE: u32 = 10;

/// How many contacts' first pages are read at once: with [`FIRST_PAGE`],
/// at most 1,100 records held (each contact's first page and the one
/// extra that says more follow), about what a page of 1,000 of one
/// contact's records holds. In the server a statement for 100 contacts
/// costs about 15 µs a contact, for 50 about 24, for 1,000 about 12.
const CONTACTS_PER_READ: usize = 100;

/// A record a contact owns, a deal or an activity: exported as a flat
/// JSON object ([`line`](Self::line)) that names its contact by email, and
/// as a CSV row of that object's fields.
pub(super) trait Owned: Send + Sync + Sized + 'static {
    /// The fields of its JSON line, in order: the columns of its CSV.
    const FIELDS: &'static [&'static str];

    /// A page of `contact`'s records, in export order.
    fn page<'a>(
        tx: &'a mut dyn Transaction,
        contact: ContactId,
        page: &'a PageRequest,
    ) -> PageFuture<'a, Self>;

    /// The first page of each of `contacts`' records, in the order given
    /// ([`page`](Self::page) for each, `limit` records at most). The
    /// default reads them contact by contact.
    fn first_pages<'a>(
        tx: &'a mut dyn Transaction,
        contacts: &'a [ContactId],
        limit: u32,
    ) -> PagesFuture<'a, Self> {
        Box::pin(async move {
            let request = PageRequest::first(limit);
            let mut pages = Vec::with_capacity(contacts.len());
            for contact in contacts {
                pages.push(Self::page(&mut *tx, *contact, &request).await?);
            }
            Ok(pages)
        })
    }

    /// The company the record is linked to, if any.
    fn company(&self) -> Option<CompanyId> {
        None
    }

    /// The record as a line of the export (`company_domain`: the domain of
    /// its [`company`](Self::company)).
    fn line(&self, contact: &Contact, company_domain: Option<&str>) -> Value;
}

/// Each contact's owned records are read page by page and written as their
/// lines.
impl<T: Owned> Exporter for T {
    const COLUMNS: &'static [&'static str] = T::FIELDS;

    const CONTACTS_PER_READ: usize = CONTACTS_PER_READ;

    type Record = Value;

    /// Each contact's first page of records.
    type PageData = HashMap<ContactId, Page<T>>;

    async fn page_data<'a>(
        tx: &'a mut dyn Transaction,
        contacts: &'a [Contact],
    ) -> Result<Self::PageData> {
        let ids: Vec<ContactId> = contacts.iter().map(|c| c.id).collect();
        let pages = T::first_pages(tx, &ids, FIRST_PAGE).await?;
        Ok(ids.into_iter().zip(pages).collect())
    }

    async fn records_of<'a>(
        tx: &'a mut dyn Transaction,
        contact: &'a Contact,
        first: &'a Self::PageData,
        domains: &'a mut Domains,
        emit: &'a mut (dyn FnMut(&Value) -> Result<()> + Send),
    ) -> Result<u64> {
        let mut count = 0;
        let mut request = PageRequest::first(1000);
        let mut read;
        let mut page = match first.get(&contact.id) {
            Some(page) => page,
            None => {
                read = T::page(&mut *tx, contact.id, &request).await?;
                &read
            }
        };
        loop {
            for item in &page.items {
                let domain = domains.of(&mut *tx, item.company()).await?;
                emit(&item.line(contact, domain.as_deref()))?;
                count += 1;
            }
            match &page.next_cursor {
                Some(cursor) => request.cursor = Some(cursor.clone()),
                None => break,
            }
            read = T::page(&mut *tx, contact.id, &request).await?;
            page = &read;
        }
        Ok(count)
    }

    /// A string as it is, `null` or a missing field as a blank cell,
    /// anything else as JSON.
    fn csv_cells(record: &Value) -> Result<Vec<Cow<'_, str>>> {
        Ok(T::FIELDS
            .iter()
            .map(|c| match record.get(*c) {
                None | Some(Value::Null) => "".into(),
                Some(Value::String(s)) => s.as_str().into(),
                Some(other) => other.to_string().into(),
            })
            .collect())
    }
}

/// A text field of a line: a JSON string or number (as its text); `null`
/// is absent. Anything else is a type error naming the field.
#[derive(Debug, Clone, Default)]
pub(super) struct Text(Option<String>);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::{Error as _, Unexpected};
        let value = Value::deserialize(d)?;
        let unexpected = match &value {
            Value::Null => return Ok(Text(None)),
            Value::String(s) => return Ok(Text(Some(s.clone()))),
            Value::Number(n) => return Ok(Text(Some(n.to_string()))),
            Value::Bool(b) => Unexpected::Bool(*b),
            Value::Array(_) => Unexpected::Seq,
            Value::Object(_) => Unexpected::Map,
        };
        Err(D::Error::invalid_type(unexpected, &"a string or a number"))
    }
}

impl Text {
    /// The text, `None` when absent or blank.
    pub(super) fn get(&self) -> Option<String> {
        self.0.clone().filter(|s| !s.trim().is_empty())
    }

    /// The text as an id of the file (a record's `id`, a `deal_id` naming
    /// one): trimmed, as a spreadsheet may leave spaces around a cell that
    /// the other file's id lacks; `None` when absent or blank.
    pub(super) fn id(&self) -> Option<String> {
        self.0
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }
}

/// A line's fields, or the error of its first wrongly typed field (named
/// by its path), or of the line as a whole (`row`).
pub(super) fn fields_of<T: serde::de::DeserializeOwned>(line: &Line) -> RowResult<T> {
    let object = line.object.as_ref().map_err(|e| vec![e.clone()])?;
    read_value(Value::Object(object.clone()), "row").map_err(|e| vec![e])
}

/// Finds the contact a row names by `contact_email`.
pub(super) async fn contact_of(
    tx: &mut dyn Transaction,
    address: Option<String>,
) -> Result<std::result::Result<ContactId, FieldError>> {
    let Some(address) = address else {
        return Ok(Err(FieldError::new(
            "contact_email",
            "required",
            "must name the contact's email",
        )));
    };
    let email = match Email::parse_field("contact_email", &address) {
        Ok(e) => e,
        Err(e) => return Ok(Err(e)),
    };
    Ok(match tx.get_contact_by_email(&email).await? {
        Some(c) => Ok(c.id),
        None => Err(FieldError::new(
            "contact_email",
            "not_found",
            format!("no contact of the tenant has the email {address}"),
        )),
    })
}

/// Finds the company a row names by `company_domain`: `None` without one.
pub(super) async fn company_of(
    tx: &mut dyn Transaction,
    domain: Option<String>,
) -> Result<std::result::Result<Option<CompanyId>, FieldError>> {
    let Some(domain) = domain else {
        return Ok(Ok(None));
    };
    let domain = match CompanyDomain::parse_field("company_domain", &domain) {
        Ok(d) => d,
        Err(e) => return Ok(Err(e)),
    };
    Ok(match tx.get_company_by_domain(&domain).await? {
        Some(c) => Ok(Some(c.id)),
        None => Err(FieldError::new(
            "company_domain",
            "not_found",
            format!("no company of the tenant has the domain {domain}"),
        )),
    })
}

/// Field errors of an error caused by the row, or the error itself.
pub(super) fn row_errors(e: Error) -> Result<Vec<FieldError>> {
    match e {
        Error::Validation(v) => Ok(v.as_slice().to_vec()),
        Error::NotFound {
            entity: Entity::Contact,
            ..
        } => Ok(vec![FieldError::new(
            "contact_email",
            "not_found",
            e.to_string(),
        )]),
        Error::NotFound {
            entity: Entity::Deal,
            ..
        } => Ok(vec![FieldError::new("deal_id", "not_found", e.to_string())]),
        Error::InvalidTransition { .. } | Error::NotFound { .. } => Ok(vec![FieldError::new(
            "stage",
            "invalid_value",
            e.to_string(),
        )]),
        other => Err(other),
    }
}

/// How one row of a deals or activities file is imported.
pub(super) trait ImportRow: Sync {
    /// Imports `line` in `tx`: the row's own `id` (if it has one) and the
    /// id of the record created, or the errors that reject it (having
    /// written nothing). `Err` is a failure of the store, which ends the
    /// import.
    fn import_row<'a>(
        &'a self,
        tx: &'a mut dyn Transaction,
        line: &'a Line,
    ) -> impl Future<Output = Result<RowResult<(Option<String>, String)>>> + Send + 'a;
}

/// The rows of a file that gave an `id`, by that id: the first row with
/// an id claims it, and a later row with the same id is refused before it
/// writes anything (whether or not the first was imported). Two records
/// under one id of the source would leave [`RelatedReport::ids`] mapping
/// it to one of them, and the rows of the next file naming that id linked
/// to the wrong record.
#[derive(Default)]
struct SourceIds(HashMap<String, u64>);

impl SourceIds {
    /// Claims `line`'s `id` (read as the rows read it), or the error
    /// refusing the line as a duplicate.
    fn claim(&mut self, line: &Line) -> std::result::Result<(), Vec<FieldError>> {
        let Some(id) = line
            .object
            .as_ref()
            .ok()
            .and_then(|o| o.get("id"))
            .and_then(|v| Text::deserialize(v).ok())
            .and_then(|t| t.id())
        else {
            return Ok(());
        };
        match self.0.get(&id) {
            Some(first) => Err(vec![FieldError::new(
                "id",
                "duplicate",
                format!("row {first} of the file has the same id: each row's id must be unique"),
            )]),
            None => {
                self.0.insert(id, line.row);
                Ok(())
            }
        }
    }
}

/// Imports `lines` with `rows`, `batch_size` rows per transaction, each
/// batch committed on its own.
pub(super) async fn import_rows<S, I>(
    store: &S,
    tenant: TenantId,
    ctx: &Context,
    mut lines: impl Iterator<Item = Result<Line>> + Send,
    batch_size: usize,
    rows: &I,
) -> Result<RelatedReport>
where
    S: Store + ?Sized,
    I: ImportRow,
{
    let mut report = RelatedReport::default();
    let mut ids = SourceIds::default();
    let mut done = false;
    while !done {
        let mut tx = store.begin(tenant, ctx.clone()).await?;
        for _ in 0..batch_size {
            let Some(line) = lines.next().transpose()? else {
                done = true;
                break;
            };
            report.rows += 1;
            let result = match ids.claim(&line) {
                Ok(()) => rows.import_row(&mut *tx, &line).await?,
                Err(errors) => Err(errors),
            };
            match result {
                Ok((old, id)) => {
                    report.created += 1;
                    if let Some(old) = old {
                        report.ids.insert(old, id);
                    }
                }
                Err(errors) => report.rejected.push(RejectedRow {
                    row: line.row,
                    line: line.line,
                    errors,
                }),
            }
        }
        tx.commit().await?;
    }
    Ok(report)
}

/// Finds the contacts rows name by `contact_email`, in one read per
/// [`MAX_GET_MANY`](crate::store::MAX_GET_MANY) emails: for each row, its
/// contact or the error [`contact_of`] gives.
pub(super) async fn contacts_of(
    tx: &mut dyn Transaction,
    addresses: &[Option<String>],
) -> Result<Vec<std::result::Result<ContactId, FieldError>>> {
    let parsed: Vec<std::result::Result<Email, FieldError>> = addresses
        .iter()
        .map(|a| match a {
            None => Err(FieldError::new(
                "contact_email",
                "required",
                "must name the contact's email",
            )),
            Some(a) => Email::parse_field("contact_email", a),
        })
        .collect();
    let emails: Vec<Email> = parsed
        .iter()
        .filter_map(|e| e.as_ref().ok())
        .cloned()
        .collect();
    let mut found: HashMap<String, ContactId> = HashMap::with_capacity(emails.len());
    for chunk in emails.chunks(crate::store::MAX_GET_MANY) {
        for c in tx.get_contacts_by_email(chunk).await? {
            found.insert(c.email.normalized().to_string(), c.id);
        }
    }
    Ok(parsed
        .into_iter()
        .zip(addresses)
        .map(|(email, address)| {
            let email = email?;
            found.get(email.normalized()).copied().ok_or_else(|| {
                FieldError::new(
                    "contact_email",
                    "not_found",
                    format!(
                        "no contact of the tenant has the email {}",
                        address.as_deref().unwrap_or_default()
                    ),
                )
            })
        })
        .collect())
}

/// What each row of a batch gives: the row's own `id` (if it has one) and
/// the id of the record created, or the errors that reject it.
pub(super) type BatchResults = Vec<RowResult<(Option<String>, String)>>;

/// How a batch of rows of a file is imported at once.
pub(super) trait ImportBatch: Sync {
    /// Imports `lines` in `tx`: for each, in order, the row's own `id` (if
    /// it has one) and the id of the record created, or the errors that
    /// reject it (having written nothing). `Err` is a failure of the
    /// store, which ends the import.
    fn import_batch<'a>(
        &'a self,
        tx: &'a mut dyn Transaction,
        lines: &'a [Line],
    ) -> impl Future<Output = Result<BatchResults>> + Send + 'a;
}

/// Imports `lines` with `rows`, `batch_size` rows per transaction and per
/// call of [`ImportBatch::import_batch`], each batch committed on its own.
pub(super) async fn import_batches<S, I>(
    store: &S,
    tenant: TenantId,
    ctx: &Context,
    mut lines: impl Iterator<Item = Result<Line>> + Send,
    batch_size: usize,
    rows: &I,
) -> Result<RelatedReport>
where
    S: Store + ?Sized,
    I: ImportBatch,
{
    let mut report = RelatedReport::default();
    let mut ids = SourceIds::default();
    loop {
        let mut lines_read = Vec::new();
        for _ in 0..batch_size {
            match lines.next().transpose()? {
                Some(line) => lines_read.push(line),
                None => break,
            }
        }
        if lines_read.is_empty() {
            return Ok(report);
        }
        report.rows += lines_read.len() as u64;
        // The duplicates of an id are refused here; the others go to the
        // store, and their results come back in order.
        let claims: Vec<_> = lines_read.iter().map(|l| ids.claim(l)).collect();
        let (mut batch, mut refused) = (Vec::new(), Vec::new());
        for (line, claim) in lines_read.into_iter().zip(&claims) {
            if claim.is_ok() {
                batch.push(line);
            } else {
                refused.push(line);
            }
        }
        let mut tx = store.begin(tenant, ctx.clone()).await?;
        let results = rows.import_batch(&mut *tx, &batch).await?;
        tx.commit().await?;
        let mut imported = batch.into_iter().zip(results);
        let mut refused = refused.into_iter();
        for claim in claims {
            let (line, result) = match claim {
                Ok(()) => match imported.next() {
                    Some(next) => next,
                    None => break,
                },
                Err(errors) => match refused.next() {
                    Some(line) => (line, Err(errors)),
                    None => break,
                },
            };
            match result {
                Ok((old, id)) => {
                    report.created += 1;
                    if let Some(old) = old {
                        report.ids.insert(old, id);
                    }
                }
                Err(errors) => report.rejected.push(RejectedRow {
                    row: line.row,
                    line: line.line,
                    errors,
                }),
            }
        }
    }
}

/// A row a batch import writes with one store call for the whole batch
/// (an activity, a signal).
pub(super) trait BatchRow: Clone + Send + Sync + 'static {
    /// Writes `rows` at once, all or nothing, returning the id each got, in
    /// order.
    fn write<'a>(
        tx: &'a mut dyn Transaction,
        rows: &'a [Self],
    ) -> impl Future<Output = Result<Vec<String>>> + Send + 'a;

    /// The rows of `rows` that `e` (an error of [`write`](Self::write))
    /// refuses, in order; empty for an error of the store. A record not
    /// found refuses every row naming it at once: each is refused the same
    /// way, and writing the batch again once per such row made a batch of
    /// rows naming a deleted record quadratic.
    fn refused(e: &Error, rows: &[Self]) -> Vec<usize>;
}

/// The rows a batch call refused with `e`: the one a validation error
/// names (see [`batch_row`](crate::store::batch_row)), or every one whose
/// contact is the one not found (by `contact`). None for any other error.
pub(super) fn refused_by_row<T>(
    e: &Error,
    rows: &[T],
    contact: impl Fn(&T) -> ContactId,
) -> Vec<usize> {
    match e {
        Error::Validation(v) => v
            .as_slice()
            .iter()
            .find_map(|f| crate::store::batch_row(&f.field))
            .map(|(i, _)| i)
            .into_iter()
            .collect(),
        Error::NotFound {
            entity: Entity::Contact,
            id,
        } => rows_naming(rows, id, |r| Some(contact(r).to_string())),
        _ => Vec::new(),
    }
}

/// The indices of the rows of `rows` naming the record `id` (as `named`
/// gives each row's, as text).
pub(super) fn rows_naming<T>(
    rows: &[T],
    id: &str,
    named: impl Fn(&T) -> Option<String>,
) -> Vec<usize> {
    rows.iter()
        .enumerate()
        .filter(|(_, r)| named(r).is_some_and(|n| n == id))
        .map(|(i, _)| i)
        .collect()
}

/// Reads each line of a batch into its fields `L` and finds the contact its
/// `contact_email` (as `email` gives it) names, all contacts in one read:
/// for each line, its fields and contact, or `None` with the errors that
/// reject it put in `out` (which gets one entry per line, `Ok` for those
/// read).
pub(super) async fn read_batch<L: serde::de::DeserializeOwned>(
    tx: &mut dyn Transaction,
    lines: &[Line],
    email: impl Fn(&L) -> Option<String>,
    out: &mut BatchResults,
) -> Result<Vec<Option<(L, ContactId)>>> {
    let mut read = Vec::with_capacity(lines.len());
    for line in lines {
        match fields_of::<L>(line) {
            Ok(f) => {
                out.push(Ok((None, String::new())));
                read.push(Some(f));
            }
            Err(errors) => {
                out.push(Err(errors));
                read.push(None);
            }
        }
    }
    let emails: Vec<Option<String>> = read.iter().map(|f| f.as_ref().and_then(&email)).collect();
    let contacts = contacts_of(tx, &emails).await?;
    let base = out.len() - lines.len();
    Ok(read
        .into_iter()
        .zip(contacts)
        .enumerate()
        .map(|(i, (fields, contact))| {
            let fields = fields?;
            match contact {
                Ok(c) => Some((fields, c)),
                Err(e) => {
                    out[base + i] = Err(vec![e]);
                    None
                }
            }
        })
        .collect())
}

/// Writes `pending` (each row with its index in `out` and its file's `id`)
/// with one [`BatchRow::write`]; the rows the store refuses are reported
/// in `out` with their fields named as in the row (`deal_id`, not
/// `activities[3].deal_id`), and the batch written again without them:
/// the refused call wrote nothing.
pub(super) async fn write_batch<T: BatchRow>(
    tx: &mut dyn Transaction,
    mut pending: Vec<(usize, Option<String>, T)>,
    out: &mut BatchResults,
) -> Result<()> {
    loop {
        let rows: Vec<T> = pending.iter().map(|(_, _, r)| r.clone()).collect();
        match T::write(&mut *tx, &rows).await {
            Ok(ids) => {
                for ((i, old, _), id) in pending.into_iter().zip(ids) {
                    out[i] = Ok((old, id));
                }
                return Ok(());
            }
            Err(e) => {
                let refused = T::refused(&e, &rows);
                if refused.is_empty() || refused.iter().any(|at| *at >= pending.len()) {
                    return Err(e);
                }
                let errors = batch_row_errors(e)?;
                // Highest first, so that each index still names its row.
                for at in refused.into_iter().rev() {
                    let (i, _, _) = pending.remove(at);
                    out[i] = Err(errors.clone());
                }
            }
        }
    }
}

/// The field errors of a row a batch refused, named as in the row
/// (`deal_id`, not `activities[3].deal_id`).
fn batch_row_errors(e: Error) -> Result<Vec<FieldError>> {
    Ok(row_errors(e)?
        .into_iter()
        .map(|f| match crate::store::batch_row(&f.field) {
            Some((_, field)) => FieldError::new(field, f.code, f.reason),
            None => f,
        })
        .collect())
}
