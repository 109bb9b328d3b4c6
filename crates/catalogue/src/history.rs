//! Usage history: periodic measures per subscriber (revenue, minutes, data, top-ups, bill
//! queries, ...), declared in the catalogue's `history:` section.
//!
//! Each period length is a table (`usage_month`, `usage_day`) with one row per subscriber and
//! period and one column per measure of that length, like `subscriber` has one column per
//! attribute. A period is a number: months since 0000-01 (`year * 12 + month - 1`) or days
//! since 1970-01-01, so windows are integer ranges on both backends.

use std::fmt;

use serde::Serialize;

/// How long one period of a measure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Month,
    Day,
}

impl Period {
    pub const ALL: [Period; 2] = [Period::Month, Period::Day];

    /// The name operators write (`period: day`) and the window key (`months:`, `days:`).
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Month => "month",
            Period::Day => "day",
        }
    }

    /// The window argument that counts periods of this length.
    pub fn window_key(self) -> &'static str {
        match self {
            Period::Month => "months",
            Period::Day => "days",
        }
    }

    /// The table holding measures of this period length.
    pub fn table(self) -> &'static str {
        match self {
            Period::Month => "usage_month",
            Period::Day => "usage_day",
        }
    }

    pub fn parse(s: &str) -> Option<Period> {
        Period::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// The period number of a calendar date (`year`, `month` 1-12, `day` 1-31).
    pub fn index(self, year: i32, month: u32, day: u32) -> Option<i64> {
        match self {
            Period::Month => (1..=12)
                .contains(&month)
                .then(|| i64::from(year) * 12 + i64::from(month) - 1),
            Period::Day => {
                let date = chrono_free::days_from_civil(year, month, day)?;
                Some(date)
            }
        }
    }

    /// The period containing an instant (Unix milliseconds, UTC).
    pub fn of_millis(self, ms: i64) -> i64 {
        let days = ms.div_euclid(86_400_000);
        match self {
            Period::Day => days,
            Period::Month => {
                let (y, m, _) = chrono_free::civil_from_days(days);
                i64::from(y) * 12 + i64::from(m) - 1
            }
        }
    }

    /// The period as operators write it: `2026-10` for a month, `2026-10-31` for a day.
    pub fn label(self, index: i64) -> String {
        match self {
            Period::Month => {
                format!(
                    "{:04}-{:02}",
                    index.div_euclid(12),
                    index.rem_euclid(12) + 1
                )
            }
            Period::Day => {
                let (y, m, d) = chrono_free::civil_from_days(index);
                format!("{y:04}-{m:02}-{d:02}")
            }
        }
    }

    /// Parses `2026-10` (a month) or `2026-10-31` (a day; for a monthly measure, the month
    /// that contains it).
    pub fn parse_label(self, s: &str) -> Option<i64> {
        let mut parts = s.trim().split('-');
        let year: i32 = parts.next()?.parse().ok()?;
        let month: u32 = parts.next()?.parse().ok()?;
        let day: Option<u32> = match parts.next() {
            Some(d) => Some(d.parse().ok()?),
            None => None,
        };
        if parts.next().is_some() || !(1..=9999).contains(&year) {
            return None;
        }
        match (self, day) {
            (Period::Month, None) => self.index(year, month, 1),
            (_, Some(d)) => {
                // Validate the day even for a month.
                chrono_free::days_from_civil(year, month, d)?;
                self.index(year, month, d)
            }
            (Period::Day, None) => None,
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One declared measure of the usage history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Measure {
    /// Name and column: the rules of attribute names.
    pub name: String,
    /// Whole numbers (counts) or numbers with a fraction.
    pub integer: bool,
    pub period: Period,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    pub description: String,
    /// The smallest value an import accepts (counts: 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
}

/// How long history and events are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Retention {
    /// Monthly periods kept, counted back from the newest loaded.
    pub months: u32,
    /// Daily periods kept, counted back from the newest loaded.
    pub days: u32,
    /// Events kept, in days before now.
    pub event_days: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            months: 24,
            days: 92,
            event_days: 730,
        }
    }
}

impl Retention {
    /// Periods of `period` kept.
    pub fn periods(&self, period: Period) -> u32 {
        match period {
            Period::Month => self.months,
            Period::Day => self.days,
        }
    }
}

/// Calendar arithmetic without a date crate (the catalogue has no dependencies beyond
/// serde): Howard Hinnant's days-from-civil algorithms, exact for the proleptic Gregorian
/// calendar.
mod chrono_free {
    pub(super) fn days_from_civil(y: i32, m: u32, d: u32) -> Option<i64> {
        if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
            return None;
        }
        let y = i64::from(y) - i64::from(m <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(m);
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        Some(era * 146_097 + doe - 719_468)
    }

    pub(super) fn civil_from_days(z: i64) -> (i32, u32, u32) {
        let z = z + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let y = yoe + era * 400 + i64::from(m <= 2);
        (y as i32, m, d)
    }

    fn days_in_month(y: i32, m: u32) -> u32 {
        match m {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
            _ => 28,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_numbers_and_labels_round_trip() {
        assert_eq!(Period::Day.index(1970, 1, 1), Some(0));
        assert_eq!(Period::Day.index(2000, 3, 1), Some(11_017));
        assert_eq!(Period::Day.index(2026, 2, 29), None);
        assert_eq!(Period::Day.index(2024, 2, 29), Some(19_782));
        assert_eq!(Period::Month.parse_label("2026-10"), Some(2026 * 12 + 9));
        assert_eq!(Period::Month.parse_label("2026-10-31"), Some(2026 * 12 + 9));
        assert_eq!(Period::Month.parse_label("2026-13"), None);
        assert_eq!(Period::Month.parse_label("2026-02-30"), None);
        assert_eq!(Period::Day.parse_label("2026-10"), None);
        for i in [-1000_i64, 0, 19_782, 20_000, 2_932_896] {
            assert_eq!(Period::Day.parse_label(&Period::Day.label(i)), Some(i));
        }
        for i in [24_000_i64, 24_311, 24_312] {
            assert_eq!(Period::Month.parse_label(&Period::Month.label(i)), Some(i));
        }
        // 2026-11-29T11:00Z
        let ms = 1_795_950_000_000;
        assert_eq!(Period::Month.label(Period::Month.of_millis(ms)), "2026-11");
        assert_eq!(Period::Day.label(Period::Day.of_millis(ms)), "2026-11-29");
    }
}
