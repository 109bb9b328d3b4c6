//! Turning text (a CSV cell, or a constant written in the mapping file) into an attribute
//! value, with the checks the attribute's catalogue entry implies: its kind, enum values,
//! `min`/`max` and text `format`.

use catalogue::{Attribute, Kind, TextFormat, Value};
use chrono::{DateTime, NaiveDate, Utc};

/// What an attribute accepts, resolved once from its catalogue entry.
#[derive(Debug, Clone)]
pub(crate) enum Rule {
    /// Free text, or text of a fixed form.
    Text(Option<TextFormat>),
    /// One of the catalogue's values.
    Enum(Vec<String>),
    /// A whole number in the inclusive range (the attribute's `min`/`max`, if any).
    Integer {
        min: Option<i64>,
        max: Option<i64>,
    },
    /// A finite number in the inclusive range.
    Decimal {
        min: Option<f64>,
        max: Option<f64>,
    },
    Bool,
    /// `YYYY-MM-DD`.
    Date,
    /// `YYYY-MM-DDTHH:MM:SSZ`; cells may be any RFC 3339 instant.
    Timestamp,
}

/// What to do with a fraction in a whole-number field (`round:` in the mapping).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Round {
    /// To the nearest whole number, halves away from zero (2.5 → 3, -2.5 → -3).
    Nearest,
    Floor,
    Ceil,
    /// A fraction is an error (the default, also without `round:`).
    Refuse,
}

impl Round {
    pub(crate) fn parse(text: &str) -> Option<Round> {
        Some(match text {
            "nearest" => Round::Nearest,
            "floor" => Round::Floor,
            "ceil" => Round::Ceil,
            "refuse" => Round::Refuse,
            _ => return None,
        })
    }
}

/// The longest free-text cell (name, region, campus, ...), in characters: they end up in
/// messages, call scripts and reports, where a 10 kB "name" is a mistake or an attack.
pub(crate) const MAX_TEXT_CHARS: usize = 200;

/// The stored form of a date and of a timestamp.
const DATE_FORM: &str = "%Y-%m-%d";
const TIMESTAMP_FORM: &str = "%Y-%m-%dT%H:%M:%SZ";

impl Rule {
    pub(crate) fn of(a: &Attribute) -> Rule {
        match &a.kind {
            Kind::Text => Rule::Text(a.format),
            Kind::Enum { values } => Rule::Enum(values.clone()),
            // An integer range is the whole numbers inside the declared bounds.
            Kind::Integer => Rule::Integer {
                min: a.min.map(|m| m.ceil() as i64),
                max: a.max.map(|m| m.floor() as i64),
            },
            Kind::Decimal => Rule::Decimal {
                min: a.min,
                max: a.max,
            },
            Kind::Bool => Rule::Bool,
            Kind::Date => Rule::Date,
            Kind::Timestamp => Rule::Timestamp,
        }
    }

    /// Whether `round:` applies.
    pub(crate) fn is_whole(&self) -> bool {
        matches!(self, Rule::Integer { .. })
    }

    /// Whether `scale:` applies.
    pub(crate) fn is_decimal(&self) -> bool {
        matches!(self, Rule::Decimal { .. })
    }

    /// Parses trimmed, non-empty text. The error says what was expected and what was found.
    /// Decimal ranges are checked by [`Rule::check`], after any scaling.
    pub(crate) fn parse(&self, text: &str) -> Result<Value, String> {
        match self {
            Rule::Text(format) => {
                check_text(text)?;
                match format {
                    None => Ok(Value::Text(text.to_owned())),
                    Some(TextFormat::TimeSlot) if is_slot(text) => Ok(Value::Text(text.to_owned())),
                    Some(TextFormat::TimeSlot) => Err(format!(
                        "expected a time slot HH:MM-HH:MM such as 18:00-21:00, found {text:?}"
                    )),
                    Some(TextFormat::Email) => match catalogue::email_problem(text) {
                        None => Ok(Value::Text(text.to_owned())),
                        Some(why) => Err(format!(
                            "expected an e-mail address such as li.na@example.com, found {text:?}: {why}"
                        )),
                    },
                }
            }
            Rule::Enum(values) => {
                check_text(text)?;
                if values.iter().any(|v| v == text) {
                    Ok(Value::Text(text.to_owned()))
                } else {
                    Err(format!(
                        "expected one of {}, found {text:?}",
                        values.join(", ")
                    ))
                }
            }
            Rule::Integer { min, max } => match text.parse::<i64>() {
                Ok(v) if min.is_none_or(|m| v >= m) && max.is_none_or(|m| v <= m) => {
                    Ok(Value::Int(v))
                }
                _ => Err(format!(
                    "expected a whole number{}, found {text:?}",
                    range_text(*min, *max)
                )),
            },
            Rule::Decimal { .. } => match text.parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(Value::Dec(v)),
                Ok(_) => Err(format!("expected a finite decimal number, found {text:?}")),
                Err(_) => Err(format!("expected a decimal number, found {text:?}")),
            },
            Rule::Bool => match text.to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => Ok(Value::Bool(true)),
                "false" | "no" | "0" => Ok(Value::Bool(false)),
                _ => Err(format!(
                    "expected true or false (or yes/no, 1/0), found {text:?}"
                )),
            },
            Rule::Date => parse_date(text, None),
            Rule::Timestamp => DateTime::parse_from_rfc3339(text)
                .map(|t| Value::Text(t.with_timezone(&Utc).format(TIMESTAMP_FORM).to_string()))
                .map_err(|_| {
                    format!(
                        "expected a timestamp such as 2026-09-01T08:00:00Z or 2026-09-01T16:00:00+08:00 (RFC 3339, with its offset), found {text:?}"
                    )
                }),
        }
    }

    /// Range checks that must run after scaling, so they are kept apart from `parse`.
    pub(crate) fn check(&self, value: &Value) -> Result<(), String> {
        match (self, value) {
            (Rule::Decimal { min, max }, Value::Dec(v)) => {
                let inside =
                    v.is_finite() && min.is_none_or(|m| *v >= m) && max.is_none_or(|m| *v <= m);
                if inside {
                    Ok(())
                } else if min.is_none() && max.is_none() {
                    Err(format!("expected a finite number, found {v}"))
                } else {
                    Err(format!(
                        "expected a number{}, found {v}",
                        range_text(*min, *max)
                    ))
                }
            }
            _ => Ok(()),
        }
    }

    /// Like `parse`, for an integer attribute with `round:`.
    pub(crate) fn parse_rounded(&self, text: &str, round: Round) -> Result<Value, String> {
        let Rule::Integer { min, max } = *self else {
            return self.parse(text);
        };
        if let Ok(v) = self.parse(text) {
            return Ok(v);
        }
        let Ok(x) = text.parse::<f64>() else {
            return self.parse(text);
        };
        let whole = match round {
            _ if !x.is_finite() => return self.parse(text),
            _ if x.fract() == 0.0 => x,
            Round::Nearest => x.round(),
            Round::Floor => x.floor(),
            Round::Ceil => x.ceil(),
            Round::Refuse => {
                return Err(format!(
                    "expected a whole number, found {text:?} (`round: nearest`, `floor` or `ceil` in the mapping accepts fractions)"
                ));
            }
        };
        // i64 bounds as f64 round outward by at most one unit; the cast saturates.
        let low = min.map_or(i64::MIN as f64, |m| m as f64);
        let high = max.map_or(i64::MAX as f64, |m| m as f64);
        if whole >= low && whole <= high {
            Ok(Value::Int(whole as i64))
        } else {
            Err(format!(
                "expected a whole number{}, found {text:?}",
                range_text(min, max)
            ))
        }
    }
}

/// A cell of a date attribute read with the mapping's `date_format` (chrono's strftime), or
/// in the stored form `YYYY-MM-DD` without one.
pub(crate) fn parse_date(text: &str, format: Option<&str>) -> Result<Value, String> {
    let parsed = match format {
        None => (text.len() == 10)
            .then(|| NaiveDate::parse_from_str(text, DATE_FORM).ok())
            .flatten(),
        Some(f) => NaiveDate::parse_from_str(text, f).ok(),
    };
    match (parsed, format) {
        (Some(d), _) => Ok(Value::Text(d.format(DATE_FORM).to_string())),
        (None, None) => Err(format!(
            "expected a date YYYY-MM-DD such as 2026-09-01, found {text:?} (`date_format` in the mapping reads other forms)"
        )),
        (None, Some(f)) => Err(format!(
            "expected a date in the form {f:?} (the mapping's `date_format`), found {text:?}"
        )),
    }
}

/// Whether `format` (chrono strftime) can read a whole date: formatting a day with it and
/// reading the text back gives that day.
pub(crate) fn date_format_works(format: &str) -> bool {
    use std::fmt::Write;
    let day = NaiveDate::from_ymd_opt(2001, 2, 3).expect("a real day");
    let mut text = String::new();
    // An invalid specifier makes formatting fail (to_string would panic).
    if write!(text, "{}", day.format(format)).is_err() {
        return false;
    }
    NaiveDate::parse_from_str(&text, format).ok() == Some(day)
}

fn range_text<T: std::fmt::Display>(min: Option<T>, max: Option<T>) -> String {
    match (min, max) {
        (Some(a), Some(b)) => format!(" from {a} to {b}"),
        (Some(a), None) => format!(" of at least {a}"),
        (None, Some(b)) => format!(" of at most {b}"),
        (None, None) => String::new(),
    }
}

/// Control characters (line breaks inside quotes, escapes, NUL) would break the SMS text,
/// the agents' task list and log lines the value is written to.
fn check_text(text: &str) -> Result<(), String> {
    if let Some(c) = text.chars().find(|c| c.is_control()) {
        return Err(format!(
            "expected text without control characters, found {c:?} in {text:?}"
        ));
    }
    let chars = text.chars().count();
    if chars > MAX_TEXT_CHARS {
        return Err(format!(
            "expected at most {MAX_TEXT_CHARS} characters, found {chars}"
        ));
    }
    Ok(())
}

/// Multiplies a decimal by the mapping's `scale`.
pub(crate) fn scaled(value: Value, factor: f64) -> Value {
    match value {
        // Rounding drops binary noise such as 29.85 × 7 = 208.95000000000002.
        Value::Dec(v) => Value::Dec((v * factor * 1e6).round() / 1e6),
        other => other,
    }
}

pub(crate) fn is_slot(text: &str) -> bool {
    // One rule with the planner, which times a preferred channel's contact by it.
    domain::TimeSlot::parse(text).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANY_DEC: Rule = Rule::Decimal {
        min: None,
        max: None,
    };
    const FREE: Rule = Rule::Text(None);

    #[test]
    fn slots() {
        for ok in ["09:00-12:00", "18:00-21:00", "00:00-24:00"] {
            assert!(is_slot(ok), "{ok}");
        }
        for bad in [
            "9:00-12:00",
            "12:00-09:00",
            "12:00",
            "25:00-26:00",
            "09:00-12:60",
            "",
        ] {
            assert!(!is_slot(bad), "{bad}");
        }
        let e = Rule::Text(Some(TextFormat::TimeSlot))
            .parse("morning")
            .unwrap_err();
        assert!(e.starts_with("expected a time slot HH:MM-HH:MM"), "{e}");
    }

    #[test]
    fn email_addresses() {
        let rule = Rule::Text(Some(TextFormat::Email));
        for ok in [
            "li.na@example.com",
            "wang_wei+offers@mail.example.cn",
            "a@b.cn",
        ] {
            assert_eq!(rule.parse(ok), Ok(Value::Text(ok.to_owned())), "{ok}");
        }
        for bad in [
            "li.na",
            "li na@example.com",
            "li.na@example",
            "@example.com",
            "li..na@example.com",
            "li.na@-example.com",
            "li.na@exa_mple.com",
            "<li.na@example.com>",
            "a@b@example.com",
        ] {
            let e = rule.parse(bad).unwrap_err();
            assert!(e.starts_with("expected an e-mail address"), "{bad}: {e}");
        }
    }

    #[test]
    fn numbers_reject_non_finite_and_junk() {
        assert_eq!(ANY_DEC.parse("29.85"), Ok(Value::Dec(29.85)));
        assert!(ANY_DEC.parse("NaN").unwrap_err().contains("finite"));
        assert!(ANY_DEC.parse("inf").unwrap_err().contains("finite"));
        assert_eq!(
            ANY_DEC.parse("abc").unwrap_err(),
            r#"expected a decimal number, found "abc""#
        );
        assert_eq!(scaled(Value::Dec(29.85), 7.0), Value::Dec(208.95));
        assert!(ANY_DEC.check(&Value::Dec(f64::INFINITY)).is_err());
        let unit = Rule::Decimal {
            min: Some(0.0),
            max: Some(1.0),
        };
        assert_eq!(
            unit.check(&Value::Dec(1.5)).unwrap_err(),
            "expected a number from 0 to 1, found 1.5"
        );
        let positive = Rule::Decimal {
            min: Some(0.0),
            max: None,
        };
        assert_eq!(
            positive.check(&Value::Dec(-2.0)).unwrap_err(),
            "expected a number of at least 0, found -2"
        );
    }

    #[test]
    fn integers_are_whole_and_in_range() {
        let age = Rule::Integer {
            min: Some(0),
            max: Some(130),
        };
        assert_eq!(age.parse("40"), Ok(Value::Int(40)));
        assert!(age.parse("40.5").is_err());
        assert_eq!(
            age.parse("131").unwrap_err(),
            r#"expected a whole number from 0 to 130, found "131""#
        );
        assert!(age.parse("-1").is_err());
        let count = Rule::Integer {
            min: Some(0),
            max: None,
        };
        assert_eq!(
            count.parse("-1").unwrap_err(),
            r#"expected a whole number of at least 0, found "-1""#
        );
        let any = Rule::Integer {
            min: None,
            max: None,
        };
        assert_eq!(any.parse("-9000000000"), Ok(Value::Int(-9_000_000_000)));
    }

    #[test]
    fn enums() {
        let e = Rule::Enum(vec!["female".into(), "male".into()])
            .parse("F")
            .unwrap_err();
        assert_eq!(e, r#"expected one of female, male, found "F""#);
    }

    #[test]
    fn text_has_no_control_characters_and_a_length_limit() {
        assert!(FREE.parse("Zhang Wei 张伟").is_ok());
        for bad in [
            "a\nb",
            "a\rb",
            "a\tb",
            "a\u{0}b",
            "a\u{1b}[31mb",
            "a\u{85}b",
        ] {
            let e = FREE.parse(bad).unwrap_err();
            assert!(e.contains("control characters"), "{bad:?}: {e}");
        }
        assert!(FREE.parse(&"名".repeat(MAX_TEXT_CHARS)).is_ok());
        let e = FREE.parse(&"x".repeat(MAX_TEXT_CHARS + 1)).unwrap_err();
        assert_eq!(e, "expected at most 200 characters, found 201");
    }

    #[test]
    fn fractions_in_whole_number_fields_round_as_declared() {
        let count = Rule::Integer {
            min: Some(0),
            max: Some(100),
        };
        let r = |t, m| count.parse_rounded(t, m);
        assert_eq!(r("2.5", Round::Nearest), Ok(Value::Int(3)));
        assert_eq!(r("2.4", Round::Nearest), Ok(Value::Int(2)));
        assert_eq!(r("2.9", Round::Floor), Ok(Value::Int(2)));
        assert_eq!(r("2.1", Round::Ceil), Ok(Value::Int(3)));
        assert_eq!(r("7", Round::Refuse), Ok(Value::Int(7)));
        assert_eq!(r("7.0", Round::Refuse), Ok(Value::Int(7)));
        assert!(
            r("2.5", Round::Refuse)
                .unwrap_err()
                .contains("round: nearest")
        );
        assert!(r("100.4", Round::Nearest).is_ok());
        assert!(r("100.6", Round::Nearest).is_err());
        assert!(r("-0.6", Round::Ceil).is_ok());
        assert!(r("-0.6", Round::Floor).is_err());
        assert!(r("NaN", Round::Nearest).is_err());
        assert!(r("1e300", Round::Nearest).is_err());
        assert!(r("abc", Round::Nearest).is_err());
        let unbounded = Rule::Integer {
            min: None,
            max: None,
        };
        assert!(unbounded.parse_rounded("1e300", Round::Nearest).is_err());
    }

    #[test]
    fn booleans() {
        assert_eq!(Rule::Bool.parse("Yes"), Ok(Value::Bool(true)));
        assert_eq!(Rule::Bool.parse("0"), Ok(Value::Bool(false)));
        assert!(Rule::Bool.parse("maybe").is_err());
    }

    #[test]
    fn dates_are_stored_as_iso_days() {
        assert_eq!(
            Rule::Date.parse("2026-02-28"),
            Ok(Value::Text("2026-02-28".into()))
        );
        for bad in [
            "2026-02-30",
            "2026-2-28",
            "28/02/2026",
            "2026-02-28T00:00:00Z",
        ] {
            assert!(Rule::Date.parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_date("03/02/2001", Some("%d/%m/%Y")),
            Ok(Value::Text("2001-02-03".into()))
        );
        assert!(
            parse_date("2001-02-03", Some("%d/%m/%Y"))
                .unwrap_err()
                .contains("\"%d/%m/%Y\"")
        );
        assert!(date_format_works("%d/%m/%Y"));
        assert!(date_format_works("%Y%m%d"));
        assert!(!date_format_works("%d/%m"), "no year");
        assert!(!date_format_works("%Q"), "not a specifier");
        assert!(!date_format_works("%H:%M"), "a time, not a date");
    }

    #[test]
    fn timestamps_are_stored_in_utc() {
        let t = |s| Rule::Timestamp.parse(s);
        assert_eq!(
            t("2026-09-01T16:30:00+08:00"),
            Ok(Value::Text("2026-09-01T08:30:00Z".into()))
        );
        assert_eq!(
            t("2026-09-01T08:30:00.750Z"),
            Ok(Value::Text("2026-09-01T08:30:00Z".into()))
        );
        assert!(t("2026-09-01T08:30:00").is_err(), "an offset is required");
        assert!(t("2026-09-01").is_err());
    }
}
