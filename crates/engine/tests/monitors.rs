//! Churn-warning monitors driven day by day on a manual clock: an alert per episode (not per
//! day), escalation tells the owner again, a lower level does not, churn and recovery close
//! the episode, a churned subscriber is not alerted again, each slot is evaluated once
//! across engines, and alerts go to the staff who own the subscriber. Runs on SQLite, or
//! PostgreSQL with CAMPAIGND_TEST_BACKEND=postgres.

use std::collections::HashMap;

use chrono::TimeZone;
use engine::clock::ManualClock;
use engine::{Engine, EngineConfig};
use sea_orm::ConnectionTrait;
use store::alerts::{AlertRow, EpisodeState};
use store::events::{EventSource, NewEvent};
use store::mail::MailRow;
use store::subscribers::OnDuplicate;
use store::testing::RawDb as _;
use store::{Millis, Store};
use tempfile::TempDir;

const DAY: i64 = 86_400_000;

/// Monday 2026-09-07 07:30 in Shanghai: half an hour after the monitor's daily slot.
fn t0() -> Millis {
    chrono_tz::Asia::Shanghai
        .with_ymd_and_hms(2026, 9, 7, 7, 30, 0)
        .unwrap()
        .timestamp_millis()
}

const STAFF: &str = r#"
staff:
  - id: west
    name: West team
    email: west@example.com
    owns: { region: [xian] }
  - id: desk
    name: Retention desk
    email: desk@example.com
"#;

const MONITOR: &str = r#"
monitor: churn-watch
description: Daily churn warning
timezone: Asia/Shanghai
schedule:
  cron: "0 0 7 * * *"
  catch_up: last
  catch_up_window: 6h
population:
  where: "arpu_3m >= 120"
signals:
  - name: complaints
    when: "complaints_30d >= 1"
    weight: 30
    says: Complained this month
  - name: queries
    when: "bill_queries_30d >= 3"
    weight: 30
    says: Three or more bill queries in 30 days
  - name: risk
    when: "churn_risk >= 0.8"
    weight: 40
levels:
  - { name: watch, score: 30 }
  - { name: high, score: 60 }
  - { name: critical, score: 100 }
assign:
  - by: region
  - to: desk
"#;

const RETENTION: &str = r#"
campaign: win-back
timezone: Asia/Shanghai
purpose: care
audience:
  where: "arpu_3m >= 0"
  alerts: { monitor: churn-watch, level: high }
waves:
  - id: call
    channel: outbound_call
    team: retention
    template: call.txt
    respond_within: 3d
"#;

struct Rig {
    store: Store,
    _dir: TempDir,
    clock: ManualClock,
    monitors: Vec<spec::monitor::Monitor>,
    staff: spec::monitor::StaffDirectory,
    cfg: EngineConfig,
}

/// Subscribers: 0 `xian`, 1 and 2 elsewhere, all core (ARPU 300) except 2 (ARPU 50).
async fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let store = store::testing::fresh_store(dir.path()).await.unwrap();
    let subs: Vec<_> = (0..4)
        .map(|i| {
            store::testing::subscriber(&format!("1380000{i:04}"))
                .with("region", if i == 0 { "xian" } else { "yulin" })
                .with("arpu_3m", if i == 2 { 50.0 } else { 300.0 })
        })
        .collect();
    store
        .insert_subscribers(&subs, OnDuplicate::Fail, t0() - 40 * DAY)
        .await
        .unwrap();
    let wf = dir.path().join("workflows");
    std::fs::create_dir_all(wf.join("monitors")).unwrap();
    std::fs::write(wf.join("staff.yaml"), STAFF).unwrap();
    std::fs::write(wf.join("monitors/churn-watch.yaml"), MONITOR).unwrap();
    std::fs::write(wf.join("call.txt"), "Call {name}: a retention offer").unwrap();
    let (monitors, staff, diags) = spec::monitor::load_monitors(&wf);
    assert!(diags.is_empty(), "{diags:#?}");
    let cfg = EngineConfig::new("mon", dir.path().join("no-calendars"));
    Rig {
        store,
        _dir: dir,
        clock: ManualClock::new(t0()),
        monitors,
        staff,
        cfg,
    }
}

impl Rig {
    fn engine(&self, worker: &str) -> Engine {
        let mut cfg = self.cfg.clone();
        cfg.worker_id = worker.into();
        Engine::new(self.store.clone(), self.clock.clock(), HashMap::new(), cfg)
            .unwrap()
            .with_monitors(self.monitors.clone(), self.staff.clone())
    }

    async fn id(&self, i: usize) -> i64 {
        self.store
            .subscriber_by_msisdn(&format!("1380000{i:04}"))
            .await
            .unwrap()
            .unwrap()
    }

    async fn set(&self, i: usize, column: &str, value: f64) {
        let id = self.id(i).await;
        self.store
            .db()
            .execute_raw(store::stmt(
                self.store.db(),
                &format!("UPDATE subscriber SET {column} = ? WHERE id = ?"),
                [value.into(), id.into()],
            ))
            .await
            .unwrap();
    }

    async fn event(&self, i: usize, kind: &str, at: Millis) {
        let id = self.id(i).await;
        self.store
            .record_events(&[NewEvent {
                subscriber_id: id,
                kind: kind.into(),
                at,
                value: None,
                detail: Some(format!("{at}")),
                source: EventSource::Import,
                received_at: at,
            }])
            .await
            .unwrap();
    }

    async fn alerts(&self) -> Vec<AlertRow> {
        let mut a = self.store.alerts(None, None, 100).await.unwrap();
        a.sort_by_key(|r| r.id);
        a
    }

    async fn digests(&self) -> Vec<MailRow> {
        let mut m: Vec<MailRow> = self
            .store
            .mails()
            .await
            .unwrap()
            .into_iter()
            .filter(|m| m.kind == "digest")
            .collect();
        m.sort_by_key(|m| m.id);
        m
    }

    fn next_day(&self) {
        self.clock
            .advance(std::time::Duration::from_millis(DAY as u64));
    }
}

fn open(a: &[AlertRow]) -> Vec<(String, String, String)> {
    a.iter()
        .filter(|r| r.state == EpisodeState::Open.as_str())
        .map(|r| (r.msisdn.clone(), r.level.clone(), r.owner.clone()))
        .collect()
}

#[tokio::test]
async fn an_alert_per_episode_escalates_closes_and_goes_to_its_owner() {
    let rig = rig().await;
    let e = rig.engine("a");
    // Day 1: 0 complained (30: watch), 1 complained and is at risk (70: high), 2 complained
    // but is not a core customer, 3 is quiet.
    rig.set(0, "complaints_30d", 1.0).await;
    rig.set(1, "complaints_30d", 1.0).await;
    rig.set(1, "churn_risk", 0.9).await;
    rig.set(2, "complaints_30d", 3.0).await;
    assert_eq!(e.tick().await.unwrap().monitor_evaluations, 1);
    assert_eq!(
        open(&rig.alerts().await),
        vec![
            ("13800000000".into(), "watch".into(), "west".into()),
            ("13800000001".into(), "high".into(), "desk".into()),
        ]
    );
    let mails = rig.digests().await;
    assert_eq!(mails.len(), 2, "{mails:#?}");
    let west = mails
        .iter()
        .find(|m| m.recipients == ["west@example.com"])
        .unwrap();
    assert!(
        west.subject.contains("1 new and 0 escalated"),
        "{}",
        west.subject
    );
    assert!(
        west.text.contains("WATCH  new  138****0000"),
        "{}",
        west.text
    );
    assert!(west.text.contains("Complained this month"), "{}", west.text);
    assert!(
        !west.text.contains("13800000000"),
        "unmasked: {}",
        west.text
    );
    let desk = mails
        .iter()
        .find(|m| m.recipients == ["desk@example.com"])
        .unwrap();
    assert!(
        desk.text.contains("HIGH  new  138****0001"),
        "{}",
        desk.text
    );
    assert!(desk.text.contains("    - risk"), "{}", desk.text);

    // A retention campaign on the monitor's alerts at `high` or above takes 1 only.
    let wf_dir = rig._dir.path().join("workflows");
    std::fs::write(wf_dir.join("retention.yaml"), RETENTION).unwrap();
    let wf = spec::load_file(&wf_dir.join("retention.yaml")).unwrap_or_else(|d| panic!("{d:#?}"));
    let funnel = audience::preview(&rig.store, &wf, None, rig.clock.now())
        .await
        .unwrap();
    assert!(
        funnel.contains(&("alerts:churn-watch:high".to_owned(), 1)),
        "{funnel:?}"
    );
    assert_eq!(funnel.last().map(|f| f.1), Some(1), "{funnel:?}");
    let bad = RETENTION.replace("level: high", "level: severe");
    std::fs::write(wf_dir.join("retention.yaml"), bad).unwrap();
    let diags = spec::load_file(&wf_dir.join("retention.yaml")).unwrap_err();
    assert!(
        diags[0]
            .to_string()
            .contains("retention.yaml:7:42: unknown level `severe` of monitor `churn-watch`: expected one of watch, high, critical"),
        "{diags:#?}"
    );

    // The same slot again, here and on another engine: evaluated once.
    assert_eq!(e.tick().await.unwrap().monitor_evaluations, 0);
    assert_eq!(rig.engine("b").tick().await.unwrap().monitor_evaluations, 0);

    // Day 2: nothing changed: the episodes stay open, nobody is told again.
    rig.next_day();
    assert_eq!(e.tick().await.unwrap().monitor_evaluations, 1);
    assert_eq!(rig.alerts().await.len(), 2);
    assert_eq!(rig.digests().await.len(), 2);

    // Day 3: 0 queries their bill three times (60: high) and is told again; 1 ports out.
    rig.next_day();
    let now = rig.clock.now();
    for h in 1..=3 {
        rig.event(0, "bill_query", now - h * 3_600_000).await;
    }
    rig.event(1, "port_out", now - 3_600_000).await;
    assert_eq!(e.tick().await.unwrap().monitor_evaluations, 1);
    let alerts = rig.alerts().await;
    assert_eq!(
        open(&alerts),
        vec![("13800000000".into(), "high".into(), "west".into())]
    );
    let churned = alerts.iter().find(|a| a.msisdn == "13800000001").unwrap();
    assert_eq!(churned.close_reason.as_deref(), Some("churned"));
    let mails = rig.digests().await;
    assert_eq!(mails.len(), 3, "{mails:#?}");
    assert!(
        mails[2].subject.contains("0 new and 1 escalated"),
        "{}",
        mails[2].subject
    );
    assert!(
        mails[2].text.contains("HIGH  escalated  138****0000"),
        "{}",
        mails[2].text
    );

    // Day 4: 0's complaint is resolved (30: watch): recorded, nobody told. 1 churned and
    // still shows its signals: not alerted again.
    rig.next_day();
    rig.set(0, "complaints_30d", 0.0).await;
    assert_eq!(e.tick().await.unwrap().monitor_evaluations, 1);
    assert_eq!(
        open(&rig.alerts().await),
        vec![("13800000000".into(), "watch".into(), "west".into())]
    );
    assert_eq!(rig.alerts().await.len(), 2);
    assert_eq!(rig.digests().await.len(), 3);

    // 31 days on, the queries are out of the window: 0 recovered, the episode closes.
    rig.clock
        .advance(std::time::Duration::from_millis(31 * DAY as u64));
    assert_eq!(e.tick().await.unwrap().monitor_evaluations, 1);
    let alerts = rig.alerts().await;
    assert!(open(&alerts).is_empty(), "{alerts:#?}");
    assert_eq!(alerts[0].close_reason.as_deref(), Some("recovered"));

    // A new complaint next day is a new episode, and a new digest.
    rig.next_day();
    rig.set(0, "complaints_30d", 2.0).await;
    assert_eq!(e.tick().await.unwrap().monitor_evaluations, 1);
    let alerts = rig.alerts().await;
    assert_eq!(alerts.len(), 3);
    assert_eq!(open(&alerts).len(), 1);
    assert_eq!(rig.digests().await.len(), 4);
}

#[tokio::test]
async fn a_digest_waits_for_the_next_interval_and_loses_nothing() {
    let mut rig = rig().await;
    // Evaluated hourly, told at most daily.
    let src = MONITOR
        .replace("cron: \"0 0 7 * * *\"", "cron: \"0 0 * * * *\"")
        .replace("catch_up_window: 6h", "catch_up_window: 30m")
        + "digest:\n  every: 1d\n";
    let dir = rig._dir.path().join("workflows");
    std::fs::write(dir.join("monitors/churn-watch.yaml"), src).unwrap();
    let (monitors, _, diags) = spec::monitor::load_monitors(&dir);
    assert!(diags.is_empty(), "{diags:#?}");
    rig.monitors = monitors;
    let e = rig.engine("a");
    // Midnight UTC is 08:00 in Shanghai: start just after it, so the hours below share a
    // UTC day (the digest interval's buckets).
    let day = (t0() / DAY + 1) * DAY;
    rig.clock.set(day + 10 * 60_000);
    rig.set(0, "complaints_30d", 1.0).await;
    assert_eq!(e.tick().await.unwrap().monitor_evaluations, 1);
    assert_eq!(rig.digests().await.len(), 1);

    // An hour later 3 alerts at the desk's and 0 escalates: the desk hears today, 0's
    // owner (told today already) waits.
    rig.clock.advance(std::time::Duration::from_secs(3600));
    rig.set(3, "churn_risk", 0.9).await;
    rig.set(0, "churn_risk", 0.9).await;
    assert_eq!(e.tick().await.unwrap().monitor_evaluations, 1);
    let mails = rig.digests().await;
    assert_eq!(mails.len(), 2, "{mails:#?}");
    assert_eq!(mails[1].recipients, ["desk@example.com"]);

    // Next day's first evaluation tells 0's owner of the escalation.
    rig.clock.set(day + DAY + 10 * 60_000);
    assert_eq!(e.tick().await.unwrap().monitor_evaluations, 1);
    let mails = rig.digests().await;
    assert_eq!(mails.len(), 3, "{mails:#?}");
    assert_eq!(mails[2].recipients, ["west@example.com"]);
    assert!(
        mails[2].text.contains("HIGH  escalated  138****0000"),
        "{}",
        mails[2].text
    );
}

#[tokio::test]
async fn a_long_digest_lists_the_first_alerts_counts_the_rest_and_tells_each_once() {
    let rig = rig().await;
    let many: Vec<_> = (0..250)
        .map(|i| {
            store::testing::subscriber(&format!("1390000{i:04}"))
                .with("region", "yulin")
                .with("arpu_3m", 300.0)
                .with("complaints_30d", 1)
        })
        .collect();
    rig.store
        .insert_subscribers(&many, OnDuplicate::Fail, t0() - 40 * DAY)
        .await
        .unwrap();
    // One of them is worse off: the digest lists it first.
    rig.set(3, "complaints_30d", 1.0).await;
    rig.set(3, "churn_risk", 0.9).await;
    let e = rig.engine("a");
    assert_eq!(e.tick().await.unwrap().monitor_evaluations, 1);
    let mails = rig.digests().await;
    assert_eq!(mails.len(), 1, "{mails:#?}");
    let text = &mails[0].text;
    assert!(
        mails[0].subject.contains("251 new and 0 escalated"),
        "{}",
        mails[0].subject
    );
    let listed: Vec<&str> = text.lines().filter(|l| l.starts_with("alert ")).collect();
    assert_eq!(listed.len(), 200, "{text}");
    assert!(listed[0].contains("HIGH  new  138****0003"), "{text}");
    assert!(text.contains("... and 51 more"), "{text}");
    assert!(
        !text.contains("13900000"),
        "a number is shown unmasked: {text}"
    );

    // Every alert was told, listed or counted: the next evaluations mail nobody.
    rig.next_day();
    assert_eq!(e.tick().await.unwrap().monitor_evaluations, 1);
    assert_eq!(rig.digests().await.len(), 1);
    let told = rig
        .store
        .alerts(None, Some(EpisodeState::Open), 1000)
        .await
        .unwrap();
    assert_eq!(told.len(), 251);
}
