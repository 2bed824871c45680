//! Activities out and in as JSON Lines or CSV, linked to their contacts by
//! email and to the deals of a deal import (see [`related`](super::related)
//! for what deals and activities share).
//!
//! An activity keeps its link to a deal when the deal was imported by the
//! same run of [`import_deals_jsonl`](super::import_deals_jsonl) (or
//! [`import_deals_csv`](super::import_deals_csv)): pass its
//! [`RelatedReport::ids`] to [`import_activities_jsonl`] (or
//! [`import_activities_csv`]).

use std::{
    collections::HashMap,
    io::{BufRead, Read, Write},
};

use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    CsvFormulas, check_batch_size,
    export::{export_csv, export_jsonl},
    read::{Line, read_csv_rows, read_lines},
    related::{
        BatchResults, BatchRow, ImportBatch, Owned, PageFuture, PagesFuture, RelatedReport, Text,
        import_batches, read_batch, refused_by_row, rows_naming, write_batch,
    },
};
use crate::{
    Context, Entity, Error, Store, TenantId, Transaction,
    domain::{Activity, Contact, ContactId, NewActivity, NewActivityDto},
    error::Result,
    store::PageRequest,
};

/// The columns of an activities CSV, in order: the fields of an activities
/// JSON line.
const ACTIVITY_COLUMNS: [&str; 9] = [
    "id",
    "contact_email",
    "deal_id",
    "kind",
    "direction",
    "subject",
    "body",
    "occurred_at",
    "created_at",
];

/// A contact's activities go out newest first, in its timeline's order.
impl Owned for Activity {
    const FIELDS: &'static [&'static str] = &ACTIVITY_COLUMNS;

    fn page<'a>(
        tx: &'a mut dyn Transaction,
        contact: ContactId,
        page: &'a PageRequest,
    ) -> PageFuture<'a, Self> {
        tx.timeline(contact, page)
    }

    fn first_pages<'a>(
        tx: &'a mut dyn Transaction,
        contacts: &'a [ContactId],
        limit: u32,
    ) -> PagesFuture<'a, Self> {
        tx.first_timeline_pages(contacts, limit)
    }

    fn line(&self, c: &Contact, _company_domain: Option<&str>) -> Value {
        json!({
            "id": self.id,
            "contact_email": c.email.as_str(),
            "deal_id": self.deal_id,
            "kind": self.kind,
            "direction": self.direction,
            "subject": self.subject.as_ref().map(|s| s.as_str()),
            "body": self.body,
            "occurred_at": self.occurred_at,
            "created_at": self.created_at,
        })
    }
}

/// Writes every activity of the tenant as JSON Lines, contact by contact,
/// each timeline newest first; returns how many. Each line: `id,
/// contact_email, deal_id, kind, direction, subject, body, occurred_at,
/// created_at`.
pub async fn export_activities_jsonl<S, W>(
    store: &S,
    tenant: TenantId,
    ctx: &Context,
    writer: W,
) -> Result<u64>
where
    S: Store + ?Sized,
    W: Write + Send,
{
    export_jsonl::<Activity, S, W>(store, tenant, ctx, writer).await
}

/// Writes every activity of the tenant as CSV, in the order of
/// [`export_activities_jsonl`], with a header row and one column per field
/// of its lines (same names and order; a missing value is a blank cell);
/// returns how many. What [`import_activities_csv`] reads back.
///
/// Formula-like cells are neutralised as by
/// [`export_deals_csv`](super::export_deals_csv);
/// [`export_activities_csv_with`] can write cells verbatim.
pub async fn export_activities_csv<S, W>(
    store: &S,
    tenant: TenantId,
    ctx: &Context,
    writer: W,
) -> Result<u64>
where
    S: Store + ?Sized,
    W: Write + Send,
{
    export_activities_csv_with(store, tenant, ctx, writer, CsvFormulas::Neutralise).await
}

/// [`export_activities_csv`] with formula-like cells written as `formulas`
/// says ([`CsvFormulas::Verbatim`]: exactly as stored, for programs only;
/// read it back with [`import_activities_csv_with`] and the same setting).
pub async fn export_activities_csv_with<S, W>(
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
    export_csv::<Activity, S, W>(store, tenant, ctx, writer, formulas).await
}

/// The fields of an activities line (or CSV row): the columns of an
/// export; another key refuses the line, naming it (`unknown_field`).
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ActivityLine {
    id: Text,
    contact_email: Text,
    deal_id: Text,
    kind: Text,
    direction: Text,
    subject: Text,
    body: Text,
    occurred_at: Text,
    created_at: Text,
}

/// Imports activities from JSON Lines (the lines
/// [`export_activities_jsonl`] writes, or objects with `contact_email,
/// kind` and optional `deal_id, direction, subject, body, occurred_at,
/// created_at`: when it was logged in the system it comes from, RFC 3339,
/// not in the future).
/// A `deal_id` is looked up in `deal_ids` (the [`RelatedReport::ids`] of
/// the deal import) and dropped when it is not there. Each batch of rows
/// is checked, then logged with one
/// [`log_activities`](crate::store::TimelineTx::log_activities) call (the
/// rows the store refuses reported and left out); a rejected row writes
/// nothing. A line with another key is refused, naming it (code
/// `unknown_field`).
///
/// Errors: as [`import_deals_jsonl`](super::import_deals_jsonl).
pub async fn import_activities_jsonl<S, R>(
    store: &S,
    tenant: TenantId,
    ctx: &Context,
    reader: R,
    deal_ids: &HashMap<String, String>,
    batch_size: usize,
) -> Result<RelatedReport>
where
    S: Store + ?Sized,
    R: BufRead + Send,
{
    let batch_size = check_batch_size(batch_size)?;
    let rows = ActivityRows(deal_ids);
    import_batches(store, tenant, ctx, read_lines(reader), batch_size, &rows).await
}

/// Imports activities from CSV with a header row: the rows
/// [`export_activities_csv`] writes, or any CSV whose columns are named as
/// the fields [`import_activities_jsonl`] reads (blank cells left out; a column of
/// another name ends the import before any row, naming it).
/// Each row goes through the same steps as a JSON line, a `deal_id` kept
/// only when `deal_ids` (the [`RelatedReport::ids`] of the deal import)
/// holds it. A cell that [`export_activities_csv`] neutralised (`'=…`)
/// reads as its value (`=…`).
///
/// Errors: as [`import_deals_jsonl`](super::import_deals_jsonl).
pub async fn import_activities_csv<S, R>(
    store: &S,
    tenant: TenantId,
    ctx: &Context,
    reader: R,
    deal_ids: &HashMap<String, String>,
    batch_size: usize,
) -> Result<RelatedReport>
where
    S: Store + ?Sized,
    R: Read + Send,
{
    import_activities_csv_with(
        store,
        tenant,
        ctx,
        reader,
        deal_ids,
        batch_size,
        CsvFormulas::Neutralise,
    )
    .await
}

/// [`import_activities_csv`] reading cells as `formulas` says
/// ([`CsvFormulas::Verbatim`]: exactly as they are, for a file written by
/// [`export_activities_csv_with`] with `Verbatim`).
pub async fn import_activities_csv_with<S, R>(
    store: &S,
    tenant: TenantId,
    ctx: &Context,
    reader: R,
    deal_ids: &HashMap<String, String>,
    batch_size: usize,
    formulas: CsvFormulas,
) -> Result<RelatedReport>
where
    S: Store + ?Sized,
    R: Read + Send,
{
    let batch_size = check_batch_size(batch_size)?;
    let rows = ActivityRows(deal_ids);
    let lines = read_csv_rows(reader, formulas, &ACTIVITY_COLUMNS);
    import_batches(store, tenant, ctx, lines, batch_size, &rows).await
}

/// Activities rows, linked to the deals of a deal import: the
/// [`RelatedReport::ids`] it gave.
struct ActivityRows<'d>(&'d HashMap<String, String>);

impl ImportBatch for ActivityRows<'_> {
    fn import_batch<'a>(
        &'a self,
        tx: &'a mut dyn Transaction,
        lines: &'a [Line],
    ) -> impl Future<Output = Result<BatchResults>> + Send + 'a {
        import_activities(tx, lines, self.0)
    }
}

/// Logs a batch of activities rows: every row read and checked first (its
/// contact looked up by email with the others', in one read), then the
/// rows that pass logged with one [`log_activities`] call. The rows the
/// store refuses (every row naming a contact or deal deleted meanwhile,
/// or one row naming a deal of another contact) are reported, and the
/// batch is logged again without them: the refused call wrote nothing.
///
/// [`log_activities`]: crate::store::TimelineTx::log_activities
async fn import_activities(
    tx: &mut dyn Transaction,
    lines: &[Line],
    deal_ids: &HashMap<String, String>,
) -> Result<BatchResults> {
    let mut out: BatchResults = Vec::with_capacity(lines.len());
    let read = read_batch(
        tx,
        lines,
        |f: &ActivityLine| f.contact_email.get(),
        &mut out,
    )
    .await?;
    // The rows to log, with their index in `lines`.
    let mut pending: Vec<(usize, Option<String>, NewActivity)> = Vec::new();
    for (i, row) in read.into_iter().enumerate() {
        let Some((fields, contact)) = row else {
            continue;
        };
        let dto = NewActivityDto {
            contact_id: Some(contact.to_string()),
            deal_id: fields.deal_id.id().and_then(|d| deal_ids.get(&d).cloned()),
            kind: fields.kind.get(),
            direction: fields.direction.get(),
            subject: fields.subject.get(),
            body: fields.body.get(),
            occurred_at: fields.occurred_at.get(),
            created_at: fields.created_at.get(),
        };
        match NewActivity::try_from(dto).and_then(NewActivity::checked) {
            Ok(new) => pending.push((i, fields.id.id(), new)),
            Err(v) => out[i] = Err(v.as_slice().to_vec()),
        }
    }
    write_batch(tx, pending, &mut out).await?;
    Ok(out)
}

/// A batch of activities is logged with one
/// [`log_activities`](crate::store::TimelineTx::log_activities) call.
impl BatchRow for NewActivity {
    async fn write(tx: &mut dyn Transaction, rows: &[Self]) -> Result<Vec<String>> {
        let logged = tx.log_activities(rows).await?;
        Ok(logged.into_iter().map(|a| a.id.to_string()).collect())
    }

    /// The one a validation error names, or those naming the contact or
    /// deal not found. A row refused on its `deal_id` (a deal of another
    /// contact) refuses with it every row naming the same deal on the same
    /// contact, as the store refuses each the same way: a file of rows
    /// linking one contact's activities to another's deal took one call
    /// per row.
    fn refused(e: &Error, rows: &[Self]) -> Vec<usize> {
        match e {
            Error::NotFound {
                entity: Entity::Deal,
                id,
            } => rows_naming(rows, id, |r| r.deal_id.map(|d| d.to_string())),
            Error::Validation(v) => {
                let on_deal = v
                    .as_slice()
                    .iter()
                    .filter_map(|f| crate::store::batch_row(&f.field))
                    .find(|(i, field)| *field == "deal_id" && *i < rows.len());
                match on_deal {
                    Some((i, _)) => {
                        let named = (rows[i].contact_id, rows[i].deal_id);
                        (0..rows.len())
                            .filter(|j| (rows[*j].contact_id, rows[*j].deal_id) == named)
                            .collect()
                    }
                    None => refused_by_row(e, rows, |r| r.contact_id),
                }
            }
            _ => refused_by_row(e, rows, |r| r.contact_id),
        }
    }
}
