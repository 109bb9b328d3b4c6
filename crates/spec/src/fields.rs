//! How the workflow language sees subscriber attributes. Names, types and enum values come
//! from the [`Catalogue`] (`workflows/attributes.yaml` plus the built-in core); this module
//! only maps an attribute's kind to what a filter may compare it with.

pub use catalogue::{Attribute, Catalogue, Kind};

/// The type of a subscriber field, as the filter language sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    Text,
    Integer,
    Number,
    Bool,
    /// Text holding `YYYY-MM-DD`; compared with a quoted date.
    Date,
    /// Text holding `YYYY-MM-DDTHH:MM:SSZ`; compared with a quoted instant in that form.
    Timestamp,
}

/// The filter type of an attribute.
pub fn field_type(a: &Attribute) -> FieldType {
    match a.kind {
        Kind::Integer => FieldType::Integer,
        Kind::Decimal => FieldType::Number,
        Kind::Bool => FieldType::Bool,
        Kind::Date => FieldType::Date,
        Kind::Timestamp => FieldType::Timestamp,
        Kind::Text | Kind::Enum { .. } => FieldType::Text,
    }
}

/// Whether a filter may test the attribute for null.
pub fn nullable(a: &Attribute) -> bool {
    !a.required
}

/// Whether text is a date as stored: `YYYY-MM-DD`, a real calendar day.
pub fn is_date(s: &str) -> bool {
    s.len() == 10 && chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
}

/// Whether text is an instant as stored: `YYYY-MM-DDTHH:MM:SSZ`. One fixed form, so text
/// order is time order on both backends.
pub fn is_timestamp(s: &str) -> bool {
    s.len() == 20 && chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%SZ").is_ok()
}
