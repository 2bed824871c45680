//! Companies out and in as CSV and JSON Lines, keyed by domain.
//!
//! A row whose domain an existing company holds updates that company, the
//! [`ConflictPolicy`] of the [`ImportOptions`] deciding which values win
//! (as for contacts); a row without a domain creates a new company. Tags
//! are `;`-separated names (in JSON Lines also an array of names): a
//! missing tag is created, and each is attached to the company. Every row
//! is validated whole before it writes, so a rejected row writes nothing.
//!
//! An export pages through the tenant's companies by name and writes the
//! columns of [`COMPANY_CSV_HEADER`], which an import reads back.

use std::{
    borrow::Cow,
    io::{BufRead, Read, Write},
};

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{
    ConflictPolicy, CsvFormulas, ImportMode, ImportOptions, ImportReport, RejectedRow,
    check_batch_size,
    read::{Line, read_csv_rows, read_lines},
    related::{RowResult, Text, fields_of},
};
use crate::{
    Context, Store, TenantId, Transaction,
    domain::{Company, CompanyPatch, NewCompany, NewCompanyDto, NewTag, RecordRef, TagId, TagName},
    error::{Error, FieldError, Result},
    store::{CompanyQuery, CompanySort, PageRequest},
};

/// The CSV columns of a companies export, in order; the keys of its JSON
/// lines. `metadata` holds the custom fields as a JSON object, `tags` the
/// names of the company's tags, `;`-separated.
pub const COMPANY_CSV_HEADER: [&str; 16] = [
    "name",
    "domain",
    "industry",
    "employee_count",
    "annual_revenue_amount",
    "annual_revenue_currency",
    "street",
    "city",
    "region",
    "postal_code",
    "country",
    "owner",
    "tags",
    "metadata",
    "created_at",
    "updated_at",
];

/// The error of an export that cannot be written.
fn io(e: impl std::fmt::Display) -> Error {
    Error::backend(format!("cannot write the export: {e}"))
}

/// A JSON value given either as itself or as its JSON text (a CSV cell);
/// `null` and blank text are absent.
#[derive(Debug, Clone, Default)]
pub(super) struct JsonCell(Option<Value>);

impl<'de> Deserialize<'de> for JsonCell {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(JsonCell(match Value::deserialize(d)? {
            Value::Null => None,
            v => Some(v),
        }))
    }
}

impl JsonCell {
    /// The value (text read as JSON), or the error naming `field`.
    pub(super) fn get(&self, field: &str) -> std::result::Result<Option<Value>, FieldError> {
        match &self.0 {
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => serde_json::from_str(s).map(Some).map_err(|e| {
                FieldError::new(field, "invalid_format", format!("is not JSON ({e})"))
            }),
            other => Ok(other.clone()),
        }
    }
}

/// Tag names: `;`-separated text, or (in JSON Lines) an array of names.
#[derive(Debug, Clone, Default)]
pub(super) struct TagCell(Option<Value>);

impl<'de> Deserialize<'de> for TagCell {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(TagCell(Some(Value::deserialize(d)?)))
    }
}

impl TagCell {
    /// The distinct names (by caseless key, first spelling kept), or every
    /// error naming `tags`.
    pub(super) fn names(&self) -> std::result::Result<Vec<TagName>, Vec<FieldError>> {
        let parts: Vec<String> = match &self.0 {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => super::row::split_tags_cell(s),
            Some(Value::Array(items)) => {
                let mut parts = Vec::new();
                for item in items {
                    match item {
                        Value::String(s) => parts.push(s.clone()),
                        _ => {
                            return Err(vec![FieldError::new(
                                "tags",
                                "invalid_format",
                                "must hold tag names as strings",
                            )]);
                        }
                    }
                }
                parts
            }
            Some(_) => {
                return Err(vec![FieldError::new(
                    "tags",
                    "invalid_format",
                    "must be `;`-separated names or an array of names",
                )]);
            }
        };
        parse_tag_names(parts.iter().map(String::as_str))
    }
}

/// Tag names from their texts: blank ones skipped, each checked (errors
/// under `tags`), duplicates in any casing kept once.
pub(super) fn parse_tag_names<'a>(
    parts: impl Iterator<Item = &'a str>,
) -> std::result::Result<Vec<TagName>, Vec<FieldError>> {
    let mut names: Vec<TagName> = Vec::new();
    let mut errors = Vec::new();
    for part in parts {
        if part.trim().is_empty() {
            continue;
        }
        match TagName::parse_field("tags", part) {
            Ok(n) if names.iter().any(|m| m.key() == n.key()) => {}
            Ok(n) => names.push(n),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(names)
    } else {
        Err(errors)
    }
}

/// The tag named `name`, created when the tenant has none by that name
/// (in any casing).
pub(super) async fn tag_named(tx: &mut dyn Transaction, name: &TagName) -> Result<TagId> {
    if let Some(tag) = tx.get_tag_by_name(name).await? {
        return Ok(tag.id);
    }
    match tx.create_tag(NewTag::new(name.clone())).await {
        Ok(tag) => Ok(tag.id),
        Err(Error::Duplicate { existing_id, .. }) => existing_id
            .parse()
            .map_err(|_| Error::backend("a duplicate tag's id is not a tag id")),
        Err(e) => Err(e),
    }
}

/// Attaches the tags named `names` to `record` (creating missing ones);
/// true when any was not attached before.
pub(super) async fn attach_tags(
    tx: &mut dyn Transaction,
    record: RecordRef,
    names: &[TagName],
) -> Result<bool> {
    let mut changed = false;
    for name in names {
        let tag = tag_named(tx, name).await?;
        changed |= tx.attach_tag(tag, record).await?;
    }
    Ok(changed)
}

/// The fields of a companies line (or CSV row): the columns of
/// [`COMPANY_CSV_HEADER`]; another key refuses the line, naming it
/// (`unknown_field`).
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct CompanyLine {
    name: Text,
    domain: Text,
    industry: Text,
    employee_count: Text,
    annual_revenue_amount: Text,
    annual_revenue_currency: Text,
    street: Text,
    city: Text,
    region: Text,
    postal_code: Text,
    country: Text,
    owner: Text,
    tags: TagCell,
    metadata: JsonCell,
    created_at: Text,
    updated_at: Text,
}

/// A row, validated: the company and its tags.
struct CompanyRow {
    new: NewCompany,
    tags: Vec<TagName>,
}

fn company_row(line: &Line) -> RowResult<CompanyRow> {
    let fields: CompanyLine = fields_of(line)?;
    let mut errors = Vec::new();
    let employee_count = match fields.employee_count.get() {
        None => None,
        Some(n) => match n.trim().parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => {
                errors.push(FieldError::new(
                    "employee_count",
                    "invalid_format",
                    "must be a whole number",
                ));
                None
            }
        },
    };
    let metadata = match fields.metadata.get("metadata") {
        Ok(m) => m,
        Err(e) => {
            errors.push(e);
            None
        }
    };
    let tags = match fields.tags.names() {
        Ok(t) => t,
        Err(e) => {
            errors.extend(e);
            Vec::new()
        }
    };
    let dto = NewCompanyDto {
        name: fields.name.get(),
        domain: fields.domain.get(),
        industry: fields.industry.get(),
        employee_count,
        annual_revenue_amount: fields.annual_revenue_amount.get().map(Value::String),
        annual_revenue_currency: fields.annual_revenue_currency.get(),
        street: fields.street.get(),
        city: fields.city.get(),
        region: fields.region.get(),
        postal_code: fields.postal_code.get(),
        country: fields.country.get(),
        metadata,
        owner: fields.owner.get(),
        created_at: fields.created_at.get(),
        updated_at: fields.updated_at.get(),
    };
    match NewCompany::try_from(dto) {
        Ok(new) if errors.is_empty() => Ok(CompanyRow { new, tags }),
        Ok(_) => Err(errors),
        Err(v) => {
            let reported: Vec<String> = errors.iter().map(|e| e.field.clone()).collect();
            errors.extend(
                v.as_slice()
                    .iter()
                    .filter(|e| !reported.contains(&e.field))
                    .cloned(),
            );
            Err(errors)
        }
    }
}

/// The patch that brings `existing` to what `policy` makes of it and the
/// row `incoming` (as [`conflict_patch`](super::conflict_patch) does for
/// contacts; the owner, a link, is never cleared by a row without one).
fn company_patch(
    existing: &Company,
    incoming: &NewCompany,
    policy: ConflictPolicy,
) -> CompanyPatch {
    fn pick<T: Clone>(
        existing: &Option<T>,
        incoming: &Option<T>,
        policy: ConflictPolicy,
    ) -> Option<T> {
        match policy {
            ConflictPolicy::Incoming => incoming.clone(),
            ConflictPolicy::Existing => existing.clone().or_else(|| incoming.clone()),
            _ => incoming.clone().or_else(|| existing.clone()),
        }
    }
    let existing_wins = policy == ConflictPolicy::Existing;
    let metadata = match policy {
        ConflictPolicy::Incoming => incoming.metadata.clone(),
        ConflictPolicy::Existing if existing.metadata.is_empty() => incoming.metadata.clone(),
        ConflictPolicy::Existing => existing.metadata.clone(),
        _ if incoming.metadata.is_empty() => existing.metadata.clone(),
        _ => incoming.metadata.clone(),
    };
    let owner = if existing_wins {
        existing.owner.clone().or_else(|| incoming.owner.clone())
    } else {
        incoming.owner.clone().or_else(|| existing.owner.clone())
    };
    let (a, b) = (&existing.address, &incoming.address);
    CompanyPatch {
        name: Some(if existing_wins {
            existing.name.clone()
        } else {
            incoming.name.clone()
        }),
        domain: None,
        industry: Some(pick(&existing.industry, &incoming.industry, policy)),
        employee_count: Some(pick(
            &existing.employee_count,
            &incoming.employee_count,
            policy,
        )),
        annual_revenue: Some(pick(
            &existing.annual_revenue,
            &incoming.annual_revenue,
            policy,
        )),
        street: Some(pick(&a.street, &b.street, policy)),
        city: Some(pick(&a.city, &b.city, policy)),
        region: Some(pick(&a.region, &b.region, policy)),
        postal_code: Some(pick(&a.postal_code, &b.postal_code, policy)),
        country: Some(pick(&a.country, &b.country, policy)),
        metadata: Some(metadata),
        owner: Some(owner),
    }
}

/// What a written row did.
enum Written {
    Inserted,
    Updated,
    Unchanged,
}

/// Field errors of a store error caused by the row, or the error itself.
fn company_row_errors(e: Error) -> Result<Vec<FieldError>> {
    match e {
        Error::Validation(v) => Ok(v.as_slice().to_vec()),
        Error::Duplicate { field, .. } => Ok(vec![FieldError::new(
            field,
            "duplicate",
            format!("is held by another company ({field})"),
        )]),
        other => Err(other),
    }
}

/// Writes one validated row: an update of the company holding its domain,
/// or a new company; then its tags.
async fn write_company(
    tx: &mut dyn Transaction,
    row: CompanyRow,
    policy: ConflictPolicy,
) -> Result<RowResult<Written>> {
    let existing = match &row.new.domain {
        Some(domain) => tx.get_company_by_domain(domain).await?,
        None => None,
    };
    let (id, mut written) = match existing {
        Some(existing) => {
            let patch = company_patch(&existing, &row.new, policy);
            if existing.patched(&patch, chrono::Utc::now()).is_none() {
                (existing.id, Written::Unchanged)
            } else {
                match tx
                    .update_company(existing.id, existing.version, patch)
                    .await
                {
                    Ok(c) => (c.id, Written::Updated),
                    Err(e) => return company_row_errors(e).map(Err),
                }
            }
        }
        None => match tx.create_company(row.new).await {
            Ok(c) => (c.id, Written::Inserted),
            Err(e) => return company_row_errors(e).map(Err),
        },
    };
    if attach_tags(tx, RecordRef::Company(id), &row.tags).await?
        && matches!(written, Written::Unchanged)
    {
        written = Written::Updated;
    }
    Ok(Ok(written))
}

/// Imports rows read as companies lines.
async fn import_companies<S>(
    store: &S,
    tenant: TenantId,
    ctx: &Context,
    mut lines: impl Iterator<Item = Result<Line>> + Send,
    options: ImportOptions,
) -> Result<ImportReport>
where
    S: Store + ?Sized,
{
    let ImportOptions {
        mode,
        policy,
        batch_size,
        mut progress,
        ..
    } = options;
    let batch_size = check_batch_size(batch_size)?;
    let mut report = ImportReport::default();
    let mut whole = match mode {
        ImportMode::AllOrNothing => Some(store.begin(tenant, ctx.clone()).await?),
        _ => None,
    };
    let mut done = false;
    while !done {
        let mut own = match whole {
            Some(_) => None,
            None => Some(store.begin(tenant, ctx.clone()).await?),
        };
        let tx: &mut dyn Transaction = match (whole.as_mut(), own.as_mut()) {
            (Some(tx), _) | (None, Some(tx)) => &mut **tx,
            (None, None) => return Err(Error::backend("an import without a transaction")),
        };
        for _ in 0..batch_size {
            let Some(line) = lines.next().transpose()? else {
                done = true;
                break;
            };
            report.rows += 1;
            let result = match company_row(&line) {
                Ok(row) => write_company(&mut *tx, row, policy).await?,
                Err(errors) => Err(errors),
            };
            match result {
                Ok(Written::Inserted) => report.inserted += 1,
                Ok(Written::Updated) => report.updated += 1,
                Ok(Written::Unchanged) => report.unchanged += 1,
                Err(errors) => report.rejected.push(RejectedRow {
                    row: line.row,
                    line: line.line,
                    errors,
                }),
            }
        }
        if let Some(tx) = own {
            tx.commit().await?;
        }
        if let Some(progress) = progress.as_mut() {
            progress(report.rows);
        }
    }
    report.committed = match whole {
        Some(tx) if report.rejected.is_empty() => {
            tx.commit().await?;
            true
        }
        Some(tx) => {
            tx.rollback().await?;
            false
        }
        None => true,
    };
    Ok(report)
}

/// Imports companies from CSV with a header row naming the columns of
/// [`COMPANY_CSV_HEADER`] (trimmed, any casing; a column of another name
/// ends the import before any row with a validation error naming it, code
/// `unknown_field`; blank cells are absent). A row whose `domain` an existing company holds
/// updates it as [`ImportOptions::policy`] says; one without a domain
/// creates a company. `tags` are `;`-separated names, created when missing
/// and attached; `metadata` is a JSON object; `created_at` and
/// `updated_at` (RFC 3339, together) are the original times of a company
/// the row creates (a row that updates one is a change made now).
///
/// Rows that fail are rejected with their number and every field error,
/// having written nothing; in [`ImportMode::BestEffort`] the others are
/// kept, each batch of [`ImportOptions::batch_size`] rows committed on its
/// own, and in [`ImportMode::AllOrNothing`] nothing is kept unless every
/// row is good. [`ImportOptions::keep_outcomes`] and
/// [`ImportOptions::retries`] do not apply. Cells are read as
/// [`ImportOptions::csv_formulas`] says.
///
/// Errors: [`Error::Validation`] on `batch_size`; an I/O error reading the
/// source, or a storage error (in best effort, after the batches before it
/// were committed).
pub async fn import_companies_csv<S, R>(
    store: &S,
    tenant: TenantId,
    ctx: &Context,
    reader: R,
    options: ImportOptions,
) -> Result<ImportReport>
where
    S: Store + ?Sized,
    R: Read + Send,
{
    check_batch_size(options.batch_size)?;
    let lines = read_csv_rows(reader, options.csv_formulas, &COMPANY_CSV_HEADER);
    import_companies(store, tenant, ctx, lines, options).await
}

/// Imports companies from JSON Lines: one object per line with the keys of
/// [`COMPANY_CSV_HEADER`] (`tags` a `;`-separated string or an array of
/// names, `metadata` an object). Blank lines are skipped; a line with
/// another key is refused, naming it (code `unknown_field`). Otherwise as
/// [`import_companies_csv`].
pub async fn import_companies_jsonl<S, R>(
    store: &S,
    tenant: TenantId,
    ctx: &Context,
    reader: R,
    options: ImportOptions,
) -> Result<ImportReport>
where
    S: Store + ?Sized,
    R: BufRead + Send,
{
    check_batch_size(options.batch_size)?;
    import_companies(store, tenant, ctx, read_lines(reader), options).await
}

/// A company as a line of the export (the keys of [`COMPANY_CSV_HEADER`]).
fn company_line(c: &Company, tags: Vec<String>) -> Map<String, Value> {
    let text = |v: Option<&str>| v.map_or(Value::Null, |s| Value::String(s.to_string()));
    let time = |t: chrono::DateTime<chrono::Utc>| {
        Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
    };
    let a = &c.address;
    let value = json!({
        "name": c.name.as_str(),
        "domain": text(c.domain.as_ref().map(|d| d.as_str())),
        "industry": text(c.industry.as_ref().map(|d| d.as_str())),
        "employee_count": c.employee_count,
        "annual_revenue_amount": c.annual_revenue.as_ref().map(|m| m.amount().to_string()),
        "annual_revenue_currency": c.annual_revenue.as_ref().map(|m| m.currency().code()),
        "street": text(a.street.as_ref().map(|d| d.as_str())),
        "city": text(a.city.as_ref().map(|d| d.as_str())),
        "region": text(a.region.as_ref().map(|d| d.as_str())),
        "postal_code": text(a.postal_code.as_ref().map(|d| d.as_str())),
        "country": text(a.country.as_ref().map(|d| d.as_str())),
        "owner": text(c.owner.as_ref().map(|o| o.as_str())),
        "tags": tags,
        "metadata": c.metadata.as_map(),
        "created_at": time(c.created_at),
        "updated_at": time(c.updated_at),
    });
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Pages through the tenant's companies by name, calling `emit` with each
/// one's line; returns how many.
async fn for_each_company<S: Store + ?Sized>(
    store: &S,
    tenant: TenantId,
    ctx: &Context,
    emit: &mut (dyn FnMut(&Map<String, Value>) -> Result<()> + Send),
) -> Result<u64> {
    let mut tx = store.begin_read(tenant, ctx.clone()).await?;
    let mut query = CompanyQuery::new()
        .with_sort(CompanySort::NameAsc)
        .with_page(PageRequest::first(1000));
    let mut count = 0;
    loop {
        let page = tx.search_companies(&query).await?;
        let records: Vec<RecordRef> = page
            .items
            .iter()
            .map(|c| RecordRef::Company(c.id))
            .collect();
        let tags = tx.tags_of_many(&records).await?;
        for (c, tags) in page.items.iter().zip(tags) {
            let names = tags.iter().map(|t| t.name.as_str().to_string()).collect();
            emit(&company_line(c, names))?;
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

/// Writes the tenant's companies as CSV ([`COMPANY_CSV_HEADER`]), by name;
/// returns how many. What [`import_companies_csv`] reads back. Formula-like
/// cells are neutralised (see [`CsvFormulas`]).
pub async fn export_companies_csv<S, W>(
    store: &S,
    tenant: TenantId,
    ctx: &Context,
    writer: W,
) -> Result<u64>
where
    S: Store + ?Sized,
    W: Write + Send,
{
    export_companies_csv_with(store, tenant, ctx, writer, CsvFormulas::Neutralise).await
}

/// [`export_companies_csv`] with formula-like cells written as `formulas`
/// says.
pub async fn export_companies_csv_with<S, W>(
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
    csv.write_record(COMPANY_CSV_HEADER).map_err(io)?;
    let count = for_each_company(store, tenant, ctx, &mut |line| {
        for column in COMPANY_CSV_HEADER {
            let cell: Cow<'_, str> = match line.get(column) {
                None | Some(Value::Null) => "".into(),
                Some(Value::String(s)) => s.as_str().into(),
                Some(Value::Array(items)) => {
                    super::row::tags_cell(items.iter().filter_map(Value::as_str)).into()
                }
                Some(other) => other.to_string().into(),
            };
            csv.write_field(formulas.write(&cell).as_bytes())
                .map_err(io)?;
        }
        csv.write_record(None::<&[u8]>).map_err(io)
    })
    .await?;
    csv.flush().map_err(io)?;
    Ok(count)
}

/// Writes the tenant's companies as JSON Lines (the keys of
/// [`COMPANY_CSV_HEADER`], `tags` an array of names, `metadata` an
/// object), by name; returns how many. What [`import_companies_jsonl`]
/// reads back.
pub async fn export_companies_jsonl<S, W>(
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
    let count = for_each_company(store, tenant, ctx, &mut |line| {
        serde_json::to_writer(&mut out, line).map_err(io)?;
        out.write_all(b"\n").map_err(io)
    })
    .await?;
    out.flush().map_err(io)?;
    Ok(count)
}
