//! Turning text (a CSV cell, or a constant written in the mapping file) into a field value,
//! with the checks `spec::fields` and DOMAIN.md imply for each field.

/// What a text field accepts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TextRule {
    Free,
    /// An enumerated field; the values come from `spec::fields`.
    OneOf(&'static [&'static str]),
    /// A contact time slot, `HH:MM-HH:MM`.
    Slot,
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

/// The inclusive range a number must fall in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Range<T> {
    pub(crate) min: T,
    pub(crate) max: T,
}

/// A field value type: how it is parsed from text and which values are allowed.
pub(crate) trait FieldValue: Sized + Clone + std::fmt::Debug {
    type Rule: Copy + std::fmt::Debug;

    /// Parses trimmed, non-empty text. The error says what was expected and what was found.
    fn parse(text: &str, rule: Self::Rule) -> Result<Self, String>;

    /// Range checks that must run after scaling, so they are kept apart from `parse`.
    fn check(&self, _rule: Self::Rule) -> Result<(), String> {
        Ok(())
    }

    fn scaled(self, _factor: f64) -> Self {
        self
    }

    /// Whether `round:` applies (whole-number fields).
    const WHOLE: bool = false;

    /// Like `parse`, for a field with `round:`; only whole-number fields differ.
    fn parse_rounded(text: &str, rule: Self::Rule, _round: Round) -> Result<Self, String> {
        Self::parse(text, rule)
    }
}

/// The longest free-text cell (name, region, campus, ...), in characters: they end up in
/// messages, call scripts and reports, where a 10 kB "name" is a mistake or an attack.
pub(crate) const MAX_TEXT_CHARS: usize = 200;

impl FieldValue for String {
    type Rule = TextRule;

    fn parse(text: &str, rule: TextRule) -> Result<Self, String> {
        // Control characters (line breaks inside quotes, escapes, NUL) would break the SMS
        // text, the agents' task list and log lines the value is written to.
        if let Some(c) = text.chars().find(|c| c.is_control()) {
            return Err(format!(
                "expected text without control characters, found {:?} in {text:?}",
                c
            ));
        }
        let chars = text.chars().count();
        if chars > MAX_TEXT_CHARS {
            return Err(format!(
                "expected at most {MAX_TEXT_CHARS} characters, found {chars}"
            ));
        }
        let expected = match rule {
            TextRule::Free => return Ok(text.to_owned()),
            TextRule::OneOf(values) if values.contains(&text) => return Ok(text.to_owned()),
            TextRule::OneOf(values) => format!("one of {}", values.join(", ")),
            TextRule::Slot if is_slot(text) => return Ok(text.to_owned()),
            TextRule::Slot => "a time slot HH:MM-HH:MM such as 18:00-21:00".to_owned(),
        };
        Err(format!("expected {expected}, found {text:?}"))
    }
}

fn is_slot(text: &str) -> bool {
    fn minutes(hhmm: &str) -> Option<u32> {
        let (h, m) = hhmm.split_once(':')?;
        if h.len() != 2 || m.len() != 2 {
            return None;
        }
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        // 24:00 is allowed as the end of a slot that runs to midnight.
        (h < 24 && m < 60 || h == 24 && m == 0).then_some(h * 60 + m)
    }
    let Some((start, end)) = text.split_once('-') else {
        return false;
    };
    matches!((minutes(start), minutes(end)), (Some(s), Some(e)) if s < e)
}

impl FieldValue for i32 {
    type Rule = Range<i32>;

    const WHOLE: bool = true;

    fn parse_rounded(text: &str, range: Range<i32>, round: Round) -> Result<Self, String> {
        if let Ok(v) = i32::parse(text, range) {
            return Ok(v);
        }
        let Ok(x) = text.parse::<f64>() else {
            return i32::parse(text, range);
        };
        let whole = match round {
            _ if !x.is_finite() => return i32::parse(text, range),
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
        if whole >= f64::from(range.min) && whole <= f64::from(range.max) {
            Ok(whole as i32)
        } else {
            Err(format!(
                "expected a whole number from {} to {}, found {text:?}",
                range.min, range.max
            ))
        }
    }

    fn parse(text: &str, range: Range<i32>) -> Result<Self, String> {
        match text.parse::<i32>() {
            Ok(v) if (range.min..=range.max).contains(&v) => Ok(v),
            _ => Err(format!(
                "expected a whole number from {} to {}, found {text:?}",
                range.min, range.max
            )),
        }
    }
}

impl FieldValue for f64 {
    type Rule = Range<f64>;

    fn parse(text: &str, _range: Range<f64>) -> Result<Self, String> {
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            Ok(_) => Err(format!("expected a finite decimal number, found {text:?}")),
            Err(_) => Err(format!("expected a decimal number, found {text:?}")),
        }
    }

    fn check(&self, range: Range<f64>) -> Result<(), String> {
        if self.is_finite() && (range.min..=range.max).contains(self) {
            Ok(())
        } else {
            Err(format!(
                "expected a number from {} to {}, found {self}",
                range.min, range.max
            ))
        }
    }

    fn scaled(self, factor: f64) -> Self {
        // Rounding drops binary noise such as 29.85 × 7 = 208.95000000000002.
        (self * factor * 1e6).round() / 1e6
    }
}

impl FieldValue for bool {
    type Rule = ();

    fn parse(text: &str, _rule: ()) -> Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Ok(true),
            "false" | "no" | "0" => Ok(false),
            _ => Err(format!(
                "expected true or false (or yes/no, 1/0), found {text:?}"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn numbers_reject_non_finite_and_junk() {
        let any = Range {
            min: f64::MIN,
            max: f64::MAX,
        };
        assert_eq!(f64::parse("29.85", any), Ok(29.85));
        assert!(f64::parse("NaN", any).unwrap_err().contains("finite"));
        assert!(f64::parse("inf", any).unwrap_err().contains("finite"));
        assert_eq!(
            f64::parse("abc", any).unwrap_err(),
            r#"expected a decimal number, found "abc""#
        );
        assert_eq!(29.85f64.scaled(7.0), 208.95);
    }

    #[test]
    fn integers_are_whole_and_in_range() {
        let age = Range { min: 0, max: 130 };
        assert_eq!(i32::parse("40", age), Ok(40));
        assert!(i32::parse("40.5", age).is_err());
        assert!(i32::parse("131", age).is_err());
        assert!(i32::parse("-1", age).is_err());
    }

    #[test]
    fn enums() {
        let e = String::parse("F", TextRule::OneOf(&["female", "male"])).unwrap_err();
        assert_eq!(e, r#"expected one of female, male, found "F""#);
    }

    #[test]
    fn text_has_no_control_characters_and_a_length_limit() {
        assert!(String::parse("Zhang Wei 张伟", TextRule::Free).is_ok());
        for bad in [
            "a\nb",
            "a\rb",
            "a\tb",
            "a\u{0}b",
            "a\u{1b}[31mb",
            "a\u{85}b",
        ] {
            let e = String::parse(bad, TextRule::Free).unwrap_err();
            assert!(e.contains("control characters"), "{bad:?}: {e}");
        }
        assert!(String::parse(&"名".repeat(MAX_TEXT_CHARS), TextRule::Free).is_ok());
        let e = String::parse(&"x".repeat(MAX_TEXT_CHARS + 1), TextRule::Free).unwrap_err();
        assert_eq!(e, "expected at most 200 characters, found 201");
    }

    #[test]
    fn fractions_in_whole_number_fields_round_as_declared() {
        let count = Range { min: 0, max: 100 };
        let r = |t, m| i32::parse_rounded(t, count, m);
        assert_eq!(r("2.5", Round::Nearest), Ok(3));
        assert_eq!(r("2.4", Round::Nearest), Ok(2));
        assert_eq!(r("2.9", Round::Floor), Ok(2));
        assert_eq!(r("2.1", Round::Ceil), Ok(3));
        assert_eq!(r("7", Round::Refuse), Ok(7));
        assert_eq!(r("7.0", Round::Refuse), Ok(7));
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
    }

    #[test]
    fn booleans() {
        assert_eq!(bool::parse("Yes", ()), Ok(true));
        assert_eq!(bool::parse("0", ()), Ok(false));
        assert!(bool::parse("maybe", ()).is_err());
    }
}
