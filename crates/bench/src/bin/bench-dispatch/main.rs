//! `bench-dispatch`: how fast campaignd's dispatcher sends one SMS wave to an unlimited
//! loopback gateway, on SQLite and PostgreSQL, next to a plain HTTP loop driving the same
//! gateway. With `--gateway kannel`, the real Kannel instead, with delivery reports
//! (`kannel.rs`). See `crates/bench/README.md`.
//!
//! Processes: the parent starts the gateway (a child process), runs the plain loop, then runs
//! each backend in a child process of its own, so that each backend's peak RSS is its own
//! (nothing left over from the other backend or from the plain loop) and the gateway's
//! memory and CPU are never counted as the dispatcher's. All are this binary, re-executed
//! with a hidden flag.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, bail};
use clap::Parser;
use serde::Serialize;

mod campaign;
mod gateway;
mod kannel;
mod plain;
use bench::proc;

use campaign::{Backend, BackendResult, Settings};

// The same allocator as the daemon (crates/campaignd), for the plain loop, the gateway and
// every backend alike, so the ratios compare like with like.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Targets from the issue.
const TARGET_SQLITE_MSG_S: f64 = 30_000.0;
const TARGET_RATIO: f64 = 0.5;
const TARGET_RSS_MB: f64 = 200.0;

#[derive(Debug, Parser)]
#[command(
    name = "bench-dispatch",
    about = "Dispatch throughput of campaignd to a loopback sendsms gateway, vs a plain HTTP loop"
)]
struct Args {
    /// Subscribers in the base; the wave contacts every one of them. Default: 200,000 with
    /// the stand-in gateway, 20,000 with `--gateway kannel`.
    #[arg(long)]
    contacts: Option<usize>,
    /// What campaignd and the plain loop send to: the loopback stand-in (answers at once,
    /// no delivery reports) or the real Kannel (scripts/kannel.sh, fakesmsc as the SMSC,
    /// delivery reports back through campaignd's callback route).
    #[arg(long, value_enum, default_value_t = GatewayKind::StandIn)]
    gateway: GatewayKind,
    /// Which store to measure.
    #[arg(long, value_enum, default_value_t = Which::Both)]
    backend: Which,
    /// PostgreSQL database; the bench creates a schema of its own there and drops it after.
    #[arg(
        long,
        env = "CAMPAIGND_TEST_PG_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    pg_url: String,
    /// Contacts claimed per dispatcher round (`engine.batch_size`).
    #[arg(long, default_value_t = 1000)]
    batch_size: u64,
    /// Requests in flight (`sms.concurrency`); the plain loop uses the same.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// Dispatcher loops per channel (`EngineConfig::dispatchers_per_channel`).
    #[arg(long, default_value_t = 3)]
    dispatchers: usize,
    /// Idle dispatcher sleep and housekeeping interval, ms (`engine.poll_ms`).
    #[arg(long, default_value_t = 250)]
    poll_ms: u64,
    /// Worker threads of the gateway child's runtime.
    #[arg(long, default_value_t = 2)]
    gateway_threads: usize,
    /// Afterwards, send the wave again with one dispatcher, timing claim / send / settle.
    #[arg(long)]
    phases: bool,
    /// Leave each database behind (the SQLite file, the PostgreSQL schema) for inspection.
    #[arg(long)]
    keep_db: bool,
    /// Where to write the results as JSON [target/bench-dispatch.json, with `--gateway
    /// kannel` target/bench-dispatch-kannel.json].
    #[arg(long)]
    json: Option<PathBuf>,
    /// Internal: run as the gateway child, writing the port to this file.
    #[arg(long, hide = true)]
    gateway_child: Option<PathBuf>,
    /// Internal: run one backend's measurement against the gateway at `--gateway-base`.
    #[arg(long, hide = true, value_enum)]
    backend_child: Option<Backend>,
    #[arg(long, hide = true)]
    gateway_base: Option<String>,
    #[arg(long, hide = true)]
    gateway_pid: Option<u32>,
    /// Internal: where a backend child writes its result.
    #[arg(long, hide = true)]
    result_file: Option<PathBuf>,
    /// Internal: the backend child sends through the real Kannel at `--sendsms-url`.
    #[arg(long, hide = true)]
    kannel_child: bool,
    #[arg(long, hide = true)]
    sendsms_url: Option<String>,
    /// Internal: bearerbox, smsbox and fakesmsc PIDs, comma-separated (for their CPU time).
    #[arg(long, hide = true)]
    kannel_pids: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum GatewayKind {
    StandIn,
    Kannel,
}

impl Args {
    fn contacts(&self) -> usize {
        self.contacts.unwrap_or(match self.gateway {
            GatewayKind::StandIn => 200_000,
            GatewayKind::Kannel => 20_000,
        })
    }

    fn json_path(&self) -> PathBuf {
        self.json.clone().unwrap_or_else(|| {
            let name = match self.gateway {
                GatewayKind::StandIn => "bench-dispatch.json",
                GatewayKind::Kannel => "bench-dispatch-kannel.json",
            };
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../target")
                .join(name)
        })
    }

    fn settings(&self) -> Settings {
        Settings {
            batch_size: self.batch_size,
            concurrency: self.concurrency,
            dispatchers: self.dispatchers,
            poll_ms: self.poll_ms,
            gateway_threads: self.gateway_threads,
            phases: self.phases,
            keep_db: self.keep_db,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Which {
    Sqlite,
    Postgres,
    Both,
}

#[derive(Debug, Serialize)]
struct PlainLine {
    contacts: u64,
    seconds: f64,
    msg_per_sec: f64,
    errors: u64,
    cpu: proc::CpuUse,
}

#[derive(Debug, Serialize)]
struct Report {
    contacts: u64,
    settings: Settings,
    cores: usize,
    /// 1-minute load average and share of the cores busy (1 s sample) just before the
    /// bench started: other work on the machine skews every number.
    load_before: f64,
    busy_before_pct: f64,
    plain_loop: PlainLine,
    results: Vec<ResultLine>,
    gateway_peak_rss_mb: f64,
    targets: Targets,
}

#[derive(Debug, Serialize)]
struct ResultLine {
    #[serde(flatten)]
    result: BackendResult,
    ratio_to_plain: f64,
}

#[derive(Debug, Serialize)]
struct Targets {
    sqlite_msg_per_sec: f64,
    ratio_to_plain: f64,
    peak_rss_mb: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(portfile) = &args.gateway_child {
        return gateway::child_main(portfile, args.gateway_threads);
    }
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a rustls crypto provider was already installed"))?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CAMPAIGND_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.backend_child {
        Some(backend) if args.kannel_child => rt.block_on(kannel::child_main(backend, &args)),
        Some(backend) => rt.block_on(backend_child(backend, &args)),
        None if args.gateway == GatewayKind::Kannel => rt.block_on(kannel::bench(args)),
        None => rt.block_on(bench(args)),
    }
}

/// A backend child: measure, write the result for the parent.
async fn backend_child(backend: Backend, args: &Args) -> anyhow::Result<()> {
    let (Some(base), Some(pid), Some(out)) = (
        args.gateway_base.clone(),
        args.gateway_pid,
        args.result_file.as_ref(),
    ) else {
        bail!("--backend-child needs --gateway-base, --gateway-pid and --result-file");
    };
    let gw = gateway::Gateway::new(base, pid)?;
    let result = campaign::run(
        backend,
        args.contacts(),
        &args.settings(),
        &args.pg_url,
        &gw,
    )
    .await
    .with_context(|| format!("benchmark on {}", backend.name()))?;
    std::fs::write(out, serde_json::to_vec(&result)?)?;
    Ok(())
}

/// Runs one backend in a child process and reads its result.
async fn run_backend_child(
    backend: Backend,
    args: &Args,
    gw: &gateway::Gateway,
    dir: &Path,
) -> anyhow::Result<BackendResult> {
    let out = dir.join(format!("{}.json", backend.name()));
    let mut cmd = child_command(args, backend, &out)?;
    cmd.arg("--gateway-base")
        .arg(&gw.base)
        .arg("--gateway-pid")
        .arg(gw.pid.to_string());
    let status = cmd
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .context("running the backend child")?;
    if !status.success() {
        bail!("the {} run failed ({status})", backend.name());
    }
    Ok(serde_json::from_slice(&std::fs::read(&out)?)?)
}

/// This binary re-executed as a backend child, with the settings of this run.
fn child_command(
    args: &Args,
    backend: Backend,
    result_file: &Path,
) -> anyhow::Result<tokio::process::Command> {
    let exe = std::env::current_exe().context("locating this binary")?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("--backend-child")
        .arg(backend.name())
        .arg("--result-file")
        .arg(result_file)
        .arg("--contacts")
        .arg(args.contacts().to_string())
        .arg("--pg-url")
        .arg(&args.pg_url)
        .arg("--batch-size")
        .arg(args.batch_size.to_string())
        .arg("--concurrency")
        .arg(args.concurrency.to_string())
        .arg("--dispatchers")
        .arg(args.dispatchers.to_string())
        .arg("--poll-ms")
        .arg(args.poll_ms.to_string())
        .arg("--gateway-threads")
        .arg(args.gateway_threads.to_string());
    for (on, flag) in [(args.phases, "--phases"), (args.keep_db, "--keep-db")] {
        if on {
            cmd.arg(flag);
        }
    }
    Ok(cmd)
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let n = args.contacts();
    anyhow::ensure!(n > 0, "--contacts must be at least 1");
    let settings = args.settings();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load_before = proc::loadavg().unwrap_or(f64::NAN);
    let busy_before_pct =
        proc::machine_busy_pct_over(std::time::Duration::from_secs(1)).unwrap_or(f64::NAN);
    if busy_before_pct > 10.0 {
        eprintln!(
            "warning: the machine was {busy_before_pct:.0}% busy before the bench started (load {load_before:.2}); numbers will be low"
        );
    }
    eprintln!(
        "bench-dispatch: {n} contacts, {cores} cores; batch_size={} concurrency={} dispatchers_per_channel={} poll_ms={}",
        settings.batch_size, settings.concurrency, settings.dispatchers, settings.poll_ms
    );
    let gw_process = gateway::GatewayProcess::start(args.gateway_threads).await?;
    let gw = gw_process.gateway.clone();
    eprintln!("gateway child pid {} at {}", gw.pid, gw.base);

    // The limit first: the same gateway, a plain loop, the same concurrency.
    let cpu0 = proc::CpuMark::now(gw.pid);
    let dlr = format!("{}/callbacks/kannel/dlr", gw.base);
    let p = plain::run(&gw.sendsms_url(), &dlr, n, settings.concurrency).await?;
    let plain_cpu = proc::CpuMark::now(gw.pid).since(&cpu0);
    let counts = gw.counts().await?;
    anyhow::ensure!(
        p.errors == 0 && counts.requests == n as u64 && counts.distinct == n as u64,
        "plain loop: {} errors, gateway saw {counts:?}",
        p.errors
    );
    let plain = PlainLine {
        contacts: n as u64,
        seconds: p.secs,
        msg_per_sec: n as f64 / p.secs,
        errors: p.errors,
        cpu: plain_cpu,
    };
    eprintln!(
        "plain loop: {:.0} msg/s ({:.2} s)",
        plain.msg_per_sec, plain.seconds
    );

    let backends: &[Backend] = match args.backend {
        Which::Sqlite => &[Backend::Sqlite],
        Which::Postgres => &[Backend::Postgres],
        Which::Both => &[Backend::Sqlite, Backend::Postgres],
    };
    let dir = tempfile::tempdir()?;
    let mut results = Vec::new();
    for &b in backends {
        eprintln!(
            "{}: inserting {n} subscribers, planning, dispatching...",
            b.name()
        );
        let r = run_backend_child(b, &args, &gw, dir.path()).await?;
        eprintln!(
            "{}: {:.0} msg/s ({:.2} s); insert {:.1} s, plan {:.1} s, housekeeping pass with the wave pending {:.0} ms",
            b.name(),
            r.msg_per_sec,
            r.seconds,
            r.insert_seconds,
            r.plan_seconds,
            r.tick_ms_full_queue
        );
        results.push(ResultLine {
            ratio_to_plain: r.msg_per_sec / plain.msg_per_sec,
            result: r,
        });
    }
    let gateway_peak_rss_mb = gw.counts().await?.peak_rss_mb;
    drop(gw_process);

    let report = Report {
        contacts: n as u64,
        settings,
        cores,
        load_before,
        busy_before_pct,
        plain_loop: plain,
        results,
        gateway_peak_rss_mb,
        targets: Targets {
            sqlite_msg_per_sec: TARGET_SQLITE_MSG_S,
            ratio_to_plain: TARGET_RATIO,
            peak_rss_mb: TARGET_RSS_MB,
        },
    };
    print_report(&report);
    write_json(&args.json_path(), &report)
}

/// Writes a report as pretty JSON (creating its folder) and says where.
pub(crate) fn write_json(json: &Path, report: &impl Serialize) -> anyhow::Result<()> {
    if let Some(parent) = json.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(json, serde_json::to_string_pretty(report)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    let shown = std::fs::canonicalize(json).unwrap_or_else(|_| json.to_owned());
    println!("JSON: {}", shown.display());
    Ok(())
}

fn print_report(r: &Report) {
    let s = &r.settings;
    println!();
    println!(
        "settings: batch_size={} concurrency={} dispatchers_per_channel={} poll_ms={} ({} cores; gateway: child process, {} threads)",
        s.batch_size, s.concurrency, s.dispatchers, s.poll_ms, r.cores, s.gateway_threads
    );
    println!(
        "machine before start: load {:.2}, {:.0}% busy",
        r.load_before, r.busy_before_pct
    );
    println!();
    println!(
        "{:<10} {:>9} {:>8} {:>9} {:>6} {:>12} {:>12}",
        "backend", "contacts", "seconds", "msg/s", "ratio", "peak RSS MB", "dispatch MB"
    );
    let p = &r.plain_loop;
    println!(
        "{:<10} {:>9} {:>8.2} {:>9.0} {:>6.2} {:>12} {:>12}",
        "plain-loop", p.contacts, p.seconds, p.msg_per_sec, 1.0, "-", "-"
    );
    for l in &r.results {
        let x = &l.result;
        println!(
            "{:<10} {:>9} {:>8.2} {:>9.0} {:>6.2} {:>12.1} {:>12.1}",
            x.backend.name(),
            x.contacts,
            x.seconds,
            x.msg_per_sec,
            l.ratio_to_plain,
            x.peak_rss_mb,
            x.peak_rss_dispatch_mb
        );
    }
    println!();
    println!(
        "peak RSS MB = VmHWM of the process that ran the backend (base insert, planning, dispatch); dispatch MB = VmHWM reset just before the dispatcher started; gateway child: {:.1} MB",
        r.gateway_peak_rss_mb
    );
    println!(
        "CPU seconds during each measurement: bench process (tokio workers + SQLite threads) / gateway child / PostgreSQL / rest of machine, cores busy"
    );
    let cpu_line = |name: &str, c: &proc::CpuUse| {
        format!(
            "  {name:<10}  {:>5.2} ({:.2} + {:.2}) / {:>5.2} / {:>5.2} / {:>5.2}  {:>3.0}%",
            c.bench_s,
            c.bench_tokio_s,
            c.bench_sqlite_s,
            c.gateway_s,
            c.postgres_s,
            c.other_s,
            c.machine_busy_pct
        )
    };
    println!("{}", cpu_line("plain-loop", &p.cpu));
    for l in &r.results {
        let x = &l.result;
        println!(
            "{}   µs CPU/msg: campaignd {:.1}, DB {:.1}; sending {:.0}% of the time, {} batches",
            cpu_line(x.backend.name(), &x.cpu),
            x.cpu.bench_tokio_s * 1e6 / x.contacts as f64,
            (x.cpu.bench_sqlite_s + x.cpu.postgres_s) * 1e6 / x.contacts as f64,
            x.send_busy_pct,
            x.batches
        );
    }
    for l in &r.results {
        if let Some(ph) = &l.result.phases {
            println!(
                "phases, {} (1 dispatcher, {} rounds, {:.0} msg/s): claim {:.1} µs/msg, send {:.1} µs/msg, settle {:.1} µs/msg",
                l.result.backend.name(),
                ph.rounds,
                ph.contacts as f64 / ph.seconds,
                ph.claim_us_per_msg,
                ph.send_us_per_msg,
                ph.settle_us_per_msg
            );
        }
    }
    println!();
    for l in &r.results {
        let x = &l.result;
        let mut checks = vec![
            verdict("ratio", l.ratio_to_plain >= TARGET_RATIO),
            verdict("RSS", x.peak_rss_mb <= TARGET_RSS_MB),
        ];
        if x.backend == Backend::Sqlite {
            checks.insert(0, verdict("msg/s", x.msg_per_sec >= TARGET_SQLITE_MSG_S));
        }
        println!("targets, {}: {}", x.backend.name(), checks.join(", "));
    }
}

fn verdict(what: &str, ok: bool) -> String {
    format!("{what} {}", if ok { "met" } else { "MISSED" })
}
