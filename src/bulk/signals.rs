//! Behavioural signals out and in as JSON Lines or CSV, linked to their
//! contacts by email as activities are (see [`related`](super::related)
//! for what they share).
//!
//! An export holds every signal of the tenant with its contact's email,
//! its kind and when it happened (RFC 3339, to the microsecond); imported
//! into another tenant holding the same contacts, it gives the same
//! signals, and each moves its contact's live score and freshness as
//! [`record_signal`](crate::store::TimelineTx::record_signal) would (an
//! `email_bounced` marks the email invalid).

use std::io::{BufRead, Read, Write};

use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    CsvFormulas, check_batch_size,
    export::{export_csv, export_jsonl},
    read::{Line, read_csv_rows, read_lines},
    related::{
        BatchResults, BatchRow, ImportBatch, Owned, PageFuture, PagesFuture, RelatedReport, Text,
        import_batches, read_batch, refused_by_row, write_batch,
    },
};
use crate::{
    Context, Error, Store, TenantId, Transaction,
    domain::{Contact, ContactId, NewSignal, NewSignalDto, Page, Signal},
    error::Result,
    store::PageRequest,
};

/// The columns of a signals CSV, in order: the fields of a signals JSON
/// line.
const SIGNAL_COLUMNS: [&str; 4] = ["id", "contact_email", "kind", "occurred_at"];

/// A contact's signals go out oldest first, in the order of
/// [`list_signals`](crate::store::TimelineTx::list_signals), as one page.
impl Owned for Signal {
    const FIELDS: &'static [&'static str] = &SIGNAL_COLUMNS;

    fn page<'a>(
        tx: &'a mut dyn Transaction,
        contact: ContactId,
        _page: &'a PageRequest,
    ) -> PageFuture<'a, Self> {
        Box::pin(async move {
            Ok(Page {
                items: tx.list_signals(contact).await?,
                next_cursor: None,
            })
        })
    }

    /// Every signal of each contact, with one
    /// [`signals_of_many`](crate::store::TimelineTx::signals_of_many).
    fn first_pages<'a>(
        tx: &'a mut dyn Transaction,
        contacts: &'a [ContactId],
        _limit: u32,
    ) -> PagesFuture<'a, Self> {
        Box::pin(async move {
            Ok(tx
                .signals_of_many(contacts)
                .await?
                .into_iter()
                .map(|items| Page {
                    items,
                    next_cursor: None,
                })
                .collect())
        })
    }

    fn line(&self, c: &Contact, _company_domain: Option<&str>) -> Value {
        json!({
            "id": self.id,
            "contact_email": c.email.as_str(),
            "kind": self.kind,
            "occurred_at": self.occurred_at,
        })
    }
}

/// Writes every signal of the tenant as JSON Lines, contact by contact,
/// each contact's oldest first; returns how many. Each line: `id,
/// contact_email, kind, occurred_at` (RFC 3339, to the microsecond): what
/// [`import_signals_jsonl`] reads back.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use crm_core::{Context, InMemoryStore, StoreExt, TenantId, bulk};
/// use crm_core::domain::{Email, NewContact, NewSignal, PersonName, SignalKind};
///
/// let store = InMemoryStore::new();
/// let tenant = TenantId::new();
/// let ctx = Context::system("export");
/// let crm = store.scope(tenant, &ctx);
/// let ada = crm
///     .create_contact(NewContact::new(
///         Email::parse("ada@example.com").unwrap(),
///         PersonName::parse("Ada").unwrap(),
///         PersonName::parse("Lovelace").unwrap(),
///     ))
///     .await
///     .unwrap();
/// crm.record_signal(NewSignal::new(ada.id, SignalKind::PAGE_VIEW)).await.unwrap();
///
/// let mut out = Vec::new();
/// let n = bulk::export_signals_jsonl(&store, tenant, &ctx, &mut out).await.unwrap();
/// assert_eq!(n, 1);
/// let text = String::from_utf8(out).unwrap();
/// assert!(text.contains(r#""contact_email":"ada@example.com""#));
/// assert!(text.contains(r#""kind":"page_view""#));
/// # });
/// ```
pub async fn export_signals_jsonl<S, W>(
    store: &S,
    tenant: TenantId,
    ctx: &Context,
    writer: W,
) -> Result<u64>
where
    S: Store + ?Sized,
    W: Write + Send,
{
    export_jsonl::<Signal, S, W>(store, tenant, ctx, writer).await
}

/// Writes every signal of the tenant as CSV, in the order of
/// [`export_signals_jsonl`], with a header row and one column per field
/// of its lines (same names and order); returns how many. What
/// [`import_signals_csv`] reads back.
///
/// Formula-like cells are neutralised as by
/// [`export_activities_csv`](super::export_activities_csv);
/// [`export_signals_csv_with`] can write cells verbatim.
pub async fn export_signals_csv<S, W>(
    store: &S,
    tenant: TenantId,
    ctx: &Context,
    writer: W,
) -> Result<u64>
where
    S: Store + ?Sized,
    W: Write + Send,
{
    export_signals_csv_with(store, tenant, ctx, writer, CsvFormulas::Neutralise).await
}

/// [`export_signals_csv`] with formula-like cells written as `formulas`
/// says ([`CsvFormulas::Verbatim`]: exactly as stored, for programs only;
/// read it back with [`import_signals_csv_with`] and the same setting).
pub async fn export_signals_csv_with<S, W>(
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
    export_csv::<Signal, S, W>(store, tenant, ctx, writer, formulas).await
}

/// The fields of a signals line (or CSV row): the columns of an export;
/// another key refuses the line, naming it (`unknown_field`).
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct SignalLine {
    id: Text,
    contact_email: Text,
    kind: Text,
    occurred_at: Text,
}

/// Imports signals from JSON Lines (the lines [`export_signals_jsonl`]
/// writes, or objects with `contact_email, kind` and optional
/// `occurred_at`, RFC 3339 within years 1–9999; when absent, the signal
/// happened when it is recorded). The contact is found by its email in
/// any casing; the kind is checked as
/// [`NewSignalDto`](crate::domain::NewSignalDto) checks it. Each batch of
/// rows is checked, then recorded with one
/// [`record_signals`](crate::store::TimelineTx::record_signals) call (the
/// rows the store refuses, such as a contact deleted meanwhile, reported
/// and left out); a rejected row writes nothing, and is reported with its
/// row number and the field at fault (a key that is not one of these
/// too: code `unknown_field`). The report's `ids` maps each line's `id` to
/// the id of the signal recorded.
///
/// Errors: as [`import_deals_jsonl`](super::import_deals_jsonl).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use crm_core::{Context, InMemoryStore, StoreExt, TenantId, bulk};
/// use crm_core::domain::{Email, NewContact, PersonName};
///
/// let store = InMemoryStore::new();
/// let tenant = TenantId::new();
/// let ctx = Context::system("import");
/// store
///     .scope(tenant, &ctx)
///     .create_contact(NewContact::new(
///         Email::parse("ada@example.com").unwrap(),
///         PersonName::parse("Ada").unwrap(),
///         PersonName::parse("Lovelace").unwrap(),
///     ))
///     .await
///     .unwrap();
/// let file = r#"{"contact_email": "ADA@example.com", "kind": "demo_request", "occurred_at": "2026-03-01T09:30:00Z"}
/// {"contact_email": "ada@example.com", "kind": "Not A Kind"}
/// "#;
/// let report = bulk::import_signals_jsonl(&store, tenant, &ctx, file.as_bytes(), 500)
///     .await
///     .unwrap();
/// assert_eq!(report.created, 1);
/// assert_eq!(report.rejected[0].row, 2);
/// assert_eq!(report.rejected[0].errors[0].field, "kind");
/// # });
/// ```
pub async fn import_signals_jsonl<S, R>(
    store: &S,
    tenant: TenantId,
    ctx: &Context,
    reader: R,
    batch_size: usize,
) -> Result<RelatedReport>
where
    S: Store + ?Sized,
    R: BufRead + Send,
{
    let batch_size = check_batch_size(batch_size)?;
    import_batches(
        store,
        tenant,
        ctx,
        read_lines(reader),
        batch_size,
        &SignalRows,
    )
    .await
}

/// Imports signals from CSV with a header row: the rows
/// [`export_signals_csv`] writes, or any CSV whose columns are named as
/// the fields [`import_signals_jsonl`] reads (blank cells left out; a column of
/// another name ends the import before any row, naming it). Each
/// row goes through the same steps as a JSON line. A cell that
/// [`export_signals_csv`] neutralised (`'=…`) reads as its value (`=…`).
///
/// Errors: as [`import_deals_jsonl`](super::import_deals_jsonl).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use crm_core::{Context, InMemoryStore, TenantId, bulk};
///
/// let store = InMemoryStore::new();
/// let tenant = TenantId::new();
/// let ctx = Context::system("import");
/// let csv = "contact_email,kind,occurred_at\nnobody@example.com,page_view,\n";
/// let report = bulk::import_signals_csv(&store, tenant, &ctx, csv.as_bytes(), 500)
///     .await
///     .unwrap();
/// assert_eq!(report.created, 0);
/// assert_eq!(report.rejected[0].row, 1);
/// assert_eq!(report.rejected[0].errors[0].field, "contact_email");
/// # });
/// ```
pub async fn import_signals_csv<S, R>(
    store: &S,
    tenant: TenantId,
    ctx: &Context,
    reader: R,
    batch_size: usize,
) -> Result<RelatedReport>
where
    S: Store + ?Sized,
    R: Read + Send,
{
    import_signals_csv_with(
        store,
        tenant,
        ctx,
        reader,
        batch_size,
        CsvFormulas::Neutralise,
    )
    .await
}

/// [`import_signals_csv`] reading cells as `formulas` says
/// ([`CsvFormulas::Verbatim`]: exactly as they are, for a file written by
/// [`export_signals_csv_with`] with `Verbatim`).
pub async fn import_signals_csv_with<S, R>(
    store: &S,
    tenant: TenantId,
    ctx: &Context,
    reader: R,
    batch_size: usize,
    formulas: CsvFormulas,
) -> Result<RelatedReport>
where
    S: Store + ?Sized,
    R: Read + Send,
{
    let batch_size = check_batch_size(batch_size)?;
    let lines = read_csv_rows(reader, formulas, &SIGNAL_COLUMNS);
    import_batches(store, tenant, ctx, lines, batch_size, &SignalRows).await
}

/// Signals rows.
struct SignalRows;

impl ImportBatch for SignalRows {
    fn import_batch<'a>(
        &'a self,
        tx: &'a mut dyn Transaction,
        lines: &'a [Line],
    ) -> impl Future<Output = Result<BatchResults>> + Send + 'a {
        import_signals(tx, lines)
    }
}

/// Records a batch of signals rows: every row read and checked first (its
/// contact looked up by email with the others', in one read), then the
/// rows that pass recorded with one [`record_signals`] call. The rows the
/// store refuses (every row naming a contact deleted meanwhile) are
/// reported, and the batch is recorded again without them: the refused
/// call wrote nothing.
///
/// [`record_signals`]: crate::store::TimelineTx::record_signals
async fn import_signals(tx: &mut dyn Transaction, lines: &[Line]) -> Result<BatchResults> {
    let mut out: BatchResults = Vec::with_capacity(lines.len());
    let read = read_batch(tx, lines, |f: &SignalLine| f.contact_email.get(), &mut out).await?;
    // The rows to record, with their index in `lines`.
    let mut pending: Vec<(usize, Option<String>, NewSignal)> = Vec::new();
    for (i, row) in read.into_iter().enumerate() {
        let Some((fields, contact)) = row else {
            continue;
        };
        let dto = NewSignalDto {
            contact_id: Some(contact.to_string()),
            kind: fields.kind.get(),
            occurred_at: fields.occurred_at.get(),
        };
        match NewSignal::try_from(dto).and_then(NewSignal::checked) {
            Ok(new) => pending.push((i, fields.id.id(), new)),
            Err(v) => out[i] = Err(v.as_slice().to_vec()),
        }
    }
    write_batch(tx, pending, &mut out).await?;
    Ok(out)
}

/// A batch of signals is recorded with one
/// [`record_signals`](crate::store::TimelineTx::record_signals) call.
impl BatchRow for NewSignal {
    async fn write(tx: &mut dyn Transaction, rows: &[Self]) -> Result<Vec<String>> {
        let recorded = tx.record_signals(rows).await?;
        Ok(recorded.into_iter().map(|s| s.id.to_string()).collect())
    }

    /// The one a validation error names, or those naming the contact not
    /// found.
    fn refused(e: &Error, rows: &[Self]) -> Vec<usize> {
        refused_by_row(e, rows, |r| r.contact_id)
    }
}
