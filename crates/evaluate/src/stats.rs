//! Proportions, their intervals and the treatment-versus-control comparison.
//!
//! The normal distribution is implemented here rather than taken from a stats crate, to keep the
//! dependency set of the workspace small; the tests pin it to published values.

use std::f64::consts::{FRAC_1_SQRT_2, PI};

use serde::Serialize;

/// Confidence level used when the caller passes something that is not a probability.
pub const DEFAULT_CONFIDENCE: f64 = 0.95;

/// Highest confidence honoured: beyond it z grows without bound and the intervals degenerate to
/// the whole range, which says nothing.
const MAX_CONFIDENCE: f64 = 0.999_999_999;

/// One arm's outcome on the campaign goal (e.g. bundle ordered).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct Arm {
    pub n: u64,
    pub converted: u64,
}

/// Treatment compared with control on the campaign goal.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Uplift {
    pub treatment_rate: f64,
    pub control_rate: f64,
    /// `treatment_rate - control_rate`, as a fraction (0.025 = 2.5 percentage points).
    pub absolute: f64,
    /// Confidence interval of `absolute`: Newcombe's hybrid score interval (method 10 of
    /// Newcombe 1998), built from the two arms' Wilson intervals.
    pub ci_low: f64,
    pub ci_high: f64,
    /// `absolute / control_rate`; `None` when the control rate is 0.
    pub relative: Option<f64>,
    /// Two-sided pooled two-proportion z-test; 1.0 when the test is undefined (an empty arm, or
    /// no variance because nobody or everybody converted).
    pub p_value: f64,
    /// The confidence level actually used (see [`uplift`] for how bad levels are handled).
    pub confidence: f64,
    /// The confidence interval excludes 0.
    pub significant: bool,
}

/// Wilson score interval of `converted / n`.
///
/// An empty arm (`n == 0`) knows nothing, so it gets `(0, 1)`. `converted > n` is bad input; it is
/// read as `converted == n` so a double-counted response cannot produce a rate above 1.
/// `confidence` is sanitised as in [`uplift`].
pub fn wilson(converted: u64, n: u64, confidence: f64) -> (f64, f64) {
    wilson_z(converted.min(n), n, z_for(sanitize_confidence(confidence)))
}

/// Compares treatment with control at the given two-sided confidence level (e.g. 0.95).
///
/// Never returns NaN: empty arms have rate 0, the widest interval and p-value 1. A confidence that
/// is NaN falls back to [`DEFAULT_CONFIDENCE`]; others are clamped into `[0, 0.999999999]`. The
/// level actually used is reported in [`Uplift::confidence`].
pub fn uplift(treatment: Arm, control: Arm, confidence: f64) -> Uplift {
    let confidence = sanitize_confidence(confidence);
    let z = z_for(confidence);
    let (t, c) = (clamp_arm(treatment), clamp_arm(control));
    let p1 = rate(t);
    let p2 = rate(c);
    let (l1, u1) = wilson_z(t.converted, t.n, z);
    let (l2, u2) = wilson_z(c.converted, c.n, z);
    let absolute = p1 - p2;
    // Newcombe (1998), method 10: combine each arm's distance to its own Wilson bound.
    let delta = (p1 - l1).hypot(u2 - p2);
    let epsilon = (u1 - p1).hypot(p2 - l2);
    let ci_low = (absolute - delta).max(-1.0);
    let ci_high = (absolute + epsilon).min(1.0);
    let both_observed = t.n > 0 && c.n > 0;
    Uplift {
        treatment_rate: p1,
        control_rate: p2,
        absolute,
        ci_low,
        ci_high,
        relative: (p2 > 0.0).then(|| absolute / p2),
        p_value: pooled_z_test(t, c),
        confidence,
        significant: both_observed && (ci_low > 0.0 || ci_high < 0.0),
    }
}

fn sanitize_confidence(confidence: f64) -> f64 {
    if confidence.is_nan() {
        DEFAULT_CONFIDENCE
    } else {
        confidence.clamp(0.0, MAX_CONFIDENCE)
    }
}

fn clamp_arm(a: Arm) -> Arm {
    Arm {
        n: a.n,
        converted: a.converted.min(a.n),
    }
}

fn rate(a: Arm) -> f64 {
    if a.n == 0 {
        0.0
    } else {
        a.converted as f64 / a.n as f64
    }
}

/// Two-sided critical value for a confidence level.
fn z_for(confidence: f64) -> f64 {
    normal_quantile(0.5 + confidence / 2.0)
}

/// Assumes `converted <= n`.
fn wilson_z(converted: u64, n: u64, z: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (x, n) = (converted as f64, n as f64);
    let z2 = z * z;
    // Multiplied through by n so nothing is divided by n twice; this stays accurate at n = 10^7.
    let centre = (x + z2 / 2.0) / (n + z2);
    let half = z / (n + z2) * (x * (n - x) / n + z2 / 4.0).sqrt();
    let p = x / n;
    // The interval always contains p in exact arithmetic; the clamps stop rounding breaking that.
    let low = if converted == 0 {
        0.0
    } else {
        (centre - half).clamp(0.0, p)
    };
    let high = if x == n {
        1.0
    } else {
        (centre + half).clamp(p, 1.0)
    };
    (low, high)
}

/// Pooled two-proportion z-test, two-sided.
fn pooled_z_test(t: Arm, c: Arm) -> f64 {
    if t.n == 0 || c.n == 0 {
        return 1.0;
    }
    let (n1, n2) = (t.n as f64, c.n as f64);
    // Summed as floats: the u64 sum can overflow for absurd counts, a panic in debug builds.
    let pooled = (t.converted as f64 + c.converted as f64) / (n1 + n2);
    let variance = pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2);
    if variance <= 0.0 {
        return 1.0;
    }
    let z = (rate(t) - rate(c)) / variance.sqrt();
    erfc(z.abs() * FRAC_1_SQRT_2).min(1.0)
}

/// Standard normal CDF.
pub(crate) fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x * FRAC_1_SQRT_2)
}

/// Complementary error function with relative error below 1e-11 over the whole real line.
pub(crate) fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x < 0.0 {
        return 2.0 - erfc(-x);
    }
    if x < 2.0 {
        // erf(x) = 2/sqrt(pi) * exp(-x^2) * sum 2^k x^(2k+1) / (1*3*...*(2k+1)): every term is
        // positive, so unlike the textbook alternating series nothing cancels.
        let x2 = 2.0 * x * x;
        let (mut term, mut sum) = (x, x);
        let mut k = 0.0;
        while term > 1e-17 * sum {
            k += 1.0;
            term *= x2 / (2.0 * k + 1.0);
            sum += term;
        }
        return 1.0 - 2.0 / PI.sqrt() * (-x * x).exp() * sum;
    }
    // Laplace's continued fraction erfc(x) = exp(-x^2)/sqrt(pi) / (x + 1/2/(x + 1/(x + 3/2/...))),
    // evaluated backwards; 60 terms reach full double precision for x >= 2 and, unlike 1 - erf,
    // keep relative accuracy deep in the tail where p-values live.
    let mut f = x;
    for k in (1..=60).rev() {
        f = x + f64::from(k) / 2.0 / f;
    }
    (-x * x).exp() / PI.sqrt() / f
}

/// Inverse of the standard normal CDF: Acklam's rational approximation (relative error 1.15e-9)
/// followed by one Halley step on [`normal_cdf`], which brings it to near machine precision.
pub(crate) fn normal_quantile(p: f64) -> f64 {
    if p.is_nan() {
        return f64::NAN;
    }
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    if p > 0.5 {
        // 1 - p is exact here, and the lower half keeps the CDF's relative accuracy in the tail.
        return -normal_quantile(1.0 - p);
    }
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    const P_LOW: f64 = 0.024_25;
    let x = if p < P_LOW {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    };
    let e = normal_cdf(x) - p;
    let u = e * (2.0 * PI).sqrt() * (x * x / 2.0).exp();
    // Below p ~ 1e-300 the density underflows and the step would be 0 * inf.
    if u.is_finite() {
        x - u / (1.0 + x * u / 2.0)
    } else {
        x
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn arm(n: u64, converted: u64) -> Arm {
        Arm { n, converted }
    }

    fn assert_close(actual: f64, expected: f64, tolerance: f64) {
        assert!(
            (actual - expected).abs() <= tolerance,
            "{actual} is not within {tolerance} of {expected}"
        );
    }

    fn assert_relative(actual: f64, expected: f64, tolerance: f64) {
        assert!(
            ((actual - expected) / expected).abs() <= tolerance,
            "{actual} is not within {tolerance}x of {expected}"
        );
    }

    #[test]
    fn normal_cdf_matches_reference_values() {
        // References: Python's math.erfc (correctly rounded libm) and standard tables.
        assert_eq!(normal_cdf(0.0), 0.5);
        assert_close(normal_cdf(1.0), 0.841_344_746_068_542_9, 1e-15);
        assert_close(normal_cdf(-1.0), 0.158_655_253_931_457_07, 1e-15);
        assert_close(normal_cdf(1.959_963_984_540_054), 0.975, 1e-15);
        assert_relative(normal_cdf(-3.0), 1.349_898_031_630_095_7e-3, 1e-12);
        assert_relative(normal_cdf(-5.0), 2.866_515_718_791_946e-7, 1e-12);
        assert_relative(normal_cdf(-10.0), 7.619_853_024_160_593e-24, 1e-12);
        assert_eq!(normal_cdf(-40.0), 0.0);
        assert_eq!(normal_cdf(40.0), 1.0);
    }

    #[test]
    fn erfc_matches_reference_values_on_both_sides_of_the_method_switch() {
        assert_eq!(erfc(0.0), 1.0);
        assert_close(erfc(0.5), 0.479_500_122_186_953_5, 1e-15);
        assert_close(erfc(1.0), 0.157_299_207_050_285_13, 1e-15);
        assert_relative(erfc(1.999_999), 4.677_755_648_073_953e-3, 1e-11);
        assert_relative(erfc(2.0), 4.677_734_981_047_266e-3, 1e-11);
        assert_relative(erfc(3.0), 2.209_049_699_858_544e-5, 1e-12);
        assert_close(erfc(-1.0), 1.842_700_792_949_715, 1e-15);
        assert!(erfc(f64::NAN).is_nan());
    }

    #[test]
    fn normal_quantile_matches_reference_values() {
        // The brief's z(0.975) = 1.959964; the rest from Wichura's AS241 via Python's NormalDist.
        assert_close(normal_quantile(0.975), 1.959_964, 5e-7);
        assert_close(normal_quantile(0.975), 1.959_963_984_540_054, 1e-14);
        assert_close(normal_quantile(0.025), -1.959_963_984_540_054, 1e-14);
        assert_close(normal_quantile(0.995), 2.575_829_303_548_900_4, 1e-14);
        assert_close(normal_quantile(0.9), 1.281_551_565_544_600_8, 1e-14);
        assert_eq!(normal_quantile(0.5), 0.0);
        assert_relative(normal_quantile(1e-10), -6.361_340_902_404_056, 1e-14);
        assert_relative(normal_quantile(1.0 - 1e-12), 7.034_486_910_047_835_6, 1e-4);
        assert_eq!(normal_quantile(0.0), f64::NEG_INFINITY);
        assert_eq!(normal_quantile(1.0), f64::INFINITY);
        assert!(normal_quantile(1e-320).is_finite());
    }

    #[test]
    fn wilson_matches_the_textbook_example() {
        let (low, high) = wilson(10, 100, 0.95);
        assert_close(low, 0.0552, 5e-5);
        assert_close(high, 0.1744, 5e-5);
        assert_close(low, 0.055_229_137_060_675_09, 1e-13);
        assert_close(high, 0.174_365_661_504_913_42, 1e-13);
    }

    #[test]
    fn wilson_handles_the_edges() {
        assert_eq!(wilson(0, 0, 0.95), (0.0, 1.0));
        let (low, high) = wilson(0, 20, 0.95);
        assert_eq!(low, 0.0);
        assert_close(high, 0.161_1, 1e-4);
        let (low, high) = wilson(20, 20, 0.95);
        assert_eq!(high, 1.0);
        assert_close(low, 0.838_9, 1e-4);
        assert_eq!(
            wilson(25, 20, 0.95),
            wilson(20, 20, 0.95),
            "more conversions than contacts reads as all"
        );
        let (l90, h90) = wilson(10, 100, 0.90);
        let (l99, h99) = wilson(10, 100, 0.99);
        assert!(l99 < low_of(10, 100) && low_of(10, 100) < l90 && h90 < h99);
    }

    fn low_of(x: u64, n: u64) -> f64 {
        wilson(x, n, 0.95).0
    }

    /// Newcombe (1998), Statistics in Medicine 17:873-890, table II, method 10.
    #[test]
    fn newcombe_method_10_matches_the_published_table() {
        let cases = [
            ((56, 70), (48, 80), 0.0524, 0.3339),
            ((9, 10), (3, 10), 0.1705, 0.8090),
            ((6, 7), (2, 7), 0.0582, 0.8062),
            ((5, 56), (0, 29), -0.0381, 0.1926),
            ((0, 10), (0, 20), -0.1611, 0.2775),
            ((0, 10), (0, 10), -0.2775, 0.2775),
            ((10, 10), (0, 20), 0.6791, 1.0),
            ((10, 10), (0, 10), 0.6075, 1.0),
        ];
        for ((x1, n1), (x2, n2), low, high) in cases {
            let u = uplift(arm(n1, x1), arm(n2, x2), 0.95);
            assert_close(
                u.absolute,
                x1 as f64 / n1 as f64 - x2 as f64 / n2 as f64,
                1e-15,
            );
            assert!(
                (u.ci_low - low).abs() < 5e-5 && (u.ci_high - high).abs() < 5e-5,
                "{x1}/{n1} vs {x2}/{n2}: {u:?}"
            );
            assert_eq!(u.significant, low > 0.0 || high < 0.0);
        }
    }

    #[test]
    fn first_newcombe_example_in_full() {
        let u = uplift(arm(70, 56), arm(80, 48), 0.95);
        assert_close(u.treatment_rate, 0.8, 1e-15);
        assert_close(u.control_rate, 0.6, 1e-15);
        assert_close(u.absolute, 0.2, 1e-15);
        assert_close(u.ci_low, 0.052_431_472_402_364_9, 1e-12);
        assert_close(u.ci_high, 0.333_872_654_036_905_9, 1e-12);
        assert_close(u.relative.unwrap(), 1.0 / 3.0, 1e-12);
        // Uncorrected chi-square of this table is 7.0234 (z = 2.6502), p = 0.008045.
        assert_close(u.p_value, 0.008_045_081_368_196_568, 1e-12);
        assert_eq!(u.confidence, 0.95);
        assert!(u.significant);
    }

    /// Agresti, Categorical Data Analysis: Physicians' Health Study, myocardial infarction in
    /// 189 of 11,034 on placebo and 104 of 11,037 on aspirin; Pearson X^2 = 25.01.
    #[test]
    fn p_value_matches_the_aspirin_study() {
        let u = uplift(arm(11_037, 104), arm(11_034, 189), 0.95);
        let z = normal_quantile(1.0 - u.p_value / 2.0);
        assert_close(z * z, 25.01, 5e-3);
        assert_relative(u.p_value, 5.691_896_973_740_857e-7, 1e-6);
        assert!(u.significant && u.absolute < 0.0 && u.ci_high < 0.0);
    }

    #[test]
    fn no_difference_is_not_significant() {
        let u = uplift(arm(1000, 100), arm(1000, 100), 0.95);
        assert_eq!(u.absolute, 0.0);
        assert_close(u.p_value, 1.0, 1e-15);
        assert!(!u.significant && u.ci_low < 0.0 && u.ci_high > 0.0);
    }

    #[test]
    fn degenerate_arms_give_defined_results() {
        let empty = uplift(arm(0, 0), arm(0, 0), 0.95);
        assert_eq!(
            (empty.ci_low, empty.ci_high, empty.p_value, empty.relative),
            (-1.0, 1.0, 1.0, None)
        );
        assert!(!empty.significant);

        let no_control = uplift(arm(100, 100), arm(0, 0), 0.95);
        assert_eq!((no_control.treatment_rate, no_control.p_value), (1.0, 1.0));
        assert!(!no_control.significant && no_control.relative.is_none());

        let nobody = uplift(arm(5000, 0), arm(500, 0), 0.95);
        assert_eq!(
            (nobody.absolute, nobody.p_value, nobody.relative),
            (0.0, 1.0, None)
        );
        assert!(!nobody.significant);

        let everybody = uplift(arm(5000, 5000), arm(500, 500), 0.95);
        assert_eq!(
            (everybody.absolute, everybody.p_value, everybody.relative),
            (0.0, 1.0, Some(0.0))
        );
        assert!(!everybody.significant);

        let overcounted = uplift(arm(10, 12), arm(10, 5), 0.95);
        assert_eq!(overcounted.treatment_rate, 1.0);

        let huge = uplift(arm(u64::MAX, u64::MAX), arm(u64::MAX, u64::MAX - 1), 0.95);
        assert!(huge.p_value.is_finite() && huge.ci_low.is_finite() && huge.ci_high.is_finite());
    }

    #[test]
    fn bad_confidence_levels_are_sanitised_and_reported() {
        let t = arm(1000, 120);
        let c = arm(1000, 100);
        assert_eq!(uplift(t, c, f64::NAN).confidence, DEFAULT_CONFIDENCE);
        assert_eq!(uplift(t, c, f64::NAN), uplift(t, c, 0.95));
        assert_eq!(uplift(t, c, 1.0).confidence, MAX_CONFIDENCE);
        let zero = uplift(t, c, -3.0);
        assert_eq!(zero.confidence, 0.0);
        assert_close(zero.ci_low, zero.absolute, 1e-15);
        assert_close(zero.ci_high, zero.absolute, 1e-15);
        let wide = uplift(t, c, 0.99);
        let narrow = uplift(t, c, 0.90);
        assert!(wide.ci_low < narrow.ci_low && narrow.ci_high < wide.ci_high);
    }

    fn arm_strategy() -> impl Strategy<Value = Arm> {
        (0u64..=10_000_000).prop_flat_map(|n| {
            prop_oneof![Just(0), Just(n), 0..=n, 0..=n.min(10)]
                .prop_map(move |converted| Arm { n, converted })
        })
    }

    proptest! {
        #![proptest_config(testkit::proptest_config(256))]

        #[test]
        fn uplift_is_finite_bounded_and_contains_its_estimate(
            t in arm_strategy(),
            c in arm_strategy(),
            confidence in 0.5f64..0.9999,
        ) {
            let u = uplift(t, c, confidence);
            for x in [u.treatment_rate, u.control_rate, u.absolute, u.ci_low, u.ci_high, u.p_value] {
                prop_assert!(x.is_finite(), "{u:?}");
            }
            prop_assert!(u.relative.is_none_or(f64::is_finite), "{u:?}");
            prop_assert!(-1.0 <= u.ci_low && u.ci_low <= u.absolute && u.absolute <= u.ci_high && u.ci_high <= 1.0, "{u:?}");
            prop_assert!((0.0..=1.0).contains(&u.p_value), "{u:?}");
            prop_assert_eq!(u.significant, t.n > 0 && c.n > 0 && (u.ci_low > 0.0 || u.ci_high < 0.0));
        }

        #[test]
        fn swapping_the_arms_mirrors_the_interval(t in arm_strategy(), c in arm_strategy()) {
            let forward = uplift(t, c, 0.95);
            let backward = uplift(c, t, 0.95);
            prop_assert_eq!(forward.absolute, -backward.absolute);
            prop_assert!((forward.ci_low + backward.ci_high).abs() < 1e-12);
            prop_assert!((forward.ci_high + backward.ci_low).abs() < 1e-12);
            prop_assert_eq!(forward.p_value, backward.p_value);
        }

        #[test]
        fn any_confidence_value_gives_finite_results(
            t in arm_strategy(),
            c in arm_strategy(),
            confidence in any::<f64>(),
        ) {
            let u = uplift(t, c, confidence);
            prop_assert!((0.0..=MAX_CONFIDENCE).contains(&u.confidence));
            prop_assert!(u.ci_low.is_finite() && u.ci_high.is_finite() && u.p_value.is_finite(), "{u:?}");
        }

        #[test]
        fn wilson_contains_the_rate_within_unit_range(a in arm_strategy(), confidence in 0.5f64..0.9999) {
            let (low, high) = wilson(a.converted, a.n, confidence);
            let p = if a.n == 0 { 0.0 } else { a.converted as f64 / a.n as f64 };
            prop_assert!(0.0 <= low && low <= p && p <= high && high <= 1.0, "{a:?}: ({low}, {high})");
        }

        #[test]
        fn wilson_narrows_as_the_sample_grows(k in 1u64..1000, rate in 0.0f64..=1.0) {
            let small = wilson((rate * k as f64) as u64, k, 0.95);
            let large = wilson((rate * k as f64) as u64 * 100, k * 100, 0.95);
            prop_assert!(large.1 - large.0 < small.1 - small.0);
        }

        #[test]
        fn quantile_inverts_the_cdf(p in 1e-12f64..(1.0 - 1e-12)) {
            let back = normal_cdf(normal_quantile(p));
            let tolerance = roundtrip_tolerance(p);
            prop_assert!((back - p).abs() <= tolerance, "{p} -> {back} (tolerance {tolerance:e})");
        }
    }

    /// How far `normal_cdf(normal_quantile(p))` may land from `p`: 1e-13 of the tail
    /// probability `min(p, 1 - p)`, the accuracy the tails need, but never less than float
    /// precision allows where `normal_cdf` computes its value as a difference from 1: above
    /// 0.5 it returns `1 - tail`, and from p = erfc(2)/2 ~ 2.3e-3 up it evaluates `erfc` as
    /// `1 - erf` with `erf` close to 1. There the result sits on the grid of numbers near 1,
    /// whose step is one ulp of the coarser of `p` and `1 - p` (1.1e-16), and `erf`'s series
    /// adds a few roundings of that size. A bound below that grid (the old one was 1e-16 for
    /// p = 1 - 1e-12: 1 - p is only known to 1.1e-16 there) fails at random on a correct
    /// quantile. Measured over 4 million log-spaced p: at most 14 grid steps (at tail ~5e-3,
    /// the series' worst cancellation); 16 still leaves a real error no room: a quantile off by
    /// 1e-9 of itself (Acklam's approximation without its Halley step) moves p by more than 16
    /// steps wherever p's grid can show it at all. Deeper in the lower tail
    /// `erfc` is a continued fraction with no subtraction, so only the relative bound applies.
    fn roundtrip_tolerance(p: f64) -> f64 {
        let relative = 1e-13 * p.min(1.0 - p);
        if p < normal_cdf(-2.0 * std::f64::consts::SQRT_2) {
            return relative;
        }
        let coarser = p.max(1.0 - p);
        let grid = coarser.next_up() - coarser;
        relative.max(16.0 * grid)
    }

    #[test]
    fn a_wrong_quantile_fails_the_roundtrip_tolerance() {
        // Off by 1e-9 of itself, Acklam's error before its Halley step: every p must notice,
        // in both tails. Not p = 1 - 1e-12: there the density is ~1e-11 and any quantile error
        // below ~1e-5 moves the probability by less than one step of the grid near 1, so no
        // roundtrip through p can see it; the lower tail, the same code by symmetry, checks it.
        for p in [
            1e-12,
            1e-6,
            2.3e-3,
            2.4e-3,
            0.01,
            0.2,
            0.7,
            0.99,
            1.0 - 2.3e-3,
            1.0 - 1e-6,
        ] {
            let x = normal_quantile(p);
            let back = normal_cdf(x * (1.0 + 1e-9));
            assert!(
                (back - p).abs() > roundtrip_tolerance(p),
                "{p}: a quantile off by 1e-9 still passes ({back})"
            );
            let exact = normal_cdf(x);
            assert!(
                (exact - p).abs() <= roundtrip_tolerance(p),
                "{p} -> {exact}"
            );
        }
    }
}
