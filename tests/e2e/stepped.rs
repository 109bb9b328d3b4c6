//! A two-wave campaign stepped by hand on a manual clock, with a snapshot of stored state
//! after every step: trigger, plan, dispatch (the JSON-lines SMS outbox and the outbound-call
//! worklist, both deterministic), delivery reports, replies, orders and agent outcomes
//! through campaignd's own API (stamped by the same manual clock), attribution, the window
//! closing, the second wave, evaluation. Nothing waits on timing: each step runs to the end
//! before the next. One set of snapshots serves SQLite and PostgreSQL.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use channels::sms::{OutboxConfig, SmsConfig};
use chrono::TimeZone;
use engine::clock::ManualClock;
use engine::{Engine, EngineConfig};
use tokio_util::sync::CancellationToken;

use crate::helpers::{self, TWO_WAVES};

const DAY: u64 = 86_400_000;

fn t0() -> i64 {
    chrono_tz::Asia::Shanghai
        .with_ymd_and_hms(2026, 9, 7, 10, 0, 0)
        .unwrap()
        .timestamp_millis()
}

struct Stepper {
    db: helpers::TestDb,
    clock: ManualClock,
    engine: Engine,
    api: String,
    client: reqwest::Client,
    /// Tokens: Kannel's for the MO callback, an operator's for events and outcomes.
    gateway: String,
    operator: String,
    outbox: std::path::PathBuf,
    step: u32,
    _dir: tempfile::TempDir,
    _cancel: tokio_util::sync::DropGuard,
}

impl Stepper {
    /// Snapshot of the whole store after a step, named `NN_<what>`.
    async fn snapshot(&mut self, what: &str) {
        self.step += 1;
        let text = store::snapshot::render(&self.db.store, t0()).await.unwrap();
        insta::assert_snapshot!(format!("two_waves_{:02}_{what}", self.step), text);
    }

    /// Keys the SMS outbox holds, with how often each was written.
    fn outbox_keys(&self) -> HashMap<String, u32> {
        let mut out = HashMap::new();
        let text = std::fs::read_to_string(&self.outbox).unwrap_or_default();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            *out.entry(v["key"].as_str().unwrap().to_owned())
                .or_insert(0) += 1;
        }
        out
    }

    /// As Kannel calls: the MO with the gateway's token in the query.
    async fn get(&self, path: &str) {
        let path = if path.starts_with("/callbacks/kannel/mo") {
            format!("{path}&token={}", self.gateway)
        } else {
            path.to_owned()
        };
        let res = self
            .client
            .get(format!("{}{path}", self.api))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{}", res.text().await.unwrap());
    }

    async fn post(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let res = self
            .client
            .post(format!("{}{path}", self.api))
            .bearer_auth(&self.operator)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{}", res.text().await.unwrap());
        res.json().await.unwrap()
    }

    async fn drain(&self, kind: &str) -> u64 {
        let mut sent = 0;
        loop {
            let s = self.engine.dispatch_round(kind).await.unwrap();
            if s.claimed == 0 {
                return sent;
            }
            sent += s.sent;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_wave_campaign_step_by_step() {
    let db = helpers::fresh_db(helpers::env_backend()).await;
    let base: Vec<_> = subscribers::generate(&catalogue::shipped(), 1000, 11).collect();
    db.store
        .insert_subscribers(&base, store::subscribers::OnDuplicate::Fail, t0() - 1000)
        .await
        .unwrap();
    let by_id: HashMap<i64, store::subscribers::NewSubscriber> = base
        .into_iter()
        .enumerate()
        .map(|(i, s)| (i as i64 + 1, s))
        .collect();
    let clock = ManualClock::new(t0());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    let cancel = CancellationToken::new();
    let api_cancel = cancel.clone();
    tokio::spawn(api::serve_with(
        listener,
        api::AppState {
            store: db.store.clone(),
        },
        helpers::serve_options(clock.clock().now_fn()),
        async move { api_cancel.cancelled().await },
    ));

    let dir = tempfile::tempdir().unwrap();
    let wf = spec::load_file(&helpers::write_workflows(dir.path(), TWO_WAVES))
        .unwrap_or_else(|d| panic!("{d:?}"));
    let outbox = dir.path().join("outbox.jsonl");
    let mut chans: HashMap<String, Arc<dyn channels::Channel>> = HashMap::new();
    chans.insert(
        "sms".into(),
        channels::sms::build(&SmsConfig::Outbox(OutboxConfig {
            path: outbox.clone(),
        }))
        .await
        .unwrap(),
    );
    chans.insert(
        "outbound_call".into(),
        Arc::new(channels::worklist::Worklist::new(
            db.store.clone(),
            "outbound_call",
        )),
    );
    let mut cfg = EngineConfig::new("step", helpers::repo_root().join("workflows/calendars"));
    cfg.batch_size = 25;
    let engine = Engine::new(db.store.clone(), clock.clock(), chans, cfg).unwrap();
    engine.load(vec![wf]).await.unwrap();
    let gateway = helpers::gateway_token(&db.store).await;
    let operator = db
        .store
        .create_token("operator", store::auth::Role::Operator, None, t0())
        .await
        .unwrap();
    let mut s = Stepper {
        db,
        clock,
        engine,
        api,
        client: reqwest::Client::new(),
        gateway,
        operator,
        outbox,
        step: 0,
        _dir: dir,
        _cancel: cancel.drop_guard(),
    };
    let store = s.db.store.clone();

    let run_id = s.engine.trigger("test-campaign", "test").await.unwrap();
    s.snapshot("triggered").await;

    let t = s.engine.tick().await.unwrap();
    assert_eq!(t.waves_planned, 1);
    s.snapshot("wave1_planned").await;

    let waves = store.wave_runs(run_id).await.unwrap();
    let w1 = store.contact_states(waves[0].id).await.unwrap();
    let w1_treat: Vec<i64> = w1
        .iter()
        .filter(|(_, a, _)| a == "treatment")
        .map(|(s, _, _)| *s)
        .collect();
    let w1_ctrl: HashSet<i64> = w1
        .iter()
        .filter(|(_, a, _)| a == "control")
        .map(|(s, _, _)| *s)
        .collect();
    assert!(!w1_ctrl.is_empty() && w1_treat.len() > 20, "{w1:?}");

    s.clock.advance(Duration::from_secs(60));
    assert_eq!(s.drain("sms").await, w1_treat.len() as u64);
    let sent = s.outbox_keys();
    assert_eq!(sent.len(), w1_treat.len());
    assert!(sent.values().all(|n| *n == 1), "a key was written twice");
    s.snapshot("wave1_sent").await;

    // An hour later: a delivery report for every message, replies from the repliers, and
    // orders from every fifth subscriber of the run, control included.
    s.clock.advance(Duration::from_secs(3600));
    for sub in &w1_treat {
        let key = store
            .contact_key(run_id, "sms_offer", *sub)
            .await
            .unwrap()
            .expect("a wave-1 contact");
        s.get(&format!(
            "/callbacks/kannel/dlr?key={key}&t={}&type=1",
            helpers::dlr_token(&key)
        ))
        .await;
    }
    let repliers: HashSet<i64> = w1_treat
        .iter()
        .copied()
        .filter(|id| helpers::replies(&by_id[id].msisdn))
        .collect();
    assert!(!repliers.is_empty());
    for id in &repliers {
        s.get(&format!(
            "/callbacks/kannel/mo?from={}&to=10086&text=1",
            by_id[id].msisdn
        ))
        .await;
    }
    let ordered: HashSet<i64> = w1_treat
        .iter()
        .chain(w1_ctrl.iter())
        .copied()
        .filter(|id| id % 5 == 0)
        .collect();
    let orders: Vec<serde_json::Value> = ordered
        .iter()
        .map(|id| serde_json::json!({"msisdn": by_id[id].msisdn, "type": "order", "value": "campus-bundle"}))
        .collect();
    s.post("/events", serde_json::Value::Array(orders)).await;
    s.snapshot("wave1_inbound_stored").await;

    let t = s.engine.tick().await.unwrap();
    assert_eq!(
        t.inbound_processed,
        (w1_treat.len() + repliers.len() + ordered.len()) as u64
    );
    assert_eq!((t.waves_closed, t.waves_planned), (0, 0));
    s.snapshot("wave1_attributed").await;

    // Past the window: it closes and the call wave plans the non-responders.
    s.clock.advance(Duration::from_millis(DAY));
    let t = s.engine.tick().await.unwrap();
    assert_eq!((t.waves_closed, t.waves_planned), (1, 1));
    s.snapshot("wave1_closed_wave2_planned").await;

    let w2 = store.contact_states(waves[1].id).await.unwrap();
    let w2_targets: HashSet<i64> = w2.iter().map(|(s, _, _)| *s).collect();
    let expected_w2: HashSet<i64> = w1_treat
        .iter()
        .copied()
        .filter(|id| !repliers.contains(id))
        .collect();
    assert_eq!(
        w2_targets, expected_w2,
        "wave 2 targets exactly the non-responders of wave 1"
    );
    assert!(
        w2_targets.is_disjoint(&w1_ctrl),
        "control is never contacted"
    );

    assert_eq!(s.drain("outbound_call").await, expected_w2.len() as u64);
    s.snapshot("wave2_tasks_open").await;

    // Agents accept every third task and refuse the rest.
    let tasks = store
        .tasks(Some("callcentre"), store::inbound::TaskState::Open, 1000)
        .await
        .unwrap();
    assert_eq!(tasks.len(), expected_w2.len());
    let mut accepted = HashSet::new();
    for t in &tasks {
        let outcome = if t.subscriber_id % 3 == 0 {
            accepted.insert(t.subscriber_id);
            "accepted"
        } else {
            "refused"
        };
        s.post(
            &format!("/tasks/{}/outcome", t.id),
            serde_json::json!({"outcome": outcome, "agent": "agent-1"}),
        )
        .await;
    }
    s.clock.advance(Duration::from_secs(3600));
    let t = s.engine.tick().await.unwrap();
    assert_eq!(t.inbound_processed, tasks.len() as u64);
    s.snapshot("wave2_outcomes_attributed").await;

    s.clock.advance(Duration::from_millis(DAY));
    let t = s.engine.tick().await.unwrap();
    assert_eq!((t.waves_closed, t.runs_finished), (1, 1));
    s.snapshot("finished").await;

    let report: serde_json::Value =
        serde_json::from_str(&store.run_report(run_id).await.unwrap().unwrap()).unwrap();
    let r1 = &report["waves"][0];
    let r2 = &report["waves"][1];
    let n = |v: &serde_json::Value| v.as_u64().unwrap();
    assert_eq!(
        (n(&r1["targeted"]), n(&r1["sent"]), n(&r1["delivered"])),
        (
            w1_treat.len() as u64,
            w1_treat.len() as u64,
            w1_treat.len() as u64
        )
    );
    assert_eq!(n(&r1["control"]), w1_ctrl.len() as u64);
    assert_eq!(n(&r1["responded"]), repliers.len() as u64);
    assert_eq!(n(&r2["targeted"]), expected_w2.len() as u64);
    assert_eq!(n(&r2["responded"]), accepted.len() as u64);
    let t_orders = w1_treat.iter().filter(|id| ordered.contains(id)).count() as u64;
    let c_orders = w1_ctrl.iter().filter(|id| ordered.contains(id)).count() as u64;
    assert_eq!(
        (
            n(&report["overall"]["treatment"]["n"]),
            n(&report["overall"]["treatment"]["converted"])
        ),
        (w1_treat.len() as u64, t_orders)
    );
    assert_eq!(
        (
            n(&report["overall"]["control"]["n"]),
            n(&report["overall"]["control"]["converted"])
        ),
        (w1_ctrl.len() as u64, c_orders)
    );
}
