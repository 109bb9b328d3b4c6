//! "A response counts however late it is processed", at the engine level and across
//! replicas: a reply received inside a wave's window counts (and the stored report shows
//! it) even when it is attributed after the run finished, and a replica without the
//! attribution lease does not close a window over a reply still waiting to be attributed.
//! Time is a manual clock, so every step happens at a chosen instant.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use channels::sms::{OutboxConfig, SmsConfig};
use chrono::TimeZone;
use engine::clock::ManualClock;
use engine::{Engine, EngineConfig};
use store::Store;
use store::inbound::{NewInbound, source};
use store::subscribers::OnDuplicate;

use crate::helpers::{self, Backend};

const WAVES: &str = r#"
campaign: test-campaign
timezone: Asia/Shanghai
audience:
  segment: students
waves:
  - id: sms_offer
    channel: sms
    template: templates/offer.txt
    respond_within: 1d
    send_within: 6h
    responses:
      - reply: "1"
  - id: reminder
    after: sms_offer
    targets: no_response
    channel: sms
    template: templates/offer.txt
    respond_within: 1d
    send_within: 6h
    responses:
      - reply: "1"
"#;

const MSISDNS: [&str; 3] = ["13800000001", "13800000002", "13800000003"];
/// Longer than any step below, so the holder keeps the attribution lease throughout and
/// the barrier's grace (four leases) is never what lets a window close unless a test says so.
const LEASE: Duration = Duration::from_secs(3 * 86_400);
const MINUTE: i64 = 60_000;

fn t0() -> i64 {
    chrono_tz::Asia::Shanghai
        .with_ymd_and_hms(2026, 9, 7, 10, 0, 0)
        .unwrap()
        .timestamp_millis()
}

async fn replica(
    store: &Store,
    worker: &str,
    clock: &ManualClock,
    dir: &std::path::Path,
) -> Engine {
    let sms = channels::sms::build(&SmsConfig::Outbox(OutboxConfig {
        path: dir.join(format!("outbox-{worker}.jsonl")),
    }))
    .await
    .unwrap();
    let mut chans: HashMap<String, Arc<dyn channels::Channel>> = HashMap::new();
    chans.insert("sms".into(), sms);
    let mut cfg = EngineConfig::new(worker, helpers::repo_root().join("workflows/calendars"));
    cfg.lease = LEASE;
    let e = Engine::new(store.clone(), clock.clock(), chans, cfg).unwrap();
    let wf = spec::load_file(&helpers::write_workflows(dir, WAVES)).unwrap();
    e.load(vec![wf]).await.unwrap();
    e
}

/// Three students; replica `a` plans and sends the first wave; subscriber 0 replies "1" a
/// minute before the window closes. Returns (store, run id, close time, subscriber ids).
async fn planned_and_replied(db: &helpers::TestDb, a: &Engine) -> (i64, i64, Vec<i64>) {
    let store = &db.store;
    let rows: Vec<_> = MSISDNS
        .iter()
        .map(|m| store::testing::subscriber(m))
        .collect();
    store
        .insert_subscribers(&rows, OnDuplicate::Fail, 0)
        .await
        .unwrap();
    let mut subs = Vec::new();
    for m in MSISDNS {
        subs.push(store.subscriber_by_msisdn(m).await.unwrap().unwrap());
    }
    let run_id = a.trigger("test-campaign", "test").await.unwrap();
    assert_eq!(a.tick().await.unwrap().waves_planned, 1);
    while a.dispatch_round("sms").await.unwrap().claimed > 0 {}
    let closes = store.wave_runs(run_id).await.unwrap()[0].closes_at.unwrap();
    // Stored by the API as it arrived; attribution has not run since.
    store
        .insert_inbound(&[NewInbound {
            source: source::MO,
            idem_key: None,
            msisdn: Some(MSISDNS[0].into()),
            kind: "reply".into(),
            value: Some("1".into()),
            payload: "{}".into(),
            received_at: closes - MINUTE,
        }])
        .await
        .unwrap();
    (run_id, closes, subs)
}

async fn replica_without_the_lease_waits_for_the_reply(backend: Backend) {
    let db = helpers::fresh_db(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(t0());
    let a = replica(&db.store, "a", &clock, dir.path()).await;
    let b = replica(&db.store, "b", &clock, dir.path()).await;
    let (run_id, closes, subs) = planned_and_replied(&db, &a).await;

    // b ticks after the close; a holds the attribution lease and has not run yet.
    clock.set(closes + MINUTE);
    let s = b.tick().await.unwrap();
    assert_eq!(
        (s.inbound_processed, s.waves_closed, s.waves_planned),
        (0, 0, 0),
        "{s:?}"
    );
    let waves = db.store.wave_runs(run_id).await.unwrap();
    assert_eq!(
        (waves[0].state.as_str(), waves[1].state.as_str()),
        ("open", "pending")
    );

    // a attributes the reply; then the window closes and the reminder is planned.
    let s = a.tick().await.unwrap();
    assert_eq!(
        (s.inbound_processed, s.waves_closed, s.waves_planned),
        (1, 1, 1),
        "{s:?}"
    );
    let reminder: Vec<i64> = db
        .store
        .contact_states(waves[1].id)
        .await
        .unwrap()
        .into_iter()
        .map(|(sub, _, _)| sub)
        .collect();
    assert_eq!(
        reminder,
        vec![subs[1], subs[2]],
        "the responder gets no reminder"
    );
    // b, ticking again, finds nothing left to do twice.
    let s = b.tick().await.unwrap();
    assert_eq!((s.waves_closed, s.waves_planned), (0, 0), "{s:?}");
}

#[tokio::test]
async fn replica_without_the_lease_waits_for_the_reply_on_sqlite() {
    replica_without_the_lease_waits_for_the_reply(Backend::Sqlite).await;
}

#[tokio::test]
async fn replica_without_the_lease_waits_for_the_reply_on_postgres() {
    replica_without_the_lease_waits_for_the_reply(Backend::Postgres).await;
}

async fn reply_attributed_after_the_run_finished_counts(backend: Backend) {
    let db = helpers::fresh_db(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(t0());
    let a = replica(&db.store, "a", &clock, dir.path()).await;
    let b = replica(&db.store, "b", &clock, dir.path()).await;
    let (run_id, closes, _) = planned_and_replied(&db, &a).await;
    // a is stalled (alive: it keeps its lease) past the barrier's grace, so b closes both
    // windows and finishes the run with the reply still unattributed.
    drop(a);
    let grace = 4 * LEASE.as_millis() as i64;
    let mut now = closes + grace + 1;
    loop {
        clock.set(now);
        let held = db
            .store
            .try_singleton_lease("attribution", "a", now + grace * 10, now)
            .await
            .unwrap();
        assert!(held);
        let s = b.tick().await.unwrap();
        assert_eq!(s.inbound_processed, 0);
        while b.dispatch_round("sms").await.unwrap().claimed > 0 {}
        if s.runs_finished == 1 {
            break;
        }
        now += grace + 2 * 86_400_000;
        assert!(now < closes + 100 * 86_400_000, "the run never finished");
    }
    let report = |json: String| serde_json::from_str::<evaluate::Report>(&json).unwrap();
    let before = report(db.store.run_report(run_id).await.unwrap().unwrap());
    assert_eq!(before.waves[0].responded, 0);

    // a comes back (a fresh process: nothing of the run in memory) and attributes.
    let a = replica(&db.store, "a", &clock, dir.path()).await;
    let s = a.tick().await.unwrap();
    assert_eq!((s.inbound_processed, s.reports_refreshed), (1, 1), "{s:?}");
    let after = report(db.store.run_report(run_id).await.unwrap().unwrap());
    assert_eq!(
        after.waves[0].responded, 1,
        "the late-attributed reply counts"
    );
    assert_eq!(after.finished_at, before.finished_at);
    assert_eq!(a.tick().await.unwrap().reports_refreshed, 0);
}

#[tokio::test]
async fn reply_attributed_after_the_run_finished_counts_on_sqlite() {
    reply_attributed_after_the_run_finished_counts(Backend::Sqlite).await;
}

#[tokio::test]
async fn reply_attributed_after_the_run_finished_counts_on_postgres() {
    reply_attributed_after_the_run_finished_counts(Backend::Postgres).await;
}
