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
}

/// A form a text attribute's values must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextFormat {
    /// A daily time slot, `HH:MM-HH:MM` (may wrap midnight, e.g. `21:00-08:00`).
    TimeSlot,
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
        }
    }
}

impl std::error::Error for CatalogueError {}

/// The attributes a subscriber has: the core first, then the declared ones in file order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Catalogue {
    attrs: Vec<Attribute>,
}

impl Default for Catalogue {
    fn default() -> Self {
        Catalogue::core_only()
    }
}

impl Catalogue {
    /// The built-in attributes alone.
    pub fn core_only() -> Catalogue {
        Catalogue {
            attrs: core_attributes(),
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
        Ok(Catalogue { attrs })
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
    }
    static SHIPPED: OnceLock<Arc<Catalogue>> = OnceLock::new();
    SHIPPED
        .get_or_init(|| {
            let file: File = serde_saphyr::from_str(SHIPPED_SOURCE)
                .expect("the shipped catalogue parses (tested)");
            Arc::new(
                Catalogue::new(file.attributes).expect("the shipped catalogue is valid (tested)"),
            )
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
        assert!(cat.get("value_tier").unwrap().required);
    }

    #[test]
    fn a_catalogue_round_trips_through_json() {
        let cat = Catalogue::new(vec![attr(
            "tier",
            Kind::Enum {
                values: vec!["gold".into()],
            },
        )])
        .unwrap();
        let back: Catalogue = serde_json::from_str(&serde_json::to_string(&cat).unwrap()).unwrap();
        assert_eq!(back, cat);
    }
}
