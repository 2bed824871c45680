//! Deals out and in as JSON Lines or CSV, linked to their contacts by
//! email (see [`related`](super::related) for what deals and activities
//! share).
//!
//! A deal exported in a closed stage is created in its pipeline's first
//! open stage and moved there (stamping `won_at`/`lost_at` anew). Its
//! whole path through the stage machine is checked in memory first, with
//! the domain's own rules ([`Deal::create`], [`Deal::moved`]), so a row the
//! store would refuse is rejected before it writes. Activities keep their
//! link to a deal imported by the same run of [`import_deals_jsonl`] (or
//! [`import_deals_csv`]): pass its [`RelatedReport::ids`] to
//! [`import_activities_jsonl`](super::import_activities_jsonl) (or
//! [`import_activities_csv`](super::import_activities_csv)).

use std::io::{BufRead, Read, Write};

use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    CsvFormulas, check_batch_size,
    export::{export_csv, export_jsonl},
    read::{Line, read_csv_rows, read_lines},
    related::{
        ImportRow, Owned, PageFuture, PagesFuture, RelatedReport, RowResult, Text, company_of,
        contact_of, fields_of, import_rows, row_errors,
    },
};
use crate::{
    Context, Store, TenantId, Transaction,
    domain::{
        CompanyId, Contact, ContactId, Deal, LostReason, NewDeal, NewDealDto, Pipelines, StageKey,
        StageKind,
    },
    error::{Error, FieldError, Result},
    store::PageRequest,
};

/// The columns of a deals CSV, in order: the fields of a deals JSON line.
const DEAL_COLUMNS: [&str; 16] = [
    "id",
    "contact_email",
    "title",
    "amount",
    "currency",
    "pipeline",
    "stage",
    "expected_close_date",
    "lost_reason",
    "company_domain",
    "owner",
    "won_at",
    "lost_at",
    "created_at",
    "updated_at",
    "version",
];

/// A contact's deals go out newest first, as the store lists them.
impl Owned for Deal {
    const FIELDS: &'static [&'static str] = &DEAL_COLUMNS;

    fn page<'a>(
        tx: &'a mut dyn Transaction,
        contact: ContactId,
        page: &'a PageRequest,
    ) -> PageFuture<'a, Self> {
        tx.list_deals_for_contact(contact, page)
    }

    fn first_pages<'a>(
        tx: &'a mut dyn Transaction,
        contacts: &'a [ContactId],
        limit: u32,
    ) -> PagesFuture<'a, Self> {
        tx.first_deal_pages(contacts, limit)
    }

    fn company(&self) -> Option<CompanyId> {
        self.company_id
    }

    fn line(&self, c: &Contact, company_domain: Option<&str>) -> Value {
        json!({
            "id": self.id,
            "contact_email": c.email.as_str(),
            "title": self.title.as_str(),
            "amount": self.amount.amount().to_string(),
            "currency": self.amount.currency().code(),
            "pipeline": self.pipeline.as_str(),
            "stage": self.stage.as_str(),
            "expected_close_date": self.expected_close_date,
            "lost_reason": self.lost_reason.as_ref().map(|r| r.as_str()),
            "company_domain": company_domain,
            "owner": self.owner.as_ref().map(|o| o.as_str()),
            "won_at": self.won_at,
            "lost_at": self.lost_at,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "version": self.version.get(),
        })
    }
}

/// Writes every deal of the tenant as JSON Lines, contact by contact
/// (oldest contact first, each contact's deals newest first); returns how
/// many. Each line: `id, contact_email, title, amount` (a string),
/// `currency, pipeline, stage, expected_close_date, lost_reason,
/// company_domain` (the domain of the deal's company), `owner, won_at,
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
    export_jsonl::<Deal, S, W>(store, tenant, ctx, writer).await
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
    export_csv::<Deal, S, W>(store, tenant, ctx, writer, formulas).await
}

/// The fields of a deals line (or CSV row): the columns of an export (its
/// `version` read and ignored: the store numbers the versions); another
/// key refuses the line, naming it (`unknown_field`).
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
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
    company_domain: Text,
    owner: Text,
    created_at: Text,
    updated_at: Text,
    won_at: Text,
    lost_at: Text,
    #[serde(rename = "version")]
    _version: serde::de::IgnoredAny,
}

/// Imports deals from JSON Lines (the lines [`export_deals_jsonl`] writes,
/// or objects with `contact_email, title, amount, currency` and optional
/// `pipeline, stage, expected_close_date, lost_reason, company_domain,
/// owner, created_at, updated_at, won_at, lost_at`), `batch_size` rows per
/// transaction. `created_at` and `updated_at` (RFC 3339, together) are the
/// deal's original times; a deal in a won (lost) stage with its `won_at`
/// (`lost_at`) is created in that stage as it was closed, one version in
/// its history, while one without is created open and moved (closed now).
/// A close time on a deal of another stage, outside its original times or
/// without them, rejects the row naming the column. A `company_domain` links the
/// deal to the company holding that domain; one no company holds rejects
/// the row, naming `company_domain`. Rows that fail are rejected with their errors and
/// leave nothing behind (no deal, no history); the others are kept.
///
/// A key that is not one of these (nor the `version` an export writes)
/// refuses its line, naming the key (code `unknown_field`): a misspelt
/// column is not dropped from the record unnoticed.
///
/// Errors: [`Error::Validation`] on `batch_size` unless it is 1 to
/// [`MAX_BATCH_SIZE`](super::MAX_BATCH_SIZE), before anything is read
/// (and, for a CSV file, on a header naming a column the import does not
/// read, code `unknown_field`, before any row); an I/O error reading the
/// source, or a storage error (after the batches before it were
/// committed).
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
    let rows = DealRows(store.pipelines());
    import_rows(store, tenant, ctx, read_lines(reader), batch_size, &rows).await
}

/// Imports deals from CSV with a header row: the rows
/// [`export_deals_csv`] writes, or any CSV whose columns are named as the
/// fields [`import_deals_jsonl`] reads (blank cells left out; a column of another
/// name ends the import before any row, naming it). Each row
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
    let rows = DealRows(store.pipelines());
    let lines = read_csv_rows(reader, formulas, &DEAL_COLUMNS);
    import_rows(store, tenant, ctx, lines, batch_size, &rows).await
}

/// Deals rows, checked against the store's pipelines.
struct DealRows<'p>(&'p Pipelines);

impl ImportRow for DealRows<'_> {
    fn import_row<'a>(
        &'a self,
        tx: &'a mut dyn Transaction,
        line: &'a Line,
    ) -> impl Future<Output = Result<RowResult<(Option<String>, String)>>> + Send + 'a {
        import_deal(tx, line, self.0)
    }
}

/// What a deals row will write, decided before it writes anything: the
/// deal to create, and the closed stage (with its lost reason) to move it
/// to, if any (a deal created closed, with its original close time, needs
/// no move).
#[derive(Debug)]
struct DealPlan {
    new: NewDeal,
    close: Option<(StageKey, Option<LostReason>)>,
}

/// Checks a row's whole path in memory, with the rules the stores apply
/// ([`Deal::create`], then [`Deal::moved`] into a closed stage), so that
/// a row the store would refuse is rejected before it writes.
///
/// A row in a closed stage with its close time (`won_at` or `lost_at`,
/// named by `closed_field`) is created in that stage as it was closed; one
/// without is created in the first open stage and moved (closed now).
fn plan_deal(
    tenant: TenantId,
    mut new: NewDeal,
    stage: Option<StageKey>,
    lost_reason: Option<LostReason>,
    closed_field: Option<&'static str>,
    pipelines: &Pipelines,
) -> RowResult<DealPlan> {
    let pipeline = pipelines
        .require("pipeline", &new.pipeline)
        .map_err(|e| vec![e])?;
    let kind = match &stage {
        Some(stage) => {
            pipeline
                .require_stage("stage", stage)
                .map_err(|e| vec![e])?
                .kind
        }
        None => StageKind::Open,
    };
    if let Some(field) = closed_field {
        let fits = match kind {
            StageKind::Won => field == "won_at",
            StageKind::Lost => field == "lost_at",
            StageKind::Open => false,
        };
        if !fits {
            let wanted = if field == "won_at" { "won" } else { "lost" };
            return Err(vec![FieldError::new(
                field,
                "invalid_value",
                format!(
                    "is only given for a deal in a {wanted} stage, not in {}",
                    stage.map_or_else(
                        || pipeline.first_open_stage().key.to_string(),
                        |s| s.to_string()
                    )
                ),
            )]);
        }
    }
    // An open stage is a starting stage, as is a closed one with its
    // original close time; another closed one is reached by a move.
    let close = match stage {
        Some(stage) if kind == StageKind::Open || new.original_closed_at.is_some() => {
            new.stage = Some(stage);
            if kind == StageKind::Lost {
                new.lost_reason = lost_reason.clone();
            }
            None
        }
        other => other,
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
        None if lost_reason.is_some() && kind != StageKind::Lost => {
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
) -> Result<RowResult<(Option<String>, String)>> {
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
    let company = match company_of(tx, fields.company_domain.get()).await? {
        Ok(id) => id,
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
        company_id: company.map(|c| c.to_string()),
        owner: fields.owner.get(),
        created_at: fields.created_at.get(),
        updated_at: fields.updated_at.get(),
        won_at: fields.won_at.get(),
        lost_at: fields.lost_at.get(),
        lost_reason: None,
    };
    let closed_field = match (fields.won_at.get(), fields.lost_at.get()) {
        (Some(_), _) => Some("won_at"),
        (None, Some(_)) => Some("lost_at"),
        (None, None) => None,
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
    let plan = match plan_deal(
        tx.tenant(),
        new,
        stage,
        lost_reason,
        closed_field,
        pipelines,
    ) {
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
    Ok(Ok((fields.id.id(), id.to_string())))
}
