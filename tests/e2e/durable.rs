//! Durable execution at the engine level, step by step: timers that outlive the process,
//! runs that keep the version they started with, deadlines that expire instead of sending
//! late, and retries that tell transient from permanent failures.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use channels::sms::{KannelConfig, OutboxConfig, SmsConfig};
use chrono::TimeZone;
use engine::clock::{Clock, ManualClock};
use engine::{Engine, EngineConfig};
use store::testing::RawDb as _;

use crate::helpers::{self, Backend};

const ONE_WAVE: &str = r#"
campaign: test-campaign
timezone: Asia/Shanghai
audience:
  segment: students
waves:
  - id: sms_offer
    channel: sms
    template: templates/offer.txt
    respond_within: 2d
    send_within: 6h
"#;

const DAY: i64 = 86_400_000;

fn t0() -> i64 {
    chrono_tz::Asia::Shanghai
        .with_ymd_and_hms(2026, 9, 7, 10, 0, 0)
        .unwrap()
        .timestamp_millis()
}

/// A clock that stands at `at` until told otherwise, so each step happens at a chosen
/// instant.
fn frozen(at: i64) -> Clock {
    ManualClock::new(at).clock()
}

fn engine_at(store: &store::Store, at: i64, sms: Arc<dyn channels::Channel>) -> Engine {
    let mut chans: HashMap<String, Arc<dyn channels::Channel>> = HashMap::new();
    chans.insert("sms".into(), sms);
    let mut cfg = EngineConfig::new("test", helpers::repo_root().join("workflows/calendars"));
    cfg.retry_base = Duration::from_secs(60);
    cfg.max_attempts = Some(3);
    Engine::new(store.clone(), frozen(at), chans, cfg).unwrap()
}

async fn outbox(dir: &std::path::Path) -> Arc<dyn channels::Channel> {
    channels::sms::build(&SmsConfig::Outbox(OutboxConfig {
        path: dir.join("outbox.jsonl"),
    }))
    .await
    .unwrap()
}

async fn seed(store: &store::Store, n: usize) {
    let base: Vec<_> = subscribers::generate(&catalogue::shipped(), n, 3).collect();
    store
        .insert_subscribers(&base, store::subscribers::OnDuplicate::Fail, 0)
        .await
        .unwrap();
}

async fn states(store: &store::Store, run_id: i64) -> HashMap<String, usize> {
    let w = store.wave_runs(run_id).await.unwrap();
    let mut out = HashMap::new();
    for (_, _, st) in store.contact_states(w[0].id).await.unwrap() {
        *out.entry(st).or_insert(0) += 1;
    }
    out
}

async fn timers_fire_once_after_a_restart(backend: Backend) {
    let db = helpers::fresh_db(backend).await;
    seed(&db.store, 500).await;
    let dir = tempfile::tempdir().unwrap();
    let wf = spec::load_file(&helpers::write_workflows(dir.path(), ONE_WAVE)).unwrap();

    // First life: plan the wave (arms the window timer), send, then "die".
    let e1 = engine_at(&db.store, t0(), outbox(dir.path()).await);
    e1.load(vec![wf.clone()]).await.unwrap();
    let run_id = e1.trigger("test-campaign", "test").await.unwrap();
    assert_eq!(e1.tick().await.unwrap().waves_planned, 1);
    while e1.dispatch_round("sms").await.unwrap().claimed > 0 {}
    drop(e1);

    // Second life, a day later: the window (2 days) is still open.
    let e2 = engine_at(&db.store, t0() + DAY, outbox(dir.path()).await);
    e2.load(vec![wf.clone()]).await.unwrap();
    assert_eq!(e2.tick().await.unwrap().waves_closed, 0);
    assert_eq!(db.store.wave_runs(run_id).await.unwrap()[0].state, "open");
    drop(e2);

    // Third life, after the window: the timer fires exactly once, then the run finishes.
    let e3 = engine_at(&db.store, t0() + 3 * DAY, outbox(dir.path()).await);
    e3.load(vec![wf]).await.unwrap();
    let s = e3.tick().await.unwrap();
    assert_eq!((s.waves_closed, s.runs_finished), (1, 1));
    let again = e3.tick().await.unwrap();
    assert_eq!((again.waves_closed, again.runs_finished), (0, 0));
    assert_eq!(db.store.run(run_id).await.unwrap().unwrap().state, "done");
}

#[tokio::test]
async fn timers_fire_once_after_a_restart_on_sqlite() {
    timers_fire_once_after_a_restart(Backend::Sqlite).await;
}

#[tokio::test]
async fn timers_fire_once_after_a_restart_on_postgres() {
    timers_fire_once_after_a_restart(Backend::Postgres).await;
}

#[tokio::test]
async fn a_running_campaign_keeps_the_version_it_started_with() {
    let db = helpers::fresh_db(helpers::env_backend()).await;
    seed(&db.store, 300).await;
    let dir = tempfile::tempdir().unwrap();
    let path = helpers::write_workflows(dir.path(), ONE_WAVE);
    let v1 = spec::load_file(&path).unwrap();
    let e = engine_at(&db.store, t0(), outbox(dir.path()).await);
    e.load(vec![v1.clone()]).await.unwrap();
    let run_id = e.trigger("test-campaign", "test").await.unwrap();
    e.tick().await.unwrap();
    // The operator edits the template while the run is in flight.
    std::fs::write(
        dir.path().join("templates/offer.txt"),
        "NEW TEXT for {name}",
    )
    .unwrap();
    let v2 = spec::load_file(&path).unwrap();
    assert_ne!(v1.hash, v2.hash);
    let loaded = e.load(vec![v2]).await.unwrap();
    assert_eq!(
        db.store.versions("test-campaign").await.unwrap().len(),
        2,
        "{loaded:?}"
    );
    while e.dispatch_round("sms").await.unwrap().claimed > 0 {}
    let sent = std::fs::read_to_string(dir.path().join("outbox.jsonl")).unwrap();
    assert!(!sent.is_empty());
    assert!(
        !sent.contains("NEW TEXT"),
        "run {run_id} must finish on the version it started with"
    );
    // A new run uses the new version.
    let run2 = e.trigger("test-campaign", "test").await.unwrap();
    assert_ne!(run2, run_id);
}

#[tokio::test]
async fn contacts_past_their_send_by_deadline_expire_unsent() {
    let db = helpers::fresh_db(helpers::env_backend()).await;
    seed(&db.store, 300).await;
    let dir = tempfile::tempdir().unwrap();
    let wf = spec::load_file(&helpers::write_workflows(dir.path(), ONE_WAVE)).unwrap();
    let e = engine_at(&db.store, t0(), outbox(dir.path()).await);
    e.load(vec![wf.clone()]).await.unwrap();
    let run_id = e.trigger("test-campaign", "test").await.unwrap();
    e.tick().await.unwrap();
    drop(e);
    // The daemon was down for 7 hours: past the 6h send_within. Nothing may go out late.
    let late = engine_at(&db.store, t0() + 7 * 3_600_000, outbox(dir.path()).await);
    late.load(vec![wf]).await.unwrap();
    let s = late.tick().await.unwrap();
    assert!(s.expired > 0);
    assert_eq!(late.dispatch_round("sms").await.unwrap().claimed, 0);
    let st = states(&db.store, run_id).await;
    assert_eq!(st.keys().collect::<Vec<_>>(), vec!["expired"], "{st:?}");
    assert!(
        !dir.path().join("outbox.jsonl").exists()
            || std::fs::read_to_string(dir.path().join("outbox.jsonl"))
                .unwrap()
                .is_empty()
    );
}

/// A gateway that fails each key's first request with 503 and refuses numbers ending in 9
/// with Kannel's "Not routable" 403.
async fn flaky_gateway() -> (std::net::SocketAddr, Arc<Mutex<HashMap<String, u32>>>) {
    let hits: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    async fn h(
        State(hits): State<Arc<Mutex<HashMap<String, u32>>>>,
        Query(q): Query<HashMap<String, String>>,
    ) -> (StatusCode, &'static str) {
        let to = q.get("to").cloned().unwrap_or_default();
        let key = helpers::key_of(&q).unwrap_or_default();
        let n = {
            let mut m = hits.lock().unwrap();
            let e = m.entry(key).or_insert(0);
            *e += 1;
            *e
        };
        if to.ends_with('9') {
            (StatusCode::FORBIDDEN, "Not routable. Do not try again.")
        } else if n == 1 {
            (StatusCode::SERVICE_UNAVAILABLE, "busy")
        } else {
            (StatusCode::ACCEPTED, "0: Accepted for delivery")
        }
    }
    let app = axum::Router::new()
        .route("/cgi-bin/sendsms", axum::routing::get(h))
        .with_state(hits.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    (addr, hits)
}

#[tokio::test]
async fn transient_failures_retry_with_backoff_and_permanent_ones_keep_the_reason() {
    helpers::init();
    let db = helpers::fresh_db(helpers::env_backend()).await;
    seed(&db.store, 400).await;
    let dir = tempfile::tempdir().unwrap();
    let wf = spec::load_file(&helpers::write_workflows(dir.path(), ONE_WAVE)).unwrap();
    let (addr, hits) = flaky_gateway().await;
    let cfg = KannelConfig {
        sendsms_url: format!("http://{addr}/cgi-bin/sendsms"),
        username: "campaignd".into(),
        password_env: "CARGO_PKG_NAME".into(),
        from: "10086".into(),
        dlr_url: "http://127.0.0.1:9/dlr".into(),
        dlr_mask: 27,
        concurrency: 8,
        timeout_ms: 5000,
        smsc: None,
        ack_grace_ms: 60_000,
        max_per_second: None,
    };
    let sms = channels::sms::build(&SmsConfig::Http(cfg.clone()))
        .await
        .unwrap();
    let e = engine_at(&db.store, t0(), sms);
    e.load(vec![wf.clone()]).await.unwrap();
    let run_id = e.trigger("test-campaign", "test").await.unwrap();
    e.tick().await.unwrap();
    let first = e.dispatch_round("sms").await.unwrap();
    assert!(
        first.retried > 0 && first.failed > 0 && first.sent == 0,
        "{first:?}"
    );
    // Backoff: nothing is due again at the same instant.
    assert_eq!(e.dispatch_round("sms").await.unwrap().claimed, 0);
    drop(e);
    // Later (past the longest first backoff), the retries succeed.
    let sms = channels::sms::build(&SmsConfig::Http(cfg)).await.unwrap();
    let later = engine_at(&db.store, t0() + 3 * 3_600_000 / 2, sms);
    later.load(vec![wf]).await.unwrap();
    while later.dispatch_round("sms").await.unwrap().claimed > 0 {}
    let st = states(&db.store, run_id).await;
    assert_eq!(st.len(), 2, "{st:?}");
    let failed = st["failed"];
    assert_eq!(st["sent"] + failed, first.claimed as usize);
    let refused = hits
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, n)| **n == 1)
        .count();
    assert_eq!(
        refused, failed,
        "refused numbers were tried once, never retried"
    );
    let rows = sea_orm::ConnectionTrait::query_all_raw(
        db.store.db(),
        sea_orm::Statement::from_string(
            db.store.db().get_database_backend(),
            "SELECT DISTINCT last_error FROM contact WHERE state = 'failed'",
        ),
    )
    .await
    .unwrap();
    let reasons: Vec<String> = rows
        .iter()
        .map(|r| r.try_get::<String>("", "last_error").unwrap())
        .collect();
    assert_eq!(reasons.len(), 1);
    assert!(
        reasons[0].contains("Not routable"),
        "the gateway's reason is kept: {reasons:?}"
    );
}
