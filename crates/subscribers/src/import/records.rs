//! Importing usage history and events from CSV: records about subscribers already in the
//! base, named by msisdn or external id. Read as the subscriber import reads (cell options,
//! rounding, scaling, located errors, all-or-nothing, the same mapping-file shape), through
//! a mapping file or, without one, columns named as the fields.
//!
//! History fields: `msisdn` or `external_id`, `period` (`2026-10` for monthly measures, a
//! date `2026-10-31` for daily ones) and measures of the catalogue, all of one period length.
//! Event fields: `msisdn` or `external_id`, `type`, `time` (RFC 3339), optional `value` and
//! `detail`.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io::Read;

use catalogue::history::Period;
use catalogue::{Attribute, Catalogue, Kind, Value};
use chrono::DateTime;

use super::error::{ImportError, ImportErrors};
use super::mapping::{Cells, ColumnRef, How, Src, parse_fields, plain_column};
use super::{CsvRecords, Row};

/// How the records name their subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Msisdn,
    ExternalId,
}

/// What a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    History,
    Events,
}

/// One record read.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// Measures of one subscriber for one period, following [`RecordReader::measures`].
    History {
        key: String,
        period: i64,
        values: Vec<Value>,
    },
    Event {
        key: String,
        kind: String,
        /// Unix milliseconds.
        at: i64,
        value: Option<f64>,
        detail: Option<String>,
    },
}

impl Record {
    pub fn key(&self) -> &str {
        match self {
            Record::History { key, .. } | Record::Event { key, .. } => key,
        }
    }
}

/// The longest event detail, in characters (as the event log stores).
const MAX_DETAIL: usize = 256;

fn field(name: &str, kind: Kind, required: bool, min: Option<f64>) -> Attribute {
    Attribute {
        name: name.to_owned(),
        kind,
        unit: None,
        description: String::new(),
        indexed: false,
        required,
        core: false,
        min,
        max: None,
        format: None,
        agents: false,
    }
}

/// The fields a record of `kind` has, as attributes: what a mapping may name.
fn targets(cat: &Catalogue, kind: RecordKind) -> Vec<Attribute> {
    let mut out = vec![
        field("msisdn", Kind::Text, true, None),
        field("external_id", Kind::Text, true, None),
    ];
    match kind {
        RecordKind::History => {
            out.push(field("period", Kind::Text, true, None));
            for m in cat.measures() {
                let k = if m.integer {
                    Kind::Integer
                } else {
                    Kind::Decimal
                };
                out.push(field(&m.name, k, false, m.min));
            }
        }
        RecordKind::Events => {
            out.push(field("type", Kind::Text, true, None));
            out.push(field("time", Kind::Timestamp, true, None));
            out.push(field("value", Kind::Decimal, false, None));
            out.push(field("detail", Kind::Text, false, None));
        }
    }
    out
}

/// A checked mapping for history or events: from a mapping file, or from a CSV header.
#[derive(Debug, Clone)]
pub struct RecordMapping {
    file: String,
    kind: RecordKind,
    cells: Cells,
    columns: Vec<ColumnRef>,
    key: Key,
    /// Sources by field name; for history the measures in file order.
    sources: Vec<Src>,
    /// History: the period length of every mapped measure.
    period: Option<Period>,
}

impl RecordMapping {
    /// Parses a mapping file (`cells:`, `fields:`) for records of `kind`.
    pub fn parse(
        cat: &Catalogue,
        kind: RecordKind,
        path_for_messages: &str,
        yaml: &str,
    ) -> Result<RecordMapping, ImportError> {
        let f = parse_fields(&targets(cat, kind), path_for_messages, yaml)?;
        let (line, column) = f.at;
        let at = |message: String| ImportError::Mapping {
            file: path_for_messages.to_owned(),
            line,
            column,
            message,
        };
        RecordMapping::check(cat, kind, path_for_messages, f.cells, f.columns, f.sources)
            .map_err(at)
    }

    /// Without a mapping file: every header that names a field maps it, as written.
    fn from_header(
        cat: &Catalogue,
        kind: RecordKind,
        file: &str,
        headers: &csv::StringRecord,
    ) -> Result<RecordMapping, String> {
        let mut columns = Vec::new();
        let mut sources = Vec::new();
        for t in targets(cat, kind) {
            if headers.iter().any(|h| h.trim() == t.name) {
                columns.push(ColumnRef {
                    header: t.name.clone(),
                    field: t.name.clone(),
                    line: 0,
                    column: 0,
                });
                sources.push(plain_column(&t, columns.len() - 1));
            }
        }
        RecordMapping::check(cat, kind, file, Cells::plain(), columns, sources)
    }

    fn check(
        cat: &Catalogue,
        kind: RecordKind,
        file: &str,
        cells: Cells,
        columns: Vec<ColumnRef>,
        sources: Vec<Src>,
    ) -> Result<RecordMapping, String> {
        let has = |f: &str| sources.iter().any(|s| s.field == f);
        let key = match (has("msisdn"), has("external_id")) {
            (true, false) => Key::Msisdn,
            (false, true) => Key::ExternalId,
            (true, true) => {
                return Err(
                    "both msisdn and external_id are mapped; name subscribers by one".to_owned(),
                );
            }
            (false, false) => {
                return Err("no subscriber column: map `msisdn` or `external_id`".to_owned());
            }
        };
        let required: &[&str] = match kind {
            RecordKind::History => &["period"],
            RecordKind::Events => &["type", "time"],
        };
        let missing: Vec<&str> = required.iter().copied().filter(|f| !has(f)).collect();
        if !missing.is_empty() {
            return Err(format!(
                "required field(s) not mapped: {}",
                missing.join(", ")
            ));
        }
        let mut period = None;
        if kind == RecordKind::History {
            let mut lengths: Vec<(Period, &str)> = sources
                .iter()
                .filter_map(|s| cat.measure(&s.field).map(|m| (m.period, s.field.as_str())))
                .collect();
            let Some(&(first, _)) = lengths.first() else {
                let names: Vec<&str> = cat.measures().iter().map(|m| m.name.as_str()).collect();
                return Err(format!(
                    "no measure mapped: expected columns among {}",
                    names.join(", ")
                ));
            };
            lengths.retain(|(p, _)| *p != first);
            if let Some((p, name)) = lengths.first() {
                return Err(format!(
                    "measures of one period length per file: {name} is per {p}, the others per {first}"
                ));
            }
            period = Some(first);
        }
        Ok(RecordMapping {
            file: file.to_owned(),
            kind,
            cells,
            columns,
            key,
            sources,
            period,
        })
    }

    pub fn key(&self) -> Key {
        self.key
    }

    /// History: the period length of the file's measures.
    pub fn period(&self) -> Option<Period> {
        self.period
    }

    /// History: the measures each record carries, in order.
    pub fn measures(&self) -> Vec<&str> {
        self.sources
            .iter()
            .filter(|s| !matches!(s.field.as_str(), "msisdn" | "external_id" | "period"))
            .map(|s| s.field.as_str())
            .collect()
    }

    fn src(&self, name: &str) -> Option<&Src> {
        self.sources.iter().find(|s| s.field == name)
    }
}

/// A history or events CSV being read record by record; all-or-nothing as
/// [`super::CsvImport`]: after the first problem no more records are handed out, and the rest
/// of the file is read to report every problem.
pub struct RecordReader<R: Read> {
    mapping: RecordMapping,
    csv: CsvRecords<R>,
    seen: Seen,
}

/// The history records' (subscriber, period) pairs read so far, to find repeats.
enum Seen {
    /// (key, period) -> the line it was on.
    Memory(HashMap<(String, i64), u64>),
    /// The pairs of the chunk last read, for the caller to look up (see
    /// [`RecordReader::streaming`]).
    Chunk(ChunkPairs),
}

/// The pairs of one chunk, and where each repeat's problem is reported.
#[derive(Default)]
struct ChunkPairs {
    /// (subscriber key as stored, period, line), in file order.
    pairs: Vec<(String, i64, u64)>,
    /// Per pair: the 0-based cell of the subscriber key.
    at: Vec<usize>,
}

impl<R: Read> RecordReader<R> {
    /// Reads the header; without `mapping`, maps the columns named as fields. Repeats of a
    /// history file's (subscriber, period) are found in memory (a key and a map entry per
    /// record): for files that fit, and for tests.
    pub fn open(
        cat: &Catalogue,
        kind: RecordKind,
        mapping: Option<RecordMapping>,
        path_for_messages: &str,
        reader: R,
    ) -> Result<Self, ImportErrors> {
        Self::open_with(
            cat,
            kind,
            mapping,
            path_for_messages,
            reader,
            Seen::Memory(HashMap::new()),
        )
    }

    /// As [`RecordReader::open`], but keeping no pair beyond the chunk being read, so memory
    /// does not grow with the file: after each [`RecordReader::read_chunk`], the caller looks
    /// up the chunk's [`RecordReader::pairs`] among those of earlier chunks (and adds them),
    /// then reports what it found with [`RecordReader::repeats`] before asking
    /// [`RecordReader::failed`]. Records that [`RecordReader::finish`] itself reads are
    /// checked only against each other.
    pub fn streaming(
        cat: &Catalogue,
        kind: RecordKind,
        mapping: Option<RecordMapping>,
        path_for_messages: &str,
        reader: R,
    ) -> Result<Self, ImportErrors> {
        Self::open_with(
            cat,
            kind,
            mapping,
            path_for_messages,
            reader,
            Seen::Chunk(ChunkPairs::default()),
        )
    }

    fn open_with(
        cat: &Catalogue,
        kind: RecordKind,
        mapping: Option<RecordMapping>,
        path_for_messages: &str,
        reader: R,
        seen: Seen,
    ) -> Result<Self, ImportErrors> {
        let file = path_for_messages;
        let (csv, headers) = CsvRecords::header(file, reader)?;
        let mapping = match mapping {
            Some(m) => m,
            None => RecordMapping::from_header(cat, kind, file, &headers).map_err(|message| {
                ImportErrors::from(ImportError::Line {
                    file: file.to_owned(),
                    line: 1,
                    message: format!(
                        "{message} (no mapping file: columns are named as the fields)"
                    ),
                })
            })?,
        };
        let csv = CsvRecords::new(file, csv, headers, &mapping.columns, &mapping.file)?;
        Ok(RecordReader { mapping, csv, seen })
    }

    pub fn mapping(&self) -> &RecordMapping {
        &self.mapping
    }

    /// Appends up to `max` further records to `out`; false once the file is read to its end.
    pub fn read_chunk(&mut self, out: &mut Vec<Record>, max: usize) -> bool {
        if let Seen::Chunk(c) = &mut self.seen {
            c.pairs.clear();
            c.at.clear();
        }
        let (mapping, seen) = (&self.mapping, &mut self.seen);
        self.csv
            .read_chunk(out, max, &mapping.cells, |row, errors| {
                read_one(row, mapping, seen, errors)
            })
    }

    /// History, streaming only (empty otherwise): the (subscriber key, period, line) of each
    /// record of the chunk last read, in file order.
    pub fn pairs(&self) -> &[(String, i64, u64)] {
        match &self.seen {
            Seen::Chunk(c) => &c.pairs,
            Seen::Memory(_) => &[],
        }
    }

    /// Reports the chunk's repeats: `earlier` holds, for each of [`RecordReader::pairs`] in
    /// order, the line of an earlier record with the same subscriber and period, if any.
    /// Each is reported among the file's other problems in line order.
    pub fn repeats(&mut self, earlier: &[Option<u64>]) {
        let Seen::Chunk(c) = &self.seen else {
            return;
        };
        let Some(length) = self.mapping.period else {
            return;
        };
        for (((key, period, line), &index), earlier) in c.pairs.iter().zip(&c.at).zip(earlier) {
            let Some(earlier) = earlier else {
                continue;
            };
            let error = ImportError::Cell {
                file: self.csv.file.clone(),
                line: *line,
                column: index + 1,
                header: self.csv.headers.get(index).unwrap_or("").trim().to_owned(),
                message: repeat_message(&self.mapping, key, length, *period, *earlier),
            };
            self.csv.errors.insert_in_line_order(error);
        }
    }

    pub fn failed(&self) -> bool {
        self.csv.failed()
    }

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
            // Nobody looks up pairs read from here on: check them against each other.
            self.seen = Seen::Memory(HashMap::new());
        }
        let (mapping, seen) = (&self.mapping, &mut self.seen);
        self.csv.read_rest(&mapping.cells, |row, errors| {
            read_one(row, mapping, seen, errors)
        });
        self.csv.result()
    }
}

/// One record as its kind says; `None` after pushing its problems.
fn read_one(
    row: &Row<'_>,
    mapping: &RecordMapping,
    seen: &mut Seen,
    errors: &mut ImportErrors,
) -> Option<Record> {
    match mapping.kind {
        RecordKind::History => history(row, mapping, seen, errors),
        RecordKind::Events => event(row, mapping, errors),
    }
}

/// The text of a required text field (never blank: `get` refuses a blank required cell).
fn text(row: &Row<'_>, src: Option<&Src>, errors: &mut ImportErrors) -> Option<String> {
    match row.get(src?, errors)? {
        Value::Text(t) => Some(t),
        _ => None,
    }
}

/// The 0-based record position of a mapped column (for locating a problem found after
/// parsing); the first cell for a constant.
fn index_of(row: &Row<'_>, src: &Src) -> usize {
    match src.how {
        How::Column { col, .. } => row.cols[col],
        How::Constant(_) => 0,
    }
}

fn key_src(m: &RecordMapping) -> Option<&Src> {
    m.src(match m.key {
        Key::Msisdn => "msisdn",
        Key::ExternalId => "external_id",
    })
}

/// The stored form of a subscriber key: msisdns normalised as the base stores them.
fn key_of(row: &Row<'_>, m: &RecordMapping, errors: &mut ImportErrors) -> Option<String> {
    let src = key_src(m)?;
    let raw = text(row, Some(src), errors)?;
    match m.key {
        Key::ExternalId => Some(raw),
        Key::Msisdn => match domain::Msisdn::parse(&raw) {
            Ok(n) => Some(n.into_exposed()),
            Err(e) => {
                errors.push(row.error(index_of(row, src), format!("{e} (for msisdn)")));
                None
            }
        },
    }
}

fn history(
    row: &Row<'_>,
    m: &RecordMapping,
    seen: &mut Seen,
    errors: &mut ImportErrors,
) -> Option<Record> {
    let key = key_of(row, m, errors);
    let length = m.period.expect("history mappings have a period length");
    let period_src = m.src("period")?;
    let period = text(row, Some(period_src), errors).and_then(|t| {
        let p = length.parse_label(&t);
        if p.is_none() {
            let expected = match length {
                Period::Month => "a month YYYY-MM such as 2026-10 (or a date in it)",
                Period::Day => "a date YYYY-MM-DD such as 2026-10-31",
            };
            errors.push(row.error(
                index_of(row, period_src),
                format!("expected {expected}, found {t:?} (for period)"),
            ));
        }
        p
    });
    let mut values = Vec::new();
    let mut complete = true;
    for name in m.measures() {
        match m.src(name).and_then(|s| row.get(s, errors)) {
            Some(v) => values.push(v),
            None => complete = false,
        }
    }
    let (key, period) = (key?, period?);
    if !complete {
        return None;
    }
    match seen {
        Seen::Memory(map) => match map.entry((key.clone(), period)) {
            Entry::Vacant(v) => {
                v.insert(row.line);
            }
            Entry::Occupied(o) => {
                let src = key_src(m)?;
                let message = repeat_message(m, &key, length, period, *o.get());
                errors.push(row.error(index_of(row, src), message));
                return None;
            }
        },
        Seen::Chunk(c) => {
            let at = index_of(row, key_src(m)?);
            c.pairs.push((key.clone(), period, row.line));
            c.at.push(at);
        }
    }
    Some(Record::History {
        key,
        period,
        values,
    })
}

/// The problem of a (subscriber, period) also on line `earlier`.
fn repeat_message(
    m: &RecordMapping,
    key: &str,
    length: Period,
    period: i64,
    earlier: u64,
) -> String {
    let who = match m.key {
        Key::Msisdn => domain::mask(key),
        Key::ExternalId => key.to_owned(),
    };
    format!(
        "subscriber {who} has period {} on line {earlier} too; keep one row per subscriber and period",
        length.label(period)
    )
}

fn event(row: &Row<'_>, m: &RecordMapping, errors: &mut ImportErrors) -> Option<Record> {
    let key = key_of(row, m, errors);
    let kind_src = m.src("type")?;
    let kind = text(row, Some(kind_src), errors).and_then(|k| {
        let why = match domain::event_type_problem(&k) {
            None => return Some(k),
            Some(domain::EventTypeProblem::Shape) => format!(
                "expected 1 to {} of a-z, A-Z, 0-9, _ - .",
                domain::MAX_EVENT_TYPE_LEN
            ),
            Some(domain::EventTypeProblem::Reserved) => format!(
                "{} are reserved for responses campaignd records itself",
                domain::RESERVED_EVENT_TYPES.join(" and ")
            ),
        };
        errors.push(row.error(
            index_of(row, kind_src),
            format!("{why}, found {k:?} (for type)"),
        ));
        None
    });
    let at = text(row, m.src("time"), errors).and_then(|t| {
        // `get` has checked RFC 3339 and stored it in UTC.
        DateTime::parse_from_rfc3339(&t)
            .ok()
            .map(|d| d.timestamp_millis())
    });
    let value = match m.src("value") {
        None => Some(None),
        Some(s) => row.get(s, errors).map(|v| match v {
            Value::Dec(d) => Some(d),
            Value::Int(i) => Some(i as f64),
            _ => None,
        }),
    };
    let detail = match m.src("detail") {
        None => Some(None),
        Some(s) => row.get(s, errors).and_then(|v| match v {
            Value::Text(t) if t.chars().count() > MAX_DETAIL => {
                errors.push(row.error(
                    index_of(row, s),
                    format!("longer than {MAX_DETAIL} characters (for detail)"),
                ));
                None
            }
            Value::Text(t) => Some(Some(t)),
            _ => Some(None),
        }),
    };
    Some(Record::Event {
        key: key?,
        kind: kind?,
        at: at?,
        value: value?,
        detail: detail?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(kind: RecordKind, mapping: Option<&str>, csv: &str) -> Result<Vec<Record>, String> {
        let cat = catalogue::shipped();
        let mapping = mapping
            .map(|m| RecordMapping::parse(&cat, kind, "m.yaml", m))
            .transpose()
            .map_err(|e| e.to_string())?;
        let mut r = RecordReader::open(&cat, kind, mapping, "f.csv", csv.as_bytes())
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        while r.read_chunk(&mut out, 2) {}
        r.finish().map_err(|e| e.to_string())?;
        Ok(out)
    }

    const OCT: i64 = 2026 * 12 + 9;

    #[test]
    fn history_by_header_reads_periods_and_measures() {
        let rows = read(
            RecordKind::History,
            None,
            "msisdn,period,arpu,voice_minutes,ignored\n+8613900000001,2026-10,55.5,120,x\n13900000002,2026-10-31,,0,y\n",
        )
        .unwrap();
        assert_eq!(
            rows,
            [
                Record::History {
                    key: "13900000001".into(),
                    period: OCT,
                    values: vec![Value::Dec(55.5), Value::Int(120)],
                },
                Record::History {
                    key: "13900000002".into(),
                    period: OCT,
                    values: vec![Value::Null, Value::Int(0)],
                },
            ]
        );
    }

    #[test]
    fn history_problems_are_located() {
        let e = read(
            RecordKind::History,
            None,
            "msisdn,period,arpu,voice_minutes\n13900000001,2026-13,1,1\n13900000001,2026-10,-1,2.5\n13900000001,2026-11,1,1\n13900000001,2026-11,2,2\n",
        )
        .unwrap_err();
        assert!(
            e.contains("f.csv:2:2 (period): expected a month YYYY-MM"),
            "{e}"
        );
        assert!(e.contains("f.csv:3:3 (arpu): expected a number"), "{e}");
        assert!(
            e.contains("f.csv:3:4 (voice_minutes): expected a whole number"),
            "{e}"
        );
        assert!(
            e.contains(
                "f.csv:5:1 (msisdn): subscriber 139****0001 has period 2026-11 on line 4 too"
            ),
            "{e}"
        );
        assert!(!e.contains("13900000001"), "numbers are masked: {e}");
    }

    #[test]
    fn history_mappings_round_scale_and_are_checked() {
        let m = "cells: { null_tokens: [NA] }\nfields:\n  external_id: { column: CUST }\n  period: { column: MONTH }\n  voice_minutes: { column: MOU, round: nearest }\n  arpu: { column: REV_FEN, scale: 0.01 }\n";
        let rows = read(
            RecordKind::History,
            Some(m),
            "CUST,MONTH,MOU,REV_FEN\nC-1,2026-10,12.5,5550\nC-2,2026-10,NA,NA\n",
        )
        .unwrap();
        assert_eq!(
            rows[0],
            Record::History {
                key: "C-1".into(),
                period: OCT,
                values: vec![Value::Int(13), Value::Dec(55.5)],
            }
        );
        assert_eq!(
            rows[1],
            Record::History {
                key: "C-2".into(),
                period: OCT,
                values: vec![Value::Null, Value::Null],
            }
        );
        let e = read(
            RecordKind::History,
            Some("fields:\n  msisdn: { column: A }\n  period: { column: B }\n  arpoo: { column: C }\n"),
            "A,B,C\n",
        )
        .unwrap_err();
        assert!(e.starts_with("m.yaml:4:3: unknown field `arpoo`"), "{e}");
        let e = read(
            RecordKind::History,
            Some("fields:\n  msisdn: { column: A }\n  period: { column: B }\n  arpu: { column: C }\n  daily_data_mb: { column: D }\n"),
            "A,B,C,D\n",
        )
        .unwrap_err();
        assert!(
            e.starts_with("m.yaml:2:3: measures of one period length per file"),
            "{e}"
        );
        let e = read(RecordKind::History, None, "msisdn,arpu\n").unwrap_err();
        assert!(
            e.contains("f.csv:1: required field(s) not mapped: period"),
            "{e}"
        );
    }

    #[test]
    fn daily_history_needs_dates() {
        let e = read(
            RecordKind::History,
            None,
            "msisdn,period,daily_data_mb\n13900000001,2026-10,1\n",
        )
        .unwrap_err();
        assert!(
            e.contains("f.csv:2:2 (period): expected a date YYYY-MM-DD"),
            "{e}"
        );
    }

    #[test]
    fn events_are_read_and_checked() {
        let rows = read(
            RecordKind::Events,
            None,
            "msisdn,type,time,value,detail\n13900000001,topup,2026-10-01T08:00:00+08:00,50,app\n13900000002,order,2026-10-01T00:00:00Z,,\n",
        )
        .unwrap();
        assert_eq!(
            rows[0],
            Record::Event {
                key: "13900000001".into(),
                kind: "topup".into(),
                at: 1_790_812_800_000,
                value: Some(50.0),
                detail: Some("app".into()),
            }
        );
        assert_eq!(
            rows[1],
            Record::Event {
                key: "13900000002".into(),
                kind: "order".into(),
                at: 1_790_812_800_000,
                value: None,
                detail: None,
            }
        );
        let e = read(
            RecordKind::Events,
            None,
            "msisdn,type,time\n13900000001,reply,2026-10-01T00:00:00Z\n13900000001,top up,2026-10-01\n12,order,2026-10-01T00:00:00Z\n",
        )
        .unwrap_err();
        assert!(
            e.contains("f.csv:2:2 (type): reply and outcome are reserved"),
            "{e}"
        );
        assert!(e.contains("f.csv:3:2 (type): expected 1 to 64 of"), "{e}");
        assert!(e.contains("f.csv:3:3 (time): expected a timestamp"), "{e}");
        assert!(e.contains("f.csv:4:1 (msisdn):"), "{e}");
    }
}
