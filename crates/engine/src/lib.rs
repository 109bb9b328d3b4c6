//! The engine: schedule slots become runs, runs move through their waves, waves are planned,
//! dispatched, tracked and closed, and finished runs are evaluated.
//!
//! Architecture invariants:
//! - Every step reads its input from the store and writes its result to the store; nothing
//!   a later step needs lives only in memory. A killed daemon (or another replica) carries on
//!   from the store. In-memory state is a cache ([`catalog::Catalog`]).
//! - Every state change is a conditional update naming the state it expects, so repeating a
//!   step after a crash, or two replicas taking the same step, changes things once.
//! - The engine uses channels only through `channels::Channel`; it knows no gateway.
//! - Time comes from [`clock::Clock`] (the database clock in production).
//!
//! [`Engine::tick`] and [`Engine::dispatch_round`] are public so tests can drive the engine
//! step by step; [`Engine::run`] loops them until cancelled.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use channels::Channel;
use spec::Workflow;
use store::{Millis, Store};
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

pub mod breaker;
pub mod calls;
pub mod catalog;
pub mod clock;
mod digest;
mod dispatch;
pub mod failpoint;
mod mail;
pub mod monitor;
mod report;
pub mod schedule;
pub mod tasks;

pub use dispatch::{RoundStats, backoff_delay, capped_backoff};
pub use failpoint::FailPoint;
pub use mail::MailStats;
pub use report::{build_report, season_report};

use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::schedule::{Calendars, due_slots};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Plan(#[from] audience::PlanError),
    #[error(transparent)]
    Tracking(#[from] tracking::TrackingError),
    #[error("no channel configured for `{0}`")]
    NoChannel(String),
    #[error("unknown campaign `{0}`")]
    UnknownCampaign(String),
    #[error("workflow version {0} is not in the store")]
    UnknownVersion(i64),
    #[error("stored version of `{campaign}` no longer compiles: {reason}")]
    BadVersion { campaign: String, reason: String },
    #[error("cron scheduler: {0}")]
    Cron(String),
    #[error(
        "version {version} of `{campaign}` awaits approval: another principal with the approver role runs `campaignd approve {campaign} {version}`"
    )]
    AwaitingApproval { campaign: String, version: i64 },
    #[error("stopped at failure point {0:?}")]
    FailPoint(FailPoint),
}

/// Engine settings. Every field has a sensible default in [`EngineConfig::new`].
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Names this process in lease tokens and logs.
    pub worker_id: String,
    /// Decided contacts per batch when a wave is planned (`store::batches`): the first
    /// batch is written before the wave counts as planned, the others after it.
    pub planned_batch_contacts: usize,
    /// Contacts claimed per dispatcher round.
    pub batch_size: u64,
    /// The base's global holdout (no marketing campaign contacts its members).
    ///
    /// Default: none.
    pub global_holdout: Option<audience::GlobalHoldout>,
    /// Dispatcher loops [`Engine::run`] starts per channel. Each claims its own batches (the
    /// claim is one statement, safe for concurrent claimers), so one loop's claim and settle
    /// overlap with another loop's sends. The channel's own limit (e.g. Kannel
    /// `concurrency`) still caps the requests in flight across all loops. With one loop the
    /// gateway idles while the database works (about half the time in `bench-dispatch`);
    /// three kept it busy about 90% of the time there.
    ///
    /// Default: 1. Values below 1 count as 1.
    pub dispatchers_per_channel: usize,
    /// How long a claim is held; a worker that dies loses its claims after this (clock time).
    pub lease: Duration,
    /// Optional safety cap: sends tried per contact before a transient failure becomes
    /// final even though its send-by deadline has not passed. Retries are bounded by the
    /// contact's send-by deadline (the wave's `send_within`), not by a count, so that a
    /// gateway outage of minutes does not fail contacts the campaign could still reach.
    ///
    /// Default: `None` (no cap; the deadline decides).
    pub max_attempts: Option<i32>,
    /// First retry delay (clock time); doubles per attempt, with jitter.
    pub retry_base: Duration,
    /// Longest retry delay (clock time): past it a retry is not pushed further out, so a
    /// gateway that recovers is used again within this long. Default: 60 s.
    pub retry_max: Duration,
    /// Real-time pause between housekeeping passes and when a channel's queue is empty.
    pub poll: Duration,
    /// `workflows/calendars/`.
    pub calendars_dir: PathBuf,
    /// Marks reports as coming from a simulated population (the demo).
    pub simulated: bool,
    /// Runs start only from versions approved by a principal other than their loader (four
    /// eyes). Off in [`EngineConfig::new`] for tests that drive the engine directly; the
    /// daemon turns it on.
    pub require_approval: bool,
    /// Recorded as the loader of the versions [`Engine::load`] stores (the daemon's
    /// configured operator, or `files`).
    pub loaded_by: String,
    /// How long after it was queued a staff mail is retried on transient errors (real
    /// time, as leases are); then it fails for good. Default: 24 hours.
    pub mail_deadline: Duration,
    /// The circuit breaker of each channel (gateway account): consecutive transient
    /// failures that open it (default 5) and how long it stays open before a probe
    /// (default 10 s, real time like leases: a gateway back from an outage is found within
    /// seconds).
    pub breaker_threshold: u32,
    pub breaker_cool_down: Duration,
    /// The interval of service-task digests (clock time): each staff member gets at most
    /// one mail of new and escalated tasks per interval. Default: 1 hour.
    pub task_digest_every: Duration,
}

impl EngineConfig {
    pub fn new(worker_id: impl Into<String>, calendars_dir: PathBuf) -> Self {
        EngineConfig {
            worker_id: worker_id.into(),
            batch_size: 500,
            global_holdout: None,
            dispatchers_per_channel: 1,
            lease: Duration::from_secs(60),
            max_attempts: None,
            retry_base: Duration::from_secs(30),
            retry_max: Duration::from_secs(60),
            poll: Duration::from_millis(250),
            calendars_dir,
            simulated: false,
            require_approval: false,
            loaded_by: "files".to_owned(),
            mail_deadline: Duration::from_secs(24 * 3600),
            breaker_threshold: 5,
            breaker_cool_down: Duration::from_secs(10),
            task_digest_every: Duration::from_secs(3600),
            planned_batch_contacts: store::batches::BATCH_CONTACTS,
        }
    }
}

/// What the engine tells observers (the CLI's progress display, tests).
#[derive(Debug, Clone)]
pub enum Event {
    SlotSkipped {
        campaign: String,
        slot_at: Millis,
        reason: &'static str,
    },
    RunStarted {
        campaign: String,
        run_id: i64,
        trigger: String,
    },
    WavePlanned {
        campaign: String,
        run_id: i64,
        wave: String,
        channel: String,
        funnel: audience::Funnel,
        treatment: u64,
        control: u64,
        closes_at: Millis,
        /// When the planning transaction committed. The event itself is sent once the
        /// first batch of contacts is written (the dispatcher can start); the others are
        /// written after it (`store::batches`).
        decided_at: Option<std::time::Instant>,
    },
    WaveClosed {
        campaign: String,
        run_id: i64,
        wave: String,
        at: Millis,
    },
    RunFinished {
        campaign: String,
        run_id: i64,
        report: Box<evaluate::Report>,
    },
}

pub struct Engine {
    store: Store,
    clock: Clock,
    channels: HashMap<String, Arc<dyn Channel>>,
    catalog: Catalog,
    calendars: Calendars,
    cfg: EngineConfig,
    events: broadcast::Sender<Event>,
    wake: Notify,
    /// Wakes the mail loop when a run finished with a report mail queued.
    mail_wake: Notify,
    mailer: Option<(channels::email::Mailer, Vec<String>)>,
    /// When housekeeping may next clear run-out leases (real time).
    next_reclaim: std::sync::Mutex<std::time::Instant>,
    failpoints: failpoint::FailPoints,
    /// Catches panics in the loops of [`Engine::run`]; health reads it.
    supervisor: Arc<supervise::Supervisor>,
    /// One circuit breaker per channel (gateway account), shared by its dispatcher loops.
    /// In memory on purpose: it is a view of the gateway, not of the campaign; a restarted
    /// process learns it again within `breaker_threshold` sends.
    breakers: HashMap<String, std::sync::Mutex<breaker::Breaker>>,
    /// Dispatch rounds holding gateway answers the database refused (see
    /// [`Engine::owes_writes`]).
    held_rounds: std::sync::atomic::AtomicUsize,
    /// True while callbacks wait outside the database (the daemon's spool).
    inbound_backlog: Option<InboundBacklog>,
    /// Who gets operational alerts (a gateway that refuses campaignd).
    alert_to: Vec<String>,
    /// Churn-warning monitors and the staff their alerts go to.
    monitors: Vec<spec::monitor::Monitor>,
    staff: spec::monitor::StaffDirectory,
    /// Call-centre teams (`workflows/teams.yaml`) whose tasks [`Engine::call_step`] paces.
    teams: Option<spec::teams::TeamDirectory>,
    /// When this engine last ran [`Engine::call_step`]: how many minutes of the spread
    /// pacing a step may catch up (see `store::calls::Pace::catch_up_minutes`).
    last_call_step: std::sync::Mutex<Option<store::Millis>>,
}

/// Says whether callbacks received by this process still wait to be stored.
pub type InboundBacklog = Arc<dyn Fn() -> bool + Send + Sync>;

/// What one housekeeping pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TickStats {
    pub runs_started: u64,
    pub waves_planned: u64,
    pub waves_closed: u64,
    pub runs_finished: u64,
    pub inbound_processed: u64,
    pub expired: u64,
    /// Leases that ran out, cleared. The pass runs at most every half lease: a claim takes a
    /// row whose lease ran out by itself, so this only keeps counts and the log honest, and
    /// scanning the queue on every pass cost more than the dispatch it served.
    pub leases_reclaimed: u64,
    /// At-most-once contacts a dead worker left in doubt, decided: `sent` when the gateway
    /// reported on them, else `unknown`.
    pub doubtful_settled: u64,
    /// Stored reports of finished runs rebuilt because a response received in time was
    /// attributed after the run finished.
    pub reports_refreshed: u64,
    /// Monitor slots evaluated.
    pub monitor_evaluations: u64,
    /// Overdue agent tasks escalated, and task digest mails queued.
    pub tasks: tasks::TaskStepStats,
    /// Call tasks expired at their deadline and released to their teams' queues.
    pub calls: calls::CallStepStats,
    /// Batches of decided contacts written (`store::batches`) after their wave's planning.
    pub batches_written: u64,
}

/// How many leases a wave window waits past its close for inbound rows received before it
/// to be tried by attribution (see `Store::due_timers`).
const INBOUND_BARRIER_LEASES: u32 = 4;

impl Engine {
    pub fn new(
        store: Store,
        clock: Clock,
        channels: HashMap<String, Arc<dyn Channel>>,
        cfg: EngineConfig,
    ) -> Result<Engine, EngineError> {
        let calendars = Calendars::load(&cfg.calendars_dir).map_err(EngineError::Cron)?;
        let (events, _) = broadcast::channel(4096);
        let breaker_cfg = breaker::BreakerConfig::new(
            cfg.breaker_threshold,
            Duration::from_millis(clock.span_of(cfg.breaker_cool_down).max(0) as u64),
        );
        let breakers = channels
            .keys()
            .map(|k| {
                (
                    k.clone(),
                    std::sync::Mutex::new(breaker::Breaker::new(breaker_cfg)),
                )
            })
            .collect();
        Ok(Engine {
            store,
            clock,
            channels,
            catalog: Catalog::default(),
            calendars,
            cfg,
            events,
            wake: Notify::new(),
            mail_wake: Notify::new(),
            mailer: None,
            next_reclaim: std::sync::Mutex::new(std::time::Instant::now()),
            failpoints: failpoint::FailPoints::default(),
            supervisor: supervise::Supervisor::new(),
            breakers,
            held_rounds: Default::default(),
            inbound_backlog: None,
            alert_to: Vec::new(),
            monitors: Vec::new(),
            staff: spec::monitor::StaffDirectory::default(),
            teams: None,
            last_call_step: std::sync::Mutex::new(None),
        })
    }

    /// Evaluates `monitors` on their schedules in housekeeping ([`Engine::tick`]), assigning
    /// alerts to `staff` (`workflows/monitors/`, `workflows/staff.yaml`).
    pub fn with_monitors(
        mut self,
        monitors: Vec<spec::monitor::Monitor>,
        staff: spec::monitor::StaffDirectory,
    ) -> Self {
        self.monitors = monitors;
        self.staff = staff;
        self
    }

    /// Paces the outbound-call tasks of `teams` (`workflows/teams.yaml`) in housekeeping
    /// ([`Engine::call_step`]).
    pub fn with_teams(mut self, teams: spec::teams::TeamDirectory) -> Self {
        self.teams = Some(teams);
        self
    }

    /// Mails `to` when a channel pauses because its gateway refused campaignd's account
    /// (rejected credentials, a wrong URL): queued in the staff mail queue and sent by the
    /// mail loop, at most once per channel per hour. Empty (the default): the ERROR log and
    /// `/readyz` are the only signals.
    pub fn with_alerts(mut self, to: Vec<String>) -> Self {
        self.alert_to = to;
        self
    }

    /// Tells the engine where callbacks wait that the database does not have yet (the
    /// daemon's spool): while `pending()` is true it claims nothing and fires no wave window,
    /// as while it holds gateway answers itself ([`Engine::owes_writes`]).
    pub fn with_inbound_backlog(mut self, pending: InboundBacklog) -> Self {
        self.inbound_backlog = Some(pending);
        self
    }

    /// True while this process knows of writes the database has not taken yet: gateway
    /// answers a dispatch round holds, or callbacks in the spool. Those writes are what
    /// settles a sent message (its answer, its delivery report) and what marks a responder,
    /// so until they land this process claims no contact, clears no lease, expires nothing
    /// and closes no wave window: after an outage, the first writes are the owed ones, and a
    /// message the gateway took during it is not sent again.
    pub fn owes_writes(&self) -> bool {
        self.held_rounds.load(std::sync::atomic::Ordering::SeqCst) > 0
            || self
                .inbound_backlog
                .as_ref()
                .is_some_and(|pending| pending())
    }

    /// Makes the next step that reaches `point` stop there, as a crash would.
    #[cfg(feature = "test-util")]
    pub fn arm(&self, point: FailPoint) {
        self.failpoints.arm(point);
    }

    /// Makes every step that reaches `point` stop there until [`Engine::clear`] (an outage
    /// rather than a crash).
    #[cfg(feature = "test-util")]
    pub fn fail_until_cleared(&self, point: FailPoint) {
        self.failpoints.fail_until_cleared(point);
    }

    /// Disarms `point`.
    #[cfg(feature = "test-util")]
    pub fn clear(&self, point: FailPoint) {
        self.failpoints.clear(point);
    }

    /// Makes the next step that reaches `point` wait there until the test resumes it.
    #[cfg(feature = "test-util")]
    pub fn pause(&self, point: FailPoint) -> failpoint::Paused {
        self.failpoints.pause(point)
    }

    /// Sends each finished run's report to the workflow's `evaluate.email` addresses (and
    /// `extra` ones) through `mailer`: the report mail is queued in the transaction that
    /// finishes the run and sent by the mail loop ([`Engine::mail_round`]). Without a mailer
    /// no report mail is queued.
    pub fn with_mailer(mut self, mailer: channels::email::Mailer, extra: Vec<String>) -> Self {
        self.mailer = Some((mailer, extra));
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The registry of this engine's background loops (restarts, last panic, heartbeats), for
    /// the health routes; the daemon registers its other tasks in it too.
    pub fn supervisor(&self) -> Arc<supervise::Supervisor> {
        self.supervisor.clone()
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    pub fn channel_kinds(&self) -> Vec<String> {
        let mut v: Vec<String> = self.channels.keys().cloned().collect();
        v.sort();
        v
    }

    /// Loads workflows as the current versions; returns (campaign, version id).
    pub async fn load(&self, workflows: Vec<Workflow>) -> Result<Vec<(String, i64)>, EngineError> {
        let now = self.clock.now(&self.store).await?;
        let loaded = self.catalog.load(&self.store, workflows, now).await?;
        for (_, id) in &loaded {
            self.store.set_loaded_by(*id, &self.cfg.loaded_by).await?;
        }
        Ok(loaded)
    }

    /// Whether runs of `version_id` may start (see [`EngineConfig::require_approval`]). Read
    /// from the store each time, so an approval given on any replica counts at once.
    async fn approved(&self, version_id: i64) -> Result<bool, EngineError> {
        if !self.cfg.require_approval {
            return Ok(true);
        }
        Ok(self
            .store
            .version_approval(version_id)
            .await?
            .is_some_and(|v| v.approved_by.is_some()))
    }

    pub fn workflows(&self) -> Vec<(i64, Arc<Workflow>)> {
        self.catalog.current()
    }

    /// Starts a run of a campaign's current version now, outside its schedule.
    pub async fn trigger(&self, campaign: &str, trigger: &str) -> Result<i64, EngineError> {
        let (version_id, wf) = self
            .catalog
            .current_of(campaign)
            .ok_or_else(|| EngineError::UnknownCampaign(campaign.to_owned()))?;
        if !self.approved(version_id).await? {
            return Err(EngineError::AwaitingApproval {
                campaign: campaign.to_owned(),
                version: version_id,
            });
        }
        let now = self.clock.now(&self.store).await?;
        let waves: Vec<(String, String)> = wf
            .waves
            .iter()
            .map(|w| (w.id.clone(), w.channel.as_str().to_owned()))
            .collect();
        let run_id = self
            .store
            .start_run(store::runs::NewRun {
                campaign,
                version_id,
                slot_at: None,
                trigger,
                waves: &waves,
                now,
            })
            .await?
            .expect("a run without a slot cannot conflict");
        info!(message = "Run started.", campaign, run_id, trigger);
        let _ = self.events.send(Event::RunStarted {
            campaign: campaign.to_owned(),
            run_id,
            trigger: trigger.to_owned(),
        });
        self.wake.notify_one();
        Ok(run_id)
    }

    /// One housekeeping pass: schedule slots, attribution, timers, planning, finishing,
    /// expiry and lease recovery. Idempotent: running it twice, or on two replicas, does each
    /// thing once.
    pub async fn tick(&self) -> Result<TickStats, EngineError> {
        let mut stats = TickStats::default();
        let now = self.clock.now(&self.store).await?;
        stats.runs_started += self.schedule_slots(now).await?;
        stats.monitor_evaluations += self.evaluate_monitors(now).await?;
        // Like a monitor: a failed step is logged and tried again at the next pass.
        match self.task_step(now).await {
            Ok(t) => stats.tasks = t,
            Err(e) => {
                warn!(error = %e, message = "Task step failed; retried at the next pass.")
            }
        }
        // Before timers: a call task past its window is unreached before the next wave
        // picks from the window it closes.
        match self.call_step(now).await {
            Ok(c) => stats.calls = c,
            Err(e) => {
                warn!(error = %e, message = "Call step failed; retried at the next pass.")
            }
        }

        // Decided contacts left in batches (a crash, or another replica still writing)
        // are written before attribution and timers: both need every contact of a wave.
        stats.batches_written += self.store.write_planned_batches().await?;
        let runs = self.store.active_runs().await?;
        for run in &runs {
            self.catalog
                .for_run(&self.store, run.id, run.version_id)
                .await?;
        }
        // Attribution before timers: a response stored before its wave closes must count
        // before the next wave picks its non-responders. One replica at a time attributes
        // (a lease in the store), so two replicas never record the same event twice.
        let lease_until = now + self.clock.span_of(self.cfg.lease);
        if self
            .store
            .try_singleton_lease("attribution", &self.cfg.worker_id, lease_until, now)
            .await?
        {
            // Every write attribution makes renews the lease and checks it is still ours
            // (fenced): a pass that stalls past its lease while another replica takes over
            // stops with `LeaseLost` at its next write instead of recording twice.
            let fenced = self.store.fenced(store::Fence {
                name: "attribution".to_owned(),
                holder: self.cfg.worker_id.clone(),
                lease_for: self.clock.span_of(self.cfg.lease),
                now: self.clock.now_fn(),
            });
            let rules = self.catalog.rules(&self.store);
            let attributed = async {
                loop {
                    // An event is matched to the contacts written when it is attributed:
                    // a wave another replica decided meanwhile has its batches written
                    // first (this replica's own were written at the start of the pass).
                    stats.batches_written += self.store.write_planned_batches().await?;
                    let s = tracking::process_batch(&fenced, &rules, 2000).await?;
                    stats.inbound_processed += s.processed;
                    if s.processed == 0 {
                        break;
                    }
                }
                stats.reports_refreshed += self.refresh_stale_reports(&fenced).await?;
                Ok::<(), EngineError>(())
            }
            .await;
            match attributed {
                Ok(()) => {}
                // Another replica holds the lease now and attributes; the rest of this
                // pass is safe on any replica, so it goes on.
                Err(EngineError::Store(store::StoreError::LeaseLost { .. }))
                | Err(EngineError::Tracking(tracking::TrackingError::Store(
                    store::StoreError::LeaseLost { .. },
                ))) => {
                    warn!(
                        message = "Attribution lease taken over by another worker; this pass stopped writing."
                    );
                }
                Err(e) => return Err(e),
            }
        }
        let now = self.clock.now(&self.store).await?;
        // Windows wait for untried inbound rows received before they close (the barrier in
        // `due_timers`), for at most a few leases: long enough for a dead attribution
        // holder's lease to run out and another replica to catch up.
        let barrier_grace = self.clock.span_of(self.cfg.lease * INBOUND_BARRIER_LEASES);
        // A reply still in the spool must count before a window picks non-responders.
        let timers = if self.owes_writes() {
            Vec::new()
        } else {
            self.store.due_timers(now, barrier_grace, 100).await?
        };
        for timer in timers {
            self.failpoints.reach(FailPoint::BeforeTimerFire).await?;
            let fired = self
                .store
                .fire_window_timer(timer.id, timer.wave_run_id)
                .await?;
            self.failpoints.reach(FailPoint::AfterTimerFire).await?;
            if fired {
                stats.waves_closed += 1;
                if let Some(w) = self.store.wave_run(timer.wave_run_id).await? {
                    let campaign = runs
                        .iter()
                        .find(|r| r.id == w.run_id)
                        .map(|r| r.campaign.clone())
                        .unwrap_or_default();
                    info!(message = "Wave window closed.", campaign = %campaign, run_id = w.run_id, wave = %w.wave);
                    let _ = self.events.send(Event::WaveClosed {
                        campaign,
                        run_id: w.run_id,
                        wave: w.wave,
                        at: timer.fire_at,
                    });
                }
            }
        }
        // Higher priority plans first, so of runs started together the one that outranks
        // gets a subscriber's last place in the frequency cap (runs still to start today are
        // kept a place by `arbitration`).
        let mut ordered: Vec<(u8, &store::runs::RunRow)> = Vec::with_capacity(runs.len());
        for run in &runs {
            let wf = self
                .catalog
                .for_run(&self.store, run.id, run.version_id)
                .await?;
            ordered.push((wf.priority, run));
        }
        ordered.sort_by(|(pa, a), (pb, b)| {
            pb.cmp(pa)
                .then_with(|| a.campaign.cmp(&b.campaign))
                .then(a.id.cmp(&b.id))
        });
        for (_, run) in ordered {
            let span = info_span!("run", campaign = %run.campaign, run_id = run.id);
            let (planned, finished) = self.advance_run(run).instrument(span).await?;
            stats.waves_planned += planned;
            stats.runs_finished += finished;
            // A planned wave's first batch is written and its dispatcher may be sending;
            // the rest now, before the next run plans (its planning would otherwise write
            // them inside its own transaction, holding the planner lock).
            if planned > 0 {
                stats.batches_written += self.store.write_planned_batches().await?;
            }
        }
        let now = self.clock.now(&self.store).await?;
        if self.owes_writes() {
            // The rows whose lease ran out may be the ones whose answers are held, or
            // whose delivery reports are in the spool: they wait until those are written.
            return Ok(stats);
        }
        stats.expired = self.store.expire_overdue(now).await?;
        if self.reclaim_due() {
            for (kind, channel) in &self.channels {
                let grace = self.clock.span_of(channel.proof_grace());
                // At-most-once rows in doubt are decided (sent on a report, else unknown)
                // before the rest are released for another claim.
                let (sent, unknown) = self.store.settle_doubtful(kind, now - grace, now).await?;
                stats.doubtful_settled += sent + unknown;
                if unknown > 0 {
                    warn!(
                        message = "At-most-once contacts left in doubt by a dead worker recorded unknown; not sent again.",
                        channel = %kind,
                        unknown,
                        sent
                    );
                }
                stats.leases_reclaimed +=
                    self.store.reclaim_expired_leases(kind, now - grace).await?;
            }
        }
        if stats.leases_reclaimed > 0 {
            warn!(
                message = "Reclaimed contacts whose lease expired.",
                count = stats.leases_reclaimed
            );
        }
        Ok(stats)
    }

    /// Rebuilds the stored report of every finished run that got a response after its
    /// report was built (received in time, attributed late). The report keeps the run's
    /// finish time; only its numbers change. Safe on any replica: the stored report is only
    /// replaced by one built from more responses.
    ///
    /// Also rebuilds provisional reports that are due (a retention goal's window still
    /// running: daily, and once more at its end, when the report becomes final).
    async fn refresh_stale_reports(&self, fenced: &Store) -> Result<u64, EngineError> {
        let mut refreshed = 0;
        let now = self.clock.now(&self.store).await?;
        for run in self.store.stale_reports(100).await? {
            let (json, response_seq, due) = self.report_now(&run, now).await?;
            if fenced
                .refresh_report(run.id, &json, response_seq, due)
                .await?
            {
                refreshed += 1;
                info!(message = "Report rebuilt after a late response.", campaign = %run.campaign, run_id = run.id);
            }
        }
        for (run, was_due) in self.store.due_reports(now, 100).await? {
            let (json, response_seq, due) = self.report_now(&run, now).await?;
            if fenced
                .rebuild_due_report(run.id, &json, response_seq, was_due, due)
                .await?
            {
                refreshed += 1;
                info!(message = "Provisional report rebuilt.", campaign = %run.campaign, run_id = run.id, r#final = due.is_none());
            }
        }
        Ok(refreshed)
    }

    /// A finished run's report as it stands at `now`, as JSON, with the responses it counted
    /// (`response_seq`) and when it is next due (a provisional retention report), for the
    /// fenced conditional writes that replace the stored one.
    async fn report_now(
        &self,
        run: &store::runs::RunRow,
        now: Millis,
    ) -> Result<(String, i64, Option<Millis>), EngineError> {
        let wf = self.catalog.version(&self.store, run.version_id).await?;
        let response_seq = self.store.response_seq(run.id).await?;
        let (report, due) =
            report::build_report_due(&self.store, &wf, run, now, self.cfg.simulated).await?;
        Ok((evaluate::render_json(&report), response_seq, due))
    }

    fn reclaim_due(&self) -> bool {
        let now = std::time::Instant::now();
        let mut next = self
            .next_reclaim
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if now < *next {
            return false;
        }
        *next = now + self.cfg.lease / 2;
        true
    }

    /// Evaluates each monitor's latest due slot (missed older ones are not worth an
    /// evaluation of their own: the latest reading supersedes them). A monitor that fails
    /// is logged and retried at the next pass; the others still run.
    async fn evaluate_monitors(&self, now: Millis) -> Result<u64, EngineError> {
        let mut done = 0;
        for m in &self.monitors {
            let last = self.store.last_monitor_slot(&m.id).await?;
            let Some(slot) = due_slots(&m.schedule, m.timezone, last, now, &self.calendars)
                .into_iter()
                .rfind(|s| s.skip.is_none())
            else {
                continue;
            };
            let span = info_span!("monitor", monitor = %m.id, slot_at = slot.slot_at);
            let result = monitor::evaluate(&self.store, m, &self.staff, slot.slot_at, now)
                .instrument(span)
                .await;
            match result {
                Ok(Some(c)) => {
                    done += 1;
                    info!(
                        monitor = %m.id,
                        watched = c.watched,
                        opened = c.opened,
                        escalated = c.escalated,
                        closed = c.closed,
                        message = "Monitor evaluated."
                    );
                    if c.opened + c.escalated > 0 {
                        self.mail_wake.notify_one();
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    warn!(monitor = %m.id, error = %e, message = "Monitor evaluation failed; retried at the next pass.")
                }
            }
        }
        Ok(done)
    }

    async fn schedule_slots(&self, now: Millis) -> Result<u64, EngineError> {
        let mut started = 0;
        for (version_id, wf) in self.catalog.current() {
            let Some(sched) = &wf.schedule else { continue };
            let last = self.store.latest_slot(&wf.campaign).await?;
            let approved = self.approved(version_id).await?;
            for slot in due_slots(sched, wf.timezone, last, now, &self.calendars) {
                // An unapproved version's slots are skipped, not held: a slot that ran late
                // after an approval would reach subscribers at a time nobody chose.
                let mut skip = match slot.skip {
                    None if !approved => Some("awaiting approval"),
                    other => other,
                };
                if skip.is_none() && sched.overlap != spec::Overlap::Parallel {
                    let open: Vec<i64> = self
                        .store
                        .runs_of(&wf.campaign)
                        .await?
                        .iter()
                        .filter(|r| r.state == "active")
                        .map(|r| r.id)
                        .collect();
                    if !open.is_empty() {
                        match sched.overlap {
                            spec::Overlap::Skip => skip = Some("previous_run_open"),
                            // Not recorded: the slot is offered again next pass, and
                            // `due_slots` records it `missed` once catch-up gives up on it.
                            spec::Overlap::Queue => {
                                debug!(message = "Schedule slot waits for the open run.", campaign = %wf.campaign, slot_at = slot.slot_at);
                                continue;
                            }
                            spec::Overlap::Parallel => {}
                            spec::Overlap::Close => {
                                for run_id in open {
                                    let c = self
                                        .store
                                        .close_run_early(run_id, now, "closed by a newer run")
                                        .await?;
                                    info!(message = "Open run closed for a newer slot.", campaign = %wf.campaign, run_id, slot_at = slot.slot_at, waves_skipped = c.waves_skipped, windows_closed = c.windows_closed, expired = c.expired);
                                }
                            }
                        }
                    }
                }
                // A triggered campaign starts a run only when its gather has someone to let in.
                if skip.is_none()
                    && wf.trigger.is_some()
                    && audience::pending_trigger_entrants(&self.store, &wf, now).await? == 0
                {
                    skip = Some("nothing_triggered");
                }
                match skip {
                    Some(reason) => {
                        if self
                            .store
                            .skip_slot(&wf.campaign, version_id, slot.slot_at, reason, now)
                            .await?
                        {
                            info!(message = "Schedule slot skipped.", campaign = %wf.campaign, slot_at = slot.slot_at, reason);
                            let _ = self.events.send(Event::SlotSkipped {
                                campaign: wf.campaign.clone(),
                                slot_at: slot.slot_at,
                                reason,
                            });
                        }
                    }
                    None => {
                        self.failpoints.reach(FailPoint::BeforeSlotStart).await?;
                        let waves: Vec<(String, String)> = wf
                            .waves
                            .iter()
                            .map(|w| (w.id.clone(), w.channel.as_str().to_owned()))
                            .collect();
                        let run = self
                            .store
                            .start_run(store::runs::NewRun {
                                campaign: &wf.campaign,
                                version_id,
                                slot_at: Some(slot.slot_at),
                                trigger: "schedule",
                                waves: &waves,
                                now,
                            })
                            .await?;
                        if let Some(run_id) = run {
                            started += 1;
                            info!(message = "Run started.", campaign = %wf.campaign, run_id, slot_at = slot.slot_at);
                            let _ = self.events.send(Event::RunStarted {
                                campaign: wf.campaign.clone(),
                                run_id,
                                trigger: "schedule".into(),
                            });
                        }
                    }
                }
            }
        }
        Ok(started)
    }

    /// What the frequency cap arbitrates between when `wf` plans a wave: every loaded
    /// campaign's priority, and (for a first wave of a capped marketing campaign) the
    /// marketing campaigns that outrank it and still plan today.
    fn arbitration<'w>(
        &self,
        wf: &Workflow,
        current: &'w [(i64, Arc<Workflow>)],
        first_wave: bool,
        now: Millis,
    ) -> audience::Arbitration<'w> {
        let priorities = current
            .iter()
            .map(|(_, w)| (w.campaign.clone(), w.priority))
            .collect();
        let capped = wf.purpose.is_marketing() && wf.policy.max_contacts.is_some();
        let rivals = current
            .iter()
            .map(|(_, w)| w.as_ref())
            .filter(|r| first_wave && capped && r.campaign != wf.campaign)
            .filter(|r| r.purpose.is_marketing())
            // A triggered rival's audience is who its trigger lets in, not known until its
            // gather: it takes a place when it plans, and keeps none ahead.
            .filter(|r| r.trigger.is_none())
            .filter(|r| audience::outranks(&r.campaign, r.priority, &wf.campaign, wf.priority))
            .filter(|r| {
                r.schedule.as_ref().is_some_and(|s| {
                    schedule::runs_later_today(s, r.timezone, now, &self.calendars)
                })
            })
            .collect();
        audience::Arbitration { rivals, priorities }
    }

    /// Plans every wave whose predecessor closed; finishes the run when all waves closed.
    async fn advance_run(&self, run: &store::runs::RunRow) -> Result<(u64, u64), EngineError> {
        let wf = self
            .catalog
            .for_run(&self.store, run.id, run.version_id)
            .await?;
        let waves = self.store.wave_runs(run.id).await?;
        let mut planned = 0;
        for w in waves
            .iter()
            .filter(|w| w.state == store::runs::wave_state::PENDING)
        {
            let Some(spec_wave) = wf.wave(&w.wave) else {
                continue;
            };
            let now = self.clock.now(&self.store).await?;
            let previous = match &spec_wave.after {
                None => None,
                Some(after) => match waves.iter().find(|p| &p.wave == after) {
                    // Due once the wave it follows has closed, and its delay and time of
                    // day (`after: W + 2d`, `at: next 10:00`) have come. Without either it
                    // follows the close at once, however early (a window closed for a
                    // newer run).
                    Some(p)
                        if p.state == store::runs::wave_state::CLOSED
                            && (!spec_wave.waits()
                                || now
                                    >= spec_wave.due_after(
                                        p.closes_at.unwrap_or(i64::MIN),
                                        wf.timezone,
                                    )) =>
                    {
                        Some(p.id)
                    }
                    _ => continue,
                },
            };
            let current = self.catalog.current();
            let arbitration = self.arbitration(&wf, &current, previous.is_none(), now);
            let summary = audience::plan_wave_in_batches(
                &self.store,
                audience::PlanInput {
                    workflow: &wf,
                    wave: spec_wave,
                    run_id: run.id,
                    wave_run_id: w.id,
                    previous_wave_run_id: previous,
                    now,
                    global_holdout: self.cfg.global_holdout.as_ref(),
                    arbitration: Some(&arbitration),
                },
                self.cfg.planned_batch_contacts,
            )
            .instrument(info_span!("wave", wave = %w.wave))
            .await?;
            if summary.opened {
                self.failpoints.reach(FailPoint::AfterWavePlanned).await?;
                planned += 1;
                info!(message = "Wave planned.", wave = %w.wave, treatment = summary.treatment, control = summary.control);
                let _ = self.events.send(Event::WavePlanned {
                    campaign: run.campaign.clone(),
                    run_id: run.id,
                    wave: w.wave.clone(),
                    channel: w.channel.clone(),
                    funnel: summary.funnel,
                    treatment: summary.treatment,
                    control: summary.control,
                    closes_at: summary.closes_at,
                    decided_at: summary.decided_at,
                });
            }
        }
        let waves = self.store.wave_runs(run.id).await?;
        if !waves
            .iter()
            .all(|w| w.state == store::runs::wave_state::CLOSED)
        {
            return Ok((planned, 0));
        }
        let now = self.clock.now(&self.store).await?;
        // Read before building: a response recorded meanwhile marks the report stale.
        let response_seq = self.store.response_seq(run.id).await?;
        let (report, report_due) =
            report::build_report_due(&self.store, &wf, run, now, self.cfg.simulated).await?;
        let json = evaluate::render_json(&report);
        // The report mail is queued in the transaction that finishes the run, so a crash
        // after the finish cannot lose it; the mail loop sends it.
        let mail = self.mailer.as_ref().and_then(|(_, extra)| {
            let mut to = wf.evaluate.email.clone();
            to.extend(extra.iter().cloned());
            (!to.is_empty()).then(|| store::mail::NewMail {
                kind: store::mail::MailKind::Report,
                dedup_key: store::mail::report_dedup_key(run.id),
                recipients: to,
                subject: format!("campaignd: {} run {} evaluation", run.campaign, run.id),
                text: evaluate::render_text(&report),
                html: Some(evaluate::render_html(&report)),
                due_at: now,
            })
        });
        if !self
            .store
            .finish_run_with_mail(run.id, &json, response_seq, now, mail.as_ref(), report_due)
            .await?
        {
            return Ok((planned, 0));
        }
        self.failpoints.reach(FailPoint::AfterRunFinished).await?;
        if mail.is_some() {
            self.mail_wake.notify_one();
        }
        self.catalog.forget_run(run.id);
        info!(
            message = "Run finished.",
            treatment_rate = report.overall.uplift.treatment_rate,
            control_rate = report.overall.uplift.control_rate
        );
        let _ = self.events.send(Event::RunFinished {
            campaign: run.campaign.clone(),
            run_id: run.id,
            report: Box::new(report),
        });
        Ok((planned, 1))
    }

    /// Runs dispatchers (`dispatchers_per_channel` tasks per channel) and housekeeping until
    /// `cancel`; then stops claiming, lets the batches in flight settle, and returns.
    /// `cron_wakeups` adds a tokio-cron-scheduler job per scheduled campaign that wakes
    /// housekeeping at fire times.
    pub async fn run(
        self: Arc<Self>,
        cancel: CancellationToken,
        cron_wakeups: bool,
    ) -> Result<(), EngineError> {
        let scheduler = if cron_wakeups {
            Some(self.clone().start_cron().await?)
        } else {
            None
        };
        let mut tasks = tokio::task::JoinSet::new();
        for kind in self.channel_kinds() {
            for n in 0..self.cfg.dispatchers_per_channel.max(1) {
                let engine = self.clone();
                let cancel = cancel.clone();
                let kind = kind.clone();
                tasks.spawn(async move {
                    let name = format!("dispatch:{kind}:{n}");
                    let sup = engine.supervisor.clone();
                    sup.run(&name, &cancel, supervise::Backoff::default(), |hb| {
                        engine
                            .clone()
                            .dispatch_loop(kind.clone(), cancel.clone(), hb)
                    })
                    .await;
                });
            }
        }
        if self.mailer.is_some() {
            let engine = self.clone();
            let cancel = cancel.clone();
            tasks.spawn(async move {
                let sup = engine.supervisor.clone();
                sup.run("mail", &cancel, supervise::Backoff::default(), |hb| {
                    engine.clone().mail_loop(cancel.clone(), hb)
                })
                .await;
            });
        }
        let engine = self.clone();
        let hk_cancel = cancel.clone();
        tasks.spawn(async move {
            let sup = engine.supervisor.clone();
            sup.run(
                "housekeeping",
                &hk_cancel,
                supervise::Backoff::default(),
                |hb| engine.clone().housekeeping_loop(hk_cancel.clone(), hb),
            )
            .await;
        });
        while tasks.join_next().await.is_some() {}
        if let Some(mut s) = scheduler {
            let _ = s.shutdown().await;
        }
        Ok(())
    }

    /// One channel's dispatcher: rounds until `cancel`. Run under [`supervise::Supervisor`]:
    /// a panic (in a channel, say) restarts the loop; the batch it held keeps its lease and
    /// returns to the queue when the lease runs out, as after a crash.
    async fn dispatch_loop(
        self: Arc<Self>,
        kind: String,
        cancel: CancellationToken,
        hb: supervise::Heartbeat,
    ) {
        let mut failures = 0u32;
        while !cancel.is_cancelled() {
            hb.beat();
            let mut pause = self.cfg.poll;
            match self.dispatch_round(&kind).await {
                Ok(s) if s.claimed > 0 => {
                    failures = 0;
                    continue;
                }
                Ok(_) => failures = 0,
                Err(e) => {
                    failures += 1;
                    pause = after_failures(self.cfg.poll, failures);
                    error!(message = "Dispatch round failed.", channel = %kind, error = %e, failures, retry_in_ms = pause.as_millis() as u64)
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Mail rounds until `cancel`, under the supervisor like the dispatchers: a mail it held
    /// when it panicked goes back to the queue when its lease runs out.
    async fn mail_loop(self: Arc<Self>, cancel: CancellationToken, hb: supervise::Heartbeat) {
        let mut failures = 0u32;
        while !cancel.is_cancelled() {
            hb.beat();
            let mut pause = self.cfg.poll;
            match self.mail_round().await {
                Ok(s) if s.claimed > 0 => {
                    failures = 0;
                    continue;
                }
                Ok(_) => failures = 0,
                Err(e) => {
                    failures += 1;
                    pause = after_failures(self.cfg.poll, failures);
                    error!(message = "Mail round failed.", error = %e, failures, retry_in_ms = pause.as_millis() as u64);
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = self.mail_wake.notified(), if failures == 0 => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Housekeeping passes until `cancel`, under the supervisor like the dispatchers.
    async fn housekeeping_loop(
        self: Arc<Self>,
        cancel: CancellationToken,
        hb: supervise::Heartbeat,
    ) {
        let mut failures = 0u32;
        while !cancel.is_cancelled() {
            hb.beat();
            let mut pause = self.cfg.poll;
            match self.tick().await {
                Ok(_) => failures = 0,
                Err(e) => {
                    failures += 1;
                    pause = after_failures(self.cfg.poll, failures);
                    error!(message = "Housekeeping pass failed.", error = %e, failures, retry_in_ms = pause.as_millis() as u64);
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = self.wake.notified(), if failures == 0 => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    async fn start_cron(
        self: Arc<Self>,
    ) -> Result<tokio_cron_scheduler::JobScheduler, EngineError> {
        use tokio_cron_scheduler::{Job, JobScheduler};
        let sched = JobScheduler::new()
            .await
            .map_err(|e| EngineError::Cron(e.to_string()))?;
        for (_, wf) in self.catalog.current() {
            let Some(s) = &wf.schedule else { continue };
            let engine = self.clone();
            // The job only wakes housekeeping; slots are computed from the store and the
            // IANA zone there, so a DST change or a missed wake-up cannot misfire a slot.
            let job = Job::new_async_tz(s.cron_text.as_str(), wf.timezone, move |_, _| {
                let engine = engine.clone();
                Box::pin(async move { engine.wake.notify_one() })
            })
            .map_err(|e| EngineError::Cron(format!("{}: {e}", wf.campaign)))?;
            sched
                .add(job)
                .await
                .map_err(|e| EngineError::Cron(e.to_string()))?;
        }
        sched
            .start()
            .await
            .map_err(|e| EngineError::Cron(e.to_string()))?;
        Ok(sched)
    }
}

/// Longest pause of a loop whose rounds keep failing (the database is down, say).
pub const MAX_FAILURE_PAUSE: Duration = Duration::from_secs(30);

/// The pause after `failures` consecutive failed rounds: the poll interval doubled per
/// failure, at most [`MAX_FAILURE_PAUSE`]. An outage is then neither hammered nor logged
/// four times a second per loop, and the first round after it comes within 30 s.
pub fn after_failures(poll: Duration, failures: u32) -> Duration {
    poll.saturating_mul(1u32 << failures.min(16))
        .min(MAX_FAILURE_PAUSE)
        .max(poll)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_loop_backs_off_to_thirty_seconds_and_no_further() {
        let poll = Duration::from_millis(250);
        assert_eq!(after_failures(poll, 0), poll);
        assert_eq!(after_failures(poll, 1), Duration::from_millis(500));
        assert_eq!(after_failures(poll, 3), Duration::from_secs(2));
        assert_eq!(after_failures(poll, 7), MAX_FAILURE_PAUSE);
        assert_eq!(after_failures(poll, u32::MAX), MAX_FAILURE_PAUSE);
        // A poll longer than the cap is never shortened by a failure.
        let slow = Duration::from_secs(60);
        assert_eq!(after_failures(slow, 5), slow);
    }
}
