//! Planning rules that must survive refactoring: each test names the line it guards and
//! fails when that line is deleted. Runs on SQLite, or on PostgreSQL with
//! `CAMPAIGND_TEST_BACKEND=postgres`; `_on_postgres` tests are about PostgreSQL alone.

use std::time::Duration;

use sea_orm::{ConnectionTrait, TransactionTrait};
use store::Store;
use store::contacts::{Arm, ClaimRequest, NewContact, Outcome, insert_contacts};
use store::runs::NewRun;
use store::subscribers::OnDuplicate;
use store::testing::RawDb as _;
use store::testing::{Backend, fresh_database};

const NOW: i64 = 1_789_000_000_000;
const DAY: i64 = 86_400_000;

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

const CAPPED: &str = r#"
campaign: capped
timezone: Asia/Shanghai
audience:
  segment: students
policy:
  max_contacts: { count: 1, per: 7d }
waves:
  - id: sms_offer
    channel: sms
    template: templates/offer.txt
    respond_within: 1d
"#;

fn workflow(dir: &std::path::Path) -> Res<spec::Workflow> {
    std::fs::create_dir_all(dir.join("templates"))?;
    std::fs::write(
        dir.join("segments.yaml"),
        "segments:\n  students:\n    where: \"student_stage in ['freshman', 'student']\"\n",
    )?;
    std::fs::write(dir.join("templates/offer.txt"), "{name}: reply 1")?;
    let path = dir.join("capped.yaml");
    std::fs::write(&path, CAPPED)?;
    spec::load_file(&path).map_err(|d| format!("{d:?}").into())
}

async fn subscribers(store: &Store, n: usize) -> Res<Vec<i64>> {
    let rows: Vec<_> = (0..n)
        .map(|i| store::testing::subscriber(&format!("1380000{i:04}")))
        .collect();
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

/// A run of `wf` with its one wave pending: (run id, wave run id).
async fn run_of(store: &Store, wf: &spec::Workflow) -> Res<(i64, i64)> {
    let vid = store
        .upsert_version(&wf.campaign, &wf.hash, &wf.bundle.to_json(), 0)
        .await?;
    let run = store
        .start_run(NewRun {
            campaign: &wf.campaign,
            version_id: vid,
            slot_at: None,
            trigger: "test",
            waves: &[("sms_offer".to_owned(), "sms".to_owned())],
            now: 0,
        })
        .await?
        .ok_or("no run")?;
    Ok((run, store.wave_runs(run).await?[0].id))
}

/// A run of another campaign `name` with one SMS wave `w`: (run id, wave run id).
async fn other_run(store: &Store, name: &str) -> Res<(i64, i64)> {
    let version = store.upsert_version(name, "h", "{}", 0).await?;
    let run = store
        .start_run(NewRun {
            campaign: name,
            version_id: version,
            slot_at: None,
            trigger: "test",
            waves: &[("w".to_owned(), "sms".to_owned())],
            now: 0,
        })
        .await?
        .ok_or("no run")?;
    Ok((run, store.wave_runs(run).await?[0].id))
}

async fn plan(store: &Store, wf: &spec::Workflow, run: (i64, i64)) -> Res<audience::PlanSummary> {
    plan_first_wave(store, wf, run, NOW).await
}

/// Plans the first wave of `run` at `now`.
async fn plan_first_wave(
    store: &Store,
    wf: &spec::Workflow,
    run: (i64, i64),
    now: i64,
) -> Res<audience::PlanSummary> {
    plan_with_global(store, wf, run, now, None).await
}

/// Plans the first wave of `run` at `now` under a global holdout.
async fn plan_with_global(
    store: &Store,
    wf: &spec::Workflow,
    run: (i64, i64),
    now: i64,
    global_holdout: Option<&audience::GlobalHoldout>,
) -> Res<audience::PlanSummary> {
    Ok(audience::plan_wave(
        store,
        audience::PlanInput {
            workflow: wf,
            wave: &wf.waves[0],
            run_id: run.0,
            wave_run_id: run.1,
            previous_wave_run_id: None,
            now,
            global_holdout,
            arbitration: None,
        },
    )
    .await?)
}

/// Guards the global holdout in `plan::compute`: its members are in no marketing wave of any
/// campaign, each with a `global_holdout` decision; they are recorded (scope `@global`), so a
/// share lowered later keeps them; care still reaches them.
#[tokio::test]
async fn the_global_holdout_is_never_in_a_marketing_wave_and_stays_recorded() -> Res {
    let dir = tempfile::tempdir()?;
    let store = store::testing::fresh_store(dir.path()).await?;
    let subs = subscribers(&store, 400).await?;
    let g = audience::GlobalHoldout::new(0.1, "gh-2026")?;
    let members: std::collections::BTreeSet<i64> =
        subs.iter().copied().filter(|id| g.draws(*id)).collect();
    assert!(
        members.len() > 15 && members.len() < 70,
        "{}",
        members.len()
    );

    let targeted = |run: (i64, i64)| {
        let store = store.clone();
        async move {
            Ok::<_, Box<dyn std::error::Error>>(
                store
                    .contact_states(run.1)
                    .await?
                    .into_iter()
                    .map(|(id, _, _)| id)
                    .collect::<std::collections::BTreeSet<i64>>(),
            )
        }
    };
    let wf = workflow(dir.path())?;
    let run = run_of(&store, &wf).await?;
    let summary = plan_with_global(&store, &wf, run, NOW, Some(&g)).await?;
    let got = targeted(run).await?;
    assert!(got.is_disjoint(&members), "{:?}", summary.funnel);
    assert_eq!(
        got.len() + members.len(),
        subs.len(),
        "{:?}",
        summary.funnel
    );
    assert!(
        summary
            .funnel
            .contains(&("global_holdout".to_owned(), members.len() as u64))
    );
    let decided = store
        .db()
        .query_all_raw(store::stmt(
            store.db(),
            "SELECT COUNT(*) AS n FROM decision WHERE reason = 'global_holdout'",
            [],
        ))
        .await?[0]
        .try_get::<i64>("", "n")?;
    assert_eq!(decided, members.len() as i64);
    let periods = store.holdout_periods(audience::GLOBAL_SCOPE, None).await?;
    assert_eq!(periods.len(), 1, "{periods:?}");
    assert_eq!(
        (periods[0].period.as_str(), periods[0].members),
        ("gh-2026", members.len() as u64)
    );

    // Another marketing campaign, a week later, with the share lowered: the recorded
    // members stay out.
    let other_dir = dir.path().join("other");
    let other = workflow_text(
        &other_dir,
        &CAPPED.replace("campaign: capped", "campaign: other"),
    )?;
    let run = run_of(&store, &other).await?;
    let lower = audience::GlobalHoldout::new(0.02, "gh-2026")?;
    plan_with_global(&store, &other, run, NOW + 8 * DAY, Some(&lower)).await?;
    let got = targeted(run).await?;
    assert!(got.is_disjoint(&members));
    assert_eq!(got.len() + members.len(), subs.len());

    // Care is not marketing: the holdout does not apply.
    let care_dir = dir.path().join("care");
    let care = workflow_text(
        &care_dir,
        &CAPPED
            .replace("campaign: capped", "campaign: care\npurpose: care")
            .replace("policy:\n  max_contacts: { count: 1, per: 7d }\n", ""),
    )?;
    let run = run_of(&store, &care).await?;
    plan_with_global(&store, &care, run, NOW + 9 * DAY, Some(&g)).await?;
    assert_eq!(targeted(run).await?.len(), subs.len());
    Ok(())
}

/// Guards `'undelivered'` in the states `contacts::recent_contact_campaigns` counts: a message
/// reported undelivered was sent (the handset was off, the inbox full) and may still
/// arrive, so it uses up the subscriber's contacts for the period like a delivered one.
#[tokio::test]
async fn an_undelivered_contact_counts_toward_the_frequency_cap() -> Res {
    let dir = tempfile::tempdir()?;
    let store = store::testing::fresh_store(dir.path()).await?;
    let subs = subscribers(&store, 2).await?;
    // Another campaign sent subscriber 0 a message yesterday; the report said undelivered.
    let (other, other_wave) = other_run(&store, "other").await?;
    let tx = store.db().begin().await?;
    let yesterday = NOW - DAY;
    let row = NewContact {
        subscriber_id: subs[0],
        arm: Arm::Treatment,
        due_at: yesterday,
        send_by: None,
        stratum: "x".into(),
        variant: None,
        route: None,
    };
    insert_contacts(
        &tx,
        &store::contacts::WaveContacts {
            run_id: other,
            wave_run_id: other_wave,
            wave: "w",
            channel: "sms",
            purpose: store::contacts::Purpose::Marketing,
            at_most_once: false,
        },
        &[row],
    )
    .await?;
    tx.commit().await?;
    let claimed = store
        .claim(&ClaimRequest {
            channel: "sms",
            limit: 10,
            lease_until: yesterday + 60_000,
            token: "t",
            now: yesterday,
            proof_grace: 0,
        })
        .await?;
    assert_eq!(claimed.len(), 1);
    store
        .settle(
            "t",
            &[(claimed[0].id, Outcome::Sent { at: yesterday })],
            yesterday,
        )
        .await?;
    let contact = store
        .contact_by_key(
            &store
                .contact_key(other, "w", subs[0])
                .await?
                .ok_or("no key")?,
        )
        .await?
        .ok_or("no contact")?;
    assert!(
        store
            .record_delivery(contact.id, false, yesterday + 1, Some("absent"))
            .await?
    );

    let wf = workflow(&dir.path().join("wf"))?;
    let run = run_of(&store, &wf).await?;
    let summary = plan(&store, &wf, run).await?;
    assert!(
        summary.funnel.contains(&("frequency_cap".to_owned(), 1)),
        "{:?}",
        summary.funnel
    );
    let targeted: Vec<i64> = store
        .contact_states(run.1)
        .await?
        .into_iter()
        .map(|(s, _, _)| s)
        .collect();
    assert_eq!(targeted, vec![subs[1]]);
    Ok(())
}

/// Guards the per-schema advisory-lock key (`audience::PLANNER_LOCK`, used by `plan_wave`):
/// planners in one schema serialize (a planner waits while another holds the lock), but a
/// planner in another schema (a tenant, a parallel test) does not wait for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_planner_lock_is_per_schema_on_postgres() -> Res {
    let dir = tempfile::tempdir()?;
    let a = fresh_database(Backend::Postgres, dir.path())
        .await?
        .connect()
        .await?;
    let b = fresh_database(Backend::Postgres, dir.path())
        .await?
        .connect()
        .await?;
    for s in [&a, &b] {
        s.migrate().await?;
        subscribers(s, 3).await?;
    }
    let wf = workflow(&dir.path().join("wf"))?;
    let run_a = run_of(&a, &wf).await?;
    let run_b = run_of(&b, &wf).await?;

    // Schema a's planner lock, held as a planner in a would hold it.
    let holder = a.db().begin().await?;
    holder
        .execute_unprepared(&format!(
            "SELECT pg_advisory_xact_lock({})",
            audience::PLANNER_LOCK
        ))
        .await?;
    let holder_pid: i32 = holder
        .query_one_raw(store::stmt(&holder, "SELECT pg_backend_pid() AS pid", []))
        .await?
        .ok_or("no pid")?
        .try_get("", "pid")?;

    // A planner in schema b is not held up by it (a shared key would block it for ever).
    let planned_b = tokio::time::timeout(Duration::from_secs(60), plan(&b, &wf, run_b)).await;
    assert!(
        planned_b.is_ok_and(|r| r.is_ok_and(|s| s.opened)),
        "a planner in another schema waited for this schema's lock"
    );

    // A planner in schema a waits for the same lock: its request shows in pg_locks, not
    // granted, on the key the holder holds.
    let (wf2, a2) = (wf.clone(), a.clone());
    let planner_a =
        tokio::spawn(async move { plan(&a2, &wf2, run_a).await.map_err(|e| e.to_string()) });
    let waiting = "SELECT COUNT(*) AS n FROM pg_locks w JOIN pg_locks h \
         ON h.locktype = 'advisory' AND h.granted AND h.pid = ? \
         AND w.classid = h.classid AND w.objid = h.objid AND w.objsubid = h.objsubid \
         WHERE w.locktype = 'advisory' AND NOT w.granted";
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let row = b
            .db()
            .query_one_raw(store::stmt(b.db(), waiting, [holder_pid.into()]))
            .await?
            .ok_or("no row")?;
        if row.try_get::<i64>("", "n")? > 0 {
            break;
        }
        assert!(
            !planner_a.is_finished(),
            "a planner in the same schema did not wait for the planner lock"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "no planner waited for the lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    holder.commit().await?;
    let summary = planner_a.await??;
    assert!(summary.opened);
    Ok(())
}

/// Guards the purpose rules: `marketing &&` before the opt-out check and the cap in
/// `plan::compute`, and `purpose = 'marketing'` in `contacts::recent_contact_campaigns`. A
/// marketing campaign leaves out the opted-out and the capped, and a care message does not
/// use up anyone's cap; a care campaign reaches the opted-out (it is service they are owed).
#[tokio::test]
async fn opt_out_and_cap_govern_marketing_and_care_uses_no_cap() -> Res {
    let dir = tempfile::tempdir()?;
    let store = store::testing::fresh_store(dir.path()).await?;
    let subs = subscribers(&store, 3).await?;
    store.set_opt_out(subs[0], NOW - DAY).await?;
    // Yesterday a care campaign reached subscriber 1 and a marketing one subscriber 2.
    for (i, purpose) in [
        (1, store::contacts::Purpose::Care),
        (2, store::contacts::Purpose::Marketing),
    ] {
        let name = format!("earlier-{}", purpose.as_str());
        let (run, wave_run_id) = other_run(&store, &name).await?;
        let tx = store.db().begin().await?;
        let row = NewContact {
            subscriber_id: subs[i],
            arm: Arm::Treatment,
            due_at: NOW - DAY,
            send_by: None,
            stratum: "x".into(),
            variant: None,
            route: None,
        };
        let to = store::contacts::WaveContacts {
            run_id: run,
            wave_run_id,
            wave: "w",
            channel: "sms",
            purpose,
            at_most_once: false,
        };
        insert_contacts(&tx, &to, &[row]).await?;
        tx.commit().await?;
    }
    let targeted = |run: (i64, i64)| {
        let store = store.clone();
        async move {
            let mut ids: Vec<i64> = store
                .contact_states(run.1)
                .await?
                .into_iter()
                .map(|(s, _, _)| s)
                .collect::<Vec<_>>();
            ids.sort_unstable();
            Ok::<_, Box<dyn std::error::Error>>(ids)
        }
    };

    let marketing = workflow(&dir.path().join("marketing"))?;
    assert_eq!(marketing.purpose, store::contacts::Purpose::Marketing);
    let run = run_of(&store, &marketing).await?;
    let summary = plan(&store, &marketing, run).await?;
    assert_eq!(targeted(run).await?, vec![subs[1]], "{:?}", summary.funnel);
    for stage in [("opt_out", 1), ("frequency_cap", 1)] {
        assert!(
            summary.funnel.contains(&(stage.0.to_owned(), stage.1)),
            "{:?}",
            summary.funnel
        );
    }

    let care_dir = dir.path().join("care");
    workflow(&care_dir)?;
    let care_file = care_dir.join("capped.yaml");
    std::fs::write(
        &care_file,
        CAPPED
            .replace("campaign: capped", "campaign: care\npurpose: care")
            .replace("policy:\n  max_contacts: { count: 1, per: 7d }\n", ""),
    )?;
    let care = spec::load_file(&care_file).map_err(|d| format!("{d:?}"))?;
    assert_eq!(care.purpose, store::contacts::Purpose::Care);
    let run = run_of(&store, &care).await?;
    let summary = plan(&store, &care, run).await?;
    assert_eq!(targeted(run).await?, subs, "{:?}", summary.funnel);
    assert!(
        !summary.funnel.iter().any(|(stage, _)| stage == "opt_out"),
        "{:?}",
        summary.funnel
    );
    Ok(())
}

fn workflow_text(dir: &std::path::Path, text: &str) -> Res<spec::Workflow> {
    workflow(dir)?;
    let path = dir.join("capped.yaml");
    std::fs::write(&path, text)?;
    spec::load_file(&path).map_err(|d| format!("{d:?}").into())
}

async fn plan_at(
    store: &Store,
    wf: &spec::Workflow,
    now: i64,
) -> Res<(Vec<i64>, audience::Funnel)> {
    let run = run_of(store, wf).await?;
    let summary = plan_first_wave(store, wf, run, now).await?;
    let mut ids: Vec<i64> = store
        .contact_states(run.1)
        .await?
        .into_iter()
        .map(|(s, _, _)| s)
        .collect();
    ids.sort_unstable();
    Ok((ids, summary.funnel))
}

/// Noon in Shanghai on a day, as Unix milliseconds.
fn noon(y: i32, m: u32, d: u32) -> i64 {
    chrono::NaiveDate::from_ymd_opt(y, m, d)
        .and_then(|d| d.and_hms_opt(4, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
        .expect("a real day")
}

/// Guards the season start `entry_since` takes from the schedule's windows: with
/// `once_per: season` over calendar periods, a subscriber enters once per occurrence (a day
/// between two belongs to the one just ended) and again in the next.
#[tokio::test]
async fn once_per_season_counts_each_window_occurrence() -> Res {
    let dir = tempfile::tempdir()?;
    let cal = dir.path().join("wf/calendars/campus");
    std::fs::create_dir_all(&cal)?;
    std::fs::write(
        cal.join("periods.yaml"),
        "periods:\n  winter-vacation:\n    - { from: 2026-01-24, to: 2026-03-01 }\n  summer-vacation:\n    - { from: 2026-07-04, to: 2026-08-30 }\n",
    )?;
    let base = CAPPED.replace("policy:\n  max_contacts: { count: 1, per: 7d }\n", "");
    let text = base.replace(
        "timezone: Asia/Shanghai\n",
        "timezone: Asia/Shanghai\nschedule:\n  cron: \"0 0 12 * * *\"\n  windows:\n    - { period: campus/winter-vacation }\n    - { period: campus/summer-vacation }\n",
    ) + "entry: { once_per: season }\n";
    let wf = workflow_text(&dir.path().join("wf"), &text)?;
    let db = tempfile::tempdir()?;
    let store = store::testing::fresh_store(db.path()).await?;
    let subs = subscribers(&store, 3).await?;
    assert_eq!(plan_at(&store, &wf, noon(2026, 2, 2)).await?.0, subs);
    // The same vacation, and the spring after it: still that season.
    for day in [noon(2026, 2, 20), noon(2026, 5, 1)] {
        let (ids, funnel) = plan_at(&store, &wf, day).await?;
        assert_eq!(ids, Vec::<i64>::new(), "{funnel:?}");
        assert_eq!(stage(&funnel, "entry:entered"), Some(3), "{funnel:?}");
    }
    // The summer vacation is a season of its own.
    assert_eq!(plan_at(&store, &wf, noon(2026, 7, 6)).await?.0, subs);
    assert_eq!(
        plan_at(&store, &wf, noon(2026, 8, 1)).await?.0,
        Vec::<i64>::new()
    );
    Ok(())
}

fn stage(funnel: &audience::Funnel, name: &str) -> Option<u64> {
    funnel.iter().find(|(s, _)| s == name).map(|(_, n)| *n)
}

/// Guards `entry_rules` and `entry_since` in the planner: a campaign remembers its earlier
/// runs. `once_per: campaign` takes nobody twice; a cool-down lets them back after it; who
/// reached the goal or (when chosen) responded stays out.
#[tokio::test]
async fn entry_rules_remember_earlier_runs() -> Res {
    let dir = tempfile::tempdir()?;
    let base = CAPPED.replace("policy:\n  max_contacts: { count: 1, per: 7d }\n", "");

    // Once per campaign: the second run, a day later, takes nobody.
    let db_a = tempfile::tempdir()?;
    let store = store::testing::fresh_store(db_a.path()).await?;
    let subs = subscribers(&store, 3).await?;
    let once = workflow_text(
        &dir.path().join("once"),
        &format!("{base}entry: {{ once_per: campaign }}\n"),
    )?;
    assert_eq!(plan_at(&store, &once, NOW).await?.0, subs);
    let (ids, funnel) = plan_at(&store, &once, NOW + DAY).await?;
    assert_eq!(ids, Vec::<i64>::new());
    assert_eq!(stage(&funnel, "entry:entered"), Some(3), "{funnel:?}");

    // A cool-down of two days: out the next day, back on the third.
    let db_b = tempfile::tempdir()?;
    let store = store::testing::fresh_store(db_b.path()).await?;
    let subs = subscribers(&store, 3).await?;
    let cool = workflow_text(
        &dir.path().join("cool"),
        &format!("{base}entry: {{ cooldown: 2d }}\n"),
    )?;
    assert_eq!(plan_at(&store, &cool, NOW).await?.0, subs);
    assert_eq!(
        plan_at(&store, &cool, NOW + DAY).await?.0,
        Vec::<i64>::new()
    );
    assert_eq!(plan_at(&store, &cool, NOW + 3 * DAY).await?.0, subs);

    // Converted (the goal, by default) and responded (chosen) stay out of later runs.
    let db_c = tempfile::tempdir()?;
    let store = store::testing::fresh_store(db_c.path()).await?;
    let subs = subscribers(&store, 3).await?;
    let goal = workflow_text(
        &dir.path().join("goal"),
        &format!(
            "{base}entry: {{ skip_responded: true }}\nevaluate:\n  goal: {{ type: order, value: bundle }}\n"
        ),
    )?;
    assert!(
        goal.entry.skip_converted,
        "skip_converted is on when there is a goal"
    );
    assert_eq!(plan_at(&store, &goal, NOW).await?.0, subs);
    let first_run = store.runs_of("capped").await?;
    let run_id = first_run.first().ok_or("no run")?.id;
    for (i, kind, value, counts) in [
        (0, "order", Some("bundle"), false),
        (1, "reply", Some("1"), true),
    ] {
        let key = store
            .contact_key(run_id, "sms_offer", subs[i])
            .await?
            .ok_or("no key")?;
        let contact = store.contact_by_key(&key).await?.ok_or("no contact")?;
        store
            .record_response(&contact, kind, value, NOW + 1, counts)
            .await?;
    }
    let (ids, funnel) = plan_at(&store, &goal, NOW + DAY).await?;
    assert_eq!(ids, vec![subs[2]], "{funnel:?}");
    assert_eq!(stage(&funnel, "entry:converted"), Some(1), "{funnel:?}");
    assert_eq!(stage(&funnel, "entry:responded"), Some(1), "{funnel:?}");
    Ok(())
}
