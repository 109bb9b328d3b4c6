//! A subscriber's usual time slot on a channel (`first_channel_slot`), one rule for the
//! import (`format: time_slot`) and the planner.

/// A daily slot `HH:MM-HH:MM` in the subscriber's time zone: start before end, within one
/// day (`24:00` may end it), held as minutes since local midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeSlot {
    start: u32,
    end: u32,
}

impl TimeSlot {
    /// The slot `text` writes, or `None` when it is not `HH:MM-HH:MM` with start < end.
    pub fn parse(text: &str) -> Option<TimeSlot> {
        fn minutes(hhmm: &str) -> Option<u32> {
            let (h, m) = hhmm.split_once(':')?;
            if h.len() != 2
                || m.len() != 2
                || !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit())
            {
                return None;
            }
            let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
            // 24:00 ends a slot that runs to midnight.
            (h < 24 && m < 60 || h == 24 && m == 0).then_some(h * 60 + m)
        }
        let (start, end) = text.split_once('-')?;
        match (minutes(start), minutes(end)) {
            (Some(start), Some(end)) if start < end => Some(TimeSlot { start, end }),
            _ => None,
        }
    }

    /// Minutes after local midnight at which the slot opens.
    pub fn start_minute(self) -> u32 {
        self.start
    }

    /// Minutes after local midnight at which it closes (at most 1440), exclusive.
    pub fn end_minute(self) -> u32 {
        self.end
    }
}

/// The stored form, `HH:MM-HH:MM` (what [`TimeSlot::parse`] reads back).
impl std::fmt::Display for TimeSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (s, e) = (self.start, self.end);
        write!(f, "{:02}:{:02}-{:02}:{:02}", s / 60, s % 60, e / 60, e % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_parse_within_one_day() {
        let s = TimeSlot::parse("09:00-12:30").unwrap();
        assert_eq!((s.start_minute(), s.end_minute()), (540, 750));
        assert_eq!(TimeSlot::parse("18:00-24:00").unwrap().end_minute(), 1440);
        for text in ["09:00-12:30", "00:00-24:00", "18:05-21:59"] {
            assert_eq!(TimeSlot::parse(text).unwrap().to_string(), text);
        }
        for bad in [
            "9:00-12:00",
            "12:00-09:00",
            "12:00",
            "25:00-26:00",
            "09:00-12:60",
            "+9:00-12:00",
            "evening",
            "",
        ] {
            assert_eq!(TimeSlot::parse(bad), None, "{bad}");
        }
    }
}
