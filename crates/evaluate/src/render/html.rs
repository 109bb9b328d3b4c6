//! A single self-contained HTML page: inline CSS and SVG, no scripts, nothing fetched, so it can
//! be mailed as an attachment or body and opened offline.

use std::fmt::Write as _;

use super::{
    SIMULATED_NOTICE, comparison, confidence, funnel_stages, percent, provisional_notice, share,
    thousands, verdict,
};
use crate::report::{Cell, Report, WaveCounts, ratio};
use crate::stats::{Arm, wilson};

/// Even if some text escaped [`esc`], the page may neither run scripts nor load anything.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'";

const STYLE: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:60rem;
color:#1d2433;padding:0 1rem;line-height:1.4}
h1{font-size:1.5rem;margin-bottom:.5rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ccd}
h3{font-size:1rem;margin-bottom:.25rem}
.simulated{background:#b00020;color:#fff;font-size:1.2rem;font-weight:700;padding:.75rem 1rem;
border-radius:4px;margin:1rem 0;text-align:center}
table{border-collapse:collapse;margin:.5rem 0}th,td{padding:.25rem .6rem;border-bottom:1px solid #e3e6ee}
th{text-align:left;background:#f4f6fa}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
table.meta th{background:none;font-weight:600}
.verdict{font-weight:600;padding:.5rem .75rem;border-left:4px solid #888;background:#f4f6fa}
.verdict.up{border-color:#1b7f3b}.verdict.down{border-color:#b00020}
svg{display:block;max-width:100%;height:auto}svg text{font-size:12px;fill:#1d2433}
.t{fill:#2f6fdb}.c{fill:#9aa3b5}.w{stroke:#1d2433;stroke-width:1.5}.grid{stroke:#e3e6ee}
.f{fill:#5b8def}
";

/// Self-contained HTML page of the report.
pub fn render_html(r: &Report) -> String {
    let mut h = String::new();
    let sim = if r.simulated { "[SIMULATED] " } else { "" };
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{sim}Campaign report: {} - run {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        esc(&r.campaign),
        r.run_id,
    );
    if r.simulated {
        banner(&mut h);
    }
    let _ = writeln!(h, "<h1>Campaign report: {}</h1>", esc(&r.campaign));
    h.push_str("<table class=\"meta\">\n");
    for (k, v) in [
        ("Run", r.run_id.to_string()),
        ("Workflow version", r.version.clone()),
        ("Goal", r.goal.clone()),
        ("Period", format!("{} .. {}", r.started_at, r.finished_at)),
    ] {
        let _ = writeln!(h, "<tr><th>{k}</th><td>{}</td></tr>", esc(&v));
    }
    if let Some(notice) = provisional_notice(r) {
        let _ = writeln!(h, "<tr><th>Status</th><td>{}</td></tr>", esc(&notice));
    }
    h.push_str("</table>\n");
    let class = match (
        r.overall.uplift.significant,
        r.overall.uplift.absolute > 0.0,
    ) {
        (true, true) => "verdict up",
        (true, false) => "verdict down",
        (false, _) => "verdict",
    };
    let _ = writeln!(h, "<p class=\"{class}\">{}</p>", esc(&verdict(r)));

    let level = confidence(r.overall.uplift.confidence);
    let _ = writeln!(
        h,
        "<h2>Treatment vs control on the goal ({level} confidence)</h2>"
    );
    let cells = super::outcome_cells(r);
    bar_chart(&mut h, &cells, r.overall.uplift.confidence);
    outcome_table(
        &mut h,
        &cells,
        r.breakdown.as_deref(),
        &level,
        r.outcome_word(),
    );

    h.push_str("<h2>Wave funnel</h2>\n");
    if r.waves.is_empty() {
        h.push_str("<p>No waves ran.</p>\n");
    }
    for (i, w) in r.waves.iter().enumerate() {
        let _ = writeln!(
            h,
            "<section>\n<h3>Wave {} of {}: {} <small>via {}</small></h3>",
            i + 1,
            r.waves.len(),
            esc(&w.wave),
            esc(&w.channel)
        );
        funnel_chart(&mut h, w);
        funnel_table(&mut h, w);
        h.push_str("</section>\n");
    }
    if !r.variants.is_empty() {
        let _ = writeln!(
            h,
            "<h2>Variants vs the shared control on the goal ({level} confidence)</h2>"
        );
        let cells: Vec<Cell> = r
            .variants
            .iter()
            .map(|v| Cell {
                label: format!("{} / {}", v.wave, v.variant),
                ..v.outcome.clone()
            })
            .collect();
        let refs: Vec<&Cell> = cells.iter().collect();
        bar_chart(&mut h, &refs, r.overall.uplift.confidence);
        outcome_table(&mut h, &refs, Some("Variant"), &level, r.outcome_word());
        h.push_str("<p>Responded within the wave's window: ");
        let said: Vec<String> = r
            .variants
            .iter()
            .map(|v| {
                format!(
                    "{} / {} {}",
                    esc(&v.wave),
                    esc(&v.variant),
                    thousands(v.responded)
                )
            })
            .collect();
        h.push_str(&said.join("; "));
        h.push_str(".</p>\n");
    }
    if !r.reach.is_empty() {
        h.push_str("<h2>Reach by channel and choice (preferred waves)</h2>\n");
        h.push_str(
            "<table>\n<tr><th>Wave</th><th>Channel</th><th>Choice</th><th class=\"n\">Contacts</th>\
             <th class=\"n\">Reached</th><th class=\"n\">Reach</th><th class=\"n\">Responded</th></tr>\n",
        );
        for row in &r.reach {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                esc(&row.wave),
                esc(&row.channel),
                esc(&row.choice),
                thousands(row.contacts),
                thousands(row.reached),
                row.reach_rate().map_or_else(|| "-".to_owned(), percent),
                thousands(row.responded)
            );
        }
        h.push_str("</table>\n");
    }
    if let Some(s) = &r.survey {
        let _ = writeln!(h, "<h2>Survey score P by {}</h2>", esc(&s.group_by));
        h.push_str(
            "<table>\n<tr><th>Group</th><th class=\"n\">P</th><th class=\"n\">Respondents</th></tr>\n",
        );
        if s.groups.is_empty() {
            h.push_str("<tr><td colspan=\"3\">No answers.</td></tr>\n");
        }
        for g in &s.groups {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td class=\"n\">{:.3}</td><td class=\"n\">{}</td></tr>",
                esc(&g.group),
                g.score,
                thousands(g.respondents)
            );
        }
        h.push_str("</table>\n");
    }
    if r.simulated {
        banner(&mut h);
    }
    h.push_str("</body>\n</html>\n");
    h
}

fn banner(h: &mut String) {
    let _ = writeln!(
        h,
        "<div class=\"simulated\" role=\"alert\">{}</div>",
        esc(SIMULATED_NOTICE)
    );
}

fn outcome_table(
    h: &mut String,
    cells: &[&Cell],
    breakdown: Option<&str>,
    level: &str,
    word: &str,
) {
    let first = breakdown.map_or_else(|| "Cell".to_owned(), esc);
    let _ = writeln!(
        h,
        "<table>\n<tr><th>{first}</th><th class=\"n\">Treatment n</th><th class=\"n\">{word}</th>\
         <th class=\"n\">rate</th><th class=\"n\">Control n</th><th class=\"n\">{word}</th>\
         <th class=\"n\">rate</th><th class=\"n\">Uplift</th><th class=\"n\">{level} CI (pp)</th>\
         <th class=\"n\">Relative</th><th class=\"n\">p-value</th><th>Significant</th></tr>"
    );
    for c in cells {
        let u = &c.uplift;
        let rate = |a: Arm, x: f64| if a.n == 0 { "-".to_owned() } else { percent(x) };
        let cmp = comparison(c);
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            esc(&c.label),
            thousands(c.treatment.n),
            thousands(c.treatment.converted),
            rate(c.treatment, u.treatment_rate),
            thousands(c.control.n),
            thousands(c.control.converted),
            rate(c.control, u.control_rate),
            esc(&cmp[0]),
            esc(&cmp[1]),
            esc(&cmp[2]),
            esc(&cmp[3]),
            esc(&cmp[4]),
        );
    }
    h.push_str("</table>\n");
}

/// Horizontal grouped bars: per cell, treatment and control goal rate with Wilson whiskers.
fn bar_chart(h: &mut String, cells: &[&Cell], conf: f64) {
    const WIDTH: f64 = 760.0;
    const LABEL: f64 = 190.0;
    const PLOT: f64 = 470.0;
    const TOP: f64 = 34.0;
    const GROUP: f64 = 50.0;
    const BAR: f64 = 16.0;
    let arms = |c: &Cell| {
        [
            ("treatment", "t", c.treatment, c.uplift.treatment_rate),
            ("control", "c", c.control, c.uplift.control_rate),
        ]
    };
    let top = cells
        .iter()
        .flat_map(|c| arms(c))
        .filter(|(_, _, a, _)| a.n > 0)
        .map(|(_, _, a, rate)| wilson(a.converted, a.n, conf).1.max(unit(rate)))
        .fold(0.0, f64::max);
    let (max, step) = axis(top);
    let x = |v: f64| LABEL + unit(v) / max * PLOT;
    let height = TOP + GROUP * cells.len() as f64 + 26.0;
    let _ = writeln!(
        h,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {height}\" width=\"{WIDTH}\" \
         height=\"{height}\" role=\"img\" aria-label=\"Goal rate of treatment and control per cell, \
         with confidence intervals\">"
    );
    let _ = writeln!(
        h,
        "<rect class=\"t\" x=\"{LABEL}\" y=\"6\" width=\"12\" height=\"12\"/><text x=\"{}\" y=\"16\">treatment</text>\
         <rect class=\"c\" x=\"{}\" y=\"6\" width=\"12\" height=\"12\"/><text x=\"{}\" y=\"16\">control</text>\
         <text x=\"{}\" y=\"16\">whiskers: {} Wilson interval</text>",
        LABEL + 16.0,
        LABEL + 100.0,
        LABEL + 116.0,
        LABEL + 200.0,
        confidence(conf)
    );
    let bottom = height - 22.0;
    let mut tick = 0.0;
    while tick <= max + step / 2.0 {
        let _ = writeln!(
            h,
            "<line class=\"grid\" x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{TOP}\" y2=\"{bottom}\"/>\
             <text x=\"{0:.1}\" y=\"{1}\" text-anchor=\"middle\">{2}</text>",
            x(tick),
            bottom + 16.0,
            axis_label(tick, step)
        );
        tick += step;
    }
    for (i, c) in cells.iter().enumerate() {
        let y0 = TOP + GROUP * i as f64;
        let _ = writeln!(
            h,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\"><title>{}</title>{}</text>",
            LABEL - 8.0,
            y0 + 25.0,
            esc(&c.label),
            esc(&shorten(&c.label, 28))
        );
        for (j, (name, class, a, rate)) in arms(c).into_iter().enumerate() {
            let y = y0 + 6.0 + j as f64 * (BAR + 4.0);
            let mid = y + BAR / 2.0;
            if a.n == 0 {
                let _ = writeln!(
                    h,
                    "<text x=\"{}\" y=\"{}\">{name}: no contacts</text>",
                    LABEL + 4.0,
                    mid + 4.0
                );
                continue;
            }
            let (lo, hi) = wilson(a.converted, a.n, conf);
            let (x_lo, x_hi) = (x(lo), x(hi));
            let (cap_top, cap_bottom) = (mid - 5.0, mid + 5.0);
            let _ = writeln!(
                h,
                "<g><title>{name}: {rate} ({conv} / {n}), {level} CI {lo_pct} to {hi_pct}</title>\
                 <rect class=\"{class}\" x=\"{LABEL}\" y=\"{y}\" width=\"{bar:.1}\" height=\"{BAR}\"/>\
                 <line class=\"w\" x1=\"{x_lo:.1}\" x2=\"{x_hi:.1}\" y1=\"{mid}\" y2=\"{mid}\"/>\
                 <line class=\"w\" x1=\"{x_lo:.1}\" x2=\"{x_lo:.1}\" y1=\"{cap_top}\" y2=\"{cap_bottom}\"/>\
                 <line class=\"w\" x1=\"{x_hi:.1}\" x2=\"{x_hi:.1}\" y1=\"{cap_top}\" y2=\"{cap_bottom}\"/>\
                 <text x=\"{text_x:.1}\" y=\"{text_y}\">{rate}</text></g>",
                rate = percent(rate),
                conv = thousands(a.converted),
                n = thousands(a.n),
                level = confidence(conf),
                lo_pct = percent(lo),
                hi_pct = percent(hi),
                bar = x(rate) - LABEL,
                text_x = x_hi + 6.0,
                text_y = mid + 4.0,
            );
        }
    }
    h.push_str("</svg>\n");
}

/// Centred bars, one per stage of the treatment funnel, widths relative to the widest.
fn funnel_chart(h: &mut String, w: &WaveCounts) {
    const WIDTH: f64 = 760.0;
    const LABEL: f64 = 90.0;
    const PLOT: f64 = 440.0;
    const ROW: f64 = 32.0;
    const BAR: f64 = 24.0;
    let stages = [
        ("eligible", w.eligible, String::new()),
        (
            "targeted",
            w.targeted,
            share(w.targeted, w.eligible, "eligible"),
        ),
        ("sent", w.sent, share(w.sent, w.targeted, "targeted")),
        ("delivered", w.delivered, share(w.delivered, w.sent, "sent")),
        (
            "responded",
            w.responded,
            share(w.responded, w.targeted, "targeted"),
        ),
    ];
    let top = stages.iter().map(|s| s.1).max().unwrap_or(0);
    let height = ROW * stages.len() as f64 + 8.0;
    let _ = writeln!(
        h,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {height}\" width=\"{WIDTH}\" \
         height=\"{height}\" role=\"img\" aria-label=\"Funnel of wave {}\">",
        esc(&w.wave)
    );
    let centre = LABEL + PLOT / 2.0;
    for (i, (stage, count, note)) in stages.iter().enumerate() {
        let y = 4.0 + ROW * i as f64;
        let width =
            ratio(*count, top).map_or(0.0, |f| (f * PLOT).max(if *count > 0 { 1.0 } else { 0.0 }));
        let _ = writeln!(
            h,
            "<text x=\"0\" y=\"{0}\">{stage}</text>\
             <rect class=\"f\" x=\"{1:.1}\" y=\"{y}\" width=\"{2:.1}\" height=\"{BAR}\"><title>{stage}: {3}</title></rect>\
             <text x=\"{4}\" y=\"{0}\">{3}{5}</text>",
            y + 16.0,
            centre - width / 2.0,
            width,
            thousands(*count),
            LABEL + PLOT + 12.0,
            if note.is_empty() {
                String::new()
            } else {
                format!(" ({note})")
            },
        );
    }
    h.push_str("</svg>\n");
}

fn funnel_table(h: &mut String, w: &WaveCounts) {
    h.push_str(
        "<table>\n<tr><th>Stage</th><th class=\"n\">Count</th><th class=\"n\">Rate</th></tr>\n",
    );
    for (stage, count, rate) in funnel_stages(w) {
        let _ = writeln!(
            h,
            "<tr><td>{stage}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            thousands(count),
            esc(&rate)
        );
    }
    h.push_str("</table>\n");
}

/// Rates drawn outside [0, 1] or as NaN would put SVG coordinates off the chart or make them
/// invalid; the tables still show the values as given.
fn unit(x: f64) -> f64 {
    if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) }
}

/// Axis end and tick step: the step is 1, 2 or 5 times a power of ten, about a quarter of the
/// largest value, so the axis has four to five labelled ticks.
fn axis(top: f64) -> (f64, f64) {
    let top = top.clamp(0.001, 1.0);
    let raw = top / 4.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(magnitude * 10.0);
    ((top / step).ceil() * step, step)
}

/// Enough decimals to tell adjacent ticks apart.
fn axis_label(v: f64, step: f64) -> String {
    let decimals = if step * 100.0 >= 1.0 {
        0
    } else {
        (-(step * 100.0).log10()).ceil() as usize
    };
    format!("{:.*}%", decimals, v * 100.0)
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        s.chars().take(max - 1).chain(['…']).collect()
    }
}

/// Escapes text for both element content and quoted attribute values (`&`, `<`, `>`, `"`,
/// `'`): the report's and the staff digests' one escape.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::fixtures;

    #[test]
    fn shows_variants_against_the_shared_control_and_survey_scores() {
        let r = fixtures::with_variants_and_survey(fixtures::report(false));
        let html = render_html(&r);
        assert!(
            html.contains("<h2>Variants vs the shared control on the goal (95% confidence)</h2>"),
            "{html}"
        );
        assert!(
            html.contains(
                "<td>sms-offer / short</td><td class=\"n\">52,000</td><td class=\"n\">4,100</td>"
            ),
            "{html}"
        );
        assert!(!html.contains("<long>"), "variant names are escaped");
        assert!(html.contains("sms-offer / &lt;long&gt; 4,100"), "{html}");
        assert!(html.contains("<h2>Survey score P by value_tier</h2>"));
        assert!(
            html.contains("<td>gold</td><td class=\"n\">0.412</td><td class=\"n\">25</td>"),
            "{html}"
        );
        assert!(html.contains("<td>silver</td><td class=\"n\">0.000</td><td class=\"n\">4</td>"));
        let plain = render_html(&fixtures::report(false));
        assert!(
            !plain.contains("Variants") && !plain.contains("Survey") && !plain.contains("Reach")
        );
        let mut preferred = fixtures::report(false);
        preferred.reach = fixtures::reach();
        let html = render_html(&preferred);
        assert!(html.contains("<h2>Reach by channel and choice (preferred waves)</h2>"));
        assert!(html.contains("<tr><td>offer</td><td>email</td><td>second</td><td class=\"n\">40</td><td class=\"n\">30</td><td class=\"n\">75.00%</td><td class=\"n\">6</td></tr>"), "{html}");
    }

    #[test]
    fn escapes_all_text() {
        let r = fixtures::with_variants_and_survey(fixtures::hostile());
        let html = render_html(&r);
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<b>gold"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;co&quot;")
        );
        assert!(html.contains("&lt;b&gt;gold&lt;/b&gt;"));
        assert!(html.contains("a,b&quot;c\nd"));
        // Only the tags this renderer writes may appear.
        let allowed = [
            "!DOCTYPE", "html", "head", "meta", "title", "style", "body", "div", "h1", "h2", "h3",
            "table", "tr", "th", "td", "p", "section", "small", "svg", "rect", "text", "line", "g",
        ];
        for tag in html.split('<').skip(1) {
            let name: String = tag
                .trim_start_matches('/')
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '!')
                .collect();
            assert!(allowed.contains(&name.as_str()), "unexpected tag <{name}");
        }
    }

    #[test]
    fn is_self_contained() {
        let html = render_html(&fixtures::report(false));
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.trim_end().ends_with("</html>"));
        assert!(html.contains("<style>"));
        for external in ["<script", "<link", "src=", "href=", "url(", "@import"] {
            assert!(!html.contains(external), "{external}");
        }
        assert_eq!(
            html.matches("<svg").count(),
            1 + 2,
            "one outcome chart and one funnel per wave"
        );
        assert_eq!(html.matches("<svg").count(), html.matches("</svg>").count());
    }

    #[test]
    fn shows_numbers_and_whiskers() {
        let r = fixtures::report(false);
        let html = render_html(&r);
        for needle in [
            "105,300",
            "7.60%",
            "5.10%",
            "95.92% of sent",
            "23.00% of targeted",
            "gold card",
        ] {
            assert!(html.contains(needle), "missing {needle}");
        }
        assert!(html.contains(&esc(&verdict(&r))));
        assert!(html.contains("class=\"verdict up\""));
        // Three cells, two arms each, a bar and three whisker lines per arm.
        assert_eq!(html.matches("class=\"w\"").count(), 3 * 2 * 3);
        assert!(!html.contains("NaN") && !html.contains("inf"));
        assert!(!html.contains("SIMULATED"));
    }

    #[test]
    fn simulated_banner_opens_and_closes_the_page() {
        let html = render_html(&fixtures::report(true));
        assert!(html.contains("<title>[SIMULATED] Campaign report"));
        assert_eq!(
            html.matches("<div class=\"simulated\" role=\"alert\">SIMULATED RESULTS")
                .count(),
            2
        );
        let body = html.split("<body>").nth(1).unwrap();
        assert!(body.trim_start().starts_with("<div class=\"simulated\""));
    }

    #[test]
    fn empty_arms_and_waves_render_without_nan() {
        let mut r = fixtures::report(false);
        r.overall = fixtures::cell("all", (0, 0), (0, 0));
        r.cells = vec![fixtures::cell("none converted", (50, 0), (10, 0))];
        r.waves = vec![WaveCounts {
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
        }];
        let html = render_html(&r);
        assert!(!html.contains("NaN") && !html.contains("inf"), "{html}");
        assert!(html.contains("treatment: no contacts"));
    }

    #[test]
    fn axis_steps_are_round() {
        let close =
            |(a, b): (f64, f64), (c, d): (f64, f64)| (a - c).abs() < 1e-12 && (b - d).abs() < 1e-12;
        assert!(close(axis(0.18), (0.2, 0.05)), "{:?}", axis(0.18));
        assert!(close(axis(0.076), (0.08, 0.02)), "{:?}", axis(0.076));
        assert!(close(axis(1.0), (1.0, 0.5)), "{:?}", axis(1.0));
        assert!(close(axis(0.005), (0.006, 0.002)), "{:?}", axis(0.005));
        assert_eq!(axis_label(0.05, 0.05), "5%");
        assert_eq!(axis_label(0.004, 0.002), "0.4%");
    }
}
