//! Streaming import of contacts from CSV and JSON Lines: read a batch,
//! validate it row by row, upsert it, report, repeat.

use std::{
    fmt,
    io::{BufRead, Read},
};

use serde::Serialize;

use super::{
    ConflictPolicy, CsvFormulas, ImportLock, UpsertOutcome, check_batch_size,
    read::{CsvRecords, JsonLines},
    row::{Column, ContactRow, RawContact},
};
use crate::{
    Context, Store, TenantId, Transaction,
    domain::{CompanyId, NewContact, RecordRef},
    error::{Error, FieldError, Result},
};

/// What happens to the good rows of a file that has bad ones.
///
/// More import modes may come as the CRM grows: a `match` on it outside
/// this crate needs a `_` arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ImportMode {
    /// One transaction for the whole file: a single rejected row (or any
    /// error) writes nothing at all. The whole file is still read, so that
    /// the report lists every rejected row.
    ///
    /// The transaction holds the tenant's import lock
    /// ([`ImportLock::Exclusive`]) from its start, so the tenant's other
    /// imports wait for it (and it for them) instead of deadlocking. A
    /// transaction of the host's own that writes the same contacts can
    /// still deadlock with it; the import then fails with a retryable
    /// error, having written nothing, and can be run again with the same
    /// input.
    AllOrNothing,
    /// Each batch commits on its own; rejected rows are reported and
    /// skipped, good rows are kept. Each batch holds the tenant's import
    /// lock shared ([`ImportLock::Shared`]) and is retried after a
    /// retryable failure (see [`ImportOptions::retries`]). The default.
    #[default]
    BestEffort,
}

/// How to import: [`ImportOptions::default`], then the `with_*` setters
/// for what differs.
///
/// ```
/// use crm_core::bulk::{ConflictPolicy, ImportMode, ImportOptions};
///
/// let options = ImportOptions::default()
///     .with_mode(ImportMode::AllOrNothing)
///     .with_policy(ConflictPolicy::Existing)
///     .with_batch_size(500);
/// assert_eq!(options.batch_size, 500);
/// ```
#[non_exhaustive]
pub struct ImportOptions {
    /// All or nothing, or best effort.
    pub mode: ImportMode,
    /// Which values win over an existing contact with the same email.
    pub policy: ConflictPolicy,
    /// Rows read and upserted at a time: 1 to
    /// [`MAX_BATCH_SIZE`](super::MAX_BATCH_SIZE) (default 1,000), what
    /// bounds the memory an import takes. Another value is an
    /// [`Error::Validation`] on `batch_size`, before anything is read.
    pub batch_size: usize,
    /// Keep every row's outcome in [`ImportReport::outcomes`] (default
    /// false: a long import keeps only counts and rejected rows).
    pub keep_outcomes: bool,
    /// Called after each batch with the number of rows done so far.
    pub progress: Option<Box<dyn FnMut(u64) + Send>>,
    /// How often a best-effort batch is retried after a retryable failure
    /// (a deadlock or serialization failure, a lost connection), waiting a
    /// random time before each retry, up to twice as long as before (from
    /// up to 20 ms, never more than 2 s). Default 3.
    pub retries: u32,
    /// How a CSV import reads cells that an export neutralised (default
    /// [`CsvFormulas::Neutralise`]: read back what
    /// [`export_contacts_csv`](super::export_contacts_csv) wrote). JSON
    /// Lines ignore it.
    pub csv_formulas: CsvFormulas,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            mode: ImportMode::default(),
            policy: ConflictPolicy::default(),
            batch_size: 1000,
            keep_outcomes: false,
            progress: None,
            retries: 3,
            csv_formulas: CsvFormulas::default(),
        }
    }
}

impl ImportOptions {
    /// All or nothing, or best effort ([`mode`](Self::mode)).
    pub fn with_mode(mut self, mode: ImportMode) -> Self {
        self.mode = mode;
        self
    }

    /// Which values win over an existing contact with the same email
    /// ([`policy`](Self::policy)).
    pub fn with_policy(mut self, policy: ConflictPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Rows read and upserted at a time ([`batch_size`](Self::batch_size)).
    pub fn with_batch_size(mut self, rows: usize) -> Self {
        self.batch_size = rows;
        self
    }

    /// Keeps every row's outcome in the report, or not
    /// ([`keep_outcomes`](Self::keep_outcomes)).
    pub fn with_keep_outcomes(mut self, keep: bool) -> Self {
        self.keep_outcomes = keep;
        self
    }

    /// Calls `progress` after each batch with the number of rows done so
    /// far ([`progress`](Self::progress)).
    pub fn with_progress(mut self, progress: impl FnMut(u64) + Send + 'static) -> Self {
        self.progress = Some(Box::new(progress));
        self
    }

    /// How often a best-effort batch is retried after a retryable failure
    /// ([`retries`](Self::retries)).
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// How a CSV import reads cells that an export neutralised
    /// ([`csv_formulas`](Self::csv_formulas)).
    pub fn with_csv_formulas(mut self, csv_formulas: CsvFormulas) -> Self {
        self.csv_formulas = csv_formulas;
        self
    }
}

impl fmt::Debug for ImportOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportOptions")
            .field("mode", &self.mode)
            .field("policy", &self.policy)
            .field("batch_size", &self.batch_size)
            .field("keep_outcomes", &self.keep_outcomes)
            .field("progress", &self.progress.is_some())
            .field("retries", &self.retries)
            .field("csv_formulas", &self.csv_formulas)
            .finish()
    }
}

/// A row the import refused, with every reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectedRow {
    /// The row's number among the file's data rows, from 1 (a CSV header
    /// and blank JSON lines do not count).
    pub row: u64,
    /// The line of the file it starts on, from 1.
    pub line: u64,
    /// Every field error, each naming its field (a CSV column's field name
    /// or header; `row` for the row as a whole).
    pub errors: Vec<FieldError>,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// Data rows read.
    pub rows: u64,
    /// Contacts created.
    pub inserted: u64,
    /// Contacts changed.
    pub updated: u64,
    /// Rows that matched a contact and changed nothing.
    pub unchanged: u64,
    /// Rows refused, in file order.
    pub rejected: Vec<RejectedRow>,
    /// Each written row's number and outcome, when
    /// [`ImportOptions::keep_outcomes`] is set.
    pub outcomes: Vec<(u64, UpsertOutcome)>,
    /// False when an all-or-nothing import wrote nothing (then the counts
    /// say what it would have done).
    pub committed: bool,
}

/// One row read from a file.
struct ReadRow {
    row: u64,
    line: u64,
    contact: std::result::Result<ContactRow, Vec<FieldError>>,
}

/// A source of rows: CSV or JSON Lines.
trait RowSource {
    /// The next row, `Ok(None)` at the end; `Err` when the file cannot be
    /// read any further (an I/O error).
    fn next_row(&mut self) -> Result<Option<ReadRow>>;
}

/// Imports contacts from CSV (UTF-8, with or without a byte-order mark;
/// the first record is the header). See the [module docs](super) for
/// headers and custom fields, and [`ImportOptions`].
///
/// A row whose field count differs from the header's, or with a cell that
/// is not UTF-8, is rejected with that reason; the other rows go on. The
/// reader is read synchronously: hand a file or an in-memory buffer (or
/// run the import where blocking is fine).
///
/// Cells are read as [`ImportOptions::csv_formulas`] says: by default a
/// cell an export neutralised (`'=…`) reads as its value (`=…`).
///
/// Errors: [`Error::Validation`] on `batch_size` (see
/// [`ImportOptions::batch_size`]); an I/O error reading the source, or a
/// storage error (in best effort, after the batches before it were
/// committed).
pub async fn import_contacts_csv<S, R>(
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
    let source = CsvSource::new(reader, options.csv_formulas)?;
    run(store, tenant, ctx, source, options).await
}

/// Imports contacts from JSON Lines: one JSON object per line with the
/// fields of [`NewContactDto`](crate::domain::NewContactDto) (`email`,
/// `first_name`, …, `metadata`, and `created_at`, `updated_at`: the
/// original times of a contact the import creates, RFC 3339, together);
/// the other fields an export adds (`id`, `score`, `version`…) are
/// ignored and other keys become custom fields. Blank lines are skipped.
///
/// Errors: as [`import_contacts_csv`].
pub async fn import_contacts_jsonl<S, R>(
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
    let source = JsonlSource(JsonLines::new(reader, true, "JSON Lines file"));
    run(store, tenant, ctx, source, options).await
}

async fn run<S, Src>(
    store: &S,
    tenant: TenantId,
    ctx: &Context,
    mut source: Src,
    options: ImportOptions,
) -> Result<ImportReport>
where
    S: Store + ?Sized,
    Src: RowSource + Send,
{
    // Taken apart so that no borrow of the options (whose progress
    // callback need not be `Sync`) is held across an await.
    let ImportOptions {
        mode,
        policy,
        batch_size,
        keep_outcomes,
        mut progress,
        retries,
        csv_formulas: _,
    } = options;
    let batch_size = check_batch_size(batch_size)?;
    let mut report = ImportReport::default();
    let mut whole = match mode {
        ImportMode::AllOrNothing => {
            let mut tx = store.begin(tenant, ctx.clone()).await?;
            tx.lock_for_import(ImportLock::Exclusive).await?;
            Some(tx)
        }
        ImportMode::BestEffort => None,
    };
    // Grown as rows come, never sized from the caller's number up front.
    let mut numbers: Vec<(u64, u64)> = Vec::new();
    let mut batch: Vec<ContactRow> = Vec::new();
    let mut done = false;
    while !done {
        numbers.clear();
        batch.clear();
        while batch.len() < batch_size {
            let Some(r) = source.next_row()? else {
                done = true;
                break;
            };
            report.rows += 1;
            match r.contact {
                Ok(c) => {
                    numbers.push((r.row, r.line));
                    batch.push(c);
                }
                Err(errors) => report.rejected.push(RejectedRow {
                    row: r.row,
                    line: r.line,
                    errors,
                }),
            }
        }
        if !batch.is_empty() {
            let (outcomes, rejected) = match whole.as_mut() {
                Some(tx) => write_batch(&mut **tx, &numbers, &batch, policy).await?,
                None => upsert_batch(store, tenant, ctx, &numbers, &batch, policy, retries).await?,
            };
            // Rows refused while writing (an unknown company domain) go in
            // file order among those refused while reading.
            if !rejected.is_empty() {
                report.rejected.extend(rejected);
                report.rejected.sort_by_key(|r| r.row);
            }
            for (n, o) in outcomes {
                match o {
                    UpsertOutcome::Inserted(_) => report.inserted += 1,
                    UpsertOutcome::Updated(_) => report.updated += 1,
                    UpsertOutcome::Unchanged(_) => report.unchanged += 1,
                }
                if keep_outcomes {
                    report.outcomes.push((n, o));
                }
            }
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

/// The outcomes of a batch's written rows (with their numbers), and the
/// rows refused while writing it.
type Written = (Vec<(u64, UpsertOutcome)>, Vec<RejectedRow>);

/// Writes one batch in `tx`: resolves each row's company domain (a domain
/// no company holds refuses the row, naming `company_domain`), upserts the
/// rows, then attaches each row's tags (creating missing ones).
async fn write_batch(
    tx: &mut dyn Transaction,
    numbers: &[(u64, u64)],
    batch: &[ContactRow],
    policy: ConflictPolicy,
) -> Result<Written> {
    let mut companies: std::collections::HashMap<String, Option<CompanyId>> =
        std::collections::HashMap::new();
    let mut rejected = Vec::new();
    let mut kept: Vec<(u64, &ContactRow)> = Vec::new();
    let mut contacts: Vec<NewContact> = Vec::new();
    for (&(row, line), r) in numbers.iter().zip(batch) {
        let mut contact = r.contact.clone();
        if let Some(domain) = &r.company_domain {
            let company = match companies.get(domain.as_str()) {
                Some(c) => *c,
                None => {
                    let c = tx.get_company_by_domain(domain).await?.map(|c| c.id);
                    companies.insert(domain.as_str().to_string(), c);
                    c
                }
            };
            match company {
                Some(id) => contact.company_id = Some(id),
                None => {
                    rejected.push(RejectedRow {
                        row,
                        line,
                        errors: vec![FieldError::new(
                            "company_domain",
                            "not_found",
                            format!("no company of the tenant has the domain {domain}"),
                        )],
                    });
                    continue;
                }
            }
        }
        kept.push((row, r));
        contacts.push(contact);
    }
    let mut outcomes = Vec::with_capacity(contacts.len());
    if !contacts.is_empty() {
        let written = tx.upsert_contacts(&contacts, policy).await?;
        for ((row, r), outcome) in kept.into_iter().zip(written) {
            let tagged =
                super::companies::attach_tags(&mut *tx, RecordRef::Contact(outcome.id()), &r.tags)
                    .await?;
            let outcome = match outcome {
                UpsertOutcome::Unchanged(id) if tagged => UpsertOutcome::Updated(id),
                o => o,
            };
            outcomes.push((row, outcome));
        }
    }
    Ok((outcomes, rejected))
}

/// Upserts one batch in its own transaction (holding the tenant's import
/// lock shared), retrying a retryable failure up to `retries` times after
/// a jittered, exponentially growing pause.
async fn upsert_batch<S: Store + ?Sized>(
    store: &S,
    tenant: TenantId,
    ctx: &Context,
    numbers: &[(u64, u64)],
    batch: &[ContactRow],
    policy: ConflictPolicy,
    retries: u32,
) -> Result<Written> {
    let mut attempt = 0;
    loop {
        let result = async {
            let mut tx = store.begin(tenant, ctx.clone()).await?;
            tx.lock_for_import(ImportLock::Shared).await?;
            let out = write_batch(&mut *tx, numbers, batch, policy).await?;
            tx.commit().await?;
            Ok::<_, Error>(out)
        }
        .await;
        match result {
            Err(e) if e.is_retryable() && attempt < retries => {
                let pause = backoff(attempt);
                attempt += 1;
                // The error's kind only: its message may quote a row.
                tracing::info!(
                    tenant = %tenant,
                    rows = batch.len(),
                    retry = attempt,
                    of = retries,
                    error = ?e.kind(),
                    pause_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
                    "retrying an import batch after a retryable failure"
                );
                tokio::time::sleep(pause).await;
            }
            other => return other,
        }
    }
}

/// The pause before retry number `attempt` (from 0): "full jitter", a
/// random time up to 20 ms × 2^attempt, capped at 2 s, so that imports that
/// failed together do not retry in step.
fn backoff(attempt: u32) -> std::time::Duration {
    const FIRST_MS: u64 = 20;
    const MAX_MS: u64 = 2_000;
    let ceiling = FIRST_MS
        .saturating_mul(1u64.checked_shl(attempt).unwrap_or(u64::MAX))
        .min(MAX_MS);
    std::time::Duration::from_millis(fastrand::u64(0..=ceiling))
}

struct CsvSource<R: Read> {
    records: CsvRecords<R>,
    formulas: CsvFormulas,
    columns: Vec<Column>,
}

impl<R: Read> CsvSource<R> {
    fn new(reader: R, formulas: CsvFormulas) -> Result<Self> {
        let (records, header) = CsvRecords::open(reader)?;
        Ok(CsvSource {
            records,
            formulas,
            columns: header.iter().map(|h| Column::from_header(h)).collect(),
        })
    }
}

impl<R: Read> RowSource for CsvSource<R> {
    fn next_row(&mut self) -> Result<Option<ReadRow>> {
        let Some(record) = self.records.next_record()? else {
            return Ok(None);
        };
        let contact = match record.cells {
            Ok(cells) => {
                let mut raw = RawContact::default();
                for (column, cell) in self.columns.iter().zip(cells.iter()) {
                    match std::str::from_utf8(cell) {
                        Ok(text) => raw.text(column, self.formulas.read(text)),
                        Err(e) => raw.error(FieldError::new(
                            column.field(),
                            "invalid_format",
                            format!("is not valid UTF-8 (bad byte at {})", e.valid_up_to()),
                        )),
                    }
                }
                raw.finish()
            }
            Err(e) => Err(vec![e]),
        };
        Ok(Some(ReadRow {
            row: record.row,
            line: record.line,
            contact,
        }))
    }
}

struct JsonlSource<R: BufRead>(JsonLines<R>);

impl<R: BufRead> RowSource for JsonlSource<R> {
    fn next_row(&mut self) -> Result<Option<ReadRow>> {
        let Some(line) = self.0.next_line()? else {
            return Ok(None);
        };
        let contact = match line.object {
            Ok(object) => {
                let mut raw = RawContact::default();
                for (key, value) in object {
                    raw.json(&Column::from_header(&key), value);
                }
                raw.finish()
            }
            Err(e) => Err(vec![e]),
        };
        Ok(Some(ReadRow {
            row: line.row,
            line: line.line,
            contact,
        }))
    }
}
