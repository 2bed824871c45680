//! Deals and activities in and out as JSON Lines or CSV, linked to contacts
//! by email: an export writes each record flat with its contact's email; an
//! import finds the contact by that email (in any casing) in the tenant. A
//! CSV has one column per field of the JSON lines, and each of its rows is
//! read into the object a line would hold and imported the same way.
//!
//! Import is per row through the store's ordinary operations (deals are
//! few next to contacts), one transaction per batch in best effort. A deal
//! exported in a closed stage is created in its pipeline's first open stage
//! and moved there (stamping `won_at`/`lost_at` anew). Everything a row
//! needs is decided before it writes: its values, its contact, and the
//! whole path through the stage machine, checked in memory with the
//! domain's own rules ([`Deal::create`], [`Deal::moved`]). So a rejected
//! row writes nothing, not even a version in the history. A line is read
//! with every type error naming its field (see
//! [`FromJson`](crate::domain::FromJson)). CSV cells are read and written
//! as [`CsvFormulas`] says. Activities keep
//! their link to a deal when the deal was imported by the same run of
//! [`import_deals_jsonl`] (or [`import_deals_csv`]): pass its
//! [`RelatedReport::ids`] to [`import_activities_jsonl`] (or
//! [`import_activities_csv`]).

use std::{
    collections::HashMap,
    io::{BufRead, Read, Write},
};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{CsvFormulas, check_batch_size, export::write_csv_record, import::RejectedRow};
use crate::{
    Context, Entity, Store, TenantId, Transaction,
    domain::{
        ContactId, Deal, DealId, Email, LostReason, NewActivity, NewActivityDto, NewDeal,
        NewDealDto, Pipelines, StageKey, StageKind, read_value,
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
        .with_sort(ContactSort::CreatedAsc)
        .with_page(PageRequest::first(1000));
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
        .with_sort(ContactSort::CreatedAsc)
        .with_page(PageRequest::first(1000));
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
/// is, `null` or a missing field as a blank cell, anything else as JSON;
/// each cell as `formulas` says.
fn write_csv_row<W: Write>(
    csv: &mut csv::Writer<W>,
    columns: &[&str],
    record: &Value,
    formulas: CsvFormulas,
) -> Result<()> {
    let cells: Vec<std::borrow::Cow<'_, str>> = columns
        .iter()
        .map(|c| match record.get(*c) {
            None | Some(Value::Null) => "".into(),
            Some(Value::String(s)) => s.as_str().into(),
            Some(other) => other.to_string().into(),
        })
        .collect();
    write_csv_record(csv, formulas, cells.iter().map(|c| c.as_ref()))
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
///
/// A cell a spreadsheet would run as a formula (one starting with `=`, `+`,
/// `-`, `@`, tab or carriage return) is written with a `'` in front, as is
/// one starting with `'`; the importers remove it again (see
/// [`CsvFormulas`]). [`export_deals_csv_with`] can write cells verbatim.
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
    export_deals_csv_with(store, tenant, ctx, writer, CsvFormulas::Neutralise).await
}

/// [`export_deals_csv`] with formula-like cells written as `formulas`
/// says ([`CsvFormulas::Verbatim`]: exactly as stored, for programs only;
/// read it back with [`import_deals_csv_with`] and the same setting).
pub async fn export_deals_csv_with<S, W>(
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
    csv.write_record(DEAL_COLUMNS).map_err(io)?;
    let count = for_each_deal(store, tenant, ctx, |d| {
        write_csv_row(&mut csv, &DEAL_COLUMNS, &d, formulas)
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
///
/// Formula-like cells are neutralised as by [`export_deals_csv`];
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
    let mut csv = csv::Writer::from_writer(writer);
    csv.write_record(ACTIVITY_COLUMNS).map_err(io)?;
    let count = for_each_activity(store, tenant, ctx, |a| {
        write_csv_row(&mut csv, &ACTIVITY_COLUMNS, &a, formulas)
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
/// non-blank cell is its value as a string (read as `formulas` says), a
/// blank cell leaves it out. Rows and lines are numbered as
/// [`import_contacts_csv`](super::import_contacts_csv) numbers them: data
/// rows from 1, the line a row starts on from 1.
fn read_csv_rows<R: Read>(reader: R, formulas: CsvFormulas) -> impl Iterator<Item = Result<Line>> {
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
            object: csv_object(&columns, &record, formulas),
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
    formulas: CsvFormulas,
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
            let value = formulas.read(cell);
            object.insert(column.clone(), Value::String(value.to_string()));
        }
    }
    Ok(object)
}

/// A text field of a line: a JSON string or number (as its text); `null`
/// is absent. Anything else is a type error naming the field.
#[derive(Debug, Clone, Default)]
struct Text(Option<String>);

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
    fn get(&self) -> Option<String> {
        self.0.clone().filter(|s| !s.trim().is_empty())
    }
}

/// The fields of a deals line (or CSV row) the import reads; the others
/// (the times and version an export writes, unknown keys) are ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DealLine {
    id: Text,
    contact_email: Text,
    title: Text,
    amount: Text,
    currency: Text,
    pipeline: Text,
    stage: Text,
    expected_close_date: Text,
    lost_reason: Text,
}

/// The fields of an activities line (or CSV row) the import reads; the
/// others are ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ActivityLine {
    id: Text,
    contact_email: Text,
    deal_id: Text,
    kind: Text,
    direction: Text,
    subject: Text,
    body: Text,
    occurred_at: Text,
}

/// A line's fields, or the error of its first wrongly typed field (named
/// by its path), or of the line as a whole (`row`).
fn fields_of<T: serde::de::DeserializeOwned>(line: &Line) -> RowResult<T> {
    let object = line.object.as_ref().map_err(|e| vec![e.clone()])?;
    read_value(Value::Object(object.clone()), "row").map_err(|e| vec![e])
}

/// Finds the contact a row names by `contact_email`.
async fn contact_of(
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

/// Field errors of an error caused by the row, or the error itself.
fn row_errors(e: Error) -> Result<Vec<FieldError>> {
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

/// Imports deals from JSON Lines (the lines [`export_deals_jsonl`] writes,
/// or objects with `contact_email, title, amount, currency` and optional
/// `pipeline, stage, expected_close_date, lost_reason`), `batch_size` rows
/// per transaction. Rows that fail are rejected with their errors and
/// leave nothing behind (no deal, no history); the others are kept.
///
/// Errors: [`Error::Validation`] on `batch_size` unless it is 1 to
/// [`MAX_BATCH_SIZE`](super::MAX_BATCH_SIZE), before anything is read; an
/// I/O error reading the source, or a storage error (after the batches
/// before it were committed).
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
    let batch_size = check_batch_size(batch_size)?;
    import_deals(store, tenant, ctx, read_lines(reader), batch_size).await
}

/// Imports deals from CSV with a header row: the rows
/// [`export_deals_csv`] writes, or any CSV whose columns are named as the
/// fields [`import_deals_jsonl`] reads (blank cells left out). Each row
/// goes through the same steps as a JSON line; rows that fail are rejected
/// with their row number and errors, the others are kept. A cell that
/// [`export_deals_csv`] neutralised (`'=…`) reads as its value (`=…`).
///
/// Errors: as [`import_deals_jsonl`].
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
    import_deals_csv_with(
        store,
        tenant,
        ctx,
        reader,
        batch_size,
        CsvFormulas::Neutralise,
    )
    .await
}

/// [`import_deals_csv`] reading cells as `formulas` says
/// ([`CsvFormulas::Verbatim`]: exactly as they are, for a file written by
/// [`export_deals_csv_with`] with `Verbatim`).
pub async fn import_deals_csv_with<S, R>(
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
    import_deals(
        store,
        tenant,
        ctx,
        read_csv_rows(reader, formulas),
        batch_size,
    )
    .await
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
        for _ in 0..batch_size {
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

/// What a deals row will write, decided before it writes anything: the
/// deal to create, and the closed stage (with its lost reason) to move it
/// to, if any.
#[derive(Debug)]
struct DealPlan {
    new: NewDeal,
    close: Option<(StageKey, Option<LostReason>)>,
}

/// Checks a row's whole path in memory, with the rules the stores apply
/// ([`Deal::create`], then [`Deal::moved`] into a closed stage), so that
/// a row the store would refuse is rejected before it writes.
fn plan_deal(
    tenant: TenantId,
    mut new: NewDeal,
    stage: Option<StageKey>,
    lost_reason: Option<LostReason>,
    pipelines: &Pipelines,
) -> RowResult<DealPlan> {
    let pipeline = pipelines
        .require("pipeline", &new.pipeline)
        .map_err(|e| vec![e])?;
    // An open stage is a starting stage; a closed one is reached by a move.
    let close = match stage {
        Some(stage) => {
            let kind = pipeline
                .require_stage("stage", &stage)
                .map_err(|e| vec![e])?
                .kind;
            if kind == StageKind::Open {
                new.stage = Some(stage);
                None
            } else {
                Some(stage)
            }
        }
        None => None,
    };
    let now = chrono::Utc::now();
    let domain = |e: Error| {
        row_errors(e)
            .unwrap_or_else(|e| vec![FieldError::new("row", "invalid_value", e.to_string())])
    };
    let draft = Deal::create(tenant, new.clone(), pipeline, now).map_err(domain)?;
    match &close {
        Some(stage) => {
            if pipeline.stage(stage).map(|d| d.kind) == Some(StageKind::Lost)
                && lost_reason.is_none()
            {
                return Err(vec![FieldError::new(
                    "lost_reason",
                    "required",
                    format!("is required for a deal in the lost stage {stage}"),
                )]);
            }
            draft
                .moved(pipeline, stage, lost_reason.clone(), now)
                .map_err(domain)?;
        }
        None if lost_reason.is_some() => {
            return Err(vec![FieldError::new(
                "lost_reason",
                "invalid_value",
                "is only given for a deal in a lost stage",
            )]);
        }
        None => {}
    }
    Ok(DealPlan {
        new,
        close: close.map(|stage| (stage, lost_reason)),
    })
}

async fn import_deal(
    tx: &mut dyn Transaction,
    line: &Line,
    pipelines: &Pipelines,
) -> Result<RowResult<(Option<String>, DealId)>> {
    let fields: DealLine = match fields_of(line) {
        Ok(f) => f,
        Err(errors) => return Ok(Err(errors)),
    };
    let mut errors = Vec::new();
    let contact = match contact_of(tx, fields.contact_email.get()).await? {
        Ok(id) => Some(id),
        Err(e) => {
            errors.push(e);
            None
        }
    };
    let dto = NewDealDto {
        contact_id: Some(
            contact
                .unwrap_or_else(|| ContactId::from_uuid(uuid::Uuid::nil()))
                .to_string(),
        ),
        title: fields.title.get(),
        amount: fields.amount.get().map(Value::String),
        currency: fields.currency.get(),
        pipeline: fields.pipeline.get(),
        stage: None,
        expected_close_date: fields.expected_close_date.get(),
    };
    let lost_reason = match fields.lost_reason.get().map(|r| LostReason::parse(&r)) {
        Some(Ok(r)) => Some(r),
        Some(Err(e)) => {
            errors.push(e);
            None
        }
        None => None,
    };
    let stage = match fields.stage.get().map(|s| StageKey::parse(&s)) {
        Some(Ok(s)) => Some(s),
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
    let (Some(new), true) = (new, errors.is_empty()) else {
        return Ok(Err(errors));
    };
    let plan = match plan_deal(tx.tenant(), new, stage, lost_reason, pipelines) {
        Ok(plan) => plan,
        Err(errors) => return Ok(Err(errors)),
    };
    // The first write. A store error here writes nothing (the contract);
    // one caused by the row (its contact deleted meanwhile) rejects it.
    let deal = match tx.create_deal(plan.new).await {
        Ok(d) => d,
        Err(e) => return row_errors(e).map(Err),
    };
    let mut id = deal.id;
    if let Some((stage, lost_reason)) = plan.close {
        // Checked above with the store's own rules, so only a failure of
        // the store can stop it: that ends the import (this batch's
        // transaction is not committed), rather than leave half a row.
        id = tx
            .move_deal(deal.id, deal.version, &stage, lost_reason)
            .await?
            .id;
    }
    Ok(Ok((fields.id.get(), id)))
}

/// Imports activities from JSON Lines (the lines
/// [`export_activities_jsonl`] writes, or objects with `contact_email,
/// kind` and optional `deal_id, direction, subject, body, occurred_at`).
/// A `deal_id` is looked up in `deal_ids` (the [`RelatedReport::ids`] of
/// the deal import) and dropped when it is not there. A row is one write,
/// which a rejected row never makes.
///
/// Errors: as [`import_deals_jsonl`].
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
    import_activities(store, tenant, ctx, read_lines(reader), deal_ids, batch_size).await
}

/// Imports activities from CSV with a header row: the rows
/// [`export_activities_csv`] writes, or any CSV whose columns are named as
/// the fields [`import_activities_jsonl`] reads (blank cells left out).
/// Each row goes through the same steps as a JSON line, a `deal_id` kept
/// only when `deal_ids` (the [`RelatedReport::ids`] of the deal import)
/// holds it. A cell that [`export_activities_csv`] neutralised (`'=…`)
/// reads as its value (`=…`).
///
/// Errors: as [`import_deals_jsonl`].
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
    import_activities(
        store,
        tenant,
        ctx,
        read_csv_rows(reader, formulas),
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
        for _ in 0..batch_size {
            let Some(line) = lines.next().transpose()? else {
                done = true;
                break;
            };
            report.rows += 1;
            match import_activity(&mut *tx, &line, deal_ids).await? {
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

/// Logs one activities row: every check first, then its one write (which,
/// failing, writes nothing).
async fn import_activity(
    tx: &mut dyn Transaction,
    line: &Line,
    deal_ids: &HashMap<String, String>,
) -> Result<RowResult<(Option<String>, String)>> {
    let fields: ActivityLine = match fields_of(line) {
        Ok(f) => f,
        Err(errors) => return Ok(Err(errors)),
    };
    let contact = match contact_of(tx, fields.contact_email.get()).await? {
        Ok(c) => c,
        Err(e) => return Ok(Err(vec![e])),
    };
    let dto = NewActivityDto {
        contact_id: Some(contact.to_string()),
        deal_id: fields.deal_id.get().and_then(|d| deal_ids.get(&d).cloned()),
        kind: fields.kind.get(),
        direction: fields.direction.get(),
        subject: fields.subject.get(),
        body: fields.body.get(),
        occurred_at: fields.occurred_at.get(),
    };
    let new = match NewActivity::try_from(dto) {
        Ok(new) => new,
        Err(v) => return Ok(Err(v.as_slice().to_vec())),
    };
    Ok(match tx.log_activity(new).await {
        Ok(a) => Ok((fields.id.get(), a.id.to_string())),
        Err(e) => Err(row_errors(e)?),
    })
}
