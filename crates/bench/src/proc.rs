//! Readings from Linux's /proc: peak RSS and CPU time.

use std::sync::atomic::{AtomicU64, Ordering};

/// Linux reports process CPU time in USER_HZ ticks, 100 per second on every mainstream
/// architecture.
const TICKS_PER_SEC: f64 = 100.0;

fn status_kb(pid: &str, field: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
}

/// The highest `VmHWM` seen before a reset, kB.
static PEAK_BEFORE_RESETS_KB: AtomicU64 = AtomicU64::new(0);

/// This process's peak resident set (`VmHWM`) since the last reset, MB.
pub fn peak_rss_mb() -> Option<f64> {
    let kb = status_kb("self", "VmHWM:")?;
    PEAK_BEFORE_RESETS_KB.fetch_max(kb as u64, Ordering::Relaxed);
    Some(kb / 1024.0)
}

/// This process's resident set now (`VmRSS`), MB.
pub fn rss_mb() -> Option<f64> {
    status_kb("self", "VmRSS:").map(|kb| kb / 1024.0)
}

/// This process's peak resident set over its whole life, resets included, MB.
pub fn lifetime_peak_rss_mb() -> Option<f64> {
    let now = status_kb("self", "VmHWM:")?;
    let before = PEAK_BEFORE_RESETS_KB.load(Ordering::Relaxed) as f64;
    Some(now.max(before) / 1024.0)
}

/// Resets `VmHWM` to the current RSS (`echo 5 > /proc/self/clear_refs`, Linux 4.0+), so a
/// phase's peak can be read on its own. False when the kernel refuses.
pub fn reset_peak_rss() -> bool {
    if let Some(kb) = status_kb("self", "VmHWM:") {
        PEAK_BEFORE_RESETS_KB.fetch_max(kb as u64, Ordering::Relaxed);
    }
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The 1-minute load average.
pub fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Share of all cores busy over `d` (sampled from /proc/stat), percent.
pub fn machine_busy_pct_over(d: std::time::Duration) -> Option<f64> {
    let (b0, t0) = machine_cpu_secs()?;
    std::thread::sleep(d);
    let (b1, t1) = machine_cpu_secs()?;
    (t1 > t0).then(|| 100.0 * (b1 - b0) / (t1 - t0))
}

/// (command name, user + system CPU seconds) from a `/proc/.../stat` file.
fn stat_cpu(path: &str) -> Option<(String, f64)> {
    let text = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) may hold spaces; fields after its closing parenthesis are
    // plain. utime and stime are fields 14 and 15, i.e. 12th and 13th after the name.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text.get(open + 1..close)?.to_owned();
    let fields: Vec<&str> = text.get(close + 2..)?.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((name, (utime + stime) / TICKS_PER_SEC))
}

/// User + system CPU seconds of a process, all threads.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    stat_cpu(&format!("/proc/{pid}/stat")).map(|(_, s)| s)
}

/// CPU seconds of this process's threads whose name starts with `prefix`.
fn threads_cpu_secs(prefix: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    dir.flatten()
        .filter_map(|e| stat_cpu(&format!("{}/stat", e.path().display())))
        .filter(|(name, _)| name.starts_with(prefix))
        .map(|(_, s)| s)
        .sum()
}

/// CPU seconds of every process named `postgres` on the machine (server and backends).
fn postgres_cpu_secs() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| stat_cpu(&format!("{}/stat", e.path().display())))
        .filter(|(name, _)| name == "postgres")
        .map(|(_, s)| s)
        .sum()
}

/// Machine-wide (busy, total) CPU seconds since boot, summed over all cores.
pub fn machine_cpu_secs() -> Option<(f64, f64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<f64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal [guest guest_nice: already in user]
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0.0);
    Some(((total - idle) / TICKS_PER_SEC, total / TICKS_PER_SEC))
}

/// CPU counters at one instant.
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    bench: f64,
    bench_tokio: f64,
    bench_sqlite: f64,
    gateway: f64,
    postgres: f64,
    machine_busy: f64,
    machine_total: f64,
}

/// CPU seconds spent over an interval, by who spent them.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct CpuUse {
    /// This process (the dispatcher, or the plain loop's client), all threads.
    pub bench_s: f64,
    /// ...of which its tokio workers: HTTP client, engine, row decoding, rendering.
    pub bench_tokio_s: f64,
    /// ...of which its SQLite worker threads (one per connection): SQL execution.
    pub bench_sqlite_s: f64,
    /// The gateway child (`--gateway kannel`: bearerbox, smsbox and fakesmsc together).
    pub gateway_s: f64,
    /// PostgreSQL's processes (all of them, whoever they serve).
    pub postgres_s: f64,
    /// Everything else on the machine (other users' work).
    pub other_s: f64,
    /// Share of all cores that were busy.
    pub machine_busy_pct: f64,
}

impl CpuMark {
    pub fn now(gateway_pid: u32) -> CpuMark {
        CpuMark::now_with_gateway(&[gateway_pid])
    }

    /// As [`CpuMark::now`], with a gateway made of several processes (Kannel's boxes).
    pub fn now_with_gateway(gateway_pids: &[u32]) -> CpuMark {
        let (machine_busy, machine_total) = machine_cpu_secs().unwrap_or((0.0, 0.0));
        CpuMark {
            bench: cpu_secs(std::process::id()).unwrap_or(0.0),
            bench_tokio: threads_cpu_secs("tokio-rt-worker"),
            bench_sqlite: threads_cpu_secs("sqlx-sqlite"),
            gateway: gateway_pids.iter().filter_map(|&pid| cpu_secs(pid)).sum(),
            postgres: postgres_cpu_secs(),
            machine_busy,
            machine_total,
        }
    }

    pub fn since(&self, start: &CpuMark) -> CpuUse {
        let bench_s = self.bench - start.bench;
        let gateway_s = self.gateway - start.gateway;
        let postgres_s = (self.postgres - start.postgres).max(0.0);
        let busy = self.machine_busy - start.machine_busy;
        let total = self.machine_total - start.machine_total;
        CpuUse {
            bench_s,
            bench_tokio_s: (self.bench_tokio - start.bench_tokio).max(0.0),
            bench_sqlite_s: (self.bench_sqlite - start.bench_sqlite).max(0.0),
            gateway_s,
            postgres_s,
            other_s: (busy - bench_s - gateway_s - postgres_s).max(0.0),
            machine_busy_pct: if total > 0.0 {
                100.0 * busy / total
            } else {
                0.0
            },
        }
    }
}
