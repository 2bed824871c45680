//! Streaming export of a tenant's contacts to CSV and JSON Lines: keyset
//! pages of 1,000 through one transaction, written as they come.

use std::io::Write;

use super::CsvFormulas;
use crate::{
    Context, Store, TenantId,
    domain::Contact,
    error::{Error, Result},
    store::{ContactQuery, ContactSort, PageRequest},
};

/// The CSV columns of an export, in order. `metadata` holds the custom
/// fields as a JSON object.
pub const CONTACT_CSV_HEADER: [&str; 14] = [
    "id",
    "email",
    "first_name",
    "last_name",
    "company",
    "title",
    "phone",
    "lead_source",
    "metadata",
    "score",
    "active",
    "created_at",
    "updated_at",
    "version",
];

fn io(e: impl std::fmt::Display) -> Error {
    Error::backend(format!("cannot write the export: {e}"))
}

/// Writes one CSV record, each cell as `formulas` says.
pub(super) fn write_csv_record<'a, W: Write>(
    csv: &mut csv::Writer<W>,
    formulas: CsvFormulas,
    cells: impl IntoIterator<Item = &'a str>,
) -> Result<()> {
    for cell in cells {
        csv.write_field(formulas.write(cell).as_bytes())
            .map_err(io)?;
    }
    csv.write_record(None::<&[u8]>).map_err(io)
}

/// Pages through the tenant's contacts, oldest first, calling `each`.
async fn for_each_contact<S: Store + ?Sized>(
    store: &S,
    tenant: TenantId,
    ctx: &Context,
    mut each: impl FnMut(&Contact) -> Result<()> + Send,
) -> Result<u64> {
    let mut tx = store.begin(tenant, ctx.clone()).await?;
    let mut query = ContactQuery::new()
        .with_sort(ContactSort::CreatedAsc)
        .with_page(PageRequest::first(1000));
    let mut count = 0;
    loop {
        let page = tx.search_contacts(&query).await?;
        for c in &page.items {
            each(c)?;
            count += 1;
        }
        match page.next_cursor {
            Some(cursor) => query = query.after(cursor),
            None => break,
        }
    }
    tx.commit().await?;
    Ok(count)
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
    let mut csv = csv::Writer::from_writer(writer);
    csv.write_record(CONTACT_CSV_HEADER).map_err(io)?;
    let count = for_each_contact(store, tenant, ctx, |c| {
        let metadata = serde_json::to_string(c.metadata.as_map()).map_err(io)?;
        let opt = |v: Option<&str>| v.unwrap_or("").to_string();
        let record = [
            c.id.to_string(),
            c.email.as_str().to_string(),
            c.first_name.as_str().to_string(),
            c.last_name.as_str().to_string(),
            opt(c.company.as_ref().map(|v| v.as_str())),
            opt(c.title.as_ref().map(|v| v.as_str())),
            opt(c.phone.as_ref().map(|v| v.as_str())),
            c.lead_source.as_str().to_string(),
            metadata,
            c.score.to_string(),
            c.active.to_string(),
            c.created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            c.updated_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            c.version.get().to_string(),
        ];
        write_csv_record(&mut csv, formulas, record.iter().map(String::as_str))
    })
    .await?;
    csv.flush().map_err(io)?;
    Ok(count)
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
    let mut out = std::io::BufWriter::new(writer);
    let count = for_each_contact(store, tenant, ctx, |c| {
        serde_json::to_writer(&mut out, c).map_err(io)?;
        out.write_all(b"\n").map_err(io)
    })
    .await?;
    out.flush().map_err(io)?;
    Ok(count)
}
