//! `workflows/attributes.yaml`: the operator's subscriber attribute catalogue, parsed and
//! checked with every problem located. The types live in the `catalogue` crate, which the
//! store also reads; this module is the file format.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use catalogue::derived::{MAX_DAYS, MAX_MONTHS};
use catalogue::{
    Attribute, Catalogue, CatalogueError, Kind, MAX_NAME_LEN, Measure, Period, RESERVED,
    RESERVED_MEASURES, Retention, is_attribute_name,
};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::compile::{parse_typed, schema_value};
use crate::diag::{Diagnostic, Sink};

/// The catalogue file's name in a workflows folder.
pub const FILE_NAME: &str = "attributes.yaml";

pub use catalogue::{SHIPPED_SOURCE, shipped};

/// Longest description or unit, in characters.
const MAX_TEXT: usize = 1000;
/// Most values an enum may list.
const MAX_VALUES: usize = 1000;
/// Most attributes a catalogue may declare (PostgreSQL allows 1,600 columns per table).
const MAX_ATTRIBUTES: usize = 1000;

/// The catalogue of a workflows folder: its `attributes.yaml`, or the shipped one when the
/// folder has none.
pub fn load_catalogue(workflows_dir: &Path) -> Result<Arc<Catalogue>, Vec<Diagnostic>> {
    match read_catalogue_source(workflows_dir)? {
        Some((file, source)) => compile_catalogue(&file, &source).map(Arc::new),
        None => Ok(shipped()),
    }
}

/// The text of a folder's `attributes.yaml` with its shown path; `None` when there is none.
pub(crate) fn read_catalogue_source(
    dir: &Path,
) -> Result<Option<(String, String)>, Vec<Diagnostic>> {
    let path = dir.join(FILE_NAME);
    if !path.exists() {
        return Ok(None);
    }
    let shown = path.display().to_string();
    std::fs::read_to_string(&path)
        .map(|s| Some((shown.clone(), s)))
        .map_err(|e| {
            vec![Diagnostic {
                file: shown,
                line: 0,
                column: 0,
                message: format!("cannot read: {e}"),
            }]
        })
}

#[derive(Debug, Deserialize, JsonSchema)]
// Unknown keys are reported by `keys` (all of them, with the file's other errors); the
// schema still closes the struct, which is what that pass checks against.
#[schemars(deny_unknown_fields)]
struct AttributesFile {
    /// The declared attributes, in column order.
    attributes: Vec<AttributeFile>,
    /// Usage history: periodic measures per subscriber and how long they are kept.
    #[serde(default)]
    history: Option<HistoryFile>,
    /// The per-subscriber event log.
    #[serde(default)]
    events: Option<EventsFile>,
    /// Attributes computed from attributes, history windows and event counts.
    #[serde(default)]
    derived: Vec<AttributeFile>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
struct HistoryFile {
    /// Monthly periods kept, counted back from the newest loaded (default 24).
    #[serde(default)]
    #[schemars(with = "Option<u32>")]
    keep_months: Option<Spanned<u32>>,
    /// Daily periods kept, counted back from the newest loaded (default 92).
    #[serde(default)]
    #[schemars(with = "Option<u32>")]
    keep_days: Option<Spanned<u32>>,
    /// The measures, each a column of its period's history table.
    measures: Vec<MeasureFile>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
struct EventsFile {
    /// Days an event is kept (default 730).
    #[serde(default)]
    #[schemars(with = "Option<u32>")]
    keep_days: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
struct MeasureFile {
    /// The measure's name and column: lower-case letters, digits and `_`.
    #[schemars(with = "String")]
    name: Spanned<String>,
    /// integer (counts) or decimal.
    #[serde(rename = "type")]
    #[schemars(with = "String")]
    kind: Spanned<String>,
    /// month (default) or day.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    period: Option<Spanned<String>>,
    /// Unit of measure, for people.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    unit: Option<Spanned<String>>,
    /// What the measure counts.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    description: Option<Spanned<String>>,
    /// The smallest value an import accepts.
    #[serde(default)]
    #[schemars(with = "Option<f64>")]
    min: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
struct AttributeFile {
    /// The attribute's name and column: lower-case letters, digits and `_`.
    #[schemars(with = "String")]
    name: Spanned<String>,
    /// integer, decimal, text, enum, bool, date or timestamp.
    #[serde(rename = "type")]
    #[schemars(with = "String")]
    kind: Spanned<String>,
    /// For `enum`: the allowed values.
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>")]
    values: Option<Spanned<Vec<Spanned<String>>>>,
    /// Unit of measure, for people.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    unit: Option<Spanned<String>>,
    /// What the attribute means.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    description: Option<Spanned<String>>,
    /// Index the column for filtering.
    #[serde(default)]
    indexed: bool,
    /// Every subscriber has a value.
    #[serde(default)]
    required: bool,
    /// Shown to the agent or staff member working one of the subscriber's tasks (the
    /// agents' page); a stored attribute only.
    #[serde(default)]
    agents: bool,
    /// For integer and decimal: the smallest value an import accepts.
    #[serde(default)]
    #[schemars(with = "Option<f64>")]
    min: Option<Spanned<f64>>,
    /// For integer and decimal: the largest value an import accepts.
    #[serde(default)]
    #[schemars(with = "Option<f64>")]
    max: Option<Spanned<f64>>,
    /// For text: `time_slot` (HH:MM-HH:MM) or `email` (an address such as
    /// `li.na@example.com`; at most one attribute, the address the `email` channel uses).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    format: Option<Spanned<String>>,
    /// For derived attributes: the expression that computes the value.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    expr: Option<Spanned<String>>,
}

const KINDS: &str = "integer, decimal, text, enum, bool, date or timestamp";

/// Parses and checks a catalogue file, reporting every problem with its location.
pub fn compile_catalogue(file: &str, source: &str) -> Result<Catalogue, Vec<Diagnostic>> {
    static SCHEMA: OnceLock<serde_json::Value> = OnceLock::new();
    let schema = SCHEMA.get_or_init(schema_value::<AttributesFile>);
    let parsed: AttributesFile = parse_typed(file, source, schema)?;
    let mut sink = Sink::new(file, source);
    sink.out = crate::keys::unknown_keys(file, source, schema);
    if parsed.attributes.len() > MAX_ATTRIBUTES {
        sink.out.push(Diagnostic {
            file: file.to_owned(),
            line: 0,
            column: 0,
            message: format!(
                "{} attributes declared; at most {MAX_ATTRIBUTES} are allowed",
                parsed.attributes.len()
            ),
        });
    }
    let mut declared: Vec<Attribute> = Vec::new();
    let mut seen: Vec<&Spanned<String>> = Vec::new();
    for a in &parsed.attributes {
        if let Some(e) = &a.expr {
            sink.at_spanned(
                e,
                "`expr` belongs to a derived attribute: move this entry under `derived:`",
            );
        }
        if let Some(attr) = attribute(&mut sink, a, &mut seen) {
            declared.push(attr);
        }
    }
    // The `email` channel sends to the one attribute declared with `format: email`: a
    // second would leave which address a wave uses to chance.
    let mut mail_formats = parsed
        .attributes
        .iter()
        .filter(|a| a.kind.value == "text")
        .filter_map(|a| {
            a.format
                .as_ref()
                .filter(|f| f.value == "email")
                .map(|f| (a, f))
        });
    if let Some((first, _)) = mail_formats.next() {
        for (_, f) in mail_formats {
            sink.at_spanned(
                f,
                format!(
                    "a second `format: email` attribute: the e-mail channel sends to one address, `{}` (line {})",
                    first.name.value,
                    first.name.referenced.line()
                ),
            );
        }
    }
    let (measures, retention) = history(&mut sink, parsed.history.as_ref(), parsed.events.as_ref());
    let mut derived: Vec<(&AttributeFile, Option<Attribute>)> = Vec::new();
    for a in &parsed.derived {
        if a.expr.is_none() {
            sink.at_spanned(
                &a.name,
                format!(
                    "derived attribute `{}` needs `expr`: the expression that computes it",
                    a.name.value
                ),
            );
        }
        for (set, key) in [
            (a.indexed, "indexed"),
            (a.required, "required"),
            (a.agents, "agents"),
        ] {
            if set {
                sink.at_spanned(
                    &a.name,
                    format!(
                        "`{key}` is for stored attributes; `{}` is derived",
                        a.name.value
                    ),
                );
            }
        }
        if a.min.is_some() || a.max.is_some() || a.format.is_some() {
            sink.at_spanned(
                &a.name,
                format!(
                    "`min`, `max` and `format` check imported values; `{}` is derived",
                    a.name.value
                ),
            );
        }
        derived.push((a, attribute(&mut sink, a, &mut seen)));
    }
    // Names whose declaration has an error, so they are not in the catalogue: an expression
    // that names one is not type-checked (every use would read as an unknown name, repeating
    // the declaration's own error); it is reported as naming an invalid attribute instead.
    let mut invalid: Vec<&str> = parsed
        .attributes
        .iter()
        .map(|a| a.name.value.as_str())
        .filter(|n| !declared.iter().any(|d| d.name == *n))
        .collect();
    if let Some(h) = &parsed.history {
        invalid.extend(
            h.measures
                .iter()
                .map(|m| m.name.value.as_str())
                .filter(|n| !measures.iter().any(|x| x.name == *n)),
        );
    }
    let whole = |e: CatalogueError| {
        vec![Diagnostic {
            file: file.to_owned(),
            line: 0,
            column: 0,
            message: e.to_string(),
        }]
    };
    // Every rule `Catalogue::new` and `with_history` hold was checked above with a location,
    // so when they refuse with errors already reported, those errors are the answer.
    // Otherwise the catalogue holds the sound attributes and measures, and the derived
    // expressions are checked against it, in the same pass as the errors above.
    let mut cat = match Catalogue::new(declared).and_then(|c| c.with_history(measures, retention)) {
        Ok(c) => c,
        Err(e) if sink.out.is_empty() => return Err(whole(e)),
        Err(_) => {
            sink.out.sort_by_key(|d| (d.line, d.column));
            return Err(sink.out);
        }
    };
    for (a, attr) in derived {
        let (Some(attr), Some(expr)) = (attr, &a.expr) else {
            invalid.push(&a.name.value);
            continue;
        };
        if let Ok(e) = catalogue::derived::parse(&expr.value) {
            for (ty, span) in catalogue::derived::event_types(&e) {
                if let Some(problem) = crate::rules::event_type_problem(ty) {
                    sink.inside(expr, span.start, problem);
                }
            }
            let bad: Vec<_> = catalogue::derived::names(&e)
                .into_iter()
                .filter(|(n, _)| invalid.contains(n) && cat.field(n).is_none())
                .collect();
            if !bad.is_empty() {
                for (n, span) in bad {
                    sink.inside(
                        expr,
                        span.start,
                        format!(
                            "`{n}` is invalid (its declaration has an error): `{}` is checked once it is fixed",
                            a.name.value
                        ),
                    );
                }
                invalid.push(&a.name.value);
                continue;
            }
        }
        match cat.clone().with_derived(vec![(attr, expr.value.clone())]) {
            Ok(c) => cat = c,
            Err(CatalogueError::Derived(_, e)) => {
                sink.inside(expr, e.span.start, e.message);
                invalid.push(&a.name.value);
            }
            Err(e) => {
                sink.at_spanned(&a.name, e.to_string());
                invalid.push(&a.name.value);
            }
        }
    }
    if !sink.out.is_empty() {
        sink.out.sort_by_key(|d| (d.line, d.column));
        return Err(sink.out);
    }
    Ok(cat)
}

/// Checks the `history:` and `events:` sections.
fn history(
    sink: &mut Sink<'_>,
    h: Option<&HistoryFile>,
    e: Option<&EventsFile>,
) -> (Vec<Measure>, Retention) {
    let mut retention = Retention::default();
    let mut bounded = |s: &Option<Spanned<u32>>, max: u32, what: &str, into: &mut u32| {
        if let Some(v) = s {
            if (1..=max).contains(&v.value) {
                *into = v.value;
            } else {
                sink.at_spanned(v, format!("{what} takes a whole number from 1 to {max}"));
            }
        }
    };
    if let Some(ev) = e {
        bounded(
            &ev.keep_days,
            36_600,
            "`keep_days`",
            &mut retention.event_days,
        );
    }
    let Some(h) = h else {
        return (Vec::new(), retention);
    };
    bounded(
        &h.keep_months,
        MAX_MONTHS,
        "`keep_months`",
        &mut retention.months,
    );
    bounded(&h.keep_days, MAX_DAYS, "`keep_days`", &mut retention.days);
    let mut out: Vec<Measure> = Vec::new();
    for m in &h.measures {
        let name = &m.name;
        let twice = out
            .iter()
            .any(|x| x.name == name.value)
            .then(|| format!("measure `{}` is declared twice", name.value));
        let mut ok = name_ok(
            sink,
            name,
            &RESERVED_MEASURES,
            CatalogueError::ReservedMeasure,
            twice,
        );
        let integer = match m.kind.value.as_str() {
            "integer" => true,
            "decimal" => false,
            other => {
                sink.at_spanned(
                    &m.kind,
                    format!(
                        "unknown measure type `{}`: expected integer or decimal",
                        other.escape_debug()
                    ),
                );
                ok = false;
                false
            }
        };
        let period = match &m.period {
            None => Period::Month,
            Some(p) => Period::parse(&p.value).unwrap_or_else(|| {
                sink.at_spanned(
                    p,
                    format!(
                        "unknown period `{}`: expected month or day",
                        p.value.escape_debug()
                    ),
                );
                ok = false;
                Period::Month
            }),
        };
        if let Some(min) = &m.min
            && !min.value.is_finite()
        {
            sink.at_spanned(min, "a bound must be a finite number");
        }
        let unit = text(sink, m.unit.as_ref(), "unit");
        let description = text(sink, m.description.as_ref(), "description");
        if ok {
            out.push(Measure {
                name: name.value.clone(),
                integer,
                period,
                unit,
                description: description.unwrap_or_default(),
                min: m.min.as_ref().map(|v| v.value),
            });
        }
    }
    (out, retention)
}

/// Whether a declared name (attribute or measure) is usable: a valid column name, not one of
/// `reserved`, not declared before (`twice` is the message when it was). Reports the first
/// problem at the name.
fn name_ok(
    sink: &mut Sink<'_>,
    name: &Spanned<String>,
    reserved: &[&str],
    reserved_error: fn(String) -> CatalogueError,
    twice: Option<String>,
) -> bool {
    let problem = if !is_attribute_name(&name.value) {
        Some(CatalogueError::BadName(name.value.clone()).to_string())
    } else if reserved.contains(&name.value.as_str()) {
        Some(reserved_error(name.value.clone()).to_string())
    } else {
        twice
    };
    match problem {
        Some(p) => {
            sink.at_spanned(name, p);
            false
        }
        None => true,
    }
}

/// Checks one attribute entry (stored or derived), reporting its problems; `seen` holds the
/// names before it.
fn attribute<'a>(
    sink: &mut Sink<'_>,
    a: &'a AttributeFile,
    seen: &mut Vec<&'a Spanned<String>>,
) -> Option<Attribute> {
    let name = &a.name;
    let twice = seen.iter().find(|s| s.value == name.value).map(|first| {
        format!(
            "attribute `{}` is declared twice (first at line {})",
            name.value,
            first.referenced.line()
        )
    });
    let ok = name_ok(sink, name, &RESERVED, CatalogueError::Reserved, twice);
    seen.push(name);
    let kind = match a.kind.value.as_str() {
        "integer" => Some(Kind::Integer),
        "decimal" => Some(Kind::Decimal),
        "text" => Some(Kind::Text),
        "bool" => Some(Kind::Bool),
        "date" => Some(Kind::Date),
        "timestamp" => Some(Kind::Timestamp),
        "enum" => enum_values(sink, a).map(|values| Kind::Enum { values }),
        other => {
            sink.at_spanned(
                &a.kind,
                format!("unknown type `{}`: expected {KINDS}", other.escape_debug()),
            );
            None
        }
    };
    if a.kind.value != "enum"
        && let Some(v) = &a.values
    {
        sink.at_spanned(
            v,
            format!(
                "`values` is for enum attributes; `{}` is {}",
                name.value, a.kind.value
            ),
        );
    }
    let numeric = matches!(a.kind.value.as_str(), "integer" | "decimal");
    for bound in [&a.min, &a.max].into_iter().flatten() {
        if !numeric {
            sink.at_spanned(
                bound,
                format!(
                    "`min` and `max` are for integer and decimal attributes; `{}` is {}",
                    name.value, a.kind.value
                ),
            );
        } else if !bound.value.is_finite() {
            sink.at_spanned(bound, "a bound must be a finite number");
        }
    }
    if let (Some(lo), Some(hi)) = (&a.min, &a.max)
        && lo.value > hi.value
    {
        sink.at_spanned(
            hi,
            format!("`max` {} is below `min` {}", hi.value, lo.value),
        );
    }
    let format = match &a.format {
        None => None,
        Some(f) if a.kind.value != "text" => {
            sink.at_spanned(
                f,
                format!(
                    "`format` is for text attributes; `{}` is {}",
                    name.value, a.kind.value
                ),
            );
            None
        }
        Some(f) if f.value == "time_slot" => Some(catalogue::TextFormat::TimeSlot),
        Some(f) if f.value == "email" => Some(catalogue::TextFormat::Email),
        Some(f) => {
            sink.at_spanned(
                f,
                format!(
                    "unknown format `{}`: expected time_slot or email",
                    f.value.escape_debug()
                ),
            );
            None
        }
    };
    let unit = text(sink, a.unit.as_ref(), "unit");
    let description = text(sink, a.description.as_ref(), "description");
    if !ok {
        return None;
    }
    Some(Attribute {
        name: name.value.clone(),
        kind: kind?,
        unit,
        description: description.unwrap_or_default(),
        indexed: a.indexed,
        required: a.required,
        core: false,
        min: a.min.as_ref().map(|m| m.value),
        max: a.max.as_ref().map(|m| m.value),
        format,
        agents: a.agents,
    })
}

fn enum_values(sink: &mut Sink<'_>, a: &AttributeFile) -> Option<Vec<String>> {
    let Some(values) = &a.values else {
        sink.at_spanned(
            &a.kind,
            format!(
                "enum attribute `{}` needs `values`: the list of allowed values",
                a.name.value
            ),
        );
        return None;
    };
    if values.value.is_empty() {
        sink.at_spanned(
            values,
            format!("enum attribute `{}` needs at least one value", a.name.value),
        );
        return None;
    }
    if values.value.len() > MAX_VALUES {
        sink.at_spanned(values, format!("at most {MAX_VALUES} values are allowed"));
        return None;
    }
    let mut out: Vec<String> = Vec::new();
    let mut ok = true;
    for v in &values.value {
        if v.value.is_empty() || v.value.chars().count() > MAX_NAME_LEN * 2 {
            sink.at_spanned(
                v,
                format!("an enum value is 1 to {} characters", MAX_NAME_LEN * 2),
            );
            ok = false;
        } else if v.value.chars().any(char::is_control) || v.value.contains('\'') {
            sink.at_spanned(v, "an enum value may not contain control characters or `'`");
            ok = false;
        } else if out.contains(&v.value) {
            sink.at_spanned(v, format!("value `{}` is listed twice", v.value));
            ok = false;
        } else {
            out.push(v.value.clone());
        }
    }
    ok.then_some(out)
}

fn text(sink: &mut Sink<'_>, s: Option<&Spanned<String>>, what: &str) -> Option<String> {
    let s = s?;
    if s.value.chars().count() > MAX_TEXT {
        sink.at_spanned(s, format!("{what} is longer than {MAX_TEXT} characters"));
    } else if s.value.chars().any(|c| c.is_control() && c != '\n') {
        sink.at_spanned(s, format!("{what} contains a control character"));
    }
    Some(s.value.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_catalogue_compiles() {
        let cat = compile_catalogue("attributes.yaml", SHIPPED_SOURCE).unwrap();
        assert_eq!(cat.declared().count(), 17);
        assert_eq!(
            cat.field("value_tier").unwrap().kind.values(),
            ["diamond", "gold", "silver", "ordinary"]
        );
        assert!(cat.get("campus").is_some_and(|a| !a.required));
        assert_eq!(cat.email_address().map(|a| a.name.as_str()), Some("email"));
        // The store reads the shipped file without this module; both must agree.
        assert_eq!(cat, *shipped());
        let shown: Vec<&str> = cat
            .declared()
            .filter(|a| a.agents)
            .map(|a| a.name.as_str())
            .collect();
        assert_eq!(shown, ["name", "brand", "arpu_3m"], "what agents may see");
    }

    #[test]
    fn only_stored_attributes_are_shown_to_agents() {
        let src = "attributes:
  - name: arpu_3m
    type: decimal
    agents: true
derived:
  - name: rich
    type: bool
    agents: true
    expr: \"arpu_3m > 100\"
";
        let errs = compile_catalogue("a.yaml", src).unwrap_err();
        let shown: Vec<String> = errs.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            shown,
            ["a.yaml:6:11: `agents` is for stored attributes; `rich` is derived"]
        );
        let ok = compile_catalogue(
            "a.yaml",
            &src.replace("    agents: true\n    expr", "    expr"),
        )
        .unwrap();
        assert!(ok.get("arpu_3m").is_some_and(|a| a.agents));
    }

    #[test]
    fn every_problem_is_reported_with_its_location() {
        let src = "attributes:\n  - name: Age\n    type: integer\n  - name: tier\n    type: enum\n  - name: arpu\n    type: money\n    colour: red\n  - name: opt_out\n    type: bool\n  - name: arpu\n    type: decimal\n    values: [a]\n";
        let errs = compile_catalogue("attributes.yaml", src).unwrap_err();
        let shown: Vec<String> = errs.iter().map(|d| d.to_string()).collect();
        let expect = [
            "attributes.yaml:2:11: `Age` is not an attribute name",
            "attributes.yaml:5:11: enum attribute `tier` needs `values`",
            "attributes.yaml:7:11: unknown type `money`",
            "attributes.yaml:8:5: unknown field `colour`, expected one of `agents`, `description`",
            "attributes.yaml:9:11: `opt_out` is built in",
            "attributes.yaml:11:11: attribute `arpu` is declared twice (first at line 6)",
            "attributes.yaml:13:13: `values` is for enum attributes",
        ];
        assert_eq!(shown.len(), expect.len(), "{shown:#?}");
        for (got, want) in shown.iter().zip(expect) {
            assert!(got.starts_with(want), "{got}\n  expected {want}");
        }
    }

    #[test]
    fn history_and_derived_problems_are_located() {
        let check = |src: &str, expect: &[&str]| {
            let errs = compile_catalogue("a.yaml", src).unwrap_err();
            let shown: Vec<String> = errs.iter().map(|d| d.to_string()).collect();
            assert_eq!(shown.len(), expect.len(), "{shown:#?}");
            for (got, want) in shown.iter().zip(expect) {
                assert!(got.starts_with(want), "{got}\n  expected {want}");
            }
        };
        let attrs = "attributes:\n  - name: arpu_3m\n    type: decimal\n";
        check(
            &format!(
                "{attrs}history:\n  measures:\n    - name: Spend\n      type: decimal\n    - name: period\n      type: integer\n    - name: spend\n      type: money\n    - name: rate\n      type: decimal\n      period: week\n    - name: calls\n      type: integer\n    - name: calls\n      type: integer\n"
            ),
            &[
                "a.yaml:6:13: `Spend` is not an attribute name",
                "a.yaml:8:13: `period` is a column of every history table",
                "a.yaml:11:13: unknown measure type `money`",
                "a.yaml:14:15: unknown period `week`",
                "a.yaml:17:13: measure `calls` is declared twice",
            ],
        );
        // Expressions are checked against the sound attributes and measures.
        check(
            &format!(
                "{attrs}history:\n  measures:\n    - name: calls\n      type: integer\nderived:\n  - name: tier\n    type: text\n    expr: \"arpu_3n > 1\"\n  - name: change\n    type: decimal\n    expr: \"mean(calls, days: 3)\"\n"
            ),
            &[
                "a.yaml:11:12: unknown attribute `arpu_3n`",
                "a.yaml:14:24: `calls` is measured per month",
            ],
        );
    }

    /// One pass shows every error of the file: a bad stored attribute does not hide a bad
    /// derived expression, and an expression naming the bad attribute (or a derived one that
    /// names it) says so once instead of reporting an unknown name.
    #[test]
    fn stored_and_derived_errors_are_reported_together() {
        let src = "attributes:\n  - name: arpu\n    type: money\n  - name: age\n    type: integer\nhistory:\n  measures:\n    - name: calls\n      type: count\nderived:\n  - name: rich\n    type: bool\n    expr: \"arpu > 100\"\n  - name: old\n    type: bool\n    expr: \"agee > 60\"\n  - name: very_rich\n    type: bool\n    expr: \"rich and age > 3\"\n  - name: chatty\n    type: bool\n    expr: \"sum(calls, months: 3) > 5\"\n  - name: adult\n    type: bool\n    expr: \"age >= 18\"\n  - name: adult_text\n    type: text\n    expr: \"adult + 1\"\n";
        let errs = compile_catalogue("a.yaml", src).unwrap_err();
        let shown: Vec<String> = errs.iter().map(|d| d.to_string()).collect();
        let expect = [
            "a.yaml:3:11: unknown type `money`",
            "a.yaml:9:13: unknown measure type `count`",
            "a.yaml:13:12: `arpu` is invalid (its declaration has an error): `rich` is checked once it is fixed",
            "a.yaml:16:12: unknown attribute `agee`",
            "a.yaml:19:12: `rich` is invalid (its declaration has an error): `very_rich` is checked once it is fixed",
            "a.yaml:22:16: `calls` is invalid (its declaration has an error): `chatty` is checked once it is fixed",
            "a.yaml:28:",
        ];
        assert_eq!(shown.len(), expect.len(), "{shown:#?}");
        for (got, want) in shown.iter().zip(expect) {
            assert!(got.starts_with(want), "{got}\n  expected {want}");
        }
    }

    #[test]
    fn one_attribute_at_most_holds_the_email_address() {
        let src = "attributes:\n  - name: home_mail\n    type: text\n    format: email\n  - name: work_mail\n    type: text\n    format: email\n  - name: n\n    type: integer\n    format: email\n";
        let errs = compile_catalogue("a.yaml", src).unwrap_err();
        let got: Vec<String> = errs
            .iter()
            .map(|e| format!("{}:{}: {}", e.line, e.column, e.message))
            .collect();
        assert!(
            got.iter().any(|e| e.starts_with("7:13: a second `format: email` attribute: the e-mail channel sends to one address, `home_mail` (line 2)")),
            "{got:#?}"
        );
        assert!(
            got.iter()
                .any(|e| e.starts_with("10:13: `format` is for text attributes")),
            "{got:#?}"
        );
    }

    #[test]
    fn a_missing_type_is_located() {
        let errs = compile_catalogue("a.yaml", "attributes:\n  - name: x\n").unwrap_err();
        assert_eq!(errs[0].line, 2, "{errs:?}");
        assert!(errs[0].message.contains("type"), "{errs:?}");
    }
}
