//! The binary as operators use it: exit codes, messages with locations, and bad input that
//! changes nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use store::testing::TestDatabase;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_campaignd"))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A config file naming the test's database: the PostgreSQL schema can only be given there.
fn db_config(dir: &Path, db: &TestDatabase) -> PathBuf {
    let mut toml = format!("database_url = {:?}\n", db.url);
    if let Some(schema) = &db.schema {
        toml.push_str(&format!("database_schema = {schema:?}\n"));
    }
    let path = dir.join("db.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

fn run(args: &[&str], config: &Path) -> Output {
    bin()
        .args(args)
        .env("CAMPAIGND_CONFIG", config)
        .env_remove("CAMPAIGND_DATABASE_URL")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn validate_prints_a_summary_per_valid_file() {
    let o = bin()
        .args(["validate", repo().join("workflows").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("ok ") && out.contains("campaign autumn-enrollment"),
        "{out}"
    );
    assert!(
        out.contains("calendars/campus/periods.yaml  5 period(s), dated to 2029-01-12"),
        "{out}"
    );
}

#[test]
fn validate_reports_located_errors_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo().join("workflows/segments.yaml"),
        dir.path().join("segments.yaml"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "campaign: x\ntimezone: Asia/Shanghai\naudience: {}\nwaves:\n  - id: a\n    chanel: sms\n",
    )
    .unwrap();
    let o = bin()
        .args(["validate", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad.yaml:6:5: unknown field `chanel`"),
        "{err}"
    );
}

#[test]
fn schema_is_json() {
    let o = bin().arg("schema").output().unwrap();
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["properties"]["waves"].is_object());
}

#[test]
fn telco_export_imports_and_bad_files_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // SQLite by default; CAMPAIGND_TEST_BACKEND=postgres runs it on a schema of its own.
    let db = rt
        .block_on(store::testing::fresh_database(
            store::testing::backend().unwrap(),
            dir.path(),
        ))
        .unwrap();
    let config = db_config(dir.path(), &db);
    let csv = repo().join("crates/subscribers/tests/fixtures/Telco-Customer-Churn.csv");
    let mapping = repo().join("workflows/imports/telco-ibm.mapping.yaml");
    let o = run(
        &[
            "import",
            csv.to_str().unwrap(),
            "--mapping",
            mapping.to_str().unwrap(),
        ],
        &config,
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("imported 7043 subscribers"),
        "{}",
        text(&o)
    );

    // The same file again: every msisdn exists, so the whole file is refused.
    let o = run(
        &[
            "import",
            csv.to_str().unwrap(),
            "--mapping",
            mapping.to_str().unwrap(),
        ],
        &config,
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("nothing was imported"), "{}", text(&o));
    // With --update it refreshes them.
    let o = run(
        &[
            "import",
            csv.to_str().unwrap(),
            "--mapping",
            mapping.to_str().unwrap(),
            "--update",
        ],
        &config,
    );
    assert!(o.status.success(), "{}", text(&o));

    // A CSV with a bad number on line 3 is refused with its location; nothing is written.
    let bad = dir.path().join("bad.csv");
    let mut lines: Vec<String> = std::fs::read_to_string(&csv)
        .unwrap()
        .lines()
        .take(4)
        .map(str::to_owned)
        .collect();
    lines[1] = lines[1].replacen("7590-VHVEG", "NEW-00001", 1);
    lines[2] = lines[2]
        .replacen("56.95", "abc", 1)
        .replacen("5575-GNVDE", "NEW-00002", 1);
    lines[3] = lines[3].replacen("3668-QPYBK", "NEW-00003", 1);
    std::fs::write(&bad, lines.join("\n")).unwrap();
    let o = run(
        &[
            "import",
            bad.to_str().unwrap(),
            "--mapping",
            mapping.to_str().unwrap(),
        ],
        &config,
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("bad.csv:3:19 (MonthlyCharges)"),
        "{}",
        text(&o)
    );
    let n = rt.block_on(async {
        let store = db.connect().await.unwrap();
        store.count_subscribers().await.unwrap()
    });
    assert_eq!(n, 7043, "the refused file wrote nothing");
}

/// SQLite only: the one-daemon-per-file lock is SQLite's; PostgreSQL replicas share a
/// database by design (tests/e2e/replicas.rs).
#[test]
fn second_daemon_on_one_file_is_refused_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("d.db").display());
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "database_url = \"{db}\"\nworkflows = \"{}\"\nlisten = \"127.0.0.1:0\"\n[sms]\ntransport = \"outbox\"\npath = \"{}\"\n[email]\ntransport = \"file\"\ndir = \"{}\"\n",
            repo().join("workflows").display(),
            dir.path().join("out.jsonl").display(),
            dir.path().display()
        ),
    )
    .unwrap();
    let mut first = KillOnDrop(
        bin()
            .args([
                "--config",
                cfg.to_str().unwrap(),
                "run",
                "--exit-after",
                "20",
            ])
            .env(
                "CAMPAIGND_CALLBACK_SECRET",
                "cli-tests-callback-secret-0123",
            )
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Wait until the first daemon is listening (it holds the lock from before that).
    let mut stdout = std::io::BufReader::new(first.0.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert!(line.contains("listening"), "{line}");
    let o = bin()
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "run",
            "--exit-after",
            "1",
        ])
        .env(
            "CAMPAIGND_CALLBACK_SECRET",
            "cli-tests-callback-secret-0123",
        )
        .output()
        .unwrap();
    drop(first);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("another campaignd daemon is already using"),
        "{}",
        text(&o)
    );
}

/// A spawned daemon that a failing assertion must not leave running.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn deploy_config_examples_match_the_config_schema() {
    // Unknown keys are rejected, so a config example that drifted from the code fails here.
    for f in [
        "deploy/config/campaignd.example.toml",
        "deploy/compose/campaignd.toml",
    ] {
        let o = bin()
            .args(["--config", repo().join(f).to_str().unwrap(), "schema"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{f}: {}", text(&o));
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    // A config the daemon refuses: exit 1 and what it printed.
    let refused = |toml: &str| -> String {
        std::fs::write(&bad, toml).unwrap();
        let o = bin()
            .args(["--config", bad.to_str().unwrap(), "schema"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        text(&o)
    };
    let t = refused("database_url = \"sqlite://x.db\"\n[engine]\nbatch_sise = 10\n");
    assert!(t.contains("batch_sise"), "{t}");
    // A typo in an alert address is found when the config is read, at its place.
    let t = refused(
        "database_url = \"sqlite://x.db\"\n[alerts]\nemail = [\"ops@example.com\", \"sms-platform.example.com\"]\n",
    );
    assert!(
        t.contains("line 3")
            && t.contains("`sms-platform.example.com` is not an e-mail address: no `@`"),
        "{t}"
    );
    // A global holdout share given as a percentage is caught the same way.
    let t = refused(
        "database_url = \"sqlite://x.db\"\n\n[global_holdout]\nshare = 2.0\nsalt = \"gh-2026\"\n",
    );
    assert!(
        t.contains("line 3") && t.contains("share must be between 0 and 1 (exclusive), got 2"),
        "{t}"
    );
}

/// Adding an attribute is a file edit and `campaignd migrate`: before the migration every
/// command that reads the base says what to run and changes nothing; after it the column
/// is there, `schema --attributes` lists it, a filter on it plans, and a type change is
/// refused without touching the database.
#[tokio::test]
async fn a_new_attribute_is_a_file_edit_and_a_migrate() {
    let dir = tempfile::tempdir().unwrap();
    let db = store::testing::fresh_database(store::testing::backend().unwrap(), dir.path())
        .await
        .unwrap();
    let workflows = dir.path().join("workflows");
    std::fs::create_dir(&workflows).unwrap();
    let shipped = std::fs::read_to_string(repo().join("workflows/attributes.yaml")).unwrap();
    // Appended to the `attributes:` list, which the history and derived sections follow.
    let at = shipped
        .find("\nhistory:")
        .expect("the shipped file has a history section");
    let declared = format!(
        "{}\n  - name: data_gb_month\n    type: decimal\n    unit: GB/month\n    min: 0\n    indexed: true\n    description: Mobile data used last month.\n{}",
        &shipped[..at],
        &shipped[at..]
    );
    std::fs::write(workflows.join("attributes.yaml"), &declared).unwrap();
    std::fs::write(workflows.join("t.txt"), "You used {data_gb_month} GB.").unwrap();
    std::fs::write(
        workflows.join("data.yaml"),
        "campaign: data\ntimezone: Asia/Shanghai\naudience:\n  where: \"data_gb_month > 2.5\"\nwaves:\n  - id: sms\n    channel: sms\n    template: t.txt\n    respond_within: 1d\n",
    )
    .unwrap();
    let config = db_config(dir.path(), &db);
    std::fs::write(
        &config,
        format!(
            "{}workflows = {:?}\n",
            std::fs::read_to_string(&config).unwrap(),
            workflows
        ),
    )
    .unwrap();

    // The database predates the attribute: the plan is refused with what to do.
    let o = run(&["plan", "data"], &config);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("no column for attribute(s) data_gb_month: run `campaignd migrate`"),
        "{}",
        text(&o)
    );

    let o = run(&["migrate"], &config);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("added column(s) for: data_gb_month")
            && text(&o).contains("indexed: data_gb_month"),
        "{}",
        text(&o)
    );
    let o = run(&["schema", "--attributes"], &config);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).lines().any(|l| l.starts_with("data_gb_month")
            && l.contains("decimal")
            && l.contains("indexed")
            && l.contains("GB/month")),
        "{}",
        text(&o)
    );
    let o = run(&["plan", "data"], &config);
    assert!(o.status.success(), "{}", text(&o));

    // A type change in place is refused, with the catalogue's reason, and nothing changes.
    std::fs::write(
        workflows.join("attributes.yaml"),
        declared.replace(
            "type: decimal\n    unit: GB/month\n    min: 0",
            "type: text\n    unit: GB/month",
        ),
    )
    .unwrap();
    let o = run(&["migrate"], &config);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("`data_gb_month` is declared text but its column holds decimals"),
        "{}",
        text(&o)
    );
    std::fs::write(workflows.join("attributes.yaml"), &declared).unwrap();
    let o = run(&["plan", "data"], &config);
    assert!(o.status.success(), "{}", text(&o));
}

/// `campaignd why` after a demo run: a responder, a control member and a subscriber a rule
/// left out each get their story, with the number masked and the rule named.
#[test]
fn why_tells_a_subscribers_story_after_a_demo() {
    use sea_orm::ConnectionTrait;
    use store::testing::RawDb as _;

    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("demo");
    let o = bin()
        .current_dir(repo())
        .args([
            "demo",
            "--subscribers",
            "3000",
            "--history-months",
            "0",
            "--day-seconds",
            "0.2",
            "--out",
            out_dir.to_str().unwrap(),
        ])
        .env_remove("CAMPAIGND_DATABASE_URL")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let url = format!("sqlite://{}", out_dir.join("campaignd-demo.db").display());
    let config = dir.path().join("demo.toml");
    std::fs::write(&config, format!("database_url = {url:?}\n")).unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let pick = |sql: &str, col: &str| -> (String, String) {
        rt.block_on(async {
            let store = store::Store::connect(&url, None).await.unwrap();
            let row = store
                .db()
                .query_one_raw(store::stmt(store.db(), sql, []))
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("no row for {sql}"));
            (
                row.try_get::<String>("", "msisdn").unwrap(),
                row.try_get::<String>("", col).unwrap(),
            )
        })
    };
    // The responder's story names the state its contact ended in. Which state that is
    // depends on the demo's compressed clock (a reply can be recorded before its delivery
    // report on a loaded machine), so the test reads it rather than assuming `delivered`.
    let (responder, responder_state) = pick(
        "SELECT s.msisdn, c.state FROM contact c JOIN subscriber s ON s.id = c.subscriber_id \
         WHERE c.arm = 'treatment' AND c.responded_at IS NOT NULL ORDER BY c.id LIMIT 1",
        "state",
    );
    assert!(
        ["delivered", "sent"].contains(&responder_state.as_str()),
        "a responder's contact was sent: {responder_state}"
    );
    let (control, _) = pick(
        "SELECT s.msisdn, c.arm FROM contact c JOIN subscriber s ON s.id = c.subscriber_id \
         WHERE c.arm = 'control' ORDER BY c.id LIMIT 1",
        "arm",
    );
    let (left_out, reason) = rt.block_on(async {
        let store = store::Store::connect(&url, None).await.unwrap();
        let row = store
            .db()
            .query_one_raw(store::stmt(
                store.db(),
                "SELECT s.msisdn, d.reason FROM decision d JOIN subscriber s ON s.id = d.subscriber_id \
                 WHERE d.reason <> 'control_group' ORDER BY d.id LIMIT 1",
                [],
            ))
            .await
            .unwrap()
            .expect("the demo leaves somebody out");
        (
            row.try_get::<String>("", "msisdn").unwrap(),
            row.try_get::<String>("", "reason").unwrap(),
        )
    });

    for (msisdn, expected) in [
        (
            &responder,
            format!("contacted by sms (marketing): {responder_state}"),
        ),
        (
            &control,
            "held out (control group), not contacted".to_owned(),
        ),
        (&left_out, format!("left out by {reason}")),
    ] {
        let o = run(&["why", msisdn, "autumn-enrollment"], &config);
        let out = text(&o);
        assert!(o.status.success(), "{out}");
        assert!(out.contains(&expected), "{expected} not in:\n{out}");
        assert!(
            out.contains("autumn-enrollment run 1 wave sms_offer"),
            "{out}"
        );
        assert!(
            !out.contains(msisdn.as_str()),
            "the number is masked:\n{out}"
        );
    }
    let o = run(&["why", &responder], &config);
    assert!(text(&o).contains(", responded "), "{}", text(&o));

    let o = run(&["why", "13999999999"], &config);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("no subscriber 139****9999"),
        "{}",
        text(&o)
    );
}

/// `campaignd holdout` audits what the planner drew: after the demo's run, the control group
/// it reports is the campaign's holdout for the year, and another period holds nobody.
#[test]
fn holdout_lists_the_control_members_a_run_drew() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let o = bin()
        .current_dir(repo())
        .args(["demo", "--subscribers", "2000", "--history-months", "0"])
        .args(["--day-seconds", "1", "--out", out.to_str().unwrap()])
        .env_remove("CAMPAIGND_CONFIG")
        .env_remove("CAMPAIGND_DATABASE_URL")
        .output()
        .unwrap();
    let demo = text(&o);
    assert!(o.status.success(), "{demo}");
    let control: u64 = demo
        .lines()
        .find_map(|l| l.trim().strip_prefix("control group"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no control group count in {demo}"));
    assert!(control > 0, "{demo}");

    let url = format!("sqlite://{}", out.join("campaignd-demo.db").display());
    let holdout = |extra: &[&str]| {
        let o = bin()
            .args(["--database-url", &url, "holdout", "autumn-enrollment"])
            .args(extra)
            .env_remove("CAMPAIGND_CONFIG")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        text(&o)
    };
    let listed = holdout(&[]);
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 1, "{listed}");
    assert!(lines[0].starts_with("2026 "), "{listed}");
    assert!(
        lines[0].contains(&format!(" {control} members")),
        "{listed}"
    );
    assert!(
        holdout(&["--period", "2025"]).contains("autumn-enrollment holds nobody out"),
        "{listed}"
    );
}

/// The programmes of DOMAIN.md as shipped in `workflows/`: every campaign validates and, over
/// a synthetic base with a year of history and events, its first wave reaches somebody; the
/// campaigns on a monitor's alerts do once `campaignd monitor` has evaluated it, and those on
/// an event trigger once the event is recorded. Plans are
/// judged on a date inside each campaign's season (`plan` ignores the schedule).
#[tokio::test]
async fn every_shipped_programme_plans_against_the_demo_base() {
    let dir = tempfile::tempdir().unwrap();
    let db = store::testing::fresh_database(store::testing::backend().unwrap(), dir.path())
        .await
        .unwrap();
    let config = db_config(dir.path(), &db);
    std::fs::write(
        &config,
        format!(
            "{}workflows = {:?}\n",
            std::fs::read_to_string(&config).unwrap(),
            repo().join("workflows")
        ),
    )
    .unwrap();
    let o = run(&["migrate"], &config);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(
        &[
            "generate-base",
            "--subscribers",
            "4000",
            "--history-months",
            "12",
        ],
        &config,
    );
    assert!(o.status.success(), "{}", text(&o));
    for monitor in ["core-anomaly", "student-churn"] {
        let o = run(&["monitor", monitor], &config);
        assert!(o.status.success(), "{}", text(&o));
        assert!(
            text(&o).contains(" alerts opened") && !text(&o).contains(" 0 alerts opened"),
            "{monitor} opened no alert: {}",
            text(&o)
        );
    }
    let (campaigns, diags) = spec::load_dir(&repo().join("workflows"));
    assert!(diags.is_empty(), "{diags:#?}");
    assert!(campaigns.len() >= 8, "{} campaigns", campaigns.len());
    // An event trigger lets in who had the event lately: give everyone one, an hour ago.
    let store = db.connect().await.unwrap();
    let now = store::wall_now();
    let everyone = store
        .plan_reader()
        .subscriber_ids(sea_orm::sea_query::Condition::all())
        .await
        .unwrap();
    for wf in &campaigns {
        if let Some(spec::Trigger::Event { kind, .. }) = &wf.trigger {
            let events: Vec<_> = everyone
                .iter()
                .map(|&id| store::events::NewEvent {
                    subscriber_id: id,
                    kind: kind.clone(),
                    at: now - 3_600_000,
                    value: None,
                    detail: None,
                    source: store::events::EventSource::Api,
                    received_at: now,
                })
                .collect();
            store.record_events(&events).await.unwrap();
        }
    }
    for wf in &campaigns {
        let o = run(&["plan", &wf.campaign], &config);
        assert!(o.status.success(), "{}: {}", wf.campaign, text(&o));
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let to_contact: u64 = out
            .lines()
            .find_map(|l| l.trim().strip_prefix("to contact"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("{}: no `to contact` line in {out}", wf.campaign));
        assert!(to_contact > 0, "{} reaches nobody:\n{out}", wf.campaign);
    }
}

/// The shipped workflow files (campaigns only).
fn shipped_workflows() -> Vec<PathBuf> {
    let (campaigns, diags) = spec::load_dir(&repo().join("workflows"));
    assert!(diags.is_empty(), "{diags:#?}");
    campaigns
        .iter()
        .map(|w| PathBuf::from(&w.bundle.path))
        .collect()
}

/// `campaignd demo --workflow W` runs each shipped programme end to end on its own: a run
/// that plans somebody (a monitor's alerts evaluated first where the audience needs them),
/// through its waves to the evaluation.
#[test]
fn every_shipped_programme_runs_end_to_end_in_the_demo() {
    let dir = tempfile::tempdir().unwrap();
    for wf in shipped_workflows() {
        let name = wf.file_stem().unwrap().to_string_lossy().into_owned();
        let o = bin()
            .current_dir(repo())
            .args(["demo", "--workflow"])
            .arg(&wf)
            .args([
                "--subscribers",
                "3000",
                "--history-months",
                "12",
                "--day-seconds",
                "0.3",
                "--out",
            ])
            .arg(dir.path().join(&name))
            .env_remove("CAMPAIGND_DATABASE_URL")
            .output()
            .unwrap();
        assert!(o.status.success(), "{name}: {}", text(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        let planned: u64 = out
            .lines()
            .find_map(|l| {
                let (_, rest) = l.split_once(" planned (")?;
                rest.split_once("): ")?
                    .1
                    .split_once(" to contact")?
                    .0
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("{name}: no first wave planned in {out}"));
        assert!(planned > 0, "{name} planned nobody:\n{out}");
        assert!(out.contains("Verdict"), "{name}: no evaluation in {out}");
    }
}

/// `campaignd demo --days N` with several programmes: each runs on its own schedule from
/// `--start` (a season slot before it is not run), and the summary has a row per campaign.
/// The cap's and arbitration's counts depend on which slots share a day, so they are shown,
/// not asserted here (`engine` `tests/arbitration.rs` asserts them).
#[test]
fn a_season_of_several_programmes_runs_each_on_its_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = bin();
    cmd.current_dir(repo()).arg("demo");
    for wf in shipped_workflows() {
        cmd.arg("--workflow").arg(wf);
    }
    let o = cmd
        .args([
            "--days",
            "7",
            "--subscribers",
            "3000",
            "--history-months",
            "12",
            "--day-seconds",
            "1",
            "--out",
        ])
        .arg(dir.path().join("season"))
        .env_remove("CAMPAIGND_DATABASE_URL")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let row = |campaign: &str| -> Vec<String> {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(campaign))
            .unwrap_or_else(|| panic!("no summary row for {campaign}: {out}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    // Weekly or daily in the week from Monday 2026-09-07: each ran (once; later slots met
    // its open run).
    for campaign in [
        "autumn-enrollment",
        "youth-brand-upgrade",
        "student-retention",
    ] {
        assert_eq!(row(campaign)[1], "1", "{campaign}: {out}");
    }
    // Out of season in September, or not due that week: no run.
    for campaign in [
        "holiday-balance-care",
        "graduate-relocation",
        "vip-club",
        "core-retention",
    ] {
        assert_eq!(row(campaign)[1], "0", "{campaign}: {out}");
    }
    assert!(out.contains("out_of_season"), "{out}");
}

/// `report` takes a run id, or with `--by-season` a campaign id; each mistake is named.
#[tokio::test]
async fn report_by_season_names_a_campaign_and_says_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let db = store::testing::fresh_database(store::testing::backend().unwrap(), dir.path())
        .await
        .unwrap();
    let config = db_config(dir.path(), &db);
    let o = run(&["migrate"], &config);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&["report", "core-retention"], &config);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("`core-retention` is not a run id"),
        "{}",
        text(&o)
    );
    let o = run(&["report", "core-retention", "--by-season"], &config);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("campaign `core-retention` has no stored version"),
        "{}",
        text(&o)
    );
}
