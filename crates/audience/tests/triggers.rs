//! Triggered entry (`trigger:`): a run's first wave plans over the subscribers its gather let
//! in, and no further. An event enters its subscriber once however many gathers see it, and
//! only while it is recent; a condition enters a subscriber once per episode (again only
//! after a gather found it false). Entry rules, control and the cap apply on top, as for
//! scheduled runs. Runs on SQLite, or on PostgreSQL with `CAMPAIGND_TEST_BACKEND=postgres`.

use store::Store;
use store::events::{EventSource, NewEvent};
use store::runs::NewRun;
use store::subscribers::OnDuplicate;

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

const NOW: i64 = 1_789_000_000_000;
const HOUR: i64 = 3_600_000;

fn workflow(dir: &std::path::Path, trigger: &str, extra: &str) -> Res<spec::Workflow> {
    std::fs::create_dir_all(dir.join("templates"))?;
    std::fs::write(
        dir.join("segments.yaml"),
        "segments:\n  students:\n    where: \"student_stage in ['freshman', 'student']\"\n",
    )?;
    std::fs::write(dir.join("templates/care.txt"), "{name}: top up")?;
    let path = dir.join("care.yaml");
    std::fs::write(
        &path,
        format!(
            "campaign: care\ntimezone: Asia/Shanghai\nschedule:\n  cron: \"0 */15 * * * *\"\n\
             trigger: {trigger}\naudience:\n  segment: students\n{extra}\
             waves:\n  - id: sms\n    channel: sms\n    template: templates/care.txt\n    \
             respond_within: 1d\n"
        ),
    )?;
    spec::load_file(&path).map_err(|d| format!("{d:?}").into())
}

/// `n` freshmen with balance 10, and one graduate (outside the audience): their ids.
async fn base(store: &Store, n: usize) -> Res<Vec<i64>> {
    let mut rows: Vec<_> = (0..n)
        .map(|i| store::testing::subscriber(&format!("1390000{i:04}")))
        .collect();
    rows.push(store::testing::subscriber("13900009999").with("student_stage", "graduate"));
    store
        .insert_subscribers(&rows, OnDuplicate::Fail, 0)
        .await?;
    let mut ids = Vec::new();
    for r in &rows {
        ids.push(
            store
                .subscriber_by_msisdn(&r.msisdn)
                .await?
                .ok_or("missing")?,
        );
    }
    Ok(ids)
}

async fn set_balance(store: &Store, i: usize, balance: f64) -> Res {
    let row = store::testing::subscriber(&format!("1390000{i:04}")).with("balance", balance);
    store
        .insert_subscribers(&[row], OnDuplicate::Update, 0)
        .await?;
    Ok(())
}

/// Starts a run and plans its first wave at `now`: who it planned (treated or control),
/// sorted, and the funnel.
async fn gather_run(
    store: &Store,
    wf: &spec::Workflow,
    now: i64,
) -> Res<(Vec<i64>, audience::Funnel)> {
    let vid = store
        .upsert_version(&wf.campaign, &wf.hash, &wf.bundle.to_json(), 0)
        .await?;
    let run = store
        .start_run(NewRun {
            campaign: &wf.campaign,
            version_id: vid,
            slot_at: Some(now),
            trigger: "schedule",
            waves: &[("sms".to_owned(), "sms".to_owned())],
            now,
        })
        .await?
        .ok_or("no run")?;
    let wave_run = store.wave_runs(run).await?[0].id;
    let summary = audience::plan_wave(
        store,
        audience::PlanInput {
            workflow: wf,
            wave: &wf.waves[0],
            run_id: run,
            wave_run_id: wave_run,
            previous_wave_run_id: None,
            now,
            global_holdout: None,
            arbitration: None,
        },
    )
    .await?;
    let mut ids: Vec<i64> = store
        .contact_states(wave_run)
        .await?
        .into_iter()
        .map(|(s, _, _)| s)
        .collect();
    ids.sort_unstable();
    Ok((ids, summary.funnel))
}

fn stage(funnel: &audience::Funnel, name: &str) -> Option<u64> {
    funnel.iter().find(|(s, _)| s == name).map(|(_, n)| *n)
}

#[tokio::test]
async fn a_condition_enters_each_subscriber_once_per_episode() -> Res {
    let dir = tempfile::tempdir()?;
    let wf = workflow(dir.path(), "{ when: \"balance < 5\" }", "")?;
    let db = tempfile::tempdir()?;
    let store = store::testing::fresh_store(db.path()).await?;
    let ids = base(&store, 4).await?;

    // Nobody is low: nothing pending, and a run would plan nobody.
    assert_eq!(
        audience::pending_trigger_entrants(&store, &wf, NOW).await?,
        0
    );

    // Two freshmen and the graduate run low: the two (in the audience) are pending and enter.
    for i in [0, 1] {
        set_balance(&store, i, 2.0).await?;
    }
    let grad = store::testing::subscriber("13900009999")
        .with("student_stage", "graduate")
        .with("balance", 1.0);
    store
        .insert_subscribers(&[grad], OnDuplicate::Update, 0)
        .await?;
    assert_eq!(
        audience::pending_trigger_entrants(&store, &wf, NOW).await?,
        2
    );
    let preview = audience::preview(&store, &wf, None, NOW).await?;
    assert_eq!(stage(&preview, "trigger:when"), Some(2), "{preview:?}");
    let (planned, funnel) = gather_run(&store, &wf, NOW).await?;
    assert_eq!(planned, vec![ids[0], ids[1]], "{funnel:?}");
    assert_eq!(stage(&funnel, "trigger:when"), Some(2), "{funnel:?}");

    // Still low a slot later: the episode is open, nobody enters again.
    assert_eq!(
        audience::pending_trigger_entrants(&store, &wf, NOW + HOUR).await?,
        0
    );
    let (planned, _) = gather_run(&store, &wf, NOW + HOUR).await?;
    assert!(planned.is_empty(), "{planned:?}");

    // Subscriber 0 tops up; a slot with nobody new to let in still closes the episode.
    set_balance(&store, 0, 30.0).await?;
    assert_eq!(
        audience::pending_trigger_entrants(&store, &wf, NOW + 2 * HOUR).await?,
        0
    );
    // Low again: a new episode, a new entry; subscriber 1's episode never closed.
    set_balance(&store, 0, 1.0).await?;
    set_balance(&store, 2, 1.0).await?;
    let (planned, _) = gather_run(&store, &wf, NOW + 3 * HOUR).await?;
    assert_eq!(planned, vec![ids[0], ids[2]]);
    Ok(())
}

#[tokio::test]
async fn an_event_enters_its_subscriber_once_while_it_is_recent() -> Res {
    let dir = tempfile::tempdir()?;
    let wf = workflow(
        dir.path(),
        "{ event: complaint, within: 2h }",
        "control: { share: 0.5, hold: run }\n",
    )?;
    let db = tempfile::tempdir()?;
    let store = store::testing::fresh_store(db.path()).await?;
    let ids = base(&store, 6).await?;
    let complaint = |i: usize, at: i64| NewEvent {
        subscriber_id: ids[i],
        kind: "complaint".into(),
        at,
        value: None,
        detail: None,
        source: EventSource::Api,
        received_at: at,
    };
    store
        .record_events(&[
            // In the window: 0, 1 (twice), 2, 3, and the graduate (not in the audience).
            complaint(0, NOW - HOUR),
            complaint(1, NOW - HOUR),
            complaint(1, NOW - 30 * 60_000),
            complaint(2, NOW - 10 * 60_000),
            complaint(3, NOW - 60_000),
            complaint(6, NOW - 60_000),
            // Too old for `within: 2h`, and a top-up, which is not the trigger.
            complaint(4, NOW - 3 * HOUR),
            NewEvent {
                kind: "top_up".into(),
                ..complaint(5, NOW - HOUR)
            },
        ])
        .await?;
    assert_eq!(
        audience::pending_trigger_entrants(&store, &wf, NOW).await?,
        4
    );
    let (planned, funnel) = gather_run(&store, &wf, NOW).await?;
    assert_eq!(planned, vec![ids[0], ids[1], ids[2], ids[3]], "{funnel:?}");
    // Control applies to triggered entrants as to any: half of four held out.
    assert_eq!(stage(&funnel, "control"), Some(2), "{funnel:?}");

    // The same events seen by the next gather enter nobody; a new complaint enters its
    // subscriber, even one who entered before.
    assert_eq!(
        audience::pending_trigger_entrants(&store, &wf, NOW + HOUR / 4).await?,
        0
    );
    store.record_events(&[complaint(0, NOW + HOUR / 8)]).await?;
    let (planned, funnel) = gather_run(&store, &wf, NOW + HOUR / 4).await?;
    assert_eq!(planned, vec![ids[0]], "{funnel:?}");
    assert_eq!(
        stage(&funnel, "trigger:event:complaint"),
        Some(1),
        "{funnel:?}"
    );
    Ok(())
}

#[test]
fn trigger_mistakes_are_located() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("{ event: complaint, when: \"balance < 5\" }", "not both"),
        ("{ event: \"Complaint!\" }", "event type"),
        (
            "{ when: \"balance < 5\", within: 1d }",
            "`within` goes with `event`",
        ),
        ("{ event: complaint, within: 90d }", "at most 30d"),
        ("{ when: \"balanse < 5\" }", "balanse"),
        ("{ within: 1d }", "`within` without `event`"),
        ("{}", "`trigger` needs `event: TYPE` or `when: CONDITION`"),
    ];
    for (trigger, text) in cases {
        let err = workflow(dir.path(), trigger, "").unwrap_err().to_string();
        assert!(err.contains(text), "{trigger}: {err}");
        assert!(
            err.contains("line: 5"),
            "{trigger} located on the trigger line: {err}"
        );
    }
    // A trigger's runs overlap by nature.
    let path = dir.path().join("care.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("trigger: {}", "trigger: { event: complaint }");
    std::fs::write(
        &path,
        text.replace(
            "  cron: \"0 */15 * * * *\"\n",
            "  cron: \"0 */15 * * * *\"\n  overlap: skip\n",
        ),
    )
    .unwrap();
    let err = format!("{:?}", spec::load_file(&path).unwrap_err());
    assert!(err.contains("overlap by nature"), "{err}");
    // And it needs a schedule to be gathered at.
    std::fs::write(
        &path,
        "campaign: care\ntimezone: Asia/Shanghai\ntrigger: { event: complaint }\naudience:\n  segment: students\nwaves:\n  - id: sms\n    channel: sms\n    template: templates/care.txt\n    respond_within: 1d\n",
    )
    .unwrap();
    let err = format!("{:?}", spec::load_file(&path).unwrap_err());
    assert!(err.contains("add `schedule.cron`"), "{err}");
}
