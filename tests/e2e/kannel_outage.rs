//! Kannel (bearerbox, smsbox and the fake SMSC's link) stopped for two minutes in the middle
//! of a wave, then started again: nothing is lost, nothing is failed, at most the requests in
//! flight when it stopped are in doubt, and sending resumes by itself. During the outage the
//! channel's circuit breaker holds the queue (no attempt spent but the probes'), and retries
//! are bounded by the wave's `send_within`, not by a count: this test runs without
//! `max_attempts`, the default.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::daemon::{self, Daemon, DaemonConfig};
use crate::helpers::{self, Backend};
use crate::services::Kannel;

const TARGETS: usize = 1_500;
/// Small batches and few requests at a time, so the wave is still going when Kannel stops.
const BATCH: u64 = 20;
const CONCURRENCY: usize = 2;
const OUTAGE: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kannel_down_for_two_minutes_mid_wave_loses_nothing_on_postgres() {
    let started = Instant::now();
    let db = helpers::fresh_db(Backend::Postgres).await;
    let store = db.store.clone();
    daemon::insert_everyone(&store, TARGETS, 2029).await;
    let (listen, kannel) = Kannel::for_daemon(&store).await;

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = DaemonConfig::on_real_kannel(
        (db.url.clone(), db.schema.clone()),
        dir.path(),
        "kannel-outage",
        &kannel,
        listen,
    );
    cfg.batch_size = BATCH;
    cfg.concurrency = CONCURRENCY;
    let cfg_path = dir.path().join("campaignd.toml");
    cfg.write(&cfg_path);
    // The default: no attempt cap, retries end at the send-by deadline.
    let text = std::fs::read_to_string(&cfg_path).unwrap();
    std::fs::write(&cfg_path, text.replace("max_attempts = 8\n", "")).unwrap();
    daemon::approve(&cfg_path, "kannel-outage").await;
    let out = daemon::cli(&cfg_path, &["trigger", "kannel-outage"]).await;
    assert!(out.contains("started"), "{out}");

    let mut d = Daemon::spawn("daemon", &cfg_path);
    d.listening(Duration::from_secs(60)).await;
    let seen = |k: &Kannel| -> usize { receivers(&k.delivered()).len() };
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen(&kannel) < 200 {
        assert!(
            Instant::now() < deadline,
            "200 receivers not reached: {}",
            d.stderr_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    kannel.run(&["stop"]);
    let stopped_at = Instant::now();
    let before = seen(&kannel);
    tokio::time::sleep(OUTAGE).await;
    assert!(
        d.exited().is_none(),
        "the daemon died in the outage:\n{}",
        d.stderr_tail(30)
    );
    let in_outage = daemon::states(&store).await;
    assert_eq!(
        in_outage.get("failed"),
        None,
        "an outage shorter than send_within fails nobody: {in_outage:?}"
    );
    kannel.run(&["start"]);
    let up_at = Instant::now();
    println!(
        "Kannel down for {:?}; {before} receivers when it stopped; contacts then {in_outage:?}",
        stopped_at.elapsed()
    );

    let deadline = up_at + Duration::from_secs(240);
    let mut resumed_in = None;
    loop {
        let n = seen(&kannel);
        if resumed_in.is_none() && n > before {
            resumed_in = Some(up_at.elapsed());
        }
        let st = daemon::states(&store).await;
        let out = st.get("delivered").copied().unwrap_or(0) + st.get("sent").copied().unwrap_or(0);
        if out == TARGETS as i64 && n == TARGETS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the wave did not finish within 240 s of Kannel's start: {st:?}, {n} receivers; stderr:\n{}",
            d.stderr_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let finished_in = up_at.elapsed();
    // Stragglers of a message sent again may still be on their way.
    tokio::time::sleep(Duration::from_secs(3)).await;
    d.kill9().await;

    assert_eq!(
        daemon::scalar(&store, "SELECT COUNT(*) AS n FROM dispatch").await,
        0,
        "nothing is left in the work queue"
    );
    let mut per: HashMap<String, usize> = HashMap::new();
    for to in kannel
        .delivered()
        .iter()
        .filter_map(|l| l.split(' ').nth(1))
    {
        *per.entry(to.to_owned()).or_default() += 1;
    }
    assert_eq!(per.len(), TARGETS, "every receiver got its message");
    let duplicates: usize = per.values().map(|n| n - 1).sum();
    println!(
        "Kannel outage test: {TARGETS} receivers, {duplicates} duplicates, sending resumed {:?} \
         after Kannel was back, wave done {finished_in:?} after; total {:?}",
        resumed_in.unwrap_or_default(),
        started.elapsed()
    );
    // In doubt when Kannel stopped: at most the requests in flight.
    assert!(
        duplicates <= CONCURRENCY,
        "{duplicates} duplicates exceed the requests in flight ({CONCURRENCY})"
    );
}

fn receivers(lines: &[String]) -> std::collections::HashSet<String> {
    lines
        .iter()
        .filter_map(|l| l.split(' ').nth(1).map(str::to_owned))
        .collect()
}

/// A refused account (here a wrong username: Kannel's `403 Authorization failed`) is not a
/// message's fault: the channel pauses, no contact fails or spends its attempt, the platform
/// team is mailed once (`[alerts] email`, through the daemon's staff mail queue) and
/// `/readyz` shows the channel `forced_open`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_account_pauses_the_channel_and_mails_the_platform_team_on_sqlite() {
    const FEW: usize = 30;
    let db = helpers::fresh_db(Backend::Sqlite).await;
    let store = db.store.clone();
    daemon::insert_everyone(&store, FEW, 2030).await;
    let (listen, kannel) = Kannel::for_daemon(&store).await;
    let dir = tempfile::tempdir().unwrap();
    let mail_dir = dir.path().join("mail");
    let mut cfg = DaemonConfig::on_real_kannel(
        (db.url.clone(), db.schema.clone()),
        dir.path(),
        "refused",
        &kannel,
        listen,
    );
    cfg.batch_size = 10;
    let cfg_path = dir.path().join("campaignd.toml");
    cfg.write(&cfg_path);
    let text = std::fs::read_to_string(&cfg_path).unwrap();
    assert!(text.contains("username = \"campaignd\""), "{text}");
    std::fs::write(
        &cfg_path,
        text.replace("username = \"campaignd\"", "username = \"intruder\"")
            + "\n[alerts]\nemail = [\"sms-platform@example.com\"]\n",
    )
    .unwrap();
    daemon::approve(&cfg_path, "refused").await;
    let out = daemon::cli(&cfg_path, &["trigger", "refused"]).await;
    assert!(out.contains("started"), "{out}");

    let mut d = Daemon::spawn("daemon", &cfg_path);
    let addr = d.listening(Duration::from_secs(60)).await;
    let alerts = || -> Vec<String> {
        std::fs::read_dir(&mail_dir)
            .map(|rd| {
                // Quoted-printable: soft line breaks undone.
                rd.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
                    .map(|m| m.replace("=\r\n", "").replace("=\n", ""))
                    .filter(|m| m.contains("gateway refused campaignd"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while alerts().is_empty() {
        assert!(
            Instant::now() < deadline,
            "no alert mail within 60 s; stderr:\n{}",
            d.stderr_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Time for more rounds: the channel stays paused, the alert is not repeated.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mails = alerts();
    assert_eq!(mails.len(), 1, "one alert");
    assert!(
        mails[0].contains("To: sms-platform@example.com"),
        "{}",
        mails[0]
    );
    assert!(mails[0].contains("Authorization failed"), "{}", mails[0]);
    let ready: serde_json::Value = reqwest::get(format!("http://{addr}/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sms = ready["gateways"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["channel"] == "sms"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(sms["breaker"], "forced_open", "{ready}");
    let st = daemon::states(&store).await;
    assert_eq!(st.get("failed"), None, "nobody failed: {st:?}");
    assert_eq!(kannel.delivered().len(), 0, "nothing reached the SMSC");
    d.kill9().await;
}
