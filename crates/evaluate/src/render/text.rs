//! Plain-text report for terminals and mail bodies: ASCII only in the frame, at most
//! [`WIDTH`] columns.

use std::fmt::Write as _;

use super::{
    SIMULATED_NOTICE, comparison, confidence, funnel_stages, percent, provisional_notice,
    thousands, verdict,
};
use crate::report::{Cell, Report, WaveCounts};

/// Fits an 80-column terminal with room to spare in most cases and a 100-column one always.
pub(crate) const WIDTH: usize = 100;

/// Longest funnel bar; leaves the count and rate columns room within [`WIDTH`].
const BAR: usize = 40;

/// Plain-text report: header, per-wave funnel, treatment against control, verdict.
pub fn render_text(r: &Report) -> String {
    let mut out = String::new();
    if r.simulated {
        banner(&mut out);
    }
    let head = [
        ("Campaign", clean(&r.campaign)),
        (
            "Run",
            format!("{} (workflow version {})", r.run_id, clean(&r.version)),
        ),
        ("Goal", clean(&r.goal)),
        (
            "Period",
            format!("{} .. {}", clean(&r.started_at), clean(&r.finished_at)),
        ),
    ];
    for (key, value) in head {
        let line = format!("{key:<9} {value}");
        out.push_str(&fit(&line, WIDTH));
        out.push('\n');
    }
    if let Some(notice) = provisional_notice(r) {
        // Two lines: the date, then what it means, each within the width.
        let (date, meaning) = notice.split_once(": ").unwrap_or((&notice, ""));
        out.push_str(&fit(&format!("{:<9} {}", "Status", clean(date)), WIDTH));
        out.push('\n');
        out.push_str(&fit(&format!("{:<9} {meaning}", ""), WIDTH));
        out.push('\n');
    }

    out.push_str("\nWAVE FUNNEL\n");
    if r.waves.is_empty() {
        out.push_str("  (no waves ran)\n");
    }
    for (i, w) in r.waves.iter().enumerate() {
        let title = format!(
            "Wave {} of {}: {} via {}",
            i + 1,
            r.waves.len(),
            clean(&w.wave),
            clean(&w.channel)
        );
        out.push('\n');
        out.push_str(&fit(&title, WIDTH));
        out.push('\n');
        out.push_str(&funnel(w).render(2));
    }

    let level = confidence(r.overall.uplift.confidence);
    out.push_str(&fit(
        &format!("\nTREATMENT vs CONTROL on goal, {level} confidence"),
        WIDTH,
    ));
    out.push('\n');
    out.push_str(&outcome(r, &level).render(2));
    out.push('\n');
    out.push_str(&fit(&verdict(r), WIDTH));
    out.push('\n');
    if !r.variants.is_empty() {
        let of = one_wave(r)
            .map(|w| format!(" of {}", clean(w)))
            .unwrap_or_default();
        out.push_str(&fit(
            &format!("\nVARIANTS{of} vs the shared CONTROL on goal, {level} confidence"),
            WIDTH,
        ));
        out.push('\n');
        out.push_str(&variants(r).render(2));
    }
    if !r.reach.is_empty() {
        out.push_str(&fit(
            "\nREACH by channel and choice (preferred waves)",
            WIDTH,
        ));
        out.push('\n');
        out.push_str(&reach(r).render(2));
    }
    if let Some(s) = &r.survey {
        out.push_str(&fit(
            &format!("\nSURVEY SCORE P by {}", clean(&s.group_by)),
            WIDTH,
        ));
        out.push('\n');
        out.push_str(&survey(s).render(2));
    }
    if r.simulated {
        out.push('\n');
        banner(&mut out);
    }
    out
}

/// One row per preferred wave, channel and choice: contacts, reached, reach rate, responded.
fn reach(r: &Report) -> Table {
    let mut t = Table::new(&[
        ("wave", Align::Left),
        ("channel", Align::Left),
        ("choice", Align::Left),
        ("contacts", Align::Right),
        ("reached", Align::Right),
        ("reach", Align::Right),
        ("responded", Align::Right),
    ]);
    for row in &r.reach {
        t.row(vec![
            clean(&row.wave),
            clean(&row.channel),
            clean(&row.choice),
            thousands(row.contacts),
            thousands(row.reached),
            row.reach_rate().map_or_else(|| "-".to_owned(), percent),
            thousands(row.responded),
        ]);
    }
    t
}

/// One row per variant (its contacts, responders, goal, rate and uplift with its interval
/// against the shared control), then the control once: it is the same for every variant.
fn variants(r: &Report) -> Table {
    let level = confidence(r.overall.uplift.confidence);
    let mut t = Table::new(&[
        ("variant", Align::Left),
        ("n", Align::Right),
        ("responded", Align::Right),
        (r.outcome_word(), Align::Right),
        ("rate", Align::Right),
        ("uplift", Align::Right),
        (&format!("{level} CI (pp)"), Align::Left),
        ("relative", Align::Right),
        ("p-value", Align::Right),
        ("sig.", Align::Left),
    ]);
    let rate = |a: crate::stats::Arm, rate: f64| {
        if a.n == 0 {
            "-".to_owned()
        } else {
            percent(rate)
        }
    };
    // Variants of one wave (the first: the only one a shared control stands for) are
    // named alone, the wave said once in the heading, so the names fit beside the numbers.
    let single = one_wave(r).is_some();
    for v in &r.variants {
        let c = &v.outcome;
        let mut row = vec![
            if single {
                clean(&v.variant)
            } else {
                format!("{} / {}", clean(&v.wave), clean(&v.variant))
            },
            thousands(c.treatment.n),
            thousands(v.responded),
            thousands(c.treatment.converted),
            rate(c.treatment, c.uplift.treatment_rate),
        ];
        row.extend(comparison(c));
        t.row(row);
    }
    if let Some(c) = r.variants.first().map(|v| &v.outcome) {
        t.row(vec![
            "control".to_owned(),
            thousands(c.control.n),
            String::new(),
            thousands(c.control.converted),
            rate(c.control, c.uplift.control_rate),
        ]);
    }
    t
}

/// The wave every variant row belongs to, when there is one.
fn one_wave(r: &Report) -> Option<&str> {
    let first = r.variants.first()?.wave.as_str();
    r.variants.iter().all(|v| v.wave == first).then_some(first)
}

fn survey(s: &crate::report::SurveyScores) -> Table {
    let mut t = Table::new(&[
        ("group", Align::Left),
        ("P", Align::Right),
        ("respondents", Align::Right),
    ]);
    if s.groups.is_empty() {
        t.row(vec![
            "(no answers)".to_owned(),
            String::new(),
            String::new(),
        ]);
    }
    for g in &s.groups {
        t.row(vec![
            clean(&g.group),
            format!("{:.3}", g.score),
            g.respondents.to_string(),
        ]);
    }
    t
}

fn banner(out: &mut String) {
    let rule = format!("+{}+\n", "=".repeat(WIDTH - 2));
    out.push_str(&rule);
    let _ = writeln!(out, "| {:<w$} |", SIMULATED_NOTICE, w = WIDTH - 4);
    out.push_str(&rule);
}

fn funnel(w: &WaveCounts) -> Table {
    let top = funnel_stages(w).iter().map(|s| s.1).max().unwrap_or(0);
    let mut t = Table::new(&[
        ("stage", Align::Left),
        ("count", Align::Right),
        ("rate", Align::Right),
        ("", Align::Left),
    ]);
    for (stage, count, rate) in funnel_stages(w) {
        // Rounded up so that any non-zero stage stays visible.
        let bar = if top == 0 {
            0
        } else {
            (count as u128 * BAR as u128).div_ceil(top as u128) as usize
        };
        t.row(vec![
            stage.to_owned(),
            thousands(count),
            rate,
            "#".repeat(bar),
        ]);
    }
    t
}

fn outcome(r: &Report, level: &str) -> Table {
    let first = match &r.breakdown {
        Some(field) => format!("{} / arm", clean(field)),
        None => "cell / arm".to_owned(),
    };
    let mut t = Table::new(&[
        (&first, Align::Left),
        ("n", Align::Right),
        (r.outcome_word(), Align::Right),
        ("rate", Align::Right),
        ("uplift", Align::Right),
        (&format!("{level} CI (pp)"), Align::Left),
        ("relative", Align::Right),
        ("p-value", Align::Right),
        ("sig.", Align::Left),
    ]);
    for c in super::outcome_cells(r) {
        cell_rows(&mut t, c);
    }
    t
}

fn cell_rows(t: &mut Table, c: &Cell) {
    let u = &c.uplift;
    let mut head = vec![clean(&c.label), String::new(), String::new(), String::new()];
    head.extend(comparison(c));
    t.row(head);
    for (arm, a, rate) in [
        ("treatment", c.treatment, u.treatment_rate),
        ("control", c.control, u.control_rate),
    ] {
        let rate = if a.n == 0 {
            "-".to_owned()
        } else {
            percent(rate)
        };
        t.row(vec![
            format!("  {arm}"),
            thousands(a.n),
            thousands(a.converted),
            rate,
        ]);
    }
}

#[derive(Clone, Copy)]
enum Align {
    Left,
    Right,
}

/// Columns sized to their content; the first column gives way when the table would exceed
/// [`WIDTH`], because labels are free text while numbers must stay whole.
struct Table {
    head: Vec<(String, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(head: &[(&str, Align)]) -> Self {
        Table {
            head: head.iter().map(|(h, a)| ((*h).to_owned(), *a)).collect(),
            rows: Vec::new(),
        }
    }

    /// Missing trailing cells are blank.
    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn render(&self, indent: usize) -> String {
        const GAP: usize = 2;
        let cols = self.head.len();
        let cell = |row: &[String], i: usize| row.get(i).map_or("", String::as_str).to_owned();
        let mut widths: Vec<usize> = self.head.iter().map(|(h, _)| display_width(h)).collect();
        for row in &self.rows {
            for (i, w) in widths.iter_mut().enumerate() {
                *w = (*w).max(display_width(&cell(row, i)));
            }
        }
        let total = indent + widths.iter().sum::<usize>() + GAP * (cols - 1);
        if total > WIDTH {
            widths[0] = widths[0].saturating_sub(total - WIDTH).max(8);
        }
        let head: Vec<String> = self.head.iter().map(|(h, _)| h.clone()).collect();
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        let mut out = String::new();
        for row in [&head, &rule].into_iter().chain(&self.rows) {
            let mut line = " ".repeat(indent);
            for (i, w) in widths.iter().enumerate() {
                let text = fit(&cell(row, i), *w);
                let pad = " ".repeat(w - display_width(&text));
                match self.head[i].1 {
                    Align::Left => {
                        line.push_str(&text);
                        line.push_str(&pad);
                    }
                    Align::Right => {
                        line.push_str(&pad);
                        line.push_str(&text);
                    }
                }
                if i + 1 < cols {
                    line.push_str(&" ".repeat(GAP));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Control characters in names could move the cursor or recolour the terminal; show them as `?`.
pub(crate) fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Cuts `s` to at most `width` columns, marking the cut with `~`.
fn fit(s: &str, width: usize) -> String {
    if display_width(s) <= width {
        return s.to_owned();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = char_width(c);
        if used + w + 1 > width {
            break;
        }
        out.push(c);
        used += w;
    }
    out.push('~');
    out
}

fn display_width(s: &str) -> usize {
    s.chars().map(char_width).sum()
}

/// Campaign and tier names are often Chinese, and CJK characters take two terminal columns;
/// these ranges cover the East Asian wide blocks met in practice.
fn char_width(c: char) -> usize {
    match u32::from(c) {
        0x1100..=0x115F
        | 0x2E80..=0x303E
        | 0x3041..=0x33FF
        | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF
        | 0xA000..=0xA4CF
        | 0xAC00..=0xD7A3
        | 0xF900..=0xFAFF
        | 0xFE30..=0xFE4F
        | 0xFF00..=0xFF60
        | 0xFFE0..=0xFFE6
        | 0x1F300..=0x1F64F
        | 0x1F900..=0x1F9FF
        | 0x20000..=0x3FFFD => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{fixtures, interval, points, relative};

    fn assert_fits(text: &str) {
        for line in text.lines() {
            assert!(
                display_width(line) <= WIDTH,
                "{} columns: {line}",
                display_width(line)
            );
            assert!(
                !line.chars().any(char::is_control),
                "control character in {line:?}"
            );
        }
    }

    #[test]
    fn shows_the_funnel_with_rates() {
        let text = render_text(&fixtures::report(false));
        for needle in [
            "campus-bundle-autumn",
            "42 (workflow version 3f9a1c2e)",
            "event order offer=campus-bundle",
            "Wave 1 of 2: sms-offer via sms",
            "Wave 2 of 2: call-non-responders via outbound_call",
            "120,000",
            "105,300",
            "101,000",
            "95.92% of sent",
            "7.60% of targeted",
            "81.25% of sent",
            "23.00% of targeted",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert_fits(&text);
    }

    #[test]
    fn shows_treatment_against_control_with_statistics() {
        let r = fixtures::report(false);
        let text = render_text(&r);
        let u = &r.overall.uplift;
        for needle in [
            "95% CI (pp)".to_owned(),
            "8,000".to_owned(),
            "597".to_owned(),
            "7.60%".to_owned(),
            "5.10%".to_owned(),
            points(u.absolute),
            interval(u),
            relative(u),
            "< 0.0001".to_owned(),
            "gold card".to_owned(),
            "ordinary".to_owned(),
        ] {
            assert!(text.contains(&needle), "missing {needle:?} in\n{text}");
        }
        let verdicts: Vec<&str> = text.lines().filter(|l| l.contains("Verdict:")).collect();
        assert_eq!(verdicts, [verdict(&r).as_str()]);
        assert!(!text.contains("SIMULATED"));
    }

    #[test]
    fn simulated_runs_say_so_at_top_and_bottom() {
        let text = render_text(&fixtures::report(true));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].contains("SIMULATED RESULTS"), "{text}");
        assert!(
            lines[lines.len() - 2].contains("SIMULATED RESULTS"),
            "{text}"
        );
        assert!(text.contains("[SIMULATED] Verdict:"));
        assert_fits(&text);
    }

    #[test]
    fn long_wide_and_hostile_names_stay_within_width() {
        let mut r = fixtures::hostile();
        r.campaign = "校园套餐秋季营销活动".repeat(10);
        r.cells[1].label = "x".repeat(300);
        r.overall.treatment.n = 10_000_000;
        r.overall.control.n = 10_000_000;
        r.waves[1].wave = "w".repeat(500);
        let text = render_text(&r);
        assert_fits(&text);
        assert!(text.contains("校园套餐"));
        assert!(text.contains("10,000,000"));
        assert!(text.contains("line one?line two"));
    }

    #[test]
    fn empty_denominators_show_a_dash_not_nan() {
        let mut r = fixtures::report(false);
        r.waves[1] = WaveCounts {
            wave: "idle".to_owned(),
            channel: "sms".to_owned(),
            eligible: 0,
            excluded: 0,
            control: 0,
            targeted: 0,
            sent: 0,
            delivered: 0,
            failed: 0,
            expired: 0,
            unknown: 0,
            responded: 0,
        };
        r.waves.truncate(2);
        r.cells = vec![fixtures::cell("empty", (0, 0), (0, 0))];
        let text = render_text(&r);
        assert!(text.contains("- of sent"), "{text}");
        assert!(text.contains("- of targeted"), "{text}");
        assert!(!text.to_lowercase().contains("nan"), "{text}");
        let row = text.lines().find(|l| l.starts_with("  empty")).unwrap();
        assert_eq!(
            row.split_whitespace().collect::<Vec<_>>(),
            ["empty", "-", "-", "-", "-", "-"]
        );
    }

    #[test]
    fn fit_cuts_by_display_columns() {
        assert_eq!(fit("abcdef", 10), "abcdef");
        assert_eq!(fit("abcdef", 4), "abc~");
        assert_eq!(fit("校园套餐", 5), "校园~");
        assert_eq!(display_width("校园a"), 5);
    }
}
