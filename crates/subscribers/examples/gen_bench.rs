//! Times the synthetic generator: `cargo run --release -p subscribers --example gen_bench [n] [seed]`.

use std::collections::BTreeMap;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map_or(1_000_000, |a| a.parse().expect("n: a row count"));
    let seed: u64 = args
        .next()
        .map_or(1, |a| a.parse().expect("seed: an integer"));

    let start = Instant::now();
    let rows: Vec<_> = subscribers::generate(n, seed).collect();
    let elapsed = start.elapsed();
    println!(
        "generated {} rows in {:.3} s",
        rows.len(),
        elapsed.as_secs_f64()
    );

    // Shares printed so a run doubles as a quick look at the distributions.
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for s in &rows {
        *counts.entry(format!("tier {}", s.value_tier)).or_default() += 1;
        *counts
            .entry(format!("stage {}", s.student_stage))
            .or_default() += 1;
        *counts.entry(format!("brand {}", s.brand)).or_default() += 1;
        *counts
            .entry(format!("first {}", s.first_channel))
            .or_default() += 1;
        *counts.entry(format!("region {}", s.region)).or_default() += 1;
        if s.balance < 10.0 {
            *counts.entry("balance < 10".to_owned()).or_default() += 1;
        }
        if s.complaints_30d > 0 {
            *counts.entry("complained".to_owned()).or_default() += 1;
        }
    }
    for (what, count) in counts {
        println!(
            "{what:>20}: {:6.2}%",
            100.0 * count as f64 / n.max(1) as f64
        );
    }
    let churn: f64 = rows.iter().map(|s| s.churn_risk).sum::<f64>() / n.max(1) as f64;
    println!("{:>20}: {churn:.3}", "mean churn_risk");
}
