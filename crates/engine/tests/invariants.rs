//! The engine's promises, each driven step by step on a manual clock with a channel that
//! records what it was asked to send. Every test here was checked to fail when the product
//! line it names is deleted. Runs on SQLite, or PostgreSQL with CAMPAIGND_TEST_BACKEND=postgres.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use channels::{Accepted, Channel, Outbound, SendError};
use chrono::TimeZone;
use engine::clock::ManualClock;
use engine::{Engine, EngineConfig, EngineError, FailPoint};
use rand::SeedableRng;
use sea_orm::ConnectionTrait;
use store::subscribers::OnDuplicate;
use store::testing::RawDb as _;
use store::{Millis, Store};
use tempfile::TempDir;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;

/// Monday 2026-09-07 10:00 in Shanghai: outside quiet hours.
fn t0() -> Millis {
    chrono_tz::Asia::Shanghai
        .with_ymd_and_hms(2026, 9, 7, 10, 0, 0)
        .unwrap()
        .timestamp_millis()
}

const SEGMENTS: &str = r#"
segments:
  students:
    where: "student_stage in ['freshman', 'student', 'graduate']"
"#;

/// One SMS wave to every student; quiet hours 21:00-08:00.
const ONE_WAVE: &str = r#"
campaign: inv
timezone: Asia/Shanghai
audience:
  segment: students
policy:
  quiet_hours: "21:00-08:00"
waves:
  - id: sms_offer
    channel: sms
    template: templates/offer.txt
    respond_within: 2d
    send_within: 1d
"#;

/// SMS, then a call to those who did not reply.
const TWO_WAVES: &str = r#"
campaign: inv
timezone: Asia/Shanghai
audience:
  segment: students
waves:
  - id: sms_offer
    channel: sms
    template: templates/offer.txt
    respond_within: 1d
    responses:
      - reply: "1"
  - id: call
    after: sms_offer
    targets: no_response
    channel: outbound_call
    team: callcentre
    template: templates/call.txt
    respond_within: 1d
"#;

/// Every minute (six-field cron), catching up the latest slot.
const SCHEDULED: &str = r#"
campaign: inv
timezone: Asia/Shanghai
schedule:
  cron: "0 * * * * *"
  catch_up: last
  catch_up_window: 5m
audience:
  segment: students
waves:
  - id: sms_offer
    channel: sms
    template: templates/offer.txt
    respond_within: 1d
"#;

/// What the recording channel answers.
#[derive(Clone, Copy, PartialEq)]
enum Answer {
    Accept,
    Transient,
    /// A timeout: the gateway may have taken it.
    Ambiguous,
    /// 429 with `Retry-After` of this many seconds.
    Throttled(u64),
    /// 403 "Authorization failed": the account, not the message.
    Refused,
}

/// A channel that records every message it is handed, in order.
struct Recorder {
    kind: &'static str,
    /// Switchable, so a test can end an outage.
    answer: Mutex<Answer>,
    sent: Mutex<Vec<Outbound>>,
    /// When set, a batch waits (up to the deadline) until two batches were in flight at once.
    gate: Option<Gate>,
    /// The gateway's proof grace ([`Channel::proof_grace`]).
    grace: Duration,
    /// When set, `send_each` reports this many results, then holds the rest in flight until
    /// `release` is notified (forever, if nobody does): a gateway still answering.
    stall_after: Mutex<Option<usize>>,
    release: tokio::sync::Notify,
}

#[derive(Default)]
struct Gate {
    state: Mutex<(usize, usize)>, // (in flight now, most ever in flight)
    changed: tokio::sync::Notify,
}

impl Recorder {
    fn new(kind: &'static str, answer: Answer) -> Arc<Recorder> {
        Arc::new(Recorder {
            kind,
            answer: Mutex::new(answer),
            sent: Mutex::new(Vec::new()),
            gate: None,
            grace: Duration::ZERO,
            stall_after: Mutex::new(None),
            release: tokio::sync::Notify::new(),
        })
    }

    /// An accepting SMS gateway that proves submissions and holds a doubtful message back
    /// for `grace`.
    fn proving(grace: Duration) -> Arc<Recorder> {
        Arc::new(Recorder {
            grace,
            ..Arc::into_inner(Recorder::new("sms", Answer::Accept)).unwrap()
        })
    }

    fn answer(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    fn keys(&self) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for o in self.sent.lock().unwrap().iter() {
            *out.entry(o.key.clone()).or_insert(0) += 1;
        }
        out
    }

    fn texts(&self) -> Vec<String> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .map(|o| o.text.clone())
            .collect()
    }
}

#[async_trait]
impl Channel for Recorder {
    fn kind(&self) -> &'static str {
        self.kind
    }

    async fn send_batch(&self, batch: &[Outbound]) -> Vec<Result<Accepted, SendError>> {
        if let Some(g) = &self.gate {
            {
                let mut st = g.state.lock().unwrap();
                st.0 += 1;
                st.1 = st.1.max(st.0);
            }
            g.changed.notify_waiters();
            // Wait for a second round to be in flight beside this one; a single dispatcher
            // never gets there and every batch waits out the deadline.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            loop {
                let notified = g.changed.notified();
                if g.state.lock().unwrap().1 >= 2 {
                    break;
                }
                if tokio::time::timeout_at(deadline, notified).await.is_err() {
                    break;
                }
            }
            g.state.lock().unwrap().0 -= 1;
        }
        self.sent.lock().unwrap().extend(batch.iter().cloned());
        self.answers(batch)
    }

    async fn send_each(&self, batch: &[Outbound], done: channels::ResultSink) {
        let stall = *self.stall_after.lock().unwrap();
        let Some(k) = stall else {
            for (idx, res) in self.send_batch(batch).await.into_iter().enumerate() {
                let _ = done.send((idx, res));
            }
            return;
        };
        // The whole batch reached the gateway; only the first answers come back for now.
        self.sent.lock().unwrap().extend(batch.iter().cloned());
        let answers = self.answers(batch);
        let rest = k.min(answers.len());
        for (idx, res) in answers.iter().take(rest).cloned().enumerate() {
            let _ = done.send((idx, res));
        }
        self.release.notified().await;
        for (idx, res) in answers.into_iter().enumerate().skip(rest) {
            let _ = done.send((idx, res));
        }
    }

    fn proof_grace(&self) -> Duration {
        self.grace
    }
}

impl Recorder {
    fn answers(&self, batch: &[Outbound]) -> Vec<Result<Accepted, SendError>> {
        let answer = *self.answer.lock().unwrap();
        batch
            .iter()
            .map(|_| match answer {
                Answer::Accept => Ok(Accepted {
                    gateway_ref: None,
                    queued: false,
                }),
                Answer::Transient => Err(SendError::Transient("503 Service Unavailable".into())),
                Answer::Ambiguous => Err(SendError::Ambiguous("no answer within 10000 ms".into())),
                Answer::Refused => Err(SendError::Refused(
                    "Kannel answered HTTP 403: Authorization failed for sendsms".into(),
                )),
                Answer::Throttled(secs) => Err(SendError::Throttled {
                    reason: "429 Too Many Requests".into(),
                    retry_after: Some(Duration::from_secs(secs)),
                }),
            })
            .collect()
    }
}

/// A store with `n` students, a workflows folder, a manual clock at [`t0`] and recorders.
struct Rig {
    store: Store,
    dir: TempDir,
    clock: ManualClock,
    sms: Arc<Recorder>,
    calls: Arc<Recorder>,
    wf_path: PathBuf,
}

impl Rig {
    async fn new(workflow: &str, n: usize) -> Rig {
        Rig::with_sms(workflow, n, Recorder::new("sms", Answer::Accept)).await
    }

    async fn with_sms(workflow: &str, n: usize, sms: Arc<Recorder>) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let store = store::testing::fresh_store(dir.path()).await.unwrap();
        let subs: Vec<_> = (0..n)
            .map(|i| store::testing::subscriber(&format!("1380000{i:04}")))
            .collect();
        store
            .insert_subscribers(&subs, OnDuplicate::Fail, t0() - DAY)
            .await
            .unwrap();
        let wf_dir = dir.path().join("workflows");
        std::fs::create_dir_all(wf_dir.join("templates")).unwrap();
        std::fs::write(wf_dir.join("segments.yaml"), SEGMENTS).unwrap();
        std::fs::write(wf_dir.join("templates/offer.txt"), "v1 offer for {name}").unwrap();
        std::fs::write(wf_dir.join("templates/call.txt"), "v1 call {name}").unwrap();
        let wf_path = wf_dir.join("inv.yaml");
        std::fs::write(&wf_path, workflow).unwrap();
        Rig {
            store,
            dir,
            clock: ManualClock::new(t0()),
            sms,
            calls: Recorder::new("outbound_call", Answer::Accept),
            wf_path,
        }
    }

    fn config(&self) -> EngineConfig {
        let mut cfg = EngineConfig::new("inv", self.dir.path().join("no-calendars"));
        cfg.lease = Duration::from_secs(60);
        cfg.retry_base = Duration::from_secs(60);
        cfg.max_attempts = Some(3);
        cfg.batch_size = 100;
        cfg
    }

    /// A new engine (a new process, as far as the engine knows) on the same store, with the
    /// workflow files as they are now loaded as current versions.
    async fn engine(&self, cfg: EngineConfig) -> Engine {
        let mut chans: HashMap<String, Arc<dyn Channel>> = HashMap::new();
        chans.insert("sms".into(), self.sms.clone());
        chans.insert("outbound_call".into(), self.calls.clone());
        let e = Engine::new(self.store.clone(), self.clock.clock(), chans, cfg).unwrap();
        let wf = spec::load_file(&self.wf_path).unwrap_or_else(|d| panic!("{d:?}"));
        e.load(vec![wf]).await.unwrap();
        e
    }

    async fn snapshot(&self) -> String {
        store::snapshot::render(&self.store, t0()).await.unwrap()
    }

    async fn subscriber(&self, i: usize) -> i64 {
        self.store
            .subscriber_by_msisdn(&format!("1380000{i:04}"))
            .await
            .unwrap()
            .unwrap()
    }

    async fn drain(&self, e: &Engine, kind: &str) {
        while e.dispatch_round(kind).await.unwrap().claimed > 0 {}
    }
}

async fn wave_states(store: &Store, run_id: i64, wave: usize) -> HashMap<i64, String> {
    let w = store.wave_runs(run_id).await.unwrap();
    store
        .contact_states(w[wave].id)
        .await
        .unwrap()
        .into_iter()
        .map(|(s, _, st)| (s, st))
        .collect()
}

// a. dispatch.rs: `if c.subscriber.opt_out { ... Failed ... }`
#[tokio::test]
async fn opt_out_after_planning_stops_the_send() {
    let rig = Rig::new(ONE_WAVE, 3).await;
    let e = rig.engine(rig.config()).await;
    let run_id = e.trigger("inv", "test").await.unwrap();
    assert_eq!(e.tick().await.unwrap().waves_planned, 1);
    let out = rig.subscriber(1).await;
    rig.store.set_opt_out(out, t0()).await.unwrap();
    rig.drain(&e, "sms").await;
    let keys = rig.sms.keys();
    assert_eq!(keys.len(), 2, "{keys:?}");
    let out_prefix = store::contacts::key_prefix(run_id, "sms_offer", out);
    assert!(!keys.keys().any(|k| k.starts_with(&out_prefix)), "{keys:?}");
    let states = wave_states(&rig.store, run_id, 0).await;
    assert_eq!(states[&out], "failed", "{states:?}");
    assert_eq!(
        states.values().filter(|s| *s == "sent").count(),
        2,
        "{states:?}"
    );
    insta::assert_snapshot!(rig.snapshot().await);
}

// b. dispatch.rs: `if allowed > now_utc { ... Retry { due_at: allowed } ... }`
#[tokio::test]
async fn quiet_hours_reached_after_planning_stop_the_send_until_morning() {
    let rig = Rig::new(ONE_WAVE, 2).await;
    let e = rig.engine(rig.config()).await;
    let run_id = e.trigger("inv", "test").await.unwrap();
    e.tick().await.unwrap(); // planned at 10:00, due at once
    rig.clock.set(t0() + 12 * HOUR); // 22:00: quiet hours
    let s = e.dispatch_round("sms").await.unwrap();
    assert_eq!((s.claimed, s.sent, s.retried), (2, 0, 2));
    assert!(rig.sms.keys().is_empty(), "nothing goes out in quiet hours");
    insta::assert_snapshot!("quiet_hours_deferred", rig.snapshot().await);
    // Not due again before 08:00.
    rig.clock.set(t0() + 21 * HOUR + 59 * MINUTE);
    assert_eq!(e.dispatch_round("sms").await.unwrap().claimed, 0);
    rig.clock.set(t0() + 22 * HOUR); // 08:00 the next day
    assert_eq!(e.dispatch_round("sms").await.unwrap().sent, 2);
    let states = wave_states(&rig.store, run_id, 0).await;
    assert!(states.values().all(|s| s == "sent"), "{states:?}");
}

// c. dispatch.rs `outcome_of`: `max_attempts.is_some_and(|max| t.attempt >= max)` (the
//    optional safety cap)
#[tokio::test]
async fn transient_failures_stop_after_max_attempts() {
    let rig = Rig::with_sms(ONE_WAVE, 2, Recorder::new("sms", Answer::Transient)).await;
    let e = rig.engine(rig.config()).await; // max_attempts 3, retry base 60 s
    let run_id = e.trigger("inv", "test").await.unwrap();
    e.tick().await.unwrap();
    let s = e.dispatch_round("sms").await.unwrap();
    assert_eq!(s.retried, 2);
    // The first retry is due within [base/2, base*2^1] of the failed send.
    let due = due_times(&rig.store).await;
    assert!(
        due.iter()
            .all(|d| (t0() + 30_000..=t0() + 120_000).contains(d)),
        "{due:?}"
    );
    // Far more rounds than attempts, each after any possible backoff.
    for _ in 0..10 {
        rig.clock.advance(Duration::from_secs(3600));
        e.dispatch_round("sms").await.unwrap();
    }
    let keys = rig.sms.keys();
    assert_eq!(keys.len(), 2);
    assert!(keys.values().all(|n| *n == 3), "sends per key: {keys:?}");
    let states = wave_states(&rig.store, run_id, 0).await;
    assert!(states.values().all(|s| s == "failed"), "{states:?}");
    insta::assert_snapshot!(rig.snapshot().await);
}

// c2. dispatch.rs `outcome_of`: a transient failure is retried until the send-by deadline
//     (`if in_time && !capped { ... Retry ... }`), not for a fixed count: a gateway outage
//     of an hour, polled every minute, fails nobody when send_within
//     (1 day) allows.
#[tokio::test]
async fn an_outage_shorter_than_send_within_fails_nobody() {
    let rig = Rig::with_sms(ONE_WAVE, 3, Recorder::new("sms", Answer::Transient)).await;
    let mut cfg = rig.config();
    cfg.max_attempts = None;
    let e = rig.engine(cfg).await;
    let run_id = e.trigger("inv", "test").await.unwrap();
    e.tick().await.unwrap();
    for _ in 0..60 {
        e.dispatch_round("sms").await.unwrap();
        rig.clock.advance(Duration::from_secs(60));
    }
    // Far more attempts than any fixed count the daemon used to allow (5, or 8 in e2e).
    assert!(
        rig.sms.keys().values().all(|n| *n >= 10),
        "{:?}",
        rig.sms.keys()
    );
    let states = wave_states(&rig.store, run_id, 0).await;
    assert!(states.values().all(|s| s == "pending"), "{states:?}");
    rig.sms.answer(Answer::Accept);
    rig.clock.advance(Duration::from_secs(60));
    rig.drain(&e, "sms").await;
    let states = wave_states(&rig.store, run_id, 0).await;
    assert!(states.values().all(|s| s == "sent"), "{states:?}");
}

// c3. dispatch.rs `outcome_of`: `t.send_by.is_none_or(|by| due_at <= by)`: a gateway down
//     past the deadline fails its contacts there, with the gateway's error and the reason.
#[tokio::test]
async fn retries_end_at_the_send_by_deadline_with_the_reason() {
    let rig = Rig::with_sms(ONE_WAVE, 2, Recorder::new("sms", Answer::Transient)).await;
    let mut cfg = rig.config();
    cfg.max_attempts = None;
    // About the retry deadline alone: the breaker would hold one of the two back.
    cfg.breaker_threshold = u32::MAX;
    let e = rig.engine(cfg).await;
    let run_id = e.trigger("inv", "test").await.unwrap();
    e.tick().await.unwrap();
    // Two days of rounds every ten minutes; send_within is one day.
    for _ in 0..(2 * 24 * 6) {
        e.dispatch_round("sms").await.unwrap();
        rig.clock.advance(Duration::from_secs(600));
    }
    let states = wave_states(&rig.store, run_id, 0).await;
    assert!(states.values().all(|s| s == "failed"), "{states:?}");
    let errors: Vec<String> = queue_or_contact_errors(&rig.store).await;
    assert_eq!(errors.len(), 2);
    assert!(
        errors
            .iter()
            .all(|e| e.contains("503") && e.contains("send-by deadline")),
        "{errors:?}"
    );
}

fn sms_breaker(e: &Engine) -> &'static str {
    e.breaker_states()
        .into_iter()
        .find(|(k, _)| k == "sms")
        .unwrap()
        .1
        .name()
}

// c4. dispatch.rs `dispatch_round` (`Admit::Wait(_) => return ... held`) and breaker.rs:
//     after `breaker_threshold` transient failures in a row the channel's breaker opens and
//     the dispatcher claims nothing, so queued contacts keep their attempts; after the
//     cool-down one message probes; an answer closes the breaker and sending resumes.
#[tokio::test]
async fn an_open_breaker_spends_no_attempts_and_a_probe_closes_it() {
    let rig = Rig::with_sms(ONE_WAVE, 10, Recorder::new("sms", Answer::Transient)).await;
    let mut cfg = rig.config();
    cfg.max_attempts = None;
    cfg.breaker_threshold = 3;
    cfg.breaker_cool_down = Duration::from_secs(300);
    let e = rig.engine(cfg).await;
    let run_id = e.trigger("inv", "test").await.unwrap();
    e.tick().await.unwrap();
    let s = e.dispatch_round("sms").await.unwrap();
    assert_eq!((s.claimed, s.retried), (10, 10));
    assert_eq!(sms_breaker(&e), "open");
    // Every retry is due (60 s cap), but the breaker is open for 5 minutes: no claim, no
    // send, no attempt spent.
    for _ in 0..4 {
        rig.clock.advance(Duration::from_secs(60));
        let s = e.dispatch_round("sms").await.unwrap();
        assert_eq!((s.claimed, s.held), (0, true));
    }
    assert_eq!(rig.sms.sent.lock().unwrap().len(), 10);
    let attempts: Vec<i32> = queue_column(&rig.store, "attempt", "contact_id").await;
    assert_eq!(attempts, vec![1; 10]);
    // Cool-down over: one probe, which fails: open again, one attempt spent on one contact.
    rig.clock.advance(Duration::from_secs(61));
    let s = e.dispatch_round("sms").await.unwrap();
    assert_eq!((s.claimed, s.retried), (1, 1));
    assert_eq!(sms_breaker(&e), "open");
    assert_eq!(e.dispatch_round("sms").await.unwrap().claimed, 0);
    // The gateway is back: the next probe closes the breaker and the rest go.
    rig.sms.answer(Answer::Accept);
    rig.clock.advance(Duration::from_secs(301));
    let s = e.dispatch_round("sms").await.unwrap();
    assert_eq!((s.claimed, s.sent), (1, 1));
    assert_eq!(sms_breaker(&e), "closed");
    rig.drain(&e, "sms").await;
    let states = wave_states(&rig.store, run_id, 0).await;
    assert!(states.values().all(|s| s == "sent"), "{states:?}");
    assert_eq!(rig.sms.sent.lock().unwrap().len(), 10 + 1 + 10);
}

// c5. dispatch.rs `verdict_of` (`Verdict::Throttled`) and store `settle` (`Deferred`:
//     `attempt = attempt - ?`): a 429 with Retry-After pauses the whole channel for that
//     long (other due contacts are not claimed either) and costs the throttled contacts no
//     attempt; after the pause sending resumes.
#[tokio::test]
async fn retry_after_pauses_the_channel_without_spending_attempts() {
    let rig = Rig::with_sms(ONE_WAVE, 6, Recorder::new("sms", Answer::Throttled(120))).await;
    let mut cfg = rig.config();
    cfg.batch_size = 2;
    let e = rig.engine(cfg).await;
    let run_id = e.trigger("inv", "test").await.unwrap();
    e.tick().await.unwrap();
    let s = e.dispatch_round("sms").await.unwrap();
    assert_eq!((s.claimed, s.deferred, s.retried), (2, 2, 0));
    assert_eq!(sms_breaker(&e), "open");
    // Four more contacts are due, but the channel is paused for 120 s.
    for _ in 0..2 {
        let s = e.dispatch_round("sms").await.unwrap();
        assert_eq!((s.claimed, s.held), (0, true));
        rig.clock.advance(Duration::from_secs(59));
    }
    assert_eq!(rig.sms.sent.lock().unwrap().len(), 2);
    let attempts: Vec<i32> = queue_column(&rig.store, "attempt", "contact_id").await;
    assert_eq!(attempts, vec![0; 6], "a throttled send costs no attempt");
    rig.sms.answer(Answer::Accept);
    rig.clock.advance(Duration::from_secs(3));
    let s = e.dispatch_round("sms").await.unwrap();
    assert_eq!((s.claimed, s.sent), (1, 1), "the probe");
    rig.drain(&e, "sms").await;
    let states = wave_states(&rig.store, run_id, 0).await;
    assert!(states.values().all(|s| s == "sent"), "{states:?}");
    assert_eq!(rig.sms.sent.lock().unwrap().len(), 2 + 6);
}

// c6. dispatch.rs `verdict_of` (`Verdict::Refused` forces the breaker open) and `outcome_of`
//     (`Refused` → `Deferred`): rejected credentials pause the channel instead of failing
//     the wave; contacts stay queued with their attempts, however long the clock runs,
//     and `breaker_states` shows it (the operator's status; the transition logs an ERROR).
#[tokio::test]
async fn an_auth_error_pauses_the_channel_and_fails_nobody() {
    let rig = Rig::with_sms(ONE_WAVE, 5, Recorder::new("sms", Answer::Refused)).await;
    let mut cfg = rig.config();
    cfg.batch_size = 2;
    let e = rig.engine(cfg).await;
    let run_id = e.trigger("inv", "test").await.unwrap();
    e.tick().await.unwrap();
    let s = e.dispatch_round("sms").await.unwrap();
    assert_eq!((s.claimed, s.deferred, s.failed), (2, 2, 0));
    assert_eq!(sms_breaker(&e), "forced_open");
    // Hours later: still paused (no cool-down ends it), nothing claimed, nothing spent.
    for _ in 0..5 {
        rig.clock.advance(Duration::from_secs(3600));
        let s = e.dispatch_round("sms").await.unwrap();
        assert_eq!((s.claimed, s.held), (0, true));
    }
    assert_eq!(rig.sms.sent.lock().unwrap().len(), 2);
    let attempts: Vec<i32> = queue_column(&rig.store, "attempt", "contact_id").await;
    assert_eq!(attempts, vec![0; 5]);
    let states = wave_states(&rig.store, run_id, 0).await;
    assert!(states.values().all(|s| s == "pending"), "{states:?}");
    // The operator fixes the password and restarts: a new engine sends them all.
    rig.sms.answer(Answer::Accept);
    let e = rig.engine(rig.config()).await;
    rig.drain(&e, "sms").await;
    let states = wave_states(&rig.store, run_id, 0).await;
    assert!(states.values().all(|s| s == "sent"), "{states:?}");
}

/// c6b. dispatch.rs `alert_gateway_refused`: the pause is not only a log line; the platform
///      team is mailed, through the staff mail queue, once per channel per hour however many
///      replicas (engines) hit the refusal.
#[tokio::test]
async fn an_auth_error_mails_the_platform_team_once() {
    let rig = Rig::with_sms(ONE_WAVE, 5, Recorder::new("sms", Answer::Refused)).await;
    let mail_dir = rig.dir.path().join("mail");
    let ops = vec!["sms-platform@example.com".to_owned()];
    let mut cfg = rig.config();
    cfg.batch_size = 2;
    let e1 = rig
        .engine(cfg.clone())
        .await
        .with_mailer(file_mailer(&mail_dir), Vec::new())
        .with_alerts(ops.clone());
    e1.trigger("inv", "test").await.unwrap();
    e1.tick().await.unwrap();
    e1.dispatch_round("sms").await.unwrap();
    assert_eq!(sms_breaker(&e1), "forced_open");
    // A second replica, refused too, within the hour.
    rig.clock.advance(Duration::from_secs(60));
    let e2 = rig
        .engine(cfg)
        .await
        .with_mailer(file_mailer(&mail_dir), Vec::new())
        .with_alerts(ops);
    e2.dispatch_round("sms").await.unwrap();
    assert_eq!(sms_breaker(&e2), "forced_open");
    let s = e1.mail_round().await.unwrap();
    assert_eq!((s.claimed, s.sent), (1, 1), "one alert: {s:?}");
    assert_eq!(e2.mail_round().await.unwrap().claimed, 0);
    let sent = emls(&mail_dir);
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0].contains("To: sms-platform@example.com"),
        "{}",
        sent[0]
    );
    assert!(
        sent[0].contains("the sms gateway refused campaignd; channel paused"),
        "{}",
        sent[0]
    );
    assert!(sent[0].contains("restart campaignd"), "{}", sent[0]);
}

async fn queue_or_contact_errors(store: &Store) -> Vec<String> {
    let rows = store
        .db()
        .query_all_raw(store::stmt(
            store.db(),
            "SELECT last_error FROM contact WHERE last_error IS NOT NULL ORDER BY id",
            [],
        ))
        .await
        .unwrap();
    rows.iter()
        .map(|r| r.try_get::<String>("", "last_error").unwrap())
        .collect()
}

async fn due_times(store: &Store) -> Vec<i64> {
    queue_column(store, "due_at", "due_at").await
}

/// One column of every queue row, in `order`.
async fn queue_column<T: sea_orm::TryGetable>(store: &Store, col: &str, order: &str) -> Vec<T> {
    let rows = store
        .db()
        .query_all_raw(store::stmt(
            store.db(),
            &format!("SELECT {col} FROM dispatch ORDER BY {order}"),
            [],
        ))
        .await
        .unwrap();
    rows.iter()
        .map(|r| r.try_get::<T>("", col).unwrap())
        .collect()
}

// c. dispatch.rs `backoff_delay`: `rng.random_range(base / 2..=cap.max(base))`
#[test]
fn backoff_stays_within_half_base_and_base_times_two_to_the_attempt() {
    let base = Duration::from_secs(30);
    let b = 30_000;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    for attempt in 1..=20 {
        let cap = b * (1i64 << attempt.min(16));
        let (mut lo, mut hi) = (i64::MAX, 0);
        for _ in 0..2000 {
            let d = engine::backoff_delay(base, attempt, &mut rng);
            assert!((b / 2..=cap).contains(&d), "attempt {attempt}: {d}");
            lo = lo.min(d);
            hi = hi.max(d);
        }
        // The jitter spans the whole range: the low end stays near base/2 whatever the
        // attempt (a gateway that recovers is retried soon), the high end grows.
        assert!(
            lo < b / 2 + (cap - b / 2) / 50,
            "attempt {attempt}: min {lo}"
        );
        assert!(hi > cap - (cap - b / 2) / 50, "attempt {attempt}: max {hi}");
    }
}

// c. dispatch.rs `capped_backoff`: `.min(max)`: a long outage never pushes a retry past
//    the cap, and the jitter still spreads over [base/2, cap].
#[test]
fn capped_backoff_never_passes_the_cap() {
    let base = Duration::from_secs(30);
    let max = Duration::from_secs(60);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    for attempt in 1..=40 {
        let (mut lo, mut hi) = (i64::MAX, 0);
        for _ in 0..500 {
            let d = engine::capped_backoff(base, max, attempt, &mut rng);
            assert!((15_000..=60_000).contains(&d), "attempt {attempt}: {d}");
            lo = lo.min(d);
            hi = hi.max(d);
        }
        assert!(lo < 16_000 && hi > 59_000, "attempt {attempt}: {lo}..{hi}");
    }
}

// d. lib.rs `Engine::run`: `for _ in 0..self.cfg.dispatchers_per_channel.max(1)`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_starts_every_dispatcher_and_each_contact_goes_once() {
    let sms = Arc::new(Recorder {
        gate: Some(Gate::default()),
        ..Arc::into_inner(Recorder::new("sms", Answer::Accept)).unwrap()
    });
    let rig = Rig::with_sms(ONE_WAVE, 12, sms).await;
    let mut cfg = rig.config();
    cfg.dispatchers_per_channel = 2;
    cfg.batch_size = 1;
    cfg.poll = Duration::from_millis(10);
    let e = Arc::new(rig.engine(cfg).await);
    let run_id = e.trigger("inv", "test").await.unwrap();
    e.tick().await.unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(e.clone().run(cancel.clone(), false));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let w = rig.store.wave_runs(run_id).await.unwrap()[0].id;
    while rig.store.pending_in_wave(w).await.unwrap() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "dispatch never finished: with one dispatcher loop every batch waits 20 s at the gate"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cancel.cancel();
    task.await.unwrap().unwrap();
    let gate = rig.sms.gate.as_ref().unwrap();
    assert_eq!(
        gate.state.lock().unwrap().1,
        2,
        "two dispatcher rounds of one channel were in flight at once"
    );
    let keys = rig.sms.keys();
    assert_eq!(keys.len(), 12);
    assert!(keys.values().all(|n| *n == 1), "{keys:?}");
}

// d. Two dispatchers claiming concurrently on one store: every contact exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_claimers_send_each_contact_once() {
    let rig = Rig::new(ONE_WAVE, 40).await;
    let mut cfg = rig.config();
    cfg.batch_size = 3;
    let a = Arc::new(rig.engine(cfg.clone()).await);
    cfg.worker_id = "other".into();
    let b = Arc::new(rig.engine(cfg).await);
    a.trigger("inv", "test").await.unwrap();
    a.tick().await.unwrap();
    let drain = |e: Arc<Engine>| {
        tokio::spawn(async move {
            let mut sent = 0;
            loop {
                let s = e.dispatch_round("sms").await.unwrap();
                if s.claimed == 0 {
                    break sent;
                }
                sent += s.sent;
            }
        })
    };
    let (x, y) = (drain(a), drain(b));
    let (x, y) = (x.await.unwrap(), y.await.unwrap());
    assert_eq!(x + y, 40);
    let keys = rig.sms.keys();
    assert_eq!(keys.len(), 40);
    assert!(keys.values().all(|n| *n == 1), "{keys:?}");
}

// e. catalog.rs / dispatch.rs: the run's own version, compiled from the stored bundle
//    (`self.catalog.for_run(&self.store, c.run_id, c.version_id)`).
#[tokio::test]
async fn a_restarted_engine_finishes_a_run_on_the_version_it_started_with() {
    let rig = Rig::new(TWO_WAVES, 4).await;
    let e1 = rig.engine(rig.config()).await;
    let run_id = e1.trigger("inv", "test").await.unwrap();
    e1.tick().await.unwrap();
    rig.drain(&e1, "sms").await;
    drop(e1);
    // While the run is in flight the files change to version 2; the daemon restarts.
    let dir = rig.wf_path.parent().unwrap();
    std::fs::write(dir.join("templates/call.txt"), "v2 call {name}").unwrap();
    std::fs::write(dir.join("templates/offer.txt"), "v2 offer for {name}").unwrap();
    rig.clock
        .advance(Duration::from_millis((DAY + MINUTE) as u64));
    let e2 = rig.engine(rig.config()).await;
    assert_eq!(rig.store.versions("inv").await.unwrap().len(), 2);
    let s = e2.tick().await.unwrap();
    assert_eq!((s.waves_closed, s.waves_planned), (1, 1));
    rig.drain(&e2, "outbound_call").await;
    let calls = rig.calls.texts();
    assert_eq!(calls.len(), 4);
    assert!(
        calls.iter().all(|t| t == "v1 call Test"),
        "run {run_id} keeps version 1 after a restart: {calls:?}"
    );
    insta::assert_snapshot!(rig.snapshot().await);
    // A new run takes version 2.
    e2.trigger("inv", "test").await.unwrap();
    e2.tick().await.unwrap();
    rig.drain(&e2, "sms").await;
    assert!(
        rig.sms
            .texts()
            .iter()
            .filter(|t| *t == "v2 offer for Test")
            .count()
            == 4,
        "{:?}",
        rig.sms.texts()
    );
}

// The decided contacts of a wave are written in batches after its planning commits
// (`store::batches`): an engine that dies after the first batch leaves the rest durable,
// and the next engine writes them before anything reads the wave.
#[tokio::test]
async fn a_restarted_engine_writes_the_batches_a_crash_left_and_sends_each_once() {
    let rig = Rig::new(ONE_WAVE, 5).await;
    let mut cfg = rig.config();
    cfg.planned_batch_contacts = 2;
    let e1 = rig.engine(cfg.clone()).await;
    let run_id = e1.trigger("inv", "test").await.unwrap();
    e1.arm(FailPoint::AfterWavePlanned);
    assert!(e1.tick().await.is_err());
    // Decided: 3 batches (2, 2, 1), the first written and queued.
    let pending = rig.store.planned_pending(None).await.unwrap();
    assert_eq!((pending.batches, pending.contacts), (2, 3));
    assert_eq!(wave_states(&rig.store, run_id, 0).await.len(), 2);
    let w = rig.store.wave_runs(run_id).await.unwrap()[0].id;
    assert_eq!(rig.store.pending_in_wave(w).await.unwrap(), 5);
    drop(e1);
    let e2 = rig.engine(cfg).await;
    let s = e2.tick().await.unwrap();
    assert_eq!((s.batches_written, s.waves_planned), (2, 0));
    assert_eq!(rig.store.planned_pending(None).await.unwrap().batches, 0);
    rig.drain(&e2, "sms").await;
    let keys = rig.sms.keys();
    assert_eq!(keys.len(), 5, "{keys:?}");
    assert!(keys.values().all(|n| *n == 1), "{keys:?}");
    let states = wave_states(&rig.store, run_id, 0).await;
    assert_eq!(states.len(), 5, "{states:?}");
    assert!(states.values().all(|s| s == "sent"), "{states:?}");
}

// f. store runs.rs: `INSERT INTO timer ... ON CONFLICT (kind, wave_run_id) DO NOTHING` with
//    the unique index (kind, wave_run_id); `fire_timer`'s `AND state = 'pending'` with the
//    wave's open → closed transition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_timer_per_window_and_the_window_closes_once() {
    use store::TransactionTrait;
    let rig = Rig::new(ONE_WAVE, 2).await;
    let a = rig.engine(rig.config()).await;
    let mut cfg = rig.config();
    cfg.worker_id = "other".into();
    let b = Arc::new(rig.engine(cfg).await);
    let run_id = a.trigger("inv", "test").await.unwrap();
    // Two engines plan: one wave, one timer.
    let (sa, sb) = (a.tick().await.unwrap(), b.tick().await.unwrap());
    assert_eq!(sa.waves_planned + sb.waves_planned, 1);
    let wave = rig.store.wave_runs(run_id).await.unwrap()[0].clone();
    // The window is armed again for the same wave, as a re-plan after a crash would.
    let tx = rig.store.db().begin().await.unwrap();
    store::runs::set_wave_window(&tx, wave.id, t0(), wave.closes_at.unwrap())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    insta::assert_snapshot!("one_timer_armed", rig.snapshot().await);

    // Past the window both engines find the timer due; b is held after reading it.
    rig.clock
        .advance(Duration::from_millis((2 * DAY + MINUTE) as u64));
    let mut held = b.pause(FailPoint::BeforeTimerFire);
    let b_tick = tokio::spawn({
        let b = b.clone();
        async move { b.tick().await }
    });
    held.reached().await;
    let sa = a.tick().await.unwrap();
    held.resume();
    let sb = b_tick.await.unwrap().unwrap();
    assert_eq!(
        (sa.waves_closed, sb.waves_closed),
        (1, 0),
        "the window closes once"
    );
    assert_eq!(sa.runs_finished + sb.runs_finished, 1);
    insta::assert_snapshot!("one_timer_fired", rig.snapshot().await);
}

// g. store runs.rs `insert_slot`: `ON CONFLICT (campaign, slot_at) DO NOTHING` with the
//    unique index (campaign, slot_at).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_slot_runs_once_when_two_engines_evaluate_it() {
    let rig = Rig::new(SCHEDULED, 2).await;
    rig.clock.set(t0() + 30_000); // 10:00:30; the 10:00:00 slot is due
    let a = rig.engine(rig.config()).await;
    let mut cfg = rig.config();
    cfg.worker_id = "other".into();
    let b = Arc::new(rig.engine(cfg).await);
    // b has computed the due slot and not recorded it yet when a records it.
    let mut held = b.pause(FailPoint::BeforeSlotStart);
    let b_tick = tokio::spawn({
        let b = b.clone();
        async move { b.tick().await }
    });
    held.reached().await;
    let sa = a.tick().await.unwrap();
    held.resume();
    let sb = b_tick
        .await
        .unwrap()
        .expect("losing the slot is not an error");
    assert_eq!((sa.runs_started, sb.runs_started), (1, 0));
    let runs = rig.store.runs_of("inv").await.unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    insta::assert_snapshot!(rig.snapshot().await);
}

/// A scheduled run that is still open when the next slot comes, under `overlap` `policy`:
/// four subscribers, the 10:00 run planned and two of its four messages sent, then the
/// clock at 10:01:30. Returns the rig and engine.
async fn overlapping(policy: &str) -> (Rig, Engine) {
    let wf = SCHEDULED.replace(
        "catch_up_window: 5m",
        &format!("catch_up_window: 5m\n  overlap: {policy}"),
    );
    let rig = Rig::new(&wf, 4).await;
    let mut cfg = rig.config();
    cfg.batch_size = 2;
    let e = rig.engine(cfg).await;
    rig.clock.set(t0() + 30_000);
    assert_eq!(e.tick().await.unwrap().runs_started, 1);
    assert_eq!(e.dispatch_round("sms").await.unwrap().sent, 2);
    rig.clock.set(t0() + 90_000);
    (rig, e)
}

async fn slot_states(store: &Store) -> Vec<(String, Option<String>)> {
    store
        .slots("inv")
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.state, s.reason))
        .collect()
}

// g2. lib.rs `schedule_slots` (`schedule.overlap`): a slot that comes while the previous run
//     is open is skipped (the default), waits for it (queue), or closes it (close).
#[tokio::test]
async fn overlap_skip_records_the_slot_and_leaves_the_open_run_alone() {
    let (rig, e) = overlapping("skip").await;
    assert_eq!(e.tick().await.unwrap().runs_started, 0);
    // (Before 10:00: the catch-up window's older slots, recorded missed.)
    let slots = slot_states(&rig.store).await;
    let last = slots.last().cloned().unwrap_or_default();
    assert_eq!(
        (last.0.as_str(), last.1.as_deref()),
        ("skipped", Some("previous_run_open")),
        "{slots:?}"
    );
    assert_eq!(rig.store.runs_of("inv").await.unwrap().len(), 1);
    rig.drain(&e, "sms").await;
    assert_eq!(rig.sms.keys().len(), 4, "the open run sends the rest");
}

#[tokio::test]
async fn overlap_queue_starts_the_slot_once_the_open_run_finished() {
    let (rig, e) = overlapping("queue").await;
    let before = slot_states(&rig.store).await;
    assert_eq!(e.tick().await.unwrap().runs_started, 0);
    assert_eq!(
        slot_states(&rig.store).await,
        before,
        "the 10:01 slot is not recorded: it waits"
    );
    // The open run ends (closed here by hand; its window would take a day).
    let runs = rig.store.runs_of("inv").await.unwrap();
    rig.store
        .close_run_early(runs[0].id, t0() + 90_000, "test")
        .await
        .unwrap();
    e.tick().await.unwrap();
    assert_eq!(
        e.tick().await.unwrap().runs_started,
        1,
        "the queued slot runs"
    );
    let runs = rig.store.runs_of("inv").await.unwrap();
    assert_eq!(runs.len(), 2);
}

#[tokio::test]
async fn overlap_close_ends_the_open_run_with_its_report_and_starts_the_new_one() {
    let (rig, e) = overlapping("close").await;
    let first = rig.store.runs_of("inv").await.unwrap()[0].id;
    let s = e.tick().await.unwrap();
    assert_eq!((s.runs_started, s.runs_finished), (1, 1), "{s:?}");
    let old = rig.store.run(first).await.unwrap().unwrap();
    assert_eq!(old.state, "done");
    assert!(rig.store.run_report(first).await.unwrap().is_some());
    let states = wave_states(&rig.store, first, 0).await;
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for st in states.values() {
        *counts.entry(st.as_str()).or_default() += 1;
    }
    assert_eq!(counts.get("sent"), Some(&2), "{states:?}");
    assert_eq!(
        counts.get("expired"),
        Some(&2),
        "the unsent expire: {states:?}"
    );
    rig.drain(&e, "sms").await;
    // Two of the old run, four of the new one; none of the expired.
    assert_eq!(rig.sms.sent.lock().unwrap().len(), 6);
}

// 6. A crash after the channel took a batch and before its settle: after the lease runs
//    out, a new engine resends exactly that batch, once, and every contact ends settled.
#[tokio::test]
async fn a_crash_between_send_and_settle_resends_that_batch_once_after_the_lease() {
    let rig = Rig::new(ONE_WAVE, 10).await;
    let mut cfg = rig.config();
    cfg.batch_size = 4;
    let e1 = rig.engine(cfg.clone()).await;
    let run_id = e1.trigger("inv", "test").await.unwrap();
    e1.tick().await.unwrap();
    e1.arm(FailPoint::AfterSendBeforeSettle);
    match e1.dispatch_round("sms").await {
        Err(EngineError::FailPoint(FailPoint::AfterSendBeforeSettle)) => {}
        other => panic!("expected the failure point, got {other:?}"),
    }
    let first: Vec<String> = rig.sms.keys().into_keys().collect();
    assert_eq!(first.len(), 4);
    drop(e1);
    insta::assert_snapshot!("crash_after_send_before_settle", rig.snapshot().await);

    // A new process while the lease still holds: the other six go, the batch waits.
    let e2 = rig.engine(cfg).await;
    rig.drain(&e2, "sms").await;
    assert_eq!(rig.sms.keys().len(), 10);
    assert!(rig.sms.keys().values().all(|n| *n == 1));
    insta::assert_snapshot!("crash_lease_still_held", rig.snapshot().await);

    // The lease (60 s) runs out: that batch, and only it, goes once more.
    rig.clock.advance(Duration::from_secs(61));
    rig.drain(&e2, "sms").await;
    let keys = rig.sms.keys();
    for (k, n) in &keys {
        let expected = if first.contains(k) { 2 } else { 1 };
        assert_eq!(*n, expected, "{k}: {keys:?}");
    }
    let states = wave_states(&rig.store, run_id, 0).await;
    assert_eq!(states.len(), 10);
    assert!(states.values().all(|s| s == "sent"), "{states:?}");
    assert!(due_times(&rig.store).await.is_empty(), "the queue is empty");
    insta::assert_snapshot!("crash_recovered", rig.snapshot().await);
}

/// A database that refuses the write of the gateway's answers (an outage) does not make the
/// dispatcher drop them: they are held and written on the next try, so no message the
/// gateway took is sent again once its lease has run out.
#[tokio::test]
async fn answers_the_database_refused_are_held_and_written_so_nothing_is_resent() {
    let rig = Rig::new(ONE_WAVE, 6).await;
    let mut cfg = rig.config();
    cfg.batch_size = 6;
    let e = rig.engine(cfg).await;
    let run_id = e.trigger("inv", "test").await.unwrap();
    e.tick().await.unwrap();
    e.arm(FailPoint::DatabaseDownAtSettle);
    let stats = e.dispatch_round("sms").await.unwrap();
    assert_eq!(stats.sent, 6, "{stats:?}");
    let states = wave_states(&rig.store, run_id, 0).await;
    assert!(states.values().all(|s| s == "sent"), "{states:?}");
    // Long after every lease: nothing goes again.
    rig.clock.advance(Duration::from_secs(3600));
    rig.drain(&e, "sms").await;
    let keys = rig.sms.keys();
    assert_eq!(keys.len(), 6);
    assert!(keys.values().all(|n| *n == 1), "{keys:?}");
    assert!(due_times(&rig.store).await.is_empty(), "the queue is empty");
}

/// The CI failure of session 8 (20 messages sent twice after PostgreSQL was down for a
/// minute): while a round waited out the outage with its answers held, the leases of those
/// rows ran out, housekeeping cleared them when the database came back, and the rows were
/// claimed again before the held answers were written. Now a process holding answers claims
/// nothing and clears no lease, and an answer still lands on a row another replica's
/// housekeeping released (nobody holds it: the message went out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_answers_go_first_when_the_database_is_back_so_an_outage_sends_nothing_twice() {
    let rig = Rig::new(ONE_WAVE, 6).await;
    let mut cfg = rig.config();
    cfg.batch_size = 6;
    cfg.poll = Duration::from_millis(10);
    let e1 = Arc::new(rig.engine(cfg.clone()).await);
    let run_id = e1.trigger("inv", "test").await.unwrap();
    e1.tick().await.unwrap();
    e1.fail_until_cleared(FailPoint::DatabaseDownAtSettle);
    let round = tokio::spawn({
        let e1 = e1.clone();
        async move { e1.dispatch_round("sms").await }
    });
    eventually("the round holds its answers", || async { e1.owes_writes() }).await;
    assert_eq!(rig.sms.keys().len(), 6, "the gateway took the batch");

    // The outage outlasts the lease (60 s) and the proof grace.
    rig.clock.advance(Duration::from_secs(600));
    let own = e1.tick().await.unwrap();
    assert_eq!(
        (own.leases_reclaimed, own.expired),
        (0, 0),
        "the holder clears none of its own leases: {own:?}"
    );
    let again = e1.dispatch_round("sms").await.unwrap();
    assert_eq!(again.claimed, 0, "the holder claims nothing: {again:?}");

    // A replica that knows nothing of the held answers releases the rows ...
    let e2 = rig.engine(cfg).await;
    let other = e2.tick().await.unwrap();
    assert_eq!(other.leases_reclaimed, 6, "{other:?}");
    // ... and the database comes back before it claims them: the answers land anyway.
    e1.clear(FailPoint::DatabaseDownAtSettle);
    let stats = round.await.unwrap().unwrap();
    assert_eq!(stats.sent, 6, "{stats:?}");
    assert!(!e1.owes_writes());
    let states = wave_states(&rig.store, run_id, 0).await;
    assert!(states.values().all(|s| s == "sent"), "{states:?}");
    rig.drain(&e2, "sms").await;
    rig.drain(&e1, "sms").await;
    let keys = rig.sms.keys();
    assert_eq!(keys.len(), 6);
    assert!(keys.values().all(|n| *n == 1), "sent once each: {keys:?}");
    assert!(due_times(&rig.store).await.is_empty(), "the queue is empty");
}

/// Kannel's SMSC acknowledgements (DLR type 8) of `keys`, as the callback stores them.
fn smsc_acks(keys: &[String]) -> Vec<store::inbound::NewInbound> {
    keys.iter()
        .map(|k| store::inbound::NewInbound {
            source: store::inbound::source::DLR,
            idem_key: Some(k.clone()),
            msisdn: None,
            kind: "8".into(),
            value: None,
            payload: "{}".into(),
            received_at: t0() + 1_000,
        })
        .collect()
}

/// The queue rows' lease ends, by contact.
async fn lease_ends(store: &Store) -> Vec<Option<i64>> {
    queue_column(store, "lease_until", "contact_id").await
}

/// Waits (in real time, bounded) for a condition the engine makes true by itself.
async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An engine that started a run and planned it, and one dispatch round of it running in the
/// background against a gateway that answers `answered` messages and holds the rest.
async fn stalled_round(
    rig: &Rig,
    cfg: EngineConfig,
    answered: usize,
) -> (
    Arc<Engine>,
    i64,
    tokio::task::JoinHandle<Result<engine::RoundStats, EngineError>>,
) {
    let e = Arc::new(rig.engine(cfg).await);
    let run_id = e.trigger("inv", "test").await.unwrap();
    e.tick().await.unwrap();
    *rig.sms.stall_after.lock().unwrap() = Some(answered);
    let round = tokio::spawn({
        let e = e.clone();
        async move { e.dispatch_round("sms").await }
    });
    (e, run_id, round)
}

// e2. dispatch.rs (`send_and_settle`): each answer is recorded as it comes, so a crash
//     leaves in doubt only the messages whose answer was not yet written, not the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_settled_as_they_come_so_a_crash_repeats_only_the_unanswered() {
    let rig = Rig::new(ONE_WAVE, 10).await;
    let mut cfg = rig.config();
    cfg.batch_size = 10;
    let (e1, run_id, round) = stalled_round(&rig, cfg.clone(), 3).await;
    eventually("the first three answers to be settled", || async {
        let states = wave_states(&rig.store, run_id, 0).await;
        states.values().filter(|s| *s == "sent").count() == 3
    })
    .await;
    // The process dies with seven messages at the gateway and their answers unrecorded.
    round.abort();
    let _ = round.await;
    drop(e1);
    let states = wave_states(&rig.store, run_id, 0).await;
    assert_eq!(states.values().filter(|s| *s == "sending").count(), 7);
    let first: Vec<String> = rig.sms.keys().into_keys().collect();
    assert_eq!(first.len(), 10);

    *rig.sms.stall_after.lock().unwrap() = None;
    rig.clock.advance(Duration::from_secs(61));
    let e2 = rig.engine(cfg).await;
    rig.drain(&e2, "sms").await;
    let keys = rig.sms.keys();
    let twice = keys.values().filter(|n| **n == 2).count();
    let once = keys.values().filter(|n| **n == 1).count();
    assert_eq!((once, twice), (3, 7), "{keys:?}");
    let states = wave_states(&rig.store, run_id, 0).await;
    assert!(states.values().all(|s| s == "sent"), "{states:?}");
}

// e3. dispatch.rs (`renew_lease` while a batch is in flight): a gateway slower than the
//     lease does not let another worker claim, and send, the batch a live worker holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_slower_than_its_lease_keeps_it_renewed() {
    let rig = Rig::new(ONE_WAVE, 6).await;
    let mut cfg = rig.config();
    // Renewed every 100 ms of real time; the manual clock jumps far past it below.
    cfg.lease = Duration::from_millis(300);
    let (_e1, run_id, round) = stalled_round(&rig, cfg.clone(), 0).await;
    eventually("the batch to reach the gateway", || async {
        rig.sms.keys().len() == 6
    })
    .await;
    // Ten seconds of campaign time pass while the gateway is still answering: the lease
    // taken at the claim (300 ms) is long gone, unless the worker renewed it.
    rig.clock.advance(Duration::from_secs(10));
    let now = t0() + 10_000;
    eventually(
        "the worker to renew its lease past the new time",
        || async {
            let ends = lease_ends(&rig.store).await;
            ends.len() == 6 && ends.iter().all(|e| e.is_some_and(|e| e > now))
        },
    )
    .await;
    let e2 = rig.engine(cfg).await;
    let stolen = e2.dispatch_round("sms").await.unwrap();
    assert_eq!(stolen.claimed, 0, "another worker claimed a live batch");

    rig.sms.release.notify_one();
    let stats = round.await.unwrap().unwrap();
    assert_eq!(stats.sent, 6);
    assert!(rig.sms.keys().values().all(|n| *n == 1));
    let states = wave_states(&rig.store, run_id, 0).await;
    assert!(states.values().all(|s| s == "sent"), "{states:?}");
}

// e4. store `claim` (`proof_grace`), tracking (`SMSC_ACK` → `record_submission`) and
//     dispatch.rs (`reported_keys`): a message in doubt after a crash waits for the gateway's
//     proof of submission; proved ones are recorded as sent and never repeated, whether
//     attribution read the report or the dispatcher found it; the rest go again after the
//     grace.
#[tokio::test]
async fn a_message_in_doubt_waits_for_the_smsc_ack_and_is_not_sent_again() {
    let rig = Rig::with_sms(ONE_WAVE, 10, Recorder::proving(Duration::from_secs(30))).await;
    let mut cfg = rig.config();
    cfg.batch_size = 10;
    let e1 = rig.engine(cfg.clone()).await;
    let run_id = e1.trigger("inv", "test").await.unwrap();
    e1.tick().await.unwrap();
    e1.arm(FailPoint::AfterSendBeforeSettle);
    match e1.dispatch_round("sms").await {
        Err(EngineError::FailPoint(FailPoint::AfterSendBeforeSettle)) => {}
        other => panic!("expected the failure point, got {other:?}"),
    }
    drop(e1);
    let mut sent: Vec<String> = rig.sms.keys().into_keys().collect();
    sent.sort();
    assert_eq!(sent.len(), 10);
    // In doubt, so their acknowledgements must be stored (`store::sent_keys`).
    assert!(rig.store.sent_keys().is_empty());
    // The SMSC acknowledged four of them; the reports arrive while nobody holds the batch.
    rig.store
        .insert_inbound(&smsc_acks(&sent[..4]))
        .await
        .unwrap();

    // The lease ran out, the grace has not: nothing goes again yet.
    rig.clock.advance(Duration::from_secs(61));
    let e2 = rig.engine(cfg).await;
    assert_eq!(e2.dispatch_round("sms").await.unwrap().claimed, 0);
    // Attribution reads the acknowledgements: those four are sent.
    e2.tick().await.unwrap();
    let states = wave_states(&rig.store, run_id, 0).await;
    assert_eq!(
        states.values().filter(|s| *s == "sent").count(),
        4,
        "{states:?}"
    );

    // Two more reports arrive after the grace, stored but not yet read by attribution: the
    // dispatcher finds them itself before sending again.
    let late: Vec<store::inbound::NewInbound> = smsc_acks(&sent[4..6]);
    rig.store.insert_inbound(&late).await.unwrap();

    // After the grace the four without proof go once more; the six proved never do.
    rig.clock.advance(Duration::from_secs(31));
    let round = e2.dispatch_round("sms").await.unwrap();
    assert_eq!((round.reconciled, round.sent), (2, 4), "{round:?}");
    rig.drain(&e2, "sms").await;
    let keys = rig.sms.keys();
    for (k, n) in &keys {
        let expected = if sent[..6].contains(k) { 1 } else { 2 };
        assert_eq!(*n, expected, "{k}: {keys:?}");
    }
    let states = wave_states(&rig.store, run_id, 0).await;
    assert!(states.values().all(|s| s == "sent"), "{states:?}");
    // The four sent again were settled `sent` by the dispatcher: their acknowledgements
    // need not be stored.
    assert!(sent[6..].iter().all(|k| rig.store.sent_keys().contains(k)));
}

// e5. dispatch.rs `outcome_of` (Ambiguous waits `grace`): an ambiguous answer (a timeout:
//     the gateway may have the message) is retried only after the proof grace, and the
//     acknowledgements that came meanwhile stop the retry of the messages they prove.
#[tokio::test]
async fn an_ambiguous_answer_waits_for_the_proof_grace_before_a_retry() {
    let grace = Duration::from_secs(300);
    let gateway = Arc::new(Recorder {
        grace,
        ..Arc::into_inner(Recorder::new("sms", Answer::Ambiguous)).unwrap()
    });
    let rig = Rig::with_sms(ONE_WAVE, 3, gateway).await;
    let e = rig.engine(rig.config()).await;
    let run_id = e.trigger("inv", "test").await.unwrap();
    e.tick().await.unwrap();
    let round = e.dispatch_round("sms").await.unwrap();
    assert_eq!(round.retried, 3, "{round:?}");
    let mut sent: Vec<String> = rig.sms.keys().into_keys().collect();
    sent.sort();
    // Still queued, so their acknowledgements are proof and must be stored.
    assert!(
        sent.iter().all(|k| !rig.store.sent_keys().contains(k)),
        "a retried contact is not remembered as sent"
    );
    // The SMSC acknowledges two of them.
    rig.store
        .insert_inbound(&smsc_acks(&sent[..2]))
        .await
        .unwrap();
    rig.sms.answer(Answer::Accept);

    // Past any backoff (at most 2 x 60 s for a first retry), within the grace: nothing goes.
    rig.clock.advance(Duration::from_secs(150));
    assert_eq!(e.dispatch_round("sms").await.unwrap().claimed, 0);
    // After the grace: the two proved are recorded sent, the third goes once more.
    rig.clock.advance(Duration::from_secs(151));
    let round = e.dispatch_round("sms").await.unwrap();
    assert_eq!((round.reconciled, round.sent), (2, 1), "{round:?}");
    assert!(rig.store.sent_keys().contains(&sent[2]));
    let keys = rig.sms.keys();
    for (k, n) in &keys {
        let expected = if sent[..2].contains(k) { 1 } else { 2 };
        assert_eq!(*n, expected, "{k}: {keys:?}");
    }
    let states = wave_states(&rig.store, run_id, 0).await;
    assert!(states.values().all(|s| s == "sent"), "{states:?}");
}

/// [`ONE_WAVE`], at most once.
fn at_most_once() -> String {
    ONE_WAVE.replace(
        "    send_within: 1d\n",
        "    send_within: 1d\n    delivery: at_most_once\n",
    )
}

// e5. store `DUE` (`at_most_once = ?`) and `settle_doubtful`: an at-most-once wave never
//     sends a message in doubt again: after the lease and the grace, a contact the gateway
//     reported on is `sent`, the rest `unknown`.
#[tokio::test]
async fn at_most_once_never_sends_a_message_in_doubt_again() {
    let wf = at_most_once();
    let rig = Rig::with_sms(&wf, 6, Recorder::proving(Duration::from_secs(30))).await;
    let mut cfg = rig.config();
    cfg.batch_size = 6;
    let e1 = rig.engine(cfg.clone()).await;
    let run_id = e1.trigger("inv", "test").await.unwrap();
    e1.tick().await.unwrap();
    e1.arm(FailPoint::AfterSendBeforeSettle);
    assert!(e1.dispatch_round("sms").await.is_err());
    drop(e1);
    let mut sent: Vec<String> = rig.sms.keys().into_keys().collect();
    sent.sort();
    assert_eq!(sent.len(), 6);

    // Past the lease and the grace: an at-least-once wave would send them again here.
    rig.clock.advance(Duration::from_secs(61 + 31));
    let e2 = rig.engine(cfg).await;
    rig.drain(&e2, "sms").await;
    assert!(rig.sms.keys().values().all(|n| *n == 1), "sent again");

    // The gateway reported on two; housekeeping decides all six.
    let reports: Vec<store::inbound::NewInbound> = sent[..2]
        .iter()
        .map(|k| store::inbound::NewInbound {
            source: store::inbound::source::DLR,
            idem_key: Some(k.clone()),
            msisdn: None,
            kind: "1".into(),
            value: None,
            payload: "{}".into(),
            received_at: t0() + 1_000,
        })
        .collect();
    rig.store.insert_inbound(&reports).await.unwrap();
    e2.tick().await.unwrap();
    let states = wave_states(&rig.store, run_id, 0).await;
    let count = |st: &str| states.values().filter(|s| *s == st).count();
    assert_eq!(
        (count("delivered") + count("sent"), count("unknown")),
        (2, 4),
        "{states:?}"
    );
    assert!(due_times(&rig.store).await.is_empty(), "the queue is empty");
    rig.drain(&e2, "sms").await;
    assert!(rig.sms.keys().values().all(|n| *n == 1), "sent again");
}

// e6. dispatch.rs `outcome_of` (`Ambiguous if at_most_once`): a gateway that may have taken
//     the message (a timeout) gets no second copy in an at-most-once wave.
#[tokio::test]
async fn at_most_once_records_an_ambiguous_answer_unknown_and_does_not_retry() {
    let wf = at_most_once();
    let rig = Rig::with_sms(&wf, 3, Recorder::new("sms", Answer::Ambiguous)).await;
    let e = rig.engine(rig.config()).await;
    let run_id = e.trigger("inv", "test").await.unwrap();
    e.tick().await.unwrap();
    let round = e.dispatch_round("sms").await.unwrap();
    assert_eq!((round.unknown, round.retried), (3, 0), "{round:?}");
    rig.clock.advance(Duration::from_secs(3600));
    rig.drain(&e, "sms").await;
    assert_eq!(rig.sms.keys().len(), 3);
    assert!(rig.sms.keys().values().all(|n| *n == 1));
    let states = wave_states(&rig.store, run_id, 0).await;
    assert!(states.values().all(|s| s == "unknown"), "{states:?}");
}

// f. dispatch.rs (`derived_for_templates`): a template shows a derived attribute with the
//    value the store's SQL computes, not an empty text (derived attributes are not columns).
#[tokio::test]
async fn a_template_shows_a_derived_attribute_computed_in_sql() {
    let rig = Rig::new(ONE_WAVE, 3).await;
    // The test subscribers spend 50 yuan a month: the shipped catalogue derives `ordinary`.
    let dir = rig.wf_path.parent().unwrap();
    std::fs::write(
        dir.join("templates/offer.txt"),
        "{name} is {value_tier}, {bill_queries_30d} bill queries",
    )
    .unwrap();
    let e = rig.engine(rig.config()).await;
    e.trigger("inv", "test").await.unwrap();
    e.tick().await.unwrap();
    rig.drain(&e, "sms").await;
    let texts = rig.sms.texts();
    assert_eq!(texts.len(), 3);
    assert!(
        texts
            .iter()
            .all(|t| t == "Test is ordinary, 0 bill queries"),
        "{texts:?}"
    );
}

/// A mailer writing `.eml` files under `dir`.
fn file_mailer(dir: &std::path::Path) -> channels::email::Mailer {
    channels::email::Mailer::new(
        &channels::email::EmailConfig::File {
            dir: dir.to_owned(),
        },
        "campaignd <campaignd@example.com>",
    )
    .unwrap()
}

fn emls(dir: &std::path::Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Err(_) => Vec::new(),
        Ok(entries) => entries
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect(),
    }
}

/// Plans, sends and closes the one wave of a triggered run; the next tick finishes it.
async fn run_to_the_close(rig: &Rig, e: &Engine) -> i64 {
    let run_id = e.trigger("inv", "test").await.unwrap();
    e.tick().await.unwrap();
    rig.drain(e, "sms").await;
    rig.clock
        .advance(Duration::from_millis((2 * DAY + MINUTE) as u64));
    run_id
}

// h. engine lib.rs `finish_run_with_mail` (the report mail queued in the transaction that
//    finishes the run) and mail.rs (`mail_round`): a crash right after the finish loses no
//    report mail; the next engine sends it, once.
#[tokio::test]
async fn a_crash_after_the_run_finished_loses_no_report_mail() {
    let rig = Rig::new(ONE_WAVE, 3).await;
    let mail_dir = rig.dir.path().join("mail");
    let extra = vec!["ops@example.com".to_owned()];
    let e1 = rig
        .engine(rig.config())
        .await
        .with_mailer(file_mailer(&mail_dir), extra.clone());
    let run_id = run_to_the_close(&rig, &e1).await;
    e1.arm(FailPoint::AfterRunFinished);
    match e1.tick().await {
        Err(EngineError::FailPoint(FailPoint::AfterRunFinished)) => {}
        other => panic!("expected the failure point, got {other:?}"),
    }
    drop(e1);
    assert!(
        emls(&mail_dir).is_empty(),
        "nothing was sent before the crash"
    );
    assert_eq!(rig.store.run(run_id).await.unwrap().unwrap().state, "done");
    let queued = rig
        .store
        .mail_by_key(&store::mail::report_dedup_key(run_id))
        .await
        .unwrap()
        .expect("the report mail is queued with the finish");
    assert_eq!(queued.state, store::mail::MailState::Queued);
    assert_eq!(queued.recipients, extra);

    let e2 = rig
        .engine(rig.config())
        .await
        .with_mailer(file_mailer(&mail_dir), extra);
    assert_eq!(e2.tick().await.unwrap().runs_finished, 0);
    let s = e2.mail_round().await.unwrap();
    assert_eq!((s.claimed, s.sent), (1, 1));
    assert_eq!(e2.mail_round().await.unwrap().claimed, 0);
    let sent = emls(&mail_dir);
    assert_eq!(sent.len(), 1, "sent once");
    assert!(
        sent[0].contains(&format!("Subject: campaignd: inv run {run_id} evaluation")),
        "{}",
        sent[0]
    );
    assert!(sent[0].contains("To: ops@example.com"), "{}", sent[0]);
    let row = rig.store.mails().await.unwrap();
    assert_eq!(row.len(), 1);
    assert_eq!(row[0].state, store::mail::MailState::Sent);
}

// i. store mail.rs `claim_mail` (a lease that ran out makes the row due again) and
//    `settle_mail` (`AND lease_token = ?`): a crash between the mailer's accept and the
//    settle sends that one mail again after the lease, with the same Message-ID, and only
//    the second send settles.
#[tokio::test]
async fn a_crash_between_mail_send_and_settle_repeats_that_mail_once_after_the_lease() {
    let rig = Rig::new(ONE_WAVE, 2).await;
    let mail_dir = rig.dir.path().join("mail");
    let extra = vec!["ops@example.com".to_owned()];
    let e1 = rig
        .engine(rig.config())
        .await
        .with_mailer(file_mailer(&mail_dir), extra.clone());
    run_to_the_close(&rig, &e1).await;
    assert_eq!(e1.tick().await.unwrap().runs_finished, 1);
    e1.arm(FailPoint::AfterMailSendBeforeSettle);
    match e1.mail_round().await {
        Err(EngineError::FailPoint(FailPoint::AfterMailSendBeforeSettle)) => {}
        other => panic!("expected the failure point, got {other:?}"),
    }
    drop(e1);
    assert_eq!(emls(&mail_dir).len(), 1);

    let e2 = rig
        .engine(rig.config())
        .await
        .with_mailer(file_mailer(&mail_dir), extra);
    assert_eq!(
        e2.mail_round().await.unwrap().claimed,
        0,
        "the lease still holds"
    );
    rig.clock.advance(Duration::from_secs(61));
    assert_eq!(e2.mail_round().await.unwrap().sent, 1);
    assert_eq!(e2.mail_round().await.unwrap().claimed, 0);
    let sent = emls(&mail_dir);
    assert_eq!(sent.len(), 2, "repeated once");
    let ids: Vec<&str> = sent
        .iter()
        .map(|m| m.lines().find(|l| l.starts_with("Message-ID:")).unwrap())
        .collect();
    assert_eq!(ids[0], ids[1], "a receiver can recognise the repeat");
    let rows = rig.store.mails().await.unwrap();
    assert_eq!(rows[0].state, store::mail::MailState::Sent);
    assert_eq!(rows[0].attempt, 2);
}

// k. engine `advance_run`: a following wave waits for its delay and time of day
//    (`spec::Wave::due_after`) after the wave it follows closed.
#[tokio::test]
async fn a_following_wave_waits_for_its_delay_and_time_of_day() {
    let waits = TWO_WAVES.replace(
        "after: sms_offer",
        "after: sms_offer + 1d\n    at: next 09:30",
    );
    let rig = Rig::new(&waits, 2).await;
    let e = rig.engine(rig.config()).await;
    let run_id = e.trigger("inv", "test").await.unwrap();
    assert_eq!(e.tick().await.unwrap().waves_planned, 1);
    let closes = rig.store.wave_runs(run_id).await.unwrap()[0]
        .closes_at
        .unwrap();
    // The SMS window closes (Tuesday ~10:00): the call is due a day later, then at the
    // next 09:30, Thursday 09:30 in Shanghai.
    let thursday = chrono_tz::Asia::Shanghai
        .with_ymd_and_hms(2026, 9, 10, 9, 30, 0)
        .unwrap()
        .timestamp_millis();
    assert!(
        closes > t0() + DAY - HOUR && closes < t0() + DAY + HOUR,
        "{closes}"
    );
    rig.clock.set(closes + MINUTE);
    let s = e.tick().await.unwrap();
    assert_eq!((s.waves_closed, s.waves_planned), (1, 0));
    rig.clock.set(thursday - MINUTE);
    assert_eq!(e.tick().await.unwrap().waves_planned, 0, "not before 09:30");
    rig.clock.set(thursday);
    assert_eq!(e.tick().await.unwrap().waves_planned, 1);
}
