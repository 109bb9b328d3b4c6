//! One flat RFC 4180 table with a `section` column, so a spreadsheet or `csv` reader needs no
//! knowledge of the layout, and rows from many runs can be concatenated under one header.

use super::comparable;
use crate::report::{Cell, Report, WaveCounts};

const COLUMNS: [&str; 40] = [
    "section",
    "campaign",
    "run_id",
    "version",
    "goal",
    "started_at",
    "finished_at",
    "simulated",
    "label",
    "channel",
    "eligible",
    "excluded",
    "control",
    "targeted",
    "sent",
    "delivered",
    "failed",
    "expired",
    "responded",
    "delivery_rate",
    "response_rate",
    "treatment_n",
    "treatment_converted",
    "treatment_rate",
    "control_n",
    "control_converted",
    "control_rate",
    "uplift",
    "ci_low",
    "ci_high",
    "relative",
    "p_value",
    "confidence",
    "significant",
    "group_by",
    "respondents",
    "score",
    "choice",
    "reached",
    "reach_rate",
];

/// Index of the first arm column.
const ARMS: usize = 21;

/// CSV with header; rows of section `wave`, then `overall`, then `cell`, then `variant`
/// (one per experiment variant, labelled `wave / variant`, against the shared control), then
/// `survey` (one per group of respondents: `group_by`, `respondents`, `score` = P), then
/// `reach` (one per preferred wave, channel and choice: `label` = the wave, `channel`,
/// `choice`, `targeted` = its contacts, `reached`, `reach_rate`, `responded`). Every row
/// repeats the run columns, `simulated` included, so no extract of the file loses that flag.
/// Fields that do not apply to a section, and rates without a denominator, are empty.
pub fn render_csv(r: &Report) -> String {
    let mut out = String::new();
    line(&mut out, COLUMNS.iter().map(|c| (*c).to_owned()).collect());
    for w in &r.waves {
        line(&mut out, wave_row(r, w));
    }
    line(&mut out, cell_row(r, "overall", &r.overall));
    for c in &r.cells {
        line(&mut out, cell_row(r, "cell", c));
    }
    for v in &r.variants {
        let mut c = v.outcome.clone();
        c.label = format!("{} / {}", v.wave, v.variant);
        let mut row = cell_row(r, "variant", &c);
        row[RESPONDED] = v.responded.to_string();
        line(&mut out, row);
    }
    if let Some(s) = &r.survey {
        for g in &s.groups {
            let mut row = run_fields(r, "survey");
            row.push(text(&g.group));
            row.resize(column("group_by"), String::new());
            row.extend([
                text(&s.group_by),
                g.respondents.to_string(),
                number(g.score),
            ]);
            row.resize(COLUMNS.len(), String::new());
            line(&mut out, row);
        }
    }
    for x in &r.reach {
        let mut row = run_fields(r, "reach");
        row.extend([text(&x.wave), text(&x.channel)]);
        row.resize(COLUMNS.len(), String::new());
        row[column("targeted")] = x.contacts.to_string();
        row[RESPONDED] = x.responded.to_string();
        row[column("choice")] = text(&x.choice);
        row[column("reached")] = x.reached.to_string();
        row[column("reach_rate")] = x.reach_rate().map_or_else(String::new, number);
        line(&mut out, row);
    }
    out
}

/// Index of a column by name (a constant list: a wrong name is a bug caught by every test).
fn column(name: &str) -> usize {
    COLUMNS
        .iter()
        .position(|c| *c == name)
        .unwrap_or_else(|| panic!("no CSV column {name}"))
}

/// Index of the `responded` column.
const RESPONDED: usize = 18;

fn run_fields(r: &Report, section: &str) -> Vec<String> {
    vec![
        section.to_owned(),
        text(&r.campaign),
        r.run_id.to_string(),
        text(&r.version),
        text(&r.goal),
        text(&r.started_at),
        text(&r.finished_at),
        r.simulated.to_string(),
    ]
}

fn wave_row(r: &Report, w: &WaveCounts) -> Vec<String> {
    let mut row = run_fields(r, "wave");
    row.extend([text(&w.wave), text(&w.channel)]);
    row.extend(
        [
            w.eligible,
            w.excluded,
            w.control,
            w.targeted,
            w.sent,
            w.delivered,
            w.failed,
            w.expired,
            w.responded,
        ]
        .map(|n| n.to_string()),
    );
    row.extend([w.delivery_rate(), w.response_rate()].map(|x| x.map_or_else(String::new, number)));
    row.resize(COLUMNS.len(), String::new());
    row
}

fn cell_row(r: &Report, section: &str, c: &Cell) -> Vec<String> {
    let mut row = run_fields(r, section);
    row.push(text(&c.label));
    row.resize(ARMS, String::new());
    let u = &c.uplift;
    let rate = |n: u64, x: f64| if n == 0 { String::new() } else { number(x) };
    row.extend([
        c.treatment.n.to_string(),
        c.treatment.converted.to_string(),
        rate(c.treatment.n, u.treatment_rate),
        c.control.n.to_string(),
        c.control.converted.to_string(),
        rate(c.control.n, u.control_rate),
    ]);
    // Same rule as the other renderers: no comparison against an arm nobody was in.
    if comparable(c) {
        row.extend([
            number(u.absolute),
            number(u.ci_low),
            number(u.ci_high),
            u.relative.map_or_else(String::new, number),
            number(u.p_value),
        ]);
    } else {
        row.resize(row.len() + 5, String::new());
    }
    row.extend([number(u.confidence), u.significant.to_string()]);
    row.resize(COLUMNS.len(), String::new());
    row
}

/// Shortest round-trip digits; exponent form for tiny values instead of hundreds of zeros;
/// empty rather than `NaN`, which spreadsheets would read as text.
fn number(x: f64) -> String {
    if !x.is_finite() {
        String::new()
    } else if x != 0.0 && x.abs() < 1e-4 {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

/// Spreadsheets execute a cell that starts with `=`, `+`, `-` or `@` as a formula, and campaign
/// names and labels are typed by users; a leading `'` makes them inert (OWASP CSV injection).
fn text(s: &str) -> String {
    match s.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{s}"),
        _ => s.to_owned(),
    }
}

fn line(out: &mut String, fields: Vec<String>) {
    debug_assert_eq!(fields.len(), COLUMNS.len());
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if f.contains([',', '"', '\r', '\n']) {
            out.push('"');
            out.push_str(&f.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(f);
        }
    }
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::fixtures;

    fn read(csv: &str) -> Vec<Vec<String>> {
        let mut reader = ::csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(csv.as_bytes());
        reader
            .records()
            .map(|r| r.unwrap().iter().map(str::to_owned).collect())
            .collect()
    }

    #[test]
    fn every_row_has_every_column() {
        let r = fixtures::report(false);
        let rows = read(&render_csv(&r));
        assert_eq!(rows.len(), 1 + r.waves.len() + 1 + r.cells.len());
        for row in &rows {
            assert_eq!(row.len(), COLUMNS.len(), "{row:?}");
        }
        assert_eq!(rows[0], COLUMNS);
        let sections: Vec<&str> = rows[1..].iter().map(|r| r[0].as_str()).collect();
        assert_eq!(sections, ["wave", "wave", "overall", "cell", "cell"]);
        assert_eq!(COLUMNS[ARMS], "treatment_n");
        assert_eq!(COLUMNS[RESPONDED], "responded");
    }

    #[test]
    fn variants_and_survey_scores_have_their_own_rows() {
        let r = fixtures::with_variants_and_survey(fixtures::report(false));
        let rows = read(&render_csv(&r));
        for row in &rows {
            assert_eq!(row.len(), COLUMNS.len(), "{row:?}");
        }
        let sections: Vec<&str> = rows[1..].iter().map(|r| r[0].as_str()).collect();
        assert_eq!(
            sections,
            [
                "wave", "wave", "overall", "cell", "cell", "variant", "variant", "survey", "survey"
            ]
        );
        let short = &rows[6];
        assert_eq!(short[column("label")], "sms-offer / short");
        assert_eq!(short[column("treatment_n")], "52000");
        assert_eq!(short[column("treatment_converted")], "4100");
        assert_eq!(short[column("responded")], "3900");
        assert_eq!(short[column("control_n")], "11700", "the shared control");
        assert_eq!(
            short[column("uplift")].parse::<f64>().unwrap(),
            r.variants[0].outcome.uplift.absolute
        );
        let gold = &rows[8];
        assert_eq!(gold[column("label")], "gold");
        assert_eq!(gold[column("group_by")], "value_tier");
        assert_eq!(gold[column("respondents")], "25");
        assert_eq!(gold[column("score")], "0.412");
        assert_eq!(gold[column("treatment_n")], "");
        assert_eq!(rows[9][column("score")], "0");
    }

    #[test]
    fn reach_rows_carry_channel_choice_and_rate() {
        let mut r = fixtures::report(false);
        r.reach = fixtures::reach();
        let rows = read(&render_csv(&r));
        for row in &rows {
            assert_eq!(row.len(), COLUMNS.len(), "{row:?}");
        }
        let reach: Vec<&Vec<String>> = rows.iter().filter(|r| r[0] == "reach").collect();
        assert_eq!(reach.len(), 2);
        let second = reach[1];
        assert_eq!(second[column("label")], "offer");
        assert_eq!(second[column("channel")], "email");
        assert_eq!(second[column("choice")], "second");
        assert_eq!(second[column("targeted")], "40");
        assert_eq!(second[column("reached")], "30");
        assert_eq!(second[column("reach_rate")], "0.75");
        assert_eq!(second[column("responded")], "6");
        assert_eq!(second[column("treatment_n")], "");
    }

    #[test]
    fn carries_the_numbers() {
        let r = fixtures::report(true);
        let rows = read(&render_csv(&r));
        let wave = &rows[1];
        assert_eq!(wave[column("label")], "sms-offer");
        assert_eq!(wave[column("delivered")], "101000");
        assert_eq!(
            wave[column("delivery_rate")].parse::<f64>().unwrap(),
            101_000.0 / 105_300.0
        );
        assert_eq!(wave[column("treatment_n")], "");
        let overall = &rows[3];
        assert_eq!(overall[column("label")], "all");
        assert_eq!(overall[column("treatment_n")], "105300");
        assert_eq!(overall[column("control_converted")], "597");
        assert_eq!(
            overall[column("uplift")].parse::<f64>().unwrap(),
            r.overall.uplift.absolute
        );
        assert_eq!(overall[column("significant")], "true");
        assert_eq!(overall[column("eligible")], "");
        assert!(
            rows[1..]
                .iter()
                .all(|row| row[column("simulated")] == "true")
        );
    }

    #[test]
    fn quotes_and_defuses_hostile_text() {
        let mut r = fixtures::hostile();
        r.cells[1].label = "=HYPERLINK(\"http://x\")".to_owned();
        let csv = render_csv(&r);
        let rows = read(&csv);
        for row in &rows {
            assert_eq!(row.len(), COLUMNS.len(), "{row:?}");
        }
        assert_eq!(rows[1][column("campaign")], r.campaign);
        assert_eq!(rows[1][column("goal")], r.goal);
        assert_eq!(rows[1][column("label")], "a,b\"c\nd");
        assert_eq!(rows[5][column("label")], "'=HYPERLINK(\"http://x\")");
        assert!(csv.ends_with("\r\n"));
    }

    #[test]
    fn no_comparison_without_a_control_group() {
        let mut r = fixtures::report(false);
        r.cells = vec![fixtures::cell("no control", (40, 3), (0, 0))];
        let rows = read(&render_csv(&r));
        let row = &rows[4];
        assert_eq!(row[column("treatment_rate")], "0.075");
        assert_eq!(row[column("control_rate")], "");
        for empty in ["uplift", "ci_low", "ci_high", "relative", "p_value"] {
            assert_eq!(row[column(empty)], "", "{empty}");
        }
        assert_eq!(row[column("significant")], "false");
    }

    #[test]
    fn numbers_are_plain_or_exponent_never_nan() {
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(0.0), "0");
        assert_eq!(number(5.69e-7), "5.69e-7");
        assert_eq!(number(f64::NAN), "");
    }
}
