//! `kill -9` of the real daemon at random moments during a 50,000-target SMS wave, ten times,
//! restarting it each time, then letting the last one finish: every target ends with exactly
//! one contact row, in `sent`; the loopback gateway saw every idempotency key at least once;
//! and every repeated request is charged to the daemon life that sent it and died before
//! recording it, at most one in-flight batch (`engine.batch_size`) per crash.
//!
//! The kill moments come from a seeded RNG: fixed under `CI=true`, random otherwise; the seed
//! is printed, and `CAMPAIGND_TEST_SEED=<seed>` repeats them.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::daemon::{self, CountingGateway, Daemon, DaemonConfig};
use crate::helpers::{self, Backend};

const TARGETS: usize = 50_000;
const KILLS: usize = 10;
const BATCH: u64 = 500;
/// Long enough that a batch of 500 finishes well inside its lease on a loaded two-core machine:
/// the duplicate bounds below charge every repeat to a killed life, and a lease that expired
/// under a live batch would let the same life claim and send it again. Nothing here waits for
/// a lease except the last life, which picks up the rows of the one killed just before it.
const LEASE_SECS: u64 = 15;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_during_a_wave_on_sqlite() {
    crash_and_restart(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_during_a_wave_on_postgres() {
    crash_and_restart(Backend::Postgres).await;
}

/// When a daemon life ends: at a random time after its start (during startup, planning or
/// dispatch), or as soon as the gateway has seen a number of distinct keys (mid-batch),
/// whichever comes first. The key limit keeps the wave unfinished until the last kill.
#[derive(Debug, Clone, Copy)]
struct Moment {
    after: Option<Duration>,
    keys: usize,
}

async fn crash_and_restart(backend: Backend) {
    let _heavy = helpers::heavy();
    let started = Instant::now();
    let seed = daemon::test_seed(&format!("crash test on {backend:?}"));
    let mut rng = StdRng::seed_from_u64(seed);

    let db = helpers::fresh_db(backend).await;
    let store = db.store.clone();
    daemon::insert_everyone(&store, TARGETS, 2026).await;
    let dir = tempfile::tempdir().unwrap();
    let workflows = daemon::blast_workflows(dir.path(), "crash-wave");

    let gw = CountingGateway::start().await;
    let mut cfg = DaemonConfig {
        database_url: db.url.clone(),
        database_schema: db.schema.clone(),
        workflows,
        worker_id: "crash".into(),
        batch_size: BATCH,
        lease_secs: LEASE_SECS,
        poll_ms: 100,
        sendsms_url: gw.sendsms_url(),
        sms_username: "trigger".into(),
        concurrency: 32,
        mail_dir: dir.path().join("mail"),
        real_kannel: None,
    };
    let cfg_path = dir.path().join("campaignd.toml");
    cfg.write(&cfg_path);
    daemon::approve(&cfg_path, "crash-wave").await;
    let out = daemon::cli(&cfg_path, &["trigger", "crash-wave"]).await;
    assert!(out.contains("started"), "{out}");

    // Kill points in distinct keys, spread over the wave and increasing; every life draws the
    // same numbers in the same order whatever the timing, so a seed repeats the schedule.
    let mut points: Vec<usize> = (0..KILLS)
        .map(|_| rng.random_range(1_000..40_000))
        .collect();
    points.sort_unstable();
    for (life, point) in points.iter().enumerate() {
        let early = life == 0 || rng.random_bool(0.25);
        let delay = Duration::from_millis(rng.random_range(0..1500));
        let jitter = rng.random_range(1..=BATCH as usize);
        let name = format!("life-{life}");
        cfg.sms_username = name.clone();
        cfg.write(&cfg_path);
        let keys_before = gw.distinct();
        let mut d = Daemon::spawn(&name, &cfg_path);
        let t0 = Instant::now();
        let moment = Moment {
            after: early.then_some(delay),
            keys: (*point).max(keys_before + jitter),
        };
        let deadline = t0 + Duration::from_secs(90);
        while gw.distinct() < moment.keys && moment.after.is_none_or(|a| t0.elapsed() < a) {
            assert!(
                Instant::now() < deadline,
                "{name} did not reach {} keys within 90 s; stderr:\n{}",
                moment.keys,
                d.stderr_tail(30)
            );
            if let Some(status) = d.exited() {
                panic!("{name} exited by itself ({status}):\n{}", d.stderr_tail(30));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        d.kill9().await;
        let lived = t0.elapsed();
        let st = daemon::states(&store).await;
        let rows: i64 = st.values().sum();
        let unfinished =
            st.get("pending").copied().unwrap_or(0) + st.get("sending").copied().unwrap_or(0);
        println!(
            "kill {}: {name} killed {moment:?} after {lived:?}; gateway keys {} -> {}; contacts {st:?}",
            life + 1,
            keys_before,
            gw.distinct()
        );
        assert!(
            rows < TARGETS as i64 || unfinished > 0,
            "kill {} came after the wave was done ({st:?}): the test must kill mid-wave",
            life + 1
        );
    }

    // The last life runs until every contact is final.
    let name = format!("life-{KILLS}");
    cfg.sms_username = name.clone();
    cfg.write(&cfg_path);
    let mut last = Daemon::spawn(&name, &cfg_path);
    last.listening(Duration::from_secs(30)).await;
    let t_last = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let st = daemon::states(&store).await;
        if st.get("sent").copied().unwrap_or(0) == TARGETS as i64 && st.len() == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the wave did not finish within 120 s after the last restart: {st:?}; stderr:\n{}",
            last.stderr_tail(30)
        );
        if let Some(status) = last.exited() {
            panic!(
                "{name} exited by itself ({status}):\n{}",
                last.stderr_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("the last life finished the wave in {:?}", t_last.elapsed());
    last.kill9().await;

    // One run, one wave, one row per target.
    assert_eq!(
        daemon::scalar(&store, "SELECT COUNT(*) AS n FROM run").await,
        1
    );
    assert_eq!(
        daemon::scalar(&store, "SELECT COUNT(*) AS n FROM wave_run").await,
        1
    );
    assert_eq!(
        daemon::scalar(&store, "SELECT COUNT(*) AS n FROM contact").await,
        TARGETS as i64
    );
    assert_eq!(
        daemon::scalar(
            &store,
            "SELECT COUNT(DISTINCT subscriber_id) AS n FROM contact WHERE arm = 'treatment'"
        )
        .await,
        TARGETS as i64
    );
    assert_eq!(
        daemon::scalar(
            &store,
            "SELECT COUNT(*) AS n FROM subscriber s WHERE NOT EXISTS \
             (SELECT 1 FROM contact c WHERE c.subscriber_id = s.id)"
        )
        .await,
        0,
        "every subscriber is a target"
    );
    assert_eq!(
        daemon::states(&store).await,
        [("sent".to_owned(), TARGETS as i64)].into()
    );
    assert_eq!(
        daemon::scalar(&store, "SELECT COUNT(*) AS n FROM dispatch").await,
        0,
        "a sent contact leaves nothing in the work queue"
    );

    // The gateway saw exactly the stored keys, each at least once.
    let db_keys: HashSet<String> = daemon::rows(&store, "SELECT idem_key FROM contact")
        .await
        .iter()
        .map(|r| r.try_get::<String>("", "idem_key").unwrap())
        .collect();
    let hits = gw.snapshot();
    let seen: HashSet<String> = hits.keys().cloned().collect();
    let missing = db_keys.difference(&seen).count();
    let unknown = seen.difference(&db_keys).count();
    assert_eq!(missing, 0, "keys never sent to the gateway");
    assert_eq!(unknown, 0, "keys the gateway saw that no contact has");

    // Every request but the last of a key was sent by a life that died before recording it:
    // charge it to that life. Only killed lives may have any, each at most one batch.
    let mut lost: BTreeMap<String, u64> = BTreeMap::new();
    for senders in hits.values() {
        for s in &senders[..senders.len() - 1] {
            *lost.entry(s.clone()).or_default() += 1;
        }
    }
    let total: u64 = lost.values().sum();
    let requests: usize = hits.values().map(Vec::len).sum();
    println!(
        "{backend:?}: {KILLS} kills, {requests} gateway requests for {TARGETS} keys, {total} duplicates \
         (bound {} = kills x batch_size {BATCH}); per crashed life: {lost:?}; total time {:?}",
        KILLS as u64 * BATCH,
        started.elapsed()
    );
    assert!(
        !lost.contains_key(&name),
        "the last life, never killed, repeated {} sends",
        lost[&name]
    );
    for (life, n) in &lost {
        assert!(
            *n <= BATCH,
            "{life} lost {n} sends to its crash, more than one batch ({BATCH})"
        );
    }
    assert!(total <= KILLS as u64 * BATCH);
}
