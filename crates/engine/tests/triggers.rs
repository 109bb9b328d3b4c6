//! Triggered entry through the engine: a campaign with `trigger:` gathers at its schedule's
//! slots. A slot with nobody to let in is recorded `nothing_triggered` and starts no run; a
//! complaint recorded between slots starts a run at the next one that contacts that
//! subscriber once; later slots do not contact them again for the same complaint. Runs on
//! SQLite, or PostgreSQL with CAMPAIGND_TEST_BACKEND=postgres.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use channels::{Accepted, Channel, Outbound, SendError};
use chrono::TimeZone;
use engine::clock::ManualClock;
use engine::{Engine, EngineConfig};
use sea_orm::ConnectionTrait;
use store::Millis;
use store::events::{EventSource, NewEvent};
use store::subscribers::OnDuplicate;
use store::testing::RawDb as _;

const WORKFLOW: &str = r#"
campaign: complaint-care
timezone: Asia/Shanghai
purpose: care
schedule:
  cron: "0 */15 * * * *"
trigger: { event: complaint, within: 1h }
audience:
  where: "student_stage == 'freshman'"
waves:
  - id: sms
    channel: sms
    template: care.txt
    respond_within: 2d
"#;

/// 2026-09-07 in Shanghai at `h:m:10`.
fn at(h: u32, m: u32) -> Millis {
    chrono_tz::Asia::Shanghai
        .with_ymd_and_hms(2026, 9, 7, h, m, 10)
        .unwrap()
        .timestamp_millis()
}

#[derive(Default)]
struct Recorder {
    sent: std::sync::Mutex<Vec<String>>,
}

#[async_trait]
impl Channel for Recorder {
    fn kind(&self) -> &'static str {
        "sms"
    }

    async fn send_batch(&self, batch: &[Outbound]) -> Vec<Result<Accepted, SendError>> {
        let mut sent = self.sent.lock().unwrap();
        batch
            .iter()
            .map(|o| {
                sent.push(o.msisdn.clone());
                Ok(Accepted {
                    gateway_ref: None,
                    queued: false,
                })
            })
            .collect()
    }
}

#[tokio::test]
async fn a_complaint_starts_a_run_at_the_next_slot_and_is_answered_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = store::testing::fresh_store(dir.path()).await.unwrap();
    let subs: Vec<_> = (0..3)
        .map(|i| store::testing::subscriber(&format!("1390000{i:04}")))
        .collect();
    store
        .insert_subscribers(&subs, OnDuplicate::Fail, at(9, 0))
        .await
        .unwrap();
    let complainer = store
        .subscriber_by_msisdn(&subs[1].msisdn)
        .await
        .unwrap()
        .unwrap();
    let wf_dir = dir.path().join("workflows");
    std::fs::create_dir_all(&wf_dir).unwrap();
    std::fs::write(wf_dir.join("care.txt"), "Sorry, {name}: we are on it").unwrap();
    std::fs::write(wf_dir.join("care.yaml"), WORKFLOW).unwrap();
    let (wfs, diags) = spec::load_dir(&wf_dir);
    assert!(diags.is_empty(), "{diags:#?}");
    let clock = ManualClock::new(at(9, 59));
    let sms = Arc::new(Recorder::default());
    let mut chans: HashMap<String, Arc<dyn Channel>> = HashMap::new();
    chans.insert("sms".into(), sms.clone());
    let engine = Engine::new(
        store.clone(),
        clock.clock(),
        chans,
        EngineConfig::new("trig", dir.path().join("no-calendars")),
    )
    .unwrap();
    engine.load(wfs).await.unwrap();

    let step = |h, m| {
        let (engine, clock) = (&engine, &clock);
        async move {
            clock.set(at(h, m));
            engine.tick().await.unwrap();
            // The first wave is planned by the tick after the one that started the run.
            engine.tick().await.unwrap();
            engine.dispatch_round("sms").await.unwrap();
        }
    };
    step(10, 0).await;
    store
        .record_events(&[NewEvent {
            subscriber_id: complainer,
            kind: "complaint".into(),
            at: at(10, 5),
            value: None,
            detail: None,
            source: EventSource::Api,
            received_at: at(10, 5),
        }])
        .await
        .unwrap();
    step(10, 15).await;
    step(10, 30).await;
    step(10, 45).await;

    assert_eq!(*sms.sent.lock().unwrap(), vec![subs[1].msisdn.clone()]);
    let rows = store
        .db()
        .query_all_raw(store::stmt(
            store.db(),
            "SELECT slot_at, state, reason FROM schedule_slot WHERE campaign = 'complaint-care' ORDER BY slot_at",
            [],
        ))
        .await
        .unwrap();
    // The slots from 10:00 (those the first tick found before it were `missed`).
    let slots: Vec<(Millis, String, Option<String>)> = rows
        .iter()
        .map(|r| {
            (
                r.try_get("", "slot_at").unwrap(),
                r.try_get("", "state").unwrap(),
                r.try_get("", "reason").unwrap(),
            )
        })
        .filter(|s: &(Millis, String, Option<String>)| s.0 >= at(10, 0) - 10_000)
        .collect();
    let skipped = |m| {
        (
            at(10, m) - 10_000,
            "skipped".to_owned(),
            Some("nothing_triggered".to_owned()),
        )
    };
    assert_eq!(slots.len(), 4, "{slots:?}");
    assert_eq!(slots[0], skipped(0));
    assert_eq!(slots[1].0, at(10, 15) - 10_000);
    assert_ne!(slots[1].1, "skipped", "{slots:?}");
    assert_eq!(slots[2], skipped(30));
    assert_eq!(slots[3], skipped(45));
    assert_eq!(store.runs_of("complaint-care").await.unwrap().len(), 1);

    // `campaignd why` tells it: entered by the complaint, then contacted, in that order.
    let story = store
        .subscriber_story(complainer, Some("complaint-care"))
        .await
        .unwrap();
    let steps: Vec<String> = story
        .iter()
        .map(|s| match &s.step {
            store::story::Step::Entered { by } => format!("entered {by}"),
            store::story::Step::Contact { arm, .. } => format!("contact {}", arm.as_str()),
            store::story::Step::LeftOut { reason } => format!("left out {reason}"),
        })
        .collect();
    assert_eq!(steps, ["entered event:complaint", "contact treatment"]);
}
