//! A synthetic subscriber base shaped like a Chinese provincial operator's (Shaanxi-like), for
//! demos, load tests and campaign rehearsals where real subscriber data cannot be used.
//!
//! The shares below follow DOMAIN.md where it gives figures (value tiers by ARPU, students as a
//! key segment, first/second choice channels) and plausible guesses elsewhere.
//!
//! Rows follow a [`Catalogue`]: each attribute of the shipped catalogue that the catalogue
//! declares gets the value modelled here (when that value fits the declaration: kind, enum
//! values, range, format); every other declared attribute gets a plausible value for its
//! kind and bounds, drawn from a second random stream so that the modelled ones stay the same
//! for a seed whatever else the catalogue declares.

use std::sync::Arc;

use catalogue::{Attribute, Attrs, Catalogue, Kind, TextFormat, Value};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use store::subscribers::NewSubscriber;

/// Mobile number prefixes (the first three digits) in use by the operator.
const PREFIXES: [&str; 20] = [
    "134", "135", "136", "137", "138", "139", "147", "150", "151", "152", "157", "158", "159",
    "178", "182", "183", "184", "187", "188", "198",
];
/// Eight digits follow the prefix.
const SUFFIXES_PER_PREFIX: u64 = 100_000_000;
const NUMBER_SPACE: u64 = PREFIXES.len() as u64 * SUFFIXES_PER_PREFIX;

/// Weighted tables: weights are per mille so one `random_range(0..1000)` draw picks an entry.
type Table<T> = [(T, u32)];

const REGIONS: &Table<&str> = &[
    ("xian", 350),
    ("xianyang", 110),
    ("weinan", 110),
    ("baoji", 90),
    ("hanzhong", 80),
    ("yulin", 80),
    ("ankang", 60),
    ("yanan", 50),
    ("shangluo", 40),
    ("tongchuan", 30),
];

const CAMPUSES: &[&str] = &[
    "Xi'an Jiaotong University",
    "Northwestern Polytechnical University",
    "Xidian University",
    "Shaanxi Normal University",
    "Northwest University",
    "Chang'an University",
    "Xi'an University of Technology",
    "Xi'an University of Architecture and Technology",
];

const STUDENT_STAGES: &Table<&str> = &[("freshman", 250), ("student", 600), ("graduate", 150)];

const GENDERS: &Table<&str> = &[("female", 495), ("male", 495), ("unknown", 10)];

const CHANNELS: &Table<&str> = &[
    ("sms", 600),
    ("outbound_call", 200),
    ("service", 150),
    ("email", 50),
];

/// Mail domains of the synthetic addresses: reserved example names, so a test or demo that
/// sends to them reaches nobody.
const MAIL_DOMAINS: &Table<&str> = &[
    ("example.com", 500),
    ("example.net", 300),
    ("example.org", 200),
];

/// The share of subscribers who gave an address without choosing e-mail as a channel.
const MAIL_SHARE: f64 = 0.25;

const SLOTS: &Table<&str> = &[
    ("09:00-12:00", 300),
    ("12:00-14:00", 200),
    ("14:00-18:00", 200),
    ("18:00-21:00", 300),
];

const SURNAMES: &[&str] = &[
    "Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Zhao", "Huang", "Zhou", "Wu", "Xu", "Sun", "Hu",
    "Zhu", "Gao", "Lin", "He", "Guo", "Ma", "Luo",
];
const FEMALE_GIVEN: &[&str] = &[
    "Fang", "Na", "Min", "Jing", "Li", "Yan", "Juan", "Xiuying", "Yuxin", "Ting", "Hui", "Xue",
];
const MALE_GIVEN: &[&str] = &[
    "Wei", "Qiang", "Lei", "Jun", "Yong", "Jie", "Tao", "Ming", "Chao", "Hao", "Peng", "Haoran",
];

const STUDENT_SHARE: f64 = 0.12;

/// A deterministic synthetic base of `n` subscribers following `catalogue`: the same
/// catalogue and `seed` always yield the same rows, in the same order.
///
/// Mobile numbers are unique across the whole base by construction (each row's index goes
/// through a seed-dependent permutation of the number space), not merely unlikely to repeat.
///
/// # Panics
///
/// If `n` exceeds the 2,000,000,000 numbers the prefixes provide.
pub fn generate(
    catalogue: &Arc<Catalogue>,
    n: usize,
    seed: u64,
) -> impl Iterator<Item = NewSubscriber> + use<> {
    assert!(
        n as u64 <= NUMBER_SPACE,
        "a synthetic base holds at most {NUMBER_SPACE} subscribers, asked for {n}"
    );
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let numbering = Numbering::new(&mut rng);
    let mut slots = Vec::new();
    let mut others = Vec::new();
    for (i, a) in catalogue.declared().enumerate() {
        match MODELLED.iter().position(|m| *m == a.name) {
            Some(k) => slots.push((k, i, a.clone())),
            None => others.push((i, a.clone())),
        }
    }
    Generator {
        rng,
        // Another stream for attributes not modelled here, so that declaring one does not
        // change the others' values.
        extra: ChaCha8Rng::seed_from_u64(seed ^ 0x5EED_CA7A_1061_0E00),
        // Addresses came later: their own stream keeps every other value as it was.
        mail: ChaCha8Rng::seed_from_u64(seed ^ 0x0E_4A11_ADD2_E550),
        numbering,
        catalogue: catalogue.clone(),
        slots,
        others,
        next: 0,
        n: n as u64,
    }
}

/// The attributes of the shipped catalogue this model draws.
const MODELLED: [&str; 17] = [
    "name",
    "gender",
    "age",
    "region",
    "brand",
    "arpu_3m",
    "balance",
    "tenure_months",
    "student_stage",
    "campus",
    "first_channel",
    "first_channel_slot",
    "second_channel",
    "second_channel_slot",
    "complaints_30d",
    "churn_risk",
    "email",
];

/// An affine permutation `x -> (a·x + b) mod NUMBER_SPACE`: a bijection whenever `a` is coprime
/// with the modulus, so distinct indices always get distinct numbers while still scattering
/// them over all prefixes.
struct Numbering {
    a: u64,
    b: u64,
}

impl Numbering {
    fn new(rng: &mut ChaCha8Rng) -> Self {
        // NUMBER_SPACE = 2^10 · 5^9, so coprime means odd and not a multiple of 5.
        let a = loop {
            let a = rng.random_range(1..NUMBER_SPACE);
            if a % 2 != 0 && a % 5 != 0 {
                break a;
            }
        };
        let b = rng.random_range(0..NUMBER_SPACE);
        Numbering { a, b }
    }

    fn msisdn(&self, index: u64) -> String {
        // Both factors are below 2^31, so the product fits in u64.
        let y = (self.a * index + self.b) % NUMBER_SPACE;
        let mut msisdn = String::with_capacity(11);
        msisdn.push_str(PREFIXES[(y / SUFFIXES_PER_PREFIX) as usize]);
        // Written digit by digit: `format!` was a visible share of the generation time.
        let suffix = y % SUFFIXES_PER_PREFIX;
        for power in (0..8).rev() {
            msisdn.push(char::from(b'0' + (suffix / 10u64.pow(power) % 10) as u8));
        }
        msisdn
    }
}

struct Generator {
    rng: ChaCha8Rng,
    extra: ChaCha8Rng,
    mail: ChaCha8Rng,
    numbering: Numbering,
    catalogue: Arc<Catalogue>,
    /// The [`MODELLED`] attributes the catalogue declares: (position in [`MODELLED`],
    /// declared index, attribute).
    slots: Vec<(usize, usize, Attribute)>,
    /// Declared attributes not modelled here: (declared index, attribute).
    others: Vec<(usize, Attribute)>,
    next: u64,
    n: u64,
}

impl Iterator for Generator {
    type Item = NewSubscriber;

    fn next(&mut self) -> Option<NewSubscriber> {
        if self.next >= self.n {
            return None;
        }
        let index = self.next;
        self.next += 1;
        Some(self.row(index))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.n - self.next) as usize;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Generator {}

impl Generator {
    fn row(&mut self, index: u64) -> NewSubscriber {
        let msisdn = self.numbering.msisdn(index);
        let rng = &mut self.rng;

        let gender = pick(rng, GENDERS);
        let stage = if rng.random_bool(STUDENT_SHARE) {
            pick(rng, STUDENT_STAGES)
        } else {
            "none"
        };
        let student = stage != "none";

        let age: i32 = match stage {
            "freshman" => rng.random_range(17..=19),
            "student" => rng.random_range(18..=23),
            "graduate" => rng.random_range(21..=24),
            _ => normal(rng, 40.0, 13.0).round().clamp(16.0, 80.0) as i32,
        };

        // Log-normal ARPU. One log-normal cannot give both ~15% silver and 1-2% diamond (its
        // upper tail is too thin), so 2% of adults come from a separate high-value group, the
        // operator's core customers. Overall: ~1.5% diamond, ~8% gold, ~15% silver; students
        // spend far less.
        let arpu = if student {
            log_normal(rng, 3.6, 0.55)
        } else if rng.random_bool(0.02) {
            log_normal(rng, 6.35, 0.35)
        } else {
            log_normal(rng, 4.35, 0.7)
        };
        let arpu_3m = cents(arpu.min(5000.0));

        let tenure_months: i32 = match stage {
            "freshman" => rng.random_range(0..=3),
            "student" => rng.random_range(4..=48),
            "graduate" => rng.random_range(36..=60),
            _ => {
                // Nobody can have held a number since before they were about 15.
                let cap = ((age - 15).max(1) * 12).min(240);
                ((-(1.0 - rng.random::<f64>()).ln() * 60.0) as i32).min(cap)
            }
        };

        let (low_balance_share, balance_median) = if student { (0.15, 30.0) } else { (0.09, 60.0) };
        let balance = if rng.random_bool(low_balance_share) {
            cents(rng.random_range(0.0..10.0))
        } else {
            cents((10.0 + log_normal(rng, f64::ln(balance_median), 0.75)).min(300.0))
        };

        let brand = if student {
            pick(rng, &[("mzone", 800), ("easyown", 120), ("gotone", 80)])
        } else if arpu_3m >= 120.0 {
            pick(rng, &[("gotone", 920), ("easyown", 50), ("mzone", 30)])
        } else if arpu_3m >= 60.0 {
            pick(rng, &[("gotone", 550), ("easyown", 400), ("mzone", 50)])
        } else if age < 30 {
            pick(rng, &[("easyown", 550), ("mzone", 250), ("gotone", 200)])
        } else {
            pick(rng, &[("easyown", 700), ("gotone", 250), ("mzone", 50)])
        };

        // Campuses are all in Xi'an, so most students live there whatever their home town.
        let region = if student && rng.random_bool(0.8) {
            "xian"
        } else {
            pick(rng, REGIONS)
        };
        let campus = student.then(|| CAMPUSES[rng.random_range(0..CAMPUSES.len())].to_owned());

        let first_channel = pick(rng, CHANNELS);
        let second_channel = loop {
            let c = pick(rng, CHANNELS);
            if c != first_channel {
                break c;
            }
        };
        let first_channel_slot = pick(rng, SLOTS);
        let second_channel_slot = pick(rng, SLOTS);

        let complaints_30d: i32 = if rng.random_bool(0.95) {
            0
        } else {
            match rng.random_range(0..10) {
                0..7 => 1,
                7..9 => 2,
                _ => rng.random_range(3..=5),
            }
        };
        let do_not_disturb = rng.random_bool(0.02);
        let opt_out = rng.random_bool(0.03);

        // Mostly loyal (a skewed base around 0.1), raised by the signals DOMAIN.md names:
        // students are disloyal, graduation causes churn, complaints and empty balances precede it.
        let stage_risk = match stage {
            "freshman" => 0.05,
            "student" => 0.1,
            "graduate" => 0.3,
            _ => 0.0,
        };
        let u = rng.random::<f64>();
        let mut churn = u * u * u.sqrt() * 0.6 + stage_risk;
        churn += 0.12 * f64::from(complaints_30d.min(3));
        if balance < 10.0 {
            churn += 0.08;
        }
        if tenure_months > 60 {
            churn -= 0.05;
        }
        let churn_risk = (churn.clamp(0.0, 1.0) * 1000.0).round() / 1000.0;

        let surname = SURNAMES[rng.random_range(0..SURNAMES.len())];
        let given_names = match gender {
            "female" => FEMALE_GIVEN,
            "male" => MALE_GIVEN,
            _ if rng.random_bool(0.5) => FEMALE_GIVEN,
            _ => MALE_GIVEN,
        };
        let given = given_names[rng.random_range(0..given_names.len())];

        // Everyone who chose e-mail as a channel gave an address; a quarter of the rest did.
        let chose_mail = first_channel == "email" || second_channel == "email";
        let email = (chose_mail || self.mail.random_bool(MAIL_SHARE)).then(|| {
            format!(
                "{}.{}{index}@{}",
                given.to_lowercase(),
                surname.to_lowercase(),
                pick(&mut self.mail, MAIL_DOMAINS)
            )
        });

        let values: [Value; MODELLED.len()] = [
            Value::Text([surname, given].join(" ")),
            gender.into(),
            age.into(),
            region.into(),
            brand.into(),
            arpu_3m.into(),
            balance.into(),
            tenure_months.into(),
            stage.into(),
            campus.into(),
            first_channel.into(),
            first_channel_slot.into(),
            second_channel.into(),
            second_channel_slot.into(),
            complaints_30d.into(),
            churn_risk.into(),
            email.into(),
        ];
        let mut values = values.map(Some);
        let mut attrs = Attrs::new(self.catalogue.clone());
        for (k, i, attr) in &self.slots {
            let value = values[*k].take().unwrap_or(Value::Null);
            let value = if fits(attr, &value) {
                value
            } else {
                plausible(&mut self.extra, attr)
            };
            attrs.set_at(*i, value);
        }
        for (i, attr) in &self.others {
            attrs.set_at(*i, plausible(&mut self.extra, attr));
        }

        NewSubscriber {
            msisdn,
            external_id: None,
            timezone: None,
            opt_out,
            do_not_disturb,
            attrs,
        }
    }
}

/// Whether a modelled value fits the catalogue's declaration of its attribute.
fn fits(attr: &Attribute, value: &Value) -> bool {
    let in_range = |x: f64| attr.min.is_none_or(|m| x >= m) && attr.max.is_none_or(|m| x <= m);
    match (&attr.kind, value) {
        (_, Value::Null) => !attr.required,
        (Kind::Integer, Value::Int(i)) => in_range(*i as f64),
        (Kind::Decimal, Value::Dec(d)) => in_range(*d),
        (Kind::Enum { values }, Value::Text(t)) => values.iter().any(|v| v == t),
        (Kind::Text, Value::Text(t)) => match attr.format {
            None => true,
            Some(TextFormat::TimeSlot) => crate::import::is_slot(t),
            Some(TextFormat::Email) => catalogue::is_email_address(t),
        },
        (Kind::Bool, Value::Bool(_)) => true,
        _ => false,
    }
}

/// A value for an attribute the model knows nothing of: by kind, inside its bounds.
/// Optional attributes are empty one time in ten.
fn plausible(rng: &mut ChaCha8Rng, attr: &Attribute) -> Value {
    if !attr.required && rng.random_bool(0.1) {
        return Value::Null;
    }
    // Without declared bounds: 0 to 100, or 100 wide from the one bound given.
    let (low, high) = match (attr.min, attr.max) {
        (Some(a), Some(b)) => (a, b),
        (Some(a), None) => (a, a + 100.0),
        (None, Some(b)) => (b - 100.0, b),
        (None, None) => (0.0, 100.0),
    };
    match &attr.kind {
        Kind::Integer => {
            let (low, high) = (low.ceil() as i64, high.floor() as i64);
            Value::Int(if low < high {
                rng.random_range(low..=high)
            } else {
                low
            })
        }
        Kind::Decimal => {
            let x = if low < high {
                rng.random_range(low..=high)
            } else {
                low
            };
            Value::Dec(cents(x).clamp(low, high))
        }
        Kind::Enum { values } => Value::Text(values[rng.random_range(0..values.len())].clone()),
        Kind::Bool => Value::Bool(rng.random_bool(0.5)),
        Kind::Text => match attr.format {
            Some(TextFormat::TimeSlot) => Value::Text(pick(rng, SLOTS).to_owned()),
            Some(TextFormat::Email) => Value::Text(format!(
                "{}{}@example.com",
                attr.name,
                rng.random_range(1..=1_000_000)
            )),
            None => Value::Text(format!("{} {}", attr.name, rng.random_range(1..=20))),
        },
        // A day or an instant of 2020 to 2026.
        Kind::Date => {
            let day = chrono::NaiveDate::from_ymd_opt(2020, 1, 1).expect("a real day")
                + chrono::Days::new(rng.random_range(0..7 * 365));
            Value::Text(day.format("%Y-%m-%d").to_string())
        }
        Kind::Timestamp => {
            let start = chrono::DateTime::from_timestamp(1_577_836_800, 0).expect("2020-01-01");
            let t = start + chrono::TimeDelta::seconds(rng.random_range(0..7 * 365 * 86_400));
            Value::Text(t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        }
    }
}

fn pick<T: Copy>(rng: &mut ChaCha8Rng, table: &Table<T>) -> T {
    let mut roll = rng.random_range(0..1000u32);
    for &(item, weight) in table {
        if roll < weight {
            return item;
        }
        roll -= weight;
    }
    // Tables whose weights sum below 1000 give the remainder to their last entry.
    table[table.len() - 1].0
}

/// Box-Muller; `rand_distr` is not a dependency and one normal draw per call is enough here.
fn normal(rng: &mut ChaCha8Rng, mean: f64, sd: f64) -> f64 {
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    mean + sd * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn log_normal(rng: &mut ChaCha8Rng, mu: f64, sigma: f64) -> f64 {
    normal(rng, mu, sigma).exp()
}

fn cents(yuan: f64) -> f64 {
    (yuan * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn generate(n: usize, seed: u64) -> impl Iterator<Item = NewSubscriber> {
        super::generate(&catalogue::shipped(), n, seed)
    }

    #[test]
    fn same_seed_same_rows_other_seed_other_rows() {
        let a: Vec<_> = generate(2_000, 7).collect();
        let b: Vec<_> = generate(2_000, 7).collect();
        let c: Vec<_> = generate(2_000, 8).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn exact_length_and_size_hint() {
        let it = generate(1_234, 1);
        assert_eq!(it.size_hint(), (1_234, Some(1_234)));
        assert_eq!(it.count(), 1_234);
        assert_eq!(generate(0, 1).count(), 0);
    }

    #[test]
    fn msisdns_are_unique_eleven_digits_with_real_prefixes() {
        let mut seen = HashSet::new();
        for s in generate(200_000, 42) {
            assert_eq!(s.msisdn.len(), 11, "{}", s.msisdn);
            assert!(s.msisdn.bytes().all(|b| b.is_ascii_digit()), "{}", s.msisdn);
            assert!(PREFIXES.contains(&&s.msisdn[..3]), "{}", s.msisdn);
            assert!(seen.insert(s.msisdn.clone()), "duplicate {}", s.msisdn);
        }
    }

    #[test]
    fn numbering_is_a_permutation_on_a_small_window() {
        // The uniqueness test above samples; this checks the algebra itself: consecutive
        // indices at the top of the space never wrap onto earlier numbers.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let numbering = Numbering::new(&mut rng);
        let mut seen = HashSet::new();
        for i in (NUMBER_SPACE - 50_000)..NUMBER_SPACE {
            assert!(seen.insert(numbering.msisdn(i)));
        }
        for i in 0..50_000 {
            assert!(seen.insert(numbering.msisdn(i)));
        }
    }

    #[test]
    fn weighted_tables_sum_to_one_thousand() {
        for (name, sum) in [
            ("regions", REGIONS.iter().map(|e| e.1).sum::<u32>()),
            ("stages", STUDENT_STAGES.iter().map(|e| e.1).sum()),
            ("genders", GENDERS.iter().map(|e| e.1).sum()),
            ("channels", CHANNELS.iter().map(|e| e.1).sum()),
            ("slots", SLOTS.iter().map(|e| e.1).sum()),
            ("mail domains", MAIL_DOMAINS.iter().map(|e| e.1).sum()),
        ] {
            assert_eq!(sum, 1000, "{name}");
        }
    }
}
