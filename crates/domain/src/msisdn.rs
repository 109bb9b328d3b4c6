//! Phone numbers (MSISDNs).
//!
//! **The rule** (one for CSV import, HTTP API and CLI): an optional leading `+`, then 5 to 15
//! ASCII digits (E.164 allows at most 15), nothing else: no spaces, dashes or brackets, because
//! an export that formats numbers is better fixed once in the mapping than guessed at here.
//! A Chinese number in international form (`+86` or `86` followed by 11 digits) is stored in
//! the national form the base uses (`13800138000`), so a reply from `+8613800138000` finds the
//! subscriber imported as `13800138000`.
//!
//! **Masking.** `Display` and `Debug` show the masked form (`138****8000`); the digits are
//! reachable only through [`Msisdn::expose`], which the few places that must send or store the
//! real number call by name (the gateway request, the database). So a number formatted into a
//! log line, an error message or CLI output cannot be shown in full by accident.

use std::fmt;

/// A checked phone number. See the module documentation for the rule and the masking.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Msisdn(String);

/// Why a text is not a phone number. Deliberately carries no part of the input: the message
/// ends up in HTTP answers and logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "expected a phone number: an optional leading + and 5 to 15 digits, nothing else (found {found})"
)]
pub struct MsisdnError {
    /// What was found, described without the digits: `"12 characters with a '-'"`.
    found: String,
}

/// Fewest and most digits of a number (E.164: at most 15; short codes have 5).
const MIN_DIGITS: usize = 5;
const MAX_DIGITS: usize = 15;

impl Msisdn {
    /// Parses `raw` as it is (callers trim cells before): see the module documentation.
    pub fn parse(raw: &str) -> Result<Msisdn, MsisdnError> {
        let digits = raw.strip_prefix('+').unwrap_or(raw);
        if let Some(bad) = digits.chars().find(|c| !c.is_ascii_digit()) {
            let found = if bad.is_control() {
                format!(
                    "{} characters with a control character",
                    raw.chars().count()
                )
            } else {
                format!("{} characters with {bad:?}", raw.chars().count())
            };
            return Err(MsisdnError { found });
        }
        if !(MIN_DIGITS..=MAX_DIGITS).contains(&digits.len()) {
            return Err(MsisdnError {
                found: format!("{} digits", digits.len()),
            });
        }
        let national = raw
            .strip_prefix("+86")
            .or_else(|| raw.strip_prefix("86"))
            .filter(|rest| rest.len() == 11);
        Ok(Msisdn(national.unwrap_or(raw).to_owned()))
    }

    /// The full number. Only for what must carry it: the gateway request and the database.
    /// Never format it into a log line or a message; format the `Msisdn` itself.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The full number, owned (for a database row).
    pub fn into_exposed(self) -> String {
        self.0
    }

    /// The masked form, as `Display` writes it.
    pub fn masked(&self) -> String {
        mask(&self.0)
    }
}

impl fmt::Display for Msisdn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&mask(&self.0))
    }
}

impl fmt::Debug for Msisdn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Msisdn({})", mask(&self.0))
    }
}

impl std::str::FromStr for Msisdn {
    type Err = MsisdnError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Msisdn::parse(s)
    }
}

/// Masks any text that may be a phone number, valid or not (an unknown sender, a bad cell):
/// at least four characters (and at least half of anything shorter than 11) are hidden behind
/// a fixed `****`, which also hides the length.
///
/// 11 characters or more keep the first 3 and the last 4 (`13800138000` → `138****8000`,
/// `+8613800138000` → `+86****8000`); 8 to 10 keep 2 and 2; shorter ones keep nothing.
pub fn mask(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let n = chars.len();
    let (head, tail) = match n {
        0..=7 => (0, 0),
        8..=10 => (2, 2),
        _ => (3, 4),
    };
    let mut out = String::with_capacity(head + tail + 4);
    out.extend(&chars[..head]);
    out.push_str("****");
    out.extend(&chars[n - tail..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_accepts_digits_with_an_optional_plus() {
        for (raw, stored) in [
            ("13800138000", "13800138000"),
            ("+8613800138000", "13800138000"),
            ("8613800138000", "13800138000"),
            // 11 digits that start with 86 are a national number already.
            ("86123456789", "86123456789"),
            ("+447911123456", "+447911123456"),
            ("10086", "10086"),
            ("123456789012345", "123456789012345"),
            ("+123456789012345", "+123456789012345"),
        ] {
            assert_eq!(Msisdn::parse(raw).unwrap().expose(), stored, "{raw}");
        }
        for bad in [
            "",
            "+",
            "1234",
            "1234567890123456",
            "138-0013-8000",
            "138 0013 8000",
            "1380013800a",
            "++13800138000",
            "13800138000+",
            " 13800138000",
            "１３８００１３８０００",
        ] {
            assert!(Msisdn::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn errors_do_not_carry_the_input() {
        let e = Msisdn::parse("138-0013-8000").unwrap_err().to_string();
        assert!(!e.contains("0013") && !e.contains("8000"), "{e}");
        assert!(e.contains("'-'"), "{e}");
        let e = Msisdn::parse("1380013800012345678")
            .unwrap_err()
            .to_string();
        assert!(e.contains("19 digits") && !e.contains("138"), "{e}");
    }

    #[test]
    fn display_and_debug_are_masked_and_expose_is_not() {
        let m = Msisdn::parse("13800138000").unwrap();
        assert_eq!(m.to_string(), "138****8000");
        assert_eq!(format!("{m:?}"), "Msisdn(138****8000)");
        assert_eq!(format!("{:?}", Some(&m)), "Some(Msisdn(138****8000))");
        assert_eq!(m.expose(), "13800138000");
        assert_eq!(m.clone().into_exposed(), "13800138000");
    }

    #[test]
    fn mask_hides_four_characters_and_half_of_short_numbers() {
        assert_eq!(mask("13800138000"), "138****8000");
        assert_eq!(mask("+8613800138000"), "+86****8000");
        assert_eq!(mask("12345678"), "12****78");
        assert_eq!(mask("10086"), "****");
        assert_eq!(mask("1234"), "****");
        assert_eq!(mask(""), "****");
        // Multi-byte input must not panic on a char boundary.
        assert_eq!(mask("１３８００１３８０００"), "１３８****８０００");
        for n in 0..40 {
            let s: String = "9".repeat(n);
            let shown = mask(&s).chars().filter(|c| *c == '9').count();
            assert!(n - shown >= n.min(4), "{n}: {}", mask(&s));
            assert!(n >= 11 || shown * 2 <= n, "{n}: {}", mask(&s));
        }
    }
}
