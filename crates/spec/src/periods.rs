//! Named calendar periods: `workflows/calendars/<calendar>/periods.yaml`.
//!
//! Semesters and vacations move from year to year (the winter vacation follows the lunar new
//! year), so a yearly `MM-DD` window cannot hold them: a calendar dates each occurrence, and a
//! schedule names the period (`{ period: campus/winter-vacation }`). The file is read into the
//! workflow's bundle, so a version keeps the dates it was checked with.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use chrono::NaiveDate;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::compile::{parse_typed, schema_value};
use crate::diag::{Diagnostic, Sink};
use crate::keys;
use crate::workflow::Occurrence;

/// The file a calendar folder names its periods in.
pub const PERIODS_FILE: &str = "periods.yaml";

/// How many days a period occurrence may last: a semester is the longest.
const MAX_SPAN_DAYS: i64 = 220;

#[derive(Debug, Deserialize, JsonSchema)]
// Unknown keys are reported by `keys` (all of them, with the file's other errors); the
// schema still closes the struct, which is what that pass checks against.
#[schemars(deny_unknown_fields)]
pub(crate) struct PeriodsFile {
    /// Period name → its dated occurrences, e.g.
    /// `winter-vacation: [{ from: 2026-01-24, to: 2026-03-01 }]`.
    #[schemars(with = "BTreeMap<String, Vec<DatesFile>>")]
    pub(crate) periods: BTreeMap<String, Spanned<Vec<DatesFile>>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct DatesFile {
    /// First day, `YYYY-MM-DD`.
    #[schemars(with = "String")]
    pub(crate) from: Spanned<String>,
    /// Last day, `YYYY-MM-DD`, inclusive.
    #[schemars(with = "String")]
    pub(crate) to: Spanned<String>,
}

/// A calendar's named periods, checked: each occurrence sorted, none overlapping another of
/// the same period.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Periods {
    pub by_name: BTreeMap<String, Vec<Occurrence>>,
}

/// Parses and checks a `periods.yaml`; every problem is located in `file`.
pub fn compile_periods(file: &str, source: &str) -> Result<Periods, Vec<Diagnostic>> {
    static SCHEMA: OnceLock<serde_json::Value> = OnceLock::new();
    let schema = SCHEMA.get_or_init(schema_value::<PeriodsFile>);
    let parsed: PeriodsFile = parse_typed(file, source, schema)?;
    let mut sink = Sink::new(file, source);
    sink.out = keys::unknown_keys(file, source, schema);
    let mut by_name = BTreeMap::new();
    for (name, dates) in &parsed.periods {
        if !crate::rules::is_name(name) {
            sink.at_spanned(
                dates,
                format!(
                    "period name `{}`: expected 1 to {} lowercase letters, digits, `_` or `-`",
                    name.escape_debug(),
                    crate::rules::MAX_NAME_LEN
                ),
            );
            continue;
        }
        if dates.value.is_empty() {
            sink.at_spanned(dates, format!("period `{name}` has no dates"));
            continue;
        }
        let mut occ: Vec<(Occurrence, &DatesFile)> = Vec::new();
        for d in &dates.value {
            let (Some(from), Some(to)) = (date(&mut sink, &d.from), date(&mut sink, &d.to)) else {
                continue;
            };
            if to < from {
                sink.at_spanned(
                    &d.to,
                    format!(
                        "`to` {to} is before `from` {from}: a period ends on or after it starts"
                    ),
                );
                continue;
            }
            if (to - from).num_days() >= MAX_SPAN_DAYS {
                sink.at_spanned(
                    &d.to,
                    format!(
                        "{from} to {to} is {} days: a period lasts at most {MAX_SPAN_DAYS} days (one occurrence per entry)",
                        (to - from).num_days() + 1
                    ),
                );
                continue;
            }
            occ.push((Occurrence { from, to }, d));
        }
        occ.sort_by_key(|(o, _)| *o);
        for pair in occ.windows(2) {
            let ((a, _), (b, file)) = (&pair[0], &pair[1]);
            if b.from <= a.to {
                sink.at_spanned(
                    &file.from,
                    format!(
                        "{} to {} overlaps {} to {} of the same period `{name}`",
                        b.from, b.to, a.from, a.to
                    ),
                );
            }
        }
        by_name.insert(name.clone(), occ.into_iter().map(|(o, _)| o).collect());
    }
    if sink.out.is_empty() {
        Ok(Periods { by_name })
    } else {
        Err(sink.out)
    }
}

fn date(sink: &mut Sink<'_>, s: &Spanned<String>) -> Option<NaiveDate> {
    match NaiveDate::parse_from_str(s.value.trim(), "%Y-%m-%d") {
        Ok(d) => Some(d),
        Err(_) => {
            sink.at_spanned(
                s,
                format!(
                    "expected a date as YYYY-MM-DD, e.g. 2026-07-04, found `{}`",
                    s.value.escape_debug()
                ),
            );
            None
        }
    }
}

/// Where a calendar's periods file lives, relative to a workflow file's folder.
pub(crate) fn periods_path(workflow_dir: &std::path::Path, calendar: &str) -> std::path::PathBuf {
    workflow_dir
        .join("calendars")
        .join(calendar)
        .join(PERIODS_FILE)
}

/// The periods files of the named calendars that have one (calendar → text): what a monitor,
/// which has no bundle, checks its windows against.
pub(crate) fn read_all(
    workflows_dir: &std::path::Path,
    calendars: &[String],
) -> BTreeMap<String, String> {
    calendars
        .iter()
        .filter_map(|c| {
            let text = std::fs::read_to_string(periods_path(workflows_dir, c)).ok()?;
            Some((c.clone(), text))
        })
        .collect()
}

/// Every calendar's periods file under a workflows folder, checked: what `campaignd validate`
/// shows (a file no workflow names yet is checked too).
pub fn load_all(workflows_dir: &std::path::Path) -> (Vec<(String, Periods)>, Vec<Diagnostic>) {
    let mut ok = Vec::new();
    let mut diags = Vec::new();
    for cal in crate::load::calendar_names(workflows_dir) {
        let path = periods_path(workflows_dir, &cal);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let shown = path.display().to_string();
        match compile_periods(&shown, &text) {
            Ok(p) => ok.push((shown, p)),
            Err(d) => diags.extend(d),
        }
    }
    (ok, diags)
}

impl Periods {
    /// The last day any period is dated to: past it, schedules naming these periods run no slot.
    pub fn last_day(&self) -> Option<NaiveDate> {
        self.by_name.values().flatten().map(|o| o.to).max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(src: &str) -> Vec<String> {
        compile_periods("p.yaml", src)
            .unwrap_err()
            .into_iter()
            .map(|d| format!("{}:{} {}", d.line, d.column, d.message))
            .collect()
    }

    #[test]
    fn periods_are_sorted_and_checked() {
        let p = compile_periods(
            "p.yaml",
            "periods:\n  winter:\n    - { from: 2027-01-16, to: 2027-02-21 }\n    - { from: 2026-01-24, to: 2026-03-01 }\n",
        )
        .unwrap();
        let w = &p.by_name["winter"];
        assert_eq!(w[0].from, NaiveDate::from_ymd_opt(2026, 1, 24).unwrap());
        assert_eq!(w[1].to, NaiveDate::from_ymd_opt(2027, 2, 21).unwrap());
    }

    #[test]
    fn bad_periods_are_located() {
        let e = errors(
            "periods:\n  winter:\n    - { from: 2026-01-24, to: 2026-01-20 }\n    - { from: 2026-02-30, to: 2026-03-01 }\n  Summer:\n    - { from: 2026-07-01, to: 2026-08-31 }\n  spring:\n    - { from: 2026-03-01, to: 2026-06-01 }\n    - { from: 2026-05-01, to: 2026-07-01 }\n    - { from: 2026-01-01, to: 2026-12-31, extra: 1 }\n",
        );
        let all = e.join("\n");
        assert!(all.contains("3:31 `to` 2026-01-20 is before"), "{all}");
        assert!(all.contains("4:15 expected a date as YYYY-MM-DD"), "{all}");
        assert!(all.contains("period name `Summer`"), "{all}");
        assert!(
            all.contains("9:15 2026-05-01 to 2026-07-01 overlaps"),
            "{all}"
        );
        assert!(all.contains("unknown field `extra`"), "{all}");
    }
}
