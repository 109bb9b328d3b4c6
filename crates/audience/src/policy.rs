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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveTime;

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
