//! Pretty JSON of the whole report, for the API and for archiving.

use serde::Serialize;

use super::SIMULATED_NOTICE;
use crate::report::Report;

/// The report's own fields, preceded by a `notice` when the run was simulated so that anyone
/// reading the raw JSON meets the warning first, not only as a flag at the end.
#[derive(Serialize)]
struct Document<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    notice: Option<&'static str>,
    #[serde(flatten)]
    report: &'a Report,
}

/// Pretty-printed JSON of the report.
pub fn render_json(r: &Report) -> String {
    let doc = Document {
        notice: r.simulated.then_some(SIMULATED_NOTICE),
        report: r,
    };
    // The report holds only strings, integers, floats, booleans and lists; serde_json fails only
    // on maps with non-string keys or failing writers, neither of which can occur here.
    serde_json::to_string_pretty(&doc).expect("a Report always serializes")
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::render::fixtures;

    #[test]
    fn parses_back_with_every_field() {
        let r = fixtures::report(false);
        let v: Value = serde_json::from_str(&render_json(&r)).unwrap();
        assert_eq!(v["campaign"], "campus-bundle-autumn");
        assert_eq!(v["run_id"], 42);
        assert_eq!(v["version"], "3f9a1c2e");
        assert_eq!(v["goal"], "event order offer=campus-bundle");
        assert_eq!(v["started_at"], "2024-09-01T08:00:00Z");
        assert_eq!(v["simulated"], false);
        assert!(v.get("notice").is_none());
        assert_eq!(v["waves"].as_array().unwrap().len(), 2);
        assert_eq!(v["waves"][1]["channel"], "outbound_call");
        assert_eq!(v["waves"][0]["delivered"], 101_000);
        assert_eq!(v["overall"]["label"], "all");
        assert_eq!(v["overall"]["treatment"]["n"], 105_300);
        assert_eq!(v["overall"]["control"]["converted"], 597);
        let u = &v["overall"]["uplift"];
        // Parsing may land one ulp away unless serde_json's float_roundtrip feature is on.
        assert!((u["absolute"].as_f64().unwrap() - r.overall.uplift.absolute).abs() < 1e-15);
        assert!((u["ci_low"].as_f64().unwrap() - r.overall.uplift.ci_low).abs() < 1e-15);
        assert_eq!(u["significant"], true);
        assert_eq!(v["cells"][0]["label"], "gold card");
    }

    #[test]
    fn simulated_runs_lead_with_a_notice() {
        let json = render_json(&fixtures::hostile());
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["simulated"], true);
        assert!(v["notice"].as_str().unwrap().starts_with("SIMULATED"));
        assert!(
            json.trim_start()
                .starts_with("{\n  \"notice\": \"SIMULATED"),
            "{json}"
        );
        assert_eq!(v["campaign"], fixtures::hostile().campaign);
        assert_eq!(v["goal"], fixtures::hostile().goal);
    }

    #[test]
    fn missing_relative_uplift_is_null() {
        let mut r = fixtures::report(false);
        r.overall = fixtures::cell("all", (100, 5), (100, 0));
        let v: Value = serde_json::from_str(&render_json(&r)).unwrap();
        assert!(v["overall"]["uplift"]["relative"].is_null());
    }
}
