//! Deals and activities in and out as JSON Lines or CSV, linked to contacts
//! by email: an export writes each record flat with its contact's email; an
//! import finds the contact by that email (in any casing) in the tenant. A
//! CSV has one column per field of the JSON lines, and each of its rows is
//! read into the object a line would hold and imported the same way.
//!
//! Import is per row through the store's ordinary operations (deals are
//! few next to contacts), one transaction per batch in best effort. A deal
//! exported in a closed stage is created in its pipeline's first open stage
//! and moved there (stamping `won_at`/`lost_at` anew). Activities keep
//! their link to a deal when the deal was imported by the same run of
//! [`import_deals_jsonl`] (or [`import_deals_csv`]): pass its
//! [`RelatedReport::ids`] to [`import_activities_jsonl`] (or
//! [`import_activities_csv`]).

use std::{
    collections::HashMap,
    io::{BufRead, Read, Write},
};

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::import::RejectedRow;
use crate::{
    Context, Store, TenantId, Transaction,
    domain::{
        ContactId, DealId, Email, LostReason, NewActivity, NewActivityDto, NewDeal, NewDealDto,
        StageKey, StageKind,
    },
    error::{Error, FieldError, Result},
    store::{ContactQuery, ContactSort, PageRequest},
};

/// What an import of deals or activities did.
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

fn io(e: impl std::fmt::Display) -> Error {
    Error::backend(format!("cannot write the export: {e}"))
}

/// The columns of a deals CSV, in order: the fields of a deals JSON line.
const DEAL_COLUMNS: [&str; 14] = [
    "id",
    "contact_email",
    "title",
    "amount",
    "currency",
    "pipeline",
    "stage",
    "expected_close_date",
    "lost_reason",
    "won_at",
    "lost_at",
    "created_at",
    "updated_at",
    "version",
];

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

/// Calls `emit` with every deal of the tenant as its flat JSON object,
/// contact by contact (oldest contact first, each contact's deals newest
/// first); returns how many.
async fn for_each_deal<S, F>(store: &S, tenant: TenantId, ctx: &Context, mut emit: F) -> Result<u64>
where
    S: Store + ?Sized,
    F: FnMut(Value) -> Result<()> + Send,
{
    let mut tx = store.begin(tenant, ctx.clone()).await?;
    let mut count = 0;
    let mut query = ContactQuery::new()
        .sort(ContactSort::CreatedAsc)
        .page(PageRequest::first(1000));
    loop {
        let page = tx.search_contacts(&query).await?;
        for c in &page.items {
            let mut deals = PageRequest::first(1000);
            loop {
                let p = tx.list_deals_for_contact(c.id, &deals).await?;
                for d in &p.items {
                    emit(json!({
                        "id": d.id,
                        "contact_email": c.email.as_str(),
                        "title": d.title.as_str(),
                        "amount": d.amount.amount().to_string(),
                        "currency": d.amount.currency().code(),
                        "pipeline": d.pipeline.as_str(),
                        "stage": d.stage.as_str(),
                        "expected_close_date": d.expected_close_date,
                        "lost_reason": d.lost_reason.as_ref().map(|r| r.as_str()),
                        "won_at": d.won_at,
                        "lost_at": d.lost_at,
                        "created_at": d.created_at,
                        "updated_at": d.updated_at,
                        "version": d.version.get(),
                    }))?;
                    count += 1;
                }
                match p.next_cursor {
                    Some(cursor) => deals.cursor = Some(cursor),
                    None => break,
                }
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

/// Calls `emit` with every activity of the tenant as its flat JSON object,
/// contact by contact, each timeline newest first; returns how many.
async fn for_each_activity<S, F>(
    store: &S,
    tenant: TenantId,
    ctx: &Context,
    mut emit: F,
) -> Result<u64>
where
    S: Store + ?Sized,
    F: FnMut(Value) -> Result<()> + Send,
{
    let mut tx = store.begin(tenant, ctx.clone()).await?;
    let mut count = 0;
    let mut query = ContactQuery::new()
        .sort(ContactSort::CreatedAsc)
        .page(PageRequest::first(1000));
    loop {
        let page = tx.search_contacts(&query).await?;
        for c in &page.items {
            let mut acts = PageRequest::first(1000);
            loop {
                let p = tx.timeline(c.id, &acts).await?;
                for a in &p.items {
                    emit(json!({
                        "id": a.id,
                        "contact_email": c.email.as_str(),
                        "deal_id": a.deal_id,
                        "kind": a.kind,
                        "direction": a.direction,
                        "subject": a.subject.as_ref().map(|s| s.as_str()),
                        "body": a.body,
                        "occurred_at": a.occurred_at,
                        "created_at": a.created_at,
                    }))?;
                    count += 1;
                }
                match p.next_cursor {
                    Some(cursor) => acts.cursor = Some(cursor),
                    None => break,
                }
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

/// Writes one JSON object and a newline.
fn write_line<W: Write>(out: &mut W, record: &Value) -> Result<()> {
    serde_json::to_writer(&mut *out, record).map_err(io)?;
    out.write_all(b"\n").map_err(io)
}

/// Writes one flat JSON object as a CSV row of `columns`: a string as it
/// is, `null` or a missing field as a blank cell, anything else as JSON.
fn write_csv_row<W: Write>(
    csv: &mut csv::Writer<W>,
    columns: &[&str],
    record: &Value,
) -> Result<()> {
    let cells = columns.iter().map(|c| match record.get(*c) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    });
    csv.write_record(cells).map_err(io)
}

/// Writes every deal of the tenant as JSON Lines, contact by contact
/// (oldest contact first, each contact's deals newest first); returns how
/// many. Each line: `id, contact_email, title, amount` (a string),
/// `currency, pipeline, stage, expected_close_date, lost_reason, won_at,
/// lost_at, created_at, updated_at, version`.
pub async fn export_deals_jsonl<S, W>(
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
    let count = for_each_deal(store, tenant, ctx, |d| write_line(&mut out, &d)).await?;
    out.flush().map_err(io)?;
    Ok(count)
}

/// Writes every deal of the tenant as CSV, in the order of
/// [`export_deals_jsonl`], with a header row and one column per field of
/// its lines (same names and order; a missing value is a blank cell);
/// returns how many. What [`import_deals_csv`] reads back.
pub async fn export_deals_csv<S, W>(
    store: &S,
    tenant: TenantId,
    ctx: &Context,
    writer: W,
) -> Result<u64>
where
    S: Store + ?Sized,
    W: Write + Send,
{
    let mut csv = csv::Writer::from_writer(writer);
    csv.write_record(DEAL_COLUMNS).map_err(io)?;
    let count = for_each_deal(store, tenant, ctx, |d| {
        write_csv_row(&mut csv, &DEAL_COLUMNS, &d)
    })
    .await?;
    csv.flush().map_err(io)?;
    Ok(count)
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
    let mut out = std::io::BufWriter::new(writer);
    let count = for_each_activity(store, tenant, ctx, |a| write_line(&mut out, &a)).await?;
    out.flush().map_err(io)?;
    Ok(count)
}

/// Writes every activity of the tenant as CSV, in the order of
/// [`export_activities_jsonl`], with a header row and one column per field
/// of its lines (same names and order; a missing value is a blank cell);
/// returns how many. What [`import_activities_csv`] reads back.
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
    let mut csv = csv::Writer::from_writer(writer);
    csv.write_record(ACTIVITY_COLUMNS).map_err(io)?;
    let count = for_each_activity(store, tenant, ctx, |a| {
        write_csv_row(&mut csv, &ACTIVITY_COLUMNS, &a)
    })
    .await?;
    csv.flush().map_err(io)?;
    Ok(count)
}

/// One JSON line: its row, line and object, or why it is not one.
struct Line {
    row: u64,
    line: u64,
    object: std::result::Result<Map<String, Value>, FieldError>,
}

fn read_lines<R: BufRead>(reader: R) -> impl Iterator<Item = Result<Line>> {
    let mut row = 0;
    reader
        .split(b'\n')
        .enumerate()
        .filter_map(move |(i, bytes)| {
            let bytes = match bytes {
                Ok(b) => b,
                Err(e) => return Some(Err(Error::backend(format!("cannot read the file: {e}")))),
            };
            let text = bytes.trim_ascii();
            if text.is_empty() {
                return None;
            }
            row += 1;
            Some(Ok(Line {
                row,
                line: i as u64 + 1,
                object: serde_json::from_slice(text).map_err(|e| {
                    FieldError::new(
                        "row",
                        "invalid_format",
                        format!("is not a JSON object ({e})"),
                    )
                }),
            }))
        })
}

/// The rows of a CSV file with a header row, each as the object a JSON
/// line would hold: a header (trimmed, any casing) names the field, a
/// non-blank cell is its value as a string, a blank cell leaves it out.
/// Rows and lines are numbered as [`import_contacts_csv`](super::import_contacts_csv)
/// numbers them: data rows from 1, the line a row starts on from 1.
fn read_csv_rows<R: Read>(reader: R) -> impl Iterator<Item = Result<Line>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(reader);
    let mut header = csv::ByteRecord::new();
    let mut columns = Vec::new();
    let mut ended = false;
    let mut failed = None;
    match reader.read_byte_record(&mut header) {
        Ok(true) => {
            columns = header
                .iter()
                .map(|h| {
                    String::from_utf8_lossy(h)
                        .trim_start_matches('\u{feff}')
                        .trim()
                        .to_ascii_lowercase()
                })
                .collect::<Vec<_>>();
        }
        Ok(false) => ended = true,
        Err(e) => failed = Some(csv_error(e)),
    }
    let mut row = 0;
    let mut record = csv::ByteRecord::new();
    std::iter::from_fn(move || {
        if let Some(e) = failed.take() {
            ended = true;
            return Some(Err(e));
        }
        if ended {
            return None;
        }
        let more = match reader.read_byte_record(&mut record) {
            Ok(more) => more,
            Err(e) if matches!(e.kind(), csv::ErrorKind::Io(_)) => {
                ended = true;
                return Some(Err(csv_error(e)));
            }
            Err(e) => {
                row += 1;
                return Some(Ok(Line {
                    row,
                    line: e.position().map_or(0, |p| p.line()),
                    object: Err(FieldError::new("row", "invalid_format", e.to_string())),
                }));
            }
        };
        if !more {
            ended = true;
            return None;
        }
        row += 1;
        let line = record.position().map_or(0, |p| p.line());
        Some(Ok(Line {
            row,
            line,
            object: csv_object(&columns, &record),
        }))
    })
}

fn csv_error(e: csv::Error) -> Error {
    Error::backend(format!("cannot read the CSV file: {e}"))
}

/// One CSV row as the object a JSON line would hold.
fn csv_object(
    columns: &[String],
    record: &csv::ByteRecord,
) -> std::result::Result<Map<String, Value>, FieldError> {
    if record.len() != columns.len() {
        return Err(FieldError::new(
            "row",
            "invalid_format",
            format!(
                "has {} fields, the header has {}",
                record.len(),
                columns.len()
            ),
        ));
    }
    let mut object = Map::new();
    for (column, cell) in columns.iter().zip(record.iter()) {
        let cell = std::str::from_utf8(cell).map_err(|e| {
            FieldError::new(
                column.as_str(),
                "invalid_format",
                format!("is not valid UTF-8 (bad byte at {})", e.valid_up_to()),
            )
        })?;
        if !cell.trim().is_empty() {
            object.insert(column.clone(), Value::String(cell.to_string()));
        }
    }
    Ok(object)
}

fn text(object: &Map<String, Value>, key: &str) -> Option<String> {
    match object.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

/// Finds the contact a row names by `contact_email`.
async fn contact_of(
    tx: &mut dyn Transaction,
    object: &Map<String, Value>,
) -> Result<std::result::Result<ContactId, FieldError>> {
    let Some(address) = text(object, "contact_email") else {
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

/// Field errors of a store error caused by the row, or the error itself.
fn row_errors(e: Error) -> Result<Vec<FieldError>> {
    match e {
        Error::Validation(v) => Ok(v.as_slice().to_vec()),
        Error::InvalidTransition { .. } | Error::NotFound { .. } => Ok(vec![FieldError::new(
            "stage",
            "invalid_value",
            e.to_string(),
        )]),
        other => Err(other),
    }
}

/// Imports deals from JSON Lines (the lines [`export_deals_jsonl`] writes,
/// or objects with `contact_email, title, amount, currency` and optional
/// `pipeline, stage, expected_close_date, lost_reason`), `batch_size` rows
/// per transaction. Rows that fail are rejected with their errors; the
/// others are kept.
pub async fn import_deals_jsonl<S, R>(
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
    import_deals(store, tenant, ctx, read_lines(reader), batch_size).await
}

/// Imports deals from CSV with a header row: the rows
/// [`export_deals_csv`] writes, or any CSV whose columns are named as the
/// fields [`import_deals_jsonl`] reads (blank cells left out). Each row
/// goes through the same steps as a JSON line; rows that fail are rejected
/// with their row number and errors, the others are kept.
pub async fn import_deals_csv<S, R>(
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
    import_deals(store, tenant, ctx, read_csv_rows(reader), batch_size).await
}

async fn import_deals<S: Store + ?Sized>(
    store: &S,
    tenant: TenantId,
    ctx: &Context,
    mut lines: impl Iterator<Item = Result<Line>> + Send,
    batch_size: usize,
) -> Result<RelatedReport> {
    let mut report = RelatedReport::default();
    let mut done = false;
    while !done {
        let mut tx = store.begin(tenant, ctx.clone()).await?;
        for _ in 0..batch_size.max(1) {
            let Some(line) = lines.next().transpose()? else {
                done = true;
                break;
            };
            report.rows += 1;
            match import_deal(&mut *tx, &line, store.pipelines()).await? {
                Ok((old, id)) => {
                    report.created += 1;
                    if let Some(old) = old {
                        report.ids.insert(old, id.to_string());
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

type RowResult<T> = std::result::Result<T, Vec<FieldError>>;

async fn import_deal(
    tx: &mut dyn Transaction,
    line: &Line,
    pipelines: &crate::domain::Pipelines,
) -> Result<RowResult<(Option<String>, DealId)>> {
    let object = match &line.object {
        Ok(o) => o,
        Err(e) => return Ok(Err(vec![e.clone()])),
    };
    let mut errors = Vec::new();
    let contact = match contact_of(tx, object).await? {
        Ok(id) => Some(id),
        Err(e) => {
            errors.push(e);
            None
        }
    };
    let pipelines_stage = text(object, "stage");
    let dto = NewDealDto {
        contact_id: Some(
            contact
                .unwrap_or_else(|| ContactId::from_uuid(uuid::Uuid::nil()))
                .to_string(),
        ),
        title: text(object, "title"),
        amount: text(object, "amount").map(Value::String),
        currency: text(object, "currency"),
        pipeline: text(object, "pipeline"),
        stage: None,
        expected_close_date: text(object, "expected_close_date"),
    };
    let lost_reason = match text(object, "lost_reason").map(|r| LostReason::parse(&r)) {
        Some(Ok(r)) => Some(r),
        Some(Err(e)) => {
            errors.push(e);
            None
        }
        None => None,
    };
    let new = match NewDeal::try_from(dto) {
        Ok(n) => Some(n),
        Err(v) => {
            errors.extend(v.as_slice().iter().cloned());
            None
        }
    };
    let (Some(mut new), true) = (new, errors.is_empty()) else {
        return Ok(Err(errors));
    };
    // An open stage is a starting stage; a closed one is reached by a move.
    let target = pipelines_stage.map(|s| StageKey::parse(&s));
    let target = match target {
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => return Ok(Err(vec![e])),
        None => None,
    };
    let closed = match &target {
        Some(stage) => {
            let kind = pipelines
                .get(&new.pipeline)
                .and_then(|p| p.stage(stage).map(|d| d.kind));
            match kind {
                Some(StageKind::Open) => {
                    new.stage = Some(stage.clone());
                    false
                }
                Some(_) => true,
                None => {
                    return Ok(Err(vec![FieldError::new(
                        "stage",
                        "unknown_value",
                        format!("{stage} is not a stage of the pipeline {}", new.pipeline),
                    )]));
                }
            }
        }
        None => false,
    };
    let deal = match tx.create_deal(new).await {
        Ok(d) => d,
        Err(e) => return row_errors(e).map(Err),
    };
    let mut id = deal.id;
    if let (true, Some(stage)) = (closed, target) {
        match tx
            .move_deal(deal.id, deal.version, &stage, lost_reason)
            .await
        {
            Ok(d) => id = d.id,
            Err(e) => {
                tx.delete_deal(deal.id).await?;
                return row_errors(e).map(Err);
            }
        }
    }
    Ok(Ok((text(object, "id"), id)))
}

/// Imports activities from JSON Lines (the lines
/// [`export_activities_jsonl`] writes, or objects with `contact_email,
/// kind` and optional `deal_id, direction, subject, body, occurred_at`).
/// A `deal_id` is looked up in `deal_ids` (the [`RelatedReport::ids`] of
/// the deal import) and dropped when it is not there.
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
    import_activities(store, tenant, ctx, read_lines(reader), deal_ids, batch_size).await
}

/// Imports activities from CSV with a header row: the rows
/// [`export_activities_csv`] writes, or any CSV whose columns are named as
/// the fields [`import_activities_jsonl`] reads (blank cells left out).
/// Each row goes through the same steps as a JSON line, a `deal_id` kept
/// only when `deal_ids` (the [`RelatedReport::ids`] of the deal import)
/// holds it.
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
    import_activities(
        store,
        tenant,
        ctx,
        read_csv_rows(reader),
        deal_ids,
        batch_size,
    )
    .await
}

async fn import_activities<S: Store + ?Sized>(
    store: &S,
    tenant: TenantId,
    ctx: &Context,
    mut lines: impl Iterator<Item = Result<Line>> + Send,
    deal_ids: &HashMap<String, String>,
    batch_size: usize,
) -> Result<RelatedReport> {
    let mut report = RelatedReport::default();
    let mut done = false;
    while !done {
        let mut tx = store.begin(tenant, ctx.clone()).await?;
        for _ in 0..batch_size.max(1) {
            let Some(line) = lines.next().transpose()? else {
                done = true;
                break;
            };
            report.rows += 1;
            let result = match &line.object {
                Err(e) => Err(vec![e.clone()]),
                Ok(object) => match contact_of(&mut *tx, object).await? {
                    Err(e) => Err(vec![e]),
                    Ok(contact) => {
                        let dto = NewActivityDto {
                            contact_id: Some(contact.to_string()),
                            deal_id: text(object, "deal_id")
                                .and_then(|d| deal_ids.get(&d).cloned()),
                            kind: text(object, "kind"),
                            direction: text(object, "direction"),
                            subject: text(object, "subject"),
                            body: text(object, "body"),
                            occurred_at: text(object, "occurred_at"),
                        };
                        match NewActivity::try_from(dto) {
                            Err(v) => Err(v.as_slice().to_vec()),
                            Ok(new) => match tx.log_activity(new).await {
                                Ok(a) => Ok((text(object, "id"), a.id.to_string())),
                                Err(e) => Err(row_errors(e)?),
                            },
                        }
                    }
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
        tx.commit().await?;
    }
    Ok(report)
}
