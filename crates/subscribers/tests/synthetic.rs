use std::collections::HashSet;
use std::sync::Arc;

use catalogue::{Catalogue, Value};
use store::subscribers::NewSubscriber;

const N: usize = 200_000;

fn generate(n: usize, seed: u64) -> impl Iterator<Item = NewSubscriber> {
    subscribers::generate(&catalogue::shipped(), n, seed)
}

/// The value of a number attribute (integer or decimal).
fn num(s: &NewSubscriber, name: &str) -> f64 {
    match s.get(name) {
        Some(Value::Dec(d)) => d,
        Some(Value::Int(i)) => i as f64,
        other => panic!("{name} is {other:?}, not a number"),
    }
}

fn share(rows: &[NewSubscriber], pred: impl Fn(&NewSubscriber) -> bool) -> f64 {
    rows.iter().filter(|s| pred(s)).count() as f64 / rows.len() as f64
}

fn mean(rows: &[NewSubscriber], pred: impl Fn(&NewSubscriber) -> bool) -> f64 {
    let picked: Vec<f64> = rows
        .iter()
        .filter(|s| pred(s))
        .map(|s| num(s, "churn_risk"))
        .collect();
    picked.iter().sum::<f64>() / picked.len() as f64
}

fn assert_between(what: &str, value: f64, low: f64, high: f64) {
    assert!(
        (low..=high).contains(&value),
        "{what} = {value:.4}, expected {low}..={high}"
    );
}

fn allowed(name: &str) -> Vec<String> {
    let cat = catalogue::shipped();
    let values = cat
        .get(name)
        .expect("field in catalogue")
        .kind
        .values()
        .to_vec();
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
        for enumerated in [
            "gender",
            "brand",
            "student_stage",
            "first_channel",
            "second_channel",
        ] {
            assert!(allowed(enumerated).contains(&s.text(enumerated)), "{s:?}");
        }
        assert_ne!(s.text("first_channel"), s.text("second_channel"), "{s:?}");
        assert!(is_slot(&s.text("first_channel_slot")), "{s:?}");
        assert!(is_slot(&s.text("second_channel_slot")), "{s:?}");
        assert!(regions.contains(s.text("region").as_str()), "{s:?}");
        assert_eq!(s.get("value_tier"), None, "derived, not generated: {s:?}");
        assert!(matches!(s.get("age"), Some(Value::Int(16..=80))), "{s:?}");
        assert!((0.0..=240.0).contains(&num(&s, "tenure_months")), "{s:?}");
        assert!((0.0..=300.0).contains(&num(&s, "balance")), "{s:?}");
        assert!(
            num(&s, "arpu_3m") > 0.0 && num(&s, "arpu_3m").is_finite(),
            "{s:?}"
        );
        assert!((0.0..=1.0).contains(&num(&s, "churn_risk")), "{s:?}");
        assert!(num(&s, "complaints_30d") >= 0.0, "{s:?}");
        assert_eq!(
            s.get("campus") != Some(Value::Null),
            s.text("student_stage") != "none",
            "{s:?}"
        );
        // Whoever chose e-mail as a channel can be reached by it.
        let email = s.text("email");
        if [s.text("first_channel"), s.text("second_channel")].contains(&"email".to_owned()) {
            assert!(!email.is_empty(), "{s:?}");
        }
        assert!(
            email.is_empty() || catalogue::email_problem(&email).is_none(),
            "{s:?}"
        );
        assert!(s.timezone.is_none() && s.external_id.is_none(), "{s:?}");
        let name = s.text("name");
        let (surname, given) = name.split_once(' ').expect("two-part name");
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
    // The tiers by 3-month ARPU, as the shipped catalogue derives `value_tier`.
    let tier = |t: &'static str| {
        move |s: &NewSubscriber| {
            let arpu = num(s, "arpu_3m");
            let tier = if arpu > 500.0 {
                "diamond"
            } else if arpu >= 200.0 {
                "gold"
            } else if arpu >= 120.0 {
                "silver"
            } else {
                "ordinary"
            };
            tier == t
        }
    };
    assert_between("diamond", share(&rows, tier("diamond")), 0.01, 0.02);
    assert_between("gold", share(&rows, tier("gold")), 0.065, 0.095);
    assert_between("silver", share(&rows, tier("silver")), 0.135, 0.17);

    let students: Vec<_> = rows
        .iter()
        .filter(|s| s.text("student_stage") != "none")
        .cloned()
        .collect();
    assert_between("students", students.len() as f64 / N as f64, 0.11, 0.13);
    let stage = |t: &'static str| move |s: &NewSubscriber| s.text("student_stage") == t;
    assert_between("freshmen", share(&students, stage("freshman")), 0.22, 0.28);
    assert_between("in study", share(&students, stage("student")), 0.57, 0.63);
    assert_between("graduates", share(&students, stage("graduate")), 0.12, 0.18);
    assert_between(
        "students on mzone",
        share(&students, |s| s.text("brand") == "mzone"),
        0.75,
        0.85,
    );
    assert!(
        students
            .iter()
            .all(|s| (17.0..=24.0).contains(&num(s, "age")))
    );
    assert!(students.iter().all(|s| num(s, "tenure_months") <= 60.0));

    let adults: Vec<_> = rows
        .iter()
        .filter(|s| s.text("student_stage") == "none")
        .cloned()
        .collect();
    let gotone = |s: &NewSubscriber| s.text("brand") == "gotone";
    let high: Vec<_> = adults
        .iter()
        .filter(|s| num(s, "arpu_3m") >= 120.0)
        .cloned()
        .collect();
    let low: Vec<_> = adults
        .iter()
        .filter(|s| num(s, "arpu_3m") < 60.0)
        .cloned()
        .collect();
    assert!(
        share(&high, gotone) > 0.85,
        "high-ARPU subscribers are mostly gotone"
    );
    assert!(
        share(&low, |s| s.text("brand") == "easyown") > 0.55,
        "low-ARPU mostly easyown"
    );

    assert_between(
        "xian",
        share(&rows, |s| s.text("region") == "xian"),
        0.35,
        0.45,
    );
    assert_between(
        "sms first",
        share(&rows, |s| s.text("first_channel") == "sms"),
        0.58,
        0.62,
    );
    assert_between(
        "outbound first",
        share(&rows, |s| s.text("first_channel") == "outbound_call"),
        0.18,
        0.22,
    );
    assert_between(
        "service first",
        share(&rows, |s| s.text("first_channel") == "service"),
        0.13,
        0.17,
    );
    assert_between(
        "email first",
        share(&rows, |s| s.text("first_channel") == "email"),
        0.04,
        0.06,
    );
    assert_between(
        "balance < 10",
        share(&rows, |s| num(s, "balance") < 10.0),
        0.08,
        0.12,
    );
    assert_between(
        "complainers",
        share(&rows, |s| num(s, "complaints_30d") >= 1.0),
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
    // E-mail is someone's first or second choice about one time in ten; a quarter of the
    // rest gave an address too.
    assert_between(
        "with an e-mail address",
        share(&rows, |s| !s.text("email").is_empty()),
        0.28,
        0.36,
    );
    assert_between(
        "female",
        share(&rows, |s| s.text("gender") == "female"),
        0.48,
        0.51,
    );
    assert_between(
        "unknown gender",
        share(&rows, |s| s.text("gender") == "unknown"),
        0.005,
        0.015,
    );

    assert_between("mean churn risk", mean(&rows, |_| true), 0.1, 0.3);
    assert!(
        mean(&rows, |s| s.text("student_stage") != "none")
            > mean(&rows, |s| s.text("student_stage") == "none")
    );
    assert!(
        mean(&rows, |s| num(s, "complaints_30d") > 0.0)
            > mean(&rows, |s| num(s, "complaints_30d") == 0.0) + 0.1
    );
    assert!(
        mean(&rows, |s| s.text("student_stage") == "graduate")
            > mean(&rows, |s| s.text("student_stage") == "student")
    );
}

/// A catalogue that redeclares some shipped attributes differently and adds others.
fn custom_catalogue() -> Arc<Catalogue> {
    let yaml = "\
attributes:
  - name: age
    type: integer
    min: 0
    max: 30
    required: true
  - name: brand
    type: enum
    values: [gotone, other]
    required: true
  - name: arpu_3m
    type: decimal
    required: true
  - name: data_gb_month
    type: decimal
    min: 0
    max: 50
    required: true
  - name: plan
    type: enum
    values: [a, b]
    required: true
  - name: last_recharge
    type: date
  - name: activated_at
    type: timestamp
    required: true
  - name: lines
    type: integer
    min: 1
    required: true
  - name: roaming
    type: bool
    required: true
  - name: slot
    type: text
    format: time_slot
    required: true
";
    Arc::new(
        spec::catalogue::compile_catalogue("attributes.yaml", yaml)
            .unwrap_or_else(|d| panic!("{d:?}")),
    )
}

#[test]
fn other_catalogues_get_values_that_fit_their_declarations() {
    let cat = custom_catalogue();
    let rows: Vec<_> = subscribers::generate(&cat, 5_000, 3).collect();
    let again: Vec<_> = subscribers::generate(&cat, 5_000, 3).collect();
    assert_eq!(rows, again, "deterministic from the seed");
    // Modelled attributes the catalogue declares alike keep their values for the seed.
    let shipped: Vec<_> = generate(5_000, 3).collect();
    for (s, t) in rows.iter().zip(&shipped) {
        assert_eq!(s.msisdn, t.msisdn);
        assert_eq!(s.get("arpu_3m"), t.get("arpu_3m"));
        assert_eq!(s.opt_out, t.opt_out);
        assert_eq!(s.get("churn_risk"), None, "not declared");
    }
    let mut plans = HashSet::new();
    let mut modelled_ages = 0;
    for (s, t) in rows.iter().zip(&shipped) {
        let age = num(s, "age");
        assert!((0.0..=30.0).contains(&age), "{s:?}");
        if s.get("age") == t.get("age") {
            modelled_ages += 1;
        }
        assert!(
            ["gotone", "other"].contains(&s.text("brand").as_str()),
            "{s:?}"
        );
        assert!((0.0..=50.0).contains(&num(s, "data_gb_month")), "{s:?}");
        plans.insert(s.text("plan"));
        let recharge = s.text("last_recharge");
        assert!(recharge.is_empty() || is_date(&recharge), "{s:?}");
        let at = s.text("activated_at");
        assert!(
            at.len() == 20
                && chrono::NaiveDateTime::parse_from_str(&at, "%Y-%m-%dT%H:%M:%SZ").is_ok(),
            "{s:?}"
        );
        assert!(num(s, "lines") >= 1.0, "{s:?}");
        assert!(matches!(s.get("roaming"), Some(Value::Bool(_))), "{s:?}");
        assert!(is_slot(&s.text("slot")), "{s:?}");
    }
    assert_eq!(plans.len(), 2, "both enum values occur");
    assert!(
        modelled_ages > 500,
        "young subscribers keep their modelled age: {modelled_ages}"
    );
    assert!(
        rows.iter()
            .any(|s| s.get("last_recharge") == Some(Value::Null)),
        "optional attributes are sometimes empty"
    );
}

fn is_date(s: &str) -> bool {
    s.len() == 10 && chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
}
