//! Streaming export to CSV and JSON Lines: keyset pages of 1,000 through
//! one transaction, written as they come. One routine per format writes
//! any kind of record an [`Exporter`] describes; contacts are one such kind
//! (the deals and activities are in their own modules).

use std::{borrow::Cow, collections::HashMap, io::Write};

use serde::Serialize;

use super::CsvFormulas;
use crate::{
    Context, Store, TenantId, Transaction,
    domain::{CompanyId, Contact, ContactId, RecordRef},
    error::{Error, Result},
    store::{ContactQuery, ContactSort, PageRequest},
};

/// The CSV columns of an export, in order. `metadata` holds the custom
/// fields as a JSON object.
pub const CONTACT_CSV_HEADER: [&str; 17] = [
    "id",
    "email",
    "first_name",
    "last_name",
    "company",
    "title",
    "phone",
    "lead_source",
    "metadata",
    "company_domain",
    "owner",
    "tags",
    "score",
    "active",
    "created_at",
    "updated_at",
    "version",
];

/// The domains of the companies an export has met, by id (`None` for a
/// company without one, or gone), so each is looked up once.
#[derive(Debug, Default)]
pub(super) struct Domains(std::collections::HashMap<CompanyId, Option<String>>);

impl Domains {
    /// The domain of company `id`, if it has one.
    pub(super) async fn of(
        &mut self,
        tx: &mut dyn Transaction,
        id: Option<CompanyId>,
    ) -> Result<Option<String>> {
        let Some(id) = id else {
            return Ok(None);
        };
        if let Some(d) = self.0.get(&id) {
            return Ok(d.clone());
        }
        let domain = tx
            .get_company(id)
            .await?
            .and_then(|c| c.domain)
            .map(|d| d.as_str().to_string());
        self.0.insert(id, domain.clone());
        Ok(domain)
    }
}

/// A contact as an export writes it: its fields, the domain of its
/// company and the names of its tags.
#[derive(Debug, Clone, Serialize)]
pub(super) struct ContactRecord {
    #[serde(flatten)]
    contact: Contact,
    company_domain: Option<String>,
    tags: Vec<String>,
}

/// The error of an export that cannot be written.
fn io(e: impl std::fmt::Display) -> Error {
    Error::backend(format!("cannot write the export: {e}"))
}

/// One kind of record an export writes: its CSV columns and cells, its
/// JSON line, and which records each contact stands for.
///
/// Every export pages through the tenant's contacts, oldest first, in one
/// transaction; each contact gives its records ([`records_of`](Self::records_of)),
/// each written as a CSV row ([`csv_cells`](Self::csv_cells)) or a JSON
/// line (the record serialized).
pub(super) trait Exporter {
    /// The CSV header row.
    const COLUMNS: &'static [&'static str];

    /// How many contacts [`page_data`](Self::page_data) reads for at once
    /// (a page of 1,000 contacts is read in slices of this many).
    const CONTACTS_PER_READ: usize;

    /// One record; its JSON line is it serialized.
    type Record: Serialize;

    /// What the records of a page of contacts need, read for the whole
    /// page at once ([`page_data`](Self::page_data)).
    type PageData: Send + Sync;

    /// Reads what [`records_of`](Self::records_of) needs for each of
    /// `contacts` (a page), in a few statements rather than one per
    /// contact.
    fn page_data<'a>(
        tx: &'a mut dyn Transaction,
        contacts: &'a [Contact],
    ) -> impl Future<Output = Result<Self::PageData>> + Send + 'a;

    /// Calls `emit` with each of `contact`'s records, in export order;
    /// returns how many. `page` is the [`page_data`](Self::page_data) of
    /// the contact's page.
    fn records_of<'a>(
        tx: &'a mut dyn Transaction,
        contact: &'a Contact,
        page: &'a Self::PageData,
        domains: &'a mut Domains,
        emit: &'a mut (dyn FnMut(&Self::Record) -> Result<()> + Send),
    ) -> impl Future<Output = Result<u64>> + Send + 'a;

    /// A record's CSV cells, one per column, as stored (before
    /// [`CsvFormulas`] neutralises any).
    fn csv_cells(record: &Self::Record) -> Result<Vec<Cow<'_, str>>>;
}

/// Pages through the tenant's contacts, oldest first, calling `emit` with
/// each of their records; returns how many.
async fn for_each_record<E, S>(
    store: &S,
    tenant: TenantId,
    ctx: &Context,
    emit: &mut (dyn FnMut(&E::Record) -> Result<()> + Send),
) -> Result<u64>
where
    E: Exporter,
    S: Store + ?Sized,
{
    let mut tx = store.begin_read(tenant, ctx.clone()).await?;
    let mut query = ContactQuery::new()
        .with_sort(ContactSort::CreatedAsc)
        .with_page(PageRequest::first(1000));
    let mut count = 0;
    let mut domains = Domains::default();
    loop {
        let page = tx.search_contacts(&query).await?;
        for slice in page.items.chunks(E::CONTACTS_PER_READ) {
            let data = E::page_data(&mut *tx, slice).await?;
            for c in slice {
                count += E::records_of(&mut *tx, c, &data, &mut domains, &mut *emit).await?;
            }
        }
        match page.next_cursor {
            Some(cursor) => query = query.after(cursor),
            None => break,
        }
    }
    tx.commit().await?;
    Ok(count)
}

/// Writes the tenant's records of kind `E` as CSV: the header row
/// ([`Exporter::COLUMNS`]), then a row per record, each cell as `formulas`
/// says; returns how many.
pub(super) async fn export_csv<E, S, W>(
    store: &S,
    tenant: TenantId,
    ctx: &Context,
    writer: W,
    formulas: CsvFormulas,
) -> Result<u64>
where
    E: Exporter,
    S: Store + ?Sized,
    W: Write + Send,
{
    let mut csv = csv::Writer::from_writer(writer);
    csv.write_record(E::COLUMNS).map_err(io)?;
    let count = for_each_record::<E, S>(store, tenant, ctx, &mut |record| {
        for cell in E::csv_cells(record)? {
            csv.write_field(formulas.write(&cell).as_bytes())
                .map_err(io)?;
        }
        csv.write_record(None::<&[u8]>).map_err(io)
    })
    .await?;
    csv.flush().map_err(io)?;
    Ok(count)
}

/// Writes the tenant's records of kind `E` as JSON Lines, each line a
/// record serialized; returns how many.
pub(super) async fn export_jsonl<E, S, W>(
    store: &S,
    tenant: TenantId,
    ctx: &Context,
    writer: W,
) -> Result<u64>
where
    E: Exporter,
    S: Store + ?Sized,
    W: Write + Send,
{
    let mut out = std::io::BufWriter::new(writer);
    let count = for_each_record::<E, S>(store, tenant, ctx, &mut |record| {
        serde_json::to_writer(&mut out, record).map_err(io)?;
        out.write_all(b"\n").map_err(io)
    })
    .await?;
    out.flush().map_err(io)?;
    Ok(count)
}

/// Each contact is one record, written as a [`Contact`] (JSON) or in the
/// columns of [`CONTACT_CSV_HEADER`].
impl Exporter for Contact {
    const COLUMNS: &'static [&'static str] = &CONTACT_CSV_HEADER;

    const CONTACTS_PER_READ: usize = 1000;

    type Record = ContactRecord;

    /// The names of each contact's tags, by name.
    type PageData = HashMap<ContactId, Vec<String>>;

    async fn page_data<'a>(
        tx: &'a mut dyn Transaction,
        contacts: &'a [Contact],
    ) -> Result<Self::PageData> {
        let records: Vec<RecordRef> = contacts.iter().map(|c| RecordRef::Contact(c.id)).collect();
        let tags = tx.tags_of_many(&records).await?;
        Ok(contacts
            .iter()
            .zip(tags)
            .map(|(c, tags)| {
                let names = tags.iter().map(|t| t.name.as_str().to_string()).collect();
                (c.id, names)
            })
            .collect())
    }

    async fn records_of<'a>(
        tx: &'a mut dyn Transaction,
        contact: &'a Contact,
        page: &'a Self::PageData,
        domains: &'a mut Domains,
        emit: &'a mut (dyn FnMut(&ContactRecord) -> Result<()> + Send),
    ) -> Result<u64> {
        let company_domain = domains.of(&mut *tx, contact.company_id).await?;
        let record = ContactRecord {
            contact: contact.clone(),
            company_domain,
            tags: page.get(&contact.id).cloned().unwrap_or_default(),
        };
        emit(&record).map(|()| 1)
    }

    fn csv_cells(r: &ContactRecord) -> Result<Vec<Cow<'_, str>>> {
        let c = &r.contact;
        let metadata = serde_json::to_string(c.metadata.as_map()).map_err(io)?;
        let time = |t: &chrono::DateTime<chrono::Utc>| {
            Cow::Owned(t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        };
        Ok(vec![
            c.id.to_string().into(),
            c.email.as_str().into(),
            c.first_name.as_str().into(),
            c.last_name.as_str().into(),
            c.company.as_ref().map_or("", |v| v.as_str()).into(),
            c.title.as_ref().map_or("", |v| v.as_str()).into(),
            c.phone.as_ref().map_or("", |v| v.as_str()).into(),
            c.lead_source.as_str().into(),
            metadata.into(),
            r.company_domain.as_deref().unwrap_or("").into(),
            c.owner.as_ref().map_or("", |o| o.as_str()).into(),
            super::row::tags_cell(r.tags.iter().map(String::as_str)).into(),
            c.score.to_string().into(),
            c.active.to_string().into(),
            time(&c.created_at),
            time(&c.updated_at),
            c.version.get().to_string().into(),
        ])
    }
}

/// Writes the tenant's contacts as CSV ([`CONTACT_CSV_HEADER`]), oldest
/// first; returns how many. What [`import_contacts_csv`](super::import_contacts_csv)
/// reads back.
///
/// A cell a spreadsheet would run as a formula (one starting with `=`, `+`,
/// `-`, `@`, tab or carriage return) is written with a `'` in front, as is
/// one starting with `'`; the importers remove it again (see
/// [`CsvFormulas`]). [`export_contacts_csv_with`] can write cells verbatim.
pub async fn export_contacts_csv<S, W>(
    store: &S,
    tenant: TenantId,
    ctx: &Context,
    writer: W,
) -> Result<u64>
where
    S: Store + ?Sized,
    W: Write + Send,
{
    export_contacts_csv_with(store, tenant, ctx, writer, CsvFormulas::Neutralise).await
}

/// [`export_contacts_csv`] with formula-like cells written as `formulas`
/// says: [`CsvFormulas::Verbatim`] writes every value exactly as stored
/// (read it back with [`ImportOptions::csv_formulas`](super::ImportOptions::csv_formulas)
/// set to `Verbatim` too), for programs, never for a spreadsheet.
pub async fn export_contacts_csv_with<S, W>(
    store: &S,
    tenant: TenantId,
    ctx: &Context,
    writer: W,
    formulas: CsvFormulas,
) -> Result<u64>
where
    S: Store + ?Sized,
    W: Write + Send,
{
    export_csv::<Contact, S, W>(store, tenant, ctx, writer, formulas).await
}

/// Writes the tenant's contacts as JSON Lines (each line a serialized
/// [`Contact`]), oldest first; returns how many.
pub async fn export_contacts_jsonl<S, W>(
    store: &S,
    tenant: TenantId,
    ctx: &Context,
    writer: W,
) -> Result<u64>
where
    S: Store + ?Sized,
    W: Write + Send,
{
    export_jsonl::<Contact, S, W>(store, tenant, ctx, writer).await
}
