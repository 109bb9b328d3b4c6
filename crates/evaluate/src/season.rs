//! A programme's runs rolled up by season: treated against control on the goal, pooled over
//! the season's runs, each member counted once per season.

use std::fmt::Write as _;

use serde::Serialize;

use crate::render::text::clean;
use crate::render::{comparison, confidence, percent, thousands};
use crate::report::Cell;

/// One season of a campaign: its runs and the goal pooled over them.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Season {
    /// The season occurrence's label (`season-2026`), or the calendar year (`2026`) for a
    /// campaign without a `schedule.season`.
    pub season: String,
    /// Finished runs of the season, oldest first.
    pub runs: Vec<i64>,
    /// Labelled with the season; each member once, in the arm of their first run.
    pub overall: Cell,
    /// RFC 3339 end of the last retention window still running when this was built: until
    /// then the retention rates are retained-so-far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisional_until: Option<String>,
}

/// Every season of one campaign, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct SeasonReport {
    pub campaign: String,
    /// The goal every run is judged on (that of the campaign's newest finished run).
    pub goal: String,
    /// The goal is retention: `converted` counts members retained (so far).
    pub retention: bool,
    pub seasons: Vec<Season>,
}

/// Plain text: one line per season.
pub fn render_seasons_text(r: &SeasonReport) -> String {
    let word = if r.retention { "retained" } else { "converted" };
    let mut out = String::new();
    let _ = writeln!(out, "Campaign  {}", clean(&r.campaign));
    let _ = writeln!(out, "Goal      {}", clean(&r.goal));
    if r.seasons.is_empty() {
        out.push_str("\n  (no finished runs)\n");
        return out;
    }
    let level = r
        .seasons
        .first()
        .map_or_else(String::new, |s| confidence(s.overall.uplift.confidence));
    let _ = writeln!(
        out,
        "\n  {:<12} {:>5}  {:>9} {:>9} {:>7}  {:>9} {:>9} {:>7}  {:>9}  {:<18} {:>8}  sig.",
        "season",
        "runs",
        "treated",
        word,
        "rate",
        "control",
        word,
        "rate",
        "uplift",
        format!("{level} CI (pp)"),
        "p-value",
    );
    for s in &r.seasons {
        let c = &s.overall;
        let rate = |n: u64, rate: f64| {
            if n == 0 {
                "-".to_owned()
            } else {
                percent(rate)
            }
        };
        let [uplift, ci, _relative, p, sig] = comparison(c);
        let _ = writeln!(
            out,
            "  {:<12} {:>5}  {:>9} {:>9} {:>7}  {:>9} {:>9} {:>7}  {:>9}  {:<18} {:>8}  {sig}",
            clean(&s.season),
            s.runs.len(),
            thousands(c.treatment.n),
            thousands(c.treatment.converted),
            rate(c.treatment.n, c.uplift.treatment_rate),
            thousands(c.control.n),
            thousands(c.control.converted),
            rate(c.control.n, c.uplift.control_rate),
            uplift,
            ci,
            p,
        );
        let runs: Vec<String> = s.runs.iter().map(i64::to_string).collect();
        let _ = writeln!(out, "  {:<12} runs {}", "", runs.join(", "));
        if let Some(until) = &s.provisional_until {
            let _ = writeln!(
                out,
                "  {:<12} PROVISIONAL until {}: members still inside the retention window count as retained so far",
                "",
                clean(until)
            );
        }
    }
    out
}

/// Pretty JSON of the season roll-up.
pub fn render_seasons_json(r: &SeasonReport) -> String {
    // Strings, integers, floats, booleans and lists only: serializing cannot fail.
    serde_json::to_string_pretty(r).expect("a SeasonReport always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::fixtures;

    #[test]
    fn a_season_line_names_its_runs_counts_and_provisional_state() {
        let r = SeasonReport {
            campaign: "core-retention".to_owned(),
            goal: "retained 90d".to_owned(),
            retention: true,
            seasons: vec![Season {
                season: "season-2026".to_owned(),
                runs: vec![3, 7],
                overall: fixtures::cell("season-2026", (900, 850), (100, 80)),
                provisional_until: Some("2026-12-01T00:00:00Z".to_owned()),
            }],
        };
        let t = render_seasons_text(&r);
        assert!(t.contains("season-2026"), "{t}");
        assert!(t.contains("runs 3, 7"), "{t}");
        for part in ["900", "850", "94.44%", "80.00%", "+14.44 pp"] {
            assert!(t.contains(part), "no {part} in {t}");
        }
        assert!(t.contains("PROVISIONAL until 2026-12-01T00:00:00Z"), "{t}");
        // Floats may differ in the last digit through JSON; the counts and labels may not.
        let back: SeasonReport = serde_json::from_str(&render_seasons_json(&r)).unwrap();
        let (b, s) = (&back.seasons[0], &r.seasons[0]);
        assert_eq!(
            (&b.season, &b.runs, b.overall.treatment, b.overall.control),
            (&s.season, &s.runs, s.overall.treatment, s.overall.control)
        );
        assert_eq!(b.provisional_until, s.provisional_until);
        assert_eq!((back.retention, &back.goal), (true, &r.goal));
    }
}
