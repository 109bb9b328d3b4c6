//! `campaignd demo`: a fresh embedded database, a synthetic base, one workflow run end to end
//! with response windows compressed, replies from a simulated population, and the evaluation;
//! or (`--days`) a season of several workflows on their own schedules, where the cap and
//! arbitration decide who hears from whom.
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{NaiveDateTime, TimeZone};
use engine::Event;
use engine::clock::Clock;
use store::contacts::{Arm, ContactState};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::out;
use crate::sim::{Behaviour, Sim};

#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Size of the synthetic subscriber base.
    #[arg(long, default_value_t = 100_000)]
    subscribers: usize,
    /// Months of usage history (and a year of events) per subscriber; 0 for none.
    #[arg(long, default_value_t = 12)]
    history_months: u32,
    /// Seed of the base and of the simulated population.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// The workflow to run (default `workflows/autumn-enrollment.yaml`). Repeat it, with
    /// `--days`, for a season of several.
    #[arg(long)]
    workflow: Vec<PathBuf>,
    /// Run a season: the workflows on their own schedules (monitors too) for this many
    /// campaign days from `--start`, then a summary per campaign. 0 (the default): one run
    /// of one workflow, started by hand, to its evaluation.
    #[arg(long, default_value_t = 0)]
    days: u32,
    /// Folder for the demo's database, SMS outbox and e-mailed report (recreated).
    #[arg(long, default_value = "demo-out")]
    out: PathBuf,
    /// Real seconds per campaign day: response windows of days pass in seconds.
    #[arg(long, default_value_t = 2.0)]
    day_seconds: f64,
    /// Campaign-local time the demo starts at (a weekday in the enrollment season).
    #[arg(long, default_value = "2026-09-07T09:30:00")]
    start: String,
}

/// A synthetic base to generate: how many, from which seed, and with how much past.
pub(crate) struct Base {
    pub(crate) subscribers: usize,
    pub(crate) seed: u64,
    /// Months of usage history per subscriber (0: none), ending the month before `now`'s,
    /// with a year of events before `now` (`subscribers::past`).
    pub(crate) history_months: u32,
    pub(crate) now: store::Millis,
}

/// Generates and inserts a synthetic base and its past, with progress. Each chunk of
/// subscribers and its history and events land in one transaction each.
pub(crate) async fn insert_base(store: &store::Store, base: &Base) -> anyhow::Result<()> {
    const CHUNK: usize = 10_000;
    let started = Instant::now();
    let n = base.subscribers;
    let cat = store.catalogue();
    let measures: Vec<&str> = cat
        .measures_of(catalogue::Period::Month)
        .map(|m| m.name.as_str())
        .collect();
    let mut generated = subscribers::generate(&cat, n, base.seed).enumerate();
    let (mut done, mut history, mut events) = (0usize, 0u64, 0u64);
    loop {
        let chunk: Vec<(usize, store::subscribers::NewSubscriber)> =
            generated.by_ref().take(CHUNK).collect();
        if chunk.is_empty() {
            break;
        }
        let rows: Vec<_> = chunk.iter().map(|(_, s)| s.clone()).collect();
        done += store
            .insert_subscribers(
                &rows,
                store::subscribers::OnDuplicate::Fail,
                store::wall_now(),
            )
            .await? as usize;
        if base.history_months > 0 {
            let (h, e) = insert_past(store, base, &measures, &chunk).await?;
            history += h;
            events += e;
        }
        // Redraw in place on a terminal; in a log, only the final line is useful.
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            eprint!("\r  subscriber base: {done}/{n}");
        }
    }
    eprintln!(
        "\r  subscriber base: {done}/{n} synthetic subscribers, {history} months of usage and {events} events in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn insert_past(
    store: &store::Store,
    base: &Base,
    measures: &[&str],
    chunk: &[(usize, store::subscribers::NewSubscriber)],
) -> anyhow::Result<(u64, u64)> {
    let cat = store.catalogue();
    let mut import = store.begin_records().await?;
    let keys: Vec<&str> = chunk.iter().map(|(_, s)| s.msisdn.as_str()).collect();
    let ids = import
        .subscriber_ids(store::history::SubscriberKey::Msisdn, &keys)
        .await?;
    let mut rows = Vec::new();
    let mut events = Vec::new();
    for (index, s) in chunk {
        let Some(&id) = ids.get(&s.msisdn) else {
            continue;
        };
        let past = subscribers::past::past(
            &cat,
            s,
            *index as u64,
            base.seed,
            base.history_months,
            base.now,
        );
        rows.extend(
            past.months
                .into_iter()
                .map(|(period, values)| store::history::HistoryRow {
                    subscriber_id: id,
                    period,
                    values,
                }),
        );
        events.extend(
            past.events
                .into_iter()
                .map(|(kind, at, value)| store::events::NewEvent {
                    subscriber_id: id,
                    kind,
                    at,
                    value,
                    detail: None,
                    source: store::events::EventSource::Import,
                    received_at: base.now,
                }),
        );
    }
    import
        .write_history(catalogue::Period::Month, measures, &rows)
        .await?;
    import.write_events(&events).await?;
    Ok(import.commit().await?)
}

pub(crate) async fn run(a: DemoArgs) -> anyhow::Result<ExitCode> {
    let wall = Instant::now();
    if a.day_seconds <= 0.0 {
        bail!("--day-seconds must be positive");
    }
    let paths = if a.workflow.is_empty() {
        vec![PathBuf::from("workflows/autumn-enrollment.yaml")]
    } else {
        a.workflow.clone()
    };
    if a.days == 0 && paths.len() > 1 {
        bail!("several workflows run as a season: add --days N");
    }
    let mut wfs = Vec::new();
    for p in &paths {
        wfs.push(spec::load_file(p).map_err(|d| {
            anyhow::anyhow!(
                "{}",
                d.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        })?);
    }
    let tz = wfs[0].timezone;
    if a.days == 0 {
        // The demo runs the campaign once, now; its cron schedule would start more runs as
        // the compressed days pass.
        wfs[0].schedule = None;
    } else {
        // Compressed, a campaign hour lasts milliseconds: a slot the engine reaches a little
        // late would be recorded `missed`. Over a season each campaign runs its latest due
        // slot whenever the engine gets to it, as `catch_up: last` would after an outage.
        for s in wfs.iter_mut().filter_map(|w| w.schedule.as_mut()) {
            s.catch_up = spec::CatchUp::Last;
            s.catch_up_window = Duration::from_secs(u64::from(a.days) * 86_400);
        }
    }
    // Monitors beside the workflows: a campaign on a monitor's alerts needs them evaluated.
    let dir = paths[0].parent().unwrap_or(std::path::Path::new("."));
    let (mut monitors, staff, monitor_diags) = spec::monitor::load_monitors(dir);
    // One run: only the monitor its audience reads, evaluated once at the start (below), so
    // the engine's loop does no other work while the compressed windows pass.
    let needed: Vec<spec::monitor::Monitor> = if a.days == 0 {
        let read = wfs[0].audience.alerts.as_ref().map(|al| al.monitor.clone());
        std::mem::take(&mut monitors)
            .into_iter()
            .filter(|m| Some(&m.id) == read.as_ref())
            .collect()
    } else {
        Vec::new()
    };
    if !monitor_diags.is_empty() {
        bail!(
            "{}",
            monitor_diags
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let start_local = NaiveDateTime::parse_from_str(&a.start, "%Y-%m-%dT%H:%M:%S")
        .context("--start: expected YYYY-MM-DDTHH:MM:SS")?;
    let origin = tz
        .from_local_datetime(&start_local)
        .earliest()
        .context("--start does not exist in the campaign's time zone")?
        .timestamp_millis();

    std::fs::create_dir_all(&a.out)?;
    for f in [
        "campaignd-demo.db",
        "campaignd-demo.db-wal",
        "campaignd-demo.db-shm",
        "outbox.jsonl",
    ] {
        let _ = std::fs::remove_file(a.out.join(f));
    }
    let _ = std::fs::remove_dir_all(a.out.join("mail"));
    std::fs::create_dir_all(a.out.join("mail"))?;

    let names: Vec<&str> = wfs.iter().map(|w| w.campaign.as_str()).collect();
    println!(
        "campaignd demo: {} on embedded SQLite, no external services",
        names.join(", ")
    );
    println!("  database  {}", a.out.join("campaignd-demo.db").display());
    println!(
        "  SMS       outbox transport -> {}",
        a.out.join("outbox.jsonl").display()
    );
    println!(
        "  clock     starts {} ({}), one campaign day = {}s",
        out::local(origin, tz),
        tz,
        a.day_seconds
    );
    println!(
        "  responses SIMULATED population (delivery reports, replies, agent outcomes, orders)"
    );
    let cfg = Config {
        database_url: format!("sqlite://{}", a.out.join("campaignd-demo.db").display()),
        sms: channels::sms::SmsConfig::Outbox(channels::sms::OutboxConfig {
            path: a.out.join("outbox.jsonl"),
        }),
        email: channels::email::EmailConfig::File {
            dir: a.out.join("mail"),
        },
        ..Config::load(None)?
    };
    let store = crate::open_store(&cfg).await?;
    let _lock = store.lock_daemon()?;
    crate::insert_base(
        &store,
        &Base {
            subscribers: a.subscribers,
            seed: a.seed,
            history_months: a.history_months,
            now: origin,
        },
    )
    .await?;

    // At the start, whatever the compressed clock does next: a campaign on a monitor's
    // alerts has the alerts of that moment.
    for m in &needed {
        engine::monitor::evaluate(&store, m, &staff, origin, origin).await?;
    }
    let clock = Clock::scaled(origin, 86_400.0 / a.day_seconds);
    let channels: HashMap<String, Arc<dyn channels::Channel>> =
        crate::build_channels(&cfg, &store).await?;
    let mut ec = crate::engine_config(&cfg);
    ec.simulated = true;
    ec.poll = Duration::from_millis(50);
    let mailer = channels::email::Mailer::new(&cfg.email, &cfg.email_from)?;
    let engine = Arc::new(
        engine::Engine::new(store.clone(), clock.clone(), channels, ec)?
            .with_mailer(mailer, Vec::new())
            .with_monitors(monitors, staff),
    );
    // The demo approves its own versions, recorded as principal `demo` (the loader is the
    // config's operator, so four eyes hold in the record too).
    for (campaign, version) in engine.load(wfs).await? {
        store
            .approve_version(version, "demo", store::wall_now())
            .await?;
        if a.days > 0 {
            // The season starts at `--start`: a slot before it (which the widened catch-up
            // window would reach) is not the season's.
            store
                .skip_slot(&campaign, version, origin, "season_start", origin)
                .await?;
        }
    }
    let mut events = engine.subscribe();
    if a.days > 0 {
        return season(&a, store, engine, clock, events, tz, origin, wall).await;
    }
    let run_id = engine.trigger(&a_campaign(&engine)?, "demo").await?;

    let (cancel, running) = start(&a, &store, &engine, &clock);
    let mut progress =
        tokio::time::interval(Duration::from_secs_f64((a.day_seconds / 2.0).max(0.25)));
    let mut open_waves: Vec<(i64, String)> = Vec::new();
    let deadline = tokio::time::sleep(Duration::from_secs(600));
    tokio::pin!(deadline);
    let report = loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(Event::RunStarted { campaign, run_id: r, .. }) if r == run_id => println!("\n[{}] run {r} of {campaign} started", out::local(clock.now(&store).await?, tz)),
                Ok(Event::WavePlanned { wave, channel, funnel, treatment, control, closes_at, run_id: r, .. }) if r == run_id => {
                    println!("\n[{}] wave {wave} planned ({channel}): {treatment} to contact, {control} held out", out::local(clock.now(&store).await?, tz));
                    out::print_funnel(&funnel);
                    println!("    response window closes {}", out::local(closes_at, tz));
                    if let Some(w) = store.wave_runs(run_id).await?.into_iter().find(|w| w.wave == wave) {
                        open_waves.push((w.id, wave));
                    }
                }
                Ok(Event::WaveClosed { wave, at, run_id: r, .. }) if r == run_id => {
                    if let Some(pos) = open_waves.iter().position(|(_, w)| *w == wave) {
                        let (id, _) = open_waves.remove(pos);
                        print_progress(&store, id, &wave, at, tz, "closed").await?;
                    }
                }
                Ok(Event::RunFinished { report, run_id: r, .. }) if r == run_id => break report,
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => bail!("engine stopped: {e}"),
            },
            _ = progress.tick() => {
                let now = clock.now(&store).await?;
                for (id, wave) in &open_waves {
                    print_progress(&store, *id, wave, now, tz, "").await?;
                }
            }
            _ = &mut deadline => bail!("the demo did not finish within 10 minutes"),
        }
    };
    // The report mail was queued with the run's finish; the engine's mail loop sends it.
    // Wait (bounded) until it left the queue, so stopping the engine does not leave it there.
    let mail_key = store::mail::report_dedup_key(run_id);
    let mail_deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < mail_deadline
        && store
            .mail_by_key(&mail_key)
            .await?
            .is_some_and(|m| m.state == store::mail::MailState::Queued)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cancel.cancel();
    for task in running {
        let _ = task.await;
    }
    println!();
    println!("{}", evaluate::render_text(&report));
    println!(
        "report also stored in the database (campaignd report {run_id} --format html) and e-mailed to {}",
        a.out.join("mail").display()
    );
    println!("demo finished in {:.1}s", wall.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}

/// Starts the simulated population and the engine's loops; cancel the token, then await
/// the tasks, to stop them.
fn start(
    a: &DemoArgs,
    store: &store::Store,
    engine: &Arc<engine::Engine>,
    clock: &Clock,
) -> (CancellationToken, [tokio::task::JoinHandle<()>; 2]) {
    let cancel = CancellationToken::new();
    // Accepted offers turn into the campaign's goal event (the first loaded workflow's,
    // in a season), so the evaluation has conversions to count.
    let workflows = engine.workflows();
    let goal = workflows
        .iter()
        .find_map(|(_, w)| w.evaluate.goal.as_ref().and_then(|g| g.conversion()));
    let sim = Sim::new(
        store.clone(),
        clock.clone(),
        a.out.join("outbox.jsonl"),
        a.seed,
        Behaviour::converting_on(goal),
    );
    // Their errors end them; the demo notices by the events that stop coming, as before.
    let c = cancel.clone();
    let sim_task = tokio::spawn(async move {
        let _ = sim.run(c).await;
    });
    let (e, c) = (engine.clone(), cancel.clone());
    let engine_task = tokio::spawn(async move {
        let _ = e.run(c, false).await;
    });
    (cancel, [sim_task, engine_task])
}

/// What a season did for one campaign.
#[derive(Default)]
struct Tally {
    runs: u64,
    finished: u64,
    skipped: HashMap<&'static str, u64>,
    treatment: u64,
    control: u64,
    /// Left out of first waves by the frequency cap and by arbitration.
    capped: u64,
    arbitrated: u64,
    converted_treatment: u64,
    converted_control: u64,
    in_treatment: u64,
    in_control: u64,
}

/// `--days N`: the loaded workflows on their schedules for N campaign days, one line per run
/// started, wave planned and run finished, then a table per campaign.
#[allow(clippy::too_many_arguments)]
async fn season(
    a: &DemoArgs,
    store: store::Store,
    engine: Arc<engine::Engine>,
    clock: Clock,
    mut events: tokio::sync::broadcast::Receiver<Event>,
    tz: chrono_tz::Tz,
    origin: store::Millis,
    wall: Instant,
) -> anyhow::Result<ExitCode> {
    let end = origin + i64::from(a.days) * 86_400_000;
    println!(
        "  season    {} campaign days, to {}",
        a.days,
        out::local(end, tz)
    );
    let (cancel, running) = start(a, &store, &engine, &clock);
    let mut tally: std::collections::BTreeMap<String, Tally> = engine
        .workflows()
        .iter()
        .map(|(_, w)| (w.campaign.clone(), Tally::default()))
        .collect();
    let mut check = tokio::time::interval(Duration::from_millis(100));
    let real_limit = tokio::time::sleep(Duration::from_secs_f64(
        f64::from(a.days) * a.day_seconds + 600.0,
    ));
    tokio::pin!(real_limit);
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(Event::RunStarted { campaign, run_id, .. }) => {
                    tally.entry(campaign.clone()).or_default().runs += 1;
                    println!("[{}] {campaign}: run {run_id} started", out::local(clock.now(&store).await?, tz));
                }
                Ok(Event::WavePlanned { campaign, run_id, wave, funnel, treatment, control, .. }) => {
                    let stage = |name: &str| funnel.iter().find(|(s, _)| s == name).map_or(0, |(_, n)| *n);
                    let t = tally.entry(campaign.clone()).or_default();
                    let (capped, arbitrated) = (stage("frequency_cap"), stage("arbitration"));
                    t.capped += capped;
                    t.arbitrated += arbitrated;
                    if funnel.first().is_some_and(|(s, _)| s == "base") {
                        t.treatment += treatment;
                        t.control += control;
                    }
                    println!(
                        "[{}] {campaign}: run {run_id} wave {wave}: {treatment} to contact, {control} held out, {capped} capped, {arbitrated} to a higher priority",
                        out::local(clock.now(&store).await?, tz)
                    );
                }
                Ok(Event::SlotSkipped { campaign, reason, .. }) => {
                    *tally.entry(campaign).or_default().skipped.entry(reason).or_default() += 1;
                }
                Ok(Event::RunFinished { campaign, run_id, report }) => {
                    let t = tally.entry(campaign.clone()).or_default();
                    t.finished += 1;
                    let (ct, nt) = (report.overall.treatment.converted, report.overall.treatment.n);
                    let (cc, nc) = (report.overall.control.converted, report.overall.control.n);
                    t.converted_treatment += ct;
                    t.in_treatment += nt;
                    t.converted_control += cc;
                    t.in_control += nc;
                    println!(
                        "[{}] {campaign}: run {run_id} finished: converted {ct}/{nt} treated, {cc}/{nc} control",
                        out::local(clock.now(&store).await?, tz)
                    );
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => bail!("engine stopped: {e}"),
            },
            _ = check.tick() => {
                if clock.now(&store).await? >= end {
                    break;
                }
            }
            _ = &mut real_limit => bail!("the season did not finish in time"),
        }
    }
    cancel.cancel();
    for task in running {
        let _ = task.await;
    }
    println!();
    println!(
        "{:<22} {:>5} {:>8} {:>9} {:>8} {:>7} {:>10} {:>14} {:>14}  slots skipped",
        "campaign",
        "runs",
        "finished",
        "contacted",
        "held out",
        "capped",
        "arbitrated",
        "treated conv.",
        "control conv."
    );
    for (campaign, t) in &tally {
        let rate = |c: u64, n: u64| {
            if n == 0 {
                "-".to_owned()
            } else {
                format!("{c}/{n} {:.1}%", 100.0 * c as f64 / n as f64)
            }
        };
        let mut skipped: Vec<String> = t.skipped.iter().map(|(r, n)| format!("{r} {n}")).collect();
        skipped.sort();
        println!(
            "{campaign:<22} {:>5} {:>8} {:>9} {:>8} {:>7} {:>10} {:>14} {:>14}  {}",
            t.runs,
            t.finished,
            t.treatment,
            t.control,
            t.capped,
            t.arbitrated,
            rate(t.converted_treatment, t.in_treatment),
            rate(t.converted_control, t.in_control),
            skipped.join(", ")
        );
    }
    println!(
        "runs still open at the end are not in the conversion columns; each finished run's report is in the database (campaignd report RUN)"
    );
    println!("demo finished in {:.1}s", wall.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}

fn a_campaign(engine: &engine::Engine) -> anyhow::Result<String> {
    engine
        .workflows()
        .first()
        .map(|(_, w)| w.campaign.clone())
        .context("no workflow loaded")
}

async fn print_progress(
    store: &store::Store,
    wave_run_id: i64,
    wave: &str,
    now: i64,
    tz: chrono_tz::Tz,
    note: &str,
) -> anyhow::Result<()> {
    let c = store.wave_counts(wave_run_id).await?;
    let targeted = c.count(Arm::Treatment, &ContactState::TARGETED);
    let sent = c.count(Arm::Treatment, &ContactState::WENT_OUT);
    let delivered = c.count(Arm::Treatment, &[ContactState::Delivered]);
    let when = out::local(now, tz);
    let responded = c.responded(Arm::Treatment);
    let note = if note.is_empty() {
        String::new()
    } else {
        format!("  window {note}")
    };
    if delivered == 0
        && store.wave_run(wave_run_id).await?.is_some_and(|w| {
            domain::ChannelKind::parse(&w.channel).is_some_and(domain::ChannelKind::is_task)
        })
    {
        // Agent tasks are opened, not delivered; their response is the outcome recorded.
        println!(
            "[{when}] {wave:<10} tasks {sent:>5}/{targeted:<6} outcomes accepted {responded:>5} (simulated agents){note}"
        );
    } else {
        println!(
            "[{when}] {wave:<10} sent {sent:>6}/{targeted:<6} delivered {delivered:>6}  responded {responded:>5} (simulated){note}"
        );
    }
    Ok(())
}
