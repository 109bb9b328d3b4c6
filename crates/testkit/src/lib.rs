//! Test-only helpers shared by the whole workspace (a dev-dependency, never a dependency of
//! product code): where a test's random choices come from.
//!
//! One rule for every seeded test, property tests and seeded end-to-end tests alike:
//!
//! - an explicit seed in the environment wins (`PROPTEST_RNG_SEED` for property tests, the
//!   variable the test names for the others), so a failure can be repeated;
//! - under `CI=true` the seed is fixed ([`CI_SEED`]), so a CI run is repeatable and a red CI is
//!   never a coin toss;
//! - otherwise it is random, so local runs keep exploring new cases.
//!
//! The seed is printed to stdout, which the test harness shows with a failing test's output,
//! together with the variable that repeats it.

use std::hash::{BuildHasher, RandomState};

use proptest::test_runner::{Config, FileFailurePersistence, RngAlgorithm, RngSeed};

/// The seed of every seeded test under `CI=true`.
pub const CI_SEED: u64 = 0x00c0_ffee_2026_1129;

/// Whether this is a CI run (`CI=true`, as GitHub, GitLab and `.ci/run` set it; `CI=1` too).
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Where a seed came from, for the message that tells how to repeat it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedSource {
    Env,
    Ci,
    Random,
}

/// The seed named by `var`, else [`CI_SEED`] under CI, else a random one.
pub fn choose_seed(var: &str) -> (u64, SeedSource) {
    if let Ok(s) = std::env::var(var) {
        let seed = s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{var}={s:?}: expected an unsigned integer"));
        return (seed, SeedSource::Env);
    }
    if ci() {
        return (CI_SEED, SeedSource::Ci);
    }
    // RandomState is seeded from the OS once per process and per instance thereafter: enough
    // for "a different seed each run", without a dependency on rand.
    (RandomState::new().hash_one(0u8), SeedSource::Random)
}

fn describe(source: SeedSource) -> &'static str {
    match source {
        SeedSource::Env => "from the environment",
        SeedSource::Ci => "fixed under CI=true",
        SeedSource::Random => "random",
    }
}

/// The seed of a seeded test (e.g. the kill moments of a crash test), printed with how to
/// repeat it: `var` set to the printed value.
pub fn seed(var: &str, what: &str) -> u64 {
    let (seed, source) = choose_seed(var);
    println!(
        "{what}: seed {seed} ({}; {var}={seed} repeats it)",
        describe(source)
    );
    seed
}

/// The property-test config of every `proptest!` block in the workspace:
/// `#![proptest_config(testkit::proptest_config(cases))]`.
///
/// The seed follows the rule above (`PROPTEST_RNG_SEED` repeats a printed one); the RNG is
/// ChaCha, whose stream for a given seed is fixed across platforms and proptest versions;
/// failures are saved under `proptest-regressions/` beside the crate's `src/` (commit those
/// files: the saved cases are replayed first on every run, CI included). Other `PROPTEST_*`
/// variables (e.g. `PROPTEST_CASES`) still apply: `proptest!` passes this config through
/// `contextualize_config`.
pub fn proptest_config(cases: u32) -> Config {
    let (seed, source) = choose_seed("PROPTEST_RNG_SEED");
    println!(
        "proptest: seed {seed} ({}; PROPTEST_RNG_SEED={seed} repeats it)",
        describe(source)
    );
    Config {
        cases,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel(
            "proptest-regressions",
        ))),
        ..Config::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_carries_a_fixed_seed_and_file_persistence() {
        let config = proptest_config(7);
        assert_eq!(config.cases, 7);
        assert!(matches!(config.rng_seed, RngSeed::Fixed(_)));
        assert_eq!(config.rng_algorithm, RngAlgorithm::ChaCha);
        assert!(config.failure_persistence.is_some());
    }
}
