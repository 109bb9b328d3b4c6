//! The subscriber attribute catalogue: the one owner of what a subscriber has.
//!
//! Operators declare attributes in `workflows/attributes.yaml` (parsed and checked by
//! `spec::catalogue`); a small core is built in ([`CORE`]) because the product itself
//! depends on it: the phone number, consent and the time zone. Every other reader of
//! subscriber fields (filter and template checks, the planner's SQL, rendering, imports,
//! the synthetic base, `campaignd schema --attributes`, the store's columns) takes names and types from a
//! [`Catalogue`], never from a list of its own.
//!
//! An attribute is a column of `subscriber` named as the attribute. Dates and timestamps are
//! stored as ISO-8601 text (`2026-09-01`, `2026-09-01T08:00:00Z`), which orders the same
//! way on both backends and compares with a quoted literal in a filter.

use std::fmt;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

pub mod derived;
pub mod history;

pub use derived::{DExpr, DerivedError};
pub use history::{Measure, Period, Retention};

/// The type of an attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Kind {
    /// A whole number (64-bit).
    Integer,
    /// A number with a fraction (double precision).
    Decimal,
    /// Free text.
    Text,
    /// One of a fixed list of text values.
    Enum { values: Vec<String> },
    /// true or false.
    Bool,
    /// A calendar date, `YYYY-MM-DD`.
    Date,
    /// An instant, `YYYY-MM-DDTHH:MM:SSZ` (UTC).
    Timestamp,
}

impl Kind {
    /// The name operators write in the catalogue.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Integer => "integer",
            Kind::Decimal => "decimal",
            Kind::Text => "text",
            Kind::Enum { .. } => "enum",
            Kind::Bool => "bool",
            Kind::Date => "date",
            Kind::Timestamp => "timestamp",
        }
    }

    /// How the value is stored: the column's storage class.
    pub fn storage(&self) -> Storage {
        match self {
            Kind::Integer => Storage::Integer,
            Kind::Decimal => Storage::Real,
            Kind::Bool => Storage::Bool,
            Kind::Text | Kind::Enum { .. } | Kind::Date | Kind::Timestamp => Storage::Text,
        }
    }

    /// The allowed values of an enumeration; empty for every other kind.
    pub fn values(&self) -> &[String] {
        match self {
            Kind::Enum { values } => values,
            _ => &[],
        }
    }
}

/// The storage class of a column: what a backend needs to create and read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    Integer,
    Real,
    Text,
    Bool,
}

/// One declared attribute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attribute {
    pub name: String,
    #[serde(flatten)]
    pub kind: Kind,
    /// Unit of measure, for people (`yuan/month`, `minutes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(default)]
    pub description: String,
    /// Whether the column carries an index for filtering.
    #[serde(default)]
    pub indexed: bool,
    /// Whether every subscriber has a value: an import refuses a row without one, and a
    /// filter may not test it for `null`.
    #[serde(default)]
    pub required: bool,
    /// Built in (the product depends on it), not declared by the operator.
    #[serde(default)]
    pub core: bool,
    /// For integer and decimal attributes: the smallest value an import accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// For integer and decimal attributes: the largest value an import accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// For text attributes: a form every value must have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<TextFormat>,
    /// Shown to the agent or staff member working one of the subscriber's tasks (the
    /// agents' page, `POST /tasks/next`); nothing else is, beyond the masked number.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub agents: bool,
}

/// A form a text attribute's values must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextFormat {
    /// A daily time slot, `HH:MM-HH:MM` (may wrap midnight, e.g. `21:00-08:00`).
    TimeSlot,
    /// An e-mail address, `local@domain` (checked by [`email_problem`]): where the
    /// `email` channel sends. At most one attribute of a catalogue has it.
    Email,
}

/// Why `s` is not a plain e-mail address (`local@domain.tld`), if it is not. Deliberately
/// narrower than RFC 5322: no display names, comments, quoted local parts or IP literals,
/// which report recipients and subscriber addresses never need and which hide typos.
pub fn email_problem(s: &str) -> Option<&'static str> {
    if s.len() > 254 {
        return Some("longer than 254 characters");
    }
    let Some((local, domain)) = s.split_once('@') else {
        return Some("no `@`");
    };
    if local.is_empty() || local.len() > 64 {
        return Some("the part before `@` must be 1 to 64 characters");
    }
    let local_ok = local
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~.-".contains(&b));
    if !local_ok || local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Some(
            "the part before `@` may hold letters, digits and !#$%&'*+/=?^_`{|}~.- (no leading, trailing or double dot)",
        );
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return Some("the domain needs a dot, e.g. example.com");
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if !labels.iter().all(|l| label_ok(l)) {
        return Some("the domain must be dot-separated labels of letters, digits and inner dashes");
    }
    None
}

/// Whether `s` is a plain e-mail address ([`email_problem`] finds nothing).
pub fn is_email_address(s: &str) -> bool {
    email_problem(s).is_none()
}

/// Names of the built-in attributes. They are columns of `subscriber` in every database.
pub const CORE: [&str; 5] = [
    "msisdn",
    "external_id",
    "timezone",
    "opt_out",
    "do_not_disturb",
];

/// Column names an operator may not use: the core, and the table's own bookkeeping.
pub const RESERVED: [&str; 7] = [
    "msisdn",
    "external_id",
    "timezone",
    "opt_out",
    "do_not_disturb",
    "id",
    "updated_at",
];

/// Longest attribute name: fits every backend's identifier limit with an index prefix.
pub const MAX_NAME_LEN: usize = 48;

/// Whether `s` is a valid attribute name: lower-case ASCII letters, digits and `_`,
/// starting with a letter. Names become column names; this keeps them portable.
pub fn is_attribute_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('a'..='z'))
        && s.len() <= MAX_NAME_LEN
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
}

fn core_attributes() -> Vec<Attribute> {
    let core = |name: &str, kind: Kind, required: bool, description: &str| Attribute {
        name: name.to_owned(),
        kind,
        unit: None,
        description: description.to_owned(),
        indexed: false,
        required,
        core: true,
        min: None,
        max: None,
        format: None,
        agents: false,
    };
    vec![
        core(
            "msisdn",
            Kind::Text,
            true,
            "Mobile number, digits only, e.g. 13800138000.",
        ),
        core(
            "external_id",
            Kind::Text,
            false,
            "Id in the source system an import came from.",
        ),
        core(
            "timezone",
            Kind::Text,
            false,
            "IANA time zone; the campaign's zone when empty.",
        ),
        core(
            "opt_out",
            Kind::Bool,
            true,
            "Opted out of marketing contact; never contacted while true.",
        ),
        core(
            "do_not_disturb",
            Kind::Bool,
            true,
            "On the operator's do-not-disturb list.",
        ),
    ]
}

/// Why a list of attributes is not a catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogueError {
    BadName(String),
    Reserved(String),
    Duplicate(String),
    EmptyEnum(String),
    /// A measure name that is a history table's own column.
    ReservedMeasure(String),
    /// A derived attribute whose expression does not check.
    Derived(String, DerivedError),
}

impl fmt::Display for CatalogueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CatalogueError::BadName(n) => write!(
                f,
                "`{n}` is not an attribute name: expected lower-case letters, digits and `_`, starting with a letter, at most {MAX_NAME_LEN} characters"
            ),
            CatalogueError::Reserved(n) => write!(
                f,
                "`{n}` is built in (core attributes and bookkeeping columns: {}); choose another name",
                RESERVED.join(", ")
            ),
            CatalogueError::Duplicate(n) => write!(f, "attribute `{n}` is declared twice"),
            CatalogueError::EmptyEnum(n) => {
                write!(f, "enum attribute `{n}` needs at least one value")
            }
            CatalogueError::ReservedMeasure(n) => write!(
                f,
                "`{n}` is a column of every history table ({}); choose another name",
                RESERVED_MEASURES.join(", ")
            ),
            CatalogueError::Derived(n, e) => write!(f, "derived attribute `{n}`: {e}"),
        }
    }
}

impl std::error::Error for CatalogueError {}

/// Column names a measure may not use: the history tables' own.
pub const RESERVED_MEASURES: [&str; 2] = ["subscriber_id", "period"];

/// A derived attribute: a declared name and type, and the expression that computes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Derived {
    #[serde(flatten)]
    pub attr: Attribute,
    /// The expression as written.
    #[serde(rename = "expr")]
    pub source: String,
    #[serde(skip)]
    pub expr: DExpr,
}

impl Derived {
    /// Parses and checks `source` against `cat` (which holds the derived attributes declared
    /// before this one) and the declared kind; `attr.name` must be new to `cat`.
    pub fn new(attr: Attribute, source: &str, cat: &Catalogue) -> Result<Derived, DerivedError> {
        let expr = derived::parse(source)?;
        let t = derived::check(&expr, cat).map_err(|mut es| es.remove(0))?;
        let want = derived::Type::of_kind(&attr.kind);
        let fits = t == want
            || t == derived::Type::Null
            || (want == derived::Type::Decimal && t == derived::Type::Integer);
        let whole = derived::Span {
            start: 0,
            end: source.len(),
        };
        if !fits {
            return Err(DerivedError {
                span: whole,
                message: format!(
                    "the expression is {}, but the attribute is declared {}",
                    type_name(t),
                    attr.kind.name()
                ),
            });
        }
        if let Kind::Enum { values } = &attr.kind {
            for v in derived::result_texts(&expr) {
                if !values.iter().any(|x| x == v) {
                    return Err(DerivedError {
                        span: whole,
                        message: format!(
                            "'{v}' is not one of the declared values: {}",
                            values.join(", ")
                        ),
                    });
                }
            }
        }
        Ok(Derived {
            attr,
            source: source.to_owned(),
            expr,
        })
    }
}

fn type_name(t: derived::Type) -> &'static str {
    match t {
        derived::Type::Integer => "integer",
        derived::Type::Decimal => "decimal",
        derived::Type::Text => "text",
        derived::Type::Bool => "bool",
        derived::Type::Null => "null",
    }
}

/// The attributes a subscriber has: the core first, then the declared ones in file order;
/// the usage-history measures; the derived attributes; and how long history is kept.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Catalogue {
    attrs: Vec<Attribute>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    measures: Vec<Measure>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    derived: Vec<Derived>,
    retention: Retention,
}

impl Default for Catalogue {
    fn default() -> Self {
        Catalogue::core_only()
    }
}

impl Catalogue {
    /// The attribute holding the subscriber's e-mail address (`format: email`), if any.
    pub fn email_address(&self) -> Option<&Attribute> {
        self.declared()
            .find(|a| a.format == Some(TextFormat::Email))
    }

    /// The built-in attributes alone.
    pub fn core_only() -> Catalogue {
        Catalogue {
            attrs: core_attributes(),
            measures: Vec::new(),
            derived: Vec::new(),
            retention: Retention::default(),
        }
    }

    /// The core plus `declared`, checked: names valid, not reserved, not repeated.
    pub fn new(declared: Vec<Attribute>) -> Result<Catalogue, CatalogueError> {
        let mut attrs = core_attributes();
        for mut a in declared {
            if !is_attribute_name(&a.name) {
                return Err(CatalogueError::BadName(a.name));
            }
            if RESERVED.contains(&a.name.as_str()) {
                return Err(CatalogueError::Reserved(a.name));
            }
            if attrs.iter().any(|b| b.name == a.name) {
                return Err(CatalogueError::Duplicate(a.name));
            }
            if matches!(&a.kind, Kind::Enum { values } if values.is_empty()) {
                return Err(CatalogueError::EmptyEnum(a.name));
            }
            a.core = false;
            attrs.push(a);
        }
        Ok(Catalogue {
            attrs,
            ..Catalogue::core_only()
        })
    }

    /// Adds the usage history: its measures (names checked, not repeated) and retention.
    pub fn with_history(
        mut self,
        measures: Vec<Measure>,
        retention: Retention,
    ) -> Result<Catalogue, CatalogueError> {
        for m in measures {
            if !is_attribute_name(&m.name) {
                return Err(CatalogueError::BadName(m.name));
            }
            if RESERVED_MEASURES.contains(&m.name.as_str()) {
                return Err(CatalogueError::ReservedMeasure(m.name));
            }
            if self.measures.iter().any(|x| x.name == m.name) {
                return Err(CatalogueError::Duplicate(m.name));
            }
            self.measures.push(m);
        }
        self.retention = retention;
        Ok(self)
    }

    /// Adds derived attributes in order, each checked against what comes before it.
    pub fn with_derived(
        mut self,
        declared: Vec<(Attribute, String)>,
    ) -> Result<Catalogue, CatalogueError> {
        for (mut attr, source) in declared {
            if !is_attribute_name(&attr.name) {
                return Err(CatalogueError::BadName(attr.name));
            }
            if RESERVED.contains(&attr.name.as_str()) {
                return Err(CatalogueError::Reserved(attr.name));
            }
            if self.field(&attr.name).is_some() {
                return Err(CatalogueError::Duplicate(attr.name));
            }
            attr.core = false;
            attr.required = false;
            let name = attr.name.clone();
            let d =
                Derived::new(attr, &source, &self).map_err(|e| CatalogueError::Derived(name, e))?;
            self.derived.push(d);
        }
        Ok(self)
    }

    /// An attribute a filter, template or breakdown may name: stored or derived.
    pub fn field(&self, name: &str) -> Option<&Attribute> {
        self.get(name)
            .or_else(|| self.derived(name).map(|d| &d.attr))
    }

    /// Every name [`Catalogue::field`] knows, for "expected one of" messages.
    pub fn field_names(&self) -> Vec<&str> {
        self.attrs
            .iter()
            .map(|a| a.name.as_str())
            .chain(self.derived.iter().map(|d| d.attr.name.as_str()))
            .collect()
    }

    /// A derived attribute by name.
    pub fn derived(&self, name: &str) -> Option<&Derived> {
        self.derived.iter().find(|d| d.attr.name == name)
    }

    /// Every derived attribute, in declared order.
    pub fn derived_all(&self) -> &[Derived] {
        &self.derived
    }

    /// A usage-history measure by name.
    pub fn measure(&self, name: &str) -> Option<&Measure> {
        self.measures.iter().find(|m| m.name == name)
    }

    /// Every measure, in declared order.
    pub fn measures(&self) -> &[Measure] {
        &self.measures
    }

    /// The measures of one period length, in declared order: one history table's columns.
    pub fn measures_of(&self, period: Period) -> impl Iterator<Item = &Measure> {
        self.measures.iter().filter(move |m| m.period == period)
    }

    pub fn retention(&self) -> Retention {
        self.retention
    }

    /// Looks an attribute up by name (core or declared).
    pub fn get(&self, name: &str) -> Option<&Attribute> {
        self.attrs.iter().find(|a| a.name == name)
    }

    /// Every attribute, core first.
    pub fn all(&self) -> &[Attribute] {
        &self.attrs
    }

    /// The declared (non-core) attributes, in file order: the catalogue-owned columns.
    pub fn declared(&self) -> impl Iterator<Item = &Attribute> {
        self.attrs.iter().filter(|a| !a.core)
    }

    /// Every name, for "expected one of" messages.
    pub fn names(&self) -> Vec<&str> {
        self.attrs.iter().map(|a| a.name.as_str()).collect()
    }

    /// The position of a declared attribute among [`Catalogue::declared`].
    pub fn declared_index(&self, name: &str) -> Option<usize> {
        self.declared().position(|a| a.name == name)
    }
}

/// A stored attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Dec(f64),
    Text(String),
    Bool(bool),
}

impl Value {
    /// The value as template text: decimals with two places, empty for no value.
    pub fn to_text(&self) -> String {
        match self {
            Value::Null => String::new(),
            Value::Int(i) => i.to_string(),
            Value::Dec(d) => format!("{d:.2}"),
            Value::Text(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
}

/// The declared attribute values of one subscriber, in the order of
/// [`Catalogue::declared`], with the catalogue they follow.
#[derive(Debug, Clone, PartialEq)]
pub struct Attrs {
    catalogue: Arc<Catalogue>,
    values: Vec<Value>,
}

impl Attrs {
    /// Every declared attribute empty.
    pub fn new(catalogue: Arc<Catalogue>) -> Attrs {
        let n = catalogue.declared().count();
        Attrs {
            catalogue,
            values: vec![Value::Null; n],
        }
    }

    /// Values read in declared order; `None` when their number does not match.
    pub fn from_values(catalogue: Arc<Catalogue>, values: Vec<Value>) -> Option<Attrs> {
        (values.len() == catalogue.declared().count()).then_some(Attrs { catalogue, values })
    }

    pub fn catalogue(&self) -> &Arc<Catalogue> {
        &self.catalogue
    }

    /// Values in declared order.
    pub fn values(&self) -> &[Value] {
        &self.values
    }

    /// The value of a declared attribute; `None` when the catalogue has no such attribute.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.catalogue
            .declared_index(name)
            .and_then(|i| self.values.get(i))
    }

    /// Sets a declared attribute; returns false (and changes nothing) when there is none.
    pub fn set(&mut self, name: &str, value: impl Into<Value>) -> bool {
        match self.catalogue.declared_index(name) {
            Some(i) => {
                self.values[i] = value.into();
                true
            }
            None => false,
        }
    }

    /// Sets by position in [`Catalogue::declared`] (importers that resolved names once).
    pub fn set_at(&mut self, index: usize, value: Value) {
        if let Some(slot) = self.values.get_mut(index) {
            *slot = value;
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(v)
    }
}

impl From<i32> for Value {
    fn from(v: i32) -> Value {
        Value::Int(i64::from(v))
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Dec(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Bool(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(v.to_owned())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(v)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

/// The catalogue shipped with campaignd: `workflows/attributes.yaml` of this repository.
/// `spec::catalogue` parses the same text with located errors; a test there holds that both
/// read it alike.
pub const SHIPPED_SOURCE: &str = include_str!("../../../workflows/attributes.yaml");

/// The shipped catalogue, parsed once. Used wherever a workflows folder has no
/// `attributes.yaml`, and by a store until it is told another.
pub fn shipped() -> Arc<Catalogue> {
    #[derive(Deserialize)]
    struct File {
        attributes: Vec<Attribute>,
        #[serde(default)]
        history: Option<HistoryFile>,
        #[serde(default)]
        events: Option<EventsFile>,
        #[serde(default)]
        derived: Vec<DerivedFile>,
    }
    #[derive(Deserialize)]
    struct HistoryFile {
        keep_months: Option<u32>,
        keep_days: Option<u32>,
        measures: Vec<MeasureFile>,
    }
    #[derive(Deserialize)]
    struct EventsFile {
        keep_days: Option<u32>,
    }
    #[derive(Deserialize)]
    struct MeasureFile {
        name: String,
        #[serde(rename = "type")]
        kind: String,
        period: Option<String>,
        unit: Option<String>,
        #[serde(default)]
        description: String,
        min: Option<f64>,
    }
    #[derive(Deserialize)]
    struct DerivedFile {
        #[serde(flatten)]
        attr: Attribute,
        expr: String,
    }
    static SHIPPED: OnceLock<Arc<Catalogue>> = OnceLock::new();
    SHIPPED
        .get_or_init(|| {
            let file: File = serde_saphyr::from_str(SHIPPED_SOURCE)
                .expect("the shipped catalogue parses (tested)");
            let defaults = Retention::default();
            let (measures, retention) = match file.history {
                None => (Vec::new(), defaults),
                Some(h) => (
                    h.measures
                        .into_iter()
                        .map(|m| Measure {
                            name: m.name,
                            integer: m.kind == "integer",
                            period: m
                                .period
                                .as_deref()
                                .map_or(Period::Month, |p| Period::parse(p).expect("tested")),
                            unit: m.unit,
                            description: m.description,
                            min: m.min,
                        })
                        .collect(),
                    Retention {
                        months: h.keep_months.unwrap_or(defaults.months),
                        days: h.keep_days.unwrap_or(defaults.days),
                        event_days: defaults.event_days,
                    },
                ),
            };
            let retention = Retention {
                event_days: file
                    .events
                    .and_then(|e| e.keep_days)
                    .unwrap_or(retention.event_days),
                ..retention
            };
            let cat = Catalogue::new(file.attributes)
                .and_then(|c| c.with_history(measures, retention))
                .and_then(|c| {
                    c.with_derived(file.derived.into_iter().map(|d| (d.attr, d.expr)).collect())
                })
                .expect("the shipped catalogue is valid (tested)");
            Arc::new(cat)
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(name: &str, kind: Kind) -> Attribute {
        Attribute {
            name: name.into(),
            kind,
            unit: None,
            description: String::new(),
            indexed: false,
            required: false,
            core: false,
            min: None,
            max: None,
            format: None,
            agents: false,
        }
    }

    #[test]
    fn names_are_portable_column_names() {
        assert!(is_attribute_name("arpu_3m"));
        assert!(!is_attribute_name("3m_arpu"));
        assert!(!is_attribute_name("Arpu"));
        assert!(!is_attribute_name("arpu-3m"));
        assert!(!is_attribute_name(""));
        assert!(!is_attribute_name(&"a".repeat(MAX_NAME_LEN + 1)));
    }

    #[test]
    fn core_names_and_repeats_are_refused() {
        assert_eq!(
            Catalogue::new(vec![attr("opt_out", Kind::Bool)]),
            Err(CatalogueError::Reserved("opt_out".into()))
        );
        assert_eq!(
            Catalogue::new(vec![attr("id", Kind::Integer)]),
            Err(CatalogueError::Reserved("id".into()))
        );
        assert_eq!(
            Catalogue::new(vec![attr("age", Kind::Integer), attr("age", Kind::Text)]),
            Err(CatalogueError::Duplicate("age".into()))
        );
        assert_eq!(
            Catalogue::new(vec![attr("tier", Kind::Enum { values: vec![] })]),
            Err(CatalogueError::EmptyEnum("tier".into()))
        );
    }

    #[test]
    fn values_are_found_by_name_in_declared_order() {
        let cat = Catalogue::new(vec![
            attr("age", Kind::Integer),
            attr("arpu", Kind::Decimal),
        ])
        .unwrap();
        assert_eq!(cat.declared().count(), 2);
        assert!(cat.get("msisdn").unwrap().core);
        let mut a = Attrs::new(Arc::new(cat));
        assert!(a.set("arpu", 12.345));
        assert!(!a.set("msisdn", "1"));
        assert_eq!(a.get("arpu").unwrap().to_text(), "12.35");
        assert_eq!(a.get("age"), Some(&Value::Null));
        assert_eq!(a.get("nope"), None);
    }

    #[test]
    fn the_shipped_catalogue_parses() {
        let cat = shipped();
        assert_eq!(cat.declared().count(), 17);
        assert!(cat.get("arpu_3m").unwrap().required);
        assert!(cat.get("value_tier").is_none(), "derived, not stored");
        assert_eq!(
            cat.field("value_tier").unwrap().kind.values(),
            ["diamond", "gold", "silver", "ordinary"]
        );
        assert_eq!(cat.measures_of(Period::Day).count(), 2);
        assert!(cat.derived_all().len() >= 10);
    }

    #[test]
    fn derived_attributes_are_checked_against_what_comes_before() {
        let cat = Catalogue::new(vec![attr("arpu", Kind::Decimal)])
            .unwrap()
            .with_history(
                vec![Measure {
                    name: "spend".into(),
                    integer: false,
                    period: Period::Month,
                    unit: None,
                    description: String::new(),
                    min: None,
                }],
                Retention::default(),
            )
            .unwrap();
        let tier = Kind::Enum {
            values: vec!["high".into(), "low".into()],
        };
        let ok = cat.clone().with_derived(vec![
            (
                attr("tier", tier.clone()),
                "case when arpu > 100 then 'high' else 'low' end".into(),
            ),
            (attr("is_high", Kind::Bool), "tier == 'high'".into()),
            (
                attr("change", Kind::Decimal),
                "mean(spend, months: 1) / mean(spend, months: 3, skip: 1) - 1".into(),
            ),
        ]);
        let ok = ok.unwrap();
        assert_eq!(ok.field("is_high").unwrap().kind, Kind::Bool);
        assert!(
            ok.get("is_high").is_none(),
            "derived attributes are not columns"
        );
        let bad = |name: &str, kind: Kind, src: &str| {
            cat.clone()
                .with_derived(vec![(attr(name, kind), src.into())])
                .unwrap_err()
                .to_string()
        };
        assert!(
            bad(
                "t",
                tier.clone(),
                "case when arpu > 1 then 'mid' else 'low' end"
            )
            .contains("'mid' is not one of")
        );
        assert!(bad("t", Kind::Integer, "arpu / 2").contains("is decimal, but"));
        assert!(bad("t", Kind::Bool, "later").contains("unknown attribute `later`"));
        assert!(bad("t", Kind::Decimal, "mean(spend, days: 3)").contains("measured per month"));
        assert!(bad("t", Kind::Decimal, "mean(nope, months: 3)").contains("unknown measure"));
        assert!(bad("t", Kind::Decimal, "mean(spend, months: 30)").contains("history keeps 24"));
        assert!(bad("arpu", Kind::Decimal, "1.0").contains("declared twice"));
    }
}
