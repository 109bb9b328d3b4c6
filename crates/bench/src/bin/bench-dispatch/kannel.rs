//! `--gateway kannel`: the real Kannel (bearerbox + smsbox + fakesmsc, `scripts/kannel.sh`)
//! on loopback, with delivery reports, instead of the stand-in gateway.
//!
//! One run, two phases, each on a fresh Kannel (its own temp dir, store, queues and ports):
//!
//! 1. **plain loop**: `plain::run` sends N `sendsms` GETs at the same concurrency as
//!    campaignd, each with a `dlr-url` (mask 27, as campaignd) pointing at a tiny loopback
//!    sink in this process; timed from the first request until every final (`type=1`) report
//!    has arrived. This is Kannel's own ceiling on this machine.
//! 2. **campaignd** (a child process per backend, so its peak RSS is its own): a fresh
//!    database, N subscribers, one SMS wave planned by the engine; the real engine with the
//!    real Kannel channel, and the real API serving `/callbacks/kannel/dlr` (signed dlr-urls,
//!    every report stored in `inbound`). Timed from the dispatcher's start until no contact
//!    is pending and every contact's final report is stored.
//!
//! Checked in each phase: fakesmsc received exactly N messages for N distinct receivers.

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use axum::extract::{RawQuery, State};
use axum::routing::get;
use channels::sms::KannelSms;
use sea_orm::ConnectionTrait as _;
use serde::{Deserialize, Serialize};
use store::Store;
use store::testing::RawDb as _;
use tokio_util::sync::CancellationToken;

use crate::campaign::{self, Backend, Settings, Timed};
use bench::proc::{self, CpuMark, CpuUse};
use bench::{drop_schema, fresh_store};

/// The target: campaignd at >= 0.9 of the plain loop through the real Kannel.
pub(crate) const TARGET_RATIO: f64 = 0.9;

const ADMIN_PASSWORD: &str = "bench-admin";
const STATUS_PASSWORD: &str = "bench-status";
/// A port picked free can be taken by someone else before Kannel binds it.
const START_ATTEMPTS: usize = 5;
/// How long a phase may take before the bench gives up on it.
const PHASE_LIMIT: Duration = Duration::from_secs(900);

fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/kannel.sh")
}

/// Ports nobody listens on right now, all different (the listeners are held together).
fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .map(|a| a.port())
        .collect())
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Serializes with the e2e tests' heavy tests (Kannel and friends), which take the same
/// lock: a bench beside them would measure them too, and they would time out beside it.
pub(crate) struct HeavyLock {
    _file: std::fs::File,
}

pub(crate) fn heavy_lock() -> anyhow::Result<HeavyLock> {
    let path = std::env::temp_dir().join("campaignd-e2e-heavy.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    if file.try_lock().is_err() {
        eprintln!(
            "waiting for {} (a heavy e2e test is running)...",
            path.display()
        );
        file.lock()
            .with_context(|| format!("locking {}", path.display()))?;
    }
    Ok(HeavyLock { _file: file })
}

/// One private Kannel; stopped (`scripts/kannel.sh stop`) when dropped, error or not.
pub(crate) struct KannelProcess {
    dir: tempfile::TempDir,
    ports: [u16; 4],
}

impl KannelProcess {
    /// Starts bearerbox, smsbox and fakesmsc on free loopback ports; the sendsms user is
    /// `campaignd` with the stand-in gateway's password.
    pub(crate) fn start() -> anyhow::Result<KannelProcess> {
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            let p = free_ports(4)?;
            let kannel = KannelProcess {
                dir: tempfile::Builder::new()
                    .prefix("campaignd-bench-kannel-")
                    .tempdir()?,
                ports: [p[0], p[1], p[2], p[3]],
            };
            let out = kannel.script(&["start"])?;
            if out.status.success() {
                return Ok(kannel);
            }
            last = describe(&out);
            if last.contains("missing dependency") {
                bail!("Kannel is required (scripts/install-deps.sh):\n{last}");
            }
            // Likely a port taken between the probe and the start: the drop stops what
            // started; the next attempt has other ports and another dir.
        }
        bail!("Kannel did not start in {START_ATTEMPTS} attempts; the last:\n{last}")
    }

    fn script(&self, args: &[&str]) -> anyhow::Result<Output> {
        let [admin, boxp, smsc, sendsms] = self.ports;
        Command::new("bash")
            .arg(script_path())
            .args(args)
            .env("KANNEL_DIR", self.dir.path())
            .env("KANNEL_ADMIN_PORT", admin.to_string())
            .env("KANNEL_BOX_PORT", boxp.to_string())
            .env("KANNEL_SMSC_PORT", smsc.to_string())
            .env("KANNEL_SENDSMS_PORT", sendsms.to_string())
            .env("KANNEL_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("KANNEL_STATUS_PASSWORD", STATUS_PASSWORD)
            .env("CAMPAIGND_KANNEL_PASSWORD", crate::gateway::PASSWORD)
            // No MO in this bench; the discard port, should one come.
            .env("CAMPAIGND_CALLBACK_URL", "http://127.0.0.1:9")
            .env("KANNEL_START_TIMEOUT", "60")
            .stdin(Stdio::null())
            .output()
            .context("running scripts/kannel.sh")
    }

    pub(crate) fn sendsms_url(&self) -> String {
        format!("http://127.0.0.1:{}/cgi-bin/sendsms", self.ports[3])
    }

    /// bearerbox, smsbox and fakesmsc, as each recorded its PID.
    pub(crate) fn pids(&self) -> anyhow::Result<[u32; 3]> {
        let pid = |name: &str| -> anyhow::Result<u32> {
            let path = self.dir.path().join("run").join(format!("{name}.pid"));
            Ok(std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?
                .trim()
                .parse()?)
        };
        Ok([pid("bearerbox")?, pid("smsbox")?, pid("fakesmsc")?])
    }

    /// The receiver of every MT fakesmsc logged (`Got message N: <from to type data>`).
    fn receivers(&self) -> Vec<String> {
        let log =
            std::fs::read_to_string(self.dir.path().join("logs/fakesmsc.log")).unwrap_or_default();
        log.lines()
            .filter_map(|l| {
                let rest = &l[l.find("DEBUG: Got message ")?..];
                let body = &rest[rest.find(": <")? + 3..];
                Some(body.split(' ').nth(1)?.to_owned())
            })
            .collect()
    }

    /// Waits (up to 60 s) for fakesmsc to have logged `n` messages, then counts them and
    /// their distinct receivers. Not timed: fakesmsc logs after bearerbox already reported.
    pub(crate) async fn smsc_counts(&self, n: usize) -> SmscCounts {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let receivers = self.receivers();
            if receivers.len() >= n || Instant::now() > deadline {
                let distinct = receivers.iter().collect::<HashSet<_>>().len();
                let smsbox = std::fs::read_to_string(self.dir.path().join("logs/smsbox.log"))
                    .unwrap_or_default();
                let errors: Vec<&str> = smsbox.lines().filter(|l| l.contains("ERROR")).collect();
                if let Some(first) = errors.first() {
                    eprintln!(
                        "smsbox.log: {} ERROR lines, the first: {first}",
                        errors.len()
                    );
                }
                return SmscCounts {
                    messages: receivers.len() as u64,
                    distinct_receivers: distinct as u64,
                    smsbox_errors: errors.len() as u64,
                };
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The last lines of a log, for an error report.
    fn tail(&self, file: &str, n: usize) -> String {
        let log =
            std::fs::read_to_string(self.dir.path().join("logs").join(file)).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for KannelProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for f in ["bearerbox.log", "smsbox.log"] {
                eprintln!("--- Kannel {f}, last lines ---\n{}", self.tail(f, 20));
            }
        }
        match self.script(&["stop"]) {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!("scripts/kannel.sh stop failed: {}", describe(&out)),
            Err(e) => eprintln!("scripts/kannel.sh stop failed: {e:#}"),
        }
    }
}

/// What fakesmsc (the operator's SMSC) received in one phase.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct SmscCounts {
    pub(crate) messages: u64,
    pub(crate) distinct_receivers: u64,
    /// ERROR lines in smsbox's log (a delivery-report callback that failed is one, and is
    /// retried `http-queue-delay` = 2 s later).
    pub(crate) smsbox_errors: u64,
}

/// CPU seconds of each Kannel process over a phase.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct KannelCpu {
    pub(crate) bearerbox_s: f64,
    pub(crate) smsbox_s: f64,
    pub(crate) fakesmsc_s: f64,
}

fn kannel_cpu_now(pids: &[u32; 3]) -> [f64; 3] {
    pids.map(|p| proc::cpu_secs(p).unwrap_or(0.0))
}

fn kannel_cpu_since(pids: &[u32; 3], start: [f64; 3]) -> KannelCpu {
    let now = kannel_cpu_now(pids);
    KannelCpu {
        bearerbox_s: now[0] - start[0],
        smsbox_s: now[1] - start[1],
        fakesmsc_s: now[2] - start[2],
    }
}

// --- the plain loop's delivery-report sink -----------------------------------------------

#[derive(Default)]
struct Sink {
    callbacks: AtomicU64,
    finals: Mutex<HashSet<String>>,
}

async fn sink_dlr(State(sink): State<Arc<Sink>>, RawQuery(q): RawQuery) -> &'static str {
    let q = q.unwrap_or_default();
    let (mut key, mut kind) = (None, None);
    for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
        match &*k {
            "key" => key = Some(v.into_owned()),
            "type" => kind = Some(v.into_owned()),
            _ => {}
        }
    }
    sink.callbacks.fetch_add(1, Ordering::Relaxed);
    if let (Some(key), Some("1")) = (key, kind.as_deref()) {
        sink.finals.lock().expect("sink lock").insert(key);
    }
    "ok"
}

/// Starts the sink on a loopback port with the API's listen backlog; returns its dlr URL.
async fn start_sink(
    sink: Arc<Sink>,
    stop: CancellationToken,
) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = api::bind(([127, 0, 0, 1], 0).into())?;
    let url = format!("http://{}/dlr", listener.local_addr()?);
    let app = axum::Router::new()
        .route("/dlr", get(sink_dlr))
        .with_state(sink);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
    });
    Ok((url, task))
}

// --- timeline ----------------------------------------------------------------------------

/// Samples `f` every 250 ms until `stop`; the rows are printed at the end of a phase.
fn sample_timeline<F>(
    stop: CancellationToken,
    f: F,
) -> tokio::task::JoinHandle<Vec<(f64, [u64; 3])>>
where
    F: Fn() -> [u64; 3] + Send + 'static,
{
    tokio::spawn(async move {
        let t0 = Instant::now();
        let mut rows = Vec::new();
        loop {
            rows.push((t0.elapsed().as_secs_f64(), f()));
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
        rows.push((t0.elapsed().as_secs_f64(), f()));
        rows
    })
}

fn print_timeline(phase: &str, names: [&str; 3], rows: &[(f64, [u64; 3])]) {
    eprintln!(
        "{phase} timeline (every 0.5 s): t | {} | {} | {}",
        names[0], names[1], names[2]
    );
    for (i, (t, v)) in rows.iter().enumerate() {
        if i % 2 == 0 || i + 1 == rows.len() {
            eprintln!("  {t:6.2} | {:6} | {:6} | {:6}", v[0], v[1], v[2]);
        }
    }
}

/// The inbox's callback counters over a phase (`api::callback_stats`).
fn print_callback_stats(phase: &str, s: &api::callback_stats::Snapshot) {
    let mean_us = s.wait_sum_us as f64 / s.answered.max(1) as f64;
    eprintln!(
        "{phase} callbacks: {} answered after a write ({} SMSC acknowledgements of contacts settled `sent` answered without one), wait mean {:.1} ms, p50 < {:.1} ms, p90 < {:.1} ms, p99 < {:.1} ms, max < {:.1} ms; at most {} waiting at once; {} groups, {:.1} callbacks a group, {:.2} ms a group",
        s.answered,
        s.acks_not_stored,
        mean_us / 1000.0,
        s.wait_quantile_us(0.5) as f64 / 1000.0,
        s.wait_quantile_us(0.9) as f64 / 1000.0,
        s.wait_quantile_us(0.99) as f64 / 1000.0,
        s.wait_quantile_us(1.0) as f64 / 1000.0,
        s.waiting_max,
        s.groups,
        s.answered as f64 / s.groups.max(1) as f64,
        s.group_us as f64 / 1000.0 / s.groups.max(1) as f64,
    );
}

// --- results ------------------------------------------------------------------------------

/// One phase's numbers, as printed and written to JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PhaseResult {
    /// `plain-loop`, `sqlite` or `postgres`.
    pub(crate) phase: String,
    pub(crate) contacts: u64,
    /// First request (dispatcher start) to the last final delivery report received/stored.
    pub(crate) seconds: f64,
    pub(crate) msg_per_sec: f64,
    /// First request to the last `sendsms` answered (plain loop) / last contact settled
    /// `sent` (campaignd).
    pub(crate) accepted_seconds: f64,
    /// Delivery-report callbacks received (plain loop) / `inbound` rows of source `dlr`
    /// stored (campaignd), all types.
    pub(crate) dlr_callbacks: u64,
    /// Distinct keys with a final `type=1` report.
    pub(crate) final_dlrs: u64,
    /// Reports (all types) and final reports in by `accepted_seconds`: what was left for the
    /// tail after the last message was handed to Kannel.
    pub(crate) dlrs_at_sent: u64,
    pub(crate) finals_at_sent: u64,
    /// CPU over the tail only (from `accepted_seconds` to the end).
    pub(crate) tail_cpu: CpuUse,
    /// campaignd: peak RSS of its process (insert, planning, dispatch, API), MB.
    pub(crate) peak_rss_mb: Option<f64>,
    /// campaignd: peak RSS with VmHWM reset just before the dispatcher started, MB.
    pub(crate) peak_rss_dispatch_mb: Option<f64>,
    /// campaignd: share of the time at least one batch was being sent.
    pub(crate) send_busy_pct: Option<f64>,
    pub(crate) batches: Option<u64>,
    /// CPU over the phase; `gateway_s` is Kannel's three processes, `bench_s` is the plain
    /// loop with its sink, or campaignd (engine, channel, API, database threads).
    pub(crate) cpu: CpuUse,
    pub(crate) kannel_cpu: KannelCpu,
    /// The 1-minute load average when the phase started.
    pub(crate) load_at_start: f64,
    /// Filled in by the parent from fakesmsc's log.
    pub(crate) smsc: SmscCounts,
}

#[derive(Debug, Serialize)]
struct Report {
    gateway: &'static str,
    contacts: u64,
    settings: Settings,
    cores: usize,
    load_before: f64,
    busy_before_pct: f64,
    plain_loop: PhaseResult,
    results: Vec<ResultLine>,
    target_ratio: f64,
}

#[derive(Debug, Serialize)]
struct ResultLine {
    #[serde(flatten)]
    result: PhaseResult,
    ratio_to_plain: f64,
}

// --- phases -------------------------------------------------------------------------------

async fn plain_phase(n: usize, concurrency: usize) -> anyhow::Result<PhaseResult> {
    let kannel = KannelProcess::start()?;
    let pids = kannel.pids()?;
    let sink = Arc::new(Sink::default());
    let stop = CancellationToken::new();
    let (dlr_url, sink_task) = start_sink(sink.clone(), stop.clone()).await?;
    let load_at_start = proc::loadavg().unwrap_or(f64::NAN);

    let cpu0 = CpuMark::now_with_gateway(&pids);
    let k0 = kannel_cpu_now(&pids);
    let stop_timeline = CancellationToken::new();
    let timeline = sample_timeline(stop_timeline.clone(), {
        let sink = sink.clone();
        move || {
            [
                sink.callbacks.load(Ordering::Relaxed),
                sink.finals.lock().expect("sink lock").len() as u64,
                0,
            ]
        }
    });
    let t0 = Instant::now();
    let p = crate::plain::run(&kannel.sendsms_url(), &dlr_url, n, concurrency).await?;
    let accepted_seconds = t0.elapsed().as_secs_f64();
    let cpu_at_sent = CpuMark::now_with_gateway(&pids);
    let dlrs_at_sent = sink.callbacks.load(Ordering::Relaxed);
    let finals_at_sent = sink.finals.lock().expect("sink lock").len() as u64;
    ensure!(
        p.errors == 0,
        "plain loop: {} sendsms requests were not accepted",
        p.errors
    );
    loop {
        if sink.finals.lock().expect("sink lock").len() >= n {
            break;
        }
        if t0.elapsed() > PHASE_LIMIT {
            bail!(
                "plain loop: {} of {n} final delivery reports within {PHASE_LIMIT:?}",
                sink.finals.lock().expect("sink lock").len()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seconds = t0.elapsed().as_secs_f64();
    let end = CpuMark::now_with_gateway(&pids);
    let (cpu, tail_cpu) = (end.since(&cpu0), end.since(&cpu_at_sent));
    let kannel_cpu = kannel_cpu_since(&pids, k0);
    stop_timeline.cancel();
    print_timeline(
        "plain loop",
        ["reports in", "finals in", "-"],
        &timeline.await?,
    );
    let smsc = kannel.smsc_counts(n).await;
    stop.cancel();
    let _ = sink_task.await;
    let final_dlrs = sink.finals.lock().expect("sink lock").len() as u64;
    Ok(PhaseResult {
        phase: "plain-loop".into(),
        contacts: n as u64,
        seconds,
        msg_per_sec: n as f64 / seconds,
        accepted_seconds,
        dlr_callbacks: sink.callbacks.load(Ordering::Relaxed),
        final_dlrs,
        dlrs_at_sent,
        finals_at_sent,
        tail_cpu,
        peak_rss_mb: None,
        peak_rss_dispatch_mb: None,
        send_busy_pct: None,
        batches: None,
        cpu,
        kannel_cpu,
        load_at_start,
        smsc,
    })
}

/// campaignd's phase in a child process of its own (its peak RSS is campaignd's alone).
async fn campaignd_phase(
    backend: Backend,
    args: &crate::Args,
    dir: &Path,
) -> anyhow::Result<PhaseResult> {
    let kannel = KannelProcess::start()?;
    let pids = kannel.pids()?;
    let out = dir.join(format!("{}.json", backend.name()));
    let mut cmd = crate::child_command(args, backend, &out)?;
    cmd.arg("--kannel-child")
        .arg("--sendsms-url")
        .arg(kannel.sendsms_url())
        .arg("--kannel-pids")
        .arg(pids.map(|p| p.to_string()).join(","));
    let status = cmd
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .context("running the campaignd child")?;
    if !status.success() {
        bail!("the {} run failed ({status})", backend.name());
    }
    let mut r: PhaseResult = serde_json::from_slice(&std::fs::read(&out)?)?;
    r.smsc = kannel.smsc_counts(args.contacts()).await;
    Ok(r)
}

/// The campaignd child's main: measure, write the result for the parent.
pub(crate) async fn child_main(backend: Backend, args: &crate::Args) -> anyhow::Result<()> {
    let (Some(sendsms_url), Some(pids), Some(out)) = (
        args.sendsms_url.clone(),
        args.kannel_pids.as_deref(),
        args.result_file.as_ref(),
    ) else {
        bail!("--kannel-child needs --sendsms-url, --kannel-pids and --result-file");
    };
    let pids: Vec<u32> = pids.split(',').map(str::parse).collect::<Result<_, _>>()?;
    let pids: [u32; 3] = pids
        .try_into()
        .map_err(|_| anyhow::anyhow!("--kannel-pids takes three PIDs"))?;
    let n = args.contacts();
    let settings = args.settings();
    let dir = tempfile::tempdir()?;
    let (store, schema) = fresh_store(backend, dir.path(), &args.pg_url).await?;
    let result = campaignd_run(
        backend,
        n,
        &settings,
        &store,
        dir.path(),
        &sendsms_url,
        pids,
    )
    .await
    .with_context(|| format!("benchmark on {}", backend.name()));
    store.close().await?;
    match schema {
        Some(schema) if settings.keep_db => eprintln!("{}: kept schema {schema}", backend.name()),
        Some(schema) => drop_schema(&args.pg_url, &schema).await?,
        None if settings.keep_db => {
            let kept = dir.keep().join("campaignd.db");
            eprintln!("{}: kept {}", backend.name(), kept.display());
        }
        None => {}
    }
    std::fs::write(out, serde_json::to_vec(&result?)?)?;
    Ok(())
}

async fn scalar(store: &Store, sql: &str) -> anyhow::Result<u64> {
    let db = store.db();
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            sql,
        ))
        .await?
        .context("a count returned no row")?;
    Ok(row.try_get::<i64>("", "n")?.max(0) as u64)
}

const FINAL_DLRS: &str =
    "SELECT COUNT(DISTINCT idem_key) AS n FROM inbound WHERE source = 'dlr' AND kind = '1'";
const ALL_DLRS: &str = "SELECT COUNT(*) AS n FROM inbound WHERE source = 'dlr'";

/// The campaignd phase's own progress checks, polled every 50 ms in campaignd's process and
/// on its database, so they must cost next to nothing: before, a count of the wave's
/// pending contacts and a `COUNT(DISTINCT idem_key)` over all final reports ran at every
/// poll, a scan each, and their CPU (about a third of PostgreSQL's in a phase's tail) was
/// charged to campaignd.
struct Progress {
    /// Keys of the final reports seen, and the highest `inbound.id` read.
    finals: HashSet<String>,
    last_id: i64,
    /// When the set last grew (or was recounted).
    grew: Instant,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            finals: HashSet::new(),
            last_id: 0,
            grew: Instant::now(),
        }
    }

    /// Whether the dispatch queue is empty: one row read at most. The caller confirms with
    /// the count of pending contacts once it is.
    async fn queue_empty(&self, store: &Store) -> anyhow::Result<bool> {
        Ok(scalar(
            store,
            "SELECT COUNT(*) AS n FROM (SELECT 1 AS one FROM dispatch LIMIT 1) q",
        )
        .await?
            == 0)
    }

    /// Distinct keys of the final reports stored: the rows added since the last poll, read by
    /// primary key. A row committed after one with a higher id (concurrent writers) would be
    /// missed by that, so when the count has not grown for a second, all are read again.
    async fn finals(&mut self, store: &Store) -> anyhow::Result<u64> {
        let recount = self.grew.elapsed() > Duration::from_secs(1);
        let from = if recount { 0 } else { self.last_id };
        let db = store.db();
        let rows = db
            .query_all_raw(store::stmt(
                db,
                "SELECT id, idem_key FROM inbound WHERE id > ? AND source = 'dlr' AND kind = '1'",
                [from.into()],
            ))
            .await?;
        let before = self.finals.len();
        for r in &rows {
            self.last_id = self.last_id.max(r.try_get::<i64>("", "id")?);
            if let Some(k) = r.try_get::<Option<String>>("", "idem_key")? {
                self.finals.insert(k);
            }
        }
        if recount || self.finals.len() > before {
            self.grew = Instant::now();
        }
        Ok(self.finals.len() as u64)
    }
}

async fn campaignd_run(
    backend: Backend,
    n: usize,
    settings: &Settings,
    store: &Store,
    dir: &Path,
    sendsms_url: &str,
    pids: [u32; 3],
) -> anyhow::Result<PhaseResult> {
    campaign::insert_base(store, n).await?;
    let wf = campaign::write_workflow(&dir.join("workflows"))?;

    // The API as the daemon serves it: delivery reports checked against the signing secret
    // and stored in `inbound`.
    let secret = store::auth::Secret::new(store::auth::random_hex(32).into_bytes())
        .map_err(|e| anyhow::anyhow!(e))?;
    let listener = api::bind(([127, 0, 0, 1], 0).into())?;
    let api_base = format!("http://{}", listener.local_addr()?);
    let stop_api = CancellationToken::new();
    let stop = stop_api.clone();
    let api_task = tokio::spawn(api::serve_with(
        listener,
        api::AppState {
            store: store.clone(),
        },
        api::ServeOptions {
            callbacks: api::auth::CallbackAuth {
                dlr_secret: Some(secret.clone()),
                ..Default::default()
            },
            ..api::ServeOptions::default()
        },
        async move { stop.cancelled().await },
    ));

    let kannel = KannelSms::with_password(
        &campaign::kannel_config(
            sendsms_url.to_owned(),
            format!("{api_base}/callbacks/kannel/dlr"),
            settings.concurrency,
        ),
        crate::gateway::PASSWORD,
    )?
    .with_dlr_secret(secret);
    let timed = Arc::new(Timed::new(Arc::new(kannel)));
    let engine = campaign::build_engine(store, dir, settings, timed.clone())?;
    engine.load(vec![wf]).await?;
    let wave_run_id = campaign::plan(&engine, n).await?;
    engine.tick().await?;

    // The measurement: dispatcher start to every contact sent and every final report stored.
    timed.reset();
    let reset_ok = proc::reset_peak_rss();
    let load_at_start = proc::loadavg().unwrap_or(f64::NAN);
    let cpu0 = CpuMark::now_with_gateway(&pids);
    let k0 = kannel_cpu_now(&pids);
    let cancel = CancellationToken::new();
    api::callback_stats::reset();
    let stop_timeline = CancellationToken::new();
    let timeline = sample_timeline(stop_timeline.clone(), {
        let timed = timed.clone();
        move || {
            let c = api::callback_stats::snapshot();
            [
                timed.snapshot().messages,
                c.answered + c.acks_not_stored,
                c.waiting,
            ]
        }
    });
    let t0 = Instant::now();
    let task = tokio::spawn(engine.clone().run(cancel.clone(), false));
    let mut accepted_seconds = None;
    let mut at_sent = (cpu0, 0, 0);
    let mut progress = Progress::new();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if accepted_seconds.is_none()
            && progress.queue_empty(store).await?
            && store.pending_in_wave(wave_run_id).await? == 0
        {
            accepted_seconds = Some(t0.elapsed().as_secs_f64());
            at_sent = (
                CpuMark::now_with_gateway(&pids),
                scalar(store, ALL_DLRS).await? + api::callback_stats::snapshot().acks_not_stored,
                progress.finals(store).await?,
            );
        }
        if accepted_seconds.is_some() && progress.finals(store).await? >= n as u64 {
            break;
        }
        if t0.elapsed() > PHASE_LIMIT || task.is_finished() {
            cancel.cancel();
            bail!(
                "{}: {} pending, {} final delivery reports stored, after {:?}",
                backend.name(),
                store.pending_in_wave(wave_run_id).await?,
                scalar(store, FINAL_DLRS).await?,
                t0.elapsed()
            );
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    let end = CpuMark::now_with_gateway(&pids);
    let (cpu, tail_cpu) = (end.since(&cpu0), end.since(&at_sent.0));
    let kannel_cpu = kannel_cpu_since(&pids, k0);
    let peak_rss_dispatch_mb = reset_ok.then(|| proc::peak_rss_mb().unwrap_or(f64::NAN));
    let send = timed.snapshot();
    stop_timeline.cancel();
    print_timeline(
        backend.name(),
        ["messages sent", "callbacks answered", "callbacks waiting"],
        &timeline.await?,
    );
    print_callback_stats(backend.name(), &api::callback_stats::snapshot());
    cancel.cancel();
    task.await??;

    let states = store.wave_counts(wave_run_id).await?;
    // `delivered` once the engine has applied the final report, `sent` until then.
    let sent = states.count(
        store::contacts::Arm::Treatment,
        &[
            store::contacts::ContactState::Sent,
            store::contacts::ContactState::Delivered,
        ],
    );
    ensure!(
        sent == n as u64,
        "{}: {sent} contacts are `sent` or `delivered`, expected {n}: {:?}",
        backend.name(),
        states.by_state
    );
    let final_dlrs = scalar(store, FINAL_DLRS).await?;
    // Reports stored, and acknowledgements answered without a write: every callback.
    let dlr_callbacks =
        scalar(store, ALL_DLRS).await? + api::callback_stats::snapshot().acks_not_stored;
    stop_api.cancel();
    api_task.await??;
    Ok(PhaseResult {
        phase: backend.name().into(),
        contacts: n as u64,
        seconds,
        msg_per_sec: n as f64 / seconds,
        accepted_seconds: accepted_seconds.unwrap_or(seconds),
        dlr_callbacks,
        final_dlrs,
        dlrs_at_sent: at_sent.1,
        finals_at_sent: at_sent.2,
        tail_cpu,
        peak_rss_mb: proc::lifetime_peak_rss_mb(),
        peak_rss_dispatch_mb,
        send_busy_pct: Some(100.0 * send.busy.as_secs_f64() / seconds),
        batches: Some(send.batches),
        cpu,
        kannel_cpu,
        load_at_start,
        smsc: SmscCounts::default(),
    })
}

fn check_smsc(r: &PhaseResult) -> anyhow::Result<()> {
    ensure!(
        r.smsc.messages == r.contacts && r.smsc.distinct_receivers == r.contacts,
        "{}: fakesmsc received {} messages for {} distinct receivers, expected {} and {}",
        r.phase,
        r.smsc.messages,
        r.smsc.distinct_receivers,
        r.contacts,
        r.contacts
    );
    ensure!(
        r.final_dlrs == r.contacts,
        "{}: {} final delivery reports, expected {}",
        r.phase,
        r.final_dlrs,
        r.contacts
    );
    Ok(())
}

/// The parent: plain loop, then campaignd per backend, each on a fresh Kannel.
pub(crate) async fn bench(args: crate::Args) -> anyhow::Result<()> {
    let n = args.contacts();
    ensure!(n > 0, "--contacts must be at least 1");
    let settings = args.settings();
    let _heavy = heavy_lock()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load_before = proc::loadavg().unwrap_or(f64::NAN);
    let busy_before_pct = proc::machine_busy_pct_over(Duration::from_secs(1)).unwrap_or(f64::NAN);
    if busy_before_pct > 10.0 {
        eprintln!(
            "warning: the machine was {busy_before_pct:.0}% busy before the bench started (load {load_before:.2}); numbers will be low"
        );
    }
    eprintln!(
        "bench-dispatch --gateway kannel: {n} SMS, {cores} cores; batch_size={} concurrency={} dispatchers_per_channel={} poll_ms={}",
        settings.batch_size, settings.concurrency, settings.dispatchers, settings.poll_ms
    );

    let plain = plain_phase(n, settings.concurrency).await?;
    eprintln!(
        "plain loop: {:.0} msg/s ({:.2} s; all accepted after {:.2} s)",
        plain.msg_per_sec, plain.seconds, plain.accepted_seconds
    );
    check_smsc(&plain)?;

    let backends: &[Backend] = match args.backend {
        crate::Which::Sqlite => &[Backend::Sqlite],
        crate::Which::Postgres => &[Backend::Postgres],
        crate::Which::Both => &[Backend::Sqlite, Backend::Postgres],
    };
    let dir = tempfile::tempdir()?;
    let mut results = Vec::new();
    for &b in backends {
        eprintln!(
            "{}: inserting {n} subscribers, planning, sending...",
            b.name()
        );
        let r = campaignd_phase(b, &args, dir.path()).await?;
        eprintln!(
            "{}: {:.0} msg/s ({:.2} s; all sent after {:.2} s)",
            b.name(),
            r.msg_per_sec,
            r.seconds,
            r.accepted_seconds
        );
        check_smsc(&r)?;
        results.push(ResultLine {
            ratio_to_plain: r.msg_per_sec / plain.msg_per_sec,
            result: r,
        });
    }

    let report = Report {
        gateway: "kannel",
        contacts: n as u64,
        settings,
        cores,
        load_before,
        busy_before_pct,
        plain_loop: plain,
        results,
        target_ratio: TARGET_RATIO,
    };
    print_report(&report);
    crate::write_json(&args.json_path(), &report)
}

fn print_report(r: &Report) {
    let s = &r.settings;
    println!();
    println!(
        "settings: real Kannel 1.4.5 (bearerbox + smsbox + fakesmsc), dlr-mask 27; batch_size={} concurrency={} dispatchers_per_channel={} poll_ms={} ({} cores)",
        s.batch_size, s.concurrency, s.dispatchers, s.poll_ms, r.cores
    );
    println!(
        "machine before start: load {:.2}, {:.0}% busy",
        r.load_before, r.busy_before_pct
    );
    println!();
    println!(
        "{:<10} {:>8} {:>8} {:>8} {:>6} {:>9} {:>8} {:>8} {:>9} {:>9} {:>6}",
        "phase",
        "SMS",
        "seconds",
        "msg/s",
        "ratio",
        "sent at s",
        "RSS MB",
        "disp MB",
        "SMSC rcv",
        "final DLR",
        "load"
    );
    let mb = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
    let line = |x: &PhaseResult, ratio: f64| {
        println!(
            "{:<10} {:>8} {:>8.2} {:>8.0} {:>6.2} {:>9.2} {:>8} {:>8} {:>9} {:>9} {:>6.2}",
            x.phase,
            x.contacts,
            x.seconds,
            x.msg_per_sec,
            ratio,
            x.accepted_seconds,
            mb(x.peak_rss_mb),
            mb(x.peak_rss_dispatch_mb),
            x.smsc.distinct_receivers,
            x.final_dlrs,
            x.load_at_start
        );
    };
    line(&r.plain_loop, 1.0);
    for l in &r.results {
        line(&l.result, l.ratio_to_plain);
    }
    println!();
    println!(
        "seconds: first request to the last final (type 1) delivery report received (plain loop) or stored in `inbound` (campaignd); sent at: the last sendsms answered / contact `sent`"
    );
    println!(
        "RSS MB: campaignd process peak (insert, plan, dispatch, API); disp MB: VmHWM reset at the dispatcher's start"
    );
    println!(
        "CPU seconds: bench process (tokio + SQLite threads) / Kannel: bearerbox + smsbox + fakesmsc / PostgreSQL / rest; cores busy"
    );
    let cpu_line = |x: &PhaseResult| {
        let c = &x.cpu;
        let k = &x.kannel_cpu;
        println!(
            "  {:<10} {:>5.2} ({:.2} + {:.2}) / {:>5.2} = {:.2} + {:.2} + {:.2} / {:>5.2} / {:>5.2}  {:>3.0}%   DLR callbacks {}, smsbox ERROR lines {}{}",
            x.phase,
            c.bench_s,
            c.bench_tokio_s,
            c.bench_sqlite_s,
            c.gateway_s,
            k.bearerbox_s,
            k.smsbox_s,
            k.fakesmsc_s,
            c.postgres_s,
            c.other_s,
            c.machine_busy_pct,
            x.dlr_callbacks,
            x.smsc.smsbox_errors,
            match (x.send_busy_pct, x.batches) {
                (Some(p), Some(b)) => format!("; sending {p:.0}% of the time, {b} batches"),
                _ => String::new(),
            }
        );
    };
    cpu_line(&r.plain_loop);
    for l in &r.results {
        cpu_line(&l.result);
    }
    println!(
        "the tail (last message sent/accepted to the last final report): reports in by then (all / final), tail seconds, CPU: bench / Kannel / PostgreSQL / rest"
    );
    let tail_line = |x: &PhaseResult| {
        let c = &x.tail_cpu;
        println!(
            "  {:<10} {} / {} in; tail {:.2} s; CPU {:.2} ({:.2} + {:.2}) / {:.2} / {:.2} / {:.2}",
            x.phase,
            x.dlrs_at_sent,
            x.finals_at_sent,
            x.seconds - x.accepted_seconds,
            c.bench_s,
            c.bench_tokio_s,
            c.bench_sqlite_s,
            c.gateway_s,
            c.postgres_s,
            c.other_s
        );
    };
    tail_line(&r.plain_loop);
    for l in &r.results {
        tail_line(&l.result);
    }
    println!();
    for l in &r.results {
        println!(
            "target, {}: ratio {:.2} {} {TARGET_RATIO} ({})",
            l.result.phase,
            l.ratio_to_plain,
            if l.ratio_to_plain >= TARGET_RATIO {
                ">="
            } else {
                "<"
            },
            if l.ratio_to_plain >= TARGET_RATIO {
                "met"
            } else {
                "MISSED"
            }
        );
    }
}
