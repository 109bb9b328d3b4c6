//! A two-wave campaign end to end through the `http` SMS transport: planning, dispatch to a
//! loopback gateway, delivery reports and replies through campaignd's own callback API,
//! outbound-call tasks worked through the API, business events, evaluation. Every count is
//! checked against what the test made happen.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeZone;
use engine::clock::ManualClock;
use engine::{Engine, EngineConfig, Event};
use store::testing::RawDb as _;
use tokio_util::sync::CancellationToken;

use crate::helpers::{self, Backend, TWO_WAVES};
use crate::services::until;

/// How long each step may take in real time. The campaign's clock is manual: it moves past a
/// window only once everything the test made happen inside it is stored, so a loaded
/// machine makes the test slower, never wrong.
const STEP: Duration = Duration::from_secs(120);
/// A window of one campaign day, and a minute more.
const PAST_A_WINDOW: Duration = Duration::from_secs(86_400 + 60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_wave_campaign_on_sqlite() {
    two_wave_campaign(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_wave_campaign_on_postgres() {
    two_wave_campaign(Backend::Postgres).await;
}

async fn two_wave_campaign(backend: Backend) {
    let db = helpers::fresh_db(backend).await;
    let store = db.store.clone();
    let base: Vec<_> = subscribers::generate(&catalogue::shipped(), 6000, 11).collect();
    store
        .insert_subscribers(
            &base,
            store::subscribers::OnDuplicate::Fail,
            store::wall_now(),
        )
        .await
        .unwrap();
    let by_id: HashMap<i64, store::subscribers::NewSubscriber> = base
        .into_iter()
        .enumerate()
        .map(|(i, s)| (i as i64 + 1, s))
        .collect();

    // campaignd's API on port 0, then the gateway that calls back into it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_addr = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let api_cancel = cancel.clone();
    let origin = chrono_tz::Asia::Shanghai
        .with_ymd_and_hms(2026, 9, 7, 10, 0, 0)
        .unwrap()
        .timestamp_millis();
    // A Monday 10:00 in Shanghai.
    let manual = ManualClock::new(origin);
    let clock = manual.clock();
    tokio::spawn(api::serve_with(
        listener,
        api::AppState {
            store: store.clone(),
        },
        helpers::serve_options(clock.now_fn()),
        async move { api_cancel.cancelled().await },
    ));
    let api_base = format!("http://{api_addr}");
    let gw = helpers::start_gateway(
        api_base.clone(),
        "campaignd-tests".into(),
        helpers::gateway_token(&store).await,
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    // Evaluated per brand, a field other than the control's stratum (value_tier).
    let workflow = TWO_WAVES.replace("evaluate:\n", "evaluate:\n  breakdown: brand\n");
    assert_ne!(workflow, TWO_WAVES);
    let wf_path = helpers::write_workflows(dir.path(), &workflow);
    let wf = spec::load_file(&wf_path).unwrap_or_else(|d| panic!("{d:?}"));
    let chans = helpers::kannel_channels(
        &store,
        format!("http://{}/cgi-bin/sendsms", gw.addr),
        format!("{api_base}/callbacks/kannel/dlr"),
        16,
    )
    .await;
    let mut cfg = EngineConfig::new("test", helpers::repo_root().join("workflows/calendars"));
    cfg.poll = Duration::from_millis(20);
    cfg.batch_size = 200;
    let engine = Arc::new(Engine::new(store.clone(), clock.clone(), chans, cfg).unwrap());
    engine.load(vec![wf]).await.unwrap();
    let mut events = engine.subscribe();
    let run_id = engine.trigger("test-campaign", "test").await.unwrap();
    let engine_task = tokio::spawn(engine.clone().run(cancel.clone(), false));

    // Agents: accept every third task, refuse the rest, through the API.
    let client = reqwest::Client::new();
    // An agent of the call centre (its token sees that team's tasks only) and an operator
    // whose system posts the orders.
    let agent_token = store
        .create_token(
            "agent-1",
            store::auth::Role::Agent,
            Some("callcentre"),
            store::wall_now(),
        )
        .await
        .unwrap();
    let operator_token = store
        .create_token(
            "orders",
            store::auth::Role::Operator,
            None,
            store::wall_now(),
        )
        .await
        .unwrap();
    let agent_cancel = cancel.clone();
    let agent_base = api_base.clone();
    let agents = tokio::spawn(async move {
        let mut accepted = HashSet::new();
        while !agent_cancel.is_cancelled() {
            let tasks: Vec<serde_json::Value> = client
                .get(format!(
                    "{agent_base}/tasks?team=callcentre&state=open&limit=500"
                ))
                .bearer_auth(&agent_token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            for t in tasks {
                let id = t["id"].as_i64().unwrap();
                let sub = t["subscriber_id"].as_i64().unwrap();
                let outcome = if sub % 3 == 0 { "accepted" } else { "refused" };
                let res = client
                    .post(format!("{agent_base}/tasks/{id}/outcome"))
                    .bearer_auth(&agent_token)
                    .json(&serde_json::json!({"outcome": outcome, "agent": "agent-1"}))
                    .send()
                    .await
                    .unwrap();
                assert!(res.status().is_success(), "{}", res.text().await.unwrap());
                if outcome == "accepted" {
                    accepted.insert(sub);
                }
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        accepted
    });

    // Wave 1 is planned: orders from every fifth subscriber of the run, treatment and
    // control alike, arrive through the events API.
    let event_client = reqwest::Client::new();
    tokio::time::timeout(STEP, async {
        loop {
            if let Event::WavePlanned { wave, .. } = events.recv().await.unwrap()
                && wave == "sms_offer"
            {
                break;
            }
        }
    })
    .await
    .expect("wave 1 is planned");
    let waves = store.wave_runs(run_id).await.unwrap();
    let (w1_id, pop) = (
        waves[0].id,
        store.run_population(waves[0].id).await.unwrap(),
    );
    let orders: Vec<serde_json::Value> = pop
        .iter()
        .filter(|(s, _, _)| s % 5 == 0)
        .map(|(s, _, _)| serde_json::json!({"msisdn": by_id[s].msisdn, "type": "order", "value": "campus-bundle"}))
        .collect();
    let ordered: HashSet<i64> = pop
        .iter()
        .filter(|(s, _, _)| s % 5 == 0)
        .map(|(s, _, _)| *s)
        .collect();
    let res = event_client
        .post(format!("{api_base}/events"))
        .bearer_auth(&operator_token)
        .json(&orders)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.text().await.unwrap());

    // Inside wave 1's window: every message delivered (the gateway's reports), every
    // subscriber who replies has replied, and every inbound row is attributed.
    until(
        "wave 1 delivered, its replies and the orders attributed",
        STEP,
        || async {
            let states = store.contact_states(w1_id).await.unwrap();
            let treatment: Vec<_> = states.iter().filter(|(_, a, _)| a == "treatment").collect();
            let repliers = treatment
                .iter()
                .filter(|(s, _, _)| helpers::replies(&by_id[s].msisdn))
                .count() as u64;
            let counts = store.wave_counts(w1_id).await.unwrap();
            let unprocessed = store::inbound::count_unprocessed(store.db()).await.unwrap();
            (treatment.iter().all(|(_, _, st)| st == "delivered")
                && counts.responded(store::contacts::Arm::Treatment) == repliers
                && unprocessed == 0)
                .then_some(())
        },
    )
    .await;

    // Wave 1's window closes; wave 2 calls its non-responders, and the agents work every task
    // inside wave 2's window.
    manual.advance(PAST_A_WINDOW);
    let w2_id = until("wave 2 to be planned", STEP, || async {
        let waves = store.wave_runs(run_id).await.unwrap();
        waves.get(1).filter(|w| w.state == "open").map(|w| w.id)
    })
    .await;
    until("every call task worked and attributed", STEP, || async {
        let states = store.contact_states(w2_id).await.unwrap();
        let accepting = states.iter().filter(|(s, _, _)| s % 3 == 0).count() as u64;
        let counts = store.wave_counts(w2_id).await.unwrap();
        let unprocessed = store::inbound::count_unprocessed(store.db()).await.unwrap();
        let open = store
            .tasks(Some("callcentre"), store::inbound::TaskState::Open, 1)
            .await
            .unwrap();
        (!states.is_empty()
            && states.iter().all(|(_, _, st)| st != "pending")
            && open.is_empty()
            && counts.responded(store::contacts::Arm::Treatment) == accepting
            && unprocessed == 0)
            .then_some(())
    })
    .await;

    // Wave 2's window closes and the run is evaluated.
    manual.advance(PAST_A_WINDOW);
    let report = tokio::time::timeout(STEP, async {
        loop {
            if let Event::RunFinished {
                run_id: r, report, ..
            } = events.recv().await.unwrap()
                && r == run_id
            {
                break report;
            }
        }
    })
    .await
    .expect("the run finishes once its last window closed");
    cancel.cancel();
    engine_task.await.unwrap().unwrap();
    let accepted = agents.await.unwrap();

    // Who should have been targeted, computed independently from the base.
    let eligible: Vec<i64> = by_id
        .iter()
        .filter(|(_, s)| s.text("student_stage") != "none" && dec(s, "arpu_3m") >= 10.0)
        .filter(|(_, s)| !s.do_not_disturb && int(s, "complaints_30d") == 0 && !s.opt_out)
        .map(|(id, _)| *id)
        .collect();
    let waves = store.wave_runs(run_id).await.unwrap();
    let w1 = store.contact_states(waves[0].id).await.unwrap();
    let w1_treat: Vec<i64> = w1
        .iter()
        .filter(|(_, a, _)| a == "treatment")
        .map(|(s, _, _)| *s)
        .collect();
    let w1_ctrl: Vec<i64> = w1
        .iter()
        .filter(|(_, a, _)| a == "control")
        .map(|(s, _, _)| *s)
        .collect();
    assert_eq!(
        w1_treat.len() + w1_ctrl.len(),
        eligible.len(),
        "every eligible subscriber is in exactly one arm"
    );
    let expected_control: usize = {
        // The strata are the derived value tier, read through the store's derived SQL.
        let tiers = store
            .derived_values(&store.catalogue(), &eligible, &["value_tier"], 0)
            .await
            .unwrap();
        assert_eq!(tiers.len(), eligible.len());
        let mut per_tier: HashMap<String, usize> = HashMap::new();
        for id in &eligible {
            *per_tier.entry(tiers[id][0].clone()).or_default() += 1;
        }
        per_tier
            .values()
            .map(|n| (0.1 * *n as f64).round() as usize)
            .sum()
    };
    assert_eq!(w1_ctrl.len(), expected_control);
    assert!(
        w1.iter().all(|(_, a, st)| if a == "control" {
            st == "held"
        } else {
            st == "delivered"
        }),
        "{w1:?}"
    );

    // The gateway saw every wave-1 key exactly once, and nothing else.
    let hits = gw.hits.lock().unwrap().clone();
    assert_eq!(hits.len(), w1_treat.len());
    assert!(hits.values().all(|n| *n == 1), "a key was sent twice");
    for s in &w1_treat {
        let key = store
            .contact_key(run_id, "sms_offer", *s)
            .await
            .unwrap()
            .expect("a wave-1 contact");
        assert_eq!(hits.get(&key), Some(&1));
    }

    let repliers: HashSet<i64> = w1_treat
        .iter()
        .copied()
        .filter(|s| helpers::replies(&by_id[s].msisdn))
        .collect();
    let w2 = store.contact_states(waves[1].id).await.unwrap();
    let w2_targets: HashSet<i64> = w2.iter().map(|(s, _, _)| *s).collect();
    let expected_w2: HashSet<i64> = w1_treat
        .iter()
        .copied()
        .filter(|s| !repliers.contains(s))
        .collect();
    assert_eq!(
        w2_targets, expected_w2,
        "wave 2 targets exactly the non-responders of wave 1"
    );
    assert!(
        w2_targets.iter().all(|s| !w1_ctrl.contains(s)),
        "control is never contacted"
    );

    // The evaluation agrees with all of it.
    assert_eq!(report.waves.len(), 2);
    let (r1, r2) = (&report.waves[0], &report.waves[1]);
    assert_eq!(
        r1.eligible,
        eligible.len() as u64
            + by_id
                .iter()
                .filter(|(_, s)| s.text("student_stage") != "none"
                    && dec(s, "arpu_3m") >= 10.0
                    && (s.do_not_disturb || int(s, "complaints_30d") > 0 || s.opt_out))
                .count() as u64
    );
    assert_eq!(
        (r1.targeted, r1.sent, r1.delivered, r1.control),
        (
            w1_treat.len() as u64,
            w1_treat.len() as u64,
            w1_treat.len() as u64,
            w1_ctrl.len() as u64
        )
    );
    assert_eq!(r1.responded, repliers.len() as u64);
    assert_eq!(
        (r2.targeted, r2.sent),
        (expected_w2.len() as u64, expected_w2.len() as u64)
    );
    assert_eq!(r2.responded, accepted.len() as u64);
    assert_eq!(
        accepted.len(),
        expected_w2.iter().filter(|s| *s % 3 == 0).count()
    );
    let t_orders = w1_treat.iter().filter(|s| ordered.contains(s)).count() as u64;
    let c_orders = w1_ctrl.iter().filter(|s| ordered.contains(s)).count() as u64;
    assert_eq!(
        (
            report.overall.treatment.n,
            report.overall.treatment.converted
        ),
        (w1_treat.len() as u64, t_orders)
    );
    assert_eq!(
        (report.overall.control.n, report.overall.control.converted),
        (w1_ctrl.len() as u64, c_orders)
    );
    // One cell per brand of the first wave's population, counted from the subscribers'
    // own brand, not from the stratum the control split stored.
    assert_eq!(report.breakdown.as_deref(), Some("brand"));
    let mut want: std::collections::BTreeMap<String, [u64; 4]> = Default::default();
    for (set, arm) in [(&w1_treat, 0), (&w1_ctrl, 2)] {
        for s in set.iter() {
            let cell = want.entry(by_id[s].text("brand")).or_default();
            cell[arm] += 1;
            cell[arm + 1] += u64::from(ordered.contains(s));
        }
    }
    let got: std::collections::BTreeMap<String, [u64; 4]> = report
        .cells
        .iter()
        .map(|c| {
            (
                c.label.clone(),
                [
                    c.treatment.n,
                    c.treatment.converted,
                    c.control.n,
                    c.control.converted,
                ],
            )
        })
        .collect();
    assert_eq!(got, want);
    assert!(want.len() > 1, "the base has several brands: {want:?}");
    assert!(!report.simulated);
    let _ = db.schema;
}

/// A decimal attribute of a generated subscriber (the generator fills every shipped one).
fn dec(s: &store::subscribers::NewSubscriber, name: &str) -> f64 {
    match s.get(name) {
        Some(catalogue::Value::Dec(d)) => d,
        other => panic!("{name} is {other:?}"),
    }
}

/// A whole-number attribute of a generated subscriber.
fn int(s: &store::subscribers::NewSubscriber, name: &str) -> i64 {
    match s.get(name) {
        Some(catalogue::Value::Int(i)) => i,
        other => panic!("{name} is {other:?}"),
    }
}
