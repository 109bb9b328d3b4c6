//! Durations as operators write them: `3d`, `12h`, `30m`, `90s`, `2w`, or combined (`1d12h`).

use std::time::Duration;

/// A duration in milliseconds, as instants (`i64` Unix milliseconds) are added to: saturating,
/// so even a duration no checked workflow holds (compile bounds them to 366 days) cannot wrap
/// to a negative offset.
pub fn duration_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Parses a duration; the error says what was expected.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let expected = || format!("expected a duration such as 3d, 12h, 30m or 1d12h, found `{s}`");
    let t = s.trim();
    if t.is_empty() {
        return Err(expected());
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    for ch in t.chars() {
        if ch.is_ascii_digit() {
            num.push(ch);
            continue;
        }
        let unit = match ch {
            'w' => 7 * 86_400,
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => return Err(expected()),
        };
        if num.is_empty() {
            return Err(expected());
        }
        let n: u64 = num.parse().map_err(|_| expected())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(expected)?;
        num.clear();
    }
    if !num.is_empty() || total == 0 {
        return Err(expected());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_combinations() {
        assert_eq!(
            parse_duration("3d").unwrap(),
            Duration::from_secs(3 * 86_400)
        );
        assert_eq!(
            parse_duration("1d12h").unwrap(),
            Duration::from_secs(36 * 3_600)
        );
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_duration("2w").unwrap(),
            Duration::from_secs(14 * 86_400)
        );
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            "",
            "3",
            "d",
            "3x",
            "0d",
            "3 days",
            "-1d",
            "99999999999999999999d",
        ] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains("expected a duration"), "{bad}: {err}");
        }
    }
}
