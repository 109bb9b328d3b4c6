//! A synthetic past for a synthetic base: months of usage history and a year of events per
//! subscriber, with the patterns the domain's programmes look for.
//!
//! - Students use their phones on campus during semesters: data and calls drop and roaming
//!   days (going home out of province) rise in the winter (January-February) and summer
//!   (July-August) vacations; they are seen on campus cells only during semesters.
//! - A share of prepaid students run their balance low in the month before each vacation
//!   (December, June): the holiday balance-care programme's audience.
//! - A share of core customers (3-month ARPU of 120 yuan or more, not students) drift away:
//!   spending and calls fall over the last three months, calls to rival networks rise, they
//!   ask about porting out, complain, and a part of them port out in the newest month.
//! - Price-sensitive customers query their bill often; everyone tops up now and then.
//!
//! Every value is drawn from a stream seeded by (seed, subscriber index), so a subscriber's
//! past does not depend on how many others are generated. Only the measures the catalogue
//! declares (by their shipped names) get values; others stay empty.

use catalogue::{Catalogue, Period, Value};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use store::subscribers::NewSubscriber;

/// Share of core customers drifting toward a port-out.
pub const DRIFTING_SHARE: f64 = 0.08;
/// Share of the drifting who ported out in the newest month.
pub const PORTED_SHARE: f64 = 0.4;
/// Share of students running their balance low before vacations.
pub const LOW_BALANCE_STUDENT_SHARE: f64 = 0.3;
/// Share of price-sensitive customers (frequent bill queries).
pub const PRICE_SENSITIVE_SHARE: f64 = 0.15;

const DAY_MS: i64 = 86_400_000;

/// One subscriber's generated past.
#[derive(Debug, Clone, PartialEq)]
pub struct Past {
    /// (month period, values in the order of `Catalogue::measures_of(Period::Month)`),
    /// oldest first.
    pub months: Vec<(i64, Vec<Value>)>,
    /// (type, when, value) oldest first; every instant before `now`.
    pub events: Vec<(String, i64, Option<f64>)>,
    /// Which pattern the subscriber follows, for checks and the demo's narration.
    pub profile: Profile,
}

/// The pattern a subscriber's past follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Profile {
    Steady,
    Student,
    /// A student whose balance runs low before vacations.
    LowBalanceStudent,
    /// A core customer whose spending falls for three months.
    Drifting,
    /// A drifting customer who ported out in the newest month.
    PortedOut,
}

/// The past of `s` (the `index`-th subscriber of a base generated with `seed`): `months`
/// months of history ending with the month before `now`'s, and events over the last year.
pub fn past(
    cat: &Catalogue,
    s: &NewSubscriber,
    index: u64,
    seed: u64,
    months: u32,
    now: i64,
) -> Past {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let num = |name: &str| match s.get(name) {
        Some(Value::Dec(d)) => d,
        Some(Value::Int(i)) => i as f64,
        _ => 0.0,
    };
    let student = !matches!(s.text("student_stage").as_str(), "none" | "");
    let arpu_3m = num("arpu_3m").max(1.0);
    let core = !student && arpu_3m >= 120.0;
    let profile = if student {
        if rng.random_bool(LOW_BALANCE_STUDENT_SHARE) {
            Profile::LowBalanceStudent
        } else {
            Profile::Student
        }
    } else if core && rng.random_bool(DRIFTING_SHARE) {
        if rng.random_bool(PORTED_SHARE) {
            Profile::PortedOut
        } else {
            Profile::Drifting
        }
    } else {
        Profile::Steady
    };
    let price_sensitive = rng.random_bool(PRICE_SENSITIVE_SHARE);
    let newest = Period::Month.of_millis(now) - 1;
    let measures: Vec<&str> = cat
        .measures_of(Period::Month)
        .map(|m| m.name.as_str())
        .collect();

    let mut out = Vec::with_capacity(months as usize);
    let mut events = Vec::new();
    let first = newest - i64::from(months) + 1;
    for p in first..=newest {
        let month = (p.rem_euclid(12) + 1) as u32;
        let vacation = matches!(month, 1 | 2 | 7 | 8);
        let before_vacation = matches!(month, 12 | 6);
        let back = newest - p; // 0 = newest month
        // How much of their usual use a drifting customer keeps, three months to the end.
        let drift = match (profile, back) {
            (Profile::Drifting | Profile::PortedOut, 0) => 0.45,
            (Profile::Drifting | Profile::PortedOut, 1) => 0.65,
            (Profile::Drifting | Profile::PortedOut, 2) => 0.85,
            _ => 1.0,
        };
        let season = if student && vacation { 0.55 } else { 1.0 };
        let noise = |rng: &mut ChaCha8Rng| 0.9 + rng.random::<f64>() * 0.2;
        let arpu =
            round2(arpu_3m * drift * noise(&mut rng) * if student && vacation { 0.8 } else { 1.0 });
        let voice = (arpu_3m * 2.5 * drift * season * noise(&mut rng)).round();
        let data = round2(if student { 3500.0 } else { 1500.0 } * drift * season * noise(&mut rng));
        let balance = match profile {
            Profile::LowBalanceStudent if before_vacation => round2(rng.random_range(0.5..8.0)),
            _ => round2(num("balance").max(5.0) * noise(&mut rng)),
        };
        let top_ups = if matches!(profile, Profile::LowBalanceStudent) && before_vacation {
            0
        } else {
            rng.random_range(0..=1)
        };
        let bill_queries = if price_sensitive {
            rng.random_range(2..=5)
        } else {
            i64::from(rng.random_bool(0.2))
        };
        let drifting = matches!(profile, Profile::Drifting | Profile::PortedOut);
        let rival = if drifting && back <= 2 {
            rng.random_range(8..=25)
        } else {
            rng.random_range(0..=4)
        };
        let port_out_q = i64::from(drifting && back == 0);
        let complaints = if drifting && back <= 1 {
            rng.random_range(0..=2)
        } else {
            i64::from(rng.random_bool(0.03))
        };
        let roaming = if student && vacation {
            rng.random_range(5..=20)
        } else {
            i64::from(rng.random_bool(0.1)) * rng.random_range(1..=4)
        };
        let value = |name: &str| -> Value {
            match name {
                "arpu" => Value::Dec(arpu),
                "voice_minutes" => Value::Int(voice as i64),
                "data_mb" => Value::Dec(data),
                "sms_sent" => Value::Int((voice / 6.0).round() as i64),
                "top_ups" => Value::Int(top_ups),
                "top_up_amount" => Value::Dec(round2(top_ups as f64 * 50.0)),
                "balance" => Value::Dec(balance),
                "bill_queries" => Value::Int(bill_queries),
                "hotline_calls" => Value::Int(complaints + i64::from(price_sensitive)),
                "complaints" => Value::Int(complaints),
                "roaming_days" => Value::Int(roaming),
                "rival_calls" => Value::Int(rival),
                "port_out_enquiries" => Value::Int(port_out_q),
                _ => Value::Null,
            }
        };
        out.push((p, measures.iter().map(|m| value(m)).collect()));

        // Events of this month, at random moments inside it (none in the future).
        let start = month_start_ms(p);
        let end = month_start_ms(p + 1).min(now);
        let at = |rng: &mut ChaCha8Rng| start + rng.random_range(0..(end - start).max(1));
        for _ in 0..top_ups {
            let t = at(&mut rng);
            events.push(("top_up".to_owned(), t, Some(50.0)));
        }
        for _ in 0..bill_queries {
            let t = at(&mut rng);
            events.push(("bill_query".to_owned(), t, None));
        }
        for _ in 0..complaints {
            let t = at(&mut rng);
            events.push(("complaint".to_owned(), t, None));
        }
        if port_out_q > 0 {
            // A drifting customer asks at the hotline in the last two days before `now`:
            // what a port-out save campaign reacts to. Derived from the same draw, so the
            // random stream (and every other value generated) stays as it was.
            let t = at(&mut rng);
            let t = now - (t - start).rem_euclid(2 * DAY_MS);
            events.push(("port_out_enquiry".to_owned(), t, None));
        }
        if student && !vacation {
            for _ in 0..rng.random_range(1..=2) {
                let t = at(&mut rng);
                events.push(("campus_cell".to_owned(), t, None));
            }
        }
    }
    if profile == Profile::PortedOut {
        // In the last days before now.
        let t = now - rng.random_range(1..=10) * DAY_MS;
        events.push(("port_out".to_owned(), t, None));
    }
    events.sort_by_key(|e| e.1);
    Past {
        months: out,
        events,
        profile,
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Unix milliseconds at 00:00 UTC on the first day of month period `p`.
fn month_start_ms(p: i64) -> i64 {
    let label = Period::Month.label(p);
    let day = Period::Day
        .parse_label(&format!("{label}-01"))
        .expect("a month label with day 01 is a date");
    day * DAY_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-11-29T11:00:00Z
    const NOW: i64 = 1_795_950_000_000;

    #[test]
    fn pasts_are_deterministic_and_follow_their_profiles() {
        let cat = catalogue::shipped();
        let base: Vec<_> = crate::generate(&cat, 3000, 7).collect();
        let arpu_at = |p: &Past, back: usize| {
            let i = cat
                .measures_of(Period::Month)
                .position(|m| m.name == "arpu")
                .unwrap();
            match &p.months[p.months.len() - 1 - back].1[i] {
                Value::Dec(d) => *d,
                v => panic!("{v:?}"),
            }
        };
        let mut seen = std::collections::HashMap::new();
        for (i, s) in base.iter().enumerate() {
            let p = past(&cat, s, i as u64, 7, 12, NOW);
            assert_eq!(p, past(&cat, s, i as u64, 7, 12, NOW), "deterministic");
            assert_eq!(p.months.len(), 12);
            assert_eq!(
                Period::Month.label(p.months.last().unwrap().0),
                "2026-10",
                "the newest month is the one before now's"
            );
            assert!(p.events.iter().all(|e| e.1 < NOW), "no event in the future");
            *seen.entry(p.profile).or_insert(0) += 1;
            if matches!(p.profile, Profile::Drifting | Profile::PortedOut) {
                // Last month well below the three before: what `arpu_change` catches.
                let prev = (arpu_at(&p, 1) + arpu_at(&p, 2) + arpu_at(&p, 3)) / 3.0;
                assert!(arpu_at(&p, 0) / prev - 1.0 < -0.3, "{p:?}");
                assert!(p.events.iter().any(|e| e.0 == "port_out_enquiry"));
            }
            assert_eq!(
                p.events.iter().any(|e| e.0 == "port_out"),
                p.profile == Profile::PortedOut
            );
        }
        for profile in [
            Profile::Steady,
            Profile::Student,
            Profile::LowBalanceStudent,
            Profile::Drifting,
            Profile::PortedOut,
        ] {
            assert!(
                seen.get(&profile).copied().unwrap_or(0) > 0,
                "{profile:?}: {seen:?}"
            );
        }
    }
}
