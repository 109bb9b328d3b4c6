//! Contact policy in local time.

use chrono::{DateTime, Duration, NaiveDateTime, TimeZone, Utc};
use spec::QuietHours;

/// The earliest instant at or after `now` outside quiet hours, judged in `tz`.
pub fn next_allowed(
    now: DateTime<Utc>,
    quiet: Option<&QuietHours>,
    tz: chrono_tz::Tz,
) -> DateTime<Utc> {
    let Some(q) = quiet else { return now };
    let local = now.with_timezone(&tz);
    if !q.contains(local.time()) {
        return now;
    }
    // Inside quiet hours: the window ends at `end` today, or tomorrow when we are in the
    // evening part of a window that wraps midnight.
    let mut date = local.date_naive();
    if q.start > q.end && local.time() >= q.start {
        date = date.succ_opt().unwrap_or(date);
    }
    let naive = NaiveDateTime::new(date, q.end);
    // A DST gap can swallow the end time; then the first valid instant after it is used.
    let mut candidate = naive;
    for _ in 0..4 {
        if let Some(t) = tz.from_local_datetime(&candidate).earliest() {
            return t.with_timezone(&Utc);
        }
        candidate = candidate
            .checked_add_signed(Duration::minutes(30))
            .unwrap_or(candidate);
    }
    now.checked_add_signed(Duration::hours(1)).unwrap_or(now)
}

/// The earliest instant at or after `now` inside the subscriber's daily `slot` and outside
/// quiet hours, both judged in `tz`: today's slot if it is still open, else the next day's.
/// A slot quiet hours cover entirely gives way to them (`next_allowed`), and so does one
/// that a clock change swallows for days: the policy binds, the slot is a preference.
pub fn next_in_slot(
    now: DateTime<Utc>,
    slot: spec::TimeSlot,
    quiet: Option<&QuietHours>,
    tz: chrono_tz::Tz,
) -> DateTime<Utc> {
    let local_day = now.with_timezone(&tz).date_naive();
    let at = |day: chrono::NaiveDate, minute: u32| {
        let naive = day.and_hms_opt(0, 0, 0)? + Duration::minutes(i64::from(minute));
        tz.from_local_datetime(&naive)
            .earliest()
            .map(|t| t.with_timezone(&Utc))
    };
    for offset in 0..3 {
        let Some(day) = local_day.checked_add_days(chrono::Days::new(offset)) else {
            break;
        };
        let (Some(open), Some(close)) = (at(day, slot.start_minute()), at(day, slot.end_minute()))
        else {
            continue;
        };
        let from = now.max(open);
        if from >= close {
            continue;
        }
        let allowed = next_allowed(from, quiet, tz);
        if allowed < close {
            return allowed;
        }
    }
    next_allowed(now, quiet, tz)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveTime;

    fn slot(s: &str) -> spec::TimeSlot {
        spec::TimeSlot::parse(s).unwrap()
    }

    #[test]
    fn a_slot_waits_for_its_local_opening_or_the_next_day() {
        let tz = chrono_tz::Asia::Shanghai;
        // 10:00 local: inside 09:00-12:00, now.
        let ten = Utc.with_ymd_and_hms(2026, 9, 1, 2, 0, 0).unwrap();
        assert_eq!(next_in_slot(ten, slot("09:00-12:00"), Some(&q()), tz), ten);
        // Before 18:00-21:00: at 18:00 local the same day.
        assert_eq!(
            next_in_slot(ten, slot("18:00-21:00"), Some(&q()), tz),
            Utc.with_ymd_and_hms(2026, 9, 1, 10, 0, 0).unwrap()
        );
        // 13:00 local, past 09:00-12:00: tomorrow at 09:00.
        let one = Utc.with_ymd_and_hms(2026, 9, 1, 5, 0, 0).unwrap();
        assert_eq!(
            next_in_slot(one, slot("09:00-12:00"), Some(&q()), tz),
            Utc.with_ymd_and_hms(2026, 9, 2, 1, 0, 0).unwrap()
        );
        // The subscriber's zone, not the campaign's: 09:00 in London is 08:00 UTC (BST).
        assert_eq!(
            next_in_slot(one, slot("09:00-12:00"), None, chrono_tz::Europe::London),
            Utc.with_ymd_and_hms(2026, 9, 1, 8, 0, 0).unwrap()
        );
    }

    #[test]
    fn quiet_hours_bind_inside_a_slot() {
        let tz = chrono_tz::Asia::Shanghai;
        let ten = Utc.with_ymd_and_hms(2026, 9, 1, 2, 0, 0).unwrap();
        // 18:00-24:00 with quiet hours from 21:00: 18:00 today.
        assert_eq!(
            next_in_slot(ten, slot("18:00-24:00"), Some(&q()), tz),
            Utc.with_ymd_and_hms(2026, 9, 1, 10, 0, 0).unwrap()
        );
        // At 22:00 local the slot's open part is over: tomorrow at 18:00.
        let late = Utc.with_ymd_and_hms(2026, 9, 1, 14, 0, 0).unwrap();
        assert_eq!(
            next_in_slot(late, slot("18:00-24:00"), Some(&q()), tz),
            Utc.with_ymd_and_hms(2026, 9, 2, 10, 0, 0).unwrap()
        );
        // A slot wholly inside quiet hours gives way to them.
        assert_eq!(
            next_in_slot(late, slot("22:00-23:00"), Some(&q()), tz),
            next_allowed(late, Some(&q()), tz)
        );
    }

    fn q() -> QuietHours {
        QuietHours {
            start: NaiveTime::from_hms_opt(21, 0, 0).unwrap(),
            end: NaiveTime::from_hms_opt(8, 0, 0).unwrap(),
        }
    }

    #[test]
    fn evening_moves_to_next_morning_local() {
        let tz = chrono_tz::Asia::Shanghai;
        // 22:30 in Shanghai = 14:30 UTC.
        let now = Utc.with_ymd_and_hms(2026, 9, 1, 14, 30, 0).unwrap();
        let t = next_allowed(now, Some(&q()), tz);
        assert_eq!(t, Utc.with_ymd_and_hms(2026, 9, 2, 0, 0, 0).unwrap());
    }

    #[test]
    fn early_morning_moves_to_same_day() {
        let tz = chrono_tz::Asia::Shanghai;
        let now = Utc.with_ymd_and_hms(2026, 9, 1, 21, 0, 0).unwrap(); // 05:00 local on 09-02
        assert_eq!(
            next_allowed(now, Some(&q()), tz),
            Utc.with_ymd_and_hms(2026, 9, 2, 0, 0, 0).unwrap()
        );
    }

    #[test]
    fn daytime_is_unchanged() {
        let now = Utc.with_ymd_and_hms(2026, 9, 1, 4, 0, 0).unwrap(); // noon local
        assert_eq!(
            next_allowed(now, Some(&q()), chrono_tz::Asia::Shanghai),
            now
        );
    }
}
