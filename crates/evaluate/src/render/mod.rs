//! Renderers of a [`Report`](crate::Report), and the number formats they share so that the
//! terminal, mail and browser views of one run never disagree.

pub(crate) mod csv;
pub(crate) mod html;
pub(crate) mod json;
pub(crate) mod text;

use crate::report::{Cell, Report, WaveCounts, ratio};
use crate::stats::Uplift;

/// Shown wherever a rendering can carry a sentence.
pub(crate) const SIMULATED_NOTICE: &str =
    "SIMULATED RESULTS: responses come from the demo's simulated population, not real subscribers.";

/// `1234567` -> `1,234,567`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// A rate as a percentage with two decimals: `0.076` -> `7.60%`.
pub(crate) fn percent(rate: f64) -> String {
    format!("{:.2}%", rate * 100.0)
}

/// `percent` of an optional rate; `-` when the denominator was 0.
pub(crate) fn percent_or_dash(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".to_owned(), percent)
}

/// Always signed, except that a value which rounds to zero has no sign: `-0.00` would suggest a
/// direction the data does not have.
pub(crate) fn signed(x: f64, decimals: usize) -> String {
    let s = format!("{x:+.decimals$}");
    if s[1..].chars().all(|c| c == '0' || c == '.') {
        s[1..].to_owned()
    } else {
        s
    }
}

/// A difference of rates in percentage points: `0.025` -> `+2.50 pp`.
pub(crate) fn points(diff: f64) -> String {
    format!("{} pp", signed(diff * 100.0, 2))
}

/// The interval in percentage points without unit: `[+2.04, +2.95]`.
pub(crate) fn interval(u: &Uplift) -> String {
    format!(
        "[{}, {}]",
        signed(u.ci_low * 100.0, 2),
        signed(u.ci_high * 100.0, 2)
    )
}

/// `+49.0%`, or `n/a` without a control rate to compare with.
pub(crate) fn relative(u: &Uplift) -> String {
    u.relative.map_or_else(
        || "n/a".to_owned(),
        |r| format!("{}%", signed(r * 100.0, 1)),
    )
}

/// Four decimals; smaller values only as a bound, since their digits would be noise.
pub(crate) fn p_value(p: f64) -> String {
    if p < 1e-4 {
        "< 0.0001".to_owned()
    } else {
        format!("{p:.4}")
    }
}

/// `0.95` -> `95%`, `0.999` -> `99.9%`.
pub(crate) fn confidence(c: f64) -> String {
    let s = format!("{:.4}", c * 100.0);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

/// Every stage of a wave with its count and its rate against the stage it is drawn from; the
/// rate is blank when that stage is empty, and `-` for the two headline rates, which are always
/// shown.
pub(crate) fn funnel_stages(w: &WaveCounts) -> [(&'static str, u64, String); 9] {
    [
        ("eligible", w.eligible, String::new()),
        (
            "excluded",
            w.excluded,
            share(w.excluded, w.eligible, "eligible"),
        ),
        (
            "control",
            w.control,
            share(w.control, w.eligible, "eligible"),
        ),
        (
            "targeted",
            w.targeted,
            share(w.targeted, w.eligible, "eligible"),
        ),
        ("sent", w.sent, share(w.sent, w.targeted, "targeted")),
        (
            "delivered",
            w.delivered,
            format!("{} of sent", percent_or_dash(w.delivery_rate())),
        ),
        ("failed", w.failed, share(w.failed, w.sent, "sent")),
        ("expired", w.expired, share(w.expired, w.sent, "sent")),
        (
            "responded",
            w.responded,
            format!("{} of targeted", percent_or_dash(w.response_rate())),
        ),
    ]
}

/// `7.60% of targeted`, or blank without a denominator.
pub(crate) fn share(num: u64, den: u64, of: &str) -> String {
    ratio(num, den).map_or_else(String::new, |r| format!("{} of {of}", percent(r)))
}

/// Whether both arms of a cell have contacts. Without that the statistics are still defined
/// (an empty arm counts as rate 0, interval [0, 1]) but compare against a rate nobody measured,
/// so the renderers leave the comparison blank rather than print a meaningless uplift.
/// The overall row, then the breakdown's cells, unless the only cell is the overall row
/// again (no breakdown and no strata: one cell `all`), which a reader would take for a
/// second group.
pub(crate) fn outcome_cells(r: &Report) -> Vec<&Cell> {
    let repeats = matches!(r.cells.as_slice(), [only] if only.label == r.overall.label
        && only.treatment == r.overall.treatment
        && only.control == r.overall.control);
    let cells = if repeats { &[][..] } else { &r.cells[..] };
    std::iter::once(&r.overall).chain(cells).collect()
}

pub(crate) fn comparable(c: &Cell) -> bool {
    c.treatment.n > 0 && c.control.n > 0
}

/// Uplift, interval, relative uplift, p-value and significance as shown to people.
pub(crate) fn comparison(c: &Cell) -> [String; 5] {
    let u = &c.uplift;
    if !comparable(c) {
        return ["-", "-", "-", "-", "-"].map(str::to_owned);
    }
    let sig = if u.significant { "yes" } else { "no" };
    [
        points(u.absolute),
        interval(u),
        relative(u),
        p_value(u.p_value),
        sig.to_owned(),
    ]
}

/// One sentence on the overall result, under 100 columns.
pub(crate) fn verdict(r: &Report) -> String {
    let o = &r.overall;
    let u = &o.uplift;
    let body = if !comparable(o) {
        let empty = if o.treatment.n == 0 {
            "treatment"
        } else {
            "control"
        };
        format!("no comparison possible, the {empty} group is empty.")
    } else {
        let p = p_value(u.p_value);
        let p = if p.starts_with('<') {
            format!("p {p}")
        } else {
            format!("p = {p}")
        };
        let detail = format!(
            "{} ({} CI {} to {} pp, {p})",
            points(u.absolute),
            confidence(u.confidence),
            signed(u.ci_low * 100.0, 2),
            signed(u.ci_high * 100.0, 2),
        );
        match (u.significant, u.absolute > 0.0) {
            (true, true) => format!("significant uplift of {detail}."),
            (true, false) => format!("significant drop of {detail}."),
            (false, _) => format!("no significant difference, {detail}."),
        }
    };
    let prefix = if r.simulated { "[SIMULATED] " } else { "" };
    match &r.provisional_until {
        Some(until) => format!("{prefix}Verdict (PROVISIONAL until {until}): {body}"),
        None => format!("{prefix}Verdict: {body}"),
    }
}

/// What a provisional report's numbers mean, for the renderings that show its status.
pub(crate) fn provisional_notice(r: &Report) -> Option<String> {
    r.provisional_until.as_ref().map(|until| {
        format!(
            "PROVISIONAL until {until}: members still inside the retention window count as \
             retained so far"
        )
    })
}

#[cfg(test)]
pub(crate) mod fixtures {
    use crate::report::{Cell, Report, WaveCounts};
    use crate::stats::{Arm, uplift};

    pub(crate) fn cell(label: &str, t: (u64, u64), c: (u64, u64)) -> Cell {
        let treatment = Arm {
            n: t.0,
            converted: t.1,
        };
        let control = Arm {
            n: c.0,
            converted: c.1,
        };
        Cell {
            label: label.to_owned(),
            treatment,
            control,
            uplift: uplift(treatment, control, 0.95),
        }
    }

    /// A two-wave campus campaign: SMS offer, then a call to those who did not answer it.
    pub(crate) fn report(simulated: bool) -> Report {
        Report {
            campaign: "campus-bundle-autumn".to_owned(),
            run_id: 42,
            version: "3f9a1c2e".to_owned(),
            goal: "event order offer=campus-bundle".to_owned(),
            started_at: "2024-09-01T08:00:00Z".to_owned(),
            finished_at: "2024-09-15T20:00:00Z".to_owned(),
            waves: vec![
                WaveCounts {
                    wave: "sms-offer".to_owned(),
                    channel: "sms".to_owned(),
                    eligible: 120_000,
                    excluded: 3_000,
                    control: 11_700,
                    targeted: 105_300,
                    sent: 105_300,
                    delivered: 101_000,
                    failed: 3_000,
                    expired: 1_300,
                    unknown: 0,
                    responded: 8_000,
                },
                WaveCounts {
                    wave: "call-non-responders".to_owned(),
                    channel: "outbound_call".to_owned(),
                    eligible: 97_300,
                    excluded: 0,
                    control: 0,
                    targeted: 5_000,
                    sent: 4_800,
                    delivered: 3_900,
                    failed: 700,
                    expired: 200,
                    unknown: 0,
                    responded: 1_150,
                },
            ],
            overall: cell("all", (105_300, 8_000), (11_700, 597)),
            breakdown: Some("value_tier".to_owned()),
            cells: vec![
                cell("gold card", (20_000, 2_100), (2_200, 150)),
                cell("ordinary", (85_300, 5_900), (9_500, 447)),
            ],
            retention: false,
            provisional_until: None,
            survey: None,
            variants: Vec::new(),
            reach: Vec::new(),
            simulated,
        }
    }

    /// `r` with two variants of its first wave and survey scores for two groups (one
    /// with no positive answer).
    pub(crate) fn with_variants_and_survey(mut r: Report) -> Report {
        let control = (r.overall.control.n, r.overall.control.converted);
        r.variants = vec![
            crate::report::VariantRow {
                wave: "sms-offer".to_owned(),
                variant: "short".to_owned(),
                responded: 3_900,
                outcome: cell("short", (52_000, 4_100), control),
            },
            crate::report::VariantRow {
                wave: "sms-offer".to_owned(),
                variant: "<long>".to_owned(),
                responded: 4_100,
                outcome: cell("<long>", (53_300, 3_900), control),
            },
        ];
        r.survey = Some(crate::report::SurveyScores {
            group_by: "value_tier".to_owned(),
            groups: vec![
                crate::report::SurveyGroup::new("gold".to_owned(), 25, 10_300),
                crate::report::SurveyGroup::new("silver".to_owned(), 4, 0),
            ],
        });
        r
    }

    /// A preferred wave's reach: SMS first, e-mail as the fallback.
    pub(crate) fn reach() -> Vec<crate::report::ReachRow> {
        vec![
            crate::report::ReachRow {
                wave: "offer".to_owned(),
                channel: "sms".to_owned(),
                choice: "first".to_owned(),
                contacts: 1_000,
                reached: 960,
                responded: 120,
            },
            crate::report::ReachRow {
                wave: "offer".to_owned(),
                channel: "email".to_owned(),
                choice: "second".to_owned(),
                contacts: 40,
                reached: 30,
                responded: 6,
            },
        ]
    }

    /// Text a careless renderer would let through: markup, CSV metacharacters, control bytes.
    pub(crate) fn hostile() -> Report {
        let mut r = report(true);
        r.campaign = "<script>alert('x')</script> & \"co\", =cmd|' /C calc'!A0".to_owned();
        r.goal = "line one\nline two, \"quoted\"\r\n\u{1b}[31mred".to_owned();
        r.waves[0].wave = "a,b\"c\nd".to_owned();
        r.cells[0].label = "<b>gold</b>".to_owned();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::fixtures;
    use crate::stats::{Arm, uplift};

    #[test]
    fn a_single_cell_that_is_the_overall_row_is_shown_once() {
        let mut r = fixtures::report(false);
        assert_eq!(outcome_cells(&r).len(), 3);
        r.cells = vec![r.overall.clone()];
        assert_eq!(outcome_cells(&r), [&r.overall]);
        let text = crate::render_text(&r);
        assert_eq!(text.matches("\n  all ").count(), 1, "{text}");
        // One group of its own (every member in one stratum) is still shown.
        r.cells[0].label = "gold".to_owned();
        assert_eq!(outcome_cells(&r).len(), 2);
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(105_300), "105,300");
        assert_eq!(thousands(10_000_000), "10,000,000");
        assert_eq!(thousands(u64::MAX), "18,446,744,073,709,551,615");
    }

    #[test]
    fn signed_drops_the_sign_of_a_rounded_zero() {
        assert_eq!(signed(2.5, 2), "+2.50");
        assert_eq!(signed(-1.234, 1), "-1.2");
        assert_eq!(signed(-0.0001, 2), "0.00");
        assert_eq!(signed(-0.0, 2), "0.00");
        assert_eq!(points(0.025), "+2.50 pp");
    }

    #[test]
    fn p_values_below_the_shown_precision_are_a_bound() {
        assert_eq!(p_value(0.0000003), "< 0.0001");
        assert_eq!(p_value(0.008045), "0.0080");
        assert_eq!(p_value(1.0), "1.0000");
    }

    #[test]
    fn confidence_levels_drop_trailing_zeros() {
        assert_eq!(confidence(0.95), "95%");
        assert_eq!(confidence(0.999), "99.9%");
        assert_eq!(confidence(0.9), "90%");
    }

    #[test]
    fn a_provisional_retention_report_says_so_in_every_human_rendering() {
        let mut r = fixtures::report(false);
        r.retention = true;
        r.provisional_until = Some("2026-12-01T00:00:00Z".to_owned());
        let text = crate::render_text(&r);
        assert!(
            text.contains("Status    PROVISIONAL until 2026-12-01T00:00:00Z"),
            "{text}"
        );
        assert!(text.contains("count as retained so far"), "{text}");
        assert!(
            text.contains(" retained "),
            "the column says retained: {text}"
        );
        assert!(text.lines().all(|l| l.chars().count() <= text::WIDTH));
        let html = crate::render_html(&r);
        assert!(html.contains("<th>Status</th><td>PROVISIONAL until 2026-12-01T00:00:00Z"));
        assert!(verdict(&r).starts_with("Verdict (PROVISIONAL until 2026-12-01T00:00:00Z)"));
        let json = crate::render_json(&r);
        assert!(json.contains("\"provisional_until\": \"2026-12-01T00:00:00Z\""));

        r.provisional_until = None;
        for s in [crate::render_text(&r), crate::render_html(&r)] {
            assert!(!s.contains("PROVISIONAL"), "{s}");
        }
        // A conversion report's JSON is unchanged by the retention fields.
        r.retention = false;
        let json = crate::render_json(&r);
        assert!(!json.contains("retention") && !json.contains("provisional"));
    }

    #[test]
    fn verdict_names_direction_and_marks_simulation() {
        let mut r = fixtures::report(true);
        let v = verdict(&r);
        assert!(
            v.starts_with(
                "[SIMULATED] Verdict: significant uplift of +2.49 pp (95% CI +2.05 to +2.91 pp"
            ),
            "{v}"
        );
        assert!(v.contains("p < 0.0001"), "{v}");

        r.simulated = false;
        let t = Arm {
            n: 1000,
            converted: 40,
        };
        let c = Arm {
            n: 1000,
            converted: 80,
        };
        r.overall.treatment = t;
        r.overall.control = c;
        r.overall.uplift = uplift(t, c, 0.95);
        let v = verdict(&r);
        assert!(
            v.starts_with("Verdict: significant drop of -4.00 pp"),
            "{v}"
        );

        let c = Arm {
            n: 1000,
            converted: 42,
        };
        r.overall.control = c;
        r.overall.uplift = uplift(t, c, 0.95);
        let v = verdict(&r);
        assert!(
            v.starts_with("Verdict: no significant difference, -0.20 pp (95% CI"),
            "{v}"
        );

        r.overall.control = Arm { n: 0, converted: 0 };
        r.overall.uplift = uplift(t, r.overall.control, 0.95);
        assert_eq!(
            verdict(&r),
            "Verdict: no comparison possible, the control group is empty."
        );
    }
}
