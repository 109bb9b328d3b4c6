use std::collections::HashSet;

use spec::fields;
use store::subscribers::{NewSubscriber, value_tier_for_arpu};
use subscribers::generate;

const N: usize = 200_000;

fn share(rows: &[NewSubscriber], pred: impl Fn(&NewSubscriber) -> bool) -> f64 {
    rows.iter().filter(|s| pred(s)).count() as f64 / rows.len() as f64
}

fn mean(rows: &[NewSubscriber], pred: impl Fn(&NewSubscriber) -> bool) -> f64 {
    let picked: Vec<f64> = rows
        .iter()
        .filter(|s| pred(s))
        .map(|s| s.churn_risk)
        .collect();
    picked.iter().sum::<f64>() / picked.len() as f64
}

fn assert_between(what: &str, value: f64, low: f64, high: f64) {
    assert!(
        (low..=high).contains(&value),
        "{what} = {value:.4}, expected {low}..={high}"
    );
}

fn allowed(name: &str) -> &'static [&'static str] {
    let values = fields::field(name).expect("field in catalogue").values;
    assert!(!values.is_empty(), "{name} is enumerated");
    values
}

fn is_slot(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() == 11
        && b[2] == b':'
        && b[5] == b'-'
        && b[8] == b':'
        && s.bytes()
            .enumerate()
            .all(|(i, c)| [2, 5, 8].contains(&i) || c.is_ascii_digit())
        && s[..5] < s[6..]
}

#[test]
fn same_seed_gives_the_same_base() {
    let a: Vec<_> = generate(5_000, 2024).collect();
    let b: Vec<_> = generate(5_000, 2024).collect();
    assert_eq!(a, b);
    // A shorter base is a prefix of a longer one with the same seed.
    let c: Vec<_> = generate(100, 2024).collect();
    assert_eq!(c[..], a[..100]);
}

#[test]
fn every_value_fits_the_catalogue() {
    let regions: HashSet<&str> = [
        "xian",
        "baoji",
        "xianyang",
        "weinan",
        "hanzhong",
        "yulin",
        "yanan",
        "ankang",
        "shangluo",
        "tongchuan",
    ]
    .into();
    let mut msisdns = HashSet::new();
    for s in generate(N, 11) {
        assert!(allowed("gender").contains(&s.gender.as_str()), "{s:?}");
        assert!(allowed("brand").contains(&s.brand.as_str()), "{s:?}");
        assert!(
            allowed("value_tier").contains(&s.value_tier.as_str()),
            "{s:?}"
        );
        assert!(
            allowed("student_stage").contains(&s.student_stage.as_str()),
            "{s:?}"
        );
        assert!(
            allowed("first_channel").contains(&s.first_channel.as_str()),
            "{s:?}"
        );
        assert!(
            allowed("second_channel").contains(&s.second_channel.as_str()),
            "{s:?}"
        );
        assert_ne!(s.first_channel, s.second_channel, "{s:?}");
        assert!(is_slot(&s.first_channel_slot), "{s:?}");
        assert!(is_slot(&s.second_channel_slot), "{s:?}");
        assert!(regions.contains(s.region.as_str()), "{s:?}");
        assert_eq!(s.value_tier, value_tier_for_arpu(s.arpu_3m), "{s:?}");
        assert!((16..=80).contains(&s.age), "{s:?}");
        assert!((0..=240).contains(&s.tenure_months), "{s:?}");
        assert!((0.0..=300.0).contains(&s.balance), "{s:?}");
        assert!(s.arpu_3m > 0.0 && s.arpu_3m.is_finite(), "{s:?}");
        assert!((0.0..=1.0).contains(&s.churn_risk), "{s:?}");
        assert!(s.complaints_30d >= 0, "{s:?}");
        assert_eq!(s.campus.is_some(), s.student_stage != "none", "{s:?}");
        assert!(s.timezone.is_none() && s.external_id.is_none(), "{s:?}");
        let (surname, given) = s.name.split_once(' ').expect("two-part name");
        assert!(
            surname.starts_with(char::is_uppercase) && !given.is_empty(),
            "{s:?}"
        );
        assert!(msisdns.insert(s.msisdn), "duplicate msisdn");
    }
}

#[test]
fn distributions_are_plausible() {
    let rows: Vec<_> = generate(N, 5).collect();
    let tier = |t: &'static str| move |s: &NewSubscriber| s.value_tier == t;
    assert_between("diamond", share(&rows, tier("diamond")), 0.01, 0.02);
    assert_between("gold", share(&rows, tier("gold")), 0.065, 0.095);
    assert_between("silver", share(&rows, tier("silver")), 0.135, 0.17);

    let students: Vec<_> = rows
        .iter()
        .filter(|s| s.student_stage != "none")
        .cloned()
        .collect();
    assert_between("students", students.len() as f64 / N as f64, 0.11, 0.13);
    let stage = |t: &'static str| move |s: &NewSubscriber| s.student_stage == t;
    assert_between("freshmen", share(&students, stage("freshman")), 0.22, 0.28);
    assert_between("in study", share(&students, stage("student")), 0.57, 0.63);
    assert_between("graduates", share(&students, stage("graduate")), 0.12, 0.18);
    assert_between(
        "students on mzone",
        share(&students, |s| s.brand == "mzone"),
        0.75,
        0.85,
    );
    assert!(students.iter().all(|s| (17..=24).contains(&s.age)));
    assert!(students.iter().all(|s| s.tenure_months <= 60));

    let adults: Vec<_> = rows
        .iter()
        .filter(|s| s.student_stage == "none")
        .cloned()
        .collect();
    let gotone = |s: &NewSubscriber| s.brand == "gotone";
    let high: Vec<_> = adults
        .iter()
        .filter(|s| s.arpu_3m >= 120.0)
        .cloned()
        .collect();
    let low: Vec<_> = adults
        .iter()
        .filter(|s| s.arpu_3m < 60.0)
        .cloned()
        .collect();
    assert!(
        share(&high, gotone) > 0.85,
        "high-ARPU subscribers are mostly gotone"
    );
    assert!(
        share(&low, |s| s.brand == "easyown") > 0.55,
        "low-ARPU mostly easyown"
    );

    assert_between("xian", share(&rows, |s| s.region == "xian"), 0.35, 0.45);
    assert_between(
        "sms first",
        share(&rows, |s| s.first_channel == "sms"),
        0.58,
        0.62,
    );
    assert_between(
        "outbound first",
        share(&rows, |s| s.first_channel == "outbound_call"),
        0.18,
        0.22,
    );
    assert_between(
        "service first",
        share(&rows, |s| s.first_channel == "service"),
        0.13,
        0.17,
    );
    assert_between(
        "email first",
        share(&rows, |s| s.first_channel == "email"),
        0.04,
        0.06,
    );
    assert_between(
        "balance < 10",
        share(&rows, |s| s.balance < 10.0),
        0.08,
        0.12,
    );
    assert_between(
        "complainers",
        share(&rows, |s| s.complaints_30d >= 1),
        0.04,
        0.06,
    );
    assert_between(
        "do not disturb",
        share(&rows, |s| s.do_not_disturb),
        0.015,
        0.025,
    );
    assert_between("opted out", share(&rows, |s| s.opt_out), 0.025, 0.035);
    assert_between("female", share(&rows, |s| s.gender == "female"), 0.48, 0.51);
    assert_between(
        "unknown gender",
        share(&rows, |s| s.gender == "unknown"),
        0.005,
        0.015,
    );

    assert_between("mean churn risk", mean(&rows, |_| true), 0.1, 0.3);
    assert!(
        mean(&rows, |s| s.student_stage != "none") > mean(&rows, |s| s.student_stage == "none")
    );
    assert!(mean(&rows, |s| s.complaints_30d > 0) > mean(&rows, |s| s.complaints_30d == 0) + 0.1);
    assert!(
        mean(&rows, |s| s.student_stage == "graduate")
            > mean(&rows, |s| s.student_stage == "student")
    );
}
