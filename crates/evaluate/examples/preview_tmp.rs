use evaluate::*;
fn cell(label: &str, t: (u64, u64), c: (u64, u64)) -> Cell {
    let treatment = Arm { n: t.0, converted: t.1 };
    let control = Arm { n: c.0, converted: c.1 };
    Cell { label: label.to_owned(), treatment, control, uplift: uplift(treatment, control, 0.95) }
}
fn main() {
    let w = |wave: &str, ch: &str, e, x, c, t, s, d, f, ex, r| WaveCounts { wave: wave.into(), channel: ch.into(), eligible: e, excluded: x, control: c, targeted: t, sent: s, delivered: d, failed: f, expired: ex, responded: r };
    let r = Report {
        campaign: "campus-bundle-autumn 校园套餐".into(), run_id: 42, version: "3f9a1c2e".into(),
        goal: "event order offer=campus-bundle".into(), started_at: "2024-09-01T08:00:00Z".into(), finished_at: "2024-09-15T20:00:00Z".into(),
        waves: vec![w("sms-offer", "sms", 120000, 3000, 11700, 105300, 105300, 101000, 3000, 1300, 8000), w("call-non-responders", "outbound_call", 97300, 0, 0, 5000, 4800, 3900, 700, 200, 1150)],
        overall: cell("all", (105300, 8000), (11700, 597)),
        cells: vec![cell("gold card", (20000, 2100), (2200, 150)), cell("ordinary", (85300, 5900), (9500, 447)), cell("diamond card", (40, 3), (0, 0))],
        simulated: std::env::args().count() > 1,
    };
    std::fs::write("/tmp/report.html", render_html(&r)).unwrap();
    std::fs::write("/tmp/report.csv", render_csv(&r)).unwrap();
    std::fs::write("/tmp/report.json", render_json(&r)).unwrap();
    print!("{}", render_text(&r));
}
