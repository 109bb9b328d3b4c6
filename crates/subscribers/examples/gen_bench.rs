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
    let rows: Vec<_> = subscribers::generate(&catalogue::shipped(), n, seed).collect();
    let elapsed = start.elapsed();
    println!(
        "generated {} rows in {:.3} s",
        rows.len(),
        elapsed.as_secs_f64()
    );

    // Shares printed so a run doubles as a quick look at the distributions.
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let number = |s: &store::subscribers::NewSubscriber, name: &str| match s.get(name) {
        Some(catalogue::Value::Dec(d)) => d,
        Some(catalogue::Value::Int(i)) => i as f64,
        _ => 0.0,
    };
    for s in &rows {
        for (label, name) in [
            ("stage", "student_stage"),
            ("brand", "brand"),
            ("first", "first_channel"),
            ("region", "region"),
        ] {
            *counts
                .entry(format!("{label} {}", s.text(name)))
                .or_default() += 1;
        }
        if number(s, "balance") < 10.0 {
            *counts.entry("balance < 10".to_owned()).or_default() += 1;
        }
        if number(s, "complaints_30d") > 0.0 {
            *counts.entry("complained".to_owned()).or_default() += 1;
        }
    }
    for (what, count) in counts {
        println!(
            "{what:>20}: {:6.2}%",
            100.0 * count as f64 / n.max(1) as f64
        );
    }
    let churn: f64 = rows.iter().map(|s| number(s, "churn_risk")).sum::<f64>() / n.max(1) as f64;
    println!("{:>20}: {churn:.3}", "mean churn_risk");
}
