//! Schedule slots: which fire times of a campaign are due, and which of them run.
//!
//! tokio-cron-scheduler only wakes the daemon up; the slots themselves are computed here from
//! the cron expression in the campaign's IANA zone at every evaluation (so DST changes never
//! drift), and recorded in the store with a unique key, so each slot runs once however many
//! replicas evaluate it.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use spec::{CatchUp, Schedule};
use store::Millis;

/// What happens to one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotDecision {
    pub slot_at: Millis,
    /// `None`: run it. `Some(reason)`: record it as skipped.
    pub skip: Option<&'static str>,
}

/// How late a slot may start and still count as on time under `catch_up: skip`.
const ON_TIME: Duration = Duration::from_secs(60);
/// Upper bound on slots examined in one evaluation (a per-second cron after a long outage).
const MAX_SLOTS: usize = 10_000;

/// Public holidays per calendar name.
#[derive(Debug, Clone, Default)]
pub struct Calendars {
    off_days: BTreeMap<String, HashSet<NaiveDate>>,
}

impl Calendars {
    /// Reads `dir/<name>/*.json` files in the holiday-cn format (`days[].date`, `days[].isOffDay`).
    pub fn load(dir: &Path) -> Result<Calendars, String> {
        let mut off_days = BTreeMap::new();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Ok(Calendars::default());
        };
        for entry in entries.flatten() {
            if !entry.path().is_dir() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let mut days = HashSet::new();
            let files = std::fs::read_dir(entry.path())
                .map_err(|e| format!("{}: {e}", entry.path().display()))?;
            for f in files.flatten() {
                let p = f.path();
                if p.extension().and_then(|e| e.to_str()) != Some("json")
                    || p.file_name().is_some_and(|n| n == "schema.json")
                {
                    continue;
                }
                let text =
                    std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
                let v: serde_json::Value =
                    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?;
                for d in v["days"].as_array().into_iter().flatten() {
                    if d["isOffDay"].as_bool() == Some(true)
                        && let Some(date) = d["date"]
                            .as_str()
                            .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
                    {
                        days.insert(date);
                    }
                }
            }
            off_days.insert(name, days);
        }
        Ok(Calendars { off_days })
    }

    pub fn is_off_day(&self, calendar: &str, date: NaiveDate) -> bool {
        self.off_days
            .get(calendar)
            .is_some_and(|d| d.contains(&date))
    }
}

/// The slots after `last_recorded` (or, for a campaign never evaluated, within its catch-up
/// window) up to `now`, each with its decision.
pub fn due_slots(
    sched: &Schedule,
    tz: chrono_tz::Tz,
    last_recorded: Option<Millis>,
    now: Millis,
    calendars: &Calendars,
) -> Vec<SlotDecision> {
    // Saturating: an overflow here once panicked the housekeeping task.
    let window = spec::duration_millis(sched.catch_up_window);
    let start =
        last_recorded.unwrap_or(now.saturating_sub(window.max(spec::duration_millis(ON_TIME))));
    // croner keeps the start's sub-second part in every fire time it yields; cron has
    // whole-second resolution, and replicas must compute the same slot_at for the unique key.
    let start = start.saturating_sub(start.rem_euclid(1000));
    let Some(start_utc) = DateTime::<Utc>::from_timestamp_millis(start) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for t in sched
        .cron
        .iter_after(start_utc.with_timezone(&tz))
        .take(MAX_SLOTS)
    {
        let at = t.timestamp_millis();
        if at > now {
            break;
        }
        let date = t.date_naive();
        let skip = if sched.season.as_ref().is_some_and(|s| !s.contains(date)) {
            Some("out_of_season")
        } else if sched
            .calendar
            .as_deref()
            .is_some_and(|c| calendars.is_off_day(c, date))
        {
            Some("holiday")
        } else {
            None
        };
        out.push(SlotDecision { slot_at: at, skip });
    }
    // Catch-up: of the runnable slots only the latest may run, and only if it is recent
    // enough; a campaign SMS hours late is harm, so the rest are recorded as missed.
    let grace = match sched.catch_up {
        CatchUp::Last => window,
        CatchUp::Skip => spec::duration_millis(ON_TIME),
    };
    let latest = out.iter().rposition(|s| s.skip.is_none());
    for (i, s) in out.iter_mut().enumerate() {
        if s.skip.is_none() && (Some(i) != latest || now.saturating_sub(s.slot_at) > grace) {
            s.skip = Some("missed");
        }
    }
    out
}

/// Whether the schedule has a slot after `now` and before the end of `now`'s day in `tz`
/// that would run (in season, not a holiday): a campaign still to plan today, for
/// arbitration.
pub fn runs_later_today(
    sched: &Schedule,
    tz: chrono_tz::Tz,
    now: Millis,
    calendars: &Calendars,
) -> bool {
    let Some(now_utc) = DateTime::<Utc>::from_timestamp_millis(now) else {
        return false;
    };
    let local = now_utc.with_timezone(&tz);
    let today = local.date_naive();
    for t in sched.cron.iter_after(local).take(MAX_SLOTS) {
        let date = t.date_naive();
        if date != today {
            return false;
        }
        let off_season = sched.season.as_ref().is_some_and(|s| !s.contains(date));
        let holiday = sched
            .calendar
            .as_deref()
            .is_some_and(|c| calendars.is_off_day(c, date));
        if !off_season && !holiday {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn schedule(cron: &str, catch_up: CatchUp) -> Schedule {
        let parsed = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .build()
            .parse(cron)
            .unwrap();
        Schedule {
            cron: parsed,
            cron_text: cron.to_owned(),
            season: None,
            calendar: None,
            catch_up,
            catch_up_window: Duration::from_secs(3600),
            overlap: spec::Overlap::Skip,
        }
    }

    fn ms(tz: chrono_tz::Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> Millis {
        tz.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .earliest()
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn replicas_evaluating_at_different_milliseconds_get_the_same_slot() {
        // The slot time is the unique key that lets one replica win a slot: it must not
        // carry the milliseconds of the moment each replica happened to evaluate.
        let tz = chrono_tz::Asia::Shanghai;
        let s = schedule("0 * * * * *", CatchUp::Last);
        let base = ms(tz, 2026, 9, 1, 10, 0) + 30_000;
        let a = due_slots(&s, tz, None, base + 272, &Calendars::default());
        let b = due_slots(&s, tz, None, base + 954, &Calendars::default());
        assert_eq!(a, b);
        assert!(a.iter().all(|d| d.slot_at % 1000 == 0), "{a:?}");
    }

    #[test]
    fn a_catch_up_window_beyond_any_instant_does_not_overflow() {
        // A duration that once passed validation overflowed here and killed housekeeping.
        let tz = chrono_tz::Asia::Shanghai;
        let mut s = schedule("0 0 10 * * *", CatchUp::Last);
        s.catch_up_window = Duration::MAX;
        let now = ms(tz, 2026, 9, 1, 12, 0);
        let slots = due_slots(&s, tz, None, now, &Calendars::default());
        assert!(slots.len() <= MAX_SLOTS, "{}", slots.len());
        let slots = due_slots(&s, tz, Some(i64::MIN), now, &Calendars::default());
        assert!(slots.len() <= MAX_SLOTS);
    }

    #[test]
    fn fixed_time_runs_once_in_a_repeated_hour() {
        // 2026-11-01 01:30 happens twice in New York (DST ends at 02:00).
        let tz = chrono_tz::America::New_York;
        let s = schedule("0 30 1 * * *", CatchUp::Last);
        let last = ms(tz, 2026, 10, 31, 12, 0);
        let now = ms(tz, 2026, 11, 1, 12, 0);
        let slots = due_slots(&s, tz, Some(last), now, &Calendars::default());
        assert_eq!(slots.len(), 1, "{slots:?}");
    }

    #[test]
    fn fixed_time_in_a_skipped_hour_runs_once_after_it() {
        // 2026-03-08 02:30 does not exist in New York (clocks jump from 02:00 to 03:00).
        let tz = chrono_tz::America::New_York;
        let s = schedule("0 30 2 * * *", CatchUp::Last);
        let last = ms(tz, 2026, 3, 7, 12, 0);
        let now = ms(tz, 2026, 3, 8, 12, 0);
        let slots = due_slots(&s, tz, Some(last), now, &Calendars::default());
        assert_eq!(slots.len(), 1, "{slots:?}");
        let at = DateTime::<Utc>::from_timestamp_millis(slots[0].slot_at)
            .unwrap()
            .with_timezone(&tz);
        assert_eq!(
            at.date_naive(),
            NaiveDate::from_ymd_opt(2026, 3, 8).unwrap()
        );
        assert!(at.format("%H").to_string() == "03", "ran at {at}");
    }

    #[test]
    fn downtime_runs_only_the_last_missed_slot_within_the_window() {
        let tz = chrono_tz::Asia::Shanghai;
        let s = schedule("0 0 * * * *", CatchUp::Last); // hourly
        let last = ms(tz, 2026, 9, 1, 0, 0);
        let now = ms(tz, 2026, 9, 1, 5, 30);
        let slots = due_slots(&s, tz, Some(last), now, &Calendars::default());
        assert_eq!(slots.len(), 5);
        assert!(slots[..4].iter().all(|s| s.skip == Some("missed")));
        assert_eq!(
            slots[4],
            SlotDecision {
                slot_at: ms(tz, 2026, 9, 1, 5, 0),
                skip: None
            }
        );
    }

    #[test]
    fn skip_policy_runs_nothing_late() {
        let tz = chrono_tz::Asia::Shanghai;
        let s = schedule("0 0 * * * *", CatchUp::Skip);
        let slots = due_slots(
            &s,
            tz,
            Some(ms(tz, 2026, 9, 1, 0, 0)),
            ms(tz, 2026, 9, 1, 5, 30),
            &Calendars::default(),
        );
        assert!(slots.iter().all(|s| s.skip == Some("missed")));
    }

    #[test]
    fn dated_windows_gate_slots_where_the_calendar_puts_them() {
        let tz = chrono_tz::Asia::Shanghai;
        let mut s = schedule("0 0 10 * * *", CatchUp::Last);
        let d = |y, m, d| chrono::NaiveDate::from_ymd_opt(y, m, d).unwrap();
        s.season = Some(spec::Seasons::windows(vec![spec::Window::Dated(vec![
            spec::Occurrence {
                from: d(2026, 1, 24),
                to: d(2026, 3, 1),
            },
            spec::Occurrence {
                from: d(2027, 1, 16),
                to: d(2027, 2, 21),
            },
        ])]));
        let skip_on = |y, m, day| {
            due_slots(
                &s,
                tz,
                Some(ms(tz, y, m, day, 9, 0)),
                ms(tz, y, m, day, 10, 0),
                &Calendars::default(),
            )[0]
            .skip
        };
        // 1 March is in the 2026 vacation, not in the 2027 one.
        assert_eq!(skip_on(2026, 3, 1), None);
        assert_eq!(skip_on(2027, 3, 1), Some("out_of_season"));
        assert_eq!(skip_on(2027, 1, 16), None);
        assert_eq!(skip_on(2027, 1, 15), Some("out_of_season"));
        // After the last dated occurrence nothing runs.
        assert_eq!(skip_on(2028, 2, 1), Some("out_of_season"));
    }

    #[test]
    fn season_and_holidays_gate_slots() {
        let tz = chrono_tz::Asia::Shanghai;
        let mut s = schedule("0 0 10 * * *", CatchUp::Last);
        s.season = Some(spec::Seasons::yearly(spec::Season {
            from: (8, 15),
            to: (10, 31),
        }));
        s.calendar = Some("cn-holidays".into());
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workflows/calendars");
        let cals = Calendars::load(&dir).unwrap();
        // 2026-10-01 is National Day.
        let slots = due_slots(
            &s,
            tz,
            Some(ms(tz, 2026, 9, 30, 11, 0)),
            ms(tz, 2026, 10, 1, 10, 0),
            &cals,
        );
        assert_eq!(
            slots,
            vec![SlotDecision {
                slot_at: ms(tz, 2026, 10, 1, 10, 0),
                skip: Some("holiday")
            }]
        );
        let slots = due_slots(
            &s,
            tz,
            Some(ms(tz, 2026, 11, 1, 11, 0)),
            ms(tz, 2026, 11, 2, 10, 0),
            &cals,
        );
        assert_eq!(slots[0].skip, Some("out_of_season"));
        let slots = due_slots(
            &s,
            tz,
            Some(ms(tz, 2026, 9, 9, 11, 0)),
            ms(tz, 2026, 9, 10, 10, 0),
            &cals,
        );
        assert_eq!(slots[0].skip, None);
    }
}
