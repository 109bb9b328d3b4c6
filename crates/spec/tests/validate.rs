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

/// A diagnostic as `file:line:column: message`, the file by its name only.
fn located(d: &spec::Diagnostic) -> String {
    let file = Path::new(&d.file)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    format!("{file}:{}:{}: {}", d.line, d.column, d.message)
}

fn errors_with_template(workflow: &str, template: &str) -> Vec<String> {
    let (_dir, path) = setup(workflow, template);
    match spec::load_file(&path) {
        Ok(_) => Vec::new(),
        Err(d) => d.iter().map(located).collect(),
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

fn with_hold(workflow: &str, hold: &str) -> String {
    workflow.replace(
        "stratify_by: value_tier }",
        &format!("stratify_by: value_tier, hold: {hold} }}"),
    )
}

fn compiled_hold(workflow: &str) -> spec::Hold {
    let (_dir, path) = setup(workflow, TEMPLATE);
    let wf = spec::load_file(&path).unwrap_or_else(|d| panic!("{d:#?}"));
    wf.control.expect("control").hold
}

#[test]
fn control_hold_values_and_default() {
    assert_eq!(compiled_hold(VALID), spec::Hold::Year);
    assert_eq!(compiled_hold(&with_hold(VALID, "run")), spec::Hold::Run);
    assert_eq!(
        compiled_hold(&with_hold(VALID, "season")),
        spec::Hold::Season
    );
    assert_eq!(compiled_hold(&with_hold(VALID, "year")), spec::Hold::Year);
    assert_eq!(
        compiled_hold(&with_hold(VALID, "90d")),
        spec::Hold::Days(90)
    );
    assert_eq!(compiled_hold(&with_hold(VALID, "2w")), spec::Hold::Days(14));
}

/// The period labels runs are held under: the year in the campaign's zone, the season last
/// begun (a run before this year's window belongs to last year's), fixed day buckets, the run.
#[test]
fn holdout_periods_are_labelled_by_hold() {
    let (_dir, path) = setup(VALID, TEMPLATE);
    let wf = spec::load_file(&path).unwrap();
    const SEP_1_2026: i64 = 1_788_220_800_000;
    const MAR_1_2026: i64 = 1_772_323_200_000;
    // 2026-12-31T16:30Z is already 2027 in Asia/Shanghai.
    const NEW_YEAR_IN_SHANGHAI: i64 = 1_798_734_600_000;
    use spec::Hold;
    assert_eq!(wf.holdout_period(Hold::Year, SEP_1_2026, 7), "2026");
    assert_eq!(
        wf.holdout_period(Hold::Year, NEW_YEAR_IN_SHANGHAI, 7),
        "2027"
    );
    assert_eq!(
        wf.holdout_period(Hold::Season, SEP_1_2026, 7),
        "season-2026"
    );
    assert_eq!(
        wf.holdout_period(Hold::Season, MAR_1_2026, 7),
        "season-2025"
    );
    assert_eq!(
        wf.holdout_period(Hold::Days(90), SEP_1_2026, 7),
        "90d-2026-06-06"
    );
    assert_eq!(wf.holdout_period(Hold::Run, SEP_1_2026, 7), "run-7");
}

#[test]
fn bad_control_hold_is_located() {
    assert_one(
        &with_hold(VALID, "fortnight"),
        "wf.yaml:10:55:",
        "invalid hold `fortnight`: expected run, season, year or a number of days",
    );
    assert_one(
        &with_hold(VALID, "36h"),
        "wf.yaml:10:55:",
        "hold `36h` is out of range: expected whole days",
    );
    assert_one(
        &with_hold(VALID, "4000d"),
        "wf.yaml:10:55:",
        "hold `4000d` is out of range",
    );
    // Holding for the season needs a season to hold for.
    let no_season = VALID.replace("  season: { from: \"08-15\", to: \"10-31\" }\n", "");
    assert_one(
        &with_hold(&no_season, "season"),
        "wf.yaml:9:55:",
        "cannot hold control for the `season`: the schedule has no season",
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

// ---------------------------------------------------------------------------------------
// Mistakes that once validated silently (issue 7, item 5). Each rule: its location and text.

/// VALID with the `call` wave's `respond_within: 5d` line followed by `extra` lines.
fn with_wave_lines(first_wave: &str, second_wave: &str) -> String {
    VALID
        .replace(
            "    respond_within: 3d\n",
            &format!("    respond_within: 3d\n{first_wave}"),
        )
        .replace(
            "    respond_within: 5d\n",
            &format!("    respond_within: 5d\n{second_wave}"),
        )
}

#[test]
fn durations_out_of_bounds() {
    for (bad, col) in [("400d", 21), ("53w", 21), ("30s", 21), ("99999999w", 21)] {
        assert_one(
            &VALID.replace("respond_within: 3d", &format!("respond_within: {bad}")),
            &format!("wf.yaml:16:{col}:"),
            &format!("duration `{bad}` is out of range: expected 1m to 366d"),
        );
    }
    // 366d itself is allowed, as is 1m.
    assert!(errors(&VALID.replace("respond_within: 5d", "respond_within: 366d")).is_empty());
    assert!(errors(&VALID.replace("respond_within: 3d", "respond_within: 1m")).is_empty());
    assert_one(
        &VALID.replace("per: 7d", "per: 9999w"),
        "wf.yaml:11:70:",
        "duration `9999w` is out of range",
    );
    assert_one(
        &VALID.replace("  season:", "  catch_up_window: 400d\n  season:"),
        "wf.yaml:5:20:",
        "duration `400d` is out of range",
    );
}

#[test]
fn send_within_longer_than_respond_within() {
    assert_one(
        &with_wave_lines("    send_within: 4d\n", ""),
        "wf.yaml:17:18:",
        "send_within 4d is longer than respond_within 3d",
    );
    assert!(errors(&with_wave_lines("    send_within: 3d\n", "")).is_empty());
}

#[test]
fn default_send_within_never_outlasts_the_window() {
    let (_dir, path) = setup(
        &VALID.replace("respond_within: 3d", "respond_within: 2h"),
        TEMPLATE,
    );
    let wf = spec::load_file(&path).unwrap();
    assert_eq!(
        wf.waves[0].send_within,
        std::time::Duration::from_secs(2 * 3600)
    );
    assert_eq!(
        wf.waves[1].send_within,
        std::time::Duration::from_secs(12 * 3600)
    );
}

#[test]
fn wave_ids_and_team_names_are_names() {
    assert_one(
        &VALID
            .replace("id: sms", "id: \"SMS offer\"")
            .replace("after: sms", "after: \"SMS offer\""),
        "wf.yaml:13:9:",
        "expected a wave id of 1 to 64 lowercase letters, digits, `_` or `-`, found `SMS offer`",
    );
    assert_one(
        &VALID
            .replace("id: sms", "id: \"\"")
            .replace("after: sms", "after: \"\""),
        "wf.yaml:13:9:",
        "expected a wave id of 1 to 64",
    );
    let long = "w".repeat(65);
    assert_one(
        &VALID
            .replace("id: sms", &format!("id: {long}"))
            .replace("after: sms", &format!("after: {long}")),
        "wf.yaml:13:9:",
        "expected a wave id",
    );
    assert_one(
        &VALID.replace("team: callcentre", "team: \"call\\tcentre\""),
        "wf.yaml:21:11:",
        "expected a team name of 1 to 64 lowercase letters, digits, `_` or `-`, found `call\\tcentre`",
    );
}

#[test]
fn reply_keywords_that_opt_out_are_refused() {
    for word in ["TD", "stop", "退订", "n"] {
        assert_one(
            &with_wave_lines(&format!("    responses:\n      - reply: \"{word}\"\n"), ""),
            "wf.yaml:18:16:",
            &format!("reply keyword `{word}` is an opt-out word"),
        );
    }
    assert!(
        errors(&with_wave_lines(
            "    responses:\n      - reply: \"1\"\n",
            ""
        ))
        .is_empty()
    );
}

#[test]
fn responses_a_channel_cannot_produce() {
    assert_one(
        &with_wave_lines("", "    responses:\n      - reply: \"1\"\n"),
        "wf.yaml:25:16:",
        "a `reply` response can never happen on a `outbound_call` wave",
    );
    assert_one(
        &with_wave_lines("    responses:\n      - outcome: accepted\n", ""),
        "wf.yaml:18:18:",
        "an `outcome` response can never happen on an `sms` wave",
    );
    assert_one(
        &with_wave_lines("", "    responses:\n      - outcome: acepted\n"),
        "wf.yaml:25:18:",
        "outcome `acepted` can never be recorded: expected one of the workflow's `outcomes`: accepted, refused, call_back_later, unreachable",
    );
    assert_one(
        &with_wave_lines("    responses:\n      - event: { type: reply }\n", ""),
        "wf.yaml:18:24:",
        "event type `reply` can never arrive",
    );
    assert_one(
        &with_wave_lines("    responses:\n      - reply: \"yes please\"\n", ""),
        "wf.yaml:18:16:",
        "expected one word or `*`",
    );
}

#[test]
fn goals_no_event_can_produce() {
    assert_one(
        &format!("{VALID}evaluate:\n  goal: {{ type: \"an order\" }}\n"),
        "wf.yaml:25:17:",
        "event type `an order` can never arrive",
    );
    assert_one(
        &format!("{VALID}evaluate:\n  goal: {{ type: outcome }}\n"),
        "wf.yaml:25:17:",
        "reserved for SMS replies and agent outcomes",
    );
}

#[test]
fn a_retention_goal_compiles_with_the_default_lost_events() {
    let goal = |text: &str| {
        let (_dir, path) = setup(&format!("{VALID}evaluate:\n  goal: {text}\n"), TEMPLATE);
        let wf = spec::load_file(&path).unwrap_or_else(|d| panic!("{d:#?}"));
        (wf.evaluate.goal.unwrap(), wf.entry.skip_converted)
    };
    let (g, skip_converted) = goal("{ retained: 90d }");
    assert_eq!(
        g,
        spec::Goal::Retained {
            within: std::time::Duration::from_secs(90 * 86_400),
            lost_on: vec!["churn".to_owned(), "port_out".to_owned()],
        }
    );
    assert!(
        !skip_converted,
        "a retention goal has no conversion to skip"
    );
    assert_eq!(
        g.to_string(),
        "retained 90d: no churn or port_out event within 90d of the run's start"
    );
    let (g, _) = goal("{ retained: 2w, lost_on: [port_out, port_out] }");
    assert_eq!(
        g,
        spec::Goal::Retained {
            within: std::time::Duration::from_secs(14 * 86_400),
            lost_on: vec!["port_out".to_owned()],
        }
    );
    let (g, skip_converted) = goal("{ type: order, value: bundle }");
    assert!(matches!(g, spec::Goal::Converted(_)), "{g:?}");
    assert!(
        skip_converted,
        "an event goal still skips converters by default"
    );
}

#[test]
fn retention_goal_mistakes_are_located() {
    let goal = |text: &str| format!("{VALID}evaluate:\n  goal: {text}\n");
    assert_one(
        &goal("{ retained: soon }"),
        "wf.yaml:25:21:",
        "expected a duration such as 3d",
    );
    assert_one(
        &goal("{ retained: 400d }"),
        "wf.yaml:25:21:",
        "duration `400d` is out of range",
    );
    assert_one(
        &goal("{ retained: 90d, lost_on: [] }"),
        "wf.yaml:25:35:",
        "evaluate.goal.lost_on is empty",
    );
    assert_one(
        &goal("{ retained: 90d, lost_on: [churn, \"ported out\"] }"),
        "wf.yaml:25:43:",
        "event type `ported out` can never arrive",
    );
    assert_one(
        &goal("{ retained: 90d, lost_onn: [churn] }"),
        "wf.yaml:25:26:",
        "unknown field `lost_onn` (did you mean `lost_on`?)",
    );
    assert_one(
        &goal("{ type: order, retained: 90d }"),
        "wf.yaml:25:17:",
        "evaluate.goal has both `type` and `retained`",
    );
    assert_one(
        &goal("{ type: order, lost_on: [churn] }"),
        "wf.yaml:25:33:",
        "evaluate.goal.lost_on goes with `retained`",
    );
    assert_one(
        &goal("{ retained: 90d, value: x }"),
        "wf.yaml:25:21:",
        "a retention goal names no value",
    );
    assert_one(&goal("{}"), "wf.yaml:25:9:", "evaluate.goal names no goal");
    assert_one(
        &format!(
            "{VALID}entry: {{ skip_converted: true }}\nevaluate:\n  goal: {{ retained: 90d }}\n"
        ),
        "wf.yaml:24:26:",
        "entry.skip_converted does not apply to a retention goal",
    );
}

#[test]
fn malformed_report_addresses() {
    let errs = errors(&format!(
        "{VALID}evaluate:\n  email: [ok@example.com, \"Boss <boss@example.com>\", nobody]\n"
    ));
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(
        errs[0].starts_with("wf.yaml:25:27: `Boss <boss@example.com>` is not an e-mail address"),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].starts_with("wf.yaml:25:54: `nobody` is not an e-mail address: no `@`"),
        "{}",
        errs[1]
    );
}

#[test]
fn cron_that_never_fires() {
    assert_one(
        &VALID.replace("0 10 * * Mon-Fri", "0 10 30 2 *"),
        "wf.yaml:4:9:",
        "cron `0 10 30 2 *` never fires",
    );
    // Feb 29 fires every four years: not a mistake.
    assert!(
        errors(&VALID.replace("0 10 * * Mon-Fri", "0 10 29 2 *").replace(
            "from: \"08-15\", to: \"10-31\"",
            "from: \"02-01\", to: \"03-01\""
        ))
        .is_empty()
    );
}

#[test]
fn season_the_cron_never_fires_in() {
    assert_one(
        &VALID.replace("0 10 * * Mon-Fri", "0 10 * 12 *"),
        "wf.yaml:5:19:",
        "cron `0 10 * 12 *` never fires between 08-15 and 10-31",
    );
    // A season over New Year that holds December is fine.
    assert!(
        errors(&VALID.replace("0 10 * * Mon-Fri", "0 10 * 12 *").replace(
            "from: \"08-15\", to: \"10-31\"",
            "from: \"11-15\", to: \"01-31\""
        ))
        .is_empty()
    );
}

#[test]
fn in_lists_too_long_to_plan() {
    let values = |n: usize| {
        (0..n)
            .map(|i| format!("'c{i}'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    assert_one(
        &VALID.replace(
            "arpu_3m >= 10 and brand != 'gotone'",
            &format!("campus in [{}]", values(1001)),
        ),
        "wf.yaml:8:11:",
        "lists 1001 values, more than 1000 can be planned",
    );
    assert!(
        errors(&VALID.replace(
            "arpu_3m >= 10 and brand != 'gotone'",
            &format!("campus in [{}]", values(1000)),
        ))
        .is_empty()
    );
}

#[test]
fn template_paths_outside_the_folder() {
    for bad in ["../secret.env", "/etc/passwd", "templates/../../secret.env"] {
        let errs = errors(&VALID.replace(
            "template: t.txt\n    respond_within: 3d",
            &format!("template: \"{bad}\"\n    respond_within: 3d"),
        ));
        assert_eq!(errs.len(), 1, "{bad}: {errs:#?}");
        assert!(
            errs[0].starts_with(&format!(
                "wf.yaml:15:15: template path `{bad}` must be relative and stay inside the workflow's folder"
            )),
            "{}",
            errs[0]
        );
    }
}

#[cfg(unix)]
#[test]
fn template_symlink_out_of_the_folder_is_not_read() {
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("campaignd.env");
    std::fs::write(&secret, "DATABASE_URL=postgres://secret").unwrap();
    let wf = VALID.replace(
        "template: t.txt\n    respond_within: 3d",
        "template: link.txt\n    respond_within: 3d",
    );
    let (dir, path) = setup(&wf, TEMPLATE);
    std::os::unix::fs::symlink(&secret, dir.path().join("link.txt")).unwrap();
    let err = spec::Bundle::read(&path).unwrap_err();
    assert_eq!(err.len(), 1, "{err:#?}");
    assert_eq!((err[0].line, err[0].column), (15, 15));
    assert!(
        err[0]
            .message
            .contains("leads outside the workflow's folder"),
        "{}",
        err[0]
    );
    let errs = errors_in(&dir, &path);
    assert!(
        errs.iter().all(|e| !e.contains("DATABASE_URL")),
        "{errs:#?}"
    );
    assert!(
        errs[0].starts_with("wf.yaml:15:15: template path `link.txt` leads outside"),
        "{errs:#?}"
    );
    // A link that stays inside the folder is fine.
    std::fs::remove_file(dir.path().join("link.txt")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("t.txt"), dir.path().join("link.txt")).unwrap();
    assert!(spec::load_file(&path).is_ok());
}

fn errors_in(_dir: &tempfile::TempDir, path: &Path) -> Vec<String> {
    match spec::load_file(path) {
        Ok(_) => Vec::new(),
        Err(d) => d.iter().map(located).collect(),
    }
}

#[test]
fn unknown_keys_are_reported_with_every_other_error() {
    let broken = VALID
        .replace("  exclude:", "  exclud:")
        .replace("Asia/Shanghai", "Mars/Base")
        .replace("    team: callcentre\n", "    teem: callcentre\n")
        .replace("respond_within: 5d", "respond_within: soon")
        .replace("policy: {", "policy: { quiet_hour: \"22:00-07:00\",")
        + "evaluate:\n  goal: { type: order, valeu: x }\n";
    let errs = errors(&broken);
    for expected in [
        "wf.yaml:2:11: unknown time zone `Mars/Base`",
        "wf.yaml:9:3: unknown field `exclud` (did you mean `exclude`?), expected one of `alerts`, `exclude`, `segment`, `where`",
        "wf.yaml:11:11: unknown field `quiet_hour` (did you mean `quiet_hours`?)",
        "wf.yaml:21:5: unknown field `teem` (did you mean `team`?)",
        "wf.yaml:23:21: expected a duration",
        "wf.yaml:25:24: unknown field `valeu` (did you mean `value`?), expected one of `lost_on`, `retained`, `type`, `value`",
    ] {
        assert!(
            errs.iter().any(|e| e.starts_with(expected)),
            "no {expected:?} in {errs:#?}"
        );
    }
}

#[test]
fn unknown_keys_in_lists_and_nested_maps() {
    let errs = errors(
        &VALID
            .replace("    respond_within: 3d\n", "    respond_within: 3d\n    responses:\n      - reply: \"1\"\n      - evnt: { type: order }\n")
            .replace("share: 0.1,", "share: 0.1, salts: x,"),
    );
    assert!(
        errs.iter()
            .any(|e| e.starts_with("wf.yaml:10:24: unknown field `salts` (did you mean `salt`?)")),
        "{errs:#?}"
    );
    assert!(
        errs.iter().any(|e| e.starts_with("wf.yaml:19:9: unknown field `evnt` (did you mean `event`?), expected one of `reply`, `event`, `outcome`")),
        "{errs:#?}"
    );
}

#[test]
fn unknown_keys_in_segments_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("segments.yaml"),
        "segments:\n  freshmen:\n    wher: \"student_stage == 'freshman'\"\n    descripton: x\n",
    )
    .unwrap();
    let errs = spec::compile_segments(
        "segments.yaml",
        &std::fs::read_to_string(dir.path().join("segments.yaml")).unwrap(),
        &spec::catalogue::shipped(),
    )
    .unwrap_err();
    let shown: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert!(
        shown
            .iter()
            .any(|e| e.starts_with("segments.yaml:3:5: unknown field `wher`")),
        "{shown:#?}"
    );
    assert!(
        shown
            .iter()
            .any(|e| e.starts_with("segments.yaml:4:5: unknown field `descripton`")),
        "{shown:#?}"
    );
}

#[test]
fn misspelt_required_key_names_the_key_it_meant() {
    // A required key misspelt fails the typed parse too ("missing field"); the unknown-key
    // error at the misspelling is the one that says what to fix.
    let errs = errors(
        &VALID
            .replace("respond_within: 3d", "respond_witin: 3d")
            .replace("  exclude:", "  exclud:"),
    );
    assert!(
        errs.iter().any(|e| e.starts_with(
            "wf.yaml:16:5: unknown field `respond_witin` (did you mean `respond_within`?)"
        )),
        "{errs:#?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.starts_with("wf.yaml:9:3: unknown field `exclud`")),
        "{errs:#?}"
    );
}

#[test]
fn file_level_mistakes_are_located_too() {
    assert_one(
        &VALID.replace("timezone:", "priority: 150\ntimezone:"),
        "wf.yaml:2:11:",
        "priority 150 is out of range: expected 0 to 100",
    );
    let no_waves = VALID[..VALID.find("waves:").unwrap()].to_owned() + "waves: []\n";
    assert_one(&no_waves, "wf.yaml:12:8:", "expected at least one wave");
    assert_one(
        &format!("{VALID}evaluate:\n  breakdown: brnd\n"),
        "wf.yaml:25:14:",
        "evaluate.breakdown `brnd` is not a subscriber field",
    );
    assert_one(
        &format!("{VALID}evaluate:\n  breakdown: arpu_3m\n"),
        "wf.yaml:25:14:",
        "cannot break the evaluation down by `arpu_3m`: it is a continuous value",
    );
    assert_one(
        &VALID.replace("timezone:", "purpose: promo\ntimezone:"),
        "wf.yaml:2:10:",
        "unknown purpose `promo`: expected one of marketing, care, alert",
    );
    // A care campaign's contacts are outside the cap, so a cap on one would protect nobody.
    assert_one(
        &VALID.replace("timezone:", "purpose: care\ntimezone:"),
        "wf.yaml:12:70:",
        "max_contacts applies to marketing campaigns only; this campaign's purpose is care",
    );
    assert_one(
        &format!("{VALID}entry: {{ once_per: month }}\n"),
        "wf.yaml:24:20:",
        "unknown entry.once_per `month`: expected one of run, campaign, year, season",
    );
    assert_one(
        &format!("{VALID}entry: {{ skip_converted: true }}\n"),
        "wf.yaml:24:26:",
        "entry.skip_converted needs `evaluate.goal`",
    );
    assert_one(
        &format!(
            "{}entry: {{ once_per: season }}\n",
            VALID.replace("  season: { from: \"08-15\", to: \"10-31\" }\n", "")
        ),
        "wf.yaml:23:20:",
        "entry.once_per: season needs a `schedule.season`",
    );
    assert_one(
        &format!("{VALID}entry: {{ cooldown: 3x }}\n"),
        "wf.yaml:24:20:",
        "3x",
    );
    let care = VALID
        .replace("timezone:", "purpose: care\ntimezone:")
        .replace(", max_contacts: { count: 2, per: 7d }", "");
    assert_eq!(errors(&care), Vec::<String>::new());
}

/// A workflows folder with its own `attributes.yaml`: filters, templates and control
/// stratification may name what it declares, and nothing the shipped catalogue has but it
/// does not. Adding an attribute is a file edit: no code knows these names.
#[test]
fn a_folder_catalogue_is_what_workflows_are_checked_against() {
    let attributes = "attributes:\n  - name: plan\n    type: enum\n    values: [basic, plus]\n    required: true\n  - name: data_gb_month\n    type: decimal\n  - name: last_recharge\n    type: date\n";
    let wf = "campaign: data\ntimezone: Asia/Shanghai\naudience:\n  where: \"data_gb_month > 2.5 and last_recharge < '2026-10-01' and plan == 'plus'\"\ncontrol: { share: 0.1, stratify_by: plan }\nwaves:\n  - id: sms\n    channel: sms\n    template: t.txt\n    respond_within: 3d\n";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("attributes.yaml"), attributes).unwrap();
    std::fs::write(
        dir.path().join("t.txt"),
        "You used {data_gb_month} GB on {plan}.",
    )
    .unwrap();
    let path = dir.path().join("wf.yaml");
    std::fs::write(&path, wf).unwrap();
    let compiled = spec::load_file(&path).unwrap_or_else(|d| panic!("{d:#?}"));
    assert!(compiled.catalogue.get("data_gb_month").is_some());
    assert!(
        compiled.bundle.attributes.is_some(),
        "the version carries its catalogue"
    );
    // The folder is not a workflow itself.
    let (ok, diags) = spec::load_dir(dir.path());
    assert_eq!((ok.len(), diags.len()), (1, 0), "{diags:#?}");

    // A shipped attribute this catalogue does not declare, a bad date and a bad enum value.
    let bad = wf.replace(
        "plan == 'plus'",
        "value_tier == 'gold' and last_recharge < '2026-13-01' and plan == 'max'",
    );
    std::fs::write(&path, bad).unwrap();
    let shown: Vec<String> = spec::load_file(&path)
        .unwrap_err()
        .iter()
        .map(|d| format!("{}:{}: {}", d.line, d.column, d.message))
        .collect();
    assert_eq!(shown.len(), 3, "{shown:#?}");
    assert!(
        shown[0].starts_with("4:68: unknown field `value_tier`"),
        "{shown:#?}"
    );
    assert!(shown[1].starts_with("4:109: "), "{shown:#?}");
    assert!(
        shown[1].contains("expected a 'YYYY-MM-DD' date, found '2026-13-01'"),
        "{shown:#?}"
    );
    assert!(
        shown[2].contains("`plan` has no value 'max'; expected one of basic, plus"),
        "{shown:#?}"
    );

    // A broken catalogue is reported with its own file and location, and nothing compiles.
    std::fs::write(
        dir.path().join("attributes.yaml"),
        "attributes:\n  - name: plan\n    type: enumeration\n",
    )
    .unwrap();
    let diags = spec::load_file(&path).unwrap_err();
    assert!(
        diags.iter().any(|d| d.file.ends_with("attributes.yaml")
            && (d.line, d.column) == (3, 11)
            && d.message.starts_with("unknown type `enumeration`")),
        "{diags:#?}"
    );
}

const PERIODS: &str = "periods:\n  winter-vacation:\n    - { from: 2026-01-24, to: 2026-03-01 }\n    - { from: 2027-01-16, to: 2027-02-21 }\n  summer-vacation:\n    - { from: 2026-07-04, to: 2026-08-30 }\n";

/// A workflow beside a `campus` calendar with `periods`; errors as `file:line:column: message`.
fn with_periods(workflow: &str, periods: &str) -> Result<spec::Workflow, Vec<String>> {
    let (dir, path) = setup(workflow, TEMPLATE);
    let cal = dir.path().join("calendars/campus");
    std::fs::create_dir_all(&cal).unwrap();
    std::fs::write(cal.join("periods.yaml"), periods).unwrap();
    spec::load_file(&path).map_err(|d| d.iter().map(located).collect())
}

fn windows(lines: &str) -> String {
    VALID.replace(
        "  season: { from: \"08-15\", to: \"10-31\" }\n",
        &format!("  windows:\n{lines}"),
    )
}

fn day(y: i32, m: u32, d: u32) -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

#[test]
fn windows_from_calendar_periods_are_seasons_of_their_own() {
    let wf = with_periods(
        &windows(
            "    - { period: campus/winter-vacation }\n    - { before: campus/summer-vacation, days: 14 }\n    - { from: \"12-20\", to: \"12-31\" }\n",
        )
        .replace("control: { share: 0.1, stratify_by: value_tier }", "control: { share: 0.1, stratify_by: value_tier, hold: season }"),
        PERIODS,
    )
    .unwrap();
    let s = wf.schedule.as_ref().unwrap().season.as_ref().unwrap();
    // The winter vacation moves with the lunar new year: in 2026 it runs into March.
    assert!(s.contains(day(2026, 3, 1)));
    assert!(!s.contains(day(2027, 3, 1)));
    assert!(s.contains(day(2027, 1, 16)));
    assert!(!s.contains(day(2027, 1, 15)));
    // The 14 days before 2026-07-04, and not the day it starts.
    assert!(s.contains(day(2026, 6, 20)));
    assert!(s.contains(day(2026, 7, 3)));
    assert!(!s.contains(day(2026, 6, 19)));
    assert!(!s.contains(day(2026, 7, 4)));
    assert!(s.contains(day(2026, 12, 25)));
    assert!(!s.contains(day(2026, 5, 1)));
    // Each occurrence is a season; a day between them belongs to the one just ended.
    let label = |d| s.label(d);
    assert_eq!(label(day(2026, 2, 1)), "season-2026-01-24");
    assert_eq!(label(day(2026, 5, 1)), "season-2026-01-24");
    assert_eq!(label(day(2026, 6, 25)), "season-2026-06-20");
    assert_eq!(label(day(2026, 12, 21)), "season-2026-12-20");
    assert_eq!(label(day(2027, 1, 10)), "season-2026-12-20");
    assert_eq!(label(day(2027, 1, 20)), "season-2027-01-16");
    assert_eq!(label(day(2025, 12, 1)), "season-2024-12-20");
    assert_eq!(label(day(2025, 1, 1)), "season-2024-12-20");
    // The holdout period follows it.
    let noon = |d: chrono::NaiveDate| d.and_hms_opt(4, 0, 0).unwrap().and_utc().timestamp_millis();
    assert_eq!(
        wf.holdout_period(spec::Hold::Season, noon(day(2026, 8, 1)), 1),
        "season-2026-06-20"
    );
    // The version keeps the dates it was checked with.
    assert!(wf.bundle.periods["campus"].contains("2027-01-16"));
    // A single `season` keeps its year labels.
    let old = spec::load_file(&setup(VALID, TEMPLATE).1).unwrap();
    let old_s = old.schedule.unwrap().season.unwrap();
    assert_eq!(old_s.label(day(2026, 9, 1)), "season-2026");
    assert_eq!(old_s.label(day(2026, 3, 1)), "season-2025");
}

#[test]
fn bad_windows_are_located() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "    - { period: campus/easter }\n",
            "wf.yaml:6:17:",
            "unknown period `easter` of calendar `campus`: expected one of summer-vacation, winter-vacation",
        ),
        (
            "    - { period: school/winter }\n",
            "wf.yaml:6:17:",
            "calendar `school` has no periods",
        ),
        (
            "    - { period: winter }\n",
            "wf.yaml:6:17:",
            "expected a period as CALENDAR/PERIOD",
        ),
        (
            "    - { before: campus/winter-vacation }\n",
            "wf.yaml:6:17:",
            "incomplete or mixed window",
        ),
        (
            "    - { before: campus/winter-vacation, days: 400 }\n",
            "wf.yaml:6:47:",
            "`days` 400 out of range",
        ),
        (
            "    - { from: \"07-01\", period: campus/winter-vacation }\n",
            "wf.yaml:6:15:",
            "incomplete or mixed window",
        ),
        (
            "    - { from: \"07-32\", to: \"08-01\" }\n",
            "wf.yaml:6:15:",
            "expected a day of the year as MM-DD",
        ),
        (
            "    - { perod: campus/x }\n",
            "wf.yaml:6:9:",
            "unknown field `perod`",
        ),
    ];
    for (lines, at, text) in cases {
        let errs = with_periods(&windows(lines), PERIODS).unwrap_err();
        assert!(
            errs.iter().any(|e| e.starts_with(at) && e.contains(text)),
            "{lines}: expected {at} {text}, got {errs:#?}"
        );
    }
    // Both forms at once.
    let both = VALID.replace(
        "  season: { from: \"08-15\", to: \"10-31\" }\n",
        "  season: { from: \"08-15\", to: \"10-31\" }\n  windows:\n    - { period: campus/winter-vacation }\n",
    );
    let errs = with_periods(&both, PERIODS).unwrap_err();
    assert!(
        errs.iter()
            .any(|e| e.contains("`season` and `windows` both given")),
        "{errs:#?}"
    );
    // A cron that fires in none of the windows: Mon-Fri at 10 never falls in a Sunday-only
    // period.
    let sunday = "periods:\n  one-day:\n    - { from: 2026-03-01, to: 2026-03-01 }\n";
    let errs = with_periods(&windows("    - { period: campus/one-day }\n"), sunday).unwrap_err();
    assert!(
        errs.iter()
            .any(|e| e.starts_with("wf.yaml:6:5:")
                && e.contains("never fires in any of its windows")),
        "{errs:#?}"
    );
    // A broken periods file is reported in that file, once.
    let broken = "periods:\n  winter-vacation:\n    - { from: 2026-01-24, to: 2026-01-01 }\n";
    let errs = with_periods(
        &windows("    - { period: campus/winter-vacation }\n    - { before: campus/winter-vacation, days: 3 }\n"),
        broken,
    )
    .unwrap_err();
    let in_periods: Vec<_> = errs
        .iter()
        .filter(|e| e.starts_with("periods.yaml:3:"))
        .collect();
    assert_eq!(in_periods.len(), 1, "{errs:#?}");
}

/// Three waves: an SMS offer that accepts replies `1` and `2`, a call to who replied `2`, a
/// service visit for whose call outcome was `wants_visit`.
const PATHS: &str = r#"campaign: paths
timezone: Asia/Shanghai
audience:
  where: "arpu_3m >= 10"
outcomes: [accepted, refused, wants_visit, unreachable]
waves:
  - id: offer
    channel: sms
    template: t.txt
    respond_within: 3d
    responses: [{ reply: "1" }, { reply: "2" }]
  - id: call
    after: offer
    targets: { replied: ["2"] }
    channel: outbound_call
    team: callcentre
    template: t.txt
    respond_within: 5d
    responses: [{ outcome: accepted }]
  - id: visit
    after: call
    targets: { outcome: [wants_visit] }
    channel: service
    team: hall
    template: t.txt
    respond_within: 7d
  - id: resend
    after: offer
    targets: undelivered
    channel: sms
    template: t.txt
    respond_within: 1d
  - id: nudge
    after: offer
    targets: { event: { type: app_login } }
    channel: sms
    template: t.txt
    respond_within: 1d
  - id: quiet
    after: offer
    targets: delivered_silent
    channel: outbound_call
    team: callcentre
    template: t.txt
    respond_within: 1d
"#;

#[test]
fn action_paths_compile_to_their_targets() {
    let (_dir, path) = setup(PATHS, TEMPLATE);
    let wf = spec::load_file(&path).unwrap();
    let t = |id: &str| wf.wave(id).unwrap().targets.clone();
    assert_eq!(t("offer"), spec::Targets::NoResponse);
    assert_eq!(t("call"), spec::Targets::Replied(vec!["2".into()]));
    assert_eq!(
        t("visit"),
        spec::Targets::Outcome(vec!["wants_visit".into()])
    );
    assert_eq!(t("resend"), spec::Targets::Undelivered);
    assert_eq!(t("quiet"), spec::Targets::DeliveredSilent);
    assert_eq!(t("nudge").stage(), "event:app_login");
    assert_eq!(
        wf.outcomes,
        ["accepted", "refused", "wants_visit", "unreachable"]
    );
    // Without `outcomes`, the shipped four.
    let (_dir, path) = setup(VALID, TEMPLATE);
    assert_eq!(
        spec::load_file(&path).unwrap().outcomes,
        spec::rules::OUTCOMES
    );
}

#[test]
fn action_paths_that_can_never_be_taken_are_located() {
    let cases: &[(String, &str, &str)] = &[
        (
            PATHS.replace("replied: [\"2\"]", "replied: [\"3\"]"),
            "wf.yaml:14:14:",
            "waits for the reply `3`, which `offer` does not accept",
        ),
        (
            PATHS.replace("outcome: [wants_visit]", "outcome: [wants_vist]"),
            "wf.yaml:22:26:",
            "outcome `wants_vist` can never be recorded: expected one of the workflow's `outcomes`",
        ),
        (
            PATHS.replace("targets: undelivered", "targets: { outcome: [accepted] }"),
            "wf.yaml:29:14:",
            "waits for an agent's outcome, but `offer` is a `sms` wave",
        ),
        (
            PATHS.replace("after: call\n    targets: { outcome: [wants_visit] }", "after: call\n    targets: delivered_silent"),
            "wf.yaml:22:14:",
            "waits for what only an SMS can produce, but `call` is a `outbound_call` wave",
        ),
        (
            PATHS.replace("responses: [{ outcome: accepted }]", "responses: [{ outcome: called }]"),
            "wf.yaml:19:",
            "outcome `called` can never be recorded",
        ),
        (
            PATHS.replace("[accepted, refused, wants_visit, unreachable]", "[accepted, Refused, wants_visit, accepted]"),
            "wf.yaml:5:",
            "outcome `Refused`: `R` is not allowed",
        ),
        (
            PATHS.replace("replied: [\"2\"]", "replied: [\"*\"]"),
            "wf.yaml:14:",
            "`*` is not a keyword here",
        ),
        (
            PATHS.replace("replied: [\"2\"]", "replied: [\"stop\"]"),
            "wf.yaml:14:",
            "is an opt-out word",
        ),
        (
            PATHS.replace("targets: undelivered", "targets: bounced"),
            "wf.yaml:29:",
            "unknown variant `bounced`",
        ),
        (
            PATHS.replace(
                "    respond_within: 3d\n    responses: [{ reply: \"1\" }, { reply: \"2\" }]",
                "    respond_within: 3d\n    targets: all\n    responses: [{ reply: \"1\" }, { reply: \"2\" }]",
            ),
            "wf.yaml:11:14:",
            "the first wave `offer` targets the audience",
        ),
    ];
    for (wf, at, says) in cases {
        let errs = errors(wf);
        assert!(
            errs.iter().any(|e| e.starts_with(at) && e.contains(says)),
            "expected {at} … {says}, got {errs:#?}"
        );
    }
    // A bad `outcomes` list is reported once, not again at every wave naming one of it.
    let errs = errors(&PATHS.replace(
        "[accepted, refused, wants_visit, unreachable]",
        "[accepted, Refused, wants_visit, accepted]",
    ));
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(
        errs[1].starts_with("wf.yaml:5:44: duplicate outcome `accepted`"),
        "{errs:#?}"
    );
}

#[test]
fn waits_after_a_wave_are_a_delay_and_a_time_of_day() {
    use chrono::TimeZone;
    let wf_text = VALID.replace("after: sms\n", "after: sms + 2d\n    at: next 10:00\n");
    let (_dir, path) = setup(&wf_text, TEMPLATE);
    let wf = spec::load_file(&path).unwrap();
    let call = wf.wave("call").unwrap();
    assert_eq!(call.after.as_deref(), Some("sms"));
    let tz = chrono_tz::Asia::Shanghai;
    let at = |d: u32, h: u32, m: u32| {
        tz.with_ymd_and_hms(2026, 9, d, h, m, 0)
            .unwrap()
            .timestamp_millis()
    };
    // Closed Thursday 15:00: two days later is Saturday 15:00, then the next 10:00.
    assert_eq!(call.due_after(at(10, 15, 0), tz), at(13, 10, 0));
    // Closed 07:00: the same day's 10:00 after two days.
    assert_eq!(call.due_after(at(10, 7, 0), tz), at(12, 10, 0));
    // No wait by default: due when the window closes.
    let (_dir, path) = setup(VALID, TEMPLATE);
    let plain = spec::load_file(&path).unwrap();
    assert!(!plain.wave("call").unwrap().waits());
    assert_eq!(
        plain.wave("call").unwrap().due_after(at(10, 7, 0), tz),
        at(10, 7, 0)
    );

    for (text, at, says) in [
        (
            VALID.replace("after: sms\n", "after: sms + 2x\n"),
            "wf.yaml:18:12:",
            "expected `WAVE + DELAY`",
        ),
        (
            VALID.replace("after: sms\n", "after: sms + 400d\n"),
            "wf.yaml:18:12:",
            "out of range",
        ),
        (
            VALID.replace("after: sms\n", "after: smss + 1d\n"),
            "wf.yaml:18:12:",
            "follows unknown wave `smss`",
        ),
        (
            VALID.replace("after: sms\n", "after: sms\n    at: next 25:00\n"),
            "wf.yaml:19:9:",
            "not a time of day",
        ),
        (
            VALID.replace(
                "    respond_within: 3d\n",
                "    respond_within: 3d\n    at: \"10:00\"\n",
            ),
            "wf.yaml:17:9:",
            "`at` times a wave that comes `after` another",
        ),
    ] {
        let errs = errors(&text);
        assert!(
            errs.iter().any(|e| e.starts_with(at) && e.contains(says)),
            "expected {at} … {says}, got {errs:#?}"
        );
    }
}

const STAFF: &str = "staff:\n  - id: desk\n    name: Service desk\n    email: desk@example.com\n  - id: boss\n    email: boss@example.com\n";

/// VALID with its second wave a service wave of staff `desk`, due in 2 days and escalated
/// to `boss`; `terms` replaces the `sla` and `escalate_to` lines (lines 22 and 23).
fn service_wave(terms: &str) -> String {
    VALID
        .replace("channel: outbound_call", "channel: service")
        .replace(
            "    team: callcentre\n",
            &format!("    team: desk\n{terms}"),
        )
}

const TERMS: &str = "    sla: 2d\n    escalate_to: boss\n";

/// Errors of `workflow` with `staff.yaml` beside it when `staff` is given.
fn errors_with_staff(workflow: &str, staff: Option<&str>) -> Vec<String> {
    let (dir, path) = setup(workflow, TEMPLATE);
    if let Some(s) = staff {
        std::fs::write(dir.path().join("staff.yaml"), s).unwrap();
    }
    match spec::load_file(&path) {
        Ok(_) => Vec::new(),
        Err(d) => d.iter().map(located).collect(),
    }
}

fn assert_only(errs: Vec<String>, prefix: &str, text: &str) {
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].starts_with(prefix),
        "{} is not at {prefix}",
        errs[0]
    );
    assert!(errs[0].contains(text), "{} does not say {text}", errs[0]);
}

#[test]
fn a_service_wave_states_its_sla_and_who_overdue_tasks_go_to() {
    let (dir, path) = setup(&service_wave(TERMS), TEMPLATE);
    std::fs::write(dir.path().join("staff.yaml"), STAFF).unwrap();
    let wf = spec::load_file(&path).unwrap();
    let w = &wf.waves[1];
    assert_eq!(w.sla, Some(std::time::Duration::from_secs(2 * 86_400)));
    assert_eq!(w.escalate_to.as_deref(), Some("boss"));
    assert_eq!(w.team.as_deref(), Some("desk"));
    // The directory is part of the version: a stored version is checked as it was loaded.
    let bundle = spec::Bundle::read(&path).unwrap();
    assert_eq!(bundle.staff.as_deref(), Some(STAFF));
    assert!(spec::compile(&bundle, None).is_ok());
    // An outbound-call wave may have an SLA without a staff directory (its team is agents,
    // not a staff id), and then reads none.
    let call = VALID.replace(
        "    team: callcentre\n",
        "    team: callcentre\n    sla: 4h\n",
    );
    let (_d, p) = setup(&call, TEMPLATE);
    assert_eq!(
        spec::load_file(&p).unwrap().waves[1].sla,
        Some(std::time::Duration::from_secs(4 * 3600))
    );
    assert_eq!(spec::Bundle::read(&p).unwrap().staff, None);
}

#[test]
fn service_terms_get_located_errors() {
    let staff = Some(STAFF);
    for sla in ["30m", "31d"] {
        assert_only(
            errors_with_staff(
                &service_wave(&format!("    sla: {sla}\n    escalate_to: boss\n")),
                staff,
            ),
            "wf.yaml:22:10:",
            "is out of range: expected 1h to 30d",
        );
    }
    assert_only(
        errors_with_staff(&service_wave("    sla: soon\n"), staff),
        "wf.yaml:22:10:",
        "",
    );
    assert_only(
        errors_with_staff(
            &service_wave("    sla: 2d\n    escalate_to: nobody\n"),
            staff,
        ),
        "wf.yaml:23:18:",
        "unknown staff `nobody`: expected an id from staff.yaml (desk, boss)",
    );
    assert_only(
        errors_with_staff(&service_wave("    escalate_to: boss\n"), staff),
        "wf.yaml:22:18:",
        "`escalate_to` needs `sla`",
    );
    assert_only(
        errors_with_staff(&service_wave(TERMS), None),
        "wf.yaml:23:18:",
        "there is no staff.yaml beside the workflow",
    );
    assert_only(
        errors_with_staff(
            &service_wave(TERMS).replace("team: desk", "team: front-hall"),
            staff,
        ),
        "wf.yaml:21:11:",
        "unknown staff `front-hall`: a service wave's team is a staff id from staff.yaml (desk, boss)",
    );
    // An SMS wave has no tasks to be late with.
    assert_only(
        errors_with_staff(
            &service_wave(TERMS).replace(
                "    template: t.txt\n    respond_within: 3d\n  - id: call",
                "    template: t.txt\n    sla: 1d\n    respond_within: 3d\n  - id: call",
            ),
            staff,
        ),
        "wf.yaml:16:10:",
        "`sla` is for task waves (outbound_call, service), not `sms`",
    );
    // A broken staff file is reported where it is broken.
    assert_only(
        errors_with_staff(
            &service_wave(TERMS),
            Some("staff:\n  - id: desk\n    email: nope\n"),
        ),
        "staff.yaml:3:12:",
        "expected an e-mail address",
    );
}

/// A purchase-intent survey by SMS (reply 1 to 5) and by a call's outcomes, and an offer
/// gated per value tier on the answers.
const SURVEY: &str = r#"campaign: survey
timezone: Asia/Shanghai
audience:
  where: "arpu_3m >= 10"
outcomes: [certainly_buy, probably_buy, unreachable]
survey:
  group_by: value_tier
  answers:
    - { reply: "1", score: 1.0 }
    - { reply: "2", score: 0.8 }
    - { reply: "3", score: 0.5 }
    - { outcome: certainly_buy, score: 1 }
    - { outcome: probably_buy, score: 0.8 }
waves:
  - id: ask
    channel: sms
    template: t.txt
    respond_within: 3d
    responses: [{ reply: "1" }, { reply: "2" }, { reply: "3" }]
  - id: call
    after: ask
    channel: outbound_call
    team: callcentre
    template: t.txt
    respond_within: 3d
    responses: [{ outcome: certainly_buy }]
  - id: offer
    after: call
    targets: all
    gate: { purchase_intent: { min: 0.4, min_respondents: 20 } }
    channel: sms
    template: t.txt
    respond_within: 3d
"#;

#[test]
fn a_survey_and_its_gate_compile_to_exact_thousandths() {
    let (_dir, path) = setup(SURVEY, TEMPLATE);
    let wf = spec::load_file(&path).unwrap_or_else(|d| panic!("{d:#?}"));
    let survey = wf.survey.as_ref().unwrap();
    assert_eq!(survey.group_by, "value_tier");
    let scores: Vec<(&str, &str, u32)> = survey
        .answers
        .iter()
        .map(|a| {
            let (k, v) = a.kind.response();
            (k, v, a.score)
        })
        .collect();
    assert_eq!(
        scores,
        [
            ("reply", "1", 1000),
            ("reply", "2", 800),
            ("reply", "3", 500),
            ("outcome", "certainly_buy", 1000),
            ("outcome", "probably_buy", 800)
        ]
    );
    let gate = wf.wave("offer").unwrap().gate.as_ref().unwrap();
    assert_eq!(gate.min, 400);
    assert_eq!(gate.min_respondents, 20);
    // Both waves it follows collect answers: the SMS its replies, the call its outcomes.
    assert_eq!(gate.from_waves, ["ask", "call"]);
    assert_eq!(wf.survey_waves(), ["ask", "call"]);
    // At the threshold exactly: 0.4 * 20 = 8.0 = Σ scores.
    assert!(gate.passes(8_000, 20));
    assert!(!gate.passes(7_999, 20));
    assert!(!gate.passes(20_000, 19), "too few respondents");
    assert_eq!(spec::permille_text(400), "0.4");
}

#[test]
fn every_bad_survey_or_gate_value_is_located() {
    let cases: &[(String, &str, &str)] = &[
        (
            SURVEY.replace("{ reply: \"2\", score: 0.8 }", "{ reply: \"2\", score: 1.2 }"),
            "wf.yaml:10:",
            "score 1.2 is out of range: expected 0 to 1",
        ),
        (
            SURVEY.replace("{ reply: \"3\", score: 0.5 }", "{ reply: \"3\", score: 0.5005 }"),
            "wf.yaml:11:",
            "more than three decimals",
        ),
        (
            SURVEY.replace("{ outcome: probably_buy, score: 0.8 }", "{ outcome: maybe_buy, score: 0.8 }"),
            "wf.yaml:13:",
            "outcome `maybe_buy` can never be recorded",
        ),
        (
            SURVEY.replace("{ reply: \"3\", score: 0.5 }", "{ reply: \"4\", score: 0.5 }"),
            "wf.yaml:11:",
            "survey answer `reply: 4` can never be collected: no sms wave lists it",
        ),
        (
            SURVEY.replace("{ reply: \"3\", score: 0.5 }", "{ reply: \"2\", score: 0.5 }"),
            "wf.yaml:11:",
            "duplicate survey answer `reply: 2`",
        ),
        (
            SURVEY.replace("{ reply: \"3\", score: 0.5 }", "{ reply: stop, score: 0.5 }"),
            "wf.yaml:11:",
            "is an opt-out word",
        ),
        (
            SURVEY.replace("{ reply: \"3\", score: 0.5 }", "{ score: 0.5 }"),
            "wf.yaml:11:",
            "needs a `reply` keyword or an `outcome`",
        ),
        (
            SURVEY.replace("{ reply: \"3\", score: 0.5 }", "{ reply: \"3\", outcome: unreachable, score: 0.5 }"),
            "wf.yaml:11:",
            "not both",
        ),
        (
            SURVEY.replace("{ reply: \"3\", score: 0.5 }", "{ reply: \"3\", score: 0.5, weight: 2 }"),
            "wf.yaml:11:",
            "weight",
        ),
        (
            SURVEY.replace("{ reply: \"3\", score: 0.5 }", "{ reply: \"*\", score: 0.5 }"),
            "wf.yaml:11:",
            "`*` is not an answer",
        ),
        (
            SURVEY.replace(
                "  answers:\n    - { reply: \"1\", score: 1.0 }\n    - { reply: \"2\", score: 0.8 }\n    - { reply: \"3\", score: 0.5 }\n    - { outcome: certainly_buy, score: 1 }\n    - { outcome: probably_buy, score: 0.8 }\n",
                "  answers: []\n",
            ),
            "wf.yaml:8:",
            "expected at least one answer",
        ),
        (
            SURVEY.replace("group_by: value_tier", "group_by: tier"),
            "wf.yaml:7:13:",
            "`tier` is not a subscriber field",
        ),
        (
            SURVEY.replace("group_by: value_tier", "group_by: arpu_3m"),
            "wf.yaml:7:13:",
            "cannot group survey respondents by `arpu_3m`: expected a text field",
        ),
        (
            SURVEY.replace("min: 0.4,", "min: 40,"),
            "wf.yaml:30:",
            "gate minimum 40 is out of range",
        ),
        (
            SURVEY.replace("min_respondents: 20", "min_respondents: 0"),
            "wf.yaml:30:",
            "min_respondents 0 is out of range",
        ),
        (
            SURVEY.replace("purchase_intent: { min", "purchase_intent: { least"),
            "wf.yaml:30:",
            "least",
        ),
        (
            SURVEY.replace(
                "    respond_within: 3d\n    responses: [{ reply: \"1\" }, { reply: \"2\" }, { reply: \"3\" }]",
                "    respond_within: 3d\n    gate: { purchase_intent: { min: 0.4 } }\n    responses: [{ reply: \"1\" }, { reply: \"2\" }, { reply: \"3\" }]",
            ),
            "wf.yaml:19:",
            "the first wave `ask` cannot be gated",
        ),
        (
            SURVEY.replace("after: call\n", "after: ask\n").replace(
                "    responses: [{ reply: \"1\" }, { reply: \"2\" }, { reply: \"3\" }]\n",
                "    responses: [{ reply: \"9\" }]\n",
            ).replace("    - { reply: \"1\", score: 1.0 }\n    - { reply: \"2\", score: 0.8 }\n    - { reply: \"3\", score: 0.5 }\n", ""),
            "wf.yaml:",
            "wave `offer` is gated on the survey, but no wave before it collects an answer",
        ),
    ];
    for (wf, at, says) in cases {
        let errs = errors(wf);
        assert!(
            errs.iter().any(|e| e.starts_with(at) && e.contains(says)),
            "expected {at} … {says}, got {errs:#?}"
        );
    }
    // A gate without a survey.
    let start = SURVEY.find("survey:\n").unwrap();
    let end = SURVEY.find("waves:").unwrap();
    let no_survey = format!("{}{}", &SURVEY[..start], &SURVEY[end..]);
    let errs = errors(&no_survey);
    assert!(
        errs.iter().any(
            |e| e.starts_with("wf.yaml:22:") && e.contains("the workflow declares no `survey`")
        ),
        "{errs:#?}"
    );
}

const TEAMS: &str = "value: arpu_3m\nteams:\n  - id: callcentre\n    agents: [agent-1]\n    capacity_per_day: 100\n    pacing_per_hour: 20\n    timezone: Asia/Shanghai\n    hours: 09:00-21:00\n";

/// Guards `teams::undeclared_call_teams` through `load_file`: with a teams file beside the
/// workflows, an outbound_call wave's team must be declared there (a located error naming
/// the declared teams); without one any team name goes; a teams file that has errors of its
/// own is not used to refuse workflows (`campaignd validate` reports it).
#[test]
fn an_outbound_call_wave_names_a_declared_team_when_there_is_a_teams_file() {
    let (dir, path) = setup(VALID, TEMPLATE);
    std::fs::write(dir.path().join("teams.yaml"), TEAMS).unwrap();
    assert!(spec::load_file(&path).is_ok());
    let (dir, path) = setup(&VALID.replace("team: callcentre", "team: campus"), TEMPLATE);
    assert!(spec::load_file(&path).is_ok(), "no teams file: not checked");
    std::fs::write(dir.path().join("teams.yaml"), TEAMS).unwrap();
    let errs: Vec<String> = spec::load_file(&path)
        .unwrap_err()
        .iter()
        .map(located)
        .collect();
    assert_only(
        errs,
        "wf.yaml:21:11:",
        "unknown team `campus`: an outbound_call wave's team is declared in teams.yaml (callcentre)",
    );
    // The teams file is not a workflow of the folder.
    let (ok, diags) = spec::load_dir(dir.path());
    assert_eq!((ok.len(), diags.len()), (0, 1), "{diags:?}");
    std::fs::write(
        dir.path().join("teams.yaml"),
        TEAMS.replace("pacing_per_hour: 20", "pacing_per_hour: 0"),
    )
    .unwrap();
    assert!(spec::load_file(&path).is_ok());
    let errs = spec::teams::load_teams(dir.path()).unwrap_err();
    assert!(errs[0].to_string().contains("teams.yaml:6:22:"), "{errs:?}");
}

/// The first wave of `VALID` with `block` in place of its `template` line.
fn with_variants(block: &str) -> String {
    let wf = VALID.replacen(
        "    template: t.txt\n    respond_within: 3d\n",
        &format!("{block}    respond_within: 3d\n"),
        1,
    );
    assert_ne!(wf, VALID);
    wf
}

const TWO_VARIANTS: &str = "    variants:\n      - { name: short, template: t.txt, weight: 1 }\n      - { name: long, template: u.txt, weight: 3 }\n";

#[test]
fn variants_compile_in_file_order_with_their_weights_and_templates() {
    let (dir, path) = setup(&with_variants(TWO_VARIANTS), TEMPLATE);
    std::fs::write(dir.path().join("u.txt"), "Hello {name}, a longer offer.").unwrap();
    let wf = spec::load_file(&path).unwrap_or_else(|d| panic!("{d:#?}"));
    let w = wf.wave("sms").unwrap();
    assert!(w.template.is_none());
    let got: Vec<(&str, u32)> = w
        .variants
        .iter()
        .map(|v| (v.name.as_str(), v.weight))
        .collect();
    assert_eq!(got, [("short", 1), ("long", 3)]);
    let render = |v: Option<&str>| w.template_for(v).map(|t| t.render(|f| format!("<{f}>")));
    assert_eq!(
        render(Some("short")).as_deref(),
        Some("Hi <name>, reply 1.")
    );
    assert_eq!(
        render(Some("long")).as_deref(),
        Some("Hello <name>, a longer offer.")
    );
    assert_eq!(render(Some("other")), None);
    assert_eq!(render(None), None);
}

#[test]
fn every_bad_variant_value_is_a_located_error() {
    let cases: Vec<(String, &str, &str)> = vec![
        (
            VALID.replacen("    template: t.txt\n", "", 1),
            "wf.yaml:13:9:",
            "wave `sms` needs `template` (or `variants`)",
        ),
        (
            VALID.replacen(
                "    template: t.txt\n",
                &format!(
                    "    template: t.txt\n{}",
                    TWO_VARIANTS.replace("u.txt", "t.txt")
                ),
                1,
            ),
            "wf.yaml:15:15:",
            "wave `sms` has `variants`",
        ),
        (
            with_variants("    variants:\n      - { name: only, template: t.txt, weight: 1 }\n"),
            "wf.yaml:16:7:",
            "expected 2 to 16 variants, found 1",
        ),
        (
            with_variants(
                "    variants:\n      - { name: Short, template: t.txt, weight: 1 }\n      - { name: long, template: t.txt, weight: 1 }\n",
            ),
            "wf.yaml:16:17:",
            "variant name `Short` is not valid: expected 1 to 32 of a-z, 0-9, `_`",
        ),
        (
            with_variants(
                "    variants:\n      - { name: a, template: t.txt, weight: 1 }\n      - { name: a, template: t.txt, weight: 1 }\n",
            ),
            "wf.yaml:17:17:",
            "duplicate variant name `a`",
        ),
        (
            with_variants(
                "    variants:\n      - { name: a, template: t.txt, weight: 0 }\n      - { name: b, template: t.txt, weight: 1 }\n",
            ),
            "wf.yaml:16:45:",
            "variant weight 0 is out of range: expected a whole number from 1 to 1000",
        ),
        (
            with_variants(
                "    variants:\n      - { name: a, template: t.txt, weight: 1 }\n      - { name: b, template: t.txt, weight: 1001 }\n",
            ),
            "wf.yaml:17:45:",
            "variant weight 1001 is out of range",
        ),
        (
            with_variants(
                "    variants:\n      - { name: a, template: t.txt, weight: 1 }\n      - { name: b, template: missing.txt, weight: 1 }\n",
            ),
            "wf.yaml:17:30:",
            "template file `missing.txt` not found",
        ),
        (
            with_variants(
                "    variants:\n      - { name: a, template: t.txt, weight: 1 }\n      - { name: b, template: t.txt, weigth: 1 }\n",
            ),
            "wf.yaml:17:",
            "weigth",
        ),
        (
            VALID.replacen(
                "    team: callcentre\n    template: t.txt\n",
                &format!(
                    "    team: callcentre\n{}",
                    TWO_VARIANTS.replace("u.txt", "t.txt")
                ),
                1,
            ),
            "wf.yaml:23:7:",
            "`variants` are for the first wave only: wave `call` comes after `sms`",
        ),
    ];
    for (wf, at, says) in cases {
        let errs = errors(&wf);
        assert!(
            errs.iter().any(|e| e.starts_with(at) && e.contains(says)),
            "expected {at} … {says}, got {errs:#?}"
        );
    }
}

/// `VALID` with its first wave sent by e-mail.
fn email_first(template: &str) -> (tempfile::TempDir, PathBuf) {
    let wf = VALID.replacen("    channel: sms\n", "    channel: email\n", 1);
    setup(&wf, template)
}

#[test]
fn an_email_wave_takes_a_template_with_a_subject_line() {
    let (dir, path) = email_first("Subject: For {name}\n\nHi {name}, the bundle is yours.");
    let wf = spec::load_file(&path).unwrap_or_else(|d| panic!("{d:#?}"));
    let wave = wf.wave("sms").unwrap();
    assert_eq!(
        wave.channel,
        spec::WaveChannel::One(spec::ChannelKind::Email)
    );
    let t = wave.template.as_ref().unwrap();
    assert_eq!(t.render_subject(|_| "Li".into()).as_deref(), Some("For Li"));
    assert_eq!(t.render(|_| "Li".into()), "Hi Li, the bundle is yours.");
    // No reply comes back by mail: an e-mail wave has no default response.
    assert!(wave.responses.is_empty());
    // The call wave after it still gets a plain script from the same kind of file.
    assert!(
        !wf.wave("call")
            .unwrap()
            .template
            .as_ref()
            .unwrap()
            .is_mail()
    );
    drop(dir);
}

#[test]
fn an_email_template_without_a_subject_is_located_in_the_template() {
    let (dir, path) = email_first(TEMPLATE);
    let errs = errors_in(&dir, &path);
    assert!(
        errs.iter().any(|e| e.starts_with(
            "t.txt:1:1: an e-mail template starts with its subject line, `Subject: <subject>`"
        )),
        "{errs:#?}"
    );
    let (dir, path) = email_first("Subject: Hi {nme}\nno blank line");
    let errs = errors_in(&dir, &path);
    for want in [
        "t.txt:1:13: `{nme}` is not a subscriber field",
        "t.txt:2:1: expected a blank line between the subject and the body",
    ] {
        assert!(
            errs.iter().any(|e| e.starts_with(want)),
            "{want}: {errs:#?}"
        );
    }
}

#[test]
fn an_email_wave_refuses_replies_and_delivery_targets() {
    let wf = VALID
        .replacen("    channel: sms\n", "    channel: email\n", 1)
        .replacen(
            "    respond_within: 3d\n",
            "    respond_within: 3d\n    responses:\n      - reply: \"1\"\n",
            1,
        )
        .replace("targets: no_response", "targets: delivered_silent");
    let (dir, path) = setup(&wf, "Subject: s\n\nbody");
    let errs = errors_in(&dir, &path);
    for want in [
        "wf.yaml:18:16: a `reply` response can never happen on an `email` wave",
        "wf.yaml:21:14: wave `call` waits for a delivery report, but `sms` is an `email` wave",
    ] {
        assert!(
            errs.iter().any(|e| e.starts_with(want)),
            "{want}: {errs:#?}"
        );
    }
}

#[test]
fn an_email_wave_needs_an_address_attribute_in_the_catalogue() {
    let (dir, path) = email_first("Subject: s\n\nbody");
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workflows/attributes.yaml"),
    )
    .unwrap();
    let without = shipped.replace("    format: email\n", "");
    assert_ne!(without, shipped);
    std::fs::write(dir.path().join("attributes.yaml"), without).unwrap();
    let errs = errors_in(&dir, &path);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].starts_with("wf.yaml:14:14: an `email` wave sends to the subscriber's address, but the attribute catalogue declares none"),
        "{errs:#?}"
    );
}

/// `VALID` with its first wave `channel: preferred` and `templates` as given (one line).
fn preferred_first(templates: &str) -> String {
    VALID.replacen(
        "    channel: sms\n    template: t.txt\n",
        &format!("    channel: preferred\n    templates: {templates}\n"),
        1,
    )
}

#[test]
fn a_preferred_wave_takes_a_template_per_channel() {
    let wf = preferred_first("{ sms: t.txt, email: m.txt }");
    let (dir, path) = setup(&wf, TEMPLATE);
    std::fs::write(
        dir.path().join("m.txt"),
        "Subject: For {name}\n\nHi {name}.",
    )
    .unwrap();
    let wf = spec::load_file(&path).unwrap_or_else(|d| panic!("{d:#?}"));
    let wave = wf.wave("sms").unwrap();
    assert_eq!(wave.channel, spec::WaveChannel::Preferred);
    assert_eq!(wave.channel.as_str(), "preferred");
    assert_eq!(
        wave.channels(),
        [spec::ChannelKind::Email, spec::ChannelKind::Sms]
    );
    let mail = wave.template_on(spec::ChannelKind::Email, None).unwrap();
    assert!(mail.is_mail());
    assert!(
        !wave
            .template_on(spec::ChannelKind::Sms, None)
            .unwrap()
            .is_mail()
    );
    assert!(
        wave.template_on(spec::ChannelKind::OutboundCall, None)
            .is_none()
    );
    // SMS among its channels: any reply counts by default, as on an SMS wave.
    assert_eq!(wave.responses, [spec::ResponseRule::Reply("*".into())]);
    drop(dir);
}

#[test]
fn a_preferred_wave_locates_every_bad_value() {
    let cases: Vec<(String, &str, &str)> = vec![
        (
            preferred_first("{ sms: t.txt, fax: t.txt }"),
            "wf.yaml:15:35:",
            "`fax` in `templates` is not a channel a preferred wave sends on",
        ),
        (
            preferred_first("{ sms: t.txt, service: t.txt }"),
            "wf.yaml:15:39:",
            "the `service` message needs the wave's `service_team`: the staff who work its tasks",
        ),
        (
            preferred_first("{}"),
            "wf.yaml:15:16:",
            "`templates` names no channel",
        ),
        (
            VALID.replacen("    channel: sms\n", "    channel: preferred\n", 1),
            "wf.yaml:15:15:",
            "a `preferred` wave names its message per channel in `templates`, not one `template`",
        ),
        (
            VALID.replacen(
                "    channel: sms\n    template: t.txt\n",
                "    channel: preferred\n",
                1,
            ),
            "wf.yaml:14:14:",
            "a `preferred` wave needs `templates`",
        ),
        (
            VALID.replacen(
                "    template: t.txt\n",
                "    template: t.txt\n    templates: { sms: t.txt }\n",
                1,
            ),
            "wf.yaml:16:16:",
            "`templates` is for `channel: preferred`",
        ),
        (
            VALID.replacen("    channel: sms\n", "    channel: prefered\n", 1),
            "wf.yaml:14:14:",
            "unknown channel `prefered`: expected one of sms, outbound_call, service, email, or preferred",
        ),
    ];
    for (wf, at, says) in cases {
        let errs = errors(&wf);
        assert!(
            errs.iter().any(|e| e.starts_with(at) && e.contains(says)),
            "expected {at} … {says}, got {errs:#?}"
        );
    }
    // An e-mail-only preferred wave cannot take a reply, nor a call's outcome.
    let mail_only = preferred_first("{ email: t.txt }").replacen(
        "    respond_within: 3d\n",
        "    respond_within: 3d\n    responses:\n      - reply: \"1\"\n      - outcome: accepted\n",
        1,
    );
    let errs = errors_with_template(&mail_only, "Subject: s\n\nbody");
    for want in [
        "wf.yaml:18:16: a `reply` response needs an `sms` message among the wave's `templates`",
        "wf.yaml:19:18: an `outcome` response needs an `outbound_call` message",
    ] {
        assert!(
            errs.iter().any(|e| e.starts_with(want)),
            "{want}: {errs:#?}"
        );
    }
    // A call needs the wave's team, located at the call's template.
    let errs = errors(&preferred_first("{ sms: t.txt, outbound_call: t.txt }"));
    assert!(
        errs.iter().any(|e| e.starts_with("wf.yaml:15:45:")
            && e.contains("the `outbound_call` message needs the wave's `team`")),
        "{errs:#?}"
    );
    // With the team, it compiles.
    let wf = preferred_first("{ sms: t.txt, outbound_call: t.txt }").replacen(
        "    templates:",
        "    team: callcentre\n    templates:",
        1,
    );
    assert_eq!(errors(&wf), Vec::<String>::new());
}

#[test]
fn a_preferred_wave_needs_the_preference_in_the_catalogue() {
    let wf = preferred_first("{ sms: t.txt }");
    let (dir, path) = setup(&wf, TEMPLATE);
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workflows/attributes.yaml"),
    )
    .unwrap();
    // The second choice's slot as free text: no slot rule, so no slot to send in.
    let without = shipped.replacen(
        "  - name: second_channel_slot\n    type: text\n    format: time_slot\n",
        "  - name: second_channel_slot\n    type: text\n",
        1,
    );
    assert_ne!(without, shipped);
    std::fs::write(dir.path().join("attributes.yaml"), without).unwrap();
    let errs = errors_in(&dir, &path);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].starts_with("wf.yaml:14:14: `channel: preferred` reads each subscriber's preference from the catalogue attribute `second_channel_slot`"),
        "{errs:#?}"
    );
}

/// The shipped catalogue with its four preference attributes renamed as an operator's
/// catalogue might name them, and a few that cannot hold a preference.
fn catalogue_with_renamed_preference() -> String {
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workflows/attributes.yaml"),
    )
    .unwrap();
    let mut out = shipped.clone();
    for (from, to) in [
        ("- name: first_channel\n", "- name: pref_one\n"),
        ("- name: first_channel_slot\n", "- name: pref_one_slot\n"),
        ("- name: second_channel\n", "- name: pref_two\n"),
        ("- name: second_channel_slot\n", "- name: pref_two_slot\n"),
    ] {
        out = out.replacen(from, to, 1);
    }
    assert!(!out.contains("first_channel") && !out.contains("second_channel_slot"));
    out.replacen(
        "attributes:\n",
        "attributes:\n  - name: pref_free\n    type: text\n  - name: pref_odd\n    type: enum\n    values: [sms, pigeon]\n  - name: pref_count\n    type: integer\n",
        1,
    )
}

// spec `preference`, `preference_problem`; workflow `Preference::attributes`.
#[test]
fn a_preference_block_names_the_catalogues_own_attributes() {
    let block = "preference: { first: pref_one, first_slot: pref_one_slot, second: pref_two }\n";
    let wf = preferred_first("{ sms: t.txt }") + block;
    let (dir, path) = setup(&wf, TEMPLATE);
    std::fs::write(
        dir.path().join("attributes.yaml"),
        catalogue_with_renamed_preference(),
    )
    .unwrap();
    let compiled = spec::load_file(&path).unwrap_or_else(|d| panic!("{d:#?}"));
    assert_eq!(
        compiled.preference,
        spec::Preference {
            first: "pref_one".into(),
            first_slot: Some("pref_one_slot".into()),
            second: "pref_two".into(),
            second_slot: None,
        }
    );
    assert_eq!(
        compiled.preference.attributes(),
        [
            Some("pref_one"),
            Some("pref_one_slot"),
            Some("pref_two"),
            None
        ]
    );
    // Without the block the shipped names are read, which this catalogue does not have:
    // located at the wave, naming the way out.
    std::fs::write(&path, preferred_first("{ sms: t.txt }")).unwrap();
    let errs = errors_in(&dir, &path);
    assert_eq!(errs.len(), 4, "{errs:#?}");
    assert!(
        errs.iter().all(
            |e| e.starts_with("wf.yaml:14:14: `channel: preferred` reads")
                && e.contains("the campaign's `preference`")
        ),
        "{errs:#?}"
    );
    // And a campaign without the block, on the shipped catalogue, reads the shipped names.
    let shipped = spec::load_file(&setup(&preferred_first("{ sms: t.txt }"), TEMPLATE).1);
    assert_eq!(
        shipped.unwrap().preference.attributes(),
        spec::PREFERENCE_ATTRIBUTES.map(Some)
    );
    drop(dir);
}

#[test]
fn a_preference_block_locates_every_bad_name() {
    let wf = preferred_first("{ sms: t.txt }");
    let line = wf.lines().count() + 2;
    let wf = wf
        + "preference:\n  first: nope\n  first_slot: pref_free\n  second: pref_odd\n  second_slot: pref_count\n";
    let (dir, path) = setup(&wf, TEMPLATE);
    std::fs::write(
        dir.path().join("attributes.yaml"),
        catalogue_with_renamed_preference(),
    )
    .unwrap();
    let errs = errors_in(&dir, &path);
    assert_eq!(errs.len(), 4, "{errs:#?}");
    for (i, want) in [
        format!("wf.yaml:{line}:10: preference.first: the catalogue declares no attribute `nope`: expected an enum attribute whose values are channel names"),
        format!("wf.yaml:{}:15: preference.first_slot: `pref_free` is a text without `format: time_slot`: expected a text attribute with `format: time_slot`", line + 1),
        format!("wf.yaml:{}:11: preference.second: `pref_odd` has values that are no channel (pigeon): expected an enum attribute whose values are channel names", line + 2),
        format!("wf.yaml:{}:16: preference.second_slot: `pref_count` is an integer attribute: expected a text attribute with `format: time_slot`", line + 3),
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(&errs[i], want, "{errs:#?}");
    }
    // A slot attribute is no channel, nor a channel one a slot.
    let swapped = preferred_first("{ sms: t.txt }")
        + "preference: { first: pref_one_slot, second: pref_two, second_slot: pref_one }\n";
    std::fs::write(&path, swapped).unwrap();
    let errs = errors_in(&dir, &path);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(
        errs[0].starts_with(&format!(
            "wf.yaml:{}:22: preference.first: `pref_one_slot` is a text attribute",
            line - 1
        )),
        "{errs:#?}"
    );
    assert!(
        errs[1].starts_with(&format!(
            "wf.yaml:{}:68: preference.second_slot: `pref_one` is an enum attribute",
            line - 1
        )),
        "{errs:#?}"
    );
    // The block without a preferred wave reads nothing: an error, at the block.
    std::fs::write(
        &path,
        VALID.to_owned() + "preference: { first: pref_one, second: pref_two }\n",
    )
    .unwrap();
    let errs = errors_in(&dir, &path);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].starts_with(&format!("wf.yaml:{}:", line - 1))
            && errs[0].contains("`preference` is read by `channel: preferred` waves only"),
        "{errs:#?}"
    );
    drop(dir);
}

/// `VALID` with its first wave `channel: preferred` and `variants` as given (lines).
fn preferred_variants(variants: &str) -> String {
    let wf = VALID.replacen(
        "    channel: sms\n    template: t.txt\n",
        &format!("    channel: preferred\n    variants:\n{variants}"),
        1,
    );
    assert_ne!(wf, VALID);
    wf
}

const PREFERRED_VARIANTS: &str = "      - { name: short, weight: 1, templates: { sms: t.txt, email: m.txt } }\n      - { name: long, weight: 3, templates: { sms: u.txt, email: n.txt } }\n";

/// A folder with `wf` and the four templates the preferred variants name.
fn setup_preferred_variants(wf: &str) -> (tempfile::TempDir, PathBuf) {
    let (dir, path) = setup(wf, TEMPLATE);
    for (file, text) in [
        ("u.txt", "Hello {name}, a longer offer."),
        ("m.txt", "Subject: Short\n\nHi {name}."),
        ("n.txt", "Subject: Long\n\nHello {name}, a longer offer."),
    ] {
        std::fs::write(dir.path().join(file), text).unwrap();
    }
    (dir, path)
}

// spec `variants` (preferred), `variant_message`; workflow `Wave::template_on`, `channels`.
#[test]
fn a_preferred_waves_variants_each_have_a_message_per_channel() {
    let (dir, path) = setup_preferred_variants(&preferred_variants(PREFERRED_VARIANTS));
    let wf = spec::load_file(&path).unwrap_or_else(|d| panic!("{d:#?}"));
    let w = wf.wave("sms").unwrap();
    assert_eq!(w.channel, spec::WaveChannel::Preferred);
    assert!(w.preferred.is_empty() && w.template.is_none());
    let got: Vec<(&str, u32)> = w
        .variants
        .iter()
        .map(|v| (v.name.as_str(), v.weight))
        .collect();
    assert_eq!(got, [("short", 1), ("long", 3)]);
    assert_eq!(
        w.channels(),
        [spec::ChannelKind::Email, spec::ChannelKind::Sms]
    );
    let render = |c, v| {
        w.template_on(c, v)
            .map(|t: &spec::Template| (t.is_mail(), t.render(|f| format!("<{f}>"))))
    };
    use spec::ChannelKind::{Email, OutboundCall, Sms};
    assert_eq!(
        render(Sms, Some("short")),
        Some((false, "Hi <name>, reply 1.".into()))
    );
    assert_eq!(
        render(Sms, Some("long")),
        Some((false, "Hello <name>, a longer offer.".into()))
    );
    assert_eq!(
        render(Email, Some("short")),
        Some((true, "Hi <name>.".into()))
    );
    assert_eq!(
        render(Email, Some("long")),
        Some((true, "Hello <name>, a longer offer.".into()))
    );
    assert_eq!(
        w.template_on(Email, Some("long"))
            .unwrap()
            .render_subject(|f| f.into()),
        Some("Long".into())
    );
    assert_eq!(render(OutboundCall, Some("long")), None);
    assert_eq!(render(Sms, Some("other")), None);
    assert_eq!(render(Sms, None), None);
    assert_eq!(w.template_for(Some("short")), None);
    // SMS among the variants' channels: any reply counts, as on an SMS wave.
    assert_eq!(w.responses, [spec::ResponseRule::Reply("*".into())]);
    drop(dir);
}

#[test]
fn a_preferred_waves_variants_locate_every_bad_value() {
    let cases: Vec<(String, &str, &str)> = vec![
        (
            preferred_variants(
                "      - { name: short, weight: 1, templates: { sms: t.txt, email: m.txt } }\n      - { name: long, weight: 3, templates: { sms: u.txt } }\n",
            ),
            "wf.yaml:17:45:",
            "variant `long` has no message on email, which another variant has: every variant of a `preferred` wave sends on the same channels",
        ),
        (
            preferred_variants(
                "      - { name: short, weight: 1, templates: { sms: t.txt } }\n      - { name: long, weight: 3, templates: { sms: u.txt, email: n.txt } }\n",
            ),
            "wf.yaml:16:46:",
            "variant `short` has no message on email",
        ),
        (
            preferred_variants(
                "      - { name: short, weight: 1, template: t.txt }\n      - { name: long, weight: 3, templates: { sms: u.txt } }\n",
            ),
            "wf.yaml:16:45:",
            "a variant of a `preferred` wave names its message per channel in `templates`, not one `template`",
        ),
        (
            preferred_variants(
                "      - { name: short, weight: 1 }\n      - { name: long, weight: 3, templates: { sms: u.txt } }\n",
            ),
            "wf.yaml:16:17:",
            "variant `short` of a `preferred` wave needs `templates`",
        ),
        (
            preferred_variants(
                "      - { name: short, weight: 1, templates: { sms: t.txt, service: t.txt } }\n      - { name: long, weight: 3, templates: { sms: u.txt, service: t.txt } }\n",
            ),
            "wf.yaml:16:69:",
            "the `service` message needs the wave's `service_team`",
        ),
        (
            preferred_variants(
                "      - { name: short, weight: 1, templates: { sms: t.txt, outbound_call: t.txt } }\n      - { name: long, weight: 3, templates: { sms: u.txt, outbound_call: t.txt } }\n",
            ),
            "wf.yaml:16:75:",
            "the `outbound_call` message needs the wave's `team`",
        ),
        (
            preferred_variants(PREFERRED_VARIANTS).replacen(
                "    variants:\n",
                "    templates: { sms: t.txt }\n    variants:\n",
                1,
            ),
            "wf.yaml:17:7:",
            "a `preferred` wave with `variants` names each variant's messages in the variant's `templates`",
        ),
        (
            with_variants(
                "    variants:\n      - { name: short, weight: 1, templates: { sms: t.txt } }\n      - { name: long, weight: 3, template: u.txt }\n",
            ),
            "wf.yaml:16:46:",
            "`templates` is for the variants of a `channel: preferred` wave (a message per channel); a variant of a `sms` wave has one `template`",
        ),
        (
            with_variants(
                "    variants:\n      - { name: short, weight: 1 }\n      - { name: long, weight: 3, template: u.txt }\n",
            ),
            "wf.yaml:16:17:",
            "variant `short` needs `template`",
        ),
    ];
    for (wf, at, says) in cases {
        let (_dir, path) = setup_preferred_variants(&wf);
        let errs: Vec<String> = match spec::load_file(&path) {
            Ok(_) => Vec::new(),
            Err(d) => d.iter().map(located).collect(),
        };
        assert!(
            errs.iter().any(|e| e.starts_with(at) && e.contains(says)),
            "expected {at} … {says}, got {errs:#?}"
        );
    }
    // An e-mail-only set of variants takes no reply.
    let wf = preferred_variants(
        "      - { name: short, weight: 1, templates: { email: m.txt } }\n      - { name: long, weight: 3, templates: { email: n.txt } }\n",
    )
    .replacen(
        "    respond_within: 3d\n",
        "    respond_within: 3d\n    responses:\n      - reply: \"1\"\n",
        1,
    );
    let (_dir, path) = setup_preferred_variants(&wf);
    let errs: Vec<String> = spec::load_file(&path)
        .unwrap_err()
        .iter()
        .map(located)
        .collect();
    assert!(
        errs.iter()
            .any(|e| e.starts_with("wf.yaml:20:16: a `reply` response needs an `sms` message")),
        "{errs:#?}"
    );
}

/// A preferred wave with an SMS and a service message, `terms` inserted before its
/// `respond_within` (from line 16).
fn preferred_service(terms: &str) -> String {
    preferred_first("{ sms: t.txt, service: t.txt }").replacen(
        "    respond_within: 3d\n",
        &format!("{terms}    respond_within: 3d\n"),
        1,
    )
}

#[test]
fn a_preferred_waves_service_tasks_go_to_its_service_team() {
    let wf = preferred_service("    team: callcentre\n    service_team: desk\n    sla: 4h\n")
        .replacen(
            "templates: { sms: t.txt, service: t.txt }",
            "templates: { sms: t.txt, service: t.txt, outbound_call: t.txt }",
            1,
        );
    let (dir, path) = setup(&wf, TEMPLATE);
    std::fs::write(dir.path().join("staff.yaml"), STAFF).unwrap();
    let wf = spec::load_file(&path).unwrap_or_else(|d| panic!("{d:#?}"));
    let wave = wf.wave("sms").unwrap();
    assert_eq!(
        wave.channels(),
        [
            spec::ChannelKind::OutboundCall,
            spec::ChannelKind::Service,
            spec::ChannelKind::Sms
        ]
    );
    assert!(wave.template_on(spec::ChannelKind::Service, None).is_some());
    assert_eq!(wave.service_team.as_deref(), Some("desk"));
    assert_eq!(wave.team_on(spec::ChannelKind::Service), Some("desk"));
    assert_eq!(
        wave.team_on(spec::ChannelKind::OutboundCall),
        Some("callcentre")
    );
    // A one-channel service wave's tasks stay on its `team`.
    let plain = wf.wave("call").unwrap();
    assert_eq!(
        plain.team_on(spec::ChannelKind::OutboundCall),
        Some("callcentre")
    );
    drop(dir);
}

#[test]
fn a_preferred_waves_service_terms_get_located_errors() {
    let staff = Some(STAFF);
    // Checked against the staff directory, as a service wave's team.
    assert_only(
        errors_with_staff(&preferred_service("    service_team: front-hall\n"), staff),
        "wf.yaml:16:19:",
        "unknown staff `front-hall`: a preferred wave's service_team is a staff id from staff.yaml (desk, boss)",
    );
    assert_only(
        errors_with_staff(&preferred_service("    service_team: Desk!\n"), staff),
        "wf.yaml:16:19:",
        "staff id",
    );
    // Without a service message it works nothing.
    assert_only(
        errors_with_staff(
            &preferred_first("{ sms: t.txt }").replacen(
                "    respond_within: 3d\n",
                "    service_team: desk\n    respond_within: 3d\n",
                1,
            ),
            staff,
        ),
        "wf.yaml:16:19:",
        "`templates` has no `service` message",
    );
    // A one-channel wave's staff are its `team`.
    assert_only(
        errors_with_staff(
            &service_wave("").replace(
                "    team: desk\n",
                "    team: desk\n    service_team: desk\n",
            ),
            staff,
        ),
        "wf.yaml:22:19:",
        "`service_team` is for `channel: preferred`",
    );
    // The fallback is a preferred wave's escalation: it names nobody to escalate to.
    assert_only(
        errors_with_staff(
            &preferred_service("    service_team: desk\n    sla: 2d\n    escalate_to: boss\n"),
            staff,
        ),
        "wf.yaml:18:18:",
        "a `preferred` wave has no `escalate_to`: a task nobody worked by its deadline falls back",
    );
    assert!(
        errors_with_staff(
            &preferred_service("    service_team: desk\n    sla: 2d\n"),
            staff
        )
        .is_empty()
    );
}
