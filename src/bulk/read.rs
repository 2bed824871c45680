//! Reading the files an import takes, row by row with their numbers: JSON
//! Lines (each non-blank line one object) and CSV (a header row, then one
//! record per row). Shared by the contact import and the deal and activity
//! imports, which turn each row into what they import.

use std::io::{BufRead, Read};

use serde_json::{Map, Value};

use super::CsvFormulas;
use crate::error::{Error, FieldError, Result};

/// One row of a file: its number among the data rows (from 1), the line
/// it starts on (from 1), and its object, or why it is not one.
pub(super) struct Line {
    pub(super) row: u64,
    pub(super) line: u64,
    pub(super) object: std::result::Result<Map<String, Value>, FieldError>,
}

/// The non-blank lines of a JSON Lines file, each read as a JSON object.
pub(super) struct JsonLines<R: BufRead> {
    reader: R,
    buf: Vec<u8>,
    row: u64,
    line: u64,
    skip_bom: bool,
    file: &'static str,
}

impl<R: BufRead> JsonLines<R> {
    /// Reads `reader`; a line reads as blank when it holds only spaces
    /// (and, with `skip_bom`, a byte-order mark, which is left out of any
    /// line). A read error is `cannot read the {file}: …`.
    pub(super) fn new(reader: R, skip_bom: bool, file: &'static str) -> Self {
        JsonLines {
            reader,
            buf: Vec::new(),
            row: 0,
            line: 0,
            skip_bom,
            file,
        }
    }

    /// The next non-blank line, `Ok(None)` at the end; `Err` when the file
    /// cannot be read any further.
    pub(super) fn next_line(&mut self) -> Result<Option<Line>> {
        loop {
            self.buf.clear();
            let n = self
                .reader
                .read_until(b'\n', &mut self.buf)
                .map_err(|e| Error::backend(format!("cannot read the {}: {e}", self.file)))?;
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            let mut text = self.buf.trim_ascii();
            if self.skip_bom {
                text = text.strip_prefix("\u{feff}".as_bytes()).unwrap_or(text);
            }
            if text.is_empty() {
                continue;
            }
            self.row += 1;
            return Ok(Some(Line {
                row: self.row,
                line: self.line,
                object: serde_json::from_slice(text).map_err(|e| {
                    FieldError::new(
                        "row",
                        "invalid_format",
                        format!("is not a JSON object ({e})"),
                    )
                }),
            }));
        }
    }
}

/// One data record of a CSV file, numbered as a [`Line`], with its cells,
/// or the error of the record as a whole (`row`: it could not be parsed,
/// or its field count differs from the header's).
pub(super) struct CsvRecord<'a> {
    pub(super) row: u64,
    pub(super) line: u64,
    pub(super) cells: std::result::Result<&'a csv::ByteRecord, FieldError>,
}

/// The records of a CSV file after its header row.
pub(super) struct CsvRecords<R: Read> {
    reader: csv::Reader<R>,
    record: csv::ByteRecord,
    width: usize,
    row: u64,
    ended: bool,
}

impl<R: Read> CsvRecords<R> {
    /// Reads the header row of `reader`: the records that follow and the
    /// header's cells (as UTF-8, lossily). A file without any record has an
    /// empty header and no records.
    pub(super) fn open(reader: R) -> Result<(Self, Vec<String>)> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(reader);
        let mut header = csv::ByteRecord::new();
        let has_header = reader.read_byte_record(&mut header).map_err(csv_error)?;
        let header: Vec<String> = if has_header {
            header
                .iter()
                .map(|h| String::from_utf8_lossy(h).into_owned())
                .collect()
        } else {
            Vec::new()
        };
        let records = CsvRecords {
            reader,
            record: csv::ByteRecord::new(),
            width: header.len(),
            row: 0,
            ended: !has_header,
        };
        Ok((records, header))
    }

    /// The next record, `Ok(None)` at the end; `Err` when the file cannot
    /// be read any further (an I/O error).
    pub(super) fn next_record(&mut self) -> Result<Option<CsvRecord<'_>>> {
        if self.ended {
            return Ok(None);
        }
        let more = match self.reader.read_byte_record(&mut self.record) {
            Ok(more) => more,
            Err(e) if matches!(e.kind(), csv::ErrorKind::Io(_)) => {
                self.ended = true;
                return Err(csv_error(e));
            }
            Err(e) => {
                // Not reachable with a flexible reader; kept as a row error.
                self.row += 1;
                return Ok(Some(CsvRecord {
                    row: self.row,
                    line: e.position().map_or(0, |p| p.line()),
                    cells: Err(FieldError::new("row", "invalid_format", e.to_string())),
                }));
            }
        };
        if !more {
            self.ended = true;
            return Ok(None);
        }
        self.row += 1;
        let line = self.record.position().map_or(0, |p| p.line());
        let cells = if self.record.len() == self.width {
            Ok(&self.record)
        } else {
            Err(FieldError::new(
                "row",
                "invalid_format",
                format!(
                    "has {} fields, the header has {}",
                    self.record.len(),
                    self.width
                ),
            ))
        };
        Ok(Some(CsvRecord {
            row: self.row,
            line,
            cells,
        }))
    }
}

/// The error of a CSV file that cannot be read.
pub(super) fn csv_error(e: csv::Error) -> Error {
    Error::backend(format!("cannot read the CSV file: {e}"))
}

/// The non-blank lines of a JSON Lines file of deals or activities.
pub(super) fn read_lines<R: BufRead>(reader: R) -> impl Iterator<Item = Result<Line>> {
    let mut lines = JsonLines::new(reader, true, "file");
    std::iter::from_fn(move || lines.next_line().transpose())
}

/// The rows of a CSV file with a header row, each as the object a JSON
/// line would hold: a header (trimmed, any casing) names the field, a
/// non-blank cell is its value as a string (read as `formulas` says), a
/// blank cell leaves it out. Rows and lines are numbered as
/// [`import_contacts_csv`](super::import_contacts_csv) numbers them: data
/// rows from 1, the line a row starts on from 1. A header that cannot be
/// read is the first item.
pub(super) fn read_csv_rows<R: Read>(
    reader: R,
    formulas: CsvFormulas,
) -> impl Iterator<Item = Result<Line>> {
    let (mut records, columns, mut failed) = match CsvRecords::open(reader) {
        Ok((records, header)) => {
            let columns: Vec<String> = header
                .iter()
                .map(|h| h.trim_start_matches('\u{feff}').trim().to_ascii_lowercase())
                .collect();
            (Some(records), columns, None)
        }
        Err(e) => (None, Vec::new(), Some(e)),
    };
    std::iter::from_fn(move || {
        if let Some(e) = failed.take() {
            return Some(Err(e));
        }
        let record = match records.as_mut()?.next_record() {
            Ok(record) => record?,
            Err(e) => return Some(Err(e)),
        };
        Some(Ok(Line {
            row: record.row,
            line: record.line,
            object: record
                .cells
                .and_then(|cells| csv_object(&columns, cells, formulas)),
        }))
    })
}

/// One CSV record (of the header's width) as the object a JSON line would
/// hold.
fn csv_object(
    columns: &[String],
    record: &csv::ByteRecord,
    formulas: CsvFormulas,
) -> std::result::Result<Map<String, Value>, FieldError> {
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
            let value = Value::String(formulas.read(cell).to_string());
            // Two columns naming one field (`Title` and `title`) with two
            // values: which to take is not for the import to guess.
            let differs = |given: &Value| match (given, &value) {
                (Value::String(a), Value::String(b)) => !super::row::same_text(a, b),
                _ => true,
            };
            if object.get(column).is_some_and(differs) {
                return Err(FieldError::new(
                    column.as_str(),
                    "duplicate",
                    "is given two different values in the row (two columns name it): keep one",
                ));
            }
            object.insert(column.clone(), value);
        }
    }
    Ok(object)
}
