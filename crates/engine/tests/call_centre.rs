//! The call-centre channel through the engine, step by step on a manual clock: a paced
//! team's outbound-call tasks open waiting and reach its queue no faster than its pacing,
//! spread over the hour, no more than its capacity a day and only within its hours, the most valuable
//! subscribers first, whichever of two engines (replicas) runs the step; a task not worked
//! by its wave's window close expires and its contact counts as unreached. Runs on
//! SQLite, or PostgreSQL with CAMPAIGND_TEST_BACKEND=postgres.

use std::collections::HashMap;
use std::sync::Arc;

use channels::Channel;
use chrono::TimeZone;
use engine::clock::ManualClock;
use engine::{Engine, EngineConfig};
use store::Millis;
use store::contacts::ContactState;
use store::inbound::TaskState;
use store::subscribers::OnDuplicate;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

const WORKFLOW: &str = r#"
campaign: save-calls
timezone: Asia/Shanghai
purpose: care
audience:
  where: "arpu_3m >= 0"
waves:
  - id: call
    channel: outbound_call
    team: callcentre
    template: call.txt
    respond_within: 2d
"#;

const TEAMS: &str = r#"
value: arpu_3m
teams:
  - id: callcentre
    name: Call centre
    agents: [agent-1, agent-2]
    capacity_per_day: 5
    pacing_per_hour: 3
    timezone: Asia/Shanghai
    hours: 09:00-21:00
"#;

/// Monday 2026-09-07 10:00 in Shanghai.
fn t0() -> Millis {
    chrono_tz::Asia::Shanghai
        .with_ymd_and_hms(2026, 9, 7, 10, 0, 0)
        .unwrap()
        .timestamp_millis()
}

/// The ARPU of subscriber `i`: all different, so the queue's order is known.
fn arpu(i: usize) -> f64 {
    [
        120.0, 880.0, 35.0, 410.0, 260.0, 75.0, 990.0, 150.0, 530.0, 20.0, 640.0, 310.0,
    ][i]
}

#[tokio::test]
async fn a_paced_team_gets_its_tasks_by_value_within_pacing_capacity_and_hours_and_the_rest_expire()
{
    let dir = tempfile::tempdir().unwrap();
    let store = store::testing::fresh_store(dir.path()).await.unwrap();
    let subs: Vec<_> = (0..12)
        .map(|i| store::testing::subscriber(&format!("1370000{i:04}")).with("arpu_3m", arpu(i)))
        .collect();
    store
        .insert_subscribers(&subs, OnDuplicate::Fail, t0() - DAY)
        .await
        .unwrap();
    let wf_dir = dir.path().join("workflows");
    std::fs::create_dir_all(&wf_dir).unwrap();
    std::fs::write(wf_dir.join("call.txt"), "Offer {name} the save bundle").unwrap();
    std::fs::write(wf_dir.join("save-calls.yaml"), WORKFLOW).unwrap();
    std::fs::write(wf_dir.join("teams.yaml"), TEAMS).unwrap();
    let (wfs, diags) = spec::load_dir(&wf_dir);
    assert!(diags.is_empty(), "{diags:#?}");
    let teams = spec::teams::load_teams(&wf_dir).unwrap().unwrap();

    let clock = ManualClock::new(t0());
    let engine = |worker: &str| {
        let mut chans: HashMap<String, Arc<dyn Channel>> = HashMap::new();
        chans.insert(
            "outbound_call".into(),
            Arc::new(
                channels::worklist::Worklist::new(store.clone(), "outbound_call")
                    .with_paced_teams(vec!["callcentre".into()]),
            ),
        );
        let cfg = EngineConfig::new(worker, dir.path().join("no-calendars"));
        Engine::new(store.clone(), clock.clock(), chans, cfg)
            .unwrap()
            .with_teams(teams.clone())
    };
    let (a, b) = (engine("a"), engine("b"));
    a.load(wfs).await.unwrap();
    let run_id = a.trigger("save-calls", "test").await.unwrap();
    a.tick().await.unwrap();
    assert_eq!(a.dispatch_round("outbound_call").await.unwrap().sent, 12);

    // Every task opened waiting, queued, with its wave's window close as its deadline;
    // nothing is in the queue yet.
    let open = store.tasks(None, TaskState::Open, 100).await.unwrap();
    assert_eq!(open.len(), 12);
    let deadline = t0() + 2 * DAY;
    for t in &open {
        assert!(t.queued && t.released_at.is_none(), "{t:?}");
        assert_eq!(t.deadline, Some(deadline));
    }
    assert!(
        store
            .claim_tasks("callcentre", "agent-1", 5, t0() + HOUR, t0())
            .await
            .unwrap()
            .is_empty(),
        "a waiting task is in nobody's queue"
    );
    let released = || async {
        let mut v: Vec<f64> = store
            .tasks(None, TaskState::Open, 100)
            .await
            .unwrap()
            .iter()
            .filter(|t| t.released_at.is_some())
            .map(|t| t.value.unwrap())
            .collect();
        v.sort_by(|x, y| y.total_cmp(x));
        v
    };

    // Two replicas release at once: together no more than the pacing spread over the hour
    // (ceil(3 / 60) = 1 in the first minute, not the hour's 3), the most valuable first.
    let (ra, rb) = tokio::join!(a.call_step(t0()), b.call_step(t0()));
    assert_eq!(ra.unwrap().released + rb.unwrap().released, 1);
    assert_eq!(released().await, vec![990.0]);
    // Then minute by minute, either replica: one every 20 minutes (3 in the first hour,
    // the pacing), until the day's capacity (5) is reached at the fifth.
    let mut at = Vec::new();
    for m in 1..=120 {
        let e = if m % 2 == 0 { &a } else { &b };
        for _ in 0..e.call_step(t0() + m * MINUTE).await.unwrap().released {
            at.push(m);
        }
    }
    assert_eq!(at, vec![20, 40, 60, 80]);
    assert_eq!(released().await, vec![990.0, 880.0, 640.0, 530.0, 410.0]);
    // The queue serves the most valuable released task first, to one agent at a time.
    let got = store
        .claim_tasks("callcentre", "agent-1", 1, t0() + 6 * HOUR, t0() + 5 * HOUR)
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].value, Some(990.0));
    assert!(
        store
            .complete_held_task(got[0].id, "accepted", "agent-1", "agent-1", t0() + 5 * HOUR)
            .await
            .unwrap()
    );

    // The next day: nothing before 09:00 local (outside the team's hours, though the day
    // is new), then the pacing again.
    let next_day_8 = t0() + DAY - 2 * HOUR;
    assert_eq!(a.call_step(next_day_8).await.unwrap().released, 0);
    let next_day_9 = t0() + DAY - HOUR;
    assert_eq!(a.call_step(next_day_9).await.unwrap().released, 1);
    assert_eq!(
        a.call_step(next_day_9 + 20 * MINUTE)
            .await
            .unwrap()
            .released,
        1
    );
    // 21:00 is past the hours.
    assert_eq!(
        a.call_step(next_day_9 + 12 * HOUR).await.unwrap().released,
        0
    );

    // At the deadline (the window's close, 2 days after planning) every task not worked
    // expires, once, whichever replica; the worked one stays done.
    assert_eq!(a.call_step(deadline - 1).await.unwrap().expired, 0);
    let (ea, eb) = tokio::join!(a.call_step(deadline), b.call_step(deadline));
    assert_eq!(ea.unwrap().expired + eb.unwrap().expired, 11);
    assert_eq!(
        store
            .tasks(None, TaskState::Expired, 100)
            .await
            .unwrap()
            .len(),
        11
    );
    let done = store.tasks(None, TaskState::Done, 100).await.unwrap();
    assert_eq!(done.len(), 1);
    // The expired tasks' contacts are unreached (`expired`: never called), the worked
    // one's is not.
    for t in store.tasks(None, TaskState::Expired, 100).await.unwrap() {
        let key = store
            .contact_key(run_id, "call", t.subscriber_id)
            .await
            .unwrap()
            .unwrap();
        let c = store.contact_by_key(&key).await.unwrap().unwrap();
        assert_eq!(c.state, ContactState::Expired.as_str(), "{c:?}");
    }
    let key = store
        .contact_key(run_id, "call", done[0].subscriber_id)
        .await
        .unwrap()
        .unwrap();
    let c = store.contact_by_key(&key).await.unwrap().unwrap();
    assert_eq!(c.state, ContactState::Sent.as_str());
    // An expired task is in nobody's queue, and a released-and-expired one cannot be
    // recorded any more.
    assert!(
        store
            .claim_tasks("callcentre", "agent-2", 50, deadline + HOUR, deadline)
            .await
            .unwrap()
            .is_empty()
    );
}
