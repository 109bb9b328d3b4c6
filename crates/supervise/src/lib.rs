//! Background loops that survive panics.
//!
//! [`Supervisor::run`] runs a loop; when the loop panics, the panic is caught, logged, counted
//! and the loop restarted after a backoff (everything a loop needs is in the database, so a
//! fresh start loses nothing). Each loop beats a [`Heartbeat`] once per iteration, which is what
//! liveness reads: a process whose loops still turn is alive even while the database is down.
//! [`Supervisor::report`] is what the health routes show.

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

/// Longest panic message kept; the rest is cut (the message is served by `/readyz`).
const MAX_MESSAGE: usize = 300;

/// Restart delays: `first`, doubling per consecutive panic, at most `max`. A loop that ran
/// longer than `max` before panicking starts again from `first`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: Duration::from_millis(100),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The delay before restart number `consecutive` (1-based) of an unbroken series.
    pub fn delay(&self, consecutive: u32) -> Duration {
        let factor = 1u32
            .checked_shl(consecutive.saturating_sub(1).min(31))
            .unwrap_or(u32::MAX);
        self.first.saturating_mul(factor).min(self.max)
    }
}

/// One loop's record. Beats are atomics because dispatcher loops beat on every round.
#[derive(Debug)]
struct Task {
    last_beat_ms: AtomicU64,
    beats: AtomicU64,
    running: AtomicBool,
    stopped: AtomicBool,
    restarts: AtomicU64,
    last_panic: Mutex<Option<(String, u64)>>,
}

/// Marks one iteration of a loop; cheap to clone and to call.
#[derive(Clone, Debug)]
pub struct Heartbeat {
    task: Arc<Task>,
    origin: Instant,
}

impl Heartbeat {
    pub fn beat(&self) {
        self.task
            .last_beat_ms
            .store(elapsed_ms(self.origin), Ordering::Relaxed);
        self.task.beats.fetch_add(1, Ordering::Relaxed);
    }
}

/// What health shows of one loop.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TaskReport {
    pub name: String,
    /// Running (or waiting to restart), as opposed to finished after a stop was asked for.
    pub running: bool,
    /// Iterations begun since the process started.
    pub beats: u64,
    /// Milliseconds since the last iteration began.
    pub since_beat_ms: u64,
    /// Restarts after a panic since the process started.
    pub restarts: u64,
    /// The last panic's message (numbers masked, cut to a few hundred characters).
    pub last_panic: Option<String>,
    /// When the last panic happened, Unix milliseconds.
    pub last_panic_at: Option<u64>,
}

/// The registry of supervised loops of one process.
#[derive(Debug)]
pub struct Supervisor {
    origin: Instant,
    tasks: Mutex<BTreeMap<String, Arc<Task>>>,
}

impl Default for Supervisor {
    fn default() -> Self {
        Supervisor {
            origin: Instant::now(),
            tasks: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Supervisor {
    pub fn new() -> Arc<Supervisor> {
        Arc::new(Supervisor::default())
    }

    /// Registers `name` (again: the same record) and returns its heartbeat.
    pub fn register(&self, name: &str) -> Heartbeat {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        let task = tasks
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(Task {
                    last_beat_ms: AtomicU64::new(elapsed_ms(self.origin)),
                    beats: AtomicU64::new(0),
                    running: AtomicBool::new(true),
                    stopped: AtomicBool::new(false),
                    restarts: AtomicU64::new(0),
                    last_panic: Mutex::new(None),
                })
            })
            .clone();
        task.running.store(true, Ordering::Relaxed);
        task.stopped.store(false, Ordering::Relaxed);
        Heartbeat {
            task,
            origin: self.origin,
        }
    }

    /// Counts a panic of `name` that was caught elsewhere (e.g. in a request handler).
    pub fn record_panic(&self, name: &str, message: &str) {
        let hb = self.register(name);
        note_panic(&hb.task, message);
    }

    /// Runs the loop `body` makes until it returns (it should return once `cancel` fires).
    /// A panic is caught, logged and counted; the loop is made again after a backoff, unless
    /// `cancel` fired meanwhile. `body` gets the loop's heartbeat to beat once per iteration.
    pub async fn run<F, Fut>(
        &self,
        name: &str,
        cancel: &CancellationToken,
        backoff: Backoff,
        mut body: F,
    ) where
        F: FnMut(Heartbeat) -> Fut,
        Fut: Future<Output = ()>,
    {
        let hb = self.register(name);
        let mut consecutive = 0u32;
        loop {
            let started = Instant::now();
            // The loop's state lives in the database and in the loop itself; a panic leaves
            // nothing half-updated in memory that a restart would reuse.
            match AssertUnwindSafe(body(hb.clone())).catch_unwind().await {
                Ok(()) => break,
                Err(payload) => {
                    let message = panic_message(payload.as_ref());
                    note_panic(&hb.task, &message);
                    if started.elapsed() > backoff.max {
                        consecutive = 0;
                    }
                    consecutive = consecutive.saturating_add(1);
                    let delay = backoff.delay(consecutive);
                    error!(
                        message = "Background task panicked; restarting it.",
                        task = name,
                        panic = %mask_numbers(&message),
                        restarts = hb.task.restarts.load(Ordering::Relaxed),
                        restart_in_ms = delay.as_millis() as u64,
                    );
                    // A restart counts as a sign of life: the loop is being brought back.
                    hb.beat();
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    if cancel.is_cancelled() {
                        break;
                    }
                }
            }
        }
        hb.task.running.store(false, Ordering::Relaxed);
        if cancel.is_cancelled() {
            hb.task.stopped.store(true, Ordering::Relaxed);
        } else {
            warn!(
                message = "Background task ended without being asked to.",
                task = name
            );
        }
    }

    /// Marks `name` as finished because the process is stopping.
    pub fn stopped(&self, name: &str) {
        let hb = self.register(name);
        hb.task.running.store(false, Ordering::Relaxed);
        hb.task.stopped.store(true, Ordering::Relaxed);
    }

    pub fn report(&self) -> Vec<TaskReport> {
        let now = elapsed_ms(self.origin);
        let tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks
            .iter()
            .map(|(name, t)| {
                let panic = t
                    .last_panic
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                TaskReport {
                    name: name.clone(),
                    running: t.running.load(Ordering::Relaxed),
                    beats: t.beats.load(Ordering::Relaxed),
                    since_beat_ms: now.saturating_sub(t.last_beat_ms.load(Ordering::Relaxed)),
                    restarts: t.restarts.load(Ordering::Relaxed),
                    last_panic_at: panic.as_ref().map(|p| p.1),
                    last_panic: panic.map(|p| p.0),
                }
            })
            .collect()
    }

    /// Loops that are not alive: ended without a stop being asked for, or running without
    /// an iteration for longer than `stall_after`.
    pub fn dead_or_stalled(&self, stall_after: Duration) -> Vec<String> {
        let stall = u64::try_from(stall_after.as_millis()).unwrap_or(u64::MAX);
        let tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        let now = elapsed_ms(self.origin);
        tasks
            .iter()
            .filter(|(_, t)| {
                let running = t.running.load(Ordering::Relaxed);
                let stopped = t.stopped.load(Ordering::Relaxed);
                (!running && !stopped)
                    || (running
                        && now.saturating_sub(t.last_beat_ms.load(Ordering::Relaxed)) > stall)
            })
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Names registered so far, with whether each has begun an iteration.
    pub fn started(&self) -> Vec<(String, bool)> {
        let tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks
            .iter()
            .map(|(n, t)| (n.clone(), t.beats.load(Ordering::Relaxed) > 0))
            .collect()
    }
}

fn note_panic(task: &Task, message: &str) {
    task.restarts.fetch_add(1, Ordering::Relaxed);
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    *task.last_panic.lock().unwrap_or_else(|p| p.into_inner()) = Some((mask_numbers(message), at));
}

fn elapsed_ms(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The text of a panic payload (`panic!` gives a `&str` or a `String`).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-text payload".to_owned()
    }
}

/// Cuts `text` to a few hundred characters and masks every run of six or more digits
/// (a phone number in a panic message must not reach a log line or the health route).
pub fn mask_numbers(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_MESSAGE + 3));
    let chars: Vec<char> = text.chars().take(MAX_MESSAGE).collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_ascii_digit() {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            let run = &chars[start..i];
            if run.len() >= 6 {
                out.extend(&run[..3]);
                out.extend(std::iter::repeat_n('*', run.len() - 5));
                out.extend(&run[run.len() - 2..]);
            } else {
                out.extend(run);
            }
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    if text.chars().count() > MAX_MESSAGE {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_masked_and_long_messages_cut() {
        assert_eq!(
            mask_numbers("bad msisdn 13800138000 at row 12"),
            "bad msisdn 138******00 at row 12"
        );
        let long = "x".repeat(1000);
        assert_eq!(mask_numbers(&long).chars().count(), MAX_MESSAGE + 3);
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let b = Backoff {
            first: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let got: Vec<u128> = (1..=6).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.delay(500), Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_panicking_loop_is_restarted_and_counted() {
        let sup = Supervisor::new();
        let cancel = CancellationToken::new();
        let backoff = Backoff {
            first: Duration::from_millis(1),
            max: Duration::from_millis(10),
        };
        let mut runs = 0;
        sup.run("worker", &cancel, backoff, |hb| {
            runs += 1;
            let n = runs;
            async move {
                hb.beat();
                if n < 3 {
                    panic!("round {n} failed for 13800138000");
                }
            }
        })
        .await;
        assert_eq!(runs, 3);
        let r = &sup.report()[0];
        assert_eq!((r.name.as_str(), r.restarts, r.beats), ("worker", 2, 5));
        assert_eq!(
            r.last_panic.as_deref(),
            Some("round 2 failed for 138******00")
        );
        assert_eq!(
            sup.dead_or_stalled(Duration::from_secs(60)),
            vec!["worker".to_owned()],
            "a loop that ended without a stop is dead"
        );
    }
}
