//! SIGTERM: the daemon stops claiming, lets the batches in flight settle, and exits; a
//! restarted daemon finishes the wave. With a graceful stop no message is sent twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::StatusCode;

use crate::daemon::{self, Daemon, DaemonConfig, Spawn};
use crate::helpers;

const WORKFLOW: &str = r#"
campaign: test-campaign
timezone: Asia/Shanghai
audience:
  segment: students
waves:
  - id: sms_offer
    channel: sms
    template: templates/offer.txt
    respond_within: 30d
    send_within: 30d
"#;

type Hits = Arc<Mutex<HashMap<String, u32>>>;

/// A slow gateway (20 ms per message), so a batch is in flight when SIGTERM arrives.
async fn slow_gateway() -> (std::net::SocketAddr, Hits) {
    async fn h(
        State(hits): State<Hits>,
        Query(q): Query<HashMap<String, String>>,
    ) -> (StatusCode, &'static str) {
        // As smsbox does: the daemon's start check (no receiver) is refused, not counted.
        if q.get("to").is_none_or(|t| t.is_empty()) {
            return (StatusCode::BAD_REQUEST, "Missing receiver number, rejected");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let key = helpers::key_of(&q).unwrap_or_default();
        *hits.lock().unwrap().entry(key).or_insert(0) += 1;
        (StatusCode::ACCEPTED, "0: Accepted for delivery")
    }
    let hits: Hits = Arc::default();
    let app = axum::Router::new()
        .route("/cgi-bin/sendsms", axum::routing::get(h))
        .with_state(hits.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    (addr, hits)
}

async fn count(store: &store::Store, state: &str) -> i64 {
    let counts = store.state_counts(None).await.unwrap();
    counts.get(state).copied().unwrap_or(0) as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_settles_in_flight_batches_and_a_restart_finishes_without_duplicates() {
    let db = helpers::fresh_db(helpers::env_backend()).await;
    let base: Vec<_> = subscribers::generate(&catalogue::shipped(), 4000, 9).collect();
    db.store
        .insert_subscribers(&base, store::subscribers::OnDuplicate::Fail, 0)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    helpers::write_workflows(dir.path(), WORKFLOW);
    let (gw, hits) = slow_gateway().await;
    let config = dir.path().join("campaignd.toml");
    DaemonConfig {
        database_url: db.url.clone(),
        database_schema: db.schema.clone(),
        workflows: dir.path().to_owned(),
        worker_id: "shutdown".into(),
        batch_size: 40,
        lease_secs: 30,
        poll_ms: 20,
        sendsms_url: format!("http://{gw}/cgi-bin/sendsms"),
        sms_username: "campaignd".into(),
        concurrency: 4,
        mail_dir: dir.path().join("mail"),
        real_kannel: None,
    }
    .write(&config);
    daemon::approve(&config, "test-campaign").await;
    let out = daemon::cli(&config, &["trigger", "test-campaign"]).await;
    assert!(out.contains("started"), "{out}");

    // The default grace (20 s): the in-flight batch of 40 at 20 ms a message settles well
    // inside it.
    let mut first = Daemon::start(Spawn {
        name: "first",
        config: &config,
        log: "warn,engine=info",
        grace_secs: 20,
    });
    // Wait until sending is under way, then ask it to stop.
    let started = Instant::now();
    while count(&db.store, "sent").await < 40 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the daemon never sent; its stderr:\n{}",
            first.stderr_tail(30)
        );
        if let Some(status) = first.exited() {
            panic!(
                "the daemon exited by itself ({status}):\n{}",
                first.stderr_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = first.terminate(Duration::from_secs(25)).await;
    assert!(
        status.success(),
        "exit status {status:?}; stderr:\n{}",
        first.stderr_tail(30)
    );
    assert_eq!(
        count(&db.store, "sending").await,
        0,
        "in-flight batches were settled before exit"
    );
    let pending = count(&db.store, "pending").await;
    assert!(pending > 0, "the stop came mid-wave");

    // A new daemon finishes the wave.
    let mut again = Daemon::spawn("again", &config);
    let started = Instant::now();
    while count(&db.store, "pending").await + count(&db.store, "sending").await > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the restarted daemon did not finish; its stderr:\n{}",
            again.stderr_tail(30)
        );
        if let Some(status) = again.exited() {
            panic!(
                "the restarted daemon exited by itself ({status}):\n{}",
                again.stderr_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    again.kill9().await;
    let sent = count(&db.store, "sent").await as usize;
    let hits = hits.lock().unwrap().clone();
    assert_eq!(hits.len(), sent, "every sent contact reached the gateway");
    assert!(
        hits.values().all(|n| *n == 1),
        "a graceful stop sends nothing twice"
    );
}
