//! Importing an operator's CSV export through a mapping file.
//!
//! The file is read as a stream ([`CsvImport`]): records become subscribers a chunk at a time.
//! Naming both lines of a duplicate number needs every number seen so far: [`read_csv`] keeps
//! them in memory (it holds the whole file anyway); [`CsvImport::streaming`] hands each chunk's
//! numbers to the caller, who keeps them in the database, so memory does not grow with the
//! file. The import is all-or-nothing: once any record has a problem, no more rows are handed
//! out, the rest of the file is still read to report every problem (each located as
//! `file:line:column`), and the caller rolls back what it wrote.

mod error;
mod mapping;
mod records;
mod value;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io::Read;
use std::ops::Range;

use catalogue::{Attrs, Value};
use domain::Msisdn;
use sha2::{Digest, Sha256};
use store::subscribers::NewSubscriber;

pub use error::{ImportError, ImportErrors};
pub use mapping::{Mapping, parse_mapping};
pub use records::{Key, Record, RecordKind, RecordMapping, RecordReader};
pub(crate) use value::is_slot;

use mapping::{Cells, ColumnRef, How, MsisdnSrc, Src, SynthMethod};
use value::{Round, Rule};

/// Reads a whole CSV export (header line first) and turns each record into a subscriber as
/// `mapping` says. `path_for_messages` only prefixes error messages.
///
/// On any problem, returns all of them (see [`ImportErrors`]) and no rows: header columns the
/// mapping names but the file lacks, malformed records, cells that do not fit their field,
/// blank cells without a `default`, and msisdns used twice (naming both lines).
pub fn read_csv(
    mapping: &Mapping,
    path_for_messages: &str,
    reader: impl Read,
) -> Result<Vec<NewSubscriber>, ImportErrors> {
    let mut import = CsvImport::open(mapping, path_for_messages, reader)?;
    let mut rows = Vec::new();
    while import.read_chunk(&mut rows, usize::MAX) {}
    import.finish()?;
    Ok(rows)
}

/// The numbers read so far, to find duplicates.
enum Seen {
    /// Key of each msisdn seen (see `msisdn_key`) -> the line it was on.
    Memory(HashMap<u64, u64>),
    /// The numbers of the chunk last read, for the caller to look up (see
    /// [`CsvImport::streaming`]).
    Chunk(ChunkNumbers),
}

/// The numbers of one chunk, and what a duplicate's message needs of each.
#[derive(Default)]
struct ChunkNumbers {
    /// (`msisdn_key` as the caller stores it, line), in file order.
    keys: Vec<(i64, u64)>,
    /// Per number: the 0-based cell of the record its problem is reported at, and the cell's
    /// text in `cells` (for a synthesized number's message).
    at: Vec<(usize, Range<usize>)>,
    cells: String,
}

impl ChunkNumbers {
    fn clear(&mut self) {
        self.keys.clear();
        self.at.clear();
        self.cells.clear();
    }
}

/// A CSV export being read record by record (see the module documentation).
pub struct CsvImport<'m, R: Read> {
    mapping: &'m Mapping,
    csv: CsvRecords<R>,
    seen: Seen,
}

impl<'m, R: Read> CsvImport<'m, R> {
    /// Reads the header and finds the mapped columns in it. Duplicate numbers are found in
    /// memory (8 bytes and a map entry per record).
    pub fn open(
        mapping: &'m Mapping,
        path_for_messages: &str,
        reader: R,
    ) -> Result<Self, ImportErrors> {
        Self::open_with(
            mapping,
            path_for_messages,
            reader,
            Seen::Memory(HashMap::new()),
        )
    }

    /// As [`CsvImport::open`], but keeping no number beyond the chunk being read: after each
    /// [`CsvImport::read_chunk`], the caller looks up the chunk's [`CsvImport::numbers`] among
    /// those of earlier chunks (and adds them), then reports what it found with
    /// [`CsvImport::duplicates`] before asking [`CsvImport::failed`]. Records that
    /// [`CsvImport::finish`] itself reads are checked only against each other.
    pub fn streaming(
        mapping: &'m Mapping,
        path_for_messages: &str,
        reader: R,
    ) -> Result<Self, ImportErrors> {
        Self::open_with(
            mapping,
            path_for_messages,
            reader,
            Seen::Chunk(ChunkNumbers::default()),
        )
    }

    fn open_with(
        mapping: &'m Mapping,
        path_for_messages: &str,
        reader: R,
        seen: Seen,
    ) -> Result<Self, ImportErrors> {
        let (csv, headers) = CsvRecords::header(path_for_messages, reader)?;
        Ok(CsvImport {
            mapping,
            csv: CsvRecords::new(
                path_for_messages,
                csv,
                headers,
                &mapping.columns,
                &mapping.file,
            )?,
            seen,
        })
    }

    /// Appends the subscribers of up to `max` further records to `out`. Returns false once
    /// the file is read to its end. After the first problem nothing more is appended (the
    /// import will be refused), but records are still read to report their problems.
    pub fn read_chunk(&mut self, out: &mut Vec<NewSubscriber>, max: usize) -> bool {
        if let Seen::Chunk(c) = &mut self.seen {
            c.clear();
        }
        let mapping = self.mapping;
        let seen = &mut self.seen;
        self.csv
            .read_chunk(out, max, &mapping.cells, |row, errors| {
                row.subscriber(mapping, seen, errors)
            })
    }

    /// The numbers of the chunk last read (streaming only; empty otherwise), as keys that are
    /// equal exactly when the numbers are, each with its line.
    pub fn numbers(&self) -> &[(i64, u64)] {
        match &self.seen {
            Seen::Chunk(c) => &c.keys,
            Seen::Memory(_) => &[],
        }
    }

    /// Reports the chunk's duplicates: `earlier` holds, for each of [`CsvImport::numbers`]
    /// in order, the line of an earlier record with the same number, if any. Each is reported
    /// among the file's other problems in line order, as the first problem of its record.
    pub fn duplicates(&mut self, earlier: &[Option<u64>]) {
        let Seen::Chunk(c) = &self.seen else {
            return;
        };
        let synth = synth_method(&self.mapping.plan.msisdn);
        let csv = &mut self.csv;
        for ((&(key, line), (index, cell)), earlier) in c.keys.iter().zip(&c.at).zip(earlier) {
            let Some(earlier) = earlier else {
                continue;
            };
            let msisdn = msisdn_of_key(key as u64);
            let error = ImportError::Cell {
                file: csv.file.clone(),
                line,
                column: index + 1,
                header: csv.headers.get(*index).unwrap_or("").trim().to_owned(),
                message: duplicate_message(&msisdn, synth, &c.cells[cell.clone()], *earlier),
            };
            csv.errors.insert_in_line_order(error);
        }
    }

    /// Whether a problem has been found (the import will be refused).
    pub fn failed(&self) -> bool {
        self.csv.failed()
    }

    /// Records read so far.
    pub fn records(&self) -> u64 {
        self.csv.records
    }

    /// Bytes of the file consumed so far (for a progress bar).
    pub fn position(&self) -> u64 {
        self.csv.position()
    }

    /// Reads whatever is left, then: the number of records, or every problem found.
    pub fn finish(mut self) -> Result<u64, ImportErrors> {
        if !self.csv.done && matches!(self.seen, Seen::Chunk(_)) {
            // Nobody looks up numbers read from here on: check them against each other.
            self.seen = Seen::Memory(HashMap::new());
        }
        let mapping = self.mapping;
        let seen = &mut self.seen;
        self.csv.read_rest(&mapping.cells, |row, errors| {
            row.subscriber(mapping, seen, errors)
        });
        if self.csv.errors.is_empty() && self.csv.records == 0 {
            // An export cut off after its header is a failed export, not an empty base.
            self.csv.errors.push(ImportError::Line {
                file: self.csv.file.clone(),
                line: 2,
                message: "no records after the header: expected at least one subscriber".to_owned(),
            });
        }
        self.csv.result()
    }
}

/// The reading both imports share ([`CsvImport`] and [`RecordReader`]): a CSV file whose
/// header has the mapped columns, read a chunk of records at a time. Once any record has a
/// problem no more are handed out, but the rest are still read to report every problem.
pub(crate) struct CsvRecords<R: Read> {
    pub(crate) file: String,
    csv: csv::Reader<R>,
    pub(crate) headers: csv::StringRecord,
    cols: Vec<usize>,
    record: csv::StringRecord,
    pub(crate) records: u64,
    pub(crate) errors: ImportErrors,
    done: bool,
}

impl<R: Read> CsvRecords<R> {
    /// Starts reading: the CSV reader and the header line.
    pub(crate) fn header(
        file: &str,
        reader: R,
    ) -> Result<(csv::Reader<R>, csv::StringRecord), ImportErrors> {
        let mut csv = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(false)
            .from_reader(reader);
        match csv.headers() {
            Ok(h) => {
                let h = h.clone();
                Ok((csv, h))
            }
            Err(e) => Err(csv_error(file, &e).into()),
        }
    }

    /// Finds the mapped `columns` (named in `mapping_file`) in the header.
    pub(crate) fn new(
        file: &str,
        csv: csv::Reader<R>,
        headers: csv::StringRecord,
        columns: &[ColumnRef],
        mapping_file: &str,
    ) -> Result<Self, ImportErrors> {
        let mut errors = ImportErrors::default();
        let cols = resolve_columns(columns, mapping_file, file, &headers, &mut errors);
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(CsvRecords {
            file: file.to_owned(),
            csv,
            headers,
            cols,
            record: csv::StringRecord::new(),
            records: 0,
            errors,
            done: false,
        })
    }

    /// Turns up to `max` further records into items with `each` (which pushes the problems
    /// of a record it returns `None` for) and appends them to `out` while no problem has been
    /// found. Returns false once the file is read to its end.
    pub(crate) fn read_chunk<T>(
        &mut self,
        out: &mut Vec<T>,
        max: usize,
        cells: &Cells,
        mut each: impl FnMut(&Row<'_>, &mut ImportErrors) -> Option<T>,
    ) -> bool {
        if self.done {
            return false;
        }
        let mut n = 0;
        while n < max {
            match self.csv.read_record(&mut self.record) {
                Ok(false) => {
                    self.done = true;
                    return false;
                }
                Ok(true) => {
                    n += 1;
                    self.records += 1;
                    let row = Row {
                        file: &self.file,
                        line: self.record.position().map_or(0, |p| p.line()),
                        number: self.records,
                        record: &self.record,
                        headers: &self.headers,
                        cols: &self.cols,
                        cells,
                    };
                    if let Some(item) = each(&row, &mut self.errors)
                        && self.errors.is_empty()
                    {
                        out.push(item);
                    }
                }
                Err(e) => {
                    let fatal = matches!(e.kind(), csv::ErrorKind::Io(_));
                    self.errors.push(csv_error(&self.file, &e));
                    if fatal {
                        self.done = true;
                        return false;
                    }
                }
            }
        }
        true
    }

    /// Reads whatever is left, for its problems.
    pub(crate) fn read_rest<T>(
        &mut self,
        cells: &Cells,
        mut each: impl FnMut(&Row<'_>, &mut ImportErrors) -> Option<T>,
    ) {
        let mut sink = Vec::new();
        while self.read_chunk(&mut sink, 4096, cells, &mut each) {
            sink.clear();
        }
    }

    pub(crate) fn failed(&self) -> bool {
        !self.errors.is_empty()
    }

    /// Bytes of the file consumed so far (for a progress bar).
    pub(crate) fn position(&self) -> u64 {
        self.csv.position().byte()
    }

    /// The number of records, or every problem found.
    pub(crate) fn result(self) -> Result<u64, ImportErrors> {
        if self.errors.is_empty() {
            Ok(self.records)
        } else {
            Err(self.errors)
        }
    }
}

/// The position in the record of each column the mapping reads (indexed like
/// `Mapping::columns`).
pub(crate) fn resolve_columns(
    columns: &[ColumnRef],
    mapping_file: &str,
    file: &str,
    headers: &csv::StringRecord,
    errors: &mut ImportErrors,
) -> Vec<usize> {
    let found = || {
        headers
            .iter()
            .map(|h| format!("{:?}", h.trim()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut cols = Vec::with_capacity(columns.len());
    for c in columns {
        let positions: Vec<usize> = headers
            .iter()
            .enumerate()
            .filter(|(_, h)| h.trim() == c.header)
            .map(|(i, _)| i + 1)
            .collect();
        let named_at = format!("{mapping_file}:{}:{}", c.line, c.column);
        let message = match positions.as_slice() {
            [i] => {
                cols.push(i - 1);
                continue;
            }
            [] if headers.is_empty() => {
                format!(
                    "the file is empty; expected a header line with column {:?} ({named_at}, for {})",
                    c.header, c.field
                )
            }
            [] => format!(
                "no column {:?} in the header (named at {named_at} for {}); the header has {}",
                c.header,
                c.field,
                found()
            ),
            many => format!(
                "column {:?} (named at {named_at} for {}) appears more than once in the header, at columns {}",
                c.header,
                c.field,
                many.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        errors.push(ImportError::Line {
            file: file.to_owned(),
            line: 1,
            message,
        });
    }
    cols
}

pub(crate) fn csv_error(file: &str, e: &csv::Error) -> ImportError {
    let file = file.to_owned();
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            pos,
            expected_len,
            len,
        } => ImportError::Line {
            file,
            line: pos.as_ref().map_or(0, |p| p.line()),
            message: format!("expected {expected_len} cells like the header, found {len}"),
        },
        csv::ErrorKind::Utf8 { pos, err } => ImportError::Line {
            file,
            line: pos.as_ref().map_or(0, |p| p.line()),
            message: format!("cell {} is not valid UTF-8", err.field() + 1),
        },
        _ => ImportError::Read {
            file,
            message: e.to_string(),
        },
    }
}

/// `digits`: the ASCII digits of the cell, read as one number (`C-000123` → 123).
fn synthesize_from_digits(prefix: &str, cell: &str) -> Result<String, String> {
    let digits: String = cell.chars().filter(char::is_ascii_digit).collect();
    if digits.is_empty() {
        return Err(format!(
            "no digits in {cell:?}; `method: digits` numbers subscribers by the digits of this column"
        ));
    }
    let significant = digits.trim_start_matches('0');
    // More than 19 digits cannot fit any prefix's room anyway.
    let n = if significant.is_empty() {
        0
    } else {
        significant.parse::<u64>().unwrap_or(u64::MAX)
    };
    synthesize_numbered(prefix, n)
}

/// A compact key that is different for every stored msisdn: the digits as a number, their
/// count (leading zeros) and whether a `+` leads. 15 digits fit in 50 bits.
fn msisdn_key(m: &Msisdn) -> u64 {
    let text = m.expose();
    let digits = text.strip_prefix('+').unwrap_or(text);
    let value = digits
        .bytes()
        .fold(0u64, |v, b| v * 10 + u64::from(b - b'0'));
    let plus = u64::from(text.starts_with('+')) << 63;
    plus | value << 4 | digits.len() as u64
}

/// The number a [`msisdn_key`] was made from.
fn msisdn_of_key(key: u64) -> Msisdn {
    let len = (key & 0xf) as usize;
    let digits = format!("{:0len$}", (key & !(1 << 63)) >> 4);
    let text = if key >> 63 == 1 {
        format!("+{digits}")
    } else {
        digits
    };
    Msisdn::parse(&text).expect("a key is made from a valid number")
}

/// How the mapping makes numbers: `None` when it reads them from a column.
fn synth_method(src: &MsisdnSrc) -> Option<SynthMethod> {
    match src {
        MsisdnSrc::Column { .. } => None,
        MsisdnSrc::Synthesize { method, .. } => Some(*method),
    }
}

/// The problem of a number also on line `line`; `cell` is what a synthesized one came from.
fn duplicate_message(msisdn: &Msisdn, synth: Option<SynthMethod>, cell: &str, line: u64) -> String {
    // Display masks the number: the message goes to the terminal and logs.
    match synth {
        None => format!("msisdn {msisdn} is also on line {line}"),
        Some(SynthMethod::Hash) => format!(
            "msisdn {msisdn} synthesized from {cell:?} is also synthesized on line {line} (the same id twice, or two ids whose hashes meet: use `method: digits` or `method: row` for numbers that cannot collide)"
        ),
        Some(_) => format!(
            "msisdn {msisdn} synthesized from {cell:?} is also synthesized on line {line} (the same digits twice)"
        ),
    }
}

/// `hash`: the prefix, then a hash of prefix and cell reduced to the remaining digits. Stable
/// across files (the same customer id always gives the same number), but two ids can meet.
fn synthesize_hashed(prefix: &str, key: &str) -> String {
    let digest = Sha256::new()
        .chain_update(prefix.as_bytes())
        .chain_update([0u8])
        .chain_update(key.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let width = 11 - prefix.len();
    // Checked at mapping time: 1 to 10 digits, so 1 ≤ width ≤ 10 and the power fits.
    let modulus = 10u64.pow(width as u32);
    format!("{prefix}{:0width$}", u64::from_be_bytes(first) % modulus)
}

/// `digits` and `row`: the prefix, then `n` padded to the remaining digits. One-to-one, so
/// distinct ids (or rows) always get distinct numbers, up to 10^(11 - prefix length).
fn synthesize_numbered(prefix: &str, n: u64) -> Result<String, String> {
    let width = 11 - prefix.len();
    let room = 10u64.pow(width as u32);
    if n >= room {
        return Err(format!(
            "{n} does not fit in the {width} digits prefix {prefix:?} leaves (at most {}); use a shorter prefix",
            room - 1
        ));
    }
    Ok(format!("{prefix}{n:0width$}"))
}

pub(crate) fn parse_cell(
    cell: &str,
    rule: &Rule,
    scale: Option<f64>,
    round: Option<Round>,
    date_format: Option<&str>,
) -> Result<Value, String> {
    let value = match (round, date_format) {
        (_, Some(format)) => value::parse_date(cell, Some(format))?,
        (None, None) => rule.parse(cell)?,
        (Some(round), None) => rule.parse_rounded(cell, round)?,
    };
    match scale {
        None => rule.check(&value).map(|()| value),
        Some(factor) => {
            let value = value::scaled(value, factor);
            match rule.check(&value) {
                Ok(()) => Ok(value),
                Err(m) => Err(format!("{m} after scaling {cell:?} by {factor}")),
            }
        }
    }
}

pub(crate) struct Row<'a> {
    pub(crate) file: &'a str,
    pub(crate) line: u64,
    /// 1-based number of the record (not the line: a quoted cell may span lines).
    pub(crate) number: u64,
    pub(crate) record: &'a csv::StringRecord,
    pub(crate) headers: &'a csv::StringRecord,
    pub(crate) cols: &'a [usize],
    pub(crate) cells: &'a Cells,
}

impl Row<'_> {
    /// The cell of a mapped column (trimmed unless the mapping says not to; "" for a null
    /// token), and its 0-based position in the record.
    pub(crate) fn cell(&self, col: usize) -> (&str, usize) {
        let i = self.cols[col];
        // flexible(false) guarantees every record is as long as the header.
        let raw = self.record.get(i).unwrap_or("");
        let cell = if self.cells.trim { raw.trim() } else { raw };
        if self.cells.nulls.iter().any(|t| t == cell) {
            return ("", i);
        }
        (cell, i)
    }

    pub(crate) fn error(&self, index: usize, message: String) -> ImportError {
        ImportError::Cell {
            file: self.file.to_owned(),
            line: self.line,
            column: index + 1,
            header: self.headers.get(index).unwrap_or("").trim().to_owned(),
            message,
        }
    }

    /// The value of one attribute for this record; `None` after pushing its problem.
    pub(crate) fn get(&self, src: &Src, errors: &mut ImportErrors) -> Option<Value> {
        let (col, map, scale, round, default, date_format) = match &src.how {
            How::Constant(v) => return Some(v.clone()),
            How::Column {
                col,
                map,
                scale,
                round,
                default,
                date_format,
            } => (*col, map, *scale, *round, default, date_format),
        };
        let (cell, index) = self.cell(col);
        let field = &src.field;
        let result = if cell.is_empty() {
            match default {
                Some(v) => Ok(v.clone()),
                None if !src.required => Ok(Value::Null),
                None => Err(format!(
                    "blank, and the mapping of {field} has no `default` for blank cells"
                )),
            }
        } else if let Some(map) = map {
            map.get(cell).cloned().ok_or_else(|| {
                let mut listed: Vec<_> = map.keys().map(|k| format!("{k:?}")).collect();
                listed.sort();
                // A long code list would bury the cell value; the mapping file has them all.
                if listed.len() > 10 {
                    listed.truncate(10);
                    listed.push("...".to_owned());
                }
                format!(
                    "expected one of {} (the `map` of {field}), found {cell:?}",
                    listed.join(", ")
                )
            })
        } else {
            parse_cell(cell, &src.rule, scale, round, date_format.as_deref())
                .map_err(|m| format!("{m} (for {field})"))
        };
        result.map_err(|m| errors.push(self.error(index, m))).ok()
    }

    /// A core text attribute (external_id, timezone): `Some(None)` when not mapped or empty.
    fn get_text(&self, src: Option<&Src>, errors: &mut ImportErrors) -> Option<Option<String>> {
        match src {
            None => Some(None),
            Some(src) => self.get(src, errors).map(|v| match v {
                Value::Text(t) => Some(t),
                _ => None,
            }),
        }
    }

    /// A core flag (opt_out, do_not_disturb): false when not mapped or empty.
    fn get_flag(&self, src: Option<&Src>, errors: &mut ImportErrors) -> Option<bool> {
        match src {
            None => Some(false),
            Some(src) => self
                .get(src, errors)
                .map(|v| matches!(v, Value::Bool(true))),
        }
    }

    fn msisdn(
        &self,
        src: &MsisdnSrc,
        seen: &mut Seen,
        errors: &mut ImportErrors,
    ) -> Option<String> {
        let (col, synth) = match src {
            MsisdnSrc::Column { col } => (Some(*col), None),
            MsisdnSrc::Synthesize {
                col,
                prefix,
                method,
            } => (*col, Some((prefix.as_str(), *method))),
        };
        let (cell, index) = match col {
            Some(col) => self.cell(col),
            // `row` reads no column; a problem is reported at the first cell.
            None => ("", 0),
        };
        let made = match (synth, cell.is_empty()) {
            (None, true) => Err("blank; every subscriber needs an msisdn".to_owned()),
            (None, false) => Msisdn::parse(cell).map_err(|e| format!("{e} (for msisdn)")),
            (Some((_, SynthMethod::Row)), _) => {
                synthesize_numbered(synth.map_or("", |s| s.0), self.number)
                    .map(|m| Msisdn::parse(&m).expect("prefix and width make a valid number"))
                    .map_err(|m| format!("record {}: {m}", self.number))
            }
            (Some(_), true) => {
                Err("blank; msisdn is synthesized from this column, so it needs a value".to_owned())
            }
            (Some((prefix, SynthMethod::Hash)), false) => {
                Ok(Msisdn::parse(&synthesize_hashed(prefix, cell))
                    .expect("prefix and width make a valid number"))
            }
            (Some((prefix, SynthMethod::Digits)), false) => synthesize_from_digits(prefix, cell)
                .map(|m| Msisdn::parse(&m).expect("prefix and width make a valid number")),
        };
        let msisdn = match made {
            Ok(m) => m,
            Err(m) => {
                errors.push(self.error(index, m));
                return None;
            }
        };
        let key = msisdn_key(&msisdn);
        match seen {
            Seen::Memory(map) => match map.entry(key) {
                Entry::Vacant(v) => {
                    v.insert(self.line);
                }
                Entry::Occupied(o) => {
                    let message = duplicate_message(&msisdn, synth.map(|s| s.1), cell, *o.get());
                    errors.push(self.error(index, message));
                    return None;
                }
            },
            Seen::Chunk(c) => {
                let start = c.cells.len();
                if synth.is_some() {
                    c.cells.push_str(cell);
                }
                c.keys.push((key as i64, self.line));
                c.at.push((index, start..c.cells.len()));
            }
        }
        Some(msisdn.into_exposed())
    }

    /// The subscriber of this record, or `None` after pushing every problem of the record.
    fn subscriber(
        &self,
        mapping: &Mapping,
        seen: &mut Seen,
        errors: &mut ImportErrors,
    ) -> Option<NewSubscriber> {
        let p = &mapping.plan;
        // Every attribute is evaluated before any is unwrapped, so one record reports all its
        // problems, not just the first.
        let msisdn = self.msisdn(&p.msisdn, seen, errors);
        let external_id = self.get_text(p.external_id.as_ref(), errors);
        let timezone = self.get_text(p.timezone.as_ref(), errors);
        let opt_out = self.get_flag(p.opt_out.as_ref(), errors);
        let do_not_disturb = self.get_flag(p.do_not_disturb.as_ref(), errors);
        let mut attrs = Attrs::new(mapping.catalogue.clone());
        let mut complete = true;
        for (i, src) in &p.attrs {
            match self.get(src, errors) {
                Some(v) => attrs.set_at(*i, v),
                None => complete = false,
            }
        }
        let (Some(msisdn), Some(external_id), Some(timezone), Some(opt_out), Some(do_not_disturb)) =
            (msisdn, external_id, timezone, opt_out, do_not_disturb)
        else {
            return None;
        };
        if !complete {
            return None;
        }
        Some(NewSubscriber {
            msisdn,
            external_id,
            timezone,
            opt_out,
            do_not_disturb,
            attrs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_numbers_are_eleven_digits_and_depend_on_prefix_and_key() {
        let a = synthesize_hashed("139", "7590-VHVEG");
        assert_eq!(a.len(), 11);
        assert!(a.starts_with("139"));
        assert!(a.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(a, synthesize_hashed("139", "7590-VHVEG"));
        assert_ne!(a, synthesize_hashed("139", "5575-GNVDE"));
        assert_ne!(a[3..], synthesize_hashed("138", "7590-VHVEG")[3..]);
        let long = synthesize_hashed("1391234567", "x");
        assert_eq!(long.len(), 11);
        assert!(long.starts_with("1391234567"));
    }

    #[test]
    fn numbered_synthesis_is_one_to_one_up_to_its_room() {
        assert_eq!(synthesize_numbered("139", 0).unwrap(), "13900000000");
        assert_eq!(synthesize_numbered("139", 12_345).unwrap(), "13900012345");
        assert_eq!(
            synthesize_numbered("139", 99_999_999).unwrap(),
            "13999999999"
        );
        let e = synthesize_numbered("139", 100_000_000).unwrap_err();
        assert!(
            e.contains("8 digits") && e.contains("shorter prefix"),
            "{e}"
        );
        assert!(synthesize_numbered("1391234567", 10).is_err());
    }

    #[test]
    fn msisdn_keys_differ_wherever_stored_numbers_differ() {
        let keys: Vec<u64> = [
            "13800138000",
            "013800138000",
            "+13800138000",
            "10086",
            "010086",
            "999999999999999",
            "+999999999999999",
        ]
        .iter()
        .map(|m| msisdn_key(&Msisdn::parse(m).unwrap()))
        .collect();
        let unique: std::collections::HashSet<_> = keys.iter().collect();
        assert_eq!(unique.len(), keys.len(), "{keys:?}");
    }
}
