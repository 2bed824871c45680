//! Reading the files an import takes, row by row with their numbers: JSON
//! Lines (each non-blank line one object) and CSV (a header row, then one
//! record per row). Shared by the contact import and the deal and activity
//! imports, which turn each row into what they import.

use std::fmt;
use std::io::{self, BufRead, Read};

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};

use super::{CsvFormulas, MAX_ROW_BYTES};
use crate::{
    domain::shortened,
    error::{Error, FieldError, Result, ValidationErrors},
};

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
    /// cannot be read any further. A line longer than [`MAX_ROW_BYTES`] is
    /// a row of its own refused with code `too_long`, and skipped without
    /// being held: memory stays bounded whatever the file holds.
    pub(super) fn next_line(&mut self) -> Result<Option<Line>> {
        loop {
            self.buf.clear();
            let limit = MAX_ROW_BYTES as u64 + 1;
            let n = (&mut self.reader)
                .take(limit)
                .read_until(b'\n', &mut self.buf)
                .map_err(|e| self.read_error(e))?;
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            if self.buf.len() > MAX_ROW_BYTES {
                if self.buf.last() != Some(&b'\n') {
                    self.skip_rest_of_line()?;
                }
                self.row += 1;
                return Ok(Some(Line {
                    row: self.row,
                    line: self.line,
                    object: Err(row_too_long()),
                }));
            }
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
                object: json_object(text),
            }));
        }
    }

    /// Reads past the end of the current line without keeping it.
    fn skip_rest_of_line(&mut self) -> Result<()> {
        loop {
            let file = self.file;
            let available = self.reader.fill_buf().map_err(|e| read_error(file, e))?;
            if available.is_empty() {
                return Ok(());
            }
            match available.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    self.reader.consume(end + 1);
                    return Ok(());
                }
                None => {
                    let all = available.len();
                    self.reader.consume(all);
                }
            }
        }
    }

    fn read_error(&self, e: io::Error) -> Error {
        read_error(self.file, e)
    }
}

/// The error of a file that cannot be read any further.
fn read_error(file: &str, e: io::Error) -> Error {
    Error::backend(format!("cannot read the {file}: {e}"))
}

/// The error of a row longer than [`MAX_ROW_BYTES`].
fn row_too_long() -> FieldError {
    FieldError::new(
        "row",
        "too_long",
        format!("is longer than {MAX_ROW_BYTES} bytes: not read"),
    )
}

/// One line of JSON as an object. A key written twice with two different
/// values (`{"email":"a@x.org","email":"b@x.org"}`) is refused, naming the
/// key, as two columns naming one field are: a JSON parser would keep the
/// last one silently.
fn json_object(text: &[u8]) -> std::result::Result<Map<String, Value>, FieldError> {
    match serde_json::from_slice::<Object>(text) {
        Ok(Object {
            object,
            twice: None,
        }) => Ok(object),
        Ok(Object {
            twice: Some(key), ..
        }) => Err(FieldError::new(
            shortened(key),
            "duplicate",
            "is given two different values in the object (the key is written twice): keep one",
        )),
        Err(e) => Err(FieldError::new(
            "row",
            "invalid_format",
            format!("is not a JSON object ({e})"),
        )),
    }
}

/// A JSON object read key by key: the first key written twice with
/// another value is kept aside.
struct Object {
    object: Map<String, Value>,
    twice: Option<String>,
}

impl<'de> Deserialize<'de> for Object {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = Object;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Object, A::Error> {
                let mut object = Map::new();
                let mut twice = None;
                while let Some(key) = map.next_key::<String>()? {
                    let value: Value = map.next_value()?;
                    // Null and blank text are no value, as a blank cell is.
                    let absent = |v: &Value| match v {
                        Value::Null => true,
                        Value::String(s) => s.trim().is_empty(),
                        _ => false,
                    };
                    match object.get(&key) {
                        Some(given) if absent(&value) || super::row::same_value(given, &value) => {}
                        Some(given) if !absent(given) => {
                            twice.get_or_insert(key);
                        }
                        _ => {
                            object.insert(key, value);
                        }
                    }
                }
                Ok(Object { object, twice })
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
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
    reader: csv::Reader<Bounded<R>>,
    record: csv::ByteRecord,
    width: usize,
    row: u64,
    ended: bool,
}

impl<R: Read> CsvRecords<R> {
    /// Reads the header row of `reader`: the records that follow and the
    /// header's cells. A file without any record has an empty header and no
    /// records; a header cell that is not UTF-8 is a validation error on
    /// `file`.
    pub(super) fn open(reader: R) -> Result<(Self, Vec<String>)> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .buffer_capacity(CSV_BUFFER)
            .from_reader(Bounded::new(reader));
        let mut header = csv::ByteRecord::new();
        let has_header = match reader.read_byte_record(&mut header) {
            Ok(has_header) => has_header,
            Err(e) => return Err(record_error(&reader, e, 0)),
        };
        if reader.position().byte() > MAX_ROW_BYTES as u64 {
            reader.get_mut().overflowed = true;
            return Err(record_error(&reader, too_long_record(), 0));
        }
        let next = reader.position().clone();
        reader.get_mut().record_starts_at(&next);
        // A header cell that is not UTF-8 refuses the file, as such a cell
        // refuses its row: read lossily, its column would name another
        // field (`Stra\u{FFFD}e` for a Windows-1252 `Straße`), and two such
        // columns one field.
        let header: Vec<String> = if has_header {
            header
                .iter()
                .enumerate()
                .map(|(i, h)| match std::str::from_utf8(h) {
                    Ok(h) => Ok(h.to_owned()),
                    Err(e) => Err(not_utf8_header(i, e)),
                })
                .collect::<Result<_>>()?
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
                return Err(record_error(&self.reader, e, self.row + 1));
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
        let next = self.reader.position().clone();
        if next.byte() - self.reader.get_ref().start.byte() > MAX_ROW_BYTES as u64 {
            // Read whole, within the parser's buffer of slack: still refused.
            self.ended = true;
            self.reader.get_mut().overflowed = true;
            return Err(record_error(&self.reader, too_long_record(), self.row));
        }
        self.reader.get_mut().record_starts_at(&next);
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

/// The error of a CSV file that cannot be read past data row `row` (0:
/// the header): a record longer than
/// [`MAX_ROW_BYTES`] (a validation error on `file`: where such a record
/// ends cannot be told without reading it, so the file is read no
/// further), or an I/O error.
fn record_error<R: Read>(reader: &csv::Reader<Bounded<R>>, e: csv::Error, row: u64) -> Error {
    let bounded = reader.get_ref();
    if !bounded.overflowed {
        return csv_error(e);
    }
    let line = bounded.start.line();
    let record = if row == 0 {
        "the header row".to_string()
    } else {
        format!("row {row}")
    };
    ValidationErrors::single(FieldError::new(
        "file",
        "too_long",
        format!(
            "{record} (from line {line}) is longer than {MAX_ROW_BYTES} bytes: the file is not read past it"
        ),
    ))
    .into()
}

/// The error of a header whose column `index` (from 0) is not UTF-8.
fn not_utf8_header(index: usize, e: std::str::Utf8Error) -> Error {
    ValidationErrors::single(FieldError::new(
        "file",
        "invalid_format",
        format!(
            "the header row's column {} is not valid UTF-8 (bad byte at {}): save the file as UTF-8",
            index + 1,
            e.valid_up_to()
        ),
    ))
    .into()
}

/// The error of a header naming a column the import does not read.
fn unknown_column(column: &str, known: &[&str]) -> Error {
    ValidationErrors::single(FieldError::new(
        shortened(column.to_string()),
        "unknown_field",
        format!(
            "is not a column of this import (its columns: {})",
            known.join(", ")
        ),
    ))
    .into()
}

/// The parser's error for a record found too long once read whole.
fn too_long_record() -> csv::Error {
    csv::Error::from(io::Error::new(
        io::ErrorKind::InvalidData,
        format!("a record is longer than {MAX_ROW_BYTES} bytes"),
    ))
}

/// The buffer the CSV reader reads through (the slack of [`Bounded`]).
const CSV_BUFFER: usize = 64 * 1024;

/// A reader that hands the CSV parser no more than [`MAX_ROW_BYTES`] (and
/// the parser's buffer) past the start of the record being read, so that
/// one endless record cannot fill memory: asked for more, it fails and
/// says so (`overflowed`).
struct Bounded<R> {
    inner: R,
    start: csv::Position,
    handed: u64,
    until: u64,
    overflowed: bool,
}

impl<R> Bounded<R> {
    fn new(inner: R) -> Self {
        let mut start = csv::Position::new();
        start.set_line(1);
        Bounded {
            inner,
            start,
            handed: 0,
            until: (MAX_ROW_BYTES + CSV_BUFFER) as u64,
            overflowed: false,
        }
    }

    /// The next record starts at `start` in the file.
    fn record_starts_at(&mut self, start: &csv::Position) {
        self.start = start.clone();
        self.until = start
            .byte()
            .saturating_add((MAX_ROW_BYTES + CSV_BUFFER) as u64);
    }
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let room = self.until.saturating_sub(self.handed);
        if room == 0 && !buf.is_empty() {
            self.overflowed = true;
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a record is longer than {MAX_ROW_BYTES} bytes"),
            ));
        }
        let n = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let read = self.inner.read(&mut buf[..n])?;
        self.handed += read as u64;
        Ok(read)
    }
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
/// read, or that names a column not in `known` (a misspelt column would
/// otherwise be dropped from every row), is the first item and the last.
/// A column without a name is let through: its non-blank cells are
/// refused by the row's reader.
pub(super) fn read_csv_rows<R: Read>(
    reader: R,
    formulas: CsvFormulas,
    known: &'static [&'static str],
) -> impl Iterator<Item = Result<Line>> {
    let (mut records, columns, mut failed) = match CsvRecords::open(reader) {
        Ok((records, header)) => {
            let columns: Vec<String> = header
                .iter()
                .map(|h| h.trim_start_matches('\u{feff}').trim().to_ascii_lowercase())
                .collect();
            match columns
                .iter()
                .find(|c| !c.is_empty() && !known.contains(&c.as_str()))
            {
                Some(unknown) => (None, Vec::new(), Some(unknown_column(unknown, known))),
                None => (Some(records), columns, None),
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_line_is_too_long_past_the_limit_its_line_break_included() {
        // A line of `n` bytes in all: an object whose text and end take them.
        let line =
            |n: usize, end: &str| format!("{{\"a\":\"{}\"}}{end}", "x".repeat(n - 8 - end.len()));
        for (text, long) in [
            (line(MAX_ROW_BYTES, "\n"), false),
            (line(MAX_ROW_BYTES, "\r\n"), false),
            (line(MAX_ROW_BYTES, ""), false),
            (line(MAX_ROW_BYTES + 1, "\n"), true),
            (line(MAX_ROW_BYTES + 1, "\r\n"), true),
            (line(MAX_ROW_BYTES + 1, ""), true),
            (line(MAX_ROW_BYTES + 5, "\n"), true),
        ] {
            let ended = text.ends_with('\n');
            let what = (text.len(), ended);
            // A line after one that ends: read from its start.
            let file = if ended {
                format!("{text}{{}}\n")
            } else {
                text.clone()
            };
            let mut lines = JsonLines::new(file.as_bytes(), true, "file");
            let first = lines.next_line().unwrap().unwrap();
            match (&first.object, long) {
                (Ok(o), false) => {
                    let a = o["a"].as_str().map(str::len);
                    assert_eq!(a, Some(text.trim_end().len() - 8), "{what:?}");
                }
                (Err(e), true) => assert_eq!(e.code, "too_long", "{what:?}"),
                (other, _) => panic!("{what:?}: {other:?}"),
            }
            if ended {
                let next = lines.next_line().unwrap().unwrap();
                assert_eq!((next.row, next.line), (2, 2), "{what:?}");
                assert!(next.object.is_ok(), "{what:?}: {:?}", next.object);
            }
            assert!(lines.next_line().unwrap().is_none(), "{what:?}");
        }
    }

    #[test]
    fn a_long_key_is_named_by_its_first_64_characters() {
        assert_eq!(shortened("email".into()), "email");
        let exact = "é".repeat(64);
        assert_eq!(shortened(exact.clone()), exact);
        let long = format!("{exact}ßßß");
        assert_eq!(shortened(long), format!("{exact}…"));
    }

    #[test]
    fn a_key_twice_with_one_value_or_a_blank_is_one_key() {
        let read = |text: &str| json_object(text.as_bytes());
        let ok = read(r#"{"a":"X ","a":"x","b":null,"b":1,"c":2,"c":""}"#).unwrap();
        assert_eq!(ok["a"], "X ");
        assert_eq!(ok["b"], 1);
        assert_eq!(ok["c"], 2);
        let e = read(r#"{"a":1,"a":2,"b":3,"b":4}"#).unwrap_err();
        assert_eq!((e.field.as_str(), e.code), ("a", "duplicate"));
        let e = read("[1]").unwrap_err();
        assert_eq!((e.field.as_str(), e.code), ("row", "invalid_format"));
    }
}
