//! The mapping file: its YAML shape (the structs below are its user documentation) and its
//! compilation into a checked [`Mapping`].

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use serde_saphyr::{Location, MessageFormatter, Spanned};
use spec::fields::FieldType;

use super::error::ImportError;
use super::value::{FieldValue, Range, Round, TextRule};

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
///   # ... one entry per required field
/// ```
///
/// Nothing else is allowed at the top level: a misspelt key is an error, not silently ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MappingFile {
    /// How cells are read before any field sees them (optional).
    cells: Option<Spanned<CellOptions>>,
    /// One entry per subscriber field (the names of `spec::fields`), saying where its value
    /// comes from.
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
    /// cell. A blank cell takes the field's `default`, is left empty for an optional field,
    /// and is an error otherwise.
    null_tokens: Option<Vec<Spanned<String>>>,
    /// Strip spaces around every cell before use (default true). With false, a cell with
    /// surrounding spaces must be listed as such in `map` and `null`.
    trim: Option<bool>,
}

/// Where each subscriber field comes from. Field meanings are those of `spec::fields`.
///
/// Required: every field not listed as optional or derived below. Optional (left empty when
/// absent): `external_id`, `campus`, `timezone` (empty means the campaign's zone).
/// Derived: `value_tier` is computed from `arpu_3m` with the DOMAIN.md thresholds (diamond
/// > 500, gold 200-500, silver 120-200, ordinary below) unless mapped explicitly.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldMappings {
    /// A phone number by the rule of `domain::Msisdn` (an optional `+` and 5 to 15 digits;
    /// `+86`/`86` before 11 digits is dropped), unique within the file. Either `column:` or, for exports
    /// without phone numbers, `synthesize:`. A constant is refused (every row would collide).
    msisdn: Option<Spanned<FieldSource>>,
    external_id: Option<Spanned<FieldSource>>,
    name: Option<Spanned<FieldSource>>,
    /// female, male or unknown.
    gender: Option<Spanned<FieldSource>>,
    /// Whole years, 0 to 130.
    age: Option<Spanned<FieldSource>>,
    region: Option<Spanned<FieldSource>>,
    /// gotone, mzone or easyown.
    brand: Option<Spanned<FieldSource>>,
    /// diamond, gold, silver or ordinary; derived from `arpu_3m` when absent.
    value_tier: Option<Spanned<FieldSource>>,
    /// Yuan per month; may be scaled from another currency or unit.
    arpu_3m: Option<Spanned<FieldSource>>,
    /// Yuan; negative means arrears.
    balance: Option<Spanned<FieldSource>>,
    /// Whole months, 0 or more.
    tenure_months: Option<Spanned<FieldSource>>,
    /// none, freshman, student or graduate.
    student_stage: Option<Spanned<FieldSource>>,
    campus: Option<Spanned<FieldSource>>,
    /// sms, outbound_call, service or email.
    first_channel: Option<Spanned<FieldSource>>,
    /// HH:MM-HH:MM, e.g. 18:00-21:00.
    first_channel_slot: Option<Spanned<FieldSource>>,
    /// sms, outbound_call, service or email.
    second_channel: Option<Spanned<FieldSource>>,
    /// HH:MM-HH:MM.
    second_channel_slot: Option<Spanned<FieldSource>>,
    /// Whole number, 0 or more.
    complaints_30d: Option<Spanned<FieldSource>>,
    /// true/false (cells may also say yes/no or 1/0).
    do_not_disturb: Option<Spanned<FieldSource>>,
    /// 0 (loyal) to 1 (leaving).
    churn_risk: Option<Spanned<FieldSource>>,
    timezone: Option<Spanned<FieldSource>>,
    /// true/false (cells may also say yes/no or 1/0).
    opt_out: Option<Spanned<FieldSource>>,
}

/// How one field is filled: exactly one of `column`, `value` or (msisdn only) `synthesize`.
///
/// Values written in the mapping (`value`, `default`, the right-hand side of `map`) are in the
/// field's own terms: yuan, months, `female`, `18:00-21:00`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldSource {
    /// The CSV header of the column to read, matched exactly (surrounding spaces ignored).
    /// Cells are trimmed before use.
    column: Option<Spanned<String>>,
    /// With `column`: translates cell values (left) into field values (right), e.g.
    /// `{ Female: female, Male: male }`. Every non-blank cell must be listed; an unlisted value
    /// is an error rather than passing through untranslated.
    map: Option<BTreeMap<String, Spanned<String>>>,
    /// With `column`, for number fields (arpu_3m, balance, churn_risk): multiplies the cell,
    /// e.g. `7` to turn dollars into yuan. Not combined with `map`.
    scale: Option<Spanned<f64>>,
    /// With `column`: the value used when a cell is blank (empty, only spaces, or one of the
    /// `cells.null_tokens`). Without it a blank cell is an error. Used as written: neither
    /// mapped nor scaled.
    default: Option<Spanned<String>>,
    /// With `column`, for whole-number fields (age, tenure_months, complaints_30d): what a
    /// fraction such as an averaged `2.5` becomes: `nearest` (halves away from zero),
    /// `floor`, `ceil`, or `refuse` (an error, as without `round`).
    round: Option<Spanned<String>>,
    /// A constant for every row, when the export has nothing for this field.
    value: Option<Spanned<String>>,
    /// msisdn only: derives a number from another column.
    synthesize: Option<Spanned<Synthesize>>,
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
/// The file is YAML with a single key, `fields`, holding one entry per subscriber field
/// (field names as in `spec::fields`). Each entry is one of:
///
/// - `column: <CSV header>`: read that column. Optional with it:
///   - `map: { <cell value>: <field value>, ... }` translates cells; every non-blank cell must
///     be listed;
///   - `scale: <number>` multiplies number cells (arpu_3m, balance, churn_risk);
///   - `default: <field value>` is used for blank cells, which are otherwise an error.
/// - `value: <field value>`: the same constant for every row.
/// - for `msisdn` only, `synthesize: { from: <CSV header>, prefix: "139" }`: a deterministic
///   11-digit number from a hash of that column, for exports without phone numbers.
///
/// `external_id`, `campus` and `timezone` may be left out (empty); `value_tier` is computed
/// from `arpu_3m` unless given; every other field is required. Enumerated fields accept only
/// the values `spec::fields` lists.
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
    pub(crate) cells: Cells,
    /// Every CSV column the mapping reads; `Src` refers to them by index.
    pub(crate) columns: Vec<ColumnRef>,
    pub(crate) plan: Plan,
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
    pub(crate) field: &'static str,
    pub(crate) line: u64,
    pub(crate) column: u64,
}

/// Where one field's value comes from, checked against the field's rule.
#[derive(Debug, Clone)]
pub(crate) struct Src<T: FieldValue> {
    pub(crate) field: &'static str,
    pub(crate) rule: T::Rule,
    pub(crate) how: How<T>,
}

#[derive(Debug, Clone)]
pub(crate) enum How<T> {
    Column {
        col: usize,
        map: Option<HashMap<String, T>>,
        scale: Option<f64>,
        round: Option<Round>,
        default: Option<T>,
    },
    Constant(T),
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

#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) msisdn: MsisdnSrc,
    pub(crate) external_id: Option<Src<String>>,
    pub(crate) name: Src<String>,
    pub(crate) gender: Src<String>,
    pub(crate) age: Src<i32>,
    pub(crate) region: Src<String>,
    pub(crate) brand: Src<String>,
    pub(crate) value_tier: Option<Src<String>>,
    pub(crate) arpu_3m: Src<f64>,
    pub(crate) balance: Src<f64>,
    pub(crate) tenure_months: Src<i32>,
    pub(crate) student_stage: Src<String>,
    pub(crate) campus: Option<Src<String>>,
    pub(crate) first_channel: Src<String>,
    pub(crate) first_channel_slot: Src<String>,
    pub(crate) second_channel: Src<String>,
    pub(crate) second_channel_slot: Src<String>,
    pub(crate) complaints_30d: Src<i32>,
    pub(crate) do_not_disturb: Src<bool>,
    pub(crate) churn_risk: Src<f64>,
    pub(crate) timezone: Option<Src<String>>,
    pub(crate) opt_out: Src<bool>,
}

const ANY_AMOUNT: Range<f64> = Range {
    min: f64::MIN,
    max: f64::MAX,
};
const COUNT: Range<i32> = Range {
    min: 0,
    max: i32::MAX,
};

/// Parses and checks a mapping file. `path_for_messages` is only used to prefix errors.
///
/// Errors are `file:line:column: message`: YAML syntax, unknown or duplicate keys, values that
/// do not fit their field, and required fields left unmapped.
pub fn parse_mapping(path_for_messages: &str, yaml: &str) -> Result<Mapping, ImportError> {
    let file: MappingFile = serde_saphyr::from_str(yaml).map_err(|e| {
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
    })?;
    let mut cx = Compiler {
        file: path_for_messages,
        columns: Vec::new(),
        missing: Vec::new(),
        trim: true,
    };
    let cells = match &file.cells {
        None => Cells {
            nulls: vec![String::new()],
            trim: true,
        },
        Some(c) => {
            let trim = c.value.trim.unwrap_or(true);
            cx.trim = trim;
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
    };
    let f = &file.fields.value;
    let plan = Plan {
        msisdn: cx.msisdn(f.msisdn.as_ref())?,
        external_id: cx.optional("external_id", TextRule::Free, f.external_id.as_ref())?,
        name: cx.required("name", TextRule::Free, f.name.as_ref())?,
        gender: cx.required("gender", text_rule("gender"), f.gender.as_ref())?,
        age: cx.required("age", Range { min: 0, max: 130 }, f.age.as_ref())?,
        region: cx.required("region", TextRule::Free, f.region.as_ref())?,
        brand: cx.required("brand", text_rule("brand"), f.brand.as_ref())?,
        value_tier: cx.optional("value_tier", text_rule("value_tier"), f.value_tier.as_ref())?,
        arpu_3m: cx.required("arpu_3m", ANY_AMOUNT, f.arpu_3m.as_ref())?,
        balance: cx.required("balance", ANY_AMOUNT, f.balance.as_ref())?,
        tenure_months: cx.required("tenure_months", COUNT, f.tenure_months.as_ref())?,
        student_stage: cx.required(
            "student_stage",
            text_rule("student_stage"),
            f.student_stage.as_ref(),
        )?,
        campus: cx.optional("campus", TextRule::Free, f.campus.as_ref())?,
        first_channel: cx.required(
            "first_channel",
            text_rule("first_channel"),
            f.first_channel.as_ref(),
        )?,
        first_channel_slot: cx.required(
            "first_channel_slot",
            TextRule::Slot,
            f.first_channel_slot.as_ref(),
        )?,
        second_channel: cx.required(
            "second_channel",
            text_rule("second_channel"),
            f.second_channel.as_ref(),
        )?,
        second_channel_slot: cx.required(
            "second_channel_slot",
            TextRule::Slot,
            f.second_channel_slot.as_ref(),
        )?,
        complaints_30d: cx.required("complaints_30d", COUNT, f.complaints_30d.as_ref())?,
        do_not_disturb: cx.required("do_not_disturb", (), f.do_not_disturb.as_ref())?,
        churn_risk: cx.required(
            "churn_risk",
            Range { min: 0.0, max: 1.0 },
            f.churn_risk.as_ref(),
        )?,
        timezone: cx.optional("timezone", TextRule::Free, f.timezone.as_ref())?,
        opt_out: cx.required("opt_out", (), f.opt_out.as_ref())?,
    };
    if !cx.missing.is_empty() {
        let s = if cx.missing.len() == 1 { "" } else { "s" };
        return Err(cx.error(
            file.fields.referenced,
            format!(
                "required field{s} not mapped: {}; map each with `column:`, `value:` or, for msisdn, `synthesize:`",
                cx.missing.join(", ")
            ),
        ));
    }
    Ok(Mapping {
        file: path_for_messages.to_owned(),
        cells,
        columns: cx.columns,
        plan,
    })
}

/// The enumerated values of a text field, straight from the catalogue so that the import
/// accepts exactly what workflow filters can name.
fn text_rule(field: &str) -> TextRule {
    match spec::fields::field(field) {
        Some(f) if !f.values.is_empty() => TextRule::OneOf(f.values),
        _ => TextRule::Free,
    }
}

struct Compiler<'a> {
    file: &'a str,
    columns: Vec<ColumnRef>,
    /// Required fields found unmapped; reported together once every entry has been checked.
    missing: Vec<&'static str>,
    /// `cells.trim`: whether `map` keys are trimmed like the cells they are compared with.
    trim: bool,
}

impl Compiler<'_> {
    fn error(&self, at: Location, message: String) -> ImportError {
        ImportError::Mapping {
            file: self.file.to_owned(),
            line: at.line(),
            column: at.column(),
            message,
        }
    }

    fn add_column(
        &mut self,
        field: &'static str,
        header: &Spanned<String>,
    ) -> Result<usize, ImportError> {
        let name = header.value.trim();
        if name.is_empty() {
            return Err(self.error(header.referenced, format!("empty column name for {field}")));
        }
        self.columns.push(ColumnRef {
            header: name.to_owned(),
            field,
            line: header.referenced.line(),
            column: header.referenced.column(),
        });
        Ok(self.columns.len() - 1)
    }

    fn required<T: FieldValue>(
        &mut self,
        field: &'static str,
        rule: T::Rule,
        source: Option<&Spanned<FieldSource>>,
    ) -> Result<Src<T>, ImportError> {
        match self.optional(field, rule, source)? {
            Some(src) => Ok(src),
            None => {
                self.missing.push(field);
                // A placeholder so checking can go on and report every missing field at once;
                // the mapping is refused before it could be used.
                Ok(Src {
                    field,
                    rule,
                    how: How::Column {
                        col: usize::MAX,
                        map: None,
                        scale: None,
                        round: None,
                        default: None,
                    },
                })
            }
        }
    }

    fn optional<T: FieldValue>(
        &mut self,
        field: &'static str,
        rule: T::Rule,
        source: Option<&Spanned<FieldSource>>,
    ) -> Result<Option<Src<T>>, ImportError> {
        let Some(source) = source else {
            return Ok(None);
        };
        let at = source.referenced;
        let s = &source.value;
        if let Some(synth) = &s.synthesize {
            return Err(self.error(
                synth.referenced,
                format!("`synthesize` applies only to msisdn, not to {field}"),
            ));
        }
        let constant = |v: &Spanned<String>| -> Result<T, ImportError> {
            T::parse(v.value.trim(), rule)
                .and_then(|t| t.check(rule).map(|()| t))
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
                        let is_number =
                            spec::fields::field(field).is_some_and(|f| f.ty == FieldType::Number);
                        if !is_number {
                            return Err(self.error(
                                sc.referenced,
                                format!("`scale` applies only to number fields (arpu_3m, balance, churn_risk), not to {field}"),
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
                        if !T::WHOLE {
                            return Err(self.error(
                                r.referenced,
                                format!("`round` applies only to whole-number fields (age, tenure_months, complaints_30d), not to {field}"),
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
                let default = s.default.as_ref().map(constant).transpose()?;
                let col = self.add_column(field, column)?;
                How::Column {
                    col,
                    map,
                    scale,
                    round,
                    default,
                }
            }
            (None, None) => {
                return Err(self.error(at, format!("{field} needs a `column:` or a `value:`")));
            }
        };
        Ok(Some(Src { field, rule, how }))
    }

    fn msisdn(&mut self, source: Option<&Spanned<FieldSource>>) -> Result<MsisdnSrc, ImportError> {
        let Some(source) = source else {
            self.missing.push("msisdn");
            return Ok(MsisdnSrc::Column { col: usize::MAX });
        };
        let s = &source.value;
        for (key, loc) in [
            ("map", s.map.as_ref().map(|_| source.referenced)),
            ("scale", s.scale.as_ref().map(|x| x.referenced)),
            ("default", s.default.as_ref().map(|x| x.referenced)),
            ("round", s.round.as_ref().map(|x| x.referenced)),
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
