//! The mapping file: its YAML shape (the structs below are its user documentation) and its
//! compilation, against the attribute catalogue, into a checked [`Mapping`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use catalogue::{Attribute, Catalogue, Kind, Value};
use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_saphyr::{Location, MessageFormatter, Spanned};

use super::error::ImportError;
use super::value::{Round, Rule, date_format_works};

/// A mapping file: how to turn each record of a CSV export into a subscriber.
///
/// ```yaml
/// fields:
///   msisdn: { synthesize: { from: customerID, prefix: "139" } }
///   external_id: { column: customerID }
///   gender: { column: gender, map: { Female: female, Male: male } }
///   arpu_3m: { column: MonthlyCharges, scale: 7 }
///   balance: { column: Balance, default: 0 }
///   region: { value: xian }
///   # ... one entry per required attribute
/// ```
///
/// Nothing else is allowed at the top level: a misspelt key is an error, not silently ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MappingFile {
    /// How cells are read before any attribute sees them (optional).
    cells: Option<Spanned<CellOptions>>,
    /// One entry per subscriber attribute (a name of the attribute catalogue,
    /// `workflows/attributes.yaml`, or of its built-in core), saying where its value comes
    /// from.
    fields: Spanned<FieldMappings>,
}

/// How every cell is read.
///
/// ```yaml
/// cells:
///   null_tokens: ["", NA, "?", "-"]   # cells that count as blank (`default`, or empty)
///   trim: true                 # strip surrounding spaces first (the default)
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CellOptions {
    /// Cell values that mean "no value", compared after trimming. Default: only the empty
    /// cell. A blank cell takes the attribute's `default`, is left empty for an optional
    /// attribute, and is an error for a required one.
    null_tokens: Option<Vec<Spanned<String>>>,
    /// Strip spaces around every cell before use (default true). With false, a cell with
    /// surrounding spaces must be listed as such in `map` and `null`.
    trim: Option<bool>,
}

/// Where each subscriber attribute comes from, in file order: attribute name → source.
///
/// Any attribute of the catalogue may be named, core (`msisdn`, `external_id`, `timezone`,
/// `opt_out`, `do_not_disturb`) or declared. Required: `msisdn`, `opt_out`,
/// `do_not_disturb` and every declared attribute with `required: true`. Others may be left
/// out (empty). Derived attributes (`value_tier`, ...) are computed, never imported.
///
/// An `msisdn` is a phone number by the rule of `domain::Msisdn` (an optional `+` and 5 to
/// 15 digits; `+86`/`86` before 11 digits is dropped), unique within the file: either
/// `column:` or, for exports without phone numbers, `synthesize:`. A constant is refused
/// (every row would collide).
#[derive(Debug)]
struct FieldMappings(Vec<(Spanned<String>, Spanned<FieldSource>)>);

impl<'de> Deserialize<'de> for FieldMappings {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = FieldMappings;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map from attribute names to their sources")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FieldMappings, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(FieldMappings(entries))
            }
        }
        d.deserialize_map(Entries)
    }
}

/// How one attribute is filled: exactly one of `column`, `value` or (msisdn only)
/// `synthesize`.
///
/// Values written in the mapping (`value`, `default`, the right-hand side of `map`) are in the
/// attribute's own terms: yuan, months, `female`, `18:00-21:00`, `2026-09-01`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldSource {
    /// The CSV header of the column to read, matched exactly (surrounding spaces ignored).
    /// Cells are trimmed before use.
    column: Option<Spanned<String>>,
    /// With `column`: translates cell values (left) into attribute values (right), e.g.
    /// `{ Female: female, Male: male }`. Every non-blank cell must be listed; an unlisted value
    /// is an error rather than passing through untranslated.
    map: Option<BTreeMap<String, Spanned<String>>>,
    /// With `column`, for decimal attributes (arpu_3m, balance, churn_risk): multiplies the
    /// cell, e.g. `7` to turn dollars into yuan. Not combined with `map`.
    scale: Option<Spanned<f64>>,
    /// With `column`: the value used when a cell is blank (empty, only spaces, or one of the
    /// `cells.null_tokens`). Without it a blank cell is an error for a required attribute
    /// and leaves an optional one empty. Used as written: neither mapped nor scaled.
    default: Option<Spanned<String>>,
    /// With `column`, for integer attributes (age, tenure_months, complaints_30d): what a
    /// fraction such as an averaged `2.5` becomes: `nearest` (halves away from zero),
    /// `floor`, `ceil`, or `refuse` (an error, as without `round`).
    round: Option<Spanned<String>>,
    /// A constant for every row, when the export has nothing for this attribute.
    value: Option<Spanned<String>>,
    /// msisdn only: derives a number from another column.
    synthesize: Option<Spanned<Synthesize>>,
    /// With `column`, for date attributes: the form of the cells, in chrono's strftime
    /// (`"%d/%m/%Y"` for 03/02/2001). Without it cells must be `YYYY-MM-DD`. Values written
    /// in the mapping are always `YYYY-MM-DD`.
    date_format: Option<Spanned<String>>,
}
/// A deterministic 11-digit msisdn: `prefix`, then digits made by `method`:
///
/// - `hash` (the default): a hash of the `from` cell and the prefix. The same id always gives
///   the same number, whatever the file's order, but two ids can meet (birthday odds: about
///   one pair in 20,000 rows with a 3-digit prefix); a meeting is reported with both lines.
/// - `digits`: the digits of the `from` cell read as a number (`C-000123` → 123), padded.
///   One-to-one, so it never collides; for ids that are numbers, up to 10^(11 − prefix
///   length) of them (100 million with "139").
/// - `row`: the record's number in the file (1, 2, ...), padded; no `from`. One-to-one, but
///   a number follows the row, so re-importing a reordered file gives subscribers other
///   numbers (and other consent): for one-off loads of exports without any id.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Synthesize {
    /// The CSV header of the column whose value identifies the subscriber, e.g. a customer id.
    /// Required by `hash` and `digits`; not allowed with `row`.
    from: Option<Spanned<String>>,
    /// hash, digits or row (see above).
    method: Option<Spanned<String>>,
    /// Leading digits, starting with 1, e.g. "139". Quote it so YAML keeps it text. Each extra
    /// digit leaves ten times fewer numbers to hash into, so keep it short (3 digits leave
    /// 100 million).
    prefix: Spanned<String>,
}

/// A checked mapping file, ready for [`read_csv`](super::read_csv).
///
/// The file is YAML with a key `fields` holding one entry per subscriber attribute
/// (attribute names as in the catalogue, `workflows/attributes.yaml`, plus the built-in
/// core), and optionally `cells`. Each entry is one of:
///
/// - `column: <CSV header>`: read that column. Optional with it:
///   - `map: { <cell value>: <attribute value>, ... }` translates cells; every non-blank cell
///     must be listed;
///   - `scale: <number>` multiplies cells of decimal attributes;
///   - `round: nearest | floor | ceil | refuse` for fractions in integer attributes;
///   - `date_format: "%d/%m/%Y"` reads cells of a date attribute in another form;
///   - `default: <attribute value>` is used for blank cells, which are otherwise an error
///     (required attributes) or left empty (optional ones).
/// - `value: <attribute value>`: the same constant for every row.
/// - for `msisdn` only, `synthesize: { from: <CSV header>, prefix: "139" }`: a deterministic
///   11-digit number from a hash of that column, for exports without phone numbers.
///
/// `msisdn`, `opt_out`, `do_not_disturb` and every attribute the catalogue marks
/// `required` must be mapped.
/// Values are checked as the catalogue declares: kind, enum values, `min`/`max`, text
/// `format`.
///
/// ```yaml
/// fields:
///   msisdn: { synthesize: { from: customerID, prefix: "139" } }
///   gender:
///     column: gender
///     map: { Female: female, Male: male }
///   arpu_3m: { column: MonthlyCharges, scale: 7 }
///   region: { value: xian }
/// ```
#[derive(Debug, Clone)]
pub struct Mapping {
    pub(crate) file: String,
    pub(crate) catalogue: Arc<Catalogue>,
    pub(crate) cells: Cells,
    /// Every CSV column the mapping reads; `Src` refers to them by index.
    pub(crate) columns: Vec<ColumnRef>,
    pub(crate) plan: Plan,
}

impl Mapping {
    /// The catalogue the mapping was checked against; the rows it reads follow it.
    pub fn catalogue(&self) -> &Arc<Catalogue> {
        &self.catalogue
    }
}

/// How cells are read (`cells:` in the file).
#[derive(Debug, Clone)]
pub(crate) struct Cells {
    pub(crate) nulls: Vec<String>,
    pub(crate) trim: bool,
}

/// A CSV column named by the mapping, and where the mapping names it (for error messages).
#[derive(Debug, Clone)]
pub(crate) struct ColumnRef {
    pub(crate) header: String,
    pub(crate) field: String,
    pub(crate) line: u64,
    pub(crate) column: u64,
}

/// Where one attribute's value comes from, checked against the attribute's rule.
#[derive(Debug, Clone)]
pub(crate) struct Src {
    pub(crate) field: String,
    /// A blank cell without `default` is an error (else the value is left empty).
    pub(crate) required: bool,
    pub(crate) rule: Rule,
    pub(crate) how: How,
}

#[derive(Debug, Clone)]
pub(crate) enum How {
    Column {
        col: usize,
        map: Option<HashMap<String, Value>>,
        scale: Option<f64>,
        round: Option<Round>,
        default: Option<Value>,
        date_format: Option<String>,
    },
    Constant(Value),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SynthMethod {
    Hash,
    Digits,
    Row,
}

#[derive(Debug, Clone)]
pub(crate) enum MsisdnSrc {
    Column {
        col: usize,
    },
    Synthesize {
        /// None for `row`.
        col: Option<usize>,
        prefix: String,
        method: SynthMethod,
    },
}

/// What the reader does for each record, resolved once: the core attributes by slot, the
/// declared ones by their position in the catalogue's declared attributes.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) msisdn: MsisdnSrc,
    pub(crate) external_id: Option<Src>,
    pub(crate) timezone: Option<Src>,
    pub(crate) opt_out: Option<Src>,
    pub(crate) do_not_disturb: Option<Src>,
    /// (index in `Catalogue::declared`, source) for each mapped declared attribute.
    pub(crate) attrs: Vec<(usize, Src)>,
}

/// Most names an "expected one of" lists before pointing at `campaignd schema`.
const LISTED_NAMES: usize = 40;

/// Parses and checks a mapping file against `catalogue`. `path_for_messages` is only used
/// to prefix errors.
///
/// Errors are `file:line:column: message`: YAML syntax, unknown or duplicate keys, names
/// that are no attribute, values that do not fit their attribute, and required attributes
/// left unmapped.
pub fn parse_mapping(
    catalogue: &Arc<Catalogue>,
    path_for_messages: &str,
    yaml: &str,
) -> Result<Mapping, ImportError> {
    let file = load(path_for_messages, yaml)?;
    let mut cx = Compiler {
        file: path_for_messages,
        columns: Vec::new(),
        trim: true,
    };
    let cells = cx.cells(&file);

    // Entries in file order, so the first problem reported is the first in the file.
    let mut msisdn = None;
    let mut sources: HashMap<&str, Src> = HashMap::new();
    let mut seen = HashSet::new();
    for (name, source) in &file.fields.value.0 {
        let Some(attr) = catalogue.get(&name.value) else {
            if let Some(d) = catalogue.derived(&name.value) {
                return Err(cx.error(
                    name.referenced,
                    format!(
                        "{} is a derived attribute (computed as `{}`), so it is not imported: remove this entry",
                        name.value, d.source
                    ),
                ));
            }
            return Err(cx.error(name.referenced, unknown_attribute(catalogue, &name.value)));
        };
        if !seen.insert(attr.name.as_str()) {
            return Err(cx.error(
                name.referenced,
                format!("{} is mapped twice; keep one entry", attr.name),
            ));
        }
        if attr.name == "msisdn" {
            msisdn = Some(cx.msisdn(source)?);
        } else {
            sources.insert(attr.name.as_str(), cx.source(attr, source)?);
        }
    }

    let missing: Vec<&str> = catalogue
        .all()
        .iter()
        .filter(|a| a.required && !seen.contains(a.name.as_str()))
        .map(|a| a.name.as_str())
        .collect();
    if !missing.is_empty() {
        let s = if missing.len() == 1 { "" } else { "s" };
        return Err(cx.error(
            file.fields.referenced,
            format!(
                "required field{s} not mapped: {}; map each with `column:`, `value:` or, for msisdn, `synthesize:`",
                missing.join(", ")
            ),
        ));
    }
    let msisdn = msisdn.expect("msisdn is required, so mapped");
    let attrs = catalogue
        .declared()
        .enumerate()
        .filter_map(|(i, a)| sources.remove(a.name.as_str()).map(|s| (i, s)))
        .collect();
    let plan = Plan {
        msisdn,
        external_id: sources.remove("external_id"),
        timezone: sources.remove("timezone"),
        opt_out: sources.remove("opt_out"),
        do_not_disturb: sources.remove("do_not_disturb"),
        attrs,
    };
    debug_assert!(sources.is_empty(), "every catalogue attribute has a slot");
    Ok(Mapping {
        file: path_for_messages.to_owned(),
        catalogue: catalogue.clone(),
        cells,
        columns: cx.columns,
        plan,
    })
}

/// Reads a mapping file's YAML, every problem located.
fn load(path_for_messages: &str, yaml: &str) -> Result<MappingFile, ImportError> {
    serde_saphyr::from_str(yaml).map_err(|e| {
        let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
        ImportError::Mapping {
            file: path_for_messages.to_owned(),
            line,
            column,
            // The library's hint names its Rust API, which means nothing to a mapping's author.
            message: serde_saphyr::DefaultMessageFormatter
                .format_message(&e)
                .trim_end_matches(", set DuplicateKeyPolicy in Options if acceptable")
                .to_owned(),
        }
    })
}

/// A mapping file of the same shape (`cells:`, `fields:`) for other records than
/// subscribers (usage history, events), checked against `targets`: the fields such a record
/// has, as attributes (kind, range, required). Returns the cell options, the columns read,
/// each mapped field's source in file order, and where `fields:` is (line, column), for
/// problems of the whole list.
pub(crate) fn parse_fields(
    targets: &[Attribute],
    path_for_messages: &str,
    yaml: &str,
) -> Result<Fields, ImportError> {
    let file = load(path_for_messages, yaml)?;
    let mut cx = Compiler {
        file: path_for_messages,
        columns: Vec::new(),
        trim: true,
    };
    let cells = cx.cells(&file);
    let mut sources: Vec<Src> = Vec::new();
    for (name, source) in &file.fields.value.0 {
        let Some(attr) = targets.iter().find(|a| a.name == name.value) else {
            let names: Vec<&str> = targets.iter().map(|a| a.name.as_str()).collect();
            return Err(cx.error(
                name.referenced,
                format!(
                    "unknown field `{}`, expected one of {}",
                    name.value.escape_debug(),
                    names.join(", ")
                ),
            ));
        };
        if sources.iter().any(|s| s.field == attr.name) {
            return Err(cx.error(
                name.referenced,
                format!("{} is mapped twice; keep one entry", attr.name),
            ));
        }
        sources.push(cx.source(attr, source)?);
    }
    let at = file.fields.referenced;
    Ok(Fields {
        cells,
        columns: cx.columns,
        sources,
        at: (at.line(), at.column()),
    })
}

/// What [`parse_fields`] read.
pub(crate) struct Fields {
    pub(crate) cells: Cells,
    pub(crate) columns: Vec<ColumnRef>,
    pub(crate) sources: Vec<Src>,
    /// Where `fields:` is (line, column).
    pub(crate) at: (u64, u64),
}

/// A column source for a field read as written (no mapping file: header = field name).
pub(crate) fn plain_column(attr: &Attribute, col: usize) -> Src {
    Src {
        field: attr.name.clone(),
        required: attr.required,
        rule: Rule::of(attr),
        how: How::Column {
            col,
            map: None,
            scale: None,
            round: None,
            default: None,
            date_format: None,
        },
    }
}

impl Cells {
    /// Without `cells:`: trimmed, only the empty cell is blank.
    pub(crate) fn plain() -> Cells {
        Cells {
            nulls: vec![String::new()],
            trim: true,
        }
    }
}

/// "unknown attribute", with the closest name and the names there are.
fn unknown_attribute(cat: &Catalogue, name: &str) -> String {
    let names = cat.names();
    let hint = names
        .iter()
        .map(|n| (edit_distance(n, name), *n))
        .filter(|(d, n)| *d <= 2.max(n.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| format!(" (did you mean `{n}`?)"))
        .unwrap_or_default();
    let mut listed = names
        .iter()
        .take(LISTED_NAMES)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > LISTED_NAMES {
        listed.push_str(&format!(
            ", ... ({} in all; `campaignd schema` lists them)",
            names.len()
        ));
    }
    format!(
        "unknown attribute `{}`{hint}, expected one of {listed} (the attribute catalogue, workflows/attributes.yaml)",
        name.escape_debug()
    )
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

struct Compiler<'a> {
    file: &'a str,
    columns: Vec<ColumnRef>,
    /// `cells.trim`: whether `map` keys are trimmed like the cells they are compared with.
    trim: bool,
}

impl Compiler<'_> {
    /// The file's `cells:` options (and `map` keys trimmed as cells are).
    fn cells(&mut self, file: &MappingFile) -> Cells {
        match &file.cells {
            None => Cells::plain(),
            Some(c) => {
                let trim = c.value.trim.unwrap_or(true);
                self.trim = trim;
                let mut nulls = vec![String::new()];
                for t in c.value.null_tokens.iter().flatten() {
                    let token = if trim { t.value.trim() } else { &t.value };
                    if nulls.iter().any(|n| n == token) {
                        continue;
                    }
                    nulls.push(token.to_owned());
                }
                Cells { nulls, trim }
            }
        }
    }

    fn error(&self, at: Location, message: String) -> ImportError {
        ImportError::Mapping {
            file: self.file.to_owned(),
            line: at.line(),
            column: at.column(),
            message,
        }
    }

    fn add_column(&mut self, field: &str, header: &Spanned<String>) -> Result<usize, ImportError> {
        let name = header.value.trim();
        if name.is_empty() {
            return Err(self.error(header.referenced, format!("empty column name for {field}")));
        }
        self.columns.push(ColumnRef {
            header: name.to_owned(),
            field: field.to_owned(),
            line: header.referenced.line(),
            column: header.referenced.column(),
        });
        Ok(self.columns.len() - 1)
    }

    /// The source of an attribute other than msisdn.
    fn source(
        &mut self,
        attr: &Attribute,
        source: &Spanned<FieldSource>,
    ) -> Result<Src, ImportError> {
        let field = attr.name.as_str();
        let rule = Rule::of(attr);
        let at = source.referenced;
        let s = &source.value;
        if let Some(synth) = &s.synthesize {
            return Err(self.error(
                synth.referenced,
                format!("`synthesize` applies only to msisdn, not to {field}"),
            ));
        }
        let constant = |v: &Spanned<String>| -> Result<Value, ImportError> {
            rule.parse(v.value.trim())
                .and_then(|t| rule.check(&t).map(|()| t))
                .map_err(|m| self.error(v.referenced, format!("{m} (for {field})")))
        };
        let how = match (&s.column, &s.value) {
            (Some(_), Some(v)) => {
                return Err(self.error(
                    v.referenced,
                    format!("{field} has both `column` and `value`; keep one"),
                ));
            }
            (None, Some(v)) => {
                for (key, loc) in [
                    ("map", s.map.as_ref().map(|_| at)),
                    ("scale", s.scale.as_ref().map(|x| x.referenced)),
                    ("default", s.default.as_ref().map(|x| x.referenced)),
                    ("round", s.round.as_ref().map(|x| x.referenced)),
                    ("date_format", s.date_format.as_ref().map(|x| x.referenced)),
                ] {
                    if let Some(loc) = loc {
                        return Err(self.error(
                            loc,
                            format!(
                                "`{key}` applies only with `column`, but {field} has a `value`"
                            ),
                        ));
                    }
                }
                How::Constant(constant(v)?)
            }
            (Some(column), None) => {
                let scale = match &s.scale {
                    None => None,
                    Some(sc) => {
                        if !rule.is_decimal() {
                            return Err(self.error(
                                sc.referenced,
                                format!("`scale` applies only to number fields (decimal attributes), not to {field} ({})", attr.kind.name()),
                            ));
                        }
                        if s.map.is_some() {
                            return Err(self.error(
                                sc.referenced,
                                format!("{field} has both `map` and `scale`; mapped values are used as written, so keep one"),
                            ));
                        }
                        if !sc.value.is_finite() || sc.value == 0.0 {
                            return Err(self.error(
                                sc.referenced,
                                format!(
                                    "`scale` must be a finite, non-zero number, found {}",
                                    sc.value
                                ),
                            ));
                        }
                        Some(sc.value)
                    }
                };
                let map = match &s.map {
                    None => None,
                    Some(entries) if entries.is_empty() => {
                        return Err(self.error(at, format!("the `map` of {field} is empty")));
                    }
                    Some(entries) => {
                        let mut map = HashMap::with_capacity(entries.len());
                        for (key, v) in entries {
                            let key = if self.trim { key.trim() } else { key.as_str() };
                            if map.insert(key.to_owned(), constant(v)?).is_some() {
                                return Err(self.error(
                                    v.referenced,
                                    format!("the `map` of {field} lists {key:?} twice (cells are trimmed before lookup)"),
                                ));
                            }
                        }
                        Some(map)
                    }
                };
                let round = match &s.round {
                    None => None,
                    Some(r) => {
                        if !rule.is_whole() {
                            return Err(self.error(
                                r.referenced,
                                format!("`round` applies only to whole-number fields (integer attributes), not to {field} ({})", attr.kind.name()),
                            ));
                        }
                        if map.is_some() {
                            return Err(self.error(
                                r.referenced,
                                format!("{field} has both `map` and `round`; mapped values are used as written, so keep one"),
                            ));
                        }
                        match Round::parse(r.value.trim()) {
                            Some(round) => Some(round),
                            None => {
                                return Err(self.error(
                                    r.referenced,
                                    format!(
                                        "expected `round` to be nearest, floor, ceil or refuse, found {:?}",
                                        r.value
                                    ),
                                ));
                            }
                        }
                    }
                };
                let date_format = match &s.date_format {
                    None => None,
                    Some(f) => {
                        if attr.kind != Kind::Date {
                            return Err(self.error(
                                f.referenced,
                                format!(
                                    "`date_format` applies only to date attributes, not to {field} ({})",
                                    attr.kind.name()
                                ),
                            ));
                        }
                        if map.is_some() {
                            return Err(self.error(
                                f.referenced,
                                format!("{field} has both `map` and `date_format`; mapped values are used as written, so keep one"),
                            ));
                        }
                        if !date_format_works(&f.value) {
                            return Err(self.error(
                                f.referenced,
                                format!(
                                    "`date_format` {:?} cannot read a whole date: expected chrono strftime fields for year, month and day, such as \"%d/%m/%Y\"",
                                    f.value
                                ),
                            ));
                        }
                        Some(f.value.clone())
                    }
                };
                let default = s.default.as_ref().map(constant).transpose()?;
                let col = self.add_column(field, column)?;
                How::Column {
                    col,
                    map,
                    scale,
                    round,
                    default,
                    date_format,
                }
            }
            (None, None) => {
                return Err(self.error(at, format!("{field} needs a `column:` or a `value:`")));
            }
        };
        Ok(Src {
            field: field.to_owned(),
            required: attr.required,
            rule,
            how,
        })
    }

    fn msisdn(&mut self, source: &Spanned<FieldSource>) -> Result<MsisdnSrc, ImportError> {
        let s = &source.value;
        for (key, loc) in [
            ("map", s.map.as_ref().map(|_| source.referenced)),
            ("scale", s.scale.as_ref().map(|x| x.referenced)),
            ("default", s.default.as_ref().map(|x| x.referenced)),
            ("round", s.round.as_ref().map(|x| x.referenced)),
            ("date_format", s.date_format.as_ref().map(|x| x.referenced)),
        ] {
            if let Some(loc) = loc {
                return Err(self.error(
                    loc,
                    format!("`{key}` does not apply to msisdn: numbers are read as they are or synthesized"),
                ));
            }
        }
        if let Some(v) = &s.value {
            return Err(self.error(
                v.referenced,
                "msisdn cannot be a constant `value`: every row would get the same number; use `column:` or `synthesize:`".to_owned(),
            ));
        }
        match (&s.column, &s.synthesize) {
            (Some(column), None) => Ok(MsisdnSrc::Column {
                col: self.add_column("msisdn", column)?,
            }),
            (None, Some(synth)) => {
                let prefix = synth.value.prefix.value.trim();
                let ok = (1..=10).contains(&prefix.len())
                    && prefix.starts_with('1')
                    && prefix.bytes().all(|b| b.is_ascii_digit());
                if !ok {
                    return Err(self.error(
                        synth.value.prefix.referenced,
                        format!("expected a prefix of 1 to 10 digits starting with 1, such as \"139\", found {prefix:?}"),
                    ));
                }
                let method = match &synth.value.method {
                    None => SynthMethod::Hash,
                    Some(m) => {
                        match m.value.trim() {
                            "hash" => SynthMethod::Hash,
                            "digits" => SynthMethod::Digits,
                            "row" => SynthMethod::Row,
                            other => {
                                return Err(self.error(
                                m.referenced,
                                format!("expected `method` to be hash, digits or row, found {other:?}"),
                            ));
                            }
                        }
                    }
                };
                let col = match (&synth.value.from, method) {
                    (Some(from), SynthMethod::Row) => {
                        return Err(self.error(
                            from.referenced,
                            "`method: row` numbers records in file order and reads no column; remove `from`".to_owned(),
                        ));
                    }
                    (None, SynthMethod::Row) => None,
                    (Some(from), _) => Some(self.add_column("msisdn", from)?),
                    (None, _) => {
                        return Err(self.error(
                            synth.referenced,
                            "`synthesize` needs `from: <column>` (or `method: row`)".to_owned(),
                        ));
                    }
                };
                Ok(MsisdnSrc::Synthesize {
                    col,
                    prefix: prefix.to_owned(),
                    method,
                })
            }
            (Some(_), Some(synth)) => Err(self.error(
                synth.referenced,
                "msisdn has both `column` and `synthesize`; keep one".to_owned(),
            )),
            (None, None) => Err(self.error(
                source.referenced,
                "msisdn needs a `column:` or a `synthesize:`".to_owned(),
            )),
        }
    }
}
