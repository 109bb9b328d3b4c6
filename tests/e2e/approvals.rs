//! The approval gate of the engine, wired as the daemon wires it (`require_approval`, the
//! loader recorded): no run of a version starts before another principal approved it.

use std::collections::HashMap;

use chrono::TimeZone;
use engine::clock::ManualClock;
use engine::{Engine, EngineConfig, EngineError};
use store::auth::Approval;

use crate::helpers;

const SCHEDULED: &str = r#"
campaign: test-campaign
timezone: Asia/Shanghai
schedule:
  cron: "0 0 10 * * *"
  catch_up: last
  catch_up_window: 2h
audience:
  segment: students
waves:
  - id: sms_offer
    channel: sms
    template: templates/offer.txt
    respond_within: 1d
    send_within: 1d
"#;

async fn gated_engine(store: &store::Store, at: i64) -> (Engine, i64) {
    let dir = tempfile::tempdir().unwrap();
    let wf = spec::load_file(&helpers::write_workflows(dir.path(), SCHEDULED))
        .unwrap_or_else(|d| panic!("{d:?}"));
    let mut cfg = EngineConfig::new("test", helpers::repo_root().join("workflows/calendars"));
    cfg.require_approval = true;
    cfg.loaded_by = "alice".into();
    let mut chans: HashMap<String, std::sync::Arc<dyn channels::Channel>> = HashMap::new();
    chans.insert(
        "sms".into(),
        channels::sms::build(&channels::sms::SmsConfig::Outbox(
            channels::sms::OutboxConfig {
                path: dir.path().join("outbox.jsonl"),
            },
        ))
        .await
        .unwrap(),
    );
    let e = Engine::new(store.clone(), ManualClock::new(at).clock(), chans, cfg).unwrap();
    let loaded = e.load(vec![wf]).await.unwrap();
    (e, loaded[0].1)
}

async fn approval_gate(backend: helpers::Backend) {
    let db = helpers::fresh_db(backend).await;
    let store = db.store.clone();
    // 10:30 in Shanghai: the 10:00 slot is due (catch-up window 2 h).
    let at = chrono_tz::Asia::Shanghai
        .with_ymd_and_hms(2026, 9, 7, 10, 30, 0)
        .unwrap()
        .timestamp_millis();
    let (e, version) = gated_engine(&store, at).await;
    let v = store.version_approval(version).await.unwrap().unwrap();
    assert_eq!(v.loaded_by.as_deref(), Some("alice"));

    // Not approved: a manual trigger is refused, and the due slot is skipped with the reason.
    match e.trigger("test-campaign", "manual").await {
        Err(EngineError::AwaitingApproval { version: v, .. }) => assert_eq!(v, version),
        other => panic!("trigger of an unapproved version: {other:?}"),
    }
    assert_eq!(e.tick().await.unwrap().runs_started, 0);
    let slots = store.slots("test-campaign").await.unwrap();
    assert_eq!(slots.len(), 1, "{slots:?}");
    assert_eq!(slots[0].state, "skipped");
    assert_eq!(slots[0].reason.as_deref(), Some("awaiting approval"));
    assert!(store.runs_of("test-campaign").await.unwrap().is_empty());

    // Four eyes: the loader cannot approve; someone else can, once.
    assert_eq!(
        store.approve_version(version, "alice", at).await.unwrap(),
        Approval::OwnVersion
    );
    assert_eq!(
        store.approve_version(version, "bea", at).await.unwrap(),
        Approval::Approved
    );
    assert_eq!(
        store.approve_version(version, "carl", at).await.unwrap(),
        Approval::AlreadyApproved { by: "bea".into() }
    );
    let run = e.trigger("test-campaign", "manual").await.unwrap();
    assert_eq!(store.runs_of("test-campaign").await.unwrap()[0].id, run);
}

#[tokio::test]
async fn an_unapproved_version_neither_triggers_nor_runs_its_slots_on_sqlite() {
    approval_gate(helpers::Backend::Sqlite).await;
}

#[tokio::test]
async fn an_unapproved_version_neither_triggers_nor_runs_its_slots_on_postgres() {
    approval_gate(helpers::Backend::Postgres).await;
}
