//! campaignd's side: a fresh database, a synthetic base, one SMS wave to everyone planned by
//! the real engine, then the engine's own dispatcher (`Engine::run`) sending it to the
//! gateway through the real Kannel transport. Only the dispatch is timed.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use async_trait::async_trait;
use channels::sms::{KannelConfig, KannelSms};
use channels::{Accepted, Channel, Outbound, SendError};
use engine::clock::Clock;
use engine::{Engine, EngineConfig};
use serde::{Deserialize, Serialize};
use store::Store;
use tokio_util::sync::CancellationToken;

use crate::gateway::Gateway;
pub(crate) use bench::Backend;
use bench::proc::{self, CpuMark, CpuUse};
use bench::{drop_schema, fresh_store};

/// The knobs tuned for throughput; printed with the results.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Settings {
    /// `EngineConfig::batch_size`: contacts claimed per dispatcher round.
    pub(crate) batch_size: u64,
    /// `KannelConfig::concurrency`: requests in flight (the plain loop uses the same).
    pub(crate) concurrency: usize,
    /// `EngineConfig::dispatchers_per_channel`.
    pub(crate) dispatchers: usize,
    /// `EngineConfig::poll`, ms (idle dispatcher sleep and housekeeping interval).
    pub(crate) poll_ms: u64,
    /// Worker threads of the gateway child.
    pub(crate) gateway_threads: usize,
    /// Also time claim / send / settle of one dispatcher on a second run of the wave.
    pub(crate) phases: bool,
    /// Leave the database (SQLite file, PostgreSQL schema) behind for inspection.
    #[serde(skip)]
    pub(crate) keep_db: bool,
}

/// One backend's numbers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BackendResult {
    pub(crate) backend: Backend,
    pub(crate) contacts: u64,
    /// Wall time from starting the dispatcher to the last contact settled as `sent`.
    pub(crate) seconds: f64,
    pub(crate) msg_per_sec: f64,
    /// Peak RSS (VmHWM) of the process that ran this backend, read after the run: base
    /// insert, planning and dispatch (each backend runs in a process of its own), MB.
    pub(crate) peak_rss_mb: f64,
    /// Peak RSS while dispatching only (VmHWM reset just before the dispatcher starts), MB.
    /// Memory the allocator kept from planning counts here too.
    pub(crate) peak_rss_dispatch_mb: f64,
    /// Time to insert the base and to plan the wave (not part of the measurement).
    pub(crate) insert_seconds: f64,
    pub(crate) plan_seconds: f64,
    /// One housekeeping pass (`Engine::tick`) with the whole wave still pending, ms: the
    /// daemon runs one every `poll_ms` while it dispatches.
    pub(crate) tick_ms_full_queue: f64,
    /// CPU spent during the dispatch.
    pub(crate) cpu: CpuUse,
    /// Share of the dispatch wall time during which at least one batch was being sent: the
    /// rest the gateway sat idle, waiting on the database side.
    pub(crate) send_busy_pct: f64,
    /// `send_batch` calls and their mean size.
    pub(crate) batches: u64,
    pub(crate) gateway_requests: u64,
    pub(crate) gateway_distinct_keys: u64,
    /// Serial per-message costs of one dispatcher (`--phases`).
    pub(crate) phases: Option<Phases>,
}

/// Where one dispatcher's time goes, per message, when rounds run one after another.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Phases {
    pub(crate) contacts: u64,
    pub(crate) rounds: u64,
    pub(crate) seconds: f64,
    /// Clock read, claim statement, claimed rows' read, policy checks, rendering: µs/msg.
    pub(crate) claim_us_per_msg: f64,
    /// `Channel::send_batch` (the HTTP requests, `concurrency` in flight): µs/msg.
    pub(crate) send_us_per_msg: f64,
    /// Clock read and the settle transaction: µs/msg.
    pub(crate) settle_us_per_msg: f64,
}

const TEMPLATE: &str = "{name}, the campus bundle is 18 yuan a month. Reply 1 to join.";

/// One SMS wave to the whole base: no segment, filter, exclusion, control, quiet hours or
/// frequency cap. `send_within` is a day, far beyond the run.
const WORKFLOW: &str = r#"
campaign: bench-dispatch
description: Every subscriber gets one SMS; measures the dispatcher.
owner: bench
timezone: Asia/Shanghai
audience: {}
waves:
  - id: sms_offer
    channel: sms
    template: templates/offer.txt
    respond_within: 1d
    send_within: 1d
    responses:
      - reply: "1"
"#;

pub(crate) fn write_workflow(dir: &Path) -> anyhow::Result<spec::Workflow> {
    std::fs::create_dir_all(dir.join("templates"))?;
    std::fs::write(dir.join("segments.yaml"), "segments: {}\n")?;
    std::fs::write(dir.join("templates/offer.txt"), TEMPLATE)?;
    let path = dir.join("bench-dispatch.yaml");
    std::fs::write(&path, WORKFLOW)?;
    spec::load_file(&path).map_err(|diags| {
        let lines: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
        anyhow::anyhow!("the bench workflow does not compile:\n{}", lines.join("\n"))
    })
}

/// Inserts `n` synthetic subscribers in chunks (so the bench's own memory stays small), with
/// opt-outs cleared so that the wave targets every one of them.
pub(crate) async fn insert_base(store: &Store, n: usize) -> anyhow::Result<()> {
    const CHUNK: usize = 10_000;
    let mut rows = subscribers::generate(&store.catalogue(), n, 20_261_124).map(|mut s| {
        s.opt_out = false;
        s
    });
    loop {
        let chunk: Vec<_> = rows.by_ref().take(CHUNK).collect();
        if chunk.is_empty() {
            break;
        }
        store
            .insert_subscribers(
                &chunk,
                store::subscribers::OnDuplicate::Fail,
                store::wall_now(),
            )
            .await?;
    }
    Ok(())
}

/// Runs the benchmark on one backend.
pub(crate) async fn run(
    backend: Backend,
    n: usize,
    settings: &Settings,
    pg_url: &str,
    gw: &Gateway,
) -> anyhow::Result<BackendResult> {
    let dir = tempfile::tempdir()?;
    let (store, schema) = fresh_store(backend, dir.path(), pg_url).await?;
    let result = run_on(backend, n, settings, &store, dir.path(), gw).await;
    store.close().await?;
    match schema {
        Some(schema) if settings.keep_db => {
            eprintln!("{}: kept schema {schema}", backend.name());
        }
        Some(schema) => drop_schema(pg_url, &schema).await?,
        None if settings.keep_db => {
            let kept = dir.keep().join("campaignd.db");
            eprintln!("{}: kept {}", backend.name(), kept.display());
        }
        None => {}
    }
    result
}

async fn run_on(
    backend: Backend,
    n: usize,
    settings: &Settings,
    store: &Store,
    dir: &Path,
    gw: &Gateway,
) -> anyhow::Result<BackendResult> {
    let started = Instant::now();
    insert_base(store, n).await?;
    let insert_seconds = started.elapsed().as_secs_f64();
    let rss_after_insert = proc::rss_mb().unwrap_or(f64::NAN);

    let wf = write_workflow(&dir.join("workflows"))?;
    // The gateway sends no delivery reports; the dlr-url shapes the requests.
    let kannel = KannelSms::with_password(
        &kannel_config(
            gw.sendsms_url(),
            format!("{}/callbacks/kannel/dlr", gw.base),
            settings.concurrency,
        ),
        crate::gateway::PASSWORD,
    )?;
    let timed = Arc::new(Timed::new(Arc::new(kannel)));
    let engine = build_engine(store, dir, settings, timed.clone())?;
    engine.load(vec![wf]).await?;

    // Plan through the engine: trigger a run, one housekeeping pass plans its wave.
    let plan_started = Instant::now();
    let wave_run_id = plan(&engine, n).await?;
    let plan_seconds = plan_started.elapsed().as_secs_f64();
    let tick_started = Instant::now();
    engine.tick().await?;
    let tick_ms_full_queue = tick_started.elapsed().as_secs_f64() * 1000.0;

    let rss_after_plan = proc::rss_mb().unwrap_or(f64::NAN);
    let peak_before_dispatch = proc::peak_rss_mb().unwrap_or(f64::NAN);

    // The measurement: the engine's dispatcher loops, from start to the last contact settled.
    gw.reset().await?;
    timed.reset();
    let reset_ok = proc::reset_peak_rss();
    let cpu0 = CpuMark::now(gw.pid);
    let cancel = CancellationToken::new();
    let t0 = Instant::now();
    let task = tokio::spawn(engine.clone().run(cancel.clone(), false));
    let limit = Duration::from_secs(600);
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if gw.counts().await?.distinct >= n as u64 {
            break;
        }
        if t0.elapsed() > limit || task.is_finished() {
            cancel.cancel();
            let counts = gw.counts().await?;
            bail!(
                "{}: dispatch did not reach {n} contacts within {limit:?} (gateway saw {counts:?})",
                backend.name()
            );
        }
    }
    let settle_deadline = Instant::now() + Duration::from_secs(30);
    while store.pending_in_wave(wave_run_id).await? > 0 {
        if Instant::now() > settle_deadline {
            cancel.cancel();
            bail!(
                "{}: the gateway has every contact but some stay pending/sending (retries?)",
                backend.name()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seconds = t0.elapsed().as_secs_f64();
    let cpu = CpuMark::now(gw.pid).since(&cpu0);
    let peak_rss_dispatch_mb = if reset_ok {
        proc::peak_rss_mb().unwrap_or(f64::NAN)
    } else {
        f64::NAN
    };
    let send = timed.snapshot();
    cancel.cancel();
    task.await??;
    eprintln!(
        "{}: RSS MB: {rss_after_insert:.1} after inserting the base, {rss_after_plan:.1} after planning (peak so far {peak_before_dispatch:.1}), peak while dispatching {peak_rss_dispatch_mb:.1}, {:.1} after",
        backend.name(),
        proc::rss_mb().unwrap_or(f64::NAN)
    );

    // Every contact arrived once, and the store says every one was sent.
    let counts = gw.counts().await?;
    ensure!(
        counts.requests == n as u64 && counts.distinct == n as u64 && counts.rejected == 0,
        "{}: the gateway saw {counts:?}, expected {n} requests with {n} distinct keys",
        backend.name()
    );
    let states = store.wave_counts(wave_run_id).await?;
    let sent = states.count(
        store::contacts::Arm::Treatment,
        &[store::contacts::ContactState::Sent],
    );
    ensure!(
        sent == n as u64,
        "{}: {sent} contacts are `sent`, expected {n}: {:?}",
        backend.name(),
        states.by_state
    );
    let peak_rss_mb = proc::lifetime_peak_rss_mb().unwrap_or(f64::NAN);

    let phases = if settings.phases {
        Some(phases(&engine, &timed, n).await?)
    } else {
        None
    };

    Ok(BackendResult {
        backend,
        contacts: n as u64,
        seconds,
        msg_per_sec: n as f64 / seconds,
        peak_rss_mb,
        peak_rss_dispatch_mb,
        insert_seconds,
        plan_seconds,
        tick_ms_full_queue,
        cpu,
        send_busy_pct: 100.0 * send.busy.as_secs_f64() / seconds,
        batches: send.batches,
        gateway_requests: counts.requests,
        gateway_distinct_keys: counts.distinct,
        phases,
    })
}

/// campaignd's Kannel channel as the daemon configures it (`[sms]`), for the bench's
/// `campaignd` sendsms user.
pub(crate) fn kannel_config(
    sendsms_url: String,
    dlr_url: String,
    concurrency: usize,
) -> KannelConfig {
    KannelConfig {
        sendsms_url,
        username: "campaignd".into(),
        // The password is handed over directly (`with_password`), not read from here.
        password_env: "CAMPAIGND_KANNEL_PASSWORD".into(),
        from: "10086".into(),
        dlr_url,
        dlr_mask: 27,
        concurrency,
        timeout_ms: 10_000,
        smsc: None,
        ack_grace_ms: 60_000,
        max_per_second: None,
    }
}

/// The engine with `sms` as its only channel and the bench's knobs.
pub(crate) fn build_engine(
    store: &Store,
    dir: &Path,
    settings: &Settings,
    sms: Arc<dyn Channel>,
) -> anyhow::Result<Arc<Engine>> {
    let mut chans: HashMap<String, Arc<dyn Channel>> = HashMap::new();
    chans.insert("sms".into(), sms);
    let mut cfg = EngineConfig::new("bench", dir.join("workflows/calendars"));
    cfg.batch_size = settings.batch_size;
    cfg.dispatchers_per_channel = settings.dispatchers;
    cfg.poll = Duration::from_millis(settings.poll_ms);
    Ok(Arc::new(Engine::new(
        store.clone(),
        Clock::Database,
        chans,
        cfg,
    )?))
}

/// Triggers a run and plans its wave with one housekeeping pass; returns the wave run.
pub(crate) async fn plan(engine: &Engine, n: usize) -> anyhow::Result<i64> {
    let run_id = engine.trigger("bench-dispatch", "bench").await?;
    let stats = engine.tick().await?;
    ensure!(
        stats.waves_planned == 1,
        "expected one wave planned: {stats:?}"
    );
    let waves = engine.store().wave_runs(run_id).await?;
    let wave_run_id = waves.first().context("the run has no wave")?.id;
    let pending = engine.store().pending_in_wave(wave_run_id).await?;
    ensure!(
        pending == n as u64,
        "the wave planned {pending} contacts, expected {n}"
    );
    Ok(wave_run_id)
}

/// One dispatcher, rounds one after another, each split into claim / send / settle.
async fn phases(engine: &Engine, timed: &Timed, n: usize) -> anyhow::Result<Phases> {
    let wave_run_id = plan(engine, n).await?;
    let (mut claim, mut send, mut settle) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut rounds = 0;
    let mut contacts = 0;
    let started = Instant::now();
    loop {
        let t0 = Instant::now();
        let stats = engine.dispatch_round("sms").await?;
        let t3 = Instant::now();
        if stats.claimed == 0 {
            break;
        }
        let (t1, t2) = timed.last().context("a round claimed but sent nothing")?;
        claim += t1 - t0;
        send += t2 - t1;
        settle += t3 - t2;
        rounds += 1;
        contacts += stats.sent;
    }
    let seconds = started.elapsed().as_secs_f64();
    ensure!(
        engine.store().pending_in_wave(wave_run_id).await? == 0,
        "the phase run left contacts pending"
    );
    let per = |d: Duration| d.as_secs_f64() * 1e6 / contacts.max(1) as f64;
    Ok(Phases {
        contacts,
        rounds,
        seconds,
        claim_us_per_msg: per(claim),
        send_us_per_msg: per(send),
        settle_us_per_msg: per(settle),
    })
}

/// Wraps the real channel to see when batches are being sent. Adds two mutex operations
/// per batch.
///
/// It forwards `send_each` and `proof_grace`, so the dispatcher settles each answer as it
/// comes, as it does with the real channel. Until session 16 it did not: every batch was
/// settled in one group at its end, and a message that failed was retried at once. Set
/// `BENCH_SEND_BATCH=1` for that old behaviour (to compare with earlier results).
pub(crate) struct Timed {
    inner: Arc<dyn Channel>,
    stats: Mutex<SendStats>,
    whole_batches: bool,
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SendStats {
    active: usize,
    busy_since: Option<Instant>,
    pub(crate) busy: Duration,
    pub(crate) batches: u64,
    /// Messages whose batch came back (accepted or not).
    pub(crate) messages: u64,
    last: Option<(Instant, Instant)>,
}

impl Timed {
    pub(crate) fn new(inner: Arc<dyn Channel>) -> Timed {
        Timed {
            inner,
            stats: Mutex::new(SendStats::default()),
            whole_batches: std::env::var_os("BENCH_SEND_BATCH").is_some_and(|v| v == "1"),
        }
    }

    pub(crate) fn reset(&self) {
        *self.stats.lock().expect("stats lock") = SendStats::default();
    }

    pub(crate) fn snapshot(&self) -> SendStats {
        *self.stats.lock().expect("stats lock")
    }

    fn last(&self) -> Option<(Instant, Instant)> {
        self.stats.lock().expect("stats lock").last
    }

    fn begin(&self) -> Instant {
        let start = Instant::now();
        let mut s = self.stats.lock().expect("stats lock");
        if s.active == 0 {
            s.busy_since = Some(start);
        }
        s.active += 1;
        start
    }

    fn end(&self, start: Instant, messages: usize) {
        let end = Instant::now();
        let mut s = self.stats.lock().expect("stats lock");
        s.active -= 1;
        if s.active == 0
            && let Some(since) = s.busy_since.take()
        {
            s.busy += end - since;
        }
        s.batches += 1;
        s.messages += messages as u64;
        s.last = Some((start, end));
    }
}

#[async_trait]
impl Channel for Timed {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn send_batch(&self, batch: &[Outbound]) -> Vec<Result<Accepted, SendError>> {
        let start = self.begin();
        let res = self.inner.send_batch(batch).await;
        self.end(start, batch.len());
        res
    }

    async fn send_each(&self, batch: &[Outbound], done: channels::ResultSink) {
        if self.whole_batches {
            for (idx, res) in self.send_batch(batch).await.into_iter().enumerate() {
                let _ = done.send((idx, res));
            }
            return;
        }
        let start = self.begin();
        self.inner.send_each(batch, done).await;
        self.end(start, batch.len());
    }

    fn proof_grace(&self) -> Duration {
        if self.whole_batches {
            Duration::ZERO
        } else {
            self.inner.proof_grace()
        }
    }

    async fn healthcheck(&self) -> Result<(), SendError> {
        self.inner.healthcheck().await
    }
}
