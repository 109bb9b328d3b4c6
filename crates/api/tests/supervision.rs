//! A panic in a background loop is caught, the loop restarted, and `/readyz` shows it: the
//! engine's dispatcher under `Engine::run`, with a channel whose first batch panics, and the
//! daemon's API wiring (`ServeOptions::supervisor` = the engine's). Manual clock; SQLite, or
//! PostgreSQL with CAMPAIGND_TEST_BACKEND=postgres.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use channels::{Accepted, Channel, Outbound, SendError};
use chrono::TimeZone;
use engine::clock::ManualClock;
use engine::{Engine, EngineConfig};
use serde_json::Value;
use store::subscribers::OnDuplicate;
use tokio::time::Instant;

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

const DEADLINE: Duration = Duration::from_secs(60);

const SEGMENTS: &str = r#"
segments:
  students:
    where: "student_stage in ['freshman', 'student', 'graduate']"
"#;

const WORKFLOW: &str = r#"
campaign: sup
timezone: Asia/Shanghai
audience:
  segment: students
waves:
  - id: sms_offer
    channel: sms
    template: templates/offer.txt
    respond_within: 1d
"#;

/// Panics on its first batch; records every later message.
struct PanicsOnce {
    panicked: AtomicBool,
    sent: Mutex<Vec<String>>,
}

#[async_trait]
impl Channel for PanicsOnce {
    fn kind(&self) -> &'static str {
        "sms"
    }

    async fn send_batch(&self, batch: &[Outbound]) -> Vec<Result<Accepted, SendError>> {
        if !self.panicked.swap(true, Ordering::SeqCst) {
            panic!("gateway client exploded on {}", batch[0].msisdn);
        }
        self.sent
            .lock()
            .unwrap()
            .extend(batch.iter().map(|o| o.key.clone()));
        batch
            .iter()
            .map(|_| {
                Ok(Accepted {
                    gateway_ref: None,
                    queued: false,
                })
            })
            .collect()
    }
}

fn dispatcher(ready: &Value) -> Option<&Value> {
    ready["tasks"]
        .as_array()?
        .iter()
        .find(|t| t["name"] == "dispatch:sms:0")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_that_panics_is_restarted_and_readyz_shows_the_restart() -> Res {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir()?;
    let store = store::testing::fresh_store(dir.path()).await?;
    let t0 = chrono_tz::Asia::Shanghai
        .with_ymd_and_hms(2026, 9, 7, 10, 0, 0)
        .single()
        .ok_or("t0")?
        .timestamp_millis();
    let subs: Vec<_> = (0..3)
        .map(|i| store::testing::subscriber(&format!("1380000{i:04}")))
        .collect();
    store
        .insert_subscribers(&subs, OnDuplicate::Fail, t0 - 86_400_000)
        .await?;
    let wf_dir = dir.path().join("workflows");
    std::fs::create_dir_all(wf_dir.join("templates"))?;
    std::fs::write(wf_dir.join("segments.yaml"), SEGMENTS)?;
    std::fs::write(wf_dir.join("templates/offer.txt"), "offer for {name}")?;
    let wf_path = wf_dir.join("sup.yaml");
    std::fs::write(&wf_path, WORKFLOW)?;

    let sms = Arc::new(PanicsOnce {
        panicked: AtomicBool::new(false),
        sent: Mutex::new(Vec::new()),
    });
    let clock = ManualClock::new(t0);
    let mut cfg = EngineConfig::new("sup", dir.path().join("no-calendars"));
    cfg.batch_size = 1;
    cfg.poll = Duration::from_millis(10);
    cfg.lease = Duration::from_secs(60);
    let mut chans: HashMap<String, Arc<dyn Channel>> = HashMap::new();
    chans.insert("sms".into(), sms.clone());
    let engine = Arc::new(Engine::new(store.clone(), clock.clock(), chans, cfg)?);
    let wf = spec::load_file(&wf_path).map_err(|d| format!("{d:?}"))?;
    engine.load(vec![wf]).await?;
    let run_id = engine.trigger("sup", "test").await?;
    engine.tick().await?;
    let wave = store.wave_runs(run_id).await?[0].id;

    let listener = api::bind("127.0.0.1:0".parse()?)?;
    let base = format!("http://{}", listener.local_addr()?);
    let cancel = tokio_util::sync::CancellationToken::new();
    let api_cancel = cancel.clone();
    let served = tokio::spawn(api::serve_with(
        listener,
        api::AppState {
            store: store.clone(),
        },
        api::ServeOptions {
            supervisor: engine.supervisor(),
            expect_engine: true,
            ..api::ServeOptions::default()
        },
        async move { api_cancel.cancelled().await },
    ));
    let run = tokio::spawn(engine.clone().run(cancel.clone(), false));

    // The first batch panicked; the restarted dispatcher sends the other two contacts.
    let client = reqwest::Client::builder().timeout(DEADLINE).build()?;
    let until = Instant::now() + DEADLINE;
    let ready = loop {
        let ready: Value = client
            .get(format!("{base}/readyz"))
            .send()
            .await?
            .json()
            .await?;
        let restarted = dispatcher(&ready).is_some_and(|t| t["restarts"] == 1);
        if restarted && sms.sent.lock().unwrap().len() == 2 {
            break ready;
        }
        assert!(
            Instant::now() < until,
            "no restart and no later send: {ready}; sent {:?}",
            sms.sent.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(ready["status"], "ready", "{ready}");
    let task = dispatcher(&ready).ok_or("no dispatcher task")?;
    assert_eq!(task["running"], true);
    let message = task["last_panic"].as_str().ok_or("no panic message")?;
    assert!(
        message.starts_with("gateway client exploded on 138"),
        "{message}"
    );
    assert!(
        !message.contains("13800000"),
        "the number in a panic message is masked: {message}"
    );

    // The batch that panicked kept its lease, as after a crash; once it runs out, the
    // contact is sent (once).
    clock.advance(Duration::from_secs(120));
    while store.pending_in_wave(wave).await? > 0 {
        assert!(Instant::now() < until, "the panicked batch never went out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut sent = sms.sent.lock().unwrap().clone();
    sent.sort();
    sent.dedup();
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert_eq!(sms.sent.lock().unwrap().len(), 3);

    cancel.cancel();
    tokio::time::timeout(DEADLINE, run).await???;
    tokio::time::timeout(DEADLINE, served).await???;
    Ok(())
}
