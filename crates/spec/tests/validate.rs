//! Every validation error a workflow can get, each with its file, line and column, and valid
//! files passing. Fixtures are written to a temp folder as an operator would lay them out.

use std::path::{Path, PathBuf};

const SEGMENTS: &str = "segments:\n  freshmen:\n    where: \"student_stage == 'freshman'\"\n  do_not_disturb:\n    where: \"do_not_disturb\"\n";
const TEMPLATE: &str = "Hi {name}, reply 1.";

const VALID: &str = r#"campaign: autumn
timezone: Asia/Shanghai
schedule:
  cron: "0 10 * * Mon-Fri"
  season: { from: "08-15", to: "10-31" }
audience:
  segment: freshmen
  where: "arpu_3m >= 10 and brand != 'gotone'"
  exclude: [do_not_disturb]
control: { share: 0.1, stratify_by: value_tier }
policy: { quiet_hours: "21:00-08:00", max_contacts: { count: 2, per: 7d } }
waves:
  - id: sms
    channel: sms
    template: t.txt
    respond_within: 3d
  - id: call
    after: sms
    targets: no_response
    channel: outbound_call
    team: callcentre
    template: t.txt
    respond_within: 5d
"#;

fn setup(workflow: &str, template: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("segments.yaml"), SEGMENTS).unwrap();
    std::fs::write(dir.path().join("t.txt"), template).unwrap();
    let path = dir.path().join("wf.yaml");
    std::fs::write(&path, workflow).unwrap();
    (dir, path)
}

/// Errors as `line:column: message`, file names checked separately.
fn errors(workflow: &str) -> Vec<String> {
    errors_with_template(workflow, TEMPLATE)
}

fn errors_with_template(workflow: &str, template: &str) -> Vec<String> {
    let (_dir, path) = setup(workflow, template);
    match spec::load_file(&path) {
        Ok(_) => Vec::new(),
        Err(d) => d
            .iter()
            .map(|d| {
                let file = Path::new(&d.file)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                format!("{file}:{}:{}: {}", d.line, d.column, d.message)
            })
            .collect(),
    }
}

fn assert_one(workflow: &str, expected_prefix: &str, expected_text: &str) {
    let errs = errors(workflow);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].starts_with(expected_prefix),
        "{} does not start with {expected_prefix}",
        errs[0]
    );
    assert!(
        errs[0].contains(expected_text),
        "{} does not mention {expected_text}",
        errs[0]
    );
}

#[test]
fn valid_workflow_compiles() {
    let (_dir, path) = setup(VALID, TEMPLATE);
    let wf = spec::load_file(&path).unwrap();
    assert_eq!(wf.campaign, "autumn");
    assert_eq!(wf.waves.len(), 2);
    assert_eq!(
        wf.schedule.unwrap().cron_text,
        "0 0 10 * * Mon-Fri",
        "5-field cron gets a seconds field"
    );
}

#[test]
fn repository_workflows_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workflows");
    let (ok, diags) = spec::load_dir(&dir);
    assert!(diags.is_empty(), "{diags:#?}");
    assert!(ok.iter().any(|w| w.campaign == "autumn-enrollment"));
}

#[test]
fn unknown_key() {
    assert_one(
        &VALID.replace("  exclude:", "  exclud:"),
        "wf.yaml:9:3:",
        "unknown field `exclud`",
    );
}

#[test]
fn malformed_yaml() {
    let errs = errors(&VALID.replace("audience:\n", "audience: [\n"));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("wf.yaml:"), "{}", errs[0]);
    assert!(
        !errs[0].starts_with("wf.yaml:0:"),
        "has a location: {}",
        errs[0]
    );
}

#[test]
fn norway_booleans_are_rejected() {
    // `yes` is not a boolean in strict mode; an operator's typo must not become `true`.
    let errs = errors(
        &VALID
            .replace("priority", "x")
            .replace("campaign: autumn", "campaign: autumn\npriority: yes"),
    );
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("wf.yaml:2:"), "{}", errs[0]);
}

#[test]
fn bad_cron() {
    assert_one(
        &VALID.replace("0 10 * * Mon-Fri", "0 25 * * Mon-Fri"),
        "wf.yaml:4:9:",
        "invalid cron expression",
    );
    assert_one(
        &VALID.replace("0 10 * * Mon-Fri", "0 10 * *"),
        "wf.yaml:4:9:",
        "expected 5 fields",
    );
}

#[test]
fn unknown_segment() {
    assert_one(
        &VALID.replace("segment: freshmen", "segment: freshman"),
        "wf.yaml:7:12:",
        "unknown segment `freshman`: expected one of do_not_disturb, freshmen",
    );
}

#[test]
fn bad_filter_points_inside_the_string() {
    // `brand != 'gotonee'`: the value starts at column 40 of line 8 (after the quote).
    assert_one(
        &VALID.replace("'gotone'", "'gotonee'"),
        "wf.yaml:8:38:",
        "expected one of gotone, mzone, easyown",
    );
    assert_one(
        &VALID.replace("arpu_3m >= 10", "arpu >= 10"),
        "wf.yaml:8:11:",
        "`arpu`",
    );
}

#[test]
fn wave_after_missing_wave() {
    assert_one(
        &VALID.replace("after: sms", "after: smss"),
        "wf.yaml:18:12:",
        "follows unknown wave `smss`: expected one of sms, call",
    );
}

#[test]
fn waves_forming_a_cycle() {
    let wf = VALID.replace(
        "  - id: call\n    after: sms",
        "  - id: call\n    after: call2",
    ) + "  - id: call2\n    after: call\n    channel: sms\n    template: t.txt\n    respond_within: 1d\n";
    let errs = errors(&wf);
    assert!(
        errs.iter()
            .any(|e| e.contains("waves form a cycle: call -> call2 -> call")),
        "{errs:#?}"
    );
    assert!(errs.iter().all(|e| e.starts_with("wf.yaml:")), "{errs:#?}");
}

#[test]
fn template_variable_that_is_not_a_field() {
    let errs = errors_with_template(VALID, "Hi {nmae},\nyour balance {balance} is low {bogus}");
    assert_eq!(
        errs.len(),
        4,
        "one per unknown variable per wave using the template: {errs:#?}"
    );
    assert!(
        errs[0].starts_with("t.txt:1:4: `{nmae}` is not a subscriber field"),
        "{}",
        errs[0]
    );
    assert!(errs[1].starts_with("t.txt:2:31: `{bogus}`"), "{}", errs[1]);
}

#[test]
fn bad_duration() {
    assert_one(
        &VALID.replace("respond_within: 3d", "respond_within: 3 days"),
        "wf.yaml:16:21:",
        "expected a duration such as 3d, 12h, 30m",
    );
}

#[test]
fn bad_time_zone_and_quiet_hours_and_share() {
    assert_one(
        &VALID.replace("Asia/Shanghai", "Asia/Shanghi"),
        "wf.yaml:2:11:",
        "unknown time zone `Asia/Shanghi`",
    );
    assert_one(
        &VALID.replace("21:00-08:00", "21:00-25:00"),
        "wf.yaml:11:24:",
        "expected quiet hours as HH:MM-HH:MM",
    );
    assert_one(
        &VALID.replace("share: 0.1", "share: 1.5"),
        "wf.yaml:10:19:",
        "control share 1.5 is out of range",
    );
    assert_one(
        &VALID.replace("from: \"08-15\"", "from: \"13-15\""),
        "wf.yaml:5:19:",
        "expected a day of the year as MM-DD",
    );
}

#[test]
fn task_wave_needs_a_team_and_known_channel() {
    assert_one(
        &VALID.replace("    team: callcentre\n", ""),
        "wf.yaml:20:14:",
        "needs `team`",
    );
    assert_one(
        &VALID.replace("channel: sms", "channel: fax"),
        "wf.yaml:14:14:",
        "unknown channel `fax`",
    );
}

#[test]
fn every_error_is_reported_not_just_the_first() {
    let broken = VALID
        .replace("Asia/Shanghai", "Mars/Base")
        .replace("segment: freshmen", "segment: nobody")
        .replace("respond_within: 5d", "respond_within: soon")
        .replace("after: sms", "after: nothing");
    let errs = errors(&broken);
    assert_eq!(errs.len(), 4, "{errs:#?}");
}

#[test]
fn versions_follow_content() {
    let (_d1, p1) = setup(VALID, TEMPLATE);
    let (_d2, p2) = setup(VALID, "Hi {name}, reply 2.");
    let a = spec::load_file(&p1).unwrap();
    let b = spec::load_file(&p2).unwrap();
    assert_ne!(a.hash, b.hash, "a template change is a new version");
    let again =
        spec::compile(&spec::Bundle::from_json(&a.bundle.to_json()).unwrap(), None).unwrap();
    assert_eq!(
        again.hash, a.hash,
        "a stored version compiles back to itself"
    );
}

#[test]
fn schema_is_json_with_the_top_level_keys() {
    let v: serde_json::Value = serde_json::from_str(&spec::schema_json()).unwrap();
    for key in [
        "campaign", "timezone", "schedule", "audience", "control", "policy", "waves", "evaluate",
    ] {
        assert!(v["properties"].get(key).is_some(), "schema lacks {key}");
    }
}
