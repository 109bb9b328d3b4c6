//! The service-staff channel through the engine, step by step on a manual clock: a service
//! wave's tasks are due `sla` after they open; the team's staff member gets one digest of
//! them, the overdue ones are escalated once and their supervisor gets one digest of those,
//! whichever of two engines (replicas) runs the step, and a replica that read the news
//! before another told it tells nothing again. Runs on SQLite, or PostgreSQL with
//! CAMPAIGND_TEST_BACKEND=postgres.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use channels::Channel;
use chrono::TimeZone;
use engine::clock::ManualClock;
use engine::{Engine, EngineConfig};
use store::Millis;
use store::inbound::TaskState;
use store::mail::{MailKind, MailRow};
use store::subscribers::OnDuplicate;

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

const WORKFLOW: &str = r#"
campaign: club-care
timezone: Asia/Shanghai
purpose: care
audience:
  where: "arpu_3m >= 200"
waves:
  - id: visit
    channel: service
    team: desk
    sla: 2d
    escalate_to: boss
    template: visit.txt
    respond_within: 14d
"#;

const STAFF: &str = r#"
staff:
  - id: desk
    name: Club desk
    email: desk@example.com
    timezone: Asia/Shanghai
  - id: boss
    name: Club supervisor
    email: boss@example.com
"#;

/// Monday 2026-09-07 10:00 in Shanghai.
fn t0() -> Millis {
    chrono_tz::Asia::Shanghai
        .with_ymd_and_hms(2026, 9, 7, 10, 0, 0)
        .unwrap()
        .timestamp_millis()
}

fn digests(mails: &[MailRow], to: &str) -> Vec<MailRow> {
    mails
        .iter()
        .filter(|m| m.kind == MailKind::Digest.as_str() && m.recipients == [to])
        .cloned()
        .collect()
}

#[tokio::test]
async fn overdue_tasks_are_escalated_once_and_each_person_gets_one_digest() {
    let dir = tempfile::tempdir().unwrap();
    let store = store::testing::fresh_store(dir.path()).await.unwrap();
    // Three club members (ARPU 300) and one who is not.
    let subs: Vec<_> = (0..4)
        .map(|i| {
            store::testing::subscriber(&format!("1370000{i:04}"))
                .with("arpu_3m", if i == 3 { 50.0 } else { 300.0 })
        })
        .collect();
    store
        .insert_subscribers(&subs, OnDuplicate::Fail, t0() - DAY)
        .await
        .unwrap();
    let wf_dir = dir.path().join("workflows");
    std::fs::create_dir_all(&wf_dir).unwrap();
    std::fs::write(wf_dir.join("visit.txt"), "Invite {name} to the club lounge").unwrap();
    std::fs::write(wf_dir.join("club-care.yaml"), WORKFLOW).unwrap();
    std::fs::write(wf_dir.join("staff.yaml"), STAFF).unwrap();
    let (wfs, diags) = spec::load_dir(&wf_dir);
    assert!(diags.is_empty(), "{diags:#?}");
    let (_, staff, diags) = spec::monitor::load_monitors(&wf_dir);
    assert!(diags.is_empty(), "{diags:#?}");

    let clock = ManualClock::new(t0());
    let engine = |worker: &str| {
        let mut chans: HashMap<String, Arc<dyn Channel>> = HashMap::new();
        chans.insert(
            "service".into(),
            Arc::new(channels::worklist::Worklist::new(store.clone(), "service")),
        );
        let mut cfg = EngineConfig::new(worker, dir.path().join("no-calendars"));
        cfg.task_digest_every = Duration::from_secs(3600);
        Engine::new(store.clone(), clock.clock(), chans, cfg)
            .unwrap()
            .with_monitors(Vec::new(), staff.clone())
    };
    let (a, b) = (engine("a"), engine("b"));
    a.load(wfs).await.unwrap();
    a.trigger("club-care", "test").await.unwrap();
    a.tick().await.unwrap();
    assert_eq!(a.dispatch_round("service").await.unwrap().sent, 3);

    // Due two days after they opened, by the engine's clock; the soonest first.
    let tasks = store.tasks(None, TaskState::Open, 100).await.unwrap();
    assert_eq!(tasks.len(), 3);
    for t in &tasks {
        assert_eq!(t.team, "desk");
        assert_eq!(t.due_at, Some(t0() + 2 * DAY));
        assert_eq!(t.escalate_to.as_deref(), Some("boss"));
        assert!(!t.is_overdue(t0()));
        // What an agent may record on it: the workflow's outcomes (the shipped four here).
        let terms = store.task_terms(t.id).await.unwrap().unwrap();
        assert_eq!(
            terms.outcomes.as_deref(),
            Some(
                domain::DEFAULT_OUTCOMES
                    .iter()
                    .map(|o| o.to_string())
                    .collect::<Vec<_>>()
                    .as_slice()
            )
        );
    }
    let ids: Vec<i64> = tasks.iter().map(|t| t.id).collect();

    // A replica reads the news before the first tells it (a stale read).
    let stale = store.pending_task_news(&["desk", "boss"]).await.unwrap();
    assert_eq!(stale["desk"].new.len(), 3);

    // The desk is told once, whichever engine runs the step and however often.
    let first = a.task_step(t0()).await.unwrap();
    assert_eq!((first.escalated, first.digests), (0, 1));
    for e in [&b, &a] {
        let again = e.task_step(t0()).await.unwrap();
        assert_eq!((again.escalated, again.digests), (0, 0));
    }
    let mails = store.mails().await.unwrap();
    let desk = digests(&mails, "desk@example.com");
    assert_eq!(desk.len(), 1, "{mails:#?}");
    assert_eq!(
        desk[0].subject,
        "[campaignd] tasks: 3 new and 0 overdue for Club desk"
    );
    for id in &ids {
        assert!(
            desk[0]
                .text
                .contains(&format!("task {id}  service  club-care/visit  137****"))
        );
    }
    assert!(!desk[0].text.contains("13700000000"), "{}", desk[0].text);
    // Due times in the reader's own zone, named: the desk keeps Shanghai time.
    for id in &ids {
        let due = store.task(*id).await.unwrap().unwrap().due_at.unwrap();
        let local = chrono::DateTime::from_timestamp_millis(due)
            .unwrap()
            .with_timezone(&chrono_tz::Asia::Shanghai)
            .format("%Y-%m-%d %H:%M CST")
            .to_string();
        assert!(
            desk[0].text.contains(&format!("due {local}")),
            "{local}: {}",
            desk[0].text
        );
    }

    // Ten minutes on, a second run opens three more tasks: the desk had this interval's
    // digest, so they wait for the next interval.
    let t10 = t0() + 10 * 60_000;
    clock.set(t10);
    a.trigger("club-care", "test").await.unwrap();
    a.tick().await.unwrap();
    assert_eq!(a.dispatch_round("service").await.unwrap().sent, 3);
    assert_eq!(a.task_step(t10).await.unwrap(), Default::default());
    let second: Vec<i64> = store
        .tasks(None, TaskState::Open, 100)
        .await
        .unwrap()
        .iter()
        .map(|t| t.id)
        .filter(|id| !ids.contains(id))
        .collect();
    assert_eq!(second.len(), 3);

    // An hour later (the next digest interval), the stale replica marks nothing of what it
    // read, so it cannot mail it again; the step tells the desk of the second run's tasks.
    let later = t0() + HOUR;
    let tx = store.begin_task_digest(later).await.unwrap();
    let stale_ids: Vec<i64> = stale["desk"].new.iter().map(|t| t.id).collect();
    assert_eq!(
        tx.mark(&stale_ids, &[]).await.unwrap(),
        (Vec::new(), Vec::new())
    );
    drop(tx);
    assert_eq!(b.task_step(later).await.unwrap().digests, 1);
    assert_eq!(a.task_step(later).await.unwrap().digests, 0);
    let desk = digests(&store.mails().await.unwrap(), "desk@example.com");
    assert_eq!(desk.len(), 2);
    assert_eq!(
        desk[1].subject,
        "[campaignd] tasks: 3 new and 0 overdue for Club desk"
    );
    for id in &second {
        assert!(desk[1].text.contains(&format!("task {id} ")));
    }
    for id in &ids {
        assert!(!desk[1].text.contains(&format!("task {id} ")));
    }

    // One task is worked in time; the other two are escalated once when overdue.
    assert!(
        store
            .complete_task(ids[0], "accepted", "agent-1", t0() + DAY)
            .await
            .unwrap()
    );
    let overdue = t0() + 2 * DAY + 5 * 60_000;
    clock.set(overdue);
    let step = b.task_step(overdue).await.unwrap();
    assert_eq!((step.escalated, step.digests), (2, 1));
    for e in [&a, &b] {
        let again = e.task_step(overdue + 60_000).await.unwrap();
        assert_eq!((again.escalated, again.digests), (0, 0));
    }
    // The soonest due first: the first run's two, overdue and escalated, then the second's.
    let open = store.tasks(None, TaskState::Open, 100).await.unwrap();
    assert_eq!(
        open.iter().map(|t| t.id).collect::<Vec<_>>(),
        [&ids[1..], &second[..]].concat()
    );
    for t in &open {
        let first_run = ids.contains(&t.id);
        assert_eq!(t.is_overdue(overdue), first_run);
        assert_eq!(t.escalated_at, first_run.then_some(overdue));
    }
    let done = store.tasks(None, TaskState::Done, 100).await.unwrap();
    assert_eq!(done[0].escalated_at, None);

    let mails = store.mails().await.unwrap();
    assert_eq!(
        digests(&mails, "desk@example.com").len(),
        2,
        "no news for the desk"
    );
    let boss = digests(&mails, "boss@example.com");
    assert_eq!(boss.len(), 1, "{mails:#?}");
    assert_eq!(
        boss[0].subject,
        "[campaignd] tasks: 0 new and 2 overdue for Club supervisor"
    );
    assert!(!boss[0].text.contains(&format!("task {} ", ids[0])));
    // The supervisor names no zone: UTC, said so.
    let due = store.task(ids[1]).await.unwrap().unwrap().due_at.unwrap();
    let utc = chrono::DateTime::from_timestamp_millis(due)
        .unwrap()
        .format("%Y-%m-%d %H:%M UTC")
        .to_string();
    assert!(
        boss[0].text.contains(&format!("due {utc}")),
        "{utc}: {}",
        boss[0].text
    );
    for id in &ids[1..] {
        assert!(
            boss[0].text.contains(&format!(
                "task {id}  service  club-care/visit  team desk  137****"
            )),
            "{}",
            boss[0].text
        );
    }

    // Through the housekeeping pass, three hours on: the second run's tasks are overdue
    // too, escalated once, and the supervisor hears of them in a digest of their own.
    clock.set(overdue + 3 * HOUR);
    let tick = a.tick().await.unwrap().tasks;
    assert_eq!((tick.escalated, tick.digests), (3, 1));
    assert_eq!(b.tick().await.unwrap().tasks, Default::default());
    let mails = store.mails().await.unwrap();
    let boss = digests(&mails, "boss@example.com");
    assert_eq!(boss.len(), 2);
    assert_eq!(
        boss[1].subject,
        "[campaignd] tasks: 0 new and 3 overdue for Club supervisor"
    );
    for id in &second {
        assert!(boss[1].text.contains(&format!("task {id} ")));
    }
}
