//! The planner: exclusions with reasons, opt-out, frequency cap, quiet hours, and the same
//! inputs giving the same targets and control split.

use std::collections::HashMap;

use chrono::TimeZone;
use store::TransactionTrait;
use store::subscribers::NewSubscriber;
use store::testing::RawDb as _;

use crate::helpers::{self, Backend};

fn sub(i: usize) -> NewSubscriber {
    store::testing::subscriber(&format!("1380000{i:04}"))
        .with("name", format!("S{i}"))
        .with("gender", "female")
        .with("region", "xian")
        // The tier is derived from arpu_3m: silver from 120, ordinary below.
        .with("arpu_3m", if i.is_multiple_of(4) { 150.0 } else { 50.0 })
        .with("balance", 20.0)
        .with("tenure_months", 3)
        .with("student_stage", "student")
        .with("campus", "XJTU")
        .with("first_channel_slot", "18:00-21:00")
        .with("second_channel_slot", "12:00-14:00")
        .with("churn_risk", 0.2)
}

const WORKFLOW: &str = r#"
campaign: test-campaign
timezone: Asia/Shanghai
audience:
  segment: students
  exclude: [do_not_disturb, complained_30d]
control: { share: 0.25, stratify_by: value_tier }
policy:
  quiet_hours: "21:00-08:00"
  max_contacts: { count: 1, per: 7d }
waves:
  - id: sms_offer
    channel: sms
    template: templates/offer.txt
    respond_within: 1d
"#;

/// 200 students: #1-#10 on do-not-disturb, #11-#20 complained, #21-#30 opted out (#15 is
/// both complained and opted out: the first reason wins), #31-#40 already contacted this
/// week by another campaign; 20 non-students.
fn base() -> Vec<NewSubscriber> {
    let mut v: Vec<NewSubscriber> = (1..=200).map(sub).collect();
    for (i, s) in v.iter_mut().enumerate() {
        let n = i + 1;
        if n <= 10 {
            s.do_not_disturb = true;
        } else if n <= 20 {
            s.set("complaints_30d", 2);
        }
        if (21..=30).contains(&n) || n == 15 {
            s.opt_out = true;
        }
    }
    v.extend((201..=220).map(|i| sub(i).with("student_stage", "none")));
    v
}

async fn plan(
    backend: Backend,
    now: chrono::DateTime<chrono::Utc>,
) -> (
    Vec<(i64, String, String)>,
    audience::PlanSummary,
    helpers::TestDb,
) {
    let db = helpers::fresh_db(backend).await;
    let store = &db.store;
    store
        .insert_subscribers(&base(), store::subscribers::OnDuplicate::Fail, 0)
        .await
        .unwrap();
    // Another campaign already contacted #31-#40 yesterday.
    let other = store.upsert_version("other", "h", "{}", 0).await.unwrap();
    let waves = vec![("w".to_owned(), "sms".to_owned())];
    let run = store
        .start_run(store::runs::NewRun {
            campaign: "other",
            version_id: other,
            slot_at: None,
            trigger: "test",
            waves: &waves,
            now: 0,
        })
        .await
        .unwrap()
        .unwrap();
    let wr = store.wave_runs(run).await.unwrap()[0].id;
    let yesterday = now.timestamp_millis() - 86_400_000;
    let rows: Vec<store::contacts::NewContact> = (31..=40)
        .map(|id| store::contacts::NewContact {
            subscriber_id: id,
            arm: store::contacts::Arm::Treatment,
            due_at: yesterday,
            send_by: None,
            stratum: "x".into(),
            variant: None,
            route: None,
        })
        .collect();
    let tx = store.db().begin().await.unwrap();
    let to = store::contacts::WaveContacts {
        run_id: run,
        wave_run_id: wr,
        wave: "w",
        channel: "sms",
        purpose: store::contacts::Purpose::Marketing,
        at_most_once: false,
    };
    store::contacts::insert_contacts(&tx, &to, &rows)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = helpers::write_workflows(dir.path(), WORKFLOW);
    let wf = spec::load_file(&path).unwrap_or_else(|d| panic!("{d:?}"));
    let vid = store
        .upsert_version(&wf.campaign, &wf.hash, &wf.bundle.to_json(), 0)
        .await
        .unwrap();
    let waves = vec![("sms_offer".to_owned(), "sms".to_owned())];
    let run = store
        .start_run(store::runs::NewRun {
            campaign: &wf.campaign,
            version_id: vid,
            slot_at: None,
            trigger: "test",
            waves: &waves,
            now: 0,
        })
        .await
        .unwrap()
        .unwrap();
    let wr = store.wave_runs(run).await.unwrap()[0].id;
    let input = audience::PlanInput {
        workflow: &wf,
        wave: &wf.waves[0],
        run_id: run,
        wave_run_id: wr,
        previous_wave_run_id: None,
        now: now.timestamp_millis(),
        global_holdout: None,
        arbitration: None,
    };
    let summary = audience::plan_wave(store, input).await.unwrap();
    // Planning the same wave again (a crash between plan and commit, or a second replica)
    // writes nothing.
    let again = audience::plan_wave(store, input).await.unwrap();
    assert!(!again.opened);
    let states = store.contact_states(wr).await.unwrap();
    (states, summary, db)
}

async fn exclusions_and_policy(backend: Backend) {
    let noon = chrono_tz::Asia::Shanghai
        .with_ymd_and_hms(2026, 9, 7, 12, 0, 0)
        .unwrap()
        .with_timezone(&chrono::Utc);
    let (states, summary, _db) = plan(backend, noon).await;
    let funnel: HashMap<String, u64> = summary.funnel.iter().cloned().collect();
    assert_eq!(funnel["base"], 220);
    assert_eq!(funnel["segment:students"], 200);
    assert_eq!(funnel["audience"], 200);
    assert_eq!(funnel["exclude:do_not_disturb"], 10);
    assert_eq!(funnel["exclude:complained_30d"], 10);
    assert_eq!(funnel["opt_out"], 10);
    assert_eq!(funnel["frequency_cap"], 10);
    let kept = 200 - 40;
    assert_eq!(funnel["control"] + funnel["treatment"], kept);
    // Stratified: 25% of each tier (silver: every 4th id) is held out.
    let silver_kept = (41..=200).filter(|i| i % 4 == 0).count() as f64;
    let ordinary_kept = kept as f64 - silver_kept;
    assert_eq!(
        funnel["control"],
        ((0.25 * silver_kept).round() + (0.25 * ordinary_kept).round()) as u64
    );
    assert_eq!(states.len() as u64, kept);
    for (s, _, _) in &states {
        assert!(
            *s > 40 && *s <= 200,
            "subscriber {s} should have been left out"
        );
    }
    // Every left-out subscriber has a recorded reason.
    let rows = sea_orm::ConnectionTrait::query_all_raw(
        _db.store.db(),
        sea_orm::Statement::from_string(
            _db.store.db().get_database_backend(),
            "SELECT subscriber_id, reason FROM decision ORDER BY subscriber_id",
        ),
    )
    .await
    .unwrap();
    let reasons: HashMap<i64, String> = rows
        .iter()
        .map(|r| {
            (
                r.try_get::<i64>("", "subscriber_id").unwrap(),
                r.try_get::<String>("", "reason").unwrap(),
            )
        })
        .collect();
    assert_eq!(reasons[&5], "exclude:do_not_disturb");
    assert_eq!(reasons[&15], "exclude:complained_30d");
    assert_eq!(reasons[&25], "opt_out");
    assert_eq!(reasons[&35], "frequency_cap");
    assert_eq!(
        reasons.values().filter(|r| *r == "control_group").count() as u64,
        funnel["control"]
    );
}

#[tokio::test]
async fn exclusions_policy_and_reasons_on_sqlite() {
    exclusions_and_policy(Backend::Sqlite).await;
}

#[tokio::test]
async fn exclusions_policy_and_reasons_on_postgres() {
    exclusions_and_policy(Backend::Postgres).await;
}

/// Across backends by design, so it carries both names: the PostgreSQL pass of
/// scripts/test.sh skips it as one of the explicit variants that already ran.
#[tokio::test]
async fn same_inputs_give_same_targets_and_control_split_on_sqlite_and_postgres() {
    let noon = chrono_tz::Asia::Shanghai
        .with_ymd_and_hms(2026, 9, 7, 12, 0, 0)
        .unwrap()
        .with_timezone(&chrono::Utc);
    let (a, _, _da) = plan(Backend::Sqlite, noon).await;
    let (b, _, _db) = plan(Backend::Sqlite, noon).await;
    let (c, _, _dc) = plan(Backend::Postgres, noon).await;
    assert_eq!(a, b);
    assert_eq!(a, c, "SQLite and PostgreSQL plan the same contacts");
}

#[tokio::test]
async fn quiet_hours_defer_the_send_to_the_morning() {
    // 22:30 in Shanghai: inside quiet hours 21:00-08:00.
    let late = chrono_tz::Asia::Shanghai
        .with_ymd_and_hms(2026, 9, 7, 22, 30, 0)
        .unwrap()
        .with_timezone(&chrono::Utc);
    let (_, summary, db) = plan(helpers::env_backend(), late).await;
    let morning = chrono_tz::Asia::Shanghai
        .with_ymd_and_hms(2026, 9, 8, 8, 0, 0)
        .unwrap()
        .timestamp_millis();
    let rows = sea_orm::ConnectionTrait::query_all_raw(
        db.store.db(),
        sea_orm::Statement::from_string(
            db.store.db().get_database_backend(),
            "SELECT DISTINCT due_at FROM contact WHERE arm = 'treatment' AND run_id = 2",
        ),
    )
    .await
    .unwrap();
    let dues: Vec<i64> = rows
        .iter()
        .map(|r| r.try_get::<i64>("", "due_at").unwrap())
        .collect();
    assert_eq!(dues, vec![morning]);
    // The response window starts when sending may start.
    assert_eq!(summary.closes_at, morning + 86_400_000);
}

const CAPPED: &str = r#"
campaign: CAMPAIGN
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

/// Two replicas planning two campaigns for the same students at the same moment: with a cap
/// of one contact a week, each student gets exactly one of the two offers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_planners_keep_the_frequency_cap_on_postgres() {
    let db = helpers::fresh_db(Backend::Postgres).await;
    db.store
        .insert_subscribers(&base(), store::subscribers::OnDuplicate::Fail, 0)
        .await
        .unwrap();
    // A second connection pool on the same schema plays the second replica.
    let other = store::Store::connect(&db.url, db.schema.as_deref())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut inputs = Vec::new();
    for name in ["cap-a", "cap-b"] {
        let sub = dir.path().join(name);
        let wf = spec::load_file(&helpers::write_workflows(
            &sub,
            &CAPPED.replace("CAMPAIGN", name),
        ))
        .unwrap();
        let vid = db
            .store
            .upsert_version(&wf.campaign, &wf.hash, &wf.bundle.to_json(), 0)
            .await
            .unwrap();
        let waves = vec![("sms_offer".to_owned(), "sms".to_owned())];
        let run = db
            .store
            .start_run(store::runs::NewRun {
                campaign: name,
                version_id: vid,
                slot_at: None,
                trigger: "test",
                waves: &waves,
                now: 0,
            })
            .await
            .unwrap()
            .unwrap();
        let wr = db.store.wave_runs(run).await.unwrap()[0].id;
        inputs.push((wf, run, wr));
    }
    let now = chrono_tz::Asia::Shanghai
        .with_ymd_and_hms(2026, 9, 7, 12, 0, 0)
        .unwrap()
        .timestamp_millis();
    let plan = |store: store::Store, i: usize| {
        let (wf, run, wr) = inputs[i].clone();
        async move {
            let input = audience::PlanInput {
                workflow: &wf,
                wave: &wf.waves[0],
                run_id: run,
                wave_run_id: wr,
                previous_wave_run_id: None,
                now,
                global_holdout: None,
                arbitration: None,
            };
            audience::plan_wave(&store, input).await.unwrap()
        }
    };
    let (a, b) = tokio::join!(plan(db.store.clone(), 0), plan(other, 1));
    assert!(a.opened && b.opened);
    let rows = sea_orm::ConnectionTrait::query_all_raw(
        db.store.db(),
        sea_orm::Statement::from_string(
            db.store.db().get_database_backend(),
            "SELECT subscriber_id, COUNT(*) AS n FROM contact WHERE arm = 'treatment' GROUP BY subscriber_id",
        ),
    )
    .await
    .unwrap();
    assert!(
        rows.iter().all(|r| r.try_get::<i64>("", "n").unwrap() == 1),
        "someone got both offers"
    );
    // And the two plans together cover exactly the subscribers contacted: nobody was lost.
    let contacted = rows.len() as u64;
    assert_eq!(a.treatment + b.treatment, contacted);
}
