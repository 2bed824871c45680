//! Streaming import of contacts from CSV and JSON Lines: read a batch,
//! validate it row by row, upsert it, report, repeat.

use std::{
    fmt,
    io::{BufRead, Read},
};

use serde::Serialize;
use serde_json::{Map, Value};

use super::{
    ConflictPolicy, CsvFormulas, ImportLock, UpsertOutcome, check_batch_size,
    row::{Column, RawContact},
};
use crate::{
    Context, Store, TenantId,
    domain::NewContact,
    error::{Error, FieldError, Result},
};

/// What happens to the good rows of a file that has bad ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "snake_case")]
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

/// How to import.
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
    contact: std::result::Result<NewContact, Vec<FieldError>>,
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
/// `first_name`, …, `metadata`); the fields an export adds (`id`, `score`,
/// timestamps…) are ignored and other keys become custom fields. Blank
/// lines are skipped.
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
    let source = JsonlSource {
        reader,
        row: 0,
        line: 0,
        buf: Vec::new(),
    };
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
    let mut numbers: Vec<u64> = Vec::new();
    let mut batch: Vec<NewContact> = Vec::new();
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
                    numbers.push(r.row);
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
            let outcomes = match whole.as_mut() {
                Some(tx) => tx.upsert_contacts(&batch, policy).await?,
                None => upsert_batch(store, tenant, ctx, &batch, policy, retries).await?,
            };
            for (n, o) in numbers.iter().zip(outcomes) {
                match o {
                    UpsertOutcome::Inserted(_) => report.inserted += 1,
                    UpsertOutcome::Updated(_) => report.updated += 1,
                    UpsertOutcome::Unchanged(_) => report.unchanged += 1,
                }
                if keep_outcomes {
                    report.outcomes.push((*n, o));
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

/// Upserts one batch in its own transaction (holding the tenant's import
/// lock shared), retrying a retryable failure up to `retries` times after
/// a jittered, exponentially growing pause.
async fn upsert_batch<S: Store + ?Sized>(
    store: &S,
    tenant: TenantId,
    ctx: &Context,
    batch: &[NewContact],
    policy: ConflictPolicy,
    retries: u32,
) -> Result<Vec<UpsertOutcome>> {
    let mut attempt = 0;
    loop {
        let result = async {
            let mut tx = store.begin(tenant, ctx.clone()).await?;
            tx.lock_for_import(ImportLock::Shared).await?;
            let out = tx.upsert_contacts(batch, policy).await?;
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
    reader: csv::Reader<R>,
    formulas: CsvFormulas,
    columns: Vec<Column>,
    record: csv::ByteRecord,
    row: u64,
    ended: bool,
}

impl<R: Read> CsvSource<R> {
    fn new(reader: R, formulas: CsvFormulas) -> Result<Self> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(reader);
        let mut header = csv::ByteRecord::new();
        let has_header = reader.read_byte_record(&mut header).map_err(csv_error)?;
        let columns = if has_header {
            header
                .iter()
                .map(|h| Column::from_header(&String::from_utf8_lossy(h)))
                .collect()
        } else {
            Vec::new()
        };
        Ok(CsvSource {
            reader,
            formulas,
            columns,
            record: csv::ByteRecord::new(),
            row: 0,
            ended: !has_header,
        })
    }
}

fn csv_error(e: csv::Error) -> Error {
    Error::backend(format!("cannot read the CSV file: {e}"))
}

impl<R: Read> RowSource for CsvSource<R> {
    fn next_row(&mut self) -> Result<Option<ReadRow>> {
        if self.ended {
            return Ok(None);
        }
        let more = match self.reader.read_byte_record(&mut self.record) {
            Ok(more) => more,
            Err(e) if matches!(e.kind(), csv::ErrorKind::Io(_)) => return Err(csv_error(e)),
            Err(e) => {
                // Not reachable with a flexible reader; kept as a row error.
                self.row += 1;
                let line = e.position().map_or(0, |p| p.line());
                return Ok(Some(ReadRow {
                    row: self.row,
                    line,
                    contact: Err(vec![FieldError::new(
                        "row",
                        "invalid_format",
                        e.to_string(),
                    )]),
                }));
            }
        };
        if !more {
            self.ended = true;
            return Ok(None);
        }
        self.row += 1;
        let line = self.record.position().map_or(0, |p| p.line());
        if self.record.len() != self.columns.len() {
            return Ok(Some(ReadRow {
                row: self.row,
                line,
                contact: Err(vec![FieldError::new(
                    "row",
                    "invalid_format",
                    format!(
                        "has {} fields, the header has {}",
                        self.record.len(),
                        self.columns.len()
                    ),
                )]),
            }));
        }
        let mut raw = RawContact::default();
        for (column, cell) in self.columns.iter().zip(self.record.iter()) {
            match std::str::from_utf8(cell) {
                Ok(text) => raw.text(column, self.formulas.read(text)),
                Err(e) => raw.error(FieldError::new(
                    column.field(),
                    "invalid_format",
                    format!("is not valid UTF-8 (bad byte at {})", e.valid_up_to()),
                )),
            }
        }
        Ok(Some(ReadRow {
            row: self.row,
            line,
            contact: raw.finish(),
        }))
    }
}

struct JsonlSource<R: BufRead> {
    reader: R,
    row: u64,
    line: u64,
    buf: Vec<u8>,
}

impl<R: BufRead> RowSource for JsonlSource<R> {
    fn next_row(&mut self) -> Result<Option<ReadRow>> {
        loop {
            self.buf.clear();
            let n = self
                .reader
                .read_until(b'\n', &mut self.buf)
                .map_err(|e| Error::backend(format!("cannot read the JSON Lines file: {e}")))?;
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            let text = self.buf.trim_ascii();
            let text = text.strip_prefix("\u{feff}".as_bytes()).unwrap_or(text);
            if text.is_empty() {
                continue;
            }
            self.row += 1;
            let contact = match serde_json::from_slice::<Map<String, Value>>(text) {
                Ok(object) => {
                    let mut raw = RawContact::default();
                    for (key, value) in object {
                        raw.json(&Column::from_header(&key), value);
                    }
                    raw.finish()
                }
                Err(e) => Err(vec![FieldError::new(
                    "row",
                    "invalid_format",
                    format!("is not a JSON object ({e})"),
                )]),
            };
            return Ok(Some(ReadRow {
                row: self.row,
                line: self.line,
                contact,
            }));
        }
    }
}
